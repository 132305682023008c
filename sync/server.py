"""The reference head-office server (FastAPI over SQLAlchemy; SQLite by default, PostgreSQL by URL).

Wire protocol v1, JSON:
  POST /v1/entries    a batch of one kiosk's journal entries; each is stored once (kiosk id +
                      sequence number); the hash chain must continue the stored one: a gap or a
                      fork is refused (409, nothing stored) and an entry whose hash does not
                      match its content, with the kiosk's chain secret once its entries are
                      keyed, too (400); each raises an alarm for the operator, once however
                      often the kiosk retries it. An entry no kiosk journals is refused too
                      (unknown kind, an amount signed as its kind does not allow, an unknown
                      currency, a time that is not one, `data` that is not a JSON object: 422;
                      a time before 2000-01-01 or more than 24 h ahead of head office's clock:
                      422 and an alarm for the operator); a body over 4 MiB, or over
                      16 MiB unpacked, gets 413. An empty batch asks what head office holds.
                      The answer acknowledges the highest stored sequence number with its hash
                      (the kiosk's anchor), and lists under `refused` the entries the credit
                      book did not act on (`track_credits`).
  GET  /v1/reference  what a kiosk needs offline, with an ETag (unchanged data: 304): key status,
                      open debts, the pending credits this kiosk holds (it may write them
                      offline), and the site settings (limits, fee) for this kiosk.
  POST /v1/credits/claim  a key is at this kiosk: take over its free open credits under a
                      lease, so that exactly one kiosk writes each; answers the credits granted.
Pending credits come from the kiosks' own entries (held by the kiosk that took the money until
another claims them) and from the admin (`credit`); a `pending_written` entry closes one.
Kiosks authenticate with a per-kiosk bearer token and can only write as themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
import zlib
from collections import deque
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    false,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from starlette.concurrency import run_in_threadpool

from sync import billing, schema
from sync.protocol import EXPONENT, GENESIS, SIGNS, PayloadError, entry_hash, payload
from sync.schema import History

log = logging.getLogger(__name__)

metadata = MetaData()
kiosks = Table(
    "kiosks",
    metadata,
    Column("kiosk_id", String(64), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("last_contact", String(32)),  # head office's clock, UTC, at its last request
    # what it had not delivered when it asked (X-Kiosk-Backlog), and the time of the oldest
    Column("backlog", Integer),
    Column("backlog_since", String(32)),
    # the kiosk's chain secret (64 hex digits; `sync.admin register` makes it): its entries
    # are hashed with it from `keyed_from` on, the first keyed entry head office took (NULL:
    # none yet; plain entries before it, none after it). NULL secret: plain SHA-256 only.
    Column("chain_secret", String(64)),
    Column("keyed_from", Integer),
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
    Column("reason", Text, nullable=False, default=""),  # a KeyReason code, or ""
    Column("note", Text, nullable=False, default=""),  # the staff's, never sent to a kiosk
    Column("contract_account", String(64)),
    # the reference version that last changed it (NULL until `bump_version` stamps it)
    Column("changed", BigInteger, index=True),
)
ref_debts = Table(
    "ref_debts",
    metadata,
    Column("contract_account", String(64), primary_key=True),
    Column("amount", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("changed", BigInteger, index=True),
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
    # head office's admin gave it to one kiosk: no claim moves it
    Column("pinned", Boolean, nullable=False, default=False, server_default=false()),
    # a claim's grant: the holder writes it until then (unix seconds); NULL: no lease running
    Column("lease_until", Integer),
    Column("claim_id", String(32)),  # the claim that granted it last
    # the key's write number when the credit became owed: it cannot be on the key at or below
    # it (the kiosk's own count from the transaction; an office credit's, from its first grant)
    Column("bound", Integer),
    # the write number its writer reported it as: a key that has fewer writes, or another
    # transaction at that number, says the report was false
    Column("write_no", Integer),
    # False: closed by a kiosk that did not take the money, and not yet seen at `write_no` in
    # the key's log by another kiosk (the next claim of the key asks for that log)
    Column("confirmed", Boolean, nullable=False, default=True, server_default=true()),
)
#: every kiosk a credit was ever given to write (its origin, every claim's grant): only those
#: may say they wrote it
credit_grants = Table(
    "credit_grants",
    metadata,
    Column("credit_id", String(64), primary_key=True),
    Column("kiosk_id", String(64), primary_key=True),
)
#: every write a kiosk reported on a key, by the key's write number (the first report of a
#: number stands; another transaction reported at the same number raises an alarm)
key_writes = Table(
    "key_writes",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("write_no", Integer, primary_key=True, autoincrement=False),
    Column("txid", String(64), nullable=False),
    Column("kiosk_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
)
alarms = Table(
    "alarms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", String(32), nullable=False),
    Column("kiosk_id", String(64), nullable=False),
    Column("seq", Integer),
    Column("text", Text, nullable=False),
)
#: the billing files' rows already taken (sync/billing.py): a row imported again changes nothing
imported = Table(
    "imported",
    metadata,
    # SHA-256 of "ref:" and the billing system's id of the row, or of the file's SHA-256 and line
    Column("identity", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("ref", String(64)),  # the billing system's id of the row, if its file carries one
    Column("content", String(64), nullable=False),  # SHA-256 of the row as it was taken
    Column("credit_id", String(64)),  # the credit it made
    Column("source", Text, nullable=False),  # the file's name and the line
    Column("ts", String(32), nullable=False),  # head office's clock, UTC
)
settings = Table(
    "settings",
    metadata,
    Column("scope", String(64), primary_key=True),  # "*" for the fleet, or a kiosk id
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)
#: the utility's systems that read from head office, each with its own token (not a kiosk's)
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # "billing": payments out
)
#: the staff console's people (sync/console.py): Argon2id password hashes, roles
staff = Table(
    "staff",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),  # operator, auditor, admin
)
staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("expires", Integer, nullable=False),  # unix seconds
)
#: every change made in the console, every refusal and every login
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", String(32), nullable=False),
    Column("who", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("detail", Text, nullable=False),
)
ref_version = Table(
    "ref_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

MAX_BATCH = 5000
KEY_STATUSES = ("active", "blocked", "not_activated")
#: an upload's body as sent and once unpacked (413 beyond): a full batch is about 2 MB of JSON
MAX_BODY = 4 * 1024 * 1024
MAX_UNPACKED = 16 * 1024 * 1024
MAX_DATA = 16 * 1024  # one entry's `data`
#: the most one entry moves (minor units): far above any top-up, far below overflow anywhere
MAX_AMOUNT = 100_000_000
CURRENCIES = tuple(EXPONENT)
#: how long a claim lets one kiosk write a key's credits before another may claim them
LEASE_SECONDS = 600
#: the kinds a kiosk journals, and the sign their amount takes (sync/protocol.py)
KINDS: dict[str, str | None] = {str(kind): sign for kind, sign in SIGNS.items()}
#: what a customer paid for a transaction (a pending credit of it must not exceed it)
PAID_KINDS = ("cash_in", "card_approved")
#: the journal's time format (UTC)
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
#: an entry's time is refused before this, or further than AHEAD past head office's clock (a
#: kiosk's clock gone wrong; 9999-12-31 would break every page, report and export)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
AHEAD = timedelta(hours=24)


class EntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seq: int = Field(ge=1)
    ts: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    kind: str = Field(min_length=1, max_length=32)
    txid: str | None = Field(default=None, max_length=64)
    key: str | None = Field(default=None, max_length=64)
    amount: int | None = Field(default=None, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    data: str = Field(max_length=MAX_DATA)
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")

    def meaning(self) -> str | None:
        """What is wrong with this entry beyond its shape (None: nothing): a kind no kiosk
        journals, an amount signed as its kind does not allow, a currency no kiosk takes, a
        time that is not one, `data` that is not a JSON object."""
        sign = KINDS.get(self.kind, "?")
        if sign == "?":
            return f"unknown kind {self.kind!r}"
        if self.amount is None:
            if sign in ("+", "0+") and self.kind not in ("split", "pending_released"):
                return f"a {self.kind} entry carries an amount"
        elif sign is None:
            return f"a {self.kind} entry carries no amount"
        elif self.amount < 0 or (sign == "+" and self.amount == 0):
            return f"amount {self.amount} is not allowed for {self.kind}"
        if self.amount is not None and self.currency not in CURRENCIES:
            return f"currency {self.currency!r} is not one of {', '.join(CURRENCIES)}"
        if self.amount is None and self.currency is not None:
            return "a currency without an amount"
        try:
            datetime.strptime(self.ts, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            return f"time {self.ts!r} is not a real time"
        try:
            data = json.loads(self.data)
        except ValueError:
            return "data is not JSON"
        if not isinstance(data, dict):
            return "data is not a JSON object"
        try:
            payload(self.kind, data)  # read as written by any kiosk version: extra fields kept
        except PayloadError as err:
            return str(err)
        return None


def journal_time(text: str) -> bool:
    """Whether `text` is a real UTC time in the journal's format, within the times head
    office takes (what a kiosk says of its backlog is stored only then)."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text):
        return False
    try:
        return time_wrong(text, datetime.now(UTC)) is None
    except ValueError:  # 2026-02-30, 25:00
        return False


def time_wrong(ts: str, now: datetime) -> str | None:
    """Why a journal time (of a well-formed entry) is not one head office takes: before
    2000-01-01 or more than 24 h ahead of its clock `now` (None: it takes it)."""
    when = datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC)
    if when < EARLIEST:
        return f"time {ts} is before 2000-01-01"
    if when > now + AHEAD:
        return f"time {ts} is more than 24 h ahead of head office's clock"
    return None


class LogRecord(BaseModel):
    """One record of a key's top-up log as a kiosk read it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    no: int = Field(ge=1, le=2**31 - 1)  # the key's write number
    txid: str = Field(min_length=1, max_length=64)


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    key: str = Field(min_length=1, max_length=64)
    #: the key's write count as the kiosk read it at insertion: the bound of an office credit
    #: granted for the first time, and the check of the writes reported on the key
    written: int | None = Field(default=None, ge=0, le=2**31 - 1)
    #: the key's log as read at this kiosk, (write number, transaction id) each, when head
    #: office asked for it (`check` in the answer): closes made elsewhere are checked on it
    log: list[LogRecord] | None = Field(default=None, max_length=64)


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kiosk_id: str = Field(min_length=1, max_length=64)
    entries: list[EntryIn] = Field(max_length=MAX_BATCH)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: head office's migrations (sync/migrations); a database of the release before schema
#: versions is told by its `entries` table
HISTORY = History(Path(__file__).parent / "migrations", "entries", "0001")


def open_db(url: str) -> Engine:
    """The database, at this release's schema: a new (empty) one is made so; one at an older
    revision raises OutdatedSchema (`sync.admin --db URL upgrade` brings it up to date)."""
    engine = create_engine(url)
    try:
        if schema.state(engine, HISTORY) == "empty":
            schema.upgrade(engine, HISTORY)  # a new head office
        schema.check(engine, HISTORY, f"head office's database {engine.url!r}")
    except BaseException:
        engine.dispose()
        raise
    with engine.begin() as conn:
        if conn.execute(select(ref_version.c.version)).first() is None:
            conn.execute(insert(ref_version).values(id=1, version=1))
    return engine


def bump_version(conn: Any) -> int:
    """A new reference version, and every key or debt row written since the last one (its
    `changed` still NULL) stamped with it: kiosks download only what changed after theirs.
    Versions count on from the clock (milliseconds), not from the last one alone: a database
    restored from an older backup never gives again a version it gave before, so a kiosk that
    holds a version from before the restore is neither told "unchanged" nor sent a change list
    that misses what changed since the restore."""
    now_ms = int(time.time() * 1000)
    nxt = ref_version.c.version + 1
    conn.execute(update(ref_version).values(version=case((nxt > now_ms, nxt), else_=now_ms)))
    version = int(conn.execute(select(ref_version.c.version)).scalar_one())
    for table in (ref_keys, ref_debts):
        conn.execute(update(table).where(table.c.changed.is_(None)).values(changed=version))
    return version


class Doorman:
    """Failures of one kind (`what`: failed tokens, or failed console logins: each has its
    own), per address: after `limit` within `window` seconds, `check` answers that address
    429 (with Retry-After) until the window has passed."""

    def __init__(self, limit: int = 10, window: float = 60.0, what: str = "tokens") -> None:
        self.limit, self.window, self.what = limit, window, what
        self._failed: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, who: str, now: float) -> deque[float]:
        seen = self._failed.setdefault(who, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        return seen

    def check(self, who: str) -> None:
        now = time.monotonic()
        with self._lock:
            seen = self._recent(who, now)
            if len(seen) >= self.limit:
                wait = max(1, int(seen[0] + self.window - now + 1))
                raise HTTPException(429, f"too many failed {self.what} from this address",
                                    headers={"Retry-After": str(wait)})  # fmt: skip

    def failed(self, who: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(who, now).append(now)
            if len(self._failed) > 10_000:  # addresses that stopped trying: let them go
                for gone in [k for k, v in self._failed.items() if not v][:5000]:
                    del self._failed[gone]


def create_app(db_url: str, *, docs: bool = False, lease_seconds: int = LEASE_SECONDS) -> FastAPI:
    """The head-office app. `docs`: serve /docs and /openapi.json (off unless asked for:
    the protocol is published in sync/openapi.json)."""
    engine = open_db(db_url)
    app = FastAPI(title="Prepaid kiosk head office", version="1",
                  docs_url="/docs" if docs else None, redoc_url=None,
                  openapi_url="/openapi.json" if docs else None)  # fmt: skip
    doorman = Doorman()

    def bearer(authorization: str | None, request: Request, table: Table, *cols: Any,
               required: str) -> Any:  # fmt: skip
        """The row of `table` whose token the request bears (`cols` of it); 401 with
        `required` otherwise, counted against the client's address (429 after too many). A
        token that is right is taken whatever else came from its address (kiosks behind one
        NAT, a console whose passwords are being guessed): a token is 192 random bits, so
        the count slows no guessing that could succeed; it keeps the noise down."""
        who = request.client.host if request.client else "?"
        header = authorization or ""
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        row = None
        if token is not None:
            digest = token_digest(token)
            with engine.connect() as conn:
                row = conn.execute(select(*cols).where(table.c.token_sha256 == digest)).first()
        if row is not None:
            return row
        doorman.check(who)  # too many failed already: 429
        doorman.failed(who)
        raise HTTPException(401, required if token is None else f"unknown token: {required}")

    def kiosk_of(authorization: str | None, request: Request) -> str:
        row = bearer(authorization, request, kiosks, kiosks.c.kiosk_id,
                     required="a kiosk's bearer token is required")  # fmt: skip
        seen: dict[str, Any] = {"last_contact": datetime.now(UTC).isoformat()}
        said = request.headers.get("x-kiosk-backlog", "")
        if said.isdigit():  # the fleet page's backlog and its age, as the kiosk says them
            since = request.headers.get("x-kiosk-backlog-since", "")
            known = int(said) > 0 and journal_time(since)  # anything else: not stored
            seen |= {"backlog": min(int(said), 2**31 - 1),
                     "backlog_since": since if known else None}  # fmt: skip
        with engine.begin() as conn:
            conn.execute(update(kiosks).where(kiosks.c.kiosk_id == row.kiosk_id).values(**seen))
        return str(row.kiosk_id)

    def system_of(authorization: str | None, request: Request, role: str) -> str:
        """The name of the utility's system behind a bearer token of `role`."""
        row = bearer(authorization, request, api_tokens, api_tokens.c.name, api_tokens.c.role,
                     required="a billing system's bearer token is required")  # fmt: skip
        if row.role != role:
            raise HTTPException(403, f"this token is for {row.role}, not {role}")
        return str(row.name)

    @app.get("/v1/billing/payments")
    def billing_payments(
        request: Request,
        since: date,
        until: date | None = None,
        format: Literal["csv", "json"] = "csv",  # noqa: A002 (the query parameter's name)
        amounts: Literal["minor", "text"] = "minor",
        tz: str = "Europe/Berlin",
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Every payment of those local days for the billing system (as `sync.admin export
        payments`)."""
        system = system_of(authorization, request, "billing")
        if until is not None and until < since:
            raise HTTPException(422, "until is before since")
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise HTTPException(422, f"unknown time zone {tz!r}") from None
        body = billing.payments_text(engine, since, until, zone, format, amounts)
        log.info("billing: %s fetched payments %s..%s", system, since, until or since)
        media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
        return Response(body, media_type=media)

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
    ) -> dict[str, Any]:
        kiosk_id = await run_in_threadpool(kiosk_of, authorization, request)
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY:
            raise HTTPException(413, f"body over {MAX_BODY} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise HTTPException(413, f"body over {MAX_BODY} bytes")
        # unpacking, checking and storing block: off the event loop
        return await run_in_threadpool(take_batch, kiosk_id, bytes(raw), content_encoding)

    def take_batch(kiosk_id: str, raw: bytes, encoding: str | None) -> dict[str, Any]:
        if encoding == "gzip":
            raw = gunzip_capped(raw, MAX_UNPACKED)
        try:
            batch = Batch.model_validate_json(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise HTTPException(400, f"malformed batch: {where}: {first['msg']}") from None
        if batch.kiosk_id != kiosk_id:
            raise HTTPException(403, f"this token writes as {kiosk_id}, not {batch.kiosk_id}")
        for e in batch.entries:
            wrong = e.meaning()
            if wrong:
                raise HTTPException(422, f"entry {e.seq}: {wrong}")
        now = datetime.now(UTC)
        for e in batch.entries:
            wrong = time_wrong(e.ts, now)
            if wrong:  # a kiosk's clock gone wrong: the operator hears of it (once per entry)
                with engine.begin() as conn:
                    alarm_once(conn, kiosk_id, e.seq, f"entry refused: {wrong}")
                raise HTTPException(422, f"entry {e.seq}: {wrong}")
        refused: list[dict[str, Any]] = []
        acked, last_hash = store(kiosk_id, batch.entries, refused)
        answer: dict[str, Any] = {"acked": acked, "hash": last_hash}
        return {**answer, "refused": refused} if refused else answer

    def store(
        kiosk_id: str, batch: list[EntryIn], refused: list[dict[str, Any]]
    ) -> tuple[int, str]:
        """Check the whole batch against the stored chain, then insert the new part at once.
        What the credit book refuses of it (`track_credits`) is listed in `refused`. A batch
        that does not continue the chain (a fork, a gap, an entry whose hash does not verify)
        stores nothing and raises an alarm naming the kiosk and the entry, once however often
        the kiosk sends it again."""
        try:
            return store_chain(kiosk_id, batch, refused)
        except ChainRefused as no:
            with engine.begin() as conn:
                alarm_once(conn, kiosk_id, no.seq, f"upload refused: {no.text}")
            raise HTTPException(no.status, no.text) from None

    def store_chain(
        kiosk_id: str, batch: list[EntryIn], refused: list[dict[str, Any]]
    ) -> tuple[int, str]:
        with engine.begin() as conn:  # all or nothing
            # One upload per kiosk at a time: a second one waits here and then sees the first.
            kiosk = conn.execute(
                select(kiosks.c.chain_secret, kiosks.c.keyed_from)
                .where(kiosks.c.kiosk_id == kiosk_id).with_for_update()
            ).first()  # fmt: skip
            secret = bytes.fromhex(kiosk.chain_secret) if kiosk and kiosk.chain_secret else None
            keyed_from = kiosk.keyed_from if kiosk else None
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
                        raise ChainRefused(
                            409, e.seq, f"entry {e.seq} differs from the one stored (fork)"
                        )
            rows = []
            was_keyed = keyed_from
            for e in ordered[len(old) :]:
                if e.seq != seq + 1:
                    raise ChainRefused(409, seq + 1,
                                       f"gap: expected entry {seq + 1}, got {e.seq}")  # fmt: skip
                if e.prev_hash != prev:
                    raise ChainRefused(409, e.seq, f"entry {e.seq} does not link to entry {seq}")
                content = (e.seq, e.ts, e.kind, e.txid, e.key, e.amount, e.currency, e.data)
                keyed_from = check_hash(e, content, secret, keyed_from)
                rows.append({"kiosk_id": kiosk_id, **e.model_dump()})
                seq, prev = e.seq, e.hash
            if rows:
                conn.execute(insert(entries), rows)
                if keyed_from != was_keyed:  # its first keyed entry: no plain one after it
                    conn.execute(update(kiosks).where(kiosks.c.kiosk_id == kiosk_id)
                                 .values(keyed_from=keyed_from))  # fmt: skip
                if track_credits(conn, kiosk_id, rows, refused):
                    bump_version(conn)
            return seq, prev

    @app.post("/v1/credits/claim")
    def claim(
        body: ClaimIn, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        """Grant the calling kiosk the key's open credits that are free, under a lease: those
        it holds already, those no lease holds (or whose lease ended), never one pinned to
        another kiosk. One UPDATE decides it, so two kiosks claiming at the same moment never
        both get a credit (on SQLite, where writers queue, and on PostgreSQL, which looks at
        the row again after the first claim's commit). The key's own top-up log guards the
        rest."""
        kiosk_id = kiosk_of(authorization, request)
        now = int(time.time())
        claim_id = secrets.token_hex(8)
        free = (
            (credits.c.key == body.key)
            & credits.c.written_by.is_(None)
            & ((credits.c.pinned.is_(False)) | (credits.c.holder == kiosk_id))
            & (
                (credits.c.holder == kiosk_id)
                | credits.c.holder.is_(None)
                | credits.c.lease_until.is_(None)
                | (credits.c.lease_until < now)
            )
        )
        refused: list[dict[str, Any]] = []
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":  # the write lock first (pysqlite begins lazily)
                conn.execute(update(credits).where(false()).values(claim_id=None))
            changed = False
            if body.written is not None:  # what the key says undoes what it contradicts
                changed = reopen_contradicted(conn, kiosk_id, body.key, body.written, refused)
                if body.log is not None:
                    shown = [(r.no, r.txid) for r in body.log]
                    changed = check_closes(conn, kiosk_id, body.key, body.written, shown,
                                           refused) or changed  # fmt: skip
            moved = conn.execute(
                update(credits)
                .where(free)
                .values(holder=kiosk_id, lease_until=now + lease_seconds, claim_id=claim_id)
            )
            if body.written is not None:
                # An office credit is not on the key below the count any claim says: its bound
                # is the lowest count said (a claim may lower it, never raise it: a kiosk that
                # says a count the key never had would let a write pass as not being it).
                conn.execute(
                    update(credits)
                    .where(credits.c.key == body.key, credits.c.origin == "office",
                           credits.c.written_by.is_(None),
                           credits.c.bound.is_(None) | (credits.c.bound > body.written))
                    .values(bound=body.written)
                )  # fmt: skip
            rows = conn.execute(select(credits).where(credits.c.claim_id == claim_id)).all()
            grant(conn, [r.credit_id for r in rows], kiosk_id)
            check = [] if body.log is not None else unconfirmed(conn, kiosk_id, body.key)
            if moved.rowcount or changed:
                bump_version(conn)
        if check:  # closes made elsewhere that the key has not shown: its log, please
            return {"credits": [credit_out(r) for r in rows], "check": check}
        return {"credits": [credit_out(r) for r in rows]}

    @app.get("/v1/reference")
    def reference(
        request: Request,
        response: Response,
        authorization: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
        since: int | None = None,
    ) -> Any:
        kiosk_id = kiosk_of(authorization, request)
        with engine.connect() as conn:
            version = conn.execute(select(ref_version.c.version)).scalar()
            etag = f'"{version}-{kiosk_id}"'
            if if_none_match == etag:
                return Response(status_code=304, headers={"ETag": etag})
            # `since`: the version the kiosk holds; only the keys and debts changed after it
            # (credits and settings are few and always whole). A version head office never
            # had (a database restored from an older backup) gets everything.
            delta = since is not None and 0 <= since <= (version or 0)
            q_keys, q_debts = select(ref_keys), select(ref_debts)
            if delta:
                q_keys = q_keys.where(ref_keys.c.changed > since)
                q_debts = q_debts.where(ref_debts.c.changed > since)
            cols = ("serial", "status", "reason", "contract_account")
            keys = [{c: r._mapping[c] for c in cols} for r in conn.execute(q_keys)]
            debts = [{c: r._mapping[c] for c in ("contract_account", "amount", "currency")}
                     for r in conn.execute(q_debts)]  # fmt: skip
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
            "since": since if delta else None,  # None: the whole list
            "keys": keys,
            "debts": debts,
            "credits": [credit_out(r) for r in held],
            "settings": values,
        }

    app.state.engine = engine
    from sync import console  # the staff console's pages on the same app

    console.mount(app, engine, Doorman(what="logins"))  # counted apart from the tokens
    return app


#: what `app_from_env` builds from: `sync.admin serve --workers N` sets them for its workers
DB_ENV, DOCS_ENV, LEASE_ENV = "HEAD_OFFICE_DB", "HEAD_OFFICE_DOCS", "HEAD_OFFICE_LEASE_SECONDS"


def app_from_env() -> FastAPI:
    """The app of one of several server processes (uvicorn's factory). Head office keeps no
    state of its own in a process: the database is the whole of it, except the failed-token
    counts, which each process keeps for the clients it serves."""
    import os

    lease = int(os.environ.get(LEASE_ENV) or LEASE_SECONDS)
    return create_app(os.environ[DB_ENV], docs=bool(os.environ.get(DOCS_ENV)), lease_seconds=lease)


def credit_out(r: Any) -> dict[str, Any]:
    return {
        "credit_id": r.credit_id,
        "key": r.key,
        "amount": r.amount,
        "currency": r.currency,
        "origin": r.origin,
        # the key's write number below which it cannot be on the key: a kiosk writes it only
        # where the key's log reaches back above it (None: no bound known)
        "bound": r.bound,
    }


def own_txid(kiosk_id: str, txid: str) -> bool:
    """Is `txid` an id this kiosk makes (`KIOSK-yymmdd-n`)? No kiosk opens a credit under
    another's id: ids are predictable, and the first to upload one would own it."""
    return re.fullmatch(re.escape(kiosk_id) + r"-\d{6}-\d+", txid) is not None


def granted(conn: Any, credit: Any, kiosk_id: str) -> bool:
    """Was this credit ever given to `kiosk_id` to write (its origin, its holder, a grant)?"""
    if kiosk_id in (credit.origin, credit.holder):
        return True
    return conn.execute(
        select(credit_grants.c.kiosk_id).where(credit_grants.c.credit_id == credit.credit_id,
                                               credit_grants.c.kiosk_id == kiosk_id)
    ).first() is not None  # fmt: skip


def said_given(conn: Any, kiosk_id: str, txid: str) -> bool:
    """Does the kiosk's own journal say the credit was given to it (its pending credit of it)?
    Head office restored from a backup lost the grants made since; the kiosk's journal, sent
    again, still says so. Its close is only its word then: it stands once the key shows it
    (a close by a kiosk that did not take the money is checked on the key's log)."""
    return conn.execute(
        select(entries.c.seq).where(entries.c.kiosk_id == kiosk_id, entries.c.txid == txid,
                                    entries.c.kind == "pending_credit").limit(1)
    ).first() is not None  # fmt: skip


def grant(conn: Any, credit_ids: list[str], kiosk_id: str) -> None:
    """Remember that these credits were given to `kiosk_id` (it may say it wrote them)."""
    if not credit_ids:
        return
    had = set(conn.execute(select(credit_grants.c.credit_id).where(
        credit_grants.c.kiosk_id == kiosk_id, credit_grants.c.credit_id.in_(credit_ids))
    ).scalars())  # fmt: skip
    new = [{"credit_id": c, "kiosk_id": kiosk_id} for c in credit_ids if c not in had]
    if new:
        conn.execute(insert(credit_grants), new)


def reopen(conn: Any, credit_id: str) -> None:
    """A close the key contradicts is undone: the credit is open again, held by no kiosk (the
    key's log, checked from the credit's bound, keeps it from being written twice)."""
    conn.execute(
        update(credits).where(credits.c.credit_id == credit_id)
        .values(written_by=None, write_no=None, lease_until=None, claim_id=None,
                # a credit given to one kiosk stays with it (no claim may take it)
                holder=case((credits.c.pinned.is_(True), credits.c.holder), else_=None))
    )  # fmt: skip


def reopen_contradicted(conn: Any, kiosk_id: str, key: str, written: int,
                        refused: list[dict[str, Any]]) -> bool:  # fmt: skip
    """The key is at a kiosk with `written` writes: a credit reported written on it as a
    later write was not written (a kiosk said so without the key): open it again, and alarm.
    True if one was."""
    said = conn.execute(
        select(credits.c.credit_id, credits.c.written_by, credits.c.write_no,
               credits.c.confirmed).where(
            credits.c.key == key, credits.c.written_by.is_not(None), credits.c.write_no > written)
    ).all()  # fmt: skip
    reopened = False
    for cid, by, no, confirmed in said:
        if confirmed:  # its origin's close, or one the key showed: a claim's word does not undo it
            alarm_once(conn, kiosk_id, None, f"kiosk {kiosk_id} says key {key} has {written} "
                       f"writes, but credit {cid} was written as its write {no}")  # fmt: skip
            continue
        reopen(conn, cid)
        reopened = True
        alarm(conn, kiosk_id, None, f"credit {cid} was reported written by {by} as write {no} "
              f"of key {key}, which has {written} writes: opened again", refused)  # fmt: skip
    # (the writes reported above `written` stay: a claim is only a kiosk's word, and the
    # first report of a number stands against later ones)
    return reopened


def record_write(conn: Any, kiosk_id: str, r: dict[str, Any], write_no: int,
                 refused: list[dict[str, Any]]) -> tuple[bool, bool]:  # fmt: skip
    """A kiosk wrote transaction `r["txid"]` onto key `r["key"]` as its write `write_no`. The
    first report of a number stands; another transaction reported at the same number is an
    alarm, and a credit closed there by a kiosk that did not take its money is opened again
    (one of the two reports is false). (whether the report conflicts, whether a credit was
    opened again)."""
    key, txid = r["key"], r["txid"]
    dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    row = {"key": key, "write_no": write_no, "txid": txid, "kiosk_id": kiosk_id, "seq": r["seq"]}
    if dialect is not None:  # two kiosks reporting one number at once: the first stands
        conn.execute(dialect.insert(key_writes).values(**row).on_conflict_do_nothing())
    seen = conn.execute(select(key_writes).where(
        key_writes.c.key == key, key_writes.c.write_no == write_no)).first()  # fmt: skip
    if seen is None:  # (another database)
        conn.execute(insert(key_writes).values(**row))
        return False, False
    if seen.txid == txid:
        return False, False
    alarm(conn, kiosk_id, r["seq"], f"key {key}: write {write_no} reported as {seen.txid} by "
          f"{seen.kiosk_id} and as {txid} by {kiosk_id}", refused)  # fmt: skip
    doubtful = conn.execute(
        select(credits.c.credit_id).where(
            credits.c.credit_id.in_((seen.txid, txid)), credits.c.key == key,
            credits.c.write_no == write_no, credits.c.written_by != credits.c.origin)
    ).scalars().all()  # fmt: skip
    for cid in doubtful:
        reopen(conn, cid)
    return True, bool(doubtful)


def _int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if type(value) is int and 0 <= value <= 2**31 - 1 else None


def track_credits(
    conn: Any, kiosk_id: str, rows: list[dict[str, Any]], refused: list[dict[str, Any]]
) -> bool:
    """Keep the fleet's credit book from the entries just stored (in the same transaction):
    head office is the authority, and decides from facts it can check. A kiosk's pending
    credit opens a credit only under an id that kiosk makes, and only when that kiosk's own
    payments of the same transaction back it (0 < amount <= paid, same currency); it carries
    the key's write count from when it became owed (its bound) and is held by that kiosk until
    another claims it. Only a kiosk the credit was given to (its origin, a holder, a claim's
    grant) closes it (`pending_written`), and a kiosk other than its origin only with the key's
    write number, which the key checks at its next claim. A lease ends when its holder reports
    the write failed. What is refused stays in the kiosk's journal copy, changes no credit,
    and raises an alarm (`refused`, and the alarms table). True if the book changed."""
    changed = False
    for r in rows:
        kind = r["kind"]
        if kind not in ("pending_credit", "pending_written", "key_written", "write_failed"):
            continue
        data = json.loads(r["data"]) if r["data"] else {}
        if kind == "pending_credit" and r["key"] and r["txid"] and r["amount"]:
            # (0: only a check of the key, for a payment given back; no credit to open)
            changed = open_credit(conn, kiosk_id, r, data, refused) or changed
        elif kind == "pending_written" and r["txid"]:
            changed = close_credit(conn, kiosk_id, r, data, refused) or changed
        elif kind == "key_written" and r["txid"] and r["key"]:
            write_no = _int(data, "write_no")
            if write_no is not None:
                changed = record_write(conn, kiosk_id, r, write_no, refused)[1] or changed
        elif kind == "write_failed" and r["txid"]:  # the holder could not: lease ends
            done = conn.execute(
                update(credits)
                .where(credits.c.credit_id == r["txid"], credits.c.holder == kiosk_id,
                       credits.c.written_by.is_(None), credits.c.lease_until.is_not(None))
                .values(lease_until=None)
            )  # fmt: skip
            changed = changed or done.rowcount > 0
    return changed


def open_credit(conn: Any, kiosk_id: str, r: dict[str, Any], data: dict[str, Any],
                refused: list[dict[str, Any]]) -> bool:  # fmt: skip
    """A kiosk's pending credit: a new credit in the book, or one it was given (nothing new)."""
    txid = r["txid"]
    known = conn.execute(select(credits).where(credits.c.credit_id == txid)).first()
    if known is not None:
        if not granted(conn, known, kiosk_id):  # another's credit, never given to it
            alarm(conn, kiosk_id, r["seq"], f"pending credit {txid} refused: it is "
                  f"{known.origin}'s credit, never given to {kiosk_id}", refused)  # fmt: skip
        elif known.key != r["key"] or known.amount < r["amount"]:
            alarm(conn, kiosk_id, r["seq"], f"pending credit {txid} refused: the book has it "
                  f"for key {known.key}, {known.amount}", refused)  # fmt: skip
        return False
    if not own_txid(kiosk_id, txid):
        alarm(conn, kiosk_id, r["seq"], f"pending credit {txid} refused: not an id kiosk "
              f"{kiosk_id} makes ({kiosk_id}-yymmdd-n)", refused)  # fmt: skip
        return False
    why = unbacked(conn, kiosk_id, r)
    if why:
        alarm(conn, kiosk_id, r["seq"], f"pending credit {txid} refused: {why}", refused)
        return False
    bound = _int(data, "key_written")
    conn.execute(
        insert(credits).values(
            credit_id=txid, key=r["key"], amount=r["amount"], currency=r["currency"],
            origin=kiosk_id, holder=kiosk_id,
            # a kiosk that did not say the key's count: only a key whose log reaches back to
            # its first write can show the credit is not on it
            bound=0 if bound is None else bound,
        )
    )  # fmt: skip
    grant(conn, [txid], kiosk_id)
    return True


def close_credit(conn: Any, kiosk_id: str, r: dict[str, Any], data: dict[str, Any],
                 refused: list[dict[str, Any]]) -> bool:  # fmt: skip
    """A kiosk says it wrote a credit (or found it on the key)."""
    txid = r["txid"]
    credit = conn.execute(select(credits).where(credits.c.credit_id == txid)).first()
    if credit is None:
        return False  # not a head-office credit (a kiosk's own check of a key)
    found, write_no = bool(data.get("found_on_key")), _int(data, "write_no")
    if data.get("not_on_key"):
        return False  # a check that found nothing: no credit is closed by it
    if not granted(conn, credit, kiosk_id) and not said_given(conn, kiosk_id, txid):
        alarm(conn, kiosk_id, r["seq"], f"credit {txid} was never given to {kiosk_id}: only "
              "a kiosk it was given to closes it", refused)  # fmt: skip
        return False
    conflict = reopened = False
    if write_no is not None and r["key"]:
        conflict, reopened = record_write(conn, kiosk_id, r, write_no, refused)
    if credit.written_by is not None:
        if credit.written_by != kiosk_id and not found:
            alarm(conn, kiosk_id, r["seq"], f"credit {txid} reported written by {kiosk_id} "
                  f"after {credit.written_by} wrote it: key {credit.key} may hold it twice",
                  refused)  # fmt: skip
        return reopened
    if conflict and kiosk_id != credit.origin:
        # another transaction was reported at that write: a kiosk that did not take the money
        # does not close it against that (its origin, which took the money, does)
        return reopened
    if kiosk_id != credit.origin and write_no is None:
        alarm(conn, kiosk_id, r["seq"], f"credit {txid} not closed: {kiosk_id} did not say "
              "which write of the key it was", refused)  # fmt: skip
        return reopened
    conn.execute(
        update(credits)
        .where(credits.c.credit_id == txid, credits.c.written_by.is_(None))
        .values(written_by=kiosk_id, holder=kiosk_id, lease_until=None, write_no=write_no,
                confirmed=kiosk_id == credit.origin)
    )  # fmt: skip
    return True


def unconfirmed(conn: Any, kiosk_id: str, key: str) -> list[int]:
    """The write numbers of the key's credits closed by a kiosk that did not take the money
    (other than `kiosk_id`) that the key has not shown yet: a claim asks for its log."""
    return sorted(set(conn.execute(
        select(credits.c.write_no).where(
            credits.c.key == key, credits.c.written_by.is_not(None),
            credits.c.written_by != kiosk_id, credits.c.confirmed.is_(False),
            credits.c.write_no.is_not(None))
    ).scalars()))  # fmt: skip


def check_closes(conn: Any, kiosk_id: str, key: str, written: int, log: list[tuple[int, str]],
                 refused: list[dict[str, Any]]) -> bool:  # fmt: skip
    """The key's log as a kiosk other than the writer read it (write number, transaction):
    each unconfirmed close of the key is confirmed where the log shows it at its number, and
    opened again (with an alarm) where the log shows another transaction there, or no longer
    reaches back to it (it cannot be confirmed any more). True if one was opened again."""
    seen = dict(log)
    oldest = min(seen, default=written + 1)
    rows = conn.execute(
        select(credits.c.credit_id, credits.c.written_by, credits.c.write_no).where(
            credits.c.key == key, credits.c.written_by.is_not(None),
            credits.c.written_by != kiosk_id, credits.c.confirmed.is_(False),
            credits.c.write_no.is_not(None))
    ).all()  # fmt: skip
    reopened = False
    for cid, by, no in rows:
        if seen.get(no) == cid:
            conn.execute(update(credits).where(credits.c.credit_id == cid).values(confirmed=True))
            continue
        if no > written:
            continue  # reopen_contradicted says so already
        if no not in seen:  # the log no longer reaches it: for the operator to decide
            alarm_once(conn, kiosk_id, None, f"credit {cid} was reported written by {by} as "
                       f"write {no} of key {key}, which its log no longer shows (it begins at "
                       f"write {oldest}): not confirmed")  # fmt: skip
            continue
        reopen(conn, cid)
        alarm(conn, kiosk_id, None, f"credit {cid} was reported written by {by} as write {no} "
              f"of key {key}: the key shows {seen[no]} there; opened again", refused)  # fmt: skip
        reopened = True
    return reopened


def unbacked(conn: Any, kiosk_id: str, r: dict[str, Any]) -> str | None:
    """Why a kiosk's new pending credit is not backed by its own payments (None: it is)."""
    paid = conn.execute(
        select(entries.c.kind, entries.c.currency, func.coalesce(func.sum(entries.c.amount), 0))
        .where(entries.c.kiosk_id == kiosk_id, entries.c.txid == r["txid"],
               entries.c.kind.in_((*PAID_KINDS, "card_reversed")))
        .group_by(entries.c.kind, entries.c.currency)
    ).all()  # fmt: skip
    total: dict[str, int] = {}
    for kind, cur, amount in paid:  # what was paid, less what went back to the card
        total[cur] = total.get(cur, 0) + (-1 if kind == "card_reversed" else 1) * int(amount)
    if not total:
        return "no payment of this kiosk backs it"
    if r["currency"] not in total or len(total) > 1:
        return f"paid in {', '.join(sorted(total))}, credit in {r['currency']}"
    if not 0 < r["amount"] <= total[r["currency"]]:
        return f"{r['amount']} is more than the {total[r['currency']]} paid"
    return None


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


def alarm_once(conn: Any, kiosk_id: str, seq: int | None, text: str) -> bool:
    """An alarm, unless the very same (kiosk, entry, text) was raised before: a kiosk sends a
    refused batch again every round. True if raised now."""
    same_seq = alarms.c.seq.is_(None) if seq is None else alarms.c.seq == seq
    said = conn.execute(select(alarms.c.id).where(
        alarms.c.kiosk_id == kiosk_id, same_seq, alarms.c.text == text)
    ).first()  # fmt: skip
    if said is not None:
        return False
    alarm(conn, kiosk_id, seq, text, [])
    return True


def alarm(conn: Any, kiosk_id: str, seq: int | None, text: str,
          refused: list[dict[str, Any]]) -> None:  # fmt: skip
    """Something a kiosk sent that head office refused to act on: for the operator."""
    log.warning("kiosk %s entry %s: %s", kiosk_id, seq, text)
    conn.execute(insert(alarms).values(ts=datetime.now(UTC).isoformat(), kiosk_id=kiosk_id,
                                       seq=seq, text=text))  # fmt: skip
    refused.append({"seq": seq, "reason": text})


def gunzip_capped(raw: bytes, cap: int) -> bytes:
    """Unpack a gzip body, but never more than `cap` bytes (413 beyond: a zip bomb)."""
    unpack = zlib.decompressobj(wbits=31)
    try:
        out = unpack.decompress(raw, cap + 1)
        if len(out) > cap or unpack.unconsumed_tail:
            raise HTTPException(413, f"body unpacks to more than {cap} bytes")
        if not unpack.eof:
            raise HTTPException(400, "body is not valid gzip: it ends early")
    except zlib.error as err:
        raise HTTPException(400, f"body is not valid gzip: {err}") from None
    return out


def count_entries(engine: Engine, kiosk_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(entries).where(entries.c.kiosk_id == kiosk_id)
            ).scalar()
            or 0
        )
