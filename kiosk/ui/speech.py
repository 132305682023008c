"""Spoken prompts: what each screen says, and how a customer who cannot see the screen uses it.

What a screen says is what it shows: the notice, every text on the screen in reading order (the
title, the credit on the key, what is still to pay, how the payment was split, what to do next),
then how many choices there are and how to reach them. While a screen is up, what changes on it
(a coin credited, a note given back, the card terminal's status) is said briefly.

How a customer uses it (also in the README):

- the **speaker button**, the bottom right corner of every screen: a touch turns speech on and
  says the screen again; held for 1.5 s it turns speech off (or on);
- while speech is on, a bar across the top of the screen: its **top left corner** says the next
  choice ("Choice 2 of 7: 20,00 €"), its **top right corner** takes the choice just heard;
- a tactile keypad (any USB keyboard): F12 or `*` is the speaker button, the down arrow or `+`
  the next choice, Enter the choice taken.

The corners can be found by touch on the bezel; nothing else needs to be seen. At the end of a
session speech goes back to the site's setting (`[ui] speech`: off, on_request, always).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from kivy.clock import Clock
from kivy.event import EventDispatcher
from kivy.properties import BooleanProperty, NumericProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.label import Label
from kivy.uix.widget import Widget

from kiosk.documents.i18n import N_, Translator
from kiosk.ui.widgets import MoneyPicture

#: how long the speaker button is held to turn speech off (or on)
HOLD_SECONDS = 1.5
#: the tactile keypad: Kivy key code -> what it does
KEYS = {293: "speaker", 42: "speaker", 274: "next", 43: "next", 13: "take", 271: "take"}

HOW_TO_CHOOSE = N_(
    "{count} choices. Touch the top left corner of the screen to hear the next one, "
    "the top right corner to take it."
)
ONE_CHOICE = N_(
    "One choice. Touch the top left corner of the screen to hear it, the top right corner "
    "to take it."
)
CHOICE = N_("Choice {number} of {count}: {label}.")
NO_CHOICE = N_("First touch the top left corner to hear a choice.")
SPEECH_OFF = N_("Speech is off.")


class Voice(Protocol):
    def say(self, text: str, lang: str) -> None: ...

    def stop(self) -> None: ...


def sentence(text: str) -> str:
    """A text as sentences: each of its lines (the screen's short labels, the split's lines)
    ends with a full stop for the voice's pause; a line without a letter or digit (a dash
    for an empty entry) is not said."""
    said = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if any(c.isalnum() for c in line):
            said.append(line if line[-1] in ".!?:…" else line + ".")
    return " ".join(said)


def in_reading_order(w: Widget, shown: bool = True) -> Iterator[tuple[Widget, bool]]:
    """`w` and what it holds, in the order the layout places them (Kivy keeps children newest
    first), each with whether it is drawn (not faded out, nor anything around it); not
    descending into buttons (a button is one choice with one label)."""
    shown = shown and getattr(w, "opacity", 1) >= 0.5
    yield w, shown
    if isinstance(w, ButtonBehavior | MoneyPicture):
        return
    for child in reversed(w.children):
        yield from in_reading_order(child, shown)


def texts_of(area: Widget) -> list[str]:
    """The texts a sighted customer reads in `area` (labels, and the coins and notes taken)."""
    return [
        w.text
        for w, shown in in_reading_order(area)
        if shown
        and isinstance(w, Label | MoneyPicture)
        and not isinstance(w, ButtonBehavior)
        and sentence(w.text)
    ]


def choices_of(area: Widget) -> list[tuple[str, Widget]]:
    """The buttons a customer can touch in `area`, with the words they show."""
    out = []
    for w, shown in in_reading_order(area):
        if not shown or isinstance(w, SpeakerButton) or not isinstance(w, ButtonBehavior):
            continue
        label = getattr(w, "text", "") or getattr(w, "name", "")
        if getattr(w, "action", "") and not w.disabled and label.strip():
            out.append((label, w))
    return out


class Speaker(EventDispatcher):  # type: ignore[misc]
    """Speech on or off, what the screen said last, and the choice the customer heard last.
    Lives on the UI thread; the voice speaks on its own."""

    on = BooleanProperty(False)
    current = StringProperty("")  # the choice heard last, shown in the speech bar
    said = NumericProperty(0)  # bumped with every text handed to the voice

    def __init__(self, mode: str, voice: Voice | None, tr: Translator, **kw: Any) -> None:
        super().__init__(**kw)
        if mode not in ("off", "on_request", "always"):
            raise ValueError(f"[ui] speech must be off, on_request or always, not {mode!r}")
        self.mode = mode
        self.voice = voice
        self.tr = tr
        self.prompt = ""  # what the current screen says in full
        self.compose: Any = None  # the screen's (prompt, texts, choices) now, when asked
        self.choices: list[tuple[str, Widget]] = []
        self._cursor: int | None = None
        self.on = mode == "always"

    @property
    def offered(self) -> bool:
        return self.mode != "off"

    # ------------------------------------------------------------- from the screen

    def screen(self, prompt: str, choices: list[tuple[str, Widget]], *, new: bool) -> None:
        """The screen's texts now; `new`: another screen (or language) than before."""
        self.choices = choices
        if new:
            self._cursor = None
            self.current = ""
        elif self._cursor is not None and self._cursor >= len(choices):
            self._cursor = None
        self.prompt = prompt
        if new:
            self._say(prompt)

    def change(self, text: str) -> None:
        """Something changed on the screen that is up: said briefly."""
        if text:
            self._say(text)

    def point_at(self, action: str) -> None:
        """Make this choice the one the top right corner takes (the "more time" warning)."""
        for i, (_label, w) in enumerate(self.choices):
            if getattr(w, "action", "") == action:
                self._cursor = i
                self.current = self.choices[i][0]

    def reset(self) -> None:
        """The session ended: back to the site's setting."""
        self.on = self.mode == "always"
        self._cursor = None
        self.current = ""
        if not self.on and self.voice is not None:
            self.voice.stop()

    # ------------------------------------------------------------- from the customer

    def tap(self) -> None:
        """The speaker button: speech on, and the screen said (again)."""
        if not self.offered:
            return
        self.on = True
        if self.compose is not None:  # (while speech was off, the screen did not keep it up)
            self.prompt, _texts, self.choices = self.compose()
        self._say(self.prompt)

    def hold(self) -> None:
        """The speaker button held: speech off, or on when it was off."""
        if not self.offered:
            return
        if self.on:
            self._say(self.tr(SPEECH_OFF))
            self.on = False
        else:
            self.tap()

    def next_choice(self) -> None:
        if not self.on or not self.choices:
            return
        self._cursor = 0 if self._cursor is None else (self._cursor + 1) % len(self.choices)
        label = self.choices[self._cursor][0]
        self.current = label
        n = len(self.choices)
        self._say(self.tr(CHOICE, number=self._cursor + 1, count=n, label=" ".join(label.split())))

    def take_choice(self) -> None:
        if not self.on:
            return
        if self._cursor is None:
            self._say(self.tr(NO_CHOICE))
            return
        _label, w = self.choices[self._cursor]
        self._cursor = None
        self.current = ""
        w.trigger_action(0)

    def key(self, keycode: int) -> bool:
        """A key of the tactile keypad; True if it was one."""
        what = KEYS.get(keycode)
        if what == "speaker":
            self.tap()
        elif what == "next":
            self.next_choice()
        elif what == "take":
            self.take_choice()
        return what is not None

    def how_to_choose(self, count: int) -> str:
        if count == 0:
            return ""
        return self.tr(ONE_CHOICE) if count == 1 else self.tr(HOW_TO_CHOOSE, count=count)

    def _say(self, text: str) -> None:
        if self.on and text and self.voice is not None:
            self.voice.say(text, self.tr.lang)
            self.said += 1


class SpeakerButton(ButtonBehavior, BoxLayout):  # type: ignore[misc]
    """The speaker in the bottom right corner: a touch says the screen, held it turns off."""

    name = StringProperty("")
    action = StringProperty("")
    speaker: Any = None

    def on_press(self) -> None:
        self._held = False
        self._holding = Clock.schedule_once(self._hold, HOLD_SECONDS)

    def _hold(self, _dt: float) -> None:
        self._held = True
        if self.speaker is not None:
            self.speaker.hold()

    def on_release(self) -> None:
        self._holding.cancel()
        if not self._held and self.speaker is not None:
            self.speaker.tap()


class SpeakerIcon(Widget):  # type: ignore[misc]
    """A loudspeaker with two sound waves (drawn in kv)."""
