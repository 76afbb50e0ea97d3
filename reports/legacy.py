"""Legacy and minor formats as far as they can be read without LibreOffice: .doc, .ppt, .rtf, Word 2003 XML.

No maintained Python library reads the text of Word or PowerPoint binaries (olefile only opens
the container), so the few structures fidelity needs are read here, following Microsoft's
published specifications:

- Word 97-2003 ([MS-DOC]): the FIB's character counts split the text into main text, footnotes,
  headers, comments, endnotes and text boxes; the piece table (CLX) says where each run of text
  lies and whether it is 8-bit or UTF-16; field codes are dropped and field results kept, as Word
  shows them. Counted: paragraphs, inline pictures, embedded objects, fields, hyperlinks,
  footnotes, endnotes, comments, bookmarks and sections.
- PowerPoint 97-2003 ([MS-PPT]): the persist directory of the last edit leads to the live slide
  list (older, superseded copies of slides stay in the file after a fast save and are ignored);
  per slide its text and its speaker notes.
- RTF: a small tokenizer keeps visible text and counts pictures, objects, fields, footnotes,
  comments and bookmarks; font tables, style sheets, picture data and other hidden destinations
  are skipped. (The striprtf package only returns text.)

Word 6.0/95 files, whose FIB differs, are not read: the report says so instead of guessing.
"""

from __future__ import annotations

import re
import struct
from typing import Any
from collections import Counter
from datetime import datetime
from pathlib import Path

from lxml import etree

from converters.formats import Family
from reports.facts import Facts, SlideFacts, TableFacts
from reports.text import TextBag, bag

__all__ = ["read_doc", "read_ppt", "read_rtf", "read_wordml", "ole_metadata", "NotReadable",
           "ppt_records", "PPT_VBA_INFO", "biff_sheets"]


class NotReadable(ValueError):
    """The source is in a variant this reader does not read (the comparison is skipped, with this reason)."""


def ole_metadata(path: Path) -> dict[str, str]:
    """Title, subject, author and dates from an OLE file's SummaryInformation stream."""
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as ole:
            meta = ole.get_metadata()
    except Exception:  # noqa: BLE001 - metadata is optional; a damaged stream means none
        return {}

    def text(value) -> str | None:
        if isinstance(value, bytes):
            value = value.decode("cp1252", "replace")
        # a string property ends at its first NUL (some producers leave garbage after it)
        value = value.split("\x00", 1)[0].strip() if isinstance(value, str) else None
        return value or None

    def moment(value) -> str | None:
        return value.strftime("%Y-%m-%dT%H:%M") if isinstance(value, datetime) and value.year > 1601 else None

    # (OleMetadata sets these attributes from its lists of property names: types-olefile does not declare them)
    found = {"title": text(meta.title), "subject": text(meta.subject),  # type: ignore[attr-defined]
             "author": text(meta.author), "created": moment(meta.create_time),  # type: ignore[attr-defined]
             "modified": moment(meta.last_saved_time),  # type: ignore[attr-defined]
             "application": text(meta.creating_application)}  # type: ignore[attr-defined]
    return {k: v for k, v in found.items() if v}


def _u16(data: bytes, pos: int) -> int:
    return struct.unpack_from("<H", data, pos)[0]


def _u32(data: bytes, pos: int) -> int:
    return struct.unpack_from("<I", data, pos)[0]


def biff_sheets(path: Path) -> list[tuple[str, bool, str]]:
    """(name, hidden, kind) of every sheet of an Excel 97-2003 / 5.0 workbook, in order (BOUNDSHEET records).

    kind is "worksheet", "macro" (XLM), "chart" or "vba". Empty when the stream cannot be read.
    """
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as ole:
            name = "Workbook" if ole.exists("Workbook") else "Book"
            data = ole.openstream(name).read()
    except Exception:  # noqa: BLE001 - callers fall back to what their library read
        return []
    kinds = {0x00: "worksheet", 0x01: "macro", 0x02: "chart", 0x06: "vba"}
    biff8 = len(data) >= 8 and struct.unpack_from("<H", data, 4)[0] == 0x0600
    sheets = []
    pos = 0
    while pos + 4 <= len(data):
        rec, size = struct.unpack_from("<HH", data, pos)
        body = data[pos + 4:pos + 4 + size]
        if rec == 0x0085 and len(body) >= 8:
            cch = body[6]
            if biff8:
                wide = body[7] & 0x01
                raw = body[8:8 + cch * (2 if wide else 1)]
                text = raw.decode("utf-16-le" if wide else "latin-1", "replace")
            else:
                text = body[7:7 + cch].decode("cp1252", "replace")
            sheets.append((text, bool(body[4] & 0x03), kinds.get(body[5], "worksheet")))
        elif rec == 0x000A:              # EOF of the workbook globals
            break
        pos += 4 + size
    return sheets


# ============================================================================ Word 97-2003 =====

_FIELD_ELSEWHERE = {"HYPERLINK", "TOC", "PAGEREF", "XE", "TC", "INDEX", "RD", "?", "SHAPE", "EMBED",
                    "BIBLIOGRAPHY", "INCLUDEPICTURE", "TA", "TOA"}
_PAGE_FIELDS = {"PAGE", "NUMPAGES", "SECTIONPAGES"}
_STORIES = ("main", "footnotes", "headers", "macros", "comments", "endnotes", "text boxes", "header text boxes")


class _WordText:
    """Visible text of a Word binary story, field by field, with what the special characters mark."""

    def __init__(self) -> None:
        self.fields: Counter = Counter()
        self.pictures = 0
        self.objects = 0

    def clean(self, raw: str, count: bool) -> str:
        out: list[str] = []
        stack: list[list] = []          # [state, code chars] per open field; state "code" or "result"
        for ch in raw:
            if ch == "\x13":
                stack.append(["code", []])
                continue
            if ch == "\x14" and stack:
                stack[-1][0] = "result"
                if count:
                    self.fields[_keyword("".join(stack[-1][1]))] += 1
                continue
            if ch == "\x15" and stack:
                state, code = stack.pop()
                if state == "code" and count:           # a field without a result
                    self.fields[_keyword("".join(code))] += 1
                continue
            if stack and stack[-1][0] == "code":
                stack[-1][1].append(ch)
                continue
            if any(_keyword("".join(code)) in _PAGE_FIELDS for state, code in stack if state == "result"):
                continue                                # the page being printed, not text
            if ch == "\x01":
                if count:
                    embedded = stack and _keyword("".join(stack[-1][1])) == "EMBED"
                    if embedded:
                        self.objects += 1
                    else:
                        self.pictures += 1
                continue
            if ch in "\x02\x05\x08\x1f":   # note/comment reference marks, drawn-object anchors, optional hyphen
                continue
            if ch == "\x1e":
                out.append("-")
            elif ch in "\r\x07\x0b\x0c":
                out.append("\n")
            elif ch < " " and ch not in "\t\n":
                out.append(" ")
            else:
                out.append(ch)
        return "".join(out)


def _keyword(code: str) -> str:
    words = code.strip().split()
    return words[0].upper().lstrip("\\") if words else "?"


def _sttb_strings(data: bytes) -> list[str]:
    """Strings of an STTB (extended, UTF-16) as Word stores bookmark names."""
    if len(data) < 6:
        return []
    extended = _u16(data, 0) == 0xFFFF
    pos = 2 if extended else 0
    count, extra = _u16(data, pos), _u16(data, pos + 2)
    pos += 4
    names = []
    for _ in range(count):
        if pos + 2 > len(data):
            break
        if extended:
            n = _u16(data, pos)
            names.append(data[pos + 2:pos + 2 + 2 * n].decode("utf-16-le", "replace"))
            pos += 2 + 2 * n + extra
        else:
            n = data[pos]
            names.append(data[pos + 1:pos + 1 + n].decode("cp1252", "replace"))
            pos += 1 + n + extra
    return names


def read_doc(path: Path) -> Facts:
    """Facts of a Word 97-2003 document or template, from the FIB and the piece table."""
    import olefile

    facts = Facts(Family.TEXT, "doc-binary")
    facts.notes.append("doc: tables, headings, lists, tracked changes and headers are not counted in the source")
    with olefile.OleFileIO(str(path)) as ole:
        wd = ole.openstream("WordDocument").read()
        n_fib, flags = _u16(wd, 2), _u16(wd, 0x0A)
        if n_fib < 0xC1:
            raise NotReadable(f"Word 6.0/95 document (nFib {n_fib}): its structure is not read")
        table_name = "1Table" if flags & 0x0200 else "0Table"
        if not ole.exists(table_name):
            raise NotReadable(f"no {table_name} stream")
        table = ole.openstream(table_name).read()
    csw = _u16(wd, 32)
    lw = 34 + csw * 2 + 2                       # fibRgLw
    cslw = _u16(wd, 34 + csw * 2)
    ccp = [_u32(wd, lw + 12 + 4 * i) for i in range(8)]   # ccpText, Ftn, Hdd, Mcr, Atn, Edn, Txbx, HdrTxbx
    fclcb = lw + cslw * 4 + 2                   # fibRgFcLcbBlob
    n_pairs = _u16(wd, lw + cslw * 4)

    def pair(index: int) -> tuple[int, int]:
        if index >= n_pairs:
            return 0, 0
        return _u32(wd, fclcb + 8 * index), _u32(wd, fclcb + 8 * index + 4)

    fc_clx, lcb_clx = pair(33)
    text = _piece_text(wd, table[fc_clx:fc_clx + lcb_clx])
    stories, start = {}, 0
    for name, length in zip(_STORIES, ccp):
        stories[name] = text[start:start + length]
        start += length
    reader = _WordText()
    main = reader.clean(stories["main"], count=True)
    paragraphs = [p for p in main.split("\n")]
    c = facts.counts
    c["paragraphs"] = sum(1 for p in paragraphs if p.strip())
    c["images_inline"] = reader.pictures
    c["objects"] = reader.objects
    c["hyperlinks"] = reader.fields.get("HYPERLINK", 0)
    c["footnotes"] = max(0, (pair(2)[1] - 4) // 6)          # PlcffndRef: CPs + 2-byte FRDs
    c["endnotes"] = max(0, (pair(46)[1] - 4) // 6)          # PlcfendRef
    c["comments"] = max(0, (pair(4)[1] - 4) // 34)          # PlcfandRef: CPs + 30-byte ATRDPre10
    c["sections"] = max(0, (pair(6)[1] - 4) // 16)          # PlcfSed: CPs + 12-byte SEDs
    fc_bk, lcb_bk = pair(21)
    names = _sttb_strings(table[fc_bk:fc_bk + lcb_bk]) if lcb_bk else []
    c["bookmarks"] = sum(1 for n in names if n != "_GoBack")
    facts.text = bag(main)
    other = _WordText()
    for story, part in (("footnotes", "footnotes and endnotes"), ("endnotes", "footnotes and endnotes"),
                        ("comments", "comments"), ("headers", "headers and footers"),
                        ("text boxes", "text boxes")):
        cleaned = (reader if story == "headers" else other).clean(stories[story], count=story == "headers")
        facts.parts.setdefault(part, TextBag()).add(cleaned)
        facts.text.add(cleaned)
    header_boxes = other.clean(stories["header text boxes"], count=False)
    facts.parts["headers and footers"].add(header_boxes)
    facts.text.add(header_boxes)
    c["fields"] = sum(n for k, n in reader.fields.items() if k not in _FIELD_ELSEWHERE)   # main text and headers
    facts.metadata = ole_metadata(path)
    facts.metadata.pop("application", None)
    return facts


def _piece_text(wd: bytes, clx: bytes) -> str:
    """All text of a Word binary in CP order, from the piece table (CLX) [MS-DOC 2.9.38]."""
    pos = 0
    plc = b""
    while pos < len(clx):
        kind = clx[pos]
        if kind == 0x01:                         # Prc: property modifiers, skipped
            pos += 3 + _u16(clx, pos + 1)
        elif kind == 0x02:                       # Pcdt: the piece table
            lcb = _u32(clx, pos + 1)
            plc = clx[pos + 5:pos + 5 + lcb]
            break
        else:
            raise NotReadable("damaged piece table (CLX)")
    if len(plc) < 16:
        raise NotReadable("no piece table")
    n = (len(plc) - 4) // 12
    cps = struct.unpack_from(f"<{n + 1}I", plc, 0)
    pieces = []
    for k in range(n):
        fc_raw = _u32(plc, 4 * (n + 1) + 8 * k + 2)
        length = cps[k + 1] - cps[k]
        if length <= 0:
            continue
        if fc_raw & 0x40000000:                  # 8-bit text at fc / 2
            start = (fc_raw & 0x3FFFFFFF) // 2
            pieces.append(wd[start:start + length].decode("cp1252", "replace"))
        else:
            start = fc_raw & 0x3FFFFFFF
            pieces.append(wd[start:start + 2 * length].decode("utf-16-le", "replace"))
    return "".join(pieces)


# ============================================================================ PowerPoint 97-2003

PPT_VBA_INFO = 0x03FF                    # VBAInfoContainer: the presentation carries a VBA project
_DOCUMENT, _SLIDE, _NOTES, _SLWT, _SLIDE_PERSIST = 0x03E8, 0x03EE, 0x03F0, 0x0FF0, 0x03F3
_TEXT_CHARS, _TEXT_BYTES, _USER_EDIT, _PERSIST_DIR = 0x0FA0, 0x0FA8, 0x0FF5, 0x1772


def ppt_records(data: bytes, start: int = 0, end: int | None = None):
    """(offset, instance, type, payload start, length, is container) of the records in [start, end)."""
    end = len(data) if end is None else min(end, len(data))
    pos = start
    while pos + 8 <= end:
        ver_inst, rtype, length = struct.unpack_from("<HHI", data, pos)
        yield pos, ver_inst >> 4, rtype, pos + 8, length, (ver_inst & 0xF) == 0xF
        pos += 8 + length


def _ppt_texts(data: bytes, start: int, end: int, depth: int = 0) -> list[str]:
    texts = []
    for _, _, rtype, body, length, container in ppt_records(data, start, end):
        if container and depth < 32:
            texts += _ppt_texts(data, body, body + length, depth + 1)
        elif rtype == _TEXT_CHARS:
            texts.append(data[body:body + length].decode("utf-16-le", "replace"))
        elif rtype == _TEXT_BYTES:
            texts.append(data[body:body + length].decode("cp1252", "replace"))
    return [t.replace("\r", "\n").replace("\x0b", "\n") for t in texts]


def _ppt_persist(data: bytes, current_user: bytes) -> tuple[dict[int, int], int]:
    """The live persist directory (persist id -> offset) and the document's persist id."""
    offset = _u32(current_user, 16)
    persist: dict[int, int] = {}
    doc_ref = None
    seen = 0
    while offset and offset + 32 <= len(data) and seen < 1000:
        seen += 1
        if _u16(data, offset + 2) != _USER_EDIT:
            raise NotReadable("damaged edit chain")
        last_edit, dir_offset = _u32(data, offset + 16), _u32(data, offset + 20)
        doc_ref = doc_ref if doc_ref is not None else _u32(data, offset + 24)
        if dir_offset + 8 <= len(data) and _u16(data, dir_offset + 2) == _PERSIST_DIR:
            pos, stop = dir_offset + 8, dir_offset + 8 + _u32(data, dir_offset + 4)
            while pos + 4 <= stop:
                entry = _u32(data, pos)
                first, count = entry & 0xFFFFF, entry >> 20
                for k in range(count):
                    persist.setdefault(first + k, _u32(data, pos + 4 + 4 * k))   # newer edits win
                pos += 4 + 4 * count
        offset = last_edit
    if doc_ref is None or doc_ref not in persist:
        raise NotReadable("no document in the persist directory")
    return persist, doc_ref


def read_ppt(path: Path) -> Facts:
    """Facts of a PowerPoint 97-2003 presentation: slides in order, their text and notes."""
    import olefile

    facts = Facts(Family.PRESENTATION, "ppt-binary")
    facts.notes.append("ppt: shapes, pictures, hidden slides, transitions and animations are not counted "
                       "in the source")
    with olefile.OleFileIO(str(path)) as ole:
        data = ole.openstream("PowerPoint Document").read()
        current_user = ole.openstream("Current User").read() if ole.exists("Current User") else b""
    if len(current_user) < 20:
        raise NotReadable("no Current User stream")
    persist, doc_ref = _ppt_persist(data, current_user)
    doc = persist[doc_ref]
    lists: dict[int, list[tuple[int, list[str]]]] = {}
    for _, instance, rtype, body, length, _container in ppt_records(data, doc + 8, doc + 8 + _u32(data, doc + 4)):
        if rtype != _SLWT:
            continue
        entries: list[tuple[int, list[str]]] = []
        for _, _, sub, sbody, slen, _c in ppt_records(data, body, body + length):
            if sub == _SLIDE_PERSIST:
                entries.append((_u32(data, sbody), []))
            elif sub in (_TEXT_CHARS, _TEXT_BYTES) and entries:
                entries[-1][1].extend(_ppt_texts(data, sbody - 8, sbody + slen))
        lists[instance] = entries
    facts.slides = []
    for persist_id, texts in lists.get(0, []):
        offset = persist.get(persist_id)
        slide = SlideFacts(text=bag(*texts))
        if offset is not None and offset + 8 <= len(data) and _u16(data, offset + 2) == _SLIDE:
            slide.text.add("\n".join(_ppt_texts(data, offset + 8, offset + 8 + _u32(data, offset + 4))))
        facts.slides.append(slide)
    notes_by_slide = []
    for persist_id, _texts in lists.get(2, []):
        offset = persist.get(persist_id)
        if offset is not None and offset + 8 <= len(data) and _u16(data, offset + 2) == _NOTES:
            notes_by_slide.append(bag(*_ppt_texts(data, offset + 8, offset + 8 + _u32(data, offset + 4))))
    notes = TextBag()
    for note in notes_by_slide:
        notes += note
    for slide in facts.slides:
        facts.text += slide.text
    facts.text += notes
    facts.parts["speaker notes"] = notes
    facts.counts["slides"] = len(facts.slides)
    facts.metadata = ole_metadata(path)
    return facts


# ============================================================================ RTF =============

_RTF_TOKEN = re.compile(rb"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?|\\'([0-9a-fA-F]{2})|\\([^a-zA-Z])|([{}])"
                        rb"|([^\\{}\r\n]+)|[\r\n]+")
_RTF_SKIP = {b"fonttbl", b"colortbl", b"stylesheet", b"info", b"pict", b"themedata", b"colorschememapping",
             b"datastore", b"latentstyles", b"listtable", b"listoverridetable", b"rsidtbl", b"generator",
             b"xmlnstbl", b"mmathPr", b"pgdsctbl", b"filetbl", b"revtbl", b"protusertbl", b"fldinst",
             b"nonshppict", b"objdata", b"objclass", b"objname", b"bkmkstart", b"bkmkend", b"atnid",
             b"atnauthor", b"atntime", b"atnref", b"atndate", b"template", b"userprops", b"docvar",
             b"wgrffmtfilter", b"passwordhash", b"listpicture", b"sp", b"sn", b"sv", b"blipuid", b"ftnsep",
             b"ftnsepc", b"aftnsep", b"aftnsepc", b"falt", b"panose", b"fname", b"oldcprops", b"oldpprops",
             b"oldsprops", b"oldtprops", b"formfield", b"ffname", b"ffdeftext", b"xe", b"tc",
             b"listtext", b"pntext", b"pntxta", b"pntxtb"}
# \fcharset values and the code pages their 8-bit text is in
_RTF_CHARSETS = {0: None, 1: None, 2: None, 77: "mac_roman", 128: "cp932", 129: "cp949", 130: "johab",
                 134: "gbk", 136: "big5", 161: "cp1253", 162: "cp1254", 163: "cp1258", 177: "cp1255",
                 178: "cp1256", 186: "cp1257", 204: "cp1251", 222: "cp874", 238: "cp1250", 255: "cp437"}
_RTF_CHARS = {b"par": "\n", b"line": "\n", b"tab": "\t", b"cell": "\n", b"row": "\n", b"sect": "\n",
              b"page": "\n", b"emdash": "\u2014", b"endash": "\u2013", b"bullet": "\u2022", b"lquote": "\u2018",
              b"rquote": "\u2019", b"ldblquote": "\u201c", b"rdblquote": "\u201d", b"emspace": " ",
              b"enspace": " ", b"qmspace": " "}
_RTF_PARTS = {b"footnote": "footnotes and endnotes", b"annotation": "comments", b"header": "headers and footers",
              b"headerl": "headers and footers", b"headerr": "headers and footers", b"headerf": "headers and footers",
              b"footer": "headers and footers", b"footerl": "headers and footers", b"footerr": "headers and footers",
              b"footerf": "headers and footers"}


def read_rtf(path: Path) -> Facts:
    """Facts of a Rich Text Format document: its visible text and the objects it marks."""
    facts = Facts(Family.TEXT, "rtf")
    facts.notes.append("rtf: headings, lists, tables, tracked changes and headers are not counted in the source")
    data = Path(path).read_bytes()
    codepage = "cp1252"
    match = re.search(rb"\\ansicpg(\d+)", data[:4096])
    if match:
        codepage = f"cp{int(match.group(1))}"
        try:
            "".encode(codepage)
        except LookupError:
            codepage = "cp1252"
    counts: Counter = Counter()
    fields: Counter = Counter()
    body: list[str] = []
    parts: dict[str, list[str]] = {}
    fonts: dict[int, str] = {}              # font number -> code page of its 8-bit text
    # group state: skip, uc, part, field instruction collector, current code page …
    state: dict[str, Any] = {"skip": False, "uc": 1, "part": None, "inst": None, "first": True, "cp": codepage}
    stack: list[dict] = []
    pending = bytearray()
    skip_chars = 0

    def emit(text: str) -> None:
        if state["skip"]:
            return
        (parts.setdefault(state["part"], []) if state["part"] else body).append(text)

    def flush() -> None:
        if pending:
            emit(bytes(pending).decode(state["cp"], "replace"))
            pending.clear()

    for m in _RTF_TOKEN.finditer(data):
        word, arg, hexbyte, symbol, brace, plain = m.groups()
        if hexbyte is not None:
            if skip_chars:
                skip_chars -= 1
                continue
            if state["inst"] is not None:
                continue
            pending.append(int(hexbyte, 16))
            continue
        flush()
        if brace == b"{":
            stack.append(dict(state))
            state["first"] = True
            skip_chars = 0
            continue
        if brace == b"}":
            keyword = None
            if state["inst"] is not None and (not stack or stack[-1]["inst"] is None):
                keyword = _keyword(bytes(state["inst"]).decode("latin-1", "replace"))
                fields[keyword] += 1
            if stack:
                state = stack.pop()
            if keyword is not None:
                state["field"] = keyword          # the \fldrslt group that follows shows its result
            continue
        first, state["first"] = state["first"], False
        if symbol is not None:
            if symbol == b"*" and first:
                state["skip"] = True                   # an ignorable destination we do not know
                state["starred"] = True
            elif symbol == b"~":
                emit("\u00a0")
            elif symbol == b"_":
                emit("-")
            elif symbol in (b"\\", b"{", b"}"):
                emit(symbol.decode())
            continue
        if word is not None:
            if word == b"fonttbl":
                state["fonttbl"] = True
            elif word == b"f" and arg is not None:
                if state.get("fonttbl"):
                    state["defining"] = int(arg)
                else:
                    state["cp"] = fonts.get(int(arg)) or codepage
            elif word == b"fcharset" and arg is not None and state.get("fonttbl") and "defining" in state:
                charset = _RTF_CHARSETS.get(int(arg))
                if charset:
                    fonts[state["defining"]] = charset
            elif word == b"object":
                state["in_object"] = True
            if word == b"fldinst":
                state["inst"] = bytearray()
                state["skip"] = True
                continue
            if word == b"pict" and not state.get("nonshp") and not state.get("in_object"):
                counts["images"] += 1                  # (a picture in an object is its preview)
            if word == b"nonshppict":
                state["nonshp"] = True
            if word == b"object":
                counts["objects"] += 1
            if word == b"bkmkstart":
                counts["bookmarks"] += 1
            if word == b"footnote":
                counts["footnotes"] += 1
            if word == b"ftnalt":
                counts["footnotes"] -= 1
                counts["endnotes"] += 1
            if word == b"annotation":
                counts["comments"] += 1
            if word == b"fldrslt" and state.get("field") in _PAGE_FIELDS:
                state["skip"] = True                   # the page being printed, not text
            if word in _RTF_PARTS:
                state["part"] = _RTF_PARTS[word]
                state["skip"] = False
            elif word in _RTF_SKIP:
                state["skip"] = True
            elif state.get("starred") and word in (b"shppict", b"annotation"):
                state["skip"] = False                  # \*\shppict holds the picture Word shows
            if word == b"uc" and arg is not None:
                state["uc"] = int(arg)
            elif word == b"u" and arg is not None:
                value = int(arg)
                emit(chr(value + 65536 if value < 0 else value))
                skip_chars = state["uc"]
            elif word in _RTF_CHARS:
                emit(_RTF_CHARS[word])
            continue
        if plain is not None:
            if state["inst"] is not None:
                state["inst"] += plain
                continue
            if skip_chars:
                drop = min(skip_chars, len(plain))
                skip_chars -= drop
                plain = plain[drop:]
            if plain:
                emit(plain.decode(codepage, "replace"))
    flush()
    text = "".join(body)
    c = facts.counts
    c["paragraphs"] = sum(1 for p in text.split("\n") if p.strip())
    c["images"] = counts["images"]
    c["objects"] = counts["objects"]
    c["footnotes"], c["endnotes"] = max(0, counts["footnotes"]), counts["endnotes"]
    c["comments"] = counts["comments"]
    c["bookmarks"] = counts["bookmarks"]
    c["hyperlinks"] = fields.get("HYPERLINK", 0)
    c["fields"] = sum(n for k, n in fields.items() if k not in _FIELD_ELSEWHERE)
    facts.text = bag(text)
    for name, texts in parts.items():
        part_text = "".join(texts)
        facts.parts[name] = bag(part_text)
        if name != "headers and footers" or part_text.strip():
            facts.text.add(part_text)
    return facts


# ============================================================================ Word 2003 XML ====

_WORDML = "http://schemas.microsoft.com/office/word/2003/wordml"


def read_wordml(path: Path) -> Facts:
    """Facts of a Word 2003 XML document: text, paragraphs and tables."""
    facts = Facts(Family.TEXT, "wordml")
    facts.notes.append("Word 2003 XML: only text, paragraphs and tables are counted in the source")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    root = etree.parse(str(path), parser).getroot()
    w = f"{{{_WORDML}}}"
    texts = []
    for p in root.iter(w + "p"):
        texts.append("".join(t.text or "" for t in p.iter(w + "t")
                             if next(t.iterancestors(w + "p"), None) is p))
    facts.text = bag(*texts)
    facts.counts["paragraphs"] = sum(1 for t in texts if t.strip())
    facts.tables = []
    for tbl in root.iter(w + "tbl"):
        rows = tbl.findall(w + "tr")
        grid = tbl.find(f"{w}tblGrid")
        cols = (len(grid.findall(w + "gridCol")) if grid is not None
                else max((len(r.findall(w + "tc")) for r in rows), default=0))
        facts.tables.append(TableFacts(len(rows), cols, bag(" ".join(t.text or "" for t in tbl.iter(w + "t")))))
    facts.counts["tables"] = len(facts.tables)
    return facts
