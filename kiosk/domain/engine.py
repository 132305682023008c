"""The top-up engine: a pure state machine from events to commands (no I/O, no Kivy).

`TopUpSession.handle(event)` looks the event up in the transition table of the current state;
an event the table does not list raises `InvalidTransition`, a refused customer intent raises
`UserFacingError`, and in both cases the session is unchanged. Journal entries leave as
`Record` commands ahead of every device command, so the runner can commit them first.

Money already taken is never dropped: cancel and walk-away credit what was paid, a key pulled
mid-payment waits for its return and then becomes a pending credit, and cash that arrives
outside a payment is journaled (as a pending credit for the key present, or unattributed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kiosk.domain.errors import InvalidTransition, UserFacingError
from kiosk.domain.events import (
    AcceptorCounter,
    AcceptorTest,
    AmountChosen,
    Cancel,
    CardApproved,
    CardFailed,
    CardReceipt,
    CardReversed,
    CardReversedAfterCredit,
    CardStatus,
    CoinAccepted,
    Command,
    Device,
    DeviceFault,
    DeviceOk,
    DisableCash,
    EnableCash,
    Event,
    Finish,
    KeyDetected,
    KeyInserted,
    KeyReadFailed,
    KeyRemoved,
    KeyWriteFailed,
    KeyWritten,
    Kind,
    LanguageChosen,
    LeaveDiagnostics,
    MethodChosen,
    MoreTime,
    NoteEscrowed,
    NoteReturned,
    NoteStacked,
    PinChecked,
    ReceiptAnswer,
    ReceiptPrinted,
    Record,
    Tick,
)
from kiosk.domain.flows.card import Card
from kiosk.domain.flows.cash import Cash
from kiosk.domain.flows.custody import KeyCustody
from kiosk.domain.flows.payment import Payment
from kiosk.domain.flows.receipts import Receipts
from kiosk.domain.flows.technician import Technician
from kiosk.domain.money import Money
from kiosk.domain.session import (
    _ASK_RECEIPT,
    _CASH_STATES,
    CARD_RECEIPT_WAIT,
    Outcome,
    Receipt,
    Split,
    View,
    _ctr,
    _Ctx,
    _Moving,
    split_payment,
)
from kiosk.domain.site import Site
from kiosk.domain.table import EVERYWHERE, RESTING, TABLE, TAKES_MORE_TIME, State, next_states

__all__ = [
    "CARD_RECEIPT_WAIT",
    "EVERYWHERE",
    "RESTING",
    "TABLE",
    "TAKES_MORE_TIME",
    "Outcome",
    "Receipt",
    "Split",
    "State",
    "TopUpSession",
    "View",
    "next_states",
    "split_payment",
]


_Handler = Callable[["TopUpSession", Any], list[Command]]


class TopUpSession(Payment, Cash, Card, KeyCustody, Technician, Receipts):
    """The top-up flow of one automat, one customer at a time."""

    def __init__(self, site: Site, now: datetime, new_txid: Callable[[], str]) -> None:
        if now.tzinfo is None:
            raise ValueError("the engine's clock must be timezone-aware (UTC)")
        self.site = site
        self._new_txid = new_txid
        self._m = _Moving(State.IDLE, _Ctx(), set(), now, lang=site.default_language)
        self.state = self._resting_state()

    # ------------------------------------------------------------------ public

    def handle(self, event: Event) -> list[Command]:
        """Apply one event; return the commands, journal records first."""
        allowed = TABLE[self.state].get(type(event))
        handler = TRANSITIONS[self.state].get(type(event))
        if allowed is None or handler is None:
            raise InvalidTransition(f"{type(event).__name__} is not expected in state {self.state}")
        before = self.state
        saved = self._m
        self._m = copy.deepcopy(saved)  # the step works on a copy: all or nothing
        try:
            cmds = handler(self, event)
            if self.state != before and self.state not in allowed:
                raise InvalidTransition(f"{type(event).__name__} took {before} to {self.state}: "
                                        "not in the table")  # fmt: skip
            cmds += self._sync_acceptors()
        except Exception:
            self._m = saved
            raise
        return [c for c in cmds if isinstance(c, Record)] + [
            c for c in cmds if not isinstance(c, Record)
        ]

    def view(self) -> View:
        c = self._ctx
        tx = c.tx or c.last
        zero = Money.zero(self.site.currency)
        left = None
        if c.deadline is not None:
            left = max(0, int(c.deadline - self.elapsed + 0.999))
        return View(
            state=self.state,
            key=c.key,
            account=c.account,
            target=c.target,
            paid=tx.paid if tx else zero,
            cash=tx.cash if tx else zero,
            card=tx.card if tx else zero,
            escrow=tx.escrow if tx else None,
            remaining=self._remaining() if c.key and self.state in _CASH_STATES else None,
            max_payable=(
                self._max_payable()
                if c.key and c.key.credit.currency == self.site.currency
                else None
            ),
            split=tx.split if tx else None,
            outcome=c.outcome,
            txid=tx.txid if tx else None,
            notice=c.notice,
            notice_params=dict(c.notice_params),
            refusal=c.refusal,
            card_text=c.card_text,
            card_status=c.card_status,
            pending_total=sum((p.amount for p in c.pending), zero),
            pending_written=c.pending_written,
            methods=self.methods(),
            seconds_left=left,
            warning=left is not None and left <= self.site.timeouts.warning,
            faults=frozenset(self.faults),
            test_mode=c.test_mode,
            test_last=c.test_last,
            test_total=c.test_total,
            receipt_question=self.site.receipt == "ask" and self.state in _ASK_RECEIPT,
            receipt_wanted=c.receipt_wanted,
            receipt=c.receipt,
            lang=self.lang,
        )

    # ------------------------------------------------------------------ helpers

    def _sync_acceptors(self) -> list[Command]:
        """Enable cash with the right channel limit only while a payment can take cash."""
        c = self._ctx
        accepting = (
            self.state in _CASH_STATES
            and c.key is not None
            and self._cash_available()
            and not (c.tx and (c.tx.finishing or c.tx.card_busy))
        )
        limit = self._remaining() if accepting else None
        if self.state == State.DIAGNOSTICS and c.test_mode:
            limit = max(self.site.coins + self.site.notes)  # every channel the site takes
        if limit is not None and limit.minor <= 0:
            limit = None
        wanted = (
            EnableCash(limit, frozenset(d for d in self._cash_devices() if d not in self.faults))
            if limit is not None
            else None
        )
        if wanted == self._cash_limit:
            return []
        self._cash_limit = wanted
        return [wanted] if wanted is not None else [DisableCash()]

    # ------------------------------------------------------------------ handlers

    def on_tick(self, ev: Tick) -> list[Command]:
        if ev.now.tzinfo is None:
            raise ValueError("Tick needs an aware datetime")
        if ev.mono is None:  # no monotonic reading: the wall clock's step is the time passed
            step = (ev.now - self.now).total_seconds()
        else:  # the wall clock may have been set: only the monotonic clock counts
            step = 0.0 if self._mono is None else ev.mono - self._mono
            self._mono = ev.mono
        self.elapsed += max(0.0, step)
        self.now = ev.now
        c = self._ctx
        due = self._receipts_overdue() if self._receipts_due else []
        if self.state in RESTING:
            self.state = self._resting_state()
            return due
        if c.deadline is None or self.elapsed < c.deadline:
            return due
        if c.tx is not None and c.tx.escrow is not None:
            return due  # a note in escrow pauses the clock until it is stacked or returned
        return due + self._on_timeout()

    def _on_timeout(self) -> list[Command]:
        c = self._ctx
        s = self.state
        if s in (State.CHOOSING_AMOUNT, State.CHOOSING_METHOD):
            cmds = []
            if c.tx is not None:  # e.g. card declined, then walked away: nothing paid
                cmds.append(self._rec(Kind.TX_CLOSED, outcome=str(Outcome.CANCELLED), timeout=True))
                c.tx = None
            self._notice("timed_out")
            return cmds + self._close(Outcome.CANCELLED)
        if s == State.CASH:
            assert c.tx is not None
            self._notice("timed_out")
            if not c.tx.paid:
                c.tx.finishing = True
                return self._close(Outcome.CANCELLED)
            return self._finish()
        if s == State.KEY_MISSING:
            assert c.tx is not None
            return self._make_pending("key_not_returned")
        # DONE and KEY_REFUSED end the session
        return self._to_rest()

    def on_more_time(self, _ev: MoreTime) -> list[Command]:
        if self._ctx.deadline is not None:
            timeouts = self.site.timeouts
            seconds = timeouts.payment if self.state == State.CASH else timeouts.choose
            self._deadline(seconds)
        return []

    def on_fault(self, ev: DeviceFault) -> list[Command]:
        self.faults.add(ev.device)
        if self.state in (State.IDLE, State.OUT_OF_SERVICE):
            self.state = self._resting_state()
        if self.state == State.CASH and not self._cash_available():
            self._notice("cash_device_fault")
        tx = self._ctx.tx
        if ev.device == Device.NOTES and tx is not None and tx.escrow is not None:
            # The note's fate is unknown (jam, fraud): only "stacked" is credit. Journal it
            # against the transaction for staff to settle, and let the payment go on.
            note, tx.escrow = tx.escrow, None
            self._notice("note_jammed", value=str(note))
            cmds: list[Command] = [
                self._rec(Kind.FAULT, device=str(ev.device), code=ev.code, text=ev.text,
                          escrow=note.minor, **_ctr(ev.counter))
            ]  # fmt: skip
            if tx.finishing and self.state == State.CASH:
                cmds += self._finish_or_choose_again()
            return cmds
        return [
            self._rec(Kind.FAULT, txid=None, device=str(ev.device), code=ev.code, text=ev.text,
                      **_ctr(ev.counter))
        ]  # fmt: skip

    def on_device_ok(self, ev: DeviceOk) -> list[Command]:
        was = ev.device in self.faults
        self.faults.discard(ev.device)
        if self.state in (State.IDLE, State.OUT_OF_SERVICE):
            self.state = self._resting_state()
        if not was:
            return []
        return [self._rec(Kind.FAULT, txid=None, device=str(ev.device), cleared=True)]

    def on_reversed_after_credit(self, ev: CardReversedAfterCredit) -> list[Command]:
        """Credit went onto the key but the terminal gave the money back: journal the claim.

        The journal turns it into open debt on the contract account, recovered from later
        top-ups like any other claim; nothing about the current customer changes.
        """
        return [
            Record(
                Kind.CARD_REVERSED,
                txid=ev.txid,
                key=None,
                amount=ev.amount,
                data={"after_credit": True, "reason": ev.reason},
            )
        ]

    # ------------------------------------------------------------------ technician

    def ignore(self, _ev: Event) -> list[Command]:
        return []

    # ------------------------------------------------------------------ language and receipts

    def on_acceptor_counter(self, ev: AcceptorCounter) -> list[Command]:
        """Journal where a cash device's events start (a restart resumes after the last one)."""
        data = {"device": str(ev.device), "counter": ev.counter}
        return [Record(Kind.ACCEPTOR_COUNTER, data=data)]

    def on_language(self, ev: LanguageChosen) -> list[Command]:
        if ev.lang not in self.site.languages:
            raise UserFacingError("language_not_offered", lang=ev.lang)
        self.lang = ev.lang
        return []


H = TopUpSession
#: Who handles each event. Which states take it, and where it may lead, is the table's
#: (kiosk/domain/table.py); only these few states hand an event to another handler.
HANDLERS: dict[type[Event], _Handler] = {
    Tick: H.on_tick, DeviceFault: H.on_fault, DeviceOk: H.on_device_ok, CoinAccepted: H.on_coin,
    NoteStacked: H.on_note_stacked, NoteEscrowed: H.on_note_escrowed,
    NoteReturned: H.on_note_returned, CardReversedAfterCredit: H.on_reversed_after_credit,
    CardReceipt: H.on_card_receipt, ReceiptPrinted: H.on_receipt_printed,
    LanguageChosen: H.on_language, AcceptorCounter: H.on_acceptor_counter,
    KeyDetected: H.on_key_detected, KeyInserted: H.on_key_inserted,
    KeyReadFailed: H.on_key_read_failed, KeyRemoved: H.on_key_removed,
    AmountChosen: H.on_amount, MethodChosen: H.on_method, ReceiptAnswer: H.on_receipt_answer,
    Cancel: H.on_cancel, Finish: H.on_finish, MoreTime: H.on_more_time,
    CardStatus: H.on_card_status, CardApproved: H.on_card_approved,
    CardFailed: H.on_card_failed, CardReversed: H.on_card_reversed,
    KeyWritten: H.on_key_written, KeyWriteFailed: H.on_key_write_failed,
    PinChecked: H.on_pin_checked, AcceptorTest: H.on_acceptor_test,
    LeaveDiagnostics: H.on_leave_diagnostics,
}  # fmt: skip
OTHER_HANDLER: dict[State, dict[type[Event], _Handler]] = {
    # credit owed from earlier visits is being written, not this visit's
    State.WRITING_PENDING: {KeyWritten: H.on_pending_written, KeyWriteFailed: H.on_pending_failed},
    # money is in and the key gone: a key read is its return (or another key)
    State.KEY_MISSING: {KeyInserted: H.on_key_back, KeyDetected: H.ignore, KeyReadFailed: H.ignore},
    # PinEntered never reaches the engine: the kiosk turns it into PinChecked
    State.TECHNICIAN_PIN: {Cancel: H.on_leave_diagnostics, KeyRemoved: H.on_leave_diagnostics},
    State.DIAGNOSTICS: {KeyRemoved: H.on_leave_diagnostics},
}
#: For each state, the events it takes (the table's) and what handles them.
TRANSITIONS: dict[State, dict[type[Event], _Handler]] = {
    state: {event: OTHER_HANDLER.get(state, {}).get(event) or HANDLERS[event] for event in row}
    for state, row in TABLE.items()
}

#: Where each handler may take the automat, from the table: the union of the rows it handles.
#: tests/test_engine_table.py reads every assignment to the state in the handler and the
#: helpers it calls and finds exactly these.
GOES_TO: dict[_Handler, frozenset[State]] = {}
for _state, _row in TRANSITIONS.items():
    for _event, _handler in _row.items():
        GOES_TO[_handler] = GOES_TO.get(_handler, frozenset()) | TABLE[_state][_event]
