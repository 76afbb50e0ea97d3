"""LibreOffice workers as the pool sees them: local processes it owns, or remote unoservers.

A local worker is `python -m converters.soffice_server` in a process group of its own (LibreOffice's
launcher and soffice.bin inherit it), so one `killpg` removes every process of that worker: the
pid file unoserver writes names the launcher, not the worker, and killing it alone orphans
soffice.bin with its port still bound.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from xmlrpc.client import Fault, ServerProxy, Transport

import psutil
from unoserver.client import UnoClient

from core.errors import ConfigError
from core.settings import url_host

__all__ = ["LOAD_REPORT", "Worker", "LocalWorker", "RemoteWorkerHandle", "WorkerDied", "WorkerOutOfMemory",
           "WorkerTimeout", "ConversionRefused", "live_worker_groups", "kill_all_workers", "probe"]

log = logging.getLogger("umstieg.converters")

_PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Prefix of the load options among the filter options (kept equal to converters.soffice_server.LOAD_OPTION,
#: which runs under LibreOffice's Python and is never imported here).
LOAD_OPTION = "umstieg-load:"
#: Suffix of the report a local worker writes beside its output (converters.soffice_server.LOAD_REPORT).
LOAD_REPORT = ".umstieg-load.json"

#: How long a remote worker that failed stays out of the pool before it is tried again.
REMOTE_COOLDOWN = 60.0

#: Seconds a liveness probe (unoserver's `info()`) may take. unoserver's XML-RPC server answers one
#: request at a time, so behind a hung conversion the probe would otherwise wait for ever.
PROBE_TIMEOUT = 10.0

# Every local worker's process group, so that exit paths (atexit, signals) can remove them all.
# Re-entrant: the SIGTERM handler kills the groups from the main thread, which may be holding
# the lock at that moment (starting or killing a worker); a plain Lock would deadlock there.
_GROUPS: set[int] = set()
_GROUPS_LOCK = threading.RLock()


def live_worker_groups() -> set[int]:
    """Process groups of local workers started by this process and not yet killed."""
    with _GROUPS_LOCK:
        return set(_GROUPS)


def kill_all_workers() -> None:
    """Kill every local worker this process started (used on exit and on signals)."""
    for pgid in live_worker_groups():
        _killpg(pgid)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    with _GROUPS_LOCK:
        _GROUPS.discard(pgid)


class WorkerDied(Exception):
    """The worker's LibreOffice is gone (crashed, killed, or the remote stopped answering)."""


class WorkerOutOfMemory(WorkerDied):
    """LibreOffice grew beyond the memory limit on this document; the worker has been killed."""


class WorkerTimeout(Exception):
    """The conversion did not finish in time; the worker has been killed."""


class ConversionRefused(Exception):
    """LibreOffice answered, but could not load or export this document."""


class _Client(UnoClient):
    """unoserver's client, asking the server's info() once per worker instead of once per call.

    The stock client also retries a dead server for ~40 s; the pool supervises liveness itself.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._info = None

    def _connect(self, proxy, retries=1, sleep=0):
        if self._info is None:
            self._info = super()._connect(proxy, retries=1, sleep=0)
        return self._info


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _TimeoutTransport(Transport):
    """xmlrpc's HTTP transport with a socket timeout (the stock one has none)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a unoserver answers `info()` at host:port within `timeout` seconds."""
    try:
        with ServerProxy(f"http://{url_host(host)}:{port}", allow_none=True,
                         transport=_TimeoutTransport(timeout)) as proxy:
            proxy.info()
        return True
    except (OSError, Fault):          # refused, reset, timed out (socket.timeout is an OSError)
        return False


class Worker:
    """One place where LibreOffice converts documents, one at a time."""

    id: str
    conversions: int = 0
    remote: bool = False
    _uno: UnoClient | None = None         # the XML-RPC client of the worker's current port

    def start(self) -> None:
        """Make the worker ready (start a local one, reach a remote one), or raise WorkerDied."""
        raise NotImplementedError

    def convert(self, src: Path, dst: Path, import_filter: str | None, export_filter: str, timeout: float,
                filter_options: list[str] | None = None, memory_limit: int = 0,
                load_options: dict[str, str] | None = None) -> None:
        """Convert `src` into `dst` (an ODF path, or a PDF for rendering), or raise WorkerDied /
        WorkerOutOfMemory / WorkerTimeout / ConversionRefused.

        `import_filter` None or "": LibreOffice's type detection chooses it.
        `filter_options` ("Name=Value") go to the export filter, e.g. "PageRange=1-12" for PDF.
        `load_options` ("RepairPackage": "true", "RefusePlainText": "true") go to the worker's load
        (converters.soffice_server); a plain unoserver ignores them.
        `memory_limit` (bytes, 0 = none): LibreOffice is killed when it grows beyond it meanwhile.
        """
        client = self._client()
        error: list[BaseException] = []
        filter_options = list(filter_options or []) + [f"{LOAD_OPTION}{k}={v}" for k, v in (load_options or {}).items()]
        import_filter = import_filter or None

        def call() -> None:
            try:
                # update_index=False: keep tables of contents as the author's Office computed
                # them; LibreOffice's page numbers would differ, and updating costs time.
                client.convert(inpath=str(src), outpath=str(dst), filtername=export_filter,
                               filter_options=list(filter_options or []),
                               infiltername=import_filter, update_index=False)
            except BaseException as exc:  # noqa: BLE001 - reported to the supervising thread
                error.append(exc)

        # unoserver's client has no timeout: the call runs in a thread the pool can abandon.
        thread = threading.Thread(target=call, daemon=True, name=f"convert-{self.id}")
        thread.start()
        deadline = time.monotonic() + timeout
        while True:
            thread.join(max(0.0, min(_WATCH_EVERY, deadline - time.monotonic())))
            if not thread.is_alive():
                break
            if memory_limit and (rss := self.rss()) > memory_limit:
                # one document can grow LibreOffice without bound (a few hundred KB of empty
                # sheets reach 18 GB): stopped here, before the machine's OOM killer picks a victim
                self.kill()
                thread.join(5)
                raise WorkerOutOfMemory(f"LibreOffice grew to {rss / 2**20:.0f} MiB (limit "
                                        f"{memory_limit / 2**20:.0f} MiB)")
            if time.monotonic() >= deadline:
                self.kill()
                thread.join(5)
                raise WorkerTimeout(f"no answer after {timeout:g} s")
        self.conversions += 1
        if not error:
            return
        exc = error[0]
        if self._gone(grace=_DEATH_GRACE):
            raise WorkerDied(f"LibreOffice died while converting ({_short(exc)})") from exc
        if isinstance(exc, Fault):
            if _BRIDGE_GONE in str(exc.faultString):
                # LibreOffice went away during the call; its process may not be reaped yet
                self.kill()
                raise WorkerDied(f"LibreOffice died while converting ({_fault_message(exc)})") from exc
            raise ConversionRefused(_fault_message(exc)) from exc
        if isinstance(exc, (OSError, ConnectionError)):
            # the connection broke but the process still looks alive: treat as dead
            self.kill()
            raise WorkerDied(f"connection to the worker broke ({_short(exc)})") from exc
        raise ConversionRefused(_short(exc)) from exc

    def ready(self) -> bool:
        """Whether the pool may hand this worker a document now."""
        return True

    def _gone(self, grace: float) -> bool:
        """Whether LibreOffice is gone, looking again for `grace` seconds: a killed soffice.bin can
        still be exiting when its error reaches the client, and its error then reads like any
        refusal (a document blamed for a crash would be recorded unreadable instead of retried)."""
        deadline = time.monotonic() + grace
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _client(self) -> UnoClient:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def rss(self) -> int:
        """Resident memory of the worker's LibreOffice, in bytes (0 when unknown)."""
        return 0


#: How often (seconds) a conversion in progress is looked at: its time, its worker's memory.
_WATCH_EVERY = 0.25
#: How long (seconds) a worker whose conversion failed is watched for dying before the failure is
#: taken for the document's (see Worker._gone).
_DEATH_GRACE = 0.5

#: The UNO exception class unoserver relays when LibreOffice's end of the bridge is gone.
_BRIDGE_GONE = "com.sun.star.lang.DisposedException"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _fault_message(fault: Fault) -> str:
    """The useful last line of a LibreOffice error relayed by unoserver, without C++ source paths."""
    text = str(fault.faultString or "").strip()
    # unoserver relays "<class 'X'>:message"; keep the message, drop the class repr
    if ">:" in text:
        text = text.split(">:", 1)[1]
    text = (text.strip().splitlines() or ["LibreOffice refused the document"])[-1]
    # a plain unoserver (remote) relays LibreOffice's own text: "… at ./pyuno/source/….cxx:91 …"
    text = re.sub(r"\s*at \S+\.(?:cxx|hxx|cpp|c):\d+", "", text).strip()
    return text[:300] or "LibreOffice refused the document"


class LocalWorker(Worker):
    """A LibreOffice worker this pool starts, owns and kills."""

    def __init__(self, slot: int, generation: int, runtime_dir: Path, soffice: str,
                 python: str, startup_timeout: float) -> None:
        self.id = f"w{slot}.{generation}"
        self.slot = slot
        # two profiles per slot, alternating by generation: a successor warms up on one while
        # its predecessor still converts on the other
        self.profile = runtime_dir / f"profile-w{slot}{'ab'[generation % 2]}"
        self.log_path = runtime_dir / f"worker-w{slot}.log"
        self._office: psutil.Process | None = None
        self.soffice = soffice
        self.python = python
        self.startup_timeout = startup_timeout
        self.conversions = 0
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._stopped = False                 # set by kill(): a start in progress must give up
        self._proc_lock = threading.Lock()

    def start(self) -> None:
        """Start the worker and wait until it answers, or raise WorkerDied."""
        last: Exception | None = None
        for _ in range(3):          # a port taken between probing and binding: try other ports
            self.port, uno_port = _free_port(), _free_port()
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
            with self._proc_lock, open(self.log_path, "ab") as logfile:
                if self._stopped:
                    raise WorkerDied(f"worker {self.id} was stopped while starting")
                self.process = subprocess.Popen(
                    [self.python, "-m", "converters.soffice_server", "--port", str(self.port),
                     "--uno-port", str(uno_port), "--profile", str(self.profile), "--soffice", self.soffice,
                     "--parent-pid", str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, env=env,
                    start_new_session=True, cwd=str(self.profile.parent))
                with _GROUPS_LOCK:
                    _GROUPS.add(self.process.pid)
            try:
                self._wait_ready()
                return
            except WorkerDied as exc:
                last = exc
                self._terminate()
                shutil.rmtree(self.profile, ignore_errors=True)   # a broken profile must not stay
        raise WorkerDied(f"worker {self.id} did not start: {last}; see {self.log_path}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        process = self.process
        while time.monotonic() < deadline:
            if process is None or process.poll() is not None:
                status = process.returncode if process is not None else "unknown"
                raise WorkerDied(f"exited with status {status} during start-up")
            if probe("127.0.0.1", self.port, timeout=max(1.0, min(PROBE_TIMEOUT, deadline - time.monotonic()))):
                return
            time.sleep(0.1)
        raise WorkerDied(f"no answer within {self.startup_timeout:g} s")

    def _client(self) -> UnoClient:
        if self._uno is None or self._uno.port != str(self.port):
            self._uno = _Client(server="127.0.0.1", port=str(self.port), host_location="local")
        return self._uno

    def alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        return self.office_pid() is not None

    def _office_processes(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return []
        return [p for p in children if _is_office(p)]

    def office_pid(self) -> int | None:
        """The pid of this worker's live soffice.bin (the process that does the work), if any."""
        for p in self._office_processes():
            try:
                if p.name() == "soffice.bin":
                    return p.pid
            except psutil.Error:
                continue
        return None

    def kill(self) -> None:
        """Kill the worker for good; a start still in progress gives up."""
        with self._proc_lock:
            self._stopped = True
        self._terminate()

    def _terminate(self) -> None:
        with self._proc_lock:
            process = self.process
        if process is None:
            return
        _killpg(process.pid)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            log.warning("worker %s did not exit after SIGKILL", self.id)

    def rss(self) -> int:
        """RSS of soffice.bin (the launcher's is a few MB and constant)."""
        try:
            if self._office is None:
                pid = self.office_pid()
                self._office = psutil.Process(pid) if pid else None
            return self._office.memory_info().rss if self._office else 0
        except psutil.Error:
            self._office = None
            return 0


def _is_office(p: psutil.Process) -> bool:
    try:
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return p.name().startswith(("soffice", "oosplash"))
    except psutil.Error:
        return False


class RemoteWorkerHandle(Worker):
    """A unoserver on another host: the pool sends it documents but cannot kill or recycle it.

    After a failure it cools down for `cooldown` seconds, then is probed again; `unreachable_for()`
    says how long it has been failing without a break, so the pool can give up on it.
    """

    remote = True

    def __init__(self, host: str, port: int, cooldown: float = REMOTE_COOLDOWN,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
        host = host.strip("[]")                       # IPv6 is kept bare, bracketed in URLs and ids
        self.id = f"{url_host(host)}:{port}"
        self.host, self.port = host, port
        self.url = f"http://{url_host(host)}:{port}"
        self.conversions = 0
        self.cooldown, self.probe_timeout = cooldown, probe_timeout
        self._uno = _Client(server=url_host(host), port=str(port), host_location="remote")
        self._down_since: float | None = None         # start of the current outage
        self._next_probe = 0.0

    def start(self) -> None:
        if not self.alive():
            raise WorkerDied(f"remote worker {self.id} does not answer")

    def alive(self) -> bool:
        return probe(self.host, self.port, self.probe_timeout)

    def _client(self) -> UnoClient:
        return self._uno

    def ready(self) -> bool:
        """False while cooling down after a failure; then true again once it answers."""
        if self._down_since is None:
            return True
        if time.monotonic() < self._next_probe:
            return False
        if self.alive():
            self._down_since = None
            return True
        self._next_probe = time.monotonic() + self.cooldown
        return False

    def unreachable_for(self) -> float:
        """Seconds since this worker last failed without answering again (0 when it is fine)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def kill(self) -> None:
        """A remote worker cannot be killed from here; the pool stops using it for a while."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        self._next_probe = now + self.cooldown


def find_worker_python() -> str:
    """A Python that can import both `uno` and unoserver, for running local workers."""
    candidates = [os.environ.get("UMSTIEG_WORKER_PYTHON"), sys.executable, "/usr/bin/python3"]
    for python in filter(None, candidates):
        try:
            ok = subprocess.run([python, "-c", "import uno, unoserver.server"], capture_output=True,
                                timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return python
    raise ConfigError(
        "no Python here can import LibreOffice's `uno` module together with unoserver. "
        "Run bin/setup (it installs python3-uno and builds .venv from /usr/bin/python3 with "
        "--system-site-packages), or set UMSTIEG_WORKER_PYTHON to such an interpreter.")
