"""The settings of a Windows share source (sources/smb.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config import SOURCE_NAME, TARGET_FOLDER, SecretRef, Tls

__all__ = ["SmbSource"]


class SmbSource(Tls):
    """A Windows (SMB 2/3) share read with a service account: `\\\\server\\share\\path\\<user folder>`."""

    type: Literal["smb"] = "smb"
    name: str = SOURCE_NAME
    target_folder: str = TARGET_FOLDER
    server: str = Field(min_length=1, description="host name or address of the file server")
    port: int = Field(default=445, ge=1, le=65535)
    share: str = Field(min_length=1, description="the share's name")
    path: str = Field(default="", description="folder inside the share that holds one folder per user")
    username: str = Field(min_length=1, description="service account (DOMAIN\\user or user@domain)")
    password: SecretRef
    encrypt: bool = Field(default=False, description="require SMB 3 encryption")
    read_acl: bool = Field(default=True, description="read owners and ACL entries for the sharing report")

    def host_name(self) -> str:
        return self.server.lower()
