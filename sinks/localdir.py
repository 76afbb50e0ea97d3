"""A local directory tree as the target, laid out per user: `<root>/<target login>/<path>`.

The embedded default target; later sinks (Nextcloud/OX WebDAV, S3) offer the same operations.
Writes are atomic (temporary name, fsync, rename), so a crash never leaves a half-written file
under a real name, and putting the same bytes twice leaves one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sinks.localdir_config import LocalDirTarget
from core.plugins import Account
from core.digests import sha256_file
from core.errors import FatalError, ItemError

__all__ = ["LocalDir"]


@dataclass
class LocalDir:
    """The local directory target."""

    config: LocalDirTarget
    #: folders this instance made or saw (flows look a sink up once per chunk): one mkdir per
    #: folder and chunk instead of one per file; a folder removed meanwhile is made again
    _made: set[Path] = field(default_factory=set, repr=False, compare=False)

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """The identity check (core.plugins.ChecksUsers): a local tree has no accounts; a user's
        folder is made on first write, so one that is not there yet is no reason to wait."""
        return {name: Account(True if (self.config.root / name).is_dir() else None) for name in names}

    def check(self, owners: list[str]) -> list[str]:
        root = self.config.root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return [f"target folder {root} cannot be created: {exc.strerror}"]
        if not os.access(root, os.W_OK | os.X_OK):
            return [f"target folder {root} is not writable"]
        return []

    def _path(self, owner: str, rel: str) -> Path:
        parts = PurePosixPath(rel).parts
        if any(p in ("..", "") for p in parts) or PurePosixPath(rel).is_absolute():
            raise ItemError(f"refusing a target path outside the user's folder: {rel!r}")
        return self.config.root / owner / Path(*parts)

    def digest(self, src: Path) -> str:
        return sha256_file(src)

    def find(self, owner: str, rel: str, digest: str, meta: dict | None = None) -> str | None:
        """The target reference if this exact content is already there (create-only reruns)."""
        path = self._path(owner, rel)
        if path.is_file() and sha256_file(path) == digest:
            return str(path)
        return None

    def put(self, owner: str, rel: str, src: Path, mtime: float | None = None, meta: dict | None = None,
            digest: str | None = None) -> str:
        """Write `src` as `<owner>/<rel>`, atomically; returns the target reference (`digest` is not
        needed: a folder keeps no checksum)."""
        dst = self._path(owner, rel)
        # The temporary name is a hash of the final one, the same at every put of this file: what
        # a killed put left beside it is overwritten, then renamed away, when the item is put
        # again (no listing of the folder per put, measured at 5 % of a run of small files). Two
        # puts of one path at once cannot happen: an item's target path is its own (decided at
        # discovery) and two runs of one department never run at once.
        stem = hashlib.sha1(dst.name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        tmp = dst.with_name(f".{stem}.umstieg-partial")
        try:
            if dst.parent not in self._made:
                dst.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(dst.parent)
            try:
                out = open(tmp, "wb")
            except FileNotFoundError:                # the folder went away since: make it again
                dst.parent.mkdir(parents=True, exist_ok=True)
                out = open(tmp, "wb")
            with out, open(src, "rb") as fin:
                shutil.copyfileobj(fin, out, 1 << 20)
                out.flush()
                if mtime is not None:
                    os.utime(out.fileno(), (mtime, mtime))
                os.fsync(out.fileno())
            os.replace(tmp, dst)
        except OSError as exc:
            with contextlib.suppress(OSError):        # the folder itself may be what is wrong
                tmp.unlink(missing_ok=True)
            if exc.errno == 28:                      # ENOSPC: nothing else will fit either
                raise FatalError(f"the target is full: {exc.strerror}") from exc
            raise ItemError(f"cannot write {dst}: {exc.strerror or exc}") from exc
        return str(dst)

    def verify(self, ref: str, digest: str) -> str | None:
        """None when the target holds exactly these bytes; otherwise what is wrong."""
        path = Path(ref)
        if not path.is_file():
            return f"{ref} is missing at the target"
        actual = sha256_file(path)
        return None if actual == digest else f"{ref} differs at the target (sha256 {actual[:12]}…)"

    def remove(self, ref: str) -> None:
        Path(ref).unlink(missing_ok=True)
