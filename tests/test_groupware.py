"""Calendars and contacts into CalDAV / CardDAV: the sinks against a real Radicale on loopback.

Events and cards are generated here (recurring series with exceptions across daylight-saving
changes, attendees, vCards 2.1 to 4.0) or taken from the corpus; what a test reads back from the
server it reads over HTTP, like any other client.
"""

from __future__ import annotations

import http.server
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from core.department import CalDavTarget, CardDavTarget, ExportSource
from core.errors import ConfigError, FatalError, ItemError, TransientError
from clients.pim import contact_fields, contact_fingerprint, differences, event_fingerprint, vcard_30
from helpers import RICH_CARD, cards, load, objects_in, recurring_event, write
from servers.radicale import RadicaleServer
from sinks.groupware import CalDav, CardDav, collection_name, resource_name
from sources.export import source_for

PASSWORDS = {"anna": "anna-cal-pw-3Jd", "ben": "ben-cal-pw-8Lq"}


@pytest.fixture(autouse=True)
def _secrets(monkeypatch):
    for login, password in PASSWORDS.items():
        monkeypatch.setenv(f"PW_{login.upper()}", password)
    monkeypatch.setenv("PW_WRONG", "not-the-password")


def refs() -> dict[str, str]:
    return {login: f"env:PW_{login.upper()}" for login in PASSWORDS}


@pytest.fixture(scope="module")
def radicale(tmp_path_factory):
    with RadicaleServer(tmp_path_factory.mktemp("radicale"), dict(PASSWORDS)) as server:
        yield server


@pytest.fixture(scope="module")
def strict_radicale(tmp_path_factory):
    """A Radicale with small limits: 6000 bytes per object, RRULE COUNT up to 100."""
    with RadicaleServer(tmp_path_factory.mktemp("radicale-strict"), dict(PASSWORDS),
                        max_resource_size=6000, max_rrule=100) as server:
        yield server


def caldav(server: RadicaleServer, **overrides) -> CalDav:
    return CalDav(CalDavTarget(url=server.url, app_passwords=refs(), timeout=10, **overrides))


def carddav(server: RadicaleServer, **overrides) -> CardDav:
    return CardDav(CardDavTarget(url=server.url, app_passwords=refs(), timeout=10, **overrides))


def calendar_name() -> str:
    """A fresh calendar for each test (the server is shared by the module)."""
    return f"Kalender {uuid.uuid4().hex[:8]}"


def read_back(ref: str) -> bytes:
    """The object as the server returns it to any client (the ref names the account)."""
    user, _, rest = ref.partition("://")[2].partition("@")
    return httpx.get(f"http://{rest}", auth=(user, PASSWORDS[user])).content


def server_put(ref: str, data: bytes) -> None:
    """Another client changes the stored object (If-Match: *, an update)."""
    user, _, rest = ref.partition("://")[2].partition("@")
    resp = httpx.put(f"http://{rest}", content=data, auth=(user, PASSWORDS[user]),
                     headers={"If-Match": "*", "Content-Type": "text/calendar; charset=utf-8"})
    assert resp.status_code in (201, 204), resp.text


def _in_utc(d):
    return d.astimezone(timezone.utc) if isinstance(d, datetime) and d.tzinfo else d


def expand(data: bytes, start: datetime, end: datetime) -> list[tuple]:
    """Every occurrence between start and end as (start UTC, end UTC, summary), sorted."""
    import icalendar
    import recurring_ical_events
    cal = icalendar.Calendar.from_ical(data)
    found = []
    for ev in recurring_ical_events.of(cal).between(start, end):
        s, e = ev["DTSTART"].dt, ev["DTEND"].dt if ev.get("DTEND") is not None else None
        found.append((str(_in_utc(s)), str(_in_utc(e)), str(ev.get("SUMMARY"))))
    return sorted(found)


# ------------------------------------------------------------------------------------ events
def test_event_goes_up_verifies_and_is_found_again(radicale, tmp_path):
    sink = caldav(radicale)
    src = write(tmp_path, "e.ics", recurring_event("jf-1@amt.example"))
    cal = calendar_name()
    digest = sink.digest(src)
    assert sink.find("anna", cal, digest) is None
    ref = sink.put("anna", cal, src)
    assert ref.startswith(f"http://anna@127.0.0.1:{radicale.port}/anna/{collection_name(cal)}/")
    assert ref.endswith("/jf-1@amt.example.ics")
    assert sink.verify(ref, digest) is None
    assert sink.find("anna", cal, digest) == ref
    # Radicale rewrote the text: the fingerprint, not the bytes, is what survives
    stored = read_back(ref)
    assert stored != src.read_bytes()
    assert event_fingerprint(stored) == digest
    # the calendar was made with MKCALENDAR and carries the display name
    resp = httpx.request("PROPFIND", f"{radicale.url}/anna/{collection_name(cal)}/", headers={"Depth": "0"},
                         auth=("anna", PASSWORDS["anna"]))
    assert cal in resp.text and "calendar" in resp.text


def test_recurrences_with_exceptions_and_time_zones_survive(radicale, tmp_path):
    sink = caldav(radicale)
    data = recurring_event("series-tz@amt.example")
    src = write(tmp_path, "series.ics", data)
    ref = load(sink, "anna", calendar_name(), src)
    start, end = datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2027, 1, 1, tzinfo=timezone.utc)
    at_source, at_target = expand(data, start, end), expand(read_back(ref), start, end)
    assert len(at_source) == 51                      # 52 Tuesdays, one cancelled, one moved
    assert ("2026-04-08 12:00:00+00:00", "2026-04-08 13:00:00+00:00", "Jour fixe (verschoben)") in at_source
    assert ("2026-03-24 08:30:00+00:00", "2026-03-24 09:30:00+00:00", "Jour fixe") in at_source   # CET
    assert ("2026-04-14 07:30:00+00:00", "2026-04-14 08:30:00+00:00", "Jour fixe") in at_source   # CEST
    assert at_target == at_source


def test_meetings_arrive_without_server_scheduling_unless_asked(radicale, tmp_path):
    """A server that schedules would invite every attendee of every migrated meeting again:
    ORGANIZER and ATTENDEE say SCHEDULE-AGENT=CLIENT (RFC 6638) unless the target asks otherwise."""
    data = recurring_event("meeting-1@amt.example", attendees=2)
    src = write(tmp_path, "m.ics", data)
    stored = read_back(load(caldav(radicale), "anna", calendar_name(), src)).decode().replace("\r\n ", "")
    people = [line for line in stored.splitlines() if line.startswith(("ORGANIZER", "ATTENDEE"))]
    assert len(people) == 5                                  # organizer + 2 attendees; 2 in the moved one
    assert all("SCHEDULE-AGENT=CLIENT" in line for line in people), people
    assert "p1@amt.example" in stored and "Jour fixe (verschoben)" in stored
    as_is = read_back(load(caldav(radicale, invitations="server"), "anna", calendar_name(), src))
    assert b"SCHEDULE-AGENT" not in as_is and b"ATTENDEE" in as_is


def test_rerun_after_a_kill_leaves_no_duplicate(radicale, tmp_path):
    cal = calendar_name()
    src = write(tmp_path, "e.ics", recurring_event("rerun@amt.example"))
    first = caldav(radicale)
    ref = first.put("anna", cal, src)               # killed before the ledger heard of it
    again = caldav(radicale)                         # a new process: no caches
    assert load(again, "anna", cal, src) == ref
    assert again.put("anna", cal, src) == ref        # even a blind put: 412, it is there
    assert len(objects_in(radicale, "anna", cal)) == 1


def test_the_same_uid_under_another_name_is_found_not_duplicated(radicale, tmp_path):
    cal = calendar_name()
    sink = caldav(radicale)
    sink.put("anna", cal, write(tmp_path, "x.ics", recurring_event("other@amt.example", summary="Anlage")))
    data = recurring_event("moved@amt.example")
    # another client stored the event under a name of its own
    url = f"{radicale.url}/anna/{collection_name(cal)}/from-outlook-4711.ics"
    assert httpx.put(url, content=data, auth=("anna", PASSWORDS["anna"]),
                     headers={"Content-Type": "text/calendar"}).status_code == 201
    ref = caldav(radicale).put("anna", cal, write(tmp_path, "e.ics", data))
    assert ref.endswith("/from-outlook-4711.ics")
    assert len(objects_in(radicale, "anna", cal)) == 2


def test_412_keeps_what_is_there_and_verify_names_the_difference(radicale, tmp_path):
    cal = calendar_name()
    sink = caldav(radicale)
    ref = sink.put("anna", cal, write(tmp_path, "a.ics", recurring_event("clash@amt.example")))
    changed = write(tmp_path, "b.ics", recurring_event("clash@amt.example", summary="Neuer Titel"))
    digest = sink.digest(changed)
    assert sink.find("anna", cal, digest) is None       # a different event is there
    assert sink.put("anna", cal, changed) == ref         # create-only: 412, nothing overwritten
    assert sink.verify(ref, digest) == f"{ref}: SUMMARY differs"
    assert b"Neuer Titel" not in read_back(ref)


def test_verify_catches_a_summary_changed_on_the_server(radicale, tmp_path):
    sink = caldav(radicale)
    src = write(tmp_path, "e.ics", recurring_event("edited@amt.example"))
    ref = load(sink, "anna", calendar_name(), src)
    digest = sink.digest(src)
    assert sink.verify(ref, digest) is None
    server_put(ref, read_back(ref).replace(b"SUMMARY:Jour fixe\r\n", b"SUMMARY:Jour fixe (alt)\r\n", 1))
    assert sink.verify(ref, digest) == f"{ref}: SUMMARY differs"


def test_verify_catches_an_event_edited_in_the_servers_storage(radicale, tmp_path):
    sink = caldav(radicale)
    cal = calendar_name()
    src = write(tmp_path, "e.ics", recurring_event("on-disk@amt.example"))
    ref = load(sink, "anna", cal, src)
    stored, = objects_in(radicale, "anna", cal)
    stored.write_bytes(stored.read_bytes().replace(b"SUMMARY:Jour fixe\r\n", b"SUMMARY:Jour fixe!\r\n", 1)
                       .replace(b"Europe/Berlin:20260106T093000", b"Europe/Berlin:20260106T100000", 1))
    assert sink.verify(ref, sink.digest(src)) == f"{ref}: SUMMARY differs; DTSTART differs"


def test_verify_counts_attendees(radicale, tmp_path):
    sink = caldav(radicale)
    src = write(tmp_path, "e.ics", recurring_event("people@amt.example", attendees=3))
    ref = load(sink, "anna", calendar_name(), src)
    fewer = recurring_event("people@amt.example", attendees=2)
    server_put(ref, fewer)
    assert sink.verify(ref, sink.digest(src)) == f"{ref}: 4 attendees instead of 6"
    assert differences(sink.digest(src), event_fingerprint(fewer)) == ["4 attendees instead of 6"]


def test_verify_reports_a_missing_event(radicale, tmp_path):
    sink = caldav(radicale)
    src = write(tmp_path, "e.ics", recurring_event("gone@amt.example"))
    ref = load(sink, "anna", calendar_name(), src)
    sink.remove(ref)
    assert sink.verify(ref, sink.digest(src)) == f"{ref} is missing at the target"
    sink.remove(ref)                                   # already gone is fine


def test_too_large_event_fails_with_a_typed_reason(strict_radicale, tmp_path):
    sink = caldav(strict_radicale)
    big = recurring_event("big@amt.example").replace(
        b"SUMMARY:Jour fixe\r\nRRULE", b"DESCRIPTION:" + b"Protokoll " * 900 + b"\r\nSUMMARY:Jour fixe\r\nRRULE", 1)
    with pytest.raises(ItemError) as err:
        sink.put("anna", calendar_name(), write(tmp_path, "big.ics", big))
    assert err.value.reason == "too_large"
    assert "6000 bytes" in str(err.value)


def test_too_large_without_an_announced_limit_is_told_by_the_server(strict_radicale, tmp_path):
    """Radicale answers 412 for an object over its limit; the sink tells that from "already there"."""
    sink = caldav(strict_radicale)
    cal = calendar_name()
    sink.put("anna", cal, write(tmp_path, "small.ics", recurring_event("small@amt.example")))
    path = next(iter(sink._collections))
    sink._collections[path] = {"size": None, "instances": None}        # as if the server announced none
    big = recurring_event("big2@amt.example").replace(
        b"SUMMARY:Jour fixe\r\nRRULE", b"DESCRIPTION:" + b"Protokoll " * 900 + b"\r\nSUMMARY:Jour fixe\r\nRRULE", 1)
    with pytest.raises(ItemError) as err:
        sink.put("anna", cal, write(tmp_path, "big.ics", big))
    assert err.value.reason == "precondition_failed"                   # no limit known: said as it is
    sink._collections[path] = {"size": 6000, "instances": None}
    sink._precheck = lambda data, limits, src: None                      # the server must refuse it itself
    with pytest.raises(ItemError) as err:
        sink.put("anna", cal, write(tmp_path, "big.ics", big))
    assert err.value.reason == "too_large"


def test_too_many_instances_fails_with_a_typed_reason(strict_radicale, tmp_path):
    src = write(tmp_path, "long.ics", recurring_event("long@amt.example", count=500))
    with pytest.raises(ItemError) as err:
        caldav(strict_radicale, max_instances=100).put("anna", calendar_name(), src)
    assert err.value.reason == "too_many_instances"
    # without the cap configured, the server's refusal (a bare 400) is still typed
    with pytest.raises(ItemError) as err:
        caldav(strict_radicale).put("anna", calendar_name(), src)
    assert err.value.reason == "rejected"
    # a series within the cap goes up
    ok = write(tmp_path, "short.ics", recurring_event("short@amt.example", count=50))
    assert caldav(strict_radicale, max_instances=100).put("anna", calendar_name(), ok)


def test_not_an_event_is_invalid_data(radicale, tmp_path):
    sink = caldav(radicale)
    with pytest.raises(ItemError) as err:
        sink.digest(write(tmp_path, "x.ics", b"this is no calendar"))
    assert err.value.reason == "invalid_data"


def test_contacts_go_up_verify_and_rerun_without_duplicates(radicale, tmp_path):
    book = f"Kontakte {uuid.uuid4().hex[:6]}"
    got = {}
    for name, data in cards().items():
        src = write(tmp_path, f"{name}.vcf", data)
        sink = carddav(radicale)
        ref = load(sink, "ben", book, src)
        assert sink.verify(ref, sink.digest(src)) is None, name
        got[name] = ref
        # a rerun in a new process finds each card and sends nothing
        again = carddav(radicale)
        assert again.find("ben", book, again.digest(src)) == ref
        assert again.put("ben", book, src) == ref
    assert len(objects_in(radicale, "ben", book, "addressbook")) == 3
    assert got["v21-no-uid"].endswith(".vcf") and "umstieg-" in got["v21-no-uid"]
    resp = httpx.request("PROPFIND", f"{radicale.url}/ben/{collection_name(book)}.contacts/", headers={"Depth": "0"},
                         auth=("ben", PASSWORDS["ben"]))
    assert "addressbook" in resp.text and book in resp.text


OUTLOOK_21 = (b"BEGIN:VCARD\r\nVERSION:2.1\r\nUID:outlook-21@amt.example\r\nN:Beispiel;Berta\r\n"
              b"FN:Berta Beispiel\r\nTEL;WORK;VOICE:030 777 88\r\nTEL;CELL:0170 1\r\n"
              b"EMAIL;PREF;INTERNET:berta@amt.example\r\n"
              b"NOTE;ENCODING=QUOTED-PRINTABLE:Zustaendig fuer Wahlen, Meldewesen=0D=0Aund Paesse\r\n"
              b"END:VCARD\r\n")


def test_radicale_loses_a_21_cards_fields_and_the_fingerprint_names_them(radicale, tmp_path):
    """What happened before cards were converted: Radicale took the 2.1 card as it was, dropped
    the types of its numbers and addresses and cut the note at its comma. Verify now sees it;
    the converted card keeps every field."""
    book = f"Kontakte {uuid.uuid4().hex[:6]}"
    sink = carddav(radicale)
    sink._collection("ben", "ben", book)                       # the address book, as the sink makes it
    url = f"{radicale.url}{sink.collection_path('ben', book)}raw.vcf"
    assert httpx.put(url, content=OUTLOOK_21, auth=("ben", PASSWORDS["ben"]),
                     headers={"Content-Type": "text/vcard"}).status_code == 201
    mangled = httpx.get(url, auth=("ben", PASSWORDS["ben"])).content
    assert differences(contact_fingerprint(OUTLOOK_21), contact_fingerprint(mangled)) == \
        ["EMAIL differs", "TEL differs", "NOTE differs"]
    # the same UID is there now, mangled: create-only keeps it, and verify says what differs
    src = write(tmp_path, "c.vcf", OUTLOOK_21)
    ref = load(sink, "ben", book, src)
    assert ref.endswith("/raw.vcf")
    assert sink.verify(ref, sink.digest(src)) == f"{ref}: EMAIL differs; TEL differs; NOTE differs"
    # into a fresh address book, converted to 3.0, it keeps every field
    ref = load(sink, "ben", book + " neu", src)
    assert sink.verify(ref, sink.digest(src)) is None
    kept = contact_fields(read_back(ref))
    assert kept == contact_fields(OUTLOOK_21)
    assert kept["NOTE"] == "Zustaendig fuer Wahlen, Meldewesen\nund Paesse"
    assert kept["TEL"] == "01701/cell,03077788/voice+work" and kept["EMAIL"] == "berta@amt.example/internet+pref"


def test_vcard_21_lines_written_as_30():
    """The line-level changes, one by one; 3.0 and 4.0 cards are left as they are."""
    card = (b"BEGIN:VCARD\r\nVERSION:2.1\r\nN:Roth;Eva\r\nitem1.TEL;HOME:030 1\r\nGEO:52.5,13.4\r\n"
            b"CATEGORIES:Amt,Presse\r\nPHOTO;VALUE=URL;JPEG:http://amt.example/eva.jpg\r\n"
            b"ADR;HOME:;;Weg 2\\; Hinterhaus;Berlin;;10115;DE\r\nX-ABC;CHARSET=ISO-8859-1:Gr\xfc\xdfe, \\x\r\n"
            b"END:VCARD\r\n")
    text = vcard_30(card).decode("utf-8")
    assert text.splitlines() == [
        "BEGIN:VCARD", "VERSION:3.0", "FN:Eva Roth", "N:Roth;Eva", "item1.TEL;TYPE=HOME:030 1", "GEO:52.5;13.4",
        "CATEGORIES:Amt,Presse", "PHOTO;VALUE=uri;TYPE=JPEG:http://amt.example/eva.jpg",
        "ADR;TYPE=HOME:;;Weg 2\\; Hinterhaus;Berlin;;10115;DE", "X-ABC:Grüße\\, \\\\x", "END:VCARD"]
    for other in cards()["v3"], cards()["v4"]:
        assert vcard_30(other) == other


def test_calendar_and_address_book_of_one_folder_are_two_collections(radicale, tmp_path):
    """Radicale keeps calendars and address books in one home: a source folder "Team" with both
    an appointment and a contact must become a calendar and an address book, not one collection
    refusing the other kind."""
    name = f"Team {uuid.uuid4().hex[:6]}"
    event_ref = load(caldav(radicale), "ben", name, write(tmp_path, "e.ics", recurring_event("team@amt.example")))
    card_src = write(tmp_path, "c.vcf", cards()["v3"])
    book = carddav(radicale)
    card_ref = load(book, "ben", name, card_src)
    assert book.verify(card_ref, book.digest(card_src)) is None
    assert event_ref.rsplit("/", 2)[1] != card_ref.rsplit("/", 2)[1]
    assert card_ref.rsplit("/", 2)[1].endswith(".contacts")
    assert len(objects_in(radicale, "ben", name)) == 1 and len(objects_in(radicale, "ben", name, "addressbook")) == 1


def test_verify_catches_a_changed_name_and_phone(radicale, tmp_path):
    sink = carddav(radicale)
    src = write(tmp_path, "c.vcf", cards()["v3"])
    ref = load(sink, "ben", f"Kontakte {uuid.uuid4().hex[:6]}", src)
    user, _, rest = ref.partition("://")[2].partition("@")
    changed = cards()["v3"].replace(b"FN:Anna Muster", b"FN:Anna Schmidt").replace(b"1234-56", b"1234-57")
    assert httpx.put(f"http://{rest}", content=changed, auth=(user, PASSWORDS[user]),
                     headers={"If-Match": "*", "Content-Type": "text/vcard"}).status_code in (201, 204)
    assert sink.verify(ref, sink.digest(src)) == f"{ref}: FN differs; TEL differs"


def test_every_property_a_card_carries_is_verified(radicale, tmp_path):
    """Not only names, phones and notes: a title, role, birthday, nickname, web address, categories,
    chat address and a vendor's X- property are each verified with their types; a server that drops
    or changes one fails verification (only VERSION, PRODID and REV may be rewritten)."""
    sink = carddav(radicale)
    card = RICH_CARD.format(n=uuid.uuid4().hex[:6]).encode()
    src = write(tmp_path, "rich.vcf", card)
    ref = load(sink, "ben", f"Kontakte {uuid.uuid4().hex[:6]}", src)
    assert sink.verify(ref, sink.digest(src)) is None
    other = contact_fields(card)["OTHER"]
    for expected in ("TITLE;:Leiterin, Bürgeramt", "BDAY;:19800102", "URL;work:https://amt.example/dora",
                     "CATEGORIES;:Amt,Leitung", "IMPP;work:xmpp:dora@amt.example", "X-SKYPE-USERNAME;:dora.beispiel",
                     "ROLE;:Vertretung", "NICKNAME;:Doro", "X-ABLABEL;:Assistenz"):
        assert expected in other.split("\n"), (expected, other)
    user, _, rest = ref.partition("://")[2].partition("@")
    rewritten = card.replace(b"PRODID:-//Outlook//DE", b"PRODID:-//Radicale//EN").replace(b"BDAY:1980-01-02",
                                                                                           b"BDAY:19800102")
    for damaged in (rewritten, card.replace(b"TITLE:Leiterin\\, B\xc3\xbcrgeramt\r\n", b""),
                    card.replace(b"URL;TYPE=WORK:", b"URL:")):
        assert httpx.put(f"http://{rest}", content=damaged, auth=(user, PASSWORDS[user]),
                         headers={"If-Match": "*", "Content-Type": "text/vcard"}).status_code in (201, 204)
        problem = sink.verify(ref, sink.digest(src))
        if damaged is rewritten:
            assert problem is None, problem              # allowed: the writer's name, a date's spelling
        else:
            assert problem == f"{ref}: OTHER differs", problem


# ------------------------------------------------------------------------------------- check
def test_check_lists_every_problem(radicale):
    assert caldav(radicale).check(["anna", "ben"]) == []
    assert carddav(radicale).check(["anna"]) == []
    wrong = CalDav(CalDavTarget(url=radicale.url, app_passwords={"anna": "env:PW_ANNA", "ben": "env:PW_WRONG"}))
    problems = wrong.check(["anna", "ben", "carla"])
    assert len(problems) == 2
    assert "account 'ben' was refused (HTTP 401)" in problems[0]
    assert "no credentials for target user 'carla'" in problems[1]
    assert PASSWORDS["anna"] not in " ".join(problems) and "not-the-password" not in " ".join(problems)


def test_check_of_an_unreachable_server_is_one_problem():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = CalDav(CalDavTarget(url=f"http://127.0.0.1:{port}", app_passwords=refs(), timeout=2))
    problems = sink.check(["anna", "ben"])
    assert len(problems) == 1 and "cannot connect" in problems[0]


def test_homes_per_flavour():
    nc = CalDav(CalDavTarget(url="https://cloud.example/", flavour="nextcloud", app_passwords=refs()))
    assert nc.home("anna") == "/remote.php/dav/calendars/anna/"
    nc_book = CardDav(CardDavTarget(url="https://cloud.example", flavour="nextcloud", app_passwords=refs()))
    assert nc_book.home("anna") == "/remote.php/dav/addressbooks/users/anna/"
    ox = CalDav(CalDavTarget(url="https://ox.example", flavour="ox", app_passwords=refs()))
    assert ox.home("anna") == "/servlet/dav/caldav/"
    generic = CardDav(CardDavTarget(url="https://dav.example/dav.php", username="svc", password="env:PW_ANNA",
                                    folder="addressbooks/{user}"))
    assert generic.home("anna") == "/dav.php/addressbooks/anna/"
    assert resource_name("a b/c", ".ics").startswith("uid-") and resource_name("ok-1@x", ".ics") == "ok-1@x.ics"
    assert collection_name("Team/Plan") != collection_name("Team Plan")


def test_missing_secret_is_a_config_error(radicale, tmp_path, monkeypatch):
    monkeypatch.delenv("PW_ANNA")
    with pytest.raises(ConfigError):
        caldav(radicale).put("anna", calendar_name(), write(tmp_path, "e.ics", recurring_event("s@x")))


class _Busy(http.server.BaseHTTPRequestHandler):
    """Answers every request with 503 and Retry-After: 7 (a server under load)."""

    def _busy(self):
        self.send_response(503)
        self.send_header("Retry-After", "7")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_GET = do_PROPFIND = do_MKCALENDAR = _busy

    def log_message(self, *args):
        pass


def test_busy_server_is_transient_with_retry_after(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sink = CalDav(CalDavTarget(url=f"http://127.0.0.1:{server.server_port}", app_passwords=refs(), timeout=5))
        with pytest.raises(TransientError) as err:
            sink.put("anna", "Kalender", write(tmp_path, "e.ics", recurring_event("busy@x")))
        assert err.value.retry_after == 7
    finally:
        server.shutdown()
        server.server_close()


def test_wrong_password_mid_run_is_fatal(radicale, tmp_path):
    sink = CalDav(CalDavTarget(url=radicale.url, app_passwords={"anna": "env:PW_WRONG"}))
    with pytest.raises(FatalError):
        sink.put("anna", calendar_name(), write(tmp_path, "e.ics", recurring_event("w@x")))


# ------------------------------------------------------------------------- corpus, end to end
def _corpus_calendars(corpus: Path, tmp_path: Path, per_file: int = 12) -> Path:
    """The corpus' calendars, in an export folder for one user (valid and invalid alike)."""
    user = tmp_path / "export" / "anna" / "Kalender"
    user.mkdir(parents=True)
    for path in sorted((corpus / "calendars").rglob("*")):
        if path.suffix.lower() in (".ics", ".vcs") and path.is_file():
            (user / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    return tmp_path / "export"


@pytest.mark.corpus
def test_corpus_calendars_go_up_and_verify(corpus, radicale, tmp_path):
    root = _corpus_calendars(corpus, tmp_path)
    source = source_for(ExportSource(name="exports", root=root))
    sink = caldav(radicale)
    found = list(source.discover("anna", "anna"))
    per_file: dict[str, int] = {}
    outcomes: dict[str, list[str]] = {}
    for ref in found:
        stem = ref.key.split("#")[0]
        per_file[stem] = per_file.get(stem, 0) + 1
        if per_file[stem] > 6:                      # big feeds: a few events each are enough here
            continue
        staged = tmp_path / "staged" / f"{len(outcomes.setdefault('verified', []))}-{abs(hash(ref.key))}.ics"
        try:
            source.extract("anna", ref.location, staged, key=ref.key)
            digest = sink.digest(staged)
            target = sink.find("anna", ref.location, digest, ref.meta) or sink.put("anna", ref.location, staged)
            problem = sink.verify(target, digest)
            outcomes.setdefault("verified" if problem is None else "verify_mismatch", []).append(ref.key)
        except ItemError as exc:
            outcomes.setdefault(exc.reason, []).append(ref.key)
    unreadable = {k.split("/")[-1].split("#")[0] for k in outcomes.get("unreadable_export", [])}
    # the deliberately broken files of the corpus end as typed outcomes, never as a crash
    assert {"invalid-boeing.ics", "invalid-twinkle.ics", "invalid-13-MoonPhase.ics",
            "tika-testVCalendar.vcs"} <= unreadable
    # of the valid files, only one with an empty TZID cannot be read here
    assert {k for k in outcomes.get("unreadable_export", []) if "/valid-" in k} == \
        {"anna/Kalender/valid-blankTzid.ics#bad:"}
    assert "verify_mismatch" not in outcomes, outcomes.get("verify_mismatch")
    assert len(outcomes["verified"]) >= 200
    assert set(outcomes) <= {"verified", "unreadable_export", "rejected", "invalid_data", "unsupported_item"}, \
        {k: v[:3] for k, v in outcomes.items() if k != "verified"}
    # free/busy objects (RFC 5545 3.6.4's examples): a calendar takes events, tasks and journals
    unsupported = {k.split("#")[0] for k in outcomes.get("unsupported_item", [])}
    assert unsupported <= {"anna/Kalender/valid-rfc5545-sec3.6.4.ics"}
    # Radicale refuses a few valid objects its parser (vobject) cannot read (PERIOD values, RDATE with
    # VALUE, odd DTSTART parameters, VFREEBUSY): they fail as `rejected`, with the server's answer
    assert len(outcomes.get("rejected", [])) <= 0.08 * len(outcomes["verified"]), outcomes.get("rejected")


@pytest.mark.corpus
def test_corpus_recurring_events_expand_alike(corpus, radicale, tmp_path):
    """Every valid corpus event with an RRULE: the occurrences of one year match after the trip."""
    root = _corpus_calendars(corpus, tmp_path)
    source = source_for(ExportSource(name="exports", root=root))
    sink = caldav(radicale)
    compared, per_file = 0, {}
    for ref in source.discover("anna", "anna"):
        if "/valid-" not in ref.key or ref.key.endswith("#bad:"):
            continue
        stem = ref.key.split("#")[0]
        per_file[stem] = per_file.get(stem, 0) + 1
        if per_file[stem] > 6:
            continue
        staged = tmp_path / "s" / f"{abs(hash(ref.key))}.ics"
        source.extract("anna", ref.location, staged, key=ref.key)
        data = staged.read_bytes()
        if b"RRULE" not in data:
            continue
        try:
            import icalendar
            first = min(c["DTSTART"].dt for c in icalendar.Calendar.from_ical(data).walk("VEVENT")
                        if c.get("DTSTART") is not None)
            year = first.year if hasattr(first, "year") else 2006
            window = (datetime(year, 1, 1, tzinfo=timezone.utc), datetime(year + 1, 1, 1, tzinfo=timezone.utc))
            at_source = expand(data, *window)
        except Exception:                          # noqa: BLE001 - events the expander cannot read are not compared
            continue
        try:
            target = sink.find("anna", ref.location, sink.digest(staged), ref.meta) or sink.put("anna", ref.location,
                                                                                                staged)
        except ItemError as exc:
            assert exc.reason == "rejected"         # what Radicale cannot read (see the test above)
            continue
        assert expand(read_back(target), *window) == at_source, ref.key
        compared += 1
    assert compared >= 10


def test_department_moves_calendars_and_contacts_end_to_end(radicale, tmp_path):
    """discover → extract → load → verify through the flow's steps, twice: nothing doubles."""
    from flows.discovery import discover
    from flows.steps import process_chunk
    from flows import runtime
    from core.ledger import Item
    from sqlalchemy import select
    export = tmp_path / "export" / "anna"
    export.mkdir(parents=True)
    (export / "Dienst.ics").write_bytes(recurring_event("dept-1@amt.example").replace(b"END:VCALENDAR\r\n", b"")
                                        + recurring_event("dept-2@amt.example", summary="Sprechstunde")
                                        .split(b"END:VTIMEZONE\r\n", 1)[1])
    (export / "Adressen.vcf").write_bytes(b"".join(cards().values()))
    (export / "kaputt.ics").write_bytes(b"BEGIN:VCALENDAR\r\nnonsense")
    dept_file = tmp_path / "department.yaml"
    dept_file.write_text(yaml.safe_dump({
        "name": "kalenderamt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": "anna", "target": "ben"}],
        "sources": [{"name": "exports", "type": "export", "root": str(tmp_path / "export")}],
        "target": {"type": "localdir", "root": str(tmp_path / "files")},
        "calendar_target": {"type": "caldav", "url": radicale.url, "app_passwords": {"ben": "env:PW_BEN"}},
        "contacts_target": {"type": "carddav", "url": radicale.url, "app_passwords": {"ben": "env:PW_BEN"}},
        "conversion": {"enabled": False},
    }), encoding="utf-8")
    for attempt in range(2):
        dept = runtime.department(str(dept_file))
        ledger = runtime.ledger(dept)
        run = ledger.start_run(dept.name, "migrate")
        found = discover(dept, ledger, run)
        for owner, ids in found.todo.items():
            process_chunk(str(dept_file), run, owner, attempt, ids)
        ledger.finish_run(run, "completed")
        with ledger.session() as s:
            rows = {i.key.split("/", 1)[1]: (i.state, i.reason) for i in s.scalars(select(Item))}
    assert rows["Dienst.ics#ics:dept-1@amt.example"] == ("verified", None)
    assert rows["Dienst.ics#ics:dept-2@amt.example"] == ("verified", None)
    assert [v for k, v in rows.items() if k.startswith("Adressen.vcf")] == [("verified", None)] * 3
    assert rows["kaputt.ics#bad:"] == ("failed", "unreadable_export")
    assert len(objects_in(radicale, "ben", "Dienst")) == 2
    assert len(objects_in(radicale, "ben", "Adressen", "addressbook")) == 3
