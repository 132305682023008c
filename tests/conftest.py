"""Shared fixtures: sites from the shipped files, a manual clock, journals in tmp dirs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from kiosk.domain.money import Money
from kiosk.domain.site import Site, parse_site
from sync.store.tables import entries, open_db
from sync.wire.client import SyncClient
from tests.pgcluster import NoPostgres, PgCluster

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"

#: A Saturday, 10:00 in Jena (09:00 UTC): the Saalstraße centre is open, Rudolstädter Str. not.
SATURDAY_MORNING = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def site_data(name: str = "demo") -> dict[str, Any]:
    return tomllib.loads((CONFIG / f"{name}.toml").read_text("utf-8"))


def edited_data(name: str = "demo", **sections: dict[str, Any]) -> dict[str, Any]:
    """A shipped site's data with some sections' fields overridden (None removes a field)."""
    data = site_data(name)
    for section, fields in sections.items():
        target = data
        for part in section.split("."):
            target = target.setdefault(part, {})
        for k, v in fields.items():
            if v is None:
                target.pop(k, None)
            else:
                target[k] = v
    return data


def make_site(name: str = "demo", **sections: dict[str, Any]) -> Site:
    """A shipped site, validated, with some fields overridden."""
    return parse_site(edited_data(name, **sections), f"{name}.toml")


def run_kiosk(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The `kiosk` command in its own process, with only `data_dir` as its state directory."""
    env = {k: v for k, v in os.environ.items() if k != "KIOSK_DATA_DIR"}
    if data_dir is not None:
        env["KIOSK_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "kiosk.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


@pytest.fixture
def site() -> Site:
    return make_site("demo")


@pytest.fixture
def eur() -> Callable[[int], Money]:
    return lambda minor: Money(minor, "EUR")


# Two test workers (pytest-xdist, `-n 2`) share the machine's one pcscd: each has a vpcd
# reader of its own (KIOSK_VPCD_SLOT, set in pytest_configure), so keys never cross. What
# touches pcscd itself (starting it, restarting it) is done under a lock in a directory the
# controller makes for the run; the controller stops the pcscd the run started, at its end.


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:  # the controller, or a run without workers: the run's shared directory
        if "KIOSK_TEST_SHARED" not in os.environ:
            os.environ["KIOSK_TEST_SHARED"] = tempfile.mkdtemp(prefix="kiosk-tests-")
        return
    if "drivers.chipkey.vpcd" in sys.modules:  # its reader is chosen once, on import
        raise pytest.UsageError("drivers.chipkey.vpcd was imported before the worker's slot")
    # a reader is claimed by a lock held for the worker's life, not by its name: a worker
    # that crashed is replaced by gw2, gw3 ..., and its reader is free once it is gone
    for slot in (0, 1):
        claim = open(Path(os.environ["KIOSK_TEST_SHARED"]) / f"slot-{slot}", "a")  # noqa: SIM115
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            claim.close()
            continue
        _CLAIMED.append(claim)
        os.environ["KIOSK_VPCD_SLOT"] = str(slot)
        return
    raise pytest.UsageError("vpcd has two readers: run at most two workers (-n 2)")


#: this worker's claim on its vpcd reader (open for the worker's life)
_CLAIMED: list[Any] = []


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") is not None:
        return
    shared = Path(os.environ.pop("KIOSK_TEST_SHARED", ""))
    pids = shared / "pcscd.pids"
    for pid in map(int, pids.read_text().split() if pids.is_file() else ()):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "pcscd":
                os.kill(pid, signal.SIGTERM)
        except (OSError, ProcessLookupError):
            pass  # gone already
    if shared.name.startswith("kiosk-tests-"):
        shutil.rmtree(shared, ignore_errors=True)


@contextlib.contextmanager
def shared_lock(name: str, exclusive: bool = True) -> Iterator[None]:
    """A lock all workers of this run share (a file in the run's directory, flock)."""
    with open(Path(os.environ["KIOSK_TEST_SHARED"]) / name, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


@pytest.fixture(autouse=True)
def _pcscd_turn(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked `pcscd_alone` (it restarts pcscd) runs while no other test does; the
    others share. The turnstile keeps a waiting `pcscd_alone` test from being starved."""
    alone = request.node.get_closest_marker("pcscd_alone") is not None
    with contextlib.ExitStack() as held:
        with shared_lock("turnstile"):  # (passed once the pcscd lock is taken)
            held.enter_context(shared_lock("pcscd", exclusive=alone))
        yield


def _readers() -> list[str]:
    from drivers.chipkey.reader import list_readers
    from drivers.errors import TransportError

    try:
        return list_readers()
    except TransportError:
        return []


def _vpcd_up() -> bool:
    from drivers.chipkey.vpcd import VPCD_READER

    return VPCD_READER in _readers()


def _start_pcscd() -> None:
    """Start pcscd unless one with the vpcd readers runs (another worker may just have
    started it); what it says goes to a file (a pipe nobody reads would stop it once full)."""
    with shared_lock("start"):
        if _vpcd_up():
            return
        exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
        if not os.path.exists(exe):
            pytest.fail("pcscd is not installed: run the README's test command (./dev.sh test)")
        shared = Path(os.environ["KIOSK_TEST_SHARED"])
        log = shared / "pcscd.log"

        def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as said:
                proc = subprocess.Popen([exe, "-f"], stdout=subprocess.DEVNULL, stderr=said)
            with (shared / "pcscd.pids").open("a") as pids:
                pids.write(f"{proc.pid}\n")
            return proc

        proc = start()
        deadline = time.monotonic() + 10
        while not _vpcd_up():
            if proc.poll() is not None:  # another pcscd still stopping holds its socket: again
                if time.monotonic() > deadline:
                    pytest.fail(f"pcscd exited: {log.read_text(errors='replace')[-2000:]}")
                threading.Event().wait(0.2)
                proc = start()
                continue
            if time.monotonic() > deadline:
                proc.terminate()
                pytest.fail("pcscd started but no vpcd reader appeared (vsmartcard-vpcd missing?)")
            threading.Event().wait(0.05)  # pcscd loads its reader drivers: look again shortly


def restart_pcscd() -> None:
    """Stop the machine's pcscd (SIGTERM, as `systemctl restart pcscd` does) and start it
    again, as an update or a crash does at a customer centre. Only in a test marked
    `pcscd_alone`: every other test's keys go out with it."""
    pids = subprocess.run(["pgrep", "-x", "pcscd"], capture_output=True, text=True).stdout
    try:
        for pid in map(int, pids.split()):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while running(pid):
                assert time.monotonic() < deadline, f"pcscd {pid} did not stop"
                threading.Event().wait(0.05)  # nothing to wait on but its pid
    finally:
        _start_pcscd()  # whatever happened: the tests after this one need it


def children(pid: int) -> list[int]:
    """The processes `pid` started that run now (from every one of its threads)."""
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()]  # fmt: skip


def running(pid: int) -> bool:
    """Whether process `pid` still runs: ended is gone, or a zombie (another worker's child
    is reaped only when that worker ends; ours is reaped here)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="session")
def pcscd() -> Iterator[str]:
    """The machine's one pcscd with vsmartcard's vpcd readers (started here if none runs):
    the name of this worker's reader."""
    from drivers.chipkey.vpcd import VPCD_READER

    if not _vpcd_up():
        _start_pcscd()
    yield VPCD_READER


def poll_until(pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for a condition that other processes bring about (nothing wakes us: look again
    every 50 ms), with a deadline."""
    wait_until(pred, what, threading.Event(), timeout)


def wait_until(
    pred: Callable[[], bool],
    what: str,
    wake: threading.Event,
    timeout: float = 5.0,
    detail: Callable[[], str] = lambda: "",
) -> None:
    """Wait for a condition with a deadline, waking when `wake` is set (a published change)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}{detail()}"
        wake.wait(0.05)
        wake.clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for the whole run (the head office's real-fleet database)."""
    try:
        cluster = PgCluster()
    except NoPostgres as err:
        pytest.fail(str(err))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def office_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh head-office database URL: an SQLite file, and a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'headoffice.sqlite'}"
    cluster: PgCluster = request.getfixturevalue("postgres")
    return cluster.new_database()


@dataclass
class HeadOffice:
    url: str
    db: str
    tokens: dict[str, str]

    def admin(self, *args: str) -> str:
        """One admin command, run in this process (the same code as `python -m sync.admin`,
        whose command line tests run as a process of its own: without the start-up each
        time)."""
        import contextlib
        import io

        from sync.admin import main as admin_main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = admin_main(["--db", self.db, *args])
        assert code == 0, err.getvalue()
        return out.getvalue().strip()

    def stored(self, kiosk: str = "DEMO-01") -> list[tuple[int, str]]:
        """(seq, hash) of what head office holds for a kiosk, by sequence number."""
        engine = open_db(self.db)
        try:
            with engine.connect() as conn:
                q = (
                    select(entries.c.seq, entries.c.hash)
                    .where(entries.c.kiosk_id == kiosk)
                    .order_by(entries.c.seq)
                )
                return [(r.seq, r.hash) for r in conn.execute(q)]
        finally:
            engine.dispose()

    def client(self, kiosk: str = "DEMO-01", token: str | None = None) -> SyncClient:
        return SyncClient(self.url, token or self.tokens[kiosk], kiosk, timeout=(1.0, 5.0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_head_office(db: str, *options: str, quiet: bool = False,
                      timeout: float = 30.0) -> tuple[str, subprocess.Popen[bytes]]:  # fmt: skip
    """`sync.admin serve` on `db` as a process of its own on a free port, up and answering:
    its URL and the process (the caller ends it). `quiet`: its output is dropped."""
    port = free_port()
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync.admin", "--db", db, "serve", "--port", str(port), *options],
        cwd=ROOT, env=dict(os.environ), stdout=out,
        stderr=subprocess.DEVNULL if quiet else subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url + "/v1/health", timeout=2).ok:
                return url, proc
        except (requests.ConnectionError, requests.Timeout):  # starting, or a loaded machine
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"head office exited: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("head office did not come up")
        threading.Event().wait(0.05)  # the server process is starting: ask again shortly


@pytest.fixture
def office(office_db: str) -> Iterator[HeadOffice]:
    db = office_db
    ho = HeadOffice("", db, {})
    for kiosk in ("DEMO-01", "OTHER-01"):
        ho.tokens[kiosk] = ho.admin("kiosk", "add", kiosk)
    ho.url, proc = serve_head_office(db)
    yield ho
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def ui_window() -> Iterator[Any]:
    """Kivy's one window, on a virtual X screen of the demo site's size, for the whole run."""
    from kiosk.domain.site import load_site
    from kiosk.ui.setup import configure
    from kiosk.ui.xvfb import Xvfb

    site = load_site()
    try:
        xvfb = Xvfb(site.ui.width, site.ui.height).start()
    except RuntimeError as err:
        pytest.fail(f"{err}: run the README's test command (./dev.sh test)")
    configure(site.ui, windowed=True)
    os.environ["KIVY_NO_CONSOLELOG"] = "1"
    from kivy.config import Config

    # No 60 fps cap in tests: a frame's time is then its own work and drawing, not the
    # limiter's sleep, and flows run as fast as the engine answers.
    Config.set("graphics", "maxfps", "0")
    try:
        from kivy.base import EventLoop
        from kivy.core.window import Window
    except SystemExit as exit_:  # Kivy exits the process when it finds no usable window
        pytest.fail(f"Kivy could not open a window on {xvfb.display}: exit {exit_.code}")
    EventLoop.ensure_window()
    EventLoop.start()
    yield Window
    EventLoop.close()
    xvfb.stop()
