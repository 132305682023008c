"""The rollout rehearsal (#38): head office and three automats, each run by `kiosk launch` as
the unit runs it, on simulated devices in their own processes (no chip-key reader: the demo's
in-process key slot), all on release A (this checkout). Release B is this checkout again under
another version, a real Debian package signed with the test's release key: rolled out to one
canary, then the rest; a customer mid top-up when B arrives finishes on A first; release C,
whose kiosk package fails at import, is rolled back to B by the automat itself; a release
altered at head office is refused with an alarm. Every wait has a deadline."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from sqlalchemy import select

from kiosk.sim.rig import seed_head_office
from kiosk.sim.simulate import SimulatorControl
from kiosk.ui.xvfb import Xvfb
from sync.admin import main as admin_main
from sync.store.tables import alarms, entries, kiosk_releases, kiosks, open_db
from sync.wire import signing
from sync.wire.release import version
from tests.conftest import ROOT, poll_until, serve_head_office
from tests.releasekit import build_deb, sign

pytestmark = pytest.mark.slow

KIOSKS = ("K-01", "K-02", "K-03")
A = version()
B, C, D = "9.1.0", "9.2.0", "9.3.0"


def admin(db: str, *args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = admin_main(["--db", db, *args])
    assert code == 0, err.getvalue()
    return out.getvalue()


def release_tree(tmp: Path, version_: str, *, broken: bool = False) -> Path:
    """An automat's package tree: /opt/prepaid-kiosk/.venv, a virtual environment on this
    Python holding this checkout's packages under `version_` (its other dependencies are read
    from the checkout's environment through a .pth line, to keep the package small)."""
    root = tmp / f"tree-{version_}"
    venv = root / "opt" / "prepaid-kiosk" / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    lib = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = lib / "site-packages"
    for name in ("kiosk", "sync", "drivers"):
        shutil.copytree(ROOT / name, packages / name,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    dist = packages / f"prepaid_kiosk-{version_}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: prepaid-kiosk\n"
                                   f"Version: {version_}\n", "utf-8")  # fmt: skip
    (packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", "utf-8")
    if broken:  # the release fails at its start
        (packages / "kiosk" / "__init__.py").write_text(
            f'raise RuntimeError("release {version_} is broken")\n', "utf-8")
    return root


def site_file(tmp: Path, kiosk: str, url: str, public: str) -> Path:
    doc = tomlkit.parse((ROOT / "config" / "demo.toml").read_text("utf-8"))
    doc["site"]["kiosk_id"] = kiosk  # type: ignore[index]
    secrets = tmp / f"{kiosk}.secrets.toml"
    secrets.write_text(f'[updates]\npublic_key = "{public}"\n', "utf-8")
    for name, fields in {"head_office": {"url": url, "sync_interval": 1, "trial_seconds": 120},
                         "timeouts": {"payment": 20, "message": 3},
                         "secrets": {"file": str(secrets)}}.items():  # fmt: skip
        table = doc.setdefault(name, tomlkit.table())
        for k, v in fields.items():
            table[k] = v  # type: ignore[index]
    path = tmp / f"{kiosk}.toml"
    path.write_text(tomlkit.dumps(doc), "utf-8")
    return path


class Office:
    def __init__(self, db: str) -> None:
        self.db = db
        self.engine = open_db(db)

    def one(self, query: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(query).first()

    def runs(self, kiosk: str) -> str | None:
        row = self.one(select(kiosks.c.version).where(kiosks.c.kiosk_id == kiosk))
        return None if row is None else row.version

    def said(self, kiosk: str) -> tuple[str, str] | None:
        row = self.one(select(kiosk_releases.c.version, kiosk_releases.c.state)
                       .where(kiosk_releases.c.kiosk_id == kiosk))  # fmt: skip
        return None if row is None else (row.version, row.state)

    def release_entries(self, kiosk: str) -> list[tuple[int, str, str]]:
        import json

        with self.engine.connect() as conn:
            rows = conn.execute(select(entries.c.seq, entries.c.data).where(
                entries.c.kiosk_id == kiosk, entries.c.kind == "release")
                .order_by(entries.c.seq)).all()  # fmt: skip
        out = []
        for r in rows:
            data = json.loads(r.data)
            out.append((r.seq, data["version"], data["state"]))
        return out

    def seq_of(self, kiosk: str, kind: str) -> list[int]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(entries.c.seq).where(
                entries.c.kiosk_id == kiosk, entries.c.kind == kind)).scalars())  # fmt: skip


@contextlib.contextmanager
def launched(tmp: Path, kiosk: str, site: Path, token: str, display: str
             ) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    data = tmp / f"data-{kiosk}"
    env = {**os.environ, "KIOSK_HEAD_OFFICE_TOKEN": token, "DISPLAY": display,
           "KIVY_NO_ARGS": "1", "KIVY_HOME": str(tmp / f"kivy-{kiosk}"), "KIOSK_DATA_DIR": ""}
    with (tmp / f"{kiosk}.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "--data-dir", str(data),
                                 "launch", "--site", str(site)], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def control_of(tmp: Path, kiosk: str) -> SimulatorControl:
    said = re.findall(r"Simulator control: (\S+)", (tmp / f"{kiosk}.log").read_text("utf-8"))
    return SimulatorControl(Path(said[-1]))


def test_a_release_is_rolled_out_switched_when_idle_and_rolled_back(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    key = tmp_path / "release.key"
    public = signing.make_key(key)
    tokens = {k: admin(db, "kiosk", "add", k).strip() for k in KIOSKS}
    admin(db, "release", "trust", public)
    debs = {}
    for v in (B, C, D):
        deb = build_deb(tmp_path, v, release_tree(tmp_path, v, broken=v == C))
        admin(db, "release", "add", str(deb), "--signature", str(sign(deb, v, key)))
        debs[v] = deb
    stored_d = tmp_path / "releases" / debs[D].name  # altered on head office's disk
    stored_d.write_bytes(stored_d.read_bytes()[:-100] + b"\0" * 100)
    ho = Office(db)
    url, server = serve_head_office(db, quiet=True)
    from kiosk.domain.site import load_site

    sites = {k: site_file(tmp_path, k, url, public) for k in KIOSKS}
    seed_head_office(db, load_site(sites["K-01"]))  # the demo keys, active or blocked
    log = lambda k: (tmp_path / f"{k}.log").read_text("utf-8", "replace")[-4000:]  # noqa: E731
    try:
        with Xvfb(1280, 800) as x, contextlib.ExitStack() as stack:
            procs = {k: stack.enter_context(launched(tmp_path, k, sites[k], tokens[k], x.display))
                     for k in KIOSKS}  # fmt: skip
            for k in KIOSKS:
                poll_until(lambda k=k: ho.runs(k) == A or procs[k].poll() is not None,
                           f"{k} up on {A}", 120)  # fmt: skip
                assert procs[k].poll() is None, log(k)

            # B to one canary: it switches at once (nobody there), comes up and is healthy
            admin(db, "rollout", B, "--canary", "K-01", "--then-after", "1h")
            poll_until(lambda: ho.said("K-01") == (B, "healthy"), "K-01 healthy on B", 180)
            assert ho.runs("K-01") == B and ho.runs("K-02") == ho.runs("K-03") == A
            assert [s for _, v, s in ho.release_entries("K-01")] == [
                "downloading", "verified", "installed", "healthy"]
            assert ho.said("K-02") is None and ho.said("K-03") is None  # not before the hour

            # a customer at K-02 is paying when B reaches it
            control = control_of(tmp_path, "K-02")
            control.send("insert K-1001")
            poll_until(lambda: control.status()["coin_enabled"], "K-02 taking cash", 30)
            assert "taken" in control.send("coin 2.00")
            poll_until(lambda: "in escrow" in control.send("note 5.00"), "the note", 20)
            admin(db, "rollout", B, "--canary", "K-01", "--then-after", "0s")  # the rest now
            poll_until(lambda: ho.said("K-02") == (B, "verified"), "K-02 has B ready", 60)
            assert ho.runs("K-02") == A and not ho.seq_of("K-02", "key_written")  # still paying
            poll_until(lambda: ho.seq_of("K-02", "key_written") != [], "the top-up written", 60)
            control.send("remove")
            poll_until(lambda: ho.said("K-02") == (B, "healthy"), "K-02 healthy on B", 180)
            [written] = ho.seq_of("K-02", "key_written")
            installed = [s for s, v, st in ho.release_entries("K-02") if st == "installed"]
            closed = ho.seq_of("K-02", "tx_closed")
            assert closed and max(closed) < installed[0] and written < installed[0]
            poll_until(lambda: ho.said("K-03") == (B, "healthy"), "K-03 healthy on B", 180)
            assert {k: ho.runs(k) for k in KIOSKS} == dict.fromkeys(KIOSKS, B)

            # C fails at its start on the canary: rolled back to B by the automat itself
            admin(db, "rollout", C, "--canary", "K-03", "--then-after", "1h")
            poll_until(lambda: ho.said("K-03") == (C, "rolled_back"), "K-03 back on B", 180)
            status = admin(db, "rollout", "status")
            assert "rolled back" in status and "HALTED: K-03" in status, status
            assert ho.runs("K-03") == B and procs["K-03"].poll() is None
            assert "release 9.2.0 is broken" in log("K-03") or "exited with status" in log("K-03")
            assert ho.said("K-01") == (B, "healthy")  # halted: the rest never got C

            # a release altered at head office is refused by the automat, with an alarm
            admin(db, "rollout", D, "--canary", "K-01", "--then-after", "1h")
            poll_until(lambda: ho.said("K-01") == (D, "refused"), "K-01 refusing D", 60)
            assert ho.runs("K-01") == B
            with ho.engine.connect() as conn:
                said = conn.execute(select(alarms.c.kiosk_id, alarms.c.kind, alarms.c.text)
                                    .where(alarms.c.kind == "release")).all()  # fmt: skip
            assert {(k, t.split(":")[0]) for k, _, t in said} == {
                ("K-03", f"release {C} rolled back"), ("K-01", f"release {D} refused")}

            # and every automat keeps syncing on B: each is heard from again
            def contact(k: str) -> str:
                return str(ho.one(select(kiosks.c.last_contact)
                                  .where(kiosks.c.kiosk_id == k)).last_contact)  # fmt: skip

            before = {k: contact(k) for k in KIOSKS}
            for k in KIOSKS:
                poll_until(lambda k=k: contact(k) > before[k], f"{k} syncing", 30)
                assert procs[k].poll() is None and ho.runs(k) == B, log(k)
            report = admin(db, "report", "--tz", "Europe/Berlin")
            assert re.search(r"K-02 .* coin +2.00 EUR", report), report
            assert re.search(r"K-02 .* note +5.00 EUR", report), report
        for k in KIOSKS:
            assert procs[k].returncode == 0, log(k)
    finally:
        server.terminate()
        server.wait(10)
        ho.engine.dispose()
