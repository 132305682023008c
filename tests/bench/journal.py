"""Durable journal appends against bare SQLAlchemy Core single-row commits, in one run.

Both on SQLite with WAL and synchronous=FULL, one commit per row, alternating rounds so that
noise on this shared machine hits both alike. Prints rates, p50/p99 latency and the ratio
(target at least 0.85: an append is one INSERT; the head, the cash box's count and the
device counters follow in SQLite's triggers). `--keyed`: the journal's hashes keyed with a chain
secret (HMAC-SHA256), as a registered kiosk's are.

    .venv/bin/python tests/bench/journal.py [--rows N] [--rounds R] [--keyed]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal, _sqlite_engine

#: #23: an append (hash chain, head, cash box, counters) at 0.85 of a bare commit or better
TARGET = 0.85


def bench_journal(path: Path, rows: int, secret: bytes | None = None) -> list[float]:
    j = Journal(path, "BENCH-01", chain_secret=secret)
    now = datetime.now(UTC)
    lat = []
    for i in range(rows):
        rec = Record(
            Kind.CASH_IN,
            f"BENCH-01-T{i // 5}",
            "K1",
            Money(200, "EUR"),
            {"medium": "coin", "channel": 5},
        )
        t0 = time.perf_counter()
        j.append([rec], now)
        lat.append(time.perf_counter() - t0)
    j.close()
    return lat


def bench_bare(path: Path, rows: int) -> list[float]:
    engine = _sqlite_engine(path)
    md = MetaData()
    plain = Table(
        "plain",
        md,
        Column("id", Integer, primary_key=True),
        Column("kind", String(32)),
        Column("txid", String(64)),
        Column("amount", Integer),
    )
    md.create_all(engine)
    lat = []
    for i in range(rows):
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(insert(plain).values(kind="cash_in", txid=f"T{i // 5}", amount=200))
        lat.append(time.perf_counter() - t0)
    engine.dispose()
    return lat


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keyed", action="store_true", help="hashes keyed with a chain secret")
    args = ap.parse_args()
    secret = os.urandom(32) if args.keyed else None
    results: dict[str, tuple[list[float], list[float]]] = {"journal": ([], []), "bare": ([], [])}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in ("journal", "bare"):
                path = Path(tmp) / f"{name}-{r}.sqlite"
                lat = (bench_journal(path, args.rows, secret) if name == "journal"
                       else bench_bare(path, args.rows))  # fmt: skip
                rates, lats = results[name]
                rates.append(len(lat) / sum(lat))
                lats.extend(lat)
    print(
        f"SQLite WAL, synchronous=FULL, one commit per row, {args.rows} rows x {args.rounds} rounds"
    )
    for name, label in (
        ("journal", f"journal append ({'keyed' if args.keyed else 'hash'} chain + head)"),
        ("bare", "bare SQLAlchemy Core insert"),
    ):
        rates, lats = results[name]
        print(
            f"  {label:<36} {statistics.median(rates):8.0f} /s (median of rounds)   "
            f"p50 {pct(lats, 50) * 1000:6.3f} ms   p99 {pct(lats, 99) * 1000:6.3f} ms"
        )
    ratio = statistics.median(results["journal"][0]) / statistics.median(results["bare"][0])
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"  ratio journal/bare: {ratio:.2f} (target at least {TARGET:.2f}: {verdict})")


if __name__ == "__main__":
    main()
