"""Releases at head office (#38): where the release files are kept, which release each kiosk
is to run (the rollout in force: canaries at once, every other kiosk after the delay, none
while a canary has rolled the release back or refused it) and what each kiosk reported of
its update (`release` journal entries; a refusal or a rollback raises a `release` alarm)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.engine import make_url

from sync.store.tables import alarm_once, kiosk_releases, kiosks, releases, rollouts

#: where the release files are kept unless `--releases` or this says otherwise
RELEASES_ENV = "HEADOFFICE_RELEASES"
DEFAULT_FOLDER = Path("/var/lib/prepaid-headoffice/releases")
#: the states that stop a rollout when a canary reports them (and raise an alarm)
BAD = ("rolled_back", "refused")


def folder(db_url: str, given: str | None = None) -> Path:
    """The release folder: `given`, else $HEADOFFICE_RELEASES, else `releases` beside an
    SQLite database file, else /var/lib/prepaid-headoffice/releases."""
    if given:
        return Path(given)
    if os.environ.get(RELEASES_ENV):
        return Path(os.environ[RELEASES_ENV])
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / "releases"
    return DEFAULT_FOLDER


def track_releases(conn: Any, kiosk_id: str, rows: list[dict[str, Any]]) -> None:
    """Each kiosk's newest update state from the `release` entries just stored (in the upload's
    transaction); a refusal or a rollback is an alarm for the operator."""
    for r in rows:
        if r["kind"] != "release":
            continue
        data = json.loads(r["data"])
        state, version = str(data.get("state", "")), str(data.get("version", ""))
        detail = str(data.get("detail") or "")
        conn.execute(delete(kiosk_releases).where(kiosk_releases.c.kiosk_id == kiosk_id))
        conn.execute(insert(kiosk_releases).values(kiosk_id=kiosk_id, version=version,
                                                   state=state, ts=r["ts"], detail=detail,
                                                   seq=r["seq"]))  # fmt: skip
        if state in BAD:
            said = "refused" if state == "refused" else "rolled back"
            alarm_once(conn, kiosk_id, r["seq"], f"release {version} {said}: {detail}",
                       "release")  # fmt: skip


@dataclass(frozen=True)
class Rollout:
    version: str
    canaries: tuple[str, ...]
    after: timedelta
    started: datetime

    @property
    def rest_from(self) -> datetime:
        return self.started + self.after


def current(conn: Any) -> Rollout | None:
    row = conn.execute(select(rollouts).order_by(rollouts.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return Rollout(row.version, tuple(k for k in row.canaries.split(",") if k),
                   timedelta(seconds=row.after_seconds),
                   datetime.fromisoformat(row.started))  # fmt: skip


def halted_by(conn: Any, r: Rollout) -> list[str]:
    """The canaries that rolled the rollout's release back or refused it."""
    said = conn.execute(select(kiosk_releases.c.kiosk_id).where(
        kiosk_releases.c.kiosk_id.in_(r.canaries), kiosk_releases.c.version == r.version,
        kiosk_releases.c.state.in_(BAD))).scalars()  # fmt: skip
    return sorted(said)


def target(conn: Any, kiosk_id: str, now: datetime | None = None) -> dict[str, Any] | None:
    """The release `kiosk_id` is to run now (its stored row), or None."""
    r = current(conn)
    if r is None:
        return None
    now = now or datetime.now(UTC)
    if kiosk_id not in r.canaries and (now < r.rest_from or halted_by(conn, r)):
        return None
    row = conn.execute(select(releases).where(releases.c.version == r.version)).first()
    return None if row is None else dict(row._mapping)


def status(engine: Engine, now: datetime | None = None) -> str:
    """`sync.admin rollout status`: the rollout, then per kiosk its target and state."""
    now = now or datetime.now(UTC)
    with engine.connect() as conn:
        r = current(conn)
        if r is None:
            return "no rollout\n"
        halted = halted_by(conn, r)
        head = (f"rollout of {r.version}: canaries {', '.join(r.canaries)} from "
                f"{r.started.isoformat(timespec='seconds')}, every other kiosk from "
                f"{r.rest_from.isoformat(timespec='seconds')}")  # fmt: skip
        if halted:
            head += f"\nHALTED: {', '.join(halted)} rolled it back or refused it"
        reported = {row.kiosk_id: row for row in conn.execute(select(kiosk_releases))}
        fleet = conn.execute(select(kiosks.c.kiosk_id, kiosks.c.version, kiosks.c.revoked)
                             .order_by(kiosks.c.kiosk_id)).all()  # fmt: skip
        lines = [head, f"{'kiosk':<16} {'target':<12} {'runs':<12} {'state':<12} {'since':<25} "
                 "detail"]  # fmt: skip
        for k in fleet:
            if k.revoked:
                continue
            canary = k.kiosk_id in r.canaries
            if canary or (now >= r.rest_from and not halted):
                goal = r.version
            else:
                goal = "halted" if halted else "waiting"
            rep = reported.get(k.kiosk_id)
            if rep is not None and rep.version == r.version:
                state, since, detail = rep.state.replace("_", " "), rep.ts, rep.detail
            elif k.version == r.version:
                state, since, detail = "running", "", ""
            else:
                state, since, detail = "pending", "", ""
            lines.append(f"{k.kiosk_id:<16} {goal:<12} {k.version or '-':<12} {state:<12} "
                         f"{since or '-':<25} {detail}".rstrip())  # fmt: skip
        return "\n".join(lines) + "\n"
