"""Drive the screen like a customer: find the visible button for an action, touch it at its
centre, run frames until the engine and the screen have caught up. Used by the headless run
(a scripted customer) and by the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.base import EventLoop
from kivy.core.window import Window
from kivy.tests.common import UnitTestTouch
from kivy.uix.label import Label

from kiosk.app.runner import Kiosk


def plain(text: str) -> str:
    """Locale formats use no-break spaces ("12,50\\xa0€"); scripts write plain ones."""
    return text.replace("\xa0", " ").replace("\u202f", " ")


class ScreenDriver:
    def __init__(self, kiosk: Kiosk, root: Any) -> None:
        self.kiosk = kiosk
        self.root = root
        self.window = Window
        self.loop = EventLoop

    @property
    def model(self) -> Any:
        return self.root.model

    @property
    def screen(self) -> str:
        return str(self.root.ids.sm.current)

    def visible(self, w: Any) -> bool:
        node = w
        while node is not None and node is not self.root:
            if getattr(node, "opacity", 1) == 0:
                return False
            node = node.parent
        return True

    def texts(self) -> str:
        """Every text visible now: the current screen, the notice and warning bars."""
        ids = self.root.ids
        parts = []
        for area in (ids.notice_bar, ids.sm.current_screen, ids.warning_bar):
            for w in area.walk(restrict=True):
                if isinstance(w, Label) and w.text and self.visible(w):
                    parts.append(w.text)
        return plain("\n".join(parts))

    def shows(self, *texts: str) -> bool:
        shown = self.texts()
        return all(t in shown for t in texts)

    def buttons(self, action: str) -> list[Any]:
        """The visible, enabled widgets with this action, on screen or in the bars."""
        ids = self.root.ids
        found = []
        for area in (ids.speech_bar, ids.sm.current_screen, ids.warning_bar, ids.footer):
            for w in area.walk(restrict=True):
                if getattr(w, "action", None) == action and not w.disabled and self.visible(w):
                    found.append(w)
        return found

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

    def settle(self, timeout: float = 5.0) -> None:
        """Until the engine has handled everything queued and the screen shows its last view."""
        self.until(
            lambda: not self.kiosk.busy and self.model.view == self.kiosk.view(),
            "the engine and the screen to catch up",
            timeout,
        )
        self.pump()

    def tap_widget(self, w: Any) -> None:
        x, y = w.to_window(*w.center)
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        self.loop.idle()
        touch.touch_up()
        self.loop.idle()

    def tap(self, action: str, text: str | None = None) -> None:
        """Touch the button with this action (and text), as a finger would."""
        self.settle()
        found = [
            b for b in self.buttons(action) if text is None or plain(getattr(b, "text", "")) == text
        ]
        if not found:
            raise AssertionError(
                f"no visible button {action!r} {text or ''} on {self.screen}:\n{self.texts()}"
            )
        self.tap_widget(found[0])
        self.settle()

    def wait_screen(self, name: str, timeout: float = 5.0) -> None:
        self.until(lambda: self.screen == name, f"screen {name}", timeout)
        self.settle(timeout)

    def screenshot(self, path: Path) -> Path:
        """The window as a PNG at `path` (Kivy appends a counter: we rename it back)."""
        self.pump(0.05)
        made = Path(self.window.screenshot(name=str(path.with_suffix("")) + ".png"))
        made.replace(path)
        return path
