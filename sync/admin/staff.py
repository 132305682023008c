"""The console's people as an operator manages them: `sync.admin staff list | add | set-role |
reset-password | disable | enable | remove`. Passwords are read from stdin (or the terminal)
and stored as Argon2id hashes; disabling, removing or a new password ends that person's
sessions at once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from sync.admin.kiosks import Refused
from sync.console.people import ROLES, hasher
from sync.store import audit
from sync.store.tables import staff, staff_sessions

LANGS = ("de", "en")
MIN_PASSWORD = 10


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _state(r: Any) -> dict[str, Any] | None:
    """What the audit keeps of a person (never the password's hash)."""
    return audit.row(r, "name", "role", "lang", "disabled", "password_set")


def _row(conn: Any, name: str) -> Any:
    return conn.execute(select(staff).where(staff.c.name == name)).first()


def _existing(conn: Any, name: str) -> Any:
    row = _row(conn, name)
    if row is None:
        raise Refused(f"no staff member {name!r}: nothing changed")
    return row


def _password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise Refused(f"a password has at least {MIN_PASSWORD} characters: nothing changed")
    return hasher.hash(password)


def _end_sessions(conn: Any, name: str) -> int:
    return conn.execute(delete(staff_sessions).where(staff_sessions.c.name == name)).rowcount


def add(engine: Engine, name: str, role: str, lang: str, password: str, who: str) -> None:
    if not 1 <= len(name) <= 64 or name != name.strip():
        raise Refused(f"name {name!r} is 1 to 64 characters, no space at either end")
    if role not in ROLES:
        raise Refused(f"role {role!r} is not one of {', '.join(ROLES)}")
    if lang not in LANGS:
        raise Refused(f"language {lang!r} is not one of {', '.join(LANGS)}")
    digest = _password(password)
    with engine.begin() as conn:
        if _row(conn, name) is not None:
            raise Refused(f"staff member {name!r} exists already: nothing changed (set-role, "
                          "reset-password)")  # fmt: skip
        conn.execute(insert(staff).values(name=name, role=role, lang=lang, password_hash=digest,
                                          password_set=_now()))  # fmt: skip
        audit.write(conn, who, "staff_add", f"{name} as {role}", target=f"staff {name}",
                    after=_state(_row(conn, name)))  # fmt: skip


def change(engine: Engine, name: str, who: str, action: str, values: dict[str, Any],
           *, end_sessions: bool) -> int:  # fmt: skip
    """Change one person's row; the sessions they had ended (if asked), how many."""
    with engine.begin() as conn:
        was = _existing(conn, name)
        conn.execute(update(staff).where(staff.c.name == name).values(**values))
        ended = _end_sessions(conn, name) if end_sessions else 0
        said = ", ".join(f"{k}" for k in values if k != "password_hash")
        audit.write(conn, who, action, f"{name}: {said}" + (f"; {ended} sessions ended" if ended
                    else ""), target=f"staff {name}", before=_state(was),
                    after=_state(_row(conn, name)))  # fmt: skip
    return ended


def set_role(engine: Engine, name: str, role: str, who: str) -> int:
    if role not in ROLES:
        raise Refused(f"role {role!r} is not one of {', '.join(ROLES)}")
    # a session carries the role it was opened with only through the staff row: no end needed,
    # but a lowered role takes effect at the next request anyway
    return change(engine, name, who, "staff_role", {"role": role}, end_sessions=False)


def reset_password(engine: Engine, name: str, password: str, who: str) -> int:
    return change(engine, name, who, "staff_password",
                  {"password_hash": _password(password), "password_set": _now()},
                  end_sessions=True)  # fmt: skip


def disable(engine: Engine, name: str, who: str) -> int:
    with engine.connect() as conn:
        if _existing(conn, name).disabled is not None:
            raise Refused(f"{name} is disabled already: nothing changed")
    return change(engine, name, who, "staff_disable", {"disabled": _now()}, end_sessions=True)


def enable(engine: Engine, name: str, who: str) -> int:
    with engine.connect() as conn:
        if _existing(conn, name).disabled is None:
            raise Refused(f"{name} is not disabled: nothing changed")
    return change(engine, name, who, "staff_enable", {"disabled": None}, end_sessions=False)


def remove(engine: Engine, name: str, who: str) -> int:
    """Offboard a person: their row and sessions go; the audit keeps their name on what they
    did."""
    with engine.begin() as conn:
        was = _existing(conn, name)
        ended = _end_sessions(conn, name)
        conn.execute(delete(staff).where(staff.c.name == name))
        audit.write(conn, who, "staff_remove", f"{name} removed; {ended} sessions ended",
                    target=f"staff {name}", before=_state(was))  # fmt: skip
    return ended


def listing(engine: Engine) -> str:
    with engine.connect() as conn:
        rows = conn.execute(select(staff).order_by(staff.c.name)).all()
        sessions = dict(conn.execute(
            select(staff_sessions.c.name, staff_sessions.c.expires)).all())  # fmt: skip
    lines = [f"{'name':<24} {'role':<9} {'lang':<4} {'state':<9} {'password set (UTC)':<19} "
             f"{'session':<7}"]  # fmt: skip
    for r in rows:
        state = "disabled" if r.disabled else "active"
        since = (r.password_set or "-")[:19].replace("T", " ")
        lines.append(f"{r.name:<24} {r.role:<9} {r.lang:<4} {state:<9} {since:<19} "
                     f"{'open' if r.name in sessions else '-':<7}")  # fmt: skip
    return "\n".join(lines) + "\n"
