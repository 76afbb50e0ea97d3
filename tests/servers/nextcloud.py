"""A real Nextcloud 27 server (PHP, SQLite) on a loopback port, for the tests of the Nextcloud target.

The server and the script that installs and serves it live in `../shared/nextcloud` (not in any
package registry reachable here); `nextcloud_missing()` says why it cannot run when it cannot, and
the tests skip with that reason. One server serves a whole test session: installing takes ~5 s,
and every test makes accounts of its own (`new_user`), so that tests never see each other's files.

Accounts are made through the OCS provisioning API as the admin (an `occ` call costs a PHP start,
~0.5 s); app passwords through `/ocs/v2.php/core/getapppassword` with the account's login password,
as a migration team gives one to a service account. An app password is what the tests should use:
a login password costs ~0.65 s of argon2 per request.

Start-up has no deadline a busy machine could miss: the script gives up waiting after 20 s but
leaves the server starting; this module then keeps asking `status.php` for as long as the server
process lives, and a port another process took first means a new port and a new start.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import httpx

from servers import free_port

__all__ = ["NEXTCLOUD_HOME", "NextcloudServer", "NextcloudUser", "nextcloud_missing"]

#: ../shared/nextcloud, beside the project's checkout (as ../shared/corpus is)
NEXTCLOUD_HOME = Path(__file__).resolve().parents[3] / "shared" / "nextcloud"
SCRIPT = NEXTCLOUD_HOME / "nextcloud-server"
ADMIN = ("admin", os.environ.get("NC_ADMIN_PASS", "admin-pass-1234"))
_PHP_MODULES = ("pdo_sqlite", "xml", "mbstring", "zip", "gd", "curl", "intl", "bcmath", "gmp")


def nextcloud_missing() -> str | None:
    """Why a real Nextcloud cannot run here, or None when it can."""
    if not SCRIPT.is_file():
        return f"{NEXTCLOUD_HOME} not found (the real Nextcloud server is not on this machine)"
    if shutil.which("php") is None:
        return "php is not installed (Debian package php8.2-cli and its modules): run bin/setup"
    loaded = subprocess.run(["php", "-m"], capture_output=True, text=True).stdout.lower().split()
    missing = [m for m in _PHP_MODULES if m not in loaded]
    if missing:
        return f"PHP modules missing for Nextcloud ({', '.join(missing)}): run bin/setup"
    return None


@dataclass(frozen=True)
class NextcloudUser:
    """An account of the test server: its login password and an app password made for it."""

    login: str
    password: str
    app_password: str | None

    @property
    def secret(self) -> str:
        """What a client should log in with: the app password when there is one."""
        return self.app_password or self.password


class NextcloudServer:
    """A real Nextcloud installed under `base` and served on 127.0.0.1 (`url`)."""

    def __init__(self, base: Path | None = None, workers: int | None = None) -> None:
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="umstieg-test-nextcloud-"))
        self.workers = workers                  # PHP workers (the script's default: 4)
        self.port = 0
        self.url = ""
        self._admin: httpx.Client | None = None

    # ----------------------------------------------------------------------- life cycle
    def __enter__(self) -> "NextcloudServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for _ in range(5):                  # a port taken between choosing and binding: another one
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            env = {**os.environ, **({"NC_WORKERS": str(self.workers)} if self.workers else {})}
            done = subprocess.run([str(SCRIPT), "start", str(self.base), str(self.port)],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0 and not (self.base / "server.pid").exists():
                raise RuntimeError(f"Nextcloud could not be installed: {(done.stderr or done.stdout).strip()[-2000:]}")
            if self._wait_until_serving():
                break
            self.stop()
        else:
            raise RuntimeError(f"Nextcloud would not serve on any port (see {self.base / 'server.log'})")
        if not (self.base / ".umstieg-configured").exists():
            # new accounts start empty (no welcome files): a test compares an account with a source
            self.occ("config:system:set", "skeletondirectory", "--value=")
            (self.base / ".umstieg-configured").touch()
        # the admin's client keeps no cookie: a session would act as the admin for every account
        self._admin = httpx.Client(base_url=self.url, auth=ADMIN, timeout=120,
                                   headers={"OCS-APIRequest": "true", "Accept": "application/json"})

    def _wait_until_serving(self) -> bool:
        """True once status.php says installed; False when the server process died (port taken)."""
        pid = int((self.base / "server.pid").read_text())
        while True:
            try:
                r = httpx.get(f"{self.url}/status.php", timeout=30)
                if r.status_code == 200 and r.json().get("installed"):
                    return True
            except (httpx.HTTPError, ValueError):
                pass
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            time.sleep(0.3)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        subprocess.run([str(SCRIPT), "stop", str(self.base)], capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def pid(self) -> int | None:
        try:
            return int((self.base / "server.pid").read_text())
        except (OSError, ValueError):
            return None

    # ----------------------------------------------------------------------- administration
    def occ(self, *args: str, env: dict | None = None) -> str:
        """Run `occ` (as the script does); its output. A failure raises with occ's own words."""
        done = subprocess.run([str(SCRIPT), "occ", str(self.base), *args], capture_output=True, text=True,
                              env={**os.environ, **(env or {})})
        if done.returncode != 0:
            raise RuntimeError(f"occ {' '.join(args)}: {(done.stdout + done.stderr).strip()[-1000:]}")
        return done.stdout

    def ocs(self, method: str, path: str, **kwargs) -> dict:
        """One OCS call as the admin (`path` below /ocs/v2.php/); its `data`."""
        assert self._admin is not None, "the server is not started"
        r = self._admin.request(method, f"/ocs/v2.php/{path.lstrip('/')}", params={"format": "json"}, **kwargs)
        body = r.json()["ocs"]
        if body["meta"]["statuscode"] not in (100, 200):
            raise RuntimeError(f"OCS {method} {path}: {body['meta']}")
        return body["data"]

    def new_user(self, prefix: str = "user", *, app_password: bool = True, quota: str | None = None,
                 groups: tuple[str, ...] = (), email: str | None = None,
                 display_name: str | None = None) -> NextcloudUser:
        """A new account named `<prefix>-<random>` (tests share the server, never an account)."""
        login = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return self.add_user(login, app_password=app_password, quota=quota, groups=groups, email=email,
                             display_name=display_name)

    def add_user(self, login: str, *, app_password: bool = True, quota: str | None = None,
                 groups: tuple[str, ...] = (), email: str | None = None,
                 display_name: str | None = None) -> NextcloudUser:
        """An account with this exact login (and, by default, an app password made for it)."""
        password = f"Pw-{secrets.token_urlsafe(12)}"
        for group in groups:
            self.add_group(group)
        data: dict = {"userid": login, "password": password, "groups[]": list(groups)}
        if email:
            data["email"] = email
        if display_name:
            data["displayName"] = display_name
        self.ocs("POST", "cloud/users", data=data)
        if quota is not None:
            self.set_quota(login, quota)
        token = None
        if app_password:
            r = httpx.get(f"{self.url}/ocs/v2.php/core/getapppassword", params={"format": "json"},
                          auth=(login, password), headers={"OCS-APIRequest": "true"}, timeout=120)
            r.raise_for_status()
            token = r.json()["ocs"]["data"]["apppassword"]
        return NextcloudUser(login, password, token)

    def add_group(self, name: str) -> None:
        """A group (already there is fine)."""
        assert self._admin is not None, "the server is not started"
        r = self._admin.post("/ocs/v2.php/cloud/groups", params={"format": "json"}, data={"groupid": name})
        code = r.json()["ocs"]["meta"]["statuscode"]
        if code not in (100, 200, 102):            # 102: the group exists
            raise RuntimeError(f"cannot create group {name!r}: {r.json()['ocs']['meta']}")

    def set_quota(self, login: str, quota: str) -> None:
        """Set an account's files quota (`"5 MB"`, `"none"`)."""
        self.ocs("PUT", f"cloud/users/{login}", data={"key": "quota", "value": quota})

    def disable_user(self, login: str) -> None:
        self.ocs("PUT", f"cloud/users/{login}/disable")

    # ----------------------------------------------------------------------- what the server holds
    def files_of(self, login: str) -> Path:
        """The folder on disk holding an account's files (read-only use: Nextcloud's file cache
        does not see changes made here unless `occ files:scan` runs)."""
        return self.base / "data" / login / "files"

    def dav(self, user: NextcloudUser) -> httpx.Client:
        """A client logged in as `user` (no cookies kept), based at the server's URL."""
        return httpx.Client(base_url=self.url, auth=(user.login, user.secret), timeout=120)

    def download(self, user: NextcloudUser, rel: str) -> bytes | None:
        """What the server answers for `rel` in the user's files, through WebDAV (None: 404)."""
        with self.dav(user) as client:
            r = client.get(quote(f"/remote.php/dav/files/{user.login}/{rel.lstrip('/')}"))
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.content

    def tree(self, user: NextcloudUser) -> dict[str, bytes]:
        """Every file of the account (relative path → bytes), listed through WebDAV, folder by folder
        (Nextcloud refuses `Depth: infinity`)."""
        root = f"/remote.php/dav/files/{user.login}/"
        found: dict[str, bytes] = {}
        with self.dav(user) as client:
            folders = [root]
            while folders:
                folder = folders.pop()
                r = client.request("PROPFIND", quote(folder), headers={"Depth": "1"})
                r.raise_for_status()
                for resp in ET.fromstring(r.content).iter("{DAV:}response"):
                    href = unquote(resp.findtext("{DAV:}href") or "")
                    if href.rstrip("/") == folder.rstrip("/"):
                        continue
                    if resp.find(".//{DAV:}resourcetype/{DAV:}collection") is not None:
                        folders.append(href)
                    else:
                        found[href[len(root):]] = client.get(quote(href)).content
        return found

    def log_since(self, offset: int = 0) -> str:
        """nextcloud.log (PHP errors and warnings) from `offset` bytes on."""
        path = self.base / "data" / "nextcloud.log"
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # ----------------------------------------------------------------------- crashes and locks
    def crash_upload(self, user: NextcloudUser, rel: str, size: int = 32 * 1024 * 1024, attempts: int = 3) -> None:
        """Upload `size` bytes to `rel` and kill (SIGKILL) the PHP worker serving it while it writes:
        the file lock that request held stays behind, as after a real crash, and every later upload
        of `rel` gets 423 Locked until the lock expires (`set_lock_ttl`, `expire_locks`).

        The killed worker is not replaced (`php -S` does not restart workers): use this on a server
        of the test's own, not the session's. `php -S` reads a whole request before running it, so
        the moment to kill is when the upload's `.part` file appears beside the target."""
        import psutil
        folder = self.files_of(user.login) / rel.rpartition("/")[0]
        name = rel.rpartition("/")[2]
        auth = base64.b64encode(f"{user.login}:{user.secret}".encode()).decode()
        block = os.urandom(1 << 20)
        for _ in range(attempts):
            with socket.create_connection(("127.0.0.1", self.port)) as conn:
                mine = conn.getsockname()[1]
                conn.sendall(f"PUT /remote.php/dav/files/{user.login}/{quote(rel)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             f"Authorization: Basic {auth}\r\nContent-Length: {size}\r\n\r\n".encode())
                for offset in range(0, size, len(block)):
                    conn.sendall(block[:min(len(block), size - offset)])
                worker, deadline = None, time.monotonic() + 60
                while worker is None:              # the worker that accepted this connection
                    # found by the socket itself, not as a child of the server's first process:
                    # that one may be gone once a worker was killed (the workers serve on)
                    for c in psutil.net_connections(kind="tcp"):
                        if c.pid and c.laddr and c.laddr.port == self.port and c.raddr and c.raddr.port == mine:
                            try:
                                worker = psutil.Process(c.pid)
                            except psutil.Error:
                                continue
                    if worker is None and time.monotonic() > deadline:
                        raise RuntimeError("no Nextcloud worker took the upload to crash")
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        writing = any(p.startswith(name) and p.endswith(".part") for p in os.listdir(folder))
                    except FileNotFoundError:
                        writing = False
                    if writing:
                        worker.kill()
                        # not our child, and `php -S` does not reap it: dead is a zombie here
                        while worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
                            time.sleep(0.01)
                        break
                    time.sleep(0.0005)
            with self.dav(user) as client:         # the lock is there when a new upload is refused
                probe = client.put(f"/remote.php/dav/files/{user.login}/{quote(rel)}", content=b"probe")
            if probe.status_code == 423:
                return
        raise RuntimeError(f"no stale lock on {rel} after {attempts} crashed uploads (last answer "
                           f"{probe.status_code})")

    def set_lock_ttl(self, seconds: int) -> None:
        """How long a lock nobody releases lasts (`filelocking.ttl`; Nextcloud's default is 3600)."""
        self.occ("config:system:set", "filelocking.ttl", "--type=integer", f"--value={seconds}")

    def expire_locks(self) -> None:
        """Run Nextcloud's background job that removes expired file locks (it runs every 5 minutes
        with the server's cron)."""
        listing = self.occ("background-job:list", "--limit=500")
        job = next(line.split("|")[1].strip() for line in listing.splitlines() if "CleanupFileLocks" in line)
        self.occ("background-job:execute", "--force-execute", job)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        pid = self.pid()
        if pid:
            os.killpg(pid, sig)
