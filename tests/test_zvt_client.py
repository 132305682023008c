"""The ZVT client against the terminal simulator, on a real pty (serial framing) and on TCP."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator

import pytest

from drivers.errors import DeviceTimeout
from drivers.zvt.apdu import Answer, Apdu, Cmd, encode_apdu
from drivers.zvt.client import Verdict, ZvtClient
from drivers.zvt.framing import frame
from drivers.zvt.messages import StatusInformation
from drivers.zvt.sim import TerminalSim
from drivers.zvt.transport import SerialLink, open_link


@pytest.fixture(params=["serial", "tcp"])
def term(request: pytest.FixtureRequest) -> Iterator[tuple[TerminalSim, ZvtClient]]:
    sim = TerminalSim(request.param)
    sim.start()
    client = ZvtClient(open_link(sim.port), t3=1.0, t4=2.0)
    yield sim, client
    client.link.close()
    sim.stop()


def ok(_info: StatusInformation) -> Answer:
    return Answer.OK


def test_registration_asks_for_status_and_receipts(term: tuple[TerminalSim, ZvtClient]) -> None:
    sim, client = term
    assert client.register().outcome == Verdict.APPROVED
    assert sim.config_byte == 0xBE and sim.text_blocks  # status wanted, ECR prints, 06 D3 allowed


@pytest.mark.parametrize(
    "card,name", [("girocard", "girocard"), ("mastercard", "Mastercard"), ("visa", "VISA")]
)
def test_approved_payment(term: tuple[TerminalSim, ZvtClient], card: str, name: str) -> None:
    sim, client = term
    client.register()
    sim.card = card
    texts: list[str] = []
    seen: list[StatusInformation] = []

    def decide(info: StatusInformation) -> Answer:
        seen.append(info)
        assert not sim.payments[-1].kept  # nothing is kept before we say the goods are out
        return Answer.OK

    r = client.authorise(2000, decide=decide, on_status=lambda s: texts.append(s.text))
    assert r.outcome == Verdict.APPROVED and r.answered == Answer.OK
    assert texts == ["insert card", "please watch PIN pad", "please wait"]
    info = r.status
    assert info is not None and info.amount == 2000 and info.card_name == name
    assert (
        info.pan is not None and "*" in info.pan and info.receipt_number == sim.payments[-1].receipt
    )
    assert sim.payments[-1].kept and len(seen) == 1
    assert set(r.receipts) == {"merchant", "customer"}
    assert "Betrag EUR 20.00" in r.receipts["customer"]


def test_receipts_as_print_lines_without_text_blocks(term: tuple[TerminalSim, ZvtClient]) -> None:
    sim, client = term  # not registered: the simulator falls back to 06 D1 lines
    r = client.authorise(500, decide=ok)
    assert r.outcome == Verdict.APPROVED
    assert (
        list(r.receipts) == ["receipt1", "receipt2"]
        and r.receipts["receipt2"][-1] == "Zahlung erfolgt"
    )


@pytest.mark.parametrize(
    "script,outcome,code,text",
    [
        ("decline", Verdict.DECLINED, 0x05, "declined by the card issuer"),
        ("wrong_pin", Verdict.DECLINED, 0x37, "declined by the host (55)"),
        ("unreadable", Verdict.DECLINED, 0x64, "card not readable"),
        ("customer_abort", Verdict.ABORTED, 0x6C, "abort via timeout or abort key"),
        ("busy", Verdict.ERROR, 0xA0, "receiver not ready"),
        ("timeout", Verdict.TIMEOUT, 0x6C, "no answer from the terminal (T4)"),
    ],
)
def test_failed_payments(
    term: tuple[TerminalSim, ZvtClient], script: str, outcome: Verdict, code: int, text: str
) -> None:
    sim, client = term
    sim.next(script)
    r = client.authorise(1000, decide=ok)
    assert (r.outcome, r.result_code, r.text) == (outcome, code, text)
    assert not any(p.kept for p in sim.payments)
    # and the line is clean for the next payment
    assert client.authorise(1000, decide=ok).outcome == Verdict.APPROVED


def test_failure_answer_makes_the_terminal_reverse(term: tuple[TerminalSim, ZvtClient]) -> None:
    sim, client = term
    r = client.authorise(1500, decide=lambda _i: Answer.FAILED)
    assert r.outcome == Verdict.REVERSED and r.answered == Answer.FAILED
    assert sim.payments[-1].reversed and not sim.payments[-1].kept


def test_not_yet_then_ok(term: tuple[TerminalSim, ZvtClient]) -> None:
    sim, client = term
    answers = iter([Answer.NOT_YET, Answer.NOT_YET, Answer.OK])
    r = client.authorise(1500, decide=lambda _i: next(answers))
    assert r.outcome == Verdict.APPROVED and sim.payments[-1].kept


def test_abort_from_another_thread_while_at_the_pin_pad(
    term: tuple[TerminalSim, ZvtClient],
) -> None:
    sim, client = term
    sim.next("hold")
    threading.Timer(0.2, client.request_abort).start()
    r = client.authorise(1000, decide=ok)
    assert r.outcome == Verdict.ABORTED and not sim.payments


def test_silent_terminal(term: tuple[TerminalSim, ZvtClient]) -> None:
    sim, client = term
    sim.inject("silence")
    r = client.authorise(1000, decide=ok)
    assert r.outcome == Verdict.ERROR and "T3" in r.text
    assert client.authorise(1000, decide=ok).outcome == Verdict.APPROVED


def test_reversal_by_receipt_number_end_of_day_and_enquiries(
    term: tuple[TerminalSim, ZvtClient],
) -> None:
    sim, client = term
    first = client.authorise(1000, decide=ok)
    client.authorise(2500, decide=ok)
    assert first.status is not None and first.status.receipt_number is not None
    rev = client.reversal(first.status.receipt_number)
    assert rev.outcome == Verdict.APPROVED and rev.status is not None
    assert rev.status.original_trace == first.status.trace_number and sim.payments[0].reversed
    again = client.reversal(first.status.receipt_number)
    assert again.outcome == Verdict.DECLINED and again.text == "already reversed"
    eod = client.end_of_day()
    assert eod.outcome == Verdict.APPROVED and eod.status is not None and eod.status.amount == 2500
    assert "Summe EUR 25.00  (1 Zahlungen)" in eod.receipts["receipt1"]
    totals = eod.status.totals  # BMP 60, individual totals per card group
    assert totals is not None and totals.last_receipt == first.status.receipt_number + 1
    assert totals.groups[0] == ("girocard", 1, 2500) and all(
        n == 0 for _g, n, _t in totals.groups[1:]
    )
    assert client.diagnosis().outcome == Verdict.APPROVED
    assert client.status_enquiry() == (0, "ready", "SIM 2.14.15")
    last = client.repeat_receipt()
    assert last.status is not None and last.status.amount == 1000  # the reversal's record


def test_serial_line_faults_are_repeated() -> None:
    with TerminalSim("serial") as sim:
        client = ZvtClient(open_link(sim.port), t3=1.0, t4=2.0)
        sim.inject("nak")
        assert client.authorise(1000, decide=ok).outcome == Verdict.APPROVED
        sim.inject("bad_crc")
        assert client.authorise(1000, decide=ok).outcome == Verdict.APPROVED
        assert client.link.stats == {"naks_sent": 1, "repeats": 1}  # type: ignore[attr-defined]
        client.link.close()


def test_ack_and_a_damaged_frame_in_one_read_do_not_cost_a_repeat() -> None:
    """The terminal ACKs our frame and at once sends a frame that arrives damaged, all in one
    read: the ACK counts (no T2 wait, no repeat) and the damaged frame is NAKed."""
    leader, follower = os.openpty()
    try:
        link = SerialLink(os.ttyname(follower), t2=3.0)
        damaged = bytearray(frame(encode_apdu(Cmd.INTERMEDIATE_STATUS, b"\x17")))
        damaged[-1] ^= 0xFF

        link.connect()
        os.write(leader, b"\x06" + bytes(damaged))  # waiting before we read: one read has both
        link.send(encode_apdu(Cmd.ACK))
        assert link.stats == {"naks_sent": 1, "repeats": 0}
        want = frame(encode_apdu(Cmd.ACK)) + b"\x15"  # our frame once, then the NAK
        sent = b""
        while len(sent) < len(want) and select.select([leader], [], [], 2.0)[0]:
            sent += os.read(leader, 64)  # a pty may hand the two writes over separately
        assert sent == want
        link.close()
    finally:
        os.close(leader)
        os.close(follower)


def test_connection_drop_after_approval_is_found_out() -> None:
    with TerminalSim("tcp") as sim:
        client = ZvtClient(open_link(sim.port), t3=1.0, t4=2.0)
        sim.next("drop_after_approval")
        answered: list[Answer] = []

        def decide(_i: StatusInformation) -> Answer:
            answered.append(Answer.OK)
            return Answer.OK

        r = client.authorise(1000, decide=decide)
        assert r.recovered and r.outcome == Verdict.REVERSED and answered == [Answer.OK]
        assert not sim.payments[-1].kept  # the terminal never got our answer: nothing kept
        assert client.authorise(1000, decide=ok).outcome == Verdict.APPROVED  # fresh connection
        client.link.close()


def test_unreachable_terminal_is_an_error_value() -> None:
    client = ZvtClient(open_link("tcp://127.0.0.1:9"), t3=0.5)
    r = client.authorise(1000, decide=ok)
    assert r.outcome == Verdict.ERROR and "not reachable" in r.text


def test_a_connection_the_terminal_dropped_while_idle_is_renewed() -> None:
    with TerminalSim("tcp") as sim:
        client = ZvtClient(open_link(sim.port), t3=1.0, t4=2.0)
        sim.inject("close_idle")
        assert client.authorise(1000, decide=ok).outcome == Verdict.APPROVED
        # the terminal has closed the socket since; the next command must not be lost on it
        assert client.authorise(1000, decide=ok).outcome == Verdict.APPROVED
        assert [p.kept for p in sim.payments] == [True, True]
        client.link.close()


def test_serial_frame_stalled_mid_way_is_dropped_after_t1() -> None:
    with TerminalSim("serial") as sim:
        link = open_link(sim.port)
        assert isinstance(link, SerialLink)
        link.connect()
        assert link.port is not None
        os.write(sim._master, b"\x10\x02\x80")  # the start of a frame, then nothing
        with pytest.raises(DeviceTimeout):
            link.receive(0.4)
        assert not link.decoder.busy  # T1 (200 ms) cleared the half frame
        link.close()


# ---------------------------------------------------------------- #35: every BMP, terminals' quirks


def test_an_approval_carrying_every_bmp_of_the_specification_is_taken(
    term: tuple[TerminalSim, ZvtClient],
) -> None:
    """The simulator sends one of each BMP of PA00P015 chapter 13 (and more TLV) in the
    approval's status information: the payment is approved and kept, none refused."""
    from drivers.zvt.fields import encode_tlv
    from drivers.zvt.sim import every_bmp

    sim, client = term
    sim.status_bmps = every_bmp()
    sim.status_tlv = encode_tlv(0x1F2B, bytes.fromhex("00001234")) + encode_tlv(0x41, b"\x05")
    r = client.authorise(1250, decide=ok)
    assert r.outcome == Verdict.APPROVED and sim.payments[-1].kept
    info = r.status
    assert info is not None and info.amount == 1250 and info.full_date == "260331"
    assert info.receipt_number == sim.payments[-1].receipt
    # BMP 60 of the sample is no totals record: skipped and logged, the rest read
    assert info.totals is None and [p for p in info.problems if "60" in p]


def test_the_end_of_day_without_its_length_byte(term: tuple[TerminalSim, ZvtClient]) -> None:
    """A real terminal sends the end-of-day's 04 0F without its length byte: on serial it was
    refused, on TCP cut into invented APDUs. Now it is one status information on both."""
    sim, client = term
    client.authorise(1500, decide=ok)
    sim.quirks.add("eod_without_length")
    eod = client.end_of_day()
    assert eod.outcome == Verdict.APPROVED and eod.status is not None
    assert eod.status.amount == 1500 and eod.status.totals is not None
    assert eod.status.totals.groups[0] == ("girocard", 1, 1500) and not eod.status.problems
    assert client.authorise(300, decide=ok).outcome == Verdict.APPROVED  # nothing left over


def test_print_lines_ending_with_the_receipt_type(term: tuple[TerminalSim, ZvtClient]) -> None:
    """Each 06 D1 ends with 06 04 1F07 01 xx: the receipts are named by it and its bytes are
    not in the text."""
    sim, client = term
    sim.quirks.add("print_line_tlv")
    r = client.authorise(500, decide=ok)  # not registered: receipts as print lines
    assert r.outcome == Verdict.APPROVED and list(r.receipts) == ["merchant", "customer"]
    assert r.receipts["customer"][-1] == "Zahlung erfolgt"
    assert not [line for lines in r.receipts.values() for line in lines if "\x06" in line]


def test_the_simulator_refuses_a_bmp_it_does_not_know(term: tuple[TerminalSim, ZvtClient]) -> None:
    """PA00P015 ch. 13: a terminal answers a command with an unknown BMP 84 83 00."""
    sim, client = term
    link = client.link
    link.send(encode_apdu(Cmd.AUTHORIZATION, bytes.fromhex("04 00 00 00 00 10 00 5f 01")))
    answer = link.receive(2.0)
    assert answer.command == bytes((0x84, 0x83)) and sim.payments == []


class _Script:
    """A terminal that is a list of APDUs: what the client sends is kept."""

    def __init__(self, script: list[Apdu]) -> None:
        self.script, self.sent = list(script), []  # type: ignore[var-annotated]

    def refresh(self) -> None:
        """Never stale."""

    def connect(self) -> None:
        """Always there."""

    def close(self) -> None:
        """Nothing to close."""

    def send(self, apdu: bytes) -> None:
        self.sent.append(bytes(apdu))

    def receive(self, timeout: float) -> Apdu:
        if not self.script:
            raise DeviceTimeout("the script has ended")
        return self.script.pop(0)


@pytest.mark.parametrize(
    "status",
    [
        "9b01 2700 04000000001000 870153",  # an unknown BMP before the result code
        "2700 04000000001000 870153 27ff",  # the result code twice, differently
    ],
    ids=["unknown BMP first", "result code twice"],
)
def test_a_payment_whose_result_code_cannot_be_read_is_answered_failed(status: str) -> None:
    """Found in review: such a status information was acknowledged (80 00) and the payment
    taken as declined, while the terminal may have approved it and kept the money. Now it
    is answered "goods not delivered" (84 66): the terminal reverses whatever it approved."""
    data = bytes.fromhex(status.replace(" ", ""))
    link = _Script([Apdu(Cmd.ACK), Apdu(Cmd.STATUS_INFORMATION, data), Apdu(Cmd.COMPLETION)])
    decided: list[object] = []
    result = ZvtClient(link, t3=0.2, t4=0.5).authorise(  # type: ignore[arg-type]
        1000, decide=lambda info: decided.append(info) or Answer.OK
    )
    assert link.sent[1] == bytes.fromhex("846600") and decided == []
    assert result.outcome == Verdict.REVERSED and not result.ok
