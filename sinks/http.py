"""What the HTTP targets share: the WebDAV sink (Nextcloud, OX Drive) and the CalDAV / CardDAV sink.

Both talk to a DAV server with one httpx client per sink, log in as the user's own account or a
service account with a password resolved once, and read a failed connection the same way: while
working it is a `TransientError`, while checking the server is `Unreachable` (one problem, not one
per user). Which HTTP status means what stays with each sink.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from core.errors import ConfigError, ItemError, TransientError
from clients.http import make_client
from core.plugins import ProbeMemo
from core.retry import governed, policy_for

__all__ = ["TRANSIENT_STATUS", "AccountAuth", "HttpTarget", "Unreachable", "caused_by"]

#: Answers that mean "not now": locked, too many requests, a server error, a busy gateway.
TRANSIENT_STATUS = {423, 429, 500, 502, 503, 504}


class Unreachable(Exception):
    """`check` cannot reach the server at all: one problem, not one per user."""


def caused_by(exc: BaseException | None, kind: type) -> bool:
    """Whether `kind` is somewhere in the chain of causes of `exc` (httpx wraps httpcore's wrapper)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class AccountAuth(httpx.Auth):
    """Basic credentials of one account, carried with that account's own session cookies.

    Nextcloud answers a Basic-auth request with a session cookie. Sent back, it spares the server
    checking the password again: an app password's token lookup, or ~0.65 s of argon2 for a login
    password (measured on Nextcloud 27, 2 cores). A session belongs to one account, and a request
    carrying it acts as that account whatever credentials it also sends, so cookies never go into
    the client's shared jar (clients.http keeps none): each account keeps its own here, and every
    request still carries its own account's credentials, so a session the server dropped is
    replaced by the next answer."""

    def __init__(self, user: str, password: str) -> None:
        self._basic = httpx.BasicAuth(user, password)
        self._cookies = httpx.Cookies()
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request):
        request = next(self._basic.auth_flow(request))
        with self._lock:
            self._cookies.set_cookie_header(request)
        response = yield request
        with self._lock:
            self._cookies.extract_cookies(response)


class HttpTarget(ProbeMemo):
    """A DAV server reached at `config.url`: the client, the accounts, connection failures. While
    `probing()` is open (the check before a run), each probe is sent once and its answer shared."""

    #: How messages name this kind of server.
    product = "the server"

    def __init__(self, config, *, transport: httpx.BaseTransport | None = None, sleep=time.sleep) -> None:
        self.config = config
        parts = urlsplit(config.url.rstrip("/"))
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path                     # path of `url` on the server, no trailing '/'
        self._sleep = sleep
        #: the target's retry policy (core/retry.py): its TransientErrors carry it to whoever retries them
        self.retry = policy_for(getattr(config, "type", "webdav"), getattr(config, "retry", None))
        self._lock = threading.Lock()
        self._secrets: dict[str, SecretStr] = {}
        self._auths: dict[str, AccountAuth] = {}
        self._client = make_client(config, transport=transport)

    def close(self) -> None:
        self._client.close()

    def _login(self, owner: str) -> str:
        """The account that logs in for target user `owner`: their own, or the service account."""
        cfg = self.config
        user = owner if owner in cfg.app_passwords else cfg.username
        if user is None:
            raise ConfigError(f"no credentials for target user {owner!r}: add them to app_passwords, "
                              "or configure a service account (username, password)")
        return user

    def _password(self, user: str) -> SecretStr:
        with self._lock:
            secret = self._secrets.get(user)
        if secret is None:
            ref = self.config.app_passwords.get(user) if user in self.config.app_passwords else self.config.password
            secret = ref.resolve()                  # ConfigError names the reference, never the value
            with self._lock:
                self._secrets[user] = secret
        return secret

    def _split_ref(self, ref: str) -> tuple[str, str]:
        """(account as written in the reference, server path) of a reference made by `_ref`."""
        scheme, sep, rest = ref.partition("://")
        authority, slash, path = rest.partition("/")
        user, at, netloc = authority.rpartition("@")
        if not (sep and slash and at) or f"{scheme}://{netloc}" != self._origin:
            raise ItemError(f"{ref!r} is not a reference to {self.config.root}")
        return user, "/" + path

    def _auth(self, user: str) -> AccountAuth:
        """The credentials (and session) of account `user` for one request."""
        with self._lock:
            auth = self._auths.get(user)
        if auth is None:
            auth = AccountAuth(user, self._password(user).get_secret_value())
            with self._lock:
                auth = self._auths.setdefault(user, auth)
        return auth

    @contextlib.contextmanager
    def _transient(self, what: str) -> Iterator[None]:
        """No answer in time or a broken connection inside: `TransientError` (the flows retry)."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise governed(TransientError(f"{what}: {self.product} did not answer in time ({type(exc).__name__})"),
                           self.retry) from None
        except httpx.TransportError as exc:
            raise governed(TransientError(f"{what}: connection to {self.config.root} failed ({type(exc).__name__})"),
                           self.retry) from None

    def _probe(self, method: str, user: str, url: str, **kwargs) -> httpx.Response:
        """One request of `check`; a server out of reach (or not trusted) is `Unreachable`. Asked
        again with the same request while `probing()`, the first answer is given (see ProbeMemo)."""
        key = ("probe", method, user, url, repr(sorted((kwargs.get("headers") or {}).items())),
               kwargs.get("content"))
        return self._once(key, lambda: self._probe_now(method, user, url, **kwargs),
                          keep=lambda resp: resp.status_code not in TRANSIENT_STATUS)

    def _probe_now(self, method: str, user: str, url: str, **kwargs) -> httpx.Response:
        try:
            return self._client.request(method, url, auth=self._auth(user), **kwargs)
        except httpx.ConnectError as exc:
            if caused_by(exc, ssl.SSLError):
                raise Unreachable("its TLS certificate is not trusted (set ca_file to the CA that signed "
                                  "it, as a PEM file)") from None
            raise Unreachable(f"cannot connect ({type(exc).__name__}): is the url right and the server up?") \
                from None
        except httpx.TimeoutException:
            raise Unreachable(f"did not answer within {self.config.timeout} s") from None
        except httpx.TransportError as exc:
            raise Unreachable(f"the connection failed ({type(exc).__name__})") from None
