"""What every kv rule draws with: the theme and the language (one screen per process).

kv rules bind to `style.theme.*` and `style.lang` (`#:import style kiosk.ui.style.current`);
the view-model sets them. (Kivy's `app` in kv is a proxy that keeps the first app it saw,
so rules cannot rely on it when a process builds more than one screen, as the tests do.)
"""

from __future__ import annotations

from kivy.event import EventDispatcher
from kivy.properties import BooleanProperty, ObjectProperty, StringProperty

from kiosk.ui.theme import themes


class Style(EventDispatcher):  # type: ignore[misc]
    theme = ObjectProperty(None, rebind=True)  # rules bind through it to its fields
    lang = StringProperty("de")
    high_contrast = BooleanProperty(False)
    speech = BooleanProperty(False)  # spoken prompts on: the speech bar is shown
    speech_offered = BooleanProperty(True)  # the site offers them: the speaker button is shown


current = Style(theme=themes(1280, 800, 15.6)[0])  # until a screen model sets its own
