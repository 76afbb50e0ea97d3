"""Local folder trees that their users can write to, read without ever leaving the tree.

A home folder or a project share is written by its users while umstieg reads it. Anyone who can
write there can replace a file that discovery listed by a symbolic link to `/etc/shadow` or to a
colleague's folder, create a FIFO that blocks a reader for ever, or name a file in bytes that are
not UTF-8 (old Samba and NAS shares hold Latin-1 names). This module is the one place that reads
such trees, for the folder source (sources/fileshare.py) and for `umstieg convert`:

- `walk` lists a tree through directory handles (`openat` with `O_NOFOLLOW`), never by path, so
  that a folder swapped for a link while it is walked is not entered; every entry gets a kind:
  regular files, folders that could not be listed, and the entries that are not moved (links,
  FIFOs, sockets, devices), each with the words a report needs;
- `open_file` opens one file below the tree's handle, one path component at a time, each with
  `O_NOFOLLOW`, and checks on the open descriptor that it is the regular file discovery saw
  (device and inode): a file swapped for a link, a FIFO or another file after it was listed is
  `ChangedAtSource`, never read;
- `key_of` spells a name of any bytes as text without loss (`\\xNN` for bytes that are not UTF-8,
  `\\\\` for a backslash) for ledger keys and results files, `raw_of` is its inverse, and
  `target_name` decodes it for people and targets: UTF-8 where it is UTF-8, else Windows-1252
  (then Latin-1 for the five bytes Windows-1252 leaves undefined), NFC-normalised.

Python's `openat2(RESOLVE_BENEATH)` is not in the standard library; a walk of `openat` calls with
`O_NOFOLLOW` gives the same guarantee on every Linux and BSD.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.errors import ItemError

__all__ = ["Entry", "ChangedAtSource", "NotBelow", "walk", "open_root", "open_file", "key_of", "raw_of",
           "target_name", "is_plain", "SKIP_REASONS"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: a FIFO put in a file's place must not block the reader (checked and refused after the open).
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)

#: Kinds of entries that are not moved, the ledger's reason for each, and what a person reads.
SKIP_REASONS = {
    "link": ("skipped_link", "a symbolic link{target}: links are not followed (it could lead outside the "
                             "user's folder); copy what it points to by hand if it belongs here"),
    "fifo": ("skipped_fifo", "a named pipe (FIFO): it holds no data to move"),
    "socket": ("skipped_socket", "a socket: it holds no data to move"),
    "device": ("skipped_device", "a device file: it holds no data to move"),
    "other": ("skipped_special", "a special file of an unknown kind: not moved"),
}


class ChangedAtSource(ItemError):
    """The entry is no longer the regular file that was listed (swapped for a link, a FIFO or another
    file): nothing is read; the next run lists it again and decides anew."""

    reason = "changed_at_source"


class NotBelow(ItemError):
    """A location that would leave the tree (`..`, an absolute path, an empty component)."""

    reason = "outside_source"


@dataclass(frozen=True)
class Entry:
    """One entry of a walked tree, by its path below the tree's top in the file system's bytes."""

    raw: bytes                  # b"Ablage/latin1-\xe4.txt"
    kind: str                   # "file", "unlisted" (a folder that could not be listed) or a SKIP_REASONS key
    size: int | None = None
    mtime_ns: int | None = None
    identity: str | None = None     # "device:inode" of a file as listed
    error: str | None = None        # why a folder could not be listed
    link_target: str | None = None  # where a link points (key_of spelling)

    @property
    def key(self) -> str:
        """The lossless text spelling of `raw` (see key_of)."""
        return key_of(self.raw)

    def why_skipped(self) -> tuple[str, str]:
        """(ledger reason, message) of an entry that is not moved."""
        reason, text = SKIP_REASONS[self.kind]
        return reason, text.format(target=f" to {self.link_target}" if self.link_target else "")


# ------------------------------------------------------------------------------------------ names
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def key_of(raw: bytes) -> str:
    """`raw` as text without loss: UTF-8 as it is, each other byte as `\\xNN`, a backslash as `\\\\`.

    Two different byte names never get one spelling (raw_of undoes it), and the text is storable
    in SQLite and PostgreSQL alike (surrogate escapes are not). Names that are valid UTF-8 and
    hold no backslash, nearly all, keep their spelling.
    """
    text = raw.decode("utf-8", "surrogateescape")
    if "\\" not in text and _plain_utf8(raw):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:                 # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    return "".join(out)


def _plain_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def raw_of(key: str) -> bytes:
    """The bytes `key_of` spelled as `key`."""
    if "\\" not in key:
        return key.encode("utf-8", "surrogateescape")
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(key):
        out += key[pos:m.start()].encode("utf-8", "surrogateescape")
        token = m.group(1)
        out += b"\\" if token == "\\" else bytes([int(token[1:], 16)])
        pos = m.end()
    out += key[pos:].encode("utf-8", "surrogateescape")
    return bytes(out)


def is_plain(raw: bytes) -> bool:
    """Whether a name is valid UTF-8 (its target name is its own spelling)."""
    return _plain_utf8(raw)


def target_name(raw: bytes) -> str:
    """A name for people and targets: the UTF-8 runs as they are, every other byte as Windows-1252
    (the code page of the Windows clients and NAS boxes that wrote such names; Latin-1 for its five
    undefined bytes), NFC-normalised. `b'latin1-\\xe4.txt'` becomes `latin1-ä.txt`.

    Names that are valid UTF-8 are returned unchanged (not NFC-normalised: the target-name step
    handles spellings of valid names)."""
    text = raw.decode("utf-8", "surrogateescape")
    if not any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            byte = bytes([code - 0xDC00])
            try:
                out.append(byte.decode("cp1252"))
            except UnicodeDecodeError:
                out.append(byte.decode("latin-1"))
        else:
            out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


# ------------------------------------------------------------------------------------------ walking
def open_root(root: Path, *below: str) -> int:
    """A directory handle on `root / below...`: `root` (configured by an administrator) may be or
    contain a link, the parts `below` (a user's folder) may not. The caller closes it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in below:
            for name in [p for p in part.split("/") if p]:
                if name in (".", ".."):
                    raise NotBelow(f"refusing a folder name that leaves the source root: {part!r}")
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def _listing(dir_fd: int, rel: bytes, exclude: Set[str] = frozenset()) -> tuple[list[Entry], list[bytes]]:
    """The entries of one folder (by name) and its sub-folders' names, the listing finished first."""
    with os.scandir(dir_fd) as it:
        names = sorted(os.fsencode(e.name) for e in it)
    entries, subdirs = [], []
    for name in names:
        path = rel + b"/" + name if rel else name
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue                                   # vanished between listing and stat
        except OSError as exc:
            entries.append(Entry(path, "other", error=exc.strerror or str(exc)))
            continue
        kind = _kind(st.st_mode)
        if kind == "dir":
            if f"{st.st_dev}:{st.st_ino}" not in exclude:
                subdirs.append(name)
        elif kind == "file":
            entries.append(Entry(path, "file", st.st_size, st.st_mtime_ns, f"{st.st_dev}:{st.st_ino}"))
        else:
            target = None
            if kind == "link":
                try:
                    target = key_of(os.readlink(name, dir_fd=dir_fd))
                except OSError:
                    target = None
            entries.append(Entry(path, kind, None, st.st_mtime_ns, link_target=target))
    return entries, subdirs


def walk(top_fd: int, exclude: Set[str] = frozenset()) -> Iterator[Entry]:
    """Every entry below the folder `top_fd`, depth first, in byte order of names, the files of a
    folder before its sub-folders. Links are reported, never entered; a sub-folder that cannot be
    opened or listed is one entry of kind `unlisted`. A top folder that cannot be listed raises
    OSError. Folders whose "device:inode" is in `exclude` are left out (an output folder inside the
    tree). The handle `top_fd` stays open (the caller's)."""
    entries, subdirs = _listing(top_fd, b"", exclude)
    yield from entries
    frames = [(os.dup(top_fd), b"", iter(subdirs))]
    try:
        while frames:
            dir_fd, rel, pending = frames[-1]
            name = next(pending, None)
            if name is None:
                os.close(dir_fd)
                frames.pop()
                continue
            path = rel + b"/" + name if rel else name
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                yield Entry(path, "unlisted", error=_why_not_listed(exc))
                continue
            try:
                entries, subdirs = _listing(child, path, exclude)
            except OSError as exc:
                os.close(child)
                yield Entry(path, "unlisted", error=_why_not_listed(exc))
                continue
            yield from entries
            frames.append((child, path, iter(subdirs)))
    finally:
        for dir_fd, _, _ in frames:
            os.close(dir_fd)


def _why_not_listed(exc: OSError) -> str:
    import errno
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "it was replaced by a link or a file while it was listed"
    return exc.strerror or str(exc)


# ------------------------------------------------------------------------------------------ reading
def open_file(top_fd: int, raw: bytes, identity: str | None = None) -> BinaryIO:
    """Open the regular file `raw` (a path below `top_fd`) for reading, following no link on the way.

    Raises ChangedAtSource when a component is now a link or not a folder, when the file is no
    longer a regular file, or (given `identity`, "device:inode" as listed) when it is another file
    than the one listed; NotBelow for a path that would leave the tree; FileNotFoundError and
    PermissionError as the file system answers.
    """
    parts = raw.split(b"/")
    if raw.startswith(b"/") or any(p in (b"", b".", b"..") for p in parts):
        raise NotBelow(f"refusing a location outside the user's folder: {key_of(raw)!r}")
    opened: list[int] = []
    shown = key_of(raw)
    try:
        dir_fd = top_fd
        for part in parts[:-1]:
            try:
                dir_fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                _changed_if_link(exc, f"a folder on the way to {shown} was replaced by a link or a file")
                raise
            opened.append(dir_fd)
        st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):             # never open a device or FIFO put in its place
            raise ChangedAtSource(f"{shown} is no longer a regular file at the source (now a "
                                  f"{_KIND_WORDS.get(_kind(st.st_mode), 'special file')}); nothing was read")
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            _changed_if_link(exc, f"{shown} was replaced by a link at the source; nothing was read")
            raise
    finally:
        for d in opened:
            os.close(d)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ChangedAtSource(f"{shown} is no longer a regular file at the source; nothing was read")
        if identity is not None and f"{st.st_dev}:{st.st_ino}" != identity:
            raise ChangedAtSource(f"{shown} was replaced by another file after it was listed; nothing was "
                                  "read, the next run lists it again")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


_KIND_WORDS = {"link": "symbolic link", "fifo": "named pipe", "socket": "socket", "device": "device file",
               "dir": "folder"}


def _changed_if_link(exc: OSError, message: str) -> None:
    import errno
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        raise ChangedAtSource(message) from exc
