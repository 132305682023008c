"""The composition root: the whole automat, built from a site file (and its secrets) through
constructors, the same way for every caller.

`kiosk run` (real devices or simulated ones), `kiosk demo`, `kiosk diag`, the crash matrix's
automat and the tests all start the automat here. The site's ports say where each device is; a
simulated device is one whose simulator runs on a real port (a pty, a TCP socket), so nothing
here knows whether a device is real. The head office named by `[head_office] url` is synced in
the background every `sync_interval` seconds with the token from the environment variable
`[secrets] token_env` (or `[head_office] token` in the secrets file); without a URL or a token
the automat works offline and says why (a start-up warning, and on the service screen). The
journal's entries are hashed with the kiosk's chain secret (`[journal] chain_secret` in the
secrets file) where it has one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from kiosk.adapters.card import ZvtCardPort, open_card
from kiosk.adapters.cash import CcTalkCash, open_cash
from kiosk.adapters.head_office import HeadOfficeLink, Syncer, SyncLoop
from kiosk.adapters.key import PcscKeyReader
from kiosk.adapters.printer import open_printer
from kiosk.adapters.updates import Updater
from kiosk.app.health import HealthGuard
from kiosk.app.ports import ChipKeyReader, Devices, HeadOffice, NoHeadOffice
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import ManualClock
from kiosk.domain.errors import ConfigError, JournalError
from kiosk.domain.site import Site, load_chain_secret, load_update_key
from kiosk.ledger.archive import Housekeeper, Policy, housekeep, policy_of
from kiosk.ledger.journal import Journal
from kiosk.service.diag import load_pin_hash
from kiosk.service.keytool import load_keys
from sync.wire.client import SyncClient
from sync.wire.release import version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadOfficeAccess:
    """Where head office is and how this kiosk proves who it is."""

    url: str
    token: str
    interval: float  # seconds between rounds
    ceiling: float = 300.0  # the longest back-off after errors


def head_office_access(site: Site, warn: Callable[[str], None]) -> HeadOfficeAccess | str:
    """The site's head office and this kiosk's token, or why the automat must work offline."""
    url = site.head_office.url
    if not url:
        return "no head office configured ([head_office] url)"
    token = os.environ.get(site.secrets.token_env, "") or _secrets_token(site)
    if not token:
        reason = (
            f"head office {url} is configured but no token is set (environment variable "
            f"{site.secrets.token_env}, or [head_office] token in the secrets file): offline"
        )
        warn(reason)
        return reason
    return HeadOfficeAccess(url, token, float(site.head_office.sync_interval))


def _secrets_token(site: Site) -> str:
    if site.secrets.file is None:
        return ""
    try:
        data = tomllib.loads(Path(site.secrets.file).read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(site.secrets.file, [f"unreadable: {err}"]) from None
    return str(data.get("head_office", {}).get("token", ""))


def connect_head_office(
    site: Site,
    journal: Journal,
    clock: Callable[[], datetime],
    access: HeadOfficeAccess | str,
    after_round: Callable[[datetime], object] | None = None,
) -> HeadOffice:
    if isinstance(access, str):
        return NoHeadOffice(access)
    client = SyncClient(access.url, access.token, site.kiosk_id, timeout=(2.0, 10.0),
                        verify=site.head_office.ca_file or True, version=version(),
                        journal_schema=journal.schema_revision())  # fmt: skip
    syncer = Syncer(journal, client, currency=site.currency, clock=clock,
                    max_credit=site.key_credit_limit.minor)  # fmt: skip
    loop = SyncLoop(syncer, clock, interval=access.interval, ceiling=access.ceiling,
                    after_round=after_round)  # fmt: skip
    return HeadOfficeLink(syncer, loop)


def where(site: Site, device: str) -> str:
    """A device as a technician finds it: its name and the port (or reader) the site names."""
    d = site.devices
    conf = {"coin": d.coin, "notes": d.notes, "card": d.card, "printer": d.printer}.get(device)
    if device == "reader":
        return f"reader ({d.reader.reader})"
    port = getattr(conf, "port", None)
    return f"{device} ({port})" if port else device


@dataclass
class Automat:
    """A running automat: the kiosk (engine and journal), its devices and head office."""

    site: Site
    journal: Journal
    kiosk: Kiosk
    cash: CcTalkCash
    card: ZvtCardPort | None
    head_office: HeadOffice

    def devices_ready(self) -> bool:
        """The cash devices answer on their bus and the card terminal has registered."""
        return not self.devices_missing()

    def devices_missing(self) -> list[str]:
        """The devices that are not up yet, each with where the site says it is: "coin
        (/dev/serial/by-id/...)" (for systemd's status line and the log)."""
        missing = [
            d.device.name
            for d in (self.cash.coin, self.cash.notes)
            if d is not None and not any(w.online(d.device.name) for w in self.cash.workers)
        ]
        if self.card is not None and not self.card.registered:
            missing.append("card")
        return [where(self.site, name) for name in missing]

    def dead_parts(self, engine: threading.Thread) -> list[str]:
        """What money depends on and is not alive: the engine thread, a ccTalk bus thread, the
        key reader's threads, the card terminal's watch, the head-office sync loop (for the
        systemd watchdog)."""
        dead = []
        if not engine.is_alive() or self.kiosk.failure is not None:
            dead.append("engine")
        for w in self.cash.workers:
            if not w.running:
                dead.append("ccTalk bus " + "+".join(d.name for d in w.devices))
        reader = self.kiosk.devices.reader
        if isinstance(reader, PcscKeyReader) and not reader.running:
            dead.append("key reader")
        if self.card is not None and not self.card.running:
            dead.append("card terminal watch")
        if isinstance(self.head_office, HeadOfficeLink) and not self.head_office.loop.running:
            dead.append("head-office sync")
        return dead


def tidy_up(journal: Journal, now: datetime, policy: Policy) -> None:
    """Before the automat opens: finish a housekeeping move a kill interrupted, delete segments
    past their retention, give freed pages back (the moves themselves run later, on the sync
    thread, while nobody is at the automat). A failure is logged; the automat opens anyway:
    its live journal is whole, and what is archived stays where it is."""
    try:
        housekeep(journal, now, policy, idle=lambda: False, vacuum=True)
    except (JournalError, OSError, SQLAlchemyError, sqlite3.Error) as err:
        log.error("journal housekeeping at start failed: %s", err,
                  extra={"event": "housekeeping_failed"})  # fmt: skip


@contextmanager
def automat(
    site: Site,
    journal_file: Path,
    clock: Callable[[], datetime],
    out: TextIO,
    *,
    reader: ChipKeyReader | None = None,
    head_office: HeadOfficeAccess | str | None = None,
    pin_hash: str | None = None,
    cash_period: float = 0.1,
    ready: threading.Event | None = None,
) -> Iterator[Automat]:
    """Build the automat of `site`, start its devices and head-office sync; stop them all when
    the block ends. `reader`: a key reader the caller made (the demo's in-process slot);
    `head_office`: instead of the site's (a head office the demo started); `pin_hash`: instead
    of the secrets file's; `ready`: set once the automat is up (its screen shows its first
    picture): a new release on trial marks itself healthy only then."""
    if ready is None:
        ready = threading.Event()
        ready.set()

    def warn(text: str) -> None:
        out.write(f"warning: {text}\n")

    with ExitStack() as stack:
        journal = Journal(journal_file, site.kiosk_id, chain_secret=load_chain_secret(site))
        stack.callback(journal.close)
        policy = policy_of(**site.journal.model_dump())
        tidy_up(journal, clock(), policy)
        pcsc = None
        if reader is None:
            reader = pcsc = PcscKeyReader(site.devices.reader.reader, load_keys(site, warn),
                                          site.key_credit_limit.minor)  # fmt: skip
        cash = open_cash(site, period=cash_period, resume=journal.acceptor_counters())
        card = open_card(site)
        if card is not None:
            stack.callback(card.close)
        printer = open_printer(site)
        if printer is not None:
            stack.callback(printer.close)
        access = head_office if head_office is not None else head_office_access(site, warn)
        kiosk_box: list[Kiosk] = []  # the housekeeper asks the kiosk, made below, if idle
        keeper = Housekeeper(journal, policy, lambda: bool(kiosk_box) and kiosk_box[0].idle())
        updater_box: list[Updater] = []  # made below, once the sync client is

        def after_round(now: datetime) -> None:
            keeper(now)
            for updater in updater_box:
                updater.after_round(now)

        ho = connect_head_office(site, journal, clock, access, after_round=after_round)
        devices = Devices(reader=reader, coin=cash.coin, notes=cash.notes, card=card,
                          printer=printer)  # fmt: skip
        if pin_hash is None:
            pin_hash = load_pin_hash(site, warn)
        # a manual clock is moved by a script, not by time: its jumps are no fault, and the
        # engine's timeouts follow it
        real = not isinstance(clock, ManualClock)
        watch = HealthGuard(site.health, journal_file, clock=real)
        kiosk = Kiosk(site, journal, devices, clock, pin_hash=pin_hash, head_office=ho,
                      health=watch, monotonic=time.monotonic if real else None)  # fmt: skip
        kiosk_box.append(kiosk)
        public_key = load_update_key(site)
        if public_key is not None and isinstance(ho, HeadOfficeLink):
            updater = Updater(journal, ho.syncer.client, journal_file.parent, public_key,
                              version(), clock, ready=ready.is_set,
                              trial_seconds=site.head_office.trial_seconds)  # fmt: skip
            updater_box.append(updater)
            kiosk.switch = updater.switch
        cash.start()
        stack.callback(cash.stop)
        if pcsc is not None:  # a reader the caller made is the caller's to start
            pcsc.start()
            stack.callback(pcsc.stop)
        if card is not None:
            card.start()
        ho.start()
        stack.callback(ho.stop)
        yield Automat(site, journal, kiosk, cash, card, ho)
