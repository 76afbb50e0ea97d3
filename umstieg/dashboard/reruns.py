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
Each rerun is noted in the dashboard's store (number, department, filters, who, when, the child's
host and pid, its log): after a restart its page reads the same run from the ledger and the same
log, and its number is never given to another rerun.
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
    pid: int
    log: Path = field(repr=False)
    host: str = field(default_factory=socket.gethostname)
    #: the child process, when this dashboard process started it (None after a restart)
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        # started before a restart: alive while a rerun process of that id exists on this host
        return self.host == socket.gethostname() and _is_rerun(self.pid)

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


def _is_rerun(pid: int) -> bool:
    """Whether `pid` is a live `umstieg rerun` process (not another process that got its id later)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"umstieg" in words and b"rerun" in words


class Reruns:
    """The reruns this dashboard started (one at a time per department), noted in its store, so
    that each rerun keeps its number and its page after a restart."""

    def __init__(self, store) -> None:
        self._lock = threading.Lock()
        self._store = store
        self._jobs: dict[int, Rerun] = {}          # started by this process: their Popen objects

    def busy(self, department: str) -> Rerun | None:
        """A rerun of the department that is still going on (also one started before a restart)."""
        with self._lock:
            mine = next((j for j in self._jobs.values() if j.department == department and j.running), None)
        return mine or next((j for j in self.of(department, limit=5) if j.running), None)

    def start(self, department: str, department_file: Path, work_dir: Path, by: str, *,
              error_class: str | None = None, user: str | None = None, batch: int | None = None) -> Rerun:
        with self._lock:
            busy = [j for j in self._jobs.values() if j.department == department and j.running]
            if busy:
                return busy[0]
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
            host = socket.gethostname()
            number = self._store.add_rerun(department, filters, started, by, host, process.pid, log)
            job = Rerun(number, department, filters, started, by, process.pid, log, host, process)
            self._jobs[number] = job
            return job

    def get(self, number: int) -> Rerun | None:
        with self._lock:
            if number in self._jobs:
                return self._jobs[number]
        row = self._store.rerun(number)
        return _from_row(row) if row else None

    def of(self, department: str, limit: int = 10) -> list[Rerun]:
        """The department's latest reruns started from a dashboard with this store, newest first."""
        with self._lock:
            mine = dict(self._jobs)
        return [mine.get(r["id"]) or _from_row(r) for r in self._store.reruns_of(department, limit)]

    def stop_all(self, timeout: float = 20) -> None:
        """End every running rerun (their process groups: the flow and its LibreOffice workers)."""
        with self._lock:
            jobs = [(j, j.process) for j in self._jobs.values() if j.process is not None]
        for job, process in jobs:
            if job.running:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, process in jobs:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()


def _from_row(row: dict) -> Rerun:
    return Rerun(row["id"], row["department"], row["filters"], row["started"], row["by"], row["pid"], row["log"],
                 row["host"])
