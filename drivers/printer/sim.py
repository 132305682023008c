"""A simulated ESC/POS receipt printer on a pty: the host opens `path` like a serial printer.

It reads the byte stream the way a printer does: commands are consumed by their lengths, text
goes into the current line, LF ends it, GS V cuts the paper (one job). It answers the
real-time status requests DLE EOT 1 and 4 with the paper state (`paper`: ok, near_end, out),
stays silent while `online` is False, and drops what it gets while out of paper or offline
(a real printer would keep it and print it later: the host must not rely on that).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from drivers.ptysim import PtyDevice

#: parameter bytes of the ESC and GS commands a receipt uses (others: one, a guess)
_ESC_ARGS = {0x40: 0, 0x32: 0, 0x21: 1, 0x2D: 1, 0x33: 1, 0x45: 1, 0x47: 1, 0x4D: 1, 0x61: 1,
             0x64: 1, 0x74: 1, 0x52: 1, 0x7B: 1, 0x70: 3}  # fmt: skip
_GS_ARGS = {0x21: 1, 0x42: 1, 0x48: 1, 0x66: 1, 0x68: 1, 0x77: 1, 0x4C: 2, 0x57: 2, 0x61: 1,
            0x72: 1}  # fmt: skip

#: ESC t n: the code pages of the receipt profile that python-escpos picks from
_CODE_PAGES = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 15: "iso8859_7",
               16: "cp1252", 17: "cp866", 19: "cp858", 40: "iso8859_15"}  # fmt: skip


@dataclass
class Job:
    """What one cut of paper carried."""

    raw: bytes
    lines: list[str] = field(default_factory=list)
    qr: list[str] = field(default_factory=list)


class PrinterSim(PtyDevice):
    name = "printer-sim"

    def __init__(self) -> None:
        super().__init__()
        self.paper = "ok"
        self.online = True
        self._buf = bytearray()
        self._raw = bytearray()
        self._line: list[str] = []
        self._codec = "cp437"
        self._lines: list[str] = []
        self._qr: list[str] = []
        self.jobs: list[Job] = []
        self.dropped = 0  # bytes received while out of paper or offline
        self.status_requests = 0
        self._changed = threading.Condition()

    def wait_jobs(self, n: int, timeout: float = 5.0) -> list[Job]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.jobs) >= n, timeout)
            return list(self.jobs)

    def received(self, chunk: bytes) -> None:
        self._buf += chunk
        self._consume()

    def _answer(self, n: int) -> None:
        self.status_requests += 1
        if not self.online:
            return
        value = 0x12
        if n == 4:
            value |= {"ok": 0, "near_end": 0x0C, "out": 0x60}[self.paper]
        os.write(self.master_fd, bytes((value,)))

    def _consume(self) -> None:
        buf = self._buf
        while buf:
            b = buf[0]
            if b == 0x10:  # DLE EOT n: answered at once, even mid-job
                if len(buf) < 3:
                    return
                if buf[1] == 0x04:
                    self._answer(buf[2])
                del buf[:3]
                continue
            if not self.online or self.paper == "out":
                self.dropped += 1
                del buf[:1]
                continue
            n = self._command_length(buf)
            if n is None:
                return  # wait for the rest of the command
            cmd = bytes(buf[:n])
            del buf[:n]
            self._raw += cmd
            self._apply(cmd)

    def _command_length(self, buf: bytearray) -> int | None:
        b = buf[0]
        if b not in (0x1B, 0x1D):
            return 1
        if len(buf) < 2:
            return None
        if b == 0x1D and buf[1] == 0x28 and buf[2:3] == b"k":  # GS ( k pL pH data
            if len(buf) < 5:
                return None
            n = 5 + buf[3] + 256 * buf[4]
        elif b == 0x1D and buf[1] == 0x56:  # GS V m [n]
            if len(buf) < 3:
                return None
            n = 3 if buf[2] in (0, 1, 48, 49) else 4
        else:
            table = _ESC_ARGS if b == 0x1B else _GS_ARGS
            n = 2 + table.get(buf[1], 1)
        return n if len(buf) >= n else None

    def _apply(self, cmd: bytes) -> None:
        if cmd == b"\n":
            self._lines.append("".join(self._line))
            self._line.clear()
        elif cmd[0] == 0x1D and cmd[1:2] == b"V":
            if self._line:
                self._lines.append("".join(self._line))
                self._line.clear()
            with self._changed:
                self.jobs.append(Job(bytes(self._raw), self._lines, self._qr))
                self._changed.notify_all()
            self._raw, self._lines, self._qr = bytearray(), [], []
        elif cmd[:3] == b"\x1d(k" and cmd[5:8] == b"1P0":
            self._qr.append(cmd[8:].decode("ascii", "replace"))
        elif cmd[0] == 0x1B and cmd[1:2] == b"d":
            self._lines.extend([""] * max(0, cmd[2] - 1))
        elif cmd[0] == 0x1B and cmd[1:2] == b"t":
            self._codec = _CODE_PAGES.get(cmd[2], "cp437")
        elif cmd[0] == 0x1B and cmd[1:2] == b"@":
            self._codec = "cp437"
        elif len(cmd) == 1 and cmd[0] >= 0x20:
            self._line.append(cmd.decode(self._codec, "replace"))
