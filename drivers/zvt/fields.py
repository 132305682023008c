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
