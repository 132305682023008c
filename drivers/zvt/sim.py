"""A ZVT payment terminal simulator on a pty (serial framing) or a TCP port, scriptable.

Outcomes for the next authorisations: "approve" (with `card` girocard, mastercard or visa),
"decline" (host code 05), "wrong_pin", "unreadable", "customer_abort", "timeout" (the
terminal never finishes), "busy" (84 A0 to the command), "hold" (waits at the PIN pad for an
abort), "drop_after_approval" (TCP: the connection drops right after the approval). Line
faults for the serial line: "nak" (NAK the next frame), "bad_crc" (the next frame sent has a
wrong CRC); on both, "silence" (ignore the next command); on TCP, "close_idle" (close the
connection after the next command, as terminals that drop idle ECR sockets do).

Vending semantics: an approval is kept only when the ECR answers it with 80 00; a failure
answer, no answer within BMP 01, or a lost connection reverses it.

Strict as a terminal (PA00P015 ch. 13): a command with a BMP it does not know, or one it
cannot read, is answered 84 83 ("function not possible"). What it sends is by the
specification unless told otherwise: `status_bmps` adds BMPs to every status information
(`every_bmp()` is one of each BMP of the specification), `status_tlv` adds TLV objects to
its container, and `quirks` turns on what real terminals do: "eod_without_length" (the
end-of-day's status information without its length byte) and "print_line_tlv" (each print
line ends with ``06 04 1F07 01 <receipt type>``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pty
import select
import socket
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass, field

from drivers.errors import FrameError
from drivers.zvt.apdu import Apdu, ApduReassembler, Cmd, decode_apdu, encode_apdu
from drivers.zvt.codes import Intermediate, ResultCode
from drivers.zvt.fields import (
    BMP_FORMATS,
    TLV_BMP,
    bcd,
    encode_bmp,
    encode_tlv,
    from_bcd,
    llvar,
    parse_bmps,
    split_bmps,
)
from drivers.zvt.framing import ACK, NAK, SerialDecoder, frame
from drivers.zvt.messages import DayTotals

log = logging.getLogger(__name__)

CARDS = {
    "girocard": (0x05, "girocard", "672600EEEEEE1234F"),
    "mastercard": (0x06, "Mastercard", "5413EEEEEEEE0004"),
    "visa": (0x0A, "VISA", "4761EEEEEEEE0010"),
}


QUIRKS = frozenset({"eod_without_length", "print_line_tlv"})


def sample_bmp(bmp: int) -> bytes:
    """One BMP of the specification with a value of its format (BCD digits for the BCD
    fields, text for the texts), encoded as a terminal sends it."""
    fmt = BMP_FORMATS[bmp]
    if fmt == "TLV":
        return encode_bmp(bmp, encode_tlv(0x1F10, b"\x02"))
    if fmt in ("LL", "LLL"):
        value = bytes.fromhex("672600eeeeee1234ff") if bmp == 0x22 else f"BMP {bmp:02X}".encode()
        return encode_bmp(bmp, value)
    assert isinstance(fmt, int)
    values = {
        0x2A: b"100764992      ",  # VU number, ASCII
        0x3B: b"958520\x00\x00",  # AID, ASCII
        0xAA: bcd(260331, 3),  # date YYMMDD
    }
    return encode_bmp(bmp, values.get(bmp) or bcd(bmp % 100, fmt))


def every_bmp(*, leave_out: tuple[int, ...] = ()) -> bytes:
    """Each BMP of the specification once (but the TLV container), in the order of its
    table."""
    return b"".join(
        sample_bmp(b) for b in sorted(BMP_FORMATS) if b != TLV_BMP and b not in leave_out
    )


class _Gone(Exception):
    """The ECR went away (TCP closed)."""


@dataclass
class Payment:
    receipt: int
    trace: int
    amount: int
    card: str
    kept: bool = False
    reversed: bool = False


@dataclass
class _Conn:
    """One connection's byte channel: serial (fd, framed, ACK/NAK) or TCP (raw APDUs)."""

    sim: TerminalSim
    fd: int | None = None
    sock: socket.socket | None = None
    serial_dec: SerialDecoder = field(default_factory=SerialDecoder)
    reasm: ApduReassembler = field(default_factory=ApduReassembler)
    ready: deque[Apdu] = field(default_factory=deque)
    acks: deque[int] = field(default_factory=deque)

    def _raw_read(self, timeout: float) -> bytes:
        if self.sim._stop.is_set():
            raise _Gone()
        target: int | socket.socket
        if self.fd is not None:
            target = self.fd
        else:
            assert self.sock is not None
            target = self.sock
        r, _, _ = select.select([target], [], [], max(0.0, timeout))
        if not r:
            return b""
        if self.fd is not None:
            try:
                return os.read(self.fd, 4096)
            except OSError as err:
                raise _Gone() from err
        assert self.sock is not None
        try:
            data = self.sock.recv(4096)
        except OSError as err:
            raise _Gone() from err
        if not data:
            raise _Gone()
        return data

    def _write(self, data: bytes) -> None:
        try:
            if self.fd is not None:
                os.write(self.fd, data)
            else:
                assert self.sock is not None
                self.sock.sendall(data)
        except OSError as err:
            raise _Gone() from err

    def _pump(self, timeout: float) -> None:
        data = self._raw_read(timeout)
        if not data:
            return
        if self.fd is None:
            self.ready.extend(self.reasm.feed(data))
            return
        for item in self.serial_dec.feed(data):
            if isinstance(item, FrameError):
                self._write(bytes((NAK,)))
                continue
            if isinstance(item, int):
                self.acks.append(item)
                continue
            if self.sim.take_fault("nak"):
                self._write(bytes((NAK,)))
                continue
            self._write(bytes((ACK,)))
            self.ready.append(decode_apdu(item))

    def recv(self, timeout: float) -> Apdu | None:
        deadline = time.monotonic() + timeout
        while not self.ready:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump(min(left, 0.05))
        return self.ready.popleft()

    def send(self, apdu: bytes) -> None:
        if self.fd is None:
            self._write(apdu)
            return
        raw = frame(apdu)
        for _ in range(3):
            out = bytearray(raw)
            if self.sim.take_fault("bad_crc"):
                out[-1] ^= 0xFF
            self._write(bytes(out))
            deadline = time.monotonic() + 2.0
            while not self.acks and time.monotonic() < deadline:
                self._pump(0.05)
            if self.acks and self.acks.popleft() == ACK:
                return
        raise _Gone()

    def send_wait(self, apdu: bytes, timeout: float = 5.0) -> Apdu | None:
        """Send as master and wait for the ECR's answer (80 00 / 84 xx)."""
        self.send(apdu)
        while True:
            ans = self.recv(timeout)
            if ans is None or ans.command[0] in (0x80, 0x84) or ans.is_(Cmd.ABORT):
                return ans


class TerminalSim:
    """The simulated terminal; `port` is what the kiosk connects to (a pty path or tcp://...)."""

    def __init__(self, mode: str = "tcp", *, not_yet_delay: float = 0.2, step: float = 0.0) -> None:
        if mode not in ("tcp", "serial"):
            raise ValueError("mode is tcp or serial")
        self.mode = mode
        self.not_yet_delay = not_yet_delay  # the spec's 2 s, shortened for tests
        self.step = step  # pause between status messages (a person at the PIN pad)
        self.script: deque[str] = deque()
        self.card = "girocard"
        self.faults: deque[str] = deque()
        self.payments: list[Payment] = []
        self.receipt_no = 40
        self.trace_no = 1000
        self.config_byte: int | None = None
        self.text_blocks = False
        self.hold_seconds = 5.0
        self.status_code = 0x00
        self.last_status: bytes | None = None
        self.commands: list[bytes] = []
        self.status_bmps = b""  # more BMPs for every status information (`every_bmp`)
        self.status_tlv = b""  # more TLV objects for the status information's container
        self.quirks: set[str] = set()  # what real terminals do besides the specification
        self._stop = threading.Event()
        self._lock = threading.Lock()
        if mode == "serial":
            self._master, slave = pty.openpty()
            tty.setraw(slave)
            self._slave = slave
            self.port = os.ttyname(slave)
        else:
            self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._server.bind(("127.0.0.1", 0))
            self._server.listen(1)
            self.port = f"tcp://127.0.0.1:{self._server.getsockname()[1]}"
        self.plugged = True
        self._conn: _Conn | None = None
        self._thread = threading.Thread(target=self._run, name="zvt-sim", daemon=True)

    def __enter__(self) -> TerminalSim:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        with contextlib.suppress(OSError):
            if self.mode == "serial":
                os.close(self._master)
                os.close(self._slave)
            else:
                self._server.close()

    def unplug(self) -> None:
        """The terminal switched off, or its network cable pulled (TCP): the connection
        drops and nothing answers at its address until `plug()`."""
        if self.mode != "tcp":
            raise ValueError("unplug is for a terminal on TCP")
        self.plugged = False
        self._server.close()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def plug(self) -> None:
        """Back on the network, at the same address."""
        if self.plugged:
            return
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", int(self.port.rpartition(":")[2])))
        server.listen(1)
        self._server = server
        self.plugged = True

    def next(self, *outcomes: str) -> None:
        self.script.extend(outcomes)

    def inject(self, *faults: str) -> None:
        self.faults.extend(faults)

    def take_fault(self, name: str) -> bool:
        with self._lock:
            if self.faults and self.faults[0] == name:
                self.faults.popleft()
                return True
        return False

    # ------------------------------------------------------------------ main loop

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.mode == "serial":
                conn = _Conn(self, fd=self._master)
            else:
                if not self.plugged:
                    self._stop.wait(0.05)  # switched off: nothing listens
                    continue
                try:
                    r, _, _ = select.select([self._server], [], [], 0.05)
                    if not r:
                        continue
                    sock, _ = self._server.accept()
                except (OSError, ValueError):  # unplugged under our feet
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = _Conn(self, sock=sock)
            self._conn = conn
            try:
                while not self._stop.is_set():
                    apdu = conn.recv(0.1)
                    if apdu is None:
                        continue
                    self.commands.append(apdu.command)
                    if self.take_fault("silence"):
                        continue
                    self._dispatch(conn, apdu)
                    if conn.sock is not None and self.take_fault("close_idle"):
                        break  # like terminals that drop an idle ECR connection
            except _Gone:
                log.debug("ECR connection closed")
            finally:
                if conn.sock is not None:
                    conn.sock.close()

    def _dispatch(self, c: _Conn, apdu: Apdu) -> None:
        cmd = apdu.command
        if cmd == Cmd.REGISTRATION:
            self.config_byte = apdu.data[3] if len(apdu.data) > 3 else None
            self.text_blocks = Cmd.PRINT_TEXT_BLOCK in apdu.data
            c.send(encode_apdu(Cmd.ACK))
            c.send_wait(encode_apdu(Cmd.COMPLETION, b"\x19\x00"))
        elif cmd == Cmd.STATUS_ENQUIRY:
            c.send(encode_apdu(Cmd.ACK))
            c.send_wait(
                encode_apdu(Cmd.COMPLETION, llvar(b"SIM 2.14.15", 3) + bytes((self.status_code,)))
            )
        elif cmd == Cmd.DIAGNOSIS:
            c.send(encode_apdu(Cmd.ACK))
            c.send_wait(encode_apdu(Cmd.INTERMEDIATE_STATUS, b"\xc9"))
            c.send_wait(encode_apdu(Cmd.COMPLETION, b""))
        elif cmd == Cmd.AUTHORIZATION:
            try:
                parse_bmps(apdu.data)
            except FrameError as err:  # a BMP it does not know or cannot read: refused
                log.info("terminal sim refuses the authorisation: %s", err)
                c.send(encode_apdu(bytes((0x84, 0x83))))
                return
            self._authorise(c, apdu.data)
        elif cmd == Cmd.REPEAT_RECEIPT:
            c.send(encode_apdu(Cmd.ACK))
            if self.last_status is not None:
                c.send_wait(encode_apdu(Cmd.STATUS_INFORMATION, self.last_status))
                c.send_wait(encode_apdu(Cmd.COMPLETION, b""))
            else:
                c.send_wait(encode_apdu(Cmd.ABORT_TERMINAL, b"\x83"))
        elif cmd == Cmd.REVERSAL:
            self._reverse(c, apdu.data)
        elif cmd == Cmd.END_OF_DAY:
            self._end_of_day(c)
        elif cmd == Cmd.ABORT:
            c.send(encode_apdu(Cmd.ACK))
        else:
            c.send(encode_apdu(bytes((0x84, 0x83))))

    # ------------------------------------------------------------------ transactions

    def _status(self, result: int, amount: int, p: Payment | None) -> bytes:
        now = time.localtime()
        out = b"\x27" + bytes((result,)) + b"\x04" + bcd(amount, 6) + b"\x49" + bcd(978, 2)
        if p is not None:
            ctype, name, pan = CARDS[p.card]
            out += (
                b"\x0b"
                + bcd(p.trace, 3)
                + b"\x0c"
                + bcd(int(time.strftime("%H%M%S", now)), 3)
                + b"\x0d"
                + bcd(int(time.strftime("%m%d", now)), 2)
                + b"\x0e"
                + bcd(2812, 2)
                + b"\x19"
                + b"\x70"
                + b"\x22"
                + llvar(bytes.fromhex(pan.replace("F", "f").ljust(len(pan) + len(pan) % 2, "f")))
                + b"\x29"
                + bcd(52500038, 4)
                + b"\x87"
                + bcd(p.receipt, 2)
                + b"\x88"
                + bcd(p.receipt + 9000, 3)
                + b"\x8a"
                + bytes((ctype,))
                + b"\x8b"
                + llvar(name.encode("cp437") + b"\x00")
            )
            tlv = encode_tlv(0x1F10, b"\x02") + encode_tlv(0x1F12, b"\x02") + self.status_tlv
            out += encode_bmp(TLV_BMP, tlv)
        return self._with_extra(out)

    def _with_extra(self, status: bytes) -> bytes:
        """A status information with `status_bmps` added (those it does not carry already)."""
        have = {bmp for bmp, _ in split_bmps(status)}
        extra = split_bmps(self.status_bmps)
        return status + b"".join(raw for bmp, raw in extra if bmp not in have)

    def _receipts(self, c: _Conn, p: Payment, title: str) -> None:
        lines = [
            "Stadtwerke Demo",
            "Kassenautomat",
            title,
            f"Betrag EUR {p.amount / 100:.2f}",
            f"{CARDS[p.card][1]}  PAN {CARDS[p.card][2][-5:-1]}",
            f"Beleg-Nr. {p.receipt}",
            f"Trace-Nr. {p.trace}",
            "Zahlung erfolgt",
        ]
        for rtype in (1, 2):  # merchant, then customer
            if self.text_blocks:
                body = encode_tlv(0x09, b"\x00") + b"".join(
                    encode_tlv(0x07, line.encode("cp437")) for line in lines
                )
                tlv = encode_tlv(0x1F07, bytes((rtype,))) + encode_tlv(0x25, body)
                c.send_wait(encode_apdu(Cmd.PRINT_TEXT_BLOCK, b"\x06" + _tlv_len(len(tlv)) + tlv))
            else:
                for i, line in enumerate(lines):
                    attr = 0x81 if i == len(lines) - 1 else 0x00
                    c.send_wait(self._print_line(attr, line, rtype))

    def _print_line(self, attribute: int, line: str, receipt_type: int) -> bytes:
        """06 D1; with the "print_line_tlv" quirk the line ends with a TLV container naming
        the receipt type (1 merchant, 2 customer, 3 administration)."""
        data = bytes((attribute,)) + line.encode("cp437")
        if "print_line_tlv" in self.quirks:
            data += encode_bmp(TLV_BMP, encode_tlv(0x1F07, bytes((receipt_type,))))
        return encode_apdu(Cmd.PRINT_LINE, data)

    def _authorise(self, c: _Conn, data: bytes) -> None:
        bmps = parse_bmps(data)
        amount = from_bcd(bmps[0x04])
        goods_timeout = bmps[0x01][0] if 0x01 in bmps else 30
        outcome = self.script.popleft() if self.script else "approve"
        if outcome == "busy":
            c.send(encode_apdu(bytes((0x84, 0xA0))))
            return
        c.send(encode_apdu(Cmd.ACK))

        def status(code: int) -> bool:
            ans = c.send_wait(encode_apdu(Cmd.INTERMEDIATE_STATUS, bytes((code,))))
            if self.step:
                self._stop.wait(self.step)
            return ans is not None and ans.is_(Cmd.ACK)

        def end(result: int) -> None:
            self.last_status = self._status(result, amount, None)
            c.send_wait(encode_apdu(Cmd.ABORT_TERMINAL, bytes((result,))))

        status(Intermediate.INSERT_CARD)
        if outcome == "unreadable":
            status(Intermediate.CARD_NOT_READABLE)
            return end(ResultCode.CARD_NOT_READABLE)
        if outcome == "customer_abort":
            return end(ResultCode.ABORTED)
        if outcome == "timeout":
            abort = c.recv(600)  # hangs until the ECR gives up and aborts
            if abort is not None and abort.is_(Cmd.ABORT):
                end(ResultCode.ABORTED)
            return None
        status(Intermediate.WATCH_PIN_PAD)
        if outcome == "hold":
            abort = c.recv(self.hold_seconds)
            if abort is not None and abort.is_(Cmd.ABORT):
                return end(ResultCode.ABORTED)
        if outcome == "wrong_pin":
            status(Intermediate.INCORRECT_PIN)
            self.last_status = self._status(0x37, amount, None)
            c.send_wait(encode_apdu(Cmd.STATUS_INFORMATION, self.last_status))
            return end(0x37)
        if outcome == "decline":
            self.last_status = self._status(ResultCode.DECLINED, amount, None)
            c.send_wait(encode_apdu(Cmd.STATUS_INFORMATION, self.last_status))
            return end(ResultCode.DECLINED)
        status(Intermediate.PLEASE_WAIT)  # online
        self.receipt_no += 1
        self.trace_no += 1
        p = Payment(self.receipt_no, self.trace_no, amount, self.card)
        self.payments.append(p)
        approved = self._status(0x00, amount, p)
        reversed_status = self._status(ResultCode.ABORTED, amount, p)
        self.last_status = reversed_status  # kept only once the ECR says the goods are out
        deadline = time.monotonic() + goods_timeout
        while True:
            if outcome == "drop_after_approval":
                c.send(encode_apdu(Cmd.STATUS_INFORMATION, approved))
                raise _Gone()  # the connection drops: no answer ever arrives, so it reverses
            ans = c.send_wait(
                encode_apdu(Cmd.STATUS_INFORMATION, approved), max(0.0, deadline - time.monotonic())
            )
            if (
                ans is not None
                and ans.command == bytes((0x84, 0x9C))
                and time.monotonic() < deadline
            ):
                self._stop.wait(self.not_yet_delay)  # "not yet": ask again
                continue
            break
        if ans is not None and (ans.is_(Cmd.ACK) or ans.command == bytes((0x84, 0x00))):
            p.kept = True
            self.last_status = approved
            self._receipts(c, p, "Kartenzahlung")
            c.send_wait(encode_apdu(Cmd.COMPLETION, b""))
            return None
        p.reversed = True  # failure answer or no answer in time: the terminal reverses
        c.send_wait(encode_apdu(Cmd.ABORT_TERMINAL, b"\x6c"))
        return None

    def _reverse(self, c: _Conn, data: bytes) -> None:
        receipt = from_bcd(data[4:6]) if len(data) >= 6 and data[3] == 0x87 else None
        p = next((x for x in self.payments if x.receipt == receipt and x.kept), None)
        c.send(encode_apdu(Cmd.ACK))
        if p is None or p.reversed:
            c.send_wait(encode_apdu(Cmd.ABORT_TERMINAL, b"\xb4" if p else b"\xb5"))
            return
        p.reversed = True
        self.receipt_no += 1
        self.trace_no += 1
        rp = Payment(self.receipt_no, self.trace_no, p.amount, p.card, kept=True)
        self.last_status = self._status(0x00, p.amount, rp)
        c.send_wait(
            encode_apdu(Cmd.STATUS_INFORMATION, self.last_status + b"\x37" + bcd(p.trace, 3))
        )
        self._receipts(c, rp, "Storno")
        c.send_wait(encode_apdu(Cmd.COMPLETION, b""))

    def _end_of_day(self, c: _Conn) -> None:
        kept = [p for p in self.payments if p.kept and not p.reversed]
        total = sum(p.amount for p in kept)
        c.send(encode_apdu(Cmd.ACK))
        running = bytes((Intermediate.AUTOMATIC_END_OF_DAY,))
        c.send_wait(encode_apdu(Cmd.INTERMEDIATE_STATUS, running))
        numbers = [p.receipt for p in kept] or [self.receipt_no]
        totals = DayTotals(min(numbers), max(numbers), (("girocard", len(kept), total),))
        info = (
            b"\x27\x00"
            + b"\x04"
            + bcd(total, 6)
            + b"\x87"
            + bcd(self.receipt_no, 2)
            + b"\x60"
            + llvar(totals.encode(), 3)
        )
        info = self._with_extra(info)
        if "eod_without_length" in self.quirks:  # as a real terminal sent it
            c.send_wait(Cmd.STATUS_INFORMATION + info)
        else:
            c.send_wait(encode_apdu(Cmd.STATUS_INFORMATION, info))
        c.send_wait(self._print_line(0x00, "Kassenschnitt", 3))
        summary = f"Summe EUR {total / 100:.2f}  ({len(kept)} Zahlungen)"
        c.send_wait(self._print_line(0x81, summary, 3))
        c.send_wait(encode_apdu(Cmd.COMPLETION, b""))
        self.payments = [p for p in self.payments if not (p.kept and not p.reversed)]


def _tlv_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    return bytes((0x81, n)) if n <= 0xFF else bytes((0x82, n >> 8, n & 0xFF))
