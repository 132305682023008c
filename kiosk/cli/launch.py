"""`kiosk launch ARGS`: what the unit runs. It starts `kiosk run ARGS` of the release chosen in
`<data-dir>/releases/state.json` (an unpacked release's own Python, or this installed one) and
supervises it:

* the release exits with `SWITCH_EXIT` (it switched to a new release while nobody was at the
  automat, and wrote `state.json` with a trial deadline): the new release is started;
* a release on trial must mark itself healthy (`releases/healthy`, written once it is up and has
  finished a sync round) before the deadline; if it exits first, or the deadline passes, it is
  stopped, `state.json` goes back to the release before (with the reason, which that release
  journals as `rolled_back` at its start) and that one is started;
* a trial interrupted by a reboot (or a power cut) gets its whole time again, once per boot:
  the deadline is not the release's fault then; restarted by systemd within the same boot (it
  hung before READY, or stopped feeding the watchdog), it keeps its deadline;
* a release that passed its trial and then fails within `EARLY` seconds of its start
  `EARLY_LIMIT` times in a row (counted in `state.json` across the launcher's own restarts) is
  rolled back the same way: a device it never met, a date, would otherwise run it into
  systemd's restart limit and leave the automat dark. Not counted: a release that is itself a
  rollback's target or the installed one (nothing to go back to), and status 2, kiosk's own
  refusal of the site file, the journal or the disk, which the release before would meet too;
* any other exit ends the launcher with the same status (systemd starts it again); SIGTERM and
  SIGINT are passed on to the release and the launcher ends with it.

systemd's notification socket is passed on (the unit has NotifyAccess=all): the release says
READY, STATUS and WATCHDOG itself."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kiosk.adapters.updates import (
    LAUNCHED_ENV,
    RELEASE_PYTHON,
    SWITCH_EXIT,
    boot_id,
    folder_of,
    healthy_file,
    read_state,
    write_state,
)

log = logging.getLogger(__name__)

#: how often the launcher looks at its release (healthy yet? deadline passed?)
LOOK = 0.2
#: how long a stopped release has to end before it is killed
STOP_WAIT = 20.0
#: a release that fails this soon after its start, this many times in a row, is rolled back
EARLY = 120.0
EARLY_LIMIT = 3
#: kiosk's status for a site file, journal or disk it refuses (kiosk/cli/main.py): not counted
REFUSED = 2


class Launcher:
    def __init__(self, data: Path, run_args: list[str], installed: str = sys.executable) -> None:
        self.data = data
        self.folder = folder_of(data)
        self.run_args = run_args
        self.installed = installed
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.early = EARLY

    def python(self, version: str | None) -> str:
        if version:
            own = self.folder / version / RELEASE_PYTHON
            if own.exists():
                return str(own)
            log.error("release %s: no %s: the installed release runs", version, own)
        return self.installed

    def start(self, version: str | None) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env[LAUNCHED_ENV] = "1"
        env.pop("WATCHDOG_PID", None)  # the watchdog is the release's: it pings, not we
        cmd = [self.python(version), "-m", "kiosk.cli", "--data-dir", str(self.data), "run",
               *self.run_args]  # fmt: skip
        print(f"launch: release {version or 'installed'}: {' '.join(cmd)}", flush=True)
        # in the data directory: never a folder whose own `kiosk` package would be imported
        self.child = subprocess.Popen(cmd, env=env, cwd=self.data)
        return self.child

    def stop(self, child: subprocess.Popen[bytes]) -> int:
        child.send_signal(signal.SIGTERM)
        try:
            return child.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()

    def roll_back(self, state: dict[str, object], reason: str) -> None:
        version = state.get("current")
        print(f"launch: release {version} rolled back: {reason}", flush=True)
        write_state(self.folder, {"current": state.get("previous"), "previous": None,
                                  "rolled_back": {"version": version,
                                                  "reason": reason}})  # fmt: skip
        healthy_file(self.folder).unlink(missing_ok=True)

    def run(self) -> int:
        while True:
            state = read_state(self.folder)
            version = state.get("current")
            version = str(version) if version else None
            until = state.get("trial_until")
            this_boot = boot_id()
            if (
                until is not None
                and state.get("trial_seconds") is not None
                and state.get("trial_boot", this_boot) != this_boot
            ):  # rebooted during the trial: its whole time again, once
                until = time.time() + float(state["trial_seconds"])
                state = {**state, "trial_until": until, "trial_boot": this_boot}
                write_state(self.folder, state)
            child = self.start(version)
            started, early = time.monotonic(), bool(state.get("early_exits"))
            code = None
            while code is None:
                if self.stopping.wait(LOOK):
                    return self.stop(child)
                code = child.poll()
                if early and code is None and time.monotonic() - started > self.early:
                    early = False  # up long enough: the count of early failures starts again
                    write_state(self.folder, {k: v for k, v in read_state(self.folder).items()
                                              if k != "early_exits"})  # fmt: skip
                if until is None:
                    continue
                mark = healthy_file(self.folder)
                if mark.exists() and mark.read_text("utf-8").strip() == version:
                    state = {"current": version, "previous": state.get("previous"),
                             "trial_passed": True}  # fmt: skip
                    write_state(self.folder, state)
                    print(f"launch: release {version} is healthy", flush=True)
                    until = None
                elif code is None and time.time() > float(until):  # type: ignore[arg-type]
                    self.stop(child)
                    self.roll_back(state, "not up and synced within its trial")
                    code = -1
            if code in (-1, SWITCH_EXIT):  # rolled back, or handed over: the next one
                continue
            if until is not None:  # ended on trial
                self.roll_back(state, f"it exited with status {code} on trial")
                continue
            if (
                code not in (0, REFUSED)
                and version
                and state.get("trial_passed")
                and time.monotonic() - started < self.early
            ):
                state = read_state(self.folder)  # (as the release left it)
                times = int(state.get("early_exits", 0)) + 1
                if times >= EARLY_LIMIT:
                    self.roll_back(
                        state,
                        f"it failed {times} times in a row within "
                        f"{self.early:.0f} s of its start (last status {code})",
                    )
                    continue
                write_state(self.folder, {**state, "early_exits": times})
            return code


def launch(data: Path, run_args: list[str]) -> int:
    launcher = Launcher(data, run_args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: launcher.stopping.set())
    return launcher.run()
