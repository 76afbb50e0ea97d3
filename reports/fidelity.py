"""Fidelity of one conversion: what the ODF output kept of its source, as a score and a verdict.

Three tiers, cheapest first:
1. **structure** — both files read by format-specific readers (reports.wordprocessing,
   reports.spreadsheets, reports.presentations, reports.legacy) and compared check by check
   (reports.compare);
2. **package** — the output is a valid ODF package (converters.odf);
3. **visual** — both rendered to page images by LibreOffice and compared page by page
   (reports.visual); it costs two more LibreOffice calls, so by default it runs only on documents
   the structural tier flags (verdict review or broken) and on a sample of the others.

Never raises for a bad document: a check that cannot be made is recorded with its reason
(`status: "failed"`), and the batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from enum import StrEnum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from converters.formats import FORMATS, Family, OfficeFormat
from converters.odf import check_package
from converters.result import ConversionResult
from core.outcomes import Outcome
from reports.compare import Check, compare
from reports.facts import Facts
from reports.legacy import NotReadable, read_doc, read_ppt, read_rtf, read_wordml
from reports.presentations import read_odp, read_pptx
from reports.scoring import LOST_WORDS_FOR_REVIEW, FidelitySettings, Verdict, is_critical_loss, verdict_for
from reports.spreadsheets import read_ods, read_xls, read_xlsb, read_xlsx
from reports.text import similarity
from reports.wordprocessing import read_docx, read_odt

__all__ = ["FidelityRecord", "Status", "assess", "assess_pair", "NotComparable", "make_assessor", "read_facts",
           "Renderer", "SOURCE_RENDER_NOTE"]

log = logging.getLogger("umstieg.reports")

#: Renders a document (source or ODF) to PDF on a LibreOffice worker: render(path, pdf, format, pages),
#: `pages` the most pages to export (None: the whole document).
Renderer = Callable[[Path, Path, OfficeFormat, int | None], None]

SOURCE_RENDER_NOTE = ("The source's page images are LibreOffice's reading of the file, not how Microsoft Office "
                      "shows it: they show what LibreOffice's ODF export changed, not differences to Word, "
                      "Excel or PowerPoint.")

_READERS: dict[str, Callable[..., Facts]] = {
    "docx": read_docx, "docm": read_docx, "dotx": read_docx, "dotm": read_docx,
    "doc": read_doc, "dot": read_doc, "rtf": read_rtf, "wordml": read_wordml,
    "doc6": read_doc, "dot6": read_doc,          # read_doc says why it does not read Word 6.0/95
    "xlsx": read_xlsx, "xlsm": read_xlsx, "xltx": read_xlsx, "xltm": read_xlsx,
    "xls": read_xls, "xlt": read_xls, "xlsb": read_xlsb,
    "xls5": read_xls, "xlt5": read_xls, "xls4": read_xls,    # xlrd reads BIFF2 to BIFF8
    "pptx": read_pptx, "pptm": read_pptx, "ppsx": read_pptx, "ppsm": read_pptx, "potx": read_pptx,
    "potm": read_pptx, "ppt": read_ppt, "pps": read_ppt, "pot": read_ppt,
    "odt": read_odt, "ott": read_odt, "ods": read_ods, "ots": read_ods, "odp": read_odp, "otp": read_odp,
}
_ODF_READERS = {Family.TEXT: read_odt, Family.SPREADSHEET: read_ods, Family.PRESENTATION: read_odp}


class Status(StrEnum):
    """Whether a fidelity record holds a measurement."""

    ASSESSED = "assessed"           # score and verdict are set
    FAILED = "failed"               # measuring failed: `reason` says why; the conversion itself stands
    NOT_ASSESSED = "not_assessed"   # nothing to measure: the document was not converted


@dataclass
class FidelityRecord:
    """The machine-readable fidelity of one document (the `fidelity` key of results.jsonl)."""

    status: str
    score: float | None = None
    verdict: Verdict | None = None
    checks: list[Check] = field(default_factory=list)
    reason: str | None = None
    reader: str | None = None                   # which readers compared it, e.g. "ooxml-word/odf-text"
    notes: list[str] = field(default_factory=list)
    visual: dict | None = None
    risks: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    text_similarity: float | None = None        # share of the source's words the output holds (Dice)
    source_words: int = 0
    words_lost: int | None = None               # words of the source the output lacks (multiset difference)
    repaired: bool = False                      # LibreOffice repaired the source to read it: review at best
    source_comments: int | None = field(default=None, repr=False)   # for the visual tier's safety rule

    @property
    def deductions(self) -> list[Check]:
        return [c for c in self.checks if c.points > 0]

    def to_json(self) -> dict:
        data: dict = {"status": str(self.status), "score": self.score,
                      "verdict": self.verdict.value if self.verdict else None,
                      "deductions": [{"check": c.name, "points": round(c.points, 2), "detail": c.detail}
                                     for c in sorted(self.deductions, key=lambda c: -c.points)]}
        if self.reason:
            data["reason"] = self.reason
        if self.checks:
            data["checks"] = [c.to_json() for c in self.checks]
        if self.text_similarity is not None:
            data["text_similarity"] = round(self.text_similarity, 4)
        if self.words_lost is not None:
            data["words_lost"] = self.words_lost
        if self.repaired:
            data["repaired"] = True
        for key in ("reader", "visual"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.notes:
            data["notes"] = self.notes
        if self.risks:
            data["risks"] = self.risks
        data["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        return data


def read_facts(path: Path, fmt: OfficeFormat, settings: FidelitySettings | None = None) -> Facts:
    """What the reader for `fmt` measures in `path` (raises NotReadable or the reader's error)."""
    reader = _READERS.get(fmt.name)
    if reader is None:
        raise NotReadable(f"no reader for {fmt.description}")
    if fmt.family is Family.SPREADSHEET:
        return reader(path, max_rows=(settings or FidelitySettings()).max_rows)
    return reader(path)


def assess(source: Path, output: Path, fmt: OfficeFormat, settings: FidelitySettings | None = None, *,
           render: Renderer | None = None, visual: bool | None = None, thumbs: Path | None = None,
           key: str | None = None, repaired: bool = False, views: bool = True) -> FidelityRecord:
    """Compare `source` (of format `fmt`) with its ODF `output`.

    `render` enables the visual tier; `visual` forces it on or off (default: as settings say, from
    the structural verdict). Thumbnails of the first pages go to `thumbs` as `<key>-source.png`
    and `<key>-output.png`, and with `views` the dashboard viewer's large pictures beside them
    (`<key>-source-view.png`, `<key>-output-view.png`). `repaired`: LibreOffice repaired the source
    to read it, so the verdict is "review" at best (what it dropped while repairing cannot be
    measured against a reader that failed on the same damage).
    """
    settings = settings or FidelitySettings()
    record = FidelityRecord(status=Status.ASSESSED, repaired=repaired)
    if repaired:
        record.notes.append("LibreOffice repaired the damaged file before it could read it: what it left out while "
                            "repairing cannot be measured, so the verdict is review at best")
    started = time.perf_counter()
    try:
        _structural(source, output, fmt, settings, record)
    except Exception as exc:  # noqa: BLE001 - a failed measurement must not stop the batch
        log.debug("fidelity of %s failed:\n%s", source, traceback.format_exc())
        record.status = Status.FAILED
        record.reason = f"the structural check failed: {type(exc).__name__}: {_short(exc)}"
        record.seconds["structural"] = time.perf_counter() - started
        return record
    record.seconds["structural"] = time.perf_counter() - started
    _judge(record, settings, fmt.family)

    if render is not None and _wants_visual(record, settings, visual, key or str(source)):
        from reports.visual import visual_checks

        started = time.perf_counter()
        try:
            checks, info = visual_checks(source, output, fmt, render, settings, thumbs=thumbs,
                                         key=key or hashlib.sha256(str(source).encode()).hexdigest()[:16],
                                         comments=record.source_comments, views=views)
            record.checks += checks
            record.visual = info
        except Exception as exc:  # noqa: BLE001 - the structural result stands without the pictures
            record.visual = {"status": "failed", "reason": f"{type(exc).__name__}: {_short(exc)}"}
        record.seconds["visual"] = time.perf_counter() - started
        _judge(record, settings, fmt.family)
    return record


def _structural(source: Path, output: Path, fmt: OfficeFormat, settings: FidelitySettings,
                record: FidelityRecord) -> None:
    problems = check_package(output)
    package = Check("package", "—", "valid" if not problems else "invalid")
    if problems:
        package.points = settings.weight("package")
        package.detail = "the ODF package is invalid: " + "; ".join(problems[:3])
        record.checks.append(package)
        return
    record.checks.append(package)
    out_facts = _ODF_READERS[fmt.family](output, **({"max_rows": settings.max_rows}
                                                     if fmt.family is Family.SPREADSHEET else {}))
    try:
        src_facts = read_facts(source, fmt, settings)
    except Exception as exc:  # noqa: BLE001 - a source the reader cannot read is a gap, not a failure
        reason = str(exc) if isinstance(exc, NotReadable) else f"{type(exc).__name__}: {_short(exc)}"
        record.checks.append(Check("not_measured", "unread", out_facts.reader,
                                   settings.weight("not_measured"),
                                   f"the source could not be read for comparison ({reason}): look at it"))
        record.reader = f"-/{out_facts.reader}"
        return
    record.reader = f"{src_facts.reader}/{out_facts.reader}"
    record.notes += src_facts.notes
    record.checks += compare(src_facts, out_facts, settings)
    record.source_comments = src_facts.counts.get("comments")
    record.text_similarity = similarity(src_facts.text, out_facts.text)
    record.source_words = src_facts.text.word_count
    if fmt.family is not Family.SPREADSHEET:
        record.words_lost = sum((src_facts.text.words - out_facts.text.words).values())


class NotComparable(ValueError):
    """A pair of files that cannot be compared; the message says why in plain words."""


def assess_pair(original: Path, converted: Path, settings: FidelitySettings | None = None, *,
                render: Renderer | None = None, visual: bool | None = None) -> FidelityRecord:
    """The fidelity record of any original and its ODF copy, however it was made (by umstieg, by hand,
    by Collabora or ONLYOFFICE, by an earlier run): the same checks and scoring as the pipeline.

    What each file is comes from its bytes (converters.sniff), not its name. Raises NotComparable
    when the original is not a document fidelity reads, the copy is not OpenDocument of the same
    kind, or the structural check itself failed.
    """
    from converters.sniff import sniff

    original, converted = Path(original), Path(converted)
    for path in (original, converted):
        if not path.is_file():
            raise NotComparable(f"{path} is not a file")
    source = sniff(original)
    if source.format is None:
        raise NotComparable(f"{original.name} is not a document umstieg compares ({source.reason})")
    if source.final and source.outcome is not None:
        raise NotComparable(f"{original.name} cannot be read ({source.reason})")
    output = sniff(converted)
    if output.format is None or not output.format.is_odf or output.final:
        raise NotComparable(f"{converted.name} is not an OpenDocument file ({output.reason})")
    if output.format.family is not source.format.family:
        raise NotComparable(f"{original.name} is a {source.format.family.value} document but {converted.name} is an "
                            f"OpenDocument {output.format.family.value} file: they cannot be compared")
    record = assess(original, converted, source.format, settings, render=render, visual=visual,
                    repaired=source.repair)
    if record.status != Status.ASSESSED:
        raise NotComparable(record.reason or "the comparison failed")
    return record


def _judge(record: FidelityRecord, settings: FidelitySettings, family: Family) -> None:
    lost = sum(c.points for c in record.checks)
    record.score = round(max(0.0, 100.0 - lost), 1)
    broken = any(c.name == "package" and c.points for c in record.checks)
    if (family is not Family.SPREADSHEET and record.source_words >= 20
            and record.text_similarity is not None and record.text_similarity < 0.5):
        broken = True
    critical = [c for c in record.checks if is_critical_loss(c.name, c.source, c.output, c.points)]
    lost_text = record.words_lost is not None and record.words_lost >= LOST_WORDS_FOR_REVIEW
    record.verdict = verdict_for(record.score, len(record.deductions), settings, broken=broken,
                                 review=bool(critical) or lost_text or record.repaired)


def _wants_visual(record: FidelityRecord, settings: FidelitySettings, forced: bool | None, key: str) -> bool:
    if forced is not None:
        return forced
    if settings.visual == "none":
        return False
    if settings.visual == "all":
        return True
    if record.verdict in (Verdict.REVIEW, Verdict.BROKEN):
        return True
    if settings.visual_sample > 0:
        # deterministic: the same document is sampled again on a rerun
        bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return bucket < settings.visual_sample
    return False


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def make_assessor(settings: FidelitySettings | None = None, *, render: Renderer | None = None,
                  thumbs: Path | None = None, views: bool = False,
                  risks: Callable[[Path], list[str]] | None = None) -> Callable[[ConversionResult], dict | None]:
    """The `assess(result) -> dict | None` callback `convert_tree` calls for each document.

    Converted documents are measured; documents passed through unchanged are identical by
    definition; documents that were not converted get no score, only their risk flags; files
    that are not Office documents get no fidelity record at all (None). The batch report embeds
    the thumbnails only, so the viewer's large pictures are not kept unless `views` asks for them.
    """
    from reports.risk import risk_flags
    settings = settings or FidelitySettings()
    flags_of = risks or risk_flags

    def assess_result(result: ConversionResult) -> dict | None:
        if result.format is None or result.format not in FORMATS:
            return None
        fmt = FORMATS[result.format]
        flags: list[str] = []
        started = time.perf_counter()
        try:
            flags = flags_of(Path(result.source))
        except Exception as exc:  # noqa: BLE001 - risk flags are a bonus here; the scan reports failures
            log.debug("risk flags of %s: %s", result.source, exc)
        risk_seconds = time.perf_counter() - started
        if result.repaired:
            flags.append("repaired")
        if result.outcome is Outcome.PASSTHROUGH:
            record = FidelityRecord(status=Status.ASSESSED, score=100.0, verdict=Verdict.IDENTICAL,
                                    notes=["already OpenDocument: copied unchanged"])
        elif result.outcome is not Outcome.CONVERTED or not result.output:
            record = FidelityRecord(status=Status.NOT_ASSESSED, reason=f"not converted ({result.outcome.value})")
        else:
            key = (result.sha256 or hashlib.sha256(result.source.encode()).hexdigest())[:16]
            record = assess(Path(result.source), Path(result.output), fmt, settings, render=render,
                            thumbs=thumbs, key=key, repaired=result.repaired, views=views)
        record.risks = flags
        record.seconds["risks"] = risk_seconds
        return record.to_json()

    return assess_result
