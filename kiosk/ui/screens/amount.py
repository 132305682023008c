"""The key's summary (credit, open debt, account and meter masked) and the amount: the site's
presets, a keypad for whole amounts, "pay what you insert" for cash, and the limits."""

from __future__ import annotations

from kivy.properties import BooleanProperty, ListProperty, StringProperty

from kiosk.documents.i18n import Translator, money_text
from kiosk.documents.receipt import masked
from kiosk.domain.engine import View
from kiosk.domain.money import CURRENCY_EXPONENT, Money
from kiosk.ui.screens.base import KioskScreen, load_kv


class AmountScreen(KioskScreen):
    credit = StringProperty("")
    debt = StringProperty("")
    meter = StringProperty("")  # emergency credit the meter recorded, repaid first
    identity = StringProperty("")
    limits = StringProperty("")
    entry = StringProperty("")  # the amount being typed, whole currency units
    entry_text = StringProperty("")
    presets = ListProperty([])  # (label, minor)
    free_cash = BooleanProperty(False)
    label_free = StringProperty("")
    label_ok = StringProperty("")
    label_delete = StringProperty("")
    label_cancel = StringProperty("")
    heading = StringProperty("")

    def refresh(self, view: View, tr: Translator) -> None:
        site = self.model.site
        lang = tr.lang
        self.title = tr("Credit on your key")
        self.credit = money_text(view.key.credit, lang) if view.key else ""
        debt = view.account.debt if view.account else None
        self.debt = (
            tr("Open debt: {debt}. Part of each top-up repays it.", debt=debt)
            if debt is not None and debt.minor
            else ""
        )
        meter = view.key.meter if view.key else None
        self.meter = (
            tr("Emergency credit used: {amount}. The meter repays it first.", amount=meter.debt)
            if meter is not None and meter.worth_telling
            else ""
        )
        self.identity = (
            tr(
                "Account {account} · Meter {meter}",
                account=masked(view.key.contract_account),
                meter=masked(view.key.meter_number),
            )
            if view.key
            else ""
        )
        self.heading = tr("How much do you want to top up?")
        room = view.max_payable or site.max_topup
        self.limits = tr("From {low} to {high}", low=site.min_topup, high=room)
        self.presets = [(money_text(p, lang), p.minor) for p in site.presets if p <= room]
        self.free_cash = any(m == "cash" for m in view.methods)
        self.label_free = tr("Pay what you insert")
        self.label_ok = tr("OK")
        self.label_delete = tr("Delete")
        self.label_cancel = tr("Cancel")
        self._show_entry()

    def on_pre_enter(self) -> None:
        self.entry = ""

    def type_digit(self, digit: str) -> None:
        if len(self.entry) < 4 and (self.entry or digit != "0"):
            self.entry += digit
        self._show_entry()

    def delete(self) -> None:
        self.entry = self.entry[:-1]
        self._show_entry()

    def _show_entry(self) -> None:
        site = self.model.site
        self.entry_text = (
            money_text(Money(self._minor(), site.currency), self.model.lang) if self.entry else "–"
        )

    def _minor(self) -> int:
        exponent: int = CURRENCY_EXPONENT[self.model.site.currency]
        return int(str(self.entry)) * int(10**exponent)

    def confirm(self) -> None:
        if self.entry:
            self.model.choose_amount(self._minor())

    def choose(self, minor: int | None) -> None:
        self.model.choose_amount(minor)


load_kv(__file__)
