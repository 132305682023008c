"""The kiosk's chip-key reader port on PC/SC (pyscard) and our DESFire application.

pyscard's card monitor reports insertion and removal on its own thread; they are handed to the
port's worker thread, which owns the card connection: it reads the summary on insertion and
performs writes on the engine's command. The key's log is read only when asked for (`read_log`:
the automat asks when credits are owed to the key). A write that failed before anything was
sent to the value file is certain; one that failed after (the key pulled, power lost) is
uncertain and the key's top-up log decides at the next insertion.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from drivers.chipkey.desfire import AuthenticationError, DesfireError
from drivers.chipkey.profile import ChipKey, CreditLimit, KeySet, MeterReport, Summary, WrongCard
from drivers.chipkey.reader import CardEvent, Connection, PcscCard, Watch, list_readers
from drivers.errors import DriverError, TransportError
from kiosk.app.ports import CheckResult, DeviceReport, Emit, KeyNotRead, KeyPresented
from kiosk.domain.events import (
    Commodity,
    Device,
    DeviceFault,
    DeviceOk,
    KeyDetected,
    KeyInfo,
    KeyReadFailed,
    KeyRemoved,
    KeyWriteFailed,
    KeyWritten,
    MeterReading,
    Role,
)
from kiosk.domain.money import Money

log = logging.getLogger(__name__)

#: Demo and test master keys, never for a deployed kiosk (those come from the secrets file).
DEMO_KEYS = KeySet(
    master=bytes.fromhex("00112233445566778899aabbccddeeff"),
    read=bytes.fromhex("101112131415161718191a1b1c1d1e1f"),
    credit=bytes.fromhex("202122232425262728292a2b2c2d2e2f"),
    debit=bytes.fromhex("303132333435363738393a3b3c3d3e3f"),
)


def key_info(summary: Summary) -> KeyInfo:
    ident = summary.identity
    return KeyInfo(
        serial=ident.serial,
        contract_account=ident.contract_account,
        meter_number=ident.meter_number,
        commodity=Commodity(ident.commodity)
        if ident.commodity in ("electricity", "gas")
        else Commodity.ELECTRICITY,
        role=Role(ident.role) if ident.role in ("customer", "technician") else Role.CUSTOMER,
        credit=Money(summary.credit, ident.currency),
        recent_txids=summary.txids,
        written=summary.written,
        log_from=summary.log_from,
        log_complete=summary.log is not None,
        log_nos=tuple(t.no for t in summary.log or () if t.txid),
        meter=meter_reading(summary.meter, ident.currency),
    )


def meter_reading(m: MeterReport, currency: str) -> MeterReading | None:
    """The meter's report as the kiosk shows and journals it; None if the meter never wrote."""
    if not (m.at or m.reading or m.emergency_in_use or m.debt or m.status):
        return None
    at = datetime.fromtimestamp(m.at, UTC) if m.at else None
    return MeterReading(
        m.reading, at, m.emergency_in_use, Money(max(0, m.debt), currency), m.status
    )


@dataclass(frozen=True)
class _Write:
    txid: str
    amount: Money
    new: bool = False


@dataclass(frozen=True)
class _LogRead:
    answer: Future[KeyInfo]


class PcscKeyReader:
    """ChipKeyReader port: one reader (by name pattern), one worker thread."""

    def __init__(
        self,
        pattern: str,
        keys: KeySet,
        upper_limit: int,
        *,
        connect: Callable[[str], Connection] = PcscCard,
        readers: Callable[[], list[str]] = list_readers,
    ) -> None:
        self.readers = readers
        self.pattern = pattern
        self.keys = keys
        self.upper_limit = upper_limit
        self.connect = connect
        self.read_attempts = 20  # about 2 s: a key pushed in slowly, a reader still powering it
        self.emit: Emit | None = None
        self._jobs: queue.Queue[CardEvent | _Write | _LogRead | None] = queue.Queue()  # None: stop
        self._card: Connection | None = None
        self._key: ChipKey | None = None
        self._summary: Summary | None = None  # the inserted key's, as read at insertion
        self._watch: Watch | None = None
        self._thread = threading.Thread(target=self._run, name="chipkey", daemon=True)
        self._stop = threading.Event()
        self.last_atr: bytes | None = None
        self.last_error: str | None = None
        self.counters: dict[str, int] = {}

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def start(self, *, watch: bool = True) -> None:
        """Start the worker; `watch=False` when card events come from `card_event` instead."""
        self._thread.start()
        if watch:
            self._watch = Watch(self.pattern, self._jobs.put, self._reader_health)

    @property
    def running(self) -> bool:
        """Its worker thread is alive (it reads and writes keys), and so is its watch."""
        return self._thread.is_alive() and (self._watch is None or self._watch.running)

    def _reader_health(self, ok: bool, why: str) -> None:
        """The watch lost the reader (pcscd restarted, reader unplugged) or has it back: no
        key can be read meanwhile, so the automat is out of service until it is back."""
        if not ok:
            self.last_error = why
        if self.emit is not None:
            self.emit(DeviceOk(Device.READER) if ok else DeviceFault(Device.READER, 0, why))

    def card_event(self, ev: CardEvent) -> None:
        """A card event from elsewhere than the PC/SC watcher (tests, other readers)."""
        self._jobs.put(ev)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        self._stop.set()
        self._jobs.put(None)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # (the worker owned the connection: it has ended)
            self._close()

    def write_credit(self, txid: str, amount: Money, *, new: bool = False) -> None:
        self._jobs.put(_Write(txid, amount, new))

    def read_log(self, timeout: float = 10.0) -> KeyInfo:
        """The inserted key with its whole log, read by the worker in the key's card session
        (after whatever it was doing: a removal queued before makes this fail)."""
        answer: Future[KeyInfo] = Future()
        self._jobs.put(_LogRead(answer))
        try:
            return answer.result(timeout)
        except FutureTimeout as err:
            answer.cancel()
            raise KeyNotRead(f"the reader did not answer in {timeout:.0f} s") from err

    def _send(self, ev: object) -> None:
        assert self.emit is not None
        self.emit(ev)  # type: ignore[arg-type]

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._do(job)
            except Exception as err:  # the worker outlives any one job: the engine hears of it
                log.exception("key reader: %s failed", type(job).__name__)
                self.last_error = f"{type(job).__name__}: {err}"
                if isinstance(job, _Write):
                    self._send(KeyWriteFailed(job.txid, str(err), uncertain=True))
                elif job.present:
                    self._send(KeyReadFailed(str(err)))

    def _do(self, job: CardEvent | _Write | _LogRead) -> None:
        if isinstance(job, _Write):
            self._write(job.txid, job.amount, job.new)
        elif isinstance(job, _LogRead):
            self._read_log(job.answer)
        elif job.present:
            self._inserted(job)
        else:
            self._removed()

    def _read(self, reader: str) -> Summary:
        """Connect and read; a card just pushed in may not answer at once (power-up, contact
        bounce), so transient transport errors are retried briefly unless it leaves again."""
        for attempt in range(self.read_attempts):
            try:
                self._close()
                self._card = self.connect(reader)
                self._key = ChipKey(self._card, self.keys)
                self._summary = self._key.read_summary()
                return self._summary
            except TransportError:
                if attempt == self.read_attempts - 1 or self._removal_queued():
                    raise
                self._stop.wait(0.1)  # back off before the next attempt
        raise AssertionError("unreachable")

    def _removal_queued(self) -> bool:
        with self._jobs.mutex:
            return any(isinstance(j, CardEvent) and not j.present for j in self._jobs.queue)

    # ------------------------------------------------------------------ diagnostics

    def report(self) -> DeviceReport:
        try:
            names = self.readers()
            error = self.last_error
        except DriverError as err:
            names, error = [], str(err)
        mine = [n for n in names if self.pattern in n]
        identity = {"product": mine[0] if mine else f"no reader matches {self.pattern!r}"}
        if self.last_atr:
            identity["atr"] = self.last_atr.hex(" ").upper()
        return DeviceReport("reader", bool(mine), identity, error, dict(self.counters))

    def self_test(self) -> CheckResult:
        """The PC/SC reader list, and the ATR of the key in the reader (if one is)."""
        try:
            names = self.readers()
        except DriverError as err:
            return CheckResult("reader: PC/SC readers", False, (str(err),))
        lines = [f"reader: {n}" for n in names] or ["no PC/SC reader"]
        lines.append(
            f"key inserted, ATR {self.last_atr.hex(' ').upper()}"
            if self._card is not None and self.last_atr
            else "no key inserted"
        )
        return CheckResult("reader: PC/SC readers", bool(names), tuple(lines))

    def _inserted(self, ev: CardEvent) -> None:
        self.last_atr = ev.atr
        self.counters["inserted"] = self.counters.get("inserted", 0) + 1
        self._send(KeyDetected())
        try:
            summary = self._read(ev.reader)
        except TransportError as err:
            if self._removal_queued():
                log.info("key left before it could be read: %s", err)
                return  # its removal follows; nothing to refuse
            log.warning("reading the key failed: %s", err)
            self.last_error = f"read: {err}"
            self._send(KeyReadFailed(str(err)))
            return
        except WrongCard:
            self._send(KeyReadFailed("not a prepaid key"))
            return
        except AuthenticationError:
            self._send(KeyReadFailed("a key of another utility or a forged key"))
            return
        except DriverError as err:
            log.warning("reading the key failed: %s", err)
            self._send(KeyReadFailed(str(err)))
            return
        self._send(KeyPresented(key_info(summary)))

    def _removed(self) -> None:
        self._close()
        self._send(KeyRemoved())

    def _close(self) -> None:
        if self._card is not None:
            self._card.close()
        self._card, self._key, self._summary = None, None, None

    def _read_log(self, answer: Future[KeyInfo]) -> None:
        """The summary read at insertion with the log (asked for before any write to the key:
        the figures read at insertion still hold)."""
        if not answer.set_running_or_notify_cancel():
            return  # the one who asked stopped waiting
        if self._key is None or self._summary is None:
            answer.set_exception(KeyNotRead("no key in the reader"))
            return
        try:
            log_ = self._key.read_log()
        except Exception as err:  # the one who asked hears of any failure, and decides
            if not isinstance(err, DriverError):
                log.exception("reading the key's log failed")
            self.last_error = f"log: {err}"
            answer.set_exception(KeyNotRead(str(err)))
            return
        answer.set_result(key_info(replace(self._summary, log=log_)))

    def _write(self, txid: str, amount: Money, new: bool = False) -> None:
        if amount.minor <= 0:  # nothing to credit: refused before a byte goes to the key
            self._send(KeyWriteFailed(txid, f"no credit to write ({amount})", uncertain=False))
            return
        if self._key is None:
            self._send(KeyWriteFailed(txid, "no key in the reader", uncertain=False))
            return
        try:
            after = self._key.credit(txid, amount.minor, self.upper_limit, new=new)
        except (CreditLimit, WrongCard, AuthenticationError) as err:
            self._send(KeyWriteFailed(txid, str(err), uncertain=False))  # nothing was written
            return
        except (TransportError, DesfireError, DriverError) as err:
            log.warning("write of %s interrupted: %s", txid, err)
            self.last_error = f"write {txid}: {err}"
            self._send(KeyWriteFailed(txid, str(err), uncertain=True))
            return
        self.counters["written"] = self.counters.get("written", 0) + 1
        self._send(KeyWritten(txid, Money(after, amount.currency)))
