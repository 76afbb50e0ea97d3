"""Run reports and assessments of a department migration, computed from the ledger.

Everything here is aggregated in SQL (group by), so a department of a million items reports as
fast as one of a hundred; the assessment, which comes before any ledger row, counts the sources'
listings as they stream past (`Inventory`) and holds no item.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from collections.abc import Iterable

from sqlalchemy import and_, func, select, text

from core.department import Department
from core.items import ItemRef, Kind
from core.ledger import NEEDS_A_PERSON, Batch, Item, Ledger, Run, State
from core.messages import clip
from core.settings import usable_cpus
from reports.i18n import Names, names, render

__all__ = ["run_summary", "write_run_report", "write_status_report", "department_status", "sharing_status",
           "renamed_files", "write_assessment", "assessment_markdown", "assessment_basis", "decimal", "Inventory",
           "mail_volume", "file_format", "reports_dir", "REPORT_LIST_LIMIT", "RENAME_REASONS", "IDENTITY_FINDINGS"]

#: Documents per second per LibreOffice worker assumed by the assessment until a run has measured
#: it (measured here on the developer corpus: 3.4 documents/s per worker).
DEFAULT_DOCS_PER_SECOND_PER_WORKER = 3.0

#: The identity checks' findings the assessment names in words (flows.identity: OK, NOT_CHECKED,
#: NOTHING_TO_COMPARE); any other finding is a recorded message and stays as it is.
IDENTITY_FINDINGS = ("ok", "not checked", "exists; no attributes to compare")

#: Lists of single items or batches in a report stop after this many rows ("and N more").
REPORT_LIST_LIMIT = 50

#: Why a file landed under another name than it had at the source (the reasons sinks.twins gives).
RENAME_REASONS = {
    "nfc_twin": "NFC twin: the same name in another Unicode spelling (Mac and Windows write umlauts differently); "
                "one file at Nextcloud",
    "case_twin": "case twin: the same name in other upper/lower case; one file on Windows clients and "
                 "case-insensitive targets",
    "converted_clash": "converted-name clash: the name its copy would get was another file's",
    "same_name": "same name: another source user merged into this account has a file of that name",
    "undecodable_name": "the name's bytes at the source are not UTF-8 (shown with \\xNN escapes): decoded as "
                        "Windows-1252",
}

#: Reasons of entries a source lists but umstieg does not move (core.localtree): a person decides.
NOT_MOVED_REASONS = ("skipped_link", "skipped_fifo", "skipped_socket", "skipped_device", "skipped_special")


def reports_dir(dept: Department) -> Path:
    path = dept.work_dir / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def department_status(dept: Department, ledger: Ledger) -> dict:
    """Progress by user and state, failures by class, conversion outcomes: the operator's view."""
    return _status(dept, ledger)[0]


def _status(dept: Department, ledger: Ledger, run_id: int | None = None) -> tuple[dict, dict]:
    """(department_status, the tallies of run `run_id`): every count of both from one grouped scan
    of the department's items (`_tallies`), the lists they show read LIMITed through indexes."""
    failures: dict[str, dict] = {}
    with ledger.session() as s:
        tallies = _tallies(s, dept, run_id)
        q = (select(Item.reason, func.count(Item.id), func.min(Item.message))
             .where(Item.department == dept.name, Item.state == State.FAILED.value)
             .group_by(Item.reason).order_by(func.count(Item.id).desc()))
        for reason, n, example in s.execute(q):
            failures[reason or "unknown"] = {"count": n, "example": example}
        # conversion IN (...) implies the needs-a-person predicate: said again, it lets the
        # database read the partial index of those few items instead of every item
        needs_person = [dict(owner=o, path=p, conversion=c, message=m) for o, p, c, m in s.execute(
            select(Item.owner, Item.location, Item.conversion, Item.message).where(
                Item.department == dept.name, _needs_a_person(), Item.conversion.in_(["encrypted", "unreadable"]))
            .order_by(Item.id).limit(1000))]
        last_run = s.scalars(select(Run).where(Run.department == dept.name).order_by(Run.id.desc()).limit(1)).first()
        fidelity = dict(s.execute(
            select(Item.fidelity_verdict, func.count(Item.id)).where(Item.department == dept.name,
                                                                    Item.fidelity_verdict.isnot(None))
            .group_by(Item.fidelity_verdict)).all())
        batches, batch_count = _failed_batches(s, dept)
        not_moved = _not_moved(s, dept)
        last_failures = _failures_of_run(s, dept, last_run.id) if last_run else {}
        removed_now = tallies["removed_now"]
        if run_id is not None:
            tallies["removed_now"] = _removed_in_run(s, dept, run_id, removed_now) if removed_now["count"] \
                else _removed_fates(removed_now, [])
    users, kinds = tallies["users"], tallies["kinds"]
    states = [s.value for s in State]
    table = [{"user": u, **{st: users[u].get(st, 0) for st in states}, "total": sum(users[u].values())}
             for u in sorted(users)]
    totals: Counter = Counter()
    for c in users.values():
        totals.update(c)
    removed = tallies["removed"]
    return {"department": dept.name, "users": table, "totals": dict(totals),
            "by_kind": {k: dict(sorted(kinds[k].items())) for k in sorted(kinds)},
            "sharing": sharing_status(dept, ledger), "failures": failures,
            "failed_batches": batches, "failed_batch_count": batch_count, "fidelity": fidelity,
            "conversions": dict(sorted(tallies["conversions"].items())), "removed_at_source": removed["count"],
            "removed_totals": {"count": removed["count"], "removed": removed["removed"],
                               "kept": removed["count"] - removed["removed"] - removed["never_arrived"],
                               "never_arrived": removed["never_arrived"]},
            "renamed": renamed_files(dept, ledger), "needs_a_person": needs_person, "not_moved": not_moved,
            "last_run": {"id": last_run.id, "flow": last_run.flow, "status": last_run.status,
                         "started": last_run.started.isoformat(),
                         "finished": last_run.finished.isoformat() if last_run.finished else None,
                         "failures": last_failures}
            if last_run else None}, tallies


def _needs_a_person():
    """NEEDS_A_PERSON as a SQL term: SQLite reads a partial index only for a query that says its
    predicate word for word. Every list below that adds it selects a subset of those items, so it
    reads the index of those few items instead of every item of the department."""
    return text(NEEDS_A_PERSON)


def _tallies(s, dept: Department, run_id: int | None) -> dict:
    """Every count of the run and status reports from one scan of the department's items, grouped
    by the few columns and conditions they count by (a few dozen groups for a million items):
    items by user and state and by kind and state, conversion outcomes, items deleted at the
    source with what became of their copies (all, and those found gone by run `run_id`), and the
    items the batches of run `run_id` processed. Separate COUNT queries each read every item again
    (about 0.8 s per query at a million on SQLite); here the database reads them once."""
    gone = and_(Item.removed_at_source.is_(True), _removed_at_target())
    flags = [Item.removed_at_source, gone.label("gone"), Item.target_ref.is_(None).label("no_target")]
    if run_id is not None:          # (a constant would be a column number in SQLite's GROUP BY)
        flags += [and_(Item.removed_at_source.is_(True), Item.run_id == run_id).label("found_now"),
                  Item.batch_id.in_(select(Batch.id).where(Batch.run_id == run_id)).label("in_run")]
    q = (select(Item.owner, Item.kind, Item.state, Item.conversion, *flags, func.count(Item.id).label("n"))
         .where(Item.department == dept.name)
         .group_by(Item.owner, Item.kind, Item.state, Item.conversion, *flags))
    users: dict[str, Counter] = defaultdict(Counter)
    kinds: dict[str, Counter] = defaultdict(Counter)
    conversions: Counter = Counter()
    removed = {"count": 0, "removed": 0, "never_arrived": 0}
    removed_now = {"count": 0, "removed": 0, "never_arrived": 0}
    this_run: Counter = Counter()
    by_user: dict[str, Counter] = defaultdict(Counter)
    converted = 0
    for row in s.execute(q):
        owner, kind, state, conversion, n = row.owner, row.kind, row.state, row.conversion, row.n
        gone_, no_target = row.gone, row.no_target
        now_, in_run_ = (row.found_now, row.in_run) if run_id is not None else (False, False)
        users[owner][state] += n
        kinds[kind][state] += n
        if conversion is not None:
            conversions[conversion] += n
        for tally, counted in ((removed, row.removed_at_source), (removed_now, now_)):
            if counted:
                tally["count"] += n
                tally["removed"] += n if gone_ else 0
                tally["never_arrived"] += n if no_target else 0
        if in_run_:
            this_run[state] += n
            by_user[owner][state] += n
            converted += n if conversion == "converted" else 0
    return {"users": users, "kinds": kinds, "conversions": conversions, "removed": removed,
            "removed_now": removed_now, "this_run": dict(this_run), "converted": converted,
            "by_user": {u: dict(c) for u, c in by_user.items()}}


def _not_moved(s, dept: Department, limit: int = REPORT_LIST_LIMIT) -> dict:
    """Entries of a source that were listed but not moved (links, FIFOs, sockets, devices): how
    many, and the first `limit` with user, path and why."""
    where = (Item.department == dept.name, _needs_a_person(), Item.state == State.SKIPPED.value,
             Item.reason.in_(NOT_MOVED_REASONS), Item.removed_at_source.is_(False))
    count = s.scalar(select(func.count(Item.id)).where(*where)) or 0
    items = [{"owner": o, "path": p, "reason": r, "message": m} for o, p, r, m in s.execute(
        select(Item.owner, Item.location, Item.reason, Item.message).where(*where)
        .order_by(Item.owner, Item.location).limit(limit))]
    return {"count": count, "items": items}


def _removed_at_target():
    """The items whose target copy discovery removed (delete_at_target on when it found them gone)."""
    return (Item.state == State.SKIPPED.value) & (Item.reason == "removed_at_source") & Item.target_ref.isnot(None)


def renamed_files(dept: Department, ledger: Ledger, limit: int = REPORT_LIST_LIMIT) -> dict:
    """Files that landed (or will land) under another name than at the source, with why: how many
    and the first `limit` (user, source name, target name, reason). The target name is the ODF
    copy's for a converted document, else the name decided at discovery (sinks.twins)."""
    items: list[dict] = []
    count = 0
    with ledger.session() as s:
        q = (select(Item.owner, Item.location, Item.target_path, Item.target_stem, Item.conversion, Item.target_ref,
                    Item.renamed)
             .where(Item.department == dept.name, _needs_a_person(), Item.renamed.isnot(None),
                    Item.removed_at_source.is_(False))
             .order_by(Item.owner, Item.location).execution_options(yield_per=1000))
        for owner, location, path, stem, conversion, ref, reason in s.execute(q):
            if conversion == "converted" and ref:
                target = stem + PurePosixPath(ref).suffix
            else:
                target = path or location
            if target == unicodedata.normalize("NFC", location):    # e.g. a copy that was not made after all
                continue
            count += 1
            if len(items) < limit:
                items.append({"owner": owner, "source": location, "target": target, "reason": reason})
    return {"count": count, "items": items}


def _failed_batches(s, dept: Department, limit: int = REPORT_LIST_LIMIT) -> tuple[list[dict], int]:
    """Failed items by the batch that last processed them (newest batches first, at most
    `limit`), each with its user, count and error classes: what `rerun --batch` takes. Items
    that failed before any batch (e.g. a folder that could not be listed) show batch None."""
    rows = s.execute(select(Item.batch_id, Item.owner, Item.reason, func.count(Item.id))
                     .where(Item.department == dept.name, Item.state == State.FAILED.value)
                     .group_by(Item.batch_id, Item.owner, Item.reason)).all()
    batches: dict[tuple, dict] = {}
    for batch_id, owner, reason, n in rows:
        b = batches.setdefault((batch_id, owner), {"batch": batch_id, "user": owner, "failures": 0, "classes": {}})
        b["failures"] += n
        b["classes"][reason or "unknown"] = n
    ordered = sorted(batches.values(), key=lambda b: (b["batch"] is None, -(b["batch"] or 0), b["user"]))
    return ordered[:limit], len(ordered)


def _failures_of_run(s, dept: Department, run_id: int) -> dict[str, dict]:
    """Failures by class among the items one run's batches processed (and left failed)."""
    q = (select(Item.reason, func.count(Item.id), func.min(Item.message))
         .join(Batch, Item.batch_id == Batch.id)
         .where(Item.department == dept.name, Batch.run_id == run_id, Item.state == State.FAILED.value)
         .group_by(Item.reason).order_by(func.count(Item.id).desc()))
    return {reason or "unknown": {"count": n, "example": example} for reason, n, example in s.execute(q)}


def sharing_status(dept: Department, ledger: Ledger, examples: int = 3) -> dict:
    """Shares made, and every source permission not carried over grouped by (principal, reason) with
    how many items it concerns and a few of them. Reads only the items that carry sharing facts:
    the database tests each item's meta for them (`_has_sharing`), so that a department of a
    million files without permissions hands none of them to Python."""
    granted, ignored = 0, 0
    groups: dict[tuple[str, str], dict] = {}
    with ledger.session() as s:
        q = (select(Item.owner, Item.location, Item.meta)
             .where(Item.department == dept.name, Item.kind == "file", Item.meta.isnot(None),
                    _has_sharing(ledger.engine.dialect.name))
             .execution_options(yield_per=2000))
        for owner, location, meta in s.execute(q):
            sharing = (meta or {}).get("sharing")
            if not sharing:
                continue
            granted += len(sharing.get("granted", []))
            ignored += sharing.get("ignored", 0)
            for u in sharing.get("unmapped", []):
                g = groups.setdefault((u["principal"], u["reason"]),
                                      {"principal": u["principal"], "reason": u["reason"],
                                       "rights": set(), "items": 0, "examples": []})
                g["items"] += 1
                g["rights"].add(u.get("rights", "?"))
                if len(g["examples"]) < examples:
                    g["examples"].append(f"{owner}/{location}")
    not_carried = sorted(({**g, "rights": sorted(g["rights"])} for g in groups.values()),
                         key=lambda g: (-g["items"], g["principal"]))
    return {"granted": granted, "ignored": ignored, "not_carried": not_carried}


def _has_sharing(dialect: str):
    """Whether an item's meta holds the sharing facts the load step recorded (an object under
    "sharing"), tested by the database's own JSON functions; other databases test every item's
    meta in Python (sharing_status checks each row it reads either way)."""
    if dialect == "sqlite":
        return text("json_type(items.meta, '$.sharing') = 'object'")
    if dialect == "postgresql":
        return text("json_typeof(items.meta::json -> 'sharing') = 'object'")
    return Item.meta.isnot(None)


def run_summary(dept: Department, ledger: Ledger, run_id: int, delta: dict, seconds: float) -> dict:
    """What one run did and where the department stands after it."""
    status, tallies = _status(dept, ledger, run_id)
    return {**status, "run": run_id, "delta": delta, "this_run": tallies["this_run"],
            "this_run_converted": tallies["converted"], "this_run_by_user": tallies["by_user"],
            "removed_this_run": tallies["removed_now"],
            "seconds": round(seconds, 2),
            "finished": datetime.now(timezone.utc).isoformat()}


def _removed_in_run(s, dept: Department, run_id: int, counts: dict, limit: int = REPORT_LIST_LIMIT) -> dict:
    """Items this run's discovery found deleted at the source: how many (`counts`, from _tallies),
    the first `limit` of them (user, path), and what the department does with their copies at the
    target. Discovery stamps the run that found an item gone on it (`run_id`)."""
    where = (Item.department == dept.name, Item.removed_at_source.is_(True), Item.run_id == run_id)
    at_target = _removed_at_target().label("removed_at_target")
    items = [{"owner": o, "location": loc, "item": _which(kind, meta),
              "at_target": "removed" if gone else ("kept" if ref else "never_arrived")}
             for o, loc, ref, gone, kind, meta in s.execute(
                 select(Item.owner, Item.location, Item.target_ref, at_target, Item.kind, Item.meta).where(*where)
                 .order_by(Item.owner, Item.location, Item.id).limit(limit))]
    return _removed_fates(counts, items)


def _removed_fates(counts: dict, items: list[dict]) -> dict:
    """The report's entry on the items found deleted at the source: counts by fate, and the list."""
    count, removed, never = counts["count"], counts["removed"], counts["never_arrived"]
    kept = count - removed - never
    at_target = "mixed" if removed and kept else "removed" if removed else "kept" if kept else "none"
    return {"count": count, "items": items, "removed": removed, "kept": kept, "never_arrived": never,
            "at_target": at_target}


def _which(kind: str, meta: dict | None) -> str | None:
    """What names an item inside its folder for a person: a message's subject and Message-ID."""
    if kind != Kind.MESSAGE.value:
        return None
    meta = meta or {}
    parts = [f"“{meta['subject']}”" if meta.get("subject") else None, meta.get("message_id")]
    return " ".join(p for p in parts if p) or "(no subject, no Message-ID)"


def _language(dept: Department, language: str | None) -> str | None:
    """The language a department's reports are written in: the one asked for, else its setting."""
    return language or getattr(dept, "language", None)


def _render(template: str, dept: Department, summary: dict, language: str | None, **context) -> str:
    """A run or status report (Markdown) rendered in the department's language."""
    n = names(_language(dept, language))
    by_user = summary.get("this_run_by_user") or {}

    def moved_of(user: str) -> int:
        states = by_user.get(user) or {}
        return states.get(State.VERIFIED.value, 0) + states.get(State.LOADED.value, 0)

    order = {v: i for i, v in enumerate(("identical", "minor", "review", "broken"))}
    verdicts = sorted((summary.get("fidelity") or {}).items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))
    return render(template, n.language, department=dept.name, summary=summary, ledger=_safe_url(dept),
                  states=[s.value for s in State], cell=_cell, fate=lambda removed: _fate(removed, n),
                  moved_of=moved_of, verdicts=verdicts,
                  rename_reason=lambda reason: (n(RENAME_REASONS[reason]) if reason in RENAME_REASONS
                                                else n.code(reason)),
                  **context)


def write_run_report(dept: Department, summary: dict, language: str | None = None) -> Path:
    """The run report as Markdown (for people and Prefect) beside the same data as JSON, in
    `language` (else the department's `language`, else English)."""
    out = reports_dir(dept)
    stem = f"run-{summary['run']:05d}"
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    text = _render("run.md", dept, summary, language, removed=_removed(summary.get("removed_this_run"),
                                                                       names(_language(dept, language))))
    path = out / f"{stem}.md"
    path.write_text(text, encoding="utf-8")
    latest = out / "latest.md"
    latest.write_text(text, encoding="utf-8")
    return path


def write_status_report(dept: Department, status: dict, language: str | None = None) -> Path:
    """A snapshot of the department's status (`umstieg report`) as `status-<UTC time>.md` beside the
    same data as JSON, in `language` (else the department's). Run reports (`run-NNNNN.md`,
    `latest.md`) are left as they are."""
    out = reports_dir(dept)
    taken = datetime.now(timezone.utc)
    stem = f"status-{taken:%Y%m%dT%H%M%SZ}"
    n = 1
    while (out / f"{stem}.md").exists() or (out / f"{stem}.json").exists():   # two snapshots in one second
        n += 1
        stem = f"status-{taken:%Y%m%dT%H%M%SZ}-{n}"
    status = {**status, "taken": taken.isoformat()}
    (out / f"{stem}.json").write_text(json.dumps(status, indent=2, default=str), encoding="utf-8")
    path = out / f"{stem}.md"
    path.write_text(_render("status.md", dept, status, language, taken=f"{taken:%Y-%m-%d %H:%M:%S}"),
                    encoding="utf-8")
    return path


def _fate(removed: dict, n: Names) -> str:
    """What became of the target copies of items deleted at the source, as it happened."""
    parts = []
    if removed.get("removed"):
        parts.append(n("%(count)s removed at the target too (`delete_at_target: true`)")
                     % {"count": removed["removed"]})
    if removed.get("kept"):
        parts.append(n("%(count)s left at the target (`delete_at_target` was off when they were found gone)")
                     % {"count": removed["kept"]})
    if removed.get("never_arrived"):
        parts.append(n("%(count)s had never reached the target") % {"count": removed["never_arrived"]})
    return "; ".join(parts) or n("none had a copy at the target")


def _removed(removed: dict | None, n: Names) -> dict | None:
    """The items this run found deleted at the source, each with what became of its target copy
    in words; None when there were none."""
    if not removed or not removed.get("count"):
        return None
    if "removed" not in removed:         # a summary from before copies were counted one by one
        removed = {**removed, "removed" if removed.get("at_target") == "removed" else "kept": removed["count"]}
    fate: dict[str | None, str] = {"removed": n("removed at the target"), "kept": n("left at the target"),
                                   "never_arrived": n("never arrived")}
    items = [{**i, "fate": fate.get(i.get("at_target") or removed.get("at_target"), "–")} for i in removed["items"]]
    # a message is named by its subject and Message-ID: its folder alone does not say which it was
    return {**removed, "items": items, "named": any(i.get("item") for i in items)}


def measured_rate(dept: Department, ledger: Ledger) -> float | None:
    """Documents converted per second by this department's completed runs, if any converted."""
    with ledger.session() as s:
        runs = s.scalars(select(Run).where(Run.department == dept.name, Run.status == "completed")).all()
    converted = sum((r.summary or {}).get("this_run_converted", 0) for r in runs)
    seconds = sum((r.summary or {}).get("seconds", 0) for r in runs if (r.summary or {}).get("this_run_converted"))
    return converted / seconds if converted and seconds else None


def measured_item_rate(dept: Department, ledger: Ledger) -> float | None:
    """Items taken through every step per second by this department's completed runs, if any ran."""
    with ledger.session() as s:
        runs = s.scalars(select(Run).where(Run.department == dept.name, Run.status == "completed")).all()
    done = [(r.summary or {}) for r in runs if (r.summary or {}).get("todo")]
    items, seconds = sum(f["todo"] for f in done), sum(f.get("seconds", 0) for f in done)
    return items / seconds if items and seconds else None


#: File formats the assessment counts as Office documents to convert (DESIGN.md's routing).
OFFICE_FORMATS = frozenset({"doc", "docx", "docm", "dot", "dotx", "dotm", "rtf", "xls", "xlsx", "xlsm", "xlsb", "xlt",
                            "xltx", "xltm", "ppt", "pptx", "pptm", "pps", "ppsx", "pot", "potx", "potm"})


def file_format(location: str) -> str:
    """The format the assessment counts a file under: its name's extension, lower case, without
    the dot, or "(none)". The same as PurePosixPath(location).suffix, written out because pathlib
    interns every part of every path it parses (sys.intern): at a million files that churns the
    interpreter's table of interned names, and a path object per item costs more than the counting."""
    name = next((part for part in reversed(location.split("/")) if part not in ("", ".")), "")
    dot = name.rfind(".")
    return (name[dot + 1:] if 0 < dot < len(name) - 1 else "").lower() or "(none)"


class Inventory:
    """What the sources list, counted as it streams past: items per kind and per user, files and
    bytes per format, mail per user, source and folder. It keeps the counters, never the items, so
    a department of a million files is assessed in the memory of a few hundred counters (issue 19).

    Counters keep the order in which their keys were first seen, as the assessment shows them;
    `merge` adds another inventory's counts after this one's, as if its items had been listed next."""

    def __init__(self) -> None:
        self.by_kind: Counter = Counter()
        self.per_user: Counter = Counter()
        self.by_format: Counter = Counter()
        self.bytes_by_format: Counter = Counter()
        # (user, source, folder) -> [messages selected, their bytes, the folder it is renamed to]
        self.mail: dict[tuple[str, str, str], list] = {}

    @classmethod
    def of(cls, listing: Iterable[tuple[str, ItemRef]]) -> Inventory:
        """The inventory of (source user, item) pairs, taken one at a time."""
        inventory = cls()
        for user, ref in listing:
            inventory.add(user, ref)
        return inventory

    def add(self, user: str, ref: ItemRef) -> None:
        """Count one item that `user`'s source listed."""
        self.by_kind[ref.kind.value] += 1
        self.per_user[user] += 1
        if ref.kind is Kind.MESSAGE:
            folder = self.mail.setdefault((user, ref.source, ref.location), [0, 0, None])
            folder[0] += 1
            folder[1] += ref.size or (ref.meta or {}).get("size") or 0
            folder[2] = folder[2] or (ref.meta or {}).get("target_folder")
        elif ref.kind is Kind.FILE:
            ext = file_format(ref.location)
            self.by_format[ext] += 1
            self.bytes_by_format[ext] += ref.size or 0

    def merge(self, other: Inventory) -> None:
        """Add `other`'s counts to these (a listing counted apart, kept once it was listed whole)."""
        for mine, theirs in ((self.by_kind, other.by_kind), (self.per_user, other.per_user),
                             (self.by_format, other.by_format), (self.bytes_by_format, other.bytes_by_format)):
            mine.update(theirs)
        for key, (messages, size, target) in other.mail.items():
            folder = self.mail.setdefault(key, [0, 0, None])
            folder[0] += messages
            folder[1] += size
            folder[2] = folder[2] or target

    def mail_rows(self, volumes: Iterable[tuple[str, str, dict]] = ()) -> list[dict]:
        """Mail per user, source and folder (see `mail_volume`)."""
        rows: dict[tuple[str, str, str], dict] = {}

        def row(user: str, source: str, folder: str) -> dict:
            return rows.setdefault((user, source, folder), {
                "user": user, "source": source, "folder": folder, "messages": None, "bytes": None,
                "selected_messages": 0, "selected_bytes": 0, "target_folder": None})
        for user, source, v in volumes:
            r = row(user, source, v["folder"])
            r["messages"], r["bytes"] = v.get("messages"), v.get("bytes")
        for (user, source, folder), (messages, size, target) in self.mail.items():
            r = row(user, source, folder)
            r["selected_messages"] += messages
            r["selected_bytes"] += size
            r["target_folder"] = r["target_folder"] or target
        for r in rows.values():
            if r["messages"] is None:            # a source without server-side counts: what it listed
                r["messages"], r["bytes"] = r["selected_messages"], r["selected_bytes"]
        return sorted(rows.values(),
                      key=lambda r: (r["user"], r["source"], r["folder"].upper() != "INBOX", r["folder"]))


def mail_volume(listing: Iterable[tuple[str, ItemRef]], volumes: Iterable[tuple[str, str, dict]] = ()) -> list[dict]:
    """Mail per user, source and folder: what the source holds (its server's counts where it gave
    them, `volumes` as (user, source, {folder, messages, bytes})) and what the department's mail
    options select to move (from the listing, taken one item at a time), with the folder it is
    renamed to, if any."""
    return Inventory.of(listing).mail_rows(volumes)


def write_assessment(dept: Department, problems: list[str], ledger: Ledger | None = None,
                     listing: Iterable[tuple[str, ItemRef]] | Inventory = (),
                     scan_folders: Iterable[tuple[str, str, Path]] = (),
                     mail_volumes: Iterable[tuple[str, str, dict]] = (), identities: Iterable[dict] = ()) -> dict:
    """Inventory of every source (counts and sizes by format and kind per user), the risk scan of
    the folders given, and a duration estimate. `listing` is the `Inventory` of what the sources
    list, or (source user, item) for every item they list, counted as it streams past (never held);
    `scan_folders` is (source name, source user, local folder) for the risk scan; `mail_volumes`
    the mail folders as their servers count them (see `mail_volume`); `identities` the identity map
    with each check (flows.identity.UserCheck.row), as `umstieg users` shows it."""
    inventory = listing if isinstance(listing, Inventory) else Inventory.of(listing)
    mail = inventory.mail_rows(mail_volumes)
    by_format, bytes_by_format = inventory.by_format, inventory.bytes_by_format
    per_user, by_kind = inventory.per_user, inventory.by_kind
    # the pre-migration risk scan of every user's folder (read-only): flags and planning categories
    from reports.scan import scan_tree
    risk_flags: Counter = Counter()
    categories: Counter = Counter()
    scans: dict[str, str] = {}
    for source_name, user, folder in scan_folders:
        scan = scan_tree(folder, reports_dir(dept) / "scan" / source_name / user, language=_language(dept, None))
        risk_flags.update(scan.by_flag)
        categories.update(scan.by_category)
        scans[f"{source_name}/{user}"] = str(scan.paths.get("html", ""))
    documents = sum(n for ext, n in by_format.items() if ext in OFFICE_FORMATS)
    workers = dept.conversion.workers or usable_cpus()
    estimate: dict = {"documents_per_second": DEFAULT_DOCS_PER_SECOND_PER_WORKER * workers, "measured": False,
                      "per_worker": DEFAULT_DOCS_PER_SECOND_PER_WORKER, "workers": workers, "items_per_second": None}
    if ledger is not None:
        measured = measured_rate(dept, ledger)
        if measured:
            estimate.update(documents_per_second=measured, measured=True, per_worker=None, workers=None)
        estimate["items_per_second"] = measured_item_rate(dept, ledger)
    whole = round(sum(by_kind.values()) / estimate["items_per_second"], 1) if estimate["items_per_second"] else None
    english = _estimate_basis(estimate, names("en"))
    result = {"department": dept.name, "problems": problems, "identities": list(identities),
              "items": sum(by_kind.values()),
              "by_kind": dict(by_kind),
              "bytes": sum(bytes_by_format.values()), "office_documents": documents,
              "by_format": {k: {"items": by_format[k], "bytes": bytes_by_format[k]} for k in sorted(by_format)},
              "by_user": dict(per_user),
              # most files first, a tie by name: the scan's threads finish in no fixed order
              "risk_flags": dict(sorted(risk_flags.items(), key=lambda kv: (-kv[1], kv[0]))),
              "mail": mail, "mail_messages": sum(r["messages"] or 0 for r in mail),
              "mail_bytes": sum(r["bytes"] or 0 for r in mail),
              "mail_selected_messages": sum(r["selected_messages"] for r in mail),
              "mail_selected_bytes": sum(r["selected_bytes"] for r in mail),
              "mail_dry_run": bool(dept.mail.dry_run),
              "planning": dict(sorted(categories.items())), "scan_reports": scans,
              "estimated_conversion_seconds": round(documents / estimate["documents_per_second"], 1),
              "estimate_basis": english["conversion"],
              "estimated_seconds": whole,
              "estimated_seconds_basis": english["whole"],
              # the rates behind both estimates, for machines and for the basis in other languages
              "estimate": estimate}
    out = reports_dir(dept)
    (out / "assessment.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out / "assessment.md").write_text(assessment_markdown(result, _language(dept, None)), encoding="utf-8")
    result["report"] = str(out / "assessment.json")
    result["markdown"] = str(out / "assessment.md")
    return result


def _estimate_basis(estimate: dict, n: Names) -> dict[str, str]:
    """What each estimate of the assessment rests on, in `n`'s language: the conversion's
    documents per second (assumed per worker, or measured) and the whole migration's items per
    second (measured, or a word on how to measure it)."""
    if estimate["measured"]:
        conversion = n("%(rate)s documents/s measured by this department's runs") % {
            "rate": decimal(estimate["documents_per_second"], 2, n)}
    else:
        conversion = n("%(rate)s documents/s per worker × %(workers)s worker(s) (no run measured yet)") % {
            "rate": decimal(estimate["per_worker"], 1, n), "workers": estimate["workers"]}
    if estimate.get("items_per_second"):
        whole = n("%(rate)s items/s (every step, all kinds) measured by this department's runs") % {
            "rate": decimal(estimate["items_per_second"], 2, n)}
    else:
        whole = n("no run of this department measured yet: run a pilot (a few users) for an estimate of the whole")
    return {"conversion": conversion, "whole": whole}


def assessment_basis(result: dict, n: Names) -> dict[str, str]:
    """What the estimates of an assessment (`write_assessment`'s result) rest on, in `n`'s language;
    an assessment.json written before the rates were kept (no `estimate`): its sentences as recorded."""
    if result.get("estimate"):
        return _estimate_basis(result["estimate"], n)
    return {"conversion": result["estimate_basis"], "whole": result["estimated_seconds_basis"]}


def decimal(value: float, digits: int, n: Names) -> str:
    """`value` with `digits` decimals as the assessment and the commands print it: English as Python writes it
    (what it has always printed), German and French with a decimal comma; never grouped, like
    the counts beside it."""
    if n.language == "en":
        return f"{value:.{digits}f}"
    from babel.numbers import format_decimal
    return format_decimal(value, format="0." + "0" * digits, locale=n.language)


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def assessment_markdown(result: dict, language: str | None = None) -> str:
    """The assessment for people (and Prefect) in `language`: what is there, what needs care, how
    long it takes. Risk flags keep their codes in English (what `umstieg scan`'s CSV and the
    dashboard's filter show) and are named in words in German and French; what was recorded
    (problems, the identity checks' findings) stays as recorded."""
    n = names(language)
    rows = result.get("identities") or []
    waiting = [r for r in rows if r["verdict"] != "go"]
    limit = 500            # who would wait first, so a long department's problems are not buried
    identities = {"count": len(rows), "waiting": len(waiting), "more": max(len(rows) - limit, 0),
                  "rows": (waiting + [r for r in rows if r["verdict"] == "go"])[:limit]} if rows else None
    return render("assessment.md", n.language, a=result, cell=_cell, identities=identities,
                  basis=assessment_basis(result, n),
                  formats=sorted(result["by_format"].items(), key=lambda kv: -kv[1]["items"])[:30],
                  flags=list(result["risk_flags"].items())[:20],
                  flag=lambda code: code if n.language == "en" else n.flag(code),
                  check=lambda found: n(found) if found in IDENTITY_FINDINGS else found,
                  verdict=lambda v: n("go") if v == "go" else (
                      n("wait: %(why)s") % {"why": v[6:]} if v.startswith("wait: ") else v),
                  mib=lambda size, digits: decimal(size / 2**20, digits, n), duration=_duration)


def _cell(text: str | None, limit: int | None = None) -> str:
    """`text` for a Markdown table cell: one line, `|` escaped, cut at a word boundary if `limit`."""
    flat = clip(text, limit) if limit else " ".join((text or "").split())
    return flat.replace("|", "\\|")


def _safe_url(dept: Department) -> str:
    from sqlalchemy.engine import make_url
    return make_url(dept.ledger_url).render_as_string(hide_password=True)
