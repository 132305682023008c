"""Text reports of the journal for the CLI: transactions and raw entries, in local time."""

from __future__ import annotations

from typing import TextIO

from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import Journal, iter_transactions


def _m(minor: int, currency: str) -> str:
    return Money(minor, currency).amount_text()


def print_transactions(journal: Journal, site: Site, out: TextIO, since_seq: int = 1) -> int:
    """One line per transaction; returns how many were printed."""
    entries = journal.entries(after=since_seq - 1)
    tz = site.hours.tz
    rows = list(iter_transactions(entries))
    out.write(
        f"{'local time':<17} {'transaction':<30} {'key':<8} {'method':<6} "
        f"{'paid':>8} {'fee':>6} {'debt':>7} {'credit':>8}  outcome\n"
    )
    for t in rows:
        cur = t["currency"] or site.currency
        out.write(
            f"{t['opened'].astimezone(tz):%Y-%m-%d %H:%M} {t['txid']:<30} {t['key'] or '-':<8} "
            f"{t['method'] or '-':<6} {_m(t['paid'], cur):>8} {_m(t['fee'], cur):>6} "
            f"{_m(t['debt'], cur):>7} {_m(t['credit'], cur):>8}  {t['outcome']}\n"
        )
    others = [e for e in entries if e.txid is None or e.kind in ("key_refused", "pending_written")]
    for e in others:
        detail = ", ".join(f"{k}={v}" for k, v in e.data.items() if v not in (None, ""))
        out.write(f"{e.ts.astimezone(tz):%Y-%m-%d %H:%M} {e.kind:<30} {e.key or '-':<8} {detail}\n")
    return len(rows)


def print_entries(journal: Journal, site: Site, out: TextIO, limit: int | None = None) -> None:
    """Every journal entry, oldest first (the newest `limit` when given)."""
    entries = journal.entries()
    if limit is not None:
        entries = entries[-limit:]
    tz = site.hours.tz
    for e in entries:
        amount = str(e.amount) if e.amount is not None else ""
        detail = ", ".join(f"{k}={v}" for k, v in e.data.items() if v not in (None, ""))
        out.write(
            f"{e.seq:>6} {e.ts.astimezone(tz):%Y-%m-%d %H:%M:%S} {e.kind:<20} "
            f"{e.txid or '-':<30} {e.key or '-':<8} {amount:>12}  {detail}\n"
        )
