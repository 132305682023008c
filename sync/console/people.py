"""The staff console's people: names, roles and Argon2id password hashes."""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from sqlalchemy import Engine, delete, insert

from sync.store.audit import write as _audit
from sync.store.tables import staff

ROLES = ("auditor", "operator", "admin")

hasher = PasswordHasher()  # Argon2id with the library's current parameters


@functools.cache
def _dummy_hash() -> str:
    """A hash of no one's password, with the same parameters: an unknown name's login verifies
    against it and takes as long as a known one's (no telling names apart by the time)."""
    return hasher.hash(secrets.token_urlsafe(16))

def add_staff(engine: Engine, name: str, role: str, password: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < 10:
        raise ValueError("a password has at least 10 characters")
    with engine.begin() as conn:
        conn.execute(delete(staff).where(staff.c.name == name))
        conn.execute(insert(staff).values(name=name, role=role,
                                          password_hash=hasher.hash(password)))  # fmt: skip
        _audit(conn, "sync.admin", "staff_added", f"{name} as {role}")


