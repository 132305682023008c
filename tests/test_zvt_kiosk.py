"""The kiosk's card flow on the real ZVT client against the terminal simulator (pty and TCP).

In each case the journal and the key agree with what the terminal did: no approved payment
without credit or reversal, no credit without a payment (or a journaled claim when the
terminal reversed after the credit was written).
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.zvt.apdu import Answer
from drivers.zvt.client import ZvtClient
from drivers.zvt.codes import Intermediate
from drivers.zvt.sim import TerminalSim
from drivers.zvt.transport import open_link
from kiosk.adapters.card import ZvtCardPort, open_card
from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.documents.i18n import Translator
from kiosk.documents.receipt import to_text
from kiosk.documents.terminal import PROMPTS, terminal_prompt
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import Outcome, State
from kiosk.domain.events import AmountChosen, Cancel, KeyStatus, Kind, Method, MethodChosen
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import Journal
from kiosk.sim.fakes import FakeCoinAcceptor, FakeKey, FakeKeyReader, FakeNoteValidator, FakePrinter
from tests.conftest import make_site, wait_until


def E(minor: int) -> Money:
    return Money(minor, "EUR")


@dataclass
class CardRig:
    kiosk: Kiosk
    sim: TerminalSim
    port: ZvtCardPort
    reader: FakeKeyReader
    notes: FakeNoteValidator
    key: FakeKey
    changed: threading.Event

    def wait(self, pred: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
        wait_until(pred, what, self.changed, timeout)

    def kinds(self, receipts: bool = False) -> list[str]:
        """The transaction's journal kinds (without the receipt's unless asked: the terminal's
        receipt text comes when its dialogue ends, whatever the kiosk did meanwhile)."""
        return [
            e.kind
            for e in self.kiosk.journal.entries()
            if e.txid and (receipts or e.kind not in ("card_receipt", "receipt"))
        ]

    def pay_by_card(self, amount: int) -> None:
        self.reader.insert(self.key)
        self.wait(lambda: self.kiosk.view().state == State.CHOOSING_AMOUNT, "summary")
        self.kiosk.submit(AmountChosen(E(amount)))
        self.kiosk.submit(MethodChosen(Method.CARD))


def single_threaded(
    site: Site, port: ZvtCardPort, tmp_path: Path
) -> tuple[Kiosk, Journal, FakeKeyReader]:
    """A kiosk whose events the test processes itself (no engine thread)."""
    journal = Journal(tmp_path / "j.sqlite", site.kiosk_id)
    journal.set_key("K1", KeyStatus.ACTIVE, "4711")
    reader = FakeKeyReader()
    devices = Devices(reader=reader, card=port, coin=FakeCoinAcceptor(site.coins))
    return Kiosk(site, journal, devices, utc_now), journal, reader


@pytest.fixture(params=["tcp", "serial"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CardRig]:
    site = make_site("jena-saalstrasse", hours={"always_open": True})
    sim = TerminalSim(request.param, step=0.02)
    sim.start()
    port = ZvtCardPort(ZvtClient(open_link(sim.port), t3=1.0, t4=3.0), "EUR", decision_wait=2.0,
                       probe_interval=0.1)  # fmt: skip
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    journal.set_key("K1", KeyStatus.ACTIVE, "4711")
    reader, notes = FakeKeyReader(), FakeNoteValidator(site.notes)
    devices = Devices(
        reader=reader,
        coin=FakeCoinAcceptor(site.coins),
        notes=notes,
        card=port,
        printer=FakePrinter(),
    )
    kiosk = Kiosk(site, journal, devices, utc_now)
    changed = threading.Event()
    kiosk.listeners.append(lambda _v, _e: changed.set())
    stop = threading.Event()
    engine = threading.Thread(target=kiosk.run, args=(stop, 0.05), daemon=True)
    engine.start()
    port.start()
    r = CardRig(kiosk, sim, port, reader, notes, FakeKey("K1", "4711"), changed)
    r.wait(lambda: sim.config_byte is not None, "registration")
    yield r
    stop.set()
    engine.join(5)
    assert port.wait_idle(5)
    port.close()
    assert not port.running
    sim.stop()


@pytest.mark.parametrize("rig", ["tcp"], indirect=True)
def test_terminal_switched_off_card_is_withdrawn_and_comes_back_by_itself(rig: CardRig) -> None:
    """The terminal off (its TCP connection dropped, nothing at its address): card payment is
    withdrawn within a probe or two, cash goes on; back on, it is registered again and takes
    the next payment, with nobody at the automat."""
    from kiosk.domain.events import Device

    rig.wait(lambda: Method.CARD in rig.kiosk.view().methods, "card offered")
    registrations = rig.sim.commands.count(bytes.fromhex("0600"))
    rig.sim.unplug()
    rig.wait(lambda: Device.CARD in rig.kiosk.view().faults, "the terminal's fault")
    view = rig.kiosk.view()
    assert Method.CARD not in view.methods and Method.CASH in view.methods
    assert view.state == State.IDLE  # in service for cash
    rig.sim.plug()
    rig.wait(lambda: Method.CARD in rig.kiosk.view().methods, "card offered again")
    assert rig.sim.commands.count(bytes.fromhex("0600")) == registrations + 1
    rig.pay_by_card(3000)
    rig.wait(lambda: rig.kiosk.view().state == State.DONE, "done")
    assert rig.kiosk.view().outcome == Outcome.COMPLETED and rig.key.credit == 3000
    faults = [e.data for e in rig.kiosk.journal.entries_of_kind(Kind.FAULT)
              if e.data.get("device") == str(Device.CARD)]  # fmt: skip
    assert [bool(f.get("cleared")) for f in faults] == [False, True], faults


def test_approved_card_top_up(rig: CardRig) -> None:
    statuses: list[tuple[int | None, str]] = []
    rig.kiosk.listeners.append(
        lambda v, _e: statuses.append((v.card_status, v.card_text)) if v.card_text else None
    )
    rig.pay_by_card(3000)
    rig.wait(lambda: rig.kiosk.view().state == State.DONE, "done")
    rig.wait(lambda: rig.sim.payments and rig.sim.payments[-1].kept, "the terminal keeps it")
    assert rig.kiosk.view().outcome == Outcome.COMPLETED and rig.key.credit == 3000
    assert rig.kinds() == ["tx_opened", "card_approved", "split", "key_written", "tx_closed"]
    approved = [e for e in rig.kiosk.journal.entries() if e.kind == "card_approved"][0]
    assert approved.amount == E(3000) and approved.data["card"] == "girocard"
    assert (
        approved.data["receipt_no"] == rig.sim.payments[-1].receipt and "*" in approved.data["pan"]
    )
    # the terminal's status codes reached the screen, which says them in the customer's words
    assert (0x0A, "insert card") in statuses and (0x01, "please watch PIN pad") in statuses
    shown = {lang: [terminal_prompt(code, text, Translator(lang)) for code, text in statuses]
             for lang in ("de", "en", "fr", "nl")}  # fmt: skip
    assert "Bitte geben Sie Ihre PIN am Kartenterminal ein." in shown["de"]
    assert "Please enter your PIN on the card terminal." in shown["en"]
    assert "Veuillez saisir votre code PIN sur le terminal de paiement." in shown["fr"]
    assert "Voer uw pincode in op de betaalautomaat." in shown["nl"]
    assert not any(text in shown["de"] for _code, text in statuses)  # never the terminal's own
    rig.wait(lambda: rig.port.wait_idle(0.01), "the card thread")
    assert set(rig.port.receipts[approved.txid]) == {"merchant", "customer"}
    rig.wait(lambda: "receipt" in rig.kinds(receipts=True), "the receipt printed")
    assert rig.kinds(receipts=True)[-2:] == ["card_receipt", "receipt"]
    printer = rig.kiosk.devices.printer
    assert isinstance(printer, FakePrinter)
    paper = to_text(printer.receipts[approved.txid])
    for line in rig.port.receipts[approved.txid]["customer"]:  # the terminal's customer copy
        assert line.strip() in paper
    assert "Paid by card" in paper or "Kartenzahlung" in paper


def test_a_status_we_have_no_text_for_shows_a_neutral_one_never_the_terminal_s_own() -> None:
    assert set(PROMPTS) == set(Intermediate)  # every code of the specification has our text
    said = terminal_prompt(0x77, "Bitte Karte drehen", Translator("fr"))
    assert said == "Suivez les instructions du terminal de paiement."  # not German
    assert terminal_prompt(None, "", Translator("de")) == ""
    assert terminal_prompt(0x0A, "insert card", Translator("nl")).startswith("Steek uw kaart in")


def test_declined_then_cash(rig: CardRig) -> None:
    rig.sim.next("decline")
    rig.pay_by_card(2000)
    rig.wait(lambda: rig.kiosk.view().notice == "card_declined", "the decline shown")
    assert rig.kiosk.view().state == State.CHOOSING_METHOD and rig.key.credit == 0
    rig.kiosk.submit(MethodChosen(Method.CASH))
    rig.wait(lambda: rig.kiosk.view().state == State.CASH, "cash")
    rig.notes.insert(E(2000))
    rig.wait(lambda: rig.kiosk.view().state == State.DONE, "done")
    assert rig.key.credit == 2000 and not any(p.kept for p in rig.sim.payments)
    assert "card_failed" in rig.kinds() and "card_approved" not in rig.kinds()


@pytest.mark.parametrize(
    "script,notice",
    [
        ("wrong_pin", "card_declined"),
        ("unreadable", "card_declined"),
        ("customer_abort", "card_aborted"),
        ("busy", "card_error"),
    ],
)
def test_other_failures_leave_nothing_charged_or_credited(
    rig: CardRig, script: str, notice: str
) -> None:
    rig.sim.next(script)
    rig.pay_by_card(2000)
    rig.wait(lambda: rig.kiosk.view().notice == notice, notice)
    assert rig.key.credit == 0 and not any(p.kept for p in rig.sim.payments)


def test_key_write_failure_reverses_the_payment(rig: CardRig) -> None:
    rig.reader.fail_next = "refuse"
    rig.pay_by_card(2500)
    rig.wait(lambda: rig.kiosk.view().outcome == Outcome.REVERSED, "reversed")
    assert rig.key.credit == 0
    assert rig.sim.payments[-1].reversed and not rig.sim.payments[-1].kept
    assert rig.kinds()[-3:] == ["write_failed", "card_reversed", "tx_closed"]


def test_customer_cancel_at_the_pin_pad_aborts(rig: CardRig) -> None:
    rig.sim.next("hold")
    rig.pay_by_card(2500)
    rig.wait(lambda: rig.kiosk.view().card_text == "please watch PIN pad", "PIN pad")
    rig.kiosk.submit(Cancel())
    rig.wait(lambda: rig.kiosk.view().notice == "card_aborted", "aborted")
    assert not rig.sim.payments and rig.key.credit == 0


def test_key_pulled_at_the_pin_pad_aborts_and_nothing_is_charged(rig: CardRig) -> None:
    rig.sim.next("hold")
    rig.pay_by_card(2500)
    rig.wait(lambda: rig.kiosk.view().card_text == "please watch PIN pad", "PIN pad")
    rig.reader.remove()
    rig.wait(lambda: rig.kiosk.view().state == State.IDLE, "idle")
    assert not rig.sim.payments and rig.kinds()[-1] == "tx_closed"


def test_connection_drop_after_approval_becomes_a_claim(tmp_path: Path) -> None:
    """TCP only: the terminal reverses a payment whose answer never reached it."""
    site = make_site("jena-saalstrasse", hours={"always_open": True})
    with TerminalSim("tcp") as sim:
        sim.next("drop_after_approval")
        port = ZvtCardPort(ZvtClient(open_link(sim.port), t3=1.0, t4=3.0), "EUR", decision_wait=2.0)
        kiosk, journal, reader = single_threaded(site, port, tmp_path)
        port.attach(kiosk.submit)
        key = FakeKey("K1", "4711")
        reader.insert(key)
        kiosk.drain()
        kiosk.submit(AmountChosen(E(2000)))
        kiosk.submit(MethodChosen(Method.CARD))
        deadline = time.monotonic() + 10
        while not any(e.kind == "card_reversed" for e in journal.entries()):
            assert time.monotonic() < deadline, [e.kind for e in journal.entries()]
            with contextlib.suppress(queue.Empty):
                kiosk.process(kiosk.events.get(timeout=0.1))
        rev = [e for e in journal.entries() if e.kind == "card_reversed"][0]
        assert rev.data["after_credit"] is True and rev.amount == E(2000)
        assert key.credit == 2000 and not sim.payments[-1].kept
        # The credit given is now owed: open debt on the contract account.
        assert journal.account_for("K1", "4711", "EUR").debt == E(2000)
        while not any(e.kind == "card_receipt" for e in journal.entries()):
            assert time.monotonic() < deadline, [e.kind for e in journal.entries()]
            with contextlib.suppress(queue.Empty):
                kiosk.process(kiosk.events.get(timeout=0.1))
        # The outcome is journaled before the receipt that settles the payment, so no crash
        # can leave a settled payment whose reversal is not in the journal.
        kinds = [e.kind for e in journal.entries() if e.kind in ("card_reversed", "card_receipt")]
        assert kinds == ["card_reversed", "card_receipt"]
        assert journal.entries_of_kind(Kind.CARD_RECEIPT)[-1].data["kept"] is False
        assert port.wait_idle(5)
        port.client.link.close()


def test_a_silent_terminal_is_an_error_and_nothing_changes(rig: CardRig) -> None:
    rig.sim.inject("silence")
    rig.pay_by_card(2000)
    rig.wait(lambda: rig.kiosk.view().notice == "card_error", "the error shown")
    assert rig.key.credit == 0 and not rig.sim.payments
    rig.kiosk.submit(MethodChosen(Method.CARD))  # the customer tries again: it works
    rig.wait(lambda: rig.kiosk.view().state == State.DONE, "done")
    rig.wait(lambda: rig.sim.payments[-1].kept, "the terminal keeps it")
    assert rig.key.credit == 2000


@pytest.mark.parametrize("fault", ["nak", "bad_crc"])
def test_serial_line_faults_do_not_change_the_outcome(tmp_path: Path, fault: str) -> None:
    site = make_site("jena-saalstrasse", hours={"always_open": True})
    with TerminalSim("serial") as sim:
        port = ZvtCardPort(ZvtClient(open_link(sim.port), t3=1.0, t4=3.0), "EUR")
        kiosk, journal, reader = single_threaded(site, port, tmp_path)
        key = FakeKey("K1", "4711")
        reader.insert(key)
        kiosk.drain()
        sim.inject(fault, fault)
        kiosk.submit(AmountChosen(E(2000)))
        kiosk.submit(MethodChosen(Method.CARD))
        deadline = time.monotonic() + 10
        while kiosk.view().state != State.DONE:
            assert time.monotonic() < deadline
            with contextlib.suppress(queue.Empty):
                kiosk.process(kiosk.events.get(timeout=0.1))
        assert port.wait_idle(5)
        assert key.credit == 2000 and sim.payments[-1].kept
        assert port.client.link.stats["repeats"] + port.client.link.stats["naks_sent"] >= 1  # type: ignore[attr-defined]
        port.client.link.close()


def test_no_card_port_where_the_site_takes_no_cards() -> None:
    assert open_card(make_site("poessneck-breite-strasse")) is None
    site = make_site("jena-saalstrasse", devices={"card": {"port": "tcp://127.0.0.1:1"}})
    assert isinstance(open_card(site), ZvtCardPort)  # connects when it first talks


def test_after_a_crash_the_terminal_is_asked_whether_it_kept_the_payment(tmp_path: Path) -> None:
    """Found by the crash matrix: the kiosk died after the approval was journaled and before
    it answered; the terminal gave the money back, yet the restart owed the key the credit
    (credit without money). Now the restart asks the terminal (repeat receipt) first."""
    from kiosk.domain.events import Record

    site = make_site("jena-saalstrasse", hours={"always_open": True})
    with TerminalSim("tcp") as sim:
        sim.next("drop_after_approval")  # what a dead kiosk looks like to the terminal
        port = ZvtCardPort(ZvtClient(open_link(sim.port), t3=1.0, t4=3.0), "EUR")
        result = port.client.authorise(2000, decide=lambda _st: Answer.OK)
        assert not sim.payments[-1].kept  # no answer reached it: it gives the money back
        number = sim.payments[-1].receipt
        journal = Journal(tmp_path / "j.sqlite", site.kiosk_id)
        journal.set_key("K1", KeyStatus.ACTIVE, "4711")
        journal.append([
            Record(Kind.TX_OPENED, "T1", "K1", None, {"method": "card"}),
            Record(Kind.CARD_APPROVED, "T1", "K1", E(2000), {"receipt_no": number}),
            Record(Kind.SPLIT, "T1", "K1", E(2000), {"paid": 2000, "fee": 0, "debt": 0,
                                                      "credit": 2000}),
        ], utc_now())  # fmt: skip
        assert result.outcome != "approved"
        kiosk = Kiosk(site, journal, Devices(reader=FakeKeyReader(), card=port), utc_now)
        kinds = [r.kind for r in kiosk.reconciled]
        assert kinds[0] == Kind.CARD_REVERSED
        owed = [r.amount for r in kiosk.reconciled if r.kind == Kind.PENDING_CREDIT]
        assert owed == [E(0)]  # nothing owed: only the key's log is still to be looked at
        assert journal.open_credits() == []  # the money is back on the card
        closed = journal.entries_of_kind(Kind.TX_CLOSED)[-1]
        assert closed.data["outcome"] == "reversed"

        # a payment the terminal kept: the restart finds it kept (and owes the credit)
        sim.next("approve")
        port.client.authorise(1500, decide=lambda _st: Answer.OK)
        assert sim.payments[-1].kept
        approved = journal.entries_of_kind(Kind.CARD_APPROVED)[-1]
        kept = dataclasses.replace(approved, data={"receipt_no": sim.payments[-1].receipt})
        assert port.payment_kept(kept) is True
        assert port.payment_kept(dataclasses.replace(approved, data={"receipt_no": 1})) is None
        port.client.link.close()
