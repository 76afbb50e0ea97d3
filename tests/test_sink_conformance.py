"""One conformance suite for every file target: the same tests run against each sink, against a
real server where there is one — the local folder, the real Nextcloud 27, OX Drive's WebDAV (a real
wsgidav), the S3 archive (moto's S3 server).

The sinks come from the registry (core/plugins.py): every registered file target (the `target`
and `archive` roles) runs the suite, and one registered without an entry here fails it loudly.
What targets do differently is not hidden: each entry of `TARGETS` states it as capabilities
(does a put of other bytes replace the file or keep both, are NFC and NFD spellings one file, are
case twins one file, is the modification time kept, are refused names mapped), and the tests
assert each target's own answer. A new sink joins by adding one `Target` and its `Harness`
(which reads the target behind the sink's back) to `HARNESSES`.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import boto3
import httpx
import pytest
from servers.nextcloud_names import nextcloud_rejects
from servers.s3 import MotoS3
from servers.wsgidav_server import WsgiDavServer

from core import plugins
from core.errors import ItemError
from sinks.localdir import LocalDir
from sinks.localdir_config import LocalDirTarget
from sinks.names import original_path, safe_path
from sinks.s3 import S3Archive
from sinks.s3_config import S3ArchiveTarget
from sinks.webdav import Nextcloud, OXDrive
from sinks.webdav_config import NextcloudTarget, OXDriveTarget

MiB = 1024 * 1024
MTIME = 1_600_000_000


@dataclass(frozen=True)
class Target:
    """A file target and what it promises."""

    name: str
    overwrites: bool          # a put of other bytes at a name replaces the file (else: create-only, both kept)
    collides_nfc: bool        # the NFC and NFD spellings of a name are one file
    case_insensitive: bool    # `Bericht` and `bericht` are one file
    keeps_mtime: bool         # the modification time given to put is what the target shows
    maps_names: bool          # names the target refuses are mapped by sinks.names (reversibly)
    big: int                  # a size that takes several chunks / parts at this target
    refused: tuple[str, ...] = ()   # names of REFUSED_SOMEWHERE the sink cannot store: an ItemError each


TARGETS = [
    Target("localdir", overwrites=True, collides_nfc=False, case_insensitive=False, keeps_mtime=True,
           maps_names=False, big=3 * MiB),
    Target("nextcloud", overwrites=True, collides_nfc=True, case_insensitive=False, keeps_mtime=True,
           maps_names=True, big=11 * MiB),
    Target("oxdrive", overwrites=True, collides_nfc=False, case_insensitive=False, keeps_mtime=False,
           maps_names=True, big=3 * MiB),
    # measured against the S3 test server (moto): a key with a line break is answered 404
    Target("s3", overwrites=False, collides_nfc=False, case_insensitive=False, keeps_mtime=True,
           maps_names=False, big=11 * MiB, refused=("zeile\nzwei.txt",)),
]


#: The roles whose sinks take files (and so this suite).
FILE_ROLES = ("target", "archive")
#: Registered sinks that take other items than files, and the test file that runs them against
#: their test servers (an IMAP server, Radicale, the real Nextcloud's CalDAV/CardDAV).
OTHER_ITEMS = {"imap": "test_imap.py", "caldav": "test_groupware.py", "carddav": "test_groupware.py"}
#: The file sinks this suite runs: every one the registry has, by its `type`.
FILE_SINKS = [s.type for s in plugins.registered(sources=False) if s.role in FILE_ROLES]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ harnesses
class Harness:
    """A sink for one test, its owner, and a way to read (and tamper with) the target directly."""

    sink = None
    owner = "t-anna"

    def held(self) -> dict[str, bytes]:
        """Everything the target holds for the owner: path (as stored) -> bytes."""
        raise NotImplementedError

    def tamper(self, ref: str, data: bytes) -> None:
        """Change the stored bytes behind the sink's back."""
        raise NotImplementedError

    def mtime(self, ref: str) -> float | None:
        raise NotImplementedError

    def refuses(self, name: str) -> bool:
        """Whether the target itself refuses `name`, written as it is."""
        return False


class LocalHarness(Harness):
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "target"
        self.sink = LocalDir(LocalDirTarget(root=self.root))

    def held(self):
        base = self.root / self.owner
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()} \
            if base.exists() else {}

    def tamper(self, ref, data):
        Path(ref).write_bytes(data)

    def mtime(self, ref):
        return Path(ref).stat().st_mtime


class NextcloudHarness(Harness):
    def __init__(self, server, monkeypatch) -> None:
        self.server = server
        self.user = server.new_user("t-conf")
        self.owner = self.user.login
        env = "NCPW_" + re.sub(r"[^A-Za-z0-9]", "_", self.owner).upper()
        monkeypatch.setenv(env, self.user.secret)
        self.sink = Nextcloud(NextcloudTarget(url=server.url, app_passwords={self.owner: f"env:{env}"}, timeout=60,
                                              chunk_threshold=5 * MiB, chunk_size=5 * MiB), sleep=lambda s: None)

    def _path(self, ref):
        return ref.split(f"/remote.php/dav/files/{self.owner}/", 1)[1]

    def held(self):
        return self.server.tree(self.user)

    def tamper(self, ref, data):
        with self.server.dav(self.user) as client:
            client.put(f"/remote.php/dav/files/{self.owner}/{quote(self._path(ref))}", content=data).raise_for_status()

    def mtime(self, ref):
        import email.utils
        with self.server.dav(self.user) as client:
            r = client.request("PROPFIND", f"/remote.php/dav/files/{self.owner}/{quote(self._path(ref))}",
                               headers={"Depth": "0"})
        text = re.search(r"<d:getlastmodified>([^<]+)<", r.text).group(1)
        return email.utils.parsedate_to_datetime(text).timestamp()

    def refuses(self, name):
        with self.server.dav(self.user) as client:
            r = client.put(f"/remote.php/dav/files/{self.owner}/{quote(name, safe='')}", content=b"x")
        return r.status_code >= 400


class OXHarness(Harness):
    def __init__(self, server: WsgiDavServer) -> None:
        self.server = server
        self.folder = f"conf-{uuid.uuid4().hex[:8]}"            # tests share the server, not a folder
        self.sink = OXDrive(OXDriveTarget(url=server.url, app_passwords={"t-anna": "env:OX_PW"},
                                          folder=f"{{user}}/{self.folder}", timeout=30))

    def _base(self):
        return self.server.folder("t-anna") / self.folder

    def held(self):
        base = self._base()
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()} \
            if base.exists() else {}

    def _file(self, ref):
        return self._base() / ref.split(f"/{self.folder}/", 1)[1]

    def tamper(self, ref, data):
        self._file(ref).write_bytes(data)

    def mtime(self, ref):
        return self._file(ref).stat().st_mtime

    def refuses(self, name):
        r = httpx.put(f"{self.server.url}/t-anna/{quote(name, safe='')}", content=b"x", auth=("t-anna", OX_PASSWORD))
        return r.status_code >= 400


class S3Harness(Harness):
    def __init__(self, moto: MotoS3, monkeypatch) -> None:
        monkeypatch.setenv("S3_KEY_ID", "AKIAUMSTIEGTEST00001")
        monkeypatch.setenv("S3_SECRET", "s3-conformance-secret")
        self.bucket = f"conf-{uuid.uuid4().hex[:12]}"
        self.client = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                                   aws_access_key_id="AKIAUMSTIEGTEST00001",
                                   aws_secret_access_key="s3-conformance-secret")
        self.client.create_bucket(Bucket=self.bucket)
        self.sink = S3Archive(S3ArchiveTarget(bucket=self.bucket, endpoint_url=moto.url, timeout=30,
                                              access_key_id="env:S3_KEY_ID", secret_access_key="env:S3_SECRET",
                                              multipart_threshold=5 * MiB, part_size=5 * MiB))

    def held(self):
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = self.client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
        return found

    def _key(self, ref):
        return ref.split(f"s3://{self.bucket}/", 1)[1]

    def tamper(self, ref, data):                 # another client overwrites the object
        self.client.put_object(Bucket=self.bucket, Key=self._key(ref), Body=data)

    def mtime(self, ref):
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(ref))
        return float(head["Metadata"]["mtime"]) if "mtime" in head["Metadata"] else None


OX_PASSWORD = "ox-conformance-pw-3Lq"


@pytest.fixture(scope="module")
def wsgidav(tmp_path_factory):
    with WsgiDavServer(tmp_path_factory.mktemp("oxdrive"), {"t-anna": OX_PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def moto():
    with MotoS3() as server:
        yield server


def _oxdrive(request, tmp_path, monkeypatch) -> Harness:
    monkeypatch.setenv("OX_PW", OX_PASSWORD)
    return OXHarness(request.getfixturevalue("wsgidav"))


#: Each file sink's harness against its test server, by registered `type`.
HARNESSES = {
    "localdir": lambda request, tmp_path, monkeypatch: LocalHarness(tmp_path),
    "nextcloud": lambda request, tmp_path, monkeypatch: NextcloudHarness(request.getfixturevalue("nextcloud_server"),
                                                                         monkeypatch),
    "oxdrive": _oxdrive,
    "s3": lambda request, tmp_path, monkeypatch: S3Harness(request.getfixturevalue("moto"), monkeypatch),
}


def test_every_registered_sink_has_a_test_server():
    """A sink registered without an entry here (or in the test file of its kind of items) fails."""
    sinks = {s.type for s in plugins.registered(sources=False)}
    missing = [t for t in FILE_SINKS if t not in {spec.name for spec in TARGETS} or t not in HARNESSES]
    assert not missing, (f"registered file sinks without a Target and a Harness in this suite: {missing}; "
                         "add them (see docs/writing-a-source-or-sink.md)")
    unknown = sorted(sinks - set(FILE_SINKS) - set(OTHER_ITEMS))
    assert not unknown, f"registered sinks no conformance suite runs: {unknown}"
    assert {spec.name for spec in TARGETS} == set(FILE_SINKS), "a Target for a sink that is not registered"
    assert all((Path(__file__).parent / f).is_file() for f in OTHER_ITEMS.values())


@pytest.fixture(params=FILE_SINKS)
def target(request, tmp_path, monkeypatch) -> tuple[Target, Harness]:
    spec = next((t for t in TARGETS if t.name == request.param), None)
    if spec is None or request.param not in HARNESSES:
        pytest.fail(f"the registered sink {request.param!r} has no Target and Harness in this suite: add them")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    harness = HARNESSES[request.param](request, tmp_path, monkeypatch)
    yield spec, harness
    close = getattr(harness.sink, "close", None)
    if close:
        close()


def put_bytes(h: Harness, tmp_path: Path, rel: str, data: bytes, mtime: float | None = None) -> str:
    src = tmp_path / f"src-{uuid.uuid4().hex[:8]}"
    src.write_bytes(data)
    return h.sink.put(h.owner, rel, src, mtime)


def stored_name(spec: Target, rel: str) -> str:
    return safe_path(rel) if spec.maps_names else rel


# ------------------------------------------------------------------------------ the suite
def test_put_twice_is_one_file_and_find_knows_it(target, tmp_path):
    spec, h = target
    data = b"Haushaltsplan 2026\n" * 50
    assert h.sink.find(h.owner, "Ablage/Plan.txt", sha(data)) is None
    first = put_bytes(h, tmp_path, "Ablage/Plan.txt", data)
    second = put_bytes(h, tmp_path, "Ablage/Plan.txt", data)
    assert first == second
    assert h.held() == {"Ablage/Plan.txt": data}
    assert h.sink.find(h.owner, "Ablage/Plan.txt", sha(data)) == first
    assert h.sink.find(h.owner, "Ablage/Plan.txt", sha(b"other")) is None
    assert h.sink.verify(first, sha(data)) is None


def test_put_writes_the_digest_find_was_asked_with(target, tmp_path):
    """The load step asks `find` with the payload's digest, then hands `put` the same one: the
    copy is found by it afterwards and reads back as those bytes."""
    spec, h = target
    data = b"Bescheid vom 3. Mai\n" * 200
    src = tmp_path / "bescheid.txt"
    src.write_bytes(data)
    digest = h.sink.digest(src)
    assert digest == sha(data)
    assert h.sink.find(h.owner, "Bescheide/Mai.txt", digest) is None
    ref = h.sink.put(h.owner, "Bescheide/Mai.txt", src, MTIME, None, digest=digest)
    assert h.sink.find(h.owner, "Bescheide/Mai.txt", digest) == ref
    assert h.sink.verify(ref, digest) is None
    assert h.held() == {"Bescheide/Mai.txt": data}


def test_other_bytes_at_the_same_name_replace_or_are_kept_beside(target, tmp_path):
    """Targets that overwrite show the new bytes under the name; a create-only target (the S3
    archive) never overwrites: both versions are kept, the new one beside the first."""
    spec, h = target
    old = put_bytes(h, tmp_path, "Akte.txt", b"erste Fassung")
    new = put_bytes(h, tmp_path, "Akte.txt", b"zweite Fassung")
    held = h.held()
    if spec.overwrites:
        assert new == old and held == {"Akte.txt": b"zweite Fassung"}
    else:
        assert new != old and held["Akte.txt"] == b"erste Fassung" and len(held) == 2
        assert b"zweite Fassung" in held.values()
        assert h.sink.verify(old, sha(b"erste Fassung")) is None
    assert h.sink.verify(new, sha(b"zweite Fassung")) is None


def test_nfc_and_nfd_spellings(target, tmp_path):
    """`Müller` written by Windows (NFC) and by a Mac (NFD): one file on Nextcloud (which keeps
    paths NFC), two elsewhere. The flows must decide one name per file before loading."""
    spec, h = target
    nfc, nfd = unicodedata.normalize("NFC", "Müller.txt"), unicodedata.normalize("NFD", "Müller.txt")
    assert nfc != nfd
    put_bytes(h, tmp_path, nfc, b"nfc")
    put_bytes(h, tmp_path, nfd, b"nfd")
    held = h.held()
    if spec.collides_nfc:
        assert held == {nfc: b"nfd"}                              # the second overwrote the first
    else:
        assert held == {nfc: b"nfc", nfd: b"nfd"}


def test_case_twins(target, tmp_path):
    spec, h = target
    put_bytes(h, tmp_path, "Bericht.txt", b"gross")
    put_bytes(h, tmp_path, "bericht.txt", b"klein")
    held = h.held()
    if spec.case_insensitive:
        assert len(held) == 1
    else:
        assert held == {"Bericht.txt": b"gross", "bericht.txt": b"klein"}


REFUSED_SOMEWHERE = ["Protokoll: 3.txt", "a\\b.txt", ".htaccess", "upload.part", "zeile\nzwei.txt", "CON.txt",
                     " Entwurf.", "Frage?.txt", 'Zitat "x".txt', "100% sicher.txt", "50%AB.txt"]


def test_names_the_target_refuses_are_mapped_reversibly(target, tmp_path):
    spec, h = target
    refs = {}
    stored = [n for n in REFUSED_SOMEWHERE if n not in spec.refused]
    for name in spec.refused:
        with pytest.raises(ItemError):
            put_bytes(h, tmp_path, f"Namen/{name}", b"x")
    for i, name in enumerate(stored):
        refs[name] = put_bytes(h, tmp_path, f"Namen/{name}", f"Inhalt {i}".encode())
    held = h.held()
    assert sorted(held) == sorted(stored_name(spec, f"Namen/{n}") for n in stored)
    assert sorted(original_path(p) if spec.maps_names else p for p in held) == sorted(f"Namen/{n}" for n in stored)
    for i, name in enumerate(stored):
        assert h.sink.verify(refs[name], sha(f"Inhalt {i}".encode())) is None
    if spec.maps_names:
        refused = [n for n in REFUSED_SOMEWHERE if h.refuses(n)]
        assert all(not h.refuses(safe_path(n)) for n in refused)      # the mapping lets each one in
        if spec.name == "nextcloud":
            # measured: Nextcloud 27 refuses `\`, control characters, .htaccess and *.part; the
            # stricter model (Nextcloud 30, Windows names) of the property test covers each of them
            assert sorted(refused) == sorted(["a\\b.txt", ".htaccess", "upload.part", "zeile\nzwei.txt"])
            assert all(nextcloud_rejects(n) for n in refused)
    # a path out of the user's folder is refused by every target
    with pytest.raises(ItemError):
        put_bytes(h, tmp_path, "../ausserhalb.txt", b"x")


def test_empty_and_multi_chunk_files(target, tmp_path):
    spec, h = target
    big = os.urandom(spec.big)
    empty_ref = put_bytes(h, tmp_path, "leer.txt", b"")
    big_ref = put_bytes(h, tmp_path, "gross.bin", big)
    assert h.sink.verify(empty_ref, sha(b"")) is None and h.sink.verify(big_ref, sha(big)) is None
    assert h.held() == {"leer.txt": b"", "gross.bin": big}
    assert h.sink.find(h.owner, "gross.bin", sha(big)) == big_ref
    assert h.sink.find(h.owner, "leer.txt", sha(b"")) == empty_ref


def test_the_modification_time_is_kept_where_the_target_keeps_it(target, tmp_path):
    spec, h = target
    ref = put_bytes(h, tmp_path, "alt.txt", b"von 2020", mtime=MTIME + 0.4)
    if spec.keeps_mtime:
        assert int(h.mtime(ref)) == MTIME
    else:
        assert h.mtime(ref) is None or abs(h.mtime(ref) - MTIME) > 86400    # it shows the arrival instead


def test_verify_detects_a_file_changed_at_the_target(target, tmp_path):
    spec, h = target
    data = b"Original " * 100
    ref = put_bytes(h, tmp_path, "Vertrag.txt", data)
    assert h.sink.verify(ref, sha(data)) is None
    h.tamper(ref, b"Falsch!! " * 100)                                      # same size, other bytes
    problem = h.sink.verify(ref, sha(data))
    assert problem and "differs" in problem


def test_remove_and_an_already_gone_remove(target, tmp_path):
    spec, h = target
    ref = put_bytes(h, tmp_path, "Weg/damit.txt", b"weg")
    h.sink.remove(ref)
    assert "missing" in h.sink.verify(ref, sha(b"weg"))
    assert not any(k.endswith("damit.txt") for k in h.held())
    h.sink.remove(ref)                                                     # already gone: fine
