"""The terminal's messages (PA00P015 ch. 3): status information (04 0F), intermediate
status (04 FF), print lines and text blocks (06 D1, 06 D3), end-of-day totals."""

from __future__ import annotations

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
    parse_bmps,
    parse_tlv,
    text,
    tlv_length,
)

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
    payment_type: int | None = None
    aid: str | None = None
    additional_text: str | None = None
    totals: DayTotals | None = None  # BMP 60 of an end-of-day
    tlv: tuple[Tlv, ...] = field(default_factory=tuple)

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
    b = parse_bmps(data)
    tlv: tuple[Tlv, ...] = b.get(0x06, ())
    trace = from_bcd(b[0x0B]) if 0x0B in b else None
    if trace == 0:
        long_trace = find_tlv(tlv, 0x1F2B)
        if long_trace is not None:
            trace = (
                from_bcd(long_trace.value)
                if long_trace.value.hex().isdigit()
                else int.from_bytes(long_trace.value, "big")
            )
    cur = from_bcd(b[0x49]) if 0x49 in b else None
    return StatusInformation(
        result_code=b[0x27][0] if 0x27 in b else None,
        amount=from_bcd(b[0x04]) if 0x04 in b else None,
        currency=ISO_CURRENCY.get(cur, str(cur)) if cur is not None else None,
        trace_number=trace,
        original_trace=from_bcd(b[0x37]) if 0x37 in b else None,
        receipt_number=from_bcd(b[0x87]) if 0x87 in b else None,
        turnover_number=from_bcd(b[0x88]) if 0x88 in b else None,
        terminal_id=b[0x29].hex() if 0x29 in b else None,
        vu_number=text(b[0x2A]).strip() if 0x2A in b else None,
        card_type=b[0x8A][0] if 0x8A in b else None,
        card_name=text(b[0x8B]) if 0x8B in b else None,
        pan=pan_of(b[0x22]) if 0x22 in b else None,
        expiry=b[0x0E].hex() if 0x0E in b else None,
        date=b[0x0D].hex() if 0x0D in b else None,
        time=b[0x0C].hex() if 0x0C in b else None,
        payment_type=b[0x19][0] if 0x19 in b else None,
        aid=text(b[0x3B]) if 0x3B in b else None,
        additional_text=text(b[0x3C]) if 0x3C in b else None,
        totals=DayTotals.parse(b[0x60]) if 0x60 in b else None,
        tlv=tlv,
    )


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


@dataclass(frozen=True)
class PrintLine:
    attribute: int
    text: str

    @property
    def last(self) -> bool:
        """Attribute 0x80 | x (x != 0): last line of the receipt."""
        return self.attribute & 0x80 != 0 and self.attribute != 0x80


def parse_print_line(data: bytes) -> PrintLine:
    """06 D1: ``<attribute><text>``."""
    if not data:
        raise FrameError("print line without an attribute")
    return PrintLine(data[0], mask_card_numbers(data[1:].decode(TEXT_ENCODING, errors="replace")))


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
