"""Fleet money under an adversary and over time: one test per weakness the second red team
found (issue 34). Each names what happened before and what happens now."""

from __future__ import annotations

from kiosk.domain.engine import State
from kiosk.domain.events import (
    AmountChosen,
    KeyRemoved,
    KeyWriteFailed,
    Kind,
    Method,
    MethodChosen,
    NoteEscrowed,
    NoteStacked,
    WriteKey,
)
from kiosk.domain.money import Money
from tests.test_engine import Run, key


def E(minor: int) -> Money:
    return Money(minor, "EUR")


# ---------------------------------------------------------------- one kiosk


def test_a_credit_owed_after_an_uncertain_write_is_bound_by_the_count_before_it() -> None:
    """Before (found by an independent money fuzzer): the write commits on the key (write 1),
    the key is pulled before the read-back; back, the kiosk reads its summary (1 write) and
    writes again, the key is pulled before the log read answers; the customer walks away and
    the credit owed was bound by the count read after the uncertain write (1). Ten top-ups
    elsewhere later the log reached back to write 2 = bound + 1, and the kiosk wrote it again.
    Now the bound is what the key held before the transaction's first write was tried (0)."""
    r = Run()
    r.insert(key(written=0, log_from=1, log_complete=False))
    _pay_2000_in_notes(r)
    assert r.cmds(WriteKey) == [WriteKey("T1", E(2000), new=True)]
    assert r.records(Kind.TX_OPENED)[0].data["key_written"] == 0
    r(KeyWriteFailed("T1", "key removed during read-back", uncertain=True))
    r(KeyRemoved())
    # back with the summary only: one write on it now, the log not read
    r.insert(key(written=1, log_from=2, log_complete=False))
    assert r.cmds(WriteKey)[-1] == WriteKey("T1", E(2000), new=False)
    r(KeyWriteFailed("T1", "key removed before the log was read", uncertain=False))
    r(KeyRemoved())
    r.tick(r.site.timeouts.key_missing + 1)
    [owed] = r.records(Kind.PENDING_CREDIT)
    assert owed.amount == E(2000) and owed.data["key_written"] == 0, owed
    assert r.state in (State.DONE, State.IDLE)


def _pay_2000_in_notes(r: Run) -> None:
    """From the amount screen to the write of 20.00 paid in two notes."""
    r(AmountChosen(E(2000)))
    r(MethodChosen(Method.CASH))
    for _ in range(2):
        r(NoteEscrowed(E(1000)))
        r(NoteStacked(E(1000)))
