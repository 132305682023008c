"""Card payment: the amount, and the terminal's prompts (insert card, PIN, result) in the
customer's language."""

from __future__ import annotations

from kivy.properties import StringProperty

from kiosk.documents.i18n import Translator
from kiosk.documents.terminal import terminal_prompt
from kiosk.domain.engine import View
from kiosk.ui.screens.base import KioskScreen, load_kv


class CardScreen(KioskScreen):
    terminal = StringProperty("")
    label_cancel = StringProperty("")

    def refresh(self, view: View, tr: Translator) -> None:
        self.title = tr("Card payment: {amount}", amount=view.target) if view.target else ""
        self.body = tr("Please follow the instructions on the card terminal.")
        # the terminal's status in the customer's language (its own words for a code we
        # have no text for)
        self.terminal = terminal_prompt(view.card_status, view.card_text, tr)
        self.label_cancel = tr("Cancel")


load_kv(__file__)
