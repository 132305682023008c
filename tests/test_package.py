"""The Debian packages (#38) as `./dev.sh package` builds them: what they depend on, what
they carry, and that what they carry runs. The install into a throwaway Debian root (and
lintian) runs with PACKAGE_INSTALL_TEST=1 (minutes, and the Debian mirror)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, shared_lock

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
#: what must never be on an automat or a head-office server (build and test tools)
NEVER = ("vsmartcard-vpcd", "postgresql", "chromium", "chromium-driver", "gcc", "xvfb",
         "dpkg-dev", "lintian")  # fmt: skip

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/python3").exists() or shutil.which("dpkg-deb") is None,
    reason="Debian's python3 and dpkg-deb build the packages",
)


@pytest.fixture(scope="module")
def debs() -> Iterator[dict[str, Path]]:
    """The packages, built once for the run: the two test workers may each hold tests of this
    module, and the build writes into the checkout (pip's build/ and egg-info)."""
    out = Path(os.environ["KIOSK_TEST_SHARED"]) / "dist"
    made = {"kiosk": out / f"prepaid-kiosk_{VERSION}_amd64.deb",
            "headoffice": out / f"prepaid-headoffice_{VERSION}_amd64.deb"}  # fmt: skip
    with shared_lock("package"):
        if not all(deb.exists() for deb in made.values()):
            done = subprocess.run(["/usr/bin/python3", str(ROOT / "config/debian/build.py"),
                                   "--out", str(out), "--fast"], capture_output=True, text=True,
                                  timeout=900)  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
    yield made


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def contents(deb: Path) -> set[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    return {line.split()[5].lstrip(".") for line in listing.splitlines()}


def site_packages(names: set[str], prefix: str) -> set[str]:
    base = f"{prefix}/.venv/lib/python3.11/site-packages/"
    return {n[len(base) :].split("/")[0].lower() for n in names if n.startswith(base)}


def test_the_packages_are_named_by_the_one_version_and_depend_on_runtime_packages_only(
    debs: dict[str, Path],
) -> None:
    for kind, deb in debs.items():
        assert deb.exists(), deb
        assert field(deb, "Version") == VERSION and field(deb, "Architecture") == "amd64"
        depends = {re.split(r"[ (]", d.strip())[0] for d in field(deb, "Depends").split(",")}
        assert "python3" in depends
        assert not depends & set(NEVER), (kind, depends & set(NEVER))
        assert not {d for d in depends if d.endswith("-dev")}
    kiosk_deps = field(debs["kiosk"], "Depends")
    assert "pcscd" in kiosk_deps and "libpcsclite1" in kiosk_deps and "adduser" in kiosk_deps


def test_each_package_carries_what_it_runs_and_nothing_of_the_other(
    debs: dict[str, Path],
) -> None:
    kiosk, office = contents(debs["kiosk"]), contents(debs["headoffice"])
    k = site_packages(kiosk, "/opt/prepaid-kiosk")
    h = site_packages(office, "/opt/prepaid-headoffice")
    assert {"kiosk", "drivers", "sync", "kivy", "smartcard", "serial", "escpos"} <= k
    assert not k & {"fastapi", "uvicorn", "psycopg", "psycopg_binary", "argon2", "starlette"}
    assert {"sync", "fastapi", "uvicorn", "psycopg", "argon2", "jinja2"} <= h
    assert not h & {"kivy", "smartcard", "serial", "escpos", "kiosk", "drivers"}
    assert {"/lib/systemd/system/prepaid-kiosk.service",
            "/lib/systemd/system/prepaid-kiosk-display.service",
            "/lib/udev/rules.d/70-prepaid-kiosk.rules", "/usr/bin/kiosk",
            "/usr/share/doc/prepaid-kiosk/copyright"} <= kiosk  # fmt: skip
    assert {"/lib/systemd/system/prepaid-headoffice.service",
            "/lib/systemd/system/prepaid-headoffice-alarms.service",
            "/usr/sbin/prepaid-headoffice",
            "/usr/share/doc/prepaid-headoffice/README.md"} <= office  # fmt: skip
    # no compiled caches (the package compiles them when it is installed)
    assert not [n for n in kiosk | office if "__pycache__" in n]


def test_the_maintainer_scripts_make_the_user_and_start_nothing_without_a_site(
    debs: dict[str, Path], tmp_path: Path
) -> None:
    subprocess.run(["dpkg-deb", "-e", str(debs["kiosk"]), str(tmp_path / "k")], check=True)
    postinst = (tmp_path / "k" / "postinst").read_text()
    assert "adduser --system --group" in postinst and "dialout" in postinst
    assert "[ -e /etc/prepaid-kiosk/site.toml ]" in postinst
    unit = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs["kiosk"])],
                          capture_output=True, check=True).stdout  # fmt: skip
    assert b"ConditionPathExists=/etc/prepaid-kiosk/site.toml" in unit


def test_what_the_packages_carry_runs_on_debians_python(
    debs: dict[str, Path], tmp_path: Path
) -> None:
    """Unpacked anywhere, each environment runs on /usr/bin/python3 (its interpreter is
    Debian's, found through the environment's own pyvenv.cfg): the commands print the one
    version, and the automat's and head office's modules import."""
    for kind, deb in debs.items():
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / kind)], check=True)
    # nothing in them names the folder they were built in (their scripts name /opt/...)
    built_in = subprocess.run(["grep", "-rlI", "--", "/tmp/prepaid-", str(tmp_path)],
                              capture_output=True, text=True).stdout.split()  # fmt: skip
    assert built_in == []
    assert (
        (tmp_path / "kiosk/opt/prepaid-kiosk/.venv/bin/kiosk")
        .read_text()
        .startswith("#!/opt/prepaid-kiosk/.venv/bin/python")
    )
    kiosk_py = tmp_path / "kiosk/opt/prepaid-kiosk/.venv/bin/python"
    office_py = tmp_path / "headoffice/opt/prepaid-headoffice/.venv/bin/python"
    assert os.readlink(kiosk_py).startswith(("python3", "/usr/bin/python3"))
    env = {"PATH": "/usr/bin:/bin", "KIVY_NO_ARGS": "1", "KIVY_NO_CONSOLELOG": "1",
           "HOME": str(tmp_path)}  # fmt: skip
    for py, cmd, said in ((kiosk_py, "kiosk.cli.main", f"kiosk {VERSION}"),
                          (office_py, "sync.admin", f"sync.admin {VERSION}")):  # fmt: skip
        got = subprocess.run([str(py), "-m", cmd, "--version"], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=120)  # fmt: skip
        assert got.returncode == 0 and said in got.stdout, got.stderr[-2000:]
    imports = {kiosk_py: "import kivy, smartcard.System, serial, escpos, cryptography, "
                         "sqlalchemy, kiosk.app.bootstrap, drivers.chipkey.desfire",
               office_py: "import fastapi, uvicorn, psycopg, argon2, sync.app, "
                          "sync.admin.cli"}  # fmt: skip
    for py, code in imports.items():
        got = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)  # fmt: skip
        assert got.returncode == 0, got.stderr[-2000:]
    assert sys.executable != str(kiosk_py)


@pytest.mark.skipif(
    os.environ.get("PACKAGE_INSTALL_TEST") != "1",
    reason="PACKAGE_INSTALL_TEST=1: a Debian root from the mirror, minutes",
)
def test_the_packages_install_into_a_fresh_debian_and_lintian_finds_no_error(
    debs: dict[str, Path], tmp_path: Path
) -> None:
    for deb in debs.values():
        lint = subprocess.run(["lintian", "--fail-on", "error", str(deb)], capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        assert lint.returncode == 0, lint.stdout[-3000:]
    root = tmp_path / "debian"
    subprocess.run(["mmdebstrap", "--variant=apt", "--include=systemd,ca-certificates",
                    "--skip=cleanup/apt/lists", "bookworm", str(root)], check=True,
                   capture_output=True, timeout=1800)  # fmt: skip
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")  # apt in the root fetches
    for deb in debs.values():
        shutil.copy(deb, root / "tmp")
    install = subprocess.run(["chroot", str(root), "sh", "-c",
                              "apt-get install -y -q /tmp/*.deb"], capture_output=True,
                             text=True, timeout=1800)  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    for cmd, said in ((["kiosk", "--version"], f"kiosk {VERSION}"),
                      (["prepaid-headoffice", "--version"], f"sync.admin {VERSION}")):  # fmt: skip
        got = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert got.returncode == 0 and said in got.stdout, got.stderr
    user = subprocess.run(["chroot", str(root), "id", "kiosk"], capture_output=True, text=True)
    assert user.returncode == 0 and "dialout" in user.stdout
    # what must never be on a deployed machine was not pulled in
    listed = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f=${Package}\\n"],
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert not set(listed) & set(NEVER)
