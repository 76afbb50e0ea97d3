"""Outlook items as open standards: appointments (IPM.Appointment) as iCalendar, contacts
(IPM.Contact) as vCard, read from the MAPI properties of an Outlook .msg file.

Outlook stores neither format. An appointment is a set of properties (MS-OXOCAL): start and end
in UTC, the series' time zone by its Windows name, and the recurrence as a binary blob
(PidLidAppointmentRecur) holding the pattern, its range, the deleted occurrences and the changed
ones with what changed. These are mapped onto the shape of a Microsoft Graph event — the same
model, documented — and written by `sources.mstime`, which already turns Graph events into
RFC 5545 (RRULE, VTIMEZONE, EXDATE, RECURRENCE-ID). A contact is mapped onto a Graph contact
and written as vCard 3.0 the same way.

What is kept of an appointment: subject, body (text), location, start and end in the series' own
zone, all-day, the recurrence (daily, weekly, monthly by day or by n-th weekday, yearly, the last
day of the month, with interval, count or end date), deleted occurrences (EXDATE), changed
occurrences (RECURRENCE-ID with their own times, subject and location), reminder, busy status,
sensitivity, importance, categories, and for meetings the organizer and attendees with their
answers. Not kept: attachments, a changed occurrence's own body (stored in a hidden attachment),
recurrences in the Hijri or other non-Gregorian calendars (the item fails as `unsupported_item`).

The UID is the one Outlook gives a meeting in iCalendar (MS-OXCICAL): the hex of the clean
PidLidGlobalObjectId, or the UID embedded in it when the item came from iCalendar, so an event
exported twice lands on one object at the target.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from core.errors import ItemError
from sources.mstime import contact_to_vcard, event_to_ical, iana_zone

__all__ = ["Appointment", "MsgText", "Recurrence", "RecurrenceError", "ansi_codepage", "declared_codec", "msg_text",
           "appointment_event", "appointment_uid", "contact_uid",
           "msg_appointment", "msg_appointment_ical", "msg_contact_vcard", "parse_recurrence"]

log = logging.getLogger("umstieg.sources.outlook")

_EPOCH = datetime(1601, 1, 1)
#: PSETIDs of the named properties read here (MS-OXPROPS).
_APPOINTMENT = "{00062002-0000-0000-C000-000000000046}"
_MEETING = "{6ED8DA90-450B-101B-98DA-00AA003F1305}"
_COMMON = "{00062008-0000-0000-C000-000000000046}"
_BUSY = {0: "free", 1: "tentative", 2: "busy", 3: "oof", 4: "workingElsewhere"}
_SENSITIVITY = {0: "normal", 1: "personal", 2: "private", 3: "confidential"}
_IMPORTANCE = {0: "low", 1: "normal", 2: "high"}
_DAY_NAMES = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
_NTH = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "last"}
#: PidTagRecipientTrackStatus → Graph's response status.
_TRACK = {0: "none", 1: "organizer", 2: "tentativelyAccepted", 3: "accepted", 4: "declined"}
#: Windows ANSI code page of a locale (PidTagMessageLocaleId), by primary language, for .msg files
#: written without Unicode strings and without PidTagMessageCodepage.
_ANSI_BY_LANGUAGE = {0x11: "cp932", 0x12: "cp949", 0x04: "cp936", 0x19: "cp1251", 0x22: "cp1251",
                     0x23: "cp1251", 0x02: "cp1251", 0x1A: "cp1250", 0x05: "cp1250", 0x15: "cp1250",
                     0x0E: "cp1250", 0x1B: "cp1250", 0x24: "cp1250", 0x18: "cp1250", 0x1C: "cp1250",
                     0x08: "cp1253", 0x1F: "cp1254", 0x0D: "cp1255", 0x01: "cp1256", 0x29: "cp1256",
                     0x25: "cp1257", 0x26: "cp1257", 0x27: "cp1257", 0x1E: "cp874", 0x2A: "cp1258"}


class RecurrenceError(ItemError):
    """A recurrence blob that cannot be read or a pattern that has no iCalendar form here."""

    reason = "unsupported_item"


def _when(minutes: int) -> datetime:
    """A MAPI recurrence time: minutes since 1601-01-01, local to the series' zone (naive)."""
    return _EPOCH + timedelta(minutes=minutes)


@dataclass
class Change:
    """One changed occurrence of a series (ExceptionInfo and ExtendedException)."""

    original: datetime                  # the occurrence's original start, local
    start: datetime                     # its new start and end, local
    end: datetime
    subject: str | None = None
    location: str | None = None
    busy: int | None = None
    reminder: int | None = None         # minutes, when the reminder was changed
    reminder_on: bool | None = None
    all_day: bool | None = None
    flags: int = 0                      # OverrideFlags: what changed (read again for the Unicode copies)


@dataclass
class Recurrence:
    """The parts of an AppointmentRecurrencePattern (MS-OXOCAL 2.2.1.44.5) that iCalendar needs."""

    frequency: int                      # 0x200A daily … 0x200D yearly
    pattern: int                        # 0 day, 1 week, 2 month, 3 month-nth, 4 month-end, 0xA.. Hijri
    calendar: int
    period: int
    days: int = 0                       # weekday mask (bit 0 = Sunday)
    day_of_month: int = 0
    nth: int = 0                        # 1..4, 5 = last
    end_type: int = 0x2023
    count: int = 0
    first_day_of_week: int = 0
    deleted: list[datetime] = field(default_factory=list)
    start_date: datetime | None = None
    end_date: datetime | None = None
    start_offset: int = 0               # minutes after midnight
    end_offset: int = 0
    changes: list[Change] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise RecurrenceError("the recurrence blob (PidLidAppointmentRecur) is truncated")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values[0] if len(values) == 1 else values

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise RecurrenceError("the recurrence blob (PidLidAppointmentRecur) is truncated")
        self.pos += size
        return self.data[self.pos - size:self.pos]


def parse_recurrence(data: bytes) -> Recurrence:
    """Read PidLidAppointmentRecur. Written by hand from MS-OXOCAL 2.2.1.44: extract-msg reads
    only the leading RecurrencePattern (and swaps the month-nth and month layouts), libpff none."""
    r = _Reader(data)
    reader, writer = r.take("<HH")
    if reader != 0x3004 or writer != 0x3004:
        raise RecurrenceError(f"not a recurrence pattern (version {reader:#x}/{writer:#x})")
    frequency, pattern, calendar = r.take("<HHH")
    _first, period, _sliding = r.take("<III")
    rec = Recurrence(frequency=frequency, pattern=pattern, calendar=calendar, period=period)
    if pattern == 0x1:
        rec.days = r.take("<I")
    elif pattern in (0x2, 0x4, 0xA, 0xC):
        rec.day_of_month = r.take("<I")
    elif pattern in (0x3, 0xB):
        rec.days, rec.nth = r.take("<II")
    elif pattern != 0x0:
        raise RecurrenceError(f"unknown recurrence pattern type {pattern:#x}")
    rec.end_type, rec.count, rec.first_day_of_week = r.take("<III")
    deleted = r.take("<I")
    rec.deleted = [_when(r.take("<I")) for _ in range(deleted)]
    modified = r.take("<I")
    r.raw(4 * modified)                  # the changed ones' dates again: ExceptionInfo has them
    start, end = r.take("<II")
    rec.start_date, rec.end_date = _when(start), _when(end)
    if r.pos == len(data):               # a bare RecurrencePattern (a task's): no times, no exceptions
        return rec
    _reader2, writer2 = r.take("<II")
    rec.start_offset, rec.end_offset = r.take("<II")
    for _ in range(r.take("<H")):
        rec.changes.append(_exception_info(r))
    r.raw(r.take("<I"))                  # ReservedBlock1
    try:                                 # ExtendedException: the subjects and locations in Unicode
        for change in rec.changes:
            _extended_exception(r, change, writer2)
    except RecurrenceError:              # cut short by an old writer: the 8-bit ones stay
        log.debug("recurrence blob without (complete) extended exceptions")
    return rec


_ARO_SUBJECT, _ARO_MEETINGTYPE, _ARO_REMINDERDELTA, _ARO_REMINDER = 0x1, 0x2, 0x4, 0x8
_ARO_LOCATION, _ARO_BUSYSTATUS, _ARO_ATTACHMENT, _ARO_SUBTYPE, _ARO_APPTCOLOR = 0x10, 0x20, 0x40, 0x80, 0x100


def _exception_info(r: _Reader) -> Change:
    start, end, original = r.take("<III")
    flags = r.take("<H")
    change = Change(original=_when(original), start=_when(start), end=_when(end), flags=flags)
    if flags & _ARO_SUBJECT:
        _length, length2 = r.take("<HH")
        change.subject = r.raw(length2).decode("cp1252", "replace")
    if flags & _ARO_MEETINGTYPE:
        r.take("<I")
    if flags & _ARO_REMINDERDELTA:
        change.reminder = r.take("<I")
    if flags & _ARO_REMINDER:
        change.reminder_on = bool(r.take("<I"))
    if flags & _ARO_LOCATION:
        _length, length2 = r.take("<HH")
        change.location = r.raw(length2).decode("cp1252", "replace")
    if flags & _ARO_BUSYSTATUS:
        change.busy = r.take("<I")
    if flags & _ARO_ATTACHMENT:
        r.take("<I")
    if flags & _ARO_SUBTYPE:
        change.all_day = bool(r.take("<I"))
    if flags & _ARO_APPTCOLOR:
        r.take("<I")
    return change


def _extended_exception(r: _Reader, change: Change, writer2: int) -> None:
    if writer2 > 0x3008:                 # ChangeHighlight
        r.raw(r.take("<I"))
    r.raw(r.take("<I"))                  # ReservedBlockEE1
    flags = change.flags
    if flags & (_ARO_SUBJECT | _ARO_LOCATION):
        r.take("<III")                   # start, end, original start once more
        if flags & _ARO_SUBJECT:
            change.subject = r.raw(2 * r.take("<H")).decode("utf-16-le", "replace")
        if flags & _ARO_LOCATION:
            change.location = r.raw(2 * r.take("<H")).decode("utf-16-le", "replace")
        r.raw(r.take("<I"))              # ReservedBlockEE2


# ------------------------------------------------------------------------------- to Graph's shape
def _graph_time(value: datetime) -> dict:
    utc = value.astimezone(timezone.utc).replace(tzinfo=None)
    return {"dateTime": utc.isoformat(timespec="seconds"), "timeZone": "UTC"}


def _days(mask: int) -> list[str]:
    return [name for bit, name in enumerate(_DAY_NAMES) if mask & (1 << bit)]


def graph_recurrence(rec: Recurrence, first_local: datetime, zone_name: str | None) -> dict:
    """A MAPI recurrence as Graph's patternedRecurrence. One extension: the last day of the month
    is `dayOfMonth: -1` (Graph has no such pattern; `mstime.recurrence_rule` writes BYMONTHDAY=-1)."""
    if rec.calendar not in (0, 1) or rec.pattern >= 0xA:
        raise RecurrenceError(f"a recurrence in a non-Gregorian calendar (type {rec.calendar:#x}, pattern "
                              f"{rec.pattern:#x}) has no iCalendar form here")
    yearly = rec.frequency == 0x200D
    pattern: dict = {"interval": 1, "firstDayOfWeek": _DAY_NAMES[rec.first_day_of_week % 7]}
    if rec.pattern == 0x0:
        pattern.update(type="daily", interval=max(1, rec.period // 1440))
    elif rec.pattern == 0x1:
        pattern.update(type="weekly", interval=max(1, rec.period), daysOfWeek=_days(rec.days))
    elif rec.pattern in (0x2, 0x4):
        day = -1 if rec.pattern == 0x4 else rec.day_of_month
        if yearly:
            pattern.update(type="absoluteYearly", interval=max(1, rec.period // 12), month=first_local.month,
                           dayOfMonth=day)
        else:
            pattern.update(type="absoluteMonthly", interval=max(1, rec.period), dayOfMonth=day)
    else:                                # 0x3: the n-th (or last) weekday
        pattern.update(type="relativeYearly" if yearly else "relativeMonthly",
                       interval=max(1, rec.period // 12 if yearly else rec.period),
                       daysOfWeek=_days(rec.days), index=_NTH.get(rec.nth, "first"))
        if yearly:
            pattern["month"] = first_local.month
    start = (rec.start_date or first_local).date()
    rng: dict = {"startDate": start.isoformat(), "recurrenceTimeZone": zone_name}
    if rec.end_type == 0x2021 and rec.end_date:
        rng.update(type="endDate", endDate=rec.end_date.date().isoformat())
    elif rec.end_type == 0x2022 and rec.count:
        rng.update(type="numbered", numberOfOccurrences=rec.count)
    else:                                # 0x2023 or 0xFFFFFFFF: no end
        rng["type"] = "noEnd"
    return {"pattern": pattern, "range": rng}


@dataclass
class Appointment:
    """What is read of one Outlook appointment, whatever file it came from."""

    uid: str
    subject: str
    start: datetime                     # aware, UTC
    end: datetime
    zone_name: str | None               # Windows time zone name ("W. Europe Standard Time")
    all_day: bool = False
    body: str | None = None
    location: str | None = None
    busy: int | None = None
    reminder: int | None = None         # minutes before, None when off
    sensitivity: int = 0
    importance: int = 1
    categories: list[str] = field(default_factory=list)
    created: datetime | None = None
    modified: datetime | None = None
    organizer: tuple[str, str] | None = None                       # (name, address)
    attendees: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, address, type, answer
    recurrence: bytes | None = None
    cancelled: bool = False


def _iso_z(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def appointment_event(a: Appointment) -> tuple[dict, list[dict], list[datetime | date]]:
    """The appointment as a Graph event, with its changed occurrences (as Graph's exceptions) and
    the original starts of its deleted ones: what `mstime.event_to_ical` takes."""
    zone = iana_zone(a.zone_name) or ZoneInfo("UTC")
    event: dict = {
        "id": a.uid, "iCalUId": a.uid, "subject": a.subject or "", "isAllDay": a.all_day,
        "start": _graph_time(a.start), "end": _graph_time(a.end),
        "originalStartTimeZone": a.zone_name, "originalEndTimeZone": a.zone_name,
        "body": {"contentType": "text", "content": a.body or ""},
        "location": {"displayName": a.location} if a.location else {},
        "categories": a.categories, "sensitivity": _SENSITIVITY.get(a.sensitivity, "normal"),
        "importance": _IMPORTANCE.get(a.importance, "normal"),
        "showAs": _BUSY.get(a.busy if a.busy is not None else 2, "busy"),
        "isReminderOn": a.reminder is not None, "reminderMinutesBeforeStart": a.reminder,
        "createdDateTime": _iso_z(a.created), "lastModifiedDateTime": _iso_z(a.modified),
        "isCancelled": a.cancelled, "type": "singleInstance",
    }
    if a.organizer:
        event["organizer"] = {"emailAddress": {"name": a.organizer[0], "address": a.organizer[1]}}
    event["attendees"] = [{"type": kind, "status": {"response": answer},
                           "emailAddress": {"name": name, "address": address}}
                          for name, address, kind, answer in a.attendees]
    if not a.recurrence:
        return event, [], []
    rec = parse_recurrence(a.recurrence)
    first_local = a.start.astimezone(zone)
    event["type"] = "seriesMaster"
    event["recurrence"] = graph_recurrence(rec, first_local, a.zone_name)
    # MAPI lists a changed occurrence among the deleted ones too, and again, with its changes, in
    # ExceptionInfo; a deleted one starts at the series' time of day on its (local) date
    changed = {c.original.date(): _changed(event, c, c.original.replace(tzinfo=zone), zone) for c in rec.changes}
    cancelled = [d.date() if a.all_day else datetime.combine(d.date(), first_local.time(), zone)
                 for d in rec.deleted if d.date() not in changed]
    return event, list(changed.values()), cancelled


def _changed(event: dict, change: Change, original: datetime, zone: ZoneInfo) -> dict:
    inst = {k: v for k, v in event.items() if k not in ("recurrence", "type", "id")}
    inst.update(type="exception", originalStart=_iso_z(original),
                start=_graph_time(change.start.replace(tzinfo=zone)),
                end=_graph_time(change.end.replace(tzinfo=zone)))
    if change.subject is not None:
        inst["subject"] = change.subject
    if change.location is not None:
        inst["location"] = {"displayName": change.location} if change.location else {}
    if change.busy is not None:
        inst["showAs"] = _BUSY.get(change.busy, "busy")
    if change.reminder_on is not None:
        inst["isReminderOn"] = change.reminder_on
    if change.reminder is not None:
        inst["reminderMinutesBeforeStart"] = change.reminder
    if change.all_day is not None:
        inst["isAllDay"] = change.all_day
    return inst


# ------------------------------------------------------------------------------------ .msg files
def ansi_codepage(msg) -> str | None:
    """The code page of a .msg file's 8-bit strings, when extract-msg would guess it wrongly:
    PidTagMessageCodepage, else PidTagInternetCodepage, else the Windows ANSI code page of
    PidTagMessageLocaleId (a Python codec name)."""
    if msg.areStringsUnicode:
        return None
    return declared_codec(msg.getPropertyVal("3FFD0003"), msg.getPropertyVal("3FDE0003"),
                          msg.getPropertyVal("3FF10003"))


#: Windows code page identifiers whose Python codec is not simply `cp<n>`.
_CODEPAGE_CODECS = {65001: "utf-8", 1200: "utf-16-le", 1201: "utf-16-be", 20127: "ascii", 20866: "koi8_r",
                    21866: "koi8_u", 50220: "iso2022_jp", 50221: "iso2022_jp", 50222: "iso2022_jp",
                    51932: "euc_jp", 51936: "gb2312", 51949: "euc_kr", 52936: "hz", 54936: "gb18030",
                    10000: "mac_roman", **{28590 + n: f"iso8859_{n}" for n in range(1, 16)}}
#: Chinese locales written in traditional characters (Taiwan, Hong Kong, Macao): Big5, not GBK.
_TRADITIONAL_CHINESE = {0x0404, 0x0C04, 0x1404, 0x7C04}


def _codec(codepage: int | None) -> str | None:
    import codecs
    if not codepage:
        return None
    name = _CODEPAGE_CODECS.get(codepage, f"cp{codepage}")
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


#: Internet code pages (PidTagInternetCodepage: the charset the message had as MIME) -> the Windows
#: ANSI code page of the same script, which is what Outlook writes 8-bit properties in: a 7-bit
#: iso-2022-jp message keeps its strings in Shift-JIS (932), a KOI8-R one in 1251.
_ANSI_OF_INTERNET = {50220: 932, 50221: 932, 50222: 932, 51932: 932, 50225: 949, 51949: 949, 50227: 936,
                     51936: 936, 52936: 936, 54936: 936, 20866: 1251, 21866: 1251, 28595: 1251, 20127: 1252,
                     28591: 1252, 28605: 1252, 28592: 1250, 28597: 1253, 28599: 1254, 28598: 1255, 38598: 1255,
                     28596: 1256, 28594: 1257, 28603: 1257, 51950: 950}


def declared_codec(message_codepage: int | None, internet_codepage: int | None, locale: int | None) -> str | None:
    """The codec of a message's 8-bit strings from what it declares, in order: its code page
    (PidTagMessageCodepage), its Internet code page (PidTagInternetCodepage, as the ANSI code page
    of its script), the ANSI code page of its locale (PidTagMessageLocaleId); None when it declares
    nothing usable."""
    found = _codec(message_codepage) or _codec(_ANSI_OF_INTERNET.get(internet_codepage or 0, internet_codepage))
    if found or not locale:
        return found
    if locale & 0xFFFF in _TRADITIONAL_CHINESE:
        return "cp950"
    return _ANSI_BY_LANGUAGE.get(locale & 0x3FF)


@dataclass(frozen=True)
class MsgText:
    """The subject and plain-text body of a .msg file, as its MAPI properties hold them."""

    subject: str | None
    body: str | None
    codec: str | None                     # what 8-bit strings were decoded with (None: all Unicode)


def msg_text(path) -> MsgText:
    """Read the subject and text body of an Outlook .msg file straight from its compound file
    (MS-OXMSG), independently of extract-msg: Unicode strings as they are, 8-bit strings in the
    code page the file declares (`declared_codec`, Windows-1252 when it declares none); trailing
    NULs (the padding some writers leave) removed. No whitespace is added or taken inside."""
    import olefile
    with olefile.OleFileIO(str(path)) as ole:
        longs = _top_level_longs(ole)
        codec = declared_codec(longs.get(0x3FFD), longs.get(0x3FDE), longs.get(0x3FF1)) or "cp1252"
        used: list[str] = []

        def string(prop: int) -> str | None:
            for kind, decode in ((0x001F, "utf-16-le"), (0x001E, codec)):
                stream = f"__substg1.0_{prop:04X}{kind:04X}"
                if ole.exists(stream):
                    if kind == 0x001E:
                        used.append(codec)
                    return ole.openstream(stream).read().decode(decode, "replace").rstrip("\x00") or None
            return None
        subject, body = string(0x0037), string(0x1000)
    return MsgText(subject=subject, body=body, codec=used[0] if used else None)


def _top_level_longs(ole) -> dict[int, int]:
    """The 32-bit integer properties of the message itself (its property stream: a 32-byte
    header, then 16 bytes per property: type, id, flags, value)."""
    if not ole.exists("__properties_version1.0"):
        return {}
    data = ole.openstream("__properties_version1.0").read()
    found = {}
    for offset in range(32, len(data) - 15, 16):
        kind, prop, _, value = struct.unpack_from("<HHIi", data, offset)
        if kind == 0x0003:
            found[prop] = value & 0xFFFFFFFF
    return found


def contact_uid(key: str) -> str:
    """The UID given to an item that has none of its own (a contact): stable for its source key."""
    return "umstieg-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _global_uid(goid: bytes | None, fallback: str) -> str:
    """The iCalendar UID of an Outlook item (MS-OXCICAL 2.1.3.1.1.20.26)."""
    if not goid:
        return contact_uid(fallback)
    marker = b"vCal-Uid\x01\x00\x00\x00"
    at = goid.find(marker)
    if at == 40:
        return goid[at + len(marker):].split(b"\x00", 1)[0].decode("utf-8", "replace")
    return goid.hex().upper()


def _named(msg, lid: str, guid: str):
    try:
        return msg.getNamedProp(lid, guid)
    except Exception:  # noqa: BLE001 - a broken named-property stream: the property is missing
        return None


def _aware(value) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _zone_name(msg) -> str | None:
    for attr in ("appointmentTimeZoneDefinitionRecur", "appointmentTimeZoneDefinitionStartDisplay"):
        try:
            definition = getattr(msg, attr)
        except Exception:  # noqa: BLE001 - an unreadable definition: try the next one
            continue
        name = getattr(definition, "keyName", None)
        if name:
            return name
    return None


def _attendees(msg) -> tuple[tuple[str, str] | None, list[tuple[str, str, str, str]]]:
    organizer, attendees = None, []
    for r in getattr(msg, "recipients", []):
        address = r.smtpAddress or r.email or ""
        if "@" not in address:
            continue
        name = r.name or ""
        flags = r.getPropertyVal("5FFD0003") or 0
        if flags & 0x2:                  # recipOrganizer
            organizer = (name, address)
            continue
        kind = {1: "required", 2: "optional", 3: "resource"}.get(r.typeFlags & 0xF, "required")
        answer = _TRACK.get(r.getPropertyVal("5FFF0003") or 0, "none")
        attendees.append((name, address, kind, answer))
    return organizer, attendees


def appointment_uid(msg, fallback_uid: str) -> str:
    """The iCalendar UID of an extract-msg calendar object (all a listing needs of it)."""
    goid = _named(msg, "0023", _MEETING) or _named(msg, "0003", _MEETING)
    return _global_uid(goid if isinstance(goid, bytes) else None, fallback_uid)


def msg_appointment(msg, fallback_uid: str) -> Appointment:
    """The appointment of an extract-msg calendar object."""
    start, end = _aware(msg.appointmentStartWhole), _aware(msg.appointmentEndWhole)
    if start is None:
        start = _aware(msg.getPropertyVal("00600040"))
        end = _aware(msg.getPropertyVal("00610040")) or start
    if start is None:
        raise RecurrenceError("the appointment has no start time (PidLidAppointmentStartWhole)")
    reminder_on = _named(msg, "8503", _COMMON)
    reminder = _named(msg, "8501", _COMMON)
    state = _named(msg, "8217", _APPOINTMENT) or 0
    organizer, attendees = _attendees(msg) if state & 0x1 else (None, [])   # asfMeeting
    keywords = msg.getNamedProp("Keywords", "{00020329-0000-0000-C000-000000000046}")
    body = None
    try:
        body = msg.body
    except Exception:  # noqa: BLE001 - a body extract-msg cannot decode is left out
        pass
    return Appointment(
        uid=appointment_uid(msg, fallback_uid),
        subject=msg.subject or "", start=start, end=end or start, zone_name=_zone_name(msg),
        all_day=bool(_named(msg, "8215", _APPOINTMENT)), body=(body or "").strip() or None,
        location=_named(msg, "8208", _APPOINTMENT), busy=_named(msg, "8205", _APPOINTMENT),
        reminder=int(reminder) if reminder_on and reminder is not None else None,
        sensitivity=int(msg.getPropertyVal("00360003") or 0), importance=int(msg.getPropertyVal("00170003", 1)),
        categories=[k for k in (keywords or []) if isinstance(k, str)] if isinstance(keywords, list) else [],
        created=_aware(msg.getPropertyVal("30070040")), modified=_aware(msg.getPropertyVal("30080040")),
        organizer=organizer, attendees=attendees, cancelled=bool(state & 0x4),
        recurrence=_named(msg, "8216", _APPOINTMENT) if _named(msg, "8223", _APPOINTMENT) else None)


def msg_appointment_ical(msg, fallback_uid: str) -> bytes:
    event, changed, cancelled = appointment_event(msg_appointment(msg, fallback_uid))
    return event_to_ical(event, changed=changed, cancelled=cancelled)


def msg_contact_vcard(msg, fallback_uid: str) -> bytes:
    """The vCard of an extract-msg contact."""
    def get(attr):
        try:
            value = getattr(msg, attr, None)
        except Exception:  # noqa: BLE001 - an unreadable property is left out
            return None
        if isinstance(value, str):       # Outlook pads some strings with spaces or NULs
            value = value.strip().strip("\x00").strip()
            return value or None
        return value

    def address(prefix: str) -> dict:
        return {"street": get(f"{prefix}Street"), "city": get(f"{prefix}Locality"),
                "state": get(f"{prefix}StateOrProvince"), "postalCode": get(f"{prefix}PostalCode"),
                "countryOrRegion": get(f"{prefix}Country")}

    emails = [get(f"email{i}EmailAddress") for i in (1, 2, 3)]
    birthday = get("birthdayLocal") or get("birthday")
    notes = get("body")
    contact = {
        "id": contact_uid(fallback_uid), "displayName": get("displayName"), "givenName": get("givenName"),
        "surname": get("surname"), "middleName": get("middleName"), "title": get("displayNamePrefix"),
        "generation": get("generation"), "nickName": get("nickname"),
        "emailAddresses": [{"address": e} for e in emails if e],
        "businessPhones": [p for p in (get("businessTelephoneNumber"), get("business2TelephoneNumber")) if p],
        "homePhones": [p for p in (get("homeTelephoneNumber"), get("home2TelephoneNumber")) if p],
        "mobilePhone": get("mobileTelephoneNumber"),
        "businessAddress": address("workAddress"), "homeAddress": address("homeAddress"),
        "otherAddress": address("otherAddress"),
        "companyName": get("companyName"), "department": get("departmentName"), "jobTitle": get("jobTitle"),
        "personalNotes": notes or None,
        "birthday": _iso_z(datetime.combine(birthday.date(), time(12, 0), timezone.utc))
        if isinstance(birthday, datetime) else None,
        "businessHomePage": get("businessHomePage") or get("webpageUrl"),
    }
    keywords = msg.getNamedProp("Keywords", "{00020329-0000-0000-C000-000000000046}")
    if isinstance(keywords, list):
        contact["categories"] = [k for k in keywords if isinstance(k, str)]
    return contact_to_vcard(contact)
