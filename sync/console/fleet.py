"""The fleet, its alarms and a page per kiosk."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select

from sync.billing import local_time
from sync.book.watch import BOX_NEAR_FULL, CREDIT_OLD, FAULT_OPEN, SILENT
from sync.console.common import Console, ConsoleError, Span
from sync.console.i18n import N_, TZ, Texts
from sync.console.views import emptying, faults

#: alarm thresholds (a kiosk silent this long, a device fault open this long, a box this full,
#: a credit owed this long): the same as the alarm notices' (sync/book/watch.py)
#: the kinds whose money goes into the cash box
INTO_THE_BOX = ("cash_in", "cash_unattributed", "test_cash")
#: the devices a kiosk names in its faults, as the staff call them
DEVICES = {"coin": N_("coin acceptor"), "notes": N_("note validator"),
           "card": N_("card terminal"), "reader": N_("key reader"),
           "printer": N_("receipt printer"), "system": N_("automat (disk, clock)"),
           "engine": N_("automat's program")}  # fmt: skip


def device_name(t: Texts, device: str) -> str:
    return t(DEVICES[device]) if device in DEVICES else device


def state_of(k: dict[str, Any]) -> str:
    """revoked, never (connected), fault, ok: what the fleet page says first of a kiosk."""
    if k["revoked"]:
        return "revoked"
    if not k["contact"]:
        return "never"
    return "fault" if k["faults"] else "ok"


def routes(c: Console, router: APIRouter) -> None:  # noqa: C901 (one route each)
    from sync.store.tables import alarms, entries, kiosks

    engine = c.engine

    def fleet(only: str | None = None) -> list[dict[str, Any]]:
        one = [kiosks.c.kiosk_id == only] if only else []
        where = [entries.c.kiosk_id == only] if only else []
        with engine.connect() as conn:
            k_ = kiosks.c  # what the pages show of a kiosk (never its token or chain secret)
            ks = conn.execute(
                select(k_.kiosk_id, k_.last_contact, k_.backlog, k_.backlog_since, k_.revoked,
                       k_.registered, k_.token_since, k_.version, k_.journal_schema)
                .where(*one).order_by(k_.kiosk_id)
            ).all()  # fmt: skip
            newest = dict(conn.execute(select(entries.c.kiosk_id, func.max(entries.c.ts))
                                       .where(*where)
                                       .group_by(entries.c.kiosk_id)).all())  # fmt: skip
            fault_rows = conn.execute(
                select(entries.c.kiosk_id, entries.c.seq, entries.c.ts, entries.c.kind,
                       entries.c.txid, entries.c.data)
                .where(entries.c.kind == "fault", *where)
                .order_by(entries.c.kiosk_id, entries.c.seq)
            ).all()  # fmt: skip
            # the money in each box since it was last emptied, and each kiosk's last receipt:
            # summed and picked by the database, not read entry by entry
            emptied = (select(entries.c.kiosk_id, func.max(entries.c.seq).label("seq"))
                       .where(entries.c.kind == "cashbox_emptied", *where)
                       .group_by(entries.c.kiosk_id).subquery())  # fmt: skip
            box = {r.kiosk_id: (int(r.total), r.currency) for r in conn.execute(
                select(entries.c.kiosk_id, entries.c.currency,
                       func.sum(entries.c.amount).label("total"))
                .outerjoin(emptied, emptied.c.kiosk_id == entries.c.kiosk_id)
                .where(entries.c.kind.in_(INTO_THE_BOX), *where,
                       entries.c.seq > func.coalesce(emptied.c.seq, 0))
                .group_by(entries.c.kiosk_id, entries.c.currency))}  # fmt: skip
            last = (select(entries.c.kiosk_id, func.max(entries.c.seq).label("seq"))
                    .where(entries.c.kind == "receipt", *where)
                    .group_by(entries.c.kiosk_id).subquery())  # fmt: skip
            newest_receipt = (last.c.kiosk_id == entries.c.kiosk_id) & (last.c.seq == entries.c.seq)
            last_paper = {r.kiosk_id: r.data for r in conn.execute(
                select(entries.c.kiosk_id, entries.c.data).join(last, newest_receipt))}  # fmt: skip
        by_kiosk: dict[str, list[Any]] = {}
        for f in fault_rows:
            by_kiosk.setdefault(f.kiosk_id, []).append(f)
        out = []
        for k in ks:
            opened = [f for f in faults(by_kiosk.get(k.kiosk_id, [])) if f.open]
            out.append({
                "id": k.kiosk_id, "contact": k.last_contact, "newest": newest.get(k.kiosk_id),
                "backlog": k.backlog, "backlog_since": k.backlog_since,
                "faults": sorted(opened, key=lambda f: f.device),
                "box": box.get(k.kiosk_id, (0, "EUR")),
                "paper": _paper(last_paper.get(k.kiosk_id)),
                "revoked": k.revoked, "registered": k.registered,
                "token_since": k.token_since, "version": k.version,
                "journal_schema": k.journal_schema,
            })  # fmt: skip
            out[-1]["state"] = state_of(out[-1])
        return out

    def alarm_list(t: Texts) -> list[dict[str, str]]:
        now = datetime.now(UTC)
        out: list[dict[str, str]] = []
        for k in fleet():
            if k["revoked"]:
                continue  # cut off on purpose: its silence is no alarm
            heard = local_time(k["contact"], TZ)
            if heard is None:
                out.append({"kiosk": k["id"], "what": t("never connected"),
                            "text": t("registered {when}, no contact since",
                                      when=t.when(k["registered"], never=N_("not recorded")))})
            elif now - heard > SILENT:
                out.append({"kiosk": k["id"], "what": t("silent"),
                            "text": t("no contact since {when}", when=t.when(k["contact"]))})
            for f in k["faults"]:
                opened = local_time(f.opened, TZ)
                late = opened is not None and now - opened > FAULT_OPEN
                when = t.when(f.opened)
                text = (t("{text} (since {when}, over 15 minutes)", text=f.text, when=when)
                        if late else t("{text} (since {when})", text=f.text, when=when))
                out.append({"kiosk": k["id"], "text": text,
                            "what": t("fault: {device}", device=device_name(t, f.device))})
            if k["box"][0] >= BOX_NEAR_FULL:
                out.append({"kiosk": k["id"], "what": t("cash box"),
                            "text": t("{amount} in the box: empty it soon",
                                      amount=t.money(*k["box"]))})  # fmt: skip
        with engine.connect() as conn:
            owed = conn.execute(
                select(entries.c.kiosk_id, entries.c.txid, entries.c.ts, entries.c.amount,
                       entries.c.currency)
                .where(entries.c.kind == "pending_credit", entries.c.amount > 0,
                       entries.c.ts < (now - CREDIT_OLD).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
            ).all()  # fmt: skip
            written = {r.txid for r in conn.execute(
                select(entries.c.txid).where(entries.c.kind == "pending_written"))}  # fmt: skip
            refused = conn.execute(select(alarms).order_by(alarms.c.id.desc()).limit(20)).all()
        for o in owed:
            if o.txid not in written:
                out.append({"kiosk": o.kiosk_id, "what": t("credit owed"), "txid": o.txid,
                            "text": t("{amount} for {txid} since {when}",
                                      amount=t.money(o.amount, o.currency), txid=o.txid,
                                      when=t.when(o.ts))})  # fmt: skip
        for r in refused:
            out.append({"kiosk": r.kiosk_id, "what": t("entry refused"),
                        "text": f"{t.when(r.ts)}: {r.text}"})
        return out

    @router.get("/", response_class=HTMLResponse)
    def fleet_page(request: Request) -> Response:
        return c.page(request, "fleet.html", kiosks=fleet(), devices=DEVICES)

    @router.get("/alarms", response_class=HTMLResponse)
    def alarms_page(request: Request) -> Response:
        t = c.texts(request)
        return c.page(request, "alarms.html", alarms=alarm_list(t))

    @router.get("/kiosk/{kiosk_id}", response_class=HTMLResponse)
    def kiosk_page(request: Request, kiosk_id: str, since: str = Query("", alias="from"),
                   until: str = Query("", alias="to"), page: str = "1") -> Response:  # fmt: skip
        if c.session(request) is None:
            return c.page(request, "kiosk.html")  # to the login
        span = Span.of(since, until, page)
        found = fleet(kiosk_id)
        if not found:
            raise ConsoleError(404, N_("No automat {kiosk} is registered."), kiosk=kiosk_id)
        k = found[0]
        with engine.connect() as conn:
            all_faults = faults(conn.execute(
                select(entries.c.kiosk_id, entries.c.seq, entries.c.ts, entries.c.kind,
                       entries.c.txid, entries.c.data)
                .where(entries.c.kiosk_id == kiosk_id, entries.c.kind == "fault")
            ).all())  # fmt: skip
            emptied_q = select(entries).where(entries.c.kiosk_id == kiosk_id,
                                              entries.c.kind == "cashbox_emptied",
                                              *span.within(entries.c.ts))  # fmt: skip
            span.total = conn.execute(select(func.count()).select_from(emptied_q.subquery())
                                      ).scalar_one()  # fmt: skip
            emptyings = [emptying(r) for r in conn.execute(
                emptied_q.order_by(entries.c.seq.desc()).limit(span.per_page)
                .offset(span.offset))]  # fmt: skip
        # faults: the open ones, and the past ones inside the days (newest first, at most a
        # page of them: the rest by narrowing the days)
        shown = [f for f in reversed(all_faults)
                 if f.open or ((span.lo is None or f.opened >= span.lo)
                               and (span.hi is None or f.opened < span.hi))]  # fmt: skip
        return c.page(request, "kiosk.html", k=k, faults=shown[: span.per_page],
                      more_faults=max(0, len(shown) - span.per_page), emptyings=emptyings,
                      span=span, now=datetime.now(UTC), devices=DEVICES)  # fmt: skip


def _paper(data: str | None) -> str:
    """ok, low (the last receipt was not printed), unknown (no receipt entry delivered)."""
    if data is None:
        return "unknown"
    try:
        printed = json.loads(data).get("printed")
    except (ValueError, AttributeError):
        return "unknown"
    return "low" if printed is False else "ok"
