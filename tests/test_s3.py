"""The S3 source (sources/s3.py) and the S3 archive (sinks/s3.py) against moto's S3 server on
loopback, with a small proxy in front of it to inject 5xx answers.

What every source must do (versions that follow an overwrite of the same size, deletions, hostile
keys, a large object read in bounded memory) is asked in test_source_conformance.py; this file
keeps what is S3's own (paging, errors, the archive sink)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import boto3
import pytest

from core.department import S3ArchiveTarget, S3Source
from core.errors import FatalError, ItemError, TransientError
from servers.s3 import FaultProxy, MotoS3
from sinks.s3 import S3Archive, sink_for
from sources.s3 import S3Bucket, source_for

MiB = 1024 * 1024
KEY_ID, SECRET = "AKIAUMSTIEGTEST00001", "s3-test-secret-Zr8wQ"


@pytest.fixture(scope="module")
def moto():
    with MotoS3() as server:
        yield server


@pytest.fixture(autouse=True)
def _secrets(monkeypatch):
    monkeypatch.setenv("S3_KEY_ID", KEY_ID)
    monkeypatch.setenv("S3_SECRET", SECRET)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3(moto):
    moto.reset()
    return boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)


def source_cfg(url: str, **overrides) -> S3Source:
    return S3Source(**{"name": "export", "bucket": "export", "prefix": "share/homes", "endpoint_url": url,
                       "access_key_id": "env:S3_KEY_ID", "secret_access_key": "env:S3_SECRET", "timeout": 5,
                       **overrides})


def archive_cfg(url: str, **overrides) -> S3ArchiveTarget:
    return S3ArchiveTarget(**{"bucket": "archive", "prefix": "originals", "endpoint_url": url,
                              "access_key_id": "env:S3_KEY_ID", "secret_access_key": "env:S3_SECRET",
                              "timeout": 5, "multipart_threshold": 5 * MiB, "part_size": 5 * MiB, **overrides})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fill(s3, files: dict[str, bytes]) -> None:
    s3.create_bucket(Bucket="export")
    for key, data in files.items():
        s3.put_object(Bucket="export", Key=f"share/homes/{key}", Body=data)


FILES = {
    "anna/Grüße an Jürgen.txt": "Grüße\n".encode(),
    "anna/leer.txt": b"",
    "anna/Ablage 2026/Bürgeramt/tief/tiefer/Protokoll v2.odt": os.urandom(7_000),
    "anna/Ablage 2026/Bericht Q1.docx": os.urandom(30_000),
    "ben/notiz.txt": b"Ben\n",
}


# ------------------------------------------------------------------------------------- source
def test_listing_pages_and_extract_equal_the_objects(moto, s3, tmp_path):
    many = {f"anna/viele/{i:03d}.txt": f"Datei {i}\n".encode() for i in range(23)}
    _fill(s3, {**FILES, **many, "anna/Ordner/": b""})                     # and a "folder" marker
    source = S3Bucket(source_cfg(moto.url, page_size=5))
    calls = []
    source.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: calls.append(1))
    refs = list(source.discover("anna", "anna"))
    expected = {k.removeprefix("anna/"): v for k, v in {**FILES, **many}.items() if k.startswith("anna/")}
    assert [r.location for r in refs] == sorted(expected, key=lambda s: s.encode())   # key order, no marker
    assert len(calls) == -(-len(expected) // 5)                               # really paged, 5 keys a page
    for ref in refs:
        data = expected[ref.location]
        assert ref.key == f"anna/{ref.location}" and ref.size == len(data) and ref.owner == "anna"
        etag = hashlib.md5(data).hexdigest()
        assert ref.version == f"{etag}:{len(data)}"
        size, mtime = source.extract("anna", ref.location, tmp_path / ref.location)
        assert size == len(data) and (tmp_path / ref.location).read_bytes() == data
        assert mtime == pytest.approx(ref.meta["mtime"], abs=1)


def test_a_vanished_object_is_an_item_error(moto, s3, tmp_path):
    _fill(s3, FILES)
    with pytest.raises(ItemError, match="vanished"):
        S3Bucket(source_cfg(moto.url)).extract("anna", "gibt es nicht.txt", tmp_path / "x")
    with pytest.raises(ItemError, match="cannot be a file path"):
        S3Bucket(source_cfg(moto.url)).extract("anna", "a/../b", tmp_path / "x")


def test_check_names_every_problem(moto, s3):
    _fill(s3, FILES)
    assert S3Bucket(source_cfg(moto.url)).check(["anna", "ben"]) == []
    empty = S3Bucket(source_cfg(moto.url)).check(["anna", "carla", "dora"])
    assert len(empty) == 2 and all("holds no objects" in p for p in empty)
    missing = S3Bucket(source_cfg(moto.url, bucket="gibtsnicht")).check(["anna"])
    assert missing == ["source export: the bucket 'gibtsnicht' does not exist"]
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = S3Bucket(source_cfg(f"http://127.0.0.1:{port}", timeout=2)).check(["anna"])
    assert len(down) == 1 and "cannot reach" in down[0]
    assert not any(SECRET in p or KEY_ID in p for p in empty + missing + down)


def test_server_errors_are_transient(moto, s3, tmp_path):
    _fill(s3, FILES)
    with FaultProxy(moto.port) as proxy:
        source = S3Bucket(source_cfg(proxy.url))
        assert source.extract("ben", "notiz.txt", tmp_path / "ok")[0] == 4
        proxy.fail(3, status=503, method="GET", retry_after="7")      # more than botocore's own retries
        with pytest.raises(TransientError) as info:
            source.extract("ben", "notiz.txt", tmp_path / "x")
        assert info.value.retry_after == 7
        proxy.fail(3, status=500)
        with pytest.raises(TransientError):
            list(source.discover("anna", "anna"))
        proxy.fail(1, status=503, method="GET")                        # once: botocore's retry gets through
        assert source.extract("ben", "notiz.txt", tmp_path / "y")[0] == 4
        assert [s for _, _, s in proxy.seen].count(503) == 4


def test_source_for_caches_one_instance_per_config(moto):
    assert source_for(source_cfg(moto.url)) is source_for(source_cfg(moto.url))
    assert source_for(source_cfg(moto.url)) is not source_for(source_cfg(moto.url, prefix="other"))


# ------------------------------------------------------------------------------------- archive
def test_archive_put_find_verify(moto, s3, tmp_path):
    s3.create_bucket(Bucket="archive")
    archive = S3Archive(archive_cfg(moto.url))
    assert archive.check(["anna"]) == []
    src = tmp_path / "Bericht.docx"
    src.write_bytes(os.urandom(20_000))
    digest = archive.digest(src)
    rel = "testamt/anna/Ablage/Bericht.docx"
    assert archive.find("anna", rel, digest) is None
    ref = archive.put("anna", rel, src, mtime=1767225600.5)
    assert ref == "s3://archive/originals/testamt/anna/Ablage/Bericht.docx"
    head = s3.head_object(Bucket="archive", Key="originals/" + rel)
    assert head["Metadata"]["sha256"] == digest and head["ContentLength"] == 20_000
    assert s3.get_object(Bucket="archive", Key="originals/" + rel)["Body"].read() == src.read_bytes()
    assert archive.find("anna", rel, digest) == ref                     # a rerun finds it
    assert archive.put("anna", rel, src) == ref                         # and a second put writes nothing new
    assert archive.verify(ref, digest) is None
    assert "differs" in archive.verify(ref, "0" * 64)
    # the original changed at the source: the archived one stays, the new one goes beside it
    src.write_bytes(b"changed original")
    new_digest = archive.digest(src)
    assert archive.find("anna", rel, new_digest) is None
    new_ref = archive.put("anna", rel, src)
    assert new_ref == f"{ref}~{new_digest[:16]}"
    assert archive.verify(ref, digest) is None and archive.verify(new_ref, new_digest) is None
    assert archive.find("anna", rel, new_digest) == new_ref
    # somebody replaced the archived bytes behind our back (metadata kept): the size gives it away
    s3.put_object(Bucket="archive", Key="originals/" + rel, Body=b"short", Metadata=head["Metadata"])
    assert "bytes in the archive" in archive.verify(ref, digest)
    archive.remove(new_ref)
    assert "missing" in archive.verify(new_ref, new_digest)
    with pytest.raises(ItemError):
        archive.put("anna", "../escape.docx", src)


def test_archive_multipart_upload_with_bounded_memory(moto, s3, tmp_path):
    s3.create_bucket(Bucket="archive")
    archive = S3Archive(archive_cfg(moto.url))
    src = tmp_path / "gross.pptx"
    with open(src, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(MiB))
    digest = archive.digest(src)
    archive.check(["anna"])                                             # client made outside the measurement
    tracemalloc.start()
    try:
        ref = archive.put("anna", "testamt/anna/gross.pptx", src)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    head = s3.head_object(Bucket="archive", Key="originals/testamt/anna/gross.pptx")
    assert head["ETag"].strip('"').endswith("-5")                       # 24 MiB in parts of 5 MiB
    assert archive.verify(ref, digest) is None
    assert peak < 40 * MiB, f"put held {peak / MiB:.1f} MiB for a 24 MiB file"


def test_archive_check_and_errors(moto, s3, tmp_path):
    missing = S3Archive(archive_cfg(moto.url, bucket="gibtsnicht")).check(["anna"])
    assert len(missing) == 1 and "does not exist" in missing[0]
    s3.create_bucket(Bucket="archive")
    src = tmp_path / "a.docx"
    src.write_bytes(b"a")
    with FaultProxy(moto.port) as proxy:
        archive = S3Archive(archive_cfg(proxy.url))
        proxy.fail(3, status=503, method="PUT")
        with pytest.raises(TransientError):
            archive.put("anna", "testamt/anna/a.docx", src)
        ref = archive.put("anna", "testamt/anna/a.docx", src)            # the retry goes through
        assert archive.verify(ref, hashlib.sha256(b"a").hexdigest()) is None
        # a server without conditional writes answers 501 to If-None-Match: the archive writes plainly
        proxy.fail(1, status=501, method="PUT")
        src.write_bytes(b"b")
        ref_b = archive.put("anna", "testamt/anna/b.docx", src)
        assert archive.verify(ref_b, hashlib.sha256(b"b").hexdigest()) is None and not archive._conditional
    with pytest.raises(FatalError):
        S3Archive(archive_cfg(moto.url, bucket="gibtsnicht")).put("anna", "testamt/anna/a.docx", src)


def test_sink_for_caches_one_instance_per_config(moto):
    assert sink_for(archive_cfg(moto.url)) is sink_for(archive_cfg(moto.url))
