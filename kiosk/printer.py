"""The kiosk's printer port on the ESC/POS driver: receipts and reports, never blocking.

A job goes out only after the printer said it has paper and is online (see
drivers.printer.device); otherwise the port reports a fault and the caller learns that nothing
was printed. The engine never waits for paper.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from escpos.escpos import Escpos

from drivers.errors import DriverError
from drivers.printer.device import PaperStatus, PrinterUnavailable, ReceiptPrinter
from kiosk.events import Device, DeviceFault, DeviceOk
from kiosk.ports import CheckResult, DeviceReport, Emit

log = logging.getLogger(__name__)

#: a receipt roll of 80 mm at font A
WIDTH = 42


def plain_job(lines: list[str], qr: str | None = None) -> Callable[[Escpos], None]:
    """Lines of text, an optional QR code, a cut."""

    def render(p: Escpos) -> None:
        p.hw("INIT")
        p.charcode("CP858")
        for line in lines:
            p.text(line + "\n")
        if qr:
            p.set(align="center")
            p.qr(qr, size=6, native=True)
            p.set(align="left")
        p.cut()

    return render


class EscPosPrinterPort:
    """Printer port: prints what it is given if it can, and says whether it did."""

    def __init__(self, printer: ReceiptPrinter) -> None:
        self.printer = printer
        self.emit: Emit | None = None
        self.last_error: str | None = None
        self.counters: dict[str, int] = {}
        self._faulted = False

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

    def print_receipt(self, txid: str, lines: list[str]) -> bool:
        try:
            self.print_job(plain_job(lines, qr=None))
        except PrinterUnavailable as err:
            log.warning("receipt %s not printed: %s", txid, err)
            return False
        return True

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
        lines = ["Testseite / test page", "0123456789 ÄÖÜ äöü ß €", "-" * WIDTH]
        try:
            status = self.print_job(plain_job(lines))
        except PrinterUnavailable as err:
            return CheckResult("printer: test page", False, (f"not printed: {err}",))
        return CheckResult("printer: test page", True, (f"printed (paper {status})",))
