"""What the converter says about one document."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.outcomes import Outcome

__all__ = ["ConversionResult"]


@dataclass
class ConversionResult:
    """The typed outcome of converting one document, with the figures that explain it."""

    source: str                       # input path as given
    outcome: Outcome
    message: str                      # human-readable: why, in a sentence
    output: str | None = None         # path of the ODF written (None when nothing was written)
    format: str | None = None         # what the input really is (sniffed), e.g. "docx"
    target: str | None = None         # the ODF extension written, e.g. "odt"
    input_bytes: int | None = None
    output_bytes: int | None = None
    sha256: str | None = None         # of the input bytes: what "already converted" is keyed on
    seconds: float = 0.0              # wall time spent on this document, sniffing included
    worker: str | None = None         # which worker produced the output (e.g. "w2.1", "10.0.0.5:2003")
    attempts: int = 0                 # LibreOffice calls made (0 when sniffing decided)
    import_filter: str | None = None  # the LibreOffice import filter the output was read with
    repaired: bool = False            # LibreOffice repaired a damaged package to read it
    history: list[str] = field(default_factory=list)   # what happened on earlier attempts

    def to_json(self) -> dict:
        """A flat dict for results.jsonl."""
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data
