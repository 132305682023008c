"""A transaction as a clerk reads it, a key or contract account with its debt and history, and
the changes to keys and debts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import and_, delete, func, insert, or_, select

from sync.console.common import Console, ConsoleError, Span, _audit
from sync.console.i18n import N_, VIA
from sync.console.views import by_txid, data_of, transaction
from sync.store.audit import row as stored
from sync.wire.protocol import EXPONENT, KEY_REASONS, amount_text, key_reason, minor_units

KEY_FIELDS = ("serial", "status", "reason", "note", "contract_account")
DEBT_FIELDS = ("contract_account", "amount", "currency")
OUTCOMES = {"completed": N_("completed: credit on the key"),
            "pending": N_("paid, credit owed to the key"),
            "reversed": N_("card payment given back, nothing charged"),
            "cancelled": N_("cancelled, nothing paid"),
            None: N_("still open")}  # fmt: skip
METHODS = {"cash": N_("cash"), "card": N_("card"), "office": N_("head office's credit")}
KEY_STATUS = {"active": N_("active"), "blocked": N_("blocked"),
              "not_activated": N_("not activated")}  # fmt: skip
REASONS = {"": N_("(none)"), "lost": N_("lost"), "stolen": N_("stolen"),
           "defective": N_("defective"), "replaced": N_("replaced"),
           "contract_ended": N_("contract ended"), "deposit_unpaid": N_("deposit unpaid"),
           "not_activated": N_("not activated"), "under_review": N_("under review")}  # fmt: skip
STEPS = {"fault": N_("device fault"), "write_failed": N_("writing the key failed"),
         "claim": N_("credit no payment backs (owed by the contract account)"),
         "card_reversed": N_("card payment given back"), "card_failed": N_("card refused"),
         "found_on_key": N_("the credit was found on the key already")}  # fmt: skip


@dataclass
class DebtView:
    """A contract account's debt: as set, what the automats collected since, and its
    history (settings, collections, claims), newest first."""

    account: str
    row: Any = None  # ref_debts
    set_at: str | None = None  # the newest audit row that may have set it
    set_how: str = ""  # "debt" (set by a person) or "import" (a billing file)
    collected: int = 0
    claimed: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def open(self) -> int | None:
        if self.row is None or self.set_at is None:
            return None
        return max(0, int(self.row.amount) - self.collected + self.claimed)


def _account_txs(conn: Any, account: str) -> dict[tuple[str, str], Any]:
    """(kiosk, txid) -> the tx_opened entry of every transaction opened for `account`."""
    from sync.store.tables import entries

    out = {}
    for r in conn.execute(select(entries).where(
            entries.c.kind == "tx_opened",
            entries.c.data.contains(account, autoescape=True))):  # fmt: skip
        if data_of(r).get("contract_account") == account:
            out[(r.kiosk_id, r.txid)] = r
    return out


def debt_of(conn: Any, account: str, span: Span) -> DebtView:
    """The debt of `account` and its history inside the span's days.

    ref_debts holds the debt as it was last set (by a person, or by the billing system's
    file); its `changed` column is a reference version, not a time, so the time it was set is
    taken from the audit: the newest row that may have set it, a debt set for this account
    (target "account N", through the command or the console) or a debts import (a billing
    file names the accounts it sets, the audit of an import does not). The automats'
    collections after that time are what whoever set it could not have counted: the amount
    still open is the debt as set, less those, plus the claims after it (credit on a key that
    no payment backs any more, which the automats add to the debt as they do). Where the
    newest row is an import that did not name this account, collections between the real
    setting and that import are not deducted: the open amount errs towards more, never
    towards less, and the page says from when it counts. With no audit row at all (a debt
    written before the audit said what it changed) nothing is deducted and the page says so.
    """
    from sync.store.tables import audit as audit_table
    from sync.store.tables import entries, ref_debts

    v = DebtView(account)
    v.row = conn.execute(select(ref_debts).where(
        ref_debts.c.contract_account == account)).first()  # fmt: skip
    a = audit_table.c
    set_rows = conn.execute(
        select(audit_table).where(or_(and_(a.action == "debt", a.target == f"account {account}"),
                                      and_(a.action == "import", a.target == "import debts")))
        .order_by(a.id.desc())
    ).all()  # fmt: skip
    if set_rows:
        v.set_at, v.set_how = set_rows[0].ts, set_rows[0].action
    since = v.set_at[:19] if v.set_at else None
    txs = _account_txs(conn, account)
    rows = conn.execute(select(entries).where(
        entries.c.txid.in_(sorted({txid for _k, txid in txs})),
        entries.c.kind.in_(("split", "claim", "card_reversed"))
    ).order_by(entries.c.ts, entries.c.seq)).all() if txs else []  # fmt: skip
    last_split: dict[tuple[str, str], Any] = {}
    history = []
    for r in rows:
        if (r.kiosk_id, r.txid) not in txs and r.kind == "split":
            continue  # another kiosk's transaction under the same id: not this account's
        d = data_of(r)
        if r.kind == "split":
            last_split[(r.kiosk_id, r.txid)] = (r, d)
        elif r.kind == "claim" or d.get("after_credit"):
            history.append({"ts": r.ts, "kind": "claim", "kiosk": r.kiosk_id, "txid": r.txid,
                            "amount": r.amount, "currency": r.currency})  # fmt: skip
    for r, d in last_split.values():
        debt = d.get("debt")
        if isinstance(debt, int) and debt > 0:
            history.append({"ts": r.ts, "kind": "collected", "kiosk": r.kiosk_id,
                            "txid": r.txid, "amount": debt, "currency": r.currency})  # fmt: skip
    currency = v.row.currency if v.row is not None else None
    for h in history:
        if since is not None and h["ts"] >= since and h["currency"] == currency:
            if h["kind"] == "collected":
                v.collected += h["amount"]
            else:
                v.claimed += h["amount"]
    for s in conn.execute(select(audit_table).where(
            a.action == "debt", a.target == f"account {account}")):  # fmt: skip
        before, after = _json(s.before), _json(s.after)
        history.append({"ts": s.ts, "kind": "set", "who": s.who, "via": s.via,
                        "before": before, "after": after})  # fmt: skip
    lo, hi = span.lo, span.hi
    v.history = sorted((h for h in history if (lo is None or h["ts"] >= lo)
                        and (hi is None or h["ts"] < hi)),
                       key=lambda h: h["ts"], reverse=True)  # fmt: skip
    return v


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def routes(c: Console, router: APIRouter) -> None:  # noqa: C901 (one route each)
    from sync.store.tables import credits, entries, ref_debts, ref_keys

    engine = c.engine
    labels: dict[str, Any] = {"outcomes": OUTCOMES, "methods": METHODS, "statuses": KEY_STATUS,
              "reason_names": REASONS, "steps": STEPS, "via": VIA}  # fmt: skip

    @router.get("/tx", response_class=HTMLResponse)
    def tx_page(request: Request, id: str = "") -> Response:  # noqa: A002
        txid = id.strip()
        if c.session(request) is None or not txid:
            return c.page(request, "tx.html", txid=txid, v=None, rows=[], **labels)
        with engine.connect() as conn:
            rows = conn.execute(select(entries).where(entries.c.txid == txid)
                                .order_by(entries.c.ts, entries.c.kiosk_id, entries.c.seq)
                                ).all()  # fmt: skip
            credit = conn.execute(select(credits).where(credits.c.credit_id == txid)).first()
        if not rows:
            return c.page(request, "tx.html", status=404, txid=txid, v=None, rows=[], **labels)
        v = transaction(txid, rows, credit)
        return c.page(request, "tx.html", txid=txid, v=v, rows=rows, **labels)

    @router.get("/key", response_class=HTMLResponse)
    def key_page(request: Request, q: str = "", since: str = Query("", alias="from"),
                 until: str = Query("", alias="to"), page: str = "1") -> Response:  # fmt: skip
        q = q.strip()
        if c.session(request) is None or not q:
            return c.page(request, "key.html", q=q, **labels)
        span = Span.of(since, until, page)
        with engine.connect() as conn:
            match = (ref_keys.c.serial == q) | (ref_keys.c.contract_account == q)
            keys = conn.execute(select(ref_keys).where(match).order_by(ref_keys.c.serial)).all()
            accounts = sorted({k.contract_account for k in keys if k.contract_account})
            if not any(k.serial == q for k in keys) and q not in accounts:
                accounts.insert(0, q)  # not a key's serial: a contract account
            debts = [debt_of(conn, a, span) for a in accounts]
            serials = sorted({k.serial for k in keys} | {q})
            held = conn.execute(select(credits).where(credits.c.key.in_(serials))
                                .order_by(credits.c.credit_id)).all()  # fmt: skip
            # the transactions of these keys, newest first, a page of them
            first = func.min(entries.c.ts).label("first")
            grouped = (select(entries.c.txid, first)
                       .where(entries.c.key.in_(serials), entries.c.txid.is_not(None))
                       .group_by(entries.c.txid)).subquery()  # fmt: skip
            inside = span.within(grouped.c.first)
            span.total = conn.execute(select(func.count()).select_from(grouped)
                                      .where(*inside)).scalar_one()  # fmt: skip
            page_ids = [r.txid for r in conn.execute(
                select(grouped.c.txid, grouped.c.first).where(*inside)
                .order_by(grouped.c.first.desc(), grouped.c.txid)
                .limit(span.per_page).offset(span.offset))]  # fmt: skip
            tx_rows = by_txid(conn.execute(select(entries).where(
                entries.c.txid.in_(page_ids))).all()) if page_ids else {}  # fmt: skip
        history = [transaction(t, tx_rows.get(t, [])) for t in page_ids]
        return c.page(request, "key.html", q=q, keys=keys, debts=debts, credits=held,
                      history=history, span=span, reasons=KEY_REASONS,
                      currencies=sorted(EXPONENT), **labels)  # fmt: skip

    @router.post("/key")
    def set_key(request: Request, serial: str = Form(...), status: str = Form(...),
                reason: str = Form(""), note: str = Form(""),
                csrf: str = Form("")) -> Response:  # fmt: skip
        from sync.store.tables import KEY_STATUSES, bump_version

        who = c.checked(request, csrf, "key")
        if status not in KEY_STATUSES:
            raise ConsoleError(422, N_("Status {status} is not one of {statuses}."),
                               status=repr(status), statuses=", ".join(KEY_STATUSES))
        try:
            key_reason(reason)
        except ValueError:
            raise ConsoleError(422, N_("Reason {reason} is not one of {reasons} (or none); a "
                                       "note for the staff goes in the note."),
                               reason=repr(reason), reasons=", ".join(KEY_REASONS[1:])) from None
        with engine.begin() as conn:
            row = conn.execute(select(ref_keys).where(ref_keys.c.serial == serial)).first()
            if row is None:
                raise ConsoleError(404, N_("No key {serial} is known."), serial=serial)
            conn.execute(ref_keys.update().where(ref_keys.c.serial == serial)
                         .values(status=status, reason=reason, note=note, changed=None))
            bump_version(conn)
            now = conn.execute(select(ref_keys).where(ref_keys.c.serial == serial)).first()
            said = f"{reason or 'no reason'}; {note}"
            _audit(conn, who.name, "key", f"{serial}: {row.status} -> {status} ({said})",
                  target=f"key {serial}", before=stored(row, *KEY_FIELDS),
                  after=stored(now, *KEY_FIELDS))  # fmt: skip
        return RedirectResponse(f"/console/key?q={_q(serial)}", status_code=303)

    @router.post("/debt")
    def set_debt(request: Request, account: str = Form(...), amount: str = Form(...),
                 currency: str = Form("EUR"), csrf: str = Form("")) -> Response:  # fmt: skip
        from sync.store.tables import bump_version

        who = c.checked(request, csrf, "debt")
        account = account.strip()
        if not account:
            raise ConsoleError(422, N_("Which contract account? None was given."))
        if currency not in EXPONENT:
            raise ConsoleError(422, N_("Currency {currency} is not one of {currencies}."),
                               currency=repr(currency), currencies=", ".join(EXPONENT))
        try:
            minor = minor_units(amount, currency, comma=who.lang == "de")
        except ValueError:
            example = "12,50" if who.lang == "de" else "12.50"
            raise ConsoleError(422, N_("{amount} is not an amount in {currency}: write it as "
                                       "{example}."), amount=repr(amount.strip()),
                               currency=currency, example=example) from None  # fmt: skip
        with engine.begin() as conn:
            was = conn.execute(select(ref_debts).where(
                ref_debts.c.contract_account == account)).first()  # fmt: skip
            conn.execute(delete(ref_debts).where(ref_debts.c.contract_account == account))
            conn.execute(insert(ref_debts).values(contract_account=account, amount=minor,
                                                  currency=currency))  # fmt: skip
            bump_version(conn)
            now = conn.execute(select(ref_debts).where(
                ref_debts.c.contract_account == account)).first()  # fmt: skip
            before = amount_text(was.amount, was.currency) if was else "none"
            _audit(conn, who.name, "debt", f"{account}: {before} -> {amount_text(minor, currency)}",
                  target=f"account {account}", before=stored(was, *DEBT_FIELDS),
                  after=stored(now, *DEBT_FIELDS))  # fmt: skip
        return RedirectResponse(f"/console/key?q={_q(account)}", status_code=303)


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
