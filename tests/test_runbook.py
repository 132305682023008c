"""The operator's runbook (sync/README.md) as a test: its backup and restore commands, run as
written against PostgreSQL, and the kiosks see the truth afterwards; its TLS drop-in verifies
and keeps the unit hardened."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kiosk.domain.events import KeyStatus, Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from sync.store.tables import entries, open_db
from tests.conftest import ROOT, HeadOffice
from tests.pgcluster import PgCluster
from tests.test_fleet_money import _one_round as one_round

RUNBOOK = ROOT / "sync" / "README.md"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def block(name: str) -> str:
    """The code block after `<!-- runbook: NAME -->` in the runbook."""
    text = RUNBOOK.read_text("utf-8")
    m = re.search(rf"<!-- runbook: {name} -->\n```\w*\n(.*?)```", text, re.S)
    assert m is not None, f"no runbook block {name}"
    return m.group(1)


def shell(script: str, env: dict[str, str]) -> None:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"


def stored(db: str) -> int:
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(entries)).scalar() or 0)
    finally:
        engine.dispose()


def top_up(j: Journal, n: int, minute: int) -> None:
    tx = f"DEMO-01-261201-{n}"
    j.append([Record(Kind.TX_OPENED, tx, "K2", None, {"method": "cash", "key_written": 0}),
              Record(Kind.CASH_IN, tx, "K2", Money(1000, "EUR"), {"medium": "note"})],
             T0 + timedelta(minutes=minute))  # fmt: skip


def test_the_runbooks_backup_and_restore_leave_the_kiosks_seeing_the_truth(
    postgres: PgCluster, tmp_path: Path
) -> None:
    db = postgres.new_database()
    ho = HeadOffice("", db, {})
    token = ho.admin("kiosk", "add", "DEMO-01")
    ho.admin("key", "K1", "--status", "active", "--account", "4711")
    ho.admin("key", "K2", "--status", "active", "--account", "4712")
    j = Journal(tmp_path / "journal.sqlite", "DEMO-01")
    top_up(j, 1, 0)
    one_round(db, token, j)
    before_backup = stored(db)
    assert before_backup == len(j.raw_entries())

    backups = tmp_path / "backups"
    backups.mkdir()
    libpq = db.replace("postgresql+psycopg://", "postgresql://")
    env = dict(os.environ, DB=libpq, PATH=f"{postgres.bindir}:{os.environ['PATH']}")
    shell(block("backup").replace("/var/backups/headoffice", str(backups)), env)
    [dump] = list(backups.glob("*.dump"))

    # the day goes on: a key blocked, a top-up delivered
    ho.admin("key", "K1", "--status", "blocked", "--reason", "stolen", "--account", "4711")
    top_up(j, 2, 5)
    one_round(db, token, j)
    assert j.account_for("K1", "4711", "EUR").status == KeyStatus.BLOCKED
    assert stored(db) > before_backup

    # the database lost; the runbook's restore, as written (the services are this test's)
    admin = f"{sys.executable} -m sync.admin --db {db}"
    script = "\n".join(line for line in block("restore").splitlines()
                       if not line.startswith("systemctl"))  # fmt: skip
    script = script.replace("ADMIN", admin).replace("/var/backups/headoffice/DAY.dump", str(dump))
    shell(script, env)
    assert stored(db) == before_backup  # as in the backup

    one_round(db, token, j)
    # head office has every entry again: the kiosk sent what the restore lost
    assert stored(db) == len(j.raw_entries())
    assert ho.admin("verify", "DEMO-01").endswith(" ok")
    # the kiosk sees the truth: the restored database's (K1 active, as the backup says)
    assert j.account_for("K1", "4711", "EUR").status == KeyStatus.ACTIVE
    # and the change made again by hand after the restore reaches it
    ho.admin("key", "K1", "--status", "blocked", "--reason", "stolen", "--account", "4711")
    one_round(db, token, j)
    assert j.account_for("K1", "4711", "EUR").status == KeyStatus.BLOCKED
    j.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_the_runbooks_tls_drop_in_verifies_and_keeps_the_unit_hardened(tmp_path: Path) -> None:
    """The unit with the runbook's drop-in lines, as systemd merges them: it verifies, and its
    exposure stays within the hardening bound (a low port is the one right it gains)."""
    from tests.test_systemd import exposure

    unit = (ROOT / "config" / "systemd" / "prepaid-headoffice.service").read_text()
    drop = block("tls-dropin").split("[Service]\n", 1)[1]
    merged = unit.replace("[Service]\n", "[Service]\n" + drop, 1)
    merged = re.sub(r"^(CapabilityBoundingSet|AmbientCapabilities)=\n", "", merged, flags=re.M)
    path = tmp_path / "prepaid-headoffice.service"
    path.write_text(merged.replace("/opt/prepaid-headoffice", str(ROOT)))
    res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr
    score = exposure(path)
    print(f"systemd-analyze security with TLS on 443: {score}")
    assert score <= 4.0
