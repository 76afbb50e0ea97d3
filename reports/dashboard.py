"""What the dashboard shows, computed from the ledger and the report files.

Pure functions over a `Ledger` (and a department's report folder): every count, sum and histogram
is aggregated in SQL and every item list is paginated in SQL, so a department of 500 000 items
costs a handful of indexed GROUP BY queries, not a walk over its rows. The web face
(umstieg/dashboard) renders what these functions return; the exports (CSV, ODS) are written here
from the same tables, with column headers translated by the caller's `translate`.
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import ColumnElement, func, literal_column, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import String

from core.ledger import (NEEDS_A_PERSON, STALE_AFTER, Annotation, Item, Ledger, Run, State, now,
                         process_alive)
from reports.exports import csv_cell     # one rule for every CSV umstieg writes

__all__ = ["NEEDS_A_PERSON", "ATTENTION", "CATEGORIES", "ATTENTION_COLUMNS", "ITEM_SORTS", "categorise",
           "waiting_users", "attention_page", "iter_attention", "attention_neighbours", "why_of",
           "department_owners", "document_neighbours", "IDENTITY_COLUMNS", "assessed_identities", "identity_table",
           "page_pictures", "Table", "PHASES", "PENDING", "ANNOTATION_VERDICTS", "departments_in", "overview",
           "department_view", "item_page", "document", "annotate", "scan_table", "rerun_runs", "run_history",
           "run_of_process", "live_run", "failed_count", "safe_report_file", "thumbnails", "views", "table_csv",
           "table_ods", "csv_text", "csv_rows", "csv_cell", "ITEM_FILTERS", "scan_files", "scan_frame",
           "read_assessment", "iter_items", "overview_tables", "file_ext", "ITEM_COLUMNS", "SCAN_COLUMNS", "STATES",
           "VERDICTS"]

#: The phases of a department's migration, in order (see `_phase` for how each is recognised).
PHASES = ("not_started", "assessed", "pilot", "bulk", "delta", "done")
#: States with steps still to do.
PENDING = (State.DISCOVERED.value, State.EXTRACTED.value, State.CONVERTED.value, State.LOADED.value)
STATES = tuple(s.value for s in State)
VERDICTS = ("identical", "minor", "review", "broken")
ANNOTATION_VERDICTS = ("accepted", "manual_work")
#: Columns of the item table a page may filter on (query parameter -> column).
ITEM_FILTERS = {"state": Item.state, "owner": Item.owner, "kind": Item.kind, "reason": Item.reason,
                "verdict": Item.fidelity_verdict, "batch": Item.batch_id}
#: Score histogram buckets: 0–9, 10–19, …, 90–100.
BUCKETS = tuple(range(0, 100, 10))


@dataclass
class Table:
    """One table of a page: what the page shows and what its CSV/ODS export holds.

    `columns` are (key, label) pairs; labels are English message ids, translated when rendered or
    exported. `note` says when a table is cut (e.g. the 10 most frequent deductions).
    """

    name: str
    caption: str
    columns: list[tuple[str, str]]
    rows: list[dict]
    numeric: frozenset[str] = frozenset()
    note: str | None = None

    def frame(self, translate: Callable[[str], str] = str, language: str | None = None) -> pd.DataFrame:
        """The table for an export: headers translated, and in German or French the recorded codes
        of its cells named in words (reports.exports; English keeps the codes scripts read)."""
        from reports.exports import named
        frame = pd.DataFrame([[row.get(k) for k, _ in self.columns] for row in self.rows],
                             columns=[k for k, _ in self.columns])
        if language:
            frame = named(frame, language, {k: CODE_COLUMNS[k] for k, _ in self.columns if k in CODE_COLUMNS})
        frame.columns = [translate(label) for _, label in self.columns]
        return frame


#: Columns whose cells are recorded codes, and how they are named in an export (reports.exports).
CODE_COLUMNS = {"state": "code", "kind": "code", "reason": "code", "conversion": "code", "fidelity_verdict": "code",
                "verdict": "code", "annotation": "code", "category": "code", "outcome": "code", "flag": "flags",
                "flags": "flags", "check": "check"}


def csv_text(table: Table, translate: Callable[[str], str] = str, header: bool = True,
             language: str | None = None) -> str:
    """The table as CSV text with every text cell neutralised (see csv_cell); headers too."""
    frame = table.frame(translate, language)
    frame.columns = [csv_cell(c) for c in frame.columns]
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            frame[col] = frame[col].map(csv_cell)
    return frame.to_csv(index=False, header=header)


def csv_rows(columns: list[tuple[str, str]], rows: list[dict], translate: Callable[[str], str] = str,
             header: bool = True, language: str | None = None) -> str:
    """Rows of a long export as CSV text: the same cells as csv_text (codes named in `language`,
    every text cell neutralised), written with the csv module instead of a DataFrame: the full item
    export of a 500 000-item department is 100 chunks, and a frame per chunk cost more than the
    database did. Numbers stay as recorded (no NaN turning a column of ids with gaps into floats)."""
    import csv
    import io

    from reports.exports import named
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow([csv_cell(translate(label)) for _, label in columns])
    keys = [key for key, _ in columns]
    words: dict[tuple[str, str], object] = {}       # a code's name, looked up once per chunk

    def cell(key: str, value):
        if value is None:
            return ""
        if language and key in CODE_COLUMNS and isinstance(value, str) and value:
            if (key, value) not in words:
                frame = named(pd.DataFrame({key: [value]}), language, {key: CODE_COLUMNS[key]})
                words[key, value] = frame.iloc[0, 0]
            value = words[key, value]
        return csv_cell(value)
    writer.writerows([[cell(k, row.get(k)) for k in keys] for row in rows])
    return out.getvalue()


def table_csv(table: Table, translate: Callable[[str], str] = str, language: str | None = None) -> bytes:
    """The table as CSV (UTF-8 with a byte-order mark, so that spreadsheet programs read umlauts)."""
    return csv_text(table, translate, language=language).encode("utf-8-sig")


def table_ods(table: Table, translate: Callable[[str], str] = str, language: str | None = None) -> bytes:
    """The table as an OpenDocument spreadsheet (one sheet named after its caption)."""
    from reports.batch import write_ods
    sheet = translate(table.caption)[:31].replace("/", "-") or "Table"
    with tempfile.TemporaryDirectory(prefix="umstieg-export-") as tmp:
        path = Path(tmp) / "table.ods"
        write_ods(path, {sheet: (table.frame(translate, language), False)})
        return path.read_bytes()


# ------------------------------------------------------------------------------ SQL helpers
class file_ext(FunctionElement):
    """The lower-case extension of a path column ('' when none), in SQLite and PostgreSQL.

    Neither database has a "last dot" function. SQLite strips every character but dots from the
    right (rtrim with the path's own non-dot characters); its ledger indexes exactly this
    expression (migration 0005). PostgreSQL reverses the path; for `items.location` it reads the
    generated column `file_format` that migration 0005 adds and indexes.
    """

    type = String()
    inherit_cache = True


@compiles(file_ext, "sqlite")
def _file_ext_sqlite(element, compiler, **kw):
    col = compiler.process(element.clauses, **kw)
    tail = f"substr({col}, length(rtrim({col}, replace({col}, '.', ''))) + 1)"
    return f"(CASE WHEN instr({col}, '.') = 0 OR instr({tail}, '/') > 0 THEN '' ELSE lower({tail}) END)"


@compiles(file_ext, "postgresql")
def _file_ext_pg(element, compiler, **kw):
    (arg,) = element.clauses
    if getattr(arg, "table", None) is Item.__table__ and arg.name == "location":
        return "items.file_format"
    col = compiler.process(element.clauses, **kw)
    tail = f"reverse(split_part(reverse({col}), '.', 1))"
    return f"left(CASE WHEN strpos({col}, '.') = 0 OR strpos({tail}, '/') > 0 THEN '' ELSE lower({tail}) END, 20)"


#: Top deductions and risk flags are counted over this many of the latest measured documents: the
#: fidelity records are JSON, and reading all of a 500 000-item department's takes seconds.
JSON_SAMPLE = 10_000


def _json_elements(ledger: Ledger, key: str, department: str, *, limit: int = 10,
                   sample: int = JSON_SAMPLE) -> list[tuple[str, int, float]]:
    """(name, items, points) of the elements of fidelity[key] (deductions: their `check`; risks: the flag)
    among the department's latest `sample` documents with a fidelity record.

    Aggregated by the database (json_each / json_array_elements): the records never leave it.
    """
    dialect = ledger.engine.dialect.name
    latest = ("SELECT fidelity FROM items WHERE department = :d AND fidelity IS NOT NULL "
              "ORDER BY id DESC LIMIT :s")
    if dialect == "sqlite":
        name = "json_extract(e.value, '$.check')" if key == "deductions" else "e.value"
        points = "json_extract(e.value, '$.points')" if key == "deductions" else "0"
        sql = (f"SELECT {name} AS n, count(*) AS c, coalesce(sum({points}), 0) AS p FROM ({latest}) AS f, "
               f"json_each(f.fidelity, '$.{key}') AS e GROUP BY n ORDER BY c DESC, n LIMIT :l")
    else:
        name = "e ->> 'check'" if key == "deductions" else "e #>> '{}'"
        points = "(e ->> 'points')::float" if key == "deductions" else "0"
        sql = (f"SELECT {name} AS n, count(*) AS c, coalesce(sum({points}), 0) AS p FROM ({latest}) AS f "
               f"CROSS JOIN LATERAL json_array_elements(CASE WHEN json_typeof(f.fidelity -> '{key}') = 'array' "
               f"THEN f.fidelity -> '{key}' ELSE '[]'::json END) AS e GROUP BY n ORDER BY c DESC, n LIMIT :l")
    with ledger.session() as s:
        return [(n, int(c), float(p or 0))
                for n, c, p in s.execute(text(sql), {"d": department, "l": limit, "s": sample})]


# ------------------------------------------------------------------------------ what needs a person
#: ... and that are finished (verified or skipped), or failed in a way no rerun mends (too large).
_FINISHED = "(state IN ('verified', 'skipped') OR (state = 'failed' AND reason = 'conversion_too_large'))"
#: Why an item needs a person, most pressing first (one reason per item).
ATTENTION = ("too_large", "encrypted", "unreadable", "not_moved", "broken", "review", "renamed")
_WHY = ("(CASE WHEN reason = 'conversion_too_large' THEN 'too_large' WHEN conversion = 'encrypted' THEN 'encrypted' "
        "WHEN conversion = 'unreadable' THEN 'unreadable' WHEN reason IN ('skipped_link', 'skipped_fifo', "
        "'skipped_socket', 'skipped_device', 'skipped_special') THEN 'not_moved' WHEN fidelity_verdict = 'broken' "
        "THEN 'broken' WHEN fidelity_verdict = 'review' THEN 'review' ELSE 'renamed' END)")
#: How a department's items stand for its manager, in the order of the stacked bars.
CATEGORIES = ("done", "needs_person", "failed", "waiting", "pending")


def _attention_counts(ledger: Ledger, names: list[str]) -> tuple[dict, dict]:
    """({dept: {owner: Counter(why)}} of the finished items that need a person,
    the same of those a person has accepted as they are)."""
    found: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    accepted: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    if not names:
        return found, accepted
    depts = ", ".join(f":d{i}" for i in range(len(names)))
    params = {f"d{i}": n for i, n in enumerate(names)}
    with ledger.session() as s:
        for dept, owner, why, n in s.execute(text(
                f"SELECT department, owner, {_WHY} AS why, count(*) FROM items WHERE department IN ({depts}) "
                f"AND {NEEDS_A_PERSON} AND {_FINISHED} GROUP BY department, owner, why"), params):
            found[dept][owner][why] += n
        # the columns of the items aliased `i`, not the codes in quotes ('conversion_too_large')
        why = re.sub(r"(?<![\w'.])(reason|conversion|fidelity_verdict)(?![\w'])", r"i.\1", _WHY)
        for dept, owner, why_, n in s.execute(text(
                f"SELECT i.department, i.owner, {why} AS why, count(*) FROM annotations a "
                f"JOIN items i ON i.id = a.item_id WHERE a.department IN ({depts}) AND a.verdict = 'accepted' "
                f"AND i.department = a.department GROUP BY i.department, i.owner, why"), params):
            accepted[dept][owner][why_] += n
    return found, accepted


def waiting_users(ledger: Ledger, name: str) -> dict[str, str]:
    """{source login: why} of the users the latest finished migrate or rerun run left waiting
    (a full quota, a missing account, a refused login: the reason the run recorded)."""
    with ledger.session() as s:
        run = s.scalars(select(Run).where(Run.department == name, Run.flow.in_(("migrate", "rerun")),
                                          Run.status != "running", Run.status != "refused")
                        .order_by(Run.id.desc()).limit(1)).first()
        return dict(((run.summary or {}).get("stopped_users") or {}) if run else {})


def categorise(states: Counter, found: Counter, accepted: Counter, waiting: bool) -> dict[str, int]:
    """One user's (or department's) items as done / needs a person / failed / waiting / pending.

    Done is verified or skipped and needing nobody (or accepted by a person); an item that needs a
    person is never done until someone accepts it. Pending items of a user who waits are waiting.
    """
    verified_or_skipped = states.get(State.VERIFIED.value, 0) + states.get(State.SKIPPED.value, 0)
    too_large, too_large_ok = found.get("too_large", 0), accepted.get("too_large", 0)
    open_finished = sum(n for w, n in found.items() if w != "too_large") - \
        sum(min(n, found.get(w, 0)) for w, n in accepted.items() if w != "too_large")
    pending = sum(states.get(x, 0) for x in PENDING)
    return {"done": verified_or_skipped - open_finished + min(too_large_ok, too_large),
            "needs_person": open_finished + too_large - min(too_large_ok, too_large),
            "failed": states.get(State.FAILED.value, 0) - too_large,
            "waiting": pending if waiting else 0, "pending": 0 if waiting else pending}


def why_of(item: dict) -> str | None:
    """Why one finished item needs a person (the same rules as NEEDS_A_PERSON and _WHY), or None."""
    state, reason = item.get("state"), item.get("reason")
    if not (state in (State.VERIFIED.value, State.SKIPPED.value)
            or (state == State.FAILED.value and reason == "conversion_too_large")):
        return None
    if reason == "conversion_too_large":
        return "too_large"
    if item.get("conversion") in ("encrypted", "unreadable"):
        return item["conversion"]
    if reason in ("skipped_link", "skipped_fifo", "skipped_socket", "skipped_device", "skipped_special"):
        return "not_moved"
    if item.get("fidelity_verdict") in ("broken", "review"):
        return item["fidelity_verdict"]
    return "renamed" if item.get("renamed") else None


def department_owners(ledger: Ledger, name: str) -> list[str]:
    with ledger.session() as s:
        return list(s.scalars(select(Item.owner).where(Item.department == name).group_by(Item.owner)
                              .order_by(Item.owner)))


def _attention_query(name: str, filters: dict, columns=None):
    why: ColumnElement[Any] = literal_column(_WHY).label("why")
    q = (select(*(columns or (Item.id, Item.owner, Item.kind, Item.location, Item.state, Item.reason, Item.conversion,
                              Item.fidelity_score, Item.fidelity_verdict, Item.renamed, Item.target_path,
                              Item.message)), why, Annotation.verdict.label("annotation"), Annotation.comment)
         .outerjoin(Annotation, Annotation.item_id == Item.id)
         .where(Item.department == name, text(NEEDS_A_PERSON), text(_FINISHED)))
    if filters.get("why") in ATTENTION:
        q = q.where(literal_column(_WHY) == filters["why"])
    if filters.get("owner"):
        q = q.where(Item.owner == filters["owner"])
    if filters.get("show") != "all":
        q = q.where((Annotation.verdict.is_(None)) | (Annotation.verdict != "accepted"))
    return q


ATTENTION_COLUMNS = [("id", "Item"), ("owner", "User"), ("location", "Path"), ("why", "Why a person is needed"),
                     ("state", "State"), ("fidelity_score", "Score"), ("target_path", "Name at the target"),
                     ("annotation", "Annotation"), ("comment", "Comment"), ("message", "Message")]


def attention_page(ledger: Ledger, name: str, filters: dict, page: int = 1, per_page: int = 50) -> dict:
    """One page of the department's "needs a person" queue (in id order) and how many it holds."""
    q = _attention_query(name, filters)
    with ledger.session() as s:
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        pages = max(1, -(-total // per_page))
        page = min(max(1, page), pages)
        rows = [dict(r._mapping) for r in s.execute(q.order_by(Item.id).limit(per_page).offset((page - 1) * per_page))]
    return {"table": Table("attention", "Needs a person", ATTENTION_COLUMNS, rows,
                           frozenset({"id", "fidelity_score"})), "total": total, "page": page, "pages": pages}


def iter_attention(ledger: Ledger, name: str, filters: dict, chunk: int = 5000) -> Iterator[list[dict]]:
    """The whole "needs a person" queue in chunks (for an export)."""
    return _by_id(ledger, _attention_query(name, filters), chunk)


def _by_id(ledger: Ledger, query, chunk: int) -> Iterator[list[dict]]:
    """The rows of an item query in chunks, by keyset on the id (a session per chunk, so that a
    long export holds no transaction open and memory stays flat)."""
    last = 0
    while True:
        with ledger.session() as s:
            rows = [dict(r._mapping) for r in s.execute(query.where(Item.id > last).order_by(Item.id).limit(chunk))]
        if not rows:
            return
        yield rows
        last = rows[-1]["id"]


def attention_neighbours(ledger: Ledger, name: str, item_id: int, filters: dict) -> dict:
    """The previous and next item of the queue around `item_id`, and its place in the queue."""
    q = _attention_query(name, filters, columns=(Item.id,))
    with ledger.session() as s:
        before = s.execute(q.where(Item.id < item_id).order_by(Item.id.desc()).limit(1)).first()
        after = s.execute(q.where(Item.id > item_id).order_by(Item.id).limit(1)).first()
        place = s.scalar(select(func.count()).select_from(q.where(Item.id <= item_id).subquery())) or 0
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    return {"previous": before[0] if before else None, "next": after[0] if after else None,
            "place": place, "total": total}


# ------------------------------------------------------------------------------ programme overview
def departments_in(ledger: Ledger) -> list[str]:
    """Every department the ledger knows: each has runs, since items enter the ledger in a run.

    (Read from the small runs table: DISTINCT over the items is a scan of every item in PostgreSQL.)
    """
    with ledger.session() as s:
        return sorted(set(s.scalars(select(Run.department).distinct())))


@dataclass
class RunFacts:
    """What the completed runs of a department measured."""

    migrate_runs: int = 0
    last_migrate_delta: dict = field(default_factory=dict)
    running: bool = False
    points: list[tuple[datetime, float, float]] = field(default_factory=list)   # (finished, items, seconds)
    runs: list[dict] = field(default_factory=list)      # the completed runs, oldest first (for the trend)

    @property
    def rate(self) -> float | None:
        """Items per second over the last five completed runs that processed anything."""
        recent = [p for p in self.points if p[1] and p[2]][-5:]
        items, seconds = sum(p[1] for p in recent), sum(p[2] for p in recent)
        return items / seconds if items and seconds else None


def _run_facts(ledger: Ledger, names: list[str]) -> dict[str, RunFacts]:
    facts: dict[str, RunFacts] = defaultdict(RunFacts)
    with ledger.session() as s:
        q = (select(Run.id, Run.department, Run.flow, Run.status, Run.started, Run.finished, Run.summary)
             .where(Run.department.in_(names)).order_by(Run.id))
        for run_id, dept, flow, status, started, finished, summary in s.execute(q):
            f = facts[dept]
            summary = summary or {}
            if status == "running":
                f.running = True
            if status != "completed":
                continue
            if flow == "migrate":
                f.migrate_runs += 1
                f.last_migrate_delta = summary.get("delta") or {}
            this_run = summary.get("this_run") or {}
            processed = sum(v for v in this_run.values() if isinstance(v, (int, float)))
            seconds = float(summary.get("seconds") or 0)
            f.points.append((_aware(finished or started), processed, seconds))
            f.runs.append({"run": run_id, "flow": flow, "finished": _aware(finished or started), "processed": processed,
                           "failed": this_run.get(State.FAILED.value, 0) if isinstance(this_run, dict) else 0,
                           "per_hour": round(processed * 3600 / seconds) if processed and seconds else None})
    return facts


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _phase(states: Counter, owners: int, users: int | None, runs: RunFacts, assessed: bool,
           open_items: int = 0) -> str:
    """assessed → pilot → bulk → delta → done, from what the ledger and the report folder show.

    - not_started / assessed: no item in the ledger yet (assessed: the assessment report exists);
    - pilot: items of only some of the department file's users;
    - bulk: every user has items, and at most one migrate run has completed;
    - delta: a second migrate run (a delta pass) has completed;
    - done: a delta pass found nothing new or changed, and nothing is pending, failed, waiting or
      left for a person (`open_items`: items that need a person, items of waiting users).
    """
    total = sum(states.values())
    if not total:
        return "assessed" if assessed else "not_started"
    if users is not None and owners < users:
        return "pilot"
    if runs.migrate_runs < 2:
        return "bulk"
    delta = runs.last_migrate_delta
    moved = sum(sum(v.values()) if isinstance(v, dict) else 0 for k, v in delta.items() if k in ("new", "changed"))
    open_items += sum(states.get(s, 0) for s in (*PENDING, State.FAILED.value))
    return "done" if not moved and not open_items and not runs.running else "delta"


def overview(ledger: Ledger, names: list[str], configs: dict | None = None,
             report_dirs: dict[str, Path] | None = None) -> dict:
    """Every department's phase, items and bytes by state, verdicts, failures, throughput and ETA."""
    configs, report_dirs = configs or {}, report_dirs or {}
    states: dict[str, Counter] = defaultdict(Counter)
    sizes: dict[str, Counter] = defaultdict(Counter)
    verdicts: dict[str, Counter] = defaultdict(Counter)
    owners: dict[str, int] = {}
    owner_states: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    with ledger.session() as s:
        # grouped like the department page, so that the covering index answers it alone
        for dept, owner, state, n, size in s.execute(
                select(Item.department, Item.owner, Item.state, func.count(Item.id),
                       func.coalesce(func.sum(Item.size), 0))
                .where(Item.department.in_(names)).group_by(Item.department, Item.owner, Item.kind, Item.state)):
            states[dept][state] += n
            sizes[dept][state] += int(size or 0)
            owner_states[dept][owner][state] += n
        for dept, verdict, n in s.execute(
                select(Item.department, Item.fidelity_verdict, func.count(Item.id))
                .where(Item.department.in_(names), Item.fidelity_verdict.isnot(None))
                .group_by(Item.department, Item.fidelity_verdict)):
            verdicts[dept][verdict] += n
        owners = {dept: len(found) for dept, found in owner_states.items()}
    runs = _run_facts(ledger, names)
    found, accepted = _attention_counts(ledger, names)
    rows: list[dict] = []
    series: defaultdict[str, float] = defaultdict(int)
    for name in names:
        cfg = configs.get(name)
        st, rf = states[name], runs[name]
        assessed = bool(report_dirs.get(name) and (report_dirs[name] / "assessment.json").is_file())
        waiting = waiting_users(ledger, name)
        cats: Counter[str] = Counter()
        for owner, c in owner_states[name].items():
            cats.update(categorise(c, found[name][owner], accepted[name][owner], owner in waiting))
        remaining = cats["pending"]
        total = sum(st.values())
        rate = rf.rate
        rows.append({
            "department": name,
            "phase": _phase(st, owners.get(name, 0), len(cfg.users) if cfg else None, rf, assessed,
                            open_items=cats["needs_person"] + cats["waiting"]),
            "items": sum(st.values()), "bytes": sum(sizes[name].values()),
            **{f"items_{x}": st.get(x, 0) for x in STATES}, **{f"bytes_{x}": sizes[name].get(x, 0) for x in STATES},
            **{c: cats[c] for c in CATEGORIES}, "remaining": remaining,
            "percent_done": round(100 * cats["done"] / total, 1) if total else 0.0,
            "waiting_users": len([u for u in waiting if u in owner_states[name]]),
            **{f"verdict_{v}": verdicts[name].get(v, 0) for v in VERDICTS},
            "rate": round(rate, 3) if rate else None,
            "eta_seconds": round(remaining / rate) if rate and remaining else (0 if not remaining else None),
            "running": rf.running, "configured": cfg is not None,
        })
        for finished, processed, _ in rf.points:
            series[finished.date().isoformat()] += processed
    return {"departments": rows, "throughput": sorted(series.items()),
            "totals": {k: sum(r[k] for r in rows) for k in ("items", "bytes", *CATEGORIES, "remaining")}}


def overview_tables(data: dict) -> dict[str, Table]:
    rows = data["departments"]
    return {
        "departments": Table("departments", "Departments", [
            ("department", "Department"), ("phase", "Phase"), ("items", "Items"), ("bytes", "Bytes"),
            ("percent_done", "% done"), ("done", "Done"), ("needs_person", "Needs a person"), ("failed", "Failed"),
            ("waiting", "Waiting"), ("remaining", "Remaining"), ("waiting_users", "Users who wait"),
            ("rate", "Items per second"), ("eta_seconds", "Estimated seconds to finish")], rows,
            frozenset({"items", "bytes", "percent_done", "done", "needs_person", "failed", "waiting", "remaining",
                       "waiting_users", "rate", "eta_seconds"})),
        "states": Table("states", "Items and bytes by state", [("department", "Department")] + [
            (f"items_{x}", x) for x in STATES] + [(f"bytes_{x}", f"bytes {x}") for x in STATES], rows,
            frozenset(f"{p}_{x}" for p in ("items", "bytes") for x in STATES)),
        "verdicts": Table("verdicts", "Fidelity verdicts", [("department", "Department")] + [
            (f"verdict_{v}", v) for v in VERDICTS], rows, frozenset(f"verdict_{v}" for v in VERDICTS)),
        "throughput": Table("throughput", "Items processed per day", [("day", "Day"), ("items", "Items")],
                            [{"day": d, "items": n} for d, n in data["throughput"]], frozenset({"items"})),
    }


# ------------------------------------------------------------------------------ department page
def department_view(ledger: Ledger, name: str, *, risk_flags: Mapping[str, int] | None = None) -> dict:
    """Progress by user and kind, verdicts and scores by format, top deductions and risks, failures."""
    by_user: dict[str, Counter] = defaultdict(Counter)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    bytes_user: Counter = Counter()
    bytes_kind: Counter = Counter()
    with ledger.session() as s:
        for owner, kind, state, n, size in s.execute(
                select(Item.owner, Item.kind, Item.state, func.count(Item.id), func.coalesce(func.sum(Item.size), 0))
                .where(Item.department == name).group_by(Item.owner, Item.kind, Item.state)):
            by_user[owner][state] += n
            by_kind[kind][state] += n
            bytes_user[owner] += int(size or 0)
            bytes_kind[kind] += int(size or 0)
        ext = file_ext(Item.location)
        formats: dict[str, Counter] = defaultdict(Counter)
        histogram: dict[str, Counter] = defaultdict(Counter)
        # grouped in the order of the format index (extension, verdict, score): no sort, no table
        # rows; the scores (one decimal) are put into buckets here
        for fmt, verdict, score, n in s.execute(
                select(ext, Item.fidelity_verdict, Item.fidelity_score, func.count(Item.id))
                .where(Item.department == name, Item.fidelity_score.isnot(None))
                .group_by(ext, Item.fidelity_verdict, Item.fidelity_score)):
            formats[fmt or "-"][verdict] += n
            histogram[fmt or "-"][min(90, int(score // 10) * 10)] += n
        failures = [{"reason": reason or "unknown", "count": n, "example": example}
                    for reason, n, example in s.execute(
                        select(Item.reason, func.count(Item.id), func.min(Item.message))
                        .where(Item.department == name, Item.state == State.FAILED.value)
                        .group_by(Item.reason).order_by(func.count(Item.id).desc(), Item.reason))]
        failed_batches = [b for b, in s.execute(
            select(Item.batch_id).where(Item.department == name, Item.state == State.FAILED.value,
                                        Item.batch_id.isnot(None)).group_by(Item.batch_id).order_by(Item.batch_id)
            .limit(500))]
        annotations = dict(s.execute(select(Annotation.verdict, func.count(Annotation.id))
                                     .where(Annotation.department == name).group_by(Annotation.verdict)).all())
    deductions = _json_elements(ledger, "deductions", name)
    found, accepted = _attention_counts(ledger, [name])
    found, accepted = found[name], accepted[name]
    waiting = waiting_users(ledger, name)
    cats_by_user = {u: categorise(c, found[u], accepted[u], u in waiting) for u, c in by_user.items()}
    cats: Counter[str] = Counter()
    for c in cats_by_user.values():
        cats.update(c)
    why_open: Counter[str] = Counter()
    for c in found.values():
        why_open.update(c)
    for c in accepted.values():
        why_open.subtract(c)
    risks = Counter(risk_flags or {})
    for flag, n, _ in _json_elements(ledger, "risks", name):
        risks[flag] = max(risks[flag], n)

    def progress_rows(groups: dict[str, Counter], sizes: Counter, key: str) -> list[dict]:
        out = []
        for k in sorted(groups):
            c = groups[k]
            total = sum(c.values())
            done = c.get(State.VERIFIED.value, 0) + c.get(State.SKIPPED.value, 0)
            if key == "user":            # a user's done is the manager's: nothing left for a person
                done = cats_by_user[k]["done"]
            out.append({key: k, **{x: c.get(x, 0) for x in STATES}, "total": total, "bytes": sizes[k],
                        "percent": round(100 * done / total, 1) if total else 0.0,
                        **({x: cats_by_user[k][x] for x in CATEGORIES} if key == "user" else {})})
        return out

    totals: Counter[str] = Counter()
    for c in by_user.values():
        totals.update(c)
    progress_cols = [(x, x) for x in STATES] + [("total", "Total"), ("bytes", "Bytes"), ("percent", "% done")]
    numeric = frozenset([*STATES, "total", "bytes", "percent"])
    format_rows = [{"format": f, **{v: formats[f].get(v, 0) for v in VERDICTS}, "total": sum(formats[f].values())}
                   for f in sorted(formats)]
    hist_rows = [{"format": f, **{f"b{b}": histogram[f].get(b, 0) for b in BUCKETS}} for f in sorted(histogram)]
    tables = {
        "users": Table("users", "Progress by user", [("user", "User"), *progress_cols],
                       progress_rows(by_user, bytes_user, "user"), numeric),
        "kinds": Table("kinds", "Progress by kind", [("kind", "Kind"), *progress_cols],
                       progress_rows(by_kind, bytes_kind, "kind"), numeric),
        "verdicts": Table("verdicts", "Fidelity verdicts by format",
                          [("format", "Format"), *[(v, v) for v in VERDICTS], ("total", "Total")], format_rows,
                          frozenset([*VERDICTS, "total"])),
        "scores": Table("scores", "Score histogram by format",
                        [("format", "Format"), *[(f"b{b}", f"{b}–{b + 9 if b < 90 else 100}") for b in BUCKETS]],
                        hist_rows, frozenset(f"b{b}" for b in BUCKETS)),
        "deductions": Table("deductions", "Top deductions",
                            [("check", "Check"), ("items", "Items"), ("points", "Points lost")],
                            [{"check": n, "items": c, "points": round(p, 1)} for n, c, p in deductions],
                            frozenset({"items", "points"}),
                            note="the 10 most frequent among the latest 10 000 measured documents"),
        "risks": Table("risks", "Top risk flags", [("flag", "Risk flag"), ("files", "Files")],
                       [{"flag": f, "files": n} for f, n in risks.most_common(10)], frozenset({"files"}),
                       note="the 10 most frequent, from the risk scan and the latest 10 000 measured documents"),
        "failures": Table("failures", "Failures by error class",
                          [("reason", "Error class"), ("count", "Items"), ("example", "Example message")],
                          failures, frozenset({"count"})),
    }
    users = tables["users"].rows
    lagging = sorted((u for u in users if u["percent"] < 100), key=lambda u: (u["percent"], -u["total"], u["user"]))
    tables["lagging"] = Table("lagging", "Users furthest behind", [
        ("user", "User"), ("percent", "% done"), ("done", "Done"), ("needs_person", "Needs a person"),
        ("failed", "Failed"), ("waiting", "Waiting"), ("pending", "Pending"), ("total", "Total"),
        ("why_waiting", "Why they wait")],
        [{**u, "why_waiting": waiting.get(u["user"], "")} for u in lagging[:10]],
        frozenset({"percent", "done", "needs_person", "failed", "waiting", "pending", "total"}),
        note="the 10 users with the smallest share done; every user is in the table of progress by user")
    tables["attention"] = Table("attention_by_reason", "Needs a person, by reason",
                                [("why", "Why a person is needed"), ("items", "Items")],
                                [{"why": w, "items": why_open[w]} for w in ATTENTION if why_open[w] > 0],
                                frozenset({"items"}))
    tables["waiting"] = Table("waiting", "Users who wait", [("user", "User"), ("items", "Items"), ("why", "Why")],
                              [{"user": u, "items": cats_by_user[u]["waiting"], "why": why}
                               for u, why in sorted(waiting.items())
                               if u in cats_by_user and cats_by_user[u]["waiting"]],
                              frozenset({"items"}))
    rf = _run_facts(ledger, [name])[name]
    rate = rf.rate
    not_done = sum(totals.values()) - cats["done"]
    trend_rows, later = [], 0
    for point in reversed(rf.runs):
        trend_rows.append({**point, "not_done": not_done + later})
        later += point["processed"]
    trend_rows.reverse()
    tables["trend"] = Table("trend", "Runs over time", [
        ("run", "Run"), ("flow", "Flow"), ("finished", "Finished"), ("processed", "Processed"), ("failed", "failed"),
        ("per_hour", "Items per hour"), ("not_done", "Not done afterwards")], trend_rows,
        frozenset({"run", "processed", "failed", "per_hour", "not_done"}),
        note="not done afterwards: counted back from today's figures with what each later run processed")
    hist_total: Counter[int] = Counter()
    for counts in histogram.values():
        hist_total.update(counts)
    total_items = sum(totals.values())
    return {"department": name, "tables": tables, "totals": dict(totals), "total": total_items,
            "categories": {c: cats.get(c, 0) for c in CATEGORIES},
            "percent_done": round(100 * cats["done"] / total_items, 1) if total_items else 0.0,
            "waiting_users": waiting, "attention": dict(why_open),
            "rate": rate, "eta_seconds": round(cats["pending"] / rate) if rate and cats["pending"] else None,
            "histogram": [(b, hist_total.get(b, 0)) for b in BUCKETS],
            "owners": sorted(by_user), "kinds": sorted(by_kind), "reasons": [f["reason"] for f in failures],
            "failed_batches": failed_batches, "annotations": annotations,
            "failed": totals.get(State.FAILED.value, 0)}


def _item_query(name: str, filters: dict):
    q = (select(Item.id, Item.owner, Item.kind, Item.location, Item.state, Item.reason, Item.conversion,
                Item.fidelity_score, Item.fidelity_verdict, Item.size, Item.batch_id, Item.message,
                Annotation.verdict.label("annotation"), Annotation.comment)
         .outerjoin(Annotation, Annotation.item_id == Item.id).where(Item.department == name))
    for key, column in ITEM_FILTERS.items():
        value = filters.get(key)
        if value not in (None, ""):
            q = q.where(column == (int(value) if key == "batch" else value))
    if filters.get("annotation"):
        q = q.where(Annotation.verdict == filters["annotation"])
    if filters.get("q"):
        q = q.where(Item.location.contains(filters["q"], autoescape=True))
    return q


ITEM_COLUMNS = [("id", "Item"), ("owner", "User"), ("kind", "Kind"), ("location", "Path"), ("state", "State"),
                ("reason", "Error class"), ("conversion", "Conversion"), ("fidelity_score", "Score"),
                ("fidelity_verdict", "Verdict"), ("size", "Bytes"), ("batch_id", "Batch"),
                ("annotation", "Annotation"), ("comment", "Comment"), ("message", "Message")]


#: Columns the item table sorts by (the item id breaks ties, so that pages never overlap).
ITEM_SORTS = {"id": Item.id, "owner": Item.owner, "kind": Item.kind, "location": Item.location, "state": Item.state,
              "reason": Item.reason, "conversion": Item.conversion, "fidelity_score": Item.fidelity_score,
              "fidelity_verdict": Item.fidelity_verdict, "size": Item.size, "batch_id": Item.batch_id}


def item_page(ledger: Ledger, name: str, filters: dict, page: int = 1, per_page: int = 50,
              total: int | None = None, sort: str = "id", descending: bool = False) -> dict:
    """One page of the department's items (filtered, in id order) and how many match.

    `total`: the department's item count when the caller already has it (used only without filters).
    """
    page = max(1, page)
    q = _item_query(name, filters)
    with ledger.session() as s:
        if any(filters.get(k) for k in (*ITEM_FILTERS, "annotation", "q")):
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        elif total is None:
            total = s.scalar(select(func.count(Item.id)).where(Item.department == name)) or 0
        column = ITEM_SORTS.get(sort, Item.id)
        order = [column.desc(), Item.id.desc()] if descending else [column, Item.id]
        rows = [dict(r._mapping) for r in s.execute(q.order_by(*order).limit(per_page).offset((page - 1) * per_page))]
    pages = max(1, -(-total // per_page))
    return {"table": Table("items", "Items", ITEM_COLUMNS, rows,
                           frozenset({"id", "fidelity_score", "size", "batch_id"})),
            "total": total, "page": min(page, pages), "pages": pages, "per_page": per_page}


def iter_items(ledger: Ledger, name: str, filters: dict, chunk: int = 5000) -> Iterator[list[dict]]:
    """Every matching item in chunks (for a full export), by keyset on the id."""
    return _by_id(ledger, _item_query(name, filters), chunk)


def failed_count(ledger: Ledger, name: str, *, error_class: str | None = None, user: str | None = None,
                 batch: int | None = None) -> int:
    """How many failed items a rerun with these filters would retry (the same filters as select_failed)."""
    q = select(func.count(Item.id)).where(Item.department == name, Item.state == State.FAILED.value)
    if error_class:
        q = q.where(Item.reason == error_class)
    if user:
        q = q.where(Item.owner == user)
    if batch is not None:
        q = q.where(Item.batch_id == batch)
    with ledger.session() as s:
        return s.scalar(q) or 0


# ------------------------------------------------------------------------------ document page
def document(ledger: Ledger, name: str, item_id: int) -> dict | None:
    """One item with its fidelity record and annotation, or None when it is not this department's."""
    with ledger.session() as s:
        item = s.get(Item, item_id)
        if item is None or item.department != name:
            return None
        note = s.scalars(select(Annotation).where(Annotation.item_id == item_id)).first()
        record = {c.key: getattr(item, c.key) for c in Item.__table__.columns}
        return {"item": record, "fidelity": item.fidelity or {},
                "annotation": {"verdict": note.verdict, "comment": note.comment, "author": note.author,
                               "created": note.created} if note else None,
                "kept": _where_kept(item)}


def _where_kept(item: Item) -> list[tuple[str, str]]:
    """Where the original Office file is (label, place): at the target beside its ODF copy, in the archive."""
    places = []
    if item.original_ref:
        places.append(("beside the converted copy at the target", item.original_ref))
    archive = (item.meta or {}).get("archive_ref")
    if archive:
        places.append(("in the archive", str(archive)))
    if item.target_ref and item.kind == "file" and item.conversion != "converted":
        places.append(("moved unconverted to the target", item.target_ref))
    return places


def thumbnails(report_dir: Path, record: dict) -> dict[str, str]:
    """Names (relative to the report folder) of the item's page thumbnails that exist.

    The visual fidelity tier writes `<key>-source.png` and `<key>-output.png` into `thumbs/`; its
    record names them, and a record without names is looked up by the sha256 key the batch tools use.
    """
    return _pictures(report_dir, record, "thumbnails", "")


def views(report_dir: Path, record: dict) -> dict[str, str]:
    """Names of the item's large first-page pictures (`<key>-source-view.png`, `-output-view.png`),
    when both exist: records made before the visual tier kept them have none."""
    found = _pictures(report_dir, record, "views", "-view")
    return found if len(found) == 2 else {}


def _pictures(report_dir: Path, record: dict, field: str, suffix: str) -> dict[str, str]:
    names = ((record.get("fidelity") or {}).get("visual") or {}).get(field) or {}
    sha = (record.get("item") or {}).get("sha256")
    found = {}
    for side in ("source", "output"):
        candidates = [names.get(side)] + ([f"{sha[:16]}-{side}{suffix}.png"] if sha else [])
        for cand in candidates:
            if cand and safe_report_file(report_dir, f"thumbs/{cand}") is not None:
                found[side] = f"thumbs/{cand}"
                break
    return found


def page_pictures(report_dir: Path, record: dict) -> dict[str, dict]:
    """The item's page pictures for the side-by-side viewer: {side: {"file", "width", "height",
    "large"}} (sizes in pixels, read from the PNG header, so that the viewer can size them per
    zoom). The large pictures when both sides have one (`large` True), else the thumbnails."""
    from PIL import Image
    for large, chosen in ((True, views(report_dir, record)), (False, thumbnails(report_dir, record))):
        found = {}
        for side, relative in chosen.items():
            try:
                with Image.open(report_dir / relative) as image:
                    width, height = image.size
            except (OSError, ValueError):
                continue
            found[side] = {"file": relative, "width": width, "height": height, "large": large}
        if found and (not large or len(found) == 2):
            return found
    return {}


def document_neighbours(ledger: Ledger, name: str, item_id: int) -> dict:
    """The previous and next document of the department with a fidelity record (the documents a
    person compares page by page), by id."""
    q = select(Item.id).where(Item.department == name, Item.fidelity_score.isnot(None))
    with ledger.session() as s:
        before = s.scalar(q.where(Item.id < item_id).order_by(Item.id.desc()).limit(1))
        after = s.scalar(q.where(Item.id > item_id).order_by(Item.id).limit(1))
    return {"previous": before, "next": after}


def safe_report_file(report_dir: Path, relative: str) -> Path | None:
    """The file `relative` inside `report_dir`, or None if it is not a file there (no `..`, no links out)."""
    try:
        root = report_dir.resolve(strict=True)
        path = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def annotate(ledger: Ledger, name: str, item_id: int, verdict: str, comment: str, author: str) -> bool:
    """Mark an item accepted as it is or as needing manual work (one judgement per item; the last wins)."""
    if verdict not in ANNOTATION_VERDICTS:
        raise ValueError(f"unknown annotation {verdict!r}")
    with ledger.session() as s:
        item = s.get(Item, item_id)
        if item is None or item.department != name:
            return False
        note = s.scalars(select(Annotation).where(Annotation.item_id == item_id)).first()
        if note is None:
            s.add(Annotation(item_id=item_id, department=name, verdict=verdict, comment=comment[:4000] or None,
                             author=author))
        else:
            note.verdict, note.comment, note.author, note.created = verdict, comment[:4000] or None, author, now()
    return True


# ------------------------------------------------------------------------------ runs and reruns
def _run_rows(s, runs: list[Run], live_counts: bool = True) -> list[dict]:
    """Runs as rows. A finished run's counts are those its summary recorded (`this_run`); a running
    run's (and, with `live_counts`, every run's) are summed from its finished batches (one row per
    chunk: Ledger.batch_counts)."""
    out = []
    for run in runs:
        summary = run.summary or {}
        this_run = summary.get("this_run")
        if live_counts or run.status == "running" or not isinstance(this_run, dict):
            by_state = dict(Ledger.batch_counts(s, run.id))
        else:
            by_state = {k: v for k, v in this_run.items() if isinstance(v, int)}
        todo = summary.get("todo")
        finished = sum(by_state.get(x, 0) for x in (State.VERIFIED.value, State.FAILED.value, State.SKIPPED.value))
        report = summary.get("report")
        out.append({"id": run.id, "flow": run.flow, "status": run.status, "started": run.started,
                    "finished": run.finished, "todo": todo,
                    "processed": min(finished, todo) if todo is not None else finished,
                    "verified": by_state.get(State.VERIFIED.value, 0), "failed": by_state.get(State.FAILED.value, 0),
                    "error": summary.get("error"), "prefect_flow_run": run.prefect_flow_run,
                    "report": Path(report).name if report else None,
                    "waiting": sorted((summary.get("stopped_users") or {}).items())})
    return out


def rerun_runs(ledger: Ledger, name: str, since: datetime | None = None, limit: int = 10) -> list[dict]:
    """The department's latest rerun runs with their progress (processed of todo, by state)."""
    with ledger.session() as s:
        q = select(Run).where(Run.department == name, Run.flow == "rerun")
        if since is not None:
            q = q.where(Run.started >= since)
        return _run_rows(s, list(s.scalars(q.order_by(Run.id.desc()).limit(limit))))


def run_history(ledger: Ledger, name: str, limit: int = 20) -> list[dict]:
    """The department's latest runs of every flow (migrate, rerun, assess), newest first."""
    with ledger.session() as s:
        return _run_rows(s, list(s.scalars(select(Run).where(Run.department == name)
                                           .order_by(Run.id.desc()).limit(limit))), live_counts=False)


def run_of_process(ledger: Ledger, name: str, host: str, pid: int, since: datetime) -> dict | None:
    """The run that the process `pid` on `host` opened for the department since `since` (the
    ledger notes both when a run opens), with its progress; None while it has opened none."""
    with ledger.session() as s:
        runs = [r for r in s.scalars(select(Run).where(Run.department == name, Run.started >= since)
                                     .order_by(Run.id.desc()).limit(50))
                if (r.summary or {}).get("pid") == pid and (r.summary or {}).get("host") == host]
        return _run_rows(s, runs[:1])[0] if runs else None


def live_run(ledger: Ledger, name: str) -> dict | None:
    """The department's run that is going on now, if any: {"id", "flow", "started"}.

    Read-only, by the rules the ledger uses when a run opens (Ledger.close_abandoned_runs): a run
    still marked running is alive while its process on this host exists, or, on another host,
    while it beat within STALE_AFTER seconds.
    """
    host = socket.gethostname()
    stale = now() - timedelta(seconds=STALE_AFTER)
    with ledger.session() as s:
        for run in s.scalars(select(Run).where(Run.department == name, Run.status == "running")
                             .order_by(Run.id.desc())):
            facts = run.summary or {}
            if facts.get("host") == host and isinstance(facts.get("pid"), int):
                alive = process_alive(facts["pid"])
            else:
                alive = _aware(run.heartbeat or run.started) > stale
            if alive:
                return {"id": run.id, "flow": run.flow, "started": run.started}
    return None


# ------------------------------------------------------------------------------ assessment (risk scan)
SCAN_COLUMNS = [("scan", "Scan"), ("path", "Path"), ("format", "Format"), ("size", "Bytes"),
                ("category", "Category"), ("flags", "Risk flags"), ("outcome", "Outcome"), ("error", "Error")]
_scan_cache: dict[tuple, pd.DataFrame] = {}


def scan_files(report_dir: Path) -> list[Path]:
    """The scan.jsonl files of the risk scans under the report folder."""
    scan = report_dir / "scan"
    return sorted(scan.rglob("scan.jsonl")) if scan.is_dir() else []


def scan_frame(report_dir: Path) -> pd.DataFrame:
    """Every scan.jsonl under the report folder's scan/ as one table (re-read only when a file changed)."""
    files = scan_files(report_dir)
    key = (str(report_dir), tuple((str(f), f.stat().st_mtime_ns) for f in files))
    if key not in _scan_cache:
        frames = []
        for f in files:
            rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
            frame = pd.DataFrame(rows, columns=["path", "format", "size", "category", "flags", "outcome", "error"])
            frame.insert(0, "scan", f.parent.relative_to(report_dir / "scan").as_posix())
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[k for k, _ in SCAN_COLUMNS])
        table["flags"] = table["flags"].map(lambda v: ", ".join(v) if isinstance(v, list) else "")
        table["size"] = pd.to_numeric(table["size"], errors="coerce").fillna(0).astype("int64")
        for col in ("scan", "path", "format", "category", "outcome", "error"):
            table[col] = table[col].astype(object).where(table[col].notna(), "").astype(str)
        _scan_cache.clear()
        _scan_cache[key] = table
    return _scan_cache[key]


def scan_table(report_dir: Path, *, sort: str = "category", descending: bool = False, category: str = "",
               flag: str = "", fmt: str = "", q: str = "", page: int | None = 1, per_page: int = 100) -> dict:
    """The risk scan, filtered and sorted as asked; one page of it (or all rows with page=None)."""
    table = scan_frame(report_dir)
    facets = {"category": sorted(set(table["category"]) - {""}), "format": sorted(set(table["format"]) - {""}),
              "flag": sorted({f for v in table["flags"] for f in v.split(", ") if f})}
    if category:
        table = table[table["category"] == category]
    if fmt:
        table = table[table["format"] == fmt]
    if flag:
        table = table[table["flags"].map(lambda v: flag in v.split(", "))]
    if q:
        table = table[table["path"].str.contains(q, case=False, regex=False)]
    if sort in dict(SCAN_COLUMNS):
        table = table.sort_values([sort, "path"] if sort != "path" else ["path"], ascending=not descending,
                                  kind="stable")
    total = len(table)
    pages = max(1, -(-total // per_page))
    if page is not None:
        page = min(max(1, page), pages)
        table = table.iloc[(page - 1) * per_page: page * per_page]
    return {"table": Table("scan", "Risk scan", SCAN_COLUMNS, table.to_dict("records"), frozenset({"size"})),
            "total": total, "page": page or 1, "pages": pages, "facets": facets}


# ------------------------------------------------------------------------------ identity map
#: The identity map's columns: the keys of flows.identity.UserCheck.row, as `umstieg users` prints them.
IDENTITY_COLUMNS = [("source", "User at the source"), ("target", "User at the target"), ("email", "E-mail address"),
                    ("display_name", "Display name"), ("source_account", "Source account"),
                    ("target_account", "Target account"), ("attributes", "E-mail address and name agree"),
                    ("verdict", "Verdict")]


def assessed_identities(report_dir: Path) -> tuple[datetime, list[dict]] | None:
    """(when, rows) of the identity map the last assessment checked (assessment.json), if it did."""
    path = report_dir / "assessment.json"
    assessment = read_assessment(report_dir)
    rows = (assessment or {}).get("identities")
    if not isinstance(rows, list):
        return None
    try:
        when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        return None
    return when, [r for r in rows if isinstance(r, dict)]


def identity_table(rows: list[dict], limit: int | None = None) -> Table:
    """The identity map with the users who would wait first (then by source login)."""
    ordered = sorted(rows, key=lambda r: (str(r.get("verdict")) == "go", str(r.get("source"))))
    return Table("identities", "Identity map", IDENTITY_COLUMNS, ordered[:limit] if limit else ordered)


def read_assessment(report_dir: Path) -> dict | None:
    """The department's assessment.json (written by `umstieg assess`), if there is one."""
    path = report_dir / "assessment.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
