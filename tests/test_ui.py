"""The customer screen, driven by synthetic touches on the real widgets under Xvfb."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.engine import Outcome
from kiosk.events import Kind
from kiosk.fakes import FakeKey
from kiosk.money import Money
from tests.conftest import make_site
from tests.uiharness import Customer


def E(minor: int) -> Money:
    return Money(minor, "EUR")


@pytest.fixture
def customer(ui_window: Any, tmp_path: Path) -> Iterator[Customer]:
    c = Customer(make_site(), tmp_path)
    yield c
    c.close()


def kinds(c: Customer, kind: Kind) -> list[Any]:
    return [e for e in c.journal.entries() if e.kind == kind]


def test_cash_top_up_with_a_returned_note(customer: Customer) -> None:
    c = customer
    assert c.shows("Bitte Schlüssel einstecken", "Bezahlen mit Münzen, Scheinen oder Bankkarte.")
    c.insert_key(FakeKey("K1", "4711", credit=1250))
    c.wait_screen("amount")
    assert c.shows("Guthaben auf Ihrem Schlüssel", "12,50 €", "Von 5,00 € bis 250,00 €")
    c.tap("preset", "20,00 €")
    c.wait_screen("method")
    assert c.shows("Wie möchten Sie bezahlen?", "Zu zahlen: 20,00 €")
    c.tap("cash")
    c.wait_screen("cash")
    assert c.notes.insert(E(1000))
    c.settle()
    assert c.shows("Bezahlt", "10,00 €", "Noch zu zahlen: 10,00 €")
    c.notes.insert(E(5000))  # more than is still needed: handed back
    c.settle()
    assert c.shows("wurde zurückgegeben", "noch bis zu 10,00 € einwerfen")
    assert [e.amount for e in kinds(c, Kind.CASH_IN)] == [E(1000)]  # the 50 was not taken
    assert c.notes.insert(E(1000))
    c.wait_screen("done")
    assert c.shows("Fertig. Ihr neues Guthaben:", "32,50 €", "Auf Ihren Schlüssel geladen 20,00 €")
    assert c.model.view.outcome == Outcome.COMPLETED


def test_card_top_up(customer: Customer) -> None:
    c = customer
    c.insert_key(FakeKey("K1", "4711"))
    c.wait_screen("amount")
    for digit in "35":
        c.tap("digit", digit)
    assert c.shows("35,00 €")
    c.tap("ok")
    c.wait_screen("method")
    c.tap("card")
    c.wait_screen("done")
    assert c.shows("35,00 €") and c.model.view.outcome == Outcome.COMPLETED
    assert [e.amount for e in kinds(c, Kind.CARD_APPROVED)] == [E(3500)]


def test_card_declined_then_cash(customer: Customer) -> None:
    c = customer
    c.card.script.append("decline")
    c.insert_key(FakeKey("K1", "4711"))
    c.wait_screen("amount")
    c.tap("preset", "10,00 €")
    c.tap("card")
    c.wait_screen("method")
    assert c.shows("Die Kartenzahlung wurde abgelehnt")
    c.tap("cash")
    c.wait_screen("cash")
    assert c.notes.insert(E(1000))
    c.wait_screen("done")
    assert c.model.view.outcome == Outcome.COMPLETED and c.reader.key is not None
    assert c.reader.key.credit == 1000


def test_a_blocked_key_says_why_and_where_to_go(customer: Customer) -> None:
    c = customer
    c.insert_key(FakeKey("K2", "4712"))
    c.wait_screen("refused")
    assert c.shows("Dieser Schlüssel ist gesperrt", "Grund: lost", c.site.utility_office)
    assert not c.buttons("cash") and not kinds(c, Kind.TX_OPENED)
    assert c.coin.insert(E(200)) is False  # nothing is accepted


def test_key_pulled_during_writing_then_put_back(customer: Customer) -> None:
    c = customer
    key = FakeKey("K1", "4711")
    c.reader.fail_next = "tear_before_commit"  # the key leaves while the credit is written
    c.insert_key(key)
    c.wait_screen("amount")
    c.tap("preset", "10,00 €")
    c.tap("cash")
    assert c.notes.insert(E(1000))
    c.wait_screen("key_missing")
    assert c.shows("Bitte stecken Sie Ihren Schlüssel wieder ein", "Ihr Geld ist sicher.")
    c.insert_key(key)
    c.wait_screen("done")
    assert key.credit == 1000 and c.model.view.outcome == Outcome.COMPLETED


def test_inactivity_with_money_inserted_loses_nothing(customer: Customer) -> None:
    c = customer
    key = FakeKey("K1", "4711")
    c.insert_key(key)
    c.tap("preset", "20,00 €")
    c.tap("cash")
    assert c.coin.insert(E(200))
    c.settle()
    c.clock.advance(c.site.timeouts.payment - c.site.timeouts.warning + 1)
    c.until(lambda: c.root.warning, "the inactivity warning")
    assert c.shows("Brauchen Sie mehr Zeit?")
    c.tap("more_time")
    c.until(lambda: not c.root.warning, "the warning to go away")
    c.clock.advance(c.site.timeouts.payment + 1)  # walked away with 2.00 paid
    c.wait_screen("done")
    assert key.credit == 200 and c.model.view.outcome == Outcome.COMPLETED
    assert sum(e.amount.minor for e in kinds(c, Kind.CASH_IN)) == 200


def test_language_switch_mid_flow_and_reset_after(customer: Customer) -> None:
    c = customer
    c.insert_key(FakeKey("K1", "4711", credit=1250))
    c.wait_screen("amount")
    c.tap("lang_fr")
    assert c.shows("Crédit sur votre clé", "12,50 €", "Combien voulez-vous recharger ?")
    c.tap("lang_nl")
    assert c.shows("Tegoed op uw sleutel", "€ 12,50")
    c.tap("preset", "€ 10,00")
    c.tap("cash")
    assert c.shows("Werp munten of biljetten in")
    c.tap("cancel")  # nothing paid yet: back to the amount
    c.wait_screen("amount")
    assert c.shows("Hoeveel wilt u opladen?", "Van € 5,00 tot € 250,00")
    c.tap("cancel")
    c.wait_screen("done")
    assert c.shows("Geannuleerd")
    c.remove_key()
    c.wait_screen("idle")
    assert c.shows("Bitte Schlüssel einstecken") and c.model.lang == "de"
