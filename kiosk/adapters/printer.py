"""The kiosk's printer port on the ESC/POS driver: receipts and reports, never blocking.

A job goes out only after the printer said it has paper and is online (see
drivers.printer.device); otherwise the port reports a fault and the caller learns that nothing
was printed. The engine never waits for paper: a transaction's receipt is printed on the
port's own thread, which reports the result as a `ReceiptPrinted` event.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from escpos.escpos import Escpos

from drivers.errors import DriverError
from drivers.printer.device import PaperStatus, PrinterUnavailable, ReceiptPrinter
from kiosk.app.ports import CheckResult, DeviceReport, Emit
from kiosk.documents.receipt import Document, Row, escpos_job
from kiosk.domain.events import Device, DeviceFault, DeviceOk, ReceiptPrinted
from kiosk.domain.site import Site

log = logging.getLogger(__name__)


def test_page() -> Document:
    return Document((Row("Testseite / test page", style="bold"), Row("0123456789 ÄÖÜ äöü ß €"),
                     Row("éèçà ëï", "1,50 €"), Row(style="rule")), qr="TEST")  # fmt: skip


class EscPosPrinterPort:
    """Printer port: prints what it is given if it can, and says whether it did."""

    def __init__(self, printer: ReceiptPrinter) -> None:
        self.printer = printer
        self.emit: Emit | None = None
        self.last_error: str | None = None
        self.counters: dict[str, int] = {}
        self._faulted = False
        self._jobs: queue.Queue[tuple[str, Document] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def _health(self, status: PaperStatus, error: str | None = None) -> None:
        faulted = not status.printable
        if faulted:
            self.last_error = error or f"printer {status}"
        if faulted != self._faulted and self.emit is not None:
            self.emit(DeviceFault(Device.PRINTER, 0, self.last_error or "") if faulted
                      else DeviceOk(Device.PRINTER))  # fmt: skip
        self._faulted = faulted

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def print_job(self, render: Callable[[Escpos], None]) -> PaperStatus:
        """Print, or raise PrinterUnavailable (nothing was sent)."""
        try:
            status = self.printer.print_job(render)
        except PrinterUnavailable as err:
            self._count("not_printed")
            self._health(err.status)
            raise
        except DriverError as err:
            self._count("not_printed")
            self._health(PaperStatus.OFFLINE, str(err))
            raise PrinterUnavailable(PaperStatus.OFFLINE) from err
        self._count("printed")
        if status == PaperStatus.NEAR_END:
            self.last_error = "paper near its end"
        self._health(status)
        return status

    def print_document(self, doc: Document) -> bool:
        """Print now (reports, reprints; the caller waits); whether it was printed."""
        try:
            self.print_job(escpos_job(doc))
        except PrinterUnavailable as err:
            log.warning("document not printed: %s", err)
            return False
        return True

    def print_receipt(self, txid: str, doc: Document) -> None:
        """Queue a transaction's receipt; `ReceiptPrinted` follows from the port's thread."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="printer", daemon=True)
            self._thread.start()
        self._jobs.put((txid, doc))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            txid, doc = job
            try:
                self.print_job(escpos_job(doc))
                done = ReceiptPrinted(txid, True)
            except PrinterUnavailable as err:
                log.warning("receipt %s not printed: %s", txid, err)
                done = ReceiptPrinted(txid, False, str(err))
            if self.emit is not None:
                self.emit(done)

    def close(self) -> None:
        """Let queued receipts finish, then stop the thread and let go of the printer."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        self.printer.close()

    def status(self) -> PaperStatus:
        status = self.printer.status()
        self._health(status)
        return status

    def report(self) -> DeviceReport:
        status = self.status()
        ident = self.printer.identity
        return DeviceReport(
            "printer",
            status != PaperStatus.OFFLINE,
            {
                "product": f"ESC/POS printer ({ident.transport})",
                "port": ident.port,
                "paper": str(status),
            },  # fmt: skip
            self.last_error,
            dict(self.counters),
        )

    def self_test(self) -> CheckResult:
        """A test page: the status before it, and whether it went out."""
        try:
            status = self.print_job(escpos_job(test_page()))
        except PrinterUnavailable as err:
            return CheckResult("printer: test page", False, (f"not printed: {err}",))
        return CheckResult("printer: test page", True, (f"printed (paper {status})",))


def open_printer(site: Site) -> EscPosPrinterPort | None:
    """The receipt printer on the port the site names, or none where the site has none."""
    conf = site.devices.printer
    return None if conf is None else EscPosPrinterPort(ReceiptPrinter(conf.port))
