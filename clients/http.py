"""What HTTP sources and sinks share: how their httpx client is made and how a server's
Retry-After (RFC 9110 §10.2.3) is read.

Sources and sinks do not import each other, so the Microsoft Graph source and the WebDAV, CalDAV and
CardDAV targets take these pieces from here.
"""

from __future__ import annotations

import http.cookiejar
import ssl

import httpx

from core.retry import retry_after_of

__all__ = ["make_client", "retry_after"]


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Keeps no cookie at all.

    One client serves every account of a source or target. Nextcloud answers a Basic-auth request
    with a session cookie, and a later request that carries it acts as *that* account, whatever
    credentials it sends: with a shared cookie jar, every user after the first would write into the
    first user's files (403 on their own). Each request carries its own credentials instead, and
    the DAV targets keep each account's session apart (sinks.http.AccountAuth)."""

    def set_ok(self, cookie, request) -> bool:
        return False

    def return_ok(self, cookie, request) -> bool:
        return False


def make_client(config, *, transport: httpx.BaseTransport | None = None, user_agent: str = "umstieg") -> httpx.Client:
    """An httpx client for a config with `timeout`, `verify_tls` and `ca_file` (a PEM file): at most 15 s
    to connect, no redirects followed (a redirect is a wrong url, said by `check`), no cookies kept
    (see `_NoCookies`)."""
    if config.ca_file is not None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(config.ca_file))
    else:
        verify = config.verify_tls
    timeout = httpx.Timeout(config.timeout, connect=min(config.timeout, 15.0))
    return httpx.Client(timeout=timeout, verify=verify, transport=transport, follow_redirects=False,
                        headers={"User-Agent": user_agent},
                        cookies=http.cookiejar.CookieJar(policy=_NoCookies()))


def retry_after(answer, cap: float | None = None) -> float | None:
    """Seconds the server asked us to wait (`Retry-After`: seconds or an HTTP date; never below 0,
    at most `cap`), or None when it did not say. `answer` is a response (its `.headers`) or headers."""
    return retry_after_of(getattr(answer, "headers", answer).get("Retry-After"), cap)   # one reading, core/retry.py
