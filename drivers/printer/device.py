"""An ESC/POS receipt printer on python-escpos, with its status read before every job.

Many printers take a job while out of paper and print it when paper is loaded, hours later:
the write proves nothing. So a job starts only after the printer answered the real-time status
requests (DLE EOT 1: online; DLE EOT 4: paper sensors) within a short time. A printer that does
not answer is offline; one whose paper is out gets no job.

Ports: a serial device path (`/dev/ttyUSB0`, `?baud=19200` to change the speed), `tcp://host:port`
(port 9100 printers), `usb://VID:PID`, `file:/path` (a write-only device or a file: no status),
`dummy` (bytes collected in memory, for rendering tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs, urlsplit

from escpos.escpos import Escpos
from escpos.printer import Dummy, File, Network, Serial, Usb

from drivers.errors import DriverError, TransportError
from drivers.trace import Trace

DLE_EOT = b"\x10\x04"
#: the receipt printers' common profile in python-escpos's capability database
PROFILE = "TM-T88V"


class PaperStatus(StrEnum):
    OK = "ok"
    NEAR_END = "near_end"  # prints, but the roll is almost used up: tell the technician
    OUT = "out"
    OFFLINE = "offline"  # no answer, a bad answer, or the printer reports itself offline
    UNKNOWN = "unknown"  # a transport that cannot answer (file, dummy): assumed printable

    @property
    def printable(self) -> bool:
        return self in (PaperStatus.OK, PaperStatus.NEAR_END, PaperStatus.UNKNOWN)


class PrinterUnavailable(DriverError):
    """No job was sent: the printer is offline or out of paper."""

    def __init__(self, status: PaperStatus) -> None:
        super().__init__(f"printer {status}")
        self.status = status


def status_byte_valid(b: int) -> bool:
    """Real-time status bytes have bits 1 and 4 set and bits 0 and 7 clear."""
    return b & 0x93 == 0x12


def decode_status(online: int | None, paper: int | None) -> PaperStatus:
    """The two real-time status bytes (DLE EOT 1 and DLE EOT 4) as one paper status."""
    if online is None or paper is None:
        return PaperStatus.OFFLINE
    if not (status_byte_valid(online) and status_byte_valid(paper)) or online & 0x08:
        return PaperStatus.OFFLINE
    if paper & 0x60:
        return PaperStatus.OUT
    if paper & 0x0C:
        return PaperStatus.NEAR_END
    return PaperStatus.OK


def open_escpos(url: str, *, timeout: float = 1.0) -> Escpos:
    """The python-escpos printer object for a port string (see the module text)."""
    parts = urlsplit(url)
    if url == "dummy":
        return Dummy(profile=PROFILE)
    if parts.scheme == "file":
        return File(devfile=parts.path, profile=PROFILE)
    if parts.scheme == "tcp":
        if not parts.hostname:
            raise ValueError(f"{url!r}: tcp://host:port")
        return Network(parts.hostname, parts.port or 9100, timeout=timeout, profile=PROFILE)
    if parts.scheme == "usb":
        try:
            vid, pid = (int(x, 16) for x in parts.netloc.split(":"))
        except ValueError:
            raise ValueError(f"{url!r}: usb://VID:PID in hex") from None
        return Usb(vid, pid, timeout=int(timeout * 1000), profile=PROFILE)
    if parts.scheme or not parts.path.startswith("/"):
        raise ValueError(f"{url!r}: a device path, tcp://, usb://, file: or dummy")
    query = parse_qs(parts.query)
    baud = int(query.get("baud", ["9600"])[0])
    return Serial(devfile=parts.path, baudrate=baud, timeout=timeout, dsrdtr=False, profile=PROFILE)


@dataclass(frozen=True)
class Identity:
    port: str
    transport: str


class ReceiptPrinter:
    """One printer; jobs and status requests are serialised (one thread at a time)."""

    def __init__(self, url: str, *, status_timeout: float = 0.5) -> None:
        self.url = url
        self.status_timeout = status_timeout
        self.escpos = open_escpos(url, timeout=status_timeout)
        self._lock = threading.Lock()
        self._open = False
        self.jobs = 0
        self.last_status: PaperStatus | None = None
        #: every byte sent and every status byte read, when a trace is being recorded
        self.trace: Trace | None = None

    @property
    def identity(self) -> Identity:
        return Identity(self.url, type(self.escpos).__name__.lower())

    def _ensure_open(self) -> None:
        if self._open or isinstance(self.escpos, Dummy):
            return
        try:
            self.escpos.open()
        except Exception as err:  # python-escpos raises its own, or OSError
            raise TransportError(f"printer {self.url}: {err}") from err
        self._open = True

    def close(self) -> None:
        with self._lock:
            if self._open:
                self.escpos.close()
                self._open = False

    def _query(self, n: int) -> int | None:
        """One real-time status byte (DLE EOT n), or None without an answer in time."""
        got = self._ask(n)
        if self.trace is not None:
            self.trace.sent(DLE_EOT + bytes((n,)))
            if got is not None:
                self.trace.received(bytes((got,)))
        return got

    def _ask(self, n: int) -> int | None:
        p = self.escpos
        dev = getattr(p, "device", None)
        if isinstance(p, Serial) and dev is not None:
            dev.reset_input_buffer()
            dev.write(DLE_EOT + bytes((n,)))
            got: bytes = dev.read(1)
            return got[0] if got else None
        if isinstance(p, Network) and dev is not None:
            dev.settimeout(self.status_timeout)
            try:
                dev.sendall(DLE_EOT + bytes((n,)))
                got = dev.recv(1)
            except TimeoutError:
                return None
            return got[0] if got else None
        if isinstance(p, Usb):
            p._raw(DLE_EOT + bytes((n,)))
            got = bytes(p._read())
            return got[0] if got else None
        raise LookupError("no status channel")

    def _trace_job(self) -> None:
        """The job's bytes into the trace as they go to the printer (python-escpos sends
        everything through its `_raw`)."""
        p, trace = self.escpos, self.trace
        raw = p._raw
        if getattr(raw, "traced", False) or trace is None:
            return

        def traced(msg: bytes) -> None:
            trace.sent(bytes(msg))
            raw(msg)

        traced.traced = True  # type: ignore[attr-defined]
        p._raw = traced  # type: ignore[method-assign]

    def status(self) -> PaperStatus:
        with self._lock:
            return self._status()

    def _status(self) -> PaperStatus:
        try:
            self._ensure_open()
            online = self._query(1)
            paper = self._query(4) if online is not None else None
            status = decode_status(online, paper)
        except LookupError:
            status = PaperStatus.UNKNOWN
        except (OSError, TransportError):
            status = PaperStatus.OFFLINE
        self.last_status = status
        return status

    def print_job(self, render: Callable[[Escpos], None]) -> PaperStatus:
        """Check the status, then send the job; PrinterUnavailable (nothing sent) if the
        printer cannot print it now. Returns the status seen before the job."""
        with self._lock:
            status = self._status()
            if not status.printable:
                raise PrinterUnavailable(status)
            try:
                if self.trace is not None:
                    self._trace_job()
                render(self.escpos)
                flush = getattr(getattr(self.escpos, "device", None), "flush", None)
                if callable(flush):
                    flush()
            except OSError as err:
                self.last_status = PaperStatus.OFFLINE
                raise PrinterUnavailable(PaperStatus.OFFLINE) from err
            self.jobs += 1
            return status
