"""What the IMAP source and the IMAP target share: connecting, logging in, pooling connections and
reading the server's refusals.

Sources and sinks do not import each other, so the IMAP pieces both need live here: the TLS
context (`ca_file`, `verify_tls`), the connection with ssl / starttls / none, the login as
`<user>*<master>`, with the user's own password or with XOAUTH2 (a token the configuration hands
in through `oauth_tokens`, or one the application gets itself through `oauth`: `AppTokens`), the
pool of one connection per (account, thread), and the first translation of failures (a broken
connection is a `TransientError`, the broken connection dropped). What each side makes of a
refused login or a refused command stays in its own module (`_login_refused`, `_refused`).
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from collections import OrderedDict
from typing import Any

import imapclient
from imapclient import imap_utf7
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.response_parser import parse_response

from core.errors import ConfigError, TransientError
from core.plugins import Account, ProbeMemo
from core.messages import clip

__all__ = ["MAX_OPEN_PER_THREAD", "TOKEN_MARGIN", "AppTokens", "Conn", "ImapAccounts", "LoginRefused", "TlsFailed",
           "TokenRefused", "list_folders", "response_code", "server_words", "text", "tls_context"]

log = logging.getLogger("umstieg.clients.imap")

#: Connections one thread keeps open (to as many accounts), the least recently used closed first.
MAX_OPEN_PER_THREAD = 4
#: Seconds of life an access token must have left to be used for a login (msal's own rule for its
#: cache, applied to `token_url` tokens too): a login never starts with a token about to expire.
TOKEN_MARGIN = 300


class TlsFailed(ConfigError):
    """The server's certificate is not trusted (or TLS cannot be agreed)."""


class LoginRefused(ConfigError):
    """The server refused the login of one account; `code` is its RFC 5530 response code."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TokenRefused(ConfigError):
    """The identity platform refused the application (wrong client id or secret, an expired secret, an
    unknown scope): no mailbox can be opened until the configuration changes."""


def text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def server_words(exc: Exception) -> str:
    """What the server said, without imapclient's wrapping (never holds a secret: servers do not
    echo passwords)."""
    words = str(exc).split("failed: ", 1)[-1].strip()
    if words[:2] in ("b'", 'b"'):
        words = words[1:]
    return clip(words.strip("'\""), 200) or type(exc).__name__


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


class _TrustingSession:
    """The requests session msal talks through, trusting `verify` (a CA bundle, or the system's CAs).

    requests replaces a session's `verify` with REQUESTS_CA_BUNDLE from the environment; passing
    it on every request keeps the configured trust."""

    def __init__(self, verify: str | bool, timeout: float) -> None:
        import requests
        self._session = requests.Session()
        self._verify, self._timeout = verify, timeout
        #: the last answer (msal turns a 5xx into an exception without it: its status and Retry-After)
        self.last = None

    def get(self, url, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        self.last = None
        self.last = self._session.get(url, verify=self._verify, **kwargs)
        return self.last

    def post(self, url, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        self.last = None
        self.last = self._session.post(url, verify=self._verify, **kwargs)
        return self.last

    def close(self) -> None:
        self._session.close()


#: Token endpoint errors (RFC 6749 5.2) that mean the configuration is wrong, not the moment.
_REFUSALS = {"invalid_client", "unauthorized_client", "invalid_request", "invalid_scope", "invalid_grant",
             "unsupported_grant_type", "access_denied"}


class AppTokens:
    """Access tokens of one application (OAuth 2.0 client credentials), for the XOAUTH2 logins of every
    mailbox; thread-safe, one request to the identity platform at a time.

    With `authority`, msal's `ConfidentialClientApplication` reads the OpenID metadata, caches the
    token and fetches a new one once less than five minutes are left (or at the half-life the platform
    asks for). With `token_url`, msal's bundled OAuth 2.0 client asks that endpoint and the same rule
    is kept here. `token()` says whether the token came from the cache: a login refused with a cached
    token is worth one more try with a new one (`token(refused=that token)`), a refused fresh one is not.

    Failures: the platform refusing the application is `TokenRefused` (naming the endpoint, the client
    id and the secret's reference, never the secret); an unreachable or busy (5xx) platform is
    `TransientError`."""

    def __init__(self, oauth, timeout: float) -> None:
        self.oauth = oauth
        self._timeout = timeout
        self._lock = threading.Lock()
        self._session: _TrustingSession | None = None
        self._client: Any = None                 # msal's ConfidentialClientApplication or oauth2cli Client
        self._secret: str = ""
        self._cached: tuple[str, float] | None = None     # token_url only: (token, monotonic expiry)
        #: tokens obtained from the identity platform (not from a cache)
        self.fetched = 0

    @property
    def endpoint(self) -> str:
        """The token endpoint (once the metadata is read), else the configured address."""
        found = getattr(getattr(self._client, "authority", None), "token_endpoint", None)
        return found or self.oauth.token_url or self.oauth.authority

    def _scrub(self, words: str) -> str:
        return words.replace(self._secret, "***") if self._secret else words

    def _make_client(self):
        import msal                              # heavy: only when a source uses oauth
        cfg = self.oauth
        try:
            self._secret = cfg.client_secret.resolve().get_secret_value()
        except ConfigError as exc:               # names the reference only; once, not for every mailbox
            raise TokenRefused(f"oauth.client_secret: {exc}") from None
        session = _TrustingSession(str(cfg.ca_file) if cfg.ca_file is not None else True, self._timeout)
        try:
            if cfg.token_url is not None:
                from msal.oauth2cli.oauth2 import Client
                client = Client({"token_endpoint": cfg.token_url}, cfg.client_id, http_client=session,
                                client_secret=self._secret)
            else:
                known = cfg.authority.split("/")[2].lower() in (
                    "login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn",
                    "login.microsoftonline.de")
                client = msal.ConfidentialClientApplication(
                    cfg.client_id, client_credential=self._secret, authority=cfg.authority, http_client=session,
                    validate_authority=known, instance_discovery=known)
        except ValueError as exc:                # msal: the metadata is missing or refused (4xx)
            session.close()
            first = clip(self._scrub(str(exc)).split(". ")[0], 200)
            raise TokenRefused(f"found no OpenID metadata for the authority {cfg.authority}: check oauth.authority "
                               "(with the tenant: https://login.microsoftonline.com/<tenant id>). "
                               f"msal said: {first}") from None
        except Exception as exc:  # noqa: BLE001 - requests' connection, TLS and HTTP (5xx) errors
            session.close()
            raise self._unreachable(exc, cfg.authority, session) from None
        self._session = session
        return client

    def _unreachable(self, exc: Exception, where: str, session: _TrustingSession | None = None) -> Exception:
        """What a failed request to the identity platform means: an untrusted certificate is the
        configuration's (`TlsFailed`), anything else (no connection, a timeout, a 5xx) is transient."""
        import requests
        from clients.http import retry_after
        if isinstance(exc, requests.exceptions.SSLError):
            return TlsFailed(f"TLS with the identity platform at {where} failed: set oauth.ca_file to the CA that "
                             "signed its certificate")
        answer = getattr(exc, "response", None)
        if answer is None and session is not None:
            answer = session.last                        # an answer msal turned into MsalServiceError
        status = f"answered {answer.status_code}" if answer is not None else type(exc).__name__
        return TransientError(f"cannot get an IMAP access token from {where}: {status}",
                              retry_after=retry_after(answer, cap=300) if answer is not None else None)

    def token(self, refused: str | None = None) -> tuple[str, bool]:
        """(an access token with more than `TOKEN_MARGIN` seconds left, whether it was just fetched).
        `refused` is a token the IMAP server refused: it is dropped from the cache first (unless another
        thread has already replaced it)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            if refused is not None:
                self._forget(refused)
            if self.oauth.token_url is not None and self._cached is not None and \
                    self._cached[1] - time.monotonic() > TOKEN_MARGIN:
                return self._cached[0], False
            try:
                if self.oauth.token_url is not None:
                    result = self._client.obtain_token_for_client(scope=[self.oauth.scope])
                else:
                    result = self._client.acquire_token_for_client(scopes=[self.oauth.scope])
            except ValueError:                     # not JSON: not a token endpoint (or a proxy's page)
                raise TokenRefused(f"{self.endpoint} did not answer as an OAuth 2.0 token endpoint: check "
                                   "oauth.token_url / oauth.authority") from None
            except Exception as exc:  # noqa: BLE001 - requests' connection, TLS and HTTP (5xx) errors
                raise self._unreachable(exc, self.endpoint, self._session) from None
            if "access_token" in result:
                fresh = result.get("token_source", "identity_provider") != "cache"
                if fresh:
                    self.fetched += 1
                    log.info("new IMAP access token from %s (valid %s s)", self.endpoint, result.get("expires_in"))
                if self.oauth.token_url is not None:
                    lifetime = float(result.get("expires_in") or 3600)
                    self._cached = (result["access_token"], time.monotonic() + lifetime)
                return result["access_token"], fresh
        error = str(result.get("error", "")) or "no access_token"
        description = self._scrub(str(result.get("error_description") or "").strip().splitlines()[0]
                                  if result.get("error_description") else "")[:300]
        if error in ("temporarily_unavailable", "server_error"):
            raise TransientError(f"{self.endpoint} gives no IMAP access token for now ({error}): {description}")
        if error not in _REFUSALS:
            answer = self._session.last if self._session is not None else None
            status = f", HTTP {answer.status_code}" if answer is not None else ""
            raise TokenRefused(f"{self.endpoint} gave no IMAP access token ({error}{status}): check oauth.token_url "
                               f"or oauth.authority. {description}".rstrip())
        raise TokenRefused(f"{self.endpoint} refused the application {self.oauth.client_id!r} ({error}): check "
                           f"oauth.client_id, oauth.client_secret ({self.oauth.client_secret}, and that the "
                           f"secret has not expired) and oauth.scope {self.oauth.scope!r}. {description}".rstrip())

    def _forget(self, token: str) -> None:
        if self._cached is not None and self._cached[0] == token:
            self._cached = None
        cache = getattr(self._client, "token_cache", None)
        if cache is not None:
            for at in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
                if at.get("secret") == token:
                    cache.remove_at(at)

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
            self._session = self._client = self._cached = None


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


class ImapAccounts(ProbeMemo):
    """Logged-in connections to the accounts of one IMAP server, pooled per (account, thread).

    The class using it has `config` (host, port, security, timeout, verify_tls, ca_file, master_user,
    password, passwords and maybe oauth_tokens and oauth), `_local` (a threading.local), `_all` (every pooled
    connection) and `_lock`; it says what a refused login (`_login_refused`) and a refused command
    (`_refused`) mean on its side, and makes its own `Conn` subclass (`_wrap`)."""

    # what the class using it has (declared for the type checker; set by that class)
    config: Any
    _local: threading.local
    _all: list[Conn]
    _lock: threading.Lock

    # ------------------------------------------------------------------ hooks
    def connect(self, user: str) -> imapclient.IMAPClient:
        """A new client, logged in to `user`'s mailbox (the class using it knows how)."""
        raise NotImplementedError

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
        if user in getattr(cfg, "oauth_tokens", {}) or user in cfg.passwords or not cfg.master_user \
                or getattr(cfg, "oauth", None) is not None:
            return user
        return f"{user}*{cfg.master_user}"

    def _app_tokens(self) -> AppTokens | None:
        """The application's token source where the configuration has `oauth` (one per pool)."""
        oauth = getattr(self.config, "oauth", None)
        if oauth is None:
            return None
        with self._lock:
            tokens = self.__dict__.get("_tokens")
            if tokens is None:
                tokens = self.__dict__["_tokens"] = AppTokens(oauth, self.config.timeout)
            return tokens

    def _new_client(self) -> imapclient.IMAPClient:
        """A new connection, not yet logged in."""
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
        return client

    def _connect(self, user: str, *, no_credentials: str, whose: str = "") -> imapclient.IMAPClient:
        """A new logged-in connection to `user`'s mailbox (the caller closes it). `no_credentials` is the
        ConfigError's message when nothing to log in with is configured; `whose` goes into the message of
        a refused login ("refused the login<whose> as …").

        With the application's tokens (`oauth`), every login asks `AppTokens` for a token with time left;
        a login refused with a cached token (expired early, revoked, the clocks disagree) is tried once
        more, on a new connection, with a newly fetched one."""
        cfg = self.config
        tokens = getattr(cfg, "oauth_tokens", {})
        app = None if user in tokens or user in cfg.passwords else self._app_tokens()
        refused: str | None = None
        while True:
            client = self._new_client()
            try:
                if user in tokens:
                    client.oauth2_login(user, tokens[user].resolve().get_secret_value())
                elif user in cfg.passwords:
                    client.login(user, cfg.passwords[user].resolve().get_secret_value())
                elif app is not None:
                    token, fresh = app.token(refused=refused)
                    try:
                        client.oauth2_login(user, token)
                    except LoginError:
                        if fresh or refused is not None:
                            raise
                        log.info("%s refused a cached access token for %r: once more with a new one",
                                 self._where(), user)
                        refused = token
                        client.shutdown()
                        continue
                elif cfg.master_user and cfg.password is not None:
                    client.login(self.login_name(user), cfg.password.resolve().get_secret_value())
                else:
                    raise ConfigError(no_credentials)
            except (ConfigError, TransientError):       # no credentials, an unset secret, no token
                client.shutdown()
                raise
            except LoginError as exc:
                client.shutdown()
                raise LoginRefused(f"{self._where()} refused the login{whose} as {self.login_name(user)!r}: "
                                   f"{server_words(exc)}", code=response_code(exc)) from None
            except (OSError, IMAPClientAbortError) as exc:
                client.shutdown()
                raise TransientError(f"{self._where()}: connection lost while logging in "
                                     f"({type(exc).__name__})") from None
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

    def try_login(self, user: str) -> None:
        """Log in as `user` and out again: the check before a run, whose questions (the account
        exists, the master user works, the identity check) all ask this one LOGIN; inside
        `probing()` it is sent once per user and its outcome, a refusal included, given to each."""
        self._once(("login", user), lambda: Conn(self.connect(user)).close())

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """The identity check (core.plugins.ChecksUsers) of a source's or a target's mailboxes: each
        logs in, as its user or as `<user>*<master>`, which Dovecot allows only for a user who
        exists. IMAP tells no e-mail address or name. The server out of reach, its TLS or the
        identity platform failing concern everyone, and so does a master user refused for every
        mailbox (its own login, most likely): nobody is blamed then (`check` says so)."""
        unknown = {name: Account(None) for name in names}
        found: dict[str, Account] = {}
        for name in names:
            try:
                self.try_login(name)
            except (TlsFailed, TokenRefused, TransientError, OSError):
                return unknown
            except ConfigError as exc:        # this login refused, or no credentials for this mailbox
                found[name] = Account(False, why=str(exc))
                continue
            found[name] = Account(True)
        if self.config.master_user and found and not any(a.exists for a in found.values()):
            return unknown
        return found

    def close(self) -> None:
        """Log out every pooled connection (of every thread)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
        tokens = self.__dict__.get("_tokens")
        if tokens is not None:
            tokens.close()
