"""One target name per file, decided before anything loads, so that no file overwrites another.

Different source names can be one name at a target:

- **NFC twins**: `Müller.txt` written by Windows (NFC) and by a Mac (NFD) onto one share are two
  names there; Nextcloud stores paths NFC-normalised, so they are one file there;
- **case twins**: `Bericht.docx` and `bericht.docx` are two files on a Linux share and one on a
  Windows-synced client or any case-insensitive target;
- **converted-name clashes**: `Plan.docx` becomes `Plan.odt`, where the share may already hold a
  `Plan.odt` (or `plan.odt`), now or in a later run;
- **same name from another user**: two source users deliberately merged into one target account
  (`allow_merge`) who both have `notizen.txt`.

Each of these is the reason a renamed file carries (`nfc_twin`, `case_twin`, `converted_clash`,
`same_name`). The first file to claim a name keeps it; each later one gets a numbered name, visibly and the
same way every time: `Müller (2).txt`, `bericht (2).docx`, `Plan (2).odt`. Names already decided
(an earlier run's, recorded in the ledger) claim first, so a rerun never renames or duplicates
what arrived; among new files, the NFC-spelled name comes before the other spellings and then
code-point order decides (`Bericht` before `bericht`). Twin folders (`Akten/`, `akten/`) become
the first spelling, as a Windows client shows them. Every decided name is NFC.

A converted copy claims its stem with every ODF extension (`Plan.odt`, `Plan.ods`, …): the
format is decided by content, so the family is not known before conversion. Plain names are
claimed before converted ones: an `a.odt` of the share keeps its name, the copy of `a.docx`
yields.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

__all__ = ["NamePlan", "name_key", "numbered"]

def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def name_key(path: str) -> str:
    """What makes two paths one file at some target: NFC, and case ignored (lower case, not
    casefold: Windows keeps `Straße` and `Strasse` apart)."""
    return _nfc(_nfc(path).lower())


def numbered(path: str, n: int) -> str:
    """`path` with ` (n)` before the extension of its last segment: `a/Müller.txt` → `a/Müller (2).txt`."""
    parent, slash, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:                 # no extension, or a dot file (`.profile`)
        stem, ext = name, ""
    return f"{parent}{slash}{stem} ({n})" + (f".{ext}" if ext else "")


class NamePlan:
    """The names claimed in one target folder tree (one account, one source's target folder)."""

    def __init__(self, odf_extensions: Iterable[str], folders: dict[str, str] | None = None) -> None:
        """`folders`: the folder spellings to share with other plans. Two names can only be one
        file when they are in one folder, so a large tree may be planned one folder at a time (one
        plan each, holding that folder's names) while twin folders still land as one spelling."""
        self.odf = tuple(odf_extensions)
        self._names: dict[str, tuple[str, str]] = {}     # key -> (source location, "plain" | "converted")
        self._folders: dict[str, str] = {} if folders is None else folders   # folder key -> its spelling

    def claim_folders(self, path: str) -> None:
        """Claim the spelling of the folders on the way to `path` (as `keep` and `plain` do), no name."""
        self._spell_folders(_nfc(path))

    # ----------------------------------------------------------------------- names decided before
    def keep(self, location: str, plain: str, stem: str | None) -> None:
        """Claim the names an earlier run decided for a file (`stem`: its converted copy's, if any)."""
        plain = _nfc(plain)
        self._spell_folders(plain)
        self._names.setdefault(name_key(plain), (location, "plain"))
        if stem is not None:
            for ext in self.odf:
                self._names.setdefault(name_key(f"{stem}.{ext}"), (location, "converted"))

    # ----------------------------------------------------------------------- new names
    def plain(self, location: str) -> tuple[str, str | None]:
        """(the name `location` lands as when unconverted, why it differs or None)."""
        return self.plain_many([location])[location]

    def plain_many(self, locations: list[str]) -> dict[str, tuple[str, str | None]]:
        """`plain` for many files, in their order: every free name is claimed before any twin is
        numbered, so that a real `Müller (2).txt` of the share keeps its name and the twin of
        `Müller.txt` becomes `Müller (3).txt`."""
        spelled = {loc: self._spell_folders(_nfc(loc)) for loc in locations}
        decided: dict[str, tuple[str, str | None]] = {}
        twins = []
        for loc in locations:
            path, reason = spelled[loc]
            if name_key(path) in self._names:
                twins.append(loc)
            else:
                self._names[name_key(path)] = (loc, "plain")
                decided[loc] = (path, reason)
        for loc in twins:
            path, reason = spelled[loc]
            reason = reason or self._why(loc, *self._names[name_key(path)])
            n = 2
            while name_key(numbered(path, n)) in self._names:
                n += 1
            path = numbered(path, n)
            self._names[name_key(path)] = (loc, "plain")
            decided[loc] = (path, reason)
        return decided

    def converted(self, location: str, plain: str, stem: str) -> tuple[str, str | None]:
        """(the stem the ODF copy of `location` lands as, why it differs or None). `plain` is the
        name `plain()` decided, `stem` the one the folder's listing gives (`Bericht`, or the whole
        name `Bericht.docx` when another file of the folder has that stem)."""
        source_name, stem_name = _nfc(location).rpartition("/")[2], _nfc(stem).rpartition("/")[2]
        parent, slash, name = plain.rpartition("/")
        if name != source_name:                      # renamed: its copy follows the new name
            stem_name = name if stem_name == source_name else (name.rpartition(".")[0] or name)
        base, reason = f"{parent}{slash}{stem_name}", None
        candidate, n = base, 1
        while (taken := next((self._names[k] for k in self._keys(candidate) if k in self._names), None)):
            reason = reason or ("converted_clash" if taken[1] == "plain" else self._why(location, *taken))
            n += 1
            candidate = f"{base} ({n})"
        for key in self._keys(candidate):
            self._names[key] = (location, "converted")
        return candidate, reason

    # ----------------------------------------------------------------------- the rules
    def _keys(self, stem: str) -> list[str]:
        return [name_key(f"{stem}.{ext}") for ext in self.odf]

    def _spell_folders(self, path: str) -> tuple[str, str | None]:
        """`path` with each folder spelled as the first twin of it was (and the reason, if changed)."""
        parts, reason = path.split("/"), None
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            spelled = self._folders.setdefault(name_key(prefix), prefix)
            if spelled != prefix:
                parts[:i] = spelled.split("/")
                reason = "case_twin"               # both are NFC already: they differ in case
        return "/".join(parts), reason

    @staticmethod
    def _why(location: str, other: str, kind: str) -> str:
        if kind == "converted":
            return "converted_clash"
        if other == location:
            return "same_name"
        return "nfc_twin" if _nfc(other) == _nfc(location) else "case_twin"
