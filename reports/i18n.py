"""German, English and French for reports, their exports and the dashboard (gettext catalogs).

The reports (batch fidelity, risk scan, run and status reports) and the dashboard speak of the same
things: outcomes, error classes, risk flags, fidelity checks and verdicts, recorded in the ledger
and in results files as codes (`load_error`, `macros_vba`, `page_size`). Their human names live in
one catalog per language here (`reports/locale/<lang>/LC_MESSAGES/reports.po`, message ids are the
codes and the English texts), so a report and the dashboard page beside it name a thing alike; the
dashboard's own catalog holds only its pages' texts and falls back to this one (`catalog`).

Catalogs are .po files compiled in memory on first use (Babel's reader and writer), so a fresh
install needs no build step and no .mo file is kept in the tree.
"""

from __future__ import annotations

import gettext
import io
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2

__all__ = ["LANGUAGES", "DEFAULT_LANGUAGE", "LOCALE_DIR", "TEMPLATES_DIR", "catalog", "translations", "negotiate",
           "language_of", "Names", "names", "environment", "render"]

LANGUAGES = {"de": "Deutsch", "en": "English", "fr": "Français"}
DEFAULT_LANGUAGE = "en"
LOCALE_DIR = Path(__file__).with_name("locale")
TEMPLATES_DIR = Path(__file__).with_name("templates")
#: The message context of export column headers: their English text is the column's key (what
#: scripts read from fidelity.csv and scan.csv), so it must not collide with a word of prose.
COLUMN_CONTEXT = "column"


class _Catalog(gettext.GNUTranslations):
    """A compiled catalog that also knows which ids it names (see `catalog`)."""

    named: frozenset[str] = frozenset()


def catalog(directory: Path, domain: str, language: str,
            fallback: gettext.NullTranslations | None = None) -> gettext.NullTranslations:
    """The catalog `domain` of `language` under `directory`, compiled in memory, falling back to
    `fallback` for what it lacks (no catalog for the language: `fallback` alone, or the ids)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    po = directory / language / "LC_MESSAGES" / f"{domain}.po"
    if not po.is_file():
        return fallback or gettext.NullTranslations()
    with po.open("rb") as f:
        parsed = read_po(f, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, parsed)
    buffer.seek(0)
    found = _Catalog(buffer)
    # which ids it names: a word written alike in both languages ("images") is named, not missing
    found.named = frozenset(m.id for m in parsed if m.id and m.string and isinstance(m.id, str) and not m.context)
    if fallback is not None:
        found.add_fallback(fallback)
    return found


@lru_cache(maxsize=None)
def translations(language: str) -> gettext.NullTranslations:
    """The reports' catalog of `language` (an unknown language: the English message ids)."""
    return catalog(LOCALE_DIR, "reports", language if language in LANGUAGES else DEFAULT_LANGUAGE)


def language_of(value: str | None) -> str:
    """`value` if it is one of our languages, else English (a report is never refused for it)."""
    return value if value in LANGUAGES else DEFAULT_LANGUAGE


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


class Names:
    """Human names of recorded codes and report texts in one language.

    A code the catalog does not name reads as itself with spaces for underscores ("macros_vba" ->
    "macros vba"): a new code is never hidden, only shown plainly until it is named.
    """

    def __init__(self, language: str) -> None:
        self.language = language_of(language)
        self._tr = translations(self.language)

    def __call__(self, text: str) -> str:
        """`text` (an English message id) in this language."""
        return self._tr.gettext(text)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._tr.ngettext(singular, plural, n)

    def _named(self, code: str) -> str | None:
        return self._tr.gettext(code) if code in getattr(self._tr, "named", ()) else None

    def code(self, code: str | None) -> str:
        """The human name of a recorded code (outcome, error class, state, verdict, category)."""
        if not code:
            return ""
        return self._named(code) or code.replace("_", " ")

    def check(self, code: str) -> str:
        """A fidelity check's name ("part:comments" is the text of a document part)."""
        if code.startswith("part:"):
            return self._tr.gettext("text of %(part)s") % {"part": code[5:]}
        named = self._named(code)
        if named:
            return named
        from reports.compare import label
        return label(code)

    def flag(self, code: str) -> str:
        """A risk flag's name."""
        return self.code(code)

    def meaning(self, code: str) -> str:
        """What a risk flag means for a person (its level is a code: `code`)."""
        from reports.risk import RISK_FLAGS
        flag = RISK_FLAGS.get(code)
        return self._tr.gettext(flag.meaning) if flag else ""

    def column(self, key: str) -> str:
        """An export column's header: its key in English, translated otherwise."""
        return self._tr.pgettext(COLUMN_CONTEXT, key)

    def number(self, value, digits: int = 0) -> str:
        """`value` with this language's separators ("–" for none)."""
        from babel.numbers import format_decimal
        if value is None or value == "":
            return "–"
        return format_decimal(value, format="#,##0" + ("." + "0" * digits if digits else ""), locale=self.language)

    def percent(self, share: float | None) -> str:
        from babel.numbers import format_percent
        return "" if share is None else format_percent(share, format="#,##0.0%", locale=self.language)

    def now(self) -> str:
        """The local time, as reports have always printed it (year first in every language)."""
        return time.strftime("%Y-%m-%d %H:%M")


@lru_cache(maxsize=None)
def names(language: str | None) -> Names:
    """The `Names` of `language` (English if None or unknown)."""
    return Names(language_of(language))


@lru_cache(maxsize=None)
def environment(*directories: Path) -> jinja2.Environment:       # (jinja2 imported when first asked)
    """A Jinja environment over `directories` (the reports' templates when none are given):
    HTML escaped automatically, Markdown left as written, blocks without stray blank lines."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    env = Environment(loader=FileSystemLoader([str(d) for d in directories or (TEMPLATES_DIR,)]),
                      autoescape=select_autoescape(["html"], default_for_string=False),
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env


def render(template: str, language: str | None, **context) -> str:
    """A report template rendered in `language`: `_` translates, `n` names codes, checks and flags."""
    n = names(language)
    return environment().get_template(template).render(
        _=n, ngettext=n.ngettext, n=n, lang=n.language, fmt=n.number, **context)


def translator(language: str | None) -> Callable[[str], str]:
    """A `gettext` of `language` (for code that takes one, like the dashboard's table exports)."""
    return names(language)
