"""A virtual X screen (Xvfb) for machines without a display: the headless run and the tests."""

from __future__ import annotations

import os
import select
import shutil
import subprocess


class Xvfb:
    """`with Xvfb(1280, 800) as x:` sets DISPLAY to a fresh virtual screen until the end."""

    def __init__(self, width: int, height: int, timeout: float = 15.0) -> None:
        self.width, self.height, self.timeout = width, height, timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.display = ""
        self._saved: str | None = None

    def start(self) -> Xvfb:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise RuntimeError("Xvfb is not installed (Debian package xvfb; ./dev.sh installs it)")
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [exe, "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24",
             "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(write_fd)
        try:
            ready, _, _ = select.select([read_fd], [], [], self.timeout)
            number = os.read(read_fd, 16).decode().strip() if ready else ""
        finally:
            os.close(read_fd)
        if not number:
            err = (
                self.proc.stderr.read().decode()
                if self.proc.poll() is not None and self.proc.stderr
                else ""
            )
            self.stop()
            raise RuntimeError(f"Xvfb did not start: {err.strip() or 'no display number'}")
        self.display = f":{number}"
        self._saved = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = self.display
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
        if self._saved is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = self._saved

    def __enter__(self) -> Xvfb:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
