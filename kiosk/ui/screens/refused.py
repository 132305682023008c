"""A key that cannot be served: why, and what to do (where to go)."""

from __future__ import annotations

from kiosk.documents.i18n import N_, Translator
from kiosk.domain.engine import View
from kiosk.ui.screens.base import KioskScreen, load_kv

#: refusal -> (title, what to do); {office} is where customers go, {reason} head office's reason
REASONS = {
    "blocked": (
        N_("This key is blocked"),
        N_("Reason: {reason}. Please contact {office}."),
    ),
    "not_activated": (
        N_("This key has not been activated yet"),
        N_("Please go to {office} to have it activated."),
    ),
    "unknown": (
        N_("This key is not known here"),
        N_("Please go to {office}."),
    ),
    "technician_key": (
        N_("This is a service key"),
        N_("Customers, please insert your own key."),
    ),
    "foreign_key": (
        N_("This key is for another currency"),
        N_("It cannot be topped up at this automat. Please go to {office}."),
    ),
    "unreadable": (
        N_("Your key could not be read"),
        N_("Please take it out and insert it again."),
    ),
}


class RefusedScreen(KioskScreen):
    def refresh(self, view: View, tr: Translator) -> None:
        site = self.model.site
        title, todo = REASONS.get(view.refusal or "", REASONS["unreadable"])
        reason = (view.account.reason if view.account else "") or tr("not given")
        self.title = tr(title)
        self.body = (
            tr(todo, office=site.utility_office, reason=reason)
            + "\n\n"
            + tr("Please take your key.")
        )


load_kv(__file__)
