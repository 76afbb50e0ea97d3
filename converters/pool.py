"""A supervised pool of LibreOffice workers that turns Office files into ODF.

One LibreOffice converts one document at a time; throughput comes from several isolated
workers, each with its own profile and ports. The pool:
- sniffs every file first, so encrypted, empty, corrupt and non-Office files cost no LibreOffice call;
- bounds every conversion by a timeout, kills a worker that hangs or dies, starts a fresh one,
  and retries the document once before recording `timeout` or `crashed`;
- recycles each local worker after a number of conversions, because LibreOffice's memory only grows;
- writes every output atomically (temporary name, fsync, rename) and checks it is a valid ODF package;
- leaves no LibreOffice process behind: on close, at exit, on SIGTERM and Ctrl-C.
"""

from __future__ import annotations

import atexit
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
from pathlib import Path

from core.digests import sha256_file
from core.errors import ConfigError, FatalError, ItemError
from core.outcomes import Outcome
from core.settings import ConversionSettings
from converters.formats import OfficeFormat
from converters.odf import check_package
from converters.result import ConversionResult
from converters.sniff import sniff
from converters.workers import (ConversionRefused, LocalWorker, RemoteWorkerHandle, Worker,
                                WorkerDied, WorkerTimeout, find_worker_python, kill_all_workers)

__all__ = ["ConverterPool", "atomic_copy"]

log = logging.getLogger("umstieg.converters")

atexit.register(kill_all_workers)


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
        starters = [lambda s=s: self._new_local(s) for s in range(1, self.settings.workers + 1)]
        starters += [lambda r=r: RemoteWorkerHandle(r.host, r.port) for r in self.settings.remote]
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

        Never raises for a bad document: every problem with the input is an outcome. Raises
        only when the pool itself cannot work (closed, no worker can start).
        """
        started = time.monotonic()
        src = Path(src)
        stem = stem if stem is not None else src.stem
        result = ConversionResult(source=str(src), outcome=Outcome.UNREADABLE, message="")
        try:
            result.input_bytes = src.stat().st_size
            sniffed = sniff(src)
        except OSError as exc:
            result.message = f"cannot read the file: {exc.strerror or exc}"
            result.seconds = time.monotonic() - started
            return result
        fmt = sniffed.format
        result.format = fmt.name if fmt else None
        if sniffed.outcome is not None or fmt is None:
            result.outcome = sniffed.outcome or Outcome.UNSUPPORTED
            result.message = sniffed.reason
        else:
            result.target = fmt.target
            result.sha256 = sha256 or sha256_file(src)
            dst = Path(dst_dir) / f"{stem}.{fmt.target}"
            if fmt.is_odf:
                self._pass_through(src, dst, result)
            else:
                self._convert_office(src, dst, fmt, result)
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
        finally:
            ex.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _collect(pending: set) -> Iterator[ConversionResult]:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            pending.discard(future)
            yield future.result()

    def _pass_through(self, src: Path, dst: Path, result: ConversionResult) -> None:
        problems = check_package(src)
        if problems:
            result.outcome = Outcome.UNREADABLE
            result.message = "invalid ODF package: " + "; ".join(problems[:3])
            return
        atomic_copy(src, dst)
        result.outcome = Outcome.PASSTHROUGH
        result.output, result.output_bytes = str(dst), dst.stat().st_size
        result.message = "already OpenDocument: copied unchanged after a validity check"

    def _convert_office(self, src: Path, dst: Path, fmt: OfficeFormat, result: ConversionResult) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        failures: list[Outcome] = []
        while True:
            worker = self._acquire()
            staging = _staging_dir(dst)
            tmp = staging / f"document.{fmt.target}"
            result.attempts += 1
            result.worker = worker.id
            try:
                worker.convert(src, tmp, fmt.import_filter, fmt.export_filter, self.settings.timeout)
            except WorkerTimeout as exc:
                failures.append(Outcome.TIMEOUT)
                result.history.append(f"{worker.id}: timeout ({exc})")
                self._replace(worker, "timeout")
            except WorkerDied as exc:
                failures.append(Outcome.CRASHED)
                result.history.append(f"{worker.id}: crashed ({exc})")
                self._replace(worker, "crash")
            except ConversionRefused as exc:
                self._release(worker)
                result.outcome = Outcome.UNREADABLE
                result.message = f"LibreOffice could not read it as {fmt.description}: {exc}"
                return
            else:
                self._release(worker)
                problems = check_package(tmp) if tmp.exists() else ["LibreOffice wrote nothing"]
                if problems:
                    result.outcome = Outcome.UNREADABLE
                    result.message = "LibreOffice did not produce a valid ODF package: " + "; ".join(problems[:3])
                    return
                _publish(tmp, dst)
                result.outcome = Outcome.CONVERTED
                result.output, result.output_bytes = str(dst), dst.stat().st_size
                result.message = f"{fmt.description} converted to .{fmt.target}"
                if failures:
                    result.message += f" on a fresh worker after a {failures[-1].value}"
                return
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            if len(failures) >= 2:
                result.outcome = failures[-1]
                what = "did not finish within" if result.outcome is Outcome.TIMEOUT else "crashed LibreOffice"
                limit = f" {self.settings.timeout:g} s" if result.outcome is Outcome.TIMEOUT else ""
                result.message = f"{what}{limit} twice, on two fresh workers"
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
        import_filter = fmt.import_filter or fmt.export_filter    # ODF: writer8, calc8, impress8 (templates too)
        # explicit, so that the render does not depend on what a worker's profile remembers: LibreOffice's
        # PDF export falls back to the profile's last-used settings for every option not given
        options = ["ExportNotes=false", "ExportNotesInMargin=false", "ExportNotesPages=false",
                   "ExportOnlyNotesPages=false"] + ([f"PageRange=1-{pages}"] if pages else [])
        worker = self._acquire()
        staging = _staging_dir(Path(dst))
        tmp = staging / "render.pdf"
        try:
            worker.convert(Path(src), tmp, import_filter, export, self.settings.timeout, filter_options=options)
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
                raise FatalError("no LibreOffice worker is left in the pool")
            try:
                worker = self._idle.get(timeout=1.0)
            except queue.Empty:
                continue
            if not worker.ready():          # a remote worker cooling down after a failure
                self._idle.put(worker)
                time.sleep(0.05)
                continue
            return worker

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
            spare, starting = self._spares.pop(worker.slot, (None, None))

        def swap() -> None:
            worker.kill()
            try:
                if starting is None:
                    raise WorkerDied("no successor was started")
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

    def _replace(self, worker: Worker, why: str) -> None:
        """Kill a worker and start a fresh one in its slot (remote workers cool down instead)."""
        if isinstance(worker, RemoteWorkerHandle):
            worker.kill()
            self._idle.put(worker)
            return
        worker.kill()
        if why != "recycle":
            self.restarts += 1
            shutil.rmtree(worker.profile, ignore_errors=True)   # a crash may leave it corrupt
        if self._closed:
            return
        log.info("replacing worker %s (%s)", worker.id, why)
        with self._lock:
            spare, starting = self._spares.pop(worker.slot, (None, None))
        if spare is not None:                     # a successor was warming up: drop it
            spare.kill()
        try:
            fresh = self._new_local(worker.slot)
            fresh.start()
        except WorkerDied as exc:
            log.error("worker slot w%s could not restart: %s", worker.slot, exc)
            with self._lock:
                self._workers.pop(f"w{worker.slot}", None)
            return
        self._install(fresh)


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
