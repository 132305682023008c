"""The reference head-office server (FastAPI over SQLAlchemy; SQLite by default, PostgreSQL by URL).

Wire protocol v1, JSON:
  POST /v1/entries    a batch of one kiosk's journal entries; each is stored once (kiosk id +
                      sequence number); the hash chain must continue the stored one: a gap, a fork
                      or an entry whose hash does not match its content is refused (4xx, nothing
                      stored); the answer acknowledges the highest stored sequence number.
  GET  /v1/reference  what a kiosk needs offline, with an ETag (unchanged data: 304): key status,
                      open debts, the pending credits this kiosk holds (it may write them
                      offline), and the site settings (limits, fee) for this kiosk.
  POST /v1/credits/claim  a key is at this kiosk: take over its open credits fleet-wide, so
                      that exactly one kiosk writes each; answers the credits it now holds.
Pending credits come from the kiosks' own entries (held by the kiosk that took the money until
another claims them) and from the admin (`credit`); a `pending_written` entry closes one.
Kiosks authenticate with a per-kiosk bearer token and can only write as themselves.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
    update,
)

from sync.chain import GENESIS, entry_hash

metadata = MetaData()
kiosks = Table(
    "kiosks",
    metadata,
    Column("kiosk_id", String(64), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
)
entries = Table(
    "entries",
    metadata,
    Column("kiosk_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("txid", String(64)),
    Column("key", String(64)),
    Column("amount", Integer),
    Column("currency", String(3)),
    Column("data", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
ref_keys = Table(
    "ref_keys",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("contract_account", String(64)),
)
ref_debts = Table(
    "ref_debts",
    metadata,
    Column("contract_account", String(64), primary_key=True),
    Column("amount", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
)
credits = Table(
    "credits",
    metadata,
    Column("credit_id", String(64), primary_key=True),  # the transaction id written to the key
    Column("key", String(64), nullable=False, index=True),
    Column("amount", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("origin", String(64), nullable=False),  # the kiosk that took the money, or "office"
    Column("holder", String(64)),  # the one kiosk that may write it; NULL: the first to claim
    Column("written_by", String(64)),
)
settings = Table(
    "settings",
    metadata,
    Column("scope", String(64), primary_key=True),  # "*" for the fleet, or a kiosk id
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)
ref_version = Table(
    "ref_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
)

MAX_BATCH = 5000
KEY_STATUSES = ("active", "blocked", "not_activated")


class EntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seq: int = Field(ge=1)
    ts: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    kind: str = Field(min_length=1, max_length=32)
    txid: str | None = Field(default=None, max_length=64)
    key: str | None = Field(default=None, max_length=64)
    amount: int | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    data: str
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    key: str = Field(min_length=1, max_length=64)


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kiosk_id: str = Field(min_length=1, max_length=64)
    entries: list[EntryIn] = Field(max_length=MAX_BATCH)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_db(url: str) -> Engine:
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        if conn.execute(select(ref_version.c.version)).first() is None:
            conn.execute(insert(ref_version).values(id=1, version=1))
    return engine


def bump_version(conn: Any) -> None:
    conn.execute(update(ref_version).values(version=ref_version.c.version + 1))


def create_app(db_url: str) -> FastAPI:
    engine = open_db(db_url)
    app = FastAPI(title="Prepaid kiosk head office", version="1")

    def kiosk_of(authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "a bearer token is required")
        with engine.connect() as conn:
            row = conn.execute(
                select(kiosks.c.kiosk_id).where(
                    kiosks.c.token_sha256 == token_digest(authorization.removeprefix("Bearer "))
                )
            ).first()
        if row is None:
            raise HTTPException(401, "unknown token")
        return str(row.kiosk_id)

    @app.get("/v1/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post(
        "/v1/entries",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": Batch.model_json_schema()}},
                "description": "May be sent with Content-Encoding: gzip.",
            }
        },
    )
    async def upload(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        content_encoding: Annotated[str | None, Header()] = None,
    ) -> dict[str, int]:
        kiosk_id = kiosk_of(authorization)
        raw = await request.body()
        try:
            if content_encoding == "gzip":
                raw = gzip.decompress(raw)
            batch = Batch.model_validate_json(raw)
        except (OSError, EOFError) as err:
            raise HTTPException(400, f"body is not valid gzip: {err}") from None
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise HTTPException(400, f"malformed batch: {where}: {first['msg']}") from None
        if batch.kiosk_id != kiosk_id:
            raise HTTPException(403, f"this token writes as {kiosk_id}, not {batch.kiosk_id}")
        return {"acked": store(kiosk_id, batch.entries)}

    def store(kiosk_id: str, batch: list[EntryIn]) -> int:
        """Check the whole batch against the stored chain, then insert the new part at once."""
        with engine.begin() as conn:  # all or nothing
            # One upload per kiosk at a time: a second one waits here and then sees the first.
            conn.execute(
                select(kiosks.c.kiosk_id).where(kiosks.c.kiosk_id == kiosk_id).with_for_update()
            )
            last = conn.execute(
                select(entries.c.seq, entries.c.hash)
                .where(entries.c.kiosk_id == kiosk_id)
                .order_by(entries.c.seq.desc())
                .limit(1)
            ).first()
            seq, prev = (last.seq, last.hash) if last else (0, GENESIS)
            ordered = sorted(batch, key=lambda x: x.seq)
            old = [e for e in ordered if e.seq <= seq]
            if old:  # delivered before: each must be the very same entry
                stored = dict(
                    conn.execute(
                        select(entries.c.seq, entries.c.hash).where(
                            entries.c.kiosk_id == kiosk_id,
                            entries.c.seq.between(old[0].seq, old[-1].seq),
                        )
                    ).all()
                )
                for e in old:
                    if stored.get(e.seq) != e.hash:
                        raise HTTPException(
                            409, f"entry {e.seq} differs from the one stored (fork)"
                        )
            rows = []
            for e in ordered[len(old) :]:
                if e.seq != seq + 1:
                    raise HTTPException(409, f"gap: expected entry {seq + 1}, got {e.seq}")
                if e.prev_hash != prev:
                    raise HTTPException(409, f"entry {e.seq} does not link to entry {seq}")
                content = (e.seq, e.ts, e.kind, e.txid, e.key, e.amount, e.currency, e.data)
                if entry_hash(e.prev_hash, *content) != e.hash:
                    raise HTTPException(400, f"entry {e.seq}: hash does not match its content")
                try:
                    json.loads(e.data)
                except ValueError:
                    raise HTTPException(400, f"entry {e.seq}: data is not JSON") from None
                rows.append({"kiosk_id": kiosk_id, **e.model_dump()})
                seq, prev = e.seq, e.hash
            if rows:
                conn.execute(insert(entries), rows)
                if track_credits(conn, kiosk_id, rows):
                    bump_version(conn)
            return seq

    @app.post("/v1/credits/claim")
    def claim(body: ClaimIn, authorization: Annotated[str | None, Header()] = None) -> Any:
        """Take over every open credit of a key for the calling kiosk, atomically: a credit is
        then written only by this kiosk (the key's own top-up log guards the rest)."""
        kiosk_id = kiosk_of(authorization)
        with engine.begin() as conn:
            open_ = (credits.c.key == body.key) & credits.c.written_by.is_(None)
            rows = conn.execute(select(credits).where(open_).with_for_update()).all()
            if any(r.holder != kiosk_id for r in rows):
                conn.execute(update(credits).where(open_).values(holder=kiosk_id))
                bump_version(conn)
        return {"credits": [credit_out(r) for r in rows]}

    @app.get("/v1/reference")
    def reference(
        response: Response,
        authorization: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Any:
        kiosk_id = kiosk_of(authorization)
        with engine.connect() as conn:
            version = conn.execute(select(ref_version.c.version)).scalar()
            etag = f'"{version}-{kiosk_id}"'
            if if_none_match == etag:
                return Response(status_code=304, headers={"ETag": etag})
            keys = [dict(r._mapping) for r in conn.execute(select(ref_keys))]
            debts = [dict(r._mapping) for r in conn.execute(select(ref_debts))]
            held = conn.execute(
                select(credits).where(credits.c.holder == kiosk_id, credits.c.written_by.is_(None))
            ).all()
            values: dict[str, int] = {}
            for scope in ("*", kiosk_id):  # the kiosk's own value beats the fleet's
                for r in conn.execute(select(settings).where(settings.c.scope == scope)):
                    values[r.name] = r.value
        response.headers["ETag"] = etag
        return {
            "version": version,
            "keys": keys,
            "debts": debts,
            "credits": [credit_out(r) for r in held],
            "settings": values,
        }

    app.state.engine = engine
    return app


def credit_out(r: Any) -> dict[str, Any]:
    return {
        "credit_id": r.credit_id,
        "key": r.key,
        "amount": r.amount,
        "currency": r.currency,
        "origin": r.origin,
    }


def track_credits(conn: Any, kiosk_id: str, rows: list[dict[str, Any]]) -> bool:
    """Keep the fleet's credit book from the entries just stored: a kiosk's pending credit is
    held by that kiosk until another claims it; a written one is closed. True if it changed."""
    changed = False
    for r in rows:
        if r["kind"] == "pending_credit" and r["key"] and r["amount"]:
            known = conn.execute(
                select(credits.c.credit_id).where(credits.c.credit_id == r["txid"])
            ).first()
            if known is None:
                conn.execute(
                    insert(credits).values(
                        credit_id=r["txid"],
                        key=r["key"],
                        amount=r["amount"],
                        currency=r["currency"],
                        origin=kiosk_id,
                        holder=kiosk_id,
                    )
                )
                changed = True
        elif r["kind"] == "pending_written" and r["txid"]:
            done = conn.execute(
                update(credits)
                .where(credits.c.credit_id == r["txid"], credits.c.written_by.is_(None))
                .values(written_by=kiosk_id, holder=kiosk_id)
            )
            changed = changed or done.rowcount > 0
    return changed


def count_entries(engine: Engine, kiosk_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(entries).where(entries.c.kiosk_id == kiosk_id)
            ).scalar()
            or 0
        )
