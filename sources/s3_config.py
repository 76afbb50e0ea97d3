"""The settings of an S3 bucket source (sources/s3.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config import SOURCE_NAME, TARGET_FOLDER, S3Bucket

__all__ = ["S3Source"]


class S3Source(S3Bucket):
    """An S3 bucket (or prefix) holding an exported share: `<prefix>/<user folder>/...`."""

    type: Literal["s3"] = "s3"
    name: str = SOURCE_NAME
    target_folder: str = TARGET_FOLDER
    prefix: str = Field(default="", description="key prefix that holds one folder per user")
    page_size: int = Field(default=1000, ge=1, le=1000, description="keys asked for per listing request")
