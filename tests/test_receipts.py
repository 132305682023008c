"""Receipts: what the customer gets on paper, byte for byte as the printer receives it.

The journal is written by the real engine (each step's records appended as the kiosk does);
the receipt is built from the journal alone and rendered through python-escpos' dummy
transport. The expected bytes are spelled out from the ESC/POS command set and the receipt's
text as a customer reads it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest
from escpos.printer import Dummy

from drivers.printer.device import ReceiptPrinter
from drivers.printer.sim import PrinterSim
from kiosk.adapters.printer import EscPosPrinterPort
from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.documents.receipt import (
    NoSuchTransaction,
    escpos_job,
    report,
    to_text,
    transaction_receipt,
)
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import Outcome, Receipt, State, TopUpSession
from kiosk.domain.events import (
    Account,
    AmountChosen,
    CardApproved,
    CardReceipt,
    CoinAccepted,
    Commodity,
    Event,
    Finish,
    KeyInfo,
    KeyInserted,
    KeyStatus,
    KeyWriteFailed,
    KeyWritten,
    Kind,
    LanguageChosen,
    Method,
    MethodChosen,
    NoteEscrowed,
    NoteStacked,
    Record,
    Role,
)
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import Journal
from kiosk.service.diag import Diagnostics, empty_cash_box
from kiosk.sim.fakes import FakeKey, FakeKeyReader, FakeNoteValidator, FakePrinter
from tests.conftest import SATURDAY_MORNING, make_site, wait_until

TXID = "DEMO-01-20261121-090000-AB12"

# ESC/POS, from the command reference
ESC, GS = b"\x1b", b"\x1d"
INIT = ESC + b"@"
CP858 = ESC + b"t\x13"  # character code table 19: PC858 (with the euro sign)
MODE_0 = ESC + b"!\x00"  # print mode: font A, normal size
DOUBLE_HEIGHT = ESC + b"!\x10"
BOLD_ON, BOLD_OFF = ESC + b"E\x01", ESC + b"E\x00"
CENTER, LEFT = ESC + b"a\x01", ESC + b"a\x00"
TITLE = MODE_0 + MODE_0 + DOUBLE_HEIGHT + BOLD_ON + CENTER  # python-escpos' set(...) sequence
CENTRED = MODE_0 + MODE_0 + MODE_0 + BOLD_OFF + CENTER
BOLD = MODE_0 + MODE_0 + MODE_0 + BOLD_ON + LEFT
TEXT = MODE_0 + MODE_0 + MODE_0 + BOLD_OFF + LEFT
FEED_CUT = ESC + b"d\x06" + GS + b"V\x00"  # feed 6 lines, full cut


def qr(data: str) -> bytes:
    """GS ( k: model 2, module size 6, error correction L, store, print."""

    def fn(cn_fn: bytes, payload: bytes) -> bytes:
        n = len(payload) + 2  # pL pH count cn, fn and the parameters
        return GS + b"(k" + bytes([n & 0xFF, n >> 8]) + b"1" + cn_fn + payload

    return (
        fn(b"A", b"2\x00")
        + fn(b"C", b"\x06")
        + fn(b"E", b"0")
        + fn(b"P", b"0" + data.encode("ascii"))
        + fn(b"Q", b"0")
    )


def lines(*text: str) -> bytes:
    return "".join(t + "\n" for t in text).encode("cp858")


def E(minor: int) -> Money:
    return Money(minor, "EUR")


@pytest.fixture
def site() -> Site:
    return make_site("demo", fee={"net": "0.84", "vat_percent": 19, "gross": "1.00"})


def customer(credit: int = 1250) -> KeyInfo:
    return KeyInfo(
        "KEY-00012345", "2000471199", "1ESY1160000001", Commodity.ELECTRICITY, Role.CUSTOMER,
        E(credit),
    )  # fmt: skip


def journal_of(site: Site, tmp_path: Path, events: Iterable[Event], debt: int = 800) -> Journal:
    """Run the engine over `events` and journal its records as the kiosk does."""
    journal = Journal(tmp_path / "journal.db", site.kiosk_id)
    now = SATURDAY_MORNING
    session = TopUpSession(site, now, lambda: TXID)
    for ev in [KeyInserted(customer(), Account(KeyStatus.ACTIVE, E(debt))), *events]:
        now += timedelta(seconds=5)
        records = [c for c in session.handle(ev) if isinstance(c, Record)]
        if records:
            journal.append(records, now)
    return journal


def rendered(doc: object) -> bytes:
    p = Dummy()
    escpos_job(doc)(p)  # type: ignore[arg-type]
    return bytes(p.output)


def header(lang_lines: tuple[str, str], when: str) -> bytes:
    """The receipt's head: utility (title), site (centred), automat and date."""
    automat, date = lang_lines
    return (
        TITLE + lines("Stadtwerke Demo")
        + CENTRED + lines("Demo-Kassenautomat", "Musterstraße 1, 07743 Jena")
        + TEXT + lines("-" * 42, f"{automat:<35}DEMO-01", f"{date:<{42 - len(when)}}{when}")
    )  # fmt: skip


CASH = [
    AmountChosen(E(2500)), MethodChosen(Method.CASH),
    NoteEscrowed(E(2000)), NoteStacked(E(2000)),
    CoinAccepted(E(200)), CoinAccepted(E(200)), CoinAccepted(E(100)),
    KeyWritten(TXID, E(3050)),  # 12.50 on the key + 18.00
]  # fmt: skip


def test_cash_receipt_byte_for_byte(site: Site, tmp_path: Path) -> None:
    """25.00 in a note and three coins; fee 1.00 (0.16 VAT), 25 % of the rest to the debt."""
    doc = transaction_receipt(journal_of(site, tmp_path, CASH), site, TXID)
    assert rendered(doc) == (
        INIT + CP858 + header(("Automat-Nr.", "Datum"), "21.11.2026 10:00")
        + lines(
            "Vorgang       DEMO-01-20261121-090000-AB12",
            "Schlüssel                     ********2345",
            "Vertragskonto                   ******1199",
            "-" * 42,
            "Bar bezahlt                        25,00 €",
            "  1 x 20,00 €                      20,00 €",
            "  2 x 2,00 €                        4,00 €",
            "  1 x 1,00 €                        1,00 €",
            "-" * 42,
            "Gebühr                              1,00 €",
            "  darin MwSt. 19 %                  0,16 €",
            "Schulden getilgt                    6,00 €",
            "Auf den Schlüssel geladen          18,00 €",
            "Neues Guthaben                     30,50 €",
            "-" * 42,
            "Fragen? Kundencenter, Musterstraße 1,",
            "Mo-Fr 9-18 Uhr",
        )
        + CENTRED + lines("Vielen Dank.")
        + TEXT + FEED_CUT
    )  # fmt: skip


def test_card_receipt_carries_the_terminals_text_in_the_customers_language(
    site: Site, tmp_path: Path
) -> None:
    terminal = ["      Kundenbeleg", "girocard", "Betrag EUR        30,00", "Zahlung erfolgt"]
    journal = journal_of(site, tmp_path, [
        LanguageChosen("fr"), AmountChosen(E(3000)), MethodChosen(Method.CARD),
        CardApproved(E(3000), {"card": "girocard", "pan": "############1234", "receipt_no": 17}),
        KeyWritten(TXID, E(3425)),  # 12.50 + 21.75
        CardReceipt(TXID, {"merchant": ["Haendlerbeleg"], "customer": terminal}),
    ])  # fmt: skip
    doc = transaction_receipt(journal, site, TXID)  # the language comes from the journal
    assert rendered(doc) == (
        INIT + CP858 + header(("N° d'automate", "Date et heure"), "21 nov. 2026 10:00")
        + lines(
            "N° de transaction",  # too long beside the id: the id goes below
            "              DEMO-01-20261121-090000-AB12",
            "Clé                           ********2345",
            "Compte client                   ******1199",
            "-" * 42,
            "Payé par carte                     30,00 €",
            "  girocard ############1234",
            "  N° ticket terminal                    17",
            "-" * 42,
            "Frais                               1,00 €",
            "  dont TVA 19 %                     0,16 €",
            "Dette remboursée                    7,25 €",
            "Chargé sur votre clé               21,75 €",
            "Nouveau crédit                     34,25 €",
            "-" * 42,
            *terminal,  # the customer copy, not the merchant's
            "-" * 42,
            "Des questions ? Kundencenter, Musterstraße",
            "1, Mo-Fr 9-18 Uhr",
        )
        + CENTRED + lines("Merci.")
        + TEXT + FEED_CUT
    )  # fmt: skip


@pytest.mark.parametrize("gap", [" ", "  ", "\t", "-", ".", "/"],
                         ids=["space", "two spaces", "tab", "dash", "dot", "slash"])  # fmt: skip
def test_a_card_number_on_a_receipt_keeps_only_its_last_four_digits(
    site: Site, tmp_path: Path, gap: str
) -> None:
    """A card number however its groups are separated, in the card's line (as an older
    release journaled it) and in the terminal's text: the paper shows its last four only."""
    pan = gap.join(("4111", "1111", "1111", "1111"))  # (with a card's check digit)
    terminal = ["      Kundenbeleg", f"Karte {pan}", f"PAN{gap}{pan}", "Betrag EUR        30,00"]
    journal = journal_of(site, tmp_path, [
        AmountChosen(E(3000)), MethodChosen(Method.CARD),
        CardApproved(E(3000), {"card": "VISA", "pan": pan, "receipt_no": 17}),
        KeyWritten(TXID, E(3425)),
        CardReceipt(TXID, {"customer": terminal}),
    ])  # fmt: skip
    text = to_text(transaction_receipt(journal, site, TXID))
    for label in ("  VISA ", "Karte ", "PAN"):  # (the paper has a tab as spaces)
        line = next(ln for ln in text.splitlines() if ln.startswith(label))
        assert line.count("*") == 12 and "".join(filter(str.isdigit, line)) == "1111", line
    assert "4111" not in text


def test_pending_credit_receipt_has_the_transaction_as_qr_code(site: Site, tmp_path: Path) -> None:
    journal = journal_of(site, tmp_path, [
        AmountChosen(None), NoteEscrowed(E(1000)), NoteStacked(E(1000)), Finish(),
        KeyWriteFailed(TXID, "key refused the write"),
    ], debt=0)  # fmt: skip
    doc = transaction_receipt(journal, site, TXID, "en", copy=True)
    assert doc.qr == TXID
    assert rendered(doc) == (
        INIT + CP858 + header(("Automat no.", "Date"), "21 Nov 2026 10:00")
        + lines(
            "Transaction   DEMO-01-20261121-090000-AB12",
            "Key                           ********2345",
            "Contract account                ******1199",
        )
        + BOLD + lines("COPY")
        + TEXT + lines(
            "-" * 42,
            "Paid in cash                        €10.00",
            "  1 x €10.00                        €10.00",
            "-" * 42,
            "Fee                                  €1.00",
            "  incl. VAT 19 %                     €0.16",
        )
        + BOLD + lines("CREDIT PENDING                       €9.00")
        + TEXT + lines(
            "-" * 42,
            "Your money is safe. The credit is written",
            "to your key the next time you insert it,",
            "at any automat of ours. Keep this receipt.",
        )
        + CENTER + qr(TXID) + LEFT
        + CENTRED + lines(TXID)
        + TEXT + lines("-" * 42, "Questions? Kundencenter, Musterstraße 1,", "Mo-Fr 9-18 Uhr")
        + CENTRED + lines("Thank you.")
        + TEXT + FEED_CUT
    )  # fmt: skip


def test_cash_box_emptying_report_byte_for_byte(site: Site, tmp_path: Path) -> None:
    journal = journal_of(site, tmp_path, CASH)
    when = SATURDAY_MORNING + timedelta(hours=1)
    shown = empty_cash_box(journal, site, "key T-9001", when)
    doc = report(site, "Kassenleerung / cash box emptied", shown[2:], when, "key T-9001")
    assert rendered(doc) == (
        INIT + CP858 + header(("Automat-Nr.", "Datum"), "21.11.2026 11:00")
        + lines("Technician / Techniker: key T-9001", "-" * 42)
        + BOLD + lines("Kassenleerung / cash box emptied")
        + TEXT + lines(
            "since -",
            "coin      1.00 EUR x    1 =       1.00 EUR",
            "coin      2.00 EUR x    2 =       4.00 EUR",
            "note     20.00 EUR x    1 =      20.00 EUR",
            "total                            25.00 EUR",
            "-" * 42,
        )
        + FEED_CUT
    )  # fmt: skip


def test_an_unknown_or_open_transaction_has_no_receipt(site: Site, tmp_path: Path) -> None:
    journal = journal_of(site, tmp_path, CASH[:4])  # paid, not yet written: still open
    before = journal.entries()
    for txid in ("NO-SUCH-TX", TXID):
        with pytest.raises(NoSuchTransaction, match="no closed transaction"):
            transaction_receipt(journal, site, txid)
    assert journal.entries() == before


def test_the_text_dump_is_the_paper(site: Site, tmp_path: Path) -> None:
    doc = transaction_receipt(journal_of(site, tmp_path, CASH), site, TXID)
    text = to_text(doc)
    assert all(len(line) <= 42 for line in text.splitlines())
    assert (
        "             Stadtwerke Demo" in text
        and "Neues Guthaben                     30,50 €" in text
    )


# ---------------------------------------------------------------- paper out, printer offline


@pytest.mark.parametrize("fault", ["paper_out", "offline"])
def test_no_paper_or_printer_never_holds_up_a_top_up_and_the_receipt_can_be_reprinted(
    tmp_path: Path, fault: str
) -> None:
    """The real printer port and driver on the simulated printer (a pty): the top-up
    completes, the journal says no receipt was printed and why, the done screen says so;
    after paper is loaded the technician's reprint comes out, marked as a copy."""
    site = make_site("demo")
    journal = Journal(tmp_path / "journal.db", site.kiosk_id)
    journal.set_key("K1", KeyStatus.ACTIVE, "4711")
    with PrinterSim() as sim:
        port = EscPosPrinterPort(ReceiptPrinter(sim.path, status_timeout=0.3))
        reader, notes = FakeKeyReader(), FakeNoteValidator(site.notes)
        devices = Devices(reader=reader, notes=notes, printer=port)
        kiosk = Kiosk(site, journal, devices, utc_now)
        changed = threading.Event()
        kiosk.listeners.append(lambda _v, _e: changed.set())
        stop = threading.Event()
        engine = threading.Thread(target=kiosk.run, args=(stop, 0.05), daemon=True)
        engine.start()
        try:
            if fault == "paper_out":
                sim.paper = "out"
            else:
                sim.online = False
            key = FakeKey("K1", "4711", credit=500)
            reader.insert(key)
            wait_until(lambda: kiosk.view().state == State.CHOOSING_AMOUNT, "summary", changed)
            kiosk.submit(AmountChosen(E(1000)))
            kiosk.submit(MethodChosen(Method.CASH))
            wait_until(lambda: kiosk.view().state == State.CASH, "cash", changed)
            assert notes.insert(E(1000))
            wait_until(lambda: kiosk.view().receipt == Receipt.NOT_PRINTED, "no receipt", changed)
            view = kiosk.view()
            assert view.outcome == Outcome.COMPLETED and key.credit == 1500  # not held up
            (receipt,) = [e for e in journal.entries() if e.kind == Kind.RECEIPT]
            reason = "printer out" if fault == "paper_out" else "printer offline"
            assert receipt.txid == view.txid and receipt.data == {
                "printed": False,
                "reason": reason,
            }
            assert sim.jobs == []  # nothing was sent to be printed "later"

            sim.paper, sim.online = "ok", True  # paper loaded, printer back
            d = Diagnostics(kiosk, "key T-9001")
            assert view.txid is not None and d.reprint(view.txid) is True
            (job,) = sim.wait_jobs(1)
            vorgang = [line.split() for line in job.lines if line.startswith("Vorgang")]
            assert vorgang == [["Vorgang", view.txid]] and "KOPIE" in job.lines
            assert "Neues Guthaben                     15,00 €" in job.lines
            audit = [e for e in journal.entries() if e.kind == Kind.AUDIT][-1]
            assert audit.data["action"] == "receipt_reprinted" and audit.data["printed"] is True
            stop.set()  # (the engine may still journal, e.g. the printer's fault cleared)
            engine.join(5)
            assert journal.verify() == journal.last_seq() == len(journal.entries())
        finally:
            stop.set()
            engine.join(5)
            port.close()


def test_a_reprint_of_an_unknown_transaction_is_refused_and_nothing_printed(
    site: Site, tmp_path: Path
) -> None:
    journal = journal_of(site, tmp_path, CASH)
    printer = FakePrinter()
    kiosk = Kiosk(site, journal, Devices(reader=FakeKeyReader(), printer=printer), utc_now)
    before = journal.entries()
    with pytest.raises(NoSuchTransaction):
        Diagnostics(kiosk, "key T-9001").reprint("DEMO-01-20261121-090000-FFFF")
    assert printer.documents == [] and journal.entries()[len(before) :] == [
        e for e in journal.entries()[len(before) :] if e.kind == Kind.KIOSK_STARTED
    ]


def test_the_automat_opens_the_printer_its_site_file_names(tmp_path: Path) -> None:
    from drivers.printer.device import PaperStatus
    from kiosk.adapters.printer import open_printer

    with PrinterSim() as sim:
        site = make_site(
            "demo",
            devices={"printer": {"port": sim.path, "receipt": "always"}},
            secrets={"file": str(tmp_path / "secrets.toml")},
        )  # (a real port)
        port = open_printer(site)
        try:
            assert isinstance(port, EscPosPrinterPort)
            assert site.receipt == "always" and port.status() == PaperStatus.OK
            assert port.print_document(transaction_receipt(journal_of(site, tmp_path, CASH),
                                                           site, TXID))  # fmt: skip
            assert "Neues Guthaben                     30,50 €" in sim.wait_jobs(1)[0].lines
        finally:
            port.close()
    assert open_printer(dataclasses.replace(site, devices=site.devices.model_copy(
        update={"printer": None}))) is None  # fmt: skip
