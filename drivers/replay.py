"""Replay of a recorded device trace (drivers/trace.py) to our drivers: what the device sent is
fed to the driver, what the driver sends is checked against what was recorded, and the events
the driver makes of it are returned. A trace recorded at a site's first bring-up becomes a
regression test with one file; the traces in tests/fixtures/traces/ are made with the
simulators.

    kiosk devices replay TRACE [--site FILE]   # prints the events, one JSON per line
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drivers.errors import DeviceTimeout, DriverError, FrameError
from drivers.trace import RECEIVED, SENT, Recorded, ReplayCard, ReplayPort, read_trace


@dataclasses.dataclass
class Replayed:
    events: list[Any]
    mismatches: list[str]  # where the driver sent other bytes than were recorded
    complete: bool  # the whole trace was used
    skipped: int = 0  # recorded commands the driver did not send


def replay_cctalk(
    recorded: Recorded, kind: str, accepted: frozenset[int], currency: str = "EUR", *,
    address: int | None = None, crc16: bool = False,
) -> Replayed:  # fmt: skip
    """A ccTalk coin acceptor or bill validator: initialised and polled through the trace
    (escrowed notes stacked, as `kiosk devices watch` does)."""
    from drivers.cctalk.codec import HOST, Frame, RouteCode, encode
    from drivers.cctalk.devices import BillEscrowed, CoinAcceptor, NoteValidator
    from drivers.cctalk.transport import Bus

    port = ReplayPort(recorded)
    bus = Bus(port, crc16_mode=crc16, timeout=0.01, retries=0)  # type: ignore[arg-type]
    dev: CoinAcceptor | NoteValidator
    if kind == "coin":
        dev = CoinAcceptor(bus, currency, accepted, address)
    else:
        dev = NoteValidator(bus, currency, accepted, address)
    events: list[Any] = []
    try:
        events += dev.initialise()
    except DriverError as err:
        return Replayed(events, [*port.mismatches, f"could not start the device: {err}"], False)
    poll = encode(Frame(dev.address, HOST, dev.poll_header), crc16_mode=crc16)
    while port.will_send(poll):  # every poll the automat made, in turn
        limit = _recorded_limit(dev, port.next_sent(), crc16)
        if limit is not False:  # the automat set the inhibits here: so does the replay
            _as_recorded(port, lambda: dev.enable(limit))  # type: ignore[arg-type]  # noqa: B023
            continue
        for ev in _guarded(dev.poll):
            events.append(ev)
            if isinstance(ev, BillEscrowed) and isinstance(dev, NoteValidator):
                _guarded(lambda: dev.route(RouteCode.STACK) or [])  # noqa: B023
    return Replayed(events, port.mismatches, True, port.skipped)


def _recorded_limit(dev: Any, raw: bytes | None, crc16: bool) -> int | None | bool:
    """When the next recorded command sets the device's inhibits (231): the limit that makes
    our driver set the same ones (the highest value of a channel it enables; None: all
    inhibited); False when it is another command."""
    from drivers.cctalk.codec import Decoder, Header

    frames = Decoder(crc16_mode=crc16).feed(raw or b"", 0.0)
    if not frames or frames[0].header != Header.MODIFY_INHIBIT_STATUS:
        return False
    if frames[0].dest != dev.address:
        return False
    mask = int.from_bytes(frames[0].data, "little")
    values = [ch.value for ch in dev.channels.values() if ch.usable and mask >> (ch.number - 1) & 1]
    return max(values) if values else None


class EsspReplayPort(ReplayPort):
    """An eSSP port replayed: commands are matched by what they carry, not by their bytes (the
    sequence bit alternates: a command the recording has and the replay does not send would
    shift every later one), and each recorded answer is framed again with the sequence bit of
    the command it answers. A trace of an encrypted session replays up to its key exchange
    only: the session key is never recorded."""

    def __init__(self, recorded: Recorded) -> None:
        from drivers.essp.codec import Decoder

        frames: list[Any] = []
        decoders = {SENT: Decoder(), RECEIVED: Decoder()}  # a frame may span several reads
        for r in recorded.records:
            for f in decoders[r.direction].feed(r.data):
                frames.append((r.at, r.direction, f))
        self._frames = frames
        self._i = 0
        super().__init__(Recorded(recorded.headers, ()))

    def will_send_data(self, data: bytes) -> bool:
        return any(d == SENT and f.data == data for _, d, f in self._frames[self._i :])

    def next_sent_data(self) -> bytes | None:
        return next((f.data for _, d, f in self._frames[self._i :] if d == SENT), None)

    @property
    def position(self) -> int:
        return self._i

    def pass_over(self) -> None:
        """The next recorded command is not sent by the replayed driver: passed over (with
        what the device answered to it), and counted in `skipped`."""
        sent = [i for i in range(self._i, len(self._frames)) if self._frames[i][1] == SENT]
        if sent:
            self.skipped += 1
            self._i = sent[0] + 1

    def write(self, data: bytes) -> int:
        from drivers.essp.codec import Decoder, encode

        (cmd,) = Decoder().feed(bytes(data))
        sent = [i for i in range(self._i, len(self._frames)) if self._frames[i][1] == SENT]
        if not sent:
            raise DeviceTimeout("the trace has ended: nothing more was recorded")
        match = next((i for i in sent if self._frames[i][2].data == cmd.data), None)
        if match is None:
            at, _, f = self._frames[sent[0]]
            self.mismatches.append(f"at {at:.6f}: sent {cmd.data.hex(' ')}, "
                                   f"recorded {f.data.hex(' ')}")  # fmt: skip
            match = sent[0]
        self.skipped += sum(1 for i in sent if i < match)
        self._buffer.clear()
        self._i = match + 1
        while self._i < len(self._frames) and self._frames[self._i][1] != SENT:
            answer = self._frames[self._i][2]
            self._buffer += encode(cmd.seq, answer.address, answer.data)
            self._i += 1
        return len(data)


def replay_essp(recorded: Recorded, accepted: frozenset[int], currency: str = "EUR") -> Replayed:
    """An ITL note validator over eSSP: set up and polled through the trace (a held note
    stacked, as `kiosk devices watch` does)."""
    from drivers.cctalk.codec import RouteCode
    from drivers.cctalk.devices import BillEscrowed
    from drivers.essp import protocol as P
    from drivers.essp.device import Link, NoteValidator

    port = EsspReplayPort(recorded)
    link = Link(port)  # type: ignore[arg-type]
    dev = NoteValidator(link, currency, accepted)
    events: list[Any] = []
    try:
        events += dev.initialise()
    except DriverError as err:
        return Replayed(events, [*port.mismatches, f"could not start the device: {err}"], False)
    poll, hold = bytes((P.Cmd.POLL,)), bytes((P.Cmd.HOLD,))
    while port.will_send_data(poll) or (dev.holding is not None and port.will_send_data(hold)):
        nxt = port.next_sent_data() or b""
        if nxt[:1] == bytes((P.Cmd.SET_INHIBITS,)) and len(nxt) >= 3 and dev.setup is not None:
            # the automat set the inhibits here: so does the replay, to the same channels
            mask = int.from_bytes(nxt[1:3], "little")
            values = [v for i, v in enumerate(dev.setup.values) if mask >> i & 1 and v]
            _as_recorded(port, lambda: dev.enable(max(values) if values else None))  # noqa: B023
            continue
        for ev in _guarded(dev.poll):
            events.append(ev)
            if isinstance(ev, BillEscrowed):
                dev.route(RouteCode.STACK)
    return Replayed(events, port.mismatches, True, port.skipped)


class ReplayLink:
    """A ZVT link that is a recorded trace (one APDU a line): an APDU the client sends is
    matched with the next recorded one of the same command (its data may be masked in the
    trace: a password), and the terminal's recorded APDUs up to the next command are what it
    receives; when none is left before the next command, it waits in vain."""

    def __init__(self, recorded: Recorded) -> None:
        from drivers.zvt.apdu import decode_apdu

        self.records = [(r.direction, decode_apdu(r.data)) for r in recorded.records]
        self.i = 0
        self.mismatches: list[str] = []
        self.skipped = 0

    def refresh(self) -> None:
        """A replayed link never goes stale."""

    def connect(self) -> None:
        """Always there."""

    def close(self) -> None:
        """Nothing to close."""

    def commands(self) -> list[Any]:
        return [a for d, a in self.records if d == SENT]

    def send(self, raw: bytes) -> None:
        from drivers.zvt.apdu import decode_apdu, encode_apdu
        from drivers.zvt.transport import mask_zvt

        apdu = decode_apdu(raw)
        rest = [i for i in range(self.i, len(self.records)) if self.records[i][0] == SENT]
        match = next((i for i in rest if self.records[i][1].command == apdu.command), None)
        if match is None:
            self.mismatches.append(f"sent {raw.hex(' ')}, which the trace does not have")
            return
        # the recording is masked (a password): ours is compared masked the same way
        ours, _ = mask_zvt(SENT, raw)
        recorded = self.records[match][1]
        theirs = encode_apdu(recorded.command, recorded.data)
        if ours != theirs:
            self.mismatches.append(f"sent {ours.hex(' ')}, recorded {theirs.hex(' ')}")
        self.skipped += sum(1 for i in rest if i < match)
        self.i = match + 1

    def receive(self, timeout: float) -> Any:
        if self.i < len(self.records) and self.records[self.i][0] == RECEIVED:
            self.i += 1
            return self.records[self.i - 1][1]
        raise DeviceTimeout("the trace has nothing more from the terminal here")

    @property
    def exhausted(self) -> bool:
        return all(d == SENT for d, _ in self.records[self.i :])


def replay_zvt(recorded: Recorded, currency: str = "EUR") -> Replayed:
    """The card terminal: the client runs the commands the recording shows, in its order
    (registration, status enquiry, diagnosis, payment with the recorded amount, its
    reversal, end of day), against the terminal's recorded answers; the events are the
    results (for a payment: approved or not, the amount, the receipt number, the receipts).
    The client approves a payment (the goods are given) as `kiosk devices pay` does."""
    from drivers.zvt.apdu import Answer, Cmd
    from drivers.zvt.client import ZvtClient
    from drivers.zvt.fields import from_bcd

    link = ReplayLink(recorded)
    client = ZvtClient(link, currency=currency, t3=0.05, t4=0.2)  # type: ignore[arg-type]
    events: list[Any] = []
    for apdu in link.commands():
        try:
            if apdu.is_(Cmd.REGISTRATION):
                events.append(client.register())
            elif apdu.is_(Cmd.STATUS_ENQUIRY):
                events.append(client.status_enquiry())
            elif apdu.is_(Cmd.DIAGNOSIS):
                events.append(client.diagnosis())
            elif apdu.is_(Cmd.AUTHORIZATION) and apdu.data[:1] == b"\x04":
                amount = from_bcd(apdu.data[1:7])
                events.append(client.authorise(amount, decide=lambda _s: Answer.OK))
            elif apdu.is_(Cmd.REVERSAL) and len(apdu.data) >= 6:
                events.append(client.reversal(from_bcd(apdu.data[4:6])))
            elif apdu.is_(Cmd.END_OF_DAY):
                events.append(client.end_of_day())
        except DriverError as err:
            link.mismatches.append(f"{apdu.command.hex()}: {err}")
    return Replayed(events, link.mismatches, link.exhausted, link.skipped)


def replay_escpos(recorded: Recorded) -> Replayed:
    """The receipt printer: each status the automat read (DLE EOT 1 and 4) read again by our
    driver from the recorded bytes; the events are the statuses, a job's bytes are checked
    to have been recorded (not replayed: what a receipt says is the receipt tests' job)."""
    from escpos.printer import Serial

    from drivers.printer.device import DLE_EOT, ReceiptPrinter

    port = ReplayPort(recorded)
    printer = ReceiptPrinter("dummy")
    serial_printer = Serial.__new__(Serial)
    serial_printer.device, serial_printer.devfile = port, "replay"
    printer.escpos, printer._open = serial_printer, True
    events: list[Any] = []
    while (nxt := port.next_sent()) is not None:
        if nxt[:2] == DLE_EOT and port.will_send(nxt):
            events.append(printer.status())
        else:
            port.pass_over()  # a job's bytes: recorded, not replayed
    return Replayed(events, port.mismatches, True)


def _as_recorded(port: Any, step: Any) -> None:
    """Do what the automat did at this point of the recording (set the inhibits); when the
    driver sends nothing for it, the recorded command is passed over and counted."""
    at = port.position
    _guarded(lambda: step() or [])
    if port.position == at:
        port.pass_over()


def _guarded(step: Any) -> list[Any]:
    """One driver step; the end of a trace (nothing more recorded) ends the replay."""
    try:
        return list(step() or ())
    except DriverError:
        return []


def replay_pcsc(recorded: Recorded, keys: Any) -> Replayed:
    """The chip key: the summary a kiosk reads at insertion, through the trace. Each
    authentication's RndA (the automat's random, which never leaves it in clear) is taken
    back from the recorded token with the key, so the driver sends the recorded bytes."""
    from drivers.chipkey.profile import ChipKey

    card = ReplayCard(recorded)
    key = ChipKey(card, keys)  # type: ignore[arg-type]
    nonces = _nonces(recorded, keys)
    key.df.random = lambda n: next(nonces)
    summary = key.read_summary()
    return Replayed([summary], card.mismatches, card.exhausted)


def _nonces(recorded: Recorded, keys: Any) -> Iterator[bytes]:
    """RndA of each AES authentication in the trace: the token E(RndA || RndB') the automat
    sent, deciphered with the card's key (diversified with the UID the trace's GetVersion
    shows)."""
    from drivers.chipkey.crypto import cbc_decrypt

    records = list(recorded.records)
    uid = b""
    for i, r in enumerate(records):
        if r.direction != SENT or len(r.data) < 5 or i + 1 >= len(records):
            continue
        answer = records[i + 1].data
        if r.data[1] == 0xAF and answer[-2:] == b"\x91\x00" and len(answer) == 16:
            uid = uid or answer[:7]  # GetVersion's third frame: the UID first
        if r.data[1] == 0xAA and answer[-2:] == b"\x91\xaf":
            key_no, ek_rnd_b = r.data[5], answer[:-2]
            token_apdu = records[i + 2].data if i + 2 < len(records) else b""
            token = token_apdu[5 : 5 + 32]
            if not uid:
                raise FrameError("the trace has no GetVersion before its authentication")
            plain = cbc_decrypt(keys.card_key(key_no, uid), token, ek_rnd_b)
            yield plain[:16]


def replay(
    path: Path, *, accepted: dict[str, frozenset[int]], keys: Any, kind: str | None = None,
    currency: str = "EUR",
) -> Replayed:  # fmt: skip
    """Any trace by its protocol header. `accepted`: the coin and note values (minor units,
    "coins" and "notes") the automat took when it was recorded; `keys`: the chip keys'
    master keys (a key trace's authentication is replayed with them)."""
    recorded = read_trace(path)
    device = kind or recorded.headers.get("device", "")
    match recorded.protocol:
        case "cctalk":
            values = accepted["coins" if device == "coin" else "notes"]
            return replay_cctalk(recorded, device, values, currency)
        case "essp":
            return replay_essp(recorded, accepted["notes"], currency)
        case "zvt":
            return replay_zvt(recorded, currency)
        case "escpos":
            return replay_escpos(recorded)
        case "pcsc":
            return replay_pcsc(recorded, keys)
    raise FrameError(f"{path}: no replay for protocol {recorded.protocol!r}")


def jsonable(ev: Any) -> dict[str, Any]:
    """An event as one JSON object (for `kiosk devices replay`)."""
    if dataclasses.is_dataclass(ev):
        out = {"event": type(ev).__name__}
        for k, v in dataclasses.asdict(ev).items():  # type: ignore[arg-type]
            out[k] = v.hex() if isinstance(v, bytes) else v
        return out
    return {"event": str(ev)}
