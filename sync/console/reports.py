"""The money reports (charts, a table a page at a time, the CSV) and the audit, each for the
days asked."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select

from sync.billing import local_time, money_taken
from sync.billing.sheet import write_csv
from sync.console.accounts import KEY_STATUS, REASONS
from sync.console.common import Console, Span, _audit
from sync.console.i18n import LANG_NAMES, N_, ROLE_NAMES, TZ, VIA, Texts

MEDIUMS = {"coin": N_("coins"), "note": N_("notes"), "card": N_("card"), "cash": N_("cash")}
#: the audit's actions as the staff read them (one not named here is shown as recorded)
ACTIONS = {"login": N_("logged in"), "login_failed": N_("login failed"),
           "logout": N_("logged out"), "refused": N_("refused"), "key": N_("key changed"),
           "debt": N_("debt set"), "lang": N_("language changed"), "credit": N_("credit added"),
           "setting": N_("setting changed"), "token": N_("token issued"),
           "restored": N_("restored from a backup"), "import": N_("billing file imported"),
           "import_refused": N_("billing file refused"), "export": N_("payments exported"),
           "kiosk_add": N_("automat added"), "kiosk_rotate": N_("automat's token renewed"),
           "kiosk_revoke": N_("automat's access revoked"), "staff_add": N_("person added"),
           "staff_added": N_("person added"), "staff_role": N_("role changed"),
           "staff_password": N_("password reset"), "staff_disable": N_("person disabled"),
           "staff_enable": N_("person enabled"), "staff_remove": N_("person removed")}
#: the fields of a changed row as the staff read them
FIELDS = {"serial": N_("key"), "status": N_("status"), "reason": N_("reason"),
          "note": N_("note"), "contract_account": N_("contract account"),
          "amount": N_("amount"), "currency": N_("currency"), "name": N_("name"),
          "role": N_("role"), "lang": N_("language"), "disabled": N_("disabled"),
          "password_set": N_("password set"), "key": N_("key"), "holder": N_("holder"),
          "value": N_("value"), "kiosk_id": N_("automat"), "revoked": N_("revoked"),
          "token_since": N_("token issued"), "registered": N_("registered")}  # fmt: skip
TIMES = ("disabled", "password_set", "revoked", "token_since", "registered")


def changes(before: str | None, after: str | None) -> list[tuple[str, Any, Any, str | None]]:
    """An audit row's change field by field: (field, before, after, currency) for each field
    that differs (all of them where the thing is new or gone); the currency where the field
    is an amount in minor units."""

    def read(text: str | None) -> dict[str, Any] | None:
        try:
            value = json.loads(text) if text else None
        except ValueError:
            return {"?": text}
        return value if isinstance(value, dict) else (None if value is None else {"": value})

    b, a = read(before), read(after)
    if b is None and a is None:
        return []
    names = list(dict.fromkeys([*(b or {}), *(a or {})]))
    missing = object()
    out = []
    for n in names:
        was = (b or {}).get(n, missing)
        now = (a or {}).get(n, missing)
        if was != now:
            # an amount in minor units, with the currency of its row: shown as money
            cur = (a or b or {}).get("currency") if n == "amount" else None
            out.append((n, None if was is missing else was, None if now is missing else now,
                        cur if isinstance(cur, str) else None))
    return out


def routes(c: Console, router: APIRouter) -> None:
    from sync.store.tables import audit, entries

    engine = c.engine

    def money_rows(span: Span) -> list[tuple[str, str, str, str, int]]:
        """(day, kiosk, method, currency, minor units): the money report's figures."""
        taken = money_taken(engine, TZ).items()
        return sorted((day, kiosk, method, cur, minor)
                      for (kiosk, day, method, cur), minor in taken if span.has_day(day))

    def per_hour(span: Span) -> list[int]:
        hours = [0] * 24
        with engine.connect() as conn:
            for (ts,) in conn.execute(select(entries.c.ts).where(
                    entries.c.kind == "tx_closed", *span.within(entries.c.ts))):  # fmt: skip
                when = local_time(ts, TZ)
                if when is not None:
                    hours[when.hour] += 1
        return hours

    @router.get("/reports", response_class=HTMLResponse)
    def reports(request: Request, since: str = Query("", alias="from"),
                until: str = Query("", alias="to"), page: str = "1") -> Response:  # fmt: skip
        if c.session(request) is None:
            return c.page(request, "reports.html")
        span = Span.of(since, until, page)
        rows = money_rows(span)
        by_day: dict[tuple[str, str], int] = defaultdict(int)
        for day, _k, _m, cur, minor in rows:
            by_day[(day, cur)] += minor
        span.total = len(rows)
        shown = rows[span.offset : span.offset + span.per_page]
        return c.page(request, "reports.html", rows=shown, by_day=sorted(by_day.items()),
                      top=max(by_day.values(), default=1) or 1, hours=per_hour(span),
                      span=span, mediums=MEDIUMS)  # fmt: skip

    @router.get("/reports.csv")
    def reports_csv(request: Request, since: str = Query("", alias="from"),
                    until: str = Query("", alias="to")) -> Response:  # fmt: skip
        who = c.session(request)
        if who is None:
            return c.page(request, "reports.html")  # to the login
        span = Span.of(since, until, "1")
        rows = money_rows(span)
        buf = io.StringIO()  # text cells that could start a spreadsheet formula: quoted
        write_csv(buf, ["day", "kiosk", "method", "currency", "amount_minor"], rows,
                  numbers=["amount_minor"])  # fmt: skip
        with c.engine.begin() as conn:  # an export is audited like a change
            _audit(conn, who.name, "export", f"money report {since or '...'}..{until or '...'}: "
                   f"{len(rows)} rows", target="export money report")  # fmt: skip
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": "attachment; filename=money.csv"},
        )

    @router.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, since: str = Query("", alias="from"),
                   until: str = Query("", alias="to"), who: str = "", action: str = "",
                   page: str = "1") -> Response:  # fmt: skip
        if c.session(request) is None:
            return c.page(request, "audit.html")
        span = Span.of(since, until, page)
        where = span.within(audit.c.ts)
        if who:
            where.append(audit.c.who == who)
        if action:
            where.append(audit.c.action == action)
        with engine.connect() as conn:
            span.total = conn.execute(select(func.count()).select_from(audit)
                                      .where(*where)).scalar_one()  # fmt: skip
            rows = conn.execute(select(audit).where(*where).order_by(audit.c.id.desc())
                                .limit(span.per_page).offset(span.offset)).all()  # fmt: skip
            people = list(conn.execute(select(audit.c.who).distinct().order_by(audit.c.who))
                          .scalars())  # fmt: skip
            actions = list(conn.execute(select(audit.c.action).distinct()
                                        .order_by(audit.c.action)).scalars())  # fmt: skip
        t = c.texts(request)
        shown = [(r, [(t(FIELDS[n]) if n in FIELDS else n, value(t, n, was, cur),
                       value(t, n, now, cur)) for n, was, now, cur in changes(r.before, r.after)])
                 for r in rows]  # fmt: skip
        return c.page(request, "audit.html", rows=shown, span=span, who_filter=who,
                      action_filter=action, people=people, actions=actions, via=VIA,
                      action_names=ACTIONS)  # fmt: skip


def value(t: Texts, name: str, v: Any, currency: str | None) -> str:
    """A stored field's value as the staff read it: an amount as money, a time in local time,
    a key's status and reason, a role and a language in words; "–" for none."""
    if v is None or v == "" and name != "reason":
        return "–"
    if name == "amount" and currency and isinstance(v, int) and not isinstance(v, bool):
        return t.money(v, currency)
    if name in TIMES and isinstance(v, str):
        return t.when(v)
    names = {"status": KEY_STATUS, "reason": REASONS, "role": ROLE_NAMES, "lang": LANG_NAMES}
    if name in names and isinstance(v, str) and v in names[name]:
        return t(names[name][v])
    return str(v)
