"""Closed (opening hours) or out of service (and where to go instead)."""

from __future__ import annotations

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import State, View
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
        else:
            self.title = tr("Out of service")
            self.body = tr(
                "Sorry, top-ups are not possible here at the moment. Please try again later or "
                "go to {office}.",
                office=site.utility_office,
            )


load_kv(__file__)
