"""Fail-safe: any failure of an engine step puts the automat out of order with the money safe
(acceptors inhibited, what the step had to journal kept), and the cash devices stop taking
money by themselves when the engine stops saying it is alive."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from drivers.cctalk.worker import BusWorker
from kiosk.adapters.cash import start_simulator
from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import TABLE, State
from kiosk.domain.errors import JournalFull
from kiosk.domain.events import (
    AmountChosen,
    CoinAccepted,
    KeyStatus,
    Kind,
    Method,
    MethodChosen,
)
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from kiosk.ledger.kept import BATCH
from kiosk.sim.fakes import (
    FakeCardTerminal,
    FakeCoinAcceptor,
    FakeKey,
    FakeKeyReader,
    FakeNoteValidator,
    FakePrinter,
)
from tests.conftest import ROOT, make_site, wait_until


def E(minor: int) -> Money:
    return Money(minor, "EUR")


class Automat:
    """A kiosk on fake devices with its engine thread running, as in the field."""

    def __init__(self, journal_file: Path) -> None:
        self.site = make_site("demo")
        self.journal = Journal(journal_file, self.site.kiosk_id)
        self.journal.set_key("K1", KeyStatus.ACTIVE, "4711")
        self.reader = FakeKeyReader()
        self.coin = FakeCoinAcceptor(self.site.coins)
        self.notes = FakeNoteValidator(self.site.notes)
        devices = Devices(reader=self.reader, coin=self.coin, notes=self.notes,
                          card=FakeCardTerminal(), printer=FakePrinter())  # fmt: skip
        self.kiosk = Kiosk(self.site, self.journal, devices, utc_now)
        self.changed = threading.Event()
        self.kiosk.listeners.append(lambda _v, _e: self.changed.set())
        self.stop = threading.Event()
        self.errors: list[Any] = []
        self.engine = threading.Thread(target=self._engine, daemon=True)
        self.engine.start()

    def _engine(self) -> None:
        try:
            self.kiosk.run(self.stop, 0.05)
        except BaseException as err:  # an exception at the thread's top is the defect
            self.errors.append(err)

    def wait(self, pred: Any, what: str) -> None:
        wait_until(pred, what, self.changed, 10)

    def at_cash(self) -> None:
        self.reader.insert(FakeKey("K1", "4711"))
        self.wait(lambda: self.kiosk.view().state == State.CHOOSING_AMOUNT, "the amount screen")
        self.kiosk.submit(AmountChosen(E(2000)))
        self.kiosk.submit(MethodChosen(Method.CASH))
        self.wait(lambda: self.kiosk.view().state == State.CASH, "the cash screen")
        assert self.coin.limit is not None  # taking coins

    def close(self) -> None:
        self.stop.set()
        self.engine.join(5)
        self.journal.close()


@pytest.fixture
def automat(tmp_path: Path) -> Iterator[Automat]:
    a = Automat(tmp_path / "journal.sqlite")
    yield a
    a.close()


def test_an_unexpected_error_in_a_step_puts_the_automat_out_of_order(automat: Automat) -> None:
    a = automat
    a.at_cash()
    assert a.coin.insert(E(200))
    a.wait(lambda: a.kiosk.view().paid == E(200), "the first coin")

    def broken(_event: Any) -> Any:
        raise ZeroDivisionError("a defect in the engine")

    a.kiosk.session.handle = broken  # type: ignore[method-assign]
    assert a.coin.insert(E(100))  # the step that fails
    a.engine.join(10)
    assert not a.engine.is_alive() and a.errors == []  # ended by itself, nothing escaped
    assert a.coin.limit is None and a.notes.limit is None  # inhibited first
    assert a.coin.insert(E(200)) is False  # the next coin drops back to the customer
    view = a.kiosk.view()
    assert (view.state, view.notice) == (State.OUT_OF_SERVICE, "failed")
    assert view.notice_params["paid"] == E(200) and view.notice_params["txid"] == view.txid
    assert a.kiosk.failure == "ZeroDivisionError: a defect in the engine"
    (fault,) = [e for e in a.journal.entries() if e.kind == Kind.FAULT]
    assert fault.data["device"] == "engine" and "a defect" in fault.data["text"]
    assert fault.txid == view.txid and fault.key == "K1"
    a.journal.verify()


def test_a_session_broken_through_and_through_still_leaves_the_money_safe(
    automat: Automat,
) -> None:
    """The session raises whatever is asked of it, its view too: the fail-safe works from
    the last view it published, and nothing escapes the engine thread."""
    a = automat
    a.at_cash()
    assert a.coin.insert(E(200))
    a.wait(lambda: a.kiosk.view().paid == E(200), "the first coin")

    def broken(*_args: Any) -> Any:
        raise KeyError("the session's state is gone")

    a.kiosk.session.handle = broken  # type: ignore[method-assign]
    a.kiosk.session.view = broken  # type: ignore[method-assign]
    assert a.coin.insert(E(100))
    a.engine.join(10)
    assert not a.engine.is_alive() and a.errors == []
    assert a.coin.limit is None and a.notes.limit is None
    assert a.kiosk.view().notice == "failed" and a.kiosk.view().notice_params["paid"] == E(200)


def test_a_step_the_journal_refuses_is_kept_and_journaled_at_the_next_start(
    automat: Automat, tmp_path: Path
) -> None:
    a = automat
    a.at_cash()
    real = Journal._append
    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))

    def refused(self: Journal, records: Any, now: Any) -> Any:
        raise full

    Journal._append = refused  # type: ignore[method-assign]
    try:
        assert a.coin.insert(E(200))  # its cash_in cannot be journaled
        a.engine.join(10)
    finally:
        Journal._append = real  # type: ignore[method-assign]
    assert not a.engine.is_alive() and a.errors == []
    assert a.coin.limit is None and a.kiosk.view().notice == "failed"
    assert "disk" in (a.kiosk.failure or "") and str(tmp_path) in (a.kiosk.failure or "")
    before = a.journal.last_seq()
    kept = a.journal.kept.batches()
    assert [[r.kind for r in records] for _b, records in kept] == [[Kind.CASH_IN, Kind.FAULT]]
    a.journal.close()

    again = Journal(tmp_path / "journal.sqlite", a.site.kiosk_id)  # the restart
    restarted = Kiosk(a.site, again, Devices(reader=FakeKeyReader()), utc_now)
    entries = again.entries(after=before)
    cash = [e for e in entries if e.kind == Kind.CASH_IN]
    assert [(e.amount, e.data[BATCH]) for e in cash] == [(E(200), kept[0][0])]
    # the interrupted transaction's money becomes a pending credit for the key, once
    assert [p.amount for p in again.pending_credits("K1")] == [E(200)]
    assert again.kept.batches() == []
    Kiosk(a.site, again, Devices(reader=FakeKeyReader()), utc_now)  # and once more: no double
    assert len([e for e in again.entries() if e.kind == Kind.CASH_IN]) == 1
    again.verify()
    del restarted


def test_a_full_disk_is_named_in_the_error(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite", "K")
    err = j._write_error(
        OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full")),
        "cannot write the journal",
    )
    assert isinstance(err, JournalFull)
    assert str(tmp_path) in str(err) and "bytes free" in str(err)
    j.close()


def test_the_acceptors_stop_taking_money_when_the_engine_falls_silent() -> None:
    site = make_site("demo")
    sim, coin, _notes = start_simulator(site)
    from drivers.cctalk.devices import CoinAcceptor
    from drivers.cctalk.transport import Bus
    from kiosk.domain.site import DENOMINATIONS

    bus = Bus.open(sim.path)
    dev = CoinAcceptor(bus, "EUR", DENOMINATIONS["EUR"]["coins"], 2)
    woken = threading.Event()
    worker = BusWorker(bus, [dev], lambda _e: woken.set(), period=0.02, deadman=0.3)
    worker.start()
    try:
        wait_until(lambda: worker.online("coin"), "the acceptor online", woken, 5)
        worker.alive()
        worker.enable(dev, 200)
        wait_until(lambda: coin.master, "the acceptor enabled", woken, 5)
        assert coin.insert("EU200A")
        # the engine says nothing any more: the bus thread inhibits the acceptor by itself
        wait_until(lambda: not coin.master, "the dead-man switch", woken, 5)
        assert worker.trips == 1 and coin.insert("EU200A") is False
        worker.alive()  # it is back: what it asked for last applies again
        wait_until(lambda: coin.master, "the acceptor enabled again", woken, 5)
        worker.enable(dev, None)  # asked off, it stays off after the next trip
        wait_until(lambda: not coin.master, "the acceptor off", woken, 5)
    finally:
        worker.stop()
        sim.stop()


def test_an_acceptor_that_comes_online_takes_what_the_engine_asked_for_while_it_was_away() -> (
    None
):
    """Calls to an offline acceptor are skipped. One that appeared during a payment stayed
    inhibited (the customer's coins came back), and one the engine inhibited while it was
    away came back enabled as before. It now comes online as the engine asked last."""
    site = make_site("demo")
    sim, coin, _notes = start_simulator(site)
    from drivers.cctalk.devices import CoinAcceptor
    from drivers.cctalk.transport import Bus
    from kiosk.domain.site import DENOMINATIONS

    unplugged = sim.devices.pop(coin.address)  # not on the bus at start
    bus = Bus.open(sim.path)
    dev = CoinAcceptor(bus, "EUR", DENOMINATIONS["EUR"]["coins"], 2)
    woken = threading.Event()
    worker = BusWorker(bus, [dev], lambda _e: woken.set(), period=0.02, retry_seconds=0.1)
    worker.start()
    try:
        worker.enable(dev, 200)  # a customer is paying: take coins up to 2.00
        wait_until(worker.idle, "the call carried out (skipped: offline)", woken, 5)
        assert not worker.online("coin") and not coin.master
        sim.devices[coin.address] = unplugged  # it appears
        wait_until(lambda: worker.online("coin"), "the acceptor online", woken, 5)
        wait_until(lambda: coin.master, "the acceptor enabled as asked", woken, 5)
        assert coin.insert("EU200A")
        sim.devices.pop(coin.address)  # gone again, still enabled on its side
        wait_until(lambda: not worker.online("coin"), "the acceptor offline", woken, 5)
        worker.enable(dev, None)  # the payment ends while it is away
        wait_until(worker.idle, "the call carried out (skipped: offline)", woken, 5)
        sim.devices[coin.address] = unplugged
        wait_until(lambda: worker.online("coin"), "the acceptor online again", woken, 5)
        wait_until(lambda: not coin.master, "the acceptor inhibited as asked", woken, 5)
        assert coin.insert("EU200A") is False
    finally:
        worker.stop()
        sim.stop()


def test_a_port_failing_in_termios_is_a_lost_port_not_a_dead_bus_thread() -> None:
    """An adapter pulled out between two requests: pyserial's flush raises termios.error,
    which is no OSError. The bus takes it as a lost port (opened again later)."""
    import termios

    from drivers.cctalk.transport import Bus
    from drivers.errors import TransportError

    class Unplugged:
        timeout = 0.1
        in_waiting = 0
        closed = False

        def reset_input_buffer(self) -> None:
            raise termios.error(5, "Input/output error")

        def close(self) -> None:
            self.closed = True

    port = Unplugged()
    bus = Bus(port, url="/dev/serial/by-id/gone")  # type: ignore[arg-type]
    with pytest.raises(TransportError, match="Input/output error"):
        bus.request(2, 254)
    assert port.closed and bus._lost


def test_an_unexpected_error_in_a_device_call_takes_the_device_offline_not_the_thread() -> None:
    site = make_site("demo")
    sim, _coin, _notes = start_simulator(site)
    from drivers.cctalk.devices import CoinAcceptor
    from drivers.cctalk.transport import Bus
    from drivers.cctalk.worker import DeviceOffline
    from kiosk.domain.site import DENOMINATIONS

    bus = Bus.open(sim.path)
    dev = CoinAcceptor(bus, "EUR", DENOMINATIONS["EUR"]["coins"], 2)
    heard: list[object] = []
    woken = threading.Event()

    def emit(ev: object) -> None:
        heard.append(ev)
        woken.set()

    worker = BusWorker(bus, [dev], emit, period=0.02)
    worker.start()
    try:
        wait_until(lambda: worker.online("coin"), "the acceptor online", woken, 5)
        poll = dev.poll

        def broken() -> object:
            dev.poll = poll  # type: ignore[method-assign]
            raise RuntimeError("a defect in the driver")

        dev.poll = broken  # type: ignore[method-assign]
        wait_until(lambda: any(isinstance(e, DeviceOffline) for e in heard), "offline", woken, 5)
        assert worker.running  # the thread lives on, and the device comes back by itself
        wait_until(lambda: worker.online("coin"), "the acceptor online again", woken, 5)
    finally:
        worker.stop()
        sim.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
@pytest.mark.parametrize("command", [["demo"], ["run", "--headless"]])
def test_the_kiosk_on_a_full_disk_says_so_and_takes_no_money(
    tmp_path: Path, command: list[str]
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        from kiosk.domain.events import Record

        journal = disk / "journal-DEMO-01.sqlite"  # yesterday's, on the disk that then fills
        j = Journal(journal, "DEMO-01")
        j.append([Record(Kind.KIOSK_STARTED, data={"site": "demo"})], utc_now())
        before = j.verify()
        j.close()
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"x" * (free - 4096))  # all but one block
        with pytest.raises(OSError):
            (disk / "more").write_bytes(b"x" * 8192)
        res = subprocess.run(
            [sys.executable, "-m", "kiosk.cli", "--data-dir", str(disk), *command],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode != 0
        assert "Traceback" not in res.stderr and str(disk) in res.stderr, res.stderr[-2000:]
        assert "no space" in res.stderr.lower() or "full" in res.stderr.lower(), res.stderr
        assert "insert coin" not in res.stdout and "screenshot" not in res.stdout  # no customer
        assert sorted(p.name for p in disk.iterdir() if p.suffix == ".png") == []
        (disk / "filler").unlink()  # space again: what it could write is whole, with no money
        check = subprocess.run(
            [sys.executable, "-m", "kiosk.cli", "--data-dir", str(disk), "journal", "verify"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        chained = re.search(r"journal verify: ok, (\d+) entries", check.stdout)
        assert check.returncode == 0 and chained, check.stdout + check.stderr
        assert int(chained.group(1)) >= before
        db = sqlite3.connect(journal)
        try:
            kinds = {k for (k,) in db.execute("SELECT DISTINCT kind FROM journal")}
        finally:
            db.close()
        assert not kinds & {"cash_in", "card_approved", "key_written", "tx_opened"}, kinds
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# ---------------------------------------------------------------- health guards before money


class Clocks:
    """A wall clock and a monotonic one that the test moves."""

    def __init__(self) -> None:
        from tests.conftest import SATURDAY_MORNING

        self.wall = SATURDAY_MORNING
        self.mono = 1000.0

    def step(self, seconds: float, wall: float | None = None) -> None:
        from datetime import timedelta

        self.mono += seconds
        self.wall += timedelta(seconds=seconds if wall is None else wall)


def guard(tmp_path: Path, clocks: Clocks, free: list[int]) -> Any:
    from kiosk.app.health import HealthGuard
    from kiosk.domain.site import HealthSection

    journal = tmp_path / "journal.sqlite"
    journal.write_bytes(b"")
    return HealthGuard(HealthSection(disk_floor_mb=100, clock_forward_minutes=120,
                                     clock_settle_seconds=60), journal,
                       monotonic=lambda: clocks.mono, free_bytes=lambda _p: free[0])  # fmt: skip


def test_the_health_guard_sees_a_low_disk_and_clock_jumps(tmp_path: Path) -> None:
    clocks, free = Clocks(), [500 * 2**20]
    g = guard(tmp_path, clocks, free)
    assert g.problems(clocks.wall) == []
    free[0] = 50 * 2**20
    (low,) = g.problems(clocks.wall)
    assert low.startswith("disk: 50 MB free on") and "floor of 100 MB" in low
    free[0] = 500 * 2**20
    clocks.step(10)  # time passes as it should
    assert g.problems(clocks.wall) == []
    clocks.step(10, wall=10 - 2 * 3600)  # stepped back two hours
    (back,) = g.problems(clocks.wall)
    assert back.startswith("clock: stepped back 7200 s")
    clocks.step(30)
    assert g.problems(clocks.wall) == [back]  # it holds for the settle time ...
    clocks.step(31)
    assert g.problems(clocks.wall) == []  # ... then clears by itself
    clocks.step(10, wall=2 * 86400)  # two days forward
    (ahead,) = g.problems(clocks.wall)
    assert "jumped 48.0 h forward" in ahead
    clocks.step(10, wall=30 * 60)  # forward, but within the span: no jump
    assert g.problems(clocks.wall) == [ahead]


def test_an_unhealthy_automat_takes_no_new_customer_and_recovers_by_itself(
    tmp_path: Path,
) -> None:
    from kiosk.domain.events import Device, Tick

    clocks, free = Clocks(), [500 * 2**20]
    site = make_site("demo")
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    reader = FakeKeyReader()
    devices = Devices(reader=reader, coin=FakeCoinAcceptor(site.coins),
                      notes=FakeNoteValidator(site.notes))  # fmt: skip
    kiosk = Kiosk(site, journal, devices, lambda: clocks.wall, health=guard(tmp_path, clocks, free))
    journal.set_key("K1", KeyStatus.ACTIVE, "4711")
    kiosk.process(Tick(clocks.wall))
    kiosk.drain()
    assert kiosk.view().state == State.IDLE
    free[0] = 10 * 2**20
    kiosk.process(Tick(clocks.wall))
    kiosk.drain()
    assert kiosk.view().state == State.OUT_OF_SERVICE and Device.SYSTEM in kiosk.view().faults
    reader.insert(FakeKey("K1", "4711"))
    kiosk.drain()
    assert kiosk.view().state == State.OUT_OF_SERVICE  # a key changes nothing: no payment
    free[0] = 500 * 2**20
    kiosk.process(Tick(clocks.wall))
    kiosk.drain()
    assert kiosk.view().state == State.IDLE
    faults = [e.data for e in journal.entries() if e.kind == Kind.FAULT]
    assert faults[0]["device"] == "system" and "10 MB free" in faults[0]["text"]
    assert faults[1] == {"device": "system", "cleared": True}
    journal.close()


def test_a_coin_the_table_refuses_is_journaled_not_dropped(
    automat: Automat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Money is never refused: if a defect in the transition table refuses a coin the acceptor
    took, the kiosk journals it as unattributed cash (staff settle it) instead of ignoring it."""
    a = automat
    a.at_cash()
    row = {e: to for e, to in TABLE[State.CASH].items() if e is not CoinAccepted}
    monkeypatch.setitem(TABLE, State.CASH, row)  # the defect: the cash screen takes no coin
    assert a.coin.insert(E(200))
    a.wait(lambda: any(e.kind == Kind.CASH_UNATTRIBUTED for e in a.journal.entries()), "journaled")
    (entry,) = [e for e in a.journal.entries() if e.kind == Kind.CASH_UNATTRIBUTED]
    assert entry.amount == E(200) and "not expected in state cash" in entry.data["refused"]
    assert a.engine.is_alive()
    a.journal.verify()
