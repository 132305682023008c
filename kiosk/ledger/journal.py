"""The durable, append-only, hash-chained journal, and the reference data kept beside it.

SQLite in WAL mode with ``synchronous=FULL``: an append returns only after its commit is on disk.
Each entry carries the hash of its content chained to the previous entry's hash; a one-row
head table holds the last sequence number and hash, updated in the same commit, so removing
the newest entries is detected as well as editing or removing any other.

The hash is keyed (#34): a kiosk with a chain secret (`[journal] chain_secret` in its secrets
file, made by head office's `sync.admin kiosk add`, which keeps it too) hashes each entry with
HMAC-SHA256 under it, so whoever can write the file but has not the secret cannot edit an entry
and compute the hashes again. A journal begun before its kiosk had a secret keeps its plain
(SHA-256) entries: the meta `chain_keyed_from` says from which entry on they are keyed (set in
the commit of the first keyed entry), and from there on a plain entry breaks the chain, here
and at head office (which learns it from the first keyed entry it takes). What is left (the
switch-over window): someone who can write the file may still rewrite the keyed entries head
office does not hold yet as plain ones and remove that meta; the journal alone cannot tell, but
head office refuses a plain entry after the first keyed one it took, and one it holds differs
from a rewritten one (a fork, an alarm). A journal without a secret (the demo, tests) is
chained with plain SHA-256 and proves only that it is whole, not who wrote it.

`verify` also counts again what the tables the triggers keep beside the entries hold (the
cash box since its last emptying, each cash device's last counter) and compares, and checks
head office's acknowledged hash (`sync_anchor`) at its place.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kiosk.domain.errors import ChainBroken, JournalError, JournalFull, JournalWriteError
from kiosk.domain.events import Account, KeyStatus, Kind, PendingCredit, Record
from kiosk.domain.money import Money
from kiosk.ledger.kept import BATCH, KeptRecords
from sync.store.schema import History, state, upgrade
from sync.wire.protocol import GENESIS, entry_hash, keyed, payload

log = logging.getLogger(__name__)
T = TypeVar("T")
#: entries of a kind, newest back to the first one found (see Journal.back_to)
BackTo = Callable[["Kind", Callable[["Entry"], bool]], list["Entry"]]

#: how long an append waits for another writer's lock before it fails (SQLite's busy handler)
BUSY_TIMEOUT_MS = 15_000


def _disk(path: Path, err: object) -> str:
    """`err`, with the disk `path` is on and its free space named."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return f"{err}"
    return f"{err} (the disk of {path.parent} has {free} bytes free)"


metadata = MetaData()

journal_table = Table(
    "journal",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", String(32), nullable=False),  # UTC, ISO 8601 with microseconds and Z
    Column("kind", String(32), nullable=False),
    Column("txid", String(64)),
    Column("key", String(64)),
    Column("amount", Integer),
    Column("currency", String(3)),
    Column("data", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_journal_txid", "txid"),
    Index("ix_journal_key", "key"),
    Index("ix_journal_kind", "kind"),
)

head_table = Table(
    "journal_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

meta_table = Table(
    "meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Reference data from head office (replaced by sync; edited by hand only in demos and tests).
keys_table = Table(
    "ref_keys",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("contract_account", String(64)),
)

# What is still open, kept in step with the journal in the same commit (_apply_effects): the
# start-up reconciliation and a key's pending credits read these few rows, not the history.
open_tx_table = Table(
    "open_tx",
    metadata,
    Column("txid", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),  # its tx_opened entry
)
open_credits_table = Table(
    "open_credits",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # its pending_credit entry
    Column("txid", String(64), nullable=False, index=True),
    Column("key", String(64), index=True),
)

# What is in the cash box since it was last emptied, by medium and denomination: a running
# count kept in the same commit as the money's entry (the emptying clears it).
cash_box_table = Table(
    "cash_box",
    metadata,
    Column("medium", String(8), primary_key=True),
    Column("minor", Integer, primary_key=True, autoincrement=False),
    Column("pieces", Integer, nullable=False),
    Column("test_minor", Integer, nullable=False),  # of it from acceptor tests
)
# Where the live journal begins once housekeeping moved older entries into archive segments
# (kiosk/ledger/archive.py): the last archived entry, which the first live one links to.
base_table = Table(
    "journal_base",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)
# The pending credits among the archived entries: a credit head office sends again is known.
archived_credits_table = Table(
    "archived_credits",
    metadata,
    Column("txid", String(64), primary_key=True),
)

# Each cash device's event counter as last journaled, kept in the same commit: a restart
# resumes there (see Journal.acceptor_counters) without reading back through the history.
counters_table = Table(
    "acceptor_counters",
    metadata,
    Column("device", String(16), primary_key=True),
    Column("counter", Integer, nullable=False),
)
#: the kinds whose entries may carry a cash device's event counter
COUNTED = (Kind.CASH_IN, Kind.CASH_UNATTRIBUTED, Kind.TEST_CASH, Kind.FAULT,
           Kind.ACCEPTOR_COUNTER)  # fmt: skip


def counter_of(kind: str, data: dict[str, Any]) -> tuple[str, int] | None:
    """(device, counter) an entry carries, or None."""
    if kind not in COUNTED or "counter" not in data:
        return None
    device = data.get("device") or ("notes" if data.get("medium") == "note" else "coin")
    return str(device), int(data["counter"])


#: meta: the highest entry head office acknowledged, and "seq hash" of it as head office has it
WATERMARK = "sync_watermark"
ANCHOR = "sync_anchor"
#: meta: the first entry hashed with the kiosk's chain secret (entries before it are plain)
KEYED_FROM = "chain_keyed_from"
#: the kinds whose amount goes into the cash box (the trigger journal_cash_counted, 0006)
INTO_THE_BOX = (str(Kind.CASH_IN), str(Kind.CASH_UNATTRIBUTED), str(Kind.TEST_CASH))
_COUNTED = tuple(str(k) for k in COUNTED)
#: the kinds a `Tally` counts (an entry of another kind changes neither table)
TALLIED = frozenset((*INTO_THE_BOX, str(Kind.CASHBOX_EMPTIED), *_COUNTED))


class Tally:
    """What the entries say the tables kept beside them hold: the cash box's count since its
    last emptying ((medium, minor) -> [pieces, test money]) and each cash device's last event
    counter, as SQLite's triggers (migration 0006) keep them. Counted from the chain's first
    entry (`from_start`) every table row is known; from a later entry, the box only after an
    emptying among the entries counted, and only the devices seen."""

    def __init__(self, from_start: bool) -> None:
        self.box: dict[tuple[str, int], list[int]] | None = {} if from_start else None
        self.counters: dict[str, int] = {}
        self.all_counters = from_start
        self.last = 0  # the last entry counted (an entry given twice is counted once)

    def add(self, seq: int, kind: str, amount: int | None, data: dict[str, Any]) -> None:
        if seq <= self.last:
            return
        self.last = seq
        if kind in INTO_THE_BOX:
            if amount is not None and self.box is not None:
                medium = data.get("medium")
                got = self.box.setdefault(("coin" if medium is None else str(medium), amount),
                                          [0, 0])  # fmt: skip
                got[0] += 1
                if kind == Kind.TEST_CASH:
                    got[1] += amount
        elif kind == Kind.CASHBOX_EMPTIED:
            self.box = {}
        if kind in _COUNTED and data.get("counter") is not None:
            device = data.get("device") or ("notes" if data.get("medium") == "note" else "coin")
            self.counters[str(device)] = data["counter"]

    def compare(self, conn: Connection) -> None:
        """ChainBroken naming the first table row that is not what the entries say."""
        if self.box is not None and inspect(conn).has_table(cash_box_table.name):
            kept = {(r.medium, r.minor): [r.pieces, r.test_minor]
                    for r in conn.execute(select(cash_box_table))}  # fmt: skip
            for medium, minor in sorted(set(kept) | set(self.box)):
                table = kept.get((medium, minor), [0, 0])
                entries = self.box.get((medium, minor), [0, 0])
                if table != entries:
                    what = f"{medium} {minor // 100}.{minor % 100:02d}"
                    raise ChainBroken(None, f"counts {table[0]} x {what} (test money "
                                            f"{table[1]}), the entries since its last emptying "
                                            f"{entries[0]} (test money {entries[1]})",
                                      where="the cash box table")  # fmt: skip
        if inspect(conn).has_table(counters_table.name):
            kept_c = {r.device: r.counter for r in conn.execute(select(counters_table))}
            devices = set(self.counters) | (set(kept_c) if self.all_counters else set())
            for device in sorted(devices):
                if kept_c.get(device) != self.counters.get(device):
                    raise ChainBroken(None, f"has {device} at {kept_c.get(device)}, the "
                                            f"entries {self.counters.get(device)}",
                                      where="the acceptor counters table")  # fmt: skip

#: the journal's migrations (kiosk/ledger/migrations); a journal of the release before schema
#: versions is told by its `journal` table
HISTORY = History(Path(__file__).parent / "migrations", "journal", "0001")
#: The oldest journal schema whose release still reads a journal this release has upgraded
#: (kept in the journal's meta as READABLE_META). The rule that lets a release be rolled back:
#: a migration only adds (a table, an index, a column that may be NULL or has a default), in the
#: release that needs it, and never removes or renames; the release before it then opens the
#: journal as it is, after a rollback, and writes it as it always did. What is no longer used
#: is removed by a later release (expand, then contract): that contracting migration raises
#: this to its own revision, and a release older than it refuses the journal with the reason
#: instead of misreading it.
READABLE_FROM = "0007"
READABLE_META = "schema_readable_from"

debts_table = Table(
    "ref_debts",
    metadata,
    Column("contract_account", String(64), primary_key=True),
    Column("amount", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
)


@dataclass(frozen=True)
class Entry:
    """One journal row."""

    seq: int
    ts: datetime
    kind: str
    txid: str | None
    key: str | None
    amount: Money | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


def format_ts(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("journal times must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sqlite_engine(path: Path, synchronous: str = "FULL") -> Engine:
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        # another writer (a technician's kiosk diag, a backup) holds the lock: SQLite waits
        # for it this long before an append fails (the acceptors are inhibited meanwhile)
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (no reader-to-writer upgrade can fail
        # mid-append); readers begin deferred and never block the kiosk's writes.
        conn.exec_driver_sql(
            f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}"
        )

    return engine


class Journal:
    """Append-only money journal of one kiosk, with the local reference data."""

    def __init__(
        self, path: str | Path, kiosk_id: str, *, synchronous: str = "FULL",
        chain_secret: bytes | None = None, history: History = HISTORY,
        readable_from: str = READABLE_FROM,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        #: the journal's migrations and what this release's journal is readable by (another
        #: release's, in the rollback tests)
        self.history, self.readable_from = history, readable_from
        self.kiosk_id = kiosk_id
        #: the kiosk's chain secret: entries from `KEYED_FROM` on are hashed with it
        self.chain_secret = chain_secret
        #: the first keyed entry, as read with the head (None: none is keyed yet)
        self._keyed_from: int | None = None
        #: (seq, hash) of the newest entry this object committed; None: read it in the next
        #: append (another writer's entry since is found by the insert that collides with it)
        self._head: tuple[int, str] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(self.path, synchronous)
            self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
            self._migrate()
            with self._writer.begin() as conn:
                owner = conn.execute(
                    select(meta_table.c.value).where(meta_table.c.name == "kiosk_id")
                ).scalar()
                if owner is None:
                    conn.execute(insert(meta_table).values(name="kiosk_id", value=kiosk_id))
                elif owner != kiosk_id:
                    raise JournalError(
                        f"{self.path} is the journal of kiosk {owner}, not of {kiosk_id}"
                    )
            self._credits = threading.Lock()  # see add_credits
            #: what a failed write leaves behind, for the next start to journal
            self.kept = KeptRecords(self.path.with_name(self.path.name + ".kept"))
        except SQLAlchemyError as err:
            raise self._write_error(err, "cannot open the journal") from err
        except OSError as err:
            raise JournalError(
                f"cannot open the journal {self.path}: {_disk(self.path, err)}"
            ) from err

    def schema_revision(self) -> str:
        """The journal's schema revision (the release that opened it brought it to its own)."""
        return self.history.head

    def _migrate(self) -> None:
        """Bring the journal to this release's schema before anything else: a new one is made
        so; an older one is first copied to a backup beside it (SQLite's online backup) whose
        chain must verify, then upgraded, and its chain must still verify after. One process
        at a time (a lock file beside it): the automat and a `kiosk diag` started together."""
        now = state(self.engine, self.history)
        if now == self.history.head:
            if self.get_meta(READABLE_META) != self.readable_from:
                self._readable()  # (a journal of the release before the mark, or a contraction)
            return
        if now not in (None, "empty") and not self._knows(now):
            self._newer(now)
            return
        with open(self.path.with_name(self.path.name + ".upgrade-lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._upgrade()

    def _knows(self, revision: str) -> bool:
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        try:
            return ScriptDirectory(str(self.history.folder)).get_revision(revision) is not None
        except (CommandError, KeyError, ValueError):
            return False

    def _newer(self, revision: str) -> None:
        """A journal a newer release upgraded (this one was rolled back to): opened as it is
        when that release says this one reads it (READABLE_FROM), refused otherwise."""
        with self.engine.connect() as conn:
            said = conn.execute(select(meta_table.c.value).where(
                meta_table.c.name == READABLE_META)).scalar()  # fmt: skip
        head = self.history.head
        if said is None or not (str(said).isdigit() and head.isdigit()) or int(head) < int(said):
            raise JournalError(
                f"{self.path} is at schema {revision} of a newer release, readable from "
                f"{said or 'no release before it'} on; this release is at {head}: run the newer "
                "release (its journal is unchanged)")  # fmt: skip
        log.warning("journal %s is at schema %s of a newer release (readable from %s): opened "
                    "as it is by this release (%s)", self.path, revision, said, head)  # fmt: skip

    def _readable(self) -> None:
        with self._writer.begin() as conn:
            conn.execute(meta_table.delete().where(meta_table.c.name == READABLE_META))
            conn.execute(insert(meta_table).values(name=READABLE_META, value=self.readable_from))

    def _upgrade(self) -> None:
        HISTORY = self.history  # noqa: N806 (this journal's migrations)
        was = state(self.engine, HISTORY)
        if was == HISTORY.head:
            return
        if was == "empty":
            upgrade(self._writer, HISTORY)
            self._readable()
            return
        backup = self.path.with_name(f"{self.path.name}.before-{HISTORY.head}")
        try:
            with (
                closing(sqlite3.connect(self.path)) as src,
                closing(sqlite3.connect(backup)) as dst,
            ):
                src.backup(dst)
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: no backup before the upgrade: {err}") from err
        copy = create_engine(f"sqlite:///{backup}")
        try:
            entries = verify_chain(copy, self.chain_secret)
        finally:
            copy.dispose()
        upgrade(self._writer, HISTORY)
        self._readable()
        if verify_chain(self.engine, self.chain_secret) != entries:
            raise JournalError(f"{self.path}: the chain changed in the upgrade (backup {backup})")
        log.warning("journal %s upgraded from %s to %s (%d entries verify; backup %s)",
                    self.path, was or "the release before versions", HISTORY.head, entries,
                    backup)  # fmt: skip

    def _write_error(self, err: SQLAlchemyError, what: str) -> JournalError:
        """A clear error for a failed write: a full disk is named with its free space."""
        orig = getattr(err, "orig", None) or err
        text = str(orig).splitlines()[0]
        if "full" in text or "No space" in text:
            return JournalFull(f"{what} {self.path}: {_disk(self.path, orig)}")
        return JournalWriteError(f"{what} {self.path}: {text}")

    def keep(self, records: Sequence[Record]) -> str:
        """Keep records the journal could not take in its side file (fsync'd, in space made
        at start); the next start journals them (`journal_kept`). OSError if even that fails."""
        return self.kept.keep(list(records))

    def journal_kept(self, now: datetime) -> int:
        """Journal what a failed write kept in the side file, each batch once (a batch already
        journaled before a crash is not journaled again); then clear the file. Returns the
        number of records journaled."""
        batches = self.kept.batches()
        if not batches:
            return 0
        recent = self.raw_entries(after=max(0, self.last_seq() - 500))
        done = {json.loads(r["data"]).get(BATCH) for r in recent}
        n = 0
        for batch, records in batches:
            if batch in done:
                continue
            self.append([replace(r, data={**r.data, BATCH: batch}) for r in records], now)
            n += len(records)
            log.warning("journaled %d record(s) a failed write had kept (batch %s)",
                        len(records), batch)  # fmt: skip
        self.kept.clear()
        return n

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writing

    def append(self, records: Sequence[Record], now: datetime) -> list[Entry]:
        """Append records in one durable commit; returns the entries as stored."""
        if not records:
            return []
        try:
            return self._append(records, now)
        except SQLAlchemyError as err:
            raise self._write_error(err, "cannot write the journal") from err

    def append_decided(
        self, decide: Callable[[BackTo], tuple[Sequence[Record], T]], now: datetime,
    ) -> T:  # fmt: skip
        """Read, decide and append as one transaction under the journal's write lock: another
        writer (thread or process) doing the same waits, then sees what this one appended.
        `decide` gets a reader like `back_to` and returns the records to append and what to
        give back."""
        try:
            with self._writer.begin() as conn:

                def back_to(kind: Kind, found: Callable[[Entry], bool]) -> list[Entry]:
                    return self._back_to(conn, kind, found)

                self._head = None  # (it reads the journal: the head is read in it too)
                records, result = decide(back_to)
                out = self._append_in(conn, records, now) if records else []
        except SQLAlchemyError as err:
            self._head = None
            raise self._write_error(err, "cannot write the journal") from err
        except BaseException:
            self._head = None
            raise
        if out:
            self._head = (out[-1].seq, out[-1].hash)
        return result

    def _append(self, records: Sequence[Record], now: datetime) -> list[Entry]:
        try:
            with self._writer.begin() as conn:
                out = self._append_in(conn, records, now)
        except IntegrityError:  # another writer appended since: its entry holds our number
            self._head = None
            with self._writer.begin() as conn:
                out = self._append_in(conn, records, now)
        except BaseException:
            self._head = None  # not committed: the head is read again next time
            raise
        self._head = (out[-1].seq, out[-1].hash)  # committed
        if log.isEnabledFor(logging.INFO):
            for e in out:  # structured fields for journald (kiosk/app/logs.py)
                device = e.data.get("device") or e.data.get("medium")
                fields = {"event": str(e.kind), "txid": e.txid, "device": device}
                if e.amount is not None:
                    fields |= {"amount_minor": e.amount.minor, "currency": e.amount.currency}
                log.info("journal %s seq=%d tx=%s amount=%s", e.kind, e.seq, e.txid,
                         e.amount, extra=fields)  # fmt: skip
        return out

    def _append_in(self, conn: Connection, records: Sequence[Record], now: datetime) -> list[Entry]:
        ts = format_ts(now)
        out: list[Entry] = []
        if self._head is None:  # (the first append, or after another writer or an error)
            head = conn.execute(select(head_table.c.seq, head_table.c.hash)).first()
            self._head = (head.seq, head.hash) if head else (0, GENESIS)
            self._keyed_from = _keyed_from(conn)  # (set only with an entry: read with the head)
        seq, prev = self._head
        secret = self.chain_secret
        if self._keyed_from is None and secret is not None:
            # the first keyed entry: said in its commit (another writer's since: a collision)
            conn.execute(insert(meta_table).values(name=KEYED_FROM, value=str(seq + 1)))
            self._keyed_from = seq + 1
        elif self._keyed_from is not None and secret is None:
            raise JournalError(
                f"{self.path} is keyed with the kiosk's chain secret from entry "
                f"{self._keyed_from} on, and this process has none ([journal] chain_secret in "
                "the secrets file): nothing appended"
            )
        rows = []
        for r in records:
            payload(r.kind, r.data, strict=True)  # a field its kind does not have: a defect
            seq += 1
            amount = r.amount.minor if r.amount is not None else None
            currency = r.amount.currency if r.amount is not None else None
            data = _canonical(r.data)
            h = entry_hash(prev, seq, ts, str(r.kind), r.txid, r.key, amount, currency, data,
                           secret)  # fmt: skip
            rows.append(
                {
                    "seq": seq,
                    "ts": ts,
                    "kind": str(r.kind),
                    "txid": r.txid,
                    "key": r.key,
                    "amount": amount,
                    "currency": currency,
                    "data": data,
                    "prev_hash": prev,
                    "hash": h,
                }
            )
            out.append(
                Entry(seq, parse_ts(ts), str(r.kind), r.txid, r.key, r.amount, r.data, prev, h)
            )
            prev = h
        # One statement: the head follows in SQLite (trigger journal_head_follows). An entry
        # another writer appended since our last holds the number we used: the insert fails
        # as a whole (primary key) and the caller reads the head again.
        conn.execute(insert(journal_table), rows)
        for e in out:
            self._apply_effects(conn, e)
        return out

    def _apply_effects(self, conn: Connection, e: Entry) -> None:
        """Keep the local debt in step with this kiosk's entries (same commit): recovered
        debt lowers it; a card payment reversed after its credit was written, or any other claim,
        raises it."""
        if e.kind == Kind.TX_CLOSED and e.data.get("debt"):
            self._add_debt(conn, e.txid, -int(e.data["debt"]))
        elif (claim := claim_of(e)) is not None:
            self._add_debt(conn, e.txid, claim.minor, claim.currency)
        self._keep_open(conn, e)
        # (the cash box's count and the devices' counters: SQLite's triggers, migration 0006)

    def cash_box(self) -> tuple[dict[tuple[str, int], int], int]:
        """What is in the cash box since its last emptying: pieces by (medium, minor), and the
        test money in it (minor units)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(cash_box_table)).all()
        return {(r.medium, r.minor): r.pieces for r in rows}, sum(r.test_minor for r in rows)

    @staticmethod
    def _keep_open(conn: Connection, e: Entry) -> None:
        """The open transactions and open pending credits, in step with this entry."""
        if e.txid is None:
            return
        if e.kind == Kind.TX_OPENED:
            conn.execute(insert(open_tx_table).prefix_with("OR IGNORE").values(
                txid=e.txid, seq=e.seq))  # fmt: skip
        elif e.kind == Kind.TX_CLOSED:
            conn.execute(open_tx_table.delete().where(open_tx_table.c.txid == e.txid))
        elif e.kind == Kind.PENDING_CREDIT:
            j = journal_table
            closed = conn.execute(
                select(j.c.seq, j.c.kind).where(j.c.txid == e.txid, j.c.seq < e.seq, j.c.kind.in_(
                    (str(Kind.PENDING_WRITTEN), str(Kind.PENDING_RELEASED))))
                .order_by(j.c.kind.desc()).limit(1)  # pending_written first: written stays shut
            ).first()  # fmt: skip
            if closed is None:
                conn.execute(insert(open_credits_table).values(seq=e.seq, txid=e.txid, key=e.key))
            elif closed.kind == str(Kind.PENDING_RELEASED) and e.data.get("regranted"):
                # given to another kiosk, and back to this one now: owed here again
                conn.execute(insert(open_credits_table).values(seq=e.seq, txid=e.txid, key=e.key))
        elif e.kind in (Kind.PENDING_WRITTEN, Kind.PENDING_RELEASED):
            conn.execute(open_credits_table.delete().where(open_credits_table.c.txid == e.txid))

    def _add_debt(self, conn: Connection, txid: str | None, delta: int, currency: str = "") -> None:
        account = self._account_of(conn, txid)
        if not account:
            return
        d = debts_table
        exists = conn.execute(select(d.c.amount).where(d.c.contract_account == account)).first()
        if exists is None:
            if delta > 0:
                conn.execute(
                    insert(d).values(contract_account=account, amount=delta, currency=currency)
                )
            return
        conn.execute(
            update(d)
            .where(d.c.contract_account == account)
            .values(amount=func.max(0, d.c.amount + delta))
        )

    @staticmethod
    def _account_of(conn: Connection, txid: str | None) -> str | None:
        row = conn.execute(
            select(journal_table.c.data).where(
                journal_table.c.txid == txid, journal_table.c.kind == str(Kind.TX_OPENED)
            )
        ).first()
        return json.loads(row.data).get("contract_account") if row else None

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _entry(row: Any) -> Entry:
        amount = Money(row.amount, row.currency) if row.amount is not None else None
        return Entry(
            row.seq,
            parse_ts(row.ts),
            row.kind,
            row.txid,
            row.key,
            amount,
            json.loads(row.data),
            row.prev_hash,
            row.hash,
        )

    def entries(self, after: int = 0, limit: int | None = None) -> list[Entry]:
        q = select(journal_table).where(journal_table.c.seq > after).order_by(journal_table.c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [self._entry(r) for r in conn.execute(q)]

    def entries_of_kind(self, kind: Kind) -> list[Entry]:
        """Entries of a kind, oldest first (all of them: for reports and tests, not for what
        the automat does at each customer)."""
        q = select(journal_table).where(journal_table.c.kind == str(kind))
        with self.engine.connect() as conn:
            return [self._entry(r) for r in conn.execute(q.order_by(journal_table.c.seq))]

    def last_of_kind(self, kind: Kind) -> Entry | None:
        """The newest entry of a kind (the kind's index: no scan of the history)."""
        q = select(journal_table).where(journal_table.c.kind == str(kind))
        with self.engine.connect() as conn:
            row = conn.execute(q.order_by(journal_table.c.seq.desc()).limit(1)).first()
        return None if row is None else self._entry(row)

    def back_to(self, kind: Kind, found: Callable[[Entry], bool]) -> list[Entry]:
        """Entries of a kind from the newest back to the first for which `found` is true
        (included), oldest first: what happened since the last such entry, not all history."""
        with self.engine.connect() as conn:
            return self._back_to(conn, kind, found)

    def _back_to(self, conn: Connection, kind: Kind, found: Callable[[Entry], bool]) -> list[Entry]:
        q = select(journal_table).where(journal_table.c.kind == str(kind))
        out = []
        for row in conn.execute(q.order_by(journal_table.c.seq.desc())):
            e = self._entry(row)
            out.append(e)
            if found(e):
                break
        return out[::-1]

    def acceptor_counters(self) -> dict[str, int]:
        """Each cash device's event counter as last journaled (with money it took, a lost-events
        fault, or when it came online): a restart resumes there, so events the device buffered
        while the kiosk was down are still credited."""
        with self.engine.connect() as conn:
            return {r.device: r.counter for r in conn.execute(select(counters_table))}

    def raw_entries(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries exactly as stored (the bytes the hash covers), for upload."""
        cols = [c for c in journal_table.c]
        q = select(*cols).where(journal_table.c.seq > after).order_by(journal_table.c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def get_meta(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(meta_table.c.value).where(meta_table.c.name == name)
            ).scalar()
        return None if value is None else str(value)

    def set_meta(self, name: str, value: str, **more: str) -> None:
        """Set `name` (and the names in `more`) to their values, in one commit."""
        values = {name: value, **more}
        with self._writer.begin() as conn:
            conn.execute(meta_table.delete().where(meta_table.c.name.in_(list(values))))
            conn.execute(insert(meta_table), [{"name": k, "value": v} for k, v in values.items()])

    def forget_archived(self, first: int, last: int, last_hash: str, credits: set[str]) -> None:
        """Entries `first`..`last` are in an archive segment now (kiosk/ledger/archive.py):
        delete them here, with the new base and the pending credits that went with them, in
        one commit."""
        with self._writer.begin() as conn:
            base, _ = _base(conn)
            if base != first - 1:
                raise JournalError(f"{self.path} begins after {base}, not before {first}")
            conn.execute(journal_table.delete().where(journal_table.c.seq <= last))
            conn.execute(base_table.delete())
            conn.execute(insert(base_table).values(id=1, seq=last, hash=last_hash))
            known = set(conn.execute(select(archived_credits_table.c.txid).where(
                archived_credits_table.c.txid.in_(sorted(credits)))).scalars())  # fmt: skip
            if credits - known:
                conn.execute(insert(archived_credits_table),
                             [{"txid": t} for t in sorted(credits - known)])  # fmt: skip

    def keyed_from(self) -> int | None:
        """The first entry hashed with the kiosk's chain secret (None: no entry is keyed)."""
        with self.engine.connect() as conn:
            return _keyed_from(conn)

    def base(self) -> tuple[int, str]:
        """Where the live journal begins: the number and hash of the last archived entry
        ((0, GENESIS) in a journal that was never archived)."""
        with self.engine.connect() as conn:
            return _base(conn)

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(head_table.c.seq)).scalar() or 0

    def by_txid(self, txid: str) -> list[Entry]:
        q = select(journal_table).where(journal_table.c.txid == txid).order_by(journal_table.c.seq)
        with self.engine.connect() as conn:
            return [self._entry(r) for r in conn.execute(q)]

    def open_txids(self) -> list[str]:
        """Transactions that were opened but never closed (interrupted by a crash)."""
        q = select(open_tx_table.c.txid).order_by(open_tx_table.c.seq)
        with self.engine.connect() as conn:
            return [r.txid for r in conn.execute(q)]

    def _open_credits(self) -> Select[Any]:
        j = journal_table
        return (
            select(j.c.seq, j.c.txid, j.c.key, j.c.amount, j.c.currency, j.c.data)
            .where(j.c.seq.in_(select(open_credits_table.c.seq)))
            .order_by(j.c.seq)
        )

    def pending_credits(self, key_serial: str) -> list[PendingCredit]:
        """Credits owed to a key that this kiosk may write and has not yet, oldest first."""
        q = self._open_credits().where(journal_table.c.key == key_serial)
        out = []
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                data = json.loads(r.data)
                on_key, bound = data.get("on_key"), data.get("key_written")
                out.append(
                    PendingCredit(
                        r.txid,
                        Money(r.amount, r.currency),
                        None if on_key is None else Money(int(on_key), r.currency),
                        bound if isinstance(bound, int) else None,
                    )
                )
        return out

    def open_credits(self, upto_seq: int | None = None) -> list[tuple[str, str]]:
        """(txid, key) of every open pending credit, those journaled up to `upto_seq` only; a
        check of a key for nothing (amount 0: did an interrupted write land?) stays local."""
        q = self._open_credits().where(journal_table.c.amount > 0)
        if upto_seq is not None:
            q = q.where(journal_table.c.seq <= upto_seq)
        with self.engine.connect() as conn:
            return [(r.txid, r.key) for r in conn.execute(q)]

    def add_credits(self, records: Sequence[Record], now: datetime) -> list[Entry]:
        """Journal the pending credits among `records` that are not journaled yet (by id), the
        check and the append as one: head office's reference data (the sync thread) and a key's
        claim (the engine thread) may bring the same credit at the same moment."""
        with self._credits:
            seen: set[str | None] = set()
            new = []
            for r in records:
                if r.txid in seen:
                    continue
                seen.add(r.txid)
                if r.txid and self.credit_known(r.txid):
                    if not self.credit_released(r.txid):
                        continue
                    # released to another kiosk and granted back here: owed here again
                    r = replace(r, data={**r.data, "regranted": True})
                new.append(r)
            return self.append(new, now)

    def credit_released(self, txid: str) -> bool:
        """Is this credit's newest state here "released" (given to another kiosk), neither open
        nor written here?"""
        j = journal_table
        q = (select(j.c.kind).where(j.c.txid == txid, j.c.kind.in_((
            str(Kind.PENDING_CREDIT), str(Kind.PENDING_WRITTEN), str(Kind.PENDING_RELEASED))))
            .order_by(j.c.seq.desc()).limit(1))  # fmt: skip
        with self.engine.connect() as conn:
            newest = conn.execute(q).scalar()
            written = conn.execute(select(j.c.seq).where(
                j.c.txid == txid, j.c.kind == str(Kind.PENDING_WRITTEN)).limit(1)
            ).first()  # fmt: skip
        return newest == str(Kind.PENDING_RELEASED) and written is None

    def credit_known(self, txid: str) -> bool:
        """Has this credit been journaled here before (open, written or released)?"""
        j = journal_table
        q = select(j.c.seq).where(j.c.txid == txid, j.c.kind == str(Kind.PENDING_CREDIT))
        archived = select(archived_credits_table.c.txid).where(
            archived_credits_table.c.txid == txid
        )
        with self.engine.connect() as conn:
            return (
                conn.execute(q.limit(1)).first() is not None
                or conn.execute(archived).first() is not None
            )

    def verify(self, tally: Tally | None = None) -> int:
        """Check the live chain (keyed entries with the kiosk's chain secret) and the head, the
        tables kept beside it against what its entries say (the cash box, the devices'
        counters), and head office's acknowledged hash where it is live; return the number of
        live entries or raise ChainBroken naming what disagrees. `tally`: what the entries
        before the live ones (archive segments) counted already (`archive.verify_all`)."""
        with self.engine.connect() as conn:
            base, _ = _base(conn)
        tally = tally if tally is not None else Tally(from_start=base == 0)
        n = verify_chain(self.engine, self.chain_secret, tally)
        self._check_anchor()
        with self.engine.connect() as conn:
            tally.compare(conn)
        return n

    def _check_anchor(self) -> None:
        """Head office's acknowledged hash (`ANCHOR`): there whenever the watermark says head
        office holds entries, and, where its entry is live, that entry's hash (a chain rebuilt
        from scratch, every hash recomputed, differs there). An anchor archived is checked in
        its segment (`archive.verify_all`)."""
        acked = int(self.get_meta(WATERMARK) or 0)
        anchor = self.get_meta(ANCHOR)
        last = self.last_seq()
        if acked > last:
            raise ChainBroken(last + 1, "missing: the watermark says head office holds "
                                        f"entries up to {acked}, the journal ends at "
                                        f"{last}")  # fmt: skip
        if not anchor:
            if acked > 0:
                raise ChainBroken(acked, "head office's acknowledged hash (meta sync_anchor) "
                                         "is missing, but the watermark says it holds entries "
                                         f"up to {acked}")  # fmt: skip
            return
        seq_text, _, hash_ = anchor.partition(" ")
        seq = int(seq_text) if seq_text.isdigit() else -1
        base, _ = self.base()
        if seq <= base and seq >= 0:
            return  # archived: its segment has it
        rows = self.raw_entries(after=seq - 1, limit=1) if seq > 0 else []
        if not rows or rows[0]["seq"] != seq:
            raise ChainBroken(seq if seq > 0 else None, f"head office acknowledged entry "
                              f"{seq_text} ({anchor!r}), and the journal has no such entry")
        if rows[0]["hash"] != hash_:
            raise ChainBroken(seq, "differs from the entry head office acknowledged")

    # ------------------------------------------------------------------ reference data

    def account_for(self, serial: str, contract_account: str, currency: str) -> Account:
        """What head office said about this key, plus the credits owed to it."""
        with self.engine.connect() as conn:
            k = conn.execute(select(keys_table).where(keys_table.c.serial == serial)).first()
            d = conn.execute(
                select(debts_table).where(debts_table.c.contract_account == contract_account)
            ).first()
        status = KeyStatus(k.status) if k else KeyStatus.UNKNOWN
        # a debt below zero is no debt (head office refuses one; an older one may have sent it)
        debt = (Money(max(0, int(d.amount)), d.currency) if d and d.currency == currency
                else Money.zero(currency))  # fmt: skip
        return Account(
            status=status,
            debt=debt,
            reason=k.reason if k else "",
            pending=tuple(self.pending_credits(serial)),
        )

    def set_key(
        self, serial: str, status: KeyStatus, contract_account: str | None = None, reason: str = ""
    ) -> None:
        with self._writer.begin() as conn:
            conn.execute(keys_table.delete().where(keys_table.c.serial == serial))
            conn.execute(
                insert(keys_table).values(
                    serial=serial,
                    status=str(status),
                    reason=reason,
                    contract_account=contract_account,
                )
            )

    def set_reference(
        self,
        keys: Sequence[tuple[str, KeyStatus, str | None, str]],
        debts: Sequence[tuple[str, Money]],
    ) -> None:
        """Keys (serial, status, contract account, reason) and debts as head office sent them,
        in one transaction (a night's 20,000 keys: one commit, not 20,000)."""
        chunk = 500
        with self._writer.begin() as conn:
            for i in range(0, len(keys), chunk):
                part = keys[i : i + chunk]
                conn.execute(keys_table.delete().where(keys_table.c.serial.in_(
                    [k[0] for k in part])))  # fmt: skip
                conn.execute(insert(keys_table), [
                    {"serial": k[0], "status": str(k[1]), "contract_account": k[2],
                     "reason": k[3]} for k in part])  # fmt: skip
            for i in range(0, len(debts), chunk):
                part_d = debts[i : i + chunk]
                conn.execute(debts_table.delete().where(debts_table.c.contract_account.in_(
                    [d[0] for d in part_d])))  # fmt: skip
                conn.execute(insert(debts_table), [
                    {"contract_account": d[0], "amount": d[1].minor, "currency": d[1].currency}
                    for d in part_d])  # fmt: skip

    def set_debt(self, contract_account: str, amount: Money) -> None:
        with self._writer.begin() as conn:
            conn.execute(
                debts_table.delete().where(debts_table.c.contract_account == contract_account)
            )
            conn.execute(
                insert(debts_table).values(
                    contract_account=contract_account,
                    amount=amount.minor,
                    currency=amount.currency,
                )
            )


def _base(conn: Connection) -> tuple[int, str]:
    if not inspect(conn).has_table(base_table.name):  # a journal before housekeeping (0005)
        return 0, GENESIS
    row = conn.execute(select(base_table.c.seq, base_table.c.hash)).first()
    return (row.seq, row.hash) if row else (0, GENESIS)


_COLUMNS = ("seq", "ts", "kind", "txid", "key", "amount", "currency", "data", "prev_hash", "hash")


def _keyed_from(conn: Connection) -> int | None:
    """The first entry hashed with the kiosk's chain secret (meta `KEYED_FROM`), or None."""
    q = select(meta_table.c.value).where(meta_table.c.name == KEYED_FROM)
    value = conn.execute(q).scalar()
    if value is None:
        return None
    if not str(value).isdigit() or int(value) < 1:
        raise ChainBroken(None, f"meta {KEYED_FROM} is {value!r}, not an entry's number")
    return int(value)


def check_entry(
    row: Mapping[str, Any], seq: int, prev: str, secret: bytes | None = None,
    keyed_from: int | None = None,
) -> str:  # fmt: skip
    """One stored entry (its columns by name) where the chain expects entry `seq` after the
    hash `prev`: its hash, or ChainBroken. Entries from `keyed_from` on are hashed with the
    kiosk's chain `secret` (without it they cannot be checked: ChainBroken)."""
    if row["seq"] != seq:
        raise ChainBroken(seq, f"missing (next stored entry is {row['seq']})")
    if row["prev_hash"] != prev:
        raise ChainBroken(seq, "does not link to the entry before it")
    try:
        key = keyed(seq, secret, keyed_from)
    except LookupError as err:
        raise ChainBroken(seq, f"{err}: verify needs it ([journal] chain_secret in the "
                               "secrets file)") from None  # fmt: skip
    content = (row["ts"], row["kind"], row["txid"], row["key"], row["amount"], row["currency"])
    if entry_hash(prev, seq, *content, row["data"], key) != row["hash"]:
        if key is not None and entry_hash(prev, seq, *content, row["data"]) == row["hash"]:
            raise ChainBroken(seq, f"content does not match its hash: a plain hash where the "
                                   f"chain is keyed (from entry {keyed_from} on): computed "
                                   "without the kiosk's chain secret")  # fmt: skip
        if key is None and secret is not None and entry_hash(
                prev, seq, *content, row["data"], secret) == row["hash"]:  # fmt: skip
            begin = f"at entry {keyed_from}" if keyed_from else "nowhere"
            raise ChainBroken(seq, "content does not match its hash: keyed, where the journal "
                                   f"says its keyed entries begin {begin} (meta {KEYED_FROM} "
                                   "removed or altered?)")  # fmt: skip
        raise ChainBroken(seq, "content does not match its hash (altered)")
    return str(row["hash"])


def verify_chain(engine: Engine, secret: bytes | None = None, tally: Tally | None = None) -> int:
    """Check the live chain (from where housekeeping left it, see `Journal.base`; entries from
    the meta `KEYED_FROM` on with the kiosk's chain `secret`) and the head; return the number
    of live entries or raise ChainBroken. `tally` counts what the entries say of the cash box
    and the devices' counters (`Tally.compare` checks the tables against it)."""
    with engine.connect() as conn:
        base, prev = _base(conn)
        keyed_from = _keyed_from(conn) if inspect(conn).has_table(meta_table.name) else None
        # the entries before `keyed_from` are plain; a number past every entry: none keyed
        plain_below = keyed_from if keyed_from is not None else 2**63
        expected_seq = base
        # the DB-API cursor, rows as plain tuples: a verify reads every entry, and SQLAlchemy's
        # rows cost more than the hashing
        cursor = conn.connection.cursor()
        try:
            cursor.execute("SELECT seq, ts, kind, txid, key, amount, currency, data, prev_hash, "
                           "hash FROM journal ORDER BY seq")  # fmt: skip
            for row in cursor:
                expected_seq += 1
                seq, ts, kind, txid, key, amount, currency, data, prev_hash, hash_ = row
                if (
                    seq != expected_seq
                    or prev_hash != prev
                    or (seq >= plain_below and secret is None)
                    or hash_ != entry_hash(prev, seq, ts, kind, txid, key, amount, currency,
                                           data, secret if seq >= plain_below else None)
                ):
                    check_entry(dict(zip(_COLUMNS, row, strict=True)), expected_seq, prev,
                                secret, keyed_from)  # fmt: skip
                try:
                    content = json.loads(data)
                    payload(kind, content)
                except ValueError as err:  # PayloadError, or data that is not JSON
                    raise ChainBroken(seq, f"its {kind} payload: {err}") from None
                if tally is not None and kind in TALLIED:
                    tally.add(seq, kind, amount, content)
                prev = hash_
        finally:
            cursor.close()
        heads = conn.execute(select(head_table)).all()
    if expected_seq == 0 and not heads:
        return 0
    if len(heads) != 1:
        raise ChainBroken(None, "head record missing or duplicated")
    head = heads[0]
    if head.seq != expected_seq:
        first_missing = expected_seq + 1 if head.seq > expected_seq else head.seq
        raise ChainBroken(
            first_missing,
            f"journal ends at {expected_seq} but its head says {head.seq} (entries removed?)",
        )
    if head.hash != prev:
        raise ChainBroken(head.seq, "head hash does not match the last entry")
    return expected_seq - base


def claim_of(e: Entry) -> Money | None:
    """The claim an entry makes on the contract account (credit on a key that no payment backs
    any more), or None: a `claim`, or a card payment given back after its credit was written."""
    if e.amount is None or not e.amount:
        return None
    if e.kind == Kind.CLAIM or (e.kind == Kind.CARD_REVERSED and e.data.get("after_credit")):
        return e.amount
    return None


def iter_transactions(entries: Iterable[Entry]) -> Iterator[dict[str, Any]]:
    """Group entries into one summary per transaction, in order of opening."""
    txs: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.txid is None:
            continue
        t = txs.setdefault(
            e.txid,
            {
                "txid": e.txid,
                "opened": e.ts,
                "key": e.key,
                "method": None,
                "paid": 0,
                "fee": 0,
                "debt": 0,
                "credit": 0,
                "currency": None,
                "outcome": "open",
            },
        )
        if e.kind == Kind.TX_OPENED:
            t["method"] = e.data.get("method")
        elif e.kind in (Kind.CASH_IN, Kind.CARD_APPROVED) and e.amount is not None:
            t["paid"] += e.amount.minor
            t["currency"] = e.amount.currency
        elif e.kind == Kind.CARD_REVERSED and e.amount is not None:
            t["paid"] -= e.amount.minor
        elif e.kind == Kind.TX_CLOSED:
            t["outcome"] = e.data.get("outcome")
            for k in ("fee", "debt", "credit"):
                t[k] = e.data.get(k, 0)
        elif e.kind == Kind.PENDING_CREDIT and e.data.get("reason") == "head_office":
            # a credit head office gave this kiosk to write: no payment here
            t["method"] = "office"
            t["outcome"] = "pending"
            if e.amount is not None:
                t["credit"], t["currency"] = e.amount.minor, e.amount.currency
        elif e.kind == Kind.PENDING_WRITTEN:
            t["outcome"] = "pending_written"
        elif e.kind == Kind.PENDING_RELEASED:
            t["outcome"] = "pending_released"
    yield from txs.values()
