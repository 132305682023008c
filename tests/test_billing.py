"""Head office and the billing system (#21, first part): billing files in, whole or not at all;
every payment out, its sum the money report's; every stored chain checked."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from kiosk.adapters.head_office import Syncer
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from sync.admin import main as admin_main
from sync.store.tables import audit, credits, imported, open_db, ref_debts, ref_keys, ref_version
from tests.conftest import ROOT, HeadOffice

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)  # 10:00 in Jena


def process(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m sync.admin` as its own process, as the utility's night job runs it."""
    return subprocess.run([sys.executable, "-m", "sync.admin", "--db", db, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip


def admin(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command line run in this process (no interpreter start-up each time)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = admin_main(["--db", db, *args])
        except SystemExit as stop:  # argparse refusing an argument
            code = int(stop.code or 0)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def counts(db: str) -> tuple[int, int, int, int]:
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            n = [conn.execute(select(func.count()).select_from(t)).scalar_one()
                 for t in (ref_keys, ref_debts, credits)]  # fmt: skip
            return (*n, conn.execute(select(ref_version.c.version)).scalar_one())  # type: ignore[return-value]
    finally:
        engine.dispose()


def write(path: Path, text: str) -> Path:
    path.write_text(text, "utf-8")
    return path


def test_billing_files_are_taken_and_replace_what_was_known(office_db: str, tmp_path: Path) -> None:
    office = HeadOffice("", office_db, {})  # no server needed: the night job and the database
    keys = write(tmp_path / "keys.csv", "serial,status,reason,contract_account\n"
                 "K-1,active,,4711\nK-2,blocked,lost,4712\n")  # fmt: skip
    debts = write(tmp_path / "debts.csv", "contract_account,amount,currency\n4711,12.50,EUR\n")
    owed = write(tmp_path / "credits.csv", "key,amount,currency,kiosk\nK-1,5.00,EUR,\n"
                 "K-2,10.00,EUR,DEMO-01\n")  # fmt: skip
    office.admin("kiosk", "add", "DEMO-01")  # the kiosk the second credit is given to
    before = counts(office.db)
    for what, f in (("keys", keys), ("debts", debts), ("credits", owed)):
        done = process(office.db, "import", what, str(f))
        assert done.returncode == 0, done.stderr
        also = r" \(2 new, 0 already there\)" if what == "credits" else ""
        assert re.match(rf"{what}: \d+ rows taken{also} in [\d.]+ s", done.stdout), done.stdout
    after = counts(office.db)
    assert after[:3] == (2, 1, 2) and after[3] > before[3]  # the kiosks fetch new reference data
    write(keys, "serial,status,reason,contract_account\nK-2,active,,4712\n")
    assert admin(office.db, "import", "keys", str(keys)).returncode == 0
    engine = open_db(office.db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(ref_keys).order_by(ref_keys.c.serial)).all()
            held = conn.execute(select(credits.c.key, credits.c.amount, credits.c.holder,
                                       credits.c.pinned).order_by(credits.c.key)).all()  # fmt: skip
            debt = conn.execute(select(ref_debts.c.amount)).scalar_one()
    finally:
        engine.dispose()
    assert [(r.serial, r.status) for r in rows] == [("K-1", "active"), ("K-2", "active")]
    assert [tuple(h) for h in held] == [("K-1", 500, None, False), ("K-2", 1000, "DEMO-01", True)]
    assert debt == 1250


@pytest.mark.parametrize(
    ("what", "text", "says"),
    [
        ("keys", "serial,state,reason,contract_account\nK-1,active,,1\n",
         "line 1: the header must be serial,status,reason,contract_account"),
        ("keys", "serial,status,reason,contract_account\nK-1,active,,1\nK-2,gone,,2\n",
         "line 3: status 'gone' is not one of active, blocked, not_activated"),
        ("keys", "serial,status,reason,contract_account\nK-1,blocked,lost,1\nK-2,blocked,weg,2\n",
         "line 3: reason 'weg' is not one of lost, stolen, defective"),
        ("keys", "serial,status,reason,contract_account\nK-1,active,,1\nK-1,blocked,lost,1\n",
         "line 3: K-1 is in the file twice (line 2 too)"),
        ("keys", "serial,status,reason,contract_account\n,active,,1\n", "line 2: serial is empty"),
        ("debts", "contract_account,amount,currency\n4711,12.5,EUR\n",
         "line 2: amount '12.5' is not written as 0.00"),
        ("debts", "contract_account,amount,currency\n4711,\"12,50\",EUR\n",
         "line 2: amount '12,50' is not written as 0.00"),
        ("debts", "contract_account,amount,currency\n4711,-1.00,EUR\n",
         "line 2: amount '-1.00' is not written as 0.00"),
        ("debts", "contract_account,amount,currency\n4711,1.00,USD\n",
         "line 2: currency 'USD' is not one of EUR, CHF"),
        ("credits", "key,amount,currency,kiosk\nK-1,0.00,EUR,\n",
         "line 2: a credit is more than zero"),
        ("credits", "key,amount,currency,kiosk\nK-1,1.00,EUR\n", "line 2: 3 fields, 4 expected"),
        ("credits", "", "empty file"),
    ],
)  # fmt: skip
def test_a_bad_billing_file_names_its_line_and_changes_nothing(
    tmp_path: Path, what: str, text: str, says: str
) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    good = write(tmp_path / "good.csv", "serial,status,reason,contract_account\nK-9,active,,9\n")
    assert admin(db, "import", "keys", str(good)).returncode == 0
    before = counts(db)
    done = admin(db, "import", what, str(write(tmp_path / f"{what}.csv", text)))
    assert done.returncode == 2 and f"nothing imported: {tmp_path / what}.csv" in done.stderr
    assert says in done.stderr, done.stderr
    assert counts(db) == before and done.stdout == ""
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            last = conn.execute(select(audit).order_by(audit.c.id.desc())).first()
    finally:
        engine.dispose()
    assert last is not None and last.action == "import_refused" and says in last.detail


def _credits_state(db: str) -> tuple[tuple[int, int, int, int], list[tuple[str, str, int]]]:
    """The table counts and every credit (id, key, amount)."""
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            book = [(c.credit_id, c.key, c.amount) for c in conn.execute(
                select(credits).order_by(credits.c.credit_id))]  # fmt: skip
    finally:
        engine.dispose()
    return counts(db), book


def _keys_and_kiosk(db: str, tmp_path: Path) -> None:
    keys = write(tmp_path / "keys.csv", "serial,status,reason,contract_account\n"
                 "K-1,active,,4711\nK-2,active,,4712\n")  # fmt: skip
    assert admin(db, "import", "keys", str(keys)).returncode == 0
    assert admin(db, "kiosk", "add", "DEMO-01").returncode == 0


def test_a_credits_file_imported_again_changes_nothing(tmp_path: Path) -> None:
    """A retried night job: the same rows again are counted as already there and add no
    credit; rows are known by the file and line, or by the billing system's ref."""
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    _keys_and_kiosk(db, tmp_path)
    plain = write(tmp_path / "credits.csv", "key,amount,currency,kiosk\n"
                  "K-1,5.00,EUR,\nK-2,10.00,EUR,DEMO-01\n")  # fmt: skip
    first = admin(db, "import", "credits", str(plain))
    assert first.returncode == 0 and "2 rows taken (2 new, 0 already there)" in first.stdout
    after_first = _credits_state(db)
    assert [(k, a) for _c, k, a in after_first[1]] == [("K-1", 500), ("K-2", 1000)]
    again = admin(db, "import", "credits", str(plain))
    assert again.returncode == 0 and "2 rows taken (0 new, 2 already there)" in again.stdout
    assert _credits_state(db) == after_first  # no credit doubled, no new reference version

    with_refs = write(tmp_path / "refs.csv", "key,amount,currency,kiosk,ref\n"
                      "K-1,1.00,EUR,,B-2026-001\nK-2,2.00,EUR,,B-2026-002\n")  # fmt: skip
    assert "(2 new, 0 already there)" in admin(db, "import", "credits", str(with_refs)).stdout
    # the next night's file repeats the rows not yet confirmed, and one more
    write(with_refs, "key,amount,currency,kiosk,ref\nK-2,2.00,EUR,,B-2026-002\n"
          "K-1,1.00,EUR,,B-2026-001\nK-1,3.00,EUR,,B-2026-003\n")  # fmt: skip
    taken = admin(db, "import", "credits", str(with_refs))
    assert taken.returncode == 0 and "3 rows taken (1 new, 2 already there)" in taken.stdout
    state = _credits_state(db)
    assert [(c, a) for c, _k, a in state[1] if c.startswith("HO-B-")] == [
        ("HO-B-B-2026-001", 100), ("HO-B-B-2026-002", 200), ("HO-B-B-2026-003", 300)
    ]  # fmt: skip
    assert len(state[1]) == 5

    # a ref taken before, now with another amount: refused, named, nothing changed
    write(with_refs, "key,amount,currency,kiosk,ref\nK-1,9.00,EUR,,B-2026-004\n"
          "K-1,4.00,EUR,,B-2026-001\n")  # fmt: skip
    refused = admin(db, "import", "credits", str(with_refs))
    assert refused.returncode == 2 and "line 3: ref B-2026-001 was taken before" in refused.stderr
    assert _credits_state(db) == state


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("key,amount,currency,kiosk\nK-1,5.00,EUR,\nK-9,5.00,EUR,\n",
         "line 3: key 'K-9' is not known to head office"),
        ("key,amount,currency,kiosk\nK-1,5.00,EUR,DEMO-01\nK-2,5.00,EUR,NOWHERE-7\n",
         "line 3: kiosk 'NOWHERE-7' is not registered"),
        ("key,amount,currency,kiosk,ref\nK-1,5.00,EUR,,=HYPERLINK(1)\n",
         "line 2: ref '=HYPERLINK(1)' is not 1 to 40 letters"),
        ("key,amount,currency,kiosk,ref\nK-1,5.00,EUR,,R-1\nK-2,5.00,EUR,,R-1\n",
         "line 3: ref R-1 is in the file twice"),
    ],
)  # fmt: skip
def test_a_credit_for_an_unknown_key_or_kiosk_refuses_the_file(
    tmp_path: Path, text: str, says: str
) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    _keys_and_kiosk(db, tmp_path)
    before = _credits_state(db)
    done = admin(db, "import", "credits", str(write(tmp_path / "c.csv", text)))
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert done.stdout == "" and _credits_state(db) == before
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(imported)).scalar_one() == 0
    finally:
        engine.dispose()


def test_a_file_that_is_not_utf8_or_not_there_is_named(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    latin = tmp_path / "keys.csv"
    latin.write_bytes("serial,status,reason,contract_account\nK-1,blocked,verloren ä,1\n"
                      .encode("latin-1"))  # fmt: skip
    done = admin(db, "import", "keys", str(latin))
    assert done.returncode == 2 and "not UTF-8" in done.stderr
    done = admin(db, "import", "keys", str(tmp_path / "nope.csv"))
    assert done.returncode == 2 and "cannot read it" in done.stderr


def test_twenty_thousand_rows_are_taken_quickly(office_db: str, tmp_path: Path) -> None:
    office = HeadOffice("", office_db, {})
    n = 20_000
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["serial", "status", "reason", "contract_account"])
    w.writerows([f"K-{i:06d}", "active", "", f"{4_000_000 + i}"] for i in range(n))
    keys = write(tmp_path / "keys.csv", buf.getvalue())
    started = time.monotonic()
    done = process(office.db, "import", "keys", str(keys))
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    print(f"\n{n} keys imported on {office.db.split(':')[0]}: {done.stdout.strip()} "
          f"(process {took:.1f} s)")  # fmt: skip
    assert counts(office.db)[0] == n
    again = admin(office.db, "import", "keys", str(keys))  # the next night: the same feed
    assert again.returncode == 0 and counts(office.db)[0] == n


def _journal(tmp_path: Path) -> Journal:
    """Two days of a kiosk: cash, card, a card reversed, a pending credit, unattributed cash."""
    j = Journal(tmp_path / "journal.sqlite", "DEMO-01")
    eur = lambda m: Money(m, "EUR")  # noqa: E731
    t = T0
    for day in range(2):
        for i, (method, paid, outcome) in enumerate(
            [("cash", 2000, "completed"), ("card", 3000, "completed"),
             ("card", 1500, "reversed"), ("cash", 1000, "pending")]
        ):  # fmt: skip
            tx = f"DEMO-01-T{day}{i}"
            t += timedelta(minutes=7)
            recs = [Record(Kind.TX_OPENED, tx, "K1", None,
                           {"method": method, "contract_account": "4711"})]  # fmt: skip
            if method == "cash":
                recs.append(Record(Kind.CASH_IN, tx, "K1", eur(paid), {"medium": "note"}))
            else:
                recs.append(Record(Kind.CARD_APPROVED, tx, "K1", eur(paid), {"receipt_no": i}))
            split = {"paid": paid, "fee": 0, "fee_net": 0, "fee_vat": 0, "debt": 200,
                     "credit": paid - 200}  # fmt: skip
            recs.append(Record(Kind.SPLIT, tx, "K1", eur(paid - 200), split))
            if outcome == "reversed":
                recs.append(Record(Kind.CARD_REVERSED, tx, "K1", eur(paid), {}))
            if outcome == "pending":
                recs.append(Record(Kind.PENDING_CREDIT, tx, "K1", eur(paid - 200),
                                   {"reason": "key_not_returned"}))  # fmt: skip
            recs.append(Record(Kind.TX_CLOSED, tx, "K1", None, {"outcome": outcome, **split}))
            j.append(recs, t)
        j.append([Record(Kind.CASH_UNATTRIBUTED, None, None, eur(200), {"medium": "coin"})], t)
        t += timedelta(days=1)
    return j


def test_payments_out_sum_to_the_money_report_of_the_same_days(
    office: HeadOffice, tmp_path: Path
) -> None:
    j = _journal(tmp_path)
    assert Syncer(j, office.client()).round(T0).backlog == 0
    out = admin(office.db, "export", "payments", "--since", "2026-11-21", "--until",
                "2026-11-22")  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 10  # 4 transactions and 1 unattributed payment a day
    states = sorted({r["state"] for r in rows})
    assert states == ["completed", "pending", "reversed", "unattributed"]
    reversed_ = next(r for r in rows if r["state"] == "reversed")
    assert reversed_["paid_minor"] == "0" and reversed_["method"] == "card"
    report = office.admin("report")
    taken = sum(Money.parse(m, "EUR").minor
                for m in re.findall(r"(-?\d+\.\d\d) EUR", report))  # fmt: skip
    assert sum(int(r["paid_minor"]) for r in rows) == taken == 2 * (2000 + 3000 + 1000 + 200)
    one_day = admin(office.db, "export", "payments", "--since", "2026-11-22", "--format", "json",
                    "--amounts", "text")  # fmt: skip
    day = json.loads(one_day.stdout)
    assert len(day) == 5 and {d["paid_text"] for d in day} >= {"20.00", "30.00", "2.00"}
    assert all(d["local_time"].startswith("2026-11-22") for d in day)


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_a_transaction_across_midnight_is_booked_on_one_day(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Opened at 23:59 in Jena, a coin then, a note at 00:00:30 and closed at 00:01: one row,
    on the day of its first money, with all its money and its debt and credit once; a
    transaction whose first money comes after midnight is the next day's."""
    j = Journal(tmp_path / "journal.sqlite", "DEMO-01")
    eur = lambda m: Money(m, "EUR")  # noqa: E731
    late = datetime(2026, 11, 21, 22, 59, tzinfo=UTC)  # 23:59 in Jena
    split = {"paid": 1200, "fee": 0, "fee_net": 0, "fee_vat": 0, "debt": 200, "credit": 1000}
    j.append([Record(Kind.TX_OPENED, "TX-A", "K1", None,
                     {"method": "cash", "contract_account": "4711"})], late)  # fmt: skip
    j.append([Record(Kind.CASH_IN, "TX-A", "K1", eur(200), {"medium": "coin"})],
             late + timedelta(seconds=30))  # fmt: skip
    j.append([Record(Kind.TX_OPENED, "TX-B", "K2", None,
                     {"method": "cash", "contract_account": "4712"})],
             late + timedelta(seconds=40))  # fmt: skip
    j.append([Record(Kind.CASH_IN, "TX-A", "K1", eur(1000), {"medium": "note"})],
             late + timedelta(seconds=90))  # 00:00:30 the next day  # fmt: skip
    j.append([Record(Kind.SPLIT, "TX-A", "K1", eur(1000), split),
              Record(Kind.TX_CLOSED, "TX-A", "K1", None, {"outcome": "completed", **split})],
             late + timedelta(minutes=2))  # fmt: skip
    b = {"paid": 500, "fee": 0, "fee_net": 0, "fee_vat": 0, "debt": 0, "credit": 500}
    j.append([Record(Kind.CASH_IN, "TX-B", "K2", eur(500), {"medium": "coin"}),
              Record(Kind.SPLIT, "TX-B", "K2", eur(500), b),
              Record(Kind.TX_CLOSED, "TX-B", "K2", None, {"outcome": "completed", **b})],
             late + timedelta(minutes=3))  # fmt: skip
    assert Syncer(j, office.client()).round(T0).backlog == 0

    def export(*days: str) -> list[tuple[str, str, int, int, int]]:
        done = admin(office.db, "export", "payments", "--since", days[0], "--until", days[-1])
        assert done.returncode == 0, done.stderr
        rows = csv.DictReader(io.StringIO(done.stdout))
        return [(r["txid"], r["local_time"], int(r["paid_minor"]), int(r["debt_minor"]),
                 int(r["credit_minor"])) for r in rows]  # fmt: skip

    a = ("TX-A", "2026-11-21 23:59:30", 1200, 200, 1000)
    b_row = ("TX-B", "2026-11-22 00:02:00", 500, 0, 500)
    assert export("2026-11-21") == [a]
    assert export("2026-11-22") == [b_row]
    assert export("2026-11-21", "2026-11-22") == [a, b_row]


def test_export_with_bad_days_is_refused_clearly(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    done = admin(db, "export", "payments", "--since", "2026-11-22", "--until", "2026-11-21")
    assert done.returncode == 2 and "--until is before --since" in done.stderr
    done = admin(db, "export", "payments", "--since", "22.11.2026")
    assert done.returncode == 2 and "invalid fromisoformat value" in done.stderr


def test_verify_checks_every_stored_chain_and_names_the_bad_entry(
    office: HeadOffice, tmp_path: Path
) -> None:
    j = _journal(tmp_path)
    Syncer(j, office.client()).round(T0)
    done = admin(office.db, "verify")
    assert done.returncode == 0 and re.search(r"DEMO-01 +\d+ entries  ok", done.stdout)
    engine = open_db(office.db)
    try:
        from sync.store.tables import entries

        with engine.begin() as conn:
            conn.execute(entries.update().where(entries.c.seq == 3).values(amount=99_999))
    finally:
        engine.dispose()
    done = admin(office.db, "verify", "DEMO-01")
    assert done.returncode == 1 and "entry 3: its content does not match its hash" in done.stdout
    done = admin(office.db, "verify", "NOBODY")
    assert done.returncode == 2 and "no entries of kiosk NOBODY" in done.stderr


def test_the_billing_system_fetches_payments_over_http_with_its_own_token(
    office: HeadOffice, tmp_path: Path
) -> None:
    j = _journal(tmp_path)
    Syncer(j, office.client()).round(T0)
    token = office.admin("token", "billing", "--role", "billing")
    url = f"{office.url}/v1/billing/payments"
    days = {"since": "2026-11-21", "until": "2026-11-22"}
    got = requests.get(url, params=days, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    cli = admin(office.db, "export", "payments", "--since", "2026-11-21", "--until", "2026-11-22")
    assert got.text == cli.stdout  # the same rows as the night job's export
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": f"Bearer {office.tokens['DEMO-01']}"}, 401),
    ):
        refused = requests.get(url, params=days, headers=headers, timeout=10)
        assert refused.status_code == status and "billing system" in refused.text  # fmt: skip
    bad = requests.get(url, params={"since": "2026-11-22", "until": "2026-11-21"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
    assert bad.status_code == 422 and "until is before since" in bad.text


def test_a_kiosk_downloads_only_the_keys_and_debts_changed_since_its_version(
    office: HeadOffice, tmp_path: Path
) -> None:
    """Reference data by change: after the night's import of 20,000 keys, a kiosk that has
    them fetches the one key blocked since, not the whole list again."""
    n = 20_000
    rows = "".join(f"K-{i:06d},active,,{4_000_000 + i}\n" for i in range(n))
    keys = write(tmp_path / "keys.csv", "serial,status,reason,contract_account\n" + rows)
    assert admin(office.db, "import", "keys", str(keys)).returncode == 0
    j = Journal(tmp_path / "journal.sqlite", "DEMO-01")
    sync = Syncer(j, office.client())
    assert sync.pull_reference()  # the whole list, the first time
    held = int(j.get_meta("sync_reference_version") or 0)
    assert j.account_for("K-000007", "4000007", "EUR").status == "active"
    write(keys, "serial,status,reason,contract_account\nK-000007,blocked,lost,4000007\n")
    assert admin(office.db, "import", "keys", str(keys)).returncode == 0
    _etag, delta = office.client().reference(None, since=held)
    assert delta is not None and delta["since"] == held
    assert [k["serial"] for k in delta["keys"]] == ["K-000007"] and delta["debts"] == []
    assert sync.pull_reference()
    assert j.account_for("K-000007", "4000007", "EUR").status == "blocked"
    assert int(j.get_meta("sync_reference_version") or 0) == delta["version"] > held
    assert not sync.pull_reference()  # nothing new: 304
    _etag, whole = office.client().reference(None, since=held + 10**12)  # a version it never had
    assert whole is not None and whole["since"] is None and len(whole["keys"]) == n
