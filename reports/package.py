"""Reading parts of OOXML (OPC) and ODF packages safely: relationships, manifests, metadata.

The readers work on the XML with lxml rather than through python-docx, openpyxl, python-pptx or
odfpy: those libraries model only part of what fidelity counts (python-docx has no footnotes,
text boxes, tracked changes or fields; openpyxl gives formulas *or* cached values per load, so
two full loads; python-pptx has no transitions or media), odfpy builds a pure-Python DOM that
costs more than LibreOffice's conversion on big files, and both sides of a comparison must be
counted by the same rules. Those libraries generate the tests' documents instead, so the readers
are checked against independent writers.

Every parser here refuses DTDs, entity expansion and network access: documents are untrusted.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from dataclasses import dataclass
from urllib.parse import unquote

from lxml import etree

__all__ = ["parse_xml", "Ooxml", "OdfPackage", "Relationship", "drop_fallbacks", "MC",
           "ooxml_metadata", "odf_metadata", "PartTooBig", "ODF_NS"]

MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_CP = "http://schemas.openxmlformats.org/package/2006/metadata/core-properties"
_DC = "http://purl.org/dc/elements/1.1/"
_DCTERMS = "http://purl.org/dc/terms/"

#: Namespaces of ODF documents, by their usual prefixes.
ODF_NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "style": "urn:oasis:names:tc:opendocument:xmlns:style:1.0",
    "fo": "urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0",
    "xlink": "http://www.w3.org/1999/xlink",
    "dc": _DC,
    "meta": "urn:oasis:names:tc:opendocument:xmlns:meta:1.0",
    "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
    "anim": "urn:oasis:names:tc:opendocument:xmlns:animation:1.0",
    "smil": "urn:oasis:names:tc:opendocument:xmlns:smil-compatible:1.0",
    "svg": "urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0",
    "manifest": "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0",
    "calcext": "urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0",
    "loext": "urn:org:documentfoundation:names:experimental:office:xmlns:loext:1.0",
    "field": "urn:openoffice:names:experimental:ooo-ms-interop:xmlns:field:1.0",
    "math": "http://www.w3.org/1998/Math/MathML",
}

_MAX_PART = 512 << 20          # a part bigger than this is not read (zip bombs; real parts are far smaller)


class PartTooBig(ValueError):
    """A package part is larger than fidelity is willing to read into memory."""


def _parser() -> etree.XMLParser:
    # A new parser per call: lxml parsers must not be shared between threads.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True,
                           remove_comments=True, remove_pis=True)


def parse_xml(zf: zipfile.ZipFile, name: str) -> etree._Element:
    """The root element of the XML part `name` of an open ZIP package."""
    info = zf.getinfo(name)
    if info.file_size > _MAX_PART:
        raise PartTooBig(f"{name} is {info.file_size >> 20} MB")
    with zf.open(info) as stream:
        return etree.parse(stream, _parser()).getroot()


def drop_fallbacks(root: etree._Element) -> etree._Element:
    """Keep one branch of each mc:AlternateContent, as Word shows it: the first Choice, never the Fallback.

    Office writes a DrawingML shape and its VML fallback side by side: counting both would count
    every text box, picture and shape twice.
    """
    for alt in list(root.iter(f"{{{MC}}}AlternateContent")):
        choices = [el for el in alt if el.tag == f"{{{MC}}}Choice"]
        for el in list(alt):
            if el.tag == f"{{{MC}}}Fallback" or (choices and el is not choices[0]):
                alt.remove(el)
    return root


@dataclass(frozen=True)
class Relationship:
    """One OPC relationship of a part."""

    id: str
    kind: str            # last segment of the relationship type: "header", "footnotes", "slide" …
    target: str          # resolved part name (no leading slash), or the URL of an external target
    external: bool


class Ooxml:
    """An open OOXML package: parts by name, relationships resolved to part names."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.names = {info.filename for info in zf.infolist()}
        self._lower = {n.lower(): n for n in self.names}
        self._rels: dict[str, list[Relationship]] = {}

    def has(self, name: str) -> bool:
        return self.find(name) is not None

    def find(self, name: str) -> str | None:
        """The stored name of part `name` (OPC part names are case-insensitive)."""
        name = name.lstrip("/")
        if name in self.names:
            return name
        return self._lower.get(name.lower()) or self._lower.get(unquote(name).lower())

    def stored(self, name: str) -> str:
        """The stored name of part `name`; KeyError when the package has no such part."""
        stored = self.find(name)
        if stored is None:
            raise KeyError(name)
        return stored

    def xml(self, name: str) -> etree._Element:
        return parse_xml(self.zf, self.stored(name))

    def rels(self, part: str) -> list[Relationship]:
        """Relationships of `part` ("" for the package itself), targets resolved to part names."""
        if part in self._rels:
            return self._rels[part]
        folder, base = posixpath.split(part)
        rels_name = posixpath.join(folder, "_rels", base + ".rels")
        found: list[Relationship] = []
        stored = self.find(rels_name)
        if stored is not None:
            try:
                root = parse_xml(self.zf, stored)
            except (etree.XMLSyntaxError, PartTooBig):
                root = None
            for rel in (root if root is not None else []):
                if not isinstance(rel.tag, str):
                    continue
                target = (rel.get("Target") or "").replace("\\", "/")
                external = (rel.get("TargetMode") or "").lower() == "external"
                if not external:
                    if target.startswith("/"):
                        target = target.lstrip("/")
                    else:
                        target = posixpath.normpath(posixpath.join(folder, target)).lstrip("/")
                kind = (rel.get("Type") or "").rstrip("/").rsplit("/", 1)[-1]
                found.append(Relationship(rel.get("Id") or "", kind, target, external))
        self._rels[part] = found
        return found

    def rel_map(self, part: str) -> dict[str, Relationship]:
        return {r.id: r for r in self.rels(part)}

    def related(self, part: str, kind: str) -> list[str]:
        """Internal parts related to `part` by relationships of kind `kind`, existing ones only."""
        return [r.target for r in self.rels(part) if r.kind == kind and not r.external and self.has(r.target)]

    def main_part(self) -> str | None:
        """The main document part (the package's officeDocument relationship)."""
        for rel in self.rels(""):
            if rel.kind == "officeDocument" and not rel.external and self.has(rel.target):
                return self.find(rel.target)
        return None


class OdfPackage:
    """An open ODF package: content, styles and meta parts and the manifest's media types."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.names = {info.filename for info in zf.infolist()}
        self._types: dict[str, str] | None = None

    def xml(self, name: str) -> etree._Element | None:
        if name not in self.names:
            return None
        return parse_xml(self.zf, name)

    @property
    def media_types(self) -> dict[str, str]:
        """Manifest full-path -> media type (sub-documents such as "Object 1/" included)."""
        if self._types is None:
            self._types = {}
            manifest = self.xml("META-INF/manifest.xml")
            m = ODF_NS["manifest"]
            for entry in (manifest.iter(f"{{{m}}}file-entry") if manifest is not None else []):
                self._types[entry.get(f"{{{m}}}full-path") or ""] = entry.get(f"{{{m}}}media-type") or ""
        return self._types

    def object_type(self, href: str) -> str:
        """What an embedded object is ("chart", "formula", "text" … or "ole"), from the manifest."""
        path = href[2:] if href.startswith("./") else href
        path = path.rstrip("/")
        media = self.media_types.get(path + "/") or self.media_types.get(path) or ""
        if media.startswith("application/vnd.oasis.opendocument."):
            return media.rsplit(".", 1)[-1]
        return "ole"


_W3CDTF = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}))?")


def _date(text: str | None) -> str | None:
    """A date-time to the minute (YYYY-MM-DDTHH:MM), which both formats keep exactly."""
    match = _W3CDTF.match((text or "").strip())
    if not match:
        return None
    return match.group(1) + ("T" + match.group(2) if match.group(2) else "")


def ooxml_metadata(pkg: Ooxml) -> dict[str, str]:
    """Title, subject, author and dates from docProps/core.xml (whichever are set)."""
    name = next((r.target for r in pkg.rels("") if r.kind == "core-properties" and pkg.has(r.target)), None)
    name = name or ("docProps/core.xml" if pkg.has("docProps/core.xml") else None)
    if name is None:
        return {}
    try:
        root = pkg.xml(name)
    except (etree.XMLSyntaxError, PartTooBig, KeyError):
        return {}

    def text(ns: str, tag: str) -> str | None:
        el = root.find(f"{{{ns}}}{tag}")
        value = (el.text or "").strip() if el is not None else ""
        return value or None

    found = {"title": text(_DC, "title"), "subject": text(_DC, "subject"), "author": text(_DC, "creator"),
             "created": _date(text(_DCTERMS, "created")), "modified": _date(text(_DCTERMS, "modified"))}
    return {k: v for k, v in found.items() if v}


def odf_metadata(pkg: OdfPackage) -> dict[str, str]:
    """Title, subject, author (initial creator) and dates from meta.xml."""
    try:
        root = pkg.xml("meta.xml")
    except (etree.XMLSyntaxError, PartTooBig):
        return {}
    if root is None:
        return {}
    meta = root.find(f"{{{ODF_NS['office']}}}meta")
    if meta is None:
        return {}

    def text(ns: str, tag: str) -> str | None:
        el = meta.find(f"{{{ODF_NS[ns]}}}{tag}")
        value = (el.text or "").strip() if el is not None else ""
        return value or None

    found = {"title": text("dc", "title"), "subject": text("dc", "subject"),
             "author": text("meta", "initial-creator"),
             "created": _date(text("meta", "creation-date")), "modified": _date(text("dc", "date"))}
    return {k: v for k, v in found.items() if v}
