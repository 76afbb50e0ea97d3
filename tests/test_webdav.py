"""The WebDAV targets: Nextcloud against the real Nextcloud 27 (conftest's `nextcloud_server`),
OX Drive against a real WebDAV server (wsgidav), then departments migrated into the real Nextcloud
end to end.

What the real server cannot be made to do on demand — answer 429/503 with a Retry-After, lose an
answer after it did the work, speak TLS — a fault-injecting proxy in front of it does
(tests/servers/faultproxy.py); the proxy's request log is also how a test sees what the sink sent.
tests/servers/nextcloud_names.py models the names Nextcloud (30, Windows-compatible names on)
refuses, for the property test of the mapping.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import random
import re
import time
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from core.department import NextcloudTarget, OXDriveTarget, load_department
from core.errors import ConfigError, FatalError, ItemError, TransientError, UserStopped
from flows.steps import with_retries
from servers.faultproxy import Fault, FaultProxy
from servers.nextcloud import NextcloudServer, NextcloudUser
from servers.nextcloud_names import nextcloud_rejects
from servers.wsgidav_server import WsgiDavServer
from sinks.names import MAX_NAME_BYTES, original_name, original_path, safe_name, safe_path
from sinks.webdav import Locked, Nextcloud, OXDrive, QuotaExceeded
from helpers import ledger_rows, make_department

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


# ------------------------------------------------------------------------------ Nextcloud (real)
@pytest.fixture
def accounts(nextcloud_server, monkeypatch):
    """`accounts("anna", "ben")`: new accounts of the real server with app passwords, their secrets
    in the environment (`env_ref(user)`)."""
    def make(*names: str, **kwargs) -> list[NextcloudUser]:
        users = [nextcloud_server.new_user(f"t-{n}", **kwargs) for n in names]
        for user in users:
            monkeypatch.setenv(env_name(user.login), user.secret)
        return users
    return make


def env_name(login: str) -> str:
    return "NCPW_" + re.sub(r"[^A-Za-z0-9]", "_", login).upper()


def env_ref(user: NextcloudUser | str) -> str:
    return f"env:{env_name(user if isinstance(user, str) else user.login)}"


@pytest.fixture
def proxy(nextcloud_server):
    """A fault proxy in front of the real server (no faults until a test sets them)."""
    with FaultProxy(nextcloud_server.url) as p:
        yield p


def nc_sink(url: str, *users: NextcloudUser, **overrides) -> Nextcloud:
    cfg = {"url": url, "app_passwords": {u.login: env_ref(u) for u in users},
           "chunk_threshold": 5 * MiB, "chunk_size": 5 * MiB, "timeout": 30, **overrides}
    return Nextcloud(NextcloudTarget(**cfg), sleep=lambda s: None)


def load(sink, owner: str, rel: str, src: Path, mtime: float | None = None) -> str:
    """What the flow's load step does: find identical content, else put."""
    return sink.find(owner, rel, sha_file(src)) or sink.put(owner, rel, src, mtime)


_PROPS = ('<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>'
          "<oc:checksums/><d:getlastmodified/><d:getetag/><d:getcontentlength/></d:prop></d:propfind>")


def stat(server: NextcloudServer, user: NextcloudUser, rel: str, files_of: str | None = None) -> dict | None:
    """What the real server says of a file: checksum, mtime (epoch seconds), etag, size; None: 404."""
    with server.dav(user) as client:
        r = client.request("PROPFIND", f"/remote.php/dav/files/{files_of or user.login}/{quote(rel)}",
                           headers={"Depth": "0"}, content=_PROPS.encode())
    if r.status_code == 404:
        return None
    assert r.status_code == 207, r.text
    prop = ET.fromstring(r.content).find(".//{DAV:}prop")
    return {"checksum": prop.findtext(".//{http://owncloud.org/ns}checksum"),
            "mtime": email.utils.parsedate_to_datetime(prop.findtext("{DAV:}getlastmodified")).timestamp(),
            "etag": prop.findtext("{DAV:}getetag"), "size": int(prop.findtext("{DAV:}getcontentlength") or -1)}


def uploads_left(server: NextcloudServer, user: NextcloudUser) -> list[str]:
    """Chunked uploads the server still holds for the account (folders below uploads/<login>/)."""
    with server.dav(user) as client:
        r = client.request("PROPFIND", f"/remote.php/dav/uploads/{user.login}/", headers={"Depth": "1"})
    hrefs = [h.text for h in ET.fromstring(r.content).iter("{DAV:}href")]
    return [h for h in hrefs if h.rstrip("/") != f"/remote.php/dav/uploads/{user.login}"]


def writes(proxy: FaultProxy) -> dict[str, int]:
    """Files written through the proxy: path -> how many requests did the write at the server
    (plain PUTs and the MOVEs that assemble chunked uploads, the answer lost or not)."""
    done: dict[str, int] = {}
    for r in proxy.seen():
        forwarded = r["fault"] is None or r["fault"].after_work
        if not forwarded or r["status"] not in (201, 204, None):
            continue
        if r["method"] == "PUT" and "/remote.php/dav/files/" in r["path"]:
            key = r["path"].split("/remote.php/dav/files/", 1)[1]
        elif r["method"] == "MOVE" and r["path"].endswith("/.file"):
            key = r["path"]                      # one per upload (its destination is in a header)
        else:
            continue
        done[key] = done.get(key, 0) + 1
    return done


def test_put_find_verify_and_no_second_upload(nextcloud_server, accounts, proxy, tmp_path):
    nc = nextcloud_server
    (anna,) = accounts("anna")
    sink = nc_sink(proxy.url, anna)
    src = tmp_path / "Plan.txt"
    src.write_bytes(b"Haushalt 2026\n" * 100)
    digest = sha_file(src)
    assert sink.find(anna.login, "Ablage/Plan.txt", digest) is None
    ref = sink.put(anna.login, "Ablage/Plan.txt", src, 1_700_000_000.7)
    assert ref == f"{proxy.url.replace('://', f'://{anna.login}@')}/remote.php/dav/files/{anna.login}/Ablage/Plan.txt"
    assert nc.download(anna, "Ablage/Plan.txt") == src.read_bytes()
    first = stat(nc, anna, "Ablage/Plan.txt")
    assert first["checksum"] == f"SHA256:{digest}"
    gets = len(proxy.seen("GET"))
    assert sink.find(anna.login, "Ablage/Plan.txt", digest) == ref
    fresh = nc_sink(proxy.url, anna)                                # a new process: asks the server
    assert fresh.find(anna.login, "Ablage/Plan.txt", digest) == ref
    assert len(proxy.seen("GET")) == gets                          # the stored checksum sufficed
    assert sink.verify(ref, digest) is None
    assert load(fresh, anna.login, "Ablage/Plan.txt", src) == ref  # a rerun: found, not sent again
    assert len(proxy.seen("PUT", "/Plan.txt")) == 1
    assert stat(nc, anna, "Ablage/Plan.txt")["etag"] == first["etag"]   # the server did not write it again
    assert sink.find(anna.login, "Ablage/Plan.txt", sha(b"other")) is None   # other bytes: not "found"
    # Nextcloud keeps the checksum it was told without checking it: verify reads the bytes back
    with nc.dav(anna) as client:
        assert client.put(f"/remote.php/dav/files/{anna.login}/Ablage/Plan.txt",
                          content=b"changed at the target").status_code == 204
    problem = sink.verify(ref, digest)
    assert problem and "differs" in problem
    sink.remove(ref)
    assert "missing" in sink.verify(ref, digest) and nc.download(anna, "Ablage/Plan.txt") is None
    sink.remove(ref)                                               # already gone: fine


def test_put_writes_the_digest_it_is_given(nextcloud_server, accounts, tmp_path, monkeypatch):
    """The load step hashes its payload, asks find first and hands put the same digest: put does
    not hash the file again (nothing is kept between find and put: the digest is an argument)."""
    import sinks.webdav
    nc = nextcloud_server
    (anna,) = accounts("anna")
    sink = nc_sink(nc.url, anna)
    src = tmp_path / "Vermerk.txt"
    src.write_bytes(b"Vermerk\n" * 1000)
    digest = sha_file(src)
    monkeypatch.setattr(sinks.webdav, "_sha256_of", lambda path: pytest.fail("hashed the file again"))
    assert sink.find(anna.login, "Vermerk.txt", digest) is None
    sink.put(anna.login, "Vermerk.txt", src, digest=digest)
    sink.put(anna.login, "Kopie.txt", src, digest=digest.upper())
    assert stat(nc, anna, "Vermerk.txt")["checksum"] == stat(nc, anna, "Kopie.txt")["checksum"] == f"SHA256:{digest}"
    monkeypatch.undo()
    sink.put(anna.login, "Ohne.txt", src)                                   # no digest known: hashed here
    assert stat(nc, anna, "Ohne.txt")["checksum"] == f"SHA256:{digest}"


def test_modification_times_and_checksums_survive_plain_and_chunked_uploads(nextcloud_server, accounts, proxy,
                                                                             tmp_path):
    nc = nextcloud_server
    (anna,) = accounts("anna")
    sink = nc_sink(proxy.url, anna)
    small, big = tmp_path / "klein.txt", tmp_path / "gross.bin"
    small.write_bytes(b"x" * 1000)
    big.write_bytes(os.urandom(12 * MiB))
    sink.put(anna.login, "klein.txt", small, 1_600_000_123.9)
    sink.put(anna.login, "gross.bin", big, 1_500_000_456.0)
    assert stat(nc, anna, "klein.txt")["mtime"] == 1_600_000_123
    held = stat(nc, anna, "gross.bin")
    assert held["mtime"] == 1_500_000_456 and held["size"] == 12 * MiB
    # Nextcloud 27 keeps the checksum the assembling MOVE carries: a rerun needs no download
    assert held["checksum"] == f"SHA256:{sha_file(big)}"
    # 12 MiB in 5 MiB chunks
    assert [r["method"] for r in proxy.seen(path_contains="/uploads/")] == ["MKCOL", "PUT", "PUT", "PUT", "MOVE"]
    gets = len(proxy.seen("GET"))
    assert load(nc_sink(proxy.url, anna), anna.login, "gross.bin", big)
    assert len(proxy.seen("GET")) == gets and len(proxy.seen("MOVE")) == 1


def test_a_large_file_goes_up_in_chunks_with_bounded_memory(nextcloud_server, accounts, tmp_path):
    nc = nextcloud_server
    (anna,) = accounts("anna")
    sink = nc_sink(nc.url, anna)
    big = tmp_path / "Archiv.zip"
    with open(big, "wb") as f:
        for _ in range(12):
            f.write(os.urandom(MiB))
    digest = sha_file(big)
    tracemalloc.start()
    try:
        ref = sink.put(anna.login, "Archiv/Archiv.zip", big, 1_650_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the client never held a chunk (5 MiB), let alone the file
    assert peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB while sending 12 MiB in 5 MiB chunks"
    assert uploads_left(nc, anna) == []                                      # upload folder cleaned up
    assert sink.verify(ref, digest) is None
    assert nc.download(anna, "Archiv/Archiv.zip") == big.read_bytes()
    assert sink.find(anna.login, "Archiv/Archiv.zip", digest) == ref


def test_unsafe_names_are_mapped_and_the_reference_shows_it(nextcloud_server, accounts, tmp_path):
    nc = nextcloud_server
    (anna,) = accounts("anna")
    sink = nc_sink(nc.url, anna)
    names = ["Projekt: Alpha/Bericht?.docx", "Ablage/.htaccess", "Ablage/CON.txt", " Entwurf /Notiz. ",
             "Ablage/upload.part", "Ablage/100% sicher.txt", "Ablage/zeile\nzwei.txt", "Ablage/a\\b.txt"]
    refs = {}
    for i, rel in enumerate(names):
        src = tmp_path / f"f{i}"
        src.write_bytes(f"Inhalt {i}".encode())
        refs[rel] = sink.put(anna.login, rel, src)
        assert sink.verify(refs[rel], sha_file(src)) is None
    stored = nc.tree(anna)
    assert sorted(original_path(p) for p in stored) == sorted(names)        # reversible
    assert refs["Projekt: Alpha/Bericht?.docx"].endswith(f"/{anna.login}/Projekt%3A Alpha/Bericht%3F.docx")
    assert "Projekt%3A Alpha/Bericht%3F.docx" in stored
    assert refs["Ablage/100% sicher.txt"].endswith("/Ablage/100% sicher.txt")
    # the server really refuses these names unmapped: the mapping is what lets the files in
    with nc.dav(anna) as client:
        for raw, status in ((".htaccess", 403), ("upload.part", 423), ("a\\b.txt", 400), ("zeile\nzwei", 400)):
            assert client.put(f"/remote.php/dav/files/{anna.login}/{quote(raw, safe='')}",
                              content=b"x").status_code == status, raw


def test_quota_exhaustion_stops_with_a_clear_reason(nextcloud_server, accounts, proxy, tmp_path):
    nc = nextcloud_server
    anna, ben = accounts("anna", "ben")
    nc.set_quota(anna.login, "9 MB")
    sink = nc_sink(proxy.url, anna, ben, chunk_threshold=8 * MiB)
    fits, too_big, chunked = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    fits.write_bytes(b"a" * (4 * MiB))
    too_big.write_bytes(b"b" * (6 * MiB))
    chunked.write_bytes(b"c" * (12 * MiB))
    sink.put(anna.login, "a.bin", fits)
    with pytest.raises(QuotaExceeded) as exc:
        sink.put(anna.login, "b.bin", too_big)
    assert isinstance(exc.value, UserStopped) and exc.value.owner == anna.login
    message = str(exc.value)
    assert f"no room left for {anna.login}'s files" in message and "507" in message and "quota" in message
    assert "Insufficient space" in message                                 # the server's own reason
    assert anna.secret not in message and anna.password not in message
    # Nextcloud 27 would take every chunk and refuse only the assembly: the sink asks first
    with pytest.raises(QuotaExceeded, match="nothing was sent"):
        sink.put(anna.login, "c.bin", chunked)
    assert proxy.seen(path_contains="/uploads/") == []
    assert sorted(nc.tree(anna)) == ["a.bin"]
    sink.put(ben.login, "b.bin", too_big)                                   # other accounts are not full
    sink.put(ben.login, "c.bin", chunked)
    assert uploads_left(nc, ben) == [] and sorted(nc.tree(ben)) == ["b.bin", "c.bin"]


def test_throttling_and_server_errors_become_transient_with_the_servers_wait(accounts, proxy, tmp_path):
    (anna,) = accounts("anna")
    sink = nc_sink(proxy.url, anna)
    src = tmp_path / "x"
    src.write_bytes(b"x")
    proxy.faults = [Fault(status=429, retry_after="7", methods=("PUT",), times=1)]
    with pytest.raises(TransientError) as exc:
        sink.put(anna.login, "x.txt", src)
    assert exc.value.retry_after == 7
    proxy.faults = [Fault(status=503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT", methods=("PUT",), times=1)]
    with pytest.raises(TransientError) as exc:
        sink.put(anna.login, "x.txt", src)
    assert exc.value.retry_after == 0                                       # a date in the past: now
    proxy.faults = [Fault(stall=2.0, methods=("PUT",), times=1)]
    with pytest.raises(TransientError, match="did not answer in time"):
        nc_sink(proxy.url, anna, timeout=0.5).put(anna.login, "x.txt", src)
    proxy.faults = [Fault(drop=True, after_work=True, methods=("PUT",), times=1)]
    with pytest.raises(TransientError, match="connection to .* failed"):
        sink.put(anna.login, "y.txt", src)
    proxy.faults = [Fault(status=403, methods=("PUT",), times=1)]
    with pytest.raises(ItemError) as exc:
        sink.put(anna.login, "x.txt", src)
    assert type(exc.value).__name__ == "ItemError" and "403" in str(exc.value)


def test_faults_still_end_with_every_file_verified_and_none_sent_twice(nextcloud_server, accounts, proxy, tmp_path):
    """503/429 with Retry-After, answers that never come (before and after the server did the
    work), on every kind of request: the flow's retries (find, else put; then verify) end with
    each file verified and written exactly once."""
    nc = nextcloud_server
    (anna,) = accounts("anna")
    sink = nc_sink(proxy.url, anna, timeout=10)
    files = {}
    for i in range(9):
        src = tmp_path / f"src{i}"
        src.write_bytes(os.urandom(3000 + i))
        files[f"Ordner {i % 3}/Datei {i}.bin"] = src
    big = tmp_path / "big"
    big.write_bytes(os.urandom(11 * MiB))
    files["Ordner 0/gross.bin"] = big
    proxy.faults = [
        Fault(status=503, retry_after="0", every=4),
        Fault(status=429, retry_after="0", methods=("PROPFIND", "GET"), every=3),
        Fault(drop=True, methods=("PUT",), path_contains="/files/", every=5, times=1),               # no answer
        Fault(drop=True, after_work=True, methods=("PUT",), path_contains="/files/", times=2),      # answer lost
        Fault(drop=True, methods=("PUT",), path_contains="/uploads/", every=2, times=1),            # a chunk
        Fault(drop=True, after_work=True, methods=("MOVE",), times=1),              # assembled, answer lost
    ]
    waits = (0.0,) * 8
    refs = {}
    for rel, src in files.items():
        refs[rel] = with_retries(load, sink, anna.login, rel, src, None, waits=waits, sleep=lambda s: None)
    for rel, src in files.items():
        assert with_retries(sink.verify, refs[rel], sha_file(src), waits=waits, sleep=lambda s: None) is None
    assert all(f.hits for f in proxy.faults), [(f, f.hits) for f in proxy.faults]
    assert {k: sha(v) for k, v in nc.tree(anna).items()} == {rel: sha_file(src) for rel, src in files.items()}
    written = writes(proxy)
    assert {k: n for k, n in written.items() if "/uploads/" not in k} == \
        {f"{anna.login}/{rel}": 1 for rel in files if rel != "Ordner 0/gross.bin"}     # none twice
    assert sum(n for k, n in written.items() if "/uploads/" in k) == 1                # the big one assembled once


def test_check_reports_every_problem_at_once_and_no_secret(nextcloud_server, accounts, tmp_path, monkeypatch):
    nc = nextcloud_server
    anna, ben = accounts("anna", "ben")
    monkeypatch.setenv(env_name(ben.login), "wrong-password")
    cfg = NextcloudTarget(url=nc.url, app_passwords={anna.login: env_ref(anna), ben.login: env_ref(ben),
                                                     "t-carl": "env:PW_NOT_SET"}, timeout=30)
    sink = Nextcloud(cfg)
    assert sink.check([anna.login]) == []
    problems = sink.check([anna.login, ben.login, "t-carl", "t-dora"])
    assert len(problems) == 3, problems
    text = "\n".join(problems)
    assert f"'{ben.login}' was refused (HTTP 401)" in text
    assert "PW_NOT_SET is not set" in text
    assert "no credentials for target user 't-dora'" in text
    assert "wrong-password" not in text and anna.secret not in text
    nc.set_quota(anna.login, "0 B")
    assert "no space left" in " ".join(Nextcloud(cfg).check([anna.login]))
    # a server that is not there: one problem, not one per user
    closed = NextcloudTarget(url="http://127.0.0.1:9", app_passwords={anna.login: env_ref(anna),
                                                                     ben.login: env_ref(ben)}, timeout=2)
    problems = Nextcloud(closed).check([anna.login, ben.login])
    assert len(problems) == 1 and "cannot connect" in problems[0]
    # credentials that stop working mid-run stop the run: a FatalError, not one failure per file
    src = tmp_path / "x"
    src.write_bytes(b"x")
    with pytest.raises(FatalError, match=f"refused the credentials of account '{ben.login}'"):
        nc_sink(nc.url, ben).put(ben.login, "x.txt", src)


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




def test_tls_with_a_private_ca(nextcloud_server, accounts, tmp_path):
    """The real server behind a TLS front (the proxy with a certificate of its own CA)."""
    (anna,) = accounts("anna")
    cert, key = self_signed(tmp_path)
    with FaultProxy(nextcloud_server.url, tls=(cert, key)) as front:
        assert front.url.startswith("https://")
        untrusted = nc_sink(front.url, anna)
        problems = untrusted.check([anna.login])
        assert len(problems) == 1 and "certificate is not trusted" in problems[0] and "ca_file" in problems[0]
        trusted = nc_sink(front.url, anna, ca_file=cert)
        assert trusted.check([anna.login]) == []
        src = tmp_path / "x"
        src.write_bytes(b"vertraulich")
        ref = trusted.put(anna.login, "x.txt", src)
        assert ref.startswith(f"https://{anna.login}@127.0.0.1:") and trusted.verify(ref, sha(b"vertraulich")) is None
    assert nextcloud_server.download(anna, "x.txt") == b"vertraulich"


def test_a_service_account_writes_each_users_files_into_a_folder_of_their_own(nextcloud_server, accounts, tmp_path):
    nc = nextcloud_server
    (svc,) = accounts("svc")
    sink = nc_sink(nc.url, app_passwords={}, username=svc.login, password=env_ref(svc))
    src = tmp_path / "x"
    src.write_bytes(b"gleich")
    ra = sink.put("t-anna", "Ablage/x.txt", src)
    rb = sink.put("t-ben", "Ablage/x.txt", src)
    assert ra != rb and ra.startswith(nc.url.replace("://", f"://{svc.login}@"))
    assert nc.tree(svc) == {"t-anna/Ablage/x.txt": b"gleich", "t-ben/Ablage/x.txt": b"gleich"}
    assert sink.verify(ra, sha(b"gleich")) is None and sink.verify(rb, sha(b"gleich")) is None
    assert sink.check(["t-anna", "t-ben"]) == []


def test_find_lists_each_folder_once_and_still_sees_what_arrived(accounts, proxy, tmp_path):
    """A fresh migration asks once per folder, not once per file; a put whose answer was lost is
    found by the next `find` (the remembered listing is dropped), so it is not sent twice."""
    (anna,) = accounts("anna")
    sink = nc_sink(proxy.url, anna)
    srcs = []
    for i in range(10):
        src = tmp_path / f"f{i}"
        src.write_bytes(os.urandom(100 + i))
        srcs.append((f"Akten/{i % 2}/Datei {i}.bin", src))
    for rel, src in srcs:
        load(sink, anna.login, rel, src)
    assert len(proxy.seen("PROPFIND", f"/files/{anna.login}/Akten/")) == 2      # one per folder
    assert all(load(sink, anna.login, rel, src) for rel, src in srcs)            # found by checksum: no new PUT
    assert set(writes(proxy).values()) == {1} and len(writes(proxy)) == 10
    late = tmp_path / "late"
    late.write_bytes(b"late")
    proxy.faults = [Fault(stall=2.0, after_work=True, methods=("PUT",), times=1)]
    lossy = nc_sink(proxy.url, anna, timeout=1)
    assert lossy.find(anna.login, "Akten/0/late.bin", sha_file(late)) is None
    with pytest.raises(TransientError):
        lossy.put(anna.login, "Akten/0/late.bin", late)                          # arrived; the answer did not
    assert lossy.find(anna.login, "Akten/0/late.bin", sha_file(late))           # the retry finds it
    assert writes(proxy)[f"{anna.login}/Akten/0/late.bin"] == 1


# ------------------------------------------------------------------------------ locks a crash left
@pytest.fixture(scope="module")
def crashable_nextcloud(nextcloud_server, tmp_path_factory):
    """A real Nextcloud of this module's own: crashing an upload kills one of its PHP workers for
    good (`php -S` does not replace them), which the session's server must not suffer. Its locks
    last 8 s instead of an hour, so that a test can see one expire."""
    # each crash costs a PHP worker for good: enough of them for every crash of the module's tests
    server = NextcloudServer(tmp_path_factory.mktemp("crashable-nextcloud"), workers=10)
    server.start()
    try:
        server.set_lock_ttl(8)
        yield server
    finally:
        server.remove()


def test_a_lock_left_by_a_crashed_upload_fails_the_file_as_locked_until_it_expires(crashable_nextcloud, tmp_path,
                                                                                    monkeypatch):
    nc = crashable_nextcloud
    anna = nc.new_user("t-anna")
    monkeypatch.setenv(env_name(anna.login), anna.secret)
    nc.crash_upload(anna, "Akte.bin")                       # a real crash: the PHP worker killed mid-write
    waits: list[float] = []
    sink = Nextcloud(NextcloudTarget(url=nc.url, app_passwords={anna.login: env_ref(anna)}, timeout=30,
                                     chunk_threshold=5 * MiB, chunk_size=5 * MiB), sleep=waits.append)
    src, big = tmp_path / "Akte.bin", tmp_path / "gross.bin"
    src.write_bytes(b"Akte\n" * 100)
    big.write_bytes(os.urandom(6 * MiB))
    started = time.time()
    with pytest.raises(Locked) as exc:
        sink.put(anna.login, "Akte.bin", src)
    import sinks.webdav
    assert waits == list(sinks.webdav.LOCK_WAITS)           # waited a little, boundedly, then gave up
    assert exc.value.reason == "locked" and isinstance(exc.value, ItemError)
    message = str(exc.value)
    assert "locked at the target" in message and "423" in message and "rerun --error-class locked" in message
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(exc.value.retry_at))
    assert when in message and exc.value.retry_at >= started + sinks.webdav.LOCK_TTL
    assert anna.secret not in message
    # a chunked upload to the locked path: the chunks go up, the assembling MOVE is what is refused
    waits.clear()
    with pytest.raises(Locked):
        sink.put(anna.login, "Akte.bin", big)
    assert waits == list(sinks.webdav.LOCK_WAITS) and uploads_left(nc, anna) == []
    # other files of the account are not affected
    sink.put(anna.login, "Andere.bin", src)
    # once the lock has expired (every attempt renewed it: 8 s from the last one) and Nextcloud's
    # cleanup job ran, the same put succeeds
    time.sleep(9)
    nc.expire_locks()
    ref = sink.put(anna.login, "Akte.bin", src)
    assert sink.verify(ref, sha_file(src)) is None


def test_rerun_of_the_class_locked_moves_the_file_once_the_lock_expired(crashable_nextcloud, tmp_path, monkeypatch):
    """The load step records the locked file with the class `locked` (its message says when a
    rerun will succeed), the others go on; `rerun --error-class locked` then moves it."""
    import sinks.webdav
    from flows.migrate import migrate_body as migrate, rerun_body as rerun
    monkeypatch.setattr(sinks.webdav, "LOCK_WAITS", (0.1, 0.1))
    nc = crashable_nextcloud
    anna = nc.new_user("t-anna")
    monkeypatch.setenv(env_name(anna.login), anna.secret)
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=2)
    cfg = yaml.safe_load(dept_file.read_text())
    cfg["users"] = [{"source": "anna", "target": anna.login}]
    cfg["conversion"]["enabled"] = False
    cfg["target"] = {"type": "nextcloud", "url": nc.url, "timeout": 60, "app_passwords": {anna.login: env_ref(anna)}}
    dept_file.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    (tmp_path / "home" / "anna" / "Akte.bin").write_bytes(b"Akte\n" * 100)
    nc.crash_upload(anna, "Akte.bin")
    migrate(str(dept_file))
    rows = ledger_rows(dept_file)
    locked = [r for r in rows if r["state"] == "failed"]
    assert [(r["location"], r["reason"]) for r in locked] == [("Akte.bin", "locked")]
    assert "rerun --error-class locked" in locked[0]["message"] and anna.secret not in locked[0]["message"]
    assert all(r["state"] == "verified" for r in rows if r["location"] != "Akte.bin")
    time.sleep(9)                                       # the lock's ttl (8 s) from the last attempt
    nc.expire_locks()
    summary = rerun(str(dept_file), error_class="locked")
    assert summary["this_run"] == {"verified": 1}, summary
    assert all(r["state"] == "verified" for r in ledger_rows(dept_file))
    assert nc.download(anna, "Akte.bin") == b"Akte\n" * 100


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


def nextcloud_department(tmp_path: Path, url: str, people: dict[str, NextcloudUser], conversion: bool = True,
                         **target) -> Path:
    dept_file = make_department(tmp_path, users=tuple(people), docs_per_user=3)
    cfg = yaml.safe_load(dept_file.read_text())
    cfg["users"] = [{"source": p, "target": u.login} for p, u in people.items()]
    cfg["conversion"]["enabled"] = conversion
    cfg["target"] = {"type": "nextcloud", "url": url, "chunk_threshold": 5 * MiB, "chunk_size": 5 * MiB,
                     "timeout": 60, "app_passwords": {u.login: env_ref(u) for u in people.values()}, **target}
    dept_file.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return dept_file


def assert_server_matches_ledger(dept_file: Path, server: NextcloudServer, people: list[NextcloudUser]) -> list[dict]:
    """Every verified item is on the server exactly once with its digest; nothing else is there."""
    rows = ledger_rows(dept_file)
    verified = [r for r in rows if r["state"] == "verified"]
    refs = [r["target_ref"] for r in verified]
    assert len(refs) == len(set(refs)), "two items share one target file"
    on_server = {f"{u.login}/{path}": sha(data) for u in people for path, data in server.tree(u).items()}
    expected = {r["target_ref"].split("/remote.php/dav/files/", 1)[1]: r["target_digest"] for r in verified}
    assert expected == on_server
    return rows


def unfinished(dept_file: Path) -> list[tuple]:
    """(location, state, reason, message) of every item not verified."""
    return [(r["location"], r["state"], r["reason"], r["message"]) for r in ledger_rows(dept_file)
            if r["state"] != "verified"]


def test_a_department_migrates_into_nextcloud_twice_without_duplicates(nextcloud_server, accounts, proxy, tmp_path):
    from flows.migrate import migrate_body as migrate
    nc = nextcloud_server
    anna, ben = accounts("anna", "ben")
    dept_file = nextcloud_department(tmp_path, proxy.url, {"anna": anna, "ben": ben})
    home = tmp_path / "home"
    (home / "anna" / "Notiz: wichtig?.txt").write_text("nicht vergessen\n", encoding="utf-8")
    (home / "ben" / "Scan.pdf").write_bytes(os.urandom(6 * MiB))          # goes up in chunks
    os.utime(home / "ben" / "Scan.pdf", (1_650_000_000, 1_650_000_000))
    # throttling and overload on the way, at most once per file or folder and kind of request (a
    # load step lists the folder, makes it and puts the file: at most two faults, so that the
    # flow's four attempts of a step always suffice, whatever order the threads go in; chunked
    # uploads under faults are the business of the test above): retried with the server's (zero) wait
    proxy.faults = [Fault(status=503, retry_after="0", every=3, once_per_path=True, path_contains="/files/",
                          methods=("PUT",)),
                    Fault(status=429, retry_after="0", every=4, once_per_path=True, path_contains="/files/",
                          methods=("PROPFIND", "MKCOL", "GET"))]
    summary = migrate(str(dept_file))
    rows = assert_server_matches_ledger(dept_file, nc, [anna, ben])
    sources = [p for p in home.rglob("*") if p.is_file()]
    assert len(rows) == len(sources) and not unfinished(dept_file)
    assert summary["totals"] == {"verified": len(rows)}
    assert all(f.hits for f in proxy.faults)
    held = nc.tree(anna)
    assert "Ablage/doc000.odt" in held and "Ablage/doc001.ods" in held and "Ablage/doc002.odp" in held
    note = next(r for r in rows if r["location"] == "Notiz: wichtig?.txt")
    # the mapping is visible in the reference
    assert note["target_ref"].endswith(f"/remote.php/dav/files/{anna.login}/Notiz%3A wichtig%3F.txt")
    assert stat(nc, ben, "Scan.pdf")["mtime"] == 1_650_000_000
    assert proxy.seen("MOVE", f"/uploads/{ben.login}/")
    written = writes(proxy)
    assert set(written.values()) == {1}

    again = migrate(str(dept_file))                                        # the delta pass: nothing to do
    assert again["this_run"] == {}
    assert writes(proxy) == written                                        # nothing sent again
    assert_server_matches_ledger(dept_file, nc, [anna, ben])


def test_a_full_account_waits_and_the_next_run_completes_it(nextcloud_server, accounts, tmp_path):
    from flows.migrate import migrate_body as migrate
    nc = nextcloud_server
    anna, ben = accounts("anna", "ben")
    dept_file = nextcloud_department(tmp_path, nc.url, {"anna": anna, "ben": ben}, conversion=False)
    nc.set_quota(ben.login, "10 KB")                                       # ben's documents do not fit
    summary = migrate(str(dept_file))
    assert list(summary["stopped_users"]) == ["ben"]
    assert f"no room left for {ben.login}'s files" in summary["stopped_users"]["ben"]
    rows = ledger_rows(dept_file)
    assert not [r for r in rows if r["state"] == "failed"]                 # nothing blamed on an item
    assert any(r["owner"] == "ben" and r["state"] != "verified" for r in rows)
    assert all(r["state"] == "verified" for r in rows if r["owner"] == "anna")   # anna went on
    report = Path(summary["report"]).read_text(encoding="utf-8")
    assert "Users who wait" in report and f"no room left for {ben.login}" in report

    nc.set_quota(ben.login, "none")                                        # the administrator raises it
    migrate(str(dept_file))
    rows = assert_server_matches_ledger(dept_file, nc, [anna, ben])
    assert all(r["state"] == "verified" for r in rows)
