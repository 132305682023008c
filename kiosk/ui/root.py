"""The whole screen: a notice line, the screen for the engine's state, the inactivity warning
with "more time", and the footer with the language flags and the large-text switch."""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

from kivy.properties import BooleanProperty, ObjectProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.screenmanager import NoTransition, ScreenManager

from kiosk.documents.i18n import N_, Translator
from kiosk.documents.terminal import result_text
from kiosk.domain.engine import TAKES_MORE_TIME, State, View
from kiosk.domain.errors import UserFacingError
from kiosk.ui.screens.amount import AmountScreen
from kiosk.ui.screens.base import KioskScreen, load_kv
from kiosk.ui.screens.busy import BusyScreen
from kiosk.ui.screens.card import CardScreen
from kiosk.ui.screens.cash import CashScreen
from kiosk.ui.screens.diagnostics import DiagnosticsScreen
from kiosk.ui.screens.done import DoneScreen
from kiosk.ui.screens.idle import IdleScreen
from kiosk.ui.screens.key_missing import KeyMissingScreen
from kiosk.ui.screens.method import MethodScreen
from kiosk.ui.screens.refused import RefusedScreen
from kiosk.ui.screens.technician_pin import TechnicianPinScreen
from kiosk.ui.screens.unavailable import UnavailableScreen
from kiosk.ui.speech import choices_of, sentence, texts_of

#: engine state -> screen name
SCREEN_OF = {
    State.IDLE: "idle",
    State.CLOSED: "unavailable",
    State.OUT_OF_SERVICE: "unavailable",
    State.READING: "busy",
    State.KEY_REFUSED: "refused",
    State.WRITING_PENDING: "busy",
    State.CHOOSING_AMOUNT: "amount",
    State.CHOOSING_METHOD: "method",
    State.CASH: "cash",
    State.CARD: "card",
    State.WRITING: "busy",
    State.REVERSING: "busy",
    State.KEY_MISSING: "key_missing",
    State.DONE: "done",
    State.TECHNICIAN_PIN: "technician_pin",
    State.DIAGNOSTICS: "diagnostics",
}
SCREENS: dict[str, type[KioskScreen]] = {
    "idle": IdleScreen,
    "unavailable": UnavailableScreen,
    "busy": BusyScreen,
    "refused": RefusedScreen,
    "amount": AmountScreen,
    "method": MethodScreen,
    "cash": CashScreen,
    "card": CardScreen,
    "key_missing": KeyMissingScreen,
    "done": DoneScreen,
    "technician_pin": TechnicianPinScreen,
    "diagnostics": DiagnosticsScreen,
}

#: where the customer may ask for more time (elsewhere the screen ends by itself)

#: engine notice -> text ({…} from the notice's parameters)
NOTICES = {
    "note_too_big": N_(
        "This note is more than is still needed and was given back. You can insert "
        "up to {room} more."
    ),
    "note_jammed": N_("A note got stuck. Your money is safe; the staff have been told."),
    "card_declined": N_("The card payment was declined. {reason}"),
    "card_aborted": N_("The card payment was cancelled."),
    "card_timeout": N_("The card terminal did not answer. Nothing was charged."),
    "card_error": N_("The card payment did not work. {reason}"),
    "timed_out": N_("The session ended because nothing happened for a while."),
    "key_removed_early": N_("The key was taken out too early."),
    "pending_written": N_("{amount} from an earlier payment has been added to your key."),
    "pending_not_written": N_("An earlier payment could not be written yet. Your money is safe."),
    "cash_device_fault": N_("Cash cannot be accepted right now."),
    "wrong_key": N_("This is a different key. Please insert the key you started with."),
}
#: refused intent -> text
REFUSALS = {
    "below_minimum": N_("The smallest top-up is {minimum}."),
    "above_maximum": N_("The largest top-up possible now is {maximum}."),
    "not_a_step": N_("Please choose an amount in steps of {step}."),
    "nothing_paid": N_("Nothing has been paid yet."),
    "card_not_offered": N_("Card payment is not offered here."),
    "cash_not_available": N_("Cash is not accepted right now."),
    "out_of_service": N_("Sorry, this is not possible right now."),
    "wrong_currency": N_("This amount is in another currency."),
}


class Heard(NamedTuple):
    """What the voice said of the screen last: which screen, in which language, its texts,
    and whether the "more time" warning was up."""

    screen: str
    lang: str
    texts: list[str]
    warned: bool


@cache  # once per process: it binds to the one window
def finish_each_frame() -> None:
    """After each frame is handed to the display, wait until it is drawn (glFinish), once per
    window. Without it the GL driver queues frames and makes the next texture upload wait for
    them instead: under the software renderer the first coin of a burst then took 40-60 ms
    (the amount's texture written while the frame before still drew from it), in half of the
    benchmark's runs; with it every frame costs what it draws (p99 22-26 ms in 14 runs of 14).
    On a GPU it keeps frames from queueing behind each other: what the customer did is on the
    screen with the next frame, not a few later."""
    from kivy.core.window import Window
    from kivy.graphics.opengl import glFinish

    Window.bind(on_flip=lambda *_a: glFinish())


class KioskRoot(BoxLayout):  # type: ignore[misc]
    model = ObjectProperty(None)
    notice = StringProperty("")
    warning = BooleanProperty(False)
    warning_text = StringProperty("")
    label_more_time = StringProperty("")
    label_large = StringProperty("")
    site_name = StringProperty("")
    label_speaker = StringProperty("")
    label_next = StringProperty("")
    label_take = StringProperty("")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        sm: ScreenManager = self.ids.sm
        sm.transition = NoTransition()
        for name, cls in SCREENS.items():
            sm.add_widget(cls(name=name, model=self.model))
        self._heard = Heard("", "", [], False)
        self.ids.speaker_button.speaker = self.model.speaker
        self.model.speaker.compose = self._compose
        self.model.bind(changes=lambda *_a: self.refresh())
        self.model.bind(theme=self._paint)
        self._paint()
        self.refresh()
        finish_each_frame()

    def _paint(self, *_a: Any) -> None:
        """The screen's background is the window's clear colour: one full-screen fill per
        frame fewer (under software rendering each costs some milliseconds)."""
        from kivy.core.window import Window

        Window.clearcolor = (*self.model.theme.background, 1)

    @property
    def screen(self) -> KioskScreen:
        return self.ids.sm.current_screen  # type: ignore[no-any-return]

    def refresh(self) -> None:
        """Render the model's view: pick the screen, set every text in the current language."""
        view: View | None = self.model.view
        tr: Translator = self.model.tr
        self.site_name = self.model.site.name
        self.label_large = tr("Large text")
        self.label_more_time = tr("More time")
        self.label_speaker = tr("Read aloud")
        self.label_next = tr("Next choice")
        self.label_take = tr("Take it")
        if view is None:
            return
        name = SCREEN_OF[view.state]
        screen = self.ids.sm.get_screen(name)
        screen.refresh(view, tr)
        if self.ids.sm.current != name:
            self.ids.sm.current = name
        self.notice = self.notice_text(view, self.model.refusal, tr)
        self.warning = bool(view.warning and view.seconds_left and view.state in TAKES_MORE_TIME)
        self.warning_text = (
            tr("Do you need more time? {seconds} s left.", seconds=view.seconds_left)
            if self.warning
            else ""
        )
        self.speak(name, tr.lang)

    # ------------------------------------------------------------- spoken

    def spoken(self) -> tuple[str, list[str], list[tuple[str, Any]]]:
        """What the screen says in full now, the texts it is made of, and its choices."""
        ids = self.ids
        texts = texts_of(ids.notice_bar) + texts_of(ids.sm.current_screen)
        warning = texts_of(ids.warning_bar)
        choices = [
            *choices_of(ids.sm.current_screen),
            *choices_of(ids.warning_bar),
            *choices_of(ids.footer),
        ]
        said = [sentence(t) for t in texts + warning]
        said.append(self.model.speaker.how_to_choose(len(choices)))
        return " ".join(t for t in said if t), texts, choices

    def _compose(self) -> tuple[str, list[str], list[tuple[str, Any]]]:
        """The speaker button turned speech on: the screen as it is now is what was heard."""
        prompt, texts, choices = self.spoken()
        self._heard = self._heard._replace(texts=texts, warned=self.warning)
        return prompt, texts, choices

    def speak(self, name: str, lang: str) -> None:
        """A new screen (or language) said in full; on the same screen, what is new on it.
        The countdown of the "more time" warning is said once, when the warning comes up."""
        speaker = self.model.speaker
        before = self._heard
        new = (name, lang) != (before.screen, before.lang)
        if not speaker.on:  # nothing said: the prompt is composed when the button asks for it
            if new:
                speaker.screen("", [], new=True)  # (no choice heard on another screen is taken)
                self._heard = Heard(name, lang, [], self.warning)
            else:
                self._heard = before._replace(warned=self.warning)
            return
        prompt, texts, choices = self.spoken()
        speaker.screen(prompt, choices, new=new)
        if not new:
            fresh = [sentence(t) for t in texts if t not in before.texts]
            if self.warning and not before.warned:
                fresh.append(sentence(self.warning_text))
                speaker.point_at("more_time")  # the top right corner gives more time
            speaker.change(" ".join(fresh))
        self._heard = Heard(name, lang, texts, self.warning)

    @staticmethod
    def notice_text(view: View, refusal: UserFacingError | None, tr: Translator) -> str:
        if refusal is not None:
            text = REFUSALS.get(refusal.message_key, N_("Sorry, this is not possible right now."))
            return tr(text, **refusal.params)
        if view.notice:
            notice = NOTICES.get(view.notice)
            if notice is not None:
                params = dict(view.notice_params)
                params["reason"] = result_text(params.pop("code", None), tr)  # never raw text
                params.setdefault("room", view.remaining or "")
                params.setdefault("amount", view.pending_written or "")
                return tr(notice, **params).strip()
        return ""


load_kv(__file__)
