"""Prefect flows for one department: assess, migrate (also the delta pass) and rerun.

A Prefect task handles a chunk of items (tens to hundreds), never a single item: each task run
costs ~20 ms of orchestration, and maps of thousands of tasks destabilise a server. Tasks get the
department file's path and item ids, never documents, so they can run on any Dask worker.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from core.department import Department
from core.errors import ConfigError, ItemError, TransientError, UserStopped
from core.ledger import Ledger
from core.settings import usable_cpus
from flows import artifacts, runtime
from flows.steps import discover, process_chunk, reset_for_rerun, select_failed, source_of, targets_of
from reports.migration import run_summary, write_run_report

__all__ = ["migrate", "rerun", "assess", "check_department", "task_runner_for"]


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
    workers = dept.conversion.workers or usable_cpus()
    # two chunks per LibreOffice worker: one converts while the other reads, loads and verifies
    return ThreadPoolTaskRunner(max_workers=2 * workers)


def check_department(dept: Department) -> list[str]:
    """Every problem that must stop the department before anything moves (all at once)."""
    problems: list[str] = []
    for cfg in dept.sources:
        problems += source_of(dept, cfg.name).check([u.folder_in(cfg.name) for u in dept.users])
    for field_name, sink in targets_of(dept).items():
        problems += [p if field_name == "target" else f"{field_name}: {p}"
                     for p in sink.check([u.target for u in dept.users])]
    return problems


def stopped_users(dept: Department) -> dict[str, str]:
    """Users who must not move now, by source login, with why: their target account is missing or
    refuses the login (a message must never land in the wrong mailbox). Only they wait; the
    department goes on. Targets that can tell offer `user_problems(target logins)`."""
    by_target: dict[str, str] = {}
    for field_name, sink in targets_of(dept).items():
        probe = getattr(sink, "user_problems", None)
        if probe is not None:
            for login, why in probe([u.target for u in dept.users]).items():
                by_target.setdefault(login, f"{field_name}: {why}")
    return {u.source: by_target[u.target] for u in dept.users if u.target in by_target}


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run
    return str(flow_run.id) if flow_run.id else None


def _run_chunks(dept_file: str, dept: Department, ledger: Ledger, run_id: int,
                todo: dict[str, list[int]]) -> Counter:
    """Submit every chunk, wait for all, keep a progress artifact up to date."""
    size = dept.limits.chunk_size
    chunks = [(owner, n, ids[i:i + size]) for owner, ids in todo.items()
              for n, i in enumerate(range(0, len(ids), size), start=1)]
    progress = artifacts.Progress(dept, todo)
    tags = [f"converter:{socket.gethostname()}", f"target:{dept.target.root}"] + \
        [f"source:{s.name}" for s in dept.sources]
    counts: Counter = Counter()
    # The department decides where chunks run (threads here, or its Dask cluster), so the runner
    # is chosen now, not when the flow was decorated.
    with task_runner_for(dept) as runner:
        task_ = chunk_task.with_options(tags=tags)
        pending = [(runner.submit(task_, parameters=dict(dept_file=dept_file, run_id=run_id, owner=owner,
                                                         number=n, item_ids=ids)), owner, ids)
                   for owner, n, ids in chunks]
        while pending:
            done, _ = wait([f for f, _, _ in pending], timeout=2)
            still = []
            for fut, owner, ids in pending:
                if fut in done:
                    counts.update(fut.result())
                    progress.advance(owner, len(ids))
                else:
                    still.append((fut, owner, ids))
            pending = still
            progress.show()
    return counts


def _execute(dept_file: str, flow_name: str,
             select: Callable[[Department, Ledger, int], tuple[dict[str, list[int]], dict]]) -> dict:
    """The common life of a run: check, select items, process chunks, report, record."""
    logger = get_run_logger()
    dept = runtime.department(dept_file)
    problems = check_department(dept)
    if problems:
        raise ConfigError(f"{dept.name}: nothing was moved:\n  " + "\n  ".join(problems))
    ledger = runtime.ledger(dept)
    for abandoned in ledger.close_abandoned_runs(dept.name):
        logger.warning("%s: run %d had been cut off (its process is gone): marked interrupted", dept.name, abandoned)
    run_id = ledger.start_run(dept.name, flow_name, _flow_run_id())
    started = time.monotonic()
    try:
        todo, delta = select(dept, ledger, run_id)
        stopped = stopped_users(dept)
        for owner, why in stopped.items():
            if todo.pop(owner, None):
                logger.warning("%s: %s waits: %s", dept.name, owner, why)
        ledger.note_run(run_id, todo=sum(map(len, todo.values())), delta=delta, stopped_users=stopped)
        logger.info("%s: %d item(s) to process for %d user(s)", dept.name, sum(map(len, todo.values())), len(todo))
        _run_chunks(dept_file, dept, ledger, run_id, todo)
        summary = run_summary(dept, ledger, run_id, delta, time.monotonic() - started)
        summary["stopped_users"] = {**stopped, **ledger.stopped_users(run_id)}
        report = write_run_report(dept, summary)
        summary["report"] = str(report)
        ledger.finish_run(run_id, "completed", summary)
    except BaseException as exc:
        ledger.finish_run(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"[:2000]})
        raise
    artifacts.publish(dept, summary, report)
    logger.info("%s: report at %s", dept.name, report)
    return summary


@flow(name="umstieg-migrate")
def migrate(department_file: str, users: list[str] | None = None) -> dict:
    """Move a department: discover → extract → convert → load → verify → report.

    Run again, it is the delta pass: only new and changed items move, and items deleted at the
    source are reported (and removed at the target only if the department says so).
    """
    def select(dept, ledger, run_id):
        found = discover(dept, ledger, run_id, users)
        return found.todo, found.as_dict()
    return _execute(str(Path(department_file).resolve()), "migrate", select)


@flow(name="umstieg-rerun")
def rerun(department_file: str, batch: int | None = None, error_class: str | None = None,
          user: str | None = None) -> dict:
    """Retry exactly the failed items that match every given filter; nothing else runs."""
    def select(dept, ledger, run_id):
        items = select_failed(ledger, dept.name, batch=batch, error_class=error_class, owner=user)
        reset_for_rerun(ledger, [i.id for i in items], run_id)
        todo: dict[str, list[int]] = {}
        for item in items:
            todo.setdefault(item.owner, []).append(item.id)
        return todo, {"rerun": len(items)}
    return _execute(str(Path(department_file).resolve()), "rerun", select)


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
    return write_assessment(dept, problems, runtime.ledger(dept), listing, scan_folders)
