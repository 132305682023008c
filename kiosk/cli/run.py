"""`kiosk run`: the automat with its touch screen.

The automat is built by the composition root (kiosk.app.bootstrap) on the devices the site
file names, or (`--simulate`, and always for the embedded demo site) on simulators started on
their real transports plus a head office on this machine. Without a display it starts Xvfb
itself, runs a scripted customer through the screens in German and English, saves a screenshot
of each, prints the journal and exits.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TextIO

from kiosk.app.bootstrap import automat
from kiosk.domain.clock import ManualClock, utc_now
from kiosk.domain.site import Site
from kiosk.ui.setup import configure
from kiosk.ui.xvfb import Xvfb


@dataclass
class RunOptions:
    simulate: bool
    headless: bool
    shots: Path
    panel: bool
    control: Path | None = None  # a running `kiosk simulate`'s control socket, for the panel


def run(site: Site, journal_file: Path, opts: RunOptions, out: TextIO) -> int:
    with ExitStack() as stack:
        if opts.headless:
            xvfb = stack.enter_context(Xvfb(site.ui.width, site.ui.height))
            out.write(f"No display: started a virtual screen ({xvfb.display}).\n")
        configure(site.ui, windowed=opts.headless or opts.panel)
        clock: Callable[[], datetime] = ManualClock(utc_now()) if opts.headless else utc_now
        if opts.simulate:
            from kiosk.sim.rig import simulated_rig

            rig = stack.enter_context(simulated_rig(site, journal_file, out, clock, card_step=0.4))
            kiosk = rig.kiosk
        else:
            rig = None
            kiosk = stack.enter_context(automat(site, journal_file, clock, out)).kiosk
        stop = threading.Event()
        engine = threading.Thread(target=kiosk.run, args=(stop,), name="engine", daemon=True)
        engine.start()
        try:
            if opts.headless:
                from kiosk.sim.script import scripted_customers

                assert rig is not None, "the headless run needs the simulated devices"
                scripted_customers(rig, clock, opts.shots, out)
            else:
                from kiosk.ui.app import KioskApp

                panel = None
                if opts.panel:  # (a customer's automat never loads the simulators' modules)
                    from kiosk.sim.panel import SimulatorPanel
                    from kiosk.sim.simulate import SimulatorControl

                    if rig is not None:
                        panel = partial(SimulatorPanel, rig.control, site)
                    elif opts.control is not None:
                        panel = partial(SimulatorPanel, SimulatorControl(opts.control), site)
                KioskApp(kiosk, clock, panel=panel).run()
        finally:
            stop.set()
            engine.join(5)
        if rig is not None:
            from kiosk.sim.demo import finish_report

            finish_report(rig, clock, out)
    return 0


def default_headless() -> bool:
    return not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
