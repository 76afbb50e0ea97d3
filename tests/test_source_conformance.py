"""Every source kind against its test server, through the Source interface the flows use: one suite.

What every source must do, asked the same way of each (as rclone's fstests ask it of every remote):

- listing: every item once, under a key that stays the same from one listing to the next, with a
  version; the bytes extracted are the bytes the system holds;
- deltas: an item that changed gets a new version under the same key, an unchanged one keeps its
  version;
- deletions: an item deleted at the source is gone from the next listing;
- unreadable entries: an item the source cannot read is listed and fails alone with a typed
  ItemError, the others are read;
- hostile names: names that are not UTF-8, very long, or reserved on Windows, where the system
  allows them, are listed and read like any other;
- bounded memory: extracting a large item streams it (Python's peak allocation while it is read
  stays under a quarter of its size: behaviour, not speed).

Each kind has a rig: its server (real where one runs here, a protocol-level test server for
Microsoft's), a fresh account or folder per test, and the system's own ways to add, change, delete
or spoil an item. Where a kind cannot have a capability, CASES says why and the test is skipped
with that reason; where it can but umstieg does not meet it yet, CASES says what goes wrong and
the test runs as a strict expected failure. A source the registry knows without an entry here
fails (`test_every_registered_source_has_a_conformance_entry`).

What is particular to one system (ACLs, throttling, delta links, folder mapping, …) stays in its
own test file.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.errors import ItemError
from core.items import ItemRef
from helpers import message

MiB = 1 << 20


# ------------------------------------------------------------------------------------------ the table
CAPABILITIES = ("listing", "deltas", "deletions", "unreadable", "hostile_names", "bounded_memory")


@dataclass(frozen=True)
class Case:
    """One source kind: its rig (fixture name) and, per capability it cannot have, the reason."""

    kind: str
    rig: str
    without: dict[str, str] = field(default_factory=dict)
    #: capabilities the system has and umstieg does not meet yet: run, expected to fail (strict,
    #: so that the fix turns them into failures to remove from here), with what goes wrong
    gaps: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("folder", "folder_rig"),
    Case("smb", "smb_rig"),
    Case("s3", "s3_rig"),
    Case("onedrive", "onedrive_rig"),
    Case("sharepoint", "sharepoint_rig"),
    Case("m365", "m365_rig"),
    Case("ews", "ews_rig", without={
        "bounded_memory": "EWS has no download of an item's bytes: GetItem sends its MIME base64-encoded "
                          "inside one SOAP answer, which a SOAP client (exchangelib) parses whole",
    }),
    Case("imap", "imap_rig"),
    Case("export", "export_rig"),
]
BY_KIND = {c.kind: c for c in CASES}


def test_every_registered_source_has_a_conformance_entry():
    """A source added to the registry (core/plugins.py) without a row above fails here, loudly."""
    import core.plugins as plugins
    if not hasattr(plugins, "registered"):
        pytest.skip("core.plugins has no registry (`registered`) yet: CASES is the list of sources until it has")
    kinds = [s.type for s in plugins.registered("source")]
    assert kinds, "the registry lists no source"
    missing = sorted(set(kinds) - set(BY_KIND))
    assert not missing, f"sources without a conformance entry in {Path(__file__).name}: {missing}"
    assert not set(BY_KIND) - set(kinds), "an entry here for a source the registry does not know"


def test_the_table_names_only_capabilities_the_suite_asks():
    for case in CASES:
        assert set(case.without) | set(case.gaps) <= set(CAPABILITIES), case.kind
        assert not set(case.without) & set(case.gaps), case.kind


def cases(capability: str):
    """One parameter per source kind (the capability names the test in a reader's eye only)."""
    assert capability in CAPABILITIES
    return [pytest.param(c, id=c.kind) for c in CASES]


@pytest.fixture
def rig(request):
    """The rig of the parametrised case, or a skip with the table's reason for this capability."""
    case: Case = request.node.callspec.params["case"]
    capability = request.node.originalname.removeprefix("test_")
    if capability in case.without:
        pytest.skip(f"{case.kind} has no {capability}: {case.without[capability]}")
    if capability in case.gaps:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{case.kind}: {case.gaps[capability]}"))
    return request.getfixturevalue(case.rig)


# ----------------------------------------------------------------------------------- what rigs offer
class Rig:
    """One kind's test server and one test's own account or folder on it. Items are added under a
    label (a path for file sources, a folder for mail sources); what the source lists is matched to
    them by the bytes extracted."""

    #: labels of five ordinary items
    NAMES: list = []
    #: labels the system allows that are hostile to a migration (not UTF-8, long, reserved)
    HOSTILE: list = []
    #: the size of the large item of the bounded-memory test
    LARGE = 48 * MiB
    owner = "anna"
    folder = "anna"

    source: object

    def payload(self, n: int) -> bytes:
        """The bytes of item n: distinct for every n, valid for the system."""
        return f"Inhalt {n} {uuid.uuid4().hex} Grüße\n".encode() * (n % 3 + 1)

    def add(self, name, data: bytes) -> None:
        raise NotImplementedError

    def add_large(self, name, size: int) -> str:
        """Add an item of `size` bytes (written without holding it in this process where the
        server allows); its sha256."""
        data = os.urandom(size)
        self.add(name, data)
        return hashlib.sha256(data).hexdigest()

    def change(self, name) -> None:
        """The change this system knows for an item (new bytes for files, new flags for mail)."""
        raise NotImplementedError

    def remove(self, name) -> None:
        raise NotImplementedError

    def spoil(self, name) -> None:
        """Make the item unreadable for the source (it stays listed)."""
        raise NotImplementedError

    def location(self, name) -> str | None:
        """The location the source must list `name` under, where labels are locations."""
        return None


def listing(rig: Rig) -> list[ItemRef]:
    """What the source lists, checked to be storable: the ledger keeps keys, locations and meta as
    UTF-8 text, so a name that is not UTF-8 must be spelt losslessly in it, never as surrogates."""
    refs = list(rig.source.discover(rig.owner, rig.folder))
    for ref in refs:
        for what, text in (("key", ref.key), ("location", ref.location), ("version", ref.version or "")):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise AssertionError(f"the {what} {text!r} cannot be stored as UTF-8 text") from None
    return refs


def extract(rig: Rig, ref: ItemRef, dst: Path) -> bytes:
    """The flows' way of extracting: a source that compares with the listing gets the item's meta."""
    listed = {"listed": ref.meta or {}} if getattr(rig.source, "compares_with_listing", False) else {}
    size, _ = rig.source.extract(rig.folder, ref.location, dst, key=ref.key, **listed)
    data = dst.read_bytes()
    assert size == len(data), (ref.location, size, len(data))
    return data


def contents(rig: Rig, refs: list[ItemRef], tmp_path: Path) -> dict[str, bytes]:
    """key -> extracted bytes, for every ref."""
    out = {}
    for i, ref in enumerate(refs):
        out[ref.key] = extract(rig, ref, tmp_path / "x" / f"{i}.bin")
    return out


def fill(rig: Rig, names: list) -> dict:
    """Add one item per label; label -> its bytes."""
    made = {}
    for n, name in enumerate(names):
        made[name] = rig.payload(n)
        rig.add(name, made[name])
    return made


def keys_by_name(rig: Rig, made: dict, refs: list[ItemRef], tmp_path: Path) -> dict:
    """label -> key of the listed item holding its bytes (every label exactly once)."""
    got = contents(rig, refs, tmp_path)
    by_bytes: dict[bytes, list[str]] = {}
    for key, data in got.items():
        by_bytes.setdefault(data, []).append(key)
    out = {}
    for name, data in made.items():
        keys = by_bytes.get(data, [])
        assert len(keys) == 1, f"{name!r} listed {len(keys)} times"
        out[name] = keys[0]
    return out


# ----------------------------------------------------------------------------------------- the suite
@pytest.mark.parametrize("case", cases("listing"))
def test_listing(case, rig, tmp_path):
    """Every item once under a stable key with a version; what is extracted is what was stored."""
    made = fill(rig, rig.NAMES)
    refs = listing(rig)
    assert len(refs) == len(made), sorted(r.location for r in refs)
    assert len({r.key for r in refs}) == len(refs), "two items share a key"
    assert all(r.version for r in refs), [r for r in refs if not r.version]
    keys = keys_by_name(rig, made, refs, tmp_path)
    for name, key in keys.items():
        expected = rig.location(name)
        if expected is not None:
            assert next(r for r in refs if r.key == key).location == expected
    again = listing(rig)
    assert {r.key: r.version for r in again} == {r.key: r.version for r in refs}


@pytest.mark.parametrize("case", cases("deltas"))
def test_deltas(case, rig, tmp_path):
    """A changed item gets a new version under its key; the others keep theirs."""
    made = fill(rig, rig.NAMES[:3])
    first = listing(rig)
    keys = keys_by_name(rig, made, first, tmp_path / "1")
    rig.change(rig.NAMES[0])
    second = {r.key: r.version for r in listing(rig)}
    before = {r.key: r.version for r in first}
    assert set(second) == set(before)
    changed = keys[rig.NAMES[0]]
    assert second[changed] != before[changed]
    assert {k: v for k, v in second.items() if k != changed} == {k: v for k, v in before.items() if k != changed}


@pytest.mark.parametrize("case", cases("deletions"))
def test_deletions(case, rig, tmp_path):
    """An item deleted at the source is gone from the next listing; the others stay."""
    made = fill(rig, rig.NAMES[:3])
    keys = keys_by_name(rig, made, listing(rig), tmp_path)
    rig.remove(rig.NAMES[1])
    after = {r.key for r in listing(rig)}
    assert after == {keys[rig.NAMES[0]], keys[rig.NAMES[2]]}


@pytest.mark.parametrize("case", cases("unreadable"))
def test_unreadable(case, rig, tmp_path):
    """An item the source may not read is listed and fails alone, typed; the others are read."""
    made = fill(rig, rig.NAMES[:3])
    rig.spoil(rig.NAMES[1])
    refs = listing(rig)
    assert len(refs) == 3, sorted(r.location for r in refs)
    read, failed = [], []
    for i, ref in enumerate(refs):
        try:
            read.append(extract(rig, ref, tmp_path / f"{i}.bin"))
        except ItemError as exc:
            assert str(exc), "an ItemError without a message"
            failed.append(ref)
    assert len(failed) == 1, [r.location for r in failed]
    assert sorted(read) == sorted([made[rig.NAMES[0]], made[rig.NAMES[2]]])


@pytest.mark.parametrize("case", cases("hostile_names"))
def test_hostile_names(case, rig, tmp_path):
    """Names hostile to a migration, where the system allows them, are listed and read like any."""
    assert rig.HOSTILE, "a rig with hostile names must name them"
    made = fill(rig, rig.HOSTILE)
    refs = listing(rig)
    assert len(refs) == len(made), sorted(r.location for r in refs)
    keys = keys_by_name(rig, made, refs, tmp_path)
    for name, key in keys.items():
        expected = rig.location(name)
        if expected is not None:
            assert next(r for r in refs if r.key == key).location == expected


@pytest.mark.parametrize("case", cases("bounded_memory"))
def test_bounded_memory(case, rig, tmp_path):
    """A large item streams: Python's peak allocation while extracting it stays under a quarter
    of its size."""
    rig.add(rig.NAMES[0], rig.payload(0))
    digest = rig.add_large(rig.NAMES[1], rig.LARGE)
    refs = listing(rig)
    small = next(r for r in refs if r.size is None or r.size < MiB)
    large = next(r for r in refs if r.key != small.key)
    extract(rig, small, tmp_path / "warm.bin")                # connections made outside the measurement
    dst = tmp_path / "large.bin"
    listed = {"listed": large.meta or {}} if getattr(rig.source, "compares_with_listing", False) else {}
    tracemalloc.start()
    try:
        size, _ = rig.source.extract(rig.folder, large.location, dst, key=large.key, **listed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == rig.LARGE == dst.stat().st_size
    h = hashlib.sha256()
    with open(dst, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    assert h.hexdigest() == digest
    assert peak < rig.LARGE / 4, f"extract held {peak / MiB:.1f} MiB for a {rig.LARGE // MiB} MiB item"


# ================================================================================== the rigs
def large_message(size: int):
    """A message of exactly `size` bytes (CRLF text lines), a MiB at a time."""
    head = message(424242)
    yield head
    line = b"Zeile " + b"x" * 68 + b"\r\n"
    lines = line * (MiB // len(line) + 1)
    left = size - len(head)
    while left > 0:
        block = lines[:min(MiB, left)]
        yield block
        left -= len(block)


FILE_NAMES = ["Bericht.docx", "Ablage 2026/Plan.odt", "leer.txt", "Ablage 2026/Bürgeramt/tief/Grüße an Jürgen.txt",
              "Projekte/Umzug/Liste.csv"]


class FileRig(Rig):
    """A source of files whose labels are their paths below the user's folder."""

    NAMES = FILE_NAMES

    def location(self, name) -> str | None:
        return name if isinstance(name, str) else None

    def payload(self, n: int) -> bytes:
        return b"" if n == 2 else super().payload(n)


# ------------------------------------------------------------------------------------- folder
class LocalFiles(FileRig):
    """Files in a folder of this machine: `root/<owner>/…` (folder and export sources)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / self.folder).mkdir(parents=True, exist_ok=True)

    def path(self, name) -> bytes:
        raw = name if isinstance(name, bytes) else name.encode()
        return os.fsencode(self.root / self.folder) + b"/" + raw

    def add(self, name, data: bytes) -> None:
        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    #: what `change` appends to a file
    APPENDED = b" und mehr\n"

    def blocks(self, size: int):
        """The large item's bytes, a MiB at a time."""
        return (os.urandom(MiB) for _ in range(size // MiB))

    def add_large(self, name, size: int) -> str:
        path, h = self.path(name), hashlib.sha256()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            for block in self.blocks(size):
                h.update(block)
                f.write(block)
        return h.hexdigest()

    def change(self, name) -> None:
        path = self.path(name)
        with open(path, "ab") as f:
            f.write(self.APPENDED)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))     # a coarse clock must see it too

    def remove(self, name) -> None:
        os.unlink(self.path(name))


class FolderRig(LocalFiles):
    # root runs these tests, and root reads a file whatever its mode: a FIFO is what a folder
    # holds that no one can read as a file
    HOSTILE = [b"latin1-\xe4.txt", b"cp1252-\x80-\x9f.txt", "x" * 251 + ".txt", "CON", "aux.txt", "Frage?.txt",
               "a:b*c.txt", "Punkt am Ende.", "Leerzeichen am Ende ", "-rf $(reboot).txt", "Mu\u0308ller.txt",
               "Zeile\numbruch.txt"]

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        from core.department import FolderSource
        self.source = make_source(FolderSource(name="homes", root=root))

    def location(self, name) -> str | None:
        # a name that is not UTF-8 is listed under its lossless escaped form (core.localtree)
        return name if isinstance(name, str) else None

    def spoil(self, name) -> None:
        path = self.path(name)
        os.unlink(path)
        os.mkfifo(path)


@pytest.fixture
def folder_rig(tmp_path):
    return FolderRig(tmp_path / "homes")


# ---------------------------------------------------------------------------------------- export
class ExportRig(LocalFiles):
    """Export files (.eml here): each file one message, read byte for byte."""

    NAMES = ["Posteingang/a.eml", "Gesendete Elemente/b.eml", "c.eml", "Projekte/Umbau/d.eml", "e.eml"]
    HOSTILE = [b"latin1-\xe4.eml", "x" * 251 + ".eml", "CON.eml", "Frage?.eml", "a:b*c.eml",
               "Mu\u0308ller.eml", "Ordner mit Punkt./f.eml"]
    LARGE = 32 * MiB

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        from core.department import ExportSource
        self.source = make_source(ExportSource(name="exp", root=root))

    def location(self, name) -> str | None:
        return None                            # an export file's items are located by the file and message

    def payload(self, n: int) -> bytes:
        return message(n * 1000 + int(uuid.uuid4().int % 997), size=300 * (n % 3))

    APPENDED = b"Nachtrag\r\n"

    def blocks(self, size: int):
        return large_message(size)

    def spoil(self, name) -> None:
        # a broken export file: an Outlook .msg that is not a compound file
        path = self.path(name)
        os.unlink(path)
        with open(path[:-4] + b".msg", "wb") as f:
            f.write(b"\xd0\xcf\x11\xe0 truncated ole file")


@pytest.fixture
def export_rig(tmp_path):
    return ExportRig(tmp_path / "exports")


# ------------------------------------------------------------------------------------------- smb
SMB_PASSWORD = "smb-test-pw-3Fq"


@pytest.fixture(scope="module")
def samba():
    from servers.samba import SambaServer, smbd_missing
    reason = smbd_missing()
    if reason:
        pytest.skip(f"Samba test server unavailable: {reason}")
    with SambaServer(password=SMB_PASSWORD) as server:
        yield server


class SmbRig(FileRig):
    """A real Samba; the user's folder is new for every test. The share is read as `nobody`, so
    that `chmod 000` keeps the service account out as NTFS permissions would."""

    # Samba hands names out as UTF-16 from its UTF-8 disk: a name on the server's disk that is not
    # UTF-8 is shown to no SMB client at all, so no SMB source can list it (measured: Samba 4
    # leaves it out of the listing). Names Windows could not hold (CON, aux, a trailing dot) it
    # shows under their 8.3 mangled names (CSHOFG~F.TXT), which is all a client can see of them.
    HOSTILE = ["x" * 251 + ".txt", "CON.txt", "aux", "Mu\u0308ller.txt", "Punkt am Ende.", "-rf $(reboot).txt",
               "100% sicher.txt", "Frage #1 & {Klammern}.txt"]
    MANGLED = {"CON.txt", "aux", "Punkt am Ende."}

    def __init__(self, server, monkeypatch) -> None:
        from core.department import SmbSource
        monkeypatch.setenv("SMB_TEST_PW", SMB_PASSWORD)
        self.server = server
        self.folder = f"u{uuid.uuid4().hex[:8]}"
        self.local = LocalFiles(server.root)
        self.local.folder = self.folder
        (server.root / self.folder).mkdir()
        self.source = make_source(SmbSource(name="homes", server="127.0.0.1", port=server.port, share=server.share,
                                            username=server.username, password="env:SMB_TEST_PW", timeout=10,
                                            read_acl=False))

    def location(self, name) -> str | None:
        return None if name in self.MANGLED else name

    def _readable(self) -> None:
        self.server.make_readable()

    def add(self, name, data: bytes) -> None:
        self.local.add(name, data)
        self._readable()

    def add_large(self, name, size: int) -> str:
        digest = self.local.add_large(name, size)
        self._readable()
        return digest

    def change(self, name) -> None:
        self.local.change(name)

    def remove(self, name) -> None:
        self.local.remove(name)

    def spoil(self, name) -> None:
        os.chmod(self.local.path(name), 0)


@pytest.fixture
def smb_rig(samba, monkeypatch):
    return SmbRig(samba, monkeypatch)


# -------------------------------------------------------------------------------------------- s3
S3_KEY_ID, S3_SECRET = "AKIAUMSTIEGTEST00001", "s3-test-secret-Zr8wQ"


@pytest.fixture(scope="module")
def moto():
    from servers.s3 import MotoS3
    with MotoS3() as server:
        yield server


class S3Rig(FileRig):
    """moto's S3 server; a bucket of its own for every test, users below a prefix."""

    # object keys are UTF-8 by definition (no other bytes); up to 1024 bytes long
    HOSTILE = ["x" * 251 + ".txt", "CON.txt", "Frage?.txt", "a:b*c.txt", "Mu\u0308ller.txt", "Punkt am Ende.",
               "100%25 kodiert.txt", "Plus+Zeichen &amp; Co.txt", "tief/" * 40 + "unten.txt"]

    def __init__(self, server, monkeypatch) -> None:
        import boto3
        from core.department import S3Source
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("S3_KEY_ID", S3_KEY_ID)
        monkeypatch.setenv("S3_SECRET", S3_SECRET)
        self.bucket = f"b{uuid.uuid4().hex[:12]}"
        self.s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                               aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)
        self.s3.create_bucket(Bucket=self.bucket)
        self.source = make_source(S3Source(name="export", bucket=self.bucket, prefix="share/homes",
                                           endpoint_url=server.url, access_key_id="env:S3_KEY_ID",
                                           secret_access_key="env:S3_SECRET", timeout=10))

    def key(self, name: str) -> str:
        return f"share/homes/{self.folder}/{name}"

    def add(self, name, data: bytes, **extra) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, **extra)

    def add_large(self, name, size: int) -> str:
        import tempfile
        h = hashlib.sha256()
        with tempfile.TemporaryFile() as f:
            for _ in range(size // MiB):
                block = os.urandom(MiB)
                h.update(block)
                f.write(block)
            f.seek(0)
            self.s3.upload_fileobj(f, self.bucket, self.key(name))
        return h.hexdigest()

    def change(self, name) -> None:
        # other bytes of the same length: the version must follow the object, not its size
        body = self.s3.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
        self.add(name, bytes(255 - b for b in body))

    def remove(self, name) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.key(name))

    def spoil(self, name) -> None:
        # an object in an archive storage class: listed, but not readable until restored
        body = self.s3.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
        self.add(name, body, StorageClass="GLACIER")


@pytest.fixture
def s3_rig(moto, monkeypatch):
    return S3Rig(moto, monkeypatch)


# ------------------------------------------------------------------------------- Graph: drives, mail
GRAPH_SECRET = "graph-conformance-secret-Jk4"


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from servers.graph import GraphTestServer
    with GraphTestServer(tmp_path_factory.mktemp("graph"), client_secret=GRAPH_SECRET, page_size=3) as server:
        yield server


def graph_fields(server) -> dict:
    return {"tenant_id": server.tenant, "client_id": server.client_id, "client_secret": "env:GRAPH_TEST_SECRET",
            "authority": server.authority, "graph_url": server.graph_url, "ca_file": server.ca_file, "timeout": 10}


class DriveRig(FileRig):
    """A OneDrive (or a SharePoint library's folder) on the Graph test server."""

    # OneDrive refuses names reserved on Windows (CON, aux, names ending in a dot, ", *, :, <, >,
    # ?, /, \, |): those cannot exist there. What it allows and a migration must survive:
    HOSTILE = ["x" * 251 + ".txt", "Mu\u0308ller.txt", "100% sicher.txt", "#Nummer 1.txt", "Plus+und&Co.txt",
               "tief/" * 40 + "unten.txt", "ünïcödé ☃.txt", "~$Bericht.docx"]

    def __init__(self, server, monkeypatch) -> None:
        monkeypatch.setenv("GRAPH_TEST_SECRET", GRAPH_SECRET)
        self.server = server
        self.items: dict = {}

    def path(self, name: str) -> str:
        return name

    def add(self, name, data: bytes) -> None:
        self.items[name] = self.server.put_file(self.drive, self.path(name), data)

    def change(self, name) -> None:
        data = self.drive.content[self.items[name]["id"]]
        self.items[name] = self.server.put_file(self.drive, self.path(name), data + b" und mehr\n")

    def remove(self, name) -> None:
        self.server.delete(self.drive, self.items[name]["id"])

    def spoil(self, name) -> None:
        self.server.denied.add(f"/items/{self.items[name]['id']}/content")


class OneDriveRig(DriveRig):
    def __init__(self, server, monkeypatch) -> None:
        super().__init__(server, monkeypatch)
        from core.department import OneDriveSource
        self.owner = self.folder = f"u{uuid.uuid4().hex[:8]}@contoso.example"
        self.drive = server.add_user(self.owner)
        self.source = make_source(OneDriveSource(name="od", **graph_fields(server)))


class SharePointRig(DriveRig):
    def __init__(self, server, monkeypatch) -> None:
        super().__init__(server, monkeypatch)
        from core.department import SharePointSource
        site = f"contoso.sharepoint.com:/sites/s{uuid.uuid4().hex[:8]}"
        self.drive = server.add_site(site, "Dokumente")
        self.owner, self.folder = "anna@contoso.example", "anna"
        self.source = make_source(SharePointSource(name="sp", site=site, library="Dokumente", path="Personal",
                                                   **graph_fields(server)))

    def path(self, name: str) -> str:
        return f"Personal/{self.folder}/{name}"


@pytest.fixture
def onedrive_rig(graph, monkeypatch):
    return OneDriveRig(graph, monkeypatch)


@pytest.fixture
def sharepoint_rig(graph, monkeypatch):
    return SharePointRig(graph, monkeypatch)


# ---------------------------------------------------------------------------------- mail sources
MAIL_FOLDERS = ["INBOX", "Projekte", "Projekte/Umbau", "Ablage 2025", "Kunden"]


class MailRig(Rig):
    """A mailbox; a label is the folder a message goes to (one message per label here)."""

    NAMES = MAIL_FOLDERS
    LARGE = 24 * MiB

    #: how the source spells a "/" inside one folder's name in the folder's path (whose own
    #: separator is "/"); sources/m365.py and sources/imap.py write %2F, sources/ews.py "_"
    SLASH = "%2F"

    def location(self, name) -> str | None:
        """A message is located by its folder's path."""
        return name if name in MAIL_FOLDERS else name.replace("/", self.SLASH)

    def payload(self, n: int) -> bytes:
        return message(n * 1000 + int(uuid.uuid4().int % 997), size=400 * (n % 3))

    def add_large(self, name, size: int) -> str:
        data = b"".join(large_message(size))
        self.add(name, data)
        return hashlib.sha256(data).hexdigest()


class M365Rig(MailRig):
    """A Microsoft 365 mailbox on the Graph test server (mail only: events and contacts are
    converted, not extracted byte for byte; test_m365.py tests them)."""

    # Exchange allows any character in a folder's display name, "/" included
    HOSTILE = ["Kunden A/B", "Ünïcödé & Söhne", "x" * 250, "100% sicher", "Punkt am Ende.", "Inbox"]

    def __init__(self, server, monkeypatch) -> None:
        from core.department import M365Source
        monkeypatch.setenv("GRAPH_TEST_SECRET", GRAPH_SECRET)
        self.server = server
        self.owner = self.folder = f"u{uuid.uuid4().hex[:8]}@contoso.example"
        self.box = server.add_mailbox(self.owner)
        self.folders = {"INBOX": self.box.well_known["inbox"]}
        self.items: dict = {}
        self.source = make_source(M365Source(name="exo", calendars=False, contacts=False, **graph_fields(server)))

    def _folder(self, name: str) -> str:
        if name not in self.folders:
            parent, _, leaf = name.rpartition("/")
            if parent in self.folders or parent in MAIL_FOLDERS:
                self.folders[name] = self.server.add_mail_folder(self.box, leaf, self._folder(parent))["id"]
            else:
                self.folders[name] = self.server.add_mail_folder(self.box, name)["id"]
        return self.folders[name]

    def add(self, name, data: bytes) -> None:
        self.items[name] = self.server.put_message(self.box, self._folder(name), data)

    def change(self, name) -> None:
        from servers.graph import new_id
        msg = self.items[name]
        self.items[name] = self.box.messages[self._folder(name)].put(
            {**msg, "isRead": True, "changeKey": new_id("ck"), "@odata.etag": f'W/"{new_id("ck")}"'})

    def remove(self, name) -> None:
        self.box.messages[self._folder(name)].remove(self.items[name]["id"])

    def spoil(self, name) -> None:
        self.server.denied.add(f"/messages/{self.items[name]['id']}/$value")


@pytest.fixture
def m365_rig(graph, monkeypatch):
    return M365Rig(graph, monkeypatch)


EWS_PASSWORD = "Pa55-w0rd-EWS-conformance"


@pytest.fixture(scope="module")
def ews_server():
    from servers.ews import EwsTestServer
    with EwsTestServer(users={"svc": EWS_PASSWORD}, impersonation={"svc": set()}) as server:
        yield server


class EwsRig(MailRig):
    """An Exchange mailbox on the EWS test server, read through exchangelib (mail only here:
    test_ews.py tests events and contacts)."""

    HOSTILE = ["Kunden A/B", "Ünïcödé & Söhne", "x" * 250, "100% sicher", "Punkt am Ende.", "Posteingang"]
    SLASH = "_"

    def __init__(self, server, monkeypatch) -> None:
        from exchangelib.protocol import Protocol
        from core.department import EwsSource
        Protocol.clear_cache()                   # exchangelib keeps one per endpoint and credentials
        monkeypatch.setenv("EWS_TEST_PASSWORD", EWS_PASSWORD)
        self.server = server
        self.folder = f"u{uuid.uuid4().hex[:8]}@example.org"
        server.impersonation["svc"].add(self.folder)
        self.mailbox = server.mailbox(self.folder)
        self.folders = {"INBOX": "inbox"}
        self.items: dict = {}
        self.source = make_source(EwsSource(name="exchange", url=server.url, username="svc",
                                            password="env:EWS_TEST_PASSWORD", auth="basic",
                                            calendars=False, contacts=False))

    def _folder(self, name: str) -> str:
        if name not in self.folders:
            parent, _, leaf = name.rpartition("/")
            if parent in self.folders:
                self.folders[name] = self.mailbox.add_folder(leaf, parent=self._folder(parent))
            else:
                self.folders[name] = self.mailbox.add_folder(name)
        return self.folders[name]

    def add(self, name, data: bytes) -> None:
        self.items[name] = self.mailbox.add_message(data, folder=self._folder(name))

    def change(self, name) -> None:
        self.mailbox.update(self.items[name], is_read=True, flagged=True)

    def remove(self, name) -> None:
        self.mailbox.delete(self.items[name])

    def spoil(self, name) -> None:
        self.server.corrupt.add(self.items[name])


@pytest.fixture
def ews_rig(ews_server, monkeypatch):
    from exchangelib.protocol import Protocol
    yield EwsRig(ews_server, monkeypatch)
    Protocol.clear_cache()


IMAP_MASTER = ("migrator", "master-secret-conformance-7Rt")


@pytest.fixture(scope="module")
def dovecot():
    from servers.dovecot import Dovecot
    server = Dovecot(users={"seed": "seed-pw-1"}, master=IMAP_MASTER).start()
    try:
        yield server
    finally:
        server.cleanup()


class ImapRig(MailRig):
    """A Dovecot mailbox, new for every test, read as the master user."""

    # IMAP folder names are modified UTF-7 on the wire ("&" escapes): names that test it
    # (Dovecot's maildir refuses a "." in a folder name: such a folder cannot exist there)
    HOSTILE = ["Ünïcödé & Söhne", "&-Zeichen", "x" * 200, "100% sicher", "Kunden [alt]", "Gesendete Elemente"]

    def __init__(self, server, monkeypatch) -> None:
        from core.department import ImapSource
        monkeypatch.setenv("IMAP_CONFORMANCE_MASTER", IMAP_MASTER[1])
        self.server = server
        self.owner = self.folder = f"u{uuid.uuid4().hex[:8]}"
        server.add_user(self.owner, f"pw-{uuid.uuid4().hex[:8]}")
        self.messages: dict = {}
        self.source = make_source(ImapSource(name="imap", host=server.host, port=server.port, security="none",
                                             master_user=IMAP_MASTER[0], password="env:IMAP_CONFORMANCE_MASTER",
                                             timeout=10))

    def _conn(self):
        from imapclient import IMAPClient
        c = IMAPClient(self.server.host, self.server.port, ssl=False)
        c.login(self.owner, self.server.users[self.owner])
        return c

    def add(self, name, data: bytes) -> None:
        with self._conn() as c:
            if name != "INBOX" and not c.folder_exists(name):
                c.create_folder(name)
            c.append(name, data)
        self.messages[name] = data

    def _uid(self, c, name):
        c.select_folder(name)
        [uid] = c.search("ALL")
        return uid

    def change(self, name) -> None:
        with self._conn() as c:
            c.add_flags([self._uid(c, name)], [b"\\Seen", b"\\Flagged"])

    def remove(self, name) -> None:
        with self._conn() as c:
            c.delete_messages([self._uid(c, name)])
            c.expunge()

    def spoil(self, name) -> None:
        # the message's maildir file unreadable for Dovecot (which runs as nobody), as a damaged file is
        maildir = self.server.base / "mail" / self.owner / "Maildir"
        folder = maildir if name == "INBOX" else maildir / ("." + name.replace("/", "."))
        files = [f for sub in ("cur", "new") for f in (folder / sub).iterdir()]
        assert len(files) == 1, files
        os.chmod(files[0], 0)


@pytest.fixture
def imap_rig(dovecot, monkeypatch):
    return ImapRig(dovecot, monkeypatch)


# ------------------------------------------------------------------------------------ making sources
#: Where each kind's factory is while the registry (core.plugins.system_of) is not there.
_FACTORIES = {"folder": "sources.fileshare:FolderShare", "smb": "sources.smb:source_for", "s3": "sources.s3:source_for",
              "onedrive": "sources.onedrive:source_for", "sharepoint": "sources.onedrive:source_for",
              "m365": "sources.m365:source_for", "ews": "sources.ews:source_for", "imap": "sources.imap:source_for",
              "export": "sources.export:source_for"}


def make_source(config):
    """The source for `config` as a department run makes it: through the registry when there is one."""
    import importlib
    try:
        from core.plugins import system_of
    except ImportError:
        module, _, attribute = _FACTORIES[config.type].partition(":")
        return getattr(importlib.import_module(module), attribute)(config)
    return system_of(config).make(config)
