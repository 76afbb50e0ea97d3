"""The settings of the WebDAV targets, Nextcloud and OX Drive (sinks/webdav.py), and of the WebDAV
account every DAV target has.

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.config import MiB, Model, SecretRef, url_host
from core.retry import RetryPolicy

__all__ = ["WebDavTarget", "NextcloudTarget", "OXDriveTarget"]


class WebDavTarget(Model):
    """What every WebDAV target needs: where it is, who logs in, how long to wait, which TLS."""

    def host_name(self) -> str:
        return url_host(self.url)

    url: str = Field(pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
                     description="the server's address (no user, no query)")
    username: str | None = Field(default=None, min_length=1,
                                 description="a service account that writes every user's files")
    password: SecretRef | None = Field(default=None, description="the service account's (app) password")
    app_passwords: dict[str, SecretRef] = Field(
        default_factory=dict,
        description="target login -> that user's app password (files go to the user's own account)")
    folder: str | None = Field(
        default=None,
        description="where each user's files land below the account's root; `{user}` is the target login "
                    "(default: `{user}` for the service account, the account's root otherwise)")
    timeout: float = Field(default=60, gt=0, description="seconds to wait for the server before retrying")
    verify_tls: bool = True
    ca_file: Path | None = Field(default=None, description="a CA bundle (PEM) to trust instead of the system's")
    retry: RetryPolicy | None = Field(default=None, description="how often and how long a busy server is asked "
                                                                "again; unset fields keep the system's defaults "
                                                                "(core/retry.py)")

    @field_validator("folder")
    @classmethod
    def _plain_folder(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or any(p in (".", "..") for p in value.split("/"))):
            raise ValueError("must be a relative path without '.' or '..'")
        return value

    @model_validator(mode="after")
    def _credentials(self):
        problems = []
        if (self.username is None) != (self.password is None):
            problems.append("username and password go together (a service account and its app password)")
        elif self.username is None and not self.app_passwords:
            problems.append("needs credentials: username and password (a service account), "
                            "or app_passwords (one per target user)")
        if self.username is not None and self.folder is not None and "{user}" not in self.folder:
            problems.append("with a service account, folder must contain {user}: "
                            "otherwise every user's files would land in one folder")
        if self.ca_file is not None and not self.verify_tls:
            problems.append("ca_file and verify_tls: false contradict each other")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def root(self) -> str:
        """What names this target in concurrency tags (`target:<root>`) and messages."""
        return self.url.rstrip("/")


class NextcloudTarget(WebDavTarget):
    """Nextcloud files over WebDAV: `<url>/remote.php/dav/files/<account>/<folder>/<path>`."""

    type: Literal["nextcloud"] = "nextcloud"
    chunk_threshold: int = Field(default=64 * MiB, ge=0,
                                 description="files of this size (bytes) and larger go up in chunks")
    chunk_size: int = Field(default=64 * MiB, ge=5 * MiB, le=5 * 1024 * MiB,
                            description="bytes per chunk (Nextcloud: 5 MiB to 5 GiB)")

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if "/remote.php" in value:
            raise ValueError("is the Nextcloud's address without /remote.php/… (e.g. https://cloud.example.org)")
        return value


class OXDriveTarget(WebDavTarget):
    """OX Drive (Open-Xchange) over WebDAV: `<url>/<folder>/<path>`, plain PUTs."""

    type: Literal["oxdrive"] = "oxdrive"
