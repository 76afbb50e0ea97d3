"""The shapes every source and every target (sink) module offers to the flows, and the registry of
the systems umstieg knows.

Items of every kind take the same road: a source lists ItemRefs and streams one item's bytes
into a local file (a file's bytes, a message's MIME, an event as iCalendar, a contact as vCard);
a sink writes that file for a target user and later proves that it holds it. What travels beside
the bytes (flags, internal date, permissions) is the ItemRef's `meta`, kept in the ledger.

`Source` and `Sink` are what every system offers. What only some can do (read many messages at
once, create a mailbox's folders, share a file, count a mailbox, probe target accounts, …) is a
small protocol of its own below, declared by the methods a class has and asked with
`isinstance`, so that a reader (and the type checker) sees every ability in one place.

**The registry** (`SYSTEMS`) is the single place a system is added: one line naming its `type`
in department files, the role it plays (a source, or the department field it can fill), its
configuration model and its factory, each as "module:attribute". Why strings, and why the model
sits in a module of its own (`sources/smb_config.py` beside `sources/smb.py`):

- the department model (core/department.py) must know every system's settings to check a file,
  all at once and with line numbers, but a department of folders must never load smbprotocol,
  boto3 or exchangelib. The models therefore live in light modules that import only pydantic and
  core/config.py; the code, with its client libraries, is imported only when a department
  configures it (`System.make`);
- core imports no source or sink: the registry names them, and they are loaded by name, the way
  entry points would (rclone's `fs.Register`, dlt's destination factories); entry points proper
  would need a reinstall after every change and hide the list from a reader.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import threading
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeAlias, TypeVar, runtime_checkable

from core.items import ItemRef

if TYPE_CHECKING:
    from pydantic import BaseModel

    from core.mailselection import FolderPlan

__all__ = ["Source", "Sink", "Account", "ChecksUsers", "PerProcess",
           "FetchesMessages", "AppendsMessages", "Appended", "ListsMailFolders", "MakesMailFolders", "CountsMail",
           "SharesFiles",
           "ProbesUsers", "ProbesOnce", "ProbeMemo", "ComparesWithListing", "PublishesTogether", "ListsCalendars",
           "ChecksCalendars",
           "Role", "ROLES", "System", "SYSTEMS", "registered", "models", "system_of", "UnknownSystem"]

T = TypeVar("T")


class Source(Protocol):
    """Where items come from. Raises ItemError for one item, TransientError to be retried."""

    name: str

    def check(self, folders: list[str]) -> list[str]:
        """Problems that must stop the department before anything moves (all of them)."""

    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every item of one user, with a version that changes when the item changes.

        `owner` is the user's source login, `folder` their folder under the source's root (for
        mailbox sources, the mailbox to open: usually the login itself)."""

    def extract(self, folder: str, location: str, dst: Path, key: str | None = None) -> tuple[int, float | None]:
        """Stream one item's bytes into the local file `dst`; returns (size, mtime or None).

        `location` is the ItemRef's location and `key` its key (mailbox sources need the key)."""


class Sink(Protocol):
    """Where items land. Writes are create-only and atomic; reruns never duplicate."""

    def check(self, owners: list[str]) -> list[str]:
        """Problems that must stop the department before anything moves (all of them)."""

    def digest(self, src: Path) -> str:
        """What `find` and `verify` compare: sha256 of the bytes for files and mail; for events and
        contacts, a digest of the fields a server must keep (servers rewrite the text)."""

    def find(self, owner: str, rel: str, digest: str, meta: dict[str, Any] | None = None) -> str | None:
        """The reference of `owner`/`rel` if it already holds exactly this content."""

    def put(self, owner: str, rel: str, src: Path, mtime: float | None = None, meta: dict[str, Any] | None = None,
            digest: str | None = None) -> str:
        """Write the local file `src` as `owner`/`rel`; returns the target reference.

        `digest` is what `digest(src)` gives, the value `find` was just asked with: a sink that
        stores a checksum beside the bytes (Nextcloud) writes exactly this one. The load step always
        passes it; None (a caller that has none) makes the sink compute it where it needs one."""

    def verify(self, ref: str, digest: str) -> str | None:
        """None when the target holds exactly this content, else what is wrong."""

    def remove(self, ref: str) -> None:
        """Delete an item at the target (only for delete_at_target)."""


@dataclass(frozen=True)
class Account:
    """What a system says about one user's account, mailbox, drive or folder there.

    `exists` is None when it could not tell (the server out of reach, not allowed to look): that
    concerns everyone and the department check says so, so no user is blamed for it. `email` and
    `display_name` are what the system itself holds, where it tells them, to be compared with the
    other side's; `why` says why an account does not exist or cannot be opened (never a secret)."""

    exists: bool | None
    email: str | None = None
    display_name: str | None = None
    why: str | None = None


@runtime_checkable
class ChecksUsers(Protocol):
    """An optional ability of a source or a sink: say, before anything moves, whether each user's
    account exists there and what it is called (the identity check of flows/identity.py)."""

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """Each name's Account (sources: the user's folder, drive or mailbox there; sinks: the
        target login). Batched: one connection for thousands of users."""


# ------------------------------------------------------------------ optional abilities
@runtime_checkable
class FetchesMessages(Protocol):
    """A source that reads many messages of one mailbox at once (IMAP: batched UID FETCH)."""

    def fetch_messages(self, mailbox: str, refs: list[ItemRef]) -> Iterator[tuple[ItemRef, bytes | None]]:
        """(ref, bytes) for each of `refs`, grouped by folder; (ref, None) for a message gone since."""


class Appended(Protocol):
    """What `AppendsMessages.append_stream` did with one message: `ref` and `digest`, or `error`."""

    @property
    def key(self) -> str: ...
    @property
    def ref(self) -> str | None: ...
    @property
    def digest(self) -> str | None: ...
    @property
    def error(self) -> Exception | None: ...


@runtime_checkable
class AppendsMessages(Protocol):
    """A sink that appends many messages of one owner at once and reads them back together
    (IMAP: MULTIAPPEND per folder, one UID FETCH per folder and batch to verify)."""

    def append_stream(self, owner: str, messages: Iterable[tuple[str, str, dict[str, Any] | None, bytes | None]],
                      *, taken: Callable[[str, list[str]], set[str]] | None = None) -> Iterator[Appended]:
        """Append (key, location, meta, bytes or None) as they come; one Appended per message.
        `taken(key, refs)` names the target copies other items already own (never reused)."""

    def verify_many(self, checks: list[tuple[str, str]]) -> dict[str, str | None]:
        """`verify` for many (reference, digest) at once: {reference: None or what is wrong}."""


@runtime_checkable
class ListsMailFolders(Protocol):
    """A source that lists a mailbox's folders itself, empty ones and subscriptions included, so
    that the target gets the same tree (imapsync does the same)."""

    def mail_tree(self, owner: str, folder: str) -> list[FolderPlan]:
        """Every folder of the mailbox, with its special use and whether it is subscribed."""


@runtime_checkable
class MakesMailFolders(Protocol):
    """A mail sink that creates a mailbox's folders ahead of its messages, empty ones too (imapsync
    does the same), so that the target's tree matches the source's."""

    def make_folders(self, owner: str, folders: Iterable[tuple[str, dict[str, Any], bool]]) -> list[str]:
        """Create the folders (location, meta, whether to subscribe it); the server's names of those made."""


@runtime_checkable
class CountsMail(Protocol):
    """A source that counts a mailbox's messages and bytes per folder without reading one (the
    pre-run check's mail volume)."""

    def mail_volume(self, owner: str, folder: str) -> list[dict[str, Any]]:
        """[{folder, messages, bytes}] as the server counts them."""


@runtime_checkable
class SharesFiles(Protocol):
    """A sink with a share API that umstieg drives (Nextcloud's OCS shares)."""

    def share(self, owner: str, rel: str, with_kind: str, with_name: str, rights: str, folder: bool = False) -> str:
        """Share `owner`/`rel` with a user or group (`with_kind`); returns the target's share reference."""


@runtime_checkable
class ProbesUsers(Protocol):
    """A sink that can tell, before anything moves, which target accounts cannot take items (missing,
    refusing the login, full): only those users wait."""

    def user_problems(self, owners: list[str]) -> dict[str, str]:
        """{target login: why} for the logins that cannot take items now."""


@runtime_checkable
class ProbesOnce(Protocol):
    """A source or sink whose questions before a run (`check`, `user_problems`, `accounts`) share
    their answers while `probing()` is open: each user's account is asked once per system, not once
    per question (a login-password Nextcloud spends ~0.65 s on each; thousands of users)."""

    def probing(self) -> contextlib.AbstractContextManager[None]:
        """Keep every probe's answer until the outermost `probing()` closes (then forget them all)."""


class ProbeMemo:
    """`ProbesOnce` for a source or sink: `_once(key, ask)` asks once per key while `probing()` is
    open and gives the same answer (or raises the same failure) to every later question; outside
    it, it simply asks. Why a scope and not a cache with an age: an answer must not outlive the
    check it was asked for (an operator raises a quota and runs again a minute later), and the
    instance is shared by the whole process (PerProcess), a dashboard included."""

    _probe_lock = threading.Lock()

    @contextlib.contextmanager
    def probing(self) -> Iterator[None]:
        with self._probe_lock:
            depth, memo = self.__dict__.get("_probe_scope", (0, {}))
            self.__dict__["_probe_scope"] = (depth + 1, memo)
        try:
            yield
        finally:
            with self._probe_lock:
                depth, memo = self.__dict__["_probe_scope"]
                if depth == 1:
                    del self.__dict__["_probe_scope"]
                else:
                    self.__dict__["_probe_scope"] = (depth - 1, memo)

    def _once(self, key: Any, ask: Callable[[], T], keep: Callable[[T], bool] | None = None) -> T:
        """`ask()`, or the answer it gave for `key` before in this scope; an answer `keep` refuses (a
        server busy for a moment) is not kept, so that asking again asks the server."""
        with self._probe_lock:
            scope = self.__dict__.get("_probe_scope")
            memo = scope[1] if scope is not None else None
            known = memo.get(key) if memo is not None else None
        if known is not None:
            answered, kept = known
            if answered:
                return typing.cast(T, kept)
            raise kept
        try:
            value = ask()
        except Exception as exc:
            if memo is not None:
                with self._probe_lock:
                    memo[key] = (False, exc)
            raise
        if memo is not None and (keep is None or keep(value)):
            with self._probe_lock:
                memo[key] = (True, value)
        return value


@runtime_checkable
class ComparesWithListing(Protocol):
    """A source whose `extract` compares what it opens with what discovery listed (`listed`: the
    item's meta), so that a file swapped for a link or another file since is not read."""

    #: declared by the class (True); isinstance checks that the attribute is there
    compares_with_listing: bool

    def extract(self, folder: str, location: str, dst: Path, key: str | None = None,
                listed: dict[str, Any] | None = None) -> tuple[int, float | None]:
        """As `Source.extract`, refusing a file that is not the one listed."""


@runtime_checkable
class PublishesTogether(Protocol):
    """A target that makes many files durable together, one flush for a window of files instead
    of one per file (a local disk: one flush per small file was a quarter of its time).
    `put_later` writes a file under a temporary name only and returns the reference it will have;
    `publish` makes every file put so far durable, then gives each its real name (durably too),
    and returns {reference: why} for those it could not. Until `publish`, nothing is under a real
    name; a process killed before it leaves only temporary files, which the next put overwrites."""

    def put_later(self, owner: str, rel: str, src: Path, mtime: float | None = None,
                  meta: dict[str, Any] | None = None, digest: str | None = None) -> str:
        """As `Sink.put`, the file left under its temporary name until `publish`."""

    def publish(self) -> dict[str, str]:
        """Make the files put since the last call durable under their real names; {ref: problem}
        of those that could not be (they are not under their real names)."""


@runtime_checkable
class ListsCalendars(Protocol):
    """A source that names a user's calendars without listing every event (the pre-run check of
    how many calendars the target must make)."""

    def calendars(self, owner: str, folder: str) -> set[str]:
        """The names of the user's calendars (what discover gives their events as location)."""


@runtime_checkable
class ChecksCalendars(Protocol):
    """A calendar sink that judges, before anything moves, the calendars a run would make against
    the server's limits (Nextcloud: calendars per account, new calendars per hour)."""

    def check_calendars(self, planned: dict[str, set[str]]) -> list[str]:
        """Problems with `planned` (target login -> names of the source calendars its items are in)."""


class PerProcess(Generic[T]):
    """A module's `source_for` / `sink_for`: one instance per configuration and process, made on
    first use and shared by every thread (chunk) of the process, so that they share one connection
    pool and one cache. Keyed by the process id as well: a forked worker makes its own. With
    `close`, that method of every instance is called when the process exits."""

    def __init__(self, make: Callable[[Any], T], close: str | None = None,
                 key: Callable[[Any], str] = lambda config: config.model_dump_json()) -> None:
        self._make, self._close, self._key = make, close, key
        self._made: dict[tuple[int, str], T] = {}
        self._lock = threading.Lock()
        if close is not None:
            atexit.register(self.close_all)

    def __call__(self, config: Any) -> T:
        key = (os.getpid(), self._key(config))
        with self._lock:
            made = self._made.get(key)
            if made is None:
                made = self._made[key] = self._make(config)
            return made

    def close_all(self) -> None:
        if self._close is None:
            return
        with self._lock:
            made, self._made = list(self._made.values()), {}
        for instance in made:
            getattr(instance, self._close)()


# ------------------------------------------------------------------ the registry
#: What a system is in a department file: a source, or the department field a target can fill.
Role = Literal["source", "target", "mail_target", "calendar_target", "contacts_target", "archive"]
ROLES: tuple[Role, ...] = typing.get_args(Role)


#: A configuration model's class (a module-level name: inside System, `type` is the field).
ConfigModel: TypeAlias = "type[BaseModel]"


class UnknownSystem(LookupError):
    """A configuration no registered system owns (a programming error: every model is registered)."""


@dataclass(frozen=True)
class System:
    """One system as department files name it, and where its parts are ("module:attribute")."""

    type: str                   # the `type:` of its block in a department file
    role: Role
    config: str                 # its pydantic model, in a light module (no client library imported)
    factory: str                # model -> the Source or Sink (a module's `source_for` / `sink_for`, or a class)
    files: bool = False         # a source whose items are files: they land in `target`, below `target_folder`

    @property
    def is_source(self) -> bool:
        return self.role == "source"

    def model(self) -> ConfigModel:
        """The configuration model (imports its light module only)."""
        model: ConfigModel = _load(self.config)
        declared = getattr(model, "model_fields", {}).get("type")
        if declared is None or declared.default != self.type:
            raise UnknownSystem(f"{self.config} is registered as type {self.type!r} but its `type` field "
                                f"says {getattr(declared, 'default', None)!r}")
        return model

    def make(self, config: BaseModel) -> Any:
        """The Source or Sink for `config` (imports the system's code, and its client library, now)."""
        return _load(self.factory)(config)


#: Every system umstieg knows, in the order department files list their `type`s in messages. A new
#: system is one line here (see docs/writing-a-source-or-sink.md).
SYSTEMS: tuple[System, ...] = (
    System("folder", "source", "sources.fileshare_config:FolderSource", "sources.fileshare:FolderShare", files=True),
    System("smb", "source", "sources.smb_config:SmbSource", "sources.smb:source_for", files=True),
    System("s3", "source", "sources.s3_config:S3Source", "sources.s3:source_for", files=True),
    System("onedrive", "source", "sources.onedrive_config:OneDriveSource", "sources.onedrive:source_for", files=True),
    System("sharepoint", "source", "sources.onedrive_config:SharePointSource", "sources.onedrive:source_for",
           files=True),
    System("m365", "source", "sources.m365_config:M365Source", "sources.m365:source_for"),
    System("ews", "source", "sources.ews_config:EwsSource", "sources.ews:source_for"),
    System("imap", "source", "sources.imap_config:ImapSource", "sources.imap:source_for"),
    System("export", "source", "sources.export_config:ExportSource", "sources.export:source_for"),
    System("localdir", "target", "sinks.localdir_config:LocalDirTarget", "sinks.localdir:LocalDir"),
    System("nextcloud", "target", "sinks.webdav_config:NextcloudTarget", "sinks.webdav:sink_for"),
    System("oxdrive", "target", "sinks.webdav_config:OXDriveTarget", "sinks.webdav:sink_for"),
    System("imap", "mail_target", "sinks.imap_config:ImapTarget", "sinks.imap:sink_for"),
    System("caldav", "calendar_target", "sinks.groupware_config:CalDavTarget", "sinks.groupware:sink_for"),
    System("carddav", "contacts_target", "sinks.groupware_config:CardDavTarget", "sinks.groupware:sink_for"),
    System("s3", "archive", "sinks.s3_config:S3ArchiveTarget", "sinks.s3:sink_for"),
)


def registered(role: Role | None = None, *, sources: bool | None = None) -> tuple[System, ...]:
    """The registered systems (of one `role`; only sources, or only sinks, with `sources`), in
    registry order: what the conformance suites run over."""
    return tuple(s for s in SYSTEMS if (role is None or s.role == role)
                 and (sources is None or s.is_source == sources))


def models(role: Role) -> tuple[ConfigModel, ...]:
    """The configuration models of the systems that can play `role` (imports light modules only)."""
    return tuple(s.model() for s in registered(role))


def system_of(config: BaseModel) -> System:
    """The registered system whose model `config` is an instance of."""
    found = _by_model().get(type(config))
    if found is None:
        raise UnknownSystem(f"no registered system has the configuration model {type(config).__qualname__}")
    return found


@cache
def _by_model() -> dict[ConfigModel, System]:
    return {s.model(): s for s in SYSTEMS}


def _load(target: str) -> Any:
    """The attribute named by "module:attribute", its module imported now."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
