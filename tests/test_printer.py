"""The ESC/POS printer driver against the simulated printer on a real pty: the status is read
before every job, and no job goes to a printer that is out of paper or silent."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from drivers.printer.device import (
    PaperStatus,
    PrinterUnavailable,
    ReceiptPrinter,
    decode_status,
    open_escpos,
)
from drivers.printer.sim import PrinterSim
from kiosk.adapters.printer import EscPosPrinterPort
from kiosk.documents.receipt import Document, Row, escpos_job
from kiosk.domain.events import Device, DeviceFault, DeviceOk, Event, ReceiptPrinted


def plain_job(lines: list[str], qr: str | None = None):  # type: ignore[no-untyped-def]
    return escpos_job(Document(tuple(Row(line) for line in lines), qr))


@pytest.fixture
def sim() -> Iterator[PrinterSim]:
    with PrinterSim() as s:
        yield s


@pytest.fixture
def printer(sim: PrinterSim) -> Iterator[ReceiptPrinter]:
    p = ReceiptPrinter(sim.path, status_timeout=0.3)
    yield p
    p.close()


@pytest.mark.parametrize(
    "online,paper,status",
    [
        (0x12, 0x12, PaperStatus.OK),
        (0x12, 0x1E, PaperStatus.NEAR_END),  # bits 2, 3: the near-end sensor
        (0x12, 0x72, PaperStatus.OUT),  # bits 5, 6: paper end
        (0x1A, 0x12, PaperStatus.OFFLINE),  # bit 3 of DLE EOT 1: offline
        (0x12, None, PaperStatus.OFFLINE),  # no answer
        (0x13, 0x12, PaperStatus.OFFLINE),  # not a status byte (bit 0 set)
        (0x92, 0x12, PaperStatus.OFFLINE),  # not a status byte (bit 7 set)
    ],
)
def test_status_bytes(online: int, paper: int | None, status: PaperStatus) -> None:
    assert decode_status(online, paper) == status


def test_a_job_prints_after_the_status_was_read(sim: PrinterSim, printer: ReceiptPrinter) -> None:
    assert printer.print_job(plain_job(["Stadtwerke", "Gebühr 1,50 €"], qr="TX-1")) == "ok"
    (job,) = sim.wait_jobs(1)
    assert job.lines[:2] == ["Stadtwerke", "Gebühr 1,50 €"] and job.qr == ["TX-1"]
    assert sim.status_requests == 2  # DLE EOT 1 and DLE EOT 4 before the job


@pytest.mark.parametrize("fault", ["out", "offline"])
def test_no_job_goes_to_a_printer_without_paper_or_answer(
    sim: PrinterSim, printer: ReceiptPrinter, fault: str
) -> None:
    if fault == "out":
        sim.paper = "out"
    else:
        sim.online = False
    with pytest.raises(PrinterUnavailable) as err:
        printer.print_job(plain_job(["never printed"]))
    assert err.value.status == (PaperStatus.OUT if fault == "out" else PaperStatus.OFFLINE)
    assert sim.jobs == [] and sim.dropped == 0  # nothing was sent at all
    sim.paper, sim.online = "ok", True  # paper loaded, printer back
    printer.print_job(plain_job(["now"]))
    assert [j.lines[0] for j in sim.wait_jobs(1)] == ["now"]


def test_near_end_prints_and_is_reported(sim: PrinterSim, printer: ReceiptPrinter) -> None:
    events: list[Event] = []
    port = EscPosPrinterPort(printer)
    port.attach(events.append)
    sim.paper = "near_end"
    assert port.print_document(Document((Row("receipt"),))) is True
    assert port.report().last_error == "paper near its end" and events == []
    sim.paper = "out"
    assert port.print_document(Document((Row("receipt"),))) is False
    assert [type(e) for e in events] == [DeviceFault] and events[0].device == Device.PRINTER
    sim.paper = "ok"
    assert port.self_test().ok and [type(e) for e in events] == [DeviceFault, DeviceOk]
    assert port.counters == {"printed": 2, "not_printed": 1}


def test_a_receipt_is_printed_on_the_ports_thread_and_its_fate_reported(
    sim: PrinterSim, printer: ReceiptPrinter
) -> None:
    events: queue.Queue[Event] = queue.Queue()
    port = EscPosPrinterPort(printer)
    port.attach(events.put)
    sim.paper = "out"
    port.print_receipt("T1", Document((Row("first"),)))
    sim_done = events.get(timeout=5)
    assert isinstance(sim_done, DeviceFault)
    assert events.get(timeout=5) == ReceiptPrinted("T1", False, "printer out")
    sim.paper = "ok"
    port.print_receipt("T2", Document((Row("second"),)))
    assert isinstance(events.get(timeout=5), DeviceOk)
    assert events.get(timeout=5) == ReceiptPrinted("T2", True)
    assert [j.lines[0] for j in sim.wait_jobs(1)] == ["second"]
    port.close()


def test_bad_printer_ports_are_refused_with_the_reason() -> None:
    for url, reason in (("usb://zz:1", "VID:PID"), ("lpt1", "device path"), ("tcp://", "host")):
        with pytest.raises(ValueError, match=reason):
            open_escpos(url)
