"""The department flows as Prefect flows, for teams with a Prefect server: deployments, workers,
departments whose chunks run on a Dask cluster, `umstieg run` with PREFECT_API_URL set.

Each flow is the plain body of flows/migrate.py run `InPrefect`: every chunk is a task run
(tagged with its hosts, for tag concurrency limits across departments), retried like the local
runner when it failed transiently, and the run's progress, tables and report are artifacts.
flows/migrate.py serves these objects under its own name (`flows/migrate.py:migrate` stays the
deployments' entrypoint); import Prefect only through here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# Without a configured server (a Dask department run from one machine), Prefect starts a temporary
# one and gives up after 20 s: a machine whose cores LibreOffice fills needs longer (24-60 s were
# measured). Waiting longer costs nothing when the server is quick. Set before Prefect reads its
# settings; a value the operator set is kept.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")

from prefect import flow, get_run_logger, task  # noqa: E402 (after the setting above)
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from core.department import Department
from core.errors import TransientError
from flows import artifacts
from flows.limits import Chunk
from flows.migrate import (CHUNK_RETRY_WAITS, Here, _chunks_at_once, assess_body, migrate_body, report_body,
                           rerun_body)
from flows.steps import process_chunk

__all__ = ["migrate", "rerun", "assess", "report", "chunk_task", "task_runner_for", "InPrefect"]


def _transient(task, task_run, state) -> bool:
    """Retry a chunk only when it failed for a reason that may go away by itself."""
    try:
        state.result()
    except TransientError:
        return True
    except BaseException:  # noqa: BLE001 - any other failure is not retried
        return False
    return False


@task(name="convert-chunk", retries=len(CHUNK_RETRY_WAITS), retry_delay_seconds=list(CHUNK_RETRY_WAITS),
      retry_condition_fn=_transient, cache_policy=NO_CACHE, persist_result=False)
def chunk_task(dept_file: str, run_id: int, owner: str, number: int, item_ids: list[int]) -> dict:
    """Take one chunk of one user's items through extract → convert → load → verify."""
    return process_chunk(dept_file, run_id, owner, number, item_ids)


def task_runner_for(dept: Department):
    """Threads on this machine by default; the department's Dask cluster when it names one."""
    if dept.cluster is not None:
        from prefect_dask import DaskTaskRunner
        return DaskTaskRunner(address=dept.cluster.address)
    return ThreadPoolTaskRunner(max_workers=_chunks_at_once(dept))


class _TaskRuns:
    """A chunk runner (see `Here.chunk_runner`) that runs each chunk as a `chunk_task` run."""

    def __init__(self, dept: Department, dept_file: str, run_id: int) -> None:
        self.runner = task_runner_for(dept)
        self.dept_file, self.run_id = dept_file, run_id

    def __enter__(self) -> "_TaskRuns":
        self.runner.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.runner.__exit__(*exc)

    def submit(self, chunk: Chunk):
        # tags name the hosts, for Prefect tag limits across several departments on one server
        task_ = chunk_task.with_options(tags=[f"source:{chunk.source_host}",
                                              *(f"target:{h}" for h in sorted(chunk.target_hosts))])
        return self.runner.submit(task_, parameters=dict(
            dept_file=self.dept_file, run_id=self.run_id, owner=chunk.owner, number=chunk.number,
            item_ids=list(chunk.item_ids)))

    @staticmethod
    def wait(futures: list, timeout: float) -> set:
        return wait(futures, timeout=timeout).done


class InPrefect(Here):
    """A run inside a Prefect flow run: task runs, the flow run's logger, artifacts."""

    @property
    def log(self):
        return get_run_logger()

    def flow_run(self) -> str | None:
        from prefect.runtime import flow_run
        return str(flow_run.id) if flow_run.id else None

    def chunk_runner(self, dept: Department, dept_file: str, run_id: int) -> _TaskRuns:
        return _TaskRuns(dept, dept_file, run_id)

    def in_flight_cap(self, dept: Department) -> int | None:
        """On Dask the cluster queues the chunks and only the host limits count."""
        return None if dept.cluster is not None else _chunks_at_once(dept)

    def progress(self, dept: Department, todo: dict[str, Sequence[int]]) -> artifacts.Progress:
        return artifacts.Progress(dept, todo)

    def publish(self, dept: Department, summary: dict, report: Path | None) -> None:
        artifacts.publish(dept, summary, report)

    def publish_markdown(self, dept: Department, what: str, path: Path) -> None:
        artifacts.publish_markdown(dept, what, path)


@flow(name="umstieg-migrate")
def migrate(department_file: str, users: list[str] | None = None, ignore_window: bool = False) -> dict:
    """Move a department: discover → extract → convert → load → verify → report.

    Run again, it is the delta pass: only new and changed items move, and items deleted at the
    source are reported (and removed at the target only if the department says so).
    """
    return migrate_body(department_file, users, ignore_window, via=InPrefect())


@flow(name="umstieg-rerun")
def rerun(department_file: str, batch: int | None = None, error_class: str | None = None,
          user: str | None = None, ignore_window: bool = False) -> dict:
    """Retry exactly the failed items that match every given filter; nothing else runs."""
    return rerun_body(department_file, batch, error_class, user, ignore_window, via=InPrefect())


@flow(name="umstieg-assess")
def assess(department_file: str) -> dict:
    """Inventory every source of the department (no data moves) and write the assessment."""
    return assess_body(department_file, via=InPrefect())


@flow(name="umstieg-report")
def report(department_file: str) -> str:
    """Write a snapshot of the department's status from its ledger now (as `umstieg report` does)
    and show it in Prefect; nothing moves."""
    return report_body(department_file, via=InPrefect())
