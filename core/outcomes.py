"""Typed outcomes of work done on one item."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Outcome"]


class Outcome(StrEnum):
    """What became of one document handed to the converter.

    Every document gets exactly one outcome; none of them is an exception.
    """

    CONVERTED = "converted"      # an ODF copy was written
    PASSTHROUGH = "passthrough"  # already valid ODF: copied unchanged
    ENCRYPTED = "encrypted"      # password, encryption or IRM protection: needs its owner
    UNREADABLE = "unreadable"    # empty, truncated, corrupt or not what its name claims
    UNSUPPORTED = "unsupported"  # not an Office format umstieg converts
    TIMEOUT = "timeout"          # LibreOffice did not finish in time, twice
    CRASHED = "crashed"          # LibreOffice died on it, twice
    TOO_LARGE = "too_large"      # LibreOffice grew beyond the memory limit converting it
    UNWRITABLE = "unwritable"    # the output could not be written (the document is not at fault)
    CHANGED = "changed_at_source"  # swapped for a link or another file after it was listed: not read
    SKIPPED = "skipped"          # not a file with data (a link, a pipe, a socket, a device): not read

    @property
    def ok(self) -> bool:
        """True when the document now exists as ODF at the output."""
        return self in (Outcome.CONVERTED, Outcome.PASSTHROUGH)

    @property
    def failed(self) -> bool:
        """True when the document needs attention (a rerun or a person)."""
        return not self.ok and self not in (Outcome.UNSUPPORTED, Outcome.SKIPPED)
