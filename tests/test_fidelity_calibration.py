"""Fidelity calibration: converted corpus documents, then damaged on purpose, are never judged fine.

Each ODF the real pool wrote from a corpus file is changed the way a bad conversion would change it:
paragraphs dropped, a table, a picture or the last slide removed, cell values and formulas changed.
Whatever share of the document that is, the verdict against the original must be "review" or
worse: one slide of twenty-five is a few points, but a slide nobody will see again. (Skipped
without the corpus.)
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from converters.formats import FORMATS
from core.outcomes import Outcome
from reports.fidelity import assess, read_facts
from reports.scoring import FidelitySettings, Verdict

pytestmark = pytest.mark.corpus

NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
}

TEXTS = ["documents/tables.docx", "documents/sample-docx.docx", "documents/Docx4j_Russian.docx",
         "documents/testWORD_embedded_pics.docx", "documents/toc.docx", "documents/test_TIKA-1251.doc",
         "documents/testException1.doc", "documents/testRTFHyperlink.rtf", "documents/tbl-having-tables.docx"]
SLIDES = ["presentations/testPPT.potm", "presentations/testPPT_skipBadCompressedObject.ppt",
          "presentations/tbl-cell.pptx", "presentations/testMSChart-govdocs-428996.pptx",
          "presentations/testPPT_masterFooter.ppt", "presentations/testPPT_embeded.ppt", "presentations/table.pptx",
          "presentations/testComment.pptx", "presentations/testPPT_macros.pptm", "presentations/testWPSAttachment.ppt"]
SHEETS = ["spreadsheets/testEXCEL_5.xls", "spreadsheets/issue_553.xlsx", "spreadsheets/testComment.xlsx",
          "spreadsheets/contains_chartsheets.xlsx", "spreadsheets/testEXCEL_labels-govdocs-515858.xls",
          "spreadsheets/testEXCEL_charts.xlsx", "legacy/testEXCEL_4.xls"]

SETTINGS = FidelitySettings(visual="none")


@pytest.fixture(scope="module")
def converted(corpus, pool, tmp_path_factory):
    """(original, ODF output, format) of every selected corpus file, converted by the real pool."""
    out = tmp_path_factory.mktemp("calibration")
    jobs = [(corpus / rel, out, Path(rel).name.replace(".", "_")) for rel in TEXTS + SLIDES + SHEETS]
    done = {}
    for result in pool.convert_many(jobs):
        rel = Path(result.source).relative_to(corpus).as_posix()
        assert result.outcome is Outcome.CONVERTED, (rel, result.message)
        done[rel] = (Path(result.source), Path(result.output), FORMATS[result.format])
    return done


def mutate(odf: Path, dst: Path, change) -> bool:
    """Copy `odf` to `dst` with content.xml changed by `change(root) -> bool` (False: nothing to change)."""
    with zipfile.ZipFile(odf) as zin:
        root = etree.fromstring(zin.read("content.xml"))
        if not change(root):
            return False
        with zipfile.ZipFile(dst, "w") as zout:
            for item in zin.infolist():        # mimetype first and stored, as ODF requires
                data = etree.tostring(root, xml_declaration=True, encoding="UTF-8") \
                    if item.filename == "content.xml" else zin.read(item)
                zout.writestr(item, data, compress_type=item.compress_type)
    return True


def _body(root) -> etree._Element:
    return root.find("office:body", NS)[0]


def _text_of(el) -> str:
    return "".join(el.itertext())


def drop_paragraphs(root, rng: random.Random) -> bool:
    """Drop three paragraphs that hold at least three words each (none inside tables or frames)."""
    body = _body(root)
    candidates = [p for p in body.iter(f"{{{NS['text']}}}p", f"{{{NS['text']}}}h")
                  if len(_text_of(p).split()) >= 3 and p.getparent() is not None
                  and not any(a.tag.startswith(f"{{{NS['table']}}}") or a.tag.startswith(f"{{{NS['draw']}}}")
                              for a in p.iterancestors())]
    if len(candidates) < 3:
        return False
    for p in rng.sample(candidates, 3):
        p.getparent().remove(p)
    return True


def drop_one(tag: str):
    def change(root, rng: random.Random) -> bool:
        found = [el for el in _body(root).iter(tag) if el.getparent() is not None]
        if tag == f"{{{NS['draw']}}}frame":
            # a picture of the text itself: pictures in footnotes and in deleted text are not counted
            found = [f for f in found if f.find("draw:image", NS) is not None and f.find("draw:object", NS) is None
                     and not any(a.tag in (f"{{{NS['text']}}}note", f"{{{NS['text']}}}tracked-changes")
                                 for a in f.iterancestors())]
        if tag == f"{{{NS['table']}}}table":
            found = [t for t in found if not any(a.tag == tag for a in t.iterancestors())]
        if not found:
            return False
        victim = rng.choice(found)
        victim.getparent().remove(victim)
        return True
    return change


def drop_last_slide(root, rng: random.Random) -> bool:
    pages = _body(root).findall("draw:page", NS)
    if len(pages) < 2:
        return False
    pages[-1].getparent().remove(pages[-1])
    return True


def change_values(root, rng: random.Random) -> bool:
    """Change the value of up to three cells holding a number or text (not formulas)."""
    cells = [c for c in _body(root).iter(f"{{{NS['table']}}}table-cell")
             if c.get(f"{{{NS['table']}}}formula") is None
             and (c.get(f"{{{NS['office']}}}value") is not None or _text_of(c).strip())]
    if not cells:
        return False
    for cell in rng.sample(cells, min(3, len(cells))):
        value = cell.get(f"{{{NS['office']}}}value")
        if value is not None:
            cell.set(f"{{{NS['office']}}}value", str(float(value) + 7))
        for p in cell.findall("text:p", NS):
            cell.remove(p)
        p = etree.SubElement(cell, f"{{{NS['text']}}}p")
        p.text = str(float(value) + 7) if value is not None else "geändert"
    return True


def change_formulas(root, rng: random.Random) -> bool:
    """Turn up to three formulas into their values, and change those values."""
    cells = [c for c in _body(root).iter(f"{{{NS['table']}}}table-cell") if c.get(f"{{{NS['table']}}}formula")]
    if not cells:
        return False
    for cell in rng.sample(cells, min(3, len(cells))):
        del cell.attrib[f"{{{NS['table']}}}formula"]
        value = cell.get(f"{{{NS['office']}}}value")
        if value is not None:
            cell.set(f"{{{NS['office']}}}value", str(float(value) + 1))
    return True


MUTATIONS = {
    "text": [("paragraphs", drop_paragraphs), ("table", drop_one(f"{{{NS['table']}}}table")),
             ("picture", drop_one(f"{{{NS['draw']}}}frame"))],
    "presentation": [("last slide", drop_last_slide), ("picture", drop_one(f"{{{NS['draw']}}}frame")),
                     ("table", drop_one(f"{{{NS['table']}}}table"))],
    "spreadsheet": [("cell values", change_values), ("formulas", change_formulas)],
}
# What the source's reader must count for a loss to be measurable at all: the PowerPoint 97-2003
# reader counts slides and their text, not pictures (reports.legacy says so in its notes).
MEASURED_BY = {"picture": ("images", "pictures"), "table": ("tables",), "last slide": ("slides",)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lost_content_is_never_identical_or_minor(converted, tmp_path, seed):
    rng = random.Random(seed)
    judged, wrong, unmeasured = [], [], []
    for rel, (source, output, fmt) in sorted(converted.items()):
        counted = read_facts(source, fmt, SETTINGS).counts
        for what, change in MUTATIONS[fmt.family.value]:
            if what in MEASURED_BY and not any(key in counted for key in MEASURED_BY[what]):
                unmeasured.append(f"{rel}: {what}")
                continue
            mutated = tmp_path / f"{Path(rel).stem}-{what.replace(' ', '_')}{output.suffix}"
            if not mutate(output, mutated, lambda root, c=change: c(root, rng)):
                continue
            record = assess(source, mutated, fmt, SETTINGS)
            judged.append((rel, what, record.verdict))
            if record.verdict not in (Verdict.REVIEW, Verdict.BROKEN):
                wrong.append(f"{rel} without {what}: {record.verdict} ({record.score}), deductions "
                             + "; ".join(f"{c.name} {c.points}" for c in record.deductions))
    kinds = {(Path(rel).parts[0], what) for rel, what, _ in judged}
    # every kind of damage was tried on the selection, not skipped for want of a table or a picture
    assert {("documents", "paragraphs"), ("documents", "table"), ("documents", "picture"),
            ("presentations", "last slide"), ("presentations", "picture"), ("spreadsheets", "cell values"),
            ("spreadsheets", "formulas")} <= kinds, kinds
    assert not wrong, "\n".join(wrong)
    print(f"\n{len(judged)} damaged copies judged review or broken; not measurable by the source's reader: "
          + ", ".join(unmeasured))


def test_the_unchanged_conversions_are_judged_as_before(converted):
    """The mutations are what makes the difference: most untouched conversions stay identical or minor."""
    fine = [rel for rel, (source, output, fmt) in converted.items()
            if assess(source, output, fmt, SETTINGS).verdict in (Verdict.IDENTICAL, Verdict.MINOR)]
    assert len(fine) >= len(converted) * 0.7, sorted(set(converted) - set(fine))
