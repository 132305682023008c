"""The ZVT master phase without I/O (`Dialogue`): APDUs and timer expiries in, what to send,
what to show, what to decide and the result out. The same dialogue runs over real links in
tests/test_zvt_client.py; here each rule is seen on its own."""

from __future__ import annotations

from drivers.zvt.apdu import Answer, Apdu, Cmd, decode_apdu, encode_apdu
from drivers.zvt.client import Dialogue, Verdict, _Exchange
from drivers.zvt.fields import bcd

ACK = encode_apdu(Cmd.ACK)
T3, T4 = 5.0, 180.0


def apdu(command: bytes, data: bytes = b"") -> Apdu:
    return decode_apdu(encode_apdu(command, data))


def approved(amount: int = 2000) -> Apdu:
    return apdu(Cmd.STATUS_INFORMATION, b"\x27\x00\x04" + bcd(amount, 6) + b"\x87" + bcd(42, 2))


def dialogue(decides: bool = True) -> Dialogue:
    return Dialogue(_Exchange(), T3, T4, now=100.0, decides=decides)


def test_a_status_is_acknowledged_before_it_is_shown_and_moves_the_deadline() -> None:
    d = dialogue()
    d.receive(apdu(Cmd.INTERMEDIATE_STATUS, bytes((0x0A,))), now=130.0)
    assert d.take_output() == [ACK]
    assert [(s.code, s.text) for s in d.take_statuses()] == [(0x0A, "insert card")]
    assert d.deadline == 130.0 + T4 and d.result is None


def test_an_approval_waits_for_the_decision_and_the_credit_comes_first() -> None:
    d = dialogue()
    d.receive(approved(), now=101.0)
    assert d.take_output() == []  # nothing answered before the caller has decided
    assert d.wants_decision is not None and d.wants_decision.amount == 2000
    d.decided(Answer.OK)
    assert d.take_output() == [ACK] and d.wants_decision is None
    d.abort()  # too late: an approval answered OK is not aborted
    assert d.take_output() == []
    d.receive(apdu(Cmd.COMPLETION), now=102.0)
    assert d.take_output() == [ACK]
    assert d.result is not None and d.result.outcome == Verdict.APPROVED
    assert d.result.status is not None and d.result.status.receipt_number == 42


def test_a_failed_delivery_is_answered_84_66_and_the_terminal_reverses() -> None:
    d = dialogue()
    d.receive(approved(), now=101.0)
    d.decided(Answer.FAILED)
    assert d.take_output() == [encode_apdu(bytes((Cmd.NEG, Answer.FAILED)))]
    d.receive(apdu(Cmd.COMPLETION), now=102.0)
    assert d.result is not None and d.result.outcome == Verdict.REVERSED


def test_t4_running_out_aborts_then_gives_up_after_t3() -> None:
    d = dialogue()
    d.expired(now=280.0)
    assert d.take_output() == [encode_apdu(Cmd.ABORT)] and d.deadline == 280.0 + T3
    assert d.result is None
    d.expired(now=285.0)  # not even the abort answered
    assert d.take_output() == [] and d.result is not None
    assert (d.result.outcome, d.result.result_code) == (Verdict.TIMEOUT, 0x6C)


def test_the_terminal_s_abort_says_why_and_receipt_lines_are_kept() -> None:
    d = dialogue(decides=False)
    d.receive(apdu(Cmd.PRINT_LINE, b"\x00Karte gesperrt"), now=101.0)
    d.receive(apdu(Cmd.ABORT_TERMINAL, b"\x6e"), now=102.0)
    assert d.take_output() == [ACK, ACK]
    assert d.result is not None and d.result.outcome == Verdict.DECLINED
    assert d.result.result_code == 0x6E and "blocked" in d.result.text
    assert d.result.receipts == {"receipt1": ["Karte gesperrt"]}


def test_a_display_text_or_print_line_that_cannot_be_read_does_not_end_the_payment() -> None:
    """#35: what is only shown or printed is acknowledged and logged when it is malformed;
    the approval after it is still taken."""
    d = dialogue()
    d.receive(apdu(Cmd.INTERMEDIATE_STATUS, bytes.fromhex("0a 06 09 24 02")), now=101.0)
    d.receive(apdu(Cmd.PRINT_TEXT_BLOCK, bytes.fromhex("07 00")), now=101.5)
    assert d.take_output() == [ACK, ACK] and d.result is None
    d.receive(approved(), now=102.0)
    assert d.wants_decision is not None and d.wants_decision.approved
