"""The service: journal first, then devices and screen; the threaded event loop."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import ManualClock, utc_now
from kiosk.domain.engine import Outcome, State, View
from kiosk.domain.errors import UserFacingError
from kiosk.domain.events import AmountChosen, Device, KeyStatus, Method, MethodChosen
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import Journal
from kiosk.sim.fakes import (
    FakeCardTerminal,
    FakeCoinAcceptor,
    FakeKey,
    FakeKeyReader,
    FakeNoteValidator,
    FakePrinter,
)
from tests.conftest import SATURDAY_MORNING


def E(minor: int) -> Money:
    return Money(minor, "EUR")


def build(site: Site, tmp_path: Path, clock=None) -> tuple[Kiosk, Devices]:  # type: ignore[no-untyped-def]
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    journal.set_key("K1", KeyStatus.ACTIVE, "4711")
    devices = Devices(
        reader=FakeKeyReader(),
        coin=FakeCoinAcceptor(site.coins),
        notes=FakeNoteValidator(site.notes),
        card=FakeCardTerminal(),
        printer=FakePrinter(),
    )
    return Kiosk(site, journal, devices, clock or ManualClock(SATURDAY_MORNING)), devices


def test_the_screen_never_shows_money_the_journal_does_not_hold(site: Site, tmp_path: Path) -> None:
    kiosk, dev = build(site, tmp_path)
    observed: list[tuple[int, int]] = []

    def check(view: View, _refusal: UserFacingError | None) -> None:
        # A separate connection sees only what is committed (durably, with synchronous=FULL).
        with sqlite3.connect(kiosk.journal.path) as db:
            paid = db.execute(
                "select coalesce(sum(amount), 0) from journal where txid = ? and kind = 'cash_in'",
                (view.txid,),
            ).fetchone()[0]
            written = db.execute(
                "select count(*) from journal where txid = ? and kind = 'key_written'", (view.txid,)
            ).fetchone()[0]
        observed.append((view.paid.minor, paid))
        assert view.paid.minor <= paid
        if view.outcome == Outcome.COMPLETED:
            assert written == 1

    kiosk.listeners.append(check)
    reader, coin, notes = dev.reader, dev.coin, dev.notes
    assert isinstance(reader, FakeKeyReader) and isinstance(coin, FakeCoinAcceptor)
    assert isinstance(notes, FakeNoteValidator)
    key = FakeKey("K1", "4711")
    reader.insert(key)
    kiosk.drain()
    kiosk.submit(AmountChosen(E(1500)))
    kiosk.submit(MethodChosen(Method.CASH))
    kiosk.drain()
    for value in (1000, 200, 200, 100):
        assert notes.insert(E(value)) if value >= 500 else coin.insert(E(value))
        kiosk.drain()
    assert coin.insert(E(200)) is False  # target reached: the acceptors are disabled
    assert kiosk.view().outcome == Outcome.COMPLETED and key.credit == 1500
    assert (1500, 1500) in observed
    assert dev.printer.receipts  # type: ignore[union-attr]


def test_a_device_that_fails_a_command_becomes_a_journaled_fault(
    site: Site, tmp_path: Path
) -> None:
    class BrokenPrinter(FakePrinter):
        def print_receipt(self, txid: str, lines: list[str]) -> bool:
            raise OSError("printer offline")

    kiosk, dev = build(site, tmp_path)
    dev.printer = BrokenPrinter()
    reader = dev.reader
    assert isinstance(reader, FakeKeyReader)
    reader.insert(FakeKey("K1", "4711"))
    kiosk.drain()
    kiosk.submit(AmountChosen(E(2000)))
    kiosk.submit(MethodChosen(Method.CARD))
    kiosk.drain()
    v = kiosk.view()
    assert v.outcome == Outcome.COMPLETED  # no printer never blocks a top-up
    assert Device.PRINTER in v.faults
    faults = [e for e in kiosk.journal.entries() if e.kind == "fault"]
    assert faults[-1].data["device"] == "printer" and "offline" in faults[-1].data["text"]


def test_the_engine_thread_takes_events_from_other_threads(site: Site, tmp_path: Path) -> None:
    kiosk, dev = build(site, tmp_path, clock=utc_now)
    changed = threading.Condition()
    views: list[View] = []

    def on_view(view: View, _refusal: UserFacingError | None) -> None:
        with changed:
            views.append(view)
            changed.notify_all()

    def wait_for(pred, timeout: float = 5.0) -> View:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        with changed:
            while not (views and pred(views[-1])):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; last view {views[-1].state if views else None}"
                changed.wait(left)
            return views[-1]

    kiosk.listeners.append(on_view)
    stop = threading.Event()
    engine = threading.Thread(target=kiosk.run, args=(stop, 0.05), daemon=True)
    engine.start()
    try:
        ticks_before = len(views)
        wait_for(lambda v: len(views) > ticks_before + 2)  # ticks arrive on their own
        reader = dev.reader
        assert isinstance(reader, FakeKeyReader)
        key = FakeKey("K1", "4711")
        reader.insert(key)  # emitted from this (non-engine) thread
        wait_for(lambda v: v.state == State.CHOOSING_AMOUNT)
        kiosk.submit(AmountChosen(E(2000)))
        kiosk.submit(MethodChosen(Method.CARD))
        done = wait_for(lambda v: v.state == State.DONE)
        assert done.outcome == Outcome.COMPLETED and key.credit == 2000
    finally:
        stop.set()
        engine.join(timeout=5)
    assert not engine.is_alive()


def test_transaction_ids_never_repeat_on_a_kiosk_not_even_within_one_second(
    site: Site, tmp_path: Path
) -> None:
    """The id was the kiosk, the second and 16 random bits: two top-ups in one second could
    share it (and the key's log takes an id once). Now a number above the journal's last entry
    and above the last id given out: unique within a process, and above every journaled one
    after a restart (an id given out but never journaled was never used: a transaction's first
    record is journaled before anything else happens with its id). It fits the key's log (48
    bytes) for the longest kiosk id the schema allows."""
    from dataclasses import replace as with_fields

    from kiosk.domain.events import CoinAccepted, Kind

    clock = ManualClock(SATURDAY_MORNING)  # the clock stands still: every id in one second
    db = tmp_path / "j.sqlite"
    journaled: list[str] = []
    for _restart in range(3):
        k = Kiosk(site, Journal(db, site.kiosk_id), Devices(reader=FakeKeyReader()), clock)
        burst = [k._new_txid() for _ in range(50)]  # more than ever happen in one step
        assert len(set(burst)) == 50
        k.journal.set_key("K1", KeyStatus.ACTIVE, "4711")
        reader = k.devices.reader
        assert isinstance(reader, FakeKeyReader)
        reader.insert(FakeKey("K1", "4711"))
        for _ in range(2):
            k.submit(CoinAccepted(Money(200, "EUR")))  # late cash: a transaction each
        k.drain()
        opened = [e.txid or "" for e in k.journal.entries_of_kind(Kind.TX_OPENED)]
        new = opened[len(journaled) :]
        assert len(new) >= 1 and all(int(t.rsplit("-", 1)[1]) > int(j.rsplit("-", 1)[1])
                                     for t in new for j in journaled)  # fmt: skip
        journaled = opened
        k.journal.close()
    assert len(set(journaled)) == len(journaled) and all(
        i.startswith("DEMO-01-261121-") for i in journaled
    )
    longest = with_fields(site, kiosk_id="K" * 31)
    k = Kiosk(longest, Journal(tmp_path / "l.sqlite", "K" * 31), Devices(reader=FakeKeyReader()))
    k._txno = 10**9 - 2  # a billion journal entries on from here
    assert len(k._new_txid().encode()) <= 48
