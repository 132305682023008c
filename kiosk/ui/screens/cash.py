"""Cash: the live total, what is still to pay or may still be inserted, the coins and notes
this automat takes (pictures), finish and cancel."""

from __future__ import annotations

from kivy.properties import BooleanProperty, ListProperty, StringProperty

from kiosk.documents.i18n import Translator, money_text
from kiosk.domain.engine import View
from kiosk.ui.screens.base import KioskScreen, load_kv
from kiosk.ui.widgets import MoneyPicture


class CashScreen(KioskScreen):
    paid = StringProperty("")
    paid_label = StringProperty("")
    still = StringProperty("")
    accepted_label = StringProperty("")
    coins = ListProperty([])
    notes = ListProperty([])
    can_finish = BooleanProperty(False)
    label_finish = StringProperty("")
    label_cancel = StringProperty("")

    def refresh(self, view: View, tr: Translator) -> None:
        self.ids.receipt.show(view, tr)
        site = self.model.site
        lang = tr.lang
        self.title = tr("Insert coins or notes")
        self.paid_label = tr("Paid")
        self.paid = money_text(view.paid, lang)
        if view.target is not None and view.paid < view.target:
            self.still = tr("Still to pay: {amount}", amount=view.target - view.paid)
        elif view.remaining is not None and view.target is None:
            self.still = tr("You can insert up to {amount} more.", amount=view.remaining)
        else:
            self.still = ""
        if view.escrow is not None:
            self.still = tr("Checking your note…")
        room = view.remaining
        self.accepted_label = tr("Accepted here")
        self.coins = [money_text(c, lang) for c in site.coins if room is None or c <= room]
        self.notes = [money_text(n, lang) for n in site.notes if room is None or n <= room]
        self._draw_money()
        self.can_finish = bool(view.paid.minor) and view.escrow is None
        self.label_finish = tr("Finish")
        self.label_cancel = tr("Cancel")

    def _draw_money(self) -> None:
        """One picture per denomination, made once per language; those above what may still
        be inserted fade out (no widgets are made while money comes in)."""
        site = self.model.site
        box = self.ids.pictures
        every = [("coin", money_text(c, self.model.lang)) for c in site.coins] + [
            ("note", money_text(n, self.model.lang)) for n in site.notes
        ]
        if [(w.kind, w.text) for w in box.children[::-1]] != every:
            box.clear_widgets()
            for kind, text in every:
                box.add_widget(MoneyPicture(kind=kind, text=text))
        taken = set(self.coins) | set(self.notes)
        for w in box.children:
            w.opacity = 1 if w.text in taken else 0.15


load_kv(__file__)
