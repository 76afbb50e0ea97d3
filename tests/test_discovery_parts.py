"""Discovery in its three parts (flows/discovery.py) with listings larger than one slice: every
entry is counted once and lands in the ledger once, moved items keep their key, names decided
folder by folder are those one plan of the whole account gives, and a pass that finds nothing
to do writes nothing to the ledger. Real folder trees, real SQLite ledgers."""

from __future__ import annotations

import os
import subprocess
import unicodedata
from pathlib import Path, PurePosixPath

import pytest
import yaml
from sqlalchemy import event, select

from core.department import load_department
from core.items import ItemRef, Kind
from core.ledger import Item
from core.mailselection import MailSelection
from flows import discovery
from flows.discovery import Spool, apply_removals, discover, list_source, reconcile

ODF = ("odp", "ods", "odt", "otp", "ots", "ott")


@pytest.fixture(autouse=True)
def small_slices(monkeypatch):
    """Slices of 7 rows: every listing below crosses several of them."""
    monkeypatch.setattr(discovery, "SLICE", 7)


def department(tmp_path: Path, users=("anna", "ben"), **extra):
    # a name of its own: the PostgreSQL ledger is one database for the whole session
    config = {"name": f"schichten-{tmp_path.name}", "work_dir": str(tmp_path / "work"),
              "users": [{"source": u, "target": f"t-{u}"} for u in users],
              "sources": [{"name": "homes", "type": "folder", "root": str(tmp_path / "home")}],
              "target": {"type": "localdir", "root": str(tmp_path / "target")},
              "conversion": {"enabled": False}, **extra}
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    dept = load_department(path)
    ledger = dept.open_ledger()
    ledger.migrate()
    return dept, ledger


def write(path: Path, text: str, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def run(dept, ledger):
    """One discovery pass in a run of its own."""
    run_id = ledger.start_run(dept.name, "test")
    try:
        return discover(dept, ledger, run_id)
    finally:
        ledger.finish_run(run_id, "completed")


def rows(dept, ledger, owner: str | None = None) -> list[Item]:
    with ledger.session() as s:
        q = select(Item).where(Item.department == dept.name).order_by(Item.id)
        return list(s.scalars(q.where(Item.owner == owner) if owner else q))


class ItemWrites:
    """Counts the INSERT and UPDATE statements sent for ledger items while it is active."""

    def __init__(self, ledger) -> None:
        self.engine, self.statements = ledger.engine, []

    def _seen(self, conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("INSERT INTO ITEMS", "UPDATE ITEMS", "DELETE FROM ITEMS")):
            self.statements.append(statement)

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._seen)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_listing_of_many_slices_reconciles_exactly(tmp_path, db, request):
    home = tmp_path / "home"
    for user in ("anna", "ben"):
        for folder in range(5):
            for n in range(8):
                write(home / user / f"akte{folder}" / f"dok{n:02d}.txt", f"{user} {folder} {n}", 1_600_000_000)
    dept, ledger = department(tmp_path, **({"ledger": request.getfixturevalue("postgres_url")}
                                           if db == "postgresql" else {}))
    first = run(dept, ledger)
    assert first.as_dict()["new"] == {"anna": 40, "ben": 40}
    assert {owner: len(ids) for owner, ids in first.todo.items()} == {"anna": 40, "ben": 40}

    anna = home / "anna"
    for n in range(5):                                              # changed: other size and time
        write(anna / "akte0" / f"dok{n:02d}.txt", "geändert " * (n + 2), 1_700_000_000)
    for n in range(4):                                              # deleted
        (anna / "akte1" / f"dok{n:02d}.txt").unlink()
    for n in range(6):                                              # new
        write(anna / "akte9" / f"neu{n}.txt", f"neu {n}")
    (anna / "akte2").rename(anna / "akte2-umbenannt")               # a folder source: new keys
    second = run(dept, ledger)
    assert second.as_dict() == {"new": {"anna": 6 + 8}, "changed": {"anna": 5},
                                "unchanged": {"anna": 40 - 5 - 4 - 8, "ben": 40}, "removed": {"anna": 4 + 8}}

    listed = sorted(str(p.relative_to(anna)) for p in anna.rglob("*") if p.is_file())
    items = rows(dept, ledger, "anna")
    assert len({i.key for i in items}) == len(items)                # each entry once
    assert sorted(i.location for i in items if not i.removed_at_source) == listed
    by_location = {i.location: i for i in items}
    assert {by_location[f"akte0/dok{n:02d}.txt"].change for n in range(5)} == {"changed"}
    assert {by_location[f"akte0/dok{n:02d}.txt"].version.split(":")[1] for n in range(5)} == \
        {str(len(("geändert " * (n + 2)).encode())) for n in range(5)}
    assert all(by_location[f"akte1/dok{n:02d}.txt"].removed_at_source for n in range(4))
    assert {i.change for i in items if i.location.startswith("akte2/")} == {"removed"}
    assert {i.change for i in items if i.location.startswith(("akte9/", "akte2-umbenannt/"))} == {"new"}
    # an unchanged item keeps the last change found: new, in the first pass
    assert {i.change for i in items if i.location.startswith(("akte3/", "akte4/"))} == {"new"}
    assert len(rows(dept, ledger, "ben")) == 40                     # the other user untouched
    ledger.close()


def test_a_pass_that_finds_nothing_writes_nothing(tmp_path):
    home = tmp_path / "home"
    for n in range(30):
        write(home / "anna" / f"ordner{n % 4}" / f"datei{n}.txt", f"inhalt {n}")
    os.symlink("/etc/passwd", home / "anna" / "link")               # listed, skipped
    dept, ledger = department(tmp_path, users=("anna",))
    run(dept, ledger)
    before = {i.id: (i.updated, i.change, i.state) for i in rows(dept, ledger)}
    for _ in range(2):          # the first pass after the one that found everything new writes nothing either
        with ItemWrites(ledger) as again:
            found = run(dept, ledger)
        assert again.statements == []
        assert found.as_dict() == {"new": {}, "changed": {}, "unchanged": {"anna": 31}, "removed": {}}
        assert {i.id: (i.updated, i.change, i.state) for i in rows(dept, ledger)} == before
    assert len(found.todo["anna"]) == 30                            # the link is skipped, not to do
    ledger.close()


class GivenListing:
    """A source whose keys are ids that stay when an entry moves (as OneDrive's drive item ids): the
    listing is given, each call the current one."""

    def __init__(self, name: str) -> None:
        self.name, self.entries = name, []

    def discover(self, owner: str, folder: str):
        for key, location, version in self.entries:
            yield ItemRef(source=self.name, key=key, kind=Kind.FILE, owner=owner, location=location,
                          version=version, size=1)


def test_moved_and_renamed_items_keep_their_key_and_get_a_name_at_their_new_place(tmp_path):
    dept, ledger = department(tmp_path, users=("anna",))
    source = GivenListing("homes")
    source.entries = [(f"id{n}", f"Akten/brief{n}.txt", "v1") for n in range(12)]
    selection = MailSelection.of(dept)

    def one_pass():
        run = ledger.start_run(dept.name, "test")
        with Spool(tmp_path) as spool:
            assert list_source(selection, source, "anna", "anna", spool) == len(source.entries)
            done = reconcile(dept, ledger, run, "anna", "t-anna", "homes", spool, selection)
            apply_removals(dept, ledger, spool)
        ledger.finish_run(run, "completed")
        return done

    assert one_pass().new == 12
    ids = {i.key: i.id for i in rows(dept, ledger)}
    source.entries[3] = ("id3", "Ablage/brief3.txt", "v1")          # moved
    source.entries[4] = ("id4", "Akten/Brief-neu.txt", "v1")        # renamed
    source.entries[5] = ("id5", "Akten/brief5.txt", "v2")           # changed in place
    source.entries[6] = ("id6", "Akten/BRIEF7.txt", "v1")           # renamed onto a case twin of brief7
    done = one_pass()
    assert (done.new, done.changed, done.unchanged, done.removed) == (0, 4, 8, 0)
    items = {i.key: i for i in rows(dept, ledger)}
    assert {k: i.id for k, i in items.items()} == ids                # same rows, same keys
    assert items["id3"].location == "Ablage/brief3.txt" and items["id3"].target_path == "Ablage/brief3.txt"
    assert items["id4"].target_path == "Akten/Brief-neu.txt"
    assert items["id5"].target_path == "Akten/brief5.txt" and items["id5"].change == "changed"
    # brief7.txt claimed its name before: the moved file yields, numbered
    assert (items["id6"].target_path, items["id6"].renamed) == ("Akten/BRIEF7 (2).txt", "case_twin")
    ledger.close()


def test_names_decided_folder_by_folder_are_those_of_one_plan(tmp_path):
    """Twin folders and twin names spread over many slices: the names are those one NamePlan of
    the whole account decides (the order the former single pass used)."""
    from sinks.twins import NamePlan
    nfd = unicodedata.normalize("NFD", "Müller.txt")
    names = ["Akten/a.txt", "akten/b.txt", "AKTEN/a.txt", "akten/sub/c.txt", "Akten/sub/C.txt",
             "Müller.txt", nfd, "Müller (2).txt", "x/Bericht.docx", "x/bericht.docx", "x/Bericht.odt",
             "y/plan.txt", "Y/Plan.txt", "y/z/q.txt", "Y/Z/q.txt"] + [f"füll/{n}.txt" for n in range(20)]
    home = tmp_path / "home" / "anna"
    for name in names:
        write(home / name, name)
    dept, ledger = department(tmp_path, users=("anna",))
    run(dept, ledger)
    got = {i.location: (i.target_path, i.renamed) for i in rows(dept, ledger)}

    plan = NamePlan(ODF)
    ordered = sorted(names, key=lambda loc: (unicodedata.normalize("NFC", loc) != loc, loc))
    expected = plan.plain_many(ordered)
    assert got == expected
    assert got["akten/b.txt"] == ("AKTEN/b.txt", "case_twin") and got[nfd] == ("Müller (3).txt", "nfc_twin")
    ledger.close()


@pytest.mark.parametrize("location", [
    "a.txt", "a/b.txt", "a/b/c.tar.gz", ".profile", "a/.profile", "a..b", "a/b.", "a/", "./a.txt", "a//b.txt",
    "/a/b.txt", "a/./b.txt", "a/../b.txt", "", ".", "..", "a/..", "x.", "Bericht.docx.odt", "a b/c d.e f",
    "latin1-\\xe4.txt", "ordner/.", "a.b/c"])
def test_parent_and_stem_are_those_of_purepath(location):
    p = PurePosixPath(location)
    assert discovery._parent_stem(location) == (str(p.parent), p.stem)
    for n in (0, 1, 2):
        assert discovery._stem_path(location, str(p.parent), p.stem, n) == \
            (str(p.parent / p.stem) if n == 1 else location)


def test_the_spool_of_a_killed_run_is_removed_by_the_next(tmp_path):
    write(tmp_path / "home" / "anna" / "a.txt", "a")
    dept, ledger = department(tmp_path, users=("anna",))
    (tmp_path / "work").mkdir(exist_ok=True)
    dead = subprocess.Popen(["true"])                                # a process id that is gone now
    dead.wait()
    left = tmp_path / "work" / f"umstieg-listing-{dead.pid}-abc"
    left.mkdir()
    (left / "listing.sqlite").write_bytes(b"x" * 1000)
    alive = tmp_path / "work" / f"umstieg-listing-{os.getppid()}-def"     # a live process's: kept
    alive.mkdir()
    run(dept, ledger)
    assert not left.exists() and alive.is_dir()
    assert sorted(p.name for p in (tmp_path / "work").glob("umstieg-listing-*")) == [alive.name]
    ledger.close()


def test_a_key_listed_twice_counts_once_as_first_listed(tmp_path):
    """A source that names one entry twice in a listing (a server paging over a folder that moves
    under it): the first spelling is kept, the count is of distinct keys, and a listing taken
    again from the start replaces the earlier one whole."""
    def row(key: str, version: str) -> tuple:
        return (None, "homes", key, "file", key.split("/", 1)[1], version, 1, None, None, None)
    with Spool(tmp_path) as spool:
        rows = [row("anna/a.txt", "1"), row("anna/b.txt", "1"), row("anna/a.txt", "2"), row("anna/c.txt", "1"),
                row("anna/b.txt", "3")]
        assert spool.fill_listing("homes", rows) == 3
        assert list(spool.rows("SELECT key, version FROM listing ORDER BY seq")) == \
            [("anna/a.txt", "1"), ("anna/b.txt", "1"), ("anna/c.txt", "1")]
        assert spool.fill_listing("homes", [row("anna/d.txt", "1")]) == 1
        assert list(spool.rows("SELECT key FROM listing")) == [("anna/d.txt",)]
