"""An S3 server on loopback for tests: moto's server mode in a process of its own.

moto (`moto[server]`) answers the S3 REST API as AWS documents it, in memory (its data is lost
when it stops). It runs as a separate process, so that memory measured in a test is the client's
alone. Any access key is accepted.

`FaultProxy` sits between a client and the server and answers chosen requests itself with an
S3 error (503 SlowDown, 500 InternalError, …), as a busy or failing S3 service does; everything
else it forwards unchanged.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from servers import free_port

__all__ = ["MotoS3", "FaultProxy"]


class MotoS3:
    """`python -m moto.server` on 127.0.0.1 and a free port; `url` is its endpoint."""

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoS3":
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self._proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                      start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/moto-api/")
                conn.getresponse().read()
                conn.close()
                return self
            except OSError:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"moto server did not start: {self._proc.stderr.read().decode()[-2000:]}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start within 60 s") from None
                time.sleep(0.2)

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", "/moto-api/reset")
        conn.getresponse().read()
        conn.close()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(10)
        self._proc = None

    def __enter__(self) -> "MotoS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_ERRORS = {500: "InternalError", 502: "BadGateway", 503: "SlowDown", 504: "GatewayTimeout"}


class FaultProxy:
    """Forwards to `upstream` (host, port), except the next `fail(n)` requests matching a method,
    which get an S3 error answer with `status` (and Retry-After when given)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._faults: list[tuple[str | None, int, str | None]] = []
        self.seen: list[tuple[str, str, int]] = []           # (method, path, status answered)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):                   # quiet
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._take(self.command)
                if fault is not None:
                    status, retry_after = fault
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{_ERRORS.get(status, "Error")}'
                               f"</Code><Message>injected by the test</Message></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    proxy.seen.append((self.command, self.path, status))
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                upstream.request(self.command, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                # a HEAD answer tells the length of the body a GET would get
                self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()
                proxy.seen.append((self.command, self.path, resp.status))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, count: int, status: int = 503, method: str | None = None, retry_after: str | None = None) -> None:
        """Answer the next `count` requests (of `method`, or any) with `status`."""
        with self._lock:
            self._faults += [(method, status, retry_after)] * count

    def _take(self, method: str) -> tuple[int, str | None] | None:
        with self._lock:
            for i, (m, status, retry_after) in enumerate(self._faults):
                if m is None or m == method:
                    del self._faults[i]
                    return status, retry_after
        return None

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
