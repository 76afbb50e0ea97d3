"""An S3 bucket (AWS or an S3-compatible server) holding exported files: `<prefix>/<user folder>/...`.

One item per object, listed page by page (`page_size` keys per request), in key order. An item's
version is the object's ETag and size (`"<etag>:<size>"`): overwriting an object changes it, even
with the same size. Its modification time is the object's LastModified. Bytes are streamed into
the staging file in 1 MiB blocks, so a large object needs no more memory than a small one.
"Folder" marker objects (keys ending in `/`) are not items.

Failures are decided here: no answer, a dropped connection, 5xx answers and throttling (SlowDown,
503) → `TransientError`, with the server's Retry-After when it sends one; an object that vanished
or that the credentials may not read → `ItemError`; the bucket gone or the credentials refused
mid-run → `FatalError`. Credentials come from SecretRefs (or, when none are configured, from the
usual AWS chain: environment, profile, instance role) and appear in no message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import botocore.exceptions

from core.plugins import Account, PerProcess, ProbeMemo
from sources.s3_config import S3Source
from clients.s3 import NETWORK_ERRORS, REFUSED_CODES, TRANSIENT_CODES, make_client, retry_after_of, spent, status_of
from core.errors import FatalError, ItemError, TransientError
from core.items import ItemRef, Kind

__all__ = ["S3Bucket", "source_for", "BLOCK"]

log = logging.getLogger("umstieg.sources.s3")

#: Bytes read from the response and written to the staging file at a time.
BLOCK = 1 << 20
def _clean_prefix(prefix: str) -> str:
    return "/".join(p for p in prefix.split("/") if p)


class S3Bucket(ProbeMemo):
    """An S3 source: `s3://<bucket>/<prefix>/<user folder>/...`, one item per object."""

    def __init__(self, config: S3Source, *, client=None) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._client = client

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def client(self):
        """The boto3 client (thread-safe), made on first use."""
        with self._lock:
            if self._client is None:
                self._client = make_client(self.config)
            return self._client

    def _base(self, folder: str) -> str:
        """The key prefix of one user's folder, with its trailing `/`."""
        return "/".join(p for p in (_clean_prefix(self.config.prefix), folder) if p) + "/"

    def _where(self, key: str = "") -> str:
        return f"s3://{self.config.bucket}/{key}"

    def _translate(self, exc: BaseException, what: str) -> Exception:
        """The taxonomy's error for a failure of `what` (an object or a listing)."""
        if isinstance(exc, botocore.exceptions.ClientError):
            code, status = status_of(exc)
            if code in TRANSIENT_CODES or status >= 500 or status == 429:
                return spent(TransientError(f"{what}: the S3 server is busy or failing ({status} {code})",
                                            retry_after=retry_after_of(exc)), self.config)
            if code == "NoSuchBucket":
                return FatalError(f"source {self.name}: the bucket {self.config.bucket!r} does not exist (any more)")
            if code in REFUSED_CODES:
                return FatalError(f"source {self.name}: the S3 server refused the credentials ({code})")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return ItemError(f"{what} vanished at the source")
            if code == "AccessDenied" or status == 403:
                return ItemError(f"cannot read {what} at the source: access denied")
            return ItemError(f"cannot read {what} at the source ({status} {code})")
        if isinstance(exc, NETWORK_ERRORS):
            return spent(TransientError(f"{what}: the connection to the S3 server failed or timed out "
                                        f"({type(exc).__name__})"), self.config)
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return FatalError(f"source {self.name}: no S3 credentials (set access_key_id and secret_access_key)")
        return ItemError(f"cannot read {what} at the source ({type(exc).__name__})")

    # ------------------------------------------------------------------------------ check
    def check(self, folders: list[str]) -> list[str]:
        """Bucket missing, access denied, unreachable server, user folders without objects: all at once."""
        bucket = self.config.bucket
        try:
            self.client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            code, status = status_of(exc)
            if status == 404 or code in ("NoSuchBucket", "404"):
                return [f"source {self.name}: the bucket {bucket!r} does not exist"]
            if status == 403 or code in REFUSED_CODES:
                return [f"source {self.name}: access to the bucket {bucket!r} was denied ({status}): "
                        "check the access key and the bucket's policy"]
            return [f"source {self.name}: the bucket {bucket!r} cannot be read ({status} {code})"]
        except botocore.exceptions.NoCredentialsError:
            return [f"source {self.name}: no S3 credentials: set access_key_id and secret_access_key"]
        except NETWORK_ERRORS as exc:
            return [f"source {self.name}: cannot reach the S3 server {self.config.endpoint_url or 'of AWS'} "
                    f"({type(exc).__name__}): is endpoint_url right and the server up?"]
        problems = []
        for folder in folders:
            base = self._base(folder)
            try:
                page = self._first_key(base)
            except (botocore.exceptions.ClientError, *NETWORK_ERRORS) as exc:
                problems.append(f"source {self.name}: cannot list {self._where(base)} ({self._translate(exc, base)})")
                continue
            if not page.get("KeyCount") and not page.get("Contents"):
                problems.append(f"source {self.name}: user folder {self._where(base)} holds no objects")
        return problems

    def _first_key(self, base: str) -> dict:
        """A listing of one key under `base`: `check` and the identity check both ask it, once per
        user while `probing()`."""
        return self._once(("first key", base),
                          lambda: self.client.list_objects_v2(Bucket=self.config.bucket, Prefix=base, MaxKeys=1))

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """Each user's prefix holds at least one object (the identity check; S3 tells no e-mail or
        name). One listing of one key per user. A bucket out of reach, missing or refused concerns
        everyone: nobody is blamed (`check` says so)."""
        found = {}
        for folder in names:
            base = self._base(folder)
            try:
                page = self._first_key(base)
            except (botocore.exceptions.ClientError, botocore.exceptions.NoCredentialsError, *NETWORK_ERRORS):
                return {name: Account(None) for name in names}
            found[folder] = (Account(True) if page.get("KeyCount") or page.get("Contents") else
                             Account(False, why=f"no objects under {self._where(base)}"))
        return found

    # ------------------------------------------------------------------------------ discover
    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every object under the user's prefix, in key order, with ETag+size as its version."""
        base = self._base(folder)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.config.bucket, Prefix=base, PaginationConfig={"PageSize": self.config.page_size})
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    rel = key[len(base):]
                    if not rel or rel.endswith("/"):
                        continue                       # the folder itself, or a "folder" marker
                    etag = obj.get("ETag", "").strip('"')
                    size = int(obj.get("Size", 0))
                    yield ItemRef(source=self.name, key=f"{owner}/{rel}", kind=Kind.FILE, owner=owner, location=rel,
                                  version=f"{etag}:{size}", size=size,
                                  meta={"mtime": obj["LastModified"].timestamp()})
        except (botocore.exceptions.ClientError, botocore.exceptions.NoCredentialsError, *NETWORK_ERRORS) as exc:
            raise self._translate(exc, f"listing {self._where(base)}") from None

    # ------------------------------------------------------------------------------ extract
    def extract(self, folder: str, location: str, dst: Path, key: str | None = None) -> tuple[int, float]:
        """Stream one object into `dst` in 1 MiB blocks; returns (size, LastModified)."""
        parts = PurePosixPath(location).parts
        if not parts or location.startswith("/") or any(p in (".", "..") for p in location.split("/")) \
                or "" in location.split("/"):
            raise ItemError(f"the object name {location!r} cannot be a file path at the target "
                            "(empty, '.' or '..' parts)")
        object_key = self._base(folder) + location
        what = self._where(object_key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        try:
            resp = self.client.get_object(Bucket=self.config.bucket, Key=object_key)
            body = resp["Body"]
            try:
                with open(dst, "wb") as fout:
                    for block in body.iter_chunks(BLOCK):
                        fout.write(block)
                        size += len(block)
            finally:
                body.close()
        except OSError as exc:
            if getattr(exc, "filename", None) == str(dst):
                raise        # our own disk, not the server: the flow decides (a full disk is fatal)
            raise self._translate(exc, what) from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._translate(exc, what) from None
        expected = resp.get("ContentLength")
        if expected is not None and size != expected:
            raise TransientError(f"{what}: the answer ended after {size} of {expected} bytes")
        return size, resp["LastModified"].timestamp()


#: This process's source for a configuration (one client (and pool) for every thread).
source_for = PerProcess(S3Bucket)
