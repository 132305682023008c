"""The key was pulled too early: put it back, the money is safe."""

from __future__ import annotations

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import View
from kiosk.ui.screens.base import KioskScreen, load_kv


class KeyMissingScreen(KioskScreen):
    def refresh(self, view: View, tr: Translator) -> None:
        self.title = tr("Please put your key back")
        lines = [tr("Your money is safe.")]
        if view.paid.minor:
            lines.append(tr("Paid so far: {amount}", amount=view.paid))
        lines.append(
            tr(
                "If you do not come back, it will be written to your key the next time you "
                "insert it."
            )
        )
        self.body = "\n".join(lines)


load_kv(__file__)
