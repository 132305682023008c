"""Head office's database: its tables, opening it at this release's schema (migrations in
sync/store/migrations), and the reference version kiosks download by."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

from sync.store import schema
from sync.store.schema import History

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
    # the kiosk's chain secret (64 hex digits; `sync.admin kiosk add` makes it): its entries
    # are hashed with it from `keyed_from` on, the first keyed entry head office took (NULL:
    # none yet; plain entries before it, none after it). NULL secret: plain SHA-256 only.
    Column("chain_secret", String(64)),
    Column("keyed_from", Integer),
    Column("registered", String(32)),  # head office's clock, UTC: `kiosk add`
    Column("token_since", String(32)),  # its token's age: `kiosk add` or `kiosk rotate`
    Column("revoked", String(32)),  # when `kiosk revoke` cut it off (its token is no more)
    # what the kiosk said at its last request (X-Kiosk-Version, X-Kiosk-Journal-Schema)
    Column("version", String(40)),
    Column("journal_schema", String(40)),
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
    # what it is about, for routing it to people: chain (a fork, gap or hash), clock (a
    # kiosk's time gone wrong), credit (the credit book refused or undid something), release
    # (a release refused by head office or a kiosk, or rolled back)
    Column("kind", String(16), nullable=False, default="credit", server_default="credit"),
)
#: what the alarm notifier told whom (sync/admin/notify.py): one row per alarm and channel
notices = Table(
    "notices",
    metadata,
    Column("alarm", String(200), primary_key=True),  # "alarm:<id>" or "<kind>:<kiosk>:<what>"
    Column("channel", String(200), primary_key=True),  # "email:<to,...>" or "webhook:<name>"
    Column("first_seen", String(32), nullable=False),
    Column("last_sent", String(32)),  # NULL: not delivered yet
    Column("sent", Integer, nullable=False, default=0, server_default="0"),
    Column("cleared", String(32)),  # the condition went away (and that was told)
    Column("failed", Text),  # the last delivery's error, until one succeeds
)
#: the billing files' rows already taken (sync/billing/files.py): a row imported again changes
#: nothing
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
#: the staff console's people (sync/console/people.py): Argon2id password hashes, roles
staff = Table(
    "staff",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),  # operator, auditor, admin
    Column("lang", String(5), nullable=False, default="de", server_default="de"),  # de, en
    Column("disabled", String(32)),  # when `staff disable` locked them out (NULL: active)
    Column("password_set", String(32)),  # head office's clock, UTC
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
    Column("via", String(16), nullable=False, default="", server_default=""),  # cli, console, api
    Column("target", String(128), nullable=False, default="", server_default=""),  # key K-1, ...
    Column("before", Text),  # JSON of what it was (NULL: nothing, or not a change)
    Column("after", Text),  # JSON of what it is now (NULL: gone, or not a change)
)
#: the utility's release public key head office trusts (`sync.admin release trust`): one row
release_key = Table(
    "release_key",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("public_key", String(64), nullable=False),  # base64 of the Ed25519 key's 32 bytes
    Column("trusted", String(32), nullable=False),  # head office's clock, UTC
)
#: the release files head office stores (`sync.admin release add`), verified with that key
releases = Table(
    "releases",
    metadata,
    Column("version", String(40), primary_key=True),
    Column("file", String(128), nullable=False),  # its name in the release folder
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("signature", Text, nullable=False),  # the signature file's text, as signed
    Column("added", String(32), nullable=False),
)
#: `sync.admin rollout`: the newest row is the rollout in force
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", String(40), nullable=False),
    Column("canaries", Text, nullable=False),  # kiosk ids, comma-separated: they get it at once
    Column("after_seconds", Integer, nullable=False),  # then every other kiosk after this
    Column("started", String(32), nullable=False),  # head office's clock, UTC
)
#: each kiosk's newest update state, from its `release` journal entries
kiosk_releases = Table(
    "kiosk_releases",
    metadata,
    Column("kiosk_id", String(64), primary_key=True),
    Column("version", String(40), nullable=False),
    Column("state", String(16), nullable=False),  # downloading, ..., rolled_back, refused
    Column("ts", String(32), nullable=False),  # the kiosk's clock, from its entry
    Column("detail", Text, nullable=False, default="", server_default=""),
    Column("seq", Integer, nullable=False),  # the entry it came from
)
ref_version = Table(
    "ref_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)


KEY_STATUSES = ("active", "blocked", "not_activated")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: head office's migrations (sync/store/migrations); a database of the release before schema
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



def alarm_once(conn: Any, kiosk_id: str, seq: int | None, text: str,
               kind: str = "credit") -> bool:  # fmt: skip
    """An alarm, unless the very same (kiosk, entry, text) was raised before: a kiosk sends a
    refused batch again every round. True if raised now."""
    same_seq = alarms.c.seq.is_(None) if seq is None else alarms.c.seq == seq
    said = conn.execute(select(alarms.c.id).where(
        alarms.c.kiosk_id == kiosk_id, same_seq, alarms.c.text == text)
    ).first()  # fmt: skip
    if said is not None:
        return False
    alarm(conn, kiosk_id, seq, text, [], kind)
    return True


def alarm(conn: Any, kiosk_id: str, seq: int | None, text: str,
          refused: list[dict[str, Any]], kind: str = "credit") -> None:  # fmt: skip
    """Something a kiosk sent that head office refused to act on: for the operator."""
    log.warning("kiosk %s entry %s: %s", kiosk_id, seq, text)
    conn.execute(insert(alarms).values(ts=datetime.now(UTC).isoformat(), kiosk_id=kiosk_id,
                                       seq=seq, text=text, kind=kind))  # fmt: skip
    refused.append({"seq": seq, "reason": text})


def count_entries(engine: Engine, kiosk_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(entries).where(entries.c.kiosk_id == kiosk_id)
            ).scalar()
            or 0
        )
