"""The settings of the OneDrive and SharePoint sources (sources/onedrive.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config import READ_PERMISSIONS, SOURCE_NAME, TARGET_FOLDER
from sources.graph_config import GraphApp

__all__ = ["OneDriveSource", "SharePointSource"]


class OneDriveSource(GraphApp):
    """Each user's OneDrive (the user's source login is their UPN at Microsoft 365)."""

    type: Literal["onedrive"] = "onedrive"
    name: str = SOURCE_NAME
    target_folder: str = TARGET_FOLDER
    path: str = Field(default="", description="a folder in each drive to migrate (default: the whole drive)")
    read_permissions: bool = READ_PERMISSIONS


class SharePointSource(GraphApp):
    """A SharePoint document library with one folder per user (or a shared folder per group)."""

    type: Literal["sharepoint"] = "sharepoint"
    name: str = SOURCE_NAME
    target_folder: str = TARGET_FOLDER
    site: str = Field(min_length=1, description="`host:/sites/name` or a site id")
    library: str = Field(default="Documents", description="the document library's name")
    path: str = Field(default="", description="folder in the library that holds one folder per user")
    read_permissions: bool = READ_PERMISSIONS
