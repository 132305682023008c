"""The receipt policy: asked or not, printed or not, a card payment's receipt waiting for the
terminal's text."""

from __future__ import annotations

from typing import Any

from kiosk.domain.errors import UserFacingError
from kiosk.domain.events import (
    CardReceipt,
    Command,
    Kind,
    Method,
    PrintReceipt,
    ReceiptAnswer,
    ReceiptPrinted,
    Record,
)
from kiosk.domain.session import (
    CARD_RECEIPT_WAIT,
    Outcome,
    Receipt,
    SessionCore,
    _Tx,
)


class Receipts(SessionCore):
    """See the module; the state it works on is `SessionCore`'s."""

    def _receipt_for(self, tx: _Tx, outcome: Outcome) -> Receipt | None:
        """Print or not: always where the site says so and whenever credit is left owed (the
        receipt is the customer's proof); otherwise as the customer answered (unanswered:
        print)."""
        c = self._ctx
        if outcome == Outcome.CANCELLED or self.site.receipt == "none":
            c.receipt = None
            return None
        wanted = (
            self.site.receipt == "always"
            or outcome == Outcome.PENDING
            or c.receipt_wanted is not False
        )
        c.receipt = Receipt.PRINTING if wanted else Receipt.DECLINED
        return c.receipt

    def _print(self, tx: _Tx) -> list[Command]:
        """A card payment's receipt waits (a while) for the terminal's receipt text."""
        if (tx.card or tx.method == Method.CARD) and tx.txid not in self._card_receipts:
            self._receipts_due[tx.txid] = (self.lang, self.elapsed + CARD_RECEIPT_WAIT)
            return []
        return [PrintReceipt(tx.txid, self.lang)]

    def _receipts_overdue(self) -> list[Command]:
        late = [t for t, (_l, by) in self._receipts_due.items() if self.elapsed >= by]
        return [PrintReceipt(t, self._receipts_due.pop(t)[0]) for t in late]

    def on_receipt_answer(self, ev: ReceiptAnswer) -> list[Command]:
        if self.site.receipt != "ask":
            raise UserFacingError("receipt_not_asked")
        self._ctx.receipt_wanted = ev.wanted
        return []

    def on_card_receipt(self, ev: CardReceipt) -> list[Command]:
        """The terminal's receipt text: journaled, and the receipt printed if it waited."""
        data = {"blocks": ev.blocks, "kept": ev.kept}
        cmds: list[Command] = [Record(Kind.CARD_RECEIPT, txid=ev.txid, data=data)]
        self._card_receipts = [*self._card_receipts[-15:], ev.txid]
        due = self._receipts_due.pop(ev.txid, None)
        if due is not None:
            cmds.append(PrintReceipt(ev.txid, due[0]))
        return cmds

    def on_receipt_printed(self, ev: ReceiptPrinted) -> list[Command]:
        c = self._ctx
        last = c.tx or c.last
        if last is not None and last.txid == ev.txid:
            c.receipt = Receipt.PRINTED if ev.printed else Receipt.NOT_PRINTED
        data: dict[str, Any] = {"printed": ev.printed}
        if ev.reason:
            data["reason"] = ev.reason
        return [Record(Kind.RECEIPT, txid=ev.txid, data=data)]
