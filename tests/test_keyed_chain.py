"""The keyed hash chain and what `verify` cross-checks (#34): the red team's attacks on a
kiosk's journal file, each against the real file, the `kiosk` command and a head-office
process. Whoever can write the file but has not the kiosk's chain secret can no longer edit an
entry and compute the hashes again; the tables kept beside the entries and head office's
acknowledged hash are compared; head office raises an alarm for every fork, gap and entry whose
hash does not verify, once however often the kiosk sends it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import tomlkit
from sqlalchemy import select

from kiosk.adapters.head_office import Syncer
from kiosk.domain.errors import ChainBroken, JournalError
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.domain.site import load_chain_secret, load_site
from kiosk.ledger.archive import Policy, housekeep, read_rows, segments, verify_all
from kiosk.ledger.journal import ANCHOR, KEYED_FROM, WATERMARK, Journal
from kiosk.service.diag import export_journal, verify_export
from sync.wire.protocol import entry_hash
from sync.store.tables import alarms, kiosks, open_db
from tests.conftest import ROOT, HeadOffice, run_kiosk

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SECRET = bytes(range(32))
COLUMNS = ("seq", "ts", "kind", "txid", "key", "amount", "currency", "data")


def E(minor: int) -> Money:
    return Money(minor, "EUR")


def top_up(tx: str, note: int = 5000, counter: int = 1) -> list[Record]:
    """A cash top-up with one note, as the kiosk journals it."""
    return [
        Record(Kind.TX_OPENED, tx, "K1", None, {"method": "cash"}),
        Record(Kind.CASH_IN, tx, "K1", E(note), {"medium": "note", "channel": 4,
                                                  "counter": counter}),  # fmt: skip
        Record(Kind.KEY_WRITTEN, tx, "K1", E(note), {"credit_after": note}),
        Record(Kind.TX_CLOSED, tx, "K1", None, {"outcome": "completed", "credit": note}),
    ]


def keyed_journal(path: Path, secret: bytes | None = SECRET, n: int = 1) -> Journal:
    j = Journal(path, "DEMO-01", chain_secret=secret)
    for i in range(n):
        j.append(top_up(f"DEMO-01-T{i}", counter=i + 1), T0 + timedelta(minutes=i))
    return j


def register_keyed(office: HeadOffice, tmp_path: Path, kiosk: str = "DEMO-01") -> Path:
    """`sync.admin kiosk rotate --chain-secret-file` (the fixture added the kiosk): a new token
    (the whole output) and the kiosk's chain secret in a file for its secrets file; the head
    office's client uses it."""
    path = tmp_path / f"{kiosk}.chain.toml"
    office.tokens[kiosk] = office.admin("kiosk", "rotate", kiosk, "--chain-secret-file", str(path))
    return path


def site_file(tmp_path: Path, secrets: Path | None, url: str = "") -> Path:
    """The demo site with a secrets file (and head office's URL)."""
    doc = tomlkit.parse((ROOT / "config" / "demo.toml").read_text("utf-8"))
    if secrets is not None:
        doc.setdefault("secrets", tomlkit.table())["file"] = str(secrets)
    if url:
        doc.setdefault("head_office", tomlkit.table())["url"] = url
    path = tmp_path / "site.toml"
    path.write_text(tomlkit.dumps(doc), "utf-8")
    return path


def rehash_plain(path: Path, from_seq: int, change: dict[str, Any] | None = None) -> None:
    """What a forger with the file and without the secret does: change entry `from_seq` and
    compute its hash and every one after it again (plain SHA-256, the only hash they can),
    the head included. The tables the triggers keep are left as they are."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT seq, ts, kind, txid, key, amount, currency, data, prev_hash "
                          "FROM journal WHERE seq >= ? ORDER BY seq", (from_seq,)).fetchall()  # fmt: skip
        prev = rows[0][-1]
        for row in rows:
            entry = dict(zip(COLUMNS, row[:-1], strict=True))
            if entry["seq"] == from_seq:
                entry |= change or {}
            h = entry_hash(prev, *[entry[c] for c in COLUMNS])
            db.execute("UPDATE journal SET amount = ?, data = ?, prev_hash = ?, hash = ? "
                       "WHERE seq = ?", (entry["amount"], entry["data"], prev, h, entry["seq"]))  # fmt: skip
            prev = h
        db.execute("UPDATE journal_head SET hash = ?", (prev,))
        db.commit()


def sql(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        for s in statements:
            db.execute(s)
        db.commit()


def office_alarms(office: HeadOffice, kiosk: str = "DEMO-01") -> list[tuple[int | None, str]]:
    engine = open_db(office.db)
    try:
        with engine.connect() as conn:
            q = select(alarms.c.seq, alarms.c.text).where(alarms.c.kiosk_id == kiosk)
            return [(r.seq, r.text) for r in conn.execute(q.order_by(alarms.c.id))]
    finally:
        engine.dispose()


def keyed_from_at_office(office: HeadOffice, kiosk: str = "DEMO-01") -> int | None:
    engine = open_db(office.db)
    try:
        with engine.connect() as conn:
            return conn.execute(select(kiosks.c.keyed_from)
                                .where(kiosks.c.kiosk_id == kiosk)).scalar()  # fmt: skip
    finally:
        engine.dispose()


def verify_cli(site: Path, journal: Path) -> tuple[int, str]:
    res = run_kiosk("journal", "verify", "--site", str(site), "--db", str(journal),
                    data_dir=journal.parent)  # fmt: skip
    return res.returncode, res.stdout + res.stderr


# ---------------------------------------------------------------- the keyed chain


def test_a_keyed_journal_verifies_with_its_secret_only(tmp_path: Path) -> None:
    j = keyed_journal(tmp_path / "journal.sqlite", n=2)
    assert j.get_meta(KEYED_FROM) == "1" and j.verify() == 8
    e = j.raw_entries()[0]
    assert e["hash"] == entry_hash(*[e[c] for c in ("prev_hash", *COLUMNS)], SECRET)
    assert e["hash"] != entry_hash(*[e[c] for c in ("prev_hash", *COLUMNS)])  # not plain
    j.close()
    plain = Journal(tmp_path / "journal.sqlite", "DEMO-01")  # a process without the secret
    with pytest.raises(ChainBroken, match="entry 1: entries from 1 on are keyed with the "
                                          "kiosk's chain secret: verify needs it"):  # fmt: skip
        plain.verify()
    with pytest.raises(JournalError, match="keyed with the kiosk's chain secret from entry 1"):
        plain.append([Record(Kind.FAULT, data={"device": "coin"})], T0)
    other = Journal(tmp_path / "journal.sqlite", "DEMO-01", chain_secret=bytes(32))
    with pytest.raises(ChainBroken, match="entry 1: content does not match its hash"):
        other.verify()
    assert keyed_journal(tmp_path / "journal.sqlite", n=0).verify() == 8


def test_a_plain_journal_turns_keyed_and_a_plain_entry_after_that_breaks_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    keyed_journal(path, secret=None, n=2).close()  # before the kiosk had a secret
    j = keyed_journal(path)  # the secret installed: from the next entry on
    j.append(top_up("DEMO-01-T9", counter=9), T0 + timedelta(hours=1))
    assert j.get_meta(KEYED_FROM) == "9" and j.verify() == 16
    rows = j.raw_entries()
    assert rows[7]["hash"] == entry_hash(*[rows[7][c] for c in ("prev_hash", *COLUMNS)])
    assert rows[8]["hash"] == entry_hash(*[rows[8][c] for c in ("prev_hash", *COLUMNS)], SECRET)
    rehash_plain(path, 12)  # a keyed entry's hash computed again without the secret
    with pytest.raises(ChainBroken, match="entry 12: content does not match its hash: a plain "
                                          "hash where the chain is keyed"):  # fmt: skip
        j.verify()
    sql(path, f"UPDATE meta SET value = '99' WHERE name = '{KEYED_FROM}'")  # "keyed later"
    with pytest.raises(ChainBroken, match="entry 9: content does not match its hash: keyed, "
                                          "where the journal says its keyed entries begin at "
                                          "entry 99"):  # fmt: skip
        j.verify()


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_kiosk_add_and_rotate_print_the_token_alone_and_keep_the_chain_secret(
    office: HeadOffice, tmp_path: Path
) -> None:
    first = register_keyed(office, tmp_path)
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    secret = load_chain_secret(load_site(site_file(tmp_path, first)))
    assert secret is not None and len(secret) == 32
    again = tmp_path / "again.toml"
    token = office.admin("kiosk", "rotate", "DEMO-01", "--chain-secret-file", str(again))
    assert len(token.split()) == 1 and token != office.tokens["DEMO-01"]  # a new token
    assert again.read_text() == first.read_text()  # the same secret: its entries verify
    # a file that is there already is never overwritten, and nothing changes
    from sync.admin import main as admin

    assert admin(["--db", office.db, "kiosk", "rotate", "DEMO-01", "--chain-secret-file",
                  str(again)]) == 2  # fmt: skip
    assert office.client(token=token).upload([]) == 0  # the token from before still holds


@pytest.mark.parametrize("office_db", ["sqlite", "postgresql"], indirect=True)
def test_a_kiosk_with_a_secret_syncs_end_to_end(
    office: HeadOffice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = register_keyed(office, tmp_path)
    site = site_file(tmp_path, secrets, office.url)
    path = tmp_path / "journal-DEMO-01.sqlite"
    j = keyed_journal(path, load_chain_secret(load_site(site)), n=3)
    j.close()
    monkeypatch.setenv("KIOSK_HEAD_OFFICE_TOKEN", office.tokens["DEMO-01"])
    res = run_kiosk("sync", "now", "--site", str(site), "--db", str(path), data_dir=tmp_path)
    assert res.returncode == 0 and "head office has 12 entries" in res.stdout, res.stderr
    assert keyed_from_at_office(office) == 1 and office_alarms(office) == []
    code, said = verify_cli(site, path)
    assert code == 0 and "ok, 12 entries" in said and "head office's hash of entry 12" in said
    assert "ok" in office.admin("verify", "DEMO-01")  # head office's own check, keyed
    # the demo's site has no secret: the keyed journal does not verify there
    code, said = verify_cli(ROOT / "config" / "demo.toml", path)
    assert code == 1 and "keyed with the kiosk's chain secret: verify needs it" in said
    # and a kiosk without one (OTHER-01 registered before secrets) still syncs plain
    other = Journal(tmp_path / "other.sqlite", "OTHER-01")
    other.append(top_up("OTHER-01-T1"), T0)
    assert Syncer(other, office.client("OTHER-01")).round(T0).acked == 4
    assert keyed_from_at_office(office, "OTHER-01") is None
    assert office.admin("verify").count(" ok") == 2


# ---------------------------------------------------------------- the red team's attacks


@pytest.mark.parametrize("office_db", ["sqlite", "postgresql"], indirect=True)
def test_a_note_edited_and_rehashed_fails_verify_and_head_office_refuses_it_with_an_alarm(
    office: HeadOffice, tmp_path: Path
) -> None:
    """(a) 50.00 edited into 5.00 in the file, every hash after it computed again."""
    secrets = register_keyed(office, tmp_path)
    site = site_file(tmp_path, secrets)
    path = tmp_path / "journal-DEMO-01.sqlite"
    j = keyed_journal(path, load_chain_secret(load_site(site)), n=1)
    sync = Syncer(j, office.client())
    assert sync.round(T0).acked == 4
    j.append(top_up("DEMO-01-T1", counter=2), T0 + timedelta(minutes=5))  # not sent yet
    rehash_plain(path, 6, {"amount": 500})  # its cash_in: 50.00 -> 5.00
    code, said = verify_cli(site, path)
    assert code == 1 and "FAILED at entry 6: content does not match its hash: a plain hash " \
        "where the chain is keyed" in said, said  # fmt: skip
    for _ in range(3):  # the kiosk retries every round: one alarm
        status = sync.round(T0 + timedelta(minutes=6))
        assert status.acked == 4 and "hash does not match" in (status.last_error or "")
    assert office_alarms(office) == [(6, "upload refused: entry 6: hash does not match its "
                                         "content with the kiosk's chain secret: a plain hash "
                                         "after its keyed entries began (entry 1)")]  # fmt: skip
    assert [s for s, _h in office.stored()] == [1, 2, 3, 4]  # nothing of it stored


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_an_entry_hashed_with_another_secret_is_refused_with_an_alarm(
    office: HeadOffice, tmp_path: Path
) -> None:
    register_keyed(office, tmp_path)
    j = keyed_journal(tmp_path / "journal.sqlite", bytes(32), n=1)  # not the kiosk's secret
    body = {"kiosk_id": "DEMO-01", "entries": j.raw_entries()}
    auth = {"Authorization": f"Bearer {office.tokens['DEMO-01']}"}
    res = requests.post(office.url + "/v1/entries", json=body, headers=auth, timeout=10)
    assert res.status_code == 400 and "nor with the kiosk's chain secret" in res.text
    assert office_alarms(office) == [(1, "upload refused: entry 1: hash does not match its "
                                         "content (nor with the kiosk's chain secret)")]  # fmt: skip
    # the empty batch a kiosk asks with: what head office holds, and no alarm
    res = requests.post(office.url + "/v1/entries", json={"kiosk_id": "DEMO-01", "entries": []},
                        headers=auth, timeout=10)  # fmt: skip
    assert res.json() == {"acked": 0, "hash": "0" * 64} and len(office_alarms(office)) == 1


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_a_plain_entry_after_the_keyed_ones_began_is_refused_by_head_office(
    office: HeadOffice, tmp_path: Path
) -> None:
    """The switch-over: plain entries synced, then the secret installed; head office learns
    from the first keyed entry, and a plain one after it is refused with an alarm."""
    secrets = register_keyed(office, tmp_path)
    path = tmp_path / "journal.sqlite"
    plain = keyed_journal(path, secret=None, n=1)
    assert Syncer(plain, office.client()).round(T0).acked == 4
    plain.close()
    j = keyed_journal(path, load_chain_secret(load_site(site_file(tmp_path, secrets))), n=0)
    j.append(top_up("DEMO-01-T1", counter=2), T0 + timedelta(minutes=1))
    sync = Syncer(j, office.client())
    assert sync.round(T0).acked == 8 and keyed_from_at_office(office) == 5
    assert "ok" in office.admin("verify", "DEMO-01")  # plain before, keyed from 5
    j.append(top_up("DEMO-01-T2", counter=3), T0 + timedelta(minutes=2))
    rehash_plain(path, 9)
    assert sync.round(T0).acked == 8
    assert office_alarms(office) == [(9, "upload refused: entry 9: hash does not match its "
                                         "content with the kiosk's chain secret: a plain hash "
                                         "after its keyed entries began (entry 5)")]  # fmt: skip


def test_the_unsent_tail_deleted_fails_verify_naming_the_table(tmp_path: Path) -> None:
    """(b) the entries head office does not hold yet deleted, the head set back: the chain is
    whole, but the cash box still counts the note and the validator's counter is ahead."""
    path = tmp_path / "journal-DEMO-01.sqlite"
    j = keyed_journal(path, n=1)
    acked = j.raw_entries()[-1]
    j.set_meta(WATERMARK, "4", **{ANCHOR: f"4 {acked['hash']}"})  # head office holds 1..4
    j.append(top_up("DEMO-01-T1", counter=2), T0 + timedelta(minutes=5))
    assert j.verify() == 8
    sql(path, "DELETE FROM journal WHERE seq > 4",
        f"UPDATE journal_head SET seq = 4, hash = '{acked['hash']}'")  # fmt: skip
    with pytest.raises(ChainBroken, match="the cash box table: counts 2 x note 50.00 .*, the "
                                          "entries since its last emptying 1"):  # fmt: skip
        j.verify()
    sql(path, "UPDATE cash_box SET pieces = 1")  # the table put right as well
    with pytest.raises(ChainBroken, match="the acceptor counters table: has notes at 2, the "
                                          "entries 1"):  # fmt: skip
        j.verify()
    # entries head office holds deleted too: the watermark says they were there
    sql(path, "UPDATE acceptor_counters SET counter = 1", "DELETE FROM journal WHERE seq > 2",
        "UPDATE journal_head SET seq = 2, hash = (SELECT hash FROM journal WHERE seq = 2)")
    with pytest.raises(ChainBroken, match="entry 3: missing: the watermark says head office "
                                          "holds entries up to 4, the journal ends at 2"):  # fmt: skip
        j.verify()


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_an_older_copy_swapped_in_is_refused_as_a_fork_with_one_alarm(
    office: HeadOffice, tmp_path: Path
) -> None:
    """(c) a copy of the journal from before the last upload put in its place: it verifies
    (it is a whole, older chain), and head office refuses its next upload as a fork."""
    secrets = register_keyed(office, tmp_path)
    secret = load_chain_secret(load_site(site_file(tmp_path, secrets)))
    path = tmp_path / "journal-DEMO-01.sqlite"
    j = keyed_journal(path, secret, n=1)
    assert Syncer(j, office.client()).round(T0).acked == 4
    old = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(path)) as src, closing(sqlite3.connect(old)) as dst:
        src.backup(dst)
    j.append(top_up("DEMO-01-T1", counter=2), T0 + timedelta(minutes=1))
    assert Syncer(j, office.client()).round(T0).acked == 8
    j.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(old, path)
    j = Journal(path, "DEMO-01", chain_secret=secret)
    assert j.verify() == 4  # whole on its own
    j.append(top_up("DEMO-01-T7", 1000, counter=2), T0 + timedelta(minutes=2))
    sync = Syncer(j, office.client())
    for _ in range(3):  # a round a minute: one alarm
        status = sync.round(T0 + timedelta(minutes=3))
        assert status.acked == 4 and "fork" in (status.last_error or "")
    assert office_alarms(office) == [(5, "upload refused: entry 5 differs from the one stored "
                                         "(fork)")]  # fmt: skip
    # a gap is an alarm too, once
    j.append(top_up("DEMO-01-T8", 1000, counter=3), T0 + timedelta(minutes=4))
    rows = j.raw_entries()
    auth = {"Authorization": f"Bearer {office.tokens['DEMO-01']}"}
    for _ in range(2):
        res = requests.post(office.url + "/v1/entries", headers=auth, timeout=10,
                            json={"kiosk_id": "DEMO-01", "entries": rows[10:]})  # fmt: skip
        assert res.status_code == 409 and "gap: expected entry 9, got 11" in res.text
    assert office_alarms(office)[1:] == [(9, "upload refused: gap: expected entry 9, got 11")]


def test_the_anchor_deleted_or_changed_fails_verify(tmp_path: Path) -> None:
    """(d) head office's acknowledged hash removed while the watermark says it holds entries,
    or not the journal's entry at its place."""
    path = tmp_path / "journal-DEMO-01.sqlite"
    j = keyed_journal(path, n=2)
    last = j.raw_entries()[5]
    j.set_meta(WATERMARK, "6", **{ANCHOR: f"6 {last['hash']}"})
    assert j.verify() == 8
    sql(path, f"DELETE FROM meta WHERE name = '{ANCHOR}'")
    with pytest.raises(ChainBroken, match="entry 6: head office's acknowledged hash "
                                          r"\(meta sync_anchor\) is missing, but the watermark "
                                          "says it holds entries up to 6"):  # fmt: skip
        j.verify()
    with pytest.raises(ChainBroken, match="sync_anchor"):
        verify_all(j)
    j.set_meta(ANCHOR, f"6 {'ab' * 32}")
    with pytest.raises(ChainBroken, match="entry 6: differs from the entry head office "
                                          "acknowledged"):  # fmt: skip
        j.verify()
    j.set_meta(ANCHOR, f"6 {last['hash']}")
    assert j.verify() == 8


def test_a_cash_box_table_that_disagrees_with_the_entries_fails_verify(tmp_path: Path) -> None:
    """(e) the table the triggers keep says more (or less) than the entries since the last
    emptying: verify names the table and the denomination, on the command line too."""
    path = tmp_path / "journal-DEMO-01.sqlite"
    j = keyed_journal(path, n=3)
    j.append([Record(Kind.TEST_CASH, None, None, E(200), {"medium": "coin", "who": "T-1"})], T0)
    assert j.cash_box() == ({("note", 5000): 3, ("coin", 200): 1}, 200)
    assert j.verify() == 13
    sql(path, "UPDATE cash_box SET pieces = 2 WHERE medium = 'note'")
    with pytest.raises(ChainBroken, match=r"the cash box table: counts 2 x note 50.00 \(test "
                                          r"money 0\), the entries since its last emptying 3"):  # fmt: skip
        j.verify()
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[journal]\nchain_secret = "{SECRET.hex()}"\n')
    code, said = verify_cli(site_file(tmp_path, secrets), path)
    assert code == 1 and "FAILED at the cash box table: counts 2 x note 50.00" in said, said
    sql(path, "UPDATE cash_box SET pieces = 3 WHERE medium = 'note'",
        "UPDATE cash_box SET test_minor = 0 WHERE medium = 'coin'")  # fmt: skip
    with pytest.raises(ChainBroken, match=r"counts 1 x coin 2.00 \(test money 0\), the entries "
                                          r"since its last emptying 1 \(test money 200\)"):  # fmt: skip
        j.verify()
    sql(path, "UPDATE cash_box SET test_minor = 200 WHERE medium = 'coin'")
    # after an emptying the count starts again, and so does the check
    j.append([Record(Kind.CASHBOX_EMPTIED, amount=E(15200),
                     data={"who": "T-1", "test_money": 200})], T0)  # fmt: skip
    j.append([Record(Kind.CASH_IN, "DEMO-01-T5", "K1", E(100), {"medium": "coin"})], T0)
    assert j.cash_box() == ({("coin", 100): 1}, 0) and j.verify() == 15
    sql(path, "DELETE FROM cash_box")
    with pytest.raises(ChainBroken, match="counts 0 x coin 1.00"):
        j.verify()


# ---------------------------------------------------------------- every other place a chain is checked


def test_archive_segments_and_an_export_verify_keyed_entries_with_the_secret(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal-DEMO-01.sqlite"
    j = keyed_journal(path, n=30)
    last = j.raw_entries()[-1]
    j.set_meta(WATERMARK, str(last["seq"]), **{ANCHOR: f"{last['seq']} {last['hash']}"})
    policy = Policy(archive_after=timedelta(days=1), keep_archives=timedelta(days=365),
                    segment_entries=40, min_entries=10)  # fmt: skip
    assert housekeep(j, T0 + timedelta(days=10), policy).archived == 120
    v = verify_all(j)
    assert (v.archived, v.live) == (120, 0) and v.anchor == (120, last["hash"])
    j.append([Record(Kind.FAULT, data={"device": "coin"})], T0 + timedelta(days=10))
    exported, _csv = export_journal(j, tmp_path / "usb", "T-7", T0 + timedelta(days=10))
    assert verify_export(exported, SECRET) == 1  # the live entry after the archive
    with pytest.raises(ValueError, match="keyed with the kiosk's chain secret: the check needs"):
        verify_export(exported)
    j.close()
    plain = Journal(path, "DEMO-01")
    with pytest.raises(ChainBroken, match="keyed with the kiosk's chain secret: verify needs it"):
        verify_all(plain)
    # a segment's entry edited and its hashes computed again without the secret
    seg = segments(tmp_path / "archive", "DEMO-01")[1]
    rows = list(read_rows(seg))
    rows[1]["amount"] = 500  # a note's 50.00 into 5.00
    prev = rows[0]["prev_hash"]
    for r in rows:
        r["prev_hash"], r["hash"] = prev, entry_hash(prev, *[r[c] for c in COLUMNS])
        prev = r["hash"]
    import gzip
    import json

    with gzip.open(seg.path, "rt", encoding="utf-8") as f:
        header = f.readline()
    seg.path.write_bytes(gzip.compress((header + "".join(json.dumps(r) + "\n" for r in rows))
                                       .encode()))  # fmt: skip
    keyed = Journal(path, "DEMO-01", chain_secret=SECRET)
    with pytest.raises(ChainBroken, match=f"entry {seg.first}: content does not match its "
                                          "hash: a plain hash where the chain is keyed"):  # fmt: skip
        verify_all(keyed)


def test_a_journal_synced_before_anchors_were_kept_gets_one_when_it_upgrades(
    tmp_path: Path,
) -> None:
    """The journal migration 0007: a watermark without an anchor (written by a release before
    the anchor) gets the journal's own entry at the watermark, so that verify passes until the
    next upload brings head office's hash."""
    from alembic import command
    from sqlalchemy import create_engine

    from kiosk.ledger import journal as journal_module

    path = tmp_path / "journal.sqlite"
    j = keyed_journal(path, secret=None, n=2)
    j.set_meta(WATERMARK, "6")
    j.close()
    engine = create_engine(f"sqlite:///{path}")
    try:
        command.downgrade(journal_module.HISTORY.config(engine), "0006")
    finally:
        engine.dispose()
    j = Journal(path, "DEMO-01")
    assert j.get_meta(ANCHOR) == f"6 {j.raw_entries()[5]['hash']}" and j.verify() == 8
    assert os.path.exists(f"{path}.before-{journal_module.HISTORY.head}")
