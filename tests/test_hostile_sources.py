"""Sources as hostile as real shares: a user who swaps a listed file for a link, leaves pipes and
sockets about, names files in Latin-1 bytes, or a folder that cannot be listed for a while.

Nothing outside the source root reaches a target, every entry of a source gets an outcome, no
name stops a run, and no URL of a department file carries a literal secret. (SMB cases run
against a real Samba in test_smb.py, `umstieg convert` in test_convert_tree.py.)
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from core.errors import ItemError
from core.localtree import ChangedAtSource, NotBelow, key_of, open_file, open_root, raw_of, target_name, walk
from helpers import UMSTIEG, discover_then

SECRET = "root:x:0:0:SECRET-FROM-OUTSIDE-THE-ROOT\n"


# ------------------------------------------------------------------------------------------ helpers
def department(tmp_path: Path, users=("anna",), **overrides) -> Path:
    config = {
        "name": "feindamt",
        "work_dir": str(tmp_path / "work"),
        "users": [{"source": u, "target": f"t-{u}"} for u in users],
        "sources": [{"name": "homes", "type": "folder", "root": str(tmp_path / "home")}],
        "target": {"type": "localdir", "root": str(tmp_path / "target")},
        "conversion": {"enabled": False},
        "limits": {"chunk_size": 10},
        **overrides,
    }
    for user in users:
        (tmp_path / "home" / user).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def outside(tmp_path: Path) -> Path:
    """A file outside the source root that nobody may pull into a target account."""
    secret = tmp_path / "elsewhere" / "passwd"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(SECRET, encoding="utf-8")
    return secret


def items(dept_file: Path) -> dict[str, dict]:
    from core.department import load_department
    from core.ledger import Item, Ledger
    dept = load_department(dept_file)
    ledger = Ledger(dept.ledger_url)
    try:
        with ledger.session() as s:
            return {i.key: {c: getattr(i, c) for c in ("id", "key", "location", "state", "reason", "message",
                                                        "target_path", "renamed", "target_ref", "removed_at_source")}
                    for i in s.scalars(select(Item).where(Item.department == dept.name))}
    finally:
        ledger.close()


def nothing_outside_arrived(tmp_path: Path) -> None:
    """No file under the target or the staging area holds the outside file's bytes."""
    for base in (tmp_path / "target", tmp_path / "work"):
        for p in base.rglob("*"):
            if p.is_file() and not p.is_symlink() and p.suffix not in (".sqlite", ".sqlite-wal", ".sqlite-shm"):
                assert b"SECRET-FROM-OUTSIDE" not in p.read_bytes(), p


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*UMSTIEG, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


# ------------------------------------------------------------------------------------------ names
NAMES = [b"plain.txt", b"latin1-\xe4.txt", "Müller.txt".encode(), "Mu\u0308ller.txt".encode(),
         b"back\\slash", b"\\x41", b"\\\xe4", b"cp1252-\x80-\x9f.txt", b"undefined-\x81.txt",
         b"M\xc3\xbcller-\xfc.docx", b"\xff\xfe", bytes(range(1, 47)).replace(b"/", b"") + bytes(range(128, 256))]


def test_every_byte_name_has_one_lossless_key_and_a_readable_name():
    keys = [key_of(n) for n in NAMES]
    assert len(set(keys)) == len(NAMES)
    for name, key in zip(NAMES, keys):
        assert raw_of(key) == name
        key.encode("utf-8")                          # storable as text: no surrogate escapes left
        target_name(name).encode("utf-8")
    assert key_of(b"latin1-\xe4.txt") == "latin1-\\xe4.txt"
    assert target_name(b"latin1-\xe4.txt") == "latin1-ä.txt"
    assert target_name(b"M\xc3\xbcller-\xfc.docx") == "Müller-ü.docx"      # UTF-8 runs stay, the rest cp1252
    assert target_name(b"cp1252-\x80-\x9f.txt") == "cp1252-€-Ÿ.txt"
    assert key_of("Müller.txt".encode()) == "Müller.txt"                    # valid names keep their spelling
    # a valid name spelling an escape and the byte it spells are two keys
    assert key_of(b"\\xe4") != key_of(b"\xe4")


# ------------------------------------------------------------------------------------------ reading
def test_open_file_follows_no_link_and_opens_only_the_file_that_was_listed(tmp_path):
    secret = outside(tmp_path)
    root = tmp_path / "home" / "anna"
    (root / "Akten").mkdir(parents=True)
    (root / "Akten" / "brief.txt").write_text("Brief\n")
    (root / "notiz.txt").write_text("Notiz\n")
    os.symlink(secret, root / "link.txt")
    os.mkfifo(root / "pipe")
    top = open_root(tmp_path / "home", "anna")
    try:
        listed = {e.raw: e for e in walk(top)}
        assert listed[b"link.txt"].kind == "link" and listed[b"pipe"].kind == "fifo"
        with open_file(top, b"Akten/brief.txt", listed[b"Akten/brief.txt"].identity) as f:
            assert f.read() == b"Brief\n"
        with pytest.raises(ChangedAtSource):
            open_file(top, b"link.txt")
        with pytest.raises(ChangedAtSource):
            open_file(top, b"pipe")                  # refused before it is opened: nothing blocks
        # the folder on the way is swapped for a link to the outside
        os.rename(root / "Akten", root / "Akten.alt")
        os.symlink(secret.parent, root / "Akten")
        (secret.parent / "brief.txt").write_text(SECRET)
        with pytest.raises(ChangedAtSource):
            open_file(top, b"Akten/brief.txt")
        # the file is replaced by another regular file after listing (renamed over it, as editors save)
        identity = listed[b"notiz.txt"].identity
        (root / "notiz.neu").write_text("anders\n")
        os.replace(root / "notiz.neu", root / "notiz.txt")
        with pytest.raises(ChangedAtSource):
            open_file(top, b"notiz.txt", identity)
        for bad in (b"../anna/notiz.txt", b"/etc/passwd", b"a//b", b"."):
            with pytest.raises(NotBelow):
                open_file(top, bad)
    finally:
        os.close(top)
    with pytest.raises(OSError) as exc:                 # a user folder that is itself a link is not entered
        os.symlink(secret.parent, tmp_path / "home" / "mallory")
        open_root(tmp_path / "home", "mallory")
    assert exc.value.errno in (errno.ELOOP, errno.ENOTDIR)


# ------------------------------------------------------------------------------------------ the folder source
def test_a_file_swapped_for_a_link_after_discovery_never_reaches_the_target(tmp_path):
    """Between discovery and extraction anna swaps a listed file for a link to a file outside the
    root, and a listed folder for a link to a folder outside: both items fail `changed_at_source`,
    no byte from outside is staged or loaded, the other files move. The next run lists the links
    as links (skipped, with the reason); a file put back in the link's place moves."""
    secret = outside(tmp_path)
    dept_file = department(tmp_path)
    home = tmp_path / "home" / "anna"
    (home / "Akten").mkdir()
    (home / "Akten" / "vertrag.txt").write_text("Vertrag\n")
    (home / "brief.txt").write_text("Brief\n")
    (home / "bleibt.txt").write_text("bleibt\n")

    def swap():
        os.unlink(home / "brief.txt")
        os.symlink(secret, home / "brief.txt")
        os.rename(home / "Akten", tmp_path / "Akten-weg")
        os.symlink(secret.parent, home / "Akten")
        (secret.parent / "vertrag.txt").write_text(SECRET)

    counts = discover_then(dept_file, swap)
    assert counts["anna"] == {"failed": 2, "verified": 1}
    rows = items(dept_file)
    for key in ("anna/brief.txt", "anna/Akten/vertrag.txt"):
        assert rows[key]["state"] == "failed" and rows[key]["reason"] == "changed_at_source", rows[key]
        assert "link" in rows[key]["message"]
    assert rows["anna/bleibt.txt"]["state"] == "verified"
    nothing_outside_arrived(tmp_path)
    assert not (tmp_path / "target" / "t-anna" / "brief.txt").exists()

    # the next run: the links are listed as links; a regular file put back moves
    os.unlink(home / "brief.txt")
    (home / "brief.txt").write_text("Brief, neu\n")
    counts = discover_then(dept_file, lambda: None)
    rows = items(dept_file)
    assert rows["anna/brief.txt"]["state"] == "verified"
    assert (tmp_path / "target" / "t-anna" / "brief.txt").read_text() == "Brief, neu\n"
    assert rows["anna/Akten"]["state"] == "skipped" and rows["anna/Akten"]["reason"] == "skipped_link"
    assert str(secret.parent) in rows["anna/Akten"]["message"]
    assert rows["anna/Akten/vertrag.txt"]["removed_at_source"]
    nothing_outside_arrived(tmp_path)


def test_every_entry_gets_an_outcome_and_the_report_names_what_did_not_move(tmp_path):
    secret = outside(tmp_path)
    dept_file = department(tmp_path)
    home = tmp_path / "home" / "anna"
    (home / "echt.txt").write_text("echt\n")
    os.symlink(secret, home / "passwd-link")
    os.symlink("echt.txt", home / "innen-link.txt")
    os.symlink(secret.parent, home / "ordner-link")
    os.mkfifo(home / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(home / "sock"))
    expected = {"passwd-link": "skipped_link", "innen-link.txt": "skipped_link", "ordner-link": "skipped_link",
                "pipe": "skipped_fifo", "sock": "skipped_socket"}
    try:
        os.mknod(home / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        expected["null"] = "skipped_device"
    except PermissionError:
        pass                                          # not root: the other kinds still count
    result = run_cli("run", str(dept_file))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = items(dept_file)
    assert rows["anna/echt.txt"]["state"] == "verified"
    for name, reason in expected.items():
        row = rows[f"anna/{name}"]
        assert (row["state"], row["reason"]) == ("skipped", reason), row
        assert row["message"]
    assert sorted(p.name for p in (tmp_path / "target" / "t-anna").iterdir()) == ["echt.txt"]
    report = (tmp_path / "work" / "reports" / "latest.md").read_text(encoding="utf-8")
    section = report.split("## Not moved", 1)[1].split("\n## ", 1)[0]
    for name in expected:
        assert f"| anna | {name} |" in section
    assert "named pipe" in section and str(secret) in section
    nothing_outside_arrived(tmp_path)


@pytest.mark.parametrize("ledger", ["sqlite", "postgresql"])
def test_a_name_that_is_not_utf8_moves_under_a_decoded_name(tmp_path, ledger, request):
    """`latin1-\\xe4.txt` (bytes a Windows-1252 client wrote) lands as `latin1-ä.txt`, recorded as
    renamed with its source bytes shown escaped; beside it a real `latin1-ä.txt` keeps its name
    (the decoded one is numbered), and the run goes on for everything else."""
    overrides = {}
    if ledger == "postgresql":
        overrides["ledger"] = request.getfixturevalue("postgres_url")
    dept_file = department(tmp_path, users=("anna", "ben"), **overrides)
    home = tmp_path / "home"
    (home / "anna" / "Ablage").mkdir()
    with open(os.path.join(os.fsencode(home / "anna" / "Ablage"), b"latin1-\xe4.txt"), "wb") as f:
        f.write(b"cp1252\n")
    with open(os.path.join(os.fsencode(home / "anna"), b"Gr\xfc\xdfe-\x81"), "wb") as f:
        f.write(b"undefined byte\n")
    (home / "anna" / "Ablage" / "latin1-ä.txt").write_text("utf-8\n")
    (home / "ben" / "normal.txt").write_text("ben\n")
    result = run_cli("run", str(dept_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    rows = items(dept_file)
    odd = rows["anna/Ablage/latin1-\\xe4.txt"]
    assert odd["state"] == "verified" and odd["renamed"] == "undecodable_name"
    assert odd["location"] == "Ablage/latin1-\\xe4.txt"
    assert rows["anna/Ablage/latin1-ä.txt"]["state"] == "verified"
    assert rows["anna/Ablage/latin1-ä.txt"]["target_path"] == "Ablage/latin1-ä.txt"
    assert odd["target_path"] == "Ablage/latin1-ä (2).txt"
    assert rows["anna/Gr\\xfc\\xdfe-\\x81"]["state"] == "verified"
    target = tmp_path / "target" / "t-anna"
    assert (target / "Ablage" / "latin1-ä.txt").read_bytes() == b"utf-8\n"
    assert (target / "Ablage" / "latin1-ä (2).txt").read_bytes() == b"cp1252\n"
    assert (target / "Grüße-\x81").read_bytes() == b"undefined byte\n"
    assert (tmp_path / "target" / "t-ben" / "normal.txt").is_file()
    report = (tmp_path / "work" / "reports" / "latest.md").read_text(encoding="utf-8")
    assert "| anna | Ablage/latin1-\\xe4.txt | Ablage/latin1-ä (2).txt |" in report
    # a second run finds nothing new and renames nothing again
    again = run_cli("run", str(dept_file))
    assert again.returncode == 0, again.stdout + again.stderr
    after = items(dept_file)
    assert sorted(after) == sorted(rows)
    assert all(after[k]["target_path"] == rows[k]["target_path"] and after[k]["state"] == "verified" for k in rows)
    assert sorted(p.name for p in (target / "Ablage").iterdir()) == ["latin1-ä (2).txt", "latin1-ä.txt"]


# ------------------------------------------------------------------------------------------ unlisted folders
def test_rerun_lists_a_folder_that_could_not_be_listed_and_closes_its_placeholder(tmp_path, monkeypatch):
    """A sub-folder that cannot be listed (a dead mount answers EIO) is a failed placeholder; once
    it lists again, `rerun` lists it, moves its files and closes the placeholder, and the run's
    status counts nothing failed."""
    from flows import runtime
    from flows import migrate as flows_migrate
    migrate = getattr(flows_migrate, "migrate_body", None) or flows_migrate.migrate
    rerun = getattr(flows_migrate, "rerun_body", None) or flows_migrate.rerun
    dept_file = department(tmp_path)
    home = tmp_path / "home" / "anna"
    (home / "Privat").mkdir()
    (home / "Privat" / "brief.txt").write_text("Brief\n")
    (home / "oben.txt").write_text("oben\n")
    real_scandir = os.scandir

    def scandir(path):                  # the OS's answer for a folder on a dead network mount
        where = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else str(path)
        if where.endswith("/anna/Privat"):
            raise OSError(errno.EIO, "Input/output error", where)
        return real_scandir(path)
    try:
        monkeypatch.setattr(os, "scandir", scandir)
        first = migrate(str(dept_file))
        rows = items(dept_file)
        assert rows["anna/Privat/"]["state"] == "failed" and rows["anna/Privat/"]["reason"] == "unlisted_folder"
        assert first["totals"].get("failed") == 1
        monkeypatch.setattr(os, "scandir", real_scandir)      # the mount is back
        summary = rerun(str(dept_file))
    finally:
        runtime.close_all()
    rows = items(dept_file)
    assert rows["anna/Privat/brief.txt"]["state"] == "verified"
    assert (tmp_path / "target" / "t-anna" / "Privat" / "brief.txt").read_text() == "Brief\n"
    assert rows["anna/Privat/"]["state"] == "skipped" and rows["anna/Privat/"]["reason"] == "listed_again"
    assert not summary["totals"].get("failed")
    # and `umstieg run` afterwards exits 0: nothing is failed any more
    result = run_cli("run", str(dept_file))
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------ secrets in URLs
@pytest.mark.parametrize("field, value", [
    ("ledger", "postgresql://umstieg:Geheim-7Qx@db.example.org/umstieg"),
    ("ledger", "postgresql+psycopg://umstieg:Ge/heim-7Qx@db.example.org:5432/umstieg"),
    ("ledger", "postgresql://umstieg@db.example.org/umstieg?password=Geheim-7Qx"),
    ("source", "https://svc:Geheim-7Qx@ews.example.org/EWS/Exchange.asmx"),
    ("graph", "https://graph.example.org/v1.0?access_token=Geheim-7Qx"),
    ("s3", "https://svc:Geheim-7Qx@minio.example.org"),
    ("target", "https://svc:Geheim-7Qx@cloud.example.org"),
    ("cluster", "tls://scheduler.example.org:8786?token=Geheim-7Qx"),
])
def test_a_literal_secret_in_any_url_is_refused_without_being_shown(tmp_path, field, value):
    from core.department import load_department
    from core.errors import ConfigError
    config = yaml.safe_load(department(tmp_path).read_text(encoding="utf-8"))
    if field == "ledger":
        config["ledger"] = value
    elif field == "source":
        config["sources"].append({"name": "mail", "type": "ews", "url": value, "username": "svc",
                                  "password": "env:EWS_PW"})
    elif field == "graph":
        config["sources"].append({"name": "m365", "type": "m365", "tenant_id": "t", "client_id": "c",
                                  "client_secret": "env:M365", "graph_url": value})
    elif field == "s3":
        config["sources"].append({"name": "bucket", "type": "s3", "bucket": "share", "endpoint_url": value,
                                  "target_folder": "S3"})
    elif field == "target":
        config["target"] = {"type": "nextcloud", "url": value, "username": "svc", "password": "env:NC_PW"}
    elif field == "cluster":
        config["cluster"] = {"address": value}
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_department(path)
    text = str(exc.value)
    assert "Geheim" not in text and "secret is never written in the file" in text or field == "target"
    assert "Geheim" not in text


def test_urls_without_secrets_pass(tmp_path):
    from core.department import load_department
    config = yaml.safe_load(department(tmp_path).read_text(encoding="utf-8"))
    config["ledger"] = "postgresql://umstieg@db.example.org:5432/umstieg?sslmode=require&sslkey=/etc/umstieg/key.pem"
    config["ledger_password"] = "env:LEDGER_PW"
    config["sources"].append({"name": "mail", "type": "ews", "url": "https://ews.example.org/EWS/Exchange.asmx",
                              "username": "svc@example.org", "password": "env:EWS_PW"})
    path = tmp_path / "clean.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert load_department(path).ledger.startswith("postgresql://umstieg@")


def test_a_user_folder_that_is_a_link_is_a_problem_before_anything_moves(tmp_path):
    from core.department import load_department
    from sources.fileshare import FolderShare
    dept_file = department(tmp_path, users=("anna",))
    (tmp_path / "home" / "anna").rmdir()
    os.symlink(outside(tmp_path).parent, tmp_path / "home" / "anna")
    dept = load_department(dept_file)
    problems = FolderShare(dept.sources[0]).check(["anna"])
    assert len(problems) == 1 and "symbolic link" in problems[0]
    with pytest.raises(ItemError):
        list(FolderShare(dept.sources[0]).discover("anna", "anna"))
    result = run_cli("run", str(dept_file))
    assert result.returncode == 2 and "symbolic link" in result.stdout + result.stderr
    nothing_outside_arrived(tmp_path)
