"""The settings of the export-files source (sources/export.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from core.config import SOURCE_NAME, Model

__all__ = ["ExportSource"]


class ExportSource(Model):
    """Export files on this machine, one folder per user: PST/OST, MBOX, EML, MSG, ICS, VCF."""

    type: Literal["export"] = "export"
    name: str = SOURCE_NAME
    root: Path
