"""Head-office sync: the kiosk's client against the reference server as a real process."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from kiosk.adapters.head_office import Syncer, SyncLoop
from kiosk.domain.events import KeyStatus, Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from sync.wire.client import GZIP_OVER, Permanent, Retryable, SyncClient, backoff
from tests.conftest import ROOT, HeadOffice, free_port
from tests.faultproxy import FaultProxy

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def journal_with(
    tmp_path: Path, n_tx: int = 3, name: str = "journal.sqlite", start: datetime = T0
) -> Journal:
    j = Journal(tmp_path / name, "DEMO-01")
    t = start
    for i in range(n_tx):
        tx = f"DEMO-01-T{i}"
        t += timedelta(minutes=1)
        j.append(
            [
                Record(
                    Kind.TX_OPENED, tx, "K1", None, {"method": "cash", "contract_account": "4711"}
                )
            ],
            t,
        )
        j.append(
            [Record(Kind.CASH_IN, tx, "K1", Money(1000, "EUR"), {"medium": "note", "channel": 2})],
            t,
        )
        j.append(
            [Record(Kind.TX_CLOSED, tx, "K1", None, {"outcome": "completed", "credit": 1000})], t
        )
    return j


def test_backlog_is_uploaded_once_and_the_watermark_follows_acks(
    office: HeadOffice, tmp_path: Path
) -> None:
    j = journal_with(tmp_path)
    sync = Syncer(j, office.client(), batch=4)
    assert sync.status.backlog == 9
    status = sync.round(T0)
    assert status.last_error is None and status.acked == 9 and status.backlog == 0
    assert office.admin("count", "DEMO-01") == "9"
    again = office.client().upload(j.raw_entries())  # the same batch delivered twice
    assert again == 9 and office.admin("count", "DEMO-01") == "9"
    assert office.stored() == [(e.seq, e.hash) for e in j.entries()]
    assert j.get_meta("sync_watermark") == "9"
    j.append([Record(Kind.FAULT, data={"device": "coin"})], T0)
    assert sync.round(T0).acked == 10 and office.admin("count", "DEMO-01") == "10"


def test_large_batches_are_compressed(office: HeadOffice, tmp_path: Path) -> None:
    j = journal_with(tmp_path, n_tx=80)
    rows = j.raw_entries()
    assert len(json.dumps(rows)) > GZIP_OVER
    assert office.client().upload(rows) == 240
    assert office.admin("count", "DEMO-01") == "240"


def test_a_forged_entry_is_refused_and_nothing_is_stored(
    office: HeadOffice, tmp_path: Path
) -> None:
    j = journal_with(tmp_path)
    rows = j.raw_entries()
    rows[4]["amount"] = 100_000  # altered after the hash was taken
    with pytest.raises(Permanent) as err:
        office.client().upload(rows)
    assert err.value.status == 400 and "entry 5: hash does not match" in str(err.value)
    assert office.admin("count", "DEMO-01") == "0"
    sync = Syncer(j, office.client())
    assert sync.round(T0).acked == 9  # the genuine journal still goes through


def test_gaps_and_forks_are_refused(office: HeadOffice, tmp_path: Path) -> None:
    j = journal_with(tmp_path)
    rows = j.raw_entries()
    with pytest.raises(Permanent, match="gap: expected entry 1, got 3"):
        office.client().upload(rows[2:])
    office.client().upload(rows[:5])
    # The same kiosk id with another history (a restored or copied database): a fork.
    other = journal_with(tmp_path, n_tx=2, name="other.sqlite", start=T0 + timedelta(hours=1))
    with pytest.raises(Permanent, match="differs from the one stored"):
        office.client().upload(other.raw_entries())
    assert office.admin("count", "DEMO-01") == "5"


def test_a_kiosk_writes_only_as_itself(office: HeadOffice, tmp_path: Path) -> None:
    rows = journal_with(tmp_path).raw_entries()
    with pytest.raises(Permanent) as err:
        office.client("DEMO-01", token=office.tokens["OTHER-01"]).upload(rows)
    assert err.value.status == 403
    with pytest.raises(Permanent) as err:
        office.client("DEMO-01", token="not-a-token").upload(rows)
    assert err.value.status == 401
    assert office.admin("count", "DEMO-01") == "0" and office.admin("count", "OTHER-01") == "0"


@pytest.mark.parametrize(
    "body,expected",
    [
        (b"{not json", "malformed batch"),
        (json.dumps({"kiosk_id": "DEMO-01", "entries": [{"seq": 1}]}).encode(), "malformed batch"),
        (gzip.compress(b"x", mtime=0)[:5], "not valid gzip"),  # (the same id in each worker)
    ],
)
def test_malformed_bodies_get_a_clear_4xx(office: HeadOffice, body: bytes, expected: str) -> None:
    headers = {"Authorization": f"Bearer {office.tokens['DEMO-01']}"}
    if expected == "not valid gzip":
        headers["Content-Encoding"] = "gzip"
    resp = requests.post(office.url + "/v1/entries", data=body, headers=headers, timeout=5)
    assert resp.status_code == 400 and expected in resp.json()["detail"]
    assert office.admin("count", "DEMO-01") == "0"


def test_head_office_down_keeps_the_backlog(office: HeadOffice, tmp_path: Path) -> None:
    j = journal_with(tmp_path)
    down = Syncer(
        j, SyncClient(f"http://127.0.0.1:{free_port()}", "t", "DEMO-01", timeout=(0.5, 1))
    )
    status = down.round(T0)
    assert status.last_error and "not reachable" in status.last_error
    assert status.acked == 0 and status.backlog == 9 and j.get_meta("sync_watermark") is None
    up = Syncer(j, office.client())  # the network is back
    assert up.round(T0).acked == 9 and office.admin("count", "DEMO-01") == "9"
    assert office.stored() == [(e.seq, e.hash) for e in j.entries()]


def test_blocking_a_key_at_head_office_reaches_the_kiosk(
    office: HeadOffice, tmp_path: Path
) -> None:
    j = journal_with(tmp_path)
    j.set_key("K1", KeyStatus.ACTIVE, "4711")
    office.admin("key", "K1", "--status", "blocked", "--account", "4711", "--reason", "stolen")
    office.admin("debt", "4711", "7.00")
    sync = Syncer(j, office.client())
    assert sync.pull_reference() is True
    account = j.account_for("K1", "4711", "EUR")
    assert account.status == KeyStatus.BLOCKED and account.reason == "stolen"
    assert account.debt == Money(700, "EUR")
    assert sync.pull_reference() is False  # unchanged: 304 on the ETag


def test_backoff_honours_retry_after_and_stays_under_the_ceiling() -> None:
    rng = random.Random(1)
    assert backoff(3, 12.0, rng) == 12.0
    assert backoff(3, 9999.0, rng) == 300.0
    delays = [backoff(a, None, rng) for a in range(20)]
    assert all(0 <= d <= min(300.0, 2**a) for a, d in enumerate(delays))
    assert Retryable("x", 5.0).retry_after == 5.0


@pytest.fixture
def proxy(office: HeadOffice) -> Iterator[FaultProxy]:
    p = FaultProxy(int(office.url.rsplit(":", 1)[1]), slow_seconds=2.5)
    yield p
    p.close()


@pytest.mark.parametrize("fault", ["500", "429", "slow", "reset"])
def test_injected_faults_end_with_every_entry_stored_once(
    office: HeadOffice, proxy: FaultProxy, tmp_path: Path, fault: str
) -> None:
    j = journal_with(tmp_path)
    client = SyncClient(proxy.url, office.tokens["DEMO-01"], "DEMO-01", timeout=(1.0, 1.5))
    sync = Syncer(j, client, batch=4)
    proxy.faults.extend([fault, fault])
    with pytest.raises(Retryable) as err:
        sync.upload_round(T0)
    if fault == "429":
        assert err.value.retry_after == 7.0
    assert int(j.get_meta("sync_watermark") or 0) < 9  # nothing acknowledged, nothing assumed
    status = sync.round(T0)  # the second fault
    assert status.last_error is not None
    while sync.status.acked < 9:  # then the link is clean again
        assert sync.round(T0).last_error is None
    assert office.stored() == [(e.seq, e.hash) for e in j.entries()]  # each once, in order
    stored = office.client().upload(j.raw_entries())
    assert stored == 9


def test_the_loop_backs_off_and_honours_retry_after(
    office: HeadOffice, proxy: FaultProxy, tmp_path: Path
) -> None:
    j = journal_with(tmp_path)
    client = SyncClient(proxy.url, office.tokens["DEMO-01"], "DEMO-01", timeout=(1.0, 3.0))
    loop = SyncLoop(Syncer(j, client), lambda: T0, interval=3600, rng=random.Random(3))
    loop.syncer.status.last_error = "head office answered 429"
    assert loop.next_delay(7.0) == 7.0
    loop.syncer.status.last_error = "down"
    assert all(0 <= loop.next_delay(None) <= 300 for _ in range(12))
    loop.syncer.status.last_error = None
    assert loop.next_delay(None) == 3600 and loop.failures == 0
    loop.start()
    deadline = time.monotonic() + 10
    while loop.syncer.status.acked < 9:
        assert time.monotonic() < deadline
        threading.Event().wait(0.05)  # the loop runs on its own thread: look again shortly
    loop.stop()
    assert office.admin("count", "DEMO-01") == "9"


def test_the_published_openapi_file_matches_the_server() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sync.admin", "openapi"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads((ROOT / "sync" / "wire" / "openapi.json").read_text())


def test_sync_now_and_status_commands(office: HeadOffice, tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite"
    journal_with(tmp_path).close()
    without_token = {k: v for k, v in os.environ.items() if k != "KIOSK_HEAD_OFFICE_TOKEN"}
    env = {**without_token, "KIOSK_HEAD_OFFICE_TOKEN": office.tokens["DEMO-01"]}

    def kiosk(*args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kiosk.cli", *args, "--db", str(db)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env=env if token else without_token,
        )

    before = kiosk("sync", "status")
    assert before.returncode == 0 and "backlog 9" in before.stdout
    assert "last success: never; last error: none" in before.stdout
    no_token = kiosk("sync", "now", "--url", office.url, token=False)
    assert no_token.returncode == 2 and "KIOSK_HEAD_OFFICE_TOKEN" in no_token.stderr
    done = kiosk("sync", "now", "--url", office.url)
    assert done.returncode == 0, done.stderr
    assert "head office has 9 entries; backlog 0" in done.stdout
    assert "backlog 0" in kiosk("sync", "status").stdout
    assert office.admin("count", "DEMO-01") == "9"
    assert re.search(
        r"last success: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d; last error: none",
        kiosk("sync", "status").stdout,
    )
    down = kiosk("sync", "now", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "not reachable" in down.stderr
    after = kiosk("sync", "status").stdout  # the failure is remembered, and the last success
    assert re.search(r"last success: \d{4}-.*; last error: head office not reachable", after)


def test_the_money_report_sums_per_kiosk_local_day_and_method(
    office: HeadOffice, tmp_path: Path
) -> None:
    late = datetime(2026, 11, 20, 22, 58, tzinfo=UTC)  # 23:59 in Berlin on the 20th, then the 21st
    j = journal_with(tmp_path, n_tx=2, start=late)
    j.append(
        [Record(Kind.CASH_IN, "DEMO-01-T1", "K1", Money(200, "EUR"), {"medium": "coin"})], late
    )
    j.append([Record(Kind.CARD_APPROVED, "DEMO-01-T9", "K1", Money(5000, "EUR"), {})], late)
    j.append([Record(Kind.CARD_REVERSED, "DEMO-01-T9", "K1", Money(5000, "EUR"), {})], late)
    j.append([Record(Kind.CARD_APPROVED, "DEMO-01-T8", "K1", Money(2500, "EUR"), {})], late)
    assert Syncer(j, office.client()).round(T0).last_error is None
    rows = office.admin("report").splitlines()
    assert rows[1:] == [
        "DEMO-01          2026-11-20 card      25.00 EUR",
        "DEMO-01          2026-11-20 coin       2.00 EUR",
        "DEMO-01          2026-11-20 note      10.00 EUR",
        "DEMO-01          2026-11-21 note      10.00 EUR",
    ]
    utc = office.admin("report", "--tz", "UTC").splitlines()
    assert utc[1:] == [
        "DEMO-01          2026-11-20 card      25.00 EUR",
        "DEMO-01          2026-11-20 coin       2.00 EUR",
        "DEMO-01          2026-11-20 note      20.00 EUR",
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (("credit", "K1", "0"), "a credit is more than zero"),
        (("credit", "K1", "-500"), "amount '-500' is not an amount in EUR: write it as 12.50"),
        (("credit", "K1", "5,00"), "amount '5,00' is not an amount in EUR: write it as 12.50"),
        (("credit", "K-NOT-THERE", "5.00"), "no key K-NOT-THERE is known"),
        (("credit", "K1", "5.00", "--kiosk", "NOPE-01"), "no kiosk NOPE-01 is registered"),
        (("debt", "4711", "12.505"), "at most 2 digits after the point"),
        (("setting", "max_topup", "-1"), "amount '-1' is not an amount in EUR"),
        (("setting", "fee_vat_bp", "19.5"), "fee_vat_bp is a whole number"),
        (("setting", "colour", "3"), "invalid choice: 'colour'"),
        (("report", "--tz", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_admin_input_is_refused_and_changes_nothing(
    office: HeadOffice, args: tuple[str, ...], message: str
) -> None:
    before = requests.get(
        office.url + "/v1/reference",
        headers={"Authorization": f"Bearer {office.tokens['DEMO-01']}"},
    )
    res = subprocess.run(
        [sys.executable, "-m", "sync.admin", "--db", office.db, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 2 and message in res.stderr
    after = requests.get(
        office.url + "/v1/reference",
        headers={"Authorization": f"Bearer {office.tokens['DEMO-01']}"},
    )
    assert after.json() == before.json() and after.headers["ETag"] == before.headers["ETag"]


def test_a_claim_needs_a_token_and_a_well_formed_body(office: HeadOffice) -> None:
    url = office.url + "/v1/credits/claim"
    auth = {"Authorization": f"Bearer {office.tokens['DEMO-01']}"}
    assert requests.post(url, json={"key": "K1"}).status_code == 401
    bad = requests.post(url, json={"key": "K1", "amount": 5}, headers=auth)
    assert bad.status_code == 422 and "extra" in bad.text.lower()
    assert requests.post(url, json={"key": ""}, headers=auth).status_code == 422
    assert requests.post(url, json={"key": "K1"}, headers=auth).json() == {"credits": []}


def test_the_same_backlog_sent_at_once_on_two_connections_is_stored_once(
    office: HeadOffice, tmp_path: Path
) -> None:
    """A kiosk restarted mid-upload may race its own earlier request: uploads of one kiosk are
    serialised; the loser either sees the entries stored or is told to retry."""
    j = journal_with(tmp_path, n_tx=40)
    rows = j.raw_entries()
    start = threading.Barrier(4)
    answers: list[object] = []

    def send() -> None:
        start.wait()
        try:
            answers.append(office.client().upload(rows))
        except Retryable as err:
            answers.append(err)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert 120 in answers and all(a == 120 or isinstance(a, Retryable) for a in answers)
    assert office.stored() == [(e.seq, e.hash) for e in j.entries()]


def test_a_reason_that_is_not_a_code_is_refused_by_the_admin_tool(tmp_path: Path) -> None:
    """`key --reason` takes a code the automat can say in every language; free text goes in
    `--note` (for the staff, never sent to a kiosk)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from sync.admin import main as admin

    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exit_:
        admin(["--db", db, "key", "K1", "--status", "blocked", "--reason", "verloren"])
    assert exit_.value.code == 2 and "invalid choice: 'verloren'" in err.getvalue()
    with redirect_stdout(io.StringIO()):
        assert admin(["--db", db, "key", "K1", "--status", "blocked", "--reason", "stolen",
                      "--note", "Anzeige 4711/26"]) == 0  # fmt: skip
    from sqlalchemy import create_engine, select

    from sync.store.tables import ref_keys

    engine = create_engine(db)
    with engine.connect() as conn:
        row = conn.execute(select(ref_keys)).one()
    engine.dispose()
    assert (row.reason, row.note) == ("stolen", "Anzeige 4711/26")


def _alarms(db: str) -> list[tuple[str, int | None, str]]:
    from sqlalchemy import select

    from sync.store.tables import alarms, open_db

    engine = open_db(db)
    try:
        with engine.connect() as conn:
            return [(r.kiosk_id, r.seq, r.text) for r in conn.execute(
                select(alarms).order_by(alarms.c.id))]  # fmt: skip
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("start", "says"),
    [
        (datetime(9999, 12, 30, tzinfo=UTC), "is more than 24 h ahead of head office's clock"),
        (datetime.now(UTC) + timedelta(hours=25), "is more than 24 h ahead of head office's"),
        (datetime(1999, 12, 31, 23, 0, tzinfo=UTC), "is before 2000-01-01"),
    ],
)
@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_an_entry_dated_beyond_head_office_clock_is_refused_with_an_alarm(
    office: HeadOffice, tmp_path: Path, start: datetime, says: str
) -> None:
    """A kiosk whose clock went wrong: 422, nothing stored, one alarm for the operator (not
    one per retry); a time within a day of head office's clock is taken."""
    wrong = journal_with(tmp_path, n_tx=1, name="wrong.sqlite", start=start).raw_entries()
    for _ in range(2):  # the kiosk retries
        with pytest.raises(Permanent) as err:
            office.client().upload(wrong)
        assert err.value.status == 422 and f"entry 1: time {wrong[0]['ts']} {says}" in str(
            err.value
        )
    assert office.admin("count", "DEMO-01") == "0"
    said = _alarms(office.db)
    assert len(said) == 1 and said[0][:2] == ("DEMO-01", 1)
    assert said[0][2].startswith(f"entry refused: time {wrong[0]['ts']} {says}")
    soon = datetime.now(UTC) + timedelta(hours=23)  # a clock a little ahead: still taken
    j = journal_with(tmp_path, n_tx=1, start=soon - timedelta(minutes=1))
    assert office.client().upload(j.raw_entries()) == 3
