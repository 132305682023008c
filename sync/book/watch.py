"""What head office watches for the operator, besides the alarms it stores: conditions that
hold while they hold (a kiosk silent, a device fault open, a cash box nearly full, a credit
owed for long). The alarm notifier tells people of each (sync/admin/notify.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select

from sync.store.tables import alarms, entries, kiosks
from sync.wire.protocol import amount_text

#: a kiosk silent this long, a device fault open this long, a box this full (minor units since
#: it was emptied), a credit owed this long
SILENT = timedelta(minutes=10)
FAULT_OPEN = timedelta(minutes=15)
BOX_NEAR_FULL = 200_000
CREDIT_OLD = timedelta(days=7)
TS = "%Y-%m-%dT%H:%M:%S.%fZ"

#: every kind of alarm, stored or watched, as an operator routes them
KINDS = ("chain", "clock", "credit", "release", "silent", "fault", "cashbox", "credit_owed")


@dataclass(frozen=True)
class Alarm:
    kind: str
    kiosk: str
    key: str  # stable while the condition lasts: "alarm:<id>" or "<kind>:<kiosk>:<what>"
    text: str
    since: str  # UTC, ISO


def _when(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        if ts.endswith("Z"):
            return datetime.strptime(ts, TS).replace(tzinfo=UTC)
        when = datetime.fromisoformat(ts)
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    except ValueError:
        return None


def stored(engine: Engine, after_id: int) -> list[tuple[int, Alarm]]:
    """The stored alarms after `after_id`, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(alarms).where(alarms.c.id > after_id)
                            .order_by(alarms.c.id)).all()  # fmt: skip
    return [(r.id, Alarm(r.kind, r.kiosk_id, f"alarm:{r.id}", r.text, r.ts)) for r in rows]


def last_stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(alarms.c.id))).scalar() or 0)


def conditions(engine: Engine, now: datetime) -> list[Alarm]:
    """Every condition that holds at `now`."""
    out: list[Alarm] = []
    with engine.connect() as conn:
        ks = conn.execute(select(kiosks.c.kiosk_id, kiosks.c.last_contact, kiosks.c.revoked)
                          .order_by(kiosks.c.kiosk_id)).all()  # fmt: skip
        faults = conn.execute(
            select(entries.c.kiosk_id, entries.c.ts, entries.c.data)
            .where(entries.c.kind == "fault").order_by(entries.c.kiosk_id, entries.c.seq)
        ).all()  # fmt: skip
        emptied = (select(entries.c.kiosk_id, func.max(entries.c.seq).label("seq"))
                   .where(entries.c.kind == "cashbox_emptied")
                   .group_by(entries.c.kiosk_id).subquery())  # fmt: skip
        boxes = conn.execute(
            select(entries.c.kiosk_id, entries.c.currency, func.sum(entries.c.amount))
            .outerjoin(emptied, emptied.c.kiosk_id == entries.c.kiosk_id)
            .where(entries.c.kind.in_(("cash_in", "cash_unattributed", "test_cash")),
                   entries.c.seq > func.coalesce(emptied.c.seq, 0))
            .group_by(entries.c.kiosk_id, entries.c.currency)).all()  # fmt: skip
        owed = conn.execute(
            select(entries.c.kiosk_id, entries.c.txid, entries.c.ts, entries.c.amount,
                   entries.c.currency)
            .where(entries.c.kind == "pending_credit", entries.c.amount > 0,
                   entries.c.ts < (now - CREDIT_OLD).strftime(TS))).all()  # fmt: skip
        written = {r.txid for r in conn.execute(
            select(entries.c.txid).where(entries.c.kind == "pending_written"))}  # fmt: skip
    for k in ks:
        heard = _when(k.last_contact)
        if k.revoked is None and heard is not None and now - heard > SILENT:
            out.append(Alarm("silent", k.kiosk_id, f"silent:{k.kiosk_id}",
                             f"no contact since {k.last_contact[:19]} UTC", k.last_contact))
    opened: dict[tuple[str, str], tuple[str, str]] = {}
    for f in faults:
        d = json.loads(f.data)
        device = str(d.get("device", "?"))
        if d.get("cleared"):
            opened.pop((f.kiosk_id, device), None)
        else:
            opened.setdefault((f.kiosk_id, device), (f.ts, str(d.get("text", ""))))
    for (kiosk, device), (ts, text) in sorted(opened.items()):
        since = _when(ts)
        if since is not None and now - since > FAULT_OPEN:
            out.append(Alarm("fault", kiosk, f"fault:{kiosk}:{device}",
                             f"{device}: {text} (open since {ts[:19]} UTC)", ts))
    for kiosk, currency, total in boxes:
        if total is not None and int(total) >= BOX_NEAR_FULL:
            out.append(Alarm("cashbox", kiosk, f"cashbox:{kiosk}",
                             f"{amount_text(int(total), currency)} in the cash box: empty it "
                             "soon", now.isoformat()))  # fmt: skip
    for o in owed:
        if o.txid not in written:
            out.append(Alarm("credit_owed", o.kiosk_id, f"credit_owed:{o.txid}",
                             f"{amount_text(o.amount, o.currency)} owed for {o.txid} since "
                             f"{o.ts[:19]} UTC", o.ts))  # fmt: skip
    return out
