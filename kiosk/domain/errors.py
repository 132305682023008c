"""Exception root of the kiosk package."""

from __future__ import annotations

from typing import Any


class KioskError(Exception):
    """Root of every error the kiosk package raises on purpose."""


class ConfigError(KioskError):
    """A site file is missing, malformed or invalid; names the file and each problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class MoneyError(KioskError, ValueError):
    """An amount that is not an exact integer of minor units in a known currency."""


class InvalidTransition(KioskError):
    """An event arrived in a state whose transition table has no entry for it."""


class UserFacingError(KioskError):
    """A refused customer intent; the session is unchanged and the screen shows `message_key`."""

    def __init__(self, message_key: str, **params: Any) -> None:
        self.message_key = message_key
        self.params = params
        detail = ", ".join(f"{k}={v}" for k, v in params.items())
        super().__init__(f"{message_key}" + (f" ({detail})" if detail else ""))


class JournalError(KioskError):
    """The journal cannot be opened or written."""


class JournalWriteError(JournalError):
    """An append did not commit: nothing of it is in the journal."""


class JournalFull(JournalWriteError):
    """An append did not commit because the journal's disk is full."""


class ChainBroken(JournalError):
    """The hash chain of the journal does not verify; names the first bad entry."""

    def __init__(self, seq: int | None, reason: str, where: str | None = None) -> None:
        self.seq = seq
        self.reason = reason
        where = where or (f"entry {seq}" if seq is not None else "journal head")
        super().__init__(f"{where}: {reason}")
