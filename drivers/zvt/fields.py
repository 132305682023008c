"""ZVT field encodings (PA00P015 ch. 8 and 9): BCD, texts, LLVAR, TLV and the BMPs of a
message; card numbers masked as they are read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from drivers.errors import FrameError

TEXT_ENCODING = "cp437"

ISO_CURRENCY = {978: "EUR", 756: "CHF"}
CURRENCY_ISO = {v: k for k, v in ISO_CURRENCY.items()}


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


# ---------------------------------------------------------------- BMPs (PA00P015 ch. 13)

#: Every BMP of PA00P015 13.08 chapter 13 "Summary of utilised BMPs" with its length format:
#: a fixed number of bytes, or an LLVAR / LLLVAR (a length of two or three bytes F0+digit).
#: Besides the summary: 4C (blocked goods groups, LLVAR: chapter 3.1.1, status information)
#: and 92 (ec-Cash chip offline data, LLLVAR: named in the history of revision 11 and read so
#: by ecrterm). Cross-checked with Portalum.Zvt (Parsers/BmpParser.cs) and ecrterm
#: (ecrterm/packets/bitmaps.py): both read AA as 3 bytes BCD and D1 as an LLVAR, as the
#: specification says. 06 is the TLV container (its length is a TLV length, chapter 9).
_FIXED = {
    0x01: 1,  # time-out
    0x02: 1,  # max. status infos
    0x03: 1,  # service byte
    0x04: 6,  # amount, BCD
    0x05: 1,  # pump number
    0x0B: 3,  # trace number, BCD
    0x0C: 3,  # time HHMMSS, BCD
    0x0D: 2,  # date MMDD, BCD
    0x0E: 2,  # expiry YYMM, BCD
    0x17: 2,  # card sequence number, BCD
    0x19: 1,  # status byte / payment type / card type
    0x27: 1,  # result code
    0x29: 4,  # terminal id, BCD
    0x2A: 15,  # VU number, ASCII
    0x37: 3,  # original trace number, BCD
    0x3A: 2,  # CVV/CVC, BCD
    0x3B: 8,  # AID authorisation attribute
    0x3D: 3,  # password, BCD
    0x49: 2,  # currency code, BCD
    0x70: 4,  # display image: request id
    0x71: 4,  # display image: size
    0x72: 1,  # display image: MIME type
    0x73: 1,  # display image: encoding
    0x74: 1,  # display image: number of chunks
    0x75: 1,  # display image: chunk index
    0x87: 2,  # receipt number, BCD
    0x88: 3,  # turnover record number, BCD
    0x8A: 1,  # card type (ZVT)
    0x8C: 1,  # card type id of the network operator
    0xA0: 1,  # result code AS
    0xAA: 3,  # date YYMMDD, BCD
    0xBA: 5,  # AID parameter
    0xD0: 1,  # algorithm key
    0xD2: 1,  # card output direction
    0xD3: 1,  # DUKPT key identifier
    0xE0: 1,  # min. input length
    0xE9: 1,  # max. input length
    0xEA: 1,  # echo the input
    0xEB: 8,  # MAC over text 1 and text 2
    0xF0: 1,  # display duration
    0xF9: 1,  # number of beeps
    0xFA: 1,  # card reader activation
    0xFB: 1,  # confirmation with <OK>
    0xFC: 1,  # dialog control
    0xFD: 1,  # display device
}
_LLVAR = {
    0x22,  # PAN / EF_ID
    0x23,  # track 2
    0x2D,  # track 1
    0x4C,  # blocked goods groups
    0x8B,  # card name
    0xA7,  # chip data, EF_ID
    0xD1,  # card offset / PIN data
    *range(0xE1, 0xE9),  # text 2, lines 1-8
    *range(0xF1, 0xF9),  # text 1, lines 1-8
}
_LLLVAR = {
    0x24,  # track 3
    0x2E,  # synchronous chip data
    0x3C,  # additional data / text
    0x60,  # individual totals
    0x92,  # ec-Cash chip offline data
    0x9A,  # Geldkarte records
    0xAF,  # EF_Info
}
TLV_BMP = 0x06
#: every BMP we know, with its length format: a byte count, "LL", "LLL" or "TLV"
BMP_FORMATS: dict[int, int | str] = {
    **_FIXED,
    **{b: "LL" for b in _LLVAR},
    **{b: "LLL" for b in _LLLVAR},
    TLV_BMP: "TLV",
}


def encode_bmp(bmp: int, value: bytes) -> bytes:
    """One BMP as it goes on the wire: its id, its length as its format wants, its value.
    A value of the wrong size for a fixed BMP, or an unknown BMP, is refused."""
    fmt = BMP_FORMATS.get(bmp)
    if fmt is None:
        raise FrameError(f"unknown BMP {bmp:02X}")
    if fmt == "TLV":
        return bytes((bmp,)) + encode_tlv_length(len(value)) + value
    if fmt == "LL":
        return bytes((bmp,)) + llvar(value, 2)
    if fmt == "LLL":
        return bytes((bmp,)) + llvar(value, 3)
    if len(value) != fmt:
        raise FrameError(f"BMP {bmp:02X} is {fmt} bytes, got {len(value)}")
    return bytes((bmp,)) + value


def _one_bmp(data: bytes, pos: int) -> tuple[int, int, int]:
    """(bmp, start of its value, end of its value) of the BMP at `pos`; FrameError when its
    length cannot be known (an unknown BMP, a bad length) or it runs past the end."""
    bmp = data[pos]
    pos += 1
    fmt = BMP_FORMATS.get(bmp)
    if fmt is None:
        raise FrameError(f"unknown BMP {bmp:02X} at {pos - 1}")
    try:
        if fmt == "TLV":
            n, pos = tlv_length(data, pos)
        elif fmt == "LL":
            n, pos = _llvar(data, pos, 2)
        elif fmt == "LLL":
            n, pos = _llvar(data, pos, 3)
        else:
            assert isinstance(fmt, int)
            n = fmt
    except FrameError as err:
        raise FrameError(f"BMP {bmp:02X}: {err}") from err
    if pos + n > len(data):
        raise FrameError(f"BMP {bmp:02X} needs {n} bytes, {len(data) - pos} left")
    return bmp, pos, pos + n


def parse_bmps(data: bytes) -> dict[int, Any]:
    """BMP id -> raw bytes (fixed or LL(L)VAR) or parsed TLV (BMP 06), strictly: anything
    unknown or malformed raises (for what the ECR sends, where a terminal answers 84 83)."""
    out: dict[int, Any] = {}
    pos = 0
    while pos < len(data):
        bmp, start, pos = _one_bmp(data, pos)
        out[bmp] = parse_tlv(data[start:pos]) if bmp == TLV_BMP else data[start:pos]
    return out


def split_bmps(data: bytes) -> list[tuple[int, bytes]]:
    """Each BMP of `data` with its bytes as sent (id, length, value), strictly."""
    out, pos = [], 0
    while pos < len(data):
        bmp, _, end = _one_bmp(data, pos)
        out.append((bmp, data[pos:end]))
        pos = end
    return out


@dataclass
class BmpRead:
    """What `read_bmps` could read of a terminal's message, and what it could not."""

    fields: dict[int, Any]
    problems: list[str]
    conflicts: set[int]  # BMPs sent twice with different values: neither is taken
    rest: int = 0  # bytes left unread after a BMP whose length could not be known


def read_bmps(data: bytes) -> BmpRead:
    """A terminal's BMPs, tolerantly, so that an optional field we cannot read never costs
    the fields we need: a BMP whose length cannot be known (unknown, a bad LL(L)VAR length,
    running past the end) ends the reading, and what was read before it is kept; a TLV
    container whose inside is malformed is skipped (its length is known); a BMP that comes
    twice with different values is taken from neither. Every such thing is a problem."""
    out = BmpRead({}, [], set())
    pos = 0
    while pos < len(data):
        try:
            bmp, start, end = _one_bmp(data, pos)
        except FrameError as err:
            out.problems.append(f"{err}; the last {len(data) - pos} bytes not read")
            out.rest = len(data) - pos
            break
        pos = end
        value: Any = data[start:end]
        if bmp == TLV_BMP:
            try:
                value = parse_tlv(value)
            except FrameError as err:
                out.problems.append(f"TLV container skipped: {err}")
                continue
        if bmp in out.fields and out.fields[bmp] != value:
            out.problems.append(f"BMP {bmp:02X} sent twice with different values")
            out.conflicts.add(bmp)
        out.fields.setdefault(bmp, value)
    for bmp in out.conflicts:
        out.fields.pop(bmp, None)
    return out


def bmps_end(data: bytes, pos: int = 0) -> int | None:
    """Where a run of well-formed, known BMPs from `pos` ends exactly at the end of `data`
    (len(data)), or None when it does not (an unknown BMP, a bad length, a BMP cut off)."""
    while pos < len(data):
        try:
            _, _, pos = _one_bmp(data, pos)
        except FrameError:
            return None
    return pos


def pan_of(data: bytes) -> str:
    """BCD PAN: digits as they are, E for a masked digit shown as '*', F padding dropped;
    then masked on our side too (`mask_pan`): a terminal set up to send it in clear must not
    put a card number into the journal, the receipts or the logs."""
    return mask_pan("".join({"e": "*", "f": ""}.get(c, c) for c in data.hex()))


def mask_pan(pan: str) -> str:
    """A card number as a receipt, the journal and the logs show it: the last four digits at
    most, the rest '*' (stricter than PCI DSS's first six and last four: the customer knows
    their card by its end)."""
    return "*" * max(0, len(pan) - 4) + pan[-4:]


def luhn_valid(number: str) -> bool:
    """The check digit every card number carries (ISO/IEC 7812)."""
    total = 0
    for i, c in enumerate(reversed(number)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


#: what may stand between a card number's digit groups in a receipt line: spaces or tabs (a
#: few), a dash, a dot or a slash
_GROUP_GAP = r"(?:[ \t]{1,3}|[-./])"
#: a card number in a receipt line: 12 to 19 digits (or '*' for digits masked already), maybe
#: grouped
_CARD_NUMBER = re.compile(rf"(?<![\d*])(?:[\d*]{_GROUP_GAP}?){{11,18}}[\d*](?![\d*])")


def mask_card_numbers(line: str) -> str:
    """A receipt line with any card number in it masked (`mask_pan`: the last four digits at
    most), its grouping kept. A run of 12 to 19 digits is a card number when it carries the
    check digit (or was masked in part already: a terminal's first six and last four); one
    that does not is left (a merchant or batch number)."""

    def masked(m: re.Match[str]) -> str:
        chars = [c for c in m.group() if c.isdigit() or c == "*"]
        if "*" not in chars and not luhn_valid("".join(chars)):
            return m.group()  # a long number, but no card's
        hidden = iter(mask_pan("".join(chars)))
        return "".join(next(hidden) if c.isdigit() or c == "*" else c for c in m.group())

    return _CARD_NUMBER.sub(masked, line)


#: the card groups of BMP 60 (individual totals of an end-of-day), in their order
