"""The billing system's nightly files in (keys, debts, credits).

In: `keys` (serial, status, reason, contract_account), `debts` (contract_account, amount,
currency) and `credits` (key, amount, currency, kiosk, and optionally ref) as CSV with that
header row. Amounts are text with the currency's decimals ("12.50"), never floats. A file is
taken whole or not at all: every row is checked first, and the first bad one is named with its
line number and reason; a key or account already known is replaced by the file's row (the file
is the billing system's word), one not in the file is left as it was. A credit names a key head
office knows and, if any, a registered kiosk. A credit row is taken once: known by its `ref`
(the billing system's id of it; the credit's id is made from it) or, without one, by the
file's digest and the line, so a file imported again (a retried night job) changes nothing,
and the answer says how many rows were new and how many were there already.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from sync.wire.errors import HeadOfficeError
from sync.wire.protocol import EXPONENT, key_reason

#: the columns of each import file, in order
COLUMNS = {
    "keys": ("serial", "status", "reason", "contract_account"),
    "debts": ("contract_account", "amount", "currency"),
    "credits": ("key", "amount", "currency", "kiosk"),
}
#: columns a file may add after those (left out: empty)
OPTIONAL = {"credits": ("ref",)}
#: a credit row's id in the billing system: the credit's id is made from it (a key's log holds
#: at most 48 bytes of it); a letter or digit first
REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
CHUNK = 500  # rows per statement when replacing what is known


class BadImport(HeadOfficeError):
    """An import file that is not taken: names the first bad line and why."""


def _reason(value: str | None, where: str) -> str:
    try:
        return key_reason((value or "").strip())
    except ValueError as err:
        raise BadImport(f"{where}: {err}") from None


def parse_amount(text: str, currency: str, where: str) -> int:
    exp = EXPONENT.get(currency)
    if exp is None:
        raise BadImport(f"{where}: currency {currency!r} is not one of {', '.join(EXPONENT)}")
    if not re.fullmatch(rf"\d{{1,9}}\.\d{{{exp}}}", text):
        raise BadImport(f"{where}: amount {text!r} is not written as {'0.' + '0' * exp}")
    whole, frac = text.split(".")
    return int(whole) * 10**exp + int(frac)


def read_rows(source: TextIO, kind: str, name: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of an import file, its header checked."""
    reader = csv.reader(source)
    try:
        header = next(reader)
    except StopIteration:
        raise BadImport(f"{name}: empty file (a header row is needed)") from None
    except csv.Error as err:
        raise BadImport(f"{name} line 1: {err}") from None
    want, extra = COLUMNS[kind], OPTIONAL.get(kind, ())
    got = tuple(h.strip() for h in header)
    if got != want and got != want + extra:
        also = f" (and optionally {','.join(extra)})" if extra else ""
        raise BadImport(f"{name} line 1: the header must be {','.join(want)}{also}, not "
                        f"{','.join(header)}")  # fmt: skip
    absent = dict.fromkeys(extra[len(got) - len(want) :], "")
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(got):
                raise BadImport(f"{name} line {line}: {len(row)} fields, {len(got)} expected")
            yield line, dict(zip(got, (c.strip() for c in row), strict=True)) | absent
    except csv.Error as err:
        raise BadImport(f"{name} line {reader.line_num}: {err}") from None


def _text(value: str, where: str, field: str, *, required: bool = True, most: int = 64) -> str:
    if required and not value:
        raise BadImport(f"{where}: {field} is empty")
    if len(value) > most:
        raise BadImport(f"{where}: {field} is longer than {most} characters")
    return value


def parse(kind: str, rows: Iterable[tuple[int, dict[str, str]]], name: str) -> list[dict[str, Any]]:
    """The rows as head office stores them; BadImport at the first bad one."""
    from sync.store.tables import KEY_STATUSES  # (the server's tables import this module's callers)

    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line, r in rows:
        where = f"{name} line {line}"
        if kind == "keys":
            serial = _text(r["serial"], where, "serial")
            if r["status"] not in KEY_STATUSES:
                raise BadImport(f"{where}: status {r['status']!r} is not one of "
                                f"{', '.join(KEY_STATUSES)}")  # fmt: skip
            row = {"serial": serial, "status": r["status"],
                   "reason": _reason(r["reason"], where),
                   "contract_account": _text(r["contract_account"], where, "contract_account",
                                             required=False) or None}  # fmt: skip
            ident = serial
        elif kind == "debts":
            account = _text(r["contract_account"], where, "contract_account")
            row = {"contract_account": account, "currency": r["currency"],
                   "amount": parse_amount(r["amount"], r["currency"], where)}  # fmt: skip
            ident = account
        else:
            key = _text(r["key"], where, "key")
            amount = parse_amount(r["amount"], r["currency"], where)
            if amount <= 0:
                raise BadImport(f"{where}: a credit is more than zero")
            ref = r["ref"]
            if ref and not REF.fullmatch(ref):
                raise BadImport(f"{where}: ref {ref!r} is not 1 to 40 letters, digits, '.', '_' "
                                "or '-' (a letter or digit first)")  # fmt: skip
            row = {"key": key, "amount": amount, "currency": r["currency"],
                   "kiosk": _text(r["kiosk"], where, "kiosk", required=False) or None,
                   "ref": ref or None, "line": line}  # fmt: skip
            ident = f"ref {ref}" if ref else f"{line}"  # without a ref: every line its own
        if ident in seen:
            raise BadImport(f"{where}: {ident} is in the file twice (line {seen[ident]} too)")
        seen[ident] = line
        out.append(row)
    return out


@dataclass(frozen=True)
class Taken:
    """What an import did: rows new to head office, and rows it had taken before (credits
    imported again: nothing changed for them). Keys and debts replace what is known: all new."""

    new: int
    known: int = 0

    @property
    def rows(self) -> int:
        return self.new + self.known


def _read(path: Path | str, source: TextIO | None) -> tuple[str, str]:
    """The file's text and the SHA-256 of its bytes (a credit row without a ref is known by
    it and its line). A byte order mark before the header (a spreadsheet's "UTF-8" CSV) is
    no part of the text."""
    name = str(path)
    if source is not None:
        text = source.read()
        return text.removeprefix("\ufeff"), hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise BadImport(f"{name}: cannot read it: {err.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadImport(f"{name}: not UTF-8 ({err.reason} at byte {err.start})") from None
    return text, hashlib.sha256(raw).hexdigest()


def import_file(
    engine: Engine, kind: str, path: Path | str, source: TextIO | None = None
) -> Taken:
    """Take a billing file whole, in one transaction; how many rows were new and how many
    had been taken before."""
    from sync.store.tables import bump_version, ref_debts, ref_keys

    name = str(path)
    text, digest = _read(path, source)
    rows = parse(kind, read_rows(io.StringIO(text, newline=""), kind, name), name)
    taken = Taken(len(rows))
    try:
        with engine.begin() as conn:
            if kind == "keys":
                _replace(conn, ref_keys, ref_keys.c.serial, [r["serial"] for r in rows], rows)
            elif kind == "debts":
                ids = [r["contract_account"] for r in rows]
                _replace(conn, ref_debts, ref_debts.c.contract_account, ids, rows)
            else:
                taken = _take_credits(conn, rows, name, digest)
            if taken.new:
                bump_version(conn)
    except IntegrityError:  # the same rows taken by another import at this moment
        raise BadImport(f"{name}: another import took some of its rows at the same moment: "
                        "import it again") from None  # fmt: skip
    return taken


def _known(conn: Any, column: Any, wanted: set[str]) -> set[str]:
    ids, found = sorted(wanted), set()
    for i in range(0, len(ids), CHUNK):
        found |= set(conn.execute(select(column).where(column.in_(ids[i : i + CHUNK]))).scalars())
    return found


def _take_credits(conn: Any, rows: list[dict[str, Any]], name: str, digest: str) -> Taken:
    """The credit rows not taken before become credits (their ids made from their identity);
    a row naming a key or kiosk head office does not know refuses the whole file."""
    from sync.store.tables import credits, imported, kiosks, ref_keys

    keys = _known(conn, ref_keys.c.serial, {r["key"] for r in rows})
    sites = _known(conn, kiosks.c.kiosk_id, {r["kiosk"] for r in rows if r["kiosk"]})
    for r in rows:
        if r["key"] not in keys:
            raise BadImport(f"{name} line {r['line']}: key {r['key']!r} is not known to head "
                            "office (the keys file first)")  # fmt: skip
        if r["kiosk"] and r["kiosk"] not in sites:
            raise BadImport(f"{name} line {r['line']}: kiosk {r['kiosk']!r} is not registered")
    for r in rows:
        what = f"ref:{r['ref']}" if r["ref"] else f"{digest}:{r['line']}"
        r["identity"] = hashlib.sha256(what.encode()).hexdigest()
        r["content"] = hashlib.sha256(json.dumps(
            [r["key"], r["amount"], r["currency"], r["kiosk"]]).encode()).hexdigest()  # fmt: skip
        r["credit_id"] = (f"HO-B-{r['ref']}" if r["ref"]
                          else f"HO-F-{r['identity'][:16].upper()}")  # fmt: skip
    before: dict[str, Any] = {}
    ids = [r["identity"] for r in rows]
    for i in range(0, len(ids), CHUNK):
        part = ids[i : i + CHUNK]
        for row in conn.execute(select(imported).where(imported.c.identity.in_(part))):
            before[row.identity] = row
    new = [r for r in rows if r["identity"] not in before]
    for r in rows:
        was = before.get(r["identity"])
        if was is not None and was.content != r["content"]:
            raise BadImport(f"{name} line {r['line']}: ref {r['ref']} was taken before "
                            f"({was.source}, credit {was.credit_id}) with another key, amount, "
                            "currency or kiosk")  # fmt: skip
    now = datetime.now(UTC).isoformat()
    made = [
        {"credit_id": r["credit_id"], "key": r["key"], "amount": r["amount"],
         "currency": r["currency"], "origin": "office", "holder": r["kiosk"],
         "pinned": r["kiosk"] is not None}
        for r in new
    ]  # fmt: skip
    marks = [
        {"identity": r["identity"], "kind": "credits", "ref": r["ref"], "content": r["content"],
         "credit_id": r["credit_id"], "source": f"{name} line {r['line']}", "ts": now}
        for r in new
    ]  # fmt: skip
    for i in range(0, len(made), CHUNK):
        conn.execute(insert(credits), made[i : i + CHUNK])
        conn.execute(insert(imported), marks[i : i + CHUNK])
    _written_before(conn, [r["credit_id"] for r in new])
    return Taken(len(new), len(rows) - len(new))


def _written_before(conn: Any, credit_ids: list[str]) -> None:
    """A credit a kiosk already reported written (head office restored from a backup older
    than the import, and the import run again): closed as that kiosk said, with the key's
    write number, unconfirmed (the key's next claim checks it), and an alarm. Otherwise the
    credit would be open again for a key that holds it."""
    from sync.store.tables import alarm, credits, entries

    for i in range(0, len(credit_ids), CHUNK):
        said = conn.execute(
            select(entries.c.kiosk_id, entries.c.seq, entries.c.txid, entries.c.data)
            .where(entries.c.kind == "pending_written",
                   entries.c.txid.in_(credit_ids[i : i + CHUNK]))
            .order_by(entries.c.seq)
        ).all()  # fmt: skip
        for kiosk_id, seq, txid, data in said:
            fields = json.loads(data)
            if fields.get("not_on_key"):
                continue
            no = fields.get("write_no")
            done = conn.execute(
                update(credits).where(credits.c.credit_id == txid, credits.c.written_by.is_(None))
                .values(written_by=kiosk_id, write_no=no if type(no) is int else None,
                        confirmed=False, holder=kiosk_id)
            )  # fmt: skip
            if done.rowcount:
                alarm(conn, kiosk_id, seq, f"credit {txid} imported, and reported written by "
                      f"{kiosk_id} before: closed so, unconfirmed", [])  # fmt: skip


def _replace(
    conn: Any, table: Any, column: Any, ids: list[str], rows: list[dict[str, Any]]
) -> None:
    for i in range(0, len(ids), CHUNK):
        conn.execute(delete(table).where(column.in_(ids[i : i + CHUNK])))
    for i in range(0, len(rows), CHUNK):
        conn.execute(insert(table), rows[i : i + CHUNK])


# ---------------------------------------------------------------- payments out
