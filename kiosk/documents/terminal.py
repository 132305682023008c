"""The card terminal's prompts in the customer's language.

During a payment the terminal sends intermediate status codes (ZVT 04 FF, PA00P015 ch. 3.7)
with a display text of its own, in the language it was set up with (German, English, or its
vendor's idea of either). The card screen shows our text for the code, from the catalogues;
the terminal's own text only for a code we have no text for. The raw text goes to the log.
"""

from __future__ import annotations

from collections.abc import Callable

from kiosk.documents.i18n import N_

WAIT = N_("Please wait.")
NOT_HERE = N_("This card cannot be used here.")
UNREADABLE = N_("The card could not be read. Please try again.")
NOT_PROCESSED = N_("The payment could not be processed.")

#: intermediate status code -> our text (English msgid, translated from the catalogues)
PROMPTS: dict[int, str] = {
    0x00: N_("Please confirm the amount on the card terminal."),
    0x01: N_("Please enter your PIN on the card terminal."),
    0x02: N_("Please enter your PIN on the card terminal."),
    0x03: N_("The card was not accepted."),
    0x04: N_("Connecting to the bank. Please wait."),
    0x05: WAIT,
    0x06: WAIT,
    0x07: NOT_HERE,
    0x08: NOT_HERE,
    0x09: N_("The card has expired."),
    0x0A: N_("Please insert your card or hold it to the card terminal."),
    0x0B: N_("Please take your card."),
    0x0C: UNREADABLE,
    0x0D: NOT_PROCESSED,
    0x0E: WAIT,
    0x0F: WAIT,
    0x10: NOT_HERE,
    0x11: N_("Please look at the card terminal."),
    0x12: NOT_PROCESSED,
    0x13: N_("Payment by card is not possible at the moment."),
    0x14: N_("There is not enough money on the card's account."),
    0x15: N_("Wrong PIN. Please try again."),
    0x16: N_("The card's limit is not sufficient."),
    0x17: WAIT,
    0x18: N_("Too many wrong PINs: the card cannot be used now."),
    0x19: UNREADABLE,
    0x1A: N_("Payment by card is not possible at the moment."),
    0x1B: N_("Payment approved."),
    0x1C: N_("Payment approved."),
    0x1D: N_("The payment was declined."),
    0x68: N_("Card detected. Please wait."),
    0xC8: WAIT,
    0xF1: WAIT,
    0xF2: WAIT,
    0xF3: WAIT,
}


def terminal_prompt(code: int | None, text: str, tr: Callable[[str], str]) -> str:
    """What the card screen shows for the terminal's status `code` (with its own `text`)."""
    if code is not None and code in PROMPTS:
        return tr(PROMPTS[code])
    return text
