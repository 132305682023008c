"""The end: the new credit and how the payment was split, or what happened to the money."""

from __future__ import annotations

from kivy.properties import StringProperty

from kiosk.documents.i18n import Translator, money_text
from kiosk.domain.engine import Outcome, Receipt, View
from kiosk.ui.screens.base import KioskScreen, load_kv


def receipt_text(view: View, tr: Translator) -> str:
    """What became of the receipt, one line (with its newline), or nothing."""
    if view.receipt == Receipt.PRINTING:
        return tr("Your receipt is being printed.") + "\n"
    if view.receipt == Receipt.PRINTED:
        return tr("Please take your receipt.") + "\n"
    if view.receipt == Receipt.NOT_PRINTED:
        return (
            tr(
                "No receipt could be printed. Staff can print it for you later with this "
                "number: {txid}",
                txid=view.txid or "",
            )
            + "\n"
        )
    return ""


class DoneScreen(KioskScreen):
    credit = StringProperty("")
    split = StringProperty("")
    label_finish = StringProperty("")

    def refresh(self, view: View, tr: Translator) -> None:
        lang = tr.lang
        self.credit = ""
        self.split = ""
        s = view.split
        if view.outcome == Outcome.COMPLETED:
            self.title = tr("Done. Your new credit:")
            self.credit = money_text(view.key.credit, lang) if view.key else ""
            if s is not None:
                parts = [tr("You paid {amount}", amount=s.paid)]
                if s.fee.minor:
                    parts.append(tr("Fee {amount}", amount=s.fee))
                if s.debt.minor:
                    parts.append(tr("Debt repaid {amount}", amount=s.debt))
                parts.append(tr("Added to your key {amount}", amount=s.credit))
                self.split = "\n".join(parts)
            self.body = receipt_text(view, tr) + tr("Please take your key.")
        elif view.outcome == Outcome.PENDING:
            self.title = tr("Your money is safe")
            amount = s.credit if s is not None else view.paid
            self.body = tr(
                "{amount} will be written to your key the next time you insert it, at any "
                "automat of ours.",
                amount=amount,
            )
            self.body += "\n" + receipt_text(view, tr).strip()
        elif view.outcome == Outcome.REVERSED:
            self.title = tr("The card payment was given back")
            self.body = (
                tr("Nothing was charged.")
                + "\n"
                + receipt_text(view, tr)
                + tr("Please take your key.")
            )
        else:
            self.title = tr("Cancelled")
            self.body = tr("Nothing was charged.") + "\n" + tr("Please take your key.")
        self.label_finish = tr("Finish")


load_kv(__file__)
