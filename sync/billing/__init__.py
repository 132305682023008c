"""The utility's billing system and head office: files in (keys, debts, credits), payments out,
the money reports and the chain checks over what the kiosks delivered."""

from sync.billing.files import BadImport, Taken, import_file, parse_amount
from sync.billing.payments import (
    Payment,
    local_text,
    local_time,
    money_taken,
    payments,
    payments_text,
    verify,
    write_payments,
)

__all__ = ["BadImport", "Payment", "Taken", "import_file", "local_text", "local_time",
           "money_taken", "parse_amount", "payments", "payments_text", "verify",
           "write_payments"]  # fmt: skip
