"""Schema versions (#18 item 1): a journal and a head-office database written by the release
before schema versions (tests/fixtures/release-d0ff24d, made by that release's `kiosk demo`)
upgrade and keep working; new databases are made at the newest revision; the migrations and
the models never drift apart."""

from __future__ import annotations

import io
import shutil
import sqlite3
from contextlib import closing, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select

from kiosk.adapters.head_office import Syncer
from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import Outcome, State
from kiosk.domain.events import AmountChosen, Kind, Method, MethodChosen
from kiosk.domain.money import Money
from kiosk.ledger import journal as journal_module
from kiosk.ledger.journal import Journal, counter_of, verify_chain
from kiosk.sim.fakes import FakeCoinAcceptor, FakeKey, FakeKeyReader, FakeNoteValidator
from sync.store import schema
from sync.store import tables as server
from sync.admin import main as admin
from sync.wire.client import SyncClient
from sync.admin.local import LocalHeadOffice, sqlite_url
from sync.store.schema import OutdatedSchema
from tests.conftest import ROOT, make_site

RELEASE = ROOT / "tests" / "fixtures" / "release-d0ff24d"


def admin_says(db: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = admin(["--db", db, *args])
    return code, out.getvalue(), err.getvalue()


def copy_of(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copy(RELEASE / name, tmp_path / name))


def test_head_office_of_the_release_before_is_refused_until_upgraded(tmp_path: Path) -> None:
    db = sqlite_url(copy_of("headoffice.sqlite", tmp_path))
    with pytest.raises(OutdatedSchema, match=f"this release needs {server.HISTORY.head}"):
        server.open_db(db)
    code, _out, err = admin_says(db, "report")
    assert code == 2 and "sync.admin --db URL upgrade" in err
    code, out, _err = admin_says(db, "upgrade")
    assert code == 0 and f"-> {server.HISTORY.head}" in out
    code, out, _err = admin_says(db, "report")
    lines = [line.split() for line in out.splitlines()[1:]]
    assert [(m, a) for _k, _d, m, a, _c in lines] == [
        ("card", "30.00"), ("coin", "10.00"), ("note", "20.00")
    ]  # fmt: skip
    engine = server.open_db(db)
    try:
        with engine.connect() as conn:
            book = conn.execute(select(server.credits).order_by(server.credits.c.credit_id)).all()
            entries = conn.execute(select(server.entries)).all()
    finally:
        engine.dispose()
    assert len(entries) == 32
    assert [(c.credit_id[:3], c.written_by, c.pinned, c.lease_until) for c in book] == [
        ("DEM", "DEMO-01", False, None), ("HO-", "DEMO-01", False, None)
    ]  # fmt: skip
    head = server.HISTORY.head
    assert admin_says(db, "upgrade")[1].strip() == f"head office's database: {head} -> {head}"


def test_the_journal_of_the_release_before_upgrades_with_a_verified_backup_and_works(
    tmp_path: Path,
) -> None:
    """Upgraded at its first opening, a backup first; then a top-up, the chain, and a sync
    with the upgraded head office of the same release, which holds the old entries already."""
    path = copy_of("journal-DEMO-01.sqlite", tmp_path)
    with closing(sqlite3.connect(path)) as db:
        old = db.execute("SELECT seq, hash FROM journal ORDER BY seq").fetchall()
    j = Journal(path, "DEMO-01")
    backup = path.with_name(path.name + ".before-" + journal_module.HISTORY.head)
    copy = create_engine(f"sqlite:///{backup}")
    try:
        assert verify_chain(copy) == len(old) == 32  # the backup is the journal as it was
    finally:
        copy.dispose()
    assert schema.state(j.engine, journal_module.HISTORY) == journal_module.HISTORY.head
    assert "ix_journal_kind" in {i["name"] for i in inspect(j.engine).get_indexes("journal")}
    assert [(e.seq, e.hash) for e in j.entries()] == old
    # what is open was filled from the history: the same as reading all of it
    with closing(sqlite3.connect(path)) as db:
        opened = db.execute(
            "SELECT txid FROM journal WHERE kind = 'tx_opened' AND txid NOT IN "
            "(SELECT txid FROM journal WHERE kind = 'tx_closed')"
        ).fetchall()
        owed = db.execute("SELECT txid FROM journal WHERE kind = 'pending_credit' AND txid NOT "
                          "IN (SELECT txid FROM journal WHERE kind IN ('pending_written', "
                          "'pending_released'))").fetchall()  # fmt: skip
    assert j.open_txids() == [t for (t,) in opened]
    assert sorted(t for t, _k in j.open_credits()) == sorted(t for (t,) in owed)
    # and the cash box's count equals counting the entries since the last emptying
    box: dict[tuple[str, int], int] = {}
    with closing(sqlite3.connect(path)) as db:
        emptied = db.execute("SELECT COALESCE(MAX(seq), 0) FROM journal "
                             "WHERE kind = 'cashbox_emptied'").fetchone()[0]  # fmt: skip
        for medium, minor in db.execute(
            "SELECT json_extract(data, '$.medium'), amount FROM journal WHERE seq > ? AND "
            "kind IN ('cash_in', 'cash_unattributed', 'test_cash')",
            (emptied,),
        ):
            box[(medium or "coin", minor)] = box.get((medium or "coin", minor), 0) + 1
    assert j.cash_box()[0] == box and sum(box.values()) > 0
    # the acceptors' counters: the newest each device journaled, as reading back found them
    counters: dict[str, int] = {}
    for e in reversed(j.entries()):
        if (counted := counter_of(e.kind, e.data)) is not None:
            counters.setdefault(*counted)
    assert j.acceptor_counters() == counters and counters
    # a top-up on it
    site = make_site("demo")
    reader, notes = FakeKeyReader(), FakeNoteValidator(site.notes)
    kiosk = Kiosk(site, j, Devices(reader=reader, coin=FakeCoinAcceptor(site.coins), notes=notes),
                  utc_now)  # fmt: skip
    key = FakeKey("K-1001", "4711001", credit=0)
    reader.insert(key)
    kiosk.drain()
    kiosk.submit(AmountChosen(Money(2000, "EUR")))
    kiosk.submit(MethodChosen(Method.CASH))
    kiosk.drain()
    assert notes.insert(Money(2000, "EUR"))
    kiosk.drain()
    assert kiosk.view().state == State.DONE and kiosk.view().outcome == Outcome.COMPLETED
    written = j.entries_of_kind(Kind.KEY_WRITTEN)[-1]  # (the account's debt took its share)
    assert written.amount is not None and key.credit == written.amount.minor > 0
    assert j.verify() == j.last_seq() > 32
    # and a sync with the head office of that release, upgraded
    ho = LocalHeadOffice(sqlite_url(copy_of("headoffice.sqlite", tmp_path)))
    token = ho.register("DEMO-01")
    with ho:
        client = SyncClient(ho.url, token, "DEMO-01")
        status = Syncer(j, client).round(utc_now())
    assert status.last_error is None and status.acked == j.last_seq() and status.backlog == 0


def test_what_is_open_is_filled_from_the_history_when_a_journal_upgrades(tmp_path: Path) -> None:
    """A journal at revision 0002 (before the open-state tables) with transactions and
    pending credits open and closed: after the upgrade, the same are open as the history says,
    and what follows keeps them in step."""
    from alembic import command

    from kiosk.domain.events import Record

    path = tmp_path / "journal.sqlite"
    j = Journal(path, "DEMO-01")
    t0 = utc_now()
    eur = Money(500, "EUR")
    opened, closed, owed = {"method": "cash"}, {"outcome": "completed"}, {"reason": "write_failed"}
    j.append([Record(Kind.TX_OPENED, "T1", "K1", None, opened),
              Record(Kind.TX_OPENED, "T2", "K1", None, opened),
              Record(Kind.TX_CLOSED, "T1", "K1", None, closed),
              Record(Kind.PENDING_CREDIT, "T2", "K1", eur, owed),
              Record(Kind.PENDING_CREDIT, "P1", "K2", eur, owed),
              Record(Kind.PENDING_WRITTEN, "P1", "K2", eur, {}),
              Record(Kind.PENDING_CREDIT, "P2", "K2", eur, owed)], t0)  # fmt: skip
    j.close()
    engine = create_engine(sqlite_url(path))
    try:
        command.downgrade(journal_module.HISTORY.config(engine), "0002")
        assert not inspect(engine).has_table("open_tx")
    finally:
        engine.dispose()
    j = Journal(path, "DEMO-01")
    assert j.open_txids() == ["T2"]
    assert sorted(j.open_credits()) == [("P2", "K2"), ("T2", "K1")]
    j.append([Record(Kind.TX_CLOSED, "T2", "K1", None, closed),
              Record(Kind.PENDING_WRITTEN, "T2", "K1", eur, {})], t0)  # fmt: skip
    assert j.open_txids() == [] and j.open_credits() == [("P2", "K2")]
    assert [p.txid for p in j.pending_credits("K2")] == ["P2"]


def test_a_head_office_at_the_first_revision_upgrades_on_postgresql(
    office_db: str,
) -> None:
    """The same migration on both databases: the first revision made, a credit in it, then
    `upgrade`; the credit is kept, unpinned, and can be claimed."""
    from alembic import command

    engine = create_engine(office_db)
    try:
        command.upgrade(server.HISTORY.config(engine), "0001")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO credits (credit_id, key, amount, currency, origin, holder) "
                "VALUES ('HO-1', 'K1', 500, 'EUR', 'office', NULL)"
            )
        with pytest.raises(OutdatedSchema, match="is at 0001"):
            server.open_db(office_db)
        assert admin_says(office_db, "upgrade")[0] == 0
        with engine.connect() as conn:
            row = conn.execute(select(server.credits)).one()
        assert (row.credit_id, row.pinned, row.lease_until) == ("HO-1", False, None)
    finally:
        engine.dispose()


@pytest.mark.parametrize("history", ["journal", "head office"])
def test_the_migrations_make_exactly_the_models(history: str, tmp_path: Path) -> None:
    """A new database made by the migrations has the tables, columns and indexes the code's
    models describe: a model changed without its migration fails here."""
    engine = create_engine(sqlite_url(tmp_path / "new.sqlite"))
    try:
        if history == "journal":
            hist, models = journal_module.HISTORY, journal_module.metadata
        else:
            hist, models = server.HISTORY, server.metadata
        schema.upgrade(engine, hist)
        with engine.connect() as conn:
            drift = compare_metadata(MigrationContext.configure(conn), models)
        assert drift == []
    finally:
        engine.dispose()


def test_journals_made_on_several_threads_at_once(tmp_path: Path) -> None:
    """Alembic runs through a module-wide context: two journals made at the same moment (the
    crash matrix's cells) must not trip over each other."""
    import threading

    start = threading.Barrier(6)
    made: list[str] = []
    errors: list[BaseException] = []

    def make(n: int) -> None:
        start.wait()
        try:
            j = Journal(tmp_path / f"journal-{n}.sqlite", f"K-{n}")
            made.append(schema.state(j.engine, journal_module.HISTORY) or "")
            j.close()
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=make, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and made == [journal_module.HISTORY.head] * 6


def _keys_before_reason_codes(url: str) -> None:
    """A head office at 0006 whose staff typed reasons as they liked."""
    from alembic import command

    engine = create_engine(url)
    try:
        command.upgrade(server.HISTORY.config(engine), "0006")
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO ref_version (id, version) VALUES (1, 4)")
            for serial, reason in (("K1", "lost"), ("K2", "Kunde verzogen"), ("K3", "")):
                conn.exec_driver_sql(
                    "INSERT INTO ref_keys (serial, status, reason, changed) "
                    f"VALUES ('{serial}', 'blocked', '{reason}', 3)"
                )
    finally:
        engine.dispose()


def test_free_text_reasons_become_staff_notes_when_head_office_upgrades(office_db: str) -> None:
    """0007: a reason that is a code stays; other text moves to the staff's note (never sent
    to a kiosk), the reason becomes none, and the change gets a new reference version so that
    every kiosk takes it."""
    url = office_db
    _keys_before_reason_codes(url)
    assert admin_says(url, "upgrade")[0] == 0
    engine = server.open_db(url)
    try:
        with engine.connect() as conn:
            keys = conn.execute(select(server.ref_keys).order_by(server.ref_keys.c.serial)).all()
            version = conn.execute(select(server.ref_version.c.version)).scalar_one()
    finally:
        engine.dispose()
    assert [(k.serial, k.reason, k.note, k.changed) for k in keys] == [
        ("K1", "lost", "", 3), ("K2", "", "Kunde verzogen", 5), ("K3", "", "", 3)
    ]  # fmt: skip
    assert version == 5
