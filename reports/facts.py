"""What a reader measured in one document: the neutral shape both sides of a comparison share.

A reader of a source format (docx, xls, ppt …) and a reader of the ODF output each fill one
`Facts`; `reports.compare` then compares the two. A reader fills only what it can measure: a
feature missing from `counts` was not measured (a legacy binary reader sees less than an OOXML
one), which is different from a feature measured as 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converters.formats import Family
from reports.text import TextBag

__all__ = ["Facts", "TableFacts", "SheetFacts", "SlideFacts", "PageSetup", "Value"]

#: A typed cell value: ("n", float) numbers, dates and times as serial days; ("s", str);
#: ("b", bool); ("e", "#DIV/0!") error values. Empty cells are absent.
Value = tuple[str, Any]


@dataclass
class TableFacts:
    """One table of a text document, in document order (nested tables follow their parent)."""

    rows: int
    cols: int
    text: TextBag


@dataclass
class PageSetup:
    """Size and margins of the pages of one section, in millimetres.

    Top and bottom margins are measured to the body text as Word does: in ODF the page margin ends
    at the header, so an ODF reader adds the header's (footer's) height to it.
    """

    width: float
    height: float
    margins: tuple[float, float, float, float] | None = None     # top, bottom, left, right

    @property
    def orientation(self) -> str:
        return "landscape" if self.width > self.height else "portrait"


@dataclass
class SheetFacts:
    """One worksheet: its cells (typed values) and what sits on it."""

    name: str
    hidden: bool = False
    cells: dict[tuple[int, int], Value] = field(default_factory=dict)   # (row, col), 0-based
    formulas: dict[tuple[int, int], str] = field(default_factory=dict)  # position -> formula text ("" if unknown)
    uncached: set[tuple[int, int]] = field(default_factory=set)        # formula cells without a stored value
    counts: dict[str, int] = field(default_factory=dict)                # merged, validations, comments, …
    truncated: bool = False                                             # stopped reading at the row limit
    # (row1, col1, row2, col2) of pivot output
    pivot_ranges: list[tuple[int, int, int, int]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)                   # text of each cell comment (note)

    @property
    def used_range(self) -> tuple[int, int]:
        """(rows, columns) from A1 to the last non-empty cell."""
        if not self.cells and not self.formulas:
            return (0, 0)
        keys = list(self.cells) + list(self.formulas)
        return (max(r for r, _ in keys) + 1, max(c for _, c in keys) + 1)


@dataclass
class SlideFacts:
    """One slide of a presentation, in show order."""

    text: TextBag
    hidden: bool = False
    shapes: dict[str, int] = field(default_factory=dict)     # picture, table, chart, media, shape, group, …
    notes: TextBag = field(default_factory=TextBag)
    transition: bool = False
    animations: int = 0
    comments: list[str] = field(default_factory=list)       # text of each comment (and reply) on the slide


@dataclass
class Facts:
    """Everything one reader measured in one document."""

    family: Family
    reader: str                                         # e.g. "ooxml-word", "odf-text", "doc-binary"
    text: TextBag = field(default_factory=TextBag)      # all text: body, tables, boxes, notes, comments …
    parts: dict[str, TextBag] = field(default_factory=dict)   # text of parts checked on their own
    counts: dict[str, int] = field(default_factory=dict)      # feature -> count (only what was measured)
    headings: dict[int, int] | None = None              # outline level -> paragraphs
    tables: list[TableFacts] | None = None
    page: PageSetup | None = None                       # the first section's page setup
    pages: list[PageSetup] | None = None                # every section's page setup, in document order
    sheets: list[SheetFacts] | None = None
    slides: list[SlideFacts] | None = None
    metadata: dict[str, str] = field(default_factory=dict)    # title, subject, author, created, modified
    date1904: bool = False                              # spreadsheets: serial dates count from 1904
    cached_values: str | None = None                    # spreadsheets: why stored formula values cannot be trusted
    notes: list[str] = field(default_factory=list)      # what the reader could not measure, and why
