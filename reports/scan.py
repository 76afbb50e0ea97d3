"""Pre-migration risk scan of a folder tree: every file inspected, nothing converted, nothing changed.

Streams: the tree is walked lazily, files are inspected on a few threads with a bounded queue, and
each record is appended to `scan.jsonl` as soon as it is known, so a tree of 100 000 files needs
no more memory than its summary counters until the end, when the tables (CSV, ODS, HTML) are
written from the JSON lines in one pass, in order on disk (write_scan_report): the CSV has every
file, the spreadsheet and the page the first of them, those that need someone first.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from core.localtree import key_of
from reports.exports import csv_cell
from reports.i18n import DEFAULT_LANGUAGE, Names
from reports.risk import DEFAULT_OVERSIZE, RiskReport, inspect

__all__ = ["ScanSummary", "ScanTally", "scan_tree", "write_scan_report", "SCAN_NAMES", "ODS_ROWS", "HTML_ROWS"]

#: Files the scan writes into its output folder.
SCAN_NAMES = {"jsonl": "scan.jsonl", "csv": "scan.csv", "ods": "scan.ods", "html": "scan.html"}


@dataclass
class ScanSummary:
    """Counts of a finished scan, for the command's summary."""

    files: int = 0
    bytes: int = 0
    by_format: Counter = field(default_factory=Counter)          # files per format ("other": not Office)
    bytes_by_format: Counter = field(default_factory=Counter)    # bytes per format
    by_category: Counter = field(default_factory=Counter)
    by_flag: Counter = field(default_factory=Counter)
    errors: int = 0
    seconds: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)


def _walk(src: Path, skip: Path | None) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(src):          # does not follow directory links
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if skip is None or (here / d).resolve() != skip)
        for name in sorted(filenames):
            path = here / name
            if path.is_file() and not path.is_symlink():
                yield path


def _inspect(path: Path, root: Path, oversize: int) -> RiskReport:
    try:
        return inspect(path, root=root, oversize=oversize)
    except OSError as exc:
        size = 0
        try:
            size = path.stat().st_size
        except OSError:
            pass
        return RiskReport(path.relative_to(root).as_posix(), None, None, size, "unreadable",
                          flags=["unreadable"], error=f"cannot read: {exc.strerror or exc}")


def scan_tree(src: Path, out: Path, *, jobs: int = 4, oversize: int = DEFAULT_OVERSIZE,
              on_file: Callable[[RiskReport], None] | None = None, language: str | None = None) -> ScanSummary:
    """Inspect every file under `src`; write scan.jsonl, scan.csv, scan.ods and scan.html into `out`
    (the last three in `language`: de, en or fr, English by default)."""
    started = time.monotonic()
    src, out = Path(src).resolve(), Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary = ScanSummary()
    jsonl = out / SCAN_NAMES["jsonl"]
    partial = out / f".{SCAN_NAMES['jsonl']}.partial"
    with open(partial, "w", encoding="utf-8") as log, ThreadPoolExecutor(max_workers=max(1, jobs),
                                                                         thread_name_prefix="scan") as pool:
        pending: set = set()

        def collect(block: bool) -> None:
            done = wait(pending, return_when=FIRST_COMPLETED).done if block else [f for f in pending if f.done()]
            for future in done:
                pending.discard(future)
                report = future.result()
                record = report.to_json()
                # a name that is not UTF-8 (`latin1-\xe4.txt`) is written with its bytes escaped, losslessly
                record["path"] = key_of(os.fsencode(record["path"]))
                log.write(json.dumps(record, ensure_ascii=False) + "\n")
                summary.files += 1
                summary.bytes += report.size
                summary.by_format[report.format or "other"] += 1
                summary.bytes_by_format[report.format or "other"] += report.size
                summary.by_category[report.category] += 1
                summary.by_flag.update(report.flags)
                summary.errors += report.error is not None
                if on_file:
                    on_file(report)

        for path in _walk(src, out if out.is_relative_to(src) else None):
            pending.add(pool.submit(_inspect, path, src, oversize))
            if len(pending) >= 4 * max(1, jobs):
                collect(block=True)
        while pending:
            collect(block=True)
    os.replace(partial, jsonl)
    summary.paths = {"jsonl": jsonl, **write_scan_report(out, jsonl, source=str(src),
                                                          seconds=time.monotonic() - started, language=language)}
    summary.seconds = time.monotonic() - started
    return summary


def write_scan_report(out: Path, jsonl: Path, *, source: str = "", seconds: float = 0.0,
                      language: str | None = None, ods_rows: int | None = None,
                      html_rows: int | None = None) -> dict[str, Path]:
    """scan.csv, scan.ods and scan.html from scan.jsonl, in `language` (reports.exports says what
    that changes in the tables); CSV cells start no formula.

    scan.csv has a row per file, person first, then review, clean, other, each by path. scan.ods
    lists the first `ods_rows` of them (ODS_ROWS) and scan.html the first `html_rows` (HTML_ROWS)
    of each category that needs someone, each saying how many more scan.csv holds: nobody reads
    300,000 rows, and a spreadsheet of them would cost gigabytes to write. The files are put in
    order on disk (SQLite) and read once; the counts come from that one pass.
    """
    from reports.html import scan_html
    from reports.i18n import names
    from reports.ods import OdsSheet, write_ods_rows

    ods_rows = ODS_ROWS if ods_rows is None else ods_rows
    html_rows = HTML_ROWS if html_rows is None else html_rows
    n = names(language)
    paths = {kind: out / SCAN_NAMES[kind] for kind in ("csv", "ods", "html")}
    tally = ScanTally()
    listed: list[list] = []                                  # the rows of scan.ods' file list
    sections: dict[str, list[dict]] = {"person": [], "review": []}
    cell = _Cells(n)

    def csv_file(p: Path) -> None:
        with open(p, "w", encoding="utf-8", newline="") as f, _ranked(jsonl, out) as records:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow([csv_cell(h) for h in cell.header])
            for record in records:
                tally.add(record)
                row = cell.row(record)
                writer.writerow([csv_cell(v) for v in row])
                if len(listed) < ods_rows:
                    listed.append(row)
                shown = sections.get(record.get("category") or "")
                if shown is not None and len(shown) < html_rows:
                    shown.append(_html_row(record))

    _write(paths["csv"], csv_file)
    note = None
    if tally.files > len(listed):
        note = n("Only the first %(listed)s of %(files)s files are listed here, those that need a person first; "
                 "scan.csv holds all of them.") % {"listed": n.number(len(listed)), "files": n.number(tally.files)}
    sheets = [OdsSheet(n("Files"), cell.header, listed, note)]
    if tally.files:
        flags = [[cell.flag(f), count] for f, count in tally.flags.most_common()]
        sheets += [_by_format_sheet(tally, n), OdsSheet(n("Flags"), cell.headed(["flag", "files"]), flags)]
    _write(paths["ods"], lambda p: write_ods_rows(p, sheets))
    page = scan_html(tally, sections, source=source, seconds=seconds, language=n.language,
                     all_in_ods=tally.files <= ods_rows)
    _write(paths["html"], lambda p: p.write_text(page, encoding="utf-8"))
    return paths


#: Rows of scan.ods' file list and of each scan.html section, at most (write_scan_report).
ODS_ROWS = 10_000
HTML_ROWS = 2_000
_COLUMNS = ["path", "format", "family", "size", "category", "flags", "outcome", "details", "error"]
_RANK = {"person": 0, "review": 1, "clean": 2, "other": 3}
#: Columns whose cells are codes named in words for a reader of another language (reports.exports).
_CODES = {"family": "code", "category": "code", "flags": "flags", "outcome": "code"}


@dataclass
class ScanTally:
    """The counts of a scan's records, added one record at a time (in the order of the reports, so
    that flags with as many files keep the order in which they first appear)."""

    files: int = 0
    bytes: int = 0
    categories: Counter = field(default_factory=Counter)
    formats: Counter = field(default_factory=Counter)            # (format or "other", category): files
    sizes: Counter = field(default_factory=Counter)              # (format or "other", category): bytes
    flags: Counter = field(default_factory=Counter)

    def add(self, record: dict) -> None:
        size = record.get("size") or 0
        fmt = record.get("format") or "other"
        self.files += 1
        self.bytes += size
        self.categories[record.get("category")] += 1
        self.formats[fmt, record.get("category")] += 1
        self.sizes[fmt, record.get("category")] += size
        flags = record.get("flags")
        self.flags.update(flags if isinstance(flags, list) else [])


@contextmanager
def _ranked(jsonl: Path, folder: Path) -> Iterator[Iterator[dict]]:
    """The records of `jsonl` in the reports' order (person, review, clean, other; each by path),
    sorted by SQLite in a temporary file in `folder` that is removed afterwards, so that a million
    records are never all in memory (SQLite's sorter spills to disk beyond its cache)."""
    import sqlite3

    fd, name = tempfile.mkstemp(prefix=".scan-order-", suffix=".sqlite", dir=folder)
    os.close(fd)
    db = sqlite3.connect(name)
    try:
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-16000"):
            db.execute(f"PRAGMA {pragma}")
        db.execute("CREATE TABLE record (rank INTEGER, path TEXT, line TEXT)")

        def keyed() -> Iterator[tuple[int, str, str]]:
            with open(jsonl, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        record = json.loads(line)
                        yield _RANK.get(record.get("category"), 9), record.get("path") or "", line

        db.executemany("INSERT INTO record VALUES (?, ?, ?)", keyed())
        db.commit()
        yield (json.loads(line) for (line,) in db.execute("SELECT line FROM record ORDER BY rank, path, rowid"))
    finally:
        db.close()
        os.unlink(name)


@dataclass
class _Cells:
    """A record as the cells of a row of scan.csv and scan.ods, in the reader's language: flags
    joined by commas, details as `key: values; ...`, codes named in words (reports.exports'
    rules, applied a row at a time)."""

    n: Names

    @property
    def header(self) -> list[str]:
        return self.headed(_COLUMNS)

    def headed(self, keys: list[str]) -> list[str]:
        """Column keys as headers: English keeps the keys (reports.exports)."""
        return list(keys) if self.n.language == DEFAULT_LANGUAGE else [self.n.column(c) for c in keys]

    def flag(self, code: str) -> str:
        """A flag's code as a cell: English keeps the code."""
        return code if self.n.language == DEFAULT_LANGUAGE else self.n.flag(code)

    def row(self, record: dict) -> list:
        flags = record.get("flags")
        details = record.get("details")
        values = {key: record.get(key) for key in _COLUMNS}
        values["flags"] = ", ".join(flags) if isinstance(flags, list) else ""
        values["details"] = "; ".join(f"{k}: {', '.join(v)}" for k, v in details.items()) \
            if isinstance(details, dict) else ""
        if self.n.language != DEFAULT_LANGUAGE:
            for column, kind in _CODES.items():
                value = values[column]
                if isinstance(value, str) and value:
                    values[column] = ", ".join(self.n.flag(f.strip()) for f in value.split(",")) \
                        if kind == "flags" else self.n.code(value)
        return [values[c] for c in _COLUMNS]


def _html_row(record: dict) -> dict:
    details = record.get("details")
    error = record.get("error")
    flags = record.get("flags")
    return {"path": record.get("path"), "format": record.get("format") or "", "kib": (record.get("size") or 0) / 1024,
            "flags": flags if isinstance(flags, list) else [],
            "details": list(details.items()) if isinstance(details, dict) else [],
            "error": error if isinstance(error, str) and error else None}


def _by_format_sheet(tally: ScanTally, n: Names):
    """Files per format (rows) and category (columns), with the files and MiB of each format."""
    import numpy as np

    from reports.ods import OdsSheet

    formats = sorted({fmt for fmt, _ in tally.formats})
    categories = sorted({cat for _, cat in tally.formats if cat is not None})
    header = _Cells(n).headed(["format", *categories, "files", "MiB"])
    if n.language != DEFAULT_LANGUAGE:
        header[1:1 + len(categories)] = [n.code(c) for c in categories]
    size: Counter = Counter()
    for (fmt, _), count in tally.sizes.items():
        size[fmt] += count
    rows = []
    for fmt in formats:
        counts = [tally.formats.get((fmt, cat), 0) for cat in categories]
        # rounded as pandas rounds (numpy), as this sheet was before it was counted a record at a time
        rows.append([fmt, *counts, sum(counts), float(np.round(size[fmt] / 2**20, 1))])
    return OdsSheet(n("By format"), header, rows)


def _write(path: Path, write) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
