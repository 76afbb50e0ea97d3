"""Which folders and messages of a mailbox move, and where each folder lands: a department's
`mail:` options (core.department.MailOptions) applied the same way to every mail source.

Folders are chosen by name, shell pattern (`Projekte/*`) or regular expression (`re:^Archiv/20`)
on their location (levels joined by "/"), recursively: a folder taken takes its sub-folders, one
left out leaves them out, and `exclude` wins. Messages are chosen by their internal date (age in
days, as imapsync's --maxage/--minage) and size (--maxsize/--minsize); a message whose date or
size its source does not give is taken (nothing is left out on a guess). A folder's target name is
the `folder_map` entry for it (--f1f2), else the first rename whose pattern it matches
(--regextrans2), else unchanged: a renamed folder lands exactly where the rename says (the special-
folder mapping of sinks.mailfolders is not applied to it), recorded in the item's meta as
`target_folder`.

A source that can narrow its own listing (an IMAP server searches by date and size, and folders
left out are never opened) says so with `narrows_mail = True` and takes `selection=` in
`discover`; every listing is still filtered here, so each source gives the same answer.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from core.department import MailOptions
from core.items import ItemRef, Kind

__all__ = ["MailSelection", "FolderPlan"]


@dataclass(frozen=True)
class FolderPlan:
    """One source folder a mailbox has, for creating it at the target (even when empty)."""

    location: str
    special_use: str | None = None
    subscribed: bool | None = None        # None: the source has no subscriptions to tell


def _ancestors(location: str) -> list[str]:
    levels = [lv for lv in location.split("/") if lv]
    return ["/".join(levels[:k]) for k in range(1, len(levels) + 1)]


def _matches(pattern: str, location: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], location) is not None
    pattern = pattern.strip("/")
    if pattern.upper() == "INBOX" or location.upper() == "INBOX":
        return pattern.upper() == location.upper()
    return fnmatch.fnmatchcase(location, pattern)


class MailSelection:
    """A department's mail options, ready to apply (`now` fixes the moment ages are measured from)."""

    def __init__(self, options: MailOptions | None = None, now: datetime | None = None) -> None:
        self.options = options or MailOptions()
        self.now = now or datetime.now(timezone.utc)
        o = self.options
        #: messages at least this recent / at most this recent (internal date), or None
        self.since = self.now - timedelta(days=o.max_age_days) if o.max_age_days is not None else None
        self.before = self.now - timedelta(days=o.min_age_days) if o.min_age_days else None

    @classmethod
    def of(cls, dept) -> "MailSelection":
        return cls(getattr(dept, "mail", None))

    @property
    def filters_messages(self) -> bool:
        o = self.options
        return any(v is not None for v in (self.since, self.before, o.max_size, o.min_size)) or o.folders_only

    # ------------------------------------------------------------------ folders
    def folder_taken(self, location: str) -> bool:
        """Whether messages of this folder move (include/exclude, each also for sub-folders)."""
        levels = _ancestors(location) or ["INBOX"]
        o = self.options
        if any(_matches(p, lv) for p in o.exclude for lv in levels):
            return False
        return not o.include or any(_matches(p, lv) for p in o.include for lv in levels)

    def target_folder(self, location: str) -> str | None:
        """The folder the department renames this one to (levels joined by "/"), or None."""
        o = self.options
        if location in o.folder_map:
            return o.folder_map[location].strip("/")
        for rule in o.renames:
            if re.search(rule.pattern, location):
                return re.sub(rule.pattern, rule.to, location).strip("/") or None
        return None

    def folders(self, found: Iterable[FolderPlan]) -> list[FolderPlan]:
        """The folders to create at the target, in order, parents first."""
        return sorted((f for f in found if self.folder_taken(f.location)), key=lambda f: f.location.count("/"))

    # ------------------------------------------------------------------ messages
    def message_taken(self, internaldate: str | None, size: int | None) -> bool:
        """Whether a message of a taken folder moves, by its date and size."""
        o = self.options
        if o.folders_only:
            return False
        if size is not None:
            if o.max_size is not None and size > o.max_size:
                return False
            if o.min_size is not None and size < o.min_size:
                return False
        if (self.since is not None or self.before is not None) and internaldate:
            try:
                when = datetime.fromisoformat(internaldate)
            except ValueError:
                return True
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            if self.since is not None and when < self.since:
                return False
            if self.before is not None and when > self.before:
                return False
        return True

    def takes(self, kind: str, location: str, meta: dict | None, size: int | None) -> bool:
        """Whether an item (a ledger row or a listed ref) is one the department moves now: what it
        does not take is neither listed nor, when it is missing from a listing, deleted at the source."""
        if kind != Kind.MESSAGE.value:
            return True
        meta = meta or {}
        return self.folder_taken(location) and self.message_taken(meta.get("internaldate"),
                                                                  meta.get("size", size))

    def listed(self, source, owner: str, folder: str) -> Iterator[ItemRef]:
        """What `source` lists for this user, narrowed to the selection, renamed folders marked; one
        at a time, as the source gives them (a listing of a million files is never held at once)."""
        if getattr(source, "narrows_mail", False):
            refs = source.discover(owner, folder, selection=self)
        else:
            refs = source.discover(owner, folder)
        for ref in refs:
            if ref.kind is Kind.MESSAGE:
                if not self.takes(ref.kind.value, ref.location, ref.meta, ref.size):
                    continue
                target = self.target_folder(ref.location)
                if target is not None:
                    ref = replace(ref, meta={**(ref.meta or {}), "target_folder": target})
            yield ref
