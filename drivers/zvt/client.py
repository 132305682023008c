"""ZVT client (ECR side): commands and their outcomes as values (PA00P015 ch. 2-3).

The protocol of a command's master phase is `Dialogue`, which does no I/O (fed APDUs and
timer expiries, it says what to send and when it is done); `ZvtClient` is the thin loop that
drives it over a link, and the one-shot commands around it.

After the terminal's `80 00` it is master: the client acknowledges every APDU it sends
(04 FF, 04 0F, 06 D1, 06 D3) until `06 0F` (completion) or `06 1E` (abort) ends the command.
For an authorisation the approval (04 0F with result 00) is answered only when the caller's
`decide` says so: the credit is delivered first (issue of goods); a failure answer makes the
terminal reverse the payment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from drivers.errors import DeviceTimeout, DriverError, FrameError, TransportError
from drivers.zvt.apdu import Answer, Apdu, Cmd, encode_apdu
from drivers.zvt.codes import TERMINAL_STATUS, ResultCode, result_text
from drivers.zvt.fields import CURRENCY_ISO, _llvar, bcd, encode_tlv, text
from drivers.zvt.messages import (
    IntermediateStatus,
    StatusInformation,
    parse_intermediate_status,
    parse_print_line,
    parse_print_text_block,
    parse_status_information,
)
from drivers.zvt.transport import Link

log = logging.getLogger(__name__)

#: Registration config byte: the ECR prints payment and admin receipts (bits 1, 2), wants
#: intermediate status (bit 3), no amount entry or admin functions at the terminal (bits 4, 5),
#: and receipts come as print commands (bit 7).
CONFIG_BYTE = 0xBE


class Verdict(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    REVERSED = "reversed"  # the terminal gave the money back (on our failure answer, or itself)
    ERROR = "error"


@dataclass
class Result:
    outcome: Verdict
    result_code: int | None = None
    text: str = ""
    status: StatusInformation | None = None
    receipts: dict[str, list[str]] = field(default_factory=dict)
    answered: Answer | None = None  # what the ECR answered to an approval
    recovered: bool = False  # found out after a lost connection

    @property
    def ok(self) -> bool:
        return self.outcome == Verdict.APPROVED


Decide = Callable[[StatusInformation], Answer]
OnStatus = Callable[[IntermediateStatus], None]


class ZvtClient:
    """One terminal on one link; every method runs on the caller's (single) thread."""

    def __init__(
        self,
        link: Link,
        *,
        password: int = 0,
        currency: str = "EUR",
        t3: float = 5.0,
        t4: float = 180.0,
        goods_timeout: int = 30,
        max_status_infos: int = 5,
    ) -> None:
        self.link = link
        self.password = password
        self.currency = currency
        self.t3 = t3
        self.t4 = t4
        self.goods_timeout = goods_timeout
        self.max_status_infos = max_status_infos
        self._abort = threading.Event()
        self.last_receipt_number: int | None = None

    # ------------------------------------------------------------------ public commands

    def register(self) -> Result:
        """06 00 Registration: our config byte, currency, and print text blocks allowed."""
        tlv = encode_tlv(0x26, encode_tlv(0x0A, Cmd.PRINT_TEXT_BLOCK))
        data = (
            bcd(self.password, 3)
            + bytes((CONFIG_BYTE,))
            + bcd(CURRENCY_ISO[self.currency], 2)
            + bytes((0x03, 0x00))
            + bytes((0x06, len(tlv)))
            + tlv
        )
        return self._run(Cmd.REGISTRATION, data)

    def authorise(
        self,
        amount: int,
        *,
        decide: Decide,
        on_status: OnStatus | None = None,
    ) -> Result:
        """06 01 Authorization for exactly `amount` minor units, with BMP 01 and 02 set."""
        if not 0 < amount < 10**10:
            raise ValueError(f"amount {amount} out of range")
        data = (
            b"\x04"
            + bcd(amount, 6)
            + b"\x49"
            + bcd(CURRENCY_ISO[self.currency], 2)
            + b"\x01"
            + bytes((self.goods_timeout,))
            + b"\x02"
            + bytes((self.max_status_infos,))
        )
        self._abort.clear()
        return self._run(Cmd.AUTHORIZATION, data, decide=decide, on_status=on_status)

    def reversal(self, receipt_number: int) -> Result:
        """06 30 Reversal of a completed payment, by its receipt number."""
        return self._run(Cmd.REVERSAL, bcd(self.password, 3) + b"\x87" + bcd(receipt_number, 2))

    def end_of_day(self) -> Result:
        """06 50 End-of-day (Kassenschnitt)."""
        return self._run(Cmd.END_OF_DAY, bcd(self.password, 3))

    def diagnosis(self) -> Result:
        return self._run(Cmd.DIAGNOSIS, b"")

    def repeat_receipt(self) -> Result:
        """06 20: the last transaction's result again."""
        return self._run(Cmd.REPEAT_RECEIPT, bcd(self.password, 3))

    def status_enquiry(self) -> tuple[int, str, str]:
        """05 01: (terminal status code, its text, software version)."""
        self._check_ack(self._send_command(Cmd.STATUS_ENQUIRY, bcd(self.password, 3)))
        deadline = time.monotonic() + self.t3 * 4
        while True:
            apdu = self.link.receive(max(0.01, deadline - time.monotonic()))
            self._ack()
            if apdu.is_(Cmd.COMPLETION):
                data = apdu.data
                version = ""
                if len(data) >= 4 and data[0] >> 4 == 0xF:
                    n, pos = _llvar(data, 0, 3)
                    version, data = text(data[pos : pos + n]), data[pos + n :]
                code = data[0] if data else 0
                return code, TERMINAL_STATUS.get(code, f"status {code:02X}"), version
            if time.monotonic() > deadline:
                raise DeviceTimeout("no completion to the status enquiry")

    def request_abort(self) -> None:
        """Ask the running command to abort (06 B0); safe from any thread."""
        self._abort.set()

    # ------------------------------------------------------------------ the exchange

    def _ack(self) -> None:
        self.link.send(encode_apdu(Cmd.ACK))

    def _send_command(self, command: bytes, data: bytes) -> Apdu:
        """Send a command and return the terminal's first answer (within T3)."""
        self.link.refresh()
        try:
            self.link.send(encode_apdu(command, data))
            return self.link.receive(self.t3)
        except TransportError as err:
            # The connection failed before the terminal acknowledged anything (a socket it
            # had closed while idle): nothing started, so a fresh connection may resend once.
            log.info("resending %s on a fresh connection (%s)", command.hex(" "), err)
            self.link.close()
            self.link.send(encode_apdu(command, data))
            return self.link.receive(self.t3)

    @staticmethod
    def _check_ack(apdu: Apdu) -> Apdu:
        if apdu.command[0] == Cmd.NEG and apdu.command[1] != 0:
            raise _Negative(apdu.command[1])
        if not (apdu.is_(Cmd.ACK) or apdu.command == bytes((Cmd.NEG, 0))):
            raise FrameError(f"expected 80 00 or 84 xx, got {apdu.command.hex(' ')}")
        return apdu

    def _run(
        self,
        command: bytes,
        data: bytes,
        *,
        decide: Decide | None = None,
        on_status: OnStatus | None = None,
    ) -> Result:
        state = _Exchange()
        try:
            try:
                first = self._send_command(command, data)
                self._check_ack(first)
            except _Negative as neg:
                return Result(Verdict.ERROR, neg.code, result_text(neg.code))
            except DeviceTimeout:
                return Result(Verdict.ERROR, None, "the terminal did not answer the command (T3)")
            return self._master_loop(state, decide, on_status)
        except TransportError as err:
            if command != Cmd.AUTHORIZATION or not state.started:
                return Result(Verdict.ERROR, None, f"terminal not reachable: {err}")
            return self._recover(state, str(err))
        except DriverError as err:  # no ACK after the repeats, or a malformed message
            log.error("terminal error during %s: %s", command.hex(" "), err)
            if command == Cmd.AUTHORIZATION and state.answered == Answer.OK:
                return self._recover(state, str(err))
            return state.result(Verdict.ERROR, None, f"terminal error: {err}")

    def _master_loop(
        self, st: _Exchange, decide: Decide | None, on_status: OnStatus | None
    ) -> Result:
        """The thin I/O loop around `Dialogue`: it sends what the dialogue says, feeds it the
        terminal's APDUs and the clock, and asks the caller what the dialogue asks."""
        d = Dialogue(st, self.t3, self.t4, time.monotonic(), decides=decide is not None)
        while d.result is None:
            if self._abort.is_set():
                d.abort()
            self._send_all(d)
            now = time.monotonic()
            if now >= d.deadline:
                d.expired(now)
                continue
            try:
                apdu = self.link.receive(min(d.deadline - now, 0.2))
            except DeviceTimeout:
                continue
            d.receive(apdu, time.monotonic())
            if st.status is not None and st.status.receipt_number is not None:
                self.last_receipt_number = st.status.receipt_number
            self._send_all(d)  # the acknowledgement first, then the caller hears of it
            for status in d.take_statuses():
                if on_status is not None:
                    on_status(status)
            if d.wants_decision is not None:
                assert decide is not None
                d.decided(decide(d.wants_decision))
        self._send_all(d)
        assert d.result is not None
        return d.result

    def _send_all(self, d: Dialogue) -> None:
        for apdu in d.take_output():
            self.link.send(apdu)

    def _recover(self, st: _Exchange, reason: str) -> Result:
        """The link dropped while the terminal was master: ask what became of the payment."""
        log.error("connection lost during a payment (%s): asking the terminal", reason)
        self.link.close()
        try:
            last = self.repeat_receipt()
        except DriverError as err:
            return st.result(
                Verdict.ERROR,
                None,
                f"connection lost and terminal unreachable: {err}",
                recovered=True,
            )
        info = last.status
        ours = (
            st.status is not None
            and info is not None
            and info.receipt_number == st.status.receipt_number
        )
        if st.answered == Answer.OK and ours and info is not None and info.approved:
            return st.result(
                Verdict.APPROVED, 0, "approved (confirmed after reconnect)", recovered=True
            )
        if st.answered == Answer.OK:
            # We delivered the credit but the terminal did not keep the payment.
            return st.result(
                Verdict.REVERSED,
                info.result_code if info else None,
                "the terminal reversed the payment after the connection dropped",
                recovered=True,
            )
        return st.result(
            Verdict.ERROR,
            info.result_code if info else None,
            "connection lost; the payment did not go through",
            recovered=True,
        )


class _Negative(DriverError):
    def __init__(self, code: int) -> None:
        super().__init__(f"terminal answered 84 {code:02X}: {result_text(code)}")
        self.code = code


class Dialogue:
    """The part of a command where the terminal is master (PA00P015 ch. 2.2), sans I/O: it is
    fed the terminal's APDUs (`receive`) and the clock's expiries (`expired`, when `deadline`
    has passed), and says what to send (`take_output`), what to show (`take_statuses`), when
    it needs the caller's decision on an approval (`wants_decision`, answered by `decided`),
    and how it ended (`result`). T4 runs from each message; an intermediate status may set
    its own; when it runs out the dialogue aborts and gives the terminal T3 to close."""

    def __init__(self, st: _Exchange, t3: float, t4: float, now: float, decides: bool) -> None:
        self.st = st
        st.started = True
        self.t3, self.t4 = t3, t4
        self.deadline = now + t4
        self.decides = decides
        self.abort_sent = False
        self.timed_out = False
        self.result: Result | None = None
        self.wants_decision: StatusInformation | None = None
        self._out: list[bytes] = []
        self._statuses: list[IntermediateStatus] = []

    def take_output(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def take_statuses(self) -> list[IntermediateStatus]:
        out, self._statuses = self._statuses, []
        return out

    def abort(self) -> None:
        """The caller wants out (06 B0), unless an approval was already answered."""
        if not self.abort_sent and self.st.answered is None:
            self._out.append(encode_apdu(Cmd.ABORT))
            self.abort_sent = True

    def expired(self, now: float) -> None:
        if self.timed_out:  # not even the abort was answered
            self.result = self.st.result(
                Verdict.TIMEOUT, ResultCode.ABORTED, "no answer from the terminal (T4)"
            )
            return
        self.timed_out = True
        if not self.abort_sent:
            self._out.append(encode_apdu(Cmd.ABORT))
            self.abort_sent = True
        self.deadline = now + self.t3

    def decided(self, answer: Answer) -> None:
        self.wants_decision = None
        self.st.answered = answer
        self._out.append(encode_apdu(bytes((Cmd.NEG, answer)) if answer != Answer.OK else Cmd.ACK))

    def receive(self, apdu: Apdu, now: float) -> None:
        try:
            self._receive(apdu, now)
        except FrameError as err:
            if apdu.command not in _INFORMATIVE:
                raise
            # A display text or a receipt line we cannot read must not end a payment: it
            # is acknowledged as the terminal expects, and logged.
            log.warning("unreadable %s from the terminal: %s", apdu.command.hex(" "), err)
            self._out.append(encode_apdu(Cmd.ACK))

    def _receive(self, apdu: Apdu, now: float) -> None:
        st, c = self.st, apdu.command
        ack = encode_apdu(Cmd.ACK)
        if c == Cmd.INTERMEDIATE_STATUS:
            status = parse_intermediate_status(apdu.data)
            self._out.append(ack)
            minutes = status.timeout_minutes
            self.deadline = now + (minutes * 60 if minutes else self.t4)
            self._statuses.append(status)
        elif c == Cmd.PRINT_LINE:
            line = parse_print_line(apdu.data)
            self._out.append(ack)
            st.lines += line.lines
            st.line_type = line.receipt_type or st.line_type
            if line.last:
                st.end_receipt()
        elif c == Cmd.PRINT_TEXT_BLOCK:
            block = parse_print_text_block(apdu.data)
            self._out.append(ack)
            st.receipts[block.receipt_type] = list(block.lines)
        elif c == Cmd.STATUS_INFORMATION:
            info = parse_status_information(apdu.data)
            st.status = info
            self.deadline = now + self.t4
            if info.approved and self.decides and st.answered != Answer.OK:
                self.wants_decision = info  # answered when the caller has decided
            elif info.result_code is None and self.decides and st.answered is None:
                # A payment's outcome we cannot read (the result code missing, cut off, sent
                # twice differently): the terminal may have approved it. Acknowledging would
                # let it keep money the automat never credits; "goods not delivered" makes
                # it reverse whatever it approved.
                why = "; ".join(info.problems)
                log.error("a status information without a readable result code: answered "
                          "'failed' so the terminal reverses (%s)", why)  # fmt: skip
                st.answered = Answer.FAILED
                self._out.append(encode_apdu(bytes((Cmd.NEG, Answer.FAILED))))
            else:
                self._out.append(ack)
        elif c == Cmd.COMPLETION:
            self._out.append(ack)
            if st.answered is not None and st.answered != Answer.OK:
                self.result = st.result(Verdict.REVERSED, 0, "reversed by the terminal")
            elif st.status is not None and not st.status.approved:
                code = st.status.result_code or 0
                self.result = st.result(_failure(code), code, result_text(code))
            else:
                self.result = st.result(Verdict.APPROVED, 0, "approved")
        elif c == Cmd.ABORT_TERMINAL:
            self._out.append(ack)
            code = apdu.data[0] if apdu.data else 0xFF
            if self.timed_out:
                self.result = st.result(Verdict.TIMEOUT, code, "no answer from the terminal (T4)")
            elif st.answered is not None and st.answered != Answer.OK:
                self.result = st.result(Verdict.REVERSED, code, "reversed by the terminal")
            else:
                self.result = st.result(_failure(code), code, result_text(code))
        else:
            log.warning("unexpected APDU from the terminal: %s", c.hex(" "))
            self._out.append(ack)


#: what the terminal sends to be shown or printed: one we cannot read is skipped
_INFORMATIVE = (Cmd.INTERMEDIATE_STATUS, Cmd.PRINT_LINE, Cmd.PRINT_TEXT_BLOCK)


@dataclass
class _Exchange:
    started: bool = False
    status: StatusInformation | None = None
    answered: Answer | None = None
    lines: list[str] = field(default_factory=list)
    line_type: str | None = None  # the receipt type the print lines named (TLV 1F07)
    receipts: dict[str, list[str]] = field(default_factory=dict)

    def end_receipt(self) -> None:
        """The print lines so far are one receipt: by the type they named, else numbered."""
        key = self.line_type
        if key is None or key in self.receipts:
            key = f"receipt{len(self.receipts) + 1}"
        self.receipts[key] = self.lines
        self.lines, self.line_type = [], None

    def result(
        self, outcome: Verdict, code: int | None, msg: str, recovered: bool = False
    ) -> Result:
        if self.lines:
            self.end_receipt()
        return Result(outcome, code, msg, self.status, self.receipts, self.answered, recovered)


def _failure(code: int) -> Verdict:
    return Verdict.ABORTED if code == ResultCode.ABORTED else Verdict.DECLINED
