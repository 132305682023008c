"""The ccTalk bus over pyserial: one request, one reply, with the single wire's echo skipped.

Not thread-safe by design: one owner thread per bus (`BusWorker`) makes every request.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import termios
import threading
import time

import serial

from drivers.cctalk.codec import HOST, Decoder, Frame, Header, encode
from drivers.errors import DeviceError, DeviceTimeout, TransportError
from drivers.trace import Trace

log = logging.getLogger(__name__)
TRACE = 5  # raw bytes; below DEBUG, off by default


def open_port(url: str, baudrate: int = 9600) -> serial.SerialBase:
    """A serial port by path or pyserial URL (``socket://``, ``spy://``, ``loop://``)."""
    kwargs: dict[str, object] = {"baudrate": baudrate, "timeout": 0}
    if "://" not in url:
        kwargs["exclusive"] = True  # a second process on the same bus would corrupt it
    try:
        return serial.serial_for_url(url, **kwargs)
    except (serial.SerialException, OSError, ValueError) as err:
        raise TransportError(f"cannot open {url}: {err}") from err


class Bus:
    """A ccTalk bus: host address 1, simple checksum or CRC16, echo on a single wire."""

    def __init__(
        self,
        port: serial.SerialBase,
        *,
        crc16_mode: bool = False,
        echo: bool = True,
        timeout: float = 0.1,
        retries: int = 2,
        url: str | None = None,
    ) -> None:
        self.port = port
        #: where to open the port again when it was lost (an adapter unplugged and plugged in
        #: again comes back at the same stable path); None: a lost port stays lost
        self.url = url
        self._lost = False
        self.crc16_mode = crc16_mode
        self.echo = echo
        self.timeout = timeout
        self.retries = retries
        self.decoder = Decoder(crc16_mode=crc16_mode)
        self.bit_time = 1.0 / (getattr(port, "baudrate", None) or 9600)
        self._fd_of: tuple[object, int | None] | None = None
        self._paused = 0.0  # the last pause for bytes on the wire, not yet fed
        self._closing = threading.Event()
        self.stats = {"requests": 0, "retries": 0, "timeouts": 0}
        #: every byte written and read, when a trace is being recorded (drivers/trace.py)
        self.trace: Trace | None = None

    @classmethod
    def open(cls, url: str, *, wait: bool = False, **kwargs: object) -> Bus:
        """The bus on `url`. `wait`: a port that is not there yet (an adapter that enumerates
        late, unplugged at boot) is no error: the bus is made lost, and each request tries to
        open it again (TransportError, naming the port, until it is there)."""
        try:
            port = open_port(url)
        except TransportError as err:
            if not wait:
                raise
            log.error("%s", err)
            bus = cls(None, url=url, **kwargs)  # type: ignore[arg-type]
            bus._lost = True
            return bus
        return cls(port, url=url, **kwargs)  # type: ignore[arg-type]

    def _reopen(self) -> None:
        """The port failed before: open it again (TransportError while it is not there)."""
        if self.url is None:
            raise TransportError("the port was lost")
        self.port = open_port(self.url)
        self._lost = False
        log.warning("%s: port open", self.url)

    def close(self) -> None:
        self._closing.set()  # (a wait for bytes on the wire ends at once)
        if self.port is not None:
            self.port.close()

    def _pace(self, deadline: float) -> None:
        """Bytes came, and more are awaited: wait the time they take on the wire (10 bits
        each), or until the bus is closed, instead of waking for each byte, so that a poll is
        read in three or four pieces, not twenty (a device that answers at once has sent them
        all already: no wait). Waiting for the bytes in the kernel instead (termios VMIN) was
        measured: the terminal driver still wakes the thread per byte, 0.7 ms of CPU a poll
        against 0.4. Not on a URL port (no line rate), and never past the deadline."""
        if self._fd() is None or self.port.in_waiting:
            return  # (more came already: a device, or simulator, faster than a line)
        pause = min(self.decoder.awaited() * self.bit_time * 10, deadline - time.monotonic())
        if pause > 0.0005 and not self._closing.wait(pause):
            self._paused = pause

    def _fd(self) -> int | None:
        """The port's descriptor (a serial device), or None (a URL port); kept per port."""
        if self._fd_of is None or self._fd_of[0] is not self.port:
            try:
                fd: int | None = int(self.port.fileno())
            except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
                fd = None
            self._fd_of = (self.port, fd)
        return self._fd_of[1]

    def _read(self, wait: float) -> bytes:
        """What has arrived, waiting up to `wait` s for the first byte. The port stays
        non-blocking (timeout 0, set once): a serial device is waited on with select, since
        setting pyserial's timeout applies every port setting again; a URL port (socket://,
        loop://) without a descriptor gets its timeout set as before."""
        fd = self._fd()
        if fd is None:
            self.port.timeout = wait
            return bytes(self.port.read(max(1, self.port.in_waiting)))
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return b""
        try:
            return os.read(fd, 512)  # non-blocking (pyserial opens it so): what is there
        except BlockingIOError:
            return b""

    def request(
        self, dest: int, header: int, data: bytes = b"", timeout: float | None = None
    ) -> bytes:
        """Send one command and return the reply's data; retries on silence or bad frames."""
        if self._lost:
            self._reopen()
        raw = encode(Frame(dest, HOST, header, data), crc16_mode=self.crc16_mode)
        self.stats["requests"] += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            try:
                reply = self._exchange(raw, dest, timeout or self.timeout)
            except DeviceTimeout:
                log.debug("no reply from %d to header %d (attempt %d)", dest, header, attempt + 1)
                continue
            if reply.header == Header.BUSY:
                continue
            if reply.header == Header.NAK:
                raise DeviceError(f"device {dest} answered NAK to header {header}")
            if reply.header != Header.REPLY:
                raise DeviceError(f"device {dest} answered header {reply.header} to {header}")
            return reply.data
        self.stats["timeouts"] += 1
        raise DeviceTimeout(f"no valid reply from address {dest} to header {header}")

    def _exchange(self, raw: bytes, dest: int, timeout: float) -> Frame:
        try:
            self.port.reset_input_buffer()
            self.decoder.reset()
            self._paused = 0.0
            if self.echo:
                self.decoder.expect_echo(raw)
            if log.isEnabledFor(TRACE):
                log.log(TRACE, "tx %s", raw.hex(" "))
            self.port.write(raw)
            if self.trace is not None:
                self.trace.sent(raw)
            deadline = time.monotonic() + timeout + len(raw) * 0.00115

            def is_reply(frame: Frame) -> bool:
                return frame.dest == HOST and frame.src in (None, dest)

            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeviceTimeout(f"address {dest}: no reply within {timeout:.3f} s")
                chunk = self._read(left)
                if not chunk:
                    continue
                if self.trace is not None:
                    self.trace.received(chunk)
                if log.isEnabledFor(TRACE):
                    log.log(TRACE, "rx %s", chunk.hex(" "))
                # (the pause this side took is not a gap on the line: those bytes came in it)
                arrived, self._paused = time.monotonic() - self._paused, 0.0
                for frame in self.decoder.feed(chunk, arrived):
                    if is_reply(frame):
                        return frame
                if self.decoder.stuck(HOST, dest):  # a corrupt head claims more: a reply past it?
                    salvaged = self.decoder.salvage(is_reply)
                    if salvaged is not None:
                        return salvaged
                self._pace(deadline)
        except (serial.SerialException, OSError, termios.error) as err:
            # unplugged, most often (a pty or USB adapter gone: tcflush raises termios.error,
            # which is no OSError): closed now, opened again next time
            self._lost = True
            with contextlib.suppress(serial.SerialException, OSError, termios.error):
                self.port.close()
            raise TransportError(f"port error talking to {dest}: {err}") from err
