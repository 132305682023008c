"""A whole cash top-up with notes through the real eSSP driver, the bus worker and the engine,
against the simulated ITL validator on a real pty: a note too big for what is left is given
back, a jam leaves its note uncredited, a reset with a note in escrow accounts for it once."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.cctalk.sim import BusSimulator, SimCoinAcceptor
from drivers.essp.sim import SimNoteValidator
from kiosk.adapters.cash import CcTalkCash, notes_port, open_cash, start_simulator
from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import Outcome, State, View
from kiosk.domain.events import AmountChosen, Device, Finish, KeyStatus, Method, MethodChosen
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import Journal
from kiosk.sim.fakes import FakeCardTerminal, FakeKey, FakeKeyReader, FakePrinter
from kiosk.sim.simulate import with_ports
from tests.conftest import make_site, wait_until


def E(minor: int) -> Money:
    return Money(minor, "EUR")


def essp_site(encryption: bool = False) -> Site:
    site = make_site("demo")
    d = site.devices
    assert d.notes is not None
    notes = d.notes.model_copy(update={"protocol": "essp", "encryption": encryption})
    return dataclasses.replace(site, devices=d.model_copy(update={"notes": notes}))


@dataclass
class EsspRig:
    kiosk: Kiosk
    cash: CcTalkCash
    bus: BusSimulator
    coin: SimCoinAcceptor
    notes: SimNoteValidator
    reader: FakeKeyReader
    key: FakeKey
    changed: threading.Event

    def wait(self, pred: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
        wait_until(pred, what, self.changed, timeout)

    def view(self) -> View:
        return self.kiosk.view()

    def entries(self, kind: str) -> list[int]:
        return [e.amount.minor for e in self.kiosk.journal.entries()
                if e.kind == kind and e.amount]  # fmt: skip

    def faults(self) -> list[dict[str, object]]:
        return [e.data for e in self.kiosk.journal.entries() if e.kind == "fault"]

    def pay(self, amount: Money | None) -> None:
        self.reader.insert(self.key)
        self.wait(lambda: self.view().state == State.CHOOSING_AMOUNT, "the key summary")
        self.kiosk.submit(AmountChosen(amount))
        if amount is not None:
            self.kiosk.submit(MethodChosen(Method.CASH))
        self.wait(lambda: self.view().state == State.CASH, "the cash screen")
        self.wait(lambda: self.notes.master and self.notes.inhibit_mask != 0, "notes enabled")


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EsspRig]:
    site = essp_site(encryption=request.param)
    bus, coin, notes = start_simulator(site)
    assert isinstance(notes, SimNoteValidator)
    cash = open_cash(with_ports(site, coin=bus.path, notes=notes_port(bus, notes)), period=0.02)
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    journal.set_key("K1", KeyStatus.ACTIVE, "4711")
    reader = FakeKeyReader()
    devices = Devices(reader=reader, coin=cash.coin, notes=cash.notes, card=FakeCardTerminal(),
                      printer=FakePrinter())  # fmt: skip
    kiosk = Kiosk(site, journal, devices, utc_now)
    changed = threading.Event()
    kiosk.listeners.append(lambda _v, _e: changed.set())
    r = EsspRig(kiosk, cash, bus, coin, notes, reader, FakeKey("K1", "4711"), changed)
    stop = threading.Event()
    engine = threading.Thread(target=kiosk.run, args=(stop, 0.05), daemon=True)
    engine.start()
    cash.start()
    r.wait(lambda: all(any(w.online(n) for w in cash.workers) for n in ("coin", "notes")),
           "both devices online")  # fmt: skip
    assert (notes.session is not None) == request.param
    yield r
    stop.set()
    engine.join(5)
    cash.stop()
    bus.stop()


def test_a_cash_top_up_with_notes_a_returned_note_a_jam_and_a_reset_mid_escrow(
    rig: EsspRig,
) -> None:
    rig.pay(E(5000))
    # 20.00 in: held, stacked on the engine's word, credited once
    assert rig.notes.insert("EU0020A")
    rig.wait(lambda: rig.view().paid == E(2000), "the 20.00 note credited")
    # a jam while stacking the next: journaled with the note, never credited
    rig.notes.jam_next_stack = "safe"
    assert rig.notes.insert("EU0010A")
    rig.wait(lambda: any(f.get("escrow") == 1000 for f in rig.faults()), "the jam journaled")
    assert rig.view().paid == E(2000) and Device.NOTES in rig.view().faults
    rig.notes.events.append(bytes((0xE4,)))  # (the technician clears it: cashbox back)
    rig.wait(lambda: Device.NOTES not in rig.view().faults, "notes back after the jam")
    rig.wait(lambda: rig.notes.master and rig.notes.inhibit_mask != 0, "notes enabled again")
    # a reset with a note in escrow: the reset is a fault with the note's value, and the
    # note the validator put into its cashbox at the restart is credited, once
    assert rig.notes.insert("EU0010A")
    rig.wait(lambda: rig.view().escrow == E(1000), "the 10.00 note in escrow")
    rig.notes.power_cycle(note_to="cashbox")
    rig.wait(lambda: rig.view().paid == E(3000), "the cleared note credited")
    assert any(f.get("escrow") == 1000 for f in rig.faults()[1:])  # the reset, with the note
    # a note bigger than what is still to pay (20.00) is given back by the engine
    rig.wait(lambda: rig.notes.master and rig.notes.inhibit_mask, "notes enabled again")
    limits = rig.notes.inhibit_mask
    rig.notes.inhibit_mask = 0xFF  # a race: the validator takes a note the limit excludes
    assert rig.notes.insert("EU0050A")
    rig.wait(lambda: rig.notes.returned == [4], "the 50.00 note given back")
    rig.wait(lambda: rig.view().notice == "note_too_big", "the notice")
    # and the rest: 20.00 more ends the top-up
    rig.notes.inhibit_mask = limits  # (the race is over)
    assert rig.notes.insert("EU0020A")
    rig.wait(lambda: rig.view().state == State.DONE, "the top-up done")
    assert rig.view().outcome == Outcome.COMPLETED
    assert rig.entries("cash_in") == [2000, 1000, 2000]  # exactly what went into the box
    assert rig.notes.stacked == [3, 2, 3] and rig.key.credit == 5000
    rig.wait(lambda: not rig.notes.master, "notes disabled after the payment")
    rig.kiosk.journal.verify()


def test_a_lost_answer_does_not_credit_a_note_twice(rig: EsspRig) -> None:
    rig.pay(None)
    rig.notes.silent_for = 1  # the answer to the next command is lost on the line
    assert rig.notes.insert("EU0020A")
    rig.wait(lambda: rig.view().paid == E(2000), "credited")
    rig.notes.drop_next = True
    assert rig.notes.insert("EU0005A")
    rig.wait(lambda: rig.view().paid == E(2500), "credited")
    rig.kiosk.submit(Finish())
    rig.wait(lambda: rig.view().state == State.DONE, "done")
    assert rig.entries("cash_in") == [2000, 500] and rig.notes.stacked == [3, 1]
