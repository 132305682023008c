"""The owner thread of one ccTalk bus: initialises its devices, polls them, runs commands.

Everything that touches the bus happens on this thread. Other threads hand it work with
`call()`; events leave through the `emit` callable (which must only enqueue).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from drivers.cctalk.devices import Identity, _Acceptor
from drivers.cctalk.transport import Bus
from drivers.errors import DeviceTimeout, DriverError, TransportError

log = logging.getLogger(__name__)


#: the longest wait between two tries to bring up a device that is not there (seconds)
MAX_RETRY = 16.0


@dataclass(frozen=True)
class DeviceOnline:
    device: str
    identity: Identity
    counter: int | None = None  # its event counter once initialised


@dataclass(frozen=True)
class DeviceOffline:
    device: str
    reason: str


class BusWorker:
    """Polls the devices of one bus every `period` seconds on its own thread.

    A dead-man switch: with `deadman` set, the devices take money only while their owner says
    it is `alive()` at least that often; when it has not for longer, this thread inhibits every
    device by itself (whatever it was told before), and the next `alive()` restores what the
    owner last asked for."""

    def __init__(
        self,
        bus: Bus,
        devices: list[_Acceptor],
        emit: Callable[[Any], None],
        *,
        period: float = 0.1,
        retry_seconds: float = 1.0,
        resume: dict[str, int] | None = None,
        deadman: float | None = None,
    ) -> None:
        self.bus = bus
        self.devices = devices
        self.emit = emit
        self.period = period
        self.retry_seconds = retry_seconds
        self.resume = resume or {}
        self._calls: queue.Queue[tuple[_Acceptor, Callable[..., Any], tuple[Any, ...]]] = (
            queue.Queue()
        )
        self._stop = threading.Event()
        self._online: dict[str, bool] = {d.name: False for d in devices}
        self._reported: set[str] = set()  # offline devices already reported
        self._pending = 0  # calls handed over and not yet carried out
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cctalk-bus", daemon=True)
        self.deadman = deadman
        self._alive_at = time.monotonic()
        self._tripped = False
        self.trips = 0  # times the switch inhibited the devices
        #: per device: the enable mask its owner asked for last (None: inhibited)
        self._wanted: dict[str, Any] = {}
        #: per offline device: tries to bring it up so far, and when to try next
        self._tries: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.bus.close()

    def call(self, dev: _Acceptor, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` for `dev` on the bus thread before the next poll."""
        with self._pending_lock:
            self._pending += 1
        self._calls.put((dev, fn, args))

    def ask(self, dev: _Acceptor, fn: Callable[..., Any], *args: Any, timeout: float = 5.0) -> Any:
        """Run `fn(*args)` for `dev` on the bus thread and return its result (or raise its
        error); TransportError at once if the device is offline."""
        done: Future[Any] = Future()

        def run(*a: Any) -> None:
            try:
                done.set_result(fn(*a))
            except BaseException as err:  # handed to the asking thread
                done.set_exception(err)
                if isinstance(err, DriverError):
                    raise

        run.skip = lambda: done.set_exception(  # type: ignore[attr-defined]
            TransportError(f"{dev.name} is offline")
        )
        self.call(dev, run, *args)
        try:
            return done.result(timeout)
        except FutureTimeout:
            raise DeviceTimeout(f"{dev.name}: the bus thread did not get to it") from None

    @property
    def running(self) -> bool:
        """Its thread is alive (it polls)."""
        return self._thread.is_alive()

    def alive(self) -> None:
        """The owner is alive (from any thread); after a trip, its wishes apply again."""
        self._alive_at = time.monotonic()
        if self._tripped:
            self._tripped = False
            log.warning("dead-man switch: the owner is back, acceptors as it asked")
            for dev in self.devices:
                if self._wanted.get(dev.name) is not None:
                    self.call(dev, dev.enable, self._wanted[dev.name])

    def enable(self, dev: _Acceptor, value: Any) -> None:
        """Enable `dev` up to `value` (None: inhibit it), on the bus thread; remembered for
        after a dead-man trip."""
        self._wanted[dev.name] = value
        if value is None or not self._tripped:
            self.call(dev, dev.enable, value)

    def _deadman_check(self) -> None:
        if self.deadman is None or self._tripped:
            return
        silent = time.monotonic() - self._alive_at
        if silent <= self.deadman:
            return
        self._tripped = True
        self.trips += 1
        log.error("dead-man switch: no word from the owner for %.1f s: every acceptor inhibited",
                  silent)  # fmt: skip
        for dev in self.devices:
            if self._online[dev.name]:
                self._guard(dev, dev.enable, None)

    def idle(self) -> bool:
        """True when every call handed over so far has been carried out."""
        with self._pending_lock:
            return self._pending == 0

    def online(self, name: str) -> bool:
        return self._online.get(name, False)

    def _run(self) -> None:
        next_poll = time.monotonic()
        while not self._stop.is_set():
            try:
                dev, fn, args = self._calls.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                pass
            else:
                if self._online[dev.name]:
                    self._guard(dev, fn, *args)
                elif hasattr(fn, "skip"):
                    fn.skip()
                with self._pending_lock:
                    self._pending -= 1
                continue
            self._deadman_check()
            self.poll_once()
            next_poll = max(next_poll + self.period, time.monotonic())

    def poll_once(self) -> None:
        """One cycle over all devices: (re)initialise the offline ones (at once the first
        time, then after `retry_seconds`, doubling while it stays away up to `MAX_RETRY`:
        an adapter that is not plugged in is asked for every few seconds, not hammered), poll
        the others."""
        now = time.monotonic()
        for dev in self.devices:
            if not self._online[dev.name]:
                if now < self._retry_at.get(dev.name, 0.0):
                    continue
                tries = self._tries.get(dev.name, 0)
                self._tries[dev.name] = tries + 1
                wait = min(MAX_RETRY, self.retry_seconds * 2 ** min(tries, 8))
                self._retry_at[dev.name] = now + wait
                # where to resume: the journal's counter at the first start; after a time
                # offline, the last counter seen (what it took meanwhile is still owed)
                resume = self.resume.pop(dev.name, dev.last_counter)
                # Calls to an offline device are skipped: it comes online as its owner asked
                # last (a customer already paying when it appears), inhibited after a trip.
                dev.limit = None if self._tripped else self._wanted.get(dev.name)
                owed = self._guard(dev, dev.initialise, resume)
                if owed is not None and dev.identity is not None:
                    self._online[dev.name] = True
                    self._reported.discard(dev.name)
                    self._tries.pop(dev.name, None)
                    self._retry_at.pop(dev.name, None)
                    # Its counter says "accounted up to here" only once the events it owes
                    # are delivered: those carry their own counters, the newest last.
                    counter = None if owed else dev.last_counter
                    self.emit(DeviceOnline(dev.name, dev.identity, counter))
                    for ev in owed:
                        self.emit(ev)
                continue
            events = self._guard(dev, dev.poll)
            for ev in events or ():
                self.emit(ev)

    def _guard(self, dev: _Acceptor, fn: Callable[..., Any], *args: Any) -> Any:
        """A device call; any failure takes the device offline (reported once), never the
        bus thread down: an unexpected one is logged with its traceback as a defect."""
        try:
            return fn(*args)
        except Exception as err:
            if isinstance(err, DriverError):
                # said once when it goes; while it stays away, each try only at debug level
                level = logging.DEBUG if dev.name in self._reported else logging.ERROR
                log.log(level, "%s: %s", dev.name, err)
            else:
                log.exception("%s: unexpected failure (a defect): taken offline", dev.name)
            self._online[dev.name] = False
            if dev.name not in self._reported:
                self._reported.add(dev.name)
                self.emit(DeviceOffline(dev.name, str(err)))
            return None
