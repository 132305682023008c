"""ZVT codec, pure (no I/O): APDUs, serial framing, BMP/TLV fields and the terminal's messages.

References: PA00P015 (ZVT protocol, chapters on APDU, BMPs, TLV, result and intermediate codes)
and PA00P016 (serial transport: DLE STX ... DLE ETX, CRC, ACK/NAK).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from drivers.errors import FrameError

DLE, STX, ETX, ACK, NAK = 0x10, 0x02, 0x03, 0x06, 0x15
TEXT_ENCODING = "cp437"

ISO_CURRENCY = {978: "EUR", 756: "CHF"}
CURRENCY_ISO = {v: k for k, v in ISO_CURRENCY.items()}


class Cmd:
    """Command classes and instructions (2 bytes each)."""

    ACK = bytes((0x80, 0x00))  # positive completion of a command
    NEG = 0x84  # negative answer: 84 xx
    REGISTRATION = bytes((0x06, 0x00))
    AUTHORIZATION = bytes((0x06, 0x01))
    LOG_OFF = bytes((0x06, 0x02))
    COMPLETION = bytes((0x06, 0x0F))
    ABORT_TERMINAL = bytes((0x06, 0x1E))  # from the terminal: the command ended with an error
    REPEAT_RECEIPT = bytes((0x06, 0x20))
    REVERSAL = bytes((0x06, 0x30))
    END_OF_DAY = bytes((0x06, 0x50))
    DIAGNOSIS = bytes((0x06, 0x70))
    ABORT = bytes((0x06, 0xB0))  # from the ECR
    PRINT_LINE = bytes((0x06, 0xD1))
    PRINT_TEXT_BLOCK = bytes((0x06, 0xD3))
    STATUS_INFORMATION = bytes((0x04, 0x0F))
    INTERMEDIATE_STATUS = bytes((0x04, 0xFF))
    STATUS_ENQUIRY = bytes((0x05, 0x01))


class Answer(IntEnum):
    """Second byte of an `84 xx` answer to the terminal (issue of goods)."""

    OK = 0x00
    NOT_YET = 0x9C  # please wait: the terminal asks again in about 2 s
    PARTIAL = 0x9D
    FAILED = 0x66  # goods could not be delivered: the terminal reverses
    PRINTER_NOT_READY = 0xCC


@dataclass(frozen=True, slots=True)
class Apdu:
    command: bytes  # class and instruction
    data: bytes = b""

    def is_(self, command: bytes) -> bool:
        return self.command == command


# ---------------------------------------------------------------- APDU


def encode_apdu(command: bytes, data: bytes = b"") -> bytes:
    """``CLASS INSTR LEN data``; LEN is one byte up to 254, else ``FF lo hi``."""
    if len(command) != 2:
        raise FrameError(f"a command is 2 bytes, got {len(command)}")
    n = len(data)
    if n > 0xFFFF:
        raise FrameError(f"{n} data bytes; at most 65535")
    length = bytes((n,)) if n < 0xFF else bytes((0xFF, n & 0xFF, n >> 8))
    return bytes(command) + length + bytes(data)


def apdu_size(raw: bytes | bytearray) -> int | None:
    """The whole APDU's size from its header, or None if the header is not complete yet."""
    if len(raw) < 3:
        return None
    if raw[2] != 0xFF:
        return 3 + raw[2]
    if len(raw) < 5:
        return None
    return 5 + (raw[3] | raw[4] << 8)


def decode_apdu(raw: bytes) -> Apdu:
    """Exactly one APDU; FrameError if short or the length does not match."""
    raw = bytes(raw)
    size = apdu_size(raw)
    if size is None:
        raise FrameError(f"short APDU: {raw.hex(' ')}")
    if size != len(raw):
        raise FrameError(f"APDU length says {size} bytes, got {len(raw)}")
    head = 5 if raw[2] == 0xFF else 3
    return Apdu(raw[:2], raw[head:])


class ApduReassembler:
    """TCP: APDUs split over reads, and several in one read."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Apdu]:
        self._buf += data
        out = []
        while (size := apdu_size(self._buf)) is not None and len(self._buf) >= size:
            out.append(decode_apdu(bytes(self._buf[:size])))
            del self._buf[:size]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


# ---------------------------------------------------------------- serial framing (PA00P016)


def crc_kermit(data: bytes) -> int:
    """CRC-16/KERMIT: polynomial 0x1021 reflected (0x8408), initial 0, no final XOR."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def frame(apdu: bytes) -> bytes:
    """``DLE STX <APDU, DLE doubled> DLE ETX CRC-lo CRC-hi``; CRC over the APDU and ETX."""
    crc = crc_kermit(bytes(apdu) + bytes((ETX,)))
    stuffed = bytes(apdu).replace(bytes((DLE,)), bytes((DLE, DLE)))
    return bytes((DLE, STX)) + stuffed + bytes((DLE, ETX, crc & 0xFF, crc >> 8))


def unframe(raw: bytes) -> bytes:
    """The APDU of one serial frame; FrameError on a bad shape, stuffing or CRC."""
    raw = bytes(raw)
    if len(raw) < 6 or raw[:2] != bytes((DLE, STX)):
        raise FrameError("a serial frame starts with DLE STX")
    dec = SerialDecoder()
    out = dec.feed(raw)
    if out and isinstance(out[0], FrameError):
        raise out[0]
    if len(out) != 1 or not isinstance(out[0], bytes) or dec.busy:
        raise FrameError(f"not exactly one frame: {raw.hex(' ')}")
    return out[0]


class SerialDecoder:
    """Incremental receiver for the serial line: yields APDU bytes, or the ints ACK/NAK.

    A frame with a bad CRC or stuffing is yielded as a FrameError in its place (the transport
    answers NAK) and decoding goes on, so an ACK read in the same chunk before a damaged frame
    is not lost; bytes outside a frame that are not ACK or NAK are skipped.
    """

    def __init__(self) -> None:
        self._state = "idle"
        self._buf = bytearray()
        self._crc = bytearray()
        self.skipped = 0

    @property
    def busy(self) -> bool:
        return self._state != "idle"

    def reset(self) -> None:
        self._state = "idle"
        self._buf.clear()
        self._crc.clear()

    def feed(self, data: bytes) -> list[bytes | int | FrameError]:
        out: list[bytes | int | FrameError] = []
        for b in data:
            st = self._state
            if st == "idle":
                if b == DLE:
                    self._state = "start"
                elif b in (ACK, NAK):
                    out.append(b)
                else:
                    self.skipped += 1
            elif st == "start":
                if b == STX:
                    self._state, self._buf = "data", bytearray()
                else:
                    self._state = "idle"
                    self.skipped += 2
            elif st == "data":
                if b == DLE:
                    self._state = "dle"
                else:
                    self._buf.append(b)
            elif st == "dle":
                if b == DLE:
                    self._buf.append(DLE)
                    self._state = "data"
                elif b == ETX:
                    self._state, self._crc = "crc", bytearray()
                else:
                    self.reset()
                    out.append(FrameError(f"DLE followed by {b:02X} inside a frame"))
            elif st == "crc":
                self._crc.append(b)
                if len(self._crc) == 2:
                    apdu = bytes(self._buf)
                    got = self._crc[0] | self._crc[1] << 8
                    self.reset()
                    want = crc_kermit(apdu + bytes((ETX,)))
                    if got != want:
                        out.append(FrameError(f"CRC {got:04X} does not match {want:04X}"))
                    else:
                        out.append(apdu)
        return out


# ---------------------------------------------------------------- BCD and texts


def bcd(value: int, nbytes: int) -> bytes:
    digits = f"{value:0{nbytes * 2}d}"
    if value < 0 or len(digits) > nbytes * 2:
        raise FrameError(f"{value} does not fit in {nbytes} BCD bytes")
    return bytes.fromhex(digits)


def from_bcd(data: bytes) -> int:
    text = data.hex()
    if not text.isdigit():
        raise FrameError(f"not BCD: {data.hex(' ')}")
    return int(text)


def text(data: bytes, encoding: str = TEXT_ENCODING) -> str:
    return data.split(b"\x00", 1)[0].decode(encoding, errors="replace")


def _llvar(data: bytes, pos: int, digits: int) -> tuple[int, int]:
    """Length of an LLVAR (2) or LLLVAR (3): each byte is F0 + one decimal digit."""
    head = data[pos : pos + digits]
    if len(head) != digits or any(b >> 4 != 0xF or (b & 0xF) > 9 for b in head):
        raise FrameError(f"bad {'L' * digits}VAR length at {pos}: {head.hex(' ')}")
    n = 0
    for b in head:
        n = n * 10 + (b & 0xF)
    return n, pos + digits


def llvar(value: bytes, digits: int = 2) -> bytes:
    n = f"{len(value):0{digits}d}"
    if len(n) > digits:
        raise FrameError(f"{len(value)} bytes do not fit an {'L' * digits}VAR")
    return bytes(0xF0 | int(c) for c in n) + value


# ---------------------------------------------------------------- TLV (BER-like, PA00P015 ch. 9)


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes = b""
    children: tuple[Tlv, ...] = ()

    def find(self, tag: int) -> Tlv | None:
        return find_tlv(self.children, tag)


def find_tlv(items: tuple[Tlv, ...] | list[Tlv], tag: int) -> Tlv | None:
    """Depth-first search for a tag."""
    for t in items:
        if t.tag == tag:
            return t
        hit = find_tlv(t.children, tag)
        if hit is not None:
            return hit
    return None


def find_all(items: tuple[Tlv, ...] | list[Tlv], tag: int) -> list[Tlv]:
    out: list[Tlv] = []
    for t in items:
        if t.tag == tag:
            out.append(t)
        out += find_all(t.children, tag)
    return out


def tlv_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise FrameError("TLV length missing")
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    if b == 0x81 and pos + 1 < len(data):
        return data[pos + 1], pos + 2
    if b == 0x82 and pos + 2 < len(data):
        return data[pos + 1] << 8 | data[pos + 2], pos + 3
    raise FrameError(f"bad TLV length byte {b:02X} at {pos}")


def encode_tlv_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return bytes((0x81, n))
    return bytes((0x82, n >> 8, n & 0xFF))


def parse_tlv(data: bytes) -> tuple[Tlv, ...]:
    """A sequence of TLV objects; constructed tags (bit 0x20 of the first byte) are nested."""
    out = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        tag = first
        pos += 1
        if first & 0x1F == 0x1F:  # multi-byte tag
            while True:
                if pos >= len(data):
                    raise FrameError("TLV tag runs past the end")
                tag = tag << 8 | data[pos]
                pos += 1
                if not data[pos - 1] & 0x80:
                    break
        n, pos = tlv_length(data, pos)
        if pos + n > len(data):
            raise FrameError(f"TLV {tag:X} says {n} bytes, {len(data) - pos} left")
        value = data[pos : pos + n]
        pos += n
        children = parse_tlv(value) if first & 0x20 else ()
        out.append(Tlv(tag, value, children))
    return tuple(out)


def encode_tlv(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")
    return tag_bytes + encode_tlv_length(len(value)) + value


# ---------------------------------------------------------------- BMPs (PA00P015 ch. 8)

_FIXED = {
    0x01: 1,
    0x02: 1,
    0x03: 1,
    0x04: 6,
    0x05: 1,
    0x0B: 3,
    0x0C: 3,
    0x0D: 2,
    0x0E: 2,
    0x17: 2,
    0x19: 1,
    0x27: 1,
    0x29: 4,
    0x2A: 15,
    0x37: 3,
    0x3A: 2,
    0x3B: 8,
    0x3D: 3,
    0x49: 2,
    0x87: 2,
    0x88: 3,
    0x8A: 1,
    0x8C: 1,
    0xA0: 1,
    0xBA: 5,
    0xD0: 1,
    0xD1: 1,
}
_LLVAR = {0x22, 0x23, 0x2D, 0x8B, 0xA7}
_LLLVAR = {0x24, 0x2E, 0x3C, 0x60, 0x92, 0x9A, 0xAF}


def parse_bmps(data: bytes) -> dict[int, Any]:
    """BMP id -> raw bytes (fixed or LL(L)VAR) or parsed TLV (BMP 06). Unknown BMPs raise."""
    out: dict[int, Any] = {}
    pos = 0
    while pos < len(data):
        bmp = data[pos]
        pos += 1
        if bmp == 0x06:
            n, pos = tlv_length(data, pos)
            if pos + n > len(data):
                raise FrameError("TLV container runs past the end")
            out[0x06] = parse_tlv(data[pos : pos + n])
            pos += n
            continue
        if bmp in _FIXED:
            n = _FIXED[bmp]
        elif bmp in _LLVAR:
            n, pos = _llvar(data, pos, 2)
        elif bmp in _LLLVAR:
            n, pos = _llvar(data, pos, 3)
        else:
            raise FrameError(f"unknown BMP {bmp:02X} at {pos - 1}")
        if pos + n > len(data):
            raise FrameError(f"BMP {bmp:02X} needs {n} bytes, {len(data) - pos} left")
        out[bmp] = data[pos : pos + n]
        pos += n
    return out


def _pan(data: bytes) -> str:
    """BCD PAN: digits as they are, E for a masked digit shown as '*', F padding dropped;
    then masked on our side too (`mask_pan`): a terminal set up to send it in clear must not
    put a card number into the journal, the receipts or the logs."""
    return mask_pan("".join({"e": "*", "f": ""}.get(c, c) for c in data.hex()))


def mask_pan(pan: str) -> str:
    """A card number as PCI DSS lets it be shown: the first six and the last four digits at
    most, the rest '*' (a short number keeps only its last four)."""
    keep_head = 6 if len(pan) > 10 else 0
    return pan[:keep_head] + "*" * max(0, len(pan) - keep_head - 4) + pan[-4:]


def luhn_valid(number: str) -> bool:
    """The check digit every card number carries (ISO/IEC 7812)."""
    total = 0
    for i, c in enumerate(reversed(number)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


#: a card number in a receipt line: 13 to 19 digits, maybe grouped by spaces or dashes
_CARD_NUMBER = re.compile(r"(?<![\d*])(?:[\d*][ -]?){12,18}[\d*](?![\d*])")


def mask_card_numbers(line: str) -> str:
    """A receipt line with any card number in it masked (`mask_pan`), its grouping kept."""

    def masked(m: re.Match[str]) -> str:
        digits = [c for c in m.group() if c not in " -"]
        if sum(c.isdigit() for c in digits) <= 10:
            return m.group()  # masked already (or too short to be one)
        if "*" not in digits and not luhn_valid("".join(digits)):
            return m.group()  # a long number, but no card's (a merchant or batch number)
        hidden = iter(mask_pan("".join(digits)))
        return "".join(c if c in " -" else next(hidden) for c in m.group())

    return _CARD_NUMBER.sub(masked, line)


#: the card groups of BMP 60 (individual totals of an end-of-day), in their order
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
        return self.result_code == 0

    def receipt_fields(self) -> dict[str, Any]:
        """What a receipt and the journal keep (the card number masked, `_pan`)."""
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
        pan=_pan(b[0x22]) if 0x22 in b else None,
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


# ---------------------------------------------------------------- code tables (PA00P015 ch. 10)

RESULT_CODES: dict[int, str] = {
    0x00: "no error",
    0x05: "declined by the card issuer",
    0x64: "card not readable",
    0x65: "card data not present",
    0x66: "processing error",
    0x67: "function not permitted for ec/Maestro cards",
    0x68: "function not permitted for credit and tank cards",
    0x6A: "turnover file full",
    0x6B: "function deactivated (terminal not registered)",
    0x6C: "abort via timeout or abort key",
    0x6E: "card in blocked list",
    0x6F: "wrong currency",
    0x71: "credit not sufficient (chip card)",
    0x72: "chip error",
    0x73: "card data incorrect",
    0x74: "DUKPT engine exhausted",
    0x75: "text not authentic",
    0x76: "PAN not in white list",
    0x77: "end-of-day batch not possible",
    0x78: "card expired",
    0x79: "card not yet valid",
    0x7A: "card unknown",
    0x7B: "fallback to magnetic stripe for girocard not possible",
    0x7C: "fallback to magnetic stripe not possible",
    0x7D: "communication error",
    0x7E: "fallback to magnetic stripe not possible, debit advice possible",
    0x83: "function not possible",
    0x85: "key missing",
    0x89: "PIN pad defective",
    0x9A: "ZVT protocol error",
    0x9B: "error from dial-up/communication fault",
    0x9C: "please wait",
    0xA0: "receiver not ready",
    0xA1: "remote station does not respond",
    0xA3: "no connection",
    0xA4: "submission of Geldkarte not possible",
    0xA5: "function not allowed due to PCI-DSS/P2PE rules",
    0xB1: "memory full",
    0xB2: "merchant journal full",
    0xB4: "already reversed",
    0xB5: "reversal not possible",
    0xB7: "pre-authorisation incorrect (amount too high) or amount wrong",
    0xB8: "error pre-authorisation",
    0xBF: "voltage supply too low",
    0xC0: "card locking mechanism defective",
    0xC1: "merchant card locked",
    0xC2: "diagnosis required",
    0xC3: "maximum amount exceeded",
    0xC4: "card profile invalid",
    0xC5: "payment method not supported",
    0xC6: "currency not applicable",
    0xC8: "amount too small",
    0xC9: "max. transaction amount too small",
    0xCB: "function only allowed in EURO",
    0xCC: "printer not ready",
    0xCD: "cashback not possible",
    0xD2: "function not permitted for service cards",
    0xDC: "card inserted",
    0xDD: "error during card-eject",
    0xDE: "error during card insertion",
    0xE0: "remote maintenance activated",
    0xE2: "card-reader does not answer / defective",
    0xE3: "shutter closed",
    0xE4: "terminal activation required",
    0xE7: "min. one goods-group not found",
    0xE8: "no goods-groups table loaded",
    0xE9: "restriction code not permitted",
    0xEA: "card code not permitted",
    0xEB: "function not executable (PIN algorithm unknown)",
    0xEC: "PIN processing not possible",
    0xED: "PIN pad defective",
    0xF0: "open end-of-day batch present",
    0xF1: "ec-cash/Maestro offline error",
    0xF5: "OPT error",
    0xF6: "OPT data not available",
    0xFA: "error transmitting offline transactions",
    0xFB: "turnover data set defective",
    0xFC: "necessary device not present or defective",
    0xFD: "baud rate not supported",
    0xFE: "register unknown",
    0xFF: "system error",
}


def result_text(code: int) -> str:
    if code in RESULT_CODES:
        return RESULT_CODES[code]
    if 0x01 <= code <= 0x63:
        return f"declined by the host ({code:02d})"
    return f"result code {code:02X}"


INTERMEDIATE_TEXTS: dict[int, str] = {
    0x00: "waiting for amount confirmation",
    0x01: "please watch PIN pad",
    0x02: "please watch PIN pad",
    0x03: "not accepted",
    0x04: "waiting for response from FEP",
    0x05: "sending auto-reversal",
    0x06: "sending post-bookings",
    0x07: "card not admitted",
    0x08: "card unknown / undefined",
    0x09: "expired card",
    0x0A: "insert card",
    0x0B: "please remove card",
    0x0C: "card not readable",
    0x0D: "processing error",
    0x0E: "please wait",
    0x0F: "terminal running automatic end-of-day",
    0x10: "invalid card",
    0x11: "balance display",
    0x12: "system malfunction",
    0x13: "payment not possible",
    0x14: "credit not sufficient",
    0x15: "incorrect PIN",
    0x16: "limit not sufficient",
    0x17: "please wait",
    0x18: "PIN try limit exceeded",
    0x19: "card data incorrect",
    0x1A: "service mode",
    0x1B: "approved, please fill up",
    0x1C: "approved, please take goods",
    0x1D: "declined",
    0x68: "card insertion detected",
    0xC8: "waiting for cashier",
    0xF1: "offline",
    0xF2: "online",
    0xF3: "offline transaction",
}

TERMINAL_STATUS: dict[int, str] = {
    0x00: "ready",
    0x51: "initialisation required",
    0x62: "date/time wrong",
    0x9C: "please wait",
    0x9D: "partial issue",
    0xB1: "memory full",
    0xB2: "journal full",
    0xBF: "low voltage",
    0xC0: "card lock defect",
    0xC1: "merchant card locked",
    0xC2: "diagnosis required",
    0xC4: "card profiles invalid",
    0xCC: "printer not ready",
    0xDC: "card inserted",
    0xDF: "out of order",
    0xE0: "remote maintenance",
    0xE1: "card not fully removed",
    0xE2: "card reader defect",
    0xE3: "shutter closed",
    0xE4: "activation required",
    0xF0: "reconciliation (end-of-day) required",
    0xF6: "OPT data missing",
}

CARD_TYPES: dict[int, str] = {
    0x05: "girocard",
    0x06: "Mastercard",
    0x0A: "Visa",
    0x0D: "V PAY",
    0x2E: "Maestro",
    0x08: "American Express",
    0x0C: "Diners",
    0x0E: "JCB",
}
