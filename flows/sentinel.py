"""What a killed run leaves behind, ended: a small process that outlives the run by a moment.

`umstieg run` starts Prefect's temporary API server (a uvicorn process) the first time a flow
runs. Prefect stops it at exit, but a run killed with SIGKILL (by an operator, by the kernel's
out-of-memory killer) runs no exit code, and the server lives on, holding a port and 200 MB, for
ever. Our LibreOffice workers watch their pool and end themselves; a library's process cannot be
taught that. So `guard()` starts this sentinel beside the run: it holds the read end of a pipe
whose write end only the run holds. When the run ends, however it ends, the pipe closes; the
sentinel then ends every process that carries the run's guard token in its environment (what
the run started and left behind: children inherit the environment), politely first.

    python -m flows.sentinel <token>      (stdin: the pipe)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

__all__ = ["guard", "GUARD_ENV"]

#: The environment variable that marks the processes of one run.
GUARD_ENV = "UMSTIEG_RUN_GUARD"
_write_end: int | None = None


def guard() -> str:
    """Mark this process's future children and start the sentinel (once per process); returns the token."""
    global _write_end
    if _write_end is not None:
        return os.environ[GUARD_ENV]
    token = uuid.uuid4().hex
    os.environ[GUARD_ENV] = token
    read_end, write_end = os.pipe()          # both not inheritable: only the sentinel gets the read end
    subprocess.Popen([sys.executable, "-m", "flows.sentinel", token], stdin=read_end,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},   # not marked itself
                     start_new_session=True)   # a kill of the run's process group spares it
    os.close(read_end)
    _write_end = write_end                   # open until this process ends
    return token


def _marked(token: str) -> list:
    import psutil
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(GUARD_ENV) == token:
                found.append(p)
        except psutil.Error:                  # gone meanwhile, or not ours to read
            continue
    return found


def main(token: str) -> None:
    import psutil
    while sys.stdin.buffer.read(65536):      # returns b"" when the run has ended
        pass
    time.sleep(1.0)                          # a run that exits normally stops its server itself
    left = _marked(token)
    for p in left:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


if __name__ == "__main__":
    main(sys.argv[1])
