"""Journal housekeeping (#18): acknowledged old entries move into archive segments, the chain
stays one and verifies, nothing is lost when the move is killed at any moment, and head
office's acknowledged hash anchors the chain."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kiosk.adapters.head_office import Syncer
from kiosk.domain.errors import ChainBroken
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.archive import (
    ARCHIVE_FLOOR,
    Housekeeper,
    Policy,
    archive_dir,
    housekeep,
    read_rows,
    segments,
    verify_all,
)
from kiosk.ledger.journal import ANCHOR, WATERMARK, Journal
from sync.wire.protocol import entry_hash
from tests.conftest import ROOT, HeadOffice, run_kiosk

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
EUR = Money(1000, "EUR")
#: small segments, so that a test journal makes several
POLICY = Policy(archive_after=timedelta(days=30), keep_archives=timedelta(days=365),
                segment_entries=400, min_entries=50)  # fmt: skip


def day(n: int, per_day: int = 10) -> list[Record]:
    out: list[Record] = []
    for i in range(per_day):
        tx, key = f"DEMO-01-{n:04}-{i}", f"K-{i % 7}"
        out += [
            Record(Kind.TX_OPENED, tx, key, None, {"method": "cash"}),
            Record(Kind.CASH_IN, tx, key, EUR, {"medium": "note", "counter": n * 100 + i}),
            Record(Kind.KEY_WRITTEN, tx, key, EUR, {"credit_after": 1000}),
            Record(Kind.TX_CLOSED, tx, key, None, {"outcome": "completed", "debt": 0}),
        ]
    return out


def acknowledge(j: Journal, upto: int | None = None) -> None:
    """Head office holds the entries up to `upto` (all): the watermark and the anchor, as the
    kiosk's sync sets them from head office's answer."""
    upto = j.last_seq() if upto is None else upto
    row = j.raw_entries(after=upto - 1, limit=1)[0]
    j.set_meta(WATERMARK, str(upto), **{ANCHOR: f"{upto} {row['hash']}"})


def make(folder: Path, days: int = 60, acked_all: bool = True) -> Journal:
    """`days` days of top-ups from T0; a credit from head office on day 3, written on day 4;
    head office has acknowledged everything (or nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    j = Journal(folder / "journal-DEMO-01.sqlite", "DEMO-01", synchronous="OFF")
    for n in range(days):
        records = day(n)
        if n == 3:
            records.append(Record(Kind.PENDING_CREDIT, "HO-7", "K-1", EUR, {"reason": "x"}))
        if n == 4:
            records.append(Record(Kind.PENDING_WRITTEN, "HO-7", "K-1", EUR, {}))
        j.append(records, T0 + timedelta(days=n))
    if acked_all:
        acknowledge(j)
    return j


def everything(j: Journal, first: int = 1) -> list[dict[str, Any]]:
    """Every entry on the kiosk from `first` (where its chain starts), archived and live, in
    order (each once)."""
    out: list[dict[str, Any]] = []
    for seg in segments(archive_dir(j), j.kiosk_id):
        out += [
            r
            for r in read_rows(seg)
            if r["seq"] >= first and (not out or r["seq"] > out[-1]["seq"])
        ]
    last = out[-1]["seq"] if out else 0
    return out + [r for r in j.raw_entries() if r["seq"] > last]


def test_old_acknowledged_entries_move_into_chained_segments_and_nothing_changes(
    tmp_path: Path,
) -> None:
    j = make(tmp_path)
    before = j.raw_entries()
    now = T0 + timedelta(days=60)
    report = housekeep(j, now, POLICY, vacuum=True)
    # the 30 days before the cut-off, 1202 entries, in whole segments of 400: the last two
    # stay live until more are due (no segment of a handful)
    assert report.archived == 1200 and len(report.segments) == 3
    assert report.vacuumed and report.bytes_after < report.bytes_before
    assert j.raw_entries()[0]["seq"] == 1201 and j.base()[0] == 1200
    assert everything(j) == before  # every entry, byte for byte, in segments or live
    v = verify_all(j)
    assert (v.archived, v.segments, v.live, v.first) == (1200, 3, len(before) - 1200, 1)
    assert j.verify() == len(before) - 1200  # the live part verifies on its own
    # the live journal goes on from the archive: new entries chain as before
    j.append(day(61), now)
    assert verify_all(j).live == len(before) - 1200 + 40
    # what the automat reads after the move: a credit head office sends again is still known,
    # the note validator resumes at its last counter
    assert j.credit_known("HO-7")
    assert j.acceptor_counters()["notes"] == 61 * 100 + 9
    assert housekeep(j, now, POLICY).archived == 0  # nothing more is due


def test_only_what_head_office_holds_is_archived(tmp_path: Path) -> None:
    j = make(tmp_path, acked_all=False)
    now = T0 + timedelta(days=60)
    assert housekeep(j, now, POLICY).archived == 0  # head office holds nothing yet
    acknowledge(j, 500)
    assert housekeep(j, now, POLICY).archived == 500 and j.base()[0] == 500
    assert verify_all(j).live == j.last_seq() - 500


@pytest.mark.parametrize("what", ["transaction", "credit"])
def test_nothing_still_open_is_archived(tmp_path: Path, what: str) -> None:
    """A transaction a crash left open, a credit still owed: what the automat reads at start
    and at the key stays live, and everything after it too (the chain has no holes)."""
    j = make(tmp_path, days=5)
    if what == "transaction":
        j.append([Record(Kind.TX_OPENED, "OPEN-1", "K-3", None, {"method": "cash"})],
                 T0 + timedelta(days=5))  # fmt: skip
    else:
        j.append([Record(Kind.PENDING_CREDIT, "OPEN-1", "K-3", EUR, {"reason": "x"})],
                 T0 + timedelta(days=5))  # fmt: skip
    for n in range(5, 20):
        j.append(day(n), T0 + timedelta(days=n))
    acknowledge(j)
    opened = j.by_txid("OPEN-1")[0].seq
    report = housekeep(j, T0 + timedelta(days=90), POLICY)
    assert report.archived == opened - 1 and j.base()[0] == opened - 1
    if what == "transaction":
        assert j.open_txids() == ["OPEN-1"]
    else:
        assert [c.txid for c in j.pending_credits("K-3")] == ["OPEN-1"]
    assert verify_all(j).live == j.last_seq() - opened + 1


def test_segments_go_after_their_retention_and_the_chain_starts_at_the_floor(
    tmp_path: Path,
) -> None:
    j = make(tmp_path)
    housekeep(j, T0 + timedelta(days=60), POLICY)
    segs = segments(archive_dir(j), "DEMO-01")
    # a year after the second segment's newest entry: the first two go
    later = datetime.fromisoformat(segs[1].last_ts.replace("Z", "+00:00")) + timedelta(days=366)
    report = housekeep(j, later, POLICY)
    assert report.deleted == [segs[0].path.name, segs[1].path.name]
    assert j.get_meta(ARCHIVE_FLOOR) == f"{segs[1].last} {segs[1].last_hash}"
    v = verify_all(j)
    assert v.first == segs[1].last + 1 and v.segments == len(segs) - 2 + len(report.segments)


def test_a_changed_missing_or_rebuilt_archive_does_not_verify(tmp_path: Path) -> None:
    j = make(tmp_path)
    housekeep(j, T0 + timedelta(days=60), POLICY)
    segs = segments(archive_dir(j), "DEMO-01")
    # an amount changed in the second segment
    path = segs[1].path
    original = path.read_bytes()
    lines = gzip.decompress(original).decode().splitlines()
    row = json.loads(lines[5])
    row["amount"] = 100
    lines[5] = json.dumps(row)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(ChainBroken, match=f"entry {row['seq']}: content does not match"):
        verify_all(j)
    # a segment missing
    path.unlink()
    with pytest.raises(ChainBroken, match=f"entry {segs[1].first}: missing"):
        verify_all(j)
    path.write_bytes(original)
    assert verify_all(j).segments == len(segs)
    # the command line says so too, exit 1 and the entry named
    site = ROOT / "config" / "demo.toml"
    res = run_kiosk("journal", "verify", "--site", str(site), "--db", str(j.path))
    assert res.returncode == 0 and "1200 in 3 archive segments" in res.stdout, res.stderr
    segs[2].path.unlink()
    res = run_kiosk("journal", "verify", "--site", str(site), "--db", str(j.path))
    assert res.returncode == 1 and f"FAILED at entry {segs[2].first}: missing" in res.stderr


def rebuild_from_scratch(j: Journal, change_seq: int) -> None:
    """What a forger with the journal file could do: change an entry and compute every hash
    after it again, the head included: the chain is whole again."""
    db = j.engine.raw_connection()
    try:
        cur = db.cursor()
        rows = cur.execute("SELECT seq, ts, kind, txid, key, amount, currency, data, prev_hash "
                           "FROM journal ORDER BY seq").fetchall()  # fmt: skip
        prev = None
        for seq, ts, kind, txid, key, amount, currency, data, prev_hash in rows:
            if seq == change_seq:
                amount = 1
            prev = prev_hash if prev is None else prev
            h = entry_hash(prev, seq, ts, kind, txid, key, amount, currency, data)
            cur.execute("UPDATE journal SET amount = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                        (amount, prev, h, seq))  # fmt: skip
            prev = h
        cur.execute("UPDATE journal_head SET hash = ?", (prev,))
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_head_office_hash_anchors_the_chain(office: HeadOffice, tmp_path: Path) -> None:
    j = make(tmp_path, days=5, acked_all=False)
    status = Syncer(j, office.client(), batch=80).round(T0)
    assert status.last_error is None and status.acked == j.last_seq()
    last = j.raw_entries()[-1]
    assert j.get_meta(ANCHOR) == f"{last['seq']} {last['hash']}"
    assert office.stored()[-1] == (last["seq"], last["hash"])  # what head office holds
    assert verify_all(j).anchor == (last["seq"], last["hash"])
    rebuild_from_scratch(j, change_seq=30)
    # the chain on its own is whole again, but not where head office's hash anchors it
    with pytest.raises(ChainBroken, match="differs from the entry head office acknowledged"):
        verify_all(j)
    with pytest.raises(ChainBroken, match="differs from the entry head office acknowledged"):
        j.verify()  # (the live journal alone too)


def test_the_automat_keeps_house_daily_and_only_while_nobody_is_there(tmp_path: Path) -> None:
    j = make(tmp_path)
    idle, mono = [False], [0.0]
    keeper = Housekeeper(j, POLICY, lambda: idle[0], every=3600, monotonic=lambda: mono[0])
    now = T0 + timedelta(days=60)
    assert keeper(now) is None and j.base()[0] == 0  # a customer at the automat
    idle[0] = True
    report = keeper(now)
    assert report is not None and report.archived == 1200
    j.append(day(70), now)
    acknowledge(j)
    mono[0] = 1800
    assert keeper(now + timedelta(days=90)) is None  # not again within the hour
    mono[0] = 3601
    report = keeper(now + timedelta(days=90))
    assert report is not None and report.archived > 0
    # a failure is logged and the journal stays as it was
    (archive_dir(j) / segments(archive_dir(j), "DEMO-01")[-1].path.name).write_bytes(b"junk")
    j.append(day(71), now + timedelta(days=91))
    acknowledge(j)
    base = j.base()
    mono[0] = 9000
    assert keeper(now + timedelta(days=400)) is None and "unreadable" in (keeper.last_error or "")
    assert j.base() == base


# ---------------------------------------------------------------- killed while moving

#: housekeeping in a process of its own that kills itself (SIGKILL) at a chosen moment
CHILD = """
import os, signal, sys
from datetime import datetime, timedelta
from pathlib import Path
from sqlalchemy import event
from kiosk.ledger import archive
from kiosk.ledger.journal import Journal

where, nth, path, now = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
seen = [0]

def die_at(moment):
    if moment == where:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

replace, unlink, forget = os.replace, Path.unlink, Journal.forget_archived
def replacing(a, b):
    die_at("written")  # the segment is on disk under its temporary name
    replace(a, b)
    die_at("renamed")  # the segment is there, its entries are still live
os.replace = replacing
def unlinking(self, *a, **k):
    if self.name.endswith(".jsonl.gz"):
        die_at("floor_moved")  # the floor is past the segment, the file still there
    unlink(self, *a, **k)
Path.unlink = unlinking
j = Journal(path, "DEMO-01")
event.listen(j.engine, "commit", lambda conn: die_at("committing"))  # inside the delete's commit
policy = archive.Policy(timedelta(days=30), timedelta(days=365), 400, 50)
print("ready", flush=True)
archive.housekeep(j, datetime.fromisoformat(now), policy)
print("done")
"""


def child(where: str, nth: int, path: Path, now: datetime) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", CHILD, where, str(nth), str(path), now.isoformat()]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    make(folder).close()
    return folder


@pytest.mark.parametrize(
    "where,nth",
    [("written", 1), ("written", 3), ("renamed", 1), ("renamed", 2), ("committing", 1),
     ("committing", 3), ("floor_moved", 1)],
)  # fmt: skip
def test_killed_while_archiving_loses_nothing_and_the_chain_verifies(
    template: Path, tmp_path: Path, where: str, nth: int
) -> None:
    shutil.copytree(template, tmp_path / "data")
    path = tmp_path / "data" / "journal-DEMO-01.sqlite"
    j = Journal(path, "DEMO-01")
    before = j.raw_entries()
    j.close()
    now = T0 + timedelta(days=60)
    if where == "floor_moved":  # archive first, then kill the retention's deletion
        proc = child("none", 0, path, now)
        assert proc.communicate(timeout=60)[0].split() == ["ready", "done"]
        now = T0 + timedelta(days=60 + 400)
    proc = child(where, nth, path, now)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    j = Journal(path, "DEMO-01")
    v = verify_all(j)  # as the kill left it
    kept = everything(j, v.first)
    assert kept == before[v.first - 1 :]  # nothing lost, nothing changed
    if where != "floor_moved":
        assert v.first == 1
    # the next run (the automat's start) finishes the move, and it all still verifies
    housekeep(j, now, POLICY)
    assert not list(archive_dir(j).glob(".*.tmp"))
    v = verify_all(j)
    assert everything(j, v.first) == before[v.first - 1 :] and j.base()[0] > 0


def test_killed_at_random_moments_loses_nothing(template: Path, tmp_path: Path) -> None:
    j = Journal(template / "journal-DEMO-01.sqlite", "DEMO-01")
    before = j.raw_entries()
    j.close()
    rng = random.Random(18)
    now = T0 + timedelta(days=60)
    shutil.copytree(template, tmp_path / "timed")  # how long a whole move takes here, now
    proc = child("none", 0, tmp_path / "timed" / "journal-DEMO-01.sqlite", now)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    started = time.monotonic()
    proc.wait(timeout=60)
    whole = time.monotonic() - started
    left = set()  # where the kills left the move: (live journal's base, segments)
    for n in range(5):
        shutil.copytree(template, tmp_path / str(n))
        path = tmp_path / str(n) / "journal-DEMO-01.sqlite"
        proc = child("none", 0, path, now)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with contextlib.suppress(subprocess.TimeoutExpired):  # the moment of the kill
            proc.wait(timeout=rng.uniform(0.05, 0.95) * whole)
        proc.kill()
        proc.communicate(timeout=60)
        j = Journal(path, "DEMO-01")
        verify_all(j)
        assert everything(j) == before
        left.add((j.base()[0], len(segments(archive_dir(j), "DEMO-01"))))
        housekeep(j, now, POLICY)  # the next start finishes it
        assert verify_all(j).archived == 1200 and everything(j) == before
        j.close()
    assert left != {(1200, 3)}, left  # some kill came in the middle of the move
