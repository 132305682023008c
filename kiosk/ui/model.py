"""The screen's view-model: the engine's published state, the language and the theme.

The engine runs on its own thread and calls `post` after each journal commit; the view
reaches the Kivy thread through the clock (never the other way round). Intents go to the
engine's queue and return at once: the UI thread never waits on a device or the journal.
"""

from __future__ import annotations

import threading
from typing import Any

from kivy.clock import Clock
from kivy.event import EventDispatcher
from kivy.properties import BooleanProperty, NumericProperty, ObjectProperty, StringProperty

from kiosk.documents.i18n import LANGUAGES, Translator
from kiosk.domain.engine import RESTING, View
from kiosk.domain.errors import UserFacingError
from kiosk.domain.events import (
    AmountChosen,
    Cancel,
    Event,
    Finish,
    LanguageChosen,
    Method,
    MethodChosen,
    MoreTime,
    ReceiptAnswer,
)
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ui import setup
from kiosk.ui.speech import Speaker
from kiosk.ui.style import current as style
from kiosk.ui.theme import themes

#: states in which no customer is being served: the language and text size reset there


class ScreenModel(EventDispatcher):  # type: ignore[misc]
    view = ObjectProperty(None, allownone=True)
    refusal = ObjectProperty(None, allownone=True)  # the customer's last intent refused
    lang = StringProperty("de")
    high_contrast = BooleanProperty(False)
    theme = ObjectProperty(None)
    changes = NumericProperty(0)  # bumped whenever anything shown may change

    def __init__(self, site: Site, submit: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.site = site
        self._submit = submit
        self.tr = Translator(site.default_language)
        self.lang = site.default_language
        # the size the window was made (the screen's, fullscreen), else what [ui] says
        width, height = setup.screen_size or (site.ui.width, site.ui.height)
        self.normal, self.contrast = themes(width, height, site.ui.diagonal_inch)
        self.theme = style.theme = self.normal
        style.lang, style.high_contrast = self.lang, False
        self.speaker = Speaker(site.ui.speech, None, self.tr)  # its voice: KioskApp's
        self.speaker.bind(on=lambda _s, on: setattr(style, "speech", on))
        style.speech, style.speech_offered = self.speaker.on, self.speaker.offered
        self.clock: Any = None  # the kiosk's clock (for "we open again at ...")
        self.kiosk: Any = None  # the service screens' way to kiosk.service.diag
        self._lock = threading.Lock()
        self._pending: tuple[View, UserFacingError | None] | None = None

    def fit_screen(self, width: int, height: int) -> None:
        """Sizes for a screen of `width` x `height` pixels (targets stay 20 mm)."""
        self.normal, self.contrast = themes(width, height, self.site.ui.diagonal_inch)
        self.theme = style.theme = self.contrast if self.high_contrast else self.normal
        self.changes += 1

    # ------------------------------------------------------------- engine -> screen

    def post(self, view: View, refusal: UserFacingError | None) -> None:
        """From the engine thread: show this state on the next frame. Views are snapshots:
        several posted between two frames are drawn once, as the newest (a refusal among
        them is kept)."""
        with self._lock:
            _old, kept = self._pending or (None, None)
            self._pending = (view, refusal or kept)
        Clock.schedule_once(self._flush, -1)

    def _flush(self, _dt: float = 0) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._apply(*pending)

    def _apply(self, view: View, refusal: UserFacingError | None) -> None:
        before = self.view
        if before is not None and view.state in RESTING and before.state not in RESTING:
            self._reset_choices()  # the session ended: the next customer starts afresh
        self.refusal = refusal
        self.view = view
        self.changes += 1

    def _reset_choices(self) -> None:
        self.set_language(self.site.default_language)
        self.set_contrast(False)
        self.speaker.reset()

    # ------------------------------------------------------------- screen -> engine

    def send(self, event: Event) -> None:
        self.refusal = None
        self._submit(event)

    def choose_amount(self, minor: int | None) -> None:
        self.send(AmountChosen(None if minor is None else Money(minor, self.site.currency)))

    def choose_method(self, method: str) -> None:
        self.send(MethodChosen(Method(method)))

    def cancel(self) -> None:
        self.send(Cancel())

    def finish(self) -> None:
        self.send(Finish())

    def more_time(self) -> None:
        self.send(MoreTime())

    def answer_receipt(self, wanted: bool) -> None:
        self.send(ReceiptAnswer(wanted))

    def set_language(self, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"no catalogue for language {lang!r}")
        self.tr.set(lang)
        self.lang = style.lang = lang
        self.changes += 1
        if lang in self.site.languages:  # the engine prints the receipt in it
            self._submit(LanguageChosen(lang))

    def set_contrast(self, on: bool) -> None:
        self.high_contrast = on
        self.theme = self.contrast if on else self.normal
        style.theme, style.high_contrast = self.theme, on
        self.changes += 1

    def toggle_contrast(self) -> None:
        self.set_contrast(not self.high_contrast)
