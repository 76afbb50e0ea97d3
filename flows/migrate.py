"""Prefect flows for one department: assess, migrate (also the delta pass) and rerun.

A Prefect task handles a chunk of items (tens to hundreds), never a single item: each task run
costs ~20 ms of orchestration, and maps of thousands of tasks destabilise a server. Tasks get the
department file's path and item ids, never documents, so they can run on any Dask worker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import zip_longest
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner
from sqlalchemy import select

from core.department import Department
from core.errors import ConfigError, ItemError, TransientError, UserStopped
from core.items import Kind
from core.ledger import HEARTBEAT, Item, Ledger
from core.settings import usable_cpus
from flows import artifacts, runtime
from flows.limits import Chunk, ChunkGate, Window, host_of
from flows.steps import (TARGET_FIELD, discover, process_chunk, reset_for_rerun, select_failed, source_of,
                         targets_of)
from reports.migration import run_summary, write_run_report

__all__ = ["migrate", "rerun", "assess", "report", "check_department", "task_runner_for"]


def _transient(task, task_run, state) -> bool:
    """Retry a chunk only when it failed for a reason that may go away by itself."""
    try:
        state.result()
    except TransientError:
        return True
    except BaseException:  # noqa: BLE001 - any other failure is not retried
        return False
    return False


@task(name="convert-chunk", retries=3, retry_delay_seconds=[5, 30, 120], retry_condition_fn=_transient,
      cache_policy=NO_CACHE, persist_result=False)
def chunk_task(dept_file: str, run_id: int, owner: str, number: int, item_ids: list[int]) -> dict:
    """Take one chunk of one user's items through extract → convert → load → verify."""
    return process_chunk(dept_file, run_id, owner, number, item_ids)


def task_runner_for(dept: Department):
    """Threads on this machine by default; the department's Dask cluster when it names one."""
    if dept.cluster is not None:
        from prefect_dask import DaskTaskRunner
        return DaskTaskRunner(address=dept.cluster.address)
    return ThreadPoolTaskRunner(max_workers=_chunks_at_once(dept))


def check_department(dept: Department, users: list[str] | None = None,
                     waiting: Iterable[str] = ()) -> list[str]:
    """Every problem that must stop the department before anything moves (all at once): a source
    root missing, a target out of reach or not trusted, a service account that cannot log in.

    `users` (source logins) limits the check to the users a run takes (`run -u`); the users in
    `waiting` (see `stopped_users`) are left out of the target checks, because their own
    account's problem stops only them."""
    chosen = _chosen(dept, users)
    problems: list[str] = []
    for cfg in dept.sources:
        problems += source_of(dept, cfg.name).check([u.folder_in(cfg.name) for u in chosen])
    waiting = set(waiting)
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
    for field_name, sink in targets_of(dept).items():
        probe = getattr(sink, "user_problems", None)
        if probe is not None and chosen:
            for login, why in probe([u.target for u in chosen]).items():
                by_target.setdefault(login, f"{field_name}: {why}")
    return {u.source: by_target[u.target] for u in chosen if u.target in by_target}


def _chosen(dept: Department, users: list[str] | None) -> list:
    return [u for u in dept.users if users is None or u.source in users]


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run
    return str(flow_run.id) if flow_run.id else None


def _chunks(dept: Department, ledger: Ledger, todo: dict[str, list[int]]) -> list[Chunk]:
    """Each user's items cut into chunks of one source each (a chunk reads from one host), the
    users' chunks taken in turn so that everyone moves forward together."""
    size = dept.limits.chunk_size
    source_hosts = {cfg.name: host_of(cfg) for cfg in dept.sources}
    kind_hosts = {kind: host_of(getattr(dept, name)) for kind, name in TARGET_FIELD.items()
                  if getattr(dept, name) is not None}
    archive = {host_of(dept.archive)} if dept.archive is not None else set()
    wanted = {i for ids in todo.values() for i in ids}
    by_user: dict[str, list[Chunk]] = {}
    with ledger.session() as s:
        for owner in todo:
            groups: dict[str, list[tuple[int, str]]] = {}
            for item_id, source, kind in s.execute(select(Item.id, Item.source, Item.kind).where(
                    Item.department == dept.name, Item.owner == owner).order_by(Item.id)):
                if item_id in wanted:
                    groups.setdefault(source, []).append((item_id, kind))
            chunks = by_user.setdefault(owner, [])
            for source, rows in groups.items():
                for first in range(0, len(rows), size):
                    part = rows[first:first + size]
                    targets = {kind_hosts.get(Kind(kind), "local") for _, kind in part}
                    if any(kind == Kind.FILE.value for _, kind in part):
                        targets |= archive
                    chunks.append(Chunk(owner, len(chunks) + 1, tuple(item_id for item_id, _ in part),
                                        source_hosts.get(source, "local"), frozenset(targets)))
    return [c for turn in zip_longest(*by_user.values()) for c in turn if c is not None]


def _chunks_at_once(dept: Department) -> int:
    """Chunks one machine works on at once: two per LibreOffice worker, so that one converts while
    the other reads, loads and verifies."""
    return 2 * (dept.conversion.workers or usable_cpus())


def _in_flight_cap(dept: Department) -> int | None:
    """How many chunks to hand the runner at once: as many as its threads take; on Dask the
    cluster queues them and only the host limits count."""
    return None if dept.cluster is not None else _chunks_at_once(dept)


def _run_chunks(dept_file: str, dept: Department, ledger: Ledger, run_id: int,
                todo: dict[str, list[int]], window: Window) -> tuple[Counter, dict]:
    """Hand chunks to the runner as the host limits and the window allow, wait for all, keep the
    progress artifact up to date. Returns the counts by final state and what was left undone."""
    logger = get_run_logger()
    waiting = _chunks(dept, ledger, todo)
    gate = ChunkGate(dept.limits.source, dept.limits.target)
    cap = _in_flight_cap(dept)
    progress = artifacts.Progress(dept, todo)
    counts: Counter = Counter()
    left: dict = {}
    running: dict = {}                                  # future -> chunk
    # The department decides where chunks run (threads here, or its Dask cluster), so the runner
    # is chosen now, not when the flow was decorated.
    with task_runner_for(dept) as runner:
        while waiting or running:
            if waiting and not window.is_open():
                left = {"chunks": len(waiting), "items": sum(len(c.item_ids) for c in waiting),
                        "why": f"the allowed window ({window.describe()}) closed"}
                logger.warning("%s: the allowed window %s closed: %d item(s) wait for the next run",
                               dept.name, window.describe(), left["items"])
                waiting = []
            while waiting and (cap is None or len(running) < cap):
                chunk = gate.next_fitting(waiting)
                if chunk is None:
                    break
                waiting.remove(chunk)
                gate.take(chunk)
                # tags name the hosts, for Prefect tag limits across several departments on one server
                task_ = chunk_task.with_options(tags=[f"source:{chunk.source_host}",
                                                      *(f"target:{h}" for h in sorted(chunk.target_hosts))])
                running[runner.submit(task_, parameters=dict(
                    dept_file=dept_file, run_id=run_id, owner=chunk.owner, number=chunk.number,
                    item_ids=list(chunk.item_ids)))] = chunk
            if not running:
                break
            done, _ = wait(list(running), timeout=2)
            for fut in done:
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


def _publish(dept: Department, summary: dict, report: Path | None) -> None:
    """Artifacts are a view: failing to show them must neither fail a finished run nor hide why a
    run failed."""
    try:
        artifacts.publish(dept, summary, report)
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("%s: the run's Prefect artifacts could not be written: %s", dept.name, exc)


def _execute(dept_file: str, flow_name: str, ignore_window: bool,
             choose: Callable[[Department, Ledger, int, set[str]], tuple[dict[str, list[int]], dict]],
             users: list[str] | None = None) -> dict:
    """The common life of a run: check, select items, process chunks, report, record. `users`
    (source logins) are the users the run takes, all when None: only their accounts are checked.
    A user whose own target account cannot take data waits with the reason; only problems that
    concern everyone (a source root, a target out of reach, a service account) stop the run."""
    logger = get_run_logger()
    dept = runtime.department(dept_file)
    window = Window.of(dept.schedule)
    if ignore_window:
        window = Window(None, None, window.zone)
    window.refuse_if_closed(dept)
    stopped = stopped_users(dept, users)
    problems = check_department(dept, users, waiting=stopped)
    if problems:
        raise ConfigError(f"{dept.name}: nothing was moved:\n  " + "\n  ".join(problems))
    ledger = runtime.ledger(dept)
    run_id = ledger.start_run(dept.name, flow_name, _flow_run_id())     # closes abandoned runs first
    started = time.monotonic()
    try:
        with _Heartbeat(ledger, run_id):
            todo, delta = choose(dept, ledger, run_id, set(stopped))
            for owner, why in stopped.items():
                logger.warning("%s: %s waits: %s", dept.name, owner, why)
            ledger.note_run(run_id, todo=sum(map(len, todo.values())), delta=delta, stopped_users=stopped)
            logger.info("%s: %d item(s) to process for %d user(s)", dept.name, sum(map(len, todo.values())),
                        len(todo))
            _, left = _run_chunks(dept_file, dept, ledger, run_id, todo, window)
            summary = run_summary(dept, ledger, run_id, delta, time.monotonic() - started)
            summary["stopped_users"] = {**stopped, **ledger.stopped_users(run_id)}
            if left:
                summary["left_for_next_run"] = left
            report = write_run_report(dept, summary)
            summary["report"] = str(report)
            ledger.finish_run(run_id, "completed", summary)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        ledger.finish_run(run_id, "failed", {"error": error})
        _publish(dept, {"run": run_id, "status": "failed", "error": error}, None)
        raise
    _publish(dept, summary, report)
    logger.info("%s: report at %s", dept.name, report)
    return summary


@flow(name="umstieg-migrate")
def migrate(department_file: str, users: list[str] | None = None, ignore_window: bool = False) -> dict:
    """Move a department: discover → extract → convert → load → verify → report.

    Run again, it is the delta pass: only new and changed items move, and items deleted at the
    source are reported (and removed at the target only if the department says so).
    """
    def choose(dept, ledger, run_id, waiting):
        found = discover(dept, ledger, run_id, users)
        return {owner: ids for owner, ids in found.todo.items() if owner not in waiting}, found.as_dict()
    return _execute(str(Path(department_file).resolve()), "migrate", ignore_window, choose, users)


@flow(name="umstieg-rerun")
def rerun(department_file: str, batch: int | None = None, error_class: str | None = None,
          user: str | None = None, ignore_window: bool = False) -> dict:
    """Retry exactly the failed items that match every given filter; nothing else runs."""
    def choose(dept, ledger, run_id, waiting):
        # a user who must wait keeps their failures (and reasons) for a rerun that can reach them
        items = [i for i in select_failed(ledger, dept.name, batch=batch, error_class=error_class, owner=user)
                 if i.owner not in waiting]
        reset_for_rerun(ledger, [i.id for i in items], run_id)
        todo: dict[str, list[int]] = {}
        for item in items:
            todo.setdefault(item.owner, []).append(item.id)
        return todo, {"rerun": len(items)}
    return _execute(str(Path(department_file).resolve()), "rerun", ignore_window, choose,
                    [user] if user else None)


@flow(name="umstieg-assess")
def assess(department_file: str) -> dict:
    """Inventory every source of the department (no data moves) and write the assessment."""
    from reports.migration import write_assessment
    dept = runtime.department(str(Path(department_file).resolve()))
    problems = check_department(dept)
    listing: list[tuple[str, object]] = []
    scan_folders = []
    for cfg in dept.sources:
        source = source_of(dept, cfg.name)
        for user in dept.users:
            folder = user.folder_in(cfg.name)
            try:
                listing += [(user.source, ref) for ref in source.discover(user.source, folder)]
            except (ItemError, TransientError, UserStopped, ConfigError, OSError) as exc:
                problems.append(f"source {cfg.name}: cannot list {user.source}: {exc}")
                continue
            if cfg.type == "folder" and (cfg.root / folder).is_dir():
                scan_folders.append((cfg.name, user.source, cfg.root / folder))
    result = write_assessment(dept, problems, runtime.ledger(dept), listing, scan_folders)
    artifacts.publish_markdown(dept, "assessment", Path(result["markdown"]))
    return result


@flow(name="umstieg-report")
def report(department_file: str) -> str:
    """Write a snapshot of the department's status from its ledger now (as `umstieg report` does)
    and show it in Prefect; nothing moves."""
    from reports.migration import department_status, write_status_report
    dept = runtime.department(str(Path(department_file).resolve()))
    path = write_status_report(dept, department_status(dept, runtime.ledger(dept)))
    artifacts.publish_markdown(dept, "status", path)
    return str(path)
