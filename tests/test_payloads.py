"""The journal's typed payloads (sync/wire/protocol.py): one frozen type per entry kind, checked
strictly when an entry is written and tolerantly when one is read (by `journal verify` and by
head office); the release before this change still reads."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiosk.domain.errors import ChainBroken
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from sync.wire.client import Permanent
from sync.wire.protocol import PAYLOADS, SIGNS, CashIn, PayloadError, entry_hash, payload
from tests.conftest import ROOT, HeadOffice
from tests.test_journal import fill

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def test_every_kind_has_one_frozen_payload_type() -> None:
    assert set(PAYLOADS) == set(Kind) == set(SIGNS)
    for cls in PAYLOADS.values():
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    typed = payload(Kind.CASH_IN, {"medium": "coin", "channel": 3, "counter": 17})
    assert typed == CashIn(medium="coin", channel=3, counter=17)
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.medium = "note"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"medium": "coin", "chanel": 3}, "CashIn has no field chanel"),  # a writer's typo
        ({"medium": "coin", "channel": "3"}, "CashIn.channel is '3', not int"),
        ({"medium": "coin", "late": 1}, "CashIn.late is 1, not bool"),
        ({"channel": 3}, "CashIn needs medium"),
    ],
)
def test_a_bad_payload_is_not_written_and_nothing_changes(
    tmp_path: Path, data: dict[str, object], says: str
) -> None:
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    fill(j, 1)
    before = j.raw_entries()
    with pytest.raises(PayloadError, match=says):
        j.append(
            [
                Record(Kind.FAULT, data={"device": "coin"}),  # good, in the same commit
                Record(Kind.CASH_IN, "T9", "K1", Money(200, "EUR"), data),
            ],
            T0,
        )
    assert j.raw_entries() == before  # neither record: one commit, all or nothing
    assert j.verify() == len(before)


def test_an_amount_flag_is_not_an_int() -> None:
    with pytest.raises(PayloadError, match="Split.paid is True"):
        payload(Kind.SPLIT, {"paid": True, "fee": 0, "debt": 0, "credit": 0})


def _forge(path: Path, seq: int, data: dict[str, object]) -> None:
    """Rewrite entry `seq`'s data and re-chain every hash after it, as a tool that knows the
    chain could: only the payload check can tell."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, ts, kind, txid, key, amount, currency, data, prev_hash "
                          "FROM journal ORDER BY seq").fetchall()  # fmt: skip
        prev = None
        for s, ts, kind, txid, key, amount, currency, d, prev_hash in rows:
            prev = prev_hash if prev is None else prev
            if s == seq:
                d = json.dumps(data, sort_keys=True, separators=(",", ":"))
            h = entry_hash(prev, s, ts, kind, txid, key, amount, currency, d)
            db.execute("UPDATE journal SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                       (d, prev, h, s))  # fmt: skip
            prev = h
        db.execute("UPDATE journal_head SET hash = ?", (prev,))


def test_read_tolerates_a_field_an_older_kiosk_wrote_but_not_a_wrong_type(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    fill(j, 1)
    n = j.verify()
    _forge(j.path, 2, {"medium": "note", "channel": 2, "denomination_id": "EU1000A"})
    assert j.verify() == n  # a field since dropped: still reads
    _forge(j.path, 2, {"medium": "note", "channel": "two"})
    with pytest.raises(ChainBroken, match=r"entry 2.*CashIn.channel is 'two'"):
        j.verify()


def test_the_journal_and_head_office_of_the_release_before_read_as_typed_payloads() -> None:
    """Journals written before the payloads were typed: every entry reads as its kind's type."""
    release = ROOT / "tests" / "fixtures" / "release-d0ff24d"
    for db, table in (("journal-DEMO-01.sqlite", "journal"), ("headoffice.sqlite", "entries")):
        with sqlite3.connect(release / db) as conn:
            rows = conn.execute(f"SELECT kind, data FROM {table}").fetchall()  # noqa: S608
        assert len(rows) > 20
        kinds = {type(payload(kind, json.loads(data))) for kind, data in rows}
        assert len(kinds) > 6  # many kinds, each its own type


def test_head_office_refuses_an_entry_whose_payload_is_not_its_kinds(
    office: HeadOffice, tmp_path: Path
) -> None:
    """A kiosk (or a forger who can hash) sends a cash_in whose channel is text: head office's
    real server refuses the batch, naming the entry and the field, and stores nothing."""
    j = Journal(tmp_path / "j.sqlite", "DEMO-01")
    fill(j, 1)
    _forge(j.path, 2, {"medium": "note", "channel": "two"})
    with pytest.raises(Permanent) as err:
        office.client().upload(j.raw_entries())
    assert err.value.status == 422 and "entry 2: CashIn.channel is 'two'" in str(err.value)
    assert office.admin("count", "DEMO-01") == "0"


def test_a_reconciled_split_interrupted_again_closes_with_its_allocation_only(
    tmp_path: Path,
) -> None:
    """Found by the payload check: a crash right after reconciliation wrote its split (marked
    `reconciled`) repeated the whole split's data into the close, `reconciled` included, which
    a transaction's close does not carry; the second start could not close it."""
    from kiosk.domain.site import load_site
    from kiosk.ledger.reconcile import reconcile

    site = load_site(ROOT / "config" / "demo.toml")
    j = Journal(tmp_path / "j.sqlite", site.kiosk_id)
    e = Money(2000, "EUR")
    split = {"paid": 2000, "fee": 0, "fee_net": 0, "fee_vat": 0, "debt": 0, "credit": 2000,
             "reconciled": True}  # fmt: skip
    j.append([Record(Kind.TX_OPENED, "T1", "K1", None, {"method": "cash"}),
              Record(Kind.CASH_IN, "T1", "K1", e, {"medium": "note", "channel": 3}),
              Record(Kind.SPLIT, "T1", "K1", e, split)], T0)  # fmt: skip
    done = reconcile(j, site, T0)
    (closed,) = [r for r in done if r.kind == Kind.TX_CLOSED]
    assert closed.data["credit"] == 2000 and "reconciled" not in closed.data
    assert j.open_txids() == [] and j.verify() == len(j.raw_entries())


def test_receipts_print_from_a_journal_written_before_the_typed_payloads(tmp_path: Path) -> None:
    """The release's journal, upgraded: every closed transaction's receipt still renders, with
    the amount its payload says."""
    import shutil

    from kiosk.documents.receipt import to_text, transaction_receipt
    from kiosk.domain.site import load_site

    release = ROOT / "tests" / "fixtures" / "release-d0ff24d" / "journal-DEMO-01.sqlite"
    path = Path(shutil.copy(release, tmp_path / release.name))
    j = Journal(path, "DEMO-01")
    site = load_site(ROOT / "config" / "demo.toml")
    closed = [e for e in j.raw_entries() if e["kind"] == "tx_closed"]
    assert len(closed) >= 3
    checked = 0
    for e in closed:
        text = to_text(transaction_receipt(j, site, e["txid"]))
        closing = payload(Kind.TX_CLOSED, json.loads(e["data"]))
        paid = getattr(closing, "paid", None)
        if paid:
            whole, cents = divmod(paid, 100)
            assert f"{whole},{cents:02d}" in text or f"{whole}.{cents:02d}" in text, text
            checked += 1
    assert checked >= 3
    assert j.verify() == len(j.raw_entries())
