"""Technician diagnostics, the functions behind both the screen and `kiosk diag`: the PIN
with its lockout, the audit trail, the cash box (content, emptying report), acceptor test
money and the journal export. Every entry, failure and action is journaled (and synced)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import hmac
import io
import json
import os
import secrets
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kiosk.app.ports import CheckResult, DeviceReport, Diagnosable
from kiosk.documents import receipt
from kiosk.domain.errors import ConfigError, KioskError
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import BackTo, Entry, Journal, format_ts
from sync.wire.client import SyncError
from sync.wire.protocol import GENESIS, entry_hash, keyed

#: scrypt cost: about 50 ms per check here, and 16 MiB of memory per guess
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_FAILURES = 3
#: the first lockout; each next one without a right PIN in between lasts twice as long, up to
#: a day: a four-digit PIN would take years to guess, not days
LOCKOUT = timedelta(minutes=5)
MAX_LOCKOUT = timedelta(days=1)
#: the demo's PIN, for sites without a secrets file only (like the demo master keys)
DEMO_PIN = "0000"


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


def demo_pin_hash() -> str:
    """The demo PIN's hash: simulated runs and sites without a secrets file only."""
    return hash_pin(DEMO_PIN, salt=b"demo-only-salt!!")


def load_pin_hash(site: Site, warn: Callable[[str], None]) -> str:
    """The technician PIN's hash from the site's secrets file ([technician] pin_hash)."""
    path = site.secrets.file
    if path is None:
        warn("no secrets file configured: the demo technician PIN applies (never on a real site)")
        return demo_pin_hash()
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
    """Three wrong PINs lock the mode: for five minutes, and each lockout after another
    without a right PIN in between twice as long (up to a day). The count lives in the
    journal, so a restart does not reset it, and a check reads it, checks the PIN and records
    the outcome as one transaction under the journal's write lock: PINs tried at the same
    moment from several places (two `kiosk diag` and the screen) are checked one after the
    other, each seeing the failures before it."""

    def __init__(self, journal: Journal, pin_hash: str) -> None:
        self.journal = journal
        self.pin_hash = pin_hash

    def locked_until(self, now: datetime) -> datetime | None:
        return lock_in(self.journal.back_to(Kind.AUDIT, entered), now)

    def enter(self, pin: str, who: str, now: datetime) -> None:
        """Let the technician in, or raise PinRefused; either way it is journaled."""

        Decision = tuple[list[Record], PinRefused | None]

        def decide(back_to: BackTo) -> Decision:
            audits = back_to(Kind.AUDIT, entered)  # since the last right PIN: all that counts
            until = lock_in(audits, now)
            if until is not None:
                return [audit_record("refused_locked", who, until=format_ts(until))], PinRefused(
                    "diagnostics are locked after three wrong PINs", until
                )
            if pin_matches(pin, self.pin_hash):
                return [audit_record("entered", who)], None
            failed = audit_record("pin_failed", who)
            as_if = Entry(0, now, str(Kind.AUDIT), None, None, None, failed.data, "", "")
            until = lock_in([*audits, as_if], now)
            if until is None:
                return [failed], PinRefused("wrong PIN")
            minutes = round((until - now).total_seconds() / 60)
            locked = audit_record("locked", who, until=format_ts(until))
            return [failed, locked], PinRefused(
                f"wrong PIN: diagnostics are locked for {minutes} minutes", until
            )

        refused = self.journal.append_decided(decide, now)
        if refused is not None:
            raise refused


def audit_record(action: str, who: str, **data: Any) -> Record:
    return Record(Kind.AUDIT, data={"action": action, "who": who, **data})


def entered(e: Entry) -> bool:
    """A right PIN: failures and lockouts count again from zero after it."""
    return e.data.get("action") == "entered"


def lock_in(audits: list[Entry], now: datetime) -> datetime | None:
    """Until when the audit trail says the mode is locked (None: it is not)."""
    failures = 0
    lockouts = 0
    until: datetime | None = None
    for e in audits:
        action = e.data.get("action")
        if action == "entered":
            failures = lockouts = 0
        elif action == "pin_failed":
            failures += 1
            if failures >= MAX_FAILURES:
                failures = 0
                lockouts += 1
                until = e.ts + min(LOCKOUT * 2 ** (lockouts - 1), MAX_LOCKOUT)
    return until if until is not None and until > now else None


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
    """What went in since the box was last emptied (the journal's running count)."""
    counts, test = journal.cash_box()
    emptied = journal.last_of_kind(Kind.CASHBOX_EMPTIED)
    return CashBox(counts, currency, emptied.ts if emptied else None, test)


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


class ExportRefused(KioskError):
    """The journal could not be written to the stick safely (a symbolic link where the file
    or the folder goes): nothing was written there."""


def export_journal(journal: Journal, folder: Path, who: str, now: datetime) -> tuple[Path, Path]:
    """The live journal as CSV and JSON (with the chain, its anchor and the verify result) in
    `folder`, e.g. a mounted USB stick. The live journal begins after its anchor, the last
    archived entry (`journal.base()`: seq 0 and the genesis hash when nothing was archived);
    the JSON names it so that the chain verifies from there. Each file is written as a new
    file in the folder (opened without following symbolic links) and renamed into place: a
    link planted on the stick is refused, never written through."""
    count = journal.verify()
    anchor_seq, anchor_hash = journal.base()
    rows = journal.raw_entries()
    stamp = f"{journal.kiosk_id}-{now:%Y%m%d-%H%M%S}"
    document = {"kiosk_id": journal.kiosk_id, "verified_entries": count,
                "anchor": {"seq": anchor_seq, "hash": anchor_hash},
                "keyed_from": journal.keyed_from(), "entries": rows}  # fmt: skip
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else ["seq"])
    writer.writeheader()
    writer.writerows(rows)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        where = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as err:
        raise ExportRefused(f"{folder}: cannot open the folder without following links "
                            f"({err.strerror})") from None  # fmt: skip
    try:
        jname, cname = f"journal-{stamp}.json", f"journal-{stamp}.csv"
        _write_new(where, folder, jname, json.dumps(document, indent=1, ensure_ascii=False))
        _write_new(where, folder, cname, table.getvalue())
    finally:
        os.close(where)
    audit(journal, now, "journal_exported", who, entries=count, file=jname)
    return folder / jname, folder / cname


def _write_new(where: int, folder: Path, name: str, text: str) -> None:
    """`text` into `name` in the folder open as `where`: a new file of our own (O_EXCL,
    O_NOFOLLOW) written, flushed to the stick, then renamed over `name`; a `name` that is a
    symbolic link is refused and nothing is left behind."""
    temp = f".{name}.{secrets.token_hex(4)}.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=where)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            there = os.stat(name, dir_fd=where, follow_symlinks=False)
        except FileNotFoundError:
            there = None
        if there is not None and stat.S_ISLNK(there.st_mode):
            raise ExportRefused(f"{folder / name} is a symbolic link: not written through")
        os.rename(temp, name, src_dir_fd=where, dst_dir_fd=where)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=where)
        raise
    with contextlib.suppress(OSError):  # (a folder some file systems cannot flush)
        os.fsync(where)


def verify_export(path: Path, secret: bytes | None = None) -> int:
    """Re-check an exported JSON journal's chain from the anchor it states (the last archived
    entry before its first; an export without one starts at the genesis), its entries from
    `keyed_from` on with the kiosk's chain `secret` (they cannot be checked without it); the
    number of entries, or ValueError."""
    data = json.loads(path.read_text("utf-8"))
    keyed_from = data.get("keyed_from")
    if keyed_from is not None and (type(keyed_from) is not int or keyed_from < 1):
        raise ValueError(f"keyed_from {keyed_from!r} is not an entry's number")
    anchor = data.get("anchor", {"seq": 0, "hash": GENESIS})
    seq, prev = anchor.get("seq"), anchor.get("hash")
    genesis = seq == 0 and prev == GENESIS
    archived = type(seq) is int and seq > 0 and isinstance(prev, str) and prev != GENESIS
    if not (genesis or archived):
        raise ValueError(f"the anchor {anchor!r} is not an entry's number and hash")
    for i, r in enumerate(data["entries"], start=seq + 1):
        if r["seq"] != i or r["prev_hash"] != prev:
            before = f"the anchor (entry {seq})" if i == seq + 1 else f"entry {i - 1}"
            raise ValueError(f"entry {r['seq']}: breaks the chain (does not follow {before})")
        content = (r["seq"], r["ts"], r["kind"], r["txid"], r["key"], r["amount"], r["currency"])
        try:
            key = keyed(i, secret, keyed_from)
        except LookupError as err:
            raise ValueError(f"entry {i}: {err}: the check needs it") from None
        if entry_hash(prev, *content, r["data"], key) != r["hash"]:
            raise ValueError(f"entry {r['seq']}: content does not match its hash")
        prev = r["hash"]
    return len(data["entries"])


def last_transactions(journal: Journal, n: int = 10) -> list[Entry]:
    return [e for e in journal.entries() if e.kind == Kind.TX_CLOSED][-n:]


# ---------------------------------------------------------------- the technician's functions

SECRET_WORDS = ("token", "password", "secret", "pin", "master", "key_")


def config_lines(site: Site) -> list[str]:
    """The effective site configuration as `section.field = value`, secrets redacted (the
    secrets file is named, never read here)."""
    out: list[str] = []

    def text(value: Any) -> str:
        """A value as a technician reads it: money as money text, lists as lists."""
        if isinstance(value, Money):
            return str(value)
        if isinstance(value, tuple | list | set | frozenset):
            items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
            inner = [f"({text(v)})" if isinstance(v, tuple | list) and v else text(v)
                     for v in items]  # fmt: skip
            return ", ".join(inner) or "-"
        if value is None:
            return "-"
        return str(value)

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Money):
            out.append(f"{prefix} = {value}")
            return
        if hasattr(value, "model_dump"):
            value = value.model_dump()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
            return
        name = prefix.rsplit(".", 1)[-1].lower()
        secret = isinstance(value, str) and value and any(w in name for w in SECRET_WORDS)
        shown = "***" if secret else text(value)
        if prefix == "secrets.file" and value:
            shown = f"{value} (contents not shown)"
        out.append(f"{prefix} = {shown}")

    walk("", site)
    return out


#: where the journal export goes when set (else the first USB stick mounted under /media)
EXPORT_DIR_ENV = "KIOSK_EXPORT_DIR"


def usb_folder() -> Path | None:
    """The mounted USB stick to export to: $KIOSK_EXPORT_DIR, or the first mount point under
    /media/<user>/ or /run/media/<user>/ (where the desktop's automounter puts them)."""
    override = os.environ.get(EXPORT_DIR_ENV)
    if override:
        return Path(override)
    for base in (Path("/media"), Path("/run/media")):
        for mount in sorted(base.glob("*/*")) + sorted(base.glob("*")):
            if mount.is_dir() and os.path.ismount(mount):
                return mount
    return None


def report_lines(reports: list[DeviceReport]) -> list[str]:
    """The device overview as text (the screen and `kiosk diag devices`)."""
    out = []
    for r in reports:
        out.append(f"{r.name.upper()}: {'connected' if r.connected else 'NOT CONNECTED'}")
        out += [f"   {k}: {v}" for k, v in r.identity.items()]
        if r.counters:
            out.append("   counters: " + ", ".join(f"{k} {v}" for k, v in r.counters.items()))
        out.append(f"   last error: {r.last_error or '-'}")
    return out


def check_lines(results: list[CheckResult]) -> list[str]:
    """Self-test results as text (the screen and `kiosk diag selftest`)."""
    out = []
    for r in results:
        out.append(f"{'PASS' if r.ok else 'FAIL'}  {r.name}")
        out += [f"      {line}" for line in r.lines]
    return out


class Diagnostics:
    """What the technician can do, for the screen and for `kiosk diag`; every action is
    journaled as an audit entry (and synced with the journal)."""

    def __init__(self, kiosk: Any, who: str, *, clock: Callable[[], datetime] | None = None):
        self.kiosk = kiosk  # kiosk.app.runner.Kiosk (not imported: the service imports this module)
        self.who = who
        self.clock = clock or kiosk.clock
        self.restart_requested = False

    @property
    def journal(self) -> Journal:
        return self.kiosk.journal  # type: ignore[no-any-return]

    @property
    def site(self) -> Site:
        return self.kiosk.site  # type: ignore[no-any-return]

    def _audit(self, action: str, **data: Any) -> None:
        audit(self.journal, self.clock(), action, self.who, **data)

    def overview(self) -> list[DeviceReport]:
        out = []
        for name, port in self.kiosk.devices.named():
            if isinstance(port, Diagnosable):
                try:
                    out.append(port.report())
                except Exception as err:  # a broken device must not break the overview
                    out.append(DeviceReport(name, False, {}, f"no report: {err}"))
            else:
                out.append(DeviceReport(name, True, {"product": type(port).__name__}))
        why = self.kiosk.unhealthy  # the automat itself: disk, journal, clock
        out.append(DeviceReport("system", not why, {"journal": str(self.kiosk.journal.path)},
                                why or None))  # fmt: skip
        self._audit("device_overview", devices=[r.name for r in out])
        return out

    def head_office_check(self) -> CheckResult:
        ho = self.kiosk.head_office
        try:
            rtt = ho.health()
        except SyncError as err:
            return CheckResult("head office", False, (str(err),))
        return CheckResult("head office", True, (f"{ho.where} reachable, {rtt * 1000:.0f} ms",))

    def self_tests(self) -> list[CheckResult]:
        """Each device's own test (printer: a test page), then head office."""
        out = []
        for name, port in self.kiosk.devices.named():
            if isinstance(port, Diagnosable):
                try:
                    out.append(port.self_test())
                except Exception as err:
                    out.append(CheckResult(f"{name}: self-test", False, (str(err),)))
        out.append(self.head_office_check())
        self._audit("self_tests", results={r.name: r.ok for r in out})
        return out

    def cash_box(self) -> CashBox:
        box = cash_box(self.journal, self.site.currency)
        self._audit("cashbox_viewed", total=box.total.minor)
        return box

    def print_report(self, title: str, lines: list[str]) -> bool:
        """A report on the receipt printer, with the receipt's header; whether it printed."""
        printer = self.kiosk.devices.printer
        doc = receipt.report(self.site, title, lines, self.clock(), self.who)
        return bool(printer is not None and printer.print_document(doc))

    def reprint(self, txid: str) -> bool:
        """A transaction's receipt again, marked as a copy; audited with whether it printed.
        NoSuchTransaction (nothing printed, nothing journaled) for an unknown id."""
        doc = receipt.transaction_receipt(self.journal, self.site, txid.strip(), copy=True)
        printer = self.kiosk.devices.printer
        printed = bool(printer is not None and printer.print_document(doc))
        self._audit("receipt_reprinted", txid=txid.strip(), printed=printed)
        return printed

    def empty_cash_box(self) -> tuple[list[str], bool]:
        """Journal the emptying (counters restart) and print its report; (report, printed)."""
        report = empty_cash_box(self.journal, self.site, self.who, self.clock())
        printed = self.print_report("Kassenleerung / cash box emptied", report[2:])
        if not printed:
            self._audit("report_not_printed", report="cashbox_emptied")
        return report, printed

    def end_of_day(self) -> tuple[Any, bool]:
        """The card terminal's Kassenschnitt: parsed, journaled, its printout printed."""
        card = self.kiosk.devices.card
        if card is None or not hasattr(card, "end_of_day"):
            raise KioskError("this automat has no card terminal")
        result = card.end_of_day()
        self._audit(
            "end_of_day",
            ok=result.ok,
            text=result.text,
            total=result.total.minor if result.total is not None else None,
            receipt=result.receipt_number,
            groups={g: [n, t.minor] for g, n, t in result.groups},
        )
        printed = bool(result.lines) and self.print_report(
            "Kassenschnitt / end of day", list(result.lines)
        )
        return result, printed

    def sync_now(self) -> list[str]:
        st = self.kiosk.head_office.round_now(timeout=20)
        self._audit("sync_now", backlog=st.backlog, error=st.last_error)
        when = st.last_success.astimezone(self.site.hours.tz) if st.last_success else None
        return [
            f"acknowledged up to entry {st.acked}, backlog {st.backlog}",
            f"last success {when:%d.%m.%Y %H:%M:%S}" if when else "never synced",
            f"last error: {st.last_error}" if st.last_error else "no error",
        ]

    def transactions(self, n: int = 10) -> list[str]:
        tz = self.site.hours.tz
        out = []
        for e in reversed(last_transactions(self.journal, n)):
            paid = Money(int(e.data.get("paid", 0)), self.site.currency)
            out.append(
                f"{e.ts.astimezone(tz):%d.%m. %H:%M}  {e.txid}  {e.data.get('outcome', '?'):<10}"
                f" {paid}"
            )
        self._audit("transactions_viewed", shown=len(out))
        return out

    def recent_txids(self, n: int = 10) -> list[str]:
        """The last closed transactions' ids, newest first (the order of `transactions`)."""
        return [str(e.txid) for e in reversed(last_transactions(self.journal, n))]

    def export(self, folder: Path) -> tuple[Path, Path, int]:
        """CSV and JSON into `folder` (a mounted USB stick); the JSON re-verified."""
        jpath, cpath = export_journal(self.journal, folder, self.who, self.clock())
        return jpath, cpath, verify_export(jpath, self.journal.chain_secret)

    def config(self) -> list[str]:
        self._audit("config_viewed")
        return config_lines(self.site)

    def restart(self) -> None:
        self._audit("restart")
        self.restart_requested = True


#: what a technician types to stop the automat before using the devices from the console
STOP_THE_AUTOMAT = "sudo systemctl stop prepaid-kiosk"


def ports_held(site: Site) -> list[str]:
    """The serial ports the site names that another program holds (the automat itself,
    most often: it opens them exclusively), each as "coin (/dev/...): why"."""
    import serial

    held = []
    d = site.devices
    seen: set[str] = set()
    for name, conf in (("coin", d.coin), ("notes", d.notes), ("printer", d.printer)):
        port = getattr(conf, "port", None)
        if not port or "://" in port or port in seen or not Path(port).exists():
            continue  # a URL, a simulator, the same bus, or not there (said when opened)
        seen.add(port)
        try:
            serial.Serial(port, exclusive=True, timeout=0).close()
        except (serial.SerialException, OSError) as err:
            if "lock" in str(err).lower() or "busy" in str(err).lower():
                held.append(f"{name} ({port}): in use by another program")
    return held
