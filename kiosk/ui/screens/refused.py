"""A key that cannot be served: why, and what to do (where to go)."""

from __future__ import annotations

from kiosk.documents.i18n import N_, Translator
from kiosk.domain.engine import View
from kiosk.ui.screens.base import KioskScreen, load_kv

#: head office's reason code (sync.protocol.KeyReason) -> why, and what to do; a code this
#: automat does not know (from a newer head office) says only where to go, never the code
WHY = {
    "lost": (
        N_("It was reported lost."),
        N_("If you have found it again, please go to {office} to have it unblocked."),
    ),
    "stolen": (
        N_("It was reported stolen."),
        N_("Please go to {office} with your identity card."),
    ),
    "defective": (
        N_("It is defective."),
        N_("Please go to {office}: you will get a new key there."),
    ),
    "replaced": (
        N_("It has been replaced by a new key."),
        N_("Please use your new key. If you do not have it, please go to {office}."),
    ),
    "contract_ended": (
        N_("The contract for this key has ended."),
        N_("Please go to {office}."),
    ),
    "deposit_unpaid": (
        N_("The deposit for this key has not been paid yet."),
        N_("Please go to {office} to pay it."),
    ),
    "not_activated": (
        N_("It has not been activated yet."),
        N_("Please go to {office} to have it activated."),
    ),
    "under_review": (
        N_("It is being checked."),
        N_("Please go to {office}."),
    ),
}

#: refusal -> (title, what to do); {office} is where customers go
REASONS = {
    "blocked": (
        N_("This key is blocked"),
        N_("Please contact {office}."),
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
        code = view.account.reason if view.account else ""
        why = ""
        if view.refusal == "blocked" and code in WHY:
            why, todo = WHY[code]
            why = tr(why) + "\n"
        self.title = tr(title)
        self.body = (
            why + tr(todo, office=site.utility_office) + "\n\n" + tr("Please take your key.")
        )


load_kv(__file__)
