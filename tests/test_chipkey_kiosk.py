"""The kiosk with its chip-key port on the virtual card (in-process): a key pulled after every
command of the write sequence is credited exactly once when it comes back."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from drivers.chipkey.profile import ChipKey, Identity
from drivers.chipkey.reader import CardEvent, Connection
from drivers.chipkey.sim import VirtualCard, VirtualSlot
from kiosk.adapters.key import DEMO_KEYS, PcscKeyReader
from kiosk.app.ports import Devices, KeyPresented
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import Outcome, State
from kiosk.domain.events import AmountChosen, Finish, KeyInfo, KeyStatus, Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from kiosk.sim.fakes import FakeCoinAcceptor, FakeNoteValidator
from tests.conftest import make_site, wait_until

IDENT = Identity("DEMO", "4711", "1ESY1", "electricity", "K-1", "customer", "EUR")
WRITE_APDUS = 7  # the write after the key's summary, in its card session (layout 2)
SLOT = "virtual slot"


@dataclass
class Rig:
    kiosk: Kiosk
    card: VirtualCard
    port: PcscKeyReader
    notes: FakeNoteValidator
    changed: threading.Event
    slot: VirtualSlot

    def wait(self, pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        wait_until(pred, what, self.changed, timeout, lambda: f": {self.kiosk.view().state}")

    def insert(self) -> None:
        self.slot.insert(self.card)
        self.port.card_event(CardEvent(SLOT, b"", True))

    def remove(self) -> None:
        self.slot.remove()
        self.port.card_event(CardEvent(SLOT, b"", False))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    site = make_site("demo")
    card = VirtualCard(bytes.fromhex("04abcdef012345"))
    ChipKey(card, DEMO_KEYS).personalise(IDENT, upper=50_000, initial=500)
    slot = VirtualSlot()
    port = PcscKeyReader(SLOT, DEMO_KEYS, 50_000, connect=slot.connect)
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    journal.set_key("K-1", KeyStatus.ACTIVE, "4711")
    notes = FakeNoteValidator(site.notes)
    kiosk = Kiosk(
        site, journal, Devices(reader=port, coin=FakeCoinAcceptor(site.coins), notes=notes), utc_now
    )
    changed = threading.Event()
    kiosk.listeners.append(lambda _v, _e: changed.set())
    stop = threading.Event()
    engine = threading.Thread(target=kiosk.run, args=(stop, 0.05), daemon=True)
    engine.start()
    port.start(watch=False)
    yield Rig(kiosk, card, port, notes, changed, slot)
    port.stop()
    stop.set()
    engine.join(5)


@pytest.mark.parametrize("n", range(1, WRITE_APDUS + 1))
def test_key_pulled_after_each_command_of_the_write_is_credited_once(rig: Rig, n: int) -> None:
    rig.insert()
    rig.wait(lambda: rig.kiosk.view().state == State.CHOOSING_AMOUNT, "the key summary")
    rig.card.tear_after(n)
    rig.kiosk.submit(AmountChosen(None))
    rig.wait(lambda: rig.kiosk.view().state == State.CASH, "cash")
    rig.notes.insert(Money(2000, "EUR"))
    rig.wait(lambda: rig.kiosk.view().paid == Money(2000, "EUR"), "the note")
    rig.kiosk.submit(Finish())
    rig.wait(lambda: rig.kiosk.view().state in (State.KEY_MISSING, State.DONE), "the write to end")
    if rig.kiosk.view().state == State.KEY_MISSING:  # the key left mid-write
        assert not rig.card.powered
        rig.remove()
        rig.insert()  # and is put back
    rig.wait(lambda: rig.kiosk.view().state == State.DONE, "done")
    assert rig.kiosk.view().outcome == Outcome.COMPLETED
    assert rig.card.apps[0xF05E01].files[1].value == 2500  # exactly once
    tx = rig.kiosk.view().txid
    assert ChipKey(rig.card, DEMO_KEYS).read_all().txids == (tx,)
    written = [e for e in rig.kiosk.journal.entries() if e.kind == "key_written"]
    assert [e.txid for e in written] == [tx]


def test_a_key_of_another_utility_is_refused(rig: Rig, tmp_path: Path) -> None:
    other = VirtualCard(bytes.fromhex("04111111111111"))
    ChipKey(other, DEMO_KEYS.__class__(*(bytes(16),) * 4)).personalise(IDENT, upper=1000)
    rig.slot.insert(other)
    rig.port.card_event(CardEvent(SLOT, b"", True))
    rig.wait(lambda: rig.kiosk.view().state == State.KEY_REFUSED, "refused")
    assert rig.kiosk.view().refusal == "unreadable"


def test_a_blank_card_is_refused(rig: Rig) -> None:
    blank = VirtualCard(bytes.fromhex("04222222222222"))
    rig.slot.insert(blank)
    rig.port.card_event(CardEvent(SLOT, b"", True))
    rig.wait(lambda: rig.kiosk.view().state == State.KEY_REFUSED, "refused")
    entries = [e for e in rig.kiosk.journal.entries() if e.kind == "key_refused"]
    assert entries[-1].data["detail"] == "not a prepaid key"


def started_port(
    connect: Callable[[str], Connection],
) -> tuple[PcscKeyReader, queue.Queue[object]]:
    """A chip-key port on its own, its events in a queue."""
    port = PcscKeyReader(SLOT, DEMO_KEYS, 50_000, connect=connect)
    events: queue.Queue[object] = queue.Queue()
    port.attach(events.put)
    port.start(watch=False)
    return port, events


def test_the_reader_refuses_a_write_of_nothing_and_outlives_any_error(tmp_path: Path) -> None:
    """D2 of the money fuzzer: a pending credit of 0.00 reached the port, the card profile
    raised ValueError on the reader's worker thread, the thread died and every later key went
    unread. Nothing is sent for no credit, and whatever a job raises, the engine hears of it
    and the worker goes on."""
    from kiosk.domain.events import KeyReadFailed, KeyWriteFailed, KeyWritten

    card = VirtualCard(bytes.fromhex("04abcdef012345"))
    ChipKey(card, DEMO_KEYS).personalise(IDENT, upper=50_000, initial=500)
    slot = VirtualSlot()
    broken = [True]

    def connect(reader: str) -> object:
        if broken[0]:
            broken[0] = False
            raise ValueError("a reader driver's bug")  # not a DriverError: unexpected
        return slot.connect(reader)

    port, events = started_port(connect)  # type: ignore[arg-type]
    try:
        slot.insert(card)
        port.card_event(CardEvent(SLOT, b"", True))
        got = [events.get(timeout=5) for _ in range(2)]
        assert isinstance(got[1], KeyReadFailed) and "bug" in got[1].reason
        port.card_event(CardEvent(SLOT, b"", True))  # read again: the worker is alive
        assert [type(events.get(timeout=5)).__name__ for _ in range(2)] == [
            "KeyDetected",
            "KeyPresented",
        ]
        port.write_credit("T0", Money(0, "EUR"))
        refused = events.get(timeout=5)
        assert isinstance(refused, KeyWriteFailed) and not refused.uncertain
        assert card.apps[0xF05E01].files[1].value == 500  # nothing was sent to the key
        port.write_credit("T1", Money(100, "EUR"))
        assert isinstance(events.get(timeout=5), KeyWritten)
    finally:
        port.stop()


def test_the_port_reads_the_log_on_request_in_the_keys_session_and_says_when_it_cannot() -> None:
    from kiosk.app.ports import KeyNotRead

    card = VirtualCard(bytes.fromhex("04abcdef012345"))
    ChipKey(card, DEMO_KEYS).personalise(IDENT, upper=50_000, initial=500)
    ChipKey(card, DEMO_KEYS).credit("BEFORE-1", 100, 50_000, new=True)
    slot = VirtualSlot()
    port, events = started_port(slot.connect)
    try:
        slot.insert(card)
        port.card_event(CardEvent(SLOT, b"", True))
        presented = [events.get(timeout=5) for _ in range(2)][1]
        assert isinstance(presented, KeyPresented)
        assert not presented.key.log_complete and presented.key.recent_txids == ()
        assert presented.key.written == 1
        before = card.commands
        full = port.read_log()
        assert card.commands - before == 3  # the log's two records, in the key's session
        assert full.log_complete and full.recent_txids == ("BEFORE-1",)
        assert (full.written, full.log_from, full.credit) == (1, 0, presented.key.credit)
        slot.remove()
        port.card_event(CardEvent(SLOT, b"", False))
        with pytest.raises(KeyNotRead, match="no key"):
            port.read_log()
    finally:
        port.stop()
    with pytest.raises(KeyNotRead, match="did not answer"):  # its worker is gone
        port.read_log(timeout=0.2)


def test_the_meters_report_is_read_shown_and_journaled_with_the_transaction(
    rig: Rig,
) -> None:
    """The meter ran out of credit at home: 2.50 of emergency credit, recorded on the key. At
    insertion the kiosk reads it, the amount screen's view carries it, and the transaction
    journals it (and so syncs it to head office)."""
    from kiosk.service.keytool import consume

    consume(rig.card, DEMO_KEYS, 750)  # 5.00 on the key, 7.50 used: 2.50 emergency credit
    rig.insert()
    rig.wait(lambda: rig.kiosk.view().state == State.CHOOSING_AMOUNT, "the key summary")
    meter = rig.kiosk.view().key.meter  # type: ignore[union-attr]
    assert meter is not None and meter.emergency_in_use and meter.debt == Money(250, "EUR")
    assert meter.worth_telling and meter.reading_wh > 0 and meter.at is not None
    rig.kiosk.submit(AmountChosen(None))
    rig.wait(lambda: rig.kiosk.view().state == State.CASH, "cash")
    (opened,) = rig.kiosk.journal.entries_of_kind(Kind.TX_OPENED)
    assert opened.data["meter"] == {
        "reading_wh": meter.reading_wh,
        "at": meter.at.isoformat(),
        "emergency_in_use": True,
        "debt": 250,
        "status": meter.status,
    }


def test_a_key_whose_meter_never_wrote_has_no_report() -> None:
    from drivers.chipkey.profile import MeterReport
    from kiosk.adapters.key import meter_reading

    assert meter_reading(MeterReport(), "EUR") is None
    quiet = meter_reading(MeterReport(reading=1200, at=1_790_000_000), "EUR")
    assert quiet is not None and not quiet.worth_telling and quiet.debt == Money(0, "EUR")


def test_at_insertion_the_log_is_read_only_when_credits_are_owed_and_then_decides(
    rig: Rig,
) -> None:
    """#23: the summary reads no log. Credits owed to the key make the automat ask for it: a
    credit written elsewhere (a torn write that landed, then two more top-ups) is found there
    and settled, not written again; one that is not there is written, once."""
    key = ChipKey(rig.card, DEMO_KEYS)
    for txid in ("ELSEWHERE-1", "LATER-1", "LATER-2"):
        key.credit(txid, 100, 50_000, new=True)  # 5.00 + 3.00 on the key
    now = utc_now()
    rig.kiosk.journal.append(
        [
            Record(
                Kind.PENDING_CREDIT,
                "ELSEWHERE-1",
                "K-1",
                Money(100, "EUR"),
                {"reason": "key_not_returned", "key_written": 0},
            ),
            Record(
                Kind.PENDING_CREDIT,
                "OWED-2",
                "K-1",
                Money(700, "EUR"),
                {"reason": "key_not_returned", "key_written": 0},
            ),
        ],
        now,
    )
    before = rig.card.commands
    rig.insert()
    rig.wait(lambda: rig.kiosk.view().state == State.CHOOSING_AMOUNT, "the owed credits")
    assert rig.card.apps[0xF05E01].files[1].value == 800 + 700  # OWED-2 once, ELSEWHERE-1 not
    settled = {e.txid: e.data for e in rig.kiosk.journal.entries_of_kind(Kind.PENDING_WRITTEN)}
    assert settled["ELSEWHERE-1"].get("found_on_key") is True
    assert settled["OWED-2"]["credit_after"] == 1500
    assert rig.kiosk.journal.pending_credits("K-1") == []
    # GetVersion (3 frames: the UID), the summary (8), the log of four records (5 frames), one
    # write (the log is known in the session: 8, the record in two frames): the log was read once
    assert rig.card.commands - before == 3 + 8 + 5 + 8
    rig.remove()
    rig.wait(lambda: rig.kiosk.view().state == State.IDLE, "idle")
    before = rig.card.commands
    rig.insert()  # nothing owed now: the summary only
    rig.wait(lambda: rig.kiosk.view().state == State.CHOOSING_AMOUNT, "the key summary")
    assert rig.card.commands - before == 3 + 8


def test_a_key_whose_log_cannot_be_read_is_refused_and_what_it_is_owed_stays_owed(
    tmp_path: Path,
) -> None:
    """The key left (or the reader failed) between its summary and its log: the automat says
    it could not read the key, and decides nothing about the credit owed to it."""
    from kiosk.app.ports import KeyNotRead
    from kiosk.sim.fakes import FakeKey, FakeKeyReader, FakePrinter

    class LogLost(FakeKeyReader):
        asked = 0

        def read_log(self, timeout: float = 10.0) -> KeyInfo:
            self.asked += 1
            raise KeyNotRead("card removed")

    site = make_site("demo")
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    journal.set_key("K-1", KeyStatus.ACTIVE, "4711")
    owed = {"reason": "key_not_returned", "key_written": 0}
    journal.append(
        [Record(Kind.PENDING_CREDIT, "OWED-1", "K-1", Money(700, "EUR"), owed)], utc_now()
    )

    def devices(reader: LogLost) -> Devices:
        coin, notes = FakeCoinAcceptor(site.coins), FakeNoteValidator(site.notes)
        return Devices(reader=reader, coin=coin, notes=notes, printer=FakePrinter())

    reader = LogLost()
    kiosk = Kiosk(site, journal, devices(reader), utc_now)
    info = replace(FakeKey("K-1", "4711").info(), log_complete=False)
    reader.emit(KeyPresented(info))
    kiosk.drain()
    assert reader.asked == 1 and reader.writes == 0
    assert kiosk.view().state == State.KEY_REFUSED
    assert [p.txid for p in journal.pending_credits("K-1")] == ["OWED-1"]
    # without anything owed, nobody asks for the log
    journal2 = Journal(tmp_path / "j2.sqlite", site.kiosk_id)
    journal2.set_key("K-1", KeyStatus.ACTIVE, "4711")
    reader2 = LogLost()
    kiosk2 = Kiosk(site, journal2, devices(reader2), utc_now)
    reader2.emit(KeyPresented(info))
    kiosk2.drain()
    assert reader2.asked == 0 and kiosk2.view().state == State.CHOOSING_AMOUNT
