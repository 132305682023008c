"""Card payment: the amount, and the terminal's own prompts (insert card, PIN, result)."""

from __future__ import annotations

from kivy.properties import StringProperty

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import View
from kiosk.ui.screens.base import KioskScreen, load_kv


class CardScreen(KioskScreen):
    terminal = StringProperty("")
    label_cancel = StringProperty("")

    def refresh(self, view: View, tr: Translator) -> None:
        self.title = tr("Card payment: {amount}", amount=view.target) if view.target else ""
        self.body = tr("Please follow the instructions on the card terminal.")
        self.terminal = view.card_text  # the terminal's own words, as it shows them
        self.label_cancel = tr("Cancel")


load_kv(__file__)
