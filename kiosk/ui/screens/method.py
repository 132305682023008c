"""How to pay: cash, and the bank card only where the site offers it and the terminal works."""

from __future__ import annotations

from kivy.properties import BooleanProperty, StringProperty

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import View
from kiosk.ui.screens.base import KioskScreen, load_kv


class MethodScreen(KioskScreen):
    cash = BooleanProperty(False)
    card = BooleanProperty(False)
    label_cash = StringProperty("")
    label_card = StringProperty("")
    label_cancel = StringProperty("")

    def refresh(self, view: View, tr: Translator) -> None:
        self.ids.receipt.show(view, tr)
        site = self.model.site
        self.title = tr("How do you want to pay?")
        self.body = tr("Amount to pay: {amount}", amount=view.target) if view.target else ""
        self.cash = any(m == "cash" for m in view.methods)
        self.card = any(m == "card" for m in view.methods)
        if site.card_enabled and not self.card:
            self.body += "\n" + tr("Card payment is not available right now.")
        if site.cash_enabled and not self.cash:
            self.body += "\n" + tr("Cash is not accepted right now.")
        self.label_cash = tr("Cash")
        self.label_card = tr("Bank card")
        self.label_cancel = tr("Cancel")


load_kv(__file__)
