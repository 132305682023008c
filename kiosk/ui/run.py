"""`kiosk run`: the automat with its touch screen, the composition root of the running kiosk.

With real devices as the site file configures them, or (`--simulate`, and always for the
embedded demo site) every device its simulator on its real transport plus a head office on
this machine. Without a display it starts Xvfb itself, runs a scripted customer through the
screens in German and English, saves a screenshot of each, prints the journal and exits.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from kiosk.clock import ManualClock, utc_now
from kiosk.config import Site
from kiosk.ui.setup import configure
from kiosk.ui.xvfb import Xvfb


@dataclass
class RunOptions:
    simulate: bool
    headless: bool
    shots: Path
    panel: bool


def run(site: Site, journal_file: Path, opts: RunOptions, out: TextIO) -> int:
    with ExitStack() as stack:
        if opts.headless:
            xvfb = stack.enter_context(Xvfb(site.ui.width, site.ui.height))
            out.write(f"No display: started a virtual screen ({xvfb.display}).\n")
        configure(site.ui, windowed=opts.headless or opts.panel)
        clock: Callable[[], datetime] = ManualClock(utc_now()) if opts.headless else utc_now
        if opts.simulate:
            from kiosk.rig import simulated_rig

            rig = stack.enter_context(simulated_rig(site, journal_file, out, clock, card_step=0.4))
            kiosk = rig.kiosk
        else:
            rig = None
            kiosk = stack.enter_context(real_kiosk(site, journal_file, clock, out))
        stop = threading.Event()
        engine = threading.Thread(target=kiosk.run, args=(stop,), name="engine", daemon=True)
        engine.start()
        try:
            if opts.headless:
                from kiosk.ui.script import scripted_customers

                assert rig is not None, "the headless run needs the simulated devices"
                scripted_customers(rig, clock, opts.shots, out)
            else:
                from kiosk.ui.app import KioskApp

                app = KioskApp(kiosk, clock)
                if opts.panel and rig is not None:
                    app.panel_rig = rig
                app.run()
        finally:
            stop.set()
            engine.join(5)
        if rig is not None:
            from kiosk.demo import finish_report

            finish_report(rig, clock, out)
    return 0


@contextmanager
def real_kiosk(
    site: Site, journal_file: Path, clock: Callable[[], datetime], out: TextIO
) -> Iterator[Any]:
    """The devices the site file names, on their ports."""
    from kiosk.cctalk import open_cash
    from kiosk.chipkey import PcscKeyReader
    from kiosk.diag import load_pin_hash
    from kiosk.journal import Journal
    from kiosk.keytool import load_keys
    from kiosk.ports import Devices
    from kiosk.service import Kiosk
    from kiosk.zvt import open_card

    journal = Journal(journal_file, site.kiosk_id)

    def warn(text: str) -> None:
        out.write(f"warning: {text}\n")

    keys = load_keys(site, warn)
    reader = PcscKeyReader(site.devices.reader.reader, keys, site.key_credit_limit.minor)
    cash = open_cash(site, resume=journal.acceptor_counters())
    card = open_card(site) if site.card_enabled else None
    printer, printer_sim = open_printer(site)
    devices = Devices(reader=reader, coin=cash.coin, notes=cash.notes, card=card, printer=printer)
    kiosk = Kiosk(site, journal, devices, clock, pin_hash=load_pin_hash(site, warn))
    cash.start()
    reader.start()
    if card is not None:
        card.start()
    try:
        yield kiosk
    finally:
        reader.stop()
        cash.stop()
        if printer is not None:
            printer.close()
            printer.printer.close()
        if printer_sim is not None:
            printer_sim.stop()
        journal.close()


def open_printer(site: Site) -> tuple[Any, Any]:
    """The receipt printer the site names (port "sim": the simulated one on a pty), or none."""
    from drivers.printer.device import ReceiptPrinter
    from drivers.printer.sim import PrinterSim
    from kiosk.printer import EscPosPrinterPort

    conf = site.devices.printer
    if conf is None:
        return None, None
    sim = PrinterSim() if conf.port == "sim" else None
    if sim is not None:
        sim.start()
    return EscPosPrinterPort(ReceiptPrinter(sim.path if sim else conf.port)), sim


def default_headless() -> bool:
    return not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
