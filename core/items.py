"""The item model: every thing that moves is an item (a message, an event, a contact, a file)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Kind", "ItemRef"]


class Kind(StrEnum):
    """What kind of thing an item is."""

    MESSAGE = "message"
    EVENT = "event"
    CONTACT = "contact"
    FILE = "file"


@dataclass(frozen=True)
class ItemRef:
    """What a source lists: small, serialisable, never the bytes themselves."""

    source: str          # configured source name
    key: str             # stable id at the source (EWS item id, drive item id, share path)
    kind: Kind
    owner: str           # source identity (mailbox, user)
    location: str        # folder / calendar / path at the source, for mapping and reports
    version: str         # change key, ETag or mtime+size: what makes a delta a delta
    size: int | None = None
    #: what the target needs beside the bytes, JSON-serialisable: a message's flags and internal
    #: date, its special-use folder and Message-ID; a file's owner and permissions for sharing
    meta: dict | None = None
