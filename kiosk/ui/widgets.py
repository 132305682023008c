"""The screen's building blocks: themed labels and large buttons, pictures of coins, notes,
flags and the key slot (drawn, so that they scale and need no image files)."""

from __future__ import annotations

from kivy.graphics import Color, Line, Rectangle
from kivy.properties import BooleanProperty, ListProperty, ObjectProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.widget import Widget

from kiosk.documents.i18n import Translator
from kiosk.domain.engine import View


class KLabel(Label):  # type: ignore[misc]
    """Body text in the theme's colour and size, wrapped to its width."""

    role = StringProperty("text")  # text, muted, accent, large, huge


class KButton(Button):  # type: ignore[misc]
    """A primary action: large, high-contrast, at least the theme's target size."""

    action = StringProperty("")  # what the button does, for tests and spoken prompts


class QuietButton(KButton):
    """A secondary action (cancel, back)."""


class ChoiceButton(KButton):
    """One answer of a question; the chosen one is drawn in the accent colour."""

    chosen = BooleanProperty(False)


class ReceiptChoice(BoxLayout):  # type: ignore[misc]
    """ "Receipt? Yes / No" on the payment screens of sites that ask; hidden elsewhere."""

    model = ObjectProperty(None)
    question = StringProperty("")
    yes = StringProperty("")
    no = StringProperty("")
    asked = BooleanProperty(False)
    wanted = BooleanProperty(True)  # not answered yet: a receipt is printed

    def show(self, view: View, tr: Translator) -> None:
        self.asked = view.receipt_question
        self.wanted = view.receipt_wanted is not False
        self.question, self.yes, self.no = tr("Receipt?"), tr("Yes"), tr("No")


class Panel(BoxLayout):  # type: ignore[misc]
    """A light block that groups what belongs together."""


class MoneyPicture(Widget):  # type: ignore[misc]
    """A coin (round) or a note (oblong) with its value written on it."""

    text = StringProperty("")
    kind = StringProperty("coin")


class Flag(ButtonBehavior, BoxLayout):  # type: ignore[misc]
    """A language button: the flag, drawn, and the language's own name under it."""

    lang = StringProperty("de")
    name = StringProperty("Deutsch")
    colours = ListProperty([])  # (r, g, b) per stripe; for a cross: field, cross
    pattern = StringProperty("h")  # h: horizontal stripes, v: vertical, cross
    action = StringProperty("")


class FlagCloth(Widget):  # type: ignore[misc]
    """The flag itself."""

    colours = ListProperty([])
    pattern = StringProperty("h")

    def on_kv_post(self, _base: object) -> None:
        self.bind(pos=self.draw, size=self.draw, colours=self.draw, pattern=self.draw)
        self.draw()

    def draw(self, *_a: object) -> None:
        self.canvas.clear()
        if not self.colours:
            return
        x, y, w, h = self.x, self.y, self.width, self.height
        with self.canvas:
            if self.pattern == "cross":
                Color(*self.colours[0])
                Rectangle(pos=(x, y), size=(w, h))
                Color(*self.colours[1])
                Rectangle(pos=(x, y + h * 0.4), size=(w, h * 0.2))
                Rectangle(pos=(x + w * 0.45, y), size=(w * 0.1, h))
            else:
                n = len(self.colours)
                for i, c in enumerate(self.colours):
                    Color(*c)
                    if self.pattern == "v":
                        Rectangle(pos=(x + w * i / n, y), size=(w / n, h))
                    else:
                        Rectangle(pos=(x, y + h * (n - 1 - i) / n), size=(w, h / n))
            Color(0.2, 0.2, 0.2)
            Line(rectangle=(x, y, w, h), width=1)


class SlotPicture(Widget):  # type: ignore[misc]
    """The key going into the slot, with an arrow."""
