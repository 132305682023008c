"""Releases as the operator runs them: `sync.admin release trust | add` and `sync.admin
rollout`. Head office keeps the utility's release public key, verifies every release file with
it before storing it in the release folder, and rolls a stored release out: the canaries at
once, every other kiosk after the delay, unless a canary rolled it back or refused it."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, delete, insert, select

from sync.admin.kiosks import Refused
from sync.store import audit
from sync.store.tables import alarm, kiosks, release_key, releases, rollouts
from sync.wire import signing

#: `--then-after`: a number and its unit
DELAY = re.compile(r"([0-9]{1,6})([smhd])")
UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: the kiosk id head office's own alarms about a release name
HEAD_OFFICE = "head-office"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def trust(engine: Engine, public_key: str, who: str) -> str:
    try:
        key = signing.public_key_text(signing.load_public_key(public_key))
    except signing.BadRelease as err:
        raise Refused(f"{err}: nothing changed") from None
    with engine.begin() as conn:
        was = conn.execute(select(release_key)).first()
        conn.execute(delete(release_key))
        conn.execute(insert(release_key).values(id=1, public_key=key, trusted=_now()))
        audit.write(conn, who, "release_trust", "the release public key",
                    target="release key", before=audit.row(was, "public_key"),
                    after={"public_key": key})  # fmt: skip
    return key


def add(engine: Engine, folder: Path, file: Path, signature: Path, who: str) -> str:
    """Verify `file` with the trusted key and store it in `folder` (refused: nothing stored,
    the refusal audited and an alarm of kind `release`)."""
    with engine.connect() as conn:
        key = conn.execute(select(release_key.c.public_key)).scalar()
    if key is None:
        raise Refused("no release public key is trusted yet (sync.admin release trust KEY): "
                      "nothing stored")  # fmt: skip
    try:
        text = signature.read_text("utf-8")
        sig = signing.parse(text)
        if sig.file != file.name:
            raise signing.BadRelease(f"the signature is of {sig.file}, not {file.name}")
        signing.verify(file, sig, signing.load_public_key(key))
    except (signing.BadRelease, OSError, UnicodeDecodeError) as err:
        why = (f"{err.filename}: {err.strerror}" if isinstance(err, OSError) and err.strerror
               else str(err))  # fmt: skip
        with engine.begin() as conn:
            audit.write(conn, who, "release_refused", f"{file.name}: {why}",
                        target=f"release {file.name}")  # fmt: skip
            alarm(conn, HEAD_OFFICE, None, f"release file {file.name} refused: {why}", [],
                  "release")  # fmt: skip
        raise Refused(f"{file.name} refused: {why}: nothing stored") from None
    with engine.connect() as conn:
        if conn.execute(select(releases).where(releases.c.version == sig.version)).first():
            raise Refused(f"release {sig.version} is stored already: nothing changed")
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{sig.file}.part"
    shutil.copyfile(file, part)
    size, sha = signing.digest(part)
    if (size, sha) != (sig.size, sig.sha256):  # changed while it was copied
        part.unlink()
        raise Refused(f"{file.name} changed while it was copied: nothing stored")
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    os.replace(part, folder / sig.file)
    row = {"version": sig.version, "file": sig.file, "size": sig.size, "sha256": sig.sha256,
           "signature": text, "added": _now()}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(releases).values(**row))
        audit.write(conn, who, "release_add", f"{sig.file}: release {sig.version}",
                    target=f"release {sig.version}",
                    after={k: row[k] for k in ("version", "file", "size", "sha256")})  # fmt: skip
    return f"release {sig.version}: {sig.file}, {sig.size} bytes, stored in {folder}"


def delay(text: str) -> int:
    m = DELAY.fullmatch(text.strip())
    if m is None:
        raise Refused(f"--then-after {text!r} is not a delay like 30m, 24h or 2d: nothing "
                      "changed")  # fmt: skip
    return int(m.group(1)) * UNIT[m.group(2)]


def rollout(engine: Engine, version: str, canaries: str, then_after: str, who: str) -> str:
    seconds = delay(then_after)
    chosen = [k.strip() for k in canaries.split(",") if k.strip()]
    if not chosen:
        raise Refused("--canary names at least one kiosk: nothing changed")
    with engine.begin() as conn:
        if conn.execute(select(releases).where(releases.c.version == version)).first() is None:
            raise Refused(f"no release {version} is stored (sync.admin release add): nothing "
                          "changed")  # fmt: skip
        known = set(conn.execute(select(kiosks.c.kiosk_id).where(
            kiosks.c.kiosk_id.in_(chosen), kiosks.c.revoked.is_(None))).scalars())  # fmt: skip
        unknown = [k for k in chosen if k not in known]
        if unknown:
            raise Refused(f"no kiosk {', '.join(unknown)} is registered (and not revoked): "
                          "nothing changed")  # fmt: skip
        row = {"version": version, "canaries": ",".join(chosen), "after_seconds": seconds,
               "started": _now()}  # fmt: skip
        conn.execute(insert(rollouts).values(**row))
        audit.write(conn, who, "rollout", f"release {version}: {', '.join(chosen)} at once, "
                    f"the rest after {then_after}", target=f"rollout {version}",
                    after=row)  # fmt: skip
    return (f"rollout of {version}: {', '.join(chosen)} at once, every other kiosk after "
            f"{then_after} unless a canary rolls it back or refuses it")
