"""A PostgreSQL server of its own for a test that stops and starts it (the ledger gone mid-run) or
that needs a password (scram-sha-256), from Debian's package, on a port the OS chose."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresServer", "as_postgres", "postgres_missing"]


def postgres_missing() -> str | None:
    """Why no PostgreSQL server can run here (None when one can)."""
    return None if glob.glob("/usr/lib/postgresql/*/bin/postgres") else "PostgreSQL is not installed: run bin/setup"


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` system user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresServer:
    """One cluster with a database `ledger`, owned by `postgres` whose password is `password`."""

    def __init__(self) -> None:
        self.bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
        # not under pytest's tmp dirs: they are private to root, and the server runs as `postgres`
        self.base = Path(tempfile.mkdtemp(prefix="umstieg-test-pgsrv-"))
        self.data = self.base / "data"
        self.password = "pw-" + os.urandom(6).hex()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/ledger"

    def create(self) -> "PostgresServer":
        self.data.mkdir()
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            for p in (self.base, self.data, pwfile):
                shutil.chown(p, "postgres")
        subprocess.run(as_postgres([str(self.bindir / "initdb"), "-D", str(self.data), "-A", "scram-sha-256",
                                     "-U", "postgres", f"--pwfile={pwfile}", "--no-sync"]),
                       check=True, capture_output=True)
        self.start()
        subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "ledger"], check=True, capture_output=True, env=dict(os.environ, PGPASSWORD=self.password))
        return self

    def start(self) -> None:
        subprocess.run(as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "120", "-l",
                                     str(self.base / "log"), "-o",
                                     f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off",
                                     "start"]), check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        """Gone at once, as a crashed or unplugged server is (no goodbye to the clients)."""
        subprocess.run(as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
