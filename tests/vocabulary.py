"""The words a customer may read or hear in one language: what that language's catalogue says,
the languages' own names (the flags), and the proper names of the site file. A word outside
them on a customer's screen came from somewhere that was not translated."""

from __future__ import annotations

import re
from functools import cache

from kiosk.documents.i18n import catalogue
from kiosk.domain.site import Site

WORD = re.compile(r"[^\W\d_]+")


def words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(text)}


@cache
def _catalogue_words(lang: str) -> frozenset[str]:
    found: set[str] = set()
    for msgstr in catalogue(lang).values():
        found |= words(re.sub(r"\{\w+\}", " ", msgstr))
    return frozenset(found)


def vocabulary(lang: str, site: Site) -> set[str]:
    from kiosk.ui.app import LANGUAGE_NAMES

    names = " ".join([site.name, site.address, site.utility_name, site.utility_office,
                      *LANGUAGE_NAMES.values(), site.currency])  # fmt: skip
    return set(_catalogue_words(lang)) | words(names) | _calendar_words(lang)


@cache
def _calendar_words(lang: str) -> frozenset[str]:
    """The names of days and months (the closed screen says when it opens again)."""
    from babel import Locale

    from kiosk.documents.i18n import LOCALES

    loc = Locale.parse(LOCALES[lang])
    names = [*loc.days["format"]["wide"].values(), *loc.months["format"]["wide"].values()]
    return frozenset(words(" ".join(names)))


def foreign(text: str, lang: str, site: Site) -> set[str]:
    """The words of `text` that are not in `lang`'s vocabulary."""
    return words(text) - vocabulary(lang, site)
