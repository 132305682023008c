"""What every screen has: the view-model, a title and a body, and `refresh` from a view."""

from __future__ import annotations

from pathlib import Path

from kivy.lang import Builder
from kivy.properties import ObjectProperty, StringProperty
from kivy.uix.screenmanager import Screen

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import View


def load_kv(py_file: str) -> None:
    """Load the .kv that sits beside a screen's .py (once)."""
    path = str(Path(py_file).with_suffix(".kv"))
    if path not in Builder.files:
        Builder.load_file(path)


class KioskScreen(Screen):  # type: ignore[misc]
    model = ObjectProperty(None)
    title = StringProperty("")
    body = StringProperty("")

    def refresh(self, view: View, tr: Translator) -> None:
        """Set the texts from the engine's view in the current language."""
        raise NotImplementedError
