"""An S3 bucket as the archive of Office originals: every converted document's source file, kept.

The load step archives a document's original under `<prefix>/<department>/<user>/<path>` (the
`rel` it passes already reads `<department>/<user>/<path>`); the reference is `s3://bucket/key`.

- **Create-only.** An archived original is never overwritten: `find` recognises an object that
  already holds these bytes (its `x-amz-meta-sha256`), and `put` writes only where nothing is
  (`If-None-Match: *` where the server supports it). When the original changed at the source and
  a different object already sits at the key, the new one is kept beside it as
  `<key>~<first 16 hex digits of its sha256>`: the archive keeps both.
- **Checked on the way.** Every upload carries a checksum the server recomputes and refuses on
  mismatch: the whole object's SHA-256 for single uploads, per-part SHA-256 for multipart
  uploads (files from `multipart_threshold`, `part_size` bytes per part, two parts in flight, so
  memory stays bounded whatever the size). The sha256 and size are also stored as metadata.
- **Verify is cheap.** `verify` asks for the object's headers only: the stored sha256, the size
  against the stored size and, for single uploads, the server's own SHA-256 of the bytes.

Failures: no answer, dropped connections, 5xx and throttling → `TransientError`; the bucket gone,
access denied or the credentials refused → `FatalError` (every later item would fail the same
way); a bad name or a local file that cannot be read → `ItemError`. No message carries a secret.
"""

from __future__ import annotations

import base64
import binascii
import threading
from pathlib import Path, PurePosixPath

import boto3
import boto3.s3.transfer
import botocore.exceptions

from core.plugins import PerProcess
from sinks.s3_config import S3ArchiveTarget
from clients.s3 import NETWORK_ERRORS, REFUSED_CODES, TRANSIENT_CODES, make_client, retry_after_of, spent, status_of
from core.digests import sha256_file
from core.errors import FatalError, ItemError, TransientError

__all__ = ["S3Archive", "sink_for"]

_REFUSED_CODES = REFUSED_CODES | {"AccessDenied"}


def _b64(hex_digest: str) -> str:
    return base64.b64encode(binascii.unhexlify(hex_digest)).decode()


class S3Archive:
    """The archive bucket: `s3://<bucket>/<prefix>/<department>/<user>/<path>`, written once."""

    def __init__(self, config: S3ArchiveTarget, *, client=None) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._client = client
        self._conditional = True                  # the server honours If-None-Match on PUT (until it says not)
        self._transfer = boto3.s3.transfer.TransferConfig(
            multipart_threshold=config.multipart_threshold, multipart_chunksize=config.part_size,
            max_concurrency=2, max_io_queue=4, use_threads=True)

    # boto3 and botocore are imported at the top: this module is loaded only when an archive is configured
    @property
    def client(self):
        with self._lock:
            if self._client is None:
                self._client = make_client(self.config)
            return self._client

    def _key(self, rel: str) -> str:
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or any(p in ("", ".", "..") for p in rel.split("/")):
            raise ItemError(f"refusing an archive path outside the archive: {rel!r}")
        prefix = "/".join(p for p in self.config.prefix.split("/") if p)
        return f"{prefix}/{rel}" if prefix else rel

    def _ref(self, key: str) -> str:
        return f"s3://{self.config.bucket}/{key}"

    def _parse_ref(self, ref: str) -> str:
        head = f"s3://{self.config.bucket}/"
        if not ref.startswith(head) or len(ref) == len(head):
            raise ItemError(f"{ref!r} is not a reference into the archive bucket {self.config.bucket!r}")
        return ref[len(head):]

    def _translate(self, exc: BaseException, what: str) -> Exception:
        if isinstance(exc, botocore.exceptions.ClientError):
            code, status = status_of(exc)
            if code in TRANSIENT_CODES or status >= 500 or status == 429:
                return spent(TransientError(f"{what}: the S3 archive is busy or failing ({status} {code})",
                                            retry_after=retry_after_of(exc)), self.config)
            if code == "NoSuchBucket":
                return FatalError(f"the archive bucket {self.config.bucket!r} does not exist (any more)")
            if code in _REFUSED_CODES or status in (401, 403):
                return FatalError(f"the S3 archive refused the credentials or the write ({status} {code}): "
                                  "check the access key and the bucket's policy")
            if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
                return TransientError(f"{what}: the bytes arrived damaged (the server's checksum differs); "
                                      "sending again")
            return ItemError(f"{what}: the S3 archive refused it ({status} {code})")
        if isinstance(exc, NETWORK_ERRORS):
            return spent(TransientError(f"{what}: the connection to the S3 archive failed or timed out "
                                        f"({type(exc).__name__})"), self.config)
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return FatalError("no credentials for the S3 archive (set access_key_id and secret_access_key)")
        return ItemError(f"{what}: {type(exc).__name__}")

    def _call(self, what: str, method: str, **kwargs):
        try:
            return getattr(self.client, method)(Bucket=self.config.bucket, **kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, *NETWORK_ERRORS) as exc:
            raise self._translate(exc, what) from None

    def _head(self, key: str) -> dict | None:
        """The object's headers (with the server's checksum, if it keeps one), None if there is none."""
        try:
            return self.client.head_object(Bucket=self.config.bucket, Key=key, ChecksumMode="ENABLED")
        except botocore.exceptions.ClientError as exc:
            code, status = status_of(exc)
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._translate(exc, self._ref(key)) from None
        except (botocore.exceptions.BotoCoreError, *NETWORK_ERRORS) as exc:
            raise self._translate(exc, self._ref(key)) from None

    # ------------------------------------------------------------------------------ the sink
    def check(self, owners: list[str]) -> list[str]:
        """The bucket missing, access denied, the server unreachable: every problem at once (the
        department check puts `archive: ` before each)."""
        bucket = self.config.bucket
        try:
            self.client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            code, status = status_of(exc)
            if status == 404 or code in ("NoSuchBucket", "404"):
                return [f"the bucket {bucket!r} does not exist (create it, ideally with versioning "
                        "or object lock, before the run)"]
            if status == 403 or code in _REFUSED_CODES:
                return [f"access to the bucket {bucket!r} was denied ({status}): check the access key "
                        "and the bucket's policy (it needs s3:PutObject and s3:GetObject)"]
            return [f"the bucket {bucket!r} cannot be used ({status} {code})"]
        except botocore.exceptions.NoCredentialsError:
            return ["no S3 credentials for the archive: set access_key_id and secret_access_key"]
        except NETWORK_ERRORS as exc:
            return [f"cannot reach the archive's S3 server {self.config.endpoint_url or 'of AWS'} "
                    f"({type(exc).__name__}): is endpoint_url right and the server up?"]
        return []

    def digest(self, src: Path) -> str:
        return sha256_file(src)

    def find(self, owner: str, rel: str, digest: str, meta: dict | None = None) -> str | None:
        """The reference of the archived copy of `rel` if it holds exactly these bytes (sha256)."""
        digest = digest.lower()
        key = self._key(rel)
        for candidate in (key, self._beside(key, digest)):
            head = self._head(candidate)
            if head is not None and head.get("Metadata", {}).get("sha256") == digest:
                return self._ref(candidate)
        return None

    @staticmethod
    def _beside(key: str, digest: str) -> str:
        return f"{key}~{digest[:16]}"

    def put(self, owner: str, rel: str, src: Path, mtime: float | None = None, meta: dict | None = None,
            digest: str | None = None) -> str:
        """Archive the local file `src` as `rel` without overwriting anything; returns `s3://bucket/key`.

        `digest` (the sha256 of `src`, as `find` was asked) is written as the object's `sha256`
        metadata; without it the file is hashed here."""
        key = self._key(rel)
        try:
            size = src.stat().st_size
        except OSError as exc:
            raise ItemError(f"cannot read {src}: {exc.strerror or exc}") from exc
        if digest:
            digest = digest.lower()
        else:
            try:
                digest = sha256_file(src)
            except OSError as exc:
                raise ItemError(f"cannot read {src}: {exc.strerror or exc}") from exc
        existing = self._head(key)
        if existing is not None:
            if existing.get("Metadata", {}).get("sha256") == digest:
                return self._ref(key)
            key = self._beside(key, digest)       # a different original is archived there: keep both
            again = self._head(key)
            if again is not None and again.get("Metadata", {}).get("sha256") == digest:
                return self._ref(key)
        metadata = {"sha256": digest, "size": str(size)}
        if mtime is not None:
            metadata["mtime"] = f"{mtime:.6f}"
        if size < self.config.multipart_threshold:
            self._put_single(key, src, size, digest, metadata)
        else:
            self._put_multipart(key, src, metadata)
        return self._ref(key)

    def _put_single(self, key: str, src: Path, size: int, digest: str, metadata: dict) -> None:
        what = self._ref(key)
        conditional = {"IfNoneMatch": "*"} if self._conditional else {}
        try:
            with open(src, "rb") as body:
                self.client.put_object(Bucket=self.config.bucket, Key=key, Body=body, ContentLength=size,
                                       ChecksumSHA256=_b64(digest), Metadata=metadata, **conditional)
        except OSError as exc:
            if getattr(exc, "filename", None) == str(src):
                raise ItemError(f"cannot read {src}: {exc.strerror or exc}") from exc
            raise self._translate(exc, what) from None
        except botocore.exceptions.ClientError as exc:
            code, status = status_of(exc)
            if conditional and (status == 501 or code == "NotImplemented"):
                # an S3-compatible server without conditional writes: find() just looked, so write plainly
                self._conditional = False
                return self._put_single(key, src, size, digest, metadata)
            if status == 412 or code == "PreconditionFailed":
                # written meanwhile (another worker, an earlier attempt whose answer was lost)
                head = self._head(key)
                if head is not None and head.get("Metadata", {}).get("sha256") == digest:
                    return
                raise ItemError(f"{what}: another object appeared at this key while archiving") from None
            raise self._translate(exc, what) from None
        except (botocore.exceptions.BotoCoreError, *NETWORK_ERRORS) as exc:
            raise self._translate(exc, what) from None

    def _put_multipart(self, key: str, src: Path, metadata: dict) -> None:
        """Parts of `part_size`, each with a SHA-256 the server checks; a failed upload is aborted
        by boto3, so no half-written parts stay behind."""
        what = self._ref(key)
        try:
            self.client.upload_file(str(src), self.config.bucket, key, Config=self._transfer,
                                    ExtraArgs={"Metadata": metadata, "ChecksumAlgorithm": "SHA256"})
        except boto3.exceptions.S3UploadFailedError as exc:
            cause = exc.__cause__ or exc.__context__
            raise (self._translate(cause, what) if cause is not None
                   else TransientError(f"{what}: the upload failed ({exc})")) from None
        except OSError as exc:
            if getattr(exc, "filename", None) == str(src):
                raise ItemError(f"cannot read {src}: {exc.strerror or exc}") from exc
            raise self._translate(exc, what) from None
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, *NETWORK_ERRORS) as exc:
            raise self._translate(exc, what) from None

    def verify(self, ref: str, digest: str) -> str | None:
        """None when the archived object holds these bytes, judged by its headers alone."""
        key = self._parse_ref(ref)
        head = self._head(key)
        if head is None:
            return f"{ref} is missing in the archive"
        stored = head.get("Metadata", {})
        if stored.get("sha256") != digest.lower():
            return f"{ref} differs in the archive (stored sha256 {str(stored.get('sha256'))[:12]}…)"
        if stored.get("size") is not None and str(head.get("ContentLength")) != stored["size"]:
            return f"{ref} has {head.get('ContentLength')} bytes in the archive, {stored['size']} were sent"
        server = head.get("ChecksumSHA256")
        single = "-" not in head.get("ETag", "")      # a multipart object's checksum is one of its parts'
        if single and server and "-" not in server and server != _b64(digest.lower()):
            return f"{ref}: the server's SHA-256 of the stored bytes differs from the original's"
        return None

    def remove(self, ref: str) -> None:
        """Delete an archived object (only for delete_at_target); already gone is fine."""
        key = self._parse_ref(ref)
        self._call(ref, "delete_object", Key=key)


#: This process's sink for a configuration (one client (and connection pool) for every thread).
sink_for = PerProcess(S3Archive)
