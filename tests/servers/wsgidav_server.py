"""A real WebDAV server, wsgidav (served by cheroot), started as a process on loopback.

The stand-in for OX Drive's WebDAV interface (`/servlet/webdav.infostore`): plain RFC 4918, basic
auth with one password per user, no Nextcloud extensions (no chunking, no X-OC-MTime, no
checksums). Each user's folder is a share of its own under the mount path, so a user reaches
only his files, as in OX.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from servers import free_port

__all__ = ["WsgiDavServer"]


class WsgiDavServer:
    """wsgidav serving `root/<user>` at `<mount>/<user>` for every user in `users` {name: password}."""

    def __init__(self, root: Path, users: dict[str, str], mount: str = "/servlet/webdav.infostore") -> None:
        self.root = Path(root)
        self.users = users
        self.mount = mount
        self.port = free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.mount}"

    def folder(self, user: str) -> Path:
        return self.root / user

    def start(self) -> "WsgiDavServer":
        shares, mapping = {}, {}
        for user, password in self.users.items():
            (self.root / user).mkdir(parents=True, exist_ok=True)
            share = f"{self.mount}/{user}"
            shares[share] = str(self.root / user)
            mapping[share] = {user: {"password": password}}
        config = {
            "host": "127.0.0.1", "port": self.port, "verbose": 0,
            "provider_mapping": shares,
            "http_authenticator": {"domain_controller": None, "accept_basic": True, "accept_digest": False,
                                   "default_to_digest": False},
            "simple_dc": {"user_mapping": mapping},
            "dir_browser": {"enable": False},
            "lock_storage": True,
            "logging": {"enable": False},
            "server_args": {"numthreads": 16},
        }
        conf = self.root.parent / f"wsgidav-{self.port}.yaml"
        conf.write_text(yaml.safe_dump(config), encoding="utf-8")
        self._proc = subprocess.Popen([sys.executable, "-m", "wsgidav.server.server_cli", "-c", str(conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"wsgidav did not start: {self._proc.stderr.read().decode()[-2000:]}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("wsgidav did not start within 30 s") from None
                time.sleep(0.1)

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
        self._proc.stderr.close()
        self._proc = None

    def __enter__(self) -> "WsgiDavServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
