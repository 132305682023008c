"""The journal's hash chain, shared by the kiosk (which writes it) and head office (which checks
it): each entry's SHA-256 covers the previous entry's hash and every column of the entry."""

from __future__ import annotations

import hashlib
import json

GENESIS = "0" * 64


def entry_hash(
    prev_hash: str,
    seq: int,
    ts: str,
    kind: str,
    txid: str | None,
    key: str | None,
    amount: int | None,
    currency: str | None,
    data: str,
) -> str:
    """SHA-256 over the previous hash and the canonical form of every column of the entry."""
    body = json.dumps(
        [prev_hash, seq, ts, kind, txid, key, amount, currency, data],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()
