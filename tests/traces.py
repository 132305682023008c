"""Device traces made with the simulators (tests/fixtures/traces/), as a site's first
bring-up would record them from the real devices; and how to make them again:

    .venv/bin/python -m tests.traces   # writes tests/fixtures/traces/*.trace
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

from drivers.trace import Trace

HERE = Path(__file__).parent / "fixtures" / "traces"


def replayed(path: Path, **kwargs: Any) -> Any:
    """A trace replayed as the automat that recorded it took money (every legal coin and
    note: the bring-up tools' and these traces' setting) and with the demo keys."""
    from drivers.replay import replay
    from kiosk.adapters.key import DEMO_KEYS
    from kiosk.domain.site import DENOMINATIONS

    return replay(path, accepted=DENOMINATIONS["EUR"], keys=DEMO_KEYS, **kwargs)


def record_cctalk(kind: str, out: io.TextIOBase | Any) -> list[Any]:
    """A coin acceptor (two coins, one counterfeit) or a bill validator (a 10 and a 20 note,
    stacked) on the simulated bus, recorded; returns the events the driver saw live."""
    from drivers.cctalk.codec import RouteCode
    from drivers.cctalk.devices import BillEscrowed, CoinAcceptor, NoteValidator
    from drivers.cctalk.transport import Bus
    from kiosk.adapters.cash import start_simulator
    from kiosk.domain.site import DENOMINATIONS
    from tests.conftest import make_site

    sim, coin, bills = start_simulator(make_site("demo"))
    bus = Bus.open(sim.path)
    bus.trace = Trace(out, kind, "cctalk", "simulated bus")
    legal = DENOMINATIONS["EUR"]
    dev: CoinAcceptor | NoteValidator
    dev = CoinAcceptor(bus, "EUR", legal["coins"]) if kind == "coin" else NoteValidator(
        bus, "EUR", legal["notes"])  # fmt: skip
    events: list[Any] = []
    try:
        events += dev.initialise()
        dev.enable(10_000)
        if kind == "coin":
            coin.insert("EU200A")
            coin.insert("EU050A")
            coin.insert("XX999A")  # not a coin of ours: rejected
        want = 3 if kind == "coin" else 4
        for _ in range(200):
            for ev in dev.poll():
                events.append(ev)
                if isinstance(ev, BillEscrowed) and isinstance(dev, NoteValidator):
                    dev.route(RouteCode.STACK)
            if kind == "notes" and len(events) == 0 and not bills.escrow:
                bills.insert("EU0010A")  # type: ignore[union-attr]
            if kind == "notes" and len(events) == 2 and not bills.escrow:
                bills.insert("EU0020A")  # type: ignore[union-attr]
            if len(events) >= want:
                break
            threading.Event().wait(0.01)  # the next poll, as the bus thread paces them
        dev.enable(None)
    finally:
        bus.close()
        sim.stop()
    return events


def record_essp(out: io.TextIOBase | Any) -> list[Any]:
    """An ITL note validator (a 10 and a 20 note, each held and stacked) on its simulated
    port, recorded; returns the events the driver saw live."""
    from drivers.cctalk.codec import RouteCode
    from drivers.cctalk.devices import BillEscrowed, BillStacked
    from drivers.cctalk.sim import euro_notes
    from drivers.essp.device import Link, NoteValidator
    from drivers.essp.sim import SimNoteValidator
    from kiosk.domain.site import DENOMINATIONS

    sim = SimNoteValidator(euro_notes())
    sim.start()
    link = Link.open(sim.path)
    link.trace = Trace(out, "notes", "essp", "simulated validator")
    dev = NoteValidator(link, "EUR", DENOMINATIONS["EUR"]["notes"])
    events: list[Any] = []
    try:
        events += dev.initialise()
        dev.enable(10_000)
        for note in ("EU0010A", "EU0020A"):
            sim.insert(note)
            for _ in range(50):
                for ev in dev.poll():
                    events.append(ev)
                    if isinstance(ev, BillEscrowed):
                        dev.route(RouteCode.STACK)
                if events and isinstance(events[-1], BillStacked):
                    break
        dev.enable(None)
    finally:
        link.close()
        sim.stop()
    return events


def record_zvt(out: io.TextIOBase | Any) -> list[Any]:
    """The card terminal over TCP: registration, status enquiry, a 12.34 payment and its
    reversal, recorded (masked); returns the results the client had live."""
    from drivers.zvt.apdu import Answer
    from drivers.zvt.client import ZvtClient
    from drivers.zvt.sim import TerminalSim
    from drivers.zvt.transport import TracingLink, mask_zvt, open_link

    with TerminalSim("tcp") as sim:
        trace = Trace(out, "terminal", "zvt", "simulated terminal", mask=mask_zvt)
        client = ZvtClient(TracingLink(open_link(sim.port), trace))
        results: list[Any] = [client.register(), client.status_enquiry()]
        paid = client.authorise(1234, decide=lambda _s: Answer.OK)
        results.append(paid)
        assert paid.status is not None and paid.status.receipt_number is not None
        results.append(client.reversal(paid.status.receipt_number))
        client.link.close()
    return results


def record_escpos(out: io.TextIOBase | Any) -> list[Any]:
    """The receipt printer on its simulated port: its status, a test page, its status with
    the paper near its end and out; returns the statuses the driver read live."""
    from drivers.printer.device import ReceiptPrinter
    from drivers.printer.sim import PrinterSim
    from kiosk.adapters.printer import test_page
    from kiosk.documents.receipt import escpos_job

    with PrinterSim() as sim:
        printer = ReceiptPrinter(sim.path)
        printer.trace = Trace(out, "printer", "escpos", "simulated printer")
        try:
            seen = [printer.status()]
            printer.print_job(escpos_job(test_page()))
            sim.wait_jobs(1)
            for paper in ("near_end", "out"):
                sim.paper = paper
                seen.append(printer.status())
        finally:
            printer.close()
    return seen


def record_pcsc(out: io.TextIOBase | Any) -> Any:
    """A personalised demo key's summary, read through a recording card."""
    from drivers.chipkey.profile import ChipKey, Identity
    from drivers.chipkey.sim import VirtualCard
    from kiosk.adapters.key import DEMO_KEYS

    card = VirtualCard(bytes.fromhex("04a1b2c3d4e5f6"))
    ident = Identity("SWEJP", "4711001", "1ESY1160000001", "electricity", "K-1001", "customer",
                     "EUR")  # fmt: skip
    ChipKey(card, DEMO_KEYS).personalise(ident, upper=50_000, initial=2_500)

    class Recording:
        def __init__(self) -> None:
            self.trace = Trace(out, "reader", "pcsc", "virtual card")

        def transmit(self, apdu: bytes) -> bytes:
            self.trace.sent(apdu)
            answer = card.transmit(apdu)
            self.trace.received(answer)
            return answer

    return ChipKey(Recording(), DEMO_KEYS).read_summary()  # type: ignore[arg-type]


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for kind in ("coin", "notes"):
        with (HERE / f"{kind}.trace").open("w", encoding="utf-8") as f:
            record_cctalk(kind, f)
    with (HERE / "notes-essp.trace").open("w", encoding="utf-8") as f:
        record_essp(f)
    with (HERE / "terminal.trace").open("w", encoding="utf-8") as f:
        record_zvt(f)
    with (HERE / "printer.trace").open("w", encoding="utf-8") as f:
        record_escpos(f)
    with (HERE / "key.trace").open("w", encoding="utf-8") as f:
        record_pcsc(f)
    print(f"traces written to {HERE}")


if __name__ == "__main__":
    main()
