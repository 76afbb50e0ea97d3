"""A protocol-level TEST server that speaks a small part of Exchange Web Services — for tests only, not Exchange.

Exchange cannot run in this test suite, so this server answers the SOAP operations that the
unmodified exchangelib sends for sources/ews.py, with the element names and response shapes of
EWS's messages.xsd / types.xsd (Exchange 2016, `ServerVersionInfo` V2017_07_11):

- ResolveNames: a mailbox's display name and primary address (`TestMailbox.display_name`);
- ConvertId: only as exchangelib's version probe (answered with an error message and the
  `ServerVersionInfo` header, which is all the probe reads);
- GetFolder by `DistinguishedFolderId` (unknown ones: `ErrorFolderNotFound`) or `FolderId`;
- SyncFolderHierarchy under a folder; SyncFolderItems with `MaxChangesReturned` paging
  (`IncludesLastItemInRange` false until the last page; `server.max_changes` caps pages further);
  sync states are opaque to the client, here the mailbox's change counter; a state it did not
  issue is answered `ErrorInvalidSyncStateData` (with an empty SyncState and IncludesLast…InRange,
  which exchangelib reads before it looks at the response code);
- GetItem (`ErrorItemNotFound` for a deleted item, `ErrorCorruptData` for the content of an item
  in `corrupt`) with `MimeContent` (base64) when asked for:
  a message's RFC 822 bytes, a calendar item's iCalendar (master, modified occurrences as
  RECURRENCE-ID VEVENTs and EXDATEs, as Exchange exports a recurring master), a contact's vCard;
  properties are returned only when named in the shape (`AdditionalProperties`), in schema order.

Around it: HTTP Basic authentication, or with `ntlm=True` NTLM as IIS does it (a handshake per
kept-alive connection, checked by pyspnego's NTLM acceptor; accounts in domain EXAMPLE); a wrong
password is answered 401. Then the
`ExchangeImpersonation` header (a mailbox the service account may not impersonate is answered
with the SOAP fault `ErrorImpersonateUserDenied`, an unknown one with `ErrorNonExistentMailbox`),
and `busy(n, back_off_ms)`: the next n requests get Exchange's throttling fault, `ErrorServerBusy`
with `BackOffMilliseconds` in `MessageXml` (HTTP 500). Every request's operation is in `log`.

Use: `with EwsTestServer(users={"svc": "pw"}, impersonation={"svc": {"anna@example.org"}}) as s:`
then `s.mailbox("anna@example.org").add_message(...)` and point exchangelib at `s.url`
(`https=True` serves TLS with a trustme CA whose bundle is `s.ca_file`).
"""

from __future__ import annotations

import base64
import email
import email.policy
import itertools
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lxml import etree

__all__ = ["EwsTestServer", "TestMailbox"]

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
NSMAP = {"s": SOAP, "m": M, "t": T}

#: the distinguished folders every test mailbox has: id -> (display name, folder class, parent)
DEFAULT_FOLDERS = {
    "root": ("", "", None),
    "msgfolderroot": ("Top of Information Store", "IPF.Note", "root"),
    "inbox": ("Inbox", "IPF.Note", "msgfolderroot"),
    "sentitems": ("Sent Items", "IPF.Note", "msgfolderroot"),
    "deleteditems": ("Deleted Items", "IPF.Note", "msgfolderroot"),
    "drafts": ("Drafts", "IPF.Note", "msgfolderroot"),
    "junkemail": ("Junk Email", "IPF.Note", "msgfolderroot"),
    "archive": ("Archive", "IPF.Note", "msgfolderroot"),
    "outbox": ("Outbox", "IPF.Note", "msgfolderroot"),
    "calendar": ("Calendar", "IPF.Appointment", "msgfolderroot"),
    "contacts": ("Contacts", "IPF.Contact", "msgfolderroot"),
    "tasks": ("Tasks", "IPF.Task", "msgfolderroot"),
}
_FOLDER_TAG = {"IPF.Appointment": "CalendarFolder", "IPF.Contact": "ContactsFolder", "IPF.Task": "TasksFolder"}
_ITEM_TAG = {"message": "Message", "event": "CalendarItem", "contact": "Contact"}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class _Folder:
    id: str
    parent: str | None
    name: str
    cls: str
    distinguished: str | None
    seq: int
    version: int = 1


@dataclass
class _Item:
    id: str
    folder: str
    kind: str                         # message | event | contact
    mime: bytes
    fields: dict
    created: int                      # change counter when created / last changed / deleted
    seq: int
    deleted: int | None = None
    version: int = 1

    @property
    def changekey(self) -> str:
        return _b64(f"CK{self.version}")


class TestMailbox:
    """One mailbox of the test server: folders, items and a change counter for sync states."""

    __test__ = False                                # not a pytest test class

    def __init__(self, address: str, lock: threading.RLock) -> None:
        self.address = address
        self.display_name: str | None = None        # what ResolveNames tells as the mailbox's Name
        self._lock = lock
        self._counter = itertools.count(1)
        self.seq = 0
        self.folders: dict[str, _Folder] = {}
        self.items: dict[str, _Item] = {}
        self.occurrences: dict[str, _Item] = {}     # modified occurrences of series (GetItem only)
        self.calendar_mime = True                   # False: like Exchange 2007, no iCalendar for events
        self.contact_mime = True                    # False: no vCard MimeContent for contacts
        for dist, (name, cls, parent) in DEFAULT_FOLDERS.items():
            self.folders[dist] = _Folder(self._new_id("F"), parent, name, cls, dist, 0)
        for f in self.folders.values():             # parents by id, not by distinguished name
            f.parent = self.folders[f.parent].id if f.parent else None

    def _new_id(self, prefix: str) -> str:
        return _b64(f"{prefix}:{self.address}:{next(self._counter)}")

    def _tick(self) -> int:
        self.seq += 1
        return self.seq

    def folder(self, ref: str) -> _Folder:
        """A folder by distinguished id (`inbox`), id or display-name path (`Inbox/Projekte`)."""
        if ref in self.folders:
            return self.folders[ref]
        for f in self.folders.values():
            if f.id == ref:
                return f
        for f in self.folders.values():
            if self.path_of(f) == ref:
                return f
        raise KeyError(ref)

    def path_of(self, f: _Folder) -> str:
        names = []
        root = self.folders["msgfolderroot"].id
        while f is not None and f.id != root and f.parent is not None:
            names.append(f.name)
            f = next((p for p in self.folders.values() if p.id == f.parent), None)
        return "/".join(reversed(names))

    # ------------------------------------------------------------------ what tests put in
    def add_folder(self, name: str, parent: str = "msgfolderroot", cls: str = "IPF.Note") -> str:
        with self._lock:
            fid = self._new_id("F")
            self.folders[fid] = _Folder(fid, self.folder(parent).id, name, cls, None, self._tick())
            return fid

    def _add(self, folder: str, kind: str, mime: bytes, fields: dict) -> str:
        with self._lock:
            iid = self._new_id("I")
            seq = self._tick()
            self.items[iid] = _Item(iid, self.folder(folder).id, kind, mime, fields, seq, seq)
            return iid

    def add_message(self, mime: bytes, folder: str = "inbox", is_read: bool = False, flagged: bool = False,
                    answered: bool = False, is_draft: bool = False, received: datetime | None = None) -> str:
        """A message held as its RFC 822 bytes, with the properties EWS reports beside them."""
        msg = email.message_from_bytes(mime, policy=email.policy.compat32)
        fields = {"subject": str(msg.get("Subject", "")), "message_id": msg.get("Message-ID"),
                  "is_read": is_read, "flag_status": 2 if flagged else None, "last_verb": 102 if answered else None,
                  "is_draft": is_draft, "received": received or datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)}
        return self._add(folder, "message", mime, fields)

    def add_event(self, ics: bytes, folder: str = "calendar") -> str:
        """A calendar item (a single event or a whole series) held as its iCalendar; its EWS properties
        (Start/End in UTC, StartTimeZone, Recurrence, ModifiedOccurrences, DeletedOccurrences) are
        derived from it, and each modified occurrence becomes an Exception item for GetItem."""
        import icalendar
        cal = icalendar.Calendar.from_ical(ics)
        events = list(cal.walk("VEVENT"))
        master = next((e for e in events if "RECURRENCE-ID" not in e), events[0])
        fields = _event_fields(master)
        with self._lock:
            iid = self._add(folder, "event", ics, fields)
            if "RRULE" in master:
                fields["type"] = "RecurringMaster"
                fields["recurrence"] = _recurrence(master)
                fields["deleted"] = sorted(_utc(d.dt, fields["zone"]) for x in _as_list(master.get("EXDATE"))
                                           for d in x.dts)
                for exc in events:
                    if "RECURRENCE-ID" in exc:
                        occ = _event_fields(exc)
                        occ["type"] = "Exception"
                        occ["original_start"] = _utc(exc.decoded("RECURRENCE-ID"), fields["zone"])
                        oid = self._new_id("O")
                        self.occurrences[oid] = _Item(oid, self.items[iid].folder, "event", b"", occ,
                                                      self.seq, self.seq)
                        fields["modified"].append(oid)
            return iid

    def add_contact(self, vcard: bytes, folder: str = "contacts") -> str:
        """A contact held as its vCard; the structured properties are read from it."""
        import vobject
        card = vobject.readOne(vcard.decode("utf-8"))
        n = card.n.value if hasattr(card, "n") else None
        fields = {"display_name": card.fn.value if hasattr(card, "fn") else "",
                  "given_name": n.given if n else None, "surname": n.family if n else None,
                  "company": card.org.value[0] if hasattr(card, "org") else None,
                  "job_title": card.title.value if hasattr(card, "title") else None,
                  "emails": [e.value for e in card.contents.get("email", [])],
                  "phones": [(p.params.get("TYPE", ["work"])[0].lower(), p.value)
                             for p in card.contents.get("tel", [])]}
        return self._add(folder, "contact", vcard, fields)

    def update(self, item_id: str, mime: bytes | None = None, **fields) -> None:
        """Change an item: a new ChangeKey, and a change for the next SyncFolderItems."""
        if "flagged" in fields:
            fields["flag_status"] = 2 if fields.pop("flagged") else None
        if "answered" in fields:
            fields["last_verb"] = 102 if fields.pop("answered") else None
        with self._lock:
            item = self.items[item_id]
            item.fields.update(fields)
            if mime is not None:
                item.mime = mime
            item.version += 1
            item.seq = self._tick()

    def delete(self, item_id: str) -> None:
        with self._lock:
            item = self.items[item_id]
            item.deleted = item.seq = self._tick()


class EwsTestServer:
    """The EWS test server on 127.0.0.1 (a cheroot WSGI server in a thread)."""

    __test__ = False

    def __init__(self, users: dict[str, str], impersonation: dict[str, set[str]] | None = None,
                 https: bool = False, ntlm: bool = False, tmp_dir: Path | None = None) -> None:
        self.users = dict(users)
        self.ntlm = ntlm
        self._ntlm_contexts: dict = {}                  # connection -> handshake in progress
        self._ntlm_users: dict = {}                     # connection -> user it authenticated
        self._ntlm_file_before: str | None = None
        self.impersonation = {k: set(v) for k, v in (impersonation or {}).items()}
        self.https = https
        self.tmp_dir = tmp_dir
        self.mailboxes: dict[str, TestMailbox] = {}
        self.log: list[str] = []                    # operation of every request ("GetItem", …)
        self.busy_answers = 0                       # how many ErrorServerBusy faults were sent
        self.changes_sent = 0                       # item changes sent by SyncFolderItems
        self.max_changes: int | None = None         # cap on MaxChangesReturned
        self.unknown_distinguished: set[str] = set()  # distinguished ids refused as an older schema does
        self.corrupt: set[str] = set()               # item ids whose content GetItem answers ErrorCorruptData
        self._busy = 0
        self._back_off_ms = 0
        self._lock = threading.RLock()
        self._server = None
        self._thread = None
        self.ca_file: Path | None = None

    def mailbox(self, address: str) -> TestMailbox:
        with self._lock:
            if address.lower() not in self.mailboxes:
                self.mailboxes[address.lower()] = TestMailbox(address, self._lock)
            return self.mailboxes[address.lower()]

    def busy(self, n: int, back_off_ms: int = 100) -> None:
        """Answer the next `n` requests with ErrorServerBusy and this BackOffMilliseconds."""
        with self._lock:
            self._busy, self._back_off_ms = n, back_off_ms

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "EwsTestServer":
        from cheroot import wsgi
        self._server = wsgi.Server(("127.0.0.1", 0), self._app, numthreads=4)
        if self.https:
            import tempfile
            import trustme
            from cheroot.ssl.builtin import BuiltinSSLAdapter
            base = Path(self.tmp_dir or tempfile.mkdtemp(prefix="ews-test-tls-"))
            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            self.ca_file = base / "ews-test-ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
            cert.private_key_and_cert_chain_pem.write_to_path(str(base / "ews-test-server.pem"))
            self._server.ssl_adapter = BuiltinSSLAdapter(str(base / "ews-test-server.pem"),
                                                         str(base / "ews-test-server.pem"))
        if self.ntlm:
            # pyspnego's NTLM acceptor reads the accounts from the file named by NTLM_USER_FILE
            import tempfile
            fd, name = tempfile.mkstemp(prefix="ews-test-ntlm-", dir=self.tmp_dir)
            with os.fdopen(fd, "w") as f:
                f.writelines(f"EXAMPLE:{user}:{password}\n" for user, password in self.users.items())
            self._ntlm_file_before = os.environ.get("NTLM_USER_FILE")
            os.environ["NTLM_USER_FILE"] = self._ntlm_file = name
        self._server.prepare()
        self._thread = threading.Thread(target=self._server.serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()
        self._thread.join(10)
        if self.ntlm:
            os.unlink(self._ntlm_file)
            if self._ntlm_file_before is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = self._ntlm_file_before

    @property
    def url(self) -> str:
        port = self._server.bind_addr[1]
        return f"{'https' if self.https else 'http'}://127.0.0.1:{port}/EWS/Exchange.asmx"

    # ------------------------------------------------------------------ WSGI
    def _app(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or not environ["PATH_INFO"].lower().endswith("/ews/exchange.asmx"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)          # read even when refused: the connection lives on
        header = environ.get("HTTP_AUTHORIZATION", "")
        if self.ntlm:
            user, challenge = self._ntlm_step((environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")), header)
        else:
            user, challenge = self._authenticated(header), 'Basic realm="127.0.0.1"'
        if user is None:
            start_response("401 Unauthorized", [("WWW-Authenticate", challenge), ("Content-Type", "text/plain"),
                                                ("Content-Length", "16")])
            return [b"401 Unauthorized"]
        request = etree.fromstring(data)
        body = request.find(f"{{{SOAP}}}Body")[0]
        operation = etree.QName(body).localname
        with self._lock:
            self.log.append(operation)
            if self._busy > 0:
                self._busy -= 1
                self.busy_answers += 1
                return self._reply(start_response, "500 Internal Server Error", self._fault(
                    "ErrorServerBusy", "The server cannot service this request right now. Try again later.",
                    back_off_ms=self._back_off_ms))
            try:
                mailbox = self._mailbox_for(user, request)
                payload = getattr(self, f"_op_{operation}")(mailbox, body)
            except _Fault as fault:
                return self._reply(start_response, "500 Internal Server Error", self._fault(fault.code, fault.text))
            except AttributeError:
                return self._reply(start_response, "500 Internal Server Error", self._fault(
                    "ErrorInvalidRequest", f"the EWS test server does not implement {operation}"))
        return self._reply(start_response, "200 OK", self._envelope(payload))

    def _ntlm_step(self, connection: tuple, header: str) -> tuple[str | None, str]:
        """NTLM as IIS does it: a three-leg handshake on one kept-alive connection, which then stays
        authenticated. Returns (user, None) or (None, the WWW-Authenticate value to answer 401 with)."""
        import spnego
        with self._lock:
            if connection in self._ntlm_users:
                return self._ntlm_users[connection], ""
            scheme, _, token = header.partition(" ")
            if scheme not in ("NTLM", "Negotiate") or not token:
                self._ntlm_contexts.pop(connection, None)
                return None, "NTLM"
            context = self._ntlm_contexts.pop(connection, None) or spnego.server(protocol="ntlm")
            try:
                answer = context.step(base64.b64decode(token))
            except spnego.exceptions.SpnegoError:
                return None, "NTLM"                         # wrong password: start again
            if not context.complete:
                self._ntlm_contexts[connection] = context
                return None, f"NTLM {base64.b64encode(answer).decode()}"
            user = context.client_principal.rpartition("\\")[2]
            self._ntlm_users[connection] = user
            return user, ""

    def _authenticated(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password and password else None

    def _mailbox_for(self, user: str, request) -> TestMailbox | None:
        smtp = request.find(f".//{{{T}}}ExchangeImpersonation//{{{T}}}PrimarySmtpAddress")
        if smtp is None:
            return self.mailboxes.get(user.lower())
        address = smtp.text.strip().lower()
        if address not in self.mailboxes:
            raise _Fault("ErrorNonExistentMailbox", f"The SMTP address has no mailbox associated with it: {address}")
        if address not in {a.lower() for a in self.impersonation.get(user, ())}:
            raise _Fault("ErrorImpersonateUserDenied", "The account does not have permission to impersonate the "
                                                       "requested user.")
        return self.mailboxes[address]

    @staticmethod
    def _reply(start_response, status: str, xml: bytes):
        start_response(status, [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(xml)))])
        return [xml]

    @staticmethod
    def _envelope(payload) -> bytes:
        env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
        header = etree.SubElement(env, f"{{{SOAP}}}Header")
        etree.SubElement(header, f"{{{T}}}ServerVersionInfo", MajorVersion="15", MinorVersion="1",
                         MajorBuildNumber="2507", MinorBuildNumber="6", Version="V2017_07_11", nsmap={"h": T})
        etree.SubElement(env, f"{{{SOAP}}}Body").append(payload)
        return etree.tostring(env, xml_declaration=True, encoding="utf-8")

    def _fault(self, code: str, text: str, back_off_ms: int | None = None) -> bytes:
        env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
        fault = etree.SubElement(etree.SubElement(env, f"{{{SOAP}}}Body"), f"{{{SOAP}}}Fault")
        etree.SubElement(fault, "faultcode", nsmap={"a": T}).text = f"a:{code}"
        etree.SubElement(fault, "faultstring").text = text
        detail = etree.SubElement(fault, "detail")
        etree.SubElement(detail, f"{{{E}}}ResponseCode", nsmap={"e": E}).text = code
        etree.SubElement(detail, f"{{{E}}}Message", nsmap={"e": E}).text = text
        if back_off_ms is not None:
            xml = etree.SubElement(detail, f"{{{T}}}MessageXml", nsmap={"t": T})
            etree.SubElement(xml, f"{{{T}}}Value", Name="BackOffMilliseconds").text = str(back_off_ms)
        return etree.tostring(env, xml_declaration=True, encoding="utf-8")

    # ------------------------------------------------------------------ operations
    @staticmethod
    def _response(operation: str):
        resp = etree.Element(f"{{{M}}}{operation}Response", nsmap={"m": M, "t": T})
        return resp, etree.SubElement(resp, f"{{{M}}}ResponseMessages")

    @staticmethod
    def _message(messages, operation: str, code: str = "NoError", text: str | None = None):
        msg = etree.SubElement(messages, f"{{{M}}}{operation}ResponseMessage",
                               ResponseClass="Success" if code == "NoError" else "Error")
        if text:
            etree.SubElement(msg, f"{{{M}}}MessageText").text = text
        etree.SubElement(msg, f"{{{M}}}ResponseCode").text = code
        if code != "NoError":
            etree.SubElement(msg, f"{{{M}}}DescriptiveLinkKey").text = "0"
        return msg

    def _op_ConvertId(self, mailbox, body):
        """exchangelib's version probe: only the ServerVersionInfo header matters."""
        resp, messages = self._response("ConvertId")
        for _ in body.iter(f"{{{T}}}AlternateId"):
            self._message(messages, "ConvertId", "ErrorInvalidIdMalformed", "Id is malformed.")
        return resp

    def _op_ResolveNames(self, mailbox, body):
        """The directory's entry of an address (`smtp:` or plain, without regard to case): its
        display name (`Name`) and primary address; no such mailbox: ErrorNameResolutionNoResults."""
        resp, messages = self._response("ResolveNames")
        for entry in body.iter(f"{{{M}}}UnresolvedEntry"):
            wanted = (entry.text or "").strip().lower()
            found = self.mailboxes.get(wanted[5:] if wanted.startswith("smtp:") else wanted)
            if found is None:
                self._message(messages, "ResolveNames", "ErrorNameResolutionNoResults", "No results were found.")
                continue
            msg = self._message(messages, "ResolveNames")
            results = etree.SubElement(msg, f"{{{M}}}ResolutionSet", TotalItemsInView="1",
                                       IncludesLastItemInRange="true")
            box = etree.SubElement(etree.SubElement(results, f"{{{T}}}Resolution"), f"{{{T}}}Mailbox")
            for tag, value in (("Name", found.display_name or found.address), ("EmailAddress", found.address),
                               ("RoutingType", "SMTP"), ("MailboxType", "Mailbox")):
                etree.SubElement(box, f"{{{T}}}{tag}").text = value
        return resp

    def _folders_named(self, mailbox: TestMailbox | None, container):
        for ref in container:
            name = etree.QName(ref).localname
            mbx = mailbox
            if name == "DistinguishedFolderId":
                owner = ref.find(f"{{{T}}}Mailbox/{{{T}}}EmailAddress")
                if owner is not None and mbx is None:
                    mbx = self.mailboxes.get(owner.text.strip().lower())
                if mbx is None:
                    raise _Fault("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.")
                yield mbx, mbx.folders.get(ref.get("Id"))
            else:
                if mbx is None:
                    raise _Fault("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.")
                yield mbx, next((f for f in mbx.folders.values() if f.id == ref.get("Id")), None)

    def _op_GetFolder(self, mailbox, body):
        for ref in body.iter(f"{{{T}}}DistinguishedFolderId"):
            if ref.get("Id") in self.unknown_distinguished:       # as a schema older than the name answers
                raise _Fault("ErrorSchemaValidation", f"The request failed schema validation: The "
                                                      f"'Id' attribute is invalid - The value '{ref.get('Id')}' "
                                                      "is invalid according to its datatype.")
        resp, messages = self._response("GetFolder")
        for mbx, folder in self._folders_named(mailbox, body.find(f"{{{M}}}FolderIds")):
            if folder is None:
                self._message(messages, "GetFolder", "ErrorFolderNotFound", "The specified folder could not be found "
                                                                            "in the store.")
                continue
            msg = self._message(messages, "GetFolder")
            etree.SubElement(msg, f"{{{M}}}Folders").append(self._folder_xml(mbx, folder))
        return resp

    @staticmethod
    def _folder_xml(mbx: TestMailbox, f: _Folder):
        el = etree.Element(f"{{{T}}}{_FOLDER_TAG.get(f.cls, 'Folder')}")
        etree.SubElement(el, f"{{{T}}}FolderId", Id=f.id, ChangeKey=_b64(f"FCK{f.version}"))
        if f.parent:
            etree.SubElement(el, f"{{{T}}}ParentFolderId", Id=f.parent, ChangeKey=_b64("FCK1"))
        if f.cls:
            etree.SubElement(el, f"{{{T}}}FolderClass").text = f.cls
        etree.SubElement(el, f"{{{T}}}DisplayName").text = f.name
        live = [i for i in mbx.items.values() if i.folder == f.id and i.deleted is None]
        etree.SubElement(el, f"{{{T}}}TotalCount").text = str(len(live))
        etree.SubElement(el, f"{{{T}}}ChildFolderCount").text = str(
            sum(1 for c in mbx.folders.values() if c.parent == f.id))
        if el.tag == f"{{{T}}}Folder":
            etree.SubElement(el, f"{{{T}}}UnreadCount").text = str(
                sum(1 for i in live if i.kind == "message" and not i.fields.get("is_read")))
        return el

    @staticmethod
    def _sync_state(body) -> int | None:
        el = body.find(f"{{{M}}}SyncState")
        if el is None or not (el.text or "").strip():
            return 0
        try:
            return int(base64.b64decode(el.text).decode().removeprefix("state:"))
        except ValueError:
            return None

    def _op_SyncFolderHierarchy(self, mailbox, body):
        resp, messages = self._response("SyncFolderHierarchy")
        since = self._sync_state(body)
        if since is None:
            msg = self._message(messages, "SyncFolderHierarchy", "ErrorInvalidSyncStateData",
                                "Synchronization state data is corrupt or otherwise invalid.")
            etree.SubElement(msg, f"{{{M}}}SyncState")           # exchangelib reads both before the code
            etree.SubElement(msg, f"{{{M}}}IncludesLastFolderInRange").text = "true"
            return resp
        mbx, top = next(self._folders_named(mailbox, body.find(f"{{{M}}}SyncFolderId")))
        if top is None:
            self._message(messages, "SyncFolderHierarchy", "ErrorFolderNotFound", "The folder could not be found.")
            return resp
        below, frontier = [], [top.id]
        while frontier:
            children = [f for f in mbx.folders.values() if f.parent in frontier]
            below += children
            frontier = [f.id for f in children]
        msg = self._message(messages, "SyncFolderHierarchy")
        etree.SubElement(msg, f"{{{M}}}SyncState").text = _b64(f"state:{mbx.seq}")
        etree.SubElement(msg, f"{{{M}}}IncludesLastFolderInRange").text = "true"
        changes = etree.SubElement(msg, f"{{{M}}}Changes")
        for f in below:
            if f.seq > since or since == 0:
                etree.SubElement(changes, f"{{{T}}}Create" if since == 0 or f.seq > since else f"{{{T}}}Update") \
                    .append(self._folder_xml(mbx, f))
        return resp

    def _op_SyncFolderItems(self, mailbox, body):
        resp, messages = self._response("SyncFolderItems")
        since = self._sync_state(body)
        if since is None:
            msg = self._message(messages, "SyncFolderItems", "ErrorInvalidSyncStateData",
                                "Synchronization state data is corrupt or otherwise invalid.")
            etree.SubElement(msg, f"{{{M}}}SyncState")           # exchangelib reads both before the code
            etree.SubElement(msg, f"{{{M}}}IncludesLastItemInRange").text = "true"
            return resp
        mbx, folder = next(self._folders_named(mailbox, body.find(f"{{{M}}}SyncFolderId")))
        if folder is None:
            self._message(messages, "SyncFolderItems", "ErrorFolderNotFound", "The folder could not be found.")
            return resp
        wanted = _wanted(body.find(f"{{{M}}}ItemShape"))
        limit = int(body.findtext(f"{{{M}}}MaxChangesReturned") or 512)
        if self.max_changes:
            limit = min(limit, self.max_changes)
        changed = sorted((i for i in mbx.items.values() if i.folder == folder.id and i.seq > since
                          and not (i.deleted is not None and i.created > since)), key=lambda i: i.seq)
        page, more = changed[:limit], len(changed) > limit
        self.changes_sent += len(page)
        msg = self._message(messages, "SyncFolderItems")
        etree.SubElement(msg, f"{{{M}}}SyncState").text = _b64(f"state:{page[-1].seq if more else mbx.seq}")
        etree.SubElement(msg, f"{{{M}}}IncludesLastItemInRange").text = "false" if more else "true"
        changes = etree.SubElement(msg, f"{{{M}}}Changes")
        for item in page:
            if item.deleted is not None:
                etree.SubElement(etree.SubElement(changes, f"{{{T}}}Delete"), f"{{{T}}}ItemId",
                                 Id=item.id, ChangeKey=item.changekey)
            else:
                kind = "Create" if item.created > since else "Update"
                etree.SubElement(changes, f"{{{T}}}{kind}").append(self._item_xml(mbx, item, wanted))
        return resp

    def _op_GetItem(self, mailbox, body):
        resp, messages = self._response("GetItem")
        shape = body.find(f"{{{M}}}ItemShape")
        wanted = _wanted(shape)
        if (shape.findtext(f"{{{T}}}IncludeMimeContent") or "").strip().lower() == "true":
            wanted.add("item:MimeContent")
        for ref in body.find(f"{{{M}}}ItemIds"):
            item = (mailbox.items.get(ref.get("Id")) or mailbox.occurrences.get(ref.get("Id"))) \
                if mailbox is not None else None
            if item is None or item.deleted is not None:
                self._message(messages, "GetItem", "ErrorItemNotFound", "The specified object was not found in the "
                                                                        "store., The process failed to get the "
                                                                        "correct properties.")
                continue
            if item.id in self.corrupt and "item:MimeContent" in wanted:
                # an item Exchange lists but cannot read (a damaged store page): its properties come, its content not
                self._message(messages, "GetItem", "ErrorCorruptData", "The item is corrupt and cannot be read.")
                continue
            msg = self._message(messages, "GetItem")
            etree.SubElement(msg, f"{{{M}}}Items").append(self._item_xml(mailbox, item, wanted))
        return resp

    def _item_xml(self, mbx: TestMailbox, item: _Item, wanted: set[str]):
        """One item with the requested properties, in the order types.xsd gives them."""
        el = etree.Element(f"{{{T}}}{_ITEM_TAG[item.kind]}")
        f = item.fields
        mime = item.mime if (item.kind == "message" or (item.kind == "event" and mbx.calendar_mime)
                             or (item.kind == "contact" and mbx.contact_mime)) else None

        def add(uri: str, tag: str, value, parent=el):
            if uri in wanted and value is not None:
                child = etree.SubElement(parent, f"{{{T}}}{tag}")
                child.text = value if isinstance(value, str) else _text(value)
                return child
            return None

        if "item:MimeContent" in wanted and mime is not None:
            etree.SubElement(el, f"{{{T}}}MimeContent", CharacterSet="UTF-8").text = base64.b64encode(mime).decode()
        etree.SubElement(el, f"{{{T}}}ItemId", Id=item.id, ChangeKey=item.changekey)
        if "item:ParentFolderId" in wanted:
            etree.SubElement(el, f"{{{T}}}ParentFolderId", Id=item.folder, ChangeKey=_b64("FCK1"))
        add("item:ItemClass", "ItemClass", {"message": "IPM.Note", "event": "IPM.Appointment",
                                            "contact": "IPM.Contact"}[item.kind])
        add("item:Subject", "Subject", f.get("subject") or f.get("display_name"))
        if item.kind == "event":
            add("item:Sensitivity", "Sensitivity", f.get("sensitivity"))
        body = add("item:Body", "Body", f.get("description"))
        if body is not None:
            body.set("BodyType", "Text")
        if item.kind == "message":
            add("item:DateTimeReceived", "DateTimeReceived", f["received"])
        add("item:Size", "Size", len(item.mime))
        if item.kind == "event":
            if "item:Categories" in wanted and f.get("categories"):
                box = etree.SubElement(el, f"{{{T}}}Categories")
                for name in f["categories"]:
                    etree.SubElement(box, f"{{{T}}}String").text = name
            add("item:Importance", "Importance", f.get("importance"))
            add("item:ReminderIsSet", "ReminderIsSet", f.get("reminder") is not None)
            add("item:ReminderMinutesBeforeStart", "ReminderMinutesBeforeStart", f.get("reminder"))
        if item.kind == "message":
            add("item:IsDraft", "IsDraft", f["is_draft"])
            for tag, prop in ((0x1081, "last_verb"), (0x1090, "flag_status")):
                if f"tag:{tag:#06x}" in wanted and f.get(prop) is not None:
                    ext = etree.SubElement(el, f"{{{T}}}ExtendedProperty")
                    etree.SubElement(ext, f"{{{T}}}ExtendedFieldURI", PropertyTag=f"{tag:#06x}", PropertyType="Integer")
                    etree.SubElement(ext, f"{{{T}}}Value").text = str(f[prop])
            add("message:IsRead", "IsRead", f["is_read"])
            add("message:InternetMessageId", "InternetMessageId", f.get("message_id"))
        elif item.kind == "event":
            self._event_xml(mbx, el, f, wanted, add)
        else:
            add("contacts:DisplayName", "DisplayName", f["display_name"])
            add("contacts:GivenName", "GivenName", f["given_name"])
            add("contacts:CompanyName", "CompanyName", f["company"])
            if "contacts:EmailAddresses" in wanted and f["emails"]:
                box = etree.SubElement(el, f"{{{T}}}EmailAddresses")
                for n, address in enumerate(f["emails"][:3], 1):
                    etree.SubElement(box, f"{{{T}}}Entry", Key=f"EmailAddress{n}").text = address
            if "contacts:PhoneNumbers" in wanted and f["phones"]:
                box = etree.SubElement(el, f"{{{T}}}PhoneNumbers")
                keys = {"work": "BusinessPhone", "home": "HomePhone", "cell": "MobilePhone"}
                for kind, number in f["phones"]:
                    etree.SubElement(box, f"{{{T}}}Entry", Key=keys.get(kind, "OtherTelephone")).text = number
            add("contacts:JobTitle", "JobTitle", f["job_title"])
            add("contacts:Surname", "Surname", f["surname"])
        return el


    def _event_xml(self, mbx: TestMailbox, el, f: dict, wanted: set[str], add) -> None:
        """A calendar item's properties, in CalendarItemType's order."""
        if f.get("all_day"):
            start, end = _midnight(f["start"], f["zone"]), _midnight(f["end"], f["zone"])
        else:
            start, end = f["start"], f["end"]
        add("calendar:UID", "UID", f["uid"])
        add("calendar:Start", "Start", start)
        add("calendar:End", "End", end)
        add("calendar:OriginalStart", "OriginalStart", f.get("original_start"))
        add("calendar:IsAllDayEvent", "IsAllDayEvent", f.get("all_day", False))
        add("calendar:LegacyFreeBusyStatus", "LegacyFreeBusyStatus", f.get("free_busy"))
        add("calendar:Location", "Location", f.get("location"))
        add("calendar:CalendarItemType", "CalendarItemType", f["type"])

        def mailbox(parent, who: dict) -> None:
            box = etree.SubElement(parent, f"{{{T}}}Mailbox")
            etree.SubElement(box, f"{{{T}}}Name").text = who["name"]
            etree.SubElement(box, f"{{{T}}}EmailAddress").text = who["address"]
            etree.SubElement(box, f"{{{T}}}RoutingType").text = "SMTP"
        if "calendar:Organizer" in wanted and f.get("organizer"):
            mailbox(etree.SubElement(el, f"{{{T}}}Organizer"), f["organizer"])
        for uri, tag, group in (("calendar:RequiredAttendees", "RequiredAttendees", "required"),
                                ("calendar:OptionalAttendees", "OptionalAttendees", "optional"),
                                ("calendar:Resources", "Resources", "resources")):
            people = (f.get("attendees") or {}).get(group)
            if uri in wanted and people:
                box = etree.SubElement(el, f"{{{T}}}{tag}")
                for who in people:
                    att = etree.SubElement(box, f"{{{T}}}Attendee")
                    mailbox(att, who)
                    etree.SubElement(att, f"{{{T}}}ResponseType").text = who["response"]
        rec = f.get("recurrence")
        if "calendar:Recurrence" in wanted and rec:
            box = etree.SubElement(el, f"{{{T}}}Recurrence")
            pattern = etree.SubElement(box, f"{{{T}}}{rec['pattern']}")
            for tag, value in rec["fields"]:
                etree.SubElement(pattern, f"{{{T}}}{tag}").text = str(value)
            boundary = etree.SubElement(box, f"{{{T}}}{rec['boundary']}")
            for tag, value in rec["range"]:
                etree.SubElement(boundary, f"{{{T}}}{tag}").text = str(value)
        if "calendar:ModifiedOccurrences" in wanted and f.get("modified"):
            box = etree.SubElement(el, f"{{{T}}}ModifiedOccurrences")
            for oid in f["modified"]:
                occ = mbx.occurrences[oid]
                node = etree.SubElement(box, f"{{{T}}}Occurrence")
                etree.SubElement(node, f"{{{T}}}ItemId", Id=oid, ChangeKey=occ.changekey)
                for tag, key in (("Start", "start"), ("End", "end"), ("OriginalStart", "original_start")):
                    etree.SubElement(node, f"{{{T}}}{tag}").text = _text(occ.fields[key])
        if "calendar:DeletedOccurrences" in wanted and f.get("deleted"):
            box = etree.SubElement(el, f"{{{T}}}DeletedOccurrences")
            for when in f["deleted"]:
                etree.SubElement(etree.SubElement(box, f"{{{T}}}DeletedOccurrence"), f"{{{T}}}Start").text = _text(when)
        for uri, tag in (("calendar:StartTimeZone", "StartTimeZone"), ("calendar:EndTimeZone", "EndTimeZone")):
            if uri in wanted:
                etree.SubElement(el, f"{{{T}}}{tag}", Id=f["zone"])


#: the few IANA zones the tests use, by their Windows name (what Exchange stores)
_WINDOWS_ZONES = {"Europe/Berlin": "W. Europe Standard Time", "America/New_York": "Eastern Standard Time",
                  "America/Indianapolis": "US Eastern Standard Time", "UTC": "UTC"}
_EWS_DAYS = {"MO": "Monday", "TU": "Tuesday", "WE": "Wednesday", "TH": "Thursday", "FR": "Friday",
             "SA": "Saturday", "SU": "Sunday"}
_EWS_WEEK = {1: "First", 2: "Second", 3: "Third", 4: "Fourth", -1: "Last"}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]


def _zone_of(prop) -> str:
    """The Windows time zone id of a DTSTART (a Windows TZID is kept, IANA names are mapped)."""
    tzid = prop.params.get("TZID") if hasattr(prop, "params") else None
    if tzid:
        return _WINDOWS_ZONES.get(tzid, tzid)
    dt = prop.dt
    key = getattr(getattr(dt, "tzinfo", None), "key", None)
    return _WINDOWS_ZONES.get(key or "UTC", "UTC")


def _tz(zone: str):
    from zoneinfo import ZoneInfo
    iana = {v: k for k, v in _WINDOWS_ZONES.items()}.get(zone, "UTC")
    return ZoneInfo(iana)


def _utc(value, zone: str):
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=_tz(zone))).astimezone(timezone.utc)
    return _midnight(value, zone)


def _midnight(day, zone: str) -> datetime:
    """An all-day event's date as EWS gives it: midnight in the event's zone, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=_tz(zone)).astimezone(timezone.utc)


def _as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


def _event_fields(ev) -> dict:
    zone = _zone_of(ev["DTSTART"])
    start = ev.decoded("DTSTART")
    end = ev.decoded("DTEND") if "DTEND" in ev else start + ev.decoded("DURATION", None) \
        if "DURATION" in ev else start
    all_day = not isinstance(start, datetime)
    return {"subject": str(ev.get("SUMMARY", "")), "uid": str(ev.get("UID", "")), "zone": zone,
            "start": start if all_day else _utc(start, zone), "end": end if all_day else _utc(end, zone),
            "all_day": all_day, "location": str(ev["LOCATION"]) if "LOCATION" in ev else None,
            "description": str(ev["DESCRIPTION"]) if "DESCRIPTION" in ev else None,
            "type": "Single", "recurrence": None, "modified": [], "deleted": [], **_meeting_fields(ev)}


#: iCalendar -> what Exchange stores for it (PARTSTAT -> ResponseType, CLASS -> Sensitivity, …)
_RESPONSE_TYPES = {"ACCEPTED": "Accept", "DECLINED": "Decline", "TENTATIVE": "Tentative",
                   "NEEDS-ACTION": "NoResponseReceived"}
_SENSITIVITY = {"PUBLIC": "Normal", "PRIVATE": "Private", "CONFIDENTIAL": "Confidential"}


def _meeting_fields(ev) -> dict:
    """Organizer, attendees, reminder, free/busy, sensitivity, importance and categories of a VEVENT."""
    def person(prop) -> dict:
        return {"name": str(prop.params.get("CN", "")), "address": str(prop).removeprefix("mailto:")}
    attendees = {"required": [], "optional": [], "resources": []}
    for att in _as_list(ev.get("ATTENDEE")):
        group = ("resources" if att.params.get("CUTYPE") == "RESOURCE" else
                 "optional" if att.params.get("ROLE") == "OPT-PARTICIPANT" else "required")
        attendees[group].append({**person(att),
                                 "response": _RESPONSE_TYPES.get(att.params.get("PARTSTAT", ""), "Unknown")})
    alarms = [a for a in ev.subcomponents if a.name == "VALARM"]
    trigger = alarms[0].decoded("TRIGGER") if alarms else None
    categories = [str(c) for cats in _as_list(ev.get("CATEGORIES")) for c in cats.cats] if "CATEGORIES" in ev else []
    priority = int(ev.get("PRIORITY", 0))
    return {"organizer": person(ev["ORGANIZER"]) if "ORGANIZER" in ev else None, "attendees": attendees,
            "reminder": int(-trigger.total_seconds() // 60) if trigger is not None else None,
            "free_busy": "Free" if str(ev.get("TRANSP", "")) == "TRANSPARENT" else "Busy",
            "sensitivity": _SENSITIVITY.get(str(ev.get("CLASS", "PUBLIC")), "Normal"),
            "importance": "High" if 0 < priority < 5 else "Low" if priority > 5 else "Normal",
            "categories": categories}


def _recurrence(ev) -> dict | None:
    """An RRULE as an EWS Recurrence: pattern, its fields, and the range (what Exchange would store)."""
    rule = ev["RRULE"]
    freq = rule["FREQ"][0]
    interval = int(rule.get("INTERVAL", [1])[0])
    start = ev.decoded("DTSTART")
    local = start.astimezone(_tz(_zone_of(ev["DTSTART"]))) if isinstance(start, datetime) else start
    byday = [str(d) for d in rule.get("BYDAY", [])]
    if freq == "DAILY":
        pattern, fields = "DailyRecurrence", [("Interval", interval)]
    elif freq == "WEEKLY":
        days = " ".join(_EWS_DAYS[d[-2:]] for d in byday) or local.strftime("%A")
        pattern, fields = "WeeklyRecurrence", [("Interval", interval), ("DaysOfWeek", days),
                                               ("FirstDayOfWeek", _EWS_DAYS[rule.get("WKST", ["MO"])[0]])]
    elif freq in ("MONTHLY", "YEARLY") and byday:
        n = int(byday[0][:-2] or rule.get("BYSETPOS", [1])[0])
        rel = [("DaysOfWeek", _EWS_DAYS[byday[0][-2:]]), ("DayOfWeekIndex", _EWS_WEEK[n])]
        if freq == "MONTHLY":
            pattern, fields = "RelativeMonthlyRecurrence", [("Interval", interval), *rel]
        else:
            month = int(rule.get("BYMONTH", [local.month])[0])
            pattern, fields = "RelativeYearlyRecurrence", [*rel, ("Month", _MONTHS[month - 1])]
    elif freq == "MONTHLY":
        pattern = "AbsoluteMonthlyRecurrence"
        fields = [("Interval", interval), ("DayOfMonth", int(rule.get("BYMONTHDAY", [local.day])[0]))]
    elif freq == "YEARLY":
        month = int(rule.get("BYMONTH", [local.month])[0])
        pattern = "AbsoluteYearlyRecurrence"
        fields = [("DayOfMonth", int(rule.get("BYMONTHDAY", [local.day])[0])), ("Month", _MONTHS[month - 1])]
    else:
        return None
    first = local.date() if isinstance(local, datetime) else local
    if "UNTIL" in rule:
        until = rule["UNTIL"][0]
        if isinstance(until, datetime):
            until = until.astimezone(_tz(_zone_of(ev["DTSTART"]))).date()
        boundary, span = "EndDateRecurrence", [("StartDate", first), ("EndDate", until)]
    elif "COUNT" in rule:
        boundary, span = "NumberedRecurrence", [("StartDate", first), ("NumberOfOccurrences", rule["COUNT"][0])]
    else:
        boundary, span = "NoEndRecurrence", [("StartDate", first)]
    return {"pattern": pattern, "fields": fields, "boundary": boundary, "range": span}


class _Fault(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


def _wanted(shape) -> set[str]:
    """The properties a shape asks for: FieldURIs, and extended properties as `tag:0x1090`."""
    wanted: set[str] = set()
    if shape is None:
        return wanted
    if (shape.findtext(f"{{{T}}}BaseShape") or "").strip() in ("Default", "AllProperties"):
        wanted |= {"item:Subject", "item:DateTimeReceived", "item:Size", "message:IsRead", "item:IsDraft",
                   "item:ItemClass", "message:InternetMessageId"}
    for uri in shape.iter(f"{{{T}}}FieldURI"):
        wanted.add(uri.get("FieldURI"))
    for uri in shape.iter(f"{{{T}}}IndexedFieldURI"):         # one per label: asked for as the whole list here
        wanted.add({"contacts:EmailAddress": "contacts:EmailAddresses",
                    "contacts:PhoneNumber": "contacts:PhoneNumbers"}.get(uri.get("FieldURI"), uri.get("FieldURI")))
    for ext in shape.iter(f"{{{T}}}ExtendedFieldURI"):
        if ext.get("PropertyTag"):
            wanted.add(f"tag:{int(ext.get('PropertyTag'), 0):#06x}")
    return wanted


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if hasattr(value, "isoformat"):                 # an all-day event's date
        return value.isoformat()
    return str(value)
