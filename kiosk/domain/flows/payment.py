"""A payment's life: the amount and the method chosen, the transaction opened, its split, the write
to the key, and its close (cancel, finish, the key's answer)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kiosk.domain.errors import InvalidTransition, UserFacingError
from kiosk.domain.events import (
    AbortCard,
    AmountChosen,
    AuthoriseCard,
    Cancel,
    Command,
    CompleteCard,
    Finish,
    KeyWriteFailed,
    KeyWritten,
    Kind,
    Method,
    MethodChosen,
    ReverseCard,
    WriteKey,
)
from kiosk.domain.money import Money
from kiosk.domain.session import (
    Outcome,
    Receipt,
    SessionCore,
    Split,
    _Tx,
    split_payment,
)
from kiosk.domain.table import State


class Payment(SessionCore):
    """See the module; the state it works on is `SessionCore`'s."""

    def _open_tx(self, method: Method) -> list[Command]:
        c = self._ctx
        if c.tx is not None:
            c.tx.method = method
            return []
        zero = Money.zero(self.site.currency)
        c.tx = _Tx(self._new_txid(), c.target, method, zero, zero,
                   key_written=c.key.written if c.key else None)  # fmt: skip
        return [
            self._rec(
                Kind.TX_OPENED,
                method=str(method),
                lang=self.lang,
                target=c.target.minor if c.target else None,
                contract_account=c.key.contract_account if c.key else None,
                **({"meter": c.key.meter.as_data()} if c.key and c.key.meter else {}),
                # the key's write number now: a credit this transaction comes to owe is not
                # on the key above it (reconciliation after a crash reads it from here)
                **({"key_written": c.tx.key_written} if c.key else {}),
            )
        ]

    def _close(self, outcome: Outcome, **data: Any) -> list[Command]:
        """Close the transaction (if any) and show the done screen."""
        c = self._ctx
        cmds: list[Command] = []
        tx = c.tx
        if tx is not None:
            if outcome == Outcome.CANCELLED and tx.paid:
                raise AssertionError(f"transaction {tx.txid} took money and cannot be cancelled")
            alloc = tx.split.as_data() if tx.split and outcome != Outcome.REVERSED else {}
            receipt = self._receipt_for(tx, outcome)
            extra: dict[str, Any] = {**alloc, **data}
            if receipt is not None:
                extra["receipt"] = "declined" if receipt == Receipt.DECLINED else "wanted"
            cmds.append(self._rec(Kind.TX_CLOSED, outcome=str(outcome), lang=self.lang, **extra))
            if outcome == Outcome.REVERSED and tx.split is not None:
                self._owe_again(tx.split)  # the money went back: so did its debt repayment
            if receipt == Receipt.PRINTING:
                cmds += self._print(tx)
        c.last, c.tx = tx, None
        c.outcome = outcome
        self.state = State.DONE
        self._deadline(self.site.timeouts.message)
        return cmds

    def _allocate(self) -> list[Command]:
        """Fix the split of what was paid (fee only for a full top-up) and journal it."""
        tx = self._ctx.tx
        assert tx is not None and tx.split is None
        c = self._ctx
        debt = c.account.debt if c.account else Money.zero(self.site.currency)
        charge = tx.paid >= self.site.min_topup
        tx.split = split_payment(
            tx.paid, debt, self.site.fee, self.site.recovery, charge_fee=charge
        )
        if c.account is not None:  # what this split repays is not owed by later money
            c.account = replace(c.account, debt=debt - tx.split.debt)
        return [
            self._rec(
                Kind.SPLIT, tx.split.credit, **tx.split.as_data(), vat_bp=self.site.fee.vat_bp
            )
        ]

    def _owe_again(self, split: Split | None) -> None:
        """A split dropped (its payment given back): the debt it would have repaid is owed."""
        c = self._ctx
        if split is not None and split.debt and c.account is not None:
            c.account = replace(c.account, debt=c.account.debt + split.debt)

    def _start_write(self) -> list[Command]:
        tx = self._ctx.tx
        assert tx is not None
        cmds = self._allocate()
        assert tx.split is not None
        if tx.split.credit.minor == 0:  # everything went to fee and debt: nothing to write
            if tx.card:
                cmds.append(CompleteCard(tx.txid))
            return cmds + self._close(Outcome.COMPLETED)
        self.state = State.WRITING
        self._deadline(None)
        # its id was made for this transaction and no write of it was sent before: it is new
        return [*cmds, WriteKey(tx.txid, tx.split.credit, new=True)]

    def _make_pending(self, reason: str) -> list[Command]:
        """The money is safe but not on the key: owe it as a pending credit."""
        tx = self._ctx.tx
        assert tx is not None
        cmds: list[Command] = [] if tx.split else self._allocate()
        assert tx.split is not None
        if tx.split.credit.minor > 0:
            # the bound is what the key held before this transaction's first write was tried,
            # never what it shows after an uncertain write (that write may be this credit)
            bound = {} if tx.key_written is None else {"key_written": tx.key_written}
            cmds.append(self._rec(Kind.PENDING_CREDIT, tx.split.credit, reason=reason, **bound))
        if tx.card:
            cmds.append(CompleteCard(tx.txid))
        # everything went to fee and debt: nothing is owed to the key, the top-up is complete
        return cmds + self._close(Outcome.PENDING if tx.split.credit.minor else Outcome.COMPLETED)

    def _written(self, credit_after: Money, **data: Any) -> list[Command]:
        c = self._ctx
        tx = c.tx
        assert tx is not None and tx.split is not None and c.key is not None
        if data.get("found_on_key"):  # an earlier write of it landed: its number is in the log
            write_no = c.key.write_no_of(tx.txid)
        else:  # written now: the key's next write
            write_no = c.key.written + 1
            c.key = replace(c.key, credit=credit_after, written=write_no,
                            recent_txids=(*c.key.recent_txids, tx.txid),
                            log_nos=(*c.key.log_nos, write_no))  # fmt: skip
        more = {} if write_no is None else {"write_no": write_no}
        cmds: list[Command] = [
            self._rec(Kind.KEY_WRITTEN, tx.split.credit, credit_after=credit_after.minor,
                      **data, **more)
        ]  # fmt: skip
        if tx.card:
            cmds.append(CompleteCard(tx.txid))
        return cmds + self._close(Outcome.COMPLETED)

    def on_amount(self, ev: AmountChosen) -> list[Command]:
        c = self._ctx
        site = self.site
        if ev.amount is None:
            if not self._cash_available():
                raise UserFacingError("cash_not_available")
            c.target = None
            self.state = State.CASH
            self._deadline(site.timeouts.payment)
            return self._open_tx(Method.CASH)
        amount = ev.amount
        if amount.currency != site.currency:
            raise UserFacingError("wrong_currency", currency=amount.currency)
        if amount < site.min_topup:
            raise UserFacingError("below_minimum", minimum=str(site.min_topup))
        limit = self._max_payable()
        if amount > limit:
            raise UserFacingError("above_maximum", maximum=str(limit))
        if amount.minor % site.amount_step.minor:
            raise UserFacingError("not_a_step", step=str(site.amount_step))
        methods = self.methods()
        if not methods:
            raise UserFacingError("out_of_service")
        c.target = amount
        self._notice(None)
        if len(methods) == 1:
            return self._start_method(methods[0])
        self.state = State.CHOOSING_METHOD
        self._deadline(site.timeouts.choose)
        return []

    def on_method(self, ev: MethodChosen) -> list[Command]:
        if ev.method == Method.CARD and not self.site.card_enabled:
            raise UserFacingError("card_not_offered")
        if ev.method not in self.methods():
            raise UserFacingError(f"{ev.method}_not_available")
        return self._start_method(ev.method)

    def _start_method(self, method: Method) -> list[Command]:
        c = self._ctx
        cmds = self._open_tx(method)
        tx = c.tx
        assert tx is not None
        self._notice(None)
        if method == Method.CASH:
            self.state = State.CASH
            self._deadline(self.site.timeouts.payment)
            return cmds
        assert c.target is not None
        self.state = State.CARD
        self._deadline(None)
        c.card_text = ""
        c.card_status = None
        tx.card_busy = True
        return [*cmds, AuthoriseCard(tx.txid, c.target - tx.paid)]

    def on_cancel(self, _ev: Cancel) -> list[Command]:
        c = self._ctx
        s = self.state
        if s == State.CHOOSING_AMOUNT:
            self._notice(None)
            return self._close(Outcome.CANCELLED)
        if s == State.CHOOSING_METHOD:
            cmds = []
            if c.tx is not None and not c.tx.paid:
                cmds.append(self._rec(Kind.TX_CLOSED, outcome=str(Outcome.CANCELLED)))
                c.tx = None
            c.target = None
            return cmds + self._begin_choice()
        if s == State.CASH:
            return self._finish_or_choose_again()  # paid money is credited, never refunded as lost
        if s == State.CARD:
            return [AbortCard()]
        if s == State.DONE:
            return self._to_rest()
        raise InvalidTransition(f"Cancel is not expected in state {s}")

    def on_finish(self, _ev: Finish) -> list[Command]:
        c = self._ctx
        if self.state == State.DONE:
            return self._to_rest()
        tx = c.tx
        assert tx is not None
        if not tx.paid and tx.escrow is None:
            raise UserFacingError("nothing_paid")
        held = tx.escrow or Money.zero(self.site.currency)
        if tx.paid + held < self.site.min_topup:
            raise UserFacingError("below_minimum", minimum=str(self.site.min_topup))
        return self._finish()

    def on_key_written(self, ev: KeyWritten) -> list[Command]:
        tx = self._ctx.tx
        if tx is None or ev.txid != tx.txid:
            raise ValueError(f"key written for an unexpected transaction {ev.txid}")
        return self._written(ev.credit_after)

    def on_key_write_failed(self, ev: KeyWriteFailed) -> list[Command]:
        c = self._ctx
        tx = c.tx
        if tx is None or ev.txid != tx.txid:
            raise ValueError(f"write failure for an unexpected transaction {ev.txid}")
        cmds: list[Command] = [
            self._rec(Kind.WRITE_FAILED, reason=ev.reason, uncertain=ev.uncertain)
        ]
        if self.state == State.KEY_MISSING:
            return cmds  # already waiting for the key to come back
        if ev.uncertain:  # may have landed: the key's top-up log decides when it is back
            c.resume = State.WRITING
            self.state = State.KEY_MISSING
            self._deadline(self.site.timeouts.key_missing)
            self._notice("key_removed_early")
            return cmds
        if tx.card:
            self.state = State.REVERSING
            return [*cmds, ReverseCard(tx.txid)]
        return cmds + self._make_pending(ev.reason)
