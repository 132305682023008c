"""Years in the field: what a long journal costs the automat (#18).

A journal of `--days` days at `--per-day` top-ups (each: opened, two cash entries, split,
written, closed, receipt; a technician empties the box every week), made through the journal's
own append in day-sized commits, against the same measures on a one-day journal:

  file size; opening the journal (migration check included); the start-up reconciliation; a
  technician's PIN check (scrypt included); the cash-box report; a key's account and pending
  credits; `journal verify` of everything.

Goals: every measure but verify under 1 s, and within a factor 2 of the one-day figure
(`MISSED` beside a figure over its goal). Medians of `--runs`.

    .venv/bin/python tests/bench/years.py [--days 1825] [--per-day 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.domain.site import load_site
from kiosk.ledger.journal import Journal
from kiosk.ledger.reconcile import reconcile
from kiosk.service.diag import PinGuard, cash_box, hash_pin

START = datetime(2021, 11, 29, 8, 0, tzinfo=UTC)
PIN = "4711"


def day_of(day: int, per_day: int) -> list[Record]:
    eur = Money(1000, "EUR")
    out: list[Record] = []
    for n in range(per_day):
        tx, key = f"DEMO-01-{day:05}-{n}", f"K-{n % 500:04}"
        out += [
            Record(Kind.TX_OPENED, tx, key, None, {"method": "cash", "key_written": day}),
            Record(Kind.CASH_IN, tx, key, eur, {"medium": "note", "counter": 1}),
            Record(Kind.CASH_IN, tx, key, eur, {"medium": "note", "counter": 2}),
            Record(Kind.SPLIT, tx, key, eur + eur, {"credit": 2000, "debt": 0, "fee": 0}),
            Record(Kind.KEY_WRITTEN, tx, key, eur + eur, {"credit_after": 2000}),
            Record(Kind.TX_CLOSED, tx, key, None, {"outcome": "completed", "debt": 0}),
            Record(Kind.RECEIPT, tx, None, None, {"printed": True}),
        ]
    if day % 7 == 6:  # the weekly visit: a right PIN, the box emptied
        out += [
            Record(Kind.AUDIT, data={"action": "entered", "who": "T-7"}),
            Record(Kind.CASHBOX_EMPTIED, amount=Money(2000 * per_day * 7, "EUR"),
                   data={"who": "T-7"}),
        ]  # fmt: skip
    return out


def make(path: Path, days: int, per_day: int) -> Journal:
    j = Journal(path, "DEMO-01", synchronous="OFF")
    for day in range(days):
        j.append(day_of(day, per_day), START + timedelta(days=day))
    j.close()
    return Journal(path, "DEMO-01")


def median(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measures(path: Path, runs: int) -> dict[str, float]:
    site = load_site()  # the demo site
    j = Journal(path, "DEMO-01")
    stored = hash_pin(PIN)
    now = START + timedelta(days=10_000)
    out = {
        "open the journal": median(lambda: Journal(path, "DEMO-01").close(), runs),
        "start-up reconciliation": median(lambda: reconcile(j, site, now), runs),
        "PIN check": median(lambda: PinGuard(j, stored).locked_until(now), runs),
        "cash-box report": median(lambda: cash_box(j, "EUR"), runs),
        "account and pending credits": median(lambda: j.account_for("K-0001", "4711", "EUR"), runs),
        "journal verify (all)": median(j.verify, 1),
    }
    j.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=1825)
    ap.add_argument("--per-day", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        made = time.perf_counter()
        long = Path(folder) / "journal-long.sqlite"
        make(long, args.days, args.per_day).close()
        print(f"made {args.days} days x {args.per_day} top-ups in "
              f"{time.perf_counter() - made:.0f} s")  # fmt: skip
        short = Path(folder) / "journal-day.sqlite"
        make(short, 1, args.per_day).close()
        big, small = measures(long, args.runs), measures(short, args.runs)
        print(f"file size: {long.stat().st_size / 1e6:.0f} MB ({args.days} days), "
              f"{short.stat().st_size / 1e6:.2f} MB (one day)")  # fmt: skip
        print(f"{'measure':<30} {'one day':>10} {f'{args.days} days':>12} {'ratio':>7}")
        for name, value in big.items():
            ratio = value / small[name] if small[name] else float("inf")
            goal = name.startswith("journal verify") or (value < 1.0 and ratio <= 2.0)
            print(f"{name:<30} {small[name] * 1000:>8.1f} ms {value * 1000:>9.1f} ms "
                  f"{ratio:>7.2f}{'' if goal else '  MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
