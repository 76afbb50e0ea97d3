"""Folder trees on this machine or a mounted share: one sub-folder per user.

Later sources (SMB through smbprotocol, S3, OneDrive) offer the same three operations.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sources.fileshare_config import FolderSource
from core.plugins import Account
from core.errors import ItemError
from core.items import ItemRef, Kind
from core.localtree import Entry, is_plain, open_file, open_root, raw_of, target_name, walk

__all__ = ["FolderShare", "odf_stem"]


def odf_stem(location: str, siblings: Counter) -> str:
    """The path an ODF copy of `location` gets at the target, without its extension.

    `Bericht.docx` becomes `Bericht` (+ `.odt`), unless another file of the same folder has the
    same stem (`Bericht.doc`): then each keeps its full name as stem (`Bericht.docx.odt`), so
    their copies cannot overwrite each other. `siblings` counts (folder, stem) in the listing.
    """
    p = PurePosixPath(location)
    return str(p.parent / p.stem) if siblings[(str(p.parent), p.stem)] == 1 else location


@dataclass
class FolderShare:
    """A folder source: `<root>/<user folder>/...`."""

    config: FolderSource

    @property
    def name(self) -> str:
        return self.config.name

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """The identity check (core.plugins.ChecksUsers): each user's folder exists (a folder
        tells no e-mail or name). The root missing concerns everyone (`check` says so)."""
        root = self.config.root
        if not root.is_dir():
            return {name: Account(None) for name in names}
        return {name: Account(True) if (root / name).is_dir() else
                Account(False, why=f"no user folder {name!r}") for name in names}

    def check(self, folders: list[str]) -> list[str]:
        """Problems that stop this source before anything moves (every one, at once)."""
        root = self.config.root
        if not root.is_dir():
            return [f"source {self.name}: folder {root} does not exist"]
        if not os.access(root, os.R_OK | os.X_OK):
            return [f"source {self.name}: folder {root} is not readable"]
        problems = []
        for f in folders:
            if (root / f).is_symlink():                # discovery does not follow it: say so before anything moves
                problems.append(f"source {self.name}: user folder {root / f} is a symbolic link, which umstieg "
                                "does not follow (a user could point it anywhere): give the real folder as "
                                "the user's `folder`, or make root the folder that holds it")
            elif not (root / f).is_dir():
                problems.append(f"source {self.name}: user folder {root / f} does not exist")
        return problems

    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every entry of the user's folder: files with mtime+size as their version, and every entry
        that is not moved (links, FIFOs, sockets, devices) with the reason, so that nothing is left
        out unseen (the flow records those as skipped).

        The tree is walked through directory handles without following a link (core.localtree):
        a link never leads discovery out of the user's folder. Keys and locations spell names of
        any bytes without loss (`latin1-\\xe4.txt`); a name that is not UTF-8 carries the name it
        lands as (`decoded_name`, `latin1-ä.txt`) and the reason `undecodable_name`.

        A user folder that is missing or cannot be read raises ItemError (the user waits: an
        unmounted share must not look like a user who deleted everything). A sub-folder that
        cannot be listed is one item of its own, `<path>/`, whose extraction fails with the reason
        `unlisted_folder`: it shows in the report, and what was found in it before is not taken
        for deleted."""
        try:
            top = open_root(self.config.root, folder)
        except OSError as exc:
            raise ItemError(f"source {self.name}: the folder of {owner} cannot be read "
                            f"({self.config.root / folder}: {_reason(exc)})") from exc
        try:
            try:
                entries = walk(top)
                first = next(entries, None)
            except OSError as exc:
                raise ItemError(f"source {self.name}: the folder of {owner} cannot be read "
                                f"({self.config.root / folder}: {_reason(exc)})") from exc
            if first is None:
                return
            for entry in itertools.chain([first], entries):
                yield self._ref(owner, entry)
        finally:
            os.close(top)

    def _ref(self, owner: str, entry: Entry) -> ItemRef:
        location = entry.key
        meta: dict = {}
        if not is_plain(entry.raw):
            meta.update(decoded_name=target_name(entry.raw), renamed="undecodable_name")
        if entry.kind == "unlisted":
            location += "/"
            return ItemRef(source=self.name, key=f"{owner}/{location}", kind=Kind.FILE, owner=owner,
                           location=location, version=f"unlisted:{entry.error}"[:200], size=None,
                           meta={**meta, "unlisted": entry.error})
        if entry.kind == "file":
            assert entry.mtime_ns is not None          # a file's entry comes with its stat
            return ItemRef(source=self.name, key=f"{owner}/{location}", kind=Kind.FILE, owner=owner,
                           location=location, version=f"{entry.mtime_ns}:{entry.size}", size=entry.size,
                           meta={**meta, "mtime": entry.mtime_ns / 1e9, "inode": entry.identity})
        reason, why = entry.why_skipped()
        return ItemRef(source=self.name, key=f"{owner}/{location}", kind=Kind.FILE, owner=owner, location=location,
                       version=f"{entry.kind}:{entry.mtime_ns}:{entry.link_target or ''}"[:200], size=None,
                       meta={**meta, "skipped": reason, "why": why})

    def path_of(self, folder: str, location: str) -> Path:
        return self.config.root / folder / location

    #: extract() compares what it opens with what discovery listed (`listed`: the item's meta)
    compares_with_listing = True

    def extract(self, folder: str, location: str, dst: Path, key: str | None = None,
                listed: dict | None = None) -> tuple[int, float]:
        """Copy one file's bytes to `dst` (bounded memory); returns (size, mtime).

        The file is opened below the user's folder one component at a time without following a
        link, and must be the regular file discovery saw (`listed["inode"]`): a file swapped for a
        link (to `/etc/passwd`, to a colleague's folder), a FIFO or another file since is
        `changed_at_source`, nothing is read, and the next run lists it again."""
        if location.endswith("/"):
            raise _Unlisted(f"the folder {location} could not be listed at the source; fix its permissions "
                            "and run again")
        if (listed or {}).get("skipped"):
            raise ItemError(f"{location} is not a regular file at the source: {(listed or {}).get('why')}")
        try:
            top = open_root(self.config.root, folder)
        except OSError as exc:
            raise ItemError(f"the folder of this user cannot be opened at the source ({_reason(exc)})") from exc
        try:
            fin = open_file(top, raw_of(location), (listed or {}).get("inode"))
        except FileNotFoundError as exc:
            raise ItemError(f"the file vanished at the source: {location}") from exc
        except PermissionError as exc:
            raise ItemError(f"permission denied at the source: {location}") from exc
        except OSError as exc:
            raise ItemError(f"cannot read {location} at the source: {exc.strerror or exc}") from exc
        finally:
            os.close(top)
        try:
            with fin:
                st = os.fstat(fin.fileno())
                _copy_stream(fin, dst)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise   # our own disk (the staged copy), not the source: the flow decides (a full disk is fatal)
            raise ItemError(f"cannot read {location} at the source: {exc.strerror or exc}") from exc
        return st.st_size, st.st_mtime


class _Unlisted(ItemError):
    reason = "unlisted_folder"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _copy_stream(fin: BinaryIO, dst: Path) -> None:
    try:                                 # the staging folder is there but for an item's first copy
        fout = open(dst, "wb")
    except FileNotFoundError:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fout = open(dst, "wb")
    with fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
