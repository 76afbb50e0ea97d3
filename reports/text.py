"""Text as fidelity sees it: normalised words, counts, and how much of one text another keeps.

Texts are compared as *multisets of words*, not as sequences. Word and ODF store some text in
different places (a footnote's text sits in its own part in .docx and at the citation point in
.odt; headers live in styles.xml; text boxes are anchored elsewhere), so a sequence diff would
report moved text as lost. A multiset comparison is also linear in the length of the text, where
a sequence diff (difflib) is quadratic at worst: a 300-page document costs milliseconds.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["TextBag", "bag", "similarity", "containment", "lost_words", "normalise"]

_WORD = re.compile(r"\w+", re.UNICODE)
# Characters that carry no text: soft hyphen, zero-width (non-)joiners and spaces, BOM, word joiner,
# and Word's private field/anchor marks when a legacy reader lets one through.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), None)


def normalise(text: str) -> str:
    """Unicode NFKC (ligatures, full-width forms), case-folded, invisible characters removed."""
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()


@dataclass
class TextBag:
    """The words of a text (a multiset) and its character count, without the text itself."""

    words: Counter = field(default_factory=Counter)
    chars: int = 0                       # characters that are not white space

    @property
    def word_count(self) -> int:
        return sum(self.words.values())

    def add(self, text: str) -> "TextBag":
        """Add the words of `text`; returns self."""
        if text:
            norm = normalise(text)
            self.words.update(_WORD.findall(norm))
            self.chars += sum(1 for ch in norm if not ch.isspace())
        return self

    def __iadd__(self, other: "TextBag") -> "TextBag":
        self.words.update(other.words)
        self.chars += other.chars
        return self


def bag(*texts: str) -> TextBag:
    """A TextBag of the given texts."""
    result = TextBag()
    for text in texts:
        result.add(text)
    return result


def similarity(a: TextBag, b: TextBag) -> float:
    """Dice coefficient of the two word multisets: 1.0 when both hold the same words, 0.0 when none shared.

    Two empty texts are identical (1.0).
    """
    total = a.word_count + b.word_count
    if total == 0:
        return 1.0
    common = sum((a.words & b.words).values())
    return 2.0 * common / total


def containment(part: TextBag, whole: TextBag) -> float:
    """Share of the words of `part` found in `whole` (1.0 when `part` is empty).

    Used for parts whose place differs between formats (comments, footnotes, headers, text boxes,
    SmartArt): their words must be somewhere in the output.
    """
    n = part.word_count
    if n == 0:
        return 1.0
    return sum((part.words & whole.words).values()) / n


def lost_words(a: TextBag, b: TextBag, limit: int = 8) -> list[str]:
    """Words of `a` that `b` lacks, the most frequent first (for a deduction's explanation)."""
    missing = a.words - b.words
    return [w for w, _ in missing.most_common(limit)]
