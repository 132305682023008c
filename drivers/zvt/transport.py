"""ZVT transports: serial (PA00P016: framing, ACK/NAK, T1/T2, two repeats) and TCP (raw APDUs).

Both offer `send(apdu_bytes)` and `receive(timeout) -> Apdu`, and may be reconnected. Not
thread-safe: one client thread owns a link.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from typing import Protocol

import serial

from drivers.errors import DeviceTimeout, FrameError, TransportError
from drivers.trace import Trace
from drivers.zvt.apdu import Apdu, ApduReassembler, decode_apdu, encode_apdu
from drivers.zvt.fields import _one_bmp, mask_card_numbers
from drivers.zvt.framing import ACK, NAK, SerialDecoder, frame

log = logging.getLogger(__name__)
TRACE = 5
#: TCP: how long the stream must stay quiet before a status information that may lack its
#: length byte is taken as complete (the terminal sends nothing more until it is acknowledged)
QUIET = 0.15


class Link(Protocol):
    def refresh(self) -> None: ...
    def connect(self) -> None: ...
    def close(self) -> None: ...
    def send(self, apdu: bytes) -> None: ...
    def receive(self, timeout: float) -> Apdu: ...


class SerialLink:
    """RS-232 at 9600 8N2; every frame acknowledged by a bare ACK (06) or NAK (15)."""

    def __init__(self, url: str, *, t2: float = 5.0, repeats: int = 2) -> None:
        self.url = url
        self.t2 = t2
        self.repeats = repeats
        self.port: serial.SerialBase | None = None
        self.decoder = SerialDecoder()
        self._pending: list[bytes] = []  # frames received while waiting for an ACK
        self.stats = {"naks_sent": 0, "repeats": 0}
        self.bytes = {"tx": 0, "rx": 0}
        self.t1 = 0.2  # at most this long between two bytes of one frame
        self._last_byte = 0.0

    def connect(self) -> None:
        if self.port is not None:
            return
        kwargs: dict[str, object] = {
            "baudrate": 9600,
            "stopbits": serial.STOPBITS_TWO,
            "timeout": 0,
        }
        if "://" not in self.url:
            kwargs["exclusive"] = True
        try:
            self.port = serial.serial_for_url(self.url, **kwargs)
        except (serial.SerialException, OSError, ValueError) as err:
            raise TransportError(f"cannot open {self.url}: {err}") from err

    def close(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None

    def refresh(self) -> None:
        """A serial line has no connection to renew."""

    def _read(self, deadline: float) -> list[bytes | int]:
        assert self.port is not None
        left = deadline - time.monotonic()
        if left <= 0:
            return []
        self.port.timeout = left
        try:
            chunk = self.port.read(max(1, self.port.in_waiting))
        except (serial.SerialException, OSError) as err:
            raise TransportError(f"{self.url}: {err}") from err
        now = time.monotonic()
        if self.decoder.busy and now - self._last_byte > self.t1:
            log.warning("T1: frame from the terminal stalled mid-way; dropped")
            self.decoder.reset()
        if not chunk:
            return []
        self._last_byte = now
        self.bytes["rx"] += len(chunk)
        log.log(TRACE, "rx %s", chunk.hex(" "))
        items: list[bytes | int] = []
        for item in self.decoder.feed(chunk):
            if isinstance(item, FrameError):
                log.warning("bad frame from the terminal (%s): NAK", item)
                self._write(bytes((NAK,)))
                self.stats["naks_sent"] += 1
            else:
                items.append(item)
        return items

    def _write(self, data: bytes) -> None:
        assert self.port is not None
        log.log(TRACE, "tx %s", data.hex(" "))
        self.bytes["tx"] += len(data)
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as err:
            raise TransportError(f"{self.url}: {err}") from err

    def send(self, apdu: bytes) -> None:
        """Send one frame and wait for its ACK; repeat after NAK or T2, then give up."""
        self.connect()
        raw = frame(apdu)
        for attempt in range(self.repeats + 1):
            if attempt:
                self.stats["repeats"] += 1
            self._write(raw)
            deadline = time.monotonic() + self.t2
            answer: int | None = None
            while answer is None and time.monotonic() < deadline:
                for item in self._read(deadline):
                    if isinstance(item, bytes):  # the terminal's next frame, in the same read
                        self._pending.append(item)
                        self._write(bytes((ACK,)))
                    elif answer is None:
                        answer = item
            if answer == ACK:
                return
        raise DeviceTimeout(
            f"{self.url}: no ACK for {apdu[:2].hex(' ')} after {self.repeats} repeats"
        )

    def receive(self, timeout: float) -> Apdu:
        self.connect()
        if self._pending:
            return decode_apdu(self._pending.pop(0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self._read(deadline):
                if isinstance(item, bytes):
                    self._write(bytes((ACK,)))
                    return decode_apdu(item)
        raise DeviceTimeout(f"{self.url}: nothing received within {timeout:.1f} s")


class TcpLink:
    """ZVT over TCP: raw APDUs, reassembled across reads; reconnects when the terminal drops."""

    def __init__(self, host: str, port: int = 20007, *, connect_timeout: float = 5.0) -> None:
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.sock: socket.socket | None = None
        self.reasm = ApduReassembler()
        self._ready: list[Apdu] = []

    @classmethod
    def from_url(cls, url: str) -> TcpLink:
        rest = url.removeprefix("tcp://")
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise TransportError(f"not a tcp://host:port URL: {url}")
        return cls(host, int(port))

    def _stale(self) -> bool:
        """The terminal closed our idle connection (some do after 1-2 s): EOF is waiting."""
        assert self.sock is not None
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def refresh(self) -> None:
        """Before a new command: drop a connection the terminal closed while we were idle."""
        if self.sock is not None and not self._ready and not self.reasm.pending and self._stale():
            log.info("terminal closed the idle connection: reconnecting")
            self.close()

    def connect(self) -> None:
        if self.sock is not None:
            return
        try:
            self.sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        except OSError as err:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {err}") from err
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reasm = ApduReassembler()
        self._ready.clear()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, apdu: bytes) -> None:
        self.connect()
        assert self.sock is not None
        log.log(TRACE, "tx %s", apdu.hex(" "))
        try:
            self.sock.sendall(apdu)
        except OSError as err:
            self.close()
            raise TransportError(f"{self.host}:{self.port}: {err}") from err

    def receive(self, timeout: float) -> Apdu:
        self.connect()
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while not self._ready:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceTimeout(
                    f"{self.host}:{self.port}: nothing received within {timeout:.1f} s"
                )
            quiet = self.reasm.waiting_for_quiet
            self.sock.settimeout(min(left, QUIET) if quiet else left)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                if quiet:  # a status information that may lack its length: it is all there
                    self._ready += self.reasm.flush()
                continue
            except OSError as err:
                self.close()
                raise TransportError(f"{self.host}:{self.port}: {err}") from err
            if not chunk:
                self.close()
                raise TransportError(f"{self.host}:{self.port}: connection closed by the terminal")
            log.log(TRACE, "rx %s", chunk.hex(" "))
            self._ready += self.reasm.feed(chunk)
        return self._ready.pop(0)


def open_link(url: str) -> Link:
    """``tcp://host:port`` for ZVT over IP, anything else is a serial port or pyserial URL."""
    if url.startswith("tcp://"):
        return TcpLink.from_url(url)
    return SerialLink(url)


#: ECR commands whose first three data bytes are the terminal's password (BCD)
_WITH_PASSWORD = {b"\x06\x00", b"\x06\x20", b"\x06\x30", b"\x06\x50", b"\x05\x01", b"\x06\x70",
                  b"\x06\x02", b"\x06\x1a", b"\x06\x0c"}  # fmt: skip
#: BMPs that carry card data: the card number (22: digits but the last four masked as a
#: terminal masks them, E), the tracks and the chip data (all masked)
_CARD_DATA = {0x23, 0x24, 0x2D, 0x2E, 0xA7, 0xAF}


def mask_zvt(direction: str, raw: bytes) -> tuple[bytes, str]:
    """A ZVT APDU as a trace may show it: no password, no card number but its last four
    digits, no track or chip data; print lines with a card number masked like a receipt."""
    try:
        apdu = decode_apdu(raw)
    except FrameError:
        return raw, ""
    data, notes = bytearray(apdu.data), []
    if apdu.command in _WITH_PASSWORD and len(data) >= 3:
        data[0:3] = b"\xff\xff\xff"
        notes.append("password masked")
    if apdu.command in (b"\x04\x0f", b"\x06\x01"):
        pos = 0
        while pos < len(data):
            try:
                bmp, start, end = _one_bmp(bytes(data), pos)
            except FrameError:
                # a field we cannot read: where the card data is in the rest is not known,
                # so none of the rest is written
                data[pos:] = bytes(len(data) - pos)
                notes.append(f"the last {len(data) - pos} bytes masked (unreadable)")
                break
            if bmp == 0x22:
                digits = data[start:end].hex()
                keep = len(digits.rstrip("f")) - 4
                masked = "".join("e" if i < keep and c not in "ef" else c
                                 for i, c in enumerate(digits))  # fmt: skip
                if masked != digits:
                    data[start:end] = bytes.fromhex(masked)
                    notes.append("card number masked")
            elif bmp in _CARD_DATA and any(data[start:end]):
                data[start:end] = bytes(end - start)
                notes.append(f"BMP {bmp:02X} masked")
            pos = end
    if apdu.command in (b"\x06\xd1", b"\x06\xd3"):
        # receipt text: a card number in it masked as a receipt shows it (length kept; the
        # TLV bytes around the lines are no digits)
        whole = bytes(data).decode("latin-1")
        masked_text = mask_card_numbers(whole)
        if masked_text != whole:
            data[:] = masked_text.encode("latin-1")
            notes.append("card number masked")
    if not notes:
        return raw, ""
    return encode_apdu(apdu.command, bytes(data)), ", ".join(notes)


class TracingLink:
    """A link whose APDUs (both ways) go into a trace, masked (`mask_zvt`)."""

    def __init__(self, inner: Link, trace: Trace) -> None:
        self.inner = inner
        self.trace = trace

    def refresh(self) -> None:
        self.inner.refresh()

    def connect(self) -> None:
        self.inner.connect()

    def close(self) -> None:
        self.inner.close()

    def send(self, apdu: bytes) -> None:
        self.trace.sent(apdu)
        self.inner.send(apdu)

    def receive(self, timeout: float) -> Apdu:
        apdu = self.inner.receive(timeout)
        self.trace.received(encode_apdu(apdu.command, apdu.data))
        return apdu
