"""PC/SC chip-key reader over pyscard: reader selection, card connections, insert/remove events.

Card insertion and removal come from pyscard's CardMonitor; its observer only enqueues (it runs
on pyscard's thread). A connection is a `Card` for the DESFire client: `transmit(apdu)`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from drivers.errors import TransportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardEvent:
    reader: str
    atr: bytes
    present: bool


def list_readers() -> list[str]:
    from smartcard.Exceptions import SmartcardException
    from smartcard.System import readers

    try:
        return [str(r) for r in readers()]
    except SmartcardException as err:  # pcscd not running: 8010001D
        raise TransportError(f"PC/SC not available: {err}") from err


def pick_reader(pattern: str) -> str:
    """The first reader whose name matches the pattern (a regular expression)."""
    names = list_readers()
    for name in names:
        if re.search(pattern, name):
            return name
    raise TransportError(f"no reader matches {pattern!r} (readers: {', '.join(names) or 'none'})")


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
        except SmartcardException as err:
            raise TransportError(f"no card in {reader}: {err}") from err
        self.atr = bytes(self.connection.getATR())

    def transmit(self, apdu: bytes) -> bytes:
        from smartcard.Exceptions import SmartcardException

        try:
            data, sw1, sw2 = self.connection.transmit(list(apdu))
        except SmartcardException as err:
            raise TransportError(f"card transmit failed: {err}") from err
        return bytes(data) + bytes((sw1, sw2))

    def close(self) -> None:
        from smartcard.Exceptions import SmartcardException

        try:
            self.connection.disconnect()
        except SmartcardException as err:
            log.debug("disconnect: %s", err)


class Watch:
    """Card insert/remove events for readers whose name matches `pattern`."""

    def __init__(self, pattern: str, on_event: Callable[[CardEvent], None]) -> None:
        from smartcard.CardMonitoring import CardMonitor, CardObserver

        outer = self

        class _Observer(CardObserver):  # type: ignore[misc]
            def update(self, _observable: object, actions: tuple[list, list]) -> None:
                added, removed = actions
                for card in added:
                    outer._emit(card, True)
                for card in removed:
                    outer._emit(card, False)

        self.pattern = pattern
        self.on_event = on_event
        self.monitor = CardMonitor()
        self.observer = _Observer()
        self.monitor.addObserver(self.observer)

    def _emit(self, card: object, present: bool) -> None:
        reader = str(getattr(card, "reader", ""))
        if re.search(self.pattern, reader):
            self.on_event(CardEvent(reader, bytes(getattr(card, "atr", b"")), present))

    def stop(self) -> None:
        self.monitor.deleteObserver(self.observer)
