"""The settings of a folder source (sources/fileshare.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from core.config import SOURCE_NAME, TARGET_FOLDER, Model

__all__ = ["FolderSource"]


class FolderSource(Model):
    """A folder tree on this machine (or a mounted share) with one sub-folder per user."""

    type: Literal["folder"] = "folder"
    name: str = SOURCE_NAME
    root: Path
    target_folder: str = TARGET_FOLDER
