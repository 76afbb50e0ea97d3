"""What the IMAP source and the IMAP target share: connecting, logging in, pooling connections and
reading the server's refusals.

Sources and sinks do not import each other, so the IMAP pieces both need live here: the TLS
context (`ca_file`, `verify_tls`), the connection with ssl / starttls / none, the login as
`<user>*<master>`, with the user's own password or (where the configuration has `oauth_tokens`)
with XOAUTH2, the pool of one connection per (account, thread), and the first translation of
failures (a broken connection is a `TransientError`, the broken connection dropped). What each
side makes of a refused login or a refused command stays in its own module (`_login_refused`,
`_refused`).
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections import OrderedDict

import imapclient
from imapclient import imap_utf7
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.response_parser import parse_response

from core.errors import ConfigError, TransientError

__all__ = ["MAX_OPEN_PER_THREAD", "Conn", "ImapAccounts", "LoginRefused", "TlsFailed", "list_folders",
           "response_code", "server_words", "text", "tls_context"]

#: Connections one thread keeps open (to as many accounts), the least recently used closed first.
MAX_OPEN_PER_THREAD = 4


class TlsFailed(ConfigError):
    """The server's certificate is not trusted (or TLS cannot be agreed)."""


class LoginRefused(ConfigError):
    """The server refused the login of one account; `code` is its RFC 5530 response code."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def server_words(exc: Exception) -> str:
    """What the server said, without imapclient's wrapping (never holds a secret: servers do not
    echo passwords)."""
    words = str(exc).split("failed: ", 1)[-1].strip()
    if words[:2] in ("b'", 'b"'):
        words = words[1:]
    return words.strip("'\"")[:200] or type(exc).__name__


def response_code(exc: Exception) -> str | None:
    """The RFC 5530 response code of a refusal (`NO [OVERQUOTA] …` → OVERQUOTA), or None."""
    m = re.search(r"\[([A-Za-z-]+)", str(exc))
    return m.group(1).upper() if m else None


def tls_context(config) -> ssl.SSLContext:
    """The TLS context for a config with `verify_tls` and `ca_file`."""
    if config.ca_file is not None:
        return ssl.create_default_context(cafile=str(config.ca_file))
    ctx = ssl.create_default_context()
    if not config.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Conn:
    """One logged-in connection and the folder it has open."""

    def __init__(self, client: imapclient.IMAPClient) -> None:
        self.client = client
        self.folder: str | None = None
        self.uidvalidity: int | None = None

    def close(self) -> None:
        try:
            self.client.logout()
        except Exception:                     # already gone: nothing to close politely
            try:
                self.client.shutdown()
            except Exception:
                pass


def list_folders(client: imapclient.IMAPClient) -> list[tuple[tuple[str, ...], str | None, str]]:
    """LIST (with RETURN (SPECIAL-USE) where the server offers it): (attributes, delimiter, decoded name)
    of every folder, as the server lists them."""
    imap = client._imap                         # imapclient has no LIST ... RETURN (SPECIAL-USE)
    if client.has_capability("SPECIAL-USE") and client.has_capability("LIST-EXTENDED"):
        typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
    else:
        typ, data = imap._simple_command("LIST", '""', '"*"')
    if typ != "OK":
        raise IMAPClientError(f"LIST failed: {data}")
    typ, data = imap._untagged_response(typ, data, "LIST")
    data = [d for d in data if d not in (b"", None)]
    parsed = parse_response(data) if data else []
    found = []
    for i in range(0, len(parsed), 3):
        attrs, delim, raw = parsed[i:i + 3]
        name = str(raw) if isinstance(raw, int) else imap_utf7.decode(raw)
        found.append((tuple(text(a) for a in attrs), text(delim) if delim else None, name))
    return found


class ImapAccounts:
    """Logged-in connections to the accounts of one IMAP server, pooled per (account, thread).

    The class using it has `config` (host, port, security, timeout, verify_tls, ca_file, master_user,
    password, passwords and maybe oauth_tokens), `_local` (a threading.local), `_all` (every pooled
    connection) and `_lock`; it says what a refused login (`_login_refused`) and a refused command
    (`_refused`) mean on its side, and makes its own `Conn` subclass (`_wrap`)."""

    # ------------------------------------------------------------------ hooks
    def _wrap(self, client: imapclient.IMAPClient) -> Conn:
        return Conn(client)

    def _open_limit(self) -> int:
        return MAX_OPEN_PER_THREAD

    def _login_refused(self, user: str, exc: LoginRefused) -> Exception:
        """What a login refused while opening a pooled connection raises."""
        return exc

    def _refused(self, user: str, what: str, exc: IMAPClientError) -> Exception:
        """What a command the server refused (NO or BAD) raises."""
        raise NotImplementedError

    # ------------------------------------------------------------------ connections
    def _where(self) -> str:
        return f"IMAP server {self.config.host}:{self.config.port}"

    def login_name(self, user: str) -> str:
        """`user` where it has its own password or token (or there is no master user), else `<user>*<master>`."""
        cfg = self.config
        if user in getattr(cfg, "oauth_tokens", {}) or user in cfg.passwords or not cfg.master_user:
            return user
        return f"{user}*{cfg.master_user}"

    def _connect(self, user: str, *, no_credentials: str, whose: str = "") -> imapclient.IMAPClient:
        """A new logged-in connection to `user`'s mailbox (the caller closes it). `no_credentials` is the
        ConfigError's message when nothing to log in with is configured; `whose` goes into the message of
        a refused login ("refused the login<whose> as …")."""
        cfg = self.config
        try:
            client = imapclient.IMAPClient(cfg.host, port=cfg.port, ssl=cfg.security == "ssl",
                                           ssl_context=tls_context(cfg) if cfg.security == "ssl" else None,
                                           timeout=cfg.timeout)
            if cfg.security == "starttls":
                client.starttls(tls_context(cfg))
        except ssl.SSLError as exc:
            raise TlsFailed(f"{self._where()}: TLS failed ({exc.reason or type(exc).__name__}); set ca_file to "
                            "the CA that signed its certificate") from None
        except (OSError, IMAPClientError) as exc:
            raise TransientError(f"{self._where()}: cannot connect ({type(exc).__name__}: {exc})") from None
        client.normalise_times = False          # keep the internal date's own offset
        # imapclient turns imaplib's debug output on (level 5), which formats every literal (a whole
        # message) with repr() for a log line nobody reads: 40 % of a fetch's time, measured
        client._imap.debug = 0
        tokens = getattr(cfg, "oauth_tokens", {})
        try:
            if user in tokens:
                client.oauth2_login(user, tokens[user].resolve().get_secret_value())
            elif user in cfg.passwords:
                client.login(user, cfg.passwords[user].resolve().get_secret_value())
            elif cfg.master_user and cfg.password is not None:
                client.login(self.login_name(user), cfg.password.resolve().get_secret_value())
            else:
                raise ConfigError(no_credentials)
        except ConfigError:                         # no credentials, or the secret is not set
            client.shutdown()
            raise
        except LoginError as exc:
            client.shutdown()
            raise LoginRefused(f"{self._where()} refused the login{whose} as {self.login_name(user)!r}: "
                               f"{server_words(exc)}", code=response_code(exc)) from None
        except (OSError, IMAPClientAbortError) as exc:
            client.shutdown()
            raise TransientError(f"{self._where()}: connection lost while logging in ({type(exc).__name__})") \
                from None
        return client

    def _conn(self, user: str) -> Conn:
        """This thread's connection to `user`'s mailbox, made on first use."""
        pool = getattr(self._local, "conns", None)
        if pool is None:
            pool = self._local.conns = OrderedDict()
        conn = pool.get(user)
        if conn is None:
            try:
                conn = pool[user] = self._wrap(self.connect(user))
            except LoginRefused as exc:
                raise self._login_refused(user, exc) from None
            with self._lock:
                self._all.append(conn)
        pool.move_to_end(user)
        while len(pool) > self._open_limit():       # a thread that moved on to other users
            _, idle = pool.popitem(last=False)
            idle.close()
            with self._lock:
                if idle in self._all:
                    self._all.remove(idle)
        return conn

    def _drop(self, user: str) -> None:
        conn = getattr(self._local, "conns", {}).pop(user, None)
        if conn is not None:
            conn.close()
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)

    def _call(self, user: str, what: str, step):
        """`step(conn)` on this thread's connection for `user`; connection failures become TransientError
        (the broken connection is dropped, the retry makes a new one), refusals what `_refused` says."""
        conn = self._conn(user)
        try:
            return step(conn)
        except (OSError, IMAPClientAbortError, socket.timeout) as exc:
            self._drop(user)
            raise TransientError(f"{self._where()}: {what} for {user!r} failed ({type(exc).__name__})") from None
        except IMAPClientError as exc:            # a NO or BAD for this command
            conn.folder = None
            raise self._refused(user, what, exc) from None

    def close(self) -> None:
        """Log out every pooled connection (of every thread)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
