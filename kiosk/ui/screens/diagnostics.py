"""The technician's service screens: a menu of sections on the left, the section's result
and its actions on the right. The functions are kiosk.service.diag's (the same as `kiosk
diag`); they may take seconds (self-tests, end-of-day), so they run on a worker thread and the
result is drawn when it arrives. Every action is journaled there as an audit entry."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.clock import Clock
from kivy.properties import BooleanProperty, ListProperty, StringProperty

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import View
from kiosk.domain.events import AcceptorTest, LeaveDiagnostics
from kiosk.service.diag import Diagnostics, check_lines, report_lines, usb_folder
from kiosk.ui.screens.base import KioskScreen, load_kv

#: section id -> menu label
SECTIONS = {
    "devices": "Devices",
    "tests": "Self-tests",
    "acceptors": "Acceptor test",
    "cashbox": "Cash box",
    "eod": "End of day",
    "sync": "Sync",
    "transactions": "Transactions",
    "export": "Export",
    "config": "Configuration",
    "restart": "Restart",
}


class DiagnosticsScreen(KioskScreen):
    section = StringProperty("devices")
    lines = StringProperty("")
    action_label = StringProperty("")  # the section's action button ("" = none)
    confirm_label = StringProperty("")  # a second step ("" = none)
    working = BooleanProperty(False)
    menu = ListProperty([(k, v) for k, v in SECTIONS.items()])

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.diag: Diagnostics | None = None
        self._view: View | None = None
        self.export_folder: Callable[[], Path | None] = usb_folder
        self.done = threading.Event()  # set whenever a result has been drawn (tests wait on it)
        self._txids: list[str] = []  # the transactions listed, newest first
        self._tx_lines: list[str] = []
        self._pick = 0  # the one whose receipt "Reprint" prints

    def refresh(self, view: View, tr: Translator) -> None:
        self._view = view
        key = view.key.serial if view.key else "?"
        self.title = f"Service mode (key {key})"
        if self.diag is None or self.diag.who != f"key {key}":
            self.diag = Diagnostics(self.model.kiosk, f"key {key}")
            self.show("devices")
        if self.section == "acceptors":
            self._acceptor_lines(view)

    # ------------------------------------------------------------------ sections

    def show(self, section: str) -> None:
        self.section = section
        self.action_label = self.confirm_label = ""
        d = self.diag
        assert d is not None
        if section == "devices":
            self._run(lambda: report_lines(d.overview()))
        elif section == "tests":
            self.lines = "Press 'Run self-tests'. The printer prints a test page."
            self.action_label = "Run self-tests"
        elif section == "acceptors":
            self.action_label = "Stop test" if self._view and self._view.test_mode else "Start test"
            if self._view is not None:
                self._acceptor_lines(self._view)
        elif section == "cashbox":
            self._run(lambda: d.cash_box().lines())
            self.action_label = "Empty cash box"
        elif section == "eod":
            self.lines = "End of day (Kassenschnitt): the terminal submits its batch."
            self.action_label = "Run end of day"
        elif section == "sync":
            self._run(d.sync_now)
            self.action_label = "Sync now"
        elif section == "transactions":
            self._pick = 0
            self._run(self._list_transactions)
        elif section == "export":
            folder = self.export_folder()
            self.lines = f"USB stick: {folder}" if folder else "No USB stick found."
            self.action_label = "Export journal" if folder else ""
        elif section == "config":
            self._run(d.config)
        elif section == "restart":
            self.lines = "Restart the automat software (the journal is kept)."
            self.action_label = "Restart now"

    def act(self) -> None:
        d = self.diag
        assert d is not None
        s = self.section
        if s == "tests":
            self._run(lambda: check_lines(d.self_tests()))
        elif s == "acceptors":
            on = not (self._view and self._view.test_mode)
            self.model.send(AcceptorTest(on))
            self.action_label = "Stop test" if on else "Start test"
        elif s == "cashbox":
            self.confirm_label = "Confirm: box emptied"
            self.lines += "\n\nTake the cash box out, then confirm. The counters restart."
        elif s == "eod":
            self._run(lambda: _eod(*d.end_of_day()))
        elif s == "sync":
            self._run(d.sync_now)
        elif s == "transactions" and self._txids:
            txid = self._txids[self._pick]
            self._run(lambda: _reprinted(txid, d.reprint(txid)))
        elif s == "export":
            folder = self.export_folder()
            if folder is not None:
                self._run(lambda: _export(*d.export(folder)))
        elif s == "restart":

            def restart() -> list[str]:
                d.restart()  # journaled off the UI thread, then the app stops on it
                Clock.schedule_once(lambda _dt: _stop_app(), 0)
                return ["Restarting..."]

            self._run(restart)

    def confirm(self) -> None:
        d = self.diag
        assert d is not None
        if self.section == "transactions" and self._txids:  # the next older one
            self._pick = (self._pick + 1) % len(self._txids)
            self._mark()
        elif self.section == "cashbox":
            self.confirm_label = ""
            self.action_label = "Empty cash box"
            self._run(lambda: _emptied(*d.empty_cash_box()))

    def leave(self) -> None:
        self.model.send(LeaveDiagnostics())

    def _acceptor_lines(self, view: View) -> None:
        last = view.test_last
        self.lines = "\n".join(
            [
                "Acceptor test: " + ("ON, insert coins or notes" if view.test_mode else "off"),
                f"last: {last}" if last else "last: -",
                f"total test money: {view.test_total}" if view.test_total else "",
                "Test money goes into the cash box and is never credited.",
            ]
        )

    def _list_transactions(self) -> list[str]:
        """(Worker thread.) The last transactions, newest first, for picking one to reprint."""
        d = self.diag
        assert d is not None
        self._tx_lines = d.transactions(12)
        self._txids = d.recent_txids(12)
        return self._tx_lines or ["no transactions yet"]

    def _mark(self) -> None:
        """Show which transaction "Reprint" means, and offer the next older one."""
        n = len(self._txids)
        if self.section != "transactions" or not n:
            return
        self.lines = "\n".join(
            f"{'>' if i == self._pick else ' '}{i + 1:>2} {line}"
            for i, line in enumerate(self._tx_lines)
        )
        self.action_label = f"Reprint receipt {self._pick + 1}"
        self.confirm_label = "Select older" if n > 1 else ""

    def _run(self, job: Callable[[], list[str]]) -> None:
        self.working = True
        self.done.clear()
        self.lines = "Working..."

        def work() -> None:
            try:
                result = job()
            except Exception as err:  # shown to the technician, not swallowed
                result = [f"failed: {err}"]
            Clock.schedule_once(lambda _dt: self._show(result), -1)

        threading.Thread(target=work, name="diagnostics", daemon=True).start()

    def _show(self, lines: list[str]) -> None:
        self.lines = "\n".join(lines)
        if lines is self._tx_lines:
            self._mark()
        self.working = False
        self.done.set()


def _stop_app() -> None:
    from kivy.app import App

    app = App.get_running_app()
    if app is not None:
        app.stop()


def _eod(result: Any, printed: bool) -> list[str]:
    return [*result.summary(), "report printed" if printed else "report NOT printed"]


def _emptied(report: list[str], printed: bool) -> list[str]:
    return [*report, "", "report printed" if printed else "report NOT printed (see journal)"]


def _reprinted(txid: str, printed: bool) -> list[str]:
    if printed:
        return [f"receipt {txid} reprinted (marked as a copy)"]
    return [f"receipt {txid} NOT printed: check paper and printer, then try again"]


def _export(jpath: Path, cpath: Path, count: int) -> list[str]:
    return [f"written: {jpath.name}", f"written: {cpath.name}", f"verified: {count} entries"]


load_kv(__file__)
