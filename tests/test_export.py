"""Export files as a source: PST/OST, MBOX, EML, MSG, ICS, VCF, generated here or from the corpus.

Messages are checked by their bytes travelling unchanged into a local directory target (the
IMAP target has its own tests); events and cards by what the file held.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from core.department import ExportSource, LocalDirTarget
from core.errors import ItemError
from core.items import Kind
from clients.pim import event_uid, split_calendar
from sinks.localdir import LocalDir
from sources.export import ExportFiles, source_for, special_use_of

MBOX = (b"From anna@amt.example Mon Jan  5 09:30:00 2026\n"
        b"From: anna@amt.example\nTo: ben@amt.example\nSubject: Erste\nMessage-ID: <m1@amt.example>\n"
        b"Date: Mon, 05 Jan 2026 09:30:00 +0100\nStatus: RO\nX-Status: F\n\nHallo Ben\n\n"
        b"From ben@amt.example Tue Jan  6 10:00:00 2026\n"
        b"From: ben@amt.example\nTo: anna@amt.example\nSubject: Zweite\nMessage-ID: <m2@amt.example>\n\n"
        b">From the desk of Ben\n\n"
        b"From carla@amt.example Wed Jan  7 11:00:00 2026\n"
        b"From: carla@amt.example\nSubject: Dritte\nStatus: O\n\nOhne Message-ID\n")

ICS = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//DE\r\nMETHOD:PUBLISH\r\n"
       b"BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n"
       b"TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
       b"BEGIN:VTIMEZONE\r\nTZID:America/New_York\r\nBEGIN:STANDARD\r\nDTSTART:19701101T020000\r\n"
       b"TZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
       b"BEGIN:VEVENT\r\nUID:a@x\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20260105T090000\r\n"
       b"SUMMARY:Serie\r\nRRULE:FREQ=DAILY;COUNT=5\r\nEND:VEVENT\r\n"
       b"BEGIN:VEVENT\r\nUID:b@x\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260110\r\n"
       b"SUMMARY:Ganztags\r\nEND:VEVENT\r\n"
       b"BEGIN:VEVENT\r\nUID:a@x\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID;TZID=Europe/Berlin:20260107T090000\r\n"
       b"DTSTART;TZID=Europe/Berlin:20260107T110000\r\nSUMMARY:Serie (spaeter)\r\nEND:VEVENT\r\n"
       b"BEGIN:VEVENT\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=America/New_York:20260112T090000\r\n"
       b"SUMMARY:Ohne UID\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")

VCF = (b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c1\r\nFN:Anna\r\nN:Muster;Anna;;;\r\nEND:VCARD\r\n"
       b"BEGIN:VCARD\r\nVERSION:2.1\r\nN:Beispiel;Berta\r\nFN:Berta\r\nTEL;WORK:030 1\r\nEND:VCARD\r\n"
       b"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:c3\r\nFN:Carla\r\nEND:VCARD\r\n")


def eml(subject: str, msgid: str) -> bytes:
    return (f"From: anna@amt.example\r\nTo: ben@amt.example\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n"
            "Date: Fri, 09 Jan 2026 08:00:00 +0100\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nGr\u00fc\u00dfe\r\n").encode()


@pytest.fixture
def export(tmp_path) -> Path:
    user = tmp_path / "exports" / "anna"
    (user / "Sent Items").mkdir(parents=True)
    (user / "Projekte" / "Umbau").mkdir(parents=True)
    (user / "archiv.mbox").write_bytes(MBOX)
    (user / "Sent Items" / "antwort.eml").write_bytes(eml("Antwort", "s1@amt.example"))
    (user / "Projekte" / "Umbau" / "plan.eml").write_bytes(eml("Plan", "p1@amt.example"))
    (user / "Projekte" / "apple.emlx").write_bytes(b"%d\n" % len(eml("Apple", "a1@x")) + eml("Apple", "a1@x")
                                                   + b"<?xml version=\"1.0\"?><plist/>")
    (user / "Dienstplan.ics").write_bytes(ICS)
    (user / "Kontakte.vcf").write_bytes(VCF)
    (user / "notizen.txt").write_text("not an export file")
    # broken files: each one item with a typed outcome, the rest goes on
    (user / "kaputt.pst").write_bytes(os.urandom(4096))
    (user / "kaputt.mbox").write_bytes(b"Subject: no From line\n\nbody\n")
    (user / "kaputt.ics").write_bytes(b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:2026x\r\n")
    (user / "kaputt.vcf").write_bytes(b"FN:no card here\r\n")
    (user / "kaputt.msg").write_bytes(b"\xd0\xcf\x11\xe0 truncated ole file")
    return tmp_path / "exports"


def listing(source: ExportFiles) -> dict[str, object]:
    return {r.key: r for r in source.discover("anna", "anna")}


def test_every_kind_of_file_is_listed_with_stable_keys(export):
    source = source_for(ExportSource(name="exp", root=export))
    found = listing(source)
    assert listing(source).keys() == found.keys()            # stable across runs
    kinds = Counter((r.kind, r.key.partition("#")[2].split(":")[0]) for r in found.values())
    assert kinds[(Kind.MESSAGE, "mbox")] == 3
    assert kinds[(Kind.EVENT, "ics")] == 3                  # a@x with its moved occurrence, b@x, one without UID
    assert kinds[(Kind.CONTACT, "vcf")] == 3
    assert kinds[(Kind.MESSAGE, "")] == 3                   # two EML, one EMLX
    assert sum(1 for k in found if k.endswith("#bad:")) == 5
    assert not any("notizen" in k for k in found)
    mbox = found["anna/archiv.mbox#mbox:0"]
    assert mbox.location == "archiv"
    assert mbox.meta["flags"] == ["\\Seen", "\\Flagged"]
    assert mbox.meta["message_id"] == "<m1@amt.example>"
    assert mbox.meta["internaldate"] == "2026-01-05T09:30:00+00:00"
    sent = found["anna/Sent Items/antwort.eml"]
    assert sent.location == "Sent Items" and sent.meta["special_use"] == "\\Sent"
    assert found["anna/Projekte/Umbau/plan.eml"].location == "Projekte/Umbau"
    assert found["anna/Projekte/Umbau/plan.eml"].meta["special_use"] is None
    assert found["anna/Dienstplan.ics#ics:a@x"].location == "Dienstplan"
    assert found["anna/Dienstplan.ics#ics:a@x"].meta == {"uid": "a@x"}
    assert found["anna/Kontakte.vcf#vcf:1"].location == "Kontakte"


def test_version_changes_with_the_file(export):
    source = source_for(ExportSource(name="exp", root=export))
    before = listing(source)["anna/archiv.mbox#mbox:0"].version
    path = export / "anna" / "archiv.mbox"
    path.write_bytes(MBOX + b"\nFrom x Thu Jan  8 10:00:00 2026\nSubject: Vierte\n\nneu\n")
    os.utime(path, (1_800_000_000, 1_800_000_000))
    after = listing(source)
    assert after["anna/archiv.mbox#mbox:0"].version != before
    assert "anna/archiv.mbox#mbox:3" in after


def test_extract_writes_each_item(export, tmp_path):
    source = source_for(ExportSource(name="exp", root=export))
    found = listing(source)
    out = tmp_path / "staged"
    def extract(key: str) -> bytes:
        ref = found[key]
        dst = out / hashlib.sha1(key.encode()).hexdigest()
        size, mtime = source.extract("anna", ref.location, dst, key=key)
        assert size == dst.stat().st_size and mtime is None
        return dst.read_bytes()
    second = email.message_from_bytes(extract("anna/archiv.mbox#mbox:1"))
    assert second["Subject"] == "Zweite" and ">From the desk" in second.get_payload()
    assert extract("anna/Sent Items/antwort.eml") == eml("Antwort", "s1@amt.example")
    assert extract("anna/Projekte/apple.emlx") == eml("Apple", "a1@x")
    series = extract("anna/Dienstplan.ics#ics:a@x")
    assert event_uid(series) == "a@x"
    assert series.count(b"BEGIN:VEVENT") == 2 and b"RECURRENCE-ID" in series
    assert b"TZID:Europe/Berlin" in series and b"America/New_York" not in series   # only the zones it uses
    assert b"METHOD" not in series
    no_uid = next(k for k in found if "#ics:umstieg-" in k)
    data = extract(no_uid)
    assert b"TZID:America/New_York" in data and event_uid(data) == no_uid.split("#ics:")[1]
    assert extract(no_uid) == data                         # the made-up UID is the same every time
    card = extract("anna/Kontakte.vcf#vcf:1")
    assert card.startswith(b"BEGIN:VCARD") and b"UID:umstieg-" in card and b"FN:Berta" in card


def test_broken_files_fail_typed_and_the_rest_goes_on(export, tmp_path):
    source = source_for(ExportSource(name="exp", root=export))
    outcomes = {}
    for key, ref in listing(source).items():
        try:
            source.extract("anna", ref.location, tmp_path / "x" / hashlib.sha1(key.encode()).hexdigest(), key=key)
            outcomes[key] = "ok"
        except ItemError as exc:
            outcomes[key] = exc.reason
    bad = {k: v for k, v in outcomes.items() if v != "ok"}
    assert bad == {f"anna/kaputt.{ext}#bad:": "unreadable_export" for ext in ("pst", "mbox", "ics", "vcf", "msg")}
    assert sum(1 for v in outcomes.values() if v == "ok") == 12
    ref = listing(source)["anna/kaputt.mbox#bad:"]
    with pytest.raises(ItemError, match="not an mbox file"):
        source.extract("anna", ref.location, tmp_path / "y", key=ref.key)


def test_check_names_missing_folders(export):
    source = source_for(ExportSource(name="exp", root=export))
    assert source.check(["anna"]) == []
    assert source.check(["anna", "zoe"]) == [f"source exp: user folder {export / 'zoe'} does not exist"]
    assert source_for(ExportSource(name="exp", root=export / "nope")).check(["anna"]) == \
        [f"source exp: folder {export / 'nope'} does not exist"]


def test_special_folders_by_name():
    assert special_use_of("Gesendete Elemente") == "\\Sent"
    assert special_use_of("Archiv/2019/Gelöschte Elemente") == "\\Trash"
    assert special_use_of("Entwürfe") == "\\Drafts"
    assert special_use_of("Junk-E-Mail") == "\\Junk"
    assert special_use_of("Projekte") is None


# ------------------------------------------------------------------------------------ corpus
def _corpus_mail(corpus: Path, tmp_path: Path) -> Path:
    user = tmp_path / "exports" / "anna"
    for sub in ("tika", "msgreader", "ruby-mapi", "ruby-mail/error_emails", "ruby-mail/plain_emails"):
        shutil.copytree(corpus / "mail" / sub, user / sub)
    return tmp_path / "exports"


@pytest.mark.corpus
def test_corpus_mail_travels_byte_for_byte(corpus, tmp_path):
    """Every message of the corpus' PST, MBOX, EML and MSG files: extracted, put into a local
    target, verified by sha256; appointments and contacts in .msg files become iCalendar and vCard."""
    source = source_for(ExportSource(name="exp", root=_corpus_mail(corpus, tmp_path)))
    sink = LocalDir(LocalDirTarget(root=tmp_path / "target"))
    outcomes: Counter = Counter()
    pst_subjects, subjects, pim = [], {}, {}
    for ref in source.discover("anna", "anna"):
        staged = tmp_path / "staged" / hashlib.sha1(ref.key.encode()).hexdigest()
        try:
            source.extract("anna", ref.location, staged, key=ref.key)
        except ItemError as exc:
            outcomes[(ref.kind, exc.reason)] += 1
            continue
        if ref.kind is not Kind.MESSAGE:
            pim[ref.key.rsplit("/", 1)[1]] = (ref, staged.read_bytes())
            outcomes[(ref.kind, "ok")] += 1
            continue
        digest = sink.digest(staged)
        rel = f"{ref.location}/{hashlib.sha1(ref.key.encode()).hexdigest()}.eml"
        target = sink.find("t-anna", rel, digest) or sink.put("t-anna", rel, staged)
        assert sink.verify(target, digest) is None
        assert sink.find("t-anna", rel, digest) == target              # a rerun sends nothing
        msg = email.message_from_bytes(staged.read_bytes(), policy=email.policy.default)
        subjects[ref.key.rsplit("/", 1)[1]] = str(msg["Subject"])
        if "#pst:" in ref.key:
            pst_subjects.append((ref.location, " ".join(str(msg["Subject"]).split()), ref.meta["flags"]))
            assert msg.get_body(("plain", "html")) is not None
        outcomes[(ref.kind, "ok", ref.key.partition("#")[2].split(":")[0] or Path(ref.key).suffix)] += 1
    assert outcomes[(Kind.MESSAGE, "ok", "pst")] == 11
    # it was forwarded (the three "FW:" messages beside it): PidTagLastVerbExecuted 104
    assert ("Inbox/tmp", "original email", ["\\Seen", "$Forwarded"]) in pst_subjects
    assert ("testPST", "Re: Feature Generators", ["\\Seen"]) in pst_subjects
    assert outcomes[(Kind.MESSAGE, "ok", "mbox")] >= 9
    assert outcomes[(Kind.MESSAGE, "ok", ".msg")] >= 30
    assert outcomes[(Kind.EVENT, "ok")] == 13          # msgreader's appointments
    assert outcomes[(Kind.CONTACT, "ok")] == 3
    assert outcomes[(Kind.MESSAGE, "ok", ".eml")] >= 40              # the malformed ones travel as they are
    assert not [k for k in outcomes if k[1] != "ok"], outcomes
    # a .msg written without Unicode strings is read in its locale's code page (Japanese: cp932)
    assert subjects["nonUnicodeCP932.msg"] == "日本語 Non Unicode タイトル"
    ref, ics = pim["Friday Lunch.msg"]
    assert ref.location == "msgreader" and ref.meta["uid"].startswith("040000008200E00074C5B7101A82E008")
    assert f"UID:{ref.meta['uid'][:60]}".encode() in ics.replace(b"\r\n ", b"")
    assert b"RECURRENCE-ID;TZID=Asia/Tokyo:20230113T120000" in ics and b"Monday Lunch" in ics
    ansi, unicode = pim["contactAnsi.msg"][1], pim["contactUnicode.msg"][1]
    assert "FN:Mr. イグザンプル ドット コム 殿".encode() in ansi
    assert ansi.split(b"UID:")[0] == unicode.split(b"UID:")[0]     # the same person, whatever the strings


@pytest.mark.corpus
def test_corpus_pst_attachments_and_bodies(corpus, tmp_path):
    user = tmp_path / "exports" / "anna"
    user.mkdir(parents=True)
    shutil.copy(corpus / "mail" / "tika" / "testPST.pst", user / "testPST.pst")
    source = source_for(ExportSource(name="exp", root=tmp_path / "exports"))
    found = {}
    for ref in source.discover("anna", "anna"):
        dst = tmp_path / "m" / hashlib.sha1(ref.key.encode()).hexdigest()
        source.extract("anna", ref.location, dst, key=ref.key)
        msg = email.message_from_bytes(dst.read_bytes(), policy=email.policy.default)
        found[" ".join(str(msg["Subject"]).split())] = msg
    forwarded = found["FW: First email"]
    assert [p.get_content_type() for p in forwarded.iter_attachments()] == ["application/octet-stream"]
    webinar = found['[WEBINAR] - "Introducing Couchbase Server 2.5"']
    assert webinar.get_body(("html",)) is not None and webinar.get_body(("plain",)) is not None
    assert found["Re: Feature Generators"]["Message-ID"]
    # named properties are found through the file's own name-to-id map (their tags differ per file)
    import pypff
    from sources.export import _named_tag
    pst = pypff.file()
    pst.open(str(user / "testPST.pst"))
    try:
        assert _named_tag(pst, "Keywords") == 0x8012
        assert _named_tag(pst, "SourceWellKnownFolderType") is None      # not an Exchange export
    finally:
        pst.close()


@pytest.mark.corpus
def test_corpus_calendars_split_per_uid(corpus):
    """Every event of the valid corpus calendars lands in exactly one per-UID object."""
    for path in sorted((corpus / "calendars" / "ical4j" / "valid").glob("*.ics")):
        if path.name == "blankTzid.ics":
            continue
        import icalendar
        whole = icalendar.Calendar.from_ical(path.read_bytes(), multiple=True)
        events = sum(1 for c in whole for comp in c.subcomponents if comp.name in ("VEVENT", "VTODO", "VJOURNAL",
                                                                                    "VFREEBUSY"))
        parts = split_calendar(path.read_bytes())
        assert sum(p.count(b"BEGIN:VEVENT") + p.count(b"BEGIN:VTODO") + p.count(b"BEGIN:VJOURNAL")
                   + p.count(b"BEGIN:VFREEBUSY") for _, p in parts) == events, path.name
        assert len({uid for uid, _ in parts}) == len(parts)
