"""Release files for the tests: real Debian packages made with dpkg-deb, signed with a key of
the test's own."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sync.wire import signing


def build_deb(out: Path, version: str, tree: Path) -> Path:
    """A Debian package of `tree` (its files under /) as `prepaid-kiosk_VERSION_amd64.deb`."""
    control = tree / "DEBIAN" / "control"
    control.parent.mkdir(parents=True, exist_ok=True)
    control.write_text(f"Package: prepaid-kiosk\nVersion: {version}\nArchitecture: amd64\n"
                       "Maintainer: Test <test@example.org>\nDescription: test release\n",
                       "utf-8")  # fmt: skip
    deb = out / f"prepaid-kiosk_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree),
                    str(deb)], check=True, capture_output=True)  # fmt: skip
    return deb


def sign(deb: Path, version: str, key: Path) -> Path:
    sig = Path(f"{deb}.sig")
    sig.write_text(signing.sign(deb, version, key).text(), "utf-8")
    return sig
