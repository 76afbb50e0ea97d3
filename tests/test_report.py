"""Batch reports: fidelity tables (CSV, ODS, HTML) and `umstieg convert` / `umstieg scan` as a user runs them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from conftest import runtime_dir
from docgen import make_docx, make_fidelity_docx, make_xlsx_with_cached_values
from reports.batch import THUMBS_DIR, fidelity_table, load_records, write_fidelity_report

UMSTIEG = [sys.executable, "-m", "umstieg"]


def run(args: list[str], rt: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, UMSTIEG_RUNTIME_DIR=str(rt), COLUMNS="160")
    return subprocess.run(UMSTIEG + args, capture_output=True, text=True, env=env, timeout=600)


def _record(path: str, fmt: str, verdict: str | None, score: float | None, **fidelity) -> dict:
    data = {"status": "assessed" if verdict else "not_assessed", "score": score, "verdict": verdict,
            "deductions": [], **fidelity}
    return {"path": path, "outcome": "converted" if verdict else "encrypted", "format": fmt, "seconds": 0.5,
            "input_bytes": 1000, "fidelity": data}


def test_batch_report_tables_and_self_contained_html(tmp_path):
    from PIL import Image

    thumbs = tmp_path / THUMBS_DIR
    thumbs.mkdir()
    Image.new("L", (60, 80), 200).save(thumbs / "k1-source.png")
    Image.new("L", (60, 80), 180).save(thumbs / "k1-output.png")
    lost = {"check": "tables", "points": 5.0, "detail": "tables: 3 in the source, 2 in the ODF"}
    records = [
        _record("a/Bescheid.docx", "docx", "identical", 100.0),
        _record("a/Haushalt.xlsx", "xlsx", "review", 80.0, deductions=[lost], risks=["macros_vba"],
                visual={"pages_source": 2, "pages_output": 3, "mean_ssim": 0.8,
                        "thumbnails": {"source": "k1-source.png", "output": "k1-output.png"}}),
        _record("b/Geheim.docx", "docx", None, None, risks=["encrypted"], reason="not converted (encrypted)"),
        {"path": "notes.txt", "outcome": "unsupported", "format": None},
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn line\n')
    paths = write_fidelity_report(tmp_path, results)

    assert len(load_records(results)) == 4
    table = fidelity_table(load_records(results))
    assert list(table["verdict"]) == ["review", "identical", "not_assessed"]      # worst first, no non-Office rows
    csv = pd.read_csv(paths["csv"])
    assert len(csv) == 3 and csv.loc[0, "main_deduction"].startswith("tables:")
    sheets = pd.read_excel(paths["ods"], sheet_name=None, engine="odf")
    assert set(sheets) == {"Documents", "Verdicts by format", "Top deductions", "Deductions"}
    assert sheets["Deductions"].loc[0, "check"] == "tables"
    page = paths["html"].read_text()
    assert "Fidelity report" in page and "a/Haushalt.xlsx" in page and "macros vba" in page
    assert page.count("data:image/png;base64,") == 2                              # thumbnails embedded
    assert "<script" not in page and 'src="http' not in page
    assert "not how Microsoft Office shows it" in page


def test_convert_with_fidelity_end_to_end(tmp_path):
    import msoffcrypto.format.ooxml

    rt = runtime_dir("cli-fidelity")
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    make_fidelity_docx(src / "Bescheid.docx")
    make_xlsx_with_cached_values(src / "Haushalt.xlsx")
    plain = make_docx(tmp_path / "plain.docx")
    encrypted = io.BytesIO()
    with open(plain, "rb") as f:
        msoffcrypto.format.ooxml.OOXMLFile(f).encrypt("geheim", encrypted)
    (src / "Geheim.docx").write_bytes(encrypted.getvalue())

    done = run(["convert", str(src), str(out), "--workers", "2", "--visual", "all"], rt)
    assert done.returncode == 1, done.stderr                         # the encrypted document failed
    lines = {json.loads(line)["path"]: json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()}
    for name in ("Bescheid.docx", "Haushalt.xlsx"):
        fidelity = lines[name]["fidelity"]
        assert fidelity["status"] == "assessed" and {"score", "verdict", "deductions"} <= set(fidelity)
        assert fidelity["verdict"] in ("identical", "minor"), fidelity["deductions"]
        assert fidelity["visual"]["status"] == "compared"
    secret = lines["Geheim.docx"]
    assert secret["outcome"] == "encrypted" and secret["attempts"] == 0            # never sent to LibreOffice
    assert secret["fidelity"]["status"] == "not_assessed" and "encrypted" in secret["fidelity"]["risks"]
    assert "Fidelity" in done.stderr and "not assessed" in done.stderr            # verdict counts in the summary
    for name in ("fidelity.html", "fidelity.ods", "fidelity.csv"):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / THUMBS_DIR).glob("*.png"))) == 4                        # first pages, both sides

    # --no-fidelity: conversions only, no fidelity key, no report
    bare = tmp_path / "bare"
    plain_src = tmp_path / "plain-src"
    plain_src.mkdir()
    make_docx(plain_src / "Brief.docx")
    done = run(["convert", str(plain_src), str(bare), "--workers", "1", "--no-fidelity"], rt)
    assert done.returncode == 0, done.stderr
    line = json.loads((bare / "results.jsonl").read_text().splitlines()[0])
    assert "fidelity" not in line and not (bare / "fidelity.html").exists()

    # a rerun with fidelity measures what the earlier run left unmeasured, without converting again
    done = run(["convert", str(plain_src), str(bare), "--workers", "1", "--visual", "none"], rt)
    assert done.returncode == 0, done.stderr
    again = json.loads((bare / "results.jsonl").read_text().splitlines()[0])
    assert again["finished"] == line["finished"] and again["fidelity"]["status"] == "assessed"


def test_scan_command(tmp_path):
    src = tmp_path / "share"
    src.mkdir()
    make_fidelity_docx(src / "Bescheid.docx")
    done = run(["scan", str(src), "--out", str(tmp_path / "scan")], runtime_dir("cli-scan"))
    assert done.returncode == 0, done.stderr
    assert "Files by planning category" in done.stderr and "comments" in done.stderr
    record = json.loads((tmp_path / "scan" / "scan.jsonl").read_text())
    assert record["path"] == "Bescheid.docx" and "comments" in record["flags"]
    for name in ("scan.csv", "scan.ods", "scan.html"):
        assert (tmp_path / "scan" / name).is_file()


# ------------------------------------------------------------------ run report texts that are true
def _ledger_with(tmp_path, rows, **overrides):
    """A department (folder source, local target) and its SQLite ledger holding `rows` (Item fields),
    processed in one run's batch; returns (department, ledger, run id)."""
    from core.department import load_department
    from core.ledger import Item, Ledger
    from helpers import make_department
    dept = load_department(make_department(tmp_path, users=("anna", "ben", "cem"), docs_per_user=1, **overrides))
    ledger = Ledger(dept.ledger_url)
    ledger.migrate()
    run = ledger.start_run(dept.name, "migrate")
    batches = {}
    with ledger.session() as s:
        for n, row in enumerate(rows):
            owner = row.get("owner", "anna")
            if owner not in batches:
                batches[owner] = ledger.start_batch(run, owner, 1, 1, "here/1")
            s.add(Item(department=dept.name, source="homes", key=f"k{n}", kind="file", owner=owner,
                       target_owner=f"t-{owner}", location=row.get("location", f"f{n}.txt"),
                       target_stem=f"f{n}", version="1", batch_id=batches[owner], run_id=run,
                       **{k: v for k, v in row.items() if k not in ("owner", "location")}))
    return dept, ledger, run


def test_copies_of_deleted_items_are_reported_as_they_really_are(tmp_path):
    """`removed at the target too` only for copies discovery really removed: the department's
    setting today says nothing about items found gone while it was off."""
    from reports.migration import run_summary, write_run_report
    dept, ledger, run = _ledger_with(tmp_path, [
        # found gone while off
        dict(location="weg.txt", state="verified", removed_at_source=True, target_ref="/t/weg.txt"),
        dict(location="entfernt.txt", state="skipped", reason="removed_at_source", removed_at_source=True,
             target_ref="/t/entfernt.txt"),                                                             # really removed
        dict(location="nie.txt", state="failed", reason="extract_error", removed_at_source=True),  # never arrived
    ], delete_at_target=True)
    try:
        summary = run_summary(dept, ledger, run, {}, 1.0)
        text = write_run_report(dept, summary).read_text(encoding="utf-8")
    finally:
        ledger.close()
    removed = summary["removed_this_run"]
    assert (removed["count"], removed["removed"], removed["kept"], removed["never_arrived"]) == (3, 1, 1, 1)
    section = text.split("## Deleted at the source in this run", 1)[1].split("\n## ", 1)[0]
    assert "1 removed at the target too" in section and "1 left at the target" in section
    assert "1 had never reached the target" in section
    assert "| anna | weg.txt | left at the target |" in section
    assert "| anna | entfernt.txt | removed at the target |" in section
    assert summary["removed_totals"] == {"count": 3, "removed": 1, "kept": 1, "never_arrived": 1}


def test_copies_left_at_the_target_are_never_called_removed(tmp_path):
    from reports.migration import run_summary, write_run_report
    dept, ledger, run = _ledger_with(tmp_path, [
        dict(location="weg.txt", state="verified", removed_at_source=True, target_ref="/t/weg.txt")])
    try:
        text = write_run_report(dept, run_summary(dept, ledger, run, {}, 1.0)).read_text(encoding="utf-8")
    finally:
        ledger.close()
    assert "removed at the target" not in text and "left at the target" in text


def test_users_who_wait_are_told_what_of_theirs_moved_and_why(tmp_path):
    """`nothing of theirs moved` only for a user of whom nothing moved; the advice names no cause
    of its own (a full quota is not an identity-map problem): each reason says what to fix."""
    from reports.migration import run_summary, write_run_report
    dept, ledger, run = _ledger_with(tmp_path, [
        dict(owner="ben", state="verified", target_ref="/t/1"), dict(owner="ben", state="verified", target_ref="/t/2"),
        dict(owner="ben", state="discovered"), dict(owner="anna", state="verified", target_ref="/t/3")])
    quota = ("Nextcloud has no room left for t-ben's files (HTTP 507 Insufficient Storage); raise the quota of "
             "account 't-ben' (or free space on the server), then run the department again")
    try:
        summary = run_summary(dept, ledger, run, {}, 1.0)
        summary["stopped_users"] = {"ben": quota, "cem": "target: the account 't-cem' does not exist"}
        text = write_run_report(dept, summary).read_text(encoding="utf-8")
    finally:
        ledger.close()
    section = text.split("## Users who wait", 1)[1].split("\n## ", 1)[0]
    ben = next(line for line in section.splitlines() if line.startswith("| ben |"))
    cem = next(line for line in section.splitlines() if line.startswith("| cem |"))
    assert "2 item(s) arrived before they stopped" in ben and "nothing of theirs moved" not in ben
    assert "raise the quota" in ben                         # the reason in full, with its own advice
    assert "nothing of theirs moved" in cem
    assert "identity map" not in text and "Users who wait: nothing of theirs moved" not in text


def test_reasons_are_cut_at_a_word_boundary():
    from core.messages import clip
    reason = "permission denied: the account does not exist at the target, or its app password is wrong"
    cut = clip(reason, 60)
    assert len(cut) <= 60 and cut.endswith("…")
    assert reason.startswith(cut[:-1]) and reason[len(cut) - 1] == " "      # the next character was a space
    assert clip(reason, 200) == reason and clip("a\nb  c", 10) == "a b c"
    long_word = "https://cloud.example.org/remote.php/dav/files/" + "x" * 80
    assert clip(long_word, 40) == long_word[:39] + "…"                       # no boundary: cut, and say so


def test_failure_examples_in_the_report_end_on_whole_words(tmp_path):
    from reports.migration import run_summary, write_run_report
    message = "load: " + " ".join(f"Wort{n}" for n in range(80))          # ~560 characters
    dept, ledger, run = _ledger_with(tmp_path, [dict(state="failed", reason="load_error", message=message)])
    try:
        text = write_run_report(dept, run_summary(dept, ledger, run, {}, 1.0)).read_text(encoding="utf-8")
    finally:
        ledger.close()
    row = next(line for line in text.splitlines() if line.startswith("| load_error |"))
    example = row.split(" | ")[2].rstrip(" |")
    assert example.endswith("…") and example[:-1].split()[-1] in message.split()
