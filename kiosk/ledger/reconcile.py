"""Start-up reconciliation: every transaction a crash interrupted is closed without losing money
or minting credit.

Money taken (coins, stacked notes, approved card payments not given back) but not confirmed on
the key becomes a pending credit for that key, written at its next insertion. Whether an
interrupted write landed is decided then by the key's own top-up log, never guessed here: the
pending credit carries what the key holds if it did (`on_key`).

A card payment is only money once the terminal has kept it, and it keeps it only when the
kiosk answered its approval (vending). The payment is settled when the terminal's word is in
the journal: its receipt marked kept, a reversal, or a failed reversal. For an approval not
settled, whatever the journal says of the key, the terminal is asked (`card_kept`): kept is
journaled as its receipt; given back is journaled as `card_reversed`, and whatever the
transaction had already handed out for it (credit on the key, a pending credit, debt repaid, a
fee) becomes a claim on the contract account; unreachable leaves it unsettled (asked again at the
next start) and gives the customer the benefit of the doubt (a pending credit, marked unverified
for staff).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

from kiosk.domain.engine import Outcome, split_payment
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import Entry, Journal

log = logging.getLogger(__name__)

#: asks the card terminal whether it kept the payment of this `card_approved` entry: True,
#: False (given back), None (cannot tell)
CardKept = Callable[[Entry], "bool | None"]


def _paid(entries: list[Entry], currency: str) -> Money:
    total = Money.zero(currency)
    for e in entries:
        if e.amount is None:
            continue
        if e.kind in (Kind.CASH_IN, Kind.CARD_APPROVED):
            total += e.amount
        elif e.kind == Kind.CARD_REVERSED:
            total -= e.amount
    return total


def settled(entries: list[Entry]) -> bool:
    """Is the terminal's word on the transaction's last card approval in the journal?"""
    seqs = [e.seq for e in entries if e.kind == Kind.CARD_APPROVED]
    if not seqs:
        return True
    return any(
        e.seq > seqs[-1]
        and (
            e.kind in (Kind.CARD_REVERSED, Kind.CARD_REVERSAL_FAILED)
            or (e.kind == Kind.CARD_RECEIPT and e.data.get("kept") is True)
        )
        for e in entries
    )


def _may_be_on_key(entries: list[Entry]) -> Money | None:
    """The credit a write of this open transaction put on the key if it landed: the last split's,
    unless the key refused that write for certain (None: nothing can be on the key)."""
    splits = [e for e in entries if e.kind == Kind.SPLIT and e.amount is not None and e.amount]
    if not splits:
        return None
    last = splits[-1]
    refused = any(
        e.seq > last.seq and e.kind == Kind.WRITE_FAILED and e.data.get("uncertain") is False
        for e in entries
    )
    return None if refused else last.amount


#: a split's allocation, as its transaction's close repeats it
_ALLOCATION = ("paid", "fee", "fee_net", "fee_vat", "debt", "credit", "vat_bp")


def _record(
    txid: str, key: str | None, kind: Kind, amount: Money | None = None, **data: object
) -> Record:
    return Record(kind, txid=txid, key=key, amount=amount, data=dict(data))


def plan(journal: Journal, site: Site) -> list[Record]:
    """The records that close every interrupted transaction (pure read; nothing written)."""
    records: list[Record] = []
    for txid in journal.open_txids():
        entries = journal.by_txid(txid)
        key = next((e.key for e in entries if e.key), None)
        paid = _paid(entries, site.currency)
        splits = [e for e in entries if e.kind == Kind.SPLIT]
        written = next((e for e in entries if e.kind == Kind.KEY_WRITTEN), None)
        on_key = written.amount if written is not None else _may_be_on_key(entries)
        rec = partial(_record, txid, key)
        opened = next((e for e in entries if e.kind == Kind.TX_OPENED), None)
        bound = {"key_written": opened.data["key_written"]} if opened and isinstance(
            opened.data.get("key_written"), int) else {}  # fmt: skip
        if not paid:
            given_back = any(e.kind == Kind.CARD_REVERSED for e in entries)
            outcome = Outcome.REVERSED if given_back else Outcome.CANCELLED
            if written is not None and written.amount:  # on the key, and nothing pays for it
                records.append(rec(Kind.CLAIM, written.amount, reason="payment given back"))
            elif on_key:  # perhaps on the key: the key's log decides at its next insertion
                zero = Money.zero(site.currency)
                records.append(
                    rec(Kind.PENDING_CREDIT, zero, reason="interrupted", verify_on_key=True,
                        on_key=on_key.minor, **bound)
                )  # fmt: skip
            records.append(rec(Kind.TX_CLOSED, outcome=str(outcome), interrupted=True))
            continue
        split_data = (
            {k: v for k, v in splits[-1].data.items() if k in _ALLOCATION}
            if splits and splits[-1].data.get("paid") == paid.minor
            else None
        )
        if split_data is None:
            # No allocation was fixed before the crash: the whole amount is owed to the key,
            # with no fee and no debt recovery (in the customer's favour).
            zero = Money.zero(site.currency)
            s = split_payment(paid, zero, site.fee, site.recovery, charge_fee=False)
            split_data = s.as_data()
            records.append(rec(Kind.SPLIT, s.credit, **split_data, reconciled=True))
        credit = Money(split_data["credit"], site.currency)
        if written is not None:
            if on_key is not None and on_key > credit:  # part of what the key got was given back
                records.append(rec(Kind.CLAIM, on_key - credit, reason="payment given back"))
            records.append(
                rec(Kind.TX_CLOSED, outcome=str(Outcome.COMPLETED), **split_data, interrupted=True)
            )
            continue
        unverified = not settled(entries)
        extra: dict[str, object] = {"card_unverified": True} if unverified else {}
        if on_key is not None:
            extra["on_key"] = on_key.minor
        if credit or on_key:  # owed, or (0.00) only the key's log to look at
            records.append(
                rec(
                    Kind.PENDING_CREDIT,
                    credit,
                    reason="interrupted",
                    verify_on_key=True,
                    **extra,
                    **bound,
                )
            )
        outcome = Outcome.PENDING if credit else Outcome.COMPLETED
        records.append(rec(Kind.TX_CLOSED, outcome=str(outcome), **split_data, interrupted=True))
    return records


def card_plan(journal: Journal, card_kept: CardKept | None) -> list[Record]:
    """What the terminal says of the last card approval if its outcome is not in the journal
    (a crash cut the dialogue off), and the claim for what a payment given back had bought."""
    last = journal.last_of_kind(Kind.CARD_APPROVED)
    if last is None or card_kept is None:
        return []
    assert last.txid is not None and last.amount is not None
    entries = journal.by_txid(last.txid)
    if settled(entries):
        return []
    kept = card_kept(last)
    rec = partial(_record, last.txid, last.key)
    if kept is None:
        log.warning("card payment %s: the terminal cannot say whether it kept it", last.txid)
        return []
    if kept:
        return [rec(Kind.CARD_RECEIPT, blocks={}, kept=True, found_at_start=True)]
    log.warning("card payment %s was given back by the terminal (kiosk interrupted)", last.txid)
    out = [rec(Kind.CARD_REVERSED, last.amount, after_credit=False, found_at_start=True)]
    closed = any(e.kind == Kind.TX_CLOSED for e in entries)
    if closed:  # all it paid for was handed out (credit, pending credit, debt, fee): a claim
        out.append(rec(Kind.CLAIM, last.amount, reason="payment given back"))
    return out


def reconcile(
    journal: Journal, site: Site, now: datetime, card_kept: CardKept | None = None
) -> list[Record]:
    """Close interrupted transactions in one durable commit; returns what was written."""
    card = card_plan(journal, card_kept)
    if card:  # first: what the terminal did decides what the interrupted transaction holds
        journal.append(card, now)
    records = plan(journal, site)
    if records:
        txids = sorted({r.txid for r in records if r.txid})
        records.append(Record(Kind.RECONCILED, data={"transactions": txids}))
        journal.append(records, now)
        log.warning("reconciled %d interrupted transaction(s): %s", len(txids), ", ".join(txids))
    return card + records
