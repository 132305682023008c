"""Drive the customer screen like a customer: Kivy on a real Xvfb screen, the real widgets,
synthetic touches at their centres, the engine on its own thread behind it.

Kivy is imported only after Xvfb is up and `kiosk.ui.setup.configure` ran (the `ui_window`
fixture); nothing here imports it at module level.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import ManualClock
from kiosk.domain.events import KeyStatus
from kiosk.domain.site import Site
from kiosk.ledger.journal import Journal
from kiosk.sim.fakes import (
    FakeCardTerminal,
    FakeCoinAcceptor,
    FakeKey,
    FakeKeyReader,
    FakeNoteValidator,
    FakePrinter,
)
from tests.conftest import SATURDAY_MORNING


class Customer:
    """One kiosk with its screen; `tap("cash")` presses the visible button with that action."""

    def __init__(self, site: Site, tmp_path: Path) -> None:
        from kivy.base import EventLoop
        from kivy.core.window import Window

        from kiosk.ui.app import KioskApp
        from kiosk.ui.driver import ScreenDriver

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
        self.driver = ScreenDriver(self.kiosk, self.root)
        self.settle()  # the first view is on the screen

    def close(self) -> None:
        self.stop.set()
        self.engine.join(5)
        self.window.remove_widget(self.root)
        self.journal.close()

    # ------------------------------------------------------------------ the screen

    def __getattr__(self, name: str) -> Any:
        return getattr(self.driver, name)  # screen, texts, shows, buttons, tap, until, ...

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
