"""The host side of a simulated serial device: a pty whose `path` the host opens like a
serial port, and a thread that hands every chunk the host writes to `received`."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import threading
import tty
from typing import Self


class PtyDevice:
    """Subclasses implement `received(chunk)` and answer with `os.write(self.master_fd, ...)`."""

    name = "pty-sim"
    read_size = 4096

    def __init__(self) -> None:
        self.master_fd, slave_fd = pty.openpty()
        tty.setraw(slave_fd)
        self.path = os.ttyname(slave_fd)
        self._slave_fd = slave_fd  # kept open so the pty survives host reconnects
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self.master_fd, self._slave_fd):
            with contextlib.suppress(OSError):  # already closed by a previous stop()
                os.close(fd)

    def received(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master_fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.master_fd, self.read_size)
            except OSError:
                return
            self.received(chunk)
