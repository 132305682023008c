"""The eSSP note validator driver: the link (sequence bit, retries, encryption) and the device
(set-up, inhibits, escrow with hold, poll events as the same driver events the ccTalk note
validator gives, so the kiosk's note port and the engine do not know which protocol it is).

The link sends each command with the sequence bit and waits for the answer; a lost or
garbled answer is asked for again with the same bit, and the device answers a repeat with its
last answer instead of running the command twice: a credit is never counted twice. SYNC
starts the bit again.

Escrow: a note read (event READ with a channel) is held. While the kiosk decides, the driver
sends HOLD instead of POLL (a poll would accept the note); `route(STACK)` lets the next poll
accept it, `route(RETURN)` sends REJECT. Credit is the CREDIT event only.
"""

from __future__ import annotations

import logging
import termios
import time
from dataclasses import dataclass

import serial

from drivers.cctalk.codec import BillEventKind, RouteCode
from drivers.cctalk.devices import (
    AcceptorIncident,
    BillEscrowed,
    BillReturned,
    BillStacked,
    DeviceReset,
    Identity,
)
from drivers.errors import DeviceError, DeviceTimeout, FrameError, TransportError
from drivers.essp import protocol as P
from drivers.essp.codec import VALIDATOR, Decoder, encode
from drivers.essp.crypto import DEFAULT_FIXED_KEY, STEX, Exchange, Session, aes_key, u64
from drivers.trace import Trace

log = logging.getLogger(__name__)

#: 9600 baud, 8 data bits, no parity, 2 stop bits (ITL GA138)
BAUD = 9600
#: how long an answer may take before the command is asked again, and how often
ANSWER_SECONDS = 0.25
RETRIES = 3

#: eSSP events as the ccTalk bill event codes the kiosk already reads (drivers/cctalk/codec.py
#: BILL_EVENTS): (code, text, kind)
INCIDENTS: dict[int, tuple[int, str, BillEventKind]] = {
    P.Event.REJECTED: (2, "note rejected", BillEventKind.REJECT),
    P.Event.SAFE_JAM: (16, "note jammed (safe)", BillEventKind.FATAL),
    P.Event.UNSAFE_JAM: (6, "note jammed (unsafe)", BillEventKind.FATAL),
    P.Event.STACKER_FULL: (14, "stacker full", BillEventKind.STATUS),
    P.Event.FRAUD_ATTEMPT: (17, "fraud attempt", BillEventKind.FRAUD),
    P.Event.CASHBOX_REMOVED: (11, "cashbox removed", BillEventKind.STATUS),
    P.Event.CASHBOX_REPLACED: (12, "cashbox replaced", BillEventKind.STATUS),
    # GA138 Note Path Open: "disabled for bill entry until the note path is re-closed" (no
    # ccTalk code: the eSSP code itself; the validator restarts when it is closed)
    P.Event.NOTE_PATH_OPEN: (0xE0, "note path open", BillEventKind.FATAL),
}


def _open_port(url: str) -> serial.SerialBase:
    kwargs: dict[str, object] = {"baudrate": BAUD, "bytesize": 8, "parity": "N", "stopbits": 2,
                                 "timeout": 0.02}  # fmt: skip
    if "://" not in url:
        kwargs["exclusive"] = True  # a second process on the port would corrupt the exchange
    try:
        return serial.serial_for_url(url, **kwargs)
    except (serial.SerialException, OSError, ValueError) as err:
        raise TransportError(f"cannot open {url}: {err}") from err


class KeyNotSet(DeviceError):
    """The device answered KEY_NOT_SET: it takes this command only encrypted."""


class Link:
    """One eSSP device on a serial port: frames with the sequence bit, retries, encryption."""

    def __init__(
        self, port: serial.SerialBase, address: int = VALIDATOR, url: str | None = None
    ) -> None:
        self.port = port
        #: where to open the port again when it was lost (an adapter unplugged and plugged in
        #: again comes back at the same stable path); None: a lost port stays lost
        self.url = url
        self._lost = False
        self.address = address
        self.seq = 1
        self.session: Session | None = None
        self.retries = 0  # commands asked again (lost or bad answers)
        #: every byte written and read, when a trace is being recorded (drivers/trace.py)
        self.trace: Trace | None = None

    @classmethod
    def open(cls, url: str, address: int = VALIDATOR, *, wait: bool = False) -> Link:
        """The link on `url`. `wait`: a port that is not there yet is no error: the link is
        made lost and each command tries to open it again (TransportError until it is)."""
        try:
            port = _open_port(url)
        except TransportError as err:
            if not wait:
                raise
            log.error("%s", err)
            link = cls(None, address, url)  # type: ignore[arg-type]
            link._lost = True
            return link
        return cls(port, address, url)

    def _reopen(self) -> None:
        if self.url is None:
            raise TransportError("the eSSP port was lost")
        self.port = _open_port(self.url)
        self._lost = False
        log.warning("%s: port open again", self.url)

    def close(self) -> None:
        if self.port is not None:
            self.port.close()

    def sync(self) -> None:
        """Start the sequence bit again (and forget any encryption: a new key follows)."""
        self.seq = 1
        self.session = None
        self.command(bytes((P.Cmd.SYNC,)))

    def command(self, data: bytes, *, plain: bool = False) -> bytes:
        """Send a command; its answer (OK first), or DeviceError for a refusal."""
        answer = self.exchange(data, plain=plain)
        if not answer or answer[0] != P.Reply.OK:
            code = answer[0] if answer else 0
            text = P.REPLY_TEXTS.get(code, f"answer {code:02X}")  # type: ignore[call-overload]
            error = KeyNotSet if code == P.Reply.KEY_NOT_SET else DeviceError
            raise error(f"eSSP {P.Cmd(data[0]).name.lower()}: {text}")
        return answer

    def exchange(self, data: bytes, *, plain: bool = False) -> bytes:
        if self._lost:
            self._reopen()
        session = None if plain else self.session
        payload = session.wrap(data) if session is not None else data
        raw = encode(self.seq, self.address, payload)
        for attempt in range(RETRIES + 1):
            if attempt:
                self.retries += 1
                log.info("eSSP: no good answer, asking again (same sequence bit)")
            try:
                self.port.reset_input_buffer()
                self.port.write(raw)
                if self.trace is not None:
                    self.trace.sent(raw)
            except (serial.SerialException, OSError, termios.error) as err:  # the pty is gone
                self._lost = True
                raise TransportError(f"eSSP port: {err}") from err
            got = self._read(session)
            if got is None:
                continue
            answer, encrypted = got
            if encrypted:
                assert session is not None
                session.next()
            self.seq ^= 1
            return answer
        raise DeviceTimeout(f"eSSP: no answer to {data[:1].hex()} after {RETRIES} retries")

    def _read(self, session: Session | None) -> tuple[bytes, bool] | None:
        """The answer to the command just sent (its data, decrypted; and whether it came
        encrypted), or None if none came in time. A frame for another address, with the
        other sequence bit (GA138: "In a reply packet the address and sequence flag match
        the command packet": a late copy of an earlier answer) or with the wrong count is
        not it: skipped, and the wait goes on."""
        decoder = Decoder()  # an answer starts afresh: what a lost one left is dropped
        deadline = time.monotonic() + ANSWER_SECONDS
        while time.monotonic() < deadline:
            try:
                chunk = self.port.read(max(1, self.port.in_waiting))
            except (serial.SerialException, OSError) as err:
                self._lost = True
                raise TransportError(f"eSSP port: {err}") from err
            if chunk and self.trace is not None:
                self.trace.received(chunk)
            for frame in decoder.feed(chunk) if chunk else ():
                if frame.address != self.address:
                    continue
                if frame.seq != self.seq:
                    log.warning("eSSP: an answer with the other sequence bit skipped")
                    continue
                if session is not None and frame.data[:1] == bytes((STEX,)):
                    try:
                        # the device counted our command: the answer carries the next count
                        return session.unwrap(frame.data, session.reply_count), True
                    except FrameError as err:
                        log.warning("eSSP: %s", err)
                        continue
                if session is not None and (len(frame.data) != 1 or frame.data[0] == P.Reply.OK):
                    # A device answers an encrypted command encrypted (GA138: answers with
                    # credit are always encrypted); only a bare refusal comes plain (KEY NOT SET
                    # after a restart lost the key). A plain answer with data, or a plain OK,
                    # is someone else's on the line: not taken.
                    log.warning("eSSP: a plain answer to an encrypted command not taken: %s",
                                frame.data.hex(" "))  # fmt: skip
                    continue
                return frame.data, False
        return None

    def negotiate(self, fixed_key: int = DEFAULT_FIXED_KEY) -> None:
        """The key exchange; every command after it is encrypted."""
        mine = Exchange.start()
        self.command(bytes((P.Cmd.SET_GENERATOR,)) + u64(mine.generator), plain=True)
        self.command(bytes((P.Cmd.SET_MODULUS,)) + u64(mine.modulus), plain=True)
        answer = self.command(bytes((P.Cmd.REQUEST_KEY_EXCHANGE,)) + u64(mine.intermediate),
                              plain=True)  # fmt: skip
        if len(answer) != 9:
            raise DeviceError(f"eSSP key exchange: {len(answer) - 1} key bytes, expected 8")
        key = mine.key(int.from_bytes(answer[1:], "little"))
        self.session = Session(aes_key(fixed_key, key))


@dataclass(frozen=True)
class Setup:
    unit_type: int
    firmware: str
    country: str
    protocol: int
    values: tuple[int, ...]  # minor units per channel (index 0 is channel 1)


def parse_setup(data: bytes, exponent: int = 2) -> Setup:
    """The setup request's answer (after OK), protocol version 6 and later: channel values as
    whole units (4 bytes each, little-endian) after the country codes."""
    try:
        unit, firmware, country = data[0], data[1:5].decode("ascii"), data[5:8].decode("ascii")
        n = data[11]
        at = 12 + 2 * n
        multiplier = int.from_bytes(data[at : at + 3], "big")
        protocol = data[at + 3]
        at += 4
        if protocol >= 6:
            at += 3 * n  # each channel's country
            whole = [int.from_bytes(data[at + 4 * i : at + 4 * i + 4], "little") for i in range(n)]
        else:
            whole = [data[12 + i] * multiplier // 100 for i in range(n)]
    except (IndexError, UnicodeDecodeError) as err:
        raise FrameError(f"setup request answer too short or not text: {data.hex(' ')}") from err
    return Setup(unit, firmware, country, protocol, tuple(w * 10**exponent for w in whole))


class NoteValidator:
    """An ITL note validator behind an eSSP link, in the shape the bus worker polls (as the
    ccTalk `NoteValidator`): `initialise`, `poll`, `enable`, `route`, `self_check`."""

    name = "notes"

    def __init__(self, link: Link, currency: str, accepted: frozenset[int], *,
                 encrypt: bool = False, protocol: int = 6) -> None:  # fmt: skip
        self.link = link
        self.currency = currency
        self.accepted = accepted
        self.encrypt = encrypt
        self.protocol = protocol
        self.identity: Identity | None = None
        self.setup: Setup | None = None
        self.last_counter: int | None = None  # eSSP has no event counter
        self.limit: int | None = None
        self.holding: int | None = None  # the channel of a note held for the kiosk's decision
        self._returning: int | None = None  # the channel of a held note on its way back
        self._stacking: int | None = None  # the channel of a held note we let go to the box
        self.polls = 0

    # ---------------------------------------------------------------- set-up

    def initialise(self, resume_counter: int | None = None) -> list[object]:
        """Sync, protocol version, set-up, serial number, inhibits; then one poll: what the
        device reports first (a note stacked while the kiosk was down) is still owed."""
        try:
            setup = self._set_up()
        except KeyNotSet:
            if self.encrypt:
                raise
            log.warning("the validator asks for encryption: negotiating a key")
            self.encrypt = True
            setup = self._set_up()
        if setup.country != self.currency:
            raise DeviceError(f"the validator takes {setup.country}, the site {self.currency}")
        self.setup = setup
        self.holding = self._returning = self._stacking = None
        self._apply()
        return self.poll()

    def _set_up(self) -> Setup:
        link = self.link
        link.sync()
        if self.encrypt:
            link.negotiate()
        try:
            link.command(bytes((P.Cmd.HOST_PROTOCOL_VERSION, self.protocol)))
        except KeyNotSet:
            raise
        except DeviceError:  # an older firmware (NV9USB): version 4 is enough for notes
            self.protocol = 4
            link.command(bytes((P.Cmd.HOST_PROTOCOL_VERSION, 4)))
        setup = parse_setup(link.command(bytes((P.Cmd.SETUP_REQUEST,)))[1:])
        serial_no = int.from_bytes(link.command(bytes((P.Cmd.SERIAL_NUMBER,)))[1:5], "big")
        self.identity = Identity("Bill Validator", "ITL", f"eSSP unit {setup.unit_type}",
                                 serial_no, setup.firmware)  # fmt: skip
        mask = self.inhibit_mask_for(setup)
        link.command(bytes((P.Cmd.SET_INHIBITS,)) + mask.to_bytes(2, "little"))
        return setup

    def _apply(self) -> None:
        mask = self.inhibit_mask()
        self.link.command(bytes((P.Cmd.SET_INHIBITS,)) + mask.to_bytes(2, "little"))
        self.link.command(bytes((P.Cmd.ENABLE if mask else P.Cmd.DISABLE,)))

    def inhibit_mask(self) -> int:
        return 0 if self.setup is None else self.inhibit_mask_for(self.setup)

    def inhibit_mask_for(self, setup: Setup) -> int:
        if self.limit is None:
            return 0
        return sum(1 << i for i, v in enumerate(setup.values)
                   if v and v in self.accepted and v <= self.limit)  # fmt: skip

    def enable(self, limit: int | None) -> None:
        """Take notes worth at most `limit` minor units (None: none). A note held when the
        kiosk stops taking notes goes back to the customer."""
        self.limit = limit
        if limit is None and self.holding is not None:
            self.route(RouteCode.RETURN)
        self._apply()

    def self_check(self) -> tuple[int, str]:
        self.link.command(bytes((P.Cmd.SERIAL_NUMBER,)))
        return 0, "OK"

    def route(self, code: int) -> None:
        """The kiosk's decision on the held note: stack (the next poll accepts it) or return."""
        if self.holding is None:
            log.warning("notes: a decision for no held note")
            return
        if code == RouteCode.STACK:
            self._stacking, self.holding = self.holding, None  # the next poll accepts it
        else:
            self._returning, self.holding = self.holding, None
            self.link.command(bytes((P.Cmd.REJECT,)))

    # ---------------------------------------------------------------- polling

    def poll(self) -> list[object]:
        self.polls += 1
        if self.holding is not None:
            try:
                self.link.command(bytes((P.Cmd.HOLD,)))
                return []
            except DeviceError:  # nothing held any more (it timed out): see what happened
                self._returning, self.holding = self.holding, None
        answer = self.link.command(bytes((P.Cmd.POLL,)))
        setup = self.setup
        events = P.split_events(
            answer[1:], self.protocol, unit_type=setup.unit_type if setup else 0,
            channels=len(setup.values) if setup else None,
        )  # fmt: skip
        out: list[object] = []
        for polled in events:
            out += self._event(polled)
        return out

    def _value(self, ch: int) -> int:
        assert self.setup is not None
        return self.setup.values[ch - 1] if 1 <= ch <= len(self.setup.values) else 0

    def _event(self, polled: P.Polled) -> list[object]:
        cur, name, ev, ch = self.currency, self.name, polled.event, polled.channel
        if ev is None:
            return [self._unknown(polled)]
        match ev:
            case P.Event.READ if ch:
                self.holding = ch
                return [BillEscrowed(name, ch, self._value(ch), cur, None)]
            case P.Event.CREDIT | P.Event.NOTE_CLEARED_INTO_CASHBOX if ch and (
                not polled.guessed or ch == self._stacking
            ):
                if ch == self._stacking:
                    self._stacking = None
                return [BillStacked(name, ch, self._value(ch), cur, None)]
            case P.Event.CREDIT | P.Event.NOTE_CLEARED_INTO_CASHBOX if ch:
                # read after an unknown event, for no note we were stacking: its bytes may be
                # the unknown event's own. Not credited; a fault for staff to settle.
                text = (
                    f"a credit on channel {ch} ({self._value(ch)}) read after an unknown "
                    "event, for no note being stacked: not credited, to be settled"
                )
                log.error("notes: %s", text)
                return [AcceptorIncident(name, polled.code, text,
                                         BillEventKind.FATAL.name.lower(), None)]  # fmt: skip
            case P.Event.CREDIT | P.Event.NOTE_CLEARED_INTO_CASHBOX:
                # money in the box whose channel is not given: never dropped, a fault with
                # the bytes for staff to settle
                text = f"note credited without a channel: eSSP {polled.code:02X} "
                return [AcceptorIncident(name, polled.code, text + polled.data.hex(" "),
                                         BillEventKind.FATAL.name.lower(), None)]  # fmt: skip
            case P.Event.REJECTED if self._returning is not None:
                ch, self._returning = self._returning, None
                return [BillReturned(name, ch, self._value(ch), cur, None)]
            case P.Event.NOTE_CLEARED_FROM_FRONT if ch:
                return [BillReturned(name, ch, self._value(ch), cur, None)]
            case P.Event.SLAVE_RESET:
                log.warning("notes: the validator restarted")
                self.holding = None
                self._apply()
                return [DeviceReset(name)]
        if ev in INCIDENTS:
            code, text, kind = INCIDENTS[ev]
            return [AcceptorIncident(name, code, text, kind.name.lower(), None)]
        return []

    def _unknown(self, polled: P.Polled) -> AcceptorIncident:
        """An event code not in GA138's tables: a fault (journaled, the notes stop until the
        validator restarts or comes online again), never silence. The events after it were
        read again from where they read as known events (protocol.split_events); when they
        could not be, the fault says money may be missing and names every byte that could
        be a credit."""
        code, data = polled.code, polled.data
        text = f"unknown eSSP event {code:02X}"
        if polled.resynced:
            text += f" (data {data.hex(' ') or 'none'}): the rest of the poll read on"
        else:
            maybe = [data[i + 1] for i in range(len(data) - 1)
                     if data[i] in (P.Event.CREDIT, P.Event.NOTE_CLEARED_INTO_CASHBOX)]  # fmt: skip
            text += f": the rest of the poll not readable ({data.hex(' ')}); money may be missing"
            if maybe:
                text += ", possible credit on channel " + ", ".join(
                    f"{c} ({self._value(c)})" for c in maybe
                )
        log.error("notes: %s", text)
        return AcceptorIncident(self.name, code, text, BillEventKind.FATAL.name.lower(), None)
