"""Is this a valid ODF package? Checked for every ODF input passed through and every converted output.

The checks are the ones a reader relies on before it looks at the content (ODF 1.3 part 2, "Packages"):
the `mimetype` entry comes first and is stored uncompressed, the manifest exists and is well-formed,
`content.xml` and `styles.xml` exist and are well-formed XML, every file the manifest lists is in
the ZIP, and nothing is encrypted (an encrypted package cannot be checked or opened without its
password). Not checked on purpose: the `mimetype` entry's extra field (forbidden by the standard, but
harmless and written by some producers) and schema validity (slow, and LibreOffice's own output is
not always schema-valid).

XML is parsed as a stream from the ZIP, element by element, so a 200 MB content.xml is checked in
bounded memory; the parser never resolves entities or loads anything from the network.
"""

from __future__ import annotations

import errno
import re
import zipfile
import zlib
from pathlib import Path

from lxml import etree

__all__ = ["check_package", "odf_mimetype", "ODF_MIMETYPE_PREFIX"]

ODF_MIMETYPE_PREFIX = "application/vnd.oasis.opendocument."

_MANIFEST = "META-INF/manifest.xml"
_MANIFEST_NS = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"
_M = f"{{{_MANIFEST_NS}}}"
_MIMETYPE_RE = re.compile(r"^application/vnd\.oasis\.opendocument\.[a-z]+(-[a-z]+)*$")
_MAX_MIMETYPE = 256
_MAX_MANIFEST = 16 << 20          # a manifest of 100 000 entries is ~10 MB; real ones are KB


def check_package(path: Path) -> list[str]:
    """Problems that make `path` an invalid ODF package; an empty list means it is valid.

    Raises only OSError for a file that cannot be read at all (missing, permission denied).
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        return [f"not a ZIP archive ({exc})"]
    except (OSError, EOFError, ValueError, NotImplementedError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (None, errno.EINVAL):
            raise
        return [f"not a readable ZIP archive ({exc})"]
    with zf:
        return _check(zf)


def odf_mimetype(path: Path) -> str | None:
    """The ODF media type of the package at `path` (from `mimetype`, else the manifest), or None."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "mimetype" in names:
                value = _read_mimetype(zf)
                if value:
                    return value
            if _MANIFEST in names:
                manifest = _parse_manifest(zf)
                if manifest is not None:
                    return manifest.root_type
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, RuntimeError,
            UnicodeDecodeError, etree.XMLSyntaxError):
        return None
    return None


# --- internals -----------------------------------------------------------------------------------------

class _Manifest:
    def __init__(self) -> None:
        self.root_type: str | None = None
        self.files: list[str] = []
        self.encrypted: list[str] = []


def _check(zf: zipfile.ZipFile) -> list[str]:
    problems: list[str] = []
    infos = zf.infolist()
    if not infos:
        return ["empty ZIP archive"]
    names = {info.filename for info in infos}

    # mimetype: first, stored, an ODF media type (so that readers can identify the file by its
    # first bytes: "mimetype" at offset 30, the media type at offset 38).
    mimetype = None
    if "mimetype" not in names:
        problems.append("no mimetype entry")
    else:
        info = zf.getinfo("mimetype")
        if infos[0].filename != "mimetype":
            position = [i.filename for i in infos].index("mimetype") + 1
            problems.append(f"mimetype is not the first entry (it is entry {position}, "
                            f"after {infos[0].filename!r})")
        if info.compress_type != zipfile.ZIP_STORED:
            problems.append("mimetype entry is compressed; it must be stored uncompressed")
        try:
            mimetype = _read_mimetype(zf)
        except Exception as exc:                 # noqa: BLE001 - any failure here is a damaged entry
            problems.append(f"mimetype entry unreadable ({_short(exc)})")
        else:
            if not mimetype or not _MIMETYPE_RE.match(mimetype):
                problems.append(f"mimetype is not an ODF media type: {mimetype!r}")

    # The manifest: present, well-formed, listing only files the ZIP has.
    manifest = None
    if _MANIFEST not in names:
        problems.append(f"no {_MANIFEST}")
    else:
        try:
            manifest = _parse_manifest(zf)
        except Exception as exc:                 # noqa: BLE001
            problems.append(f"{_MANIFEST} is not well-formed XML ({_short(exc)})")
    if manifest is not None:
        if manifest.encrypted:
            example = "content.xml" if "content.xml" in manifest.encrypted else manifest.encrypted[0]
            problems.append(f"package is encrypted ({len(manifest.encrypted)} entries have encryption-data, "
                            f"e.g. {example})")
        missing = [name for name in manifest.files if name not in names]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            problems.append(f"{_MANIFEST} lists {missing[0]}{more}, missing from the package")

    # content.xml and styles.xml: present and well-formed. Encrypted entries are ciphertext: the
    # "encrypted" problem above already says all there is to say about them.
    encrypted = set(manifest.encrypted) if manifest is not None else set()
    for name in ("content.xml", "styles.xml"):
        if name not in names:
            problems.append(f"no {name}")
        elif name not in encrypted:
            problem = _xml_problem(zf, name)
            if problem:
                problems.append(f"{name} is not well-formed XML ({problem})")
    return problems


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read_mimetype(zf: zipfile.ZipFile) -> str:
    with zf.open("mimetype") as f:
        raw = f.read(_MAX_MIMETYPE + 1)
    if len(raw) > _MAX_MIMETYPE:
        raise ValueError(f"mimetype entry longer than {_MAX_MIMETYPE} bytes")
    return raw.decode("ascii").strip()


def _parse_manifest(zf: zipfile.ZipFile) -> _Manifest:
    info = zf.getinfo(_MANIFEST)
    if info.file_size > _MAX_MANIFEST:
        raise ValueError(f"implausibly large ({info.file_size} bytes)")
    manifest = _Manifest()
    with zf.open(info) as stream:
        for _, el in _iterparse(stream, tag=f"{_M}file-entry"):
            full_path = el.get(f"{_M}full-path") or ""
            if full_path == "/":
                manifest.root_type = (el.get(f"{_M}media-type") or "").strip() or None
            elif full_path and not full_path.endswith("/"):
                # Directories (full-path ending in "/") are not stored as ZIP entries by every
                # producer; only files must exist.
                manifest.files.append(full_path)
                if el.find(f"{_M}encryption-data") is not None:
                    manifest.encrypted.append(full_path)
            el.clear(keep_tail=True)
    return manifest


def _iterparse(stream, tag=None):
    """Safe streaming parse: no entity expansion, no DTD, no network; big trees allowed."""
    return etree.iterparse(stream, events=("end",), tag=tag, resolve_entities=False, load_dtd=False,
                           no_network=True, huge_tree=True, remove_comments=True, remove_pis=True)


def _xml_problem(zf: zipfile.ZipFile, name: str) -> str | None:
    """Why the entry `name` is not well-formed XML, or None when it is."""
    try:
        with zf.open(name) as stream:
            root_seen = False
            for _, el in _iterparse(stream):
                # Free what has been checked: memory stays bounded however big the document.
                el.clear(keep_tail=True)
                parent = el.getparent()
                if parent is None:
                    root_seen = True
                else:
                    while el.getprevious() is not None:
                        del parent[0]
            return None if root_seen else "no root element"
    except etree.XMLSyntaxError as exc:
        return _short(exc)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, ValueError) as exc:
        # A bad CRC, a truncated deflate stream or an encrypted ZIP entry ("password required").
        if isinstance(exc, OSError) and exc.errno not in (None, errno.EINVAL):
            raise
        return f"entry unreadable: {_short(exc)}"
