"""Start-up reconciliation: every transaction a crash interrupted is closed without losing money.

Money taken (coins, stacked notes, approved card payments not reversed) but not confirmed on
the key becomes a pending credit for that key, written at its next insertion. Whether an
interrupted write landed is decided then by the key's own top-up log, never guessed here.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial

from kiosk.config import Site
from kiosk.engine import Outcome, split_payment
from kiosk.events import Kind, Record
from kiosk.journal import Entry, Journal
from kiosk.money import Money

log = logging.getLogger(__name__)


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
        records.append(rec(Kind.PENDING_CREDIT, credit, reason="interrupted", verify_on_key=True))
        records.append(
            rec(Kind.TX_CLOSED, outcome=str(Outcome.PENDING), **split_data, interrupted=True)
        )
    return records


def reconcile(journal: Journal, site: Site, now: datetime) -> list[Record]:
    """Close interrupted transactions in one durable commit; returns what was written."""
    records = plan(journal, site)
    if records:
        txids = sorted({r.txid for r in records if r.txid})
        records.append(Record(Kind.RECONCILED, data={"transactions": txids}))
        journal.append(records, now)
        log.warning("reconciled %d interrupted transaction(s): %s", len(txids), ", ".join(txids))
    return records
