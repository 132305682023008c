"""Closed (opening hours) or out of service (and where to go instead)."""

from __future__ import annotations

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import State, View
from kiosk.domain.money import Money
from kiosk.ui.screens.base import KioskScreen, load_kv


class UnavailableScreen(KioskScreen):
    def refresh(self, view: View, tr: Translator) -> None:
        site = self.model.site
        if view.state == State.CLOSED:
            self.title = tr("Closed")
            opening = site.hours.next_opening(self.model.clock())
            self.body = (
                tr("We open again on {when}.", when=opening.astimezone(site.hours.tz))
                if opening
                else tr("This automat is closed.")
            )
        elif view.notice == "failed":  # the engine stopped: the fail-safe's screen
            self.title = tr("Out of order")
            paid = view.notice_params.get("paid")
            if isinstance(paid, Money) and paid.minor > 0:
                self.body = tr(
                    "Your payment of {amount} is recorded and safe (transaction {txid}). It "
                    "is put on your key the next time you insert it at one of our automats. "
                    "Questions: {office}.",
                    amount=paid, txid=view.notice_params.get("txid", ""),
                    office=site.utility_office,
                )  # fmt: skip
            else:
                self.body = tr(
                    "Nothing was charged. Please try again later or go to {office}.",
                    office=site.utility_office,
                )
        else:
            self.title = tr("Out of service")
            self.body = tr(
                "Sorry, top-ups are not possible here at the moment. Please try again later or "
                "go to {office}.",
                office=site.utility_office,
            )


load_kv(__file__)
