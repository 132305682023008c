"""The engine's transition table (kiosk/domain/table.py) checked three ways: against the code
(every assignment to the state in a handler and the helpers it calls), against a run of the
engine (every step the explorer saw is in the table, and what it did not see is named), and
the README's diagram against the table. A step the table does not allow is refused, and a
failed step leaves the session as it was."""

from __future__ import annotations

import ast
import copy
import inspect
from collections.abc import Iterator

import pytest

from kiosk.app import runner
from kiosk.domain import diagram, engine
from kiosk.domain.engine import (
    GOES_TO,
    RESTING,
    TAKES_MORE_TIME,
    TRANSITIONS,
    State,
    next_states,
)
from kiosk.domain.errors import InvalidTransition
from kiosk.domain.events import AmountChosen, Cancel, CoinAccepted, MoreTime
from kiosk.domain.table import TABLE, moves
from kiosk.ui import model, root
from tests.conftest import ROOT
from tests.test_engine import E, reach


def _state_constants(value: ast.expr) -> Iterator[str]:
    """The states an assignment to self.state can set: State.X, or _resting_state()'s."""
    if (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
            and value.value.id == "State"):  # fmt: skip
        yield value.attr
        return
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "_resting_state"):  # fmt: skip
        yield from (s.name for s in RESTING)
        return
    # anything else must be a state saved earlier in the same step (late cash restores it)
    assert isinstance(value, ast.Name) and value.id.startswith("saved"), ast.unparse(value)


def code_targets() -> dict[str, set[str]]:
    """For each method of TopUpSession: the states it and the helpers it calls may set."""
    methods: dict[str, ast.FunctionDef] = {}
    for part in engine.TopUpSession.__mro__[:-1]:  # the session, its sub-machines, its core
        tree = ast.parse(inspect.getsource(inspect.getmodule(part)))  # type: ignore[arg-type]
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == part.__name__)
        for f in cls.body:
            if isinstance(f, ast.FunctionDef):
                methods.setdefault(f.name, f)  # the one the session uses (first in the MRO)
    direct: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for name, f in methods.items():
        direct[name], calls[name] = set(), set()
        for node in ast.walk(f):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    pairs = (zip(target.elts, node.value.elts, strict=True)
                             if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                             else [(target, node.value)])  # fmt: skip
                    for t, v in pairs:
                        if isinstance(t, ast.Attribute) and t.attr == "state":
                            direct[name] |= set(_state_constants(v))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in methods):  # fmt: skip
                calls[name].add(node.func.attr)

    def reach_of(name: str, seen: set[str]) -> set[str]:
        if name in seen:
            return set()
        seen.add(name)
        out = set(direct[name])
        for callee in calls[name]:
            out |= reach_of(callee, seen)
        return out

    return {name: reach_of(name, set()) for name in methods}


def test_the_table_says_exactly_where_the_code_can_go() -> None:
    found = code_targets()
    handlers = {h for row in TRANSITIONS.values() for h in row.values()}
    assert handlers <= set(GOES_TO)  # every handler in the table has its targets
    for handler in handlers:
        declared = {s.name for s in GOES_TO[handler]}
        assert declared == found[handler.__name__], handler.__name__


def test_a_step_the_table_does_not_allow_is_refused_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = reach(State.CHOOSING_AMOUNT)
    on_amount = engine.TopUpSession.on_amount

    def astray(self: engine.TopUpSession, ev: AmountChosen) -> list[object]:
        on_amount(self, ev)
        self.state = State.DIAGNOSTICS  # a defect: no customer step goes there
        return []

    monkeypatch.setitem(TRANSITIONS[State.CHOOSING_AMOUNT], AmountChosen, astray)
    before = (r.s.state, copy.deepcopy(r.s._ctx), r.s.view())
    with pytest.raises(InvalidTransition, match="not in the table"):
        r(AmountChosen(E(2000)))
    assert (r.s.state, r.s._ctx, r.s.view()) == before
    r(Cancel())  # and the session goes on


def test_the_screen_and_the_runner_ask_the_engine_which_states_rest_and_take_more_time() -> None:
    assert model.RESTING is RESTING and runner.RESTING is RESTING
    assert root.TAKES_MORE_TIME is TAKES_MORE_TIME
    assert {s for s, row in TRANSITIONS.items() if MoreTime in row} == TAKES_MORE_TIME
    assert {State.IDLE, State.CLOSED, State.OUT_OF_SERVICE} == RESTING


def test_the_readme_shows_the_engine_as_it_runs() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert diagram.readme_block() in readme, "run: python -m kiosk.domain.diagram"


_S = State
#: Moves the table allows that the explorer does not bring about, and why they are there.
#: At rest, the resting state is chosen afresh (hours, faults, site) at every event: a site
#: file from head office with new hours or the card switched off changes it between two ticks,
#: which the explorer (events only) does not do. A top-up that leaves nothing to write (fee and
#: debt take it all) ends in DONE from CASH; the explorer reaches it only by deeper paths.
UNSEEN = {
    *((src, ev, dst) for src in RESTING for ev in ("DeviceFault", "DeviceOk", "KeyRemoved")
      for dst in RESTING if dst != src),
    (_S.IDLE, "Tick", _S.OUT_OF_SERVICE), (_S.OUT_OF_SERVICE, "Tick", _S.IDLE),
    (_S.CASH, "CoinAccepted", _S.DONE), (_S.CASH, "Finish", _S.DONE),
} - {(_S.IDLE, "DeviceFault", _S.OUT_OF_SERVICE),
     (_S.OUT_OF_SERVICE, "DeviceOk", _S.IDLE)}  # fmt: skip


@pytest.fixture(scope="module")
def explored() -> set[tuple[State, str, State]]:
    return diagram.explore()


def test_every_step_the_engine_took_is_in_the_table(
    explored: set[tuple[State, str, State]],
) -> None:
    assert len(explored) > 100  # the exploration reached the whole customer flow
    reached = {s for s, _e, _d in explored} | {d for _s, _e, d in explored}
    assert reached == set(State)
    assert explored - set(moves()) == set()
    by_name = {e.__name__: e for row in TABLE.values() for e in row}
    for src, event, dst in explored:
        assert dst in next_states(src, by_name[event]), (src, event, dst)


def test_what_the_explorer_did_not_see_is_named(explored: set[tuple[State, str, State]]) -> None:
    """A move in the table that nothing brings about is either named above, with the reason,
    or a row to remove: the table stays as tight as the engine."""
    assert set(moves()) - explored <= UNSEEN
    assert set(moves()) >= UNSEEN


def test_the_handlers_and_the_table_list_the_same_events() -> None:
    assert {s: set(r) for s, r in TRANSITIONS.items()} == {s: set(r) for s, r in TABLE.items()}


def test_a_failed_step_leaves_nothing_half_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step works on a copy of everything it may change: when it fails after the handler
    changed the transaction, the paid amount, the deadline and the state, none of it stays."""
    r = reach(State.CASH)
    r(CoinAccepted(E(200)))
    before = copy.deepcopy(r.s._m)

    def broken(self: engine.TopUpSession) -> list[object]:
        raise RuntimeError("a defect after the handler ran")

    monkeypatch.setattr(engine.TopUpSession, "_sync_acceptors", broken)
    with pytest.raises(RuntimeError):
        r(CoinAccepted(E(200)))  # the handler added it to the transaction before the failure
    assert r.s._m == before and r.s.view().paid == E(200)
    monkeypatch.undo()
    r(CoinAccepted(E(200)))
    assert r.s.view().paid == E(400)


def test_a_session_keeps_no_state_outside_the_step() -> None:
    r = reach(State.IDLE)
    with pytest.raises(AttributeError, match="belongs in _Moving"):
        r.s.scratch = 1  # type: ignore[attr-defined]
