"""The top-up session's state and the helpers every part of it uses.

Everything a step may change lives in one `_Moving` (copied for each step and swapped in
whole by `TopUpSession.handle`); `SessionCore` reaches it through `_Through` attributes, so
that the sub-machines (kiosk/domain/flows/) read as if it were their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

from kiosk.domain.events import (
    Account,
    Command,
    Device,
    EnableCash,
    KeyInfo,
    Kind,
    Method,
    PendingCredit,
    Record,
)
from kiosk.domain.money import Money, immutable
from kiosk.domain.site import FeeRule, RecoveryRule, Site
from kiosk.domain.table import State


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
    #: the key's write number when the transaction opened, before any write of it was tried:
    #: a credit it comes to owe cannot be on the key below it (None: no key then)
    key_written: int | None = None

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
    def __get__(self, session: SessionCore, owner: type | None = None) -> T: ...
    def __get__(self, session: SessionCore | None, owner: type | None = None) -> Any:
        if session is None:
            return self
        return getattr(session._m, self.name)  # type: ignore[no-any-return]

    def __set__(self, session: SessionCore, value: T) -> None:
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


class SessionCore:
    """The session's state (through `_m`) and the helpers all its parts use."""

    site: Site
    _m: _Moving
    _new_txid: Callable[[], str]

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

    def __setattr__(self, name: str, value: Any) -> None:
        """Everything a step changes lives in `_m` (copied for each step, swapped in whole):
        a new attribute outside it would escape the step's all-or-nothing."""
        kept = getattr(type(self), name, None)
        if name not in ("_m", "site", "_new_txid") and not (
            isinstance(kept, _Through) or callable(kept)  # through to _m; a test's stand-in
        ):
            raise AttributeError(f"TopUpSession.{name}: a step's state belongs in _Moving")
        object.__setattr__(self, name, value)

    def methods(self) -> tuple[Method, ...]:
        """Payment methods usable right now (site switches and device health)."""
        out = []
        if self._cash_available():
            out.append(Method.CASH)
        if self.site.card_enabled and Device.CARD not in self.faults:
            out.append(Method.CARD)
        return tuple(out)

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

    def _begin_choice(self) -> list[Command]:
        self.state = State.CHOOSING_AMOUNT
        self._deadline(self.site.timeouts.choose)
        return []
