"""A real Samba file server (Debian's `smbd`), started on a loopback port for a test.

Everything smbd keeps lives in one temporary folder: its smb.conf, the private dir with a tdbsam
password database, the lock, state, cache, pid and ncalrpc dirs and the logs, so that the
machine's own Samba (if any) is neither used nor touched. One share, `data`, serves `root`
read-only; every connection works on the files as the unix user `force_user` (`nobody` by
default, not root), so that `chmod 000` on a file or a folder really keeps the service account
out, as NTFS permissions would on a Windows server.

smbd needs root (it changes user per connection); the fixture in tests/test_smb.py skips with
the reason when that, or smbd itself, is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from servers import free_port

__all__ = ["SambaServer", "smbd_missing"]

SMBD = "/usr/sbin/smbd"
SMBPASSWD = "/usr/bin/smbpasswd"


def smbd_missing() -> str | None:
    """Why a Samba test server cannot run here, or None when it can."""
    if not (os.path.exists(SMBD) and os.path.exists(SMBPASSWD)):
        return "Samba is not installed (Debian package `samba`): run bin/setup"
    if os.geteuid() != 0:
        return "smbd must run as root (it switches to the share's user per connection)"
    return None


class SambaServer:
    """smbd serving `root` as share `data` to one account (`username`, `password`) on 127.0.0.1.

    `root` is made inside the server's own temporary folder (world-traversable, unlike pytest's
    tmp dirs, which only root may enter): put the files to serve there.
    """

    def __init__(self, username: str = "nobody", password: str = "smb-test-pw-3Fq",
                 force_user: str = "nobody") -> None:
        self.username = username
        self.password = password
        self.force_user = force_user
        self.share = "data"
        self.port = free_port()
        # not under pytest's tmp dirs: those are private to root, and smbd reads the share as `nobody`
        self.base = Path(tempfile.mkdtemp(prefix="umstieg-test-smb-"))
        self.root = self.base / "share"
        self._proc: subprocess.Popen | None = None

    @property
    def conf(self) -> Path:
        return self.base / "smb.conf"

    def _write_conf(self) -> None:
        b = self.base
        for sub in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log"):
            (b / sub).mkdir(exist_ok=True)
        self.conf.write_text(f"""[global]
    workgroup = UMSTIEGTEST
    server role = standalone server
    smb ports = {self.port}
    interfaces = lo 127.0.0.1
    bind interfaces only = yes
    disable netbios = yes
    private dir = {b}/private
    lock directory = {b}/lock
    state directory = {b}/state
    cache directory = {b}/cache
    pid directory = {b}/pid
    ncalrpc dir = {b}/ncalrpc
    log file = {b}/log/smbd.log
    log level = 1
    passdb backend = tdbsam:{b}/private/passdb.tdb
    server min protocol = SMB2_10
    map to guest = never
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    server services = -nbt
    rpc_server:spoolssd = disabled

[{self.share}]
    path = {self.root}
    read only = yes
    browseable = yes
    valid users = {self.username}
    force user = {self.force_user}
""", encoding="utf-8")

    def start(self) -> "SambaServer":
        why = smbd_missing()
        if why:
            raise RuntimeError(why)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        self._write_conf()
        subprocess.run([SMBPASSWD, "-c", str(self.conf), "-a", "-s", self.username],
                       input=f"{self.password}\n{self.password}\n", text=True, check=True, capture_output=True)
        try:
            return self.start_smbd()
        except BaseException:
            self.stop()
            raise

    def start_smbd(self) -> "SambaServer":
        """Start smbd (again, on the same port) and wait until it accepts connections."""
        with open(self.base / "log" / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen([SMBD, "--foreground", "--no-process-group", "--debug-stdout",
                                           "-s", str(self.conf)], stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"smbd did not start: {self.log()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"smbd did not start within 30 s: {self.log()[-2000:]}") from None
                time.sleep(0.1)

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted((self.base / "log").glob("*")) if p.is_file())

    def stop_smbd(self) -> None:
        """Stop smbd and every child it forked for a connection (its own process group)."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._proc.wait(10)
        if self._proc is not None:
            try:                                   # connection children that outlived the parent
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc = None

    def make_readable(self) -> None:
        """Let everyone read and enter everything under `root` (as `chmod -R a+rX`): the share is read as
        `force_user`, not root. Call it after putting files there, before taking rights away."""
        for folder, _dirs, files in os.walk(self.root):
            os.chmod(folder, os.stat(folder).st_mode | 0o555)
            for name in files:
                path = os.path.join(folder, name)
                os.chmod(path, os.stat(path).st_mode | 0o444)

    def pause(self) -> None:
        """Freeze smbd and its connection processes (SIGSTOP): connections stay open, nothing answers."""
        os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self.resume()                          # a frozen smbd cannot act on SIGTERM
        self.stop_smbd()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "SambaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
