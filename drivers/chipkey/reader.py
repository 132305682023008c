"""PC/SC chip-key reader over pyscard: reader selection, card connections, insert/remove events.

Card insertion and removal come from `Watch` (SCardGetStatusChange on its own thread); its
callback only enqueues. A connection is a `Card` for the DESFire client: `transmit(apdu)`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.errors import TransportError
from drivers.trace import Trace

log = logging.getLogger(__name__)


class Connection(Protocol):
    """A connection to the card in a reader: a DESFire `Card` that can be let go."""

    def transmit(self, apdu: bytes) -> bytes: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class CardEvent:
    reader: str
    atr: bytes
    present: bool


def list_readers() -> list[str]:
    from smartcard.Exceptions import SmartcardException
    from smartcard.pcsc.PCSCExceptions import BaseSCardException
    from smartcard.System import readers

    try:
        return [str(r) for r in readers()]
    except (SmartcardException, BaseSCardException) as err:  # pcscd not running: 8010001D
        raise TransportError(f"PC/SC not available: {err}") from err


def pick_reader(pattern: str) -> str:
    """The first reader whose name matches the pattern (a regular expression)."""
    names = list_readers()
    for name in names:
        if re.search(pattern, name):
            return name
    raise TransportError(f"no reader matches {pattern!r} (readers: {', '.join(names) or 'none'})")


def card_present(reader: str) -> bool:
    """What pcscd says right now about the reader's slot."""
    from smartcard import scard

    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise TransportError(f"PC/SC not available: {scard.SCardGetErrorMessage(hresult)}")
    try:
        hresult, states = scard.SCardGetStatusChange(ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
        if hresult not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
            raise TransportError(f"{reader}: {scard.SCardGetErrorMessage(hresult)}")
        return bool(states[0][1] & scard.SCARD_STATE_PRESENT)
    finally:
        scard.SCardReleaseContext(ctx)


class PcscCard:
    """One connection to the card in a reader."""

    def __init__(self, reader: str) -> None:
        from smartcard.Exceptions import SmartcardException
        from smartcard.System import readers

        match = [r for r in readers() if str(r) == reader]
        if not match:
            raise TransportError(f"reader {reader!r} is gone")
        self.connection = match[0].createConnection()
        try:
            self.connection.connect()
            # (a key pulled between the two: "card was removed", a transport error too)
            self.atr = bytes(self.connection.getATR())
        except SmartcardException as err:
            self.close()  # now, not when the collector gets to it (pcscd may be gone then)
            raise TransportError(f"no card in {reader}: {err}") from err

    #: every APDU and answer, when a trace is being recorded (drivers/trace.py)
    trace: Trace | None = None

    def transmit(self, apdu: bytes) -> bytes:
        from smartcard.Exceptions import SmartcardException

        if self.trace is not None:
            self.trace.sent(apdu)
        try:
            data, sw1, sw2 = self.connection.transmit(list(apdu))
        except SmartcardException as err:
            if self.trace is not None:
                self.trace.note(f"transmit failed: {err}")
            raise TransportError(f"card transmit failed: {err}") from err
        answer = bytes(data) + bytes((sw1, sw2))
        if self.trace is not None:
            self.trace.received(answer)
        return answer

    def close(self) -> None:
        """Disconnect, and release its PC/SC context now, not at garbage collection (each
        step even when the other fails: after a pcscd restart both may)."""
        from smartcard.Exceptions import SmartcardException
        from smartcard.pcsc.PCSCExceptions import BaseSCardException

        for step in (self.connection.disconnect, self.connection.release):
            try:
                step()
            except (SmartcardException, BaseSCardException) as err:
                log.debug("%s: %s", step.__name__, err)
        # A context that pcscd no longer knows (it restarted) cannot be released: pyscard then
        # keeps the handle and tries again when the collector deletes the connection, raising
        # where nobody can catch it (at any allocation, even inside the compiler). It is gone.
        inner = getattr(self.connection, "component", self.connection)  # (pyscard's decorator)
        inner.hcard = inner.hcontext = None


class Watch:
    """Card insert/remove events for the first reader matching `pattern`, on its own thread.

    Built on SCardGetStatusChange and pcsc-lite's per-reader event counter (the high 16 bits of
    the event state), which counts every insertion and removal: a key pulled and pushed back
    between two looks is still seen as a removal and an insertion. (pyscard's CardMonitor
    compares sets of cards between polls and misses exactly that.) `on_event` only enqueues.

    pcscd restarted, or the reader unplugged: a key that was in is reported removed (its
    connection is gone), `on_health(False, why)` is called once, and the watch looks again
    every second with a new PC/SC context until the reader is back (`on_health(True, "")`; a
    key still in the reader is then reported inserted, as on the first look).
    """

    def __init__(
        self,
        pattern: str,
        on_event: Callable[[CardEvent], None],
        on_health: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.pattern = pattern
        self.on_event = on_event
        self.on_health = on_health
        self._healthy: bool | None = None  # what on_health was told last
        self._stop = threading.Event()
        self._ctx: int | None = None
        self.history: list[
            tuple[int, int | None]
        ] = []  # (event state, previous count): diagnostics
        self._thread = threading.Thread(target=self._run, name="pcsc-watch", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        from smartcard import scard

        self._stop.set()
        ctx = self._ctx
        if ctx is not None:
            scard.SCardCancel(ctx)
        self._thread.join(timeout=3)

    def _health(self, ok: bool, why: str = "") -> None:
        if ok != self._healthy and not self._stop.is_set():
            self._healthy = ok
            if ok:
                log.info("reader %s is back", self.pattern)
            else:
                log.warning("reader %s unusable: %s", self.pattern, why)
            if self.on_health is not None:
                self.on_health(ok, why)

    def _run(self) -> None:
        from smartcard import scard

        while not self._stop.is_set():
            hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                self._health(False, f"PC/SC not available: {scard.SCardGetErrorMessage(hresult)}")
                self._stop.wait(1.0)  # pcscd starting or restarting: look again
                continue
            self._ctx = ctx
            try:
                try:
                    reader = pick_reader(self.pattern)
                except TransportError as err:
                    self._health(False, str(err))
                    self._stop.wait(1.0)
                    continue
                why = self._watch(scard, ctx, reader)
                if why:
                    self._health(False, why)
                    self._stop.wait(1.0)
            finally:
                self._ctx = None
                scard.SCardReleaseContext(ctx)

    def _watch(self, scard: Any, ctx: int, reader: str) -> str:
        """Events of one reader until it fails (what failed) or the watch stops ("")."""
        state = scard.SCARD_STATE_UNAWARE
        present = False
        count: int | None = None
        while not self._stop.is_set():
            hresult, states = scard.SCardGetStatusChange(ctx, 1000, [(reader, state)])
            if hresult == scard.SCARD_E_TIMEOUT:
                continue
            if hresult != scard.SCARD_S_SUCCESS or states[0][1] & (
                scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE
            ):
                if hresult == scard.SCARD_E_CANCELLED and self._stop.is_set():
                    return ""
                if present:  # its connection is gone with the reader: the key is out for us
                    self.on_event(CardEvent(reader, b"", False))
                why = scard.SCardGetErrorMessage(hresult) if hresult else "reader unavailable"
                return f"reader {reader}: {why}"
            self._health(True)
            _name, event, atr = states[0]
            now_present = bool(event & scard.SCARD_STATE_PRESENT)
            now_count = event >> 16
            self.history.append((event, count))
            log.debug(
                "%s: state %08X present=%s count=%s (was %s)",
                reader,
                event,
                now_present,
                now_count,
                count,
            )
            if count is None:  # first look: report a key that is already in
                if now_present:
                    self.on_event(CardEvent(reader, bytes(atr), True))
            else:
                changes = (now_count - count) & 0xFFFF
                if changes >= 2 or (changes and now_present == present):
                    # Out and in (or in and out) between two looks: report both.
                    was, now = ("out", "in") if now_present else ("in", "out")
                    fields = {"event": "key_bounce", "device": "reader"}
                    log.info("key %s and %s again (reader events %d to %d)", was, now, count,
                             now_count, extra=fields)  # fmt: skip
                    self.on_event(CardEvent(reader, b"", not now_present))
                if changes or now_present != present:
                    log.info("key %s", "in" if now_present else "out",
                             extra={"event": "key_in" if now_present else "key_out",
                                    "device": "reader"})  # fmt: skip
                    self.on_event(CardEvent(reader, bytes(atr), now_present))
            present, count = now_present, now_count
            state = event & ~scard.SCARD_STATE_CHANGED
        return ""
