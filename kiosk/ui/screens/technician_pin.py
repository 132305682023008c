"""A technician key was read: the PIN, on a keypad; the digits are never shown. (The service
screens are in English, the language of the service manuals and `kiosk diag`.)"""

from __future__ import annotations

from datetime import datetime

from kivy.properties import StringProperty

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import View
from kiosk.domain.events import PinEntered
from kiosk.ui.screens.base import KioskScreen, load_kv

MAX_DIGITS = 12


class TechnicianPinScreen(KioskScreen):
    dots = StringProperty("")
    message = StringProperty("")
    _pin = ""

    def refresh(self, view: View, tr: Translator) -> None:
        self.title = "Service: enter the technician PIN"
        if view.notice == "pin_wrong":
            self.message = "Wrong PIN. After three wrong PINs the service mode locks for 5 min."
        elif view.notice == "pin_locked":
            until = datetime.fromisoformat(view.notice_params["until"])
            local = until.astimezone(self.model.site.hours.tz)
            self.message = f"Locked after three wrong PINs, until {local:%H:%M:%S}."
        else:
            self.message = "Pull the key to leave."
        self.body = f"Key {view.key.serial}" if view.key else ""

    def on_pre_enter(self) -> None:
        self._set("")

    def _set(self, pin: str) -> None:
        self._pin = pin
        self.dots = "\u25cf " * len(pin)

    def type_digit(self, digit: str) -> None:
        if len(self._pin) < MAX_DIGITS:
            self._set(self._pin + digit)

    def delete(self) -> None:
        self._set(self._pin[:-1])

    def confirm(self) -> None:
        pin, self._pin = self._pin, ""
        self._set("")
        if pin:
            self.model.send(PinEntered(pin))


load_kv(__file__)
