"""Every payment out for the billing system, the money report's figures, and a check of every
kiosk's stored chain.

Out: one row per transaction that took money (completed, pending, reversed, or still open) and
one per unattributed payment, with what was paid, the fee and its VAT, the debt repaid and the
credit for the key. A transaction is booked on one local day only, the day of its first money
entry (one that spans midnight is not in two days' exports); over days that hold whole
transactions the sum is the money report's for the same days.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, true, tuple_

from sync.billing.sheet import write_csv
from sync.wire.protocol import GENESIS, decimals, entry_hash, keyed

CHUNK = 500  # transactions per statement


@dataclass
class Payment:
    txid: str
    kiosk: str
    local_time: str
    contract_account: str | None
    key: str | None
    method: str
    currency: str
    paid: int
    fee: int
    fee_net: int
    fee_vat: int
    debt: int
    credit: int
    state: str  # completed, pending, reversed, open, unattributed


AMOUNTS = ("paid", "fee", "fee_net", "fee_vat", "debt", "credit")
#: the money kinds and their sign, as the money report takes them
PAID = {"cash_in": 1, "cash_unattributed": 1, "card_approved": 1, "card_reversed": -1}


def local_time(ts: str | None, tz: ZoneInfo) -> datetime | None:
    """A stored UTC time in the zone `tz` (None: no time, or not one). A time at the ends of
    the calendar (9999-12-31 from a wrong clock, a row written by hand) stays in UTC where the
    zone's would overflow: no page, report or export fails on one."""
    if not ts:
        return None
    try:
        t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    try:
        return t.astimezone(tz)
    except OverflowError:
        return t


def money_taken(engine: Engine, tz: ZoneInfo) -> dict[tuple[str, str, str, str], int]:
    """Money taken, in minor units, per (kiosk, local day, method: coin, note or card,
    currency): the money report's figures (`sync.admin report`, the console's reports)."""
    from sync.store.tables import entries

    totals: dict[tuple[str, str, str, str], int] = defaultdict(int)
    q = select(entries.c.kiosk_id, entries.c.ts, entries.c.kind, entries.c.amount,
               entries.c.currency, entries.c.data
               ).where(entries.c.kind.in_(PAID), entries.c.amount.is_not(None))  # fmt: skip
    with engine.connect() as conn:
        for r in conn.execute(q):
            when = local_time(r.ts, tz)
            day = when.date().isoformat() if when else str(r.ts)[:10]
            card = r.kind.startswith("card")
            method = "card" if card else json.loads(r.data).get("medium", "cash")
            totals[(r.kiosk_id, day, str(method), r.currency)] += PAID[r.kind] * r.amount
    return dict(totals)


def _midnight(day: date, tz: ZoneInfo, *, after: bool = False) -> str | None:
    """The UTC journal time of local midnight at the start of `day` (`after`: at its end);
    None where that is beyond the calendar (no bound: every time is after 0001-01-01 and
    before 9999-12-31's end)."""
    try:
        if after:
            day += timedelta(days=1)
        at = datetime.combine(day, time(), tz).astimezone(UTC)
    except OverflowError:
        return None
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _day_bounds(since: date, until: date | None, tz: ZoneInfo) -> tuple[str | None, str | None]:
    """The UTC journal times of local midnight at `since` and after `until` (inclusive); None:
    no bound that side."""
    return _midnight(since, tz), _midnight(until or since, tz, after=True)


def _within(ts: str, lo: str | None, hi: str | None) -> bool:
    return (lo is None or lo <= ts) and (hi is None or ts < hi)


def payments(engine: Engine, since: date, until: date | None, tz: ZoneInfo) -> list[Payment]:
    """Every transaction booked in those local days, and every unattributed payment taken in
    them. A transaction is booked on one day only: the local day of its first money entry,
    with all its money, fee, debt and credit in that one row (one opened at 23:59 and paid
    again at 00:01 is in the first day's export, not in the next day's too). Money that comes
    after that day (a card reversed later) is in the transaction's row whenever it is
    exported; the money report counts each entry on its own day."""
    from sync.store.tables import entries

    lo, hi = _day_bounds(since, until, tz)
    cols = (entries.c.kiosk_id, entries.c.txid, entries.c.seq, entries.c.ts, entries.c.kind,
            entries.c.key, entries.c.amount, entries.c.currency, entries.c.data)  # fmt: skip
    with engine.connect() as conn:
        money = conn.execute(
            select(*cols)
            .where(entries.c.kind.in_(PAID),
                   entries.c.ts >= lo if lo is not None else true(),
                   entries.c.ts < hi if hi is not None else true())
            .order_by(entries.c.kiosk_id, entries.c.seq)
        ).all()  # fmt: skip
        txs = sorted({(m.kiosk_id, m.txid) for m in money if m.txid})
        rows: list[Any] = []
        for i in range(0, len(txs), CHUNK):
            part = txs[i : i + CHUNK]
            rows += conn.execute(
                select(*cols)
                .where(tuple_(entries.c.kiosk_id, entries.c.txid).in_(part))
                .order_by(entries.c.kiosk_id, entries.c.seq)
            ).all()  # fmt: skip
    by_tx: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in rows:
        by_tx[(r.kiosk_id, r.txid)].append(r)
    out: list[Payment] = []
    for (kiosk, txid), es in by_tx.items():
        first = next(e for e in es if e.kind in PAID)  # (it was found by one)
        if _within(first.ts, lo, hi):  # else booked on the earlier day of its first money
            out.append(_payment(kiosk, txid, es, first, tz))
    for m in money:
        if m.kind == "cash_unattributed" and not m.txid:
            out.append(Payment(f"{m.kiosk_id}#{m.seq}", m.kiosk_id, local_text(m.ts, tz), None,
                               m.key, json.loads(m.data).get("medium", "cash"), m.currency,
                               m.amount, 0, 0, 0, 0, 0, "unattributed"))  # fmt: skip
    out.sort(key=lambda p: (p.local_time, p.kiosk, p.txid))
    return out


def local_text(ts: str, tz: ZoneInfo) -> str:
    """A stored time as "YYYY-MM-DD HH:MM:SS" in the zone `tz` (the year always of four
    digits, which strftime does not promise); one that is not a time, as stored."""
    when = local_time(ts, tz)
    return ts if when is None else when.replace(tzinfo=None).isoformat(" ", "seconds")


def _payment(kiosk: str, txid: str, es: list[Any], first: Any, tz: ZoneInfo) -> Payment:
    """One transaction's row: all of its money, its last split, its outcome."""
    data = [(e, json.loads(e.data)) for e in es]
    opened = next((d for e, d in data if e.kind == "tx_opened"), {})
    splits = [d for e, d in data if e.kind == "split"]
    split = splits[-1] if splits else {}
    closed = [d for e, d in data if e.kind == "tx_closed"]
    paid = sum(PAID[e.kind] * e.amount for e in es if e.kind in PAID and e.amount is not None)
    methods = sorted({"card" if e.kind.startswith("card") else d.get("medium", "cash")
                      for e, d in data if e.kind in PAID})  # fmt: skip
    state = str(closed[-1].get("outcome")) if closed else "open"
    return Payment(
        txid, kiosk, local_text(first.ts, tz), opened.get("contract_account"),
        next((e.key for e in es if e.key), None), "+".join(methods), first.currency, paid,
        int(split.get("fee", 0)), int(split.get("fee_net", 0)), int(split.get("fee_vat", 0)),
        int(split.get("debt", 0)), int(split.get("credit", 0)), state,
    )  # fmt: skip


def write_payments(rows: list[Payment], out: TextIO, *, fmt: str = "csv",
                   amounts: str = "minor") -> None:  # fmt: skip
    """CSV or JSON; amounts in minor units (columns `paid_minor`, ...) or as text with the
    currency's decimals (`paid_text`, ...). In CSV a text cell that could start a spreadsheet
    formula is quoted (sync/billing/sheet.py)."""
    suffix = "_minor" if amounts == "minor" else "_text"

    def record(p: Payment) -> dict[str, Any]:
        d = asdict(p)
        for a in AMOUNTS:
            v = d.pop(a)
            d[a + suffix] = v if amounts == "minor" else decimals(v, p.currency)
        return d

    records = [record(p) for p in rows]
    if fmt == "json":
        json.dump(records, out, indent=1)
        out.write("\n")
        return
    names = [f for f in Payment.__dataclass_fields__ if f not in AMOUNTS]
    names[names.index("currency") + 1 : names.index("currency") + 1] = [a + suffix for a in AMOUNTS]
    write_csv(out, names, records, numbers=[a + suffix for a in AMOUNTS])  # text cells quoted


def payments_text(engine: Engine, since: date, until: date | None, tz: ZoneInfo, fmt: str,
                  amounts: str) -> str:  # fmt: skip
    buf = io.StringIO()
    write_payments(payments(engine, since, until, tz), buf, fmt=fmt, amounts=amounts)
    return buf.getvalue()


# ---------------------------------------------------------------- the stored chains


def verify(engine: Engine, kiosk: str | None = None) -> list[tuple[str, int, str]]:
    """Every stored chain (or one kiosk's): (kiosk, entries, "ok" or the first fault). A
    kiosk's entries from its first keyed one on (`kiosks.keyed_from`) are checked with its
    chain secret, those before it as plain SHA-256."""
    from sync.store.tables import entries, kiosks

    with engine.connect() as conn:
        keying = {r.kiosk_id: (bytes.fromhex(r.chain_secret) if r.chain_secret else None,
                               r.keyed_from)
                  for r in conn.execute(select(kiosks.c.kiosk_id, kiosks.c.chain_secret,
                                               kiosks.c.keyed_from))}  # fmt: skip
        ids = [kiosk] if kiosk else sorted(keying)
        out = []
        for k in sorted(ids):
            secret, keyed_from = keying.get(k, (None, None))
            rows = conn.execute(
                select(entries).where(entries.c.kiosk_id == k).order_by(entries.c.seq)
            )  # fmt: skip
            n, verdict, prev, expected = 0, "ok", None, None
            for r in rows:
                n += 1
                if verdict != "ok":
                    continue
                if expected is not None and r.seq != expected:
                    verdict = f"entry {expected} is missing (next stored: {r.seq})"
                elif prev is not None and r.prev_hash != prev:
                    verdict = f"entry {r.seq} does not follow entry {r.seq - 1}"
                elif prev is None and r.seq == 1 and r.prev_hash != GENESIS:
                    verdict = "entry 1 does not start a chain"
                elif keyed_from is not None and r.seq >= keyed_from and secret is None:
                    verdict = f"entry {r.seq}: keyed, and head office holds no chain secret"
                elif r.hash != entry_hash(r.prev_hash, r.seq, r.ts, r.kind, r.txid, r.key,
                                          r.amount, r.currency, r.data,
                                          keyed(r.seq, secret, keyed_from)):  # fmt: skip
                    verdict = f"entry {r.seq}: its content does not match its hash"
                prev, expected = r.hash, r.seq + 1
            out.append((k, n, verdict))
    return out
