"""A simulated ITL note validator (NV200-like) speaking eSSP on a pty: the same bytes as the
device, escrow with hold, the sequence bit (a retried command gets the last answer again, not
a second run), encryption after a key exchange, and faults (garbage before an answer, a byte
dropped, silence, jam, fraud, stacker full, a reset with a note in escrow).

`insert(bill_id)` feeds a note as a customer does, with the same note ids as the ccTalk
simulator (`euro_notes()`), so the kiosk's tests and the crash matrix drive either protocol.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from drivers.errors import FrameError
from drivers.essp import protocol as P
from drivers.essp.codec import Decoder, Frame, encode
from drivers.essp.crypto import (
    DEFAULT_FIXED_KEY,
    KEY_LIMIT,
    Session,
    aes_key,
    is_prime,
    xpow_ymod_n_64,
)
from drivers.ptysim import PtyDevice

log = logging.getLogger(__name__)

#: how long a note waits in escrow without a HOLD before the device gives it back (seconds)
ESCROW_SECONDS = 10.0
#: one byte at 9600 baud, 8 data bits, no parity, 2 stop bits: 11 bits
BYTE_TIME_8N2 = 11 / 9600


class SimNoteValidator(PtyDevice):
    name = "essp-sim"
    read_size = 256

    def __init__(
        self,
        ids: list[str],
        *,
        address: int = 0,
        serial_number: int = 0x01234567,
        firmware: str = "0450",
        link: Path | None = None,
        byte_time: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        needs_encryption: bool = False,
    ) -> None:
        super().__init__(link)
        self.ids = ids
        self.values = [_value(i) for i in ids]  # minor units per channel (0: not used)
        self.currency = _currency(ids)
        self.address = address
        self.serial_number = serial_number
        self.firmware = firmware
        self.byte_time = byte_time
        self.clock = clock
        self.needs_encryption = needs_encryption
        self.fixed_key = DEFAULT_FIXED_KEY
        self.lock = threading.RLock()
        self._decoder = Decoder()
        self.stacked: list[int] = []  # channels of the notes in the cashbox
        self.returned: list[int] = []  # and of those given back
        self.credited_at: list[float] = []  # when each was credited (perf_counter)
        self._power_on()
        # faults, each for the next answer or the next note
        self.garbage_next = b""
        self.drop_next = False
        self.silent_for = 0  # answers lost on the line (the command is run; a retry is answered)
        self.stale_next = False  # send the previous answer again before the next one
        #: a forged plain answer to the next encrypted command (someone on the line): the
        #: device's real answer follows when the host asks again
        self.forge_plain_next: bytes | None = None
        self._last_sent = b""
        self.jam_next_stack: str | None = None  # "safe" or "unsafe"
        self.full_after_next_stack = False
        self.answers = 0  # commands answered (retries included)
        self.discarded = 0  # encrypted packets thrown away (another count, another key)
        self.commands: list[int] = []  # command codes run (retries not run again)

    def _power_on(self) -> None:
        self.protocol = 0
        self.master = False  # enabled (ENABLE), as the ccTalk simulator calls it
        self.inhibit_mask = 0  # channel inhibits: bit n-1 set = channel n taken
        self.escrow: int | None = None  # channel held
        self.escrow_told = False  # the host has seen the note in escrow
        self.escrow_since = 0.0
        self.events: list[bytes] = []
        self.unacked: list[bytes] = []  # poll with ack: events until the host acknowledges
        self.last_seq: int | None = None
        self.last_answer = b""
        self.generator = self.modulus = 0
        self.session: Session | None = None

    # ---------------------------------------------------------------- the customer's side

    def enabled(self, channel: int) -> bool:
        """Does it take a note of this channel now?"""
        return self.master and bool(self.inhibit_mask >> (channel - 1) & 1)

    def channel_of(self, bill_id: str) -> int:
        return self.ids.index(bill_id) + 1 if bill_id in self.ids else 0

    def insert(self, bill_id: str, *, counterfeit: bool = False) -> bool:
        """A note is fed in; True if it went into escrow (the host decides the rest)."""
        with self.lock:
            ch = self.channel_of(bill_id)
            takes = ch and self.enabled(ch)
            if counterfeit or not takes or self.escrow is not None:
                self.events += [bytes((P.Event.READ, 0)), bytes((P.Event.REJECTING,)),
                                bytes((P.Event.REJECTED,))]  # fmt: skip
                return False
            self.events += [bytes((P.Event.READ, 0)), bytes((P.Event.READ, ch))]
            self.escrow, self.escrow_told, self.escrow_since = ch, False, self.clock()
            return True

    def fraud(self, channel: int = 0) -> None:
        with self.lock:
            self.events.append(bytes((P.Event.FRAUD_ATTEMPT, channel)))

    def cashbox_removed(self, removed: bool = True) -> None:
        with self.lock:
            ev = P.Event.CASHBOX_REMOVED if removed else P.Event.CASHBOX_REPLACED
            self.events.append(bytes((ev,)))

    def power_cycle(self, note_to: str = "cashbox") -> None:
        """Power off and on. A note in escrow is cleared at the start: into the cashbox
        (`note_to="cashbox"`, it is money in the box) or back out of the front."""
        with self.lock:
            held = self.escrow
            self._power_on()
            self.events.append(bytes((P.Event.SLAVE_RESET,)))
            if held is not None:
                if note_to == "cashbox":
                    self.stacked.append(held)
                    self.events.append(bytes((P.Event.NOTE_CLEARED_INTO_CASHBOX, held)))
                else:
                    self.returned.append(held)
                    self.events.append(bytes((P.Event.NOTE_CLEARED_FROM_FRONT, held)))

    # ---------------------------------------------------------------- the host's side

    def received(self, chunk: bytes) -> None:
        try:
            frames = self._decoder.feed(chunk)
        except FrameError:  # pragma: no cover - the decoder resynchronises, never raises
            return
        for frame in frames:
            if frame.address != self.address:
                continue
            with self.lock:
                answer = self._answer(frame)
                if answer is not None and self.silent_for:  # run, but the answer is lost
                    self.silent_for -= 1
                    answer = None
            if answer is not None:
                heard = len(encode(frame.seq, frame.address, frame.data))
                self._send(answer, frame.seq, heard)

    def _send(self, data: bytes, seq: int, heard: int = 0) -> None:
        """The answer with the command's sequence bit (GA138: "In a reply packet the address
        and sequence flag match the command packet"), after the wire time of the command
        (`heard` bytes) and its own."""
        frame = encode(seq, self.address, data)
        raw = self.garbage_next + frame
        self.garbage_next = b""
        if self.stale_next and self._last_sent:
            raw = self._last_sent + raw  # the previous answer again, late, before this one
            self.stale_next = False
        self._last_sent = frame
        if self.drop_next:
            self.drop_next = False
            raw = raw[:3] + raw[4:]
        if self.byte_time:
            time.sleep(self.byte_time * (heard + len(raw)))  # the wire time at its baud rate
        try:
            os.write(self.master_fd, raw)
        except OSError:
            log.debug("essp sim: the host end is gone")

    def _answer(self, frame: Frame) -> bytes | None:
        self.answers += 1
        data = frame.data
        if data[:1] == bytes((P.Cmd.SYNC,)):
            self.last_seq = frame.seq
            self.last_answer = bytes((P.Reply.OK,))
            self.commands.append(P.Cmd.SYNC)
            return self.last_answer
        if frame.seq == self.last_seq:  # a retry: the last answer again, nothing run twice
            return self.last_answer
        previous, self.last_seq = self.last_seq, frame.seq
        encrypted = bool(data) and data[0] == 0x7E
        if encrypted:
            if self.session is None:
                self.last_answer = bytes((P.Reply.KEY_NOT_SET,))
                return self.last_answer
            try:
                data = self.session.unwrap(data)
            except FrameError as err:
                # GA138: a packet whose count is not the device's is discarded: no answer,
                # not run, and the sequence bit not taken (it was not a command)
                log.info("essp sim: encrypted packet discarded: %s", err)
                self.last_seq = previous
                self.discarded += 1
                return None
            self.session.next()  # the device counts the packet it decrypted
        elif self.needs_encryption and data and data[0] not in _PLAIN_CMDS:
            # it takes only the set-up and the key exchange in clear
            self.last_answer = bytes((P.Reply.KEY_NOT_SET,))
            return self.last_answer
        answer = self._execute(data)
        if encrypted and self.session is not None:
            answer = self.session.wrap(answer)  # with the count after the command's
        self.last_answer = answer
        if encrypted and self.forge_plain_next is not None:
            forged, self.forge_plain_next = self.forge_plain_next, None
            return forged
        return answer

    def _execute(self, data: bytes) -> bytes:
        if not data:
            return bytes((P.Reply.WRONG_PARAMETERS,))
        cmd, args = data[0], data[1:]
        self.commands.append(cmd)
        ok = bytes((P.Reply.OK,))
        self._escrow_timeout()
        match cmd:
            case P.Cmd.HOST_PROTOCOL_VERSION:
                if not args or args[0] > 7:
                    return bytes((P.Reply.PARAMETER_OUT_OF_RANGE,))
                self.protocol = args[0]
                return ok
            case P.Cmd.SETUP_REQUEST:
                return ok + self._setup()
            case P.Cmd.SERIAL_NUMBER:
                return ok + self.serial_number.to_bytes(4, "big")
            case P.Cmd.SET_INHIBITS:
                if len(args) < 2:
                    return bytes((P.Reply.WRONG_PARAMETERS,))
                self.inhibit_mask = int.from_bytes(args[:2], "little")
                return ok
            case P.Cmd.ENABLE:
                self.master = True
                return ok
            case P.Cmd.DISABLE:
                self.master = False
                return ok
            case P.Cmd.POLL:
                return ok + self._poll(ack=False)
            case P.Cmd.POLL_WITH_ACK:
                return ok + self._poll(ack=True)
            case P.Cmd.EVENT_ACK:
                self.unacked.clear()
                return ok
            case P.Cmd.HOLD:
                if self.escrow is None:
                    return bytes((P.Reply.CANNOT_PROCESS,))
                self.escrow_since = self.clock()
                return ok
            case P.Cmd.REJECT:
                if self.escrow is not None:
                    self._give_back()
                return ok
            case P.Cmd.RESET:
                self.power_cycle()
                return ok
            case P.Cmd.SET_GENERATOR | P.Cmd.SET_MODULUS:
                if len(args) != 8:
                    return bytes((P.Reply.WRONG_PARAMETERS,))
                n = int.from_bytes(args, "little")
                if not is_prime(n):  # GA138 Set Generator / Set Modulus
                    return bytes((P.Reply.PARAMETER_OUT_OF_RANGE,))
                if cmd == P.Cmd.SET_GENERATOR:
                    self.generator = n
                else:
                    self.modulus = n
                return ok
            case P.Cmd.REQUEST_KEY_EXCHANGE:
                if len(args) != 8:
                    return bytes((P.Reply.WRONG_PARAMETERS,))
                if not (self.generator and self.modulus):  # GA138: FAIL
                    return bytes((P.Reply.FAIL,))
                # the device's side in ITL's arithmetic (signed 64-bit products): numbers
                # above 2**31.5 give it another key than the host's (crypto.py)
                g, n = self.generator, self.modulus
                secret = secrets.randbelow(KEY_LIMIT - 2) + 2
                key = xpow_ymod_n_64(int.from_bytes(args, "little"), secret, n)
                self.session = Session(aes_key(self.fixed_key, key & 2**64 - 1))
                return ok + (xpow_ymod_n_64(g, secret, n) & 2**64 - 1).to_bytes(8, "little")
        return bytes((P.Reply.UNKNOWN_COMMAND,))

    def _setup(self) -> bytes:
        n = len(self.ids)
        country = self.currency.encode()
        whole = [v // 100 for v in self.values]
        out = bytes((0x00,)) + self.firmware.encode()[:4] + country
        out += (0).to_bytes(3, "big") + bytes((n,)) + bytes(min(w, 255) for w in whole)
        out += bytes((2,) * n) + (100).to_bytes(3, "big") + bytes((max(self.protocol, 6),))
        out += country * n + b"".join(w.to_bytes(4, "little") for w in whole)
        return out

    def _poll(self, *, ack: bool) -> bytes:
        if ack and self.unacked:
            return b"".join(self.unacked)  # the same events until acknowledged
        if self.escrow is not None and self.escrow_told:
            self._stack()  # a poll after the host saw the note held accepts it
        out = self.events
        self.events = []
        if any(e[0] == P.Event.READ and len(e) > 1 and e[1] for e in out):
            self.escrow_told = True
        if not self.master and not out:
            out = [bytes((P.Event.DISABLED,))]
        if ack:
            self.unacked = list(out)
        return b"".join(out)

    def _stack(self) -> None:
        ch, self.escrow = self.escrow, None
        assert ch is not None
        if self.jam_next_stack is not None:
            kind, self.jam_next_stack = self.jam_next_stack, None
            ev = P.Event.SAFE_JAM if kind == "safe" else P.Event.UNSAFE_JAM
            self.events.append(bytes((ev,)))  # its fate unknown to the host
            return
        self.stacked.append(ch)
        self.credited_at.append(time.perf_counter())
        self.events += [bytes((P.Event.STACKING,)), bytes((P.Event.CREDIT, ch)),
                        bytes((P.Event.STACKED,))]  # fmt: skip
        if self.full_after_next_stack:
            self.full_after_next_stack = False
            self.master = False
            self.events.append(bytes((P.Event.STACKER_FULL,)))

    def _give_back(self) -> None:
        ch, self.escrow = self.escrow, None
        assert ch is not None
        self.returned.append(ch)
        self.events += [bytes((P.Event.REJECTING,)), bytes((P.Event.REJECTED,))]

    def _escrow_timeout(self) -> None:
        if self.escrow is not None and self.clock() - self.escrow_since > ESCROW_SECONDS:
            self._give_back()


_PLAIN_CMDS = {P.Cmd.SYNC, P.Cmd.HOST_PROTOCOL_VERSION, P.Cmd.SET_GENERATOR,
               P.Cmd.SET_MODULUS, P.Cmd.REQUEST_KEY_EXCHANGE, P.Cmd.SERIAL_NUMBER,
               P.Cmd.SETUP_REQUEST}  # fmt: skip


def _value(bill_id: str) -> int:
    """Minor units of a note id such as "EU0020A" (20.00): 0 for an unused channel."""
    return int(bill_id[2:6]) * 100 if bill_id else 0


def _currency(ids: list[str]) -> str:
    prefix = next((i[:2] for i in ids if i), "EU")
    return {"EU": "EUR", "CH": "CHF"}[prefix]
