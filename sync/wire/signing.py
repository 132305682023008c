"""Signed releases: a release file (a Debian package) and a detached signature made with the
utility's release key (Ed25519, `cryptography`). Automats and head office hold only the public
key; a file whose size, digest or signature does not verify is refused.

The signature file is text, one `name: value` per line; the signature covers the lines before
it exactly as written (the format's name, the file's name, version, size and SHA-256):

    prepaid-kiosk release signature 1
    file: prepaid-kiosk_1.2.0_amd64.deb
    version: 1.2.0
    size: 48213504
    sha256: 9f2c...
    signature: <base64 of the 64-byte Ed25519 signature>
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "prepaid-kiosk release signature 1"
#: a version as releases name it (what `X-Kiosk-Version` carries)
VERSION = re.compile(r"[0-9][0-9A-Za-z.+~-]{0,39}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")
CHUNK = 1 << 20


class BadRelease(ValueError):
    """A release or signature that does not verify, and why."""


@dataclass(frozen=True)
class Signature:
    file: str
    version: str
    size: int
    sha256: str
    signature: bytes

    def signed_text(self) -> str:
        return (f"{FORMAT}\nfile: {self.file}\nversion: {self.version}\nsize: {self.size}\n"
                f"sha256: {self.sha256}\n")  # fmt: skip

    def text(self) -> str:
        return self.signed_text() + f"signature: {base64.b64encode(self.signature).decode()}\n"


def digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in pieces."""
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def public_key_text(key: Ed25519PublicKey) -> str:
    """The public key as the secrets file and head office hold it: base64 of its 32 bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        if len(raw) != 32:
            raise ValueError
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise BadRelease("the release public key is not 32 bytes in base64") from None


def make_key(private: Path) -> str:
    """A new release key pair: the private key into `private` (a new file, PEM, owner only);
    the public key returned as text."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_key_text(key.public_key())


def sign(path: Path, version: str, private: Path) -> Signature:
    if not VERSION.fullmatch(version):
        raise BadRelease(f"version {version!r} is not a release version (like 1.2.0)")
    try:
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise BadRelease(f"{private}: not a release private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadRelease(f"{private}: not an Ed25519 key")
    size, sha = digest(path)
    unsigned = Signature(path.name, version, size, sha, b"")
    return Signature(path.name, version, size, sha, key.sign(unsigned.signed_text().encode()))


def parse(text: str) -> Signature:
    lines = text.splitlines()
    if not lines or lines[0] != FORMAT:
        raise BadRelease(f"not a release signature (the first line is not {FORMAT!r})")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(": ")
        if not sep or name in fields:
            raise BadRelease(f"signature line {line[:60]!r} is not one 'name: value'")
        fields[name] = value
    if set(fields) != {"file", "version", "size", "sha256", "signature"}:
        raise BadRelease("the signature needs file, version, size, sha256 and signature")
    if not (FILE_NAME.fullmatch(fields["file"]) and VERSION.fullmatch(fields["version"])
            and fields["size"].isdigit() and re.fullmatch(r"[0-9a-f]{64}", fields["sha256"])):
        raise BadRelease("the signature's file, version, size or sha256 is malformed")
    try:
        raw = base64.b64decode(fields["signature"], validate=True)
    except ValueError:
        raise BadRelease("the signature is not base64") from None
    return Signature(fields["file"], fields["version"], int(fields["size"]), fields["sha256"],
                     raw)  # fmt: skip


def check(sig: Signature, key: Ed25519PublicKey) -> None:
    """The signature made with the release key over what it says (BadRelease if not)."""
    try:
        key.verify(sig.signature, sig.signed_text().encode())
    except InvalidSignature:
        raise BadRelease(f"the signature of {sig.file} {sig.version} was not made with the "
                         "utility's release key") from None


def verify(path: Path, sig: Signature, key: Ed25519PublicKey) -> None:
    """The file is the one the signature names, byte for byte, signed with the release key."""
    check(sig, key)
    size, sha = digest(path)
    if size != sig.size:
        raise BadRelease(f"{path.name}: {size} bytes, the signature says {sig.size}")
    if sha != sig.sha256:
        raise BadRelease(f"{path.name}: its SHA-256 is not the one signed (altered?)")
