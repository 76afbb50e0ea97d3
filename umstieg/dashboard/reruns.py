"""Reruns started from the dashboard: the same operation as `umstieg rerun`, in its own process.

A rerun is the `umstieg rerun` command run as a child process of the dashboard: it calls the
rerun flow, which reports to the Prefect server named by PREFECT_API_URL when one is configured
(the child inherits the environment) and runs with an embedded Prefect otherwise. Its own process
keeps the LibreOffice pool and the flow's work out of the web server; its progress is read back
from the ledger like the command's progress bar.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["Rerun", "Reruns"]


@dataclass
class Rerun:
    id: int
    department: str
    filters: dict
    started: datetime
    by: str
    process: subprocess.Popen = field(repr=False)
    log: Path = field(repr=False)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()


class Reruns:
    """The reruns this dashboard started (one at a time per department)."""

    def __init__(self, log_dir: Path) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, Rerun] = {}
        self._log_dir = log_dir

    def start(self, department: str, department_file: Path, by: str, *, error_class: str | None = None,
              user: str | None = None, batch: int | None = None) -> Rerun:
        with self._lock:
            busy = [j for j in self._jobs.values() if j.department == department and j.running]
            if busy:
                return busy[0]
            number = max(self._jobs, default=0) + 1
            cmd = [sys.executable, "-m", "umstieg", "rerun", str(department_file)]
            filters = {"error_class": error_class, "user": user, "batch": batch}
            for option, value in (("--error-class", error_class), ("--user", user), ("--batch", batch)):
                if value not in (None, ""):
                    cmd += [option, str(value)]
            self._log_dir.mkdir(parents=True, exist_ok=True)
            log = self._log_dir / f"rerun-{department}-{number}.log"
            env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
            with open(log, "wb") as out:
                process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                           env=env, start_new_session=True)
            job = Rerun(number, department, filters, datetime.now(timezone.utc), by, process, log)
            self._jobs[number] = job
            return job

    def get(self, number: int) -> Rerun | None:
        with self._lock:
            return self._jobs.get(number)

    def of(self, department: str) -> list[Rerun]:
        with self._lock:
            return sorted((j for j in self._jobs.values() if j.department == department), key=lambda j: -j.id)

    def stop_all(self, timeout: float = 20) -> None:
        """End every running rerun (their process groups: the flow and its LibreOffice workers)."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.running:
                try:
                    os.killpg(job.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for job in jobs:
            try:
                job.process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(job.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                job.process.wait()
