"""The steps every item goes through after discovery (flows/discovery.py): extract → convert → load → verify.

Each step records its effect and the item's new state in one ledger commit, after the effect is
durable. A crash between an effect and its commit only means the step is done again on the next
run, and every step is idempotent: extraction overwrites the staged copy, conversion writes
atomically, loading finds identical content already at the target and does not write it twice.

Plain Python, called by the chunk runners of flows/migrate.py, so that a step can be reasoned
about (and tested) without an orchestrator.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select, update

from converters.formats import FORMATS
from core.department import Department, KeepOriginal
from core.digests import sha256_file
from core.errors import ItemError, TransientError, UserStopped
from core.items import ItemRef, Kind
from core.ledger import Item, Ledger, State, now
from core.outcomes import Outcome
from core.plugins import (AppendsMessages, ComparesWithListing, FetchesMessages, PublishesTogether, SharesFiles,
                          Sink)
from core.retry import with_retries  # one policy for every retry (issue 18); kept importable from here
from flows import runtime
from flows.sharing import plan_shares
from flows.systems import sink_for, source_of, target_of

__all__ = ["process_chunk", "with_retries", "pending_items", "select_failed", "reset_for_rerun"]

log = logging.getLogger("umstieg.flows")

#: Conversion outcomes after which the original travels unchanged but a person should look at it.
_NEEDS_A_PERSON = {Outcome.ENCRYPTED, Outcome.UNREADABLE}


def _held_by_others(ledger: Ledger, dept: Department, key: str, refs: list[str]) -> set[str]:
    """Which of these target references other items of the department hold (identical messages)."""
    with ledger.session() as s:
        return set(s.scalars(select(Item.target_ref).where(
            Item.department == dept.name, Item.target_ref.in_(refs), Item.key != key)))



def pending_items(ledger: Ledger, department: str, owner: str) -> Sequence[int]:
    """Items of one user that still have steps to do (not done, not failed, not removed), by id.
    As an array of 8-byte ids, streamed from the ledger: a run holds its todo the whole run, and
    a million ids as a list of Python ints were 36 MB more (issue 19)."""
    ids = array("q")
    with ledger.session() as s:
        ids.extend(s.scalars(select(Item.id).where(
            Item.department == department, Item.owner == owner, Item.removed_at_source.is_(False),
            Item.state.in_([State.DISCOVERED, State.EXTRACTED, State.CONVERTED, State.LOADED]))
            .order_by(Item.id).execution_options(yield_per=2000)))
    return ids


def select_failed(ledger: Ledger, department: str, batch: int | None = None, error_class: str | None = None,
                  owner: str | None = None) -> list[Item]:
    """Failed items matching every given filter (not those deleted at the source since: they have
    nothing left to move)."""
    q = select(Item).where(Item.department == department, Item.state == State.FAILED,
                           Item.removed_at_source.is_(False))
    if batch is not None:
        q = q.where(Item.batch_id == batch)
    if error_class is not None:
        q = q.where(Item.reason == error_class)
    if owner is not None:
        q = q.where(Item.owner == owner)
    with ledger.session() as s:
        return list(s.scalars(q.order_by(Item.id)))



def reset_for_rerun(ledger: Ledger, ids: list[int], run_id: int) -> None:
    """Put failed items back at the start of their way (nothing else is touched)."""
    with ledger.session() as s:
        s.execute(update(Item).where(Item.id.in_(ids), Item.state == State.FAILED).values(
            state=State.DISCOVERED.value, reason=None, message=None, run_id=run_id, updated=now()))


# ------------------------------------------------------------------------------------- chunks
def process_chunk(dept_file: str, run_id: int, owner: str, number: int, item_ids: Sequence[int]) -> dict:
    """Take a chunk of one user's items as far as they go; returns counts by final state.

    Item errors are recorded on the item and the chunk goes on. UserStopped (the user's account is
    full) stops this user's chunks, the others go on; a FatalError (no LibreOffice left) stops the
    chunk and the run. Either way every item stays in the last state it really reached.
    """
    dept = runtime.department(dept_file)
    ledger = runtime.ledger(dept)
    if owner in ledger.stopped_users(run_id):         # an earlier chunk found the account unusable
        return {"waiting": len(item_ids)}
    batch = ledger.start_batch(run_id, owner, number, len(item_ids), f"{socket.gethostname()}/{os.getpid()}")
    counts: Counter = Counter()
    status = "completed"
    items = ledger.items(item_ids)
    try:
        try:
            finished = _bulk_messages(dept, ledger, items, batch)
            finished.update(_plain_files(dept, ledger, [i for i in items if i.id not in finished], batch))
            counts.update(finished.values())
            rest = [i for i in items if i.id not in finished]
            for item in rest:
                counts[_process_item(dept, ledger, item, batch)] += 1
        except UserStopped as exc:
            status = "stopped"
            ledger.stop_user(run_id, owner, str(exc))
            if _first_word(run_id, owner):           # chunks of one user run side by side: say it once
                log.warning("%s: %s stops: %s", dept.name, owner, exc)
            counts["waiting"] += len(item_ids) - sum(counts.values())
    except BaseException:        # fatal, a configuration error found mid-run (a revoked secret), Ctrl-C
        status = "failed"
        raise
    finally:
        ledger.finish_batch(batch, status, counts)
    return dict(counts)


_SAID: set[tuple[int, str]] = set()
_SAID_LOCK = threading.Lock()


def _first_word(run_id: int, owner: str) -> bool:
    """Whether this process has not yet said in this run that `owner` stops (e.g. a full mailbox)."""
    with _SAID_LOCK:
        if (run_id, owner) in _SAID:
            return False
        _SAID.add((run_id, owner))
        return True


def _bulk_messages(dept: Department, ledger: Ledger, items: list[Item], batch: int) -> dict[int, str]:
    """Messages that have not moved yet, taken together where the source can read many at once and
    the target can append many at once (IMAP to IMAP: batched UID FETCH, MULTIAPPEND per folder,
    reading and appending overlapped), each then verified and recorded like any item. Returns
    {item id: final state} of the items it finished; the others (and any that failed transiently
    here) go the per-item way after it. A crash between an append and its ledger commit is safe:
    the item is still `discovered`, and the next append finds the message already there."""
    finished: dict[int, str] = {}
    groups: dict[str, list[Item]] = {}
    for item in items:
        if item.kind == Kind.MESSAGE.value and State(item.state) is State.DISCOVERED:
            groups.setdefault(item.source, []).append(item)
    if not groups or dept.mail_target is None:
        return finished
    sink = target_of(dept, Kind.MESSAGE)
    if not isinstance(sink, AppendsMessages):
        return finished
    for source_name, group in groups.items():
        try:
            source = source_of(dept, source_name)
            user = dept.user(group[0].owner)
        except (KeyError, StopIteration):
            continue                               # the per-item way records why
        if not isinstance(source, FetchesMessages):
            continue
        started = time.monotonic()
        by_key = {i.key: i for i in group}
        refs = [ItemRef(source=i.source, key=i.key, kind=Kind.MESSAGE, owner=i.owner, location=i.location,
                        version=i.version, size=i.size, meta=i.meta) for i in group]
        stream = ((r.key, r.location, r.meta, data)
                  for r, data in source.fetch_messages(user.folder_in(source_name), refs))
        loaded: list[Item] = []
        # appended, not yet committed (see the docstring); what did land is recorded before the
        # rest goes one by one, also when the source or the target went away mid-stream
        with ledger.window(_COMMIT_EVERY) as window:
            try:
                for result in sink.append_stream(group[0].target_owner, stream,
                                                 taken=lambda key, refs: _held_by_others(ledger, dept, key, refs)):
                    item = by_key[result.key]
                    item.batch_id, item.attempts = batch, item.attempts + 1
                    if result.error is not None:
                        if isinstance(result.error, ItemError):
                            window.fail(item, _reason_of(result.error, "load"), str(result.error), "load",
                                        batch_id=batch, attempts=item.attempts)
                            finished[item.id] = State.FAILED.value
                        continue                       # transient: the per-item way tries it again
                    loaded.append(window.advance(
                        item, State.LOADED, target_ref=result.ref, target_digest=result.digest, batch_id=batch,
                        attempts=item.attempts,
                        step_seconds={"load": round((time.monotonic() - started) / len(group), 4)}))
                window.commit()
                if loaded:                       # read back together: one fetch per folder and batch
                    started = time.monotonic()
                    problems = with_retries(sink.verify_many, [(i.target_ref, i.target_digest) for i in loaded])
                    seconds = round((time.monotonic() - started) / len(loaded), 4)
                    for item in loaded:
                        problem = problems.get(item.target_ref, "not read back")
                        if problem:
                            window.fail(item, _VerifyFailed.reason, problem, "verify", batch_id=batch,
                                        attempts=item.attempts)
                            finished[item.id] = State.FAILED.value
                        else:
                            window.advance(item, State.VERIFIED, batch_id=batch, attempts=item.attempts,
                                           step_seconds={"verify": seconds})
                            finished[item.id] = State.VERIFIED.value
            except TransientError as exc:              # the source or the target went away mid-stream
                log.warning("%s: moving %s's messages together stopped (%s); the rest go one by one",
                            dept.name, group[0].owner, exc)
    return finished


#: Appended messages recorded in the ledger per commit: a crash loses at most these records, and
#: the next run finds their messages at the target (Message-ID and content hash) instead of
#: appending them again.
_COMMIT_EVERY = 100


def plain(dept: Department, item: Item) -> bool:
    """Whether `item` may go the plain way (`_plain_files`): a file not yet extracted, whose
    permissions need no shares at the target, in a department that converts nothing or with a
    name that is no Office or ODF format's (most of a file share: PDFs, images, text). Such a
    file whose bytes still turn out to be an Office document goes the per-item way after all."""
    return (item.kind == Kind.FILE.value and item.state == State.DISCOVERED.value
            and not (item.meta or {}).get("permissions")
            and (not dept.conversion.enabled or PurePosixPath(item.location).suffix.lower().lstrip(".") not in FORMATS))


def _plain_files(dept: Department, ledger: Ledger, items: list[Item], batch: int) -> dict[int, str]:
    """Files that travel unchanged, each taken through extract → load → verify in one go and
    recorded `_COMMIT_EVERY` per commit. Returns {item id: final state} of the items it took;
    the others go the per-item way. In a department that converts, each file's bytes are sniffed
    as the conversion step would (converters.pool.settled_by_sniffing), and the same outcome is
    recorded (`unsupported`, or `encrypted`/`unreadable` for a person to look at); a file whose
    bytes are an Office document after all is left to the per-item way, which converts it.

    Why a commit window is safe here: no step of such an item depends on a record of an earlier
    one, only on what this process holds in memory, so the only record that matters is the last.
    An item whose record is lost with the window (the process killed) is still `discovered` in
    the ledger; the next run extracts it again, finds the same bytes at the target (`find` by
    digest) instead of putting them twice, reads them back and records it verified. Nothing is
    lost (the bytes at the target were written atomically and, being unrecorded, are checked
    again) and nothing is duplicated (the target path is the item's own, decided at discovery).

    What this way saves against the per-item one, measured (docs/benchmarks.md): four commits
    per item become one per hundred items; the source, the sink and the user are looked up once
    per chunk; the bytes are hashed once, at extraction (the target's copy is read back once, to
    verify it); the staged copy is one flat file, not a folder made and removed per item; the
    sink keeps the folders it made for the chunk (LocalDir); and a target that can make files
    durable together (PublishesTogether) flushes a hundred at once before they are read back."""
    todo = [i for i in items if plain(dept, i)]
    if not todo:
        return {}
    finished: dict[int, str] = {}
    sink = target_of(dept, Kind.FILE)
    # a target that makes a window's files durable together (a local disk) gets them all put,
    # then published at once, then read back: one flush a window instead of one a file
    together: list[_Loaded] | None = [] if isinstance(sink, PublishesTogether) else None
    sources: dict[tuple[str, str], tuple] = {}
    staging = dept.work_dir / "staging" / "files"
    staging.mkdir(parents=True, exist_ok=True)
    with ledger.window(_COMMIT_EVERY) as window:
        for item in todo:
            try:
                if (item.source, item.owner) not in sources:
                    source = source_of(dept, item.source)
                    sources[item.source, item.owner] = (source, dept.user(item.owner).folder_in(item.source),
                                                        _compares_with_listing(source))
            except (KeyError, StopIteration):
                continue                               # the per-item way records why
            source, folder, compares = sources[item.source, item.owner]
            loaded = _plain_load(dept, window, item, batch, source, folder, compares, sink, staging / str(item.id),
                                 later=together is not None)
            if not isinstance(loaded, _Loaded):
                if loaded is not None:
                    finished[item.id] = loaded
            elif together is None:
                finished[item.id] = _plain_verify(window, sink, loaded)
            else:
                together.append(loaded)
                if len(together) == _COMMIT_EVERY:
                    finished.update(_publish(window, sink, together))
        if together:
            finished.update(_publish(window, sink, together))
    return finished


@dataclass
class _Loaded:
    """A file of `_plain_files` at the target (or put there, to be published), to be read back."""

    item: Item
    ref: str
    digest: str
    facts: dict                 # what its record takes: sha256, size, meta, conversion ...
    seconds: dict[str, float]


def _plain_load(dept: Department, window, item: Item, batch: int, source, folder: str, compares: bool,
                sink: Sink, staged: Path, later: bool) -> _Loaded | str | None:
    """One file of `_plain_files`: extract, then put it (unless the target holds it): what is to
    be read back, or the state it failed in, or None when its bytes are a document to convert
    (nothing is recorded: the per-item way takes it). `later`: put for `_publish`."""
    attempts = item.attempts + 1
    step, seconds = "extract", {}
    converted: dict[str, str | None] = {}
    started = time.monotonic()
    try:
        # sources that can tell a swapped file from the one they listed get what they listed
        extract = partial(source.extract, listed=item.meta or {}) if compares else source.extract
        size, mtime = with_retries(extract, folder, item.location, staged, item.key)
        digest = sha256_file(staged)
        meta = _extracted_meta(item, size, mtime)
        seconds["extract"] = round(time.monotonic() - started, 4)
        if dept.conversion.enabled:
            step, started = "convert", time.monotonic()
            settled = _settled_by_sniffing(staged)
            if settled is None:
                return None
            converted = settled
            seconds["convert"] = round(time.monotonic() - started, 4)
        item.batch_id, item.attempts = batch, attempts
        step, started = "load", time.monotonic()
        rel, _ = _target_names(dept, item)
        put = sink.put_later if later and isinstance(sink, PublishesTogether) else sink.put
        ref = (with_retries(sink.find, item.target_owner, rel, digest, meta)
               or with_retries(put, item.target_owner, rel, staged, _source_mtime_of(meta, item), meta,
                               digest))                    # put writes the digest find was asked with
        seconds["load"] = round(time.monotonic() - started, 4)
    except (ItemError, TransientError) as exc:
        item.batch_id, item.attempts = batch, attempts
        return _plain_failed(window, item, exc, step)
    finally:
        staged.unlink(missing_ok=True)
    facts = dict(sha256=digest, size=size, meta=meta, target_ref=ref, target_digest=digest, staged_path=None,
                 converted_path=None, original_ref=None, conversion=None, message=None, fidelity=None,
                 fidelity_score=None, fidelity_verdict=None, batch_id=batch, attempts=attempts)
    return _Loaded(item, ref, digest, {**facts, **converted}, seconds)


def _publish(window, sink, loaded: list[_Loaded]) -> dict[int, str]:
    """Publish the files put for `loaded` (core.plugins.PublishesTogether), then read each back:
    {item id: final state}. The list is emptied."""
    started = time.monotonic()
    problems = sink.publish()
    share = round((time.monotonic() - started) / len(loaded), 4)       # each file's part of the flush
    finished = {}
    for done in loaded:
        done.seconds["load"] = round(done.seconds["load"] + share, 4)
        if done.ref in problems:
            finished[done.item.id] = _plain_failed(window, done.item, ItemError(problems[done.ref]), "load")
        else:
            finished[done.item.id] = _plain_verify(window, sink, done)
    loaded.clear()
    return finished


def _plain_verify(window, sink: Sink, done: _Loaded) -> str:
    """Read a file of `_plain_files` back from the target and record it verified, or failed."""
    started = time.monotonic()
    try:
        problem = with_retries(sink.verify, done.ref, done.digest)
        if problem:
            raise _VerifyFailed(problem)
    except (ItemError, TransientError) as exc:
        return _plain_failed(window, done.item, exc, "verify")
    done.seconds["verify"] = round(time.monotonic() - started, 4)
    window.advance(done.item, State.VERIFIED, **done.facts, step_seconds=done.seconds)
    return State.VERIFIED.value


def _plain_failed(window, item: Item, exc: ItemError | TransientError, step: str) -> str:
    reason = _reason_of(exc, step) if isinstance(exc, ItemError) else "transient"
    window.fail(item, reason, str(exc), step, batch_id=item.batch_id, attempts=item.attempts)
    return State.FAILED.value


def _settled_by_sniffing(staged: Path) -> dict[str, str | None] | None:
    """The conversion facts of a file whose bytes settle its outcome without LibreOffice, as
    `_convert` records them; None when it is a document to convert (or its bytes cannot be
    sniffed: the per-item way records why)."""
    from converters.pool import settled_by_sniffing     # (the sniffers' libraries: only where a department converts)
    try:
        settled = settled_by_sniffing(staged)
    except OSError:
        return None
    if settled is None:
        return None
    outcome, message = settled
    return {"conversion": outcome.value, "message": message if outcome in _NEEDS_A_PERSON else None}


def _staging(dept: Department, item: Item) -> Path:
    return dept.work_dir / "staging" / str(item.id)


def _process_item(dept: Department, ledger: Ledger, item: Item, batch: int) -> str:
    state = State(item.state)
    item.batch_id, item.attempts = batch, item.attempts + 1      # recorded with the first step's commit
    step = "extract"
    try:
        if state is State.DISCOVERED:
            item = with_retries(_extract, dept, ledger, item)
            state = State.EXTRACTED
        if state is State.EXTRACTED:
            step = "convert"
            item = _convert(dept, ledger, item)
            state = State.CONVERTED
        if state is State.CONVERTED:
            step = "load"
            item = with_retries(_load, dept, ledger, item)
            state = State.LOADED
        if state is State.LOADED:
            step = "verify"
            state = with_retries(_verify, dept, ledger, item)
    except ItemError as exc:
        ledger.fail(item.id, _reason_of(exc, step), str(exc), step, batch_id=batch, attempts=item.attempts)
        return State.FAILED.value
    except TransientError as exc:
        ledger.fail(item.id, "transient", str(exc), step, batch_id=batch, attempts=item.attempts)
        return State.FAILED.value
    return state.value


def _reason_of(exc: ItemError, step: str) -> str:
    return getattr(exc, "reason", None) or f"{step}_error"


class _ConversionFailed(ItemError):
    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.reason = f"conversion_{outcome.value}"


def _extract(dept: Department, ledger: Ledger, item: Item) -> Item:
    started = time.monotonic()
    try:
        source = source_of(dept, item.source)
        user = dept.user(item.owner)
    except (KeyError, StopIteration) as exc:
        raise ItemError(f"source {item.source!r} or user {item.owner!r} is no longer in the department file") from exc
    staged = _staging(dept, item) / "source" / PurePosixPath(item.target_path or item.location).name
    if staged.parent.exists():
        shutil.rmtree(staged.parent)
    # sources that can tell a swapped file from the one they listed get what they listed
    listed = {"listed": item.meta or {}} if _compares_with_listing(source) else {}
    size, mtime = source.extract(user.folder_in(item.source), item.location, staged, key=item.key, **listed)
    digest = sha256_file(staged)
    return ledger.advance(item, State.EXTRACTED, sha256=digest, size=size, staged_path=str(staged),
                          meta=_extracted_meta(item, size, mtime), batch_id=item.batch_id, attempts=item.attempts,
                          step_seconds={"extract": round(time.monotonic() - started, 4)})


def _extracted_meta(item: Item, size: int, mtime: float | None) -> dict | None:
    """The item's meta with what extraction learnt: the mtime the target copy takes, and a
    message's size as extracted (IMAP dedupe without a Message-ID)."""
    meta = item.meta
    if mtime is not None:
        meta = {**(meta or {}), "mtime": mtime}
    if item.kind != Kind.FILE.value:
        meta = {**(meta or {}), "size": size}
    return meta


def _convert(dept: Department, ledger: Ledger, item: Item) -> Item:
    started = time.monotonic()
    staged = Path(item.staged_path or "")
    if not staged.is_file():                   # the staging area was cleaned: extract again
        item = _extract(dept, ledger, item)
        assert item.staged_path is not None         # _extract records where it staged the bytes
        staged = Path(item.staged_path)
    converted, outcome, message, fidelity = None, None, None, None
    if dept.conversion.enabled and item.kind == Kind.FILE.value:
        out_dir = _staging(dept, item) / "converted"
        if out_dir.exists():
            shutil.rmtree(out_dir)
        result = runtime.converter_pool(dept).convert(staged, out_dir, sha256=item.sha256)
        outcome, message = result.outcome, result.message
        if outcome in (Outcome.TIMEOUT, Outcome.CRASHED, Outcome.TOO_LARGE, Outcome.UNWRITABLE):
            raise _ConversionFailed(outcome, message)
        if outcome is Outcome.CONVERTED:
            converted = result.output
            if dept.conversion.fidelity:
                # (a conversion comes with its output and the format it read)
                assert converted is not None and result.format is not None
                fidelity = _fidelity(dept, staged, Path(converted), result.format, item.sha256)
    return ledger.advance(item, State.CONVERTED, converted_path=converted,
                          fidelity=fidelity, fidelity_score=(fidelity or {}).get("score"),
                          fidelity_verdict=(fidelity or {}).get("verdict"),
                          batch_id=item.batch_id, attempts=item.attempts,
                          conversion=outcome.value if outcome else None,
                          message=message if outcome in _NEEDS_A_PERSON else None,
                          step_seconds={"convert": round(time.monotonic() - started, 4)})


def _fidelity(dept: Department, source: Path, output: Path, fmt_name: str, sha256: str | None) -> dict | None:
    """The fidelity record of one conversion (what `keep_original: below_score` reads). With the
    visual tier, both documents are rendered on the department's workers and compared page by
    page, and thumbnails of their first pages go to `<work_dir>/reports/thumbs/` for the dashboard."""
    from reports.fidelity import assess
    visual: dict[str, Any] = {}
    if "visual" in dept.conversion.fidelity:
        from reports.migration import reports_dir
        visual = dict(render=runtime.converter_pool(dept).render_pdf, visual=True,
                      thumbs=reports_dir(dept) / "thumbs", key=(sha256 or "")[:16] or None)
    record = assess(source, output, FORMATS[fmt_name], **visual).to_json()
    return record if record.get("score") is not None else {**record, "score": None}


def _target_names(dept: Department, item: Item) -> tuple[str, str | None]:
    """(path of the copy that lands, path of the Office original if it may travel beside it), below
    the source's `target_folder` for files."""
    cfg = next((s for s in dept.sources if s.name == item.source), None)
    folder = (getattr(cfg, "target_folder", "") or "").strip("/") if item.kind == Kind.FILE.value else ""

    def under(path: str) -> str:
        return f"{folder}/{path}" if folder else path
    plain = item.target_path or item.location   # decided at discovery (sinks.twins); rows from before: location
    if not item.converted_path:
        return under(plain), None
    return under(item.target_stem + Path(item.converted_path).suffix), under(plain)


def _keep_original(dept: Department, item: Item) -> bool:
    policy = dept.conversion.keep_original
    if policy is KeepOriginal.ALWAYS:
        return True
    if policy is KeepOriginal.NEVER:
        return False
    score = item.fidelity_score
    return score is None or score < dept.conversion.keep_original_below


def _load(dept: Department, ledger: Ledger, item: Item) -> Item:
    started = time.monotonic()
    sink = target_of(dept, item.kind)
    rel, original_rel = _target_names(dept, item)
    payload = Path(item.converted_path or item.staged_path or "")
    if not payload.is_file():                  # staging lost (cleaned, other machine): redo
        item = _convert(dept, ledger, _extract(dept, ledger, ledger.advance(item, State.DISCOVERED)))
        rel, original_rel = _target_names(dept, item)
        payload = Path(item.converted_path or item.staged_path or "")
    # a file that travels unchanged already has its sha256 from the extract step
    unchanged_file = item.kind == Kind.FILE.value and not item.converted_path
    digest = item.sha256 if unchanged_file and item.sha256 else sink.digest(payload)
    mtime = _source_mtime(item)
    # identical messages each have their own copy: one another message holds is not this one's
    held = {"taken": lambda refs: _held_by_others(ledger, dept, item.key, refs)} \
        if item.kind == Kind.MESSAGE.value else {}
    ref = (sink.find(item.target_owner, rel, digest, item.meta, **held)
           or sink.put(item.target_owner, rel, payload, mtime, item.meta, digest=digest))
    meta = item.meta
    if item.kind == Kind.FILE.value and meta and meta.get("permissions"):
        meta = {**meta, "sharing": _share(dept, sink, item, rel)}
    original_ref = None
    if item.converted_path and original_rel and _keep_original(dept, item):
        # (a converted item has its original staged, with its sha256, since extract)
        assert item.staged_path is not None and item.sha256 is not None
        if dept.conversion.originals_folder:
            p = PurePosixPath(original_rel)
            original_rel = str(p.parent / dept.conversion.originals_folder / p.name)
        original_ref = (sink.find(item.target_owner, original_rel, item.sha256)
                        or sink.put(item.target_owner, original_rel, Path(item.staged_path), mtime,
                                    digest=item.sha256))
    if item.converted_path and dept.archive is not None:
        assert item.staged_path is not None and item.sha256 is not None     # (as above)
        archive = sink_for(dept.archive)
        archive_rel = f"{dept.name}/{item.owner}/{item.location}"
        meta = {**(meta or {}), "archive_ref": (archive.find(item.owner, archive_rel, item.sha256)
                                                or archive.put(item.owner, archive_rel, Path(item.staged_path),
                                                               mtime, digest=item.sha256))}
    return ledger.advance(item, State.LOADED, target_ref=ref, target_digest=digest, original_ref=original_ref,
                          meta=meta, batch_id=item.batch_id, attempts=item.attempts,
                          step_seconds={"load": round(time.monotonic() - started, 4)})


def _share(dept: Department, sink: Sink, item: Item, rel: str) -> dict:
    """Recreate the item's source permissions as target shares; what cannot be is listed with why."""
    grants, unmapped, ignored = plan_shares(dept, item.owner, (item.meta or {})["permissions"])
    granted = []
    for grant in grants:
        why = None
        if dept.sharing is None:
            why = "sharing is not configured for this department (add a sharing: block)"
        elif not isinstance(sink, SharesFiles):
            why = "this target has no share API that umstieg drives: share by hand"
        else:
            try:
                granted.append({**grant.as_dict(), "result": with_retries(
                    sink.share, item.target_owner, rel, grant.with_kind, grant.with_name, grant.rights, grant.folder)})
            except ItemError as exc:
                why = f"the target refused the share: {exc}"
        if why:
            unmapped.append({"principal": f"{grant.with_kind}:{grant.with_name}", "rights": grant.rights,
                             "reason": why})
    return {"granted": granted, "unmapped": unmapped, "ignored": ignored}


def _compares_with_listing(source: object) -> bool:
    """Whether the source's `extract` is to get what discovery listed (it declares the ability)."""
    return isinstance(source, ComparesWithListing) and source.compares_with_listing


def _source_mtime(item: Item) -> float | None:
    """The item's modification time at the source, as its source reported it."""
    return _source_mtime_of(item.meta, item)


def _source_mtime_of(meta: dict | None, item: Item) -> float | None:
    if meta and meta.get("mtime") is not None:
        return float(meta["mtime"])
    if item.kind != Kind.FILE.value:
        return None
    try:                                       # items listed before the ledger kept meta
        return int(item.version.split(":")[0]) / 1e9
    except (ValueError, IndexError):
        return None


class _VerifyFailed(ItemError):
    reason = "verify_mismatch"


def _verify(dept: Department, ledger: Ledger, item: Item) -> State:
    started = time.monotonic()
    sink = target_of(dept, item.kind)
    assert item.target_ref is not None and item.target_digest is not None     # recorded by _load
    problem = sink.verify(item.target_ref, item.target_digest)
    if problem is None and item.original_ref:
        assert item.sha256 is not None                  # the original was put with it
        problem = sink.verify(item.original_ref, item.sha256)
    archived = (item.meta or {}).get("archive_ref")
    if problem is None and archived and dept.archive is not None:
        assert item.sha256 is not None                  # the original was archived with it
        problem = sink_for(dept.archive).verify(archived, item.sha256)
    if problem:
        raise _VerifyFailed(problem)
    ledger.advance(item, State.VERIFIED, staged_path=None, converted_path=None,
                   batch_id=item.batch_id, attempts=item.attempts,
                   step_seconds={"verify": round(time.monotonic() - started, 4)})
    shutil.rmtree(_staging(dept, item), ignore_errors=True)   # staged bytes are no longer needed
    return State.VERIFIED
