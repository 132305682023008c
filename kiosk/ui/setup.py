"""Kivy's settings, made before Kivy initialises: borderless fullscreen at the configured size
and rotation, no cursor, no exit on Escape, no multitouch emulation, no screensaver, and
nothing written to the home directory. Import Kivy only after `configure`."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import tempfile

from kiosk.domain.site import UiSection

_done = False
#: the size the window was made (the screen's, fullscreen): what the screens lay out for
screen_size: tuple[int, int] | None = None

log = logging.getLogger(__name__)


def display_size() -> tuple[int, int] | None:
    """The X screen's size in pixels (of $DISPLAY), or None when there is none to ask."""
    name = ctypes.util.find_library("X11")
    if not name or not os.environ.get("DISPLAY"):
        return None
    x11 = ctypes.CDLL(name)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultScreen.argtypes = [ctypes.c_void_p]
    x11.XDisplayWidth.argtypes = x11.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(None)
    if not dpy:
        return None
    try:
        screen = x11.XDefaultScreen(dpy)
        return int(x11.XDisplayWidth(dpy, screen)), int(x11.XDisplayHeight(dpy, screen))
    finally:
        x11.XCloseDisplay(dpy)


def configure(ui: UiSection, *, windowed: bool = False) -> None:
    """Set Kivy's environment and config (once per process, before any Kivy import).

    Fullscreen, the window is made the size of the screen it is on, whatever [ui] says (a
    1280x800 window on a 1280x1024 panel was letterboxed, its top cut off): the screens lay
    themselves out for it, and the touch targets keep their size in millimetres."""
    global _done, screen_size
    if _done:
        return
    width, height = ui.width, ui.height
    if ui.fullscreen and not windowed:
        real = display_size()
        if real is not None:  # (the panel's own size: Kivy turns what it draws by rotation)
            if real != (width, height):
                log.warning("[ui] says %dx%d, the screen is %dx%d: laid out for the screen",
                            width, height, *real)  # fmt: skip
            width, height = real
    screen_size = (width, height)
    os.environ.setdefault("KIVY_NO_ARGS", "1")  # our command line is ours, not Kivy's
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # our logging; stderr stays stderr
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    os.environ.setdefault("KIVY_NO_CONFIG", "1")
    os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kiosk-kivy-"))
    os.environ.setdefault("SDL_VIDEO_ALLOW_SCREENSAVER", "0")
    from kivy.config import Config

    Config.set("graphics", "width", str(width))
    Config.set("graphics", "height", str(height))
    Config.set("graphics", "position", "custom")  # at the screen's corner, wherever it is
    Config.set("graphics", "left", "0")
    Config.set("graphics", "top", "0")
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
