"""Mailboxes on any IMAP server, read without changing them.

A mailbox is opened with a master user (Dovecot's `<user>*<master>`), the user's own password,
or an OAuth access token (XOAUTH2: Microsoft 365 and Gmail): handed in per mailbox (`oauth_tokens`),
or fetched by the migration itself as an application (`oauth`, client credentials, renewed before
it expires: `clients.imap.AppTokens`). Reading never changes the source:
folders are opened with EXAMINE (read-only), never SELECT, and bodies are fetched with
BODY.PEEK[], so no \\Seen flag is set by the migration.

Every message is one item:
- key `<owner>/<folder>/<UIDVALIDITY>/<UID>`: when a server renumbers a folder (a new UIDVALIDITY),
  every message of it gets a new key, is listed again, and the target's dedupe (Message-ID plus
  content hash) keeps it from arriving twice;
- version `<UIDVALIDITY>:<UID>:<hash of the flags>`, so a flag change is a delta;
- location: the folder's name, decoded from modified UTF-7, with "/" between levels whatever the
  server's hierarchy delimiter;
- meta: flags (without \\Recent, which no client can set), the internal date (ISO 8601 with its
  offset), the folder's special use (`\\Sent`, `\\Trash`, … or None), Message-ID and size.

With a department's mail selection (core.mailselection), `discover` opens only the folders it
takes and asks the server only for the messages it takes (SEARCH SINCE/BEFORE/LARGER/SMALLER), so
listing stays proportional to what is selected. `mail_tree` lists every folder with its
subscription (the target makes empty folders too); `mail_volume` counts messages and bytes per
folder for `assess` without reading one. A `bandwidth` in the configuration caps the bytes per
second this process reads from the host (`Bandwidth`, shared by its threads).

`extract` streams one message's bytes into a file in 1 MiB partial fetches (`BODY.PEEK[]<o.n>`),
so a large message is never held whole in memory. `fetch_messages` reads many messages with one
command per batch, for the mail copy fast path (`sinks.imap.ImapSink.append_stream`).

Connections are pooled: one per (mailbox, thread), reused by every call of that thread; connecting,
logging in and the pool are `clients.imap`'s, shared with the IMAP target.
A message the server cannot read (Dovecot, for a damaged or unreadable file, ends the connection
on any FETCH that reads it: "Disconnected: FETCH failed") does not hold back its folder: a listing
FETCH during which the connection ends is asked again on a new connection in halves, down to the
message to blame, which is listed with version `<UIDVALIDITY>:<UID>:unreadable` and its reason
in meta (`unreadable`, `error`) while every other message is listed as usual; extracting it ends
the connection again and is an `UnreadableMessage` (reason `unreadable_message`).

Failures are decided here: connection failures and timeouts are `TransientError`; a message that
vanished (expunged) or a folder whose UIDVALIDITY changed since discovery is an `ItemError`; a
login refused during a run stops that user (`UserStopped`); an identity platform refusing the
application is a `ConfigError` (`TokenRefused`), one that cannot be reached or answers 5xx a
`TransientError`; `check` names every refused account, never its secret.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import imapclient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from core.plugins import PerProcess
from sources.imap_config import ImapSource
from core.errors import ConfigError, ItemError, TransientError, UserStopped
from clients.imap import (MAX_OPEN_PER_THREAD, Conn, ImapAccounts, LoginRefused, TlsFailed, TokenRefused, list_folders,
                       server_words as _server_words, text as _text)
from core.items import ItemRef, Kind
from core.mailselection import FolderPlan, MailSelection

__all__ = ["ImapMailboxes", "FolderInfo", "Bandwidth", "bandwidth_of", "source_for", "SPECIAL_USES",
           "UnreadableMessage"]

log = logging.getLogger("umstieg.sources.imap")

#: Bytes of a message fetched per partial FETCH in `extract`.
PART = 1 << 20
#: Messages whose metadata one UID FETCH of discovery asks for.
LIST_BATCH = 500
#: The special-use attributes of RFC 6154 that say where a folder belongs.
SPECIAL_USES = ("\\Sent", "\\Trash", "\\Junk", "\\Drafts", "\\Archive", "\\All", "\\Flagged")

#: What discovery asks the server of every message.
_LISTED = ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)]"]

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(.*?)\s*$", re.IGNORECASE | re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class FolderInfo:
    """One folder of a mailbox as LIST shows it."""

    name: str                 # the server's name, decoded ("Gesendete Elemente/2024" with delimiter "/")
    location: str             # levels joined by "/" (what ItemRef.location holds)
    delimiter: str | None
    special_use: str | None
    attributes: tuple[str, ...]


def _flags_hash(flags: Iterable[str]) -> str:
    return hashlib.sha1(" ".join(sorted(flags)).encode()).hexdigest()[:12]


def message_id_of(header_block: bytes | None) -> str | None:
    """The Message-ID from a `BODY[HEADER.FIELDS (MESSAGE-ID)]` answer (unfolded), or None."""
    if not header_block:
        return None
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", header_block)
    m = _MESSAGE_ID.search(unfolded.split(b"\r\n\r\n")[0].strip())
    if not m:
        return None
    value = m.group(1).split(b"\r\n")[0].strip()
    return value.decode("utf-8", "replace") or None


def subject_of(header_block: bytes | None) -> str | None:
    """The decoded Subject from a header block (for reports: which message it was), or None."""
    if not header_block:
        return None
    import email.parser
    import email.policy
    try:
        value = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(header_block)["Subject"]
        return " ".join(str(value).split())[:200] or None if value is not None else None
    except Exception:  # noqa: BLE001 - a header the parser cannot take: the report shows the Message-ID
        return None


class UnreadableMessage(ItemError):
    """A message the server cannot read: it ends the connection whenever the message is fetched."""

    reason = "unreadable_message"


class _Dropped(Exception):
    """The server ended the connection during a FETCH (not a timeout: a slow answer blames no
    message). Raised inside a step, so that `_call` passes it on instead of making it transient."""


def _fetching(conn: "_Conn", uids: list[int], parts: list[str]) -> dict:
    """UID FETCH `parts` of `uids`; a connection the server ends meanwhile is `_Dropped`."""
    try:
        return conn.client.fetch(uids, parts)
    except socket.timeout:
        raise
    except (IMAPClientAbortError, OSError) as exc:
        raise _Dropped(_server_words(exc)) from None


class _Conn(Conn):
    """One logged-in connection and the folder it has open (always read-only here)."""

    def examine(self, name: str) -> dict:
        info = self.client.select_folder(name, readonly=True)
        self.folder, self.uidvalidity = name, int(info.get(b"UIDVALIDITY", 0))
        return info


@dataclass
class ImapMailboxes(ImapAccounts):
    """The IMAP source: one mailbox per user, every folder of it."""

    config: ImapSource
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _all: list = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _folders: dict = field(default_factory=dict, repr=False)     # mailbox -> {location: FolderInfo}

    @property
    def name(self) -> str:
        return self.config.name

    # ------------------------------------------------------------------ connections
    def connect(self, mailbox: str) -> imapclient.IMAPClient:
        """A new logged-in connection to `mailbox` (the caller closes it)."""
        return self._connect(mailbox, whose=f" for mailbox {mailbox!r}",
                             no_credentials=f"source {self.name}: no credentials for mailbox {mailbox!r}: configure "
                                            "master_user and password, or oauth, or add it to passwords or "
                                            "oauth_tokens")

    def _wrap(self, client: imapclient.IMAPClient) -> _Conn:
        return _Conn(client)

    def _open_limit(self) -> int:
        return MAX_OPEN_PER_THREAD                  # this module's name, so that it can be lowered

    def _login_refused(self, mailbox: str, exc: LoginRefused) -> Exception:
        if exc.code == "AUTHENTICATIONFAILED" and self.login_name(mailbox) != mailbox:
            return exc                                 # the master user's own credentials: every user
        # the login was refused mid-run (a changed password, a disabled account): this user stops
        return UserStopped(str(exc), mailbox)

    def _refused(self, mailbox: str, what: str, exc: IMAPClientError) -> Exception:
        # a NO or BAD for this command: this item only
        return ItemError(f"{self._where()}: {what} for {mailbox!r} was refused: {_server_words(exc)}")

    def _throttle(self, n: int) -> None:
        """Wait as long as the configured bandwidth asks after `n` bytes were read from this host."""
        if self.config.bandwidth:
            bandwidth_of(self.config.host, self.config.port, self.config.bandwidth).take(n)

    # ------------------------------------------------------------------ folders
    def folders(self, mailbox: str, refresh: bool = False) -> dict[str, FolderInfo]:
        """The selectable folders of a mailbox by location, with their special use."""
        with self._lock:
            known = self._folders.get(mailbox)
        if known is not None and not refresh:
            return known
        found = self._call(mailbox, "LIST", _list_folders)
        with self._lock:
            self._folders[mailbox] = found
        return found

    def _folder(self, mailbox: str, location: str) -> FolderInfo:
        folder = self.folders(mailbox).get(location) or self.folders(mailbox, refresh=True).get(location)
        if folder is None:
            raise ItemError(f"folder {location!r} no longer exists in mailbox {mailbox!r}")
        return folder

    # ------------------------------------------------------------------ the Source shape
    def check(self, folders: list[str]) -> list[str]:
        """Reachability, TLS and every mailbox's login, before anything moves."""
        problems: list[str] = []
        for mailbox in folders:
            try:
                self.try_login(mailbox)               # the identity check's LOGIN too, inside probing()
            except (TlsFailed, TokenRefused, TransientError) as exc:
                # the server or the identity platform itself: once is enough
                return problems + [f"source {self.name}: {exc}"]
            except ConfigError as exc:
                problems.append(f"source {self.name}: {exc}")
                continue
        return problems

    #: `discover` takes a `selection` (core.mailselection) and asks the server only for what it selects
    narrows_mail = True

    def discover(self, owner: str, folder: str, selection: MailSelection | None = None) -> Iterator[ItemRef]:
        """Every message of every selectable folder of mailbox `folder`, with its metadata; with a
        `selection`, folders it leaves out are not opened and the server searches by date and size."""
        mailbox = folder
        for info in self.folders(mailbox, refresh=True).values():
            if selection is not None and (selection.options.folders_only or not selection.folder_taken(info.location)):
                continue
            yield from self._discover_folder(owner, mailbox, info, _criteria(selection))

    def mail_tree(self, owner: str, folder: str) -> list[FolderPlan]:
        """Every selectable folder of the mailbox, with its special use and whether it is subscribed."""
        mailbox = folder
        found = self.folders(mailbox, refresh=True)
        subscribed = set(self._call(mailbox, "LSUB", lambda conn: [name for _, _, name in
                                                                   conn.client.list_sub_folders()]))
        return [FolderPlan(info.location, info.special_use, info.name in subscribed or info.name.upper() == "INBOX")
                for info in found.values()]

    def mail_volume(self, owner: str, folder: str) -> list[dict]:
        """Messages and bytes of every folder as the server counts them (STATUS, and RFC822.SIZE
        where the server has no STATUS=SIZE): no message is read. [{folder, messages, bytes}]"""
        mailbox = folder
        out = []
        for info in self.folders(mailbox, refresh=True).values():
            def count(conn: _Conn, info=info) -> tuple[int, int]:
                sized = conn.client.has_capability("STATUS=SIZE")
                status = conn.client.folder_status(info.name, ["MESSAGES", "SIZE"] if sized else ["MESSAGES"])
                messages = int(status.get(b"MESSAGES", 0))
                if sized or not messages:
                    return messages, int(status.get(b"SIZE", 0))
                conn.examine(info.name)
                sizes = conn.client.fetch(conn.client.search("ALL"), ["RFC822.SIZE"])
                return len(sizes), sum(int(d.get(b"RFC822.SIZE", 0)) for d in sizes.values())
            messages, size = self._call(mailbox, f"counting folder {info.location!r}", count)
            out.append({"folder": info.location, "messages": messages, "bytes": size})
        return out

    def _discover_folder(self, owner: str, mailbox: str, info: FolderInfo,
                         criteria: list | None = None) -> Iterator[ItemRef]:
        def opened(conn: _Conn) -> tuple[int, list[int]]:
            selected = self._examine(conn, mailbox, info)
            if not selected.get(b"EXISTS"):
                return conn.uidvalidity or 0, []
            return conn.uidvalidity or 0, sorted(conn.client.search(criteria or "ALL"))

        uidvalidity, uids = self._call(mailbox, f"listing folder {info.location!r}", opened)
        refs: list[ItemRef] = []
        for start in range(0, len(uids), LIST_BATCH):
            refs += self._listed(owner, mailbox, info, uidvalidity, uids[start:start + LIST_BATCH])
        yield from refs

    def _examine(self, conn: _Conn, mailbox: str, info: FolderInfo) -> dict:
        try:
            return conn.examine(info.name)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            # not an empty folder: skipping it would mark its messages as deleted at the source
            raise TransientError(f"{self._where()}: cannot open folder {info.location!r} of {mailbox!r}: "
                                 f"{_server_words(exc)}") from None

    def _listed(self, owner: str, mailbox: str, info: FolderInfo, uidvalidity: int, uids: list[int],
                suspect: bool = False) -> list[ItemRef]:
        """The items of `uids` (one folder, as listed under `uidvalidity`).

        A FETCH during which the server ends the connection is asked again on a new connection, in
        halves, down to the messages to blame: one that ends it alone after it ended it with others
        (`suspect`), or alone twice, is listed as unreadable; the others are listed as usual. One
        unreadable message among n costs about 2·log2(n) FETCHes and half as many new connections.
        The server out of reach meanwhile is a TransientError as ever (connecting again fails)."""
        def fetch(conn: _Conn) -> dict:
            if conn.folder != info.name:                # a new connection, or another folder opened since
                self._examine(conn, mailbox, info)
            if conn.uidvalidity != uidvalidity:
                raise TransientError(f"{self._where()}: folder {info.location!r} of {mailbox!r} was renumbered "
                                     "while it was listed: discover again")
            return _fetching(conn, uids, _LISTED)

        try:
            answer = self._call(mailbox, f"listing folder {info.location!r}", fetch)
        except _Dropped as exc:
            self._drop(mailbox)
            if len(uids) > 1:
                half = len(uids) // 2
                return (self._listed(owner, mailbox, info, uidvalidity, uids[:half], suspect=True)
                        + self._listed(owner, mailbox, info, uidvalidity, uids[half:], suspect=True))
            if not suspect:
                return self._listed(owner, mailbox, info, uidvalidity, uids, suspect=True)
            return [self._unreadable(owner, mailbox, info, uidvalidity, uids[0], str(exc))]
        refs = []
        for uid in sorted(answer):
            data = answer[uid]
            flags = sorted(_text(f) for f in data.get(b"FLAGS", ()) if _text(f) != "\\Recent")
            when = data.get(b"INTERNALDATE")
            header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER.FIELDS")), None)
            size = int(data.get(b"RFC822.SIZE", 0))
            refs.append(ItemRef(
                source=self.name, key=f"{owner}/{info.location}/{uidvalidity}/{uid}", kind=Kind.MESSAGE,
                owner=owner, location=info.location, version=f"{uidvalidity}:{uid}:{_flags_hash(flags)}",
                size=size,
                meta={"flags": flags, "internaldate": when.isoformat() if when else None,
                      "special_use": info.special_use, "message_id": message_id_of(header), "size": size,
                      "subject": subject_of(header)}))
        return refs

    def _unreadable(self, owner: str, mailbox: str, info: FolderInfo, uidvalidity: int, uid: int,
                    said: str) -> ItemRef:
        """The item of a message the server cannot list: under its own key, so that it moves like any
        other once the server can read it (its version then changes), and failing until then."""
        error = (f"{self._where()} ends the connection whenever message {uid} of folder {info.location!r} "
                 f"({mailbox}) is read ({said}): the message is damaged or unreadable on the server")
        log.warning("%s", error)
        return ItemRef(source=self.name, key=f"{owner}/{info.location}/{uidvalidity}/{uid}", kind=Kind.MESSAGE,
                       owner=owner, location=info.location, version=f"{uidvalidity}:{uid}:unreadable", size=None,
                       meta={"flags": [], "internaldate": None, "special_use": info.special_use, "message_id": None,
                             "size": None, "subject": None, "unreadable": UnreadableMessage.reason,
                             "error": error})

    def _open(self, conn: _Conn, mailbox: str, location: str, uidvalidity: int) -> None:
        info = self._folder(mailbox, location)
        if conn.folder != info.name:
            try:
                conn.examine(info.name)
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                raise ItemError(f"cannot open folder {location!r} of {mailbox!r}: {_server_words(exc)}") from None
        if conn.uidvalidity != uidvalidity:
            raise ItemError(f"folder {location!r} of {mailbox!r} was renumbered (UIDVALIDITY {uidvalidity} -> "
                            f"{conn.uidvalidity}) since it was listed: discover again")

    def extract(self, folder: str, location: str, dst: Path, key: str | None = None) -> tuple[int, None]:
        """Stream one message's bytes (BODY.PEEK[]) into `dst`; returns (size, None)."""
        uidvalidity, uid = _uid_of(key)
        mailbox = folder

        def fetch(conn: _Conn) -> int:
            self._open(conn, mailbox, location, uidvalidity)
            dst.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            with open(dst, "wb") as out:
                while True:
                    answer = _fetching(conn, [uid], [f"BODY.PEEK[]<{size}.{PART}>"]).get(uid)
                    part = None if answer is None else next(
                        (v for k, v in answer.items() if k.startswith(b"BODY[]")), None)
                    if part is None:
                        if size == 0:
                            raise ItemError(f"message {uid} of folder {location!r} ({mailbox}) vanished at the "
                                            "source (expunged)")
                        break
                    out.write(part)
                    size += len(part)
                    self._throttle(len(part))
                    if len(part) < PART:
                        break
            return size

        what = f"fetching message {uid} of {location!r}"
        try:
            try:
                return self._call(mailbox, what, fetch), None
            except _Dropped:
                # the server ended the connection: the network's doing, or this message's; a new
                # connection tells (a message the server cannot read ends it again)
                self._drop(mailbox)
            try:
                return self._call(mailbox, what, fetch), None
            except _Dropped as exc:
                self._drop(mailbox)
                raise UnreadableMessage(
                    f"{self._where()} ends the connection whenever message {uid} of folder {location!r} "
                    f"({mailbox}) is read ({exc}), twice on new connections: the message is damaged or "
                    "unreadable on the server") from None
        except ItemError:
            dst.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ fast path
    def fetch_messages(self, mailbox: str, refs: list[ItemRef], batch_bytes: int = 8 << 20,
                       batch_count: int = 100) -> Iterator[tuple[ItemRef, bytes | None]]:
        """The bytes of many messages of one mailbox, one UID FETCH per batch (read-only, PEEK).

        Yields (ref, bytes) in the order of `refs` grouped by folder, or (ref, None) for a message that
        vanished; a message discovery found unreadable is not fetched (nor yielded). Memory is
        bounded by `batch_bytes` (a message larger than it is fetched alone)."""
        by_folder: dict[str, list[ItemRef]] = {}
        for ref in refs:
            if (ref.meta or {}).get("unreadable"):
                continue            # it would end the batch's connection: left to `extract`, which says why
            by_folder.setdefault(ref.location, []).append(ref)
        try:
            for location, items in by_folder.items():
                batch: list[ItemRef] = []
                size = 0
                for ref in items:
                    if batch and (size + (ref.size or 0) > batch_bytes or len(batch) >= batch_count):
                        yield from self._fetch_batch(mailbox, location, batch)
                        batch, size = [], 0
                    batch.append(ref)
                    size += ref.size or 0
                if batch:
                    yield from self._fetch_batch(mailbox, location, batch)
        finally:
            # this generator often runs in a short-lived thread (a copy's feeder): its connection
            # would otherwise stay open until the source closes, and servers limit connections per user
            self._drop(mailbox)

    def _fetch_batch(self, mailbox: str, location: str, batch: list[ItemRef]) -> list[tuple[ItemRef, bytes | None]]:
        uidvalidity = _uid_of(batch[0].key)[0]
        uids = {_uid_of(r.key)[1]: r for r in batch}

        def fetch(conn: _Conn) -> dict:
            self._open(conn, mailbox, location, uidvalidity)
            return conn.client.fetch(list(uids), ["BODY.PEEK[]"])

        answer = self._call(mailbox, f"fetching messages of {location!r}", fetch)
        self._throttle(sum(len(d.get(b"BODY[]") or b"") for d in answer.values()))
        out = []
        for uid, ref in uids.items():
            data = answer.get(uid)
            body = None if data is None else data.get(b"BODY[]")
            out.append((ref, body))
        return out


def _uid_of(key: str | None) -> tuple[int, int]:
    try:
        _, uidvalidity, uid = (key or "").rsplit("/", 2)
        return int(uidvalidity), int(uid)
    except ValueError:
        raise ItemError(f"{key!r} is not the key of an IMAP message (<owner>/<folder>/<uidvalidity>/<uid>)") from None


def _criteria(selection: MailSelection | None) -> list | None:
    """The SEARCH that asks the server for what `selection` takes by date and size: a superset (SEARCH
    dates are whole days in the server's time zone), narrowed exactly by the selection afterwards."""
    if selection is None:
        return None
    o, criteria = selection.options, []
    if selection.since is not None:
        criteria += ["SINCE", (selection.since - timedelta(days=1)).date()]
    if selection.before is not None:
        criteria += ["BEFORE", (selection.before + timedelta(days=2)).date()]
    if o.min_size:
        criteria += ["LARGER", str(int(o.min_size) - 1)]
    if o.max_size is not None:
        criteria += ["SMALLER", str(int(o.max_size) + 1)]
    return criteria or None


class Bandwidth:
    """A byte budget per second for one source host, shared by every thread of the process: each
    read reserves its bytes' share of time after what was reserved before it, and waits for it."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)
            self._next = start + n / self.rate
        if start > now:
            time.sleep(start - now)


_BANDWIDTHS: dict[tuple[str, int, int], Bandwidth] = {}
_BANDWIDTHS_LOCK = threading.Lock()


def bandwidth_of(host: str, port: int, rate: int) -> Bandwidth:
    """This process's budget for one source host (one per host, port and rate)."""
    with _BANDWIDTHS_LOCK:
        return _BANDWIDTHS.setdefault((host, port, rate), Bandwidth(rate))


def _list_folders(conn: _Conn) -> dict[str, FolderInfo]:
    """LIST (with RETURN (SPECIAL-USE) where the server offers it) → folders by location."""
    folders: dict[str, FolderInfo] = {}
    for attributes, delimiter, name in list_folders(conn.client):
        if any(a.lower() in ("\\noselect", "\\nonexistent") for a in attributes):
            continue
        levels = name.split(delimiter) if delimiter else [name]
        location = "/".join(level.replace("/", "%2F") for level in levels)
        special = next((a for a in attributes if a.lower() in {s.lower() for s in SPECIAL_USES}), None)
        if special is not None:
            special = next(s for s in SPECIAL_USES if s.lower() == special.lower())
        folders[location] = FolderInfo(name=name, location=location, delimiter=delimiter, special_use=special,
                                       attributes=attributes)
    return folders


#: This process's source for a configuration (one connection pool shared by every chunk).
source_for = PerProcess(ImapMailboxes, close="close")
