"""Per-batch fidelity: results.jsonl as tables (pandas), written as CSV, ODS and a self-contained HTML report.

The tables are what a project manager filters and sorts: one row per document (verdict, score,
the deduction that cost most, text similarity, pages, risk flags), the deductions one per row,
and the verdicts by format. The ODS is written by pandas with odfpy, so it opens in LibreOffice
Calc with one sheet per table. All three are written in the language asked for (reports.i18n;
the exports' rules are in reports.exports); CSV cells never start a formula.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pandas as pd

from converters.formats import FORMATS
from converters.tree import load_results
from reports.exports import localised, neutralised
from reports.i18n import names
from reports.ods import column_letters

__all__ = ["load_records", "fidelity_table", "deduction_table", "verdicts_by_format", "write_fidelity_report",
           "write_ods", "REPORT_NAMES", "THUMBS_DIR", "VERDICT_ORDER"]

#: Files the batch report writes next to results.jsonl.
REPORT_NAMES = {"csv": "fidelity.csv", "ods": "fidelity.ods", "html": "fidelity.html"}
#: Folder (under OUT) with the first-page thumbnails of the visual check.
THUMBS_DIR = ".fidelity-thumbs"
VERDICT_ORDER = ["identical", "minor", "review", "broken", "failed", "not_assessed"]

_COLUMNS = ["path", "format", "family", "outcome", "verdict", "score", "deductions", "main_deduction",
            "text_similarity", "pages_source", "pages_output", "mean_ssim", "risks", "input_bytes",
            "convert_seconds", "fidelity_seconds", "reason"]


def load_records(results: Path) -> list[dict]:
    """Lines of a results.jsonl (the last line per document wins; a torn line is skipped)."""
    results.stat()                   # a report of a results file that is not there is an error, not empty
    return list(load_results(results).values())


def _row(record: dict, check) -> dict:
    fidelity = record.get("fidelity") or {}
    deductions = fidelity.get("deductions") or []
    visual = fidelity.get("visual") or {}
    seconds = fidelity.get("seconds") or {}
    fmt = FORMATS.get(record.get("format") or "")
    main = deductions[0] if deductions else None
    return {
        "path": record.get("path"),
        "format": record.get("format") or "other",
        "family": fmt.family.value if fmt else "other",
        "outcome": record.get("outcome"),
        "verdict": fidelity.get("verdict") or fidelity.get("status"),
        "score": fidelity.get("score"),
        "deductions": len(deductions),
        "main_deduction": f"{check(main['check'])}: {main['detail']}" if main else "",
        "text_similarity": fidelity.get("text_similarity"),
        "pages_source": visual.get("pages_source"),
        "pages_output": visual.get("pages_output"),
        "mean_ssim": visual.get("mean_ssim"),
        "risks": ", ".join(fidelity.get("risks") or []),
        "input_bytes": record.get("input_bytes"),
        "convert_seconds": record.get("seconds"),
        "fidelity_seconds": round(sum(v for k, v in seconds.items()), 3) if seconds else None,
        "reason": fidelity.get("reason") or (record.get("message") if not fidelity else ""),
    }


def fidelity_table(records: list[dict], language: str | None = None) -> pd.DataFrame:
    """One row per Office document that has a fidelity record, worst first (the check that cost
    most named in `language`)."""
    check = names(language).check
    rows = [_row(r, check) for r in records if r.get("fidelity")]
    table = pd.DataFrame(rows, columns=_COLUMNS)
    if not table.empty:
        rank = {v: i for i, v in enumerate(["broken", "review", "failed", "minor", "identical", "not_assessed"])}
        table["_rank"] = table["verdict"].map(lambda v: rank.get(v, 9))
        table = table.sort_values(["_rank", "score", "path"], na_position="last").drop(columns="_rank")
    return table.reset_index(drop=True)


def deduction_table(records: list[dict], language: str | None = None) -> pd.DataFrame:
    """One row per deduction: which document lost what, and how many points it cost (the check
    by its code and by its name in `language`)."""
    label = names(language).check
    rows = []
    for record in records:
        for d in (record.get("fidelity") or {}).get("deductions") or []:
            rows.append({"path": record.get("path"), "format": record.get("format"), "check": d["check"],
                         "label": label(d["check"]), "points": d["points"], "detail": d["detail"]})
    return pd.DataFrame(rows, columns=["path", "format", "check", "label", "points", "detail"])


def verdicts_by_format(table: pd.DataFrame) -> pd.DataFrame:
    """Documents per format (rows) and verdict (columns), with totals."""
    if table.empty:
        return pd.DataFrame()
    crosstab = pd.crosstab(table["format"], table["verdict"])
    columns = [v for v in VERDICT_ORDER if v in crosstab.columns]
    crosstab = crosstab[columns]
    crosstab["total"] = crosstab.sum(axis=1)
    crosstab.loc["all"] = crosstab.sum(axis=0)
    return crosstab


def top_deductions(deductions: pd.DataFrame) -> pd.DataFrame:
    """Checks by how many documents lost points on them, with the points lost in total."""
    if deductions.empty:
        return pd.DataFrame(columns=["label", "documents", "points"])
    grouped = deductions.groupby(["check", "label"]).agg(documents=("path", "nunique"), points=("points", "sum"))
    return grouped.reset_index().sort_values(["documents", "points"], ascending=False).reset_index(drop=True)


def top_risks(records: list[dict]) -> Counter:
    counts: Counter = Counter()
    for record in records:
        counts.update((record.get("fidelity") or {}).get("risks") or [])
    return counts


def write_ods(path: Path, sheets: dict[str, tuple[pd.DataFrame, bool]]) -> None:
    """An ODS with one sheet per table, columns as wide as their text and an autofilter on each.

    pandas writes the cells (through odfpy); it sets neither column widths nor filters, so they
    are added to content.xml afterwards (lxml), before the file is given its final name.
    """
    with pd.ExcelWriter(path, engine="odf") as writer:
        for name, (frame, index) in sheets.items():
            frame.to_excel(writer, sheet_name=name, index=index)
    widths, ranges = {}, []
    for name, (frame, index) in sheets.items():
        sample = frame.head(2000)
        columns = ([(sample.index.name or "", list(sample.index))] if index else []) + [
            (col, list(sample[col])) for col in sample.columns]
        widths[name] = [min(60, max(6, len(str(header)), *[len(str(v)) for v in cells if not pd.isna(v)]))
                        for header, cells in columns]
        if columns and len(frame):
            quoted = "'" + name.replace("'", "''") + "'"
            ranges.append(f"{quoted}.A1:{quoted}.{column_letters(len(columns))}{len(frame) + 1}")
    _style_ods(path, widths, ranges)


def _style_ods(path: Path, widths: dict[str, list[int]], ranges: list[str]) -> None:
    import zipfile

    from lxml import etree

    ns = {"office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
          "style": "urn:oasis:names:tc:opendocument:xmlns:style:1.0",
          "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0"}

    def q(prefix: str, tag: str) -> str:
        return f"{{{ns[prefix]}}}{tag}"

    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info)) for info in zin.infolist()]
    content = etree.fromstring(next(data for info, data in items if info.filename == "content.xml"))
    automatic = content.find(q("office", "automatic-styles"))
    if automatic is None:
        automatic = etree.Element(q("office", "automatic-styles"))
        content.insert(list(content).index(content.find(q("office", "body"))), automatic)
    spreadsheet = content.find(f"{q('office', 'body')}/{q('office', 'spreadsheet')}")
    for number, table in enumerate(spreadsheet.findall(q("table", "table"))):
        for i, width in enumerate(widths.get(table.get(q("table", "name")), [])):
            style = etree.SubElement(automatic, q("style", "style"), {q("style", "name"): f"umstieg-co{number}-{i}",
                                                                      q("style", "family"): "table-column"})
            etree.SubElement(style, q("style", "table-column-properties"),
                             {q("style", "column-width"): f"{width * 0.2 + 0.4:.2f}cm"})
            table.insert(i, etree.Element(q("table", "table-column"),
                                          {q("table", "style-name"): f"umstieg-co{number}-{i}"}))
    if ranges:
        database = etree.SubElement(spreadsheet, q("table", "database-ranges"))
        for number, address in enumerate(ranges):
            etree.SubElement(database, q("table", "database-range"), {
                q("table", "name"): f"filter{number}", q("table", "target-range-address"): address,
                q("table", "display-filter-buttons"): "true"})
    data = etree.tostring(content, xml_declaration=True, encoding="UTF-8")
    with zipfile.ZipFile(path, "w") as zout:
        for info, payload in items:
            zout.writestr(info, data if info.filename == "content.xml" else payload,
                          compress_type=zipfile.ZIP_STORED if info.filename == "mimetype" else zipfile.ZIP_DEFLATED)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".tmp-{path.name}")       # same extension: pandas picks writers by it
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


#: How the cells of the report's tables are named in German and French (reports.exports).
_CODES = {"outcome": "code", "verdict": "code", "risks": "flags", "family": "code"}


def write_fidelity_report(out: Path, results: Path | None = None, *, language: str | None = None) -> dict[str, Path]:
    """Write fidelity.csv, fidelity.ods and fidelity.html into `out` from its results.jsonl, in
    `language` (de, en or fr; English by default)."""
    from reports.html import fidelity_html

    n = names(language)
    results = results or out / "results.jsonl"
    records = load_records(results)
    table = fidelity_table(records, n.language)
    deductions = deduction_table(records, n.language)
    by_format = verdicts_by_format(table)
    paths = {kind: out / name for kind, name in REPORT_NAMES.items()}
    documents = localised(table, n.language, _CODES)
    _atomic(paths["csv"], lambda p: neutralised(documents).to_csv(p, index=False))

    verdicts = by_format if not by_format.empty else pd.DataFrame({"verdict": []})
    _atomic(paths["ods"], lambda p: write_ods(p, {
        n("Documents"): (documents, False),
        n("Verdicts by format"): (localised(verdicts, n.language, coded_headers=VERDICT_ORDER + ["total"],
                                            coded_index=True), True),
        n("Top deductions"): (localised(top_deductions(deductions), n.language), False),
        n("Deductions"): (localised(deductions, n.language), False)}))
    html = fidelity_html(records, table, deductions, by_format, top_deductions(deductions), top_risks(records),
                         thumbs=out / THUMBS_DIR, language=n.language)
    _atomic(paths["html"], lambda p: p.write_text(html, encoding="utf-8"))
    return paths
