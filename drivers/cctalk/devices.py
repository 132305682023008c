"""ccTalk coin acceptor and bill validator: identity, channel tables, inhibits, polling.

Both keep the last event counter. New events are `(counter - last) mod 255` (the counter wraps
255 -> 1); a counter of 0 while running means the device reset (its buffer is gone: journal a
fault and re-initialise, never re-credit); more than five new events means some were lost.
Events already in the buffer when the host starts are not credited, unless the host passes
the counter it had journaled before (`resume_counter`), when the ones after it are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from drivers.cctalk.codec import (
    BILL_EVENTS,
    COIN_ERRORS,
    FAULT_CODES,
    BillEventKind,
    Header,
    RouteCode,
    coin_error_kind,
    new_event_count,
    parse_bill_id,
    parse_coin_id,
)
from drivers.cctalk.transport import Bus
from drivers.errors import DeviceError, FrameError

log = logging.getLogger(__name__)

COIN_ADDRESS = 2
BILL_ADDRESS = 40
BUFFER_DEPTH = 5
#: ccTalk country codes of the currencies we take.
COUNTRY = {"EUR": ("EU",), "CHF": ("CH",)}


#: more events than this between two polls cannot be real (an acceptor takes a few coins a
#: second; it is polled several times a second): a counter that far on has restarted
MOST_EVENTS_PER_POLL = 20


@dataclass(frozen=True)
class Identity:
    category: str
    manufacturer: str
    product_code: str
    serial_number: int
    software_revision: str

    def as_dict(self) -> dict[str, object]:
        return {
            "category": self.category,
            "manufacturer": self.manufacturer,
            "product_code": self.product_code,
            "serial_number": self.serial_number,
            "software_revision": self.software_revision,
        }


@dataclass(frozen=True)
class Channel:
    """A coin position or bill type: its id as read, and its value in minor units (0 = off)."""

    number: int
    id_text: str
    value: int
    usable: bool


# ---------------------------------------------------------------- events out of the drivers


@dataclass(frozen=True)
class CashEvent:
    """A coin or note on a channel, with its value in minor units of `currency`."""

    device: str
    channel: int
    value: int
    currency: str
    counter: int | None  # ccTalk's event counter (eSSP has none)


class CoinCredited(CashEvent):
    """A coin accepted: credit."""


class BillEscrowed(CashEvent):
    """A note held in escrow: the host decides stack or return."""


class BillStacked(CashEvent):
    """A note in the stacker: credit."""


class BillReturned(CashEvent):
    """A note handed back from escrow."""


@dataclass(frozen=True)
class AcceptorIncident:
    """An error or status event; `kind` is reject, fraud, fatal or status."""

    device: str
    code: int
    text: str
    kind: str
    counter: int | None  # ccTalk's event counter (eSSP has none)


@dataclass(frozen=True)
class DeviceReset:
    """The event counter went back to 0: the device restarted; its old buffer is gone."""

    device: str


@dataclass(frozen=True)
class EventsLost:
    """More events happened between two polls than the buffer holds."""

    device: str
    lost: int
    counter: int


@dataclass(frozen=True)
class UnknownCredit:
    """Money taken on a channel with no known value: never dropped, reported for the journal."""

    device: str
    channel: int
    counter: int


AcceptorEvent = (
    CoinCredited
    | BillEscrowed
    | BillStacked
    | BillReturned
    | AcceptorIncident
    | DeviceReset
    | EventsLost
    | UnknownCredit
)


def _text(data: bytes) -> str:
    return data.decode("ascii", errors="replace").strip()


class _Acceptor:
    """What coin acceptor and bill validator share: identity, inhibits, counter, self-check."""

    name = "acceptor"
    default_address = 0
    channels_count = 16
    poll_header = Header.READ_BUFFERED_CREDIT

    def __init__(
        self, bus: Bus, currency: str, accepted: frozenset[int], address: int | None = None
    ) -> None:
        self.bus = bus
        self.address = address or self.default_address
        self.currency = currency
        self.accepted = accepted  # values (minor units) the site takes
        self.channels: dict[int, Channel] = {}
        self.identity: Identity | None = None
        self.last_counter: int | None = None
        #: the event buffer's results as last read: a buffer that does not continue it means
        #: the device restarted (its buffer cleared) even where the counter cannot tell
        self.last_results = b""
        self.limit: int | None = None  # enabled up to this value; None = disabled
        self.applied_mask = 0  # the inhibit mask last set on the device

    def req(self, header: int, data: bytes = b"") -> bytes:
        return self.bus.request(self.address, header, data)

    def identify(self) -> Identity:
        serial_bytes = self.req(Header.REQUEST_SERIAL_NUMBER)
        # 3 bytes, LSB first, or 4 for serial numbers past 16,777,215 (part 2, header 242;
        # part 3's table of data lengths: 3 to 4 bytes)
        if len(serial_bytes) not in (3, 4):
            raise FrameError(f"serial number has {len(serial_bytes)} bytes, expected 3 or 4")
        self.identity = Identity(
            category=_text(self.req(Header.REQUEST_EQUIPMENT_CATEGORY)),
            manufacturer=_text(self.req(Header.REQUEST_MANUFACTURER_ID)),
            product_code=_text(self.req(Header.REQUEST_PRODUCT_CODE)),
            serial_number=int.from_bytes(serial_bytes, "little"),
            software_revision=_text(self.req(Header.REQUEST_SOFTWARE_REVISION)),
        )
        return self.identity

    id_header = Header.REQUEST_COIN_ID
    id_length = 6
    channel_word = "coin position"
    unit_word = "coin"

    def _parse_id(self, text: str) -> tuple[str, int, str] | None:
        raise NotImplementedError

    def _value(self, country: str, units: int) -> int:
        """Minor units of the site currency for an id's value."""
        return units

    def read_channels(self) -> dict[int, Channel]:
        """The channel table from the device's ids; ids the site does not take stay disabled."""
        out = {}
        countries = COUNTRY.get(self.currency, ())
        for ch in range(1, self.channels_count + 1):
            raw = _text(self.req(self.id_header, bytes((ch,))))
            text = raw.ljust(self.id_length, ".")[: self.id_length]
            try:
                parsed = self._parse_id(text)
            except FrameError:
                log.warning("%s %d: unreadable id %r, disabled", self.channel_word, ch, text)
                parsed = None
            if parsed is None:
                continue
            country, units, _issue = parsed
            value = self._value(country, units) if country in countries else 0
            usable = value in self.accepted
            if not usable:
                log.info(
                    "%s %d (%s) is not a %s %s this site takes: disabled",
                    self.channel_word,
                    ch,
                    text,
                    self.currency,
                    self.unit_word,
                )
            out[ch] = Channel(ch, text, value if usable else 0, usable)
        return out

    def initialise(self, resume_counter: int | None = None) -> list[AcceptorEvent]:
        """Start-up sequence (spec appendix 11/16); returns events owed since `resume_counter`."""
        self.req(Header.SIMPLE_POLL)
        self.identify()
        self.channels = self.read_channels()
        self._configure()
        # Everything inhibited until the event counter is read: a coin the device took before
        # that read would be in the baseline and never credited (the kiosk can ask to enable
        # the acceptor before it comes online: a customer already paying at a slow start).
        wanted, self.limit = self.limit, None
        self._apply_inhibits()
        data = self.req(self.poll_header)
        counter = data[0]
        owed: list[AcceptorEvent] = []
        if resume_counter is not None and counter:  # 0 too: the device had just started
            n = new_event_count(resume_counter, counter)
            if 0 < n <= BUFFER_DEPTH:  # accepted while the host was down: still owed
                owed = self._events(data, n)
            elif n > BUFFER_DEPTH:
                owed = [
                    EventsLost(self.name, n - BUFFER_DEPTH, counter),
                    *self._events(data, BUFFER_DEPTH),
                ]
        self.last_counter, self.last_results = counter, data[1:]
        self.limit = wanted
        if wanted is not None:
            self._apply_inhibits()
        return owed

    def _configure(self) -> None:
        """Device-specific set-up before inhibits (bill operating mode)."""

    def enable(self, limit: int | None) -> None:
        """Enable the channels worth at most `limit` minor units (None: disable all)."""
        self.limit = limit
        self._apply_inhibits()

    def inhibit_mask(self) -> int:
        mask = 0
        if self.limit is not None:
            for ch in self.channels.values():
                if ch.usable and ch.value <= self.limit:
                    mask |= 1 << (ch.number - 1)
        return mask

    def _apply_inhibits(self) -> None:
        mask = self.inhibit_mask()
        self.req(Header.MODIFY_INHIBIT_STATUS, mask.to_bytes(self.channels_count // 8, "little"))
        self.req(Header.MODIFY_MASTER_INHIBIT, bytes((1 if mask else 0,)))
        self.applied_mask = mask

    def _was_reset(self) -> bool:
        """Did the device restart since we set it up? A restart clears its inhibits (all
        channels off, master inhibited): compare them with what we last set."""
        if not self.applied_mask:
            return False  # we had it all off: a restart would look the same
        master = self.req(Header.REQUEST_MASTER_INHIBIT)
        return not (master and master[0] & 1)

    def _after_reset(self) -> None:
        self.channels = self.read_channels()
        self._configure()
        self._apply_inhibits()

    def self_check(self) -> tuple[int, str]:
        data = self.req(Header.PERFORM_SELF_CHECK)
        code = data[0] if data else 255
        return code, FAULT_CODES.get(code, f"fault code {code}")

    def poll(self) -> list[AcceptorEvent]:
        """Read the event buffer once; the new events, oldest first."""
        data = self.req(self.poll_header)
        if len(data) != 1 + 2 * BUFFER_DEPTH:
            raise FrameError(f"event buffer has {len(data)} bytes, expected 11")
        counter = data[0]
        last = self.last_counter
        if last is None:
            raise DeviceError(f"{self.name} polled before it was initialised")
        if counter == 0:
            if last == 0:
                return []
            log.warning("%s event counter back to 0: device reset", self.name)
            self.last_counter, self.last_results = 0, data[1:]
            self._after_reset()
            return [DeviceReset(self.name)]
        n = new_event_count(last, counter)
        continues = self._continues(data[1:], n)
        self.last_counter, self.last_results = counter, data[1:]
        if not continues and counter <= BUFFER_DEPTH:
            # Restarted, and the events since (refusals: it is inhibited after a restart)
            # carried the counter back to or a little past the last one the host read.
            log.warning("%s restarted: its buffer does not continue the last one", self.name)
            self._after_reset()
            return [DeviceReset(self.name), *self._events(data, counter)]
        if n == 0:
            return []
        if (
            n > BUFFER_DEPTH
            and counter <= BUFFER_DEPTH
            and (n > MOST_EVENTS_PER_POLL or self._was_reset())
        ):
            # Restarted, and events came before this poll saw the counter at 0: they are the
            # `counter` newest in the buffer, none lost (read as 250 lost events before).
            log.warning("%s restarted: %d event(s) since", self.name, counter)
            self._after_reset()
            return [DeviceReset(self.name), *self._events(data, counter)]
        if n > BUFFER_DEPTH:
            log.error("%s: %d events since the last poll, %d lost", self.name, n, n - BUFFER_DEPTH)
            self.enable(None)  # stop taking money until someone looks
            return [
                EventsLost(self.name, n - BUFFER_DEPTH, counter),
                *self._events(data, BUFFER_DEPTH),
            ]
        return self._events(data, n)

    def _continues(self, results: bytes, n: int) -> bool:
        """Does the buffer read now continue the last one, `n` events on? The buffer is a queue
        (result 1 the newest): the last read's first 5 - n results are now results n + 1 on."""
        if not self.last_results or n >= BUFFER_DEPTH:
            return True  # nothing to compare: the counter decides
        return results[2 * n :] == self.last_results[: 2 * (BUFFER_DEPTH - n)]

    def _events(self, data: bytes, n: int) -> list[AcceptorEvent]:
        counter = data[0]
        # Result 1 (bytes 1-2) is the newest: walk from the oldest new one to the newest.
        return [
            e
            for i in reversed(range(n))
            if (e := self._event(data[1 + 2 * i], data[2 + 2 * i], (counter - 1 - i) % 255 + 1))
            is not None
        ]

    def _event(self, a: int, b: int, counter: int) -> AcceptorEvent | None:
        raise NotImplementedError


class CoinAcceptor(_Acceptor):
    """A ccTalk coin acceptor (default address 2)."""

    name = "coin"
    default_address = COIN_ADDRESS
    poll_header = Header.READ_BUFFERED_CREDIT

    def _parse_id(self, text: str) -> tuple[str, int, str] | None:
        return parse_coin_id(text)

    def _event(self, a: int, b: int, counter: int) -> AcceptorEvent | None:
        if a == 0:
            if b == 0:
                return None
            text = COIN_ERRORS.get(b, f"error code {b} (not in the specification's table)")
            return AcceptorIncident(self.name, b, text, coin_error_kind(b), counter)
        ch = self.channels.get(a)
        if ch is None or not ch.usable:
            log.error("coin credited on unknown position %d", a)
            return UnknownCredit(self.name, a, counter)
        return CoinCredited(self.name, a, ch.value, self.currency, counter)


class NoteValidator(_Acceptor):
    """A ccTalk bill validator with escrow (default address 40)."""

    name = "notes"
    default_address = BILL_ADDRESS
    poll_header = Header.READ_BUFFERED_BILL_EVENTS

    def __init__(
        self, bus: Bus, currency: str, accepted: frozenset[int], address: int | None = None
    ) -> None:
        super().__init__(bus, currency, accepted, address)
        self.escrow: Channel | None = None
        self.exponent = 2

    def scaling(self, country: str) -> tuple[int, int]:
        data = self.req(Header.COUNTRY_SCALING_FACTOR, country.encode("ascii"))
        if len(data) != 3:
            raise FrameError(f"scaling factor reply has {len(data)} bytes, expected 3")
        return int.from_bytes(data[:2], "little"), data[2]

    id_header = Header.REQUEST_BILL_ID
    id_length = 7
    channel_word = "bill type"
    unit_word = "note"

    def _parse_id(self, text: str) -> tuple[str, int, str] | None:
        return parse_bill_id(text)

    def read_channels(self) -> dict[int, Channel]:
        self._scales: dict[str, tuple[int, int]] = {}
        return super().read_channels()

    def _value(self, country: str, units: int) -> int:
        """A bill id's value times the country scaling factor (header 156), in minor units."""
        if country not in self._scales:
            self._scales[country] = self.scaling(country)
        scale, decimals = self._scales[country]
        return units * scale * 10**self.exponent // 10**decimals if scale else 0

    def _configure(self) -> None:
        self.req(Header.BILL_OPERATING_MODE, bytes((0b11,)))  # use stacker, use escrow

    def route(self, code: RouteCode) -> None:
        """Stack, return or hold the bill in escrow (header 154)."""
        data = self.req(Header.ROUTE_BILL, bytes((code,)))
        if data and data[0] == 254:
            raise DeviceError("route bill: escrow is empty")
        if data and data[0] == 255:
            raise DeviceError("route bill: failed to route")

    def _event(self, a: int, b: int, counter: int) -> AcceptorEvent | None:
        if a == 0:
            if b == 1 and self.escrow is not None:
                held, self.escrow = self.escrow, None
                return BillReturned(self.name, held.number, held.value, self.currency, counter)
            if b == 0 and self.limit is not None:
                # Self-inhibited after polling stalled (spec example 4): enable it again.
                log.warning("bill validator reports master inhibit active: re-enabling")
                self._apply_inhibits()
            text, kind = BILL_EVENTS.get(b, (f"event {b}", BillEventKind.STATUS))
            if kind in (BillEventKind.FATAL, BillEventKind.FRAUD):
                self.escrow = None  # the note's fate is unknown; it is no longer ours to route
            return AcceptorIncident(self.name, b, text, kind.name.lower(), counter)
        ch = self.channels.get(a)
        if ch is None or not ch.usable:
            if b == 0:
                return UnknownCredit(self.name, a, counter)
            self.route(RouteCode.RETURN)  # a note we cannot value goes straight back
            text = f"unknown bill type {a} returned"
            return AcceptorIncident(self.name, 0, text, "reject", counter)
        if b == 1:
            self.escrow = ch
            return BillEscrowed(self.name, a, ch.value, self.currency, counter)
        self.escrow = None
        return BillStacked(self.name, a, ch.value, self.currency, counter)
