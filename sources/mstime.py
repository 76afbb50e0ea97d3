"""Microsoft's calendar and contact shapes as open standards: Graph events → iCalendar (RFC 5545),
Graph contacts → vCard 3.0, Windows time zone names → IANA.

Graph has no iCalendar export, so a series is rebuilt here:

- `patternedRecurrence` → RRULE: daily, weekly (BYDAY, WKST), absoluteMonthly (BYMONTHDAY),
  relativeMonthly (BYDAY + BYSETPOS, `last` = -1), absoluteYearly (BYMONTH + BYMONTHDAY),
  relativeYearly (BYMONTH + BYDAY + BYSETPOS), with INTERVAL; the range becomes UNTIL (the end of
  `endDate` in the series' zone), COUNT (`numbered`) or nothing (`noEnd`).
- Times come from Graph in UTC and are written in the event's own zone
  (`originalStartTimeZone`, a Windows name mapped to IANA through the CLDR windowsZones table
  that tzlocal ships), with VTIMEZONE components, so that a weekly 09:00 stays 09:00 across
  daylight saving time. An unknown or custom zone keeps the times in UTC (logged).
- Modified occurrences (Graph instances of type `exception`) become VEVENTs with RECURRENCE-ID;
  occurrences the rule yields but Graph does not list (cancelled) become EXDATE.
- attendees, organizer, reminder (VALARM), categories, body (DESCRIPTION as text, the HTML in
  X-ALT-DESC), all-day (DATE values), sensitivity (CLASS), showAs free (TRANSP), importance (PRIORITY).

vCards are 3.0 (vobject writes them well; CardDAV servers all read 3.0).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
from dateutil import rrule
from tzlocal.windows_tz import win_tz

__all__ = ["iana_zone", "graph_datetime", "recurrence_rule", "event_to_ical", "occurrences", "contact_to_vcard",
           "series_window"]

log = logging.getLogger("umstieg.sources.mstime")

_DAYS = {"sunday": "SU", "monday": "MO", "tuesday": "TU", "wednesday": "WE", "thursday": "TH", "friday": "FR",
         "saturday": "SA"}
_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_CLASS = {"normal": "PUBLIC", "personal": "PRIVATE", "private": "PRIVATE", "confidential": "CONFIDENTIAL"}
_PARTSTAT = {"accepted": "ACCEPTED", "declined": "DECLINED", "tentativelyaccepted": "TENTATIVE",
             "none": "NEEDS-ACTION", "notresponded": "NEEDS-ACTION", "organizer": "ACCEPTED"}
_ROLE = {"required": "REQ-PARTICIPANT", "optional": "OPT-PARTICIPANT", "resource": "NON-PARTICIPANT"}
_PRIORITY = {"high": 1, "normal": 5, "low": 9}
#: How far ahead a series without an end is compared with Graph's instances to find cancelled
#: occurrences; cancellations beyond it are not seen (Graph needs a window for `/instances`).
HORIZON_YEARS = 5


def iana_zone(name: str | None) -> ZoneInfo | None:
    """The IANA zone of a Windows time zone name ("W. Europe Standard Time" → Europe/Berlin).

    IANA names pass through; UTC stays UTC; None for an unknown or custom zone."""
    if not name:
        return None
    if name in ("UTC", "tzone://Microsoft/Utc", "Coordinated Universal Time"):
        return ZoneInfo("UTC")
    iana = win_tz.get(name, name)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def graph_datetime(value: dict) -> datetime:
    """A Graph dateTimeTimeZone ({"dateTime": "2026-03-02T08:00:00.0000000", "timeZone": "UTC"}) as aware datetime."""
    text = value["dateTime"].rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    naive = datetime.fromisoformat(text)
    zone = iana_zone(value.get("timeZone")) or ZoneInfo("UTC")
    return naive.replace(tzinfo=zone)


def _offset(value: str) -> datetime:
    """A Graph DateTimeOffset ("2026-03-09T08:00:00Z") as aware datetime."""
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        frac = "".join(ch for ch in rest if ch.isdigit())[:6]
        zone = rest[len("".join(ch for ch in rest if ch.isdigit())):]
        text = f"{head}.{frac}{zone}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _event_zone(event: dict) -> ZoneInfo:
    zone = iana_zone(event.get("originalStartTimeZone")) or iana_zone(
        ((event.get("recurrence") or {}).get("range") or {}).get("recurrenceTimeZone"))
    if zone is None:
        log.info("event %s: time zone %r unknown: times kept in UTC", event.get("id"),
                 event.get("originalStartTimeZone"))
        zone = ZoneInfo("UTC")
    return zone


def _local(value: datetime, zone: ZoneInfo) -> datetime:
    return value.astimezone(zone)


def _day(value: dict, zone: ZoneInfo) -> date:
    """The date of an all-day event's start or end (midnight in the event's zone)."""
    dt = graph_datetime(value)
    if dt.time() == time(0, 0):
        return dt.date()
    return dt.astimezone(zone).date()


def recurrence_rule(recurrence: dict, start: datetime | date, zone: ZoneInfo) -> dict:
    """A Graph patternedRecurrence as an RRULE (a dict for icalendar's vRecur)."""
    pattern, rng = recurrence.get("pattern") or {}, recurrence.get("range") or {}
    kind = pattern.get("type")
    rule: dict = {}
    days = [_DAYS[d.lower()] for d in pattern.get("daysOfWeek") or [] if d.lower() in _DAYS]
    index = _INDEX.get(str(pattern.get("index") or "first").lower(), 1)
    if kind == "daily":
        rule["FREQ"] = "DAILY"
    elif kind == "weekly":
        rule["FREQ"] = "WEEKLY"
        rule["BYDAY"] = days or [_DAYS[start.strftime("%A").lower()]]
        rule["WKST"] = _DAYS.get(str(pattern.get("firstDayOfWeek") or "sunday").lower(), "SU")
    elif kind == "absoluteMonthly":
        rule["FREQ"] = "MONTHLY"
        rule["BYMONTHDAY"] = [int(pattern.get("dayOfMonth") or start.day)]
    elif kind == "relativeMonthly":
        rule["FREQ"] = "MONTHLY"
        rule["BYDAY"] = days
        rule["BYSETPOS"] = [index]
    elif kind == "absoluteYearly":
        rule["FREQ"] = "YEARLY"
        rule["BYMONTH"] = [int(pattern.get("month") or start.month)]
        rule["BYMONTHDAY"] = [int(pattern.get("dayOfMonth") or start.day)]
    elif kind == "relativeYearly":
        rule["FREQ"] = "YEARLY"
        rule["BYMONTH"] = [int(pattern.get("month") or start.month)]
        rule["BYDAY"] = days
        rule["BYSETPOS"] = [index]
    else:
        raise ValueError(f"unknown recurrence pattern {kind!r}")
    interval = int(pattern.get("interval") or 1)
    if interval > 1:
        rule["INTERVAL"] = interval
    range_type = rng.get("type")
    if range_type == "numbered" and rng.get("numberOfOccurrences"):
        rule["COUNT"] = int(rng["numberOfOccurrences"])
    elif range_type == "endDate" and rng.get("endDate"):
        end = date.fromisoformat(rng["endDate"])
        if isinstance(start, datetime):
            # the series ends at the end of its last day, in its own zone; UNTIL is then UTC
            rule["UNTIL"] = datetime.combine(end, time(23, 59, 59), zone).astimezone(timezone.utc)
        else:
            rule["UNTIL"] = end
    return rule


def occurrences(rule: dict, start: datetime | date, until: datetime) -> list[datetime | date]:
    """The starts a rule yields from `start` up to `until`, by wall-clock arithmetic in start's zone
    (a weekly 09:00 stays 09:00 across a change to summer time)."""
    local = dict(rule)
    if isinstance(start, datetime):
        zone = start.tzinfo
        if "UNTIL" in local:
            local["UNTIL"] = rule["UNTIL"].astimezone(zone).replace(tzinfo=None)
        first = start.replace(tzinfo=None)
        limit = until.astimezone(zone).replace(tzinfo=None)
        found = rrule.rrulestr(icalendar.vRecur(local).to_ical().decode(), dtstart=first)
        return [o.replace(tzinfo=zone) for o in found.between(first, limit, inc=True)]
    first = datetime.combine(start, time(0, 0))
    found = rrule.rrulestr(icalendar.vRecur(local).to_ical().decode(), dtstart=first)
    return [o.date() for o in found.between(first, until.replace(tzinfo=None), inc=True)]


def series_window(event: dict) -> tuple[datetime, datetime]:
    """The UTC window in which to ask Graph for a series' instances (start to the range's end)."""
    start = graph_datetime(event["start"]).astimezone(timezone.utc)
    rng = (event.get("recurrence") or {}).get("range") or {}
    if rng.get("type") == "endDate" and rng.get("endDate"):
        end = datetime.combine(date.fromisoformat(rng["endDate"]), time(0, 0), timezone.utc) + timedelta(days=2)
    elif rng.get("type") == "numbered":
        zone = _event_zone(event)
        all_day = bool(event.get("isAllDay"))
        first = _day(event["start"], zone) if all_day else _local(graph_datetime(event["start"]), zone)
        rule = recurrence_rule(event["recurrence"], first, zone)
        day = first.date() if isinstance(first, datetime) else first
        far = datetime.combine(day, time(0, 0), timezone.utc) + timedelta(days=366 * 100)
        found = occurrences(rule, first, far)
        last = found[-1] if found else first
        last_dt = last if isinstance(last, datetime) else datetime.combine(last, time(0, 0), timezone.utc)
        end = last_dt.astimezone(timezone.utc) + timedelta(days=2)
    else:
        end = max(start, datetime.now(timezone.utc)) + timedelta(days=366 * HORIZON_YEARS)
    return start - timedelta(days=1), end


def _text_of_html(html: str) -> str:
    import lxml.html
    try:
        return lxml.html.fromstring(html).text_content().strip()
    except Exception:  # noqa: BLE001 - an empty or broken body: no description rather than no event
        return ""


def _fill(vevent: icalendar.Event, event: dict, zone: ZoneInfo) -> None:
    """Everything of one Graph event but UID, recurrence and RECURRENCE-ID."""
    all_day = bool(event.get("isAllDay"))
    if all_day:
        vevent.add("dtstart", _day(event["start"], zone))
        vevent.add("dtend", _day(event["end"], zone))
    else:
        end_zone = iana_zone(event.get("originalEndTimeZone")) or zone
        vevent.add("dtstart", _local(graph_datetime(event["start"]), zone))
        vevent.add("dtend", _local(graph_datetime(event["end"]), end_zone))
    vevent.add("summary", event.get("subject") or "")
    stamp = event.get("lastModifiedDateTime") or event.get("createdDateTime")
    vevent.add("dtstamp", _offset(stamp) if stamp else datetime.now(timezone.utc))
    if event.get("createdDateTime"):
        vevent.add("created", _offset(event["createdDateTime"]))
    if event.get("lastModifiedDateTime"):
        vevent.add("last-modified", _offset(event["lastModifiedDateTime"]))
    body = event.get("body") or {}
    if body.get("content"):
        if str(body.get("contentType", "")).lower() == "html":
            text = _text_of_html(body["content"])
            vevent.add("x-alt-desc", body["content"], parameters={"FMTTYPE": "text/html"})
        else:
            text = body["content"]
        if text:
            vevent.add("description", text)
    location = (event.get("location") or {}).get("displayName")
    if location:
        vevent.add("location", location)
    if event.get("categories"):
        vevent.add("categories", list(event["categories"]))
    vevent.add("class", _CLASS.get(str(event.get("sensitivity") or "normal").lower(), "PUBLIC"))
    vevent.add("transp", "TRANSPARENT" if str(event.get("showAs")).lower() == "free" else "OPAQUE")
    if event.get("isCancelled"):
        vevent.add("status", "CANCELLED")
    if str(event.get("importance") or "normal").lower() in ("high", "low"):
        vevent.add("priority", _PRIORITY[str(event["importance"]).lower()])
    organizer = ((event.get("organizer") or {}).get("emailAddress") or {})
    if organizer.get("address"):
        vevent.add("organizer", f"mailto:{organizer['address']}",
                   parameters={"CN": organizer["name"]} if organizer.get("name") else {})
    for att in event.get("attendees") or []:
        addr = (att.get("emailAddress") or {})
        if not addr.get("address"):
            continue
        kind = str(att.get("type") or "required").lower()
        params = {"ROLE": _ROLE.get(kind, "REQ-PARTICIPANT"),
                  "PARTSTAT": _PARTSTAT.get(str((att.get("status") or {}).get("response") or "none").lower(),
                                            "NEEDS-ACTION")}
        if kind == "resource":
            params["CUTYPE"] = "RESOURCE"
        if addr.get("name"):
            params["CN"] = addr["name"]
        vevent.add("attendee", f"mailto:{addr['address']}", parameters=params)
    if event.get("isReminderOn") and event.get("reminderMinutesBeforeStart") is not None:
        alarm = icalendar.Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", event.get("subject") or "Reminder")
        alarm.add("trigger", timedelta(minutes=-int(event["reminderMinutesBeforeStart"])))
        vevent.add_component(alarm)


def event_to_ical(event: dict, instances: list[dict] | None = None, *, changed: list[dict] | None = None,
                  cancelled: list[datetime | date] | None = None) -> bytes:
    """One VCALENDAR for a single event or a whole series (master, exceptions, cancellations).

    `instances` are Graph's instances of a series master over `series_window(event)`: its
    occurrences and exceptions (Graph leaves cancelled occurrences out, so they are what the rule
    yields and Graph does not list). A source that knows them itself (an Outlook item) gives
    `changed` (exceptions, shaped like Graph's, with `originalStart`) and `cancelled` (the original
    starts, in the series' zone, or dates for an all-day series) instead. With neither, a series
    has its rule but no exceptions or cancellations."""
    zone = _event_zone(event)
    uid = event.get("iCalUId") or event["id"]
    cal = icalendar.Calendar()
    cal.add("prodid", "-//umstieg//Microsoft Graph//EN")
    cal.add("version", "2.0")
    master = icalendar.Event()
    master.add("uid", uid)
    _fill(master, event, zone)
    cal.add_component(master)
    if event.get("type") == "seriesMaster" and event.get("recurrence"):
        all_day = bool(event.get("isAllDay"))
        first = _day(event["start"], zone) if all_day else _local(graph_datetime(event["start"]), zone)
        rule = recurrence_rule(event["recurrence"], first, zone)
        master.add("rrule", rule)
        if instances is not None:
            changed, cancelled = _split_instances(instances, zone, rule, first, all_day, event)
        for inst in changed or []:
            exc = icalendar.Event()
            exc.add("uid", uid)
            exc.add("recurrence-id", _original_start(inst, zone, all_day))
            _fill(exc, inst, zone)
            cal.add_component(exc)
        for o in cancelled or []:
            master.add("exdate", o)
    cal.add_missing_timezones()
    return cal.to_ical()


def _original_start(inst: dict, zone: ZoneInfo, all_day: bool) -> datetime | date:
    """Which occurrence of the series an instance is: its original start in the series' zone (the
    date of an all-day one: midnight of its day, in whichever zone Graph wrote it)."""
    original = inst.get("originalStart")
    when = _offset(original) if original else graph_datetime(inst["start"])
    if all_day:
        return when.date() if when.time() == time(0, 0) else when.astimezone(zone).date()
    return when.astimezone(zone)


def _split_instances(instances, zone, rule, first, all_day, event) -> tuple[list[dict], list[datetime | date]]:
    """Graph's instances as (the modified occurrences, the occurrences Graph does not list)."""
    _, hi = series_window(event)
    seen = {_original_start(inst, zone, all_day) for inst in instances}     # aware: compared as instants
    changed = [inst for inst in instances if inst.get("type") == "exception"]
    return changed, [o for o in occurrences(rule, first, hi) if o not in seen]


def contact_to_vcard(contact: dict) -> bytes:
    """A Graph contact as a vCard 3.0."""
    import vobject

    card = vobject.vCard()
    name = contact.get("displayName") or " ".join(
        p for p in (contact.get("givenName"), contact.get("surname")) if p) or (
        (contact.get("emailAddresses") or [{}])[0].get("address") or contact.get("companyName") or "")
    card.add("fn").value = name
    card.add("n").value = vobject.vcard.Name(family=contact.get("surname") or "", given=contact.get("givenName") or "",
                                             additional=contact.get("middleName") or "",
                                             prefix=contact.get("title") or "", suffix=contact.get("generation") or "")
    card.add("uid").value = contact["id"]
    for mail in contact.get("emailAddresses") or []:
        if mail.get("address"):
            e = card.add("email")
            e.value = mail["address"]
            e.type_param = "INTERNET"
    phones = [(p, ["WORK", "VOICE"]) for p in contact.get("businessPhones") or []] + \
             [(p, ["HOME", "VOICE"]) for p in contact.get("homePhones") or []] + \
             ([(contact["mobilePhone"], ["CELL", "VOICE"])] if contact.get("mobilePhone") else [])
    for number, types in phones:
        t = card.add("tel")
        t.value = number
        t.params["TYPE"] = types
    for field, kind in (("businessAddress", "WORK"), ("homeAddress", "HOME"), ("otherAddress", "OTHER")):
        adr = contact.get(field) or {}
        if any(adr.get(k) for k in ("street", "city", "state", "postalCode", "countryOrRegion")):
            a = card.add("adr")
            a.value = vobject.vcard.Address(street=adr.get("street") or "", city=adr.get("city") or "",
                                            region=adr.get("state") or "", code=adr.get("postalCode") or "",
                                            country=adr.get("countryOrRegion") or "")
            a.params["TYPE"] = [kind]
    if contact.get("companyName") or contact.get("department"):
        card.add("org").value = [p for p in (contact.get("companyName") or "", contact.get("department"))
                                 if p is not None]
    if contact.get("jobTitle"):
        card.add("title").value = contact["jobTitle"]
    if contact.get("personalNotes"):
        card.add("note").value = contact["personalNotes"]
    if contact.get("nickName"):
        card.add("nickname").value = contact["nickName"]
    if contact.get("birthday"):
        card.add("bday").value = _offset(contact["birthday"]).date().isoformat()
    if contact.get("categories"):
        card.add("categories").value = list(contact["categories"])
    return card.serialize().encode("utf-8")
