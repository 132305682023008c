"""eSSP framing (ITL Smiley Secure Protocol), pure: no I/O.

A frame is `STX SEQ|ADDR LEN DATA CRC_lo CRC_hi`: STX is 0x7F, the sequence bit is bit 7 of
the second byte and the address its low seven bits, LEN counts DATA, and the CRC-16 (poly
0x8005, seed 0xFFFF, most significant bit first, not reflected) covers SEQ|ADDR, LEN and DATA.
Every 0x7F after the STX (the CRC's bytes too) is sent twice, so that a lone 0x7F always
starts a frame. The CRC is taken before the stuffing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from drivers.errors import FrameError

STX = 0x7F
SEQ_BIT = 0x80
VALIDATOR = 0x00  # the note validator's address (a SMART Hopper is 0x10)


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16 with polynomial 0x8005, seed 0xFFFF, MSB first (CRC-16/CMS: check 0xAEE7)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x8005 if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


@dataclass(frozen=True)
class Frame:
    seq: int  # 0 or 1
    address: int
    data: bytes


def encode(seq: int, address: int, data: bytes) -> bytes:
    """The bytes on the wire for one frame, stuffed."""
    if seq not in (0, 1) or not 0 <= address < 0x80:
        raise ValueError(f"sequence bit {seq} or address {address} out of range")
    if len(data) > 255:
        raise ValueError(f"{len(data)} data bytes: a frame carries at most 255")
    body = bytes((seq << 7 | address, len(data))) + data
    crc = crc16(body)
    body += bytes((crc & 0xFF, crc >> 8))
    return bytes((STX,)) + body.replace(b"\x7f", b"\x7f\x7f")


def decode(raw: bytes) -> Frame:
    """One whole frame, stuffed as on the wire; FrameError (a ValueError) if it is not one."""
    frames = list(_frames(raw, strict=True))
    if len(frames) != 1:
        raise FrameError(f"{len(frames)} frames in {raw.hex(' ')}")
    return frames[0]


def _frames(raw: bytes, *, strict: bool) -> Iterator[Frame]:
    d = Decoder(strict=strict)
    yield from d.feed(raw)
    if strict and d.pending():
        raise FrameError(f"incomplete frame: {raw.hex(' ')}")


class Decoder:
    """Frames from bytes arriving in any fragments: it finds the next STX, unstuffs, and checks
    the length and the CRC. Garbage before an STX is dropped; a frame whose CRC fails is
    dropped and the search goes on from the byte after its STX (`strict`: raise instead)."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._buf = bytearray()  # raw bytes not yet consumed, stuffed
        self.dropped = 0  # bytes thrown away while resynchronising

    def pending(self) -> bool:
        return bool(self._buf)

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buf += chunk
        out: list[Frame] = []
        while True:
            start = self._find_stx()
            if start < 0:
                self._drop(len(self._buf))
                return out
            self._drop(start)
            result = self._one()
            if result is None:  # not all of it yet
                return out
            frame, used = result
            if frame is None:  # bad CRC or stuffing: resynchronise after this STX
                if self.strict:
                    raise FrameError(f"bad frame: {bytes(self._buf[:used]).hex(' ')}")
                self._drop(1)
                continue
            del self._buf[:used]
            out.append(frame)

    def _drop(self, n: int) -> None:
        if n:
            if self.strict and any(b != STX for b in self._buf[:n]):
                raise FrameError(f"garbage before the frame: {bytes(self._buf[:n]).hex(' ')}")
            self.dropped += n
            del self._buf[:n]

    def _find_stx(self) -> int:
        """The first lone 0x7F (a doubled one is data of a frame we lost the start of)."""
        i = 0
        buf = self._buf
        while (i := buf.find(STX, i)) >= 0:
            if i + 1 < len(buf) and buf[i + 1] == STX:
                i += 2
                continue
            if i + 1 == len(buf):  # cannot tell yet whether it is doubled
                return i
            return i
        return -1

    def _one(self) -> tuple[Frame | None, int] | None:
        """Unstuff from the STX at 0: (frame or None if bad, raw bytes used), or None when
        more bytes are needed."""
        buf = self._buf
        body = bytearray()
        i = 1
        need = 2  # SEQ|ADDR and LEN first
        while len(body) < need:
            if i >= len(buf):
                return None
            b = buf[i]
            if b == STX:
                if i + 1 >= len(buf):
                    return None
                if buf[i + 1] != STX:  # a lone STX inside a frame: this one is broken
                    return (None, i)
                i += 1
            body.append(b)
            i += 1
            if len(body) == 2:
                need = 2 + body[1] + 2
        crc = crc16(bytes(body[:-2]))
        if body[-2] | body[-1] << 8 != crc:
            return (None, i)
        return (Frame(body[0] >> 7, body[0] & 0x7F, bytes(body[2:-2])), i)
