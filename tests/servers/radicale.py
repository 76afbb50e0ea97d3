"""A real CalDAV/CardDAV server, Radicale, started as a process on loopback.

Storage in a temporary folder, htpasswd authentication (plain text: test passwords only), each
user allowed into his own collections only (`owner_only`). Radicale creates a user's home
(`/<user>/`) the first time the user logs in. Limits can be set to exercise refusals:
`max_resource_size` (Radicale answers 412 for a larger object), `max_content_length` (413 for a
larger request) and `max_rrule` (400 for an RRULE with a larger COUNT).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from servers import free_port

__all__ = ["RadicaleServer"]


class RadicaleServer:
    """Radicale serving `<root>/collections` for `users` {name: password}."""

    def __init__(self, root: Path, users: dict[str, str], *, max_resource_size: int | None = None,
                 max_content_length: int | None = None, max_rrule: int | None = None) -> None:
        self.root = Path(root)
        self.users = users
        self.port = free_port()
        self.limits = {"max_resource_size": max_resource_size, "max_content_length": max_content_length,
                       "max_vevent_rrule_occurrence": max_rrule}
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        """Where Radicale keeps the collections: `<storage>/collection-root/<user>/<collection>/`."""
        return self.root / "collections"

    def start(self) -> "RadicaleServer":
        self.root.mkdir(parents=True, exist_ok=True)
        users = self.root / "users"
        users.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()), encoding="utf-8")
        limits = "".join(f"{k} = {v}\n" for k, v in self.limits.items() if v is not None)
        conf = self.root / "config"
        conf.write_text(
            "[server]\n"
            f"hosts = 127.0.0.1:{self.port}\n"
            f"{limits}"
            "[auth]\n"
            "type = htpasswd\n"
            f"htpasswd_filename = {users}\n"
            "htpasswd_encryption = plain\n"
            "delay = 0\n"
            "[rights]\n"
            "type = owner_only\n"
            "[storage]\n"
            f"filesystem_folder = {self.storage}\n"
            "[logging]\n"
            "level = warning\n"
            "mask_passwords = True\n"
            "[web]\n"
            "type = none\n", encoding="utf-8")
        self._log = open(self.root / "radicale.log", "wb")
        self._proc = subprocess.Popen([sys.executable, "-m", "radicale", "--config", str(conf)],
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self._proc.poll() is not None:
                    self._log.close()
                    log = (self.root / "radicale.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"Radicale did not start: {log}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("Radicale did not start within 30 s") from None
                time.sleep(0.1)

    def collection(self, user: str, name: str) -> Path:
        """The folder in which Radicale stores one collection's objects (one file per object)."""
        return self.storage / "collection-root" / user / name

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
        except ProcessLookupError:
            pass
        self._log.close()
        self._proc = None

    def __enter__(self) -> "RadicaleServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
