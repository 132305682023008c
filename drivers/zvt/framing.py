"""ZVT serial framing (PA00P016): DLE STX ... DLE ETX with DLE doubling, CRC-16/KERMIT,
ACK/NAK; pure, no I/O."""

from __future__ import annotations

from drivers.errors import FrameError

DLE, STX, ETX, ACK, NAK = 0x10, 0x02, 0x03, 0x06, 0x15


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
