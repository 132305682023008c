"""The customer screen: a Kivy app over the kiosk service (call `setup.configure` first)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.lang import Builder
from kivy.properties import ObjectProperty
from kivy.uix.widget import Widget

from kiosk.app.runner import Kiosk
from kiosk.domain.clock import utc_now
from kiosk.ui.model import ScreenModel
from kiosk.ui.speech import Voice

#: each language's name in itself, under its flag
LANGUAGE_NAMES = {"de": "Deutsch", "en": "English", "fr": "Français", "nl": "Nederlands"}
#: the flags, drawn: stripes top to bottom (France left to right; England field and cross)
FLAG_COLOURS = {
    "de": [(0, 0, 0), (0.87, 0, 0), (1, 0.81, 0)],
    "en": [(1, 1, 1), (0.81, 0.08, 0.17)],
    "fr": [(0, 0.14, 0.58), (1, 1, 1), (0.93, 0.16, 0.22)],
    "nl": [(0.68, 0.11, 0.16), (1, 1, 1), (0.13, 0.28, 0.55)],
}

Builder.load_file(str(Path(__file__).with_name("widgets.kv")))


def settle_heap() -> None:
    """Once the screen is up: collect, then exempt everything made so far from the cyclic
    collector, so that its full passes stay short while customers are served."""
    gc.collect()
    gc.freeze()


class KioskApp(App):  # type: ignore[misc]
    """Holds the view-model for the kv rules (`app.model`); builds the root; nothing else."""

    model = ObjectProperty(None)

    def __init__(
        self,
        kiosk: Kiosk,
        clock: Callable[[], datetime] = utc_now,
        *,
        panel: Callable[[], Widget] | None = None,
        shown: threading.Event | None = None,
        voice: Voice | None = None,
        stopping: threading.Event | None = None,
        **kw: Any,
    ) -> None:
        """`panel`: makes a drawer shown over the screen's right edge (`kiosk run --panel`:
        the developer's simulator panel); never on a customer's automat. `shown` is set once
        the first picture is on the screen (systemd hears READY=1 only then). `voice`: what
        speaks the prompts (none: silent, as in the headless run, which records them).
        `stopping`: once set (SIGTERM), the app ends within a quarter of a second."""
        self.model = ScreenModel(kiosk.site, kiosk.submit)
        self.model.speaker.voice = voice
        self.model.clock = clock
        self.model.kiosk = kiosk  # the service screens call kiosk.service.diag with it
        super().__init__(**kw)
        self.kiosk = kiosk
        self.panel = panel
        self.shown = shown
        self.stopping = stopping
        kiosk.listeners.append(self.model.post)
        self.model.post(kiosk.view(), None)

    def on_start(self) -> None:
        from kivy.core.window import Window

        Window.bind(on_key_down=self._key)  # the tactile keypad
        settle_heap()
        if self.shown is not None:
            shown = self.shown
            Clock.schedule_once(lambda _dt: shown.set(), 0)  # after the first frame is drawn
        if self.stopping is not None:  # (a callback returning False would be unscheduled)
            Clock.schedule_interval(self._stop_when_asked, 0.25)

    def _stop_when_asked(self, _dt: float) -> None:
        if self.stopping is not None and self.stopping.is_set():
            self.stop()

    def _key(self, _window: Any, keycode: int, *_rest: Any) -> bool:
        return bool(self.model.speaker.key(keycode))

    def build(self) -> Any:
        from kiosk.ui.root import KioskRoot  # its kv uses app.model: load after the app exists

        self.title = "Prepaid top-up"
        root = KioskRoot(model=self.model)
        if self.panel is None:
            return root
        from kivy.uix.floatlayout import FloatLayout

        layer = FloatLayout()
        layer.add_widget(root)
        layer.add_widget(self.panel())
        return layer
