"""Which names Nextcloud refuses, as its file-name validator decides them (Nextcloud 30's
lib/private/Files/FilenameValidator, with "Windows-compatible file names" on, which a migration from
Windows shares must assume: Windows sync clients cannot hold the names it refuses).

Nextcloud 27 on Linux refuses fewer (a backslash, control characters, names over 250 bytes,
`.htaccess`, `*.part`: tests/test_sink_conformance.py asserts those against the real server), so
a name this model accepts is accepted by both. The tests use it to check that sinks/names.py maps
every name into one both accept.
"""

from __future__ import annotations

__all__ = ["nextcloud_rejects"]

_WINDOWS_CHARS = set('<>:"|?*')
_DEVICE_NAMES = {"con", "prn", "aux", "nul"} | {f"{p}{d}" for p in ("com", "lpt") for d in range(10)}


def nextcloud_rejects(name: str, windows_compatible: bool = True) -> str | None:
    """Why Nextcloud refuses `name` as a file or folder name, or None if it accepts it."""
    trimmed = name.strip()
    if trimmed == "":
        return "empty file name"
    if trimmed in (".", ".."):
        return "dot files are not allowed"
    if len(name.encode("utf-8")) > 250:
        return "file name is too long"
    lower = name.lower()
    if lower in (".htaccess",):
        return f'"{name}" is a forbidden file or folder name'
    for ext in (".filepart", ".part") + ((" ", ".") if windows_compatible else ()):
        if lower.endswith(ext):
            return f'"{ext}" is a forbidden file type' if ext.startswith(".") and len(ext) > 1 \
                else f'file names must not end with "{ext}"'
    if any(ord(c) < 32 for c in name):
        return "invalid character in the name"
    forbidden = {"\\", "/"} | (_WINDOWS_CHARS if windows_compatible else set())
    bad = next((c for c in name if c in forbidden), None)
    if bad:
        return f'"{bad}" is not allowed inside a file or folder name'
    if windows_compatible:
        if name.startswith(" "):
            return "file names must not begin with a space"
        dot = lower.find(".", 1)
        if (lower[:dot] if dot > 0 else lower) in _DEVICE_NAMES:
            return f'"{name}" is a forbidden prefix for file or folder names'
    return None
