"""Shared fixtures: the developer corpus, generated documents, a real LibreOffice pool."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

from helpers import CORPUS
from servers import free_port
from servers.postgres import as_postgres

# Every pool the tests start keeps its profiles under this directory, so the end of the session
# can prove that no LibreOffice process of ours survived.
RUNTIME_BASE = Path(tempfile.mkdtemp(prefix="umstieg-test-runtime-"))

# Every process this session starts inherits this marker (workers copy os.environ, LibreOffice
# gets the worker's), wherever its pool keeps its profiles (tmp_path, the default temporary
# folder of flows/runtime.py, a Dask worker's): the end of the session finds them by it, and
# never mistakes someone else's LibreOffice on this machine for ours.
SESSION_MARKER = ("UMSTIEG_TEST_SESSION", uuid.uuid4().hex)
os.environ[SESSION_MARKER[0]] = SESSION_MARKER[1]

# Prefect: an ephemeral server with its own database per test session, quiet, no telemetry.
os.environ["PREFECT_HOME"] = str(RUNTIME_BASE / "prefect-home")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
# the tests that run the Prefect flows themselves start Prefect's temporary server once: on a busy
# machine it needs longer than Prefect's 20 s (as flows/prefect_flows.py says for umstieg itself)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")


def processes_using(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line mentions `marker`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def session_processes() -> list[psutil.Process]:
    """Live processes started by this test session, of every kind: LibreOffice and its workers,
    Prefect's servers, PostgreSQL, Dovecot, Samba, Radicale, WsgiDAV, Nextcloud's `php -S`, Dask.
    They carry the session's marker in the environment they started with (a server that cleans
    its environment later still shows the one it was started with in /proc/PID/environ)."""
    wanted = "=".join(SESSION_MARKER).encode()
    found = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE or p.pid == os.getpid():
                continue
            with open(f"/proc/{p.pid}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def _leftovers() -> list[psutil.Process]:
    by_pid = {p.pid: p for p in processes_using(str(RUNTIME_BASE)) + session_processes()}
    return list(by_pid.values())


def _close_what_this_process_would_close_at_exit() -> None:
    """The pools the flows started in this process and Prefect's temporary servers (a test that
    calls a Prefect flow starts one) end at this process's exit, as in a real run (atexit): ended
    here first, so that only what nothing would end counts."""
    if "flows.runtime" in sys.modules:
        sys.modules["flows.runtime"].close_all()
    prefect_server = sys.modules.get("prefect.server.api.server")
    for server in list(getattr(getattr(prefect_server, "SubprocessASGIServer", None), "_instances", {}).values()):
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 - what is left is found and named below
            print(f"\nPrefect's temporary server did not stop: {exc}")


def _described(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {p.name()} ({' '.join(p.cmdline())[:120]})"
    except psutil.Error:
        return str(p.pid)


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when anything it started outlived it (a server, LibreOffice, a worker);
    end those processes, so that no test run leaves a port or memory taken on a shared machine."""
    import time
    _close_what_this_process_would_close_at_exit()
    deadline = time.monotonic() + 10         # workers whose pool just died end themselves in < 1 s;
    while (leftovers := _leftovers()) and time.monotonic() < deadline:   # servers told to stop, in a few
        time.sleep(0.2)
    if leftovers:
        names = [_described(p) for p in leftovers]
        for p in leftovers:
            try:
                p.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(leftovers, timeout=5)
        session.exitstatus = 1
        print(f"\nFAILED: {len(leftovers)} process(es) started by the tests outlived them: " + "; ".join(names))


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The developer corpus (../shared/corpus); tests that need it skip when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"corpus tests skipped: {CORPUS} not found (the developer corpus is not on this machine)")
    return CORPUS


def runtime_dir(name: str) -> Path:
    path = RUNTIME_BASE / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def pool():
    """Two real LibreOffice workers shared by the tests that do not break workers on purpose."""
    from converters.pool import ConverterPool
    from core.settings import ConversionSettings

    with ConverterPool(ConversionSettings(workers=2, timeout=150, runtime_dir=runtime_dir("shared"))) as p:
        yield p


@pytest.fixture
def env_without_proxy():
    """A copy of the environment with no proxy variables (for control runs of plain soffice)."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


# ----------------------------------------------------------------------- real servers on loopback


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server from Debian's package, started for the session on a loopback port."""
    import glob
    import shutil
    import subprocess
    import time
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert bindirs, "PostgreSQL is not installed: run bin/setup"
    bindir = Path(bindirs[-1])
    # not under pytest's tmp dirs: they are private to root, and the server runs as `postgres`
    base = Path(tempfile.mkdtemp(prefix="umstieg-test-pg-"))
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run(as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                 "--no-sync"]), check=True, capture_output=True)
    subprocess.run(as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                                 f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]),
                   check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "ledger"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/ledger"
    finally:
        subprocess.run(as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server (its own database) on a loopback port: its API URL.

    Needed wherever tasks run in other processes (Dask workers, Prefect workers): they report to
    it, since an embedded server lives only inside the process that started it.
    """
    import signal
    import subprocess
    import sys
    import time
    import urllib.request
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(RUNTIME_BASE / "prefect-server-home"))
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the Prefect server did not start"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def dask_cluster(prefect_server):
    """A Dask scheduler and two single-process workers on loopback, started for the session."""
    import subprocess
    import sys
    import time
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, UMSTIEG_RUNTIME_DIR=str(RUNTIME_BASE / "dask"), PREFECT_API_URL=prefect_server)
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
                 "--nthreads", "2", "--no-dashboard", "--host", "127.0.0.1", "--no-nanny"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout=5) as client:
                    if len(client.scheduler_info()["workers"]) == 2:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the Dask cluster did not come up"
            time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="session")
def nextcloud_server():
    """A real Nextcloud 27 (../shared/nextcloud) on a loopback port, for the whole session.

    Tests share the server, never an account: each makes its own with `new_user`. Skips with the
    reason when the server or PHP is not on this machine."""
    from servers.nextcloud import NextcloudServer, nextcloud_missing
    reason = nextcloud_missing()
    if reason:
        pytest.skip(f"real Nextcloud tests skipped: {reason}")
    server = NextcloudServer(Path(tempfile.mkdtemp(prefix="umstieg-test-nextcloud-")))
    server.start()
    try:
        yield server
    finally:
        server.remove()
