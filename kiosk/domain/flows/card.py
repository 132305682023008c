"""A card payment: the terminal's prompts, its approval or failure, and giving the money back when
the key is gone or the write failed."""

from __future__ import annotations

from kiosk.domain.events import (
    CardApproved,
    CardFailed,
    CardReversed,
    CardStatus,
    Command,
    Kind,
    Method,
    ReverseCard,
)
from kiosk.domain.money import Money
from kiosk.domain.session import (
    Outcome,
    SessionCore,
)
from kiosk.domain.table import State


class Card(SessionCore):
    """See the module; the state it works on is `SessionCore`'s."""

    def on_card_status(self, ev: CardStatus) -> list[Command]:
        self._ctx.card_text = ev.text
        self._ctx.card_status = ev.code
        return []

    def on_card_approved(self, ev: CardApproved) -> list[Command]:
        c = self._ctx
        tx = c.tx
        assert tx is not None
        if ev.amount.currency != self.site.currency:
            raise ValueError(
                f"card approved in {ev.amount.currency} at a {self.site.currency} site"
            )
        tx.card_busy = False
        tx.card += ev.amount
        cmds: list[Command] = [self._rec(Kind.CARD_APPROVED, ev.amount, **ev.receipt)]
        if c.key_gone:  # the key left during the payment: give the money back
            self.state = State.REVERSING
            return [*cmds, ReverseCard(tx.txid)]
        return cmds + self._start_write()

    def on_card_failed(self, ev: CardFailed) -> list[Command]:
        c = self._ctx
        tx = c.tx
        assert tx is not None
        tx.card_busy = False
        cmds: list[Command] = [
            self._rec(Kind.CARD_FAILED, outcome=str(ev.outcome), reason=ev.reason, code=ev.code)
        ]
        if c.key_gone:
            if tx.paid:  # cash taken before the card attempt stays owed to the key
                c.resume = State.CASH
                self.state = State.KEY_MISSING
                self._deadline(self.site.timeouts.key_missing)
                return cmds
            cmds.append(self._rec(Kind.TX_CLOSED, outcome=str(Outcome.CANCELLED), key_removed=True))
            return cmds + self._to_rest()
        self._notice(f"card_{ev.outcome}", code=ev.code)
        if tx.paid:  # coins came in during the card attempt: carry on in cash
            tx.method = Method.CASH
            self.state = State.CASH
            self._deadline(self.site.timeouts.payment)
            return cmds
        self.state = State.CHOOSING_METHOD
        self._deadline(self.site.timeouts.choose)
        return cmds

    def on_card_reversed(self, ev: CardReversed) -> list[Command]:
        c = self._ctx
        tx = c.tx
        assert tx is not None
        if not ev.ok:
            cmds: list[Command] = [self._rec(Kind.CARD_REVERSAL_FAILED, tx.card, reason=ev.reason)]
            return cmds + self._make_pending("write_failed_reversal_failed")
        cmds = [self._rec(Kind.CARD_REVERSED, tx.card)]
        tx.card = Money.zero(self.site.currency)
        if tx.cash:  # cash paid alongside the card is still owed
            self._owe_again(tx.split)
            tx.split = None
            return cmds + self._make_pending("write_failed")
        return cmds + self._close(Outcome.REVERSED)
