"""The money defects a random-customer fuzzer found, each replayed as the sequence that found it.

Each runs the real kiosk, journal and start-up reconciliation in a world whose devices hold the
true money (tests/moneyworld.py) and dies where the fuzzer made it die. Each failed before its
fix: money the devices no longer hold stayed on a key with no claim (D1, D3, D5), debt was
recovered twice (D4), or a pending credit of nothing stopped every later customer (D2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiosk.domain.events import AmountChosen, Finish, Kind, Method, MethodChosen
from kiosk.domain.money import Money
from tests.conftest import make_site
from tests.moneyworld import World


def E(minor: int) -> Money:
    return Money(minor, "EUR")


def world(tmp_path: Path, *, share: int = 25, debt: int = 0, **extra: Any) -> World:
    site = make_site("demo", debt_recovery={"share_percent": share})
    return World(tmp_path, site, debt=debt, **extra)


def card_top_up(w: World, amount: int) -> None:
    assert w.do(lambda: w.slot.insert(w.keys[0]))
    assert w.state() == "choosing_amount"
    w.submit(AmountChosen(E(amount)))
    w.submit(MethodChosen(Method.CARD))


def debt_of(w: World) -> Money:
    return w.journal.account_for("K1", w.keys[0].account, "EUR").debt


def test_d1_a_write_that_landed_before_the_crash_is_claimed_when_the_payment_went_back(
    tmp_path: Path,
) -> None:
    w = world(tmp_path, share=0)
    w.points.at = "after write"  # on the key; `key_written` never journaled
    card_top_up(w, 2000)
    assert w.points.where == "after write" and w.crashes == 1
    assert w.terminal.payments[-1].state == "back"  # nobody told it to keep the money
    assert w.keys[0].credit == 2000  # the key kept what was written
    # the restart found the key in the slot: its log shows the write, so the credit is a claim
    (claim,) = w.records(Kind.CLAIM)
    assert claim.amount == E(2000) and debt_of(w) == E(2000)
    assert w.problems() == []


def test_d3a_a_payment_found_given_back_after_the_benefit_of_the_doubt_is_claimed(
    tmp_path: Path,
) -> None:
    w = world(tmp_path, share=0)
    w.terminal.reachable = False  # at the next start it cannot say what became of it
    w.points.at = "before write"
    card_top_up(w, 2000)
    assert w.crashes == 1
    (pending,) = w.records(Kind.PENDING_CREDIT)
    assert pending.data["card_unverified"] is True  # the customer got the benefit of the doubt
    assert w.keys[0].credit == 2000  # ... written at once: the key was still in the slot
    assert w.problems() == []  # the journal still believes the payment (it is unsettled)

    w.terminal.reachable = True
    w.power_cut()  # the next start: the terminal says it gave the money back
    (reversed_,) = w.records(Kind.CARD_REVERSED)
    (claim,) = w.records(Kind.CLAIM)
    assert reversed_.amount == claim.amount == E(2000) and debt_of(w) == E(2000)
    assert w.problems() == []


def test_d3b_debt_repaid_by_a_payment_that_went_back_is_owed_again(tmp_path: Path) -> None:
    w = world(tmp_path, share=100, debt=3000)
    w.points.at = "before complete"  # all of it went to the debt; the terminal never heard OK
    card_top_up(w, 2000)
    assert w.crashes == 1 and w.terminal.payments[-1].state == "back"
    assert w.keys[0].credit == 0
    assert debt_of(w) == E(3000)  # repaid 20.00, given back 20.00: owed as before
    assert w.problems() == []


def test_d5_a_receipt_journaled_before_the_outcome_does_not_settle_a_lost_payment(
    tmp_path: Path,
) -> None:
    w = world(tmp_path, share=0)
    w.terminal.receipt_first = True  # as the card port once did
    w.terminal.script = ["lose_after_ok"]  # the line drops after the kiosk's OK
    w.points.at = "after commit card_receipt"
    card_top_up(w, 2000)
    assert w.crashes == 1 and w.keys[0].credit == 2000
    assert w.problems() == []
    (claim,) = w.records(Kind.CLAIM)  # the restart asked the terminal: given back
    assert claim.amount == E(2000) and debt_of(w) == E(2000)
    (receipt,) = w.records(Kind.CARD_RECEIPT)
    assert receipt.data["kept"] is False


def test_d5_a_reversal_after_a_refused_write_owes_nothing(tmp_path: Path) -> None:
    w = world(tmp_path, share=0)
    w.keys[0].limit = 1000  # the key refuses the write: the payment is reversed
    w.terminal.receipt_first = True
    w.points.at = "after commit card_receipt"
    card_top_up(w, 2000)
    assert w.crashes == 1 and w.terminal.payments[-1].state == "back"
    assert [e.amount for e in w.records(Kind.PENDING_CREDIT) if e.amount] == []
    closed = w.records(Kind.TX_CLOSED)[-1]
    assert closed.data["outcome"] == "reversed"
    assert w.problems() == []


def test_d4_late_money_recovers_no_debt_already_recovered(tmp_path: Path) -> None:
    w = world(tmp_path, share=25, debt=700)
    assert w.do(lambda: w.slot.insert(w.keys[0]))
    w.submit(AmountChosen(None))
    for _ in range(2):
        assert w.do(lambda: w.notes.insert(E(2000)))
    w.submit(Finish())
    assert w.state() == "done" and w.keys[0].credit == 3300  # 40.00 less the 7.00 owed
    assert w.do(lambda: w.coins.insert(E(200), late=True))  # past the gate as it closed
    late = w.records(Kind.PENDING_CREDIT)[-1]
    assert late.amount == E(200)  # all of it owed to the key: the debt is paid
    recovered = sum(int(e.data.get("debt", 0)) for e in w.records(Kind.TX_CLOSED))
    assert recovered == 700
    assert w.printer.receipts.get(str(late.txid)) is not None  # the customer's proof
    assert w.problems() == []


def test_d2_a_top_up_that_all_went_to_debt_leaves_no_pending_credit_of_nothing(
    tmp_path: Path,
) -> None:
    w = world(tmp_path, share=100, debt=5000)
    assert w.do(lambda: w.slot.insert(w.keys[0]))
    w.submit(AmountChosen(None))
    assert w.do(lambda: w.notes.insert(E(1000)))
    assert w.do(w.slot.remove)  # pulled mid-payment, never brought back
    assert w.state() == "key_missing"
    w.wait(w.site.timeouts.key_missing + 1)
    assert w.records(Kind.PENDING_CREDIT) == []  # 10.00 repaid debt: nothing is owed the key
    assert w.records(Kind.TX_CLOSED)[-1].data["outcome"] == "completed"
    w.wait(w.site.timeouts.message + 1)
    assert w.do(lambda: w.slot.insert(w.keys[0]))  # the next insertion is served at once
    assert w.state() == "choosing_amount"
    assert debt_of(w) == E(4000) and w.problems() == []


def test_d4_late_money_during_a_torn_write_recovers_no_debt_the_write_repays(
    tmp_path: Path,
) -> None:
    """Found by the long fuzz run after the D4 fix: the debt a top-up's split repays counted as
    still owed until the transaction closed, so a coin arriving while the key was out (a torn
    write) repaid it a second time."""
    w = world(tmp_path, share=100, debt=1000)
    assert w.do(lambda: w.slot.insert(w.keys[0]))
    w.submit(AmountChosen(None))
    assert w.do(lambda: w.notes.insert(E(2000)))
    w.slot.tear = "before"  # the key is pulled as the write begins
    w.submit(Finish())
    assert w.state() == "key_missing"
    assert w.do(lambda: w.coins.insert(E(50), late=True))
    assert w.records(Kind.PENDING_CREDIT)[-1].amount == E(50)  # the debt is spoken for
    assert w.do(lambda: w.slot.insert(w.keys[0]))  # the key comes back: the write completes
    assert w.state() == "done" and w.keys[0].credit == 1000
    recovered = sum(int(e.data.get("debt", 0)) for e in w.records(Kind.TX_CLOSED))
    assert recovered == 1000 and w.problems() == []
