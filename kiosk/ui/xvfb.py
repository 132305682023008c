"""A virtual X screen (Xvfb) for machines without a display: the headless run and the tests."""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
import tempfile
import threading
import time


class Xvfb:
    """`with Xvfb(1280, 800) as x:` sets DISPLAY to a fresh virtual screen until the end.

    What the screen shows can be read without connecting to it (`picture`): Xvfb keeps its
    frame buffer in a file. What Xvfb says goes to a file too (a pipe nobody reads would stop
    the server once full)."""

    def __init__(self, width: int, height: int, timeout: float = 15.0) -> None:
        self.width, self.height, self.timeout = width, height, timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.display = ""
        self._saved: str | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> Xvfb:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise RuntimeError("Xvfb is not installed (Debian package xvfb; ./dev.sh installs it)")
        self._dir = tempfile.TemporaryDirectory(prefix="kiosk-xvfb-")
        read_fd, write_fd = os.pipe()
        with open(os.path.join(self._dir.name, "xvfb.log"), "wb") as said:
            self.proc = subprocess.Popen(
                [exe, "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24",
                 "-nolisten", "tcp", "-noreset", "-fbdir", self._dir.name],
                pass_fds=(write_fd,),
                stdout=subprocess.DEVNULL,
                stderr=said,
            )  # fmt: skip
        os.close(write_fd)
        try:  # Xvfb writes the number, then a newline: read both, else the second write
            said, deadline = b"", time.monotonic() + self.timeout  # fails and ends Xvfb
            while not said.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select(
                    [read_fd], [], [], max(0.0, deadline - time.monotonic())
                )
                chunk = os.read(read_fd, 16) if ready else b""
                if not chunk:
                    break  # (it ended, or the time is up)
                said += chunk
            number = said.decode().strip() if said.endswith(b"\n") else ""
        finally:
            os.close(read_fd)
        if not number:
            err = self.said()
            self.stop()
            raise RuntimeError(f"Xvfb did not start: {err.strip() or 'no display number'}")
        frame = os.path.join(self._dir.name, "Xvfb_screen0")
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(frame):  # (it may say its number before making its screen)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.said()
                self.stop()
                raise RuntimeError(f"Xvfb made no screen: {err.strip() or 'no frame buffer'}")
            threading.Event().wait(0.01)
        self.display = f":{number}"
        self._saved = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = self.display
        return self

    def said(self) -> str:
        """What Xvfb wrote to its standard error so far."""
        if self._dir is None:
            return ""
        with open(os.path.join(self._dir.name, "xvfb.log"), "rb") as f:
            return f.read()[-4000:].decode(errors="replace")

    def picture(self) -> tuple[tuple[int, int], bytes]:
        """What the screen shows now, read from Xvfb's frame buffer file (no X connection):
        its size and its pixels as rows of blue, green, red, unused bytes ("BGRX")."""
        if self._dir is None:
            raise RuntimeError("Xvfb is not running")
        with open(os.path.join(self._dir.name, "Xvfb_screen0"), "rb") as f:  # (start waited)
            data = f.read()
        if len(data) < 100:
            ended = self.proc is None or self.proc.poll() is not None
            raise RuntimeError(f"Xvfb's frame buffer is cut short (Xvfb "
                               f"{'ended' if ended else 'runs'}: {self.said()})")  # fmt: skip
        # the XWD header: 25 big-endian words; then the colour map, 12 bytes an entry
        head = struct.unpack(">25I", data[:100])
        size, order, bpp, stride, ncolors = head[0], head[7], head[11], head[12], head[19]
        width, height = head[4], head[5]
        if bpp != 32 or order != 0 or stride != width * 4:
            raise RuntimeError(f"Xvfb's frame buffer is not 32-bit little-endian: {head}")
        start = size + 12 * ncolors
        return (width, height), data[start : start + stride * height]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        if self._saved is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = self._saved

    def __enter__(self) -> Xvfb:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
