"""The pre-migration risk scan: flags from the files' bytes, the planning table, nothing converted."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from docgen import make_docx, make_fidelity_docx, make_xlsx
from reports.risk import RISK_FLAGS, FontCatalog, inspect
from reports.scan import scan_tree

# Files of the corpus that carry macros (NOTES.md, "Macro-enabled"), checked to hold a VBA
# project or Basic library. testEXCEL_macro_enabled_template.xltm and pivot.xlsm have the
# macro-enabled type but no project: they are not macro-bearing.
MACRO_FILES = {
    "documents/testWORD_macros.doc": "macros_vba", "documents/testWORD_macros.docm": "macros_vba",
    "spreadsheets/testEXCEL_macro.xls": "macros_vba", "spreadsheets/testEXCEL_macro.xlsm": "macros_vba",
    "spreadsheets/vba+comments.xlsm": "macros_vba", "presentations/testPPT_macros.ppt": "macros_vba",
    "presentations/testPPT_macros.pptm": "macros_vba", "presentations/act-props.pptm": "macros_vba",
    "spreadsheets/testODSMacro.ods": "macros_basic", "presentations/testODPMacro.odp": "macros_basic",
}
NO_MACROS = {"spreadsheets/pivot.xlsm", "spreadsheets/testEXCEL_macro_enabled_template.xltm",
             "documents/testComment.docx", "presentations/testComment.ppt", "spreadsheets/testComment.xls"}
ENCRYPTED = {
    "documents/testWORD_protected_passtika.docx": "encrypted", "documents/protected_normal_case.docx": "encrypted",
    "spreadsheets/testEXCEL_protected_passtika_2.xlsx": "encrypted", "spreadsheets/pass_protected.xlsx": "encrypted",
    "spreadsheets/pass_protected.xlsb": "encrypted", "presentations/testPPT_protected_passtika.pptx": "encrypted",
    "presentations/testPPT_protected_passtika.ppt": "encrypted",
    "spreadsheets/testEXCEL_protected_passtika.xls": "encrypted",
    "documents/testODTEncrypted.odt": "encrypted", "spreadsheets/pass_protected.ods": "encrypted",
    "documents/testWORD_protected_drm.doc": "irm",
}


@pytest.fixture(scope="module")
def corpus_scan(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("scan")
    summary = scan_tree(corpus, out, jobs=4)
    records = {json.loads(line)["path"]: json.loads(line) for line in (out / "scan.jsonl").read_text().splitlines()}
    return summary, records, out


@pytest.mark.corpus
def test_macro_bearing_corpus_files_are_flagged(corpus_scan):
    _, records, _ = corpus_scan
    for path, flag in MACRO_FILES.items():
        assert flag in records[path]["flags"], (path, records[path]["flags"])
        assert records[path]["category"] == "person"
    for path in NO_MACROS:
        assert not {"macros_vba", "macros_xlm", "macros_basic"} & set(records[path]["flags"]), path
    assert "macros_autorun" in records["spreadsheets/vba+comments.xlsm"]["flags"]   # Workbook_Open


@pytest.mark.corpus
def test_encrypted_corpus_files_are_flagged(corpus_scan):
    _, records, _ = corpus_scan
    for path, flag in ENCRYPTED.items():
        assert flag in records[path]["flags"], (path, records[path]["flags"])
        assert records[path]["category"] == "person"
    assert "encrypted" not in records["spreadsheets/protectedSheets.xlsx"]["flags"]   # sheet protection only


@pytest.mark.corpus
def test_corpus_scan_writes_the_planning_table(corpus_scan, corpus):
    summary, records, out = corpus_scan
    files = [p for p in corpus.rglob("*") if p.is_file()]
    assert summary.files == len(files) == len(records)
    for record in records.values():
        assert {"path", "format", "size", "flags"} <= set(record) and isinstance(record["flags"], list)
        assert all(flag in RISK_FLAGS for flag in record["flags"])
    assert records["documents/testComment.docx"]["format"] == "docx"
    assert "legacy_binary" in records["documents/testComment.doc"]["flags"]
    assert "smartart" in records["documents/testWORD_diagramData.docx"]["flags"]
    assert "pivot_tables" in records["spreadsheets/pivots.xlsx"]["flags"]
    assert "digital_signature" in records["documents/testWORD_signed.docx"]["flags"]
    assert records["mail/tika/testPST.pst"]["category"] == "other"
    csv = pd.read_csv(out / "scan.csv")
    assert len(csv) == len(records) and list(csv["category"])[0] == "person"     # person first
    ods = pd.read_excel(out / "scan.ods", sheet_name=None, engine="odf")
    assert set(ods) == {"Files", "By format", "Flags"} and len(ods["Files"]) == len(records)
    page = (out / "scan.html").read_text()
    assert "need a person" in page and "testWORD_macros.docm" in page and "<script" not in page


def test_scan_flags_generated_risks_and_is_read_only(tmp_path):
    src = tmp_path / "share"
    (src / "Referat").mkdir(parents=True)
    make_docx(src / "Referat" / "plain.docx")
    make_fidelity_docx(src / "Referat" / "commented.docx")
    newer = make_xlsx(src / "newer.xlsx")
    with zipfile.ZipFile(newer, "a") as z:                 # a formula only Excel 365 knows
        sheet = z.read("xl/worksheets/sheet1.xml").decode()
        z.writestr("xl/worksheets/sheet2.xml", sheet.replace("<f>A1*2</f>", "<f>_xlfn.XLOOKUP(A1,B1:B5,C1:C5)</f>"))
    (src / "notes.txt").write_text("kein Office-Dokument")
    (src / "big.rtf").write_bytes(b"{\\rtf1\\ansi " + b"x" * 300_000 + b"}")
    template = src / "Vorlage.dotx"
    with zipfile.ZipFile(src / "Referat" / "plain.docx") as zin, zipfile.ZipFile(template, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"wordprocessingml.document.main", b"wordprocessingml.template.main")
            zout.writestr(info, data)
    before = {p: p.stat().st_mtime_ns for p in src.rglob("*") if p.is_file()}

    out = tmp_path / "scan"
    summary = scan_tree(src, out, jobs=2, oversize=200_000)
    records = {json.loads(line)["path"]: json.loads(line) for line in (out / "scan.jsonl").read_text().splitlines()}
    assert set(records) == {"Referat/plain.docx", "Referat/commented.docx", "newer.xlsx", "notes.txt", "big.rtf",
                            "Vorlage.dotx"}
    assert records["Referat/plain.docx"]["category"] == "clean"
    assert "comments" in records["Referat/commented.docx"]["flags"]
    assert "newer_functions" in records["newer.xlsx"]["flags"]
    assert records["newer.xlsx"]["details"]["newer_functions"] == ["XLOOKUP"]
    assert records["notes.txt"]["category"] == "other" and records["notes.txt"]["flags"] == []
    assert "oversized" in records["big.rtf"]["flags"]
    assert "template" in records["Vorlage.dotx"]["flags"] and records["Vorlage.dotx"]["format"] == "dotx"
    assert summary.by_category["other"] == 1
    assert before == {p: p.stat().st_mtime_ns for p in src.rglob("*") if p.is_file()}    # nothing touched
    assert not list(src.rglob("*.odt"))


def test_fonts_without_a_metric_compatible_substitute():
    if FontCatalog.installed() is None:
        pytest.skip("fc-list is not available")
    assert FontCatalog.missing({"Calibri", "Arial", "Times New Roman", "Wingdings", "+mn-lt"}) == []
    assert FontCatalog.missing({"Fantasie Grotesk Pro"}) == ["Fantasie Grotesk Pro"]
    assert FontCatalog.missing({"Fantasie Grotesk Pro;Arial;sans-serif"}) == []


def test_an_unreadable_file_is_a_finding_not_a_crash(tmp_path):
    broken = tmp_path / "kaputt.docx"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    report = inspect(broken)
    assert report.flags == ["unreadable"] and report.category == "person"
    assert inspect(Path(__file__)).category == "other"


def test_hidden_rows_do_not_hide_newer_functions_and_fonts(tmp_path):
    """A hidden row and an XLOOKUP in one sheet: every flag is found, none lost to the other."""
    import openpyxl
    from openpyxl.styles import Font

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append([1, "a", "x"])
    ws.append([2, "b", "y"])
    ws.row_dimensions[1].hidden = True
    ws.column_dimensions["C"].hidden = True
    ws["D1"] = "=_xlfn.XLOOKUP(A1,A1:A2,B1:B2)"
    ws["D1"].font = Font(name="Fantasie Grotesk Pro")
    path = tmp_path / "versteckt.xlsx"
    wb.save(path)
    report = inspect(path)
    assert report.error is None, report.error
    assert {"hidden_content", "newer_functions"} <= set(report.flags), report.flags
    assert report.details["newer_functions"] == ["XLOOKUP"]
    if FontCatalog.installed() is not None:
        assert "fonts_without_substitute" in report.flags
        assert report.details["fonts_without_substitute"] == ["Fantasie Grotesk Pro"]
    assert report.category == "review"


def test_a_failed_inspection_is_never_clean(tmp_path):
    """A docx whose styles part is not well-formed XML: the scan says so and puts it up for review."""
    plain = make_docx(tmp_path / "plain.docx")
    assert inspect(plain).category == "clean"
    src = tmp_path / "share"
    src.mkdir()
    damaged = src / "kaputte-formatvorlagen.docx"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(damaged, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "word/styles.xml":
                data = data[: len(data) // 2]            # cut off in the middle of an element
            zout.writestr(info, data)
    report = inspect(damaged)
    assert report.error and report.flags == []
    assert report.category == "review"
    assert report.to_json()["error"] == report.error

    out = tmp_path / "scan"
    scan_tree(src, out, jobs=1)
    record = json.loads((out / "scan.jsonl").read_text().splitlines()[0])
    assert record["category"] == "review" and record["error"] == report.error
    csv = pd.read_csv(out / "scan.csv")
    assert csv.loc[0, "category"] == "review" and csv.loc[0, "error"] == report.error
    page = (out / "scan.html").read_text()
    assert "inspection failed part-way" in page and "kaputte-formatvorlagen.docx" in page


def test_scan_command_shows_counts_and_sizes_by_format(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "share"
    src.mkdir()
    for i in range(3):
        make_docx(src / f"brief{i}.docx", paragraphs=2, seed=i)
    make_xlsx(src / "liste.xlsx")
    (src / "notiz.txt").write_text("kein Office-Dokument")
    run = subprocess.run([sys.executable, "-m", "umstieg", "scan", str(src), "--out", str(tmp_path / "scan")],
                         capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "Files by format" in line)
    cells = [[c.strip() for c in line.strip().strip("│").split("│")] for line in lines[start:start + 12]]
    rows = {c[0]: c[1:3] for c in cells if len(c) >= 3 and c[0] in ("docx", "xlsx", "other")}
    docx_mib = sum(p.stat().st_size for p in src.glob("*.docx")) / 2**20
    assert rows["docx"] == ["3", f"{docx_mib:.1f}"]
    assert rows["xlsx"][0] == "1" and rows["other"][0] == "1"


def _scan_records(folder: Path, count: int) -> Path:
    """A scan.jsonl of `count` generated records (every category, flags, details, an error, a name
    that would be a formula), in no particular order, as scan_tree writes them."""
    kinds = [("docx", "document", "person", ["macros_vba"], None, None),
             ("xlsx", "spreadsheet", "review", ["newer_functions"], {"newer_functions": ["XLOOKUP", "LET"]}, None),
             ("docx", "document", "review", [], None, "word/styles.xml: not well-formed"),
             ("pptx", "presentation", "clean", ["comments"], None, None),
             (None, None, "other", [], None, None)]
    jsonl = folder / "scan.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for i in range(count):
            fmt, family, cat, flags, details, error = kinds[(i * 7) % len(kinds)]
            record = {"path": f"{'=' if i % 97 == 0 else ''}akte{(i * 31) % 1000:03d}/dok{i:07d}.{fmt or 'txt'}",
                      "format": fmt, "family": family, "size": 1000 + i, "outcome": "ok" if fmt else "unsupported",
                      "flags": flags, "category": cat}
            record.update({"details": details} if details else {})
            record.update({"error": error} if error else {})
            f.write(json.dumps(record) + "\n")
    return jsonl


def test_the_scan_reports_hold_a_bounded_number_of_rows_whatever_the_scan(tmp_path):
    """The peak of Python's allocations while writing the reports of 4N files stays within a fixed
    bound of that for N: rows are put in order on disk and pass through; only the capped lists stay."""
    import tracemalloc

    from reports.scan import write_scan_report

    peaks = {}
    for count in (200, 4_000, 16_000):              # the first run compiles templates and loads catalogs
        folder = tmp_path / f"n{count}"
        folder.mkdir()
        jsonl = _scan_records(folder, count)
        tracemalloc.start()
        try:
            write_scan_report(folder, jsonl, language="de", ods_rows=500, html_rows=100)
            peaks[count] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert sum(1 for _ in open(folder / "scan.csv", encoding="utf-8")) == count + 1
    assert peaks[16_000] < peaks[4_000] + 2 * 2**20, peaks
    assert peaks[16_000] < 4 * 2**20, peaks


def test_capped_reports_say_how_many_files_are_left_out_and_the_csv_holds_all(tmp_path):
    from reports.scan import write_scan_report

    jsonl = _scan_records(tmp_path, 120)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    rank = {"person": 0, "review": 1, "clean": 2, "other": 3}
    ranked = sorted(records, key=lambda r: (rank[r["category"]], r["path"]))
    paths = write_scan_report(tmp_path, jsonl, ods_rows=25, html_rows=10)

    csv = pd.read_csv(paths["csv"], keep_default_na=False)
    assert len(csv) == 120
    # every file, most urgent first; a name that is a formula starts with an apostrophe
    assert list(csv["path"]) == [("'" + r["path"]) if r["path"].startswith("=") else r["path"] for r in ranked]
    assert any(p.startswith("'=") for p in csv["path"])

    files = pd.read_excel(paths["ods"], sheet_name="Files", engine="odf")
    listed = files.dropna(subset=["format", "category"], how="all")
    assert list(listed["path"][:25]) == [r["path"] for r in ranked[:25]]
    notes = [v for v in files["path"][25:] if isinstance(v, str)]
    assert notes == ["Only the first 25 of 120 files are listed here, those that need a person first; "
                     "scan.csv holds all of them."]
    counts = pd.read_excel(paths["ods"], sheet_name="By format", engine="odf").set_index("format")
    assert int(counts["files"].sum()) == 120 and int(counts.loc["docx", "person"]) == 24

    page = (tmp_path / "scan.html").read_text()
    person = sum(r["category"] == "person" for r in records)
    review = sum(r["category"] == "review" for r in records)
    assert f"{person - 10} more in scan.csv (scan.ods lists the first files" in page
    assert f"{review - 10} more in scan.csv (scan.ods lists the first files" in page
    assert page.count('<td class="path">') == 20
    assert ranked[0]["path"] in page and ranked[-1]["path"] not in page


def test_below_the_caps_every_file_is_in_the_spreadsheet(tmp_path):
    from reports.scan import write_scan_report

    jsonl = _scan_records(tmp_path, 60)
    paths = write_scan_report(tmp_path, jsonl, ods_rows=60, html_rows=5)
    files = pd.read_excel(paths["ods"], sheet_name="Files", engine="odf")
    assert len(files) == 60 and not files["path"].isna().any()
    page = (tmp_path / "scan.html").read_text()
    assert "more in scan.csv and scan.ods." in page and "(scan.ods lists the first files" not in page
