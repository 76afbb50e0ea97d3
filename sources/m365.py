"""Microsoft 365 mailboxes through Microsoft Graph: mail, calendars and contacts.

Exchange Online switches EWS off (from 1 October 2026, completely by 1 April 2027), so mailboxes
are read through Graph with an application's own permissions (Mail.Read, Calendars.Read,
Contacts.Read, all of the *application* kind with admin consent). The user's folder argument is
the mailbox's UPN. Reading never changes the mailbox (no request here writes).

- **Mail**: the folder tree (`/mailFolders` and their `childFolders`), then per folder a delta
  query of its messages (`/mailFolders/{id}/messages/delta`). Key: the message id; location: the
  folder path, with the inbox as `INBOX` (`INBOX/Projekte`); a `/` inside a folder name is written
  `%2F`. Meta: IMAP flags (`\\Seen` from isRead, `\\Flagged` from a flagged follow-up, `\\Draft`,
  and `\\Answered` / the keyword `$Forwarded` from Exchange's last reply or forward, see
  `LAST_VERB`), the internal date (receivedDateTime), the special-use of well-known folders
  (`\\Sent`, `\\Trash`, `\\Junk`, `\\Drafts`, `\\Archive`; found by asking Graph for each
  well-known name) and the Message-ID. Version: the changeKey (Exchange gives a message a new one
  whenever any of its properties changes: read, flagged, replied to). The bytes are the MIME
  (`/messages/{id}/$value`), streamed to disk.
- **Calendars**: every calendar's events (single events and series masters); a series becomes
  one iCalendar object with its exceptions and cancellations (`sources.mstime`). Key:
  `event:<id>`; location: the calendar's name; version: the changeKey.
- **Contacts**: the default contacts folder (location `Contacts`) and the top-level contact
  folders, as vCard 3.0. Key: `contact:<id>`; version: the changeKey.

Event and contact keys carry their kind because `extract` is given the key, not the kind.
Delta links of the mail folders are kept in memory for the life of the process, as for drives
(see sources.onedrive): every `discover` is a complete listing, which the ledger compares, and
`changes()` asks each folder for what changed since.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path

import httpx

from core.plugins import Account, PerProcess, ProbeMemo
from sources.m365_config import M365Source
from core.errors import ConfigError, ItemError, TransientError
from core.items import ItemRef, Kind
from sources.graph import Changes, DeltaExpired, GraphClient, client_for, person_of, quote_segment
from sources.mstime import contact_to_vcard, event_to_ical, series_window

__all__ = ["MailboxSource", "source_for", "WELL_KNOWN", "LAST_VERB", "VERB_FLAGS"]

log = logging.getLogger("umstieg.sources.m365")

#: Graph's well-known folder names -> IMAP special-use (RFC 6154); the inbox has none, it is INBOX.
WELL_KNOWN = {"inbox": None, "sentitems": "\\Sent", "deleteditems": "\\Trash", "junkemail": "\\Junk",
              "drafts": "\\Drafts", "archive": "\\Archive"}
_MESSAGE_FIELDS = "id,changeKey,isRead,isDraft,flag,receivedDateTime,internetMessageId,parentFolderId"
#: PidTagLastVerbExecuted (MAPI 0x1081, a PT_LONG), as Graph names a single-value extended property.
#: Graph's message resource has isRead, flag and isDraft but nothing for "answered": Exchange keeps
#: the last reply or forward done to a message (in Outlook, OWA or on a phone) in this property.
LAST_VERB = "Integer 0x1081"
#: Its values (MS-OXOMSG) -> the IMAP flag or keyword: reply to sender and reply to all are
#: `\Answered` (RFC 3501); a forward is the keyword `$Forwarded` (RFC 5788), as Dovecot, Thunderbird
#: and the IMAP source carry it. Exchange keeps only the last verb: replied, then forwarded, is
#: `$Forwarded` alone.
VERB_FLAGS = {102: "\\Answered", 103: "\\Answered", 104: "$Forwarded"}
#: The query of each folder's delta listing. Graph documents `$select`, `$top` and `$expand` for the
#: message delta function (https://learn.microsoft.com/en-us/graph/api/message-delta, "OData query
#: parameters"; https://learn.microsoft.com/en-us/graph/delta-query-messages) and puts the options of
#: the first request into every nextLink and deltaLink, so each later pass brings the property as
#: well: no request more per message or per folder. An extended property is read only through
#: `$expand` with `$filter=id eq '…'`
#: (https://learn.microsoft.com/en-us/graph/api/singlevaluelegacyextendedproperty-get); an
#: expanded relation comes back whatever `$select` names. A message without the property has no
#: `singleValueExtendedProperties` in the answer. A reply sets the property on the original, which
#: gives it a new changeKey, so the next delta pass lists it as changed like a read flag.
_MESSAGE_QUERY = {"$select": _MESSAGE_FIELDS,
                  "$expand": f"singleValueExtendedProperties($filter=id eq '{LAST_VERB}')"}
#: The listing `mail_volume` sums: ids and PidTagMessageSize (0x0E08, PT_LONG), no message is read.
_SIZE_QUERY = {"$select": "id", "$expand": "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')"}
#: Graph answers event times in the mailbox's zone unless told otherwise; UTC is unambiguous.
_UTC = {"Prefer": 'outlook.timezone="UTC"'}
_EVENT_PREFIX, _CONTACT_PREFIX = "event:", "contact:"


def _name(display: str) -> str:
    return display.replace("/", "%2F")


def _json_or_none(resp: httpx.Response) -> object:
    try:
        return resp.json()
    except ValueError:
        return None


class MailboxSource(ProbeMemo):
    """A Microsoft 365 source: the three Source operations for mail, events and contacts."""

    def __init__(self, config: M365Source, client: GraphClient | None = None) -> None:
        self.config = config
        self.client = client or client_for(config)
        self._lock = threading.Lock()
        self._delta_links: dict[tuple[str, str], str] = {}      # (upn, folder id) -> delta link

    @property
    def name(self) -> str:
        return self.config.name

    # ----------------------------------------------------------------------- Source
    def check(self, folders: list[str]) -> list[str]:
        """Token and, per mailbox, one read of each enabled kind: every problem at once."""
        try:
            self.client.token()
        except (ConfigError, TransientError) as exc:
            return [f"source {self.name}: {exc}"]
        problems = []
        for upn in folders:
            probes: list[tuple[str, str, dict[str, str] | None]] = []
            if self.config.mail:
                try:
                    inbox = self._inbox(upn)
                    if inbox.status_code != 200:     # missing or forbidden: asked again for the reason
                        probes.append((f"/users/{quote_segment(upn)}/mailFolders/inbox", "Mail.Read", None))
                    elif not isinstance(_json_or_none(inbox), dict):
                        raise TransientError(f"GET {inbox.request.url.path}: Graph sent no JSON object")
                except (ConfigError, ItemError, TransientError) as exc:
                    problems.append(f"source {self.name}, mailbox {upn}: {exc}")
                    continue
            if self.config.calendars:
                probes.append((f"/users/{quote_segment(upn)}/calendars", "Calendars.Read", {"$top": "1"}))
            if self.config.contacts:
                probes.append((f"/users/{quote_segment(upn)}/contactFolders", "Contacts.Read", {"$top": "1"}))
            for path, need, params in probes:
                try:
                    self.client.get_json(path, scope=upn, need=need, params=params)
                except (ConfigError, ItemError, TransientError) as exc:
                    problems.append(f"source {self.name}, mailbox {upn}: {exc}")
                    break
        return problems

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """The identity check: the user exists in Entra ID (with the e-mail address and display
        name Graph holds) and has a mailbox (its inbox opens). A token refused or Graph out of
        reach concerns everyone: nobody is blamed (`check` says so)."""
        try:
            self.client.token()
        except (ConfigError, TransientError):
            return {name: Account(None) for name in names}
        found = {}
        for upn in names:
            try:
                person = person_of(self.client, upn)
                if person is False:
                    found[upn] = Account(False, why=f"no user {upn!r} at Microsoft 365")
                    continue
                resp = self._inbox(upn)
                if resp.status_code == 404:
                    found[upn] = Account(False, why=f"user {upn!r} has no mailbox at Microsoft 365")
                    continue
                if resp.status_code != 200:
                    found[upn] = Account(None)
                    continue
                person = person or {}
                found[upn] = Account(True, email=person.get("mail"), display_name=person.get("displayName"))
            except (ConfigError, ItemError, TransientError):
                found[upn] = Account(None)
        return found

    def _inbox(self, upn: str) -> httpx.Response:
        """GET of the mailbox's inbox (200, 403 or 404): `check` and the identity check both ask it,
        once per mailbox while `probing()`."""
        return self._once(("inbox", upn), lambda: self.client.request(
            "GET", f"/users/{quote_segment(upn)}/mailFolders/inbox", scope=upn, need="Mail.Read", item=True,
            ok=(200, 403, 404)))

    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every message, event (series as one item) and contact of the mailbox `folder` (a UPN)."""
        if self.config.mail:
            yield from self._messages(owner, folder)
        if self.config.calendars:
            yield from self._events(owner, folder)
        if self.config.contacts:
            yield from self._contacts(owner, folder)

    def extract(self, folder: str, location: str, dst: Path, key: str | None = None) -> tuple[int, float | None]:
        """The item's bytes: a message's MIME, an event series as iCalendar, a contact as vCard."""
        if not key:
            raise ItemError(f"no item id for {location}: rediscover the source")
        upn = quote_segment(folder)
        if key.startswith(_EVENT_PREFIX):
            return self._write(dst, self._event_ical(folder, key[len(_EVENT_PREFIX):])), None
        if key.startswith(_CONTACT_PREFIX):
            contact = self.client.get_json(f"/users/{upn}/contacts/{quote_segment(key[len(_CONTACT_PREFIX):])}",
                                           scope=folder, need="Contacts.Read", item=True)
            return self._write(dst, contact_to_vcard(contact)), None
        size = self.client.download(f"/users/{upn}/messages/{quote_segment(key)}/$value", dst,
                                    scope=folder, need="Mail.Read")
        return size, None

    # ----------------------------------------------------------------------- mail
    def mail_folders(self, upn: str) -> list[tuple[str, str, str | None]]:
        """(folder id, path, special-use) of every mail folder, parents before children."""
        base = f"/users/{quote_segment(upn)}/mailFolders"
        special: dict[str, str | None] = {}
        inbox_id = None
        for wk, use in WELL_KNOWN.items():
            try:
                found = self.client.get_json(f"{base}/{wk}", scope=upn, need="Mail.Read", item=True)
            except ItemError:
                continue                                   # no such folder in this mailbox (archive)
            special[found["id"]] = use
            if wk == "inbox":
                inbox_id = found["id"]
        result: list[tuple[str, str, str | None]] = []
        todo = [(f, "") for f in self.client.pages(base, scope=upn, need="Mail.Read", params={"$top": "100"})]
        while todo:
            folder, parent_path = todo.pop(0)
            name = "INBOX" if folder["id"] == inbox_id and not parent_path else _name(folder.get("displayName", ""))
            path = f"{parent_path}/{name}" if parent_path else name
            result.append((folder["id"], path, special.get(folder["id"])))
            if folder.get("childFolderCount"):
                children = self.client.pages(f"{base}/{quote_segment(folder['id'])}/childFolders", scope=upn,
                                             need="Mail.Read", params={"$top": "100"})
                todo[0:0] = [(c, path) for c in children]
        return result

    def mail_volume(self, owner: str, upn: str) -> list[dict]:
        """Messages and bytes of every mail folder without reading one: the folder's totalItemCount
        as Graph counts it, and the sum of its messages' PidTagMessageSize (MAPI 0x0E08, an extended
        property Graph gives in a listing of ids). [{folder, messages, bytes}]"""
        if not self.config.mail:
            return []
        base = f"/users/{quote_segment(upn)}/mailFolders"
        counts: dict[str, int] = {}
        todo = list(self.client.pages(base, scope=upn, need="Mail.Read", params={"$top": "100"}))
        while todo:
            folder = todo.pop(0)
            counts[folder["id"]] = int(folder.get("totalItemCount") or 0)
            if folder.get("childFolderCount"):
                todo[0:0] = self.client.pages(f"{base}/{quote_segment(folder['id'])}/childFolders", scope=upn,
                                              need="Mail.Read", params={"$top": "100"})
        out = []
        for folder_id, path, _ in self.mail_folders(upn):
            size = 0
            listing = self.client.delta(f"{base}/{quote_segment(folder_id)}/messages/delta", scope=upn,
                                        need="Mail.Read", params=_SIZE_QUERY)
            for m in listing.entries:
                if "@removed" not in m:
                    size += _integer_property(m, 0x0E08) or 0
            out.append({"folder": path, "messages": counts.get(folder_id, 0), "bytes": size})
        return out

    def _messages(self, owner: str, upn: str) -> Iterator[ItemRef]:
        for folder_id, path, use in self.mail_folders(upn):
            delta = self.client.delta(self._delta_url(upn, folder_id), scope=upn, need="Mail.Read",
                                      params=_MESSAGE_QUERY)
            with self._lock:
                if delta.delta_link:
                    self._delta_links[(upn, folder_id)] = delta.delta_link
            for m in delta.entries:
                if "@removed" not in m:
                    yield self._message_ref(owner, m, path, use)

    def changes(self, owner: str, folder: str) -> Changes:
        """Messages new, changed or removed since the last `discover` or `changes` of this mailbox in
        this process (mail only: a calendar or contact pass is always a full listing). A folder
        without a saved delta link, or whose link expired, is listed whole (`resynced`)."""
        found = Changes()
        for folder_id, path, use in self.mail_folders(folder):
            with self._lock:
                link = self._delta_links.get((folder, folder_id))
            delta = None
            if link:
                try:
                    delta = self.client.delta(link, scope=folder, need="Mail.Read")
                except DeltaExpired:
                    self.client.expired(f"mail folder {path} of {folder}")
            if delta is None:
                found.resynced = True
                delta = self.client.delta(self._delta_url(folder, folder_id), scope=folder, need="Mail.Read",
                                          params=_MESSAGE_QUERY)
            with self._lock:
                if delta.delta_link:
                    self._delta_links[(folder, folder_id)] = delta.delta_link
            for m in delta.entries:
                if "@removed" in m:
                    found.removed.append(m["id"])
                else:
                    found.changed.append(self._message_ref(owner, m, path, use))
        return found

    @staticmethod
    def _delta_url(upn: str, folder_id: str) -> str:
        return f"/users/{quote_segment(upn)}/mailFolders/{quote_segment(folder_id)}/messages/delta"

    def _message_ref(self, owner: str, m: dict, path: str, use: str | None) -> ItemRef:
        flags = []
        if m.get("isRead"):
            flags.append("\\Seen")
        last_verb = _last_verb(m)
        verb = VERB_FLAGS.get(last_verb) if last_verb is not None else None
        if verb == "\\Answered":
            flags.append(verb)
        if str((m.get("flag") or {}).get("flagStatus", "")).lower() == "flagged":
            flags.append("\\Flagged")
        if m.get("isDraft"):
            flags.append("\\Draft")
        if verb == "$Forwarded":
            flags.append(verb)
        meta = {"flags": flags, "internaldate": m.get("receivedDateTime"), "special_use": use,
                "message_id": m.get("internetMessageId")}
        return ItemRef(source=self.name, key=m["id"], kind=Kind.MESSAGE, owner=owner, location=path,
                       version=str(m.get("changeKey") or m.get("@odata.etag") or ""), size=None, meta=meta)

    # ----------------------------------------------------------------------- calendars
    def _events(self, owner: str, upn: str) -> Iterator[ItemRef]:
        base = f"/users/{quote_segment(upn)}/calendars"
        for cal in self.client.pages(base, scope=upn, need="Calendars.Read"):
            events = self.client.pages(f"{base}/{quote_segment(cal['id'])}/events", scope=upn, need="Calendars.Read",
                                       params={"$select": "id,changeKey,type,subject", "$top": "100"}, headers=_UTC)
            for ev in events:
                yield ItemRef(source=self.name, key=_EVENT_PREFIX + ev["id"], kind=Kind.EVENT, owner=owner,
                              location=_name(cal.get("name") or "Calendar"),
                              version=str(ev.get("changeKey") or ev.get("@odata.etag") or ""),
                              meta={"type": ev.get("type")})

    def _event_ical(self, upn: str, event_id: str) -> bytes:
        path = f"/users/{quote_segment(upn)}/events/{quote_segment(event_id)}"
        event = self.client.get_json(path, scope=upn, need="Calendars.Read", item=True, headers=_UTC)
        try:
            instances = None
            if event.get("type") == "seriesMaster":
                lo, hi = series_window(event)
                instances = list(self.client.pages(
                    f"{path}/instances", scope=upn, need="Calendars.Read", item=True, headers=_UTC,
                    params={"startDateTime": lo.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "endDateTime": hi.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "$top": "500"}))
            return event_to_ical(event, instances)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ItemError(f"event {event.get('subject')!r} cannot be written as iCalendar: "
                            f"{type(exc).__name__}: {exc}") from None

    # ----------------------------------------------------------------------- contacts
    def _contacts(self, owner: str, upn: str) -> Iterator[ItemRef]:
        base = f"/users/{quote_segment(upn)}"
        folders = [("Contacts", f"{base}/contacts")] + [
            (_name(f.get("displayName") or f["id"]), f"{base}/contactFolders/{quote_segment(f['id'])}/contacts")
            for f in self.client.pages(f"{base}/contactFolders", scope=upn, need="Contacts.Read")]
        for location, path in folders:
            for c in self.client.pages(path, scope=upn, need="Contacts.Read", params={"$top": "100"}):
                yield ItemRef(source=self.name, key=_CONTACT_PREFIX + c["id"], kind=Kind.CONTACT, owner=owner,
                              location=location, version=str(c.get("changeKey") or c.get("@odata.etag") or ""))

    @staticmethod
    def _write(dst: Path, data: bytes) -> int:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
        return len(data)


def _last_verb(message: dict) -> int | None:
    """PidTagLastVerbExecuted of a message from its expanded extended properties, if it has one.

    Graph writes the id back in its own spelling (`Binary 0xe0a` for `Binary 0x0E0A`), so type and
    tag are compared, not the text; the value of an Integer property comes as a decimal string."""
    return _integer_property(message, 0x1081)


def _integer_property(message: dict, tag_wanted: int) -> int | None:
    """An Integer extended property of a message (see `_last_verb`), if it has it."""
    for prop in message.get("singleValueExtendedProperties") or []:
        kind, _, tag = str(prop.get("id", "")).strip().partition(" ")
        try:
            if kind.lower() == "integer" and int(tag.strip(), 16) == tag_wanted:
                return int(str(prop.get("value")).strip())
        except ValueError:
            continue                        # a named property ("Integer {guid} Name x"), or no number
    return None


#: This process's source for a configuration (it keeps the mail folders' delta links).
source_for = PerProcess(MailboxSource)
