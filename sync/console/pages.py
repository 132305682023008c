"""Head office's staff console at /console/: server-rendered pages (Jinja2 templates in
sync/console/templates/), no build step and no script the pages need.

People: `python -m sync.admin staff add NAME --role operator|auditor|admin` (the password read
from stdin, stored as an Argon2id hash). A login opens a session (a random token in an
HttpOnly, SameSite=Strict cookie; its SHA-256 in `staff_sessions`, 8 hours) with its own CSRF
token, which every form posts back. Auditors read; operators also block and unblock keys;
admins also set debts. Every login, change and refusal is written to `audit`.

Pages: the fleet (each kiosk: last contact, newest entry, open device faults, cash in the box
since it was last emptied, paper), alarms, a key or contract account with its history, a
transaction by id (the receipt's QR code) with every journal entry behind it, keys and debts
(edit), reports with charts and CSV downloads, and the audit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine, delete, func, insert, select

from sync.billing import local_text, local_time
from sync.billing.sheet import write_csv
from sync.console.people import ROLES, _dummy_hash, hasher
from sync.store import audit as audit_log
from sync.wire.protocol import KEY_REASONS, amount_text, key_reason

#: what each role may change (auditors only read)
MAY = {"key": ("operator", "admin"), "debt": ("admin",)}
SESSION_SECONDS = 8 * 3600
COOKIE = "ho_session"
#: alarm thresholds: a kiosk silent this long, a device fault open this long, a box this full,
#: a credit owed this long
SILENT = timedelta(minutes=10)
FAULT_OPEN = timedelta(minutes=15)
BOX_NEAR_FULL = 200_000  # minor units in the box since it was emptied
CREDIT_OLD = timedelta(days=7)
TZ = ZoneInfo("Europe/Berlin")

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _money(minor: int | None, currency: str | None) -> str:
    return "" if minor is None or currency is None else amount_text(minor, currency)


def _local(ts: str | None) -> str:
    """A stored time as the console shows it (local); one that is not a time, as stored."""
    if not ts:
        return "never"
    return local_text(ts, TZ)


templates.env.filters["money"] = lambda pair: _money(*pair)
templates.env.filters["local"] = _local


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _audit(conn: Any, who: str, action: str, detail: str, **kw: Any) -> None:
    """One line of the audit, as the console's (sync/store/audit.py)."""
    audit_log.write(conn, who, action, detail, via="console", **kw)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mount(app: FastAPI, engine: Engine, doorman: Any) -> None:  # noqa: C901 (one route each)
    """The console's routes on `app`; `doorman` counts failed logins per address (ten in a
    minute and that address waits), apart from the kiosks' failed tokens."""
    threading.Thread(target=_dummy_hash, daemon=True).start()  # made before the first login
    from sync.store.tables import (
        alarms,
        audit,
        credits,
        entries,
        kiosks,
        ref_debts,
        ref_keys,
        staff,
        staff_sessions,
    )

    router = APIRouter(include_in_schema=False)  # pages, not the wire protocol

    def session(request: Request) -> dict[str, str] | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        with engine.connect() as conn:
            row = conn.execute(
                select(staff_sessions.c.name, staff_sessions.c.csrf, staff.c.role)
                .join(staff, staff.c.name == staff_sessions.c.name)
                .where(staff_sessions.c.token_sha256 == _digest(token),
                       staff_sessions.c.expires > int(time.time()))
            ).first()  # fmt: skip
        return None if row is None else {"name": row.name, "csrf": row.csrf, "role": row.role}

    def page(request: Request, name: str, **ctx: Any) -> Response:
        who = session(request)
        if who is None:
            return RedirectResponse("/console/login", status_code=303)
        return templates.TemplateResponse(request, name, {"who": who, **ctx})

    def checked(request: Request, csrf: str, action: str) -> dict[str, str]:
        """The session behind a form post, its CSRF token and its role's right to `action`;
        a refusal is audited and nothing changes."""
        who = session(request)
        if who is None:
            raise HTTPException(401, "log in first")
        if not secrets.compare_digest(csrf, who["csrf"]):
            with engine.begin() as conn:
                _audit(conn, who["name"], "refused", f"{action}: missing or wrong CSRF token")
            raise HTTPException(403, "the form's security token is missing or wrong: reload")
        if who["role"] not in MAY[action]:
            with engine.begin() as conn:
                _audit(conn, who["name"], "refused", f"{action}: needs {' or '.join(MAY[action])}")
            raise HTTPException(403, f"a {who['role']} may not change this "
                                     f"({' or '.join(MAY[action])} only)")  # fmt: skip
        return who

    @router.get("/console/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        return templates.TemplateResponse(request, "login.html", {"who": None, "error": ""})

    @router.post("/console/login")
    def login(request: Request, name: str = Form(""), password: str = Form("")) -> Response:
        where = request.client.host if request.client else "?"
        doorman.check(where)
        with engine.begin() as conn:
            row = conn.execute(select(staff).where(staff.c.name == name)).first()
            # an unknown name takes as long as a known one: verified against no one's hash
            stored = row.password_hash if row is not None else _dummy_hash()
            try:
                ok = hasher.verify(stored, password) and row is not None and row.role in ROLES
            except VerificationError:
                ok = False
            except InvalidHashError:  # a stored hash that is none: as slow as any refusal
                ok = False
                with contextlib.suppress(VerificationError):
                    hasher.verify(_dummy_hash(), password)
            if not ok:
                doorman.failed(where)
                _audit(conn, name or "?", "login_failed", where)
                return templates.TemplateResponse(
                    request, "login.html",
                    {"who": None, "error": "Name or password is wrong."}, status_code=401,
                )  # fmt: skip
            token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
            conn.execute(delete(staff_sessions).where(staff_sessions.c.expires < time.time()))
            conn.execute(insert(staff_sessions).values(
                token_sha256=_digest(token), name=name, csrf=csrf,
                expires=int(time.time()) + SESSION_SECONDS))  # fmt: skip
            _audit(conn, name, "login", row.role)
        out = RedirectResponse("/console/", status_code=303)
        out.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/console",
                       secure=request.url.scheme == "https", max_age=SESSION_SECONDS)  # fmt: skip
        return out

    @router.post("/console/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        who = session(request)
        if who is not None and secrets.compare_digest(csrf, who["csrf"]):
            with engine.begin() as conn:
                token = request.cookies.get(COOKIE, "")
                conn.execute(delete(staff_sessions)
                             .where(staff_sessions.c.token_sha256 == _digest(token)))  # fmt: skip
                _audit(conn, who["name"], "logout", "")
        out = RedirectResponse("/console/login", status_code=303)
        out.delete_cookie(COOKIE, path="/console")
        return out

    # ---------------------------------------------------------------- the fleet

    def fleet() -> list[dict[str, Any]]:
        with engine.connect() as conn:
            ks = conn.execute(select(kiosks.c.kiosk_id, kiosks.c.last_contact,
                                     kiosks.c.backlog, kiosks.c.backlog_since)
                              .order_by(kiosks.c.kiosk_id)).all()  # fmt: skip
            newest = dict(conn.execute(select(entries.c.kiosk_id, func.max(entries.c.ts))
                                       .group_by(entries.c.kiosk_id)).all())  # fmt: skip
            faults = conn.execute(
                select(entries.c.kiosk_id, entries.c.ts, entries.c.data)
                .where(entries.c.kind == "fault").order_by(entries.c.kiosk_id, entries.c.seq)
            ).all()  # fmt: skip
            # the money in each box since it was last emptied, and each kiosk's last receipt:
            # summed and picked by the database, not read entry by entry
            emptied = (select(entries.c.kiosk_id, func.max(entries.c.seq).label("seq"))
                       .where(entries.c.kind == "cashbox_emptied")
                       .group_by(entries.c.kiosk_id).subquery())  # fmt: skip
            box = {r.kiosk_id: (int(r.total), r.currency) for r in conn.execute(
                select(entries.c.kiosk_id, entries.c.currency,
                       func.sum(entries.c.amount).label("total"))
                .outerjoin(emptied, emptied.c.kiosk_id == entries.c.kiosk_id)
                .where(entries.c.kind.in_(("cash_in", "cash_unattributed", "test_cash")),
                       entries.c.seq > func.coalesce(emptied.c.seq, 0))
                .group_by(entries.c.kiosk_id, entries.c.currency))}  # fmt: skip
            last = (
                select(entries.c.kiosk_id, func.max(entries.c.seq).label("seq"))
                .where(entries.c.kind == "receipt")
                .group_by(entries.c.kiosk_id)
                .subquery()
            )
            newest_receipt = (last.c.kiosk_id == entries.c.kiosk_id) & (last.c.seq == entries.c.seq)
            last_paper = {r.kiosk_id: json.loads(r.data) for r in conn.execute(
                select(entries.c.kiosk_id, entries.c.data).join(last, newest_receipt))}  # fmt: skip
        open_faults: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
        for f in faults:
            d = json.loads(f.data)
            if d.get("cleared"):
                open_faults[f.kiosk_id].pop(d.get("device", "?"), None)
            else:
                open_faults[f.kiosk_id][d.get("device", "?")] = (f.ts, str(d.get("text", "")))
        out = []
        for k in ks:
            opened = open_faults.get(k.kiosk_id, {})
            rec = last_paper.get(k.kiosk_id, {})
            out.append({
                "id": k.kiosk_id, "contact": k.last_contact, "newest": newest.get(k.kiosk_id),
                "backlog": k.backlog, "backlog_since": k.backlog_since,
                "faults": sorted((dev, ts, text) for dev, (ts, text) in opened.items()),
                "box": box.get(k.kiosk_id, (0, "EUR")),
                "paper": "out or low" if rec.get("printed") is False else "ok",
                "in_service": not opened,
            })  # fmt: skip
        return out

    def alarm_list() -> list[dict[str, str]]:
        now = datetime.now(UTC)
        out: list[dict[str, str]] = []
        for k in fleet():
            contact = k["contact"]
            heard = local_time(contact, UTC)
            if heard is None or now - heard > SILENT:
                out.append({"kiosk": k["id"], "what": "silent",
                            "text": f"no contact since {_local(contact)}"})  # fmt: skip
            for dev, ts, text in k["faults"]:
                opened = local_time(ts, UTC)
                late = opened is not None and now - opened > FAULT_OPEN
                out.append({"kiosk": k["id"], "what": f"{dev} fault",
                            "text": f"{text} (since {_local(ts)}"
                                    + (", over 15 minutes)" if late else ")")})  # fmt: skip
            if k["box"][0] >= BOX_NEAR_FULL:
                out.append({"kiosk": k["id"], "what": "cash box",
                            "text": f"{_money(*k['box'])} in the box: empty it soon"})  # fmt: skip
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
                out.append({"kiosk": o.kiosk_id, "what": "credit owed",
                            "text": f"{_money(o.amount, o.currency)} for {o.txid} since "
                                    f"{_local(o.ts)}"})  # fmt: skip
        for r in refused:
            out.append({"kiosk": r.kiosk_id, "what": "refused entry", "text": r.text})
        return out

    @router.get("/console/", response_class=HTMLResponse)
    def fleet_page(request: Request) -> Response:
        return page(request, "fleet.html", kiosks=fleet())

    @router.get("/console/alarms", response_class=HTMLResponse)
    def alarms_page(request: Request) -> Response:
        return page(request, "alarms.html", alarms=alarm_list())

    # ---------------------------------------------------------------- lookups

    @router.get("/console/tx", response_class=HTMLResponse)
    def transaction(request: Request, id: str = "") -> Response:  # noqa: A002
        rows: list[Any] = []
        if id:
            with engine.connect() as conn:
                rows = conn.execute(select(entries).where(entries.c.txid == id.strip())
                                    .order_by(entries.c.kiosk_id, entries.c.seq)).all()  # fmt: skip
        return page(request, "tx.html", txid=id, rows=rows)

    @router.get("/console/key", response_class=HTMLResponse)
    def key_page(request: Request, q: str = "") -> Response:
        q = q.strip()
        found: dict[str, Any] = {"keys": [], "debt": None, "credits": [], "tx": []}
        if q:
            with engine.connect() as conn:
                match = (ref_keys.c.serial == q) | (ref_keys.c.contract_account == q)
                found["keys"] = conn.execute(select(ref_keys).where(match)).all()
                accounts = {k.contract_account for k in found["keys"] if k.contract_account} | {q}
                found["debt"] = conn.execute(select(ref_debts).where(
                    ref_debts.c.contract_account.in_(accounts))).first()  # fmt: skip
                serials = {k.serial for k in found["keys"]} | {q}
                found["credits"] = conn.execute(
                    select(credits).where(credits.c.key.in_(serials))).all()  # fmt: skip
                found["tx"] = conn.execute(
                    select(entries.c.kiosk_id, entries.c.txid, entries.c.ts, entries.c.kind,
                           entries.c.amount, entries.c.currency)
                    .where(entries.c.key.in_(serials),
                           entries.c.kind.in_(("cash_in", "card_approved", "key_written",
                                               "pending_credit", "tx_closed")))
                    .order_by(entries.c.ts.desc()).limit(200)
                ).all()  # fmt: skip
        return page(request, "key.html", q=q, reasons=KEY_REASONS, **found)

    # ---------------------------------------------------------------- changes

    @router.post("/console/key")
    def set_key(request: Request, serial: str = Form(...), status: str = Form(...),
                reason: str = Form(""), note: str = Form(""),
                csrf: str = Form("")) -> Response:  # fmt: skip
        from sync.store.tables import KEY_STATUSES, bump_version

        who = checked(request, csrf, "key")
        if status not in KEY_STATUSES:
            raise HTTPException(422, f"status {status!r} is not one of {', '.join(KEY_STATUSES)}")
        try:
            key_reason(reason)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        with engine.begin() as conn:
            row = conn.execute(select(ref_keys).where(ref_keys.c.serial == serial)).first()
            if row is None:
                raise HTTPException(404, f"no key {serial}")
            conn.execute(
                ref_keys.update()
                .where(ref_keys.c.serial == serial)
                .values(status=status, reason=reason, note=note, changed=None)
            )
            bump_version(conn)
            said = f"{reason or 'no reason'}; {note}"
            _audit(conn, who["name"], "key", f"{serial}: {row.status} -> {status} ({said})")
        return RedirectResponse(f"/console/key?q={serial}", status_code=303)

    @router.post("/console/debt")
    def set_debt(request: Request, account: str = Form(...), amount: str = Form(...),
                 currency: str = Form("EUR"), csrf: str = Form("")) -> Response:  # fmt: skip
        from sync.billing import BadImport, parse_amount
        from sync.store.tables import bump_version

        who = checked(request, csrf, "debt")
        try:
            minor = parse_amount(amount.strip(), currency, "debt")
        except BadImport as err:
            raise HTTPException(422, str(err)) from None
        with engine.begin() as conn:
            was = conn.execute(select(ref_debts).where(
                ref_debts.c.contract_account == account)).first()  # fmt: skip
            conn.execute(delete(ref_debts).where(ref_debts.c.contract_account == account))
            conn.execute(insert(ref_debts).values(contract_account=account, amount=minor,
                                                  currency=currency))  # fmt: skip
            bump_version(conn)
            before = _money(was.amount, was.currency) if was else "none"
            _audit(conn, who["name"], "debt", f"{account}: {before} -> {_money(minor, currency)}")
        return RedirectResponse(f"/console/key?q={account}", status_code=303)

    # ---------------------------------------------------------------- reports

    def money_rows() -> list[tuple[str, str, str, str, int]]:
        """(day, kiosk, method, currency, minor units): the money report's figures."""
        from sync.billing import money_taken

        taken = money_taken(engine, TZ).items()
        return sorted(
            (day, kiosk, method, cur, minor) for (kiosk, day, method, cur), minor in taken
        )

    def per_hour() -> list[int]:
        hours = [0] * 24
        with engine.connect() as conn:
            for (ts,) in conn.execute(select(entries.c.ts).where(entries.c.kind == "tx_closed")):
                when = local_time(ts, TZ)
                if when is not None:
                    hours[when.hour] += 1
        return hours

    @router.get("/console/reports", response_class=HTMLResponse)
    def reports(request: Request) -> Response:
        rows = money_rows()
        by_day: dict[str, int] = defaultdict(int)
        for day, _k, _m, _c, minor in rows:
            by_day[day] += minor
        return page(request, "reports.html", rows=rows, by_day=sorted(by_day.items()),
                    top=max(by_day.values(), default=1) or 1, hours=per_hour())  # fmt: skip

    @router.get("/console/reports.csv")
    def reports_csv(request: Request) -> Response:
        if session(request) is None:
            return RedirectResponse("/console/login", status_code=303)
        buf = io.StringIO()  # text cells that could start a spreadsheet formula: quoted
        write_csv(buf, ["day", "kiosk", "method", "currency", "amount_minor"], money_rows(),
                  numbers=["amount_minor"])  # fmt: skip
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": "attachment; filename=money.csv"},
        )

    @router.get("/console/audit", response_class=HTMLResponse)
    def audit_page(request: Request) -> Response:
        with engine.connect() as conn:
            rows = conn.execute(select(audit).order_by(audit.c.id.desc()).limit(200)).all()
        return page(request, "audit.html", rows=rows)

    app.include_router(router)
