"""Decide what a file really is, from its bytes, before LibreOffice is asked to open it.

LibreOffice guesses a format from the extension and then imports almost anything as *something*:
random bytes named `.docx` become 16 s of plain-text import, an encrypted package waits for a
password nobody types. Sniffing first lets the worker pass LibreOffice the import filter for what
the bytes really are, and settle encrypted, empty and foreign files without starting LibreOffice
at all.

What LibreOffice reads is never refused, though: old formats (Word 6.0/95 and 1.x/2.0, Excel
2.x-5.0/95, PowerPoint 4.0/95) get the filter LibreOffice uses for them; plain text, HTML, SYLK and
WordPerfect files named like Office documents are converted as what they are; and a file that
sniffing finds damaged, or encrypted in a way it cannot rule out LibreOffice opening, gets
`libreoffice_decides`: its `outcome` is only what it becomes if LibreOffice cannot read it either
(damaged packages are then loaded with LibreOffice's repair).

Every file gets a `Sniffed`; bad input never raises. Only an `OSError` from reading the file itself
(permission denied, the file vanished, an I/O error) propagates: that is a problem of the share,
not of the document, and the caller must not record it as the document's outcome.

Cost is bounded: sniffing reads the first few KB of the file, the ZIP central directory and two
small ZIP members, or the OLE directory and the first sectors of one stream. Nothing decompresses
a whole part, so a 100 MB xlsx costs about as much as a 10 KB one. The one exception is
msoffcrypto-tool's second opinion on legacy encryption, which reads the main stream of a binary
file whole: it is only asked when that stream is at most 16 MB.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import msoffcrypto
import msoffcrypto.exceptions
import olefile
from lxml import etree
from olefile.olefile import OleFileError   # not re-exported by the package

from converters.formats import FORMATS, OFFICE_EXTENSIONS, Family, OfficeFormat
from core.outcomes import Outcome

__all__ = ["Sniffed", "sniff"]


@dataclass(frozen=True)
class Sniffed:
    """What the bytes of one file are, and whether sniffing alone already decides its outcome."""

    format: OfficeFormat | None   # what the bytes really are; None when not a format we convert
    # ENCRYPTED / UNREADABLE / UNSUPPORTED when sniffing alone decides; None = go on and convert (or pass through ODF)
    outcome: Outcome | None
    reason: str                   # short human-readable reason
    # what the bytes are at the lowest level: "zip", "ole", "rtf", "xml", "text", "empty", "pdf", "unknown", ...
    container: str
    libreoffice_decides: bool = False   # `outcome` holds only if LibreOffice cannot read the file either: ask it
    repair: bool = False                # a damaged package: LibreOffice is asked to repair it while loading

    @property
    def final(self) -> bool:
        """Whether sniffing alone settles the file's outcome (no LibreOffice call)."""
        return self.outcome is not None and not self.libreoffice_decides


_HEAD = 8192                     # enough for every magic number and the prolog of an XML file
_BROKEN_ZIP_HEAD = 65536         # local headers of a ZIP without central directory: first entries only
_MAX_SMALL_PART = 8 << 20        # [Content_Types].xml, .rels, manifest.xml, mimetype: real ones are KB
_MSOFFCRYPTO_MAX_STREAM = 16 << 20   # msoffcrypto loads the whole main stream into memory (see _ole_encryption)

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_WINWORD_MAGICS = (b"\x9b\xa5", b"\xdb\xa5")     # wIdent of Word for Windows 1.x and 2.0 files
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")   # local header, empty archive, spanned
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")

# Main-part content types of the OOXML formats we convert. Strict OOXML (ISO 29500 strict) uses the
# same content types as transitional; only its namespaces and relationship types differ.
# Compared in lower case: MIME types are case-insensitive and producers disagree on "macroEnabled".
_OOXML_MAIN_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml": "docx",
    "application/vnd.ms-word.document.macroenabled.main+xml": "docm",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml": "dotx",
    "application/vnd.ms-word.template.macroenabledtemplate.main+xml": "dotm",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": "xlsx",
    "application/vnd.ms-excel.sheet.macroenabled.main+xml": "xlsm",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml": "xltx",
    "application/vnd.ms-excel.template.macroenabled.main+xml": "xltm",
    "application/vnd.ms-excel.sheet.binary.macroenabled.main": "xlsb",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml": "pptx",
    "application/vnd.ms-powerpoint.presentation.macroenabled.main+xml": "pptm",
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml": "ppsx",
    "application/vnd.ms-powerpoint.slideshow.macroenabled.main+xml": "ppsm",
    "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml": "potx",
    "application/vnd.ms-powerpoint.template.macroenabled.main+xml": "potm",
}
# OOXML packages we recognise but do not convert: only for a better message.
_OOXML_OTHER_TYPES = {
    "application/vnd.ms-excel.addin.macroenabled.main+xml": "Excel add-in (.xlam)",
    "application/vnd.ms-powerpoint.addin.macroenabled.main+xml": "PowerPoint add-in (.ppam)",
    "application/vnd.ms-visio.drawing.main+xml": "Visio drawing (.vsdx)",
    "application/vnd.ms-visio.drawing.macroenabled.main+xml": "Visio drawing (.vsdm)",
    "application/vnd.ms-visio.template.main+xml": "Visio template (.vstx)",
    "application/vnd.ms-visio.stencil.main+xml": "Visio stencil (.vssx)",
    "application/vnd.ms-package.xps-fixeddocumentsequence+xml": "XPS document",
}
_OFFICE_DOCUMENT_REL = re.compile(r"/(officeDocument/2006/relationships|officeDocument/relationships)/officeDocument$")

_ODF_MIMETYPES = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.text-template": "ott",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.spreadsheet-template": "ots",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/vnd.oasis.opendocument.presentation-template": "otp",
}
_MANIFEST_NS = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"

_WORDML_NS = "http://schemas.microsoft.com/office/word/2003/wordml"
_SPREADSHEETML_NS = "urn:schemas-microsoft-com:office:spreadsheet"
_FLAT_OPC_NS = "http://schemas.microsoft.com/office/2006/xmlPackage"
_ODF_OFFICE_NS = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_MSO_APPLICATION = re.compile(rb"""<\?mso-application\s+progid\s*=\s*["']([^"']+)["']""", re.IGNORECASE)

# Magic numbers of things people store next to their Office files: only for a good message.
_MAGICS: tuple[tuple[bytes, str, str], ...] = (
    (b"%PDF-", "pdf", "PDF document"),
    (b"\x89PNG\r\n\x1a\n", "png", "PNG image"),
    (b"\xff\xd8\xff", "jpeg", "JPEG image"),
    (b"GIF87a", "gif", "GIF image"),
    (b"GIF89a", "gif", "GIF image"),
    (b"II*\x00", "tiff", "TIFF image"),
    (b"MM\x00*", "tiff", "TIFF image"),
    (b"\xffWPC", "wordperfect", "WordPerfect document"),
    (b"\x31\xbe\x00\x00", "write", "Microsoft Write / Word for DOS document"),
    (b"\x32\xbe\x00\x00", "write", "Microsoft Write / Word for DOS document"),
    (b"%!PS", "postscript", "PostScript document"),
    (b"\x1f\x8b", "gzip", "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "7z", "7-Zip archive"),
    (b"Rar!\x1a\x07", "rar", "RAR archive"),
    (b"MZ", "exe", "Windows executable"),
    (b"\x7fELF", "elf", "ELF executable"),
    (b"!BDN", "pst", "Outlook data file (PST)"),
    (b"ID;P", "sylk", "SYLK spreadsheet"),
)


def sniff(path: Path) -> Sniffed:
    """What the file at `path` really is, decided from its bytes; the extension only breaks ties.

    Never raises for bad content. An `OSError` reading the file itself propagates.
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    # O_NONBLOCK: opening a FIFO someone left on the share must not hang the worker.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return Sniffed(None, Outcome.UNSUPPORTED, "not a regular file", "special")
        head = fh.read(_HEAD)
        if not head:
            return Sniffed(None, Outcome.UNREADABLE, "empty file (0 bytes)", "empty")
        if head.startswith(_OLE_MAGIC):
            return _sniff_ole(fh, ext)
        if head.startswith(_ZIP_MAGICS):
            return _sniff_zip(fh, ext)
    body = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    if body.startswith(b"{\\rtf"):
        return Sniffed(FORMATS["rtf"], None, "Rich Text Format ({\\rtf header)", "rtf")
    if head.startswith(_WINWORD_MAGICS):
        # Word for Windows 1.x/2.0 (wIdent 0xA59B / 0xA5DB), from before Word used OLE files
        return Sniffed(FORMATS["winword2"], None, "Word for Windows 1.x/2.0 document (wIdent before Word 6)", "word2")
    biff = _raw_biff(head)
    if biff is not None:
        return biff
    xml = _sniff_xml(head, ext)
    if xml is not None:
        return xml
    container, what = _describe_other(head)
    return _not_office(ext, container, what)


# --- shared helpers --------------------------------------------------------------------------------

# BOF records of Excel files saved before Excel 5 wrapped them in OLE (MS-XLS 2.4.21 and the BIFF2-4
# documentation OpenOffice published): record type, then the BIFF version it means.
_RAW_BOF = {0x0009: "BIFF2 (Excel 2.x)", 0x0209: "BIFF3 (Excel 3.0)", 0x0409: "BIFF4 (Excel 4.0)",
            0x0809: "BIFF5/8 stream"}
_BIFF_SUBSTREAMS = {0x0005, 0x0006, 0x0010, 0x0020, 0x0040, 0x0100}   # globals, VB, sheet, chart, macros, workspace


def _raw_biff(head: bytes) -> Sniffed | None:
    """An Excel 2.x-4.0 worksheet (a bare BIFF stream, no OLE container), or None."""
    if len(head) < 8:
        return None
    rec, size = struct.unpack_from("<HH", head, 0)
    if rec not in _RAW_BOF or size not in (4, 6, 8, 16, 20) or len(head) < 4 + size:
        return None
    substream = struct.unpack_from("<H", head, 6)[0]
    if substream not in _BIFF_SUBSTREAMS:
        return None
    biff = _RAW_BOF[rec]
    fmt = FORMATS["xls4" if rec != 0x0809 else "xls5"]
    # FILEPASS right after BOF: an encrypted worksheet. LibreOffice tries Excel's default password
    # itself, so only it can say whether the file opens.
    pos = 4 + size
    while pos + 4 <= len(head):
        rec, size = struct.unpack_from("<HH", head, pos)
        if rec == _BIFF_FILEPASS:
            return Sniffed(fmt, Outcome.ENCRYPTED, f"password-protected Excel worksheet ({biff}, FILEPASS record)",
                           "biff", libreoffice_decides=True)
        if rec in (_BIFF_EOF, 0x000B, 0x0200, 0x0000):    # EOF, INDEX, DIMENSIONS, BIFF2 DIMENSIONS: past the header
            break
        pos += 4 + size
    return Sniffed(fmt, None, f"Excel worksheet ({biff}, without an OLE container)", "biff")


# What LibreOffice reads in a file whose Office extension lies, by container and by the family the
# extension claims (LibreOffice 7.4's type detection picks the same: Calc for a spreadsheet's name,
# Writer otherwise). Anything else LibreOffice would only show as its raw bytes.
_FOREIGN_READABLE: dict[str, dict[Family, str]] = {
    "text": {Family.SPREADSHEET: "text-calc"}, "mhtml": {Family.SPREADSHEET: "text-calc"},
    "html": {Family.SPREADSHEET: "html-calc"},
    "xml": {Family.SPREADSHEET: "detect-calc", Family.PRESENTATION: "detect-impress"},
    "sylk": {}, "wordperfect": {}, "write": {},
}
_FOREIGN_DEFAULT = {"text": "text-writer", "mhtml": "text-writer", "html": "html-writer", "xml": "detect-writer",
                    "sylk": "sylk", "wordperfect": "wordperfect", "write": "detect-writer"}


def _not_office(ext: str, container: str, what: str) -> Sniffed:
    """Bytes that are not the Office format their name says: converted as what they are when
    LibreOffice reads that, else unreadable if the name claims Office, else unsupported."""
    # formats.OFFICE_EXTENSIONS: a file named like an Office document that is not one is a
    # document someone expects to see converted; anything else simply is not our business.
    if ext in OFFICE_EXTENSIONS:
        if container in _FOREIGN_READABLE:
            family = FORMATS[ext].family
            fmt = FORMATS[_FOREIGN_READABLE[container].get(family, _FOREIGN_DEFAULT[container])]
            return Sniffed(fmt, None, f"{what} named .{ext}: read as {fmt.description}", container)
        return Sniffed(None, Outcome.UNREADABLE, f"not an Office file: {what}", container)
    return Sniffed(None, Outcome.UNSUPPORTED, f"{what}: not an Office format", container)


def _damaged(fmt: OfficeFormat | None, reason: str, container: str, *, repair: bool = False) -> Sniffed:
    """A damaged file of format `fmt`: unreadable unless LibreOffice reads (or repairs) it after all."""
    if fmt is None:
        return Sniffed(None, Outcome.UNREADABLE, reason, container)
    return Sniffed(fmt, Outcome.UNREADABLE, reason, container, libreoffice_decides=True, repair=repair)


def _is_io_failure(exc: BaseException) -> bool:
    """True when `exc` is the file failing to be read, not its content failing to parse."""
    # olefile's OleFileError subclasses OSError but means "malformed"; zipfile seeking before the
    # start of a truncated file raises EINVAL. Real I/O failures carry another errno.
    return (isinstance(exc, OSError) and not isinstance(exc, OleFileError)
            and exc.errno not in (None, errno.EINVAL))


def _safe_parser() -> etree.XMLParser:
    """An XML parser that never touches the network, never expands entities, allows big trees."""
    # A new one per call: lxml parser objects must not be shared between threads.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True,
                           remove_comments=True, remove_pis=True)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# --- OLE2 compound files -----------------------------------------------------------------------------

_OLE_EXTENSIONS = ("doc", "dot", "xls", "xlt", "ppt", "pps", "pot")


def _sniff_ole(fh: io.BufferedReader, ext: str) -> Sniffed:
    # A compound file olefile cannot parse may still open in LibreOffice, whose own OLE reader is
    # more forgiving: named like an Office binary, it is LibreOffice's to decide.
    guess = FORMATS[ext] if ext in _OLE_EXTENSIONS else None
    try:
        ole = olefile.OleFileIO(fh)
    except Exception as exc:
        if _is_io_failure(exc):
            raise
        return _damaged(guess, f"damaged OLE compound file ({_short(exc)})", "ole")
    try:
        return _classify_ole(ole, fh, ext)
    except Exception as exc:
        if _is_io_failure(exc):
            raise
        return _damaged(guess, f"damaged OLE compound file ({_short(exc)})", "ole")
    finally:
        ole.close()


def _classify_ole(ole: olefile.OleFileIO, fh: io.BufferedReader, ext: str) -> Sniffed:
    # (root is set once the file is open; types-olefile leaves out the entries' `kids`)
    root = {kid.name.lower(): kid for kid in ole.root.kids}  # type: ignore[union-attr]
    drm = _ole_has_drm(ole, root)

    if "encryptedpackage" in root or "encryptioninfo" in root:
        # An encrypted OOXML package: the OLE file holds the encrypted ZIP, so which OOXML format
        # it is cannot be read without the password. The extension is the only hint left.
        fmt = FORMATS.get(ext) if ext in _OOXML_MAIN_TYPES.values() else None
        if drm:
            reason = "IRM-protected OOXML package (EncryptedPackage with DRM transform)"
            return Sniffed(fmt, Outcome.ENCRYPTED, reason, "ole")
        opened = _ooxml_default_password(fh)
        if opened is not None:
            # Excel (and LibreOffice, whose OOXML import tries the same built-in password) opens
            # a package encrypted with "VelvetSweatshop" without asking: it converts like any other.
            fmt = opened or fmt
            if fmt is not None:
                return Sniffed(fmt, None, f"{fmt.description} encrypted with Excel's default password: "
                                          "opens without one", "ole")
        return Sniffed(fmt, Outcome.ENCRYPTED, "encrypted OOXML package (EncryptedPackage stream)", "ole")

    if "worddocument" in root:
        return _classify_word(ole, fh, root["worddocument"], drm)
    if "workbook" in root or "book" in root:
        return _classify_excel(ole, fh, root, ext, drm)
    if "powerpoint document" in root or "pp40" in root:
        return _classify_powerpoint(ole, fh, root, ext, drm)

    if drm:
        return Sniffed(None, Outcome.ENCRYPTED, "IRM-protected file (DataSpaces with DRM content)", "ole")
    return _not_office(ext, "ole", _describe_other_ole(root))


def _ole_has_drm(ole: olefile.OleFileIO, root: dict) -> bool:
    """True when the file carries IRM (rights management) protection: DRM data spaces or content."""
    # MS-OFFCRYPTO 2.2: IRM-protected binary files keep a stub main stream and put the real content
    # in "\x09DRMContent"; encrypted OOXML with IRM names its transform "DRMEncryptedTransform".
    # msoffcrypto-tool does not look at data spaces at all (it reports such a .doc as plain).
    if any("drmcontent" in name for name in root):
        return True
    spaces = root.get("\x06dataspaces")
    if spaces is None:
        return False
    stack = [spaces]
    seen = 0
    while stack and seen < 1000:          # a tiny subtree in real files; bounded for hostile ones
        node = stack.pop()
        seen += 1
        if "drm" in node.name.lower():
            return True
        stack.extend(node.kids)
    return False


def _ole_stream_head(ole: olefile.OleFileIO, fh: io.BufferedReader, entry, n: int) -> bytes:
    """The first `n` bytes of a root-level stream, without reading the rest of it.

    Hand-written because olefile's openstream() reads the whole stream into memory, which for the
    main stream of a big workbook or presentation is most of the file.
    """
    # (types-olefile leaves out minisectorcutoff, fat and sectorsize, which OleFileIO sets when it opens a file)
    if entry.size < ole.minisectorcutoff:  # type: ignore[attr-defined]
        with ole.openstream([entry.name]) as stream:     # lives in the mini stream: at most 4 KB
            return stream.read(n)
    want = min(n, entry.size)
    out = bytearray()
    sect = entry.isectStart
    fat = ole.fat  # type: ignore[attr-defined]
    size = ole.sectorsize  # type: ignore[attr-defined]
    hops = 0
    while len(out) < want and 0 <= sect < len(fat) and sect <= olefile.MAXREGSECT and hops < 4096:
        fh.seek(size * (sect + 1))
        chunk = fh.read(size)
        if not chunk:
            break
        out += chunk
        sect = fat[sect]
        hops += 1
    return bytes(out[:want])


def _msoffcrypto_says_encrypted(fh: io.BufferedReader, main_stream_size: int) -> bool | None:
    """msoffcrypto-tool's verdict, or None when it cannot give one for this file."""
    # msoffcrypto-tool is the maintained reference for Office encryption, so it gets a say; but its
    # constructors read the whole main stream into memory (olefile openstream), so it is only asked
    # about files whose main stream is small, and it raises on files it does not understand
    # (BIFF5 workbooks, damaged or fuzzed files): then our own checks below decide alone.
    if main_stream_size > _MSOFFCRYPTO_MAX_STREAM:
        return None
    try:
        fh.seek(0)
        return bool(msoffcrypto.OfficeFile(fh).is_encrypted())
    except Exception as exc:
        if _is_io_failure(exc):
            raise
        return None


def _classify_word(ole: olefile.OleFileIO, fh: io.BufferedReader, entry, drm: bool) -> Sniffed:
    # File Information Block (MS-DOC 2.5.2): wIdent, nFib, ..., flags at offset 0x0A.
    fib = _ole_stream_head(ole, fh, entry, 32)
    if len(fib) < 12:
        return _damaged(FORMATS["doc"], "damaged Word document: WordDocument stream too short for a FIB", "ole")
    n_fib, flags = struct.unpack_from("<H", fib, 2)[0], struct.unpack_from("<H", fib, 0x0A)[0]
    f_dot, f_encrypted, f_obfuscated = bool(flags & 0x0001), bool(flags & 0x0100), bool(flags & 0x8000)
    # nFib (MS-DOC 2.5.15): Word 97 and later write 0x00C1 or more; Word 6.0 and 95 wrote 101-105,
    # and LibreOffice reads those only with its Word 6/95 filter.
    old = n_fib < 0xC1
    fmt = FORMATS[("dot" if f_dot else "doc") + ("6" if old else "")]
    version = "Word 6.0/95" if old else "Word 97-2003"
    if drm:
        return Sniffed(fmt, Outcome.ENCRYPTED, "IRM-protected Word document (DRMContent stream)", "ole")
    encrypted = f_encrypted or _msoffcrypto_says_encrypted(fh, entry.size)
    if encrypted:
        how = "XOR obfuscation" if f_obfuscated else "RC4"
        return Sniffed(fmt, Outcome.ENCRYPTED, f"password-protected {version} document (FIB fEncrypted, {how})", "ole")
    kind = "template" if f_dot else "document"
    return Sniffed(fmt, None, f"{version} {kind} (WordDocument stream, nFib {n_fib})", "ole")


_BIFF_BOF = {0x0809: None, 0x0409: "BIFF4", 0x0209: "BIFF3", 0x0009: "BIFF2"}
_BIFF_FILEPASS, _BIFF_TEMPLATE, _BIFF_EOF, _BIFF_INTERFACEHDR = 0x002F, 0x0060, 0x000A, 0x00E1


def _classify_excel(ole: olefile.OleFileIO, fh: io.BufferedReader, root: dict, ext: str, drm: bool) -> Sniffed:
    # LibreOffice, like Excel, prefers the BIFF8 "Workbook" stream; "Book" is BIFF5 (Excel 5.0/95).
    entry = root.get("workbook") or root["book"]
    head = _ole_stream_head(ole, fh, entry, 65536)
    rec, size = struct.unpack_from("<HH", head, 0) if len(head) >= 8 else (None, 0)
    if rec not in _BIFF_BOF:
        return _damaged(FORMATS["xls"], f"damaged Excel workbook: {entry.name} stream does not start with a BOF record",
                        "ole")
    biff = _BIFF_BOF[rec]
    biff5 = False
    if biff is None:
        vers = struct.unpack_from("<H", head, 4)[0] if size >= 2 else 0
        # LibreOffice reads a BIFF5 "Book" (Excel 5.0 and 95) with its "MS Excel 95" filter
        biff5 = vers == 0x0500 or ("workbook" not in root and vers != 0x0600)
        biff = ("BIFF8" if vers == 0x0600 else "BIFF5, Excel 5.0/95" if vers == 0x0500
                else f"BIFF version {vers:#06x}")
    # Walk the workbook globals up to their EOF (bounded by the head we read). FILEPASS and TEMPLATE
    # both come right after BOF (MS-XLS 2.1.7.20.3), long before the big shared-string table.
    filepass = template = False
    pos = 4 + size
    while pos + 4 <= len(head):
        rec, size = struct.unpack_from("<HH", head, pos)
        if rec == _BIFF_FILEPASS:
            filepass = True
        elif rec == _BIFF_TEMPLATE:
            template = True
        elif rec in (_BIFF_EOF, _BIFF_INTERFACEHDR):
            break
        pos += 4 + size
    # The template record is content; an .xlt name is the tie-breaker for templates saved without it.
    template = template or ext == "xlt"
    fmt = FORMATS[("xlt" if template else "xls") + ("5" if biff5 else "")]
    if drm:
        return Sniffed(fmt, Outcome.ENCRYPTED, "IRM-protected Excel workbook (DRMContent stream)", "ole")
    # msoffcrypto-tool reads only "Workbook" (BIFF8); a "Book"-only BIFF5 file is ours alone.
    if filepass or ("workbook" in root and _msoffcrypto_says_encrypted(fh, entry.size)):
        default = _excel_default_password(fh, entry.size) if "workbook" in root else None
        if default:
            # Excel encrypts workbooks with a protected structure under the built-in password
            # "VelvetSweatshop" and opens them without asking; LibreOffice does the same (checked
            # with LibreOffice 7.4): such a file converts like any other.
            return Sniffed(fmt, None, f"Excel workbook ({biff}) encrypted with Excel's default password: "
                                      "opens without one", "ole")
        reason = f"password-protected Excel workbook ({biff}, FILEPASS record)"
        if default is None:
            # msoffcrypto-tool could not say whether the default password opens it (BIFF5, an
            # encryption it does not know): LibreOffice tries its own default passwords.
            return Sniffed(fmt, Outcome.ENCRYPTED, reason, "ole", libreoffice_decides=True)
        return Sniffed(fmt, Outcome.ENCRYPTED, reason, "ole")
    return Sniffed(fmt, None, f"Excel workbook ({biff}, {entry.name} stream)", "ole")


def _excel_default_password(fh: io.BufferedReader, stream_size: int) -> bool | None:
    """Whether an encrypted workbook opens with Excel's built-in password "VelvetSweatshop";
    None when msoffcrypto-tool cannot tell (too big, an encryption or BIFF variant it does not read)."""
    # Verifying a password is cryptography msoffcrypto-tool already does well: not hand-written.
    if stream_size > _MSOFFCRYPTO_MAX_STREAM:
        return None
    try:
        fh.seek(0)
        office_file = msoffcrypto.OfficeFile(fh)
        office_file.load_key(password="VelvetSweatshop")
        return True
    except msoffcrypto.exceptions.InvalidKeyError:
        return False
    except Exception as exc:
        if _is_io_failure(exc):
            raise
        return None


_DECRYPT_MAX = 64 << 20      # decrypting a default-password package to learn its format: bounded


def _ooxml_default_password(fh: io.BufferedReader) -> OfficeFormat | Literal[False] | None:
    """For an encrypted OOXML package: its format when "VelvetSweatshop" opens it (False when it
    opens but its format could not be read), None when it does not open with that password."""
    try:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(0)
        office_file = msoffcrypto.OfficeFile(fh)
        office_file.load_key(password="VelvetSweatshop", verify_password=True)
        if size > _DECRYPT_MAX:
            return False
        plain = io.BytesIO()
        office_file.decrypt(plain)
    except Exception as exc:
        if _is_io_failure(exc):
            raise
        return None
    try:
        plain.seek(0)
        with zipfile.ZipFile(plain) as zf:
            return _classify_zip(zf, "").format or False
    except Exception:  # noqa: BLE001 - the password opens it; only its kind stays unknown
        return False


_PPT_ENCRYPTED_TOKEN = 0xF3D1C4DF    # CurrentUserAtom.headerToken of an encrypted file (MS-PPT 2.3.2)


def _classify_powerpoint(ole: olefile.OleFileIO, fh: io.BufferedReader, root: dict, ext: str,
                         drm: bool) -> Sniffed:
    # A binary presentation, slide show and template differ in nothing PowerPoint writes into the
    # file: the extension is the only way to tell them apart.
    fmt = FORMATS[ext] if ext in ("pps", "pot") else FORMATS["ppt"]
    if "pp40" in root or _powerpoint95(ole, fh, root):
        # PowerPoint 4.0 ("PP40" stream) and 95 (no CurrentUserAtom): LibreOffice reads them with
        # libmwaw's "PowerPoint 3" filter, not its PowerPoint 97 import
        return Sniffed(FORMATS["ppt95"], None, "PowerPoint 4.0/95 presentation (before the PowerPoint 97 format)",
                       "ole")
    if drm:
        return Sniffed(fmt, Outcome.ENCRYPTED, "IRM-protected PowerPoint presentation (DRMContent stream)", "ole")
    token_encrypted = False
    current_user = root.get("current user")
    if current_user is not None:
        atom = _ole_stream_head(ole, fh, current_user, 16)
        # RecordHeader (8 bytes), size (4), headerToken (4)
        token_encrypted = len(atom) >= 16 and struct.unpack_from("<I", atom, 12)[0] == _PPT_ENCRYPTED_TOKEN
    encrypted_summary = "encryptedsummary" in root
    if (token_encrypted or encrypted_summary
            or _msoffcrypto_says_encrypted(fh, root["powerpoint document"].size)):
        evidence = ("EncryptedSummary stream" if encrypted_summary else
                    "CurrentUserAtom headerToken" if token_encrypted else "CryptSession10Container")
        return Sniffed(fmt, Outcome.ENCRYPTED, f"password-protected PowerPoint presentation ({evidence})", "ole")
    return Sniffed(fmt, None, f"{fmt.description} (PowerPoint Document stream)", "ole")


_PPT_CURRENT_USER_ATOM = 0x0FF6      # RecordHeader.recType of the CurrentUserAtom (MS-PPT 2.3.2)


def _powerpoint95(ole: olefile.OleFileIO, fh: io.BufferedReader, root: dict) -> bool:
    """True for a PowerPoint 95 file: its "Current User" stream holds no PowerPoint 97 CurrentUserAtom."""
    current_user = root.get("current user")
    if current_user is None or "powerpoint document" not in root:
        return False
    atom = _ole_stream_head(ole, fh, current_user, 8)
    return len(atom) < 8 or struct.unpack_from("<H", atom, 2)[0] != _PPT_CURRENT_USER_ATOM


def _describe_other_ole(root: dict) -> str:
    names = set(root)
    if any(name.startswith("__substg1.0_") for name in names) or "__nameid_version1.0" in names:
        return "Outlook message (.msg)"
    if "visiodocument" in names:
        return "Visio drawing (.vsd)"
    if "quill" in names:
        return "Publisher document (.pub)"
    if "matost" in names or ("contents" in names and "spelling" in names):
        return "Microsoft Works document"
    if "catalog" in names:
        return "Windows thumbnail cache (Thumbs.db)"
    if "\x05hwpsummaryinformation" in names or ("fileheader" in names and "bodytext" in names):
        return "Hangul word processor document"
    return "OLE compound file without a Word, Excel or PowerPoint stream"


# --- ZIP packages: OOXML and ODF -----------------------------------------------------------------------

class _PartTooBig(Exception):
    """A package member that must be small is implausibly big."""


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A small package member, decompressed; refuses what claims to be bigger than _MAX_SMALL_PART."""
    if info.file_size > _MAX_SMALL_PART:
        raise _PartTooBig(f"{info.filename} is {info.file_size} bytes")
    with zf.open(info) as member:
        return member.read(_MAX_SMALL_PART + 1)


def _sniff_zip(fh: io.BufferedReader, ext: str) -> Sniffed:
    try:
        fh.seek(0)
        zf = zipfile.ZipFile(fh)
    except Exception as exc:
        if _is_io_failure(exc):
            raise
        return _sniff_broken_zip(fh, ext, exc)
    try:
        with zf:
            return _classify_zip(zf, ext)
    except Exception as exc:
        if _is_io_failure(exc):
            raise
        if isinstance(exc, RuntimeError) and "encrypted" in str(exc):
            # zipfile's "File ... is encrypted, password required": a password-protected ZIP
            # (PKZIP encryption), not Office encryption, but locked all the same.
            return Sniffed(None, Outcome.ENCRYPTED, "password-protected ZIP entries (PKZIP encryption)", "zip")
        guess = FORMATS[ext] if ext in OFFICE_EXTENSIONS and ext not in _OLE_EXTENSIONS and ext != "rtf" else None
        return _damaged(guess, f"damaged ZIP package ({_short(exc)})", "zip", repair=True)


def _classify_zip(zf: zipfile.ZipFile, ext: str) -> Sniffed:
    infos = zf.infolist()
    exact: dict[str, zipfile.ZipInfo] = {}
    lower: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        exact.setdefault(info.filename, info)
        lower.setdefault(info.filename.lower(), info)      # OPC part names are case-insensitive
    if "[content_types].xml" in lower and "mimetype" not in exact:
        return _classify_ooxml(zf, lower, ext)
    if "mimetype" in exact or "META-INF/manifest.xml" in exact:
        return _classify_odf(zf, exact, ext)
    if not infos:
        return _not_office(ext, "zip", "empty ZIP archive")
    count = f"{len(infos)} entr{'y' if len(infos) == 1 else 'ies'}"
    return _not_office(ext, "zip", f"ZIP archive with neither [Content_Types].xml nor an ODF mimetype ({count})")


def _parse_small_xml(zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    return etree.fromstring(_read_member(zf, info), parser=_safe_parser())


def _classify_ooxml(zf: zipfile.ZipFile, lower: dict, ext: str) -> Sniffed:
    try:
        types = _parse_small_xml(zf, lower["[content_types].xml"])
    except (etree.XMLSyntaxError, _PartTooBig) as exc:
        return _damaged(_ooxml_guess(ext), f"damaged OOXML package: [Content_Types].xml unreadable ({_short(exc)})",
                        "zip", repair=True)
    defaults, overrides = {}, {}
    for el in types:
        if not isinstance(el.tag, str):
            continue
        name = etree.QName(el).localname
        if name == "Default" and el.get("Extension") and el.get("ContentType"):
            defaults[el.get("Extension").lower()] = el.get("ContentType").strip().lower()
        elif name == "Override" and el.get("PartName") and el.get("ContentType"):
            overrides[el.get("PartName").lstrip("/").lower()] = el.get("ContentType").strip().lower()

    main = _ooxml_main_part(zf, lower)
    if main is not None:
        content_type = overrides.get(main) or defaults.get(posixpath.splitext(main)[1].lstrip("."), "")
    else:
        # No package relationship to the main part (or no _rels/.rels): take the part whose
        # declared content type is a main-document type.
        main, content_type = next(((part, ct) for part, ct in overrides.items()
                                   if ct in _OOXML_MAIN_TYPES or ct in _OOXML_OTHER_TYPES), (None, ""))

    name = _OOXML_MAIN_TYPES.get(content_type)
    if name is None:
        what = _OOXML_OTHER_TYPES.get(content_type)
        what = f"{what}, an OOXML package we do not convert" if what else (
            f"OOXML package of an unknown kind (main part content type {content_type})" if content_type
            else "OOXML package without a main document part")
        return _not_office(ext, "zip", what)
    fmt = FORMATS[name]
    assert main is not None                 # a main content type comes with its part's name
    if main not in lower and unquote(main) not in lower:
        return _damaged(fmt, f"damaged OOXML package: main part {main} is missing", "zip", repair=True)
    return Sniffed(fmt, None, f"{fmt.description} (OOXML, main part {main})", "zip")


def _ooxml_guess(ext: str) -> OfficeFormat | None:
    """The OOXML format a damaged package's name claims, if it claims one."""
    return FORMATS[ext] if ext in _OOXML_MAIN_TYPES.values() else None


def _ooxml_main_part(zf: zipfile.ZipFile, lower: dict) -> str | None:
    """The lower-case part name the package relationship "officeDocument" points to, if any."""
    info = lower.get("_rels/.rels")
    if info is None:
        return None
    try:
        rels = _parse_small_xml(zf, info)
    except (etree.XMLSyntaxError, _PartTooBig):
        return None
    for rel in rels:
        if not isinstance(rel.tag, str) or rel.get("TargetMode", "").lower() == "external":
            continue
        if _OFFICE_DOCUMENT_REL.search(rel.get("Type", "")) and rel.get("Target"):
            target = posixpath.normpath(posixpath.join("/", rel.get("Target").replace("\\", "/")))
            return target.lstrip("/").lower()
    return None


def _classify_odf(zf: zipfile.ZipFile, exact: dict, ext: str) -> Sniffed:
    mimetype = None
    if "mimetype" in exact:
        try:
            mimetype = _read_member(zf, exact["mimetype"]).decode("ascii").strip() or None
        except (UnicodeDecodeError, _PartTooBig):
            mimetype = None
    encrypted = False
    manifest_problem = None
    info = exact.get("META-INF/manifest.xml")
    if info is None:
        manifest_problem = "no META-INF/manifest.xml"
    else:
        try:
            manifest = _parse_small_xml(zf, info)
        except (etree.XMLSyntaxError, _PartTooBig) as exc:
            manifest_problem = f"manifest.xml unreadable ({_short(exc)})"
        else:
            encrypted = next(manifest.iter(f"{{{_MANIFEST_NS}}}encryption-data"), None) is not None
            if mimetype is None:
                # ODF allows the mimetype entry to be absent; the manifest's root entry then says it.
                for entry in manifest.iter(f"{{{_MANIFEST_NS}}}file-entry"):
                    if entry.get(f"{{{_MANIFEST_NS}}}full-path") == "/":
                        mimetype = (entry.get(f"{{{_MANIFEST_NS}}}media-type") or "").strip() or None
                        break

    name = _ODF_MIMETYPES.get(mimetype or "")
    fmt = FORMATS[name] if name else None
    if encrypted:
        return Sniffed(fmt, Outcome.ENCRYPTED, "encrypted ODF package (manifest has encryption-data)", "zip")
    if fmt is None:
        if mimetype and mimetype.startswith("application/vnd.oasis.opendocument."):
            kind = mimetype.rsplit(".", 1)[1]
            return _not_office(ext, "zip", f"OpenDocument {kind} ({mimetype}), a kind we do not convert")
        if mimetype:
            return _not_office(ext, "zip", f"ZIP package of type {mimetype}")
        return _not_office(ext, "zip", "ZIP package with a manifest but no ODF mimetype")
    # A broken manifest does not stop sniffing: odf.check_package() rejects the passthrough later.
    detail = f"; {manifest_problem}" if manifest_problem else ""
    return Sniffed(fmt, None, f"{fmt.description} (ODF, mimetype {mimetype}{detail})", "zip")


def _sniff_broken_zip(fh: io.BufferedReader, ext: str, exc: BaseException) -> Sniffed:
    """A file that starts like a ZIP but has no usable central directory."""
    message = str(exc)
    if isinstance(exc, zipfile.BadZipFile) and "not a zip file" in message.lower():
        why = "truncated ZIP: no central directory"
    else:
        why = f"damaged ZIP ({_short(exc)})"
    fh.seek(0)
    names, fmt = _local_headers(fh.read(_BROKEN_ZIP_HEAD))
    office = fmt is not None or any(n.lower().startswith(_PACKAGE_NAMES) for n in names)
    # Its first entries show an Office package (or its name claims one): a broken document.
    # A broken archive of something else is not ours to convert.
    if office or ext in OFFICE_EXTENSIONS:
        what = f" ({fmt.description}, by its first entries)" if fmt else ""
        if not any(names):
            # not one named entry: there is nothing LibreOffice's repair could read
            return Sniffed(fmt, Outcome.UNREADABLE, why + what, "zip")
        if fmt is None and ext in OFFICE_EXTENSIONS and ext not in _OLE_EXTENSIONS and ext != "rtf":
            fmt = FORMATS[ext]
        # LibreOffice's package repair reads the entries' local headers: it may rescue the document
        return _damaged(fmt, why + what, "zip", repair=True)
    return Sniffed(None, Outcome.UNSUPPORTED, f"{why}: not an Office format", "zip")


_PACKAGE_NAMES = ("[content_types].xml", "_rels/", "word/", "xl/", "ppt/", "docprops/",
                  "mimetype", "meta-inf/manifest.xml", "content.xml", "styles.xml")


def _local_headers(data: bytes) -> tuple[list[str], OfficeFormat | None]:
    """Names of the first ZIP entries from their local headers, and the format they reveal, if any."""
    names: list[str] = []
    fmt = None
    pos = 0
    while pos + 30 <= len(data) and data[pos:pos + 4] == b"PK\x03\x04" and len(names) < 64:
        # local file header: signature, version, flags @6, method @8, time, date, crc,
        # compressed size @18, size, name length @26, extra length @28
        flags, method = struct.unpack_from("<HH", data, pos + 6)
        csize, = struct.unpack_from("<I", data, pos + 18)
        nlen, xlen = struct.unpack_from("<HH", data, pos + 26)
        name = data[pos + 30:pos + 30 + nlen].decode("utf-8", "replace")
        names.append(name)
        start = pos + 30 + nlen + xlen
        payload = data[start:start + csize] if csize and start + csize <= len(data) else None
        if payload is not None and fmt is None:
            fmt = _format_from_member(name, method, payload)
        if flags & 0x08 or not csize:         # sizes in a data descriptor: cannot walk further
            break
        pos = start + csize
    return names, fmt


def _format_from_member(name: str, method: int, payload: bytes) -> OfficeFormat | None:
    try:
        if method == 8:
            payload = zlib.decompressobj(-15).decompress(payload, _MAX_SMALL_PART)
        elif method != 0:
            return None
        if name == "mimetype":
            key = _ODF_MIMETYPES.get(payload.decode("ascii", "replace").strip())
            return FORMATS[key] if key else None
        if name.lower() == "[content_types].xml":
            root = etree.fromstring(payload, parser=_safe_parser())
            for el in root:
                if isinstance(el.tag, str):
                    key = _OOXML_MAIN_TYPES.get((el.get("ContentType") or "").strip().lower())
                    if key:
                        return FORMATS[key]
    except (zlib.error, etree.XMLSyntaxError, ValueError):
        return None
    return None


# --- XML: Word 2003 XML, Excel 2003 XML and other XML ----------------------------------------------------

def _sniff_xml(head: bytes, ext: str) -> Sniffed | None:
    """Word/Excel 2003 XML (or any XML) from the first few KB; None when the bytes are not XML."""
    stripped = head
    for bom in _BOMS:
        if stripped.startswith(bom):
            stripped = stripped[len(bom):]
            break
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff")) or stripped[:2] in (b"<\x00", b"\x00<")
    if not (stripped.lstrip().startswith(b"<") or utf16):
        return None

    root_ns, root_name, progid = _xml_root(head)
    if root_name is None:
        return None                      # not well-formed at the start: leave it to _describe_other
    if progid is None and not utf16:
        match = _MSO_APPLICATION.search(head)
        progid = match.group(1).decode("ascii", "replace") if match else None
    # The root element decides: the progid alone is not enough, because Office 2007+ "Flat OPC"
    # XML carries the same <?mso-application progid="Word.Document"?> as Word 2003 XML.
    if root_ns == _WORDML_NS or (root_name == "wordDocument" and progid == "Word.Document"):
        return Sniffed(FORMATS["wordml"], None, "Word 2003 XML (WordprocessingML)", "xml")
    if root_ns == _SPREADSHEETML_NS or (root_name == "Workbook" and progid == "Excel.Sheet"):
        return Sniffed(FORMATS["spreadsheetml"], None, "Excel 2003 XML (SpreadsheetML)", "xml")
    if root_ns == _FLAT_OPC_NS:
        what = f"Office 2007+ flat XML package (Flat OPC{', ' + progid if progid else ''})"
    elif root_ns == _ODF_OFFICE_NS and root_name == "document":
        what = "flat OpenDocument XML (.fodt/.fods/.fodp)"
    elif root_name.lower() == "html":
        return _not_office(ext, "html", "HTML document")
    else:
        what = f"XML document (root element {root_name})"
    return _not_office(ext, "xml", what)


def _xml_root(head: bytes) -> tuple[str | None, str | None, str | None]:
    """Namespace and local name of the root element, and the mso-application progid, from a prefix."""
    parser = etree.XMLPullParser(events=("start", "pi"), resolve_entities=False, no_network=True,
                                 load_dtd=False)
    progid = None
    try:
        parser.feed(head)                 # a prefix: incomplete is fine, malformed is not
    except etree.XMLSyntaxError:
        pass
    try:
        for event, el in parser.read_events():
            if event == "pi":
                if el.target == "mso-application":
                    match = re.search(r"""progid\s*=\s*["']([^"']+)["']""", el.text or "", re.IGNORECASE)
                    progid = match.group(1) if match else progid
            elif isinstance(el.tag, str):
                qname = etree.QName(el)
                return qname.namespace, qname.localname, progid
    except etree.XMLSyntaxError:
        pass
    return None, None, progid


# --- anything else -------------------------------------------------------------------------------------

def _describe_other(head: bytes) -> tuple[str, str]:
    """(container, description) for bytes that are neither ZIP, OLE, RTF nor XML."""
    for magic, container, what in _MAGICS:
        if head.startswith(magic):
            return container, what
    lowered = head[:1024].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "html", "HTML document"
    if lowered.startswith(b"mime-version:") and b"multipart/related" in head.lower():
        return "mhtml", "web archive (MHTML)"
    if _looks_like_text(head):
        return "text", "looks like plain text"
    if _looks_like_wp42(head):
        return "wordperfect", "WordPerfect 4.2 document"
    return "unknown", "unrecognised binary data"


def _looks_like_text(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            head[2:len(head) & ~1].decode("utf-16-le" if head[0] == 0xFF else "utf-16-be")
            return True
        except UnicodeDecodeError:
            return False
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:     # a character cut at the end of the prefix is fine
            text = head.decode("cp1252", "replace")
        else:
            text = head[:exc.start].decode("utf-8")
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\x1a")
    return controls <= len(text) // 100


# Total length of each WordPerfect 4.2 multi-byte function group 0xC0..0xFE, opening and closing
# code included; -1: variable length, closed by the same code. WordPerfect 4.2 has no magic
# number, so the only way to recognise it is that its function groups nest properly (the same
# heuristic libwpd uses). Only the message depends on it: the outcome is the same either way.
_WP42_GROUP_SIZE = (
    6, 4, 3, 5, 5, 6, 4, 6, 8, 42, 3, 6, 4, 3, 4, 3,            # 0xC0
    6, -1, -1, 4, 4, 4, 6, -1, 4, 4, 4, 4, -1, 24, 4, -1,       # 0xD0
    4, 3, -1, 150, 6, 23, 11, 3, 3, -1, -1, -1, 4, -1, 44, 18,  # 0xE0
    6, 106, -1, 100, 4, -1, 5, -1, -1, -1, -1, -1, -1, -1, -1,  # 0xF0..0xFE
)


def _looks_like_wp42(head: bytes) -> bool:
    groups = fixed = 0
    pos, end = 0, len(head)
    while pos < end:
        code = head[pos]
        if code < 0xC0:
            pos += 1
            continue
        if code == 0xFF:
            return False
        size = _WP42_GROUP_SIZE[code - 0xC0]
        if size == -1:
            close = head.find(bytes([code]), pos + 1)
            if close == -1:
                break                     # may close beyond the prefix
            pos = close + 1
        else:
            if pos + size > end:
                break
            if head[pos + size - 1] != code:
                return False
            pos += size
            fixed += 1
        groups += 1
    return groups >= 3 and fixed >= 1
