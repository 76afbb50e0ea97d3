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
