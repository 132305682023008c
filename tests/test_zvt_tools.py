"""`kiosk devices probe terminal` and `kiosk devices pay` as an installer runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from drivers.zvt.sim import TerminalSim
from tests.conftest import run_kiosk


@pytest.fixture(params=["tcp", "serial"])
def sim(request: pytest.FixtureRequest) -> Iterator[TerminalSim]:
    s = TerminalSim(request.param)
    s.start()
    yield s
    s.stop()


def test_probe_terminal(sim: TerminalSim) -> None:
    res = run_kiosk("devices", "probe", "terminal", "--port", sim.port, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["status"] == {"code": 0, "text": "ready"} and info["software"] == "SIM 2.14.15"
    assert info["diagnosis"]["outcome"] == "approved"


def test_test_payment_is_reversed(sim: TerminalSim) -> None:
    res = run_kiosk("devices", "pay", "--port", sim.port, "--amount", "1.00", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["payment"]["outcome"] == "approved" and out["payment"]["amount"] == 100
    assert out["reversal"]["outcome"] == "approved"
    assert sim.payments[0].kept and sim.payments[0].reversed  # nothing stays charged


def test_declined_test_payment_exits_1(sim: TerminalSim) -> None:
    sim.next("decline")
    res = run_kiosk("devices", "pay", "--port", sim.port, "--amount", "1.00")
    assert res.returncode == 1
    assert "payment: declined (declined by the card issuer)" in res.stdout
    assert not sim.payments


@pytest.mark.parametrize("amount", ["1.005", "-1", "abc", "0"])
def test_bad_amount_is_refused_before_anything_is_sent(sim: TerminalSim, amount: str) -> None:
    res = run_kiosk("devices", "pay", "--port", sim.port, "--amount", amount)
    assert res.returncode == 2 and "not an amount" in res.stderr
    assert sim.commands == []
