"""What head office sends changes what the kiosk does: the engine behind a real server process.

Kiosks here are the real service with in-process devices (the device paths have their own
tests); head office is `sync.admin serve` on 127.0.0.1, steered through its admin CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

from kiosk.adapters.head_office import HeadOfficeLink, Syncer, SyncLoop
from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import ManualClock
from kiosk.domain.engine import Outcome, State
from kiosk.domain.errors import UserFacingError
from kiosk.domain.events import AmountChosen, KeyStatus, Kind, Method, MethodChosen
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import Journal
from kiosk.sim.fakes import FakeCoinAcceptor, FakeKey, FakeKeyReader, FakeNoteValidator, FakePrinter
from sync.wire.protocol import decimals
from tests.conftest import SATURDAY_MORNING, HeadOffice, make_site


def E(minor: int) -> Money:
    return Money(minor, "EUR")


class Automat:
    """One kiosk with its journal, in-process devices and its sync to head office."""

    def __init__(self, site: Site, tmp_path: Path, office: HeadOffice) -> None:
        self.journal = Journal(tmp_path / f"{site.kiosk_id}.sqlite", site.kiosk_id)
        self.reader = FakeKeyReader()
        self.notes = FakeNoteValidator(site.notes)
        devices = Devices(
            reader=self.reader,
            coin=FakeCoinAcceptor(site.coins),
            notes=self.notes,
            printer=FakePrinter(),
        )
        clock = ManualClock(SATURDAY_MORNING)
        self.sync = Syncer(self.journal, office.client(site.kiosk_id), currency=site.currency)
        link = HeadOfficeLink(self.sync, SyncLoop(self.sync, clock))  # rounds run by the test
        self.kiosk = Kiosk(site, self.journal, devices, clock, head_office=link)
        self.kiosk.drain()

    def round(self) -> None:
        status = self.sync.round(SATURDAY_MORNING)
        assert status.last_error is None, status.last_error
        self.kiosk.drain()

    def insert(self, key: FakeKey) -> State:
        self.reader.insert(key)
        self.kiosk.drain()
        return self.kiosk.view().state

    def remove(self) -> None:
        self.reader.remove()
        self.kiosk.drain()

    def pay_notes(self, amount: int) -> None:
        self.kiosk.submit(AmountChosen(E(amount)))
        self.kiosk.submit(MethodChosen(Method.CASH))
        self.kiosk.drain()
        assert self.notes.insert(E(amount))
        self.kiosk.drain()

    def kinds(self, kind: Kind) -> list[dict[str, object]]:
        return [
            {"txid": e.txid, "key": e.key, "amount": e.amount, **e.data}
            for e in self.journal.entries()
            if e.kind == kind
        ]


def test_a_key_blocked_at_head_office_is_refused_and_unblocked_it_is_served(
    office: HeadOffice, tmp_path: Path
) -> None:
    a = Automat(make_site(), tmp_path, office)
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    a.round()
    key = FakeKey("K1", "4711")
    assert a.insert(key) == State.CHOOSING_AMOUNT
    a.remove()
    office.admin("key", "K1", "--status", "blocked", "--account", "4711", "--reason", "stolen")
    a.insert(key)
    assert a.kiosk.view().state == State.CHOOSING_AMOUNT  # not synced yet: the kiosk cannot know
    a.remove()
    a.round()
    assert a.insert(key) == State.KEY_REFUSED
    refused = a.kinds(Kind.KEY_REFUSED)
    assert refused and refused[-1]["reason"] == "blocked" and refused[-1]["detail"] == "stolen"
    assert a.reader.writes == 0 and key.credit == 0
    a.remove()
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    a.round()
    assert a.insert(key) == State.CHOOSING_AMOUNT


def test_a_new_key_is_refused_until_head_office_activates_it(
    office: HeadOffice, tmp_path: Path
) -> None:
    a = Automat(make_site(), tmp_path, office)
    key = FakeKey("K9", "4799")
    assert a.insert(key) == State.KEY_REFUSED
    assert a.kinds(Kind.KEY_REFUSED)[-1]["reason"] == str(KeyStatus.UNKNOWN)
    a.remove()
    office.admin("key", "K9", "--status", "active", "--account", "4799")
    a.round()
    assert a.insert(key) == State.CHOOSING_AMOUNT


def test_a_debt_from_head_office_takes_its_share_of_the_top_up(
    office: HeadOffice, tmp_path: Path
) -> None:
    a = Automat(make_site(), tmp_path, office)
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    office.admin("debt", "4711", "7.00")
    a.round()
    key = FakeKey("K1", "4711")
    a.insert(key)
    a.pay_notes(2000)
    assert a.kiosk.view().outcome == Outcome.COMPLETED
    split = a.kinds(Kind.SPLIT)[-1]
    assert split["debt"] == 500 and key.credit == 1500  # 25 % of 20.00, the site's share
    # the repayment travels back: head office sees the split in the kiosk's entries
    a.round()
    assert int(office.admin("count", "DEMO-01")) == a.journal.last_seq()


def test_a_credit_left_at_one_kiosk_is_written_once_at_another(
    office: HeadOffice, tmp_path: Path
) -> None:
    a = Automat(make_site(), tmp_path, office)
    b = Automat(make_site(site={"kiosk_id": "OTHER-01"}), tmp_path, office)
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    a.round()
    b.round()
    key = FakeKey("K1", "4711")
    a.insert(key)
    a.reader.fail_next = "refuse"  # the key will not take the credit: money paid, owed
    a.pay_notes(2000)
    assert a.kiosk.view().outcome == Outcome.PENDING and key.credit == 0
    (owed,) = a.kinds(Kind.PENDING_CREDIT)
    a.remove()
    a.round()  # head office learns of the credit, held by A

    assert b.insert(key) == State.CHOOSING_AMOUNT  # B claimed it and wrote it first
    assert key.credit == 2000 and b.kinds(Kind.PENDING_WRITTEN)[-1]["txid"] == owed["txid"]
    b.remove()
    b.round()

    a.round()  # A hears the credit is no longer its own
    assert [r["txid"] for r in a.kinds(Kind.PENDING_RELEASED)] == [owed["txid"]]
    writes = a.reader.writes
    assert a.insert(key) == State.CHOOSING_AMOUNT  # nothing owed here any more
    assert a.reader.writes == writes and key.credit == 2000 and not a.kinds(Kind.PENDING_WRITTEN)


def test_a_credit_assigned_to_a_kiosk_is_written_there_offline(
    office: HeadOffice, tmp_path: Path
) -> None:
    a = Automat(make_site(), tmp_path, office)
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    office.admin("credit", "K1", "12.00", "--kiosk", "DEMO-01")
    a.round()
    a.sync.client.base = "http://127.0.0.1:9"  # the network is gone
    assert a.sync.round(SATURDAY_MORNING).last_error is not None
    key = FakeKey("K1", "4711")
    assert a.insert(key) == State.CHOOSING_AMOUNT
    assert key.credit == 1200 and len(a.kinds(Kind.PENDING_WRITTEN)) == 1


def test_an_unassigned_credit_needs_head_office_to_be_claimed(
    office: HeadOffice, tmp_path: Path
) -> None:
    a = Automat(make_site(), tmp_path, office)
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    a.round()
    credit_id = office.admin("credit", "K1", "8.00")
    url = a.sync.client.base
    a.sync.client.base = "http://127.0.0.1:9"  # offline: it may be claimed elsewhere
    a.sync.round(SATURDAY_MORNING)
    key = FakeKey("K1", "4711")
    a.insert(key)
    assert key.credit == 0 and not a.kinds(Kind.PENDING_CREDIT)
    a.remove()
    a.sync.client.base = url
    a.round()
    a.insert(key)
    assert key.credit == 800 and a.kinds(Kind.PENDING_WRITTEN)[-1]["txid"] == credit_id
    a.remove()
    a.insert(key)
    assert key.credit == 800  # once


def test_site_settings_from_head_office_change_the_limits_and_fee(
    office: HeadOffice, tmp_path: Path
) -> None:
    site = make_site()
    a = Automat(site, tmp_path, office)
    office.admin("key", "K1", "--status", "active", "--account", "4711")
    office.admin("setting", "max_topup", "30.00", "--kiosk", "DEMO-01")
    office.admin("setting", "fee_net", "1.00")  # fleet-wide
    office.admin("setting", "fee_vat_bp", "1900")
    a.round()
    assert a.kiosk.site.max_topup == E(3000) and a.kiosk.site.fee.gross == E(119)
    key = FakeKey("K1", "4711")
    a.insert(key)
    a.kiosk.submit(AmountChosen(E(5000)))
    refusals: list[UserFacingError | None] = []
    a.kiosk.listeners.append(lambda _v, r: refusals.append(r))
    a.kiosk.drain()
    assert refusals and refusals[-1] is not None and refusals[-1].message_key == "above_maximum"
    a.pay_notes(2000)
    assert a.kinds(Kind.SPLIT)[-1]["fee"] == 119 and key.credit == 2000 - 119
    # kept for a restart, with no network
    again = Kiosk(site, a.journal, Devices(reader=FakeKeyReader()), ManualClock(SATURDAY_MORNING))
    assert again.site.max_topup == E(3000)
    assert json.loads(a.journal.get_meta("sync_settings") or "{}")["max_topup"] == 3000


def test_settings_that_do_not_fit_together_are_refused_and_nothing_changes(
    office: HeadOffice, tmp_path: Path
) -> None:
    site = make_site()
    a = Automat(site, tmp_path, office)
    office.admin("setting", "min_topup", decimals(site.max_topup.minor + 500, "EUR"))
    a.round()
    assert a.kiosk.site.min_topup == site.min_topup and a.kiosk.site == site
