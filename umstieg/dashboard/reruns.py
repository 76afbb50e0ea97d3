"""Reruns started from the dashboard: the same operation as `umstieg rerun`, in its own process.

A rerun is the `umstieg rerun` command run as a child process of the dashboard (flows.migrate runs
the flow in that process, reporting to the Prefect server named by PREFECT_API_URL when one is
configured: the child inherits the environment). Its own process keeps the LibreOffice pool and
the flow's work out of the web server.

What became of a rerun is read from the ledger, never from the child's exit status (1 means both
"some items failed again" and "it crashed"): the run the child recorded (the ledger writes the
host and pid of the process that opened a run) says running, completed, failed with its error,
or refused because another run of the department was alive. A child that ended without
recording any run crashed before it could: the last line of its log says why.

Each department's rerun logs go to its own work_dir (`dashboard/reruns/`, outside the report
folder the dashboard serves), one file per rerun named by its start time, never overwritten.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["Rerun", "Reruns", "log_dir"]


def log_dir(work_dir: Path) -> Path:
    return Path(work_dir) / "dashboard" / "reruns"


@dataclass
class Rerun:
    id: int
    department: str
    filters: dict
    started: datetime
    by: str
    process: subprocess.Popen = field(repr=False)
    log: Path = field(repr=False)
    host: str = field(default_factory=socket.gethostname)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid

    def last_words(self, limit: int = 400) -> str:
        """The last non-empty line of the child's log (what a crash said last), cut to `limit`."""
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                tail = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return lines[-1][:limit] if lines else ""


class Reruns:
    """The reruns this dashboard started (one at a time per department)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, Rerun] = {}

    def busy(self, department: str) -> Rerun | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.department == department and j.running), None)

    def start(self, department: str, department_file: Path, work_dir: Path, by: str, *,
              error_class: str | None = None, user: str | None = None, batch: int | None = None) -> Rerun:
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
            folder = log_dir(work_dir)
            folder.mkdir(parents=True, exist_ok=True)
            started = datetime.now(timezone.utc)
            stamp = started.strftime("%Y%m%dT%H%M%SZ")
            for n in range(1, 1000):               # a name of its own: no log is ever written over
                log = folder / f"rerun-{stamp}-{n}.log"
                try:
                    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                    break
                except FileExistsError:
                    continue
            env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
            with os.fdopen(fd, "wb") as out:
                process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                           env=env, start_new_session=True)
            job = Rerun(number, department, filters, started, by, process, log)
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
