"""Device traffic traces: every byte (or APDU) between the automat and a device, with its
direction and a monotonic time stamp, in a line-based text format; and replay of a trace to a
driver, so that traffic recorded at a site's first bring-up becomes a regression test.

The format (version 1), one record per line, UTF-8:

    # kiosk device trace 1
    # device coin
    # protocol cctalk
    # port /dev/serial/by-id/usb-FTDI-if00
    # started 2026-12-07T09:30:00Z
    0.000000 > 02 00 01 fe ff
    0.004102 < 02 00 01 fe ff 01 00 02 00 fd
    0.012000 > 90 5a 00 00 03 01 5e f0 00  # a note after the bytes

- ``#`` lines are comments; the first says the format, the next name the device, its protocol
  (cctalk, essp, zvt, pcsc, escpos) and where it was; more may follow anywhere.
- A record is the seconds since the trace began (monotonic clock, six decimals), ``>`` for
  what the automat sent, ``<`` for what it received, and the bytes in hex. Serial protocols
  record the bytes as they were read (a reply may come in several records); PC/SC and ZVT
  record one APDU per line.
- Nothing secret is written: what a protocol marks as secret (a card number, a terminal's
  password, a key) is masked before the line is written (`mask` of each protocol), and the
  mask is said in a note at the line's end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from drivers.errors import DeviceTimeout, FrameError

MAGIC = "# kiosk device trace 1"
PROTOCOLS = ("cctalk", "essp", "zvt", "pcsc", "escpos")
SENT, RECEIVED = ">", "<"

#: masks one direction's bytes: (direction, data) -> (data to write, note or "")
Mask = Callable[[str, bytes], tuple[bytes, str]]


def _no_mask(_direction: str, data: bytes) -> tuple[bytes, str]:
    return data, ""


class Trace:
    """A trace being written. Thread-safe (a reader and a writer thread may share a port);
    every line is flushed, so a trace survives the process being killed."""

    def __init__(
        self,
        out: TextIO,
        device: str,
        protocol: str,
        port: str = "",
        *,
        mask: Mask = _no_mask,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
        self.out = out
        self.mask = mask
        self.clock = clock
        self.start = clock()
        self._lock = threading.Lock()
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for line in (MAGIC, f"# device {device}", f"# protocol {protocol}", f"# port {port}",
                     f"# started {started}"):  # fmt: skip
            out.write(line + "\n")
        out.flush()

    @classmethod
    def to_file(cls, path: str | Path, device: str, protocol: str, port: str = "",
                **kwargs: object) -> Trace:  # fmt: skip
        """A trace into a file (created, or appended to after a restart: a new header)."""
        return cls(Path(path).open("a", encoding="utf-8"), device, protocol, port, **kwargs)  # type: ignore[arg-type]

    def sent(self, data: bytes) -> None:
        self._record(SENT, data)

    def received(self, data: bytes) -> None:
        self._record(RECEIVED, data)

    def note(self, text: str) -> None:
        with self._lock:
            self.out.write(f"# {text}\n")
            self.out.flush()

    def _record(self, direction: str, data: bytes) -> None:
        if not data:
            return
        shown, note = self.mask(direction, bytes(data))
        line = f"{self.clock() - self.start:.6f} {direction} {shown.hex(' ')}"
        if note:
            line += f"  # {note}"
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def close(self) -> None:
        self.out.close()

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Record:
    at: float
    direction: str  # SENT or RECEIVED
    data: bytes


@dataclass(frozen=True)
class Recorded:
    headers: dict[str, str]
    records: tuple[Record, ...]

    @property
    def protocol(self) -> str:
        return self.headers.get("protocol", "")


def read_trace(lines: Iterable[str] | str | Path) -> Recorded:
    """A trace read back; FrameError naming the line for anything not in the format."""
    if isinstance(lines, Path):
        lines = lines.read_text(encoding="utf-8").splitlines()
    elif isinstance(lines, str):
        lines = lines.splitlines()
    headers: dict[str, str] = {}
    records: list[Record] = []
    seen_magic = False
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line == MAGIC:
                seen_magic = True
                continue
            key, _, value = line[1:].strip().partition(" ")
            if key in ("device", "protocol", "port", "started") and key not in headers:
                headers[key] = value.strip()
            continue
        if not seen_magic:
            raise FrameError(f"line {n}: not a device trace (no '{MAGIC}' first)")
        body = line.split("#", 1)[0].split()
        if len(body) < 2 or body[1] not in (SENT, RECEIVED):
            raise FrameError(f"line {n}: expected '<seconds> > or < <hex bytes>': {raw!r}")
        try:
            at = float(body[0])
            data = bytes.fromhex("".join(body[2:]))
        except ValueError as err:
            raise FrameError(f"line {n}: {err}: {raw!r}") from err
        records.append(Record(at, body[1], data))
    if not seen_magic:
        raise FrameError(f"not a device trace (no '{MAGIC}' line)")
    return Recorded(headers, tuple(records))


class ReplayPort:
    """A serial port that is a recorded trace: what the device answered becomes readable after
    the automat's write of the command it answered. The driver need not send every command the
    recording has (the automat also set inhibits, printed, ...): a write is matched with the
    next recorded command of the same bytes, and the commands passed over are counted in
    `skipped`; a write the rest of the trace does not have is a mismatch (the next command is
    taken for it). Looks like a pyserial URL port (no descriptor), which the drivers take."""

    baudrate = 9600

    @property
    def is_open(self) -> bool:
        return not self.closed

    def __init__(self, recorded: Recorded) -> None:
        self._records = list(recorded.records)
        self._at = 0
        self._buffer = bytearray()
        self.timeout: float | None = 0
        self.closed = False
        self.mismatches: list[str] = []
        self.skipped = 0
        self._take_received()  # anything the device said before the first command

    def _take_received(self) -> None:
        while self._at < len(self._records) and self._records[self._at].direction == RECEIVED:
            self._buffer += self._records[self._at].data
            self._at += 1

    def pass_over(self) -> None:
        """The next recorded command is not sent by the replayed driver: passed over (with
        what the device answered to it), and counted in `skipped`."""
        i = next((i for i in range(self._at, len(self._records))
                  if self._records[i].direction == SENT), None)  # fmt: skip
        if i is None:
            return
        self.skipped += 1
        self._at = i + 1
        while self._at < len(self._records) and self._records[self._at].direction == RECEIVED:
            self._at += 1

    @property
    def position(self) -> int:
        return self._at

    def next_sent(self) -> bytes | None:
        """The next command the recording has the automat send, if any."""
        return next((r.data for r in self._records[self._at :] if r.direction == SENT), None)

    def will_send(self, data: bytes) -> bool:
        """Does the rest of the trace have this command?"""
        return any(r.direction == SENT and r.data == data for r in self._records[self._at :])

    def write(self, data: bytes) -> int:
        data = bytes(data)
        sent = [i for i in range(self._at, len(self._records))
                if self._records[i].direction == SENT]  # fmt: skip
        if not sent:
            raise DeviceTimeout("the trace has ended: nothing more was recorded")
        match = next((i for i in sent if self._records[i].data == data), None)
        if match is None:
            r = self._records[sent[0]]
            self.mismatches.append(f"at {r.at:.6f}: sent {data.hex(' ')}, "
                                   f"recorded {r.data.hex(' ')}")  # fmt: skip
            match = sent[0]
        self.skipped += sum(1 for i in sent if i < match)
        self._buffer.clear()  # the answers to commands passed over
        self._at = match + 1
        self._take_received()
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self._buffer)

    def read(self, n: int = 1) -> bytes:
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def reset_input_buffer(self) -> None:
        """Not emptied: in a replay, what the device sends after a command is recorded after
        it, so nothing stale can be waiting."""

    def fileno(self) -> int:
        raise OSError("a replayed port has no descriptor")

    def flush(self) -> None:
        """Nothing is buffered on the way out."""

    def close(self) -> None:
        self.closed = True


class ReplayCard:
    """A PC/SC card that is a recorded trace: each APDU sent must be the recorded one (checked)
    and gets the recorded answer."""

    def __init__(self, recorded: Recorded) -> None:
        self.pairs = list(_pairs(recorded))
        self.mismatches: list[str] = []

    def transmit(self, apdu: bytes) -> bytes:
        if not self.pairs:
            raise DeviceTimeout("the trace has ended: nothing more was recorded")
        sent, answer = self.pairs.pop(0)
        if sent != bytes(apdu):
            self.mismatches.append(f"sent {bytes(apdu).hex(' ')}, recorded {sent.hex(' ')}")
        return answer

    @property
    def exhausted(self) -> bool:
        return not self.pairs


def _pairs(recorded: Recorded) -> Iterator[tuple[bytes, bytes]]:
    records = list(recorded.records)
    for i, r in enumerate(records):
        if r.direction == SENT:
            answer = records[i + 1] if i + 1 < len(records) else None
            if answer is None or answer.direction != RECEIVED:
                raise FrameError(f"the APDU at {r.at:.6f} has no answer in the trace")
            yield r.data, answer.data


def mask_pcsc(direction: str, data: bytes) -> tuple[bytes, str]:
    """Chip-key APDUs carry no key (keys never leave the card or the secrets file; a ChangeKey
    goes enciphered): nothing to mask."""
    return data, ""
