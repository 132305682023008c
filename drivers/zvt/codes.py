"""ZVT code tables (PA00P015 ch. 10): result codes, intermediate status codes, terminal
status and card types."""

from __future__ import annotations

from enum import IntEnum


class ResultCode(IntEnum):
    """The result codes (BMP 27) the automat acts on by meaning; every code's text is in
    RESULT_CODES, 01-63 are the card issuer's own."""

    OK = 0x00
    DECLINED = 0x05  # by the card issuer
    CARD_NOT_READABLE = 0x64
    ABORTED = 0x6C  # by timeout or the abort key (the customer, or our 06 B0)
    NOT_POSSIBLE = 0x83
    PLEASE_WAIT = 0x9C
    ALREADY_REVERSED = 0xB4
    REVERSAL_NOT_POSSIBLE = 0xB5
    SYSTEM_ERROR = 0xFF


RESULT_CODES: dict[int, str] = {
    0x00: "no error",
    0x05: "declined by the card issuer",
    0x64: "card not readable",
    0x65: "card data not present",
    0x66: "processing error",
    0x67: "function not permitted for ec/Maestro cards",
    0x68: "function not permitted for credit and tank cards",
    0x6A: "turnover file full",
    0x6B: "function deactivated (terminal not registered)",
    0x6C: "abort via timeout or abort key",
    0x6E: "card in blocked list",
    0x6F: "wrong currency",
    0x71: "credit not sufficient (chip card)",
    0x72: "chip error",
    0x73: "card data incorrect",
    0x74: "DUKPT engine exhausted",
    0x75: "text not authentic",
    0x76: "PAN not in white list",
    0x77: "end-of-day batch not possible",
    0x78: "card expired",
    0x79: "card not yet valid",
    0x7A: "card unknown",
    0x7B: "fallback to magnetic stripe for girocard not possible",
    0x7C: "fallback to magnetic stripe not possible",
    0x7D: "communication error",
    0x7E: "fallback to magnetic stripe not possible, debit advice possible",
    0x83: "function not possible",
    0x85: "key missing",
    0x89: "PIN pad defective",
    0x9A: "ZVT protocol error",
    0x9B: "error from dial-up/communication fault",
    0x9C: "please wait",
    0xA0: "receiver not ready",
    0xA1: "remote station does not respond",
    0xA3: "no connection",
    0xA4: "submission of Geldkarte not possible",
    0xA5: "function not allowed due to PCI-DSS/P2PE rules",
    0xB1: "memory full",
    0xB2: "merchant journal full",
    0xB4: "already reversed",
    0xB5: "reversal not possible",
    0xB7: "pre-authorisation incorrect (amount too high) or amount wrong",
    0xB8: "error pre-authorisation",
    0xBF: "voltage supply too low",
    0xC0: "card locking mechanism defective",
    0xC1: "merchant card locked",
    0xC2: "diagnosis required",
    0xC3: "maximum amount exceeded",
    0xC4: "card profile invalid",
    0xC5: "payment method not supported",
    0xC6: "currency not applicable",
    0xC8: "amount too small",
    0xC9: "max. transaction amount too small",
    0xCB: "function only allowed in EURO",
    0xCC: "printer not ready",
    0xCD: "cashback not possible",
    0xD2: "function not permitted for service cards",
    0xDC: "card inserted",
    0xDD: "error during card-eject",
    0xDE: "error during card insertion",
    0xE0: "remote maintenance activated",
    0xE2: "card-reader does not answer / defective",
    0xE3: "shutter closed",
    0xE4: "terminal activation required",
    0xE7: "min. one goods-group not found",
    0xE8: "no goods-groups table loaded",
    0xE9: "restriction code not permitted",
    0xEA: "card code not permitted",
    0xEB: "function not executable (PIN algorithm unknown)",
    0xEC: "PIN processing not possible",
    0xED: "PIN pad defective",
    0xF0: "open end-of-day batch present",
    0xF1: "ec-cash/Maestro offline error",
    0xF5: "OPT error",
    0xF6: "OPT data not available",
    0xFA: "error transmitting offline transactions",
    0xFB: "turnover data set defective",
    0xFC: "necessary device not present or defective",
    0xFD: "baud rate not supported",
    0xFE: "register unknown",
    0xFF: "system error",
}


def result_text(code: int) -> str:
    if code in RESULT_CODES:
        return RESULT_CODES[code]
    if 0x01 <= code <= 0x63:
        return f"declined by the host ({code:02d})"
    return f"result code {code:02X}"


class Intermediate(IntEnum):
    """Intermediate status codes (04 FF), PA00P015 ch. 10.3."""

    CONFIRM_AMOUNT = 0x00
    WATCH_PIN_PAD = 0x01
    WATCH_PIN_PAD_AGAIN = 0x02
    NOT_ACCEPTED = 0x03
    WAITING_FOR_HOST = 0x04
    SENDING_AUTO_REVERSAL = 0x05
    SENDING_POST_BOOKINGS = 0x06
    CARD_NOT_ADMITTED = 0x07
    CARD_UNKNOWN = 0x08
    CARD_EXPIRED = 0x09
    INSERT_CARD = 0x0A
    REMOVE_CARD = 0x0B
    CARD_NOT_READABLE = 0x0C
    PROCESSING_ERROR = 0x0D
    PLEASE_WAIT = 0x0E
    AUTOMATIC_END_OF_DAY = 0x0F
    INVALID_CARD = 0x10
    BALANCE_DISPLAY = 0x11
    SYSTEM_MALFUNCTION = 0x12
    PAYMENT_NOT_POSSIBLE = 0x13
    CREDIT_NOT_SUFFICIENT = 0x14
    INCORRECT_PIN = 0x15
    LIMIT_NOT_SUFFICIENT = 0x16
    PLEASE_WAIT_AGAIN = 0x17
    PIN_TRY_LIMIT_EXCEEDED = 0x18
    CARD_DATA_INCORRECT = 0x19
    SERVICE_MODE = 0x1A
    APPROVED_FILL_UP = 0x1B
    APPROVED_TAKE_GOODS = 0x1C
    DECLINED = 0x1D
    CARD_INSERTION_DETECTED = 0x68
    WAITING_FOR_CASHIER = 0xC8
    OFFLINE = 0xF1
    ONLINE = 0xF2
    OFFLINE_TRANSACTION = 0xF3


#: the specification's text for each (the log's words; a customer reads ours, in
#: kiosk/documents/terminal.py)
INTERMEDIATE_TEXTS: dict[Intermediate, str] = {
    Intermediate.CONFIRM_AMOUNT: "waiting for amount confirmation",
    Intermediate.WATCH_PIN_PAD: "please watch PIN pad",
    Intermediate.WATCH_PIN_PAD_AGAIN: "please watch PIN pad",
    Intermediate.NOT_ACCEPTED: "not accepted",
    Intermediate.WAITING_FOR_HOST: "waiting for response from FEP",
    Intermediate.SENDING_AUTO_REVERSAL: "sending auto-reversal",
    Intermediate.SENDING_POST_BOOKINGS: "sending post-bookings",
    Intermediate.CARD_NOT_ADMITTED: "card not admitted",
    Intermediate.CARD_UNKNOWN: "card unknown / undefined",
    Intermediate.CARD_EXPIRED: "expired card",
    Intermediate.INSERT_CARD: "insert card",
    Intermediate.REMOVE_CARD: "please remove card",
    Intermediate.CARD_NOT_READABLE: "card not readable",
    Intermediate.PROCESSING_ERROR: "processing error",
    Intermediate.PLEASE_WAIT: "please wait",
    Intermediate.AUTOMATIC_END_OF_DAY: "terminal running automatic end-of-day",
    Intermediate.INVALID_CARD: "invalid card",
    Intermediate.BALANCE_DISPLAY: "balance display",
    Intermediate.SYSTEM_MALFUNCTION: "system malfunction",
    Intermediate.PAYMENT_NOT_POSSIBLE: "payment not possible",
    Intermediate.CREDIT_NOT_SUFFICIENT: "credit not sufficient",
    Intermediate.INCORRECT_PIN: "incorrect PIN",
    Intermediate.LIMIT_NOT_SUFFICIENT: "limit not sufficient",
    Intermediate.PLEASE_WAIT_AGAIN: "please wait",
    Intermediate.PIN_TRY_LIMIT_EXCEEDED: "PIN try limit exceeded",
    Intermediate.CARD_DATA_INCORRECT: "card data incorrect",
    Intermediate.SERVICE_MODE: "service mode",
    Intermediate.APPROVED_FILL_UP: "approved, please fill up",
    Intermediate.APPROVED_TAKE_GOODS: "approved, please take goods",
    Intermediate.DECLINED: "declined",
    Intermediate.CARD_INSERTION_DETECTED: "card insertion detected",
    Intermediate.WAITING_FOR_CASHIER: "waiting for cashier",
    Intermediate.OFFLINE: "offline",
    Intermediate.ONLINE: "online",
    Intermediate.OFFLINE_TRANSACTION: "offline transaction",
}

TERMINAL_STATUS: dict[int, str] = {
    0x00: "ready",
    0x51: "initialisation required",
    0x62: "date/time wrong",
    0x9C: "please wait",
    0x9D: "partial issue",
    0xB1: "memory full",
    0xB2: "journal full",
    0xBF: "low voltage",
    0xC0: "card lock defect",
    0xC1: "merchant card locked",
    0xC2: "diagnosis required",
    0xC4: "card profiles invalid",
    0xCC: "printer not ready",
    0xDC: "card inserted",
    0xDF: "out of order",
    0xE0: "remote maintenance",
    0xE1: "card not fully removed",
    0xE2: "card reader defect",
    0xE3: "shutter closed",
    0xE4: "activation required",
    0xF0: "reconciliation (end-of-day) required",
    0xF6: "OPT data missing",
}

CARD_TYPES: dict[int, str] = {
    0x05: "girocard",
    0x06: "Mastercard",
    0x0A: "Visa",
    0x0D: "V PAY",
    0x2E: "Maestro",
    0x08: "American Express",
    0x0C: "Diners",
    0x0E: "JCB",
}
