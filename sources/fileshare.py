"""Folder trees on this machine or a mounted share: one sub-folder per user.

Later sources (SMB through smbprotocol, S3, OneDrive) offer the same three operations.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.department import FolderSource
from core.errors import ItemError
from core.items import ItemRef, Kind

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

    def check(self, folders: list[str]) -> list[str]:
        """Problems that stop this source before anything moves (every one, at once)."""
        root = self.config.root
        if not root.is_dir():
            return [f"source {self.name}: folder {root} does not exist"]
        if not os.access(root, os.R_OK | os.X_OK):
            return [f"source {self.name}: folder {root} is not readable"]
        return [f"source {self.name}: user folder {root / f} does not exist"
                for f in folders if not (root / f).is_dir()]

    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every file in the user's folder, with mtime+size as its version.

        A user folder that is missing or cannot be read raises ItemError (the user waits: an
        unmounted share must not look like a user who deleted everything). A sub-folder that
        cannot be listed is one item of its own, `<path>/`, whose extraction fails with the reason
        `unlisted_folder`: it shows in the report, and what was found in it before is not taken
        for deleted."""
        base = self.config.root / folder
        try:
            os.listdir(base)
        except OSError as exc:
            raise ItemError(f"source {self.name}: the folder of {owner} cannot be read ({base}: "
                            f"{exc.strerror or exc})") from exc
        pending = [base]
        while pending:
            current = pending.pop()
            rel_dir = current.relative_to(base).as_posix() if current != base else ""
            try:
                with os.scandir(current) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                location = f"{rel_dir}/"
                yield ItemRef(source=self.name, key=f"{owner}/{location}", kind=Kind.FILE, owner=owner,
                              location=location, version=f"unlisted:{exc.errno}", size=None,
                              meta={"unlisted": exc.strerror or str(exc)})
                continue
            subdirs = []
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(Path(entry.path))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue                       # links, sockets, devices
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue                           # vanished between listing and stat
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                yield ItemRef(source=self.name, key=f"{owner}/{rel}", kind=Kind.FILE, owner=owner,
                              location=rel, version=f"{st.st_mtime_ns}:{st.st_size}", size=st.st_size,
                              meta={"mtime": st.st_mtime})
            pending.extend(reversed(subdirs))          # depth first, in name order

    def path_of(self, folder: str, location: str) -> Path:
        return self.config.root / folder / location

    def extract(self, folder: str, location: str, dst: Path, key: str | None = None) -> tuple[int, float]:
        """Copy one file's bytes to `dst` (bounded memory); returns (size, mtime)."""
        if location.endswith("/"):
            raise _Unlisted(f"the folder {location} could not be listed at the source; fix its permissions "
                            "and run again")
        src = self.path_of(folder, location)
        try:
            with open(src, "rb") as fin:
                st = os.fstat(fin.fileno())
                _copy_stream(fin, dst)
        except FileNotFoundError as exc:
            raise ItemError(f"the file vanished at the source: {location}") from exc
        except PermissionError as exc:
            raise ItemError(f"permission denied at the source: {location}") from exc
        except OSError as exc:
            raise ItemError(f"cannot read {location} at the source: {exc.strerror or exc}") from exc
        return st.st_size, st.st_mtime


class _Unlisted(ItemError):
    reason = "unlisted_folder"


def _copy_stream(fin: BinaryIO, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
