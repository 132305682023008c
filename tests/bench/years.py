"""Years in the field: what a long journal costs the automat (#18).

A journal of `--days` days at `--per-day` top-ups (each: opened, two cash entries, split,
written, closed, receipt; a technician empties the box every week), made through the journal's
own append in day-sized commits, against the same measures on a one-day journal:

  file size without and with housekeeping (head office holds everything; the default policy:
  90 days live, segments kept two years); start-up (opening the journal, migration check,
  housekeeping's tidy-up, reconciliation, the acceptors' counters); the start-up
  reconciliation alone; a technician's PIN check (scrypt included); the cash-box report; a
  key's account and pending credits; `journal verify` of the live part and of everything.

Goals, with housekeeping: start-up and every query under 1 s, and within a factor 2 of the
one-day figure (`MISSED` beside a figure over its goal). `journal verify` checks every hash it
covers, so it is linear in what it checks and has no goal here: what housekeeping changes is
that the live part is bounded by `archive_after_days`, not by the years in the field.
Medians of `--runs` (the journal without housekeeping: one run each, for comparison).

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

from kiosk.app.bootstrap import tidy_up
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.domain.site import load_site
from kiosk.ledger.archive import Policy, housekeep, verify_all
from kiosk.ledger.journal import ANCHOR, WATERMARK, Journal
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


def measures(path: Path, runs: int, now: datetime) -> dict[str, float]:
    site = load_site()  # the demo site
    policy = Policy()
    j = Journal(path, "DEMO-01")
    stored = hash_pin(PIN)

    def start_up() -> None:  # what `kiosk run` does with its journal before it opens
        journal = Journal(path, "DEMO-01")
        tidy_up(journal, now, policy)
        reconcile(journal, site, now)
        journal.acceptor_counters()
        journal.close()

    out = {
        "start-up (open, tidy, reconcile)": median(start_up, runs),
        "start-up reconciliation": median(lambda: reconcile(j, site, now), runs),
        "PIN check": median(lambda: PinGuard(j, stored).locked_until(now), runs),
        "cash-box report": median(lambda: cash_box(j, "EUR"), runs),
        "account and pending credits": median(lambda: j.account_for("K-0001", "4711", "EUR"), runs),
        "journal verify (live part)": median(j.verify, 1),
        "journal verify (everything)": median(lambda: verify_all(j), 1),
    }
    j.close()
    return out


def size(path: Path) -> int:
    """The journal's bytes on disk, with its archive segments."""
    folder = path.parent / "archive"
    segments = sum(f.stat().st_size for f in folder.glob("*.gz")) if folder.exists() else 0
    return path.stat().st_size + segments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=1825)
    ap.add_argument("--per-day", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    now = START + timedelta(days=args.days)
    with tempfile.TemporaryDirectory() as folder:
        made = time.perf_counter()
        (Path(folder) / "long").mkdir()
        long = Path(folder) / "long" / "journal-DEMO-01.sqlite"
        j = make(long, args.days, args.per_day)
        last = j.raw_entries(after=j.last_seq() - 1)[0]  # head office holds it all
        j.set_meta(WATERMARK, str(last["seq"]), **{ANCHOR: f"{last['seq']} {last['hash']}"})
        j.close()
        print(f"made {args.days} days x {args.per_day} top-ups in "
              f"{time.perf_counter() - made:.0f} s: {size(long) / 1e6:.0f} MB")  # fmt: skip
        (Path(folder) / "day").mkdir()
        short = Path(folder) / "day" / "journal-DEMO-01.sqlite"
        make(short, 1, args.per_day).close()
        small = measures(short, args.runs, START + timedelta(days=1))
        without = measures(long, 1, now)
        kept = time.perf_counter()
        j = Journal(long, "DEMO-01")
        report = housekeep(j, now, Policy(), vacuum=True)
        j.close()
        print(f"housekeeping (first time, {report.archived} entries into "
              f"{len(report.segments)} segments, vacuum): {time.perf_counter() - kept:.0f} s; "
              f"then {size(long) / 1e6:.0f} MB on disk, of it the live journal "
              f"{long.stat().st_size / 1e6:.0f} MB; one day: "
              f"{size(short) / 1e6:.2f} MB")  # fmt: skip
        big = measures(long, args.runs, now)
        print(f"{'measure':<34} {'one day':>10} {'no housekeeping':>16} {'housekept':>12} "
              f"{'ratio':>7}")  # fmt: skip
        for name, value in big.items():
            ratio = value / small[name] if small[name] else float("inf")
            goal = name.startswith("journal verify") or (value < 1.0 and ratio <= 2.0)
            print(f"{name:<34} {small[name] * 1000:>8.1f} ms {without[name] * 1000:>13.1f} ms "
                  f"{value * 1000:>9.1f} ms {ratio:>7.2f}{'' if goal else '  MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
