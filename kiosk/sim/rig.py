"""The whole automat on one machine, every device its simulator on its real transport: coins and
notes over ccTalk on a pseudo-terminal, the card terminal over ZVT on TCP, keys as virtual
DESFire cards read and written by the real chip-key port, and a head office on 127.0.0.1
(unless the site names one), all in this process. Used by `kiosk demo` and `kiosk run
--simulate`; the automat itself is built by the composition root (kiosk.app.bootstrap) on the
simulators' ports."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from drivers.cctalk.sim import BusSimulator, SimBillValidator, SimCoinAcceptor
from drivers.chipkey.profile import ChipKey
from drivers.chipkey.reader import CardEvent
from drivers.chipkey.sim import ATR, VirtualCard, VirtualSlot
from drivers.printer.sim import PrinterSim
from drivers.zvt.sim import TerminalSim
from kiosk.adapters.card import ZvtCardPort
from kiosk.adapters.cash import CcTalkCash
from kiosk.adapters.head_office import REF_ETAG, WATERMARK, HeadOfficeLink
from kiosk.adapters.key import DEMO_KEYS as DEMO_MASTER_KEYS
from kiosk.adapters.key import PcscKeyReader
from kiosk.app.bootstrap import Automat, HeadOfficeAccess, automat
from kiosk.app.runner import Kiosk
from kiosk.domain.site import Site
from kiosk.ledger.journal import Journal
from kiosk.service.diag import demo_pin_hash
from kiosk.sim.simulate import (
    DEMO_KEYS,
    SimulatorControl,
    Simulators,
    serve_control,
    simulators,
    with_ports,
)
from sync.admin import main as admin_main
from sync.admin.local import LocalHeadOffice, sqlite_url
from sync.wire.protocol import decimals


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
        admin_main(["--db", db, "debt", account, decimals(debt, site.currency),
                    "--currency", site.currency])


@contextmanager
def head_office(site: Site, data_dir: Path, out: TextIO) -> Iterator[DemoHeadOffice]:
    """The configured head office (token from the environment), or one started on this
    machine with the demo keys when none is configured."""
    if site.head_office.url:
        token = os.environ.get(site.secrets.token_env, "")
        if not token:
            out.write(
                f"Head office {site.head_office.url} is configured but its token is not set "
                f"({site.secrets.token_env}): the demo runs offline on its own key list.\n"
            )
        yield DemoHeadOffice(site.head_office.url, token, None)
        return
    db_file = data_dir / "headoffice.sqlite"
    fresh = not db_file.exists()
    local = LocalHeadOffice(sqlite_url(db_file))
    token = local.register(site.kiosk_id)
    seed_head_office(local.db, site)
    with local:
        out.write(f"Head office: none configured, started one on {local.url}\n")
        yield DemoHeadOffice(local.url, token, local, fresh)


@dataclass
class DemoHeadOffice:
    url: str
    token: str
    local: LocalHeadOffice | None
    fresh: bool = False  # a new, empty head office: it has none of this journal yet


class DemoKeys:
    """Virtual DESFire keys (files under the data directory, the same ones `kiosk key` uses)
    in an in-process slot, read and written by the kiosk's real chip-key port."""

    SLOT = "demo slot"

    def __init__(self, site: Site, cards: dict[str, VirtualCard]) -> None:
        self.slot = VirtualSlot()
        self.port = PcscKeyReader(
            self.SLOT,
            DEMO_MASTER_KEYS,
            site.key_credit_limit.minor,
            connect=self.slot.connect,
            readers=lambda: [self.SLOT],
        )
        self.cards = cards

    def insert(self, serial: str) -> None:
        self.slot.insert(self.cards[serial])
        self.port.card_event(CardEvent(self.SLOT, ATR, True))

    def remove(self) -> None:
        self.slot.remove()
        self.port.card_event(CardEvent(self.SLOT, b"", False))

    def credit(self, serial: str) -> int:
        card = self.cards[serial]
        return ChipKey(VirtualCard(card.uid, card.path), DEMO_MASTER_KEYS).read_summary().credit


@dataclass
class Rig:
    """The simulated automat, running."""

    site: Site  # as given (its ports may say "sim")
    automat: Automat  # built from the site with each simulator's real port
    keys: DemoKeys
    sims: Simulators
    ho: DemoHeadOffice
    first_seq: int
    control: SimulatorControl  # what the scripted customers and the panel drive it through

    @property
    def bus(self) -> BusSimulator:
        return self.sims.bus

    @property
    def coin_sim(self) -> SimCoinAcceptor:
        return self.sims.coin

    @property
    def note_sim(self) -> SimBillValidator:
        return self.sims.notes

    @property
    def terminal(self) -> TerminalSim | None:
        return self.sims.terminal

    @property
    def printer_sim(self) -> PrinterSim:
        assert self.sims.printer is not None, "the simulated rig always has a printer"
        return self.sims.printer

    @property
    def kiosk(self) -> Kiosk:
        return self.automat.kiosk

    @property
    def journal(self) -> Journal:
        return self.automat.journal

    @property
    def cash(self) -> CcTalkCash:
        return self.automat.cash

    @property
    def card(self) -> ZvtCardPort | None:
        return self.automat.card

    @property
    def link(self) -> HeadOfficeLink | None:
        """The head-office link, where there is a head office to sync with."""
        link = self.automat.head_office
        return link if isinstance(link, HeadOfficeLink) else None

    def devices_ready(self) -> bool:
        """The acceptors answer on the bus and the terminal has registered."""
        return self.automat.devices_ready()


@contextmanager
def simulated_rig(
    site: Site,
    journal_file: Path,
    out: TextIO,
    clock: Callable[[], datetime],
    *,
    card_step: float = 0.0,
    ready: threading.Event | None = None,
) -> Iterator[Rig]:
    """Start the simulators, then the automat on their ports (through the composition root);
    stop it all when the block ends. `card_step`: the terminal's pause between its prompts (a
    person at the PIN pad)."""
    with head_office(site, journal_file.parent, out) as ho, ExitStack() as stack:
        journal = Journal(journal_file, site.kiosk_id)
        if not ho.token:
            seed_reference_data(journal, site)
        if ho.fresh:  # the demo's head office was started anew: send it the whole journal
            journal.set_meta(WATERMARK, "0")
            journal.set_meta(REF_ETAG, "")
        first_seq = journal.last_seq() + 1
        journal.close()
        sims = stack.enter_context(
            simulators(site, journal_file.parent, every=True, card_step=card_step,
                       slot=lambda cards: DemoKeys(site, cards))
        )  # fmt: skip
        keys = sims.slot
        assert isinstance(keys, DemoKeys)
        # a short folder of its own: a Unix socket's path has at most 107 bytes
        sock_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kiosk-sim-")))
        control = stack.enter_context(serve_control(sims, sock_dir / "control"))
        out.write(f"Simulator control: {sock_dir / 'control'}\n")
        access = (HeadOfficeAccess(ho.url, ho.token, interval=1.0, ceiling=5.0) if ho.token
                  else "the demo runs offline on its own key list")  # fmt: skip
        a = stack.enter_context(
            automat(with_ports(site, **sims.ports()), journal_file, clock, out, reader=keys.port,
                    head_office=access, pin_hash=demo_pin_hash(), cash_period=0.05,
                    ready=ready)
        )  # fmt: skip
        keys.port.start(watch=False)
        stack.callback(keys.port.stop)
        rig = Rig(site, a, keys, sims, ho, first_seq, control)
        if rig.link is not None:  # the key list and debts before the first customer
            status = rig.link.round_now(timeout=20)
            out.write(
                f"Synced with head office: reference {status.reference_version or 'unchanged'}"
                + (f", error: {status.last_error}" if status.last_error else "")
                + "\n"
            )
        yield rig
