"""A protocol-level TEST server that behaves like Microsoft Graph and Entra ID — for tests only.

Microsoft 365 cannot run here, so this small server answers the documented endpoints the Graph
sources use, with the documented response shapes, over TLS (msal refuses an http authority) with a
certificate of a `trustme` test CA (`ca_file`):

Identity platform (`<url>/<tenant>`):
- `GET /<tenant>/v2.0/.well-known/openid-configuration` (msal reads it in its constructor);
- `POST /<tenant>/oauth2/v2.0/token`, grant `client_credentials`: checks client id and secret
  (wrong ones: 401 `invalid_client`, AADSTS7000215 as Entra ID answers), issues opaque tokens.

Graph (`<url>/v1.0`, Bearer token required, 401 `InvalidAuthenticationToken` otherwise):
- the user: `/users/{upn}` (`mail`, `displayName`: see `set_profile`);
- files: `/users/{upn}/drive`, `/sites/{host}:/sites/{name}`, `/sites/{id}`, `/sites/{id}/drives`,
  `/drives/{id}/root:/{path}:`, `/drives/{id}/root/delta` (full enumeration, then `?token=`
  changes only: deleted items carry the `deleted` facet; a token from before `expire_deltas()` is
  answered 410 Gone),
  `/drives/{id}/items/{id}/permissions`, `/drives/{id}/items/{id}/content` (302 to a
  pre-authenticated `/download/…` URL that refuses any request carrying an Authorization header);
- mail: `/users/{upn}/mailFolders` (+ well-known names as ids: inbox, sentitems, drafts,
  deleteditems, junkemail, archive), `/mailFolders/{id}/childFolders`,
  `/mailFolders/{id}/messages/delta` (removed messages as `@removed`; see below for its query
  options), `/messages/{id}/$value`;
- calendars: `/users/{upn}/calendars`, `/calendars/{id}/events` (single instances and series
  masters), `/events/{id}`, `/events/{id}/instances?startDateTime&endDateTime` (occurrences and
  exceptions, not cancelled occurrences) — the instances are *declared* by the test, not computed
  here;
- contacts: `/users/{upn}/contactFolders`, `/contactFolders/{id}/contacts`, `/users/{upn}/contacts`,
  `/contacts/{id}`.

The message delta function takes the query options Graph documents for it (`message: delta`,
"OData query parameters"): `$select` (id and `@odata.etag` always come), `$expand` of
`singleValueExtendedProperties($filter=id eq '<type> <tag>')` (one or more ids joined by `or`;
the only way Graph documents to read an extended property), `$filter` on `receivedDateTime ge|gt`,
`$orderby=receivedDateTime desc` and `$top` (both accepted, not applied). Graph documents no
`$search` there and no other `$filter` or `$orderby`: answered 400, as is any other `$expand`
(attachments, extensions and named properties are not modelled here). The options of the first request are
carried in the nextLink and the deltaLink, as Graph encodes them into its tokens, so a later pass
with the deltaLink alone gets the same shape. Extended properties are set with
`put_message(last_verb=…)` / `set_last_verb()` (PidTagLastVerbExecuted, `Integer 0x1081`); an id is
written back in Graph's spelling (`Integer 0x1081`, lower-case hex without leading zeros), and a
message without the property has no `singleValueExtendedProperties`. Setting one gives the message
a new changeKey, as Exchange does, so the next delta pass lists it as changed.

Event requests must carry `Prefer: outlook.timezone="UTC"` (Graph would otherwise answer in the
mailbox's zone, which this server does not model): without it they are answered 400.

Collections are paged with `@odata.nextLink` after `page_size` entries (small, so paging is
exercised). `throttle(n, retry_after)` answers the next n Graph requests 429 with Retry-After;
`log` records (method, path, had Authorization) of every request; with `delay`, each Graph answer
takes that long and `max_in_flight` shows how many requests were under way at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote

import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Changes:
    """An ordered collection with a change log, as delta queries need it."""

    def __init__(self) -> None:
        self.seq = 0
        self.entries: dict[str, dict] = {}         # id -> entry (JSON shape)
        self.changed: dict[str, int] = {}          # id -> seq of its last change
        self.removed: dict[str, int] = {}          # id -> seq of its removal

    def put(self, entry: dict) -> dict:
        self.seq += 1
        self.entries[entry["id"]] = entry
        self.changed[entry["id"]] = self.seq
        self.removed.pop(entry["id"], None)
        return entry

    def remove(self, entry_id: str) -> None:
        self.seq += 1
        self.entries.pop(entry_id, None)
        self.changed.pop(entry_id, None)
        self.removed[entry_id] = self.seq

    def since(self, token: int | None, removed_shape) -> list[dict]:
        live = [(s, e) for i, s in self.changed.items() if token is None or s > token
                for e in (self.entries[i],)]
        gone = [] if token is None else [(s, removed_shape(i)) for i, s in self.removed.items() if s > token]
        return [e for _, e in sorted(live + gone, key=lambda p: p[0])]


@dataclass
class Drive:
    id: str
    owner: str
    name: str = "OneDrive"
    items: Changes = field(default_factory=Changes)
    content: dict[str, bytes] = field(default_factory=dict)
    permissions: dict[str, list[dict]] = field(default_factory=dict)
    root_id: str = ""
    epoch: int = 0          # delta tokens of an older epoch are answered 410 Gone


@dataclass
class Mailbox:
    upn: str
    folders: dict[str, dict] = field(default_factory=dict)          # id -> mailFolder
    parents: dict[str, str | None] = field(default_factory=dict)     # id -> parent id
    well_known: dict[str, str] = field(default_factory=dict)         # wellknown name -> id
    messages: dict[str, Changes] = field(default_factory=dict)       # folder id -> messages
    mime: dict[str, bytes] = field(default_factory=dict)             # message id -> MIME
    extended: dict[str, dict[tuple[str, int], str]] = field(default_factory=dict)  # message id -> {(type, tag): value}
    calendars: list[dict] = field(default_factory=list)
    events: dict[str, list[dict]] = field(default_factory=dict)      # calendar id -> events
    instances: dict[str, list[dict]] = field(default_factory=dict)   # series master id -> instances
    contact_folders: list[dict] = field(default_factory=list)
    contacts: dict[str, list[dict]] = field(default_factory=dict)    # folder id ('' = default) -> contacts


class GraphTestServer:
    """Graph and Entra ID as far as the sources use them, on 127.0.0.1 over TLS."""

    def __init__(self, workdir: Path, *, tenant: str = "tenant-1", client_id: str = "app-1",
                 client_secret: str = "s3cret-value", page_size: int = 3) -> None:
        self.workdir = workdir
        self.tenant, self.client_id, self.client_secret = tenant, client_id, client_secret
        self.page_size = page_size
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.log: list[tuple[str, str, bool]] = []
        self.queries: list[tuple[str, dict[str, str]]] = []   # (path, query options) of every request
        self.user_agents: set[str] = set()
        self.users: dict[str, dict] = {}              # upn -> {"id", "drive"}
        self.drives: dict[str, Drive] = {}
        self.sites: dict[str, dict] = {}              # "host:/sites/x" -> {"id", "drives": [ids]}
        self.mailboxes: dict[str, Mailbox] = {}
        self.profiles: dict[str, dict] = {}          # upn -> {"mail", "displayName"} (see set_profile)
        self.downloads: dict[str, tuple[str, str]] = {}   # signature -> (drive id, item id)
        self.denied: set[str] = set()                 # path fragments answered 403
        self._throttle: list[tuple[int, str]] = []
        self.delay = 0.0                              # seconds each Graph answer takes (to observe concurrency)
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self.url = ""
        self.ca_file = workdir / "graph-test-ca.pem"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------- set-up by tests
    def throttle(self, count: int, retry_after: str = "1", status: int = 429) -> None:
        """Answer the next `count` Graph requests with `status` and this Retry-After."""
        with self._lock:
            self._throttle.extend([(status, retry_after)] * count)

    def add_user(self, upn: str) -> Drive:
        drive = Drive(id=new_id("b!drive"), owner=upn)
        root = {"id": new_id("root"), "name": "root", "root": {}, "folder": {"childCount": 0},
                "parentReference": {"driveId": drive.id}}
        drive.root_id = root["id"]
        drive.items.put(root)
        self.drives[drive.id] = drive
        self.users[upn] = {"id": new_id("user"), "drive": drive.id}
        return drive

    def set_profile(self, upn: str, mail: str | None = None, display_name: str | None = None) -> None:
        """What `GET /users/{upn}` tells of a user who has a drive or a mailbox: the primary
        e-mail address (`mail`; default: the UPN) and `displayName` (default: none)."""
        self.profiles[upn] = {"mail": mail, "displayName": display_name}

    def add_site(self, site_path: str, library: str) -> Drive:
        drive = Drive(id=new_id("b!lib"), owner="", name=library)
        root = {"id": new_id("root"), "name": "root", "root": {}, "folder": {"childCount": 0},
                "parentReference": {"driveId": drive.id}}
        drive.root_id = root["id"]
        drive.items.put(root)
        self.drives[drive.id] = drive
        other = Drive(id=new_id("b!lib"), owner="", name="Site Assets")
        other.root_id = other.items.put({"id": new_id("root"), "name": "root", "root": {}, "folder": {}})["id"]
        self.drives[other.id] = other
        self.sites[site_path] = {"id": f"{site_path.split(':')[0]},{new_id('site')}", "drives": [other.id, drive.id]}
        return drive

    def folder(self, drive: Drive, path: str) -> str:
        """The id of folder `path` (made with its parents when missing)."""
        parent = drive.root_id
        for name in [p for p in path.split("/") if p]:
            found = next((e for e in drive.items.entries.values()
                          if e["name"] == name and e.get("parentReference", {}).get("id") == parent and "folder" in e),
                         None)
            if found is None:
                found = drive.items.put({"id": new_id("fold"), "name": name, "folder": {"childCount": 0},
                                         "parentReference": {"driveId": drive.id, "id": parent},
                                         "eTag": f'"{new_id("e")}"', "cTag": f'"{new_id("c")}"'})
            parent = found["id"]
        return parent

    def put_file(self, drive: Drive, path: str, data: bytes, *, mtime: float = 1_700_000_000.0,
                 created_by: str = "", shared: bool = False, permissions: list[dict] | None = None,
                 item_id: str | None = None) -> dict:
        """Create or replace the file at `path` (a new eTag and cTag)."""
        folder, _, name = path.rpartition("/")
        parent = self.folder(drive, folder)
        existing = next((e for e in drive.items.entries.values()
                         if e["name"] == name and e.get("parentReference", {}).get("id") == parent), None)
        entry = {"id": item_id or (existing["id"] if existing else new_id("file")), "name": name,
                 "size": len(data), "eTag": f'"{new_id("e")}"', "cTag": f'"{new_id("c")}"',
                 "file": {"mimeType": "application/octet-stream",
                          "hashes": {"sha256Hash": hashlib.sha256(data).hexdigest().upper()}},
                 "parentReference": {"driveId": drive.id, "id": parent},
                 "lastModifiedDateTime": iso(mtime), "createdDateTime": iso(mtime - 3600),
                 "fileSystemInfo": {"lastModifiedDateTime": iso(mtime)},
                 "createdBy": {"user": {"email": created_by or drive.owner, "displayName": created_by or drive.owner}}}
        if shared:
            entry["shared"] = {"scope": "users"}
        drive.content[entry["id"]] = data
        drive.permissions[entry["id"]] = permissions or []
        return drive.items.put(entry)

    def put_package(self, drive: Drive, path: str) -> dict:
        """A OneNote notebook: a `package` facet, no `file` facet."""
        folder, _, name = path.rpartition("/")
        return drive.items.put({"id": new_id("pkg"), "name": name, "package": {"type": "oneNote"},
                                "parentReference": {"driveId": drive.id, "id": self.folder(drive, folder)},
                                "eTag": '"p"', "cTag": '"p"'})

    def delete(self, drive: Drive, item_id: str) -> None:
        drive.items.remove(item_id)

    def expire_deltas(self, drive: Drive) -> None:
        drive.epoch += 1

    def add_mailbox(self, upn: str) -> Mailbox:
        box = Mailbox(upn=upn)
        self.mailboxes[upn] = box
        for wk, name in (("inbox", "Inbox"), ("sentitems", "Sent Items"), ("drafts", "Drafts"),
                         ("deleteditems", "Deleted Items"), ("junkemail", "Junk Email"), ("archive", "Archive")):
            box.well_known[wk] = self.add_mail_folder(box, name)["id"]
        cal = {"id": new_id("cal"), "name": "Calendar", "isDefaultCalendar": True, "changeKey": "ck"}
        box.calendars.append(cal)
        box.events[cal["id"]] = []
        box.contacts[""] = []
        return box

    def add_mail_folder(self, box: Mailbox, name: str, parent: str | None = None) -> dict:
        folder = {"id": new_id("mf"), "displayName": name, "parentFolderId": parent or "msgfolderroot",
                  "childFolderCount": 0, "totalItemCount": 0}
        box.folders[folder["id"]] = folder
        box.parents[folder["id"]] = parent
        box.messages[folder["id"]] = Changes()
        if parent:
            box.folders[parent]["childFolderCount"] += 1
        return folder

    def put_message(self, box: Mailbox, folder_id: str, mime: bytes, *, is_read: bool = False,
                    flagged: bool = False, is_draft: bool = False, received: str = "2026-03-01T10:00:00Z",
                    message_id: str | None = None, last_verb: int | None = None) -> dict:
        """A message; `last_verb` is its PidTagLastVerbExecuted (102 replied, 103 replied to all,
        104 forwarded), an extended property Graph shows only when asked for it. internetMessageId
        is the MIME's Message-ID header, as Graph takes it, unless given (or the MIME has none)."""
        header = re.search(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", mime.split(b"\r\n\r\n", 1)[0],
                           re.IGNORECASE | re.MULTILINE)
        message_id = message_id or (header.group(1).decode("ascii", "replace") if header else None)
        msg = {"id": new_id("msg"), "changeKey": new_id("ck"), "@odata.etag": f'W/"{new_id("ck")}"',
               "isRead": is_read, "isDraft": is_draft, "receivedDateTime": received,
               "flag": {"flagStatus": "flagged" if flagged else "notFlagged"},
               "internetMessageId": message_id or f"<{new_id('m')}@test.invalid>", "parentFolderId": folder_id}
        box.mime[msg["id"]] = mime
        # PidTagMessageSize, which Exchange keeps on every message
        box.extended[msg["id"]] = {("integer", 0x0E08): str(len(mime))}
        if last_verb is not None:
            box.extended[msg["id"]][("integer", 0x1081)] = str(last_verb)
        box.folders[folder_id]["totalItemCount"] += 1
        return box.messages[folder_id].put(msg)

    def set_last_verb(self, box: Mailbox, message_id: str, verb: int) -> dict:
        """The user replied to (102, 103) or forwarded (104) the message meanwhile: Exchange sets
        PidTagLastVerbExecuted on the original and gives it a new changeKey."""
        folder_id = next(f for f, msgs in box.messages.items() if message_id in msgs.entries)
        box.extended.setdefault(message_id, {})[("integer", 0x1081)] = str(verb)
        changed = {**box.messages[folder_id].entries[message_id], "changeKey": new_id("ck"),
                   "@odata.etag": f'W/"{new_id("ck")}"'}
        return box.messages[folder_id].put(changed)

    def add_event(self, box: Mailbox, event: dict, instances: list[dict] | None = None,
                  calendar: str | None = None) -> dict:
        """An event as Graph shows it (times in UTC); a series master with its declared instances."""
        event = {"id": new_id("ev"), "changeKey": new_id("ck"), **event}
        cal_id = calendar or box.calendars[0]["id"]
        box.events[cal_id].append(event)
        if instances is not None:
            box.instances[event["id"]] = [{"id": new_id("inst"), "seriesMasterId": event["id"], **i} for i in instances]
        return event

    def add_calendar(self, box: Mailbox, name: str) -> str:
        cal = {"id": new_id("cal"), "name": name, "changeKey": "ck"}
        box.calendars.append(cal)
        box.events[cal["id"]] = []
        return cal["id"]

    def add_contact(self, box: Mailbox, contact: dict, folder: str = "") -> dict:
        contact = {"id": new_id("con"), "changeKey": new_id("ck"), **contact}
        box.contacts[folder].append(contact)
        return contact

    def add_contact_folder(self, box: Mailbox, name: str) -> str:
        folder = {"id": new_id("cf"), "displayName": name, "parentFolderId": "contacts"}
        box.contact_folders.append(folder)
        box.contacts[folder["id"]] = []
        return folder["id"]

    # ----------------------------------------------------------------------- serving
    def __enter__(self) -> "GraphTestServer":
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_file))
        pem = self.workdir / "graph-test-server.pem"
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"
        app = Starlette(routes=[Route("/{path:path}", self._dispatch, methods=["GET", "POST"])])
        config = uvicorn.Config(app, ssl_certfile=str(pem), ssl_keyfile=str(pem), log_level="warning",
                                lifespan="off", access_log=False,
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Graph test server did not start")
            time.sleep(0.02)
        self._sock = sock
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True           # keep-alive connections of the clients are not waited for
            self._thread.join(10)
            self._sock.close()

    @property
    def authority(self) -> str:
        return self.url

    @property
    def graph_url(self) -> str:
        return self.url + "/v1.0"

    async def _dispatch(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        self.log.append((request.method, path, "authorization" in request.headers))
        self.queries.append((path, dict(request.query_params)))
        self.user_agents.add(request.headers.get("user-agent", ""))
        if path.startswith("/download/"):
            return self._download(request, path)
        if path.startswith(f"/{self.tenant}/"):
            form = dict(parse_qs((await request.body()).decode())) if request.method == "POST" else {}
            return self._identity(path, {k: v[0] for k, v in form.items()})
        if not path.startswith("/v1.0/"):
            return _error(404, "itemNotFound", "no such endpoint")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return _error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
        with self._lock:
            throttled = self._throttle.pop(0) if self._throttle else None
        if throttled:
            status, retry_after = throttled
            return _error(status, "TooManyRequests" if status == 429 else "ServiceUnavailable",
                          "Too many requests", headers={"Retry-After": retry_after})
        if any(d in path for d in self.denied):
            return _error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self._graph(request, unquote(path[len("/v1.0"):]), request.query_params)
        except KeyError as exc:
            return _error(404, "ErrorItemNotFound", f"The specified object was not found in the store. {exc}")
        finally:
            with self._lock:
                self.in_flight -= 1

    def _identity(self, path: str, form: dict) -> Response:
        base = f"{self.url}/{self.tenant}"
        if path == f"/{self.tenant}/v2.0/.well-known/openid-configuration":
            return JSONResponse({"issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
                                 "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                                 "token_endpoint_auth_methods_supported": ["client_secret_post"]})
        if path == f"/{self.tenant}/oauth2/v2.0/token":
            self.token_requests += 1
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            if form.get("client_id") != self.client_id:
                return JSONResponse({"error": "unauthorized_client", "error_description":
                                     f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not "
                                     "found in the directory."}, status_code=400)
            if form.get("client_secret") != self.client_secret:
                return JSONResponse({"error": "invalid_client", "error_description":
                                     "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                                     "in the request is the client secret value, not the client secret ID."},
                                    status_code=401)
            token = secrets.token_urlsafe(24)
            self.tokens.add(token)
            return JSONResponse({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                 "access_token": token})
        return _error(404, "not_found", "no such identity endpoint")

    def _page(self, request: Request, entries: list[dict], extra: dict | None = None) -> Response:
        """One page of `entries` with a nextLink to the rest (`$skiptoken` = offset)."""
        q = dict(request.query_params)
        offset = int(q.pop("$skiptoken", "0"))
        body: dict = {"value": entries[offset:offset + self.page_size]}
        if offset + self.page_size < len(entries):
            q["$skiptoken"] = str(offset + self.page_size)
            body["@odata.nextLink"] = _link(self.url, request.url.path, q)
        elif extra:
            body.update(extra)
        return JSONResponse(body)

    def _delta(self, request: Request, changes: Changes, epoch: int, removed_shape, *,
               view=None, keep=None, carry: tuple[str, ...] = ()) -> Response:
        """One page of a delta round. `view` shapes each live entry (`$select`, `$expand`), `keep`
        filters them (`$filter`); the `carry` options go into the deltaLink too."""
        q = dict(request.query_params)
        token = q.get("token")
        since = None
        if token is not None:
            tok_epoch, _, seq = token.partition(".")
            if int(tok_epoch) != epoch:
                return _error(410, "resyncRequired", "The delta token has expired; resync.")
            since = int(seq)
        snapshot = int(q.pop("snapshot", changes.seq))
        entries = changes.since(since, removed_shape)
        # entries changed after the enumeration began come with the next pass
        entries = [e for e in entries if changes.changed.get(e["id"], changes.removed.get(e["id"], 0)) <= snapshot]
        if keep is not None:
            entries = [e for e in entries if "@removed" in e or keep(e)]
        q["snapshot"] = str(snapshot)
        offset = int(q.get("$skiptoken", "0"))
        page = entries[offset:offset + self.page_size]
        body: dict = {"value": [e if view is None or "@removed" in e else view(e) for e in page]}
        if offset + self.page_size < len(entries):
            q["$skiptoken"] = str(offset + self.page_size)
            body["@odata.nextLink"] = _link(self.url, request.url.path, q)
        else:
            body["@odata.deltaLink"] = _link(self.url, request.url.path, {
                "token": f"{epoch}.{snapshot}", **{k: q[k] for k in carry if k in q}})
        return JSONResponse(body)

    def _graph(self, request: Request, path: str, q) -> Response:
        parts = path.strip("/").split("/")
        # ---------------- files
        if parts[0] == "users" and len(parts) == 3 and parts[2] == "drive":
            drive = self.drives[self.users[parts[1]]["drive"]]
            return JSONResponse({"id": drive.id, "driveType": "business", "name": drive.name,
                                 "owner": {"user": {"email": parts[1]}}})
        if parts[0] == "sites":
            rest = path[len("/sites/"):]
            if ":/" in rest:                                  # /sites/{host}:/sites/{name}
                site = self.sites[rest.rstrip(":")]
                return JSONResponse({"id": site["id"], "webUrl": f"https://{rest.replace(':', '')}"})
            site_id, _, what = rest.partition("/")
            site = next((s for s in self.sites.values() if s["id"] == site_id), None)
            if site is None:
                raise KeyError(site_id)
            if what == "":
                return JSONResponse({"id": site["id"]})
            if what == "drives":
                return self._page(request, [{"id": d, "name": self.drives[d].name, "driveType": "documentLibrary"}
                                            for d in site["drives"]])
        if parts[0] == "drives":
            drive = self.drives[parts[1]]
            if len(parts) >= 3 and parts[2].startswith("root:"):      # /drives/{id}/root:/{path}
                rel = path.split("root:", 1)[1].strip("/:")
                found = next((e for e in drive.items.entries.values() if self._path_of(drive, e) == rel), None)
                if found is None:
                    raise KeyError(rel)
                return JSONResponse(found)
            if parts[2:] == ["root", "delta"]:
                return self._delta(request, drive.items, drive.epoch,
                                   lambda i: {"id": i, "deleted": {"state": "deleted"},
                                              "parentReference": {"driveId": drive.id}})
            if parts[2] == "items" and len(parts) == 5:
                item_id = parts[3]
                if item_id not in drive.items.entries:
                    raise KeyError(item_id)
                if parts[4] == "permissions":
                    return self._page(request, drive.permissions.get(item_id, []))
                if parts[4] == "content":
                    sig = secrets.token_urlsafe(16)
                    self.downloads[sig] = (drive.id, item_id)
                    return Response(status_code=302, headers={"Location": f"{self.url}/download/{sig}?tempauth=x"})
        # ---------------- the user (`GET /users/{upn}`, User.Read.All): unknown users are 404
        if parts[0] == "users" and len(parts) == 2 and (parts[1] in self.users or parts[1] in self.mailboxes):
            profile = self.profiles.get(parts[1], {"mail": parts[1], "displayName": None})
            return JSONResponse({"id": self.users.get(parts[1], {}).get("id") or f"user-{parts[1]}",
                                 "userPrincipalName": parts[1], **profile})
        # ---------------- mail, calendars, contacts
        if parts[0] == "users" and parts[1] in self.mailboxes:
            return self._mailbox(request, self.mailboxes[parts[1]], parts[2:])
        raise KeyError(path)

    def _path_of(self, drive: Drive, entry: dict) -> str:
        names = []
        while entry.get("id") != drive.root_id:
            names.append(entry["name"])
            entry = drive.items.entries[entry["parentReference"]["id"]]
        return "/".join(reversed(names))

    def _mailbox(self, request: Request, box: Mailbox, parts: list[str]) -> Response:
        def folder_id(name: str) -> str:
            fid = box.well_known.get(name.lower(), name)
            if fid not in box.folders:
                raise KeyError(name)
            return fid

        if parts == ["mailFolders"]:
            return self._page(request, [f for i, f in box.folders.items() if box.parents[i] is None])
        if parts[0] == "mailFolders":
            fid = folder_id(parts[1])
            if len(parts) == 2:
                return JSONResponse(box.folders[fid])
            if parts[2:] == ["childFolders"]:
                return self._page(request, [f for i, f in box.folders.items() if box.parents[i] == fid])
            if parts[2:] == ["messages", "delta"]:
                return self._message_delta(request, box, fid)
        if parts[0] == "messages" and len(parts) == 3 and parts[2] == "$value":
            return _streamed(box.mime[parts[1]], "text/plain")
        if (parts[0] == "events" or parts[2:3] == ["events"]) \
                and 'outlook.timezone="UTC"' not in request.headers.get("prefer", ""):
            # Graph answers in the mailbox's zone without this header; the sources always ask for UTC
            return _error(400, "ErrorInvalidRequest",
                          'this test server answers events with Prefer: outlook.timezone="UTC" only')
        if parts == ["calendars"]:
            return self._page(request, box.calendars)
        if parts[0] == "calendars" and parts[2:] == ["events"]:
            return self._page(request, box.events[parts[1]])
        if parts[0] == "events" and len(parts) == 2:
            found = next((e for evs in box.events.values() for e in evs if e["id"] == parts[1]), None)
            if found is None:
                raise KeyError(parts[1])
            return JSONResponse(found)
        if parts[0] == "events" and parts[2:] == ["instances"]:
            if "startDateTime" not in request.query_params or "endDateTime" not in request.query_params:
                return _error(400, "ErrorInvalidParameter", "startDateTime and endDateTime are required")
            lo, hi = request.query_params["startDateTime"], request.query_params["endDateTime"]
            found = [i for i in box.instances[parts[1]]
                     if _utc(lo) <= _utc(i["start"]["dateTime"]) < _utc(hi)]
            return self._page(request, found)
        if parts == ["contactFolders"]:
            return self._page(request, box.contact_folders)
        if parts[0] == "contactFolders" and parts[2:] == ["contacts"]:
            return self._page(request, box.contacts[parts[1]])
        if parts == ["contacts"]:
            return self._page(request, box.contacts[""])
        if parts[0] == "contacts" and len(parts) == 2:
            found = next((c for cs in box.contacts.values() for c in cs if c["id"] == parts[1]), None)
            if found is None:
                raise KeyError(parts[1])
            return JSONResponse(found)
        raise KeyError("/".join(parts))

    def _message_delta(self, request: Request, box: Mailbox, fid: str) -> Response:
        """`/mailFolders/{id}/messages/delta` with the query options Graph documents for it."""
        q = request.query_params
        if "$search" in q:
            return _error(400, "ErrorInvalidUrlQuery", "The query parameter '$search' is not supported with delta.")
        keep = None
        if "$filter" in q:
            m = re.fullmatch(r"\s*receivedDateTime\s+(ge|gt)\s+(\S+)\s*", q["$filter"])
            if not m:
                return _error(400, "ErrorInvalidUrlQueryFilter",
                              "The only supported $filter on delta is receivedDateTime ge|gt {value}.")
            op, since = m.group(1), _utc(m.group(2))
            keep = (lambda e: _utc(e["receivedDateTime"]) >= since) if op == "ge" else \
                (lambda e: _utc(e["receivedDateTime"]) > since)
        if "$orderby" in q and q["$orderby"].strip() != "receivedDateTime desc":
            return _error(400, "ErrorInvalidUrlQuery", "The only supported $orderby on delta is receivedDateTime desc.")
        wanted: set[tuple[str, int]] = set()
        if "$expand" in q:
            m = re.fullmatch(r"\s*singleValueExtendedProperties\(\$filter=(.+)\)\s*", q["$expand"])
            ids = re.findall(r"id eq '([^']*)'", m.group(1)) if m else []
            keys = [_property_key(i) for i in ids]
            if not m or not ids or None in keys or \
                    re.sub(r"id eq '[^']*'", "", m.group(1)).replace(" or ", "").strip():
                return _error(400, "BadRequest", "Parsing OData Select and Expand failed: this test server expands "
                              "singleValueExtendedProperties($filter=id eq '<type> 0x<tag>') only")
            wanted = set(keys)
        select = {f.strip() for f in q["$select"].split(",")} | {"id", "@odata.etag"} if "$select" in q else None

        def view(msg: dict) -> dict:
            out = {k: v for k, v in msg.items() if select is None or k in select}
            props = [{"id": f"{_PROPERTY_TYPES[t]} {hex(tag)}", "value": value}
                     for (t, tag), value in box.extended.get(msg["id"], {}).items() if (t, tag) in wanted]
            if props:
                out["singleValueExtendedProperties"] = props
            return out

        return self._delta(request, box.messages[fid], 0, lambda i: {"id": i, "@removed": {"reason": "deleted"}},
                           view=view, keep=keep, carry=("$select", "$expand", "$filter", "$orderby", "$top"))

    def _download(self, request: Request, path: str) -> Response:
        if "authorization" in request.headers:
            # a pre-authenticated URL: a bearer token sent along is refused (and must not be sent)
            return _error(401, "unauthenticated", "pre-authenticated URLs take no Authorization header")
        drive_id, item_id = self.downloads[path[len("/download/"):]]
        return _streamed(self.drives[drive_id].content[item_id], "application/octet-stream")


#: Bytes a download answer sends at a time.
_BLOCK = 1 << 16


def _streamed(data: bytes, media_type: str) -> StreamingResponse:
    """`data` sent a block at a time as the client takes it, as Graph streams a download: the server
    holds no second copy, so memory measured in a test's process is the client's."""
    view = memoryview(data)
    return StreamingResponse((bytes(view[i:i + _BLOCK]) for i in range(0, len(view), _BLOCK)),
                             media_type=media_type, headers={"Content-Length": str(len(data))})


#: MAPI property types as Graph spells them in an extended property's id
_PROPERTY_TYPES = {t.lower(): t for t in ("Integer", "Long", "Boolean", "String", "Binary", "SystemTime",
                                          "Double", "Float", "Short", "Currency", "CLSID", "ApplicationTime")}


def _property_key(prop_id: str) -> tuple[str, int] | None:
    """`Integer 0x1081` -> ("integer", 0x1081); None for a form this server does not know (named
    properties with a GUID are not modelled here)."""
    m = re.fullmatch(r"\s*(\w+)\s+0x([0-9a-fA-F]+)\s*", prop_id)
    if not m or m.group(1).lower() not in _PROPERTY_TYPES or int(m.group(2), 16) > 0xFFFF:
        return None
    return m.group(1).lower(), int(m.group(2), 16)


def _utc(value: str) -> datetime:
    value = value.rstrip("Z")
    value = value.split("+")[0]
    if "." in value:
        value = value.split(".")[0]
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


def _link(base: str, path: str, query: dict) -> str:
    return f"{base}{path}?" + "&".join(f"{quote(k, safe='$')}={quote(str(v), safe='')}" for k, v in query.items())


def _error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)
