"""The device ports the kiosk talks to; real drivers and simulators implement them.

Every port gets an `emit` callable when it is attached: device events go through it into the
kiosk's queue (from any thread). Commands reach the ports from the kiosk's single engine thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from kiosk.domain.events import Event, KeyInfo
from kiosk.domain.money import Money
from sync.wire.client import SyncError

if TYPE_CHECKING:
    from kiosk.documents.receipt import Document

Emit = Callable[[Event], None]


@dataclass
class SyncStatus:
    """Where the head-office link stands: entries acknowledged and still to send, the last
    round's outcome, the reference data's version."""

    acked: int
    backlog: int
    last_success: datetime | None = None
    last_error: str | None = None
    started: int = 0  # rounds begun in this process
    rounds: int = 0  # rounds ended in this process
    reference_version: str | None = None
    retry_after: float | None = None  # what head office asked for with the last error


@dataclass(frozen=True)
class KeyPresented(Event):
    """A chip key was read; the kiosk adds head office's view before the engine sees it."""

    key: KeyInfo


class CoinAcceptor(Protocol):
    def attach(self, emit: Emit) -> None: ...
    def enable(self, max_value: Money) -> None: ...
    def disable(self) -> None: ...
    #: the engine is alive (said every turn of its loop): an acceptor takes money only while
    #: it hears this; when it stops, the device layer inhibits it by itself
    def alive(self) -> None: ...


class NoteValidator(Protocol):
    def attach(self, emit: Emit) -> None: ...
    def enable(self, max_value: Money) -> None: ...
    def disable(self) -> None: ...
    def alive(self) -> None: ...
    def stack(self) -> None: ...
    def return_note(self) -> None: ...


class CardTerminal(Protocol):
    def attach(self, emit: Emit) -> None: ...
    def authorise(self, txid: str, amount: Money) -> None: ...
    def abort(self) -> None: ...
    def complete(self, txid: str) -> None: ...
    def reverse(self, txid: str) -> None: ...


class KeyNotRead(RuntimeError):
    """The inserted key's log could not be read (the key left, the reader failed)."""


class ChipKeyReader(Protocol):
    def attach(self, emit: Emit) -> None: ...
    # then KeyWritten or KeyWriteFailed; `new`: the transaction's first write (WriteKey.new)
    def write_credit(self, txid: str, amount: Money, *, new: bool = False) -> None: ...
    # the inserted key read again with its whole log, now (KeyNotRead if it cannot be)
    def read_log(self, timeout: float = 10.0) -> KeyInfo: ...


class Printer(Protocol):
    def attach(self, emit: Emit) -> None: ...
    def print_receipt(self, txid: str, doc: Document) -> None: ...  # then ReceiptPrinted
    def print_document(self, doc: Document) -> bool: ...  # now; whether it was printed


class HeadOffice(Protocol):
    """The link to head office: background sync, credit claims, settings for the kiosk."""

    where: str  # its address, for diagnostics

    @property
    def status(self) -> SyncStatus: ...
    def attach(self, on_settings: Callable[[dict[str, int]], object]) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    # a key's open credits fleet-wide, granted here under a lease: their ids, each with the
    # key's write number below which it cannot be on the key (None: no bound known); `written`
    # is the key's write count as read at insertion
    def claim(self, key: str, written: int | None = None,
              log: list[tuple[int, str]] | None = None) -> dict[str, int | None]: ...
    # head office asked at the key's last claim to see its log (claim again with it)
    def wants_log(self, key: str) -> bool: ...
    def round_now(self, timeout: float = 30.0) -> SyncStatus: ...
    def health(self) -> float: ...  # seconds for a round trip (raises when unreachable)


@dataclass(frozen=True)
class DeviceReport:
    """A device as the technician sees it: connected, who it is, what went wrong, counts."""

    name: str  # coin, notes, card, reader, printer
    connected: bool
    identity: dict[str, str] = field(default_factory=dict)  # manufacturer, product, serial, ...
    last_error: str | None = None
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    """One self-test: passed or not, and what the device said."""

    name: str
    ok: bool
    lines: tuple[str, ...]


@runtime_checkable
class Diagnosable(Protocol):
    """A port that can describe and test itself (diagnostics; may block for seconds)."""

    def report(self) -> DeviceReport: ...
    def self_test(self) -> CheckResult: ...


@dataclass
class Devices:
    """The set of ports one kiosk drives; absent ones are None."""

    reader: ChipKeyReader
    coin: CoinAcceptor | None = None
    notes: NoteValidator | None = None
    card: CardTerminal | None = None
    printer: Printer | None = None

    def named(self) -> list[tuple[str, object]]:
        """The present ports by name, in the order the technician sees them."""
        ports = [("reader", self.reader), ("coin", self.coin), ("notes", self.notes),
                 ("card", self.card), ("printer", self.printer)]  # fmt: skip
        return [(n, p) for n, p in ports if p is not None]


class NoHeadOffice:
    """The head-office port of a kiosk that cannot sync: none configured, or no token. The
    automat works offline on what it has; diagnostics say why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.where = "-"
        self.status = SyncStatus(acked=0, backlog=0, last_error=reason)

    def attach(self, on_settings: Callable[[dict[str, int]], object]) -> None:
        """Nothing will come."""

    def start(self) -> None:
        """Nothing to run."""

    def stop(self) -> None:
        """Nothing runs."""

    def claim(self, key: str, written: int | None = None,
              log: list[tuple[int, str]] | None = None) -> dict[str, int | None]:  # fmt: skip
        return {}

    def wants_log(self, key: str) -> bool:
        return False

    def round_now(self, timeout: float = 30.0) -> SyncStatus:
        return self.status

    def health(self) -> float:
        raise SyncError(self.reason)
