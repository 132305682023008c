"""The engine's transition table: for each state, the events it takes and where each may go.

This is the truth about the top-up flow, as data. `TopUpSession.handle` looks an event up
here before it runs the handler (an event a state does not list is refused) and after (a
step to a state the row does not list is refused, and the session is left as it was). A
handler only checks its guards and produces effects; it chooses among the row's next states
(a refused intent, a coin that does not yet reach the target, stay where they are: staying is
always allowed). The screen and the runner ask this module which states rest and which take
more time; kiosk/domain/diagram.py draws the README's state diagram from it, and
tests/test_engine_table.py checks it three ways: against every assignment to the state in the
engine's code, against a breadth-first run of the engine, and the README against the drawing.
"""

from __future__ import annotations

from enum import StrEnum

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
    DeviceFault,
    DeviceOk,
    Event,
    Finish,
    KeyDetected,
    KeyInserted,
    KeyReadFailed,
    KeyRemoved,
    KeyWriteFailed,
    KeyWritten,
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
    Tick,
)


class State(StrEnum):
    IDLE = "idle"
    CLOSED = "closed"
    OUT_OF_SERVICE = "out_of_service"
    READING = "reading"
    KEY_REFUSED = "key_refused"
    WRITING_PENDING = "writing_pending"
    CHOOSING_AMOUNT = "choosing_amount"
    CHOOSING_METHOD = "choosing_method"
    CASH = "cash"
    CARD = "card"
    WRITING = "writing"
    REVERSING = "reversing"
    KEY_MISSING = "key_missing"
    DONE = "done"
    TECHNICIAN_PIN = "technician_pin"  # a technician key: waiting for the PIN
    DIAGNOSTICS = "diagnostics"  # the technician is in; the key's removal ends it


S = State
_Row = dict[type[Event], frozenset[State]]

#: where the automat rests between customers: closed outside the opening hours, out of
#: service without a way to pay or a reader, else idle (the engine chooses by those rules)
RESTING = frozenset({S.IDLE, S.CLOSED, S.OUT_OF_SERVICE})
_STAY: frozenset[State] = frozenset()
#: a payment ends: credit written (or owed), or nothing paid and the customer chooses again
_ENDS = frozenset({S.WRITING, S.DONE})
#: a key read: the customer's choice, a refusal, the technician's PIN, or a credit owed first
_KEY_READ = frozenset({S.CHOOSING_AMOUNT, S.KEY_REFUSED, S.TECHNICIAN_PIN, S.WRITING_PENDING})


def _row(**kinds: frozenset[State]) -> _Row:
    return {_EVENTS[name]: targets for name, targets in kinds.items()}


_EVENTS: dict[str, type[Event]] = {
    e.__name__: e
    for e in (AcceptorCounter, AcceptorTest, AmountChosen, Cancel, CardApproved, CardFailed,
              CardReceipt, CardReversed, CardReversedAfterCredit, CardStatus, CoinAccepted,
              DeviceFault, DeviceOk, Finish, KeyDetected, KeyInserted, KeyReadFailed,
              KeyRemoved, KeyWriteFailed, KeyWritten, LanguageChosen, LeaveDiagnostics,
              MethodChosen, MoreTime, NoteEscrowed, NoteReturned, NoteStacked, PinChecked,
              ReceiptAnswer, ReceiptPrinted, Tick)
}  # fmt: skip

#: What every state takes, staying where it is unless its row says otherwise: time, device
#: health, money (never refused: outside a payment it is journaled as owed to the key present,
#: or as unattributed), the terminal's late answers, receipts and the language.
EVERYWHERE: _Row = _row(
    Tick=_STAY, DeviceFault=_STAY, DeviceOk=_STAY, CoinAccepted=_STAY, NoteStacked=_STAY,
    NoteEscrowed=_STAY, NoteReturned=_STAY, CardReversedAfterCredit=_STAY, CardReceipt=_STAY,
    ReceiptPrinted=_STAY, LanguageChosen=_STAY, AcceptorCounter=_STAY,
)  # fmt: skip

#: At rest: the clock and the devices' health choose among the resting states; a key is read.
_AT_REST: _Row = {
    **EVERYWHERE,
    **_row(Tick=RESTING, DeviceFault=RESTING, DeviceOk=RESTING, KeyRemoved=RESTING),
}
#: The first coin or note while choosing opens a cash payment (with no amount chosen yet)...
_MONEY_OPENS = _row(
    CoinAccepted=frozenset({S.CASH}), NoteStacked=frozenset({S.CASH}),
    NoteEscrowed=frozenset({S.CASH}),
)  # fmt: skip
#: ... and once an amount is chosen, it may already meet it.
_MONEY_OPENS_OR_ENDS = _row(
    CoinAccepted=frozenset({S.CASH, *_ENDS}), NoteStacked=frozenset({S.CASH, *_ENDS}),
    NoteEscrowed=frozenset({S.CASH}),
)  # fmt: skip
#: Ending a cash payment: the credit is written (or owed), or with nothing paid (a note held
#: and then given back) the customer chooses again.
_CASH_ENDS = frozenset({S.CHOOSING_AMOUNT, *_ENDS})
_A_NEW_KEY = _row(
    KeyDetected=frozenset({S.READING}), KeyInserted=_KEY_READ,
    KeyReadFailed=frozenset({S.KEY_REFUSED}), KeyRemoved=RESTING,
)  # fmt: skip

#: The table: {state: {event: the states the event may take it to (besides staying)}}.
TABLE: dict[State, _Row] = {
    S.IDLE: {**_AT_REST, **_A_NEW_KEY},
    # Closed or out of service, a key is not read (the screen says why); the rest as idle.
    S.CLOSED: {**_AT_REST, **_row(KeyDetected=_STAY, KeyInserted=_STAY, KeyReadFailed=_STAY)},
    S.OUT_OF_SERVICE: {
        **_AT_REST,
        **_row(KeyDetected=_STAY, KeyInserted=_STAY, KeyReadFailed=_STAY),
    },
    S.READING: {
        **EVERYWHERE,
        **_row(KeyInserted=_KEY_READ, KeyReadFailed=frozenset({S.KEY_REFUSED}), KeyRemoved=RESTING),
    },  # fmt: skip
    # A reader may report a new insertion without the removal in between (a key re-seated
    # quickly): a refused key's screen takes a fresh read; it stays until the key is taken.
    S.KEY_REFUSED: {**EVERYWHERE, **_A_NEW_KEY},
    # Credit owed from earlier visits is written first, one transaction after the other.
    S.WRITING_PENDING: {
        **EVERYWHERE,
        **_row(
            KeyWritten=frozenset({S.CHOOSING_AMOUNT}),
            KeyWriteFailed=frozenset({S.DONE}),
            KeyRemoved=RESTING,
        ),
    },  # fmt: skip
    S.CHOOSING_AMOUNT: {
        **EVERYWHERE,
        **_MONEY_OPENS,
        **_row(
            AmountChosen=frozenset({S.CHOOSING_METHOD, S.CASH, S.CARD}),
            ReceiptAnswer=_STAY,
            Cancel=frozenset({S.DONE}),
            MoreTime=_STAY,
            KeyRemoved=RESTING,
            Tick=frozenset({S.DONE}),
        ),
    },  # fmt: skip
    S.CHOOSING_METHOD: {
        **EVERYWHERE,
        **_MONEY_OPENS_OR_ENDS,
        **_row(
            MethodChosen=frozenset({S.CASH, S.CARD}),
            ReceiptAnswer=_STAY,
            Cancel=frozenset({S.CHOOSING_AMOUNT}),
            MoreTime=_STAY,
            KeyRemoved=RESTING,
            Tick=frozenset({S.DONE}),
        ),
    },  # fmt: skip
    # Where a coin becomes money (CoinAccepted, NoteStacked): a cash_in record.
    S.CASH: {
        **EVERYWHERE,
        **_row(
            CoinAccepted=_ENDS,
            NoteStacked=_ENDS,
            NoteReturned=_CASH_ENDS,
            DeviceFault=_CASH_ENDS,  # a note stuck in escrow while finishing: the rest ends
            Finish=_ENDS,
            Cancel=_CASH_ENDS,
            ReceiptAnswer=_STAY,
            MoreTime=_STAY,
            KeyRemoved=frozenset({S.KEY_MISSING, *RESTING}),  # money in: wait for the key
            Tick=_ENDS,
        ),
    },  # fmt: skip
    # The terminal is busy: Cancel and a pulled key stop it, and its answer decides.
    S.CARD: {
        **EVERYWHERE,
        **_row(
            CardStatus=_STAY,
            ReceiptAnswer=_STAY,
            Cancel=_STAY,
            KeyRemoved=_STAY,
            CardApproved=frozenset({S.WRITING, S.DONE, S.REVERSING}),
            CardFailed=frozenset({S.CHOOSING_METHOD, S.CASH, S.KEY_MISSING, *RESTING}),
        ),
    },  # fmt: skip
    S.WRITING: {
        **EVERYWHERE,
        **_row(
            KeyWritten=frozenset({S.DONE}),
            KeyWriteFailed=frozenset({S.KEY_MISSING, S.REVERSING, S.DONE}),
            KeyRemoved=frozenset({S.KEY_MISSING}),
        ),
    },  # fmt: skip
    S.REVERSING: {**EVERYWHERE, **_row(CardReversed=frozenset({S.DONE}), KeyRemoved=_STAY)},
    # Money in and the key gone: its return resumes the payment or the write (or finds the
    # write landed); time out makes what was paid a credit owed to the key.
    S.KEY_MISSING: {
        **EVERYWHERE,
        **_row(
            KeyInserted=frozenset({S.CASH, S.WRITING, S.DONE}),
            KeyDetected=_STAY,
            KeyReadFailed=_STAY,
            KeyRemoved=_STAY,
            KeyWritten=frozenset({S.DONE}),
            KeyWriteFailed=_STAY,
            Tick=frozenset({S.DONE}),
        ),
    },  # fmt: skip
    S.DONE: {
        **EVERYWHERE,
        **_A_NEW_KEY,
        **_row(Finish=RESTING, Cancel=RESTING, Tick=RESTING),
    },
    # PinEntered never reaches the engine: the kiosk turns it into PinChecked.
    S.TECHNICIAN_PIN: {
        **EVERYWHERE,
        **_row(
            PinChecked=frozenset({S.DIAGNOSTICS}), Cancel=RESTING, KeyRemoved=RESTING, Tick=RESTING
        ),
    },  # fmt: skip
    S.DIAGNOSTICS: {
        **EVERYWHERE,
        **_row(AcceptorTest=_STAY, LeaveDiagnostics=RESTING, KeyRemoved=RESTING),
    },
}

#: where a customer may ask for more time (the states that take MoreTime)
TAKES_MORE_TIME = frozenset(s for s, row in TABLE.items() if MoreTime in row)


def next_states(state: State, event: type[Event]) -> frozenset[State]:
    """Where `event` may take the automat from `state` (itself included); empty if the state
    does not take the event."""
    row = TABLE[state]
    return frozenset() if event not in row else row[event] | {state}


def moves() -> list[tuple[State, str, State]]:
    """Every (from, event, to) the table allows, staying aside: what the diagram draws."""
    return sorted(
        (src, event.__name__, dst)
        for src, row in TABLE.items()
        for event, targets in row.items()
        for dst in targets
        if dst != src
    )
