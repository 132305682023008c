"""Money as integers, and the debt-recovery and fee arithmetic with worked examples."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiosk.domain.engine import split_payment
from kiosk.domain.errors import MoneyError
from kiosk.domain.money import Money
from kiosk.domain.site import FeeRule, RecoveryRule


def E(minor: int) -> Money:
    return Money(minor, "EUR")


NO_FEE = FeeRule(E(0), 1900, E(0))


def rule(percent: int, cap: int | None = None) -> RecoveryRule:
    return RecoveryRule(percent * 100, E(cap) if cap is not None else None)


# ---------------------------------------------------------------- money


@pytest.mark.parametrize("bad", [1.5, 2.0, Decimal("1"), "100", True, None])
def test_money_refuses_anything_but_int(bad: object) -> None:
    with pytest.raises(MoneyError):
        Money(bad, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize("cur", ["USD", "eur", "", None])
def test_money_refuses_unknown_currencies(cur: object) -> None:
    with pytest.raises(MoneyError, match="unknown currency"):
        Money(100, cur)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text,minor", [("0.10", 10), ("5", 500), ("5.5", 550), ("21.01", 2101), ("250.00", 25000)]
)
def test_parse_is_exact(text: str, minor: int) -> None:
    assert Money.parse(text, "EUR") == E(minor)


@pytest.mark.parametrize("text", ["1.234", "-1.00", "1e3", "", " . ", "1,50", "nan"])
def test_parse_refuses_what_is_not_an_amount(text: str) -> None:
    with pytest.raises(MoneyError):
        Money.parse(text, "EUR")


def test_no_arithmetic_across_currencies() -> None:
    with pytest.raises(MoneyError, match="mismatch"):
        E(100) + Money(100, "CHF")
    with pytest.raises(MoneyError, match="mismatch"):
        _ = E(100) < Money(100, "CHF")


@given(st.integers(min_value=0, max_value=10**11 - 1))  # parse takes up to 9 whole digits
def test_text_round_trip(minor: int) -> None:
    m = E(minor)
    assert Money.parse(m.amount_text(), "EUR") == m


# ---------------------------------------------------------------- split


def test_worked_example_from_the_issue() -> None:
    """20.00 EUR paid, 25 % recovery, 7.00 EUR debt: 5.00 to debt, 15.00 to the key."""
    s = split_payment(E(2000), E(700), NO_FEE, rule(25))
    assert (s.fee, s.debt, s.credit) == (E(0), E(500), E(1500))


def test_a_debt_smaller_than_the_share_is_cleared_and_no_more() -> None:
    s = split_payment(E(2000), E(300), NO_FEE, rule(25))
    assert (s.debt, s.credit) == (E(300), E(1700))


def test_the_cap_limits_recovery_per_top_up() -> None:
    s = split_payment(E(20000), E(10000), NO_FEE, rule(25, cap=2000))
    assert (s.debt, s.credit) == (E(2000), E(18000))


def test_shares_are_floored_in_the_customers_favour() -> None:
    s = split_payment(E(1010), E(10000), NO_FEE, RecoveryRule(1250, None))  # 12.5 % of 10.10
    assert s.debt == E(126) and s.credit == E(884)  # 126.25 cents -> 126


def test_fee_comes_first_with_its_vat() -> None:
    """The price sheet's 25.00 gross = 21.01 net + 19 % VAT, then 25 % of the rest to debt."""
    fee = FeeRule(E(2101), 1900, E(2500))
    s = split_payment(E(10000), E(5000), fee, rule(25))
    assert (s.fee, s.fee_net, s.fee_vat) == (E(2500), E(2101), E(399))
    assert s.debt == E(1875) and s.credit == E(5625)


def test_fee_is_waived_when_not_charged() -> None:
    fee = FeeRule(E(2101), 1900, E(2500))
    s = split_payment(E(300), E(0), fee, rule(0), charge_fee=False)
    assert s.fee == E(0) and s.credit == E(300)


def test_no_debt_no_recovery() -> None:
    s = split_payment(E(2000), E(0), NO_FEE, rule(25))
    assert (s.debt, s.credit) == (E(0), E(2000))


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        split_payment(E(-100), E(0), NO_FEE, rule(25))
    with pytest.raises(ValueError):
        split_payment(E(100), E(-1), NO_FEE, rule(25))


@given(
    paid=st.integers(0, 10**7),
    debt=st.integers(0, 10**7),
    share_bp=st.integers(0, 10000),
    cap=st.one_of(st.none(), st.integers(0, 10**6)),
    fee_net=st.integers(0, 5000),
)
def test_split_adds_up_and_never_over_recovers(
    paid: int, debt: int, share_bp: int, cap: int | None, fee_net: int
) -> None:
    gross = fee_net + fee_net * 19 // 100
    fee = FeeRule(E(fee_net), 1900, E(gross))
    s = split_payment(
        E(paid), E(debt), fee, RecoveryRule(share_bp, E(cap) if cap is not None else None)
    )
    assert s.fee + s.debt + s.credit == E(paid)
    assert s.fee_net + s.fee_vat == s.fee
    assert all(x.minor >= 0 for x in (s.fee, s.fee_net, s.fee_vat, s.debt, s.credit))
    assert s.debt <= E(debt)
    assert s.debt.minor <= (paid - s.fee.minor) * share_bp // 10000
    if cap is not None:
        assert s.debt <= E(cap)
