"""Risk flags of one file, read without converting it: what may not survive the move to ODF.

`inspect()` looks at the container only as far as each flag needs: ZIP directory and relationship
parts of OOXML, the OLE directory and (for Excel and PowerPoint binaries) their record streams,
the control words of RTF, the manifest of ODF. Each flag has a level that sorts files into the
migration team's planning table:

- **person** — someone must act before or after conversion (password, macros, ActiveX);
- **review** — converts, but something may be lost or behave differently: check the result;
- **info** — worth knowing, converts cleanly (comments, legacy binary format, template).

Read-only and streaming: parts are read in chunks, never a whole large file into memory.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from converters.formats import LEGACY_FORMATS, Family
from converters.sniff import sniff
from core.outcomes import Outcome

__all__ = ["RiskFlag", "RISK_FLAGS", "RiskReport", "inspect", "risk_flags", "category", "FontCatalog",
           "NEWER_EXCEL_FUNCTIONS", "DEFAULT_OVERSIZE"]

DEFAULT_OVERSIZE = 50 << 20          # bytes: above this a file is flagged `oversized`


@dataclass(frozen=True)
class RiskFlag:
    """A kind of risk: its level (person / review / info) and what it means for a person."""

    level: str
    meaning: str


RISK_FLAGS: dict[str, RiskFlag] = {
    "encrypted": RiskFlag("person", "password-protected or encrypted: needs its owner's password"),
    "irm": RiskFlag("person", "rights-managed (IRM): only its owner's organisation can open it"),
    "unreadable": RiskFlag("person", "empty, damaged or not what its name claims"),
    "damaged": RiskFlag("review", "damaged: LibreOffice may still read or repair it; check the result"),
    "repaired": RiskFlag("review", "damaged: LibreOffice repaired it to convert it; check what is left"),
    "macros_vba": RiskFlag("person", "VBA macros: they do not run in LibreOffice; someone must port or drop them"),
    "macros_xlm": RiskFlag("person", "Excel 4.0 (XLM) macro sheets"),
    "macros_autorun": RiskFlag("person", "macros that run by themselves on opening (AutoOpen, Workbook_Open …)"),
    "macros_basic": RiskFlag("person", "LibreOffice Basic macros in an ODF file"),
    "activex": RiskFlag("person", "ActiveX controls: LibreOffice cannot run them"),
    "macros_signed": RiskFlag("review", "signed macro project: the signature is lost on conversion"),
    "form_controls": RiskFlag("review", "form controls or legacy form fields"),
    "ole_embedded": RiskFlag("review", "embedded OLE objects (other documents inside this one)"),
    "ole_links": RiskFlag("review", "OLE objects linked to other files"),
    "external_links": RiskFlag("review", "links to other workbooks, files or templates"),
    "data_connections": RiskFlag("review", "external data connections or queries"),
    "digital_signature": RiskFlag("review", "digitally signed: the signature does not survive conversion"),
    "tracked_changes": RiskFlag("review", "tracked changes not yet accepted or rejected"),
    "hidden_content": RiskFlag("review", "hidden text, sheets, rows, columns or slides"),
    "smartart": RiskFlag("review", "SmartArt: becomes plain shapes"),
    "pivot_tables": RiskFlag("review", "pivot tables"),
    "slicers": RiskFlag("review", "slicers or timelines: LibreOffice has none"),
    "newer_functions": RiskFlag("review", "Excel functions LibreOffice 7.4 does not know (#NAME? after conversion)"),
    "fonts_without_substitute": RiskFlag("review", "fonts with no metric-compatible substitute on this machine: "
                                                   "lines and pages may break differently"),
    "oversized": RiskFlag("review", "very large file: slow to convert, check it converted completely"),
    "comments": RiskFlag("info", "comments or notes"),
    "legacy_binary": RiskFlag("info", "Office 97-2003 or older binary format"),
    "template": RiskFlag("info", "a template"),
}

_LEVEL_ORDER = {"person": 0, "review": 1, "info": 2}
_LEGACY_BINARY = LEGACY_FORMATS

#: Functions Excel writes with the _xlfn. prefix that LibreOffice 7.4 does not implement.
NEWER_EXCEL_FUNCTIONS = frozenset("""
XLOOKUP XMATCH FILTER SORT SORTBY UNIQUE SEQUENCE RANDARRAY LET LAMBDA MAP REDUCE SCAN MAKEARRAY
BYROW BYCOL ISOMITTED TEXTBEFORE TEXTAFTER TEXTSPLIT VSTACK HSTACK TOROW TOCOL WRAPROWS WRAPCOLS
TAKE DROP CHOOSEROWS CHOOSECOLS EXPAND IMAGE STOCKHISTORY GROUPBY PIVOTBY PERCENTOF REGEXTEST
REGEXEXTRACT REGEXREPLACE TRIMRANGE ARRAYTOTEXT VALUETOTEXT FIELDVALUE ANCHORARRAY DETECTLANGUAGE
TRANSLATE COPILOT PY
""".split())


@dataclass
class RiskReport:
    """What the scan found in one file."""

    path: str
    format: str | None               # sniffed format name, None when not an Office format
    family: str | None
    size: int
    outcome: str | None   # what sniffing alone decides: encrypted, unreadable, unsupported; None = convertible
    flags: list[str] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)   # e.g. fonts and functions behind a flag
    error: str | None = None         # an inspection that failed (the file still gets its flags so far)

    @property
    def category(self) -> str:
        return category(self.flags, self.format, error=self.error)

    def to_json(self) -> dict:
        data: dict[str, object] = {"path": self.path, "format": self.format, "family": self.family, "size": self.size,
                "outcome": self.outcome, "flags": self.flags, "category": self.category}
        if self.details:
            data["details"] = self.details
        if self.error:
            data["error"] = self.error
        return data


def category(flags: list[str], fmt: str | None, *, error: str | None = None) -> str:
    """The planning category: person, review, clean (Office files) or other (not Office).

    An Office file whose inspection failed part-way (`error`) is at least review: its flags may be
    incomplete, so nobody can call it clean.
    """
    if fmt is None and "unreadable" not in flags and "encrypted" not in flags:
        return "other"
    levels = {RISK_FLAGS[f].level for f in flags if f in RISK_FLAGS}
    if "person" in levels:
        return "person"
    if "review" in levels or error:
        return "review"
    return "clean"


class FontCatalog:
    """Font families installed here, and whether a document's font has a metric-compatible stand-in."""

    #: Microsoft fonts and their metric-compatible free substitutes (same widths: same line breaks).
    METRIC_COMPATIBLE = {
        "calibri": "carlito", "cambria": "caladea", "arial": "liberation sans", "helvetica": "liberation sans",
        "times new roman": "liberation serif", "times": "liberation serif", "courier new": "liberation mono",
        "courier": "liberation mono", "arial narrow": "liberation sans narrow", "georgia": "gelasio",
        "helvetica neue": "liberation sans", "tms rmn": "liberation serif",
    }
    #: Symbol fonts LibreOffice recodes to its own OpenSymbol on import, and math fonts it replaces.
    HANDLED = {"symbol", "wingdings", "wingdings 2", "wingdings 3", "webdings", "marlett", "ms outlook",
               "mt extra", "cambria math", "opensymbol"}

    #: Generic names fontconfig always resolves.
    GENERIC = {"sans", "serif", "monospace", "sans-serif", "mono", "system-ui"}

    _lock = threading.Lock()
    _families: set[str] | None = None

    @classmethod
    def installed(cls) -> set[str] | None:
        """Lower-case family names known to fontconfig, or None when fc-list is not available."""
        with cls._lock:
            if cls._families is None:
                if not shutil.which("fc-list"):
                    return None
                out = subprocess.run(["fc-list", ":", "family"], capture_output=True, text=True, timeout=60).stdout
                cls._families = {name.strip().lower() for line in out.splitlines() for name in line.split(",")}
            return cls._families

    @classmethod
    def missing(cls, fonts: set[str]) -> list[str]:
        """Fonts of `fonts` with neither an installed family nor an installed metric-compatible substitute."""
        families = cls.installed()
        if families is None:
            return []
        lost = []
        for font in fonts:
            # CSS-like lists ("Open Sans;Arial;sans-serif"): one usable name is enough
            choices = [c.strip().strip("'\"").lower() for c in re.split(r"[;,]", font) if c.strip()]
            if not choices or all(c.startswith("+") or set(c) <= {"?", " "} for c in choices):
                continue
            if any(c in cls.HANDLED or c in cls.GENERIC or c in families
                   or cls.METRIC_COMPATIBLE.get(c) in families for c in choices):
                continue
            lost.append(font.strip())
        return sorted(set(lost))


# ------------------------------------------------------------------------------------ entry ----

def risk_flags(path: Path) -> list[str]:
    """The risk flags of one file (see `inspect`)."""
    return inspect(path).flags


def inspect(path: Path, *, root: Path | None = None, oversize: int = DEFAULT_OVERSIZE,
            fonts: bool = True) -> RiskReport:
    """Inspect one file; never raises for bad content (an OSError reading the file does)."""
    path = Path(path)
    size = path.stat().st_size
    shown = path.relative_to(root).as_posix() if root else str(path)
    sniffed = sniff(path)
    fmt = sniffed.format
    report = RiskReport(shown, fmt.name if fmt else None, fmt.family.value if fmt else None, size,
                        sniffed.outcome.value if sniffed.outcome else None)
    flags: set[str] = set()
    if sniffed.outcome is Outcome.ENCRYPTED:
        flags.add("irm" if "IRM" in sniffed.reason else "encrypted")
    elif sniffed.outcome is Outcome.UNREADABLE:
        # damage LibreOffice may read past or repair is for review; the rest needs a person
        flags.add("damaged" if sniffed.libreoffice_decides else "unreadable")
    if size > oversize:
        flags.add("oversized")
    if fmt is not None:
        if fmt.template:
            flags.add("template")
        if fmt.name in _LEGACY_BINARY:
            flags.add("legacy_binary")
    if fmt is not None and sniffed.outcome is None:
        try:
            if sniffed.container == "zip" and not fmt.is_odf:
                _ooxml(path, fmt.family, flags, report.details, fonts)
            elif sniffed.container == "zip":
                _odf(path, flags)
            elif sniffed.container == "ole":
                _ole(path, fmt.name, flags)
            elif sniffed.container == "rtf":
                _rtf(path, flags)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged part must not stop the scan
            report.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    report.flags = sorted(flags, key=lambda f: (_LEVEL_ORDER[RISK_FLAGS[f].level], f))
    return report


# ------------------------------------------------------------------------------------ OOXML ----

_EXTERNAL_KINDS = {"externalLinkPath", "attachedTemplate", "subDocument", "frame", "image", "externalLink",
                   "oleObject", "package", "xlExternalLinkPath"}
_CHANGES_XML = re.compile(rb"<w:(?:ins|del|moveFrom|moveTo)[\s>]")
_FORM_FIELD = re.compile(rb"<w:ffData[\s>]")
_AUTO_NAME = re.compile(rb'name="(?:_xlnm\.)?Auto_(?:Open|Activate|Close)', re.IGNORECASE)
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_A = "http://schemas.openxmlformats.org/drawingml/2006/main"


def _scan_part(zf: zipfile.ZipFile, name: str, pattern: re.Pattern, limit: int = 64 << 20) -> list[bytes]:
    """Matches of `pattern` in a part, read in 1 MB chunks (a match may not span more than 4 KB)."""
    found: list[bytes] = []
    tail = b""
    read = 0
    with zf.open(name) as stream:
        while read < limit:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            read += len(chunk)
            data = tail + chunk
            for m in pattern.finditer(data):
                if m.end() > len(tail):
                    # the first group that matched: with alternatives, the others are None
                    found.append(next((g for g in m.groups() if g is not None), m.group(0)))
            tail = data[-4096:]
    return found


def _ooxml(path: Path, family: Family, flags: set[str], details: dict, fonts: bool) -> None:
    with zipfile.ZipFile(path) as zf:
        names = [i.filename for i in zf.infolist()]
        lower = [n.lower() for n in names]
        by_lower = dict(zip(lower, names))

        def has(prefix: str) -> bool:
            return any(n.startswith(prefix) or f"/{prefix}" in n for n in lower)

        if any(n.endswith("vbaproject.bin") for n in lower):
            flags.add("macros_vba")
            if any("vbaprojectsignature" in n for n in lower):
                flags.add("macros_signed")
            if _vba_autorun(path):
                flags.add("macros_autorun")
        if has("xl/macrosheets/"):
            flags.add("macros_xlm")
        if has("activex/"):
            flags.add("activex")
        if has("xl/ctrlprops/"):
            flags.add("form_controls")
        if any("/embeddings/" in n for n in lower):
            flags.add("ole_embedded")
        if has("xl/externallinks/"):
            flags.add("external_links")
        if "xl/connections.xml" in lower or has("xl/querytables/"):
            flags.add("data_connections")
        if has("_xmlsignatures/"):
            flags.add("digital_signature")
        if any(re.search(r"(^|/)comments\d*\.xml$|threadedcomments|/comments/", n) for n in lower):
            flags.add("comments")
        if any("/diagrams/data" in n for n in lower):
            flags.add("smartart")
        if has("xl/pivottables/"):
            flags.add("pivot_tables")
        if has("xl/slicers/") or has("xl/slicercaches/") or has("xl/timelines/"):
            flags.add("slicers")
        if has("xl/revisions/"):
            flags.add("tracked_changes")
        for rels in (n for n in lower if n.endswith(".rels")):
            _external_relationships(zf, by_lower[rels], flags)

        if family is Family.TEXT:
            main = by_lower.get("word/document.xml")
            if main:
                if _scan_part(zf, main, _CHANGES_XML):
                    flags.add("tracked_changes")
                if _scan_part(zf, main, re.compile(rb"<w:vanish(?:\s*/>|\s+w:val=\"(?:1|true|on)\")")):
                    flags.add("hidden_content")
                if _scan_part(zf, main, _FORM_FIELD):
                    flags.add("form_controls")
            if fonts:
                used: set[str] = set()
                for part in ("word/document.xml", "word/styles.xml"):
                    if part in by_lower:
                        used |= _font_names(zf, by_lower[part], f"{{{_W}}}rFonts", (f"{{{_W}}}ascii", f"{{{_W}}}hAnsi"))
                for part in (n for n in lower if re.match(r"word/theme/theme\d*\.xml$", n)):
                    used |= _font_names(zf, by_lower[part], f"{{{_A}}}latin", ("typeface",))
                _fonts(used, flags, details)
        elif family is Family.SPREADSHEET:
            workbook = by_lower.get("xl/workbook.xml")
            if workbook:
                head = zf.read(workbook)[: 4 << 20]
                if re.search(rb'state="(?:hidden|veryHidden)"', head):
                    flags.add("hidden_content")
                if _AUTO_NAME.search(head) and ("macros_xlm" in flags or "macros_vba" in flags):
                    flags.add("macros_autorun")
            functions: set[str] = set()
            for n in lower:
                if n.startswith("xl/worksheets/") and n.endswith(".xml"):
                    hits = _scan_part(zf, by_lower[n],
                                      re.compile(rb'_xlfn\.(?:_xlws\.)?([A-Z][A-Z0-9.]*)\(|(\bhidden="(?:1|true)")'))
                    for hit in hits:
                        if hit.startswith(b"hidden"):
                            flags.add("hidden_content")
                        else:
                            functions.add(hit.decode("ascii", "replace"))
            newer = sorted(f for f in functions if f in NEWER_EXCEL_FUNCTIONS)
            if newer:
                flags.add("newer_functions")
                details["newer_functions"] = newer
            if fonts and "xl/styles.xml" in by_lower:
                used = {f.decode("utf-8", "replace") for f in _scan_part(zf, by_lower["xl/styles.xml"],
                                                                         re.compile(rb'<(?:\w+:)?name val="([^"]+)"'))}
                _fonts(used, flags, details)
        elif family is Family.PRESENTATION:
            used = set()
            for n in lower:
                if re.match(r"ppt/slides/slide\d+\.xml$", n):
                    with zf.open(by_lower[n]) as stream:
                        head = stream.read(4096)
                    if re.search(rb'<p:sld\b[^>]*\bshow="0"', head):
                        flags.add("hidden_content")
                    if fonts:
                        used |= _font_names(zf, by_lower[n], f"{{{_A}}}latin", ("typeface",))
                elif fonts and re.match(r"ppt/theme/theme\d+\.xml$", n):
                    used |= _font_names(zf, by_lower[n], f"{{{_A}}}latin", ("typeface",))
            if fonts:
                _fonts(used, flags, details)


def _font_names(zf: zipfile.ZipFile, name: str, tag: str, attrs: tuple[str, ...]) -> set[str]:
    """Font names in the attributes `attrs` of the elements `tag` of one part (read as a stream)."""
    names: set[str] = set()
    with zf.open(name) as stream:
        for _, el in etree.iterparse(stream, events=("end",), tag=tag, resolve_entities=False,
                                     no_network=True, huge_tree=True):
            for attr in attrs:
                value = el.get(attr)
                if value:
                    names.add(value)
            el.clear()
    return names


def _fonts(used: set[str], flags: set[str], details: dict) -> None:
    missing = FontCatalog.missing(used)
    if missing:
        flags.add("fonts_without_substitute")
        details["fonts_without_substitute"] = missing[:20]


def _external_relationships(zf: zipfile.ZipFile, name: str, flags: set[str]) -> None:
    info = zf.getinfo(name)
    if info.file_size > 8 << 20:
        return
    try:
        root = etree.fromstring(zf.read(info), etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return
    for rel in root:
        if not isinstance(rel.tag, str) or (rel.get("TargetMode") or "").lower() != "external":
            continue
        kind = (rel.get("Type") or "").rstrip("/").rsplit("/", 1)[-1]
        if kind == "oleObject":
            flags.add("ole_links")
        elif kind in _EXTERNAL_KINDS:
            flags.add("external_links")


def _has_vba(path: Path) -> bool:
    import logging

    from oletools import olevba

    logging.getLogger("olevba").setLevel(logging.CRITICAL)
    parser = olevba.VBA_Parser(str(path))
    try:
        return bool(parser.detect_vba_macros())
    finally:
        parser.close()


def _vba_autorun(path: Path) -> bool:
    """Whether a VBA project holds macros that run on their own (olevba's AutoExec keywords)."""
    import logging

    from oletools import olevba

    logging.getLogger("olevba").setLevel(logging.CRITICAL)
    parser = olevba.VBA_Parser(str(path))
    try:
        for _, _, _, code in parser.extract_macros():
            if code and olevba.detect_autoexec(code):
                return True
    finally:
        parser.close()
    return False


# -------------------------------------------------------------------------------------- ODF ----

def _odf(path: Path, flags: set[str]) -> None:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if any(n.startswith(("Basic/", "Scripts/")) for n in names):
            flags.add("macros_basic")
        if "META-INF/documentsignatures.xml" in names:
            flags.add("digital_signature")
        if "content.xml" in names:
            hits = _scan_part(zf, "content.xml", re.compile(
                rb"(<office:annotation[\s>]|<text:tracked-changes[\s>]|<draw:object-ole[\s>]|<text:hidden-"
                rb"|table:display=\"false\")"))
            for hit in set(hits):
                if hit.startswith(b"<office:annotation"):
                    flags.add("comments")
                elif hit.startswith(b"<text:tracked"):
                    flags.add("tracked_changes")
                elif hit.startswith(b"<draw:object-ole"):
                    flags.add("ole_embedded")
                else:
                    flags.add("hidden_content")


# -------------------------------------------------------------------------------------- OLE ----

_BIFF_BOUNDSHEET, _BIFF_SUPBOOK, _BIFF_NAME, _BIFF_NOTE, _BIFF_SXVIEW, _BIFF_OBJ, _BIFF_DCONN = (
    0x0085, 0x01AE, 0x0018, 0x001C, 0x00B0, 0x005D, 0x0876)
# button, check box, option, spinner, scroll bar, list, drop-down
_FORM_OBJECTS = {0x07, 0x0B, 0x0C, 0x10, 0x11, 0x12, 0x14}
_MAX_STREAM = 256 << 20


def _ole(path: Path, name: str, flags: set[str]) -> None:
    import olefile

    with olefile.OleFileIO(str(path)) as ole:
        entries = ["/".join(e).lower() for e in ole.listdir(streams=True, storages=True)]
        top = {e.split("/")[0] for e in entries}
        if "macros" in top or "_vba_project_cur" in top or any(e.endswith("/vba/dir") for e in entries):
            flags.add("macros_vba")
        if any("digitalsignature" in e for e in entries):
            flags.add("macros_signed" if "macros_vba" in flags else "digital_signature")
        if "_signatures" in top or "_xmlsignatures" in top:
            flags.add("digital_signature")
        if any(e.startswith("objectpool/") for e in entries) or any(t.startswith("mbd") for t in top):
            flags.add("ole_embedded")
        if name in ("doc", "dot"):
            _doc(ole, flags)
        elif name in ("xls", "xlt") and ole.exists("Workbook") and ole.get_size("Workbook") <= _MAX_STREAM:
            _biff(ole.openstream("Workbook").read(), flags)
        elif name in ("ppt", "pps", "pot") and ole.exists("PowerPoint Document") \
                and ole.get_size("PowerPoint Document") <= _MAX_STREAM:
            _ppt(ole.openstream("PowerPoint Document").read(), flags)
    if "ppt_vba_info" in flags:
        # A VBAInfo record also appears in presentations whose project holds no macros: olevba
        # follows it to the compressed project and says whether there is code.
        flags.discard("ppt_vba_info")
        if _has_vba(path):
            flags.add("macros_vba")
    if "macros_vba" in flags and _vba_autorun(path):
        flags.add("macros_autorun")


def _doc(ole, flags: set[str]) -> None:
    fib = ole.openstream("WordDocument").read(1024)
    if len(fib) < 154:
        return
    csw = struct.unpack_from("<H", fib, 32)[0]
    cslw = struct.unpack_from("<H", fib, 34 + csw * 2)[0]
    lw = 36 + csw * 2
    fclcb = lw + cslw * 4 + 2
    pairs = struct.unpack_from("<H", fib, lw + cslw * 4)[0]

    def lcb(index: int) -> int:
        pos = fclcb + 8 * index + 4
        return struct.unpack_from("<I", fib, pos)[0] if index < pairs and pos + 4 <= len(fib) else 0

    if lcb(4) > 4:                    # PlcfandRef: comments
        flags.add("comments")


def _biff(data: bytes, flags: set[str]) -> None:
    pos = 0
    while pos + 4 <= len(data):
        rec, size = struct.unpack_from("<HH", data, pos)
        body = data[pos + 4:pos + 4 + size]
        if rec == _BIFF_BOUNDSHEET and len(body) >= 6:
            if body[4] & 0x03:
                flags.add("hidden_content")
            if body[5] == 0x01:
                flags.add("macros_xlm")
        elif rec == _BIFF_SUPBOOK and len(body) >= 4:
            ctab, cch = struct.unpack_from("<HH", body, 0)
            if cch not in (0x0401, 0x3A01) and cch > 0:
                flags.add("external_links")
        elif rec == _BIFF_NAME and len(body) >= 16:
            # BIFF8 NAME: fBuiltin (0x0020) with the one-character name 0x01 Auto_Open or 0x0A Auto_Activate
            options = struct.unpack_from("<H", body, 0)[0]
            if options & 0x0020 and body[15] in (0x01, 0x0A):
                flags.add("macros_autorun")
        elif rec == _BIFF_NOTE:
            flags.add("comments")
        elif rec == _BIFF_SXVIEW:
            flags.add("pivot_tables")
        elif rec == _BIFF_DCONN:
            flags.add("data_connections")
        elif rec == _BIFF_OBJ and len(body) >= 6:
            ft, _cb, ot = struct.unpack_from("<HHH", body, 0)
            if ft == 0x15 and ot in _FORM_OBJECTS:
                flags.add("form_controls")
        pos += 4 + size


def _ppt(data: bytes, flags: set[str]) -> None:
    from reports.legacy import PPT_VBA_INFO, ppt_records

    stack = [(0, len(data), 0)]
    seen = 0
    while stack and seen < 200_000:
        start, end, depth = stack.pop()
        for _, _, rtype, body, length, container in ppt_records(data, start, end):
            seen += 1
            if rtype == PPT_VBA_INFO:
                flags.add("ppt_vba_info")          # confirmed (or dropped) by olevba in _ole
            elif rtype == 0x1011:                 # ExOleObjStg
                flags.add("ole_embedded")
            elif rtype == 0x0FD1:                 # ExOleLinkAtom
                flags.add("ole_links")
            elif rtype == 0x2EE0:                 # Comment10Container
                flags.add("comments")
            if container and depth < 16 and rtype not in (0x1011,):
                stack.append((body, body + length, depth + 1))


# -------------------------------------------------------------------------------------- RTF ----

_RTF_FLAGS = [
    (re.compile(rb"\\object(?![a-z])"), "ole_embedded"),
    (re.compile(rb"\\objlink|\\objautlink"), "ole_links"),
    (re.compile(rb"\\annotation|\\atnid"), "comments"),
    (re.compile(rb"\\revised(?![a-z])|\\deleted(?![a-z])"), "tracked_changes"),
    (re.compile(rb"\\v(?![a-z])(?!0)"), "hidden_content"),
    (re.compile(rb"INCLUDEPICTURE\s+\"?https?:|INCLUDETEXT|\\\\l\s+\"?https?:", re.IGNORECASE), "external_links"),
]


def _rtf(path: Path, flags: set[str]) -> None:
    with open(path, "rb") as f:
        tail = b""
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            data = tail + chunk
            for pattern, flag in _RTF_FLAGS:
                if flag not in flags and pattern.search(data):
                    flags.add(flag)
            tail = data[-256:]
