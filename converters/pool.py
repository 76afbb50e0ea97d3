"""A supervised pool of LibreOffice workers that turns Office files into ODF.

One LibreOffice converts one document at a time; throughput comes from several isolated
workers, each with its own profile and ports. The pool:
- sniffs every file first, so encrypted, empty and non-Office files cost no LibreOffice call;
- never refuses what LibreOffice reads: a document its sniffed import filter does not load is tried
  again with LibreOffice's package repair (ZIP packages) and then with LibreOffice's own type
  detection; damaged files sniffing found are given to LibreOffice's repair before they are called
  unreadable (see `_loads`);
- bounds every conversion by a timeout, kills a worker that hangs or dies, starts a fresh one,
  and retries the document once before recording `timeout` or `crashed`;
- recycles each local worker after a number of conversions, because LibreOffice's memory only grows;
- writes every output atomically (temporary name, fsync, rename) and checks it is a valid ODF package;
- leaves no LibreOffice process behind: on close, at exit, on SIGTERM and Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from core.digests import sha256_file
from core.errors import ConfigError, FatalError, ItemError
from core.outcomes import Outcome
from core.settings import ConversionSettings
from converters.formats import DETECT, OfficeFormat
from converters.odf import check_package
from converters.result import ConversionResult
from converters.sniff import Sniffed, sniff
from converters.workers import (LOAD_REPORT, ConversionRefused, LocalWorker, RemoteWorkerHandle, Worker, WorkerDied,
                                WorkerOutOfMemory, WorkerTimeout, find_worker_python, kill_all_workers)

__all__ = ["ConverterPool", "atomic_copy", "settled_by_sniffing"]

log = logging.getLogger("umstieg.converters")

atexit.register(kill_all_workers)


class _OutputFailed(Exception):
    """The output (or a temporary file beside it) could not be written: the document is not at fault."""

    def __init__(self, dst: Path, error: OSError) -> None:
        super().__init__(f"{dst}: {_os_reason(error)}")
        self.dst, self.error = dst, error


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextlib.contextmanager
def _writing(dst: Path) -> Iterator[None]:
    """Turn an OSError while writing the output `dst` into _OutputFailed."""
    try:
        yield
    except OSError as exc:
        raise _OutputFailed(dst, exc) from exc


#: The outcome of a document whose output cannot be written (read-only or full output folder, a
#: folder in the way of the output name): failed, tried again on the next run, and the migration
#: flows retry the item instead of delivering the original as if the document were broken.
_OUTPUT_FAILED = Outcome.UNWRITABLE


def _partial_path(dst: Path) -> Path:
    """A temporary name beside `dst`, same extension (LibreOffice picks its export type by it)."""
    return dst.with_name(f".{uuid.uuid4().hex[:12]}.umstieg-partial{dst.suffix}")


def _staging_dir(dst: Path) -> Path:
    """A private, hidden folder beside `dst` for one LibreOffice attempt.

    LibreOffice writes its own temporary files next to the file it stores; a worker killed
    mid-export leaves them behind. Storing into a folder of its own lets the pool remove all
    of it, whatever happened, while the final rename stays on one file system.
    """
    staging = dst.parent / f".umstieg-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    return staging


def _publish(tmp: Path, dst: Path) -> None:
    """Make a finished temporary file visible under its final name, durably and atomically."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dst)
    fd = os.open(dst.parent, os.O_RDONLY)     # make the rename itself durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _source_failed(exc: OSError, src: Path) -> bool:
    """Whether an OSError while copying `src` came from the source (vanished, unreadable)."""
    if exc.filename is not None and os.fsdecode(exc.filename) == str(src):
        return True
    return not src.exists()


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` so that `dst` is either absent or complete, never half-written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_path(dst)
    try:
        shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)
        _publish(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


class ConverterPool:
    """Converts Office documents to ODF on N supervised LibreOffice workers.

    Use as a context manager; `convert()` is safe to call from many threads at once, and
    `convert_many()` keeps every worker busy.
    """

    def __init__(self, settings: ConversionSettings | None = None) -> None:
        self.settings = settings or ConversionSettings()
        if self.settings.workers == 0 and not self.settings.remote:
            raise ConfigError("the converter pool needs at least one worker: set workers >= 1 "
                              "or give remote workers (host:port)")
        self._idle: queue.Queue[Worker] = queue.Queue()
        self._workers: dict[str, Worker] = {}        # slot name -> current worker
        self._generation: dict[int, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._owned_runtime: tempfile.TemporaryDirectory | None = None
        self._runtime: Path | None = None
        self._python: str | None = None
        self._spares: dict[int, tuple[LocalWorker, Future]] = {}   # slot -> successor being started
        self._maintenance = ThreadPoolExecutor(max_workers=max(1, self.settings.workers),
                                               thread_name_prefix="recycle")
        self._dropped: list[str] = []      # why remote workers were given up, for error messages
        self.restarts = 0          # workers replaced after a crash or timeout
        self.recycled = 0          # workers replaced after `recycle_after` conversions
        self.peak_rss = 0          # highest LibreOffice RSS seen on one worker, in bytes

    # ----------------------------------------------------------------- life cycle
    def start(self) -> "ConverterPool":
        """Start every local worker (in parallel) and check every remote one; idempotent."""
        if self._runtime is not None:
            return self
        if self.settings.workers and not shutil.which(self.settings.soffice):
            raise ConfigError(f"LibreOffice ({self.settings.soffice}) is not installed or not on PATH: "
                              "run bin/setup, or set UMSTIEG_SOFFICE to its path")
        # A folder of this pool's own for profiles and logs: several pools (Dask workers, two
        # commands) may share one runtime_dir, and two LibreOffices must never share a profile.
        if self.settings.runtime_dir:
            Path(self.settings.runtime_dir).mkdir(parents=True, exist_ok=True)
        # ignore_cleanup_errors: a killed LibreOffice may still be writing into its profile
        self._owned_runtime = tempfile.TemporaryDirectory(prefix=f"pool-{os.getpid()}-",
                                                          dir=self.settings.runtime_dir,
                                                          ignore_cleanup_errors=True)
        self._runtime = Path(self._owned_runtime.name)
        if self.settings.workers:
            self._python = find_worker_python()
        _install_signal_handlers()
        starters: list[Callable[[], Worker]] = [partial(self._new_local, s)
                                                for s in range(1, self.settings.workers + 1)]
        starters += [partial(RemoteWorkerHandle, r.host, r.port, cooldown=self.settings.remote_cooldown)
                     for r in self.settings.remote]
        with ThreadPoolExecutor(max_workers=max(1, len(starters))) as ex:
            futures = [ex.submit(self._start_one, make) for make in starters]
            errors = [f.exception() for f in futures if f.exception()]
        if errors and self._idle.qsize() == 0:
            self.close()
            raise FatalError(f"no LibreOffice worker could start: {errors[0]}")
        for err in errors:
            log.warning("a worker did not start and is left out: %s", err)
        return self

    def _new_local(self, slot: int) -> LocalWorker:
        self._generation[slot] = self._generation.get(slot, 0) + 1
        if self._runtime is None or self._python is None:
            raise WorkerDied(f"worker slot w{slot} cannot start: the pool is not started")
        return LocalWorker(slot, self._generation[slot], self._runtime, self.settings.soffice,
                           self._python, self.settings.startup_timeout)

    def _start_one(self, make: Callable[[], Worker]) -> Worker:
        worker = make()
        worker.start()
        with self._lock:
            self._workers[self._slot_name(worker)] = worker
        self._idle.put(worker)
        return worker

    @staticmethod
    def _slot_name(worker: Worker) -> str:
        return f"w{worker.slot}" if isinstance(worker, LocalWorker) else worker.id

    def close(self) -> None:
        """Stop every local worker and remove their profiles."""
        self._closed = True
        with self._lock:
            workers = list(self._workers.values()) + [spare for spare, _ in self._spares.values()]
            self._workers.clear()
            self._spares.clear()
        self._maintenance.shutdown(wait=False, cancel_futures=True)
        for w in workers:
            if isinstance(w, LocalWorker):
                w.kill()
        if self._owned_runtime is not None:
            self._owned_runtime.cleanup()
            self._owned_runtime = None

    def __enter__(self) -> "ConverterPool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def size(self) -> int:
        """How many workers the pool holds now."""
        with self._lock:
            return len(self._workers)

    def workers(self) -> list[Worker]:
        """The current workers (a snapshot)."""
        with self._lock:
            return list(self._workers.values())

    # ----------------------------------------------------------------- converting
    def convert(self, src: Path, dst_dir: Path, stem: str | None = None,
                sha256: str | None = None) -> ConversionResult:
        """Convert one file into `dst_dir` (as `<stem>.<odf ext>`) and say what became of it.

        Never raises for a bad document: every problem with the input is an outcome, and so is
        an output that cannot be written. Raises only when the pool itself cannot work (closed,
        no worker can start, every worker gone).
        """
        started = time.monotonic()
        src = Path(src)
        stem = stem if stem is not None else src.stem
        result = ConversionResult(source=str(src), outcome=Outcome.UNREADABLE, message="")
        try:
            result.input_bytes = src.stat().st_size
            sniffed = sniff(src)
            fmt = sniffed.format
            result.format = fmt.name if fmt else None
            if (settled := _settled(sniffed)) is not None:
                result.outcome, result.message = settled
            else:
                assert fmt is not None               # (a file of no format we convert is settled)
                result.target = fmt.target
                result.sha256 = sha256 or sha256_file(src)
                dst = Path(dst_dir) / f"{stem}.{fmt.target}"
                if fmt.is_odf and not sniffed.libreoffice_decides:
                    problems = self._pass_through(src, dst, result)
                    if problems:        # LibreOffice may still read (and repair) the package
                        self._convert_office(src, dst, fmt, result, sniffed, problems="; ".join(problems[:3]))
                else:
                    self._convert_office(src, dst, fmt, result, sniffed)
        except _OutputFailed as exc:
            result.outcome, result.output, result.output_bytes = _OUTPUT_FAILED, None, None
            result.message = (f"could not write the output {exc}; the document itself is not at fault: "
                              "convert it again once the output folder is writable")
        except OSError as exc:          # the source vanished or cannot be read (sniffing, hashing, copying)
            result.outcome, result.output, result.output_bytes = Outcome.UNREADABLE, None, None
            result.message = f"cannot read the file: {_os_reason(exc)}"
        result.seconds = time.monotonic() - started
        return result

    def convert_many(self, jobs: Iterable[tuple]) -> Iterator[ConversionResult]:
        """Convert jobs (the arguments of `convert`) with every worker busy; yields results as they finish.

        Interrupted (Ctrl-C, SIGTERM), it closes the pool at once rather than wait for the
        documents in flight: nothing is half-written, and those documents simply have no result.
        """
        # Two threads per worker: while one sniffs, hashes, checks and publishes a document, the
        # other already has the worker converting the next; LibreOffice never waits for Python.
        threads = 2 * max(1, self.size)
        ex = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="convert")
        pending: set = set()
        wait_for_flight = True
        try:
            for job in jobs:
                pending.add(ex.submit(self.convert, *job))
                while len(pending) >= threads * 2:        # bounded look-ahead
                    yield from self._collect(pending)
            while pending:
                yield from self._collect(pending)
        except (KeyboardInterrupt, SystemExit):
            self.close()
            raise
        except GeneratorExit:
            # the caller stopped reading: interrupted while it handled a result (Ctrl-C, SIGTERM
            # land there too), or done. The documents in flight are not waited for (a hung one
            # would hold the exit for the whole timeout): closing the pool ends them, else they finish.
            wait_for_flight = False
            raise
        finally:
            ex.shutdown(wait=wait_for_flight, cancel_futures=True)

    @staticmethod
    def _collect(pending: set) -> Iterator[ConversionResult]:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            pending.discard(future)
            yield future.result()

    def _pass_through(self, src: Path, dst: Path, result: ConversionResult) -> list[str]:
        """Copy a valid ODF package unchanged; the problems of an invalid one (nothing copied)."""
        problems = check_package(src)
        if problems:
            return problems
        try:
            atomic_copy(src, dst)
        except OSError as exc:
            if _source_failed(exc, src):
                raise
            raise _OutputFailed(dst, exc) from exc
        with _writing(dst):
            result.output_bytes = dst.stat().st_size
        result.outcome = Outcome.PASSTHROUGH
        result.output = str(dst)
        result.message = "already OpenDocument: copied unchanged after a validity check"
        return []

    def _convert_office(self, src: Path, dst: Path, fmt: OfficeFormat, result: ConversionResult,
                        sniffed: Sniffed, problems: str | None = None) -> None:
        """Convert on a worker, trying each of `_loads` in turn while LibreOffice refuses the document;
        after a timeout or crash, retry once on the worker started to replace it."""
        with _writing(dst):
            dst.parent.mkdir(parents=True, exist_ok=True)
        loads = _loads(fmt, sniffed, damaged=problems is not None)
        load = loads.pop(0)
        refusals: list[str] = []           # why LibreOffice refused each load tried so far
        failures: list[Outcome] = []
        failed_on: list[str] = []          # worker of each attempt that timed out or crashed
        tried: list[str] = []              # worker of each attempt, "the freshly started …" for a retry on one
        fresh: Worker | None = None        # the replacement of the worker that just failed, kept for the retry
        while True:
            try:
                with _writing(dst):
                    staging = _staging_dir(dst)     # before taking a worker: a failure here must not lose one
            except _OutputFailed:
                if fresh is not None:
                    self._release(fresh)
                raise
            try:
                worker = fresh if fresh is not None else self._acquire()
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            tried.append(f"the freshly started {worker.id}" if fresh is not None else worker.id)
            fresh = None
            tmp = staging / f"document.{fmt.target}"
            result.attempts += 1
            result.worker = worker.id
            try:
                worker.convert(src, tmp, load.import_filter, fmt.export_filter, self.settings.timeout,
                               memory_limit=self._memory_limit, load_options=load.options)
            except WorkerOutOfMemory as exc:
                # not tried again: the same document grows the next LibreOffice the same way
                result.history.append(f"{worker.id}: too large ({exc})")
                self._replace(worker, "memory", keep=False)
                result.outcome = Outcome.TOO_LARGE
                result.message = (f"{exc} while converting on {worker.id}: stopped to protect the machine; "
                                  "raise conversion memory_limit_mb (UMSTIEG_MEMORY_LIMIT_MB) on a machine "
                                  "with the memory for it and convert it again")
                return
            except WorkerTimeout as exc:
                failed_on.append(tried[-1])
                failures.append(Outcome.TIMEOUT)
                result.history.append(f"{worker.id}: timeout ({exc})")
                fresh = self._replace(worker, "timeout", keep=len(failures) < 2)
            except WorkerDied as exc:
                failed_on.append(tried[-1])
                failures.append(Outcome.CRASHED)
                result.history.append(f"{worker.id}: crashed ({exc})")
                fresh = self._replace(worker, "crash", keep=len(failures) < 2)
            except ConversionRefused as exc:
                self._release(worker)
                refusals.append(str(exc))
                result.history.append(f"{worker.id}: {load.describe(fmt)} refused ({exc})")
                if loads:
                    load = loads.pop(0)
                    continue
                result.outcome = sniffed.outcome if sniffed.outcome is not None else Outcome.UNREADABLE
                result.message = _refusal_message(fmt, sniffed, result.outcome, refusals, problems)
                return
            else:
                self._release(worker)
                with _writing(dst):
                    written = check_package(tmp) if tmp.exists() else ["LibreOffice wrote nothing"]
                    if written:
                        result.outcome = Outcome.UNREADABLE
                        result.message = ("LibreOffice read the file but did not write a valid OpenDocument "
                                          "package (" + "; ".join(written[:3]) + ")" + _ADVICE[Outcome.UNREADABLE])
                        return
                    used = _load_report(tmp)
                    _publish(tmp, dst)
                    result.output_bytes = dst.stat().st_size
                result.outcome = Outcome.CONVERTED
                result.output = str(dst)
                result.import_filter = used.get("filter") or load.import_filter or None
                result.repaired = load.repair and (sniffed.repair or bool(refusals) or problems is not None)
                result.message = f"{fmt.description} converted to .{fmt.target}"
                if load.import_filter == DETECT:
                    result.message += (f", read as LibreOffice recognised it ({result.import_filter})"
                                       if result.import_filter else ", read as LibreOffice recognised it")
                if result.repaired:
                    result.message += "; the file was damaged and LibreOffice repaired it: check the result"
                if failures:
                    what = "timeout" if failures[-1] is Outcome.TIMEOUT else "crash"
                    result.message += f" on {tried[-1]} after a {what} on {failed_on[0]}"
                return
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            if len(failures) >= 2:
                result.outcome = failures[-1]
                what = "did not finish within" if result.outcome is Outcome.TIMEOUT else "crashed LibreOffice"
                limit = f" {self.settings.timeout:g} s" if result.outcome is Outcome.TIMEOUT else ""
                result.message = f"{what}{limit} twice: on {failed_on[0]}, then on {failed_on[1]}"
                return

    def render_pdf(self, src: Path, dst: Path, fmt: OfficeFormat, pages: int | None = None) -> None:
        """Render a document (Office or ODF, of format `fmt`) to the PDF `dst` on a worker.

        Used by the visual fidelity check, which compares page images of a source and its ODF
        output. Supervised like a conversion: a hang or a crash kills and replaces the worker, but
        the render is not tried again (a render is optional, and what crashes once crashes
        again). `pages` limits the export to the first pages (a large workbook would otherwise
        print thousands). Raises ItemError when it cannot be rendered.
        """
        family = fmt.family.value
        export = {"text": "writer_pdf_Export", "spreadsheet": "calc_pdf_Export",
                  "presentation": "impress_pdf_Export"}[family]
        # ODF: writer8, calc8, impress8 (templates too); DETECT: LibreOffice's type detection
        import_filter = fmt.export_filter if fmt.is_odf else (fmt.import_filter or None)
        # explicit, so that the render does not depend on what a worker's profile remembers: LibreOffice's
        # PDF export falls back to the profile's last-used settings for every option not given
        options = ["ExportNotes=false", "ExportNotesInMargin=false", "ExportNotesPages=false",
                   "ExportOnlyNotesPages=false"] + ([f"PageRange=1-{pages}"] if pages else [])
        worker = self._acquire()
        staging = _staging_dir(Path(dst))
        tmp = staging / "render.pdf"
        try:
            worker.convert(Path(src), tmp, import_filter, export, self.settings.timeout, filter_options=options,
                           memory_limit=self._memory_limit)
        except (WorkerTimeout, WorkerDied) as exc:
            self._replace(worker, "timeout" if isinstance(exc, WorkerTimeout) else "crash")
            raise ItemError(f"LibreOffice could not render {Path(src).name} to PDF: {exc}") from exc
        except ConversionRefused as exc:
            self._release(worker)
            raise ItemError(f"LibreOffice could not render {Path(src).name} to PDF: {exc}") from exc
        else:
            self._release(worker)
            if not tmp.exists():
                raise ItemError(f"LibreOffice wrote no PDF for {Path(src).name}")
            os.replace(tmp, dst)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ----------------------------------------------------------------- supervision
    def _acquire(self) -> Worker:
        while True:
            if self._closed:
                raise FatalError("the converter pool is closed")
            if self.size == 0:
                raise FatalError("no LibreOffice worker is left in the pool"
                                 + (": " + "; ".join(self._dropped) if self._dropped else ""))
            try:
                worker = self._idle.get(timeout=1.0)
            except queue.Empty:
                continue
            if not worker.ready():          # a remote worker cooling down after a failure
                if (isinstance(worker, RemoteWorkerHandle)
                        and worker.unreachable_for() >= self.settings.remote_give_up):
                    self._drop(worker)
                    continue
                self._idle.put(worker)
                time.sleep(0.05)
                continue
            return worker

    def _drop(self, worker: RemoteWorkerHandle) -> None:
        """Give up on a remote worker that has not answered for `remote_give_up` seconds."""
        why = (f"remote worker {worker.id} has not answered for {worker.unreachable_for():.0f} s "
               f"and was left out for the rest of the run")
        log.error("%s", why)
        with self._lock:
            self._workers.pop(worker.id, None)
            self._dropped.append(why)

    def _release(self, worker: Worker) -> None:
        if isinstance(worker, LocalWorker):
            rss = worker.rss()
            self.peak_rss = max(self.peak_rss, rss)
            too_big = rss > self.settings.recycle_above_mb * 2**20      # real documents grow it fast
            if worker.conversions >= self.settings.recycle_after - self._spare_lead:
                self._start_spare(worker.slot)
            if worker.conversions >= self.settings.recycle_after or too_big:
                self._recycle(worker)
                return
        self._idle.put(worker)

    @property
    def _spare_lead(self) -> int:
        """How many conversions before recycling the successor starts (~2 s of small documents)."""
        return max(1, min(20, self.settings.recycle_after // 10))

    def _start_spare(self, slot: int) -> None:
        """Start the successor of a worker about to be recycled, in the background.

        It gets the slot's other profile, so the two never share one, and it is warm by the
        time its predecessor retires: recycling costs no waiting.
        """
        with self._lock:
            if slot in self._spares or self._closed:
                return
            spare = self._new_local(slot)
            self._spares[slot] = (spare, self._maintenance.submit(spare.start))

    def _recycle(self, worker: LocalWorker) -> None:
        """Retire a worker that has done its conversions; its warm successor takes the slot."""
        self.recycled += 1
        with self._lock:
            spare, starting = self._spares.pop(worker.slot, None) or (None, None)

        def swap() -> None:
            if starting is None or spare is None:     # grown too big before its successor was due
                log.info("recycling %s (LibreOffice grew beyond %d MiB)", worker.id, self.settings.recycle_above_mb)
                self._replace(worker, "recycle")
                return
            worker.kill()
            try:
                starting.result()
            except Exception as exc:  # noqa: BLE001 - the slot falls back to a plain restart
                log.warning("successor of %s did not start (%s); restarting the slot", worker.id, exc)
                self._replace(worker, "recycle")
                return
            self._install(spare)

        if self._closed:
            worker.kill()
            return
        self._maintenance.submit(swap)

    def _install(self, fresh: LocalWorker) -> None:
        """Make a started worker its slot's current worker and hand it documents."""
        with self._lock:
            if self._closed:
                fresh.kill()
                return
            self._workers[f"w{fresh.slot}"] = fresh
        self._idle.put(fresh)

    @property
    def _memory_limit(self) -> int:
        """Bytes a worker's LibreOffice may reach during one document (0: no limit; remote workers'
        memory cannot be seen from here)."""
        return self.settings.memory_limit_mb * 2**20

    def _replace(self, worker: Worker, why: str, keep: bool = False) -> Worker | None:
        """Kill a worker and start a fresh one in its slot (remote workers cool down instead).

        With `keep`, the fresh worker is returned to the caller (who retries a document on it and
        then releases it) instead of being handed to whoever waits; otherwise None.
        """
        if not isinstance(worker, LocalWorker):       # a remote worker: it cools down
            worker.kill()
            self._idle.put(worker)
            return None
        worker.kill()
        if why != "recycle":
            self.restarts += 1
            shutil.rmtree(worker.profile, ignore_errors=True)   # a crash may leave it corrupt
        if self._closed:
            return None
        log.info("replacing worker %s (%s)", worker.id, why)
        with self._lock:
            spare, starting = self._spares.pop(worker.slot, None) or (None, None)
        if spare is not None:                     # a successor was warming up: drop it
            spare.kill()
        try:
            fresh = self._new_local(worker.slot)
            fresh.start()
        except (WorkerDied, OSError) as exc:
            log.error("worker slot w%s could not restart: %s", worker.slot, exc)
            with self._lock:
                self._workers.pop(f"w{worker.slot}", None)
            return None
        if keep:
            with self._lock:
                if not self._closed:
                    self._workers[f"w{fresh.slot}"] = fresh
                    return fresh
            fresh.kill()
            return None
        self._install(fresh)
        return None


#: What a person can do about a document that did not convert, by outcome.
def settled_by_sniffing(src: Path) -> tuple[Outcome, str] | None:
    """(outcome, message) that `ConverterPool.convert` gives `src` when its bytes alone settle it
    (not a format LibreOffice converts, encrypted, unreadable), found without a pool; None when the
    file needs LibreOffice or the ODF check. Raises OSError when `src` cannot be read."""
    return _settled(sniff(src))


def _settled(sniffed: Sniffed) -> tuple[Outcome, str] | None:
    if sniffed.final or sniffed.format is None:
        outcome = sniffed.outcome or Outcome.UNSUPPORTED
        return outcome, sniffed.reason + _ADVICE.get(outcome, "")
    return None


_ADVICE = {
    Outcome.ENCRYPTED: ". Ask its owner for the password, or for a copy saved without one.",
    Outcome.UNREADABLE: ". Ask its owner for an intact copy, or open it in the program that made it and save it again.",
}


@dataclass(frozen=True)
class _Load:
    """One way of asking LibreOffice to read a document."""

    import_filter: str | None          # DETECT (""): LibreOffice's type detection
    repair: bool = False               # load with RepairPackage (ZIP packages)
    refuse_plain_text: bool = False    # a detection that finds only plain text is a refusal

    @property
    def options(self) -> dict[str, str]:
        options = {}
        if self.repair:
            options["RepairPackage"] = "true"
        if self.refuse_plain_text:
            options["RefusePlainText"] = "true"
        return options

    def describe(self, fmt: OfficeFormat) -> str:
        how = "with LibreOffice's type detection" if self.import_filter == DETECT else f"as {fmt.description}"
        return f"reading {how}" + (" and repair" if self.repair else "")


#: Containers whose bytes are text: LibreOffice reading them as plain text is a real reading.
_TEXT_CONTAINERS = {"text", "mhtml", "html", "xml", "rtf", "sylk"}


def _loads(fmt: OfficeFormat, sniffed: Sniffed, damaged: bool = False) -> list[_Load]:
    """The ways LibreOffice is asked to read a document, in order, until one works.

    First the import filter sniffing chose (with repair when sniffing found the package damaged);
    then, for ZIP packages, the same filter with LibreOffice's package repair; last, no filter at
    all: LibreOffice's own type detection, as `soffice --convert-to` does, refused when all it finds
    is plain text in bytes that are not text (that is a page of gibberish, not a reading).
    """
    zipped = sniffed.container == "zip"
    own = fmt.export_filter if fmt.is_odf else fmt.import_filter     # ODF: writer8, calc8, impress8
    repair = sniffed.repair or damaged
    loads = [_Load(own, repair=repair and zipped)]
    if zipped and not repair:
        loads.append(_Load(own, repair=True))
    if own != DETECT:
        loads.append(_Load(DETECT, repair=zipped, refuse_plain_text=sniffed.container not in _TEXT_CONTAINERS))
    return loads


def _refusal_message(fmt: OfficeFormat, sniffed: Sniffed, outcome: Outcome, refusals: list[str],
                     problems: str | None) -> str:
    """One plain sentence: what is wrong with a document LibreOffice did not read, and what to do."""
    if outcome is Outcome.ENCRYPTED:
        return (f"{sniffed.reason}: LibreOffice cannot open it without its password either"
                + _ADVICE[Outcome.ENCRYPTED])
    # what sniffing found wrong says more than LibreOffice's refusal (which stays in the history)
    found = problems or (sniffed.reason if sniffed.outcome is not None else "") or (refusals[-1] if refusals else "")
    why = f": {found}" if found else ""
    return (f"LibreOffice cannot read this file as {fmt.description} or as any other format it knows; it is "
            f"damaged or not what its name says{why}" + _ADVICE[Outcome.UNREADABLE])


def _load_report(output: Path) -> dict:
    """What a local worker wrote beside `output` about its load (import filter used); {} if nothing."""
    try:
        return json.loads(Path(str(output) + LOAD_REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


_HANDLERS_INSTALLED = False


def _install_signal_handlers() -> None:
    """On SIGTERM (and SIGHUP), kill every worker, then exit as the default action would."""
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            kill_all_workers()
            if callable(previous):
                previous(signum, frame)
            raise SystemExit(128 + signum)

        signal.signal(sig, handler)
    _HANDLERS_INSTALLED = True
