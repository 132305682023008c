"""Head office stores and rolls out releases (#38): the trusted release key, release files
verified before they are stored, rollouts to canaries first and then the rest unless a canary
rolled the release back or refused it, the kiosks' update states from their journal, and the
file served with HTTP Range."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from sync.admin import main as admin_main
from sync.store.tables import alarms, audit, kiosk_releases, open_db, releases
from sync.wire import signing
from sync.wire.client import Permanent, SyncClient
from sync.wire.protocol import GENESIS, entry_hash
from tests.conftest import serve_head_office


def admin(db: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = admin_main(["--db", db, *args])
    return code, out.getvalue(), err.getvalue()


def ok(db: str, *args: str) -> str:
    code, out, err = admin(db, *args)
    assert code == 0, err
    return out


def count(db: str, table: Any) -> int:
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def release_file(tmp: Path, version: str, key: Path, body: bytes | None = None) -> Path:
    """A release file of `version` and its signature (FILE.sig) made with `key`."""
    path = tmp / f"prepaid-kiosk_{version}_amd64.deb"
    path.write_bytes(body if body is not None else version.encode() * 40_000)
    sig = signing.sign(path, version, key)
    Path(str(path) + ".sig").write_text(sig.text(), "utf-8")
    return path


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str], Path]]:
    """(URL, database, kiosk tokens, private key) of a head office serving from a process of
    its own, its release key trusted and release 9.0.0 stored."""
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    key = tmp_path / "release.key"
    public = signing.make_key(key)
    tokens = {k: ok(db, "kiosk", "add", k).strip() for k in ("K-01", "K-02", "K-03")}
    ok(db, "release", "trust", public)
    f = release_file(tmp_path, "9.0.0", key)
    assert "release 9.0.0" in ok(db, "release", "add", str(f), "--signature", f"{f}.sig")
    url, proc = serve_head_office(db, quiet=True)
    yield url, db, tokens, key
    proc.terminate()
    proc.wait(10)


def test_a_release_is_stored_only_when_it_verifies_with_the_trusted_key(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    key, other = tmp_path / "release.key", tmp_path / "other.key"
    public = signing.make_key(key)
    signing.make_key(other)
    f = release_file(tmp_path, "2.0.0", key)
    # no key trusted yet: refused
    code, _, err = admin(db, "release", "add", str(f), "--signature", f"{f}.sig")
    assert code == 2 and "no release public key is trusted" in err
    code, _, err = admin(db, "release", "trust", "not base64!")
    assert code == 2 and "32 bytes in base64" in err and count(db, audit) == 0
    ok(db, "release", "trust", public)
    # a file altered after signing: refused, nothing stored, audited, an alarm
    bad = release_file(tmp_path, "2.0.1", key)
    bad.write_bytes(bad.read_bytes()[:-1] + b"!")
    code, _, err = admin(db, "release", "add", str(bad), "--signature", f"{bad}.sig")
    assert code == 2 and "not the one signed" in err and "nothing stored" in err
    # signed with another key: refused too
    foreign = release_file(tmp_path, "2.0.2", other)
    code, _, err = admin(db, "release", "add", str(foreign), "--signature", f"{foreign}.sig")
    assert code == 2 and "not made with the utility's release key" in err
    # a good file under another name than the one signed: refused
    renamed = tmp_path / "prepaid-kiosk_2.0.0_arm64.deb"
    renamed.write_bytes(f.read_bytes())
    code, _, err = admin(db, "release", "add", str(renamed), "--signature", f"{f}.sig")
    assert code == 2 and f"the signature is of {f.name}, not {renamed.name}" in err
    folder = tmp_path / "releases"
    assert count(db, releases) == 0 and not any(folder.glob("*.deb"))
    engine = open_db(db)
    with engine.connect() as conn:
        said = conn.execute(select(alarms.c.kind, alarms.c.text)).all()
        done = conn.execute(select(audit.c.action, audit.c.via)).all()
    engine.dispose()
    assert [k for k, _ in said] == ["release"] * 3 and "2.0.1" in said[0][1]
    assert done == [("release_trust", "cli")] + [("release_refused", "cli")] * 3
    # the good one: stored beside the database with its facts
    out = ok(db, "release", "add", str(f), "--signature", f"{f}.sig")
    assert str(folder) in out
    assert (folder / f.name).read_bytes() == f.read_bytes()
    engine = open_db(db)
    with engine.connect() as conn:
        row = conn.execute(select(releases)).one()
    engine.dispose()
    size, sha = signing.digest(f)
    assert (row.version, row.file, row.size, row.sha256) == ("2.0.0", f.name, size, sha)
    assert row.signature == Path(f"{f}.sig").read_text("utf-8")
    # the same version again: refused
    code, _, err = admin(db, "release", "add", str(f), "--signature", f"{f}.sig")
    assert code == 2 and "stored already" in err


def test_a_rollout_of_what_is_not_there_is_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    ok(db, "kiosk", "add", "K-01")
    before = count(db, audit)
    for args, said in ((["1.0.0", "--canary", "K-01"], "no release 1.0.0 is stored"),
                       (["1.0.0", "--canary", "K-01", "--then-after", "soon"], "not a delay")):
        code, _, err = admin(db, "rollout", *args)
        assert code == 2 and said in err
    assert count(db, audit) == before  # a refusal before anything is looked at changes nothing
    assert ok(db, "rollout", "status") == "no rollout\n"


def entry(seq: int, prev: str, state: str, version: str, detail: str = "") -> dict[str, Any]:
    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    data = json.dumps({"state": state, "version": version, "detail": detail or None})
    content = (seq, ts, "release", None, None, None, None, data)
    return {"seq": seq, "ts": ts, "kind": "release", "txid": None, "key": None, "amount": None,
            "currency": None, "data": data, "prev_hash": prev,
            "hash": entry_hash(prev, *content)}  # fmt: skip


def test_canaries_first_then_the_rest_unless_a_canary_rolled_it_back(office: Any) -> None:
    url, db, tokens, _ = office
    client = {k: SyncClient(url, t, k, timeout=(2.0, 10.0)) for k, t in tokens.items()}
    assert all(c.release() is None for c in client.values())  # no rollout: 204
    code, _, err = admin(db, "rollout", "9.0.0", "--canary", "K-01,K-04")
    assert code == 2 and "no kiosk K-04" in err
    ok(db, "kiosk", "add", "K-09")
    ok(db, "kiosk", "revoke", "K-09")
    code, _, err = admin(db, "rollout", "9.0.0", "--canary", "K-09")
    assert code == 2 and "no kiosk K-09 is registered (and not revoked)" in err
    assert ok(db, "rollout", "status") == "no rollout\n"
    ok(db, "rollout", "9.0.0", "--canary", "K-01", "--then-after", "1h")
    target = client["K-01"].release()
    assert target is not None and target["version"] == "9.0.0"
    sig = signing.parse(target["signature"])
    assert (sig.size, sig.sha256) == (target["size"], target["sha256"])
    assert client["K-02"].release() is None  # not before the hour
    status = ok(db, "rollout", "status")
    assert "K-01           " in status and "K-02" in status
    # the canary reports downloading, then rolled back: the alarm, and the rollout halted
    first = entry(1, GENESIS, "downloading", "9.0.0")
    second = entry(2, first["hash"], "rolled_back", "9.0.0", "no sync round within 300 s")
    assert client["K-01"].upload([first, second]) == 2
    status = ok(db, "rollout", "status")
    assert "HALTED: K-01" in status and "rolled back" in status and "300 s" in status
    engine = open_db(db)
    with engine.connect() as conn:
        said = conn.execute(select(alarms.c.kiosk_id, alarms.c.kind, alarms.c.text)).all()
        newest = conn.execute(select(kiosk_releases)).one()
    engine.dispose()
    assert said == [("K-01", "release", "release 9.0.0 rolled back: no sync round within 300 s")]
    assert (newest.kiosk_id, newest.state, newest.seq) == ("K-01", "rolled_back", 2)
    # a new rollout with no delay: the rest get it now, the halt was of the old one
    ok(db, "rollout", "9.0.0", "--canary", "K-02", "--then-after", "0s")
    assert client["K-03"].release()["version"] == "9.0.0"  # type: ignore[index]
    # a release entry that is not its payload is refused as any entry no kiosk writes
    with pytest.raises(Permanent, match="422"):
        client["K-02"].upload([{**entry(1, GENESIS, "downloading", "9.0.0"), "data": "[]"}])


def test_the_file_is_served_whole_or_from_a_range_to_kiosks_only(office: Any) -> None:
    url, db, tokens, _ = office
    whole = (Path(db.removeprefix("sqlite:///")).parent / "releases"
             / "prepaid-kiosk_9.0.0_amd64.deb").read_bytes()  # fmt: skip
    path = f"{url}/v1/releases/9.0.0/file"
    auth = {"Authorization": f"Bearer {tokens['K-02']}"}
    assert requests.get(path, timeout=10).status_code == 401
    got = requests.get(path, headers=auth, timeout=10)
    assert got.status_code == 200 and got.content == whole
    part = requests.get(path, headers={**auth, "Range": "bytes=1000-"}, timeout=10)
    assert part.status_code == 206 and part.content == whole[1000:]
    assert part.headers["Content-Range"] == f"bytes 1000-{len(whole) - 1}/{len(whole)}"
    bit = requests.get(path, headers={**auth, "Range": "bytes=5-9"}, timeout=10)
    assert bit.status_code == 206 and bit.content == whole[5:10]
    beyond = requests.get(path, headers={**auth, "Range": f"bytes={len(whole)}-"}, timeout=10)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(whole)}"
    other = requests.get(f"{url}/v1/releases/8.0.0/file", headers=auth, timeout=10)
    assert other.status_code == 404
    # the client resumes: the rest appended, never beyond the limit
    client = SyncClient(url, tokens["K-02"], "K-02")
    out = io.BytesIO(whole[:70_000])
    out.seek(0, io.SEEK_END)
    got = client.download("/v1/releases/9.0.0/file", out, 70_000, len(whole))
    assert got == len(whole) - 70_000
    assert out.getvalue() == whole
    with pytest.raises(Permanent, match="larger than"):
        client.download("/v1/releases/9.0.0/file", io.BytesIO(), 0, len(whole) - 1)


def test_the_release_folder_is_given_or_beside_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync.book.releases import DEFAULT_FOLDER, RELEASES_ENV, folder

    monkeypatch.delenv(RELEASES_ENV, raising=False)
    assert folder(f"sqlite:///{tmp_path}/ho.sqlite") == tmp_path / "releases"
    assert folder("postgresql://ho@db/ho") == DEFAULT_FOLDER
    assert folder("postgresql://ho@db/ho", str(tmp_path / "r")) == tmp_path / "r"
    monkeypatch.setenv(RELEASES_ENV, str(tmp_path / "env"))
    assert folder(f"sqlite:///{tmp_path}/ho.sqlite") == tmp_path / "env"
    assert folder("sqlite://", str(tmp_path / "given")) == tmp_path / "given"


def test_the_runbooks_release_commands_run_as_written(tmp_path: Path) -> None:
    """sync/README.md, "Releases": the commands as the operator types them."""
    import os
    import subprocess
    import sys

    from tests.test_runbook import block

    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    for k in ("JENA-01", "POESSNECK-01", "SAAL-01"):
        ok(db, "kiosk", "add", k)
    key = tmp_path / "release.key"
    public = signing.make_key(key)
    release_file(tmp_path, "1.3.0", key)
    admin_cmd = f"{sys.executable} -m sync.admin --db {db}"
    script = block("releases").replace("ADMIN", admin_cmd).replace("BASE64", public)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "release 1.3.0: prepaid-kiosk_1.3.0_amd64.deb" in done.stdout
    lines = done.stdout.splitlines()
    row = {line.split()[0]: line.split() for line in lines if line.startswith(("JENA", "SAAL"))}
    assert row["JENA-01"][1] == "1.3.0" and row["SAAL-01"][1] == "waiting"
    assert (tmp_path / "releases" / "prepaid-kiosk_1.3.0_amd64.deb").exists()
