"""The fleet's kiosks as the operator runs them: `sync.admin kiosk list | add | rotate |
revoke`. A kiosk's token is printed once (head office keeps its SHA-256 only); its chain secret
is made when it is added and kept for good (its entries verify with it)."""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from sync.store import audit
from sync.store.tables import entries, kiosks, token_digest
from sync.wire.protocol import CHAIN_SECRET_BYTES

#: a kiosk id as the site schema takes it (kiosk/domain/site.py)
KIOSK_ID = re.compile(r"[A-Z0-9][A-Z0-9-]{1,30}")


class Refused(Exception):
    """An admin command that changes nothing, and why."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _row(conn: Any, kiosk_id: str) -> Any:
    return conn.execute(select(kiosks).where(kiosks.c.kiosk_id == kiosk_id)).first()


def _state(r: Any) -> dict[str, Any] | None:
    """What the audit keeps of a kiosk (never its token's digest nor its chain secret)."""
    return audit.row(r, "kiosk_id", "registered", "token_since", "revoked")


def _secret_file(path: str | None) -> int | None:
    """A new file of our own for the chain secret, before anything changes: an old one is
    never overwritten."""
    if path is None:
        return None
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as err:
        raise Refused(f"{path}: {err.strerror}: nothing changed") from None


def _write_secret(fd: int, kiosk_id: str, chain: str) -> None:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"# kiosk {kiosk_id}: its journal's chain secret (head office holds it too)\n"
                f"[journal]\nchain_secret = \"{chain}\"\n")  # fmt: skip
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def _secret_out(path: str | None, kiosk_id: str) -> Iterator[Callable[[str], None]]:
    """A function that writes the kiosk's chain secret into a new file at `path` (nothing
    without one), the file made before anything changes; if the change fails, the file goes."""
    fd = _secret_file(path)

    def put(chain: str) -> None:
        nonlocal fd
        if fd is not None:
            mine, fd = fd, None
            _write_secret(mine, kiosk_id, chain)

    try:
        yield put
    except BaseException:
        if fd is not None:
            os.close(fd)
        if path is not None and os.path.exists(path):
            os.unlink(path)
        raise


def add(engine: Engine, kiosk_id: str, secret_file: str | None, who: str) -> str:
    """A new kiosk: its token (returned, printed once) and its chain secret (into
    `secret_file`, as the `[journal]` lines of its secrets file). An id that exists is
    refused: `rotate` gives it a new token."""
    if not KIOSK_ID.fullmatch(kiosk_id):  # as a site file names it ("office" is head office's)
        raise Refused(f"kiosk id {kiosk_id!r} is not 2 to 31 capitals, digits and '-', "
                      "starting with a capital or digit")  # fmt: skip
    with engine.connect() as conn:
        if _row(conn, kiosk_id) is not None:
            raise Refused(f"kiosk {kiosk_id} exists already: nothing changed (a new token: "
                          f"sync.admin kiosk rotate {kiosk_id})")  # fmt: skip
    token, chain, now = secrets.token_urlsafe(24), secrets.token_hex(CHAIN_SECRET_BYTES), _now()
    with _secret_out(secret_file, kiosk_id) as put_secret, engine.begin() as conn:
        conn.execute(insert(kiosks).values(kiosk_id=kiosk_id, token_sha256=token_digest(token),
                                           chain_secret=chain, registered=now,
                                           token_since=now))  # fmt: skip
        audit.write(conn, who, "kiosk_add", f"kiosk {kiosk_id} added",
                    target=f"kiosk {kiosk_id}", after=_state(_row(conn, kiosk_id)))
        put_secret(chain)
    return token


def rotate(engine: Engine, kiosk_id: str, secret_file: str | None, who: str) -> str:
    """A new token for a kiosk (its old one is refused from now on; a revoked kiosk is taken
    back). Its chain secret stays (written to `secret_file` again if asked: a kiosk whose
    secrets file was lost)."""
    token = secrets.token_urlsafe(24)
    with _secret_out(secret_file, kiosk_id) as put_secret, engine.begin() as conn:
        was = _row(conn, kiosk_id)
        if was is None:
            raise Refused(f"no kiosk {kiosk_id}: nothing changed (a new one: sync.admin "
                          f"kiosk add {kiosk_id})")  # fmt: skip
        chain = was.chain_secret or secrets.token_hex(CHAIN_SECRET_BYTES)
        conn.execute(update(kiosks).where(kiosks.c.kiosk_id == kiosk_id).values(
            token_sha256=token_digest(token), token_since=_now(), revoked=None,
            chain_secret=chain))  # fmt: skip
        audit.write(conn, who, "kiosk_rotate", f"kiosk {kiosk_id}: a new token",
                    target=f"kiosk {kiosk_id}", before=_state(was),
                    after=_state(_row(conn, kiosk_id)))  # fmt: skip
        put_secret(chain)
    return token


def revoke(engine: Engine, kiosk_id: str, who: str) -> None:
    """Cut a kiosk off: its token is refused from now on (a stolen automat, one taken out of
    service). What it delivered stays, and so does its chain secret; `rotate` takes it back."""
    with engine.begin() as conn:
        was = _row(conn, kiosk_id)
        if was is None:
            raise Refused(f"no kiosk {kiosk_id}: nothing changed")
        if was.revoked is not None:
            raise Refused(f"kiosk {kiosk_id} was revoked already ({was.revoked}): nothing changed")
        # the digest of a token no one has: no bearer matches it any more
        gone = token_digest("revoked:" + secrets.token_urlsafe(32))
        conn.execute(update(kiosks).where(kiosks.c.kiosk_id == kiosk_id)
                     .values(token_sha256=gone, revoked=_now()))  # fmt: skip
        audit.write(conn, who, "kiosk_revoke", f"kiosk {kiosk_id}: token revoked",
                    target=f"kiosk {kiosk_id}", before=_state(was),
                    after=_state(_row(conn, kiosk_id)))  # fmt: skip


def _age(ts: str | None, now: datetime) -> str:
    if not ts:
        return "-"
    try:
        then = datetime.fromisoformat(ts)
    except ValueError:
        return "?"
    days = (now - then).days
    return f"{days} d" if days >= 1 else f"{int((now - then).total_seconds() // 3600)} h"


def listing(engine: Engine) -> str:
    """One line per kiosk: its state, last contact, the version it reported, its token's age
    and how many entries it delivered."""
    now = datetime.now(UTC)
    with engine.connect() as conn:
        rows = conn.execute(select(kiosks).order_by(kiosks.c.kiosk_id)).all()
        counts = dict(conn.execute(select(entries.c.kiosk_id, func.count())
                                   .group_by(entries.c.kiosk_id)).all())  # fmt: skip
    head = (f"{'kiosk':<16} {'state':<8} {'last contact (UTC)':<20} {'version':<12} "
            f"{'journal':<8} {'token age':>9} {'entries':>8}")  # fmt: skip
    lines = [head]
    for r in rows:
        state = "revoked" if r.revoked else ("active" if r.last_contact else "never")
        contact = (r.last_contact or "never")[:19].replace("T", " ")
        lines.append(f"{r.kiosk_id:<16} {state:<8} {contact:<20} {(r.version or '-')[:12]:<12} "
                     f"{(r.journal_schema or '-')[:8]:<8} {_age(r.token_since, now):>9} "
                     f"{counts.get(r.kiosk_id, 0):>8}")  # fmt: skip
    return "\n".join(lines) + "\n"


def refuse(err: Refused) -> int:
    print(f"sync.admin: {err}", file=sys.stderr)
    return 2
