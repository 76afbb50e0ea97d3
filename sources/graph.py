"""Microsoft Graph: the client shared by the OneDrive/SharePoint and the Microsoft 365 mailbox sources.

- **Tokens**: app-only (client credentials) from Entra ID through msal's
  `ConfidentialClientApplication`; msal caches the token and fetches a new one before it expires.
  msal only talks https to an authority; `ca_file` is trusted for the authority and for Graph.
- **Paging**: every collection is followed through `@odata.nextLink`; a delta query ends with an
  `@odata.deltaLink` that asks for the changes since (`Delta`). A delta link the service no
  longer knows (410 Gone) means a full resynchronisation: `DeltaExpired`, counted in `resyncs`.
- **Throttling is normal**: Graph answers 429 (and 503/504 when busy) with `Retry-After`. The
  client waits as asked and asks again, as the source's retry policy says (core/retry.py: Graph's
  defaults, or the source's `retry:` block), then hands the error to the flows as
  `TransientError(retry_after=…)`, marked spent: the flows' step retry does not ask again, so a
  request is sent at most `attempts` times in all. At most `concurrency` requests (Graph allows 4
  per mailbox) are under way at once per mailbox or drive.
- **Failures**: a timeout, a broken connection or a 5xx is retried the same way; a refused token (401) or a
  missing application permission (403) on a listing is `ConfigError` naming the permission; on one
  item (its content, its permissions) 403/404 are that item's `ItemError`.
- **Downloads**: `/content` answers 302 with a pre-authenticated URL; it is fetched *without* the
  Authorization header (the token must not travel to the download host), streamed to disk.

No message or log line carries the client secret or a token.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from core.plugins import PerProcess
from sources.graph_config import GraphApp as _GraphApp
from core.errors import ConfigError, ItemError, TransientError
from core.retry import answer_error, policy_for
from clients.http import make_client

__all__ = ["GraphClient", "Delta", "DeltaExpired", "Changes", "client_for", "user_agent", "quote_segment",
           "person_of"]

log = logging.getLogger("umstieg.sources.graph")

#: Bytes written to the local file at a time when streaming a download.
BLOCK = 1 << 20



def user_agent() -> str:
    """`umstieg/<version>`: Microsoft asks callers to name their application (it helps throttling support)."""
    try:
        version = importlib.metadata.version("umstieg")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return f"umstieg/{version}"


def quote_segment(value: str) -> str:
    """One URL path segment (a UPN, an id) for a Graph address."""
    return quote(value, safe="@")


class DeltaExpired(Exception):
    """The service no longer knows a delta link (410 Gone): enumerate everything again."""


@dataclass
class Delta:
    """One pass of a delta query: the entries it returned and the link for the next pass."""

    entries: list[dict] = field(default_factory=list)
    delta_link: str | None = None


@dataclass
class Changes:
    """What changed in a user's drive folder or mailbox since the last pass of this process."""

    changed: list = field(default_factory=list)            # ItemRefs, new or changed
    removed: list[str] = field(default_factory=list)       # keys of items deleted at the source
    resynced: bool = False                                 # no (valid) delta link: a full listing


def _error_of(resp: httpx.Response) -> tuple[str, str]:
    """Graph's error code and message from a JSON error body, short; ('', '') otherwise."""
    try:
        if "json" not in resp.headers.get("Content-Type", "") or len(resp.content) > 65536:
            return "", ""
        err = resp.json().get("error") or {}
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return "", ""
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("code", ""))[:100], str(err.get("message", ""))[:300]


class _TrustingSession:
    """A requests session for msal that trusts `ca` even when REQUESTS_CA_BUNDLE says otherwise.

    requests replaces a session's `verify` with REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the
    environment; passing `verify` on every request keeps the configured trust (and the environment's
    proxies, which `trust_env=False` would drop)."""

    def __init__(self, verify: str | bool, timeout: float) -> None:
        import requests
        self._session = requests.Session()
        self._session.headers["User-Agent"] = user_agent()
        self._verify, self._timeout = verify, timeout

    def get(self, url, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        return self._session.get(url, verify=self._verify, **kwargs)

    def post(self, url, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        return self._session.post(url, verify=self._verify, **kwargs)

    def close(self) -> None:
        self._session.close()


class GraphClient:
    """One application's connection to Graph: token, connection pool, throttling, paging."""

    def __init__(self, config: _GraphApp, *, transport: httpx.BaseTransport | None = None,
                 sleep=time.sleep) -> None:
        self.config = config
        self._base = config.graph_url.rstrip("/")
        parts = urlsplit(self._base)
        self._scope = f"{parts.scheme}://{parts.netloc}/.default"
        self._sleep = sleep
        #: how often and how long a request is asked again while Graph is busy (core/retry.py)
        self.retry = policy_for("graph", getattr(config, "retry", None))
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        self._app = None
        self._session: _TrustingSession | None = None
        self._secret: SecretStr | None = None
        self._gates: dict[str, threading.BoundedSemaphore] = {}
        #: how often the client slept for a throttled answer, and how often a delta link had expired
        self.waits = 0
        self.resyncs = 0
        self._client = make_client(config, transport=transport, user_agent=user_agent())

    def close(self) -> None:
        self._client.close()
        if self._session is not None:
            self._session.close()

    # ----------------------------------------------------------------------- tokens
    def _msal(self):
        import msal                                         # heavy: only when a Graph source is used
        if self._app is None:
            cfg = self.config
            self._secret = cfg.client_secret.resolve()      # ConfigError names the reference only
            verify = str(cfg.ca_file) if cfg.ca_file is not None else cfg.verify_tls
            session = _TrustingSession(verify, cfg.timeout)
            authority = f"{cfg.authority.rstrip('/')}/{cfg.tenant_id}"
            known = urlsplit(cfg.authority).hostname in ("login.microsoftonline.com", "login.microsoftonline.us",
                                                         "login.chinacloudapi.cn", "login.microsoftonline.de")
            try:
                self._app = msal.ConfidentialClientApplication(
                    cfg.client_id, client_credential=self._secret.get_secret_value(), authority=authority,
                    http_client=session, validate_authority=known, instance_discovery=known)
                self._session = session
            except ValueError as exc:
                session.close()
                first = self._scrub(str(exc)).split(". ")[0][:200]
                raise ConfigError(f"the identity platform at {cfg.authority} does not know the tenant "
                                  f"{cfg.tenant_id!r}: check tenant_id (and authority, for a national cloud). "
                                  f"msal said: {first}") from None
            except Exception as exc:  # noqa: BLE001 - requests' connection errors, TLS, JSON
                session.close()
                raise TransientError(f"cannot reach the identity platform at {authority}: "
                                     f"{type(exc).__name__}: {self._scrub(str(exc))[:300]}") from None
        return self._app

    def _scrub(self, text: str) -> str:
        secret = self._secret.get_secret_value() if self._secret is not None else ""
        return text.replace(secret, "***") if secret else text

    def token(self) -> str:
        """An access token for Graph (from msal's cache while it is valid)."""
        with self._token_lock:
            app = self._msal()
            try:
                result = app.acquire_token_for_client(scopes=[self._scope])
            except Exception as exc:  # noqa: BLE001 - requests' connection errors
                raise TransientError(f"cannot reach the identity platform for a token: {type(exc).__name__}") from None
        if "access_token" in result:
            return result["access_token"]
        error = result.get("error", "")
        description = self._scrub(str(result.get("error_description", "")).splitlines()[0] if
                                  result.get("error_description") else "")[:300]
        if error in ("invalid_client", "unauthorized_client", "invalid_request", "invalid_scope"):
            raise ConfigError(f"Entra ID refused the application {self.config.client_id} of tenant "
                              f"{self.config.tenant_id} ({error}): check client_id and client_secret "
                              f"({self.config.client_secret}) and that the secret has not expired. {description}")
        if error in ("temporarily_unavailable", "server_error"):
            raise TransientError(f"the identity platform is busy ({error})")
        raise ConfigError(f"no token for the application {self.config.client_id}: {error} {description}")

    def _forget_token(self) -> None:
        """Drop the cached token (Graph refused it: revoked, or the clocks disagree)."""
        with self._token_lock:
            if self._app is None:
                return
            cache = self._app.token_cache
            for at in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
                cache.remove_at(at)

    # ----------------------------------------------------------------------- requests
    def url(self, path: str) -> str:
        """The full address of a Graph path (`/users/x/drive`), or `path` itself if it is a URL."""
        return path if path.startswith(("https://", "http://")) else self._base + path

    def _gate(self, scope: str) -> threading.BoundedSemaphore:
        with self._lock:
            gate = self._gates.get(scope)
            if gate is None:
                gate = self._gates[scope] = threading.BoundedSemaphore(self.config.concurrency)
            return gate

    def request(self, method: str, path: str, *, scope: str, need: str, item: bool = False,
                params: dict | None = None, headers: dict | None = None, stream: bool = False,
                ok: tuple[int, ...] = (200,), gated: bool = True) -> httpx.Response:
        """One Graph request for a mailbox or drive (`scope`), with token, throttling and the taxonomy.

        `need` names the application permission a 403 means is missing; `item` says the request
        concerns one item (403/404 fail that item) rather than a whole listing (they stop the run).
        With `stream`, the caller reads and closes the response. `gated=False` when the caller
        already holds the mailbox's or drive's concurrency gate (a download holds it to the end)."""
        url = self.url(path)
        what = f"{method} {urlsplit(url).path}"
        refreshed = False

        def send() -> httpx.Response:
            hdrs = {"Authorization": f"Bearer {self.token()}", **(headers or {})}
            with self._gate(scope) if gated else contextlib.nullcontext():
                req = self._client.build_request(method, url, params=params, headers=hdrs)
                return self._client.send(req, stream=stream)

        while True:
            resp = self._patiently(send, what, "Graph", ok)
            status = resp.status_code
            if status in ok or (300 <= status < 400 and 302 in ok):
                return resp
            if stream:
                resp.read()
            resp.close()
            if status == 401 and not refreshed:
                refreshed = True
                self._forget_token()
                continue
            code, message = _error_of(resp)
            detail = f" ({code}: {message})" if code or message else ""
            if status == 401:
                raise ConfigError(f"{what}: Graph refused the application's token (401){detail}; check the "
                                  f"application registration of client {self.config.client_id}")
            if status == 403:
                text = (f"{what}: Graph refused access (403){detail}: the application needs the {need} "
                        "application permission with admin consent (or an access policy excludes this mailbox/site)")
                raise ItemError(text) if item else ConfigError(text)
            if status == 404:
                text = f"{what}: not found at Graph (404){detail}"
                raise ItemError(text) if item else ConfigError(text)
            if status == 410:
                raise DeltaExpired(what)
            raise ItemError(f"{what}: Graph refused the request ({status}){detail}")

    def _patiently(self, send, what: str, who: str, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        """`send()`'s answer, asked again while Graph (or a download host) is busy (429, 5xx) or out of
        reach, as the retry policy says (the server's Retry-After first). The error that ends it is
        marked spent (`attempts`), so the flows' step retry passes it on instead of asking again.
        Every Graph request is a GET, which may be repeated safely."""
        tried, waited = 0, 0.0
        while True:
            tried += 1
            try:
                resp = send()
            except httpx.TimeoutException:
                error = TransientError(f"{what}: {who} did not answer within {self.config.timeout:g} s")
            except httpx.TransportError as exc:
                error = TransientError(f"{what}: cannot reach {who}: {type(exc).__name__}")
            else:
                busy = None if resp.status_code in ok else answer_error(resp.status_code, resp.headers,
                                                                          f"{what}: {who} is busy")
                if busy is None:              # an answer, good or bad, that asking again would not change
                    return resp
                resp.read()
                resp.close()
                error = busy
            wait = self.retry.wait_before(tried, error.retry_after, waited)
            if wait is None:
                error.attempts = tried
                if tried > 1:
                    error.args = (f"{error.args[0]} ({tried} tries)",)
                raise error from None
            with self._lock:
                self.waits += 1
            log.info("%s; waiting %.1f s, then try %d of %d", error, wait, tried + 1, self.retry.attempts)
            self._sleep(wait)
            waited += wait

    def get_json(self, path: str, *, scope: str, need: str, item: bool = False, params: dict | None = None,
                 headers: dict | None = None) -> dict:
        """One GET answered with a JSON object."""
        resp = self.request("GET", path, scope=scope, need=need, item=item, params=params, headers=headers)
        try:
            body = resp.json()
        except ValueError:
            raise TransientError(f"GET {urlsplit(self.url(path)).path}: Graph sent no JSON") from None
        if not isinstance(body, dict):
            raise TransientError(f"GET {urlsplit(self.url(path)).path}: Graph sent no JSON object")
        return body

    def pages(self, path: str, *, scope: str, need: str, item: bool = False, params: dict | None = None,
              headers: dict | None = None) -> Iterator[dict]:
        """Every entry of a collection, following `@odata.nextLink` (which carries the query itself)."""
        body = self.get_json(path, scope=scope, need=need, item=item, params=params, headers=headers)
        while True:
            yield from body.get("value") or []
            link = body.get("@odata.nextLink")
            if not link:
                return
            body = self.get_json(link, scope=scope, need=need, item=item, headers=headers)

    def delta(self, path: str, *, scope: str, need: str, params: dict | None = None) -> Delta:
        """One delta pass from `path` (a `…/delta` address, or a delta link from the last pass).

        Raises `DeltaExpired` when the service answers 410 Gone for a saved link: the caller
        enumerates from scratch (and counts it)."""
        found = Delta()
        body = self.get_json(path, scope=scope, need=need, params=params)
        while True:
            found.entries.extend(body.get("value") or [])
            if body.get("@odata.nextLink"):
                body = self.get_json(body["@odata.nextLink"], scope=scope, need=need)
                continue
            found.delta_link = body.get("@odata.deltaLink")
            return found

    def expired(self, what: str) -> None:
        """Record one delta link that had expired (the full resynchronisation is in the report)."""
        with self._lock:
            self.resyncs += 1
        log.warning("%s: the saved delta link has expired (410 Gone): listing everything again", what)

    def download(self, path: str, dst: Path, *, scope: str, need: str) -> int:
        """Stream one item's bytes to `dst`; follows a redirect *without* the Authorization header.

        Returns the byte count; a body shorter or longer than the announced Content-Length fails the
        item (a cut-off transfer is transient)."""
        with self._gate(scope):                 # held until the last byte: a download is a request under way
            resp = self.request("GET", path, scope=scope, need=need, item=True, stream=True, ok=(200, 302),
                                gated=False)
            try:
                if resp.status_code != 200:
                    location = resp.headers.get("Location")
                    resp.close()
                    if not location:
                        raise ItemError(f"GET {urlsplit(self.url(path)).path}: a redirect without a Location")
                    resp = self._fetch_preauthenticated(location)
                return _stream_to(resp, dst)
            finally:
                resp.close()

    def _fetch_preauthenticated(self, url: str) -> httpx.Response:
        """GET a pre-authenticated download URL: no token, its own throttling answers honoured."""
        shown = urlsplit(url).netloc
        resp = self._patiently(lambda: self._client.send(self._client.build_request("GET", url), stream=True),
                               "download", shown)
        if resp.status_code == 200:
            return resp
        resp.read()
        resp.close()
        if resp.status_code in (401, 403):
            # pre-authenticated URLs live about an hour: a fresh one comes with the next attempt
            raise TransientError(f"download from {shown}: the download link was refused ({resp.status_code})")
        raise ItemError(f"download from {shown}: refused ({resp.status_code})")


def _stream_to(resp: httpx.Response, dst: Path) -> int:
    """Write a streamed body to `dst` (atomically) and check its length against Content-Length."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    written = 0
    try:
        with open(tmp, "wb") as out:
            for block in resp.iter_bytes(BLOCK):
                out.write(block)
                written += len(block)
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        tmp.unlink(missing_ok=True)
        raise TransientError(f"the download broke off after {written} bytes: {type(exc).__name__}") from None
    expected = resp.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and int(expected) != written and \
            not resp.headers.get("Content-Encoding"):
        tmp.unlink(missing_ok=True)
        raise TransientError(f"the download brought {written} bytes of {expected} announced")
    os.replace(tmp, dst)
    return written


#: This process's client for one application: one token cache and connection pool for every
#: thread. Sources of several departments with the same application still share nothing else.
client_for = PerProcess(GraphClient, close="close", key=lambda config: config.model_dump_json(include={
    "tenant_id", "client_id", "client_secret", "authority", "graph_url", "concurrency", "verify_tls", "ca_file",
    "timeout", "retry"}))


def person_of(client: GraphClient, upn: str) -> dict | Literal[False] | None:
    """The Entra ID user `upn` as Graph holds it (`GET /users/{upn}`: `mail`, the primary e-mail
    address, and `displayName`), for the identity check; False when there is no such user, None
    when the application may not read users (User.Read.All) and so cannot tell."""
    resp = client.request("GET", f"/users/{quote_segment(upn)}", scope=upn, need="User.Read.All", item=True,
                          params={"$select": "id,userPrincipalName,mail,displayName"}, ok=(200, 403, 404))
    if resp.status_code == 404:
        return False
    if resp.status_code == 403:
        return None
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
