"""Releases from head office, in the background (#38): after a sync round the automat asks
head office which release it is to run; one it does not run is downloaded on a thread of its
own into `<data-dir>/releases/<file>.part` (resumed with HTTP Range after an interruption,
never beyond the signed size nor `MAX_RELEASE`), checked (size, SHA-256 and the signature made
with the utility's release key from the secrets file) and unpacked with `dpkg-deb -x` into
`<data-dir>/releases/<version>/`. Each step is journaled (`release` entries: head office shows
them). A release that does not verify is refused: its file deleted, the reason journaled, and
that version never tried again.

The switch to an unpacked release is the engine's, when nobody is at the automat
(`Kiosk.switch`): `switch()` journals `installed`, writes `state.json` with a trial deadline and
the process exits with `SWITCH_EXIT`; the launcher (`kiosk launch`) then starts the new release
and rolls back by itself when it does not mark itself healthy in time."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kiosk.domain.events import Record
from kiosk.ledger.journal import Journal
from sync.wire import signing
from sync.wire.client import Retryable, SyncClient, SyncError
from sync.wire.protocol import Kind

log = logging.getLogger(__name__)

#: the exit status of a release that hands over to the next one (the launcher starts it)
SWITCH_EXIT = 75
#: no release file is larger than this, whatever its signature says
MAX_RELEASE = 512 << 20
#: how long a new release has to come up and sync once before it is rolled back
TRIAL_SECONDS = 300.0
#: the environment variable the launcher sets for the release it starts
LAUNCHED_ENV = "KIOSK_LAUNCHED"
#: the journal's meta entry of the versions never to be tried again (JSON list)
GIVEN_UP = "releases_given_up"
#: the Python of an unpacked release, inside its folder
RELEASE_PYTHON = Path("opt/prepaid-kiosk/.venv/bin/python")


def folder_of(data: Path) -> Path:
    return data / "releases"


def read_state(folder: Path) -> dict[str, Any]:
    """`state.json`: {current, previous, trial_until (unix seconds), trial_seconds and
    trial_boot (the trial's length, given again once after a reboot during it), trial_passed,
    early_exits (failures soon after a start, in a row), rolled_back {version,
    reason}}; an empty dict where there is none (the installed release runs)."""
    try:
        state = json.loads((folder / "state.json").read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.error("releases: %s/state.json unreadable (%s): the installed release runs",
                  folder, err)  # fmt: skip
        return {}
    return state if isinstance(state, dict) else {}


def boot_id() -> str:
    """This boot of the machine (the kernel's random boot id), "" where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text("ascii").strip()
    except OSError:
        return ""


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """`state.json` replaced whole and durably (a new file, synced, renamed, the folder
    synced)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "state.json.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(state, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / "state.json")
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def healthy_file(folder: Path) -> Path:
    return folder / "healthy"


class Updater:
    """The automat's side of a rollout: ask, download, verify, unpack, switch, and say each."""

    def __init__(
        self,
        journal: Journal,
        client: SyncClient,
        data: Path,
        public_key: str,
        running: str,
        clock: Callable[[], datetime],
        *,
        ready: Callable[[], bool] = lambda: True,
        trial_seconds: float = TRIAL_SECONDS,
        launched: bool | None = None,
    ) -> None:
        self.journal = journal
        self.client = client.fork()  # a session of its own: it runs on its own threads
        self.folder = folder_of(data)
        self.key = signing.load_public_key(public_key)
        self.running = running
        self.clock = clock
        #: the automat is up (its screen shows its first picture): the trial's first condition
        self.ready = ready
        self.trial_seconds = trial_seconds
        #: a launcher started this process (only then is a switch taken: it starts the next)
        self.launched = os.environ.get(LAUNCHED_ENV) == "1" if launched is None else launched
        #: a verified, unpacked release waiting for a moment nobody is at the automat
        self.waiting: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.given_up = self._given_up()
        self.on_trial = False
        self._at_start()

    # ------------------------------------------------------------------ journal

    def _say(self, state: str, version: str, detail: str | None = None) -> None:
        data: dict[str, Any] = {"state": state, "version": version}
        if detail:
            data["detail"] = detail[:500]
        self.journal.append([Record(Kind.RELEASE, data=data)], self.clock())
        log.info("release %s: %s%s", version, state, f" ({detail})" if detail else "",
                 extra={"event": f"release_{state}"})  # fmt: skip

    def _given_up(self) -> set[str]:
        """The versions refused or rolled back here: never tried again (from the journal's
        entries, and from its meta once housekeeping has archived them)."""
        out = set(json.loads(self.journal.get_meta(GIVEN_UP) or "[]"))
        for e in self.journal.entries_of_kind(Kind.RELEASE):
            if e.data.get("state") in ("refused", "rolled_back"):
                out.add(str(e.data.get("version")))
        return out

    def _give_up(self, version: str) -> None:
        self.given_up.add(version)
        self.journal.set_meta(GIVEN_UP, json.dumps(sorted(self.given_up)))

    def _at_start(self) -> None:
        """A rollback the launcher made is said by the release it went back to; a release on
        trial marks itself healthy later (`after_round`)."""
        state = read_state(self.folder)
        back = state.get("rolled_back")
        if isinstance(back, dict) and back.get("version"):
            version, reason = str(back["version"]), str(back.get("reason") or "")
            self._say("rolled_back", version, reason)
            self._give_up(version)
            write_state(self.folder, {k: v for k, v in state.items() if k != "rolled_back"})
        self.on_trial = (state.get("current") == self.running
                         and state.get("trial_until") is not None)  # fmt: skip

    # ------------------------------------------------------------------ after a sync round

    def after_round(self, _now: datetime | None = None) -> None:
        """On the sync thread after a round that ended well. Never raises."""
        try:
            self._trial()
            self._ask()
        except Exception as err:  # the sync thread goes on whatever happens here
            log.exception("releases: %s", err, extra={"event": "release_error"})

    def _trial(self) -> None:
        if self.on_trial and self.ready():
            self._say("healthy", self.running, "up and synced")
            healthy_file(self.folder).write_text(self.running, "utf-8")
            self.on_trial = False
            self._prune(read_state(self.folder).get("previous"))

    def _prune(self, previous: object) -> None:
        """The unpacked releases but this one and the one before it are deleted (before any
        new download starts: this runs on the sync thread ahead of `_ask`)."""
        for old in self.folder.iterdir():
            if old.is_dir() and not old.name.startswith(".") and old.name not in (
                    self.running, previous):  # fmt: skip
                shutil.rmtree(old, ignore_errors=True)
                log.info("releases: %s deleted (neither running nor the one before)", old.name)

    def _ask(self) -> None:
        with self._lock:
            if self.waiting is not None or (self._thread and self._thread.is_alive()):
                return
        try:
            target = self.client.release()
        except SyncError as err:
            log.info("releases: head office not asked: %s", err)
            return
        if target is None:
            return
        version = str(target.get("version", ""))
        if version == self.running or version in self.given_up:
            return
        if (self.folder / version).is_dir():
            self.waiting = version
            return
        thread = threading.Thread(target=self._fetch, args=(target,), name="release",
                                  daemon=True)  # fmt: skip
        with self._lock:
            self._thread = thread
        thread.start()

    def busy(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    # ------------------------------------------------------------------ the download thread

    def _fetch(self, target: dict[str, Any]) -> None:
        version = str(target.get("version", "?"))
        try:
            self._download(target)
        except signing.BadRelease as err:
            self._refuse(version, str(err), target)
        except Retryable as err:
            log.warning("releases: %s not downloaded yet (%s): resumed after the next round",
                        version, err)  # fmt: skip
        except Exception as err:  # nothing escapes the thread: said, journaled, logged
            log.exception("releases: %s failed: %s", version, err)
            try:
                self.journal.append([Record(Kind.FAULT, data={
                    "device": "updates", "text": f"release {version}: {err}"[:500]})],
                    self.clock())  # fmt: skip
            except Exception:
                log.exception("releases: the failure could not be journaled")

    def _refuse(self, version: str, why: str, target: dict[str, Any]) -> None:
        name = str(target.get("file") or "")
        if signing.FILE_NAME.fullmatch(name):
            (self.folder / f"{name}.part").unlink(missing_ok=True)
        self._give_up(version)
        self._say("refused", version, why)

    def _download(self, target: dict[str, Any]) -> None:
        try:
            sig = signing.parse(str(target["signature"]))
            said = (str(target["version"]), str(target["file"]), int(target["size"]),
                    str(target["sha256"]))  # fmt: skip
        except (KeyError, ValueError, TypeError) as err:
            raise signing.BadRelease(f"head office's answer is not a release ({err})") from None
        signing.check(sig, self.key)  # before a byte is downloaded
        if said != (sig.version, sig.file, sig.size, sig.sha256):
            raise signing.BadRelease("head office's answer is not what the signature says")
        if sig.size > MAX_RELEASE:
            raise signing.BadRelease(f"{sig.size} bytes is more than a release may be "
                                     f"({MAX_RELEASE})")  # fmt: skip
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f"{sig.file}.part"
        offset = part.stat().st_size if part.exists() else 0
        if offset > sig.size:
            part.unlink()
            offset = 0
        self._say("downloading", sig.version, f"from byte {offset}" if offset else None)
        url = str(target.get("url") or f"/v1/releases/{sig.version}/file")
        if offset < sig.size:
            with part.open("ab") as f:
                self.client.download(url, f, offset, sig.size)
                f.flush()
                os.fsync(f.fileno())
        signing.verify(part, sig, self.key)
        self._unpack(part, sig.version)
        part.unlink()
        self._say("verified", sig.version, f"{sig.size} bytes, unpacked")
        self.waiting = sig.version

    def _unpack(self, deb: Path, version: str) -> None:
        tmp = self.folder / f".unpack-{version}"
        shutil.rmtree(tmp, ignore_errors=True)
        done = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], capture_output=True,
                              text=True, timeout=600, check=False)  # fmt: skip
        if done.returncode != 0 or not (tmp / RELEASE_PYTHON).exists():
            shutil.rmtree(tmp, ignore_errors=True)
            why = done.stderr.strip()[:200] or f"no {RELEASE_PYTHON} in it"
            raise signing.BadRelease(f"not an automat's package: {why}")
        os.replace(tmp, self.folder / version)

    # ------------------------------------------------------------------ the switch

    def switch(self) -> bool:
        """On the engine thread, while nobody is at the automat: hand over to the waiting
        release (journal `installed`, `state.json` with its trial) and say True: the process
        then exits with SWITCH_EXIT. False: nothing to switch to, or no launcher to start it."""
        version = self.waiting
        if version is None or not self.launched or self.on_trial:
            return False
        self._say("installed", version, f"from {self.running}")
        healthy_file(self.folder).unlink(missing_ok=True)
        # the release to go back to: this one if it is unpacked here, else the installed one
        mine = Path(sys.executable).absolute().is_relative_to(self.folder.absolute())
        write_state(self.folder, {"current": version, "previous": self.running if mine else None,
                                  "trial_until": time.time() + self.trial_seconds,
                                  "trial_seconds": self.trial_seconds,
                                  "trial_boot": boot_id()})  # fmt: skip
        return True
