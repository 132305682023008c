"""Signed releases (#38): the utility's release key signs a release file; a file or signature
altered in any way is refused with the reason, and nothing else is taken for it."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import pytest

from sync.admin import main as admin_main
from sync.wire import signing


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line, run in this process (its start-up, importing head office, is most of
    a process's time: test_operator.py runs it as a process)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = admin_main(list(args))
        except SystemExit as stop:  # argparse refusing an argument
            code = int(stop.code or 0)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, str, Path]:
    private = tmp_path / "release.key"
    made = admin("release", "keygen", "--private", str(private))
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    release = tmp_path / "prepaid-kiosk_1.2.0_amd64.deb"
    release.write_bytes(b"!<arch>\n" + bytes(range(256)) * 400)
    done = admin("release", "sign", str(release), "--version", "1.2.0", "--key", str(private))
    assert done.returncode == 0, done.stderr
    return release, Path(str(release) + ".sig"), public, private


def verify(release: Path, sig: Path, public: str) -> subprocess.CompletedProcess[str]:
    return admin("release", "verify", str(release), "--signature", str(sig), "--public-key",
                 public)  # fmt: skip


def test_a_signed_release_verifies(signed: tuple[Path, Path, str, Path]) -> None:
    release, sig, public, _ = signed
    done = verify(release, sig, public)
    assert done.returncode == 0 and "release 1.2.0, signature good" in done.stdout
    said = signing.parse(sig.read_text())
    assert (said.file, said.version, said.size) == (release.name, "1.2.0", 102408)


def test_an_altered_file_is_refused(signed: tuple[Path, Path, str, Path]) -> None:
    release, sig, public, _ = signed
    data = bytearray(release.read_bytes())
    data[5000] ^= 1
    release.write_bytes(bytes(data))
    done = verify(release, sig, public)
    assert done.returncode == 2 and "SHA-256 is not the one signed" in done.stderr
    release.write_bytes(bytes(data) + b"x")
    assert "102409 bytes, the signature says 102408" in verify(release, sig, public).stderr


def test_an_altered_signature_or_another_key_is_refused(
    signed: tuple[Path, Path, str, Path], tmp_path: Path
) -> None:
    release, sig, public, _ = signed
    text = sig.read_text()
    sig.write_text(text.replace("version: 1.2.0", "version: 1.3.0"))  # said to be another one
    done = verify(release, sig, public)
    assert done.returncode == 2 and "not made with the utility's release key" in done.stderr
    sig.write_text(text)
    other = admin("release", "keygen", "--private", str(tmp_path / "other.key")).stdout.strip()
    assert "not made with the utility's release key" in verify(release, sig, other).stderr
    sig.write_text("hello\n")
    assert "not a release signature" in verify(release, sig, public).stderr
    sig.write_text(text)
    assert "not 32 bytes in base64" in verify(release, Path(str(release) + ".sig"),
                                              "abc").stderr  # fmt: skip


def test_keygen_never_overwrites_a_key(signed: tuple[Path, Path, str, Path]) -> None:
    _, _, _, private = signed
    before = private.read_bytes()
    done = admin("release", "keygen", "--private", str(private))
    assert done.returncode == 2 and "File exists" in done.stderr
    assert private.read_bytes() == before
