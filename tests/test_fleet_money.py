"""Fleet money under an adversary and over time: one test per weakness the second red team
found (issue 34). Each names what happened before and what happens now."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from kiosk.domain.engine import State
from kiosk.domain.events import (
    AmountChosen,
    KeyRemoved,
    KeyWriteFailed,
    Kind,
    Method,
    MethodChosen,
    NoteEscrowed,
    NoteStacked,
    WriteKey,
)
from kiosk.domain.money import Money
from sync.store.tables import credits, open_db
from tests.conftest import HeadOffice
from tests.fuzz_fleet import Link
from tests.test_engine import Run, key
from tests.test_no_mint import alarm_texts

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def E(minor: int) -> Money:
    return Money(minor, "EUR")


def book(office: HeadOffice) -> list[tuple[Any, ...]]:
    """Head office's credit book: (id, key, amount, origin, written by, bound)."""
    engine = open_db(office.db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(credits).order_by(credits.c.credit_id)).all()
            return [(r.credit_id, r.key, r.amount, r.origin, r.written_by, r.bound) for r in rows]
    finally:
        engine.dispose()


# ---------------------------------------------------------------- one kiosk


def test_a_credit_owed_after_an_uncertain_write_is_bound_by_the_count_before_it() -> None:
    """Before (found by an independent money fuzzer): the write commits on the key (write 1),
    the key is pulled before the read-back; back, the kiosk reads its summary (1 write) and
    writes again, the key is pulled before the log read answers; the customer walks away and
    the credit owed was bound by the count read after the uncertain write (1). Ten top-ups
    elsewhere later the log reached back to write 2 = bound + 1, and the kiosk wrote it again.
    Now the bound is what the key held before the transaction's first write was tried (0)."""
    r = Run()
    r.insert(key(written=0, log_from=1, log_complete=False))
    _pay_2000_in_notes(r)
    assert r.cmds(WriteKey) == [WriteKey("T1", E(2000), new=True)]
    assert r.records(Kind.TX_OPENED)[0].data["key_written"] == 0
    r(KeyWriteFailed("T1", "key removed during read-back", uncertain=True))
    r(KeyRemoved())
    # back with the summary only: one write on it now, the log not read
    r.insert(key(written=1, log_from=2, log_complete=False))
    assert r.cmds(WriteKey)[-1] == WriteKey("T1", E(2000), new=False)
    r(KeyWriteFailed("T1", "key removed before the log was read", uncertain=False))
    r(KeyRemoved())
    r.tick(r.site.timeouts.key_missing + 1)
    [owed] = r.records(Kind.PENDING_CREDIT)
    assert owed.amount == E(2000) and owed.data["key_written"] == 0, owed
    assert r.state in (State.DONE, State.IDLE)


def _pay_2000_in_notes(r: Run) -> None:
    """From the amount screen to the write of 20.00 paid in two notes."""
    r(AmountChosen(E(2000)))
    r(MethodChosen(Method.CASH))
    for _ in range(2):
        r(NoteEscrowed(E(1000)))
        r(NoteStacked(E(1000)))


# ---------------------------------------------------------------- kiosks and one head office


class Station:
    """One kiosk of the fleet: its own journal, fake devices, a manual clock, and a real
    sync client to the head-office process with its own token."""

    def __init__(self, office: HeadOffice, tmp_path: Path, kiosk: str) -> None:
        from kiosk.adapters.head_office import Syncer
        from kiosk.app.ports import Devices
        from kiosk.app.runner import Kiosk
        from kiosk.domain.clock import ManualClock
        from kiosk.domain.events import KeyStatus
        from kiosk.ledger.journal import Journal
        from kiosk.sim.fakes import FakeCoinAcceptor, FakeKeyReader, FakeNoteValidator
        from tests.conftest import make_site

        if kiosk not in office.tokens:
            office.tokens[kiosk] = office.admin("kiosk", "add", kiosk)
        self.site = make_site("demo", site={"kiosk_id": kiosk})
        self.clock = ManualClock(T0)
        self.journal = Journal(tmp_path / f"journal-{kiosk}.sqlite", kiosk)
        self.journal.set_key("K1", KeyStatus.ACTIVE, "4711")
        self.reader = FakeKeyReader()
        self.notes = FakeNoteValidator(self.site.notes)
        self.syncer = Syncer(self.journal, office.client(kiosk))
        self.link = Link(self.syncer)
        devices = Devices(reader=self.reader, coin=FakeCoinAcceptor(self.site.coins),
                          notes=self.notes)  # fmt: skip
        self.kiosk = Kiosk(self.site, self.journal, devices, self.clock, head_office=self.link)  # type: ignore[arg-type]

    def sync(self) -> None:
        status = self.syncer.round(self.clock())
        assert status.last_error is None, status.last_error

    def pay_and_walk_away(self, key: Any, minor: int) -> str:
        """The customer pays in notes and pulls the key before the write: a credit owed."""
        from kiosk.domain.events import AmountChosen, MethodChosen, Tick

        self.reader.insert(key)
        self.kiosk.drain()
        self.kiosk.submit(AmountChosen(E(2 * minor)))  # pulled before it is all paid
        self.kiosk.submit(MethodChosen(Method.CASH))
        self.kiosk.drain()
        assert self.notes.insert(E(minor))
        self.kiosk.drain()
        self.reader.remove()
        self.kiosk.drain()
        self.clock.advance(self.site.timeouts.key_missing + 1)
        self.kiosk.submit(Tick(self.clock()))
        self.kiosk.drain()
        [owed] = self.journal.pending_credits(key.serial)
        return owed.txid

    def visit(self, key: Any) -> None:
        """The key in and out again (whatever is owed to it is written, if it may be)."""
        self.reader.insert(key)
        self.kiosk.drain()
        self.reader.remove()
        self.kiosk.drain()


def test_a_credit_written_during_an_offline_spell_is_not_written_again_elsewhere(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Before: kiosk X held a 20.00 credit owed and had uploaded it; offline, X wrote it onto
    the key and the customer topped up ten more times; at kiosk Y head office granted the
    credit (still open there) and Y wrote it again: the runner dropped the bound for credits
    head office granted and trusted the key's last ten log records alone. Now head office
    keeps the credit's bound (the key's write count when it became owed) and grants it with
    it: Y's key log does not reach back that far, so Y writes nothing; X's report closes it
    later, with no alarm."""
    from kiosk.sim.fakes import FakeKey

    x, y = Station(office, tmp_path, "DEMO-01"), Station(office, tmp_path, "OTHER-01")
    key = FakeKey("K1", "4711", credit=1000, log=[f"OLD-{n}" for n in range(5)])
    owed = x.pay_and_walk_away(key, 2000)
    x.sync()  # head office has the credit, bound at write 5
    assert book(office) == [(owed, "K1", 2000, "DEMO-01", None, 5)]
    x.link.online = False  # X goes offline
    x.visit(key)  # X writes what it owes (write 6)
    assert key.log.count(owed) == 1 and key.credit == 3000
    for n in range(10):  # ten more top-ups at X, offline
        key.log.append(f"DEMO-01-261129-{100 + n}")
        key.credit += 500
    held = key.credit
    y.visit(key)  # at Y, online: head office grants the open credit, with its bound
    assert key.credit == held and key.log.count(owed) == 1  # not written again
    assert [c for c, *_ in book(office)] == [owed]
    x.link.online = True
    x.sync()  # X's report closes it: it was given to X (its origin)
    assert book(office) == [(owed, "K1", 2000, "DEMO-01", "DEMO-01", 5)]
    assert alarm_texts(office) == []
    y.sync()  # Y lets go of what it held
    assert y.journal.pending_credits("K1") == []


def entries_of(j: Any, *steps: list[Any]) -> Any:
    """Append steps to a journal, a second apart."""
    from datetime import timedelta

    for n, records in enumerate(steps):
        j.append(records, T0 + timedelta(seconds=n))
    return j


def upload(office: HeadOffice, j: Any, kiosk: str) -> Any:
    import requests

    body = {"kiosk_id": kiosk, "entries": j.raw_entries()}
    return requests.post(office.url + "/v1/entries", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {office.tokens[kiosk]}"})  # fmt: skip


def paid(tx: str, key: str, minor: int, written: int = 0) -> list[Any]:
    from kiosk.domain.events import Record

    return [Record(Kind.TX_OPENED, tx, key, None, {"method": "cash", "key_written": written}),
            Record(Kind.CASH_IN, tx, key, E(minor), {"medium": "note"})]  # fmt: skip


def owed(tx: str, key: str, minor: int, written: int = 0) -> list[Any]:
    from kiosk.domain.events import Record

    return [Record(Kind.PENDING_CREDIT, tx, key, E(minor),
                   {"reason": "key_not_returned", "key_written": written})]  # fmt: skip


def test_another_kiosks_transaction_id_opens_no_credit_and_raises_an_alarm(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Before: ids are predictable; kiosk A uploaded a tiny payment and a pending credit under
    B's next id, and B's real 50.00 credit under that id was skipped without an alarm (and B,
    told it was claimed elsewhere, released it). Now a kiosk opens credits only under ids it
    makes (`KIOSK-yymmdd-n`): A's is refused with an alarm, B's opens and stays B's."""
    from kiosk.ledger.journal import Journal

    theirs = "OTHER-01-261129-7"
    a = entries_of(Journal(tmp_path / "a.sqlite", "DEMO-01"), paid(theirs, "K9", 10),
                   owed(theirs, "K9", 10))  # fmt: skip
    res = upload(office, a, "DEMO-01")
    assert res.status_code == 200 and res.json()["acked"] == 3
    assert "not an id kiosk DEMO-01 makes" in res.json()["refused"][0]["reason"]
    assert book(office) == []
    b = entries_of(Journal(tmp_path / "b.sqlite", "OTHER-01"), paid(theirs, "K1", 5000, 3),
                   owed(theirs, "K1", 5000, 3))  # fmt: skip
    res = upload(office, b, "OTHER-01")
    assert res.status_code == 200 and "refused" not in res.json()
    assert book(office) == [(theirs, "K1", 5000, "OTHER-01", None, 3)]
    # and a pending credit for a credit that is another's, never given to it: an alarm
    a.append(owed(theirs, "K1", 5000), T0)
    res = upload(office, a, "DEMO-01")
    assert "it is OTHER-01's credit, never given to DEMO-01" in res.json()["refused"][0]["reason"]
    assert book(office) == [(theirs, "K1", 5000, "OTHER-01", None, 3)]
    assert len(alarm_texts(office)) == 2


def test_a_kiosk_that_never_had_the_key_cannot_close_its_credit(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Before: a kiosk claimed a key it never saw and uploaded `pending_written`: the credit
    was closed as written by it, and the customer's next visit got nothing. Now a close by a
    kiosk that did not take the money must say which write of the key it was, and the key
    checks that at its next claim: a key with fewer writes, or another transaction at that
    number, opens the credit again (with an alarm), and the real kiosk writes it."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal

    mine = "DEMO-01-261129-1"
    x = entries_of(Journal(tmp_path / "x.sqlite", "DEMO-01"), paid(mine, "K1", 2000, 4),
                   owed(mine, "K1", 2000, 4))  # fmt: skip
    assert upload(office, x, "DEMO-01").status_code == 200
    hostile = office.client("OTHER-01")
    assert [c["credit_id"] for c in hostile.claim("K1")] == [mine]  # no key there at all
    h = Journal(tmp_path / "h.sqlite", "OTHER-01")
    entries_of(h, [Record(Kind.PENDING_WRITTEN, mine, "K1", E(2000), {"credit_after": 1})])
    res = upload(office, h, "OTHER-01")
    assert "did not say which write of the key" in res.json()["refused"][0]["reason"]
    assert book(office)[0][4] is None  # still open
    h.append([Record(Kind.PENDING_WRITTEN, mine, "K1", E(2000), {"write_no": 5})], T0)
    assert upload(office, h, "OTHER-01").status_code == 200
    assert book(office)[0][4] == "OTHER-01"  # closed, for now
    # the customer comes to a kiosk with the key: it has 4 writes, not 5
    third = office.client("DEMO-01")
    assert [(c["credit_id"], c["bound"]) for c in third.claim("K1", written=4)] == [(mine, 4)]
    assert book(office) == [(mine, "K1", 2000, "DEMO-01", None, 4)]
    assert "reported written by OTHER-01 as write 5 of key K1, which has 4 writes" in (
        alarm_texts(office)[-1])


def test_a_close_another_transaction_was_reported_at_is_opened_again(
    office: HeadOffice, tmp_path: Path
) -> None:
    """The same attack, with a write number that exists: the kiosk that really wrote that
    number reports its own transaction there; the two disagree, the credit opens again."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal

    mine, real = "DEMO-01-261129-1", "DEMO-01-261129-2"
    x = entries_of(Journal(tmp_path / "x.sqlite", "DEMO-01"), paid(mine, "K1", 2000, 4),
                   owed(mine, "K1", 2000, 4))  # fmt: skip
    assert upload(office, x, "DEMO-01").status_code == 200
    office.client("OTHER-01").claim("K1")
    h = entries_of(Journal(tmp_path / "h.sqlite", "OTHER-01"),
                   [Record(Kind.PENDING_WRITTEN, mine, "K1", E(2000),
                           {"write_no": 5})])  # fmt: skip
    assert upload(office, h, "OTHER-01").status_code == 200
    assert book(office)[0][4] == "OTHER-01"
    x.append([*paid(real, "K1", 1000, 4),
              Record(Kind.KEY_WRITTEN, real, "K1", E(1000), {"credit_after": 1000,
                                                              "write_no": 5})], T0)  # fmt: skip
    res = upload(office, x, "DEMO-01")
    assert "write 5 reported as" in res.json()["refused"][0]["reason"]
    assert book(office) == [(mine, "K1", 2000, "DEMO-01", None, 4)]  # open again


def test_a_credit_released_and_granted_back_is_written_there(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Before: kiosk X released a credit another kiosk had claimed; when head office granted
    it back to X, X knew the id already and journaled nothing: it was never written there.
    Now a credit granted back after a release is owed there again."""
    from kiosk.domain.events import Record
    from kiosk.sim.fakes import FakeKey

    x, y = Station(office, tmp_path, "DEMO-01"), Station(office, tmp_path, "OTHER-01")
    key = FakeKey("K1", "4711", credit=1000, log=["OLD-1"])
    owed_tx = x.pay_and_walk_away(key, 2000)
    x.sync()
    y.link.online = False
    assert y.syncer.claim("K1", 1) == {owed_tx: 1}  # Y claims it: a lease, then the key left
    x.sync()  # X hears that it is held elsewhere: released
    assert x.journal.pending_credits("K1") == []
    y.journal.append([Record(Kind.WRITE_FAILED, owed_tx, "K1", None, {"reason": "key pulled"})],
                     T0)  # fmt: skip
    y.sync()  # Y could not write it: its lease ends
    x.visit(key)  # back at X: granted to X again, and written
    assert key.log.count(owed_tx) == 1 and key.credit == 3000
    x.sync()
    assert book(office) == [(owed_tx, "K1", 2000, "DEMO-01", "DEMO-01", 1)]
    assert alarm_texts(office) == []


def test_head_office_cannot_raise_the_key_credit_limit_above_the_keys_own() -> None:
    """Before: head office's key_credit_limit above the site file's let the screen take 600.00
    that the key then refused: a pending credit that could never be written. Now the site
    file's limit (the keys' value files were made with it) is the most head office may set."""
    import pytest

    from kiosk.domain.errors import ConfigError
    from kiosk.domain.site import with_settings
    from tests.conftest import make_site

    site = make_site("demo")
    above = site.key_credit_limit.minor + 10_000
    with pytest.raises(ConfigError, match="above the keys' own limit"):
        with_settings(site, {"key_credit_limit": above, "max_topup": above})
    lower = with_settings(site, {"key_credit_limit": 30_000, "max_topup": 30_000})
    assert lower.key_credit_limit == E(30_000) and site.key_credit_limit == E(50_000)


def test_a_negative_debt_from_head_office_is_no_debt_and_money_is_never_dropped(
    tmp_path: Path,
) -> None:
    """Before: a negative debt in the reference data made the next payment raise: the automat
    went out of order, and the note just stacked had no `cash_in` entry (only a fault). Now a
    debt below zero is not taken, and a step that fails on money journals the money."""
    from kiosk.adapters.head_office import Syncer
    from kiosk.ledger.journal import Journal

    class Reference:
        base = "x"

        def reference(self, etag: Any, since: Any) -> tuple[str, dict[str, Any]]:
            return '"1"', {"version": 1, "keys": [], "credits": [], "settings": {},
                           "debts": [{"contract_account": "4711", "amount": -500,
                                      "currency": "EUR"}]}  # fmt: skip

    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    Syncer(j, Reference()).pull_reference()  # type: ignore[arg-type]
    assert j.account_for("K1", "4711", "EUR").debt == E(0)
    j.set_debt("4711", E(-500))  # one stored before: read as none
    assert j.account_for("K1", "4711", "EUR").debt == E(0)


def test_money_a_failing_step_was_about_is_journaled(tmp_path: Path) -> None:
    """Whatever makes the engine fail on a coin or note, the money is journaled (unattributed,
    for the staff) before the automat goes out of order."""
    from kiosk.app.ports import Devices
    from kiosk.app.runner import Kiosk
    from kiosk.domain.clock import ManualClock
    from kiosk.domain.events import NoteStacked
    from kiosk.ledger.journal import Journal
    from kiosk.sim.fakes import FakeKeyReader
    from tests.conftest import make_site

    site = make_site("demo")
    j = Journal(tmp_path / "j.sqlite", site.kiosk_id)
    k = Kiosk(site, j, Devices(reader=FakeKeyReader()), ManualClock(T0))

    def broken(_event: Any) -> list[Any]:
        raise ArithmeticError("a defect nobody foresaw")

    k.session.handle = broken  # type: ignore[method-assign]
    k.submit(NoteStacked(E(2000), channel=3))
    import threading

    k.run(threading.Event(), tick_seconds=0.01)  # the engine thread: ends on the failure
    assert k.failure and "ArithmeticError" in k.failure
    [cash] = j.entries_of_kind(Kind.CASH_UNATTRIBUTED)
    assert cash.amount == E(2000) and "ArithmeticError" in cash.data["refused"]
    assert k.view().state == State.OUT_OF_SERVICE


def _serve(db: str) -> tuple[str, Any]:
    from tests.conftest import serve_head_office

    return serve_head_office(db)


def _one_round(db: str, token: str, j: Any) -> Any:
    """Head office started on `db`, one sync round of the kiosk's journal `j` (it must end
    without an error), head office stopped: the round's status."""
    from kiosk.adapters.head_office import Syncer
    from sync.wire.client import SyncClient

    url, proc = _serve(db)
    try:
        status = Syncer(j, SyncClient(url, token, "DEMO-01", timeout=(1.0, 5.0))).round(T0)
        assert status.last_error is None, status.last_error
        return status
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_key_blocked_after_head_office_was_restored_reaches_every_kiosk(
    tmp_path: Path,
) -> None:
    """Before: reference versions counted on from the last one. After head office was restored
    from an older backup, it gave versions again that kiosks already held: a kiosk holding a
    newer version than the restored one was told "unchanged", or sent a change list that
    missed a key blocked since. Now versions count on from the clock and never repeat."""
    import shutil

    from kiosk.domain.events import KeyStatus
    from kiosk.ledger.journal import Journal

    path = tmp_path / "headoffice.sqlite"
    ho = HeadOffice("", f"sqlite:///{path}", {})
    token = ho.admin("kiosk", "add", "DEMO-01")
    ho.admin("key", "K1", "--status", "active", "--account", "4711")
    ho.admin("key", "K2", "--status", "active", "--account", "4712")
    shutil.copy(path, tmp_path / "backup.sqlite")  # the night's backup
    for n in range(3):  # the day's changes, which the kiosk takes
        ho.admin("key", f"K{10 + n}", "--status", "active")
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    _one_round(ho.db, token, j)
    assert j.account_for("K12", "", "EUR").status == KeyStatus.ACTIVE
    shutil.copy(tmp_path / "backup.sqlite", path)  # the disk failed: restored from the backup
    ho.admin("key", "K1", "--status", "blocked", "--reason", "stolen")  # K1 is stolen
    for n in range(4):  # and the day goes on
        ho.admin("key", f"K{20 + n}", "--status", "active")
    _one_round(ho.db, token, j)
    assert j.account_for("K1", "4711", "EUR").status == KeyStatus.BLOCKED


def test_a_claim_answer_that_trickles_in_holds_the_key_no_longer_than_its_deadline(
    tmp_path: Path,
) -> None:
    """Before: the claim's timeout bounded each read only, so an answer trickling in a byte at
    a time held the engine thread on key insertion for 12 s. Now the whole answer has a
    deadline (3 s): then the kiosk goes on with what it holds, and nothing is journaled."""
    import socket
    import threading
    import time

    from kiosk.adapters import head_office
    from kiosk.adapters.head_office import Syncer
    from kiosk.ledger.journal import Journal
    from sync.wire.client import SyncClient

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            body = b'{"credits": [{"credit_id": "HO-1", "key": "K1", "amount": 500, ' \
                   b'"currency": "EUR"}]}'  # fmt: skip
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body))  # fmt: skip
            for byte in body:
                if stop.wait(0.2):  # a byte every 0.2 s: each read well within its timeout
                    return
                conn.sendall(bytes([byte]))

    threading.Thread(target=trickle, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    sync = Syncer(j, SyncClient(url, "t", "DEMO-01"))
    start = time.monotonic()
    try:
        assert sync.claim("K1", 3) == {}
        took = time.monotonic() - start
    finally:
        stop.set()
        server.close()
    assert took < head_office.CLAIM_DEADLINE + 1.0, took
    assert j.entries_of_kind(Kind.PENDING_CREDIT) == []


def test_after_head_office_is_restored_every_kiosk_sends_again_what_it_lost(
    tmp_path: Path,
) -> None:
    """Before: head office restored from an older copy holds fewer of a kiosk's entries than it
    had acknowledged; the kiosk's next batch was refused as a gap, every round, for good. Now
    the kiosk asks what head office holds and, where that is its own chain, sends again from
    there: head office's copy is whole again and the credit book rebuilt from it."""
    import shutil

    from kiosk.adapters.head_office import Syncer
    from kiosk.ledger.journal import Journal
    from sync.wire.client import SyncClient

    path = tmp_path / "headoffice.sqlite"
    ho = HeadOffice("", f"sqlite:///{path}", {})
    token = ho.admin("kiosk", "add", "DEMO-01")
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    tx1, tx2 = "DEMO-01-261129-1", "DEMO-01-261129-2"
    entries_of(j, paid(tx1, "K1", 1000))
    url, proc = _serve(ho.db)
    try:
        sync = Syncer(j, SyncClient(url, token, "DEMO-01", timeout=(1.0, 5.0)))
        assert sync.round(T0).last_error is None
        shutil.copy(path, tmp_path / "backup.sqlite")  # the night's backup: 2 entries
        j.append([*paid(tx2, "K1", 2000), *owed(tx2, "K1", 2000)], T0)
        assert sync.round(T0).last_error is None and sync.status.acked == 5
    finally:
        proc.terminate()
        proc.wait(10)
    shutil.copy(tmp_path / "backup.sqlite", path)  # restored: head office holds 2 of 5
    url, proc = _serve(ho.db)
    try:
        sync = Syncer(j, SyncClient(url, token, "DEMO-01", timeout=(1.0, 5.0)))
        status = sync.round(T0)
        assert status.last_error is None and status.acked == 5
    finally:
        proc.terminate()
        proc.wait(10)
    assert [s for s, _ in ho.stored()] == [1, 2, 3, 4, 5]
    assert [(c, k, a, o) for c, k, a, o, *_ in book(ho)] == [(tx2, "K1", 2000, "DEMO-01")]


def test_a_close_the_keys_own_log_contradicts_is_opened_again_and_written(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Found by the fleet fuzzer: a hostile kiosk claimed a key it never saw and said it wrote
    an office credit as a write number the key has, one no kiosk ever reported (a write from
    before the fleet): nothing contradicted it, and the customer's credit was gone. Now a close
    by a kiosk that did not take the money stands only once the key shows it: the next claim
    of the key asks for its log, the kiosk reads it, and what the log contradicts is opened
    again (with an alarm) and written there at once."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal
    from kiosk.sim.fakes import FakeKey

    office.admin("key", "K1", "--status", "active", "--account", "4711")
    f = tmp_path / "credits.csv"
    f.write_text("key,amount,currency,kiosk,ref\nK1,5.00,EUR,,R-1\n", "utf-8")
    office.admin("import", "credits", str(f))
    [(credit, *_)] = book(office)
    key = FakeKey("K1", "4711", credit=1000, log=[f"OLD-{n}" for n in range(12)])
    hostile = office.client("OTHER-01")
    assert [c["credit_id"] for c in hostile.claim("K1", written=12)] == [credit]
    h = entries_of(Journal(tmp_path / "h.sqlite", "OTHER-01"),
                   [Record(Kind.PENDING_WRITTEN, credit, "K1", E(500),
                           {"write_no": 12})])  # fmt: skip
    assert upload(office, h, "OTHER-01").status_code == 200
    assert book(office)[0][4] == "OTHER-01"  # closed, not confirmed
    x = Station(office, tmp_path, "DEMO-01")
    x.visit(key)  # head office asks for the key's log: write 12 is OLD-11
    assert key.log.count(credit) == 1 and key.credit == 1500
    assert "the key shows OLD-11 there; opened again" in alarm_texts(office)[-1]
    x.sync()
    assert book(office)[0][4] == "DEMO-01"


def test_a_credit_reported_written_again_after_another_kiosk_wrote_it_is_an_alarm(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Before: kiosk X's `pending_written` for a credit kiosk Y had already written was ignored
    without a word, though the key may then hold it twice. Now it is an alarm naming both; a
    kiosk that only found it on the key (it did not write it again) raises none."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal

    mine = "DEMO-01-261129-1"
    x = entries_of(Journal(tmp_path / "x.sqlite", "DEMO-01"), paid(mine, "K1", 2000, 4),
                   owed(mine, "K1", 2000, 4))  # fmt: skip
    assert upload(office, x, "DEMO-01").status_code == 200
    y_client = office.client("OTHER-01")
    assert [c["credit_id"] for c in y_client.claim("K1", written=4)] == [mine]
    y = entries_of(Journal(tmp_path / "y.sqlite", "OTHER-01"), [Record(
        Kind.PENDING_WRITTEN, mine, "K1", E(2000),
        {"credit_after": 2000, "write_no": 5})])  # fmt: skip
    assert upload(office, y, "OTHER-01").status_code == 200
    assert book(office)[0][4] == "OTHER-01" and alarm_texts(office) == []
    x.append([Record(Kind.PENDING_WRITTEN, mine, "K1", E(2000),
                     {"found_on_key": True, "write_no": 5})], T0)  # fmt: skip
    assert "refused" not in upload(office, x, "DEMO-01").json()  # found it: no alarm
    x.append([Record(Kind.PENDING_WRITTEN, mine, "K1", E(2000), {"write_no": 6})], T0)
    res = upload(office, x, "DEMO-01")
    assert "after OTHER-01 wrote it: key K1 may hold it twice" in res.json()["refused"][0]["reason"]
    assert book(office)[0][4] == "OTHER-01"


# ---------------------------------------------------------------- the review's findings


def _office_credit(office: HeadOffice, tmp_path: Path, key: str = "K1", **kiosk: str) -> str:
    """One office credit of 5.00 for `key` (imported: the night job), its id."""
    office.admin("key", key, "--status", "active", "--account", "4711")
    f = tmp_path / f"credits-{key}.csv"
    f.write_text(f"key,amount,currency,kiosk,ref\n{key},5.00,EUR,{kiosk.get('to', '')},"
                 f"R-{key}\n", "utf-8")  # fmt: skip
    office.admin("import", "credits", str(f))
    return f"HO-B-R-{key}"


def test_a_claim_lowers_an_office_credits_bound_and_never_raises_it(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Review: a hostile kiosk's claim said a count the key never had (2^31 - 1) and became
    the office credit's bound: every write would then pass as not being it, and a credit
    written and scrolled out of the log would be written again. Now the bound is the lowest
    count any claim said, and a kiosk takes a bound above the key's own count as 0."""
    from kiosk.app.runner import tighter
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal

    credit = _office_credit(office, tmp_path)
    assert [c["bound"] for c in office.client("OTHER-01").claim("K1", written=2**31 - 1)] == [
        2**31 - 1]  # fmt: skip
    h = entries_of(Journal(tmp_path / "h.sqlite", "OTHER-01"),
                   [Record(Kind.WRITE_FAILED, credit, "K1", None, {"reason": "x"})])  # fmt: skip
    assert upload(office, h, "OTHER-01").status_code == 200  # its lease ends
    assert [c["bound"] for c in office.client("DEMO-01").claim("K1", written=5)] == [5]
    office.client("DEMO-01").claim("K1", written=9)
    assert book(office)[0][5] == 5  # not raised again
    assert tighter(2**31 - 1, None, 12) == 0 and tighter(7, 9, 12) == 7
    assert tighter(None, None, 3) is None


def test_a_claims_count_does_not_undo_a_close_the_money_or_the_key_stands_behind(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Review: a hostile kiosk's claim saying the key has 0 writes opened again every credit
    written on it, its origin's own closes too, and they were granted to it. Now a claim's
    count opens again only an unconfirmed close; one the origin made (or the key showed) stays
    closed, and the disagreement is an alarm."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal

    mine = "DEMO-01-261129-1"
    x = entries_of(Journal(tmp_path / "x.sqlite", "DEMO-01"), paid(mine, "K1", 2000, 4),
                   owed(mine, "K1", 2000, 4),
                   [Record(Kind.PENDING_WRITTEN, mine, "K1", E(2000),
                           {"write_no": 5})])  # fmt: skip
    assert upload(office, x, "DEMO-01").status_code == 200
    assert book(office)[0][4] == "DEMO-01"
    assert office.client("OTHER-01").claim("K1", written=0) == []
    assert book(office)[0][4] == "DEMO-01"  # still written
    assert "says key K1 has 0 writes, but credit DEMO-01-261129-1 was written as its write 5" in (
        alarm_texts(office)[-1])


def test_a_close_the_keys_log_no_longer_reaches_stays_and_the_operator_is_told(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Review: a customer who topped up ten times at the kiosk that wrote an office credit got
    that close opened again at the next kiosk (its log no longer reached the write), blaming
    the writer, and the credit could then never be written (its bound is below the log): head
    office owed money already on the key. Now such a close stays, unconfirmed, with an alarm."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal

    credit = _office_credit(office, tmp_path)
    office.client("OTHER-01").claim("K1", written=4)
    w = entries_of(Journal(tmp_path / "w.sqlite", "OTHER-01"),
                   [Record(Kind.PENDING_WRITTEN, credit, "K1", E(500),
                           {"write_no": 5})])  # fmt: skip
    assert upload(office, w, "OTHER-01").status_code == 200
    answer = office.client("DEMO-01").claim_answer("K1", written=16)
    assert answer == {"credits": [], "check": [5]}
    shown = [(n, f"DEMO-01-261129-{n}") for n in range(7, 17)]  # the log: writes 7 to 16
    assert office.client("DEMO-01").claim_answer("K1", written=16, log=shown) == {"credits": []}
    assert book(office)[0][4] == "OTHER-01"  # stays closed
    told = (f"credit {credit} was reported written by OTHER-01 as write 5 of key K1, which its "
            "log no longer shows (it begins at write 7): not confirmed")
    assert told in alarm_texts(office)


def test_a_pinned_credit_opened_again_stays_with_its_kiosk(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Review: opening again a credit given to one kiosk left it held by none and pinned: no
    claim could take it, no kiosk was sent it, owed for ever. Now it stays its kiosk's."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal

    credit = _office_credit(office, tmp_path, to="OTHER-01")
    w = entries_of(Journal(tmp_path / "w.sqlite", "OTHER-01"),
                   [Record(Kind.PENDING_WRITTEN, credit, "K1", E(500),
                           {"write_no": 9})])  # fmt: skip
    assert upload(office, w, "OTHER-01").status_code == 200
    office.client("DEMO-01").claim("K1", written=4)  # the key has 4 writes, not 9
    assert book(office)[0][3:5] == ("office", None)
    assert [c["credit_id"] for c in office.client("OTHER-01").claim("K1", written=4)] == [credit]


def test_an_import_of_a_credit_a_kiosk_reported_written_before_closes_it_unconfirmed(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Review: head office restored from a backup older than an import, the import run again:
    the credit came back open though a kiosk had written it (its report was taken before the
    credit existed, and dropped), and the next kiosk could write it again once the key's log
    no longer showed it. Now the import closes it as the kiosk reported, unconfirmed (the key
    checks it at its next claim), with an alarm."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal

    w = entries_of(Journal(tmp_path / "w.sqlite", "OTHER-01"),
                   [Record(Kind.PENDING_WRITTEN, "HO-B-R-K1", "K1", E(500),
                           {"write_no": 5})])  # fmt: skip
    assert upload(office, w, "OTHER-01").status_code == 200  # before the credit (restored)
    credit = _office_credit(office, tmp_path)
    assert book(office)[0][4] == "OTHER-01"
    assert office.client("DEMO-01").claim_answer("K1", written=8)["check"] == [5]
    assert f"credit {credit} imported, and reported written by OTHER-01 before" in (
        alarm_texts(office)[-1])


def test_register_takes_only_a_kiosk_id_a_site_file_can_name(office: HeadOffice) -> None:
    """Review: `register office` made a kiosk the origin of every office credit. Now an id
    is what the site schema takes (capitals, digits and '-'), nothing else is registered."""
    from tests.test_billing import admin

    for bad in ("office", "K", "demo-01", "A" * 32, "DEMO 01"):
        done = admin(office.db, "kiosk", "add", bad)
        assert done.returncode == 2 and "is not 2 to 31 capitals" in done.stderr, bad
    engine = open_db(office.db)
    try:
        from sync.store.tables import kiosks

        with engine.connect() as conn:
            ids = set(conn.execute(select(kiosks.c.kiosk_id)).scalars())
    finally:
        engine.dispose()
    assert ids == {"DEMO-01", "OTHER-01"}


def test_after_a_restore_sync_admin_restored_sends_every_kiosk_the_whole_reference_again(
    tmp_path: Path,
) -> None:
    """Review: a key blocked again by a restore (it was unblocked after the backup) stayed
    active at a kiosk that took the unblocking: its version was above the restored rows', so
    they were never sent again. `sync.admin restored` (the runbook's step after a restore)
    stamps every row anew: each kiosk takes the whole list at its next round."""
    import shutil

    from kiosk.domain.events import KeyStatus
    from kiosk.ledger.journal import Journal

    path = tmp_path / "headoffice.sqlite"
    ho = HeadOffice("", f"sqlite:///{path}", {})
    token = ho.admin("kiosk", "add", "DEMO-01")
    ho.admin("key", "K1", "--status", "blocked", "--reason", "stolen", "--account", "4711")
    shutil.copy(path, tmp_path / "backup.sqlite")
    ho.admin("key", "K1", "--status", "active", "--account", "4711")  # found again
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")

    def one_round() -> None:
        _one_round(ho.db, token, j)

    one_round()
    assert j.account_for("K1", "4711", "EUR").status == KeyStatus.ACTIVE
    shutil.copy(tmp_path / "backup.sqlite", path)  # restored: K1 blocked, as in the backup
    ho.admin("key", "K2", "--status", "active")  # the day goes on
    one_round()
    assert j.account_for("K1", "4711", "EUR").status == KeyStatus.ACTIVE  # not told
    assert "every kiosk takes all keys and debts again" in ho.admin("restored")
    one_round()
    assert j.account_for("K1", "4711", "EUR").status == KeyStatus.BLOCKED


def test_a_kiosk_whose_grant_a_restore_lost_still_closes_the_credit_it_wrote_unconfirmed(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Found by the fleet fuzzer: head office restored from a backup older than a claim lost
    that grant; the kiosk, sending its journal again, had its close refused ("never given"),
    and the credit stayed open at head office though it was on the key, for good (the kiosk
    had closed it for itself). Now the kiosk's own pending credit of it counts as its word that
    it was given it: the close is taken, unconfirmed, and the key's next claim checks it."""
    from kiosk.domain.events import Record
    from kiosk.ledger.journal import Journal

    credit = _office_credit(office, tmp_path)
    b = entries_of(Journal(tmp_path / "b.sqlite", "OTHER-01"),
                   [Record(Kind.PENDING_CREDIT, credit, "K1", E(500),
                           {"reason": "head_office", "origin": "office", "key_written": 4}),
                    Record(Kind.PENDING_WRITTEN, credit, "K1", E(500),
                           {"write_no": 5})])  # fmt: skip
    assert upload(office, b, "OTHER-01").status_code == 200
    assert book(office)[0][4] == "OTHER-01"  # closed, unconfirmed
    assert office.client("DEMO-01").claim_answer("K1", written=6)["check"] == [5]
    shown = [(n, f"X-{n}") for n in range(1, 5)] + [(5, credit), (6, "X-6")]
    office.client("DEMO-01").claim_answer("K1", written=6, log=shown)
    assert book(office)[0][4] == "OTHER-01"
    assert "check" not in office.client("DEMO-01").claim_answer("K1", written=6)  # confirmed
