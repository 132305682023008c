"""Kivy's settings, made before Kivy initialises: borderless fullscreen at the configured size
and rotation, no cursor, no exit on Escape, no multitouch emulation, no screensaver, and
nothing written to the home directory. Import Kivy only after `configure`."""

from __future__ import annotations

import os
import tempfile

from kiosk.domain.site import UiSection

_done = False


def configure(ui: UiSection, *, windowed: bool = False) -> None:
    """Set Kivy's environment and config (once per process, before any Kivy import)."""
    global _done
    if _done:
        return
    os.environ.setdefault("KIVY_NO_ARGS", "1")  # our command line is ours, not Kivy's
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # our logging; stderr stays stderr
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    os.environ.setdefault("KIVY_NO_CONFIG", "1")
    os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kiosk-kivy-"))
    os.environ.setdefault("SDL_VIDEO_ALLOW_SCREENSAVER", "0")
    from kivy.config import Config

    Config.set("graphics", "width", str(ui.width))
    Config.set("graphics", "height", str(ui.height))
    Config.set("graphics", "rotation", str(ui.rotation))
    Config.set("graphics", "borderless", "0" if windowed else "1")
    Config.set("graphics", "fullscreen", "auto" if ui.fullscreen and not windowed else "0")
    Config.set("graphics", "show_cursor", "1" if windowed else "0")
    Config.set("graphics", "resizable", "0")
    Config.set("graphics", "allow_screensaver", "0")
    Config.set("graphics", "maxfps", "60")
    Config.set("graphics", "multisamples", "0")  # flat shapes and text: antialiasing buys nothing
    Config.set("kivy", "exit_on_escape", "0")
    Config.set("kivy", "pause_on_minimize", "0")
    Config.set("input", "mouse", "mouse,disable_multitouch")
    _done = True
