"""Spoken prompts: a customer who cannot see the screen tops up by ear, touching only the
corners the voice names; what each screen says; the voice never holds anything up."""

from __future__ import annotations

import threading
import time
import wave
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.adapters.voice import NoVoice, Voice, command_line, record
from kiosk.domain.engine import Outcome
from kiosk.domain.events import Kind
from kiosk.domain.money import Money
from kiosk.sim.fakes import FakeKey
from tests.conftest import make_site
from tests.uiharness import Customer


class Ears:
    """The voice as the customer hears it: every text, in its language."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    def say(self, text: str, lang: str) -> None:
        self.heard.append((text, lang))

    def stop(self) -> None:
        pass

    @property
    def last(self) -> str:
        return self.heard[-1][0] if self.heard else ""


class BlindCustomer:
    """Knows where the screen's corners are (the bezel), hears, inserts the key and money;
    never looks at the screen."""

    def __init__(self, c: Customer) -> None:
        self.c = c
        self.ears = Ears()
        self.mark = 0  # what was heard before this is old
        c.model.speaker.voice = self.ears
        w, h = c.window.size
        self.top_left, self.top_right, self.bottom_right = (
            (15, h - 15),
            (w - 15, h - 15),
            (w - 25, 25),
        )

    def touch(self, at: tuple[int, int], *, hold: bool = False) -> None:
        from kivy.tests.common import UnitTestTouch

        touch = UnitTestTouch(*at)
        touch.touch_down()
        self.c.loop.idle()
        if hold:  # held until the voice speaks (the speaker button's long press)
            said = len(self.ears.heard)
            self.c.until(lambda: len(self.ears.heard) > said, "the voice after a long press", 5)
        touch.touch_up()
        self.c.loop.idle()
        self.c.settle()

    def hears(self, words: str, timeout: float = 10.0) -> str:
        """Waits until the voice says `words` (in a text it said since the last one heard so);
        returns that text."""

        def said() -> str | None:
            return next((t for t, _lang in self.ears.heard[self.mark :] if words in t), None)

        self.c.until(
            lambda: said() is not None,
            f"to hear {words!r}; heard {self.ears.heard[self.mark :]!r}",
            timeout,
        )
        text = said()
        assert text is not None
        self.mark = (
            next(i for i, (t, _l) in enumerate(self.ears.heard) if i >= self.mark and t == text) + 1
        )
        return text

    def choose(self, label: str) -> None:
        """The top left corner until the voice says the choice, then the top right corner."""
        for _ in range(40):
            self.touch(self.top_left)
            if self.ears.last.endswith(f": {label}."):
                self.touch(self.top_right)
                return
        raise AssertionError(f"never heard the choice {label!r}: {self.ears.heard[-5:]}")


@pytest.fixture
def blind(ui_window: Any, tmp_path: Path) -> Iterator[BlindCustomer]:
    c = Customer(make_site(), tmp_path)
    yield BlindCustomer(c)
    c.close()


def test_a_customer_who_cannot_see_tops_up_with_cash_by_ear(blind: BlindCustomer) -> None:
    b, c = blind, blind.c
    assert not c.model.speaker.on and b.ears.heard == []  # the site's setting: on request
    b.touch(b.bottom_right, hold=True)  # press and hold the bottom right corner
    assert c.model.speaker.on
    b.hears("Bitte Schlüssel einstecken")
    c.insert_key(FakeKey("K1", "4711", credit=1250))
    prompt = b.hears("Wie viel möchten Sie aufladen?")
    assert "Guthaben auf Ihrem Schlüssel" in prompt and "12,50 €" in prompt
    assert "linke obere Ecke" in prompt  # how to hear the choices
    b.choose("20,00 €")
    b.hears("Wie möchten Sie bezahlen?")
    b.choose("Bargeld")
    b.hears("Noch zu zahlen: 20,00 €")
    assert c.notes.insert(Money(1000, "EUR"))
    brief = b.hears("Noch zu zahlen: 10,00 €")  # said briefly: what changed
    assert "Bitte Münzen" not in brief
    assert c.notes.insert(Money(1000, "EUR"))
    done = b.hears("Fertig. Ihr neues Guthaben:")
    assert "32,50 €" in done and "Bitte nehmen Sie Ihren Schlüssel" in done
    assert c.model.view.outcome == Outcome.COMPLETED
    assert [e.amount.minor for e in c.journal.entries() if e.kind == Kind.CASH_IN] == [1000, 1000]
    assert {lang for _t, lang in b.ears.heard} == {"de"}
    c.remove_key()
    c.wait_screen("idle")
    assert not c.model.speaker.on
    said = len(b.ears.heard)
    c.insert_key(FakeKey("K1", "4711", credit=3250))  # the next customer: silence
    c.wait_screen("amount")
    assert len(b.ears.heard) == said


def test_the_speaker_button_says_the_screen_again_and_its_long_press_turns_speech_off(
    blind: BlindCustomer,
) -> None:
    b, c = blind, blind.c
    b.touch(b.bottom_right)  # a touch: on, and the screen said
    assert c.model.speaker.on and b.ears.last.startswith("Bitte Schlüssel einstecken")
    b.touch(b.bottom_right)
    assert len(b.ears.heard) == 2 and b.ears.heard[0] == b.ears.heard[1]  # said again
    c.tap("lang_en")  # another language: the screen said in it
    assert b.ears.heard[-1] == (b.ears.last, "en") and b.ears.last.startswith("Insert your key")
    b.touch(b.bottom_right, hold=True)
    assert not c.model.speaker.on and b.ears.last == "Speech is off."
    said = len(b.ears.heard)
    b.touch(b.top_left)  # no speech bar now: nothing happens
    c.insert_key(FakeKey("K1", "4711"))
    c.wait_screen("amount")
    assert len(b.ears.heard) == said


def test_taking_before_hearing_a_choice_says_how_and_does_nothing(blind: BlindCustomer) -> None:
    b, c = blind, blind.c
    b.touch(b.bottom_right)
    c.insert_key(FakeKey("K1", "4711"))
    b.hears("Wie viel möchten Sie aufladen?")
    b.touch(b.top_right)
    assert b.ears.last == "Berühren Sie zuerst die linke obere Ecke, um eine Auswahl zu hören."
    assert c.screen == "amount"


def test_the_more_time_warning_is_said_once_and_the_top_right_corner_gives_more_time(
    blind: BlindCustomer,
) -> None:
    b, c = blind, blind.c
    b.touch(b.bottom_right)
    c.insert_key(FakeKey("K1", "4711"))
    b.hears("Wie viel möchten Sie aufladen?")
    t = c.site.timeouts
    c.clock.advance(t.choose - t.warning + 1)
    b.hears("Brauchen Sie mehr Zeit?")
    said, left = len(b.ears.heard), c.model.view.seconds_left
    c.clock.advance(2)  # the countdown goes on: not said every second
    c.until(lambda: c.model.view.seconds_left < left, "the countdown")
    c.settle()
    assert c.root.warning and len(b.ears.heard) == said
    b.touch(b.top_right)  # the warning's choice is the one the corner takes
    c.until(lambda: not c.root.warning, "more time given")
    assert c.screen == "amount"


def test_a_keypad_key_does_what_the_corners_do(blind: BlindCustomer) -> None:
    from kiosk.ui.speech import KEYS

    b, c = blind, blind.c
    keys = {what: code for code, what in KEYS.items()}
    assert c.model.speaker.key(keys["speaker"]) and c.model.speaker.on
    c.insert_key(FakeKey("K1", "4711"))
    b.hears("Wie viel möchten Sie aufladen?")
    c.model.speaker.key(keys["next"])
    assert b.ears.last.startswith("Auswahl 1 von ")
    c.model.speaker.key(keys["take"])
    c.wait_screen("method")
    assert not c.model.speaker.key(ord("a"))  # not a key of the keypad


def test_always_speaks_from_the_start_and_off_offers_no_speaker(
    ui_window: Any, tmp_path: Path
) -> None:
    c = Customer(make_site(ui={"speech": "always"}), tmp_path / "always")
    try:
        ears = Ears()
        c.model.speaker.voice = ears
        assert c.model.speaker.on
        c.insert_key(FakeKey("K1", "4711"))
        c.wait_screen("amount")
        assert "Wie viel möchten Sie aufladen?" in ears.last
        c.remove_key()
        c.wait_screen("idle")
        assert c.model.speaker.on  # stays on for the next customer
    finally:
        c.close()
    c = Customer(make_site(ui={"speech": "off"}), tmp_path / "off")
    try:
        ears = Ears()
        c.model.speaker.voice = ears
        assert c.buttons("speaker") == []  # no speaker button on the screen
        c.model.speaker.tap()
        c.insert_key(FakeKey("K1", "4711"))
        c.wait_screen("amount")
        assert ears.heard == [] and not c.model.speaker.on
    finally:
        c.close()


def test_a_speech_setting_that_is_not_one_is_refused() -> None:
    from kiosk.domain.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ui\.speech"):
        make_site(ui={"speech": "loud"})


# ------------------------------------------------------------------ the voice itself


def level(wav: Path) -> tuple[float, float]:
    """(seconds, RMS level of 16-bit samples) of a WAV file."""
    with wave.open(str(wav)) as w:
        assert w.getsampwidth() == 2
        samples = array("h", w.readframes(w.getnframes()))
        seconds = w.getnframes() / w.getframerate()
    rms = (sum(s * s for s in samples) / max(1, len(samples))) ** 0.5
    return seconds, rms


@pytest.mark.parametrize("lang", ["de", "en", "fr", "nl"])
def test_each_language_has_a_voice_that_makes_sound(lang: str, tmp_path: Path) -> None:
    wav = record("Zwanzig Euro. Twenty euros. Vingt euros. Twintig euro.", lang, tmp_path / "x.wav")
    seconds, rms = level(wav)
    assert seconds > 1.5 and rms > 500, (seconds, rms)
    assert "-v" in command_line("x", lang) and command_line("x", lang)[-1] == "x"


def test_a_language_without_a_voice_is_refused() -> None:
    with pytest.raises(ValueError, match="no voice for language 'it'"):
        command_line("Ciao", "it")


def test_saying_never_waits_and_the_newest_text_cuts_off_the_one_before(tmp_path: Path) -> None:
    """A voice that takes 30 s per text: `say` returns at once, and a new text stops it."""
    said = tmp_path / "said"
    slow = ["sh", "-c", f'echo "$0" >> {said}; exec sleep 30']
    voice = Voice(slow)
    try:
        t0 = time.monotonic()
        voice.say("first", "de")
        voice.say("second", "de")
        voice.say("third", "de")
        assert time.monotonic() - t0 < 0.05
        deadline = time.monotonic() + 10
        while not (said.exists() and "third" in said.read_text()):
            assert time.monotonic() < deadline, "the newest text was never said"
            threading.Event().wait(0.02)
        assert said.read_text().splitlines()[-1] == "third"
        assert voice._speaking is not None and voice._speaking.poll() is None  # speaking it
    finally:
        voice.close()
    assert voice._speaking is not None and voice._speaking.wait(5) is not None  # stopped


def test_without_espeak_ng_the_automat_works_on_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    import kiosk.adapters.voice as v

    monkeypatch.setattr(v, "COMMAND", "no-such-espeak")
    with pytest.raises(NoVoice, match="not installed"):
        command_line("Hallo", "de")
    voice = Voice()
    try:
        voice.say("Hallo", "de")
        voice.say("Hallo", "de")
        deadline = time.monotonic() + 5
        while not voice._failed:
            assert time.monotonic() < deadline
            threading.Event().wait(0.01)
        assert voice._thread.is_alive() and voice.spoken == 0
    finally:
        voice.close()


def test_the_voice_outlives_a_prompt_that_fails_unexpectedly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A prompt the voice's thread cannot start for a reason nobody foresaw (here a text that
    is no text: the process call raises TypeError) is logged; the next prompt is said."""
    said = tmp_path / "said"
    voice = Voice(["sh", "-c", f'echo "$0" >> {said}'])
    try:
        voice.say(123, "de")  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while "the voice failed on a prompt" not in caplog.text:
            assert time.monotonic() < deadline, "the failure was not logged"
            threading.Event().wait(0.02)
        voice.say("Hallo", "de")
        while not (said.exists() and "Hallo" in said.read_text()):
            assert time.monotonic() < deadline, "the voice died on the prompt before"
            threading.Event().wait(0.02)
        assert voice._thread.is_alive() and voice.spoken == 1
    finally:
        voice.close()


def test_the_chosen_receipt_answer_is_marked_by_a_tick_not_only_by_colour(
    ui_window: Any, tmp_path: Path
) -> None:
    import dataclasses

    from kivy.graphics import Color

    c = Customer(dataclasses.replace(make_site(), receipt="ask"), tmp_path)
    try:
        c.insert_key(FakeKey("K1", "4711"))
        c.tap("preset", "20,00 €")
        c.tap("cash")

        def tick(action: str) -> float:
            (button,) = c.buttons(action)
            colours = [i for i in button.canvas.after.children if isinstance(i, Color)]
            return float(colours[-1].a)

        assert (tick("receipt_yes"), tick("receipt_no")) == (1.0, 0.0)  # a receipt, unless...
        c.tap("receipt_no")
        assert (tick("receipt_yes"), tick("receipt_no")) == (0.0, 1.0)
    finally:
        c.close()
