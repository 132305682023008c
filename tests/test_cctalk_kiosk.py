"""The kiosk's cash flow on the real ccTalk drivers, against the simulator on a real pty.

Each test asserts which credits reached the engine (the journal's cash entries) and what else
was journaled; none loses or doubles a credit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.cctalk.sim import BusSimulator, SimBillValidator, SimCoinAcceptor
from kiosk.adapters.cash import CcTalkCash, open_cash, start_simulator
from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import Outcome, State, View
from kiosk.domain.errors import UserFacingError
from kiosk.domain.events import AmountChosen, Device, Finish, KeyStatus, Method, MethodChosen
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from kiosk.sim.fakes import FakeCardTerminal, FakeKey, FakeKeyReader, FakePrinter
from kiosk.sim.simulate import with_ports
from tests.conftest import make_site, wait_until


def E(minor: int) -> Money:
    return Money(minor, "EUR")


@dataclass
class CashRig:
    kiosk: Kiosk
    cash: CcTalkCash
    sim: BusSimulator
    coin: SimCoinAcceptor
    notes: SimBillValidator
    reader: FakeKeyReader
    key: FakeKey

    def wait(self, pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        wait_until(pred, what, self._changed, timeout)

    def view(self) -> View:
        return self.kiosk.view()

    def cash_in(self) -> list[int]:
        return [
            e.amount.minor for e in self.kiosk.journal.entries() if e.kind == "cash_in" and e.amount
        ]

    def faults(self) -> list[dict[str, object]]:
        return [e.data for e in self.kiosk.journal.entries() if e.kind == "fault"]

    def start_payment(self, amount: Money | None) -> None:
        self.reader.insert(self.key)
        self.wait(lambda: self.view().state == State.CHOOSING_AMOUNT, "the key summary")
        self.kiosk.submit(AmountChosen(amount))
        if amount is not None:
            self.kiosk.submit(MethodChosen(Method.CASH))
        self.wait(lambda: self.view().state == State.CASH, "the cash screen")
        self.wait(lambda: self.coin.master and self.notes.master, "acceptors enabled")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[CashRig]:
    with cash_rig(tmp_path) as r:
        yield r


@contextmanager
def cash_rig(tmp_path: Path, link: Path | None = None) -> Iterator[CashRig]:
    site = make_site("demo")
    sim, coin, notes = start_simulator(site, link=link)
    cash = open_cash(with_ports(site, coin=sim.path, notes=sim.path), period=0.02)
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    journal.set_key("K1", KeyStatus.ACTIVE, "4711")
    reader = FakeKeyReader()
    devices = Devices(
        reader=reader,
        coin=cash.coin,
        notes=cash.notes,
        card=FakeCardTerminal(),
        printer=FakePrinter(),
    )
    kiosk = Kiosk(site, journal, devices, utc_now)
    r = CashRig(kiosk, cash, sim, coin, notes, reader, FakeKey("K1", "4711"))
    r._changed = threading.Event()  # type: ignore[attr-defined]
    kiosk.listeners.append(lambda _v, _e: r._changed.set())  # type: ignore[attr-defined]
    stop = threading.Event()
    engine = threading.Thread(target=kiosk.run, args=(stop, 0.05), daemon=True)
    engine.start()
    cash.start()
    r.wait(
        lambda: all(any(w.online(n) for w in cash.workers) for n in ("coin", "notes")),
        "both devices online",
    )
    yield r
    stop.set()
    engine.join(5)
    cash.stop()
    sim.stop()


def test_cash_top_up_over_the_wire(rig: CashRig) -> None:
    rig.start_payment(E(2000))
    # Every coin up to 2.00 fits in 20.00; notes 5, 10 and 20 do, the 50 note is inhibited.
    rig.wait(lambda: (rig.coin.inhibit_mask, rig.notes.inhibit_mask) == (0b11111, 0b0111), "masks")
    assert rig.notes.insert("EU0050A") is False  # refused by the validator itself
    assert rig.notes.insert("EU0010A")
    rig.wait(lambda: rig.view().paid == E(1000), "the 10.00 note stacked")
    rig.wait(lambda: rig.notes.inhibit_mask == 0b0011, "room left: 10.00")
    for coin in ("EU200A", "EU200A", "EU100A"):
        assert rig.coin.insert(coin)
    assert rig.notes.insert("EU0005A")
    rig.wait(lambda: rig.view().state == State.DONE, "the top-up to finish")
    assert rig.view().outcome == Outcome.COMPLETED
    assert rig.cash_in() == [1000, 200, 200, 100, 500]  # exactly what was taken, in order
    assert rig.key.credit == 2000 and rig.notes.stacked == [2, 1]
    rig.wait(lambda: not rig.coin.master and not rig.notes.master, "acceptors disabled")


def test_a_note_that_no_longer_fits_is_returned_by_the_engine(rig: CashRig) -> None:
    rig.start_payment(E(1000))
    rig.notes.inhibit_mask = 0xFF  # a race: the validator takes a note the limit excludes
    assert rig.notes.insert("EU0050A")
    rig.wait(lambda: rig.notes.returned == [4], "the 50.00 note returned")
    rig.wait(lambda: rig.view().notice == "note_too_big", "the notice")
    assert rig.cash_in() == []


def test_coin_acceptor_reset_mid_payment(rig: CashRig) -> None:
    rig.start_payment(None)
    rig.coin.insert("EU200A")
    rig.wait(lambda: rig.cash_in() == [200], "first coin")
    rig.coin.power_cycle()
    rig.wait(lambda: any("reset" in str(f.get("text")) for f in rig.faults()), "reset journaled")
    # A coin dropped while the acceptor is being set up again is rejected to the cup; the
    # customer puts it in again.
    rig.wait(lambda: rig.coin.insert("EU100A"), "the acceptor to take a coin again")
    rig.wait(lambda: rig.cash_in() == [200, 100], "coin after the reset")
    assert [f.get("cleared", False) for f in rig.faults() if f["device"] == "coin"] == [False, True]


def test_burst_of_more_than_five_coins(rig: CashRig) -> None:
    rig.start_payment(None)
    rig.coin.burst("EU200A", 7)
    rig.wait(lambda: len(rig.cash_in()) == 5, "the five coins in the buffer")
    rig.wait(lambda: Device.COIN in rig.view().faults, "coin acceptor taken out of use")
    assert rig.cash_in() == [200] * 5
    assert any("2 event(s) lost" in str(f["text"]) for f in rig.faults())
    assert not rig.coin.master  # inhibited until a technician looks
    assert rig.view().methods == (Method.CASH, Method.CARD)  # notes and card still work


def test_jam_while_stacking_is_journaled_and_not_credited(rig: CashRig) -> None:
    rig.start_payment(None)
    rig.coin.insert("EU200A")
    rig.wait(lambda: rig.cash_in() == [200], "a coin")
    rig.notes.jam_next_stack = True
    rig.notes.insert("EU0010A")
    rig.wait(lambda: rig.view().notice == "note_jammed", "the jam shown")  # published after commit
    assert any(f.get("escrow") == 1000 for f in rig.faults()) and rig.cash_in() == [200]
    refusals: list[UserFacingError] = []
    rig.kiosk.listeners.append(lambda _v, e: refusals.append(e) if e else None)
    rig.kiosk.submit(Finish())  # 2.00 is below the minimum: refused, nothing changes
    rig.wait(lambda: [e.message_key for e in refusals] == ["below_minimum"], "the refusal")
    assert rig.view().state == State.CASH and rig.cash_in() == [200]


def test_stacker_removed_and_back(rig: CashRig) -> None:
    rig.notes.status(11)
    rig.wait(lambda: Device.NOTES in rig.view().faults, "notes out of use")
    assert rig.view().state == State.IDLE  # coins still work
    rig.notes.status(12)
    rig.wait(lambda: Device.NOTES not in rig.view().faults, "notes back")


def test_counterfeit_note_is_refused_and_nothing_is_credited(rig: CashRig) -> None:
    rig.start_payment(None)
    assert rig.notes.insert("EU0020A", counterfeit=True) is False
    assert rig.notes.insert("EU0020A")
    rig.wait(lambda: rig.cash_in() == [2000], "the genuine note")
    assert rig.notes.stacked == [3]


@pytest.mark.parametrize("fault", ["bad_checksum", "silence", "garbage", "drop_byte"])
def test_line_faults_credit_exactly_once(rig: CashRig, fault: str) -> None:
    rig.start_payment(None)
    rig.sim.inject(fault)
    rig.coin.insert("EU200A")
    rig.wait(lambda: rig.cash_in() == [200], "the coin")
    rig.coin.insert("EU100A")
    rig.wait(lambda: rig.cash_in() == [200, 100], "the next coin")
    assert not rig.faults()  # a retried exchange is not a device fault


def test_a_silent_acceptor_goes_offline_and_comes_back(rig: CashRig) -> None:
    rig.start_payment(None)
    rig.sim.inject(*["silence"] * 12)  # both devices stop answering for a few polls
    rig.wait(lambda: any("offline" in str(f.get("text")) for f in rig.faults()), "offline")
    rig.wait(lambda: not rig.view().faults, "back online")
    rig.wait(lambda: rig.coin.master, "re-enabled")
    rig.wait(lambda: rig.coin.insert("EU050A"), "a coin taken again")
    rig.wait(lambda: rig.cash_in() == [50], "the coin journaled")


def test_a_coin_taken_while_the_host_could_not_poll_is_credited_when_it_is_back(
    rig: CashRig,
) -> None:
    """The line is down (no answer to the host), the acceptor still takes a coin: it is in its
    event buffer, and owed when the host reaches it again."""
    rig.start_payment(None)
    rig.sim.inject(*["silence"] * 12)
    rig.wait(lambda: any("offline" in str(f.get("text")) for f in rig.faults()), "offline")
    assert rig.coin.insert("EU100A")  # it could not be told to stop: it takes the coin
    rig.wait(lambda: not rig.view().faults, "back online")
    rig.wait(lambda: rig.cash_in() == [100], "the coin taken while offline, journaled")
    assert rig.view().paid == E(100)


def test_an_adapter_unplugged_and_plugged_in_again(tmp_path: Path) -> None:
    """The USB-serial adapter out mid-payment (its stable path gone, the port dead): the cash
    devices go offline with what was paid safe; back in, the bus opens the path again by
    itself, the devices come back and take money again."""
    link = tmp_path / "usb-ccTalk_bus-if00-port0"
    with cash_rig(tmp_path, link) as rig:
        assert rig.sim.path == str(link) and link.is_symlink()
        rig.start_payment(None)
        assert rig.coin.insert("EU200A")
        rig.wait(lambda: rig.cash_in() == [200], "the first coin")
        rig.sim.unplug()
        rig.wait(lambda: {Device.COIN, Device.NOTES} <= rig.view().faults, "both offline", 10)
        assert not link.exists() and rig.view().paid == E(200)
        rig.sim.plug()
        rig.wait(lambda: not rig.view().faults, "back online by itself", 10)
        rig.wait(lambda: rig.coin.master, "re-enabled")
        assert rig.coin.insert("EU100A")
        rig.wait(lambda: rig.cash_in() == [200, 100], "a coin taken again")
        assert rig.view().paid == E(300)


def test_unknown_and_inhibited_coins_credit_nothing(rig: CashRig) -> None:
    rig.start_payment(E(1000))
    rig.wait(lambda: rig.coin.inhibit_mask == 0b11111, "coins enabled")
    assert rig.coin.insert("XX999A") is False
    assert rig.coin.insert("EU005A") is False  # known to the device, not taken by this site
    rig.coin.insert("EU100A")
    rig.wait(lambda: rig.cash_in() == [100], "the good coin")


def test_events_in_the_buffer_before_the_kiosk_started_are_not_credited(tmp_path: Path) -> None:
    site = make_site("demo")
    sim, coin, notes = start_simulator(site)
    try:
        coin.master, coin.inhibit_mask = True, 0xFFFF  # someone else's session, before start
        coin.insert("EU200A")
        cash = open_cash(with_ports(site, coin=sim.path, notes=sim.path), period=0.02)
        journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
        kiosk = Kiosk(
            site,
            journal,
            Devices(reader=FakeKeyReader(), coin=cash.coin, notes=cash.notes),
            utc_now,
        )
        cash.start()
        deadline = time.monotonic() + 5
        while not all(any(w.online(n) for w in cash.workers) for n in ("coin", "notes")):
            assert time.monotonic() < deadline
            kiosk.process(kiosk.events.get(timeout=1))  # the queue the devices report into
        kiosk.drain()
        assert [e for e in journal.entries() if e.kind in ("cash_in", "cash_unattributed")] == []
        cash.stop()
    finally:
        sim.stop()


def test_counter_wrap_during_a_payment_credits_every_coin(rig: CashRig) -> None:
    rig.start_payment(None)
    for k in range(1, 53):  # 260 coins through the real bus: the counter wraps 255 -> 1
        rig.coin.burst("EU010A", 5)
        rig.wait(lambda k=k: len(rig.cash_in()) == 5 * k, f"burst {k}")  # type: ignore[misc]
    assert rig.coin.counter == 5 and rig.cash_in() == [10] * 260
    assert not rig.faults()  # no event was taken for lost
    assert rig.view().paid == E(2600)


def test_validator_that_self_inhibited_is_enabled_again(rig: CashRig) -> None:
    rig.start_payment(None)
    now = [time.monotonic()]
    rig.notes.clock = lambda: now[0]
    rig.notes.last_poll = now[0]
    before = rig.notes.counter
    now[0] += 6  # as if nobody had polled for 6 s: the validator inhibits itself (event 0/0)
    rig.wait(lambda: rig.notes.counter == before + 1 and rig.notes.master, "enabled again")
    assert rig.notes.buffer[0] == (0, 0)
    assert rig.notes.insert("EU0020A")
    rig.wait(lambda: rig.cash_in() == [2000], "the note")


def test_the_journal_keeps_where_each_acceptor_is_so_a_restart_resumes_there(
    tmp_path: Path,
) -> None:
    """The counter rides with each coin and note, with a lost-events fault (at the start of
    the five buffered events that follow it) and when a device comes online; the newest one
    per device is where a restart resumes."""
    from drivers.cctalk.devices import EventsLost
    from drivers.cctalk.worker import DeviceOnline
    from kiosk.adapters.cash import translate
    from kiosk.domain.events import AcceptorCounter, Kind, Record

    lost = translate(EventsLost("coin", 2, 3))
    assert [(type(e).__name__, getattr(e, "counter", None)) for e in lost] == [
        ("DeviceFault", 253)  # 3 - 5 on a counter that wraps 255 -> 1
    ]
    online = translate(DeviceOnline("notes", None, 0))  # type: ignore[arg-type]
    assert AcceptorCounter(Device.NOTES, 0) in online
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    assert j.acceptor_counters() == {}
    j.append([Record(Kind.ACCEPTOR_COUNTER, data={"device": "coin", "counter": 0}),
              Record(Kind.ACCEPTOR_COUNTER, data={"device": "notes", "counter": 9}),
              Record(Kind.CASH_IN, "T1", "K1", Money(200, "EUR"),
                     {"medium": "coin", "channel": 5, "counter": 4}),
              Record(Kind.FAULT, data={"device": "notes", "text": "2 lost", "counter": 17}),
              Record(Kind.CASH_IN, "T1", "K1", Money(500, "EUR"),
                     {"medium": "note", "channel": 1})], utc_now())  # fmt: skip
    assert j.acceptor_counters() == {"coin": 4, "notes": 17}


def test_a_restart_after_an_acceptor_reset_resumes_where_the_device_is(tmp_path: Path) -> None:
    """Found by the exhaustive crash matrix: the acceptor restarted (counter back to 0) and
    counted a coin; the kiosk died after journaling the reset and before the coin. The restart
    resumed from the counter before the reset (2), so the coin after the reset (1) read as old
    and was never credited. The reset is now journaled with the device's new counter."""
    from drivers.cctalk.devices import DeviceReset
    from kiosk.adapters.cash import translate
    from kiosk.domain.events import Kind

    site = make_site("demo")
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    before = Kiosk(site, journal, Devices(reader=FakeKeyReader()), utc_now)
    for ev in translate(DeviceReset("coin")):  # what the bus worker reports, journaled
        before.submit(ev)
    before.drain()
    assert journal.acceptor_counters() == {"coin": 0}  # not the counter before the reset

    sim, coin, notes = start_simulator(site)
    try:
        coin.power_cycle()  # the device is where the reset left it ...
        coin.master, coin.inhibit_mask = True, 0xFFFF
        assert coin.insert("EU100A") and coin.counter == 1  # ... with a coin counted since
        cash = open_cash(
            with_ports(site, coin=sim.path, notes=sim.path),
            period=0.02,
            resume=journal.acceptor_counters(),
        )
        seen = journal.last_seq()
        kiosk = Kiosk(site, journal, Devices(reader=FakeKeyReader(), coin=cash.coin), utc_now)
        cash.start()
        deadline = time.monotonic() + 5
        while not any(e.kind == Kind.CASH_UNATTRIBUTED for e in journal.entries(after=seen)):
            assert time.monotonic() < deadline, [e.kind for e in journal.entries(after=seen)]
            kiosk.process(kiosk.events.get(timeout=1))
        kiosk.drain()
        cash.stop()
        after = [
            e
            for e in journal.entries(after=seen)
            if e.data.get("device", "coin") == "coin"
            and e.kind in (Kind.CASH_UNATTRIBUTED, Kind.ACCEPTOR_COUNTER, Kind.FAULT)
        ]
        # the coin, credited once with its counter; no "accounted up to 1" before it (a crash
        # between the two would have lost it again), no events taken for lost
        assert [(e.kind, e.amount, e.data.get("counter")) for e in after] == [
            (Kind.CASH_UNATTRIBUTED, E(100), 1)
        ]
        assert journal.acceptor_counters()["coin"] == 1
    finally:
        sim.stop()
