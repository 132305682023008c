"""Colours and sizes of the screen, normal and high-contrast/large-text (EN 301 549, WCAG 2.2):
text at least 24 px, touch targets at least 20 mm and never under 80 px, contrast >= 4.5:1."""

from __future__ import annotations

from dataclasses import dataclass

Rgb = tuple[float, float, float]


def hex_rgb(code: str) -> Rgb:
    code = code.lstrip("#")
    r, g, b = (int(code[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return (r, g, b)


def luminance(c: Rgb) -> float:
    """WCAG 2.2 relative luminance."""

    def lin(v: float) -> float:
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(v) for v in c)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: Rgb, b: Rgb) -> float:
    """WCAG contrast ratio, 1..21."""
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@dataclass(frozen=True)
class Theme:
    name: str
    background: Rgb
    text: Rgb
    muted: Rgb  # secondary text, still >= 4.5:1 on the background
    button: Rgb
    button_text: Rgb
    quiet_button: Rgb  # cancel, back
    quiet_button_text: Rgb
    accent: Rgb  # amounts, the live total
    warning: Rgb
    warning_text: Rgb
    panel: Rgb
    font: int  # body text, px
    large: int  # headings
    huge: int  # the amounts that matter
    target: int  # the shortest side of a touch target, px

    def pairs(self) -> dict[str, tuple[Rgb, Rgb]]:
        """Every foreground/background pair the screens use."""
        return {
            "text": (self.text, self.background),
            "muted": (self.muted, self.background),
            "text on panel": (self.text, self.panel),
            "muted on panel": (self.muted, self.panel),
            "accent": (self.accent, self.background),
            "accent on panel": (self.accent, self.panel),
            "button": (self.button_text, self.button),
            "quiet button": (self.quiet_button_text, self.quiet_button),
            "warning": (self.warning_text, self.warning),
        }


def target_px(mm: float, width_px: int, height_px: int, diagonal_inch: float) -> int:
    """How many pixels `mm` millimetres are on this screen."""
    diagonal_px = (width_px**2 + height_px**2) ** 0.5
    return int(round(mm * diagonal_px / (diagonal_inch * 25.4)))


def themes(width: int, height: int, diagonal_inch: float) -> tuple[Theme, Theme]:
    """(normal, high contrast) for a screen; targets at least 20 mm, never under 80 px."""
    target = max(80, target_px(20, width, height, diagonal_inch))
    normal = Theme(
        name="normal",
        background=hex_rgb("#f4f3ee"),
        text=hex_rgb("#1b2733"),
        muted=hex_rgb("#4a5561"),
        button=hex_rgb("#0b4f8a"),
        button_text=hex_rgb("#ffffff"),
        quiet_button=hex_rgb("#5a5f66"),
        quiet_button_text=hex_rgb("#ffffff"),
        accent=hex_rgb("#0a5a36"),
        warning=hex_rgb("#8a4b00"),
        warning_text=hex_rgb("#ffffff"),
        panel=hex_rgb("#ffffff"),
        font=28,
        large=40,
        huge=64,
        target=target,
    )
    high = Theme(
        name="high_contrast",
        background=hex_rgb("#000000"),
        text=hex_rgb("#ffffff"),
        muted=hex_rgb("#e6e6e6"),
        button=hex_rgb("#ffd400"),
        button_text=hex_rgb("#000000"),
        quiet_button=hex_rgb("#ffffff"),
        quiet_button_text=hex_rgb("#000000"),
        accent=hex_rgb("#7dff9a"),
        warning=hex_rgb("#ffd400"),
        warning_text=hex_rgb("#000000"),
        panel=hex_rgb("#1a1a1a"),
        font=36,
        large=50,
        huge=80,
        target=round(target * 1.2),
    )
    return normal, high
