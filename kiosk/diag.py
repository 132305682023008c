"""Technician diagnostics, the functions behind both the screen and `kiosk diag`: the PIN
with its lockout, the audit trail, the cash box (content, emptying report), acceptor test
money and the journal export. Every entry, failure and action is journaled (and synced)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import secrets
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kiosk.config import Site
from kiosk.errors import ConfigError, KioskError
from kiosk.events import Kind, Record
from kiosk.journal import Entry, Journal, format_ts
from kiosk.money import Money
from sync.chain import GENESIS, entry_hash

#: scrypt cost: about 50 ms per check here, and 16 MiB of memory per guess
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_FAILURES = 3
LOCKOUT = timedelta(minutes=5)
#: the demo's PIN, for sites without a secrets file only (like the demo master keys)
DEMO_PIN = "0000"
#: cash kinds that put money into the cash box
INTO_THE_BOX = (Kind.CASH_IN, Kind.CASH_UNATTRIBUTED, Kind.TEST_CASH)


class PinRefused(KioskError):
    """Wrong PIN, or the mode is locked; `until` is set when locked."""

    def __init__(self, message: str, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until


def hash_pin(pin: str, salt: bytes | None = None) -> str:
    """The line for the secrets file: `scrypt$n$r$p$salt$hash` (hex)."""
    if not (4 <= len(pin) <= 12 and pin.isdigit()):
        raise ValueError("a PIN is 4 to 12 digits")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def pin_matches(pin: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    except ValueError:
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def load_pin_hash(site: Site, warn: Callable[[str], None]) -> str:
    """The technician PIN's hash from the site's secrets file ([technician] pin_hash)."""
    path = site.secrets.file
    if path is None:
        warn("no secrets file configured: the demo technician PIN applies (never on a real site)")
        return hash_pin(DEMO_PIN, salt=b"demo-only-salt!!")
    try:
        stored = str(tomllib.loads(Path(path).read_text("utf-8"))["technician"]["pin_hash"])
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(path, [f"technician.pin_hash: {err}"]) from None
    if not stored.startswith("scrypt$"):
        raise ConfigError(path, ["technician.pin_hash: not an scrypt hash (kiosk diag pin-hash)"])
    return stored


def audit(journal: Journal, now: datetime, action: str, who: str, **data: Any) -> None:
    journal.append([Record(Kind.AUDIT, data={"action": action, "who": who, **data})], now)


class PinGuard:
    """Three wrong PINs lock the mode for five minutes; the count lives in the journal, so a
    restart does not reset it."""

    def __init__(self, journal: Journal, pin_hash: str) -> None:
        self.journal = journal
        self.pin_hash = pin_hash

    def locked_until(self, now: datetime) -> datetime | None:
        failures: list[datetime] = []
        for e in self.journal.entries_of_kind(Kind.AUDIT):
            action = e.data.get("action")
            if action == "pin_failed":
                failures.append(e.ts)
            elif action == "entered":
                failures.clear()
            if len(failures) >= MAX_FAILURES:
                until = failures[-1] + LOCKOUT
                failures.clear()
                if until > now:
                    return until
        return None

    def enter(self, pin: str, who: str, now: datetime) -> None:
        """Let the technician in, or raise PinRefused; either way it is journaled."""
        until = self.locked_until(now)
        if until is not None:
            audit(self.journal, now, "refused_locked", who, until=format_ts(until))
            raise PinRefused("diagnostics are locked after three wrong PINs", until)
        if not pin_matches(pin, self.pin_hash):
            audit(self.journal, now, "pin_failed", who)
            until = self.locked_until(now)
            if until is not None:
                audit(self.journal, now, "locked", who, until=format_ts(until))
                raise PinRefused("wrong PIN: diagnostics are locked for five minutes", until)
            raise PinRefused("wrong PIN")
        audit(self.journal, now, "entered", who)


# ---------------------------------------------------------------- the cash box


@dataclass(frozen=True)
class CashBox:
    """What went into the cash box since it was last emptied, by medium and denomination."""

    counts: dict[tuple[str, int], int]  # (coin|note, minor) -> pieces
    currency: str
    since: datetime | None  # the last emptying
    test_money: int  # minor units of it that came from acceptor tests

    @property
    def total(self) -> Money:
        return Money(sum(v * n for (_m, v), n in self.counts.items()), self.currency)

    def lines(self) -> list[str]:
        out = []
        for (medium, value), n in sorted(self.counts.items()):
            each = Money(value, self.currency)
            out.append(
                f"{medium:<5} {str(each):>12} x {n:>4} = {str(Money(value * n, self.currency)):>14}"
            )
        out.append(f"{'total':<5} {'':>12}   {'':>4}   {str(self.total):>14}")
        if self.test_money:
            out.append(f"of it test money (not credited): {Money(self.test_money, self.currency)}")
        return out


def cash_box(journal: Journal, currency: str) -> CashBox:
    counts: Counter[tuple[str, int]] = Counter()
    since = None
    test = 0
    for e in journal.entries():
        if e.kind == Kind.CASHBOX_EMPTIED:
            counts.clear()
            since, test = e.ts, 0
        elif e.kind in INTO_THE_BOX and e.amount is not None:
            counts[(str(e.data.get("medium", "coin")), e.amount.minor)] += 1
            if e.kind == Kind.TEST_CASH:
                test += e.amount.minor
    return CashBox(dict(counts), currency, since, test)


def empty_cash_box(journal: Journal, site: Site, who: str, now: datetime) -> list[str]:
    """The technician confirmed: journal the emptying (the counters restart) and return the
    report to print."""
    box = cash_box(journal, site.currency)
    journal.append(
        [
            Record(
                Kind.CASHBOX_EMPTIED,
                amount=box.total,
                data={
                    "who": who,
                    "counts": {f"{m}:{v}": n for (m, v), n in sorted(box.counts.items())},
                    "test_money": box.test_money,
                },
            )
        ],
        now,
    )
    audit(journal, now, "cashbox_emptied", who, total=box.total.minor)
    local = now.astimezone(site.hours.tz)
    since = box.since.astimezone(site.hours.tz).strftime("%d.%m.%Y %H:%M") if box.since else "-"
    return [
        f"Kassenleerung {site.name} ({site.kiosk_id})",
        f"{local:%d.%m.%Y %H:%M}, technician {who}",
        f"since {since}",
        *box.lines(),
    ]


def take_test_money(journal: Journal, value: Money, medium: str, who: str, now: datetime) -> None:
    """A coin or note taken in the acceptor test: counted in the box, never credited."""
    journal.append([Record(Kind.TEST_CASH, amount=value, data={"medium": medium, "who": who})], now)


# ---------------------------------------------------------------- journal export


def export_journal(journal: Journal, folder: Path, who: str, now: datetime) -> tuple[Path, Path]:
    """The whole journal as CSV and JSON (with the chain and the verify result) in `folder`,
    e.g. a mounted USB stick."""
    count = journal.verify()
    folder.mkdir(parents=True, exist_ok=True)
    rows = journal.raw_entries()
    stamp = f"{journal.kiosk_id}-{now:%Y%m%d-%H%M%S}"
    jpath, cpath = folder / f"journal-{stamp}.json", folder / f"journal-{stamp}.csv"
    jpath.write_text(
        json.dumps(
            {"kiosk_id": journal.kiosk_id, "verified_entries": count, "entries": rows},
            indent=1,
            ensure_ascii=False,
        ),
        "utf-8",
    )
    with cpath.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["seq"])
        writer.writeheader()
        writer.writerows(rows)
    audit(journal, now, "journal_exported", who, entries=count, file=jpath.name)
    return jpath, cpath


def verify_export(path: Path) -> int:
    """Re-check an exported JSON journal's chain; the number of entries, or ValueError."""
    data = json.loads(path.read_text("utf-8"))
    prev = GENESIS
    for i, r in enumerate(data["entries"], start=1):
        if r["seq"] != i or r["prev_hash"] != prev:
            raise ValueError(f"entry {r['seq']}: breaks the chain")
        content = (r["seq"], r["ts"], r["kind"], r["txid"], r["key"], r["amount"], r["currency"])
        if entry_hash(prev, *content, r["data"]) != r["hash"]:
            raise ValueError(f"entry {r['seq']}: content does not match its hash")
        prev = r["hash"]
    return len(data["entries"])


def last_transactions(journal: Journal, n: int = 10) -> list[Entry]:
    return [e for e in journal.entries() if e.kind == Kind.TX_CLOSED][-n:]
