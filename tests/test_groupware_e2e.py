"""Mail, calendars and contacts end to end through `umstieg run`: a department's export files (EML
folders, an MBOX, ICS and VCF files) go to Dovecot (IMAP, through its master user) and Radicale
(CalDAV, CardDAV). The run is killed in the middle; the next run finishes, and the target holds every
message, event and contact exactly once."""

from __future__ import annotations

import email
import os
import signal
from collections import Counter
import subprocess
import sys
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timedelta, timezone

import yaml

from servers.dovecot import Dovecot, dovecot_factory  # noqa: F401  (a fixture)
from servers.radicale import RadicaleServer
from helpers import cards, ledger_rows, objects_in, recurring_event, wait_until_verified

UMSTIEG = [sys.executable, "-m", "umstieg"]
MASTER = ("migrator", "master-e2e-6Wv")
DAV_PW = "anna-dav-pw-4Rz"


def message(i: int, folder: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Absender {i} <absender{i}@amt.example>"
    msg["To"] = "anna@amt.example"
    msg["Subject"] = f"{folder}: Vorgang {i:04d} – Grüße"
    msg["Date"] = format_datetime(datetime(2025, 3, 1, tzinfo=timezone.utc) + timedelta(hours=i))
    msg["Message-ID"] = make_msgid(idstring=f"{folder}-{i}", domain="amt.example")
    msg.set_content(f"Nachricht {i}\n" + "Inhalt " * (50 + i % 400))
    if i % 9 == 0:
        msg.add_attachment(os.urandom(40_000), maintype="application", subtype="pdf", filename=f"Anlage {i}.pdf")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def make_exports(root) -> dict[str, int]:
    anna = root / "anna"
    counts = {"message": 0, "event": 2, "contact": 3}
    for folder, n in (("Posteingang", 60), ("Posteingang/Projekte", 25)):
        for i in range(n):
            path = anna / folder / f"{i:04d}.eml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(message(i, folder))
            counts["message"] += 1
    with open(anna / "Gesendete Elemente.mbox", "wb") as mbox:
        for i in range(20):
            data = message(i, "Gesendet")
            mbox.write(b"From absender@amt.example Sat Mar  1 00:00:00 2025\n")
            mbox.write(data.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From ") + b"\n")
            counts["message"] += 1
    (anna / "Kalender.ics").write_bytes(
        recurring_event("e2e-1@amt.example").replace(b"END:VCALENDAR\r\n", b"")
        + recurring_event("e2e-2@amt.example", summary="Sprechstunde").split(b"END:VTIMEZONE\r\n", 1)[1])
    (anna / "Kontakte.vcf").write_bytes(b"".join(cards().values()))
    return counts


def test_a_killed_groupware_run_resumes_without_duplicates(tmp_path, dovecot_factory, monkeypatch):
    imap = dovecot_factory(users={"t-anna": "t-anna-pw-1"}, master=MASTER, tls=False)
    with RadicaleServer(tmp_path / "radicale", {"t-anna": DAV_PW}) as dav:
        counts = make_exports(tmp_path / "export")
        dept_file = tmp_path / "department.yaml"
        dept_file.write_text(yaml.safe_dump({
            "name": "postamt", "work_dir": str(tmp_path / "work"),
            "users": [{"source": "anna", "target": "t-anna"}],
            "sources": [{"name": "exports", "type": "export", "root": str(tmp_path / "export")}],
            "target": {"type": "localdir", "root": str(tmp_path / "files")},
            "mail_target": {"type": "imap", "host": imap.host, "port": imap.port, "security": "none",
                            "master_user": MASTER[0], "password": "env:E2E_MASTER_PW"},
            "calendar_target": {"type": "caldav", "url": dav.url, "app_passwords": {"t-anna": "env:E2E_DAV_PW"}},
            "contacts_target": {"type": "carddav", "url": dav.url, "app_passwords": {"t-anna": "env:E2E_DAV_PW"}},
            "conversion": {"enabled": False},
            "limits": {"chunk_size": 5},
        }, allow_unicode=True), encoding="utf-8")
        env = dict(os.environ, E2E_MASTER_PW=MASTER[1], E2E_DAV_PW=DAV_PW, UMSTIEG_RUNTIME_DIR=str(tmp_path / "rt"))
        proc = subprocess.Popen(UMSTIEG + ["run", str(dept_file)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        wait_until_verified(proc, dept_file, 15, timeout=300, poll=0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert any(r["state"] != "verified" for r in ledger_rows(dept_file))     # really cut off mid-run

        result = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr
        rows = ledger_rows(dept_file)
        assert all(r["state"] == "verified" for r in rows), [r for r in rows if r["state"] != "verified"]
        assert len(rows) == sum(counts.values())
        # the killed run does not stay "running" for ever: the next run marks it interrupted
        from core.department import load_department
        from core.ledger import Ledger, Run
        from sqlalchemy import select
        ledger = Ledger(load_department(dept_file).ledger_url)
        with ledger.session() as s:
            assert [r.status for r in s.scalars(select(Run).order_by(Run.id))] == ["interrupted", "completed"]
        ledger.close()

        # every message once, in the folder it came from, bytes unchanged
        from imapclient import IMAPClient
        found: dict[str, list[str]] = {}
        with IMAPClient(imap.host, port=imap.port, ssl=False) as conn:
            conn.login(f"t-anna*{MASTER[0]}", MASTER[1])
            for flags, _, name in conn.list_folders():
                if b"\\Noselect" in flags:
                    continue
                conn.select_folder(name, readonly=True)
                uids = conn.search("ALL")
                for data in conn.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).values() if uids else []:
                    header = next(v for k, v in data.items() if k.startswith(b"BODY"))
                    found.setdefault(email.message_from_bytes(header)["Message-ID"], []).append(name)
        assert sum(len(v) for v in found.values()) == counts["message"]
        assert all(len(v) == 1 for v in found.values()), {k: v for k, v in found.items() if len(v) > 1}
        folders = Counter(f for names in found.values() for f in names)
        assert folders["Sent"] == 20, folders             # the MBOX of sent mail landed in Sent
        # every event and contact once
        assert len(objects_in(dav, "t-anna", "Kalender")) == counts["event"]
        assert len(objects_in(dav, "t-anna", "Kontakte", "addressbook")) == counts["contact"]
