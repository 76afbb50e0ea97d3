"""Convert a folder tree: mirror it under an output folder, one result line per document.

Resumable: `results.jsonl` in the output folder records every document with the sha256 of the
bytes it was converted from; run again on the same folders, a document whose bytes and output
are unchanged is not converted again. Lines are appended as documents finish (a crash loses
nothing already done), and the file is rewritten with one line per document at the end.

The source tree may be written by others while it is converted (core.localtree): it is listed
through directory handles without following a link, and each document is read once, through a
handle opened below the tree one component at a time with `O_NOFOLLOW` and checked to be the
regular file that was listed, into a private staging copy that LibreOffice, the fidelity check
and `--copy-unsupported` work on. A file swapped for a link (to `/etc/passwd`) after listing is
`changed_at_source` and nothing of it is read; links, pipes, sockets and devices are `skipped`
with the reason; a folder that cannot be listed is `unreadable`. Every entry gets a line. Names of
any bytes keep a lossless `path` (`latin1-\\xe4.txt`) and land under a decoded name (`latin1-ä.odt`,
`"renamed": "undecodable_name"`).
"""

from __future__ import annotations

import errno
import hashlib
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

from core.errors import ItemError
from core.localtree import ChangedAtSource, Entry, is_plain, key_of, open_file, open_root, target_name, walk
from core.outcomes import Outcome
from converters.pool import ConverterPool, atomic_copy
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
    src: str          # the source file as people read it (SRC/<rel>): for results and messages
    rel: str          # path below SRC, lossless (core.localtree.key_of): the document's identity
    out_dir: Path
    stem: str
    raw: bytes = b""  # path below SRC in the file system's bytes
    name: str = ""    # the file's name at the output (decoded when its bytes are not UTF-8)
    identity: str | None = None   # device:inode as listed
    size: int = 0


def plan_tree(src: Path, out: Path) -> tuple[list[_Job], list[Entry]]:
    """Every file under `src` with where its output goes, and every other entry (links, pipes,
    sockets, devices, folders that could not be listed); `out` is left out if it lies inside.

    Output names are `<stem>.<odf ext>`; when two files in one folder share a stem
    (`report.doc`, `report.docx`), each keeps its full name (`report.doc.odt`) so none
    overwrites another. A decoded name that is another file's name gets ` (2)`.
    """
    out = out.resolve()
    try:
        st = os.stat(out)
        exclude = {f"{st.st_dev}:{st.st_ino}"}
    except OSError:
        exclude = set()
    top = open_root(src)
    try:
        entries = list(walk(top, exclude=exclude))
    finally:
        os.close(top)
    files = [e for e in entries if e.kind == "file"]
    others = [e for e in entries if e.kind != "file"]
    shown = key_of(os.fsencode(Path(src).resolve()))
    by_folder: dict[bytes, list[Entry]] = {}
    for entry in files:
        by_folder.setdefault(entry.raw.rpartition(b"/")[0], []).append(entry)
    jobs: list[_Job] = []
    for folder, members in by_folder.items():
        out_dir = out.joinpath(*[target_name(p) for p in folder.split(b"/") if p]) if folder else out
        names: dict[bytes, str] = {}
        taken: set[str] = set()
        # plain UTF-8 names claim first: a real `latin1-ä.txt` keeps its name beside a decoded one
        for entry in sorted(members, key=lambda e: (not is_plain(e.raw), e.raw)):
            name = target_name(entry.raw.rpartition(b"/")[2])
            n = 1
            candidate = name
            while candidate in taken:
                n += 1
                stem, dot, ext = name.rpartition(".")
                candidate = f"{stem} ({n}).{ext}" if dot and stem else f"{name} ({n})"
            taken.add(candidate)
            names[entry.raw] = candidate
        stems = Counter(Path(n).stem for n in names.values())
        for entry in members:
            name = names[entry.raw]
            stem = Path(name).stem if stems[Path(name).stem] == 1 else name
            jobs.append(_Job(f"{shown}/{entry.key}", entry.key, out_dir, stem, entry.raw, name, entry.identity,
                             entry.size or 0))
    return jobs, others


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
                Outcome(str(record.get("outcome")))
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
    jobs, others = plan_tree(src, out)
    summary = TreeSummary(total=len(jobs) + len(others), results_path=results_path)
    if on_start:
        on_start(summary.total)
    latest: dict[str, dict] = dict(previous)
    by_staged: dict[str, _Job] = {}
    staging = out / f"{_STAGING_PREFIX}source-{os.getpid()}"       # removed at the end, or by the next run
    shown = key_of(os.fsencode(Path(src).resolve()))

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
        if assess is None:
            return None
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
        shutil.rmtree(staging / str(id(job)), ignore_errors=True)     # its staged copy is no longer needed
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
        if assessor is None or (skipped and line.get("fidelity")) or not result.source.startswith(str(staging)):
            finish(line, result, job, skipped, None)
            return
        waiting[assessor.submit(measured, result)] = (line, result, job, skipped)
        while len(waiting) > 4 * max(1, pool.size):      # back-pressure: do not run ahead of fidelity
            drain(block=True)
        drain(block=False)

    def line_of(job: _Job, result: ConversionResult) -> dict:
        line = {"path": job.rel, **result.to_json(), "source": job.src, "finished": time.time()}
        if not is_plain(job.raw):
            line.update(name=job.name, renamed="undecodable_name")
        return line

    def unread(job: _Job, outcome: Outcome, message: str) -> None:
        """A document that was not read: it gets its line like any other."""
        result = ConversionResult(source=job.src, outcome=outcome, message=message)
        settle(line_of(job, result), result, job, False)

    def todo() -> Iterator[tuple]:
        # Largest first: a big document started last would leave the other workers idle
        # while it finishes (longest-processing-time-first scheduling).
        top = open_root(src)
        try:
            for job in sorted(jobs, key=lambda j: j.size, reverse=True):
                prior = previous.get(job.rel)
                try:
                    staged, digest, done = _stage(top, job, staging / str(id(job)), prior,
                                                  measure=assessor is not None and not (prior or {}).get("fidelity"))
                except ChangedAtSource as exc:
                    unread(job, Outcome.CHANGED, str(exc))
                    continue
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise                      # our own disk: the staging copy cannot be written
                    unread(job, Outcome.UNREADABLE, f"cannot read {job.rel} at the source: {exc.strerror or exc}")
                    continue
                except ItemError as exc:
                    unread(job, Outcome.UNREADABLE, str(exc))
                    continue
                if done and prior is not None:     # (a document is only done by its prior record)
                    summary.skipped += 1
                    settle(dict(prior), _from_record(prior, job, staged), job, True)
                    continue
                by_staged[str(staged)] = job
                yield (staged, job.out_dir, job.stem, digest)
        finally:
            os.close(top)

    with open(results_path, "a", encoding="utf-8") as log:
        try:
            for entry in others:                    # links, pipes, sockets, devices, unlisted folders
                settle(*_not_converted(entry, shown), False)
            for result in pool.convert_many(todo()):
                job = by_staged.pop(result.source)
                if result.outcome is Outcome.UNSUPPORTED and copy_unsupported:
                    target = job.out_dir / job.name
                    atomic_copy(Path(result.source), target)        # the staged copy: what was checked
                    result.output, result.output_bytes = str(target), target.stat().st_size
                    result.message += "; copied unchanged"
                settle(line_of(job, result), result, job, False)
            while waiting:
                drain(block=True)
        finally:
            if assessor is not None:
                assessor.shutdown(wait=not waiting, cancel_futures=True)
            shutil.rmtree(staging, ignore_errors=True)

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


#: Staging folders in OUT start so (the pool's own too): a killed run's are removed by the next.
_STAGING_PREFIX = ".umstieg-"
_BLOCK = 1 << 20


def _stage(top: int, job: _Job, where: Path, prior: dict | None, measure: bool) -> tuple[Path | None, str, bool]:
    """(staged copy, sha256, already converted): the document read once through a checked handle
    (core.localtree.open_file). Its bytes are hashed first; a document converted from the same
    bytes before is not copied unless it is still to be measured. The copy keeps the source's
    modification time, which `--copy-unsupported` passes on."""
    with open_file(top, job.raw, job.identity) as fin:
        st = os.fstat(fin.fileno())
        digest = hashlib.sha256()
        for block in iter(lambda: fin.read(_BLOCK), b""):
            digest.update(block)
        done = _already_done(prior, digest.hexdigest())
        if done and not measure:
            return None, digest.hexdigest(), True
        fin.seek(0)
        where.mkdir(parents=True, exist_ok=True)
        staged = where / job.name
        copied = hashlib.sha256()
        with open(staged, "wb") as fout:
            for block in iter(lambda: fin.read(_BLOCK), b""):
                copied.update(block)
                fout.write(block)
    os.utime(staged, ns=(st.st_atime_ns, st.st_mtime_ns))
    return staged, (digest if done else copied).hexdigest(), done


def _not_converted(entry: Entry, shown: str) -> tuple[dict, ConversionResult, _Job]:
    """The line, result and job of an entry that is not a file with data, or a folder that could
    not be listed: nothing of it is read, and the results say why."""
    rel = entry.key + ("/" if entry.kind == "unlisted" else "")
    job = _Job(f"{shown}/{rel}", rel, Path(), "", entry.raw, target_name(entry.raw.rpartition(b"/")[2]))
    if entry.kind == "unlisted":
        result = ConversionResult(source=job.src, outcome=Outcome.UNREADABLE,
                                  message=f"the folder could not be listed: {entry.error}; nothing in it was read")
        reason = "unlisted_folder"
    else:
        reason, why = entry.why_skipped()
        result = ConversionResult(source=job.src, outcome=Outcome.SKIPPED, message=why)
    line = {"path": rel, **result.to_json(), "reason": reason, "finished": time.time()}
    if not is_plain(entry.raw):
        line.update(name=target_name(entry.raw), renamed="undecodable_name")
    return line, result, job


def _from_record(record: dict, job: _Job, staged: Path | None = None) -> ConversionResult:
    """A result standing for a document converted by an earlier run (`staged`: its copy, to measure)."""
    return ConversionResult(source=str(staged) if staged else job.src, outcome=Outcome(record["outcome"]),
                            message="already converted from the same bytes by an earlier run",
                            output=record.get("output"), format=record.get("format"),
                            target=record.get("target"), input_bytes=record.get("input_bytes"),
                            output_bytes=record.get("output_bytes"), sha256=record.get("sha256"),
                            import_filter=record.get("import_filter"), repaired=bool(record.get("repaired")),
                            worker=record.get("worker"))
