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
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

from kiosk.domain.errors import InvalidTransition, UserFacingError
from kiosk.domain.events import (
    AbortCard,
    AcceptorCounter,
    AcceptorTest,
    Account,
    AmountChosen,
    AuthoriseCard,
    Cancel,
    CardApproved,
    CardFailed,
    CardReceipt,
    CardReversed,
    CardReversedAfterCredit,
    CardStatus,
    CoinAccepted,
    Command,
    CompleteCard,
    Device,
    DeviceFault,
    DeviceOk,
    DisableCash,
    EnableCash,
    Event,
    Finish,
    KeyDetected,
    KeyInfo,
    KeyInserted,
    KeyReadFailed,
    KeyRemoved,
    KeyStatus,
    KeyWriteFailed,
    KeyWritten,
    Kind,
    LanguageChosen,
    LeaveDiagnostics,
    Method,
    MethodChosen,
    MoreTime,
    NoteEscrowed,
    NoteReturned,
    NoteStacked,
    PendingCredit,
    PinChecked,
    PrintReceipt,
    ReceiptAnswer,
    ReceiptPrinted,
    Record,
    ReturnNote,
    ReverseCard,
    Role,
    StackNote,
    Tick,
    WriteKey,
)
from kiosk.domain.money import Money, immutable
from kiosk.domain.site import FeeRule, RecoveryRule, Site
from kiosk.domain.table import EVERYWHERE, RESTING, TABLE, TAKES_MORE_TIME, State, next_states

__all__ = ["EVERYWHERE", "RESTING", "TABLE", "TAKES_MORE_TIME", "State", "next_states"]


class Outcome(StrEnum):
    COMPLETED = "completed"  # credit on the key
    PENDING = "pending"  # money safe, credit written at the next insertion
    REVERSED = "reversed"  # card payment given back, nothing charged
    CANCELLED = "cancelled"  # nothing was paid


@immutable
@dataclass(frozen=True)
class Split:
    """How a payment is allocated: fee (gross, with its net and VAT), debt repaid, key credit."""

    paid: Money
    fee: Money
    fee_net: Money
    fee_vat: Money
    debt: Money
    credit: Money

    def as_data(self) -> dict[str, Any]:
        return {
            "paid": self.paid.minor,
            "fee": self.fee.minor,
            "fee_net": self.fee_net.minor,
            "fee_vat": self.fee_vat.minor,
            "debt": self.debt.minor,
            "credit": self.credit.minor,
        }


def split_payment(
    paid: Money, debt: Money, fee: FeeRule, recovery: RecoveryRule, *, charge_fee: bool = True
) -> Split:
    """Allocate `paid`: the fee first, then a share of the rest (floored, capped) to the debt.

    Worked example: 20.00 paid, no fee, 25 % recovery, 7.00 debt -> 5.00 debt, 15.00 credit.
    """
    cur = paid.currency
    zero = Money.zero(cur)
    if paid.minor < 0 or debt.minor < 0:
        raise ValueError("paid and debt must not be negative")
    fee_gross = fee.gross.min(paid) if charge_fee else zero
    fee_net = fee.net if fee_gross == fee.gross else zero
    if fee_gross and fee_net == zero:  # partial fee: split VAT proportionally, floored net
        fee_net = Money(fee_gross.minor * 10000 // (10000 + fee.vat_bp), cur)
    rest = paid - fee_gross
    share = Money(rest.minor * recovery.share_bp // 10000, cur)
    if recovery.cap is not None:
        share = share.min(recovery.cap)
    recovered = share.min(debt)
    return Split(
        paid=paid,
        fee=fee_gross,
        fee_net=fee_net,
        fee_vat=fee_gross - fee_net,
        debt=recovered,
        credit=rest - recovered,
    )


@dataclass
class _Tx:
    txid: str
    target: Money | None
    method: Method
    cash: Money
    card: Money
    escrow: Money | None = None
    finishing: bool = False
    split: Split | None = None
    card_busy: bool = False

    @property
    def paid(self) -> Money:
        return self.cash + self.card


@dataclass
class _Ctx:
    """What one customer session knows; reset when the session ends."""

    key: KeyInfo | None = None
    account: Account | None = None
    target: Money | None = None
    tx: _Tx | None = None
    pending: list[PendingCredit] = field(default_factory=list)
    pending_written: Money | None = None
    deadline: float | None = None  # on the engine's elapsed-time clock (`TopUpSession.elapsed`)
    notice: str | None = None
    notice_params: dict[str, Any] = field(default_factory=dict)
    card_text: str = ""
    card_status: int | None = None  # the terminal's last status code
    outcome: Outcome | None = None
    refusal: str | None = None
    resume: State | None = None
    key_gone: bool = False
    last: _Tx | None = None
    test_mode: bool = False  # diagnostics: acceptors take test money
    test_last: Money | None = None
    test_total: Money | None = None
    receipt_wanted: bool | None = None  # the answer to "receipt?" (None: not answered)
    receipt: str | None = None  # the last transaction's receipt: printing, printed, ...


T = TypeVar("T")


@dataclass
class _Moving:
    """Everything a step may change, in one object: `handle` gives the handler a copy and keeps
    it only if the step succeeds, so a failed step leaves nothing half-changed (no hand-kept
    list of fields to save and restore)."""

    state: State
    ctx: _Ctx
    faults: set[Device]
    now: datetime
    #: seconds the engine has seen pass: its timeouts run on this, not on the wall clock, so a
    #: clock set back or forward neither stretches nor cuts a customer's time
    elapsed: float = 0.0
    mono: float | None = None  # the last tick's monotonic reading
    cash_limit: EnableCash | None = None  # what the acceptors were last told
    #: the customer's language (the screen's); back to the site's default between customers
    lang: str = "de"
    #: card receipts waiting for the terminal's text: txid -> (language, print by `elapsed`)
    receipts_due: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: the card terminal's receipts already journaled (the last few transactions)
    card_receipts: list[str] = field(default_factory=list)


class _Through(Generic[T]):
    """A session attribute that lives in its `_Moving`."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, session: None, owner: type) -> _Through[T]: ...
    @overload
    def __get__(self, session: TopUpSession, owner: type | None = None) -> T: ...
    def __get__(self, session: TopUpSession | None, owner: type | None = None) -> Any:
        if session is None:
            return self
        return getattr(session._m, self.name)  # type: ignore[no-any-return]

    def __set__(self, session: TopUpSession, value: T) -> None:
        setattr(session._m, self.name, value)


class Receipt(StrEnum):
    """What became of a transaction's receipt, for the done screen."""

    PRINTING = "printing"
    PRINTED = "printed"
    NOT_PRINTED = "not_printed"  # no paper, printer offline: staff can reprint it
    DECLINED = "declined"


#: how long a card payment's receipt waits for the terminal's receipt text (seconds)
CARD_RECEIPT_WAIT = 15.0


@dataclass(frozen=True)
class View:
    """A snapshot of the session for the screen; derived, never written back."""

    state: State
    key: KeyInfo | None
    account: Account | None
    target: Money | None
    paid: Money
    cash: Money
    card: Money
    escrow: Money | None
    remaining: Money | None
    max_payable: Money | None  # the most this key can take now (site maximum, room on the key)
    split: Split | None
    outcome: Outcome | None
    txid: str | None
    notice: str | None
    notice_params: dict[str, Any]
    refusal: str | None
    card_text: str
    card_status: int | None
    pending_total: Money
    pending_written: Money | None
    methods: tuple[Method, ...]
    seconds_left: int | None
    warning: bool
    faults: frozenset[Device]
    test_mode: bool = False
    test_last: Money | None = None  # the last coin or note of the acceptor test
    test_total: Money | None = None
    receipt_question: bool = False  # the site asks "receipt?" and the payment is still open
    receipt_wanted: bool | None = None
    receipt: str | None = None  # Receipt, once the transaction is closed
    lang: str = "de"


def _ctr(counter: int | None) -> dict[str, Any]:
    """The acceptor's event counter with a money entry: a restart resumes after it."""
    return {} if counter is None else {"counter": counter}


_CASH_STATES = frozenset({State.CHOOSING_AMOUNT, State.CHOOSING_METHOD, State.CASH})
#: where a site that asks "receipt?" takes the answer: before the payment ends
_ASK_RECEIPT = frozenset({*_CASH_STATES, State.CARD})
_Handler = Callable[["TopUpSession", Any], list[Command]]


class TopUpSession:
    """The top-up flow of one automat, one customer at a time."""

    def __init__(self, site: Site, now: datetime, new_txid: Callable[[], str]) -> None:
        if now.tzinfo is None:
            raise ValueError("the engine's clock must be timezone-aware (UTC)")
        self.site = site
        self._new_txid = new_txid
        self._m = _Moving(State.IDLE, _Ctx(), set(), now, lang=site.default_language)
        self.state = self._resting_state()

    def __setattr__(self, name: str, value: Any) -> None:
        """Everything a step changes lives in `_m` (copied for each step, swapped in whole):
        a new attribute outside it would escape the step's all-or-nothing."""
        kept = getattr(type(self), name, None)
        if name not in ("_m", "site", "_new_txid") and not (
            isinstance(kept, _Through) or callable(kept)  # through to _m; a test's stand-in
        ):
            raise AttributeError(f"TopUpSession.{name}: a step's state belongs in _Moving")
        object.__setattr__(self, name, value)

    state = _Through[State]("state")
    _ctx = _Through[_Ctx]("ctx")
    faults = _Through[set[Device]]("faults")
    now = _Through[datetime]("now")
    elapsed = _Through[float]("elapsed")
    _mono = _Through[float | None]("mono")
    _cash_limit = _Through["EnableCash | None"]("cash_limit")
    lang = _Through[str]("lang")
    _receipts_due = _Through[dict[str, tuple[str, float]]]("receipts_due")
    _card_receipts = _Through[list[str]]("card_receipts")

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

    def methods(self) -> tuple[Method, ...]:
        """Payment methods usable right now (site switches and device health)."""
        out = []
        if self._cash_available():
            out.append(Method.CASH)
        if self.site.card_enabled and Device.CARD not in self.faults:
            out.append(Method.CARD)
        return tuple(out)

    # ------------------------------------------------------------------ helpers

    def _cash_devices(self) -> list[Device]:
        d = self.site.devices
        return [dev for dev, conf in ((Device.COIN, d.coin), (Device.NOTES, d.notes)) if conf]

    def _cash_available(self) -> bool:
        return self.site.cash_enabled and any(d not in self.faults for d in self._cash_devices())

    def _serviceable(self) -> bool:
        return not {Device.READER, Device.SYSTEM} & self.faults and bool(self.methods())

    def _resting_state(self) -> State:
        """One of RESTING: closed outside the opening hours, out of service without a way
        to pay or a reader, else idle."""
        if not self.site.hours.is_open(self.now):
            return State.CLOSED
        if not self._serviceable():
            return State.OUT_OF_SERVICE
        return State.IDLE

    def _to_rest(self) -> list[Command]:
        self._ctx = _Ctx()
        self.lang = self.site.default_language
        self.state = self._resting_state()
        return []

    def _deadline(self, seconds: int | None) -> None:
        self._ctx.deadline = None if seconds is None else self.elapsed + seconds

    def _notice(self, key: str | None, **params: Any) -> None:
        self._ctx.notice = key
        self._ctx.notice_params = params

    def _rec(
        self, kind: Kind, amount: Money | None = None, txid: str | None = None, **data: Any
    ) -> Record:
        c = self._ctx
        if txid is None and c.tx is not None:
            txid = c.tx.txid
        return Record(
            kind, txid=txid, key=c.key.serial if c.key else None, amount=amount, data=data
        )

    def _max_payable(self) -> Money:
        """The most this key can take now: the site maximum and the room left on the key."""
        key = self._ctx.key
        assert key is not None
        room = (self.site.key_credit_limit - key.credit).max(Money.zero(self.site.currency))
        return self.site.max_topup.min(room + self.site.fee.gross)

    def _remaining(self) -> Money:
        tx = self._ctx.tx
        paid = tx.paid if tx else Money.zero(self.site.currency)
        held = tx.escrow if tx and tx.escrow else Money.zero(self.site.currency)
        cap = self._ctx.target if self._ctx.target is not None else self._max_payable()
        return (cap - paid - held).max(Money.zero(self.site.currency))

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

    def _open_tx(self, method: Method) -> list[Command]:
        c = self._ctx
        if c.tx is not None:
            c.tx.method = method
            return []
        zero = Money.zero(self.site.currency)
        c.tx = _Tx(self._new_txid(), c.target, method, zero, zero)
        return [
            self._rec(
                Kind.TX_OPENED,
                method=str(method),
                lang=self.lang,
                target=c.target.minor if c.target else None,
                contract_account=c.key.contract_account if c.key else None,
                **({"meter": c.key.meter.as_data()} if c.key and c.key.meter else {}),
                # the key's write number now: a credit this transaction comes to owe is not
                # on the key above it (reconciliation after a crash reads it from here)
                **({"key_written": c.key.written} if c.key else {}),
            )
        ]

    def _close(self, outcome: Outcome, **data: Any) -> list[Command]:
        """Close the transaction (if any) and show the done screen."""
        c = self._ctx
        cmds: list[Command] = []
        tx = c.tx
        if tx is not None:
            if outcome == Outcome.CANCELLED and tx.paid:
                raise AssertionError(f"transaction {tx.txid} took money and cannot be cancelled")
            alloc = tx.split.as_data() if tx.split and outcome != Outcome.REVERSED else {}
            receipt = self._receipt_for(tx, outcome)
            extra: dict[str, Any] = {**alloc, **data}
            if receipt is not None:
                extra["receipt"] = "declined" if receipt == Receipt.DECLINED else "wanted"
            cmds.append(self._rec(Kind.TX_CLOSED, outcome=str(outcome), lang=self.lang, **extra))
            if outcome == Outcome.REVERSED and tx.split is not None:
                self._owe_again(tx.split)  # the money went back: so did its debt repayment
            if receipt == Receipt.PRINTING:
                cmds += self._print(tx)
        c.last, c.tx = tx, None
        c.outcome = outcome
        self.state = State.DONE
        self._deadline(self.site.timeouts.message)
        return cmds

    def _receipt_for(self, tx: _Tx, outcome: Outcome) -> Receipt | None:
        """Print or not: always where the site says so and whenever credit is left owed (the
        receipt is the customer's proof); otherwise as the customer answered (unanswered:
        print)."""
        c = self._ctx
        if outcome == Outcome.CANCELLED or self.site.receipt == "none":
            c.receipt = None
            return None
        wanted = (
            self.site.receipt == "always"
            or outcome == Outcome.PENDING
            or c.receipt_wanted is not False
        )
        c.receipt = Receipt.PRINTING if wanted else Receipt.DECLINED
        return c.receipt

    def _print(self, tx: _Tx) -> list[Command]:
        """A card payment's receipt waits (a while) for the terminal's receipt text."""
        if (tx.card or tx.method == Method.CARD) and tx.txid not in self._card_receipts:
            self._receipts_due[tx.txid] = (self.lang, self.elapsed + CARD_RECEIPT_WAIT)
            return []
        return [PrintReceipt(tx.txid, self.lang)]

    def _receipts_overdue(self) -> list[Command]:
        late = [t for t, (_l, by) in self._receipts_due.items() if self.elapsed >= by]
        return [PrintReceipt(t, self._receipts_due.pop(t)[0]) for t in late]

    def _allocate(self) -> list[Command]:
        """Fix the split of what was paid (fee only for a full top-up) and journal it."""
        tx = self._ctx.tx
        assert tx is not None and tx.split is None
        c = self._ctx
        debt = c.account.debt if c.account else Money.zero(self.site.currency)
        charge = tx.paid >= self.site.min_topup
        tx.split = split_payment(
            tx.paid, debt, self.site.fee, self.site.recovery, charge_fee=charge
        )
        if c.account is not None:  # what this split repays is not owed by later money
            c.account = replace(c.account, debt=debt - tx.split.debt)
        return [
            self._rec(
                Kind.SPLIT, tx.split.credit, **tx.split.as_data(), vat_bp=self.site.fee.vat_bp
            )
        ]

    def _owe_again(self, split: Split | None) -> None:
        """A split dropped (its payment given back): the debt it would have repaid is owed."""
        c = self._ctx
        if split is not None and split.debt and c.account is not None:
            c.account = replace(c.account, debt=c.account.debt + split.debt)

    def _start_write(self) -> list[Command]:
        tx = self._ctx.tx
        assert tx is not None
        cmds = self._allocate()
        assert tx.split is not None
        if tx.split.credit.minor == 0:  # everything went to fee and debt: nothing to write
            if tx.card:
                cmds.append(CompleteCard(tx.txid))
            return cmds + self._close(Outcome.COMPLETED)
        self.state = State.WRITING
        self._deadline(None)
        return [*cmds, WriteKey(tx.txid, tx.split.credit)]

    def _make_pending(self, reason: str) -> list[Command]:
        """The money is safe but not on the key: owe it as a pending credit."""
        tx = self._ctx.tx
        assert tx is not None
        cmds: list[Command] = [] if tx.split else self._allocate()
        assert tx.split is not None
        if tx.split.credit.minor > 0:
            key = self._ctx.key
            bound = {"key_written": key.written} if key else {}
            cmds.append(self._rec(Kind.PENDING_CREDIT, tx.split.credit, reason=reason, **bound))
        if tx.card:
            cmds.append(CompleteCard(tx.txid))
        # everything went to fee and debt: nothing is owed to the key, the top-up is complete
        return cmds + self._close(Outcome.PENDING if tx.split.credit.minor else Outcome.COMPLETED)

    def _written(self, credit_after: Money, **data: Any) -> list[Command]:
        c = self._ctx
        tx = c.tx
        assert tx is not None and tx.split is not None and c.key is not None
        c.key = replace(c.key, credit=credit_after, recent_txids=(*c.key.recent_txids, tx.txid),
                        written=c.key.written + 1)  # fmt: skip
        cmds: list[Command] = [
            self._rec(Kind.KEY_WRITTEN, tx.split.credit, credit_after=credit_after.minor, **data)
        ]
        if tx.card:
            cmds.append(CompleteCard(tx.txid))
        return cmds + self._close(Outcome.COMPLETED)

    def _late_money(
        self, value: Money, medium: str, channel: int, counter: int | None = None
    ) -> list[Command]:
        """Cash that arrived when no payment could take it: never dropped."""
        c = self._ctx
        if c.key is None or self.state == State.KEY_REFUSED or c.key.role != Role.CUSTOMER:
            return [
                self._rec(
                    Kind.CASH_UNATTRIBUTED, value, medium=medium, channel=channel, **_ctr(counter)
                )
            ]
        # A key is (or was just) present: the money becomes a pending credit for it.
        saved_tx, saved_last, saved_state = c.tx, c.last, self.state
        saved_deadline, saved_outcome, saved_receipt = c.deadline, c.outcome, c.receipt
        c.tx = None
        cmds = self._open_tx(Method.CASH)
        assert c.tx is not None
        c.tx.cash = value
        cmds.append(
            self._rec(
                Kind.CASH_IN, value, medium=medium, channel=channel, late=True, **_ctr(counter)
            )
        )
        cmds += self._make_pending("late_cash")
        c.tx, c.last, self.state = saved_tx, saved_last, saved_state
        c.deadline, c.outcome, c.receipt = saved_deadline, saved_outcome, saved_receipt
        return cmds  # its records, and its receipt (the customer's proof of a credit owed)

    def _money_in(
        self, value: Money, medium: str, channel: int, counter: int | None = None
    ) -> list[Command]:
        """A coin accepted or a note stacked: journal it against the right transaction."""
        if value.currency != self.site.currency:
            raise ValueError(f"{medium} in {value.currency} at a {self.site.currency} site")
        c = self._ctx
        cmds: list[Command] = []
        if self.state == State.DIAGNOSTICS:  # acceptor test: counted, never credited
            assert c.key is not None
            c.test_last = value
            c.test_total = (c.test_total or Money.zero(value.currency)) + value
            return [
                Record(
                    Kind.TEST_CASH,
                    amount=value,
                    data={
                        "medium": medium,
                        "channel": channel,
                        "who": f"key {c.key.serial}",
                        **_ctr(counter),
                    },  # fmt: skip
                )
            ]
        if self.state in (State.CHOOSING_AMOUNT, State.CHOOSING_METHOD):
            cmds += self._open_tx(Method.CASH)
            self.state = State.CASH
        tx = c.tx
        if tx is None or tx.split is not None:
            return cmds + self._late_money(value, medium, channel, counter)
        tx.cash += value
        cmds.append(self._rec(Kind.CASH_IN, value, medium=medium, channel=channel, **_ctr(counter)))
        if self.state == State.CASH:
            self._notice(None)
            self._deadline(self.site.timeouts.payment)
            target_met = c.target is not None and tx.paid >= c.target
            if target_met or tx.finishing:
                cmds += self._finish()
        return cmds

    def _finish(self) -> list[Command]:
        """Stop taking cash and credit what was paid (after an escrowed note is stacked)."""
        tx = self._ctx.tx
        assert tx is not None
        tx.finishing = True
        if tx.escrow is not None:
            return []  # the note is being stacked: it counts, the write follows its result
        assert tx.paid, "a payment with nothing paid ends in _finish_or_choose_again"
        return self._start_write()

    def _finish_or_choose_again(self) -> list[Command]:
        """As `_finish`; with nothing paid (a held note given back or stuck), the transaction
        closes and the customer chooses again."""
        c = self._ctx
        tx = c.tx
        assert tx is not None
        if tx.paid or tx.escrow is not None:
            return self._finish()
        self.state = State.CHOOSING_AMOUNT
        self._deadline(self.site.timeouts.choose)
        c.tx = None
        return [self._rec(Kind.TX_CLOSED, txid=tx.txid, outcome=str(Outcome.CANCELLED))]

    def _refuse_key(self, reason: str, **data: Any) -> list[Command]:
        self._ctx.refusal = reason
        self.state = State.KEY_REFUSED
        self._deadline(None)
        return [self._rec(Kind.KEY_REFUSED, reason=reason, **data)]

    def _begin_choice(self) -> list[Command]:
        self.state = State.CHOOSING_AMOUNT
        self._deadline(self.site.timeouts.choose)
        return []

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

    def on_key_detected(self, _ev: KeyDetected) -> list[Command]:
        if self.state in (State.CLOSED, State.OUT_OF_SERVICE):
            return []
        self._ctx = _Ctx()
        self.state = State.READING
        return []

    def on_key_read_failed(self, ev: KeyReadFailed) -> list[Command]:
        if self.state in (State.CLOSED, State.OUT_OF_SERVICE):
            return []
        self._ctx = _Ctx()
        return self._refuse_key("unreadable", detail=ev.reason)

    def on_key_inserted(self, ev: KeyInserted) -> list[Command]:
        if self.state in (State.CLOSED, State.OUT_OF_SERVICE):
            return []  # the screen says closed / out of service; nothing is accepted
        self._ctx = _Ctx(key=ev.key, account=ev.account)
        key, acc = ev.key, ev.account
        if key.role == Role.TECHNICIAN:
            self.state = State.TECHNICIAN_PIN
            self._deadline(self.site.timeouts.choose)
            return []
        if key.role != Role.CUSTOMER:
            return self._refuse_key("technician_key")
        if key.credit.currency != self.site.currency:
            return self._refuse_key("foreign_key", currency=key.credit.currency)
        if acc.status != KeyStatus.ACTIVE:
            return self._refuse_key(str(acc.status), detail=acc.reason)
        cmds: list[Command] = []
        for p in acc.pending:
            if (
                p.key_written is not None
                and key.log_from > p.key_written + 1
                and (p.txid not in key.recent_txids)
            ):
                # More writes since it became owed than the key's log still shows: it may have
                # been written elsewhere (a kiosk that claimed it while this one was offline).
                # Not written here: head office decides (a claim grants it when it is open).
                continue
            if p.txid in key.recent_txids:  # a torn write that did land: settle, do not rewrite
                cmds.append(
                    self._rec(Kind.PENDING_WRITTEN, p.amount, txid=p.txid, found_on_key=True)
                )
                if p.on_key is not None and p.on_key > p.amount:  # more than is still paid
                    cmds.append(
                        self._rec(Kind.CLAIM, p.on_key - p.amount, txid=p.txid,
                                  reason="payment given back, credit found on the key")
                    )  # fmt: skip
            elif p.amount.minor <= 0:  # only a check of the key: the write did not land
                cmds.append(self._rec(Kind.PENDING_WRITTEN, p.amount, txid=p.txid, not_on_key=True))
            else:
                self._ctx.pending.append(p)
        if self._ctx.pending:
            self.state = State.WRITING_PENDING
            self._deadline(None)
            first = self._ctx.pending[0]
            return [*cmds, WriteKey(first.txid, first.amount)]
        return cmds + self._begin_choice()

    def on_pending_written(self, ev: KeyWritten) -> list[Command]:
        c = self._ctx
        assert c.key is not None
        p = c.pending[0]
        if ev.txid != p.txid:
            raise ValueError(f"key written for {ev.txid}, expected {p.txid}")
        c.pending.pop(0)
        c.key = replace(c.key, credit=ev.credit_after, recent_txids=(*c.key.recent_txids, p.txid),
                        written=c.key.written + 1)  # fmt: skip
        c.pending_written = (c.pending_written or Money.zero(self.site.currency)) + p.amount
        cmds: list[Command] = [
            self._rec(
                Kind.PENDING_WRITTEN, p.amount, txid=p.txid, credit_after=ev.credit_after.minor
            )
        ]
        if c.pending:
            nxt = c.pending[0]
            return [*cmds, WriteKey(nxt.txid, nxt.amount)]
        self._notice("pending_written", amount=str(c.pending_written))
        return cmds + self._begin_choice()

    def on_pending_failed(self, ev: KeyWriteFailed) -> list[Command]:
        c = self._ctx
        cmds: list[Command] = [
            self._rec(Kind.WRITE_FAILED, txid=ev.txid, reason=ev.reason, uncertain=ev.uncertain)
        ]
        self._notice("pending_not_written")
        c.outcome = Outcome.PENDING
        self.state = State.DONE
        self._deadline(self.site.timeouts.message)
        return cmds

    def on_key_removed(self, _ev: KeyRemoved) -> list[Command]:
        c = self._ctx
        s = self.state
        if s == State.CARD:  # the terminal is busy: stop it first, its answer decides
            c.key_gone = True
            return [] if not c.tx or not c.tx.card_busy else [AbortCard()]
        if s in (State.KEY_MISSING, State.REVERSING):
            return []  # already waiting; the clock keeps running
        if s == State.WRITING or (c.tx is not None and (c.tx.paid or c.tx.escrow)):
            # Money taken (a note being stacked counts too): wait for this key to come back.
            c.resume = State.WRITING if s == State.WRITING else State.CASH
            self.state = State.KEY_MISSING
            self._deadline(self.site.timeouts.key_missing)
            return []
        cmds: list[Command] = []
        if c.tx is not None:  # opened but nothing paid (e.g. card declined, then key pulled)
            cmds.append(self._rec(Kind.TX_CLOSED, outcome=str(Outcome.CANCELLED), key_removed=True))
        return cmds + self._to_rest()

    def on_amount(self, ev: AmountChosen) -> list[Command]:
        c = self._ctx
        site = self.site
        if ev.amount is None:
            if not self._cash_available():
                raise UserFacingError("cash_not_available")
            c.target = None
            self.state = State.CASH
            self._deadline(site.timeouts.payment)
            return self._open_tx(Method.CASH)
        amount = ev.amount
        if amount.currency != site.currency:
            raise UserFacingError("wrong_currency", currency=amount.currency)
        if amount < site.min_topup:
            raise UserFacingError("below_minimum", minimum=str(site.min_topup))
        limit = self._max_payable()
        if amount > limit:
            raise UserFacingError("above_maximum", maximum=str(limit))
        if amount.minor % site.amount_step.minor:
            raise UserFacingError("not_a_step", step=str(site.amount_step))
        methods = self.methods()
        if not methods:
            raise UserFacingError("out_of_service")
        c.target = amount
        self._notice(None)
        if len(methods) == 1:
            return self._start_method(methods[0])
        self.state = State.CHOOSING_METHOD
        self._deadline(site.timeouts.choose)
        return []

    def on_method(self, ev: MethodChosen) -> list[Command]:
        if ev.method == Method.CARD and not self.site.card_enabled:
            raise UserFacingError("card_not_offered")
        if ev.method not in self.methods():
            raise UserFacingError(f"{ev.method}_not_available")
        return self._start_method(ev.method)

    def _start_method(self, method: Method) -> list[Command]:
        c = self._ctx
        cmds = self._open_tx(method)
        tx = c.tx
        assert tx is not None
        self._notice(None)
        if method == Method.CASH:
            self.state = State.CASH
            self._deadline(self.site.timeouts.payment)
            return cmds
        assert c.target is not None
        self.state = State.CARD
        self._deadline(None)
        c.card_text = ""
        c.card_status = None
        tx.card_busy = True
        return [*cmds, AuthoriseCard(tx.txid, c.target - tx.paid)]

    def on_cancel(self, _ev: Cancel) -> list[Command]:
        c = self._ctx
        s = self.state
        if s == State.CHOOSING_AMOUNT:
            self._notice(None)
            return self._close(Outcome.CANCELLED)
        if s == State.CHOOSING_METHOD:
            cmds = []
            if c.tx is not None and not c.tx.paid:
                cmds.append(self._rec(Kind.TX_CLOSED, outcome=str(Outcome.CANCELLED)))
                c.tx = None
            c.target = None
            return cmds + self._begin_choice()
        if s == State.CASH:
            return self._finish_or_choose_again()  # paid money is credited, never refunded as lost
        if s == State.CARD:
            return [AbortCard()]
        if s == State.DONE:
            return self._to_rest()
        raise InvalidTransition(f"Cancel is not expected in state {s}")

    def on_finish(self, _ev: Finish) -> list[Command]:
        c = self._ctx
        if self.state == State.DONE:
            return self._to_rest()
        tx = c.tx
        assert tx is not None
        if not tx.paid and tx.escrow is None:
            raise UserFacingError("nothing_paid")
        held = tx.escrow or Money.zero(self.site.currency)
        if tx.paid + held < self.site.min_topup:
            raise UserFacingError("below_minimum", minimum=str(self.site.min_topup))
        return self._finish()

    def on_coin(self, ev: CoinAccepted) -> list[Command]:
        return self._money_in(ev.value, "coin", ev.channel, ev.counter)

    def on_note_stacked(self, ev: NoteStacked) -> list[Command]:
        tx = self._ctx.tx
        if tx is not None and tx.escrow is not None:
            tx.escrow = None
        return self._money_in(ev.value, "note", ev.channel, ev.counter)

    def on_note_escrowed(self, ev: NoteEscrowed) -> list[Command]:
        c = self._ctx
        if self.state == State.DIAGNOSTICS:
            return [StackNote() if c.test_mode else ReturnNote()]
        takes_cash = (
            self.state in _CASH_STATES
            and c.key is not None
            and self._cash_available()
            and not (c.tx and (c.tx.finishing or c.tx.escrow or c.tx.card_busy))
        )
        if not takes_cash:
            return [ReturnNote()]
        if ev.value > self._remaining():
            self._notice("note_too_big", value=str(ev.value), room=str(self._remaining()))
            return [ReturnNote()]
        cmds: list[Command] = []
        if self.state != State.CASH:
            cmds += self._open_tx(Method.CASH)
            self.state = State.CASH
        assert c.tx is not None
        c.tx.escrow = ev.value
        self._notice(None)
        self._deadline(self.site.timeouts.payment)
        return [*cmds, StackNote()]

    def on_note_returned(self, _ev: NoteReturned) -> list[Command]:
        tx = self._ctx.tx
        if tx is None or tx.escrow is None:
            return []
        tx.escrow = None
        if tx.finishing and self.state == State.CASH:
            return self._finish_or_choose_again()
        return []

    def on_card_status(self, ev: CardStatus) -> list[Command]:
        self._ctx.card_text = ev.text
        self._ctx.card_status = ev.code
        return []

    def on_card_approved(self, ev: CardApproved) -> list[Command]:
        c = self._ctx
        tx = c.tx
        assert tx is not None
        if ev.amount.currency != self.site.currency:
            raise ValueError(
                f"card approved in {ev.amount.currency} at a {self.site.currency} site"
            )
        tx.card_busy = False
        tx.card += ev.amount
        cmds: list[Command] = [self._rec(Kind.CARD_APPROVED, ev.amount, **ev.receipt)]
        if c.key_gone:  # the key left during the payment: give the money back
            self.state = State.REVERSING
            return [*cmds, ReverseCard(tx.txid)]
        return cmds + self._start_write()

    def on_card_failed(self, ev: CardFailed) -> list[Command]:
        c = self._ctx
        tx = c.tx
        assert tx is not None
        tx.card_busy = False
        cmds: list[Command] = [
            self._rec(Kind.CARD_FAILED, outcome=str(ev.outcome), reason=ev.reason)
        ]
        if c.key_gone:
            if tx.paid:  # cash taken before the card attempt stays owed to the key
                c.resume = State.CASH
                self.state = State.KEY_MISSING
                self._deadline(self.site.timeouts.key_missing)
                return cmds
            cmds.append(self._rec(Kind.TX_CLOSED, outcome=str(Outcome.CANCELLED), key_removed=True))
            return cmds + self._to_rest()
        self._notice(f"card_{ev.outcome}", reason=ev.reason)
        if tx.paid:  # coins came in during the card attempt: carry on in cash
            tx.method = Method.CASH
            self.state = State.CASH
            self._deadline(self.site.timeouts.payment)
            return cmds
        self.state = State.CHOOSING_METHOD
        self._deadline(self.site.timeouts.choose)
        return cmds

    def on_key_written(self, ev: KeyWritten) -> list[Command]:
        tx = self._ctx.tx
        if tx is None or ev.txid != tx.txid:
            raise ValueError(f"key written for an unexpected transaction {ev.txid}")
        return self._written(ev.credit_after)

    def on_key_write_failed(self, ev: KeyWriteFailed) -> list[Command]:
        c = self._ctx
        tx = c.tx
        if tx is None or ev.txid != tx.txid:
            raise ValueError(f"write failure for an unexpected transaction {ev.txid}")
        cmds: list[Command] = [
            self._rec(Kind.WRITE_FAILED, reason=ev.reason, uncertain=ev.uncertain)
        ]
        if self.state == State.KEY_MISSING:
            return cmds  # already waiting for the key to come back
        if ev.uncertain:  # may have landed: the key's top-up log decides when it is back
            c.resume = State.WRITING
            self.state = State.KEY_MISSING
            self._deadline(self.site.timeouts.key_missing)
            self._notice("key_removed_early")
            return cmds
        if tx.card:
            self.state = State.REVERSING
            return [*cmds, ReverseCard(tx.txid)]
        return cmds + self._make_pending(ev.reason)

    def on_card_reversed(self, ev: CardReversed) -> list[Command]:
        c = self._ctx
        tx = c.tx
        assert tx is not None
        if not ev.ok:
            cmds: list[Command] = [self._rec(Kind.CARD_REVERSAL_FAILED, tx.card, reason=ev.reason)]
            return cmds + self._make_pending("write_failed_reversal_failed")
        cmds = [self._rec(Kind.CARD_REVERSED, tx.card)]
        tx.card = Money.zero(self.site.currency)
        if tx.cash:  # cash paid alongside the card is still owed
            self._owe_again(tx.split)
            tx.split = None
            return cmds + self._make_pending("write_failed")
        return cmds + self._close(Outcome.REVERSED)

    def on_key_back(self, ev: KeyInserted) -> list[Command]:
        c = self._ctx
        assert c.key is not None and c.tx is not None
        if ev.key.serial != c.key.serial:
            self._notice("wrong_key")
            return []
        c.key = ev.key
        self._notice(None)
        if c.resume == State.CASH:
            self.state = State.CASH
            self._deadline(self.site.timeouts.payment)
            return []
        if c.tx.txid in ev.key.recent_txids:  # the interrupted write did land
            return self._written(ev.key.credit, found_on_key=True)
        assert c.tx.split is not None
        self.state = State.WRITING
        self._deadline(None)
        return [WriteKey(c.tx.txid, c.tx.split.credit)]

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

    def on_pin_checked(self, ev: PinChecked) -> list[Command]:
        """The kiosk checked the PIN (and journaled the attempt)."""
        if ev.ok:
            self.state = State.DIAGNOSTICS
            self._deadline(None)
            self._notice(None)
            return []
        if ev.locked_until is not None:
            self._notice("pin_locked", until=ev.locked_until.isoformat())
        else:
            self._notice("pin_wrong")
        self._deadline(self.site.timeouts.choose)
        return []

    def on_acceptor_test(self, ev: AcceptorTest) -> list[Command]:
        self._ctx.test_mode = ev.on
        return []

    def on_leave_diagnostics(self, _ev: Event) -> list[Command]:
        c = self._ctx
        cmds: list[Command] = []
        if self.state == State.DIAGNOSTICS:
            assert c.key is not None
            cmds.append(
                Record(
                    Kind.AUDIT,
                    data={
                        "action": "exited",
                        "who": f"key {c.key.serial}",
                        "key_removed": isinstance(_ev, KeyRemoved),
                    },
                )
            )
        return cmds + self._to_rest()

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

    def on_receipt_answer(self, ev: ReceiptAnswer) -> list[Command]:
        if self.site.receipt != "ask":
            raise UserFacingError("receipt_not_asked")
        self._ctx.receipt_wanted = ev.wanted
        return []

    def on_card_receipt(self, ev: CardReceipt) -> list[Command]:
        """The terminal's receipt text: journaled, and the receipt printed if it waited."""
        data = {"blocks": ev.blocks, "kept": ev.kept}
        cmds: list[Command] = [Record(Kind.CARD_RECEIPT, txid=ev.txid, data=data)]
        self._card_receipts = [*self._card_receipts[-15:], ev.txid]
        due = self._receipts_due.pop(ev.txid, None)
        if due is not None:
            cmds.append(PrintReceipt(ev.txid, due[0]))
        return cmds

    def on_receipt_printed(self, ev: ReceiptPrinted) -> list[Command]:
        c = self._ctx
        last = c.tx or c.last
        if last is not None and last.txid == ev.txid:
            c.receipt = Receipt.PRINTED if ev.printed else Receipt.NOT_PRINTED
        data: dict[str, Any] = {"printed": ev.printed}
        if ev.reason:
            data["reason"] = ev.reason
        return [Record(Kind.RECEIPT, txid=ev.txid, data=data)]


H = TopUpSession
# Events every state takes: time, device health, and money (which is never refused).
_ALWAYS: dict[type[Event], _Handler] = {
    Tick: H.on_tick,
    DeviceFault: H.on_fault,
    DeviceOk: H.on_device_ok,
    CoinAccepted: H.on_coin,
    NoteStacked: H.on_note_stacked,
    NoteEscrowed: H.on_note_escrowed,
    NoteReturned: H.on_note_returned,
    CardReversedAfterCredit: H.on_reversed_after_credit,
    CardReceipt: H.on_card_receipt,
    ReceiptPrinted: H.on_receipt_printed,
    LanguageChosen: H.on_language,
    AcceptorCounter: H.on_acceptor_counter,
}
_NEW_KEY: dict[type[Event], _Handler] = {
    KeyDetected: H.on_key_detected,
    KeyInserted: H.on_key_inserted,
    KeyReadFailed: H.on_key_read_failed,
    KeyRemoved: H.on_key_removed,
}

#: The transition table: for each state, the events it takes and what handles them.
TRANSITIONS: dict[State, dict[type[Event], _Handler]] = {
    State.IDLE: {**_ALWAYS, **_NEW_KEY},
    State.CLOSED: {**_ALWAYS, **_NEW_KEY},
    State.OUT_OF_SERVICE: {**_ALWAYS, **_NEW_KEY},
    State.READING: {
        **_ALWAYS,
        KeyInserted: H.on_key_inserted,
        KeyReadFailed: H.on_key_read_failed,
        KeyRemoved: H.on_key_removed,
    },
    # A reader may report a new insertion without the removal in between (a key re-seated
    # quickly): a refused key's screen takes a fresh read.
    State.KEY_REFUSED: {**_ALWAYS, **_NEW_KEY},
    State.WRITING_PENDING: {
        **_ALWAYS,
        KeyWritten: H.on_pending_written,
        KeyWriteFailed: H.on_pending_failed,
        KeyRemoved: H.on_key_removed,
    },
    State.CHOOSING_AMOUNT: {
        **_ALWAYS,
        AmountChosen: H.on_amount,
        ReceiptAnswer: H.on_receipt_answer,
        Cancel: H.on_cancel,
        MoreTime: H.on_more_time,
        KeyRemoved: H.on_key_removed,
    },
    State.CHOOSING_METHOD: {
        **_ALWAYS,
        MethodChosen: H.on_method,
        ReceiptAnswer: H.on_receipt_answer,
        Cancel: H.on_cancel,
        MoreTime: H.on_more_time,
        KeyRemoved: H.on_key_removed,
    },
    State.CASH: {
        **_ALWAYS,
        Finish: H.on_finish,
        ReceiptAnswer: H.on_receipt_answer,
        Cancel: H.on_cancel,
        MoreTime: H.on_more_time,
        KeyRemoved: H.on_key_removed,
    },
    State.CARD: {
        **_ALWAYS,
        CardStatus: H.on_card_status,
        ReceiptAnswer: H.on_receipt_answer,
        CardApproved: H.on_card_approved,
        CardFailed: H.on_card_failed,
        Cancel: H.on_cancel,
        KeyRemoved: H.on_key_removed,
    },
    State.WRITING: {
        **_ALWAYS,
        KeyWritten: H.on_key_written,
        KeyWriteFailed: H.on_key_write_failed,
        KeyRemoved: H.on_key_removed,
    },
    State.REVERSING: {
        **_ALWAYS,
        CardReversed: H.on_card_reversed,
        KeyRemoved: H.on_key_removed,
    },
    State.KEY_MISSING: {
        **_ALWAYS,
        KeyInserted: H.on_key_back,
        KeyDetected: H.ignore,
        KeyReadFailed: H.ignore,
        KeyRemoved: H.on_key_removed,
        KeyWritten: H.on_key_written,
        KeyWriteFailed: H.on_key_write_failed,
    },
    State.DONE: {
        **_ALWAYS,
        **_NEW_KEY,
        Finish: H.on_finish,
        Cancel: H.on_cancel,
    },
    # PinEntered never reaches the engine: the kiosk turns it into PinChecked.
    State.TECHNICIAN_PIN: {
        **_ALWAYS,
        PinChecked: H.on_pin_checked,
        Cancel: H.on_leave_diagnostics,
        KeyRemoved: H.on_leave_diagnostics,
    },
    State.DIAGNOSTICS: {
        **_ALWAYS,
        AcceptorTest: H.on_acceptor_test,
        LeaveDiagnostics: H.on_leave_diagnostics,
        KeyRemoved: H.on_leave_diagnostics,
    },
}

if {s: set(row) for s, row in TRANSITIONS.items()} != {s: set(row) for s, row in TABLE.items()}:
    raise ImportError("the engine's handlers and kiosk/domain/table.py list different events")

#: Where each handler may take the automat, from the table: the union of the rows it handles.
#: tests/test_engine_table.py reads every assignment to the state in the handler and the
#: helpers it calls and finds exactly these.
GOES_TO: dict[_Handler, frozenset[State]] = {}
for _state, _row in TRANSITIONS.items():
    for _event, _handler in _row.items():
        GOES_TO[_handler] = GOES_TO.get(_handler, frozenset()) | TABLE[_state][_event]
