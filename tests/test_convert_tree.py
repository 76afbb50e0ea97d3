"""Tree conversion (converters/tree.py) against the shared real pool: resuming, files that change under it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from docgen import make_docx, make_xlsx
from converters.tree import RESULTS_NAME, convert_tree, load_results
from core.outcomes import Outcome


def _lines(out: Path) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, (out / RESULTS_NAME).read_text().splitlines())}


def test_results_with_unknown_or_missing_outcomes_are_converted_again(pool, tmp_path, caplog):
    """A valid JSON line with a bad outcome (edited by hand, another version) must not stop the resume."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    make_docx(src / "a.docx")
    make_xlsx(src / "b.xlsx")
    make_docx(src / "c.docx", seed=3)
    first = convert_tree(pool, src, out)
    assert first.by_outcome == {"converted": 3}
    lines = _lines(out)
    lines["a.docx"]["outcome"] = "geschafft"          # unknown
    del lines["b.xlsx"]["outcome"]                     # missing
    (out / RESULTS_NAME).write_text("".join(json.dumps(r) + "\n" for r in lines.values())
                                    + '["not", "a", "record"]\n' + "42\n")

    with caplog.at_level(logging.WARNING, logger="umstieg.converters"):
        second = convert_tree(pool, src, out)
    assert second.skipped == 1                            # c.docx only
    assert second.by_outcome == {"converted": 3}
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "'geschafft'" in warnings and "b.xlsx" in warnings and "not a document record" in warnings
    assert {p: r["outcome"] for p, r in _lines(out).items()} == {p: "converted" for p in lines}


def test_load_results_keeps_only_usable_records(tmp_path):
    path = tmp_path / RESULTS_NAME
    path.write_text('{"path": "x.docx", "outcome": "converted"}\n'
                    '{"path": "x.docx", "outcome": "bogus"}\n'         # the latest line is unusable
                    '{"path": "y.docx", "outcome": "timeout"}\n'
                    '{"path": 7, "outcome": "converted"}\n'
                    '{"path": "z.docx", "outco')                      # torn last line
    assert load_results(path) == {"y.docx": {"path": "y.docx", "outcome": "timeout"}}


def test_a_file_deleted_after_listing_is_unreadable_and_the_batch_goes_on(pool, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    make_docx(src / "bleibt.docx")
    make_docx(src / "weg.docx", seed=1)

    def delete_after_listing(total: int) -> None:
        assert total == 2
        (src / "weg.docx").unlink()

    summary = convert_tree(pool, src, out, on_start=delete_after_listing)
    assert summary.by_outcome == {"converted": 1, "unreadable": 1}
    lines = _lines(out)
    assert lines["bleibt.docx"]["outcome"] == "converted"
    assert lines["weg.docx"]["outcome"] == "unreadable" and "cannot read" in lines["weg.docx"]["message"]
    assert Outcome(lines["weg.docx"]["outcome"]).failed and summary.failed == 1
