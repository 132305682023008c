"""Facts of the wire protocol shared by the kiosk and head office (no I/O, nothing of either
imported): the journal's entry kinds and the sign their amounts take, the currencies and how an
amount is written, the settings head office may change."""

from __future__ import annotations

from enum import StrEnum

#: Site settings head office may change, all integers: limits in minor units, the fee's net in
#: minor units and its VAT in basis points (the kiosk derives the gross).
SETTINGS = ("min_topup", "max_topup", "key_credit_limit", "fee_net", "fee_vat_bp")

#: digits after the decimal point of the currencies the fleet uses (ISO 4217)
EXPONENT = {"EUR": 2, "CHF": 2}


def decimals(minor: int, currency: str) -> str:
    """An amount in minor units with its decimals, e.g. -1250 EUR -> "-12.50"."""
    exp = EXPONENT[currency]
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"


def amount_text(minor: int, currency: str) -> str:
    """An amount in minor units as text, e.g. -1250 EUR -> "-12.50 EUR"."""
    return f"{decimals(minor, currency)} {currency}"


class Kind(StrEnum):
    """Journal entry kinds. Money moves only through the ones marked (money)."""

    KIOSK_STARTED = "kiosk_started"
    TX_OPENED = "tx_opened"
    CASH_IN = "cash_in"  # (money) coin accepted or note stacked, for a transaction
    CASH_UNATTRIBUTED = "cash_unattributed"  # (money) cash taken with no key present
    CARD_APPROVED = "card_approved"  # (money)
    CARD_FAILED = "card_failed"
    CARD_REVERSED = "card_reversed"  # (money, back to the customer)
    CARD_REVERSAL_FAILED = "card_reversal_failed"
    #: credit a key got that no payment backs (a card payment the terminal gave back after the
    #: credit, or the debt a payment repaid, was handed out): owed by the contract account
    CLAIM = "claim"
    SPLIT = "split"  # allocation of the money paid: fee, debt repaid, credit for the key
    KEY_WRITTEN = "key_written"
    WRITE_FAILED = "write_failed"
    PENDING_CREDIT = "pending_credit"  # credit owed to a key, written at its next insertion
    PENDING_WRITTEN = "pending_written"
    PENDING_RELEASED = "pending_released"  # head office gave the credit to another kiosk
    AUDIT = "audit"  # a technician's entry, failed PIN, lockout or action
    TEST_CASH = (
        "test_cash"  # (money) a coin or note in the acceptor test: in the box, never credited
    )
    CASHBOX_EMPTIED = "cashbox_emptied"  # (money: the total taken out) counters restart after it
    TX_CLOSED = "tx_closed"
    CARD_RECEIPT = "card_receipt"  # the card terminal's receipt text of a transaction
    RECEIPT = "receipt"  # whether a transaction's receipt was printed (and why not)
    ACCEPTOR_COUNTER = "acceptor_counter"  # a cash device's event counter when it came online
    KEY_REFUSED = "key_refused"
    FAULT = "fault"
    RECONCILED = "reconciled"


#: the sign each kind's amount takes: "+" more than zero, "0+" zero or more, None no amount
#: (head office refuses an entry whose amount breaks its kind's rule)
SIGNS: dict[Kind, str | None] = {
    Kind.KIOSK_STARTED: None, Kind.TX_OPENED: None, Kind.CASH_IN: "+",
    Kind.CASH_UNATTRIBUTED: "+", Kind.CARD_APPROVED: "+", Kind.CARD_FAILED: None,
    Kind.CARD_REVERSED: "+", Kind.CARD_REVERSAL_FAILED: None, Kind.CLAIM: "+", Kind.SPLIT: "0+",
    Kind.KEY_WRITTEN: "0+", Kind.WRITE_FAILED: None, Kind.PENDING_CREDIT: "0+",
    Kind.PENDING_WRITTEN: "0+", Kind.PENDING_RELEASED: "0+", Kind.AUDIT: None,
    Kind.TEST_CASH: "+", Kind.CASHBOX_EMPTIED: "0+", Kind.TX_CLOSED: None,
    Kind.CARD_RECEIPT: None, Kind.RECEIPT: None, Kind.ACCEPTOR_COUNTER: None,
    Kind.KEY_REFUSED: None, Kind.FAULT: None, Kind.RECONCILED: None,
}  # fmt: skip
