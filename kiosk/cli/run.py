"""`kiosk run`: the automat with its touch screen.

The automat is built by the composition root (kiosk.app.bootstrap) on the devices the site
file names, or (`--simulate`, and always for the embedded demo site) on simulators started on
their real transports plus a head office on this machine. Without a display it starts Xvfb
itself, runs a scripted customer through the screens in German and English, saves a screenshot
of each, prints the journal and exits.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from kiosk.adapters.updates import SWITCH_EXIT
from kiosk.app.bootstrap import Automat, automat, where
from kiosk.app.systemd import Notifier, Supervision, Watchdog
from kiosk.domain.clock import ManualClock, utc_now
from kiosk.domain.engine import State, View
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
    supervision: Supervision = Supervision()  # systemd's, taken from the environment at start


@contextmanager
def _sigterm_stops() -> Iterator[threading.Event]:
    """SIGTERM (systemd stopping the automat, the launcher passing it on) sets the event the
    screen watches: it closes, the engine stops, and the with-blocks unwind (acceptors
    inhibited and closed, the journal closed, and what --simulate started, the simulators
    and the local head office, stopped). Python's default ends the process on the spot and
    left the local head office running; an exception thrown from the handler could land in
    a library's bare `except` and be lost. The handler only sets the event."""
    stopping = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopping  # (signal handlers are the main thread's: a test calling run())
        return
    before = signal.signal(signal.SIGTERM, lambda _signum, _frame: stopping.set())
    try:
        yield stopping
    finally:
        signal.signal(signal.SIGTERM, before)


def run(site: Site, journal_file: Path, opts: RunOptions, out: TextIO) -> int:
    with _sigterm_stops() as stopping:
        status = _run(site, journal_file, opts, out, stopping)
        if stopping.is_set() and status == 0:
            out.write("kiosk: stopped (SIGTERM)\n")
        return status


def _run(
    site: Site, journal_file: Path, opts: RunOptions, out: TextIO, stopping: threading.Event
) -> int:
    with ExitStack() as stack:
        if opts.headless:
            xvfb = stack.enter_context(Xvfb(site.ui.width, site.ui.height))
            out.write(f"No display: started a virtual screen ({xvfb.display}).\n")
        configure(site.ui, windowed=opts.headless or opts.panel)
        clock: Callable[[], datetime] = ManualClock(utc_now()) if opts.headless else utc_now
        shown = threading.Event()  # the screen's first picture is up
        if opts.simulate:
            from kiosk.sim.rig import simulated_rig

            rig = stack.enter_context(simulated_rig(site, journal_file, out, clock, card_step=0.4,
                                                    ready=shown))  # fmt: skip
            running = rig.automat
        else:
            rig = None
            running = stack.enter_context(automat(site, journal_file, clock, out, ready=shown))
        kiosk = running.kiosk
        stop = threading.Event()
        engine = threading.Thread(target=kiosk.run, args=(stop,), name="engine", daemon=True)
        engine.start()
        stack.enter_context(supervised(running, engine, opts.supervision, shown))
        try:
            if opts.headless:
                from kiosk.sim.script import Stopped, scripted_customers

                assert rig is not None, "the headless run needs the simulated devices"
                shown.set()  # its screen is the pictures it saves
                with suppress(Stopped):  # SIGTERM: said below, once everything is closed
                    scripted_customers(rig, clock, opts.shots, out, stopping)
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
                from kiosk.adapters.voice import Voice

                voice = stack.enter_context(closing(Voice()))
                app = KioskApp(kiosk, clock, panel=panel, shown=shown, voice=voice,
                               stopping=stopping)  # fmt: skip
                threading.Thread(target=_stop_when_failed, args=(engine, app), daemon=True,
                                 name="engine-watch").start()  # fmt: skip
                if not stopping.is_set():  # (SIGTERM came while it started)
                    app.run()
        finally:
            stop.set()
            engine.join(5)
        if kiosk.failure is not None:
            out.write(f"kiosk: out of order: {kiosk.failure}\n")
            return 1  # a failure status: systemd starts it again, reconciliation runs
        if kiosk.switched:
            out.write("kiosk: handing over to the new release\n")
            return SWITCH_EXIT  # the launcher starts it
        if rig is not None and not stopping.is_set():
            from kiosk.sim.demo import finish_report

            finish_report(rig, clock, out)
    return 0


#: how long the out-of-order screen stays up before the process exits (to be restarted)
FAILURE_SCREEN_SECONDS = 30.0


def _stop_when_failed(engine: threading.Thread, app: Any) -> None:
    """When the engine thread ends on a failure, the screen shows it for a while, then the
    app stops and the process exits non-zero."""
    engine.join()
    if app.kiosk.failure is not None or app.kiosk.switched:
        from kivy.clock import Clock

        wait = FAILURE_SCREEN_SECONDS if app.kiosk.failure is not None else 0
        Clock.schedule_once(lambda _dt: app.stop(), wait)


@contextmanager
def supervised(
    running: Automat, engine: threading.Thread, sup: Supervision, shown: threading.Event
) -> Iterator[None]:
    """systemd's view of the automat (when it started it): READY=1 once the screen shows its
    first picture and the devices are up, STATUS= whenever it goes in or out of service, and
    WATCHDOG=1 pings while the engine and every device and sync thread are alive."""
    notifier = Notifier(sup.address)
    if not notifier.active:
        yield
        return
    kiosk = running.kiosk
    lock = threading.Lock()
    told: dict[str, str] = {}  # "now": the automat's status; "sent": what systemd heard last

    def status_of(view: View) -> str:
        if view.state != State.OUT_OF_SERVICE:
            return "in service"
        if view.notice == "failed":
            return "out of order"
        faults = [where(running.site, f) for f in sorted(view.faults)]
        return "out of service: " + (", ".join(faults) or "no payment device")

    def status(view: View, _refusal: object) -> None:
        """STATUS= on every change, once READY=1 is out (it carries the first)."""
        with lock:
            told["now"] = status_of(view)
            if "sent" in told and told["now"] != told["sent"]:
                told["sent"] = told["now"]
                notifier.notify(STATUS=told["now"])

    def ready() -> None:
        deadline = time.monotonic() + READY_WITHIN
        on_screen = shown.wait(READY_WITHIN)
        woken = threading.Event()
        while on_screen and not running.devices_ready() and time.monotonic() < deadline:
            woken.wait(0.1)  # the devices come up on their own threads: look again shortly
        with lock:
            if not on_screen:
                why = "out of service: no picture on the screen"
            elif missing := running.devices_missing():
                why = "out of service: not there yet: " + ", ".join(missing)
            else:
                why = told["now"]
            told["sent"] = why
            notifier.notify(READY="1", STATUS=why)

    told["now"] = status_of(kiosk.view())
    kiosk.listeners.append(status)
    threading.Thread(target=ready, name="ready", daemon=True).start()
    interval = sup.watchdog
    watchdog = None
    if interval is not None:
        watchdog = Watchdog(notifier, partial(running.dead_parts, engine), interval)
        watchdog.start()
    try:
        yield
    finally:
        if watchdog is not None:
            watchdog.stop()
        notifier.notify(STOPPING="1")


#: systemd hears READY=1 when the screen and the devices are up, or after this long in any case
#: (with a STATUS= saying what is not up; the watchdog then decides)
READY_WITHIN = 60.0


def default_headless() -> bool:
    return not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
