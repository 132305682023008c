"""What every console page shares: the session behind a request (its person, role, language
and CSRF token), the page rendered in that person's language, a form post checked (CSRF and
role, a refusal audited), errors as pages, dates from forms and paging."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_start
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine, select

from sync.console.i18n import (
    LANG_NAMES,
    LANGS,
    N_,
    ROLE_NAMES,
    TZ,
    Texts,
    from_accept_language,
    language,
)
from sync.store import audit as audit_log

#: what each role may change (auditors only read); a form is shown only to these roles, and
#: the server refuses everyone else
MAY = {"key": ("operator", "admin"), "debt": ("admin",)}
SESSION_SECONDS = 8 * 3600
COOKIE = "ho_session"
PER_PAGE = 50

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def now_text() -> str:
    return datetime.now(UTC).isoformat()


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _audit(conn: Any, who: str, action: str, detail: str, **kw: Any) -> None:
    """One line of the audit, as the console's (sync/store/audit.py): every change made in
    the console goes through it with `target`, `before` and `after` (the changed row's stored
    fields), every refusal and login too."""
    audit_log.write(conn, who, action, detail, via="console", **kw)


class Msg(str):
    """A parameter of a ConsoleError that is itself a text of the catalogue: translated when
    the error is shown."""


class ConsoleError(Exception):
    """A request the console refuses or cannot answer: shown as a page in the reader's
    language (`msgid` from the catalogue, `params` filled in), with `status`."""

    def __init__(self, status: int, msgid: str, headers: dict[str, str] | None = None, /,
                 **params: Any) -> None:  # fmt: skip
        super().__init__(msgid.format(**params) if params else msgid)
        self.status, self.msgid, self.params, self.headers = status, msgid, params, headers


@dataclass
class Who:
    name: str
    role: str
    lang: str
    csrf: str

    def may(self, action: str) -> bool:
        return self.role in MAY[action]


class Console:
    """The console's shared parts over one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def session(self, request: Request) -> Who | None:
        """The person behind the request's cookie: a session not expired, of someone not
        disabled (`staff disable` ends their sessions too; this holds if it did not)."""
        from sync.store.tables import staff, staff_sessions

        token = request.cookies.get(COOKIE)
        if not token:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(staff_sessions.c.name, staff_sessions.c.csrf, staff.c.role,
                       staff.c.lang)
                .join(staff, staff.c.name == staff_sessions.c.name)
                .where(staff_sessions.c.token_sha256 == digest(token),
                       staff_sessions.c.expires > int(time.time()),
                       staff.c.disabled.is_(None))
            ).first()  # fmt: skip
        if row is None:
            return None
        return Who(row.name, row.role, language(row.lang), row.csrf)

    def texts(self, request: Request) -> Texts:
        """The reader's language: their own, logged in; else what their browser prefers."""
        who = self.session(request)
        if who is not None:
            return Texts(who.lang)
        return Texts(from_accept_language(request.headers.get("accept-language")))

    def render(self, request: Request, name: str, who: Who | None, t: Texts,
               status: int = 200, headers: dict[str, str] | None = None,
               **ctx: Any) -> Response:  # fmt: skip
        may = {action: who is not None and who.may(action) for action in MAY}
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return templates.TemplateResponse(
            request, name,
            {"who": who, "t": t, "_": t, "may": may, "langs": LANGS, "lang_names": LANG_NAMES,
             "role_names": ROLE_NAMES, "here": here, **ctx},
            status_code=status, headers=headers,
        )  # fmt: skip

    def page(self, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        """A page for the person logged in, in their language; the login page for no one."""
        who = self.session(request)
        if who is None:
            return RedirectResponse("/console/login", status_code=303)
        return self.render(request, name, who, Texts(who.lang), status, **ctx)

    def reader(self, request: Request) -> Who:
        """The person behind a request that needs one (a download, a form)."""
        who = self.session(request)
        if who is None:
            raise ConsoleError(401, N_("Log in first."))
        return who

    def checked(self, request: Request, csrf: str, action: str | None) -> Who:
        """The session behind a form post, its CSRF token and its role's right to `action`
        (None: anyone logged in, for their own settings); a refusal is audited and nothing
        changes."""
        who = self.reader(request)
        if not secrets.compare_digest(csrf.encode(), who.csrf.encode()):
            with self.engine.begin() as conn:
                _audit(conn, who.name, "refused", f"{action or 'form'}: missing or wrong CSRF "
                      "token")  # fmt: skip
            raise ConsoleError(403, N_("The form's security token is missing or wrong: load "
                                       "the page again and repeat."))  # fmt: skip
        if action is not None and not who.may(action):
            with self.engine.begin() as conn:
                _audit(conn, who.name, "refused", f"{action}: needs {' or '.join(MAY[action])}")
            t = Texts(who.lang)
            raise ConsoleError(403, N_("A {role} may not change this ({roles} only)."),
                               role=t(ROLE_NAMES.get(who.role, who.role)),
                               roles=t.either(MAY[action]))  # fmt: skip
        return who


# ---------------------------------------------------------------- dates and pages


_GERMAN_DAY = re.compile(r"([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})")


def day_of(text: str | None, what: str) -> date | None:
    """A day typed in a filter: 2026-12-07 (what a date field sends) or 7.12.2026; empty:
    None; anything else refused, saying how to write it."""
    said = (text or "").strip()
    if not said:
        return None
    try:
        if m := _GERMAN_DAY.fullmatch(said):
            return date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", said):
            return date.fromisoformat(said)
    except ValueError:
        pass
    raise ConsoleError(422, N_("{what}: {text} is not a day: write it as 2026-12-07 or "
                               "7.12.2026."), what=what, text=repr(said))  # fmt: skip


def utc_bound(day: date | None, *, after: bool = False) -> str | None:
    """Local midnight at the start of `day` (`after`: at its end) as a stored UTC time
    without its fraction or zone ("2026-12-06T23:00:00"): compared as text, it is before
    every stored time of that second, whichever way the time was written (entries end in
    "Z", the audit's in "+00:00", a whole second without a fraction)."""
    if day is None:
        return None
    try:
        if after:
            day += timedelta(days=1)
        at = datetime.combine(day, day_start(), TZ).astimezone(UTC)
    except OverflowError:
        return None  # beyond the calendar: no bound that side
    return at.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class Span:
    """The from/to days and the page a list is shown at, from the query string."""

    since: date | None
    until: date | None
    page: int
    total: int = 0
    per_page: int = PER_PAGE

    @classmethod
    def of(cls, since: str | None, until: str | None, page: str | None) -> Span:
        lo, hi = day_of(since, Msg(N_("from"))), day_of(until, Msg(N_("to")))
        if lo and hi and hi < lo:
            raise ConsoleError(422, N_("The last day is before the first."))
        n = (page or "1").strip()
        if not n.isdigit() or not 1 <= int(n) <= 1_000_000:
            raise ConsoleError(422, N_("Page {page} is not a page number."), page=repr(n))
        return cls(lo, hi, int(n))

    @property
    def lo(self) -> str | None:
        return utc_bound(self.since)

    @property
    def hi(self) -> str | None:
        return utc_bound(self.until, after=True)

    def within(self, column: Any) -> list[Any]:
        """Conditions for a stored UTC time `column` inside the days."""
        out = []
        if self.lo is not None:
            out.append(column >= self.lo)
        if self.hi is not None:
            out.append(column < self.hi)
        return out

    def has_day(self, day: str) -> bool:
        """A local day ("2026-12-07") inside the days."""
        return ((self.since is None or day >= self.since.isoformat())
                and (self.until is None or day <= self.until.isoformat()))  # fmt: skip

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def first(self) -> int:
        return min(self.total, self.offset + 1)

    @property
    def last(self) -> int:
        return min(self.total, self.offset + self.per_page)

    def link(self, path: str, page: int, **keep: Any) -> str:
        """The same list at another page, its filters kept."""
        query = {k: v for k, v in keep.items() if v not in (None, "")}
        if self.since:
            query["from"] = self.since.isoformat()
        if self.until:
            query["to"] = self.until.isoformat()
        if page > 1:
            query["page"] = page
        return path + ("?" + urlencode(query) if query else "")
