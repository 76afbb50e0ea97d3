"""A real Dovecot IMAP server for tests and benchmarks, started on 127.0.0.1 with free ports.

Debian's `dovecot-imapd` (installed by bin/setup) runs here from its own configuration in a
temporary folder (`dovecot -F -c <conf>`): base, state and log directories, maildir storage and
the user files all live there, so neither /etc/dovecot nor the Debian service is used. The server
runs as root, as Dovecot's master must; mail is read and written as `nobody`.

What it offers:
- users from a passwd-file (`users` = {login: password}) and a master user (`<user>*<master>`,
  Dovecot's `auth_master_user_separator`), whose passdb has `pass = yes`: a master login works only
  for users that exist;
- SPECIAL-USE folders declared in the namespace (`special_use` = {folder: "\\Sent", ...}), created
  and subscribed on first login; `{}` declares none (a server without SPECIAL-USE folders);
- plaintext logins on loopback (port `port`), and IMAPS (`ssl_port`) with a self-signed
  certificate made by `trustme` whose CA is `ca_file`;
- `/` as hierarchy separator, so nested folders are `A/B`;
- XOAUTH2 with JWTs it checks itself (`oauth=True`, `token(user)`), and `penalty=False` to answer
  refused logins at once.

Use as a context manager (`with Dovecot(tmp) as server: ...`) or start()/stop(); stop() ends the
whole process group, so no imap or auth process outlives a test.
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

import pytest

from servers import free_port

__all__ = ["Dovecot", "DEFAULT_SPECIAL_USE", "free_port", "dovecot_factory"]

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
#: What most servers (and Open-Xchange's Dovecot) declare.
DEFAULT_SPECIAL_USE = {"Sent": "\\Sent", "Trash": "\\Trash", "Junk": "\\Junk", "Drafts": "\\Drafts",
                       "Archive": "\\Archive"}
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Dovecot:
    """One Dovecot server with its own configuration, storage and ports."""

    def __init__(self, base: Path | None = None, users: dict[str, str] | None = None,
                 master: tuple[str, str] | None = ("migrator", "master-secret-5Tz"),
                 special_use: dict[str, str] | None = None, tls: bool = True, oauth: bool = False,
                 quota_kb: int | None = None, penalty: bool = True, imap_capability: str | None = None) -> None:
        # not under pytest's tmp dirs: those are private to root, and mail is written as `nobody`
        self.base = Path(tempfile.mkdtemp(prefix="umstieg-dovecot-", dir=base))
        self.users = dict(users if users is not None else {"anna": "anna-pw-1", "ben": "ben-pw-2"})
        self.master = master
        self.special_use = dict(DEFAULT_SPECIAL_USE if special_use is None else special_use)
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = free_port()
        self.ssl_port = free_port() if tls else None
        self.ca_file: Path | None = None
        self.oauth_key = os.urandom(32) if oauth else None
        self.quota_kb = quota_kb
        self.penalty = penalty
        # the CAPABILITY a logged-in client is told, in full (None: Dovecot's own): a server
        # without an extension, e.g. UIDPLUS, as some IMAP servers are
        self.imap_capability = imap_capability
        self.conf = self.base / "dovecot.conf"
        self.log = self.base / "log" / "dovecot.log"
        self._proc: subprocess.Popen | None = None

    # ------------------------------------------------------------------ configuration
    def _write_users(self) -> None:
        lines = [f"{u}:{{PLAIN}}{pw}::::::" for u, pw in self.users.items()]
        masters = [f"{self.master[0]}:{{PLAIN}}{self.master[1]}::::::"] if self.master else []
        for name, text in (("users", lines), ("masters", masters)):
            path = self.base / name
            old = path.stat().st_mtime if path.exists() else 0.0
            path.write_text("\n".join(text) + "\n", encoding="utf-8")
            # Dovecot rereads a passwd-file when its mtime (in whole seconds) changes: make it change
            stamp = max(time.time(), int(old) + 1.0)
            os.utime(path, (stamp, stamp))

    def add_user(self, login: str, password: str) -> None:
        """Create an account while the server runs; returns once the server lets it log in (Dovecot
        rereads a passwd-file only once its mtime is in the past: up to about two seconds)."""
        import imaplib
        self.users[login] = password
        self._write_users()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.connect(login).logout()
                return
            except imaplib.IMAP4.error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def remove_user(self, login: str) -> None:
        self.users.pop(login, None)
        self._write_users()

    def _make_cert(self) -> str:
        import trustme
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = self.base / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(self.base / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.base / "cert.pem"))
        for extra in cert.cert_chain_pems[1:]:
            with open(self.base / "cert.pem", "ab") as f:
                f.write(extra.bytes())
        os.chmod(self.base / "key.pem", 0o600)
        return (f"ssl = yes\nssl_cert = <{self.base}/cert.pem\nssl_key = <{self.base}/key.pem\n"
                "ssl_min_protocol = TLSv1.2\n")

    def _capability_config(self) -> str:
        return f"imap_capability = {self.imap_capability}\n" if self.imap_capability else ""

    def _quota_config(self) -> str:
        """A storage quota per user (Dovecot's quota plugin): APPENDs beyond it get NO [OVERQUOTA]."""
        if self.quota_kb is None:
            return ""
        return ("mail_plugins = $mail_plugins quota\n"
                f"plugin {{\n  quota = count:User quota\n  quota_vsizes = yes\n"
                f"  quota_rule = *:storage={self.quota_kb}k\n}}\n")

    def _penalty_config(self) -> str:
        """Without `penalty`: a refused login is answered at once and does not slow the next ones down
        (Dovecot waits 2 s, then up to 15 s per client address), for tests of short-lived tokens."""
        if self.penalty:
            return ""
        return "auth_failure_delay = 0\nservice anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n"

    def _oauth_config(self) -> str:
        """XOAUTH2 / OAUTHBEARER with JWTs that Dovecot checks itself (HS256, `introspection_mode =
        local`): no identity provider needed; `token(user)` makes one."""
        if self.oauth_key is None:
            return ""
        import base64
        keys = self.base / "keys" / "default" / "HS256"
        keys.mkdir(parents=True, exist_ok=True)
        (keys / "default").write_text(base64.b64encode(self.oauth_key).decode())
        (self.base / "oauth2.conf.ext").write_text(
            f"introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={self.base}/keys/\n"
            "username_attribute = sub\n")
        return (f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {self.base}/oauth2.conf.ext\n}}\n")

    def token(self, user: str, lifetime: float = 3600, key: bytes | None = None) -> str:
        """A signed access token (JWT, HS256) for `user`, as an identity provider would issue."""
        import base64
        import hashlib
        import hmac
        import json

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "default"}).encode())
        body = b64(json.dumps({"sub": user, "iat": now - 5, "exp": now + int(lifetime)}).encode())
        sig = hmac.new(key or self.oauth_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(sig)}"

    def _config(self) -> str:
        b = self.base
        folders = "".join(f"  mailbox {_quote(name)} {{\n    special_use = {use}\n    auto = subscribe\n  }}\n"
                          for name, use in self.special_use.items())
        ssl = self._make_cert() if self.tls else "ssl = no\n"
        imaps = (f"  inet_listener imaps {{\n    address = {self.host}\n    port = {self.ssl_port}\n"
                 "    ssl = yes\n  }\n"
                 if self.tls else "  inet_listener imaps {\n    port = 0\n  }\n")
        return f"""# written by tests/servers/dovecot.py
protocols = imap
listen = {self.host}
base_dir = {b}/run
state_dir = {b}/state
log_path = {self.log}
info_log_path = {self.log}
instance_name = umstieg-dovecot-{self.port}
default_internal_user = dovecot
default_login_user = dovenull
disable_plaintext_auth = no
auth_mechanisms = plain login{" xoauth2 oauthbearer" if self.oauth_key else ""}
auth_master_user_separator = *
first_valid_uid = 1
mail_uid = {MAIL_USER}
mail_gid = {MAIL_GROUP}
mail_location = maildir:{b}/mail/%n/Maildir
mail_fsync = never
{self._capability_config()}{self._quota_config()}{ssl}
{self._oauth_config()}{self._penalty_config()}passdb {{
  driver = passwd-file
  args = {b}/masters
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = {b}/users
}}
userdb {{
  driver = passwd-file
  args = {b}/users
  default_fields = uid={MAIL_USER} gid={MAIL_GROUP} home={b}/mail/%n
}}
namespace inbox {{
  inbox = yes
  prefix =
  separator = /
{folders}}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
{imaps}  service_count = 0
  process_min_avail = 1
}}
service imap {{
  process_limit = 64
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""

    # ------------------------------------------------------------------ life cycle
    def start(self) -> "Dovecot":
        for sub in ("run", "state", "log", "mail"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self._write_users()
        self.conf.write_text(self._config(), encoding="utf-8")
        os.chmod(self.base, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.base / "mail", MAIL_USER, MAIL_GROUP)
        self._proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(200).startswith(b"* OK"):
                        break
            except OSError:
                pass
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace")
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                self.cleanup()
                raise RuntimeError(f"dovecot did not start: {err}\n{log[-2000:]}")
            if time.monotonic() > deadline:
                self.cleanup()
                raise RuntimeError("dovecot did not answer within 20 s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # children (imap, auth) leave a moment after the master: wait until the group is empty
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if proc.stderr:
                proc.stderr.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "Dovecot":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ helpers for tests
    def doveadm(self, *args: str) -> str:
        """Run `doveadm` against this server's configuration (e.g. `mailbox update`)."""
        out = subprocess.run([DOVEADM, "-c", str(self.conf), *args], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def set_uidvalidity(self, user: str, folder: str, value: int) -> None:
        """Give a folder a new UIDVALIDITY (as a server rebuild or migration would)."""
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def connect(self, login: str, password: str | None = None):
        """A logged-in imaplib connection (password defaults to the user's)."""
        import imaplib
        conn = imaplib.IMAP4(self.host, self.port)
        conn.login(login, password if password is not None else self.users[login])
        return conn


@pytest.fixture(scope="module")
def dovecot_factory():
    """Start Dovecot servers for a test module: `dovecot_factory(**Dovecot arguments)` returns a
    started server; every one is stopped, its files removed, when the module's tests are done."""
    started: list[Dovecot] = []

    def start(**kwargs) -> Dovecot:
        server = Dovecot(**kwargs).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            server.cleanup()
