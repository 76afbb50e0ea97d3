"""sources/ews.py driven by the unmodified exchangelib against the EWS test server (tests/servers/ews.py)."""

from __future__ import annotations

import logging
from datetime import date, datetime, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

from core.department import EwsSource
from core.errors import FatalError, ItemError, TransientError
from core.items import Kind
from sources.ews import source_for
from servers.ews import EwsTestServer

PASSWORD = "Pa55-w0rd-EWS-svc"
ANNA, BERT = "anna@example.org", "bert@example.org"


@pytest.fixture(autouse=True)
def _fresh_exchangelib(monkeypatch):
    """exchangelib caches one Protocol per endpoint and credentials: start and end each test without."""
    from exchangelib.protocol import Protocol
    monkeypatch.setenv("EWS_TEST_PASSWORD", PASSWORD)
    Protocol.clear_cache()
    yield
    Protocol.clear_cache()


@pytest.fixture
def server():
    with EwsTestServer(users={"svc": PASSWORD}, impersonation={"svc": {ANNA}}) as s:
        s.mailbox(ANNA)
        s.mailbox(BERT)                          # exists, but svc may not impersonate it
        yield s


def config(server: EwsTestServer, **kw) -> EwsSource:
    fields = dict(name="exchange", url=server.url, username="svc", password="env:EWS_TEST_PASSWORD", auth="basic")
    if server.ca_file is not None:
        fields["ca_file"] = server.ca_file
    return EwsSource(**{**fields, **kw})


def mail(n: int, subject: str = "Sitzung", body: str = "Guten Tag,\nanbei die Unterlagen.\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Referat 3 <referat3@example.org>"
    msg["To"] = ANNA
    msg["Subject"] = f"{subject} {n}"
    msg["Message-ID"] = f"<msg-{n}@example.org>"
    msg["Date"] = "Mon, 02 Mar 2026 09:30:00 +0100"
    msg.set_content(body + "Grüße\n")
    return msg.as_bytes()


# A weekly series as Exchange exports it (Windows zone name with its VTIMEZONE): one occurrence
# moved and renamed (RECURRENCE-ID), one deleted (EXDATE).
SERIES = b"""BEGIN:VCALENDAR
METHOD:PUBLISH
PRODID:Microsoft Exchange Server 2010
VERSION:2.0
BEGIN:VTIMEZONE
TZID:W. Europe Standard Time
BEGIN:STANDARD
DTSTART:16010101T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
RRULE:FREQ=WEEKLY;UNTIL=20261221T090000Z;INTERVAL=1;BYDAY=MO;WKST=MO
EXDATE;TZID=W. Europe Standard Time:20260309T100000
UID:040000008200E00074C5B7101A82E0080000000010C4E3A0A1B2DC01000000000000000010000000
SUMMARY;LANGUAGE=de-DE:Jour fixe
DTSTART;TZID=W. Europe Standard Time:20260105T100000
DTEND;TZID=W. Europe Standard Time:20260105T110000
CLASS:PUBLIC
PRIORITY:5
DTSTAMP:20260101T080000Z
TRANSP:OPAQUE
STATUS:CONFIRMED
SEQUENCE:0
LOCATION;LANGUAGE=de-DE:Raum 2.14
END:VEVENT
BEGIN:VEVENT
UID:040000008200E00074C5B7101A82E0080000000010C4E3A0A1B2DC01000000000000000010000000
RECURRENCE-ID;TZID=W. Europe Standard Time:20260316T100000
SUMMARY;LANGUAGE=de-DE:Jour fixe (verlegt)
DTSTART;TZID=W. Europe Standard Time:20260317T140000
DTEND;TZID=W. Europe Standard Time:20260317T150000
CLASS:PUBLIC
PRIORITY:5
DTSTAMP:20260101T080000Z
TRANSP:OPAQUE
STATUS:CONFIRMED
SEQUENCE:1
LOCATION;LANGUAGE=de-DE:Raum 1.01
END:VEVENT
END:VCALENDAR
""".replace(b"\n", b"\r\n")

CARD = b"""BEGIN:VCARD
VERSION:3.0
N:M\xc3\xbcller;Erika;;;
FN:Erika M\xc3\xbcller
ORG:Stadtverwaltung Musterstadt
TITLE:Sachbearbeiterin
EMAIL;TYPE=INTERNET:erika.mueller@example.org
TEL;TYPE=WORK:+49 30 1234567
TEL;TYPE=CELL:+49 171 7654321
END:VCARD
""".replace(b"\n", b"\r\n")


def instances(ics: bytes, start=date(2026, 1, 1), end=date(2027, 1, 1)) -> list[tuple]:
    """(start in UTC, end in UTC, summary) of every instance in a year."""
    import icalendar
    import recurring_ical_events
    def utc(value):                                 # all-day events keep their dates
        return value.astimezone(timezone.utc) if isinstance(value, datetime) else value
    cal = icalendar.Calendar.from_ical(ics)
    return sorted((utc(e.decoded("DTSTART")), utc(e.decoded("DTEND")), str(e["SUMMARY"]))
                  for e in recurring_ical_events.of(cal).between(start, end))


def extract_only_item(server, dst: Path) -> bytes:
    """Discover Anna's one item and extract it to `dst`; its bytes."""
    source = source_for(config(server))
    [ref] = list(source.discover("anna", ANNA))
    source.extract(ANNA, ref.location, dst, ref.key)
    return dst.read_bytes()


def by_location(refs):
    out = {}
    for r in refs:
        out.setdefault(r.location, []).append(r)
    return out


# ------------------------------------------------------------------------------------ folders, flags, MIME
def test_folder_tree_special_use_flags_and_mime(server, tmp_path):
    mb = server.mailbox(ANNA)
    ids = {
        "read+flagged": mb.add_message(mail(1), is_read=True, flagged=True,
                                       received=datetime(2026, 2, 3, 8, 15, 30, tzinfo=timezone.utc)),
        "unread": mb.add_message(mail(2)),
        "answered": mb.add_message(mail(3), is_read=True, answered=True),
        "sent": mb.add_message(mail(4), folder="sentitems", is_read=True),
        "trash": mb.add_message(mail(5), folder="deleteditems"),
        "junk": mb.add_message(mail(6), folder="junkemail"),
        "draft": mb.add_message(mail(7), folder="drafts", is_draft=True),
        "archive": mb.add_message(mail(8), folder="archive"),
        "nested": mb.add_message(mail(9), folder=mb.add_folder("Projekt Umzug", parent="inbox")),
        "top": mb.add_message(mail(10), folder=mb.add_folder("Ablage 2025")),
    }
    forwarded = mb.add_message(mail(11), folder=mb.add_folder("Weitergeleitet"), is_read=True)
    mb.update(forwarded, last_verb=104)                   # PidTagLastVerbExecuted: forwarded
    event = mb.add_event(SERIES)
    contact = mb.add_contact(CARD)
    team = mb.add_folder("Team", parent="calendar", cls="IPF.Appointment")
    mb.add_event(SERIES.replace(b"UID:0400", b"UID:0401"), folder=team)
    mb.add_folder("Aufgaben alt", parent="tasks", cls="IPF.Task")

    refs = list(source_for(config(server)).discover("anna", ANNA))
    got = {r.key: r for r in refs}
    assert len(refs) == len(ids) + 4
    assert sorted(got[forwarded].meta["flags"]) == ["$Forwarded", "\\Seen"]
    where = {name: got[i].location for name, i in ids.items()}
    assert where == {"read+flagged": "INBOX", "unread": "INBOX", "answered": "INBOX", "sent": "Sent Items",
                     "trash": "Deleted Items", "junk": "Junk Email", "draft": "Drafts", "archive": "Archive",
                     "nested": "INBOX/Projekt Umzug", "top": "Ablage 2025"}
    special = {name: got[i].meta["special_use"] for name, i in ids.items()}
    assert special == {"read+flagged": None, "unread": None, "answered": None, "sent": "\\Sent",
                       "trash": "\\Trash", "junk": "\\Junk", "draft": "\\Drafts", "archive": "\\Archive",
                       "nested": None, "top": None}
    flags = {name: sorted(got[i].meta["flags"]) for name, i in ids.items()}
    assert flags["read+flagged"] == ["\\Flagged", "\\Seen"]
    assert flags["unread"] == [] and flags["trash"] == []
    assert flags["answered"] == ["\\Answered", "\\Seen"]
    assert flags["draft"] == ["\\Draft"]
    first = got[ids["read+flagged"]]
    assert first.meta["internaldate"] == "2026-02-03T08:15:30+00:00"
    assert first.meta["message_id"] == "<msg-1@example.org>"
    assert first.kind is Kind.MESSAGE and first.size == len(mail(1))
    assert first.version == mb.items[ids["read+flagged"]].changekey
    assert got[event].kind is Kind.EVENT and got[event].location == "Calendar"
    assert got[contact].kind is Kind.CONTACT and got[contact].location == "Contacts"
    assert {r.location for r in refs if r.kind is Kind.EVENT} == {"Calendar", "Calendar/Team"}

    source = source_for(config(server))
    for name, item_id in ids.items():
        dst = tmp_path / f"{name}.eml"
        size, _ = source.extract(ANNA, got[item_id].location, dst, item_id)
        assert dst.read_bytes() == mb.items[item_id].mime and size == dst.stat().st_size


def test_server_without_the_archive_folder_name(server):
    """Exchange 2013 does not know the distinguished name `archive`: the rest still maps."""
    server.unknown_distinguished = {"archive"}
    mb = server.mailbox(ANNA)
    sent = mb.add_message(mail(1), folder="sentitems")
    archived = mb.add_message(mail(2), folder="archive")
    got = {r.key: r for r in source_for(config(server)).discover("anna", ANNA)}
    assert got[sent].meta["special_use"] == "\\Sent"
    assert got[archived].location == "Archive" and got[archived].meta["special_use"] is None


def test_kinds_follow_the_configuration(server):
    mb = server.mailbox(ANNA)
    mb.add_message(mail(1))
    mb.add_event(SERIES)
    mb.add_contact(CARD)
    kinds = {r.kind for r in source_for(config(server, mail=False, contacts=False)).discover("anna", ANNA)}
    assert kinds == {Kind.EVENT}


# ------------------------------------------------------------------------------------ calendars and contacts
@pytest.mark.parametrize("exchange_exports_ical", [True, False], ids=["exchange-ical", "rebuilt"])
def test_series_with_modified_and_deleted_occurrence(server, tmp_path, exchange_exports_ical):
    mb = server.mailbox(ANNA)
    mb.calendar_mime = exchange_exports_ical      # False: as Exchange 2007, which has no iCalendar export
    item_id = mb.add_event(SERIES)
    source = source_for(config(server))
    [ref] = list(source.discover("anna", ANNA))
    source.extract(ANNA, ref.location, tmp_path / "series.ics", ref.key)
    got = instances((tmp_path / "series.ics").read_bytes())
    assert got == instances(mb.items[item_id].mime)
    # and the server's series really has both exceptions: 51 Mondays, one gone, one moved
    assert len(got) == 50
    assert (datetime(2026, 3, 9, 9, 0, tzinfo=timezone.utc)) not in [s for s, _, _ in got]
    assert (datetime(2026, 3, 17, 13, 0, tzinfo=timezone.utc), datetime(2026, 3, 17, 14, 0, tzinfo=timezone.utc),
            "Jour fixe (verlegt)") in got
    import icalendar
    cal = icalendar.Calendar.from_ical((tmp_path / "series.ics").read_bytes())
    assert len({str(e["UID"]) for e in cal.walk("VEVENT")}) == 1        # one VCALENDAR per series
    assert [str(e["LOCATION"]) for e in cal.walk("VEVENT")] == ["Raum 2.14", "Raum 1.01"]


def test_incomplete_exchange_export_is_rebuilt(server, tmp_path):
    """An export whose exceptions do not match the item's own occurrence lists is not trusted."""
    mb = server.mailbox(ANNA)
    item_id = mb.add_event(SERIES)
    full = mb.items[item_id].mime
    bare = full.split(b"BEGIN:VEVENT\r\nUID")[0].replace(
        b"EXDATE;TZID=W. Europe Standard Time:20260309T100000\r\n", b"") + b"END:VCALENDAR\r\n"
    mb.items[item_id].mime = bare                 # what Exchange would serve; the properties still list both
    assert len(instances(bare)) == 51
    source = source_for(config(server))
    [ref] = list(source.discover("anna", ANNA))
    source.extract(ANNA, ref.location, tmp_path / "series.ics", ref.key)
    assert instances((tmp_path / "series.ics").read_bytes()) == instances(full)


MEETING = b"""BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:meeting@amt.example\r
SUMMARY:Haushaltsrunde\r\nDTSTART;TZID=Europe/Berlin:20260112T140000\r\nDTEND;TZID=Europe/Berlin:20260112T153000\r
RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6\r\nCLASS:CONFIDENTIAL\r\nPRIORITY:1\r\nTRANSP:TRANSPARENT\r
CATEGORIES:Haushalt,Referat 2\r\nORGANIZER;CN=Anna Amt:mailto:anna@amt.example\r
ATTENDEE;CN=Ben Berg;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED:mailto:ben@amt.example\r
ATTENDEE;CN=Carla Cruz;ROLE=OPT-PARTICIPANT;PARTSTAT=DECLINED:mailto:carla@amt.example\r
ATTENDEE;CN=Raum 2.14;CUTYPE=RESOURCE;PARTSTAT=ACCEPTED:mailto:raum214@amt.example\r
DTSTAMP:20260101T000000Z\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Haushaltsrunde\r\nTRIGGER:-PT15M\r
END:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r
"""


def test_a_rebuilt_meeting_keeps_who_comes_and_how(server, tmp_path):
    """Without Exchange's own export, a meeting is rebuilt from its properties with its organizer,
    attendees and their answers, reminder, free/busy, sensitivity, importance and categories."""
    import icalendar
    mb = server.mailbox(ANNA)
    mb.calendar_mime = False
    mb.add_event(MEETING)
    data = extract_only_item(server, tmp_path / "m.ics")
    assert instances(data) == instances(MEETING)
    [ev] = icalendar.Calendar.from_ical(data).walk("VEVENT")
    assert str(ev["ORGANIZER"]) == "mailto:anna@amt.example" and ev["ORGANIZER"].params["CN"] == "Anna Amt"
    people = {str(a).removeprefix("mailto:"): dict(a.params) for a in ev["ATTENDEE"]}
    assert people["ben@amt.example"]["ROLE"] == "REQ-PARTICIPANT"
    assert people["ben@amt.example"]["PARTSTAT"] == "ACCEPTED"
    assert people["carla@amt.example"]["ROLE"] == "OPT-PARTICIPANT"
    assert people["carla@amt.example"]["PARTSTAT"] == "DECLINED"
    assert people["raum214@amt.example"]["CUTYPE"] == "RESOURCE"
    [alarm] = [c for c in ev.subcomponents if c.name == "VALARM"]
    assert alarm.decoded("TRIGGER").total_seconds() == -15 * 60
    assert str(ev["TRANSP"]) == "TRANSPARENT" and str(ev["CLASS"]) == "CONFIDENTIAL" and int(ev["PRIORITY"]) == 1
    assert ev["CATEGORIES"].cats == ["Haushalt", "Referat 2"]


def rule_series(n: int, rrule: str, start: str = "20260107T083000", minutes: int = 45, exdate: str = "") -> bytes:
    from datetime import timedelta
    end = (datetime.strptime(start, "%Y%m%dT%H%M%S") + timedelta(minutes=minutes)).strftime("%Y%m%dT%H%M%S")
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN", "BEGIN:VEVENT", f"UID:rule-{n}@example.org",
             f"SUMMARY:Serie {n}", f"DTSTART;TZID=Europe/Berlin:{start}", f"DTEND;TZID=Europe/Berlin:{end}",
             f"RRULE:{rrule}", *([f"EXDATE;TZID=Europe/Berlin:{exdate}"] if exdate else []),
             "DTSTAMP:20260101T000000Z", "END:VEVENT", "END:VCALENDAR", ""]
    return "\r\n".join(lines).encode()


ALL_DAY = b"""BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:allday@example.org\r
SUMMARY:Ablesung\r\nDTSTART;VALUE=DATE:20260115\r\nDTEND;VALUE=DATE:20260116\r
RRULE:FREQ=MONTHLY;BYMONTHDAY=15;COUNT=10\r\nEXDATE;VALUE=DATE:20260415\r\nDTSTAMP:20260101T000000Z\r\nEND:VEVENT\r
BEGIN:VEVENT\r\nUID:allday@example.org\r\nRECURRENCE-ID;VALUE=DATE:20260615\r\nSUMMARY:Ablesung (verschoben)\r
DTSTART;VALUE=DATE:20260616\r\nDTEND;VALUE=DATE:20260617\r\nDTSTAMP:20260101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r
"""


@pytest.mark.parametrize("ics", [
    rule_series(1, "FREQ=DAILY;INTERVAL=3;COUNT=40"),
    rule_series(2, "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE,FR;WKST=MO;UNTIL=20261030T230000Z",
                exdate="20260304T083000"),
    rule_series(3, "FREQ=MONTHLY;BYMONTHDAY=7"),
    rule_series(4, "FREQ=MONTHLY;BYDAY=2WE;COUNT=12", start="20260114T140000"),
    rule_series(5, "FREQ=MONTHLY;BYDAY=-1FR", start="20260130T090000"),
    rule_series(6, "FREQ=YEARLY;BYMONTH=1;BYMONTHDAY=7;COUNT=3"),
    rule_series(7, "FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", start="20261025T100000"),
    ALL_DAY,
], ids=["daily-count", "weekly-until", "monthly-day", "monthly-2nd", "monthly-last", "yearly", "yearly-relative",
        "all-day"])
def test_recurrence_patterns_rebuilt(server, tmp_path, ics):
    mb = server.mailbox(ANNA)
    mb.calendar_mime = False
    item_id = mb.add_event(ics)
    source = source_for(config(server))
    [ref] = list(source.discover("anna", ANNA))
    source.extract(ANNA, ref.location, tmp_path / "s.ics", ref.key)
    expected = instances(mb.items[item_id].mime, date(2026, 1, 1), date(2029, 1, 1))
    assert expected
    assert instances((tmp_path / "s.ics").read_bytes(), date(2026, 1, 1), date(2029, 1, 1)) == expected


@pytest.mark.parametrize("server_gives_vcard", [True, False])
def test_contact_as_vcard(server, tmp_path, server_gives_vcard):
    import vobject
    mb = server.mailbox(ANNA)
    mb.contact_mime = server_gives_vcard
    mb.add_contact(CARD)
    card = vobject.readOne(extract_only_item(server, tmp_path / "c.vcf").decode("utf-8"))
    assert card.fn.value == "Erika Müller"
    assert (card.n.value.family, card.n.value.given) == ("Müller", "Erika")
    assert card.org.value == ["Stadtverwaltung Musterstadt"]
    assert card.title.value == "Sachbearbeiterin"
    assert [e.value for e in card.contents["email"]] == ["erika.mueller@example.org"]
    assert sorted(t.value for t in card.contents["tel"]) == ["+49 171 7654321", "+49 30 1234567"]


# ------------------------------------------------------------------------------------ delta
def test_second_discover_is_a_delta(server):
    mb = server.mailbox(ANNA)
    ids = [mb.add_message(mail(n)) for n in range(5)]
    source = source_for(config(server))
    first = {r.key: r for r in source.discover("anna", ANNA)}
    sent_before = server.changes_sent
    mb.update(ids[2], is_read=True, flagged=True)
    mb.delete(ids[4])
    new = mb.add_message(mail(9), folder="sentitems")
    second = {r.key: r for r in source_for(config(server)).discover("anna", ANNA)}
    assert server.changes_sent - sent_before == 3       # only the changes travelled
    assert set(second) == set(first) - {ids[4]} | {new}
    changed = [k for k in second if k in first and second[k].version != first[k].version]
    assert changed == [ids[2]]
    assert sorted(second[ids[2]].meta["flags"]) == ["\\Flagged", "\\Seen"]


def test_sync_state_survives_the_process(server, tmp_path):
    from sources import ews
    mb = server.mailbox(ANNA)
    ids = [mb.add_message(mail(n)) for n in range(3)]
    cfg = config(server, sync_state_dir=tmp_path / "state")
    assert len(list(source_for(cfg).discover("anna", ANNA))) == 3
    assert list((tmp_path / "state").glob("*.json"))
    ews._SNAPSHOTS.clear()                          # as if a new process started
    sent_before = server.changes_sent
    mb.update(ids[0], is_read=True)
    refs = list(source_for(cfg).discover("anna", ANNA))
    assert len(refs) == 3 and server.changes_sent - sent_before == 1


def test_refused_sync_state_lists_afresh(server, caplog):
    from sources import ews
    mb = server.mailbox(ANNA)
    ids = {mb.add_message(mail(n)) for n in range(3)}
    source = source_for(config(server))
    assert {r.key for r in source.discover("anna", ANNA)} == ids
    for snapshot in ews._SNAPSHOTS.values():        # as if Exchange had forgotten (or never issued) these states
        snapshot["hierarchy"] = "bm90IGEgc3RhdGU="
        for entry in snapshot["items"].values():
            entry["state"] = "bm90IGEgc3RhdGU="
    with caplog.at_level(logging.WARNING, logger="umstieg.sources.ews"):
        assert {r.key for r in source_for(config(server)).discover("anna", ANNA)} == ids
    assert any("refused the saved sync state" in r.getMessage() for r in caplog.records)


def test_paging_with_max_changes(server):
    mb = server.mailbox(ANNA)
    ids = {mb.add_message(mail(n)) for n in range(7)}
    server.max_changes = 2
    refs = list(source_for(config(server)).discover("anna", ANNA))
    assert {r.key for r in refs} == ids
    assert server.log.count("SyncFolderItems") >= 4 + 8     # inbox in 4 pages, every other folder at least once


def test_item_deleted_after_discovery(server, tmp_path):
    mb = server.mailbox(ANNA)
    item_id = mb.add_message(mail(1))
    source = source_for(config(server))
    [ref] = list(source.discover("anna", ANNA))
    mb.delete(item_id)
    with pytest.raises(ItemError, match="deleted at the source"):
        source.extract(ANNA, ref.location, tmp_path / "gone.eml", ref.key)
    assert not (tmp_path / "gone.eml").exists()


# ------------------------------------------------------------------------------------ throttling
def test_server_busy_is_waited_for(server, tmp_path, caplog):
    mb = server.mailbox(ANNA)
    ids = [mb.add_message(mail(n)) for n in range(3)]
    source = source_for(config(server))
    source.check([ANNA])                            # the version probe is done; now the server gets busy
    server.busy(3, back_off_ms=150)
    with caplog.at_level(logging.WARNING, logger="exchangelib"):
        refs = list(source.discover("anna", ANNA))
        server.busy(2, back_off_ms=150)
        for r in refs:
            source.extract(ANNA, r.location, tmp_path / f"{r.key}.eml", r.key)
    assert {r.key for r in refs} == set(ids)
    assert all((tmp_path / f"{i}.eml").read_bytes() == mb.items[i].mime for i in ids)
    assert server.busy_answers == 5
    waits = [r for r in caplog.records if "back off" in r.getMessage().lower()]
    assert len(waits) == 5


def test_too_long_a_back_off_becomes_a_transient_error(server, tmp_path):
    mb = server.mailbox(ANNA)
    item_id = mb.add_message(mail(1))
    source = source_for(config(server, max_wait=1))
    [ref] = list(source.discover("anna", ANNA))
    server.busy(1, back_off_ms=30_000)
    with pytest.raises(TransientError) as caught:
        source.extract(ANNA, ref.location, tmp_path / "m.eml", item_id)
    assert caught.value.retry_after == pytest.approx(30)


# ------------------------------------------------------------------------------------ check
def test_check_names_the_mailbox_that_may_not_be_impersonated(server):
    problems = source_for(config(server)).check([ANNA, BERT, "nobody@example.org"])
    assert len(problems) == 2
    assert BERT in problems[0] and "impersonate" in problems[0]
    assert "nobody@example.org" in problems[1] and "does not exist" in problems[1]
    assert source_for(config(server)).check([ANNA]) == []


def test_wrong_password_is_a_problem_without_the_password(server, monkeypatch):
    monkeypatch.setenv("EWS_TEST_PASSWORD", "Wr0ng-Secret-4711")
    source = source_for(config(server))
    problems = source.check([ANNA, BERT])
    assert len(problems) == 1 and "refused the credentials of svc" in problems[0]
    assert "Wr0ng-Secret-4711" not in problems[0] and PASSWORD not in problems[0]
    with pytest.raises(FatalError) as caught:
        list(source.discover("anna", ANNA))
    assert "Wr0ng-Secret-4711" not in str(caught.value)


def test_unreachable_server_is_a_problem(server):
    url = server.url
    server.__exit__(None, None, None)
    cfg = EwsSource(name="exchange", url=url, username="svc", password="env:EWS_TEST_PASSWORD", auth="basic")
    [problem] = source_for(cfg).check([ANNA])
    assert "cannot reach" in problem and url in problem
    server.__enter__()                             # the fixture stops it again


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_with_the_configured_ca(tmp_path):
    with EwsTestServer(users={"svc": PASSWORD}, impersonation={"svc": {ANNA}}, https=True, tmp_dir=tmp_path) as s:
        item_id = s.mailbox(ANNA).add_message(mail(1))
        assert s.url.startswith("https://")
        source = source_for(config(s))
        assert source.check([ANNA]) == []
        [ref] = list(source.discover("anna", ANNA))
        source.extract(ANNA, ref.location, tmp_path / "m.eml", ref.key)
        assert (tmp_path / "m.eml").read_bytes() == s.mailbox(ANNA).items[item_id].mime
        # without the test CA, the system's CAs do not trust it
        untrusting = EwsSource(name="other", url=s.url.replace("127.0.0.1", "localhost"), username="svc",
                               password="env:EWS_TEST_PASSWORD", auth="basic")
        [problem] = source_for(untrusting).check([ANNA])
        assert "cannot reach" in problem
        # verify_tls: false (for test servers only) trusts it without a CA
        assert source_for(untrusting.model_copy(update={"verify_tls": False})).check([ANNA]) == []


def test_ntlm_the_default_authentication(tmp_path, monkeypatch):
    with EwsTestServer(users={"svc": PASSWORD}, impersonation={"svc": {ANNA}}, ntlm=True, tmp_dir=tmp_path) as s:
        item_id = s.mailbox(ANNA).add_message(mail(1))
        cfg = EwsSource(name="exchange", url=s.url, username="EXAMPLE\\svc", password="env:EWS_TEST_PASSWORD")
        assert cfg.auth == "ntlm"
        source = source_for(cfg)
        assert source.check([ANNA]) == []
        [ref] = list(source.discover("anna", ANNA))
        source.extract(ANNA, ref.location, tmp_path / "m.eml", ref.key)
        assert (tmp_path / "m.eml").read_bytes() == s.mailbox(ANNA).items[item_id].mime
        monkeypatch.setenv("EWS_TEST_PASSWORD", "Wr0ng-Secret-4711")
        [problem] = source_for(cfg).check([ANNA])
        assert "refused the credentials" in problem and "Wr0ng-Secret-4711" not in problem


# ------------------------------------------------------------------------------------ corpus
@pytest.mark.corpus
def test_corpus_messages_and_series(server, corpus, tmp_path):
    mb = server.mailbox(ANNA)
    emls = sorted((corpus / "mail" / "ruby-mail").rglob("*.eml"))[:20]
    assert emls, "no .eml files in the corpus"
    ids = {mb.add_message(p.read_bytes()): p for p in emls}
    series = (corpus / "calendars" / "ical4j" / "valid" / "blalor.ics").read_bytes()
    event = mb.add_event(series)
    source = source_for(config(server))
    refs = {r.key: r for r in source.discover("anna", ANNA)}
    assert set(refs) == set(ids) | {event}
    for item_id, path in ids.items():
        dst = tmp_path / f"{path.name}"
        source.extract(ANNA, refs[item_id].location, dst, item_id)
        assert dst.read_bytes() == path.read_bytes()
    source.extract(ANNA, refs[event].location, tmp_path / "series.ics", event)
    got = instances((tmp_path / "series.ics").read_bytes(), date(2004, 1, 1), date(2005, 1, 1))
    assert got and got == instances(series, date(2004, 1, 1), date(2005, 1, 1))


# ------------------------------------------------------------------------------------ through the flow's step
def test_flow_discovery_records_the_delta_in_the_ledger(server, tmp_path):
    """flows.discovery.discover with an `ews` source: new items, then exactly one changed and one removed."""
    from core.department import Department
    from core.ledger import Ledger
    from flows.discovery import discover
    mb = server.mailbox(ANNA)
    ids = [mb.add_message(mail(n)) for n in range(3)]
    mb.add_event(SERIES)
    dept = Department(name="amt", work_dir=tmp_path, users=[{"source": "anna", "target": "anna", "folder": ANNA}],
                      sources=[config(server).model_dump()], target={"type": "localdir", "root": str(tmp_path / "t")})
    ledger = Ledger(dept.ledger_url)
    ledger.migrate()
    try:
        run = ledger.start_run(dept.name, "test")
        first = discover(dept, ledger, run)
        assert first.new == {"anna": 4}
        ledger.finish_run(run, "completed")
        mb.update(ids[0], is_read=True)
        mb.delete(ids[1])
        second = discover(dept, ledger, ledger.start_run(dept.name, "test"))
        assert (second.changed, second.removed, second.unchanged) == ({"anna": 1}, {"anna": 1}, {"anna": 2})
    finally:
        ledger.close()
