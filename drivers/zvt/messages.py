"""The terminal's messages (PA00P015 ch. 3): status information (04 0F), intermediate
status (04 FF), print lines and text blocks (06 D1, 06 D3), end-of-day totals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.errors import FrameError
from drivers.zvt.codes import INTERMEDIATE_TEXTS, ResultCode
from drivers.zvt.fields import (
    ISO_CURRENCY,
    TEXT_ENCODING,
    Tlv,
    bcd,
    find_all,
    find_tlv,
    from_bcd,
    mask_card_numbers,
    pan_of,
    parse_tlv,
    read_bmps,
    text,
    tlv_length,
)

log = logging.getLogger(__name__)

TOTALS_GROUPS = ("girocard", "JCB", "Eurocard", "Amex", "Visa", "Diners", "other")


@dataclass(frozen=True)
class DayTotals:
    """BMP 60: receipt-no start and end (BCD 2 each), then per card group a count (binary 1)
    and a total (BCD 6, minor units)."""

    first_receipt: int
    last_receipt: int
    groups: tuple[tuple[str, int, int], ...]  # (group, count, total)

    @classmethod
    def parse(cls, data: bytes) -> DayTotals:
        if len(data) != 4 + 7 * len(TOTALS_GROUPS):
            raise FrameError(f"BMP 60 has {len(data)} bytes, expected {4 + 7 * 7}")
        groups = []
        for i, name in enumerate(TOTALS_GROUPS):
            at = 4 + 7 * i
            groups.append((name, data[at], from_bcd(data[at + 1 : at + 7])))
        return cls(from_bcd(data[0:2]), from_bcd(data[2:4]), tuple(groups))

    def encode(self) -> bytes:
        by_name = {g: (n, t) for g, n, t in self.groups}
        out = bcd(self.first_receipt, 2) + bcd(self.last_receipt, 2)
        for name in TOTALS_GROUPS:
            n, t = by_name.get(name, (0, 0))
            out += bytes((n,)) + bcd(t, 6)
        return out


@dataclass(frozen=True)
class StatusInformation:
    """04 0F status information, parsed."""

    result_code: int | None = None
    amount: int | None = None  # minor units
    currency: str | None = None
    trace_number: int | None = None
    original_trace: int | None = None
    receipt_number: int | None = None
    turnover_number: int | None = None
    terminal_id: str | None = None
    vu_number: str | None = None
    card_type: int | None = None
    card_name: str | None = None
    pan: str | None = None
    expiry: str | None = None  # YYMM
    date: str | None = None  # MMDD
    time: str | None = None  # hhmmss
    full_date: str | None = None  # YYMMDD (BMP AA)
    payment_type: int | None = None
    aid: str | None = None
    additional_text: str | None = None
    totals: DayTotals | None = None  # BMP 60 of an end-of-day
    tlv: tuple[Tlv, ...] = field(default_factory=tuple)
    problems: tuple[str, ...] = ()  # what could not be read (logged), see `read_bmps`

    @property
    def approved(self) -> bool:
        return self.result_code == ResultCode.OK

    def receipt_fields(self) -> dict[str, Any]:
        """What a receipt and the journal keep (the card number masked, `pan_of`)."""
        return {
            k: v
            for k, v in (
                ("card", self.card_name),
                ("pan", self.pan),
                ("receipt_no", self.receipt_number),
                ("trace", self.trace_number),
                ("terminal_id", self.terminal_id),
                ("turnover_no", self.turnover_number),
                ("payment_type", self.payment_type),
            )
            if v is not None
        }


def parse_status_information(data: bytes) -> StatusInformation:
    """04 0F, read so that nothing optional can cost an approved payment (`read_bmps`): the
    fields we need are taken when they are there and sound; a field we cannot read is
    logged and left out. The result code is taken only from a BMP 27 read soundly (sent
    once, or twice alike): approval (00) is never guessed."""
    read = read_bmps(data)
    b = read.fields
    problems = list(read.problems)

    def take(bmp: int, convert: Callable[[Any], Any]) -> Any:
        if bmp not in b:
            return None
        try:
            return convert(b[bmp])
        except (FrameError, ValueError, IndexError, UnicodeDecodeError) as err:
            problems.append(f"BMP {bmp:02X} skipped: {err}")
            return None

    tlv: tuple[Tlv, ...] = b.get(0x06, ())
    trace = take(0x0B, from_bcd)
    if trace == 0:
        long_trace = find_tlv(tlv, 0x1F2B)
        if long_trace is not None:
            trace = (
                from_bcd(long_trace.value)
                if long_trace.value.hex().isdigit()
                else int.from_bytes(long_trace.value, "big")
            )
    cur = take(0x49, from_bcd)
    info = StatusInformation(
        result_code=take(0x27, lambda v: v[0]),
        amount=take(0x04, from_bcd),
        currency=ISO_CURRENCY.get(cur, str(cur)) if cur is not None else None,
        trace_number=trace,
        original_trace=take(0x37, from_bcd),
        receipt_number=take(0x87, from_bcd),
        turnover_number=take(0x88, from_bcd),
        terminal_id=take(0x29, bytes.hex),
        vu_number=take(0x2A, lambda v: text(v).strip()),
        card_type=take(0x8A, lambda v: v[0]),
        card_name=take(0x8B, text),
        pan=take(0x22, pan_of),
        expiry=take(0x0E, bytes.hex),
        date=take(0x0D, _bcd_digits),
        time=take(0x0C, _bcd_digits),
        full_date=take(0xAA, _bcd_digits),
        payment_type=take(0x19, lambda v: v[0]),
        aid=take(0x3B, text),
        additional_text=take(0x3C, text),
        totals=take(0x60, DayTotals.parse),
        tlv=tlv,
        problems=tuple(problems),
    )
    for problem in problems:
        log.warning("status information (04 0F): %s", problem)
    return info


def _bcd_digits(value: bytes) -> str:
    """BCD digits as a string; FrameError if a nibble is not a digit."""
    digits = value.hex()
    if not digits.isdigit():
        raise FrameError(f"not BCD: {value.hex(' ')}")
    return digits


@dataclass(frozen=True)
class IntermediateStatus:
    code: int
    text: str
    timeout_minutes: int | None = None


def parse_intermediate_status(data: bytes) -> IntermediateStatus:
    """04 FF: ``<code> [<T4 minutes, BCD>] [06 TLV with 24/07 display text]``."""
    if not data:
        raise FrameError("intermediate status without a code")
    code = data[0]
    rest = data[1:]
    minutes = None
    if rest and rest[0] != 0x06:
        minutes = from_bcd(rest[:1])
        rest = rest[1:]
    display = ""
    if rest:
        if rest[0] != 0x06:
            raise FrameError(f"unexpected byte {rest[0]:02X} in intermediate status")
        n, pos = tlv_length(rest, 1)
        if pos + n != len(rest):
            raise FrameError("intermediate status TLV length does not match")
        lines = [text(t.value) for t in find_all(parse_tlv(rest[pos:]), 0x07)]
        display = "\n".join(lines)
    return IntermediateStatus(
        code, display or INTERMEDIATE_TEXTS.get(code, f"status {code:02X}"), minutes
    )


#: 06 D1 attribute FF: not a last line but line feeds, their count in the one byte after it
#: (PA00P015 3.5, table 16)
LINE_FEEDS = 0xFF


@dataclass(frozen=True)
class PrintLine:
    attribute: int
    text: str
    receipt_type: str | None = None  # from a TLV 1F07 some terminals put after the text
    feeds: int = 0  # attribute FF: this many empty lines

    @property
    def last(self) -> bool:
        """Attribute 0x80 | x (x != 0, and not FF, the line feeds): last line of the
        receipt."""
        return self.attribute & 0x80 != 0 and self.attribute not in (0x80, LINE_FEEDS)

    @property
    def lines(self) -> list[str]:
        """What this command adds to the receipt."""
        return [""] * self.feeds if self.attribute == LINE_FEEDS else [self.text]


def _trailing_tlv(data: bytes) -> tuple[bytes, tuple[Tlv, ...]]:
    """A print line's text and the TLV container some terminals append to it
    (``06 <len> 1F07 01 <receipt type>``): a container that ends the line exactly, parses
    as TLV and holds tag 1F07 is taken off; anything else stays text."""
    for at in range(len(data) - 3, -1, -1):
        if data[at] != 0x06:
            continue
        try:
            n, pos = tlv_length(data, at + 1)
            if pos + n != len(data):
                continue
            items = parse_tlv(data[pos:])
        except FrameError:
            continue
        if find_tlv(items, 0x1F07) is not None:
            return data[:at], items
    return data, ()


def parse_print_line(data: bytes) -> PrintLine:
    """06 D1: ``<attribute><text>``, with attribute FF ``<number of line feeds>``; a trailing
    TLV container with the receipt type (1F07) is read and not printed."""
    if not data:
        raise FrameError("print line without an attribute")
    attribute = data[0]
    if attribute == LINE_FEEDS:
        return PrintLine(attribute, "", feeds=data[1] if len(data) > 1 else 1)
    body, items = _trailing_tlv(data[1:])
    kind = find_tlv(items, 0x1F07)
    rtype = RECEIPT_TYPES.get(kind.value[0], "unknown") if kind and kind.value else None
    return PrintLine(
        attribute, mask_card_numbers(body.decode(TEXT_ENCODING, errors="replace")), rtype
    )


RECEIPT_TYPES = {1: "merchant", 2: "customer", 3: "admin"}


@dataclass(frozen=True)
class TextBlock:
    receipt_type: str
    lines: tuple[str, ...]


def parse_print_text_block(data: bytes) -> TextBlock:
    """06 D3: ``06 <TLV: 1F07 receipt type, 25 {09 attribute, 07 line ...}>``."""
    if not data or data[0] != 0x06:
        raise FrameError("print text block must start with a TLV container (06)")
    n, pos = tlv_length(data, 1)
    if pos + n != len(data):
        raise FrameError("print text block length does not match")
    items = parse_tlv(data[pos:])
    kind = find_tlv(items, 0x1F07)
    lines = tuple(mask_card_numbers(text(t.value)) for t in find_all(items, 0x07))
    rtype = (
        RECEIPT_TYPES.get(kind.value[0], "unknown")
        if kind is not None and kind.value
        else "unknown"
    )
    return TextBlock(rtype, lines)
