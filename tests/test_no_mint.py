"""Fleet-wide no-mint: head office trusts no kiosk. Each attack goes through the v1 wire
protocol, with a kiosk's own valid token and a hash chain it built itself (the chain is no
secret), against a head office process on SQLite and on PostgreSQL."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from kiosk.adapters.head_office import Syncer
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from sync.wire.client import Ack, SyncError
from sync.store.tables import alarms, credits, open_db
from tests.conftest import HeadOffice

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def E(minor: int) -> Money:
    return Money(minor, "EUR")


def journal(tmp_path: Path, kiosk: str, *steps: list[Record]) -> Journal:
    j = Journal(tmp_path / f"journal-{kiosk}.sqlite", kiosk)
    for n, records in enumerate(steps):
        j.append(records, T0 + timedelta(seconds=n))
    return j


def upload(office: HeadOffice, j: Journal, kiosk: str = "DEMO-01") -> requests.Response:
    body = {"kiosk_id": kiosk, "entries": j.raw_entries()}
    return requests.post(office.url + "/v1/entries", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {office.tokens[kiosk]}"})  # fmt: skip


def book(office: HeadOffice) -> list[tuple[Any, ...]]:
    """Head office's credit book: (id, key, amount, holder, written by)."""
    engine = open_db(office.db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(credits).order_by(credits.c.credit_id)).all()
            return [(r.credit_id, r.key, r.amount, r.holder, r.written_by) for r in rows]
    finally:
        engine.dispose()


def alarm_texts(office: HeadOffice) -> list[str]:
    engine = open_db(office.db)
    try:
        with engine.connect() as conn:
            return [r.text for r in conn.execute(select(alarms).order_by(alarms.c.id))]
    finally:
        engine.dispose()


def tx(n: int, kiosk: str = "DEMO-01") -> str:
    """A transaction id as kiosk `kiosk` makes them (head office opens no credit under
    another's)."""
    return f"{kiosk}-261129-{n}"


def paid(tx: str, key: str, minor: int) -> list[Record]:
    return [Record(Kind.TX_OPENED, tx, key, None, {"method": "cash"}),
            Record(Kind.CASH_IN, tx, key, E(minor), {"medium": "note"})]  # fmt: skip


def pending(tx: str, key: str, minor: int) -> list[Record]:
    return [Record(Kind.PENDING_CREDIT, tx, key, E(minor), {"reason": "key_not_returned"})]


# ---------------------------------------------------------------- head office is the authority


def test_a_pending_credit_no_payment_backs_is_refused_and_mints_nothing(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Before: 100.00 for any key, no payment behind it, stored and handed to the next kiosk
    that claimed the key. Now: the entry is kept (it is the kiosk's journal) but opens no
    credit; the answer and the alarms say why; another kiosk's claim gets nothing."""
    j = journal(tmp_path, "DEMO-01", pending(tx(1), "K-VICTIM", 10_000))
    res = upload(office, j)
    assert res.status_code == 200, res.text
    assert res.json()["acked"] == 1
    assert res.json()["refused"] == [
        {"seq": 1, "reason": f"pending credit {tx(1)} refused: no payment of this kiosk backs it"}
    ]
    assert book(office) == []
    assert office.client("OTHER-01").claim("K-VICTIM") == []
    assert alarm_texts(office) == [res.json()["refused"][0]["reason"]]


def test_a_pending_credit_above_what_was_paid_is_refused(
    office: HeadOffice, tmp_path: Path
) -> None:
    j = journal(tmp_path, "DEMO-01", paid(tx(1), "K1", 1000), pending(tx(1), "K1", 2000),
                paid(tx(2), "K2", 2000), pending(tx(2), "K2", 2000))  # fmt: skip
    res = upload(office, j)
    assert res.status_code == 200 and res.json()["acked"] == 6
    assert [r["seq"] for r in res.json()["refused"]] == [3]
    assert "2000 is more than the 1000 paid" in res.json()["refused"][0]["reason"]
    assert book(office) == [(tx(2), "K2", 2000, "DEMO-01", None)]  # the backed one only


#: entries no kiosk journals, and what head office says about each
MEANINGLESS = [
    ({"kind": "pending_credit", "amount": -5000}, "amount -5000 is not allowed"),
    ({"kind": "pending_written", "amount": -1}, "amount -1 is not allowed"),
    ({"kind": "cash_in", "amount": 0}, "amount 0 is not allowed"),
    ({"kind": "cash_in", "amount": 2**63}, "less than or equal to 100000000"),
    ({"kind": "cash_in", "currency": "XXX"}, "currency 'XXX' is not one of EUR, CHF"),
    ({"kind": "tx_opened"}, "a tx_opened entry carries no amount"),
    ({"ts": "2024-99-99T10:00:00.000000Z"}, "is not a real time"),
    ({"data": "[1, 2]"}, "data is not a JSON object"),
    ({"kind": "minted"}, "unknown kind 'minted'"),
    ({"data": json.dumps({"x": "y" * 20_000})}, "at most 16384 characters"),
]


def test_an_entry_that_means_nothing_a_kiosk_journals_is_refused_and_nothing_is_stored(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Before: each of these was stored, and each alone made `sync.admin report` crash. Now
    the batch that carries it is refused whole, saying why."""
    from sync.wire.protocol import entry_hash

    j = journal(tmp_path, "DEMO-01", paid("T1", "K1", 1000))
    rows = j.raw_entries()
    auth = {"Authorization": f"Bearer {office.tokens['DEMO-01']}"}
    for entry, says in MEANINGLESS:
        bad = {**rows[-1], "seq": 3, "prev_hash": rows[-1]["hash"], "txid": "T1", "key": "K1",
               "amount": 500, "currency": "EUR", **entry}  # fmt: skip
        fields = ("seq", "ts", "kind", "txid", "key", "amount", "currency", "data")
        bad["hash"] = entry_hash(bad["prev_hash"], *[bad[k] for k in fields])
        body = {"kiosk_id": "DEMO-01", "entries": [*rows, bad]}
        res = requests.post(office.url + "/v1/entries", json=body, timeout=10, headers=auth)
        assert res.status_code in (400, 422) and says in res.text, (entry, res.text)
        assert office.stored() == []  # the whole batch: nothing
    assert "DEMO-01" not in office.admin("report")  # and the report still runs
    # the kiosk's real entries go through, acknowledged with the hash of the last
    assert upload(office, j).json() == {"acked": 2, "hash": j.raw_entries()[-1]["hash"]}


def test_a_credit_pinned_to_one_kiosk_never_moves(office: HeadOffice) -> None:
    office.admin("key", "K1", "--status", "active")  # a credit is for a key head office knows
    credit = office.admin("credit", "K1", "5.00", "--kiosk", "DEMO-01")
    assert office.client("OTHER-01").claim("K1") == []
    assert book(office) == [(credit, "K1", 500, "DEMO-01", None)]
    assert [c["credit_id"] for c in office.client("DEMO-01").claim("K1")] == [credit]


def test_only_a_kiosk_the_credit_was_given_to_closes_it(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Before: another kiosk's `pending_written` closed a credit it never wrote (the
    customer's credit gone). Now the entry is kept, the credit stays open with its holder."""
    t1 = tx(1)
    ours = journal(tmp_path, "DEMO-01", paid(t1, "K1", 2000), pending(t1, "K1", 2000))
    assert upload(office, ours).status_code == 200
    theirs = journal(tmp_path, "OTHER-01", [Record(
        Kind.PENDING_WRITTEN, t1, "K1", E(2000), {"credit_after": 2000, "write_no": 1})])  # fmt: skip
    res = upload(office, theirs, "OTHER-01")
    assert res.status_code == 200 and res.json()["acked"] == 1
    assert "never given to OTHER-01" in res.json()["refused"][0]["reason"]
    assert book(office) == [(t1, "K1", 2000, "DEMO-01", None)]
    # the holder's own report closes it
    ours.append([Record(Kind.PENDING_WRITTEN, t1, "K1", E(2000), {"credit_after": 2000})], T0)
    assert upload(office, ours).status_code == 200
    assert book(office) == [(t1, "K1", 2000, "DEMO-01", "DEMO-01")]


def test_a_credit_no_kiosk_was_given_is_closed_by_none(office: HeadOffice, tmp_path: Path) -> None:
    office.admin("key", "K1", "--status", "active")
    credit = office.admin("credit", "K1", "7.00")  # for the first kiosk that claims the key
    j = journal(tmp_path, "DEMO-01", [Record(Kind.PENDING_WRITTEN, credit, "K1", E(700), {})])
    res = upload(office, j)
    assert res.status_code == 200
    assert "never given to DEMO-01" in res.json()["refused"][0]["reason"]
    assert book(office) == [(credit, "K1", 700, None, None)]


def test_a_card_payment_given_back_backs_no_credit(office: HeadOffice, tmp_path: Path) -> None:
    t1 = tx(1)
    card = [Record(Kind.TX_OPENED, t1, "K1", None, {"method": "card"}),
            Record(Kind.CARD_APPROVED, t1, "K1", E(3000), {}),
            Record(Kind.CARD_REVERSED, t1, "K1", E(3000), {})]  # fmt: skip
    j = journal(tmp_path, "DEMO-01", card, pending(t1, "K1", 3000))
    res = upload(office, j)
    assert "3000 is more than the 0 paid" in res.json()["refused"][0]["reason"]
    assert book(office) == []


def test_a_claimed_credit_is_leased_to_one_kiosk_until_it_reports(
    office: HeadOffice, tmp_path: Path
) -> None:
    """A claim grants a lease: while it runs, another kiosk's claim gets nothing; the holder
    reporting the write failed ends it, and the next claim may take the credit."""
    office.admin("key", "K1", "--status", "active")
    credit = office.admin("credit", "K1", "7.00")
    assert [c["credit_id"] for c in office.client("DEMO-01").claim("K1")] == [credit]
    assert office.client("OTHER-01").claim("K1") == []  # leased to DEMO-01
    j = journal(tmp_path, "DEMO-01", [
        Record(Kind.PENDING_CREDIT, credit, "K1", E(700), {"reason": "head_office"}),
        Record(Kind.WRITE_FAILED, credit, "K1", None, {"reason": "key pulled"})])  # fmt: skip
    assert upload(office, j).status_code == 200
    assert [c["credit_id"] for c in office.client("OTHER-01").claim("K1")] == [credit]


@pytest.mark.slow
def test_kiosks_claiming_the_same_keys_at_once_each_credit_goes_to_exactly_one(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Before: two kiosks claiming one key at the same moment both received its credit (15 of
    15 tries). Now, N kiosks in parallel rounds: every credit is granted to exactly one of
    them, and written once: every kiosk then reports it written (as a kiosk that wrote it
    would), and only the one it was granted to closes it."""
    kiosks = [f"RACE-{n:02}" for n in range(8)]
    for k in kiosks:
        office.tokens[k] = office.admin("kiosk", "add", k)
    clients = {k: office.client(k) for k in kiosks}
    journals = {k: journal(tmp_path, k) for k in kiosks}
    for round_ in range(6):
        keys = [f"K{round_}-{n}" for n in range(2)]
        for key in keys:
            office.admin("key", key, "--status", "active")
        made = {office.admin("credit", key, "1.00"): key for key in keys}
        got, errors = claim_at_once(clients, keys)
        assert errors == []
        granted = [c for cs in got.values() for c in cs]
        assert sorted(granted) == sorted(made), (round_, got)  # each once, none twice
        for k in kiosks:  # all of them say they wrote every credit of the round
            written = [Record(Kind.PENDING_WRITTEN, c, key, E(100), {"write_no": 1})
                       for c, key in made.items()]  # fmt: skip
            journals[k].append(written, T0)
            assert upload(office, journals[k], k).status_code == 200
        closed = {row[0]: row[4] for row in book(office) if row[0] in made}
        assert closed == {c: k for k, cs in got.items() for c in cs}, (closed, got)


def claim_at_once(
    clients: dict[str, Any], keys: list[str]
) -> tuple[dict[str, list[str]], list[BaseException]]:
    """Every kiosk claims every key, all starting at the same moment."""
    start = threading.Barrier(len(clients))
    got: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def claim(kiosk: str) -> None:
        start.wait()
        try:
            got[kiosk] = [c["credit_id"] for key in keys for c in clients[kiosk].claim(key)]
        except SyncError as err:
            errors.append(err)

    threads = [threading.Thread(target=claim, args=(k,)) for k in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return got, errors


# ---------------------------------------------------------------- bodies


def test_a_zip_bomb_is_refused_before_it_is_unpacked(office: HeadOffice) -> None:
    """Before: 1 MiB of gzip unpacking to 512 MiB was unpacked whole (over 1 GB of memory)."""
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)
    res = requests.post(office.url + "/v1/entries", data=bomb, timeout=30,
                        headers={"Authorization": f"Bearer {office.tokens['DEMO-01']}",
                                 "Content-Encoding": "gzip",
                                 "Content-Type": "application/json"})  # fmt: skip
    assert res.status_code == 413 and "unpacks to more than" in res.text
    big = b"x" * (5 * 1024 * 1024)
    res = requests.post(
        office.url + "/v1/entries",
        data=big,
        timeout=30,
        headers={"Authorization": f"Bearer {office.tokens['DEMO-01']}"},
    )
    assert res.status_code == 413
    assert office.stored() == [] and requests.get(office.url + "/v1/health").ok


# ---------------------------------------------------------------- the kiosk checks what it gets


class Answers:
    """A head office's answers, as a client would return them (in-process, for the kiosk's
    checks; the wire is tested above)."""

    base = "http://head-office.invalid"

    def __init__(self, claim: list[Any], acked: int = 0) -> None:
        self.claimed, self.acked = claim, acked

    def fork(self) -> Answers:
        return self

    def claim_answer(self, key: str, **_how: object) -> dict[str, Any]:
        return {"credits": self.claimed}

    def upload_ack(self, rows: list[dict[str, Any]]) -> Ack:
        return Ack(self.acked, None)


def test_the_kiosk_takes_no_credit_it_cannot_write(tmp_path: Path) -> None:
    """Before: a negative credit was taken, and its ValueError killed the key reader's thread.
    Now only a positive credit in the site's currency within the key's limit is journaled."""
    j = journal(tmp_path, "DEMO-01")
    sent = [
        {"credit_id": "HO-NEG", "key": "K1", "amount": -500, "currency": "EUR"},
        {"credit_id": "HO-ZERO", "key": "K1", "amount": 0, "currency": "EUR"},
        {"credit_id": "HO-BIG", "key": "K1", "amount": 10**12, "currency": "EUR"},
        {"credit_id": "HO-CHF", "key": "K1", "amount": 500, "currency": "CHF"},
        {"credit_id": "HO-STR", "key": "K1", "amount": "500", "currency": "EUR"},
        {"credit_id": "X" * 49, "key": "K1", "amount": 500, "currency": "EUR"},
        "not even an object",
        {"credit_id": "HO-OK", "key": "K1", "amount": 500, "currency": "EUR"},
    ]
    sync = Syncer(j, Answers(sent), currency="EUR", max_credit=50_000)  # type: ignore[arg-type]
    assert sync.claim("K1") == {"HO-OK": None}
    assert [(e.txid, e.amount) for e in j.entries_of_kind(Kind.PENDING_CREDIT)] == [
        ("HO-OK", E(500))
    ]


def test_an_ack_above_the_last_entry_sent_is_an_alarm_not_a_jump(tmp_path: Path) -> None:
    """Before: the syncer took an acknowledgement above its own last entry and never uploaded
    the entries behind it. Now the watermark stays and the round reports the error."""
    j = journal(tmp_path, "DEMO-01", paid("T1", "K1", 1000))
    sync = Syncer(j, Answers([], acked=99))  # type: ignore[arg-type]
    status = sync.round(T0)
    assert status.acked == 0 and status.backlog == 2
    assert status.last_error is not None and "above the last entry sent (2)" in status.last_error


# ---------------------------------------------------------------- the channel


def test_the_docs_are_off_unless_asked_for(office: HeadOffice) -> None:
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert requests.get(office.url + path, timeout=5).status_code == 404


def test_failed_tokens_are_rate_limited_per_address(office: HeadOffice) -> None:
    """Before: any number of guesses. Now ten wrong tokens in a minute, and that address gets
    429 with Retry-After for the rest of the minute for any token it does not know; a right
    token (another kiosk behind the same address) is still taken."""
    url = office.url + "/v1/reference"
    for n in range(10):
        res = requests.get(url, headers={"Authorization": f"Bearer guess-{n}"}, timeout=5)
        assert res.status_code == 401, (n, res.text)
    res = requests.get(url, headers={"Authorization": "Bearer guess-10"}, timeout=5)
    assert res.status_code == 429 and 1 <= int(res.headers["Retry-After"]) <= 61
    assert "too many failed tokens" in res.text
    right = {"Authorization": f"Bearer {office.tokens['DEMO-01']}"}
    assert requests.get(url, headers=right, timeout=5).status_code == 200
    assert requests.get(url, timeout=5).status_code == 429  # no token at all: refused too


def test_head_office_serves_tls_and_the_kiosk_checks_its_certificate(tmp_path: Path) -> None:
    """`sync.admin serve --tls-cert --tls-key`: the kiosk talks to it over https, trusting
    the site's CA file; without it, the certificate is refused. Plain HTTP beyond this
    machine is refused at start."""
    import subprocess
    import sys

    from sync.wire.client import Retryable, SyncClient
    from sync.admin.local import LocalHeadOffice
    from tests.conftest import ROOT, free_port

    cert, key = tmp_path / "ho.pem", tmp_path / "ho.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    token = LocalHeadOffice(db).register("DEMO-01")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sync.admin", "--db", db, "serve", "--port", str(port),
         "--tls-cert", str(cert), "--tls-key", str(key)], cwd=ROOT, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        trusted = SyncClient(f"https://127.0.0.1:{port}", token, "DEMO-01", verify=str(cert))
        deadline = threading.Event()
        for _ in range(200):  # the server process is starting: ask again shortly
            try:
                trusted.health()
                break
            except Retryable:
                deadline.wait(0.05)
        assert trusted.reference()[1] is not None  # the token went over TLS
        with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            SyncClient(f"https://127.0.0.1:{port}", token, "DEMO-01").health()
    finally:
        server.kill()
        server.wait(10)
    refused = subprocess.run(
        [sys.executable, "-m", "sync.admin", "--db", db, "serve", "--host", "0.0.0.0",
         "--port", str(free_port())], cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "needs TLS" in refused.stderr


# ---------------------------------------------------------------- a credit once per key, for ever


def test_a_stale_offline_kiosk_does_not_write_a_credit_written_elsewhere(tmp_path: Path) -> None:
    """Before: the key's guard was its last ten top-ups. A kiosk offline while the key had a
    credit it owed written elsewhere, and ten more top-ups, wrote the credit again. Now a
    pending credit carries the key's write number from when it became owed; a key whose log no
    longer reaches back that far gets nothing written offline: head office decides."""
    from kiosk.app.ports import Devices
    from kiosk.app.runner import Kiosk
    from kiosk.domain.clock import ManualClock
    from kiosk.domain.engine import State
    from kiosk.domain.events import AmountChosen, KeyStatus, Method, MethodChosen, Tick
    from kiosk.sim.fakes import FakeCoinAcceptor, FakeKey, FakeKeyReader, FakeNoteValidator
    from tests.conftest import make_site

    site = make_site("demo")
    clock = ManualClock(T0)
    j = Journal(tmp_path / "journal-A.sqlite", site.kiosk_id)
    j.set_key("K1", KeyStatus.ACTIVE, "4711")
    reader, notes = FakeKeyReader(), FakeNoteValidator(site.notes)
    a = Kiosk(site, j, Devices(reader=reader, coin=FakeCoinAcceptor(site.coins), notes=notes),
              clock)  # fmt: skip
    key = FakeKey("K1", "4711", credit=1000, log=["OLD-1", "OLD-2"])
    reader.insert(key)
    a.drain()
    a.submit(AmountChosen(E(5000)))  # 20.00 of 50.00 paid when the key is pulled
    a.submit(MethodChosen(Method.CASH))
    a.drain()
    assert notes.insert(E(2000))
    a.drain()  # the engine stacks it
    assert notes.stacked == [E(2000)] and a.view().paid == E(2000)
    reader.remove()  # pulled before the write: the money is owed to the key
    a.drain()
    clock.advance(site.timeouts.key_missing + 1)
    a.submit(Tick(clock()))
    a.drain()
    [owed] = j.pending_credits("K1")
    assert owed.amount == E(2000) and owed.key_written == 2
    # another kiosk, online, claimed it and wrote it; then ten more top-ups there
    key.log.append(owed.txid)
    key.credit += 2000
    for n in range(10):
        key.log.append(f"B-{n}")
        key.credit += 100
    credit = key.credit
    reader.insert(key)  # back at the stale kiosk, still offline
    a.drain()
    assert a.view().state == State.CHOOSING_AMOUNT
    assert key.credit == credit and key.log.count(owed.txid) == 1  # not written again
    assert [p.txid for p in j.pending_credits("K1")] == [owed.txid]  # head office decides


def test_a_credit_owed_is_written_while_the_keys_log_reaches_back(tmp_path: Path) -> None:
    """The other side: with fewer writes since than the log shows, the credit is written."""
    from kiosk.domain.engine import State, TopUpSession
    from kiosk.domain.events import Account, KeyInserted, KeyStatus, PendingCredit, WriteKey
    from tests.conftest import make_site
    from tests.test_engine import key as key_info

    site = make_site("demo")
    session = TopUpSession(site, T0, lambda: "T9")
    owed = PendingCredit("A-7", E(2000), key_written=2)
    seen = key_info(log=tuple(f"B-{n}" for n in range(10)), written=12, log_from=3)
    out = session.handle(KeyInserted(seen, Account(KeyStatus.ACTIVE, E(0), "", (owed,))))
    assert session.state == State.WRITING_PENDING and WriteKey("A-7", E(2000)) in out
    session = TopUpSession(site, T0, lambda: "T9")
    gone = key_info(log=tuple(f"B-{n}" for n in range(10)), written=13, log_from=4)
    out = session.handle(KeyInserted(gone, Account(KeyStatus.ACTIVE, E(0), "", (owed,))))
    assert session.state == State.CHOOSING_AMOUNT and not any(isinstance(c, WriteKey) for c in out)


def test_a_large_upload_does_not_hold_up_other_requests(office: HeadOffice, tmp_path: Path) -> None:
    """Before: the upload handler was `async` but checked and stored on the event loop, so
    every other kiosk waited for it. Now that work runs on worker threads: health answers
    while a batch of 5000 entries is being stored."""
    import time

    from sync.wire.client import SyncClient

    j = journal(tmp_path, "DEMO-01", *[paid(f"T{n}", "K1", 100) for n in range(2500)])
    rows = j.raw_entries()
    done = threading.Event()
    took: list[float] = []

    def send() -> None:
        start = time.perf_counter()
        SyncClient(office.url, office.tokens["DEMO-01"], "DEMO-01", timeout=(2, 120)).upload(rows)
        took.append(time.perf_counter() - start)
        done.set()

    sender = threading.Thread(target=send)
    sender.start()
    waits = []
    while not done.is_set():
        start = time.perf_counter()
        assert requests.get(office.url + "/v1/health", timeout=30).ok
        waits.append(time.perf_counter() - start)
    sender.join(120)
    assert office.stored()[-1][0] == 5000
    assert len(waits) >= 3 and took, (waits, took)
    assert max(waits) < took[0] / 2, (max(waits), took[0])


def test_the_kiosk_and_head_office_share_the_kinds_and_the_amount_format() -> None:
    """One module (sync/wire/protocol.py) holds the kinds, the sign of their amounts and how an
    amount is written: every kind a kiosk journals has its rule at head office, and both
    write 12.50 EUR the same way."""
    from kiosk.domain import events, money
    from sync.wire import models as server
    from sync.wire import protocol

    assert events.Kind is protocol.Kind and set(protocol.SIGNS) == set(protocol.Kind)
    assert {str(k): s for k, s in protocol.SIGNS.items()} == server.KINDS
    assert money.CURRENCY_EXPONENT is protocol.EXPONENT
    assert str(Money(-1250, "EUR")) == protocol.amount_text(-1250, "EUR") == "-12.50 EUR"
