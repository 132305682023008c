"""Coins and notes: where a coin becomes money (`_money_in`), notes held in escrow, money that
arrives outside a payment, and finishing a cash payment."""

from __future__ import annotations

from kiosk.domain.events import (
    CoinAccepted,
    Command,
    Kind,
    Method,
    NoteEscrowed,
    NoteReturned,
    NoteStacked,
    Record,
    ReturnNote,
    Role,
    StackNote,
)
from kiosk.domain.money import Money
from kiosk.domain.session import (
    _CASH_STATES,
    Outcome,
    SessionCore,
    _ctr,
)
from kiosk.domain.table import State


class Cash(SessionCore):
    """See the module; the state it works on is `SessionCore`'s."""

    def _money_in(
        self, value: Money, medium: str, channel: int, counter: int | None = None
    ) -> list[Command]:
        """A coin accepted or a note stacked: journal it against the right transaction."""
        if value.currency != self.site.currency:
            raise ValueError(f"{medium} in {value.currency} at a {self.site.currency} site")
        c = self._ctx
        cmds: list[Command] = []
        if self.state == State.DIAGNOSTICS:  # acceptor test: counted, never credited
            assert c.key is not None
            c.test_last = value
            c.test_total = (c.test_total or Money.zero(value.currency)) + value
            return [
                Record(
                    Kind.TEST_CASH,
                    amount=value,
                    data={
                        "medium": medium,
                        "channel": channel,
                        "who": f"key {c.key.serial}",
                        **_ctr(counter),
                    },  # fmt: skip
                )
            ]
        if self.state in (State.CHOOSING_AMOUNT, State.CHOOSING_METHOD):
            cmds += self._open_tx(Method.CASH)
            self.state = State.CASH
        tx = c.tx
        if tx is None or tx.split is not None:
            return cmds + self._late_money(value, medium, channel, counter)
        tx.cash += value
        cmds.append(self._rec(Kind.CASH_IN, value, medium=medium, channel=channel, **_ctr(counter)))
        if self.state == State.CASH:
            self._notice(None)
            self._deadline(self.site.timeouts.payment)
            target_met = c.target is not None and tx.paid >= c.target
            if target_met or tx.finishing:
                cmds += self._finish()
        return cmds

    def _late_money(
        self, value: Money, medium: str, channel: int, counter: int | None = None
    ) -> list[Command]:
        """Cash that arrived when no payment could take it: never dropped."""
        c = self._ctx
        if c.key is None or self.state == State.KEY_REFUSED or c.key.role != Role.CUSTOMER:
            return [
                self._rec(
                    Kind.CASH_UNATTRIBUTED, value, medium=medium, channel=channel, **_ctr(counter)
                )
            ]
        # A key is (or was just) present: the money becomes a pending credit for it.
        saved_tx, saved_last, saved_state = c.tx, c.last, self.state
        saved_deadline, saved_outcome, saved_receipt = c.deadline, c.outcome, c.receipt
        c.tx = None
        cmds = self._open_tx(Method.CASH)
        assert c.tx is not None
        c.tx.cash = value
        cmds.append(
            self._rec(
                Kind.CASH_IN, value, medium=medium, channel=channel, late=True, **_ctr(counter)
            )
        )
        cmds += self._make_pending("late_cash")
        c.tx, c.last, self.state = saved_tx, saved_last, saved_state
        c.deadline, c.outcome, c.receipt = saved_deadline, saved_outcome, saved_receipt
        return cmds  # its records, and its receipt (the customer's proof of a credit owed)

    def _finish(self) -> list[Command]:
        """Stop taking cash and credit what was paid (after an escrowed note is stacked)."""
        tx = self._ctx.tx
        assert tx is not None
        tx.finishing = True
        if tx.escrow is not None:
            return []  # the note is being stacked: it counts, the write follows its result
        assert tx.paid, "a payment with nothing paid ends in _finish_or_choose_again"
        return self._start_write()

    def _finish_or_choose_again(self) -> list[Command]:
        """As `_finish`; with nothing paid (a held note given back or stuck), the transaction
        closes and the customer chooses again."""
        c = self._ctx
        tx = c.tx
        assert tx is not None
        if tx.paid or tx.escrow is not None:
            return self._finish()
        self.state = State.CHOOSING_AMOUNT
        self._deadline(self.site.timeouts.choose)
        c.tx = None
        return [self._rec(Kind.TX_CLOSED, txid=tx.txid, outcome=str(Outcome.CANCELLED))]

    def on_coin(self, ev: CoinAccepted) -> list[Command]:
        return self._money_in(ev.value, "coin", ev.channel, ev.counter)

    def on_note_stacked(self, ev: NoteStacked) -> list[Command]:
        tx = self._ctx.tx
        if tx is not None and tx.escrow is not None:
            tx.escrow = None
        return self._money_in(ev.value, "note", ev.channel, ev.counter)

    def on_note_escrowed(self, ev: NoteEscrowed) -> list[Command]:
        c = self._ctx
        if self.state == State.DIAGNOSTICS:
            return [StackNote() if c.test_mode else ReturnNote()]
        takes_cash = (
            self.state in _CASH_STATES
            and c.key is not None
            and self._cash_available()
            and not (c.tx and (c.tx.finishing or c.tx.escrow or c.tx.card_busy))
        )
        if not takes_cash:
            return [ReturnNote()]
        if ev.value > self._remaining():
            self._notice("note_too_big", value=str(ev.value), room=str(self._remaining()))
            return [ReturnNote()]
        cmds: list[Command] = []
        if self.state != State.CASH:
            cmds += self._open_tx(Method.CASH)
            self.state = State.CASH
        assert c.tx is not None
        c.tx.escrow = ev.value
        self._notice(None)
        self._deadline(self.site.timeouts.payment)
        return [*cmds, StackNote()]

    def on_note_returned(self, _ev: NoteReturned) -> list[Command]:
        tx = self._ctx.tx
        if tx is None or tx.escrow is None:
            return []
        tx.escrow = None
        if tx.finishing and self.state == State.CASH:
            return self._finish_or_choose_again()
        return []
