"""The credit book: which credit exists, who may write it, and when it was written, decided
from facts head office can check (README: "Head office decides each credit")."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import (
    case,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from sync.store.tables import alarm, alarm_once, credit_grants, credits, entries, key_writes

#: what a customer paid for a transaction (a pending credit of it must not exceed it)
PAID_KINDS = ("cash_in", "card_approved")


def credit_out(r: Any) -> dict[str, Any]:
    return {
        "credit_id": r.credit_id,
        "key": r.key,
        "amount": r.amount,
        "currency": r.currency,
        "origin": r.origin,
        # the key's write number below which it cannot be on the key: a kiosk writes it only
        # where the key's log reaches back above it (None: no bound known)
        "bound": r.bound,
    }


def own_txid(kiosk_id: str, txid: str) -> bool:
    """Is `txid` an id this kiosk makes (`KIOSK-yymmdd-n`)? No kiosk opens a credit under
    another's id: ids are predictable, and the first to upload one would own it."""
    return re.fullmatch(re.escape(kiosk_id) + r"-\d{6}-\d+", txid) is not None


def granted(conn: Any, credit: Any, kiosk_id: str) -> bool:
    """Was this credit ever given to `kiosk_id` to write (its origin, its holder, a grant)?"""
    if kiosk_id in (credit.origin, credit.holder):
        return True
    return conn.execute(
        select(credit_grants.c.kiosk_id).where(credit_grants.c.credit_id == credit.credit_id,
                                               credit_grants.c.kiosk_id == kiosk_id)
    ).first() is not None  # fmt: skip


def said_given(conn: Any, kiosk_id: str, txid: str) -> bool:
    """Does the kiosk's own journal say the credit was given to it (its pending credit of it)?
    Head office restored from a backup lost the grants made since; the kiosk's journal, sent
    again, still says so. Its close is only its word then: it stands once the key shows it
    (a close by a kiosk that did not take the money is checked on the key's log)."""
    return conn.execute(
        select(entries.c.seq).where(entries.c.kiosk_id == kiosk_id, entries.c.txid == txid,
                                    entries.c.kind == "pending_credit").limit(1)
    ).first() is not None  # fmt: skip


def grant(conn: Any, credit_ids: list[str], kiosk_id: str) -> None:
    """Remember that these credits were given to `kiosk_id` (it may say it wrote them)."""
    if not credit_ids:
        return
    had = set(conn.execute(select(credit_grants.c.credit_id).where(
        credit_grants.c.kiosk_id == kiosk_id, credit_grants.c.credit_id.in_(credit_ids))
    ).scalars())  # fmt: skip
    new = [{"credit_id": c, "kiosk_id": kiosk_id} for c in credit_ids if c not in had]
    if new:
        conn.execute(insert(credit_grants), new)


def reopen(conn: Any, credit_id: str) -> None:
    """A close the key contradicts is undone: the credit is open again, held by no kiosk (the
    key's log, checked from the credit's bound, keeps it from being written twice)."""
    conn.execute(
        update(credits).where(credits.c.credit_id == credit_id)
        .values(written_by=None, write_no=None, lease_until=None, claim_id=None,
                # a credit given to one kiosk stays with it (no claim may take it)
                holder=case((credits.c.pinned.is_(True), credits.c.holder), else_=None))
    )  # fmt: skip


def reopen_contradicted(conn: Any, kiosk_id: str, key: str, written: int,
                        refused: list[dict[str, Any]]) -> bool:  # fmt: skip
    """The key is at a kiosk with `written` writes: a credit reported written on it as a
    later write was not written (a kiosk said so without the key): open it again, and alarm.
    True if one was."""
    said = conn.execute(
        select(credits.c.credit_id, credits.c.written_by, credits.c.write_no,
               credits.c.confirmed).where(
            credits.c.key == key, credits.c.written_by.is_not(None), credits.c.write_no > written)
    ).all()  # fmt: skip
    reopened = False
    for cid, by, no, confirmed in said:
        if confirmed:  # its origin's close, or one the key showed: a claim's word does not undo it
            alarm_once(conn, kiosk_id, None, f"kiosk {kiosk_id} says key {key} has {written} "
                       f"writes, but credit {cid} was written as its write {no}")  # fmt: skip
            continue
        reopen(conn, cid)
        reopened = True
        alarm(conn, kiosk_id, None, f"credit {cid} was reported written by {by} as write {no} "
              f"of key {key}, which has {written} writes: opened again", refused)  # fmt: skip
    # (the writes reported above `written` stay: a claim is only a kiosk's word, and the
    # first report of a number stands against later ones)
    return reopened


def record_write(conn: Any, kiosk_id: str, r: dict[str, Any], write_no: int,
                 refused: list[dict[str, Any]]) -> tuple[bool, bool]:  # fmt: skip
    """A kiosk wrote transaction `r["txid"]` onto key `r["key"]` as its write `write_no`. The
    first report of a number stands; another transaction reported at the same number is an
    alarm, and a credit closed there by a kiosk that did not take its money is opened again
    (one of the two reports is false). (whether the report conflicts, whether a credit was
    opened again)."""
    key, txid = r["key"], r["txid"]
    dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    row = {"key": key, "write_no": write_no, "txid": txid, "kiosk_id": kiosk_id, "seq": r["seq"]}
    if dialect is not None:  # two kiosks reporting one number at once: the first stands
        conn.execute(dialect.insert(key_writes).values(**row).on_conflict_do_nothing())
    seen = conn.execute(select(key_writes).where(
        key_writes.c.key == key, key_writes.c.write_no == write_no)).first()  # fmt: skip
    if seen is None:  # (another database)
        conn.execute(insert(key_writes).values(**row))
        return False, False
    if seen.txid == txid:
        return False, False
    alarm(conn, kiosk_id, r["seq"], f"key {key}: write {write_no} reported as {seen.txid} by "
          f"{seen.kiosk_id} and as {txid} by {kiosk_id}", refused)  # fmt: skip
    doubtful = conn.execute(
        select(credits.c.credit_id).where(
            credits.c.credit_id.in_((seen.txid, txid)), credits.c.key == key,
            credits.c.write_no == write_no, credits.c.written_by != credits.c.origin)
    ).scalars().all()  # fmt: skip
    for cid in doubtful:
        reopen(conn, cid)
    return True, bool(doubtful)


def _int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if type(value) is int and 0 <= value <= 2**31 - 1 else None


def track_credits(
    conn: Any, kiosk_id: str, rows: list[dict[str, Any]], refused: list[dict[str, Any]]
) -> bool:
    """Keep the fleet's credit book from the entries just stored (in the same transaction):
    head office is the authority, and decides from facts it can check. A kiosk's pending
    credit opens a credit only under an id that kiosk makes, and only when that kiosk's own
    payments of the same transaction back it (0 < amount <= paid, same currency); it carries
    the key's write count from when it became owed (its bound) and is held by that kiosk until
    another claims it. Only a kiosk the credit was given to (its origin, a holder, a claim's
    grant) closes it (`pending_written`), and a kiosk other than its origin only with the key's
    write number, which the key checks at its next claim. A lease ends when its holder reports
    the write failed. What is refused stays in the kiosk's journal copy, changes no credit,
    and raises an alarm (`refused`, and the alarms table). True if the book changed."""
    changed = False
    for r in rows:
        kind = r["kind"]
        if kind not in ("pending_credit", "pending_written", "key_written", "write_failed"):
            continue
        data = json.loads(r["data"]) if r["data"] else {}
        if kind == "pending_credit" and r["key"] and r["txid"] and r["amount"]:
            # (0: only a check of the key, for a payment given back; no credit to open)
            changed = open_credit(conn, kiosk_id, r, data, refused) or changed
        elif kind == "pending_written" and r["txid"]:
            changed = close_credit(conn, kiosk_id, r, data, refused) or changed
        elif kind == "key_written" and r["txid"] and r["key"]:
            write_no = _int(data, "write_no")
            if write_no is not None:
                changed = record_write(conn, kiosk_id, r, write_no, refused)[1] or changed
        elif kind == "write_failed" and r["txid"]:  # the holder could not: lease ends
            done = conn.execute(
                update(credits)
                .where(credits.c.credit_id == r["txid"], credits.c.holder == kiosk_id,
                       credits.c.written_by.is_(None), credits.c.lease_until.is_not(None))
                .values(lease_until=None)
            )  # fmt: skip
            changed = changed or done.rowcount > 0
    return changed


def open_credit(conn: Any, kiosk_id: str, r: dict[str, Any], data: dict[str, Any],
                refused: list[dict[str, Any]]) -> bool:  # fmt: skip
    """A kiosk's pending credit: a new credit in the book, or one it was given (nothing new)."""
    txid = r["txid"]
    known = conn.execute(select(credits).where(credits.c.credit_id == txid)).first()
    if known is not None:
        if not granted(conn, known, kiosk_id):  # another's credit, never given to it
            alarm(conn, kiosk_id, r["seq"], f"pending credit {txid} refused: it is "
                  f"{known.origin}'s credit, never given to {kiosk_id}", refused)  # fmt: skip
        elif known.key != r["key"] or known.amount < r["amount"]:
            alarm(conn, kiosk_id, r["seq"], f"pending credit {txid} refused: the book has it "
                  f"for key {known.key}, {known.amount}", refused)  # fmt: skip
        return False
    if not own_txid(kiosk_id, txid):
        alarm(conn, kiosk_id, r["seq"], f"pending credit {txid} refused: not an id kiosk "
              f"{kiosk_id} makes ({kiosk_id}-yymmdd-n)", refused)  # fmt: skip
        return False
    why = unbacked(conn, kiosk_id, r)
    if why:
        alarm(conn, kiosk_id, r["seq"], f"pending credit {txid} refused: {why}", refused)
        return False
    bound = _int(data, "key_written")
    conn.execute(
        insert(credits).values(
            credit_id=txid, key=r["key"], amount=r["amount"], currency=r["currency"],
            origin=kiosk_id, holder=kiosk_id,
            # a kiosk that did not say the key's count: only a key whose log reaches back to
            # its first write can show the credit is not on it
            bound=0 if bound is None else bound,
        )
    )  # fmt: skip
    grant(conn, [txid], kiosk_id)
    return True


def close_credit(conn: Any, kiosk_id: str, r: dict[str, Any], data: dict[str, Any],
                 refused: list[dict[str, Any]]) -> bool:  # fmt: skip
    """A kiosk says it wrote a credit (or found it on the key)."""
    txid = r["txid"]
    credit = conn.execute(select(credits).where(credits.c.credit_id == txid)).first()
    if credit is None:
        return False  # not a head-office credit (a kiosk's own check of a key)
    found, write_no = bool(data.get("found_on_key")), _int(data, "write_no")
    if data.get("not_on_key"):
        return False  # a check that found nothing: no credit is closed by it
    if not granted(conn, credit, kiosk_id) and not said_given(conn, kiosk_id, txid):
        alarm(conn, kiosk_id, r["seq"], f"credit {txid} was never given to {kiosk_id}: only "
              "a kiosk it was given to closes it", refused)  # fmt: skip
        return False
    conflict = reopened = False
    if write_no is not None and r["key"]:
        conflict, reopened = record_write(conn, kiosk_id, r, write_no, refused)
    if credit.written_by is not None:
        if credit.written_by != kiosk_id and not found:
            alarm(conn, kiosk_id, r["seq"], f"credit {txid} reported written by {kiosk_id} "
                  f"after {credit.written_by} wrote it: key {credit.key} may hold it twice",
                  refused)  # fmt: skip
        return reopened
    if conflict and kiosk_id != credit.origin:
        # another transaction was reported at that write: a kiosk that did not take the money
        # does not close it against that (its origin, which took the money, does)
        return reopened
    if kiosk_id != credit.origin and write_no is None:
        alarm(conn, kiosk_id, r["seq"], f"credit {txid} not closed: {kiosk_id} did not say "
              "which write of the key it was", refused)  # fmt: skip
        return reopened
    conn.execute(
        update(credits)
        .where(credits.c.credit_id == txid, credits.c.written_by.is_(None))
        .values(written_by=kiosk_id, holder=kiosk_id, lease_until=None, write_no=write_no,
                confirmed=kiosk_id == credit.origin)
    )  # fmt: skip
    return True


def unconfirmed(conn: Any, kiosk_id: str, key: str) -> list[int]:
    """The write numbers of the key's credits closed by a kiosk that did not take the money
    (other than `kiosk_id`) that the key has not shown yet: a claim asks for its log."""
    return sorted(set(conn.execute(
        select(credits.c.write_no).where(
            credits.c.key == key, credits.c.written_by.is_not(None),
            credits.c.written_by != kiosk_id, credits.c.confirmed.is_(False),
            credits.c.write_no.is_not(None))
    ).scalars()))  # fmt: skip


def check_closes(conn: Any, kiosk_id: str, key: str, written: int, log: list[tuple[int, str]],
                 refused: list[dict[str, Any]]) -> bool:  # fmt: skip
    """The key's log as a kiosk other than the writer read it (write number, transaction):
    each unconfirmed close of the key is confirmed where the log shows it at its number, and
    opened again (with an alarm) where the log shows another transaction there, or no longer
    reaches back to it (it cannot be confirmed any more). True if one was opened again."""
    seen = dict(log)
    oldest = min(seen, default=written + 1)
    rows = conn.execute(
        select(credits.c.credit_id, credits.c.written_by, credits.c.write_no).where(
            credits.c.key == key, credits.c.written_by.is_not(None),
            credits.c.written_by != kiosk_id, credits.c.confirmed.is_(False),
            credits.c.write_no.is_not(None))
    ).all()  # fmt: skip
    reopened = False
    for cid, by, no in rows:
        if seen.get(no) == cid:
            conn.execute(update(credits).where(credits.c.credit_id == cid).values(confirmed=True))
            continue
        if no > written:
            continue  # reopen_contradicted says so already
        if no not in seen:  # the log no longer reaches it: for the operator to decide
            alarm_once(conn, kiosk_id, None, f"credit {cid} was reported written by {by} as "
                       f"write {no} of key {key}, which its log no longer shows (it begins at "
                       f"write {oldest}): not confirmed")  # fmt: skip
            continue
        reopen(conn, cid)
        alarm(conn, kiosk_id, None, f"credit {cid} was reported written by {by} as write {no} "
              f"of key {key}: the key shows {seen[no]} there; opened again", refused)  # fmt: skip
        reopened = True
    return reopened


def unbacked(conn: Any, kiosk_id: str, r: dict[str, Any]) -> str | None:
    """Why a kiosk's new pending credit is not backed by its own payments (None: it is)."""
    paid = conn.execute(
        select(entries.c.kind, entries.c.currency, func.coalesce(func.sum(entries.c.amount), 0))
        .where(entries.c.kiosk_id == kiosk_id, entries.c.txid == r["txid"],
               entries.c.kind.in_((*PAID_KINDS, "card_reversed")))
        .group_by(entries.c.kind, entries.c.currency)
    ).all()  # fmt: skip
    total: dict[str, int] = {}
    for kind, cur, amount in paid:  # what was paid, less what went back to the card
        total[cur] = total.get(cur, 0) + (-1 if kind == "card_reversed" else 1) * int(amount)
    if not total:
        return "no payment of this kiosk backs it"
    if r["currency"] not in total or len(total) > 1:
        return f"paid in {', '.join(sorted(total))}, credit in {r['currency']}"
    if not 0 < r["amount"] <= total[r["currency"]]:
        return f"{r['amount']} is more than the {total[r['currency']]} paid"
    return None

