"""A kiosk's hash chain as head office checks each upload against it."""

from __future__ import annotations

from typing import Any

from sync.wire.models import EntryIn
from sync.wire.protocol import entry_hash


class ChainRefused(Exception):
    """A batch that does not continue a kiosk's stored chain: the answer's status and text,
    and the entry the alarm names."""

    def __init__(self, status: int, seq: int, text: str) -> None:
        super().__init__(text)
        self.status, self.seq, self.text = status, seq, text


def check_hash(e: EntryIn, content: tuple[Any, ...], secret: bytes | None,
               keyed_from: int | None) -> int | None:  # fmt: skip
    """Does the entry's hash verify (ChainRefused, 400, if not)? Without a chain secret for the
    kiosk: plain SHA-256. With one: keyed (HMAC) from the kiosk's first keyed entry on; before
    head office took one, plain or keyed (a journal begun before its kiosk had the secret). The
    first keyed entry, as it is after this one."""
    if secret is None:
        if entry_hash(e.prev_hash, *content) != e.hash:
            raise ChainRefused(400, e.seq, f"entry {e.seq}: hash does not match its content")
        return keyed_from
    if keyed_from is None and entry_hash(e.prev_hash, *content) == e.hash:
        return None  # (plain until the first keyed entry)
    if entry_hash(e.prev_hash, *content, secret) == e.hash:
        return keyed_from if keyed_from is not None else e.seq
    if keyed_from is not None and entry_hash(e.prev_hash, *content) == e.hash:
        raise ChainRefused(400, e.seq, f"entry {e.seq}: hash does not match its content with "
                                       f"the kiosk's chain secret: a plain hash after its keyed "
                                       f"entries began (entry {keyed_from})")  # fmt: skip
    raise ChainRefused(400, e.seq, f"entry {e.seq}: hash does not match its content (nor "
                                   "with the kiosk's chain secret)")

