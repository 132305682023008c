"""ZVT APDUs (PA00P015 ch. 2): command classes and instructions, the length rule
(one byte, or FF and two bytes little-endian), and reassembly from a byte stream."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from drivers.errors import FrameError
from drivers.zvt.fields import BMP_FORMATS, bmps_end


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


#: The first bytes of a status information sent without its length byte, as a real terminal
#: sends the one that ends an end-of-day: the result code's BMP (27) stands where the length
#: should be. Recorded from a real terminal in bezahl-online/zvt (command/testdata/
#: 1617181236803PT.hex, "04 0F 27 00 04 ...", read there by command/command.go's "missing
#: length field" workaround, which also keys on 27 at the length's place).
LENGTHLESS_STATUS = bytes((0x04, 0x0F, 0x27))
_STATUS_39 = 3 + 0x27  # the size of a regular 04 0F whose length byte is 27 (39 bytes)


def _lengthless(raw: bytes | bytearray) -> bool:
    """Whether `raw`, all of one APDU (a serial frame's, or a TCP stream's up to a quiet
    line), is a status information without its length byte.

    With its length byte, 27 says 39 data bytes, which begin with a BMP's id. Without it,
    the fourth byte is the result code's value: 00 for an approval, which is no BMP. So:
    42 bytes are a regular one, whatever its fields (its length byte says what came); a
    fourth byte that is no BMP's id makes one without its length; a fourth byte that is a
    BMP's id makes one without its length only when more than 42 bytes came and the first
    39 after the length byte do not read as a regular one's fields. A regular one with a
    field we cannot read, or one still arriving, is never cut as length-less (its result
    code would be read from the wrong byte: a decline acknowledged while the terminal keeps
    the money)."""
    if bytes(raw[:3]) != LENGTHLESS_STATUS or len(raw) < 4 or len(raw) == _STATUS_39:
        return False
    if raw[3] not in BMP_FORMATS:
        return True
    return len(raw) > _STATUS_39 and bmps_end(bytes(raw[3:_STATUS_39])) is None


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
    """Exactly one APDU (a serial frame's, or one cut from a stream); FrameError if short
    or the length does not match. A status information without its length byte
    (`LENGTHLESS_STATUS`) is taken whole: all of `raw` is its data."""
    raw = bytes(raw)
    if _lengthless(raw):
        return Apdu(raw[:2], raw[2:])
    size = apdu_size(raw)
    if size is None:
        raise FrameError(f"short APDU: {raw.hex(' ')}")
    if size != len(raw):
        raise FrameError(f"APDU length says {size} bytes, got {len(raw)}")
    head = 5 if raw[2] == 0xFF else 3
    return Apdu(raw[:2], raw[head:])


class ApduReassembler:
    """TCP: APDUs split over reads, and several in one read.

    A status information whose length byte may be missing (it starts `LENGTHLESS_STATUS`)
    has no size to wait for; the terminal sends nothing after a status information until it
    is acknowledged, so it is all that arrives until the stream goes quiet.
    `waiting_for_quiet` says one is at the head; the link calls `flush` when no byte came for
    a short while, and it is decided then (`_lengthless`)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Apdu]:
        self._buf += data
        out = []
        while not self.waiting_for_quiet:
            size = apdu_size(self._buf)
            if size is None or len(self._buf) < size:
                break
            out.append(decode_apdu(bytes(self._buf[:size])))
            del self._buf[:size]
        return out

    @property
    def waiting_for_quiet(self) -> bool:
        """A status information that may be without its length is at the head."""
        return bytes(self._buf[:3]) == LENGTHLESS_STATUS

    def flush(self) -> list[Apdu]:
        """The line went quiet: what is held is complete. A status information without its
        length is all of it; a regular one (length 27, 39 bytes) and what follows it are
        cut as their lengths say."""
        if not self.waiting_for_quiet:
            return []
        if _lengthless(self._buf):
            out = [Apdu(bytes(self._buf[:2]), bytes(self._buf[2:]))]
            self._buf.clear()
            return out
        size = apdu_size(self._buf)
        if size is None or len(self._buf) < size:
            return []  # a regular one, not all here yet: the rest is waited for
        out = [decode_apdu(bytes(self._buf[:size]))]
        del self._buf[:size]
        return out + self.feed(b"")

    @property
    def pending(self) -> int:
        return len(self._buf)
