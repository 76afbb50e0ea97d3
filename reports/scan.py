"""Pre-migration risk scan of a folder tree: every file inspected, nothing converted, nothing changed.

Streams: the tree is walked lazily, files are inspected on a few threads with a bounded queue, and
each record is appended to `scan.jsonl` as soon as it is known, so a tree of 100 000 files needs
no more memory than its summary counters until the end, when the tables (CSV, ODS, HTML) are
written from the JSON lines.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.localtree import key_of
from reports.batch import write_ods
from reports.risk import DEFAULT_OVERSIZE, RiskReport, inspect

__all__ = ["ScanSummary", "scan_tree", "write_scan_report", "SCAN_NAMES"]

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
                      language: str | None = None) -> dict[str, Path]:
    """scan.csv, scan.ods and scan.html from scan.jsonl: one row per file, person first, then review,
    in `language` (reports.exports says what that changes in the tables); CSV cells start no formula."""
    from reports.exports import localised, neutralised
    from reports.html import scan_html
    from reports.i18n import names

    n = names(language)

    with open(jsonl, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    table = pd.DataFrame(rows, columns=["path", "format", "family", "size", "category", "flags", "outcome",
                                        "details", "error"])
    if not table.empty:
        rank = {"person": 0, "review": 1, "clean": 2, "other": 3}
        table["_rank"] = table["category"].map(lambda c: rank.get(c, 9))
        table = table.sort_values(["_rank", "path"]).drop(columns="_rank").reset_index(drop=True)
        table["flags"] = table["flags"].map(lambda v: v if isinstance(v, list) else [])
    flat = table.copy()
    flat["flags"] = flat["flags"].map(", ".join)
    flat["details"] = flat["details"].map(
        lambda d: "; ".join(f"{k}: {', '.join(v)}" for k, v in d.items()) if isinstance(d, dict) else "")
    paths = {kind: out / SCAN_NAMES[kind] for kind in ("csv", "ods", "html")}
    files = localised(flat, n.language, {"family": "code", "category": "code", "flags": "flags", "outcome": "code"})
    _write(paths["csv"], lambda p: neutralised(files).to_csv(p, index=False))

    def ods(p: Path) -> None:
        sheets = {n("Files"): (files, False)}
        if not table.empty:
            by_format = pd.crosstab(table["format"].fillna("other"), table["category"])
            by_format["files"] = by_format.sum(axis=1)
            by_format["MiB"] = (table.groupby(table["format"].fillna("other"))["size"].sum() / 2**20).round(1)
            flags = Counter(f for fl in table["flags"] for f in fl)
            sheets[n("By format")] = (localised(by_format, n.language, coded_headers=("person", "review", "clean",
                                                                                       "other")), True)
            sheets[n("Flags")] = (localised(pd.DataFrame(flags.most_common(), columns=["flag", "files"]), n.language,
                                            {"flag": "flags"}), False)
        write_ods(p, sheets)

    _write(paths["ods"], ods)
    _write(paths["html"], lambda p: p.write_text(scan_html(table, source=source, seconds=seconds, language=n.language),
                                                 encoding="utf-8"))
    return paths


def _write(path: Path, write) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
