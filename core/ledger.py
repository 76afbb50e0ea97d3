"""The ledger: one row per item, one state per step, in one transaction per step.

Every step of an item (extract, convert, load, verify) records its effect and its new state in a
single commit, after the effect is durable: a crash at any point leaves each item in the last
state it really reached, so a rerun resumes it without losing or duplicating anything.

SQLite (a file) is the embedded default; PostgreSQL (by URL) is the ledger for teams and for
many machines. The schema is managed by alembic (core/migrations), from the first release on.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String,
                        Text, UniqueConstraint, create_engine, event, func, select, update)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from core.errors import RunInProgress
from core.messages import clip

log = logging.getLogger("umstieg.ledger")

__all__ = ["State", "Base", "Run", "Batch", "Item", "Ledger", "Window", "failure", "now", "process_alive", "HEARTBEAT",
           "STALE_AFTER", "NEEDS_A_PERSON"]

#: A running run writes its heartbeat this often (seconds) ...
HEARTBEAT = 60
#: ... and one silent for this long, on another host, was cut off (ten missed beats).
STALE_AFTER = 600

MIGRATIONS = Path(__file__).with_name("migrations")


def process_alive(pid: int) -> bool:
    """Whether a process of this host has that id (a reused id counts as alive: safe side)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class State(StrEnum):
    """Where an item is on its way; `failed` and `skipped` carry a typed reason."""

    DISCOVERED = "discovered"
    EXTRACTED = "extracted"
    CONVERTED = "converted"
    LOADED = "loaded"
    VERIFIED = "verified"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def done(self) -> bool:
        return self in (State.VERIFIED, State.SKIPPED)


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One execution of a flow (assess, migrate, rerun) for a department."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    department: Mapped[str] = mapped_column(String(200), index=True)
    flow: Mapped[str] = mapped_column(String(40))
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="running")  # running/completed/failed/interrupted/refused
    prefect_flow_run: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[dict | None] = mapped_column(JSON)
    heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))   # see Ledger.beat


class Batch(Base):
    """A chunk of items of one user processed by one Prefect task."""

    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    owner: Mapped[str] = mapped_column(String(300))
    number: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="running")
    worker: Mapped[str | None] = mapped_column(String(200))      # host/pid that processed it
    counts: Mapped[dict | None] = mapped_column(JSON)            # final state -> items, when it finished


class Item(Base):
    """Everything the ledger knows about one item."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("department", "source", "key", name="uq_item_identity"),
                      Index("ix_items_department_state", "department", "state"),
                      Index("ix_items_department_owner", "department", "owner"),
                      Index("ix_items_batch", "batch_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    department: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(2000))
    kind: Mapped[str] = mapped_column(String(20))
    owner: Mapped[str] = mapped_column(String(300))          # source login
    target_owner: Mapped[str] = mapped_column(String(300))   # target login
    location: Mapped[str] = mapped_column(String(2000))      # path / folder at the source
    target_stem: Mapped[str] = mapped_column(String(2000))   # path at the target, without the ODF extension
    target_path: Mapped[str | None] = mapped_column(String(2000))   # path at the target unconverted (None: location)
    renamed: Mapped[str | None] = mapped_column(String(40))   # why target_path/target_stem differ (sinks.twins)
    version: Mapped[str] = mapped_column(String(200))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20), default=State.DISCOVERED.value)
    reason: Mapped[str | None] = mapped_column(String(60))   # error class of failed / skipped
    message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    removed_at_source: Mapped[bool] = mapped_column(Boolean, default=False)
    change: Mapped[str | None] = mapped_column(String(20))   # the last change discovery found: new / changed / removed
    discovered: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, onupdate=now)
    seconds: Mapped[dict | None] = mapped_column(JSON)        # step -> seconds spent
    staged_path: Mapped[str | None] = mapped_column(Text)     # extracted bytes in the work dir
    converted_path: Mapped[str | None] = mapped_column(Text)
    conversion: Mapped[str | None] = mapped_column(String(20))   # the converter's outcome
    fidelity_score: Mapped[float | None] = mapped_column(Float)
    fidelity_verdict: Mapped[str | None] = mapped_column(String(20))
    fidelity: Mapped[dict | None] = mapped_column(JSON)          # the whole fidelity record
    target_ref: Mapped[str | None] = mapped_column(Text)        # where it is at the target
    target_digest: Mapped[str | None] = mapped_column(String(64))
    original_ref: Mapped[str | None] = mapped_column(Text)      # the kept Office original, if any
    meta: Mapped[dict | None] = mapped_column(JSON)             # ItemRef.meta (flags, dates, permissions)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))


#: Items the pipeline finished with but a person must look at, as a SQL predicate over `items`:
#: word for word the predicate of the partial indexes of migration 0008 (SQLite uses a partial index
#: only for a query that repeats it). The dashboard's queue and the run reports both add it.
NEEDS_A_PERSON = ("(conversion IN ('encrypted', 'unreadable') OR fidelity_verdict IN ('review', 'broken') "
                  "OR renamed IS NOT NULL OR reason IN ('conversion_too_large', 'skipped_link', 'skipped_fifo', "
                  "'skipped_socket', 'skipped_device', 'skipped_special'))")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")        # readers never block the writer
    # NORMAL, not FULL: in WAL mode a power cut may forget the last commits, but never corrupts
    # the file, and every step is idempotent, so a forgotten step is simply done again.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")      # several processes share the file
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Ledger:
    """Access to one ledger database; safe to use from many threads (one session per call)."""

    def __init__(self, url: str, password: str | None = None) -> None:
        from sqlalchemy.engine import make_url
        u = make_url(url)
        if password is not None:
            u = u.set(password=password)
        self.url = u
        if u.get_backend_name() == "sqlite" and u.database:
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(u, pool_pre_ping=True, future=True)
        if u.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:                      # never show a password
        return f"Ledger({self.url.render_as_string(hide_password=True)})"

    def migrate(self) -> None:
        """Bring the schema to the newest version (alembic upgrade head)."""
        from alembic import command
        from alembic.config import Config
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed at the end of the block (rolled back on error)."""
        with self._sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # ----------------------------------------------------------------- runs and batches
    def start_run(self, department: str, flow: str, prefect_flow_run: str | None = None) -> int:
        """Open a run, unless another run of the department is alive (RunInProgress).

        The new run is written first and the others are looked at afterwards, so that of two runs
        started at the same moment at least one sees the other: each refuses when it sees another
        live run (both may refuse; none goes on beside the other)."""
        with self.session() as s:
            run = Run(department=department, flow=flow, prefect_flow_run=prefect_flow_run, heartbeat=now(),
                      summary={"host": socket.gethostname(), "pid": os.getpid()})
            s.add(run)
            s.flush()
            run_id = run.id
        for abandoned in self.close_abandoned_runs(department):
            log.warning("%s: run %d had been cut off (its process is gone): marked interrupted", department, abandoned)
        with self.session() as s:
            other = s.scalars(select(Run).where(Run.department == department, Run.status == "running",
                                                Run.id != run_id).order_by(Run.id)).first()
            if other is not None:
                facts = other.summary or {}
                why = (f"{department}: run {other.id} ({other.flow}, started {other.started:%Y-%m-%d %H:%M} UTC on "
                       f"{facts.get('host', '?')}, pid {facts.get('pid', '?')}) is still running; two runs of one "
                       f"department at once would take the same items. Nothing was moved.")
                mine = s.get_one(Run, run_id)
                mine.status, mine.finished = "refused", now()
                mine.summary = {**(mine.summary or {}), "error": why}
        if other is not None:
            raise RunInProgress(why)
        return run_id

    def beat(self, run_id: int) -> None:
        """The run is alive (called every HEARTBEAT seconds by the process that runs it)."""
        with self.session() as s:
            s.execute(update(Run).where(Run.id == run_id, Run.status == "running").values(heartbeat=now()))

    def close_abandoned_runs(self, department: str) -> list[int]:
        """Mark `interrupted` the runs of `department` still `running` that nobody runs any more: on
        this host, their process is gone (killed, the machine restarted); on another host, they
        have not beaten for STALE_AFTER seconds. A run that never finished must not look busy for
        ever. Their items need nothing: each keeps the last state it reached, and the next run goes on."""
        host, closed = socket.gethostname(), []
        stale = now() - timedelta(seconds=STALE_AFTER)
        with self.session() as s:
            for run in s.scalars(select(Run).where(Run.department == department, Run.status == "running")):
                facts = run.summary or {}
                if facts.get("host") == host and isinstance(facts.get("pid"), int):
                    if process_alive(facts["pid"]):
                        continue
                    why = (f"the process ({host}, pid {facts['pid']}) ended without closing this run "
                           "(killed, or the machine stopped)")
                else:
                    last = _aware(run.heartbeat or run.started)
                    if last is None or last > stale:
                        continue
                    why = (f"its process on {facts.get('host', 'another host')} stopped saying it is alive "
                           f"at {last:%Y-%m-%d %H:%M} UTC (killed, or the machine stopped)")
                run.status, run.finished = "interrupted", now()
                run.summary = {**facts, "error": why}
                closed.append(run.id)
        return closed

    def note_run(self, run_id: int, **facts) -> None:
        """Add facts (e.g. how many items the run will process) to a running run's summary."""
        with self.session() as s:
            run = s.get_one(Run, run_id)
            run.summary = {**(run.summary or {}), **facts}

    def stop_user(self, run_id: int, owner: str, reason: str) -> None:
        """Record that `owner` (source login) cannot go on in this run, and why (first reason kept)."""
        with self.session() as s:
            run = s.scalars(select(Run).where(Run.id == run_id).with_for_update()).one()
            stopped = dict((run.summary or {}).get("stopped_users") or {})
            stopped.setdefault(owner, reason)
            run.summary = {**(run.summary or {}), "stopped_users": stopped}

    def stopped_users(self, run_id: int) -> dict[str, str]:
        with self.session() as s:
            run = s.get_one(Run, run_id)
            return dict((run.summary or {}).get("stopped_users") or {})

    def finish_run(self, run_id: int, status: str, summary: dict | None = None) -> None:
        """Close a run; `summary` is added to what the run already noted."""
        with self.session() as s:
            run = s.get_one(Run, run_id)
            run.finished, run.status = now(), status
            run.summary = {**(run.summary or {}), **(summary or {})}

    def start_batch(self, run_id: int, owner: str, number: int, size: int, worker: str | None) -> int:
        with self.session() as s:
            batch = Batch(run_id=run_id, owner=owner, number=number, size=size, worker=worker)
            s.add(batch)
            s.flush()
            return batch.id

    def finish_batch(self, batch_id: int, status: str, counts: dict[str, int] | None = None) -> None:
        """Close a batch with what became of its items (state -> how many): a run's progress is
        summed from these (`run_progress`), never counted from its items."""
        with self.session() as s:
            s.execute(update(Batch).where(Batch.id == batch_id).values(finished=now(), status=status,
                                                                       counts=dict(counts or {})))

    def run_progress(self, run_id: int) -> Counter:
        """What a run has done so far: state -> items. Reads one row per chunk and the items of
        the chunks in flight, never every item of the run."""
        with self.session() as s:
            return self.batch_counts(s, run_id)

    @staticmethod
    def batch_counts(s, run_id: int) -> Counter:
        """`run_progress` in a session of the caller's: the counts the finished batches kept, and
        the items of the batches still running (few: the chunks in flight, read by their index).
        Batches closed before their counts were kept (ledgers from before migration 0009) are
        counted from their items."""
        total: Counter = Counter()
        running = []
        older = False
        for batch_id, counts, finished in s.execute(select(Batch.id, Batch.counts, Batch.finished)
                                                    .where(Batch.run_id == run_id)):
            if finished is None:
                running.append(batch_id)
            elif counts is None:
                older = True
            else:
                total.update(counts)
        if older:
            return Counter(dict(s.execute(
                select(Item.state, func.count(Item.id)).join(Batch, Item.batch_id == Batch.id)
                .where(Batch.run_id == run_id).group_by(Item.state)).all()))
        if running:
            total.update(dict(s.execute(select(Item.state, func.count(Item.id))
                                        .where(Item.batch_id.in_(running)).group_by(Item.state)).all()))
        return total

    # ----------------------------------------------------------------- items
    def items(self, ids: Sequence[int]) -> list[Item]:
        with self.session() as s:
            return list(s.scalars(select(Item).where(Item.id.in_(ids)).order_by(Item.id)))

    def item(self, item_id: int) -> Item | None:
        with self.session() as s:
            return s.get(Item, item_id)

    def record(self, item_id: int, **values) -> None:
        """Record one step's outcome for one item, atomically."""
        self.record_many([(item_id, values)])

    def record_many(self, changes: Sequence[tuple[int, dict]]) -> None:
        """Record the outcomes of many items in one transaction: all or none. For steps whose
        effect is found again when its record is lost (an appended message the next run
        recognises, a read-back): one commit per hundred items instead of one per item."""
        if not changes:
            return
        with self.session() as s:
            # one UPDATE statement per shape of change, executed for many rows (SQLAlchemy's bulk
            # UPDATE by primary key): loading and flushing ORM objects cost a third of the bulk
            # mail path's time, measured
            ids = [c[0] for c in changes]
            seconds: dict[int, dict | None] = {
                item_id: spent for item_id, spent in s.execute(select(Item.id, Item.seconds).where(Item.id.in_(ids)))}
            shapes: dict[tuple, list[dict]] = {}
            for item_id, values in changes:
                if item_id not in seconds:
                    raise KeyError(f"no item {item_id} in the ledger")
                row: dict[str, Any] = {"id": item_id}
                for name, value in values.items():
                    if name == "step_seconds":
                        row["seconds"] = {**(seconds[item_id] or {}), **value}
                    else:
                        row[name] = value.value if isinstance(value, StrEnum) else value
                row["updated"] = now()
                shapes.setdefault(tuple(sorted(row)), []).append(row)
            for rows in shapes.values():
                s.execute(update(Item), rows)

    def fail(self, item_id: int, reason: str, message: str, step: str, **values) -> None:
        """Mark an item failed with a typed reason; the batch goes on."""
        self.record(item_id, state=State.FAILED, **failure(reason, message, step), **values)

    def advance(self, item: Item, state: State, **facts) -> Item:
        """Record one step of `item` (its new state and the facts the step found), in one commit,
        and return the item as recorded: the in-memory item takes the same values, so that the
        next step reads what the ledger holds instead of a hand-kept copy of it. `step_seconds`
        ({step: seconds}) is added to the item's `seconds`."""
        self.record(item.id, state=state, **facts)
        return _mirror(item, state, facts)

    def advance_many(self, steps: Sequence[tuple[Item, State, dict]]) -> list[Item]:
        """`advance` for many items in one transaction (all or none): see `Window`."""
        self.record_many([(item.id, {"state": state, **facts}) for item, state, facts in steps])
        return [_mirror(item, state, facts) for item, state, facts in steps]

    def window(self, every: int = 100) -> "Window":
        """A commit window: steps of many items recorded together, `every` per commit."""
        return Window(self, every)

    def counts(self, department: str, by: Iterable[str] = ("state",)) -> list[tuple]:
        """Item counts grouped by the given columns (aggregated in SQL)."""
        cols = [getattr(Item, c) for c in by]
        with self.session() as s:
            q = (select(*cols, func.count(Item.id), func.coalesce(func.sum(Item.size), 0))
                 .where(Item.department == department).group_by(*cols).order_by(*cols))
            return [tuple(r) for r in s.execute(q)]


def failure(reason: str, message: str, step: str) -> dict:
    """The facts of a failed step: its typed reason and a message that names the step."""
    text = f"{step}: {message}"
    return {"reason": reason, "message": text if len(text) <= 4000 else clip(text, 4000)}


def _mirror(item: Item, state: State, facts: dict) -> Item:
    """Give the in-memory `item` the values just recorded for it (Ledger.record's rules)."""
    item.state = state.value
    for name, value in facts.items():
        if name == "step_seconds":
            item.seconds = {**(item.seconds or {}), **value}
        else:
            setattr(item, name, value.value if isinstance(value, StrEnum) else value)
    return item


class Window:
    """Steps of many items, recorded `every` per commit instead of one commit each.

    Only for steps whose effect is found again when their record is lost: an item whose record
    is still in the window when the process dies stays in the last state the ledger holds, and
    the next run does its steps again, finding at the target what they had already put there
    (`find` by digest) instead of putting it twice. Use it as a context manager: what is still
    in the window at the end of the block is committed, also when the block fails (a failure of
    the ledger itself then leaves the first error to tell)."""

    def __init__(self, ledger: Ledger, every: int) -> None:
        self.ledger, self.every = ledger, every
        self.pending: list[tuple[Item, State, dict]] = []

    def advance(self, item: Item, state: State, **facts) -> Item:
        """Queue one step of `item`; the in-memory item takes its values at once."""
        self.pending.append((item, state, facts))
        _mirror(item, state, facts)
        if len(self.pending) >= self.every:
            self.commit()
        return item

    def fail(self, item: Item, reason: str, message: str, step: str, **values) -> Item:
        """Queue the failure of `item` at `step` (see Ledger.fail)."""
        return self.advance(item, State.FAILED, **failure(reason, message, step), **values)

    def commit(self) -> None:
        self.ledger.record_many([(item.id, {"state": state, **facts}) for item, state, facts in self.pending])
        self.pending = []

    def __enter__(self) -> "Window":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        try:
            self.commit()
        except Exception:  # noqa: BLE001 - the first failure is the one to report
            log.warning("the last %d step(s) of a commit window could not be recorded; the next run "
                        "does them again", len(self.pending))


class Annotation(Base):
    """A person's judgement of one item: accepted as it is, or needs manual work, with a comment."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("item_id", name="uq_annotation_item"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    department: Mapped[str] = mapped_column(String(200), index=True)
    verdict: Mapped[str] = mapped_column(String(30))             # accepted / manual_work
    comment: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))             # the dashboard login that said so
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, onupdate=now)
