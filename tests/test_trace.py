"""Device traces: recorded as the devices talk, read back, replayed to the drivers; the
traces shipped in tests/fixtures/traces/ (made with the simulators) replay to their events."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from drivers.cctalk.devices import AcceptorIncident, BillStacked, CoinCredited
from drivers.errors import FrameError
from drivers.replay import replay_cctalk, replay_essp, replay_pcsc, replay_zvt
from drivers.trace import MAGIC, Trace, read_trace
from kiosk.adapters.key import DEMO_KEYS
from kiosk.domain.site import DENOMINATIONS
from tests.traces import (
    HERE,
    record_cctalk,
    record_escpos,
    record_essp,
    record_pcsc,
    record_zvt,
    replayed,
)


def test_a_trace_line_says_when_which_way_and_what() -> None:
    out = io.StringIO()
    ticks = iter([10.0, 10.5, 10.75])
    trace = Trace(out, "coin", "cctalk", "/dev/ttyUSB0", clock=lambda: next(ticks))
    trace.sent(b"\x02\x00\x01\xfe\xff")
    trace.received(b"\x01\x00\x02\x00\xfd")
    lines = out.getvalue().splitlines()
    assert lines[0] == MAGIC and "# device coin" in lines and "# protocol cctalk" in lines
    assert lines[-2:] == ["0.500000 > 02 00 01 fe ff", "0.750000 < 01 00 02 00 fd"]
    back = read_trace(out.getvalue())
    assert back.protocol == "cctalk" and [r.data for r in back.records] == [
        bytes.fromhex("020001feff"), bytes.fromhex("01000200fd")]  # fmt: skip


def test_a_mask_hides_what_must_not_be_written_and_says_so() -> None:
    out = io.StringIO()

    def mask(direction: str, data: bytes) -> tuple[bytes, str]:
        return bytes(len(data)), "password masked" if direction == ">" else ""

    Trace(out, "terminal", "zvt", mask=mask).sent(b"\x12\x34\x56")
    assert out.getvalue().splitlines()[-1].endswith("> 00 00 00  # password masked")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0.1 > 02 00\n", "not a device trace"),
        (MAGIC + "\n0.1 = 02 00\n", "line 2: expected"),
        (MAGIC + "\nsoon > 02 00\n", "line 2"),
        (MAGIC + "\n0.1 > 0g\n", "line 2"),
    ],
)
def test_a_broken_trace_is_refused_with_its_line(text: str, problem: str) -> None:
    with pytest.raises(FrameError, match=problem):
        read_trace(text)


@pytest.mark.parametrize("kind", ["coin", "notes"])
def test_a_recorded_cctalk_session_replays_to_the_events_seen_live(kind: str) -> None:
    out = io.StringIO()
    live = record_cctalk(kind, out)
    again = replay_cctalk(
        read_trace(out.getvalue()),
        kind,
        DENOMINATIONS["EUR"]["coins" if kind == "coin" else "notes"],
    )
    assert again.mismatches == [] and again.skipped == 0
    assert again.events == live and len(live) >= 3


def test_a_recorded_key_session_replays_to_the_same_summary() -> None:
    out = io.StringIO()
    live = record_pcsc(out)
    again = replay_pcsc(read_trace(out.getvalue()), DEMO_KEYS)
    assert again.mismatches == [] and again.complete
    assert again.events == [live] and live.credit == 2_500


def test_the_shipped_coin_trace_replays() -> None:
    r = replayed(HERE / "coin.trace")
    assert r.mismatches == [] and r.complete and r.skipped == 0
    assert [e.value for e in r.events if isinstance(e, CoinCredited)] == [200, 50]
    assert [(e.code, e.kind) for e in r.events if isinstance(e, AcceptorIncident)] == [
        (1, "reject")]  # fmt: skip


def test_the_shipped_notes_trace_replays() -> None:
    r = replayed(HERE / "notes.trace")
    assert r.mismatches == [] and r.complete and r.skipped == 0
    assert [e.value for e in r.events if isinstance(e, BillStacked)] == [1000, 2000]


def test_the_shipped_key_trace_replays() -> None:
    r = replayed(HERE / "key.trace")
    assert r.mismatches == [] and r.complete
    (summary,) = r.events
    assert summary.credit == 2_500 and summary.identity.contract_account == "4711001"


def test_a_driver_that_sends_what_was_not_recorded_is_caught(tmp_path: Path) -> None:
    text = (HERE / "coin.trace").read_text()
    # the recording's acceptor at another address: our driver's commands are not in it
    changed = tmp_path / "coin.trace"
    changed.write_text(text)
    r = replay_cctalk(read_trace(changed), "coin", DENOMINATIONS["EUR"]["coins"], address=3)
    assert r.mismatches and r.events == []


def test_kiosk_devices_replay_prints_events_and_fails_on_what_was_not_recorded(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    def replay_cmd(trace: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kiosk.cli", "devices", "replay", str(trace)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    done = replay_cmd(HERE / "coin.trace")
    assert done.returncode == 0 and '"value": 200' in done.stdout, done.stderr
    bad = tmp_path / "bad.trace"
    bad.write_text("nonsense\n")
    refused = replay_cmd(bad)
    assert refused.returncode == 2 and "not a device trace" in refused.stderr
    other = tmp_path / "other.trace"  # our driver at address 2; this recording's is at 3
    other.write_text((HERE / "coin.trace").read_text().replace("> 02 ", "> 03 "))
    assert replay_cmd(other).returncode == 1


def test_a_recorded_essp_session_replays_to_the_events_seen_live() -> None:
    out = io.StringIO()
    live = record_essp(out)
    again = replay_essp(read_trace(out.getvalue()), DENOMINATIONS["EUR"]["notes"])
    assert again.mismatches == []
    assert again.events == live and [e.value for e in live if isinstance(e, BillStacked)] == [
        1000, 2000]  # fmt: skip


def test_the_shipped_essp_trace_replays() -> None:
    r = replayed(HERE / "notes-essp.trace")
    assert r.mismatches == [] and r.complete and r.skipped == 0
    assert [e.value for e in r.events if isinstance(e, BillStacked)] == [1000, 2000]


def test_kiosk_devices_record_an_essp_validator(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "notes.trace"
    done = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "devices", "record", "notes", "--protocol", "essp",
         "--port", "sim", "--out", str(out), "--seconds", "0.3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    recorded = read_trace(out)
    assert recorded.protocol == "essp" and len(recorded.records) > 10
    r = replayed(out)
    assert r.mismatches == [] and r.complete and r.events == []


def test_a_recorded_terminal_session_replays_to_the_results_seen_live() -> None:
    out = io.StringIO()
    live = record_zvt(out)
    again = replay_zvt(read_trace(out.getvalue()))
    assert again.mismatches == [] and again.complete
    assert again.events == live
    paid = live[2]
    assert paid.ok and paid.status.amount == 1234 and paid.receipts  # type: ignore[union-attr]


def test_the_shipped_terminal_trace_replays() -> None:
    r = replayed(HERE / "terminal.trace")
    assert r.mismatches == [] and r.complete and r.skipped == 0
    registered, status, paid, reversed_ = r.events
    assert registered.ok and status[1] == "ready"
    assert paid.ok and paid.status.amount == 1234 and reversed_.ok


@pytest.mark.parametrize(
    ("apdu", "shown", "note"),
    [
        # registration: the password (BCD, first three bytes) is not written
        ("06 00 06 12 34 56 be 09 78", "06 00 06 ff ff ff be 09 78", "password masked"),
        # status information: the card number keeps its last four digits (E: masked, as a
        # terminal masks), the track data is zeroed
        (
            "04 0f 0e 27 00 22 f0 f9 67 03 12 34 56 78 91 23 4f",
            "04 0f 0e 27 00 22 f0 f9 ee ee ee ee ee ee e1 23 4f",
            "card number masked",
        ),
        ("04 0f 07 27 00 23 f0 f2 12 34", "04 0f 07 27 00 23 f0 f2 00 00", "BMP 23 masked"),
        # a print line with a whole card number
        (
            "06 d1 15 00 " + bytes("PAN 4111111111111111", "ascii").hex(" "),
            "06 d1 15 00 " + bytes("PAN ************1111", "ascii").hex(" "),
            "card number masked",
        ),
        # nothing secret: written as it is
        ("80 00 00", "80 00 00", ""),
    ],
)
def test_a_terminal_trace_writes_no_password_and_no_card_number(
    apdu: str, shown: str, note: str
) -> None:
    from drivers.zvt.transport import mask_zvt

    data, said = mask_zvt(">", bytes.fromhex(apdu))
    assert data.hex(" ") == shown and said == note


def test_kiosk_devices_record_the_terminal_with_a_payment(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "terminal.trace"
    done = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "devices", "record", "terminal", "--port", "sim",
         "--out", str(out), "--amount", "1.00"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"outcome": "approved"' in done.stdout
    text = out.read_text()
    assert "# protocol zvt" in text and "password masked" in text
    r = replayed(out)
    assert r.mismatches == [] and r.complete
    assert [e.status.amount for e in r.events[1:] if e.status] == [100, 100]  # paid, reversed


def test_a_driver_that_leaves_out_the_inhibits_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the replay passed a coin driver whose enable did nothing (the
    recorded inhibit commands were passed over unreported)."""
    from drivers.cctalk.devices import CoinAcceptor

    monkeypatch.setattr(CoinAcceptor, "enable", lambda self, limit: None)
    r = replayed(HERE / "coin.trace")
    assert r.skipped > 0 or r.mismatches


def test_a_terminal_client_that_asks_another_amount_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: ZVT commands were matched by their command bytes only: a client
    asking 12.35 where 12.34 was recorded passed."""
    from drivers.zvt.client import ZvtClient

    authorise = ZvtClient.authorise
    monkeypatch.setattr(ZvtClient, "authorise",
                        lambda self, amount, **kw: authorise(self, amount + 1, **kw))  # fmt: skip
    r = replayed(HERE / "terminal.trace")
    assert any("06 01" in m for m in r.mismatches), r.mismatches


def test_a_status_with_a_field_we_cannot_read_is_masked_to_its_end() -> None:
    """Found in review: the mask stopped at the first field it could not read, and wrote the
    card number and track data after it in full."""
    from drivers.zvt.transport import mask_zvt

    data = bytes.fromhex("2700 9b01 22f0f9411111111111111111ff 23f0f441111111")
    raw = bytes((0x04, 0x0F, len(data))) + data
    shown, note = mask_zvt("<", raw)
    assert "41 11 11" not in shown.hex(" ") and "unreadable" in note
    assert shown[:5] == raw[:5]  # what came before it stays


def test_a_recorded_printer_session_replays_to_the_statuses_read_live() -> None:
    from drivers.printer.device import PaperStatus
    from drivers.replay import replay_escpos

    out = io.StringIO()
    live = record_escpos(out)
    again = replay_escpos(read_trace(out.getvalue()))
    assert again.mismatches == []
    # the job's own look at the status before printing, then what was read live
    assert again.events == [live[0], PaperStatus.OK, *live[1:]]
    assert live == [PaperStatus.OK, PaperStatus.NEAR_END, PaperStatus.OUT]


def test_the_shipped_printer_trace_replays() -> None:
    from drivers.printer.device import PaperStatus

    r = replayed(HERE / "printer.trace")
    assert r.mismatches == [] and r.complete
    assert r.events == [PaperStatus.OK, PaperStatus.OK, PaperStatus.NEAR_END, PaperStatus.OUT]


def test_kiosk_devices_record_the_printer(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "printer.trace"
    done = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "devices", "record", "printer", "--port", "sim",
         "--out", str(out), "--test-page"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    recorded = read_trace(out)
    assert recorded.protocol == "escpos"
    assert any(r.data.startswith(b"\x1b@") for r in recorded.records)  # the page's bytes
    r = replayed(out)
    assert r.mismatches == [] and [str(e) for e in r.events] == ["ok", "ok"]
