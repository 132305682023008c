"""Facts of the wire protocol shared by the kiosk and head office (no I/O, nothing of either
imported): the journal's entry kinds, the sign their amounts take and the payload each carries
(one frozen type per kind, checked when an entry is written and when one is read), the hash
chain over the entries, the currencies and how an amount is written, the settings head office
may change. The wire format is v1: an entry's `data` is the JSON object of its payload."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

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


def minor_units(text: str, currency: str, *, comma: bool = False) -> int:
    """An amount a person typed, in minor units: decimal text with at most the currency's
    digits after the point ("12.50", "12.5", "50" is fifty, never 0.50); with `comma` (a
    German form) "12,50" too. A thousands separator, a sign, a currency or anything else is
    refused (ValueError, saying how to write it): money is never guessed."""
    exp = EXPONENT.get(currency)
    if exp is None:
        raise ValueError(f"currency {currency!r} is not one of {', '.join(EXPONENT)}")
    said = text.strip()
    points = ".,"[: 2 if comma else 1]
    digits = rf"([0-9]{{1,9}})(?:[{re.escape(points)}]([0-9]{{1,{exp}}}))?"
    shape = digits if exp else r"([0-9]{1,9})()"
    m = re.fullmatch(shape, said)
    if m is None:
        example = "12,50 or 12.50" if comma else "12.50"
        raise ValueError(f"amount {text!r} is not an amount in {currency}: write it as "
                         f"{example}" + (f" (at most {exp} digits after the point)" if exp else ""))
    whole, frac = m.group(1), m.group(2) or ""
    return int(whole) * 10**exp + int(frac.ljust(exp, "0") or 0)


def amount_text(minor: int, currency: str) -> str:
    """An amount in minor units as text, e.g. -1250 EUR -> "-12.50 EUR"."""
    return f"{decimals(minor, currency)} {currency}"


class KeyReason(StrEnum):
    """Why head office blocked a key (or has not activated it): a code, never free text. The
    kiosk tells the customer each in their language with what to do next; a code it does not
    know (from a newer head office) gets a neutral text. A note for the staff stays at head
    office and never reaches an automat."""

    LOST = "lost"
    STOLEN = "stolen"
    DEFECTIVE = "defective"
    REPLACED = "replaced"
    CONTRACT_ENDED = "contract_ended"
    DEPOSIT_UNPAID = "deposit_unpaid"
    NOT_ACTIVATED = "not_activated"
    UNDER_REVIEW = "under_review"


#: what `--reason`, an import and the console accept: a code, or none
KEY_REASONS = ("", *(r.value for r in KeyReason))


def key_reason(text: str) -> str:
    """`text` as a reason code, or ValueError naming the codes."""
    if text not in KEY_REASONS:
        raise ValueError(
            f"reason {text!r} is not one of {', '.join(KEY_REASONS[1:])} (or none); "
            "a note for the staff goes in --note"
        )
    return text


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
    RELEASE = "release"  # an update's state: downloading, verified, installed, healthy, ...


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
    Kind.KEY_REFUSED: None, Kind.FAULT: None, Kind.RECONCILED: None, Kind.RELEASE: None,
}  # fmt: skip

#: the states of an update a kiosk journals (`release` entries), in the order they come
RELEASE_STATES = ("pending", "downloading", "verified", "installed", "healthy", "rolled_back",
                  "refused")  # fmt: skip


# ---------------------------------------------------------------- the hash chain

GENESIS = "0" * 64


def entry_hash(
    prev_hash: str,
    seq: int,
    ts: str,
    kind: str,
    txid: str | None,
    key: str | None,
    amount: int | None,
    currency: str | None,
    data: str,
    secret: bytes | None = None,
) -> str:
    """The hash of an entry over the previous hash and the canonical form of every column: with
    the kiosk's chain `secret`, HMAC-SHA256 keyed with it (nobody without the secret computes
    one, so an entry edited and its hashes recomputed no longer verifies); without one, plain
    SHA-256 (a journal before its kiosk had a secret, the demo, tests)."""
    body = _canonical([prev_hash, seq, ts, kind, txid, key, amount, currency, data]).encode()
    if secret is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.digest(secret, body, "sha256").hex()


#: the bytes of a kiosk's chain secret (`sync.admin kiosk add` makes it; written as 64 hex digits)
CHAIN_SECRET_BYTES = 32


def chain_secret(text: str) -> bytes:
    """A chain secret written as hex, as bytes; ValueError unless it is 64 hex digits."""
    text = text.strip()
    hexdigits = "0123456789abcdefABCDEF"
    if len(text) != 2 * CHAIN_SECRET_BYTES or not all(c in hexdigits for c in text):
        raise ValueError(f"a chain secret is {2 * CHAIN_SECRET_BYTES} hex digits")
    return bytes.fromhex(text)


def keyed(seq: int, secret: bytes | None, keyed_from: int | None) -> bytes | None:
    """The secret entry `seq` of a chain is hashed with: none before `keyed_from` (the first
    keyed entry; None: no entry is keyed), `secret` from it on. LookupError if the entry is
    keyed and `secret` is None (it cannot be checked without the secret)."""
    if keyed_from is None or seq < keyed_from:
        return None
    if secret is None:
        raise LookupError(f"entries from {keyed_from} on are keyed with the kiosk's chain "
                          "secret")
    return secret


#: json.dumps(..., separators=(",", ":"), ensure_ascii=False), with its encoder made once
#: (json.dumps builds a new one for every call with arguments: most of a verify's time)
_canonical = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


# ---------------------------------------------------------------- payloads


class PayloadError(ValueError):
    """An entry's data is not the payload its kind carries."""


@dataclass(frozen=True)
class Payload:
    """What an entry of one kind carries in `data`. Written strictly (a field its kind does not
    have is a defect of the writer); read tolerantly (an older kiosk may have written a field
    since dropped), but every field that is there has its type and the required ones are."""

    #: kinds that also carry fields from outside the automat (the terminal's receipt fields,
    #: an audited action's details): any JSON value under any other name
    OPEN: ClassVar[bool] = False
    #: the kept-records batch an entry was appended from after a failed write (kiosk/ledger)
    kept_batch: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any], *, strict: bool = False) -> Payload:
        spec = _SPECS[cls]
        extra = set(data) - set(spec)
        if extra and strict and not cls.OPEN:
            raise PayloadError(f"{cls.__name__} has no field {', '.join(sorted(extra))}")
        for name, (kinds, required) in spec.items():
            if name not in data:
                if required:
                    raise PayloadError(f"{cls.__name__} needs {name}")
                continue
            value = data[name]
            if not _is(value, kinds):
                raise PayloadError(f"{cls.__name__}.{name} is {value!r}, not "
                                   f"{' or '.join(k.__name__ for k in kinds)}")  # fmt: skip
        known = {k: v for k, v in data.items() if k in spec}
        return cls(**known)


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    if value is None:
        return type(None) in kinds
    if isinstance(value, bool):  # not an int here
        return bool in kinds
    return isinstance(value, tuple(k for k in kinds if k is not bool))


Str, Int, Flag = str | None, int | None, bool | None


@dataclass(frozen=True)
class KioskStarted(Payload):
    site: str = ""
    kiosk: Str = None


@dataclass(frozen=True)
class TxOpened(Payload):
    method: str = ""
    lang: Str = None
    target: Int = None
    contract_account: Str = None
    meter: dict[str, Any] | None = None
    key_written: Int = None  # the key's write number when the transaction opened


@dataclass(frozen=True)
class CashIn(Payload):
    medium: str = ""  # coin or note
    channel: Int = None
    counter: Int = None  # the acceptor's event counter: a restart resumes after it
    late: Flag = None  # arrived after the payment ended: owed to the key as a pending credit


@dataclass(frozen=True)
class CashUnattributed(Payload):
    medium: str = ""
    channel: Int = None
    counter: Int = None
    refused: Str = None  # why the engine did not take it (a defect: staff settle it)


@dataclass(frozen=True)
class CardApproved(Payload):
    OPEN = True  # the terminal's receipt fields
    card: Str = None
    pan: Str = None  # masked
    receipt_no: Int = None
    trace: Int = None
    terminal_id: Str = None
    turnover_no: Int = None
    payment_type: Int = None


@dataclass(frozen=True)
class CardFailed(Payload):
    outcome: str = ""
    reason: str = ""
    code: Int = None  # the terminal's result code, when it gave one


@dataclass(frozen=True)
class CardReversed(Payload):
    after_credit: Flag = None
    found_at_start: Flag = None
    reason: Str = None


@dataclass(frozen=True)
class CardReversalFailed(Payload):
    reason: Str = None


@dataclass(frozen=True)
class Claim(Payload):
    reason: str = ""


@dataclass(frozen=True)
class Split(Payload):
    paid: int = 0
    fee: int = 0
    debt: int = 0
    credit: int = 0
    fee_net: Int = None
    fee_vat: Int = None
    vat_bp: Int = None
    reconciled: Flag = None


@dataclass(frozen=True)
class KeyWritten(Payload):
    credit_after: int = 0
    found_on_key: Flag = None
    write_no: Int = None  # the key's write number of this write (head office checks it)


@dataclass(frozen=True)
class WriteFailed(Payload):
    reason: str = ""
    uncertain: Flag = None


@dataclass(frozen=True)
class PendingCredit(Payload):
    reason: str = ""
    key_written: Int = None
    on_key: Int = None
    origin: Str = None
    verify_on_key: Flag = None
    card_unverified: Flag = None  # the card's fate not known: the customer has the benefit
    regranted: Flag = None  # released to another kiosk, then granted back to this one


@dataclass(frozen=True)
class PendingWritten(Payload):
    credit_after: Int = None
    found_on_key: Flag = None
    not_on_key: Flag = None
    write_no: Int = None  # the key's write number it was written (or found) as


@dataclass(frozen=True)
class PendingReleased(Payload):
    reason: str = ""


@dataclass(frozen=True)
class Audit(Payload):
    OPEN = True  # each action's details
    action: str = ""
    who: str = ""


@dataclass(frozen=True)
class TestCash(Payload):
    medium: str = ""
    who: str = ""
    channel: Int = None
    counter: Int = None


@dataclass(frozen=True)
class CashboxEmptied(Payload):
    counts: dict[str, Any] | None = None
    test_money: int = 0
    who: str = ""


@dataclass(frozen=True)
class TxClosed(Payload):
    outcome: str = ""
    lang: Str = None
    receipt: Str = None  # wanted or declined
    interrupted: Flag = None
    key_removed: Flag = None
    timeout: Flag = None
    paid: Int = None
    fee: Int = None
    fee_net: Int = None
    fee_vat: Int = None
    vat_bp: Int = None
    debt: Int = None
    credit: Int = None


@dataclass(frozen=True)
class CardReceipt(Payload):
    blocks: dict[str, Any] | None = None
    kept: Flag = None
    found_at_start: Flag = None


@dataclass(frozen=True)
class Receipt(Payload):
    printed: bool = False
    reason: Str = None


@dataclass(frozen=True)
class AcceptorCounter(Payload):
    device: str = ""
    counter: int = 0


@dataclass(frozen=True)
class KeyRefused(Payload):
    reason: str = ""
    detail: Str = None
    currency: Str = None


@dataclass(frozen=True)
class Fault(Payload):
    device: str = ""
    code: Int = None
    text: Str = None
    counter: Int = None
    escrow: Int = None  # a note's value whose fate the fault left unknown
    cleared: Flag = None
    event: Str = None


@dataclass(frozen=True)
class Reconciled(Payload):
    transactions: list[str] | None = None


@dataclass(frozen=True)
class Release(Payload):
    state: str = ""  # one of RELEASE_STATES
    version: str = ""
    detail: Str = None  # why (a refusal's reason, a rollback's cause)


PAYLOADS: dict[Kind, type[Payload]] = {
    Kind.KIOSK_STARTED: KioskStarted, Kind.TX_OPENED: TxOpened, Kind.CASH_IN: CashIn,
    Kind.CASH_UNATTRIBUTED: CashUnattributed, Kind.CARD_APPROVED: CardApproved,
    Kind.CARD_FAILED: CardFailed, Kind.CARD_REVERSED: CardReversed,
    Kind.CARD_REVERSAL_FAILED: CardReversalFailed, Kind.CLAIM: Claim, Kind.SPLIT: Split,
    Kind.KEY_WRITTEN: KeyWritten, Kind.WRITE_FAILED: WriteFailed,
    Kind.PENDING_CREDIT: PendingCredit, Kind.PENDING_WRITTEN: PendingWritten,
    Kind.PENDING_RELEASED: PendingReleased, Kind.AUDIT: Audit, Kind.TEST_CASH: TestCash,
    Kind.CASHBOX_EMPTIED: CashboxEmptied, Kind.TX_CLOSED: TxClosed,
    Kind.CARD_RECEIPT: CardReceipt, Kind.RECEIPT: Receipt,
    Kind.ACCEPTOR_COUNTER: AcceptorCounter, Kind.KEY_REFUSED: KeyRefused, Kind.FAULT: Fault,
    Kind.RECONCILED: Reconciled, Kind.RELEASE: Release,
}  # fmt: skip


def _spec(cls: type[Payload]) -> dict[str, tuple[tuple[type, ...], bool]]:
    """Each field's accepted types, and whether it is required (a field whose type does not
    admit None is)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = tuple(typing.get_origin(a) or a for a in args)
        out[f.name] = (kinds, type(None) not in kinds)
    return out


_SPECS = {cls: _spec(cls) for cls in PAYLOADS.values()}


def payload(kind: Kind | str, data: Mapping[str, Any], *, strict: bool = False) -> Payload:
    """The typed payload of an entry of `kind` (PayloadError if `data` is not one)."""
    try:
        cls = PAYLOADS[Kind(kind)]
    except ValueError:
        raise PayloadError(f"unknown kind {kind!r}") from None
    return cls.parse(data, strict=strict)
