"""ccTalk device simulators that answer on a real pseudo-terminal with the real bytes.

`BusSimulator` owns the master side of a pty (the host opens `path`), echoes every byte the host
sends (as the single wire does), and lets each simulated device answer its own address. It can
pace its bytes at the line's baud rate and inject faults: silence, corrupted checksums, garbage.
The device models are scriptable from Python: insert coins and notes (known, unknown,
counterfeit), jam, stacker full or removed, power-cycle, bursts of events between polls.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from drivers.cctalk.codec import HOST, Decoder, Frame, Header, RouteCode, encode, next_counter
from drivers.ptysim import PtyDevice

log = logging.getLogger(__name__)

BYTE_TIME_8N1 = 10 / 9600  # seconds per byte on a 9600-baud 8N1 line


class SimDevice:
    """A ccTalk slave: identity, an event buffer with its counter, inhibits."""

    category = "Unknown"

    def __init__(self, address: int, ids: list[str], serial_number: int) -> None:
        self.address = address
        self.ids = ids  # position/type 1..16; "" or dots = empty
        self.serial_number = serial_number
        self.manufacturer = "SIM"
        self.product_code = "SIM-1"
        self.software_revision = "1.0"
        self.counter = 0
        self.buffer: deque[tuple[int, int]] = deque([(0, 0)] * 5, maxlen=5)
        self.inhibit_mask = 0
        self.master = False
        self.polls = 0
        self.fault_code = 0
        self.lock = threading.Lock()
        self.scripted: dict[int, tuple[bytes | None, bool]] = {}

    def script(self, header: int, reply: bytes | None, *, once: bool = True) -> None:
        """Reply to `header` with `reply` (None: no reply), once or always."""
        self.scripted[header] = (reply, once)

    def push(self, a: int, b: int) -> None:
        """Add one event to the buffer (newest first) and count it."""
        self.counter = next_counter(self.counter)
        self.buffer.appendleft((a, b))

    def power_cycle(self) -> None:
        """Power off and on: counter 0, buffer empty, everything inhibited."""
        with self.lock:
            self.counter = 0
            self.buffer = deque([(0, 0)] * 5, maxlen=5)
            self.inhibit_mask = 0
            self.master = False

    def enabled(self, channel: int) -> bool:
        return self.master and bool(self.inhibit_mask >> (channel - 1) & 1)

    def handle(self, frame: Frame) -> bytes | None:
        """The reply data for a request (None: stay silent)."""
        with self.lock:
            if frame.header in self.scripted:
                reply, once = self.scripted[frame.header]
                if once:
                    del self.scripted[frame.header]
                return reply
            return self._handle(frame.header, frame.data)

    def _handle(self, header: int, data: bytes) -> bytes | None:
        h = Header
        if header in (h.SIMPLE_POLL, h.RESET_DEVICE):
            if header == h.RESET_DEVICE:
                self.counter, self.inhibit_mask, self.master = 0, 0, False
                self.buffer = deque([(0, 0)] * 5, maxlen=5)
            return b""
        if header == h.REQUEST_EQUIPMENT_CATEGORY:
            return self.category.encode()
        if header == h.REQUEST_MANUFACTURER_ID:
            return self.manufacturer.encode()
        if header == h.REQUEST_PRODUCT_CODE:
            return self.product_code.encode()
        if header == h.REQUEST_SERIAL_NUMBER:
            return self.serial_number.to_bytes(3, "little")
        if header == h.REQUEST_SOFTWARE_REVISION:
            return self.software_revision.encode()
        if header == h.COMMS_REVISION:
            return bytes((1, 4, 2))
        if header == h.MODIFY_INHIBIT_STATUS:
            self.inhibit_mask = int.from_bytes(data, "little")
            return b""
        if header == h.REQUEST_INHIBIT_STATUS:
            return self.inhibit_mask.to_bytes(2, "little")
        if header == h.MODIFY_MASTER_INHIBIT:
            self.master = bool(data and data[0] & 1)
            return b""
        if header == h.REQUEST_MASTER_INHIBIT:
            return bytes((int(self.master),))
        if header == h.PERFORM_SELF_CHECK:
            return bytes((self.fault_code,))
        return self._device_handle(header, data)

    def _device_handle(self, header: int, data: bytes) -> bytes | None:
        return None

    def event_buffer(self) -> bytes:
        self.polls += 1
        return bytes((self.counter,)) + bytes(x for pair in self.buffer for x in pair)


class SimCoinAcceptor(SimDevice):
    """A coin acceptor at address 2 with coin ids such as ``EU200A``."""

    category = "Coin Acceptor"

    def __init__(self, ids: list[str], address: int = 2, serial_number: int = 0x123456) -> None:
        super().__init__(address, ids, serial_number)

    def _device_handle(self, header: int, data: bytes) -> bytes | None:
        if header == Header.READ_BUFFERED_CREDIT:
            return self.event_buffer()
        if header == Header.REQUEST_COIN_ID:
            pos = data[0] if data else 0
            text = self.ids[pos - 1] if 1 <= pos <= len(self.ids) else ""
            return (text or "......").encode()
        return None

    def position(self, coin_id: str) -> int:
        return self.ids.index(coin_id) + 1

    def insert(self, coin_id: str) -> bool:
        """A coin drops in; True if it was accepted (credited)."""
        with self.lock:
            if coin_id not in self.ids:
                self.push(0, 1)  # reject coin
                return False
            pos = self.position(coin_id)
            if not self.enabled(pos):
                self.push(0, 2)  # inhibited coin
                return False
            self.push(pos, 1)  # credited, sorter path 1
            return True

    def burst(self, coin_id: str, count: int) -> None:
        """`count` coins accepted between two polls (whatever the inhibits say)."""
        with self.lock:
            for _ in range(count):
                self.push(self.position(coin_id), 1)

    def error(self, code: int) -> None:
        with self.lock:
            self.push(0, code)


class SimBillValidator(SimDevice):
    """A bill validator at address 40 with escrow, stacker and self-inhibit on stalled polling."""

    category = "Bill Validator"

    def __init__(
        self,
        ids: list[str],
        address: int = 40,
        serial_number: int = 0x654321,
        scaling: dict[str, tuple[int, int]] | None = None,
        stall_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(address, ids, serial_number)
        self.scaling = scaling or {"EU": (100, 2), "CH": (100, 2)}
        self.mode = 0
        self.escrow: int | None = None
        self.stacked: list[int] = []
        self.returned: list[int] = []
        self.jam_next_stack = False
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.last_poll = clock()

    def _device_handle(self, header: int, data: bytes) -> bytes | None:
        if header == Header.READ_BUFFERED_BILL_EVENTS:
            now = self.clock()
            if self.master and now - self.last_poll > self.stall_seconds:
                self.master = False  # self-inhibit: the host stopped polling
                self.push(0, 0)
            self.last_poll = now
            return self.event_buffer()
        if header == Header.REQUEST_BILL_ID:
            typ = data[0] if data else 0
            text = self.ids[typ - 1] if 1 <= typ <= len(self.ids) else ""
            return (text or ".......").encode()
        if header == Header.COUNTRY_SCALING_FACTOR:
            scale, decimals = self.scaling.get(data.decode("ascii", "replace"), (0, 0))
            return scale.to_bytes(2, "little") + bytes((decimals,))
        if header == Header.BILL_OPERATING_MODE:
            self.mode = data[0] if data else 0
            return b""
        if header == Header.ROUTE_BILL:
            return self._route(data[0] if data else 0)
        return None

    def _route(self, code: int) -> bytes:
        if self.escrow is None:
            return bytes((254,))
        if code == RouteCode.HOLD:
            return b""
        typ, self.escrow = self.escrow, None
        if code == RouteCode.STACK:
            if self.jam_next_stack:
                self.jam_next_stack = False
                self.push(0, 7)  # jammed in stacker: the host must not assume it stacked
                return b""
            self.stacked.append(typ)
            self.push(typ, 0)
        else:
            self.returned.append(typ)
            self.push(0, 1)
        return b""

    def insert(self, bill_id: str, *, counterfeit: bool = False) -> bool:
        """A note is fed in; True if it went into escrow."""
        with self.lock:
            if counterfeit:
                self.push(0, 2)  # invalid bill (validation fail), given back
                return False
            if bill_id not in self.ids:
                self.push(0, 2)
                return False
            typ = self.ids.index(bill_id) + 1
            if not self.enabled(typ) or self.escrow is not None:
                self.push(0, 4)  # inhibited bill (on serial)
                return False
            if self.mode & 0b10:
                self.escrow = typ
                self.push(typ, 1)
            else:
                self.stacked.append(typ)
                self.push(typ, 0)
            return True

    def status(self, code: int) -> None:
        """A status or fault event: 11 stacker removed, 14 stacker full, 6 jam, ..."""
        with self.lock:
            self.push(0, code)


class BusSimulator(PtyDevice):
    """Simulated ccTalk bus on a pty: `path` is the host's end."""

    name = "cctalk-sim"
    read_size = 256

    def __init__(
        self,
        devices: list[SimDevice],
        *,
        echo: bool = True,
        crc16_mode: bool = False,
        byte_time: float = 0.0,
        link: Path | None = None,
    ) -> None:
        self.devices = {d.address: d for d in devices}
        self.echo = echo
        self.crc16_mode = crc16_mode
        self.byte_time = byte_time  # 0: as fast as the pty; BYTE_TIME_8N1 for a real line
        super().__init__(link)
        self._decoder = Decoder(crc16_mode=crc16_mode)
        self._faults: deque[str] = deque()
        self.requests: list[Frame] = []
        self.reply_hook: Callable[[Frame], None] | None = None
        #: simulated devices on ports of their own started with this bus (an eSSP note
        #: validator beside a ccTalk coin acceptor): stopped with it
        self.companions: list[PtyDevice] = []

    def stop(self) -> None:
        for other in self.companions:
            other.stop()
        super().stop()

    def inject(self, *faults: str) -> None:
        """Faults for the next replies, one each: silence, bad_checksum, garbage, drop_byte."""
        self._faults.extend(faults)

    def received(self, chunk: bytes) -> None:
        if self.echo:
            self._write(chunk)  # the single wire: the host hears itself
        for frame in self._decoder.feed(chunk, time.monotonic()):
            self._answer(frame)

    def _answer(self, frame: Frame) -> None:
        device = self.devices.get(frame.dest)
        if device is None or (frame.src is not None and frame.src != HOST):
            return
        self.requests.append(frame)
        data = device.handle(frame)
        fault = self._faults.popleft() if self._faults else None
        if data is None or fault == "silence":
            return
        raw = bytearray(
            encode(Frame(HOST, device.address, Header.REPLY, data), crc16_mode=self.crc16_mode)
        )
        if fault == "bad_checksum":
            raw[-1] ^= 0x55
        elif fault == "drop_byte":
            del raw[len(raw) // 2]
        elif fault == "garbage":
            raw[0:0] = b"\x07\xff\x13"
        if self.reply_hook is not None:
            self.reply_hook(frame)
        self._write(bytes(raw))

    def _write(self, data: bytes) -> None:
        if not self.byte_time:
            os.write(self.master_fd, data)
            return
        # A pty ignores the baud rate: pace the bytes as a 9600-baud line would.
        start = time.perf_counter()
        for i, b in enumerate(data):
            while (
                time.perf_counter() < start + (i + 1) * self.byte_time
            ):  # a byte is whole at its end
                time.sleep(self.byte_time / 4)
            os.write(self.master_fd, bytes((b,)))


def euro_coins() -> list[str]:
    return ["EU010A", "EU020A", "EU050A", "EU100A", "EU200A", "EU005A", "", ""]


def euro_notes() -> list[str]:
    return ["EU0005A", "EU0010A", "EU0020A", "EU0050A", "EU0100A", "", "", ""]


def swiss_coins() -> list[str]:
    return ["CH010A", "CH020A", "CH050A", "CH100A", "CH200A", "CH500A", "", ""]


def swiss_notes() -> list[str]:
    return ["CH0010A", "CH0020A", "CH0050A", "CH0100A", "CH0200A", "", "", ""]
