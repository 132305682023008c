"""Telling systemd how the automat is: READY=1 once it serves, WATCHDOG=1 while every thread
that money depends on is alive, STATUS= lines a technician reads in `systemctl status`.

The notification protocol is systemd's documented datagram (sd_notify(3)): newline-separated
KEY=VALUE assignments sent to the AF_UNIX datagram socket named by $NOTIFY_SOCKET (a leading
`@` names an abstract socket). Without $NOTIFY_SOCKET (not started by systemd) nothing is sent.
The watchdog's interval comes from $WATCHDOG_USEC; it pings at half of it, and only while
`healthy()` names no dead part: a dead engine or device thread stops the pings, and systemd
restarts the automat (the start-up reconciliation closes what was interrupted).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class Notifier:
    """sd_notify: one datagram per call to $NOTIFY_SOCKET (or nothing without one)."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def active(self) -> bool:
        return bool(self.address)

    def notify(self, **fields: str) -> bool:
        """Send `KEY=VALUE` lines (READY="1", STATUS="..."); False if it could not be sent."""
        if not self.address:
            return False
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.setblocking(False)  # never wait for the listener: the engine sends too
                s.connect(self.address)
                s.send(message)
        except OSError as err:  # BlockingIOError too: its queue is full, this one is dropped
            log.warning("systemd notification not sent: %s", err)
            return False
        return True


@dataclass(frozen=True)
class Supervision:
    """What systemd gave this process: where to notify, and the watchdog's ping interval."""

    address: str = ""
    watchdog: float | None = None


def take_supervision() -> Supervision:
    """Read $NOTIFY_SOCKET and the watchdog settings, and remove them from the environment
    (as sd_notify's unset_environment does): processes the automat starts (the virtual screen,
    a local head office) must not speak for it."""
    sup = Supervision(os.environ.get("NOTIFY_SOCKET", ""), watchdog_interval())
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(name, None)
    return sup


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd set for this process, in seconds (None: no watchdog)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Watchdog:
    """Pings systemd every `interval` seconds while `dead()` names nothing; says so in STATUS
    when something died (and stops pinging: systemd restarts the automat)."""

    def __init__(
        self,
        notifier: Notifier,
        dead: Callable[[], list[str]],
        interval: float,
    ) -> None:
        self.notifier = notifier
        self.dead = dead
        self.interval = interval
        self.pings = 0
        self.stopped_for: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                gone = self.dead()
            except Exception as err:  # a check that fails is a dead part too
                gone = [f"health check: {err}"]
            if gone:
                if gone != self.stopped_for:
                    self.stopped_for = gone
                    log.critical("watchdog pings stopped: %s not alive", ", ".join(gone))
                    self.notifier.notify(STATUS=f"out of order: {', '.join(gone)} not alive")
                continue
            self.stopped_for = []
            if self.notifier.notify(WATCHDOG="1"):
                self.pings += 1
