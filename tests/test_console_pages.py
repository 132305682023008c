"""The staff console's pages over HTTP against the real server process (no browser: the pages'
text is enough): a disabled person refused, lists paged and filtered by day, errors as pages in
the reader's language while the API keeps JSON, amounts typed as people type them, forms only
for the roles that may use them, each person's language, a transaction's credit as a clerk
reads it wherever it went, a debt as collected since it was set; and every text of the console
in both catalogues."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import insert, select, update

from sync.store.tables import audit, ref_debts, staff
from tests.conftest import HeadOffice
from tests.test_console import PASSWORDS, ROLES, in_db, staff_add, stored_directly

CONSOLE = Path(__file__).resolve().parent.parent / "sync" / "console"


def logged_in(office: HeadOffice, name: str, lang: str | None = None) -> requests.Session:
    """A person of the staff (added here) logged in, in `lang` if given."""
    staff_add(office.db, name)
    if lang:
        in_db(office.db, update(staff).where(staff.c.name == name).values(lang=lang))
    s = requests.Session()
    got = s.post(f"{office.url}/console/login", timeout=30,
                 data={"name": name, "password": PASSWORDS[name]})  # fmt: skip
    assert got.status_code == 200 and got.url == f"{office.url}/console/", got.text[-300:]
    return s


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no form with a CSRF token on the page"
    return found.group(1)


def cells(page: str, table_id: str, heading: bool = True) -> list[list[str]]:
    """The text of each row's cells of one table of a page (without its heading row)."""

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.depth = 0
            self.rows: list[list[str]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "table" and ("id", table_id) in attrs:
                self.depth = 1
            elif tag == "table" and self.depth:
                self.depth += 1
            elif self.depth and tag == "tr":
                self.rows.append([])
            elif self.depth and tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag: str) -> None:
            if tag == "table" and self.depth:
                self.depth -= 1
            elif self.depth and tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append(" ".join("".join(self.cell).split()))
                self.cell = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell.append(data.replace("\xa0", " "))

    parser = Rows()
    parser.feed(page)
    assert parser.rows, f"no table {table_id}"
    return parser.rows[1:] if heading else parser.rows


@contextlib.contextmanager
def open_db_(db: str) -> Iterator[Any]:
    from sync.store.tables import open_db

    engine = open_db(db)
    try:
        yield engine
    finally:
        engine.dispose()


def ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_a_disabled_person_is_refused_as_a_wrong_password_and_loses_the_session(
    office: HeadOffice,
) -> None:
    s = logged_in(office, "otto")
    assert s.get(f"{office.url}/console/", timeout=30, allow_redirects=False).status_code == 200
    # disabled behind the console's back (the sessions left as they were): no longer let in
    in_db(office.db, update(staff).where(staff.c.name == "otto")
          .values(disabled=datetime.now(UTC).isoformat()))  # fmt: skip
    page = s.get(f"{office.url}/console/", timeout=30, allow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/console/login"
    form = s.post(f"{office.url}/console/lang", data={"lang": "en", "csrf": "x"}, timeout=30)
    assert form.status_code == 401
    right = requests.post(f"{office.url}/console/login", timeout=30,
                          data={"name": "otto", "password": PASSWORDS["otto"]})  # fmt: skip
    wrong = requests.post(f"{office.url}/console/login", timeout=30,
                          data={"name": "otto", "password": "not his one"})  # fmt: skip
    assert right.status_code == wrong.status_code == 401
    assert "Name oder Passwort ist falsch." in right.text and "ho_session" not in right.cookies
    said = [(r.action, r.detail) for r in in_db(office.db, select(audit).where(
        audit.c.who == "otto").order_by(audit.c.id))[0]]  # fmt: skip
    assert said[-2:] == [("login_failed", "127.0.0.1 (disabled)"),
                         ("login_failed", "127.0.0.1")]  # fmt: skip
    in_db(office.db, update(staff).where(staff.c.name == "otto").values(disabled=None))
    again = requests.Session()
    assert again.post(f"{office.url}/console/login", timeout=30, allow_redirects=False,
                      data={"name": "otto", "password": PASSWORDS["otto"]}
                      ).status_code == 303  # fmt: skip


@pytest.mark.parametrize("office_db", ["sqlite", "postgresql"], indirect=True)
def test_lists_are_paged_and_filtered_by_day(office: HeadOffice) -> None:
    """The audit, the reports' table and a key's transactions: 50 rows a page, the rest on the
    next, from/to days (local, Berlin) narrowing each; the audit by person and action."""
    s = logged_in(office, "otto", "en")
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
    in_db(office.db, insert(audit).values([
        {"ts": f"{d.isoformat()}T{h:02d}:00:00+00:00", "who": "ada" if h % 2 else "bea",
         "action": "key" if h < 2 else "debt", "detail": f"{d} {h}", "via": "cli", "target": ""}
        for d in days for h in (0, 1, 2, 23)]))  # fmt: skip
    n = len(in_db(office.db, select(audit.c.id))[0])  # and adding otto, his login, ...
    assert 120 < n < 150
    got = s.get(f"{office.url}/console/audit", timeout=30)
    rows = cells(got.text, "audit")
    assert len(rows) == 50 and f"1 to 50 of {n}" in got.text
    assert 'rel="next"' in got.text and 'rel="prev"' not in got.text
    last = s.get(f"{office.url}/console/audit", params={"page": 3}, timeout=30)
    assert len(cells(last.text, "audit")) == n - 100 and 'rel="next"' not in last.text
    assert 'href="/console/audit?page=2" rel="prev"' in last.text
    # the days are Berlin's: 23:00 UTC on 1 November is already 2 November there
    one = s.get(f"{office.url}/console/audit", timeout=30,
                params={"from": "2026-11-02", "to": "2026-11-02"})  # fmt: skip
    assert [r[5] for r in cells(one.text, "audit")] == [
        "2026-11-02 2", "2026-11-02 1", "2026-11-02 0", "2026-11-01 23"]
    bea = s.get(f"{office.url}/console/audit", timeout=30,
                params={"who": "bea", "action": "debt", "from": "1.11.2026", "to": "3.11.2026"})
    assert [r[5] for r in cells(bea.text, "audit")] == ["2026-11-03 2", "2026-11-02 2",
                                                        "2026-11-01 2"]  # fmt: skip
    assert {r[1] for r in cells(bea.text, "audit")} == {"bea"}
    ada = s.get(f"{office.url}/console/audit", params={"who": "ada"}, timeout=30).text
    assert "1 to 50 of 60" in ada and 'href="/console/audit?who=ada&amp;page=2"' in ada

    # 60 top-ups of K1, one a day at 10:00 UTC, each 1.00 in coins
    start = datetime(2026, 9, 1, 10, 0, tzinfo=UTC)
    rows_in: list[dict[str, Any]] = []
    for i in range(60):
        tx, at = f"DEMO-01-T{i:03d}", ts(start + timedelta(days=i))
        rows_in += [
            {"kiosk_id": "DEMO-01", "seq": 3 * i + 1, "ts": at, "kind": "tx_opened", "txid": tx,
             "key": "K1", "data": json.dumps({"method": "cash", "contract_account": "4711"})},
            {"kiosk_id": "DEMO-01", "seq": 3 * i + 2, "ts": at, "kind": "cash_in", "txid": tx,
             "key": "K1", "amount": 100, "currency": "EUR", "data": '{"medium": "coin"}'},
            {"kiosk_id": "DEMO-01", "seq": 3 * i + 3, "ts": at, "kind": "tx_closed", "txid": tx,
             "key": "K1", "data": '{"outcome": "completed"}'},
        ]  # fmt: skip
    stored_directly(office.db, rows_in)
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    key = s.get(f"{office.url}/console/key", params={"q": "K1"}, timeout=30)
    history = cells(key.text, "history")
    assert len(history) == 50 and history[0][2] == "DEMO-01-T059"  # newest first
    assert "1 to 50 of 60" in key.text
    older = s.get(f"{office.url}/console/key", params={"q": "K1", "page": "2"}, timeout=30)
    assert [r[2] for r in cells(older.text, "history")] == [
        f"DEMO-01-T{i:03d}" for i in range(9, -1, -1)]
    week = s.get(f"{office.url}/console/key", timeout=30,
                 params={"q": "K1", "from": "2026-09-03", "to": "2026-09-09"})  # fmt: skip
    assert [r[2] for r in cells(week.text, "history")] == [
        f"DEMO-01-T{i:03d}" for i in range(8, 1, -1)]
    assert 'value="2026-09-03"' in week.text and "1 to 7 of 7" in week.text

    report = s.get(f"{office.url}/console/reports", timeout=30)
    assert len(cells(report.text, "money")) == 50 and "1 to 50 of 60" in report.text
    assert 'href="/console/reports?page=2"' in report.text
    sept = s.get(f"{office.url}/console/reports", timeout=30,
                 params={"from": "2026-09-28", "to": "2026-10-02"})  # fmt: skip
    assert [r[0] for r in cells(sept.text, "money")] == [
        "28 Sept 2026", "29 Sept 2026", "30 Sept 2026", "1 Oct 2026", "2 Oct 2026"]
    assert 'href="/console/reports.csv?from=2026-09-28&amp;to=2026-10-02"' in sept.text
    csv = s.get(f"{office.url}/console/reports.csv", timeout=30,
                params={"from": "2026-09-28", "to": "2026-10-02"}).text  # fmt: skip
    assert csv.count("DEMO-01") == 5 and "2026-09-27" not in csv
    with open_db_(office.db) as engine, engine.connect() as conn:  # the download is audited
        last = conn.execute(select(audit).order_by(audit.c.id.desc()).limit(1)).one()
    assert (last.action, last.via, last.target) == ("export", "console", "export money report")
    assert "2026-09-28..2026-10-02: 5 rows" in last.detail
    bad: dict[str, str]
    for bad in ({"from": "2026-13-01"}, {"from": "2026-10-02", "to": "2026-09-28"},
                {"page": "0"}, {"page": "x"}):  # fmt: skip
        refused = s.get(f"{office.url}/console/reports", params=bad, timeout=30)
        assert refused.status_code == 422 and 'id="error"' in refused.text, bad


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_errors_are_pages_in_the_readers_language_and_the_api_keeps_json(
    office: HeadOffice,
) -> None:
    url = office.url
    anonymous = requests.get(f"{url}/console/nothing-here", timeout=30)
    assert anonymous.status_code == 404
    assert anonymous.headers["content-type"].startswith("text/html")
    assert "Diese Seite gibt es nicht." in anonymous.text
    assert 'href="/console/login"' in anonymous.text
    english = requests.get(f"{url}/console/nothing-here", timeout=30,
                           headers={"Accept-Language": "en-US,en;q=0.9"})  # fmt: skip
    assert "There is no such page." in english.text
    api = requests.get(f"{url}/v1/nothing-here", timeout=30)
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}
    api_auth = requests.get(f"{url}/v1/reference", timeout=30)
    assert api_auth.status_code == 401 and "detail" in api_auth.json()

    s = logged_in(office, "anna", "en")  # her own language wins over the browser's
    german_browser = {"Accept-Language": "de-DE,de"}
    missing = s.get(f"{url}/console/kiosk/NOPE-01", timeout=30, headers=german_browser)
    assert missing.status_code == 404 and "No automat NOPE-01 is registered." in missing.text
    assert 'id="back"' in missing.text and "<nav>" in missing.text
    back = s.get(f"{url}/console/kiosk/NOPE-01", timeout=30,
                 headers={"Referer": f"{url}/console/alarms"})  # fmt: skip
    assert f'href="{url}/console/alarms" id="back"' in back.text
    elsewhere = s.get(f"{url}/console/kiosk/NOPE-01", timeout=30,
                      headers={"Referer": "https://evil.example/console/"})  # fmt: skip
    assert 'href="/console/" id="back"' in elsewhere.text
    csrf = csrf_of(s.get(f"{url}/console/", timeout=30).text)
    incomplete = s.post(f"{url}/console/key", data={"csrf": csrf}, timeout=30)
    assert incomplete.status_code == 422 and "serial, status" in incomplete.text
    assert incomplete.headers["content-type"].startswith("text/html")
    unknown_key = s.post(f"{url}/console/key", timeout=30,
                         data={"csrf": csrf, "serial": "NOKEY", "status": "blocked"})
    assert unknown_key.status_code == 404 and "No key NOKEY is known." in unknown_key.text
    bad_status = s.post(f"{url}/console/key", timeout=30,
                        data={"csrf": csrf, "serial": "NOKEY", "status": "lost"})  # fmt: skip
    assert bad_status.status_code == 422
    assert "Status &#39;lost&#39; is not one of active, blocked, not_activated." in bad_status.text
    wrong_method = s.delete(f"{url}/console/key", timeout=30)
    assert wrong_method.status_code == 405 and "cannot be used that way" in wrong_method.text
    no_tx = s.get(f"{url}/console/tx", params={"id": "NOPE-1"}, timeout=30)
    assert no_tx.status_code == 404 and "No transaction NOPE-1 is known." in no_tx.text
    bad_day = s.get(f"{url}/console/audit", params={"to": "31.2.2026"}, timeout=30)
    assert bad_day.status_code == 422 and "to: &#39;31.2.2026&#39; is not a day" in bad_day.text


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_amounts_are_typed_as_people_type_them_and_each_change_is_audited(
    office: HeadOffice,
) -> None:
    """A German form takes 25,00 and 25.00, an English one 25.00 only; what is not an amount
    is refused as a page and changes nothing; each change is audited with the row before and
    after."""
    s = logged_in(office, "ada")
    url = office.url
    csrf = csrf_of(s.get(f"{url}/console/", timeout=30).text)

    def debt(amount: str, currency: str = "EUR") -> requests.Response:
        return s.post(f"{url}/console/debt", timeout=30, data={
            "csrf": csrf, "account": "4711", "amount": amount, "currency": currency})

    def stored() -> tuple[int, str] | None:
        got = in_db(office.db, select(ref_debts.c.amount, ref_debts.c.currency))[0]
        return (got[0][0], got[0][1]) if got else None

    for typed, minor in (("25,00", 2500), ("12,5", 1250), ("7.25", 725), ("50", 5000)):
        assert debt(typed).status_code == 200 and stored() == (minor, "EUR"), typed
    for typed in ("1.000,00", "12,505", "-5", "12 €", " ", "12,50 EUR", "１２"):
        refused = debt(typed)
        assert refused.status_code == 422 and "ist kein Betrag in EUR" in refused.text, typed
        assert stored() == (5000, "EUR"), typed
    nothing = debt("")
    assert nothing.status_code == 422 and "amount fehlt oder ist falsch" in nothing.text
    assert debt("3", "XYZ").status_code == 422 and stored() == (5000, "EUR")
    rows = in_db(office.db, select(audit).where(audit.c.action == "debt")
                 .order_by(audit.c.id))[0]  # fmt: skip
    assert len(rows) == 4 and {r.via for r in rows} == {"console"}
    assert [json.loads(r.before)["amount"] if r.before else None for r in rows] == [
        None, 2500, 1250, 725]
    assert [json.loads(r.after) for r in rows][-1] == {
        "contract_account": "4711", "amount": 5000, "currency": "EUR"}
    assert rows[-1].detail == "4711: 7.25 EUR -> 50.00 EUR"

    s.post(f"{url}/console/lang", data={"csrf": csrf, "lang": "en"}, timeout=30)
    assert debt("25,00").status_code == 422 and stored() == (5000, "EUR")
    assert "is not an amount in EUR: write it as 12.50" in debt("25,00").text
    assert debt("25.00").status_code == 200 and stored() == (2500, "EUR")


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_each_form_only_for_the_roles_that_may_use_it(office: HeadOffice) -> None:
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    for name in ROLES:
        s = logged_in(office, name)
        page = s.get(f"{office.url}/console/key", params={"q": "K1"}, timeout=30).text
        key_form, debt_form = 'class="inline key-form"' in page, 'class="debt-form"' in page
        assert ('method="post" action="/console/key"' in page) == key_form
        assert ('method="post" action="/console/debt"' in page) == debt_form
        assert (key_form, debt_form) == {"otto": (False, False), "anna": (True, False),
                                         "ada": (True, True)}[name], name  # fmt: skip
        csrf = csrf_of(page)  # the language form's: every role has one
        key = s.post(f"{office.url}/console/key", timeout=30,
                     data={"csrf": csrf, "serial": "K1", "status": "blocked", "reason": "lost"})
        debt = s.post(f"{office.url}/console/debt", timeout=30,
                      data={"csrf": csrf, "account": "4711", "amount": "5,00"})
        assert (key.status_code, debt.status_code) == {
            "otto": (403, 403), "anna": (200, 403), "ada": (200, 200)}[name], name
        if name == "otto":
            assert "Als Prüfer dürfen Sie das nicht ändern (nur Sachbearbeiter oder " \
                   "Administrator)." in key.text
    refused = [(r.who, r.detail) for r in in_db(office.db, select(audit).where(
        audit.c.action == "refused").order_by(audit.c.id))[0]]  # fmt: skip
    assert refused == [("anna", "debt: needs admin"), ("otto", "key: needs operator or admin"),
                       ("otto", "debt: needs admin")]  # fmt: skip


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_each_person_reads_the_console_in_their_own_language(office: HeadOffice) -> None:
    s = logged_in(office, "otto")
    url = office.url
    fleet = s.get(f"{url}/console/", timeout=30, headers={"Accept-Language": "en"})
    assert '<html lang="de">' in fleet.text and "Letzter Kontakt" in fleet.text
    csrf = csrf_of(fleet.text)
    forged = s.post(f"{url}/console/lang", data={"lang": "en", "csrf": "x"}, timeout=30)
    assert forged.status_code == 403
    bad = s.post(f"{url}/console/lang", data={"lang": "fr", "csrf": csrf}, timeout=30)
    assert bad.status_code == 422 and "Die Sprache &#39;fr&#39; ist keine von de, en." in bad.text
    assert in_db(office.db, select(staff.c.lang).where(staff.c.name == "otto"))[0] == [("de",)]
    back = "/console/audit?who=otto"
    switched = s.post(f"{url}/console/lang", data={"lang": "en", "csrf": csrf, "back": back},
                      timeout=30, allow_redirects=False)  # fmt: skip
    assert switched.status_code == 303 and switched.headers["location"] == back
    assert in_db(office.db, select(staff.c.lang).where(staff.c.name == "otto"))[0] == [("en",)]
    page = s.get(f"{url}{back}", timeout=30, headers={"Accept-Language": "de"}).text
    assert '<html lang="en">' in page and "Before → after" in page
    assert "language: Deutsch → English" in page  # the audit's before and after
    row = in_db(office.db, select(audit).where(audit.c.action == "lang"))[0][0]
    assert (row.who, row.via, row.target) == ("otto", "console", "staff otto")
    assert json.loads(row.before)["lang"] == "de" and json.loads(row.after)["lang"] == "en"
    assert "password_hash" not in json.loads(row.after)
    away = s.post(f"{url}/console/lang", timeout=30, allow_redirects=False,
                  data={"lang": "en", "csrf": csrf, "back": "//evil.example/"})  # fmt: skip
    assert away.headers["location"] == "/console/"  # back only to the console
    # a new login keeps it, whatever the browser prefers
    s2 = requests.Session()
    s2.post(f"{url}/console/login", data={"name": "otto", "password": PASSWORDS["otto"]},
            timeout=30, headers={"Accept-Language": "de"})  # fmt: skip
    assert '<html lang="en">' in s2.get(f"{url}/console/", timeout=30).text


@pytest.mark.parametrize("office_db", ["sqlite", "postgresql"], indirect=True)
def test_a_credit_is_shown_where_it_went(office: HeadOffice) -> None:
    """Owed at the kiosk that took the money, then written at another one; handed on to
    another kiosk; a card payment given back; a receipt not printed: each said in a clerk's
    words on the transaction page."""
    t0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)

    def entry(kiosk: str, seq: int, minutes: int, kind: str, txid: str, amount: int | None,
              **data: Any) -> dict[str, Any]:  # fmt: skip
        return {"kiosk_id": kiosk, "seq": seq, "ts": ts(t0 + timedelta(minutes=minutes)),
                "kind": kind, "txid": txid, "key": "K1", "amount": amount,
                "currency": "EUR" if amount is not None else None, "data": json.dumps(data)}

    owed, handed, card = "DEMO-01-261121-1", "DEMO-01-261121-2", "DEMO-01-261121-3"
    stored_directly(office.db, [
        entry("DEMO-01", 1, 0, "tx_opened", owed, None, method="cash", contract_account="4711"),
        entry("DEMO-01", 2, 1, "cash_in", owed, 1000, medium="note"),
        entry("DEMO-01", 3, 1, "cash_in", owed, 200, medium="coin"),
        entry("DEMO-01", 4, 2, "split", owed, 1200, paid=1200, fee=0, debt=0, credit=1200),
        entry("DEMO-01", 5, 2, "write_failed", owed, None, reason="key removed"),
        entry("DEMO-01", 6, 2, "pending_credit", owed, 1200, reason="key_removed"),
        entry("DEMO-01", 7, 2, "tx_closed", owed, None, outcome="pending"),
        entry("DEMO-01", 8, 3, "receipt", owed, None, printed=False, reason="paper out"),
        entry("OTHER-01", 1, 60, "pending_written", owed, 1200, credit_after=1700),
        entry("DEMO-01", 9, 10, "tx_opened", handed, None, method="cash"),
        entry("DEMO-01", 10, 11, "cash_in", handed, 500, medium="note"),
        entry("DEMO-01", 11, 11, "split", handed, 500, paid=500, fee=0, debt=0, credit=500),
        entry("DEMO-01", 12, 11, "pending_credit", handed, 500, reason="write_failed"),
        entry("DEMO-01", 13, 11, "tx_closed", handed, None, outcome="pending", receipt="declined"),
        entry("DEMO-01", 14, 30, "pending_released", handed, None, reason="claimed_elsewhere"),
        entry("DEMO-01", 15, 40, "tx_opened", card, None, method="card"),
        entry("DEMO-01", 16, 41, "card_approved", card, 3000, card="girocard",
              pan="############1234"),
        entry("DEMO-01", 17, 42, "card_reversed", card, 3000, reason="terminal timeout"),
        entry("DEMO-01", 18, 42, "tx_closed", card, None, outcome="reversed"),
    ])  # fmt: skip
    s = logged_in(office, "otto", "en")

    first = s.get(f"{office.url}/console/tx", params={"id": owed}, timeout=30).text
    assert [r for r in cells(first, "paid")] == [["Coins", "1", "€2.00"], ["Notes", "1", "€10.00"],
                                                 ["Paid in total", "", "€12.00"]]
    said = " ".join(first.split())
    assert "Owed at first, written to the key later at OTHER-01 on 21 Nov 2026, 11:00:00." in said
    assert "Credit on the key afterwards: €17.00." in said
    assert "Not printed</span>: paper out." in said
    assert cells(first, "steps")[0][2:4] == ["writing the key failed", "key removed"]
    assert cells(first, "overview", heading=False)[0][1] == "DEMO-01, OTHER-01"

    second = " ".join(s.get(f"{office.url}/console/tx", params={"id": handed},
                            timeout=30).text.split())  # fmt: skip
    assert ("Not on the key: DEMO-01 handed the credit on to another automat on 21 Nov 2026, "
            "10:30:00.") in second
    assert "Not wanted by the customer." in second and "paid, credit owed to the key" in second

    third = s.get(f"{office.url}/console/tx", params={"id": card}, timeout=30).text
    assert cells(third, "paid")[0][:2] == ["Card (girocard ############1234)", "1"]
    assert cells(third, "paid")[1] == ["Card payment given back", "1", "-€30.00"]
    assert cells(third, "paid")[-1] == ["Paid in total", "", "€0.00"]
    assert "card payment given back, nothing charged" in third
    assert "No receipt was recorded." in third

    # the same in German
    in_db(office.db, update(staff).where(staff.c.name == "otto").values(lang="de"))
    german = " ".join(s.get(f"{office.url}/console/tx", params={"id": owed},
                            timeout=30).text.split()).replace("\xa0", " ")  # fmt: skip
    assert ("Zunächst ausstehend, später am 21.11.2026, 11:00:00 an OTHER-01 auf den Schlüssel "
            "geschrieben.") in german
    assert "Insgesamt bezahlt" in german and "12,00 €" in german


@pytest.mark.parametrize("office_db", ["sqlite", "postgresql"], indirect=True)
def test_a_debt_is_shown_as_set_as_collected_since_and_with_its_history(
    office: HeadOffice,
) -> None:
    """Collections before the debt was set were counted by whoever set it; those after it
    lower what is still open; a claim raises it; the history lists them all."""
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    before = datetime.now(UTC) - timedelta(days=2)

    def top_up(kiosk: str, seq: int, at: datetime, txid: str, debt: int,
               account: str = "4711") -> list[dict[str, Any]]:  # fmt: skip
        opened = json.dumps({"method": "cash", "contract_account": account})
        return [{"kiosk_id": kiosk, "seq": seq, "ts": ts(at), "kind": "tx_opened", "txid": txid,
                 "key": "K1", "data": opened},
                {"kiosk_id": kiosk, "seq": seq + 1, "ts": ts(at), "kind": "split", "txid": txid,
                 "key": "K1", "amount": 1000 - debt, "currency": "EUR",
                 "data": json.dumps({"paid": 1000, "fee": 0, "debt": debt,
                                     "credit": 1000 - debt})}]  # fmt: skip

    stored_directly(office.db, top_up("DEMO-01", 1, before, "T-OLD", 400))
    office.admin("debt", "4711", "30.00")  # set now: T-OLD was known to whoever set it
    after = datetime.now(UTC) + timedelta(seconds=1)
    stored_directly(office.db, [
        *top_up("DEMO-01", 3, after, "T-NEW", 250),
        *top_up("OTHER-01", 1, after + timedelta(seconds=1), "T-NEW2", 150),
        *top_up("OTHER-01", 3, after, "T-ELSE", 999, account="4711-X"),  # another account
        {"kiosk_id": "OTHER-01", "seq": 5, "ts": ts(after + timedelta(seconds=2)),
         "kind": "claim", "txid": "T-NEW2", "key": "K1", "amount": 100, "currency": "EUR",
         "data": '{"reason": "payment given back"}'},
    ])  # fmt: skip
    s = logged_in(office, "otto", "en")
    page = s.get(f"{office.url}/console/key", params={"q": "4711"}, timeout=30).text
    facts = {r[0]: r[1] for r in cells(page, "debt-4711", heading=False)}
    assert facts["Debt as set"] == "€30.00"
    assert facts["Collected by the automats since"] == "-€4.00"
    assert facts["Claims since (credit no payment backs)"] == "€1.00"
    assert facts["Still open"] == "€27.00"
    history = cells(page, "debt-history-4711")
    assert [(r[1], r[3], r[4]) for r in history] == [
        ("claim: credit no payment backs", "T-NEW2", "€1.00"),
        ("debt recovered", "T-NEW2", "-€1.50"),
        ("debt recovered", "T-NEW", "-€2.50"),
        ("debt set", "", "€30.00"),
        ("debt recovered", "T-OLD", "-€4.00"),
    ]
    assert history[3][2].endswith("(command)")  # who set it, through what
    # the days narrow the history, not the figures
    today = datetime.now(ZoneInfo("Europe/Berlin")).date().isoformat()
    narrowed = s.get(f"{office.url}/console/key", timeout=30,
                     params={"q": "4711", "from": today, "to": today}).text  # fmt: skip
    assert "T-OLD" not in str(cells(narrowed, "debt-history-4711"))
    still = {r[0]: r[1] for r in cells(narrowed, "debt-4711", heading=False)}["Still open"]
    assert still == "€27.00"


# ---------------------------------------------------------------- the catalogues


def test_every_text_of_the_console_is_in_both_catalogues() -> None:
    """Every text the console's code and templates mark (`_()`, `t()`, `N_()`) has its German
    and English translation, no catalogue keeps a text no longer used, the placeholders match,
    and no template has text outside `_()`: nothing shows untranslated."""
    from babel.messages.extract import extract_python
    from jinja2.ext import babel_extract

    from sync.console.i18n import catalogue

    used: set[str] = set()
    for f in sorted(CONSOLE.glob("*.py")):
        with f.open("rb") as fh:
            for _n, _f, msg, _c in extract_python(fh, {"N_": None, "t": None, "self": None},
                                                  [], {}):  # fmt: skip
                said = msg[0] if isinstance(msg, tuple) else msg
                if said:
                    used.add(str(said))
    templates = sorted((CONSOLE / "templates").glob("*.html"))
    assert len(templates) >= 10
    for f in templates:
        with f.open("rb") as fh:
            for _line, _func, found, _notes in babel_extract(fh, ("_",), [], {}):
                marked = found[0] if isinstance(found, tuple) else found
                if marked:
                    used.add(str(marked))
    assert len(used) > 250
    for lang in ("de", "en"):
        cat = catalogue(lang)
        assert sorted(used - set(cat)) == [], lang
        assert sorted(set(cat) - used) == [], lang
        for msgid, text in cat.items():
            assert set(re.findall(r"{(\w+)}", msgid)) == set(re.findall(r"{(\w+)}", text)), msgid
    de = catalogue("de")
    assert de["Fleet"] == "Automaten" and de["never connected"] == "noch nie verbunden"
    assert sum(de[m] != m for m in used) > 0.9 * len(used)  # German, not English copied

    bare = []
    for f in templates:
        text = f.read_text("utf-8")
        text = re.sub(r"{#.*?#}|{%.*?%}|{{.*?}}", " ", text, flags=re.S)
        text = re.sub(r"<style>.*?</style>", " ", text, flags=re.S)
        text = re.sub(r"<[^>]*>", " ", text, flags=re.S)  # tags and their attributes
        words = re.findall(r"[A-Za-zÄÖÜäöüß]{2,}", text)
        if words:
            bare.append((f.name, words))
    assert bare == []
    # attributes a person reads (placeholders, labels for assistive technology) too
    for f in templates:
        for attr in re.findall(r'(?:placeholder|aria-label|title)="([^"]*)"', f.read_text()):
            assert attr.startswith("{{") or not re.search(r"[A-Za-z]{2,}", attr), (f.name, attr)


def test_the_login_page_takes_the_language_the_browser_prefers() -> None:
    from sync.console.i18n import from_accept_language as lang

    assert lang(None) == lang("") == lang("fr-FR,fr") == "de"
    assert lang("en-US,en;q=0.9") == lang("en") == lang("fr, en;q=0.5") == "en"
    assert lang("de-DE,de;q=0.9,en;q=0.8") == lang("en;q=0.5,de") == "de"
    assert lang("de;q=0.4,en;q=0.6") == "en" and lang("en;q=0,de;q=0.1") == "de"
    assert lang("en;q=x") == "de"  # a weight that is none: not preferred


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_the_fleet_page_shows_the_release_each_kiosk_reported(office: HeadOffice) -> None:
    """#38: the version (and journal schema) each kiosk says with its requests, per kiosk on
    the fleet page; a kiosk that said none is shown so."""
    client = office.client("DEMO-01")
    client.session.headers.update({"X-Kiosk-Version": "2.1.0", "X-Kiosk-Journal-Schema": "0007"})
    assert client.upload([]) == 0
    page = logged_in(office, "anna", "en").get(f"{office.url}/console/", timeout=30).text
    rows = {r[0]: r for r in cells(page, "fleet")}
    assert rows["DEMO-01"][-1] == "2.1.0 (0007)"
    assert rows["OTHER-01"][-1] == "not reported"
