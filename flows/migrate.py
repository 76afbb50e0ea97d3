"""Department runs: assess, migrate (also the delta pass), rerun and report.

The work of a run is written once, here, as plain Python: `_execute` checks the department,
selects its items, hands them in chunks (tens to hundreds, never single items) to a chunk runner
and reports. Who runs the chunks, and where the run is shown, is the caller's `Orchestration`:

- `Here` (`umstieg run` with no Prefect server configured): this process's threads; a chunk that
  failed for a reason that may go away by itself is retried as the Prefect task would be; logs go
  to Python's logging, there are no artifacts. Nothing of Prefect is imported and no server
  starts: Prefect's temporary server took 13 s to start on a quiet machine, 24-60 s on a busy
  one, and now and then did not come up in time at all (the run then died before moving a thing).
- `InPrefect` (flows/prefect_flows.py: deployments, Prefect workers, a department on a Dask
  cluster, `umstieg run` with PREFECT_API_URL set): each chunk is a Prefect task run, and the
  run's progress, tables and report are artifacts on the server.

The Prefect flows and their chunk task (`migrate`, `rerun`, `assess`, `report`, `chunk_task`)
are served from flows/prefect_flows.py on first access, so deployments keep their entrypoints
(`flows/migrate.py:migrate`) while importing this module stays cheap. Chunks get the department
file's path and item ids, never documents, so they can run in any process of a Dask cluster.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait as wait_for
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.department import Department
from core.errors import ConfigError, ItemError, TransientError, UserStopped
from core.items import Kind
from core.ledger import HEARTBEAT, Item, Ledger
from core.mailselection import MailSelection
from core.settings import usable_cpus
from core.messages import clip
from core.plugins import CountsMail, ProbesOnce, ProbesUsers
from flows import runtime
from flows.calendars import calendar_problems
from flows.limits import Chunk, ChunkGate, Window, host_of
from flows.discovery import discover, relist_unlisted
from flows.steps import process_chunk, reset_for_rerun, select_failed, with_retries
from flows.systems import TARGET_FIELD, source_of, targets_of
from reports.migration import run_summary, write_run_report

__all__ = ["migrate", "rerun", "assess", "report", "check_department", "stopped_users", "prerun", "probing",
           "task_runner_for",
           "Here", "migrate_body", "rerun_body", "assess_body", "report_body", "orchestrated", "run_flow",
           "CHUNK_RETRY_WAITS"]

#: Waits (seconds) before the retries of a chunk that failed with a TransientError: the Prefect
#: chunk task's retry delays and the local runner's alike.
CHUNK_RETRY_WAITS = (5, 30, 120)

#: What flows/prefect_flows.py offers under this module's name (see the module's docstring).
_IN_PREFECT = {"migrate", "rerun", "assess", "report", "chunk_task", "task_runner_for"}


def __getattr__(name: str):
    if name in _IN_PREFECT:
        from flows import prefect_flows
        return getattr(prefect_flows, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Threads:
    """Chunks on this process's threads, at most `workers` at once. A chunk that failed with a
    TransientError runs again after each of CHUNK_RETRY_WAITS (or the server's Retry-After), as
    Prefect retries the chunk task, even when a client already retried the request that failed (a
    chunk is a new unit of work: its items that failed stay failed); any other failure ends it at once.

    With `processes`, chunks run in that many worker processes instead of threads. Why: a chunk
    of files that are not converted is Python work from end to end (reading, hashing, the
    ledger), which one interpreter runs on one core whatever the number of threads (measured:
    124 % CPU on 2 cores). Chunks that convert stay on threads, because LibreOffice workers
    belong to the process that started them (runtime.converter_pool): a pool per process would
    start LibreOffice once per process. Chunks carry the department file's path and item ids
    only, so they pickle, as they do for Dask; each process opens its own ledger connection
    (SQLite in WAL mode lets one writer commit at a time and makes the others wait up to its
    busy_timeout; the commit windows of flows/steps.py keep the turns few). A worker process
    dies with the process that started it (PR_SET_PDEATHSIG), so that a killed run leaves no
    worker writing on: it is a SIGKILL of the run like any other, and the next run resumes."""

    def __init__(self, dept_file: str, run_id: int, workers: int, processes: int = 0) -> None:
        self.dept_file, self.run_id, self.workers, self.processes = dept_file, run_id, workers, processes

    def __enter__(self) -> "_Threads":
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"umstieg-run-{self.run_id}-chunk")
        self.procs, self.tracker = None, None
        if self.processes:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import resource_tracker
            # spawning starts multiprocessing's resource tracker, a process that would outlive
            # the run in a long-lived process (the dashboard, a test session): stopped with the
            # pool, if it was not running before
            # (_pid is private: typeshed does not declare it)
            self.tracker = resource_tracker._resource_tracker \
                if resource_tracker._resource_tracker._pid is None else None  # type: ignore[attr-defined]
            # spawn, not fork: this process has threads (the heartbeat, the chunk threads) and an
            # open ledger connection that a forked child must not share
            self.procs = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_process, initargs=(os.getpid(),))
        return self

    def __exit__(self, exc_type, *_) -> None:
        # chunks already running finish (each item stays in the last state it really reached);
        # after a failure, those not started yet are dropped
        self.pool.shutdown(wait=True, cancel_futures=exc_type is not None)
        if self.procs is not None:
            self.procs.shutdown(wait=True, cancel_futures=exc_type is not None)
        if self.tracker is not None and hasattr(self.tracker, "_stop"):
            self.tracker._stop()

    def submit(self, chunk: Chunk):
        return (self.procs or self.pool).submit(
            with_retries, process_chunk, self.dept_file, self.run_id, chunk.owner, chunk.number,
            list(chunk.item_ids), waits=CHUNK_RETRY_WAITS, retry_spent=True)

    @staticmethod
    def wait(futures: list, timeout: float) -> set:
        return wait_for(futures, timeout=timeout, return_when=FIRST_COMPLETED).done


def _worker_process(parent: int) -> None:
    """Set up a chunk worker process of `_Threads`: it dies with its parent, leaves Ctrl-C to it
    (the parent lets running chunks finish), and says its warnings on stderr as the parent does."""
    import signal
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):           # not Linux: the parent's exit ends the pool's queue
        pass
    if os.getppid() != parent:                  # the parent died before the line above
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")


class _Unshown:
    """Progress nobody watches here (the command's progress bar reads the ledger)."""

    def advance(self, owner: str, n: int) -> None:
        pass

    def show(self) -> None:
        pass


class Here:
    """The orchestration of a run on this machine with no Prefect server (see the module's
    docstring). flows/prefect_flows.py's `InPrefect` offers the same methods."""

    log = logging.getLogger("umstieg.flows")

    def flow_run(self) -> str | None:
        """The Prefect flow run this run is, if any (recorded in the ledger)."""
        return None

    def chunk_runner(self, dept: Department, dept_file: str, run_id: int):
        """What runs the run's chunks: a context manager with `submit(chunk) -> future` and
        `wait(futures, timeout) -> the futures done`."""
        return _Threads(dept_file, run_id, _chunks_at_once(dept), _processes(dept))

    def in_flight_cap(self, dept: Department) -> int | None:
        """How many chunks to hand the runner at once: as many as its threads take."""
        return _chunks_at_once(dept)

    def progress(self, dept: Department, todo: dict[str, Sequence[int]]):
        return _Unshown()

    def publish(self, dept: Department, summary: dict, report: Path | None) -> None:
        """Show the run's result where operators look (nothing to do here: the report file is it)."""

    def publish_markdown(self, dept: Department, what: str, path: Path) -> None:
        """Show a Markdown report (the assessment, a status snapshot) where operators look."""


@contextmanager
def probing(dept: Department) -> Iterator[None]:
    """Inside, every source and target of the department that can (core.plugins.ProbesOnce)
    keeps the answers it got about each user, so that the questions before a run (who waits, the
    identity check, what stops the department) ask each user's account once per system, not once
    per question. A system that cannot even be made is left to the checks, which say why."""
    with ExitStack() as scope:
        systems: list[object] = []
        for cfg in dept.sources:
            try:
                systems.append(source_of(dept, cfg.name))
            except Exception:  # noqa: BLE001 - check_department reports it
                pass
        try:
            systems += list(targets_of(dept).values())
        except Exception:  # noqa: BLE001 - check_department reports it
            pass
        for system in systems:
            if isinstance(system, ProbesOnce):
                scope.enter_context(system.probing())
        yield


def prerun(dept: Department, users: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The check before a run, each user's account asked once per system (see `probing`): the
    users who wait, with why (`stopped_users`), and the problems that stop the department
    (`check_department`, the waiting users left out)."""
    with probing(dept):
        stopped = stopped_users(dept, users)
        return stopped, check_department(dept, users, waiting=stopped)


def check_department(dept: Department, users: list[str] | None = None,
                     waiting: Iterable[str] = ()) -> list[str]:
    """Every problem that must stop the department before anything moves (all at once): a source
    root missing, a target out of reach or not trusted, a service account that cannot log in.

    `users` (source logins) limits the check to the users a run takes (`run -u`); the users in
    `waiting` (see `stopped_users`) are left out of the source and target checks, because their
    own account's problem (a folder or mailbox missing at the source, an account at the target)
    stops only them."""
    chosen = _chosen(dept, users)
    problems: list[str] = []
    waiting = set(waiting)
    with probing(dept):
        for cfg in dept.sources:
            problems += source_of(dept, cfg.name).check([u.folder_in(cfg.name) for u in chosen
                                                         if u.source not in waiting])
        owners = [u.target for u in chosen if u.source not in waiting]
        for field_name, sink in targets_of(dept).items():
            problems += [p if field_name == "target" else f"{field_name}: {p}" for p in sink.check(owners)]
    return problems


def stopped_users(dept: Department, users: list[str] | None = None) -> dict[str, str]:
    """Users who must not move now, by source login, with why: their target account is missing,
    refuses the login or is full (a message must never land in the wrong mailbox, a file never
    half-way into a full account). Only they wait; the other users go on. Targets that can tell
    offer `user_problems(target logins)`; `users` limits the question to the users a run takes."""
    chosen = _chosen(dept, users)
    by_target: dict[str, str] = {}
    with probing(dept):                                 # one probe per account answers both questions
        for field_name, sink in targets_of(dept).items():
            if isinstance(sink, ProbesUsers) and chosen:
                for login, why in sink.user_problems([u.target for u in chosen]).items():
                    by_target.setdefault(login, f"{field_name}: {why}")
        stopped = {u.source: by_target[u.target] for u in chosen if u.target in by_target}
        from flows.identity import identity_waits       # the pair is not proven to be one person
        for source, why in identity_waits(dept, users).items():
            stopped.setdefault(source, why)
    return stopped


def _chosen(dept: Department, users: list[str] | None) -> list:
    return [u for u in dept.users if users is None or u.source in users]


class _ChunkFeed:
    """The run's chunks, made from the ledger as they are handed out rather than all at the start:
    each user's items cut into chunks of one source each (a chunk reads from one host), in id
    order, the users' chunks taken in turn so that everyone moves forward together.

    Only the item ids are held for the whole run (the todo); a chunk's facts are read a slice of
    ids at a time when it is about to be needed, so that a million items do not become a
    million rows and chunk objects in memory at once (issue 19: +38 MB at 200,000 items before)."""

    SLICE = 2000

    def __init__(self, dept: Department, ledger: Ledger, todo: dict[str, Sequence[int]]) -> None:
        self.dept, self.ledger = dept, ledger
        self.size = dept.limits.chunk_size
        self.source_hosts = {cfg.name: host_of(cfg) for cfg in dept.sources}
        self.kind_hosts = {kind: host_of(getattr(dept, name)) for kind, name in TARGET_FIELD.items()
                           if getattr(dept, name) is not None}
        self.archive = {host_of(dept.archive)} if dept.archive is not None else set()
        self.users = [self._of(owner, ids) for owner, ids in todo.items() if ids]
        self.turn = 0

    def __bool__(self) -> bool:
        return bool(self.users)

    def next(self) -> Chunk | None:
        """The next chunk, users in turn; None when every chunk was handed out."""
        while self.users:
            self.turn %= len(self.users)
            chunk = next(self.users[self.turn], None)
            if chunk is None:
                del self.users[self.turn]
                continue
            self.turn += 1
            return chunk
        return None

    def _of(self, owner: str, ids: Sequence[int]) -> Iterator[Chunk]:
        """One user's chunks, in the todo's order (by id): ids read from the ledger a slice at a time
        (each in a session of its own: a run lasts hours), gathered per source until a chunk is full."""
        gathered: dict[str, list[tuple[int, str]]] = {}
        number = 0
        for at in range(0, len(ids), self.SLICE):
            with self.ledger.session() as s:
                rows = s.execute(select(Item.id, Item.source, Item.kind).where(
                    Item.id.in_(ids[at:at + self.SLICE])).order_by(Item.id)).all()
            for item_id, source, kind in rows:
                part = gathered.setdefault(source, [])
                part.append((item_id, kind))
                if len(part) == self.size:
                    number += 1
                    yield self._chunk(owner, number, source, gathered.pop(source))
        for source, part in gathered.items():
            number += 1
            yield self._chunk(owner, number, source, part)

    def _chunk(self, owner: str, number: int, source: str, part: list[tuple[int, str]]) -> Chunk:
        targets = {self.kind_hosts.get(Kind(kind), "local") for _, kind in part}
        if any(kind == Kind.FILE.value for _, kind in part):
            targets |= self.archive
        return Chunk(owner, number, tuple(item_id for item_id, _ in part), self.source_hosts.get(source, "local"),
                     frozenset(targets))


def _processes(dept: Department) -> int:
    """Worker processes for a run here: one per usable core when the department converts
    nothing (see `_Threads`), none (threads) when it converts or the machine has one core.
    UMSTIEG_CHUNK_PROCESSES overrides it (0: threads only)."""
    setting = os.environ.get("UMSTIEG_CHUNK_PROCESSES", "").strip()
    if setting:
        try:
            return max(0, int(setting))
        except ValueError:
            raise ConfigError(f"UMSTIEG_CHUNK_PROCESSES must be a whole number, not {setting!r}") from None
    cores = usable_cpus()
    return 0 if dept.conversion.enabled or cores < 2 else cores


def _chunks_at_once(dept: Department) -> int:
    """Chunks one machine works on at once: two per LibreOffice worker, so that one converts while
    the other reads, loads and verifies."""
    return 2 * (dept.conversion.workers or usable_cpus())


def _run_chunks(dept_file: str, dept: Department, ledger: Ledger, run_id: int,
                todo: dict[str, Sequence[int]], window: Window, via: Here) -> tuple[Counter, dict]:
    """Hand chunks to the runner as the host limits and the window allow, wait for all, keep the
    progress shown up to date. Returns the counts by final state and what was left undone."""
    feed = _ChunkFeed(dept, ledger, todo)
    waiting: list[Chunk] = []                           # made, not yet started (see below)
    gate = ChunkGate(dept.limits.source, dept.limits.target)
    cap = via.in_flight_cap(dept)
    progress = via.progress(dept, todo)
    counts: Counter = Counter()
    left: dict = {}
    running: dict = {}                                  # future -> chunk
    # The department decides where chunks run (threads here, or its Dask cluster), so the runner
    # is chosen now, for this run; none is started when there is nothing to do.
    with via.chunk_runner(dept, dept_file, run_id) if feed else nullcontext() as runner:
        while waiting or running or feed:
            if (waiting or feed) and not window.is_open():
                chunks, items = len(waiting), sum(len(c.item_ids) for c in waiting)
                while (chunk := feed.next()) is not None:   # counted, not kept
                    chunks, items = chunks + 1, items + len(chunk.item_ids)
                left = {"chunks": chunks, "items": items, "why": f"the allowed window ({window.describe()}) closed"}
                via.log.warning("%s: the allowed window %s closed: %d item(s) wait for the next run",
                                dept.name, window.describe(), left["items"])
                waiting = []
            while cap is None or len(running) < cap:
                # the first made chunk that fits the host limits; more are made only while none
                # fits, so that a host at its limit does not hold back the others
                chunk = gate.next_fitting(waiting)
                while chunk is None and (chunk := feed.next()) is not None:
                    waiting.append(chunk)
                    chunk = chunk if gate.fits(chunk) else None
                if chunk is None:
                    break
                waiting.remove(chunk)
                gate.take(chunk)
                assert runner is not None            # made when there were chunks to make
                running[runner.submit(chunk)] = chunk
            if not running:
                break
            assert runner is not None
            for fut in runner.wait(list(running), timeout=2):
                chunk = running.pop(fut)
                gate.release(chunk)
                counts.update(fut.result())
                progress.advance(chunk.owner, len(chunk.item_ids))
            progress.show()
    ledger.note_run(run_id, most_at_once={"source": dict(gate.most_reading), "target": dict(gate.most_writing)})
    return counts, left


class _Heartbeat:
    """Beats for the run in the ledger every HEARTBEAT seconds while the run lives (see
    Ledger.close_abandoned_runs: a run on another host that stops beating was cut off)."""

    def __init__(self, ledger: Ledger, run_id: int) -> None:
        self.ledger, self.run_id = ledger, run_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"umstieg-heartbeat-{run_id}", daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT):
            try:
                self.ledger.beat(self.run_id)
            except Exception:  # noqa: BLE001 - a missed beat is not worth stopping the run for
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def _publish(via: Here, dept: Department, summary: dict, report: Path | None) -> None:
    """What is published is a view: failing to show it must neither fail a finished run nor hide
    why a run failed."""
    try:
        via.publish(dept, summary, report)
    except Exception as exc:  # noqa: BLE001
        via.log.warning("%s: the run's Prefect artifacts could not be written: %s", dept.name, exc)


def _execute(dept_file: str, flow_name: str, ignore_window: bool,
             choose: Callable[[Department, Ledger, int, set[str]], tuple[dict[str, Sequence[int]], dict]],
             users: list[str] | None = None, via: Here | None = None) -> dict:
    """The common life of a run: check, select items, process chunks, report, record. `users`
    (source logins) are the users the run takes, all when None: only their accounts are checked.
    A user whose own target account cannot take data waits with the reason; only problems that
    concern everyone (a source root, a target out of reach, a service account) stop the run.

    A failure of the machine rather than of an item (the ledger's database refusing the login
    or gone, a full disk) is raised as the ConfigError or FatalError that says what to do
    (runtime.plain_failure); the ledger keeps every item in the last state it really reached."""
    via = via or Here()
    logger = via.log
    dept = runtime.department(dept_file)
    window = Window.of(dept.schedule)
    if ignore_window:
        window = Window(None, None, window.zone)
    window.refuse_if_closed(dept)
    runtime.pool_settings(dept)              # UMSTIEG_* settings from the environment: checked before anything moves
    stopped, problems = prerun(dept, users)
    if problems:
        raise ConfigError(f"{dept.name}: nothing was moved:\n  " + "\n  ".join(problems))
    # calendars beyond the server's limits are told before anything moves, but stop nobody: the
    # calendars within them load now, the others fail as `calendar_limit` and a later rerun takes them
    warnings = calendar_problems(dept, [u for u in _chosen(dept, users) if u.source not in stopped])
    for warning in warnings:
        logger.warning("%s: %s", dept.name, warning)
    try:
        ledger = runtime.ledger(dept)
        run_id = ledger.start_run(dept.name, flow_name, via.flow_run())     # closes abandoned runs first
    except Exception as exc:
        _raise_plainly(exc, dept)
    started = time.monotonic()
    try:
        with _Heartbeat(ledger, run_id):
            todo, delta = choose(dept, ledger, run_id, set(stopped))
            for owner, why in stopped.items():
                logger.warning("%s: %s waits: %s", dept.name, owner, why)
            ledger.note_run(run_id, todo=sum(map(len, todo.values())), delta=delta, stopped_users=stopped)
            logger.info("%s: %d item(s) to process for %d user(s)", dept.name, sum(map(len, todo.values())),
                        len(todo))
            _, left = _run_chunks(dept_file, dept, ledger, run_id, todo, window, via)
            summary = run_summary(dept, ledger, run_id, delta, time.monotonic() - started)
            summary["stopped_users"] = {**stopped, **ledger.stopped_users(run_id)}
            if warnings:
                summary["warnings"] = warnings
            if left:
                summary["left_for_next_run"] = left
            report = write_run_report(dept, summary)
            summary["report"] = str(report)
            ledger.finish_run(run_id, "completed", summary)
    except BaseException as exc:
        plain = runtime.plain_failure(exc, dept) if isinstance(exc, Exception) else None
        error = str(plain) if plain is not None else f"{type(exc).__name__}: {exc}"
        try:
            ledger.finish_run(run_id, "failed", {"error": error if len(error) <= 2000 else clip(error, 2000)})
        except Exception as why:  # noqa: BLE001 - the ledger itself may be what failed
            # the run stays `running` without a heartbeat: the next run marks it interrupted
            logger.warning("%s: run %d could not be marked failed in the ledger: %s", dept.name, run_id,
                           runtime.plain_failure(why, dept) or why)
        _publish(via, dept, {"run": run_id, "status": "failed", "error": error[:2000]}, None)
        if plain is not None:
            raise plain from exc
        raise
    _publish(via, dept, summary, report)
    logger.info("%s: report at %s", dept.name, report)
    return summary


def _raise_plainly(exc: Exception, dept: Department):
    """Raise what a person can act on for `exc` (runtime.plain_failure), else `exc` itself."""
    plain = runtime.plain_failure(exc, dept)
    if plain is not None:
        raise plain from exc
    raise exc


def migrate_body(department_file: str, users: list[str] | None = None, ignore_window: bool = False,
                 via: Here | None = None) -> dict:
    """Move a department: discover → extract → convert → load → verify → report.

    Run again, it is the delta pass: only new and changed items move, and items deleted at the
    source are reported (and removed at the target only if the department says so).
    """
    def choose(dept, ledger, run_id, waiting):
        found = discover(dept, ledger, run_id, users)
        return {owner: ids for owner, ids in found.todo.items() if owner not in waiting}, found.as_dict()
    if runtime.department(str(Path(department_file).resolve())).mail.dry_run:
        return {**assess_body(department_file, via), "dry_run": True}     # what would move; nothing does
    return _execute(str(Path(department_file).resolve()), "migrate", ignore_window, choose, users, via)


def rerun_body(department_file: str, batch: int | None = None, error_class: str | None = None,
               user: str | None = None, ignore_window: bool = False, via: Here | None = None) -> dict:
    """Retry exactly the failed items that match every given filter; nothing else runs."""
    def choose(dept: Department, ledger: Ledger, run_id: int,
               waiting: set[str]) -> tuple[dict[str, Sequence[int]], dict]:
        # a user who must wait keeps their failures (and reasons) for a rerun that can reach them
        items = [i for i in select_failed(ledger, dept.name, batch=batch, error_class=error_class, owner=user)
                 if i.owner not in waiting]
        # folders that could not be listed are listed again: what they hold now joins the rerun
        relisted = relist_unlisted(dept, ledger, run_id, items)
        reset_for_rerun(ledger, [i.id for i in items], run_id)
        by_owner: dict[str, list[int]] = {}
        for item in items:
            by_owner.setdefault(item.owner, []).append(item.id)
        for owner, ids in relisted.items():
            by_owner[owner] = sorted(set(by_owner.get(owner, [])) | set(ids))
        todo: dict[str, Sequence[int]] = dict(by_owner)
        return todo, {"rerun": len(items)}
    return _execute(str(Path(department_file).resolve()), "rerun", ignore_window, choose,
                    [user] if user else None, via)


def assess_body(department_file: str, via: Here | None = None) -> dict:
    """Inventory every source of the department (no data moves) and write the assessment."""
    from reports.migration import Inventory, write_assessment
    via = via or Here()
    dept = runtime.department(str(Path(department_file).resolve()))
    with probing(dept):                     # the check and the identity check ask each account once
        problems = check_department(dept) + calendar_problems(dept)
        try:
            from flows.identity import check_identities
            identities = [c.row() for c in check_identities(dept)]
        except Exception as exc:
            _raise_plainly(exc, dept)
    inventory = Inventory()             # counters, never a list of the items: a million files in bounded memory
    scan_folders = []
    volumes: list[tuple[str, str, dict]] = []        # (user, source, {folder, messages, bytes}) as counted there
    selection = MailSelection.of(dept)
    for cfg in dept.sources:
        source = source_of(dept, cfg.name)
        for user in dept.users:
            folder = user.folder_in(cfg.name)
            try:
                if isinstance(source, CountsMail):
                    volumes += [(user.source, cfg.name, v) for v in source.mail_volume(user.source, folder)]
                listed = Inventory()    # counted apart: a listing that fails half-way is a problem, not half a count
                for ref in selection.listed(source, user.source, folder):
                    if not (ref.meta or {}).get("skipped"):                 # links, pipes: nothing to move
                        listed.add(user.source, ref)
                inventory.merge(listed)
            except (ItemError, TransientError, UserStopped, ConfigError, OSError) as exc:
                problems.append(f"source {cfg.name}: cannot list {user.source}: {exc}")
                continue
            if cfg.type == "folder" and (cfg.root / folder).is_dir():
                scan_folders.append((cfg.name, user.source, cfg.root / folder))
    try:
        result = write_assessment(dept, problems, runtime.ledger(dept), inventory, scan_folders, volumes,
                                  identities)
    except Exception as exc:
        _raise_plainly(exc, dept)
    via.publish_markdown(dept, "assessment", Path(result["markdown"]))
    return result


def report_body(department_file: str, via: Here | None = None) -> str:
    """Write a snapshot of the department's status from its ledger now (as `umstieg report` does)
    and show it where operators look; nothing moves."""
    from reports.migration import department_status, write_status_report
    via = via or Here()
    dept = runtime.department(str(Path(department_file).resolve()))
    try:
        path = write_status_report(dept, department_status(dept, runtime.ledger(dept)))
    except Exception as exc:
        _raise_plainly(exc, dept)
    via.publish_markdown(dept, "status", path)
    return str(path)


_BODIES: dict[str, Callable[..., Any]] = {"migrate": migrate_body, "rerun": rerun_body, "assess": assess_body,
                                          "report": report_body}


def orchestrated(dept: Department) -> bool:
    """Whether this department's runs from here go through Prefect: when a Prefect server is
    configured (runtime.prefect_configured), or its chunks run on a Dask cluster."""
    return dept.cluster is not None or runtime.prefect_configured()


def run_flow(name: str, department_file: str | Path, **params):
    """Run the department flow `name` (migrate, rerun, assess, report) as this machine is set up:
    as the Prefect flow when `orchestrated`, else here, with no server (see the module's
    docstring). The commands and the dashboard's reruns come through here."""
    department_file = str(Path(department_file).resolve())
    if orchestrated(runtime.department(department_file)):
        return getattr(sys.modules[__name__], name)(department_file, **params)
    return _BODIES[name](department_file, **params)
