"""The automat downloads, verifies and unpacks a release in the background (#38): real head
office process, real HTTP, a real Debian package; a download broken off resumes from where it
stopped; a release that does not verify is refused (journaled, its file deleted, never tried
again) and head office raises an alarm; the switch writes the launcher's state."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from kiosk.adapters.updates import RELEASE_PYTHON, Updater, read_state
from kiosk.domain.errors import ConfigError
from kiosk.domain.site import load_site, load_update_key
from kiosk.ledger.journal import Journal
from sync.admin import main as admin_main
from sync.store.tables import alarms, open_db
from sync.wire import signing
from sync.wire.client import SyncClient
from sync.wire.protocol import Kind
from tests.conftest import poll_until, serve_head_office
from tests.releasekit import build_deb, sign


def admin(db: str, *args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = admin_main(["--db", db, *args])
    assert code == 0, err.getvalue()
    return out.getvalue()


def tree(tmp: Path, version: str) -> Path:
    """An automat's package tree: its environment's Python (here a script) and some bulk."""
    root = tmp / f"tree-{version}"
    python = root / RELEASE_PYTHON
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\necho release {version}\n", "utf-8")
    python.chmod(0o755)
    (root / "opt/prepaid-kiosk/bulk").write_bytes(os.urandom(300_000))  # not compressible
    return root


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, Any]]:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    key = tmp_path / "release.key"
    public = signing.make_key(key)
    token = admin(db, "kiosk", "add", "K-01").strip()
    admin(db, "release", "trust", public)
    url, proc = serve_head_office(db, quiet=True)
    yield {"db": db, "key": key, "public": public, "token": token, "url": url, "tmp": tmp_path}
    proc.terminate()
    proc.wait(10)


def stored_release(fleet: dict[str, Any], version: str) -> Path:
    tmp = fleet["tmp"]
    deb = build_deb(tmp, version, tree(tmp, version))
    admin(fleet["db"], "release", "add", str(deb), "--signature", str(sign(deb, version,
          fleet["key"])))  # fmt: skip
    admin(fleet["db"], "rollout", version, "--canary", "K-01")
    return deb


def updater(fleet: dict[str, Any], journal: Journal, **kw: Any) -> Updater:
    client = SyncClient(fleet["url"], fleet["token"], "K-01", timeout=(2.0, 10.0))
    return Updater(journal, client, fleet["tmp"] / "data", fleet["public"], "1.0.0",
                   lambda: datetime.now(UTC), **kw)  # fmt: skip


def states(journal: Journal) -> list[tuple[str, str, str]]:
    return [(e.data["state"], e.data["version"], e.data.get("detail") or "")
            for e in journal.entries_of_kind(Kind.RELEASE)]  # fmt: skip


def settle(u: Updater) -> None:
    poll_until(lambda: not u.busy(), "the download thread", 30)


def test_a_release_is_downloaded_resumed_verified_and_unpacked(fleet: dict[str, Any]) -> None:
    deb = stored_release(fleet, "2.0.0")
    data = fleet["tmp"] / "data"
    journal = Journal(data / "journal-K-01.sqlite", "K-01")
    u = updater(fleet, journal, launched=True)
    # a download broken off before: the first 100 000 bytes are there
    releases = data / "releases"
    releases.mkdir(parents=True)
    (releases / f"{deb.name}.part").write_bytes(deb.read_bytes()[:100_000])
    u.after_round()
    settle(u)
    assert states(journal) == [("downloading", "2.0.0", "from byte 100000"),
                               ("verified", "2.0.0", f"{deb.stat().st_size} bytes, unpacked")]
    unpacked = releases / "2.0.0" / RELEASE_PYTHON
    assert subprocess.run([unpacked], capture_output=True, text=True).stdout == "release 2.0.0\n"
    assert not any(releases.glob("*.part")) and not any(releases.glob(".unpack-*"))
    assert u.waiting == "2.0.0"
    u.after_round()  # waiting for the switch: nothing downloaded again
    assert not u.busy() and len(states(journal)) == 2
    # the switch: journaled, and the launcher's state with the trial
    before = time.time()
    assert u.switch() is True
    state = read_state(releases)
    assert state["current"] == "2.0.0" and state["previous"] is None  # back to the installed
    assert before + 299 < state["trial_until"] < time.time() + 301
    assert states(journal)[-1] == ("installed", "2.0.0", "from 1.0.0")
    journal.close()


def test_without_a_launcher_the_automat_does_not_switch(fleet: dict[str, Any]) -> None:
    stored_release(fleet, "2.0.0")
    journal = Journal(fleet["tmp"] / "data" / "journal-K-01.sqlite", "K-01")
    u = updater(fleet, journal, launched=False)
    u.after_round()
    settle(u)
    assert u.waiting == "2.0.0" and u.switch() is False
    assert [s for s, _, _ in states(journal)] == ["downloading", "verified"]
    assert read_state(fleet["tmp"] / "data" / "releases") == {}
    journal.close()


def test_a_release_altered_at_head_office_is_refused_and_not_tried_again(
    fleet: dict[str, Any],
) -> None:
    deb = stored_release(fleet, "2.0.0")
    stored = fleet["tmp"] / "releases" / deb.name  # head office's copy, altered on its disk
    stored.write_bytes(stored.read_bytes()[:-10] + b"x" * 10)
    data = fleet["tmp"] / "data"
    journal = Journal(data / "journal-K-01.sqlite", "K-01")
    u = updater(fleet, journal, launched=True)
    u.after_round()
    settle(u)
    said = states(journal)
    assert [s for s, _, _ in said] == ["downloading", "refused"]
    assert "not the one signed" in said[-1][2]
    assert not any((data / "releases").glob("*.part")) and not (data / "releases/2.0.0").exists()
    assert u.waiting is None and u.switch() is False
    u.after_round()  # never tried again, also by the next process (from the journal)
    assert not u.busy() and len(states(journal)) == 2
    assert updater(fleet, journal).given_up == {"2.0.0"}
    # delivered: head office shows it refused and raises the alarm
    client = SyncClient(fleet["url"], fleet["token"], "K-01")
    client.upload(journal.raw_entries())
    status = admin(fleet["db"], "rollout", "status")
    assert "refused" in status and "HALTED: K-01" in status
    engine = open_db(fleet["db"])
    with engine.connect() as conn:
        said_ho = conn.execute(select(alarms.c.kind, alarms.c.text)).all()
    engine.dispose()
    assert said_ho == [("release", "release 2.0.0 refused: prepaid-kiosk_2.0.0_amd64.deb.part: its "
                                   "SHA-256 is not the one signed (altered?)")]
    journal.close()


def test_a_signature_of_another_key_is_refused_before_a_byte_is_downloaded(
    fleet: dict[str, Any],
) -> None:
    stored_release(fleet, "2.0.0")
    data = fleet["tmp"] / "data"
    journal = Journal(data / "journal-K-01.sqlite", "K-01")
    other = signing.make_key(fleet["tmp"] / "other.key")
    client = SyncClient(fleet["url"], fleet["token"], "K-01")
    u = Updater(journal, client, data, other, "1.0.0", lambda: datetime.now(UTC))
    u.after_round()
    settle(u)
    assert [s for s, _, _ in states(journal)] == ["refused"]
    assert "not made with the utility's release key" in states(journal)[0][2]
    assert not any((data / "releases").glob("*"))
    journal.close()


def test_the_update_key_is_read_from_the_secrets_file(tmp_path: Path) -> None:
    import tomlkit

    from tests.conftest import ROOT

    public = signing.make_key(tmp_path / "k")
    secrets = tmp_path / "secrets.toml"
    doc = tomlkit.parse((ROOT / "config" / "demo.toml").read_text("utf-8"))
    doc.setdefault("secrets", tomlkit.table())["file"] = str(secrets)  # type: ignore[index]
    site_file = tmp_path / "site.toml"
    site_file.write_text(tomlkit.dumps(doc), "utf-8")
    site = load_site(site_file)
    assert load_update_key(site) is None  # no file: no updates
    secrets.write_text(f'[updates]\npublic_key = "{public}"\n', "utf-8")
    assert load_update_key(site) == public
    secrets.write_text('[updates]\npublic_key = "c2hvcnQ="\n', "utf-8")
    with pytest.raises(ConfigError, match="updates.public_key: not 32 bytes"):
        load_update_key(site)
