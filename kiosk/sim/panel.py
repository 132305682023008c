"""The developer's simulator panel (`kiosk run --panel`): a drawer at the right edge that puts
keys into the slot, coins and notes into the acceptors, runs the printer out of paper and picks
what the card terminal answers next. It drives the simulators through their control interface
(the same one `kiosk simulate` serves), so it works against the demo's rig and against a
separate `kiosk simulate` process alike. Never part of a customer's screen."""

from __future__ import annotations

import logging
import threading
from typing import Any

from kivy.clock import Clock
from kivy.properties import BooleanProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label

from kiosk.domain.site import Site
from kiosk.sim.simulate import SimulatorControl
from kiosk.ui.screens.base import load_kv

log = logging.getLogger(__name__)

CARD_OUTCOMES = ("approve", "decline", "wrong_pin", "customer_abort", "timeout")


class SimulatorPanel(BoxLayout):  # type: ignore[misc]
    open = BooleanProperty(False)

    def __init__(self, control: SimulatorControl, site: Site, **kw: Any) -> None:
        super().__init__(**kw)
        self.control = control
        status = control.status()  # the keys it holds and whether it has a terminal
        box = self.ids.controls
        box.add_widget(Label(text="Keys", size_hint_y=None, height=30))
        for serial in status.get("keys", []):  # type: ignore[union-attr]
            box.add_widget(self._button(f"insert {serial}", f"insert {serial}"))
        box.add_widget(self._button("remove key", "remove"))
        box.add_widget(Label(text="Printer", size_hint_y=None, height=30))
        for state in ("ok", "near_end", "out"):
            box.add_widget(self._button(f"paper {state}", f"paper {state}"))
        box.add_widget(Label(text="Coins and notes", size_hint_y=None, height=30))
        for c in site.coins:
            box.add_widget(self._button(f"coin {c}", f"coin {c.amount_text()}"))
        for n in site.notes:
            box.add_widget(self._button(f"note {n}", f"note {n.amount_text()}"))
        if status.get("card_terminal"):
            box.add_widget(Label(text="Next card payment", size_hint_y=None, height=30))
            for outcome in CARD_OUTCOMES:
                box.add_widget(self._button(outcome, f"terminal {outcome}"))
        #: the simulator's answer to the last button
        self.answer = Label(text="", size_hint_y=None, height=60, text_size=(300, None))
        box.add_widget(self.answer)

    def _button(self, text: str, command: str) -> Button:
        b = Button(text=text, size_hint_y=None, height=44, font_size=18)
        b.bind(on_release=lambda *_a: self.send(command))
        return b

    def send(self, command: str) -> threading.Thread:
        """The command on a thread of its own (the screen never waits for a simulator); its
        answer shown at the panel's foot."""

        def go() -> None:
            try:
                text = self.control.send(command)
            except (OSError, ValueError) as err:
                log.warning("simulator panel: %s: %s", command, err)
                text = f"refused: {err}"
            Clock.schedule_once(lambda _dt: setattr(self.answer, "text", text))

        thread = threading.Thread(target=go, name="panel", daemon=True)
        thread.start()
        return thread

    def toggle(self) -> None:
        self.open = not self.open


load_kv(__file__)
