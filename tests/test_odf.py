"""converters.odf: is a file a valid ODF package (for passthrough inputs and converted outputs)?"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from converters.odf import check_package, odf_mimetype
from docgen import ENTITY_BOMB

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not found: corpus tests skipped")

ODT = "application/vnd.oasis.opendocument.text"


@pytest.fixture(scope="module")
def valid_odt(tmp_path_factory) -> Path:
    """A real ODF text document written by odfpy, with a picture (so the manifest lists a file)."""
    from odf.draw import Frame, Image
    from odf.opendocument import OpenDocumentText
    from odf.text import P

    doc = OpenDocumentText()
    doc.text.addElement(P(text="Sehr geehrte Damen und Herren,"))
    png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15"
           b"\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
    href = doc.addPicture("Pictures/dot.png", "image/png", png)
    frame = Frame(width="1cm", height="1cm", anchortype="paragraph")
    frame.addElement(Image(href=href))
    paragraph = P()
    paragraph.addElement(frame)
    doc.text.addElement(paragraph)
    path = tmp_path_factory.mktemp("odf") / "valid.odt"
    doc.save(str(path))
    return path


def entries(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as z:
        return [(info, z.read(info)) for info in z.infolist()]


def write(path: Path, items: list[tuple[str | zipfile.ZipInfo, bytes]], compress_mimetype: bool = False) -> Path:
    """A ZIP holding `items` in this order; mimetype stored unless `compress_mimetype`."""
    with zipfile.ZipFile(path, "w") as z:
        for info, data in items:
            name = info.filename if isinstance(info, zipfile.ZipInfo) else info
            stored = name == "mimetype" and not compress_mimetype
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return path


def variant(src: Path, dst: Path, replace: dict[str, bytes | None] | None = None,
            order: list[str] | None = None, compress_mimetype: bool = False) -> Path:
    """A copy of the package `src` with members replaced/removed, reordered, or mimetype compressed."""
    items = [(info.filename, data) for info, data in entries(src)]
    replace = replace or {}
    items = [(name, replace.get(name, data)) for name, data in items if replace.get(name, data) is not None]
    if order:
        items.sort(key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    return write(dst, items, compress_mimetype=compress_mimetype)


def one_problem(problems: list[str], *words: str) -> str:
    """The single problem reported, checked to mention all `words`."""
    assert len(problems) == 1, problems
    assert all(w in problems[0] for w in words), problems
    return problems[0]


# ------------------------------------------------------------------------------------- valid packages
def test_odfpy_document_is_valid(valid_odt):
    assert check_package(valid_odt) == []
    assert odf_mimetype(valid_odt) == ODT


@pytest.mark.parametrize("kind, mimetype", [("ods", "spreadsheet"), ("odp", "presentation")])
def test_other_odfpy_documents_are_valid(tmp_path, kind, mimetype):
    from odf.opendocument import OpenDocumentPresentation, OpenDocumentSpreadsheet
    doc = {"ods": OpenDocumentSpreadsheet, "odp": OpenDocumentPresentation}[kind]()
    doc.save(str(tmp_path / f"x.{kind}"))
    assert check_package(tmp_path / f"x.{kind}") == []
    assert odf_mimetype(tmp_path / f"x.{kind}") == f"application/vnd.oasis.opendocument.{mimetype}"


def test_rebuilt_copy_is_still_valid(valid_odt, tmp_path):
    # the helper used below changes nothing by itself
    assert check_package(variant(valid_odt, tmp_path / "copy.odt")) == []


def peak_rss() -> int:
    """This process's highest resident memory so far, in bytes (libxml2 allocates outside Python,
    where tracemalloc does not see it)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_entities_are_not_expanded(valid_odt, tmp_path):
    # Checked without expanding: the process never holds the 10 GB (benchmarks/sniff_speed.py times it)
    bomb = variant(valid_odt, tmp_path / "bomb.odt", {"content.xml": ENTITY_BOMB})
    before = peak_rss()
    problems = check_package(bomb)
    assert peak_rss() - before < 100 << 20
    # libxml2 either leaves the entities alone or refuses the amplification: never expands them
    assert problems == [] or (len(problems) == 1 and problems[0].startswith("content.xml is not well-formed"))


def test_big_content_is_streamed(valid_odt, tmp_path):
    body = "".join(f"<text:p>Absatz {i} mit etwas Text darin</text:p>" for i in range(400_000))
    content = ('<?xml version="1.0" encoding="UTF-8"?><office:document-content '
               'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
               'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:text>'
               + body + "</office:text></office:body></office:document-content>").encode()
    assert len(content) > 15_000_000
    assert check_package(variant(valid_odt, tmp_path / "big.odt", {"content.xml": content})) == []


# ------------------------------------------------------------------------------------- broken packages
def test_compressed_mimetype(valid_odt, tmp_path):
    one_problem(check_package(variant(valid_odt, tmp_path / "x.odt", compress_mimetype=True)),
                "mimetype", "compressed")


def test_mimetype_not_first(valid_odt, tmp_path):
    broken = variant(valid_odt, tmp_path / "x.odt", order=["content.xml", "mimetype"])
    one_problem(check_package(broken), "mimetype is not the first entry")


def test_missing_mimetype(valid_odt, tmp_path):
    broken = variant(valid_odt, tmp_path / "x.odt", {"mimetype": None})
    one_problem(check_package(broken), "no mimetype")
    assert odf_mimetype(broken) == ODT           # the manifest's root entry still says what it is


def test_mimetype_that_is_not_odf(valid_odt, tmp_path):
    one_problem(check_package(variant(valid_odt, tmp_path / "x.odt", {"mimetype": b"application/zip"})),
                "not an ODF media type", "application/zip")


def test_missing_content(valid_odt, tmp_path):
    # content.xml is gone, and so is the file the manifest lists for it
    problems = check_package(variant(valid_odt, tmp_path / "x.odt", {"content.xml": None}))
    assert "no content.xml" in problems
    assert any("lists content.xml" in p for p in problems)


def test_broken_content(valid_odt, tmp_path):
    broken = variant(valid_odt, tmp_path / "x.odt", {"content.xml": b'<?xml version="1.0"?><office:document-content'})
    one_problem(check_package(broken), "content.xml is not well-formed XML")


def test_broken_styles(valid_odt, tmp_path):
    broken = variant(valid_odt, tmp_path / "x.odt", {"styles.xml": b"<a><b></a>"})
    one_problem(check_package(broken), "styles.xml is not well-formed XML")


def test_manifest_lists_a_missing_file(valid_odt, tmp_path):
    one_problem(check_package(variant(valid_odt, tmp_path / "x.odt", {"Pictures/dot.png": None})),
                "manifest.xml lists Pictures/dot.png", "missing")


def test_missing_manifest(valid_odt, tmp_path):
    one_problem(check_package(variant(valid_odt, tmp_path / "x.odt", {"META-INF/manifest.xml": None})),
                "no META-INF/manifest.xml")


def test_broken_manifest(valid_odt, tmp_path):
    broken = variant(valid_odt, tmp_path / "x.odt", {"META-INF/manifest.xml": b"<manifest:manifest"})
    one_problem(check_package(broken), "manifest.xml is not well-formed XML")


def test_corrupt_deflate_data(valid_odt, tmp_path):
    data = bytearray(valid_odt.read_bytes())
    with zipfile.ZipFile(valid_odt) as z:
        info = z.getinfo("content.xml")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 5, start + info.compress_size - 5, 7):
        data[i] ^= 0x55
    (tmp_path / "x.odt").write_bytes(bytes(data))
    one_problem(check_package(tmp_path / "x.odt"), "content.xml")


def test_encrypted_package(valid_odt, tmp_path):
    with zipfile.ZipFile(valid_odt) as z:
        manifest = z.read("META-INF/manifest.xml").decode()
    entry = '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
    assert entry in manifest
    encrypted = entry.replace("/>", '><manifest:encryption-data manifest:checksum-type="SHA1/1K" '
                                    'manifest:checksum="AAAA"/></manifest:file-entry>')
    replaced = {"META-INF/manifest.xml": manifest.replace(entry, encrypted).encode(),
                "content.xml": b"\x8f\x02ciphertext"}
    one_problem(check_package(variant(valid_odt, tmp_path / "x.odt", replaced)), "encrypted", "content.xml")


@pytest.mark.parametrize("data", [b"", b"This is not a zip file!", b"PK\x03\x04\x14\x00\x00\x00"])
def test_not_a_zip(tmp_path, data):
    (tmp_path / "x.odt").write_bytes(data)
    one_problem(check_package(tmp_path / "x.odt"), "ZIP")
    assert odf_mimetype(tmp_path / "x.odt") is None


def test_ooxml_is_not_odf(tmp_path):
    import docx
    docx.Document().save(tmp_path / "x.docx")
    problems = check_package(tmp_path / "x.docx")
    assert "no mimetype entry" in problems and "no content.xml" in problems
    assert odf_mimetype(tmp_path / "x.docx") is None


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        check_package(tmp_path / "gone.odt")


# ------------------------------------------------------------------------------------- the corpus
@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("rel", [
    "documents/LibreOfficeWriter_odt_1.3.odt", "spreadsheets/LibreOfficeCalc_ods_1.3.ods",
    "presentations/LibreOfficeImpress_odp_1.3.odp", "spreadsheets/testODSMacro.ods", "presentations/testODPMacro.odp",
])
def test_corpus_odf_files_are_valid(rel):
    assert check_package(CORPUS / rel) == []
    assert odf_mimetype(CORPUS / rel).startswith("application/vnd.oasis.opendocument.")


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("rel", ["documents/testODTEncrypted.odt", "spreadsheets/pass_protected.ods"])
def test_corpus_encrypted_odf_is_reported(rel):
    one_problem(check_package(CORPUS / rel), "encrypted")


@pytest.mark.corpus
@needs_corpus
def test_corpus_not_a_zip():
    one_problem(check_package(CORPUS / "documents/testODTnotaZipFile.odt"), "not a ZIP archive")
