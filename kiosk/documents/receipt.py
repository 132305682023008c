"""Receipts and technician reports: one document model, rendered to ESC/POS and to text.

A transaction's receipt is built from the journal alone (never from the screen's memory), so
the same paper comes out at the end of the top-up, after a restart and as a reprint from
diagnostics: utility and site, automat, local date and time, transaction id, key and contract
account masked, what was paid and how (coins and notes by denomination, or the card terminal's
own receipt text), the fee with its VAT, debt repaid, the credit and the key's new credit; a
credit left owed gets a QR code carrying the transaction id. Texts are in the customer's
language, from the screen's catalogues.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from babel.dates import format_date
from escpos.escpos import Escpos

from drivers.zvt.fields import mask_card_numbers
from kiosk.documents.i18n import LOCALES, Translator, money_text
from kiosk.domain.errors import KioskError
from kiosk.domain.events import Kind
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import Entry, Journal

#: characters per line: an 80 mm roll at font A
WIDTH = 42
#: the printer's code page: German, French and Dutch letters and the euro sign
CODE_PAGE = "CP858"

Style = Literal["title", "center", "bold", "text", "rule"]


@dataclass(frozen=True)
class Row:
    """A line of the document: text, or a label with its value at the right margin."""

    text: str = ""
    value: str = ""
    style: Style = "text"


@dataclass(frozen=True)
class Document:
    rows: tuple[Row, ...]
    qr: str | None = None  # printed after the rows, centred
    after_qr: tuple[Row, ...] = ()


def masked(text: str, keep: int = 4, mask: str = "•") -> str:
    """Only the last characters: what a customer recognises, not what a passer-by can use."""
    return mask * max(0, len(text) - keep) + text[-keep:]


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, break_on_hyphens=False)


def _lines(row: Row) -> list[str]:
    """The row cut to the paper's width (a label too long for its value goes on its own line)."""
    if row.style == "rule":
        return ["-" * WIDTH]
    if not row.value:
        return _wrap(row.text) or [""]
    if len(row.text) + 1 + len(row.value) <= WIDTH:
        return [row.text + row.value.rjust(WIDTH - len(row.text))]
    return [*_wrap(row.text), row.value.rjust(WIDTH)]


def to_text(doc: Document) -> str:
    """What the paper shows, for the screen, the logs and for people reviewing a layout."""
    out: list[str] = []
    for row in doc.rows:
        out += [ln.center(WIDTH).rstrip() if row.style in ("title", "center") else ln
                for ln in _lines(row)]  # fmt: skip
    if doc.qr:
        out.append(f"[QR: {doc.qr}]".center(WIDTH).rstrip())
    for row in doc.after_qr:
        out += [ln.center(WIDTH).rstrip() if row.style in ("title", "center") else ln
                for ln in _lines(row)]  # fmt: skip
    return "\n".join(out) + "\n"


def escpos_job(doc: Document) -> Callable[[Escpos], None]:
    """The document as ESC/POS: initialise, code page, rows, QR (the printer's own), cut."""

    def render(p: Escpos) -> None:
        p.hw("INIT")
        p.charcode(CODE_PAGE)
        current: Style = "text"
        for row in (*doc.rows, None, *doc.after_qr):
            if row is None:
                if doc.qr:
                    p.set(align="center")
                    p.qr(doc.qr, size=6, native=True)
                    p.set(align="left")
                continue
            style: Style = "text" if row.style == "rule" else row.style
            if style != current:
                _style(p, style)
                current = style
            p.text("".join(line + "\n" for line in _lines(row)))
        if current != "text":
            _style(p, "text")
        p.cut()

    return render


def _style(p: Escpos, style: Style) -> None:
    if style == "title":
        p.set(align="center", bold=True, double_height=True)
    elif style == "center":
        p.set(align="center", bold=False, normal_textsize=True)
    elif style == "bold":
        p.set(align="left", bold=True, normal_textsize=True)
    else:
        p.set(align="left", bold=False, normal_textsize=True)


# ---------------------------------------------------------------- a transaction's receipt


class NoSuchTransaction(KioskError, LookupError):
    """No closed transaction with this id in the journal."""


def _plain(text: str) -> str:
    """Narrow and non-breaking spaces (CLDR's amounts) as the printer's plain space."""
    return text.replace("\xa0", " ").replace("\u202f", " ")


class _Texts:
    def __init__(self, lang: str, currency: str) -> None:
        self.tr = Translator(lang)
        self.lang = lang
        self.currency = currency

    def money(self, minor: int | Money) -> str:
        m = minor if isinstance(minor, Money) else Money(minor, self.currency)
        return _plain(money_text(m, self.lang))

    def when(self, ts: datetime, site: Site) -> str:
        local = ts.astimezone(site.hours.tz)
        return f"{format_date(local, 'medium', locale=LOCALES[self.lang])} {local:%H:%M}"


def header(site: Site, t: _Texts, when: datetime) -> list[Row]:
    return [
        Row(site.utility_name, style="title"),
        Row(site.name, style="center"),
        Row(site.address, style="center"),
        Row(style="rule"),
        Row(t.tr("Automat no."), site.kiosk_id),
        Row(t.tr("Date"), t.when(when, site)),
    ]


def transaction_receipt(
    journal: Journal, site: Site, txid: str, lang: str | None = None, *, copy: bool = False
) -> Document:
    """The receipt of a closed transaction from its journal entries; `copy` marks a reprint."""
    entries = journal.by_txid(txid)
    closed = [e for e in entries if e.kind == Kind.TX_CLOSED]
    if not closed:
        raise NoSuchTransaction(f"no closed transaction {txid!r} in the journal")
    end = closed[-1]
    lang = lang or str(end.data.get("lang") or site.default_language)
    return _receipt(entries, end, site, _Texts(lang, site.currency), copy)


def _first(entries: Iterable[Entry], kind: Kind) -> Entry | None:
    return next((e for e in entries if e.kind == kind), None)


def _receipt(entries: list[Entry], end: Entry, site: Site, t: _Texts, copy: bool) -> Document:
    tr = t.tr
    opened = _first(entries, Kind.TX_OPENED)
    rows = header(site, t, end.ts)
    txid = str(end.txid)
    rows.append(Row(tr("Transaction"), txid))
    if end.key:
        rows.append(Row(tr("Key"), masked(end.key, mask="*")))
    account = opened.data.get("contract_account") if opened else None
    if account:
        rows.append(Row(tr("Contract account"), masked(str(account), mask="*")))
    if copy:
        rows.append(Row(tr("COPY"), style="bold"))
    rows.append(Row(style="rule"))

    cash = [e for e in entries if e.kind == Kind.CASH_IN and e.amount is not None]
    if cash:
        total = sum(e.amount.minor for e in cash if e.amount is not None)
        rows.append(Row(tr("Paid in cash"), t.money(total)))
        pieces = Counter(e.amount.minor for e in cash if e.amount is not None)
        for value, n in sorted(pieces.items(), reverse=True):
            rows.append(Row(f"  {n} x {t.money(value)}", t.money(value * n)))
    card = _first(entries, Kind.CARD_APPROVED)
    if card is not None and card.amount is not None:
        rows.append(Row(tr("Paid by card"), t.money(card.amount)))
        d = card.data
        if d.get("card") or d.get("pan"):  # masked again: what the journal holds is printed
            said = " ".join(str(d[k]) for k in ("card", "pan") if d.get(k))
            rows.append(Row("  " + mask_card_numbers(said)))
        if d.get("receipt_no") is not None:
            rows.append(Row("  " + tr("Terminal receipt no."), str(d["receipt_no"])))

    outcome = end.data.get("outcome")
    split = _first(reversed(entries), Kind.SPLIT)
    if outcome == "reversed":
        rows += [Row(style="rule"), Row(tr("The card payment was given back"), style="bold"),
                 Row(tr("Nothing was charged."))]  # fmt: skip
    elif split is not None:
        s = split.data
        rows.append(Row(style="rule"))
        if s.get("fee"):
            rows.append(Row(tr("Fee"), t.money(s["fee"])))
            vat_bp = int(s.get("vat_bp", site.fee.vat_bp))
            rate = f"{vat_bp / 100:g}".replace(".", "," if t.lang != "en" else ".")
            rows.append(Row("  " + tr("incl. VAT {rate} %", rate=rate), t.money(s["fee_vat"])))
        if s.get("debt"):
            rows.append(Row(tr("Debt repaid"), t.money(s["debt"])))
        written = _first(entries, Kind.KEY_WRITTEN)
        if outcome == "pending":
            rows.append(Row(tr("CREDIT PENDING"), t.money(s["credit"]), style="bold"))
        else:
            rows.append(Row(tr("Credit written to your key"), t.money(s["credit"])))
        if written is not None and "credit_after" in written.data:
            rows.append(Row(tr("New credit on your key"), t.money(written.data["credit_after"])))
    rows += _card_text(entries)
    footer = [Row(style="rule"), Row(tr("Questions? {office}", office=site.utility_office)),
              Row(tr("Thank you."), style="center")]  # fmt: skip
    if outcome != "pending":
        return Document(tuple(rows + footer))
    safe = tr("Your money is safe. The credit is written to your key the next time you insert "
              "it, at any automat of ours. Keep this receipt.")  # fmt: skip
    rows += [Row(style="rule"), Row(safe)]
    later = _first(entries, Kind.PENDING_WRITTEN)
    if later is not None:
        rows.append(Row(tr("Written to the key on {date}", date=t.when(later.ts, site))))
    # the transaction id as a QR code: staff at any counter or automat find the credit by it
    return Document(tuple(rows), txid, (Row(txid, style="center"), *footer))


def _card_text(entries: list[Entry]) -> list[Row]:
    """The terminal's customer copy, as it sent it (lines cut to the paper), any card number
    in it masked once more (a journal of an older release, a terminal set up to print it)."""
    got = _first(reversed(entries), Kind.CARD_RECEIPT)
    blocks: dict[str, list[str]] = got.data.get("blocks", {}) if got else {}
    lines = blocks.get("customer") or next(iter(blocks.values()), [])
    if not lines:
        return []
    return [Row(style="rule"), *(Row(mask_card_numbers(line).rstrip()) for line in lines)]


# ---------------------------------------------------------------- technician reports


def report(site: Site, title: str, lines: Iterable[str], now: datetime, who: str) -> Document:
    """A technician's report (cash box emptied, end of day): the receipt's header, the title,
    the lines as they are (already laid out for the width)."""
    t = _Texts("de", site.currency)
    rows = header(site, t, now)
    rows += [Row(f"Technician / Techniker: {who}"), Row(style="rule"), Row(title, style="bold")]
    rows += [Row(line.rstrip()) for line in lines]
    rows.append(Row(style="rule"))
    return Document(tuple(rows))
