"""Calendars and contacts as items: splitting export files, and fingerprints a server must keep.

CalDAV and CardDAV servers rewrite what they are sent (Radicale re-serialises every object,
Nextcloud adds properties, folds lines differently, reorders parameters), so the bytes that come
back never equal the bytes that went up. What must survive is a handful of fields: for an event
its UID, SUMMARY, DTSTART, recurrence (RRULE, EXDATE, RECURRENCE-ID) and attendees; for a contact
its UID, FN, N, e-mail addresses and telephone numbers with their types, ORG, addresses, notes
(line breaks included) and photo. A **fingerprint** is those fields, normalised (times in UTC,
telephone numbers as digits, e-mail addresses in lower case, types as a sorted set), each hashed on
its own so that a difference can be named ("SUMMARY differs", "2 attendees instead of 3") and the
whole fits the ledger's 64-character digest column.

Pure functions shared by sources (splitting a multi-event .ics into one calendar object per UID,
a .vcf into one card each, the name of the calendar an .ics file belongs to) and sinks
(fingerprints for find/verify, vCard 2.1 written as 3.0): neither imports the other.
"""

from __future__ import annotations

import base64
import hashlib
import quopri
import re
from datetime import date, datetime, timezone

from core.messages import clip

__all__ = ["EVENT_FIELDS", "CONTACT_FIELDS", "PimError", "split_calendar", "split_vcards", "event_uid",
           "contact_uid", "event_fingerprint", "contact_fingerprint", "fingerprint", "differences",
           "with_contact_uid", "instance_count", "calendar_identity", "components", "vcard_version", "vcard_30"]

#: The fields of an event's fingerprint, in digest order.
EVENT_FIELDS = ("UID", "SUMMARY", "DTSTART", "RRULE", "EXDATE", "RECURRENCE-ID", "ATTENDEE")
#: The fields of a contact's fingerprint, in digest order.
CONTACT_FIELDS = ("UID", "FN", "N", "EMAIL", "TEL", "ORG", "ADR", "NOTE", "PHOTO", "OTHER")
#: vCard properties a server may rewrite by design (RFC 6350: VERSION and PRODID name the writer,
#: REV the time of the last change; a 3.0 server adds what a 4.0 card means by KIND) or that
#: say nothing of the person: left out of a contact's fingerprint. Every other property counts.
_CARD_REWRITTEN = {"version", "prodid", "rev", "kind", "x-abuid"}
#: Components of a calendar object resource that carry a UID (RFC 4791 4.1).
_OBJECTS = ("VEVENT", "VTODO", "VJOURNAL", "VFREEBUSY")
_HEX = 6                      # hex characters per field: a change goes unnoticed with p = 1/16.7 million
_EVENT_TAG, _CONTACT_TAG = "E1", "C3"     # C1: before ADR, NOTE, PHOTO and types; C2: before OTHER


class PimError(ValueError):
    """The data is not iCalendar / vCard that can be read."""


# ------------------------------------------------------------------------------------ calendars
def _calendar(data: bytes):
    import icalendar
    try:
        cals = icalendar.Calendar.from_ical(data, multiple=True)
    except Exception as exc:                      # noqa: BLE001 - icalendar raises many kinds
        raise PimError(f"not a readable iCalendar file ({type(exc).__name__}: {clip(str(exc), 200)})") from None
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
    zones: dict[str, icalendar.Component] = {}
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


def components(data: bytes) -> set[str]:
    """The kinds of calendar object a calendar object resource holds (VEVENT, VTODO, VJOURNAL, …)."""
    return {c.name for cal in _calendar(data) for c in cal.subcomponents if c.name in _OBJECTS}


_CAL_PROPERTY = re.compile(rb"^(X-WR-CALNAME|X-WR-RELCALID)(?:;[^:\r\n]*)?:((?:[^\r\n]*)(?:\r?\n[ \t][^\r\n]*)*)",
                           re.IGNORECASE | re.MULTILINE)


def calendar_identity(data: bytes) -> tuple[str | None, str | None]:
    """(name, id) of the calendar an iCalendar file was exported from: `X-WR-CALNAME` and
    `X-WR-RELCALID` (Outlook, Apple and Google write them), None where the file has none.

    A calendar exported as many files (one per month, per item, per export run) is one calendar
    by these, whatever the files are called. Read with a pattern over the raw text rather than
    with icalendar: only two properties of the calendar itself are wanted, and listing a folder
    of large exports must not parse every event a second time (split_calendar does that once).
    """
    found: dict[str, str] = {}
    for match in _CAL_PROPERTY.finditer(data):
        name = match.group(1).upper().decode()
        if name in found:
            continue
        raw = re.sub(rb"\r?\n[ \t]", b"", match.group(2))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", "replace")
        text = re.sub(r"\\([\\;,nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), text).strip()
        if text:
            found[name] = text
    return found.get("X-WR-CALNAME"), found.get("X-WR-RELCALID")


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
            to_ical = getattr(r, "to_ical", None)
            parts.append(_text(to_ical() if to_ical is not None else r))
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


_VERSION = re.compile(rb"^VERSION\s*:\s*([0-9.]+)\s*$", re.IGNORECASE | re.MULTILINE)
#: vCard 2.1 parameters written bare (`TEL;WORK;VOICE:`) that are not types.
_BARE_ENCODINGS = {"QUOTED-PRINTABLE", "BASE64", "8BIT", "7BIT", "B"}
#: Properties whose value has components separated by `;` (vCard 3.0: RFC 2426 3.1.2, 3.2.1, 3.5.5).
_STRUCTURED = {"N", "ADR", "ORG"}
#: Properties whose value is taken as it is: numbers, addresses, dates, identifiers, URIs, binary data.
_VERBATIM = {"VERSION", "TEL", "EMAIL", "URL", "UID", "BDAY", "REV", "TZ", "KEY", "PHOTO", "LOGO", "SOUND",
             "PRODID", "SORT-STRING", "CLASS"}


def vcard_version(data: bytes) -> str | None:
    """The VERSION of a vCard ("2.1", "3.0", "4.0"), or None when it states none."""
    match = _VERSION.search(data)
    return match.group(1).decode() if match else None


def _logical_lines(data: bytes) -> list[bytes]:
    """The content lines of a vCard 2.1, each on one line.

    vCard 2.1 folds like later versions (a line starting with white space continues the one
    before) but also has quoted-printable values whose soft line breaks (`=` at the end of a line)
    continue on a line that does not start with white space. Base64 values end with an empty line.
    """
    lines: list[bytes] = []
    quoted = False
    for raw in data.splitlines():
        if quoted and lines:
            lines[-1] += b"\r\n" + raw                # quopri takes the soft line break out
            quoted = raw.endswith(b"=")
            continue
        if raw[:1] in (b" ", b"\t") and lines:
            lines[-1] += raw[1:] if not _base64_line(lines[-1]) else raw.strip()
            continue
        if not raw.strip():
            continue
        lines.append(raw)
        head = raw.split(b":", 1)[0].upper()
        quoted = b"QUOTED-PRINTABLE" in head and raw.endswith(b"=")
    return lines


def _base64_line(line: bytes) -> bool:
    head = line.split(b":", 1)[0].upper()
    return b"BASE64" in head or b"ENCODING=B" in head


def _split_escaped(text: str, sep: str) -> list[str]:
    """`text` split at every `sep` not escaped with a backslash, the escapes of `sep` taken out."""
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == sep:
            current.append(sep)
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _param_value(value: str) -> str:
    return f'"{value}"' if any(c in value for c in ':;,') else value


def _fold(line: str) -> bytes:
    """One content line as UTF-8, folded at 75 octets without splitting a character (RFC 2426 2.6)."""
    out, width = bytearray(), 0
    for ch in line:
        size = len(ch.encode("utf-8"))
        if width + size > 75:
            out += b"\r\n "
            width = 1
        out += ch.encode("utf-8")
        width += size
    return bytes(out) + b"\r\n"


def vcard_30(data: bytes) -> bytes:
    """A vCard 2.1 written as vCard 3.0 (RFC 2426), keeping every property; other versions as they are.

    CardDAV servers must refuse 2.1 (Nextcloud answers 415), and Outlook exports 2.1. What changes
    between the two versions is the syntax of a content line, so the conversion is done here line
    by line rather than through vobject, whose 2.1 reading loses data: it cannot parse a
    quoted-printable value with soft line breaks (with `ignoreUnreadable` it drops the line), it
    keeps bare parameters (`TEL;WORK;VOICE:`) apart from TYPE and writes them nowhere, and it cuts
    a NOTE at its first comma (unescaped in 2.1, a list separator in 3.0). What changes:

    - bare parameters become TYPE values (`TEL;TYPE=WORK,VOICE:`), `ENCODING=BASE64` becomes
      `ENCODING=b`, quoted-printable values are decoded, `CHARSET` values are decoded to UTF-8
      (a card without CHARSET is read as UTF-8 when it is, else as Windows-1252, Outlook's default);
    - text is escaped as 3.0 wants (`,` `;` `\\` and line breaks), structured values (N, ADR, ORG)
      per component, GEO `lat,long` becomes `lat;long`, `VALUE=URL` becomes `VALUE=uri`;
    - a card without FN gets one made from N (3.0 requires FN).
    """
    if vcard_version(data) != "2.1":
        return data
    try:
        data.decode("utf-8")
        default_charset = "utf-8"
    except UnicodeDecodeError:
        default_charset = "cp1252"
    out: list[str] = []
    names: dict[str, list[str]] = {}
    for line in _logical_lines(data):
        head, colon, raw_value = line.partition(b":")
        if not colon:
            raise PimError(f"not a vCard 2.1 content line: {line[:60]!r}")
        head_text = head.decode("ascii", "replace")
        name, *params = [p.strip() for p in head_text.split(";")]
        group, _, bare_name = name.rpartition(".")
        upper = bare_name.upper()
        types: list[str] = []
        kept: list[tuple[str, str]] = []
        encoding, charset = None, default_charset
        for param in params:
            key, eq, val = param.partition("=")
            key_u = key.strip().upper()
            if not eq:
                if key_u in _BARE_ENCODINGS:
                    encoding = key_u
                elif key_u:
                    types.append(key.strip())
            elif key_u == "TYPE":
                types += [t.strip() for t in val.split(",") if t.strip()]
            elif key_u == "ENCODING":
                encoding = val.strip().upper()
            elif key_u == "CHARSET":
                charset = val.strip()
            elif key_u == "VALUE" and val.strip().upper() in ("URL", "URI"):
                kept.append(("VALUE", "uri"))
            else:
                kept.append((key.strip().upper(), val.strip()))
        if encoding in ("BASE64", "B"):
            value = re.sub(r"\s+", "", raw_value.decode("ascii", "replace"))
            kept.insert(0, ("ENCODING", "b"))
        else:
            value_bytes = quopri.decodestring(raw_value) if encoding == "QUOTED-PRINTABLE" else raw_value
            try:
                value = value_bytes.decode(charset)
            except (LookupError, UnicodeDecodeError):
                value = value_bytes.decode(default_charset, "replace")
            if upper == "VERSION":
                value = "3.0"
            elif upper == "GEO":
                value = ";".join(v.strip() for v in value.split(","))
            elif upper in _STRUCTURED:
                parts = _split_escaped(value, ";")
                names.setdefault(upper, parts)
                value = ";".join(_escape(part) for part in parts)
            elif upper == "CATEGORIES":
                value = ",".join(_escape(v.strip()) for v in value.split(","))
            elif upper not in _VERBATIM:
                value = _escape(value)
        param_text = "".join(f";{k}={_param_value(v)}" for k, v in kept)
        if types:
            param_text += ";TYPE=" + ",".join(_param_value(t) for t in types)
        out.append(f"{group + '.' if group else ''}{bare_name}{param_text}:{value}")
    upper_names = {o.split(":", 1)[0].split(";", 1)[0].rpartition(".")[2].upper() for o in out}
    if "FN" not in upper_names:
        n = names.get("N") or []
        parts = [p.strip() for p in (n[3:4] + n[1:3] + n[0:1] + n[4:5]) if p.strip()]
        fn = " ".join(parts) or (names.get("ORG") or [""])[0].strip()
        if fn:
            end = next(i for i, o in enumerate(out) if o.upper().startswith("VERSION"))
            out.insert(end + 1, f"FN:{_escape(fn)}")
    return b"".join(_fold(line) for line in out)


def _escape(text: str) -> str:
    """Text escaped as vCard 3.0 wants it (RFC 2426 4): backslash, comma, semicolon, line breaks."""
    from vobject.base import backslashEscape
    return backslashEscape(text)


def _card(data: bytes):
    import vobject
    data = vcard_30(data)              # vobject reads 2.1 badly (see vcard_30): read it as 3.0
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    try:
        card = vobject.readOne(text, ignoreUnreadable=True)
    except Exception as exc:                      # noqa: BLE001 - vobject raises many kinds
        raise PimError(f"not a readable vCard ({type(exc).__name__}: {clip(str(exc), 200)})") from None
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


def _types(line) -> str:
    """A property's types as a sorted set in lower case, however written: `TYPE=WORK,VOICE`,
    `TYPE=work;TYPE=voice`, 4.0's `TYPE="work,voice"`, or 2.1's bare `WORK;VOICE` in a 3.0 card."""
    found = set()
    for value in [*line.params.get("TYPE", []), *getattr(line, "singletonparams", [])]:
        found |= {t.strip().strip('"').lower() for t in str(value).split(",") if t.strip().strip('"')}
    return "+".join(sorted(found))


def _note(value) -> str:
    """A note with its line breaks, white space inside each line collapsed."""
    lines = [" ".join(line.split()) for line in str(value or "").replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def _photo(value) -> str:
    """A photo as the hash of its bytes (inline, base64 or a `data:` URI) or as its URI."""
    if isinstance(value, str) and value.startswith("data:") and "," in value:
        head, _, body = value.partition(",")
        if head.endswith(";base64"):
            try:
                value = base64.b64decode(body)
            except ValueError:
                pass
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    return _text(value)


def contact_fields(data: bytes) -> dict[str, str]:
    """The normalised fields of one vCard (what its fingerprint hashes)."""
    card = _card(data)
    def joined(v) -> str:
        if hasattr(v, "family"):            # vobject's Name
            v = [v.family, v.given, v.additional, v.prefix, v.suffix]
        elif hasattr(v, "street"):          # vobject's Address
            v = [v.box, v.extended, v.street, v.city, v.region, v.code, v.country]
        if isinstance(v, (list, tuple)):
            return ";".join(_text(" ".join(x) if isinstance(x, (list, tuple)) else x) for x in v).rstrip(";")
        return _text(v)
    lines = lambda name: card.contents.get(name, [])      # noqa: E731
    return {
        "UID": ",".join(_text(v) for v in _values(card, "uid")),
        "FN": ",".join(_text(v) for v in _values(card, "fn")),
        "N": ",".join(joined(v) for v in _values(card, "n")),
        "EMAIL": ",".join(sorted({f"{_text(c.value).lower().removeprefix('mailto:')}/{_types(c)}"
                                  for c in lines("email")})),
        "TEL": ",".join(sorted({f"{_tel(c.value)}/{_types(c)}" for c in lines("tel")})),
        "ORG": ",".join(joined(v) for v in _values(card, "org")),
        "ADR": ",".join(sorted(f"{joined(c.value)}/{_types(c)}" for c in lines("adr"))),
        "NOTE": "\n--\n".join(_note(v) for v in _values(card, "note")),
        "PHOTO": ",".join(sorted(_photo(v) for v in _values(card, "photo"))),
        "OTHER": "\n".join(sorted(_other(card))),
    }


_CARD_FIELDS_NAMED = {"uid", "fn", "n", "email", "tel", "org", "adr", "note", "photo"}


def _other(card) -> list[str]:
    """Every other property of a card, each as `NAME;types:value`, so that verification sees a
    title, a birthday, a web address, a nickname, categories or a vendor's X- property that a
    server dropped or changed, with their types. Dates are compared without separators (a 3.0
    server may write 1980-01-02 as 19800102); group prefixes (`item1.`) are left out."""
    found = []
    for name, lines in card.contents.items():
        if name in _CARD_FIELDS_NAMED or name in _CARD_REWRITTEN:
            continue
        for line in lines:
            value = line.value
            if isinstance(value, (list, tuple)):
                value = ",".join(_text(v) for v in value)
            elif isinstance(value, (bytes, bytearray)):
                value = _photo(value)
            else:
                value = _text(value)
            if name in ("bday", "anniversary", "deathdate"):
                value = re.sub(r"[-:]", "", value)
            found.append(f"{name.upper()};{_types(line)}:{value}")
    return found


# ---------------------------------------------------------------------------------- fingerprints
def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HEX]


def _guarded(fields, data: bytes) -> dict[str, str]:
    try:
        return fields(data)
    except PimError:
        raise
    except Exception as exc:                      # noqa: BLE001 - odd data trips the parsers in odd ways
        raise PimError(f"cannot read the object's fields ({type(exc).__name__}: {clip(str(exc), 200)})") from None


def event_fingerprint(data: bytes) -> str:
    """The fingerprint of one calendar object: `E1` + a short hash per field + `:<attendees>`."""
    f = _guarded(event_fields, data)
    return _EVENT_TAG + "".join(_h(f[k]) for k in EVENT_FIELDS) + ":" + f["#attendees"]


def contact_fingerprint(data: bytes) -> str:
    """The fingerprint of one vCard: `C3` + a short hash per field."""
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
    import icalendar
    from dateutil.rrule import rrulestr
    most = 1
    for cal in _calendar(data):
        for comp in cal.subcomponents:
            if comp.name not in _OBJECTS or comp.get("RRULE") is None or comp.get("DTSTART") is None:
                continue
            rules = comp["RRULE"] if isinstance(comp["RRULE"], list) else [comp["RRULE"]]
            extra = len(_dates(comp.get("RDATE")))
            for rule in rules:
                if not isinstance(rule, icalendar.vRecur):
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
