"""Reading or writing the key, or giving a card payment back: wait, keep the key in."""

from __future__ import annotations

from kivy.animation import Animation
from kivy.properties import NumericProperty

from kiosk.documents.i18n import N_, Translator
from kiosk.domain.engine import State, View
from kiosk.ui.screens.base import KioskScreen, load_kv

TITLES = {
    State.READING: N_("Reading your key…"),
    State.WRITING_PENDING: N_("Writing an earlier payment to your key…"),
    State.WRITING: N_("Writing the credit to your key…"),
    State.REVERSING: N_("Giving the card payment back…"),
}


class BusyScreen(KioskScreen):
    progress = NumericProperty(0.0)

    def refresh(self, view: View, tr: Translator) -> None:
        self.title = tr(TITLES.get(view.state, N_("Please wait…")))
        self.body = tr("Please do not remove your key.")

    def on_enter(self) -> None:
        self.progress = 0.0
        self._anim = Animation(progress=1.0, duration=1.2) + Animation(progress=0.0, duration=0)
        self._anim.repeat = True
        self._anim.start(self)

    def on_leave(self) -> None:
        Animation.cancel_all(self, "progress")


load_kv(__file__)
