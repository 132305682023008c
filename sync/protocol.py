"""Facts of the wire protocol shared by the kiosk and head office (no I/O, no imports)."""

from __future__ import annotations

#: Site settings head office may change, all integers: limits in minor units, the fee's net in
#: minor units and its VAT in basis points (the kiosk derives the gross).
SETTINGS = ("min_topup", "max_topup", "key_credit_limit", "fee_net", "fee_vat_bp")

#: digits after the decimal point of the currencies the fleet uses (ISO 4217)
EXPONENT = {"EUR": 2, "CHF": 2}


def amount_text(minor: int, currency: str) -> str:
    """An amount in minor units as text, e.g. -1250 EUR -> "-12.50 EUR"."""
    exp = EXPONENT[currency]
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d} {currency}"
