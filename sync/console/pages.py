"""Head office's staff console at /console/: server-rendered pages (Jinja2 templates in
sync/console/templates/), no build step and no script the pages need, in German or English
(each person's own, `staff.lang`; catalogues in sync/console/locale/).

People: `python -m sync.admin staff add NAME --role operator|auditor|admin` (the password read
from stdin, stored as an Argon2id hash). A login opens a session (a random token in an
HttpOnly, SameSite=Strict cookie; its SHA-256 in `staff_sessions`, 8 hours) with its own CSRF
token, which every form posts back; a disabled person's login fails as a wrong password does
and their sessions no longer count. Auditors read; operators also block and unblock keys;
admins also set debts (`MAY`): each form is shown only to the roles that may use it, and the
server refuses the others. Every login, change and refusal is written to `audit`, a change
with the row before and after.

Pages: the fleet (each kiosk: state, last contact, newest entry, backlog, open device faults,
cash in the box since it was last emptied, paper), a page per kiosk (its faults, cash box
emptyings, the version it reported, its token's age), alarms, a key or contract account (its
debt as set, what the automats collected since, the history), a transaction by id (the
receipt's QR code) as a clerk reads it with every journal entry behind it, reports with
charts and a CSV download, and the audit. Errors come back as pages in the reader's language
(the console is an application of its own under /console: the kiosks' API keeps its JSON).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from typing import Any

from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine, delete, insert, select, update
from starlette.exceptions import HTTPException

from sync.console import accounts, fleet, reports
from sync.console.common import (
    COOKIE,
    MAY,
    SESSION_SECONDS,
    Console,
    ConsoleError,
    Msg,
    _audit,
    digest,
)
from sync.console.i18n import LANGS, N_, Texts, from_accept_language
from sync.console.people import ROLES, _dummy_hash, hasher
from sync.store.audit import row as stored

__all__ = ["MAY", "mount"]

STAFF_FIELDS = ("name", "role", "lang", "disabled", "password_set")
#: what the console says of an error it did not raise itself, by status
STATUS_TEXT = {
    400: N_("The request was not understood."),
    401: N_("Log in first."),
    403: N_("This is not allowed."),
    404: N_("There is no such page."),
    405: N_("This page cannot be used that way."),
    413: N_("That is too much at once."),
    429: N_("Too many failed logins from this address: wait a minute, then try again."),
}


def mount(app: FastAPI, engine: Engine, doorman: Any) -> None:
    """The console under /console on `app`; `doorman` counts failed logins per address (ten
    in a minute and that address waits), apart from the kiosks' failed tokens."""
    threading.Thread(target=_dummy_hash, daemon=True).start()  # made before the first login
    c = Console(engine)
    console = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    router = APIRouter(include_in_schema=False)  # pages, not the wire protocol

    def error_page(request: Request, status: int, text: str, t: Texts,
                   headers: dict[str, str] | None = None) -> Response:  # fmt: skip
        who = c.session(request)
        back = request.headers.get("referer") or ""
        host = f"{request.url.scheme}://{request.url.netloc}/console/"
        back = back if back.startswith(host) else "/console/"
        return c.render(request, "error.html", who, t, status=status, headers=headers,
                        message=text, status_code=status, back=back)  # fmt: skip

    @console.exception_handler(ConsoleError)
    def refused(request: Request, err: ConsoleError) -> Response:
        t = c.texts(request)
        params = {k: t(v) if isinstance(v, Msg) else v for k, v in err.params.items()}
        return error_page(request, err.status, t(err.msgid, **params), t, err.headers)

    @console.exception_handler(HTTPException)
    def http_error(request: Request, err: HTTPException) -> Response:
        t = c.texts(request)
        text = t(STATUS_TEXT[err.status_code]) if err.status_code in STATUS_TEXT else str(
            err.detail)
        return error_page(request, err.status_code, text, t, dict(err.headers or {}))

    @console.exception_handler(RequestValidationError)
    def invalid(request: Request, err: RequestValidationError) -> Response:
        t = c.texts(request)
        names = sorted({str(e["loc"][-1]) for e in err.errors() if e.get("loc")})
        return error_page(request, 422, t("The form is incomplete: {fields} missing or wrong.",
                                          fields=", ".join(names)), t)  # fmt: skip

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        t = Texts(from_accept_language(request.headers.get("accept-language")))
        return c.render(request, "login.html", None, t, error="")

    @router.post("/login")
    def login(request: Request, name: str = Form(""), password: str = Form("")) -> Response:
        from sync.store.tables import staff, staff_sessions

        t = Texts(from_accept_language(request.headers.get("accept-language")))
        where = request.client.host if request.client else "?"
        try:
            doorman.check(where)
        except HTTPException as err:
            raise ConsoleError(err.status_code, STATUS_TEXT[429], dict(err.headers or {})) from None
        with engine.begin() as conn:
            row = conn.execute(select(staff).where(staff.c.name == name)).first()
            # an unknown name takes as long as a known one: verified against no one's hash;
            # a disabled person's password is verified too, and refused as a wrong one
            stored_hash = row.password_hash if row is not None else _dummy_hash()
            try:
                ok = hasher.verify(stored_hash, password) and row is not None and row.role in ROLES
            except VerificationError:
                ok = False
            except InvalidHashError:  # a stored hash that is none: as slow as any refusal
                ok = False
                with contextlib.suppress(VerificationError):
                    hasher.verify(_dummy_hash(), password)
            disabled = row is not None and row.disabled is not None
            if row is None or not ok or disabled:
                doorman.failed(where)
                _audit(conn, name or "?", "login_failed",
                      f"{where} (disabled)" if ok and disabled else where)
                return c.render(request, "login.html", None, t, status=401,
                                error=t("Name or password is wrong."))  # fmt: skip
            token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
            conn.execute(delete(staff_sessions).where(staff_sessions.c.expires < time.time()))
            conn.execute(insert(staff_sessions).values(
                token_sha256=digest(token), name=name, csrf=csrf,
                expires=int(time.time()) + SESSION_SECONDS))  # fmt: skip
            _audit(conn, name, "login", row.role, target=f"staff {name}")
        out = RedirectResponse("/console/", status_code=303)
        out.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/console",
                       secure=request.url.scheme == "https", max_age=SESSION_SECONDS)  # fmt: skip
        return out

    @router.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        from sync.store.tables import staff_sessions

        who = c.session(request)
        if who is not None and secrets.compare_digest(csrf.encode(), who.csrf.encode()):
            with engine.begin() as conn:
                token = request.cookies.get(COOKIE, "")
                conn.execute(delete(staff_sessions)
                             .where(staff_sessions.c.token_sha256 == digest(token)))  # fmt: skip
                _audit(conn, who.name, "logout", "", target=f"staff {who.name}")
        out = RedirectResponse("/console/login", status_code=303)
        out.delete_cookie(COOKIE, path="/console")
        return out

    @router.post("/lang")
    def set_language(request: Request, lang: str = Form(...), csrf: str = Form(""),
                     back: str = Form("/console/")) -> Response:  # fmt: skip
        """A person's own language: stored with them, audited."""
        from sync.store.tables import staff

        who = c.checked(request, csrf, None)
        if lang not in LANGS:
            raise ConsoleError(422, N_("Language {lang} is not one of {langs}."),
                               lang=repr(lang), langs=", ".join(LANGS))  # fmt: skip
        with engine.begin() as conn:
            was = conn.execute(select(staff).where(staff.c.name == who.name)).first()
            if was is None:  # removed since the session was read
                raise ConsoleError(401, N_("Log in first."))
            conn.execute(update(staff).where(staff.c.name == who.name).values(lang=lang))
            now = conn.execute(select(staff).where(staff.c.name == who.name)).first()
            _audit(conn, who.name, "lang", f"{who.name}: {was.lang} -> {lang}",
                  target=f"staff {who.name}", before=stored(was, *STAFF_FIELDS),
                  after=stored(now, *STAFF_FIELDS))  # fmt: skip
        # back to the page it was chosen on: only a path of the console, never elsewhere
        if not back.startswith("/console/") or "//" in back or "\\" in back:
            back = "/console/"
        return RedirectResponse(back, status_code=303)

    fleet.routes(c, router)
    accounts.routes(c, router)
    reports.routes(c, router)
    console.include_router(router)
    app.mount("/console", console)
