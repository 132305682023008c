"""`kiosk devices probe|watch` as an installer runs them, against a simulator on a real pty."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from drivers.cctalk.sim import (
    BusSimulator,
    SimBillValidator,
    SimCoinAcceptor,
    euro_coins,
    euro_notes,
)
from tests.conftest import ROOT, run_kiosk


def _notify(cond: threading.Condition) -> None:
    with cond:
        cond.notify_all()


@pytest.fixture
def sim() -> Iterator[tuple[BusSimulator, SimCoinAcceptor, SimBillValidator]]:
    coin, notes = SimCoinAcceptor(euro_coins()), SimBillValidator(euro_notes())
    s = BusSimulator([coin, notes])
    s.start()
    yield s, coin, notes
    s.stop()


def test_probe_prints_identity_and_channels(
    sim: tuple[BusSimulator, SimCoinAcceptor, SimBillValidator],
) -> None:
    bus, _coin, _notes = sim
    res = run_kiosk("devices", "probe", "coin", "--port", bus.path, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert (
        info["identity"]["category"] == "Coin Acceptor"
        and info["identity"]["serial_number"] == 0x123456
    )
    assert [(c["id"], c["value"]) for c in info["channels"]][:5] == [
        ("EU010A", 10),
        ("EU020A", 20),
        ("EU050A", 50),
        ("EU100A", 100),
        ("EU200A", 200),
    ]
    text = run_kiosk("devices", "probe", "notes", "--port", bus.path)
    assert "Bill Validator" in text.stdout and "EU0020A  20.00 EUR" in text.stdout


def test_probe_of_a_silent_address_fails_clearly(
    sim: tuple[BusSimulator, SimCoinAcceptor, SimBillValidator],
) -> None:
    bus, _coin, _notes = sim
    res = run_kiosk("devices", "probe", "coin", "--port", bus.path, "--address", "9")
    assert res.returncode == 1 and "no valid reply from address 9" in res.stderr


def test_watch_prints_one_json_object_per_event(
    sim: tuple[BusSimulator, SimCoinAcceptor, SimBillValidator],
) -> None:
    bus, _coin, notes = sim
    seen = threading.Condition()
    bus.reply_hook = lambda _frame: _notify(seen)  # the watcher's polls reach the simulator

    def wait_for(pred: Callable[[], bool], what: str) -> None:
        with seen:
            assert seen.wait_for(pred, timeout=5), f"timed out waiting for {what}"

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kiosk.cli",
            "devices",
            "watch",
            "notes",
            "--port",
            bus.path,
            "--json",
            "--seconds",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        wait_for(lambda: notes.master, "the validator enabled")
        assert notes.insert("EU0010A")
        wait_for(lambda: notes.stacked == [2], "the note stacked")
        notes.insert("EU0050A", counterfeit=True)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["note_escrow", "note_stacked", "error"], err
    assert events[1] == {"event": "note_stacked", "value": 1000, "currency": "EUR", "channel": 2}
    assert events[2]["text"] == "invalid bill (validation fail)"
    assert notes.stacked == [2]
