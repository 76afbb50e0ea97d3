"""The settings of the S3 archive of originals (sinks/s3.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config import S3Bucket

__all__ = ["S3ArchiveTarget"]


class S3ArchiveTarget(S3Bucket):
    """An S3 bucket that receives every converted document's Office original, for the record."""

    type: Literal["s3"] = "s3"
    prefix: str = Field(default="", description="key prefix; keys are `<prefix>/<department>/<user>/<path>`")
    multipart_threshold: int = Field(default=64 * 1024 * 1024, ge=5 * 1024 * 1024,
                                     description="files of this size (bytes) and larger go up in parts")
    part_size: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024 * 1024 * 1024,
                           description="bytes per part of a multipart upload (S3: 5 MiB to 5 GiB)")
