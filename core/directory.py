"""A department's users read from a CSV file (the directory export a team already has).

Resolving users is configuration, so it lives in core beside the department file; a directory
that must be asked over the network (LDAP) is read by `sources.directory` instead. Every bad row
is reported with its line, all at once, as the department file's own errors are.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from core.errors import ConfigError

__all__ = ["read_users_csv", "CSV_COLUMNS"]

#: Header names a users CSV may carry (case and surrounding spaces do not matter), and what they hold.
CSV_COLUMNS = {
    "source": "login at the source (also their folder name) — required",
    "target": "login at the target — required",
    "folder": "their folder under a source's root, if not `source`",
    "folder:NAME": "their folder, drive or mailbox in the source called NAME, where it differs",
    "email": "primary e-mail address, compared with the target account's",
    "display_name": "display name, compared with the target account's",
}
_ALIASES = {"source login": "source", "source_login": "source", "target login": "target",
            "target_login": "target", "mail": "email", "e-mail": "email", "displayname": "display_name",
            "display name": "display_name", "name": "display_name"}


def _decode(raw: bytes) -> str:
    """The text of a users file as Excel and directory tools write it: UTF-16 with its byte-order
    mark (Excel's "Unicode Text" export, tab-separated), UTF-8 with or without the BOM Excel
    writes, else Windows-1252 (Excel's "CSV" in Western Europe). Latin-1 would accept anything,
    so cp1252 is tried last and a failure is reported."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")          # the BOM says which byte order, and is dropped
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252")


def read_users_csv(path: Path) -> tuple[list[dict], list[str]]:
    """The rows of a users CSV as `User` fields, and every problem as `file:line: what` (both
    lists complete: a caller reports all problems at once). The delimiter (`,` `;` tab) is
    taken from the header line, as Excel writes `;` where the decimal separator is a comma."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the users file: {exc.strerror}") from exc
    try:
        text = _decode(raw)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the users file is neither UTF-8, UTF-16 (with its byte-order mark) nor "
                          "Windows-1252 text") from None
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = max(",;\t", key=first.count) if first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [], [f"{path}:1: the users file is empty (a header line names the columns: source, target, …)"]
    names = [_ALIASES.get(h.strip().lower(), h.strip().lower() if not h.strip().lower().startswith("folder:")
                          else "folder:" + h.strip()[7:].strip()) for h in header]
    problems = [f"{path}:1: column {h!r} is not known (known: {', '.join(CSV_COLUMNS)})"
                for h, n in zip(header, names) if n not in CSV_COLUMNS and not n.startswith("folder:")]
    problems += [f"{path}:1: column {c!r} is missing" for c in ("source", "target") if c not in names]
    if problems:
        return [], problems
    rows: list[dict] = []
    seen = 0
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        seen += 1
        if len(cells) != len(names):
            problems.append(f"{path}:{line}: {len(cells)} cells where the header has {len(names)}")
            continue
        row: dict = {"folders": {}}
        for name, cell in zip(names, cells):
            cell = cell.strip()
            if name.startswith("folder:"):
                if cell:
                    row["folders"][name[7:]] = cell
            elif cell or name in ("source", "target"):
                row[name] = cell
        rows.append({"line": line, **row})
    if not seen and not problems:
        problems.append(f"{path}:1: the users file has a header but no users")
    return rows, problems
