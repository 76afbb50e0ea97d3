"""The shapes every source and every target (sink) module offers to the flows.

flows/steps.py picks the module for a configured `type` (`source_of`, `target_of`) and uses only
these methods, so a new system is a new module plus a config model, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from core.items import ItemRef

__all__ = ["Source", "Sink"]


class Source(Protocol):
    """Where items come from. Raises ItemError for one item, TransientError to be retried."""

    name: str

    def check(self, folders: list[str]) -> list[str]:
        """Problems that must stop the department before anything moves (all of them)."""

    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every item of one user, with a version that changes when the item changes."""

    def extract(self, folder: str, location: str, dst: Path) -> tuple[int, float]:
        """Stream one item's bytes into the local file `dst`; returns (size, mtime)."""


class Sink(Protocol):
    """Where items land. Writes are create-only and atomic; reruns never duplicate."""

    def check(self, owners: list[str]) -> list[str]:
        """Problems that must stop the department before anything moves (all of them)."""

    def find(self, owner: str, rel: str, digest: str) -> str | None:
        """The reference of `owner`/`rel` if it already holds exactly these bytes (sha256)."""

    def put(self, owner: str, rel: str, src: Path, mtime: float | None = None) -> str:
        """Write the local file `src` as `owner`/`rel`; returns the target reference."""

    def verify(self, ref: str, digest: str) -> str | None:
        """None when the target holds exactly these bytes, else what is wrong."""

    def remove(self, ref: str) -> None:
        """Delete an item at the target (only for delete_at_target)."""
