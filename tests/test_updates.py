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
from kiosk.domain.errors import ConfigError, JournalError
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
    assert states(journal) == [
        ("downloading", "2.0.0", "from byte 100000"),
        ("verified", "2.0.0", f"{deb.stat().st_size} bytes, unpacked"),
    ]
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
    assert journal.get_meta("releases_given_up") == '["2.0.0"]'  # also once archived
    # delivered: head office shows it refused and raises the alarm
    client = SyncClient(fleet["url"], fleet["token"], "K-01")
    client.upload(journal.raw_entries())
    status = admin(fleet["db"], "rollout", "status")
    assert "refused" in status and "HALTED: K-01" in status
    engine = open_db(fleet["db"])
    with engine.connect() as conn:
        said_ho = conn.execute(select(alarms.c.kind, alarms.c.text)).all()
    engine.dispose()
    assert said_ho == [
        (
            "release",
            "release 2.0.0 refused: prepaid-kiosk_2.0.0_amd64.deb.part: its "
            "SHA-256 is not the one signed (altered?)",
        )
    ]
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


NEWER_MIGRATION = '''"""A newer release's additive migration: a column that may be NULL and a table.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journal") as journal:
        journal.add_column(sa.Column("newer_note", sa.Text))
    op.create_table("newer_things", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("newer_things")
    with op.batch_alter_table("journal") as journal:
        journal.drop_column("newer_note")
'''


def newer_history(tmp_path: Path) -> Any:
    """The migrations of a release with one more (additive) migration than this one."""
    import shutil

    from kiosk.ledger.journal import HISTORY
    from sync.store.schema import History

    folder = tmp_path / "newer-migrations"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(HISTORY.folder, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "0008_newer.py").write_text(NEWER_MIGRATION, "utf-8")
    return History(folder, "journal", "0001")


def test_a_journal_a_newer_release_expanded_is_opened_by_the_release_before(
    tmp_path: Path,
) -> None:
    """Expand/contract: the release rolled back to opens the journal its successor upgraded
    with an additive migration, writes it, and the chain verifies; a successor that contracted
    (readable only from its own schema on) gets a clear refusal and the journal unchanged."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import HISTORY
    from sync.store.schema import state

    path = tmp_path / "journal-K-01.sqlite"
    now = datetime.now(UTC)
    old = Journal(path, "K-01")
    old.append([Record(Kind.AUDIT, data={"action": "before", "who": "t"})], now)
    old.close()
    newer = Journal(path, "K-01", history=newer_history(tmp_path), readable_from=HISTORY.head)
    newer.append([Record(Kind.RELEASE, data={"state": "installed", "version": "2.0.0"})], now)
    assert state(newer.engine, HISTORY) == "0008"
    newer.close()
    back = Journal(path, "K-01")  # this release, rolled back to
    back.append([Record(Kind.RELEASE, data={"state": "rolled_back", "version": "2.0.0",
                                            "detail": "trial"})], now)  # fmt: skip
    assert back.verify() == 3
    assert state(back.engine, HISTORY) == "0008"  # left as it is
    assert [e.data["state"] for e in back.entries_of_kind(Kind.RELEASE)] == [
        "installed",
        "rolled_back",
    ]
    back.close()
    # a contracting release made it readable only from its own schema on
    contracted = Journal(path, "K-01", history=newer_history(tmp_path), readable_from="0008")
    contracted.close()
    before = path.read_bytes()
    with pytest.raises(JournalError, match="newer release, readable from 0008 on; this release "
                       f"is at {HISTORY.head}"):  # fmt: skip
        Journal(path, "K-01")
    assert path.read_bytes() == before


def test_the_switch_waits_for_the_customer_and_is_taken_only_when_nobody_is_there(
    tmp_path: Path,
) -> None:
    """Money first: a release waiting to take over is asked only between two events at a
    resting screen; a customer mid top-up finishes on this release, then the engine hands
    over and ends."""
    import threading

    from kiosk.app.ports import Devices
    from kiosk.app.runner import Kiosk
    from kiosk.domain.clock import utc_now
    from kiosk.domain.engine import State
    from kiosk.domain.events import AmountChosen, KeyStatus, Method, MethodChosen
    from kiosk.domain.money import Money
    from kiosk.sim.fakes import FakeCoinAcceptor, FakeKey, FakeKeyReader, FakeNoteValidator
    from tests.conftest import make_site, wait_until

    site = make_site("demo")
    journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
    journal.set_key("K1", KeyStatus.ACTIVE, "4711")
    turns = []

    class Coins(FakeCoinAcceptor):
        def alive(self) -> None:  # the engine says so every turn
            turns.append(1)

    reader, notes = FakeKeyReader(), FakeNoteValidator(site.notes)
    kiosk = Kiosk(site, journal, Devices(reader=reader, coin=Coins(site.coins), notes=notes),
                  utc_now)  # fmt: skip
    changed = threading.Event()
    kiosk.listeners.append(lambda _v, _e: changed.set())
    asked: list[State] = []
    stop = threading.Event()
    engine = threading.Thread(target=kiosk.run, args=(stop, 0.02), daemon=True)
    engine.start()
    key = FakeKey("K1", "4711")
    reader.insert(key)
    wait_until(lambda: kiosk.view().state == State.CHOOSING_AMOUNT, "the key's summary", changed)
    kiosk.submit(AmountChosen(Money(1000, "EUR")))
    kiosk.submit(MethodChosen(Method.CASH))
    wait_until(lambda: notes.limit is not None, "the acceptors enabled", changed)

    def switch() -> bool:
        asked.append(kiosk.view().state)
        return True

    kiosk.switch = switch  # the new release arrives now, mid top-up
    assert notes.insert(Money(500, "EUR"))  # in escrow
    seen = len(turns)
    wait_until(lambda: len(turns) > seen + 25, "25 engine turns", threading.Event(), 10)
    assert asked == [] and engine.is_alive() and kiosk.view().state == State.CASH
    assert notes.stacked == [Money(500, "EUR")]
    notes.insert(Money(500, "EUR"))  # the rest: written to the key
    wait_until(lambda: key.credit == 1000, "the credit on the key", changed)
    assert asked == []  # the receipt screen is not resting either
    reader.remove()
    engine.join(10)
    assert not engine.is_alive() and kiosk.switched
    assert asked == [State.IDLE]
    closed = [e.data.get("outcome") for e in journal.entries_of_kind(Kind.TX_CLOSED)]
    assert closed == ["completed"] and len(journal.entries_of_kind(Kind.KEY_WRITTEN)) == 1
    stop.set()
    journal.close()


STAND_IN = """#!/bin/sh
# a release as the launcher sees it: it says what it was started with, then behaves
echo "{version} $*" >> {log}
{behaviour}
"""
#: the behaviours of the stand-in releases (the real ones run in tests/test_rollout.py)
HEALTHY_THEN_SWITCH = """printf {version} > {folder}/healthy
trap 'exit 0' TERM
while [ ! -e {folder}/switch-{version} ]; do sleep 0.05; done
rm {folder}/switch-{version}
exit 75"""


def stand_in(folder: Path, version: str, behaviour: str, log: Path) -> Path:
    python = folder / version / RELEASE_PYTHON
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(STAND_IN.format(version=version, log=log, behaviour=behaviour.format(
        version=version, folder=folder)), "utf-8")  # fmt: skip
    python.chmod(0o755)
    return python


def test_the_launcher_switches_and_rolls_back_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real processes stand in for releases: B, on trial, marks itself healthy; C exits at
    its start and D never becomes healthy within its trial: both are stopped and B is started
    again with the reason in state.json."""

    from kiosk.adapters.updates import write_state
    from kiosk.cli.launch import Launcher

    data = tmp_path / "data"
    folder = data / "releases"
    log = tmp_path / "started.log"
    installed = stand_in(tmp_path / "installed", "A", "exit 0", log)
    stand_in(folder, "B", HEALTHY_THEN_SWITCH, log)
    stand_in(folder, "C", "exit 3", log)
    stand_in(folder, "D", "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done", log)
    write_state(folder, {"current": "B", "previous": None, "trial_until": time.time() + 60})
    launcher = Launcher(data, ["--site", "site.toml"], installed=str(installed))

    def started() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    # A is not started: state.json says B (on trial)
    with launching(launcher) as code:
        poll_until(lambda: read_state(folder) == {"current": "B", "previous": None,
                                                  "trial_passed": True}, "B healthy")  # fmt: skip
        assert started() == [f"B -m kiosk.cli --data-dir {data} run --site site.toml"]
        # C arrives and fails at its start: rolled back to B
        write_state(folder, {"current": "C", "previous": "B", "trial_until": time.time() + 60})
        (folder / "switch-B").touch()
        poll_until(lambda: len(started()) == 3, "B started again")
        assert [line.split()[0] for line in started()] == ["B", "C", "B"]
        poll_until(lambda: read_state(folder).get("trial_until") is None
                   and "rolled_back" in read_state(folder), "the state after C")  # fmt: skip
        assert read_state(folder)["rolled_back"] == {
            "version": "C",
            "reason": "it exited with status 3 on trial",
        }
        # D comes up but is not healthy within its trial: stopped, back to B
        write_state(folder, {"current": "D", "previous": "B", "trial_until": time.time() + 1.0})
        (folder / "switch-B").touch()
        poll_until(lambda: len(started()) == 5, "B started after D", 20)
        assert [line.split()[0] for line in started()] == ["B", "C", "B", "D", "B"]
        state = read_state(folder)
        assert state["current"] == "B" and state["rolled_back"] == {
            "version": "D",
            "reason": "not up and synced within its trial",
        }
        assert not (folder / "healthy").exists() or (folder / "healthy").read_text() == "B"
    # (the block's end: SIGTERM to the launcher, passed on, and its status returned)
    assert code == [0]
    # nothing in state.json: the installed release runs (and its status is the launcher's),
    # with systemd's socket passed on and the watchdog its own (no WATCHDOG_PID of ours)
    write_state(folder, {})
    says = stand_in(tmp_path / "installed", "A", 'echo "$NOTIFY_SOCKET|$WATCHDOG_PID|$PWD" >> '
                    f'{tmp_path}/env.log\nexit 0', log)  # fmt: skip
    for name, value in (("NOTIFY_SOCKET", "/run/systemd/notify"), ("WATCHDOG_PID", "1")):
        monkeypatch.setenv(name, value)
    assert Launcher(data, ["x"], installed=str(says)).run() == 0
    assert started()[-1] == f"A -m kiosk.cli --data-dir {data} run x"
    assert (tmp_path / "env.log").read_text() == f"/run/systemd/notify||{data}\n"


@contextlib.contextmanager
def launching(launcher: Any) -> Iterator[list[int]]:
    """`launcher.run()` on a thread of its own; stopped (SIGTERM's way) when the block ends,
    whatever happened in it: no stand-in release is left running. Gives its status."""
    import threading

    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(launcher.run()), daemon=True)
    thread.start()
    try:
        yield code
    finally:
        launcher.stopping.set()
        thread.join(30)


def test_a_release_past_its_trial_that_fails_at_every_start_is_rolled_back(
    tmp_path: Path,
) -> None:
    """E passed its trial, then fails at once at every start: the launcher ends with its
    status each time (systemd starts it again) and counts in state.json; at the third
    failure in a row E is rolled back to B. Not counted: a release that stays up longer than
    `early` (the count starts again), status 2 (the site file, the journal or the disk, which
    B would meet too), a release that is a rollback's target and the installed one (nothing
    to go back to, or a chain of rollbacks that would lose the first one's reason)."""
    from kiosk.adapters.updates import write_state
    from kiosk.cli.launch import EARLY_LIMIT, Launcher

    data = tmp_path / "data"
    folder = data / "releases"
    log = tmp_path / "started.log"
    installed = stand_in(tmp_path / "installed", "A", "exit 4", log)
    stand_in(folder, "B", "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done", log)
    stand_in(folder, "E", "exit 4", log)
    stand_in(folder, "F", "sleep 1\nexit 5", log)
    stand_in(folder, "G", "exit 2", log)
    stand_in(folder, "H", "exit 4", log)

    def launcher() -> Launcher:  # a new one each time, as systemd starts the unit again
        return Launcher(data, ["x"], installed=str(installed))

    def started() -> list[str]:
        return [line.split()[0] for line in log.read_text().splitlines()]

    passed = {"previous": "B", "trial_passed": True}
    write_state(folder, {"current": "E", **passed})
    for times in range(1, EARLY_LIMIT):
        assert launcher().run() == 4
        assert read_state(folder) == {"current": "E", **passed, "early_exits": times}
    with launching(launcher()) as code:
        poll_until(lambda: started()[-1:] == ["B"], "B started after E")
        assert started() == ["E", "E", "E", "B"]
        assert read_state(folder) == {"current": "B", "previous": None, "rolled_back": {
            "version": "E", "reason": "it failed 3 times in a row within 120 s of its start "
                                      "(last status 4)"}}  # fmt: skip
    assert code == [0]
    # F stays up longer than `early` before it fails: the count starts again
    write_state(folder, {"current": "F", **passed, "early_exits": 2})
    patient = launcher()
    patient.early = 0.3
    assert patient.run() == 5
    assert read_state(folder) == {"current": "F", **passed}
    # G: kiosk refuses its site file (status 2), at every start: not the release's fault
    write_state(folder, {"current": "G", **passed})
    assert [launcher().run() for _ in range(EARLY_LIMIT + 1)] == [2] * (EARLY_LIMIT + 1)
    assert read_state(folder) == {"current": "G", **passed}
    # J passes its trial and fails at once after it, in the same launcher: counted already
    stand_in(folder, "J", "printf J > {folder}/healthy\nsleep 1\nexit 4", log)
    write_state(folder, {"current": "J", "previous": "B", "trial_until": time.time() + 60})
    assert launcher().run() == 4
    assert read_state(folder) == {"current": "J", **passed, "early_exits": 1}
    # H was rolled back to (no trial passed here), and the installed release: never counted
    for state in ({"current": "H", "previous": None}, {}):
        write_state(folder, state)
        assert [launcher().run() for _ in range(EARLY_LIMIT + 1)] == [4] * (EARLY_LIMIT + 1)
        assert read_state(folder) == state


def test_a_trial_interrupted_by_a_reboot_gets_its_whole_time_again_once(tmp_path: Path) -> None:
    """The automat was switched off during B's trial and came back after the deadline: B is
    given its trial's length again (it used to be rolled back at once, for the power cut,
    not for anything it did), and becomes healthy. D's launcher is restarted within the same
    boot after its deadline (systemd: D hung before READY, or stopped feeding the watchdog):
    D keeps its deadline and is rolled back, or it would be tried for ever."""
    from kiosk.adapters.updates import boot_id, write_state
    from kiosk.cli.launch import Launcher

    data = tmp_path / "data"
    folder = data / "releases"
    log = tmp_path / "started.log"
    installed = stand_in(tmp_path / "installed", "A", "exit 0", log)
    stand_in(folder, "B", "sleep 1\n" + HEALTHY_THEN_SWITCH, log)
    stand_in(folder, "D", "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done", log)
    assert boot_id()  # (the kernel says which boot this is)
    write_state(folder, {"current": "B", "previous": None, "trial_until": time.time() - 3600,
                         "trial_seconds": 60, "trial_boot": "a boot before"})  # fmt: skip
    with launching(Launcher(data, ["x"], installed=str(installed))) as code:
        poll_until(lambda: read_state(folder) == {"current": "B", "previous": None,
                                                  "trial_passed": True}, "B healthy")  # fmt: skip
        assert [line.split()[0] for line in log.read_text().splitlines()] == ["B"]
    assert code == [0]
    write_state(folder, {"current": "D", "previous": "B", "trial_until": time.time() - 1,
                         "trial_seconds": 60, "trial_boot": boot_id()})  # fmt: skip
    with launching(Launcher(data, ["x"], installed=str(installed))):
        poll_until(lambda: read_state(folder).get("current") == "B", "D rolled back")
        assert read_state(folder)["rolled_back"] == {
            "version": "D", "reason": "not up and synced within its trial"}  # fmt: skip


def test_a_failure_on_the_download_thread_is_journaled_and_the_automat_goes_on(
    fleet: dict[str, Any],
) -> None:
    stored_release(fleet, "2.0.0")
    data = fleet["tmp"] / "data"
    journal = Journal(data / "journal-K-01.sqlite", "K-01")
    (data / "releases").write_text("not a folder")  # the disk says no
    u = updater(fleet, journal)
    u.after_round()
    settle(u)
    [fault] = journal.entries_of_kind(Kind.FAULT)
    assert fault.data["device"] == "updates" and "release 2.0.0" in fault.data["text"]
    assert u.waiting is None and states(journal) == []
    journal.close()


def test_a_release_on_trial_marks_itself_healthy_once_up_and_synced(
    fleet: dict[str, Any],
) -> None:
    from kiosk.adapters.updates import write_state

    data = fleet["tmp"] / "data"
    folder = data / "releases"
    for v in ("0.9.0", "1.0.0", "2.0.0"):
        (folder / v).mkdir(parents=True)
    write_state(folder, {"current": "2.0.0", "previous": "1.0.0",
                         "trial_until": time.time() + 300})  # fmt: skip
    journal = Journal(data / "journal-K-01.sqlite", "K-01")
    client = SyncClient(fleet["url"], fleet["token"], "K-01")
    up = [False]
    u = Updater(journal, client, data, fleet["public"], "2.0.0", lambda: datetime.now(UTC),
                ready=lambda: up[0])  # fmt: skip
    assert u.on_trial
    u.after_round()  # synced, but its screen is not up yet
    assert states(journal) == [] and not (folder / "healthy").exists()
    up[0] = True
    u.after_round()
    assert states(journal) == [("healthy", "2.0.0", "up and synced")]
    assert (folder / "healthy").read_text() == "2.0.0" and not u.on_trial
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["1.0.0", "2.0.0"]
    journal.close()


def test_the_release_rolled_back_to_says_so_at_its_start(fleet: dict[str, Any]) -> None:
    from kiosk.adapters.updates import write_state

    data = fleet["tmp"] / "data"
    write_state(data / "releases", {"current": None, "previous": None, "rolled_back": {
        "version": "2.0.0", "reason": "it exited with status 1 on trial"}})  # fmt: skip
    journal = Journal(data / "journal-K-01.sqlite", "K-01")
    u = updater(fleet, journal)  # the installed 1.0.0
    assert states(journal) == [("rolled_back", "2.0.0", "it exited with status 1 on trial")]
    assert u.given_up == {"2.0.0"} and not u.on_trial
    assert read_state(data / "releases") == {"current": None, "previous": None}
    updater(fleet, journal)  # said once
    assert len(states(journal)) == 1
    journal.close()
