"""German, English and French for the dashboard and its exports (gettext catalogs).

The catalogs are kept as .po files beside this module and compiled in memory when the dashboard
starts (Babel's reader and writer), so a fresh install needs no build step. English is the
message ids themselves.
"""

from __future__ import annotations

import gettext
import io
from functools import lru_cache
from pathlib import Path

__all__ = ["LANGUAGES", "DEFAULT_LANGUAGE", "translations", "negotiate"]

LANGUAGES = {"de": "Deutsch", "en": "English", "fr": "Français"}
DEFAULT_LANGUAGE = "en"
LOCALE_DIR = Path(__file__).with_name("locale")


@lru_cache(maxsize=None)
def translations(language: str) -> gettext.NullTranslations:
    """The catalog of `language` (English, or an unknown language: the message ids)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    po = LOCALE_DIR / language / "LC_MESSAGES" / "dashboard.po"
    if not po.is_file():                  # English's catalog holds only human names of recorded codes
        return gettext.NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def negotiate(accept_language: str | None) -> str:
    """The best of our languages for an Accept-Language header (English when none fits)."""
    wanted = []
    for part in (accept_language or "").split(","):
        piece = part.strip().split(";")
        tag = piece[0].strip().lower()
        q = 1.0
        for param in piece[1:]:
            if param.strip().startswith("q="):
                try:
                    q = float(param.strip()[2:])
                except ValueError:
                    q = 0.0
        if tag:
            wanted.append((q, tag))
    for _, tag in sorted(wanted, key=lambda w: -w[0]):
        base = tag.split("-")[0]
        if base in LANGUAGES:
            return base
    return DEFAULT_LANGUAGE
