"""The key: read, refused, credit owed from earlier visits written first, pulled while money is in
(waiting for its return), and back."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kiosk.domain.events import (
    AbortCard,
    Command,
    KeyDetected,
    KeyInserted,
    KeyReadFailed,
    KeyRemoved,
    KeyStatus,
    KeyWriteFailed,
    KeyWritten,
    Kind,
    Role,
    WriteKey,
)
from kiosk.domain.money import Money
from kiosk.domain.session import (
    Outcome,
    SessionCore,
    _Ctx,
)
from kiosk.domain.table import State


class KeyCustody(SessionCore):
    """See the module; the state it works on is `SessionCore`'s."""

    def _refuse_key(self, reason: str, **data: Any) -> list[Command]:
        self._ctx.refusal = reason
        self.state = State.KEY_REFUSED
        self._deadline(None)
        return [self._rec(Kind.KEY_REFUSED, reason=reason, **data)]

    def on_key_detected(self, _ev: KeyDetected) -> list[Command]:
        if self.state in (State.CLOSED, State.OUT_OF_SERVICE):
            return []
        self._ctx = _Ctx()
        self.state = State.READING
        return []

    def on_key_read_failed(self, ev: KeyReadFailed) -> list[Command]:
        if self.state in (State.CLOSED, State.OUT_OF_SERVICE):
            return []
        self._ctx = _Ctx()
        return self._refuse_key("unreadable", detail=ev.reason)

    def on_key_inserted(self, ev: KeyInserted) -> list[Command]:
        if self.state in (State.CLOSED, State.OUT_OF_SERVICE):
            return []  # the screen says closed / out of service; nothing is accepted
        self._ctx = _Ctx(key=ev.key, account=ev.account)
        key, acc = ev.key, ev.account
        if key.role == Role.TECHNICIAN:
            self.state = State.TECHNICIAN_PIN
            self._deadline(self.site.timeouts.choose)
            return []
        if key.role != Role.CUSTOMER:
            return self._refuse_key("technician_key")
        if key.credit.currency != self.site.currency:
            return self._refuse_key("foreign_key", currency=key.credit.currency)
        if acc.status != KeyStatus.ACTIVE:
            return self._refuse_key(str(acc.status), detail=acc.reason)
        cmds: list[Command] = []
        # Without the key's log (the automat asks for it when credits are owed; reading it
        # failed or was not done) nothing owed is decided: it stays owed, for the next insertion.
        for p in acc.pending if key.log_complete else ():
            if (
                p.key_written is not None
                and key.log_from > p.key_written + 1
                and (p.txid not in key.recent_txids)
            ):
                # More writes since it became owed than the key's log still shows: it may have
                # been written elsewhere (a kiosk that claimed it while this one was offline).
                # Not written here: head office decides (a claim grants it when it is open).
                continue
            if p.txid in key.recent_txids:  # a torn write that did land: settle, do not rewrite
                no = key.write_no_of(p.txid)
                cmds.append(
                    self._rec(Kind.PENDING_WRITTEN, p.amount, txid=p.txid, found_on_key=True,
                              **({} if no is None else {"write_no": no}))
                )  # fmt: skip
                if p.on_key is not None and p.on_key > p.amount:  # more than is still paid
                    cmds.append(
                        self._rec(Kind.CLAIM, p.on_key - p.amount, txid=p.txid,
                                  reason="payment given back, credit found on the key")
                    )  # fmt: skip
            elif p.amount.minor <= 0:  # only a check of the key: the write did not land
                cmds.append(self._rec(Kind.PENDING_WRITTEN, p.amount, txid=p.txid, not_on_key=True))
            else:
                self._ctx.pending.append(p)
        if self._ctx.pending:
            self.state = State.WRITING_PENDING
            self._deadline(None)
            first = self._ctx.pending[0]
            return [*cmds, WriteKey(first.txid, first.amount)]
        return cmds + self._begin_choice()

    def on_pending_written(self, ev: KeyWritten) -> list[Command]:
        c = self._ctx
        assert c.key is not None
        p = c.pending[0]
        if ev.txid != p.txid:
            raise ValueError(f"key written for {ev.txid}, expected {p.txid}")
        c.pending.pop(0)
        write_no = c.key.written + 1
        c.key = replace(c.key, credit=ev.credit_after, recent_txids=(*c.key.recent_txids, p.txid),
                        written=write_no, log_nos=(*c.key.log_nos, write_no))  # fmt: skip
        c.pending_written = (c.pending_written or Money.zero(self.site.currency)) + p.amount
        cmds: list[Command] = [
            self._rec(Kind.PENDING_WRITTEN, p.amount, txid=p.txid,
                      credit_after=ev.credit_after.minor, write_no=write_no)
        ]  # fmt: skip
        if c.pending:
            nxt = c.pending[0]
            return [*cmds, WriteKey(nxt.txid, nxt.amount)]
        self._notice("pending_written", amount=str(c.pending_written))
        return cmds + self._begin_choice()

    def on_pending_failed(self, ev: KeyWriteFailed) -> list[Command]:
        c = self._ctx
        cmds: list[Command] = [
            self._rec(Kind.WRITE_FAILED, txid=ev.txid, reason=ev.reason, uncertain=ev.uncertain)
        ]
        self._notice("pending_not_written")
        c.outcome = Outcome.PENDING
        self.state = State.DONE
        self._deadline(self.site.timeouts.message)
        return cmds

    def on_key_removed(self, _ev: KeyRemoved) -> list[Command]:
        c = self._ctx
        s = self.state
        if s == State.CARD:  # the terminal is busy: stop it first, its answer decides
            c.key_gone = True
            return [] if not c.tx or not c.tx.card_busy else [AbortCard()]
        if s in (State.KEY_MISSING, State.REVERSING):
            return []  # already waiting; the clock keeps running
        if s == State.WRITING or (c.tx is not None and (c.tx.paid or c.tx.escrow)):
            # Money taken (a note being stacked counts too): wait for this key to come back.
            c.resume = State.WRITING if s == State.WRITING else State.CASH
            self.state = State.KEY_MISSING
            self._deadline(self.site.timeouts.key_missing)
            return []
        cmds: list[Command] = []
        if c.tx is not None:  # opened but nothing paid (e.g. card declined, then key pulled)
            cmds.append(self._rec(Kind.TX_CLOSED, outcome=str(Outcome.CANCELLED), key_removed=True))
        return cmds + self._to_rest()

    def on_key_back(self, ev: KeyInserted) -> list[Command]:
        c = self._ctx
        assert c.key is not None and c.tx is not None
        if ev.key.serial != c.key.serial:
            self._notice("wrong_key")
            return []
        c.key = ev.key
        self._notice(None)
        if c.resume == State.CASH:
            self.state = State.CASH
            self._deadline(self.site.timeouts.payment)
            return []
        if c.tx.txid in ev.key.recent_txids:  # the interrupted write did land
            return self._written(ev.key.credit, found_on_key=True)
        assert c.tx.split is not None
        self.state = State.WRITING
        self._deadline(None)
        return [WriteKey(c.tx.txid, c.tx.split.credit)]
