"""German, English and French for the dashboard and its exports (gettext catalogs).

The dashboard's catalog (locale/ beside this module) holds its pages' texts; the human names of
the codes the ledger records (outcomes, error classes, risk flags, fidelity checks, verdicts) and
everything else the reports say come from the reports' catalog (reports.i18n), which it falls back
to, so a page and the report it links to name a thing alike. English is the message ids themselves.
"""

from __future__ import annotations

import gettext
from functools import lru_cache
from pathlib import Path

from reports import i18n as shared
from reports.i18n import DEFAULT_LANGUAGE, LANGUAGES, negotiate

__all__ = ["LANGUAGES", "DEFAULT_LANGUAGE", "translations", "negotiate"]

LOCALE_DIR = Path(__file__).with_name("locale")


@lru_cache(maxsize=None)
def translations(language: str) -> gettext.NullTranslations:
    """The catalog of `language` (English, or an unknown language: the message ids)."""
    return shared.catalog(LOCALE_DIR, "dashboard", language, fallback=shared.translations(language))
