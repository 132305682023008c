"""What the console's pages show, read from the journal entries as a clerk reads them: a
transaction (how it was paid, the fee, the debt repaid, the credit and where it went, the
receipt), a kiosk's faults and cash box emptyings. Pure: rows in, summaries out (the pages
query and render)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.wire.protocol import Kind

#: money into (+) or back out of (-) a transaction, as the payments export counts it
#: (sync/billing/payments.py PAID)
PAID = {Kind.CASH_IN: 1, Kind.CASH_UNATTRIBUTED: 1, Kind.CARD_APPROVED: 1, Kind.CARD_REVERSED: -1}
#: where a transaction's credit went, by the newest of these entries
CREDIT_FATE = (Kind.KEY_WRITTEN, Kind.PENDING_CREDIT, Kind.PENDING_WRITTEN, Kind.PENDING_RELEASED)


def data_of(row: Any) -> dict[str, Any]:
    """An entry's payload (sync/wire/protocol.py's payload classes name its fields) as a dict,
    read tolerantly as head office stored it: every use checks a field's type; an entry whose
    data is no JSON object gives nothing (the raw entries are on the page too)."""
    try:
        raw = json.loads(row.data)
    except (TypeError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


@dataclass
class Sum:
    """Pieces of money of one kind and what they add up to."""

    pieces: int = 0
    minor: int = 0

    def add(self, minor: int) -> None:
        self.pieces += 1
        self.minor += minor


@dataclass
class Step:
    """A dated thing that happened to a transaction (a write failed, a fault, a claim)."""

    ts: str
    kiosk: str
    what: str
    detail: str = ""
    amount: int | None = None


@dataclass
class TxView:
    txid: str
    currency: str | None = None
    kiosk: str | None = None  # the automat it was opened at
    kiosks: list[str] = field(default_factory=list)
    key: str | None = None
    account: str | None = None
    method: str | None = None
    lang: str | None = None
    target: int | None = None
    first: str | None = None  # its first entry's time
    opened: str | None = None
    closed: str | None = None
    outcome: str | None = None  # completed, pending, reversed, cancelled; None: still open
    coins: Sum = field(default_factory=Sum)
    notes: Sum = field(default_factory=Sum)
    card: Sum = field(default_factory=Sum)
    reversed: Sum = field(default_factory=Sum)
    unattributed: Sum = field(default_factory=Sum)
    card_detail: str = ""
    paid: int = 0
    fee: int = 0
    fee_vat: int = 0
    vat_bp: int | None = None
    debt: int = 0
    credit: int = 0
    split: bool = False
    #: written, owed, written_later, released, failed, open, none
    credit_state: str = "none"
    credit_at: str | None = None  # the automat that wrote it or holds it
    credit_ts: str | None = None
    credit_after: int | None = None  # on the key after the write
    holder: str | None = None  # head office's credit book: who may write it now
    written_by: str | None = None
    receipt: str = "unknown"  # printed, not_printed, declined, unknown
    receipt_reason: str = ""
    card_receipt: bool = False
    steps: list[Step] = field(default_factory=list)


def transaction(txid: str, rows: Sequence[Any], credit: Any = None) -> TxView:
    """One transaction from all its entries (any kiosk's, in time order) and head office's
    credit of it (`credits` row, or None)."""
    v = TxView(txid)
    rows = sorted(rows, key=lambda r: (r.ts, r.kiosk_id, r.seq))
    v.first = rows[0].ts if rows else None
    fate: Any = None
    splits: list[dict[str, Any]] = []
    closed: dict[str, Any] | None = None
    for r in rows:
        d = data_of(r)
        if r.kiosk_id not in v.kiosks:
            v.kiosks.append(r.kiosk_id)
        v.key = v.key or r.key
        v.currency = v.currency or r.currency
        kind = r.kind
        if kind == Kind.TX_OPENED:
            v.kiosk, v.opened = r.kiosk_id, r.ts
            v.account = d.get("contract_account") or v.account
            v.method, v.lang = d.get("method"), d.get("lang")
            v.target = d.get("target") if isinstance(d.get("target"), int) else None
        elif kind in PAID and r.amount is not None:
            v.paid += PAID[Kind(kind)] * r.amount
            if kind == Kind.CASH_IN:
                (v.notes if d.get("medium") == "note" else v.coins).add(r.amount)
            elif kind == Kind.CASH_UNATTRIBUTED:
                v.unattributed.add(r.amount)
            elif kind == Kind.CARD_APPROVED:
                v.card.add(r.amount)
                v.card_detail = " ".join(str(d[k]) for k in ("card", "pan") if d.get(k))
            else:
                v.reversed.add(r.amount)
                v.steps.append(Step(r.ts, r.kiosk_id, "card_reversed", str(d.get("reason") or ""),
                                    r.amount))  # fmt: skip
        elif kind == Kind.SPLIT:
            splits.append(d)
        elif kind == Kind.TX_CLOSED:
            closed, v.closed = d, r.ts
            v.outcome = str(d.get("outcome") or "") or None
        elif kind in CREDIT_FATE:
            fate = (r, d)
            if kind == Kind.KEY_WRITTEN and d.get("found_on_key"):
                v.steps.append(Step(r.ts, r.kiosk_id, "found_on_key"))
        elif kind == Kind.WRITE_FAILED:
            v.steps.append(Step(r.ts, r.kiosk_id, "write_failed", str(d.get("reason") or "")))
        elif kind == Kind.RECEIPT:
            v.receipt = "printed" if d.get("printed") is True else "not_printed"
            v.receipt_reason = str(d.get("reason") or "")
        elif kind == Kind.CARD_RECEIPT:
            v.card_receipt = v.card_receipt or bool(d.get("blocks"))
        elif kind == Kind.CLAIM and r.amount:
            v.steps.append(Step(r.ts, r.kiosk_id, "claim", str(d.get("reason") or ""), r.amount))
        elif kind == Kind.FAULT:
            v.steps.append(Step(r.ts, r.kiosk_id, "fault", _fault_text(d), d.get("escrow")))
        elif kind == Kind.CARD_FAILED:
            v.steps.append(Step(r.ts, r.kiosk_id, "card_failed",
                                str(d.get("reason") or d.get("outcome") or "")))  # fmt: skip
    # the allocation: the last split (as the payments export takes it), else what the close
    # says (a close carries the same figures)
    alloc = splits[-1] if splits else (closed or {})
    v.split = bool(splits) or any(k in (closed or {}) for k in ("fee", "debt", "credit"))
    for name in ("fee", "fee_vat", "debt", "credit"):
        value = alloc.get(name)
        setattr(v, name, value if isinstance(value, int) and not isinstance(value, bool) else 0)
    v.vat_bp = alloc.get("vat_bp") if isinstance(alloc.get("vat_bp"), int) else None
    if v.receipt == "unknown" and closed is not None and closed.get("receipt") == "declined":
        v.receipt = "declined"
    if credit is not None:
        v.holder, v.written_by = credit.holder, credit.written_by
    _credit_fate(v, fate)
    return v


def _credit_fate(v: TxView, fate: Any) -> None:
    if fate is None:
        failed = any(s.what == "write_failed" for s in v.steps)
        v.credit_state = "failed" if failed else ("open" if v.outcome is None and v.credit
                                                  else "none")  # fmt: skip
        return
    r, d = fate
    v.credit_at, v.credit_ts = r.kiosk_id, r.ts
    if r.kind == Kind.KEY_WRITTEN:
        v.credit_state = "written"
        v.credit_after = d.get("credit_after") if isinstance(d.get("credit_after"), int) else None
    elif r.kind == Kind.PENDING_WRITTEN:
        v.credit_state = "written_later"
        v.credit_after = d.get("credit_after") if isinstance(d.get("credit_after"), int) else None
    elif r.kind == Kind.PENDING_RELEASED:
        v.credit_state = "released"
    else:
        v.credit_state = "owed"
        if not v.credit and r.amount:
            v.credit = r.amount  # a credit head office gave to write: no split
    if v.written_by and v.credit_state in ("owed", "released"):
        v.credit_state = "written_later"  # head office's book has it written (report to come)
        v.credit_at = v.written_by


def _fault_text(d: dict[str, Any]) -> str:
    return str(d.get("text") or d.get("event") or "")


@dataclass
class Fault:
    device: str
    text: str
    opened: str
    cleared: str | None = None
    code: int | None = None
    escrow: int | None = None
    txid: str | None = None
    open: bool = True  # False: cleared, or followed by another fault of the device


def faults(rows: Sequence[Any]) -> list[Fault]:
    """A kiosk's fault entries, in order, as faults with the time each was cleared (the
    device's next `cleared` entry) or None while it is open. A fault said again while open is
    one fault."""
    out: list[Fault] = []
    open_: dict[str, Fault] = {}
    for r in sorted(rows, key=lambda r: r.seq):
        d = data_of(r)
        device = str(d.get("device") or "?")
        if d.get("cleared"):
            f = open_.pop(device, None)
            if f is not None:
                f.cleared, f.open = r.ts, False
            continue
        if device in open_ and open_[device].text == _fault_text(d):
            continue
        code = d.get("code") if isinstance(d.get("code"), int) else None
        escrow = d.get("escrow") if isinstance(d.get("escrow"), int) else None
        f = Fault(device, _fault_text(d), r.ts, None, code, escrow, r.txid)
        if device in open_:  # another fault of the same device: it stands for the first
            open_[device].open = False
        open_[device] = f
        out.append(f)
    return out


@dataclass
class Emptying:
    ts: str
    amount: int | None
    currency: str | None
    coins: int = 0
    notes: int = 0
    pieces: int = 0
    test_money: int = 0
    who: str = ""


def emptying(r: Any) -> Emptying:
    """A cash box emptying: its total, and of it coins and notes from its counts
    ({"coin:200": 3, "note:1000": 1}: pieces per medium and value in minor units)."""
    d = data_of(r)
    e = Emptying(r.ts, r.amount, r.currency, who=str(d.get("who") or ""))
    raw = d.get("counts")
    counts: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for name, n in counts.items():
        medium, _, value = str(name).partition(":")
        if not (value.isdigit() and isinstance(n, int)):
            continue
        e.pieces += n
        if medium == "note":
            e.notes += int(value) * n
        else:
            e.coins += int(value) * n
    tm = d.get("test_money")
    e.test_money = tm if isinstance(tm, int) and not isinstance(tm, bool) else 0
    return e


def by_txid(rows: Sequence[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        out[r.txid].append(r)
    return out
