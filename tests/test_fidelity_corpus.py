"""Fidelity on real files from the developer corpus (skipped without it): a selection, converted by the shared pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.formats import FORMATS
from core.outcomes import Outcome
from reports.fidelity import Status, assess
from reports.scoring import FidelitySettings, Verdict

pytestmark = pytest.mark.corpus

SELECTION = [
    "documents/testComment.docx", "documents/testComment.doc", "documents/testComment.rtf",
    "documents/testWORD_embedded_pics.docx", "documents/tables.docx", "documents/testWORD_text_box.docx",
    "documents/testWORD_numbered_list.doc", "spreadsheets/testEXCEL_5.xls", "spreadsheets/jxl.xls",
    "spreadsheets/pivots.xlsx", "spreadsheets/contains_chartsheets.xlsx", "spreadsheets/testEXCEL-charts.xls",
    "presentations/testPPT_various.ppt", "presentations/table.pptx", "presentations/testComment.pptx",
]


@pytest.fixture(scope="module")
def assessed(corpus, pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus-fidelity")
    settings = FidelitySettings(visual="none")
    records = {}
    jobs = [(corpus / rel, out, Path(rel).stem + "." + Path(rel).suffix[1:]) for rel in SELECTION]
    for result in pool.convert_many(jobs):
        rel = Path(result.source).relative_to(corpus).as_posix()
        assert result.outcome is Outcome.CONVERTED, (rel, result.message)
        records[rel] = (result, assess(Path(result.source), Path(result.output), FORMATS[result.format], settings))
    return records


def test_every_converted_corpus_document_gets_a_score(assessed):
    for rel, (_, record) in assessed.items():
        assert record.status == Status.ASSESSED, (rel, record.reason)
        assert 0 <= record.score <= 100 and isinstance(record.verdict, Verdict), rel
        assert all(c.detail for c in record.deductions), rel              # every deduction explains itself


def test_comments_are_counted_in_every_word_format(assessed):
    for rel in ("documents/testComment.docx", "documents/testComment.doc", "documents/testComment.rtf"):
        comments = {c.name: c for c in assessed[rel][1].checks}["comments"]
        assert (comments.source, comments.output, comments.points) == (1, 1, 0), rel
        assert assessed[rel][1].text_similarity == 1.0, rel          # comment initials are not text


def test_known_conversion_traits_are_not_counted_as_losses(assessed):
    # a Word text box: LibreOffice writes a frame and a shape with the same text, counted once
    assert assessed["documents/testWORD_text_box.docx"][1].text_similarity == 1.0
    # JExcelAPI stored 0 for every formula: not Excel's values, so not compared
    jxl = {c.name: c for c in assessed["spreadsheets/jxl.xls"][1].checks}["recalculated"]
    assert jxl.points == 0 and "not Excel's" in jxl.detail
    # a chart sheet that xlrd does not list is still a sheet of the source
    charts = {c.name: c for c in assessed["spreadsheets/testEXCEL-charts.xls"][1].checks}
    assert charts["sheets"].points == 0 and charts["sheet_names"].points == 0
    # LibreOffice lays out pivot tables anew: that is a pivot-table finding, not lost cell values
    pivots = {c.name: c for c in assessed["spreadsheets/pivots.xlsx"][1].checks}
    assert pivots["values"].points == 0 and pivots["pivot_values"].points > 0


def test_every_document_records_what_the_benchmark_sums(assessed):
    # How the structural tier's cost compares with the conversions' is measured by
    # benchmarks/fidelity_throughput.py, not asserted here: it sums each result's `seconds` and each
    # fidelity record's `seconds` by tier, so every document must carry both.
    for rel, (result, record) in assessed.items():
        assert result.seconds > 0, rel
        tiers = record.to_json()["seconds"]
        assert set(tiers) == {"structural"} and tiers["structural"] >= 0, (rel, tiers)
