"""Upload a backlog of 100,000 journal entries to the reference head office on this machine.

The server runs as its own process on 127.0.0.1, once on an SQLite file and once on a
throwaway PostgreSQL cluster (Debian's server, fsync on); the kiosk
side is the real Syncer and client with 5,000-entry batches. Prints the time and the entries
per second ingested (target: a 100,000-entry backlog in under 60 s).

    .venv/bin/python tests/bench/backlog.py [--entries N] [--db sqlite|postgresql|both]

(No script in tests/bench/ is named after a package of the project: the script's folder comes
first on the import path and would hide it.)
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from kiosk.adapters.head_office import Syncer
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from sync.wire.client import SyncClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.pgcluster import PgCluster  # noqa: E402


def wait_healthy(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(url + "/v1/health", timeout=0.5).ok:
                return
        except requests.ConnectionError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("head office did not start")
        threading.Event().wait(0.05)  # the server process is starting: ask again shortly


def run(db: str, entries: int, batch: int, tmp: Path) -> tuple[float, float, int]:
    """(seconds to build the journal, seconds to upload it, entries head office holds)."""
    admin = [sys.executable, "-m", "sync.admin", "--db", db]
    token = subprocess.run(
        [*admin, "kiosk", "add", "BENCH-01"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [*admin, "serve", "--port", str(port)], cwd=ROOT, env=dict(os.environ)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        journal = Journal(tmp / "journal.sqlite", "BENCH-01", synchronous="NORMAL")
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        for start in range(0, entries, 1000):
            n = min(1000, entries - start)
            journal.append(
                [
                    Record(
                        Kind.CASH_IN,
                        f"BENCH-01-T{(start + i) // 5}",
                        "K1",
                        Money(200, "EUR"),
                        {"medium": "coin", "channel": 5},
                    )
                    for i in range(n)
                ],
                now,
            )
        made = time.perf_counter() - t0
        sync = Syncer(journal, SyncClient(url, token, "BENCH-01", timeout=(3, 120)), batch=batch)
        t0 = time.perf_counter()
        sync.upload_round(now)
        took = time.perf_counter() - t0
        stored = subprocess.run(
            [*admin, "count", "BENCH-01"], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.strip()
    finally:
        server.terminate()
        server.wait(10)
    return made, took, int(stored)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument(
        "--db",
        choices=["sqlite", "postgresql", "both"],
        default="both",
        help="head-office database: an SQLite file, a throwaway PostgreSQL cluster (fsync on)",
    )
    args = ap.parse_args()
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    print(f"backlog of {args.entries:,} entries, {args.batch:,} per batch; target under 60 s")
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            cluster = PgCluster(durable=True).start() if backend == "postgresql" else None
            try:
                db = cluster.new_database() if cluster else f"sqlite:///{Path(tmp) / 'ho.sqlite'}"
                made, took, stored = run(db, args.entries, args.batch, Path(tmp))
            finally:
                if cluster:
                    cluster.stop()
        ok = took < 60 and stored == args.entries
        print(
            f"  {backend:<10} uploaded in {took:5.1f} s: {args.entries / took:7,.0f} entries/s "
            f"ingested; head office holds {stored:,}; target {'met' if ok else 'MISSED'} "
            f"(journal built in {made:.1f} s)"
        )


if __name__ == "__main__":
    main()
