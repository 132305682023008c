"""Start-up reconciliation: every transaction a crash interrupted is closed without losing money.

Money taken (coins, stacked notes, approved card payments not reversed) but not confirmed on
the key becomes a pending credit for that key, written at its next insertion. Whether an
interrupted write landed is decided then by the key's own top-up log, never guessed here.

A card payment is only money once the terminal has kept it, and it keeps it only when the
kiosk answered its approval (vending). If the kiosk died before the terminal's dialogue ended
(no `card_receipt` and no `card_reversed` for the last approval), the terminal is asked first
(`card_kept`): not kept means the money went back to the card, journaled as `card_reversed`
(after a written credit: a claim on the contract account); unreachable means the customer is
given the benefit of the doubt (a pending credit, marked unverified for staff).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

from kiosk.config import Site
from kiosk.engine import Outcome, split_payment
from kiosk.events import Kind, Record
from kiosk.journal import Entry, Journal
from kiosk.money import Money

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
        written = any(e.kind == Kind.KEY_WRITTEN for e in entries)
        rec = partial(_record, txid, key)
        if not paid:
            records.append(rec(Kind.TX_CLOSED, outcome=str(Outcome.CANCELLED), interrupted=True))
            continue
        split_data = (
            splits[-1].data if splits and splits[-1].data.get("paid") == paid.minor else None
        )
        if split_data is None:
            # No allocation was fixed before the crash: the whole amount is owed to the key,
            # with no fee and no debt recovery (in the customer's favour).
            zero = Money.zero(site.currency)
            s = split_payment(paid, zero, site.fee, site.recovery, charge_fee=False)
            split_data = s.as_data()
            records.append(rec(Kind.SPLIT, s.credit, **split_data, reconciled=True))
        if written:
            records.append(
                rec(Kind.TX_CLOSED, outcome=str(Outcome.COMPLETED), **split_data, interrupted=True)
            )
            continue
        credit = Money(split_data["credit"], site.currency)
        unverified = any(e.kind == Kind.CARD_APPROVED for e in entries) and not any(
            e.kind == Kind.CARD_RECEIPT for e in entries
        )
        records.append(
            rec(Kind.PENDING_CREDIT, credit, reason="interrupted", verify_on_key=True,
                **({"card_unverified": True} if unverified else {}))
        )  # fmt: skip
        records.append(
            rec(Kind.TX_CLOSED, outcome=str(Outcome.PENDING), **split_data, interrupted=True)
        )
    return records


def card_plan(journal: Journal, card_kept: CardKept | None) -> list[Record]:
    """What the terminal says of the last card approval whose dialogue the kiosk did not see
    end (a crash in between)."""
    approvals = journal.entries_of_kind(Kind.CARD_APPROVED)
    if not approvals or card_kept is None:
        return []
    last = approvals[-1]
    assert last.txid is not None
    entries = journal.by_txid(last.txid)
    if any(e.kind in (Kind.CARD_RECEIPT, Kind.CARD_REVERSED) for e in entries):
        return []  # the dialogue ended while the kiosk was running
    kept = card_kept(last)
    rec = partial(_record, last.txid, last.key)
    if kept is None:
        log.warning("card payment %s: the terminal cannot say whether it kept it", last.txid)
        return []
    if kept:
        return [rec(Kind.CARD_RECEIPT, blocks={}, found_at_start=True)]
    written = any(e.kind == Kind.KEY_WRITTEN for e in entries)
    log.warning("card payment %s was given back by the terminal (kiosk interrupted)", last.txid)
    return [rec(Kind.CARD_REVERSED, last.amount, after_credit=written, found_at_start=True)]


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
