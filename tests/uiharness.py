"""Drive the customer screen like a customer: Kivy on a real Xvfb screen, the real widgets,
synthetic touches at their centres, the engine on its own thread behind it.

Kivy is imported only after Xvfb is up and `kiosk.ui.setup.configure` ran (the `ui_window`
fixture); nothing here imports it at module level.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiosk.clock import ManualClock
from kiosk.config import Site
from kiosk.events import KeyStatus
from kiosk.fakes import (
    FakeCardTerminal,
    FakeCoinAcceptor,
    FakeKey,
    FakeKeyReader,
    FakeNoteValidator,
    FakePrinter,
)
from kiosk.journal import Journal
from kiosk.ports import Devices
from kiosk.service import Kiosk
from tests.conftest import SATURDAY_MORNING


def plain(text: str) -> str:
    """Locale formats use no-break spaces ("12,50\xa0€"); tests write plain ones."""
    return text.replace("\xa0", " ").replace("\u202f", " ")


class Customer:
    """One kiosk with its screen; `tap("cash")` presses the visible button with that action."""

    def __init__(self, site: Site, tmp_path: Path) -> None:
        from kivy.base import EventLoop
        from kivy.core.window import Window

        from kiosk.ui.app import KioskApp

        self.site = site
        self.window = Window
        self.loop = EventLoop
        self.journal = Journal(tmp_path / "journal.sqlite", site.kiosk_id)
        self.journal.set_key("K1", KeyStatus.ACTIVE, "4711")
        self.journal.set_key("K2", KeyStatus.BLOCKED, "4712", "lost")
        self.reader = FakeKeyReader()
        self.coin = FakeCoinAcceptor(site.coins)
        self.notes = FakeNoteValidator(site.notes)
        self.card = FakeCardTerminal()
        self.printer = FakePrinter()
        self.clock = ManualClock(SATURDAY_MORNING)
        self.kiosk = Kiosk(
            site,
            self.journal,
            Devices(
                reader=self.reader,
                coin=self.coin,
                notes=self.notes,
                card=self.card if site.card_enabled else None,
                printer=self.printer,
            ),
            self.clock,
        )
        self.app = KioskApp(self.kiosk, self.clock)
        self.root = self.app.build()
        self.app.root = self.root
        for child in list(Window.children):
            Window.remove_widget(child)
        Window.add_widget(self.root)
        self.stop = threading.Event()
        self.engine = threading.Thread(target=self.kiosk.run, args=(self.stop, 0.05), daemon=True)
        self.engine.start()
        self.settle()  # the first view is on the screen

    def close(self) -> None:
        self.stop.set()
        self.engine.join(5)
        self.window.remove_widget(self.root)
        self.journal.close()

    # ------------------------------------------------------------------ looking

    @property
    def model(self) -> Any:
        return self.app.model

    @property
    def screen(self) -> str:
        return str(self.root.ids.sm.current)

    def texts(self) -> str:
        """Every text visible now: the current screen, the notice and warning bars."""
        from kivy.uix.label import Label

        parts = []
        for area in (
            self.root.ids.notice_bar,
            self.root.ids.sm.current_screen,
            self.root.ids.warning_bar,
        ):
            for w in area.walk(restrict=True):
                if isinstance(w, Label) and w.text and self._visible(w):
                    parts.append(w.text)
        return plain("\n".join(parts))

    def _visible(self, w: Any) -> bool:
        node = w
        while node is not None and node is not self.root:
            if getattr(node, "opacity", 1) == 0:
                return False
            node = node.parent
        return True

    def buttons(self, action: str) -> list[Any]:
        """The visible, enabled widgets with this action, on screen or in the bars."""
        found = []
        for area in (
            self.root.ids.sm.current_screen,
            self.root.ids.warning_bar,
            self.root.ids.footer,
        ):
            for w in area.walk(restrict=True):
                if getattr(w, "action", None) == action and not w.disabled and self._visible(w):
                    found.append(w)
        return found

    # ------------------------------------------------------------------ acting

    def pump(self, seconds: float = 0.0) -> None:
        end = time.monotonic() + seconds
        self.loop.idle()
        while time.monotonic() < end:
            self.loop.idle()

    def until(self, cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        """Run frames until `cond` holds (the engine thread works meanwhile), with a deadline."""
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; screen {self.screen}:\n{self.texts()}"
                )
            self.loop.idle()

    def settle(self) -> None:
        """Until the engine has handled everything queued and the screen shows its last view."""
        self.until(
            lambda: not self.kiosk.busy and self.model.view == self.kiosk.view(),
            "the engine and the screen to catch up",
        )
        self.pump()

    def tap_widget(self, w: Any) -> None:
        from kivy.tests.common import UnitTestTouch

        x, y = w.to_window(*w.center)
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        self.loop.idle()
        touch.touch_up()
        self.loop.idle()

    def tap(self, action: str, text: str | None = None) -> None:
        """Touch the button with this action (and text), as a finger would."""
        self.settle()
        candidates = [
            b for b in self.buttons(action) if text is None or plain(getattr(b, "text", "")) == text
        ]
        assert candidates, (
            f"no visible button {action!r} {text or ''} on {self.screen}:\n{self.texts()}"
        )
        self.tap_widget(candidates[0])
        self.settle()

    def insert_key(self, key: FakeKey) -> None:
        self.reader.insert(key)
        self.settle()

    def remove_key(self) -> None:
        self.reader.remove()
        self.settle()

    def wait_screen(self, name: str, timeout: float = 5.0) -> None:
        self.until(lambda: self.screen == name, f"screen {name}", timeout)
        self.settle()

    def shows(self, *texts: str) -> bool:
        shown = self.texts()
        return all(t in shown for t in texts)
