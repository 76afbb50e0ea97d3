"""OneDrive for Business and SharePoint document libraries, through Microsoft Graph.

- **OneDrive** (`type: onedrive`): each user's own drive, `/users/{upn}/drive`; the user's folder
  argument is their UPN; `path` limits the migration to one folder of every drive.
- **SharePoint** (`type: sharepoint`): one document library (`site` as `host:/sites/name` or a site
  id, `library` by name) holding one folder per user under `path`; the folder argument is the
  user's folder there.

Listing walks the drive with a **delta query** from the root (in OneDrive for Business and
SharePoint delta works on the root only, and its answers carry no paths: paths are rebuilt from
the parent ids). The process keeps each drive's items (a few fields each) and the delta link of the
last pass in memory: the next `discover` of the same drive — another user's folder in the same
SharePoint library, or a later run in the same worker — asks Graph only for what changed since,
instead of walking the whole library once per user. Every `discover` still returns the user's
complete listing (the flows compare versions with the ledger and mark what vanished as removed);
`changes()` returns only what changed in the user's folder since that folder's last pass. A delta
link the service has forgotten (410 Gone) means a full walk, counted in the client's `resyncs`.

An item's version is its cTag (which changes with the content), its key the drive item id, its
location the path below the user's folder; meta carries the modification time, the creator and,
for items with the `shared` facet when `read_permissions` is on, who it is shared with. Folders are
not items; OneNote notebooks and other packages (no `file` facet) are skipped with a log line.
Content comes from `/items/{id}/content`, a 302 to a pre-authenticated URL fetched without the token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import httpx

from core.plugins import Account, PerProcess, ProbeMemo
from sources.onedrive_config import OneDriveSource, SharePointSource
from core.errors import ConfigError, ItemError, TransientError
from core.items import ItemRef, Kind
from sources.graph import Changes, DeltaExpired, GraphClient, client_for, person_of, quote_segment

__all__ = ["DriveSource", "DriveChanges", "source_for", "permission_of"]

log = logging.getLogger("umstieg.sources.onedrive")

_ROLE_RIGHTS = {"owner": "full", "sp.full control": "full", "write": "write", "sp.edit": "write", "read": "read",
                "sp.view only": "read", "sp.restricted view": "read"}


#: What `DriveSource.changes` returns (kept under this name for readers of the drive source).
DriveChanges = Changes


@dataclass
class _DriveState:
    """What one process knows of a drive: its items, the delta link of the last pass, and a
    change sequence, so that each user folder can be told what changed since its own last pass."""

    delta_link: str | None = None
    items: dict[str, dict] = field(default_factory=dict)        # id -> the fields listing needs (_slim)
    root: str | None = None
    seq: int = 0                                                 # number of the last pass
    removed: dict[str, tuple[int, str | None]] = field(default_factory=dict)   # id -> (pass, path then)
    seen: dict[str, int] = field(default_factory=dict)           # user folder -> pass it last saw
    lock: threading.Lock = field(default_factory=threading.Lock)


def _slim(e: dict, seq: int) -> dict:
    """The fields of a delta entry that listing needs (a library of 100 000 items stays small)."""
    return {"name": e.get("name", ""), "parent": (e.get("parentReference") or {}).get("id"), "seq": seq,
            "root": "root" in e, "folder": "folder" in e, "file": "file" in e,
            "package": (e.get("package") or {}).get("type"), "shared": "shared" in e,
            "version": str(e.get("cTag") or e.get("eTag") or ""), "size": e.get("size"),
            "mtime": _epoch((e.get("fileSystemInfo") or {}).get("lastModifiedDateTime")
                            or e.get("lastModifiedDateTime")),
            "owner": _identity_name(e.get("createdBy"))}


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _identity_name(identity: dict | None) -> str | None:
    """The best name of a Graph identitySet: an address where there is one, else a display name."""
    if not identity:
        return None
    for kind in ("user", "siteUser", "group", "siteGroup", "application", "device"):
        ident = identity.get(kind)
        if ident:
            login = str(ident.get("loginName") or "")
            return (ident.get("email") or ident.get("userPrincipalName") or (login.rpartition("|")[2] or None)
                    or ident.get("displayName") or ident.get("id"))
    return None


def permission_of(perm: dict) -> list[dict]:
    """One Graph permission as the sharing entries umstieg reports (a link to many people is many)."""
    roles = [str(r).lower() for r in perm.get("roles") or []]
    rights = max((_ROLE_RIGHTS.get(r, "read") for r in roles), key=["read", "write", "full"].index, default="read")
    inherited = bool(perm.get("inheritedFrom"))
    link = perm.get("link")
    if link:
        scope = link.get("scope") or "users"
        if link.get("type") == "edit" and rights == "read":
            rights = "write"
        people = [p for p in (_identity_name(i) for i in perm.get("grantedToIdentitiesV2")
                              or perm.get("grantedToIdentities") or []) if p]
        if scope == "users" and people:
            # "specific people": OneDrive's usual way to share with a person is such a link; what it
            # grants is access for each of them, which a target can give as a user share
            return [{"principal": p, "kind": "user", "rights": rights, "deny": False, "inherited": inherited,
                     "link_scope": scope} for p in people]
        return [{"principal": "anyone" if scope == "anonymous" else scope, "kind": "link", "rights": rights,
                 "deny": False, "inherited": inherited, "link_scope": scope}]
    granted = perm.get("grantedToV2") or perm.get("grantedTo") or {}
    name = _identity_name(granted)
    if name is None:
        return []
    kind = "group" if ("group" in granted or "siteGroup" in granted) and "user" not in granted else "user"
    return [{"principal": name, "kind": kind, "rights": rights, "deny": False, "inherited": inherited}]


class DriveSource(ProbeMemo):
    """A OneDrive or SharePoint source: the three Source operations plus `changes`."""

    def __init__(self, config: OneDriveSource | SharePointSource, client: GraphClient | None = None) -> None:
        self.config = config
        self.client = client or client_for(config)
        self._need = "Sites.Read.All" if isinstance(config, SharePointSource) else "Files.Read.All"
        self._lock = threading.Lock()
        self._drives: dict[str, str] = {}                 # folder (UPN) or "" (library) -> drive id
        self._states: dict[str, _DriveState] = {}         # drive id -> state

    @property
    def name(self) -> str:
        return self.config.name

    # ----------------------------------------------------------------------- addressing
    def _drive_id(self, folder: str) -> str:
        """The drive's id (kept once found; a failure is kept while `probing()`, so that `check`
        and the identity check ask Graph once per user)."""
        sharepoint = isinstance(self.config, SharePointSource)
        cache_key = "" if sharepoint else folder
        with self._lock:
            if cache_key in self._drives:
                return self._drives[cache_key]
        return self._once(("drive", cache_key), lambda: self._look_up_drive(folder, cache_key))

    def _look_up_drive(self, folder: str, cache_key: str) -> str:
        if isinstance(self.config, SharePointSource):
            site = self.config.site
            if ":" in site:                              # host:/sites/name
                host, _, rel = site.partition(":")
                site_path = f"/sites/{host}:/{rel.strip('/')}"
            else:
                site_path = f"/sites/{quote_segment(site)}"
            site_id = self.client.get_json(site_path, scope="site", need=self._need)["id"]
            drives = list(self.client.pages(f"/sites/{quote_segment(site_id)}/drives", scope="site", need=self._need))
            drive = next((d for d in drives if d.get("name") == self.config.library), None)
            if drive is None:
                names = ", ".join(sorted(str(d.get("name")) for d in drives)) or "none"
                raise ConfigError(f"source {self.name}: the site {site} has no document library "
                                  f"{self.config.library!r} (it has: {names})")
            drive_id = drive["id"]
        else:
            try:
                drive_id = self.client.get_json(f"/users/{quote_segment(folder)}/drive", scope=folder,
                                                need=self._need, item=True)["id"]
            except ItemError as exc:
                raise ConfigError(f"the OneDrive of {folder} cannot be read (is the UPN right, and has the user "
                                  f"signed in to OneDrive once so that it exists?): {exc}") from None
        with self._lock:
            self._drives[cache_key] = drive_id
        return drive_id

    def _folder_answer(self, drive_id: str, base: str) -> httpx.Response:
        """GET of the user's folder in the drive (200, 403 or 404): `check` and the identity check
        both ask it, once per folder while `probing()`."""
        return self._once(("folder", drive_id, base), lambda: self.client.request(
            "GET", f"/drives/{drive_id}/root:/{quote(base, safe='/')}:", scope=drive_id, need=self._need,
            item=True, ok=(200, 403, 404)))

    def _base(self, folder: str) -> str:
        """The user's folder inside the drive, without slashes at either end ('' = the whole drive)."""
        parts = [self.config.path.strip("/")]
        if isinstance(self.config, SharePointSource):
            parts.append(folder.strip("/"))
        return "/".join(p for p in parts if p)

    # ----------------------------------------------------------------------- Source
    def check(self, folders: list[str]) -> list[str]:
        """Token, drives and user folders: every problem at once."""
        try:
            self.client.token()
        except (ConfigError, TransientError) as exc:
            return [f"source {self.name}: {exc}"]
        if isinstance(self.config, SharePointSource):
            try:
                self._drive_id("")                       # the site and the library: once, not per user
            except (ConfigError, ItemError, TransientError) as exc:
                return [f"source {self.name}: {exc}"]
        problems = []
        for folder in folders:
            try:
                drive_id = self._drive_id(folder)
                base = self._base(folder)
                if base and self._folder_answer(drive_id, base).status_code != 200:
                    # missing or forbidden: asked again for the reason as a listing would meet it
                    self.client.get_json(f"/drives/{drive_id}/root:/{quote(base, safe='/')}:", scope=drive_id,
                                         need=self._need)
            except (ConfigError, ItemError, TransientError) as exc:
                problems.append(f"source {self.name}, user folder {folder!r}: {exc}")
        return problems

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """The identity check: OneDrive: the user exists in Entra ID (with the e-mail address and
        display name Graph holds) and has a drive; SharePoint: the user's folder exists in the
        library (it tells no e-mail or name). A token refused or Graph out of reach concerns
        everyone: nobody is blamed (`check` says so)."""
        sharepoint = isinstance(self.config, SharePointSource)
        try:
            self.client.token()
            if sharepoint:
                drive_id = self._drive_id("")
        except (ConfigError, ItemError, TransientError):
            return {name: Account(None) for name in names}
        found = {}
        for folder in names:
            try:
                if sharepoint:
                    resp = self._folder_answer(drive_id, self._base(folder))
                    if resp.status_code == 403:
                        raise ItemError("forbidden")           # cannot tell
                    found[folder] = Account(True) if resp.status_code == 200 else Account(
                        False, why=f"no user folder {self._base(folder)!r} in the library")
                    continue
                person = person_of(self.client, folder)
                if person is False:
                    found[folder] = Account(False, why=f"no user {folder!r} at Microsoft 365")
                    continue
                self._drive_id(folder)
                person = person or {}
                found[folder] = Account(True, email=person.get("mail"), display_name=person.get("displayName"))
            except ConfigError as exc:           # _drive_id: this user has no drive, or it may not be read
                found[folder] = Account(False, why=str(exc))
            except (ItemError, TransientError):
                found[folder] = Account(None)
        return found

    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every file in the user's folder (the drive brought up to date through its delta link)."""
        drive_id = self._drive_id(folder)
        state, _ = self._sync(drive_id)
        base = self._base(folder)
        with state.lock:
            found = self._listed(state, base, lambda item: True)
            state.seen[folder] = state.seq
        yield from self._refs(owner, drive_id, found)

    def changes(self, owner: str, folder: str) -> DriveChanges:
        """What changed in the user's folder since its last `discover` or `changes` in this process.

        The folder's first pass in a process, or a pass after the delta link expired, is a full
        listing (`resynced`), whose `removed` is empty: the ledger knows what is gone."""
        drive_id = self._drive_id(folder)
        state, resynced = self._sync(drive_id)
        base = self._base(folder)
        result = DriveChanges()
        with state.lock:
            last = state.seen.get(folder)
            result.resynced = resynced or last is None
            since = -1 if result.resynced or last is None else last
            found = self._listed(state, base, lambda item: item["seq"] > since)
            if not result.resynced:
                result.removed = [i for i, (seq, path) in state.removed.items()
                                  if seq > since and (path is None or _under(path, base) is not None)]
            state.seen[folder] = state.seq
        result.changed = list(self._refs(owner, drive_id, found))
        return result

    def extract(self, folder: str, location: str, dst: Path, key: str | None = None) -> tuple[int, float | None]:
        """Stream the file's bytes to `dst` (302 to a pre-authenticated URL, followed without the token)."""
        if not key:
            raise ItemError(f"no drive item id for {location}: rediscover the source")
        drive_id = self._drive_id(folder)
        size = self.client.download(f"/drives/{drive_id}/items/{quote_segment(key)}/content", dst,
                                    scope=drive_id, need=self._need)
        return size, None                  # the modification time came with the listing (meta["mtime"])

    # ----------------------------------------------------------------------- listing
    def _sync(self, drive_id: str) -> tuple[_DriveState, bool]:
        """Bring the drive's items up to date: its changes since the last pass, or (first pass,
        expired link) a full walk. Returns the state and whether it was a full walk."""
        with self._lock:
            state = self._states.setdefault(drive_id, _DriveState())
        with state.lock:
            delta = None
            if state.delta_link:
                try:
                    delta = self.client.delta(state.delta_link, scope=drive_id, need=self._need)
                except DeltaExpired:
                    self.client.expired(f"drive {drive_id}")
            state.seq += 1
            full = delta is None
            if delta is None:
                delta = self.client.delta(f"/drives/{drive_id}/root/delta", scope=drive_id, need=self._need)
                old, state.items = state.items, {}
            for e in delta.entries:
                if "deleted" in e or "@removed" in e:
                    if e["id"] in state.items:
                        state.removed[e["id"]] = (state.seq, self._path(state, e["id"]))
                        del state.items[e["id"]]
                    continue
                item = state.items[e["id"]] = _slim(e, state.seq)
                state.removed.pop(e["id"], None)
                if item["root"]:
                    state.root = e["id"]
            if full:
                for gone in old.keys() - state.items.keys():
                    state.removed[gone] = (state.seq, None)
            state.delta_link = delta.delta_link
        return state, full

    def _path(self, state: _DriveState, item_id: str) -> str | None:
        """The item's path from the drive's root ('' for the root), or None if its chain is broken."""
        names = []
        seen = 0
        while item_id != state.root:
            item = state.items.get(item_id)
            if item is None or seen > 1000:
                return None
            names.append(item["name"])
            item_id, seen = item["parent"], seen + 1
        return "/".join(reversed(names))

    def _listed(self, state: _DriveState, base: str, wanted) -> list[tuple[str, dict, str]]:
        """(id, item, path below `base`) of the files below `base` that `wanted` accepts."""
        found = []
        for item_id, item in state.items.items():
            if item["folder"] or item["root"] or not wanted(item):
                continue
            path = self._path(state, item_id)
            if path is None:
                log.warning("source %s: item %s has no path to the drive's root; skipped", self.name, item_id)
                continue
            rel = _under(path, base)
            if rel is None:
                continue
            if not item["file"]:
                log.info("source %s: %s is not a file (%s); skipped", self.name, path,
                         "a OneNote notebook" if item["package"] == "oneNote" else "a package")
                continue
            found.append((item_id, item, rel))
        return found

    def _refs(self, owner: str, drive_id: str, found: list[tuple[str, dict, str]]) -> Iterator[ItemRef]:
        for item_id, item, rel in found:
            meta: dict = {"mtime": item["mtime"], "owner": item["owner"]}
            if self.config.read_permissions and item["shared"]:
                meta["permissions"] = self._permissions(drive_id, item_id)
            yield ItemRef(source=self.name, key=item_id, kind=Kind.FILE, owner=owner, location=rel,
                          version=item["version"], size=item["size"], meta=meta)

    def _permissions(self, drive_id: str, item_id: str) -> list[dict]:
        try:
            perms = self.client.pages(f"/drives/{drive_id}/items/{quote_segment(item_id)}/permissions",
                                      scope=drive_id, need=self._need, item=True)
            return [entry for p in perms for entry in permission_of(p)]
        except ItemError as exc:
            log.warning("source %s: permissions of item %s not read: %s", self.name, item_id, exc)
            return []


def _under(path: str, base: str) -> str | None:
    """`path` relative to `base`, or None when it is not below it."""
    if not base:
        return path
    if path.startswith(base + "/"):
        return path[len(base) + 1:]
    return None


#: This process's source for a configuration (it keeps the drives' delta links).
source_for = PerProcess(DriveSource)
