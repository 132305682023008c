"""The top-up engine on its own: pure events in, commands out, no I/O."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable
from datetime import timedelta

import pytest

from kiosk.domain.engine import (
    CARD_RECEIPT_WAIT,
    TRANSITIONS,
    Outcome,
    Receipt,
    State,
    TopUpSession,
)
from kiosk.domain.errors import InvalidTransition, MoneyError, UserFacingError
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
    CardFailure,
    CardReceipt,
    CardReversed,
    CardReversedAfterCredit,
    CardStatus,
    CoinAccepted,
    Command,
    Commodity,
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
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from tests.conftest import SATURDAY_MORNING, make_site


def E(minor: int) -> Money:
    return Money(minor, "EUR")


def key(
    serial: str = "K1", credit: int | Money = 350, log: tuple[str, ...] = (), **kw: object
) -> KeyInfo:
    fields: dict[str, object] = dict(
        serial=serial,
        contract_account="4711",
        meter_number="1ESY1160000001",
        commodity=Commodity.ELECTRICITY,
        role=Role.CUSTOMER,
        credit=credit if isinstance(credit, Money) else E(credit),
        recent_txids=log,
    )
    fields.update(kw)
    return KeyInfo(**fields)  # type: ignore[arg-type]


def account(
    status: KeyStatus = KeyStatus.ACTIVE, debt: int = 0, pending: tuple[PendingCredit, ...] = ()
) -> Account:
    return Account(
        status=status, debt=E(debt), reason="lost" if status == "blocked" else "", pending=pending
    )


class Run:
    """A session plus the commands it returned, with helpers to read them."""

    def __init__(self, site: Site | None = None) -> None:
        self.site = site or make_site("demo")
        self.now = SATURDAY_MORNING
        ids = (f"T{n}" for n in itertools.count(1))
        self.s = TopUpSession(self.site, self.now, lambda: next(ids))
        self.log: list[Command] = []

    def __call__(self, ev: Event) -> list[Command]:
        out = self.s.handle(ev)
        self.log += out
        return out

    @property
    def state(self) -> State:
        return self.s.state

    def records(self, kind: Kind | None = None) -> list[Record]:
        return [c for c in self.log if isinstance(c, Record) and (kind is None or c.kind == kind)]

    def cmds(self, typ: type) -> list[Command]:
        return [c for c in self.log if isinstance(c, typ)]

    def tick(self, seconds: float) -> list[Command]:
        self.now += timedelta(seconds=seconds)
        return self(Tick(self.now))

    def insert(self, k: KeyInfo | None = None, acc: Account | None = None) -> list[Command]:
        return self(KeyInserted(k or key(), acc or account()))


# ---------------------------------------------------------------- reaching every state


def _idle(r: Run) -> None:
    pass


def _closed(r: Run) -> None:
    r.s = TopUpSession(make_site("jena-rudolstaedter-strasse"), SATURDAY_MORNING, lambda: "T1")


def _oos(r: Run) -> None:
    r(DeviceFault(Device.READER, 1, "reader gone"))


def _reading(r: Run) -> None:
    r(KeyDetected())


def _refused(r: Run) -> None:
    r.insert(acc=account(KeyStatus.BLOCKED))


def _writing_pending(r: Run) -> None:
    r.insert(acc=account(pending=(PendingCredit("OLD1", E(1000)),)))


def _choosing_amount(r: Run) -> None:
    r.insert()


def _choosing_method(r: Run) -> None:
    r.insert()
    r(AmountChosen(E(2000)))


def _cash(r: Run) -> None:
    _choosing_method(r)
    r(MethodChosen(Method.CASH))


def _card(r: Run) -> None:
    _choosing_method(r)
    r(MethodChosen(Method.CARD))


def _writing(r: Run) -> None:
    _cash(r)
    r(CoinAccepted(E(200)))
    r(NoteEscrowed(E(1000)))
    r(NoteStacked(E(1000)))
    r(NoteEscrowed(E(500)))
    r(NoteStacked(E(500)))
    r(CoinAccepted(E(200)))
    r(CoinAccepted(E(100)))


def _reversing(r: Run) -> None:
    _card(r)
    r(CardApproved(E(2000)))
    r(KeyWriteFailed("T1", "refused", uncertain=False))


def _key_missing(r: Run) -> None:
    _cash(r)
    r(CoinAccepted(E(200)))
    r(KeyRemoved())


def _done(r: Run) -> None:
    r.insert()
    r(Cancel())


def _technician_pin(r: Run) -> None:
    r.insert(key(role=Role.TECHNICIAN))


def _diagnostics(r: Run) -> None:
    _technician_pin(r)
    r(PinChecked(True))


REACH: dict[State, Callable[[Run], None]] = {
    State.IDLE: _idle,
    State.CLOSED: _closed,
    State.OUT_OF_SERVICE: _oos,
    State.READING: _reading,
    State.KEY_REFUSED: _refused,
    State.WRITING_PENDING: _writing_pending,
    State.CHOOSING_AMOUNT: _choosing_amount,
    State.CHOOSING_METHOD: _choosing_method,
    State.CASH: _cash,
    State.CARD: _card,
    State.WRITING: _writing,
    State.REVERSING: _reversing,
    State.KEY_MISSING: _key_missing,
    State.DONE: _done,
    State.TECHNICIAN_PIN: _technician_pin,
    State.DIAGNOSTICS: _diagnostics,
}


def reach(state: State) -> Run:
    r = Run()
    REACH[state](r)
    assert r.state == state
    r.log.clear()
    return r


#: One representative instance of every event type.
SAMPLES: list[Event] = [
    Tick(SATURDAY_MORNING),
    KeyDetected(),
    KeyInserted(key(), account()),
    KeyReadFailed("blank card"),
    KeyRemoved(),
    AmountChosen(E(2000)),
    MethodChosen(Method.CASH),
    Cancel(),
    Finish(),
    MoreTime(),
    CoinAccepted(E(200)),
    NoteEscrowed(E(500)),
    NoteStacked(E(500)),
    NoteReturned(E(500)),
    CardStatus("PIN eingeben"),
    CardApproved(E(2000)),
    CardFailed(CardFailure.DECLINED, "05"),
    CardReversed(True),
    CardReversedAfterCredit("T0", E(2000), "connection lost"),
    KeyWritten("T1", E(2350)),
    KeyWriteFailed("T1", "refused"),
    DeviceFault(Device.PRINTER, 3, "paper out"),
    DeviceOk(Device.PRINTER),
    PinChecked(True),
    AcceptorTest(True),
    LeaveDiagnostics(),
    LanguageChosen("en"),
    ReceiptAnswer(False),
    CardReceipt("T0", {"customer": ["Kundenbeleg"]}),
    ReceiptPrinted("T0", False, "paper out"),
    AcceptorCounter(Device.COIN, 7),
]


#: journal kinds of cash taken in (test money in diagnostics)
MONEY_KINDS = (Kind.CASH_IN, Kind.CASH_UNATTRIBUTED, Kind.TEST_CASH)


def test_every_state_is_in_the_table_and_reachable() -> None:
    assert set(TRANSITIONS) == set(State)
    assert set(REACH) == set(State)
    for state in State:
        reach(state)


def test_every_event_type_has_a_sample() -> None:
    in_table = {ev for row in TRANSITIONS.values() for ev in row}
    assert in_table == {type(e) for e in SAMPLES}


@pytest.mark.parametrize(
    "state,event",
    [(s, e) for s in State for e in SAMPLES if type(e) not in TRANSITIONS[s]],
    ids=lambda x: str(x) if isinstance(x, State) else type(x).__name__,
)
def test_event_not_in_the_table_is_refused_and_changes_nothing(state: State, event: Event) -> None:
    r = reach(state)
    before = (r.s.state, copy.deepcopy(r.s._ctx), set(r.s.faults), r.s.view())
    with pytest.raises(InvalidTransition):
        r(event)
    assert (r.s.state, r.s._ctx, r.s.faults, r.s.view()) == before


@pytest.mark.parametrize("state", list(State))
def test_a_coin_is_journaled_in_every_state(state: State) -> None:
    """Money is never refused: whatever the state, an accepted coin lands in the journal."""
    r = reach(state)
    r(CoinAccepted(E(200), channel=5))
    money = [c for c in r.records() if c.kind in MONEY_KINDS]
    assert [(c.amount, c.data["channel"]) for c in money] == [(E(200), 5)]


@pytest.mark.parametrize("state", list(State))
def test_a_stacked_note_is_journaled_in_every_state(state: State) -> None:
    r = reach(state)
    r(NoteStacked(E(1000)))
    money = [c for c in r.records() if c.kind in MONEY_KINDS]
    assert [c.amount for c in money] == [E(1000)]


@pytest.mark.parametrize("state", list(State))
def test_an_escrowed_note_is_always_stacked_or_returned(state: State) -> None:
    r = reach(state)
    out = r(NoteEscrowed(E(500)))
    decisions = [c for c in out if isinstance(c, StackNote | ReturnNote)]
    assert len(decisions) == 1
    takes_cash = state in (State.CHOOSING_AMOUNT, State.CHOOSING_METHOD, State.CASH)
    assert isinstance(decisions[0], StackNote) == takes_cash


@pytest.mark.parametrize("state", list(State))
def test_printer_fault_and_recovery_are_journaled_and_keep_the_state(state: State) -> None:
    r = reach(state)
    r(DeviceFault(Device.PRINTER, 3, "paper out"))
    assert r.state == state
    assert Device.PRINTER in r.s.view().faults
    r(DeviceOk(Device.PRINTER))
    assert r.state == state and Device.PRINTER not in r.s.view().faults
    faults = r.records(Kind.FAULT)
    assert [f.data.get("cleared", False) for f in faults] == [False, True]


@pytest.mark.parametrize("state", list(State))
def test_a_tick_without_time_passing_changes_no_state(state: State) -> None:
    r = reach(state)
    assert r(Tick(r.now)) == [] and r.state == state


# ---------------------------------------------------------------- cash


def test_cash_top_up_to_a_chosen_amount() -> None:
    r = Run()
    r.insert(acc=account(debt=700))
    assert r.state == State.CHOOSING_AMOUNT
    assert r.cmds(EnableCash) == [EnableCash(E(25000))]  # "just insert money" is open
    r(AmountChosen(E(2000)))
    assert r.state == State.CHOOSING_METHOD and r.cmds(EnableCash)[-1] == EnableCash(E(2000))
    r(MethodChosen(Method.CASH))
    out = r(NoteEscrowed(E(1000)))
    assert out == [StackNote(), EnableCash(E(1000))]  # room shrinks while the note is held
    out = r(NoteStacked(E(1000)))
    assert isinstance(out[0], Record) and out[0].kind == Kind.CASH_IN
    r(CoinAccepted(E(200)))
    assert r.cmds(EnableCash)[-1] == EnableCash(E(800))
    r(NoteEscrowed(E(500)))
    r(NoteStacked(E(500)))
    out = r(CoinAccepted(E(200)))
    out = r(CoinAccepted(E(100)))
    # The target is reached: journal first, then stop the acceptors and write 15.00.
    kinds = [c.kind for c in out if isinstance(c, Record)]
    assert kinds == [Kind.CASH_IN, Kind.SPLIT]
    assert out[len(kinds) :] == [WriteKey("T1", E(1500), new=True), DisableCash()]
    assert r.state == State.WRITING
    out = r(KeyWritten("T1", E(1850)))
    assert [c.kind for c in out if isinstance(c, Record)] == [Kind.KEY_WRITTEN, Kind.TX_CLOSED]
    assert PrintReceipt("T1", "de") in out
    v = r.s.view()
    assert v.state == State.DONE and v.outcome == Outcome.COMPLETED
    assert (v.split.paid, v.split.debt, v.split.credit) == (E(2000), E(500), E(1500))
    assert v.key.credit == E(1850)
    closed = r.records(Kind.TX_CLOSED)[0]
    assert closed.data["debt"] == 500 and closed.data["credit"] == 1500
    r(KeyRemoved())
    assert r.state == State.IDLE


def test_records_always_come_before_device_commands() -> None:
    r = reach(State.CASH)
    for ev in (CoinAccepted(E(200)), NoteEscrowed(E(1000)), NoteStacked(E(1000)), Finish()):
        out = r(ev)
        seen_device = False
        for c in out:
            if not isinstance(c, Record):
                seen_device = True
            else:
                assert not seen_device, out


def test_a_note_that_would_exceed_the_amount_is_returned() -> None:
    r = reach(State.CASH)  # 20.00 chosen
    out = r(NoteEscrowed(E(5000)))
    assert out == [ReturnNote()]
    v = r.s.view()
    assert v.notice == "note_too_big" and v.paid == E(0) and v.escrow is None
    r(NoteReturned(E(5000)))
    assert r.records(Kind.CASH_IN) == []
    assert r(NoteEscrowed(E(2000)))[0] == StackNote()


def test_inserting_money_on_the_summary_starts_a_cash_payment() -> None:
    r = reach(State.CHOOSING_AMOUNT)
    r(CoinAccepted(E(200)))
    assert r.state == State.CASH
    assert [c.kind for c in r.records()] == [Kind.TX_OPENED, Kind.CASH_IN]
    assert r.s.view().target is None and r.s.view().paid == E(200)


def test_pay_what_you_insert_needs_the_minimum_to_finish() -> None:
    r = reach(State.CHOOSING_AMOUNT)
    r(AmountChosen(None))
    assert r.state == State.CASH
    r(CoinAccepted(E(200)))
    before = r.s.view()
    with pytest.raises(UserFacingError) as err:
        r(Finish())
    assert err.value.message_key == "below_minimum" and err.value.params["minimum"] == "5.00 EUR"
    assert r.s.view() == before
    r(NoteEscrowed(E(500)))
    r(NoteStacked(E(500)))
    r(Finish())
    assert r.state == State.WRITING and r.cmds(WriteKey) == [WriteKey("T1", E(700), new=True)]


def test_finish_with_nothing_paid_is_refused() -> None:
    r = reach(State.CASH)
    with pytest.raises(UserFacingError, match="nothing_paid"):
        r(Finish())
    assert r.state == State.CASH


def test_finish_while_a_note_is_being_stacked_waits_for_it() -> None:
    r = reach(State.CASH)
    r(CoinAccepted(E(200)))
    r(NoteEscrowed(E(500)))
    assert r(Finish()) == [DisableCash()]
    assert r.state == State.CASH
    r(NoteStacked(E(500)))
    assert r.state == State.WRITING and r.cmds(WriteKey) == [WriteKey("T1", E(700), new=True)]


def test_cancel_without_money_goes_back_to_the_amount() -> None:
    r = reach(State.CASH)
    r(Cancel())
    assert r.state == State.CHOOSING_AMOUNT
    assert r.records(Kind.TX_CLOSED)[0].data["outcome"] == "cancelled"


def test_cancel_with_money_credits_it() -> None:
    r = reach(State.CASH)
    r(CoinAccepted(E(100)))
    r(Cancel())
    # Below the minimum, still credited: cash cannot be handed back, so it goes on the key.
    assert r.state == State.WRITING and r.cmds(WriteKey) == [WriteKey("T1", E(100), new=True)]
    r(KeyWritten("T1", E(450)))
    assert r.s.view().outcome == Outcome.COMPLETED


def test_walk_away_with_money_credits_it_and_without_money_ends() -> None:
    r = reach(State.CASH)
    r(CoinAccepted(E(200)))
    r.tick(r.site.timeouts.payment - 1)
    assert r.state == State.CASH and r.s.view().warning
    r.tick(2)
    assert r.state == State.WRITING and r.cmds(WriteKey) == [WriteKey("T1", E(200), new=True)]

    r = reach(State.CASH)
    r.tick(r.site.timeouts.payment + 1)
    assert r.state == State.DONE and r.s.view().outcome == Outcome.CANCELLED
    r.tick(r.site.timeouts.message + 1)
    assert r.state == State.IDLE


def test_more_time_extends_the_deadline() -> None:
    r = reach(State.CHOOSING_AMOUNT)
    r.tick(r.site.timeouts.choose - 10)
    assert r.s.view().warning and r.s.view().seconds_left == 10
    r(MoreTime())
    assert r.s.view().seconds_left == r.site.timeouts.choose and not r.s.view().warning
    r.tick(r.site.timeouts.choose - 1)
    assert r.state == State.CHOOSING_AMOUNT
    r.tick(2)
    assert r.state == State.DONE and r.s.view().notice == "timed_out"


def test_timeouts_run_on_the_monotonic_clock_not_on_the_wall_clock() -> None:
    """The wall clock set forward two days mid-payment does not end the payment; set back two
    hours, it does not give the customer two more hours: only monotonic seconds count."""
    r = reach(State.CASH)
    r(CoinAccepted(E(200)))
    mono = 1000.0
    r(Tick(r.now, mono))  # the first monotonic reading: no time passed yet
    r(Tick(r.now + timedelta(days=2), mono + 1))
    assert r.state == State.CASH and r.s.view().seconds_left == r.site.timeouts.payment - 1
    r(Tick(r.now - timedelta(hours=2), mono + r.site.timeouts.payment - 2))
    assert r.state == State.CASH and r.s.view().seconds_left == 2
    r(Tick(r.now - timedelta(hours=2), mono + r.site.timeouts.payment + 1))
    assert r.state == State.WRITING and r.cmds(WriteKey) == [WriteKey("T1", E(200), new=True)]


def test_without_a_monotonic_clock_a_step_back_stops_no_timeout() -> None:
    r = reach(State.CHOOSING_AMOUNT)
    r.now -= timedelta(hours=2)
    r.tick(0)  # the step back: no time passed, none taken back
    assert r.s.view().seconds_left == r.site.timeouts.choose
    r.tick(r.site.timeouts.choose - 1)
    assert r.state == State.CHOOSING_AMOUNT
    r.tick(2)
    assert r.state == State.DONE and r.s.view().notice == "timed_out"


def test_the_clock_is_paused_while_a_note_is_in_escrow() -> None:
    r = reach(State.CASH)
    r(NoteEscrowed(E(1000)))
    r.tick(r.site.timeouts.payment * 3)
    assert r.state == State.CASH
    r(NoteStacked(E(1000)))
    assert r.s.view().seconds_left == r.site.timeouts.payment


def test_key_pulled_mid_payment_and_put_back_resumes() -> None:
    r = reach(State.CASH)
    r(CoinAccepted(E(200)))
    r(KeyRemoved())
    assert r.state == State.KEY_MISSING and r.cmds(DisableCash)
    r.insert(key("OTHER"))
    assert r.state == State.KEY_MISSING and r.s.view().notice == "wrong_key"
    r.insert(key("K1"))
    assert r.state == State.CASH and r.cmds(EnableCash)[-1] == EnableCash(E(1800))
    assert r.s.view().paid == E(200)


def test_key_not_brought_back_becomes_a_pending_credit() -> None:
    r = Run()
    r.insert(acc=account(debt=1000))
    r(AmountChosen(None))
    r(NoteEscrowed(E(2000)))
    r(NoteStacked(E(2000)))
    r(KeyRemoved())
    r.tick(r.site.timeouts.key_missing + 1)
    v = r.s.view()
    assert v.state == State.DONE and v.outcome == Outcome.PENDING
    pending = r.records(Kind.PENDING_CREDIT)
    # Debt recovery still applies: 25 % of 20.00 repays 5.00, 15.00 is owed to the key.
    assert [(p.txid, p.key, p.amount) for p in pending] == [("T1", "K1", E(1500))]
    assert r.records(Kind.TX_CLOSED)[0].data["outcome"] == "pending"
    assert r.cmds(WriteKey) == []


# ---------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    "amount,reason",
    [
        (E(400), "below_minimum"),
        (E(0), "below_minimum"),
        (E(-2000), "below_minimum"),
        (E(25010), "above_maximum"),
        (E(1005), "not_a_step"),
        (Money(2000, "CHF"), "wrong_currency"),
    ],
)
def test_bad_amounts_are_refused_and_change_nothing(amount: Money, reason: str) -> None:
    r = reach(State.CHOOSING_AMOUNT)
    before = r.s.view()
    with pytest.raises(UserFacingError) as err:
        r(AmountChosen(amount))
    assert err.value.message_key == reason
    assert r.s.view() == before and r.log == []


def test_money_must_be_integer_minor_units() -> None:
    for bad in (20.0, "2000", True, None):
        with pytest.raises(MoneyError):
            Money(bad, "EUR")  # type: ignore[arg-type]


def test_the_room_left_on_the_key_caps_the_amount() -> None:
    r = Run()
    r.insert(key(credit=45000))  # the key limit is 500.00: only 50.00 fits
    with pytest.raises(UserFacingError) as err:
        r(AmountChosen(E(6000)))
    assert err.value.params["maximum"] == "50.00 EUR"
    assert r.cmds(EnableCash) == [EnableCash(E(5000))]
    r(AmountChosen(E(5000)))
    assert r.state == State.CHOOSING_METHOD


# ---------------------------------------------------------------- card


def test_card_top_up_completes_after_the_key_is_written() -> None:
    r2 = reach(State.CHOOSING_METHOD)
    out = r2(MethodChosen(Method.CARD))
    assert AuthoriseCard("T1", E(2000)) in out and DisableCash() in out
    r2(CardStatus("Bitte PIN eingeben"))
    assert r2.s.view().card_text == "Bitte PIN eingeben"
    out = r2(CardApproved(E(2000), {"receipt_no": 17}))
    assert out[0].kind == Kind.CARD_APPROVED and out[0].data == {"receipt_no": 17}
    assert WriteKey("T1", E(2000), new=True) in out and not r2.cmds(CompleteCard)
    out = r2(KeyWritten("T1", E(2350)))
    assert CompleteCard("T1") in out and r2.s.view().outcome == Outcome.COMPLETED


def test_card_declined_then_cash() -> None:
    r = reach(State.CARD)
    r(CardFailed(CardFailure.DECLINED, "Zahlung abgelehnt (05)"))
    v = r.s.view()
    assert v.state == State.CHOOSING_METHOD and v.notice == "card_declined"
    assert r.records(Kind.CARD_FAILED)[0].data["outcome"] == "declined"
    r(MethodChosen(Method.CASH))
    r(NoteEscrowed(E(2000)))
    r(NoteStacked(E(2000)))
    assert r.cmds(WriteKey) == [WriteKey("T1", E(2000), new=True)]
    assert len(r.records(Kind.TX_OPENED)) == 0  # same transaction as the card attempt


def test_card_refused_at_a_cash_only_site_in_the_engine() -> None:
    site = make_site("jena-rudolstaedter-strasse", hours={"always_open": True})
    r = Run(site)
    r.insert()
    r(AmountChosen(E(2000)))
    assert r.state == State.CASH  # the only method: no choice shown
    r2 = Run(site)
    r2.insert()
    r2.s.state = State.CHOOSING_METHOD  # as if a forged touch reached the method screen
    r2.s._ctx.target = E(2000)
    before = r2.s.view()
    with pytest.raises(UserFacingError, match="card_not_offered"):
        r2(MethodChosen(Method.CARD))
    assert r2.s.view() == before and r2.cmds(AuthoriseCard) == []


def test_card_terminal_fault_leaves_cash() -> None:
    r = Run()
    r(DeviceFault(Device.CARD, 1, "terminal offline"))
    assert r.state == State.IDLE
    r.insert()
    r(AmountChosen(E(2000)))
    assert r.state == State.CASH
    assert r.s.view().methods == (Method.CASH,)


def test_write_failure_after_card_approval_reverses_the_payment() -> None:
    r = reach(State.CARD)
    r(CardApproved(E(2000)))
    out = r(KeyWriteFailed("T1", "refused by the key"))
    assert ReverseCard("T1") in out and r.state == State.REVERSING
    out = r(CardReversed(True))
    assert [c.kind for c in out if isinstance(c, Record)] == [Kind.CARD_REVERSED, Kind.TX_CLOSED]
    assert r.s.view().outcome == Outcome.REVERSED and r.cmds(CompleteCard) == []


def test_failed_reversal_leaves_a_pending_credit() -> None:
    r = reach(State.REVERSING)
    r(CardReversed(False, "host unreachable"))
    assert r.s.view().outcome == Outcome.PENDING
    assert [p.amount for p in r.records(Kind.PENDING_CREDIT)] == [E(2000)]
    assert r.cmds(CompleteCard) == [CompleteCard("T1")]


def test_key_pulled_during_card_payment_aborts_and_reverses_a_late_approval() -> None:
    r = reach(State.CARD)
    assert r(KeyRemoved()) == [AbortCard()]
    out = r(CardApproved(E(2000)))
    assert ReverseCard("T1") in out and r.cmds(WriteKey) == []
    r(CardReversed(True))
    assert r.s.view().outcome == Outcome.REVERSED

    r = reach(State.CARD)
    r(KeyRemoved())
    r(CardFailed(CardFailure.ABORTED))
    assert r.state == State.IDLE and r.records(Kind.TX_CLOSED)[0].data["outcome"] == "cancelled"


def test_customer_cancel_during_card_payment_aborts_at_the_terminal() -> None:
    r = reach(State.CARD)
    assert r(Cancel()) == [AbortCard()]
    r(CardFailed(CardFailure.ABORTED, "abgebrochen"))
    assert r.state == State.CHOOSING_METHOD and r.s.view().notice == "card_aborted"


def test_coins_that_slip_in_during_a_card_payment_are_kept() -> None:
    r = reach(State.CARD)
    r(CoinAccepted(E(200)))
    r(CardFailed(CardFailure.DECLINED))
    assert r.state == State.CASH and r.s.view().paid == E(200)


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "k,acc,reason",
    [
        (key(), account(KeyStatus.UNKNOWN), "unknown"),
        (key(), account(KeyStatus.BLOCKED), "blocked"),
        (key(), account(KeyStatus.NOT_ACTIVATED), "not_activated"),
        (key(credit=Money(0, "CHF")), account(), "foreign_key"),
    ],
)
def test_refused_keys_get_a_reason_and_nothing_is_accepted(
    k: KeyInfo, acc: Account, reason: str
) -> None:
    r = Run()
    r.insert(k, acc)
    v = r.s.view()
    assert v.state == State.KEY_REFUSED and v.refusal == reason
    assert r.records(Kind.KEY_REFUSED)[0].data["reason"] == reason
    assert r.cmds(EnableCash) == [] and r.cmds(WriteKey) == []
    with pytest.raises(InvalidTransition):
        r(AmountChosen(E(2000)))
    r(KeyRemoved())
    assert r.state == State.IDLE


def test_unreadable_card_is_refused() -> None:
    r = Run()
    r(KeyDetected())
    r(KeyReadFailed("no application"))
    assert r.s.view().refusal == "unreadable"


def test_pending_credits_are_written_on_insertion_once() -> None:
    pend = (
        PendingCredit("OLD1", E(1000)),
        PendingCredit("OLD2", E(500)),
        PendingCredit("OLD3", E(300)),
    )
    r = Run()
    out = r.insert(key(log=("OLD2",)), account(pending=pend))
    # OLD2 is already in the key's top-up log: it landed before, so it is settled, not rewritten.
    settled = r.records(Kind.PENDING_WRITTEN)
    assert [(s.txid, s.data.get("found_on_key")) for s in settled] == [("OLD2", True)]
    assert r.state == State.WRITING_PENDING and WriteKey("OLD1", E(1000)) in out
    out = r(KeyWritten("OLD1", E(1350)))
    assert WriteKey("OLD3", E(300)) in out
    r(KeyWritten("OLD3", E(1650)))
    v = r.s.view()
    assert v.state == State.CHOOSING_AMOUNT and v.notice == "pending_written"
    assert v.pending_written == E(1300) and v.key.credit == E(1650)
    assert [w.txid for w in r.cmds(WriteKey)] == ["OLD1", "OLD3"]


def test_the_keys_log_settles_a_write_a_crash_hid_and_claims_what_no_payment_backs() -> None:
    """Start-up reconciliation leaves a write whose fate it could not know to the key: a credit
    still owed (`amount`) and what the key holds if the write landed (`on_key`)."""
    pend = (
        PendingCredit("GONE", E(0), on_key=E(2000)),  # card given back; the write landed
        PendingCredit("LOST", E(0), on_key=E(1500)),  # card given back; the write did not land
        PendingCredit("HALF", E(500), on_key=E(2500)),  # 5.00 cash stays paid; 20.00 went back
        PendingCredit("OWED", E(700), on_key=E(700)),  # cash, not on the key: written now
    )
    r = Run()
    out = r.insert(key(log=("GONE", "HALF")), account(pending=pend))
    got = [(c.kind, c.txid, c.amount) for c in r.records()]
    assert got == [
        (Kind.PENDING_WRITTEN, "GONE", E(0)),
        (Kind.CLAIM, "GONE", E(2000)),  # on the key, and nothing pays for it: owed
        (Kind.PENDING_WRITTEN, "LOST", E(0)),  # nothing to write for a payment given back
        (Kind.PENDING_WRITTEN, "HALF", E(500)),
        (Kind.CLAIM, "HALF", E(2000)),
    ]
    assert [w for w in out if isinstance(w, WriteKey)] == [WriteKey("OWED", E(700))]
    assert r.state == State.WRITING_PENDING


def test_a_pending_credit_that_cannot_be_written_stays_pending() -> None:
    r = reach(State.WRITING_PENDING)
    r(KeyWriteFailed("OLD1", "refused", uncertain=False))
    assert r.state == State.DONE and r.s.view().notice == "pending_not_written"
    assert r.records(Kind.PENDING_WRITTEN) == []


def test_key_pulled_during_the_write_then_found_written_in_its_log() -> None:
    r = reach(State.WRITING)
    r(KeyRemoved())
    assert r.state == State.KEY_MISSING
    out = r.insert(key(credit=2350, log=("T1",)))
    assert r.cmds(WriteKey) == [] and r.s.view().outcome == Outcome.COMPLETED
    written = [c for c in out if isinstance(c, Record) and c.kind == Kind.KEY_WRITTEN]
    assert written[0].data["found_on_key"] is True


def test_credits_owed_are_not_decided_on_a_key_whose_log_was_not_read() -> None:
    """The port reads the key's log only when asked; a key presented without it (the log read
    failed, or nobody asked) neither settles nor writes what it is owed: that stays owed."""
    pend = (PendingCredit("GONE", E(0), on_key=E(2000)), PendingCredit("OWED", E(700)))
    r = Run()
    out = r.insert(key(log=(), written=4, log_from=5, log_complete=False), account(pending=pend))
    assert r.state == State.CHOOSING_AMOUNT
    assert r.records() == [] and [c for c in out if isinstance(c, WriteKey)] == []


def test_a_transactions_first_write_says_it_is_new_and_no_other_does() -> None:
    """A new transaction cannot be in any key's log, so its first write needs not read the log;
    a write again after a torn one, or of a credit owed, must (the key's log decides)."""
    r = Run()
    _writing(r)
    assert r.cmds(WriteKey) == [WriteKey("T1", E(2000), new=True)]
    r(KeyWriteFailed("T1", "key removed", uncertain=True))
    again = r.insert(key())
    assert [c for c in again if isinstance(c, WriteKey)] == [WriteKey("T1", E(2000), new=False)]
    owed = Run().insert(key(), account(pending=(PendingCredit("OWED", E(700)),)))
    assert [c for c in owed if isinstance(c, WriteKey)] == [WriteKey("OWED", E(700), new=False)]


def test_key_pulled_during_the_write_and_not_written_is_written_again() -> None:
    r = reach(State.WRITING)
    r(KeyWriteFailed("T1", "key removed", uncertain=True))
    assert r.state == State.KEY_MISSING and r.s.view().notice == "key_removed_early"
    assert r.insert(key()) == [WriteKey("T1", E(2000))]
    r(KeyWritten("T1", E(2350)))
    assert r.s.view().outcome == Outcome.COMPLETED


def test_a_certain_write_failure_in_cash_becomes_a_pending_credit() -> None:
    r = reach(State.WRITING)
    r(KeyWriteFailed("T1", "refused by the key", uncertain=False))
    assert r.s.view().outcome == Outcome.PENDING
    assert [p.amount for p in r.records(Kind.PENDING_CREDIT)] == [E(2000)]


# ---------------------------------------------------------------- money outside a payment


def test_a_late_coin_with_the_key_present_becomes_a_pending_credit() -> None:
    r = reach(State.DONE)
    r(CoinAccepted(E(200)))
    kinds = [c.kind for c in r.records()]
    assert kinds == [Kind.TX_OPENED, Kind.CASH_IN, Kind.SPLIT, Kind.PENDING_CREDIT, Kind.TX_CLOSED]
    assert r.records(Kind.PENDING_CREDIT)[0].amount == E(200)
    assert r.state == State.DONE


def test_a_coin_with_no_key_is_journaled_unattributed() -> None:
    r = Run()
    r(CoinAccepted(E(200)))
    assert [c.kind for c in r.records()] == [Kind.CASH_UNATTRIBUTED]


# ---------------------------------------------------------------- hours and service


def test_closed_outside_opening_hours_and_opens_on_time() -> None:
    site = make_site("jena-rudolstaedter-strasse")
    ids = iter(["T1"])
    s = TopUpSession(site, SATURDAY_MORNING, lambda: next(ids))
    assert s.state == State.CLOSED
    assert s.handle(KeyInserted(key(), account())) == [] and s.state == State.CLOSED
    monday_8 = SATURDAY_MORNING + timedelta(days=2) - timedelta(hours=2)  # 08:00 local
    s.handle(Tick(monday_8 - timedelta(seconds=1)))
    assert s.state == State.CLOSED
    s.handle(Tick(monday_8))
    assert s.state == State.IDLE


def test_closing_time_does_not_interrupt_a_payment() -> None:
    site = make_site("jena-rudolstaedter-strasse")
    friday_1559 = SATURDAY_MORNING - timedelta(days=1) + timedelta(hours=5, minutes=59)
    s = TopUpSession(site, friday_1559, lambda: "T1")
    s.handle(KeyInserted(key(), account()))
    s.handle(AmountChosen(None))
    s.handle(CoinAccepted(E(200)))
    s.handle(Tick(friday_1559 + timedelta(seconds=90)))  # 16:00:30, closed now
    assert s.state == State.CASH
    s.handle(Cancel())
    s.handle(KeyWritten("T1", E(550)))
    s.handle(KeyRemoved())
    assert s.state == State.CLOSED


def test_out_of_service_when_no_payment_device_works() -> None:
    site = make_site("jena-rudolstaedter-strasse", hours={"always_open": True})
    s = TopUpSession(site, SATURDAY_MORNING, lambda: "T1")
    s.handle(DeviceFault(Device.COIN, 1))
    assert s.state == State.IDLE  # notes still work
    s.handle(DeviceFault(Device.NOTES, 2))
    assert s.state == State.OUT_OF_SERVICE
    assert s.handle(KeyInserted(key(), account())) == [] and s.state == State.OUT_OF_SERVICE
    s.handle(DeviceOk(Device.NOTES))
    assert s.state == State.IDLE


def test_the_engine_needs_an_aware_clock(site: Site) -> None:
    with pytest.raises(ValueError):
        TopUpSession(site, SATURDAY_MORNING.replace(tzinfo=None), lambda: "T")
    s = TopUpSession(site, SATURDAY_MORNING, lambda: "T")
    with pytest.raises(ValueError):
        s.handle(Tick(SATURDAY_MORNING.replace(tzinfo=None)))
    assert s.now == SATURDAY_MORNING


def test_key_pulled_during_card_payment_with_coins_taken_still_aborts_the_card() -> None:
    r = reach(State.CARD)
    r(CoinAccepted(E(200)))  # slipped in while the terminal was busy
    assert r(KeyRemoved()) == [AbortCard()]
    r(CardFailed(CardFailure.ABORTED))
    assert r.state == State.KEY_MISSING  # the 2.00 is owed to this key
    r.tick(r.site.timeouts.key_missing + 1)
    assert [p.amount for p in r.records(Kind.PENDING_CREDIT)] == [E(200)]


def test_a_wrong_key_taken_out_again_does_not_restart_the_wait() -> None:
    r = reach(State.KEY_MISSING)
    r.tick(r.site.timeouts.key_missing - 5)
    r.insert(key("OTHER"))
    r(KeyRemoved())
    assert r.s.view().seconds_left == 5
    r.tick(6)
    assert r.s.view().outcome == Outcome.PENDING


def test_a_validator_fault_with_a_note_in_escrow_journals_the_note_and_frees_the_payment() -> None:
    r = reach(State.CASH)
    r(CoinAccepted(E(200)))
    r(NoteEscrowed(E(1000)))
    r(Finish())  # waiting for the note
    r(DeviceFault(Device.NOTES, 7, "bill jammed in stacker"))
    fault = r.records(Kind.FAULT)[-1]
    assert fault.txid == "T1" and fault.data["escrow"] == 1000 and fault.data["code"] == 7
    assert r.s.view().notice == "note_jammed" and r.s.view().escrow is None
    # Not credited (only "stacked" counts), and the payment goes on with what was taken.
    assert r.state == State.WRITING and r.cmds(WriteKey) == [WriteKey("T1", E(200), new=True)]


def test_a_faulty_acceptor_is_left_out_when_cash_is_enabled() -> None:
    r = reach(State.CASH)
    assert r.cmds(EnableCash) == [] and r.s._cash_limit is not None
    out = r(DeviceFault(Device.COIN, 0, "2 event(s) lost"))
    assert EnableCash(E(2000), frozenset({Device.NOTES})) in out
    out = r(DeviceOk(Device.COIN))
    assert EnableCash(E(2000), frozenset({Device.COIN, Device.NOTES})) in out


@pytest.mark.parametrize("state", list(State))
def test_a_reversal_after_credit_is_journaled_as_a_claim_in_every_state(state: State) -> None:
    r = reach(state)
    out = r(CardReversedAfterCredit("T0", E(2000), "connection lost"))
    assert r.state == state
    assert out == [
        Record(
            Kind.CARD_REVERSED,
            "T0",
            None,
            E(2000),
            {"after_credit": True, "reason": "connection lost"},
        )
    ]


def test_a_refused_key_screen_takes_a_fresh_read() -> None:
    r = Run()
    r(KeyDetected())
    r(KeyReadFailed("card not ready"))
    assert r.state == State.KEY_REFUSED
    r.insert()  # the same key read properly, no removal reported in between
    assert r.state == State.CHOOSING_AMOUNT


# ---------------------------------------------------------------- technician


def test_technician_key_asks_for_the_pin_and_takes_nothing() -> None:
    r = Run()
    r.insert(key(role=Role.TECHNICIAN))
    assert r.state == State.TECHNICIAN_PIN and r.cmds(EnableCash) == [] and r.records() == []
    for intent in (AmountChosen(E(2000)), MethodChosen(Method.CASH), AcceptorTest(True)):
        with pytest.raises(InvalidTransition):
            r(intent)
    r(PinChecked(False))
    assert r.state == State.TECHNICIAN_PIN and r.s.view().notice == "pin_wrong"
    r(CoinAccepted(E(200)))  # acceptors are off, but a coin that falls through is journaled
    assert [c.kind for c in r.records()] == [Kind.CASH_UNATTRIBUTED]  # never the key's credit
    r(PinChecked(False, SATURDAY_MORNING + timedelta(minutes=5)))
    assert r.s.view().notice == "pin_locked"
    r.tick(61)  # the PIN screen times out like any other
    assert r.state == State.IDLE


def test_customer_key_never_reaches_diagnostics() -> None:
    r = Run()
    r.insert()
    assert r.state == State.CHOOSING_AMOUNT
    for intent in (PinChecked(True), AcceptorTest(True), LeaveDiagnostics()):
        with pytest.raises(InvalidTransition):
            r(intent)
    assert r.state == State.CHOOSING_AMOUNT


def test_acceptor_test_money_is_counted_never_credited() -> None:
    r = Run()
    _diagnostics(r)
    assert r.cmds(EnableCash) == []  # not before the technician starts the test
    r(NoteEscrowed(E(500)))
    assert r.cmds(ReturnNote) and not r.cmds(StackNote)
    r(AcceptorTest(True))
    assert r.cmds(EnableCash)[0].max_value == max(r.s.site.coins + r.s.site.notes)
    r(CoinAccepted(E(200), channel=4))
    r(NoteEscrowed(E(500)))
    assert r.cmds(StackNote)
    r(NoteStacked(E(500)))
    v = r.s.view()
    assert (v.test_last, v.test_total) == (E(500), E(700))
    kinds = [c.kind for c in r.records()]
    assert kinds == [Kind.TEST_CASH, Kind.TEST_CASH]
    assert r.cmds(WriteKey) == []
    r(AcceptorTest(False))
    assert r.cmds(DisableCash)
    r(KeyRemoved())  # pulling the technician key ends diagnostics, journaled
    audit = r.records(Kind.AUDIT)
    assert audit[-1].data["action"] == "exited" and audit[-1].data["key_removed"] is True
    assert r.state == State.IDLE and r.s.view().test_total is None


# ---------------------------------------------------------------- receipts


def _paid_cash(r: Run, value: int = 2000) -> None:
    r(NoteEscrowed(E(value)))
    r(NoteStacked(E(value)))


def test_a_completed_top_up_prints_its_receipt_in_the_customers_language() -> None:
    r = reach(State.CASH)
    r(LanguageChosen("fr"))
    _paid_cash(r)
    r(KeyWritten("T1", E(2350)))
    closed = r.records(Kind.TX_CLOSED)[0]
    assert closed.data["receipt"] == "wanted" and closed.data["lang"] == "fr"
    assert r.cmds(PrintReceipt) == [PrintReceipt("T1", "fr")]
    assert r.s.view().receipt == Receipt.PRINTING
    r(ReceiptPrinted("T1", True))
    assert r.s.view().receipt == Receipt.PRINTED
    assert r.records(Kind.RECEIPT)[0].data == {"printed": True}


def test_the_language_goes_back_to_the_default_for_the_next_customer() -> None:
    r = reach(State.CHOOSING_AMOUNT)
    r(LanguageChosen("nl"))
    r(KeyRemoved())
    assert r.state == State.IDLE and r.s.view().lang == "de"


def test_a_language_the_site_does_not_offer_is_refused() -> None:
    site = dataclasses.replace(make_site("demo"), languages=("de", "en"))
    r = Run(site)
    _choosing_amount(r)
    with pytest.raises(UserFacingError, match="language_not_offered"):
        r(LanguageChosen("fr"))
    assert r.s.view().lang == "de"


def test_a_receipt_not_printed_is_journaled_and_shown() -> None:
    r = reach(State.CASH)
    _paid_cash(r)
    r(KeyWritten("T1", E(2350)))
    r(ReceiptPrinted("T1", False, "paper out"))
    assert r.records(Kind.RECEIPT)[0].data == {"printed": False, "reason": "paper out"}
    v = r.s.view()
    assert v.receipt == Receipt.NOT_PRINTED and v.outcome == Outcome.COMPLETED


def test_where_the_site_asks_the_customer_may_decline_the_receipt() -> None:
    r = Run(dataclasses.replace(make_site("demo"), receipt="ask"))
    _cash(r)
    assert r.s.view().receipt_question
    r(ReceiptAnswer(False))
    assert r.s.view().receipt_wanted is False
    _paid_cash(r)
    r(KeyWritten("T1", E(2350)))
    assert r.cmds(PrintReceipt) == []
    assert r.records(Kind.TX_CLOSED)[0].data["receipt"] == "declined"
    assert r.s.view().receipt == Receipt.DECLINED and not r.s.view().receipt_question


def test_an_unanswered_question_prints_and_a_pending_credit_always_prints() -> None:
    ask = dataclasses.replace(make_site("demo"), receipt="ask")
    r = Run(ask)
    _cash(r)
    _paid_cash(r)
    r(KeyWritten("T1", E(2350)))
    assert r.cmds(PrintReceipt) == [PrintReceipt("T1", "de")]
    r = Run(ask)
    _cash(r)
    r(ReceiptAnswer(False))
    _paid_cash(r)
    r(KeyWriteFailed("T1", "refused", uncertain=False))
    assert r.s.view().outcome == Outcome.PENDING
    assert r.cmds(PrintReceipt) == [PrintReceipt("T1", "de")]  # the proof of money owed


def test_a_site_that_does_not_ask_refuses_an_answer_and_nothing_changes() -> None:
    r = Run(dataclasses.replace(make_site("demo"), receipt="always"))
    _cash(r)
    before = r.s.view()
    with pytest.raises(UserFacingError, match="receipt_not_asked"):
        r(ReceiptAnswer(False))
    assert r.s.view() == before and not before.receipt_question


def test_no_printer_no_receipt() -> None:
    r = Run(dataclasses.replace(make_site("demo"), receipt="none"))
    _cash(r)
    _paid_cash(r)
    r(KeyWritten("T1", E(2350)))
    assert r.cmds(PrintReceipt) == [] and "receipt" not in r.records(Kind.TX_CLOSED)[0].data


def test_a_card_receipt_waits_for_the_terminals_text() -> None:
    r = reach(State.CHOOSING_METHOD)
    r(MethodChosen(Method.CARD))
    r(CardApproved(E(2000), {"receipt_no": 17}))
    r(KeyWritten("T1", E(2350)))
    assert r.s.view().outcome == Outcome.COMPLETED and r.cmds(PrintReceipt) == []
    out = r(CardReceipt("T1", {"customer": ["KUNDENBELEG", "girocard"]}))
    assert out[0] == Record(
        Kind.CARD_RECEIPT,
        txid="T1",
        data={"blocks": {"customer": ["KUNDENBELEG", "girocard"]}, "kept": True},
    )
    assert r.cmds(PrintReceipt) == [PrintReceipt("T1", "de")]
    r.tick(CARD_RECEIPT_WAIT + 1)
    assert len(r.cmds(PrintReceipt)) == 1  # printed once


def test_a_card_receipt_prints_without_the_terminals_text_when_it_never_comes() -> None:
    r = reach(State.CHOOSING_METHOD)
    r(MethodChosen(Method.CARD))
    r(CardApproved(E(2000)))
    r(KeyWritten("T1", E(2350)))
    r.tick(CARD_RECEIPT_WAIT - 1)
    assert r.cmds(PrintReceipt) == []
    r.tick(2)
    assert r.cmds(PrintReceipt) == [PrintReceipt("T1", "de")]


def test_a_terminal_text_that_came_first_does_not_hold_the_receipt() -> None:
    r = reach(State.CHOOSING_METHOD)
    r(MethodChosen(Method.CARD))
    r(CardApproved(E(2000)))
    r(KeyWriteFailed("T1", "refused"))
    assert r.state == State.REVERSING
    r(CardReceipt("T1", {"customer": ["STORNO"]}))
    r(CardReversed(True))
    assert r.s.view().outcome == Outcome.REVERSED
    assert r.cmds(PrintReceipt) == [PrintReceipt("T1", "de")]
