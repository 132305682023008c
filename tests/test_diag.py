"""Technician diagnostics: PIN and lockout, audit trail, cash box, test money, export."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from kiosk.service.diag import (
    ExportRefused,
    PinGuard,
    PinRefused,
    cash_box,
    empty_cash_box,
    export_journal,
    hash_pin,
    pin_matches,
    take_test_money,
    verify_export,
)
from tests.conftest import CONFIG, ROOT, SATURDAY_MORNING, make_site

T0 = SATURDAY_MORNING


def E(minor: int) -> Money:
    return Money(minor, "EUR")


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.sqlite", "DEMO-01")


def audits(j: Journal) -> list[str]:
    return [str(e.data["action"]) for e in j.entries_of_kind(Kind.AUDIT)]


def test_a_pin_hash_is_salted_and_checks_only_its_pin() -> None:
    a, b = hash_pin("4711"), hash_pin("4711")
    assert a != b and a.startswith("scrypt$16384$8$1$")  # salted: same PIN, other hash
    assert pin_matches("4711", a) and pin_matches("4711", b)
    assert (
        not pin_matches("4712", a)
        and not pin_matches("4711", "md5$x")
        and not pin_matches("4711", "")
    )
    with pytest.raises(ValueError, match="4 to 12 digits"):
        hash_pin("12a4")


def test_three_wrong_pins_lock_for_five_minutes_and_every_try_is_audited(journal: Journal) -> None:
    guard = PinGuard(journal, hash_pin("4711"))
    for i in range(2):
        with pytest.raises(PinRefused, match="wrong PIN") as err:
            guard.enter("0000", "T-7", T0 + timedelta(seconds=i))
        assert err.value.until is None
    with pytest.raises(PinRefused, match="locked for 5 minutes") as err:
        guard.enter("0000", "T-7", T0 + timedelta(seconds=2))
    assert err.value.until == T0 + timedelta(seconds=2, minutes=5)
    with pytest.raises(PinRefused, match="locked"):  # even the right PIN, while locked
        guard.enter("4711", "T-7", T0 + timedelta(minutes=4))
    # a restart does not reset it: the count is in the journal
    again = PinGuard(Journal(journal.path, "DEMO-01"), hash_pin("4711"))
    with pytest.raises(PinRefused, match="locked"):
        again.enter("4711", "T-7", T0 + timedelta(minutes=5, seconds=1))
    again.enter("4711", "T-7", T0 + timedelta(minutes=5, seconds=3))  # the lock has expired
    assert audits(journal) == [
        "pin_failed", "pin_failed", "pin_failed", "locked", "refused_locked", "refused_locked",
        "entered",
    ]  # fmt: skip
    assert all(e.data["who"] == "T-7" for e in journal.entries_of_kind(Kind.AUDIT))


def test_after_a_good_entry_the_failures_count_again_from_zero(journal: Journal) -> None:
    guard = PinGuard(journal, hash_pin("4711"))
    for i in range(2):
        with pytest.raises(PinRefused):
            guard.enter("1111", "T-7", T0 + timedelta(seconds=i))
    guard.enter("4711", "T-7", T0 + timedelta(seconds=3))
    for i in range(2):
        with pytest.raises(PinRefused, match="^wrong PIN$"):
            guard.enter("1111", "T-7", T0 + timedelta(seconds=10 + i))


def test_each_lockout_in_a_row_lasts_twice_as_long_up_to_a_day(journal: Journal) -> None:
    """Before: a fixed five minutes (a four-digit PIN fell in under twelve days)."""
    guard = PinGuard(journal, hash_pin("4711"))
    now = T0
    for minutes in (5, 10, 20, 40, 80, 160, 320, 640, 1280, 1440, 1440):
        for _ in range(3):
            now += timedelta(seconds=1)
            with pytest.raises(PinRefused) as err:
                guard.enter("0000", "T-7", now)
        assert err.value.until == now + timedelta(minutes=minutes), minutes
        assert f"locked for {minutes} minutes" in str(err.value)
        now = err.value.until
    guard.enter("4711", "T-7", now + timedelta(seconds=1))  # the right PIN: back to the start
    for _ in range(3):
        with pytest.raises(PinRefused) as err:
            guard.enter("0000", "T-7", now + timedelta(seconds=2))
    assert err.value.until == now + timedelta(seconds=2, minutes=5)


def test_pins_tried_at_the_same_moment_from_many_places_lock_after_three(
    journal: Journal,
) -> None:
    """Before: sixteen parallel `kiosk diag` runs checked fifteen wrong PINs before the lock
    held. Now the check, its record and the lock are one transaction under the journal's write
    lock: sixteen tries at once (each on a connection of its own) check three PINs."""
    import threading

    stored = hash_pin("4711")
    start = threading.Barrier(16)
    said: list[str] = []

    def try_one(n: int) -> None:
        guard = PinGuard(Journal(journal.path, "DEMO-01"), stored)
        start.wait()
        try:
            guard.enter(f"{1000 + n}", f"diag-{n}", T0)
        except PinRefused as refused:
            said.append(str(refused))

    threads = [threading.Thread(target=try_one, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(said) == 16
    assert audits(journal).count("pin_failed") == 3
    assert sum(s.startswith("wrong PIN") for s in said) == 3
    assert sum(s.startswith("diagnostics are locked") for s in said) == 13


def test_test_money_is_in_the_box_but_never_credited(journal: Journal) -> None:
    journal.append([Record(Kind.CASH_IN, "T1", "K1", E(200), {"medium": "coin"})], T0)
    take_test_money(journal, E(1000), "note", "T-7", T0)
    box = cash_box(journal, "EUR")
    assert box.total == E(1200) and box.test_money == 1000
    assert box.counts == {("coin", 200): 1, ("note", 1000): 1}
    # nothing about test money reaches a key or a transaction
    tests = journal.entries_of_kind(Kind.TEST_CASH)
    assert len(tests) == 1 and tests[0].txid is None and tests[0].key is None
    assert journal.pending_credits("K1") == []


def test_the_emptying_report_equals_the_cash_journaled_since_the_last_emptying(
    journal: Journal,
) -> None:
    site = make_site()
    for v, medium in ((200, "coin"), (200, "coin"), (50, "coin"), (2000, "note")):
        journal.append([Record(Kind.CASH_IN, "T1", "K1", E(v), {"medium": medium})], T0)
    journal.append([Record(Kind.CASH_UNATTRIBUTED, None, None, E(100), {"medium": "coin"})], T0)
    report = empty_cash_box(journal, site, "T-7", T0 + timedelta(hours=1))
    assert report[-1].split() == ["total", "25.50", "EUR"]
    assert [line.split() for line in report[3:6]] == [
        ["coin", "0.50", "EUR", "x", "1", "=", "0.50", "EUR"],
        ["coin", "1.00", "EUR", "x", "1", "=", "1.00", "EUR"],  # the unattributed coin counts
        ["coin", "2.00", "EUR", "x", "2", "=", "4.00", "EUR"],
    ]
    (emptied,) = journal.entries_of_kind(Kind.CASHBOX_EMPTIED)
    assert emptied.amount == E(2550) and emptied.data["counts"]["coin:200"] == 2
    assert "cashbox_emptied" in audits(journal)
    # the counters restart
    assert cash_box(journal, "EUR").total == E(0)
    journal.append([Record(Kind.CASH_IN, "T2", "K1", E(500), {"medium": "note"})], T0)
    second = empty_cash_box(journal, site, "T-7", T0 + timedelta(hours=2))
    assert second[-1].split() == ["total", "5.00", "EUR"] and "since 21.11.2026 11:00" in second


def test_the_export_re_verifies_and_a_changed_export_does_not(
    journal: Journal, tmp_path: Path
) -> None:
    for i in range(5):
        journal.append([Record(Kind.CASH_IN, f"T{i}", "K1", E(100), {"medium": "coin"})], T0)
    jpath, cpath = export_journal(journal, tmp_path / "usb", "T-7", T0)
    assert verify_export(jpath) == 5
    assert cpath.read_text("utf-8").splitlines()[0].startswith("seq,ts,kind")
    assert len(cpath.read_text("utf-8").splitlines()) == 1 + 5
    assert json.loads(jpath.read_text("utf-8"))["verified_entries"] == 5
    assert audits(journal) == ["journal_exported"]
    data = json.loads(jpath.read_text("utf-8"))
    data["entries"][2]["amount"] = 10_000  # someone edits the copy
    jpath.write_text(json.dumps(data), "utf-8")
    with pytest.raises(ValueError, match="entry 3: content does not match"):
        verify_export(jpath)


def test_an_export_after_housekeeping_verifies_from_its_anchor(tmp_path: Path) -> None:
    """The start of the journal is archived: the export names the entry before its first
    (the anchor) and verifies from there; an export whose first entry does not link to the
    anchor it states, or that states none, is refused."""
    from kiosk.ledger.archive import housekeep
    from tests.test_housekeeping import POLICY, make
    from tests.test_housekeeping import T0 as START

    j = make(tmp_path / "data")
    assert housekeep(j, START + timedelta(days=60), POLICY).archived > 0
    base, base_hash = j.base()
    assert base > 0
    jpath, _cpath = export_journal(j, tmp_path / "usb", "T-7", START + timedelta(days=60))
    data = json.loads(jpath.read_text("utf-8"))
    assert data["anchor"] == {"seq": base, "hash": base_hash}
    assert data["entries"][0]["seq"] == base + 1
    live = len(j.raw_entries()) - 1  # (the export's own audit entry came after it)
    assert verify_export(jpath) == len(data["entries"]) == live

    for anchor, says in (
        ({"seq": base, "hash": "0" * 63 + "1"}, f"entry {base + 1}: breaks the chain "
         f"(does not follow the anchor (entry {base}))"),
        ({"seq": base - 1, "hash": base_hash}, f"entry {base + 1}: breaks the chain"),
        ({"seq": 0, "hash": base_hash}, "is not an entry's number and hash"),
        (None, f"entry {base + 1}: breaks the chain"),  # no anchor: from the genesis
    ):  # fmt: skip
        changed = dict(data)
        if anchor is None:
            del changed["anchor"]
        else:
            changed["anchor"] = anchor
        jpath.write_text(json.dumps(changed), "utf-8")
        with pytest.raises(ValueError) as err:
            verify_export(jpath)
        assert says in str(err.value), (anchor, err.value)


@pytest.mark.parametrize("planted", ["json", "csv"])
def test_the_export_never_writes_through_a_link_on_the_stick(
    journal: Journal, tmp_path: Path, planted: str
) -> None:
    """A symbolic link planted on the stick where the export's file goes (to a file of the
    automat's): refused with a clear error; the link's target is untouched and no file or
    half-written part is left beside it."""
    journal.append([Record(Kind.CASH_IN, "T1", "K1", E(100), {"medium": "coin"})], T0)
    usb = tmp_path / "usb"
    usb.mkdir()
    victim = tmp_path / "site-secrets.toml"
    victim.write_text("pin_hash = 'keep me'\n", "utf-8")
    link = usb / f"journal-DEMO-01-{T0:%Y%m%d-%H%M%S}.{planted}"
    link.symlink_to(victim)
    with pytest.raises(ExportRefused, match=f"{link}: is a symbolic link|{link} is a symbolic"):
        export_journal(journal, usb, "T-7", T0)
    assert victim.read_text("utf-8") == "pin_hash = 'keep me'\n"
    assert link.is_symlink() and not [p for p in usb.iterdir() if p.name.endswith(".part")]
    assert "journal_exported" not in audits(journal)
    if planted == "json":  # refused at the first file: nothing else was written
        assert sorted(p.name for p in usb.iterdir()) == [link.name]


def test_the_export_refuses_a_folder_that_is_a_link(journal: Journal, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "usb").symlink_to(elsewhere)
    with pytest.raises(ExportRefused, match="without following links"):
        export_journal(journal, tmp_path / "usb", "T-7", T0)
    assert list(elsewhere.iterdir()) == [] and audits(journal) == []


def diag(
    tmp_path: Path, *args: str, pin: str, secrets: Path | None = None
) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site.toml"
    if not site.exists():  # the demo site with a secrets file
        text = (CONFIG / "demo.toml").read_text("utf-8")
        site.write_text(text + f'\n[secrets]\nfile = "{secrets}"\n', "utf-8")
    return subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "--data-dir", str(tmp_path), "diag", *args,
         "--site", str(site), "--who", "T-7"],
        input=pin + "\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


def test_the_console_path_asks_for_the_pin_and_locks_after_three(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    res = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "diag", "pin-hash"],
        input="4711\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.startswith('[technician]\npin_hash = "scrypt$')
    secrets.write_text(res.stdout, "utf-8")
    j = Journal(tmp_path / "journal-DEMO-01.sqlite", "DEMO-01")
    j.append([Record(Kind.CASH_IN, "T1", "K1", E(200), {"medium": "coin"})], T0)
    j.close()

    ok = diag(tmp_path, "cashbox", pin="4711", secrets=secrets)
    assert ok.returncode == 0, ok.stderr
    assert "coin" in ok.stdout and ok.stdout.strip().splitlines()[-1].split() == [
        "total", "2.00", "EUR",
    ]  # fmt: skip
    for _ in range(2):
        wrong = diag(tmp_path, "cashbox", pin="1234", secrets=secrets)
        assert wrong.returncode == 1 and "wrong PIN" in wrong.stderr and "coin" not in wrong.stdout
    locked = diag(tmp_path, "cashbox", pin="1234", secrets=secrets)
    assert locked.returncode == 1 and "locked for 5 minutes (until" in locked.stderr
    still = diag(tmp_path, "empty", "--confirm", pin="4711", secrets=secrets)
    assert still.returncode == 1 and "locked" in still.stderr  # the right PIN, while locked
    actions = [
        e.data["action"]
        for e in Journal(tmp_path / "journal-DEMO-01.sqlite", "DEMO-01").entries_of_kind(Kind.AUDIT)
    ]
    assert actions == ["entered", "cashbox_viewed", "pin_failed", "pin_failed", "pin_failed",
                       "locked", "refused_locked"]  # fmt: skip


def test_a_bad_pin_hash_in_the_secrets_file_is_named(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[technician]\npin_hash = "4711"\n', "utf-8")
    Journal(tmp_path / "journal-DEMO-01.sqlite", "DEMO-01").close()
    res = diag(tmp_path, "cashbox", pin="4711", secrets=secrets)
    assert res.returncode != 0 and "technician.pin_hash: not an scrypt hash" in res.stderr


def test_the_console_runs_the_device_functions_on_the_simulated_devices(tmp_path: Path) -> None:
    """`kiosk diag devices|selftest|eod|config` with the same functions as the screen; every
    one audited; the configuration names the secrets file but never shows what is in it."""
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[technician]\npin_hash = "{hash_pin("4711")}"\n', "utf-8")
    devices = diag(tmp_path, "devices", pin="4711", secrets=secrets)
    assert devices.returncode == 0, devices.stderr
    for name in ("reader", "coin", "notes", "card", "printer"):
        assert f"{name.upper()}: connected" in devices.stdout
    assert "manufacturer: SIM" in devices.stdout and "firmware: " in devices.stdout
    tests = diag(tmp_path, "selftest", pin="4711", secrets=secrets)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    passed = [line.split(None, 1)[1] for line in tests.stdout.splitlines() if line[:4] == "PASS"]
    assert passed == ["reader: PC/SC readers", "coin: self-check", "notes: self-check",
                      "card: status enquiry and diagnosis", "printer: test page",
                      "head office"]  # fmt: skip
    eod = diag(tmp_path, "eod", pin="4711", secrets=secrets)
    assert eod.returncode == 0 and "end-of-day done, total 0.00 EUR" in eod.stdout, eod.stderr
    conf = diag(tmp_path, "config", pin="4711", secrets=secrets)
    assert f"secrets.file = {secrets} (contents not shown)" in conf.stdout
    assert "scrypt" not in conf.stdout and "kiosk_id = DEMO-01" in conf.stdout
    # every figure as money text, every list as a list (not Python's reprs)
    assert "Money(" not in conf.stdout and ".minor" not in conf.stdout
    assert "frozenset" not in conf.stdout
    assert "coins = 0.10 EUR, 0.20 EUR, 0.50 EUR, 1.00 EUR, 2.00 EUR" in conf.stdout
    assert "key_credit_limit = 500.00 EUR" in conf.stdout and "languages = de, en" in conf.stdout
    assert "timeouts.key_missing = 90" in conf.stdout  # a number of seconds, not a secret
    unknown = diag(tmp_path, "reprint", "DEMO-01-X", pin="4711", secrets=secrets)
    assert unknown.returncode == 2 and "no closed transaction 'DEMO-01-X'" in unknown.stderr
    j = Journal(tmp_path / "journal-DEMO-01.sqlite", "DEMO-01")
    tx = "DEMO-01-20261121-090000-AB12"
    j.append([Record(Kind.TX_OPENED, tx, "K1", None, {"method": "cash", "lang": "en"}),
              Record(Kind.CASH_IN, tx, "K1", E(500), {"medium": "note"}),
              Record(Kind.SPLIT, tx, "K1", E(500), {"paid": 500, "fee": 0, "debt": 0,
                                                    "credit": 500}),
              Record(Kind.KEY_WRITTEN, tx, "K1", E(500), {"credit_after": 900}),
              Record(Kind.TX_CLOSED, tx, "K1", None, {"outcome": "completed", "lang": "en"})],
             T0)  # fmt: skip
    j.close()
    again = diag(tmp_path, "reprint", tx, pin="4711", secrets=secrets)
    assert again.returncode == 0 and f"receipt {tx}: printed" in again.stdout, again.stderr
    assert "COPY" in again.stdout and "New credit on your key" in again.stdout  # the session's
    wrong = diag(tmp_path, "selftest", pin="1111", secrets=secrets)
    assert wrong.returncode == 1 and "PASS" not in wrong.stdout
    j = Journal(tmp_path / "journal-DEMO-01.sqlite", "DEMO-01")
    acts = audits(j)
    for action in ("device_overview", "self_tests", "end_of_day", "config_viewed", "pin_failed",
                   "receipt_reprinted"):  # fmt: skip
        assert action in acts
    assert j.verify() == j.last_seq()


def test_printer_probe_for_installers(tmp_path: Path) -> None:
    def probe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kiosk.cli", "devices", "probe", "printer", *args],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip

    ok = probe("--port", "sim", "--json", "--test-page")
    assert ok.returncode == 0, ok.stderr
    info = json.loads(ok.stdout)
    assert (info["status"], info["printable"], info["test_page"]) == ("ok", True, "printed")
    bad = probe("--port", "lpt1")
    assert bad.returncode == 2 and "a device path, tcp://" in bad.stderr and bad.stdout == ""
    missing = probe()
    assert missing.returncode == 2 and "--port is required" in missing.stderr


def test_end_of_day_totals_are_parsed_and_bad_ones_refused() -> None:
    from drivers.errors import FrameError
    from drivers.zvt.client import Result, Verdict
    from drivers.zvt.messages import DayTotals, StatusInformation
    from kiosk.adapters.card import EndOfDay

    totals = DayTotals(12, 19, (("girocard", 5, 12500), ("Visa", 2, 4000)))
    raw = totals.encode()
    assert len(raw) == 53 and DayTotals.parse(raw).groups[4] == ("Visa", 2, 4000)
    with pytest.raises(FrameError, match="BMP 60 has 52 bytes"):
        DayTotals.parse(raw[:-1])
    status = StatusInformation(result_code=0, amount=16500, receipt_number=20, totals=totals)
    eod = EndOfDay.of(Result(Verdict.APPROVED, 0, "", status, {"r": ["Kassenschnitt"]}), "EUR")
    assert eod.total == E(16500) and eod.receipts == (12, 19)
    assert eod.groups == (("girocard", 5, E(12500)), ("Visa", 2, E(4000)))
    assert eod.summary()[2:] == [
        "girocard: 5 payment(s), 125.00 EUR",
        "Visa: 2 payment(s), 40.00 EUR",
    ]
    failed = EndOfDay.of(Result(Verdict.ERROR, None, "no answer (T3)"), "EUR")
    assert not failed.ok and failed.summary() == ["end-of-day failed: no answer (T3)"]
