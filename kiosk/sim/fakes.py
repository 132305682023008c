"""In-process fake devices for fast tests and the scripted demo (no bytes, no threads).

They obey the same ports as the real drivers and emit the same events. The simulators that
speak the real protocols over ptys and vpcd are in `drivers/`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kiosk.app.ports import Emit, KeyNotRead, KeyPresented
from kiosk.documents.receipt import Document
from kiosk.domain.events import (
    CardApproved,
    CardFailed,
    CardFailure,
    CardReceipt,
    CardReversed,
    CardStatus,
    CoinAccepted,
    Commodity,
    KeyDetected,
    KeyInfo,
    KeyRemoved,
    KeyWriteFailed,
    KeyWritten,
    MeterReading,
    NoteEscrowed,
    NoteReturned,
    NoteStacked,
    ReceiptPrinted,
    Role,
)
from kiosk.domain.money import Money

log = logging.getLogger(__name__)


def _no_emit(_ev: object) -> None:
    raise RuntimeError("device not attached to a kiosk")


class _FakeAcceptor:
    """What coin and note fakes share: the event sink and the enabled value limit."""

    def __init__(self) -> None:
        self.limit: Money | None = None
        self.emit: Emit = _no_emit

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def enable(self, max_value: Money) -> None:
        self.limit = max_value

    def disable(self) -> None:
        self.limit = None

    def alive(self) -> None:
        """In-process: the fake is as alive as the engine that calls it."""


class FakeCoinAcceptor(_FakeAcceptor):
    """Accepts known coins up to the enabled limit; anything else drops to the return cup."""

    def __init__(self, coins: tuple[Money, ...]) -> None:
        super().__init__()
        self.coins = coins

    def insert(self, value: Money) -> bool:
        """A customer drops a coin; True if it was accepted (credited)."""
        if value not in self.coins or self.limit is None or value > self.limit:
            return False
        self.emit(CoinAccepted(value, self.coins.index(value) + 1))
        return True


class FakeNoteValidator(_FakeAcceptor):
    """Escrows known notes (the engine decides by value); stacks or returns on command."""

    def __init__(self, notes: tuple[Money, ...]) -> None:
        super().__init__()
        self.notes = notes
        self.escrow: Money | None = None
        self.stacked: list[Money] = []
        self.returned: list[Money] = []

    def insert(self, value: Money) -> bool:
        """A customer feeds a note; True if it went into escrow."""
        if value not in self.notes or self.limit is None or self.escrow is not None:
            return False
        self.escrow = value
        self.emit(NoteEscrowed(value, self.notes.index(value) + 1))
        return True

    def stack(self) -> None:
        note, self.escrow = self._take()
        self.stacked.append(note)
        self.emit(NoteStacked(note, self.notes.index(note) + 1))

    def return_note(self) -> None:
        note, self.escrow = self._take()
        self.returned.append(note)
        self.emit(NoteReturned(note, self.notes.index(note) + 1))

    def _take(self) -> tuple[Money, None]:
        if self.escrow is None:
            raise RuntimeError("no note in escrow")
        return self.escrow, None


class FakeCardTerminal:
    """Runs the next scripted outcome: "approve", "decline", "abort", "timeout" or "hold"."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.reversal_ok = True
        self.completed: list[str] = []
        self.reversed: list[str] = []
        self.held: tuple[str, Money] | None = None
        self.emit: Emit = _no_emit

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def authorise(self, txid: str, amount: Money) -> None:
        outcome = self.script.pop(0) if self.script else "approve"
        self.emit(CardStatus("Bitte Karte einstecken", 0x0A))
        if outcome == "hold":  # the customer is still at the PIN pad
            self.held = (txid, amount)
            return
        self.emit(CardStatus("Bitte PIN eingeben", 0x01))
        self._finish(outcome, txid, amount)

    def release(self, outcome: str) -> None:
        """Resolve a held authorisation."""
        assert self.held is not None
        txid, amount = self.held
        self.held = None
        self._finish(outcome, txid, amount)

    def _finish(self, outcome: str, txid: str, amount: Money) -> None:
        if outcome == "approve":
            self.emit(
                CardApproved(
                    amount,
                    {
                        "card": "girocard",
                        "pan": "XXXXXXXXXXXX1234",
                        "receipt_no": 17,
                        "trace": 4711,
                    },
                )
            )
        elif outcome == "decline":
            self.emit(CardFailed(CardFailure.DECLINED, "Zahlung abgelehnt (05)"))
        elif outcome == "abort":
            self.emit(CardFailed(CardFailure.ABORTED, "Abbruch am Terminal"))
        else:
            self.emit(CardFailed(CardFailure.TIMEOUT, "Zeitüberschreitung"))

    def abort(self) -> None:
        if self.held is not None:
            self.release("abort")

    def complete(self, txid: str) -> None:
        self.completed.append(txid)
        self.emit(CardReceipt(txid, {"customer": ["KUNDENBELEG", "girocard", "Zahlung erfolgt"]}))

    def reverse(self, txid: str) -> None:
        if self.reversal_ok:
            self.reversed.append(txid)
        self.emit(CardReversed(self.reversal_ok, "" if self.reversal_ok else "Storno abgelehnt"))
        self.emit(
            CardReceipt(txid, {"customer": ["KUNDENBELEG", "Storno"]}, kept=not self.reversal_ok)
        )


@dataclass
class FakeKey:
    """A chip key's content: identity, credit value file and top-up log."""

    serial: str
    contract_account: str
    meter_number: str = "1ESY1160000001"
    commodity: Commodity = Commodity.ELECTRICITY
    role: Role = Role.CUSTOMER
    credit: int = 0
    currency: str = "EUR"
    limit: int = 100_000
    log: list[str] = field(default_factory=list)
    meter: MeterReading | None = None  # what the meter last wrote onto the key

    def info(self) -> KeyInfo:
        return KeyInfo(
            serial=self.serial,
            contract_account=self.contract_account,
            meter_number=self.meter_number,
            commodity=self.commodity,
            role=self.role,
            credit=Money(self.credit, self.currency),
            recent_txids=tuple(self.log[-10:]),
            log_nos=tuple(range(max(0, len(self.log) - 10) + 1, len(self.log) + 1)),
            meter=self.meter,
            written=len(self.log),
            log_from=max(0, len(self.log) - 9),  # as a real key's log of ten (see profile.py)
        )


class FakeKeyReader:
    """A chip-key slot. `fail_next`: "refuse", "tear_before_commit" or "tear_after_commit"."""

    def __init__(self) -> None:
        self.key: FakeKey | None = None
        self.fail_next: str | None = None
        self.writes = 0
        self.emit: Emit = _no_emit

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def insert(self, key: FakeKey) -> None:
        self.key = key
        self.emit(KeyDetected())
        self.emit(KeyPresented(key.info()))

    def remove(self) -> None:
        self.key = None
        self.emit(KeyRemoved())

    def read_log(self, timeout: float = 10.0) -> KeyInfo:
        if self.key is None:
            raise KeyNotRead("no key in the reader")
        return self.key.info()

    def write_credit(self, txid: str, amount: Money, *, new: bool = False) -> None:
        key = self.key
        fail, self.fail_next = self.fail_next, None
        if key is None:
            self.emit(KeyWriteFailed(txid, "no key", uncertain=False))
            return
        # the card's own log (its last ten) makes a repeat a no-op, where it is looked at: as
        # the real port, a transaction's first write (`new`) does not look
        if not new and txid in key.log[-10:]:
            self.emit(KeyWritten(txid, Money(key.credit, key.currency)))
            return
        if fail == "refuse" or key.credit + amount.minor > key.limit:
            self.emit(KeyWriteFailed(txid, "refused by the key", uncertain=False))
            return
        if fail == "tear_before_commit":
            self.key = None
            self.emit(KeyWriteFailed(txid, "key removed during write", uncertain=True))
            self.emit(KeyRemoved())
            return
        key.credit += amount.minor
        key.log.append(txid)
        self.writes += 1
        if fail == "tear_after_commit":
            self.key = None
            self.emit(KeyWriteFailed(txid, "key removed during read-back", uncertain=True))
            self.emit(KeyRemoved())
            return
        self.emit(KeyWritten(txid, Money(key.credit, key.currency)))


class FakePrinter:
    """Keeps what it was given; prints nothing when out of paper."""

    def __init__(self) -> None:
        self.paper = True
        self.receipts: dict[str, Document] = {}
        self.documents: list[Document] = []
        self.emit: Emit = _no_emit

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def print_receipt(self, txid: str, doc: Document) -> None:
        if self.paper:
            self.receipts[txid] = doc
        self.emit(ReceiptPrinted(txid, self.paper, "" if self.paper else "printer out of paper"))

    def print_document(self, doc: Document) -> bool:
        if self.paper:
            self.documents.append(doc)
        return self.paper
