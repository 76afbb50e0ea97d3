"""An ODS spreadsheet written row by row: memory bounded whatever the number of rows.

pandas writes ODS through odfpy, which builds the whole document in memory first (about 23 KB
and 3 ms per row of the risk scan's file list). Here content.xml is streamed into the zip with
lxml's incremental writer (`etree.xmlfile`), so a sheet costs what its column widths need: the
first rows are held to size the columns, the rest pass through. The cells are those pandas
writes (text as `string`, numbers as `float`, an empty cell as an empty string), and each table
gets the column widths and autofilter that reports.batch.write_ods adds to pandas' output.
"""

from __future__ import annotations

import itertools
import math
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OdsSheet", "write_ods_rows", "WIDTH_SAMPLE", "column_letters"]

#: Rows of a sheet read to size its columns (as reports.batch.write_ods does).
WIDTH_SAMPLE = 2000

_NS = {"office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
       "style": "urn:oasis:names:tc:opendocument:xmlns:style:1.0",
       "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
       "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
       "manifest": "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"}
_MIMETYPE = "application/vnd.oasis.opendocument.spreadsheet"


@dataclass
class OdsSheet:
    """One sheet: its header, its rows (any iterable, read once), and an optional line of text
    written below the table, outside its autofilter (e.g. that rows were left out)."""

    name: str
    header: Sequence[str]
    rows: Iterable[Sequence]
    note: str | None = None


def _q(prefix: str, tag: str) -> str:
    return f"{{{_NS[prefix]}}}{tag}"


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _width(header, cells: Iterable) -> int:
    return min(60, max(6, len(str(header)), *[len(str(v)) for v in cells if not _blank(v)]))


def column_letters(n: int) -> str:
    """The spreadsheet name of column `n` (1: A, 27: AA)."""
    letters = ""
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _cell(xf, value) -> None:
    if _blank(value):
        value = ""
    if isinstance(value, bool):
        attrs = {_q("office", "value-type"): "boolean", _q("office", "boolean-value"): str(value).lower()}
        text = str(value).upper()
    elif isinstance(value, (int, float)):
        attrs = {_q("office", "value-type"): "float", _q("office", "value"): str(value)}
        text = str(value)
    else:
        text = str(value)
        attrs = {_q("office", "value-type"): "string", _q("office", "string-value"): text}
    # elements opened through the writer (not built and written whole) use the document's
    # prefixes; a written element would declare its namespaces again on every cell
    with xf.element(_q("table", "table-cell"), attrs), xf.element(_q("text", "p")):
        for i, line in enumerate(text.split("\n")):
            if i:
                with xf.element(_q("text", "line-break")):
                    pass
            if line:
                xf.write(line)


def _empty(xf, tag: str, attrs: dict[str, str]) -> None:
    with xf.element(tag, attrs):
        pass


def _row(xf, values: Sequence) -> None:
    with xf.element(_q("table", "table-row")):
        for value in values:
            _cell(xf, value)


def write_ods_rows(path: Path, sheets: Sequence[OdsSheet]) -> None:
    """Write `sheets` as an ODS at `path`: one table each, columns as wide as their first rows'
    text, an autofilter over header and rows, the note (if any) after an empty row."""
    from lxml import etree

    samples = []
    for sheet in sheets:
        rows = iter(sheet.rows)
        head = list(itertools.islice(rows, WIDTH_SAMPLE))
        widths = [_width(h, [r[i] if i < len(r) else None for r in head]) for i, h in enumerate(sheet.header)]
        samples.append((head, rows, widths))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), _MIMETYPE, compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/manifest.xml", _manifest())
        content = zipfile.ZipInfo("content.xml", time.localtime()[:6])
        content.compress_type = zipfile.ZIP_DEFLATED
        with z.open(content, "w", force_zip64=True) as stream, etree.xmlfile(stream, encoding="UTF-8") as xf:
            xf.write_declaration()
            nsmap = {k: v for k, v in _NS.items() if k != "manifest"}
            with xf.element(_q("office", "document-content"), {_q("office", "version"): "1.2"}, nsmap=nsmap):
                with xf.element(_q("office", "automatic-styles")):
                    for number, (_, _, widths) in enumerate(samples):
                        for i, width in enumerate(widths):
                            with xf.element(_q("style", "style"), {_q("style", "name"): f"umstieg-co{number}-{i}",
                                                                   _q("style", "family"): "table-column"}):
                                _empty(xf, _q("style", "table-column-properties"),
                                       {_q("style", "column-width"): f"{width * 0.2 + 0.4:.2f}cm"})
                ranges = []
                with xf.element(_q("office", "body")), xf.element(_q("office", "spreadsheet")):
                    for number, (sheet, (head, rest, widths)) in enumerate(zip(sheets, samples)):
                        count = 0
                        with xf.element(_q("table", "table"), {_q("table", "name"): sheet.name}):
                            for i in range(len(widths)):
                                _empty(xf, _q("table", "table-column"),
                                       {_q("table", "style-name"): f"umstieg-co{number}-{i}"})
                            _row(xf, sheet.header)
                            for values in itertools.chain(head, rest):
                                _row(xf, values)
                                count += 1
                            if sheet.note:
                                _empty(xf, _q("table", "table-row"), {})
                                _row(xf, [sheet.note])
                        if sheet.header and count:
                            quoted = "'" + sheet.name.replace("'", "''") + "'"
                            ranges.append(f"{quoted}.A1:{quoted}.{column_letters(len(sheet.header))}{count + 1}")
                    if ranges:
                        with xf.element(_q("table", "database-ranges")):
                            for number, address in enumerate(ranges):
                                _empty(xf, _q("table", "database-range"), {
                                    _q("table", "name"): f"filter{number}",
                                    _q("table", "target-range-address"): address,
                                    _q("table", "display-filter-buttons"): "true"})


def _manifest() -> bytes:
    from lxml import etree

    m = "manifest"
    root = etree.Element(_q(m, "manifest"), {_q(m, "version"): "1.2"}, nsmap={m: _NS[m]})
    for full_path, media in (("/", _MIMETYPE), ("content.xml", "text/xml")):
        etree.SubElement(root, _q(m, "file-entry"), {_q(m, "full-path"): full_path, _q(m, "media-type"): media})
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
