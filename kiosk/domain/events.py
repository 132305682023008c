"""Events into the top-up engine, commands out of it, and the values both carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiosk.domain.money import Money, immutable
from sync.wire.protocol import Kind


class Commodity(StrEnum):
    ELECTRICITY = "electricity"
    GAS = "gas"


class Role(StrEnum):
    CUSTOMER = "customer"
    TECHNICIAN = "technician"


class KeyStatus(StrEnum):
    """What head office says about a key (through the locally stored reference data)."""

    ACTIVE = "active"
    BLOCKED = "blocked"
    NOT_ACTIVATED = "not_activated"
    UNKNOWN = "unknown"


class Method(StrEnum):
    CASH = "cash"
    CARD = "card"


class Device(StrEnum):
    COIN = "coin"
    NOTES = "notes"
    CARD = "card"
    READER = "reader"
    PRINTER = "printer"
    SYSTEM = "system"  # the automat itself: its journal's disk, its clock


class CardFailure(StrEnum):
    DECLINED = "declined"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    ERROR = "error"


@immutable
@dataclass(frozen=True)
class MeterReading:
    """What the meter last wrote onto the key (its report file): the reading, when, whether
    emergency credit is in use and the debt the meter recorded for it (repaid first from the
    credit the meter takes over next), and the meter's status byte."""

    reading_wh: int
    at: datetime | None
    emergency_in_use: bool
    debt: Money
    status: int = 0

    @property
    def worth_telling(self) -> bool:
        """Does the customer need to hear of it (emergency credit used)?"""
        return self.emergency_in_use or self.debt.minor > 0

    def as_data(self) -> dict[str, Any]:
        return {
            "reading_wh": self.reading_wh,
            "at": self.at.isoformat() if self.at else None,
            "emergency_in_use": self.emergency_in_use,
            "debt": self.debt.minor,
            "status": self.status,
        }


@immutable
@dataclass(frozen=True)
class KeyInfo:
    """What was read from a chip key."""

    serial: str
    contract_account: str
    meter_number: str
    commodity: Commodity
    role: Role
    credit: Money
    recent_txids: tuple[str, ...] = ()
    meter: MeterReading | None = None  # the meter's report, where the meter has written one
    #: credits ever written to the key (its newest write's number), and the oldest write's
    #: number its log still shows: a credit owed since write `n` can be checked against the log
    #: only while `log_from <= n + 1`
    written: int = 0
    log_from: int = 0
    #: whether `recent_txids` is the key's whole log (read only when a credit owed from an
    #: earlier visit needs it): without it, no transaction is known to be on the key
    log_complete: bool = True
    #: the write number of each of `recent_txids` (same order), where the log was read
    log_nos: tuple[int, ...] = ()

    def write_no_of(self, txid: str) -> int | None:
        """The key's write number of a transaction in its log (None: not known)."""
        if txid in self.recent_txids and len(self.log_nos) == len(self.recent_txids):
            return self.log_nos[self.recent_txids.index(txid)]
        return None


@immutable
@dataclass(frozen=True)
class PendingCredit:
    """Money paid earlier that has not yet reached the key, identified by its transaction."""

    txid: str
    amount: Money
    #: the credit this transaction put on the key if its id is in the key's log (a write whose
    #: fate a crash hid): more than `amount` when the payment behind it was given back since
    on_key: Money | None = None
    #: the key's write number when this credit became owed (it was not on the key then):
    #: whether it was written since can be told from the key's log while the log reaches back
    #: that far. None: no such bound (a credit head office gave this kiosk alone, or granted
    #: it a lease for just now)
    key_written: int | None = None


@immutable
@dataclass(frozen=True)
class Account:
    """Head office's view of a key and its contract account."""

    status: KeyStatus
    debt: Money
    reason: str = ""
    pending: tuple[PendingCredit, ...] = ()


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """Base of everything the engine consumes."""


@dataclass(frozen=True)
class Tick(Event):
    """Time passes: `now` is the wall clock (UTC: journal, opening hours), `mono` a monotonic
    reading in seconds (timeouts) when the caller has one."""

    now: datetime
    mono: float | None = None


@dataclass(frozen=True)
class KeyDetected(Event):
    pass


@dataclass(frozen=True)
class KeyInserted(Event):
    key: KeyInfo
    account: Account


@dataclass(frozen=True)
class KeyReadFailed(Event):
    reason: str


@dataclass(frozen=True)
class KeyRemoved(Event):
    pass


@dataclass(frozen=True)
class AmountChosen(Event):
    amount: Money | None  # None: pay what you insert (cash)


@dataclass(frozen=True)
class MethodChosen(Event):
    method: Method


@dataclass(frozen=True)
class Cancel(Event):
    pass


@dataclass(frozen=True)
class Finish(Event):
    pass


@dataclass(frozen=True)
class MoreTime(Event):
    pass


@dataclass(frozen=True)
class LanguageChosen(Event):
    """The customer changed the screen's language (receipts follow it)."""

    lang: str


@dataclass(frozen=True)
class ReceiptAnswer(Event):
    """The customer's answer to "receipt?" (sites that ask)."""

    wanted: bool


@dataclass(frozen=True)
class ReceiptPrinted(Event):
    """The printer port's word on a transaction's receipt: printed, or why not."""

    txid: str
    printed: bool
    reason: str = ""


@dataclass(frozen=True)
class PinEntered(Event):
    """The technician typed a PIN (the kiosk checks it, the engine hears PinChecked)."""

    pin: str = field(repr=False)


@dataclass(frozen=True)
class PinChecked(Event):
    ok: bool
    locked_until: datetime | None = None


@dataclass(frozen=True)
class AcceptorTest(Event):
    """Diagnostics: take coins and notes as test money (counted, never credited), or stop."""

    on: bool


@dataclass(frozen=True)
class LeaveDiagnostics(Event):
    pass


@dataclass(frozen=True)
class CoinAccepted(Event):
    value: Money
    channel: int = 0
    counter: int | None = None  # the acceptor's event counter (ccTalk)


@dataclass(frozen=True)
class NoteEscrowed(Event):
    value: Money
    channel: int = 0


@dataclass(frozen=True)
class NoteStacked(Event):
    value: Money
    channel: int = 0
    counter: int | None = None  # the acceptor's event counter (ccTalk)


@dataclass(frozen=True)
class NoteReturned(Event):
    value: Money
    channel: int = 0


@dataclass(frozen=True)
class CardStatus(Event):
    """The terminal's intermediate status: its own display `text`, and its status `code`
    (ZVT 04 FF), which the screen shows in the customer's language."""

    text: str
    code: int | None = None


@dataclass(frozen=True)
class CardApproved(Event):
    amount: Money
    receipt: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CardFailed(Event):
    """`reason`: the terminal's own text (journal and log only); `code`: its result code, which
    the screen tells the customer in their words."""

    outcome: CardFailure
    reason: str = ""
    code: int | None = None


@dataclass(frozen=True)
class CardReversed(Event):
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class CardReversedAfterCredit(Event):
    """The terminal did not keep a payment whose credit is already on the key: a claim."""

    txid: str
    amount: Money
    reason: str = ""


@dataclass(frozen=True)
class CardReceipt(Event):
    """The terminal's receipt text of a payment, by copy ("customer", "merchant"); sent when
    the terminal's dialogue has ended (possibly with no text at all), after the outcome: `kept`
    says whether the terminal kept the payment (a payment given back was reported first, as
    `CardReversed` or `CardReversedAfterCredit`). The journaled receipt settles the payment."""

    txid: str
    blocks: dict[str, list[str]] = field(default_factory=dict)
    kept: bool = True


@dataclass(frozen=True)
class KeyWritten(Event):
    txid: str
    credit_after: Money


@dataclass(frozen=True)
class KeyWriteFailed(Event):
    txid: str
    reason: str
    uncertain: bool = False  # the write may have landed (key pulled, power lost mid-commit)


@dataclass(frozen=True)
class DeviceFault(Event):
    device: Device
    code: int = 0
    text: str = ""
    counter: int | None = None  # cash: events up to this one are accounted for


@dataclass(frozen=True)
class DeviceOk(Event):
    device: Device


@dataclass(frozen=True)
class AcceptorCounter(Event):
    """A cash device came online with this event counter: later events are new money."""

    device: Device
    counter: int


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """Base of everything the engine asks the outside world to do."""


@dataclass(frozen=True)
class Record(Command):
    """Append a journal entry; the runner commits all records of one step before anything else."""

    kind: Kind
    txid: str | None = None
    key: str | None = None
    amount: Money | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnableCash(Command):
    """Accept coins and notes up to `max_value` each on `devices` (the healthy acceptors);
    channels above the value are inhibited, and acceptors not named stay disabled."""

    max_value: Money
    devices: frozenset[Device] = frozenset({Device.COIN, Device.NOTES})


@dataclass(frozen=True)
class DisableCash(Command):
    pass


@dataclass(frozen=True)
class StackNote(Command):
    pass


@dataclass(frozen=True)
class ReturnNote(Command):
    pass


@dataclass(frozen=True)
class AuthoriseCard(Command):
    txid: str
    amount: Money


@dataclass(frozen=True)
class AbortCard(Command):
    pass


@dataclass(frozen=True)
class CompleteCard(Command):
    """Confirm the approved payment: the goods (the credit) were delivered."""

    txid: str


@dataclass(frozen=True)
class ReverseCard(Command):
    txid: str


@dataclass(frozen=True)
class WriteKey(Command):
    """Credit `amount` onto the inserted key, logging `txid` in the same commit."""

    txid: str
    amount: Money
    #: the transaction's first write: it was never sent to any key, so it cannot be in the
    #: key's log (which then needs not be read before writing)
    new: bool = False


@dataclass(frozen=True)
class PrintReceipt(Command):
    """Print the receipt of `txid` from the journal, in the customer's language."""

    txid: str
    lang: str
