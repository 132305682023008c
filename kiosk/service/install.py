"""`kiosk install`: a Debian 12 machine boots straight into the automat.

Writes, under `root` (the machine's `/`, or a folder to look at first):

- the site file and an empty secrets file under /etc/prepaid-kiosk/ (the secrets readable by
  the kiosk user only; the head-office token goes into kiosk.env);
- the systemd units from config/systemd/, pointing at this installation of the program, and a
  display unit: the X server on the first console, without a desktop, without a cursor, with
  the screen never blanking, that the kiosk unit needs;
- an X configuration that closes the ways out: no switching consoles, no Ctrl-Alt-Backspace;
  and a logind drop-in so that no login prompt waits on another console;
- udev rules: USB-serial adapters and USB receipt printers to the kiosk's groups, with stable
  names under /dev/serial/by-id/ (udev's own) for the site file.

On the live machine (`root` is /) it then creates the kiosk user (groups dialout, lp, audio,
video, input, tty), reloads udev and systemd and enables the units; otherwise it prints those
commands.
Installing the Debian packages (pcscd, xserver-xorg, fonts) is `./dev.sh`'s job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from kiosk.domain.site import Site, is_simulated, load_site

#: where the program lives once installed (the units name it)
PROGRAM = Path("/opt/prepaid-kiosk")
KIOSK_USER = "kiosk"
GROUPS = ("dialout", "lp", "audio", "video", "input", "tty")

DISPLAY_UNIT = """\
# The automat's screen: an X server on the first console, nothing else on it. No desktop, no
# cursor, the screen never blanks; the kiosk unit draws the automat on it. Rootless: it runs
# as the kiosk user in a logind session on tty1 (PAMName=login), which gives it the GPU and
# the touch screen; the real server is started, not the setuid wrapper.
[Unit]
Description=Prepaid top-up automat: the screen
Conflicts=getty@tty1.service
After=systemd-user-sessions.service getty@tty1.service plymouth-quit.service systemd-logind.service

[Service]
Type=simple
User=kiosk
Group=kiosk
SupplementaryGroups=video input tty
PAMName=login
TTYPath=/dev/tty1
TTYReset=yes
TTYVHangup=yes
StandardInput=tty-fail
StandardOutput=journal
StandardError=journal
ExecStart=/usr/lib/xorg/Xorg :0 vt1 -nolisten tcp -nocursor -s 0 -dpms -noreset -keeptty \\
    -logfile /var/log/prepaid-kiosk-display/Xorg.0.log
LogsDirectory=prepaid-kiosk-display
Restart=always
RestartSec=2

# hardening: its socket and lock in /tmp (shared with the kiosk unit), its log, the GPU, input
# devices and its console; nothing else
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths=/tmp
ProtectHome=yes
PrivateNetwork=yes
IPAddressDeny=any
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources @mount @debug @cpu-emulation @obsolete @reboot @swap
SystemCallErrorNumber=EPERM
RestrictAddressFamilies=AF_UNIX AF_NETLINK
DevicePolicy=closed
DeviceAllow=char-drm rw
DeviceAllow=char-input rw
DeviceAllow=char-tty rw
DeviceAllow=/dev/tty0 rw
UMask=0077

[Install]
WantedBy=graphical.target
"""

XORG_CONF = """\
# The automat: no way out by keyboard (no console switching, no Ctrl-Alt-Backspace), the
# screen never blanks or powers down.
Section "ServerFlags"
    Option "DontVTSwitch" "true"
    Option "DontZap" "true"
    Option "BlankTime" "0"
    Option "StandbyTime" "0"
    Option "SuspendTime" "0"
    Option "OffTime" "0"
EndSection
"""

LOGIND_CONF = """\
# The automat: no login prompts on other consoles.
[Login]
NAutoVTs=0
ReserveVT=0
"""

UDEV_RULES = """\
# The automat's devices: USB-serial adapters (ccTalk buses, RS-232 card terminals) for the
# dialout group; USB receipt printers (class 7) for the lp group, both as the printer class
# device /dev/usb/lp* (usblp) and as the raw USB device (usb://VID:PID); sound for the audio
# group (the voice). Name them in the site file by their stable links under
# /dev/serial/by-id/ (made by udev itself), never /dev/ttyUSB0.
SUBSYSTEM=="tty", SUBSYSTEMS=="usb", GROUP="dialout", MODE="0660"
SUBSYSTEM=="usbmisc", KERNEL=="lp[0-9]*", GROUP="lp", MODE="0660"
SUBSYSTEM=="usb", ATTR{bDeviceClass}=="07", GROUP="lp", MODE="0660"
SUBSYSTEM=="usb", ATTR{bInterfaceClass}=="07", GROUP="lp", MODE="0660"
SUBSYSTEM=="sound", GROUP="audio", MODE="0660"
"""


def device_dropin(site: Site) -> str:
    """The kiosk unit's devices for this site, as a drop-in: exactly the classes of the
    devices it names (the unit itself allows the GPU only)."""
    d = site.devices
    lines = ["# The devices this site names (written by kiosk install from the site file)",
             "[Service]"]  # fmt: skip
    serial = [
        dev.port
        for dev in (d.coin, d.notes, d.card)
        if dev is not None and not is_simulated(dev.port) and dev.port.startswith("/dev/")
    ]
    if serial:
        lines += ["# serial adapters: " + ", ".join(serial),
                  "DeviceAllow=char-ttyUSB rw", "DeviceAllow=char-ttyACM rw"]  # fmt: skip
    printer = d.printer.port if d.printer is not None else ""
    if printer.startswith("/dev/usb/lp"):
        lines += [f"# the receipt printer: {printer} (usblp)", "DeviceAllow=char-usb rw"]
    elif printer.startswith("usb://"):
        lines += [f"# the receipt printer: {printer} (raw USB)", "DeviceAllow=char-usb_device rw"]
    if site.ui.speech != "off":
        lines += ["# the voice: ALSA", "DeviceAllow=char-alsa rw"]
    return "\n".join(lines) + "\n"


@dataclass
class Plan:
    """What an installation wrote, and the commands that finish it on the live machine."""

    files: list[Path] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)


class InstallRefused(Exception):
    """What is to be installed is not there or not right: nothing was written."""


def check_inputs(site_file: Path, program: Path) -> None:
    """The program must be an installation of the automat (its environment's `kiosk`, its
    units), the site file a site: else InstallRefused saying what is missing."""
    kiosk = program / ".venv" / "bin" / "kiosk"
    if not program.is_dir():
        raise InstallRefused(f"no program at {program}")
    if not (kiosk.is_file() and os.access(kiosk, os.X_OK)):
        raise InstallRefused(f"{program} is not an installed automat: no {kiosk} to run")
    if not (program / "config" / "systemd" / "prepaid-kiosk.service").is_file():
        raise InstallRefused(f"{program} has no config/systemd/prepaid-kiosk.service")
    if not site_file.is_file():
        raise InstallRefused(f"no site file {site_file}")


def install(root: Path, site_file: Path, program: Path, units: Path, out: TextIO) -> Plan:
    """Write the files under `root`; run the commands when `root` is the live machine's /."""
    check_inputs(site_file, program)
    plan = Plan()

    def put(path: str, text: str, mode: int = 0o644) -> None:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
        os.chmod(target, mode)
        plan.files.append(target)

    put("/etc/prepaid-kiosk/site.toml", site_file.read_text("utf-8"))
    if not (root / "etc/prepaid-kiosk/secrets.toml").exists():  # never overwrite real keys
        put(
            "/etc/prepaid-kiosk/secrets.toml",
            "# [chipkey] master/read/credit/debit and [technician] pin_hash go here\n",
            0o600,
        )
        put("/etc/prepaid-kiosk/kiosk.env", "# KIOSK_HEAD_OFFICE_TOKEN=...\n", 0o600)  # fmt: skip
    for unit in sorted(units.glob("prepaid-kiosk*.service")):  # head office's are its own
        text = unit.read_text("utf-8").replace(str(PROGRAM), str(program))
        if unit.name == "prepaid-kiosk.service":
            text = text.replace("[Unit]\n", "[Unit]\nRequires=prepaid-kiosk-display.service\n"
                                "After=prepaid-kiosk-display.service\n", 1)  # fmt: skip
        put(f"/etc/systemd/system/{unit.name}", text)
    put("/etc/systemd/system/prepaid-kiosk-display.service", DISPLAY_UNIT)
    put("/etc/X11/xorg.conf.d/10-prepaid-kiosk.conf", XORG_CONF)
    put("/etc/systemd/logind.conf.d/10-prepaid-kiosk.conf", LOGIND_CONF)
    put("/etc/udev/rules.d/70-prepaid-kiosk.rules", UDEV_RULES)
    put("/etc/systemd/system/prepaid-kiosk.service.d/devices.conf",
        device_dropin(load_site(site_file)))  # fmt: skip

    plan.commands = [
        ["useradd", "--system", "--create-home", "--groups", ",".join(GROUPS), KIOSK_USER],
        ["chown", f"root:{KIOSK_USER}", "/etc/prepaid-kiosk/secrets.toml"],
        ["chmod", "0640", "/etc/prepaid-kiosk/secrets.toml"],
        ["udevadm", "control", "--reload"],
        ["udevadm", "trigger", "--subsystem-match=tty", "--subsystem-match=usb",
         "--subsystem-match=usbmisc", "--subsystem-match=sound"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "set-default", "graphical.target"],
        ["systemctl", "enable", "pcscd.socket", "prepaid-kiosk-display.service",
         "prepaid-kiosk.service"],
    ]  # fmt: skip
    for f in plan.files:
        out.write(f"wrote {f}\n")
    if root.resolve() != Path("/"):
        out.write("on the machine itself, then:\n")
        for cmd in plan.commands:
            out.write("  " + " ".join(cmd) + "\n")
        return plan
    for cmd in plan.commands:
        if cmd[0] == "useradd" and _user_exists(KIOSK_USER):
            continue
        if shutil.which(cmd[0]) is None:
            raise FileNotFoundError(f"{cmd[0]} is not installed")
        out.write("$ " + " ".join(cmd) + "\n")
        subprocess.run(cmd, check=True)
    return plan


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
