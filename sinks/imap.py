"""Mailboxes on an IMAP server as the target: Open-Xchange's Dovecot, or any other.

The migration logs in as a master user (Dovecot's `<user>*<master>`) or with each user's own
password, and APPENDs every message with its flags (less \\Recent, which no client can set) and
its original internal date; the bytes travel unchanged. IMAP carries a message as lines ending
in CRLF (RFC 3501), so a file with bare LF or CR line ends arrives with CRLF: `digest` is the
sha256 of that CRLF form, which is exactly what the server gives back (for a message read from
an IMAP source, the bytes as they were).

Folders are mapped by `sinks.mailfolders` (special-use folders, Exchange's localised names) and
created on first use with the server's hierarchy delimiter, then subscribed. A reference (the
ledger's target_ref) is `imap://<target login>/<folder>;UIDVALIDITY=<n>;UID=<n>`, with the folder
URL-encoded; the UID comes from APPENDUID (UIDPLUS) or, without it, from a search by Message-ID.

Reruns never duplicate: `find` looks for the message by Message-ID (SEARCH HEADER), or, without
one, by size and internal date, and compares the sha256 of each candidate's BODY.PEEK[]. When the
message is there with other flags (a flag changed at the source), `find` sets them.

Identical messages of one folder each get a copy of their own (imapsync's --syncduplicates), so
that a folder's count at the target is its count at the source and no two ledger items name one
target message: `find` and `append_stream` skip a matching copy that another source message holds
(the caller's `taken`, from the ledger, and the copies one stream has handed out).

`make_folders` creates a mailbox's folders at the start of a run, empty ones too, subscribed or
not as the department says; a folder the department renamed (meta `target_folder`) lands exactly
there, without the special-folder mapping.

Connecting (TLS, login) and the pool of one connection per (account, thread) are `clients.imap`'s,
shared with the IMAP source; what a refusal means for the target is decided here.

`append_stream` is the fast path for whole mailboxes: several connections append at once while
the caller's iterator (e.g. `sources.imap.ImapMailboxes.fetch_messages`) is read in another thread.

Failures are decided here: connection failures and timeouts are `TransientError`; OVERQUOTA is
`MailboxFull` and a login refused mid-run are `UserStopped` (that user waits, the others go on); any
other refusal of one message is an `ItemError`; a refused login while checking is a problem naming
the account, never the secret.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import imapclient
from imapclient import imap_utf7
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from core.plugins import PerProcess
from sinks.imap_config import ImapTarget
from core.errors import ConfigError, FatalError, ItemError, TransientError, UserStopped
from clients.imap import (Conn, ImapAccounts, LoginRefused as _Refused, list_folders, response_code as _response_code,
                       server_words as _server_words, text as _text, tls_context as _tls_context)
from sinks.mailfolders import USES, target_levels

__all__ = ["ImapSink", "MailboxFull", "Appended", "canonical", "sink_for"]

log = logging.getLogger("umstieg.sinks.imap")

#: Candidates whose bytes `find` compares at most (the newest ones).
MAX_CANDIDATES = 20
#: References whose flags the sink remembers for `verify` (a load and its verify are close together).
MAX_REMEMBERED = 100_000
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)
_APPENDUIDS = re.compile(rb"\[APPENDUID (\d+) ([\d:,]+)\]", re.IGNORECASE)
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


class MailboxFull(UserStopped):
    """The target refused to store more for one account (NO [OVERQUOTA]): that user stops, the
    others go on."""


@dataclass(frozen=True)
class Appended:
    """What `append_stream` did with one message: `ref` and `digest`, or `error`."""

    key: str
    ref: str | None
    digest: str | None
    found: bool = False               # already at the target (nothing appended)
    error: Exception | None = None


def canonical(data: bytes) -> bytes:
    """The message as IMAP carries it: every line ending CRLF (bare CR or LF become CRLF)."""
    crlf = data.count(b"\r\n")
    if crlf == data.count(b"\n") == data.count(b"\r"):
        return data
    return _LINE_ENDS.sub(b"\r\n", data)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _message_id(data: bytes) -> str | None:
    """The Message-ID header of a message (its header block only; folded lines unfolded)."""
    end = data.find(b"\r\n\r\n")
    head = re.sub(rb"\r\n[ \t]+", b" ", data[: end if end >= 0 else 65536])
    m = _MESSAGE_ID.search(head)
    return m.group(1).strip().decode("utf-8", "replace") or None if m else None


def make_ref(owner: str, folder: str, uidvalidity: int, uid: int) -> str:
    return f"imap://{quote(owner, safe='')}/{quote(folder, safe='/')};UIDVALIDITY={uidvalidity};UID={uid}"


def parse_ref(ref: str) -> tuple[str, str, int, int]:
    """(owner, folder, uidvalidity, uid) of a reference made by `make_ref`."""
    m = re.fullmatch(r"imap://([^/]+)/(.*);UIDVALIDITY=(\d+);UID=(\d+)", ref or "")
    if not m:
        raise ItemError(f"{ref!r} is not a reference to an IMAP message")
    return unquote(m.group(1)), unquote(m.group(2)), int(m.group(3)), int(m.group(4))


class _Conn(Conn):
    """One logged-in connection and its selected folder (read-write: this is the target)."""

    def select(self, folder: str) -> int:
        """Select `folder` (unless it is already); its UIDVALIDITY (0 when the server names none)."""
        if self.folder != folder or self.uidvalidity is None:
            info = self.client.select_folder(folder)
            self.folder, self.uidvalidity = folder, int(info.get(b"UIDVALIDITY", 0))
        return self.uidvalidity


@dataclass
class _Mailbox:
    """What the sink knows of one target mailbox: its delimiter, special folders and folders."""

    delimiter: str
    announced: dict[str, str]          # use -> folder levels joined by "/"
    folders: set[str]                  # server names that exist
    lock: threading.Lock = field(default_factory=threading.Lock)
    index: dict = field(default_factory=dict)   # folder -> _FolderIndex (append_stream's dedupe)


@dataclass
class _FolderIndex:
    """The messages of one target folder by (Message-ID, size) and (size, internal date)."""

    uidvalidity: int
    by_key: dict
    hashes: dict = field(default_factory=dict)   # uid -> sha256


class ImapSink(ImapAccounts):
    """The IMAP target."""

    def __init__(self, config: ImapTarget) -> None:
        self.config = config
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all = []
        self._mailboxes: dict[str, _Mailbox] = {}
        # ref -> flags put or found, for verify (which gets only the ref); the newest MAX_REMEMBERED
        self._flags: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    # ------------------------------------------------------------------ connections
    def connect(self, owner: str) -> imapclient.IMAPClient:
        """A new logged-in connection to `owner`'s mailbox (the caller closes it)."""
        return self._connect(owner, no_credentials=f"mail target: no credentials for {owner!r}: configure "
                                                   "master_user and password, or add the account to passwords")

    def _wrap(self, client: imapclient.IMAPClient) -> _Conn:
        return _Conn(client)

    def _login_refused(self, owner: str, exc: _Refused) -> Exception:
        # user_problems should have stopped this user before
        if exc.code == "AUTHENTICATIONFAILED" and self.login_name(owner) != owner:
            return ConfigError(f"mail target: {exc}; check master_user and its password")
        return UserStopped(f"mail target: {exc}; check that the account exists", owner)

    def _refused(self, owner: str, what: str, exc: IMAPClientError) -> Exception:
        words, code = _server_words(exc), _response_code(exc)
        if code == "OVERQUOTA":                 # RFC 5530 response codes say what kind of refusal it is
            return MailboxFull(f"the mailbox of {owner!r} is full at the target ({words}): raise its quota, "
                               "then run the department again; nothing arrives twice", owner=owner)
        if code in ("UNAVAILABLE", "SERVERBUG", "INUSE", "LIMIT"):
            return TransientError(f"{self._where()}: {what} for {owner!r}: {words}")
        return ItemError(f"{self._where()}: {what} for {owner!r} was refused: {words}")

    # ------------------------------------------------------------------ folders
    def _mailbox(self, owner: str) -> _Mailbox:
        with self._lock:
            known = self._mailboxes.get(owner)
        if known is not None:
            return known
        box = self._call(owner, "LIST", _list_mailbox)
        with self._lock:
            return self._mailboxes.setdefault(owner, box)

    def target_folder(self, owner: str, rel: str, meta: dict | None = None) -> str:
        """The server's name of the folder a message of source folder `rel` lands in: where the
        department renamed the folder (meta `target_folder`, core.mailselection), exactly there."""
        box = self._mailbox(owner)
        renamed = (meta or {}).get("target_folder")
        if renamed:
            levels = [lv for lv in renamed.split("/") if lv] or ["INBOX"]
            levels = ["INBOX", *levels[1:]] if levels[0].upper() == "INBOX" else levels
        else:
            levels = target_levels(rel, (meta or {}).get("special_use"), box.announced, self.config.folder_names)
        delim = box.delimiter
        return delim.join(lv.replace(delim, "_") if delim else lv for lv in levels)

    def make_folders(self, owner: str, folders: Iterable[tuple[str, dict, bool]]) -> list[str]:
        """Create the target folders of these source folders (location, meta with `special_use` and
        maybe `target_folder`, whether to subscribe it), even empty ones, as imapsync does; returns
        the server's names of those made now. A folder that exists is left as it is."""
        made = []
        for rel, meta, subscribe in folders:
            folder = self.target_folder(owner, rel, meta)
            if folder not in self._mailbox(owner).folders:
                self._ensure_folder(owner, folder, subscribe=subscribe)
                made.append(folder)
        return made

    def _ensure_folder(self, owner: str, folder: str, subscribe: bool = True) -> None:
        box = self._mailbox(owner)
        if folder in box.folders:
            return
        with box.lock:
            if folder in box.folders:
                return
            parts = folder.split(box.delimiter) if box.delimiter else [folder]

            def create(conn: _Conn) -> None:
                for k in range(1, len(parts) + 1):
                    name = box.delimiter.join(parts[:k]) if box.delimiter else folder
                    if name in box.folders or name.upper() == "INBOX":
                        continue
                    try:
                        conn.client.create_folder(name)
                    except IMAPClientAbortError:
                        raise
                    except IMAPClientError:
                        if not conn.client.folder_exists(name):   # made meanwhile by another process: fine
                            raise
                    if subscribe:
                        conn.client.subscribe_folder(name)
                    box.folders.add(name)

            self._call(owner, f"creating folder {folder!r}", create)

    # ------------------------------------------------------------------ checks
    def check(self, owners: list[str]) -> list[str]:
        """The server is reachable (and its TLS trusted) and the master login works.

        Accounts that do not exist are not problems here: `user_problems` names them, so that a
        missing account stops that user only."""
        cfg = self.config
        for ref in [cfg.password, *cfg.passwords.values()]:
            if ref is not None:
                try:
                    ref.resolve()
                except ConfigError as exc:
                    return [f"mail target: {exc}"]
        if not owners:
            try:
                imapclient.IMAPClient(cfg.host, port=cfg.port, ssl=cfg.security == "ssl",
                                      ssl_context=_tls_context(cfg) if cfg.security == "ssl" else None,
                                      timeout=cfg.timeout).shutdown()
            except (OSError, IMAPClientError) as exc:
                return [f"mail target: {self._where()}: cannot connect ({type(exc).__name__})"]
            return []
        refused: list[str] = []
        masters = [o for o in owners if o not in cfg.passwords] if cfg.master_user else []
        for owner in masters or owners[:1]:
            try:
                self.try_login(owner)
                return []
            except _Refused as exc:                          # a ConfigError too: caught first
                if exc.code == "AUTHORIZATIONFAILED":       # the master is fine; this account is missing
                    continue
                refused.append(str(exc))
                if exc.code == "AUTHENTICATIONFAILED" or not masters:
                    break
            except (ConfigError, TransientError) as exc:
                return [f"mail target: {exc}"]
        if refused and masters:
            return [f"mail target: the master user {cfg.master_user!r} cannot log in ({refused[0]}); "
                    "check master_user and its password"]
        return []

    def user_problems(self, owners: list[str]) -> dict[str, str]:
        """Target accounts that do not exist or cannot log in, with the reason (no secret)."""
        problems: dict[str, str] = {}
        for owner in owners:
            try:
                self.try_login(owner)
            except _Refused as exc:
                problems[owner] = (f"the target account {owner!r} does not exist or cannot log in: "
                                   f"{_server_words(exc)}")
            except ConfigError as exc:
                problems[owner] = str(exc)
            except TransientError as exc:
                problems[owner] = f"the target account {owner!r} could not be checked: {exc}"
        return problems

    # ------------------------------------------------------------------ the Sink shape
    def digest(self, src: Path) -> str:
        """sha256 of the message as IMAP carries it (CRLF line ends)."""
        try:
            return _sha256(canonical(src.read_bytes()))
        except OSError as exc:
            raise ItemError(f"cannot read {src}: {exc.strerror or exc}") from exc

    def find(self, owner: str, rel: str, digest: str, meta: dict | None = None,
             taken: Callable[[list[str]], set[str]] | None = None) -> str | None:
        """The reference of this exact message if the target folder holds it (its flags made equal).

        Identical messages of one folder each have their own copy (imapsync's --syncduplicates):
        `taken(refs)` says which of the matching copies other source messages already hold, and
        the first copy no other holds is this message's."""
        meta = meta or {}
        folder = self.target_folder(owner, rel, meta)
        if folder not in self._mailbox(owner).folders:
            return None
        mid, size, when = meta.get("message_id"), meta.get("size"), _parse_date(meta.get("internaldate"))

        def look(conn: _Conn) -> str | None:
            validity = conn.select(folder)
            if mid and mid.isascii():
                uids = conn.client.search(["HEADER", "Message-ID", mid])
            elif size:
                # `size` may be the file's (bare LF line ends): its CRLF form is at most twice as long
                criteria: list[str | date] = ["LARGER", str(int(size) - 1), "SMALLER", str(2 * int(size) + 1)]
                if when is not None:               # SEARCH dates are days in the server's time zone
                    criteria += ["SINCE", (when - timedelta(days=1)).date(),
                                 "BEFORE", (when + timedelta(days=2)).date()]
                uids = conn.client.search(criteria)
            else:
                return None
            matches: dict[str, tuple[int, tuple]] = {}
            for uid in sorted(uids)[-MAX_CANDIDATES:]:
                data = conn.client.fetch([uid], ["FLAGS", "INTERNALDATE", "BODY.PEEK[]"]).get(uid)
                if data is None or _sha256(data.get(b"BODY[]") or b"") != digest:
                    continue
                if not mid and when is not None and data.get(b"INTERNALDATE") != when:
                    continue
                matches[make_ref(owner, folder, validity, uid)] = (uid, data.get(b"FLAGS", ()))
            held = taken(list(matches)) if matches and taken is not None else set()
            ref = next((r for r in matches if r not in held), None)
            if ref is not None:
                self._sync_flags(conn, matches[ref][0], matches[ref][1], meta.get("flags"))
            return ref

        ref = self._call(owner, f"looking for a message in {folder!r}", look)
        if ref is not None and meta.get("flags") is not None:
            self._remember(ref, meta["flags"])
        return ref

    def _remember(self, ref: str, flags) -> None:
        with self._lock:
            self._flags[ref] = tuple(f for f in flags if f != "\\Recent")
            self._flags.move_to_end(ref)
            while len(self._flags) > MAX_REMEMBERED:
                self._flags.popitem(last=False)

    @staticmethod
    def _sync_flags(conn: _Conn, uid: int, have, want) -> None:
        if want is None:
            return
        have = {_text(f) for f in have} - {"\\Recent"}
        want = set(want) - {"\\Recent"}
        if want - have:
            conn.client.add_flags([uid], sorted(want - have), silent=True)
        if have - want:
            conn.client.remove_flags([uid], sorted(have - want), silent=True)

    def put(self, owner: str, rel: str, src: Path, mtime: float | None = None, meta: dict | None = None,
            digest: str | None = None) -> str:
        """APPEND the message in `src` to the mapped folder with its flags and internal date (`digest`
        is not needed: an IMAP server keeps no checksum)."""
        try:
            data = src.read_bytes()
        except OSError as exc:
            raise ItemError(f"cannot read {src}: {exc.strerror or exc}") from exc
        meta = dict(meta or {})
        if not meta.get("internaldate") and mtime is not None:
            meta["internaldate"] = datetime.fromtimestamp(mtime, tz=timezone.utc).isoformat()
        return self.put_bytes(owner, rel, canonical(data), meta)

    def put_bytes(self, owner: str, rel: str, data: bytes, meta: dict | None = None) -> str:
        """APPEND `data` (already with CRLF line ends) to the mapped folder; returns the reference."""
        meta = meta or {}
        folder = self.target_folder(owner, rel, meta)
        self._ensure_folder(owner, folder)
        flags = [f for f in (meta.get("flags") or []) if f != "\\Recent"]
        when = _parse_date(meta.get("internaldate"))

        def append(conn: _Conn) -> str:
            answer = _append(conn.client, folder, data, flags, when)
            # APPENDUID is UIDPLUS's (RFC 4315): from a server that does not announce it, not trusted
            m = _APPENDUID.search(answer or b"") if conn.client.has_capability("UIDPLUS") else None
            if m:
                return make_ref(owner, folder, int(m.group(1)), int(m.group(2)))
            return self._locate(conn, owner, folder, data)          # a server without UIDPLUS

        ref = self._call(owner, f"appending to {folder!r}", append)
        self._remember(ref, flags)
        return ref

    def _locate(self, conn: _Conn, owner: str, folder: str, data: bytes) -> str:
        validity = conn.select(folder)
        conn.client.noop()
        mid = _message_id(data)
        if mid and mid.isascii():
            uids = conn.client.search(["HEADER", "Message-ID", mid])
        else:
            uids = conn.client.search(["LARGER", str(len(data) - 1), "SMALLER", str(len(data) + 1)])
        digest = _sha256(data)
        for uid in sorted(uids, reverse=True)[:MAX_CANDIDATES]:
            body = (conn.client.fetch([uid], ["BODY.PEEK[]"]).get(uid) or {}).get(b"BODY[]")
            if body is not None and _sha256(body) == digest:
                return make_ref(owner, folder, validity, uid)
        raise ItemError(f"the message was appended to {folder!r} but cannot be found there again")

    def verify(self, ref: str, digest: str) -> str | None:
        """None when the target holds exactly these bytes (and the flags put), else what is wrong."""
        owner, folder, uidvalidity, uid = parse_ref(ref)

        def read(conn: _Conn):
            try:
                conn.select(folder)
            except IMAPClientAbortError:
                raise
            except IMAPClientError:
                return None, None, "folder"
            if conn.uidvalidity != uidvalidity:
                return None, None, "renumbered"
            data = conn.client.fetch([uid], ["FLAGS", "BODY.PEEK[]"]).get(uid)
            if data is None or b"BODY[]" not in data:
                # a session sees messages other sessions appended only after the server told it
                # (a NOOP's EXISTS): ask once more before calling the message missing
                conn.client.noop()
                data = conn.client.fetch([uid], ["FLAGS", "BODY.PEEK[]"]).get(uid)
            if data is None or b"BODY[]" not in data:
                return None, None, "missing"
            return _sha256(data[b"BODY[]"]), {_text(f) for f in data.get(b"FLAGS", ())}, None

        actual, flags, problem = self._call(owner, f"reading back {ref}", read)
        if problem == "folder":
            return f"{ref}: the folder {folder!r} is missing at the target"
        if problem == "renumbered":
            return f"{ref}: the folder was renumbered at the target (UIDVALIDITY is no longer {uidvalidity})"
        if problem == "missing":
            return f"{ref} is missing at the target"
        if actual != digest:
            return f"{ref} differs at the target (sha256 {actual[:12]}…)"
        with self._lock:
            want = self._flags.get(ref)
        lost = sorted(set(want or ()) - flags)
        if lost:
            return f"{ref}: flags missing at the target: {' '.join(lost)}"
        return None

    def verify_many(self, checks: list[tuple[str, str]], batch_count: int = 100) -> dict[str, str | None]:
        """`verify` for many (reference, sha256) of one target user at once: one UID FETCH per folder
        and batch instead of one per message. {reference: None or what is wrong}."""
        problems: dict[str, str | None] = {}
        groups: dict[tuple[str, str, int], list[tuple[int, str, str]]] = {}
        for ref, digest in checks:
            owner, folder, uidvalidity, uid = parse_ref(ref)
            groups.setdefault((owner, folder, uidvalidity), []).append((uid, ref, digest))
        for (owner, folder, uidvalidity), wanted in groups.items():
            for start in range(0, len(wanted), batch_count):
                part = wanted[start:start + batch_count]

                def read(conn: _Conn, part=part, folder=folder, uidvalidity=uidvalidity):
                    conn.select(folder)
                    if conn.uidvalidity != uidvalidity:
                        return None
                    conn.client.noop()             # see what other sessions appended meanwhile
                    return conn.client.fetch([uid for uid, _, _ in part], ["FLAGS", "BODY.PEEK[]"])
                answer = self._call(owner, f"reading back {len(part)} messages of {folder!r}", read)
                for uid, ref, digest in part:
                    data = (answer or {}).get(uid)
                    if answer is None:
                        problems[ref] = f"{ref}: the folder was renumbered at the target"
                    elif data is None or b"BODY[]" not in data:
                        problems[ref] = f"{ref} is missing at the target"
                    elif _sha256(data[b"BODY[]"]) != digest:
                        problems[ref] = f"{ref} differs at the target"
                    else:
                        with self._lock:
                            want = self._flags.get(ref)
                        lost = sorted(set(want or ()) - {_text(f) for f in data.get(b"FLAGS", ())})
                        problems[ref] = f"{ref}: flags missing at the target: {' '.join(lost)}" if lost else None
        return problems

    def remove(self, ref: str) -> None:
        """Flag the message \\Deleted and expunge it (UID EXPUNGE: no other message is touched)."""
        owner, folder, uidvalidity, uid = parse_ref(ref)

        def delete(conn: _Conn) -> None:
            conn.select(folder)
            if conn.uidvalidity != uidvalidity:
                return                                  # renumbered: that UID is another message now
            conn.client.add_flags([uid], ["\\Deleted"], silent=True)
            if conn.client.has_capability("UIDPLUS"):
                conn.client.uid_expunge([uid])

        self._call(owner, f"removing {ref}", delete)

    # ------------------------------------------------------------------ fast path
    def append_stream(self, owner: str, messages: Iterable[tuple[str, str, dict, bytes | None]],
                      workers: int = 2, max_bytes: int = 48 << 20, batch_count: int = 50,
                      batch_bytes: int = 8 << 20,
                      taken: Callable[[str, list[str]], set[str]] | None = None) -> Iterator[Appended]:
        """Append many messages of one owner; yields one `Appended` per message, as they land.

        `messages` yields (key, location, meta, bytes or None for a message that vanished). It is
        read in a thread of its own, so reading the source overlaps the appends, at most
        `max_bytes` ahead of them. Consecutive messages of one folder travel as one MULTIAPPEND
        (up to `batch_count` messages or `batch_bytes`), which the server stores in one
        transaction. Each folder is appended to by one of `workers` connections only: parallel
        appends into one folder wait for each other's lock (Dovecot's maildir measured slower with
        more connections), appends into different folders do not. A message already in its target
        folder (same Message-ID or size and date, same sha256) is not appended again; identical
        messages each have their own copy: a copy this stream handed out, or one that `taken(key,
        refs)` says another source message holds, is not this one's."""
        workers = max(1, workers)
        claims = _Claims(taken)
        lanes: list[queue.Queue] = [queue.Queue() for _ in range(workers)]
        done: queue.Queue = queue.Queue()
        budget = _Budget(max_bytes)
        stop = threading.Event()

        def lane_of(location: str) -> queue.Queue:
            return lanes[int(hashlib.md5(location.encode()).hexdigest()[:8], 16) % workers]

        def feed() -> None:
            batch: list = []
            size = 0

            def flush() -> None:
                nonlocal batch, size
                if batch:
                    budget.take(size)
                    lane_of(batch[0][1]).put((batch, size))
                batch, size = [], 0

            try:
                for key, location, meta, data in messages:
                    if stop.is_set():
                        break
                    n = len(data or b"")
                    if batch and (batch[0][1] != location or len(batch) >= batch_count or size + n > batch_bytes):
                        flush()
                    batch.append((key, location, meta or {}, data))
                    size += n
                flush()
            except BaseException as exc:                                 # the source failed: report it
                done.put(exc)
            finally:
                for lane in lanes:
                    lane.put(None)

        def append(lane: queue.Queue) -> None:
            try:
                while (job := lane.get()) is not None:
                    batch, size = job
                    try:
                        for result in self._append_batch(owner, batch, claims):
                            done.put(result)
                    except (UserStopped, FatalError) as exc:
                        done.put(exc)
                        stop.set()
                    finally:
                        budget.give(size)
            finally:
                self._drop(owner)
                done.put(None)

        threads = [threading.Thread(target=feed, name="imap-feed", daemon=True)]
        threads += [threading.Thread(target=append, args=(lane,), name=f"imap-append-{i}", daemon=True)
                    for i, lane in enumerate(lanes)]
        for t in threads:
            t.start()
        finished = 0
        try:
            while finished < workers:
                result = done.get()
                if result is None:
                    finished += 1
                elif isinstance(result, BaseException):
                    raise result
                else:
                    yield result
        finally:
            stop.set()
            budget.close()
            for lane in lanes:                             # let the appenders end after their batch
                while True:
                    try:
                        lane.get_nowait()
                    except queue.Empty:
                        break
                lane.put(None)
            for t in threads:
                t.join(timeout=60)

    def _append_batch(self, owner: str, batch: list, claims: "_Claims | None" = None) -> list[Appended]:
        """Dedupe, then append what is new in one MULTIAPPEND (one by one if the server refuses it)."""
        claims = claims or _Claims(None)
        results = self._append_unclaimed(owner, batch, claims)
        claims.hold(r.ref for r in results if r.ref)
        sent = {key: (meta, data) for key, _, meta, data in batch}
        for r in results:
            if r.ref and not r.found:
                self._note(owner, r.ref, *sent[r.key])
        return results

    def _note(self, owner: str, ref: str, meta: dict, data: bytes) -> None:
        """Add a message just appended to its folder's index, so that the index of this process
        stays whole for later streams (a rerun in the same process finds it)."""
        _, folder, uidvalidity, uid = parse_ref(ref)
        box = self._mailbox(owner)
        with box.lock:
            index = box.index.get(folder)
            if index is None or index.uidvalidity != uidvalidity:
                box.index.pop(folder, None)
                return
            data = canonical(data)
            mid = meta.get("message_id")
            key = (mid, len(data)) if mid else (None, len(data), _parse_date(meta.get("internaldate")))
            index.by_key.setdefault(key, []).append(uid)
            index.hashes[uid] = _sha256(data)

    def _append_unclaimed(self, owner: str, batch: list, claims: "_Claims") -> list[Appended]:
        results: list[Appended] = []
        new: list[tuple[str, dict, bytes, str]] = []
        location = batch[0][1]
        for key, _, meta, data in batch:
            if data is None:
                results.append(Appended(key, None, None, error=ItemError(f"{key} vanished at the source (expunged)")))
                continue
            try:
                data = canonical(data)
                digest = _sha256(data)
                ref = self._indexed(owner, location, meta, data, digest, key, claims)
            except (ItemError, TransientError, ConfigError) as exc:
                results.append(Appended(key, None, None, error=exc))
                continue
            if ref is not None:
                results.append(Appended(key, ref, digest, found=True))
            else:
                new.append((key, meta, data, digest))
        if len(new) > 1:
            try:
                refs = self.put_many(owner, location, [(data, meta) for _, meta, data, _ in new])
                return results + [Appended(key, ref, digest) for (key, _, _, digest), ref in zip(new, refs)]
            except ItemError:
                pass                                       # find the message the server refused: one by one
        for key, meta, data, digest in new:
            try:
                results.append(Appended(key, self.put_bytes(owner, location, data, meta), digest))
            except (ItemError, TransientError, ConfigError) as exc:
                results.append(Appended(key, None, None, error=exc))
        return results

    def put_many(self, owner: str, rel: str, items: list[tuple[bytes, dict]]) -> list[str]:
        """APPEND several messages (CRLF form) of one source folder in one command (MULTIAPPEND,
        RFC 3502: stored all or none); returns their references in order."""
        metas = [meta or {} for _, meta in items]
        folder = self.target_folder(owner, rel, metas[0])
        if any(self.target_folder(owner, rel, m) != folder for m in metas[1:]):
            raise ItemError("these messages go to different folders")
        self._ensure_folder(owner, folder)

        def append(conn: _Conn) -> list[str]:
            # without UIDPLUS the UIDs of a MULTIAPPEND cannot be learnt: refused before anything is
            # sent, so that the one-by-one appends that follow store nothing twice
            if not (conn.client.has_capability("MULTIAPPEND") and conn.client.has_capability("UIDPLUS")):
                raise IMAPClientError("APPEND failed: the server has no MULTIAPPEND with UIDPLUS")
            answer = _append(conn.client, folder, [
                (data, [f for f in (m.get("flags") or []) if f != "\\Recent"], _parse_date(m.get("internaldate")))
                for (data, _), m in zip(items, metas)])
            m = _APPENDUIDS.search(answer or b"")
            uids = _uid_set(m.group(2).decode()) if m else []
            if len(uids) != len(items):
                raise IMAPClientError("APPEND failed: no APPENDUID for every message")
            validity = int(m.group(1)) if m else 0          # (no uids without a match)
            return [make_ref(owner, folder, validity, uid) for uid in uids]

        refs = self._call(owner, f"appending {len(items)} messages to {folder!r}", append)
        for ref, meta in zip(refs, metas):
            self._remember(ref, meta.get("flags") or [])
        return refs

    def _indexed(self, owner: str, location: str, meta: dict, data: bytes, digest: str, key: str = "",
                 claims: "_Claims | None" = None) -> str | None:
        """The existing copy of this message in its target folder, from one listing of the folder,
        that no other source message holds (`claims`)."""
        claims = claims or _Claims(None)
        folder = self.target_folder(owner, location, meta)
        box = self._mailbox(owner)
        if folder not in box.folders:
            return None
        with box.lock:
            index = box.index.get(folder)
            if index is None:
                index = box.index[folder] = self._call(owner, f"listing {folder!r}",
                                                       lambda conn: _folder_index(conn, folder))
        mid, size = meta.get("message_id"), len(data)
        when = _parse_date(meta.get("internaldate"))
        uids = index.by_key.get((mid, size) if mid else (None, size, when), [])
        if not uids:
            return None

        def compare(conn: _Conn) -> str | None:
            conn.select(folder)
            matches = {}
            for uid in uids:
                if uid not in index.hashes:
                    body = (conn.client.fetch([uid], ["BODY.PEEK[]"]).get(uid) or {}).get(b"BODY[]")
                    index.hashes[uid] = _sha256(body) if body is not None else None
                if index.hashes[uid] == digest:
                    matches[make_ref(owner, folder, index.uidvalidity, uid)] = uid
            ref = claims.first_free(key, list(matches))
            if ref is not None:
                uid = matches[ref]
                self._sync_flags(conn, uid, conn.client.get_flags([uid]).get(uid, ()), meta.get("flags"))
            return ref

        return self._call(owner, f"comparing with {folder!r}", compare)


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _append(client: imapclient.IMAPClient, folder: str, data, flags: list[str] | None = None,
            when: datetime | None = None) -> bytes:
    """APPEND one message (`data` bytes) or several (`data` a list of (bytes, flags, date): MULTIAPPEND),
    sent as they are (no line-end rewriting) and, where the server offers LITERAL+, without waiting
    for its go-ahead: imaplib's own append does both, and costs a round trip more."""
    from imapclient.datetime_util import datetime_to_INTERNALDATE
    from imapclient.imapclient import _literal, seq_to_parenstr
    name = imap_utf7.encode(folder).replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    args = [b'"' + name + b'"']
    for body, fl, dt in ([(data, flags or [], when)] if isinstance(data, bytes) else data):
        args.append(seq_to_parenstr(fl).encode())
        if dt is not None:
            args.append(f'"{datetime_to_INTERNALDATE(dt)}"'.encode())
        args.append(_literal(body))
    typ, answer = client._raw_command(b"APPEND", args, uid=False)
    if typ != "OK":
        raise IMAPClientError(f"APPEND failed: {_text(answer[0] if answer else b'')}")
    return answer[0] if answer and isinstance(answer[0], bytes) else b""


def _uid_set(text: str) -> list[int]:
    """The UIDs of an APPENDUID uid-set (`5:9,12`), in order."""
    uids: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        a, b = int(first), int(last or first)
        uids.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
    return uids


class _Claims:
    """The target copies one `append_stream` has handed out, and what the ledger says other source
    messages hold (`taken(key, refs)`), so that identical messages each get a copy of their own."""

    def __init__(self, taken: Callable[[str, list[str]], set[str]] | None) -> None:
        self.taken = taken
        self.held: set[str] = set()
        self.lock = threading.Lock()

    def first_free(self, key: str, refs: list[str]) -> str | None:
        """The first of `refs` no other message holds; it is held from now on."""
        with self.lock:
            free = [r for r in refs if r not in self.held]
        if free and self.taken is not None:
            held = self.taken(key, free)
            free = [r for r in free if r not in held]
        with self.lock:
            for ref in free:
                if ref not in self.held:
                    self.held.add(ref)
                    return ref
        return None

    def hold(self, refs: Iterable[str]) -> None:
        with self.lock:
            self.held.update(refs)


class _Budget:
    """Bytes that may be read ahead of the appends (a message larger than all of it passes alone)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.closed = limit, 0, False
        self.cond = threading.Condition()

    def take(self, n: int) -> None:
        with self.cond:
            while self.used and self.used + n > self.limit and not self.closed:
                self.cond.wait()
            self.used += n

    def give(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def _list_mailbox(conn: _Conn) -> _Mailbox:
    delimiter, announced, folders = "/", {}, set()
    for attrs, delim, name in list_folders(conn.client):
        if delim:
            delimiter = delim
        attributes = {a.lower() for a in attrs}
        if "\\nonexistent" not in attributes:
            folders.add(name)
        for use in USES:
            if use.lower() in attributes and use not in announced:
                announced[use] = name
    announced = {use: "/".join(name.split(delimiter)) for use, name in announced.items()}
    return _Mailbox(delimiter=delimiter, announced=announced, folders=folders)


def _folder_index(conn: _Conn, folder: str) -> _FolderIndex:
    validity = conn.select(folder)
    by_key: dict = {}
    uids = conn.client.search("ALL")
    answer = conn.client.fetch(uids, ["RFC822.SIZE", "INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) \
        if uids else {}
    for uid, data in answer.items():
        header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER.FIELDS")), b"") or b""
        mid = _message_id(header + b"\r\n\r\n")
        size = int(data.get(b"RFC822.SIZE", 0))
        key = (mid, size) if mid else (None, size, data.get(b"INTERNALDATE"))
        by_key.setdefault(key, []).append(uid)
    return _FolderIndex(uidvalidity=validity, by_key=by_key)


#: This process's sink for a configuration (one connection pool shared by every chunk).
sink_for = PerProcess(ImapSink, close="close")
