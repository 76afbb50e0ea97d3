"""Export files as a source: a folder per user under `root` holding PST/OST, MBOX, EML, MSG, ICS, VCF.

What each file yields:

- **PST / OST** (libpff, `import pypff`): every mail message, its MIME rebuilt from the transport
  headers, bodies and attachments (a PST stores no MIME); location = its folder path below the
  top of the file; special folders by name and by the `SourceWellKnownFolderType` named property
  that Exchange exports carry; read / flagged / answered / draft and delivery time into `meta`.
  Appointments, contacts and other non-mail items are listed and fail as `unsupported_item`.
- **MBOX**: each message one item; location = the mbox path without its extension; flags from
  the `Status` / `X-Status` headers, the internal date from the `From ` line.
- **EML** (and Apple Mail's .emlx): one message; location = the folder it lies in (INBOX at the top).
- **MSG** (Outlook, extract-msg): one message, converted to MIME; an appointment becomes one
  VCALENDAR and a contact one vCard (sources/outlook.py); tasks and other items fail as
  `unsupported_item`. Appointments and contacts at the top of the user's folder go to the
  calendar "Calendar" / the address book "Contacts".
- **ICS**: one item per UID (a series with its changed occurrences), as its own VCALENDAR with
  the VTIMEZONEs it uses; location = the calendar the file was exported from: its `X-WR-CALNAME`,
  else the name another file with the same `X-WR-RELCALID` gives, else the file's name without
  extension. A calendar exported as 197 files is one calendar at the target, not 197 (servers
  limit how many calendars an account may make: Nextcloud 10 an hour, 30 in all).
- **VCF**: one item per vCard; location = the file's name without extension (the address book).

A file that cannot be read at all yields one item whose extraction fails as `unreadable_export`,
so it is recorded, reported and can be rerun after the file is replaced; the other files go on.

Mail items carry `meta = {"flags": [...], "internaldate": ISO 8601, "special_use": "\\Sent" | …,
"message_id": ...}` like the IMAP source; events and contacts `{"uid": ...}`. Keys are
`<owner>/<path in the folder>` for one-item files and `…#<kind>:<id>` inside containers (PST node
id, mbox index, iCalendar UID, vCard index); the version is the file's mtime and size.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import logging
import mailbox
import os
import re
import shutil
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime, timezone
from email.message import EmailMessage, Message
from pathlib import Path, PurePosixPath
from typing import Any

from sources.export_config import ExportSource
from core.plugins import Account
from core.errors import ItemError
from core.items import ItemRef, Kind
from core.localtree import key_of, raw_of
from clients.pim import PimError, calendar_identity, split_calendar, split_vcards, with_contact_uid
from core.messages import clip
from sources.outlook import (ansi_codepage, appointment_uid, contact_uid, msg_appointment_ical, msg_contact_vcard,
                              msg_text)

__all__ = ["ExportFiles", "UnreadableExport", "UnsupportedItem", "special_use_of", "source_for"]

log = logging.getLogger("umstieg.sources.export")
# extract-msg warns about every .msg without a code page property and every code page chosen for
# it (both normal here, see _open_msg): its errors are what a log reader needs
logging.getLogger("extract_msg").setLevel(logging.ERROR)

_MAIL_ONE = {".eml", ".emlx"}
_MBOX = {".mbox", ".mbx"}
_PST = {".pst", ".ost"}
_MSG = {".msg"}
_ICS = {".ics", ".ical", ".ifb", ".vcs"}
_VCF = {".vcf", ".vcard"}
_KEY = re.compile(r"^[^/]+/(?P<rel>.*?)(?:#(?P<kind>mbox|pst|ics|vcf|bad):(?P<sub>.*))?$", re.DOTALL)

#: Folder names (lower case, several languages) of the special-use folders (RFC 6154).
_SPECIAL_NAMES = {
    "\\Sent": {"sent", "sent items", "sent mail", "sent messages", "gesendet", "gesendete elemente",
               "gesendete objekte", "éléments envoyés", "elementos enviados", "posta inviata"},
    "\\Trash": {"trash", "deleted items", "deleted messages", "gelöschte elemente", "gelöschte objekte",
                "papierkorb", "éléments supprimés", "elementos eliminados", "posta eliminata"},
    "\\Drafts": {"drafts", "entwürfe", "brouillons", "borradores", "bozze"},
    "\\Junk": {"junk", "junk e-mail", "junk email", "junk-e-mail", "spam", "courrier indésirable"},
    "\\Archive": {"archive", "archiv", "archives"},
}
#: SourceWellKnownFolderType values of Exchange's PST exports (named property in the PS set
#: {9137a2fd-2fa5-4409-91aa-2c3ee697350a}), as open PST tools read them.
_WELL_KNOWN = {10: None, 11: "\\Sent", 12: None, 14: "\\Trash", 17: "\\Drafts"}
#: Folders at the top of a PST that hold search results or views, not mail.
_PST_SKIP = {"spam search folder 2", "search root", "racine (pour la recherche)", "ipm_common_views",
             "ipm_views", "itemprocsearch", "finder", "freebusy data", "schedule", "shortcuts", "views",
             "common views", "deferred action", "spooler queue", "tracked mail processing"}
#: MAPI properties read from PST messages.
_PR_MESSAGE_CLASS, _PR_MESSAGE_FLAGS, _PR_FLAG_STATUS = 0x001A, 0x0E07, 0x1090
_PR_LAST_VERB, _PR_INTERNET_MESSAGE_ID, _PR_ATTACH_MIME_TAG = 0x1081, 0x1035, 0x370E


class _Parsed:
    """The last few export files read, by (path, mtime, size): extracting item after item of one
    big .ics, mbox or PST must not read the whole file again for each item."""

    def __init__(self, size: int = 4) -> None:
        self._items: OrderedDict[tuple, object] = OrderedDict()
        self._size = size
        self.lock = threading.RLock()           # pypff handles are not thread-safe

    def get(self, path: Path, kind: str, load):
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size, kind)
        with self.lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = load(path)
            self._items[key] = value
            while len(self._items) > self._size:
                _, old = self._items.popitem(last=False)
                close = getattr(old, "close", None)
                if close is not None:
                    close()
            return value


_parsed = _Parsed()


class UnreadableExport(ItemError):
    """An export file that cannot be read at all (truncated, corrupt, not what its name says)."""

    reason = "unreadable_export"


class UnsupportedItem(ItemError):
    """An item of a kind this source does not convert (an Outlook appointment or contact in a PST, a task in a .msg)."""

    reason = "unsupported_item"


def special_use_of(folder: str) -> str | None:
    """The special-use flag (`\\Sent`, …) of a folder by its name, or None for an ordinary folder."""
    name = PurePosixPath(folder).name.strip().lower()
    for flag, names in _SPECIAL_NAMES.items():
        if name in names:
            return flag
    return "\\Inbox" if name in ("inbox", "posteingang", "boîte de réception") else None


def _iso(value) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def _mail_meta(msg: Message, folder: str, flags: list[str], when: datetime | None,
               special: str | None = None) -> dict:
    if when is None and msg.get("Date"):
        try:
            when = email.utils.parsedate_to_datetime(str(msg["Date"]))
        except (TypeError, ValueError, IndexError):
            when = None
    special = special or special_use_of(folder)
    return {"flags": flags, "internaldate": _iso(when),
            "special_use": special if special != "\\Inbox" else None,
            "message_id": (str(msg.get("Message-ID") or "").strip() or None), "subject": _subject(msg)}


def _subject(msg: Message) -> str | None:
    """The decoded subject (for reports: which message it was), or None."""
    raw = msg.get("Subject")
    if raw is None:
        return None
    try:
        text = str(email.header.make_header(email.header.decode_header(str(raw))))
    except Exception:  # noqa: BLE001 - a malformed encoded word: the raw text says enough
        text = str(raw)
    return clip(text, 200) or None


class ExportFiles:
    """The export-files source: `<root>/<user folder>/…`."""

    def __init__(self, config: ExportSource) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    def check(self, folders: list[str]) -> list[str]:
        """Problems that stop this source before anything moves (every one, at once)."""
        root = self.config.root
        if not root.is_dir():
            return [f"source {self.name}: folder {root} does not exist"]
        problems = [f"source {self.name}: user folder {root / f} does not exist"
                    for f in folders if not (root / f).is_dir()]
        try:
            import pypff  # noqa: F401
        except ImportError:                      # only then is it worth walking the folders for PSTs
            if any(p.suffix.lower() in _PST for f in folders if (root / f).is_dir() for p in (root / f).rglob("*")):
                problems.append(f"source {self.name}: PST files need libpff (pip install libpff-python)")
        return problems

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """The identity check: each user's folder exists and holds at least one export file (PST,
        OST, MBOX, EML, MSG, ICS, VCF); a folder without one is an export that did not happen.
        Export files tell no owner's e-mail or name that could be trusted (a PST names its
        display name, not whose it is). The root missing concerns everyone (`check` says so)."""
        root = self.config.root
        if not root.is_dir():
            return {name: Account(None) for name in names}
        wanted = _MAIL_ONE | _MBOX | _PST | _MSG | _ICS | _VCF
        found = {}
        for folder in names:
            base = root / folder
            if not base.is_dir():
                found[folder] = Account(False, why=f"no user folder {base}")
            elif next((f for _, _, files in os.walk(base) for f in files
                       if PurePosixPath(f).suffix.lower() in wanted), None) is None:
                found[folder] = Account(False, why=f"user folder {base} holds no export "
                                                   "files (PST, OST, MBOX, EML, MSG, ICS, VCF)")
            else:
                found[folder] = Account(True)
        return found

    # ------------------------------------------------------------------------- discover
    def calendars(self, owner: str, folder: str) -> set[str]:
        """The names of the calendars the user's .ics files belong to (what discover gives their
        events as location), read from the files' headers without listing every event: for the
        pre-run check of how many calendars the target must make. Appointments in .msg files are
        not counted (telling them from mail means opening every file)."""
        base = self.config.root / folder
        return set(self._calendar_names(base).values()) if base.is_dir() else set()

    @staticmethod
    def _calendar_names(base: Path) -> dict[str, str]:
        """rel path of each .ics file -> the name of the calendar it belongs to (see the module doc)."""
        found: dict[str, tuple[str | None, str | None]] = {}
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fname in sorted(filenames):
                path = Path(dirpath) / fname
                if path.suffix.lower() not in _ICS:
                    continue
                try:
                    found[_key_path(path, base)] = calendar_identity(path.read_bytes())
                except OSError:
                    continue
        by_id: dict[str, str] = {}
        for _rel, (name, calid) in sorted(found.items()):
            if calid and name:
                by_id.setdefault(calid, name)
        for rel, (name, calid) in sorted(found.items()):   # an id no file names: its first file's name
            if calid and not name:
                by_id.setdefault(calid, PurePosixPath(rel).stem)
        return {rel: name or (by_id[calid] if calid else PurePosixPath(rel).stem)
                for rel, (name, calid) in found.items()}

    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every message, event and contact in the user's export files."""
        base = self.config.root / folder
        calendars = self._calendar_names(base)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fname in sorted(filenames):
                path = Path(dirpath) / fname
                suffix = path.suffix.lower()
                if not any(suffix in s for s in (_MAIL_ONE, _MBOX, _PST, _MSG, _ICS, _VCF)):
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                rel = _key_path(path, base)
                version = f"{st.st_mtime_ns}:{st.st_size}"
                try:
                    yield from self._list(owner, path, rel, suffix, version, st.st_size, calendars.get(rel))
                except (UnreadableExport, OSError, ValueError, EOFError) as exc:
                    log.info("%s: unreadable export file: %s", rel, exc)
                    kind = (Kind.EVENT if suffix in _ICS else Kind.CONTACT if suffix in _VCF else Kind.MESSAGE)
                    yield ItemRef(source=self.name, key=f"{owner}/{rel}#bad:", kind=kind, owner=owner,
                                  location=calendars.get(rel) or self._location(rel, suffix), version=version,
                                  size=st.st_size, meta={"error": clip(str(exc), 500)})

    def mail_volume(self, owner: str, folder: str) -> list[dict]:
        """Messages and bytes per mail folder of the user's export files, from the listing (no
        message is converted): a single .eml/.msg counts its file's size; messages inside an mbox
        or PST have no size before they are read and count 0 bytes. [{folder, messages, bytes}]"""
        found: dict[str, dict] = {}
        for ref in self.discover(owner, folder):
            if ref.kind is Kind.MESSAGE:
                row = found.setdefault(ref.location, {"folder": ref.location, "messages": 0, "bytes": 0})
                row["messages"] += 1
                row["bytes"] += ref.size or 0
        return sorted(found.values(), key=lambda v: v["folder"])

    @staticmethod
    def _location(rel: str, suffix: str) -> str:
        p = PurePosixPath(rel)
        if suffix in _ICS or suffix in _VCF or suffix in _PST:
            return p.stem
        if suffix in _MBOX:
            return str(p.with_suffix(""))
        return str(p.parent) if str(p.parent) != "." else "INBOX"

    def _list(self, owner: str, path: Path, rel: str, suffix: str, version: str, size: int,
              calendar: str | None = None) -> Iterator[ItemRef]:
        ref = dict(source=self.name, owner=owner, version=version)
        location = calendar or self._location(rel, suffix)
        if suffix in _MAIL_ONE:
            msg = email.message_from_bytes(_emlx_body(path) if suffix == ".emlx" else path.read_bytes(),
                                           policy=email.policy.compat32)
            yield ItemRef(key=f"{owner}/{rel}", kind=Kind.MESSAGE, location=location, size=size,
                          meta=_mail_meta(msg, location, [], datetime.fromtimestamp(path.stat().st_mtime,
                                                                                    timezone.utc)), **ref)
        elif suffix in _MBOX:
            for index, (msg, flags, when) in enumerate(_mbox_messages(path)):
                yield ItemRef(key=f"{owner}/{rel}#mbox:{index}", kind=Kind.MESSAGE, location=location,
                              size=None, meta=_mail_meta(msg, location, flags, when), **ref)
        elif suffix in _MSG:
            kind, where, meta = _msg_listing(path, location, f"{owner}/{rel}")
            yield ItemRef(key=f"{owner}/{rel}", kind=kind, location=where, size=size, meta=meta, **ref)
        elif suffix in _ICS:
            try:
                parts = split_calendar(path.read_bytes())
            except PimError as exc:
                raise UnreadableExport(str(exc)) from None
            for uid, data in parts:
                yield ItemRef(key=f"{owner}/{rel}#ics:{uid}", kind=Kind.EVENT, location=location,
                              size=len(data), meta={"uid": uid}, **ref)
        elif suffix in _VCF:
            try:
                cards = split_vcards(path.read_bytes())
            except PimError as exc:
                raise UnreadableExport(str(exc)) from None
            for index, card in enumerate(cards):
                try:
                    uid, _ = with_contact_uid(card)
                except PimError:
                    uid = None               # extraction says why, for this card alone
                yield ItemRef(key=f"{owner}/{rel}#vcf:{index}", kind=Kind.CONTACT, location=location,
                              size=len(card), meta={"uid": uid}, **ref)
        elif suffix in _PST:
            for node, folder, kind, meta in _pst_listing(path):
                yield ItemRef(key=f"{owner}/{rel}#pst:{node}", kind=kind,
                              location=folder or location, size=None, meta=meta, **ref)

    # -------------------------------------------------------------------------- extract
    def extract(self, folder: str, location: str, dst: Path, key: str | None = None) -> tuple[int, float | None]:
        """Write one item's bytes (MIME, one VCALENDAR, one vCard) to `dst`; returns (size, None)."""
        match = _KEY.match(key or "")
        if not match or key is None:
            raise ItemError(f"not a key of an export file: {key!r}")
        rel, kind, sub = match["rel"], match["kind"], match["sub"]
        path = self.config.root / folder / os.fsdecode(raw_of(rel))
        if kind == "bad":
            raise UnreadableExport(f"{rel} cannot be read as an export file: {self._why(path)}")
        if not path.is_file():
            raise ItemError(f"the export file vanished at the source: {rel}")
        suffix = path.suffix.lower()
        if suffix == ".eml":
            return self._copy(path, dst, rel), None
        try:
            data = self._bytes(path, suffix, kind, sub, rel, key)
        except (ItemError, PimError) as exc:
            if isinstance(exc, ItemError):
                raise
            raise UnreadableExport(f"{rel}: {exc}") from None
        except (OSError, ValueError, EOFError, IndexError) as exc:
            raise UnreadableExport(f"{rel}: {type(exc).__name__}: {clip(str(exc), 300)}") from None
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        return len(data), None

    @staticmethod
    def _copy(path: Path, dst: Path, rel: str) -> int:
        """A message that is a file of its own, copied a block at a time: a message with large
        attachments is never held in memory whole (items inside an mbox, PST or MSG are parsed out
        of their file and are)."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "rb") as fin, open(dst, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                return fout.tell()
        except FileNotFoundError:
            raise ItemError(f"the export file vanished at the source: {rel}") from None
        except OSError as exc:
            raise UnreadableExport(f"{rel}: {type(exc).__name__}: {clip(str(exc), 300)}") from None

    def _why(self, path: Path) -> str:
        try:
            list(self._list("x", path, path.name, path.suffix.lower(), "", 0))
        except Exception as exc:  # noqa: BLE001 - the reason is what we want to show
            return clip(str(exc), 300)
        return "it could not be read when it was listed (it reads now: list the folder again)"

    def _bytes(self, path: Path, suffix: str, kind: str | None, sub: str | None, rel: str, key: str) -> bytes:
        if suffix in _MAIL_ONE:
            return _emlx_body(path) if suffix == ".emlx" else path.read_bytes()
        # (`sub` comes with `kind` in a key: the guards below only tell the type checker so)
        if kind == "mbox" and sub is not None:
            with _parsed.lock:
                box = _parsed.get(path, "mbox", lambda p: mailbox.mbox(str(p), create=False))
                try:
                    return box.get_bytes(int(sub))
                except KeyError:
                    raise ItemError(f"{rel} has no message number {sub} any more (list it again)") from None
        if suffix in _MSG:
            return _msg_bytes(path, rel, key)
        if kind == "ics":
            objects = _parsed.get(path, "ics", lambda p: dict(split_calendar(p.read_bytes())))
            if sub in objects:
                return objects[sub]
            raise ItemError(f"{rel} has no event with UID {sub!r} any more (list it again)")
        if kind == "vcf" and sub is not None:
            cards = _parsed.get(path, "vcf", lambda p: split_vcards(p.read_bytes()))
            if int(sub) >= len(cards):
                raise ItemError(f"{rel} has no card number {sub} any more (list it again)")
            try:
                return with_contact_uid(cards[int(sub)])[1]
            except PimError as exc:
                raise UnreadableExport(f"{rel}, card {sub}: {exc}") from None
        if kind == "pst" and sub is not None:
            return _pst_mime(path, int(sub), rel)
        raise ItemError(f"cannot extract {rel} ({kind or suffix})")


def _key_path(path: Path, base: Path) -> str:
    """`path` below `base` as a key's text: a name that is not UTF-8 spelt without loss (`\\xe4`),
    as the folder source spells it (core.localtree), so that the ledger can store it as text."""
    return key_of(os.fsencode(path.relative_to(base).as_posix()))


def source_for(config: ExportSource) -> ExportFiles:
    """The source for one configured export-files source."""
    return ExportFiles(config)


# ------------------------------------------------------------------------------ mbox and eml
def _emlx_body(path: Path) -> bytes:
    """The message inside an Apple Mail .emlx: a byte count line, the message, a plist."""
    data = path.read_bytes()
    first, _, rest = data.partition(b"\n")
    try:
        return rest[:int(first.strip())]
    except ValueError:
        raise UnreadableExport(f"{path.name} is not an .emlx file (no byte count on its first line)") from None


def _mbox_messages(path: Path) -> Iterator[tuple[Message, list[str], datetime | None]]:
    with open(path, "rb") as f:
        head = f.read(5)
    if head != b"From ":
        raise UnreadableExport(f"{path.name} is not an mbox file (it does not start with 'From ')")
    box = mailbox.mbox(str(path), create=False)
    try:
        for msg in box:
            flags = []
            status = (msg.get("Status") or "") + (msg.get("X-Status") or "")
            for letter, flag in (("R", "\\Seen"), ("A", "\\Answered"), ("F", "\\Flagged"), ("T", "\\Draft")):
                if letter in status:
                    flags.append(flag)
            when = None
            from_line = msg.get_from() or ""
            try:
                when = datetime.strptime(" ".join(from_line.split()[1:6]), "%a %b %d %H:%M:%S %Y") \
                    .replace(tzinfo=timezone.utc)
            except ValueError:
                pass
            yield msg, flags, when
    finally:
        box.close()


# ------------------------------------------------------------------------------------- msg
def _open_msg(path: Path, **options):
    """An Outlook .msg file opened by extract-msg, with its 8-bit strings read in their own code
    page (extract-msg falls back to ISO 8859-15, which garbles a Japanese or Russian message)."""
    import extract_msg
    msg = extract_msg.openMsg(str(path), strict=False, **options)
    try:
        codepage = ansi_codepage(msg)
    except Exception:  # noqa: BLE001 - no code page to be found: extract-msg's guess stays
        codepage = None
    if codepage:
        msg.close()
        msg = extract_msg.openMsg(str(path), strict=False, overrideEncoding=codepage, **options)
    return msg


def _msg_class(msg) -> tuple[Kind, str]:
    cls = msg.classType or "IPM.Note"
    low = cls.lower()
    if low.startswith("ipm.appointment"):
        return Kind.EVENT, cls
    if low.startswith("ipm.contact"):
        return Kind.CONTACT, cls
    return Kind.MESSAGE, cls


def _msg_listing(path: Path, location: str, key: str) -> tuple[Kind, str, dict]:
    """The kind, location and meta of one .msg file. An appointment or contact at the top of the
    user's folder goes to the calendar "Calendar" / the address book "Contacts"."""
    try:
        msg = _open_msg(path, delayAttachments=True)
    except Exception as exc:  # noqa: BLE001 - extract-msg raises many kinds for broken files
        raise UnreadableExport(f"not a readable Outlook .msg file ({type(exc).__name__}: {clip(str(exc), 200)})") \
            from None
    try:
        kind, cls = _msg_class(msg)
        if kind is Kind.EVENT:
            return kind, "Calendar" if location == "INBOX" else location, {"uid": appointment_uid(msg, key),
                                                                            "message_class": cls}
        if kind is Kind.CONTACT:
            return kind, "Contacts" if location == "INBOX" else location, {"uid": contact_uid(key),
                                                                            "message_class": cls}
        when = getattr(msg, "receivedTime", None) or getattr(msg, "date", None)
        meta = {"flags": ["\\Seen"], "internaldate": _iso(when) if isinstance(when, datetime) else None,
                "special_use": None if special_use_of(location) == "\\Inbox" else special_use_of(location),
                "message_id": getattr(msg, "messageId", None), "message_class": cls}
        return Kind.MESSAGE, location, meta
    finally:
        msg.close()


def _msg_bytes(path: Path, rel: str, key: str) -> bytes:
    """One .msg file as MIME (mail, posts, notes, reports, meeting requests), iCalendar
    (appointments) or vCard (contacts)."""
    try:
        msg = _open_msg(path)
    except Exception as exc:  # noqa: BLE001
        raise UnreadableExport(f"{rel}: not a readable Outlook .msg file ({type(exc).__name__})") from None
    try:
        kind, cls = _msg_class(msg)
        if kind is Kind.EVENT:
            return msg_appointment_ical(msg, key)
        if kind is Kind.CONTACT:
            return msg_contact_vcard(msg, key)
        low = cls.lower()
        if not (low.startswith("ipm.note") or low.startswith("report") or low.startswith("ipm.stickynote")
                or low.startswith("ipm.post") or low.startswith("ipm.schedule.meeting") or low == "ipm"):
            raise UnsupportedItem(f"{rel} is an Outlook {cls} item, which is not converted "
                                  "(mail, appointments and contacts are)")
        return _with_own_subject(_msg_mime(msg, rel), path, rel)
    finally:
        msg.close()


def _with_own_subject(mime: bytes, path: Path, rel: str) -> bytes:
    """The message with the subject its .msg file holds (PidTagSubject, read by sources.outlook in
    the code page the file declares) and no NUL in any header: transport headers that Exchange
    folded inside a word, and extract-msg's NUL padding, would otherwise change the subject
    ("о бмена", "20\t18"), and Dovecot stores a NUL as 0x80."""
    try:
        subject = msg_text(path).subject
    except Exception:  # noqa: BLE001 - olefile refuses what extract-msg read: its subject stays
        subject = None
    parsed = email.message_from_bytes(mime, policy=email.policy.SMTP)
    changed = False
    for name, value in list(parsed.items()):
        if "\x00" in str(value):
            parsed.replace_header(name, str(value).replace("\x00", "").strip())
            changed = True
    if subject is not None and str(parsed.get("Subject") or "") != subject:
        del parsed["Subject"]
        parsed["Subject"] = subject
        changed = True
    if not changed:
        return mime
    log.debug("%s: subject or NUL-padded headers taken from the .msg properties", rel)
    return parsed.as_bytes(policy=email.policy.SMTP)


def _msg_mime(msg, rel: str) -> bytes:
    def safe(attr):
        try:
            return getattr(msg, attr)
        except Exception:  # noqa: BLE001 - a body extract-msg cannot decode is left out
            return None
    try:
        mime = msg.asEmailMessage()
        # a .msg saved before it was sent has no transport headers: extract-msg's headers then
        # lack the subject and date, which the properties have
        if mime["Subject"] is None and safe("subject"):
            mime["Subject"] = safe("subject")
        when = safe("date")
        if mime["Date"] is None and isinstance(when, datetime):
            mime["Date"] = email.utils.format_datetime(when if when.tzinfo else when.replace(tzinfo=timezone.utc))
        return mime.as_bytes(policy=email.policy.SMTP)
    except Exception as exc:  # noqa: BLE001 - fall back to rebuilding the message ourselves
        log.debug("%s: extract-msg could not build the MIME (%s); rebuilding it", rel, exc)
    headers = getattr(msg, "header", None)
    atts = []
    for att in getattr(msg, "attachments", []):
        data = getattr(att, "data", None)
        if isinstance(data, bytes):
            atts.append((getattr(att, "longFilename", None) or getattr(att, "shortFilename", None)
                         or "attachment", getattr(att, "mimetype", None), data))
    html = safe("htmlBody")
    return _build_mime(str(headers) if headers else None, safe("body"),
                       html.decode("utf-8", "replace") if isinstance(html, bytes) else html, atts,
                       subject=safe("subject"), sender=safe("sender"), when=safe("date"))


def _build_mime(transport_headers: str | None, text: str | None, html: str | None,
                attachments: list[tuple[str, str | None, bytes]], *, subject=None, sender=None, when=None,
                message_id=None) -> bytes:
    """A MIME message from what a PST or .msg keeps: transport headers (when the message came
    from outside), bodies and attachments. Content headers of the original are replaced."""
    out = EmailMessage(policy=email.policy.SMTP)
    if transport_headers:
        parsed = email.message_from_string(transport_headers.lstrip(), policy=email.policy.compat32)
        for name, value in parsed.items():
            if name.lower().startswith("content-") or name.lower() == "mime-version":
                continue
            try:
                out[name] = value
            except (ValueError, TypeError):
                continue
    if "Subject" not in out and subject:
        out["Subject"] = str(subject)
    if "From" not in out and sender:
        out["From"] = str(sender)
    if "Date" not in out and isinstance(when, datetime):
        out["Date"] = email.utils.format_datetime(when if when.tzinfo else when.replace(tzinfo=timezone.utc))
    if "Message-ID" not in out and message_id:
        out["Message-ID"] = str(message_id)
    out.set_content(text or "" if text or not html else "", cte="quoted-printable")
    if html:
        out.add_alternative(html, subtype="html", cte="quoted-printable")
    for name, mimetype, data in attachments:
        maintype, _, subtype = (mimetype or "application/octet-stream").partition("/")
        out.add_attachment(data, maintype=maintype or "application", subtype=subtype or "octet-stream",
                           filename=name)
    return out.as_bytes()


# ------------------------------------------------------------------------------------- pst
def _entries(obj) -> dict[int, object]:
    found: dict[int, object] = {}
    try:
        for record_set in obj.record_sets:
            for entry in record_set.entries:
                found.setdefault(entry.entry_type, entry)
    except (OSError, IOError):
        pass
    return found


def _named_tag(pst, name: str) -> int | None:
    """The property tag a named property has in this PST (tags of named properties differ per
    file: MS-PST 2.4.7, the name-to-id map). pypff reads the map but does not resolve names."""
    try:
        found = {e.entry_type: e.data for rs in pst.name_to_id_map.record_sets for e in rs.entries}
    except (OSError, IOError, AttributeError):
        return None
    entries, strings = found.get(0x0003) or b"", found.get(0x0004) or b""
    for offset in range(0, len(entries) - 7, 8):
        value, kind, index = struct.unpack_from("<IHH", entries, offset)
        if not kind & 1 or value + 4 > len(strings):           # a numeric name, or a broken offset
            continue
        length = struct.unpack_from("<I", strings, value)[0]
        if strings[value + 4:value + 4 + length].decode("utf-16-le", "replace") == name:
            return 0x8000 + index
    return None


def _integer(entry) -> int | None:
    try:
        return entry.data_as_integer if entry is not None else None
    except (OSError, IOError, TypeError, ValueError):
        return None


def _string(entry) -> str | None:
    try:
        return entry.data_as_string if entry is not None else None
    except (OSError, IOError, TypeError, ValueError):
        return None


def _open_pst(path: Path):
    import pypff
    pst = pypff.file()
    try:
        pst.open(str(path))
    except (OSError, IOError) as exc:
        raise UnreadableExport(f"not a readable PST/OST file ({clip(str(exc), 200)})") from None
    return pst


def _pst_folders(pst) -> Iterator[tuple[list[str], Any, str | None]]:   # (pypff's folders are untyped)
    """(path below the top of the file, folder, special use) of every folder that can hold mail."""
    root = pst.get_root_folder()
    tag = _named_tag(pst, "SourceWellKnownFolderType")
    def walk(folder, path, special):
        yield path, folder, special
        for i in range(folder.number_of_sub_folders):
            sub = folder.get_sub_folder(i)
            name = sub.name or f"folder-{sub.identifier}"
            known = _WELL_KNOWN.get(_integer(_entries(sub).get(tag)) or -1) if tag else None
            special_use = (known or special_use_of(name)) if not path else known
            yield from walk(sub, [*path, name], special_use)
    for i in range(root.number_of_sub_folders):
        top = root.get_sub_folder(i)
        if (top.name or "").strip().lower() in _PST_SKIP:
            continue
        yield from walk(top, [], None)


def _pst_message_meta(msg, special: str | None) -> tuple[Kind, dict]:
    entries = _entries(msg)
    cls = _string(entries.get(_PR_MESSAGE_CLASS)) or "IPM.Note"
    low = cls.lower()
    if not (low.startswith("ipm.note") or low.startswith("report") or low.startswith("ipm.schedule.meeting")
            or low.startswith("ipm.post") or low == "ipm"):
        kind = Kind.EVENT if low.startswith("ipm.appointment") else \
            Kind.CONTACT if low.startswith(("ipm.contact", "ipm.distlist")) else Kind.MESSAGE
        return kind, {"message_class": cls}
    flags_value = _integer(entries.get(_PR_MESSAGE_FLAGS)) or 0
    flags = []
    if flags_value & 0x1:
        flags.append("\\Seen")
    if flags_value & 0x8:
        flags.append("\\Draft")
    if _integer(entries.get(_PR_FLAG_STATUS)) == 2:
        flags.append("\\Flagged")
    verb = _integer(entries.get(_PR_LAST_VERB))
    if verb in (102, 103):                                     # reply, reply to all
        flags.append("\\Answered")
    elif verb == 104:                                          # forward
        flags.append("$Forwarded")
    try:
        when = msg.delivery_time or msg.client_submit_time
    except (OSError, IOError):
        when = None
    return Kind.MESSAGE, {"flags": flags, "internaldate": _iso(when), "special_use": special,
                          "message_id": _string(entries.get(_PR_INTERNET_MESSAGE_ID)), "message_class": cls}


def _pst_listing(path: Path) -> Iterator[tuple[int, str, Kind, dict]]:
    pst = _open_pst(path)
    try:
        for folder_path, folder, special in _pst_folders(pst):
            try:
                count = folder.number_of_sub_messages
            except (OSError, IOError):
                continue
            for i in range(count):
                try:
                    msg = folder.get_sub_message(i)
                    kind, meta = _pst_message_meta(msg, special)
                    node = msg.identifier
                except (OSError, IOError) as exc:
                    log.info("%s: message %d of %s cannot be read: %s", path.name, i, "/".join(folder_path), exc)
                    continue
                meta = {**meta, "pst_folder": "/".join(folder_path)}
                yield node, "/".join(folder_path), kind, meta
    finally:
        pst.close()


def _attachment(att) -> tuple[str, str | None, bytes] | None:
    entries = _entries(att)
    try:
        size = att.size
        data = att.read_buffer(size) if size else b""
    except (OSError, IOError):
        return None
    try:
        name = att.long_filename
    except (OSError, IOError, AttributeError):
        name = None
    mime = _string(entries.get(_PR_ATTACH_MIME_TAG))
    return name or f"attachment-{att.identifier}", mime, data


class _PstIndex:
    """An open PST and where each message is (folder, position), made once per file."""

    def __init__(self, path: Path) -> None:
        self.pst = _open_pst(path)
        self.where: dict[int, tuple[Any, int]] = {}       # node -> (pypff folder, position)
        for _, folder, _ in _pst_folders(self.pst):
            try:
                for i in range(folder.number_of_sub_messages):
                    self.where[folder.get_sub_message(i).identifier] = (folder, i)
            except (OSError, IOError):
                continue

    def message(self, node: int):
        if node not in self.where:
            return None
        folder, i = self.where[node]
        return folder.get_sub_message(i)

    def close(self) -> None:
        self.pst.close()


def _pst_mime(path: Path, node: int, rel: str) -> bytes:
    with _parsed.lock:
        return _pst_mime_of(_parsed.get(path, "pst", _PstIndex), node, rel)


def _pst_mime_of(index: _PstIndex, node: int, rel: str) -> bytes:
    msg = index.message(node)
    if msg is None:
        raise ItemError(f"{rel} has no message {node} any more (list it again)")
    kind, meta = _pst_message_meta(msg, None)
    if kind is not Kind.MESSAGE or "flags" not in meta:
        raise UnsupportedItem(f"{rel}: an Outlook {meta.get('message_class')} item, which is not converted "
                              "(only mail is)")
    def get(attr):
        try:
            return getattr(msg, attr)
        except (OSError, IOError):
            return None
    atts, skipped = [], 0
    for i in range(get("number_of_attachments") or 0):
        found = _attachment(msg.get_attachment(i))
        if found is None:
            skipped += 1
        else:
            atts.append(found)
    text, html = get("plain_text_body"), get("html_body")
    data = _build_mime(get("transport_headers"),
                       text.decode("utf-8", "replace") if isinstance(text, bytes) else text,
                       html.decode("utf-8", "replace") if isinstance(html, bytes) else html, atts,
                       subject=get("subject"), sender=get("sender_name"),
                       when=get("delivery_time") or get("client_submit_time"),
                       message_id=meta.get("message_id"))
    if skipped:
        log.info("%s: message %d: %d attachment(s) could not be read (embedded items)", rel, node, skipped)
    return data
