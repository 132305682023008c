"""The journal: durable settings, the hash chain, and tampering with any single row."""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiosk.domain.errors import ChainBroken, JournalError
from kiosk.domain.events import KeyStatus, Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal, iter_transactions
from tests.conftest import run_kiosk

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def E(minor: int) -> Money:
    return Money(minor, "EUR")


def fill(j: Journal, n_tx: int = 4) -> None:
    """A few complete cash transactions, one commit per money event as the kiosk does."""
    t = T0
    for i in range(n_tx):
        tx = f"DEMO-01-T{i}"
        t += timedelta(minutes=1)
        j.append([Record(Kind.TX_OPENED, tx, "K1", None, {"method": "cash"})], t)
        j.append([Record(Kind.CASH_IN, tx, "K1", E(1000), {"medium": "note", "channel": 2})], t)
        j.append([Record(Kind.CASH_IN, tx, "K1", E(200), {"medium": "coin", "channel": 5})], t)
        j.append(
            [
                Record(
                    Kind.SPLIT,
                    tx,
                    "K1",
                    E(1200),
                    {"paid": 1200, "fee": 0, "debt": 0, "credit": 1200},
                ),
                Record(Kind.KEY_WRITTEN, tx, "K1", E(1200), {"credit_after": 5000}),
                Record(Kind.TX_CLOSED, tx, "K1", None, {"outcome": "completed", "credit": 1200}),
            ],
            t,
        )


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.sqlite", "DEMO-01")
    fill(j)
    return j


def test_durable_settings(journal: Journal) -> None:
    with journal.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_entries_are_numbered_chained_and_in_utc(journal: Journal) -> None:
    entries = journal.entries()
    assert [e.seq for e in entries] == list(range(1, 25))
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))
    assert entries[0].ts.tzinfo == UTC and entries[0].ts == T0 + timedelta(minutes=1)
    assert journal.verify() == 24
    with sqlite3.connect(journal.path) as db:
        assert db.execute("select ts from journal where seq = 1").fetchone()[0].endswith("Z")


def test_append_refuses_naive_times(journal: Journal) -> None:
    with pytest.raises(ValueError):
        journal.append([Record(Kind.FAULT, data={"device": "coin"})], datetime(2026, 1, 1))
    assert journal.verify() == 24


def test_transactions_summary(journal: Journal) -> None:
    txs = list(iter_transactions(journal.entries()))
    assert [(t["paid"], t["credit"], t["outcome"]) for t in txs] == [(1200, 1200, "completed")] * 4


def test_a_journal_belongs_to_one_kiosk(journal: Journal) -> None:
    with pytest.raises(JournalError, match="journal of kiosk DEMO-01"):
        Journal(journal.path, "OTHER-01")


def test_reopened_journal_continues_the_chain(journal: Journal) -> None:
    journal.close()
    j2 = Journal(journal.path, "DEMO-01")
    j2.append([Record(Kind.FAULT, data={"device": "coin"})], T0)
    assert j2.verify() == 25


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("select count(*) from journal").fetchone()[0]


EDITS = {
    "amount": "update journal set amount = coalesce(amount, 0) + 100 where seq = ?",
    "kind": "update journal set kind = 'fault' where seq = ?",
    "data": "update journal set data = replace(data, '}', ',\"x\":1}') where seq = ?",
    "ts": "update journal set ts = '2020-01-01T00:00:00.000000Z' where seq = ?",
    "key": "update journal set key = 'K9' where seq = ?",
    "txid": "update journal set txid = 'X' where seq = ?",
    "hash": "update journal set hash = substr(hash, 2) || '0' where seq = ?",
    "delete": "delete from journal where seq = ?",
}


@pytest.mark.parametrize("what", list(EDITS))
def test_any_edited_or_deleted_row_breaks_verify(journal: Journal, what: str) -> None:
    n = _rows(journal.path)
    for seq in range(1, n + 1):  # every single row, one at a time on a fresh copy
        copy = journal.path.with_name(f"copy-{what}-{seq}.sqlite")
        with sqlite3.connect(journal.path) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        with sqlite3.connect(copy) as db:
            db.execute(EDITS[what], (seq,))
        j = Journal(copy, "DEMO-01")
        with pytest.raises(ChainBroken) as err:
            j.verify()
        assert err.value.seq in (seq, seq + 1), (what, seq, str(err.value))
        j.close()
        copy.unlink()


@pytest.mark.parametrize(
    "sql",
    [
        "delete from journal_head",
        "update journal_head set seq = seq - 1",
        "update journal_head set hash = '00'",
        "insert into journal_head values (2, 24, 'x')",
    ],
)
def test_head_row_edits_break_verify(journal: Journal, sql: str) -> None:
    with sqlite3.connect(journal.path) as db:
        db.execute(sql)
    with pytest.raises(ChainBroken):
        journal.verify()


def _verify_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return run_kiosk("journal", "verify", "--db", str(path), data_dir=path.parent)


def test_verify_command_passes_untouched_and_fails_naming_the_entry(journal: Journal) -> None:
    ok = _verify_cli(journal.path)
    assert ok.returncode == 0 and "ok, 24 entries" in ok.stdout
    with sqlite3.connect(journal.path) as db:
        db.execute("update journal set amount = 100000 where seq = 8")
    bad = _verify_cli(journal.path)
    assert bad.returncode == 1
    assert "FAILED at entry 8: content does not match its hash" in bad.stderr

    with sqlite3.connect(journal.path) as db:
        db.execute("update journal set amount = 1000 where seq = 8")  # put it back
    assert _verify_cli(journal.path).returncode == 0
    with sqlite3.connect(journal.path) as db:
        db.execute("delete from journal where seq = 24")  # the newest entry
    bad = _verify_cli(journal.path)
    assert bad.returncode == 1 and "entry 24" in bad.stderr


def test_local_debt_follows_what_was_recovered(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    j.set_key("K1", KeyStatus.ACTIVE, "4711")
    j.set_debt("4711", E(700))
    j.append(
        [
            Record(
                Kind.TX_OPENED, "T1", "K1", None, {"method": "cash", "contract_account": "4711"}
            ),
            Record(Kind.CASH_IN, "T1", "K1", E(2000), {"medium": "note"}),
            Record(Kind.TX_CLOSED, "T1", "K1", None, {"outcome": "completed", "debt": 500}),
        ],
        T0,
    )
    assert j.account_for("K1", "4711", "EUR").debt == E(200)
    j.append(
        [
            Record(
                Kind.TX_OPENED, "T2", "K1", None, {"method": "cash", "contract_account": "4711"}
            ),
            Record(Kind.TX_CLOSED, "T2", "K1", None, {"outcome": "completed", "debt": 900}),
        ],
        T0,
    )
    assert j.account_for("K1", "4711", "EUR").debt == E(0)  # never below zero
    assert j.account_for("K404", "0", "EUR").status == KeyStatus.UNKNOWN


def test_a_card_reversal_after_credit_becomes_debt_on_the_account(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    j.append(
        [
            Record(
                Kind.TX_OPENED, "T1", "K1", None, {"method": "cash", "contract_account": "4711"}
            ),
            Record(Kind.CARD_APPROVED, "T1", "K1", E(3000), {}),
            Record(Kind.TX_CLOSED, "T1", "K1", None, {"outcome": "completed", "credit": 3000}),
        ],
        T0,
    )
    j.append([Record(Kind.CARD_REVERSED, "T1", None, E(3000), {"after_credit": True})], T0)
    assert j.account_for("K1", "4711", "EUR").debt == E(3000)


def test_a_credit_brought_twice_at_once_is_journaled_once(tmp_path: Path) -> None:
    """The sync thread (head office's reference data) and the engine (a key's claim) may bring
    the same credit at the same moment: one pending credit, never two."""
    import threading

    j = Journal(tmp_path / "j.sqlite", "K")
    credit = Record(
        Kind.PENDING_CREDIT, "HO-1", "K-1", Money(500, "EUR"), {"reason": "head_office"}
    )
    start = threading.Barrier(8)
    added: list[int] = []

    def bring() -> None:
        start.wait()
        added.append(len(j.add_credits([credit, credit], T0)))

    threads = [threading.Thread(target=bring) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(added) == [0] * 7 + [1]
    assert [e.txid for e in j.entries() if e.kind == Kind.PENDING_CREDIT] == ["HO-1"]
    j.close()


def test_two_writers_on_one_journal_keep_one_chain(tmp_path: Path) -> None:
    """Each Journal keeps the head it wrote last; another writer's entry since makes its next
    insert collide (the entry number is the key), and it reads the head again: no gap, no
    fork, every entry once, the cash box and counters as the entries say."""
    a = Journal(tmp_path / "j.sqlite", "DEMO-01")
    b = Journal(tmp_path / "j.sqlite", "DEMO-01")
    now = datetime(2026, 11, 30, 9, tzinfo=UTC)
    for i in range(6):
        writer = a if i % 3 else b
        writer.append([Record(Kind.CASH_IN, f"T{i}", "K1", Money(200, "EUR"),
                              {"medium": "coin", "counter": i + 1})], now)  # fmt: skip
    assert [e.seq for e in a.entries()] == list(range(1, 7))
    assert a.verify() == 6 and b.verify() == 6
    assert a.cash_box() == ({("coin", 200): 6}, 0)
    assert a.acceptor_counters() == {"coin": 6}
    a.close()
    b.close()
