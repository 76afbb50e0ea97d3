"""Discovery: list every source for every user and bring the ledger up to date with the listing.

New items are added, changed items (another source version) go back to `discovered`, items gone
from the source are marked `removed_at_source` (and removed at the target only when the
department says so), and the target names of new or moved files are decided (sinks.twins).

It comes in three parts, per user and source:

1. `list_source`: the source's whole listing, written to a spool (a throw-away SQLite file
   beside the work dir) before anything is decided: a listing is all or nothing, so a server
   that drops out half-way changes nothing in the ledger;
2. `reconcile`: the spool compared with the ledger's rows of that user and source, inside the
   spool (the ledger's few comparison columns are copied there as plain rows), then new rows
   inserted and changed ones updated in bulk statements, and the names of new or moved files
   decided one folder at a time (`_decide_names`);
3. `apply_removals`: what the department removes at the target (items deleted or moved away at
   the source), after the ledger knows.

Memory does not grow with the item count: no part holds a listing, the ledger's rows or ORM
objects of all items at once (SQLite sorts and joins on disk, with a bounded page cache), and a
pass that finds nothing to do writes nothing to the ledger. Issue 19 measured the former single
function at 15.4 s and 403 MB for a no-op pass over 60,000 files; see docs/ for the figures now.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import pickle
import re
import shutil
import sqlite3
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import cast

from sqlalchemy import Table, insert, select, update

from converters.formats import FORMATS, ODF_FORMATS
from core.department import Department
from core.errors import ItemError, TransientError, UserStopped
from core.items import Kind
from core.ledger import Item, Ledger, State, now, process_alive
from core.mailselection import FolderPlan, MailSelection
from core.outcomes import Outcome
from flows.steps import pending_items, with_retries
from core.plugins import ListsMailFolders, MakesMailFolders, Source
from flows.systems import source_of, target_of
from sinks.twins import NamePlan, name_key

__all__ = ["Discovery", "discover", "relist_unlisted", "list_source", "reconcile", "apply_removals", "Spool",
           "Reconciled"]

log = logging.getLogger("umstieg.flows")

#: the ledger's items as a Core table (bulk statements without the ORM's bookkeeping per row)
ITEMS = cast(Table, Item.__table__)

#: Rows per bulk statement and per slice of the listing read at once: large enough that a statement's
#: overhead vanishes, small enough that a slice is a few MB.
SLICE = 2000


@dataclass
class Discovery:
    """What one discovery pass found, per user: the delta against the ledger."""

    new: Counter = field(default_factory=Counter)
    changed: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)
    removed: Counter = field(default_factory=Counter)
    todo: dict[str, Sequence[int]] = field(default_factory=dict)     # owner -> item ids to process

    def as_dict(self) -> dict:
        return {k: dict(getattr(self, k)) for k in ("new", "changed", "unchanged", "removed")}


@dataclass
class Reconciled:
    """What `reconcile` did for one user and source."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0


def discover(dept: Department, ledger: Ledger, run_id: int, owners: list[str] | None = None) -> Discovery:
    """List every source for every (selected) user and bring the ledger up to date with it.

    New items are added, changed items (another source version) go back to `discovered`,
    items gone from the source are marked `removed_at_source` (and removed at the target only
    when the department says so). A user whose listing fails (a refused login, a server that
    stays away) is stopped for this run with nothing of theirs changed; the others go on.
    """
    found = Discovery()
    users = [u for u in dept.users if owners is None or u.source in owners]
    selection = MailSelection.of(dept)
    for user in users:
        with Spool(dept.work_dir) as spool:
            try:
                for src_cfg in dept.sources:
                    source = source_of(dept, src_cfg.name)
                    list_source(selection, source, user.source, user.folder_in(source.name), spool)
                    _make_mail_folders(dept, selection, source, user, spool)
            except (UserStopped, TransientError, ItemError) as exc:
                # this user cannot be listed now (a refused mailbox login, a server that stays away):
                # nothing of theirs is marked removed or moved; the other users go on
                ledger.stop_user(run_id, user.source, f"listing {src_cfg.name} failed: {exc}")
                log.warning("%s: %s waits: listing %s failed: %s", dept.name, user.source, src_cfg.name, exc)
                continue
            for src_cfg in dept.sources:
                done = reconcile(dept, ledger, run_id, user.source, user.target, src_cfg.name, spool, selection)
                for name in ("new", "changed", "unchanged", "removed"):
                    if getattr(done, name):
                        getattr(found, name)[user.source] += getattr(done, name)
                apply_removals(dept, ledger, spool)
        todo = pending_items(ledger, dept.name, user.source)
        if todo:
            found.todo[user.source] = todo
    return found


# ------------------------------------------------------------------------------------------ the spool
class Spool:
    """One user's listings and the working tables of their reconciliation, in a throw-away SQLite
    file (deleted on exit). SQLite, not Python lists: a million entries sort and join on disk with
    a bounded page cache, whatever the ledger's database is."""

    def __init__(self, work_dir: Path | None = None) -> None:
        here = work_dir if work_dir is not None and work_dir.is_dir() else None
        if here is not None:
            _drop_abandoned(here)
        self._dir = tempfile.TemporaryDirectory(prefix=f"umstieg-listing-{os.getpid()}-", dir=here)
        self.db = sqlite3.connect(Path(self._dir.name) / "listing.sqlite", isolation_level=None, uri=True)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-16000", "temp_store=FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        # (the key index is built after a listing is in: one sort instead of a million inserts
        # into a B-tree, a third of a no-op pass before; see `fill_listing`)
        self.db.executescript("""
            CREATE TABLE listing (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, key TEXT NOT NULL,
                kind TEXT NOT NULL, location TEXT NOT NULL, version TEXT, size INTEGER, meta BLOB,
                flag TEXT, spelling TEXT);
        """)

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()
        self._dir.cleanup()

    def rows(self, sql: str, *params) -> Iterator[tuple]:
        """The rows of a query, a slice at a time."""
        cur = self.db.execute(sql, params)
        while rows := cur.fetchmany(SLICE):
            yield from rows

    def one(self, sql: str, *params):
        return self.db.execute(sql, params).fetchone()[0]

    def fill_listing(self, source: str, rows: Iterable[tuple]) -> int:
        """(Re)write the listing of one source, then index it by key; a key listed twice counts
        once, as first listed. Returns the entries kept."""
        self.db.execute("DROP INDEX IF EXISTS listing_key")
        self.db.execute("DELETE FROM listing WHERE source = ?", (source,))
        listed = self.fill("listing", rows)
        self.db.execute("CREATE INDEX listing_key ON listing (source, key)")
        if self.one("SELECT EXISTS (SELECT 1 FROM listing WHERE source = ? GROUP BY key HAVING COUNT(*) > 1)", source):
            listed -= self.db.execute("DELETE FROM listing WHERE source = ? AND seq NOT IN "
                                      "(SELECT MIN(seq) FROM listing WHERE source = ? GROUP BY key)",
                                      (source, source)).rowcount
        return listed

    def fill(self, table: str, rows: Iterable[tuple]) -> int:
        """Insert rows in slices, one transaction (the file is thrown away: no journal); returns how
        many were new (a repeated key is ignored where the table has a unique key)."""
        it, before = iter(rows), self.db.total_changes
        self.db.execute("BEGIN")
        try:
            while chunk := [r for _, r in zip(range(SLICE), it)]:
                marks = ",".join("?" * len(chunk[0]))
                self.db.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", chunk)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return self.db.total_changes - before

    def fresh(self, script: str) -> None:
        """(Re)create working tables: `script` holds their CREATE statements."""
        for name in [w.split()[0] for w in script.split("CREATE TABLE ")[1:]]:
            self.db.execute(f"DROP TABLE IF EXISTS {name}")
        self.db.executescript(script)


def _drop_abandoned(work_dir: Path) -> None:
    """Remove the spools of processes of this machine that ended without removing theirs (killed):
    each can hold a few hundred MB."""
    for old in work_dir.glob("umstieg-listing-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------ 1. listing
def list_source(selection: MailSelection, source, owner: str, folder: str, spool: Spool) -> int:
    """Write the whole listing of one user at one source to the spool; returns the entries listed.

    All or nothing: a blip of the server lists again from the start (what an earlier try spooled
    is dropped first), and an error that persists raises with nothing written to the ledger, so
    that nothing the listing missed is taken for deleted. The selection decides which messages
    are listed (selection.takes); each key is listed once (a repeat of a key is ignored). Entries
    flow from the source to the spool one at a time: the listing is never held in memory."""
    def entries():
        for ref in selection.listed(source, owner, folder):
            meta = ref.meta or {}
            flag = "skipped" if meta.get("skipped") else "unlisted" if meta.get("unlisted") else None
            yield (None, source.name, ref.key, ref.kind.value, ref.location, ref.version, ref.size,
                   # pickle: the spool's own file, read back by this process; 3x faster than json
                   pickle.dumps(meta, pickle.HIGHEST_PROTOCOL) if meta else None, flag, meta.get("decoded_name"))

    return with_retries(lambda: spool.fill_listing(source.name, entries()))


def _make_mail_folders(dept: Department, selection: MailSelection, source: Source, user, spool: Spool) -> None:
    """Create the user's target mail folders the selection takes, empty ones too (as imapsync does):
    the source's own list where it has one (with its subscriptions), else the folders of the
    messages listed."""
    if dept.mail_target is None or dept.mail.dry_run:
        return
    found: Iterable[FolderPlan]
    if isinstance(source, ListsMailFolders):
        found = source.mail_tree(user.source, user.folder_in(source.name))
    else:
        found = {location: FolderPlan(location, (_meta(meta) or {}).get("special_use"))
                 for location, meta in spool.rows("SELECT location, meta FROM listing WHERE source = ? AND kind = ? "
                                                  "ORDER BY seq", source.name, Kind.MESSAGE.value)}.values()
    policy = dept.mail.subscriptions
    folders = [(f.location, {"special_use": f.special_use, "target_folder": selection.target_folder(f.location)},
                policy == "all" or (policy == "source" and f.subscribed is not False))
               for f in selection.folders(found)]
    if not folders:
        return
    try:
        sink = target_of(dept, Kind.MESSAGE)
        if isinstance(sink, MakesMailFolders):     # (the others make a folder when its first message arrives)
            with_retries(sink.make_folders, user.target, folders)
    except (UserStopped, TransientError, ItemError) as exc:
        # the account waits (checked before the run) or a name was refused: the folders that hold
        # messages are still made as those arrive
        log.warning("%s: the mail folders of %s could not all be made at the target: %s", dept.name, user.target, exc)


def _meta(blob: bytes | None) -> dict | None:
    return pickle.loads(blob) if blob is not None else None


# ------------------------------------------------------------------------------------------ 2. reconciling
_WORK = """
CREATE TABLE known (id INTEGER PRIMARY KEY, key TEXT NOT NULL, version TEXT, location TEXT,
    removed INTEGER, state TEXT, reason TEXT, change TEXT, kind TEXT, target_ref TEXT);
CREATE TABLE naming (seq INTEGER PRIMARY KEY, id INTEGER, part TEXT, decoded INTEGER, odd INTEGER,
    location TEXT, spelling TEXT, stem TEXT, renamed TEXT);
CREATE TABLE claims (part TEXT, id INTEGER, location TEXT, plain TEXT, stem TEXT);
CREATE TABLE named (seq INTEGER PRIMARY KEY, target_path TEXT, renamed TEXT, target_stem TEXT);
CREATE TABLE stems (parent TEXT, stem TEXT, n INTEGER, PRIMARY KEY (parent, stem));
CREATE TABLE removals (id INTEGER, kind TEXT, target_ref TEXT, original_ref TEXT);
"""

#: a listed entry that is the item the ledger knows, as it knows it (SQL over listing l, known k)
_SAME = ("l.version = k.version AND l.location = k.location AND k.removed = 0 "
         "AND NOT (k.state = 'failed' AND k.reason IS 'changed_at_source')")
_LISTED = "l.seq, l.key, l.kind, l.location, l.version, l.size, l.meta, l.flag, l.spelling"


def reconcile(dept: Department, ledger: Ledger, run_id: int, owner: str, target_owner: str, source: str,
              spool: Spool, selection: MailSelection) -> Reconciled:
    """Bring the ledger's items of one user at one source up to date with the spooled listing.

    Guarantees, in one ledger transaction: every listed entry is counted once, as new (a row
    inserted), changed (another version, moved or renamed under the same key, back from removed,
    or failed as `changed_at_source`: back to `discovered`) or unchanged (left alone); links,
    FIFOs and names matching the skip patterns are recorded as skipped; a known item missing from
    the listing is marked `removed_at_source`, unless it lies in a folder that could not be listed
    now (an `unlisted` placeholder) or the selection no longer takes it (left out is not deleted).
    New and moved files get their target names (`_decide_names`), seeing every name this target
    account already holds. What the target must lose is left in the spool for `apply_removals`.
    A pass that finds nothing changed writes nothing."""
    done = Reconciled()
    spool.fresh(_WORK)
    with ledger.session() as s:
        _copy_known(s, spool, dept.name, source, owner)
        done.unchanged = spool.one(f"SELECT COUNT(*) FROM listing l JOIN known k ON k.key = l.key "
                                   f"WHERE l.source = ? AND {_SAME}", source)
        # what must be named: new and moved files; their ODF stems need the folder's other stems
        if spool.one("SELECT EXISTS (SELECT 1 FROM listing l LEFT JOIN known k ON k.key = l.key WHERE l.source = ? "
                     "AND l.kind = 'file' AND (k.id IS NULL OR k.location != l.location))", source):
            _count_stems(spool, source)
        moving = _plan_names(dept, spool, source)
        _decide_names(dept, s, spool, target_owner, source, moving)
        done.new = _insert_new(dept, s, spool, run_id, owner, target_owner, source)
        done.changed = _update_changed(dept, s, spool, run_id, target_owner, source)
        # an unchanged item keeps its record as it is: its `change` tells the last change found
        # (new, changed, removed), and the run's delta counts it as unchanged. Marking a million
        # items "unchanged" was a million-row write on the first pass after a migration (issue 19)
        done.removed = _mark_removed(dept, s, spool, run_id, source, selection)
    return done


_KNOWN = ("id", "key", "version", "location", "removed_at_source", "state", "reason", "change", "kind", "target_ref")


def _copy_known(s, spool: Spool, department: str, source: str, owner: str) -> None:
    """The ledger's comparison columns of the user's items at this source, as plain rows, then
    indexed by key (unique in the ledger per department and source)."""
    if not _copy_known_from_file(s, spool, (department, source, owner)):
        # Core rows, not ORM ones: a third of the cost of reading a million rows goes to the ORM
        mine = (Item.department == department, Item.source == source, Item.owner == owner)
        result = s.connection().execute(select(*(getattr(Item, c) for c in _KNOWN)).where(*mine)
                                        .execution_options(yield_per=SLICE))
        spool.fill("known", (tuple(r) for part in result.partitions() for r in part))
    spool.db.execute("CREATE UNIQUE INDEX known_key ON known (key)")


def _copy_known_from_file(s, spool: Spool, whose: tuple[str, str, str]) -> bool:
    """Copy the rows straight from a SQLite ledger's file, inside SQLite (the spool's connection
    reads it, attached read-only): a million rows in seconds, against 20 s as Python rows
    (measured, issue 19). What it reads is the ledger as last committed, which is all there is:
    this pass has written nothing yet. False where the ledger is no SQLite file (PostgreSQL)."""
    engine = s.get_bind()
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:" or not Path(path).is_file():
        return False
    try:
        spool.db.execute("ATTACH DATABASE ? AS ledger", (Path(path).resolve().as_uri() + "?mode=ro",))
    except sqlite3.Error:
        return False
    try:
        spool.db.execute(f"INSERT INTO known SELECT {', '.join(_KNOWN)} FROM ledger.items "
                         f"WHERE department = ? AND source = ? AND owner = ?", whose)
    finally:
        spool.db.execute("DETACH DATABASE ledger")
    return True


def _parent_stem(location: str) -> tuple[str, str]:
    """(str(PurePosixPath(location).parent), PurePosixPath(location).stem), fast for plain paths:
    a PurePosixPath costs 4 µs, a million of them a noticeable part of a listing."""
    if location.startswith(("/", "./")) or location.endswith(("/", ".")) or "//" in location or "/./" in location:
        p = PurePosixPath(location)
        return str(p.parent), p.stem
    parent, _, name = location.rpartition("/")
    dot = name.rfind(".")
    return parent or ".", name[:dot] if 0 < dot < len(name) - 1 else name


def _stem_path(location: str, parent: str, stem: str, n: int) -> str:
    """sources.fileshare.odf_stem, given how many files of the folder share this stem (`n`)."""
    if n != 1:
        return location
    if not stem or parent == "/":
        return str(PurePosixPath(parent) / stem)
    return stem if parent == "." else f"{parent}/{stem}"     # parent is normalised (_parent_stem)


def _count_stems(spool: Spool, source: str) -> None:
    """How many entries of each folder share a stem (sources.fileshare.odf_stem), counted on disk."""
    def pairs():
        for (location,) in spool.rows("SELECT location FROM listing WHERE source = ? AND flag IS NOT 'skipped'",
                                      source):
            yield _parent_stem(location)
    spool.db.execute("BEGIN")
    spool.db.execute("CREATE TEMP TABLE IF NOT EXISTS pairs (parent TEXT, stem TEXT)")
    spool.db.execute("DELETE FROM pairs")
    it = pairs()
    while chunk := [r for _, r in zip(range(SLICE), it)]:
        spool.db.executemany("INSERT INTO pairs VALUES (?, ?)", chunk)
    spool.db.execute("INSERT INTO stems SELECT parent, stem, COUNT(*) FROM pairs GROUP BY parent, stem")
    spool.db.execute("DELETE FROM pairs")
    spool.db.execute("COMMIT")


class _Stems:
    """sources.fileshare.odf_stem over the spool's `stems` counts, read one folder at a time (the
    entries of a folder come together in a listing: one query per folder, not per file)."""

    def __init__(self, spool: Spool) -> None:
        self.spool, self.parent = spool, ""
        self.counts: dict[str, int] = {}

    def __call__(self, location: str) -> str:
        parent, stem = _parent_stem(location)
        if parent != self.parent:
            self.parent = parent
            self.counts = dict(self.spool.db.execute("SELECT stem, n FROM stems WHERE parent = ?", (parent,)))
        return _stem_path(location, parent, stem, self.counts.get(stem, 0))


def _plan_names(dept: Department, spool: Spool, source: str) -> set[int]:
    """Spool the files whose target names are to be decided: new and moved files that are sent (not
    skipped); returns the ids of the moved ones (their earlier names no longer claim)."""
    moving: set[int] = set()
    odf_stem = _Stems(spool)

    def rows():
        for seq, kid, location, meta, spelling in spool.rows(
                "SELECT l.seq, k.id, l.location, l.meta, l.spelling FROM listing l LEFT JOIN known k ON k.key = l.key "
                "WHERE l.source = ? AND l.kind = 'file' AND l.flag IS NOT 'skipped' "
                "AND (k.id IS NULL OR k.location != l.location) ORDER BY l.seq", source):
            if _skipped_name(dept, location):
                continue
            if kid is not None:
                moving.add(kid)
            spelled = spelling or location
            renamed = (_meta(meta) or {}).get("renamed")
            yield (seq, kid, name_key(spelled.rpartition("/")[0]), spelling is not None,
                   unicodedata.normalize("NFC", location) != location, location, spelled, odf_stem(location),
                   renamed)
    spool.fill("naming", rows())
    return moving


def _decide_names(dept: Department, s, spool: Spool, target_owner: str, source: str, moving: set[int]) -> None:
    """The target names of new or moved files (sinks.twins), spooled by `_plan_names`, decided into
    the spool's `named`: the names earlier runs decided for this account's files of this source
    claim first, whoever's they are (users merged into one account share one tree), then the new
    ones in an order that does not depend on the listing's. Files removed at the target, or never
    sent (skip patterns), claim nothing.

    Two names can only be one file in one folder, so each folder is planned on its own (its claims
    and its new files), with the folders' spellings shared: the same names result as from one plan
    of the whole account, with only one folder's names in memory."""
    if not spool.one("SELECT EXISTS (SELECT 1 FROM naming)"):
        return
    odf = sorted(ODF_FORMATS)
    folders: dict[str, str] = {}
    spelling = NamePlan(odf, folders)
    parts = {p for (p,) in spool.rows("SELECT DISTINCT part FROM naming")}

    def claims():
        last, part = None, None
        rows = s.execute(select(Item.id, Item.location, Item.target_path, Item.target_stem, Item.conversion,
                                Item.state, Item.reason).where(
            Item.department == dept.name, Item.source == source, Item.target_owner == target_owner,
            Item.kind == Kind.FILE.value).order_by(Item.id).execution_options(yield_per=SLICE))
        for item_id, location, path, stem, conversion, state, reason in rows:
            if item_id in moving or (state == State.SKIPPED.value and reason in ("removed_at_source", "skipped_name")):
                continue
            plain = path or location
            parent = plain.rpartition("/")[0]
            if parent != last:                  # the folders' spellings: claimed once per folder
                last, part = parent, name_key(parent)
                spelling.claim_folders(plain)
            if part in parts:
                converted = conversion == Outcome.CONVERTED.value or _converts(dept, location)
                yield part, item_id, location, plain, stem if converted else None
    spool.fill("claims", claims())
    spool.db.execute("CREATE INDEX claims_part ON claims (part, id)")
    spool.db.execute("CREATE INDEX naming_part ON naming (part, decoded, odd, location, seq)")
    # then the new files' folders, in the order they are named (as one plan would have met them)
    last = None
    for (spelled,) in spool.rows("SELECT spelling FROM naming ORDER BY decoded, odd, location, seq"):
        if (parent := spelled.rpartition("/")[0]) != last:     # once per folder is enough
            last = parent
            spelling.claim_folders(spelled)
    for part in sorted(parts):
        plan = NamePlan(odf, folders)
        for location, plain, stem in spool.rows("SELECT location, plain, stem FROM claims WHERE part = ? ORDER BY id",
                                                part):
            plan.keep(location, plain, stem)
        # names whose bytes had to be decoded come last: a real `latin1-ä.txt` keeps its name
        ordered = list(spool.rows("SELECT seq, location, spelling, stem, renamed FROM naming WHERE part = ? "
                                  "ORDER BY decoded, odd, location, seq", part))
        first: dict[str, int] = {}
        for seq, _, spelled, _, _ in ordered:
            first.setdefault(spelled, seq)
        decided = plan.plain_many(list(first))
        plain = []
        for seq, _, spelled, _, renamed in ordered:
            # a decoded name that spells another file's name is numbered like any twin
            path, why = decided[spelled] if first[spelled] == seq else plan.plain(spelled)
            plain.append((path, renamed or why))        # undecodable_name says why first
        names = []
        for (seq, location, spelled, stem, _), (path, why) in zip(ordered, plain):
            if _converts(dept, location):
                stem, also = plan.converted(spelled, path, stem)
                why = why or also
            else:       # should its content still make it an ODF copy, that copy keeps the whole name
                stem = path
            names.append((seq, path, why, stem))
        spool.fill("named", names)


def _insert_new(dept: Department, s, spool: Spool, run_id: int, owner: str, target_owner: str, source: str) -> int:
    """Insert the entries the ledger does not know, SLICE rows per statement; returns how many."""
    count = 0
    batch: list[dict] = []
    odf_stem = _Stems(spool)
    for _seq, key, kind, location, version, size, meta, flag, _, path, renamed, stem in spool.rows(
            f"SELECT {_LISTED}, n.target_path, n.renamed, n.target_stem FROM listing l "
            f"LEFT JOIN known k ON k.key = l.key LEFT JOIN named n ON n.seq = l.seq "
            f"WHERE l.source = ? AND k.id IS NULL ORDER BY l.seq", source):
        meta = _meta(meta)
        state, reason, message = _state_of(dept, kind, location, meta, flag)
        if stem is None:
            stem = odf_stem(location) if kind == Kind.FILE.value else location
        batch.append(dict(department=dept.name, source=source, key=key, kind=kind, owner=owner,
                          target_owner=target_owner, location=location, target_stem=stem, target_path=path,
                          renamed=renamed, meta=meta, version=version, size=size, state=state, reason=reason,
                          message=message, change="new", run_id=run_id))
        count += 1
        if len(batch) == SLICE:       # Core, not the ORM's bulk insert: half the cost per row, measured
            s.connection().execute(insert(ITEMS), batch)
            batch = []
    if batch:
        s.connection().execute(insert(ITEMS), batch)
    return count


def _state_of(dept: Department, kind: str, location: str, meta: dict | None,
              flag: str | None) -> tuple[str, str | None, str | None]:
    """(state, reason, message) of a new or changed entry: skipped if it is not moved."""
    if kind == Kind.FILE.value and flag == "skipped":
        # a link, FIFO, socket or device: listed so that a person sees it was not moved
        return State.SKIPPED.value, (meta or {})["skipped"], (meta or {}).get("why")
    if kind == Kind.FILE.value and _skipped_name(dept, location):
        return (State.SKIPPED.value, "skipped_name",
                "matches the department's skip patterns (lock file or system cache)")
    return State.DISCOVERED.value, None, None


def _update_changed(dept: Department, s, spool: Spool, run_id: int, target_owner: str, source: str) -> int:
    """Update the items whose listed entry differs from what the ledger knows; returns how many.
    A moved or renamed one keeps its key (and history); its copy at the old place is left for
    `apply_removals` when the department removes at the target."""
    count = 0
    shapes: dict[tuple, list[dict]] = {}
    moved_away = []
    odf_stem = _Stems(spool)
    for (_seq, _key, kind, location, version, size, meta, flag, _, item_id, old_location, old_kind, target_ref,
         path, renamed, stem) in spool.rows(
            f"SELECT {_LISTED}, k.id, k.location, k.kind, k.target_ref, n.target_path, n.renamed, n.target_stem "
            f"FROM listing l JOIN known k ON k.key = l.key LEFT JOIN named n ON n.seq = l.seq "
            f"WHERE l.source = ? AND NOT ({_SAME}) ORDER BY l.seq", source):
        meta = _meta(meta)
        state, reason, message = _state_of(dept, kind, location, meta, flag)
        row = dict(id=item_id, version=version, size=size, change="changed", meta=meta, state=state, reason=reason,
                   message=message, removed_at_source=False, run_id=run_id, target_owner=target_owner,
                   updated=now())
        if old_location != location:                # moved or renamed at the source (same key)
            if target_ref and dept.delete_at_target:
                moved_away.append((None, old_kind, target_ref, None))
            row["location"] = location
            row["target_stem"] = odf_stem(location) if kind == Kind.FILE.value else location
            if stem is not None:                     # named anew (a file that is sent)
                row.update(target_path=path, renamed=renamed, target_stem=stem)
        shapes.setdefault(tuple(row), []).append(row)
        count += 1
        if sum(len(rows) for rows in shapes.values()) >= SLICE:
            _flush(s, shapes)
    _flush(s, shapes)
    spool.fill("removals", moved_away)
    return count


def _flush(s, shapes: dict[tuple, list[dict]]) -> None:
    """One UPDATE by primary key per shape of row, executed for many rows."""
    for rows in shapes.values():
        s.execute(update(Item), rows)
    shapes.clear()


def _mark_removed(dept: Department, s, spool: Spool, run_id: int, source: str, selection: MailSelection) -> int:
    """Mark `removed_at_source` what the ledger knows and the listing no longer has; returns how many."""
    unlisted = tuple(loc for (loc,) in spool.rows("SELECT location FROM listing WHERE source = ? AND flag = 'unlisted'",
                                                  source))
    if unlisted and "./" in unlisted:
        return 0                        # the top of the user's folder could not be listed: nothing is gone
    missing = [i for (i,) in spool.rows("SELECT k.id FROM known k LEFT JOIN listing l ON l.source = ? AND "
                                        "l.key = k.key WHERE l.seq IS NULL AND k.removed = 0 ORDER BY k.id",
                                        source)]
    count = 0
    for at in range(0, len(missing), SLICE):
        rows, removals = [], []
        for item_id, kind, location, meta, size, state, target_ref, original_ref in s.execute(
                select(Item.id, Item.kind, Item.location, Item.meta, Item.size, Item.state, Item.target_ref,
                       Item.original_ref).where(Item.id.in_(missing[at:at + SLICE])).order_by(Item.id)):
            # what the selection does not take now is merely left out; what was found before in a
            # folder that could not be listed now is not gone
            if not selection.takes(kind, location, meta, size) or (unlisted and location.startswith(unlisted)):
                continue
            row = dict(id=item_id, removed_at_source=True, change="removed", run_id=run_id, updated=now())
            if (meta or {}).get("unlisted") and state in (State.FAILED.value, State.DISCOVERED.value):
                # the placeholder of a folder that lists again (its files are items of their own now)
                # or is gone: nothing is left failed for it
                row.update(state=State.SKIPPED.value, reason="listed_again",
                           message="the folder could be listed again (or is gone); its files are items of their own")
            rows.append(row)
            if dept.delete_at_target:
                removals.append((item_id, kind, target_ref, original_ref))
        shapes: dict[tuple, list[dict]] = {}
        for row in rows:
            shapes.setdefault(tuple(row), []).append(row)
        _flush(s, shapes)
        spool.fill("removals", removals)
        count += len(rows)
    return count


# ------------------------------------------------------------------------------------------ 3. removals
def apply_removals(dept: Department, ledger: Ledger, spool: Spool) -> None:
    """Remove at the target what `reconcile` left in the spool, after the ledger knows of it: the
    copies at the old place of items moved at the source, and (when the department removes at the
    target) the copies and kept originals of items deleted at the source, each then recorded as
    skipped (`removed_at_source`). Nothing is removed unless `delete_at_target` says so."""
    for item_id, kind, target_ref, original_ref in spool.rows("SELECT id, kind, target_ref, original_ref "
                                                              "FROM removals ORDER BY rowid"):
        sink = target_of(dept, kind)
        if item_id is None:                          # a moved item's copy at the place it left
            sink.remove(target_ref)
            continue
        for ref in (target_ref, original_ref):
            if ref:
                sink.remove(ref)
        ledger.record(item_id, state=State.SKIPPED, reason="removed_at_source",
                      message="deleted at the source; removed at the target as configured")


# ------------------------------------------------------------------------------------------ helpers
def _converts(dept: Department, location: str) -> bool:
    """Whether a file of this name is expected to become an ODF copy (its extension says Office)."""
    if not dept.conversion.enabled:
        return False
    fmt = FORMATS.get(PurePosixPath(location).suffix.lower().lstrip("."))
    return fmt is not None and not fmt.is_odf


def _skipped_name(dept: Department, location: str) -> bool:
    """Whether the file's name matches one of the department's skip patterns (case ignored)."""
    name = location.rpartition("/")[2] if not location.endswith(("/", ".")) else PurePosixPath(location).name
    return _skip_pattern(tuple(dept.skip)).match(name.casefold()) is not None


@functools.lru_cache(maxsize=8)
def _skip_pattern(patterns: tuple[str, ...]) -> re.Pattern:
    """The skip patterns as one expression: fnmatch per pattern costs 2 µs a name, a million names 2 s each."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p.casefold())})" for p in patterns) or r"(?!)")


def relist_unlisted(dept: Department, ledger: Ledger, run_id: int, items: list[Item]) -> dict[str, list[int]]:
    """List again the users of the folders that could not be listed (the placeholders, reason
    `unlisted_folder`, among the failed `items` a rerun takes), so that a rerun after the cause is
    fixed moves what those folders hold: {owner: ids of the items now found in them}. A folder that
    lists now has its placeholder closed (`listed_again`); one that still does not stays failed."""
    folders: dict[str, set[str]] = {}
    for item in items:
        if item.reason == "unlisted_folder" and item.location.endswith("/"):
            folders.setdefault(item.owner, set()).add(item.location)
    if not folders:
        return {}
    discover(dept, ledger, run_id, list(folders))
    found: dict[str, list[int]] = {}
    with ledger.session() as s:
        for owner, locations in folders.items():
            whole = "./" in locations               # the top of the user's folder itself
            rows = s.execute(select(Item.id, Item.location).where(
                Item.department == dept.name, Item.owner == owner, Item.removed_at_source.is_(False),
                Item.state.in_([State.DISCOVERED, State.EXTRACTED, State.CONVERTED, State.LOADED])))
            found[owner] = [i for i, loc in rows if whole or loc.startswith(tuple(locations))]
    return found
