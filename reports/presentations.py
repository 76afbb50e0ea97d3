"""Presentations as fidelity counts them: .pptx/.pptm/.potx (OOXML) and .odp/.otp (ODF).

Per slide, in show order: its text (shapes, tables, groups, SmartArt), whether it is hidden, its
shapes by kind (picture, table, chart, media, SmartArt, OLE object, group, connector, shape), its
speaker notes, whether it has a transition, and how many animation effects it has. Layouts and
masters are left out on both sides: a slide's placeholders without text are not counted, because
PowerPoint does not show them in a slide show either.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from lxml import etree

from converters.formats import Family
from reports.facts import Facts, SlideFacts
from reports.package import ODF_NS, OdfPackage, Ooxml, PartTooBig, drop_fallbacks, odf_metadata, ooxml_metadata
from reports.text import TextBag

__all__ = ["read_pptx", "read_odp", "SHAPE_KINDS", "SHAPE_COUNTS"]

#: Kinds of shapes counted per slide, in the order reports list them.
SHAPE_KINDS = ("picture", "table", "chart", "media", "smartart", "object", "group", "connector", "shape")
#: The name of each kind's total in `Facts.counts`.
SHAPE_COUNTS = {"picture": "pictures", "table": "tables", "chart": "charts", "media": "media",
                "smartart": "smartart", "object": "objects", "group": "groups", "connector": "connectors",
                "shape": "shapes"}

_P = "http://schemas.openxmlformats.org/presentationml/2006/main"
_A = "http://schemas.openxmlformats.org/drawingml/2006/main"
_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_GRAPHIC_KIND = {
    "http://schemas.openxmlformats.org/drawingml/2006/table": "table",
    "http://schemas.openxmlformats.org/drawingml/2006/chart": "chart",
    "http://schemas.openxmlformats.org/drawingml/2006/diagram": "smartart",
    "http://schemas.openxmlformats.org/presentationml/2006/ole": "object",
    "http://schemas.microsoft.com/office/drawing/2014/chartex": "chart",
}
_ANIMATIONS = {f"{{{_P}}}{t}" for t in ("anim", "animClr", "animEffect", "animMotion", "animRot", "animScale",
                                        "set", "cmd")}


def _p(tag: str) -> str:
    return f"{{{_P}}}{tag}"


def _paragraph_texts(el: etree._Element) -> list[str]:
    """Text of each paragraph; line breaks kept, date fields left out (they show the day of viewing)."""
    texts = []
    for p in el.iter(f"{{{_A}}}p"):
        parts = []
        for child in p:
            tag = child.tag
            if tag == f"{{{_A}}}r" or (tag == f"{{{_A}}}fld" and not (child.get("type") or "").startswith("datetime")):
                parts.append("".join(t.text or "" for t in child.iter(f"{{{_A}}}t")))
            elif tag == f"{{{_A}}}br":
                parts.append("\n")
        texts.append("".join(parts))
    return texts


def _pptx_shapes(tree: etree._Element, shapes: dict[str, int], pkg: Ooxml, part: str, text: TextBag) -> None:
    rels = None
    for el in tree:
        tag = el.tag
        if tag == _p("sp"):
            texts = [t for t in _paragraph_texts(el) if t.strip()]
            is_placeholder = el.find(f"{_p('nvSpPr')}/{_p('nvPr')}/{_p('ph')}") is not None
            if texts or not is_placeholder:
                shapes["shape"] = shapes.get("shape", 0) + 1
            text.add("\n".join(texts))
        elif tag == _p("pic"):
            nvpr = el.find(f"{_p('nvPicPr')}/{_p('nvPr')}")
            media = nvpr is not None and any(
                etree.QName(child).localname in ("videoFile", "audioFile", "quickTimeFile", "wavAudioFile")
                for child in nvpr.iter() if isinstance(child.tag, str))
            kind = "media" if media else "picture"
            shapes[kind] = shapes.get(kind, 0) + 1
        elif tag == _p("graphicFrame"):
            data = el.find(f"{{{_A}}}graphic/{{{_A}}}graphicData")
            uri = data.get("uri") if data is not None else ""
            kind = _GRAPHIC_KIND.get(uri, "object")
            shapes[kind] = shapes.get(kind, 0) + 1
            if kind == "table":
                text.add("\n".join(_paragraph_texts(el)))
            elif kind == "smartart" and data is not None:
                rels = rels if rels is not None else pkg.rel_map(part)
                ids = next((c for c in data if etree.QName(c).localname == "relIds"), None)
                rel = rels.get(next((v for k, v in (ids.attrib.items() if ids is not None else [])
                                     if k.endswith("}dm")), ""))
                if rel is not None and not rel.external and pkg.has(rel.target):
                    try:
                        text.add("\n".join(t.text or "" for t in pkg.xml(rel.target).iter(f"{{{_A}}}t")))
                    except (etree.XMLSyntaxError, PartTooBig):
                        pass
        elif tag == _p("grpSp"):
            shapes["group"] = shapes.get("group", 0) + 1
            _pptx_shapes(el, shapes, pkg, part, text)
        elif tag == _p("cxnSp"):
            shapes["connector"] = shapes.get("connector", 0) + 1
        elif isinstance(tag, str) and etree.QName(tag).localname == "AlternateContent":
            _pptx_shapes(el.find("{*}Choice") if el.find("{*}Choice") is not None else el, shapes, pkg, part, text)


def _pptx_notes(pkg: Ooxml, slide_part: str) -> TextBag:
    notes = TextBag()
    for part in pkg.related(slide_part, "notesSlide"):
        try:
            root = drop_fallbacks(pkg.xml(part))
        except (etree.XMLSyntaxError, PartTooBig):
            continue
        for sp in root.iter(_p("sp")):
            ph = sp.find(f"{_p('nvSpPr')}/{_p('nvPr')}/{_p('ph')}")
            if ph is not None and ph.get("type") in ("sldNum", "sldImg", "hdr", "ftr", "dt"):
                continue
            notes.add("\n".join(_paragraph_texts(sp)))
    return notes


def read_pptx(path: Path) -> Facts:
    """Facts of a PowerPoint OOXML presentation (pptx, pptm, ppsx, potx …)."""
    facts = Facts(Family.PRESENTATION, "ooxml-slides")
    facts.slides = []
    with zipfile.ZipFile(path) as zf:
        pkg = Ooxml(zf)
        main = pkg.main_part() or pkg.find("ppt/presentation.xml")
        if main is None:
            raise ValueError("no presentation part")
        presentation = pkg.xml(main)
        rels = pkg.rel_map(main)
        order = presentation.find(_p("sldIdLst"))
        for sld_id in (order if order is not None else []):
            rel = rels.get(sld_id.get(f"{{{_R}}}id") or "")
            if rel is None or rel.external or not pkg.has(rel.target):
                continue
            root = drop_fallbacks(pkg.xml(rel.target))
            slide = SlideFacts(text=TextBag(), hidden=root.get("show") in ("0", "false"))
            tree = root.find(f"{_p('cSld')}/{_p('spTree')}")
            if tree is not None:
                _pptx_shapes(tree, slide.shapes, pkg, rel.target, slide.text)
            slide.notes = _pptx_notes(pkg, rel.target)
            slide.comments = _pptx_comments(pkg, rel.target)
            slide.transition = root.find(f".//{_p('transition')}") is not None
            timing = root.find(_p("timing"))
            if timing is not None:
                slide.animations = sum(1 for el in timing.iter(_p("cTn"))
                                       if el.get("presetClass") in ("entr", "exit", "emph", "path", "verb",
                                                                    "mediacall"))
            facts.slides.append(slide)
        facts.metadata = ooxml_metadata(pkg)
    _totals(facts)
    return facts


def _pptx_comments(pkg: Ooxml, slide: str) -> list[str]:
    """Text of the comments on a slide: classic ones (ppt/comments/comment*.xml, <p:cm><p:text>) and
    modern ones (ppt/comments/modernComment_*.xml, a text body per comment and per reply).

    Both relationship types end in "comments" (the modern one is Microsoft's 2018 extension).
    """
    texts: list[str] = []
    for part in pkg.related(slide, "comments"):
        try:
            root = pkg.xml(part)
        except (etree.XMLSyntaxError, PartTooBig):
            continue
        for el in root.iter("{*}cm", "{*}reply"):          # document order: a comment, then its replies
            body = next((c for c in el if _local(c) in ("text", "txBody")), None)
            if body is None:
                texts.append("")
            elif _local(body) == "text":
                texts.append(body.text or "")
            else:
                texts.append("\n".join("".join(t.text or "" for t in p.iter(f"{{{_A}}}t"))
                                       for p in body.iter(f"{{{_A}}}p")))
    return texts


def _local(el: etree._Element) -> str:
    return el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else ""


def _totals(facts: Facts) -> None:
    slides = facts.slides or []
    comments = TextBag()
    for slide in slides:
        facts.text += slide.text
        facts.text += slide.notes
        comments.add("\n".join(slide.comments))
    facts.text += comments
    notes = TextBag()
    for slide in slides:
        notes += slide.notes
    facts.parts["speaker notes"] = notes
    facts.parts["comments"] = comments
    c = facts.counts
    c["comments"] = sum(len(s.comments) for s in slides)
    c["slides"] = len(slides)
    c["hidden_slides"] = sum(s.hidden for s in slides)
    for kind in SHAPE_KINDS:
        c[SHAPE_COUNTS[kind]] = sum(s.shapes.get(kind, 0) for s in slides)
    c["notes"] = sum(1 for s in slides if s.notes.word_count)
    c["transitions"] = sum(s.transition for s in slides)
    c["animations"] = sum(s.animations for s in slides)


# ============================================================================ ODF (odp) ========

_OFFICEOOO = "http://openoffice.org/2009/office"


def _n(prefix: str, tag: str) -> str:
    return f"{{{ODF_NS[prefix]}}}{tag}"


_DRAW_SHAPES = {_n("draw", t) for t in ("custom-shape", "rect", "ellipse", "circle", "polyline", "polygon",
                                        "path", "regular-polygon", "measure", "caption")}
_ODP_ANIMATIONS = {_n("anim", t) for t in ("animate", "set", "animateMotion", "animateColor",
                                           "animateTransform", "command")}


# nested paragraphs are collected on their own; date and time fields show the day of viewing
_NOT_TEXT = {_n("text", "p"), _n("text", "h"), _n("text", "date"), _n("text", "time"),
             _n("presentation", "date-time")}


def _odf_paragraphs(el: etree._Element) -> list[str]:
    texts = []
    for p in el.iter(_n("text", "p"), _n("text", "h")):
        parts: list[str] = []
        _collect(p, parts)
        texts.append("".join(parts))
    return texts


def _collect(el: etree._Element, parts: list[str]) -> None:
    if el.text:
        parts.append(el.text)
    for child in el:
        if child.tag == _n("text", "s"):
            parts.append(" " * int(child.get(_n("text", "c"), "1") or 1))
        elif child.tag in (_n("text", "tab"), _n("text", "line-break")):
            parts.append(" ")
        elif child.tag not in _NOT_TEXT:
            _collect(child, parts)
        if child.tail:
            parts.append(child.tail)


def _odp_shapes(container: etree._Element, shapes: dict[str, int], pkg: OdfPackage, text: TextBag) -> None:
    def add(kind: str) -> None:
        shapes[kind] = shapes.get(kind, 0) + 1

    for el in container:
        tag = el.tag
        if tag == _n("draw", "frame"):
            first = next((c for c in el if isinstance(c.tag, str) and c.tag not in (
                _n("svg", "title"), _n("svg", "desc"), _n("office", "event-listeners"))), None)
            ftag = first.tag if first is not None else None
            if el.get(_n("presentation", "placeholder")) == "true":
                continue                            # an empty placeholder: not shown in a slide show
            if el.find(_n("draw", "plugin")) is not None:
                add("media")
            elif ftag == _n("draw", "image"):
                add("picture")
            elif first is not None and ftag in (_n("draw", "object"), _n("draw", "object-ole")):
                kind = pkg.object_type(first.get(_n("xlink", "href")) or "") if ftag == _n("draw", "object") else "ole"
                add("chart" if kind == "chart" else "object")
            elif ftag == _n("table", "table"):
                add("table")
                text.add("\n".join(_odf_paragraphs(el)))
            else:
                texts = [t for t in _odf_paragraphs(el) if t.strip()]
                if texts or el.get(_n("presentation", "class")) is None:
                    add("shape")
                text.add("\n".join(texts))
        elif tag == _n("draw", "g"):
            add("group")
            _odp_shapes(el, shapes, pkg, text)
        elif tag in (_n("draw", "connector"), _n("draw", "line")):
            add("connector")
            text.add("\n".join(_odf_paragraphs(el)))
        elif tag in _DRAW_SHAPES:
            add("shape")
            text.add("\n".join(_odf_paragraphs(el)))


def read_odp(path: Path) -> Facts:
    """Facts of an OpenDocument presentation (odp, otp)."""
    facts = Facts(Family.PRESENTATION, "odf-slides")
    facts.slides = []
    with zipfile.ZipFile(path) as zf:
        pkg = OdfPackage(zf)
        content = pkg.xml("content.xml")
        if content is None:
            raise ValueError("no content.xml")
        body = content.find(f"{_n('office', 'body')}/{_n('office', 'presentation')}")
        if body is None:
            raise ValueError("not a presentation (no office:presentation)")
        page_styles = {}
        for style in content.iter(_n("style", "style")):
            props = style.find(_n("style", "drawing-page-properties"))
            if props is not None:
                page_styles[style.get(_n("style", "name"))] = props
        for page in body.iter(_n("draw", "page")):
            props = page_styles.get(page.get(_n("draw", "style-name")))
            slide = SlideFacts(text=TextBag())
            if props is not None:
                slide.hidden = props.get(_n("presentation", "visibility")) == "hidden"
                slide.transition = any(props.get(_n(ns, attr)) not in (None, "none") for ns, attr in (
                    ("presentation", "transition-type"), ("smil", "type"), ("presentation", "transition-style")))
            _odp_shapes(page, slide.shapes, pkg, slide.text)
            # LibreOffice writes a slide's comments as officeooo:annotation (office:annotation in ODF 1.4)
            for note in page.iter(f"{{{_OFFICEOOO}}}annotation", _n("office", "annotation")):
                slide.comments.append("\n".join(_odf_paragraphs(note)))
            notes = page.find(_n("presentation", "notes"))
            if notes is not None:
                for frame in notes.iter(_n("draw", "frame")):
                    if frame.get(_n("presentation", "class")) == "notes":
                        slide.notes.add("\n".join(_odf_paragraphs(frame)))
            timing = page.find(_n("anim", "par"))
            if timing is not None:
                slide.transition = slide.transition or timing.find(_n("anim", "transitionFilter")) is not None
                slide.animations = sum(1 for el in timing.iter(_n("anim", "par"), _n("anim", "iterate"))
                                       if el.get(_n("presentation", "preset-class")))
            facts.slides.append(slide)
        facts.metadata = odf_metadata(pkg)
    _totals(facts)
    return facts

