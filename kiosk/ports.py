"""The device ports the kiosk talks to; real drivers and simulators implement them.

Every port gets an `emit` callable when it is attached: device events go through it into the
kiosk's queue (from any thread). Commands reach the ports from the kiosk's single engine thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kiosk.events import Event, KeyInfo
from kiosk.money import Money

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class KeyPresented(Event):
    """A chip key was read; the kiosk adds head office's view before the engine sees it."""

    key: KeyInfo


class CoinAcceptor(Protocol):
    def attach(self, emit: Emit) -> None: ...
    def enable(self, max_value: Money) -> None: ...
    def disable(self) -> None: ...


class NoteValidator(Protocol):
    def attach(self, emit: Emit) -> None: ...
    def enable(self, max_value: Money) -> None: ...
    def disable(self) -> None: ...
    def stack(self) -> None: ...
    def return_note(self) -> None: ...


class CardTerminal(Protocol):
    def attach(self, emit: Emit) -> None: ...
    def authorise(self, txid: str, amount: Money) -> None: ...
    def abort(self) -> None: ...
    def complete(self, txid: str) -> None: ...
    def reverse(self, txid: str) -> None: ...


class ChipKeyReader(Protocol):
    def attach(self, emit: Emit) -> None: ...
    def write_credit(self, txid: str, amount: Money) -> None: ...


class Printer(Protocol):
    def attach(self, emit: Emit) -> None: ...
    def print_receipt(self, txid: str, lines: list[str]) -> bool: ...


@dataclass
class Devices:
    """The set of ports one kiosk drives; absent ones are None."""

    reader: ChipKeyReader
    coin: CoinAcceptor | None = None
    notes: NoteValidator | None = None
    card: CardTerminal | None = None
    printer: Printer | None = None
