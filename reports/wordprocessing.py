"""Word-processing documents as fidelity counts them: .docx/.docm/.dotx (OOXML) and .odt/.ott (ODF).

Both readers count the same features by the same rules, so that a difference is a change made by
the conversion, not by the counting:

- text: every paragraph of the body (tables and text boxes included), headers and footers,
  footnotes and endnotes, comments and SmartArt; never deleted text of tracked changes, field
  codes or index templates;
- paragraphs with text, headings per outline level, list paragraphs (headings excluded: heading
  numbering is outline numbering in ODF), tables with rows × columns and their text, pictures
  (inline and floating), OLE objects, charts, equations, text boxes, drawing shapes, footnotes,
  endnotes, comments, tracked changes, fields, bookmarks, hyperlinks, sections, page size and
  margins, the distinct texts of headers and footers, and metadata.
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from typing import overload
from pathlib import Path

from lxml import etree

from converters.formats import Family
from reports.facts import Facts, PageSetup, TableFacts
from reports.package import (ODF_NS, OdfPackage, Ooxml, PartTooBig, drop_fallbacks, odf_metadata,
                             ooxml_metadata)
from reports.text import TextBag, bag

__all__ = ["read_docx", "read_odt", "odf_length_mm", "PAGE_FIELDS"]

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_WP = "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing"
_A = "http://schemas.openxmlformats.org/drawingml/2006/main"
_PIC = "http://schemas.openxmlformats.org/drawingml/2006/picture"
_C = "http://schemas.openxmlformats.org/drawingml/2006/chart"
_DGM = "http://schemas.openxmlformats.org/drawingml/2006/diagram"
_M = "http://schemas.openxmlformats.org/officeDocument/2006/math"
_V = "urn:schemas-microsoft-com:vml"
_WPS = "http://schemas.microsoft.com/office/word/2010/wordprocessingShape"
_WPG = "http://schemas.microsoft.com/office/word/2010/wordprocessingGroup"


def _w(tag: str) -> str:
    return f"{{{_W}}}{tag}"


def _ns(prefix: str, tag: str) -> str:
    return f"{{{ODF_NS[prefix]}}}{tag}"


_TWIP_MM = 25.4 / 1440


# ============================================================================ OOXML (docx) ======

#: Fields whose shown value is the page being printed: left out of text on both sides.
PAGE_FIELDS = {"PAGE", "NUMPAGES", "SECTIONPAGES"}


class _Paragraphs:
    """Text of paragraphs collected while walking a tree: one list of strings per paragraph."""

    def __init__(self) -> None:
        self.fields: list[list] = []          # open complex fields: [instruction parts, keyword or None]
        self.texts: list[str] = []
        self.tables: list[list] = []          # text of the tables being walked (nested ones too)
        self.table_texts: list[str] = []      # text of every table, in document (pre-)order

    def finish(self, parts: list[str]) -> str:
        text = "".join(parts)
        self.texts.append(text)
        for table in self.tables:
            table.append(text)
        return text


def _docx_walk(el: etree._Element, paras: _Paragraphs, current: list[str] | None) -> None:
    """Collect paragraph text under `el` (Word's reading: no deleted text, no field codes)."""
    tag = el.tag
    if not isinstance(tag, str):
        return
    if tag == _w("p"):
        mine: list[str] = []
        for child in el:
            _docx_walk(child, paras, mine)
        paras.finish(mine)
        return
    if tag == _w("t"):
        if current is not None and el.text and not any(f[1] in PAGE_FIELDS for f in paras.fields):
            current.append(el.text)
        return
    if tag == _w("fldChar"):
        kind = el.get(_w("fldCharType"))
        if kind == "begin":
            paras.fields.append([[], None])
        elif kind == "separate" and paras.fields:
            paras.fields[-1][1] = _field_keyword("".join(paras.fields[-1][0]))
        elif kind == "end" and paras.fields:
            paras.fields.pop()
        return
    if tag == _w("instrText"):
        if paras.fields:
            paras.fields[-1][0].append(el.text or "")
        return
    if tag == _w("fldSimple") and _field_keyword(el.get(_w("instr")) or "") in PAGE_FIELDS:
        return
    if tag in (_w("tab"), _w("br"), _w("cr")):
        if current is not None:
            current.append(" ")
        return
    if tag == _w("noBreakHyphen"):
        if current is not None:
            current.append("-")
        return
    if tag in (_w("moveFrom"), _w("delText"), _w("del"), _w("rPr"), _w("pPr")):
        return
    if tag == _w("tbl"):
        table: list[str] = []
        paras.tables.append(table)
        index = len(paras.table_texts)
        paras.table_texts.append("")
        for child in el:
            _docx_walk(child, paras, current)
        paras.tables.remove(table)
        paras.table_texts[index] = "\n".join(table)
        return
    for child in el:
        _docx_walk(child, paras, current)


def _docx_text(root: etree._Element) -> tuple[list[str], TextBag]:
    paras = _docx_paragraphs(root)
    return paras.texts, bag(*paras.texts)


def _docx_paragraphs(root: etree._Element) -> _Paragraphs:
    paras = _Paragraphs()
    _docx_walk(root, paras, None)
    return paras


class _Styles:
    """Paragraph styles of a docx: outline level and list numbering, inheritance resolved."""

    _HEADING = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)

    def __init__(self, root: etree._Element | None) -> None:
        self.styles: dict[str, dict] = {}
        self.default: str | None = None
        for style in (root.iter(_w("style")) if root is not None else []):
            if style.get(_w("type")) != "paragraph":
                continue
            sid = style.get(_w("styleId")) or ""
            name_el, based_el = style.find(_w("name")), style.find(_w("basedOn"))
            ppr = style.find(_w("pPr"))
            outline = ppr.find(_w("outlineLvl")) if ppr is not None else None
            num = ppr.find(f"{_w('numPr')}/{_w('numId')}") if ppr is not None else None
            self.styles[sid] = {
                "name": (name_el.get(_w("val")) if name_el is not None else "") or "",
                "based": based_el.get(_w("val")) if based_el is not None else None,
                "outline": _int(outline.get(_w("val"))) if outline is not None else None,
                "num": num.get(_w("val")) if num is not None else None,
            }
            if style.get(_w("default")) in ("1", "true", "on"):
                self.default = sid

    def _chain(self, sid: str | None):
        seen = 0
        while sid and sid in self.styles and seen < 30:
            yield self.styles[sid]
            sid = self.styles[sid]["based"]
            seen += 1

    def heading_level(self, sid: str | None) -> int | None:
        for style in self._chain(sid):
            if style["outline"] is not None:
                return style["outline"] + 1 if 0 <= style["outline"] <= 8 else None
            match = self._HEADING.match(style["name"])
            if match:
                return int(match.group(1))
        return None

    def numbered(self, sid: str | None) -> bool:
        for style in self._chain(sid):
            if style["num"] is not None:
                return style["num"] != "0"
        return False


@overload
def _int(text: str | None, default: int) -> int: ...
@overload
def _int(text: str | None, default: None = None) -> int | None: ...


def _int(text: str | None, default: int | None = None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return default


def _docx_paragraph_kinds(body: etree._Element, styles: _Styles) -> tuple[Counter, int]:
    """Headings per level and list paragraphs (headings excluded) in the body."""
    headings: Counter = Counter()
    lists = 0
    for p in body.iter(_w("p")):
        ppr = p.find(_w("pPr"))
        sid = None
        level = None
        direct_num = None
        if ppr is not None:
            ps = ppr.find(_w("pStyle"))
            sid = ps.get(_w("val")) if ps is not None else None
            outline = ppr.find(_w("outlineLvl"))
            if outline is not None:
                value = _int(outline.get(_w("val")), 9)
                level = value + 1 if 0 <= value <= 8 else 0
            num = ppr.find(f"{_w('numPr')}/{_w('numId')}")
            direct_num = num.get(_w("val")) if num is not None else None
        sid = sid or styles.default
        if level is None:
            level = styles.heading_level(sid) or 0
        if level:
            headings[level] += 1
            continue
        if direct_num is not None:
            lists += direct_num != "0"
        elif styles.numbered(sid):
            lists += 1
    return headings, lists


def _docx_tables(body: etree._Element, texts: list[str]) -> list[TableFacts]:
    tables = []
    for index, tbl in enumerate(body.iter(_w("tbl"))):
        rows = [tr for tr in _children(tbl) if tr.tag == _w("tr")]
        grid = tbl.find(_w("tblGrid"))
        cols = len(grid.findall(_w("gridCol"))) if grid is not None else 0
        if not cols:
            cols = max((sum(_int(tc.find(f"{_w('tcPr')}/{_w('gridSpan')}").get(_w("val")), 1)
                            if tc.find(f"{_w('tcPr')}/{_w('gridSpan')}") is not None else 1
                            for tc in _children(tr) if tc.tag == _w("tc")) for tr in rows), default=0)
        tables.append(TableFacts(len(rows), cols, bag(texts[index] if index < len(texts) else "")))
    return tables


def _children(el: etree._Element):
    """Children, looking through content controls and custom XML wrappers (w:sdt, w:customXml)."""
    for child in el:
        if child.tag in (_w("sdt"), _w("customXml")):
            content = child.find(_w("sdtContent")) if child.tag == _w("sdt") else child
            if content is not None:
                yield from _children(content)
        else:
            yield child


def _docx_fields(root: etree._Element) -> Counter:
    """Fields by their instruction keyword (PAGE, DATE, HYPERLINK, TOC …)."""
    kinds: Counter = Counter()
    for el in root.iter(_w("fldSimple")):
        kinds[_field_keyword(el.get(_w("instr")) or "")] += 1
    stack: list[list[str] | None] = []      # None: the field's instruction was read
    for el in root.iter(_w("fldChar"), _w("instrText")):
        if el.tag == _w("instrText"):
            if stack and stack[-1] is not None:
                stack[-1].append(el.text or "")
            continue
        kind = el.get(_w("fldCharType"))
        if kind == "begin":
            stack.append([])
        elif kind == "separate" and stack:
            if stack[-1] is not None:
                kinds[_field_keyword("".join(stack[-1]))] += 1
                stack[-1] = None
        elif kind == "end" and stack:
            done = stack.pop()
            if done is not None:
                kinds[_field_keyword("".join(done))] += 1
    return kinds


def _field_keyword(instr: str) -> str:
    words = instr.strip().split()
    return words[0].upper().lstrip("\\") if words else "?"


#: Field kinds not compared as "fields": they become other things in ODF (links, indexes, plain text).
_FIELD_ELSEWHERE = {"HYPERLINK", "TOC", "PAGEREF", "XE", "TC", "INDEX", "RD", "?", "SHAPE", "EMBED",
                    "BIBLIOGRAPHY", "INCLUDEPICTURE", "TA", "TOA"}


def _mm(twips: str | None) -> float | None:
    value = _int(twips)
    return abs(value) * _TWIP_MM if value is not None else None


def _docx_page(body: etree._Element) -> tuple[list[PageSetup], int, list[etree._Element]]:
    """Each section's page setup (sections without a page size are left out), the sections, their sectPr."""
    # a sectPr inside a tracked change (sectPrChange, pPrChange) is the setup before the change
    sects = [el for el in body.iter(_w("sectPr"))
             if not any(a.tag in (_w("sectPrChange"), _w("pPrChange")) for a in el.iterancestors())]
    pages = []
    for sect in sects:
        size, margin = sect.find(_w("pgSz")), sect.find(_w("pgMar"))
        width = _mm(size.get(_w("w"))) if size is not None else None
        height = _mm(size.get(_w("h"))) if size is not None else None
        if width and height:
            margins = None
            if margin is not None:
                measured = [_mm(margin.get(_w(k))) for k in ("top", "bottom", "left", "right")]
                values = [v for v in measured if v is not None]
                if len(values) == 4:
                    # the gutter widens the inner margin; ODF (LibreOffice) counts it in the margin too
                    rtl = sect.find(_w("rtlGutter"))
                    right_gutter = rtl is not None and rtl.get(_w("val"), "1") not in ("0", "false", "off")
                    values[3 if right_gutter else 2] += _mm(margin.get(_w("gutter"))) or 0.0
                    top, bottom, left, right = (round(v, 1) for v in values)
                    margins = (top, bottom, left, right)
            pages.append(PageSetup(round(width, 1), round(height, 1), margins))
    return pages, len(sects), sects


def _docx_header_texts(pkg: Ooxml, main: str, sects: list, even_odd: bool) -> dict[str, set[str]]:
    """Distinct non-empty texts of the headers and of the footers Word shows."""
    rels = pkg.rel_map(main)
    found: dict[str, set[str]] = {"headers": set(), "footers": set()}
    for sect in sects:
        title_pg = sect.find(_w("titlePg"))
        first_on = title_pg is not None and title_pg.get(_w("val"), "1") not in ("0", "false", "off")
        for kind, ref_tag in (("headers", "headerReference"), ("footers", "footerReference")):
            for ref in sect.findall(_w(ref_tag)):
                which = ref.get(_w("type")) or "default"
                if (which == "first" and not first_on) or (which == "even" and not even_odd):
                    continue
                rel = rels.get(ref.get(f"{{{_R}}}id") or "")
                if rel is None or rel.external or not pkg.has(rel.target):
                    continue
                try:
                    part = drop_fallbacks(pkg.xml(rel.target))
                except (etree.XMLSyntaxError, PartTooBig):
                    continue
                texts, _ = _docx_text(part)
                text = " ".join(t for t in texts if t.strip()).strip()
                if text:
                    found[kind].add(" ".join(text.split()))
    return found


def read_docx(path: Path) -> Facts:
    """Facts of a Word OOXML document (docx, docm, dotx, dotm)."""
    facts = Facts(Family.TEXT, "ooxml-word")
    with zipfile.ZipFile(path) as zf:
        pkg = Ooxml(zf)
        main = pkg.main_part() or pkg.find("word/document.xml")
        if main is None:
            raise ValueError("no main document part")
        root = drop_fallbacks(pkg.xml(main))
        if etree.QName(root).namespace != _W:
            facts.notes.append("Strict OOXML: only text is measured")
            texts, facts.text = _docx_text_any(root)
            return facts
        body = root.find(_w("body"))
        if body is None:
            raise ValueError("document has no body")
        styles_part = next(iter(pkg.related(main, "styles")), None)
        styles = _Styles(pkg.xml(styles_part) if styles_part else None)
        settings_part = next(iter(pkg.related(main, "settings")), None)
        even_odd = False
        if settings_part:
            settings = pkg.xml(settings_part)
            flag = settings.find(_w("evenAndOddHeaders"))
            even_odd = flag is not None and flag.get(_w("val"), "1") not in ("0", "false", "off")

        paras = _docx_paragraphs(body)
        texts = paras.texts
        facts.text += bag(*texts)
        c = facts.counts
        c["paragraphs"] = sum(1 for t in texts if t.strip())
        headings, c["lists"] = _docx_paragraph_kinds(body, styles)
        facts.headings = dict(headings)
        c["headings"] = sum(headings.values())
        facts.tables = _docx_tables(body, paras.table_texts)
        c["tables"] = len(facts.tables)

        inline = floating = 0
        for pic in body.iter(f"{{{_PIC}}}pic"):
            anchor = next(pic.iterancestors(f"{{{_WP}}}inline", f"{{{_WP}}}anchor"), None)
            if anchor is not None and anchor.tag == f"{{{_WP}}}anchor":
                floating += 1
            else:
                inline += 1
        for image in body.iter(f"{{{_V}}}imagedata"):
            if next(image.iterancestors(_w("object")), None) is not None:
                continue                                  # the preview picture of an OLE object
            shape = image.getparent()
            if "position:absolute" in (shape.get("style") or "").replace(" ", ""):
                floating += 1
            else:
                inline += 1
        c["images"], c["images_inline"], c["images_floating"] = inline + floating, inline, floating
        c["objects"] = sum(1 for el in body.iter(_w("object")) if el.find(_w("control")) is None)
        c["charts"] = sum(1 for _ in body.iter(f"{{{_C}}}chart"))
        c["equations"] = sum(1 for m in body.iter(f"{{{_M}}}oMath")
                             if next(m.iterancestors(f"{{{_M}}}oMath"), None) is None)
        diagrams = list(body.iter(f"{{{_DGM}}}relIds"))
        c["smartart"] = len(diagrams)
        c["text_boxes"] = sum(1 for _ in body.iter(_w("txbxContent")))
        vml_shapes = sum(1 for el in body.iter(*(f"{{{_V}}}{t}" for t in (
            "shape", "rect", "oval", "line", "roundrect", "polyline", "arc", "curve")))
            if el.find(f"{{{_V}}}imagedata") is None and el.find(f"{{{_V}}}textbox") is None
            and next(el.iterancestors(_w("object")), None) is None)
        c["shapes"] = vml_shapes + sum(1 for el in body.iter(f"{{{_WPS}}}wsp")
                                       if el.find(f"{{{_WPS}}}txbx") is None)
        c["footnotes"] = sum(1 for _ in body.iter(_w("footnoteReference")))
        c["endnotes"] = sum(1 for _ in body.iter(_w("endnoteReference")))
        c["changes"] = sum(1 for el in body.iter(_w("ins"), _w("del"), _w("moveFrom"), _w("moveTo"))
                           if el.getparent().tag not in (_w("rPr"), _w("trPr"), _w("pPr")))
        c["format_changes"] = sum(1 for _ in body.iter(_w("rPrChange"), _w("pPrChange")))
        c["bookmarks"] = sum(1 for el in body.iter(_w("bookmarkStart")) if el.get(_w("name")) != "_GoBack")
        fields = _docx_fields(body)
        c["hyperlinks"] = sum(1 for _ in body.iter(_w("hyperlink"))) + fields.get("HYPERLINK", 0)
        pages, c["sections"], sects = _docx_page(body)
        facts.pages = pages or None
        facts.page = pages[0] if pages else None

        # headers and footers: the distinct texts Word shows; their fields count as fields
        shown = _docx_header_texts(pkg, main, sects, even_odd)
        c["headers"], c["footers"] = len(shown["headers"]), len(shown["footers"])
        header_bag = bag(*shown["headers"], *shown["footers"])
        facts.parts["headers and footers"] = header_bag
        facts.text += header_bag
        for kind in ("header", "footer"):
            for part in pkg.related(main, kind):
                try:
                    fields.update(_docx_fields(pkg.xml(part)))
                except (etree.XMLSyntaxError, PartTooBig):
                    pass
        # Plain-text, list and date content controls become input fields and drop-downs in ODF.
        controls = sum(1 for pr in body.iter(_w("sdtPr")) if any(
            pr.find(_w(kind)) is not None for kind in ("text", "dropDownList", "comboBox", "date")))
        c["fields"] = sum(n for k, n in fields.items() if k not in _FIELD_ELSEWHERE) + controls

        # notes, comments, SmartArt: parts of their own in OOXML
        notes = TextBag()
        for kind, tag in (("footnotes", "footnote"), ("endnotes", "endnote")):
            for part in pkg.related(main, kind):
                root_notes = drop_fallbacks(pkg.xml(part))
                for note in root_notes.iter(_w(tag)):
                    if note.get(_w("type")) in (None, "normal"):
                        notes += _docx_text(note)[1]
        facts.parts["footnotes and endnotes"] = notes
        facts.text += notes
        comments = TextBag()
        c["comments"] = 0
        for part in pkg.related(main, "comments"):
            croot = drop_fallbacks(pkg.xml(part))
            for comment in croot.iter(_w("comment")):
                c["comments"] += 1
                comments += _docx_text(comment)[1]
        facts.parts["comments"] = comments
        facts.text += comments
        boxes = TextBag()
        for box in body.iter(_w("txbxContent")):
            if next(box.iterancestors(_w("txbxContent")), None) is None:
                boxes += _docx_text(box)[1]
        facts.parts["text boxes"] = boxes
        smartart = TextBag()
        rels = pkg.rel_map(main)
        for rel_ids in diagrams:
            rel = rels.get(rel_ids.get(f"{{{_R}}}dm") or "")
            if rel is not None and not rel.external and pkg.has(rel.target):
                smartart.add(" ".join(t.text or "" for t in pkg.xml(rel.target).iter(f"{{{_A}}}t")))
        facts.parts["SmartArt"] = smartart
        facts.text += smartart
        facts.metadata = ooxml_metadata(pkg)
    return facts


def _docx_text_any(root: etree._Element) -> tuple[list[str], TextBag]:
    """Text of a document in a namespace we do not count (Strict OOXML): every `t` element."""
    texts = [el.text or "" for el in root.iter() if isinstance(el.tag, str) and etree.QName(el).localname == "t"]
    return texts, bag(" ".join(texts))


# ============================================================================ ODF (odt) ========

_TEXT_P, _TEXT_H = _ns("text", "p"), _ns("text", "h")
_SKIP_ODF = {_ns("text", "tracked-changes"), _ns("text", "note-citation"), _ns("svg", "title"),
             _ns("svg", "desc"), _ns("office", "forms"), _ns("dc", "creator"), _ns("dc", "date"),
             _ns("meta", "date-string"), _ns("office", "annotation-end"), _ns("text", "sequence-decls"),
             _ns("loext", "sender-initials"), _ns("meta", "creator-initials"),
             _ns("text", "page-number"), _ns("text", "page-count"),
             _ns("text", "variable-decls"), _ns("text", "user-field-decls"), _ns("text", "dde-connection-decls"),
             _ns("office", "event-listeners")}
_SKIP_SUFFIX = "-source"           # text:table-of-content-source and other index templates
_SPACE_ODF = {_ns("text", "tab"), _ns("text", "line-break")}

#: ODF elements that are fields (the counterpart of Word's fields, links and indexes excepted).
_ODF_FIELDS = {_ns("text", t) for t in (
    "page-number", "page-count", "date", "time", "author-name", "author-initials", "file-name",
    "template-name", "sequence", "sequence-ref", "reference-ref", "bookmark-ref", "note-ref",
    "user-field-get", "user-field-input", "user-defined", "variable-get", "variable-set", "variable-input",
    "expression", "text-input", "drop-down", "database-display", "database-name", "database-next",
    "database-row-number", "database-row-select", "chapter", "title", "subject", "description",
    "keywords", "creation-date", "creation-time", "creator", "initial-creator", "modification-date",
    "modification-time", "printed-by", "print-date", "print-time", "editing-cycles", "editing-duration",
    "word-count", "character-count", "paragraph-count", "page-variable-get", "page-variable-set",
    "placeholder", "conditional-text", "hidden-text", "hidden-paragraph", "execute-macro",
    "table-formula", "sender-firstname", "sender-lastname", "sender-company", "sender-street",
    "sender-city", "sender-email", "file-name", "sheet-name", "table-count", "image-count",
    "object-count")} | {_ns("field", "fieldmark-start"), _ns("field", "fieldmark")}
_ODF_SHAPES = {_ns("draw", t) for t in ("custom-shape", "rect", "ellipse", "line", "polyline", "polygon",
                                        "path", "connector", "circle", "measure", "regular-polygon")}


class _OdfWalk:
    """Paragraph text of an ODF tree, with what each paragraph sits in."""

    def __init__(self) -> None:
        self.body: list[str] = []          # paragraphs outside notes and annotations
        self.all: list[str] = []
        self.notes: list[str] = []
        self.comments: list[str] = []
        self.boxes: list[str] = []
        self.tables: list[list[str]] = []
        self.table_texts: list[str] = []   # every table's text, in document (pre-)order

    def walk(self, el: etree._Element, current: list[str] | None, where: str) -> None:
        tag = el.tag
        if not isinstance(tag, str) or tag in _SKIP_ODF or tag.endswith(_SKIP_SUFFIX):
            return
        if tag in (_TEXT_P, _TEXT_H):
            mine: list[str] = []
            if el.text:
                mine.append(el.text)
            for child in el:
                self.walk(child, mine, where)
                if child.tail:
                    mine.append(child.tail)
            self._finish("".join(mine), where)
            return
        if tag == _ns("text", "note"):
            where = "note"
        elif tag == _ns("office", "annotation"):
            where = "comment"
        elif tag == _ns("draw", "text-box") and where == "body":
            where = "box"
        if current is not None:
            if tag == _ns("text", "s"):
                current.append(" " * (_int(el.get(_ns("text", "c")), 1) or 1))
            elif tag in _SPACE_ODF:
                current.append(" ")
            if el.text and tag not in (_ns("text", "note"), _ns("office", "annotation")):
                current.append(el.text)
        table: list | None = None
        if tag == _ns("table", "table") and where in ("body", "box"):
            table = []
            self.tables.append(table)
            index = len(self.table_texts)
            self.table_texts.append("")
        for child in el:
            self.walk(child, current, where)
            if child.tail and current is not None:
                current.append(child.tail)
        if table is not None:
            self.tables.remove(table)
            self.table_texts[index] = "\n".join(table)

    def _finish(self, text: str, where: str) -> None:
        self.all.append(text)
        if where == "note":
            self.notes.append(text)
        elif where == "comment":
            self.comments.append(text)
        else:
            self.body.append(text)
            if where == "box":
                self.boxes.append(text)
        for table in self.tables:
            table.append(text)


def _odf_own_rows(table: etree._Element) -> int:
    rows = 0
    for child in table:
        if child.tag == _ns("table", "table-row"):
            rows += _int(child.get(_ns("table", "number-rows-repeated")), 1) or 1
        elif child.tag in (_ns("table", "table-header-rows"), _ns("table", "table-rows"),
                           _ns("table", "table-row-group")):
            rows += _odf_own_rows(child)
    return rows


def _odf_own_cols(table: etree._Element) -> int:
    cols = 0
    for child in table:
        if child.tag == _ns("table", "table-column"):
            cols += _int(child.get(_ns("table", "number-columns-repeated")), 1) or 1
        elif child.tag in (_ns("table", "table-header-columns"), _ns("table", "table-columns"),
                           _ns("table", "table-column-group")):
            cols += _odf_own_cols(child)
    return cols


def _drop_textbox_twins(root: etree._Element | None) -> int:
    """Remove the shape LibreOffice writes beside each Word text box; returns how many.

    LibreOffice 7.4 stores a DrawingML text box as a text frame (draw:frame/draw:text-box) and,
    next to it, a custom shape holding a copy of the same text: one object for a person, so it
    is counted once.
    """
    if root is None:
        return 0
    twins = 0
    for shape in list(root.iter(_ns("draw", "custom-shape"))):
        frame = shape.getprevious()
        if frame is None or frame.tag != _ns("draw", "frame") or frame.find(_ns("draw", "text-box")) is None:
            continue
        box_text = " ".join("".join(frame.find(_ns("draw", "text-box")).itertext()).split())
        shape_text = " ".join("".join(t for p in shape.iter(_TEXT_P, _TEXT_H) for t in p.itertext()).split())
        if box_text == shape_text:
            _remove_keep_tail(shape)
            twins += 1
    return twins


def _remove_keep_tail(el: etree._Element) -> None:
    """Remove an element from its tree, keeping the text that follows it."""
    parent = el.getparent()
    if el.tail:
        previous = el.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)


def odf_length_mm(value: str | None) -> float | None:
    """An ODF length ("21.001cm", "8.5in", "595pt") in millimetres."""
    match = re.match(r"^\s*(-?[\d.]+)\s*(cm|mm|in|pt|pc|px)?\s*$", value or "")
    if not match:
        return None
    number = float(match.group(1))
    factor = {"cm": 10.0, "mm": 1.0, "in": 25.4, "pt": 25.4 / 72, "pc": 25.4 / 6, "px": 25.4 / 96,
              None: 1.0}[match.group(2)]
    return abs(number * factor)


def _odt_page(content: etree._Element, styles: etree._Element | None,
              body: etree._Element) -> tuple[list[PageSetup], int]:
    """Each section's page setup (one per master page the body uses, in order), and the sections.

    A section is a switch of master page or a text:section. The body starts on the default master
    page ("Standard") unless its first paragraph or table names another one.
    """
    auto = {}
    for root in (content, styles):
        if root is None:
            continue
        for style in root.iter(_ns("style", "style")):
            master = style.get(_ns("style", "master-page-name"))
            if master is not None:
                auto[style.get(_ns("style", "name"))] = master
    masters_used = []
    first = True
    for el in body.iter(_TEXT_P, _TEXT_H, _ns("table", "table")):
        master = auto.get(el.get(_ns("text", "style-name")) or el.get(_ns("table", "style-name")))
        if first and not master:
            masters_used.append("")                  # the default master page
        first = False
        if master:
            masters_used.append(master)
    sections = max(1, len(masters_used)) + sum(1 for _ in body.iter(_ns("text", "section")))
    if styles is None:
        return [], sections
    layouts = {pl.get(_ns("style", "name")): pl for pl in styles.iter(_ns("style", "page-layout"))}
    masters = {mp.get(_ns("style", "name")): mp for mp in styles.iter(_ns("style", "master-page"))}
    default = masters["Standard"] if "Standard" in masters else next(iter(masters.values()), None)
    pages = []
    for name in masters_used or [""]:
        master = masters.get(name) if name else default
        page = _odt_master_page(master if master is not None else default, layouts)
        if page is not None:
            pages.append(page)
    return pages, sections


def _odt_master_page(master: etree._Element | None, layouts: dict) -> PageSetup | None:
    if master is None:
        return None
    layout = layouts.get(master.get(_ns("style", "page-layout-name")))
    if layout is None:
        return None
    props = layout.find(_ns("style", "page-layout-properties"))
    if props is None:
        return None
    width = odf_length_mm(props.get(_ns("fo", "page-width")))
    height = odf_length_mm(props.get(_ns("fo", "page-height")))
    if not width or not height:
        return None
    margin = props.get(_ns("fo", "margin"))
    top, bottom, left, right = (odf_length_mm(props.get(_ns("fo", f"margin-{k}")) or margin) or 0.0
                                for k in ("top", "bottom", "left", "right"))
    # Word measures top and bottom margins to the text, ODF to the header and footer: add their height
    for kind, index in (("header", 0), ("footer", 1)):
        shown = master.find(_ns("style", kind))
        if shown is None or shown.get(_ns("style", "display")) == "false":
            continue
        hf = layout.find(f"{_ns('style', kind + '-style')}/{_ns('style', 'header-footer-properties')}")
        if hf is None:
            continue
        extra = odf_length_mm(hf.get(_ns("fo", "min-height")))
        if extra is None:
            spacing = hf.get(_ns("fo", "margin-bottom" if kind == "header" else "margin-top"))
            extra = (odf_length_mm(hf.get(_ns("svg", "height"))) or 0.0) + (odf_length_mm(spacing) or 0.0)
        if index == 0:
            top += extra
        else:
            bottom += extra
    return PageSetup(round(width, 1), round(height, 1), (round(top, 1), round(bottom, 1), round(left, 1),
                                                          round(right, 1)))


def _odf_header_texts(styles: etree._Element | None) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"headers": set(), "footers": set()}
    if styles is None:
        return found
    for master in styles.iter(_ns("style", "master-page")):
        for child in master:
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname
            kind = "headers" if local.startswith("header") else "footers" if local.startswith("footer") else None
            if kind is None or local.endswith("-style") or child.get(_ns("style", "display")) == "false":
                continue
            walk = _OdfWalk()
            walk.walk(child, None, "body")
            text = " ".join(t for t in walk.all if t.strip()).strip()
            if text:
                found[kind].add(" ".join(text.split()))
    return found


def read_odt(path: Path) -> Facts:
    """Facts of an OpenDocument text (odt, ott)."""
    facts = Facts(Family.TEXT, "odf-text")
    with zipfile.ZipFile(path) as zf:
        pkg = OdfPackage(zf)
        content = pkg.xml("content.xml")
        if content is None:
            raise ValueError("no content.xml")
        styles = pkg.xml("styles.xml")
        body = content.find(f"{_ns('office', 'body')}/{_ns('office', 'text')}")
        if body is None:
            raise ValueError("not a text document (no office:text)")
        c = facts.counts
        regions = body.find(_ns("text", "tracked-changes"))
        kinds: Counter = Counter()
        for region in (regions if regions is not None else []):
            for child in region:
                if isinstance(child.tag, str):
                    kinds[etree.QName(child).localname] += 1
        c["changes"] = kinds["insertion"] + kinds["deletion"]
        c["format_changes"] = kinds["format-change"]

        _drop_textbox_twins(body)
        _drop_textbox_twins(styles)
        walk = _OdfWalk()
        walk.walk(body, None, "body")
        facts.text = bag(*walk.all)
        # Word keeps notes and comments in parts of their own: count them, then leave them (and the
        # deleted text of tracked changes) out of what the body's counts see.
        notes = Counter(n.get(_ns("text", "note-class"), "footnote") for n in body.iter(_ns("text", "note")))
        c["footnotes"], c["endnotes"] = notes["footnote"], notes["endnote"]
        c["comments"] = sum(1 for _ in body.iter(_ns("office", "annotation")))
        for el in list(body.iter(_ns("text", "note"), _ns("office", "annotation"), _ns("text", "tracked-changes"))):
            if el.getparent() is not None:
                _remove_keep_tail(el)
        c["paragraphs"] = sum(1 for t in walk.body if t.strip())
        headings: Counter = Counter()
        for h in body.iter(_TEXT_H):
            headings[_int(h.get(_ns("text", "outline-level")), 1) or 1] += 1
        facts.headings = dict(headings)
        c["headings"] = sum(headings.values())
        c["lists"] = sum(1 for p in body.iter(_TEXT_P)
                         if p.getparent().tag in (_ns("text", "list-item"), _ns("text", "list-header")))
        facts.tables = []
        for index, tbl in enumerate(body.iter(_ns("table", "table"))):
            text = walk.table_texts[index] if index < len(walk.table_texts) else ""
            facts.tables.append(TableFacts(_odf_own_rows(tbl), _odf_own_cols(tbl), bag(text)))
        c["tables"] = len(facts.tables)

        inline = floating = objects = charts = equations = 0
        for frame in body.iter(_ns("draw", "frame")):
            obj = frame.find(_ns("draw", "object"))
            if obj is None:
                obj = frame.find(_ns("draw", "object-ole"))
            if obj is not None:
                kind = (pkg.object_type(obj.get(_ns("xlink", "href")) or "") if obj.tag == _ns("draw", "object")
                        else "ole")
                if kind == "chart":
                    charts += 1
                elif kind == "formula":
                    equations += 1
                else:
                    objects += 1
                continue
            if frame.find(_ns("draw", "image")) is not None:
                if frame.get(_ns("text", "anchor-type")) == "as-char":
                    inline += 1
                else:
                    floating += 1
        c["images"], c["images_inline"], c["images_floating"] = inline + floating, inline, floating
        c["objects"], c["charts"], c["equations"] = objects, charts, equations
        c["text_boxes"] = sum(1 for _ in body.iter(_ns("draw", "text-box")))
        c["shapes"] = sum(1 for _ in body.iter(*_ODF_SHAPES))
        c["bookmarks"] = sum(1 for el in body.iter(_ns("text", "bookmark"), _ns("text", "bookmark-start"))
                             if el.get(_ns("text", "name")) != "_GoBack")
        c["hyperlinks"] = sum(1 for _ in body.iter(_ns("text", "a")))
        pages, c["sections"] = _odt_page(content, styles, body)
        facts.pages = pages or None
        facts.page = pages[0] if pages else None
        shown = _odf_header_texts(styles)
        c["headers"], c["footers"] = len(shown["headers"]), len(shown["footers"])
        header_bag = bag(*shown["headers"], *shown["footers"])
        facts.text += header_bag
        c["fields"] = sum(1 for _ in body.iter(*_ODF_FIELDS))
        if styles is not None:
            for master in styles.iter(_ns("style", "master-page")):
                c["fields"] += sum(1 for _ in master.iter(*_ODF_FIELDS))
        facts.parts["footnotes and endnotes"] = bag(*walk.notes)
        facts.parts["comments"] = bag(*walk.comments)
        facts.parts["text boxes"] = bag(*walk.boxes)
        facts.parts["headers and footers"] = header_bag
        facts.metadata = odf_metadata(pkg)
    return facts
