"""Housekeeping of the journal: old entries move into archive segments, the live journal stays
small, and the chain stays one.

An automat journals about 300 top-ups a day for ten years. Entries that head office has
acknowledged (it holds them) and that are older than `Policy.archive_after` leave the live
SQLite journal for **archive segments** in the `archive/` folder beside it: gzip-compressed JSON
lines, one header line and then each entry exactly as stored (the bytes its hash covers). A
segment verifies on its own (its header names the hash it continues from and the hash it ends
with) and chains to the next one: the last hash of a segment is where the next segment, and
after the last one the live journal (`journal_base`), continues. What is still open (a
transaction not closed, a pending credit not written or released) is never archived, so the
automat's own reads (reconciliation, pending credits, the cash box) never need a segment.

A segment is written to a temporary file, synced and renamed, and only then are its entries
deleted from the live journal, in one commit with the new base. A process killed at any
moment leaves either the entries live (a temporary file, removed next time), or a finished
segment whose entries are still live too (the next run checks that both agree and deletes
them), or the finished move. Nothing is lost, and the chain verifies in each case.

Segments are deleted on the kiosk only after `Policy.keep_archives` has passed (head office
holds their entries: they were acknowledged before they were archived); where the oldest kept
segment begins is remembered (`ARCHIVE_FLOOR`), so `verify_all` knows where the chain starts.
The hash head office acknowledged (`ANCHOR`, from the last upload) must be found at its place in
the chain: a chain rebuilt from scratch on the kiosk, every hash recomputed, no longer verifies.
A segment's keyed entries (from the journal's `KEYED_FROM` on) verify only with the kiosk's chain
secret, like the live ones; and the cash box's count and the devices' counters are counted from
the oldest entry still kept through the segments and the live journal, and compared with the
tables (`Tally`).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from kiosk.domain.errors import ChainBroken, JournalError
from kiosk.domain.events import Kind
from kiosk.ledger.journal import (
    ANCHOR,
    BUSY_TIMEOUT_MS,
    TALLIED,
    WATERMARK,
    Journal,
    Tally,
    check_entry,
    format_ts,
    journal_table,
    open_credits_table,
    open_tx_table,
)
from kiosk.ledger.kept import fsync_dir
from sync.wire.protocol import GENESIS

log = logging.getLogger(__name__)

#: meta: "seq hash" of the last entry of the newest segment deleted after its retention
ARCHIVE_FLOOR = "archive_floor"
FORMAT = "kiosk-journal-segment/1"
COLUMNS = ("seq", "ts", "kind", "txid", "key", "amount", "currency", "data", "prev_hash", "hash")


@dataclass(frozen=True)
class Policy:
    """When entries move into segments and how long segments stay on the kiosk."""

    archive_after: timedelta = timedelta(days=90)
    keep_archives: timedelta = timedelta(days=730)
    #: entries in one segment at most
    segment_entries: int = 50_000
    #: fewer entries than this are left live until more are due (no segments of a handful)
    min_entries: int = 1_000


@dataclass(frozen=True)
class Segment:
    """One archive segment, as its header describes it."""

    path: Path
    kiosk_id: str
    first: int
    last: int
    prev_hash: str
    last_hash: str
    first_ts: str
    last_ts: str

    @property
    def entries(self) -> int:
        return self.last - self.first + 1


@dataclass
class Report:
    """What one housekeeping run did."""

    archived: int = 0  # entries moved into segments
    segments: list[str] = field(default_factory=list)  # segment files written (names)
    finished: int = 0  # entries of a segment an interrupted run had written, deleted now
    deleted: list[str] = field(default_factory=list)  # segments deleted after their retention
    vacuumed: bool = False
    bytes_before: int = 0
    bytes_after: int = 0


def archive_dir(journal: Journal) -> Path:
    """Where a journal's segments are: `archive/` beside it."""
    return journal.path.parent / "archive"


def segment_name(kiosk_id: str, first: int, last: int) -> str:
    return f"journal-{kiosk_id}-{first:010d}-{last:010d}.jsonl.gz"


def segments(folder: Path, kiosk_id: str) -> list[Segment]:
    """The kiosk's segments in `folder`, oldest first (by their headers)."""
    out = []
    for path in sorted(folder.glob(f"journal-{kiosk_id}-*.jsonl.gz")):
        out.append(read_header(path))
    return sorted(out, key=lambda s: s.first)


def read_header(path: Path) -> Segment:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            head = json.loads(f.readline())
        if head.get("format") != FORMAT:
            raise ValueError(f"not a journal segment ({head.get('format')!r})")
        return Segment(path, head["kiosk_id"], int(head["first"]), int(head["last"]),
                       head["prev_hash"], head["last_hash"], head["first_ts"],
                       head["last_ts"])  # fmt: skip
    except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise ChainBroken(None, f"archive segment {path.name} unreadable: {err}") from err


def read_rows(seg: Segment) -> Iterator[dict[str, Any]]:
    """A segment's entries, as stored."""
    try:
        with gzip.open(seg.path, "rt", encoding="utf-8") as f:
            f.readline()  # the header
            for line in f:
                yield json.loads(line)
    except (OSError, EOFError, ValueError) as err:
        raise ChainBroken(None, f"archive segment {seg.path.name} unreadable: {err}") from err


def verify_segment(
    seg: Segment, anchor: tuple[int, str] | None = None, *, secret: bytes | None = None,
    keyed_from: int | None = None, tally: Tally | None = None,
) -> int:  # fmt: skip
    """Check one segment on its own: its entries chain from its `prev_hash` to its
    `last_hash`, numbered `first` to `last` (those from `keyed_from` on hashed with the chain
    `secret`); `anchor` ((seq, hash)) must match if inside; `tally` counts its entries."""
    seq, prev = seg.first - 1, seg.prev_hash
    for row in read_rows(seg):
        seq += 1
        prev = check_entry(row, seq, prev, secret, keyed_from)
        if anchor and anchor[0] == seq and anchor[1] != prev:
            raise ChainBroken(seq, "differs from the entry head office acknowledged")
        if tally is not None and row["kind"] in TALLIED:
            try:
                data = json.loads(row["data"])
            except ValueError:
                raise ChainBroken(seq, "its data is not JSON") from None
            tally.add(seq, row["kind"], row["amount"], data if isinstance(data, dict) else {})
    if seq != seg.last or prev != seg.last_hash:
        raise ChainBroken(seq, f"archive segment {seg.path.name} ends short of its header")
    return seg.entries


def _entry_meta(journal: Journal, name: str) -> tuple[int, str] | None:
    """A meta value "seq hash" (the anchor, the floor) as (seq, hash), or None if unset."""
    value = journal.get_meta(name)
    if not value:
        return None
    seq, _, hash_ = value.partition(" ")
    return int(seq), hash_


def anchor_of(journal: Journal) -> tuple[int, str] | None:
    """The entry head office acknowledged last, as (seq, hash), if it said its hash."""
    return _entry_meta(journal, ANCHOR)


@dataclass(frozen=True)
class Verified:
    archived: int  # entries verified in segments
    segments: int
    live: int  # entries verified in the live journal
    first: int  # the first entry of the chain that is still on the kiosk
    anchor: tuple[int, str] | None  # head office's hash, found at its place


def verify_all(journal: Journal, folder: Path | None = None) -> Verified:
    """Segments and live journal as one chain, from the oldest segment still kept (or the
    first entry) to the head, with head office's acknowledged hash at its place; raises
    ChainBroken."""
    folder = folder or archive_dir(journal)
    anchor = anchor_of(journal)
    seq, prev = _entry_meta(journal, ARCHIVE_FLOOR) or (0, GENESIS)
    first = seq + 1
    archived = count = 0
    secret, keyed_from = journal.chain_secret, journal.keyed_from()
    tally = Tally(from_start=first == 1)
    for seg in segments(folder, journal.kiosk_id) if folder.exists() else []:
        if seg.last <= seq:
            continue  # wholly before the floor (a deletion that was interrupted)
        if seg.first != seq + 1:
            raise ChainBroken(seq + 1, f"missing: the archive goes on at {seg.first}")
        if seg.prev_hash != prev:
            raise ChainBroken(seg.first, f"archive segment {seg.path.name} does not link to "
                                         "the entry before it")  # fmt: skip
        archived += verify_segment(seg, anchor, secret=secret, keyed_from=keyed_from,
                                   tally=tally)  # fmt: skip
        count += 1
        seq, prev = seg.last, seg.last_hash
    base, base_hash = journal.base()
    if base > seq:
        raise ChainBroken(seq + 1, f"missing: the live journal begins after {base}")
    live = journal.verify(tally)  # (live entries a segment holds too: counted once)
    if base < seq:  # a segment whose entries are still live (its move was interrupted)
        rows = journal.raw_entries(after=seq - 1, limit=1)
        if not rows or rows[0]["hash"] != prev:
            raise ChainBroken(seq, "the archive and the live journal disagree")
    elif base_hash != prev:
        raise ChainBroken(base + 1, "the live journal does not link to the archive")
    # (head office's hash where it is live, and there whenever the watermark says head office
    # holds entries: journal.verify)
    if anchor is not None and anchor[0] < first:
        anchor = None  # before what the kiosk keeps: head office alone holds it now
    return Verified(archived, count, live, first, anchor)


# ---------------------------------------------------------------- housekeeping


def housekeep(
    journal: Journal,
    now: datetime,
    policy: Policy = Policy(),
    *,
    folder: Path | None = None,
    idle: Callable[[], bool] = lambda: True,
    vacuum: bool = False,
) -> Report:
    """Move what is due into segments (while `idle()` says the automat has no customer),
    delete segments past their retention, and with `vacuum` give the freed pages back to
    the file system (before the automat opens: SQLite's VACUUM holds the journal meanwhile)."""
    folder = folder or archive_dir(journal)
    folder.mkdir(parents=True, exist_ok=True)
    report = Report(bytes_before=_size(journal))
    for tmp in folder.glob(".*.tmp"):  # a segment an interrupted run did not finish
        tmp.unlink()
    _finish_interrupted(journal, folder, report)
    while idle():
        span = _due(journal, now, policy)
        if span is None:
            break
        _archive(journal, folder, span, now, report)
    _expire(journal, folder, now, policy, report)
    if vacuum:
        report.vacuumed = _vacuum(journal)
    report.bytes_after = _size(journal)
    if report.archived or report.deleted or report.finished:
        log.info("journal housekeeping: %d entries archived in %d segments, %d segments "
                 "deleted after retention, %d -> %d bytes", report.archived,
                 len(report.segments), len(report.deleted), report.bytes_before,
                 report.bytes_after, extra={"event": "housekeeping"})  # fmt: skip
    return report


def _size(journal: Journal) -> int:
    total = 0
    for suffix in ("", "-wal"):
        path = journal.path.with_name(journal.path.name + suffix)
        if path.exists():
            total += path.stat().st_size
    return total


def _due(journal: Journal, now: datetime, policy: Policy) -> tuple[int, int] | None:
    """The next span of entries to archive (first, last), or None: acknowledged by head
    office, older than `archive_after`, before anything still open."""
    acked = int(journal.get_meta(WATERMARK) or 0)
    cutoff = format_ts(now - policy.archive_after)
    base, _ = journal.base()
    with journal.engine.connect() as conn:
        upper = min(acked, base + policy.segment_entries)
        for table in (open_tx_table, open_credits_table):
            oldest = conn.execute(select(func.min(table.c.seq))).scalar()
            if oldest is not None:
                upper = min(upper, oldest - 1)
        if upper - base < policy.min_entries:
            return None
        j = journal_table
        # Entries are in time order but for a clock that jumped: the span ends before the
        # first one that is not old enough.
        young = conn.execute(
            select(func.min(j.c.seq)).where(j.c.seq > base, j.c.seq <= upper, j.c.ts >= cutoff)
        ).scalar()
    if young is not None:
        upper = young - 1
    if upper - base < policy.min_entries:
        return None
    return base + 1, upper


def _archive(
    journal: Journal, folder: Path, span: tuple[int, int], now: datetime, report: Report
) -> None:
    first, last = span
    rows = journal.raw_entries(after=first - 1, limit=last - first + 1)
    base, base_hash = journal.base()
    if not rows or base != first - 1 or rows[0]["seq"] != first or rows[-1]["seq"] != last:
        raise JournalError(f"journal housekeeping: entries {first}..{last} are not all there")
    name = segment_name(journal.kiosk_id, first, last)
    head = {"format": FORMAT, "kiosk_id": journal.kiosk_id, "first": first, "last": last,
            "prev_hash": base_hash, "last_hash": rows[-1]["hash"], "first_ts": rows[0]["ts"],
            "last_ts": rows[-1]["ts"], "archived_at": format_ts(now)}  # fmt: skip
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename=name, mode="wb", fileobj=raw, mtime=0) as f:
            f.write((json.dumps(head, sort_keys=True) + "\n").encode())
            for row in rows:
                f.write((json.dumps({c: row[c] for c in COLUMNS}) + "\n").encode())
        raw.flush()
        os.fsync(raw.fileno())
    seg = read_header(tmp)
    # what is on disk, read back, before anything leaves the journal
    verify_segment(seg, secret=journal.chain_secret, keyed_from=journal.keyed_from())
    os.replace(tmp, folder / name)
    fsync_dir(folder)
    _drop(journal, replace(seg, path=folder / name), rows)
    report.archived += len(rows)
    report.segments.append(name)


def _drop(journal: Journal, seg: Segment, rows: list[dict[str, Any]]) -> None:
    """Delete a segment's entries from the live journal, with the new base and the pending
    credits that went, in one commit."""
    credits = {row["txid"] for row in rows
               if row["kind"] == str(Kind.PENDING_CREDIT) and row["txid"]}  # fmt: skip
    journal.forget_archived(seg.first, seg.last, seg.last_hash, credits)


def _finish_interrupted(journal: Journal, folder: Path, report: Report) -> None:
    """A segment written whose entries are still live (killed between the two): if both
    agree, delete them now; if not, stop with the difference named."""
    base, base_hash = journal.base()
    for seg in segments(folder, journal.kiosk_id):
        if seg.last <= base:
            continue
        if seg.first != base + 1 or seg.prev_hash != base_hash:
            raise ChainBroken(seg.first, f"archive segment {seg.path.name} does not continue "
                                         f"the journal at {base + 1}")  # fmt: skip
        verify_segment(seg, secret=journal.chain_secret, keyed_from=journal.keyed_from())
        rows = journal.raw_entries(after=base, limit=seg.entries)
        stored = [row for row in read_rows(seg)]
        if [r["hash"] for r in rows] != [r["hash"] for r in stored]:
            raise ChainBroken(seg.first, f"archive segment {seg.path.name} and the live "
                                         "journal disagree")  # fmt: skip
        _drop(journal, seg, rows)
        report.finished += len(rows)
        base, base_hash = seg.last, seg.last_hash


def _expire(journal: Journal, folder: Path, now: datetime, policy: Policy, report: Report) -> None:
    """Delete segments whose newest entry is older than `keep_archives`, oldest first: the
    floor moves first, then the file goes (killed between: the file is skipped and goes next
    time)."""
    cutoff = format_ts(now - policy.keep_archives)
    base, _ = journal.base()
    for seg in segments(folder, journal.kiosk_id):
        if seg.last_ts >= cutoff or seg.last > base:
            break
        journal.set_meta(ARCHIVE_FLOOR, f"{seg.last} {seg.last_hash}")
        seg.path.unlink()
        fsync_dir(folder)
        report.deleted.append(seg.path.name)


def _vacuum(journal: Journal) -> bool:
    """VACUUM when more than a quarter of the file is free pages (after an archiving)."""
    with journal.engine.connect() as conn:
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 1
    if free * 4 < pages:
        return False
    with closing(sqlite3.connect(journal.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                 isolation_level=None)) as db:  # fmt: skip
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return True


def policy_of(archive_after_days: int, keep_archive_days: int, segment_entries: int) -> Policy:
    """The site's `[journal]` section as a policy."""
    return Policy(timedelta(days=archive_after_days), timedelta(days=keep_archive_days),
                  segment_entries, min(1_000, segment_entries))  # fmt: skip


class Housekeeper:
    """Housekeeping in the running automat: at most once every `every` (monotonic), on the
    thread that calls it (the sync thread, after a round head office answered), and only while
    `idle()`. A failure is logged and tried again next time: the live journal is untouched by
    what failed, and the automat goes on taking money."""

    def __init__(
        self,
        journal: Journal,
        policy: Policy,
        idle: Callable[[], bool],
        every: float = 86_400.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.journal = journal
        self.policy = policy
        self.idle = idle
        self.every = every
        self.monotonic = monotonic
        self._last: float | None = None
        self.last_report: Report | None = None
        self.last_error: str | None = None

    def __call__(self, now: datetime) -> Report | None:
        mono = self.monotonic()
        if self._last is not None and mono - self._last < self.every:
            return None
        if not self.idle():
            return None
        self._last = mono
        try:
            self.last_report = housekeep(self.journal, now, self.policy, idle=self.idle)
            self.last_error = None
        except Exception as err:  # noqa: BLE001 (the sync thread's top: it must go on)
            # Each step of a move leaves a state the next run finishes (see the module's
            # doc), whatever failed; the sync thread goes on syncing.
            self.last_error = f"{type(err).__name__}: {err}"
            log.error("journal housekeeping failed (the live journal is whole): %s",
                      self.last_error, exc_info=not isinstance(err, JournalError | OSError),
                      extra={"event": "housekeeping_failed"})  # fmt: skip
            return None
        return self.last_report
