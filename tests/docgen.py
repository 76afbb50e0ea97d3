"""Small, real Office documents generated for tests and benchmarks (python-docx, openpyxl, python-pptx)."""

from __future__ import annotations

import random
import struct
from pathlib import Path


def make_docx(path: Path, paragraphs: int = 3, seed: int = 0) -> Path:
    import docx
    rnd = random.Random(seed)
    d = docx.Document()
    d.add_heading(f"Document {seed}", level=1)
    for _ in range(paragraphs):
        d.add_paragraph(" ".join(rnd.choice(["Amt", "Bürger", "Antrag", "Frist", "Bescheid", "Akte"])
                                 for _ in range(12)))
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Spalte"
    d.save(path)
    return path


def make_xlsx(path: Path, rows: int = 5, seed: int = 0) -> Path:
    import openpyxl
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in range(1, rows + 1):
        ws.append([r, r * seed, f"Zeile {r}", f"=A{r}*2"])
    wb.save(path)
    return path


def make_pptx(path: Path, slides: int = 2, seed: int = 0) -> Path:
    from pptx import Presentation
    prs = Presentation()
    for i in range(slides):
        s = prs.slides.add_slide(prs.slide_layouts[1])
        s.shapes.title.text = f"Folie {i} / {seed}"
        s.placeholders[1].text = "Inhalt"
    prs.save(path)
    return path


def make_mixed_set(folder: Path, count: int) -> list[Path]:
    """`count` small docx/xlsx/pptx files, in rotation."""
    folder.mkdir(parents=True, exist_ok=True)
    makers = [(make_docx, "docx"), (make_xlsx, "xlsx"), (make_pptx, "pptx")]
    paths = []
    for i in range(count):
        make, ext = makers[i % 3]
        paths.append(make(folder / f"doc{i:03d}.{ext}", seed=i))
    return paths




def make_odt_with_onload_macro(path: Path, marker: Path) -> Path:
    """An ODT whose Basic macro, bound to the document's load event, writes `marker`.

    If LibreOffice ever runs it, `marker` appears: the test's evidence.
    """
    import zipfile
    office = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
    content = f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="{office}" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0" xmlns:xlink="http://www.w3.org/1999/xlink"
 xmlns:ooo="http://openoffice.org/2004/office" xmlns:dom="http://www.w3.org/2001/xml-events"
 office:version="1.3">
<office:scripts><office:event-listeners>
<script:event-listener script:language="ooo:script" script:event-name="dom:load"
 xlink:href="vnd.sun.star.script:Standard.Module1.OnLoad?language=Basic&amp;location=document" xlink:type="simple"/>
</office:event-listeners></office:scripts>
<office:body><office:text><text:p>Dieses Dokument enthält ein Makro.</text:p></office:text></office:body>
</office:document-content>"""
    module = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE script:module PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "module.dtd">
<script:module xmlns:script="http://openoffice.org/2000/script" script:name="Module1" script:language="StarBasic">
Sub OnLoad
  Dim n As Integer
  n = FreeFile
  Open "{marker}" For Output As #n
  Print #n, "macro ran"
  Close #n
End Sub
</script:module>"""
    library = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE library:library PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "library.dtd">
<library:library xmlns:library="http://openoffice.org/2000/library" library:name="Standard" library:readonly="false" library:passwordprotected="false">
 <library:element library:name="Module1"/>
</library:library>"""  # noqa: E501 (the library element as LibreOffice writes it, on one line)
    container = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE library:libraries PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "libraries.dtd">
<library:libraries xmlns:library="http://openoffice.org/2000/library" xmlns:xlink="http://www.w3.org/1999/xlink">
 <library:library library:name="Standard" library:link="false"/>
</library:libraries>"""
    styles = (f'<?xml version="1.0" encoding="UTF-8"?>'
              f'<office:document-styles xmlns:office="{office}" office:version="1.3"/>')
    manifest = """<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3">
 <manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
 <manifest:file-entry manifest:full-path="styles.xml" manifest:media-type="text/xml"/>
 <manifest:file-entry manifest:full-path="Basic/script-lc.xml" manifest:media-type="text/xml"/>
 <manifest:file-entry manifest:full-path="Basic/Standard/script-lb.xml" manifest:media-type="text/xml"/>
 <manifest:file-entry manifest:full-path="Basic/Standard/Module1.xml" manifest:media-type="text/xml"/>
</manifest:manifest>"""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        for name, data in (("content.xml", content), ("styles.xml", styles), ("Basic/script-lc.xml", container),
                           ("Basic/Standard/script-lb.xml", library), ("Basic/Standard/Module1.xml", module),
                           ("META-INF/manifest.xml", manifest)):
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def rewrite_package(src: Path, dst: Path, edits: dict, extra: dict | None = None) -> Path:
    """Copy the OOXML package `src` to `dst`, each part named in `edits` passed (as text) through its
    function, and the parts in `extra` (name -> text) added; `src` is removed."""
    import zipfile
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename in edits:
                data = edits[item.filename](data.decode("utf-8")).encode("utf-8")
            zout.writestr(item, data)
        for name, text in (extra or {}).items():
            zout.writestr(name, text)
    src.unlink()
    return dst


def make_heavy_docx(path: Path, paragraphs: int) -> Path:
    """A docx with many paragraphs, written as raw XML (python-docx adds paragraphs in O(n)).

    LibreOffice needs roughly 1.5 s per 10 000 paragraphs here: a reliable slow document.
    """
    small = path.with_suffix(".seed.docx")
    make_docx(small, paragraphs=1)
    para = ("<w:p><w:r><w:t>Absatz {i}: Der Antrag wurde fristgerecht gestellt und wird "
            "von der Behörde geprüft.</w:t></w:r></w:p>")
    body = "".join(para.format(i=i) for i in range(paragraphs))
    return rewrite_package(small, path, {"word/document.xml": lambda t: t.replace("<w:body>", "<w:body>" + body, 1)})


# --- documents with known content, for the fidelity tests -----------------------------------------

def _png(color: tuple[int, int, int], size: tuple[int, int] = (120, 80)) -> bytes:
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_fidelity_docx(path: Path) -> Path:
    """A Word document with exactly 3 tables, 2 pictures, 1 footnote and 1 comment.

    python-docx writes the tables, pictures and comment; it has no footnote API, so the footnote
    part, its relationship, content type and reference are added to the package afterwards.
    """
    import io

    import docx
    from docx.shared import Inches
    d = docx.Document()
    d.add_heading("Bescheid über den Antrag", level=1)
    intro = d.add_paragraph("Sehr geehrte Damen und Herren, wir bestätigen den Eingang Ihres Antrags.")
    d.add_comment(intro.runs, text="Bitte Datum prüfen", author="Sachbearbeitung", initials="SB")
    for t in range(3):
        d.add_paragraph(f"Tabelle {t + 1}: Übersicht der Fristen")
        table = d.add_table(rows=2 + t, cols=3)
        for r, row in enumerate(table.rows):
            for c, cell in enumerate(row.cells):
                cell.text = f"Zelle {t + 1}.{r + 1}.{c + 1}"
    d.add_picture(io.BytesIO(_png((200, 30, 30))), width=Inches(1.2))
    d.add_paragraph("Zwischen den Bildern steht ein Absatz mit Text.")
    d.add_picture(io.BytesIO(_png((30, 30, 200))), width=Inches(1.2))
    d.add_paragraph("Der Bescheid ergeht gebührenfrei. FUSSNOTE_HIER")
    tmp = path.with_suffix(".tmp.docx")
    d.save(tmp)

    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    footnotes = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:footnotes xmlns:w="{w}">'
                 '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
                 '<w:footnote w:type="continuationSeparator" w:id="0">'
                 '<w:p><w:r><w:continuationSeparator/></w:r></w:p></w:footnote>'
                 '<w:footnote w:id="1"><w:p><w:r><w:footnoteRef/></w:r>'
                 '<w:r><w:t xml:space="preserve"> Gemäß Verwaltungskostengesetz.</w:t></w:r></w:p></w:footnote>'
                 '</w:footnotes>')
    reference = '</w:t></w:r><w:r><w:footnoteReference w:id="1"/></w:r><w:r><w:t>'
    return rewrite_package(tmp, path, {
        "word/document.xml": lambda t: t.replace(" FUSSNOTE_HIER", "", 1).replace(
            "gebührenfrei.</w:t>", "gebührenfrei." + reference + "</w:t>", 1),
        "word/_rels/document.xml.rels": lambda t: t.replace("</Relationships>", (
            '<Relationship Id="rIdFootnotes" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/footnotes" Target="footnotes.xml"/></Relationships>')),
        "[Content_Types].xml": lambda t: t.replace("</Types>", (
            '<Override PartName="/word/footnotes.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.wordprocessingml.footnotes+xml"/></Types>')),
    }, {"word/footnotes.xml": footnotes})


def make_xlsx_with_cached_values(path: Path, wrong: bool = False) -> Path:
    """A workbook whose formulas carry cached values, as Excel stores them.

    openpyxl writes formulas without their values (it does not calculate), so the values are
    added to the sheet afterwards: A3 = A1*A2 (6), A4 = SUM(A1:A2) (5), A5 = A1&"x" ("2x"),
    A6 = A1>A2 (FALSE). With `wrong`, A3's stored value is 7: a value LibreOffice will not compute.
    """
    import re
    from datetime import date

    import openpyxl
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Haushalt"
    ws["A1"], ws["A2"] = 2, 3
    ws["A3"], ws["A4"], ws["A5"], ws["A6"] = "=A1*A2", "=SUM(A1:A2)", '=A1&"x"', "=A1>A2"
    ws["B1"], ws["B2"], ws["C1"] = "Posten", date(2027, 1, 31), True
    ws.merge_cells("D1:E1")
    ws["D1"] = "Zusammengefasst"
    tmp = path.with_suffix(".tmp.xlsx")
    wb.save(tmp)
    cached = {"A3": ("", "7" if wrong else "6"), "A4": ("", "5"), "A5": ("str", "2x"), "A6": ("b", "0")}

    def with_cached_values(text: str) -> str:
        for ref, (kind, value) in cached.items():
            t_attr = f' t="{kind}"' if kind else ""

            def with_value(m, ref=ref, t_attr=t_attr, value=value):
                attrs = re.sub(r' t="[^"]*"', "", m.group(1))
                return f'<c r="{ref}"{attrs}{t_attr}><f>{m.group(2)}</f><v>{value}</v></c>'

            text = re.sub(rf'<c r="{ref}"([^>]*)><f>(.*?)</f>(<v>.*?</v>|<v/>)?</c>', with_value, text)
        return text
    return rewrite_package(tmp, path, {"xl/worksheets/sheet1.xml": with_cached_values})


def make_xlsx_1904(path: Path, iso_dates: bool = False) -> Path:
    """A workbook in the 1904 date system (old Excel for Mac) with dates, a time and a plain number.

    With `iso_dates`, openpyxl writes the dates as ISO text cells (t="d"), otherwise as serial
    days counted from 1904-01-01: A1 2027-01-31, A2 1904-01-02 (serial 1), A3 12:00 on
    2030-06-15, A4 the number 100 (not a date).
    """
    from datetime import date, datetime

    import openpyxl
    from openpyxl.utils.datetime import CALENDAR_MAC_1904
    wb = openpyxl.Workbook()
    wb.epoch = CALENDAR_MAC_1904
    wb.iso_dates = iso_dates
    ws = wb.active
    ws.title = "Termine"
    ws["A1"], ws["A2"], ws["A3"], ws["A4"] = date(2027, 1, 31), date(1904, 1, 2), datetime(2030, 6, 15, 12), 100
    ws["B1"] = "Fristende"
    wb.save(path)
    return path


def make_paged_docx(path: Path, pages: int) -> Path:
    """A Word document of exactly `pages` pages: a heading and a short paragraph on each, then a page break."""
    import docx
    from docx.enum.text import WD_BREAK
    d = docx.Document()
    for i in range(1, pages + 1):
        d.add_heading(f"Seite {i}", level=2)
        p = d.add_paragraph(f"Inhalt der Seite {i}: Der Antrag wird geprüft.")
        if i < pages:
            p.add_run().add_break(WD_BREAK.PAGE)
    d.save(path)
    return path


def make_xlsx_with_new_errors(path: Path) -> Path:
    """A workbook whose formulas have no stored values (openpyxl does not calculate) and give errors
    in LibreOffice: B1 =NICHTDA(A1) (#NAME?, no such function), B2 ="abc"+1 (#VALUE!), B3 =A1*2 (fine),
    B4 =NOW()+NICHTDA(1) (volatile, #NAME?)."""
    import openpyxl
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Fehler"
    ws["A1"] = 2
    ws["B1"], ws["B2"], ws["B3"], ws["B4"] = "=NICHTDA(A1)", '="abc"+1', "=A1*2", "=NOW()+NICHTDA(1)"
    wb.save(path)
    return path


def make_xlsx_with_comments(path: Path) -> Path:
    """A workbook with two cell comments (notes) on two sheets: their words appear nowhere else."""
    import openpyxl
    from openpyxl.comments import Comment
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Haushalt"
    ws["A1"], ws["A2"] = "Posten", 120
    ws["A2"].comment = Comment("Betrag vorläufig geschätzt", "Kämmerei")
    other = wb.create_sheet("Personal")
    other["B3"] = "Stellen"
    other["B3"].comment = Comment("Stellenplan Entwurf Dezember", "Personalamt")
    wb.save(path)
    return path


def make_pptx_with_comments(path: Path, modern: bool = False) -> Path:
    """A presentation of two slides with comments python-pptx cannot write, added to the package.

    Classic comments (ppt/comments/comment1.xml, as PowerPoint 2007-2019 writes them): one on
    slide 1, "Zahlen bitte prüfen". With `modern`, PowerPoint 365's threaded comments instead
    (ppt/comments/modernComment_*.xml): one on slide 1 with one reply, "Ergebnis bestätigt".
    """
    import re
    import zipfile
    tmp = path.with_suffix(".tmp.pptx")
    make_pptx(tmp, slides=2)
    p = "http://schemas.openxmlformats.org/presentationml/2006/main"
    rel_ns = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    if modern:
        part, authors = "ppt/comments/modernComment_100_1.xml", "ppt/authors.xml"
        body = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                '<p188:cmLst xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
                f'xmlns:r="{rel_ns}" xmlns:p188="http://schemas.microsoft.com/office/powerpoint/2018/8/main">'
                '<p188:cm id="{11111111-1111-4111-8111-111111111111}" '
                'authorId="{22222222-2222-4222-8222-222222222222}" '
                'created="2026-11-02T09:00:00.000">'
                '<pc:sldMkLst xmlns:pc="http://schemas.microsoft.com/office/powerpoint/2013/main/command">'
                '<pc:docMk/><pc:sldMk cId="0" sldId="256"/></pc:sldMkLst>'
                '<p188:replyLst><p188:reply id="{33333333-3333-4333-8333-333333333333}" '
                'authorId="{22222222-2222-4222-8222-222222222222}" created="2026-11-02T10:00:00.000">'
                '<p188:txBody><a:bodyPr/><a:lstStyle/><a:p><a:r><a:t>Ergebnis bestätigt</a:t></a:r></a:p>'
                '</p188:txBody></p188:reply></p188:replyLst>'
                '<p188:txBody><a:bodyPr/><a:lstStyle/><a:p><a:r><a:t>Quelle der Zahlen angeben</a:t></a:r></a:p>'
                '</p188:txBody></p188:cm></p188:cmLst>')
        author_xml = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                      '<p188:authorLst xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
                      f'xmlns:r="{rel_ns}" xmlns:p188="http://schemas.microsoft.com/office/powerpoint/2018/8/main">'
                      '<p188:author id="{22222222-2222-4222-8222-222222222222}" name="Referat 1" initials="R1" '
                      'userId="Referat 1" providerId="None"/></p188:authorLst>')
        slide_rel = "http://schemas.microsoft.com/office/2018/10/relationships/comments"
        author_rel = "http://schemas.microsoft.com/office/2018/10/relationships/authors"
        types = ('<Override PartName="/ppt/comments/modernComment_100_1.xml" ContentType="application/'
                 'vnd.ms-powerpoint.comments+xml"/><Override PartName="/ppt/authors.xml" '
                 'ContentType="application/vnd.ms-powerpoint.authors+xml"/>')
        target = "../comments/modernComment_100_1.xml"
    else:
        part, authors = "ppt/comments/comment1.xml", "ppt/commentAuthors.xml"
        body = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                f'<p:cmLst xmlns:p="{p}"><p:cm authorId="0" dt="2026-11-02T09:00:00.000" idx="1">'
                '<p:pos x="10" y="10"/><p:text>Zahlen bitte prüfen</p:text></p:cm></p:cmLst>')
        author_xml = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                      f'<p:cmAuthorLst xmlns:p="{p}"><p:cmAuthor id="0" name="Referat 1" initials="R1" '
                      'lastIdx="1" clrIdx="0"/></p:cmAuthorLst>')
        slide_rel = f"{rel_ns}/comments"
        author_rel = f"{rel_ns}/commentAuthors"
        types = ('<Override PartName="/ppt/comments/comment1.xml" ContentType="application/'
                 'vnd.openxmlformats-officedocument.presentationml.comments+xml"/><Override '
                 'PartName="/ppt/commentAuthors.xml" ContentType="application/'
                 'vnd.openxmlformats-officedocument.presentationml.commentAuthors+xml"/>')
        target = "../comments/comment1.xml"
    rewrite_package(tmp, path, {
        "ppt/slides/_rels/slide1.xml.rels": lambda t: t.replace("</Relationships>", (
            f'<Relationship Id="rIdComments" Type="{slide_rel}" Target="{target}"/></Relationships>')),
        "ppt/_rels/presentation.xml.rels": lambda t: t.replace("</Relationships>", (
            f'<Relationship Id="rIdAuthors" Type="{author_rel}" Target="{authors[4:]}"/></Relationships>')),
        "[Content_Types].xml": lambda t: t.replace("</Types>", types + "</Types>"),
    }, {part: body, authors: author_xml})
    if modern:                                  # the slide's id in the comment must be the real one
        with zipfile.ZipFile(path) as z:
            sld_id = re.search(rb'<p:sldId id="(\d+)"', z.read("ppt/presentation.xml")).group(1)
        assert sld_id == b"256", sld_id
    return path


def make_sectioned_docx(path: Path) -> Path:
    """A Word document of two sections: A4 portrait with top 30, bottom 25, left and right 20 mm and a
    header (15 mm from the edge) and footer (10 mm); then A4 landscape with the same margins."""
    import docx
    from docx.enum.section import WD_ORIENT, WD_SECTION
    from docx.shared import Mm
    d = docx.Document()
    first = d.sections[0]
    first.page_width, first.page_height = Mm(210), Mm(297)
    first.top_margin, first.bottom_margin, first.left_margin, first.right_margin = Mm(30), Mm(25), Mm(20), Mm(20)
    first.header_distance, first.footer_distance = Mm(15), Mm(10)
    first.header.paragraphs[0].text = "Amt für Ordnung"
    first.footer.paragraphs[0].text = "Seite"
    d.add_paragraph("Erster Abschnitt im Hochformat.")
    second = d.add_section(WD_SECTION.NEW_PAGE)
    second.orientation = WD_ORIENT.LANDSCAPE
    second.page_width, second.page_height = Mm(297), Mm(210)
    d.add_paragraph("Zweiter Abschnitt im Querformat.")
    d.save(path)
    return path


# ------------------------------------------------------------------------ binary Office (OLE2, BIFF)
def make_ole(path: Path, streams: dict[str, bytes]) -> Path:
    """A minimal OLE2 compound file (version 4, 4096-byte sectors) holding `streams`.

    "a/b" puts stream b in storage a. Streams are padded to 4096 bytes so that none lives in the
    mini stream, which this writer does not implement; readers stop at their own end markers.
    """
    sector = 4096
    free, end, fatsect = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
    # directory tree: entry 0 is the root; storages are created from the paths
    entries = [{"name": "Root Entry", "type": 5, "kids": [], "data": b""}]
    storages = {"": 0}
    for full, data in streams.items():
        parts = full.split("/")
        parent = ""
        for depth, part in enumerate(parts):
            key = "/".join(parts[:depth + 1])
            is_stream = depth == len(parts) - 1
            if key not in storages:
                entries.append({"name": part, "type": 2 if is_stream else 1, "kids": [],
                                "data": data.ljust(sector, b"\x00") if is_stream else b""})
                storages[key] = len(entries) - 1
                entries[storages[parent]]["kids"].append(len(entries) - 1)
            parent = key
    # sectors: stream data, then directory, then FAT
    fat: list[int] = []
    body = bytearray()
    for e in entries:
        if e["type"] == 2:
            count = -(-len(e["data"]) // sector)
            e["start"] = len(fat)
            fat.extend(range(len(fat) + 1, len(fat) + count))
            fat.append(end)
            body += e["data"].ljust(count * sector, b"\x00")
        else:
            e["start"], e["data"] = end, b""
    dir_start = len(fat)
    dir_sectors = -(-len(entries) * 128 // sector)
    fat.extend(range(dir_start + 1, dir_start + dir_sectors))
    fat.append(end)
    n_fat = 1
    while (len(fat) + n_fat) > n_fat * (sector // 4):
        n_fat += 1
    fat_start = len(fat)
    fat.extend([fatsect] * n_fat)
    fat.extend([free] * (n_fat * (sector // 4) - len(fat)))
    assert n_fat <= 109
    # directory entries: siblings as a right-leaning chain in CFB name order
    for e in entries:
        e.update(left=free, right=free, child=free)
    for e in entries:
        kids = sorted(e["kids"], key=lambda i: (len(entries[i]["name"]), entries[i]["name"].upper()))
        if kids:
            e["child"] = kids[0]
            for a, b in zip(kids, kids[1:]):
                entries[a]["right"] = b
    directory = bytearray()
    for e in entries:
        name = e["name"].encode("utf-16-le") + b"\x00\x00"
        directory += struct.pack("<64sHBBIII16sIQQIQ", name, len(name), e["type"], 1, e["left"], e["right"],
                                 e["child"], b"\x00" * 16, 0, 0, 0, e["start"], len(e["data"]))
    directory = bytes(directory).ljust(dir_sectors * sector, b"\x00")
    difat = list(range(fat_start, fat_start + n_fat)) + [free] * (109 - n_fat)
    header = struct.pack("<8s16sHHHHH6sIIIIIIIII109I", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\x00" * 16,
                         0x3E, 4, 0xFFFE, 12, 6, b"\x00" * 6, dir_sectors, n_fat, dir_start, 0, 4096,
                         end, 0, end, 0, *difat)
    fat_bytes = struct.pack(f"<{len(fat)}I", *fat)
    path.write_bytes(header.ljust(sector, b"\x00") + bytes(body) + directory + fat_bytes)
    return path


def biff(*records: tuple[int, bytes], version: int = 0x0600) -> bytes:
    """A workbook globals substream: BOF, the given records, EOF."""
    out = struct.pack("<HHHH12x", 0x0809, 16, version, 0x0005)
    for number, payload in records:
        out += struct.pack("<HH", number, len(payload)) + payload
    return out + struct.pack("<HH", 0x000A, 0)


FILEPASS, TEMPLATE = 0x002F, 0x0060
XOR_VELVET_SWEATSHOP = struct.pack("<HHH", 0, 0x1234, 0x9A0A)    # type XOR, key, verifier of "VelvetSweatshop"
XOR_OTHER_PASSWORD = struct.pack("<HHH", 0, 0x1234, 0x1111)


# ------------------------------------------------------------------ files built to be expensive
def make_big_xlsx(path: Path) -> Path:
    """A real workbook with 100 MB of stored picture bytes appended as a part."""
    import zipfile
    make_xlsx(path)
    chunk = random.Random(1).randbytes(1 << 20)
    with zipfile.ZipFile(path, "a") as z, z.open(zipfile.ZipInfo("xl/media/scan.bin"), "w", force_zip64=True) as member:
        for _ in range(100):
            member.write(chunk)                    # 100 MB, stored
    return path


def make_big_ole_workbook(path: Path) -> Path:
    """An encrypted binary workbook whose Workbook stream is 32 MB long."""
    return make_ole(path, {"Workbook": biff((FILEPASS, XOR_OTHER_PASSWORD)).ljust(32 << 20, b"\x00")})


#: A "billion laughs" content.xml for an ODF package: well-formed, and 10 GB of "a" if its
#: entities were expanded.
ENTITY_BOMB = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
               + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
               + ']><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0">'
               '&j;</office:document-content>').encode()


# ------------------------------------------------------------------ a workbook saved by LibreOffice
# A one-cell workbook saved by LibreOffice 7.4 ("MS Excel 97" filter) with the password
# "VelvetSweatshop": RC4-encrypted, FILEPASS record. `soffice --convert-to ods` opens it without
# asking for a password (checked), like Excel does.
VELVET_XLS = (
    "eNrtWAlUk0kS7oSAASGEQwFRCIeCcoX1CM4QQQ3hVOQQ8BggCIgQAigyHCKniOMthxeoHIOMIOAJOg6iqIiioAyioBAZkQHx"
    "ABxHHCRbHX/nuT53nrjz3r7dR+VVdeXrv7s6f1VXV6ehXkGYc2zCQ/QRfY0k0LBIGkl9gJGAqe+/0BEiE9iwSCR6D4tG6X+K"
    "3hIt9iEF/CcJjH0+hvCrNNGO0v8nOaMQ+IQjBrJCAmhXoyg0EhoPEfPhfJ8zZvgzn/tcGrX/5fZx/sZ5XAL44/2Pcz3e/zLA"
    "Y4FlgeWAacDy744ApACsCKwErAw8ThwTCKkAqwKrAU8gbE4kWsyaoDOI79qjOea/RtJU8KKUJPpRrg67XOx7EzQL4gJ/Hqfc"
    "lm2MWxYgGrp+xzWrOEqFzepxbuUrpd5JKZ/1kv/zYLpxToz7jE1RibYR8dXxqQ8hlsooF0Cut+mAmZajUHTMi5tTPJl5JTlS"
    "IbY1WU7617GVsVcsZ6bu76jbmq28U7LR5Xhmd2KAXWEnarr47Jx2Wa+XxIGrX7UfWu985kGufp7OptqaCvs5qi22XVf09lY4"
    "v7Dufl3QqCGyMX3jyQpoEBlppLVFOCSMH/86uPP6sJbaPLD+rJ5HIiOrw1UQ3mzQdO5lAZqYXgr6Au45kFJBbIjbWsb49S4t"
    "zn0iXyctp2Dz220ulvCcL3cryGtV2iA3qdNASgyUw5jJQS2gLxWaQkRnUjkNgVpJF34YE1US59a63Vbq3muPi1OWNuTh3jLH"
    "BJX7e2ZQWkx5YdpO27wLLNKZBcYXhBwv3Mvsfms8IF9qvftUvEf5L8rxeyXk40w5Rn1eB3BvsVeruXP0kg2LDlRIfJu4RCuG"
    "LCjrzs1u38fSoMiiabNtqhqDmCfDvOpoQthxio9vPKI4b5+8lU3xcZ74plXWMSEU43MO1rcf9F2zRVKliTUjp97g5qWhLoyz"
    "dz/q0SkP83hsJJUauORxqI935xKM99VFxerPcbtcal0tOG6TtXAbGlyN8bkRJX5BfM3i3ge5Jw97efT6h500wHg748y+vMKt"
    "41k/1OXPjjIT5f7hWYBximzfCXuVEF/fPlVBTvaugrUySnEYl0h9HjlJXYkXvlZIMjGONB6crnMF4+4uw22BrnI9Wc4mIm0L"
    "zWwFvdAWjLcw1k/8af6xWsOw11RfU+NFu3Z4mWN8lqH+N2bULBkjo8N0XffUQDerMc4Yz+c5seVtIiYX/NYX7+klSc+wL2rH"
    "+PKsgDheT8xADIvG1jKKKazgzDfG+IkA+zUpRXFzDcb9pBz4yN2ulInOYtw+sON8JS287HS0j79WGpJccyH/Nsab2xP6gxUa"
    "sgYOBS5t5t2tdbHoUMH4AvMbXT9y9k9Sv7qSkqF0U6fE9dFljB8qEmzUS+vzV1PKnqm3dOAsX6++CeMH4q+pFXU7SdOO/Hqa"
    "0/asWPMyJRnj1k9rTrI7T4Xv/mZsumTabG6Q9pZ1GK849TzA2+LgGVZG30sPnX7h/ZtZM9LIFCTclLAAt/1DR1bidhrtxVzc"
    "yvjQgnCbvpibgltdtxoDb4jdGs8NkLdLIMWv7GuW59r1Dl7t2gIZX3lAzvQCiYqeNFWmdtV0az1BSxEvwyTUxyUzLm+GLspz"
    "Ojo/g3UoZa16fNetTvb242Gq0a96J439PTFe8GZ7bKNqv2P/smEq+67D2dLsW5yktvN9ezytTi+YNovrF/27WU+H+VFy9EuB"
    "1N2gymXGT4bgvIg+f6226SgtkV9lqSYX9sclCxEcMAypIcNtU08a76SuoI5DPjFh9188DHHVritkFm4INSORvy9rwKfQu2xF"
    "/5dsJQt7cpW9PEidjQog03PocHLJ6wlvL4zLVfcCJL8iHhCZzc2WR6Uj70yGtxKqnzA3AXpeZ0wDqfLKAOQ8h0SQHXeVkS5i"
    "PojZ03rmWOXm9Obnr2ivav1p/c9s+G5Mk94210xLpyXjsi81jkNTUXxSco0T8+Dj2nNzIja6Swr5z79qTUpImVB55qJlnsbz"
    "yuaJyRbcI4K9+Ukw9T+eJoNUHZwCixmSZws5jByhHug6ZhE6hd7VE/VBp5A33tlml9g2FfQdL2tyz2ptSctB2kjbdMKAX1zm"
    "5mcdIflGHB07gYlh9fR11Yr++7y/W3m0eojZsRjmXhgeC6+jV/fGxsJ+5Wt315uzEJmGuj336d777sWeJ+Y/R4UUUMl0JGD3"
    "KJD7FdpVi0IH6k9w174FD5xXGzv9jX5yZ0BpL1qExlQXn5rP8LRrtbOyebhft8vMI/Jh2Z6XBU+3OfBsGq+kB1bf/D5jRdLy"
    "bwd/0Y9juGtlqs8c/O1wNOn64GGDGO6bBI3uW83ubrSvy+tKrFhRLZfmkBXRznKG/KVYdTrPyH/HHdJbQ/ukSVBG8PZrMg5M"
    "2R0s4ZC2mF3avpKqgpo6W5QHdhl1KaqcyC9VPxQ9PX95vrXHPplP1TIkqBwkZN7VQHQqWYxVveviqoNYsGrF6pA1If7hDKvI"
    "FX58xmyWkSvPx4/P9xMHz7xV/v5m/0ntRXpXPn0xDYvwHORPzYuEGw72DzoG0It2UpGB3ol7TMDWEVGP+82I+sySqNEciDrN"
    "g6jVfIl6LZSo8brfIqRB6KbEuPf0V7pJr14bP+YBaSTrxwi56UZTlrE6PW03rN9wsISD68uPsOVEnUgimP7BWv8dPkp/H/2d"
    "9z+xnz7ag58ag+8aVcQfSe5gfTUKQj7idQSNeP2KEBVk4u4iGsG9qlTq/T6bD3aDYY84whoCv8i+xAd3sM8Zg/OS7Z/73BHx"
    "kd8X+08G7I/0/jeJuKsh8X3PBa2F3x+MeGLf20IU+It9gpFwtAp0wV/MpU/YlxzB+8c5qPhP+xywsEK8Bj9xBI5sPWZf8Pu1"
    "gMNH7/9i+id0N9kL"
)


def velvet_xls(path: Path) -> Path:
    """Write the VelvetSweatshop workbook (above) to `path`."""
    import base64
    import zlib
    path.write_bytes(zlib.decompress(base64.b64decode("".join(VELVET_XLS))))
    return path
