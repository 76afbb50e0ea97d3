"""The settings of the local directory target (sinks/localdir.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from core.config import Model

__all__ = ["LocalDirTarget"]


class LocalDirTarget(Model):
    """A local directory tree laid out per user: `<root>/<target login>/<path>`."""

    type: Literal["localdir"] = "localdir"
    root: Path
