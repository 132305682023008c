"""The money fuzzer: random customers, devices and crashes against the real kiosk.

A hypothesis state machine drives the real `Kiosk`, `Journal` and start-up reconciliation in a
world whose devices hold the true money (tests/moneyworld.py): keys in and out, amounts,
methods, coins (some past the gate as it closes), notes, finish, cancel, time passing, card
outcomes (approved, declined, the line lost after the kiosk's OK), a terminal that cannot
answer at the next start, keys torn mid-write, and the automat killed at any journal commit or
device command, or by a power cut between steps. After every step: the money equation, no
transaction twice on a key, no debt recovered beyond what was owed, the journal verifies; an
exception other than the kill escaping the kiosk fails the run.

    python -m tests.fuzz_money [--sequences N] [--steps N] [--seed S]

prints the sequences, steps and crashes it ran; exits 1 on a finding (hypothesis prints the
shortest sequence that shows it). The test suite runs a bounded version (tests/test_fuzz_money.py).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import seed as use_seed
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from kiosk.domain.events import AmountChosen, Cancel, Finish, Method, MethodChosen, MoreTime
from kiosk.domain.money import Money
from tests.conftest import make_site
from tests.moneyworld import World


@dataclass
class Stats:
    sequences: int = 0
    steps: int = 0
    crashes: int = 0
    logs_read: int = 0  # keys whose log the automat asked for (credits were owed to them)

    def line(self) -> str:
        return (f"{self.sequences} sequences, {self.steps} steps, {self.crashes} crashes, "
                f"{self.logs_read} key logs read")  # fmt: skip


STATS = Stats()


def E(minor: int) -> Money:
    return Money(minor, "EUR")


class MoneyFuzz(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        STATS.sequences += 1
        self.folder = Path(tempfile.mkdtemp(prefix="fuzz-money-"))
        self.w: World | None = None
        self.crashes = 0

    @initialize(
        share=st.sampled_from([0, 25, 100]),
        debt=st.sampled_from([0, 700, 5000]),
        fee=st.booleans(),
    )
    def open_the_automat(self, share: int, debt: int, fee: bool) -> None:
        fees = {"net": "2.10", "vat_percent": 19, "gross": "2.50"} if fee else {}
        site = make_site("demo", debt_recovery={"share_percent": share}, fee=fees)
        self.w = World(self.folder, site, debt=debt, credits=(0, 1500))

    @property
    def world(self) -> World:
        assert self.w is not None
        return self.w

    def step(self, done: object = None) -> None:
        STATS.steps += 1
        new = self.world.crashes - self.crashes
        STATS.crashes += new
        self.crashes = self.world.crashes

    # ------------------------------------------------------------ the customer

    @precondition(lambda self: self.w is not None and self.w.slot.key is None)
    @rule(which=st.sampled_from([0, 1]))
    def insert_key(self, which: int) -> None:
        w = self.world
        self.step(w.do(lambda: w.slot.insert(w.keys[which])))

    @precondition(lambda self: self.w is not None and self.w.slot.key is not None)
    @rule()
    def pull_key(self) -> None:
        self.step(self.world.do(self.world.slot.remove))

    @rule(which=st.sampled_from([0, 1]), amount=st.sampled_from([1000, 2000, 3000]))
    def card_top_up(self, which: int, amount: int) -> None:
        """A whole card payment in one step (the automat may die anywhere in it)."""
        w = self.world
        if w.slot.key is None and not w.do(lambda: w.slot.insert(w.keys[which])):
            return self.step()
        if w.submit(AmountChosen(E(amount))):
            w.submit(MethodChosen(Method.CARD))
        self.step()

    @rule(
        which=st.sampled_from([0, 1]),
        notes=st.lists(st.sampled_from([500, 1000, 2000]), min_size=1, max_size=3),
    )
    def cash_top_up(self, which: int, notes: list[int]) -> None:
        """A whole cash payment, pay-what-you-insert, in one step."""
        w = self.world
        if w.slot.key is None and not w.do(lambda: w.slot.insert(w.keys[which])):
            return self.step()
        alive = w.submit(AmountChosen(None))
        for value in notes:
            alive = alive and w.do(lambda v=value: w.notes.insert(E(v)))
        if alive:
            w.submit(Finish())
        self.step()

    @rule(amount=st.sampled_from([None, 500, 1000, 2000, 3000, 5000]))
    def choose_amount(self, amount: int | None) -> None:
        self.step(self.world.submit(AmountChosen(None if amount is None else E(amount))))

    @rule(method=st.sampled_from([Method.CASH, Method.CARD]))
    def choose_method(self, method: Method) -> None:
        self.step(self.world.submit(MethodChosen(method)))

    @rule(value=st.sampled_from([50, 100, 200]), late=st.sampled_from([False, False, True]))
    def coin(self, value: int, late: bool) -> None:
        w = self.world
        self.step(w.do(lambda: w.coins.insert(E(value), late=late)))

    @rule(value=st.sampled_from([500, 1000, 2000]))
    def note(self, value: int) -> None:
        w = self.world
        self.step(w.do(lambda: w.notes.insert(E(value))))

    @rule(intent=st.sampled_from([Finish(), Cancel(), MoreTime()]))
    def touch(self, intent: Finish | Cancel | MoreTime) -> None:
        self.step(self.world.submit(intent))

    @rule(seconds=st.sampled_from([1, 15, 45, 70, 130]))
    def wait(self, seconds: int) -> None:
        self.step(self.world.wait(seconds))

    # ------------------------------------------------------------ the devices

    @rule(outcome=st.sampled_from(["approve", "approve", "decline", "lose_after_ok"]))
    def card_answers_next(self, outcome: str) -> None:
        self.world.terminal.script.append(outcome)
        self.step()

    @rule(reachable=st.booleans())
    def terminal_reachable_at_the_next_start(self, reachable: bool) -> None:
        self.world.terminal.reachable = reachable
        self.step()

    @rule(when=st.sampled_from(["before", "after"]))
    def tear_the_next_write(self, when: str) -> None:
        self.world.slot.tear = when
        self.step()

    # ------------------------------------------------------------ death

    @rule(n=st.integers(1, 20))
    def die_at_a_later_point(self, n: int) -> None:
        self.world.points.armed = n
        self.step()

    @rule()
    def power_cut(self) -> None:
        self.world.power_cut()
        self.step()

    # ------------------------------------------------------------ the books

    @invariant()
    def books_balance(self) -> None:
        if self.w is not None:
            problems = self.w.problems()
            assert not problems, problems

    def teardown(self) -> None:
        if self.w is not None:
            STATS.logs_read += self.w.slot.logs_read
            self.w.journal.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def run(sequences: int, steps: int, seed: int | None) -> Stats:
    """Run the machine; raises on a finding (with the shortest sequence that shows it)."""
    start = Stats(STATS.sequences, STATS.steps, STATS.crashes, STATS.logs_read)
    machine = MoneyFuzz if seed is None else use_seed(seed)(MoneyFuzz)
    logging.disable(logging.CRITICAL)  # thousands of reconciliations and refused touches
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=sequences,
                stateful_step_count=steps,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            ),
        )
    finally:
        logging.disable(logging.NOTSET)
    return Stats(STATS.sequences - start.sequences, STATS.steps - start.steps,
                 STATS.crashes - start.crashes, STATS.logs_read - start.logs_read)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequences", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=60, help="most steps per sequence")
    ap.add_argument("--seed", type=int, default=None, help="a fixed seed (default: random)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    try:
        stats = run(args.sequences, args.steps, args.seed)
    except Exception:
        print(f"FINDING after {STATS.line()}", flush=True)
        raise
    print(f"money fuzz: {stats.line()}, no finding, {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
