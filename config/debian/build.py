"""Build the two Debian packages into dist/ (`./dev.sh package`):

- prepaid-kiosk_VERSION_amd64.deb: the automat. The program and its Python dependencies (the
  `kiosk` extra) in a self-contained environment under /opt/prepaid-kiosk/.venv on Debian's own
  Python, the kiosk and screen units, udev rules, the X and logind settings that close the ways
  out, and maintainer scripts that make the kiosk user and enable the units, started only once
  /etc/prepaid-kiosk/site.toml exists (`kiosk install --site FILE` writes it).
- prepaid-headoffice_VERSION_amd64.deb: head office (the `headoffice` extra) under
  /opt/prepaid-headoffice/.venv, its server and alarm units, and `prepaid-headoffice` (the
  `sync.admin` command); the server starts once /etc/prepaid-headoffice/headoffice.env exists.

`Depends:` names the Debian packages the programs need at run time, nothing to build or test
with. The version is pyproject.toml's, the one place it is written.

    /usr/bin/python3 config/debian/build.py [--out dist] [--only kiosk|headoffice] [--fast]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MAINTAINER = "Prepaid automats team <automats@utility.example>"


@dataclass(frozen=True)
class Package:
    name: str
    extra: str
    prefix: str  # where its environment lives
    depends: tuple[str, ...]
    units: tuple[str, ...]
    summary: str
    description: str


#: Debian's Python the environment is made with, and its version's bounds
#: (tzdata: both read local days and times, Europe/Berlin, from the system's zone files)
PYTHON = ("python3 (>= 3.11)", "python3 (<< 3.12)", "libc6", "tzdata")
PY = "3.11"

KIOSK = Package(
    "prepaid-kiosk", "kiosk", "/opt/prepaid-kiosk",
    (*PYTHON, "adduser", "pcscd", "libpcsclite1", "libgl1", "libegl1", "libmtdev1",
     "xserver-xorg-core", "xserver-xorg-input-libinput", "espeak-ng", "fonts-dejavu-core"),
    ("prepaid-kiosk.service", "prepaid-kiosk-display.service"),
    "self-service automat that tops up prepaid energy-meter keys",
    "Takes coins, notes and (at some sites) cards, writes the credit onto the customer's\n"
    "chip key and journals every money step, synced to head office.",
)  # fmt: skip
HEADOFFICE = Package(
    "prepaid-headoffice", "headoffice", "/opt/prepaid-headoffice",
    (*PYTHON,),
    ("prepaid-headoffice.service", "prepaid-headoffice-alarms.service"),
    "head office of the prepaid top-up automats",
    "Takes the automats' journals, keeps the credit book, serves the staff console and the\n"
    "billing system, and tells people of alarms.",
)  # fmt: skip


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"])


def run(*cmd: str | Path, **kw: object) -> None:
    subprocess.run([str(c) for c in cmd], check=True, **kw)  # type: ignore[call-overload]


def put(stage: Path, path: str, text: str | bytes, mode: int = 0o644) -> None:
    target = stage / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text, "utf-8")
    target.chmod(mode)


def environment(pkg: Package, stage: Path, wheel: Path, python: str) -> None:
    """The package's Python environment, made in the stage and moved in place: its scripts
    name the installed path, not the stage."""
    venv = stage / pkg.prefix.lstrip("/") / ".venv"
    run(python, "-m", "venv", venv)
    # no cached wheel: one built earlier by another Python would carry its library path
    run(venv / "bin/python", "-m", "pip", "install", "-q", "--no-compile", "--no-cache-dir",
        f"{wheel}[{pkg.extra}]")  # fmt: skip
    run(venv / "bin/python", "-m", "pip", "uninstall", "-q", "-y", "pip", "setuptools")
    real = f"{pkg.prefix}/.venv"
    for f in (venv / "bin").iterdir():
        if f.is_symlink() or not f.is_file():
            continue
        data = f.read_bytes()
        if str(venv).encode() in data:
            f.write_bytes(data.replace(str(venv).encode(), real.encode()))
    for junk in list(venv.rglob("__pycache__")) + list(venv.rglob("direct_url.json")):
        shutil.rmtree(junk) if junk.is_dir() else junk.unlink()
    site = venv / "lib" / f"python{PY}" / "site-packages"
    if pkg is HEADOFFICE:  # the automat's own code is no part of head office
        for name in ("kiosk", "drivers"):
            shutil.rmtree(site / name)
        (venv / "bin" / "kiosk").unlink()
    for lib in site.rglob("*.so*"):
        if lib.is_file() and not lib.is_symlink():
            lib.chmod(0o644)  # a library is mapped, not run
            if not any(part.endswith(".libs") for part in lib.parts):
                # the wheels' extension modules without their symbols (as dh_strip would);
                # the libraries auditwheel bundled (*.libs) are kept byte for byte
                run("strip", "--strip-unneeded", "--remove-section=.comment",
                    "--remove-section=.note", lib)  # fmt: skip
    # what the RECORD files name stays true; nothing else in it names the stage
    left = subprocess.run(["grep", "-rlI", str(venv), str(venv)], capture_output=True,
                          text=True).stdout.split()  # fmt: skip
    for f in left:
        p = Path(f)
        p.write_text(p.read_text("utf-8").replace(str(venv), real), "utf-8")


def texts(venv: Path) -> dict[str, str]:
    """The automat's screen unit, udev rules, X and logind settings, as `kiosk install` writes
    them (kiosk/service/install.py), read by the package's own Python."""
    code = ("import json, kiosk.service.install as i; print(json.dumps({n: getattr(i, n) for n "
            "in ('DISPLAY_UNIT', 'UDEV_RULES', 'XORG_CONF', 'LOGIND_CONF')}))")
    out = subprocess.run([venv / "bin/python", "-c", code], check=True, capture_output=True,
                         text=True).stdout  # fmt: skip
    return dict(json.loads(out))


def files(pkg: Package, stage: Path, ver: str) -> None:
    venv = stage / pkg.prefix.lstrip("/") / ".venv"
    kiosk = texts(venv) if pkg is KIOSK else {}
    for unit in pkg.units:
        text = (kiosk["DISPLAY_UNIT"] if unit == "prepaid-kiosk-display.service"
                else (ROOT / "config" / "systemd" / unit).read_text("utf-8"))  # fmt: skip
        put(stage, f"/lib/systemd/system/{unit}", text)
    doc = f"/usr/share/doc/{pkg.name}"
    put(stage, f"{doc}/copyright", (HERE / "copyright").read_text("utf-8"))
    changelog = (f"{pkg.name} ({ver}) stable; urgency=medium\n\n  * Release {ver}.\n\n"
                 f" -- {MAINTAINER}  Mon, 07 Dec 2026 09:00:00 +0000\n")  # fmt: skip
    put(stage, f"{doc}/changelog.gz", gzip.compress(changelog.encode(), mtime=0))
    guide = ROOT / ("README.md" if pkg is KIOSK else "sync/README.md")
    put(stage, f"{doc}/README.md", guide.read_text("utf-8"))
    put(stage, f"/usr/share/lintian/overrides/{pkg.name}",
        (HERE / f"{pkg.name}.lintian-overrides").read_text("utf-8"))
    if pkg is KIOSK:
        put(stage, f"{doc}/drivers.md", (ROOT / "drivers/README.md").read_text("utf-8"))
        put(stage, "/lib/udev/rules.d/70-prepaid-kiosk.rules", kiosk["UDEV_RULES"])
        put(stage, "/usr/share/X11/xorg.conf.d/10-prepaid-kiosk.conf", kiosk["XORG_CONF"])
        put(stage, "/usr/lib/systemd/logind.conf.d/10-prepaid-kiosk.conf", kiosk["LOGIND_CONF"])
        (stage / "usr/bin").mkdir(parents=True, exist_ok=True)
        os.symlink(f"{pkg.prefix}/.venv/bin/kiosk", stage / "usr/bin/kiosk")
    else:
        put(stage, "/usr/sbin/prepaid-headoffice",
            f"#!/bin/sh\n# head office's admin command (sync.admin)\nexec {pkg.prefix}/.venv/bin/"
            "python -m sync.admin \"$@\"\n", 0o755)  # fmt: skip


def control(pkg: Package, stage: Path, ver: str) -> None:
    size = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file() and not f.is_symlink())
    text = (f"Package: {pkg.name}\nVersion: {ver}\nArchitecture: amd64\n"
            f"Maintainer: {MAINTAINER}\nInstalled-Size: {size // 1024}\n"
            f"Depends: {', '.join(pkg.depends)}\nSection: misc\nPriority: optional\n"
            f"Homepage: https://automats.utility.example/\n"
            f"Description: {pkg.summary}\n"
            + "".join(f" {line}\n" for line in pkg.description.splitlines()))  # fmt: skip
    put(stage, "/DEBIAN/control", text)
    for script in ("postinst", "prerm", "postrm"):
        src = HERE / f"{pkg.name}.{script}"
        if src.exists():
            put(stage, f"/DEBIAN/{script}", src.read_text("utf-8"), 0o755)


def build(pkg: Package, out: Path, *, python: str = "/usr/bin/python3", fast: bool = False,
          wheel: Path | None = None) -> Path:  # fmt: skip
    ver = version()
    with tempfile.TemporaryDirectory(prefix=f"{pkg.name}-") as tmp:
        stage = Path(tmp) / "root"
        if wheel is None:
            wheels = Path(tmp) / "wheels"
            run(python, "-m", "venv", Path(tmp) / "tool")
            run(Path(tmp) / "tool/bin/python", "-m", "pip", "wheel", "-q", "--no-deps",
                "-w", wheels, ROOT)  # fmt: skip
            wheel = next(wheels.glob("*.whl"))
        environment(pkg, stage, wheel, python)
        files(pkg, stage, ver)
        control(pkg, stage, ver)
        out.mkdir(parents=True, exist_ok=True)
        deb = out / f"{pkg.name}_{ver}_amd64.deb"
        compress = ["-Zgzip", "-z1"] if fast else ["-Zxz"]
        run("dpkg-deb", "--root-owner-group", *compress, "--build", stage, deb,
            stdout=subprocess.DEVNULL)  # fmt: skip
    return deb


def main() -> int:
    ap = argparse.ArgumentParser(description="build the Debian packages")
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    ap.add_argument("--only", choices=("kiosk", "headoffice"))
    ap.add_argument("--python", default="/usr/bin/python3", help="Debian's Python")
    ap.add_argument("--fast", action="store_true", help="gzip, quickly (tests); xz otherwise")
    args = ap.parse_args()
    for pkg in (KIOSK, HEADOFFICE):
        if args.only in (None, pkg.extra):
            print(build(pkg, args.out, python=args.python, fast=args.fast))
    return 0


if __name__ == "__main__":
    sys.exit(main())
