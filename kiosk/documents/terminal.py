"""The card terminal's prompts in the customer's language.

During a payment the terminal sends intermediate status codes (ZVT 04 FF, PA00P015 ch. 3.7)
with a display text of its own, in the language it was set up with (German, English, or its
vendor's idea of either). The card screen shows our text for the code, from the catalogues;
for a code we have no text for, a neutral one ("please follow the instructions on the card
terminal"), never the terminal's own words: those go to the log and the service screen. The
same for the result of a payment that failed (ZVT result codes, BMP 27).
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.zvt.codes import Intermediate, ResultCode
from kiosk.documents.i18n import N_

WAIT = N_("Please wait.")
NOT_HERE = N_("This card cannot be used here.")
UNREADABLE = N_("The card could not be read. Please try again.")
NOT_PROCESSED = N_("The payment could not be processed.")

#: intermediate status code -> our text (English msgid, translated from the catalogues)
PROMPTS: dict[Intermediate, str] = {
    Intermediate.CONFIRM_AMOUNT: N_("Please confirm the amount on the card terminal."),
    Intermediate.WATCH_PIN_PAD: N_("Please enter your PIN on the card terminal."),
    Intermediate.WATCH_PIN_PAD_AGAIN: N_("Please enter your PIN on the card terminal."),
    Intermediate.NOT_ACCEPTED: N_("The card was not accepted."),
    Intermediate.WAITING_FOR_HOST: N_("Connecting to the bank. Please wait."),
    Intermediate.SENDING_AUTO_REVERSAL: WAIT,
    Intermediate.SENDING_POST_BOOKINGS: WAIT,
    Intermediate.CARD_NOT_ADMITTED: NOT_HERE,
    Intermediate.CARD_UNKNOWN: NOT_HERE,
    Intermediate.CARD_EXPIRED: N_("The card has expired."),
    Intermediate.INSERT_CARD: N_("Please insert your card or hold it to the card terminal."),
    Intermediate.REMOVE_CARD: N_("Please take your card."),
    Intermediate.CARD_NOT_READABLE: UNREADABLE,
    Intermediate.PROCESSING_ERROR: NOT_PROCESSED,
    Intermediate.PLEASE_WAIT: WAIT,
    Intermediate.AUTOMATIC_END_OF_DAY: WAIT,
    Intermediate.INVALID_CARD: NOT_HERE,
    Intermediate.BALANCE_DISPLAY: N_("Please look at the card terminal."),
    Intermediate.SYSTEM_MALFUNCTION: NOT_PROCESSED,
    Intermediate.PAYMENT_NOT_POSSIBLE: N_("Payment by card is not possible at the moment."),
    Intermediate.CREDIT_NOT_SUFFICIENT: N_("There is not enough money on the card's account."),
    Intermediate.INCORRECT_PIN: N_("Wrong PIN. Please try again."),
    Intermediate.LIMIT_NOT_SUFFICIENT: N_("The card's limit is not sufficient."),
    Intermediate.PLEASE_WAIT_AGAIN: WAIT,
    Intermediate.PIN_TRY_LIMIT_EXCEEDED: N_("Too many wrong PINs: the card cannot be used now."),
    Intermediate.CARD_DATA_INCORRECT: UNREADABLE,
    Intermediate.SERVICE_MODE: N_("Payment by card is not possible at the moment."),
    Intermediate.APPROVED_FILL_UP: N_("Payment approved."),
    Intermediate.APPROVED_TAKE_GOODS: N_("Payment approved."),
    Intermediate.DECLINED: N_("The payment was declined."),
    Intermediate.CARD_INSERTION_DETECTED: N_("Card detected. Please wait."),
    Intermediate.WAITING_FOR_CASHIER: WAIT,
    Intermediate.OFFLINE: WAIT,
    Intermediate.ONLINE: WAIT,
    Intermediate.OFFLINE_TRANSACTION: WAIT,
}


FOLLOW = N_("Please follow the instructions on the card terminal.")

#: result code of a payment that failed -> why, in the customer's words (others: no reason)
RESULTS: dict[int, str] = {
    ResultCode.DECLINED: N_("The card's bank did not allow the payment."),
    ResultCode.CARD_NOT_READABLE: UNREADABLE,
    0x65: UNREADABLE,  # card data not present
    0x6E: NOT_HERE,  # card in blocked list
    0x6F: NOT_HERE,  # wrong currency
    0x71: N_("There is not enough money on the card's account."),
    0x72: UNREADABLE,  # chip error
    0x73: UNREADABLE,  # card data incorrect
    0x78: N_("The card has expired."),
    0x79: NOT_HERE,  # card not yet valid
    0x7A: NOT_HERE,  # card unknown
    ResultCode.NOT_POSSIBLE: N_("Payment by card is not possible at the moment."),
    ResultCode.SYSTEM_ERROR: N_("Payment by card is not possible at the moment."),
}


def terminal_prompt(code: int | None, text: str, tr: Callable[[str], str]) -> str:
    """What the card screen shows for the terminal's status `code` (its own `text` is not
    shown: the terminal speaks its own language, not always the customer's)."""
    if code is not None and code in PROMPTS:
        return tr(PROMPTS[code])
    return tr(FOLLOW) if text or code is not None else ""


def result_text(code: int | None, tr: Callable[[str], str]) -> str:
    """Why a card payment failed, for the customer, or "" when we have no words for it."""
    return tr(RESULTS[code]) if code is not None and code in RESULTS else ""
