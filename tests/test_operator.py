"""Head office as an operator runs it (#37): kiosks and staff managed from `sync.admin`, every
change and export in the audit, amounts as people write them, and the server's log."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select, text

from sync.admin import main as admin_main
from sync.admin.serve import shown
from sync.store.tables import audit, kiosks, open_db, ref_debts, settings, staff
from sync.wire.protocol import GENESIS, entry_hash
from tests.conftest import ROOT, HeadOffice, free_port

PASSWORD = "correct horse battery"


def admin(db: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The command line in this process (stdin for passwords)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = admin_main(["--db", db, *args])
            except SystemExit as stop:  # argparse refusing an argument
                code = int(stop.code or 0)
    finally:
        sys.stdin = old
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def audit_rows(db: str) -> list[Any]:
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            return conn.execute(select(audit).order_by(audit.c.id)).all()
    finally:
        engine.dispose()


def one(db: str, table: Any, *where: Any) -> Any:
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            return conn.execute(select(table).where(*where)).first()
    finally:
        engine.dispose()


def reference(office: HeadOffice, token: str) -> int:
    return requests.get(office.url + "/v1/reference", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code  # fmt: skip


# ---------------------------------------------------------------- kiosks


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_a_kiosk_is_added_once_rotated_and_revoked(office: HeadOffice) -> None:
    old = office.tokens["DEMO-01"]
    again = admin(office.db, "kiosk", "add", "DEMO-01")
    assert again.returncode == 2 and "exists already: nothing changed" in again.stderr
    assert "kiosk rotate DEMO-01" in again.stderr
    assert reference(office, old) == 200  # the kiosk was not cut off

    new = office.admin("kiosk", "rotate", "DEMO-01")
    assert len(new.split()) == 1 and new != old
    assert reference(office, old) == 401 and reference(office, new) == 200

    revoked = office.admin("kiosk", "revoke", "DEMO-01")
    assert "revoked" in revoked and reference(office, new) == 401
    twice = admin(office.db, "kiosk", "revoke", "DEMO-01")
    assert twice.returncode == 2 and "revoked already" in twice.stderr
    unknown = admin(office.db, "kiosk", "rotate", "NOPE-01")
    assert unknown.returncode == 2 and "no kiosk NOPE-01" in unknown.stderr
    assert one(office.db, kiosks, kiosks.c.kiosk_id == "NOPE-01") is None

    # the token of another kiosk is taken whatever failed before it from the same address
    for _ in range(12):
        reference(office, "not-a-token")
    assert reference(office, office.tokens["OTHER-01"]) == 200

    back = office.admin("kiosk", "rotate", "DEMO-01")  # a revoked kiosk taken back
    assert reference(office, back) == 200
    row = one(office.db, kiosks, kiosks.c.kiosk_id == "DEMO-01")
    assert row.revoked is None and row.token_since and row.registered


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_the_kiosk_list_shows_contact_version_and_token_age(office: HeadOffice) -> None:
    client = office.client()
    client.session.headers["X-Kiosk-Version"] = "1.4.2"
    client.session.headers["X-Kiosk-Journal-Schema"] = "0007"
    assert client.upload([]) == 0
    office.admin("kiosk", "revoke", "OTHER-01")
    office.admin("kiosk", "add", "NEW-01")
    listing = {line.split()[0]: line for line in office.admin("kiosk", "list").splitlines()}
    assert listing["DEMO-01"].split()[1:2] == ["active"]
    assert "1.4.2" in listing["DEMO-01"] and "0007" in listing["DEMO-01"]
    assert listing["OTHER-01"].split()[1] == "revoked"
    assert listing["NEW-01"].split()[1] == "never" and " 0 h " in listing["NEW-01"]
    # what a kiosk says is stored only as version text
    client.session.headers["X-Kiosk-Version"] = "<script>"
    assert client.upload([]) == 0
    assert one(office.db, kiosks, kiosks.c.kiosk_id == "DEMO-01").version == "1.4.2"


# ---------------------------------------------------------------- staff


def login(office: HeadOffice, name: str, password: str = PASSWORD) -> requests.Session:
    s = requests.Session()
    got = s.post(f"{office.url}/console/login", data={"name": name, "password": password},
                 timeout=30)  # fmt: skip
    assert got.status_code == 200 and got.url.endswith("/console/"), got.status_code
    return s


def logged_in(s: requests.Session, office: HeadOffice) -> bool:
    got = s.get(f"{office.url}/console/", timeout=30, allow_redirects=False)
    return got.status_code == 200


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_staff_are_added_once_and_offboarded(office: HeadOffice) -> None:
    done = admin(office.db, "staff", "add", "anna", "--role", "operator", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    again = admin(office.db, "staff", "add", "anna", "--role", "admin", stdin="another one 123\n")
    assert again.returncode == 2 and "exists already: nothing changed" in again.stderr
    assert one(office.db, staff, staff.c.name == "anna").role == "operator"
    session = login(office, "anna")  # the first password still holds
    short = admin(office.db, "staff", "reset-password", "anna", stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    assert logged_in(session, office)

    assert office.admin("staff", "set-role", "anna", "auditor") == "anna: auditor"
    assert one(office.db, staff, staff.c.name == "anna").role == "auditor"
    listing = office.admin("staff", "list")
    assert [ln.split()[:4] for ln in listing.splitlines()[1:]] == [
        ["anna", "auditor", "de", "active"]]

    reset = admin(office.db, "staff", "reset-password", "anna", stdin="a new one 2026\n")
    assert reset.returncode == 0 and "1 sessions ended" in reset.stdout
    assert not logged_in(session, office)  # the session ended at once
    session = login(office, "anna", "a new one 2026")

    assert "1 sessions ended" in office.admin("staff", "disable", "anna")
    assert not logged_in(session, office)
    refused = requests.post(f"{office.url}/console/login", timeout=30,
                            data={"name": "anna", "password": "a new one 2026"})  # fmt: skip
    assert refused.status_code == 401  # a disabled person cannot log in
    office.admin("staff", "enable", "anna")
    login(office, "anna", "a new one 2026")
    office.admin("staff", "remove", "anna")
    assert one(office.db, staff, staff.c.name == "anna") is None
    gone = admin(office.db, "staff", "disable", "anna")
    assert gone.returncode == 2 and "no staff member 'anna'" in gone.stderr


# ---------------------------------------------------------------- the whole audit


def subcommands() -> dict[str, list[str]]:
    """Every command of `sync.admin` and, for kiosk and staff, their actions."""
    from sync.admin import cli

    found: dict[str, list[str]] = {}
    parser = argparse.ArgumentParser()
    original = argparse.ArgumentParser.parse_args

    def catch(self: argparse.ArgumentParser, *a: Any, **k: Any) -> Any:
        nonlocal parser
        parser = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = catch  # type: ignore[method-assign]
    try:
        with contextlib.suppress(SystemExit):
            cli.main(["count", "X"])
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        inner = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        found[name] = list(inner[0].choices) if inner else []
    return found


#: the commands that change nothing (no audit row expected; `rollout status` is the read-only
#: form of `rollout`, which the walk runs)
READ_ONLY = {"serve", "report", "count", "verify", "openapi", "upgrade", "kiosk list",
             "staff list", "notify", "release keygen", "release sign",
             "release verify"}  # fmt: skip


def test_every_command_that_changes_something_writes_its_audit_row(tmp_path: Path) -> None:
    """Walk every command of the admin tool: each that changes something (or exports) leaves
    an audit row saying who, through the CLI, on what, and before and after."""
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    keys = tmp_path / "keys.csv"
    keys.write_text("serial,status,reason,contract_account\nK-9,active,,4711\n", "utf-8")
    debts = tmp_path / "debts.csv"
    debts.write_text("\ufeffcontract_account,amount,currency\n4711,3.00,EUR\n", "utf-8")
    credits_file = tmp_path / "credits.csv"
    credits_file.write_text("key,amount,currency,kiosk\nK-9,2.00,EUR,\n", "utf-8")
    staff_pw = PASSWORD + "\n"
    from sync.wire import signing

    public = signing.make_key(tmp_path / "release.key")
    deb = tmp_path / "prepaid-kiosk_9.0.0_amd64.deb"
    deb.write_bytes(b"a release")
    sig = tmp_path / "prepaid-kiosk_9.0.0_amd64.deb.sig"
    sig.write_text(signing.sign(deb, "9.0.0", tmp_path / "release.key").text(), "utf-8")
    # (command, argv, stdin, target the audit row names)
    walk: list[tuple[str, list[str], str, str]] = [
        ("kiosk add", ["kiosk", "add", "K-01"], "", "kiosk K-01"),
        ("kiosk rotate", ["kiosk", "rotate", "K-01"], "", "kiosk K-01"),
        ("release trust", ["release", "trust", public], "", "release key"),
        ("release add", ["release", "add", str(deb), "--signature", str(sig)], "",
         "release 9.0.0"),
        ("rollout", ["rollout", "9.0.0", "--canary", "K-01"], "", "rollout 9.0.0"),
        ("kiosk revoke", ["kiosk", "revoke", "K-01"], "", "kiosk K-01"),
        ("staff add", ["staff", "add", "bob", "--role", "admin"], staff_pw, "staff bob"),
        ("staff set-role", ["staff", "set-role", "bob", "operator"], "", "staff bob"),
        ("staff reset-password", ["staff", "reset-password", "bob"], staff_pw, "staff bob"),
        ("staff disable", ["staff", "disable", "bob"], "", "staff bob"),
        ("staff enable", ["staff", "enable", "bob"], "", "staff bob"),
        ("staff remove", ["staff", "remove", "bob"], "", "staff bob"),
        ("token", ["token", "billing", "--role", "billing"], "", "token billing"),
        ("import", ["import", "keys", str(keys)], "", "import keys"),
        ("key", ["key", "K-9", "--status", "blocked", "--reason", "lost"], "", "key K-9"),
        ("debt", ["debt", "4711", "12.50"], "", "account 4711"),
        ("credit", ["credit", "K-9", "5"], "", "credit "),
        ("setting", ["setting", "max_topup", "250.00"], "", "setting max_topup *"),
        ("restored", ["restored"], "", "reference"),
        ("export", ["export", "payments", "--since", "2026-01-01"], "", "export payments"),
    ]
    commands = subcommands()
    every = {f"{c} {a}" if a else c for c, acts in commands.items() for a in (acts or [""])}
    assert every - READ_ONLY == {w[0] for w in walk}  # a new command needs its audit here
    for name, argv, stdin, target in walk:
        before = len(audit_rows(db)) if Path(tmp_path / "ho.sqlite").exists() else 0
        done = admin(db, *argv, stdin=stdin)
        assert done.returncode == 0, (name, done.stderr)
        rows = audit_rows(db)[before:]
        assert rows, f"{name}: no audit row"
        last = rows[-1]
        assert last.via == "cli" and last.who and last.target.startswith(target), (name, last)
    # before and after as they were: the debt's, in minor units with the currency
    debt = [r for r in audit_rows(db) if r.action == "debt"][-1]
    assert json.loads(debt.after) == {"contract_account": "4711", "amount": 1250,
                                      "currency": "EUR"}  # fmt: skip
    assert debt.before is None  # no debt of 4711 before (the keys file has no debts)
    key = [r for r in audit_rows(db) if r.action == "key"][-1]
    assert json.loads(key.before)["status"] == "active"
    assert json.loads(key.after)["status"] == "blocked"
    # the imports, and a refused one, too
    assert admin(db, "import", "debts", str(debts)).returncode == 0  # a BOM before the header
    bad = tmp_path / "bad.csv"
    bad.write_text("contract_account,amount,currency\n4711,12,EUR\n", "utf-8")
    assert admin(db, "import", "debts", str(bad)).returncode == 2
    assert [r.action for r in audit_rows(db)][-2:] == ["import", "import_refused"]
    # no password and no token in the audit
    everything = " ".join(f"{r.detail} {r.before} {r.after}" for r in audit_rows(db))
    assert PASSWORD not in everything and "argon2" not in everything


# ---------------------------------------------------------------- amounts, days, files


def test_amounts_are_decimal_text_and_a_bad_one_changes_nothing(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    assert admin(db, "debt", "4711", "50").returncode == 0  # fifty euros, not 0.50
    assert one(db, ref_debts, ref_debts.c.contract_account == "4711").amount == 5000
    for bad in ("12,50", "1.234,00", "-3", "12.505", "12 EUR"):
        res = admin(db, "debt", "4711", bad)
        assert res.returncode == 2 and "write it as 12.50" in res.stderr, bad
        assert one(db, ref_debts, ref_debts.c.contract_account == "4711").amount == 5000
    assert admin(db, "setting", "fee_net", "0.50").returncode == 0
    assert one(db, settings, settings.c.name == "fee_net").value == 50
    assert admin(db, "setting", "fee_vat_bp", "1900").returncode == 0
    assert one(db, settings, settings.c.name == "fee_vat_bp").value == 1900


def _payment(kiosk: str, seq: int, prev: str, when: datetime, txid: str) -> dict[str, Any]:
    ts = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    data = json.dumps({"medium": "note"})
    content = (seq, ts, "cash_in", txid, "K-1", 1000, "EUR", data)
    return {"kiosk_id": kiosk, "seq": seq, "ts": ts, "kind": "cash_in", "txid": txid,
            "key": "K-1", "amount": 1000, "currency": "EUR", "data": data, "prev_hash": prev,
            "hash": entry_hash(prev, *content)}  # fmt: skip


def test_export_since_a_day_runs_to_today(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    from sync.store.tables import entries

    now = datetime.now(UTC)
    engine = open_db(db)
    with engine.begin() as conn:
        first = _payment("K-01", 1, GENESIS, now - timedelta(days=3), "K-01-000001-1")
        second = _payment("K-01", 2, first["hash"], now, "K-01-000001-2")
        conn.execute(entries.insert(), [first, second])
    engine.dispose()
    since = (now - timedelta(days=3)).astimezone().date().isoformat()
    out = admin(db, "export", "payments", "--since", since, "--tz", "UTC").stdout
    assert "K-01-000001-1" in out and "K-01-000001-2" in out  # to today
    only = admin(db, "export", "payments", "--since", since, "--until", since, "--tz", "UTC")
    assert "K-01-000001-1" in only.stdout and "K-01-000001-2" not in only.stdout


# ---------------------------------------------------------------- the server's log


def test_the_server_logs_its_start_each_request_and_errors_without_tokens(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    token = admin(db, "kiosk", "add", "LOG-01").stdout.strip()
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sync.admin", "--db", db, "serve", "--port", str(port),
             "--log-level", "info"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while True:
            try:
                if requests.get(url + "/v1/health", timeout=0.5).ok:
                    break
            except requests.ConnectionError:
                assert datetime.now(UTC) < deadline and proc.poll() is None, log.read_text()
                threading.Event().wait(0.05)  # starting: ask again shortly
        auth = {"Authorization": f"Bearer {token}"}
        assert requests.get(url + "/v1/reference", headers=auth, timeout=10).status_code == 200
        assert requests.post(url + "/console/login", data={"name": "x", "password": "y"},
                             timeout=30).status_code == 401  # fmt: skip
        # an error: the alarms table gone under the running server, then a refused upload
        engine = open_db(db)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE alarms"))
        engine.dispose()
        bad = {"kiosk_id": "LOG-01", "entries": [_payment("LOG-01", 1, "f" * 64, datetime.now(
            UTC), "LOG-01-000001-1")]}  # fmt: skip
        bad["entries"][0].pop("kiosk_id")
        failed = requests.post(url + "/v1/entries", json=bad, headers=auth, timeout=10)
        assert failed.status_code == 500
    finally:
        proc.terminate()
        proc.wait(10)
    said = log.read_text("utf-8")
    from sync.wire.release import version

    start = [ln for ln in said.splitlines() if "starting" in ln][0]
    assert version() in start and f"127.0.0.1:{port}" in start and "ho.sqlite" in start
    assert '"GET /v1/reference HTTP/1.1" 200' in said
    assert '"POST /console/login HTTP/1.1" 401' in said
    assert '"POST /v1/entries HTTP/1.1" 500' in said
    assert "Traceback" in said and "alarms" in said  # the error with its traceback
    assert token not in said  # tokens travel in headers, never logged


def test_the_database_url_is_logged_without_its_password() -> None:
    assert shown("postgresql+psycopg://ho:s3cret@db.example:5432/ho") == \
        "postgresql+psycopg://ho:***@db.example:5432/ho"  # fmt: skip


@pytest.mark.parametrize("office_db", ["sqlite"], indirect=True)
def test_the_billing_apis_exports_are_audited_with_the_systems_name(office: HeadOffice) -> None:
    token = office.admin("token", "billing", "--role", "billing")
    got = requests.get(office.url + "/v1/billing/payments?since=2026-01-01&until=2026-01-31",
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
    assert got.status_code == 200
    last = audit_rows(office.db)[-1]
    assert (last.who, last.action, last.via, last.target) == (
        "billing", "export", "api", "export payments")
    assert "2026-01-01..2026-01-31" in last.detail
    # a refused request changes nothing and exports nothing
    before = len(audit_rows(office.db))
    bad = requests.get(office.url + "/v1/billing/payments?since=2026-01-31&until=2026-01-01",
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
    assert bad.status_code == 422 and len(audit_rows(office.db)) == before
