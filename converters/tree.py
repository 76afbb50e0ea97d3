"""Convert a folder tree: mirror it under an output folder, one result line per document.

Resumable: `results.jsonl` in the output folder records every document with the sha256 of the
bytes it was converted from; run again on the same folders, a document whose bytes and output
are unchanged is not converted again. Lines are appended as documents finish (a crash loses
nothing already done), and the file is rewritten with one line per document at the end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from core.outcomes import Outcome
from converters.pool import ConverterPool, atomic_copy
from core.digests import sha256_file
from converters.result import ConversionResult

__all__ = ["TreeSummary", "convert_tree", "plan_tree", "load_results", "RESULTS_NAME"]

RESULTS_NAME = "results.jsonl"

_log = logging.getLogger("umstieg.converters")


@dataclass
class TreeSummary:
    """What a tree conversion did, for the summary table and the exit code."""

    total: int = 0
    skipped: int = 0                                   # already converted from the same bytes
    by_outcome: Counter = field(default_factory=Counter)
    by_format: Counter = field(default_factory=Counter)   # (format, outcome) -> count
    input_bytes: int = 0
    seconds: float = 0.0
    results_path: Path | None = None
    by_verdict: Counter = field(default_factory=Counter)  # fidelity verdict (or status) -> count

    @property
    def failed(self) -> int:
        """Documents that need attention: encrypted, unreadable, timed out, crashed, too large or unwritable."""
        return sum(n for outcome, n in self.by_outcome.items() if Outcome(outcome).failed)


@dataclass(frozen=True)
class _Job:
    src: Path
    rel: str          # path relative to the source root, POSIX style: the document's identity
    out_dir: Path
    stem: str


def plan_tree(src: Path, out: Path) -> list[_Job]:
    """Every file under `src` with where its output goes; `out` is left out if it lies inside.

    Output names are `<stem>.<odf ext>`; when two files in one folder share a stem
    (`report.doc`, `report.docx`), each keeps its full name (`report.doc.odt`) so none
    overwrites another.
    """
    src, out = src.resolve(), out.resolve()
    jobs: list[_Job] = []
    for dirpath, dirnames, filenames in os.walk(src):          # does not follow directory links
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() != out)
        files = sorted(f for f in filenames if (here / f).is_file())
        stems = Counter(Path(f).stem for f in files)
        rel_dir = here.relative_to(src)
        for name in files:
            stem = Path(name).stem if stems[Path(name).stem] == 1 else name
            jobs.append(_Job(here / name, (rel_dir / name).as_posix(), out / rel_dir, stem))
    return jobs


def load_results(path: Path) -> dict[str, dict]:
    """The last record per document in an existing results file.

    A torn last line is ignored; a line that parses but is not a usable record (no path, or an
    outcome umstieg does not know, e.g. edited by hand or written by another version) is
    skipped with a warning, so its document counts as not done and is converted again.
    """
    records: dict[str, dict] = {}
    if not path.exists():
        return records
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                _log.warning("%s line %d: not a document record; ignored", path, number)
                continue
            try:
                Outcome(record.get("outcome"))
            except ValueError:
                _log.warning("%s line %d: unknown outcome %r for %s; the document will be converted again",
                             path, number, record.get("outcome"), record["path"])
                records.pop(record["path"], None)        # an earlier line must not count either
                continue
            records[record["path"]] = record
    return records


def _already_done(record: dict | None, sha256: str) -> bool:
    """Whether a record (from load_results: its outcome is known) says the same bytes were converted
    and the output is still there."""
    if not record:
        return False
    output = record.get("output")
    return bool(Outcome(record["outcome"]).ok and record.get("sha256") == sha256 and isinstance(output, str)
                and output and Path(output).exists())


def convert_tree(pool: ConverterPool, src: Path, out: Path, *, copy_unsupported: bool = False,
                 on_start: Callable[[int], None] | None = None,
                 on_result: Callable[[ConversionResult, bool], None] | None = None,
                 assess: Callable[[ConversionResult], dict | None] | None = None) -> TreeSummary:
    """Convert every document under `src` into the mirrored tree under `out`.

    `on_start(total)` is called once the tree is listed; `on_result(result, skipped)` once per
    document. Unsupported files are copied unchanged when `copy_unsupported` is set.

    `assess(result)`, when given, measures each finished document (the fidelity check, which
    the command passes in: converters never import reports); its answer is stored under the key
    `fidelity` of the document's line. It runs on as many threads as the pool has workers, beside
    the conversions; documents converted by an earlier run without it are measured too.
    """
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    results_path = out / RESULTS_NAME
    previous = load_results(results_path)
    jobs = plan_tree(src, out)
    summary = TreeSummary(total=len(jobs), results_path=results_path)
    if on_start:
        on_start(len(jobs))
    latest: dict[str, dict] = dict(previous)
    by_source: dict[str, _Job] = {str(j.src): j for j in jobs}

    def record(result: ConversionResult, job: _Job, skipped: bool, fidelity: dict | None = None) -> None:
        summary.by_outcome[result.outcome.value] += 1
        summary.by_format[(result.format or "other", result.outcome.value)] += 1
        summary.input_bytes += result.input_bytes or 0
        if fidelity:
            summary.by_verdict[fidelity.get("verdict") or fidelity.get("status") or "unknown"] += 1
        if on_result:
            on_result(result, skipped)

    assessor = ThreadPoolExecutor(max_workers=max(1, pool.size), thread_name_prefix="fidelity") if assess else None
    waiting: dict[Future, tuple] = {}

    def measured(result: ConversionResult) -> dict | None:
        try:
            return assess(result)
        except Exception as exc:  # noqa: BLE001 - a failed measurement must not stop the batch
            return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300], "score": None,
                    "verdict": None, "deductions": []}

    def finish(line: dict, result: ConversionResult, job: _Job, skipped: bool, fidelity: dict | None) -> None:
        if fidelity is not None:
            line["fidelity"] = fidelity
        if not skipped or fidelity is not None:
            log.write(json.dumps(line, ensure_ascii=False) + "\n")
            log.flush()
        latest[job.rel] = line
        record(result, job, skipped, line.get("fidelity"))

    def drain(block: bool) -> None:
        if not waiting:
            return
        done = wait(waiting, return_when=FIRST_COMPLETED).done if block else [f for f in waiting if f.done()]
        for future in done:
            line, result, job, skipped = waiting.pop(future)
            finish(line, result, job, skipped, future.result())

    def settle(line: dict, result: ConversionResult, job: _Job, skipped: bool) -> None:
        """Record a finished document, after measuring it when an assessor is set."""
        if assessor is None or (skipped and line.get("fidelity")):
            finish(line, result, job, skipped, None)
            return
        waiting[assessor.submit(measured, result)] = (line, result, job, skipped)
        while len(waiting) > 4 * max(1, pool.size):      # back-pressure: do not run ahead of fidelity
            drain(block=True)
        drain(block=False)

    def todo() -> Iterator[tuple]:
        # Largest first: a big document started last would leave the other workers idle
        # while it finishes (longest-processing-time-first scheduling).
        for job in sorted(jobs, key=_size, reverse=True):
            try:
                digest = sha256_file(job.src)
            except OSError:
                digest = None                  # the pool reports why it cannot read the file
            prior = previous.get(job.rel)
            if digest and _already_done(prior, digest):
                summary.skipped += 1
                settle(dict(prior), _from_record(prior, job), job, True)
                continue
            yield (job.src, job.out_dir, job.stem, digest)

    with open(results_path, "a", encoding="utf-8") as log:
        try:
            for result in pool.convert_many(todo()):
                job = by_source[result.source]
                if result.outcome is Outcome.UNSUPPORTED and copy_unsupported:
                    target = job.out_dir / job.src.name
                    atomic_copy(job.src, target)
                    result.output, result.output_bytes = str(target), target.stat().st_size
                    result.message += "; copied unchanged"
                line = {"path": job.rel, **result.to_json(), "finished": time.time()}
                settle(line, result, job, False)
            while waiting:
                drain(block=True)
        finally:
            if assessor is not None:
                assessor.shutdown(wait=not waiting, cancel_futures=True)

    # one line per document: rewrite atomically in source order
    order = {j.rel: i for i, j in enumerate(jobs)}
    tmp = results_path.with_name(f".{RESULTS_NAME}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rel in sorted(latest, key=lambda r: (order.get(r, len(order)), r)):
            f.write(json.dumps(latest[rel], ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, results_path)
    summary.seconds = time.monotonic() - started
    return summary


def _remove_stale_staging(out: Path) -> None:
    """Remove staging folders a killed run left behind (the pool names them `.umstieg-<id>`).

    Only one run may write to an output folder at a time: results.jsonl is its record.
    """
    for staging in out.rglob(".umstieg-*"):
        if staging.is_dir() and not staging.is_symlink():
            shutil.rmtree(staging, ignore_errors=True)


def _size(job: _Job) -> int:
    try:
        return job.src.stat().st_size
    except OSError:
        return 0


def _from_record(record: dict, job: _Job) -> ConversionResult:
    """A result standing for a document converted by an earlier run."""
    return ConversionResult(source=str(job.src), outcome=Outcome(record["outcome"]),
                            message="already converted from the same bytes by an earlier run",
                            output=record.get("output"), format=record.get("format"),
                            target=record.get("target"), input_bytes=record.get("input_bytes"),
                            output_bytes=record.get("output_bytes"), sha256=record.get("sha256"),
                            import_filter=record.get("import_filter"), repaired=bool(record.get("repaired")),
                            worker=record.get("worker"))
