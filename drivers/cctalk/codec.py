"""ccTalk framing, pure (no I/O): encode, decode, an incremental decoder, and the code tables.

Frame: ``[dest][len][src][header][data...][checksum]``; the simple checksum makes all bytes sum
to 0 mod 256. In CRC16 mode (CRC-16/XMODEM over dest, len, header and data) the CRC's low byte
takes the place of src and its high byte the place of the checksum (ccTalk generic spec, part 1).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from drivers.errors import FrameError

HOST = 1
BROADCAST = 0
MAX_DATA = 250  # one length byte, frame at most 255 bytes
INTER_BYTE_GAP = 0.050  # seconds; a longer silence ends a partial frame (part 1, 11.1)


class Header(IntEnum):
    """ccTalk command headers used here (generic spec, part 3)."""

    REPLY = 0
    RESET_DEVICE = 1
    COMMS_REVISION = 4
    NAK = 5
    BUSY = 6
    BARCODE = 129
    BILL_OPERATING_MODE = 153
    ROUTE_BILL = 154
    COUNTRY_SCALING_FACTOR = 156
    REQUEST_BILL_ID = 157
    READ_BUFFERED_BILL_EVENTS = 159
    REQUEST_COIN_ID = 184
    BUILD_CODE = 192
    REQUEST_INHIBIT_STATUS = 230
    MODIFY_INHIBIT_STATUS = 231
    PERFORM_SELF_CHECK = 232
    READ_BUFFERED_CREDIT = 229
    MODIFY_MASTER_INHIBIT = 228
    REQUEST_MASTER_INHIBIT = 227
    READ_OPTO_STATES = 236
    REQUEST_SOFTWARE_REVISION = 241
    REQUEST_SERIAL_NUMBER = 242
    REQUEST_PRODUCT_CODE = 244
    REQUEST_EQUIPMENT_CATEGORY = 245
    REQUEST_MANUFACTURER_ID = 246
    REQUEST_STATUS = 248
    REQUEST_POLLING_PRIORITY = 249
    ADDRESS_POLL = 253
    SIMPLE_POLL = 254


class RouteCode(IntEnum):
    """Route bill (154) codes."""

    RETURN = 0
    STACK = 1
    HOLD = 255


@dataclass(frozen=True, slots=True)
class Frame:
    """One ccTalk message. `src` is None in CRC16 mode, where the wire has no source byte."""

    dest: int
    src: int | None
    header: int
    data: bytes = b""

    def __post_init__(self) -> None:
        for name in ("dest", "header"):
            v = getattr(self, name)
            if not 0 <= v <= 255:
                raise FrameError(f"{name} {v} is not a byte")
        if self.src is not None and not 0 <= self.src <= 255:
            raise FrameError(f"src {self.src} is not a byte")
        if len(self.data) > MAX_DATA:
            raise FrameError(f"{len(self.data)} data bytes; at most {MAX_DATA}")


def checksum(body: bytes) -> int:
    """The simple checksum byte that makes the whole frame sum to 0 mod 256."""
    return (-sum(body)) & 0xFF


def crc16(body: bytes) -> int:
    """CRC-16/XMODEM (CCITT polynomial 0x1021, initial value 0, not reflected)."""
    return binascii.crc_hqx(body, 0)


def encode(frame: Frame, *, crc16_mode: bool = False) -> bytes:
    """The frame's bytes on the wire."""
    n = len(frame.data)
    if crc16_mode:
        crc = crc16(bytes((frame.dest, n, frame.header)) + frame.data)
        return bytes((frame.dest, n, crc & 0xFF, frame.header)) + frame.data + bytes((crc >> 8,))
    if frame.src is None:
        raise FrameError("a frame with the simple checksum needs a source address")
    body = bytes((frame.dest, n, frame.src, frame.header)) + frame.data
    return body + bytes((checksum(body),))


def decode(raw: bytes, *, crc16_mode: bool = False) -> Frame:
    """Parse exactly one frame; raises FrameError on any mismatch."""
    raw = bytes(raw)
    if len(raw) < 5:
        raise FrameError(f"short frame: {len(raw)} bytes, at least 5")
    n = raw[1]
    if len(raw) != n + 5:
        raise FrameError(f"length byte says {n} data bytes, frame has {len(raw) - 5}")
    data = raw[4:-1]
    if crc16_mode:
        got = raw[2] | (raw[-1] << 8)
        want = crc16(bytes((raw[0], n, raw[3])) + data)
        if got != want:
            raise FrameError(f"CRC {got:04X} does not match {want:04X}")
        return Frame(raw[0], None, raw[3], data)
    if sum(raw) & 0xFF:
        raise FrameError(f"checksum {raw[-1]:02X} does not match {checksum(raw[:-1]):02X}")
    return Frame(raw[0], raw[2], raw[3], data)


class Decoder:
    """Incremental decoder: feed bytes in any fragmentation; get whole, checked frames.

    It drops a partial frame after an inter-byte gap, resyncs byte by byte after garbage or a
    bad checksum, and skips the echo of what this side itself sent (`expect_echo`), as a
    single-wire bus reads every transmitted byte back.
    """

    def __init__(self, *, crc16_mode: bool = False, gap: float = INTER_BYTE_GAP) -> None:
        self.crc16_mode = crc16_mode
        self.gap = gap
        self._buf = bytearray()
        self._echo = bytearray()
        self._last: float | None = None
        self.errors = 0  # bytes discarded while resyncing

    def expect_echo(self, sent: bytes) -> None:
        """The next bytes read may be this side's own transmission: skip them."""
        self._echo += sent

    def reset(self) -> None:
        self._buf.clear()
        self._echo.clear()

    def feed(self, data: bytes, now: float | None = None) -> list[Frame]:
        if now is not None:
            if self._last is not None and now - self._last > self.gap and self._buf:
                self.errors += len(self._buf)
                self._buf.clear()
            self._last = now
        for b in data:
            if self._echo:
                if b == self._echo[0]:
                    del self._echo[0]
                    continue
                self._echo.clear()  # collision or lost echo: treat what follows as received
            self._buf.append(b)
        return self._frames()

    def _frame_at(self, i: int) -> Frame | None:
        """A complete, valid frame starting at offset i, if there is one."""
        buf = self._buf
        if len(buf) - i < 5 or buf[i + 1] > MAX_DATA:
            return None
        total = buf[i + 1] + 5
        if len(buf) - i < total:
            return None
        try:
            return decode(bytes(buf[i : i + total]), crc16_mode=self.crc16_mode)
        except FrameError:
            return None

    def _frames(self) -> list[Frame]:
        out: list[Frame] = []
        while len(self._buf) >= 5:
            if self._buf[1] <= MAX_DATA and len(self._buf) < self._buf[1] + 5:
                break  # the head may still complete: wait (a gap or the caller ends it)
            frame = self._frame_at(0)
            if frame is None:
                del self._buf[0]  # impossible length or bad checksum: resync one byte on
                self.errors += 1
                continue
            del self._buf[: len(frame.data) + 5]
            out.append(frame)
        return out

    def awaited(self) -> int:
        """How many bytes must still come at least: the echo's rest, then the frame begun
        (its length once its head is in, else a frame's smallest)."""
        buf = self._buf
        frame = buf[1] + 5 if len(buf) >= 2 and buf[1] <= MAX_DATA else 5
        return len(self._echo) + max(0, frame - len(buf))

    def stuck(self, dest: int, src: int) -> bool:
        """Bytes are held whose head cannot be the frame from `src` to `dest` that is awaited
        (a corrupt head claiming more than will come): worth a salvage. A head that can be it
        is still completing (a corrupt length in such a head costs a retry)."""
        buf = self._buf
        return len(buf) >= 5 and not (buf[0] == dest and buf[2] == src and buf[1] <= MAX_DATA)

    def salvage(self, wanted: Callable[[Frame], bool]) -> Frame | None:
        """A valid frame the caller expects, found past a corrupt head that claims more bytes.

        Only the caller knows what it waits for (e.g. a reply to the host from one address):
        scanning for *any* valid frame would cut real frames apart, as a run of zero bytes is
        itself a valid frame.
        """
        for i in range(1, len(self._buf) - 4):
            frame = self._frame_at(i)
            if frame is not None and wanted(frame):
                self.errors += i
                del self._buf[: i + len(frame.data) + 5]
                return frame
        return None


# ---------------------------------------------------------------- code tables (part 3)

#: Coin acceptor error codes (generic specification part 3, table 3 "Coin acceptor error
#: codes"): the text, whether the coin was rejected (returned to the customer) as the table's
#: column says, "yes", "no" or "possibly", and what the automat makes of it:
#:   reject  the coin came back to the customer: logged;
#:   fraud   an attempt on the acceptor, the coin not given back: the acceptor is taken out of
#:           use, the event journaled, the technician told;
#:   fatal   the acceptor cannot take coins (a blocked sensor or gate) or a coin may be stuck in
#:           it without credit: taken out of use, journaled, told;
#:   status  nothing about a coin's money: logged.
#: (Two independent libraries read the same table: cc_talk_core's CoinAcceptorError
#: is_coin_rejected / is_possible_rejection, and the coin acceptor error enum of a Qt ccTalk
#: host.)
COIN_ERROR_TABLE: dict[int, tuple[str, str, str]] = {
    0: ("null event", "no", "status"),
    1: ("reject coin", "yes", "reject"),
    2: ("inhibited coin", "yes", "reject"),
    3: ("multiple window", "yes", "reject"),
    4: ("wake-up timeout", "possibly", "fatal"),
    5: ("validation timeout", "possibly", "fatal"),
    6: ("credit sensor timeout", "possibly", "fatal"),
    7: ("sorter opto timeout", "no", "fatal"),
    8: ("2nd close coin error", "yes", "reject"),
    9: ("accept gate not ready", "yes", "reject"),
    10: ("credit sensor not ready", "yes", "reject"),
    11: ("sorter not ready", "yes", "reject"),
    12: ("reject coin not cleared", "yes", "reject"),
    13: ("validation sensor not ready", "yes", "reject"),
    14: ("credit sensor blocked", "yes", "fatal"),
    15: ("sorter opto blocked", "yes", "fatal"),
    16: ("credit sequence error", "no", "fraud"),
    17: ("coin going backwards", "no", "fraud"),
    18: ("coin too fast (over credit sensor)", "no", "fraud"),
    19: ("coin too slow (over credit sensor)", "no", "fraud"),
    20: ("C.O.S. mechanism activated (coin on string)", "no", "fraud"),
    21: ("DCE opto timeout", "possibly", "fatal"),
    22: ("DCE opto not seen", "yes", "reject"),
    23: ("credit sensor reached too early", "no", "fraud"),
    24: ("reject coin (repeated sequential trip)", "yes", "reject"),
    25: ("reject slug", "yes", "reject"),
    26: ("reject sensor blocked", "no", "fatal"),
    27: ("games overload", "no", "status"),
    28: ("max. coin meter pulses exceeded", "no", "status"),
    29: ("accept gate open not closed", "no", "fatal"),
    30: ("accept gate closed not open", "yes", "fatal"),
    31: ("manifold opto timeout", "no", "fatal"),
    32: ("manifold opto blocked", "yes", "fatal"),
    33: ("manifold not ready", "yes", "reject"),
    34: ("security status changed", "possibly", "fraud"),
    35: ("motor exception", "possibly", "fatal"),
    36: ("swallowed coin", "no", "fraud"),
    37: ("coin too fast (over validation sensor)", "yes", "reject"),
    38: ("coin too slow (over validation sensor)", "yes", "reject"),
    39: ("coin incorrectly sorted", "no", "status"),
    40: ("external light attack", "no", "fraud"),
    253: ("data block request", "no", "status"),
    254: ("coin return mechanism activated (flight deck open)", "no", "status"),
    255: ("unspecified alarm code", "no", "status"),
}
for _n in range(1, 33):
    COIN_ERROR_TABLE[127 + _n] = (f"inhibited coin type {_n}", "yes", "reject")

COIN_ERRORS: dict[int, str] = {code: row[0] for code, row in COIN_ERROR_TABLE.items()}
#: Coin error codes after which the coin was returned to the customer (not taken).
COIN_REJECTED = frozenset(code for code, row in COIN_ERROR_TABLE.items() if row[1] == "yes")


def coin_error_kind(code: int) -> str:
    """What a coin error code means for the automat. A code the table does not have (41-127,
    160-252: reserved, or a maker's own) takes the acceptor out of use: nobody can say where
    the coin went, so the acceptor stops taking money until a technician has looked."""
    row = COIN_ERROR_TABLE.get(code)
    return "fatal" if row is None else row[2]


class BillEventKind(IntEnum):
    STATUS = 0
    REJECT = 1
    FRAUD = 2
    FATAL = 3


BILL_EVENTS: dict[int, tuple[str, BillEventKind]] = {
    0: ("master inhibit active", BillEventKind.STATUS),
    1: ("bill returned from escrow", BillEventKind.STATUS),
    2: ("invalid bill (validation fail)", BillEventKind.REJECT),
    3: ("invalid bill (transport problem)", BillEventKind.REJECT),
    4: ("inhibited bill (on serial)", BillEventKind.STATUS),
    5: ("inhibited bill (on DIP switches)", BillEventKind.STATUS),
    6: ("bill jammed in transport (unsafe mode)", BillEventKind.FATAL),
    7: ("bill jammed in stacker", BillEventKind.FATAL),
    8: ("bill pulled backwards", BillEventKind.FRAUD),
    9: ("bill tamper", BillEventKind.FRAUD),
    10: ("stacker OK", BillEventKind.STATUS),
    11: ("stacker removed", BillEventKind.STATUS),
    12: ("stacker inserted", BillEventKind.STATUS),
    13: ("stacker faulty", BillEventKind.FATAL),
    14: ("stacker full", BillEventKind.STATUS),
    15: ("stacker jammed", BillEventKind.FATAL),
    16: ("bill jammed in transport (safe mode)", BillEventKind.FATAL),
    17: ("opto fraud detected", BillEventKind.FRAUD),
    18: ("string fraud detected", BillEventKind.FRAUD),
    19: ("anti-string mechanism faulty", BillEventKind.FATAL),
    20: ("barcode detected", BillEventKind.STATUS),
    21: ("unknown bill type stacked", BillEventKind.STATUS),
}

FAULT_CODES: dict[int, str] = {
    0: "OK",
    1: "EEPROM checksum corrupted",
    2: "fault on inductive coils",
    3: "fault on credit sensor",
    4: "fault on piezo sensor",
    5: "fault on reflective sensor",
    6: "fault on diameter sensor",
    7: "fault on wake-up sensor",
    8: "fault on sorter exit sensors",
    9: "NVRAM checksum corrupted",
    10: "coin dispensing error",
    11: "low level sensor error",
    12: "high level sensor error",
    13: "coin counting error",
    14: "keypad error",
    15: "button error",
    16: "display error",
    17: "coin auditing error",
    18: "fault on reject sensor",
    19: "fault on coin return mechanism",
    20: "fault on C.O.S. mechanism",
    21: "fault on rim sensor",
    22: "fault on thermistor",
    23: "payout motor fault",
    24: "payout timeout",
    25: "payout jammed",
    26: "payout sensor fault",
    27: "level sensor error",
    28: "personality module not fitted",
    29: "personality checksum corrupted",
    30: "ROM checksum mismatch",
    31: "missing slave device",
    32: "internal comms bad",
    33: "supply voltage outside operating limits",
    34: "temperature outside operating limits",
    35: "D.C.E. fault",
    36: "fault on bill validation sensor",
    37: "fault on bill transport motor",
    38: "fault on stacker",
    39: "bill jammed",
    40: "RAM test fail",
    41: "fault on string sensor",
    42: "accept gate failed open",
    43: "accept gate failed closed",
    44: "stacker missing",
    45: "stacker full",
    46: "flash memory erase fail",
    47: "flash memory write fail",
    48: "slave device not responding",
    49: "fault on opto sensor",
    50: "battery fault",
    51: "door open",
    52: "microswitch fault",
    53: "RTC fault",
    54: "firmware error",
    55: "initialisation error",
    56: "supply current outside operating limits",
    57: "forced bootloader mode",
    255: "unspecified fault code",
}


def new_event_count(last: int, counter: int) -> int:
    """Events between two readings of the event counter, which wraps 255 -> 1 (0 = reset)."""
    if not (0 <= last <= 255 and 1 <= counter <= 255):
        raise ValueError(f"counter readings out of range: {last}, {counter}")
    if last == 0:
        return counter
    return (counter - last) % 255


def next_counter(counter: int, step: int = 1) -> int:
    """The counter after `step` more events (device side): 1..255, never 0 again."""
    return (counter - 1 + step) % 255 + 1 if counter else (step - 1) % 255 + 1


def parse_coin_id(text: str) -> tuple[str, int, str] | None:
    """A coin id ``CCVVVI`` -> (country, value in the country's minor units, issue); None if empty.

    Value codes use K and M as decimal multipliers (``1K0`` = 1000) and a leading dot for
    fractions is not used by our currencies; ``......`` marks an empty position.
    """
    if len(text) != 6 or text == "......" or text.strip(". ") == "":
        return None
    country, value, issue = text[:2], text[2:5], text[5]
    if not country.isalpha():
        raise FrameError(f"coin id {text!r}: bad country code")
    return country, _value_code(value, text), issue


def parse_bill_id(text: str) -> tuple[str, int, str] | None:
    """A bill id ``CCVVVVI`` -> (country, value in units before scaling, issue); None if empty."""
    if len(text) != 7 or text.strip(". ") == "":
        return None
    country, value, issue = text[:2], text[2:6], text[6]
    if not country.isalpha():
        raise FrameError(f"bill id {text!r}: bad country code")
    return country, _value_code(value, text), issue


def _value_code(value: str, whole: str) -> int:
    for letter, factor in (("K", 1000), ("M", 1_000_000)):
        if letter in value:
            ints, _, frac = value.partition(letter)
            if not (ints + frac).isdigit():
                break
            scale: int = 10 ** len(frac)
            return int(ints or "0") * factor + int(frac or "0") * factor // scale
    if not value.isdigit():
        raise FrameError(f"id {whole!r}: bad value code {value!r}")
    return int(value)
