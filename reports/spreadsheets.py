"""Spreadsheets as fidelity counts them: .xlsx/.xlsm/.xltx (OOXML), .ods/.ots (ODF) and .xls (xlrd).

Each reader yields the sheets in order (name, hidden or not), every non-empty cell as a typed value
(numbers, dates and times as serial days, text, booleans, error codes), which cells hold formulas,
and what sits on each sheet (merged cells, conditional formats, autofilters, comments,
hyperlinks, protection), plus workbook-wide defined names, data validations, charts and pivot
tables.

Excel stores each formula's last computed ("cached") value beside the formula. The workers load
OOXML workbooks with "recalculate on load: always" (see converters/soffice_server.py), so the ODS holds
the values LibreOffice computes: comparing them with Excel's cached values shows where LibreOffice
calculates differently. Sheets are read as streams, row by row, so memory stays bounded; past
`max_rows` rows per sheet the comparison stops (and says so).
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from datetime import date, datetime
from pathlib import Path

from lxml import etree

from converters.formats import Family
from reports.facts import Facts, SheetFacts, Value
from reports.legacy import biff_sheets, ole_metadata
from reports.package import ODF_NS, OdfPackage, Ooxml, PartTooBig, odf_metadata, ooxml_metadata
from reports.text import bag

__all__ = ["read_xlsx", "read_ods", "read_xls", "read_xlsb", "same_value", "VOLATILE", "DEFAULT_MAX_ROWS",
           "XLS_BIFF4_READER"]

DEFAULT_MAX_ROWS = 100_000

#: Functions whose value changes by itself (time, chance, the file's own path): never compared.
VOLATILE = re.compile(r"\b(NOW|TODAY|RAND|RANDBETWEEN|RANDARRAY|INFO|CELL)\s*\(", re.IGNORECASE)

_CELL_REF = re.compile(r"^\$?([A-Z]{1,3})\$?(\d+)$")
_XML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_EXCEL_EPOCH = datetime(1899, 12, 30)
_EXCEL_EPOCH_1904 = datetime(1904, 1, 1)      # workbooks with date1904 (old Excel for Mac) count from here


def _col_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + (ord(ch) - 64)
    return n - 1


def _text(value: str) -> str:
    """Cell text as both formats agree on it: OOXML's _xHHHH_ escapes decoded, line ends unified."""
    if "_x" in value:
        value = _XML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)
    return value.replace("\r\n", "\n").replace("\r", "\n")


def same_value(a: Value | None, b: Value | None) -> bool:
    """Whether two typed cell values are equal: numbers within 1e-9 (relative), text exactly."""
    if a is None or b is None:
        return _empty(a) and _empty(b)
    if a[0] != b[0]:
        # Excel stores TRUE/FALSE results as booleans, LibreOffice sometimes as 1/0 numbers.
        if {a[0], b[0]} == {"n", "b"}:
            return float(a[1]) == float(b[1])
        return _empty(a) and _empty(b)
    if a[0] == "n":
        return math.isclose(a[1], b[1], rel_tol=1e-9, abs_tol=1e-9)
    if a[0] == "s":
        return a[1].rstrip() == b[1].rstrip()
    return a[1] == b[1]


def _empty(v: Value | None) -> bool:
    return v is None or (v[0] == "s" and v[1] == "")


# ============================================================================ OOXML (xlsx) =====

def _local(el: etree._Element) -> str:
    tag = el.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _attr(el: etree._Element, local: str) -> str | None:
    """An attribute by local name, whatever its namespace (r:id is in different namespaces in Strict)."""
    for key, value in el.attrib.items():
        if key == local or key.endswith("}" + local):
            return value
    return None


def _area(ref: str | None) -> tuple[int, int, int, int] | None:
    """(row1, col1, row2, col2), 0-based, of an A1-style range such as "A3:E20"."""
    if not ref:
        return None
    ends = [m for m in (_CELL_REF.match(part.strip()) for part in ref.split(":")) if m is not None]
    if len(ends) != len(ref.split(":")):
        return None
    (c1, r1), (c2, r2) = ((_col_index(m.group(1)), int(m.group(2)) - 1) for m in (ends[0], ends[-1]))
    return (min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2))


def _shared_strings(pkg: Ooxml, main: str) -> list[str]:
    strings: list[str] = []
    for part in pkg.related(main, "sharedStrings"):
        with pkg.zf.open(pkg.stored(part)) as stream:
            for _, si in etree.iterparse(stream, events=("end",), tag="{*}si", resolve_entities=False,
                                         no_network=True, huge_tree=True):
                strings.append(_text("".join(t.text or "" for t in si.iter("{*}t")
                                             if _local(t.getparent()) != "rPh")))
                si.clear()
    return strings


def _xlsx_value(t: str | None, raw: str | None, cell: etree._Element, strings: list[str],
                epoch: datetime = _EXCEL_EPOCH) -> Value | None:
    if t == "inlineStr":
        return ("s", _text("".join(x.text or "" for x in cell.iter("{*}t"))))
    if raw is None:
        return None
    if t == "s":
        index = int(raw)
        return ("s", strings[index]) if 0 <= index < len(strings) else ("s", "")
    if t == "str":
        return ("s", _text(raw))
    if t == "b":
        return ("b", raw.strip() in ("1", "true"))
    if t == "e":
        return ("e", raw.strip())
    if t == "d":
        try:
            return ("n", _serial(datetime.fromisoformat(raw.strip()), epoch))
        except ValueError:
            return ("s", raw)
    try:
        return ("n", float(raw))
    except ValueError:
        return ("s", raw)


def _serial(moment: datetime | date, epoch: datetime) -> float:
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    delta = moment.replace(tzinfo=None) - epoch
    return delta.days + delta.seconds / 86400 + delta.microseconds / 86400e6


def _read_xlsx_sheet(pkg: Ooxml, part: str, sheet: SheetFacts, strings: list[str], max_rows: int,
                     epoch: datetime = _EXCEL_EPOCH) -> None:
    counts = sheet.counts
    for key in ("merged", "validations", "conditional_formats", "autofilters", "hyperlinks", "protected"):
        counts[key] = 0
    shared: dict[str, str] = {}
    row_index = -1
    next_col = 0                  # cells without an "r" reference follow the previous one
    with pkg.zf.open(pkg.stored(part)) as stream:
        for _, el in etree.iterparse(stream, events=("end",), resolve_entities=False, no_network=True,
                                     huge_tree=True):
            name = _local(el)
            if name == "c":
                ref = el.get("r")
                match = _CELL_REF.match(ref) if ref else None
                if match:
                    row, col = int(match.group(2)) - 1, _col_index(match.group(1))
                else:
                    parent = el.getparent()
                    parent_r = parent.get("r") if parent is not None else None
                    row = int(parent_r) - 1 if parent_r is not None and parent_r.isdigit() else row_index + 1
                    col = next_col
                next_col = col + 1
                if row >= max_rows:
                    sheet.truncated = True
                    el.clear()
                    continue
                formula = value_el = None
                for child in el:
                    local = _local(child)
                    if local == "f":
                        formula = child
                    elif local == "v":
                        value_el = child
                value = _xlsx_value(el.get("t"), value_el.text if value_el is not None else None, el, strings,
                                    epoch)
                if formula is not None:
                    text = formula.text or ""
                    si = formula.get("si")
                    if si is not None:
                        if text:
                            shared[si] = text
                        else:
                            text = shared.get(si, "")
                    sheet.formulas[(row, col)] = text
                    # no value, or an empty one that is not an empty text result (openpyxl writes <v/>)
                    if value_el is None or (not value_el.text and el.get("t") != "str"):
                        sheet.uncached.add((row, col))
                if value is not None and not _empty(value):
                    sheet.cells[(row, col)] = value
                el.clear()
            elif name == "row":
                r = el.get("r") or ""
                row_index = int(r) - 1 if r.isdigit() else row_index + 1
                next_col = 0
                el.clear()
                while el.getprevious() is not None:
                    del el.getparent()[0]
            elif name == "mergeCell":
                counts["merged"] += 1
            elif name == "dataValidation":
                counts["validations"] += 1
            elif name == "conditionalFormatting":
                counts["conditional_formats"] += 1
            elif name == "autoFilter" and _local(el.getparent()) == "worksheet":
                counts["autofilters"] += 1
            elif name == "hyperlink":
                counts["hyperlinks"] += 1
            elif name == "sheetProtection":
                counts["protected"] = int((el.get("sheet") or "0") in ("1", "true"))

    # what hangs off the sheet: comments, drawings with charts, pivot tables, tables with filters
    comments = 0
    for rel in pkg.related(part, "comments"):
        try:
            for el in pkg.xml(rel).iter("{*}comment"):
                comments += 1
                sheet.comments.append(_text("".join(t.text or "" for t in el.iter("{*}t")
                                                    if _local(t.getparent()) != "rPh")))
        except (etree.XMLSyntaxError, PartTooBig):
            pass
    counts["comments"] = comments
    charts = 0
    for drawing in pkg.related(part, "drawing"):
        charts += len(pkg.related(drawing, "chart"))
    counts["charts"] = charts
    pivots = pkg.related(part, "pivotTable")
    counts["pivot_tables"] = len(pivots)
    for pivot in pivots:
        try:
            location = next((el for el in pkg.xml(pivot) if _local(el) == "location"), None)
        except (etree.XMLSyntaxError, PartTooBig):
            continue
        area = _area(location.get("ref") if location is not None else None)
        if area:
            sheet.pivot_ranges.append(area)
    for table in pkg.related(part, "table"):
        try:
            if any(_local(el) == "autoFilter" for el in pkg.xml(table)):
                counts["autofilters"] += 1
        except (etree.XMLSyntaxError, PartTooBig):
            pass


def read_xlsx(path: Path, max_rows: int = DEFAULT_MAX_ROWS) -> Facts:
    """Facts of an Excel OOXML workbook (xlsx, xlsm, xltx, xltm)."""
    facts = Facts(Family.SPREADSHEET, "ooxml-sheet")
    with zipfile.ZipFile(path) as zf:
        pkg = Ooxml(zf)
        main = pkg.main_part() or pkg.find("xl/workbook.xml")
        if main is None:
            raise ValueError("no workbook part")
        workbook = pkg.xml(main)
        rels = pkg.rel_map(main)
        strings = _shared_strings(pkg, main)
        facts.sheets = []
        names = 0
        facts.counts["structure_protected"] = 0
        for el in workbook.iter():
            local = _local(el)
            if local == "workbookPr":
                facts.date1904 = (el.get("date1904") or "0") in ("1", "true")
            elif local == "definedName" and not (el.get("name") or "").startswith("_xlnm."):
                names += 1
            elif local == "workbookProtection":
                facts.counts["structure_protected"] = int((el.get("lockStructure") or "0") in ("1", "true"))
        facts.counts["names"] = names
        for el in workbook.iter("{*}sheet"):
            sheet = SheetFacts(name=el.get("name") or "", hidden=(el.get("state") or "visible") != "visible")
            rel = rels.get(_attr(el, "id") or "")
            facts.sheets.append(sheet)
            if rel is None or rel.external or not pkg.has(rel.target):
                continue
            if rel.kind == "chartsheet":
                sheet.counts["charts"] = sum(len(pkg.related(d, "chart")) for d in pkg.related(rel.target, "drawing"))
                continue
            _read_xlsx_sheet(pkg, rel.target, sheet, strings, max_rows,
                             _EXCEL_EPOCH_1904 if facts.date1904 else _EXCEL_EPOCH)
        _sheet_totals(facts)
        _sheet_text(facts)
        facts.metadata = ooxml_metadata(pkg)
    return facts


def _sheet_text(facts: Facts) -> None:
    """The workbook's text: every text cell, and the cell comments (also a part of their own)."""
    sheets = facts.sheets or []
    comments = bag(*(text for s in sheets for text in s.comments))
    facts.text = bag(*(v[1] for s in sheets for v in s.cells.values() if v[0] == "s"))
    facts.text += comments
    facts.parts["comments"] = comments


def _sheet_totals(facts: Facts) -> None:
    """Workbook-wide sums of the per-sheet counts (what the generic count checks compare)."""
    sheets = facts.sheets or []
    for key in ("merged", "conditional_formats", "autofilters", "comments", "hyperlinks", "charts",
                "pivot_tables", "protected", "validations"):
        values = [s.counts[key] for s in sheets if key in s.counts]
        if values:
            facts.counts[key] = facts.counts.get(key, 0) + sum(values)
    facts.counts["sheets"] = len(sheets)
    facts.counts["hidden_sheets"] = sum(1 for s in sheets if s.hidden)


# ============================================================================ ODF (ods) ========

def _t(prefix: str, tag: str) -> str:
    return f"{{{ODF_NS[prefix]}}}{tag}"


_TABLE, _ROW = _t("table", "table"), _t("table", "table-row")
_CELL, _COVERED = _t("table", "table-cell"), _t("table", "covered-table-cell")
_DURATION = re.compile(r"^-?P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?$")


def _ods_cell_text(cell: etree._Element) -> str:
    lines = []
    for p in cell:
        if p.tag != _t("text", "p"):
            continue
        parts: list[str] = []
        _collect(p, parts)
        lines.append("".join(parts))
    return "\n".join(lines)


def _collect(el: etree._Element, parts: list[str]) -> None:
    if el.text:
        parts.append(el.text)
    for child in el:
        if child.tag == _t("text", "s"):
            parts.append(" " * int(child.get(_t("text", "c"), "1") or 1))
        elif child.tag in (_t("text", "tab"), _t("text", "line-break")):
            parts.append("\t" if child.tag == _t("text", "tab") else "\n")
        elif child.tag != _t("office", "annotation"):
            _collect(child, parts)
        if child.tail:
            parts.append(child.tail)


def _ods_paragraph(p: etree._Element) -> str:
    parts: list[str] = []
    _collect(p, parts)
    return "".join(parts)


def _ods_value(cell: etree._Element, epoch: datetime) -> Value | None:
    calc_type = cell.get(_t("calcext", "value-type"))
    kind = cell.get(_t("office", "value-type"))
    if calc_type == "error":
        return ("e", _ods_cell_text(cell).strip())
    if kind is None:
        text = _ods_cell_text(cell)
        return ("s", text) if text else None
    if kind in ("float", "percentage", "currency"):
        try:
            return ("n", float(cell.get(_t("office", "value"))))
        except (TypeError, ValueError):
            return None
    if kind == "date":
        raw = cell.get(_t("office", "date-value")) or ""
        try:
            return ("n", _serial(datetime.fromisoformat(raw), epoch))
        except ValueError:
            return ("s", raw)
    if kind == "time":
        match = _DURATION.match(cell.get(_t("office", "time-value")) or "")
        if not match:
            return None
        d, h, m, s = (float(x) if x else 0.0 for x in match.groups())
        return ("n", d + h / 24 + m / 1440 + s / 86400)
    if kind == "boolean":
        return ("b", (cell.get(_t("office", "boolean-value")) or "").lower() == "true")
    string = cell.get(_t("office", "string-value"))
    return ("s", _text(string if string is not None else _ods_cell_text(cell)))


_REPEAT_CAP = 20_000     # a value repeated across more cells than this is counted only this often


def read_ods(path: Path, max_rows: int = DEFAULT_MAX_ROWS) -> Facts:
    """Facts of an OpenDocument spreadsheet (ods, ots), read as a stream of rows."""
    facts = Facts(Family.SPREADSHEET, "odf-sheet")
    facts.sheets = []
    hidden_styles: set[str] = set()
    epoch = _EXCEL_EPOCH
    counts = facts.counts
    for key in ("names", "validations", "autofilters", "pivot_tables", "structure_protected"):
        counts[key] = 0
    with zipfile.ZipFile(path) as zf:
        pkg = OdfPackage(zf)
        if "content.xml" not in pkg.names:
            raise ValueError("no content.xml")
        sheet: SheetFacts | None = None
        row = 0
        pivot_targets: list[str] = []
        wanted = [_t("style", "style"), _TABLE, _ROW, _t("table", "null-date"), _t("table", "named-range"),
                  _t("table", "named-expression"), _t("table", "content-validation"),
                  _t("table", "database-range"), _t("table", "data-pilot-table"),
                  _t("calcext", "conditional-format"), _t("office", "spreadsheet")]
        with zf.open("content.xml") as stream:
            for event, el in etree.iterparse(stream, events=("start", "end"), tag=wanted,
                                             resolve_entities=False, no_network=True, huge_tree=True):
                tag = el.tag
                if event == "start":
                    parent = el.getparent() if tag == _TABLE else None
                    if parent is not None and parent.tag == _t("office", "spreadsheet"):
                        name = el.get(_t("table", "name")) or ""
                        if name.startswith("'") and "'#" in name:
                            sheet = None       # LibreOffice's cache of an external reference, not a sheet
                            continue
                        sheet = SheetFacts(name=name,
                                           hidden=el.get(_t("table", "style-name")) in hidden_styles)
                        sheet.counts.update(merged=0, conditional_formats=0, comments=0, hyperlinks=0,
                                            protected=int(el.get(_t("table", "protected")) == "true"))
                        facts.sheets.append(sheet)
                        row = 0
                    elif tag == _t("office", "spreadsheet"):
                        counts["structure_protected"] = int(el.get(_t("table", "structure-protected")) == "true")
                    continue
                if tag == _ROW:
                    if sheet is None or el.getparent() is None:
                        continue
                    repeat = int(el.get(_t("table", "number-rows-repeated")) or 1)
                    if row < max_rows:
                        _ods_row(el, sheet, row, repeat, epoch, max_rows)
                    elif any(len(c) or c.attrib for c in el):
                        sheet.truncated = True
                    row += repeat
                    el.clear()
                    parent = el.getparent()
                    while el.getprevious() is not None:
                        del parent[0]
                elif tag == _TABLE:
                    if el.getparent() is not None and el.getparent().tag == _t("office", "spreadsheet"):
                        sheet = None
                elif tag == _t("style", "style"):
                    props = el.find(_t("style", "table-properties"))
                    if props is not None and props.get(_t("table", "display")) == "false":
                        hidden_styles.add(el.get(_t("style", "name")))
                elif tag == _t("table", "null-date"):
                    try:
                        epoch = datetime.fromisoformat(el.get(_t("table", "date-value")) or "1899-12-30")
                    except ValueError:
                        pass
                    facts.date1904 = epoch.year == 1904
                elif tag in (_t("table", "named-range"), _t("table", "named-expression")):
                    # Excel's built-in names (print areas, filter ranges) are not counted on either side
                    if not (el.get(_t("table", "name")) or "").startswith(("Excel_BuiltIn_", "_xlnm.")):
                        counts["names"] += 1
                elif tag == _t("table", "content-validation"):
                    counts["validations"] += 1
                elif tag == _t("table", "database-range"):
                    counts["autofilters"] += el.get(_t("table", "display-filter-buttons")) == "true"
                elif tag == _t("table", "data-pilot-table"):
                    counts["pivot_tables"] += 1
                    pivot_targets.append(el.get(_t("table", "target-range-address")) or "")
                elif tag == _t("calcext", "conditional-format") and sheet is not None:
                    sheet.counts["conditional_formats"] += 1
        by_name = {s.name: s for s in facts.sheets}
        for address in pivot_targets:
            match = re.match(r"^'?(.*?)'?\.\$?([A-Z]+)\$?(\d+):(?:'?.*?'?)?\.\$?([A-Z]+)\$?(\d+)$", address)
            if match and match.group(1).replace("''", "'") in by_name:
                c1, r1, c2, r2 = (_col_index(match.group(2)), int(match.group(3)) - 1,
                                  _col_index(match.group(4)), int(match.group(5)) - 1)
                by_name[match.group(1).replace("''", "'")].pivot_ranges.append((r1, c1, r2, c2))
        counts["charts"] = sum(1 for path_, media in pkg.media_types.items()
                               if media.endswith("opendocument.chart") and path_.rstrip("/").count("/") == 0)
        facts.metadata = odf_metadata(pkg)
    for key in ("merged", "conditional_formats", "comments", "hyperlinks", "protected"):
        counts[key] = sum(s.counts.get(key, 0) for s in facts.sheets)
    counts["sheets"] = len(facts.sheets)
    counts["hidden_sheets"] = sum(1 for s in facts.sheets if s.hidden)
    _sheet_text(facts)
    return facts


_REPEAT_COLS, _REPEAT_ROWS = _t("table", "number-columns-repeated"), _t("table", "number-rows-repeated")
_SPAN_COLS, _SPAN_ROWS = _t("table", "number-columns-spanned"), _t("table", "number-rows-spanned")
_VALUE_TYPE, _FORMULA = _t("office", "value-type"), _t("table", "formula")
_ANNOTATION, _LINK, _P = _t("office", "annotation"), _t("text", "a"), _t("text", "p")


def _ods_row(el: etree._Element, sheet: SheetFacts, row: int, repeat: int, epoch: datetime,
             max_rows: int) -> None:
    """Record one row's cells (hot loop: attribute names are module constants)."""
    col = 0
    rows = range(row, min(row + min(repeat, _REPEAT_CAP), max_rows))
    cells, formulas, counts = sheet.cells, sheet.formulas, sheet.counts
    for cell in el:
        tag = cell.tag
        if tag != _CELL and tag != _COVERED:
            continue
        get = cell.get
        span = int(get(_REPEAT_COLS) or 1)
        if tag == _CELL and (len(cell) or get(_VALUE_TYPE) or get(_FORMULA)):
            formula = get(_FORMULA)
            value = _ods_value(cell, epoch)
            if value is not None and _empty(value):
                value = None
            annotations = links = 0
            for child in cell:
                if child.tag == _ANNOTATION:
                    annotations += 1
                    sheet.comments.append(_text("\n".join(_ods_paragraph(p) for p in child.iter(_P))))
                elif len(child):                     # a paragraph with markup: maybe a hyperlink
                    links += sum(1 for _ in child.iter(_LINK))
            merged = (get(_SPAN_COLS) or "1") != "1" or (get(_SPAN_ROWS) or "1") != "1"
            columns = range(col, col + min(span, _REPEAT_CAP))
            for r in rows:
                for c in columns:
                    if value is not None:
                        cells[(r, c)] = value
                    if formula is not None:
                        formulas[(r, c)] = formula
            n = len(rows) * len(columns)
            if annotations or links or merged:
                counts["comments"] += annotations * n
                counts["hyperlinks"] += links * n
                counts["merged"] += int(merged) * n
        col += span


# ============================================================================ BIFF (xls) =======

#: The reader name of Excel 2.x-4.0 worksheets (xlrd reads their values, not their sheet name).
XLS_BIFF4_READER = "xls-biff4-xlrd"


def read_xls(path: Path, max_rows: int = DEFAULT_MAX_ROWS) -> Facts:
    """Facts of an Excel 97-2003 (or 5.0/95) workbook, as far as xlrd reads it.

    xlrd reads values, sheets, merged cells, names and comments, but not formulas: which cells hold
    formulas is taken from the ODF output, so their recalculated values are still compared with
    the values Excel stored.
    """
    import xlrd

    facts = Facts(Family.SPREADSHEET, "xls-xlrd")
    facts.notes.append("xls: formulas, conditional formats, validations, charts and pivot tables are not read "
                       "from the source (xlrd reads values only)")
    with open(os.devnull, "w") as quiet:
        book = xlrd.open_workbook(str(path), formatting_info=True, logfile=quiet, verbosity=0,
                                  on_demand=True)
    # BIFF2-4 (Excel 2.x-4.0) worksheets store one sheet without a name, and xlrd reads neither their
    # merged cells nor their names: those are left unmeasured rather than counted as none
    old = book.biff_version < 50
    if old:
        facts.reader = XLS_BIFF4_READER
        facts.notes.append("Excel 2.x-4.0 worksheet: it stores no sheet name; merged cells and defined names are "
                           "not read from it")
    try:
        facts.date1904 = bool(book.datemode)
        facts.sheets = []
        errors = xlrd.error_text_from_code
        worksheets = {}
        for index in range(book.nsheets):
            xs = book.sheet_by_index(index)
            sheet = SheetFacts(name=xs.name, hidden=bool(xs.visibility))
            worksheets[xs.name] = sheet
            for r in range(min(xs.nrows, max_rows)):
                for c, cell in enumerate(xs.row(r)):
                    kind = cell.ctype
                    if kind in (xlrd.XL_CELL_NUMBER, xlrd.XL_CELL_DATE):
                        sheet.cells[(r, c)] = ("n", float(cell.value))
                    elif kind == xlrd.XL_CELL_TEXT and cell.value != "":
                        sheet.cells[(r, c)] = ("s", _text(str(cell.value)))
                    elif kind == xlrd.XL_CELL_BOOLEAN:
                        sheet.cells[(r, c)] = ("b", bool(cell.value))
                    elif kind == xlrd.XL_CELL_ERROR:
                        # (an error cell's value is xlrd's error code, an int)
                        sheet.cells[(r, c)] = ("e", errors.get(int(cell.value), f"#ERR{cell.value}"))
            sheet.truncated = xs.nrows > max_rows
            sheet.counts["merged"] = len(xs.merged_cells)
            notes = getattr(xs, "cell_note_map", {}) or {}
            sheet.counts["comments"] = len(notes)
            sheet.comments = [_text(note.text or "") for note in notes.values()]
            sheet.counts["hyperlinks"] = len(getattr(xs, "hyperlink_list", []) or [])
            book.unload_sheet(index)
        # xlrd lists worksheets only: chart sheets (and their places) come from the BOUNDSHEET records
        order = biff_sheets(path)
        for name, hidden, sheet_kind in order:
            if name in worksheets:
                facts.sheets.append(worksheets.pop(name))
            elif sheet_kind == "chart":
                facts.sheets.append(SheetFacts(name=name, hidden=hidden, counts={"charts": 1}))
        facts.sheets += list(worksheets.values())
        facts.counts["names"] = sum(1 for n in book.name_obj_list if not n.builtin)
        for key in ("merged", "comments", "hyperlinks"):
            facts.counts[key] = sum(s.counts.get(key, 0) for s in facts.sheets)
        if old:
            del facts.counts["names"], facts.counts["merged"]
        facts.counts["sheets"] = len(facts.sheets)
        facts.counts["hidden_sheets"] = sum(1 for s in facts.sheets if s.hidden)
        _sheet_text(facts)
        facts.metadata = ole_metadata(path)
        application = facts.metadata.pop("application", "")
        if "excel" not in application.lower():
            # Other writers (JExcelAPI, Apache POI …) often store 0 or nothing as a formula's value
            facts.cached_values = (f"written by {application}" if application else
                                   "written by a program that does not say which") + \
                ": its stored formula values are not Excel's"
    finally:
        book.release_resources()
    return facts


# ============================================================================ xlsb (pyxlsb) ====

def read_xlsb(path: Path, max_rows: int = DEFAULT_MAX_ROWS) -> Facts:
    """Facts of an Excel binary workbook (xlsb), as far as pyxlsb reads it: sheets and cell values.

    Like xls, which cells hold formulas is taken from the ODF output; the stored values are
    Excel's (only Excel writes xlsb), so recalculated values are compared.
    """
    from pyxlsb import open_workbook

    facts = Facts(Family.SPREADSHEET, "xlsb-pyxlsb")
    facts.notes.append("xlsb: formulas, merged cells, comments, charts and the like are not read from the source "
                       "(pyxlsb reads values only)")
    facts.sheets = []
    with open_workbook(str(path)) as book:
        for name in book.sheets:
            sheet = SheetFacts(name=name)
            with book.get_sheet(name) as xs:
                for row in xs.rows(sparse=True):
                    for cell in row:
                        if cell.r >= max_rows:
                            sheet.truncated = True
                            break
                        value = cell.v
                        if value is None or value == "":
                            continue
                        if isinstance(value, bool):
                            sheet.cells[(cell.r, cell.c)] = ("b", value)
                        elif isinstance(value, (int, float)):
                            sheet.cells[(cell.r, cell.c)] = ("n", float(value))
                        elif isinstance(value, str):
                            sheet.cells[(cell.r, cell.c)] = ("s", _text(value))
                        else:
                            sheet.cells[(cell.r, cell.c)] = ("e", str(value))
                    if sheet.truncated:
                        break
            facts.sheets.append(sheet)
    facts.counts["sheets"] = len(facts.sheets)
    facts.text = bag(*(v[1] for s in facts.sheets for v in s.cells.values() if v[0] == "s"))
    with zipfile.ZipFile(path) as zf:
        facts.metadata = ooxml_metadata(Ooxml(zf))
    return facts
