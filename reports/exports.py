"""Tables as people open them: CSV and ODS in their language, CSV safe from formulas.

Exports in English keep the recorded codes (`review`, `load_error`, `macros_vba`) and the column
keys as headers: they are English words already, and what scripts and `umstieg rerun
--error-class` read. In German and French, column headers and recorded codes are given in words
from the same catalogs as the reports and the dashboard (reports.i18n).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from reports.i18n import DEFAULT_LANGUAGE, names

__all__ = ["FORMULA_START", "csv_cell", "neutralised", "localised", "named", "CODE_KINDS"]

#: A text cell starting with one of these is a formula to a spreadsheet program (CSV injection):
#: `=HYPERLINK(...)`, `+cmd|' /C calc'!A0`, `@SUM(...)`; a tab or carriage return hides the rest.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: How a column's cells are named: a code (outcome, verdict, category, error class, level), a
#: fidelity check, or comma-separated risk flags.
CODE_KINDS = ("code", "check", "flags")


def csv_cell(value):
    """A text value as a CSV cell that no spreadsheet program runs: a leading apostrophe makes a
    would-be formula text (OWASP's advice); numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def neutralised(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell and header neutralised (csv_cell), for writing as CSV."""
    out = frame.copy()
    out.columns = [csv_cell(c) for c in out.columns]
    for i in range(len(out.columns)):
        series = out.iloc[:, i]
        if not pd.api.types.is_numeric_dtype(series):
            # (pandas takes a Series here, as its documentation says; pandas-stubs leaves Series out)
            out.isetitem(i, series.map(csv_cell))  # type: ignore[arg-type]
    if out.index.dtype == object:
        out.index = out.index.map(csv_cell)
    return out


def localised(frame: pd.DataFrame, language: str | None, codes: dict[str, str] | None = None, *,
              coded_headers: Iterable[str] = (), coded_index: bool = False) -> pd.DataFrame:
    """`frame` for a reader of `language`: headers translated (English: the keys as they are),
    cells of `codes` columns ({column: "code" | "check" | "flags"}) named in words, and the codes
    among the headers (`coded_headers`, e.g. verdict columns of a cross table) and, if
    `coded_index`, of the index named too. English returns `frame` unchanged."""
    n = names(language)
    if n.language == DEFAULT_LANGUAGE:
        return frame
    out = named(frame, n.language, codes or {})
    coded = set(coded_headers)
    out.columns = [n.code(c) if c in coded else n.column(str(c)) for c in out.columns]
    if coded_index:
        out.index = out.index.map(lambda v: n.code(v) if isinstance(v, str) else v)
    if out.index.name:
        out.index.name = n.column(str(out.index.name))
    return out


def named(frame: pd.DataFrame, language: str | None, codes: dict[str, str]) -> pd.DataFrame:
    """`frame` with the cells of its `codes` columns ({column: "code" | "check" | "flags"}) named in
    words of `language`; English returns `frame` unchanged (see the module's docstring)."""
    n = names(language)
    if n.language == DEFAULT_LANGUAGE:
        return frame
    out = frame.copy()
    name_of = {"code": n.code, "check": n.check, "flags": lambda v: ", ".join(n.flag(f.strip()) for f in v.split(","))}
    for column, kind in codes.items():
        if column in out.columns:
            out[column] = out[column].map(lambda v, f=name_of[kind]: f(v) if isinstance(v, str) and v else v)
    return out
