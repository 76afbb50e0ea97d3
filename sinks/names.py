"""Names that Nextcloud (and OX Drive) refuse, made safe by a documented, reversible mapping.

Windows file shares and Office documents carry names that a Nextcloud server rejects, or that
its Windows desktop clients cannot sync: the characters `\\ / : * ? " < > |` and control
characters, leading or trailing spaces, trailing dots, reserved names (`.htaccess`, Windows device
names such as `CON`), the `.part` and `.filepart` suffixes Nextcloud uses for its own uploads, and
names longer than 250 bytes. (Measured on Nextcloud 27 on Linux: the server itself refuses `\\`,
control characters, over-long names, `.htaccess` and `*.part`, and accepts the rest, which
Nextcloud 30 refuses with its Windows-compatible names on; tests/test_sink_conformance.py records
it.) Rather than fail such an item, each offending character is written as `%` and its two
hexadecimal digits, the way a URL escapes it:

    Protokoll: 3.docx   →   Protokoll%3A 3.docx
    Angebot?.odt        →   Angebot%3F.odt
    " Entwurf."         →   "%20Entwurf%2E"

The rules, applied to each path segment on its own:

- `\\ / : * ? " < > |` and characters 0x00–0x1F become `%XX` (`:` → `%3A`);
- leading spaces, and the run of spaces and dots that ends a name, become `%20` / `%2E`;
- `.htaccess` (any case) → `%2Ehtaccess`; a name ending in `.part` or `.filepart` gets its last
  dot written as `%2E` (`x.part` → `x%2Epart`);
- a Windows device name (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`, before the
  first dot, any case) gets its first letter escaped (`CON.txt` → `%43ON.txt`): Nextcloud refuses
  them when its Windows-compatible names are on, and no Windows desktop client could sync them;
- a `%` that is followed by two hexadecimal digits is written `%25` (so `50%AB` → `50%25AB`);
  any other `%` stays as it is (`100% sicher.docx` is unchanged).

`original_name` undoes all of this: every `%XX` in a mapped name stands for one character.
Names that need none of it (nearly all) are unchanged.

The one mapping that loses information is shortening: a segment longer than 250 bytes (UTF-8,
after escaping) keeps its extension and as much of its beginning as fits, followed by `~` and the
first 8 hexadecimal digits of the sha256 of the original name, so that two long names with the
same beginning stay apart. Its original is in the ledger (the item's `location`).
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["safe_name", "safe_path", "original_name", "original_path", "MAX_NAME_BYTES"]

#: Nextcloud's limit for one name (`oc_filecache.name`), in bytes.
MAX_NAME_BYTES = 250

_FORBIDDEN = set('\\/:*?"<>|') | {chr(c) for c in range(0x20)}
_HEX = set("0123456789abcdefABCDEF")
_RESERVED_NAMES = {".htaccess"}
_RESERVED_SUFFIXES = (".part", ".filepart")
_DEVICE_NAMES = {"con", "prn", "aux", "nul"} | {f"{p}{d}" for p in ("com", "lpt") for d in range(10)}
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _esc(ch: str) -> str:
    return f"%{ord(ch):02X}"


def safe_name(name: str) -> str:
    """The name a Nextcloud server accepts for `name` (one path segment); see the module doc."""
    if not name:
        raise ValueError("an empty name cannot be stored")
    chars = list(name)
    escape = [c in _FORBIDDEN for c in chars]
    # leading spaces; the run of spaces and dots at the end (Nextcloud trims or rejects them)
    i = 0
    while i < len(chars) and chars[i] == " ":
        escape[i], i = True, i + 1
    j = len(chars) - 1
    while j >= 0 and chars[j] in " .":
        escape[j], j = True, j - 1
    lower = name.lower()
    if lower in _RESERVED_NAMES:
        escape[0] = True
    for suffix in _RESERVED_SUFFIXES:
        if lower.endswith(suffix):
            escape[len(name) - len(suffix)] = True
    dot = name.find(".", 1)
    if (name[:dot] if dot > 0 else name).lower() in _DEVICE_NAMES:
        escape[0] = True
    # right to left, so that each literal `%` can see what follows it in the output
    out: list[str] = []
    for k in range(len(chars) - 1, -1, -1):
        c = chars[k]
        if escape[k]:
            out.append(_esc(c))
        elif c == "%":
            following = "".join(reversed(out[-2:]))[:2] if out else ""
            out.append("%25" if len(following) == 2 and set(following) <= _HEX else "%")
        else:
            out.append(c)
    mapped = "".join(reversed(out))
    if len(mapped.encode("utf-8")) > MAX_NAME_BYTES:
        mapped = _shorten(mapped, name)
    return mapped


def _shorten(mapped: str, original: str) -> str:
    """`mapped` cut to fit MAX_NAME_BYTES, keeping its extension, marked with a hash of `original`."""
    stem, dot, ext = mapped.rpartition(".")
    if not dot or not stem or len(ext) > 16:
        stem, ext = mapped, ""
    tail = f"~{hashlib.sha256(original.encode('utf-8')).hexdigest()[:8]}" + (f".{ext}" if ext else "")
    budget = MAX_NAME_BYTES - len(tail.encode("utf-8"))
    cut = stem
    while len(cut.encode("utf-8")) > budget:
        cut = cut[:-1]
    # never end inside an escape (`%3` of `%3A`), and never end the stem on a `%` at all
    tail_escape = re.search(r"%[0-9A-Fa-f]?$", cut)
    if tail_escape:
        cut = cut[:tail_escape.start()]
    return cut + tail


def original_name(mapped: str) -> str:
    """The name `safe_name` was given (for every name it did not have to shorten)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), mapped)


def safe_path(rel: str) -> str:
    """`safe_name` applied to every segment of a relative POSIX path."""
    return "/".join(safe_name(part) for part in rel.split("/") if part)


def original_path(mapped: str) -> str:
    """The relative path `safe_path` was given."""
    return "/".join(original_name(part) for part in mapped.split("/") if part)
