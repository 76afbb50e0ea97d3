"""A protocol-level TEST server that behaves like Nextcloud's WebDAV — for tests only, not Nextcloud.

No longer what the Nextcloud tests trust: they run against the real Nextcloud 27
(tests/servers/nextcloud.py), with faults from tests/servers/faultproxy.py in front of it. What
is still used from here is `nextcloud_rejects`, a model of the names Nextcloud 30 refuses with its
Windows-compatible names on (stricter than 27, which accepts `:` or `CON`): the property test of
the name mapping checks 20,000 random names against it, which the real server (~18 PUT/s) cannot
do; the conformance suite checks that every name the real 27 refuses, the model refuses too. The
server itself is used by no test or benchmark any more. It models Nextcloud 30 and differs from
the real 27, which keeps `OC-Checksum` on chunked uploads and checks the quota only when MOVE
assembles the file.

It follows Nextcloud's documented behaviour, and its code where the documentation is silent
(server 30: apps/dav ChunkingV2Plugin and Connector/Sabre/File.php, lib/private/Files/FilenameValidator):

- `/remote.php/dav/files/<user>/…`: PROPFIND (Depth 0 or 1; resourcetype, getcontentlength,
  getlastmodified, getetag, quota-available-bytes, quota-used-bytes, oc:checksums, oc:fileid),
  MKCOL (405 if it exists, 409 without a parent), PUT, GET, DELETE. PUT honours `X-OC-MTime`
  (answering `X-OC-MTime: accepted`) and stores `OC-Checksum` verbatim without checking it; a PUT
  without one clears the stored checksum. A body shorter than its Content-Length stores nothing.
- chunked upload v2 under `/remote.php/dav/uploads/<user>/<id>`: MKCOL, chunk PUTs and the MOVE of
  `.file` need a `Destination` header; chunks are named 1…10000 and assembled in numeric order;
  every chunk but the last must be at least 5 MiB; `OC-Total-Length` is checked against the quota
  on every chunk (507) and against the assembled size on MOVE (400); MOVE honours `X-OC-MTime` and,
  like Nextcloud with a distributed cache, stores no checksum; chunks cannot be downloaded.
- names Nextcloud refuses (with its "Windows-compatible file names" setting on, which a migration
  from Windows shares must assume) are answered 400, as Nextcloud's InvalidPath is.
- a quota per user: a write that does not fit is answered 507 Insufficient Storage, with
  Sabre's error body (`<s:message>Insufficient space in …</s:message>`), after reading the body as
  the web server in front of Nextcloud would.
- basic auth with per-user passwords (app passwords are passwords to WebDAV); a user reaches only
  his own `files/` and `uploads/`.
- the OCS share API (`/ocs/v2.php/apps/files_sharing/api/v1/shares`, `OCS-APIRequest: true`
  required, JSON with `format=json`): POST creates a user (0) or group (1) share of a path in the
  caller's files (404 for a missing path or an unknown user or group; 403 for sharing with oneself
  or sharing a path with someone twice; 400 for permissions a file cannot have); GET lists the
  caller's shares of `path`. Shares live in `shares`.

And what a test needs and Nextcloud does not have: `faults` (answer 429/503 with Retry-After, or
no answer in time, before or after doing the work, on chosen requests), a request `log`, and a
`sparse` mode that stores runs of zero bytes as holes (for the 5 GB benchmark). Request bodies
sent with `Transfer-Encoding: chunked` are refused (411): Nextcloud behind some PHP set-ups
stores them as empty files, so the client must always send a Content-Length.

Run in-process (`with NextcloudDav(root, users) as server: server.url`) or as a process:
`python tests/servers/nextcloud_dav.py --root DIR --user anna:secret [--sparse]` prints
`PORT <n>` and serves until terminated.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["NextcloudDav", "Fault", "nextcloud_rejects", "MIN_CHUNK", "OCS_SHARES"]

OCS_SHARES = "/ocs/v2.php/apps/files_sharing/api/v1/shares"

MIN_CHUNK = 5 * 1024 * 1024
BLOCK = 1 << 20
_WINDOWS_CHARS = set('<>:"|?*')
_DEVICE_NAMES = {"con", "prn", "aux", "nul"} | {f"{p}{d}" for p in ("com", "lpt") for d in range(10)}


def nextcloud_rejects(name: str, windows_compatible: bool = True) -> str | None:
    """Why Nextcloud refuses `name` as a file or folder name, or None if it accepts it."""
    trimmed = name.strip()
    if trimmed == "":
        return "empty file name"
    if trimmed in (".", ".."):
        return "dot files are not allowed"
    if len(name.encode("utf-8")) > 250:
        return "file name is too long"
    lower = name.lower()
    if lower in (".htaccess",):
        return f'"{name}" is a forbidden file or folder name'
    for ext in (".filepart", ".part") + ((" ", ".") if windows_compatible else ()):
        if lower.endswith(ext):
            return f'"{ext}" is a forbidden file type' if ext.startswith(".") and len(ext) > 1 \
                else f'file names must not end with "{ext}"'
    if any(ord(c) < 32 for c in name):
        return "invalid character in the name"
    forbidden = {"\\", "/"} | (_WINDOWS_CHARS if windows_compatible else set())
    bad = next((c for c in name if c in forbidden), None)
    if bad:
        return f'"{bad}" is not allowed inside a file or folder name'
    if windows_compatible:
        if name.startswith(" "):
            return "file names must not begin with a space"
        dot = lower.find(".", 1)
        if (lower[:dot] if dot > 0 else lower) in _DEVICE_NAMES:
            return f'"{name}" is a forbidden prefix for file or folder names'
    return None


@dataclass
class Fault:
    """A misbehaviour to inject: on every `every`-th matching request, at most `times` times."""

    status: int | None = None              # answer this (429, 503, …) instead of doing the work
    retry_after: str | None = None         # with this Retry-After header
    stall: float = 0.0                     # seconds before answering (beyond the client's timeout: no answer)
    after_work: bool = False               # stall after doing the work: the effect stays, the answer is lost
    methods: tuple[str, ...] = ()          # only these methods (all when empty)
    path_contains: str = ""
    every: int = 1
    times: int | None = None
    once_per_path: bool = False            # never twice on one path: retries of a request get through
    seen: int = field(default=0, init=False)
    hits: int = field(default=0, init=False)
    hit_paths: set = field(default_factory=set, init=False)

    def matches(self, method: str, path: str) -> bool:
        return (not self.methods or method in self.methods) and self.path_contains in path


class _Reply(Exception):
    """Answer the current request with this status (and a Sabre-style error body)."""

    def __init__(self, status: int, message: str = "", exception: str = "Sabre\\DAV\\Exception",
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.exception, self.headers = status, message, exception, headers or {}


class NextcloudDav:
    """The server: storage under `root`, `users` = {name: password}, `quotas` = {name: bytes}."""

    def __init__(self, root: Path, users: dict[str, str], quotas: dict[str, int] | None = None,
                 sparse: bool = False, windows_compatible: bool = True,
                 tls: tuple[Path, Path] | None = None, groups: set[str] | None = None) -> None:
        self.root = Path(root)
        self.groups = set(groups or ())
        self.shares: list[dict] = []            # OCS shares: id, uid_owner, path, share_type, share_with, permissions
        self.tls = tls                          # (certificate, key) PEM files: serve https
        self.users = dict(users)
        self.quotas = dict(quotas or {})
        self.sparse = sparse
        self.windows_compatible = windows_compatible
        self.faults: list[Fault] = []
        self.log: list[dict] = []
        self.errors: list[str] = []             # this server's own bugs (answered 500): tests expect none
        self.lock = threading.RLock()
        self.checksums: dict[str, str] = {}     # files path -> OC-Checksum as sent
        self.uploads: dict[str, str] = {}       # upload folder -> destination (files path)
        self.used: Counter = Counter()
        for sub in ("files", "uploads", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for user in self.users:
            (self.root / "files" / user).mkdir(exist_ok=True)
            (self.root / "uploads" / user).mkdir(exist_ok=True)
            self.used[user] = sum(p.stat().st_size for p in (self.root / "files" / user).rglob("*") if p.is_file())
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------------------- life
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> "NextcloudDav":
        handler = type("Handler", (_Handler,), {"dav": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        if self.tls:
            import ssl
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, self.tls))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="nextcloud-dav", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(10)
            self._httpd = None

    def __enter__(self) -> "NextcloudDav":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --------------------------------------------------------------------------- for tests
    def file(self, user: str, path: str) -> Path:
        """Where the server keeps `path` (as Nextcloud names it) of `user`'s files."""
        return self.root / "files" / user / path.strip("/")

    def files(self, user: str) -> dict[str, Path]:
        """Every file of `user`: path as Nextcloud names it → where it is kept."""
        base = self.root / "files" / user
        return {p.relative_to(base).as_posix(): p for p in sorted(base.rglob("*")) if p.is_file()}

    def writes(self) -> Counter:
        """How often each file was written (PUT or the MOVE of a chunked upload), by files path."""
        with self.lock:
            return Counter(e["wrote"] for e in self.log if e.get("wrote"))

    def requests(self, method: str | None = None) -> list[dict]:
        with self.lock:
            return [e for e in self.log if method is None or e["method"] == method]

    def fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.matches(method, path) and not (f.once_per_path and path in f.hit_paths):
                    f.seen += 1
                    if f.seen % f.every == 0 and (f.times is None or f.hits < f.times):
                        f.hits += 1
                        f.hit_paths.add(path)
                        return f
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # headers and body go out as two writes: no 40 ms delayed-ACK stall
    dav: NextcloudDav
    server_version = "NextcloudDavTestServer"

    def log_message(self, format, *args) -> None:     # quiet
        pass

    # ---------------------------------------------------------------------- dispatch
    def do_PROPFIND(self): self._serve()              # noqa: E704
    def do_MKCOL(self): self._serve()                 # noqa: E704
    def do_PUT(self): self._serve()                   # noqa: E704
    def do_GET(self): self._serve()                   # noqa: E704
    def do_HEAD(self): self._serve()                  # noqa: E704
    def do_DELETE(self): self._serve()                # noqa: E704
    def do_MOVE(self): self._serve()                  # noqa: E704
    def do_OPTIONS(self): self._serve()               # noqa: E704
    def do_POST(self): self._serve()                  # noqa: E704

    def _serve(self) -> None:
        self._body_read = False
        self._wrote: str | None = None
        path = unquote(urlsplit(self.path).path)
        entry = {"method": self.command, "path": path, "status": None, "t": time.monotonic()}
        fault = self.dav.fault(self.command, path)
        try:
            if fault is not None and not fault.after_work:
                self._drain()
                if fault.stall:
                    time.sleep(fault.stall)
                    self.close_connection = True
                    entry["status"] = "stalled"
                    with self.dav.lock:
                        self.dav.log.append(entry)
                    return
                raise _Reply(fault.status, "injected fault", "Sabre\\DAV\\Exception\\ServiceUnavailable",
                             {"Retry-After": fault.retry_after} if fault.retry_after is not None else {})
            status, headers, body = self._route(path)
        except _Reply as reply:
            self._drain()
            status, headers, body = self._error(reply)
        except Exception as exc:                         # noqa: BLE001 - a bug here must not pass as a 503
            with self.dav.lock:
                self.dav.errors.append(f"{self.command} {path}: {traceback.format_exc()}")
            self.close_connection = True
            status, headers, body = self._error(_Reply(500, f"test server bug: {type(exc).__name__}"))
        entry["status"] = status
        entry["wrote"] = self._wrote if status in (201, 204) else None
        with self.dav.lock:
            self.dav.log.append(entry)
        if fault is not None and fault.after_work:
            time.sleep(fault.stall)
            self.close_connection = True
        self._respond(status, headers, body)

    @staticmethod
    def _error(reply: _Reply):
        """Status, headers and Sabre's XML error body for `reply`."""
        body = ('<?xml version="1.0" encoding="utf-8"?>\n<d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">'
                f"<s:exception>{_x(reply.exception)}</s:exception><s:message>{_x(reply.message)}</s:message>"
                "</d:error>").encode()
        return reply.status, {**reply.headers, "Content-Type": "application/xml; charset=utf-8"}, body

    def _respond(self, status: int, headers: dict, body) -> None:
        try:
            self.send_response(status)
            length = body[1] if isinstance(body, tuple) else len(body)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(length))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            if isinstance(body, tuple):                 # (open file, length): stream it
                while block := body[0].read(BLOCK):
                    self.wfile.write(block)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if isinstance(body, tuple):
                body[0].close()

    # ---------------------------------------------------------------------- request bodies
    def _length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise _Reply(411, "send a Content-Length: chunked request bodies are not stored reliably")
        return int(self.headers.get("Content-Length") or 0)

    def _drain(self) -> None:
        """Read and drop the request body (the web server in front of Nextcloud reads it all)."""
        if self._body_read:
            return
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            block = self.rfile.read(min(BLOCK, left))
            if not block:
                self.close_connection = True
                return
            left -= len(block)

    def _receive(self, dst: Path) -> int:
        """Store the body in `dst` (holes for zero runs in sparse mode); the size, or 400 if cut short."""
        left = total = self._length()
        self._body_read = True
        zero = bytes(BLOCK) if self.dav.sparse else b""
        with open(dst, "wb") as f:
            while left > 0:
                block = self.rfile.read(min(BLOCK, left))
                if not block:
                    self.close_connection = True
                    break
                if self.dav.sparse and block == zero[:len(block)]:
                    f.seek(len(block), os.SEEK_CUR)
                else:
                    f.write(block)
                left -= len(block)
            f.truncate()
        if left:
            dst.unlink(missing_ok=True)
            raise _Reply(400, f"expected filesize of {total} bytes but read {total - left} bytes",
                         "Sabre\\DAV\\Exception\\BadRequest")
        return total

    # ---------------------------------------------------------------------- routing
    def _user(self) -> str:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                name, _, password = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
            except ValueError:
                name, password = "", ""
            if name in self.dav.users and self.dav.users[name] == password:
                return name
        raise _Reply(401, "No public access to this resource., Username or password was incorrect",
                     "Sabre\\DAV\\Exception\\NotAuthenticated", {"WWW-Authenticate": 'Basic realm="Nextcloud"'})

    def _route(self, path: str):
        if path.rstrip("/") == OCS_SHARES:
            return self._ocs_shares(self._user())
        prefix = "/remote.php/dav/"
        if not path.startswith(prefix):
            raise _Reply(404, f"no such endpoint {path}", "Sabre\\DAV\\Exception\\NotFound")
        user = self._user()
        area, _, rest = path[len(prefix):].partition("/")
        owner, _, sub = rest.partition("/")
        if area not in ("files", "uploads") or owner != user:
            raise _Reply(404, f"File with name {rest} could not be located", "Sabre\\DAV\\Exception\\NotFound")
        sub = sub.strip("/")
        if area == "files":
            return self._files(user, sub)
        return self._uploads(user, sub)

    # ---------------------------------------------------------------------- OCS shares
    def _ocs(self, status: int, message: str, data) -> tuple:
        """An OCS v2 answer: the HTTP status is the OCS status code (200 = ok)."""
        body = json.dumps({"ocs": {"meta": {"status": "ok" if status == 200 else "failure", "statuscode": status,
                                            "message": message}, "data": data}}).encode()
        return status, {"Content-Type": "application/json; charset=utf-8"}, body

    def _ocs_shares(self, user: str):
        if self.headers.get("OCS-APIRequest", "").lower() != "true":
            self._drain()
            return self._ocs(997, "CSRF check failed", [])
        query = parse_qs(urlsplit(self.path).query)
        if self.command == "GET":
            wanted = "/" + query.get("path", [""])[0].strip("/")
            with self.dav.lock:
                found = [dict(sh) for sh in self.dav.shares if sh["uid_owner"] == user and sh["path"] == wanted]
            return self._ocs(200, "OK", found)
        if self.command != "POST":
            self._drain()
            return self._ocs(405, "method not allowed", [])
        length = self._length()
        self._body_read = True
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        path = "/" + form.get("path", "").strip("/")
        node = self.dav.root / "files" / user / path.strip("/")
        if path == "/" or not node.exists():
            return self._ocs(404, "Wrong path, file/folder does not exist", [])
        kind, target = int(form.get("shareType", -1)), form.get("shareWith", "")
        perms = int(form.get("permissions", 31 if node.is_dir() else 19))
        if kind == 0 and target not in self.dav.users:
            return self._ocs(404, "Please specify a valid user", [])
        if kind == 1 and target not in self.dav.groups:
            return self._ocs(404, "Please specify a valid group", [])
        if kind not in (0, 1):
            return self._ocs(400, "Unknown share type", [])
        if kind == 0 and target == user:
            return self._ocs(403, "Sharing with yourself is not allowed", [])
        if not node.is_dir() and perms & (4 | 8):
            return self._ocs(400, "File shares cannot have create or delete permissions", [])
        with self.dav.lock:
            if any(sh["uid_owner"] == user and sh["path"] == path and sh["share_with"] == target
                   and sh["share_type"] == kind for sh in self.dav.shares):
                return self._ocs(403, f"Path is already shared with {target}", [])
            share = {"id": str(len(self.dav.shares) + 1), "uid_owner": user, "path": path, "share_type": kind,
                     "share_with": target, "permissions": perms, "item_type": "folder" if node.is_dir() else "file"}
            self.dav.shares.append(share)
        return self._ocs(200, "OK", dict(share))

    # ---------------------------------------------------------------------- files
    def _validate(self, sub: str) -> None:
        for part in sub.split("/"):
            why = nextcloud_rejects(part, self.dav.windows_compatible) if part else None
            if why:
                raise _Reply(400, why, "OCA\\DAV\\Connector\\Sabre\\Exception\\InvalidPath")

    def _files(self, user: str, sub: str):
        dav = self.dav
        disk = dav.root / "files" / user / sub
        key = f"{user}/{sub}"
        method = self.command
        if method == "PROPFIND":
            return self._propfind(user, sub, disk)
        if method in ("GET", "HEAD"):
            if not disk.exists():
                raise _Reply(404, f"File with name {sub} could not be located", "Sabre\\DAV\\Exception\\NotFound")
            if disk.is_dir():
                raise _Reply(501, "GET is not implemented on collections", "Sabre\\DAV\\Exception\\NotImplemented")
            headers = {"Content-Type": "application/octet-stream", "ETag": _etag(disk),
                       "Last-Modified": formatdate(disk.stat().st_mtime, usegmt=True)}
            if key in dav.checksums:
                headers["OC-Checksum"] = dav.checksums[key]
            return 200, headers, (open(disk, "rb"), disk.stat().st_size)
        if method == "MKCOL":
            self._drain()
            self._validate(sub)
            if disk.exists():
                raise _Reply(405, "The resource you tried to create already exists",
                             "Sabre\\DAV\\Exception\\MethodNotAllowed")
            if not disk.parent.is_dir():
                raise _Reply(409, "Parent node does not exist", "Sabre\\DAV\\Exception\\Conflict")
            disk.mkdir()
            return 201, {}, b""
        if method == "PUT":
            self._validate(sub)
            if not sub or disk.is_dir():
                raise _Reply(405, "cannot PUT to a collection", "Sabre\\DAV\\Exception\\MethodNotAllowed")
            if not disk.parent.is_dir():
                raise _Reply(409, "Could not find the parent folder", "Sabre\\DAV\\Exception\\Conflict")
            size = self._length()
            old = disk.stat().st_size if disk.is_file() else 0
            self._check_quota(user, size - old, sub)
            tmp = dav.root / "tmp" / uuid.uuid4().hex
            self._receive(tmp)
            headers = {}
            with dav.lock:
                existed = disk.is_file()
                old = disk.stat().st_size if existed else 0
                os.replace(tmp, disk)
                dav.used[user] += size - old
                checksum = self.headers.get("OC-Checksum")
                if checksum:
                    dav.checksums[key] = checksum.strip()
                else:
                    dav.checksums.pop(key, None)
            if self.headers.get("X-OC-MTime"):
                mtime = self._mtime()
                os.utime(disk, (mtime, mtime))
                headers["X-OC-MTime"] = "accepted"
            headers["ETag"] = _etag(disk)
            self._wrote = key
            return (204 if existed else 201), headers, b""
        if method == "DELETE":
            self._drain()
            if not disk.exists():
                raise _Reply(404, f"File with name {sub} could not be located", "Sabre\\DAV\\Exception\\NotFound")
            with dav.lock:
                if disk.is_dir():
                    freed = sum(p.stat().st_size for p in disk.rglob("*") if p.is_file())
                    shutil.rmtree(disk)
                    for k in [k for k in dav.checksums if k.startswith(key + "/")]:
                        del dav.checksums[k]
                else:
                    freed = disk.stat().st_size
                    disk.unlink()
                    dav.checksums.pop(key, None)
                dav.used[user] -= freed
            return 204, {}, b""
        if method == "OPTIONS":
            self._drain()
            return 200, {"DAV": "1, 3, extended-mkcol", "Allow": "OPTIONS, GET, HEAD, DELETE, PROPFIND, PUT, MKCOL, MOVE"}, b""
        raise _Reply(501, f"{method} is not supported by this test server here", "Sabre\\DAV\\Exception\\NotImplemented")

    def _mtime(self) -> int:
        value = self.headers.get("X-OC-MTime", "")
        if not value.lstrip("-").isdigit():
            raise _Reply(400, "X-OC-MTime header must be an integer (unix timestamp).", "Sabre\\DAV\\Exception\\BadRequest")
        return int(value)

    def _check_quota(self, user: str, more: int, sub: str) -> None:
        quota = self.dav.quotas.get(user)
        if quota is None:
            return
        free = quota - self.dav.used[user]
        if more > free:
            raise _Reply(507, f"Insufficient space in /{sub}, {more} required, {max(free, 0)} available",
                         "Sabre\\DAV\\Exception\\InsufficientStorage")

    def _propfind(self, user: str, sub: str, disk: Path):
        length = self._length()
        body = self.rfile.read(length) if length else b""
        self._body_read = True
        depth = self.headers.get("Depth", "1")
        if depth not in ("0", "1"):
            raise _Reply(403, "Depth infinity is not allowed", "Sabre\\DAV\\Exception\\Forbidden")
        if not disk.exists():
            raise _Reply(404, f"File with name {sub} could not be located", "Sabre\\DAV\\Exception\\NotFound")
        wanted = _requested_props(body)
        base = f"/remote.php/dav/files/{user}"
        nodes = [(sub, disk)]
        if depth == "1" and disk.is_dir():
            nodes += [(f"{sub}/{p.name}".strip("/"), p) for p in sorted(disk.iterdir())]
        parts = []
        for rel, node in nodes:
            href = quote(f"{base}/{rel}".rstrip("/") + ("/" if node.is_dir() else ""))
            parts.append(self._response(href, user, rel, node, wanted))
        xml = ('<?xml version="1.0"?>\n<d:multistatus xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns" '
               'xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns">' + "".join(parts)
               + "</d:multistatus>").encode()
        return 207, {"Content-Type": "application/xml; charset=utf-8"}, xml

    def _response(self, href: str, user: str, rel: str, node: Path, wanted: list[str] | None) -> str:
        dav = self.dav
        st = node.stat()
        props: dict[str, str | None] = {
            "d:resourcetype": "<d:collection/>" if node.is_dir() else "",
            "d:getlastmodified": formatdate(st.st_mtime, usegmt=True),
            "d:getetag": _x(_etag(node)),
            "oc:fileid": str(st.st_ino),
        }
        if node.is_dir():
            quota = dav.quotas.get(user)
            used = dav.used[user] if not rel else sum(p.stat().st_size for p in node.rglob("*") if p.is_file())
            props["d:quota-used-bytes"] = str(used)
            props["d:quota-available-bytes"] = str(max(quota - dav.used[user], 0)) if quota is not None else "-3"
            props["oc:checksums"] = None
            props["d:getcontentlength"] = None
        else:
            props["d:getcontentlength"] = str(st.st_size)
            checksum = dav.checksums.get(f"{user}/{rel}")
            props["oc:checksums"] = ("".join(f"<oc:checksum>{_x(c)}</oc:checksum>" for c in checksum.split())
                                     if checksum else None)
            props["d:quota-used-bytes"] = props["d:quota-available-bytes"] = None
        names = wanted if wanted is not None else [k for k, v in props.items() if v is not None]
        found = [f"<{n}>{props[n]}</{n}>" for n in names if props.get(n) is not None]
        missing = [f"<{n}/>" for n in names if props.get(n) is None]
        out = f"<d:response><d:href>{_x(href)}</d:href>"
        if found:
            out += f"<d:propstat><d:prop>{''.join(found)}</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>"
        if missing:
            out += (f"<d:propstat><d:prop>{''.join(missing)}</d:prop>"
                    "<d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>")
        return out + "</d:response>"

    # ---------------------------------------------------------------------- chunked upload v2
    def _destination(self, user: str) -> str:
        dest = self.headers.get("Destination")
        if not dest:
            raise _Reply(400, "Skipping chunked file writing as the destination header was not passed",
                         "Sabre\\DAV\\Exception\\BadRequest")
        path = unquote(urlsplit(dest).path)
        prefix = f"/remote.php/dav/files/{user}/"
        if not path.startswith(prefix):
            raise _Reply(400, f"the destination {path} is not in {user}'s files", "Sabre\\DAV\\Exception\\BadRequest")
        return path[len(prefix):].strip("/")

    def _uploads(self, user: str, sub: str):
        dav = self.dav
        method = self.command
        folder, _, name = sub.partition("/")
        disk = dav.root / "uploads" / user / folder
        if method == "PROPFIND" and not folder:
            self._drain()
            href = quote(f"/remote.php/dav/uploads/{user}/")
            return 207, {"Content-Type": "application/xml; charset=utf-8"}, (
                '<?xml version="1.0"?>\n<d:multistatus xmlns:d="DAV:"><d:response>'
                f"<d:href>{href}</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype>"
                "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>").encode()
        if method == "MKCOL" and folder and not name:
            self._drain()
            dest = self._destination(user)
            if disk.exists():
                raise _Reply(405, "The resource you tried to create already exists",
                             "Sabre\\DAV\\Exception\\MethodNotAllowed")
            disk.mkdir()
            with dav.lock:
                dav.uploads[f"{user}/{folder}"] = dest
            return 201, {}, b""
        if method == "DELETE" and folder and not name:
            self._drain()
            if not disk.is_dir():
                raise _Reply(404, f"File with name {folder} could not be located", "Sabre\\DAV\\Exception\\NotFound")
            shutil.rmtree(disk)
            with dav.lock:
                dav.uploads.pop(f"{user}/{folder}", None)
            return 204, {}, b""
        if not disk.is_dir():
            raise _Reply(404, f"Upload folder {folder} could not be located", "Sabre\\DAV\\Exception\\NotFound")
        dest = self._destination(user)
        if dest != dav.uploads.get(f"{user}/{folder}"):
            raise _Reply(400, "the Destination differs from the one the upload was started with",
                         "Sabre\\DAV\\Exception\\BadRequest")
        if method == "PUT" and name:
            if not name.isdigit() or not 1 <= int(name) <= 10000:
                raise _Reply(400, "Invalid chunk name, must be numeric between 1 and 10000",
                             "Sabre\\DAV\\Exception\\BadRequest")
            total = self.headers.get("OC-Total-Length")
            if total is not None:
                final = dav.root / "files" / user / dest
                self._check_quota(user, int(total) - (final.stat().st_size if final.is_file() else 0), dest)
            self._receive(disk / name)
            return 201, {}, b""
        if method == "GET":
            raise _Reply(405, "Reading intermediate uploads is not allowed", "Sabre\\DAV\\Exception\\MethodNotAllowed")
        if method == "MOVE" and name == ".file":
            self._drain()
            return self._assemble(user, folder, disk, dest)
        raise _Reply(501, f"{method} is not supported by this test server here", "Sabre\\DAV\\Exception\\NotImplemented")

    def _assemble(self, user: str, folder: str, disk: Path, dest: str):
        dav = self.dav
        self._validate(dest)
        final = dav.root / "files" / user / dest
        if not final.parent.is_dir():
            raise _Reply(409, "Parent node does not exist", "Sabre\\DAV\\Exception\\Conflict")
        chunks = sorted((p for p in disk.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        sizes = [p.stat().st_size for p in chunks]
        small = [p.name for p, s in zip(chunks[:-1], sizes[:-1]) if s < MIN_CHUNK]
        if small:
            raise _Reply(400, f"chunks {', '.join(small)} are smaller than 5 MiB (only the last may be)",
                         "Sabre\\DAV\\Exception\\BadRequest")
        total = sum(sizes)
        expected = self.headers.get("OC-Total-Length")
        if expected is not None and int(expected) != total:
            raise _Reply(400, f"Chunks on server do not sum up to {expected} but to {total} bytes",
                         "Sabre\\DAV\\Exception\\BadRequest")
        old = final.stat().st_size if final.is_file() else 0
        self._check_quota(user, total - old, dest)
        tmp = dav.root / "tmp" / uuid.uuid4().hex
        zero = bytes(BLOCK) if dav.sparse else b""
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    while block := f.read(BLOCK):
                        if dav.sparse and block == zero[:len(block)]:
                            out.seek(len(block), os.SEEK_CUR)
                        else:
                            out.write(block)
            out.truncate()
        headers = {}
        with dav.lock:
            existed = final.is_file()
            os.replace(tmp, final)
            dav.used[user] += total - old
            dav.checksums.pop(f"{user}/{dest}", None)      # chunking v2 stores no checksum
            dav.uploads.pop(f"{user}/{folder}", None)
        if self.headers.get("X-OC-MTime"):
            mtime = self._mtime()
            os.utime(final, (mtime, mtime))
            headers["X-OC-MTime"] = "accepted"
        shutil.rmtree(disk, ignore_errors=True)
        self._wrote = f"{user}/{dest}"
        return (204 if existed else 201), headers, b""


def _x(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _etag(path: Path) -> str:
    st = path.stat()
    return '"' + hashlib.md5(f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}".encode()).hexdigest() + '"'


def _requested_props(body: bytes) -> list[str] | None:
    """The properties a PROPFIND asks for as `d:name` / `oc:name`, or None for all of them."""
    if not body.strip():
        return None
    prefixes = {"DAV:": "d", "http://owncloud.org/ns": "oc", "http://nextcloud.org/ns": "nc"}
    try:
        tree = ET.fromstring(body)
    except ET.ParseError:
        raise _Reply(400, "the PROPFIND body is not XML", "Sabre\\DAV\\Exception\\BadRequest") from None
    prop = tree.find("{DAV:}prop")
    if prop is None:
        return None
    names = []
    for child in prop:
        ns, _, local = child.tag[1:].partition("}")
        names.append(f"{prefixes.get(ns, 'x')}:{local}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD (repeatable)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sparse", action="store_true", help="store runs of zero bytes as holes")
    args = parser.parse_args(argv)
    users = dict(u.split(":", 1) for u in args.user)
    server = NextcloudDav(args.root, users, sparse=args.sparse).start(args.port)
    print(f"PORT {server.port}", flush=True)
    import signal
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
