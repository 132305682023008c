"""Money as integer minor units with an ISO 4217 currency; floats are refused."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from kiosk.domain.errors import MoneyError
from sync.wire.protocol import EXPONENT, decimals

#: ISO 4217 currencies the kiosk handles, with their number of minor-unit digits (the wire
#: protocol's: head office takes the same)
CURRENCY_EXPONENT: dict[str, int] = EXPONENT

_AMOUNT = re.compile(r"^(\d{1,9})(?:\.(\d{1,2}))?$")


def check_currency(currency: object) -> str:
    if not isinstance(currency, str) or currency not in CURRENCY_EXPONENT:
        known = ", ".join(sorted(CURRENCY_EXPONENT))
        raise MoneyError(f"unknown currency {currency!r} (known: {known})")
    return currency


_T = TypeVar("_T")


def immutable(cls: type[_T]) -> type[_T]:
    """A frozen value made of frozen values: a deep copy is the value itself (the engine
    copies its state for every step; this keeps that copy to what can change)."""
    cls.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]
    return cls


@immutable
@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units (cents, Rappen); arithmetic only within one currency."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.minor) is not int:  # bool and float are refused, Decimal too
            raise MoneyError(f"money must be an integer of minor units, got {self.minor!r}")
        check_currency(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Parse a non-negative decimal text such as ``"12.50"`` exactly."""
        check_currency(currency)
        if not isinstance(text, str):
            raise MoneyError(f'amount must be text such as "12.50", got {text!r}')
        m = _AMOUNT.match(text.strip())
        if not m:
            raise MoneyError(f'not an amount: {text!r} (write it like "12.50")')
        exp = CURRENCY_EXPONENT[currency]
        whole, frac = m.group(1), (m.group(2) or "")
        if len(frac) > exp:
            raise MoneyError(f"{text!r} has more than {exp} decimals")
        return cls(int(whole) * 10**exp + int(frac.ljust(exp, "0") or 0), currency)

    @classmethod
    def from_decimal(cls, value: Decimal, currency: str) -> Money:
        exp = CURRENCY_EXPONENT[check_currency(currency)]
        scaled = value.scaleb(exp)
        if scaled != scaled.to_integral_value():
            raise MoneyError(f"{value} has more than {exp} decimals")
        return cls(int(scaled), currency)

    def _same(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise MoneyError(f"currency mismatch: {self.currency} and {other.currency}")
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.minor + self._same(other).minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.minor - self._same(other).minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        return self.minor < self._same(other).minor

    def __le__(self, other: Money) -> bool:
        return self.minor <= self._same(other).minor

    def __gt__(self, other: Money) -> bool:
        return self.minor > self._same(other).minor

    def __ge__(self, other: Money) -> bool:
        return self.minor >= self._same(other).minor

    def __bool__(self) -> bool:
        return self.minor != 0

    def min(self, other: Money) -> Money:
        return self if self <= other else other

    def max(self, other: Money) -> Money:
        return self if self >= other else other

    def amount_text(self) -> str:
        """The amount with its decimals and no currency, e.g. ``-12.50``."""
        return decimals(self.minor, self.currency)

    def __str__(self) -> str:
        return f"{self.amount_text()} {self.currency}"
