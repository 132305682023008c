"""The audit: every change to head office's data (from the admin command, the console and the
billing API), every export, every refusal and every login, with who, when, through what, on
what, and what it was before and after (JSON, as stored: amounts in minor units with their
currency)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert

from sync.store.tables import audit

#: where a change came from
VIA = ("cli", "console", "api")


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def write(conn: Any, who: str, action: str, detail: str, *, via: str = "cli", target: str = "",
          before: Any = None, after: Any = None) -> None:  # fmt: skip
    """One line of the audit, in the caller's transaction: it stands or falls with the change.
    `before` and `after`: what the changed thing was and is (a dict of its stored fields;
    None where it did not exist or is gone)."""
    if via not in VIA:
        raise ValueError(f"audit via {via!r} is not one of {', '.join(VIA)}")
    conn.execute(insert(audit).values(
        ts=datetime.now(UTC).isoformat(), who=who, action=action, detail=detail, via=via,
        target=target[:128], before=_json(before), after=_json(after)))  # fmt: skip


def entry(engine: Engine, who: str, action: str, detail: str, **kw: Any) -> None:
    """One line of the audit in a transaction of its own (a refusal, an export: nothing else
    changed)."""
    with engine.begin() as conn:
        write(conn, who, action, detail, **kw)


def row(r: Any, *fields: str) -> dict[str, Any] | None:
    """`fields` of a database row as a dict (None for no row): the audit's before or after."""
    return None if r is None else {f: r._mapping[f] for f in fields}
