"""ZVT APDUs (PA00P015 ch. 2): command classes and instructions, the length rule
(one byte, or FF and two bytes little-endian), and reassembly from a byte stream."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from drivers.errors import FrameError


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
