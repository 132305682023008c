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

from drivers.errors import DriverError
from drivers.zvt.client import Outcome, Result, ZvtClient
from drivers.zvt.codec import Answer, IntermediateStatus, StatusInformation
from drivers.zvt.transport import open_link
from kiosk.config import Site
from kiosk.events import (
    CardApproved,
    CardFailed,
    CardOutcome,
    CardReversed,
    CardReversedAfterCredit,
    CardStatus,
    Device,
    DeviceFault,
    DeviceOk,
)
from kiosk.money import Money
from kiosk.ports import Emit

log = logging.getLogger(__name__)

FAILURES = {
    Outcome.DECLINED: CardOutcome.DECLINED,
    Outcome.ABORTED: CardOutcome.ABORTED,
    Outcome.TIMEOUT: CardOutcome.TIMEOUT,
    Outcome.ERROR: CardOutcome.ERROR,
}


class ZvtCardPort:
    """CardTerminal port: authorise, abort, complete, reverse."""

    def __init__(self, client: ZvtClient, currency: str, *, decision_wait: float = 20.0) -> None:
        self.client = client
        self.currency = currency
        self.decision_wait = decision_wait  # below the terminal's BMP 01 goods timeout
        self.emit: Emit | None = None
        self.receipts: dict[str, dict[str, list[str]]] = {}
        self.last_result: Result | None = None
        self._decisions: queue.Queue[Answer] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one command on the link at a time

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def _send(self, ev: object) -> None:
        assert self.emit is not None
        self.emit(ev)  # type: ignore[arg-type]

    def start(self) -> None:
        """Register with the terminal (06 00) on a thread; a failure is a device fault."""
        threading.Thread(target=self._register, name="zvt-register", daemon=True).start()

    def _register(self) -> None:
        with self._lock:
            result = self.client.register()
        if result.outcome == Outcome.APPROVED:
            self._send(DeviceOk(Device.CARD))
        else:
            self._send(
                DeviceFault(Device.CARD, result.result_code or 0, f"registration: {result.text}")
            )

    def authorise(self, txid: str, amount: Money) -> None:
        self._decisions = queue.Queue()
        self._thread = threading.Thread(
            target=self._pay, args=(txid, amount), name=f"zvt-{txid}", daemon=True
        )
        self._thread.start()

    def _pay(self, txid: str, amount: Money) -> None:
        reported = False

        def on_status(st: IntermediateStatus) -> None:
            self._send(CardStatus(st.text))

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
                result = Result(Outcome.ERROR, None, str(err))
        self.last_result = result
        self.receipts[txid] = result.receipts
        log.info("card payment %s: %s (%s)", txid, result.outcome, result.text)
        if not reported:
            self._send(CardFailed(FAILURES.get(result.outcome, CardOutcome.ERROR), result.text))
            return
        if result.outcome == Outcome.APPROVED:
            return  # the engine already completed: the credit and the payment agree
        # The approval was reported but the payment was not kept.
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

    def abort(self) -> None:
        self.client.request_abort()

    def complete(self, txid: str) -> None:
        self._decisions.put(Answer.OK)

    def reverse(self, txid: str) -> None:
        self._decisions.put(Answer.FAILED)

    def wait_idle(self, timeout: float) -> bool:
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True


def open_card(
    site: Site, *, sim_port: str | None = None, simulate: bool = False
) -> ZvtCardPort | None:
    """The card port for a site with card payment; None where the site takes no cards."""
    conf = site.devices.card
    if not site.card_enabled or conf is None:
        return None
    url = sim_port if simulate or conf.port == "sim" else conf.port
    if url is None:
        raise ValueError("the simulated card terminal needs the simulator's port")
    return ZvtCardPort(ZvtClient(open_link(url), currency=site.currency), site.currency)
