"""Fidelity: generated documents with known content, converted by real LibreOffice workers, then measured."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from converters.formats import FORMATS
from core.outcomes import Outcome
from docgen import make_fidelity_docx, make_xlsx_with_cached_values
from reports.compare import count_check
from reports.facts import Facts
from reports.fidelity import Status, assess, make_assessor, read_facts
from reports.scoring import FidelitySettings, Verdict, verdict_for
from reports.spreadsheets import same_value
from reports.text import bag, containment, similarity
from reports.visual import ssim

STRUCTURAL = FidelitySettings(visual="none")


def checks_of(record) -> dict:
    return {c.name: c for c in record.checks}


def rewrite_part(path: Path, part: str, edit) -> Path:
    """A copy of the package at `path` with `part` rewritten by edit(text) -> text."""
    copy = path.with_name("edited-" + path.name)
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(copy, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == part:
                new = edit(data.decode("utf-8"))
                assert new != data.decode("utf-8"), "the edit changed nothing"
                data = new.encode("utf-8")
            zout.writestr(info, data)
    return copy


# ------------------------------------------------------------------ measures without LibreOffice ---

def test_text_measures_are_multiset_based():
    a, b = bag("Der Antrag ist fristgerecht eingegangen."), bag("eingegangen ist der Antrag fristgerecht")
    assert similarity(a, b) == 1.0                       # order does not matter, case does not either
    assert similarity(a, bag("")) == 0.0 and similarity(bag(""), bag("")) == 1.0
    assert containment(bag("Antrag Frist"), bag("Antrag")) == 0.5
    assert bag("Straße ﬁnden").word_count == 2           # NFKC: the ligature is two letters


def test_cell_values_compare_typed_with_tolerance():
    assert same_value(("n", 0.1 + 0.2), ("n", 0.3))
    assert not same_value(("n", 1.0), ("n", 1.001))
    assert same_value(("b", True), ("n", 1.0))           # TRUE stored as a number by one side
    assert same_value(("s", ""), None)
    assert not same_value(("s", "2x"), ("s", "3x"))
    assert not same_value(("e", "#DIV/0!"), ("n", 0.0))


def test_ssim_is_one_for_identical_pages_and_lower_for_changed_ones():
    rng = np.random.default_rng(0)
    page = rng.integers(0, 255, (80, 60)).astype(np.uint8)
    assert ssim(page, page) == pytest.approx(1.0)
    changed = page.copy()
    changed[20:60, 10:50] = 255
    assert ssim(page, changed) < 0.8


def test_counts_deduct_in_proportion_and_additions_cost_less():
    settings = FidelitySettings()
    lost = count_check("tables", 3, 2, settings)
    gained = count_check("tables", 3, 4, settings)
    assert lost.points == pytest.approx(15 / 3) and gained.points == pytest.approx(15 / 6)
    assert count_check("tables", 3, 3, settings).points == 0
    assert count_check("changes", 10, 7, settings).points == 0      # within the tolerance for merges


def test_verdicts_follow_the_configured_thresholds():
    settings = FidelitySettings(minor_at=90, review_at=50)
    assert verdict_for(100, 0, settings) is Verdict.IDENTICAL
    assert verdict_for(99.9, 1, settings) is Verdict.MINOR
    assert verdict_for(89, 2, settings) is Verdict.REVIEW
    assert verdict_for(49, 3, settings) is Verdict.BROKEN
    assert verdict_for(100, 0, settings, broken=True) is Verdict.BROKEN
    with pytest.raises(ValueError):
        FidelitySettings(minor_at=50, review_at=80)
    with pytest.raises(ValueError):
        FidelitySettings(weights={"no such check": 1})


def test_a_corrupt_output_is_broken_and_a_failed_measurement_is_recorded(tmp_path):
    source = make_fidelity_docx(tmp_path / "Bescheid.docx")
    not_odf = tmp_path / "Bescheid.odt"
    not_odf.write_bytes(b"this is not a zip file")
    record = assess(source, not_odf, FORMATS["docx"], STRUCTURAL)
    assert record.status == Status.ASSESSED and record.verdict is Verdict.BROKEN
    assert "package" in {c.name for c in record.deductions}

    odd = tmp_path / "odd.odt"                            # a valid package whose content is no text document
    with zipfile.ZipFile(odd, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        z.writestr("META-INF/manifest.xml", '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:'
                   'xmlns:manifest:1.0"><manifest:file-entry manifest:full-path="/" manifest:media-type='
                   '"application/vnd.oasis.opendocument.text"/></manifest:manifest>')
        z.writestr("content.xml", '<x/>')
        z.writestr("styles.xml", '<x/>')
    failed = assess(source, odd, FORMATS["docx"], STRUCTURAL)
    assert failed.status == Status.FAILED and "structural check failed" in failed.reason
    assert failed.score is None and failed.to_json()["reason"]


# ------------------------------------------------------------------- through real LibreOffice ---

@pytest.fixture(scope="module")
def converted(pool, tmp_path_factory):
    """The generated documents and their ODF outputs (converted once for the module)."""
    folder = tmp_path_factory.mktemp("fidelity")
    docs = {"docx": make_fidelity_docx(folder / "Bescheid.docx"),
            "xlsx": make_xlsx_with_cached_values(folder / "Haushalt.xlsx"),
            "wrong": make_xlsx_with_cached_values(folder / "Falsch.xlsx", wrong=True)}
    results = {}
    for key, path in docs.items():
        result = pool.convert(path, folder / "out")
        assert result.outcome is Outcome.CONVERTED, result.message
        results[key] = (path, Path(result.output))
    return results


def test_generated_docx_reports_exact_counts_on_both_sides(converted):
    source, output = converted["docx"]
    src, out = read_facts(source, FORMATS["docx"]), read_facts(output, FORMATS["odt"])
    expected = {"tables": 3, "images": 2, "footnotes": 1, "comments": 1}
    assert {k: src.counts[k] for k in expected} == expected
    assert {k: out.counts[k] for k in expected} == expected
    assert [(t.rows, t.cols) for t in src.tables] == [(2, 3), (3, 3), (4, 3)] == [(t.rows, t.cols) for t in out.tables]

    record = assess(source, output, FORMATS["docx"], STRUCTURAL)
    checks = checks_of(record)
    for name, n in expected.items():
        assert (checks[name].source, checks[name].output, checks[name].points) == (n, n, 0), name
    assert record.text_similarity == 1.0
    assert record.score >= 95 and record.verdict in (Verdict.IDENTICAL, Verdict.MINOR), record.to_json()


def test_a_deleted_table_is_caught_and_lowers_the_score(converted):
    source, output = converted["docx"]
    before = assess(source, output, FORMATS["docx"], STRUCTURAL)
    damaged = rewrite_part(output, "content.xml",
                           lambda xml: re.sub(r"<table:table .*?</table:table>", "", xml, count=1, flags=re.S))
    after = assess(source, damaged, FORMATS["docx"], STRUCTURAL)
    tables = checks_of(after)["tables"]
    assert (tables.source, tables.output) == (3, 2) and tables.points > 0
    assert after.score < before.score
    assert any(d["check"] == "tables" for d in after.to_json()["deductions"])


def test_a_spreadsheet_that_recalculates_to_its_cached_values_scores_full_marks_on_formulas(converted):
    source, output = converted["xlsx"]
    record = assess(source, output, FORMATS["xlsx"], STRUCTURAL)
    checks = checks_of(record)
    assert (checks["formulas"].source, checks["formulas"].output, checks["formulas"].points) == (4, 4, 0)
    assert (checks["recalculated"].source, checks["recalculated"].output, checks["recalculated"].points) == (4, 4, 0)
    assert checks["values"].points == 0 and checks["new_errors"].points == 0
    assert checks["merged"].points == 0 and checks["merged"].source == 1


def test_libreoffice_recalculates_and_a_differing_cached_value_is_reported(converted):
    source, output = converted["wrong"]
    record = assess(source, output, FORMATS["xlsx"], STRUCTURAL)
    recalculated = checks_of(record)["recalculated"]
    assert recalculated.points > 0 and "Haushalt!A3: 7 → 6" in recalculated.detail


def test_an_altered_cell_value_is_caught_and_lowers_the_score(converted):
    source, output = converted["xlsx"]
    before = assess(source, output, FORMATS["xlsx"], STRUCTURAL)
    damaged = rewrite_part(output, "content.xml", lambda xml: xml.replace(
        "<text:p>Posten</text:p>", "<text:p>Pasten</text:p>", 1))
    after = assess(source, damaged, FORMATS["xlsx"], STRUCTURAL)
    values = checks_of(after)["values"]
    assert values.points > 0 and "Haushalt!B1: 'Posten' → 'Pasten'" in values.detail
    assert after.score < before.score


def test_visual_check_renders_both_sides_and_keeps_thumbnails(converted, pool, tmp_path):
    source, output = converted["docx"]                    # it has a comment: the render must not crash
    restarts = pool.restarts
    record = assess(source, output, FORMATS["docx"], STRUCTURAL, render=pool.render_pdf, visual=True,
                    thumbs=tmp_path, key="bescheid")
    assert pool.restarts == restarts
    visual = record.visual
    assert visual["status"] == "compared", visual
    assert visual["pages_source"] == visual["pages_output"] >= 1
    # usually 0.93; in some full-suite runs 0.887 (which render differs is not yet pinned down: the
    # worker's state, not the document): well above what a blank or broken page gives (< 0.6)
    assert visual["mean_ssim"] > 0.85
    assert {c.name for c in record.checks} >= {"pages", "visual"}
    assert (tmp_path / "bescheid-source.png").stat().st_size > 100
    assert (tmp_path / "bescheid-output.png").is_file()


def test_assessor_covers_every_outcome_without_raising(converted, tmp_path):
    from converters.result import ConversionResult

    source, output = converted["docx"]
    assess_result = make_assessor(STRUCTURAL)
    ok = assess_result(ConversionResult(str(source), Outcome.CONVERTED, "", output=str(output), format="docx"))
    assert ok["status"] == "assessed" and {"score", "verdict", "deductions"} <= set(ok)
    enc = assess_result(ConversionResult(str(source), Outcome.ENCRYPTED, "", format="docx"))
    assert enc["status"] == "not_assessed" and enc["score"] is None
    assert assess_result(ConversionResult(str(tmp_path / "x.txt"), Outcome.UNSUPPORTED, "")) is None
    gone = assess_result(ConversionResult(str(source), Outcome.CONVERTED, "", output=str(tmp_path / "gone.odt"),
                                          format="docx"))
    assert gone["status"] == "failed" and gone["reason"]


def test_structural_tier_is_cheap(converted):
    import time

    source, output = converted["docx"]
    started = time.perf_counter()
    for _ in range(5):
        assess(source, output, FORMATS["docx"], STRUCTURAL)
    assert (time.perf_counter() - started) / 5 < 0.25
    assert isinstance(read_facts(source, FORMATS["docx"]), Facts)
