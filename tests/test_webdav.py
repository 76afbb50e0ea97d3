"""The WebDAV targets: Nextcloud (against a protocol-level test server that follows Nextcloud's
documented behaviour, tests/servers/nextcloud_dav.py) and OX Drive (against a real WebDAV
server, wsgidav), then a department migrated into the Nextcloud test server end to end."""

from __future__ import annotations

import hashlib
import os
import random
import tracemalloc
from pathlib import Path

import httpx
import pytest
import yaml

from core.department import NextcloudTarget, OXDriveTarget, load_department
from core.errors import ConfigError, FatalError, TransientError, UserStopped
from flows.steps import with_retries
from servers.nextcloud_dav import Fault, NextcloudDav, nextcloud_rejects
from servers.wsgidav_server import WsgiDavServer
from sinks.names import MAX_NAME_BYTES, original_name, original_path, safe_name, safe_path
from sinks.webdav import Nextcloud, OXDrive, QuotaExceeded
from test_flows import ledger_rows, make_department

MiB = 1024 * 1024
PASSWORDS = {"t-anna": "anna-app-pw-7Qx", "t-ben": "ben-app-pw-4Kz", "svc": "svc-app-pw-9Rt"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _secrets(monkeypatch):
    for login, password in PASSWORDS.items():
        monkeypatch.setenv(f"PW_{login.replace('-', '_').upper()}", password)


def ref_of(login: str) -> str:
    return f"env:PW_{login.replace('-', '_').upper()}"


@pytest.fixture
def nextcloud(tmp_path):
    with NextcloudDav(tmp_path / "nextcloud", dict(PASSWORDS)) as server:
        yield server
    assert not server.errors, server.errors[0]          # a bug of the test server, not a fault it was told to make


def nc_sink(server: NextcloudDav, **overrides) -> Nextcloud:
    cfg = {"url": server.url, "app_passwords": {u: ref_of(u) for u in ("t-anna", "t-ben")},
           "chunk_threshold": 8 * MiB, "chunk_size": 5 * MiB, "timeout": 5, **overrides}
    return Nextcloud(NextcloudTarget(**cfg), sleep=lambda s: None)


def load(sink, owner: str, rel: str, src: Path, mtime: float | None = None) -> str:
    """What the flow's load step does: find identical content, else put."""
    return sink.find(owner, rel, sha_file(src)) or sink.put(owner, rel, src, mtime)


# ------------------------------------------------------------------------------ name mapping
def test_forbidden_names_are_mapped_reversibly():
    examples = {
        "Protokoll: 3.docx": "Protokoll%3A 3.docx",
        'a\\b*c?d"e<f>g|h.txt': "a%5Cb%2Ac%3Fd%22e%3Cf%3Eg%7Ch.txt",
        " Entwurf.": "%20Entwurf%2E",
        "Notiz  ": "Notiz%20%20",
        ".htaccess": "%2Ehtaccess",
        "upload.PART": "upload%2EPART",
        "CON.txt": "%43ON.txt",
        "zeile\nzwei": "zeile%0Azwei",
        "50%AB": "50%25AB",                      # would read as an escape: escaped itself
        "100% sicher.docx": "100% sicher.docx",  # a lone % stays as it is
        "Bericht 2026.odt": "Bericht 2026.odt",
    }
    for name, mapped in examples.items():
        assert safe_name(name) == mapped, name
        assert original_name(mapped) == name
        assert nextcloud_rejects(mapped) is None, mapped
    # each changed name (but the `%` one, escaped for the way back) is one Nextcloud refuses
    assert all(nextcloud_rejects(n) for n in examples if safe_name(n) != n and "%" not in n)
    assert safe_path("Projekt: A/Teil?/x.txt") == "Projekt%3A A/Teil%3F/x.txt"
    assert original_path("Projekt%3A A/Teil%3F/x.txt") == "Projekt: A/Teil?/x.txt"


def test_the_mapping_round_trips_and_always_satisfies_nextcloud():
    rng = random.Random(5)
    alphabet = list("ab.% :?*\\\"<>|AF0\x01\x1fäß") + ["co", "con", "nul", ".part", "%2", "%41"]
    for _ in range(20000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        mapped = safe_name(name)
        assert original_name(mapped) == name, repr(name)
        assert nextcloud_rejects(mapped) is None, (repr(name), mapped)


def test_over_long_names_are_shortened_apart_and_keep_their_extension():
    a, b = "Ä" * 200 + "-eins.docx", "Ä" * 200 + "-zwei.docx"
    sa, sb = safe_name(a), safe_name(b)
    assert sa != sb and sa.endswith(".docx") and sb.endswith(".docx")
    assert len(sa.encode()) <= MAX_NAME_BYTES and nextcloud_rejects(sa) is None
    assert nextcloud_rejects(a) is not None                               # Nextcloud would refuse it as is
    long_escapes = ":" * 120                                               # 360 bytes once escaped
    assert nextcloud_rejects(safe_name(long_escapes)) is None


# ------------------------------------------------------------------------------ configuration
def test_target_configuration_is_checked(tmp_path):
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="folder must contain"):
        NextcloudTarget(url="https://cloud.example", username="svc", password="env:X", folder="Migration")
    with pytest.raises(ValidationError, match="needs credentials"):
        NextcloudTarget(url="https://cloud.example")
    with pytest.raises(ValidationError, match="without /remote.php"):
        NextcloudTarget(url="https://cloud.example/remote.php/dav", username="svc", password="env:X")
    with pytest.raises(ValidationError, match="chunk_size"):
        NextcloudTarget(url="https://cloud.example", username="svc", password="env:X", chunk_size=MiB)
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=1)
    cfg = yaml.safe_load(dept_file.read_text())
    cfg["target"] = {"type": "nextcloud", "url": "https://cloud.example", "username": "svc", "password": "hunter2"}
    dept_file.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as exc:
        load_department(dept_file)
    assert "target.password" in str(exc.value) and "hunter2" not in str(exc.value)
    cfg["target"] = {"type": "oxdrive", "url": "https://ox.example/servlet/webdav.infostore",
                     "app_passwords": {"t-anna": "env:PW_T_ANNA"}, "ca_file": "certs/ca.pem"}
    dept_file.write_text(yaml.safe_dump(cfg))
    target = load_department(dept_file).target
    assert isinstance(target, OXDriveTarget) and target.ca_file == tmp_path / "certs" / "ca.pem"


# ------------------------------------------------------------------------------ Nextcloud
def test_put_find_verify_and_no_second_upload(nextcloud, tmp_path):
    sink = nc_sink(nextcloud)
    src = tmp_path / "Plan.txt"
    src.write_bytes(b"Haushalt 2026\n" * 100)
    digest = sha_file(src)
    assert sink.find("t-anna", "Ablage/Plan.txt", digest) is None
    ref = sink.put("t-anna", "Ablage/Plan.txt", src, 1_700_000_000.7)
    assert ref == f"{nextcloud.url.replace('://', '://t-anna@')}/remote.php/dav/files/t-anna/Ablage/Plan.txt"
    assert nextcloud.file("t-anna", "Ablage/Plan.txt").read_bytes() == src.read_bytes()
    assert nextcloud.checksums["t-anna/Ablage/Plan.txt"] == f"SHA256:{digest}"
    gets = len(nextcloud.requests("GET"))
    assert sink.find("t-anna", "Ablage/Plan.txt", digest) == ref
    assert len(nextcloud.requests("GET")) == gets                  # the stored checksum sufficed
    assert sink.verify(ref, digest) is None
    assert load(sink, "t-anna", "Ablage/Plan.txt", src) == ref     # a rerun: found, not sent again
    assert nextcloud.writes() == {"t-anna/Ablage/Plan.txt": 1}
    assert sink.find("t-anna", "Ablage/Plan.txt", sha(b"other")) is None   # other bytes: not "found"
    # Nextcloud keeps the checksum it was told without checking it: verify reads the bytes back
    nextcloud.file("t-anna", "Ablage/Plan.txt").write_bytes(b"changed at the target")
    problem = sink.verify(ref, digest)
    assert problem and "differs" in problem
    sink.remove(ref)
    assert "missing" in sink.verify(ref, digest)


def test_put_reuses_the_digest_find_was_given(nextcloud, tmp_path, monkeypatch):
    """The load step hashes its payload and asks find first: put does not hash the file again."""
    import sinks.webdav
    sink = nc_sink(nextcloud)
    src = tmp_path / "Vermerk.txt"
    src.write_bytes(b"Vermerk\n" * 1000)
    digest = sha_file(src)
    monkeypatch.setattr(sinks.webdav, "_sha256_of", lambda path: pytest.fail("hashed the file again"))
    assert sink.find("t-anna", "Vermerk.txt", digest) is None
    sink.put("t-anna", "Vermerk.txt", src)
    sink.put("t-anna", "Kopie.txt", src, digest=digest)
    assert nextcloud.checksums["t-anna/Vermerk.txt"] == nextcloud.checksums["t-anna/Kopie.txt"] == f"SHA256:{digest}"
    monkeypatch.undo()
    sink.put("t-anna", "Ohne.txt", src)                                     # no digest known: hashed here
    assert nextcloud.checksums["t-anna/Ohne.txt"] == f"SHA256:{digest}"


def test_modification_times_survive_plain_and_chunked_uploads(nextcloud, tmp_path):
    sink = nc_sink(nextcloud)
    small, big = tmp_path / "klein.txt", tmp_path / "gross.bin"
    small.write_bytes(b"x" * 1000)
    big.write_bytes(os.urandom(11 * MiB))
    sink.put("t-anna", "klein.txt", small, 1_600_000_123.9)
    sink.put("t-anna", "gross.bin", big, 1_500_000_456.0)
    assert nextcloud.file("t-anna", "klein.txt").stat().st_mtime == 1_600_000_123
    assert nextcloud.file("t-anna", "gross.bin").stat().st_mtime == 1_500_000_456
    # 11 MiB in 5 MiB chunks
    assert [r["method"] for r in nextcloud.requests() if "/uploads/" in r["path"]] == ["MKCOL", "PUT", "PUT", "PUT", "MOVE"]


def test_a_large_file_goes_up_in_chunks_with_bounded_memory(nextcloud, tmp_path):
    sink = nc_sink(nextcloud, chunk_threshold=16 * MiB, chunk_size=16 * MiB)
    big = tmp_path / "Archiv.zip"
    with open(big, "wb") as f:
        for _ in range(40):
            f.write(os.urandom(MiB))
    digest = sha_file(big)
    tracemalloc.start()
    try:
        ref = sink.put("t-anna", "Archiv/Archiv.zip", big, 1_650_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # client and (in-process) server together never held a chunk, let alone the file
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB while sending 40 MiB in 16 MiB chunks"
    chunks = [r for r in nextcloud.requests("PUT") if "/uploads/" in r["path"]]
    assert [r["path"].rsplit("/", 1)[1] for r in chunks] == ["00001", "00002", "00003"]
    assert nextcloud.writes() == {"t-anna/Archiv/Archiv.zip": 1}
    assert not any((nextcloud.root / "uploads" / "t-anna").iterdir())       # upload folder cleaned up
    assert sink.verify(ref, digest) is None
    # no checksum is stored for chunked uploads: find downloads and hashes instead
    assert "t-anna/Archiv/Archiv.zip" not in nextcloud.checksums
    assert sink.find("t-anna", "Archiv/Archiv.zip", digest) == ref
    assert load(sink, "t-anna", "Archiv/Archiv.zip", big) == ref
    assert nextcloud.writes() == {"t-anna/Archiv/Archiv.zip": 1}


def test_unsafe_names_are_mapped_and_the_reference_shows_it(nextcloud, tmp_path):
    sink = nc_sink(nextcloud)
    names = ["Projekt: Alpha/Bericht?.docx", "Ablage/.htaccess", "Ablage/CON.txt", " Entwurf /Notiz. ",
             "Ablage/upload.part", "Ablage/100% sicher.txt"]
    refs = {}
    for i, rel in enumerate(names):
        src = tmp_path / f"f{i}"
        src.write_bytes(f"Inhalt {i}".encode())
        refs[rel] = sink.put("t-anna", rel, src)
        assert sink.verify(refs[rel], sha_file(src)) is None
    stored = nextcloud.files("t-anna")
    assert sorted(original_path(p) for p in stored) == sorted(names)        # reversible
    assert refs["Projekt: Alpha/Bericht?.docx"].endswith("/t-anna/Projekt%3A Alpha/Bericht%3F.docx")
    assert "Projekt%3A Alpha/Bericht%3F.docx" in stored
    assert refs["Ablage/100% sicher.txt"].endswith("/Ablage/100% sicher.txt")
    # the server really refuses the unmapped name: the mapping is what lets the file in
    raw = httpx.put(f"{nextcloud.url}/remote.php/dav/files/t-anna/Ablage/a:b", content=b"x",
                    auth=("t-anna", PASSWORDS["t-anna"]))
    assert raw.status_code == 400 and "not allowed" in raw.text


def test_quota_exhaustion_stops_with_a_clear_reason(nextcloud, tmp_path):
    nextcloud.quotas["t-anna"] = 9 * MiB
    sink = nc_sink(nextcloud)
    fits, too_big, chunked = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    fits.write_bytes(b"a" * (4 * MiB))
    too_big.write_bytes(b"b" * (6 * MiB))
    chunked.write_bytes(b"c" * (12 * MiB))
    sink.put("t-anna", "a.bin", fits)
    with pytest.raises(QuotaExceeded) as exc:
        sink.put("t-anna", "b.bin", too_big)
    assert isinstance(exc.value, UserStopped) and exc.value.owner == "t-anna"
    message = str(exc.value)
    assert "no room left for t-anna's files" in message and "507" in message and "quota" in message
    assert "Insufficient space" in message                                 # the server's own reason
    assert PASSWORDS["t-anna"] not in message
    with pytest.raises(QuotaExceeded):
        sink.put("t-anna", "c.bin", chunked)                                # refused at its first chunk
    assert [r["status"] for r in nextcloud.requests("PUT") if "/uploads/" in r["path"]] == [507]
    assert not any((nextcloud.root / "uploads" / "t-anna").iterdir())       # no chunks left behind
    assert sorted(nextcloud.files("t-anna")) == ["a.bin"]
    sink.put("t-ben", "b.bin", too_big)                                     # other accounts are not full


def test_throttling_and_server_errors_become_transient_with_the_servers_wait(nextcloud, tmp_path):
    sink = nc_sink(nextcloud)
    src = tmp_path / "x"
    src.write_bytes(b"x")
    nextcloud.faults = [Fault(status=429, retry_after="7", methods=("PUT",), times=1)]
    with pytest.raises(TransientError) as exc:
        sink.put("t-anna", "x.txt", src)
    assert exc.value.retry_after == 7
    nextcloud.faults = [Fault(status=503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT", methods=("PUT",), times=1)]
    with pytest.raises(TransientError) as exc:
        sink.put("t-anna", "x.txt", src)
    assert exc.value.retry_after == 0                                       # a date in the past: now
    nextcloud.faults = [Fault(stall=1.0, methods=("PUT",), times=1)]
    with pytest.raises(TransientError, match="did not answer in time"):
        nc_sink(nextcloud, timeout=0.3).put("t-anna", "x.txt", src)
    nextcloud.faults = [Fault(status=403, methods=("PUT",), times=1)]
    with pytest.raises(Exception) as exc:
        sink.put("t-anna", "x.txt", src)
    assert type(exc.value).__name__ == "ItemError" and "403" in str(exc.value)


def test_faults_still_end_with_every_file_verified_and_none_sent_twice(nextcloud, tmp_path):
    """503/429 with Retry-After, answers that never come (before and after the server did the
    work), on every kind of request: the flow's retries (find, else put; then verify) end with
    each file verified and written exactly once."""
    sink = nc_sink(nextcloud, timeout=0.5)
    files = {}
    for i in range(12):
        src = tmp_path / f"src{i}"
        src.write_bytes(os.urandom(3000 + i))
        files[f"Ordner {i % 3}/Datei {i}.bin"] = src
    big = tmp_path / "big"
    big.write_bytes(os.urandom(11 * MiB))
    files["Ordner 0/gross.bin"] = big
    nextcloud.faults = [
        Fault(status=503, retry_after="0", every=4),
        Fault(status=429, retry_after="0", methods=("PROPFIND", "GET"), every=3),
        Fault(stall=0.8, methods=("PUT",), path_contains="/files/", every=5, times=1),               # no answer
        Fault(stall=0.8, after_work=True, methods=("PUT",), path_contains="/files/", times=2),        # answer lost
        Fault(stall=0.8, methods=("PUT",), path_contains="/uploads/", every=2, times=1),              # a chunk
        Fault(stall=0.8, after_work=True, methods=("MOVE",), times=1),                               # assembled, answer lost
    ]
    waits = (0.0,) * 8
    refs = {}
    for rel, src in files.items():
        refs[rel] = with_retries(load, sink, "t-anna", rel, src, None, waits=waits, sleep=lambda s: None)
    for rel, src in files.items():
        assert with_retries(sink.verify, refs[rel], sha_file(src), waits=waits, sleep=lambda s: None) is None
    assert all(f.hits for f in nextcloud.faults), [(f, f.hits) for f in nextcloud.faults]
    assert sorted(nextcloud.files("t-anna")) == sorted(files)
    assert nextcloud.writes() == {f"t-anna/{rel}": 1 for rel in files}     # none twice


def test_check_reports_every_problem_at_once_and_no_secret(nextcloud, tmp_path, monkeypatch):
    monkeypatch.setenv("PW_T_BEN", "wrong-password")
    cfg = NextcloudTarget(url=nextcloud.url, app_passwords={"t-anna": ref_of("t-anna"), "t-ben": ref_of("t-ben"),
                                                            "t-carl": "env:PW_NOT_SET"}, timeout=5)
    sink = Nextcloud(cfg)
    assert sink.check(["t-anna"]) == []
    problems = sink.check(["t-anna", "t-ben", "t-carl", "t-dora"])
    assert len(problems) == 3, problems
    text = "\n".join(problems)
    assert "'t-ben' was refused (HTTP 401)" in text
    assert "PW_NOT_SET is not set" in text
    assert "no credentials for target user 't-dora'" in text
    assert "wrong-password" not in text and PASSWORDS["t-anna"] not in text
    nextcloud.quotas["t-anna"] = 0
    assert "no space left" in " ".join(sink.check(["t-anna"]))
    # a server that is not there: one problem, not one per user
    closed = NextcloudTarget(url="http://127.0.0.1:9", app_passwords={"t-anna": ref_of("t-anna"),
                                                                     "t-ben": ref_of("t-ben")}, timeout=2)
    problems = Nextcloud(closed).check(["t-anna", "t-ben"])
    assert len(problems) == 1 and "cannot connect" in problems[0]
    # credentials that stop working mid-run stop the run: a FatalError, not one failure per file
    src = tmp_path / "x"
    src.write_bytes(b"x")
    with pytest.raises(FatalError, match="refused the credentials of account 't-ben'"):
        nc_sink(nextcloud).put("t-ben", "x.txt", src)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by itself, and its key (PEM files)."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "umstieg test server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls_with_a_private_ca(tmp_path):
    cert, key = self_signed(tmp_path)
    with NextcloudDav(tmp_path / "nextcloud", dict(PASSWORDS), tls=(cert, key)) as server:
        assert server.url.startswith("https://")
        untrusted = nc_sink(server)
        problems = untrusted.check(["t-anna", "t-ben"])
        assert len(problems) == 1 and "certificate is not trusted" in problems[0] and "ca_file" in problems[0]
        trusted = nc_sink(server, ca_file=cert)
        assert trusted.check(["t-anna", "t-ben"]) == []
        src = tmp_path / "x"
        src.write_bytes(b"vertraulich")
        ref = trusted.put("t-anna", "x.txt", src)
        assert ref.startswith("https://t-anna@127.0.0.1:") and trusted.verify(ref, sha(b"vertraulich")) is None


def test_a_service_account_writes_each_users_files_into_a_folder_of_their_own(nextcloud, tmp_path):
    sink = nc_sink(nextcloud, app_passwords={}, username="svc", password=ref_of("svc"))
    src = tmp_path / "x"
    src.write_bytes(b"gleich")
    ra = sink.put("t-anna", "Ablage/x.txt", src)
    rb = sink.put("t-ben", "Ablage/x.txt", src)
    assert ra != rb and ra.startswith(nextcloud.url.replace("://", "://svc@"))
    assert sorted(nextcloud.files("svc")) == ["t-anna/Ablage/x.txt", "t-ben/Ablage/x.txt"]
    assert sink.verify(ra, sha(b"gleich")) is None and sink.verify(rb, sha(b"gleich")) is None
    assert sink.check(["t-anna", "t-ben"]) == []


# ------------------------------------------------------------------------------ OX Drive (wsgidav)
@pytest.fixture(scope="module")
def oxdrive(tmp_path_factory):
    with WsgiDavServer(tmp_path_factory.mktemp("oxdrive"), {"t-anna": PASSWORDS["t-anna"],
                                                             "t-ben": PASSWORDS["t-ben"]}) as server:
        yield server


def ox_sink(server: WsgiDavServer) -> OXDrive:
    return OXDrive(OXDriveTarget(url=server.url, app_passwords={u: ref_of(u) for u in ("t-anna", "t-ben")},
                                 folder="{user}", timeout=10))


def test_oxdrive_put_find_verify_and_no_second_upload(oxdrive, tmp_path):
    sink = ox_sink(oxdrive)
    assert sink.check(["t-anna", "t-ben"]) == []
    src = tmp_path / "Bericht.odt"
    src.write_bytes(os.urandom(70 * 1024 + 3))
    digest = sha_file(src)
    rel = "Projekte/Neubau: Schule/Bericht.odt"
    assert sink.find("t-anna", rel, digest) is None
    ref = sink.put("t-anna", rel, src, 1_700_000_000)
    stored = oxdrive.folder("t-anna") / "Projekte" / "Neubau%3A Schule" / "Bericht.odt"
    assert stored.read_bytes() == src.read_bytes()
    assert ref.endswith("/servlet/webdav.infostore/t-anna/Projekte/Neubau%3A Schule/Bericht.odt")
    assert sink.verify(ref, digest) is None
    before = stored.stat()
    assert load(sink, "t-anna", rel, src) == ref                           # found by download and hash
    after = stored.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)   # not written again
    assert not (oxdrive.folder("t-ben") / "Projekte").exists()             # anna's files stay anna's
    stored.write_bytes(b"changed")
    assert "differs" in sink.verify(ref, digest)
    sink.remove(ref)
    assert "missing" in sink.verify(ref, digest)


def test_concurrent_puts_into_new_folders_make_each_folder_once(oxdrive, tmp_path):
    """Chunks run in threads sharing one sink: two MKCOLs of one folder at once make wsgidav
    answer 500 (and Nextcloud 423); the sink makes each folder once, the others wait."""
    from concurrent.futures import ThreadPoolExecutor
    sink = ox_sink(oxdrive)
    srcs = []
    for i in range(24):
        src = tmp_path / f"s{i}"
        src.write_bytes(f"Akte {i}".encode())
        srcs.append((f"Parallel/Akte {i % 3}/Teil {i % 2}/Blatt {i}.txt", src))
    with ThreadPoolExecutor(8) as pool:
        refs = list(pool.map(lambda item: sink.put("t-ben", item[0], item[1]), srcs))
    assert len(set(refs)) == 24
    stored = sorted(p.relative_to(oxdrive.folder("t-ben")).as_posix()
                    for p in (oxdrive.folder("t-ben") / "Parallel").rglob("*.txt"))
    assert stored == sorted(rel for rel, _ in srcs)


def test_oxdrive_check_names_wrong_credentials(oxdrive, monkeypatch):
    monkeypatch.setenv("PW_T_BEN", "falsch")
    problems = ox_sink(oxdrive).check(["t-anna", "t-ben"])
    assert len(problems) == 1 and "'t-ben' was refused (HTTP 401)" in problems[0] and "falsch" not in problems[0]


# ------------------------------------------------------------------------------ a department, end to end
@pytest.fixture(scope="module", autouse=True)
def _close_runtime_pools():
    yield
    from flows import runtime
    runtime.close_all()


def nextcloud_department(tmp_path: Path, server: NextcloudDav, **target) -> Path:
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=3)
    cfg = yaml.safe_load(dept_file.read_text())
    cfg["target"] = {"type": "nextcloud", "url": server.url, "chunk_threshold": 5 * MiB, "chunk_size": 5 * MiB,
                     "app_passwords": {"t-anna": ref_of("t-anna"), "t-ben": ref_of("t-ben")}, **target}
    dept_file.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return dept_file


def assert_server_matches_ledger(dept_file: Path, server: NextcloudDav) -> list[dict]:
    """Every verified item is on the server exactly once with its digest; nothing else is there."""
    rows = ledger_rows(dept_file)
    verified = [r for r in rows if r["state"] == "verified"]
    refs = [r["target_ref"] for r in verified]
    assert len(refs) == len(set(refs)), "two items share one target file"
    on_server = {f"{user}/{path}": p for user in ("t-anna", "t-ben") for path, p in server.files(user).items()}
    expected = {r["target_ref"].split("/remote.php/dav/files/", 1)[1]: r for r in verified}
    assert sorted(expected) == sorted(on_server)
    for key, r in expected.items():
        assert sha_file(on_server[key]) == r["target_digest"]
    return rows


def unfinished(dept_file: Path) -> list[tuple]:
    """(location, state, reason, message) of every item not verified."""
    from core.ledger import Item, Ledger
    from sqlalchemy import select
    ledger = Ledger(load_department(dept_file).ledger_url)
    try:
        with ledger.session() as s:
            return [(i.location, i.state, i.reason, i.message) for i in s.scalars(select(Item)) if i.state != "verified"]
    finally:
        ledger.close()


def test_a_department_migrates_into_nextcloud_twice_without_duplicates(tmp_path, nextcloud):
    from flows.migrate import migrate
    dept_file = nextcloud_department(tmp_path, nextcloud)
    home = tmp_path / "home"
    (home / "anna" / "Notiz: wichtig?.txt").write_text("nicht vergessen\n", encoding="utf-8")
    (home / "ben" / "Scan.pdf").write_bytes(os.urandom(6 * MiB))          # goes up in chunks
    os.utime(home / "ben" / "Scan.pdf", (1_650_000_000, 1_650_000_000))
    # throttling and overload on the way, at most once per file or folder (so that the flow's four
    # attempts of a step always suffice, whatever order the threads go in; chunked uploads under
    # faults are the business of the test above): retried with the server's (zero) wait
    nextcloud.faults = [Fault(status=503, retry_after="0", every=3, once_per_path=True, path_contains="/files/"),
                        Fault(status=429, retry_after="0", every=4, once_per_path=True, path_contains="/files/")]
    summary = migrate(str(dept_file))
    rows = assert_server_matches_ledger(dept_file, nextcloud)
    sources = [p for p in home.rglob("*") if p.is_file()]
    assert len(rows) == len(sources) and not unfinished(dept_file)
    assert summary["totals"] == {"verified": len(rows)}
    assert all(f.hits for f in nextcloud.faults)
    anna = nextcloud.files("t-anna")
    assert "Ablage/doc000.odt" in anna and "Ablage/doc001.ods" in anna and "Ablage/doc002.odp" in anna
    note = next(r for r in rows if r["location"] == "Notiz: wichtig?.txt")
    assert note["target_ref"].endswith("/remote.php/dav/files/t-anna/Notiz%3A wichtig%3F.txt")   # mapping visible
    assert nextcloud.file("t-ben", "Scan.pdf").stat().st_mtime == 1_650_000_000
    assert any("/uploads/t-ben/" in r["path"] for r in nextcloud.requests("MOVE"))
    writes = nextcloud.writes()
    assert set(writes.values()) == {1}

    again = migrate(str(dept_file))                                        # the delta pass: nothing to do
    assert again["this_run"] == {}
    assert nextcloud.writes() == writes                                    # nothing sent again
    assert_server_matches_ledger(dept_file, nextcloud)


def test_a_full_account_stops_that_user_and_the_next_run_completes_it(tmp_path, nextcloud):
    from flows.migrate import migrate
    dept_file = nextcloud_department(tmp_path, nextcloud)
    cfg = yaml.safe_load(dept_file.read_text())
    cfg["conversion"]["enabled"] = False
    dept_file.write_text(yaml.safe_dump(cfg))
    nextcloud.quotas["t-ben"] = 10_000                                     # ben's documents do not fit
    summary = migrate(str(dept_file))
    assert list(summary["stopped_users"]) == ["ben"]
    assert "no room left for t-ben's files" in summary["stopped_users"]["ben"]
    rows = ledger_rows(dept_file)
    assert not [r for r in rows if r["state"] == "failed"]                 # nothing blamed on an item
    assert any(r["owner"] == "ben" and r["state"] != "verified" for r in rows)
    assert all(r["state"] == "verified" for r in rows if r["owner"] == "anna")   # anna went on
    report = Path(summary["report"]).read_text(encoding="utf-8")
    assert "Users who wait" in report and "no room left for t-ben" in report

    nextcloud.quotas.pop("t-ben")                                          # the administrator raises it
    migrate(str(dept_file))
    rows = assert_server_matches_ledger(dept_file, nextcloud)
    assert all(r["state"] == "verified" for r in rows)
    assert set(nextcloud.writes().values()) == {1}


def test_find_lists_each_folder_once_and_still_sees_what_arrived(nextcloud, tmp_path):
    """A fresh migration asks once per folder, not once per file; a put whose answer was lost is
    found by the next `find` (the remembered listing is dropped), so it is not sent twice."""
    sink = nc_sink(nextcloud)
    srcs = []
    for i in range(20):
        src = tmp_path / f"f{i}"
        src.write_bytes(os.urandom(100 + i))
        srcs.append((f"Akten/{i % 2}/Datei {i}.bin", src))
    for rel, src in srcs:
        load(sink, "t-anna", rel, src)
    propfinds = [r for r in nextcloud.requests("PROPFIND") if "/files/t-anna/Akten/" in r["path"]]
    assert len(propfinds) == 2                                   # one per folder
    assert all(load(sink, "t-anna", rel, src) for rel, src in srcs)   # found by checksum: no new PUT
    assert set(nextcloud.writes().values()) == {1}
    late = tmp_path / "late"
    late.write_bytes(b"late")
    nextcloud.faults = [Fault(stall=0.8, after_work=True, methods=("PUT",), times=1)]
    lossy = nc_sink(nextcloud, timeout=0.5)
    assert lossy.find("t-anna", "Akten/0/late.bin", sha_file(late)) is None
    with pytest.raises(TransientError):
        lossy.put("t-anna", "Akten/0/late.bin", late)             # arrived; the answer did not
    assert lossy.find("t-anna", "Akten/0/late.bin", sha_file(late))     # the retry finds it
    assert nextcloud.writes()["t-anna/Akten/0/late.bin"] == 1
