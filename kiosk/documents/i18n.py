"""The screen's languages: gettext catalogues (`locale/<lang>.po`, read with Babel) and
amounts, numbers and dates formatted per locale (CLDR, through Babel)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from babel.dates import format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_currency

from kiosk.domain.money import CURRENCY_EXPONENT, Money

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
#: the languages of the screen, in the order of their buttons; German is the default
LANGUAGES = ("de", "en", "fr", "nl")
LOCALES = {"de": "de_DE", "en": "en_GB", "fr": "fr_FR", "nl": "nl_NL"}
_MONEY_TEXT = re.compile(r"^(-?\d+\.\d+) ([A-Z]{3})$")


def N_(msgid: str) -> str:
    """Marks a text for the catalogues where it is defined; translated where it is shown."""
    return msgid


@cache
def catalogue(lang: str) -> dict[str, str]:
    """msgid -> translation for one language (untranslated entries are left out)."""
    with (LOCALE_DIR / f"{lang}.po").open("rb") as f:
        cat = read_po(f, locale=LOCALES[lang])
    return {str(m.id): str(m.string) for m in cat if m.id and m.string and not m.fuzzy}


def money_text(amount: Money, lang: str) -> str:
    """12.50 EUR as a customer in `lang` reads it: "12,50 €", "€12.50", "12,50 €", "€ 12,50"."""
    return _money_text(amount.minor, amount.currency, lang)


@lru_cache(maxsize=4096)
def _money_text(minor: int, currency: str, lang: str) -> str:
    """(Formatting with CLDR's patterns costs some 50 µs; the screen shows the same amounts
    again and again, a dozen per frame while coins come in.)"""
    value = Decimal(minor).scaleb(-CURRENCY_EXPONENT[currency])
    return str(format_currency(value, currency, locale=LOCALES[lang]))


class Translator:
    """`tr("Credit on your key")` in the current language; parameters formatted per locale."""

    def __init__(self, lang: str = "de") -> None:
        self.lang = lang

    def set(self, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"no catalogue for language {lang!r}")
        self.lang = lang

    def __call__(self, msgid: str, **params: Any) -> str:
        text = catalogue(self.lang).get(msgid, msgid)
        return text.format(**{k: self.value(v) for k, v in params.items()}) if params else text

    def value(self, v: Any) -> str:
        if isinstance(v, Money):
            return money_text(v, self.lang)
        if isinstance(v, datetime):
            return str(format_datetime(v, "EEEE d. MMMM, HH:mm", locale=LOCALES[self.lang]))
        if isinstance(v, str) and (m := _MONEY_TEXT.match(v)):  # "5.00 EUR" from the engine
            return money_text(Money.from_decimal(Decimal(m.group(1)), m.group(2)), self.lang)
        return str(v)
