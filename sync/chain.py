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
    body = _canonical([prev_hash, seq, ts, kind, txid, key, amount, currency, data])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


#: json.dumps(..., separators=(",", ":"), ensure_ascii=False), with its encoder made once
#: (json.dumps builds a new one for every call with arguments: most of a verify's time)
_canonical = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
