"""`kiosk simulate`: a site's simulated devices as their own process, on their real transports.

The ccTalk bus (coin acceptor and note validator) on a pseudo-terminal, the ZVT card terminal on
TCP, the receipt printer on a pseudo-terminal, and the customers' chip keys as virtual DESFire
cards put into pcscd's vpcd reader. Once they are up it writes the site it was given with every
`sim` port replaced by the simulator's real port, and beside it the secrets file the simulated
keys were made with (referenced from the site's `[secrets]`), so that the production automat
(`kiosk run --site OUT`) runs on them as it would on hardware. It runs until SIGTERM.

A small control interface (a Unix socket, one command per line, one answer line each: `ok ...`
or `error ...`) plays the customer and the devices' outside world:

    insert K-1001 | remove | coin 2.00 | note 20.00 | terminal approve|decline|...
    paper ok|near_end|out | status

`SimulatorControl` is its client: the developer panel, the scripted customers and the tests
drive the devices through it, whether the simulators run in `kiosk simulate` or in the demo's
rig (`serve_control` serves either).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import tomlkit

from drivers.cctalk.sim import (
    BusSimulator,
    SimBillValidator,
    SimCoinAcceptor,
    euro_coins,
    euro_notes,
    swiss_coins,
    swiss_notes,
)
from drivers.chipkey.profile import ChipKey, Identity
from drivers.chipkey.sim import VirtualCard
from drivers.chipkey.vpcd import VPCD_READER, VpcdCard
from drivers.errors import DriverError
from drivers.essp.sim import SimNoteValidator
from drivers.printer.sim import PrinterSim
from drivers.zvt.sim import TerminalSim
from kiosk.adapters.cash import notes_port, start_simulator
from kiosk.adapters.key import DEMO_KEYS as DEMO_MASTER_KEYS
from kiosk.domain.events import KeyStatus
from kiosk.domain.money import Money
from kiosk.domain.site import Site, is_simulated, load_site
from kiosk.service.diag import demo_pin_hash
from kiosk.service.keytool import virtual_path, virtual_uid

log = logging.getLogger(__name__)

#: the vpcd reader the simulated keys go into (pcscd's name for vpcd's first slot)

#: Demo keys: serial, contract account, status at head office, reason, open debt (minor units).
DEMO_KEYS = (
    ("K-1001", "4711001", KeyStatus.ACTIVE, "", 700),
    ("K-1002", "4711002", KeyStatus.BLOCKED, "lost", 0),
    ("K-1003", "4711003", KeyStatus.ACTIVE, "", 0),
)
#: the demo technician key (PIN: kiosk.service.diag.DEMO_PIN)
TECHNICIAN_KEY = "T-9001"


def coin_id(value: Money) -> str:
    """The simulated coin acceptor's name for a coin: country, value in cents, issue."""
    return f"{_COUNTRY[value.currency]}{value.minor:03d}A"


def bill_id(value: Money) -> str:
    """The simulated note validator's name for a note: country, value in whole units, issue."""
    return f"{_COUNTRY[value.currency]}{value.minor // 100:04d}A"


_COUNTRY = {"EUR": "EU", "CHF": "CH"}


class KeySlot(Protocol):
    """Where the simulated keys go: pcscd's vpcd reader, or the demo rig's in-process slot."""

    def insert(self, serial: str) -> None: ...

    def remove(self) -> None: ...


class VpcdSlot:
    """Keys into pcscd's vpcd reader, which the automat's PC/SC port reads as hardware."""

    def __init__(self, cards: dict[str, VirtualCard]) -> None:
        self.cards = cards
        self.card: VpcdCard | None = None

    def insert(self, serial: str) -> None:
        self.remove()
        self.card = VpcdCard(self.cards[serial], stays=True)  # (pcscd may be restarted)
        self.card.insert()

    def remove(self) -> None:
        if self.card is not None:
            self.card.remove()
            self.card = None


@dataclass
class Simulators:
    """The running simulators of one site, and its keys."""

    site: Site
    bus: BusSimulator
    coin: SimCoinAcceptor
    notes: SimBillValidator | SimNoteValidator  # ccTalk's, or an ITL validator over eSSP
    terminal: TerminalSim | None
    printer: PrinterSim | None
    cards: dict[str, VirtualCard]
    slot: KeySlot
    every: bool = False  # every device simulated, whatever the site's ports say
    key: str | None = None  # the serial of the key in the reader

    def ports(self) -> dict[str, str]:
        """Each simulated device's real port, by its name in the site file."""
        d = self.site.devices
        out: dict[str, str] = {}
        for name, conf in (("coin", d.coin), ("notes", d.notes)):
            if conf is not None and (self.every or is_simulated(conf.port)):
                out[name] = self.bus.path if name == "coin" else notes_port(self.bus, self.notes)
        if self.terminal is not None:
            out["card"] = self.terminal.port
        if self.printer is not None:
            out["printer"] = self.printer.path
        return out

    # ------------------------------------------------------------ what a customer does

    def insert(self, serial: str) -> str:
        if serial not in self.cards:
            raise ValueError(f"no simulated key {serial} (known: {', '.join(self.cards)})")
        self.key = None
        self.slot.insert(serial)
        self.key = serial
        return f"key {serial} in the reader"

    def remove(self) -> str:
        self.slot.remove()
        was, self.key = self.key, None
        return f"key {was} removed" if was else "no key in the reader"

    def coin_in(self, amount: str) -> str:
        value = Money.parse(amount, self.site.currency)
        took = self.coin.insert(coin_id(value))
        return f"coin {value} " + ("taken" if took else "returned (inhibited or unknown)")

    def note_in(self, amount: str) -> str:
        value = Money.parse(amount, self.site.currency)
        took = self.notes.insert(bill_id(value))
        return f"note {value} " + ("in escrow" if took else "returned (inhibited or unknown)")

    def terminal_next(self, outcome: str) -> str:
        if self.terminal is None:
            raise ValueError("this site has no card terminal")
        self.terminal.next(outcome)
        return f"the terminal's next answer: {outcome}"

    def paper(self, state: str) -> str:
        if self.printer is None:
            raise ValueError("this site has no simulated printer")
        if state not in ("ok", "near_end", "out"):
            raise ValueError(f"paper {state!r}: ok, near_end or out")
        self.printer.paper = state
        return f"paper {state}"

    def status(self) -> str:
        return json.dumps({
            "keys": list(self.cards),
            "card_terminal": self.terminal is not None,
            "key": self.key,
            "coins_taken": self.coin.counter,
            # the acceptor takes coins now: enabled by the automat, some coin not inhibited
            "coin_enabled": self.coin.master and self.coin.inhibit_mask != 0,
            "notes_stacked": len(self.notes.stacked),
            "payments": len(self.terminal.payments) if self.terminal else 0,
            "printed": len(self.printer.jobs) if self.printer else 0,
        })  # fmt: skip

    def command(self, line: str) -> str:
        """One control command; its answer (ValueError for a bad one)."""
        verb, _, arg = line.strip().partition(" ")
        match verb:
            case "insert":
                return self.insert(arg)
            case "remove":
                return self.remove()
            case "coin":
                return self.coin_in(arg)
            case "note":
                return self.note_in(arg)
            case "terminal":
                return self.terminal_next(arg)
            case "paper":
                return self.paper(arg)
            case "status":
                return self.status()
            case "unplug" | "plug" if arg == "bus":
                getattr(self.bus, verb)()
                return f"the ccTalk bus {verb}ged"
        raise ValueError(f"unknown command {verb!r}: insert SERIAL, remove, coin AMOUNT, "
                         "note AMOUNT, terminal ANSWER, paper STATE, status, unplug bus, "
                         "plug bus")  # fmt: skip


def make_keys(site: Site, data_dir: Path) -> dict[str, VirtualCard]:
    """The demo customers' keys and the technician key, as virtual cards under `data_dir`."""
    cards = {}
    people = [(serial, account, "customer") for serial, account, *_ in DEMO_KEYS]
    for serial, account, role in [*people, (TECHNICIAN_KEY, "0000000", "technician")]:
        path = virtual_path(data_dir, serial)
        path.parent.mkdir(parents=True, exist_ok=True)
        card = VirtualCard(virtual_uid(serial), path)
        if not path.exists():
            ident = Identity(site.utility_id, account, "1ESY11600" + account[-5:], "electricity",
                             serial, role, site.currency)  # fmt: skip
            ChipKey(card, DEMO_MASTER_KEYS).personalise(
                ident, upper=site.key_credit_limit.minor, initial=350 if role == "customer" else 0
            )
        cards[serial] = card
    return cards


def every_port_simulated(site: Site) -> bool:
    """Does the site name a simulator for every device (the demo)?"""
    d = site.devices
    ports = [d.reader.reader, *(dev.port for dev in (d.coin, d.notes, d.card) if dev)]
    return all(is_simulated(p) for p in ports)


def simulated_devices(site: Site) -> list[str]:
    """The devices the site names a simulator for ("sim")."""
    d = site.devices
    named = {"coin": d.coin, "notes": d.notes, "card": d.card, "printer": d.printer}
    out = [name for name, dev in named.items() if dev is not None and is_simulated(dev.port)]
    return out + (["reader"] if is_simulated(d.reader.reader) else [])


def with_ports(site: Site, **ports: str) -> Site:
    """The site with these devices on these ports (coin, notes, card, printer)."""
    d = site.devices
    update = {name: getattr(d, name).model_copy(update={"port": port})
              for name, port in ports.items() if getattr(d, name) is not None}  # fmt: skip
    return dataclasses.replace(site, devices=d.model_copy(update=update))


@contextmanager
def simulators(
    site: Site,
    data_dir: Path,
    *,
    every: bool = False,
    card_step: float = 0.2,
    slot: Callable[[dict[str, VirtualCard]], KeySlot] = VpcdSlot,
) -> Iterator[Simulators]:
    """Start the simulator of every device the site names `sim` (`every`: of every device, and
    a printer even where the site has none); stop them when done. `card_step`: the terminal's
    pause between its prompts (a person at the PIN pad). `slot`: where the keys go (made
    from the keys' cards; pcscd's vpcd reader unless the demo rig brings its own)."""
    d = site.devices
    with ExitStack() as stack:
        # the bus behind a stable path, as udev's /dev/serial/by-id/ link is: it can be
        # unplugged and plugged in again (`unplug bus`, `plug bus`)
        data_dir.mkdir(parents=True, exist_ok=True)
        link = data_dir / "serial-by-id-ccTalk-bus"
        bus, coin, notes = start_simulator(site, link=link)
        stack.callback(bus.stop)
        terminal = None
        if site.card_enabled and d.card is not None and (every or is_simulated(d.card.port)):
            terminal = TerminalSim("tcp", step=card_step)
            terminal.start()
            stack.callback(terminal.stop)
        printer = None
        if every or (d.printer is not None and is_simulated(d.printer.port)):
            printer = stack.enter_context(PrinterSim())
        cards = make_keys(site, data_dir)
        sims = Simulators(site, bus, coin, notes, terminal, printer, cards, slot(cards), every)
        stack.callback(sims.remove)
        yield sims


def resolve_port(
    kind: str, port: str, *, currency: str = "EUR", crc16: bool = False, protocol: str = "cctalk"
) -> tuple[str, Callable[[], None]]:
    """The port to open for one device of `kind` (coin, notes, card, printer): `port` itself,
    or for a simulated one the port of its simulator, started here (the bring-up tools'
    `--port sim`); and what stops that simulator."""
    if not is_simulated(port):
        return port, _nothing
    if kind == "notes" and protocol == "essp":
        validator = SimNoteValidator(swiss_notes() if currency == "CHF" else euro_notes())
        validator.start()
        return validator.path, validator.stop
    if kind in ("coin", "notes"):
        swiss = currency == "CHF"
        bus = BusSimulator(
            [SimCoinAcceptor(swiss_coins() if swiss else euro_coins()),
             SimBillValidator(swiss_notes() if swiss else euro_notes())],
            crc16_mode=crc16,
        )  # fmt: skip
        bus.start()
        return bus.path, bus.stop
    if kind == "card":
        terminal = TerminalSim("tcp")
        terminal.start()
        return terminal.port, terminal.stop
    if kind == "printer":
        printer = PrinterSim()
        printer.start()
        return printer.path, printer.stop
    raise ValueError(f"no simulator for {kind!r}")


def _nothing() -> None:
    """A real device's port: nothing was started."""


def write_site(source: Path, out: Path, sims: Simulators, head_office: str | None) -> Path:
    """`source` with the simulators' ports, the vpcd reader and the keys' secrets file; the
    secrets file's path. Comments and everything else stay as they were."""
    doc = tomlkit.parse(source.read_text("utf-8"))
    devices = doc.setdefault("devices", tomlkit.table())
    for name, port in sims.ports().items():
        devices[name]["port"] = port
    if is_simulated(sims.site.devices.reader.reader):
        devices.setdefault("reader", tomlkit.table())["reader"] = VPCD_READER
    secrets = out.with_name(out.stem + "-secrets.toml")
    keys = DEMO_MASTER_KEYS
    secrets_doc = tomlkit.document()
    secrets_doc.add(tomlkit.comment("made by kiosk simulate: the simulated keys' DEMO keys"))
    secrets_doc["chipkey"] = {name: getattr(keys, name).hex()
                              for name in ("master", "read", "credit", "debit")}  # fmt: skip
    secrets_doc["technician"] = {"pin_hash": demo_pin_hash()}
    secrets.write_text(tomlkit.dumps(secrets_doc), "utf-8")
    doc.setdefault("secrets", tomlkit.table())["file"] = str(secrets.resolve())
    if head_office is not None:
        doc.setdefault("head_office", tomlkit.table())["url"] = head_office
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(tomlkit.dumps(doc), "utf-8")
    os.replace(tmp, out)  # whoever waits for OUT sees it whole
    return secrets


class _Handler(socketserver.StreamRequestHandler):
    sims: Simulators
    lock: threading.Lock

    def handle(self) -> None:
        for raw in self.rfile:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                with self.lock:
                    answer = "ok " + self.sims.command(line)
            except (ValueError, OSError, DriverError) as err:
                answer = f"error {err}"
            self.wfile.write((answer + "\n").encode())


@contextmanager
def serve_control(sims: Simulators, path: Path) -> Iterator[SimulatorControl]:
    """The control interface of `sims` on the Unix socket `path`, served on a thread until the
    block ends; yields its client."""
    path.unlink(missing_ok=True)
    handler = type("Handler", (_Handler,), {"sims": sims, "lock": threading.Lock()})
    with socketserver.ThreadingUnixStreamServer(str(path), handler) as server:
        thread = threading.Thread(target=server.serve_forever, name="control", daemon=True)
        thread.start()
        try:
            yield SimulatorControl(path)
        finally:
            server.shutdown()
            thread.join(5)
            path.unlink(missing_ok=True)


class SimulatorControl:
    """The client of the simulators' control interface: one command, one answer (ValueError
    with the simulator's reason for a refused one)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def status(self) -> dict[str, object]:
        answer: dict[str, object] = json.loads(self.send("status"))
        return answer

    def send(self, command: str, timeout: float = 10.0) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.path))
            s.sendall(command.encode() + b"\n")
            answer = s.makefile("rb").readline().decode().strip()
        if not answer.startswith("ok"):
            raise ValueError(answer.removeprefix("error ").strip() or "no answer")
        return answer[3:]


def run_simulate(
    site_file: Path,
    out_file: Path,
    data_dir: Path,
    control: Path,
    out: TextIO,
    *,
    head_office: str | None = None,
    stop: threading.Event | None = None,
) -> int:
    site = load_site(site_file)
    if not simulated_devices(site):
        print(
            f"kiosk: {site_file} names no simulated device: nothing to simulate. Give the "
            'devices to simulate port = "sim" ([devices.coin], [devices.notes], [devices.card],'
            ' [devices.printer]) or reader = "sim" ([devices.reader])',
            file=sys.stderr,
        )
        return 2
    stop = stop or threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with simulators(site, data_dir) as sims, serve_control(sims, control):
        secrets = write_site(site_file, out_file, sims, head_office)
        for name, port in sims.ports().items():
            out.write(f"{name}: {port}\n")
        out.write(f"keys: {', '.join(sims.cards)} (into {VPCD_READER})\n")
        out.write(f"site: {out_file}\nsecrets: {secrets}\ncontrol: {control}\n")
        out.flush()
        stop.wait()
    out.write("simulators stopped\n")
    return 0
