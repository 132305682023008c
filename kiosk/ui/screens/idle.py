"""Attract screen: insert your key (with a picture of the slot) and how one can pay here."""

from __future__ import annotations

from kivy.properties import StringProperty

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import View
from kiosk.ui.screens.base import KioskScreen, load_kv


class IdleScreen(KioskScreen):
    methods = StringProperty("")

    def refresh(self, view: View, tr: Translator) -> None:
        site = self.model.site
        self.title = tr("Insert your key")
        self.body = tr("The slot is below the screen, on the right.")
        cash = site.cash_enabled and any(m == "cash" for m in view.methods)
        card = site.card_enabled and any(m == "card" for m in view.methods)
        if cash and card:
            self.methods = tr("Pay with coins, notes or a bank card.")
        elif card:
            self.methods = tr("Pay with a bank card.")
        else:
            self.methods = tr("Pay with coins or notes.")


load_kv(__file__)
