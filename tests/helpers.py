"""What several test modules share: department files, ledger read-back, a run driven step by step,
test messages and calendar objects, LibreOffice held still on purpose.

One place, so that a test module never imports another test module (which would run that
module's fixtures and hide which test owns what). Servers and what they need live in
tests/servers; generated Office documents in tests/docgen.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from email.utils import make_msgid
from pathlib import Path

import psutil
import yaml

from docgen import make_mixed_set

#: The developer corpus (../shared/corpus); tests that need it skip when it is absent.
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

#: `umstieg` as a process, the way an operator starts it.
UMSTIEG = [sys.executable, "-m", "umstieg"]


# ----------------------------------------------------------------------------- departments, ledgers
#: A few real files from the corpus join the generated ones when the corpus is there.
CORPUS_PICKS = ["documents/testWORD_features.docx", "spreadsheets/testEXCEL_charts.xlsx",
                "presentations/testPPT_comment.pptx", "documents/testWORD_protected_passtika.docx",
                "documents/testRTFJapanese.rtf"]


def make_department(tmp_path: Path, users=("anna", "ben"), docs_per_user=6, **overrides) -> Path:
    """A department file over generated home folders (and a few corpus files for the first user)."""
    home = tmp_path / "home"
    for i, user in enumerate(users):
        make_mixed_set(home / user / "Ablage", docs_per_user)
        (home / user / "notes.txt").write_text(f"Notizen von {user}\n", encoding="utf-8")
        if i == 0 and CORPUS.is_dir():
            for rel in CORPUS_PICKS:
                if (CORPUS / rel).exists():
                    shutil.copy(CORPUS / rel, home / user / Path(rel).name)
    config = {
        "name": "testamt",
        "work_dir": str(tmp_path / "work"),
        "users": [{"source": u, "target": f"t-{u}"} for u in users],
        "sources": [{"name": "homes", "type": "folder", "root": str(home)}],
        "target": {"type": "localdir", "root": str(tmp_path / "target")},
        "conversion": {"workers": 2, "timeout": 120, "keep_original": "never"},
        "limits": {"chunk_size": 4},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def ledger_rows(dept_file: Path) -> list[dict]:
    """The ledger's items as dicts (the columns the tests look at)."""
    from core.department import load_department
    from core.ledger import Item
    from sqlalchemy import select
    dept = load_department(dept_file)
    ledger = dept.open_ledger()
    try:
        with ledger.session() as s:
            return [{c: getattr(i, c) for c in ("id", "owner", "location", "state", "reason", "message", "target_ref",
                                                  "target_digest", "conversion", "change", "removed_at_source",
                                                  "batch_id", "fidelity_verdict", "fidelity_score", "original_ref",
                                                  "attempts", "updated")}
                    for i in s.scalars(select(Item).where(Item.department == dept.name).order_by(Item.id))]
    finally:
        ledger.close()


def wait_until_verified(proc: subprocess.Popen, dept_file: Path, count: int, timeout: float,
                        poll: float = 0.1) -> None:
    """Wait while the run `proc` goes on until `count` items of its department are verified.

    `timeout` only bounds a run that hangs (the test then fails with the reason); it asserts no speed."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        try:
            verified = sum(r["state"] == "verified" for r in ledger_rows(dept_file))
        except Exception:                         # noqa: BLE001 - ledger not created yet
            verified = 0
        if verified >= count:
            return
        time.sleep(poll)


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def target_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "target").rglob("*") if p.is_file())


def assert_target_matches_ledger(dept_file: Path, tmp_path: Path) -> list[dict]:
    """Every verified item is at the target exactly once with its digest; nothing else is there."""
    rows = ledger_rows(dept_file)
    verified = [r for r in rows if r["state"] == "verified"]
    refs = [r["target_ref"] for r in verified]
    assert len(refs) == len(set(refs)), "two items share one target file"
    assert sorted(Path(r) for r in refs) == target_files(tmp_path)
    for r in verified:
        assert file_sha(Path(r["target_ref"])) == r["target_digest"]
    return rows


def run_env(**extra: str) -> dict[str, str]:
    """The environment of an `umstieg` subprocess that runs here, with no Prefect server."""
    return {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, **extra}


def kill_mid_run(dept_file: Path, verified: int, env: dict[str, str], timeout: float,
                 poll: float = 0.1) -> dict[psutil.Process, str]:
    """Start `umstieg run`, SIGKILL it once `verified` items are verified, and check that it was
    really cut off mid-run. Returns the processes it had started, with their command lines, as
    they were just before (they may be gone by the time this returns)."""
    proc = subprocess.Popen(UMSTIEG + ["run", str(dept_file)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    wait_until_verified(proc, dept_file, verified, timeout=timeout, poll=poll)
    started = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            started[child] = " ".join(child.cmdline())
        except psutil.Error:                      # (ended meanwhile)
            continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(r["state"] != "verified" for r in ledger_rows(dept_file)), "the run was not cut off mid-run"
    return started


def run_to_the_end(dept_file: Path, tmp_path: Path, env: dict[str, str]) -> list[dict]:
    """Run the department again (`umstieg run`) and check the target against the ledger: every
    verified item there exactly once with its digest, nothing else, no partial file left."""
    result = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    rows = assert_target_matches_ledger(dept_file, tmp_path)
    assert not list((tmp_path / "target").rglob(".*partial*"))
    return rows


def discover_then(dept_file: Path, between) -> dict:
    """Discover, call `between()` (the user's move), then take every pending item through its steps."""
    from flows import runtime
    from flows.discovery import discover
    from flows.steps import process_chunk
    try:
        dept = runtime.department(str(dept_file))
        ledger = runtime.ledger(dept)
        run_id = ledger.start_run(dept.name, "migrate")
        found = discover(dept, ledger, run_id)
        between()
        counts = {}
        for owner, ids in found.todo.items():
            counts[owner] = process_chunk(str(dept_file), run_id, owner, 1, ids)
        ledger.finish_run(run_id, "completed")
        return counts
    finally:
        runtime.close_all()


# ----------------------------------------------------------------------------------------- mail
#: The Dovecot master user the mail tests configure (its password in $IMAP_MASTER).
MASTER = ("migrator", "master-secret-5Tz")


def message(n: int, size: int = 0, message_id: bool = True, lf: bool = False) -> bytes:
    """Test message number `n`: German headers and body, about `size` bytes of text lines."""
    head = [f"From: Absender {n} <a{n}@amt.example>", "To: anna@amt.example", f"Subject: Nachricht {n} – Grüße",
            "Date: Mon, 05 Feb 2024 10:00:00 +0100", "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    if message_id:
        head.insert(0, f"Message-ID: {make_msgid(f'n{n}', 'amt.example')}")
    body = f"Text {n} äöü\r\n" + "".join(f"Zeile {i:06d} {'x' * 60}\r\n" for i in range(size // 75))
    data = ("\r\n".join(head) + "\r\n\r\n" + body).encode()
    return data.replace(b"\r\n", b"\n") if lf else data


def mutf7(folder: str) -> str:
    """An IMAP folder name as a quoted modified-UTF-7 string."""
    from imapclient import imap_utf7
    return '"' + imap_utf7.encode(folder).decode() + '"'


def fill(server, user: str, layout: dict[str, list[tuple[bytes, str, str]]]) -> None:
    """Append (bytes, flags, internal date) messages to the user's folders on a Dovecot, creating them."""
    conn = server.connect(user)
    try:
        for folder, messages in layout.items():
            if folder != "INBOX":
                conn.create(mutf7(folder))
            for data, flags, when in messages:
                typ, _ = conn.append(mutf7(folder), flags, f'"{when}"', data)
                assert typ == "OK"
    finally:
        conn.logout()


# ------------------------------------------------------------------------------ calendars, contacts
VTIMEZONE_BERLIN = """BEGIN:VTIMEZONE
TZID:Europe/Berlin
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
TZNAME:CEST
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
TZNAME:CET
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE
"""


def recurring_event(uid: str, summary: str = "Jour fixe", attendees: int = 3, count: int | None = None) -> bytes:
    """A weekly series in Europe/Berlin over a DST change: one cancelled and one moved occurrence."""
    people = "".join(f"ATTENDEE;CN=Person {i};PARTSTAT=NEEDS-ACTION:mailto:p{i}@amt.example\n"
                     for i in range(attendees))
    rule = f"RRULE:FREQ=WEEKLY;BYDAY=TU;COUNT={count}" if count else "RRULE:FREQ=WEEKLY;BYDAY=TU;UNTIL=20261231T230000Z"
    text = ("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//umstieg tests//EN\n" + VTIMEZONE_BERLIN +
            "BEGIN:VEVENT\n"
            f"UID:{uid}\nDTSTAMP:20260101T000000Z\n"
            "DTSTART;TZID=Europe/Berlin:20260106T093000\nDTEND;TZID=Europe/Berlin:20260106T103000\n"
            f"SUMMARY:{summary}\n{rule}\n"
            "EXDATE;TZID=Europe/Berlin:20260331T093000\n"
            "ORGANIZER;CN=Chefin:mailto:chefin@amt.example\n" + people +
            "END:VEVENT\n"
            "BEGIN:VEVENT\n"
            f"UID:{uid}\nDTSTAMP:20260101T000000Z\n"
            "RECURRENCE-ID;TZID=Europe/Berlin:20260407T093000\n"
            "DTSTART;TZID=Europe/Berlin:20260408T140000\nDTEND;TZID=Europe/Berlin:20260408T150000\n"
            f"SUMMARY:{summary} (verschoben)\n" + people +
            "END:VEVENT\nEND:VCALENDAR\n")
    return text.replace("\n", "\r\n").encode()


def cards() -> dict[str, bytes]:
    """vCards 3.0, 4.0 and 2.1 (the last without a UID)."""
    return {
        "v3": (b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:anna-v3@amt.example\r\nFN:Anna Muster\r\nN:Muster;Anna;;;\r\n"
               b"EMAIL;TYPE=work:Anna.Muster@Amt.Example\r\nTEL;TYPE=work:+49 (30) 1234-56\r\n"
               b"ORG:Stadt Musterhausen;B\xc3\xbcrgeramt\r\nEND:VCARD\r\n"),
        "v4": (b"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1\r\n"
               b"FN:J\xc3\xbcrgen Gro\xc3\x9f\r\nN:Gro\xc3\x9f;J\xc3\xbcrgen;;;\r\nEMAIL:jg@amt.example\r\n"
               b"TEL;VALUE=uri:tel:+49-30-555\r\nEND:VCARD\r\n"),
        "v21-no-uid": (b"BEGIN:VCARD\r\nVERSION:2.1\r\nN:Beispiel;Berta\r\nFN:Berta Beispiel\r\n"
                       b"TEL;WORK;VOICE:030 777 88\r\nEMAIL;INTERNET:berta@amt.example\r\nEND:VCARD\r\n"),
    }


#: A card with a title, role, birthday, nickname, web address, categories, chat address and a
#: vendor's X- property; {n} makes its UID unique.
RICH_CARD = ("BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//Outlook//DE\r\nUID:rich-{n}@amt.example\r\n"
             "FN:Dora Beispiel\r\nN:Beispiel;Dora;;;\r\nTITLE:Leiterin\\, Bürgeramt\r\nROLE:Vertretung\r\n"
             "BDAY:1980-01-02\r\nNICKNAME:Doro\r\nURL;TYPE=WORK:https://amt.example/dora\r\n"
             "CATEGORIES:Amt,Leitung\r\nIMPP;TYPE=WORK:xmpp:dora@amt.example\r\n"
             "X-SKYPE-USERNAME:dora.beispiel\r\nitem1.X-ABLABEL:Assistenz\r\nEND:VCARD\r\n")


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def load(sink, owner: str, rel: str, src: Path) -> str:
    """What the flow's load step does: find identical content, else put."""
    digest = sink.digest(src)
    return sink.find(owner, rel, digest) or sink.put(owner, rel, src)


def objects_in(server, user: str, display: str, kind: str = "calendar") -> list[Path]:
    """The objects a RadicaleServer stores in one of `user`'s collections (one file each)."""
    from core.department import CalDavTarget, CardDavTarget
    from sinks.groupware import CalDav, CardDav
    # only the collection's path is asked for: no request is made, the password is never read
    unused = {user: "env:UMSTIEG_TEST_NEVER_READ"}
    sink = (CalDav(CalDavTarget(url=server.url, app_passwords=unused)) if kind == "calendar"
            else CardDav(CardDavTarget(url=server.url, app_passwords=unused)))
    folder = server.collection(user, sink.collection_path(user, display).rstrip("/").rpartition("/")[2])
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))



# ------------------------------------------------------------------ LibreOffice held on purpose
# Tests that need a conversion to be slow, or a run to be busy, hold LibreOffice still (SIGSTOP)
# instead of counting on a document to take long: what they then see does not depend on the
# machine's speed. A stopped process ends on SIGKILL like any other, as the pool's and the
# workers' own exit paths send it.

def open_files(pid: int) -> set[str] | None:
    """The paths of the files process `pid` has open (Linux: /proc/<pid>/fd); None once it has
    ended (a zombie has none)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(fds)
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rpartition(b")")[2].split()[0] == b"Z":
                return None
    except FileNotFoundError:
        return None
    found = set()
    for name in names:
        try:
            found.add(os.readlink(fds / name))
        except OSError:                          # closed meanwhile
            continue
    return found


def wait_until_open(pid: int, path: Path, poll: float = 0.005) -> bool:
    """Wait while process `pid` lives until it has `path` open (LibreOffice keeps the document it
    converts open from its load to the end of the export): True then, False when the process ended
    first. No deadline: a busy machine only makes the moment come later."""
    wanted = os.path.realpath(path)
    while (files := open_files(pid)) is not None:
        if wanted in files:
            return True
        time.sleep(poll)
    return False


def pool_offices(pool) -> Callable[[], dict[str, int]]:
    """The live LibreOffice (soffice.bin) of each worker of `pool`, by worker id."""
    return lambda: {w.id: pid for w in pool.workers() if (pid := w.office_pid())}


def offices_reading(name: str, under: Path) -> Callable[[], dict[str, int]]:
    """Every LibreOffice (soffice.bin) on this machine that has a file called `name` below `under`
    open, by pid: the one converting that document, whichever process started it and under which
    staging name its folder is (the pool converts a private copy that keeps the file's name)."""
    root = os.path.realpath(under) + os.sep
    # the soffice.bin pids, listed again every quarter second (a new office needs seconds to
    # start before it is handed a document; its open files are looked at on every call)
    offices: set[int] = set()
    listed = [0.0]

    def reading() -> dict[str, int]:
        if time.monotonic() - listed[0] > 0.25:
            offices.clear()
            offices.update(p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "soffice.bin")
            listed[0] = time.monotonic()
        found = {}
        for pid in list(offices):
            files = open_files(pid)
            if files is None:
                offices.discard(pid)
            elif any(f.startswith(root) and os.path.basename(f) == name for f in files):
                found[str(pid)] = pid
        return found
    return reading


class frozen_offices:
    """While in effect, the LibreOffice processes `offices()` names (key -> pid) are stopped
    (SIGSTOP) and cannot answer: those it names on entry at once, each later one as soon as it
    names it. With `pool_offices(pool)`, every worker of a pool, before it has been handed
    anything it could finish; with `offices_reading(name, under)`, the one that opened that
    document, while it converts it. A conversion on a stopped office times out whatever the
    machine's speed; the pool's SIGKILL ends it like any other process. `frozen` maps each key
    to the pid stopped; leaving the block stops the watching, not the stopped processes."""

    def __init__(self, offices: Callable[[], dict[str, int]], *, at_once: bool = True, poll: float = 0.001) -> None:
        self.offices, self.at_once, self.poll = offices, at_once, poll
        self.frozen: dict[str, int] = {}
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def _freeze_new(self) -> None:
        for key, pid in self.offices().items():
            if key not in self.frozen:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:       # killed meanwhile: nothing to freeze
                    continue
                self.frozen[key] = pid

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._freeze_new()
            time.sleep(self.poll)

    def __enter__(self) -> "frozen_offices":
        self._freeze_new()
        assert self.frozen or not self.at_once, "no office to freeze"
        self._watcher.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._watcher.join()
