"""Microsoft 365 mailboxes (mail, calendars, contacts): the real msal + httpx clients against the
Graph test server, and the conversion of Graph events to iCalendar checked by expanding the result."""

from __future__ import annotations

import email
import re
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import icalendar
import pytest
import recurring_ical_events
import vobject

from core.department import M365Source
from core.errors import ConfigError
from core.items import Kind
from servers.graph import GraphTestServer
from sources.graph import GraphClient
from sources.m365 import MailboxSource
from sources.mstime import event_to_ical, iana_zone, recurrence_rule

SECRET = "m365-secret-Qw3"
UPN = "anna@contoso.example"
BERLIN, LA = ZoneInfo("Europe/Berlin"), ZoneInfo("America/Los_Angeles")


@pytest.fixture
def graph(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPH_TEST_SECRET", SECRET)
    with GraphTestServer(tmp_path, client_secret=SECRET, page_size=3) as server:
        yield server


def _source(server, **extra) -> MailboxSource:
    config = M365Source(name="exo", tenant_id=server.tenant, client_id=server.client_id,
                        client_secret="env:GRAPH_TEST_SECRET", authority=server.authority,
                        graph_url=server.graph_url, ca_file=server.ca_file, timeout=10, **extra)
    return MailboxSource(config, client=GraphClient(config, sleep=lambda s: None))


def _mime(subject: str, body: str = "Hallo") -> bytes:
    return (f"From: Ben <ben@contoso.example>\r\nTo: Anna <{UPN}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash(subject))}@contoso.example>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0100\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def _mailbox(server: GraphTestServer):
    box = server.add_mailbox(UPN)
    wk = box.well_known
    projects = server.add_mail_folder(box, "Projekte", wk["inbox"])
    customers = server.add_mail_folder(box, "Kunden A/B")
    old = server.add_mail_folder(box, "Alt", customers["id"])
    sent = {}
    sent["unread"] = server.put_message(box, wk["inbox"], _mime("ungelesen"))
    sent["read"] = server.put_message(box, wk["inbox"], _mime("gelesen"), is_read=True)
    sent["flagged"] = server.put_message(box, wk["inbox"], _mime("markiert"), is_read=True, flagged=True)
    sent["inbox4"] = server.put_message(box, wk["inbox"], _mime("vierte"))
    sent["project"] = server.put_message(box, projects["id"], _mime("Projekt", "Umzug"))
    sent["sent"] = server.put_message(box, wk["sentitems"], _mime("gesendet"), is_read=True)
    sent["draft"] = server.put_message(box, wk["drafts"], _mime("Entwurf"), is_draft=True)
    sent["trash"] = server.put_message(box, wk["deleteditems"], _mime("weg"), is_read=True)
    sent["old"] = server.put_message(box, old["id"], _mime("alt"), received="2019-05-01T08:30:00Z")
    return box, sent


def test_mail_folder_tree_special_use_and_flags(graph):
    box, sent = _mailbox(graph)
    src = _source(graph, calendars=False, contacts=False)
    assert src.check([UPN]) == []
    refs = {r.key: r for r in src.discover(UPN, UPN)}
    assert all(r.kind is Kind.MESSAGE and r.owner == UPN and r.source == "exo" for r in refs.values())
    assert len(refs) == len(sent)
    where = {name: refs[m["id"]].location for name, m in sent.items()}
    assert where == {"unread": "INBOX", "read": "INBOX", "flagged": "INBOX", "inbox4": "INBOX",
                     "project": "INBOX/Projekte", "sent": "Sent Items", "draft": "Drafts",
                     "trash": "Deleted Items", "old": "Kunden A%2FB/Alt"}
    use = {name: refs[m["id"]].meta["special_use"] for name, m in sent.items()}
    assert use["sent"] == "\\Sent" and use["draft"] == "\\Drafts" and use["trash"] == "\\Trash"
    assert use["unread"] is None and use["project"] is None and use["old"] is None
    flags = {name: refs[m["id"]].meta["flags"] for name, m in sent.items()}
    assert flags["unread"] == [] and flags["read"] == ["\\Seen"] and flags["flagged"] == ["\\Seen", "\\Flagged"]
    assert flags["draft"] == ["\\Draft"]
    old = refs[sent["old"]["id"]]
    assert old.meta["internaldate"] == "2019-05-01T08:30:00Z"
    assert old.meta["message_id"] == sent["old"]["internetMessageId"] and old.version == sent["old"]["changeKey"]
    folders = {path: use for _, path, use in src.mail_folders(UPN)}
    assert folders["Junk Email"] == "\\Junk" and folders["Archive"] == "\\Archive"
    # 4 messages in the inbox, pages of 3: the delta query was followed through its nextLink
    inbox_delta = [p for _, p, _ in graph.log if p.endswith(f"/mailFolders/{box.well_known['inbox']}/messages/delta")]
    assert len(inbox_delta) == 2


def test_message_mime_streamed_byte_for_byte(graph, tmp_path):
    box, sent = _mailbox(graph)
    src = _source(graph, calendars=False, contacts=False)
    for ref in src.discover(UPN, UPN):
        dst = tmp_path / ref.key / "message.eml"
        size, mtime = src.extract(UPN, ref.location, dst, key=ref.key)
        assert dst.read_bytes() == box.mime[ref.key] and size == len(box.mime[ref.key]) and mtime is None


@pytest.mark.corpus
def test_corpus_mail_arrives_byte_for_byte(graph, corpus, tmp_path):
    box = graph.add_mailbox(UPN)
    emls = sorted((corpus / "mail").rglob("*.eml"))[:12]
    assert emls
    for p in emls:
        graph.put_message(box, box.well_known["inbox"], p.read_bytes())
    src = _source(graph, calendars=False, contacts=False)
    refs = list(src.discover(UPN, UPN))
    assert len(refs) == len(emls)
    for ref in refs:
        dst = tmp_path / f"{ref.key}.eml"
        src.extract(UPN, ref.location, dst, key=ref.key)
        assert dst.read_bytes() == box.mime[ref.key]


def test_missing_mail_permission_and_bad_secret(graph, monkeypatch):
    _mailbox(graph)
    graph.denied.add("/mailFolders")
    (problem,) = _source(graph).check([UPN])
    assert "403" in problem and "Mail.Read" in problem and UPN in problem
    graph.denied.clear()
    monkeypatch.setenv("GRAPH_TEST_SECRET", "not-the-secret-4711")
    src = _source(graph)
    (problem,) = src.check([UPN])
    assert "invalid_client" in problem and "not-the-secret-4711" not in problem
    with pytest.raises(ConfigError):
        list(src.discover(UPN, UPN))


# ----------------------------------------------------------------------------- events

def _utc(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000")


def _when(dt: datetime) -> dict:
    return {"dateTime": _utc(dt), "timeZone": "UTC"}


def _instance(start: datetime, end: datetime, kind: str = "occurrence", original: datetime | None = None,
              subject: str = "") -> dict:
    return {"type": kind, "subject": subject, "start": _when(start), "end": _when(end),
            "originalStart": (original or start).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "originalStartTimeZone": "W. Europe Standard Time"}


def _weekly_series():
    """Mon + Wed 09:00-10:00 Berlin from 2 March 2026, 20 times (across the change to summer time):
    the 3rd moved to 14:00 and renamed, the 6th cancelled. Returns (master, instances)."""
    starts = []
    day = date(2026, 3, 2)
    while len(starts) < 20:
        if day.weekday() in (0, 2):
            starts.append(datetime(day.year, day.month, day.day, 9, 0, tzinfo=BERLIN))
        day += timedelta(days=1)
    instances = []
    for i, s in enumerate(starts):
        if i == 5:
            continue                                        # cancelled: Graph does not list it
        if i == 2:
            moved = s.replace(hour=14)
            instances.append(_instance(moved, moved + timedelta(hours=1), "exception", s, "Jour fixe (verschoben)"))
        else:
            instances.append(_instance(s, s + timedelta(hours=1), subject="Jour fixe"))
    master = {"type": "seriesMaster", "subject": "Jour fixe", "iCalUId": "040000008200E00074C5B7101A82E008-jf",
              "start": _when(starts[0]), "end": _when(starts[0] + timedelta(hours=1)),
              "originalStartTimeZone": "W. Europe Standard Time", "originalEndTimeZone": "W. Europe Standard Time",
              "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"],
                                         "firstDayOfWeek": "monday"},
                             "range": {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 20,
                                       "recurrenceTimeZone": "W. Europe Standard Time"}},
              "isReminderOn": True, "reminderMinutesBeforeStart": 15, "sensitivity": "private",
              "categories": ["Team"], "location": {"displayName": "Raum 3.14"},
              "organizer": {"emailAddress": {"name": "Anna", "address": UPN}},
              "attendees": [{"type": "required", "status": {"response": "accepted"},
                             "emailAddress": {"name": "Ben", "address": "ben@contoso.example"}},
                            {"type": "optional", "status": {"response": "tentativelyAccepted"},
                             "emailAddress": {"address": "carl@contoso.example"}},
                            {"type": "resource", "status": {"response": "none"},
                             "emailAddress": {"name": "Beamer", "address": "beamer@contoso.example"}}],
              "body": {"contentType": "html", "content": "<html><body><p>Tagesordnung: <b>Umzug</b></p></body></html>"},
              "lastModifiedDateTime": "2026-02-20T10:00:00.1234567Z", "createdDateTime": "2026-02-01T09:00:00Z"}
    return master, instances


def _monthly_series():
    """The second Tuesday of each month, 10:00-11:30 Los Angeles, until 31 December 2026; July cancelled."""
    starts = []
    for month in range(1, 13):
        tuesdays = [d for d in range(1, 15) if date(2026, month, d).weekday() == 1]
        starts.append(datetime(2026, month, tuesdays[1], 10, 0, tzinfo=LA))
    instances = [_instance(s, s + timedelta(minutes=90), subject="Review") for s in starts if s.month != 7]
    master = {"type": "seriesMaster", "subject": "Review", "start": _when(starts[0]),
              "end": _when(starts[0] + timedelta(minutes=90)),
              "originalStartTimeZone": "Pacific Standard Time", "originalEndTimeZone": "Pacific Standard Time",
              "recurrence": {"pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["tuesday"],
                                         "index": "second"},
                             "range": {"type": "endDate", "startDate": "2026-01-13", "endDate": "2026-12-31"}},
              "showAs": "busy", "lastModifiedDateTime": "2026-01-02T10:00:00Z"}
    return master, instances


def _expanded(ics: bytes) -> set[tuple[datetime, str]]:
    cal = icalendar.Calendar.from_ical(ics)
    found = set()
    for ev in recurring_ical_events.of(cal).between(datetime(2026, 1, 1, tzinfo=timezone.utc),
                                                     datetime(2027, 1, 1, tzinfo=timezone.utc)):
        start = ev.decoded("dtstart")
        found.add((start.astimezone(timezone.utc) if isinstance(start, datetime) else start, str(ev["summary"])))
    return found


def _graph_side(instances: list[dict]) -> set[tuple[datetime, str]]:
    return {(datetime.fromisoformat(i["start"]["dateTime"][:19]).replace(tzinfo=timezone.utc), i["subject"])
            for i in instances}


def test_recurring_events_become_ics_whose_instances_equal_graphs(graph, tmp_path):
    box = graph.add_mailbox(UPN)
    weekly, weekly_instances = _weekly_series()
    monthly, monthly_instances = _monthly_series()
    w = graph.add_event(box, weekly, weekly_instances)
    other = graph.add_calendar(box, "Abteilung")
    m = graph.add_event(box, monthly, monthly_instances, calendar=other)
    src = _source(graph, mail=False, contacts=False)
    refs = {r.key: r for r in src.discover(UPN, UPN)}
    assert set(refs) == {f"event:{w['id']}", f"event:{m['id']}"}
    assert refs[f"event:{w['id']}"].location == "Calendar" and refs[f"event:{m['id']}"].location == "Abteilung"
    assert all(r.kind is Kind.EVENT and r.version for r in refs.values())

    dst = tmp_path / "jf.ics"
    size, _ = src.extract(UPN, "Calendar", dst, key=f"event:{w['id']}")
    ics = dst.read_bytes()
    assert size == len(ics)
    assert _expanded(ics) == _graph_side(weekly_instances)
    assert len(_expanded(ics)) == 19                               # 20 less the cancelled one
    cal = icalendar.Calendar.from_ical(ics)
    master = next(c for c in cal.walk("VEVENT") if "RRULE" in c)
    assert master["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert master.decoded("dtstart") == datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)
    assert master["RRULE"].to_ical() == b"FREQ=WEEKLY;COUNT=20;BYDAY=MO,WE;WKST=MO"
    assert {tz["TZID"] for tz in cal.walk("VTIMEZONE")} == {"Europe/Berlin"}
    assert str(master["UID"]) == weekly["iCalUId"] and master["CLASS"] == "PRIVATE"
    assert master["LOCATION"] == "Raum 3.14" and master["DESCRIPTION"] == "Tagesordnung: Umzug"
    assert master.get("CATEGORIES").cats == ["Team"]
    (alarm,) = master.walk("VALARM")
    assert alarm.decoded("trigger") == timedelta(minutes=-15)
    attendees = {str(a): a.params for a in master["ATTENDEE"]}
    assert attendees["mailto:ben@contoso.example"]["PARTSTAT"] == "ACCEPTED"
    assert attendees["mailto:carl@contoso.example"]["ROLE"] == "OPT-PARTICIPANT"
    assert attendees["mailto:beamer@contoso.example"]["CUTYPE"] == "RESOURCE"
    assert str(master["ORGANIZER"]) == f"mailto:{UPN}"
    (exception,) = [c for c in cal.walk("VEVENT") if "RECURRENCE-ID" in c]
    assert exception.decoded("recurrence-id") == datetime(2026, 3, 9, 9, 0, tzinfo=BERLIN)
    assert exception.decoded("dtstart") == datetime(2026, 3, 9, 14, 0, tzinfo=BERLIN)
    exdates = [d.dt for e in ([master["EXDATE"]] if not isinstance(master["EXDATE"], list) else master["EXDATE"])
               for d in e.dts]
    assert exdates == [datetime(2026, 3, 18, 9, 0, tzinfo=BERLIN)]

    dst = tmp_path / "review.ics"
    src.extract(UPN, "Abteilung", dst, key=f"event:{m['id']}")
    ics = dst.read_bytes()
    assert _expanded(ics) == _graph_side(monthly_instances) and len(_expanded(ics)) == 11
    master = icalendar.Calendar.from_ical(ics).walk("VEVENT")[0]
    assert master["DTSTART"].params["TZID"] == "America/Los_Angeles"
    rule = master["RRULE"]
    assert rule["FREQ"] == ["MONTHLY"] and rule["BYDAY"] == ["TU"] and rule["BYSETPOS"] == [2]
    assert rule["UNTIL"][0] == datetime(2027, 1, 1, 7, 59, 59, tzinfo=timezone.utc)


def test_all_day_and_single_events(graph, tmp_path):
    box = graph.add_mailbox(UPN)
    ev = graph.add_event(box, {
        "type": "singleInstance", "subject": "Betriebsausflug", "isAllDay": True,
        "start": {"dateTime": "2026-05-01T00:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-05-02T00:00:00.0000000", "timeZone": "UTC"},
        "originalStartTimeZone": "Pacific Standard Time", "showAs": "free", "sensitivity": "confidential",
        "body": {"contentType": "text", "content": "Bus um 8"}})
    src = _source(graph, mail=False, contacts=False)
    (ref,) = list(src.discover(UPN, UPN))
    dst = tmp_path / "a.ics"
    src.extract(UPN, ref.location, dst, key=ref.key)
    (vevent,) = icalendar.Calendar.from_ical(dst.read_bytes()).walk("VEVENT")
    assert vevent.decoded("dtstart") == date(2026, 5, 1) and vevent.decoded("dtend") == date(2026, 5, 2)
    assert vevent["TRANSP"] == "TRANSPARENT" and vevent["CLASS"] == "CONFIDENTIAL"
    assert vevent["DESCRIPTION"] == "Bus um 8" and ev["id"] in ref.key


def test_recurrence_patterns_to_rrule():
    start = datetime(2026, 1, 5, 9, 0, tzinfo=BERLIN)

    def rule(pattern, rng=None):
        recurrence = {"pattern": pattern, "range": rng or {"type": "noEnd", "startDate": "2026-01-05"}}
        return icalendar.vRecur(recurrence_rule(recurrence, start, BERLIN)).to_ical().decode()

    assert rule({"type": "daily", "interval": 3}) == "FREQ=DAILY;INTERVAL=3"
    assert rule({"type": "weekly", "interval": 2, "daysOfWeek": ["Tuesday", "Friday"], "firstDayOfWeek": "sunday"},
                {"type": "numbered", "numberOfOccurrences": 7}) == "FREQ=WEEKLY;COUNT=7;INTERVAL=2;BYDAY=TU,FR;WKST=SU"
    assert rule({"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31}) == "FREQ=MONTHLY;BYMONTHDAY=31"
    assert rule({"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"}) == \
        "FREQ=MONTHLY;BYDAY=FR;BYSETPOS=-1"
    assert rule({"type": "absoluteYearly", "interval": 1, "month": 12, "dayOfMonth": 24}) == \
        "FREQ=YEARLY;BYMONTHDAY=24;BYMONTH=12"
    assert rule({"type": "relativeYearly", "interval": 1, "month": 11, "daysOfWeek": ["thursday"], "index": "fourth"},
                {"type": "endDate", "endDate": "2030-12-31"}) == \
        "FREQ=YEARLY;UNTIL=20301231T225959Z;BYDAY=TH;BYMONTH=11;BYSETPOS=4"
    with pytest.raises(ValueError):
        rule({"type": "hourly"})


def test_windows_time_zones_map_to_iana():
    assert str(iana_zone("W. Europe Standard Time")) == "Europe/Berlin"
    assert str(iana_zone("Pacific Standard Time")) == "America/Los_Angeles"
    assert str(iana_zone("Tokyo Standard Time")) == "Asia/Tokyo"
    assert str(iana_zone("Romance Standard Time")) == "Europe/Paris"
    assert str(iana_zone("Europe/Vienna")) == "Europe/Vienna"          # IANA names pass through
    assert str(iana_zone("UTC")) == "UTC"
    assert iana_zone("Customized Time Zone") is None


def test_event_in_unknown_zone_keeps_utc_times():
    ics = event_to_ical({"id": "x", "type": "singleInstance", "subject": "s",
                         "start": {"dateTime": "2026-06-01T07:00:00.0000000", "timeZone": "UTC"},
                         "end": {"dateTime": "2026-06-01T08:00:00.0000000", "timeZone": "UTC"},
                         "originalStartTimeZone": "Customized Time Zone"})
    (vevent,) = icalendar.Calendar.from_ical(ics).walk("VEVENT")
    assert vevent.decoded("dtstart") == datetime(2026, 6, 1, 7, 0, tzinfo=timezone.utc)


# ----------------------------------------------------------------------------- contacts

def test_contacts_as_vcards(graph, tmp_path):
    box = graph.add_mailbox(UPN)
    erika = graph.add_contact(box, {
        "displayName": "Dr. Erika Mustermann", "givenName": "Erika", "surname": "Mustermann", "title": "Dr.",
        "emailAddresses": [{"name": "Erika", "address": "erika@example.org"}, {"address": "e.m@example.net"}],
        "businessPhones": ["+49 30 1234"], "homePhones": [], "mobilePhone": "+49 171 555",
        "businessAddress": {"street": "Amtsweg 1", "city": "Berlin", "postalCode": "10115", "countryOrRegion": "DE"},
        "companyName": "Bezirksamt", "department": "Kämmerei", "jobTitle": "Referentin",
        "personalNotes": "Ruft lieber an;\nnie vor 9", "birthday": "1980-05-17T11:59:00Z"})
    folder = graph.add_contact_folder(box, "Lieferanten")
    graph.add_contact(box, {"displayName": "Papier GmbH", "companyName": "Papier GmbH",
                            "emailAddresses": [{"address": "info@papier.example"}]}, folder=folder)
    src = _source(graph, mail=False, calendars=False)
    refs = list(src.discover(UPN, UPN))
    assert sorted(r.location for r in refs) == ["Contacts", "Lieferanten"]
    assert all(r.kind is Kind.CONTACT and r.key.startswith("contact:") for r in refs)
    ref = next(r for r in refs if r.location == "Contacts")
    assert ref.version == erika["changeKey"]
    dst = tmp_path / "erika.vcf"
    src.extract(UPN, ref.location, dst, key=ref.key)
    card = vobject.readOne(dst.read_text("utf-8"))
    assert card.version.value == "3.0" and card.fn.value == "Dr. Erika Mustermann"
    assert card.n.value.family == "Mustermann" and card.n.value.given == "Erika" and card.n.value.prefix == "Dr."
    assert [e.value for e in card.email_list] == ["erika@example.org", "e.m@example.net"]
    tels = {t.value: t.params["TYPE"] for t in card.tel_list}
    assert tels == {"+49 30 1234": ["WORK", "VOICE"], "+49 171 555": ["CELL", "VOICE"]}
    assert card.adr.value.city == "Berlin" and card.adr.value.code == "10115" and card.adr.params["TYPE"] == ["WORK"]
    assert card.org.value == ["Bezirksamt", "Kämmerei"] and card.title.value == "Referentin"
    assert card.note.value == "Ruft lieber an;\nnie vor 9" and card.bday.value == "1980-05-17"
    assert card.uid.value == erika["id"]


def test_mime_of_messages_parses(graph, tmp_path):
    box, sent = _mailbox(graph)
    src = _source(graph, calendars=False, contacts=False)
    ref = next(r for r in src.discover(UPN, UPN) if r.key == sent["project"]["id"])
    dst = tmp_path / "p.eml"
    src.extract(UPN, ref.location, dst, key=ref.key)
    assert email.message_from_bytes(dst.read_bytes())["Subject"] == "Projekt"


def test_discovery_through_the_flows_records_every_kind_with_its_meta(graph, tmp_path):
    import yaml
    from sqlalchemy import select
    from core.ledger import Item
    from flows import runtime
    from flows.discovery import discover

    box, sent = _mailbox(graph)
    weekly, instances = _weekly_series()
    graph.add_event(box, weekly, instances)
    graph.add_contact(box, {"displayName": "Erika", "emailAddresses": [{"address": "erika@example.org"}]})
    config = {
        "name": "m365-amt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": UPN, "target": "aschmidt"}],
        "sources": [{"name": "exo", "type": "m365", "tenant_id": graph.tenant, "client_id": graph.client_id,
                     "client_secret": "env:GRAPH_TEST_SECRET", "authority": graph.authority,
                     "graph_url": graph.graph_url, "ca_file": str(graph.ca_file)}],
        "target": {"type": "localdir", "root": str(tmp_path / "target")},
    }
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    dept = runtime.department(path)
    ledger = runtime.ledger(dept)
    first = ledger.start_run(dept.name, "test")
    found = discover(dept, ledger, first)
    ledger.finish_run(first, "completed")
    assert found.new[UPN] == len(sent) + 2
    with ledger.session() as s:
        items = {i.key: i for i in s.scalars(select(Item).where(Item.department == "m365-amt"))}
    assert sorted(i.kind for i in items.values()).count("message") == len(sent)
    flagged = items[sent["flagged"]["id"]]
    assert flagged.meta["flags"] == ["\\Seen", "\\Flagged"] and flagged.location == "INBOX"
    assert items[sent["sent"]["id"]].meta["special_use"] == "\\Sent"
    assert {i.kind for i in items.values()} == {"message", "event", "contact"}
    again = discover(dept, ledger, ledger.start_run(dept.name, "test"))
    assert again.unchanged[UPN] == len(sent) + 2 and not again.new and not again.changed


def test_all_day_yearly_series_with_a_cancelled_year():
    def day(y):
        return {"dateTime": f"{y}-06-15T00:00:00.0000000", "timeZone": "UTC"}

    def next_day(y):
        return {"dateTime": f"{y}-06-16T00:00:00.0000000", "timeZone": "UTC"}

    master = {"id": "bday", "type": "seriesMaster", "subject": "Jubiläum", "isAllDay": True,
              "start": day(2026), "end": next_day(2026), "originalStartTimeZone": "W. Europe Standard Time",
              "recurrence": {"pattern": {"type": "absoluteYearly", "interval": 1, "month": 6, "dayOfMonth": 15},
                             "range": {"type": "numbered", "startDate": "2026-06-15", "numberOfOccurrences": 5}}}
    instances = [{"type": "occurrence", "subject": "Jubiläum", "start": day(y), "end": next_day(y),
                  "originalStart": f"{y}-06-15T00:00:00Z"} for y in (2026, 2027, 2029, 2030)]
    cal = icalendar.Calendar.from_ical(event_to_ical(master, instances))
    found = sorted(e.decoded("dtstart") for e in recurring_ical_events.of(cal).between(date(2026, 1, 1),
                                                                                       date(2032, 1, 1)))
    assert found == [date(2026, 6, 15), date(2027, 6, 15), date(2029, 6, 15), date(2030, 6, 15)]
    (vevent,) = cal.walk("VEVENT")
    assert vevent["RRULE"].to_ical() == b"FREQ=YEARLY;COUNT=5;BYMONTHDAY=15;BYMONTH=6"


def test_mail_second_pass_yields_only_the_changes(graph):
    box, sent = _mailbox(graph)
    src = _source(graph, calendars=False, contacts=False)
    first = {r.key: r for r in src.discover(UPN, UPN)}
    inbox = box.messages[box.well_known["inbox"]]
    inbox.put({**sent["unread"], "isRead": True, "changeKey": "ck-read"})       # read in Outlook meanwhile
    new = graph.put_message(box, box.well_known["sentitems"], _mime("neu gesendet"), is_read=True)
    inbox.remove(sent["inbox4"]["id"])
    changes = src.changes(UPN, UPN)
    assert not changes.resynced
    assert {r.key: r.meta["flags"] for r in changes.changed} == {sent["unread"]["id"]: ["\\Seen"],
                                                                new["id"]: ["\\Seen"]}
    assert next(r for r in changes.changed if r.key == new["id"]).meta["special_use"] == "\\Sent"
    assert changes.removed == [sent["inbox4"]["id"]]
    assert first[sent["unread"]["id"]].version != "ck-read"
    quiet = src.changes(UPN, UPN)
    assert quiet.changed == [] and quiet.removed == []
    fresh = _source(graph, calendars=False, contacts=False)                     # a new process: no links
    assert fresh.changes(UPN, UPN).resynced


def test_an_event_that_cannot_be_converted_fails_alone(graph, tmp_path):
    from core.errors import ItemError
    box = graph.add_mailbox(UPN)
    weekly, instances = _weekly_series()
    graph.add_event(box, {**weekly, "subject": "kaputt",
                          "recurrence": {"pattern": {"type": "hourly"}, "range": {"type": "noEnd"}}}, [])
    graph.add_event(box, weekly, instances)
    src = _source(graph, mail=False, contacts=False)
    refs = list(src.discover(UPN, UPN))
    with pytest.raises(ItemError) as info:
        src.extract(UPN, refs[0].location, tmp_path / "a.ics", key=refs[0].key)
    assert "kaputt" in str(info.value) and "hourly" in str(info.value)
    assert src.extract(UPN, refs[1].location, tmp_path / "b.ics", key=refs[1].key)[0] > 0


# ----------------------------------------------------------------------------- answered and forwarded

TARGET_USER, TARGET_PW, MASTER = "aschmidt", "aschmidt-pw-7", ("migrator", "master-secret-5Tz")


def _replied_mailbox(server: GraphTestServer):
    """An inbox with a message replied to, one replied to all, one forwarded, one only opened
    (verb 0) and one never touched; PidTagLastVerbExecuted as Exchange sets it."""
    box = server.add_mailbox(UPN)
    inbox = box.well_known["inbox"]
    return box, {
        "replied": server.put_message(box, inbox, _mime("beantwortet"), is_read=True, last_verb=102),
        "replied_all": server.put_message(box, inbox, _mime("allen geantwortet"), is_read=True, last_verb=103),
        "forwarded": server.put_message(box, inbox, _mime("weitergeleitet"), is_read=True, last_verb=104),
        "opened": server.put_message(box, inbox, _mime("nur geoeffnet"), last_verb=0),
        "plain": server.put_message(box, inbox, _mime("ohne Antwort"), is_read=True),
    }


def test_reply_and_forward_become_answered_and_forwarded_flags(graph):
    box, sent = _replied_mailbox(graph)
    src = _source(graph, calendars=False, contacts=False)
    refs = {r.key: r for r in src.discover(UPN, UPN)}
    flags = {name: sorted(refs[m["id"]].meta["flags"]) for name, m in sent.items()}
    assert flags == {"replied": ["\\Answered", "\\Seen"], "replied_all": ["\\Answered", "\\Seen"],
                     "forwarded": ["$Forwarded", "\\Seen"], "opened": [], "plain": ["\\Seen"]}
    # asked for in the delta listing itself: one request per page, none per message
    assert not any("/messages/" in p and not p.endswith("/delta") for _, p, _ in graph.log)


def test_a_reply_after_the_last_pass_comes_with_the_next_delta(graph):
    box, sent = _replied_mailbox(graph)
    src = _source(graph, calendars=False, contacts=False)
    first = {r.key: r for r in src.discover(UPN, UPN)}
    graph.set_last_verb(box, sent["plain"]["id"], 103)          # replied to all in Outlook meanwhile
    graph.set_last_verb(box, sent["replied"]["id"], 104)        # and the replied one forwarded
    changes = src.changes(UPN, UPN)
    assert not changes.resynced                                 # through the saved delta links
    got = {r.key: r for r in changes.changed}
    assert set(got) == {sent["plain"]["id"], sent["replied"]["id"]} and changes.removed == []
    assert sorted(got[sent["plain"]["id"]].meta["flags"]) == ["\\Answered", "\\Seen"]
    assert sorted(got[sent["replied"]["id"]].meta["flags"]) == ["$Forwarded", "\\Seen"]   # Exchange keeps the last verb
    assert got[sent["plain"]["id"]].version != first[sent["plain"]["id"]].version
    assert src.changes(UPN, UPN).changed == []


def test_last_verb_is_read_whatever_the_spelling_of_its_id():
    from sources.m365 import _last_verb
    assert _last_verb({"singleValueExtendedProperties": [{"id": "Integer 0x1081", "value": "103"}]}) == 103
    assert _last_verb({"singleValueExtendedProperties": [
        {"id": "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name Color", "value": "Green"},
        {"id": "Integer {66f5a359-4659-4830-9070-00047ec6ac6e} Name Pallete", "value": "12"},
        {"id": "integer 0X01081", "value": " 104 "}]}) == 104
    assert _last_verb({"singleValueExtendedProperties": [{"id": "Integer 0x1080", "value": "102"}]}) is None
    assert _last_verb({"singleValueExtendedProperties": [{"id": "Integer 0x1081", "value": None}]}) is None
    assert _last_verb({"id": "m"}) is None and _last_verb({"singleValueExtendedProperties": None}) is None


def test_message_delta_requests_ask_only_what_graph_accepts_there(graph):
    """Graph's message delta takes $select, $top, $expand and a $filter on receivedDateTime only
    (no $search, no $orderby, no other $filter, no $expand of attachments: those are answered 400):
    every delta request umstieg composes stays within them; the pages and passes after it follow
    Graph's own links."""
    box, sent = _replied_mailbox(graph)
    src = _source(graph, calendars=False, contacts=False)
    list(src.discover(UPN, UPN))
    graph.set_last_verb(box, sent["plain"]["id"], 102)
    assert [r.key for r in src.changes(UPN, UPN).changed] == [sent["plain"]["id"]]
    deltas = [q for path, q in graph.queries if path.endswith("/messages/delta")]
    composed = [q for q in deltas if "token" not in q and "$skiptoken" not in q]       # not a server's link
    assert composed and len(deltas) > len(composed)
    for query in composed:
        assert set(query) <= {"$select", "$top", "$expand", "$filter"}, query
        assert re.fullmatch(r"singleValueExtendedProperties\(\$filter=id eq '[^']+'\)", query.get("$expand", "")), query
        assert re.fullmatch(r"(receivedDateTime g[et] \S+)?", query.get("$filter", "")), query
    for query in deltas:
        assert not {"$search", "$orderby"} & set(query), query


@pytest.fixture
def dovecot(tmp_path_factory):
    from servers.dovecot import Dovecot
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAP_TEST_MASTER", MASTER[1])
        server = Dovecot(users={TARGET_USER: TARGET_PW}, master=MASTER).start()
        try:
            yield server
        finally:
            server.cleanup()


def _target_flags(server) -> dict[str, list[tuple[str, ...]]]:
    """Subject -> flags of every message with that subject in the target's INBOX (a list: duplicates show)."""
    from imapclient import IMAPClient
    with IMAPClient(server.host, server.port, ssl=False) as c:
        c.login(TARGET_USER, TARGET_PW)
        c.select_folder("INBOX", readonly=True)
        uids = c.search("ALL")
        found: dict[str, list[tuple[str, ...]]] = {}
        for data in (c.fetch(uids, ["FLAGS", "BODY.PEEK[]"]) if uids else {}).values():
            subject = str(email.message_from_bytes(data[b"BODY[]"])["Subject"])
            found.setdefault(subject, []).append(tuple(sorted(f.decode() for f in data[b"FLAGS"] if f != b"\\Recent")))
        return found


def test_answered_and_forwarded_arrive_at_dovecot_and_a_later_reply_follows(graph, dovecot, tmp_path):
    """discover + process_chunk as the migrate flow runs them, Graph test server → real Dovecot."""
    import yaml
    from flows import runtime
    from flows.discovery import discover
    from flows.steps import process_chunk

    box, sent = _replied_mailbox(graph)
    dept_file = tmp_path / "department.yaml"
    dept_file.write_text(yaml.safe_dump({
        "name": "m365-antworten", "work_dir": str(tmp_path / "work"),
        "users": [{"source": UPN, "target": TARGET_USER}],
        "sources": [{"name": "exo", "type": "m365", "tenant_id": graph.tenant, "client_id": graph.client_id,
                     "client_secret": "env:GRAPH_TEST_SECRET", "authority": graph.authority,
                     "graph_url": graph.graph_url, "ca_file": str(graph.ca_file),
                     "calendars": False, "contacts": False}],
        "target": {"type": "localdir", "root": str(tmp_path / "files")},
        "mail_target": {"type": "imap", "host": dovecot.host, "port": dovecot.port, "security": "none",
                        "master_user": MASTER[0], "password": "env:IMAP_TEST_MASTER"},
    }, allow_unicode=True), encoding="utf-8")
    try:
        dept = runtime.department(dept_file)
        ledger = runtime.ledger(dept)
        run = ledger.start_run(dept.name, "migrate")
        found = discover(dept, ledger, run)
        assert found.new[UPN] == len(sent)
        assert process_chunk(str(dept_file), run, UPN, 1, found.todo[UPN]) == {"verified": len(sent)}
        assert _target_flags(dovecot) == {
            "beantwortet": [("\\Answered", "\\Seen")], "allen geantwortet": [("\\Answered", "\\Seen")],
            "weitergeleitet": [("$Forwarded", "\\Seen")], "nur geoeffnet": [()], "ohne Antwort": [("\\Seen",)]}

        ledger.finish_run(run, "completed")
        graph.set_last_verb(box, sent["plain"]["id"], 102)      # answered at Microsoft 365 after the first run
        run = ledger.start_run(dept.name, "migrate")
        again = discover(dept, ledger, run)
        assert again.changed[UPN] == 1 and again.unchanged[UPN] == len(sent) - 1 and not again.new
        assert process_chunk(str(dept_file), run, UPN, 1, again.todo[UPN]) == {"verified": 1}
        after = _target_flags(dovecot)
        assert after["ohne Antwort"] == [("\\Answered", "\\Seen")]          # the same message, no second copy
        assert sum(len(v) for v in after.values()) == len(sent)
    finally:
        runtime.close_all()
