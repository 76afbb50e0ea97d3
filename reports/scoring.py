"""Score and verdict: what a fidelity comparison's deductions add up to, and the settings behind it.

A document starts at 100 points; each check that finds a loss deducts up to its *weight*, in
proportion to how much was lost (a table of three gone costs a third of the tables' weight). The
verdict follows from the score: **identical** (nothing deducted), **minor** (score at or above
`minor_at`), **review** (at or above `review_at`), **broken** (below). An invalid ODF package, or
most of the text gone, is broken whatever the score.

Some losses are never small, however small their share: a slide, table, picture, chart or embedded
object gone, a sheet gone, a cell whose value or formula changed, a paragraph's worth of words
gone (`CRITICAL_LOSSES`, `LOST_WORDS_FOR_REVIEW`). In a long presentation one slide is a few
points, but it is one slide nobody will see again: such a document is judged **review** at best.
So is a document LibreOffice had to repair before it could read it.

Weights and thresholds are configuration (`FidelitySettings`, from keyword arguments or
`UMSTIEG_FIDELITY_*` environment variables).
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from typing import Literal, cast

from pydantic import BaseModel, Field, field_validator, model_validator

__all__ = ["Verdict", "FidelitySettings", "DEFAULT_WEIGHTS", "CRITICAL_LOSSES", "LOST_WORDS_FOR_REVIEW", "verdict_for",
           "is_critical_loss"]


class Verdict(StrEnum):
    """How well a document survived its conversion, in one word."""

    IDENTICAL = "identical"   # nothing measured differs
    MINOR = "minor"           # small losses: no action needed
    REVIEW = "review"         # a person should look at it
    BROKEN = "broken"         # content was lost: keep the original, convert by hand


#: Points a check deducts when what it measures is entirely lost.
DEFAULT_WEIGHTS: dict[str, float] = {
    # every family
    "text": 50, "package": 100, "metadata": 2, "not_measured": 10,
    # parts whose words must be somewhere in the output
    "part:comments": 10, "part:footnotes and endnotes": 10, "part:headers and footers": 5,
    "part:text boxes": 5, "part:SmartArt": 5, "part:speaker notes": 10,
    # word processing
    "paragraphs": 3, "headings": 5, "lists": 3, "tables": 15, "table_shapes": 8, "table_text": 10,
    "images": 15, "images_inline": 2, "images_floating": 2, "objects": 10, "charts": 10,
    "equations": 10, "text_boxes": 5, "shapes": 3, "footnotes": 10, "endnotes": 10, "comments": 10,
    "changes": 10, "format_changes": 2, "fields": 3, "bookmarks": 2, "hyperlinks": 5, "sections": 2,
    "headers": 5, "footers": 5, "page_size": 5, "margins": 1,
    # spreadsheets
    "sheets": 40, "sheet_names": 5, "hidden_sheets": 3, "values": 40, "formulas": 30,
    "recalculated": 30, "new_errors": 20, "used_range": 5, "merged": 5, "validations": 5,
    "conditional_formats": 5, "autofilters": 3, "pivot_tables": 15, "pivot_values": 10,
    "names": 5, "protected": 3, "structure_protected": 2,
    # presentations
    "slides": 30, "slide_text": 20, "hidden_slides": 3, "pictures": 15, "media": 10, "smartart": 0,
    "groups": 0, "connectors": 2, "notes": 10, "transitions": 3, "animations": 3,
    # visual tier
    "pages": 10, "visual": 15,
}


#: Checks whose deduction for a loss makes a document "review" at best. Counted things (slides,
#: tables, pictures ...) only when the output has fewer than the source; cell checks (values,
#: formulas, recalculated values, new errors) whenever they deduct.
CRITICAL_LOSSES = frozenset({"slides", "tables", "images", "pictures", "charts", "objects", "media", "equations",
                             "sheets", "values", "formulas", "recalculated", "new_errors"})
_COUNTED = frozenset({"slides", "tables", "images", "pictures", "charts", "objects", "media", "equations"})

#: Words of the source missing from the output (as a multiset) that make a document "review" at best:
#: a short paragraph. Measured on the corpus's conversions: LibreOffice loses none in nearly every
#: document, one word in a few (a field result, a symbol).
LOST_WORDS_FOR_REVIEW = 5


def is_critical_loss(name: str, source, output, points: float) -> bool:
    """Whether a check (by name, both sides and its deduction) records a loss that needs a person."""
    if points <= 0 or name not in CRITICAL_LOSSES:
        return False
    if name in _COUNTED:
        return isinstance(source, int) and isinstance(output, int) and output < source
    return True


#: Which documents get the visual check.
VisualTier = Literal["none", "flagged", "all"]

class FidelitySettings(BaseModel):
    """How fidelity is measured and judged."""

    minor_at: float = Field(default_factory=lambda: float(os.environ.get("UMSTIEG_FIDELITY_MINOR_AT", 95)),
                            ge=0, le=100, description="lowest score still judged 'minor'")
    review_at: float = Field(default_factory=lambda: float(os.environ.get("UMSTIEG_FIDELITY_REVIEW_AT", 60)),
                             ge=0, le=100, description="lowest score judged 'review'; below it: 'broken'")
    weights: dict[str, float] = Field(default_factory=dict,
                                      description="weights that replace the defaults (check name -> points)")
    visual: VisualTier = Field(
        default_factory=lambda: cast(VisualTier, os.environ.get("UMSTIEG_FIDELITY_VISUAL", "flagged")),
        validate_default=True,      # a value from the environment is checked like one from a file
        description="which documents get the visual check: none, those the structural check flagged "
                    "(verdict review or broken), or all")
    visual_sample: float = Field(default_factory=lambda: float(os.environ.get("UMSTIEG_FIDELITY_VISUAL_SAMPLE", 0)),
                                 ge=0, le=1, validate_default=True,
                                 description="share of the other documents that get it too (0..1)")
    visual_pages: int = Field(default=12, ge=1, description="pages rendered and compared per document")
    visual_dpi: int = Field(default=40, ge=10, le=300, description="resolution of the page images compared")
    max_rows: int = Field(default=100_000, ge=1, description="rows per sheet compared cell by cell")

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_from_env(cls, value: object) -> object:
        if not value and os.environ.get("UMSTIEG_FIDELITY_WEIGHTS"):
            return json.loads(os.environ["UMSTIEG_FIDELITY_WEIGHTS"])
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "FidelitySettings":
        if self.review_at > self.minor_at:
            raise ValueError(f"review_at ({self.review_at}) must not be above minor_at ({self.minor_at})")
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown fidelity checks in weights: {', '.join(sorted(unknown))}")
        return self

    def weight(self, check: str) -> float:
        """Points `check` deducts at most."""
        return self.weights.get(check, DEFAULT_WEIGHTS.get(check, 0.0))


def verdict_for(score: float, deductions: int, settings: FidelitySettings, *, broken: bool = False,
                review: bool = False) -> Verdict:
    """The verdict for a score with `deductions` deductions; `broken` forces it (invalid package, text
    gone); `review` caps it at review (a critical loss, a repaired file)."""
    if broken:
        return Verdict.BROKEN
    if deductions == 0 and not review:
        return Verdict.IDENTICAL
    if score >= settings.minor_at and not review:
        return Verdict.MINOR
    if score >= settings.review_at:
        return Verdict.REVIEW
    return Verdict.BROKEN
