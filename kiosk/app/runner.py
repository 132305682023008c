"""The kiosk service: runs the engine on one thread, journal first, then the devices.

Device events arrive on a queue from any thread. For each event the engine returns commands;
the journal records among them are committed (fsync'd) before any device is told anything and
before the screen hears of the new state (DESIGN promise 1).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from kiosk.app.health import HealthGuard
from kiosk.app.ports import Devices, HeadOffice, KeyNotRead, KeyPresented, NoHeadOffice
from kiosk.documents.receipt import transaction_receipt
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import RESTING, State, TopUpSession, View
from kiosk.domain.errors import (
    ConfigError,
    InvalidTransition,
    JournalError,
    KioskError,
    UserFacingError,
)
from kiosk.domain.events import (
    AbortCard,
    AuthoriseCard,
    CoinAccepted,
    Command,
    CompleteCard,
    Device,
    DeviceFault,
    DeviceOk,
    DisableCash,
    EnableCash,
    Event,
    KeyInfo,
    KeyInserted,
    KeyReadFailed,
    Kind,
    NoteStacked,
    PinChecked,
    PinEntered,
    PrintReceipt,
    ReceiptPrinted,
    Record,
    ReturnNote,
    ReverseCard,
    StackNote,
    Tick,
    WriteKey,
)
from kiosk.domain.site import Site, with_settings
from kiosk.ledger.journal import Journal
from kiosk.ledger.reconcile import reconcile
from kiosk.service.diag import PinGuard, PinRefused, load_pin_hash

log = logging.getLogger(__name__)

#: where the site settings head office sent last are kept (see kiosk.adapters.head_office)
SYNC_SETTINGS = "sync_settings"
#: no customer is being served: site settings may change

Listener = Callable[[View, UserFacingError | None], None]


def tighter(ours: int | None, theirs: int | None, written: int) -> int | None:
    """The lower of two bounds on a credit's write (a lower one lets fewer writes pass as
    not being it); None only where neither knows one. A bound above the key's own count
    (`written`) is one no key had: taken as 0 (the key's log must reach its first write)."""
    known = [b for b in (ours, theirs) if isinstance(b, int)]
    if not known:
        return None
    low = min(known)
    return 0 if low > written else low


def _unattributed(event: CoinAccepted | NoteStacked, why: str) -> Record:
    """Money taken that the engine did not take into a transaction: journaled all the same
    (staff settle it), never dropped."""
    medium = "coin" if isinstance(event, CoinAccepted) else "note"
    data: dict[str, object] = {"medium": medium, "channel": event.channel, "refused": why}
    if event.counter is not None:
        data["counter"] = event.counter
    return Record(Kind.CASH_UNATTRIBUTED, txid=None, key=None, amount=event.value, data=data)


class StepNotJournaled(KioskError):
    """An engine step's records could not be journaled (nothing of them is): the fail-safe
    keeps them."""

    def __init__(self, records: list[Record]) -> None:
        super().__init__(f"{len(records)} record(s) not journaled")
        self.records = records


class Kiosk:
    """One automat: engine, journal and devices wired together."""

    def __init__(
        self,
        site: Site,
        journal: Journal,
        devices: Devices,
        clock: Callable[[], datetime] = utc_now,
        *,
        pin_hash: str | None = None,
        head_office: HeadOffice | None = None,
        health: HealthGuard | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.site = self.base_site = site
        self.journal = journal
        self.devices = devices
        self.clock = clock
        #: the clock the engine's timeouts run on (a monotonic one in production; without it,
        #: the wall clock's steps, as for a scripted clock)
        self.monotonic = monotonic
        self.events: queue.Queue[Event] = queue.Queue()
        self._txno = 0  # the number in the last transaction id given out
        #: whether the step under way has journaled its records (the fail-safe journals the
        #: money of a step that failed before)
        self._step_journaled = False
        self.listeners: list[Listener] = []
        #: why the engine stopped (an unexpected error: the automat is out of order)
        self.failure: str | None = None
        #: a new release waiting to take over (kiosk/adapters/updates.py): asked between two
        #: events while nobody is at the automat; `switched` once it has (the engine ends)
        self.switch: Callable[[], bool] | None = None
        self.switched = False
        #: disk, journal and clock, looked at each tick; what it found last
        self.health = health
        self._unhealthy = ""
        now = clock()
        journal.journal_kept(now)  # what a failed write kept, before anything else
        journal.append(
            [Record(Kind.KIOSK_STARTED, data={"site": site.id, "kiosk": site.kiosk_id})], now
        )
        self.reconciled = reconcile(
            journal, site, now, card_kept=getattr(devices.card, "payment_kept", None)
        )
        #: the technician PIN's salted scrypt hash (the wiring loads it from the secrets file;
        #: without it, the first PIN entry does) and its lockout
        self._pin_hash = pin_hash
        #: head office's site settings, waiting for the engine to be idle before they apply
        self._next_site: Site | None = None
        #: head office: a key's credits are claimed fleet-wide when it is inserted; its site
        #: settings arrive through `apply_settings`; diagnostics check it and sync now
        self.head_office: HeadOffice = head_office or NoHeadOffice("no head office configured")
        saved = journal.get_meta(SYNC_SETTINGS)
        if saved:
            self.apply_settings(json.loads(saved))
            self.site = self._next_site or site
            self._next_site = None
        self.session = TopUpSession(self.site, now, self._new_txid)
        self._published = self.session.view()
        if health is not None:  # a first look before any device can report a customer
            self._look_at_health(now)
        self.head_office.attach(self.apply_settings)
        for port in (devices.reader, devices.coin, devices.notes, devices.card, devices.printer):
            if port is not None:
                port.attach(self.submit)

    def apply_settings(self, values: dict[str, int]) -> bool:
        """Head office's limits and fee on top of the site file, from any thread; they take
        effect when no customer is being served. False (and nothing changes) if refused."""
        try:
            site = with_settings(self.base_site, values)
        except ConfigError as err:
            log.warning("head-office settings refused: %s", err)
            return False
        self._next_site = site
        self.submit(self._tick())
        return True

    def _tick(self) -> Tick:
        return Tick(self.clock(), None if self.monotonic is None else self.monotonic())

    def _new_txid(self) -> str:
        """Kiosk, date and a number that never repeats on this kiosk: above the journal's last
        entry (a transaction's first record is journaled before anything else happens with its
        id) and above the last id given out in this process. At most 48 bytes, as the key's
        log takes them, for any kiosk id the site schema allows."""
        self._txno = max(self._txno + 1, self.journal.last_seq() + 1)
        return f"{self.site.kiosk_id}-{self.clock():%y%m%d}-{self._txno}"

    # ------------------------------------------------------------------ event loop

    def submit(self, event: Event) -> None:
        """Queue an event from any thread."""
        self.events.put(event)

    def drain(self) -> int:
        """Process queued events until none is left (single-threaded runs and tests)."""
        n = 0
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return n
            try:
                self.process(ev)
            finally:
                self.events.task_done()
            n += 1

    def run(self, stop: threading.Event, tick_seconds: float = 0.5) -> None:
        """The engine thread: process events, and tick the clock when none arrives. Each turn
        it tells the cash devices that it is alive (their dead-man switch inhibits them when
        it stops saying so). An unexpected error in a step puts the automat out of order
        (`fail_safe`) and ends the thread; `failure` then says why, and the process is to
        exit non-zero so that it is restarted and the start-up reconciliation runs."""
        while not stop.is_set():
            self.alive()
            try:
                ev: Event = self.events.get(timeout=tick_seconds)
                queued = True
            except queue.Empty:
                ev, queued = self._tick(), False
            try:
                self.process(ev)
            except Exception as err:  # every failure: money safe first
                self.fail_safe(err, ev)
                return
            finally:
                if queued:
                    self.events.task_done()
            if not queued and self.switch is not None and self._hand_over():
                return

    def _hand_over(self) -> bool:
        """A new release waits (`switch`): taken only here, on the engine thread between two
        events, while nobody is at the automat (a resting screen, nothing queued: no
        transaction open, no key being written, no note in escrow, no credit being written)
        and the acceptors are inhibited. True: the engine ends and the process exits with the
        switch's status."""
        if not self.idle() or not self.events.empty() or self.switch is None:
            return False
        try:
            self.switched = self.switch()
        except Exception:  # a failed switch leaves the automat selling on this release
            log.exception("the switch to a new release failed: staying on this one")
            self.switch = None
            return False
        return self.switched

    def alive(self) -> None:
        """Tell the cash devices that the engine is alive (their dead-man switch inhibits them
        when it stops saying so): each turn of whatever processes the events."""
        for acceptor in (self.devices.coin, self.devices.notes):
            if acceptor is not None:
                acceptor.alive()

    def fail_safe(self, err: BaseException, event: Event) -> None:
        """Out of order at once, the money safe first: inhibit every acceptor and abort a
        card dialogue, journal what the failed step had to journal and the fault (or keep
        them in the side file when the journal cannot take them), then tell the screen: the
        automat is out of order, what the customer paid is recorded, where to go."""
        log.critical("engine step on %s failed: %s", type(event).__name__, err, exc_info=err)
        # the last view published (a snapshot): the session itself may be what is broken
        view = self._published
        self._inhibit(card=view.state == State.CARD)
        records = list(err.records) if isinstance(err, StepNotJournaled) else []
        money = isinstance(event, CoinAccepted | NoteStacked)
        if money and not records and not self._step_journaled:
            # the step failed before it journaled the money it was about: it was taken
            records.append(_unattributed(event, f"engine failed: {type(err).__name__}: {err}"))
        cause = err.__cause__ if isinstance(err, StepNotJournaled) and err.__cause__ else err
        fault = Record(Kind.FAULT, view.txid, view.key.serial if view.key else None, None,
                       {"device": "engine", "code": 0, "event": type(event).__name__,
                        "text": f"out of order: {type(cause).__name__}: {cause}"})  # fmt: skip
        try:
            self.journal.append([*records, fault], self.clock())
        except Exception as again:  # the journal cannot take them: keep them
            log.critical("journal still failing (%s): records kept in the side file", again)
            try:
                self.journal.keep([*records, fault])
            except OSError as lost:
                log.critical("records NOT kept (%s): %r", lost, [*records, fault])
        self.failure = f"{type(cause).__name__}: {cause}"
        self._published = replace(
            view, state=State.OUT_OF_SERVICE, notice="failed",
            notice_params={"paid": view.paid, "txid": view.txid or ""},
        )  # fmt: skip
        for listener in self.listeners:
            try:
                listener(self._published, None)
            except Exception:  # the screen must not undo the fail-safe
                log.exception("a listener failed on the out-of-order view")

    def _inhibit(self, *, card: bool) -> None:
        """Every acceptor off, the card dialogue aborted: each on its own, whatever fails."""
        d = self.devices
        for acceptor in (d.coin, d.notes):
            if acceptor is not None:
                try:
                    acceptor.disable()
                except Exception:  # its dead-man switch inhibits it anyway
                    log.exception("could not inhibit an acceptor")
        if card and d.card is not None:
            try:
                d.card.abort()
            except Exception:
                log.exception("could not abort the card dialogue")

    def idle(self) -> bool:
        """Nobody at the automat: it shows an idle, closed or out-of-service screen and has
        no event waiting (housekeeping runs only then)."""
        return self._published.state in RESTING and not self.busy

    @property
    def busy(self) -> bool:
        """Events are queued or one is being handled (for tests and diagnostics)."""
        return self.events.unfinished_tasks > 0

    def tick(self) -> None:
        self.submit(self._tick())

    def view(self) -> View:
        """The last published state: taken after the journal commit, safe from any thread."""
        return self._published

    def process(self, event: Event) -> None:
        """One engine step: enrich, decide, journal (durably), act, publish."""
        self._step_journaled = False
        if isinstance(event, Tick) and self.health is not None:
            self._look_at_health(event.now)
        nxt = self._next_site
        if nxt is not None and self.session.state in RESTING:
            self.site = self.session.site = nxt
            self._next_site = None
            log.info("site settings from head office applied")
        if isinstance(event, PinEntered):
            checked = self._check_pin(event)
            if checked is None:
                return
            event = checked
        if isinstance(event, KeyPresented):
            event = self._inserted(event)
        try:
            commands = self.session.handle(event)
        except UserFacingError as refusal:
            log.info("intent refused: %s", refusal)
            self._publish(refusal)
            return
        except InvalidTransition as err:
            if not isinstance(event, CoinAccepted | NoteStacked):
                log.warning("ignored: %s", err)
                return
            # Money is never refused: a defect in the table must not drop a coin taken.
            log.error("money the engine refused is journaled as unattributed: %s", err)
            commands = [_unattributed(event, str(err))]
        records = [c for c in commands if isinstance(c, Record)]
        if records:
            try:
                self.journal.append(records, self.clock())
            except JournalError as err:
                raise StepNotJournaled(records) from err
        self._step_journaled = True
        for cmd in commands:
            if not isinstance(cmd, Record):
                self._execute(cmd)
        self._publish(None)

    def _inserted(self, event: KeyPresented) -> KeyInserted | KeyReadFailed:
        """The key with head office's view of it; with its whole log when credits are owed to
        it (the log decides whether one already landed), which the reader reads only then."""
        key = event.key
        leased = self.head_office.claim(key.serial, key.written)
        if self.head_office.wants_log(key.serial):
            # head office asks to see the key's log: closes made at other kiosks are checked
            # on it (and what it opens again is granted here at once)
            got = self._with_log(key)
            if isinstance(got, KeyReadFailed):
                return got
            key = got
            shown = [(no, t) for t in key.recent_txids if (no := key.write_no_of(t)) is not None]
            leased |= self.head_office.claim(key.serial, key.written, shown)
        account = self.journal.account_for(key.serial, key.contract_account, self.site.currency)
        if leased:  # head office just granted these: the lower of its bound and ours holds
            pending = tuple(replace(p, key_written=tighter(p.key_written, leased[p.txid],
                                                           key.written))
                            if p.txid in leased else p for p in account.pending)  # fmt: skip
            account = replace(account, pending=pending)
        if account.pending:
            got = self._with_log(key)
            if isinstance(got, KeyReadFailed):
                return got
            key = got
        return KeyInserted(key, account)

    def _with_log(self, key: KeyInfo) -> KeyInfo | KeyReadFailed:
        """The key with its whole log (read now in its card session if it was not yet)."""
        if key.log_complete:
            return key
        try:
            read = self.devices.reader.read_log()
        except KeyNotRead as err:
            log.warning("the log of key %s could not be read: %s", key.serial, err)
            return KeyReadFailed(f"log: {err}")
        if read.serial != key.serial or not read.log_complete:
            return KeyReadFailed("another key came while its log was read")
        return read

    @property
    def unhealthy(self) -> str:
        """What the health guard found wrong at its last look ("" when all is well)."""
        return self._unhealthy

    def _look_at_health(self, now: datetime) -> None:
        """A change in the automat's own health is a fault of Device.SYSTEM (or its end):
        journaled by the engine, and no new customer can pay while it lasts."""
        assert self.health is not None
        text = "; ".join(self.health.problems(now))
        if text == self._unhealthy:
            return
        self._unhealthy = text
        if text:
            log.error("out of service: %s", text)
            self.submit(DeviceFault(Device.SYSTEM, text=text))
        else:
            log.warning("the automat's health is back")
            self.submit(DeviceOk(Device.SYSTEM))

    def _check_pin(self, event: PinEntered) -> PinChecked | None:
        """A PIN only counts on the PIN screen of a technician key; the attempt is journaled."""
        key = self.session.view().key
        if self.session.state != State.TECHNICIAN_PIN or key is None:
            log.warning("a PIN outside the technician's PIN screen is ignored")
            return None
        try:
            if self._pin_hash is None:
                self._pin_hash = load_pin_hash(self.site, log.warning)
            PinGuard(self.journal, self._pin_hash).enter(
                event.pin, f"key {key.serial}", self.clock()
            )
        except ConfigError as err:
            log.error("no technician PIN to check against: %s", err)
            return PinChecked(False)
        except PinRefused as refused:
            return PinChecked(False, refused.until)
        return PinChecked(True)

    def _publish(self, refusal: UserFacingError | None) -> None:
        view = self._published = self.session.view()
        for listener in self.listeners:
            listener(view, refusal)

    # ------------------------------------------------------------------ commands

    def _execute(self, cmd: Command) -> None:
        d = self.devices
        device: Device | None = None
        try:
            match cmd:
                case EnableCash(max_value=limit, devices=healthy):
                    for dev, acceptor in ((Device.COIN, d.coin), (Device.NOTES, d.notes)):
                        if acceptor is None:
                            continue
                        if dev in healthy:
                            acceptor.enable(limit)
                        else:
                            acceptor.disable()
                case DisableCash():
                    for acceptor in (d.coin, d.notes):
                        if acceptor is not None:
                            acceptor.disable()
                case StackNote():
                    device = Device.NOTES
                    assert d.notes is not None
                    d.notes.stack()
                case ReturnNote():
                    device = Device.NOTES
                    assert d.notes is not None
                    d.notes.return_note()
                case AuthoriseCard(txid=txid, amount=amount):
                    device = Device.CARD
                    assert d.card is not None
                    d.card.authorise(txid, amount)
                case AbortCard():
                    device = Device.CARD
                    assert d.card is not None
                    d.card.abort()
                case CompleteCard(txid=txid):
                    device = Device.CARD
                    assert d.card is not None
                    d.card.complete(txid)
                case ReverseCard(txid=txid):
                    device = Device.CARD
                    assert d.card is not None
                    d.card.reverse(txid)
                case WriteKey(txid=txid, amount=amount, new=new):
                    device = Device.READER
                    d.reader.write_credit(txid, amount, new=new)
                case PrintReceipt(txid=txid, lang=lang):
                    self._print_receipt(txid, lang)
                case _:
                    raise TypeError(f"unknown command {cmd!r}")
        except (OSError, RuntimeError) as err:
            # A device that fails to take a command is a fault the engine must hear of.
            log.error("device %s failed on %s: %s", device, type(cmd).__name__, err)
            if device is not None:
                self.submit(DeviceFault(device, text=str(err)))

    def _print_receipt(self, txid: str, lang: str) -> None:
        """Hand the receipt to the printer; whatever goes wrong, the top-up is not held up and
        the engine hears that nothing was printed (the receipt stays reprintable)."""
        printer = self.devices.printer
        try:
            if printer is None:
                raise RuntimeError("no printer")
            printer.print_receipt(txid, transaction_receipt(self.journal, self.site, txid, lang))
        except Exception as err:
            log.exception("receipt %s not handed to the printer", txid)
            if printer is not None and not isinstance(err, LookupError):
                self.submit(DeviceFault(Device.PRINTER, text=str(err)))
            self.submit(ReceiptPrinted(txid, False, str(err)))
