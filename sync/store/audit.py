"""The audit: every change to head office's data, every refusal and every login, with who and
when."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert

from sync.store.tables import audit


def write(conn: Any, who: str, action: str, detail: str) -> None:
    """One line of the audit, in the caller's transaction (it stands or falls with the change)."""
    conn.execute(insert(audit).values(ts=datetime.now(UTC).isoformat(), who=who, action=action,
                                      detail=detail))  # fmt: skip


def entry(engine: Engine, who: str, action: str, detail: str) -> None:
    """One line of the audit, in a transaction of its own (a refusal: nothing else changed)."""
    with engine.begin() as conn:
        write(conn, who, action, detail)
