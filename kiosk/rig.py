"""The whole automat on one machine, every device its simulator on its real transport: coins and
notes over ccTalk on a pseudo-terminal, the card terminal over ZVT on TCP, keys as virtual
DESFire cards read and written by the real chip-key port, and a head office on 127.0.0.1
(unless the site names one). Used by `kiosk demo` and `kiosk run --simulate`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from drivers.cctalk.sim import BusSimulator, SimBillValidator, SimCoinAcceptor
from drivers.chipkey.profile import ChipKey, Identity
from drivers.chipkey.reader import CardEvent
from drivers.chipkey.sim import ATR, VirtualCard, VirtualSlot
from drivers.printer.device import ReceiptPrinter
from drivers.printer.sim import PrinterSim
from drivers.zvt.sim import TerminalSim
from kiosk.cctalk import CcTalkCash, open_cash, start_simulator
from kiosk.chipkey import DEMO_KEYS as DEMO_MASTER_KEYS
from kiosk.chipkey import PcscKeyReader
from kiosk.config import Site
from kiosk.diag import demo_pin_hash
from kiosk.events import KeyStatus
from kiosk.journal import Journal
from kiosk.keytool import virtual_path, virtual_uid
from kiosk.money import Money
from kiosk.ports import Devices
from kiosk.printer import EscPosPrinterPort
from kiosk.service import Kiosk
from kiosk.syncer import REF_ETAG, WATERMARK, Syncer, SyncLoop
from kiosk.zvt import ZvtCardPort, open_card
from sync.admin import main as admin_main
from sync.client import SyncClient
from sync.local import LocalHeadOffice, sqlite_url

#: Demo keys: serial, contract account, status at head office, reason, open debt (minor units).
DEMO_KEYS = (
    ("K-1001", "4711001", KeyStatus.ACTIVE, "", 700),
    ("K-1002", "4711002", KeyStatus.BLOCKED, "lost", 0),
    ("K-1003", "4711003", KeyStatus.ACTIVE, "", 0),
)
#: the demo technician key (PIN: kiosk.diag.DEMO_PIN)
TECHNICIAN_KEY = "T-9001"


def seed_reference_data(journal: Journal, site: Site) -> None:
    """Head office's answer for the demo keys, as sync would store it."""
    for serial, account, status, reason, debt in DEMO_KEYS:
        journal.set_key(serial, status, account, reason)
        journal.set_debt(account, site.money(debt))


def seed_head_office(db: str, site: Site) -> None:
    """The demo keys as head office knows them: their status and open debts."""
    for serial, account, status, reason, debt in DEMO_KEYS:
        args = ["--db", db, "key", serial, "--status", str(status), "--account", account]
        admin_main([*args, "--reason", reason])
        admin_main(["--db", db, "debt", account, str(debt), "--currency", site.currency])


@contextmanager
def head_office(site: Site, data_dir: Path, out: TextIO) -> Iterator[HeadOfficeLink]:
    """The configured head office (token from the environment), or one started on this
    machine with the demo keys when none is configured."""
    if site.head_office.url:
        token = os.environ.get(site.secrets.token_env, "")
        if not token:
            out.write(
                f"Head office {site.head_office.url} is configured but its token is not set "
                f"({site.secrets.token_env}): the demo runs offline on its own key list.\n"
            )
        yield HeadOfficeLink(site.head_office.url, token, None)
        return
    db_file = data_dir / "headoffice.sqlite"
    fresh = not db_file.exists()
    local = LocalHeadOffice(sqlite_url(db_file))
    token = local.register(site.kiosk_id)
    seed_head_office(local.db, site)
    with local:
        out.write(f"Head office: none configured, started one on {local.url}\n")
        yield HeadOfficeLink(local.url, token, local, fresh)


@dataclass
class HeadOfficeLink:
    url: str
    token: str
    local: LocalHeadOffice | None
    fresh: bool = False  # a new, empty head office: it has none of this journal yet


class DemoKeys:
    """Virtual DESFire keys (files under the data directory, the same ones `kiosk key` uses)
    in an in-process slot, read and written by the kiosk's real chip-key port."""

    SLOT = "demo slot"

    def __init__(self, site: Site, keys_dir: Path) -> None:
        self.slot = VirtualSlot()
        self.port = PcscKeyReader(
            self.SLOT,
            DEMO_MASTER_KEYS,
            site.key_credit_limit.minor,
            connect=self.slot.connect,
            readers=lambda: [self.SLOT],
        )
        self.cards: dict[str, VirtualCard] = {}
        keys_dir.mkdir(parents=True, exist_ok=True)
        people = [(serial, account, "customer") for serial, account, *_ in DEMO_KEYS]
        for serial, account, role in [*people, (TECHNICIAN_KEY, "0000000", "technician")]:
            path = virtual_path(keys_dir.parent, serial)
            card = VirtualCard(virtual_uid(serial), path)
            if not path.exists():
                ident = Identity(
                    site.utility_id,
                    account,
                    "1ESY11600" + account[-5:],
                    "electricity",
                    serial,
                    role,
                    site.currency,
                )
                ChipKey(card, DEMO_MASTER_KEYS).personalise(
                    ident, upper=site.key_credit_limit.minor, initial=350
                )
            self.cards[serial] = card

    def insert(self, serial: str) -> None:
        self.slot.insert(self.cards[serial])
        self.port.card_event(CardEvent(self.SLOT, ATR, True))

    def remove(self) -> None:
        self.slot.remove()
        self.port.card_event(CardEvent(self.SLOT, b"", False))

    def credit(self, serial: str) -> int:
        card = self.cards[serial]
        return ChipKey(VirtualCard(card.uid, card.path), DEMO_MASTER_KEYS).read_summary().credit


def coin_id(value: Money) -> str:
    """The simulated coin acceptor's name for a coin: country, value in cents, issue."""
    return f"{_COUNTRY[value.currency]}{value.minor:03d}A"


def bill_id(value: Money) -> str:
    """The simulated note validator's name for a note: country, value in whole units, issue."""
    return f"{_COUNTRY[value.currency]}{value.minor // 100:04d}A"


_COUNTRY = {"EUR": "EU", "CHF": "CH"}


@dataclass
class Rig:
    """The simulated automat, running."""

    site: Site
    journal: Journal
    kiosk: Kiosk
    keys: DemoKeys
    bus: BusSimulator
    coin_sim: SimCoinAcceptor
    note_sim: SimBillValidator
    cash: CcTalkCash
    terminal: TerminalSim | None
    card: ZvtCardPort | None
    loop: SyncLoop | None
    ho: HeadOfficeLink
    first_seq: int
    printer_sim: PrinterSim

    def devices_ready(self) -> bool:
        """The acceptors answer on the bus and the terminal has registered."""
        online = all(any(w.online(n) for w in self.cash.workers) for n in ("coin", "notes"))
        return online and (self.terminal is None or self.terminal.config_byte is not None)


@contextmanager
def simulated_rig(
    site: Site,
    journal_file: Path,
    out: TextIO,
    clock: Callable[[], datetime],
    *,
    card_step: float = 0.0,
) -> Iterator[Rig]:
    """Start everything; stop it all when the block ends. `card_step`: the terminal's pause
    between its prompts (a person at the PIN pad)."""
    with head_office(site, journal_file.parent, out) as ho:
        journal = Journal(journal_file, site.kiosk_id)
        if not ho.token:
            seed_reference_data(journal, site)
        if ho.fresh:  # the demo's head office was started anew: send it the whole journal
            journal.set_meta(WATERMARK, "0")
            journal.set_meta(REF_ETAG, "")
        first_seq = journal.last_seq() + 1
        bus, coin_sim, note_sim = start_simulator(site)
        cash = open_cash(
            site, sim_port=bus.path, simulate=True, period=0.05,
            resume=journal.acceptor_counters(),
        )  # fmt: skip
        terminal = TerminalSim("tcp", step=card_step) if site.card_enabled else None
        if terminal is not None:
            terminal.start()
        card = open_card(site, sim_port=terminal.port, simulate=True) if terminal else None
        keys = DemoKeys(site, journal_file.parent / "keys")
        printer_sim = PrinterSim()
        printer_sim.start()
        printer = EscPosPrinterPort(ReceiptPrinter(printer_sim.path))
        dev = Devices(
            reader=keys.port, coin=cash.coin, notes=cash.notes, card=card, printer=printer
        )
        kiosk = Kiosk(site, journal, dev, clock, pin_hash=demo_pin_hash())
        loop: SyncLoop | None = None
        if ho.token:
            syncer = Syncer(
                journal,
                SyncClient(ho.url, ho.token, site.kiosk_id, timeout=(2.0, 10.0)),
                currency=site.currency,
                on_settings=kiosk.apply_settings,
                clock=clock,
            )
            kiosk.claim_credits = syncer.claim
            status = syncer.round(clock())  # the key list and debts before the first customer
            out.write(
                f"Synced with head office: reference {status.reference_version or 'unchanged'}"
                + (f", error: {status.last_error}" if status.last_error else "")
                + "\n"
            )
            loop = SyncLoop(syncer, clock, interval=1.0, ceiling=5.0)
            loop.start()
            kiosk.syncer, kiosk.sync_loop = syncer, loop
        cash.start()
        keys.port.start(watch=False)
        if card is not None:
            card.start()
        rig = Rig(
            site, journal, kiosk, keys, bus, coin_sim, note_sim, cash, terminal, card, loop, ho,
            first_seq, printer_sim,
        )  # fmt: skip
        try:
            yield rig
        finally:
            if loop is not None:
                loop.stop()
            keys.port.stop()
            cash.stop()
            bus.stop()
            printer.printer.close()
            printer_sim.stop()
            if card is not None and terminal is not None:
                card.wait_idle(5)
                card.client.link.close()
                terminal.stop()
