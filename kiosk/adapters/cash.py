"""The kiosk's cash ports on the ccTalk drivers, and the translation of their events.

Coin acceptor and note validator may share one bus (one port URL) or use two; each bus has
one owner thread (`BusWorker`). Driver events are turned into engine events here; engine
commands become calls on the bus thread. A simulated device is the byte-level simulator on a
pty: its port is the pty's path, like any serial device's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drivers.cctalk.codec import BillEventKind, RouteCode
from drivers.cctalk.devices import (
    BILL_ADDRESS,
    BUFFER_DEPTH,
    COIN_ADDRESS,
    AcceptorIncident,
    BillEscrowed,
    BillReturned,
    BillStacked,
    CoinAcceptor,
    CoinCredited,
    DeviceReset,
    EventsLost,
    NoteValidator,
    UnknownCredit,
    _Acceptor,
)
from drivers.cctalk.sim import (
    BusSimulator,
    SimBillValidator,
    SimCoinAcceptor,
    euro_coins,
    euro_notes,
    swiss_coins,
    swiss_notes,
)
from drivers.cctalk.transport import Bus
from drivers.cctalk.worker import BusWorker, DeviceOffline, DeviceOnline
from drivers.errors import DriverError
from drivers.essp.device import Link
from drivers.essp.device import NoteValidator as EsspValidator
from drivers.essp.sim import SimNoteValidator
from kiosk.app.ports import CheckResult, DeviceReport, Emit
from kiosk.domain.events import (
    AcceptorCounter,
    CoinAccepted,
    Device,
    DeviceFault,
    DeviceOk,
    Event,
    NoteEscrowed,
    NoteReturned,
    NoteStacked,
)
from kiosk.domain.money import Money
from kiosk.domain.site import SerialDevice, Site

log = logging.getLogger(__name__)

DEVICE = {"coin": Device.COIN, "notes": Device.NOTES}
#: the engine says it is alive at least every half second (its tick): three missed, and the
#: acceptors stop taking money
DEADMAN_SECONDS = 1.5
#: Bill status events that make the validator unusable until the matching "OK" event.
STACKER_DOWN = {11: "stacker removed", 14: "stacker full"}
STACKER_UP = {10, 12}


def translate(ev: object) -> list[Event]:
    """Driver event -> engine events (money, faults and recoveries; rejects only logged)."""
    match ev:
        case CoinCredited(channel=ch, value=v, currency=cur, counter=n):
            return [CoinAccepted(Money(v, cur), ch, n)]
        case BillEscrowed(channel=ch, value=v, currency=cur):
            return [NoteEscrowed(Money(v, cur), ch)]
        case BillStacked(channel=ch, value=v, currency=cur, counter=n):
            return [NoteStacked(Money(v, cur), ch, n)]
        case BillReturned(channel=ch, value=v, currency=cur):
            return [NoteReturned(Money(v, cur), ch)]
        case AcceptorIncident(device=d, code=code, text=text, kind=kind):
            if kind in (BillEventKind.FATAL.name.lower(), BillEventKind.FRAUD.name.lower()):
                return [DeviceFault(DEVICE[d], code, text)]
            if d == "notes" and code in STACKER_DOWN:
                return [DeviceFault(Device.NOTES, code, text)]
            if d == "notes" and code in STACKER_UP:
                return [DeviceOk(Device.NOTES)]
            log.info("%s: %s (%d)", d, text, code)
            return []
        case DeviceReset(device=d):
            # The device counts from 0 again: journaled with the fault, so that a restart
            # resumes where the device is now (the events after the reset are still owed).
            return [
                DeviceFault(DEVICE[d], 0, "device reset: event counter back to 0", counter=0),
                DeviceOk(DEVICE[d]),
            ]
        case EventsLost(device=d, lost=n, counter=c):
            # the buffered events that follow it are (c - 4) .. c: accounted up to c - 5
            before = (c - BUFFER_DEPTH - 1) % 255 + 1
            text = f"{n} event(s) lost between polls: money may be missing"
            return [DeviceFault(DEVICE[d], 0, text, counter=before)]
        case UnknownCredit(device=d, channel=ch):
            return [DeviceFault(DEVICE[d], 0, f"credit on unknown channel {ch}: value not known")]
        case DeviceOffline(device=d, reason=reason):
            return [DeviceFault(DEVICE[d], 0, f"offline: {reason}")]
        case DeviceOnline(device=d, counter=c):
            ok: list[Event] = [DeviceOk(DEVICE[d])]
            return ok if c is None else [*ok, AcceptorCounter(DEVICE[d], c)]
    raise TypeError(f"unknown driver event {ev!r}")


class CashPort:
    """A kiosk coin or note port on one ccTalk device."""

    def __init__(self, worker: BusWorker, device: _Acceptor, hub: _Hub) -> None:
        self.worker, self.device, self.hub = worker, device, hub

    def report(self) -> DeviceReport:
        d, ident = self.device, self.device.identity
        identity = {}
        if ident is not None:
            identity = {
                "manufacturer": ident.manufacturer,
                "product": f"{ident.category} {ident.product_code}",
                "serial": str(ident.serial_number),
                "firmware": ident.software_revision,
            }
        return DeviceReport(
            d.name,
            self.worker.online(d.name),
            identity,
            self.hub.last_error.get(d.name),
            dict(self.hub.counters.get(d.name, {})),
        )

    def self_test(self) -> CheckResult:
        """ccTalk 232 Perform self-check: the fault code and its text (0 = OK)."""
        name = f"{self.device.name}: self-check"
        try:
            code, text = self.worker.ask(self.device, self.device.self_check)
        except DriverError as err:
            return CheckResult(name, False, (str(err),))
        return CheckResult(name, code == 0, (f"fault code {code}: {text}",))

    def attach(self, emit: Emit) -> None:
        self.hub.emit = emit

    def enable(self, max_value: Money) -> None:
        self.worker.enable(self.device, max_value.minor)

    def disable(self) -> None:
        self.worker.enable(self.device, None)

    def alive(self) -> None:
        self.worker.alive()


class NotePort(CashPort):
    """The note validator: ccTalk's, or an ITL validator over eSSP (the same events)."""

    device: NoteValidator | EsspValidator  # type: ignore[assignment]

    def stack(self) -> None:
        self.worker.call(self.device, self.device.route, RouteCode.STACK)  # type: ignore[arg-type]

    def return_note(self) -> None:
        self.worker.call(self.device, self.device.route, RouteCode.RETURN)  # type: ignore[arg-type]


_COUNTED: dict[type, str] = {
    CoinCredited: "accepted",
    BillStacked: "stacked",
    BillReturned: "returned",
    AcceptorIncident: "errors",
    DeviceReset: "resets",
    EventsLost: "events_lost",
    DeviceOffline: "offline",
}


def _error_text(ev: object) -> str:
    match ev:
        case AcceptorIncident(code=code, text=text):
            return f"{text} ({code})"
        case DeviceOffline(reason=reason):
            return f"offline: {reason}"
        case EventsLost(lost=n):
            return f"{n} event(s) lost between polls"
        case UnknownCredit(channel=ch):
            return f"credit on unknown channel {ch}"
    return str(ev)


@dataclass
class _Hub:
    """Where translated events go: the kiosk's queue once a port is attached."""

    emit: Emit | None = None
    early: list[Event] = field(default_factory=list)
    #: per device: what it reported since the start, for diagnostics
    counters: dict[str, Counter[str]] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)

    def _count(self, ev: object) -> None:
        name = getattr(ev, "device", None)
        if not isinstance(name, str):
            return
        kind = _COUNTED.get(type(ev))
        if kind is not None:
            self.counters.setdefault(name, Counter())[kind] += 1
        if isinstance(ev, AcceptorIncident | DeviceOffline | EventsLost | UnknownCredit):
            self.last_error[name] = _error_text(ev)

    def __call__(self, driver_event: object) -> None:
        self._count(driver_event)
        for ev in translate(driver_event):
            if self.emit is None:
                self.early.append(ev)
            else:
                for e in self.early:
                    self.emit(e)
                self.early.clear()
                self.emit(ev)


@dataclass
class CcTalkCash:
    """The cash devices of a site: ports for the kiosk, workers to start and stop."""

    coin: CashPort | None
    notes: NotePort | None
    workers: list[BusWorker]

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


def open_cash(
    site: Site,
    *,
    period: float = 0.1,
    open_bus: Callable[..., Bus] = Bus.open,
    resume: dict[str, int] | None = None,
    deadman: float = DEADMAN_SECONDS,
) -> CcTalkCash:
    """Buses, devices, workers and ports from the site's [devices.coin] and [devices.notes],
    on the ports it names (a simulator's too: it runs on a real port). `resume`: each device's
    event counter as the journal last knew it (`Journal.acceptor_counters`); events after it
    are still owed. `deadman`: the acceptors are inhibited by their bus thread when the engine
    has not said it is alive for this long."""
    hub = _Hub()
    buses: dict[tuple[str, bool], Bus] = {}
    on_bus: dict[tuple[str, bool], list[_Acceptor]] = {}
    made: dict[str, _Acceptor] = {}

    def add(name: str, conf: SerialDevice, make: Callable[[Bus], _Acceptor]) -> None:
        url = conf.port
        key = (url, conf.crc16)
        if key not in buses:
            # a port that is not there yet is no reason to stop: the device is offline
            # (named with its port) until it appears
            buses[key] = open_bus(url, crc16_mode=conf.crc16, wait=True)
            on_bus[key] = []
        dev = make(buses[key])
        on_bus[key].append(dev)
        made[name] = dev

    d, cur = site.devices, site.currency
    coins = frozenset(m.minor for m in site.coins)
    notes = frozenset(m.minor for m in site.notes)
    if site.cash_enabled and d.coin is not None:
        coin_address = d.coin.address
        add("coin", d.coin, lambda bus: CoinAcceptor(bus, cur, coins, coin_address))
    essp: EsspValidator | None = None
    if site.cash_enabled and d.notes is not None and d.notes.protocol == "essp":
        essp = EsspValidator(Link.open(d.notes.port, wait=True), cur, notes,
                             encrypt=d.notes.encryption)  # fmt: skip
    elif site.cash_enabled and d.notes is not None:
        notes_address = d.notes.address
        add("notes", d.notes, lambda bus: NoteValidator(bus, cur, notes, notes_address))
    known = resume or {}
    workers = {
        key: BusWorker(buses[key], devs, hub, period=period, deadman=deadman,
                       resume={d.name: known[d.name] for d in devs if d.name in known})
        for key, devs in on_bus.items()
    }  # fmt: skip
    worker_of = {dev.name: workers[key] for key, devs in on_bus.items() for dev in devs}
    if essp is not None:  # its own port and its own thread, polled as the ccTalk devices are
        workers[("essp", False)] = worker_of["notes"] = BusWorker(
            essp.link,
            [essp],
            hub,
            period=period,
            deadman=deadman,  # type: ignore[list-item]
        )
        made["notes"] = essp  # type: ignore[assignment]
    coin_port = CashPort(worker_of["coin"], made["coin"], hub) if "coin" in made else None
    notes_dev = made.get("notes")
    note_port = None
    if isinstance(notes_dev, NoteValidator | EsspValidator):
        note_port = NotePort(worker_of["notes"], notes_dev, hub)  # type: ignore[arg-type]
    return CcTalkCash(coin_port, note_port, list(workers.values()))


def start_simulator(
    site: Site, *, byte_time: float = 0.0, link: Path | None = None,
    notes_link: Path | None = None,
) -> tuple[BusSimulator, SimCoinAcceptor, SimBillValidator | SimNoteValidator]:  # fmt: skip
    """A simulated bus, started, with a coin acceptor and note validator for the site's currency
    at the addresses its site file names (`link`: a stable path to it, as udev makes for a USB
    adapter, so that it can be unplugged and plugged in again). A site whose notes speak eSSP
    gets a simulated ITL validator on a port of its own (`notes_port`; `notes_link` a stable
    path to it), started too: the bus's `stop` stops it."""
    swiss = site.currency == "CHF"
    d = site.devices
    coin = SimCoinAcceptor(
        swiss_coins() if swiss else euro_coins(),
        address=(d.coin.address if d.coin else None) or COIN_ADDRESS,
    )
    ids = swiss_notes() if swiss else euro_notes()
    if d.notes is not None and d.notes.protocol == "essp":
        # a site that asks for encryption gets a validator that takes nothing else
        validator = SimNoteValidator(ids, byte_time=byte_time, link=notes_link,
                                     needs_encryption=d.notes.encryption)  # fmt: skip
        validator.start()
        sim = BusSimulator([coin], byte_time=byte_time, link=link)
        sim.start()
        sim.companions.append(validator)
        return sim, coin, validator
    bills = SimBillValidator(ids, address=(d.notes.address if d.notes else None) or BILL_ADDRESS)
    sim = BusSimulator([coin, bills], byte_time=byte_time, link=link)
    sim.start()
    return sim, coin, bills


def notes_port(bus: BusSimulator, notes: SimBillValidator | SimNoteValidator) -> str:
    """Where the kiosk finds the simulated note validator: on the ccTalk bus, or its own."""
    return notes.path if isinstance(notes, SimNoteValidator) else bus.path
