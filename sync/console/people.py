"""The staff console's people: names, roles and Argon2id password hashes."""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher

ROLES = ("auditor", "operator", "admin")

hasher = PasswordHasher()  # Argon2id with the library's current parameters


@functools.cache
def _dummy_hash() -> str:
    """A hash of no one's password, with the same parameters: an unknown name's login verifies
    against it and takes as long as a known one's (no telling names apart by the time)."""
    return hasher.hash(secrets.token_urlsafe(16))
