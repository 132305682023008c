"""The developer's simulator panel (`kiosk run --panel`): a drawer at the right edge that puts
demo keys into the slot, coins and notes into the simulated acceptors, and picks what the
simulated card terminal answers next. Never part of a customer's screen."""

from __future__ import annotations

from functools import partial
from typing import Any

from kivy.properties import BooleanProperty, ObjectProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label

from kiosk.rig import Rig
from kiosk.simulate import DEMO_KEYS, bill_id, coin_id
from kiosk.ui.screens.base import load_kv

CARD_OUTCOMES = ("approve", "decline", "wrong_pin", "customer_abort", "timeout")


class SimulatorPanel(BoxLayout):  # type: ignore[misc]
    rig = ObjectProperty(None)
    open = BooleanProperty(False)

    def __init__(self, rig: Rig, **kw: Any) -> None:
        super().__init__(rig=rig, **kw)
        box = self.ids.controls
        box.add_widget(Label(text="Keys", size_hint_y=None, height=30))
        for serial, *_ in DEMO_KEYS:
            box.add_widget(self._button(f"insert {serial}", partial(rig.keys.insert, serial)))
        box.add_widget(self._button("remove key", rig.keys.remove))
        box.add_widget(Label(text="Coins and notes", size_hint_y=None, height=30))
        for c in rig.site.coins:
            box.add_widget(self._button(f"coin {c}", partial(rig.coin_sim.insert, coin_id(c))))
        for n in rig.site.notes:
            box.add_widget(self._button(f"note {n}", partial(rig.note_sim.insert, bill_id(n))))
        if rig.terminal is not None:
            box.add_widget(Label(text="Next card payment", size_hint_y=None, height=30))
            for outcome in CARD_OUTCOMES:
                box.add_widget(self._button(outcome, partial(rig.terminal.next, outcome)))

    @staticmethod
    def _button(text: str, action: Any) -> Button:
        b = Button(text=text, size_hint_y=None, height=44, font_size=18)
        b.bind(on_release=lambda *_a: action())
        return b

    def toggle(self) -> None:
        self.open = not self.open


load_kv(__file__)
