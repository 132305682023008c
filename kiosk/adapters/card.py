"""The kiosk's card terminal port on the ZVT client.

Each authorisation runs on its own thread (the client owns the link while it runs). The
approval is reported to the engine as `CardApproved`; the client then holds the terminal's
question "goods delivered?" until the engine says `complete` (key written) or `reverse` (write
failed, so the terminal reverses). Outcomes map to engine events; a payment the terminal did
not keep after the key was credited becomes `CardReversedAfterCredit`.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

from drivers.errors import DriverError
from drivers.zvt.apdu import Answer
from drivers.zvt.client import Result, Verdict, ZvtClient
from drivers.zvt.messages import IntermediateStatus, StatusInformation
from drivers.zvt.transport import open_link
from kiosk.app.ports import CheckResult, DeviceReport, Emit
from kiosk.domain.events import (
    CardApproved,
    CardFailed,
    CardFailure,
    CardReceipt,
    CardReversed,
    CardReversedAfterCredit,
    CardStatus,
    Device,
    DeviceFault,
    DeviceOk,
)
from kiosk.domain.money import Money
from kiosk.domain.site import Site

log = logging.getLogger(__name__)

FAILURES = {
    Verdict.DECLINED: CardFailure.DECLINED,
    Verdict.ABORTED: CardFailure.ABORTED,
    Verdict.TIMEOUT: CardFailure.TIMEOUT,
    Verdict.ERROR: CardFailure.ERROR,
}


@dataclass(frozen=True)
class EndOfDay:
    """The parsed result of an end-of-day (Kassenschnitt)."""

    ok: bool
    text: str
    total: Money | None
    receipt_number: int | None
    receipts: tuple[int, int] | None  # first and last receipt number of the batch
    groups: tuple[tuple[str, int, Money], ...]  # card group, count, total (non-empty ones)
    lines: tuple[str, ...]  # the terminal's printout

    @classmethod
    def of(cls, result: Result, currency: str) -> EndOfDay:
        st = result.status
        totals = st.totals if st else None
        printout = tuple(line for block in result.receipts.values() for line in block)
        return cls(
            ok=result.ok,
            text=result.text,
            total=Money(st.amount, currency) if st and st.amount is not None else None,
            receipt_number=st.receipt_number if st else None,
            receipts=(totals.first_receipt, totals.last_receipt) if totals else None,
            groups=tuple(
                (g, n, Money(t, currency)) for g, n, t in (totals.groups if totals else ()) if n
            ),
            lines=printout,
        )

    def summary(self) -> list[str]:
        if not self.ok:
            return [f"end-of-day failed: {self.text}"]
        out = [f"end-of-day done, total {self.total}, receipt {self.receipt_number}"]
        if self.receipts:
            out.append(f"receipts {self.receipts[0]} to {self.receipts[1]}")
        out += [f"{g}: {n} payment(s), {t}" for g, n, t in self.groups]
        return out


class ZvtCardPort:
    """CardTerminal port: authorise, abort, complete, reverse."""

    def __init__(
        self,
        client: ZvtClient,
        currency: str,
        *,
        decision_wait: float = 20.0,
        probe_interval: float = 10.0,
    ) -> None:
        self.client = client
        self.currency = currency
        self.decision_wait = decision_wait  # below the terminal's BMP 01 goods timeout
        self.emit: Emit | None = None
        self.receipts: dict[str, dict[str, list[str]]] = {}
        self.last_result: Result | None = None
        self._decisions: queue.Queue[Answer] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one command on the link at a time
        self.registered = False
        self.software = ""
        self.last_error: str | None = None
        self.counters: dict[str, int] = {}
        #: how often the link is looked at between payments (a terminal switched off, its
        #: cable or network gone: card payment is withdrawn until it answers again)
        self.probe_interval = probe_interval
        self._closing = threading.Event()
        self._faulted = False  # a fault was sent since the last registration
        self._watcher: threading.Thread | None = None

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def _send(self, ev: object) -> None:
        assert self.emit is not None
        self.emit(ev)  # type: ignore[arg-type]

    def start(self) -> None:
        """Register with the terminal (06 00) and then watch the link, on a thread of its
        own: a failure is a device fault, and the terminal is registered again (and the fault
        cleared) as soon as it answers."""
        self._watcher = threading.Thread(target=self._watch, name="zvt-watch", daemon=True)
        self._watcher.start()

    @property
    def running(self) -> bool:
        return self._watcher is not None and self._watcher.is_alive()

    def _watch(self) -> None:
        while not self._closing.is_set():
            try:
                if not self.registered:
                    self._register()
                else:
                    self._probe()
            except Exception as err:  # the watch outlives any one look: a fault, not a death
                log.exception("card terminal watch")
                self._lost(f"{type(err).__name__}: {err}")
            self._closing.wait(self.probe_interval)

    def _register(self) -> None:
        with self._lock:
            result = self.client.register()
        if result.outcome == Verdict.APPROVED:
            self.registered, self._faulted = True, False
            self._send(DeviceOk(Device.CARD))
        else:
            self._lost(f"registration: {result.text}", result.result_code or 0)

    def _probe(self) -> None:
        """Between payments: a connection the terminal closed is let go (some close idle ones
        within seconds: normal) and opened again; one that cannot be opened is a fault. Skipped
        while a payment or another command holds the link."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self.client.link.refresh()
            self.client.link.connect()
        except DriverError as err:
            self._lost(str(err))
        finally:
            self._lock.release()

    def _lost(self, why: str, code: int = 0) -> None:
        """The terminal cannot take a payment now: a fault once, registered again later."""
        self.registered = False
        self.last_error = why
        if not self._faulted:  # (registering clears it)
            self._faulted = True
            self._send(DeviceFault(Device.CARD, code, why))

    def authorise(self, txid: str, amount: Money) -> None:
        self._decisions = queue.Queue()
        self._thread = threading.Thread(
            target=self._pay, args=(txid, amount), name=f"zvt-{txid}", daemon=True
        )
        self._thread.start()

    def _pay(self, txid: str, amount: Money) -> None:
        reported = False

        def on_status(st: IntermediateStatus) -> None:
            log.info("card terminal: status %02X %s", st.code, st.text)
            self._send(CardStatus(st.text, st.code))

        def decide(info: StatusInformation) -> Answer:
            nonlocal reported
            if not reported:
                approved = Money(
                    info.amount if info.amount is not None else amount.minor, self.currency
                )
                self._send(CardApproved(approved, info.receipt_fields()))
                reported = True
            try:
                return self._decisions.get(timeout=self.decision_wait)
            except queue.Empty:
                return Answer.NOT_YET  # "please wait": the terminal asks again

        with self._lock:
            try:
                result = self.client.authorise(amount.minor, decide=decide, on_status=on_status)
            except DriverError as err:
                result = Result(Verdict.ERROR, None, str(err))
        self.last_result = result
        self._counted(result)
        self.receipts[txid] = result.receipts
        log.info("card payment %s: %s (%s)", txid, result.outcome, result.text)
        if not reported:
            outcome = FAILURES.get(result.outcome, CardFailure.ERROR)
            self._send(CardFailed(outcome, result.text, result.result_code))
            return
        kept = result.outcome == Verdict.APPROVED
        if not kept:  # the approval was reported but the payment was not kept
            answered = result.answered
            if answered is None:  # lost before we answered: learn what the engine decided
                try:
                    answered = self._decisions.get(timeout=self.decision_wait)
                except queue.Empty:
                    answered = Answer.FAILED
            if answered == Answer.OK:
                self._send(
                    CardReversedAfterCredit(txid, Money(amount.minor, self.currency), result.text)
                )
            else:
                self._send(CardReversed(True, result.text))
        # The terminal's dialogue is over, its outcome reported first: the receipt (which
        # settles the payment in the journal) goes to the journal and the printer.
        self._send(CardReceipt(txid, {k: list(v) for k, v in result.receipts.items()}, kept))

    def payment_kept(self, approved: Any) -> bool | None:
        """At start-up, for a payment whose dialogue a crash cut off: did the terminal keep it?
        Asked with "repeat receipt" (06 20): the terminal's last result, matched by receipt
        number. None when the terminal cannot say (unreachable, another payment since)."""
        number = approved.data.get("receipt_no")
        with self._lock:
            try:
                result = self.client.repeat_receipt()
            except DriverError as err:
                log.warning("repeat receipt: %s", err)
                return None
        st = result.status
        if number is None or st is None or st.receipt_number != number:
            return None
        return result.outcome == Verdict.APPROVED

    def abort(self) -> None:
        self.client.request_abort()

    def complete(self, txid: str) -> None:
        self._decisions.put(Answer.OK)

    def reverse(self, txid: str) -> None:
        self._decisions.put(Answer.FAILED)

    # ------------------------------------------------------------------ diagnostics

    def _counted(self, result: Result) -> None:
        self.counters[str(result.outcome)] = self.counters.get(str(result.outcome), 0) + 1
        if result.outcome not in (Verdict.APPROVED,):
            self.last_error = f"{result.outcome}: {result.text}"

    def report(self) -> DeviceReport:
        status = self.last_result.status if self.last_result else None
        link = self.client.link
        where = (
            getattr(link, "url", None)
            or f"tcp://{getattr(link, 'host', '?')}:{getattr(link, 'port', '?')}"
        )
        identity = {"manufacturer": "ZVT terminal", "product": f"ECR interface on {where}"}
        if self.software:
            identity["firmware"] = self.software
        if status is not None and status.terminal_id:
            identity["serial"] = f"TID {status.terminal_id}"
        return DeviceReport("card", self.registered, identity, self.last_error, dict(self.counters))

    def self_test(self) -> CheckResult:
        """05 01 status enquiry, then 06 70 diagnosis (the terminal asks its host)."""
        lines = []
        try:
            with self._lock:
                code, text, version = self.client.status_enquiry()
                self.software = version or self.software
                lines.append(f"status enquiry: {text} ({code:02X}), software {version or '-'}")
                diag = self.client.diagnosis()
        except DriverError as err:
            self.last_error = str(err)
            return CheckResult("card: status enquiry and diagnosis", False, (*lines, str(err)))
        said = f" ({diag.text})" if diag.text and diag.text != str(diag.outcome) else ""
        lines.append(f"diagnosis: {diag.outcome}{said}")
        ok = code == 0 and diag.ok
        return CheckResult("card: status enquiry and diagnosis", ok, tuple(lines))

    def end_of_day(self) -> EndOfDay:
        """06 50 Kassenschnitt: the terminal submits its batch; the parsed result."""
        try:
            with self._lock:
                result = self.client.end_of_day()
        except DriverError as err:
            result = Result(Verdict.ERROR, None, str(err))
        self._counted(result)
        return EndOfDay.of(result, self.currency)

    def wait_idle(self, timeout: float) -> bool:
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    def close(self) -> None:
        """Let a payment under way end (briefly), then close the link."""
        self._closing.set()
        self.wait_idle(5)
        if self._watcher is not None:
            self._watcher.join(5)
        self.client.link.close()


def open_card(site: Site) -> ZvtCardPort | None:
    """The card port on the terminal the site names (a serial path or tcp://host:port), or
    None where the site takes no cards."""
    conf = site.devices.card
    if not site.card_enabled or conf is None:
        return None
    return ZvtCardPort(ZvtClient(open_link(conf.port), currency=site.currency), site.currency)
