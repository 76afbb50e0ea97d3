"""Calendars and contacts into a real Nextcloud 27 (the session's `nextcloud_server`).

What the Radicale tests (test_groupware.py) cannot show: several accounts served by one sink
(Nextcloud's session cookie once made every account act as the first), vCard 2.1 refused with 415
and converted, the calendar limits (10 new an hour, 30 in all), the parser's HTTP 500 for objects
it cannot read, and calendars that take journals. Every test makes accounts of its own.
"""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path

import httpx
import pytest

from core.department import CalDavTarget, CardDavTarget, ExportSource
from core.errors import ItemError
from clients.pim import contact_fields
from sinks.groupware import CalDav, CardDav, Refused
from sources.export import source_for
from helpers import RICH_CARD, load, recurring_event, write


def accounts(nc, monkeypatch, n: int, prefix: str = "pim"):
    """`n` new accounts with app passwords, and the sink configuration's references to them."""
    users = [nc.new_user(prefix) for _ in range(n)]
    refs = {}
    for i, user in enumerate(users):
        var = f"NC_PIM_{uuid.uuid4().hex[:8].upper()}_{i}"
        monkeypatch.setenv(var, user.secret)
        refs[user.login] = f"env:{var}"
    return users, refs


def caldav(nc, refs, **overrides) -> CalDav:
    return CalDav(CalDavTarget(url=nc.url, flavour="nextcloud", app_passwords=refs, timeout=60, **overrides))


def carddav(nc, refs, **overrides) -> CardDav:
    return CardDav(CardDavTarget(url=nc.url, flavour="nextcloud", app_passwords=refs, timeout=60, **overrides))


def read_back(nc, user, ref: str) -> bytes:
    """The object as the server gives it to its owner's own client."""
    path = "/" + ref.partition("://")[2].partition("/")[2]
    with nc.dav(user) as client:
        resp = client.get(path)
    assert resp.status_code == 200, (ref, resp.status_code)
    return resp.content


def collections(nc, user, kind: str = "calendars") -> dict[str, str]:
    """href -> display name of every calendar (or address book) in the account's home."""
    import xml.etree.ElementTree as ET
    home = f"/remote.php/dav/{kind}/{user.login}/" if kind == "calendars" else \
        f"/remote.php/dav/addressbooks/users/{user.login}/"
    with nc.dav(user) as client:
        resp = client.request("PROPFIND", home, headers={"Depth": "1"}, content=(
            b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:displayname/><d:resourcetype/>'
            b"</d:prop></d:propfind>"))
    assert resp.status_code == 207
    found = {}
    for r in ET.fromstring(resp.content).iter("{DAV:}response"):
        rtype = r.find(".//{DAV:}resourcetype")
        if rtype is not None and any(c.tag.endswith(("}calendar", "}addressbook")) for c in rtype):
            found[r.findtext("{DAV:}href")] = r.findtext(".//{DAV:}displayname") or ""
    return found


def objects(nc, user, href: str) -> list[str]:
    import xml.etree.ElementTree as ET
    with nc.dav(user) as client:
        resp = client.request("PROPFIND", href, headers={"Depth": "1"})
    return [h for h in (r.findtext("{DAV:}href") for r in ET.fromstring(resp.content).iter("{DAV:}response"))
            if h and h.rstrip("/") != href.rstrip("/")]


# ----------------------------------------------------------------------------------- several users
def test_three_accounts_check_and_load_into_their_own_homes(nextcloud_server, monkeypatch, tmp_path):
    """One sink, three accounts with their own app passwords: each passes the pre-run check and
    gets its own event and card (a cookie kept from the first account made the others fail)."""
    nc = nextcloud_server
    users, refs = accounts(nc, monkeypatch, 3)
    cal, book = caldav(nc, refs), carddav(nc, refs)
    logins = [u.login for u in users]
    assert cal.check(logins) == []
    assert book.check(logins) == []
    loaded = {}
    for user in users:
        event = write(tmp_path, f"{user.login}.ics", recurring_event(f"jf-{user.login}@amt.example",
                                                                     summary=f"Jour fixe {user.login}"))
        card = write(tmp_path, f"{user.login}.vcf", (
            f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:card-{user.login}\r\nFN:Kontakt {user.login}\r\n"
            f"N:{user.login};Kontakt;;;\r\nEMAIL;TYPE=work:{user.login}@amt.example\r\nEND:VCARD\r\n").encode())
        ref_event, ref_card = load(cal, user.login, "Kalender", event), load(book, user.login, "Kontakte", card)
        assert cal.verify(ref_event, cal.digest(event)) is None
        assert book.verify(ref_card, book.digest(card)) is None
        loaded[user.login] = (ref_event, ref_card)
    for user in users:
        ref_event, ref_card = loaded[user.login]
        assert f"/calendars/{user.login}/" in ref_event and f"/addressbooks/users/{user.login}/" in ref_card
        assert f"Jour fixe {user.login}".encode() in read_back(nc, user, ref_event)
        assert f"Kontakt {user.login}".encode() in read_back(nc, user, ref_card)
        # each account holds its own event only
        (href,) = [h for h, name in collections(nc, user).items() if name == "Kalender"]
        assert [h.rsplit("/", 1)[1] for h in objects(nc, user, href)] == [f"jf-{user.login}@amt.example.ics"]
    # a wrong app password for one account is that account's problem, named, without the secret
    monkeypatch.setenv(refs[logins[1]].removeprefix("env:"), "wrong-app-password")
    problems = caldav(nc, refs).check(logins)
    assert len(problems) == 1 and f"account {logins[1]!r} was refused (HTTP 401)" in problems[0]
    assert "wrong-app-password" not in problems[0]


# ----------------------------------------------------------------------------------- contacts
PHOTO = bytes(range(256)) * 12                 # 3 KiB standing in for a JPEG


def outlook_card(uid: str | None = "outlook-1@amt.example") -> bytes:
    """A vCard 2.1 as Outlook writes it: Windows-1252, quoted-printable notes and labels with soft
    line breaks, bare types, a base64 photo ending in an empty line."""
    photo = base64.b64encode(PHOTO).decode()
    lines = ["BEGIN:VCARD", "VERSION:2.1"]
    if uid:
        lines.append(f"UID:{uid}")
    lines += [
        "N;LANGUAGE=de;CHARSET=Windows-1252:M\xfcller;J\xfcrgen;;Dr.;",
        "FN;CHARSET=Windows-1252:Dr. J\xfcrgen M\xfcller",
        "ORG:Stadt Musterhausen;B\xfcrgeramt",
        "TITLE:Sachbearbeiter, Team 3",
        "NOTE;ENCODING=QUOTED-PRINTABLE;CHARSET=Windows-1252:Erste Zeile=0D=0AZweite Zeile, mit Komma; und Semi=",
        "kolon=0D=0A=0D=0Aletzte Zeile: Gr=FC=DFe",
        "TEL;WORK;VOICE:+49 30 1234-56",
        "TEL;CELL;VOICE:0170 555 66",
        "TEL;WORK;FAX:030 1234-99",
        "ADR;WORK;PREF;CHARSET=Windows-1252:;;Rathausplatz 1;Musterhausen;;12345;Deutschland",
        "LABEL;WORK;PREF;ENCODING=QUOTED-PRINTABLE:Rathausplatz 1=0D=0A12345 Musterhausen",
        "EMAIL;PREF;INTERNET:juergen.mueller@amt.example",
        "EMAIL;INTERNET;HOME:j.m@privat.example",
        "PHOTO;TYPE=JPEG;ENCODING=BASE64:",
        *["    " + photo[i:i + 72] for i in range(0, len(photo), 72)],
        "",
        "REV:20260101T120000Z",
        "END:VCARD",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


def test_nextcloud_refuses_vcard_21(nextcloud_server, monkeypatch):
    """Why the conversion exists: the server itself refuses a 2.1 card."""
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    with nc.dav(user) as client:
        resp = client.put(f"/remote.php/dav/addressbooks/users/{user.login}/contacts/raw.vcf",
                          content=b"BEGIN:VCARD\r\nVERSION:2.1\r\nUID:raw-1\r\nN:Beispiel;Berta\r\n"
                                  b"FN:Berta Beispiel\r\nTEL;WORK;VOICE:030 777 88\r\nEND:VCARD\r\n",
                          headers={"Content-Type": "text/vcard"})
    assert resp.status_code == 415 and "vCard 2.1" in resp.text


def test_outlook_vcard_21_arrives_with_every_field(nextcloud_server, monkeypatch, tmp_path):
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    sink = carddav(nc, refs)
    src = write(tmp_path, "outlook.vcf", outlook_card())
    digest = sink.digest(src)
    ref = load(sink, user.login, "Kontakte", src)
    assert sink.verify(ref, digest) is None
    stored = read_back(nc, user, ref)
    assert b"VERSION:3.0" in stored
    kept = contact_fields(stored)
    # field by field, as written in the 2.1 card
    assert kept == contact_fields(outlook_card())
    assert kept["FN"] == "Dr. Jürgen Müller" and kept["N"] == "Müller;Jürgen;;Dr."
    assert kept["ORG"] == "Stadt Musterhausen;Bürgeramt"
    assert kept["NOTE"] == "Erste Zeile\nZweite Zeile, mit Komma; und Semikolon\n\nletzte Zeile: Grüße"
    assert kept["TEL"] == "+4930123456/voice+work,017055566/cell+voice,030123499/fax+work"
    assert kept["EMAIL"] == "j.m@privat.example/home+internet,juergen.mueller@amt.example/internet+pref"
    assert kept["ADR"] == ";;Rathausplatz 1;Musterhausen;;12345;Deutschland/pref+work"
    import hashlib
    assert kept["PHOTO"] == "sha256:" + hashlib.sha256(PHOTO).hexdigest()
    text = stored.decode("utf-8").replace("\r\n ", "")
    assert "TITLE:Sachbearbeiter\\, Team 3" in text
    assert "LABEL;TYPE=WORK,PREF:Rathausplatz 1\\n12345 Musterhausen" in text
    # a rerun in a new process finds the card and sends nothing
    again = carddav(nc, refs)
    assert again.find(user.login, "Kontakte", again.digest(src)) == ref


def test_cards_without_uid_or_fn_and_in_utf8(nextcloud_server, monkeypatch, tmp_path):
    """A 2.1 card without UID gets the same UID on every run; one without FN gets FN from N; a 2.1
    file in UTF-8 with CHARSET=UTF-8 is read as UTF-8."""
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    sink = carddav(nc, refs)
    no_uid = outlook_card(uid=None)
    utf8 = ("BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=UTF-8:Gro\u00df;J\u00fcrgen\r\n"
            "NOTE;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=C3=9Cberstunden, Urlaub=0D=0Aab M=C3=A4rz\r\n"
            "TEL;HOME:030 55\r\nEND:VCARD\r\n").encode()
    refs_loaded = []
    for name, data in (("no-uid.vcf", no_uid), ("utf8.vcf", utf8)):
        src = write(tmp_path, name, data)
        ref = load(sink, user.login, "Kontakte", src)
        assert sink.verify(ref, sink.digest(src)) is None, name
        assert carddav(nc, refs).put(user.login, "Kontakte", src) == ref      # a rerun: the same object
        refs_loaded.append(ref)
    stored = contact_fields(read_back(nc, user, refs_loaded[1]))
    assert stored["FN"] == "Jürgen Groß" and stored["NOTE"] == "Überstunden, Urlaub\nab März"
    assert stored["TEL"] == "03055/home"


def test_every_property_of_a_card_survives_nextcloud(nextcloud_server, monkeypatch, tmp_path):
    """What Nextcloud keeps of a card with a title, role, birthday, nickname, web address,
    categories, chat address and vendor X- properties: all of it, as verification checks."""
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    sink = carddav(nc, refs)
    card = RICH_CARD.format(n=uuid.uuid4().hex[:6]).encode()
    src = write(tmp_path, "rich.vcf", card)
    ref = load(sink, user.login, "Kontakte", src)
    assert sink.verify(ref, sink.digest(src)) is None
    assert contact_fields(read_back(nc, user, ref))["OTHER"] == contact_fields(card)["OTHER"]


def test_verify_catches_dropped_types_and_a_cut_note(nextcloud_server, monkeypatch, tmp_path):
    """Another client (or a server) rewrites the card: types gone, the note cut at its comma."""
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    sink = carddav(nc, refs)
    src = write(tmp_path, "outlook.vcf", outlook_card())
    ref = load(sink, user.login, "Kontakte", src)
    stored = read_back(nc, user, ref).decode("utf-8").replace("\r\n ", "")
    damaged = (stored.replace("TEL;TYPE=WORK,VOICE:", "TEL:").replace("EMAIL;TYPE=INTERNET,HOME:", "EMAIL:")
               .replace("Zweite Zeile\\, mit Komma\\; und Semikolon\\n\\nletzte Zeile: Grüße", "Zweite Zeile"))
    assert damaged != stored
    path = "/" + ref.partition("://")[2].partition("/")[2]
    with nc.dav(user) as client:
        assert client.put(path, content=damaged.encode(), headers={"If-Match": "*", "Content-Type": "text/vcard"}
                          ).status_code == 204
    assert sink.verify(ref, sink.digest(src)) == f"{ref}: EMAIL differs; TEL differs; NOTE differs"


# ----------------------------------------------------------------------------------- calendars
def exported_calendar(folder: Path, files: int, calname: str | None, relcalid: str | None, prefix: str) -> None:
    """A calendar exported as `files` files of one event each (as a sync tool or a per-month export
    writes them), all naming the same calendar."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "".join([f"X-WR-CALNAME:{calname}\r\n" if calname else "",
                      f"X-WR-RELCALID:{relcalid}\r\n" if relcalid else ""])
    for i in range(files):
        (folder / f"{prefix}-{i:03d}.ics").write_bytes((
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\n"
            f"METHOD:PUBLISH\r\n{header}BEGIN:VEVENT\r\nUID:{prefix}-{i}@amt.example\r\n"
            "DTSTAMP:20260101T000000Z\r\n"
            f"DTSTART:2026{1 + i % 12:02d}{1 + i % 28:02d}T090000Z\r\n"
            f"DTEND:2026{1 + i % 12:02d}{1 + i % 28:02d}T100000Z\r\n"
            f"SUMMARY:Termin {i}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode())


def test_197_files_of_one_calendar_make_one_calendar(nextcloud_server, monkeypatch, tmp_path):
    """A 197-file export of one calendar (and 12 files of another, named only by its id in some
    files) lands in two calendars, not 209, and every event verifies."""
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    export = tmp_path / "export"
    exported_calendar(export / "anna", 197, "Kalender", "{0000002E-1A2B}", "kal")
    exported_calendar(export / "anna" / "alt", 5, "Urlaub", "{0000002E-9F9F}", "url")
    exported_calendar(export / "anna" / "alt", 7, None, "{0000002E-9F9F}", "url-ohne-namen")
    source = source_for(ExportSource(name="exports", root=export))
    refs_found = list(source.discover("anna", "anna"))
    assert len(refs_found) == 209
    assert {r.location for r in refs_found} == {"Kalender", "Urlaub"} == source.calendars("anna", "anna")
    sink = caldav(nc, refs)
    assert sink.check_calendars({user.login: source.calendars("anna", "anna")}) == []
    before = set(collections(nc, user))
    verified = 0
    for ref in refs_found:
        staged = tmp_path / "staged" / f"{abs(hash(ref.key))}.ics"
        source.extract("anna", ref.location, staged, key=ref.key)
        digest = sink.digest(staged)
        target = sink.find(user.login, ref.location, digest, ref.meta) or sink.put(user.login, ref.location, staged)
        assert sink.verify(target, digest) is None
        verified += 1
    made = {h: n for h, n in collections(nc, user).items() if h not in before}
    assert sorted(made.values()) == ["Kalender", "Urlaub"]
    counts = {name: len(objects(nc, user, href)) for href, name in made.items()}
    assert counts == {"Kalender": 197, "Urlaub": 12} and verified == 209


def test_check_says_when_a_department_would_exceed_the_calendar_limits(nextcloud_server, monkeypatch, tmp_path):
    nc = nextcloud_server
    users, refs = accounts(nc, monkeypatch, 2)
    sink = caldav(nc, refs)
    few = {f"Kalender {i}" for i in range(4)}
    many = {f"Projekt {i:02d}" for i in range(12)}
    assert sink.check_calendars({users[0].login: few}) == []
    problems = sink.check_calendars({users[0].login: few, users[1].login: many})
    assert len(problems) == 1
    assert f"{users[1].login!r} would get 12 new calendars" in problems[0]
    assert "10 per account in 60 minutes" in problems[0] and "rateLimitCalendarCreation" in problems[0]
    # more than 30 in all (Nextcloud's default, with the account's own "Personal" calendar)
    problems = sink.check_calendars({users[0].login: {f"Akte {i:02d}" for i in range(30)}})
    assert len(problems) == 2 and "would have 31 calendars (1 there, 30 new)" in problems[1]
    assert "maximumCalendarsSubscriptions" in problems[1]
    # a department whose server allows more says so
    raised = caldav(nc, refs, new_calendars_per_period=50, max_calendars=100)
    assert raised.check_calendars({users[0].login: {f"Akte {i:02d}" for i in range(30)}}) == []
    # calendars that are there already are not new
    sink.put(users[1].login, "Projekt 00", write(tmp_path, "p.ics", recurring_event("p00@amt.example")))
    sink.put(users[1].login, "Projekt 01", write(tmp_path, "q.ics", recurring_event("p01@amt.example")))
    assert sink.check_calendars({users[1].login: many}) == []
    # servers other than Nextcloud: no limits known, none stated, nothing to say
    generic = CalDav(CalDavTarget(url=nc.url, app_passwords=refs, folder="remote.php/dav/calendars/{user}"))
    assert generic.check_calendars({users[0].login: {f"Akte {i:02d}" for i in range(40)}}) == []


class _Counting(httpx.HTTPTransport):
    """Counts the requests a sink sends, per method."""

    def __init__(self) -> None:
        super().__init__()
        self.methods: list[str] = []

    def handle_request(self, request):
        self.methods.append(request.method)
        return super().handle_request(request)


def counting_sink(nc, refs, transport, **kwargs) -> CalDav:
    return CalDav(CalDavTarget(url=nc.url, flavour="nextcloud", app_passwords=refs, timeout=60),
                  transport=transport, **kwargs)


def test_each_account_keeps_its_own_session_and_nextcloud_counts_its_calendars(nextcloud_server, monkeypatch,
                                                                                tmp_path):
    """Nextcloud 27.1 counts new calendars only for requests whose session names the user (its
    rate-limiting plugin reads the user before Basic auth logs in). The sink keeps one session per
    account (sinks.http.AccountAuth), so its requests are counted like any client's and the limits
    below are the server's real answers; two accounts' sessions never mix: each one's calendars
    land in its own home."""
    nc = nextcloud_server
    (anna, ben), refs = accounts(nc, monkeypatch, 2)
    sink = caldav(nc, refs)
    for i in range(3):
        for user in (anna, ben):
            sink.put(user.login, f"Projekt {i}", write(tmp_path, f"{user.login}{i}.ics",
                                                       recurring_event(f"{user.login}{i}@amt.example")))
    assert len(collections(nc, anna)) == len(collections(nc, ben)) == 4     # and each one's own "Personal"
    # one session per account, set by the server and sent back
    assert set(sink._auths) == {anna.login, ben.login}
    assert all(len(auth._cookies) > 0 for auth in sink._auths.values())


def test_past_the_creation_limit_items_fail_as_calendar_limit(nextcloud_server, monkeypatch, tmp_path):
    """The eleventh new calendar within the hour: 429 "Too many calendars created", no Retry-After.
    Its items fail as calendar_limit with when a rerun will succeed, and later calendars of the
    account fail without asking the server again; calendars already made still take events."""
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    counting = _Counting()
    sink = counting_sink(nc, refs, counting, sleep=lambda s: pytest.fail(f"waited {s} s for an hour-long window"))
    for i in range(10):
        sink.put(user.login, f"Projekt {i}", write(tmp_path, f"{i}.ics", recurring_event(f"p{i}@amt.example")))
    with pytest.raises(ItemError) as err:
        sink.put(user.login, "Projekt 10", write(tmp_path, "10.ics", recurring_event("p10@amt.example")))
    assert err.value.reason == "calendar_limit"
    message = str(err.value)
    assert "Too many calendars created" in message and "Rerun the class calendar_limit after" in message
    assert user.secret not in message
    made = counting.methods.count("MKCALENDAR")
    with pytest.raises(ItemError) as err:
        sink.put(user.login, "Projekt 11", write(tmp_path, "11.ics", recurring_event("p11@amt.example")))
    assert err.value.reason == "calendar_limit"
    assert counting.methods.count("MKCALENDAR") == made          # not asked again
    assert sink.put(user.login, "Projekt 3", write(tmp_path, "3b.ics", recurring_event("p3b@amt.example")))


def test_the_calendar_limit_per_account_is_calendar_limit(nextcloud_server, monkeypatch, tmp_path):
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    nc.occ("config:app:set", "dav", "maximumCalendarsSubscriptions", "--value=3")
    try:
        sink = caldav(nc, refs)
        sink.put(user.login, "Eins", write(tmp_path, "1.ics", recurring_event("one@amt.example")))
        sink.put(user.login, "Zwei", write(tmp_path, "2.ics", recurring_event("two@amt.example")))
        with pytest.raises(ItemError) as err:           # Personal, Eins, Zwei: three
            sink.put(user.login, "Drei", write(tmp_path, "3.ics", recurring_event("three@amt.example")))
    finally:
        nc.occ("config:app:delete", "dav", "maximumCalendarsSubscriptions")
    assert err.value.reason == "calendar_limit"
    assert "Calendar limit reached" in str(err.value) and "maximumCalendarsSubscriptions" in str(err.value)


def event(uid: str, extra: str) -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//umstieg tests//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260105T100000Z\r\nDTEND:20260105T110000Z\r\n"
            f"SUMMARY:Termin\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n").encode()


@pytest.mark.parametrize("extra, said", [
    ("RRULE:RSCALE=HEBREW;FREQ=YEARLY;BYMONTH=5L\r\n", "Not supported: RSCALE"),
    ("RRULE:FREQ=SOMETIMES\r\n", "Unknown value for FREQ=SOMETIMES"),
])
def test_objects_the_server_cannot_parse_are_rejected_at_once(nextcloud_server, monkeypatch, tmp_path, extra, said):
    """Nextcloud answers 500 naming its parser's exception: `rejected` with its words, no retry."""
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    sink = CalDav(CalDavTarget(url=nc.url, flavour="nextcloud", app_passwords=refs, timeout=60),
                  sleep=lambda s: pytest.fail("a parser's refusal was retried"))
    src = write(tmp_path, "bad.ics", event(f"bad-{uuid.uuid4().hex[:6]}", extra))
    with pytest.raises(Refused) as err:
        sink.put(user.login, "Kalender", src)
    assert err.value.reason == "rejected"
    assert said in str(err.value) and "HTTP 500" in str(err.value)
    # the flow does not retry an item error either: with_retries gives it back at once
    from flows.steps import with_retries
    with pytest.raises(Refused):
        with_retries(sink.put, user.login, "Kalender", src, sleep=lambda s: pytest.fail("retried"))


def test_journals_go_into_calendars_made_for_them(nextcloud_server, monkeypatch, tmp_path):
    """A calendar the sink makes takes VJOURNAL (Nextcloud's MKCALENDAR default would refuse it
    with 403); a calendar that was there and takes events only gives `unsupported_item`."""
    nc = nextcloud_server
    (user,), refs = accounts(nc, monkeypatch, 1)
    journal = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//umstieg tests//EN\r\nBEGIN:VJOURNAL\r\n"
               "UID:journal-1@amt.example\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260105\r\n"
               "SUMMARY:Protokoll\r\nDESCRIPTION:Besprochen: Haushalt\\, Personal\r\nEND:VJOURNAL\r\n"
               "END:VCALENDAR\r\n").encode()
    src = write(tmp_path, "journal.ics", journal)
    sink = caldav(nc, refs)
    ref = load(sink, user.login, "Notizen", src)
    assert sink.verify(ref, sink.digest(src)) is None
    assert b"VJOURNAL" in read_back(nc, user, ref)
    # an event goes into the same calendar
    assert load(sink, user.login, "Notizen", write(tmp_path, "e.ics", recurring_event("with-journal@amt.example")))
    # Nextcloud's own "Personal" calendar takes events only: a source calendar called "personal" lands there
    with pytest.raises(ItemError) as err:
        caldav(nc, refs).put(user.login, "personal", src)
    assert err.value.reason == "unsupported_item"
    assert "VJOURNAL" in str(err.value) and "VEVENT" in str(err.value)


def test_invitations_are_not_sent_for_migrated_meetings(nextcloud_server, monkeypatch, tmp_path):
    """Two accounts on the server: a meeting of the first naming the second lands in the first's
    calendar only (SCHEDULE-AGENT=CLIENT); the second's calendars stay empty."""
    nc = nextcloud_server
    users, refs = accounts(nc, monkeypatch, 2)
    organizer, attendee = users
    data = recurring_event("meeting@amt.example", attendees=0).replace(
        b"ORGANIZER;CN=Chefin:mailto:chefin@amt.example\r\n",
        f"ORGANIZER;CN=Orga:mailto:{organizer.login}@amt.example\r\n"
        f"ATTENDEE;CN=Gast;PARTSTAT=NEEDS-ACTION:mailto:{attendee.login}@amt.example\r\n".encode())
    nc.ocs("PUT", f"cloud/users/{attendee.login}", data={"key": "email", "value": f"{attendee.login}@amt.example"})
    nc.ocs("PUT", f"cloud/users/{organizer.login}", data={"key": "email", "value": f"{organizer.login}@amt.example"})
    ref = load(caldav(nc, refs), organizer.login, "Termine", write(tmp_path, "m.ics", data))
    assert b"SCHEDULE-AGENT=CLIENT" in read_back(nc, organizer, ref).replace(b"\r\n ", b"")
    for href in collections(nc, attendee):
        assert objects(nc, attendee, href) == [], href
    with nc.dav(attendee) as client:
        inbox = client.request("PROPFIND", f"/remote.php/dav/calendars/{attendee.login}/inbox/", headers={"Depth": "1"})
    assert inbox.text.count("<d:response>") == 1                    # the inbox itself, no invitation


# ----------------------------------------------------------------------------------- corpus
@pytest.mark.corpus
def test_corpus_calendars_into_nextcloud(corpus, nextcloud_server, monkeypatch, tmp_path):
    """The corpus' calendars (a few objects of each) into the real server: every object ends in a
    typed outcome; what Nextcloud's parser refuses is `rejected` with its words, nothing `transient`."""
    nc = nextcloud_server
    export = tmp_path / "export" / "anna" / "Kalender"
    export.mkdir(parents=True)
    for path in sorted((corpus / "calendars").rglob("*")):
        if path.suffix.lower() in (".ics", ".vcs") and path.is_file():
            (export / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    source = source_for(ExportSource(name="exports", root=tmp_path / "export"))
    found = list(source.discover("anna", "anna"))
    names = sorted({r.location for r in found if not r.key.endswith("#bad:")})
    # nine calendars per account: the tenth new calendar within the hour is the server's limit
    per_account = 9
    users, refs = accounts(nc, monkeypatch, (len(names) + per_account - 1) // per_account, "korpus")
    owner_of = {name: users[i // per_account].login for i, name in enumerate(names)}
    sink = caldav(nc, refs)
    outcomes: dict[str, list[str]] = {}
    per_file: dict[str, int] = {}
    started, puts = time.monotonic(), 0
    for ref in found:
        stem = ref.key.split("#")[0]
        per_file[stem] = per_file.get(stem, 0) + 1
        if per_file[stem] > 3 or ref.key.endswith("#bad:"):
            continue
        staged = tmp_path / "staged" / f"{abs(hash(ref.key))}.ics"
        try:
            source.extract("anna", ref.location, staged, key=ref.key)
            digest = sink.digest(staged)
            owner = owner_of[ref.location]
            target = sink.find(owner, ref.location, digest, ref.meta) or sink.put(owner, ref.location, staged)
            puts += 1
            problem = sink.verify(target, digest)
            outcomes.setdefault("verified" if problem is None else "verify_mismatch", []).append(ref.key)
        except ItemError as exc:
            outcomes.setdefault(exc.reason, []).append(f"{ref.key}: {exc}")
    assert "verify_mismatch" not in outcomes, outcomes.get("verify_mismatch")
    assert set(outcomes) <= {"verified", "rejected", "invalid_data", "unsupported_item", "unreadable_export",
                             "too_many_instances"}, {k: v[:3] for k, v in outcomes.items() if k != "verified"}
    # 165 objects: Nextcloud refuses 14 invalid ones with 415 and its validator's words (no DTSTART,
    # a VALARM without ACTION, a DATE-TIME where a DATE belongs, …); free/busy has no calendar
    assert len(outcomes["verified"]) >= 140
    assert len(outcomes.get("rejected", [])) <= 0.1 * len(outcomes["verified"])
    for line in outcomes.get("rejected", []):
        assert "(HTTP 415 Unsupported Media Type: Validation error in iCalendar: " in line \
            or "the server cannot read it (HTTP 500" in line, line
    print(f"\ncorpus into Nextcloud: {puts} objects loaded in {time.monotonic() - started:.1f} s, "
          + ", ".join(f"{k} {len(v)}" for k, v in sorted(outcomes.items())))


def test_the_departments_check_names_the_calendars_beyond_the_limit(nextcloud_server, monkeypatch, tmp_path):
    """Before anything moves: twelve calendars in one user's export files are more than Nextcloud
    makes in an hour; stated limits of the server's (raised) are believed. It is told, in the
    assessment and in the run's report, but stops nobody: one user's calendars must not keep the
    department's files and the other users' calendars from moving."""
    import yaml
    from flows import runtime
    from flows.calendars import calendar_problems
    from flows.migrate import assess_body, check_department, migrate_body
    nc = nextcloud_server
    users, refs = accounts(nc, monkeypatch, 2)
    export = tmp_path / "export"
    for i in range(12):
        exported_calendar(export / "anna", 2, f"Projekt {i:02d}", None, f"p{i:02d}")
    exported_calendar(export / "ben", 30, "Kalender", None, "k")
    def department(**limits) -> Path:
        path = tmp_path / f"department-{len(limits)}.yaml"
        path.write_text(yaml.safe_dump({
            "name": "kalenderamt", "work_dir": str(tmp_path / "work"),
            "users": [{"source": "anna", "target": users[0].login}, {"source": "ben", "target": users[1].login}],
            "sources": [{"name": "exports", "type": "export", "root": str(export)}],
            "target": {"type": "localdir", "root": str(tmp_path / "files")},
            "calendar_target": {"type": "caldav", "url": nc.url, "flavour": "nextcloud", "app_passwords": refs,
                                **limits},
            "conversion": {"enabled": False},
        }), encoding="utf-8")
        return path
    dept_file = department()
    problems = calendar_problems(runtime.department(str(dept_file)))
    assert len(problems) == 1
    assert problems[0].startswith(f"calendar_target: calendar target {nc.url}: {users[0].login!r} would get 12 new")
    assert calendar_problems(runtime.department(str(department(new_calendars_per_period=12)))) == []
    assert check_department(runtime.department(str(dept_file))) == []          # nothing stops the run
    assessment = assess_body(str(dept_file))
    assert any("would get 12 new" in p for p in assessment["problems"]), assessment["problems"]
    summary = migrate_body(str(dept_file))
    assert summary["warnings"] == problems
    assert "## Told before the run" in Path(summary["report"]).read_text(encoding="utf-8")
    assert summary["totals"].get("verified", 0) >= 30                        # ben's calendar moved
