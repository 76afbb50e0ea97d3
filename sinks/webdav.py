"""Nextcloud and OX Drive as targets, over WebDAV.

Both are WebDAV servers: the plain protocol (PROPFIND, MKCOL, PUT, GET, DELETE) moves a file to
OX Drive (`/servlet/webdav.infostore`). Nextcloud (`/remote.php/dav/files/<account>/`) adds
abilities this module uses when the target is a Nextcloud:

- **chunked upload v2** for files at or above `chunk_threshold`: MKCOL
  `/remote.php/dav/uploads/<account>/<id>`, PUT numbered chunks, MOVE `.file` to the destination,
  every request with `Destination` and `OC-Total-Length`. Nextcloud 27 checks the quota only when
  the MOVE assembles the file (measured: the chunks of a file that cannot fit are all accepted),
  so the sink first asks the folder's `quota-available-bytes` and does not send a large file
  that cannot fit;
- **`X-OC-MTime`**, so that a file keeps its modification time;
- **`OC-Checksum: SHA256:<hex>`** on upload, read back as `oc:checksums` by `find`, so that a rerun
  recognises a file it already sent without downloading it (chunked uploads carry it on the
  MOVE that assembles them; Nextcloud 27 keeps it for both). Nextcloud stores this checksum
  without checking it, so `verify` always downloads the file and hashes what arrived.

Every body is streamed from the local file in blocks: a 5 GB file moves with bounded memory.

Names Nextcloud refuses are mapped by `sinks.names` (reversibly, `:` → `%3A`); the reference a
put returns (the ledger's `target_ref`) shows the mapped name. A reference is the file's WebDAV
address with the account in the user part and the path as the Files app shows it, not
URL-encoded: `https://svc@cloud.example/remote.php/dav/files/svc/t-anna/Ablage/Plan%3A 2026.odt`.

Failures are decided here: no answer in time, connection failures, 429, 500, 502, 503 and 504 are
`TransientError` (with the server's Retry-After); 401 is `FatalError` (the credentials stopped
working mid-run); 507 is `QuotaExceeded`, which stops the user whose account is full; every other
refusal is an `ItemError` for that file. No message carries a password.

**423 Locked** on the upload of a file means a lock at the target. Nextcloud keeps its file locks
in its database (or memcache) until the request that took them ends; a request killed while it
wrote (a crashed upload, a PHP worker ended by a time limit) leaves its lock behind until
`filelocking.ttl` (an hour by default) has passed and a background job clears it. Each further
request that bumps into it renews that hour. So `put` waits a little (`LOCK_WAITS`, for a lock a
live upload holds for a moment) and then gives up on the file with `Locked` (error class
`locked`), whose message says from when a rerun will succeed, rather than retrying for an hour.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from core.plugins import Account, PerProcess
from sinks.webdav_config import NextcloudTarget, OXDriveTarget
from core.errors import ConfigError, FatalError, ItemError, TransientError, UserStopped
from clients.http import retry_after
from core.retry import governed, with_retries
from core.messages import clip
from sinks.http import TRANSIENT_STATUS as _TRANSIENT_STATUS, HttpTarget, Unreachable as _Unreachable
from sinks.names import safe_path

__all__ = ["WebDav", "Nextcloud", "OXDrive", "QuotaExceeded", "Locked", "LOCK_TTL", "sink_for"]

log = logging.getLogger("umstieg.sinks.webdav")

#: Bytes read from the local file and written to the socket at a time.
BLOCK = 1 << 20
#: The longest wait a server's Retry-After may impose on one attempt; longer means "not today":
#: the item fails as `transient` after the retries and a later rerun picks it up.
MAX_RETRY_AFTER = 300.0
#: Assembling a chunked upload takes the server time in proportion to the size: MOVE waits
#: `timeout` plus this long per byte (20 MiB/s).
ASSEMBLY_SECONDS_PER_BYTE = 1 / (20 * 1024 * 1024)
#: Folder listings `find` keeps per process (the most recently used).
LISTINGS_KEPT = 512
#: How long `check` waits, at most, each time a busy server (429, 503, …) asks it to come back.
CHECK_WAITS = (1.0, 3.0, 10.0)
#: Waits before asking again while the target answers 423 Locked to an upload (about a minute in
#: all: a lock that outlives them is a stale one, which holds for `LOCK_TTL`).
LOCK_WAITS = (2.0, 8.0, 20.0, 30.0)
#: How long Nextcloud keeps a lock nobody releases (its `filelocking.ttl`, one hour by default),
#: counted from the last request that found it.
LOCK_TTL = 3600.0
#: How often Nextcloud's background job (CleanupFileLocks) removes expired locks.
LOCK_CLEANUP = 300.0

_DAV = "{DAV:}"
_OC = "{http://owncloud.org/ns}"
_SABRE = "{http://sabredav.org/ns}"


class QuotaExceeded(UserStopped):
    """The target refused to store more for one account (HTTP 507 Insufficient Storage).

    The batches of the user whose account is full stop, with every item left in the last state it
    really reached; other users go on. `owner` is the target login, `account` the account that is
    full (a service account's quota stops every user it writes for, one after the other).
    """

    def __init__(self, message: str, owner: str, account: str) -> None:
        super().__init__(message, owner)
        self.account = account


class Locked(ItemError):
    """The file is locked at the target and stayed locked through `LOCK_WAITS` (HTTP 423).

    Error class `locked`: `umstieg rerun --error-class locked` takes these items up once the lock
    has expired; `retry_at` (seconds since the epoch) is when that will be at the latest.
    """

    reason = "locked"

    def __init__(self, message: str, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class _LockedNow(TransientError):
    """A 423 Locked answer (the flows retry it as any transient failure, unless `put` decides)."""


class _Missing(ItemError):
    """The server has no such resource, or no folder to put it in (HTTP 404 / 409)."""


@dataclass(frozen=True)
class _Account:
    """Who writes one target user's files, and where: `<dav root of user>/<base>/<path>`."""

    owner: str          # target login
    user: str           # the account that logs in (the service account, or the owner)
    base: str           # folder below the account's root (mapped), "" for the root itself


def _server_message(resp: httpx.Response) -> str:
    """The reason a Sabre/Nextcloud error body gives (`<s:message>`), short; else ''."""
    try:
        if "xml" not in resp.headers.get("Content-Type", "") or len(resp.content) > 65536:
            return ""
        node = ET.fromstring(resp.content).find(f"{_SABRE}message")
    except (ET.ParseError, httpx.ResponseNotRead):
        return ""
    return clip(node.text, 300) if node is not None else ""


def _blocks(src: Path, offset: int, length: int, digest=None) -> Iterator[bytes]:
    """`length` bytes of `src` from `offset`, a block at a time (fed to `digest` on the way)."""
    try:
        with open(src, "rb") as f:
            f.seek(offset)
            left = length
            while left > 0:
                block = f.read(min(BLOCK, left))
                if not block:
                    raise ItemError(f"{src.name} became shorter while it was being sent")
                if digest is not None:
                    digest.update(block)
                left -= len(block)
                yield block
    except OSError as exc:
        raise ItemError(f"cannot read {src}: {exc.strerror or exc}") from exc


class _NoDigest:
    """Stands in for a hash object when the digest is known already."""

    def update(self, data: bytes) -> None:
        pass

    def copy(self) -> "_NoDigest":
        return self


def _sha256_of(src: Path) -> str:
    digest = hashlib.sha256()
    for block in _blocks(src, 0, src.stat().st_size):
        digest.update(block)
    return digest.hexdigest()


class WebDav(HttpTarget):
    """A plain WebDAV target (RFC 4918): PROPFIND, MKCOL, PUT, GET, DELETE. OX Drive is one."""

    #: How messages name this kind of server.
    product = "the WebDAV server"

    def __init__(self, config: NextcloudTarget | OXDriveTarget, *, transport: httpx.BaseTransport | None = None,
                 sleep=time.sleep) -> None:
        super().__init__(config, transport=transport, sleep=sleep)
        self._mkcol_lock = threading.Lock()
        self._folders: set[tuple[str, str]] = set()   # (account, dav path) known to exist
        # (account, folder dav path) -> {name: (is folder, stored sha256 or None)}: `find` lists a
        # folder once (PROPFIND Depth 1) instead of asking once per file; puts keep it current
        self._listings: OrderedDict[tuple[str, str], dict[str, tuple[bool, str | None]]] = OrderedDict()

    # ----------------------------------------------------------------------- addressing
    def _root(self, user: str) -> str:
        """The unencoded server path of an account's root folder."""
        return self._prefix

    def _account(self, owner: str) -> _Account:
        cfg = self.config
        user = self._login(owner)
        folder = cfg.folder if cfg.folder is not None else ("" if owner in cfg.app_passwords else "{user}")
        base = safe_path(folder.replace("{user}", owner)) if folder else ""
        return _Account(owner=owner, user=user, base=base)

    def _dav_path(self, acct: _Account, rel: str) -> str:
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or any(p in ("..", ".") for p in parts):
            raise ItemError(f"refusing a target path outside the user's folder: {rel!r}")
        mapped = safe_path(rel)
        return "/".join(p for p in (self._root(acct.user), acct.base, mapped) if p)

    def _url(self, dav_path: str) -> str:
        return self._origin + quote(dav_path, safe="/")

    def _ref(self, acct_user: str, dav_path: str) -> str:
        scheme, _, netloc = self._origin.partition("://")
        return f"{scheme}://{acct_user}@{netloc}{dav_path}"

    def _parse_ref(self, ref: str) -> tuple[str, str]:
        """(account, dav path) of a reference made by `_ref`."""
        return self._split_ref(ref)

    # ----------------------------------------------------------------------- requests
    def _request(self, method: str, user: str, dav_path: str, *, owner: str | None = None,
                 ok: tuple[int, ...] = (200, 201, 204, 207), headers: dict | None = None, content=None,
                 timeout: float | None = None) -> httpx.Response:
        """One request as `user`; a failure becomes the taxonomy's class (see the module doc)."""
        url = self._url(dav_path)
        what = f"{method} {dav_path}"
        extra: dict[str, Any] = {"timeout": httpx.Timeout(timeout, connect=min(timeout, 15.0))} if timeout else {}
        with self._transient(what):
            resp = self._client.request(method, url, headers=headers, content=content, auth=self._auth(user),
                                        **extra)
        if resp.status_code not in ok:
            self._fail(resp, what, user, owner or user)
        return resp

    def _fail(self, resp: httpx.Response, what: str, user: str, owner: str) -> None:
        status = resp.status_code
        reason = f"HTTP {status} {resp.reason_phrase}"
        message = _server_message(resp)
        detail = f"{reason}: {message}" if message else reason
        if status == 507:
            raise self._quota_exceeded(owner, user, detail)
        if status == 423:
            raise _LockedNow(f"{what}: {detail}", retry_after=retry_after(resp, MAX_RETRY_AFTER))
        if status in _TRANSIENT_STATUS:
            raise governed(TransientError(f"{what}: {detail}", retry_after=retry_after(resp, MAX_RETRY_AFTER)),
                           self.retry)
        if status == 401:
            raise FatalError(f"{self.product} refused the credentials of account {user!r} ({reason}): "
                             "check its (app) password")
        if status in (404, 409):
            raise _Missing(f"{what}: {detail}")
        raise ItemError(f"{what}: {detail}")

    def _quota_exceeded(self, owner: str, user: str, detail: str) -> QuotaExceeded:
        return QuotaExceeded(
            f"{self.product} has no room left for {owner}'s files ({detail}); raise the quota of "
            f"account {user!r} (or free space on the server), then run the department again: "
            "what arrived stays and nothing is sent twice", owner=owner, account=user)

    def _propfind(self, user: str, dav_path: str, props: tuple[str, ...]) -> ET.Element | None:
        """The `<prop>` of one resource (Depth: 0), or None when it does not exist."""
        body = ('<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>'
                + "".join(f"<{p}/>" for p in props) + "</d:prop></d:propfind>")
        resp = self._request("PROPFIND", user, dav_path, ok=(207, 404),
                             headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
                             content=body.encode())
        if resp.status_code == 404:
            return None
        try:
            tree = ET.fromstring(resp.content)
        except ET.ParseError as exc:
            raise TransientError(f"PROPFIND {dav_path}: unreadable answer ({exc})") from None
        found = ET.Element("prop")
        for propstat in tree.iter(f"{_DAV}propstat"):
            status = propstat.findtext(f"{_DAV}status") or ""
            prop = propstat.find(f"{_DAV}prop")
            if " 200 " in f"{status} " and prop is not None:
                found.extend(list(prop))
        return found

    # ----------------------------------------------------------------------- folders
    def _ensure_folders(self, user: str, dav_path: str, *, owner: str) -> None:
        """Create every missing folder above `dav_path` (once per process: they are remembered).

        One thread at a time makes folders: two MKCOLs of one folder at once make some servers
        answer 500 (wsgidav) or 423 (Nextcloud's locks). Threads whose folders exist never wait.
        """
        root = self._root(user)
        parts = dav_path[len(root):].strip("/").split("/")[:-1]
        wanted = [f"{root}/{'/'.join(parts[:k])}" for k in range(1, len(parts) + 1)]
        with self._lock:
            if all((user, f) in self._folders for f in wanted):
                return
        with self._mkcol_lock:
            for current in wanted:
                with self._lock:
                    if (user, current) in self._folders:
                        continue
                resp = self._request("MKCOL", user, current, owner=owner, ok=(201, 405))
                if resp.status_code == 405:           # already there (or a file in the way)
                    prop = self._propfind(user, current, ("d:resourcetype",))
                    if prop is None or prop.find(f"{_DAV}resourcetype/{_DAV}collection") is None:
                        raise ItemError(f"cannot create folder {current}: something else is in the way")
                with self._lock:
                    self._folders.add((user, current))

    def _forget_folders(self, user: str) -> None:
        with self._lock:
            self._folders = {f for f in self._folders if f[0] != user}
            for key in [k for k in self._listings if k[0] == user]:
                del self._listings[key]

    # ----------------------------------------------------------------------- the Sink shape
    #: What the check's PROPFIND on a user's folder asks besides the status (empty: the server's allprop).
    _check_props: tuple[str, ...] = ()

    def check(self, owners: list[str]) -> list[str]:
        """Reachability and credentials, before anything moves: a PROPFIND on every user's folder
        (or, while it does not exist yet, on the nearest folder above it) with that user's account.
        Inside `probing()` (the flows' check before a run), the PROPFIND `user_problems` sent for
        an account is not sent again."""
        problems: list[str] = []
        tried: set[tuple[str, str]] = set()
        with self.probing():
            for owner in owners:
                try:
                    acct = self._account(owner)
                    if (acct.user, acct.base) in tried:
                        continue
                    tried.add((acct.user, acct.base))
                    problems += [p for p in (f"target {self.config.root}: {p}" for p in self._check_account(acct))
                                 if p not in problems]
                except (ConfigError, TransientError, FatalError, ItemError) as exc:
                    problems.append(f"target {self.config.root}: {exc}")
                except _Unreachable as exc:               # the server itself is out of reach: once is enough
                    return problems + [f"target {self.config.root}: {exc}"]
        return problems

    def user_problems(self, owners: list[str]) -> dict[str, str]:
        """Target users whose own account cannot take files now, with why (never a secret): a login
        the server refuses (no such account, or a wrong app password: WebDAV answers 401 to both),
        a quota used up, no credentials configured. Those users wait; the others go on. Only
        accounts that log in as themselves are asked: a service account's problems and a server
        out of reach concern every user, and `check` reports them (the department stops). One
        PROPFIND per account answers both this and `check` (see `probing`)."""
        problems: dict[str, str] = {}
        with self.probing():
            for owner in owners:
                try:
                    acct = self._account(owner)
                    if acct.user != owner:
                        continue
                    self._password(acct.user)
                    resp, path = self._probe_folder(acct)
                    if resp.status_code == 401:
                        found = [f"{self.product} refused the login of account {owner!r} (HTTP 401): the account "
                                 "does not exist at the target, or its app password is wrong; create the account "
                                 "or correct its app password"]
                    else:
                        found = self._account_problems(acct, resp, path)
                except _Unreachable:
                    return {}
                except (ConfigError, TransientError, FatalError, ItemError) as exc:
                    found = [str(exc)]
                if found:
                    problems[owner] = "; ".join(found)
        return problems

    def _probe_folder(self, acct: _Account) -> tuple[httpx.Response, str]:
        """(the answer, the folder asked) of the check's PROPFIND (Depth 0) on the user's folder, or,
        while it does not exist yet, the nearest folder above it (put will make it); a server busy
        for a moment is asked again a few times (`CHECK_WAITS`)."""
        root = self._root(acct.user)
        path = "/".join(p for p in (root, acct.base) if p)
        headers = {"Depth": "0"}
        body = None
        if self._check_props:
            headers["Content-Type"] = "application/xml; charset=utf-8"
            body = ('<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop>'
                    + "".join(f"<{p}/>" for p in self._check_props) + "</d:prop></d:propfind>").encode()
        waits = list(CHECK_WAITS)
        while True:
            resp = self._probe("PROPFIND", acct.user, self._url(path + "/"), headers=headers, content=body)
            if resp.status_code == 404 and path != root:
                path = path.rsplit("/", 1)[0]         # not made yet: put will make it
                continue
            if resp.status_code in _TRANSIENT_STATUS and waits:
                asked, wait = retry_after(resp, MAX_RETRY_AFTER), waits.pop(0)
                self._sleep(min(asked if asked is not None else wait, wait))
                continue                              # busy for a moment is not a reason to stop
            return resp, path

    def _check_account(self, acct: _Account) -> list[str]:
        self._password(acct.user)                      # a missing secret is a ConfigError before any request
        resp, path = self._probe_folder(acct)
        return self._account_problems(acct, resp, path)

    def _account_problems(self, acct: _Account, resp: httpx.Response, path: str) -> list[str]:
        """What the check's answer on `path` says about the account's use as a target."""
        if resp.status_code == 401:
            return [f"account {acct.user!r} was refused (HTTP 401): check its (app) password"]
        if 300 <= resp.status_code < 400:
            return [f"the server redirects to {resp.headers.get('Location')}: set url to the real address"]
        if resp.status_code != 207:
            return [f"account {acct.user!r} cannot read {path}/ (HTTP {resp.status_code} {resp.reason_phrase})"]
        return self._check_more(acct, path, resp)

    def _patiently(self, step, *args):
        """`step(*args)` for `check`, asked again a few times while the server says "not now"."""
        for wait in (*CHECK_WAITS, None):
            try:
                return step(*args)
            except TransientError as exc:
                if wait is None:
                    raise
                self._sleep(min(exc.retry_after if exc.retry_after is not None else wait, wait))

    def _check_more(self, acct: _Account, folder: str, answer: httpx.Response) -> list[str]:
        """What a specific server can check besides the user's folder (`folder`, which exists;
        `answer` is the check's PROPFIND on it, with `_check_props`)."""
        return []

    def digest(self, src: Path) -> str:
        return _sha256_of(src)

    def find(self, owner: str, rel: str, digest: str, meta: dict | None = None) -> str | None:
        """The reference of `owner`/`rel` if it already holds exactly these bytes (sha256).

        The file's folder is listed once per process (one PROPFIND, Depth 1) and remembered, so a
        folder of a thousand files costs one request, not a thousand. This process's own puts keep
        the listing current; what another process writes meanwhile is not seen, which only means
        an identical file is sent once more, never that one is missing: `verify` downloads it."""
        acct = self._account(owner)
        path = self._dav_path(acct, rel)
        folder, _, name = path.rpartition("/")
        listing = self._listing(acct.user, folder)
        is_dir, stored = listing.get(name, (True, None)) if name in listing else (None, None)
        if is_dir is None or is_dir:
            return None
        if stored is not None:
            same = stored == digest.lower()
        else:
            same = self._download_sha256(acct.user, path, owner) == digest.lower()
        if same:
            return self._ref(acct.user, path)
        return None

    def _listing(self, user: str, folder: str) -> dict[str, tuple[bool, str | None]]:
        """What `folder` holds, by name (empty when the folder does not exist), remembered."""
        key = (user, folder)
        with self._lock:
            if key in self._listings:
                self._listings.move_to_end(key)
                return self._listings[key]
        body = ('<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>'
                + "".join(f"<{p}/>" for p in self._find_props()) + "</d:prop></d:propfind>")
        resp = self._request("PROPFIND", user, folder, ok=(207, 404),
                             headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
                             content=body.encode())
        listing: dict[str, tuple[bool, str | None]] = {}
        if resp.status_code == 207:
            try:
                tree = ET.fromstring(resp.content)
            except ET.ParseError as exc:
                raise TransientError(f"PROPFIND {folder}: unreadable answer ({exc})") from None
            for response in tree.iter(f"{_DAV}response"):
                href = unquote(urlsplit(response.findtext(f"{_DAV}href") or "").path).rstrip("/")
                if href == folder.rstrip("/") or not href:
                    continue
                prop = ET.Element("prop")
                for propstat in response.iter(f"{_DAV}propstat"):
                    if " 200 " in f"{propstat.findtext(f'{_DAV}status') or ''} " and \
                            (found := propstat.find(f"{_DAV}prop")) is not None:
                        prop.extend(list(found))
                is_dir = prop.find(f"{_DAV}resourcetype/{_DAV}collection") is not None
                listing[href.rsplit("/", 1)[-1]] = (is_dir, None if is_dir else self._stored_sha256(prop))
        with self._lock:
            self._listings[key] = listing
            while len(self._listings) > LISTINGS_KEPT:
                self._listings.popitem(last=False)
        return listing

    def _note_put(self, user: str, dav_path: str, digest: str | None) -> None:
        """Keep a remembered listing true to what this process just wrote."""
        folder, _, name = dav_path.rpartition("/")
        with self._lock:
            listing = self._listings.get((user, folder))
            if listing is not None:
                listing[name] = (False, digest)


    def _find_props(self) -> tuple[str, ...]:
        return ("d:resourcetype", "d:getcontentlength")

    def _stored_sha256(self, prop: ET.Element) -> str | None:
        """A sha256 the server keeps for the file, if it keeps one."""
        return None

    def _download_sha256(self, user: str, dav_path: str, owner: str) -> str | None:
        """The sha256 of what the server holds (streamed), or None if it holds nothing there."""
        digest = hashlib.sha256()
        what = f"GET {dav_path}"
        with self._transient(what):
            with self._client.stream("GET", self._url(dav_path), auth=self._auth(user)) as resp:
                if resp.status_code == 404:
                    return None
                if resp.status_code != 200:
                    resp.read()
                    self._fail(resp, what, user, owner)
                for block in resp.iter_bytes(BLOCK):
                    digest.update(block)
        return digest.hexdigest()

    def put(self, owner: str, rel: str, src: Path, mtime: float | None = None, meta: dict | None = None,
            digest: str | None = None) -> str:
        """Send the local file `src` as `owner`/`rel` (name mapped if need be); returns the reference.

        `digest`, the sha256 of `src` (the one `find` was asked with), is the checksum a server
        that keeps one (Nextcloud) stores: the load step passes it, so the file is not hashed
        twice; without it, the file is hashed here when the server wants a checksum. A wrong
        digest cannot pass unnoticed: it only becomes the file's stored checksum, and `verify`
        downloads and hashes the file itself.
        """
        acct = self._account(owner)
        path = self._dav_path(acct, rel)
        digest = digest.lower() if digest else None
        try:
            size = src.stat().st_size
        except OSError as exc:
            raise ItemError(f"cannot read {src}: {exc.strerror or exc}") from exc
        try:
            try:
                self._ensure_folders(acct.user, path, owner=owner)
                sent = self._upload(acct, path, src, size, mtime, digest)
            except _Missing:
                # a folder we remembered is gone (deleted at the target meanwhile): make it again, once
                self._forget_folders(acct.user)
                self._ensure_folders(acct.user, path, owner=owner)
                sent = self._upload(acct, path, src, size, mtime, digest)
        except BaseException:
            # the file may have arrived even so (an answer lost after the server did the work): the
            # retry's `find` must ask the server, not the remembered listing
            with self._lock:
                self._listings.pop((acct.user, path.rpartition("/")[0]), None)
            raise
        self._note_put(acct.user, path, sent)
        return self._ref(acct.user, path)

    def _upload(self, acct: _Account, dav_path: str, src: Path, size: int, mtime: float | None,
                digest: str | None) -> str | None:
        """Send the file; the sha256 the server now keeps for it (None: it keeps none)."""
        headers = {"Content-Length": str(size), **self._put_headers(src, mtime, digest)}
        self._while_locked(dav_path, lambda: self._request("PUT", acct.user, dav_path, owner=acct.owner,
                                                           headers=headers, content=_blocks(src, 0, size)))
        return self._kept_checksum(headers)

    def _kept_checksum(self, headers: dict[str, str]) -> str | None:
        """The sha256 the server keeps from an upload's headers (a plain WebDAV server: none)."""
        return None

    def _while_locked(self, dav_path: str, step):
        """`step()`, asked again after each of LOCK_WAITS while the target answers 423 Locked; then
        `Locked`, saying when a rerun will succeed (see the module doc)."""
        for wait in (*LOCK_WAITS, None):
            try:
                return step()
            except _LockedNow as exc:
                if wait is None:
                    # the lock expires LOCK_TTL after this attempt; a background job that runs every
                    # 5 minutes (with the server's cron) then removes it
                    retry_at = time.time() + LOCK_TTL + LOCK_CLEANUP
                    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(retry_at))
                    raise Locked(
                        f"locked at the target: {exc} (a lock an earlier upload left, which {self.product} "
                        "keeps for its filelocking.ttl, 1 hour by default, from this last attempt); "
                        f"`umstieg rerun --error-class locked` after {when} will succeed", retry_at=retry_at) from None
                log.info("%s is locked at the target; trying again in %.0f s", dav_path, wait)
                self._sleep(wait)

    def _put_headers(self, src: Path, mtime: float | None, digest: str | None) -> dict[str, str]:
        return {}

    def verify(self, ref: str, digest: str) -> str | None:
        """None when the target holds exactly these bytes (downloaded and hashed), else what is wrong."""
        user, path = self._parse_ref(ref)
        actual = self._download_sha256(user, path, owner=user)
        if actual is None:
            return f"{ref} is missing at the target"
        return None if actual == digest.lower() else f"{ref} differs at the target (sha256 {actual[:12]}…)"

    def remove(self, ref: str) -> None:
        """Delete an item at the target (only for delete_at_target); already gone is fine."""
        user, path = self._parse_ref(ref)
        self._request("DELETE", user, path, ok=(200, 204, 404))
        folder, _, name = path.rpartition("/")
        with self._lock:
            self._listings.get((user, folder), {}).pop(name, None)


    def _again(self, what: str, step):
        """`step()` (one chunk of a chunked upload, or its start), asked again here under the target's
        retry policy while it fails transiently: restarting a large file from its first byte costs
        more than repeating one chunk. The error that ends it is spent: the flows do not repeat the
        file on top (core/retry.py), so one chunk is sent at most `attempts` times."""
        log.debug("%s under the retry policy", what)
        return with_retries(step, policy=self.retry, sleep=self._sleep)


class OXDrive(WebDav):
    """OX Drive (Open-Xchange) over its WebDAV interface: plain PUTs, no chunking, no checksums.

    OX Drive keeps no client-supplied modification time: files show the time they arrived.
    """

    product = "OX Drive"


class Nextcloud(WebDav):
    """Nextcloud files: WebDAV plus chunked upload v2, X-OC-MTime and OC-Checksum."""

    product = "Nextcloud"
    config: NextcloudTarget

    def _root(self, user: str) -> str:
        return f"{self._prefix}/remote.php/dav/files/{user}"

    def _uploads(self, user: str) -> str:
        return f"{self._prefix}/remote.php/dav/uploads/{user}"

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """The identity check (core.plugins.ChecksUsers): each login's OCS user record, with the
        account's `email` and `displayname`. Asked as the user with their own app password (a
        user may always read themselves), or as the service account: files then land in its own
        tree, the target login need not be an account, and Nextcloud answers 404 for accounts a
        non-admin may not see, so only an answer with data counts. A server out of reach, a
        secret not set or a service account refused concern everyone: nobody is blamed."""
        found = {name: Account(None) for name in names}
        service = self.config.username
        for login in names:
            user = service if service is not None else login if login in self.config.app_passwords else None
            if user is None:
                continue                           # no credentials: user_problems makes them wait
            try:
                with self._transient("GET OCS user"):
                    resp = self._client.get(f"{self._origin}{self._prefix}/ocs/v2.php/cloud/users/"
                                            f"{quote(login, safe='')}", params={"format": "json"},
                                            auth=self._auth(user),
                                            headers={"OCS-APIRequest": "true", "Accept": "application/json"})
            except (ConfigError, TransientError):
                return {name: Account(None) for name in names}
            if resp.status_code == 401:
                if service is not None:
                    return {name: Account(None) for name in names}
                found[login] = Account(False, why="the target refused the login (no such account, or a wrong "
                                                  "password)")
            elif resp.status_code == 404 and service is None:
                found[login] = Account(False, why="no such account at the target")
            elif resp.status_code < 400:
                try:
                    data = resp.json()["ocs"]["data"]
                    found[login] = Account(True, email=data.get("email") or None,
                                           display_name=data.get("displayname") or None)
                except (ValueError, KeyError, TypeError, AttributeError):
                    pass                           # not Nextcloud's answer (a proxy's page): check says so
        return found

    #: the check's PROPFIND asks the room left too (one request per account, not two)
    _check_props = ("d:resourcetype", "d:quota-available-bytes")

    def _check_more(self, acct: _Account, folder: str, answer: httpx.Response) -> list[str]:
        problems = []
        text = None
        try:
            for propstat in ET.fromstring(answer.content).iter(f"{_DAV}propstat"):
                if " 200 " in f"{propstat.findtext(f'{_DAV}status') or ''} ":
                    text = propstat.findtext(f"{_DAV}prop/{_DAV}quota-available-bytes") or text
        except ET.ParseError:
            pass                                      # no room told: put finds out (507)
        if text is not None and text.strip() == "0":
            problems.append(f"account {acct.user!r} has no space left (its quota is used up)")
        try:
            # chunked upload v2 is the server's (the same app for every account): asked once per
            # check before a run, with the first account that gets this far, not once per user
            self._once(("chunked uploads",), lambda: self._patiently(
                lambda: self._request("PROPFIND", acct.user, self._uploads(acct.user), headers={"Depth": "0"},
                                      ok=(207,))))
        except (TransientError, ItemError, FatalError) as exc:
            problems.append(f"chunked uploads are not available ({exc}); "
                            f"files of {self.config.chunk_threshold} bytes or more would fail")
        return problems

    def _find_props(self) -> tuple[str, ...]:
        return ("d:resourcetype", "d:getcontentlength", "oc:checksums")

    def _stored_sha256(self, prop: ET.Element) -> str | None:
        for node in prop.iter(f"{_OC}checksum"):
            for entry in (node.text or "").split():
                algo, _, value = entry.partition(":")
                if algo.upper() == "SHA256" and value:
                    return value.lower()
        return None

    def _put_headers(self, src: Path, mtime: float | None, digest: str | None) -> dict[str, str]:
        headers = {"OC-Checksum": f"SHA256:{digest or _sha256_of(src)}"}
        if mtime is not None:
            headers["X-OC-MTime"] = str(int(mtime))
        return headers

    def _upload(self, acct: _Account, dav_path: str, src: Path, size: int, mtime: float | None,
                digest: str | None) -> str | None:
        if size < self.config.chunk_threshold or size == 0:
            return super()._upload(acct, dav_path, src, size, mtime, digest)
        return self._upload_chunked(acct, dav_path, src, size, mtime, digest)

    def _kept_checksum(self, headers: dict[str, str]) -> str | None:
        algo, _, value = headers.get("OC-Checksum", "").partition(":")
        return value.lower() if algo == "SHA256" and value else None

    def _fits(self, acct: _Account, dav_path: str, size: int) -> None:
        """`QuotaExceeded` before a chunk travels when the folder has less room than `size` bytes
        (the server's `quota-available-bytes`; negative means unlimited or unknown)."""
        prop = self._propfind(acct.user, dav_path.rpartition("/")[0], ("d:quota-available-bytes",))
        text = prop.findtext(f"{_DAV}quota-available-bytes") if prop is not None else None
        try:
            free = int(float(text)) if text else -1
        except ValueError:
            free = -1
        if 0 <= free < size:
            raise self._quota_exceeded(acct.owner, acct.user, f"{size} bytes to send, {free} available: "
                                                              "nothing was sent")

    def _upload_chunked(self, acct: _Account, dav_path: str, src: Path, size: int, mtime: float | None,
                        known: str | None) -> str | None:
        """Chunked upload v2; without a known digest the chunks are hashed on the way (one read)."""
        user = acct.user
        folder = f"{self._uploads(user)}/umstieg-{uuid.uuid4().hex}"
        destination = self._url(dav_path)
        common = {"Destination": destination, "OC-Total-Length": str(size)}
        chunk = max(self.config.chunk_size, math.ceil(size / 10000))     # at most 10000 chunks
        digest = _NoDigest() if known else hashlib.sha256()
        self._fits(acct, dav_path, size)
        # a lost answer to this MKCOL makes its repetition answer 405: the folder is there then
        self._again(f"starting the upload of {dav_path}", lambda: self._request(
            "MKCOL", user, folder, owner=acct.owner, headers={"Destination": destination}, ok=(201, 405)))
        try:
            for number, offset in enumerate(range(0, size, chunk), start=1):
                length = min(chunk, size - offset)

                def send_chunk(number=number, offset=offset, length=length, digest=digest):
                    attempt = digest.copy()
                    self._request("PUT", user, f"{folder}/{number:05d}", owner=acct.owner,
                                  headers={**common, "Content-Length": str(length)},
                                  content=_blocks(src, offset, length, attempt))
                    return attempt
                digest = self._again(f"chunk {number} of {dav_path}", send_chunk)
            sent = known if isinstance(digest, _NoDigest) else digest.hexdigest()   # (known when no digest is made)
            headers = {**common, "OC-Checksum": f"SHA256:{sent}"}
            if mtime is not None:
                headers["X-OC-MTime"] = str(int(mtime))
            self._while_locked(dav_path, lambda: self._request(
                "MOVE", user, f"{folder}/.file", owner=acct.owner, headers=headers,
                timeout=self.config.timeout + size * ASSEMBLY_SECONDS_PER_BYTE))
            return self._kept_checksum(headers)
        except BaseException:
            try:                                     # let the server drop the chunks now, not in 24 h
                self._request("DELETE", user, folder, ok=(200, 204, 404), timeout=min(self.config.timeout, 10.0))
            except Exception:                        # noqa: BLE001 - the original failure matters, not this
                pass
            raise


    # ----------------------------------------------------------------------- sharing (OCS)
    #: OCS permission bits (read 1, update 2, create 4, delete 8, share 16) for each source right;
    #: a file cannot be given create or delete, so files and folders differ
    _PERMISSIONS = {("read", False): 1, ("write", False): 3, ("full", False): 19,
                    ("read", True): 1, ("write", True): 15, ("full", True): 31}

    def share(self, owner: str, rel: str, with_kind: str, with_name: str, rights: str, folder: bool = False) -> str:
        """Share `owner`/`rel` (or its folder, with `folder`) with a target user or group through the
        OCS share API; an existing share with the same person is kept. Returns a description."""
        acct = self._account(owner)
        dav_path = self._dav_path(acct, rel)
        if folder:
            dav_path = dav_path.rsplit("/", 1)[0]
        path = "/" + dav_path[len(self._root(acct.user)):].strip("/")
        if path == "/":
            raise ItemError("the account's root folder cannot be shared; share a folder inside it")
        share_type = {"user": 0, "group": 1}[with_kind]
        existing = self._ocs("GET", acct, params={"path": path, "reshares": "true"})
        for sh in existing if isinstance(existing, list) else []:
            if int(sh.get("share_type", -1)) == share_type and sh.get("share_with") == with_name:
                return f"{path} already shared with {with_kind} {with_name}"
        self._ocs("POST", acct, data={"path": path, "shareType": str(share_type), "shareWith": with_name,
                                      "permissions": str(self._PERMISSIONS[(rights, folder)])})
        return f"{path} shared with {with_kind} {with_name} ({rights})"

    def _ocs(self, method: str, acct: _Account, params: dict | None = None, data: dict | None = None):
        """One OCS share API call as `acct`; its `data`, or the error class of the taxonomy."""
        url = f"{self._origin}{self._prefix}/ocs/v2.php/apps/files_sharing/api/v1/shares"
        what = f"{method} OCS shares"
        with self._transient(what):
            resp = self._client.request(method, url, params={**(params or {}), "format": "json"}, data=data,
                                        headers={"OCS-APIRequest": "true", "Accept": "application/json"},
                                        auth=self._auth(acct.user))
        if resp.status_code in _TRANSIENT_STATUS or resp.status_code == 401:
            self._fail(resp, what, acct.user, acct.owner)
        try:
            ocs = resp.json()["ocs"]
            status, message = int(ocs["meta"]["statuscode"]), ocs["meta"].get("message") or ""
        except (ValueError, KeyError, TypeError):
            raise ItemError(f"{what}: {self.product} gave no OCS answer (HTTP {resp.status_code})") from None
        if status not in (100, 200):
            raise ItemError(f"{what}: {self.product} refused: {message or status}")
        return ocs.get("data")


#: This process's sink for a configuration (one connection pool and folder cache).
sink_for = PerProcess(
    lambda config: (Nextcloud if isinstance(config, NextcloudTarget) else OXDrive)(config), close="close")
