"""The shapes every source and every target (sink) module offers to the flows.

flows/systems.py picks the module for a configured `type` (`source_of`, `target_of`) and the flows use only
these methods, so a new system is a new module plus a config model, nothing else.

Items of every kind take the same road: a source lists ItemRefs and streams one item's bytes
into a local file (a file's bytes, a message's MIME, an event as iCalendar, a contact as vCard);
a sink writes that file for a target user and later proves that it holds it. What travels beside
the bytes (flags, internal date, permissions) is the ItemRef's `meta`, kept in the ledger.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from core.items import ItemRef

__all__ = ["Source", "Sink", "Account", "ChecksUsers", "PerProcess"]

T = TypeVar("T")


class Source(Protocol):
    """Where items come from. Raises ItemError for one item, TransientError to be retried."""

    name: str

    def check(self, folders: list[str]) -> list[str]:
        """Problems that must stop the department before anything moves (all of them)."""

    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every item of one user, with a version that changes when the item changes.

        `owner` is the user's source login, `folder` their folder under the source's root (for
        mailbox sources, the mailbox to open: usually the login itself)."""

    def extract(self, folder: str, location: str, dst: Path, key: str | None = None) -> tuple[int, float | None]:
        """Stream one item's bytes into the local file `dst`; returns (size, mtime or None).

        `location` is the ItemRef's location and `key` its key (mailbox sources need the key)."""


class Sink(Protocol):
    """Where items land. Writes are create-only and atomic; reruns never duplicate."""

    def check(self, owners: list[str]) -> list[str]:
        """Problems that must stop the department before anything moves (all of them)."""

    def digest(self, src: Path) -> str:
        """What `find` and `verify` compare: sha256 of the bytes for files and mail; for events and
        contacts, a digest of the fields a server must keep (servers rewrite the text)."""

    def find(self, owner: str, rel: str, digest: str, meta: dict | None = None) -> str | None:
        """The reference of `owner`/`rel` if it already holds exactly this content."""

    def put(self, owner: str, rel: str, src: Path, mtime: float | None = None, meta: dict | None = None) -> str:
        """Write the local file `src` as `owner`/`rel`; returns the target reference."""

    def verify(self, ref: str, digest: str) -> str | None:
        """None when the target holds exactly this content, else what is wrong."""

    def remove(self, ref: str) -> None:
        """Delete an item at the target (only for delete_at_target)."""


@dataclass(frozen=True)
class Account:
    """What a system says about one user's account, mailbox, drive or folder there.

    `exists` is None when it could not tell (the server out of reach, not allowed to look): that
    concerns everyone and the department check says so, so no user is blamed for it. `email` and
    `display_name` are what the system itself holds, where it tells them, to be compared with the
    other side's; `why` says why an account does not exist or cannot be opened (never a secret)."""

    exists: bool | None
    email: str | None = None
    display_name: str | None = None
    why: str | None = None


@runtime_checkable
class ChecksUsers(Protocol):
    """An optional ability of a source or a sink: say, before anything moves, whether each user's
    account exists there and what it is called (the identity check of flows/identity.py)."""

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """Each name's Account (sources: the user's folder, drive or mailbox there; sinks: the
        target login). Batched: one connection for thousands of users."""


class PerProcess(Generic[T]):
    """A module's `source_for` / `sink_for`: one instance per configuration and process, made on
    first use and shared by every thread (chunk) of the process, so that they share one connection
    pool and one cache. Keyed by the process id as well: a forked worker makes its own. With
    `close`, that method of every instance is called when the process exits."""

    def __init__(self, make: Callable[[Any], T], close: str | None = None,
                 key: Callable[[Any], str] = lambda config: config.model_dump_json()) -> None:
        self._make, self._close, self._key = make, close, key
        self._made: dict[tuple[int, str], T] = {}
        self._lock = threading.Lock()
        if close is not None:
            atexit.register(self.close_all)

    def __call__(self, config) -> T:
        key = (os.getpid(), self._key(config))
        with self._lock:
            made = self._made.get(key)
            if made is None:
                made = self._made[key] = self._make(config)
            return made

    def close_all(self) -> None:
        with self._lock:
            made, self._made = list(self._made.values()), {}
        for instance in made:
            getattr(instance, self._close)()
