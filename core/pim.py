"""Calendars and contacts as items: splitting export files, and fingerprints a server must keep.

CalDAV and CardDAV servers rewrite what they are sent (Radicale re-serialises every object,
Nextcloud adds properties, folds lines differently, reorders parameters), so the bytes that come
back never equal the bytes that went up. What must survive is a handful of fields: for an event
its UID, SUMMARY, DTSTART, recurrence (RRULE, EXDATE, RECURRENCE-ID) and attendees; for a contact
its UID, FN, N, e-mail addresses, telephone numbers and ORG. A **fingerprint** is those fields,
normalised (times in UTC, telephone numbers as digits, addresses in lower case), each hashed on
its own so that a difference can be named ("SUMMARY differs", "2 attendees instead of 3") and the
whole fits the ledger's 64-character digest column.

Pure functions shared by sources (splitting a multi-event .ics into one calendar object per UID,
a .vcf into one card each) and sinks (fingerprints for find/verify): neither imports the other.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime, timezone

__all__ = ["EVENT_FIELDS", "CONTACT_FIELDS", "PimError", "split_calendar", "split_vcards", "event_uid",
           "contact_uid", "event_fingerprint", "contact_fingerprint", "fingerprint", "differences",
           "with_contact_uid", "instance_count"]

#: The fields of an event's fingerprint, in digest order.
EVENT_FIELDS = ("UID", "SUMMARY", "DTSTART", "RRULE", "EXDATE", "RECURRENCE-ID", "ATTENDEE")
#: The fields of a contact's fingerprint, in digest order.
CONTACT_FIELDS = ("UID", "FN", "N", "EMAIL", "TEL", "ORG")
#: Components of a calendar object resource that carry a UID (RFC 4791 4.1).
_OBJECTS = ("VEVENT", "VTODO", "VJOURNAL", "VFREEBUSY")
_HEX = 6                      # hex characters per field: a change goes unnoticed with p = 1/16.7 million
_EVENT_TAG, _CONTACT_TAG = "E1", "C1"


class PimError(ValueError):
    """The data is not iCalendar / vCard that can be read."""


# ------------------------------------------------------------------------------------ calendars
def _calendar(data: bytes):
    import icalendar
    try:
        cals = icalendar.Calendar.from_ical(data, multiple=True)
    except Exception as exc:                      # noqa: BLE001 - icalendar raises many kinds
        raise PimError(f"not a readable iCalendar file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not cals:
        raise PimError("not an iCalendar file (no VCALENDAR in it)")
    for c in cals:
        if c.name != "VCALENDAR":
            raise PimError(f"not an iCalendar file (it holds a {c.name}, not a VCALENDAR)")
    return cals


def _tzids(component) -> set[str]:
    found = set()
    for sub in component.walk():
        for value in sub.property_items(recursive=False, sorted=False):
            params = getattr(value[1], "params", None)
            if params is not None and "TZID" in params:
                found.add(str(params["TZID"]))
            if isinstance(value[1], list):
                for v in value[1]:
                    p = getattr(v, "params", None)
                    if p is not None and "TZID" in p:
                        found.add(str(p["TZID"]))
    return found


def split_calendar(data: bytes) -> list[tuple[str, bytes]]:
    """One calendar object per UID: [(uid, VCALENDAR bytes)], in the order of the file.

    Each keeps the components of its UID (the series and its changed occurrences) and the
    VTIMEZONEs they refer to; METHOD is left out (a stored calendar object must not have one,
    RFC 4791 4.1). A component without UID gets a stable one made from its content, so that a
    rerun names it the same. Raises PimError when the file cannot be read at all.
    """
    import icalendar
    groups: dict[str, list] = {}
    zones: dict[str, object] = {}
    prodid = None
    for cal in _calendar(data):
        prodid = prodid or cal.get("PRODID")
        for comp in cal.subcomponents:
            if comp.name == "VTIMEZONE":
                zones[str(comp.get("TZID"))] = comp
            elif comp.name in _OBJECTS:
                uid = _uid(comp)
                if not uid:
                    uid = "umstieg-" + hashlib.sha256(comp.to_ical()).hexdigest()[:32]
                    comp["UID"] = uid
                groups.setdefault(uid, []).append(comp)
    out = []
    for uid, comps in groups.items():
        cal = icalendar.Calendar()
        cal.add("VERSION", "2.0")
        cal.add("PRODID", str(prodid) if prodid else "-//umstieg//export//EN")
        wanted = set().union(*(_tzids(c) for c in comps))
        for tzid in sorted(wanted):
            if tzid in zones:
                cal.add_component(zones[tzid])
        for comp in comps:
            cal.add_component(comp)
        out.append((uid, cal.to_ical()))
    return out


def _uid(comp) -> str:
    """A component's UID as text ('' when it has none; the first when it has several)."""
    value = comp.get("UID")
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value or "").strip()


def event_uid(data: bytes) -> str:
    """The UID of a calendar object (one UID per object, RFC 4791 4.1)."""
    uids = {_uid(c) for cal in _calendar(data) for c in cal.subcomponents if c.name in _OBJECTS and _uid(c)}
    if len(uids) != 1:
        raise PimError(f"a calendar object holds exactly one UID, this one {len(uids)}")
    return uids.pop()


def _when(value) -> str:
    """A DTSTART / EXDATE / RECURRENCE-ID value as text: UTC for times with a zone, else as is."""
    dt = getattr(value, "dt", value)
    if isinstance(dt, datetime):
        if dt.tzinfo is not None:
            return dt.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        tzid = getattr(value, "params", {}).get("TZID") if hasattr(value, "params") else None
        return (f"{tzid}/" if tzid else "") + dt.strftime("%Y%m%dT%H%M%S")
    if isinstance(dt, date):
        return dt.strftime("%Y%m%d")
    return str(dt)


def _dates(prop) -> list[str]:
    """Every date of a (possibly repeated, possibly multi-valued) EXDATE / RDATE property."""
    if prop is None:
        return []
    found = []
    for entry in prop if isinstance(prop, list) else [prop]:
        for v in getattr(entry, "dts", [entry]):
            found.append(_when(v))
    return found


def _rule(rrule) -> str:
    if rrule is None:
        return ""
    rules = rrule if isinstance(rrule, list) else [rrule]
    parts = []
    for r in rules:
        if not isinstance(r, dict):               # a rule icalendar could not parse: compare its text
            parts.append(_text(getattr(r, "to_ical", lambda: r)()))
            continue
        items = []
        for key in sorted(r):
            values = r[key] if isinstance(r[key], list) else [r[key]]
            if key == "UNTIL":
                items.append("UNTIL=" + ",".join(_when(v) for v in values))
            else:
                items.append(f"{key}=" + ",".join(str(v).upper() for v in values))
        parts.append(";".join(items))
    return "|".join(sorted(parts))


def _text(value) -> str:
    return " ".join(str(value or "").split())


def event_fields(data: bytes) -> dict[str, str]:
    """The normalised fields of one calendar object (what its fingerprint hashes)."""
    comps = [c for cal in _calendar(data) for c in cal.subcomponents if c.name in _OBJECTS]
    if not comps:
        raise PimError("the calendar object holds no event, task or journal")
    def rid(c) -> str:
        return _when(c["RECURRENCE-ID"]) if c.get("RECURRENCE-ID") is not None else ""
    comps.sort(key=rid)
    masters = [c for c in comps if c.get("RECURRENCE-ID") is None]
    attendees = [(rid(c), len(c.get("ATTENDEE") if isinstance(c.get("ATTENDEE"), list)
                              else [c["ATTENDEE"]] if c.get("ATTENDEE") is not None else [])) for c in comps]
    return {
        "UID": ",".join(sorted({_uid(c) for c in comps})),
        "SUMMARY": "\n".join(f"{rid(c)}={_text(c.get('SUMMARY'))}" for c in comps),
        "DTSTART": "\n".join(f"{rid(c)}={_when(c['DTSTART']) if c.get('DTSTART') is not None else ''}"
                             for c in comps),
        "RRULE": "\n".join(_rule(c.get("RRULE")) for c in masters),
        "EXDATE": ",".join(sorted(d for c in masters for d in _dates(c.get("EXDATE")))),
        "RECURRENCE-ID": ",".join(r for r in (rid(c) for c in comps) if r),
        "ATTENDEE": ";".join(f"{r}={n}" for r, n in attendees),
        "#attendees": str(sum(n for _, n in attendees)),
    }


# ------------------------------------------------------------------------------------- contacts
_BEGIN = re.compile(rb"^BEGIN:VCARD\s*$", re.IGNORECASE)
_END = re.compile(rb"^END:VCARD\s*$", re.IGNORECASE)


def split_vcards(data: bytes) -> list[bytes]:
    """Every vCard of a .vcf file, as its own bytes (line-based, so any version and charset passes).

    Raises PimError when the file holds no complete vCard.
    """
    cards, current, depth = [], [], 0
    for line in data.splitlines(keepends=True):
        bare = line.strip()
        if _BEGIN.match(bare):
            depth += 1
        if depth:
            current.append(line if line.endswith(b"\n") else line + b"\r\n")
        if _END.match(bare) and depth:
            depth -= 1
            if depth == 0:
                cards.append(b"".join(current))
                current = []
    if not cards:
        raise PimError("no complete vCard (BEGIN:VCARD … END:VCARD) in the file")
    return cards


def _card(data: bytes):
    import vobject
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    try:
        card = vobject.readOne(text, ignoreUnreadable=True)
    except Exception as exc:                      # noqa: BLE001 - vobject raises many kinds
        raise PimError(f"not a readable vCard ({type(exc).__name__}: {str(exc)[:200]})") from None
    if card.name.upper() != "VCARD":
        raise PimError(f"not a vCard (it holds a {card.name})")
    return card


def contact_uid(data: bytes) -> str | None:
    """The UID of a vCard, or None when it has none (vCard 2.1 and 3.0 make it optional)."""
    card = _card(data)
    uid = card.contents.get("uid")
    return str(uid[0].value).strip() or None if uid else None


def with_contact_uid(data: bytes) -> tuple[str, bytes]:
    """(uid, card) — a card without UID gets one made from its content (CardDAV requires one,
    RFC 6352 6.3.2.3), the same on every run, inserted after BEGIN:VCARD."""
    uid = contact_uid(data)
    if uid:
        return uid, data
    uid = "umstieg-" + hashlib.sha256(data).hexdigest()[:32]
    head, sep, rest = data.partition(b"\n")
    return uid, head + sep + f"UID:{uid}\r\n".encode() + rest


def _values(card, name: str) -> list:
    return [c.value for c in card.contents.get(name, [])]


def _tel(value: str) -> str:
    value = str(value).strip()
    if value.lower().startswith("tel:"):
        value = value[4:]
    digits = re.sub(r"[^0-9]", "", value)
    return ("+" if value.startswith("+") else "") + digits


def contact_fields(data: bytes) -> dict[str, str]:
    """The normalised fields of one vCard (what its fingerprint hashes)."""
    card = _card(data)
    def joined(v) -> str:
        if hasattr(v, "family"):            # vobject's Name
            v = [v.family, v.given, v.additional, v.prefix, v.suffix]
        if isinstance(v, (list, tuple)):
            return ";".join(_text(" ".join(x) if isinstance(x, (list, tuple)) else x) for x in v).rstrip(";")
        return _text(v)
    return {
        "UID": ",".join(_text(v) for v in _values(card, "uid")),
        "FN": ",".join(_text(v) for v in _values(card, "fn")),
        "N": ",".join(joined(v) for v in _values(card, "n")),
        "EMAIL": ",".join(sorted({_text(v).lower().removeprefix("mailto:") for v in _values(card, "email")})),
        "TEL": ",".join(sorted({_tel(v) for v in _values(card, "tel")})),
        "ORG": ",".join(joined(v) for v in _values(card, "org")),
    }


# ---------------------------------------------------------------------------------- fingerprints
def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HEX]


def _guarded(fields, data: bytes) -> dict[str, str]:
    try:
        return fields(data)
    except PimError:
        raise
    except Exception as exc:                      # noqa: BLE001 - odd data trips the parsers in odd ways
        raise PimError(f"cannot read the object's fields ({type(exc).__name__}: {str(exc)[:200]})") from None


def event_fingerprint(data: bytes) -> str:
    """The fingerprint of one calendar object: `E1` + a short hash per field + `:<attendees>`."""
    f = _guarded(event_fields, data)
    return _EVENT_TAG + "".join(_h(f[k]) for k in EVENT_FIELDS) + ":" + f["#attendees"]


def contact_fingerprint(data: bytes) -> str:
    """The fingerprint of one vCard: `C1` + a short hash per field."""
    f = _guarded(contact_fields, data)
    return _CONTACT_TAG + "".join(_h(f[k]) for k in CONTACT_FIELDS)


def fingerprint(data: bytes) -> str:
    """The fingerprint of a calendar object or a vCard, whichever `data` is."""
    head = data.lstrip()[:200].upper()
    if head.startswith(b"BEGIN:VCARD"):
        return contact_fingerprint(data)
    return event_fingerprint(data)


def differences(expected: str, actual: str) -> list[str]:
    """What differs between two fingerprints, in words ([] when they are equal)."""
    if expected == actual:
        return []
    if expected[:2] != actual[:2]:
        return ["a different kind of object"]
    fields = EVENT_FIELDS if expected.startswith(_EVENT_TAG) else CONTACT_FIELDS
    exp_body, _, exp_n = expected[2:].partition(":")
    act_body, _, act_n = actual[2:].partition(":")
    found = []
    for i, name in enumerate(fields):
        a, b = exp_body[i * _HEX:(i + 1) * _HEX], act_body[i * _HEX:(i + 1) * _HEX]
        if a == b:
            continue
        if name == "ATTENDEE" and exp_n != act_n:
            found.append(f"{act_n} attendee{'s' if act_n != '1' else ''} instead of {exp_n}")
        elif name == "ATTENDEE":
            found.append("attendees differ between occurrences")
        else:
            found.append(f"{name} differs")
    return found or ["the fingerprint differs"]


def instance_count(data: bytes, limit: int) -> int:
    """How many occurrences the largest bounded series of a calendar object has, counted up to
    `limit + 1` (enough to tell "over the server's cap"). Series without COUNT or UNTIL never end
    and are not capped by servers: they count as 1."""
    from dateutil.rrule import rrulestr
    most = 1
    for cal in _calendar(data):
        for comp in cal.subcomponents:
            if comp.name not in _OBJECTS or comp.get("RRULE") is None or comp.get("DTSTART") is None:
                continue
            rules = comp["RRULE"] if isinstance(comp["RRULE"], list) else [comp["RRULE"]]
            extra = len(_dates(comp.get("RDATE")))
            for rule in rules:
                if not isinstance(rule, dict):
                    continue
                if rule.get("COUNT"):
                    n = int(rule["COUNT"][0])
                elif rule.get("UNTIL"):
                    try:
                        it = rrulestr(rule.to_ical().decode(), dtstart=comp["DTSTART"].dt
                                      if isinstance(comp["DTSTART"].dt, datetime)
                                      else datetime.combine(comp["DTSTART"].dt, datetime.min.time()),
                                      ignoretz=False)
                        n = 0
                        for n, _ in enumerate(it, start=1):
                            if n > limit:
                                break
                    except (ValueError, TypeError):
                        continue
                else:
                    continue
                most = max(most, n + extra)
    return most
