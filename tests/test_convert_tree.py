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


SECRET = b"SECRET-FROM-OUTSIDE-THE-TREE\n"


def test_nothing_outside_the_tree_is_read_and_every_entry_gets_a_line(pool, tmp_path):
    """Links (to a file and a folder outside), a pipe, a name in Latin-1 bytes, and a file swapped
    for a link to an outside file after the tree was listed: every entry gets its line, the links
    and the pipe are `skipped`, the swapped file `changed_at_source`, the Latin-1 name converts
    under its decoded name, and no byte from outside reaches OUT, even with --copy-unsupported."""
    import os
    src, out, elsewhere = tmp_path / "src", tmp_path / "out", tmp_path / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    (elsewhere / "passwd").write_bytes(SECRET)
    make_docx(src / "a.docx")
    make_docx(Path(os.fsdecode(os.fsencode(src) + b"/Bericht-\xe4.docx")), seed=2)
    (src / "notiz.txt").write_text("Notiz\n")
    (src / "tausch.txt").write_text("harmlos\n")
    os.symlink(elsewhere / "passwd", src / "hostname.txt")
    os.symlink(elsewhere, src / "ordner")
    os.mkfifo(src / "pipe")

    def swap_after_listing(total: int) -> None:
        assert total == 7
        (src / "tausch.txt").unlink()
        os.symlink(elsewhere / "passwd", src / "tausch.txt")

    summary = convert_tree(pool, src, out, copy_unsupported=True, on_start=swap_after_listing)
    raw = (out / RESULTS_NAME).read_bytes()
    raw.decode("utf-8")                                        # no surrogate escapes: valid UTF-8
    lines = _lines(out)
    assert set(lines) == {"a.docx", "Bericht-\\xe4.docx", "notiz.txt", "tausch.txt", "hostname.txt", "ordner",
                          "pipe"}
    assert {p: r["outcome"] for p, r in lines.items()} == {
        "a.docx": "converted", "Bericht-\\xe4.docx": "converted", "notiz.txt": "unsupported",
        "tausch.txt": "changed_at_source", "hostname.txt": "skipped", "ordner": "skipped", "pipe": "skipped"}
    assert lines["hostname.txt"]["reason"] == "skipped_link" and str(elsewhere) in lines["hostname.txt"]["message"]
    assert lines["pipe"]["reason"] == "skipped_fifo"
    assert "link" in lines["tausch.txt"]["message"]
    odd = lines["Bericht-\\xe4.docx"]
    assert odd["renamed"] == "undecodable_name" and odd["output"] == str(out / "Bericht-ä.odt")
    assert (out / "Bericht-ä.odt").is_file() and (out / "notiz.txt").read_text() == "Notiz\n"
    assert summary.failed == 1 and summary.by_outcome["skipped"] == 3
    for p in out.rglob("*"):
        assert not p.is_symlink(), p
        if p.is_file():
            assert SECRET not in p.read_bytes(), p
    assert not [p for p in out.iterdir() if p.name.startswith(".umstieg-")]    # staging copies are gone
    # run again: the swapped file is a link now (skipped), the rest is already done
    again = convert_tree(pool, src, out, copy_unsupported=True)
    assert _lines(out)["tausch.txt"]["outcome"] == "skipped" and again.failed == 0
    assert again.skipped == 2                                  # a.docx and Bericht: same bytes
