"""The console's languages: German and English, chosen per person (`staff.lang`), from gettext
catalogues beside the console (`locale/<lang>.po`, read with Babel, as the kiosk's screen
reads its own), with amounts and times formatted per locale (CLDR, through Babel) and shown
in head office's local time."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

from sync.billing import local_text, local_time
from sync.wire.protocol import EXPONENT, amount_text

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
#: the console's languages; German is what a person gets until they choose
LANGS = ("de", "en")
LOCALES = {"de": "de_DE", "en": "en_GB"}
TZ = ZoneInfo("Europe/Berlin")


def N_(msgid: str) -> str:
    """Marks a text for the catalogues where it is defined; translated where it is shown."""
    return msgid


#: each language by its own name (the same in both catalogues)
LANG_NAMES = {"de": N_("Deutsch"), "en": N_("English")}
ROLE_NAMES = {"auditor": N_("auditor"), "operator": N_("operator"), "admin": N_("admin")}
#: what an audit row's change came through
VIA = {"cli": N_("command"), "console": N_("console"), "api": N_("billing interface"),
       "": N_("not recorded")}  # fmt: skip


@cache
def catalogue(lang: str) -> dict[str, str]:
    """msgid -> translation for one language (untranslated and fuzzy entries left out)."""
    with (LOCALE_DIR / f"{lang}.po").open("rb") as f:
        cat = read_po(f, locale=LOCALES[lang])
    return {str(m.id): str(m.string) for m in cat if m.id and m.string and not m.fuzzy}


def language(lang: str | None) -> str:
    """A stored or asked-for language as one the console has (German otherwise)."""
    return lang if lang in LANGS else "de"


def from_accept_language(header: str | None) -> str:
    """The login page's language from the browser's Accept-Language: German unless it
    prefers English (RFC 9110 12.5.4: each range with its weight, 1 when none is given)."""
    best: dict[str, float] = {}
    for i, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and weight > 0:
            # equal weights: the one named first wins
            best.setdefault(primary, weight - i * 1e-6)
    if not best:
        return "de"
    return max(best, key=lambda k: best[k])


class Texts:
    """What one person reads: `t("Fleet")` in their language, `{name}` parameters filled in;
    amounts, times and days as their locale writes them."""

    def __init__(self, lang: str) -> None:
        self.lang = language(lang)
        self.locale = LOCALES[self.lang]

    def __call__(self, msgid: str, **params: Any) -> str:
        text = catalogue(self.lang).get(msgid, msgid)
        return text.format(**params) if params else text

    def money(self, minor: int | None, currency: str | None = None) -> str:
        """12.50 EUR as "12,50 €" (German) or "€12.50" (English); "" for no amount."""
        if isinstance(minor, tuple):  # (minor, currency), as the pages carry a sum
            minor, currency = minor
        if minor is None or currency is None:
            return ""
        if currency not in EXPONENT:  # a currency the fleet does not use: as stored
            return amount_text(minor, currency) if currency.isalpha() else str(minor)
        value = Decimal(minor).scaleb(-EXPONENT[currency])
        return str(format_currency(value, currency, locale=self.locale))

    def either(self, names: list[str] | tuple[str, ...]) -> str:
        """Role names as "operator or admin", translated."""
        said = [self(ROLE_NAMES.get(n, n)) for n in names]
        out = said[-1] if said else ""
        for n in reversed(said[:-1]):
            out = self("{a} or {b}", a=n, b=out)
        return out

    def entries(self, n: int) -> str:
        return self("1 entry") if n == 1 else self("{n} entries", n=self.number(n))

    def number(self, n: float) -> str:
        return str(format_decimal(n, locale=self.locale))

    def when(self, ts: str | None, *, never: str = N_("never")) -> str:
        """A stored UTC time in local time as the locale writes it ("07.12.2026, 10:19:33",
        "7 Dec 2026, 10:19:33"); no time: `never` translated; a time at the ends of the
        calendar or one that is not a time: as local_text writes it (never an error)."""
        if not ts:
            return self(never)
        at = local_time(ts, TZ)
        if at is None or not 1000 <= at.year <= 9999 or at.tzinfo is None:
            return local_text(ts, TZ)
        try:
            return str(format_datetime(at, "medium", tzinfo=at.tzinfo, locale=self.locale))
        except (OverflowError, ValueError):
            return local_text(ts, TZ)

    def day(self, d: date | str) -> str:
        """A local day ("2026-12-07", or a date) as the locale writes it; one that is not a
        day, as it is."""
        try:
            day = date.fromisoformat(d) if isinstance(d, str) else d
        except ValueError:
            return str(d)
        if not 1000 <= day.year <= 9999:
            return day.isoformat()
        return str(format_date(day, "medium", locale=self.locale))

    def typed_day(self, d: date | None) -> str:
        """A day as a filter field shows it for typing again: 07.12.2026, or 2026-12-07."""
        if d is None:
            return ""
        return f"{d.day:02d}.{d.month:02d}.{d.year:04d}" if self.lang == "de" else d.isoformat()

    def age(self, ts: str | None, now: datetime) -> str:
        """How long ago a stored time was, in whole days (hours under a day)."""
        at = local_time(ts, TZ)
        if at is None:
            return ""
        seconds = (now - at).total_seconds()
        if seconds < 0:
            return self("in the future")
        if seconds < 3600:
            return self("under an hour")
        if seconds < 86400:
            return self("{n} h", n=int(seconds // 3600))
        days = int(seconds // 86400)
        return self("1 day") if days == 1 else self("{n} days", n=self.number(days))
