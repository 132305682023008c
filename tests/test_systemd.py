"""systemd's view of the automat, through a real NOTIFY_SOCKET: READY=1 once it serves,
WATCHDOG=1 pings while its threads live, STATUS= lines; and the units shipped for it."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from kiosk.app.systemd import Notifier, Watchdog, take_supervision, watchdog_interval
from kiosk.domain.clock import ManualClock
from kiosk.sim.rig import simulated_rig
from tests.conftest import ROOT, SATURDAY_MORNING, make_site


@contextmanager
def notify_socket(address: str) -> Iterator[socket.socket]:
    """A datagram socket as systemd listens on (a path, or `@name` for an abstract one)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + address[1:] if address.startswith("@") else address)
    try:
        yield s
    finally:
        s.close()


def receive(s: socket.socket, timeout: float) -> str | None:
    """The next datagram, or None if none comes within `timeout`."""
    s.settimeout(timeout)
    try:
        return s.recv(4096).decode()
    except TimeoutError:
        return None


def next_with(s: socket.socket, text: str, timeout: float = 10.0) -> list[str]:
    """Datagrams up to and including the first that contains `text`."""
    seen: list[str] = []
    while True:
        msg = receive(s, timeout)
        assert msg is not None, f"no {text!r} within {timeout} s; got {seen}"
        seen.append(msg)
        if text in msg:
            return seen


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_the_notification_is_systemds_datagram(tmp_path: Path, kind: str) -> None:
    address = str(tmp_path / "notify") if kind == "path" else f"@kiosk-test-{os.getpid()}"
    with notify_socket(address) as s:
        assert Notifier(address).notify(READY="1", STATUS="in service")
        assert receive(s, 5) == "READY=1\nSTATUS=in service"
    assert Notifier("").notify(READY="1") is False  # not started by systemd: nothing sent


def test_a_listener_that_does_not_read_never_blocks_the_automat(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with notify_socket(address):  # nobody reads: its queue fills up
        notifier = Notifier(address)
        sent = [notifier.notify(WATCHDOG="1") for _ in range(200)]  # returns, every time
    assert sent[0] is True and sent[-1] is False  # the queue's overflow dropped, not waited for


def test_the_watchdog_interval_is_half_what_systemd_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def test_what_systemd_gave_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes the automat starts (its virtual screen, a local head office) must not speak
    for it to systemd."""
    monkeypatch.setenv("NOTIFY_SOCKET", "@kiosk")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    sup = take_supervision()
    assert (sup.address, sup.watchdog) == ("@kiosk", 15.0)
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(os.environ)


def test_the_pings_stop_when_a_device_thread_dies(tmp_path: Path) -> None:
    """The whole automat (simulators on their real ports, head office on this machine): pings
    while it lives; a ccTalk bus thread ended (the test hook), and they stop."""
    clock = ManualClock(SATURDAY_MORNING)
    journal = tmp_path / "journal-DEMO-01.sqlite"
    with (
        notify_socket(str(tmp_path / "notify")) as s,
        simulated_rig(make_site(), journal, io.StringIO(), clock) as rig,
    ):
        stop = threading.Event()
        engine = threading.Thread(target=rig.kiosk.run, args=(stop, 0.05), daemon=True)
        engine.start()
        dog = Watchdog(Notifier(str(tmp_path / "notify")),
                       partial(rig.automat.dead_parts, engine), 0.05)  # fmt: skip
        dog.start()
        try:
            for _ in range(3):
                assert receive(s, 5) == "WATCHDOG=1"
            assert rig.automat.dead_parts(engine) == []
            rig.cash.workers[0].stop()  # the test hook: the bus thread ends
            seen = next_with(s, "STATUS=")
            assert seen[-1] == "STATUS=out of order: ccTalk bus coin+notes not alive"
            assert receive(s, 0.5) is None  # no more pings: systemd restarts the automat
            pings = dog.pings
            stop.set()
            engine.join(5)
            assert "engine" in rig.automat.dead_parts(engine) and dog.pings == pings
        finally:
            dog.stop()
            stop.set()


def test_ready_waits_for_the_screens_first_picture(tmp_path: Path) -> None:
    """Devices up is not enough: systemd hears READY=1 only once the screen shows its first
    picture (a customer must never meet a black screen on an automat said to be up)."""
    from kiosk.app.systemd import Supervision
    from kiosk.cli.run import supervised

    clock = ManualClock(SATURDAY_MORNING)
    journal = tmp_path / "journal-DEMO-01.sqlite"
    address = str(tmp_path / "notify")
    with (
        notify_socket(address) as s,
        simulated_rig(make_site(), journal, io.StringIO(), clock) as rig,
    ):
        stop = threading.Event()
        engine = threading.Thread(target=rig.kiosk.run, args=(stop, 0.05), daemon=True)
        engine.start()
        shown = threading.Event()
        try:
            with supervised(rig.automat, engine, Supervision(address, None), shown):
                early = []
                deadline = time.monotonic() + 10
                while not rig.automat.devices_ready() and time.monotonic() < deadline:
                    early.append(receive(s, 0.05))
                assert rig.automat.devices_ready()
                early.append(receive(s, 0.5))
                assert [m for m in early if m is not None] == []  # devices up, screen black
                shown.set()
                assert receive(s, 5) == "READY=1\nSTATUS=in service"
            assert receive(s, 5) == "STOPPING=1"
        finally:
            stop.set()
            engine.join(5)


UNITS = ROOT / "config" / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("unit", ["prepaid-kiosk.service", "prepaid-headoffice.service",
                                  "prepaid-headoffice-alarms.service"])
def test_the_units_verify(unit: str, tmp_path: Path) -> None:
    """As installed: the program where the unit expects it (here: this checkout's)."""
    text = (UNITS / unit).read_text()
    program = "/opt/prepaid-headoffice" if "headoffice" in unit else "/opt/prepaid-kiosk"
    assert f"{program}/.venv/bin/" in text  # where its package puts it
    (tmp_path / unit).write_text(text.replace(program, str(ROOT)))
    res = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr
    # and it does fail where the program is not
    res = subprocess.run(["systemd-analyze", "verify", str(UNITS / unit)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode != 0 and "not executable" in res.stderr


def exposure(unit: Path) -> float:
    """`systemd-analyze security`'s overall exposure of a unit file (0 best, 10 worst)."""
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", unit.name],
                         cwd=unit.parent, capture_output=True, text=True, timeout=60)  # fmt: skip
    return float(res.stdout.split("Overall exposure level for")[1].split(":")[1].split()[0])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_every_unit_kiosk_install_writes_is_hardened(tmp_path: Path) -> None:
    """The kiosk, the screen (the X server, rootless) and head office's two: at most 4.0 each
    (the screen's was 9.6 as root)."""
    root = tmp_path / "root"
    res = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "install", "--site",
         str(ROOT / "config" / "jena-rudolstaedter-strasse.toml"), "--root", str(root)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    units = root / "etc" / "systemd" / "system"
    assert not list(units.glob("prepaid-headoffice*"))  # head office's units are not an automat's
    scores = {u: exposure(units / u) for u in ("prepaid-kiosk.service",
              "prepaid-kiosk-display.service")}  # fmt: skip
    for u in ("prepaid-headoffice.service", "prepaid-headoffice-alarms.service"):
        scores[u] = exposure(UNITS / u)  # as its package installs them
    print(f"systemd-analyze security: {scores}")
    assert all(score <= 4.0 for score in scores.values()), scores
    display = (units / "prepaid-kiosk-display.service").read_text()
    assert "User=kiosk" in display and "ExecStart=/usr/lib/xorg/Xorg " in display


def test_kiosk_install_boots_the_machine_into_the_automat(tmp_path: Path) -> None:
    """`kiosk install` into a folder standing for the machine's /: the site, the units pointing
    at this program, the screen without desktop, cursor, blanking or a way out, udev rules;
    the units verify as installed; the commands that finish it on the machine are named."""
    root = tmp_path / "root"
    res = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "install", "--site",
         str(ROOT / "config" / "jena-saalstrasse.toml"), "--root", str(root)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    etc = root / "etc"
    site = (etc / "prepaid-kiosk" / "site.toml").read_text()
    assert site == (ROOT / "config" / "jena-saalstrasse.toml").read_text()
    assert (etc / "prepaid-kiosk" / "secrets.toml").stat().st_mode & 0o077 == 0
    units = etc / "systemd" / "system"
    kiosk = (units / "prepaid-kiosk.service").read_text()
    assert f"ExecStart={ROOT}/.venv/bin/kiosk " in kiosk
    assert "Requires=prepaid-kiosk-display.service" in kiosk
    display = (units / "prepaid-kiosk-display.service").read_text()
    assert "-nocursor" in display and "-s 0" in display and "-dpms" in display
    xorg = (etc / "X11" / "xorg.conf.d" / "10-prepaid-kiosk.conf").read_text()
    assert '"DontVTSwitch" "true"' in xorg and '"DontZap" "true"' in xorg
    assert "NAutoVTs=0" in (etc / "systemd" / "logind.conf.d" / "10-prepaid-kiosk.conf").read_text()
    rules = (etc / "udev" / "rules.d" / "70-prepaid-kiosk.rules").read_text()
    assert 'SUBSYSTEM=="tty", SUBSYSTEMS=="usb", GROUP="dialout"' in rules
    assert 'SUBSYSTEM=="usbmisc", KERNEL=="lp[0-9]*", GROUP="lp"' in rules
    assert 'SUBSYSTEM=="sound", GROUP="audio"' in rules
    # the devices the site names, and no more: serial adapters, the usblp printer, sound;
    # no raw USB
    dropin = (units / "prepaid-kiosk.service.d" / "devices.conf").read_text()
    allowed = {line.split("=", 1)[1] for line in dropin.splitlines()
               if line.startswith("DeviceAllow=")}  # fmt: skip
    assert allowed == {"char-ttyUSB rw", "char-ttyACM rw", "char-usb rw", "char-alsa rw"}
    assert "DeviceAllow=char-drm rw" in kiosk and "char-ttyUSB" not in kiosk
    for line in ("useradd --system --create-home --groups dialout,lp,audio,video,input,tty kiosk",
                 "systemctl enable pcscd.socket prepaid-kiosk-display.service "
                 "prepaid-kiosk.service"):  # fmt: skip
        assert line in res.stdout
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    check = ["prepaid-kiosk.service", "prepaid-kiosk-display.service"]
    display_unit = units / "prepaid-kiosk-display.service"
    if not Path("/usr/lib/xorg/Xorg").exists():  # the X server is on kiosks, not here:
        display_unit.write_text(  # every other line of the unit verified as written
            display_unit.read_text().replace("/usr/lib/xorg/Xorg ", "/bin/true ")
        )
    res = subprocess.run(["systemd-analyze", "verify", *check], cwd=units, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr
    # a second run keeps the secrets a technician filled in
    (etc / "prepaid-kiosk" / "secrets.toml").write_text("[technician]\npin_hash = 'x'\n")
    again = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "install", "--site",
         str(ROOT / "config" / "jena-saalstrasse.toml"), "--root", str(root)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert again.returncode == 0
    assert "pin_hash = 'x'" in (etc / "prepaid-kiosk" / "secrets.toml").read_text()


def test_kiosk_install_refuses_a_bad_site(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[site]\nid = 'x'\n")
    res = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "install", "--site", str(bad), "--root",
         str(tmp_path / "root")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 2 and "kiosk:" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "root").exists()  # nothing written


@pytest.mark.parametrize(
    ("program", "says"),
    [("/nonexistent", "no program at /nonexistent"), ("empty", "is not an installed automat")],
)
def test_kiosk_install_refuses_a_program_that_is_not_there(
    tmp_path: Path, program: str, says: str
) -> None:
    """It exited 0 and wrote no unit; now it says what is missing and writes nothing."""
    if program == "empty":
        program = str(tmp_path / "prog")
        Path(program).mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "install", "--site",
         str(ROOT / "config" / "jena-saalstrasse.toml"), "--root", str(tmp_path / "root"),
         "--program", program],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "root").exists()
