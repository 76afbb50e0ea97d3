"""The SMB source (sources/smb.py) against a real Samba server (smbd) on a loopback port.

The share is read as the unix user `nobody` (`force user`), so that `chmod 000` keeps the
service account out of a file or folder, as NTFS permissions do on a Windows server.

What every source must do (versions that follow changes, deletions, hostile names, a large file
read in bounded memory) is asked in test_source_conformance.py; this file keeps what is SMB's own.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.department import SmbSource
from core.errors import FatalError, ItemError, TransientError
from core.localtree import ChangedAtSource
from servers.samba import SambaServer, smbd_missing
from sources.smb import SmbShare, principal_name, source_for

PASSWORD = "smb-test-pw-3Fq"
MiB = 1024 * 1024
BIG = 50 * MiB

pytestmark = pytest.mark.skipif(smbd_missing() is not None, reason=f"Samba test server unavailable: {smbd_missing()}")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def _tree(root: Path) -> None:
    """anna's and ben's folders: umlauts, spaces, a deep tree, an empty file, a 50 MB file, and a
    file and a folder the service account may not read."""
    anna = root / "anna"
    deep = anna / "Ablage 2026" / "Bürgeramt" / "ä ö ü ß" / "tief" / "tiefer" / "am tiefsten"
    deep.mkdir(parents=True)
    (anna / "Grüße an Jürgen.txt").write_text("Grüße\n", encoding="utf-8")
    (anna / "leer.txt").write_bytes(b"")
    (anna / "Ablage 2026" / "Bericht Q1.docx").write_bytes(os.urandom(30_000))
    (deep / "Protokoll (final) v2.odt").write_bytes(os.urandom(5_000))
    with open(anna / "Große Datei.bin", "wb") as f:
        for _ in range(BIG // MiB):
            f.write(os.urandom(MiB))
    (anna / "gesperrt.txt").write_text("geheim\n")
    (anna / "Zu").mkdir()
    (anna / "Zu" / "drin.txt").write_text("drin\n")
    (root / "ben").mkdir()
    (root / "ben" / "notiz.txt").write_text("Ben\n")


def _local_files(base: Path) -> dict[str, Path]:
    return {p.relative_to(base).as_posix(): p for p in base.rglob("*")
            if p.is_file() and "Zu" not in p.relative_to(base).parts
            and p.name != "gesperrt.txt"}


@pytest.fixture(scope="module")
def samba():
    with SambaServer(password=PASSWORD) as server:
        _tree(server.root)
        server.make_readable()
        os.chmod(server.root / "anna" / "gesperrt.txt", 0)       # nobody may read it
        os.chmod(server.root / "anna" / "Zu", 0)                 # nobody may list it
        yield server


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("SMB_TEST_PW", PASSWORD)
    monkeypatch.setenv("SMB_WRONG_PW", "not-the-password-8Jw")


def config(server: SambaServer, **overrides) -> SmbSource:
    values = {"name": "homes", "server": "127.0.0.1", "port": server.port, "share": server.share,
              "username": server.username, "password": "env:SMB_TEST_PW", "timeout": 10, **overrides}
    return SmbSource(**values)


def test_walk_and_extract_equal_the_files_on_disk(samba, tmp_path):
    source = SmbShare(config(samba))
    refs = list(source.discover("anna", "anna"))
    files = {r.location: r for r in refs if not r.location.endswith("/")}
    local = _local_files(samba.root / "anna")
    assert files.pop("gesperrt.txt").size == len("geheim\n")    # listed, though it cannot be read
    assert sorted(files) == sorted(local)
    assert [r.location for r in refs] == [r.location for r in list(source.discover("anna", "anna"))]  # stable order
    assert "Ablage 2026/Bürgeramt/ä ö ü ß/tief/tiefer/am tiefsten/Protokoll (final) v2.odt" in files
    for rel, path in local.items():
        ref = files[rel]
        st = path.stat()
        assert ref.key == f"anna/{rel}" and ref.owner == "anna" and ref.kind.value == "file"
        assert ref.size == st.st_size
        assert ref.version == f"{st.st_mtime_ns // 1000 * 1000}:{st.st_size}"   # SMB keeps microseconds
        assert ref.meta["mtime"] == pytest.approx(st.st_mtime, abs=1e-5)
        size, mtime = source.extract("anna", rel, tmp_path / "out" / rel)
        assert size == st.st_size and mtime == pytest.approx(st.st_mtime, abs=1e-5)
        assert _sha(tmp_path / "out" / rel) == _sha(path), rel
    assert (tmp_path / "out" / "leer.txt").stat().st_size == 0


def test_an_unreadable_file_fails_alone(samba, tmp_path):
    source = SmbShare(config(samba))
    refs = {r.location: r for r in source.discover("anna", "anna")}
    assert "gesperrt.txt" in refs                               # listed: the folder is readable
    assert "acl_error" in refs["gesperrt.txt"].meta
    outcomes = {}
    for location in refs:
        try:
            source.extract("anna", location, tmp_path / "out" / location.rstrip("/"))
            outcomes[location] = "ok"
        except ItemError as exc:
            outcomes[location] = str(exc)
    assert "access denied" in outcomes.pop("gesperrt.txt")
    assert "could not be listed" in outcomes.pop("Zu/")         # the closed folder is reported, not hidden
    assert set(outcomes.values()) == {"ok"} and len(outcomes) == len(_local_files(samba.root / "anna"))


def test_a_vanished_file_is_an_item_error(samba, tmp_path):
    with pytest.raises(ItemError, match="vanished"):
        SmbShare(config(samba)).extract("anna", "gibt es nicht.txt", tmp_path / "x")


def test_acl_entries_travel_in_meta(samba):
    ref = next(r for r in SmbShare(config(samba)).discover("ben", "ben") if r.location == "notiz.txt")
    meta = ref.meta
    assert meta["owner"] == "Unix User\\0"                       # the file belongs to root (uid 0)
    by_principal = {p["principal"]: p for p in meta["permissions"]}
    assert by_principal["Everyone"] == {"principal": "Everyone", "kind": "group", "rights": "read",
                                        "deny": False, "inherited": False}     # mode 0644: others read
    assert by_principal["Unix User\\0"]["rights"] in ("write", "full")
    assert all(set(p) == {"principal", "kind", "rights", "deny", "inherited"} for p in meta["permissions"])
    plain = next(r for r in SmbShare(config(samba, read_acl=False)).discover("ben", "ben"))
    assert set(plain.meta) == {"mtime", "file_id"}


def test_well_known_principals_are_named():
    assert principal_name("S-1-1-0") == ("Everyone", "group")
    assert principal_name("S-1-5-32-544") == ("BUILTIN\\Administrators", "group")
    assert principal_name("S-1-5-21-1-2-3-513") == ("S-1-5-21-1-2-3\\Domain Users", "group")
    assert principal_name("S-1-5-21-1-2-3-1104") == ("S-1-5-21-1-2-3-1104", "unknown")


def test_check_names_every_problem_without_the_password(samba):
    assert SmbShare(config(samba)).check(["anna", "ben"]) == []
    missing = SmbShare(config(samba)).check(["anna", "carla", "dora"])
    assert len(missing) == 2 and all("does not exist" in p for p in missing)
    assert "carla" in missing[0] and "dora" in missing[1]
    locked = SmbShare(config(samba, path="anna")).check(["Zu"])
    assert len(locked) == 1 and "access denied" in locked[0]
    wrong = SmbShare(config(samba, password="env:SMB_WRONG_PW")).check(["anna"])
    assert len(wrong) == 1 and "refused the account" in wrong[0] and "password" in wrong[0]
    assert "not-the-password" not in wrong[0]
    share = SmbShare(config(samba, share="gibtsnicht")).check(["anna"])
    assert len(share) == 1 and "gibtsnicht" in share[0] and "does not exist" in share[0]
    path = SmbShare(config(samba, path="Ablage/fehlt")).check(["anna"])
    assert len(path) == 1 and "does not exist" in path[0]


def test_an_unreachable_server_is_a_check_problem_and_transient_in_a_run(samba, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cfg = config(samba, port=closed_port, timeout=2)
    problems = SmbShare(cfg).check(["anna"])
    assert len(problems) == 1 and "cannot reach" in problems[0]
    with pytest.raises(TransientError):
        SmbShare(cfg).extract("anna", "leer.txt", tmp_path / "x")


def test_a_wrong_password_mid_run_is_fatal(samba, tmp_path):
    with pytest.raises(FatalError) as info:
        SmbShare(config(samba, password="env:SMB_WRONG_PW")).extract("anna", "leer.txt", tmp_path / "x")
    assert "not-the-password" not in str(info.value)


def test_a_dropped_connection_is_transient_and_the_next_try_reconnects(tmp_path):
    with SambaServer(password=PASSWORD) as server:
        (server.root / "anna").mkdir(parents=True)
        (server.root / "anna" / "a.txt").write_text("a")
        server.make_readable()
        source = SmbShare(config(server))
        assert source.extract("anna", "a.txt", tmp_path / "a1") == (1, pytest.approx((server.root / "anna" / "a.txt")
                                                                                     .stat().st_mtime, abs=1e-5))
        server.stop_smbd()                                     # the server goes away under an open connection
        with pytest.raises(TransientError):
            source.extract("anna", "a.txt", tmp_path / "a2")
        server.start_smbd()                                    # and comes back on the same port
        assert source.extract("anna", "a.txt", tmp_path / "a3")[0] == 1


def test_a_server_that_stops_answering_is_transient(tmp_path):
    with SambaServer(password=PASSWORD) as server:
        (server.root / "anna").mkdir(parents=True)
        (server.root / "anna" / "a.txt").write_text("a")
        server.make_readable()
        source = SmbShare(config(server, timeout=2))
        assert source.extract("anna", "a.txt", tmp_path / "a1")[0] == 1
        server.pause()                                         # connection open, no answers any more
        try:
            with pytest.raises(TransientError, match="failed or timed out"):
                source.extract("anna", "a.txt", tmp_path / "a2")
        finally:
            server.resume()
        assert source.extract("anna", "a.txt", tmp_path / "a3")[0] == 1     # a new connection


def test_many_threads_extract_at_once(samba, tmp_path):
    source = source_for(config(samba))
    assert source_for(config(samba)) is source                 # one instance (one connection) per config
    local = {rel: p for rel, p in _local_files(samba.root / "anna").items() if p.stat().st_size < MiB}
    jobs = [rel for rel in local for _ in range(4)]

    def one(i_rel):
        i, rel = i_rel
        dst = tmp_path / f"t{i}" / rel
        source.extract("anna", rel, dst)
        return rel, _sha(dst), threading.get_ident()

    with ThreadPoolExecutor(16) as pool:
        listings = [pool.submit(lambda: [r.location for r in source.discover("anna", "anna")]) for _ in range(3)]
        results = list(pool.map(one, enumerate(jobs * 2)))
    assert all(len(f.result()) == len(listings[0].result()) for f in listings)
    assert len({t for _, _, t in results}) > 1
    assert all(digest == _sha(local[rel]) for rel, digest, _ in results)


def test_a_department_reads_the_share_and_archives_originals_in_s3(tmp_path, monkeypatch):
    """End to end through the flow: SMB source → conversion → local target, originals into S3."""
    import boto3
    import yaml

    from docgen import make_docx
    from flows import runtime
    from flows.migrate import migrate_body as migrate
    from servers.s3 import MotoS3
    from helpers import ledger_rows

    with SambaServer(password=PASSWORD) as server, MotoS3() as moto:
        home = server.root / "Abteilung"
        (home / "anna" / "Ablage").mkdir(parents=True)
        make_docx(home / "anna" / "Ablage" / "Bericht Grüße.docx", paragraphs=4)
        (home / "anna" / "notiz.txt").write_text("Notiz\n", encoding="utf-8")
        (home / "anna" / "gesperrt.txt").write_text("geheim\n")
        server.make_readable()
        os.chmod(home / "anna" / "gesperrt.txt", 0)
        monkeypatch.setenv("S3_KEY_ID", "AKIAUMSTIEGTEST00001")
        monkeypatch.setenv("S3_SECRET", "s3-test-secret-Zr8wQ")
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                          aws_access_key_id="AKIAUMSTIEGTEST00001", aws_secret_access_key="s3-test-secret-Zr8wQ")
        s3.create_bucket(Bucket="originale")
        dept_file = tmp_path / "department.yaml"
        dept_file.write_text(yaml.safe_dump({
            "name": "smbamt", "work_dir": str(tmp_path / "work"),
            "users": [{"source": "anna", "target": "t-anna"}],
            "sources": [{"name": "share", "type": "smb", "server": "127.0.0.1", "port": server.port,
                         "share": server.share, "path": "Abteilung", "username": server.username,
                         "password": "env:SMB_TEST_PW", "timeout": 10}],
            "target": {"type": "localdir", "root": str(tmp_path / "target")},
            "archive": {"type": "s3", "bucket": "originale", "prefix": "2026", "endpoint_url": moto.url,
                        "access_key_id": "env:S3_KEY_ID", "secret_access_key": "env:S3_SECRET"},
            "conversion": {"workers": 1, "timeout": 120, "keep_original": "never"},
        }, allow_unicode=True), encoding="utf-8")
        try:
            migrate(str(dept_file))
        finally:
            runtime.close_all()
        rows = {r["location"]: r for r in ledger_rows(dept_file)}
        assert rows["notiz.txt"]["state"] == "verified"
        assert (tmp_path / "target" / "t-anna" / "notiz.txt").read_text(encoding="utf-8") == "Notiz\n"
        assert rows["gesperrt.txt"]["state"] == "failed" and rows["gesperrt.txt"]["reason"] == "extract_error"
        doc = rows["Ablage/Bericht Grüße.docx"]
        assert doc["state"] == "verified" and doc["conversion"] == "converted"
        assert (tmp_path / "target" / "t-anna" / "Ablage" / "Bericht Grüße.odt").is_file()
        original = s3.get_object(Bucket="originale", Key="2026/smbamt/anna/Ablage/Bericht Grüße.docx")
        assert original["Body"].read() == (home / "anna" / "Ablage" / "Bericht Grüße.docx").read_bytes()


# ------------------------------------------------------------------------------------------ hostile shares
def _user_folder(server: SambaServer, name: str, files: dict[str, str]) -> Path:
    home = server.root / name
    home.mkdir()
    for rel, text in files.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text, encoding="utf-8")
    server.make_readable()
    return home


def test_a_file_swapped_for_a_link_after_listing_is_changed_at_source(samba, tmp_path):
    """Samba follows a link inside the share by itself and shows it as a plain file (`follow
    symlinks`, the default), so a link put in a listed file's place would read a colleague's
    file: the id the open answers with is not the listed one, and nothing is written. A link to
    outside the share is refused by Samba (`wide links = no`, the default): the file vanished."""
    carla = _user_folder(samba, "carla", {"brief.txt": "Brief\n", "bericht.txt": "Bericht\n",
                                         "neu.txt": "alt\n", "bleibt.txt": "bleibt\n"})
    dora = _user_folder(samba, "dora", {"geheim.txt": "DORAS GEHEIMNIS\n"})
    outside = tmp_path / "passwd"
    outside.write_text("OUTSIDE THE SHARE\n")
    os.chmod(tmp_path, 0o755)
    source = SmbShare(config(samba, read_acl=False))
    refs = {r.location: r for r in source.discover("carla", "carla")}
    assert all(r.meta.get("file_id") for r in refs.values())
    # discovery's id is the one the open answers with: a file left alone extracts
    size, _ = source.extract("carla", "bleibt.txt", tmp_path / "bleibt.txt", listed=refs["bleibt.txt"].meta)
    assert size == len("bleibt\n")

    os.unlink(carla / "brief.txt")
    os.symlink(dora / "geheim.txt", carla / "brief.txt")           # inside the share: Samba follows it
    os.unlink(carla / "bericht.txt")
    os.symlink(outside, carla / "bericht.txt")                      # outside the share
    (carla / "neu.tmp").write_text("neu\n")
    os.replace(carla / "neu.tmp", carla / "neu.txt")                # saved over, as editors do: another file
    samba.make_readable()
    with pytest.raises(ChangedAtSource) as exc:
        source.extract("carla", "brief.txt", tmp_path / "brief.txt", listed=refs["brief.txt"].meta)
    assert exc.value.reason == "changed_at_source"
    with pytest.raises(ItemError):
        source.extract("carla", "bericht.txt", tmp_path / "bericht.txt", listed=refs["bericht.txt"].meta)
    with pytest.raises(ChangedAtSource):
        source.extract("carla", "neu.txt", tmp_path / "neu.txt", listed=refs["neu.txt"].meta)
    for p in tmp_path.rglob("*"):
        if p.is_file() and p != outside:
            assert b"GEHEIMNIS" not in p.read_bytes() and b"OUTSIDE" not in p.read_bytes(), p
    # listed again, the file saved over is an ordinary new version and moves
    again = {r.location: r for r in source.discover("carla", "carla")}
    assert "bericht.txt" not in again                               # Samba hides a link that leaves the share
    source.extract("carla", "neu.txt", tmp_path / "neu.txt", listed=again["neu.txt"].meta)
    assert (tmp_path / "neu.txt").read_text() == "neu\n"


def test_a_department_run_never_loads_a_swapped_file(tmp_path, monkeypatch):
    """The same swap between discovery and extraction in a department run: the item fails
    `changed_at_source`, the colleague's file reaches no target, the next run moves it as a new
    version once it is a plain file again."""
    import yaml

    from helpers import discover_then, ledger_rows

    with SambaServer(password=PASSWORD) as server:
        erik = _user_folder(server, "erik", {"Akten/vertrag.txt": "Vertrag\n", "notiz.txt": "Notiz\n"})
        _user_folder(server, "fritz", {"privat.txt": "FRITZ PRIVAT\n"})
        dept_file = tmp_path / "department.yaml"
        dept_file.write_text(yaml.safe_dump({
            "name": "smbswap", "work_dir": str(tmp_path / "work"),
            "users": [{"source": "erik", "target": "t-erik"}],
            "sources": [{"name": "share", "type": "smb", "server": "127.0.0.1", "port": server.port,
                         "share": server.share, "username": server.username, "password": "env:SMB_TEST_PW",
                         "timeout": 10, "read_acl": False}],
            "target": {"type": "localdir", "root": str(tmp_path / "target")},
            "conversion": {"enabled": False},
        }), encoding="utf-8")

        def swap():
            os.unlink(erik / "Akten" / "vertrag.txt")
            os.symlink(server.root / "fritz" / "privat.txt", erik / "Akten" / "vertrag.txt")

        discover_then(dept_file, swap)
        rows = {r["location"]: r for r in ledger_rows(dept_file)}
        assert rows["notiz.txt"]["state"] == "verified"
        assert (rows["Akten/vertrag.txt"]["state"], rows["Akten/vertrag.txt"]["reason"]) == \
            ("failed", "changed_at_source")
        for p in (tmp_path / "target").rglob("*"):
            assert not p.is_file() or b"FRITZ" not in p.read_bytes(), p

        def put_back():
            pass
        os.unlink(erik / "Akten" / "vertrag.txt")
        (erik / "Akten" / "vertrag.txt").write_text("Vertrag, neu\n")
        server.make_readable()
        discover_then(dept_file, put_back)
        rows = {r["location"]: r for r in ledger_rows(dept_file)}
        assert rows["Akten/vertrag.txt"]["state"] == "verified"
        assert (tmp_path / "target" / "t-erik" / "Akten" / "vertrag.txt").read_text() == "Vertrag, neu\n"
