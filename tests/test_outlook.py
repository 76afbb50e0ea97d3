"""Outlook appointments and contacts as iCalendar and vCard (sources/outlook.py).

The recurrence blob reader is checked against the worked example of MS-OXOCAL (section 4.1.1.2:
the bytes Microsoft publishes for a weekly meeting with one changed occurrence), against blobs
built here field by field for the patterns the corpus lacks (n-th weekday, last day of the month,
yearly, a deleted occurrence, a Hijri calendar, a truncated blob), and against the corpus'
Outlook .msg appointments, which go to a real Radicale and expand there to the same occurrences.
"""

from __future__ import annotations

import shutil
import struct
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest

from core.department import CalDavTarget, CardDavTarget, ExportSource
from core.items import Kind
from servers.radicale import RadicaleServer
from sinks.groupware import CalDav, CardDav
from sources.export import source_for
from sources.mstime import event_to_ical
from sources.outlook import Appointment, RecurrenceError, appointment_event, parse_recurrence

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")

# MS-OXOCAL 4.1.1.2: "every Monday, Thursday and Friday from 10:00 to 10:30, ends after 12
# occurrences"; the occurrence of Monday 2007-04-16 moved to 11:00-11:30 with a new subject and
# location (a published example: the bytes are Microsoft's)
SPEC_EXAMPLE = bytes.fromhex(
    "043004300B2001000000C0210000010000000000000032000000222000000C0000000000000001000000A096BC0C"
    "01000000A096BC0C8020BC0C20ADBC0C0630000009300000580200007602000001003499BC0C5299BC0CF898BC0C"
    "11002200210053696D706C6520526563757272656E6365207769746820657863657074696F6E73080007003334"
    "2F34313431000000000400000000000000000000003499BC0C5299BC0CF898BC0C2100530069006D0070006C0065"
    "00200052006500630075007200720065006E006300650020007700690074006800200065007800630065007000"
    "740069006F006E0073000700330034002F0034003100340031000000000000000000")


def minutes(value: datetime) -> int:
    """A time as MAPI writes it in a recurrence blob: minutes since 1601-01-01 (local)."""
    return int((value - datetime(1601, 1, 1)) / timedelta(minutes=1))


def blob(frequency: int, pattern: int, period: int, specific: bytes, *, end_type: int = 0x2023, count: int = 10,
         start: datetime, end: datetime | None = None, deleted: tuple[datetime, ...] = (),
         start_offset: int = 540, end_offset: int = 600, calendar: int = 0, first_dow: int = 1) -> bytes:
    """An AppointmentRecurrencePattern without changed occurrences, laid out as MS-OXOCAL 2.2.1.44."""
    end = end or datetime(4500, 8, 31)
    out = struct.pack("<HHHHHIII", 0x3004, 0x3004, frequency, pattern, calendar, 0, period, 0) + specific
    out += struct.pack("<III", end_type, count, first_dow)
    out += struct.pack("<I", len(deleted)) + b"".join(struct.pack("<I", minutes(d)) for d in deleted)
    out += struct.pack("<I", 0)
    out += struct.pack("<II", minutes(start), minutes(end))
    out += struct.pack("<IIIIH", 0x3006, 0x3009, start_offset, end_offset, 0)
    return out + struct.pack("<II", 0, 0)


def appointment(recurrence: bytes, first: datetime, length: timedelta = timedelta(hours=1), **fields) -> Appointment:
    return Appointment(uid="test-series", subject="Sprechstunde", start=first.astimezone(UTC),
                       end=(first + length).astimezone(UTC), zone_name="W. Europe Standard Time",
                       recurrence=recurrence, **fields)


def expand(data: bytes, start: datetime, end: datetime) -> list[tuple[str, str]]:
    import recurring_ical_events
    cal = icalendar.Calendar.from_ical(data)
    found = []
    for ev in recurring_ical_events.of(cal).between(start, end):
        s = ev["DTSTART"].dt
        found.append((s.astimezone(UTC).isoformat() if isinstance(s, datetime) else s.isoformat(),
                      str(ev.get("SUMMARY"))))
    return sorted(found)


def ical(a: Appointment) -> bytes:
    event, changed, cancelled = appointment_event(a)
    return event_to_ical(event, changed=changed, cancelled=cancelled)


# ------------------------------------------------------------------------------ the blob
def test_the_published_example_is_read_field_by_field():
    rec = parse_recurrence(SPEC_EXAMPLE)
    assert (rec.frequency, rec.pattern, rec.period, rec.days) == (0x200B, 1, 1, 0x32)   # Mon, Thu, Fri
    assert (rec.end_type, rec.count) == (0x2022, 12)
    assert rec.deleted == [datetime(2007, 4, 16)]
    assert (rec.start_offset, rec.end_offset) == (600, 630)                            # 10:00-10:30
    [change] = rec.changes
    assert (change.original, change.start, change.end) == (
        datetime(2007, 4, 16, 10, 0), datetime(2007, 4, 16, 11, 0), datetime(2007, 4, 16, 11, 30))
    assert change.subject == "Simple Recurrence with exceptions"       # from the Unicode copy
    assert change.location == "34/4141"


def test_the_published_example_becomes_a_series_with_its_changed_occurrence():
    pacific = "Pacific Standard Time"
    first = datetime(2007, 4, 2, 10, 0, tzinfo=ZoneInfo("America/Los_Angeles"))     # a Monday
    a = Appointment(uid="spec", subject="Simple Recurrence", location="34/4639", start=first.astimezone(UTC),
                    end=(first + timedelta(minutes=30)).astimezone(UTC), zone_name=pacific,
                    recurrence=SPEC_EXAMPLE)
    data = ical(a)
    found = expand(data, datetime(2007, 1, 1, tzinfo=UTC), datetime(2008, 1, 1, tzinfo=UTC))
    assert len(found) == 12
    assert ("2007-04-16T18:00:00+00:00", "Simple Recurrence with exceptions") in found     # 11:00 PDT
    assert ("2007-04-05T17:00:00+00:00", "Simple Recurrence") in found                      # a Thursday
    moved = [c for c in icalendar.Calendar.from_ical(data).walk("VEVENT") if c.get("RECURRENCE-ID")]
    assert [str(m["LOCATION"]) for m in moved] == ["34/4141"]
    assert "RRULE:FREQ=WEEKLY;COUNT=12;BYDAY=MO,TH,FR" in data.decode().replace("\r\n ", "")


def test_second_tuesday_of_the_month_keeps_its_wall_clock_time_over_summer_time():
    first = datetime(2026, 1, 13, 9, 0, tzinfo=BERLIN)
    rec = blob(0x200C, 0x3, 1, struct.pack("<II", 0x04, 2), end_type=0x2022, count=6, start=datetime(2026, 1, 13))
    found = expand(ical(appointment(rec, first)), datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert [s for s, _ in found] == ["2026-01-13T08:00:00+00:00", "2026-02-10T08:00:00+00:00",
                                     "2026-03-10T08:00:00+00:00", "2026-04-14T07:00:00+00:00",
                                     "2026-05-12T07:00:00+00:00", "2026-06-09T07:00:00+00:00"]


def test_last_day_of_the_month_until_an_end_date():
    first = datetime(2026, 1, 31, 16, 0, tzinfo=BERLIN)
    rec = blob(0x200C, 0x4, 1, struct.pack("<I", 31), end_type=0x2021, start=datetime(2026, 1, 31),
               end=datetime(2026, 6, 30))
    found = expand(ical(appointment(rec, first)), datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert [s[:10] for s, _ in found] == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31",
                                          "2026-06-30"]


def test_last_friday_of_november_every_year():
    first = datetime(2026, 11, 27, 0, 0, tzinfo=BERLIN)
    rec = blob(0x200D, 0x3, 12, struct.pack("<II", 0x20, 5), end_type=0x2022, count=3, start=datetime(2026, 11, 27))
    a = appointment(rec, first, length=timedelta(days=1), all_day=True)
    found = expand(ical(a), datetime(2026, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
    assert [s for s, _ in found] == ["2026-11-27", "2027-11-26", "2028-11-24"]


def test_a_deleted_occurrence_is_an_exdate_and_an_open_series_has_no_end():
    first = datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)
    rec = blob(0x200A, 0x0, 2 * 1440, b"", start=datetime(2026, 3, 2), deleted=(datetime(2026, 3, 6),))
    data = ical(appointment(rec, first))
    found = expand(data, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 13, tzinfo=UTC))
    assert [s[:10] for s, _ in found] == ["2026-03-02", "2026-03-04", "2026-03-08", "2026-03-10", "2026-03-12"]
    assert "UNTIL" not in data.decode() and "COUNT" not in data.decode()
    assert expand(data, datetime(2031, 1, 1, tzinfo=UTC), datetime(2031, 1, 10, tzinfo=UTC))   # still going


def test_a_meeting_keeps_its_organizer_attendees_and_their_answers():
    first = datetime(2026, 5, 4, 14, 0, tzinfo=BERLIN)
    a = Appointment(uid="meeting-7", subject="Haushalt 2027", start=first.astimezone(UTC),
                    end=(first + timedelta(hours=2)).astimezone(UTC), zone_name="W. Europe Standard Time",
                    location="Sitzungssaal", busy=2, reminder=30, sensitivity=2, importance=2,
                    organizer=("Kämmerin", "kaemmerin@amt.example"),
                    attendees=[("Anna", "anna@amt.example", "required", "accepted"),
                               ("Ben", "ben@amt.example", "optional", "declined"),
                               ("Saal 3", "saal3@amt.example", "resource", "none")])
    event = icalendar.Calendar.from_ical(ical(a)).walk("VEVENT")[0]
    assert event["DTSTART"].dt == first and str(event["LOCATION"]) == "Sitzungssaal"
    assert str(event["ORGANIZER"]) == "mailto:kaemmerin@amt.example" and event["ORGANIZER"].params["CN"] == "Kämmerin"
    people = {str(p): dict(p.params) for p in event["ATTENDEE"]}
    assert people["mailto:anna@amt.example"]["PARTSTAT"] == "ACCEPTED"
    assert people["mailto:anna@amt.example"]["ROLE"] == "REQ-PARTICIPANT"
    assert people["mailto:ben@amt.example"]["PARTSTAT"] == "DECLINED"
    assert people["mailto:ben@amt.example"]["ROLE"] == "OPT-PARTICIPANT"
    assert people["mailto:saal3@amt.example"]["CUTYPE"] == "RESOURCE"
    assert (str(event["CLASS"]), event["PRIORITY"], str(event["TRANSP"])) == ("PRIVATE", 1, "OPAQUE")
    assert event.walk("VALARM")[0]["TRIGGER"].dt == -timedelta(minutes=30)


def test_blobs_without_an_icalendar_form_fail_typed():
    hijri = blob(0x200C, 0xA, 1, struct.pack("<I", 5), start=datetime(2026, 1, 5), calendar=0x6)
    with pytest.raises(RecurrenceError) as err:
        ical(appointment(hijri, datetime(2026, 1, 5, 9, 0, tzinfo=BERLIN)))
    assert err.value.reason == "unsupported_item" and "non-Gregorian" in str(err.value)
    with pytest.raises(RecurrenceError, match="truncated"):
        parse_recurrence(SPEC_EXAMPLE[:60])
    with pytest.raises(RecurrenceError, match="not a recurrence pattern"):
        parse_recurrence(b"\x00" * 80)


# ----------------------------------------------------------------------- corpus into Radicale
PASSWORDS = {"anna": "anna-outlook-pw-5Rt"}


@pytest.fixture(scope="module")
def radicale(tmp_path_factory):
    with RadicaleServer(tmp_path_factory.mktemp("radicale"), dict(PASSWORDS)) as server:
        yield server


def _read_back(ref: str) -> bytes:
    import httpx
    user, _, rest = ref.partition("://")[2].partition("@")
    return httpx.get(f"http://{rest}", auth=(user, PASSWORDS[user])).content


@pytest.mark.corpus
def test_corpus_outlook_appointments_and_contacts_arrive_and_expand_alike(corpus, radicale, tmp_path, monkeypatch):
    monkeypatch.setenv("PW_ANNA", PASSWORDS["anna"])
    user = tmp_path / "exports" / "anna"
    user.mkdir(parents=True)
    for path in (corpus / "mail").rglob("*.msg"):
        shutil.copy(path, user / path.name)
    source = source_for(ExportSource(name="exp", root=tmp_path / "exports"))
    sinks = {Kind.EVENT: CalDav(CalDavTarget(url=radicale.url, app_passwords={"anna": "env:PW_ANNA"}, timeout=10)),
             Kind.CONTACT: CardDav(CardDavTarget(url=radicale.url, app_passwords={"anna": "env:PW_ANNA"},
                                                 timeout=10))}
    outcome: dict[str, str] = {}
    expanded = {}
    for ref in source.discover("anna", "anna"):
        if ref.kind is Kind.MESSAGE:
            continue
        name = ref.key.rsplit("/", 1)[1]
        assert ref.location == ("Calendar" if ref.kind is Kind.EVENT else "Contacts")
        staged = tmp_path / "staged" / name
        source.extract("anna", ref.location, staged, key=ref.key)
        sink = sinks[ref.kind]
        digest = sink.digest(staged)
        target = sink.find("anna", ref.location, digest, ref.meta) or sink.put("anna", ref.location, staged,
                                                                               meta=ref.meta)
        problem = sink.verify(target, digest)
        outcome[name] = "verified" if problem is None else f"differs: {problem}"
        if ref.kind is Kind.EVENT and problem is None:
            window = (datetime(2021, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
            at_source = expand(staged.read_bytes(), *window)
            assert expand(_read_back(target), *window) == at_source, name
            expanded[name] = at_source
    assert len(outcome) == 16
    # three versions of one series share their UID (as do two copies of one event): the first is
    # stored; a later one that differs in what is compared is named as a difference, never merged
    differs = {n: o for n, o in outcome.items() if o != "verified"}
    assert list(differs) == ["Lanch time  every friday  in 2023 org.msg"], outcome
    assert "SUMMARY differs; DTSTART differs; EXDATE differs; RECURRENCE-ID differs" in differs[
        "Lanch time  every friday  in 2023 org.msg"]
    lunch = expanded["Friday Lunch.msg"]
    assert len(lunch) == 51                    # 52 Fridays of 2023, the first one deleted
    assert ("2023-01-09T03:00:00+00:00", "Monday Lunch") in lunch          # the 13th moved to Monday, 12:00 JST
    assert ("2023-01-06T03:00:00+00:00", "Friday Lunch") not in lunch
    assert ("2023-12-29T03:00:00+00:00", "Friday Lunch") in lunch
    assert expanded["A weekly 1.msg"] == [("2022-12-12T07:00:00+00:00", "A weekly 1")]
    assert [s for s, _ in expanded["7 days  everyday.msg"]] == [(date(2022, 12, 1) + timedelta(days=i)).isoformat()
                                                                 for i in range(7)]
    assert expanded["Appointment sample EST.msg"] == [("2022-12-04T13:00:00+00:00", "Appointment sample EST")]
    assert expanded["A black friday (w tz).msg"] == [("2022-12-02", "A black friday")]      # all day, in Tokyo


# ------------------------------------------------------------------ .msg text
def _corpus_mail_msgs(corpus: Path) -> list[Path]:
    from sources.export import _msg_class, _open_msg
    found = []
    for path in sorted((corpus / "mail").rglob("*.msg")):
        msg = _open_msg(path, delayAttachments=True)
        try:
            if _msg_class(msg)[0] is Kind.MESSAGE:
                found.append(path)
        finally:
            msg.close()
    return found


@pytest.mark.corpus
def test_corpus_msg_subject_and_body_agree_between_two_readers_and_reach_the_mime(corpus, tmp_path):
    """Every corpus .msg mail read twice: by extract-msg (in the code page the file declares) and by
    sources.outlook.msg_text (olefile, MS-OXMSG streams). Subject and text body agree, the MIME the
    export source makes carries exactly that subject, and no header of it holds a NUL."""
    import email
    import email.policy
    from sources.export import _open_msg
    from sources.outlook import msg_text
    files = _corpus_mail_msgs(corpus)
    assert len(files) >= 20, "the corpus has fewer .msg mails than expected"
    user = tmp_path / "export" / "u"
    user.mkdir(parents=True)
    source = source_for(ExportSource(name="export", root=tmp_path / "export"))
    differ = []
    for n, path in enumerate(files):
        ours = msg_text(path)
        theirs = _open_msg(path)
        try:
            subject = (theirs.subject or "").rstrip("\x00") or None
            body = (theirs.body or "").rstrip("\x00") or None
        finally:
            theirs.close()
        if (subject, body) != (ours.subject, ours.body):
            differ.append(f"{path.name}: extract-msg {subject!r} / ours {ours.subject!r}")
            continue
        shutil.copy(path, user / f"{n}.msg")
        data_path = tmp_path / f"{n}.eml"
        source.extract("u", "INBOX", data_path, key=f"u/{n}.msg")
        data = data_path.read_bytes()
        head = data.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in data else data.split(b"\n\n", 1)[0]
        mime = email.message_from_bytes(data, policy=email.policy.default)
        if b"\x00" in head:
            differ.append(f"{path.name}: a NUL in the headers")
        if str(mime["Subject"] or "") != (ours.subject or ""):
            differ.append(f"{path.name}: the MIME's subject {str(mime['Subject'])!r} is not {ours.subject!r}")
    assert not differ, differ


def test_declared_code_pages_decide_how_8_bit_strings_are_read():
    from sources.outlook import declared_codec
    big5 = "交換伺服器".encode("cp950")
    assert declared_codec(None, None, 0x0404) == "cp950"                  # zh-TW locale: Big5, not GBK
    assert big5.decode(declared_codec(None, None, 0x0404)) == "交換伺服器"
    assert declared_codec(None, None, 0x0804) == "cp936"                  # zh-CN: GBK
    assert declared_codec(950, 936, 0x0804) == "cp950"                    # the message's own code page first
    assert declared_codec(None, 50220, 0x0409) == "cp932"                 # iso-2022-jp mail keeps Shift-JIS strings
    assert declared_codec(None, 20866, None) == "cp1251"
    assert declared_codec(None, None, 0x0419) == "cp1251"
    assert declared_codec(99999, None, None) is None                      # nothing usable declared
