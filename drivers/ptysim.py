"""The host side of a simulated serial device: a pty whose `path` the host opens like a
serial port, and a thread that hands every chunk the host writes to `received`."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import threading
import tty
from pathlib import Path
from typing import Self


class PtyDevice:
    """Subclasses implement `received(chunk)` and answer with `os.write(self.master_fd, ...)`.

    With `link`, the host opens a stable path (as udev's /dev/serial/by-id/... links are) that
    points at the current pty: `unplug()` takes the cable out (the pty is closed, the link
    removed; the host's reads fail), `plug()` puts it back (a new pty behind the same link)."""

    name = "pty-sim"
    read_size = 4096

    def __init__(self, link: Path | None = None) -> None:
        self.link = link
        self.plugged = False
        self._open()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _open(self) -> None:
        self.master_fd, slave_fd = pty.openpty()
        tty.setraw(slave_fd)
        self.pty_path = os.ttyname(slave_fd)
        self._slave_fd = slave_fd  # kept open so the pty survives host reconnects
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.pty_path)
            os.replace(tmp, self.link)
        self.path = str(self.link) if self.link is not None else self.pty_path
        self.plugged = True

    def unplug(self) -> None:
        """The cable out: the host's port fails, the stable path is gone."""
        self.plugged = False
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        fds = (self.master_fd, self._slave_fd)
        self.master_fd = self._slave_fd = -1  # a late write fails, never hits a reused number
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def plug(self) -> None:
        """The cable back in: a new pty behind the same stable path."""
        if not self.plugged:
            self._open()

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
        self.unplug()

    def received(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.plugged:
                self._stop.wait(0.05)  # unplugged: nothing to read until it is back
                continue
            try:
                ready, _, _ = select.select([self.master_fd], [], [], 0.05)
                if not ready:
                    continue
                chunk = os.read(self.master_fd, self.read_size)
                self.received(chunk)
            except (OSError, ValueError):
                if self.plugged:  # not an unplugging: the pty is gone for good
                    return
                continue
