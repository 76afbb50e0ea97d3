"""Discovery: list every source for every user and bring the ledger up to date with the listing.

New items are added, changed items (another source version) go back to `discovered`, items gone
from the source are marked `removed_at_source` (and removed at the target only when the
department says so), and the target names of new or moved files are decided (sinks.twins).
"""

from __future__ import annotations

import fnmatch
import logging
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from sqlalchemy import select

from converters.formats import FORMATS, ODF_FORMATS
from core.department import Department
from core.errors import ItemError, TransientError, UserStopped
from core.items import ItemRef, Kind
from core.ledger import Item, Ledger, State
from core.mailselection import FolderPlan, MailSelection
from core.outcomes import Outcome
from flows.steps import pending_items, with_retries
from core.plugins import ListsMailFolders
from flows.systems import source_of, target_of
from sinks.twins import NamePlan
from sources.fileshare import odf_stem

__all__ = ["Discovery", "discover", "relist_unlisted"]

log = logging.getLogger("umstieg.flows")


@dataclass
class Discovery:
    """What one discovery pass found, per user: the delta against the ledger."""

    new: Counter = field(default_factory=Counter)
    changed: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)
    removed: Counter = field(default_factory=Counter)
    todo: dict[str, list[int]] = field(default_factory=dict)     # owner -> item ids to process

    def as_dict(self) -> dict:
        return {k: dict(getattr(self, k)) for k in ("new", "changed", "unchanged", "removed")}


def discover(dept: Department, ledger: Ledger, run_id: int, owners: list[str] | None = None) -> Discovery:
    """List every source for every (selected) user and bring the ledger up to date with it.

    New items are added, changed items (another source version) go back to `discovered`,
    items gone from the source are marked `removed_at_source` (and removed at the target only
    when the department says so).
    """
    found = Discovery()
    users = [u for u in dept.users if owners is None or u.source in owners]
    selection = MailSelection.of(dept)
    for user in users:
        todo: list[int] = []
        listings = {}
        try:
            for src_cfg in dept.sources:
                source = source_of(dept, src_cfg.name)
                # a listing is all or nothing (what is missing from it counts as removed): a blip
                # of the server lists again, from the start
                listings[src_cfg.name] = with_retries(
                    lambda: selection.listed(source, user.source, user.folder_in(source.name)))
                _make_mail_folders(dept, selection, source, user, listings[src_cfg.name])
        except (UserStopped, TransientError, ItemError) as exc:
            # this user cannot be listed now (a refused mailbox login, a server that stays away):
            # nothing of theirs is marked removed or moved; the other users go on
            ledger.stop_user(run_id, user.source, f"listing {src_cfg.name} failed: {exc}")
            log.warning("%s: %s waits: listing %s failed: %s", dept.name, user.source, src_cfg.name, exc)
            continue
        for src_cfg in dept.sources:
            source = source_of(dept, src_cfg.name)
            refs = listings[src_cfg.name]
            siblings = Counter((str(PurePosixPath(r.location).parent), PurePosixPath(r.location).stem)
                               for r in refs if not (r.meta or {}).get("skipped"))
            seen: set[str] = set()
            moved_away: list[tuple[str, str]] = []  # (kind, target copy) at a place the source no longer has
            naming: list[Item] = []                 # new or moved files: their target names are decided below
            with ledger.session() as s:
                known = {i.key: i for i in s.scalars(select(Item).where(
                    Item.department == dept.name, Item.source == source.name, Item.owner == user.source))}
                for ref in refs:
                    seen.add(ref.key)
                    item = known.get(ref.key)
                    if item is None:
                        stem = odf_stem(ref.location, siblings) if ref.kind is Kind.FILE else ref.location
                        item = Item(department=dept.name, source=ref.source, key=ref.key, kind=ref.kind.value,
                                    owner=user.source, target_owner=user.target, location=ref.location,
                                    target_stem=stem, meta=ref.meta,
                                    version=ref.version, size=ref.size, state=State.DISCOVERED.value,
                                    change="new", run_id=run_id)
                        s.add(item)
                        found.new[user.source] += 1
                        relocated = True
                    elif item.version != ref.version or item.removed_at_source or item.location != ref.location \
                            or (item.state == State.FAILED.value and item.reason == "changed_at_source"):
                        relocated = item.location != ref.location
                        if relocated:                       # moved or renamed at the source (same key)
                            if item.target_ref and dept.delete_at_target:
                                moved_away.append((item.kind, item.target_ref))
                            item.location = ref.location
                            item.target_stem = odf_stem(ref.location, siblings) if ref.kind is Kind.FILE \
                                else ref.location
                        item.version, item.size, item.change = ref.version, ref.size, "changed"
                        item.meta = ref.meta
                        item.state, item.reason, item.message = State.DISCOVERED.value, None, None
                        item.removed_at_source, item.run_id = False, run_id
                        item.target_owner = user.target
                        found.changed[user.source] += 1
                    else:
                        item.change = "unchanged"
                        found.unchanged[user.source] += 1
                        continue
                    if ref.kind is Kind.FILE and (ref.meta or {}).get("skipped"):
                        # a link, FIFO, socket or device: listed so that a person sees it was not moved
                        item.state, item.reason, item.message = State.SKIPPED.value, ref.meta["skipped"], \
                            ref.meta.get("why")
                    elif ref.kind is Kind.FILE and _skipped_name(dept, ref.location):
                        item.state, item.reason = State.SKIPPED.value, "skipped_name"
                        item.message = "matches the department's skip patterns (lock file or system cache)"
                    elif ref.kind is Kind.FILE and relocated:
                        naming.append(item)
                _decide_names(dept, s, user.target, source.name, naming)
                # what was found before in a folder that could not be listed now is not gone
                unlisted = tuple(r.location for r in refs if (r.meta or {}).get("unlisted"))
                gone = [i for k, i in known.items() if k not in seen and not i.removed_at_source
                        and selection.takes(i.kind, i.location, i.meta, i.size)     # not merely left out now
                        and not (unlisted and (i.location.startswith(unlisted) or "./" in unlisted))]
                for item in gone:
                    item.removed_at_source, item.change, item.run_id = True, "removed", run_id
                    found.removed[user.source] += 1
                    if (item.meta or {}).get("unlisted") and item.state in (State.FAILED.value,
                                                                               State.DISCOVERED.value):
                        # the placeholder of a folder that lists again (its files are items of their
                        # own now) or is gone: nothing is left failed for it
                        item.state, item.reason = State.SKIPPED.value, "listed_again"
                        item.message = "the folder could be listed again (or is gone); its files are items of their own"
                s.flush()
            for kind, ref in moved_away:
                target_of(dept, kind).remove(ref)
            if gone and dept.delete_at_target:
                for item in gone:
                    sink = target_of(dept, item.kind)
                    for ref in (item.target_ref, item.original_ref):
                        if ref:
                            sink.remove(ref)
                    ledger.record(item.id, state=State.SKIPPED, reason="removed_at_source",
                                  message="deleted at the source; removed at the target as configured")
        todo = pending_items(ledger, dept.name, user.source)
        if todo:
            found.todo[user.source] = todo
    return found


def _make_mail_folders(dept: Department, selection: MailSelection, source, user, refs: list[ItemRef]) -> None:
    """Create the user's target mail folders the selection takes, empty ones too (as imapsync does):
    the source's own list where it has one (with its subscriptions), else the folders of the
    messages listed."""
    if dept.mail_target is None or dept.mail.dry_run:
        return
    if isinstance(source, ListsMailFolders):
        found = source.mail_tree(user.source, user.folder_in(source.name))
    else:
        found = {r.location: FolderPlan(r.location, (r.meta or {}).get("special_use"))
                 for r in refs if r.kind is Kind.MESSAGE}.values()
    policy = dept.mail.subscriptions
    folders = [(f.location, {"special_use": f.special_use, "target_folder": selection.target_folder(f.location)},
                policy == "all" or (policy == "source" and f.subscribed is not False))
               for f in selection.folders(found)]
    if not folders:
        return
    try:
        with_retries(target_of(dept, Kind.MESSAGE).make_folders, user.target, folders)
    except (UserStopped, TransientError, ItemError) as exc:
        # the account waits (checked before the run) or a name was refused: the folders that hold
        # messages are still made as those arrive
        log.warning("%s: the mail folders of %s could not all be made at the target: %s", dept.name, user.target, exc)



def _converts(dept: Department, location: str) -> bool:
    """Whether a file of this name is expected to become an ODF copy (its extension says Office)."""
    fmt = FORMATS.get(PurePosixPath(location).suffix.lower().lstrip("."))
    return dept.conversion.enabled and fmt is not None and not fmt.is_odf


def _decide_names(dept: Department, s, target_owner: str, source: str, items: list[Item]) -> None:
    """The target names of new or moved files (sinks.twins): the names earlier runs decided for
    this account's files of this source claim first, whoever's they are (users merged into one
    account share one tree), then `items` in an order that does not depend on the listing's.
    Files removed at the target, or never sent (skip patterns), claim nothing."""
    if not items:
        return
    plan = NamePlan(sorted(ODF_FORMATS))
    moving = [i.id for i in items if i.id is not None]
    with s.no_autoflush:                       # the new items are not claims of an earlier run
        rows = s.execute(select(Item.location, Item.target_path, Item.target_stem, Item.conversion, Item.state,
                                Item.reason).where(
            Item.department == dept.name, Item.source == source, Item.target_owner == target_owner,
            Item.kind == Kind.FILE.value, Item.id.notin_(moving)).order_by(Item.id))
        for location, path, stem, conversion, state, reason in rows:
            if state == State.SKIPPED.value and reason in ("removed_at_source", "skipped_name"):
                continue
            converted = conversion == Outcome.CONVERTED.value or _converts(dept, location)
            plan.keep(location, path or location, stem if converted else None)
    # names whose bytes had to be decoded come last: a real `latin1-ä.txt` keeps its name
    ordered = sorted(items, key=lambda i: ("decoded_name" in (i.meta or {}),
                                           unicodedata.normalize("NFC", i.location) != i.location, i.location))
    first: dict[str, Item] = {}
    for item in ordered:
        first.setdefault(_spelling(item), item)
    decided = plan.plain_many(list(first))
    for item in ordered:
        spelling = _spelling(item)
        # a decoded name that spells another file's name is numbered like any twin
        item.target_path, item.renamed = decided[spelling] if first[spelling] is item else plan.plain(spelling)
        item.renamed = (item.meta or {}).get("renamed") or item.renamed    # undecodable_name says why first
    for item in ordered:
        if _converts(dept, item.location):
            item.target_stem, why = plan.converted(_spelling(item), item.target_path, item.target_stem)
            item.renamed = item.renamed or why
        else:       # should its content still make it an ODF copy, that copy keeps the whole name
            item.target_stem = item.target_path


def _spelling(item: Item) -> str:
    """The name a file is to land as before twins are told apart: its location, or for a name
    whose bytes are not UTF-8 the decoded name its source gives (`latin1-\\xe4.txt` → `latin1-ä.txt`)."""
    return (item.meta or {}).get("decoded_name") or item.location


def _skipped_name(dept: Department, location: str) -> bool:
    name = PurePosixPath(location).name
    return any(fnmatch.fnmatchcase(name.casefold(), pattern.casefold()) for pattern in dept.skip)



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
