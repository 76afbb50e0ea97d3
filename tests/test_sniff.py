"""converters.sniff: what a file really is, by its bytes, whatever its name says."""

from __future__ import annotations

import os
import random
import shutil
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from converters.formats import FORMATS, Family
from converters.sniff import Sniffed, sniff
from core.outcomes import Outcome
from docgen import (FILEPASS, TEMPLATE, XOR_OTHER_PASSWORD, XOR_VELVET_SWEATSHOP, biff, make_big_ole_workbook,
                    make_big_xlsx, make_ole, velvet_xls)

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not found: corpus tests skipped")


# ------------------------------------------------------------------------------- fixtures: OOXML
@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Real documents made by python-docx, openpyxl, python-pptx and msoffcrypto-tool."""
    import docx
    import msoffcrypto.format.ooxml
    import openpyxl
    from pptx import Presentation

    folder = tmp_path_factory.mktemp("made")
    d = docx.Document()
    d.add_paragraph("Bescheid über den Antrag")
    d.save(folder / "plain.docx")
    wb = openpyxl.Workbook()
    wb.active.append([1, 2, "=A1+B1"])
    wb.save(folder / "plain.xlsx")
    prs = Presentation()
    prs.slides.add_slide(prs.slide_layouts[0]).shapes.title.text = "Folie"
    prs.save(folder / "plain.pptx")
    with open(folder / "plain.docx", "rb") as src, open(folder / "encrypted.docx", "wb") as dst:
        msoffcrypto.format.ooxml.OOXMLFile(src).encrypt("geheim", dst)
    with open(folder / "plain.xlsx", "rb") as src, open(folder / "velvet.xlsx", "wb") as dst:
        msoffcrypto.format.ooxml.OOXMLFile(src).encrypt("VelvetSweatshop", dst)
    return {"docx": folder / "plain.docx", "xlsx": folder / "plain.xlsx", "pptx": folder / "plain.pptx",
            "encrypted": folder / "encrypted.docx", "velvet": folder / "velvet.xlsx"}


def copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def rewrite_zip(src: Path, dst: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of the ZIP `src` with members replaced (bytes) or removed (None)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename in change:
                if change[info.filename] is not None:
                    zout.writestr(info.filename, change[info.filename])
            else:
                zout.writestr(info, zin.read(info))
    return dst


def with_main_type(docx: Path, dst: Path, content_type: str) -> Path:
    """The docx `docx` with its main part declared as `content_type`."""
    with zipfile.ZipFile(docx) as z:
        types = z.read("[Content_Types].xml").decode()
    old = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    assert old in types
    return rewrite_zip(docx, dst, {"[Content_Types].xml": types.replace(old, content_type).encode()})


def fib(flags: int = 0, n_fib: int = 193) -> bytes:
    """The start of a WordDocument stream: a FIB with the given flags (fDot 0x1, fEncrypted 0x100)."""
    data = bytearray(64)
    struct.pack_into("<HH", data, 0, 0xA5EC, n_fib)
    struct.pack_into("<H", data, 0x0A, flags | 0x0200)     # fWhichTblStm: the 1Table stream
    return bytes(data)


def current_user(token: int) -> bytes:
    """A PowerPoint "Current User" stream: CurrentUserAtom with the given headerToken."""
    return struct.pack("<HHIIII", 0, 0x0FF6, 0x14, 0x14, token, 0)




# =============================================================================== OOXML
@pytest.mark.parametrize("expected", ["docx", "xlsx", "pptx"])
def test_generated_ooxml_is_what_it_is(made, expected):
    s = sniff(made[expected])
    assert s == Sniffed(FORMATS[expected], None, s.reason, "zip")
    assert "OOXML" in s.reason


def test_xlsx_named_docx_is_sniffed_as_xlsx(made, tmp_path):
    s = sniff(copy(made["xlsx"], tmp_path / "report.docx"))
    assert s.format is FORMATS["xlsx"] and s.outcome is None


@pytest.mark.parametrize("suffix", [".pptx", ".bin", ".doc", ""])
def test_wrong_extension_changes_nothing(made, tmp_path, suffix):
    assert sniff(copy(made["docx"], tmp_path / f"x{suffix}")) == sniff(made["docx"])


@pytest.mark.parametrize("content_type, expected", [
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml", "docx"),
    ("application/vnd.ms-word.document.macroEnabled.main+xml", "docm"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml", "dotx"),
    ("application/vnd.ms-word.template.macroEnabledTemplate.main+xml", "dotm"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml", "xlsx"),
    ("application/vnd.ms-excel.sheet.macroEnabled.main+xml", "xlsm"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml", "xltx"),
    ("application/vnd.ms-excel.template.macroEnabled.main+xml", "xltm"),
    ("application/vnd.ms-excel.sheet.binary.macroEnabled.main", "xlsb"),
    ("application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml", "pptx"),
    ("application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml", "pptm"),
    ("application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml", "ppsx"),
    ("application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml", "ppsm"),
    ("application/vnd.openxmlformats-officedocument.presentationml.template.main+xml", "potx"),
    ("application/vnd.ms-powerpoint.template.macroEnabled.main+xml", "potm"),
])
def test_main_part_content_type_decides_the_format(made, tmp_path, content_type, expected):
    s = sniff(with_main_type(made["docx"], tmp_path / "x.docx", content_type))
    assert s.format is FORMATS[expected] and s.outcome is None


def test_strict_ooxml_relationship_is_understood(made, tmp_path):
    with zipfile.ZipFile(made["docx"]) as z:
        rels = z.read("_rels/.rels").decode()
    strict = rels.replace("http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument",
                          "http://purl.oclc.org/ooxml/officeDocument/relationships/officeDocument")
    assert strict != rels
    s = sniff(rewrite_zip(made["docx"], tmp_path / "strict.docx", {"_rels/.rels": strict.encode()}))
    assert s.format is FORMATS["docx"] and s.outcome is None


def test_package_without_rels_falls_back_to_the_declared_main_type(made, tmp_path):
    s = sniff(rewrite_zip(made["docx"], tmp_path / "norels.docx", {"_rels/.rels": None}))
    assert s.format is FORMATS["docx"] and s.outcome is None


def test_ooxml_without_its_main_part_is_unreadable(made, tmp_path):
    s = sniff(rewrite_zip(made["docx"], tmp_path / "hollow.docx", {"word/document.xml": None}))
    assert s.outcome is Outcome.UNREADABLE and s.format is FORMATS["docx"]
    assert "word/document.xml" in s.reason


def test_broken_content_types_is_unreadable(made, tmp_path):
    s = sniff(rewrite_zip(made["docx"], tmp_path / "bad.docx", {"[Content_Types].xml": b"<Types><Default"}))
    assert s.outcome is Outcome.UNREADABLE and s.container == "zip"


@pytest.mark.parametrize("suffix, outcome", [(".vsdx", Outcome.UNSUPPORTED), (".docx", Outcome.UNREADABLE)])
def test_ooxml_of_another_kind_is_not_converted(made, tmp_path, suffix, outcome):
    s = sniff(with_main_type(made["docx"], tmp_path / f"drawing{suffix}", "application/vnd.ms-visio.drawing.main+xml"))
    assert s.outcome is outcome and s.format is None and "Visio" in s.reason


def test_encrypted_ooxml_is_encrypted(made, tmp_path):
    s = sniff(made["encrypted"])
    assert s.outcome is Outcome.ENCRYPTED and s.container == "ole"
    assert s.reason == "encrypted OOXML package (EncryptedPackage stream)"
    assert s.format is FORMATS["docx"]            # only the name can tell which OOXML format it is
    renamed = sniff(copy(made["encrypted"], tmp_path / "attachment.bin"))
    assert renamed.outcome is Outcome.ENCRYPTED and renamed.format is None


@pytest.mark.parametrize("suffix", [".docx", ".zip"])
def test_truncated_zip_is_unreadable(made, tmp_path, suffix):
    data = made["docx"].read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    s = sniff(tmp_path / f"cut{suffix}")
    # Its first local headers still show an OOXML package: a broken document whatever the name.
    assert s.outcome is Outcome.UNREADABLE and s.container == "zip"
    assert s.reason.startswith("truncated ZIP: no central directory")
    assert s.format is FORMATS["docx"]


def test_truncated_foreign_zip_is_unsupported_unless_named_office(tmp_path):
    with zipfile.ZipFile(tmp_path / "full.zip", "w") as z:
        z.writestr("photos/readme.txt", "x" * 5000)
    data = (tmp_path / "full.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[:200])
    (tmp_path / "cut.xlsx").write_bytes(data[:200])
    assert sniff(tmp_path / "cut.zip").outcome is Outcome.UNSUPPORTED
    assert sniff(tmp_path / "cut.xlsx").outcome is Outcome.UNREADABLE


@pytest.mark.parametrize("suffix, outcome", [(".zip", Outcome.UNSUPPORTED), (".xlsx", Outcome.UNREADABLE)])
def test_zip_that_is_neither_ooxml_nor_odf(tmp_path, suffix, outcome):
    with zipfile.ZipFile(tmp_path / f"a{suffix}", "w") as z:
        z.writestr("null_file.xlsx", b"")
    s = sniff(tmp_path / f"a{suffix}")
    assert s.outcome is outcome and s.format is None and s.container == "zip"


# =============================================================================== ODF
def make_odf(path: Path, kind: str) -> Path:
    from odf.opendocument import (OpenDocumentDrawing, OpenDocumentPresentation, OpenDocumentSpreadsheet,
                                  OpenDocumentText)
    from odf.text import P
    doc = {"odt": OpenDocumentText, "ods": OpenDocumentSpreadsheet, "odp": OpenDocumentPresentation,
           "odg": OpenDocumentDrawing}[kind]()
    if kind == "odt":
        doc.text.addElement(P(text="Hallo"))
    doc.save(str(path))
    return path


@pytest.mark.parametrize("kind", ["odt", "ods", "odp"])
def test_odf_is_recognised_for_passthrough(tmp_path, kind):
    s = sniff(make_odf(tmp_path / f"x.{kind}", kind))
    assert s.format is FORMATS[kind] and s.outcome is None and s.container == "zip"


def test_odf_named_docx_is_still_odf(tmp_path):
    s = sniff(copy(make_odf(tmp_path / "x.odt", "odt"), tmp_path / "x.docx"))
    assert s.format is FORMATS["odt"] and s.outcome is None


def test_odf_drawing_is_not_converted(tmp_path):
    s = sniff(make_odf(tmp_path / "x.odg", "odg"))
    assert s.outcome is Outcome.UNSUPPORTED and s.format is None and "graphics" in s.reason


def test_encrypted_odf_is_encrypted(tmp_path):
    src = make_odf(tmp_path / "x.odt", "odt")
    with zipfile.ZipFile(src) as z:
        manifest = z.read("META-INF/manifest.xml").decode()
    entry = '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
    assert entry in manifest
    encrypted = entry.replace("/>", '><manifest:encryption-data manifest:checksum-type="SHA1/1K" '
                                    'manifest:checksum="AAAA"/></manifest:file-entry>')
    changed = {"META-INF/manifest.xml": manifest.replace(entry, encrypted).encode()}
    s = sniff(rewrite_zip(src, tmp_path / "enc.odt", changed))
    assert s.outcome is Outcome.ENCRYPTED and s.format is FORMATS["odt"]


# =============================================================================== OLE2 binaries
def test_word_binary(tmp_path):
    s = sniff(make_ole(tmp_path / "a.doc", {"WordDocument": fib(), "1Table": b"\x00" * 16}))
    assert s.format is FORMATS["doc"] and s.outcome is None and s.container == "ole"


def test_word_template_by_fdot_flag_not_by_name(tmp_path):
    s = sniff(make_ole(tmp_path / "a.doc", {"WordDocument": fib(flags=0x0001), "1Table": b""}))
    assert s.format is FORMATS["dot"] and s.outcome is None


def test_word_6_and_95_get_libreoffices_word_95_filter(tmp_path):
    # LibreOffice's "MS Word 97" filter refuses Word 6.0/95 files; its type detection picks "MS Word 95"
    s = sniff(make_ole(tmp_path / "a.doc", {"WordDocument": fib(n_fib=104), "1Table": b""}))
    assert s.format is FORMATS["doc6"] and s.outcome is None and "Word 6.0/95" in s.reason
    assert s.format.import_filter == "MS Word 95" and s.format.target == "odt"
    template = sniff(make_ole(tmp_path / "b.doc", {"WordDocument": fib(n_fib=101, flags=0x0001), "1Table": b""}))
    assert template.format is FORMATS["dot6"] and template.format.target == "ott"


@pytest.mark.parametrize("magic", [b"\x9b\xa5\x21\x00", b"\xdb\xa5\x2d\x00"])
def test_word_for_windows_1_and_2_by_magic(tmp_path, magic):
    for name in ("a.doc", "a.bin"):
        (tmp_path / name).write_bytes(magic + bytes(300))
        s = sniff(tmp_path / name)
        assert s.format is FORMATS["winword2"] and s.outcome is None and s.format.import_filter == "MS WinWord 5"


@pytest.mark.parametrize("bof, biff", [(0x0009, "BIFF2"), (0x0209, "BIFF3"), (0x0409, "BIFF4")])
def test_excel_2_to_4_worksheets_without_ole(tmp_path, bof, biff):
    body = struct.pack("<HHHH", bof, 4, 0, 0x0010) + struct.pack("<HH", 0x000A, 0)
    (tmp_path / "a.xls").write_bytes(body)
    s = sniff(tmp_path / "a.xls")
    assert s.format is FORMATS["xls4"] and s.outcome is None and biff in s.reason
    assert s.format.import_filter == "MS Excel 4.0"
    # FILEPASS after BOF: only LibreOffice, which tries Excel's default password, can tell
    (tmp_path / "b.xls").write_bytes(struct.pack("<HHHH", bof, 4, 0, 0x0010) + struct.pack("<HHI", FILEPASS, 4, 0))
    locked = sniff(tmp_path / "b.xls")
    assert locked.outcome is Outcome.ENCRYPTED and locked.libreoffice_decides and not locked.final


def test_powerpoint_4_and_95(tmp_path):
    # PowerPoint 95: a "Current User" stream without the PowerPoint 97 CurrentUserAtom
    s = sniff(make_ole(tmp_path / "a.ppt", {"PowerPoint Document": b"\x00" * 16, "Current User": b"\x0b\x00\x00\x00Dan",
                                             "Header": b"\x00" * 8}))
    assert s.format is FORMATS["ppt95"] and s.outcome is None and s.format.import_filter == "PowerPoint 3"
    assert sniff(make_ole(tmp_path / "b.ppt", {"PP40": b"\x00" * 64})).format is FORMATS["ppt95"]


def test_password_protected_word_binary(tmp_path):
    s = sniff(make_ole(tmp_path / "a.doc", {"WordDocument": fib(flags=0x0100), "1Table": b""}))
    assert s.outcome is Outcome.ENCRYPTED and s.format is FORMATS["doc"] and "fEncrypted" in s.reason


def test_irm_protected_word_binary(tmp_path):
    s = sniff(make_ole(tmp_path / "a.doc", {
        "WordDocument": fib(), "1Table": b"",
        "\x06DataSpaces/DataSpaceMap": b"\x08\x00\x00\x00",
        "\x06DataSpaces/TransformInfo/\tDRMTransform/\x06Primary": b"\x00" * 8,
        "\tDRMContent": b"\x00" * 64,
    }))
    assert s.outcome is Outcome.ENCRYPTED and "IRM" in s.reason


def test_excel_binary(tmp_path):
    s = sniff(make_ole(tmp_path / "a.xls", {"Workbook": biff()}))
    assert s.format is FORMATS["xls"] and s.outcome is None and "BIFF8" in s.reason


def test_excel_template_by_template_record_or_by_name(tmp_path):
    assert sniff(make_ole(tmp_path / "a.xls", {"Workbook": biff((TEMPLATE, b""))})).format is FORMATS["xlt"]
    assert sniff(make_ole(tmp_path / "b.xlt", {"Workbook": biff()})).format is FORMATS["xlt"]
    assert sniff(make_ole(tmp_path / "c.bin", {"Workbook": biff()})).format is FORMATS["xls"]


def test_excel_5_workbook_in_a_book_stream(tmp_path):
    s = sniff(make_ole(tmp_path / "a.xls", {"Book": biff(version=0x0500)}))
    assert s.format is FORMATS["xls5"] and s.outcome is None and "BIFF5" in s.reason
    assert s.format.import_filter == "MS Excel 95"


@pytest.mark.parametrize("stream, version", [("Workbook", 0x0600), ("Book", 0x0500)])
def test_password_protected_excel_binary(tmp_path, stream, version):
    s = sniff(make_ole(tmp_path / "a.xls", {stream: biff((FILEPASS, XOR_OTHER_PASSWORD), version=version)}))
    assert s.outcome is Outcome.ENCRYPTED and "FILEPASS" in s.reason
    # msoffcrypto-tool verifies passwords of BIFF8 workbooks only: a BIFF5 one is LibreOffice's to try
    assert s.final is (stream == "Workbook")


def test_excel_default_password_is_not_a_protection(tmp_path):
    # Excel writes protected-structure workbooks encrypted with "VelvetSweatshop" and opens them
    # without asking; so does LibreOffice. They must be converted, not reported as encrypted.
    xor = sniff(make_ole(tmp_path / "xor.xls", {"Workbook": biff((FILEPASS, XOR_VELVET_SWEATSHOP))}))
    rc4 = sniff(velvet_xls(tmp_path / "rc4.xls"))
    for s in (xor, rc4):
        assert s.outcome is None and s.format is FORMATS["xls"] and "default password" in s.reason


def test_workbook_stream_without_bof_is_unreadable(tmp_path):
    s = sniff(make_ole(tmp_path / "a.xls", {"Workbook": b"garbage" * 10}))
    assert s.outcome is Outcome.UNREADABLE and s.format is FORMATS["xls"]
    assert s.libreoffice_decides           # LibreOffice's own reader is asked before it is called unreadable


def test_ooxml_package_with_excels_default_password_opens(made, tmp_path):
    # Excel and LibreOffice open a package encrypted with "VelvetSweatshop" without asking; its format
    # is read from the decrypted package, whatever the name says
    s = sniff(copy(made["velvet"], tmp_path / "mappe.bin"))
    assert s.outcome is None and s.format is FORMATS["xlsx"] and "default password" in s.reason


def test_damaged_ole_named_like_office_is_left_to_libreoffice(tmp_path):
    (tmp_path / "a.doc").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    s = sniff(tmp_path / "a.doc")
    assert s.outcome is Outcome.UNREADABLE and s.format is FORMATS["doc"] and s.libreoffice_decides
    (tmp_path / "a.bin").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    assert sniff(tmp_path / "a.bin").final


@pytest.mark.parametrize("suffix, expected", [(".ppt", "ppt"), (".pps", "pps"), (".pot", "pot"), (".bin", "ppt")])
def test_powerpoint_binary_kind_by_name(tmp_path, suffix, expected):
    s = sniff(make_ole(tmp_path / f"a{suffix}", {"PowerPoint Document": b"", "Current User": current_user(0xE391C05F)}))
    assert s.format is FORMATS[expected] and s.outcome is None


def test_password_protected_powerpoint_binary(tmp_path):
    by_token = sniff(make_ole(tmp_path / "a.ppt", {"PowerPoint Document": b"",
                                                   "Current User": current_user(0xF3D1C4DF)}))
    by_summary = sniff(make_ole(tmp_path / "b.ppt", {"PowerPoint Document": b"", "EncryptedSummary": b"",
                                                     "Current User": current_user(0xE391C05F)}))
    assert by_token.outcome is Outcome.ENCRYPTED and by_summary.outcome is Outcome.ENCRYPTED


@pytest.mark.parametrize("suffix, outcome", [(".msg", Outcome.UNSUPPORTED), (".doc", Outcome.UNREADABLE)])
def test_other_ole_files_are_not_converted(tmp_path, suffix, outcome):
    s = sniff(make_ole(tmp_path / f"mail{suffix}", {"__substg1.0_0037001F": "Betreff".encode("utf-16-le"),
                                                    "__nameid_version1.0/__substg1.0_00020102": b""}))
    assert s.outcome is outcome and s.format is None and "Outlook" in s.reason


def test_damaged_ole_is_unreadable(tmp_path):
    path = tmp_path / "broken.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 3)
    s = sniff(path)
    assert s.outcome is Outcome.UNREADABLE and s.container == "ole"


# =============================================================================== other content
def test_empty_file(tmp_path):
    for name in ("empty.docx", "empty.bin"):
        (tmp_path / name).write_bytes(b"")
        assert sniff(tmp_path / name) == Sniffed(None, Outcome.UNREADABLE, "empty file (0 bytes)", "empty")


def random_bytes(n: int, seed: int = 7) -> bytes:
    data = random.Random(seed).randbytes(n)
    return b"\x80" + data[1:]          # never starts like a known magic number


@pytest.mark.parametrize("name, outcome", [("random.docx", Outcome.UNREADABLE), ("random.bin", Outcome.UNSUPPORTED)])
def test_random_bytes(tmp_path, name, outcome):
    (tmp_path / name).write_bytes(random_bytes(20000))
    s = sniff(tmp_path / name)
    assert s.outcome is outcome and s.format is None and s.container == "unknown"


@pytest.mark.parametrize("name, fmt, reason", [
    ("notes.xls", "text-calc", "looks like plain text named .xls: read as plain text or CSV"),
    ("notes.doc", "text-writer", "looks like plain text named .doc: read as plain text"),
    ("notes.ppt", "text-writer", "looks like plain text named .ppt: read as plain text"),
])
def test_plain_text_named_like_office_is_read_as_text(tmp_path, name, fmt, reason):
    # LibreOffice reads it (Calc's text import for a spreadsheet's name, Writer's otherwise): converted
    (tmp_path / name).write_text("Attachment f:\\akten\\Haushalt 2024.xls not found!\nGrüße\n", encoding="utf-8")
    assert sniff(tmp_path / name) == Sniffed(FORMATS[fmt], None, reason, "text")


def test_plain_text_with_another_name_is_not_ours(tmp_path):
    (tmp_path / "notes.txt").write_text("Grüße\n", encoding="utf-8")
    assert sniff(tmp_path / "notes.txt") == Sniffed(None, Outcome.UNSUPPORTED,
                                                   "looks like plain text: not an Office format", "text")


def test_sylk_named_xls(tmp_path):
    (tmp_path / "a.xls").write_bytes(b"ID;PWXL;N;E\r\nC;Y1;X1;K42\r\nE\r\n")
    s = sniff(tmp_path / "a.xls")
    assert s.format is FORMATS["sylk"] and s.outcome is None and s.format.import_filter == "SYLK"


@pytest.mark.parametrize("data, container, what", [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "pdf", "PDF document"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png", "PNG image"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "jpeg", "JPEG image"),
    (b"GIF89a\x01\x00\x01\x00", "gif", "GIF image"),
])
def test_common_non_office_magics(tmp_path, data, container, what):
    (tmp_path / "a.bin").write_bytes(data + b"\x00" * 100)
    (tmp_path / "a.doc").write_bytes(data + b"\x00" * 100)
    assert sniff(tmp_path / "a.bin") == Sniffed(None, Outcome.UNSUPPORTED, f"{what}: not an Office format", container)
    assert sniff(tmp_path / "a.doc") == Sniffed(None, Outcome.UNREADABLE, f"not an Office file: {what}", container)


def test_wordperfect_named_doc_is_read_by_libreoffices_wordperfect_filter(tmp_path):
    data = b"\xffWPC\x10\x00\x00\x00\x01\x0a\x02\x01" + b"\x00" * 100
    (tmp_path / "a.wpd").write_bytes(data)
    (tmp_path / "a.doc").write_bytes(data)
    assert sniff(tmp_path / "a.wpd").outcome is Outcome.UNSUPPORTED
    s = sniff(tmp_path / "a.doc")
    assert s.format is FORMATS["wordperfect"] and s.outcome is None and "named .doc" in s.reason


def test_rtf_by_content(tmp_path):
    for name in ("brief.rtf", "brief.doc", "brief.bin"):
        (tmp_path / name).write_bytes(b"{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times;}} Hallo \\par}")
        s = sniff(tmp_path / name)
        assert s.format is FORMATS["rtf"] and s.outcome is None and s.container == "rtf"


WORDML = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
          '<?mso-application progid="Word.Document"?>\n'
          '<w:wordDocument xmlns:w="http://schemas.microsoft.com/office/word/2003/wordml">'
          '<w:body><w:p><w:r><w:t>Hallo</w:t></w:r></w:p></w:body></w:wordDocument>')
SPREADSHEETML = ('<?xml version="1.0"?>\n<?mso-application progid="Excel.Sheet"?>\n'
                 '<Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet" '
                 'xmlns:ss="urn:schemas-microsoft-com:office:spreadsheet"><Worksheet ss:Name="A"/></Workbook>')
FLAT_OPC = ('<?xml version="1.0" standalone="yes"?>\n<?mso-application progid="Word.Document"?>\n'
            '<pkg:package xmlns:pkg="http://schemas.microsoft.com/office/2006/xmlPackage"/>')


@pytest.mark.parametrize("name", ["a.xml", "a.doc"])
def test_word_2003_xml(tmp_path, name):
    (tmp_path / name).write_text(WORDML, encoding="utf-8")
    assert sniff(tmp_path / name) == Sniffed(FORMATS["wordml"], None, "Word 2003 XML (WordprocessingML)", "xml")


def test_word_2003_xml_in_utf16(tmp_path):
    (tmp_path / "a.xml").write_bytes(WORDML.replace("UTF-8", "UTF-16").encode("utf-16"))
    assert sniff(tmp_path / "a.xml").format is FORMATS["wordml"]


def test_excel_2003_xml(tmp_path):
    (tmp_path / "a.xls").write_text(SPREADSHEETML, encoding="utf-8")
    s = sniff(tmp_path / "a.xls")
    assert s.format is FORMATS["spreadsheetml"] and s.outcome is None and s.container == "xml"


@pytest.mark.parametrize("text, name, fmt", [
    (FLAT_OPC, "a.xml", None),       # progid Word.Document, but a 2007+ flat package
    ('<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "feed.xml", None),
    # named like Office: LibreOffice's type detection decides what it reads in the XML
    ('<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "feed.docx", "detect-writer"),
    ("<!DOCTYPE html><html><body><table><tr><td>1</td></tr></table></body></html>", "export.xls", "html-calc"),
    ("<!DOCTYPE html><html><body><p>Hallo</p></body></html>", "brief.doc", "html-writer"),
])
def test_other_xml_and_html(tmp_path, text, name, fmt):
    (tmp_path / name).write_text(text, encoding="utf-8")
    s = sniff(tmp_path / name)
    if fmt is None:
        assert s.outcome is Outcome.UNSUPPORTED and s.format is None
    else:
        assert s.outcome is None and s.format is FORMATS[fmt]


def test_hostile_file_name(made, tmp_path):
    name = "-rf $(reboot); `id` 'quote\" \n ünïcödé *?[x].docx"
    s = sniff(copy(made["docx"], tmp_path / name))
    assert s.format is FORMATS["docx"] and s.outcome is None
    (tmp_path / ("x" * 250 + ".doc")).write_bytes(b"")
    assert sniff(tmp_path / ("x" * 250 + ".doc")).outcome is Outcome.UNREADABLE


def test_accepts_str_paths(made):
    assert sniff(str(made["docx"])).format is FORMATS["docx"]


# =============================================================================== robustness and cost
def test_damaged_files_never_raise(made, tmp_path):
    """Truncations and byte flips of every kind of input: each gets a Sniffed, none raises."""
    sources = [made["docx"], made["encrypted"], made["xlsx"],
               make_ole(tmp_path / "w.doc", {"WordDocument": fib(), "1Table": b""}),
               make_ole(tmp_path / "x.xls", {"Workbook": biff((FILEPASS, XOR_OTHER_PASSWORD))}),
               make_odf(tmp_path / "o.odt", "odt")]
    rnd = random.Random(42)
    target = tmp_path / "victim.docx"
    for src in sources:
        data = src.read_bytes()
        variants = [data[:n] for n in (1, 7, 8, 100, 512, 513, 4096, len(data) - 22, len(data) - 1)]
        for _ in range(40):
            flipped = bytearray(data)
            for _ in range(rnd.randint(1, 20)):
                flipped[rnd.randrange(len(flipped))] = rnd.randrange(256)
            variants.append(bytes(flipped))
        for variant in variants:
            target.write_bytes(variant)
            s = sniff(target)
            assert isinstance(s, Sniffed) and s.reason
            assert s.outcome is not None or s.format is not None


def test_io_errors_propagate(tmp_path):
    with pytest.raises(FileNotFoundError):
        sniff(tmp_path / "gone.docx")
    with pytest.raises(IsADirectoryError):
        sniff(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.docx")
    s = sniff(tmp_path / "pipe.docx")
    assert s.outcome is Outcome.UNSUPPORTED and s.container == "special"


def bytes_read_by_this_process() -> int:
    """What this process has read through read(2) and its kin so far (Linux's rchar), page cache
    included: the count a sniff that slurped a file could not hide."""
    with open("/proc/self/io", "rb") as f:
        return int(next(line for line in f if line.startswith(b"rchar:")).split()[1])


def measure(path: Path) -> tuple[Sniffed, int, int]:
    """sniff(path), the bytes it read and its peak Python memory in bytes (behaviour, not speed:
    benchmarks/sniff_speed.py times the same files)."""
    tracemalloc.start()
    try:
        before = bytes_read_by_this_process()
        result = sniff(path)
        read = bytes_read_by_this_process() - before
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, read, peak


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="no /proc/self/io (Linux's I/O counters) here")
def test_big_xlsx_is_sniffed_from_a_few_kilobytes_in_little_memory(tmp_path):
    big = make_big_xlsx(tmp_path / "big.xlsx")
    s, read, peak = measure(big)
    assert s.format is FORMATS["xlsx"] and s.outcome is None
    # the central directory and the parts that name the format, not the 100 MB picture
    assert read < 1 << 20 and peak < 4 << 20, (read, peak)


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="no /proc/self/io (Linux's I/O counters) here")
def test_big_ole_workbook_is_not_read_into_memory(tmp_path):
    big = make_big_ole_workbook(tmp_path / "big.xls")
    s, read, peak = measure(big)
    assert s.outcome is Outcome.ENCRYPTED and s.format is FORMATS["xls"]
    assert read < 1 << 20 and peak < 4 << 20, (read, peak)


# =============================================================================== the corpus
ENCRYPTED = [
    "documents/protected_normal_case.docx", "documents/testWORD_protected_passtika.docx",
    "spreadsheets/testEXCEL_protected_passtika_2.xlsx", "spreadsheets/pass_protected.xlsx",
    "spreadsheets/pass_protected.xlsb", "presentations/testPPT_protected_passtika.pptx",
    "presentations/testPPT_protected_passtika.ppt", "spreadsheets/testEXCEL_protected_passtika.xls",
    "documents/testWORD_protected_drm.doc", "documents/testODTEncrypted.odt", "spreadsheets/pass_protected.ods",
]
UNREADABLE = ["documents/testWORD_truncated.docx", "spreadsheets/null_file.xlsx", "spreadsheets/null_archive.xlsx"]
# plain text named .odt and .xls: LibreOffice reads them as text, and so they are converted
TEXT_NAMED_OFFICE = {"documents/testODTnotaZipFile.odt": "text-writer", "spreadsheets/too_small.xls": "text-calc"}
# testWordPerfect_42.doc: WordPerfect 4.2 predates WordPerfect's \xffWPC magic number (NOTES.md says
# "checked magic"; the bytes have none): sniff recognises it by its function codes instead.
WORDPERFECT = "documents/testWordPerfect_42.doc"
FOLDERS = {"documents": Family.TEXT, "spreadsheets": Family.SPREADSHEET, "presentations": Family.PRESENTATION}


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("rel", ENCRYPTED)
def test_corpus_encrypted_files_are_encrypted(rel):
    s = sniff(CORPUS / rel)
    assert s.outcome is Outcome.ENCRYPTED, s


@pytest.mark.corpus
@needs_corpus
def test_corpus_irm_is_named_as_such():
    assert "IRM" in sniff(CORPUS / "documents/testWORD_protected_drm.doc").reason


@pytest.mark.corpus
@needs_corpus
def test_corpus_sheet_protection_is_not_encryption():
    s = sniff(CORPUS / "spreadsheets/protectedSheets.xlsx")
    assert s.outcome is None and s.format is FORMATS["xlsx"]


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("rel", UNREADABLE)
def test_corpus_broken_files_are_unreadable(rel):
    assert sniff(CORPUS / rel).outcome is Outcome.UNREADABLE


@pytest.mark.corpus
@needs_corpus
def test_corpus_truncated_package_goes_to_libreoffices_repair():
    s = sniff(CORPUS / "documents/testWORD_truncated.docx")
    assert s.format is FORMATS["docx"] and s.libreoffice_decides and s.repair and not s.final


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("rel", sorted(TEXT_NAMED_OFFICE))
def test_corpus_text_named_like_office_is_read_as_text(rel):
    s = sniff(CORPUS / rel)
    assert s.format is FORMATS[TEXT_NAMED_OFFICE[rel]] and s.outcome is None


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("rel, expected", [
    ("legacy/Word6.doc", "doc6"), ("legacy/Word95.doc", "doc6"), ("legacy/word2.doc", "winword2"),
    ("legacy/PPT95.ppt", "ppt95"), ("legacy/testEXCEL_3.xls", "xls4"), ("legacy/testEXCEL_4.xls", "xls4"),
])
def test_corpus_legacy_files_get_the_filter_libreoffice_uses(rel, expected):
    # the filters LibreOffice 7.4.7's own TypeDetection picks for these files
    s = sniff(CORPUS / rel)
    assert s.format is FORMATS[expected] and s.outcome is None, s


@pytest.mark.corpus
@needs_corpus
def test_corpus_word_2003_xml_named_doc():
    s = sniff(CORPUS / "documents/testWORDML_tableInsideParagraph.doc")
    assert s.format is FORMATS["wordml"] and s.outcome is None


@pytest.mark.corpus
@needs_corpus
def test_corpus_wordperfect_named_doc_is_read_as_wordperfect():
    s = sniff(CORPUS / WORDPERFECT)
    assert s.format is FORMATS["wordperfect"] and s.outcome is None and "WordPerfect" in s.reason


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("rel, expected", [
    ("documents/testDOTM.dotm", "dotm"), ("documents/testWORD_macros.docm", "docm"),
    ("spreadsheets/testEXCEL_template.xltx", "xltx"), ("spreadsheets/testEXCEL_macro_enabled_template.xltm", "xltm"),
    ("spreadsheets/testEXCEL_charts.xlsb", "xlsb"), ("spreadsheets/strict_iso_paths.xlsx", "xlsx"),
    ("spreadsheets/pivot.xlsm", "xlsm"), ("presentations/testPPT.potm", "potm"),
    ("spreadsheets/testEXCEL_95.xls", "xls5"), ("spreadsheets/testEXCEL_5.xls", "xls5"),
    # a dual-stream "Excel 97 & 5.0/95" file: Book (BIFF5) and Workbook (BIFF8); the BIFF8 one counts
    ("spreadsheets/biff5-rich-text-string.xls", "xls"),
    ("documents/LibreOfficeWriter_odt_1.3.odt", "odt"), ("spreadsheets/LibreOfficeCalc_ods_1.3.ods", "ods"),
    ("presentations/LibreOfficeImpress_odp_1.3.odp", "odp"), ("documents/testComment.rtf", "rtf"),
    ("documents/testWORD_2006ml.doc", "doc"),    # despite its name, a binary Word file, not XML
])
def test_corpus_exact_formats(rel, expected):
    s = sniff(CORPUS / rel)
    assert s.format is FORMATS[expected] and s.outcome is None, s


@pytest.mark.corpus
@needs_corpus
def test_corpus_every_office_file_is_sniffed_consistently():
    """Every file gets a Sniffed; formats match their folder; only the known-bad files are refused."""
    # Hidden files are not corpus documents: LibreOffice leaves ".~lock.<name>#" next to a file it
    # has open (one appeared in documents/ while another process converted the corpus).
    files = sorted(p for folder in FOLDERS for p in (CORPUS / folder).iterdir()
                   if p.is_file() and not p.name.startswith("."))
    assert len(files) > 100
    known_bad = {*ENCRYPTED, *UNREADABLE}
    results = {p: sniff(p) for p in files}
    surprises = []
    for path, s in results.items():
        rel = f"{path.parent.name}/{path.name}"
        if s.format is not None and s.format.family is not FOLDERS[path.parent.name]:
            surprises.append(f"{rel}: {s.format.name} in {path.parent.name}/")
        if (s.outcome is not None) != (rel in known_bad):
            surprises.append(f"{rel}: {s.outcome} ({s.reason})")
    assert not surprises, "\n".join(surprises)
