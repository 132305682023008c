"""The headless run's scripted customers: touches on the real screen, keys, coins and notes into
the simulators through their control interface, a screenshot of every screen, once in German
and once in English."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from kiosk.documents.i18n import money_text
from kiosk.domain.engine import State
from kiosk.domain.events import Device, DeviceFault, DeviceOk
from kiosk.sim.rig import Rig


def used_at_home(rig: Rig, out: TextIO) -> None:
    """Between runs the demo customers used their energy: each key's meter takes its credit
    over, so that the next run's top-ups fit under the key's limit."""
    from drivers.chipkey.profile import ChipKey
    from kiosk.adapters.key import DEMO_KEYS as MASTER_KEYS
    from kiosk.service.keytool import consume

    for serial, card in rig.keys.cards.items():
        left = ChipKey(card, MASTER_KEYS).read_summary().credit  # the slot's own card object
        if left:
            consume(card, MASTER_KEYS, left)
            out.write(f"  {serial}: {rig.site.money(left)} used at home since the last run\n")


def technician_visit(
    rig: Rig, ui: Any, shot: Callable[[str], None], usb: Path, *, wrong_pin_first: bool = True
) -> None:
    """A technician with the demo technician key goes through every service section: a
    wrong PIN first, then the device overview, self-tests, an acceptor test with a coin,
    the cash box emptied, end of day, sync, transactions and a reprint of the newest receipt,
    export, configuration; then out."""
    from kiosk.service.diag import DEMO_PIN
    from kiosk.sim.simulate import TECHNICIAN_KEY

    rig.control.send(f"insert {TECHNICIAN_KEY}")
    ui.wait_screen("technician_pin", 10)
    shot("pin")
    if wrong_pin_first:
        for digit in "1234":
            ui.tap("digit", digit)
        ui.tap("pin_ok")
        ui.until(lambda: ui.model.view.notice == "pin_wrong", "the wrong PIN refused", 5)
        shot("pin-wrong")
    for digit in DEMO_PIN:
        ui.tap("digit", digit)
    ui.tap("pin_ok")
    ui.wait_screen("diagnostics", 5)
    screen = ui.root.ids.sm.get_screen("diagnostics")
    screen.export_folder = lambda: usb

    def finished() -> None:
        ui.until(screen.done.is_set, "the service function's result", 30)
        ui.settle()

    finished()
    shot("devices")
    ui.tap("diag_tests")
    ui.tap("diag_action")
    finished()
    shot("self-tests")
    ui.tap("diag_acceptors")
    ui.tap("diag_action")  # start the test
    ui.until(lambda: ui.model.view.test_mode, "the acceptor test on")
    # the screen says "on" when the engine has decided; the acceptor is enabled over the bus a
    # poll later (a coin before that is rejected back to the hand that inserted it)
    coin = rig.coin_sim
    ui.until(lambda: coin.master and coin.inhibit_mask != 0, "the coin acceptor enabled")
    rig.control.send(f"coin {rig.site.money(200).amount_text()}")
    ui.until(lambda: ui.model.view.test_total is not None, "the test coin", 10)
    shot("acceptor-test")
    ui.tap("diag_action")  # stop it
    ui.tap("diag_cashbox")
    finished()
    shot("cashbox")
    ui.tap("diag_action")
    ui.tap("diag_confirm")
    finished()
    shot("cashbox-emptied")
    if rig.card is not None:
        ui.tap("diag_eod")
        ui.tap("diag_action")
        finished()
        shot("end-of-day")
    ui.tap("diag_sync")
    finished()
    shot("sync")
    ui.tap("diag_transactions")
    finished()
    shot("transactions")
    ui.tap("diag_action")  # reprint the newest transaction's receipt
    finished()
    shot("reprint")
    ui.tap("diag_export")
    ui.tap("diag_action")
    finished()
    shot("export")
    ui.tap("diag_config")
    finished()
    shot("configuration")
    ui.tap("diag_exit")
    ui.wait_screen("idle", 5)
    rig.control.send("remove")
    ui.settle()


class Stopped(Exception):
    """The run was asked to stop (SIGTERM) between two of the script's screens."""


def scripted_customers(
    rig: Rig,
    clock: Callable[[], datetime],
    shots: Path,
    out: TextIO,
    stopping: threading.Event | None = None,
) -> list[Path]:
    """The headless run's customers, a screenshot of each screen; `stopping` (SIGTERM) set
    ends it at the next screen with `Stopped`."""
    from kivy.base import EventLoop
    from kivy.core.window import Window

    from kiosk.adapters.voice import NoVoice, record
    from kiosk.ui.app import KioskApp, settle_heap
    from kiosk.ui.driver import ScreenDriver

    app = KioskApp(rig.kiosk, clock)
    root = app.build()
    app.root = root
    EventLoop.ensure_window()
    Window.add_widget(root)
    EventLoop.start()
    ui = ScreenDriver(rig.kiosk, root)
    ui.until(rig.devices_ready, "the cash devices and the card terminal", timeout=20)
    ui.settle()
    settle_heap()
    used_at_home(rig, out)
    shots.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []
    site = rig.site
    counter = iter(range(1, 100))
    silent: list[Path] = []  # screens whose sound could not be made (no espeak-ng)

    def shot(lang: str, name: str) -> None:
        if stopping is not None and stopping.is_set():
            raise Stopped
        ui.settle()
        path = ui.screenshot(shots / f"{lang}-{next(counter):02d}-{name}.png")
        taken.append(path)
        said(path)
        out.write(f"  {path.name}: {ui.texts().splitlines()[0] if ui.texts() else ''}\n")

    def said(png: Path) -> None:
        """Beside the picture, what the screen says: its text and its sound."""
        prompt = root.spoken()[0]
        png.with_suffix(".txt").write_text(prompt + "\n", "utf-8")
        try:
            record(prompt, ui.model.lang, png.with_suffix(".wav"))
        except NoVoice as e:
            if not silent:
                out.write(f"  ({e})\n")
            silent.append(png)

    def shown(state: State) -> bool:
        return bool(ui.model.view.state == state)

    def m(minor: int, lang: str) -> str:
        return money_text(site.money(minor), lang).replace("\xa0", " ")

    def note(value: int) -> None:
        rig.control.send(f"note {site.money(value).amount_text()}")

    def key(serial: str) -> None:
        before = ui.screen
        rig.control.send(f"insert {serial}")
        ui.until(lambda: ui.screen not in (before, "busy"), f"key {serial} read", 10)
        ui.settle()

    def remove() -> None:
        rig.control.send("remove")
        ui.wait_screen("idle", 10)

    for lang in ("de", "en"):
        out.write(f"Customers in {lang}:\n")
        ui.tap(f"lang_{lang}")
        shot(lang, "idle")
        key("K-1002")  # blocked at head office
        shot(lang, "refused")
        remove()
        ui.tap(f"lang_{lang}")
        key("K-1001")  # with an open debt
        shot(lang, "amount")
        ui.model.set_contrast(True)  # as the large-text button does
        shot(lang, "amount-large-text")
        ui.model.set_contrast(False)
        ui.tap("preset", m(2000, lang))
        if ui.screen == "method":
            shot(lang, "method")
            ui.tap("cash")
        ui.wait_screen("cash")
        note(1000)
        ui.until(lambda: ui.model.view.paid.minor == 1000, "the 10 note", 10)
        shot(lang, "cash")
        note(1000)
        ui.wait_screen("done", 15)
        shot(lang, "done")
        remove()
        if site.card_enabled:
            ui.tap(f"lang_{lang}")
            key("K-1003")
            ui.tap("preset", m(3000, lang))
            ui.tap("card")
            ui.until(lambda: bool(ui.model.view.card_text), "the terminal's prompt", 15)
            shot(lang, "card")
            ui.wait_screen("done", 20)
            remove()
        ui.tap(f"lang_{lang}")
        key("K-1003")
        ui.tap("free")
        ui.wait_screen("cash")
        note(1000)
        ui.until(lambda: ui.model.view.paid.minor == 1000, "the 10 note", 10)
        rig.control.send("remove")  # walks off mid-payment
        ui.wait_screen("key_missing", 10)
        shot(lang, "key-missing")
        key("K-1003")  # comes back
        rig.control.send("paper out")  # and the receipt roll has just run out
        ui.tap("finish")
        ui.until(lambda: ui.model.view.receipt == "not_printed", "no receipt", 15)
        shot(lang, "done-no-receipt")
        rig.control.send("paper ok")  # (the technician reprints it later)
        remove()
        for device in (Device.COIN, Device.NOTES, Device.CARD):  # every payment device fails
            rig.kiosk.submit(DeviceFault(device, text="scripted fault"))
        ui.wait_screen("unavailable")
        ui.tap(f"lang_{lang}")
        shot(lang, "out-of-service")
        for device in (Device.COIN, Device.NOTES, Device.CARD):
            rig.kiosk.submit(DeviceOk(device))
        ui.wait_screen("idle")
        # Two screens that pass too quickly to catch in a run: shown from the current view
        # with the state they have (reading a key; outside the opening hours).
        # (The engine's own views are held back meanwhile: its next one would replace these.)
        rig.kiosk.listeners.remove(ui.model.post)
        for state, name in ((State.READING, "reading"), (State.CLOSED, "closed")):
            ui.model.post(replace(rig.kiosk.view(), state=state), None)
            ui.until(partial(shown, state), f"the {name} screen")
            ui.model.set_language(lang)  # (a screen at rest starts in German again)
            ui.pump(0.05)
            path = ui.screenshot(shots / f"{lang}-{next(counter):02d}-{name}.png")
            taken.append(path)
            said(path)
            out.write(f"  {path.name}: {ui.texts().splitlines()[0]}\n")
        rig.kiosk.listeners.append(ui.model.post)
        ui.model.post(rig.kiosk.view(), None)
        ui.settle()
    out.write("Technician:\n")
    technician_visit(rig, ui, partial(shot, "service"), shots / "usb-stick")
    Window.remove_widget(root)
    out.write(f"{len(taken)} screenshots in {shots}, each with what it said (.txt, .wav)\n")
    return taken
