"""A fault-injecting HTTP proxy in front of a real server (the tests' Nextcloud), on loopback.

The real Nextcloud cannot be told to be busy: it will not answer 429 or 503 with a Retry-After on
demand, nor lose an answer after it did the work. This proxy forwards every request to the real
server unchanged (bodies streamed both ways, a block at a time) and, for the requests a `Fault`
matches, misbehaves the way a loaded server or a broken network does:

- `status=503, retry_after="7"`: answer that status itself, with a Sabre-style error body, and do
  not forward (the server never sees the request);
- `stall=2.0`: hold the request that long without forwarding it, then close the connection (a
  client with a shorter timeout sees no answer; the server never did the work);
- `after_work=True`: forward, read the server's whole answer, then stall or `drop` (close at once)
  instead of passing it on: the work is done at the server, the client never hears so.

Faults match by method and by a substring of the path, on every `every`-th matching request, at
most `times` times, optionally never twice on one path (`once_per_path`, so that a client's retry of
that request gets through). `requests` records every request (method, path, status the client got,
or `None` when it got no answer): tests read what a client really sent from it.

With `tls=(certificate, key)` the proxy speaks https to its clients (the real server stays plain
http behind it): a TLS front, as a reverse proxy is in a real deployment.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["Fault", "FaultProxy"]

#: Bytes passed through at a time, both ways.
BLOCK = 1 << 16
#: Request and answer headers that belong to one hop, not to the message.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Fault:
    """A misbehaviour: on every `every`-th matching request, at most `times` times (None: always)."""

    status: int | None = None              # answer this (429, 503, …) instead of forwarding
    retry_after: str | None = None         # with this Retry-After header
    stall: float = 0.0                     # seconds to hold the request (or, after_work, the answer)
    after_work: bool = False               # forward first: the server does the work, the answer is lost
    drop: bool = False                     # close the connection at once instead of stalling
    methods: tuple[str, ...] = ()          # only these methods (all when empty)
    path_contains: str = ""                # only paths (decoded) containing this
    every: int = 1
    times: int | None = None
    once_per_path: bool = False            # never twice on one path: the retry of a request gets through
    seen: int = field(default=0, init=False)
    hits: int = field(default=0, init=False)
    hit_paths: set = field(default_factory=set, init=False)

    def _take(self, method: str, path: str) -> bool:
        """Whether this request gets the fault (counts it when it does)."""
        if (self.methods and method not in self.methods) or self.path_contains not in path:
            return False
        if (self.times is not None and self.hits >= self.times) or (self.once_per_path and path in self.hit_paths):
            return False
        self.seen += 1
        if self.seen % self.every:
            return False
        self.hits += 1
        self.hit_paths.add(path)
        return True


class FaultProxy:
    """Forwards `http://127.0.0.1:<port>` to `upstream` (a base URL), injecting `faults`."""

    def __init__(self, upstream: str, *, tls: tuple[Path, Path] | None = None, upstream_timeout: float = 300) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.upstream_timeout = upstream_timeout
        self.faults: list[Fault] = []
        self.requests: list[dict] = []     # {"method", "path" (decoded), "status" (None: no answer), "fault"}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False       # idle keep-alive connections of clients never closed
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ what the tests read
    def seen(self, method: str | None = None, path_contains: str = "") -> list[dict]:
        """The requests recorded so far (of `method`, with `path_contains` in the path)."""
        with self._lock:
            return [r for r in self.requests if (method is None or r["method"] == method)
                    and path_contains in r["path"]]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults = []

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault._take(method, path):
                    return fault
        return None

    def _record(self, method: str, path: str, status: int | None, fault: Fault | None) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "status": status, "fault": fault})

    # ------------------------------------------------------------------ the proxy itself
    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):              # quiet
                pass

            def _body(self):
                """The request body, a block at a time (Content-Length or chunked)."""
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return
                        left = size
                        while left:
                            block = self.rfile.read(min(BLOCK, left))
                            if not block:
                                return
                            left -= len(block)
                            yield block
                        self.rfile.readline()
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    block = self.rfile.read(min(BLOCK, left))
                    if not block:
                        return
                    left -= len(block)
                    yield block

            def _hang_up(self, seconds: float) -> None:
                time.sleep(seconds)
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _any(self):
                method, path = self.command, unquote(urlsplit(self.path).path)
                fault = proxy._fault_for(method, path)
                if fault is not None and not fault.after_work:
                    for _ in self._body():                 # read what the client sends, as a server would
                        pass
                    if fault.status is not None:
                        payload = ('<?xml version="1.0" encoding="utf-8"?>\n<d:error xmlns:d="DAV:" '
                                   'xmlns:s="http://sabredav.org/ns"><s:exception>Injected</s:exception>'
                                   f"<s:message>injected by the test ({fault.status})</s:message></d:error>").encode()
                        self.send_response(fault.status)
                        self.send_header("Content-Type", "application/xml; charset=utf-8")
                        self.send_header("Content-Length", str(len(payload)))
                        if fault.retry_after is not None:
                            self.send_header("Retry-After", fault.retry_after)
                        self.end_headers()
                        if method != "HEAD":
                            self.wfile.write(payload)
                        proxy._record(method, path, fault.status, fault)
                        return
                    proxy._record(method, path, None, fault)
                    self._hang_up(0 if fault.drop else fault.stall)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                      timeout=proxy.upstream_timeout)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
                    has_body = chunked or int(self.headers.get("Content-Length") or 0) > 0
                    upstream.request(method, self.path, body=self._body() if has_body else None, headers=headers,
                                     encode_chunked=chunked)
                    resp = upstream.getresponse()
                    if fault is not None:                  # after the work: the answer is lost
                        resp.read()
                        proxy._record(method, path, None, fault)
                        self._hang_up(0 if fault.drop else fault.stall)
                        return
                    self.send_response(resp.status, resp.reason)
                    length = resp.getheader("Content-Length")
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and k.lower() not in ("server", "date"):
                            self.send_header(k, v)
                    bodyless = method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
                    if length is None and not bodyless:
                        self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    if not bodyless:
                        while block := resp.read(BLOCK):
                            if length is None:
                                self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                            else:
                                self.wfile.write(block)
                        if length is None:
                            self.wfile.write(b"0\r\n\r\n")
                    proxy._record(method, path, resp.status, None)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _any
            do_PROPFIND = do_PROPPATCH = do_MKCOL = do_MOVE = do_COPY = do_LOCK = do_UNLOCK = do_REPORT = _any

        return Handler
