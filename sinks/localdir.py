"""A local directory tree as the target, laid out per user: `<root>/<target login>/<path>`.

The embedded default target; later sinks (Nextcloud/OX WebDAV, S3) offer the same operations.
Writes are atomic (temporary name, fsync, rename), so a crash never leaves a half-written file
under a real name, and putting the same bytes twice leaves one file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
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
    #: files written by `put_later` and not yet published: (open descriptor, temporary path, real path)
    _later: list[tuple[int, Path, Path]] = field(default_factory=list, repr=False, compare=False)

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
        dst, tmp, fd = self._write(owner, rel, src, mtime)
        try:
            os.fsync(fd)
            os.replace(tmp, dst)
        except OSError as exc:
            raise self._failed(exc, dst, tmp) from exc
        finally:
            os.close(fd)
        return str(dst)

    def put_later(self, owner: str, rel: str, src: Path, mtime: float | None = None, meta: dict | None = None,
                  digest: str | None = None) -> str:
        """As `put`, the file left under its temporary name, not yet flushed, until `publish`
        (core.plugins.PublishesTogether)."""
        dst, tmp, fd = self._write(owner, rel, src, mtime)
        self._later.append((fd, tmp, dst))
        return str(dst)

    def publish(self) -> dict[str, str]:
        """Flush every file put with `put_later`, give each its real name, then flush their
        folders: a file is under its real name only with its bytes on disk, and the names are
        on disk when this returns. {ref: problem} of the files that could not be."""
        later, self._later = self._later, []
        if not later:
            return {}
        problems: dict[str, str] = {}
        # the flushes at once, from threads: the file system commits one journal transaction for
        # many of them (measured here, ext4, 100 small files a flush: 1.5-2x the files per second
        # of one flush after another, which was a quarter of a small file's time in a run)
        flushed = list(_flusher().map(_flush, [fd for fd, _, _ in later]))
        for fd, _, _ in later:
            os.close(fd)
        folders: set[Path] = set()
        for at, ((_, tmp, dst), error) in enumerate(zip(later, flushed)):
            try:
                if error is not None:
                    raise error
                os.replace(tmp, dst)
                folders.add(dst.parent)
            except OSError as exc:
                problem = self._failed(exc, dst, tmp)
                if isinstance(problem, FatalError):      # a full disk: none of the rest goes either
                    for _, rest, _ in later[at + 1:]:
                        with contextlib.suppress(OSError):
                            rest.unlink(missing_ok=True)
                    raise problem from exc
                problems[str(dst)] = str(problem)
        for error, folder in zip(_flusher().map(_flush_folder, folders), folders):
            if error is not None:       # the names may not be on disk yet: none of them is recorded
                raise FatalError(f"the target folder {folder} could not be flushed: {error.strerror or error}")
        return problems

    def _write(self, owner: str, rel: str, src: Path, mtime: float | None) -> tuple[Path, Path, int]:
        """Copy `src` to the temporary name of `<owner>/<rel>`: (real path, temporary path, an open
        descriptor of the temporary file, for its flush)."""
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
                fd = os.dup(out.fileno())
        except OSError as exc:
            raise self._failed(exc, dst, tmp) from exc
        return dst, tmp, fd

    @staticmethod
    def _failed(exc: OSError, dst: Path, tmp: Path) -> ItemError | FatalError:
        """What a failed write of `dst` is, its temporary file removed."""
        with contextlib.suppress(OSError):        # the folder itself may be what is wrong
            tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:            # nothing else will fit either
            return FatalError(f"the target is full: {exc.strerror}")
        return ItemError(f"cannot write {dst}: {exc.strerror or exc}")

    def verify(self, ref: str, digest: str) -> str | None:
        """None when the target holds exactly these bytes; otherwise what is wrong."""
        path = Path(ref)
        if not path.is_file():
            return f"{ref} is missing at the target"
        actual = sha256_file(path)
        return None if actual == digest else f"{ref} differs at the target (sha256 {actual[:12]}…)"

    def remove(self, ref: str) -> None:
        Path(ref).unlink(missing_ok=True)


_FLUSHERS: ThreadPoolExecutor | None = None
_FLUSHERS_LOCK = threading.Lock()


def _flusher() -> ThreadPoolExecutor:
    """This process's threads for flushing files at once (made on first use, shared by every sink)."""
    global _FLUSHERS
    with _FLUSHERS_LOCK:
        if _FLUSHERS is None:
            _FLUSHERS = ThreadPoolExecutor(16, thread_name_prefix="umstieg-flush")
        return _FLUSHERS


def _flush(fd: int) -> OSError | None:
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    return None


def _flush_folder(folder: Path) -> OSError | None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return exc
    try:
        return _flush(fd)
    finally:
        os.close(fd)
