"""Every word a customer reads or hears is ours, in their language: every customer screen, in
every language, with every reason head office may give for a blocked key (and one it made up),
every notice (card results, with codes we know and one we do not), every status of the card
terminal (and its own words for one we do not know), every refused intent and device fault.
A word not in that language's catalogue output, the languages' own names or the site's proper
names fails the test, with the screen, the language and the word."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from drivers.zvt.codes import Intermediate
from kiosk.documents.i18n import LANGUAGES
from kiosk.domain.engine import Outcome, State, View
from kiosk.domain.errors import UserFacingError
from kiosk.domain.events import Account, Device, DeviceFault, KeyStatus
from kiosk.domain.money import Money
from kiosk.sim.fakes import FakeKey
from sync.wire.protocol import KeyReason
from tests.conftest import make_site
from tests.uiharness import Customer
from tests.vocabulary import foreign

#: a reason code this automat does not know (a newer head office's)
MADE_UP = "moved_abroad"


@pytest.fixture
def shown(ui_window: Any, tmp_path: Path) -> Iterator[tuple[Customer, dict[str, View]]]:
    """A kiosk and one real view of each customer screen, taken from flows through it."""
    c = Customer(make_site(), tmp_path)
    views: dict[str, View] = {}

    def keep(view: View, _refusal: object) -> None:
        views.setdefault(str(view.state), view)

    c.kiosk.listeners.append(keep)
    c.insert_key(FakeKey("K1", "4711", credit=1250))
    c.tap("preset", "20,00 €")
    c.tap("cash")
    assert c.coin.insert(Money(200, "EUR"))
    c.settle()
    c.reader.remove()
    c.wait_screen("key_missing")
    c.insert_key(FakeKey("K1", "4711", credit=1250))
    assert c.notes.insert(Money(1000, "EUR"))
    for _ in range(4):
        assert c.coin.insert(Money(200, "EUR"))
    c.wait_screen("done")
    views["done"] = c.model.view
    c.remove_key()
    c.wait_screen("idle")
    c.card.script = ["hold"]
    c.insert_key(FakeKey("K1", "4711"))
    c.tap("preset", "20,00 €")
    c.tap("card")
    c.until(lambda: c.model.view.card_status is not None, "the terminal's status")
    views["card"] = c.model.view
    c.card.release("approve")
    c.wait_screen("done")
    c.remove_key()
    c.wait_screen("idle")
    c.insert_key(FakeKey("K2", "4712"))
    c.wait_screen("refused")
    c.remove_key()
    for device in (Device.COIN, Device.NOTES, Device.CARD):
        c.kiosk.submit(DeviceFault(device, text="hopper motor stalled (E-17)"))
    c.wait_screen("unavailable")
    c.kiosk.listeners.remove(keep)
    c.kiosk.listeners.remove(c.model.post)  # from here the test shows its own views
    yield c, views
    c.close()


def variants(views: dict[str, View]) -> Iterator[tuple[str, View, UserFacingError | None]]:
    from kiosk.ui.root import NOTICES, REFUSALS
    from kiosk.ui.screens.refused import REASONS

    for name, view in views.items():
        yield name, view, None
    refused = views[str(State.KEY_REFUSED)]
    for refusal in REASONS:
        yield f"refused {refusal}", replace(refused, refusal=refusal), None
    assert refused.account is not None
    for code in [*(r.value for r in KeyReason), "", MADE_UP]:
        account = Account(KeyStatus.BLOCKED, refused.account.debt, code)
        yield (
            f"blocked, reason {code!r}",
            replace(refused, refusal="blocked", account=account),
            None,
        )
    cash = views[str(State.CASH)]
    for notice in NOTICES:
        for code in (None, 0x05, 0x71, 0x78, 0x64, 0x42):  # 0x42: a code we have no words for
            params = {"value": "20.00 EUR", "room": "10.00 EUR", "amount": "5.00 EUR", "code": code}
            yield (
                f"notice {notice} {code}",
                replace(cash, notice=notice, notice_params=params),
                None,
            )
    for key in REFUSALS:
        error = UserFacingError(key, minimum=Money(500, "EUR"), maximum=Money(25000, "EUR"),
                                step=Money(100, "EUR"))  # fmt: skip
        yield f"refused intent {key}", cash, error
    card = views[str(State.CARD)]
    for status in [*Intermediate, 0x99]:
        yield (f"card status {status!r}",
               replace(card, card_status=int(status), card_text="Insert card / Karte einstecken"),
               None)  # fmt: skip
    idle = views[str(State.IDLE)]
    yield "closed", replace(idle, state=State.CLOSED), None
    yield "reading", replace(idle, state=State.READING), None
    yield "writing", replace(cash, state=State.WRITING), None
    failed = replace(views[str(State.OUT_OF_SERVICE)], notice="failed",
                     notice_params={"paid": Money(700, "EUR"), "txid": "DEMO-01-1"})  # fmt: skip
    yield "out of order with money", failed, None
    done = views["done"]
    for outcome in Outcome:
        yield f"done {outcome}", replace(done, outcome=outcome), None


def test_every_word_on_every_customer_screen_is_in_its_language(
    shown: tuple[Customer, dict[str, View]],
) -> None:
    from kiosk.ui.speech import texts_of

    c, views = shown
    assert {str(s) for s in (State.IDLE, State.CHOOSING_AMOUNT, State.CHOOSING_METHOD,
                             State.CASH, State.CARD, State.KEY_MISSING, State.KEY_REFUSED,
                             State.OUT_OF_SERVICE)} <= set(views)  # fmt: skip
    problems: list[str] = []
    seen = 0
    for lang in LANGUAGES:
        for name, view, refusal in variants(views):
            c.model.post(view, refusal)
            c.until(lambda v=view: c.model.view == v, f"{name} on the screen")
            c.model.set_language(lang)  # (a screen at rest starts in the site's language)
            c.loop.idle()
            text = "\n".join([c.driver.texts(), *texts_of(c.root.ids.footer),
                              c.root.spoken()[0]])  # fmt: skip
            wrong = foreign(text, lang, c.site)
            if wrong:
                problems.append(f"{lang} {name}: {sorted(wrong)}\n    {text[:300]!r}")
            if "blocked" in name or "notice" in name or "card status" in name:
                assert MADE_UP not in text and "hopper" not in text and "Insert card" not in text
            seen += 1
    assert seen > 4 * 80
    assert problems == [], "\n".join(problems[:20])


def test_a_reason_this_automat_does_not_know_says_only_where_to_go(
    shown: tuple[Customer, dict[str, View]],
) -> None:
    c, views = shown
    refused = views[str(State.KEY_REFUSED)]
    assert refused.account is not None
    for lang, where in (("de", "Bitte wenden Sie sich an: "), ("en", "Please contact ")):
        account = Account(KeyStatus.BLOCKED, refused.account.debt, MADE_UP)
        view = replace(refused, refusal="blocked", account=account)
        c.model.post(view, None)
        c.until(lambda v=view: c.model.view == v, "the refused screen")
        c.model.set_language(lang)
        c.loop.idle()
        assert c.shows(where + c.site.utility_office) and MADE_UP not in c.driver.texts()


@pytest.mark.parametrize(
    ("lang", "why", "todo"),
    [
        ("de", "Er wurde als verloren gemeldet.", "lassen Sie ihn bitte entsperren"),
        ("en", "It was reported lost.", "to have it unblocked"),
        ("fr", "Elle a été déclarée perdue.", "faites-la débloquer"),
        ("nl", "Hij is als verloren gemeld.", "laat hem dan deblokkeren"),
    ],
)
def test_the_blocked_key_screen_says_why_and_where_to_go_in_each_language(
    shown: tuple[Customer, dict[str, View]], lang: str, why: str, todo: str
) -> None:
    c, views = shown
    refused = views[str(State.KEY_REFUSED)]  # K2: blocked at head office as lost
    assert refused.account is not None and refused.account.reason == "lost"
    c.model.post(refused, None)
    c.until(lambda: c.model.view == refused, "the refused screen")
    c.model.set_language(lang)
    c.loop.idle()
    assert c.shows(why, todo, c.site.utility_office), c.driver.texts()
    if lang != "en":
        assert "lost" not in c.driver.texts()  # head office's code is not shown
