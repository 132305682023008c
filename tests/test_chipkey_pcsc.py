"""The chip key through the real PC/SC stack: pcscd, vsmartcard's vpcd reader, the virtual card."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.chipkey.profile import ChipKey, Identity
from drivers.chipkey.reader import card_present
from drivers.chipkey.sim import VirtualCard
from drivers.chipkey.vpcd import VpcdCard
from kiosk.adapters.key import DEMO_KEYS, PcscKeyReader
from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import Outcome, State
from kiosk.domain.events import AmountChosen, Finish, KeyStatus
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from kiosk.sim.fakes import FakeCoinAcceptor, FakeNoteValidator
from tests.conftest import make_site, wait_until

UID = bytes.fromhex("04c0ffee000001")
IDENT = Identity("DEMO", "4711", "1ESY1160000001", "electricity", "K-1", "customer", "EUR")
# select, authenticate x2, the log (2 frames) and credit read, the identity (2 frames: whether
# the key counts its writes), Credit, Credit of the counter, WriteRecord (2 frames: the 64-byte
# record, its header and CMAC are 79 bytes, an EV1 frame takes 54), CommitTransaction, the credit
# and newest record (2 frames) read back: checked by test_the_write_sequence_length
WRITE_APDUS = 16  # a write in a card session of its own, of a transaction that may be on the key
SUMMARY_APDUS = 8  # select, authenticate x2, identity (2 frames), credit, meter report, counter
WRITE_IN_SESSION = 8  # a transaction's first write, after the summary in its card session


def E(minor: int) -> Money:
    return Money(minor, "EUR")


def value_of(card: VirtualCard) -> int:
    return card.apps[0xF05E01].files[1].value


def card_absent(reader: str) -> bool:
    """What pcscd itself says: the slot is empty (vpcd only notices a card leaving when it
    next polls; a card back before that was never out, as far as PC/SC knows)."""
    return not card_present(reader)


@dataclass
class Rig:
    kiosk: Kiosk
    card: VirtualCard
    slot: VpcdCard
    notes: FakeNoteValidator
    changed: threading.Event
    reader_name: str
    port: PcscKeyReader

    def wait(self, pred: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
        def detail() -> str:
            seen = self.port._watch.history if self.port._watch else []
            states = ", ".join(f"{e:08X}" for e, _ in seen)
            return f": {self.kiosk.view().state}; reader saw {states}"

        wait_until(pred, what, self.changed, timeout, detail)

    def state(self) -> State:
        return self.kiosk.view().state


@pytest.fixture
def rig(pcscd: str, tmp_path: Path) -> Iterator[Rig]:
    site = make_site("demo")
    card = VirtualCard(UID)
    ChipKey(card, DEMO_KEYS).personalise(IDENT, upper=50_000, initial=500)
    slot = VpcdCard(card, stays=True)  # in the reader across a pcscd restart
    reader = PcscKeyReader("^" + pcscd, DEMO_KEYS, 50_000)
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    journal.set_key("K-1", KeyStatus.ACTIVE, "4711")
    notes = FakeNoteValidator(site.notes)
    kiosk = Kiosk(
        site,
        journal,
        Devices(reader=reader, coin=FakeCoinAcceptor(site.coins), notes=notes),
        utc_now,
    )
    changed = threading.Event()
    kiosk.listeners.append(lambda _v, _e: changed.set())
    stop = threading.Event()
    engine = threading.Thread(target=kiosk.run, args=(stop, 0.05), daemon=True)
    engine.start()
    deadline = time.monotonic() + 5
    while not card_absent(pcscd):  # the previous test's card is still on its way out
        assert time.monotonic() < deadline, "the reader never became empty"
        changed.wait(0.05)
    reader.start()
    r = Rig(kiosk, card, slot, notes, changed, pcscd, reader)
    yield r
    if slot.inserted:
        slot.remove()
    reader.stop()
    stop.set()
    engine.join(5)


def pay_20(r: Rig) -> None:
    r.kiosk.submit(AmountChosen(None))
    r.wait(lambda: r.state() == State.CASH, "cash")
    assert r.notes.insert(E(2000))
    r.wait(lambda: r.kiosk.view().paid == E(2000), "the note")
    r.kiosk.submit(Finish())


def test_top_up_written_through_pcscd(rig: Rig) -> None:
    rig.slot.insert()
    rig.wait(lambda: rig.state() == State.CHOOSING_AMOUNT, "the key summary")
    view = rig.kiosk.view()
    assert view.key is not None and view.key.credit == E(500) and view.key.serial == "K-1"
    pay_20(rig)
    rig.wait(lambda: rig.state() == State.DONE, "done")
    assert rig.kiosk.view().outcome == Outcome.COMPLETED and value_of(rig.card) == 2500
    tx = rig.kiosk.view().txid
    assert ChipKey(rig.card, DEMO_KEYS).read_all().txids == (tx,)
    rig.slot.remove()
    rig.wait(lambda: rig.state() == State.IDLE, "idle after removal")


@pytest.mark.pcscd_alone  # every other test's key goes out with pcscd
def test_pcscd_restarted_the_automat_goes_out_of_service_and_comes_back(rig: Rig) -> None:
    """pcscd restarted (an update, a crash): idle, the automat is out of service until the
    reader is back; mid-payment, the key is out for the automat (acceptors off, what was paid
    kept), and when pcscd is back with the key still in, the payment goes on and is written."""
    from kiosk.domain.events import Device, Kind
    from tests.conftest import restart_pcscd

    rig.wait(lambda: rig.state() == State.IDLE, "idle")
    seen: list[State] = []
    limits: list[object] = []  # the note validator's limit whenever the key was missing

    def watch(v: object, _e: object) -> None:
        seen.append(v.state)  # type: ignore[attr-defined]
        if v.state == State.KEY_MISSING:  # type: ignore[attr-defined]
            limits.append(rig.notes.limit)

    rig.kiosk.listeners.append(watch)
    restart_pcscd()
    rig.wait(lambda: State.OUT_OF_SERVICE in seen, "out of service while pcscd is away")
    rig.wait(lambda: rig.state() == State.IDLE and not rig.kiosk.view().faults, "back", 15)

    rig.slot.insert()
    rig.wait(lambda: rig.state() == State.CHOOSING_AMOUNT, "the key summary")
    rig.kiosk.submit(AmountChosen(None))
    rig.wait(lambda: rig.state() == State.CASH, "cash")
    assert rig.notes.insert(E(2000))
    rig.wait(lambda: rig.kiosk.view().paid == E(2000), "the note")
    seen.clear()
    restart_pcscd()
    rig.wait(lambda: State.KEY_MISSING in seen, "the key out for the automat")
    rig.wait(lambda: rig.state() == State.CASH, "the payment resumed", 15)
    assert rig.kiosk.view().paid == E(2000)
    assert limits and all(x is None for x in limits)  # no money taken while the key was out
    rig.kiosk.submit(Finish())
    rig.wait(lambda: rig.state() == State.DONE, "done")
    assert rig.kiosk.view().outcome == Outcome.COMPLETED and value_of(rig.card) == 2500
    faults = [e.data for e in rig.kiosk.journal.entries_of_kind(Kind.FAULT)
              if e.data.get("device") == str(Device.READER)]  # fmt: skip
    assert [bool(f.get("cleared")) for f in faults] == [False, True, False, True], faults


def test_the_write_sequence_length() -> None:
    """A write on its own: select, authenticate, the log and credit read, Credit, WriteRecord,
    CommitTransaction, and the credit and newest record read back. In the card session of a
    summary, a transaction's first write (as the kiosk writes) reads nothing before it: the
    summary read the credit and the key's write count, and a new transaction is in no log."""
    card = VirtualCard(UID)
    ChipKey(card, DEMO_KEYS).personalise(IDENT, upper=50_000, initial=500)
    key = ChipKey(card, DEMO_KEYS)
    _ = key.uid
    before = card.commands
    key.credit("T", 100, 50_000)
    assert card.commands - before == WRITE_APDUS
    key = ChipKey(card, DEMO_KEYS)
    _ = key.uid
    before = card.commands
    summary = key.read_summary()
    assert card.commands - before == SUMMARY_APDUS
    assert (summary.credit, summary.written, summary.log) == (600, 1, None)
    before = card.commands
    assert key.credit("T2", 100, 50_000, new=True) == 700
    assert card.commands - before == WRITE_IN_SESSION
    # the same transaction again, not said to be new: the log is read, and nothing written
    before = card.commands
    assert key.credit("T2", 100, 50_000) == 700
    assert card.commands - before == 5  # the log (three records: 4 frames) and the credit
    assert value_of(card) == 700 and ChipKey(card, DEMO_KEYS).read_all().written == 2


def test_the_vpcd_reader_is_chosen_by_kiosk_vpcd_slot_and_a_third_is_refused() -> None:
    """Two simulated automats (or test workers) on one machine take vpcd's two readers; a
    slot vpcd does not have is refused by name before anything connects."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = "from drivers.chipkey import vpcd; print(vpcd.VPCD_PORT, vpcd.VPCD_READER)"

    def run(slot: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KIOSK_VPCD_SLOT": slot}
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=60)  # fmt: skip

    assert run("0").stdout.split(maxsplit=1) == ["35963", "Virtual PCD 00 00\n"]
    assert run("1").stdout.split(maxsplit=1) == ["35964", "Virtual PCD 00 01\n"]
    bad = run("2")
    assert bad.returncode != 0 and "KIOSK_VPCD_SLOT is '2': vpcd has two readers" in bad.stderr
