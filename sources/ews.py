"""Exchange on-premises over EWS (exchangelib): mail as MIME, events as iCalendar, contacts as vCard.

A service account impersonates each user (`ApplicationImpersonation` role); there is no
autodiscover: the configured endpoint is used as it is. Exchange Online retires EWS (DESIGN.md):
Microsoft 365 mailboxes go through sources/m365.py instead.

Choices a reader would otherwise guess wrong:

- **Delta on the wire, full listing to the ledger.** `discover` runs SyncFolderHierarchy and,
  per folder, SyncFolderItems from the last sync state, applies the changes to a per-mailbox
  snapshot (folder tree + item id → ChangeKey and metadata), and yields the whole snapshot: the
  ledger compares versions (the ChangeKey) and notices removed items by their absence. The
  snapshot lives in memory for the life of the process, and in `sync_state_dir` (one JSON file
  per mailbox, written atomically after a complete pass) when that is configured, so a later run
  asks Exchange only for what changed.
- **Events as Exchange's own iCalendar.** GetItem with MimeContent on a calendar item returns
  Exchange's iCalendar export ([MS-OXCICAL]): a recurring master comes with its RRULE, its
  deleted occurrences as EXDATE, its modified occurrences as RECURRENCE-ID VEVENTs and the
  VTIMEZONE definitions of its (Windows-named) zones. That keeps attendees, alarms and bodies that
  a rebuild from EWS properties would drop, so it is used as is — after checking that it parses
  and that its RECURRENCE-IDs and EXDATEs cover the ModifiedOccurrences and DeletedOccurrences
  the item's properties list. Without MimeContent (Exchange 2007), or when that check fails, the
  event is rebuilt from its properties (`event_to_ical`): the Recurrence pattern becomes an RRULE,
  deleted occurrences EXDATEs, each modified occurrence (fetched by its id) a RECURRENCE-ID VEVENT,
  and the Windows zone, which exchangelib maps to its IANA name, a VTIMEZONE. The rebuild goes
  through the same writer as Microsoft 365's and Outlook files' events (sources/mstime): it keeps
  organizer, attendees and their answers, reminder, free/busy, sensitivity, importance and
  categories besides summary, times, location and description.
- **Contacts as vCard**: the MimeContent (a vCard on Exchange 2010 SP1 and later); without one, a
  vCard 3.0 is built from the contact's properties with vobject.
- **Throttling waits, it does not fail.** ErrorServerBusy carries BackOffMilliseconds; exchangelib
  sleeps that long and repeats the request (its FaultTolerance loop), as the source's retry policy
  (core/retry.py) allows: at most `attempts` tries of one request, no single wait above `max_wait`,
  the waits together below `max_total_wait` (exchangelib alone would repeat a request for as long
  as each back-off is short). Then TransientError(retry_after=…), marked spent: the flows do not
  repeat the request on top. A 401 is never retried (exchangelib's patient policy would retry it
  as "busy" for an hour).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests.adapters

from sources.ews_config import EwsSource
from core.plugins import Account, ProbeMemo
from core.errors import ConfigError, FatalError, ItemError, TransientError
from core.retry import RetryPolicy, policy_for
from core.items import ItemRef, Kind
from core.messages import clip
from sources import mstime

__all__ = ["EwsMailboxes", "source_for", "event_to_ical", "graph_recurrence"]

log = logging.getLogger("umstieg.sources.ews")

#: distinguished folder -> the IMAP special-use flag of its copy at the target
SPECIAL_USE = {"sentitems": "\\Sent", "deleteditems": "\\Trash", "junkemail": "\\Junk", "drafts": "\\Drafts",
               "archive": "\\Archive"}
#: the distinguished folders whose ids are asked for (Inbox is named INBOX at the target); archive last
_DISTINGUISHED = ("inbox", "sentitems", "deleteditems", "junkemail", "drafts", "archive")
#: MAPI property tags read beside each message: PidTagFlagStatus (2 = flagged) and
#: PidTagLastVerbExecuted (102 reply, 103 reply all: answered)
_FLAG_STATUS, _LAST_VERB = 0x1090, 0x1081
_ANSWERED_VERBS = {102, 103}
_FORWARDED_VERB = 104          # forwarded: the `$Forwarded` keyword, as Dovecot and Thunderbird set it
_MESSAGE_FIELDS = ["is_read", "is_draft", "datetime_received", "message_id", "size",
                   "umstieg_flag_status", "umstieg_last_verb"]
_CONTACT_FIELDS = ["display_name", "given_name", "surname", "company_name", "job_title", "email_addresses",
                   "phone_numbers"]
#: what an event is rebuilt from when Exchange's own iCalendar is missing or incomplete
_EVENT_FIELDS = ["subject", "body", "start", "end", "is_all_day", "location", "uid", "type", "recurrence",
                 "modified_occurrences", "deleted_occurrences", "original_start", "organizer",
                 "required_attendees", "optional_attendees", "resources", "legacy_free_busy_status",
                 "sensitivity", "importance", "categories", "reminder_is_set", "reminder_minutes_before_start",
                 "is_cancelled", "datetime_created", "last_modified_time"]

#: snapshots of mailboxes synced by this process: (source, endpoint, account, mailbox) -> snapshot
_SNAPSHOTS: dict[tuple[str, ...], dict] = {}
_SNAPSHOTS_LOCK = threading.Lock()


def source_for(config: EwsSource) -> "EwsMailboxes":
    """The EWS source for one configured Exchange server."""
    return EwsMailboxes(config)


# ------------------------------------------------------------------------- exchangelib set-up
class _TrustingAdapter(requests.adapters.HTTPAdapter):
    """The HTTP adapter exchangelib builds every session with: trusts each endpoint's own CA bundle.

    exchangelib takes one adapter class for all its sessions (`BaseProtocol.HTTP_ADAPTER_CLS`), so the
    trust of each configured endpoint is looked up here by URL prefix; the `verify` requests computed
    (REQUESTS_CA_BUNDLE included) is replaced only for registered endpoints.
    """

    trust: dict[str, str | bool] = {}

    def _verify(self, url: str, verify):
        for prefix, value in self.trust.items():
            if url.startswith(prefix):
                return value
        return verify

    def cert_verify(self, conn, url, verify, cert):
        super().cert_verify(conn, url, self._verify(url, verify), cert)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return super().get_connection_with_tls_context(request, self._verify(request.url, verify),
                                                       proxies=proxies, cert=cert)


_SETUP_LOCK = threading.Lock()
_SET_UP = False


def _set_up_exchangelib() -> None:
    """Once per process: our adapter class, and the two MAPI properties registered on Message."""
    global _SET_UP
    with _SETUP_LOCK:
        if _SET_UP:
            return
        from exchangelib import Message
        from exchangelib.extended_properties import ExtendedProperty
        from exchangelib.protocol import BaseProtocol

        class FlagStatus(ExtendedProperty):
            property_tag = _FLAG_STATUS
            property_type = "Integer"

        class LastVerb(ExtendedProperty):
            property_tag = _LAST_VERB
            property_type = "Integer"

        if BaseProtocol.HTTP_ADAPTER_CLS is requests.adapters.HTTPAdapter:
            BaseProtocol.HTTP_ADAPTER_CLS = _TrustingAdapter
        elif BaseProtocol.HTTP_ADAPTER_CLS is not _TrustingAdapter:
            log.warning("exchangelib's HTTP adapter was replaced elsewhere; ca_file settings may be ignored")
        field_names = {f.name for f in Message.FIELDS}
        if "umstieg_flag_status" not in field_names:
            Message.register("umstieg_flag_status", FlagStatus)
        if "umstieg_last_verb" not in field_names:
            Message.register("umstieg_last_verb", LastVerb)
        _SET_UP = True


#: Per thread: (tries, seconds waited) of the request exchangelib is repeating, and whether the next
#: POST is that repeat (exchangelib's policy object is shared by every thread of an endpoint).
_TALLY = threading.local()


def _ews_policy(cfg) -> RetryPolicy:
    """The source's retry policy; the older `max_wait` setting, when given, is its longest single wait."""
    settings = getattr(cfg, "retry", None)
    policy = policy_for("ews", settings)
    if "max_wait" in cfg.model_fields_set and (settings is None or "max_wait" not in settings.model_fields_set):
        policy = policy.model_copy(update={"max_wait": cfg.max_wait})
    return policy


def _retry_policy(policy: RetryPolicy):
    """exchangelib's FaultTolerance (honours BackOffMilliseconds) bounded by `policy`, and a 401
    means "wrong password".

    exchangelib's loop repeats a request while each back-off stays below `max_wait`, however often;
    here every back-off of one request is counted (per thread: a back-off is followed by the POST
    that repeats it; any other POST is a new request and starts a new count) and asked of the policy."""
    from exchangelib.errors import RateLimitError, UnauthorizedError
    from exchangelib.protocol import FaultTolerance

    class Patient(FaultTolerance):
        def raise_response_errors(self, response):
            if response.status_code == 401:
                raise UnauthorizedError(f"the server refused the credentials ({response.url})")
            return super().raise_response_errors(response)

        @property
        def back_off_until(self):
            if getattr(_TALLY, "repeat", False):
                _TALLY.repeat = False                  # the POST that repeats a request: its count goes on
            else:
                _TALLY.tried, _TALLY.waited = 0, 0.0   # a new request
            return FaultTolerance.back_off_until.fget(self)

        @back_off_until.setter
        def back_off_until(self, value):
            FaultTolerance.back_off_until.fset(self, value)

        def back_off(self, seconds):
            tried = getattr(_TALLY, "tried", 0) + 1
            waited = getattr(_TALLY, "waited", 0.0)
            wait = policy.wait_before(tried, seconds, waited)
            if wait is None:
                _TALLY.tried = tried
                raise RateLimitError(f"gave up after {tried} tries", wait=seconds if seconds is not None else 0.0)
            _TALLY.tried, _TALLY.waited, _TALLY.repeat = tried, waited + wait, True
            super().back_off(wait)

    return Patient(max_wait=policy.max_wait)


# ------------------------------------------------------------------------- the source
@dataclass
class EwsMailboxes(ProbeMemo):
    """Mailboxes of one Exchange server, read through EWS with impersonation."""

    config: EwsSource
    _accounts: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    # ----------------------------------------------------------------- connection
    def _password(self) -> str:
        return self.config.password.resolve().get_secret_value()

    def _account(self, mailbox: str):
        """An exchangelib Account for `mailbox` (impersonated, or the service account's own access)."""
        if mailbox in self._accounts:
            return self._accounts[mailbox]
        _set_up_exchangelib()
        from exchangelib import BASIC, DELEGATE, IMPERSONATION, NTLM, Account, Configuration, Credentials
        from exchangelib.ewsdatetime import UTC

        cfg = self.config
        if cfg.ca_file is not None:
            _TrustingAdapter.trust[cfg.url] = str(cfg.ca_file)
        elif not cfg.verify_tls:
            _TrustingAdapter.trust[cfg.url] = False
        else:
            _TrustingAdapter.trust.pop(cfg.url, None)
        config = Configuration(service_endpoint=cfg.url, credentials=Credentials(cfg.username, self._password()),
                               auth_type=NTLM if cfg.auth == "ntlm" else BASIC,
                               retry_policy=_retry_policy(_ews_policy(cfg)), max_connections=cfg.max_connections)
        account = Account(primary_smtp_address=mailbox, config=config, autodiscover=False, default_timezone=UTC,
                          access_type=IMPERSONATION if cfg.impersonation else DELEGATE)
        account.protocol.TIMEOUT = cfg.timeout
        # a protocol is shared per endpoint and credentials: the latest settings win
        account.protocol.config.retry_policy = config.retry_policy
        self._accounts[mailbox] = account
        return account

    def _scrub(self, text: str) -> str:
        """A message with the password taken out, should a library ever have put it in."""
        try:
            password = self._password()
        except ConfigError:
            return text
        return text.replace(password, "********") if password else text

    # ----------------------------------------------------------------- check
    def check(self, folders: list[str]) -> list[str]:
        """Reachable, credentials accepted, and every mailbox open to the service account (one call each)."""
        from exchangelib.errors import (ErrorAccessDenied, ErrorImpersonateUserDenied, ErrorNonExistentMailbox,
                                        RateLimitError, TransportError, UnauthorizedError)
        where = f"source {self.name}"
        try:
            self._password()
        except ConfigError as exc:
            return [f"{where}: {exc}"]
        problems: list[str] = []
        for mailbox in folders:
            try:
                self._probe(mailbox)
            except UnauthorizedError:
                return problems + [f"{where}: {self.config.url} refused the credentials of {self.config.username} "
                                   "(wrong password, locked account, or the wrong `auth` type)"]
            except ErrorImpersonateUserDenied:
                problems.append(f"{where}: {self.config.username} may not impersonate {mailbox} (grant the "
                                "ApplicationImpersonation role for this mailbox)")
            except ErrorNonExistentMailbox:
                problems.append(f"{where}: mailbox {mailbox} does not exist on {self.config.url}")
            except ErrorAccessDenied:
                problems.append(f"{where}: access to mailbox {mailbox} was denied")
            except RateLimitError as exc:
                problems.append(f"{where}: {self.config.url} is too busy (asked to wait {exc.wait:.0f} s); "
                                "try again later")
            except (TransportError, OSError) as exc:
                return problems + [f"{where}: cannot reach {self.config.url}: {self._scrub(_reason(exc))}"]
        return problems

    def _probe(self, mailbox: str) -> None:
        """One cheap call: GetFolder of the mailbox's root, as the impersonated user (`check` and
        the identity check share it: sent once per mailbox while `probing()`)."""
        from exchangelib.folders import Root

        def ask() -> None:
            Root.get_distinguished(account=self._account(mailbox))
        self._once(("probe", mailbox), ask)

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """The identity check: each mailbox opens as the service account would read it (one
        GetFolder), and Exchange's directory tells its primary address and display name (one
        ResolveNames). The server out of reach or refusing the service account concerns
        everyone: nobody is blamed (`check` says so)."""
        from exchangelib.errors import (EWSError, ErrorAccessDenied, ErrorImpersonateUserDenied,
                                        ErrorNonExistentMailbox, ResponseMessageError, TransportError,
                                        UnauthorizedError)
        found = {name: Account(None) for name in names}
        try:
            self._password()
        except ConfigError:
            return found
        for mailbox in names:
            # exchangelib's answers about one mailbox are TransportErrors too: they are caught first
            try:
                self._probe(mailbox)
            except ErrorNonExistentMailbox:
                found[mailbox] = Account(False, why=f"no mailbox {mailbox} on {self.config.url}")
            except ErrorImpersonateUserDenied:
                found[mailbox] = Account(False, why=f"{self.config.username} may not impersonate {mailbox}")
            except ErrorAccessDenied:
                found[mailbox] = Account(False, why=f"access to mailbox {mailbox} was denied")
            except UnauthorizedError:
                return found
            except ResponseMessageError:           # another answer about this mailbox: cannot tell
                continue
            except (TransportError, OSError):      # the server out of reach: everyone's problem
                return found
            except EWSError:                       # busy: cannot tell
                continue
            else:
                email, name = self._resolved(mailbox)
                found[mailbox] = Account(True, email=email, display_name=name)
        return found

    def _resolved(self, mailbox: str) -> tuple[str | None, str | None]:
        """(primary SMTP address, display name) of `mailbox` as Exchange's directory resolves it
        (ResolveNames: an alias resolves to the mailbox's primary address); (None, None) when it
        cannot tell (no match, several matches, an error)."""
        from exchangelib.errors import EWSError
        try:
            results = self._account(mailbox).protocol.resolve_names([f"smtp:{mailbox}"], search_scope="ActiveDirectory")
        except (EWSError, OSError):
            return None, None
        hits = [r for r in results if r is not None and not isinstance(r, Exception)]
        if len(hits) != 1:
            return None, None
        return hits[0].email_address or None, hits[0].name or None

    # ----------------------------------------------------------------- discover
    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every message, event and contact of the mailbox `folder`, with its ChangeKey as version."""
        with self._errors(f"mailbox {folder}", listing=True):
            snapshot = self._sync(folder)
        for fid, entry in snapshot["items"].items():
            info = snapshot["folders"].get(fid)
            if info is None:
                continue
            for item_id, (kind, changekey, size, meta) in sorted(entry["items"].items()):
                yield ItemRef(source=self.name, key=item_id, kind=Kind(kind), owner=owner,
                              location=info["path"], version=changekey, size=size, meta=meta)

    def mail_volume(self, owner: str, folder: str) -> list[dict]:
        """Messages and bytes of every mail folder as Exchange lists them (SyncFolderItems' item
        count and Size, the same pass `discover` makes; no message is read). [{folder, messages, bytes}]"""
        if not self.config.mail:
            return []
        with self._errors(f"mailbox {folder}", listing=True):
            snapshot = self._sync(folder)
        out = []
        for fid, info in snapshot["folders"].items():
            if info.get("kind") != Kind.MESSAGE.value:
                continue
            items = [entry for entry in (snapshot["items"].get(fid) or {}).get("items", {}).values()
                     if entry[0] == Kind.MESSAGE.value]
            out.append({"folder": info["path"], "messages": len(items), "bytes": sum(e[2] or 0 for e in items)})
        return sorted(out, key=lambda v: v["folder"])

    def _sync(self, mailbox: str) -> dict:
        """Bring the mailbox's snapshot up to date with SyncFolderHierarchy and SyncFolderItems."""
        from exchangelib.errors import ErrorFolderNotFound, ErrorInvalidSyncStateData, ResponseMessageError, SOAPError
        from exchangelib.folders import Folder, FolderCollection
        from exchangelib.properties import DistinguishedFolderId, Mailbox

        account = self._account(mailbox)
        snapshot = self._load(mailbox)
        top = account.msg_folder_root

        # which folder is which distinguished folder (ids are stable; asked once per pass, it is cheap).
        # "archive" is asked alone: servers older than Exchange 2016 refuse the name, and with it the request
        distinguished = {}
        for names in (_DISTINGUISHED[:-1], _DISTINGUISHED[-1:]):
            wanted = [Folder(_distinguished_id=DistinguishedFolderId(id=d, mailbox=Mailbox(email_address=mailbox)),
                             root=top.root) for d in names]
            try:
                found = list(FolderCollection(account=account, folders=wanted).resolve())
            except (ResponseMessageError, SOAPError):
                if names[0] != "archive":
                    raise
                found = []
            distinguished.update({f.id: name for name, f in zip(names, found) if not isinstance(f, Exception)})

        # the folder tree: a delta against the last hierarchy sync state
        top.folder_sync_state = snapshot["hierarchy"]
        try:
            folder_changes = list(top.sync_hierarchy(only_fields=["name", "folder_class", "parent_folder_id"]))
        except ErrorInvalidSyncStateData:
            log.warning("mailbox %s: Exchange refused the saved sync state; listing it afresh", mailbox)
            snapshot = {"hierarchy": None, "tree": {}, "folders": {}, "items": {}}
            top.folder_sync_state = None
            folder_changes = list(top.sync_hierarchy(only_fields=["name", "folder_class", "parent_folder_id"]))
        tree = snapshot["tree"]
        for change, f in folder_changes:
            if change == "delete":
                tree.pop(f.id, None)
                snapshot["items"].pop(f.id, None)
            else:
                tree[f.id] = {"name": f.name or "", "class": f.folder_class or "",
                              "parent": f.parent_folder_id.id if f.parent_folder_id else None}
        snapshot["hierarchy"] = top.folder_sync_state
        snapshot["folders"] = self._folder_paths(tree, top.id, distinguished)

        # the items of every folder of a configured kind
        for fid, info in snapshot["folders"].items():
            kind = Kind(info["kind"])
            entry = snapshot["items"].setdefault(fid, {"state": None, "items": {}})
            try:
                changes = self._item_changes(Folder(id=fid, root=top.root), kind, entry)
            except ErrorFolderNotFound:                 # deleted since the hierarchy was synced
                del snapshot["items"][fid]
                continue
            for change, item in changes:
                if change == "delete":
                    entry["items"].pop(item.id, None)
                elif change == "read_flag_change":
                    item_id, is_read = item
                    if item_id.id in entry["items"]:
                        kind_, _, size, meta = entry["items"][item_id.id]
                        flags = [f for f in meta["flags"] if f != "\\Seen"] + (["\\Seen"] if is_read else [])
                        entry["items"][item_id.id] = [kind_, item_id.changekey, size, {**meta, "flags": flags}]
                elif isinstance(item, Exception):
                    log.warning("mailbox %s: an item of %s could not be listed: %s", mailbox, info["path"], item)
                elif kind is Kind.CONTACT and type(item).__name__ == "DistributionList":
                    continue                            # a distribution list is not a contact card
                else:
                    meta = _message_meta(item, info) if kind is Kind.MESSAGE else None
                    entry["items"][item.id] = [kind.value, item.changekey, item.size, meta]
        for gone in set(snapshot["items"]) - set(snapshot["folders"]):
            del snapshot["items"][gone]
        self._save(mailbox, snapshot)
        return snapshot

    def _item_changes(self, folder, kind: Kind, entry: dict) -> list:
        """The folder's item changes since its sync state (all items when it has none, or when
        Exchange refuses the saved state: then the folder's items are listed afresh)."""
        from exchangelib.errors import ErrorInvalidSyncStateData
        fields = {Kind.MESSAGE: _MESSAGE_FIELDS, Kind.EVENT: ["size"], Kind.CONTACT: ["size"]}[kind]
        folder.item_sync_state = entry["state"]
        try:
            changes = list(folder.sync_items(only_fields=fields, max_changes_returned=self.config.page_size))
        except ErrorInvalidSyncStateData:
            log.warning("folder %s: Exchange refused the saved sync state; listing it afresh", folder.id)
            entry["state"], entry["items"] = None, {}
            folder.item_sync_state = None
            changes = list(folder.sync_items(only_fields=fields, max_changes_returned=self.config.page_size))
        entry["state"] = folder.item_sync_state
        return changes

    def _folder_paths(self, tree: dict, top: str, distinguished: dict) -> dict:
        """Folder id -> path below Top of Information Store, kind and special use, for wanted kinds."""
        paths = {}
        for fid, info in tree.items():
            kind = _kind_of(info["class"])
            if kind is None or not {Kind.MESSAGE: self.config.mail, Kind.EVENT: self.config.calendars,
                                    Kind.CONTACT: self.config.contacts}[kind]:
                continue
            names, node, seen = [], fid, set()
            while node is not None and node != top and node in tree and node not in seen:
                seen.add(node)
                names.append("INBOX" if distinguished.get(node) == "inbox"
                             else tree[node]["name"].replace("/", "_"))
                node = tree[node]["parent"]
            if node != top:
                continue                                # outside the visible tree
            special = distinguished.get(fid)
            paths[fid] = {"path": "/".join(reversed(names)), "kind": kind.value,
                          "special_use": SPECIAL_USE.get(special) if special else None}
        return paths

    # ----------------------------------------------------------------- snapshot storage
    def _snapshot_key(self, mailbox: str) -> tuple[str, ...]:
        return self.name, self.config.url, self.config.username, mailbox.lower()

    def _state_file(self, mailbox: str) -> Path | None:
        if self.config.sync_state_dir is None:
            return None
        digest = hashlib.sha256("\0".join(self._snapshot_key(mailbox)).encode()).hexdigest()[:16]
        return self.config.sync_state_dir / f"{self.name}-{digest}.json"

    def _load(self, mailbox: str) -> dict:
        with _SNAPSHOTS_LOCK:
            snapshot = _SNAPSHOTS.get(self._snapshot_key(mailbox))
        if snapshot is None and (path := self._state_file(mailbox)) is not None and path.is_file():
            try:
                snapshot = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.warning("sync state %s is unreadable: the mailbox %s is listed in full again", path, mailbox)
        empty: dict[str, Any] = {"hierarchy": None, "tree": {}, "folders": {}, "items": {}}
        return json.loads(json.dumps(snapshot)) if snapshot else empty

    def _save(self, mailbox: str, snapshot: dict) -> None:
        with _SNAPSHOTS_LOCK:
            _SNAPSHOTS[self._snapshot_key(mailbox)] = snapshot
        path = self._state_file(mailbox)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(snapshot), encoding="utf-8")
            os.replace(tmp, path)

    # ----------------------------------------------------------------- extract
    def extract(self, folder: str, location: str, dst: Path, key: str | None = None) -> tuple[int, None]:
        """One item's bytes into `dst`: a message's MIME, an event's iCalendar, a contact's vCard."""
        if not key:
            raise ItemError(f"an EWS item needs its key (item id) to be extracted: {location}")
        with self._errors(f"item in {folder}/{location}"):
            from exchangelib import CalendarItem, Contact
            from exchangelib.errors import ErrorItemNotFound
            account = self._account(folder)
            [item] = list(account.fetch(ids=[(key, None)], only_fields=["mime_content", *_CONTACT_FIELDS,
                                                                                *_EVENT_FIELDS]))
            if isinstance(item, ErrorItemNotFound):
                raise ItemError(f"the item was deleted at the source after discovery ({location})")
            if isinstance(item, Exception):
                raise item
            if isinstance(item, CalendarItem):
                data = _event_ics(account, item, location)
            elif isinstance(item, Contact):
                data = _contact_vcard(item)
            elif item.mime_content:
                data = item.mime_content
            else:
                raise ItemError(f"the server gave no MIME content for this message ({location})")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
        return len(data), None

    # ----------------------------------------------------------------- errors at the edge
    def _errors(self, what: str, listing: bool = False):
        return _EwsErrors(self, what, listing)


class _EwsErrors:
    """Turns exchangelib's exceptions into umstieg's taxonomy (by class, never by message text)."""

    def __init__(self, source: EwsMailboxes, what: str, listing: bool) -> None:
        self.source, self.what, self.listing = source, what, listing

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (ItemError, TransientError, FatalError, ConfigError)):
            return False
        from exchangelib.errors import (ErrorAccessDenied, ErrorImpersonateUserDenied, ErrorItemNotFound,
                                        ErrorMailboxMoveInProgress, ErrorMailboxStoreUnavailable,
                                        ErrorNonExistentMailbox, RateLimitError, ResponseMessageError,
                                        TransportError, UnauthorizedError)
        s = self.source
        text = s._scrub(_reason(exc))
        if isinstance(exc, UnauthorizedError):
            raise FatalError(f"source {s.name}: {s.config.url} refused the credentials of {s.config.username}") \
                from None
        if isinstance(exc, (ErrorImpersonateUserDenied, ErrorNonExistentMailbox, ErrorAccessDenied)):
            err = ConfigError if self.listing else ItemError
            raise err(f"source {s.name}: {self.what}: {type(exc).__name__}: {text}") from None
        if isinstance(exc, RateLimitError):
            error = TransientError(f"source {s.name}: the server is busy and asked to wait {exc.wait:.0f} s "
                                   f"({self.what})", retry_after=exc.wait)
            error.attempts = max(getattr(_TALLY, "tried", 0), 1)    # spent: exchangelib already repeated it
            raise error from None
        if isinstance(exc, (ErrorMailboxMoveInProgress, ErrorMailboxStoreUnavailable)):
            raise TransientError(f"source {s.name}: {self.what}: {type(exc).__name__}") from None
        if isinstance(exc, ErrorItemNotFound):
            raise ItemError(f"the item was deleted at the source after discovery ({self.what})") from None
        if isinstance(exc, ResponseMessageError):
            if self.listing:
                raise TransientError(f"source {s.name}: {self.what}: {type(exc).__name__}: {text}") from None
            raise ItemError(f"{self.what}: {type(exc).__name__}: {text}") from None
        if isinstance(exc, (TransportError, OSError)):
            raise TransientError(f"source {s.name}: {self.what}: {text}") from None
        return False


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return clip(text.splitlines()[0], 300) if text else type(exc).__name__


def _kind_of(folder_class: str) -> Kind | None:
    """The kind of items a folder holds, by its FolderClass (mail folders may have none)."""
    cls = folder_class or "IPF.Note"
    if cls == "IPF.Note" or cls.startswith("IPF.Note.") or cls == "IPF.Imap":
        return None if cls.startswith("IPF.Note.OutlookHomepage") else Kind.MESSAGE
    if cls == "IPF.Appointment" or cls.startswith("IPF.Appointment."):
        return Kind.EVENT
    if cls == "IPF.Contact" or cls.startswith("IPF.Contact."):
        return Kind.CONTACT
    return None                                         # tasks, notes, journal, system folders


def _message_meta(item, info: dict) -> dict:
    """What an IMAP target needs beside a message's bytes."""
    flags = []
    if getattr(item, "is_read", False):
        flags.append("\\Seen")
    if getattr(item, "umstieg_flag_status", None) == 2:
        flags.append("\\Flagged")
    if getattr(item, "umstieg_last_verb", None) in _ANSWERED_VERBS:
        flags.append("\\Answered")
    elif getattr(item, "umstieg_last_verb", None) == _FORWARDED_VERB:
        flags.append("$Forwarded")
    if getattr(item, "is_draft", False):
        flags.append("\\Draft")
    received = getattr(item, "datetime_received", None)
    return {"flags": flags, "internaldate": received.isoformat() if received else None,
            "special_use": info["special_use"], "message_id": getattr(item, "message_id", None)}


def _event_ics(account, item, location: str) -> bytes:
    """The calendar item's iCalendar: Exchange's own export when it is complete, else rebuilt.

    Exchange's export is complete when its RECURRENCE-IDs are the modified occurrences and its
    EXDATEs cover the deleted occurrences that the item's EWS properties list.
    """
    import icalendar
    if item.mime_content:
        try:
            cal = icalendar.Calendar.from_ical(item.mime_content)
        except ValueError:
            cal = None
        if cal is not None and cal.walk("VEVENT") and _export_is_complete(cal, item):
            return item.mime_content
        log.info("%s: Exchange's iCalendar for %s is missing or incomplete; rebuilt from EWS properties",
                 location, item.subject)
    if item.start is None:
        raise ItemError(f"the server gave neither iCalendar nor start time for this event ({location})")
    exceptions = []
    if item.modified_occurrences:
        from exchangelib.errors import ErrorItemNotFound
        for occ in account.fetch(ids=[(o.id, o.changekey) for o in item.modified_occurrences],
                                 only_fields=_EVENT_FIELDS):
            if isinstance(occ, ErrorItemNotFound):
                continue                                # the exception was removed since: the series says so
            if isinstance(occ, Exception):
                raise occ
            exceptions.append(occ)
    try:
        return event_to_ical(item, exceptions)
    except ValueError as exc:
        raise ItemError(f"this event cannot be written as iCalendar: {exc} ({location})") from None


def _is_instant(value) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None


def _plain(value, zone=None):
    """exchangelib's EWSDateTime (or any aware datetime) as a plain datetime in `zone` (default UTC);
    EWSDateTime refuses tzinfos other than its own, icalendar wants standard ones."""
    if not _is_instant(value):
        return value
    utc = datetime.fromtimestamp(value.timestamp(), tz=timezone.utc)
    return utc.astimezone(zone) if zone is not None else utc


def _zone(item):
    """The item's start zone as a standard ZoneInfo (exchangelib maps Windows names to IANA keys)."""
    from zoneinfo import ZoneInfo
    tz = getattr(item, "_start_timezone", None)
    return ZoneInfo(tz.key) if tz is not None and getattr(tz, "key", None) else ZoneInfo("UTC")


def _export_is_complete(cal, item) -> bool:
    if item.type != "RecurringMaster":
        return True
    events = cal.walk("VEVENT")
    utc = _plain
    ids = {utc(e.decoded("RECURRENCE-ID")) for e in events if "RECURRENCE-ID" in e}
    exdates = {utc(d.dt) for e in events if "RECURRENCE-ID" not in e
               for x in (e.get("EXDATE") if isinstance(e.get("EXDATE"), list) else [e.get("EXDATE")]) if x is not None
               for d in x.dts}
    modified = {utc(o.original_start) for o in item.modified_occurrences or []}
    deleted = {utc(o.start) for o in item.deleted_occurrences or []}
    if item.is_all_day:                                 # compare all-day series by their dates
        modified = {_local_date(v, item) for v in modified}
        deleted = {_local_date(v, item) for v in deleted}
        ids = {_local_date(v, item) for v in ids}
        exdates = {_local_date(v, item) for v in exdates}
    return modified <= ids and deleted <= exdates


def _local_date(value, item):
    return _plain(value, _zone(item)).date() if _is_instant(value) else value


#: EWS weekday names (exchangelib also gives 1-based numbers); 8-10 are EWS's "Day", "Weekday" and
#: "WeekendDay", which Graph (and RFC 5545) write as a set of days
_EWS_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "Day", "Weekday",
                 "WeekendDay"]
_GRAPH_DAYS = [d.lower() for d in _EWS_WEEKDAYS[:7]]
_DAY_SETS = {8: _GRAPH_DAYS, 9: _GRAPH_DAYS[:5], 10: _GRAPH_DAYS[5:]}
_WEEK_INDEX = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "last", -1: "last"}
_MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December"]
#: EWS LegacyFreeBusyStatus / ResponseType -> Graph's showAs / attendee response
_SHOW_AS = {"Free": "free", "Tentative": "tentative", "Busy": "busy", "OOF": "oof",
            "WorkingElsewhere": "workingElsewhere", "NoData": "unknown"}
_RESPONSE = {"Accept": "accepted", "Decline": "declined", "Tentative": "tentativelyAccepted",
             "Organizer": "organizer", "NoResponseReceived": "notResponded", "Unknown": "none"}


def _number(value, names: list[str]) -> int:
    """exchangelib gives enum values as 1-based numbers (or, for some fields, names)."""
    return value if isinstance(value, int) else names.index(str(value)) + 1


def _week(value) -> str:
    if isinstance(value, int):
        return _WEEK_INDEX.get(value) or _fail(f"unknown week index {value!r}")
    name = str(value).lower()
    return name if name in _WEEK_INDEX.values() else _fail(f"unknown week index {value!r}")


def _fail(message: str):
    raise ValueError(message)


def _days(value) -> list[str]:
    n = _number(value, _EWS_WEEKDAYS)
    return _DAY_SETS.get(n, [_GRAPH_DAYS[n - 1]] if 1 <= n <= 7 else [])


def graph_recurrence(recurrence, zone) -> dict:
    """An EWS Recurrence (exchangelib pattern + boundary) as Graph's patternedRecurrence, for
    sources/mstime's one RFC 5545 writer (Graph, Outlook files and EWS share it)."""
    from exchangelib import recurrence as r
    p = recurrence.pattern
    if isinstance(p, r.DailyPattern):
        pattern = {"type": "daily", "interval": p.interval}
    elif isinstance(p, r.WeeklyPattern):
        weekdays = p.weekdays if isinstance(p.weekdays, (list, tuple)) else [p.weekdays]
        pattern = {"type": "weekly", "interval": p.interval,
                   "daysOfWeek": [d for day in weekdays for d in _days(day)],
                   "firstDayOfWeek": _GRAPH_DAYS[_number(p.first_day_of_week, _EWS_WEEKDAYS) - 1]}
    elif isinstance(p, r.AbsoluteMonthlyPattern):
        pattern = {"type": "absoluteMonthly", "interval": p.interval, "dayOfMonth": p.day_of_month}
    elif isinstance(p, r.RelativeMonthlyPattern):
        pattern = {"type": "relativeMonthly", "interval": p.interval, "daysOfWeek": _days(p.weekday),
                   "index": _week(p.week_number)}
    elif isinstance(p, r.AbsoluteYearlyPattern):
        pattern = {"type": "absoluteYearly", "interval": 1, "month": _number(p.month, _MONTH_NAMES),
                   "dayOfMonth": p.day_of_month}
    elif isinstance(p, r.RelativeYearlyPattern):
        pattern = {"type": "relativeYearly", "interval": 1, "month": _number(p.month, _MONTH_NAMES),
                   "daysOfWeek": _days(p.weekday), "index": _week(p.week_number)}
    else:
        raise ValueError(f"recurrence pattern {type(p).__name__} has no RFC 5545 form")
    b = recurrence.boundary
    rng: dict = {"type": "noEnd", "recurrenceTimeZone": zone.key}
    if isinstance(b, r.NumberedPattern):
        rng.update(type="numbered", numberOfOccurrences=b.number)
    elif isinstance(b, r.EndDatePattern):
        end = b.end.date() if isinstance(b.end, datetime) else b.end
        rng.update(type="endDate", endDate=end.isoformat())
    if getattr(b, "start", None) is not None:
        rng["startDate"] = (b.start.date() if isinstance(b.start, datetime) else b.start).isoformat()
    return {"pattern": pattern, "range": rng}


def _graph_when(value, all_day: bool) -> dict:
    """A start or end as Graph's dateTimeTimeZone (an all-day date as its midnight)."""
    if all_day and not isinstance(value, datetime):
        return {"dateTime": f"{value.isoformat()}T00:00:00", "timeZone": "UTC"}
    utc = _plain(value).replace(tzinfo=None)
    return {"dateTime": utc.isoformat(timespec="seconds"), "timeZone": "UTC"}


def _iso_z(value) -> str | None:
    return _plain(value).isoformat().replace("+00:00", "Z") if _is_instant(value) else None


def _address(mailbox) -> dict:
    return {"name": getattr(mailbox, "name", None) or "", "address": getattr(mailbox, "email_address", None) or ""}


def _graph_event(it, zone) -> dict:
    """One EWS calendar item (a master, a single event or a modified occurrence) in Graph's event shape."""
    from exchangelib import HTMLBody
    all_day = bool(getattr(it, "is_all_day", False))
    end = it.end
    if all_day and end is not None and not isinstance(end, datetime):
        end = end + timedelta(days=1)              # EWS gives an all-day event's last day; Graph the day after
    body = getattr(it, "body", None)
    event = {
        "id": getattr(it, "id", None), "subject": it.subject or "", "isAllDay": all_day,
        "start": _graph_when(it.start, all_day),
        "end": _graph_when(end if end is not None else it.start, all_day),
        "originalStartTimeZone": zone.key, "originalEndTimeZone": zone.key,
        "body": {"contentType": "html" if isinstance(body, HTMLBody) else "text", "content": str(body or "")},
        "location": {"displayName": it.location} if getattr(it, "location", None) else {},
        "categories": list(getattr(it, "categories", None) or []),
        "sensitivity": str(getattr(it, "sensitivity", None) or "Normal").lower(),
        "importance": str(getattr(it, "importance", None) or "Normal").lower(),
        "showAs": _SHOW_AS.get(str(getattr(it, "legacy_free_busy_status", None) or "Busy"), "busy"),
        "isReminderOn": bool(getattr(it, "reminder_is_set", False)),
        "reminderMinutesBeforeStart": getattr(it, "reminder_minutes_before_start", None),
        "isCancelled": bool(getattr(it, "is_cancelled", False)),
        "createdDateTime": _iso_z(getattr(it, "datetime_created", None)),
        "lastModifiedDateTime": _iso_z(getattr(it, "last_modified_time", None)),
        "type": "singleInstance",
    }
    organizer = getattr(it, "organizer", None)
    if organizer is not None and getattr(organizer, "email_address", None):
        event["organizer"] = {"emailAddress": _address(organizer)}
    event["attendees"] = [
        {"type": kind, "emailAddress": _address(att.mailbox),
         "status": {"response": _RESPONSE.get(str(att.response_type or "Unknown"), "none")}}
        for kind, field in (("required", "required_attendees"), ("optional", "optional_attendees"),
                            ("resource", "resources"))
        for att in getattr(it, field, None) or [] if getattr(att, "mailbox", None) is not None]
    return event


def event_to_ical(item, exceptions: list) -> bytes:
    """One VCALENDAR for an EWS calendar item: the master with its rule and deleted occurrences, and
    each modified occurrence with the master's UID and a RECURRENCE-ID (its original start),
    written by sources/mstime like every other source's events."""
    zone = _zone(item)
    event = _graph_event(item, zone)
    event["id"] = event["iCalUId"] = item.uid or item.id
    if item.recurrence is None:
        return mstime.event_to_ical(event)
    event["type"] = "seriesMaster"
    event["recurrence"] = graph_recurrence(item.recurrence, zone)
    changed = []
    for exc in exceptions:
        inst = _graph_event(exc, zone)
        inst.update(type="exception", originalStart=_iso_z(exc.original_start) if _is_instant(exc.original_start)
                    else f"{exc.original_start.isoformat()}T00:00:00Z")
        changed.append(inst)
    cancelled = [_local_date(gone.start, item) if item.is_all_day else _plain(gone.start, zone)
                 for gone in item.deleted_occurrences or []]
    return mstime.event_to_ical(event, changed=changed, cancelled=cancelled)


def _contact_vcard(item) -> bytes:
    """The contact's vCard: the server's MimeContent, or one built from its properties."""
    if item.mime_content and item.mime_content.lstrip().upper().startswith(b"BEGIN:VCARD"):
        return item.mime_content
    import vobject
    card = vobject.vCard()
    display = item.display_name or " ".join(p for p in (item.given_name, item.surname) if p) or "(no name)"
    card.add("fn").value = display
    card.add("n").value = vobject.vcard.Name(family=item.surname or "", given=item.given_name or "")
    if item.company_name:
        card.add("org").value = [item.company_name]
    if item.job_title:
        card.add("title").value = item.job_title
    for entry in sorted(item.email_addresses or [], key=lambda e: e.label):
        card.add("email").value = entry.email
    types = {"BusinessPhone": "WORK", "HomePhone": "HOME", "MobilePhone": "CELL", "BusinessFax": "FAX"}
    for entry in item.phone_numbers or []:
        if entry.phone_number:
            tel = card.add("tel")
            tel.value = entry.phone_number
            tel.type_param = types.get(entry.label, "VOICE")
    card.add("uid").value = hashlib.sha256(item.id.encode()).hexdigest()
    return card.serialize().encode("utf-8")
