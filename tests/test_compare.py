"""`umstieg compare ORIGINAL CONVERTED`, as a user runs it: a real process, real conversions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from conftest import runtime_dir
from docgen import make_xlsx

UMSTIEG = [sys.executable, "-m", "umstieg"]
TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}table"


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, UMSTIEG_RUNTIME_DIR=str(runtime_dir("compare")), COLUMNS="160")
    return subprocess.run(UMSTIEG + ["compare", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def pair(pool, tmp_path_factory):
    """A Word document with tables and its ODF copy, converted by the real pool."""
    import docx

    folder = tmp_path_factory.mktemp("compare")
    document = docx.Document()
    document.add_heading("Bescheid", level=1)
    for i in range(2):
        document.add_paragraph(f"Absatz {i}: der Antrag vom März wird wie folgt beschieden.")
        table = document.add_table(rows=3, cols=2)
        for r, row in enumerate(table.rows):
            row.cells[0].text, row.cells[1].text = f"Posten {i}.{r}", f"{(r + 1) * 125} Euro"
    source = folder / "bescheid.docx"
    document.save(source)
    result = pool.convert(source, folder / "out")
    assert result.output, result.message
    return source, Path(result.output)


def without_first_table(odf: Path, dst: Path) -> Path:
    with zipfile.ZipFile(odf) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "content.xml":
                root = etree.fromstring(data)
                table = next(root.iter(TABLE))
                table.getparent().remove(table)
                data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
            zout.writestr(item, data, compress_type=item.compress_type)
    return dst


def test_a_faithful_copy_exits_0_with_its_verdict(pair):
    source, output = pair
    proc = run(str(source), str(output), "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] in ("identical", "minor") and record["status"] == "assessed"
    assert record["original"] == str(source) and record["checks"]
    text = run(str(source), str(output))
    assert text.returncode == 0 and record["verdict"] in text.stderr and "score" in text.stderr


def test_a_copy_that_lost_a_table_exits_1_and_says_so(pair, tmp_path):
    source, output = pair
    damaged = without_first_table(output, tmp_path / "ohne-tabelle.odt")
    proc = run(str(source), str(damaged), "--json")
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] in ("review", "broken")
    assert any(d["check"] == "tables" and "2 in the source, 1 in the ODF" in d["detail"] for d in record["deductions"])
    text = run(str(source), str(damaged))
    assert text.returncode == 1 and "tables" in text.stderr


@pytest.mark.parametrize("case", ["missing", "not odf", "other family", "not a document"])
def test_what_cannot_be_compared_exits_2_in_one_line(pair, tmp_path, case):
    source, output = pair
    other = {
        "missing": (source, tmp_path / "gone.odt"),
        "not odf": (source, source),
        "other family": (make_xlsx(tmp_path / "mappe.xlsx"), output),
        "not a document": (tmp_path / "notes.txt", output),
    }[case]
    (tmp_path / "notes.txt").write_text("nur Text", encoding="utf-8")
    proc = run(str(other[0]), str(other[1]))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: could not compare:"), proc.stderr
    as_json = json.loads(run(str(other[0]), str(other[1]), "--json").stdout)
    assert as_json["status"] == "not_compared" and as_json["reason"]


def test_visual_adds_the_page_images(pair):
    source, output = pair
    proc = run(str(source), str(output), "--visual", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    record = json.loads(proc.stdout)
    assert record["visual"] and record["visual"].get("status") != "failed", record.get("visual")
    assert "visual" in record["seconds"]
