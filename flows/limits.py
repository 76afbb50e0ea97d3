"""When a department may run, and how many chunks may touch one host at once.

Both are applied by the flow itself, before a chunk is handed to a task runner, so they hold the
same way on one machine (threads, no Prefect server) and on a Dask cluster: a chunk that would
put one more reader on a source host already at `limits.source`, or one more writer on a target
host at `limits.target`, waits for a running chunk of that host to end; once the department's
allowed window closes, no chunk starts and the items not reached stay where they are for the
next run.

Prefect's tag concurrency limits would need a Prefect server and a limit created per host by
hand, and they hold a task only once it has been handed over; the gate below needs neither.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time as dtime
from zoneinfo import ZoneInfo

from core.config import Model
from core.department import Department, Schedule
from core.errors import FatalError

__all__ = ["host_of", "Chunk", "ChunkGate", "Window", "OutsideWindow"]


def host_of(config: Model) -> str:
    """The host a configured source or target talks to, as its model says (core.config.Model.host_name:
    `local` for folders and export files, graph.microsoft.com for every Graph source)."""
    return config.host_name()


@dataclass(frozen=True)
class Chunk:
    """A chunk of one user's items from one source, and the hosts it reads from and writes to."""

    owner: str
    number: int
    item_ids: tuple[int, ...]
    source_host: str
    target_hosts: frozenset[str] = field(default_factory=frozenset)


class ChunkGate:
    """Counts running chunks per host; says which waiting chunk may start without going over a limit."""

    def __init__(self, source_limit: int, target_limit: int) -> None:
        self.source_limit, self.target_limit = source_limit, target_limit
        self.reading: Counter = Counter()
        self.writing: Counter = Counter()
        self.most_reading: Counter = Counter()    # the highest count seen per host (for the run summary)
        self.most_writing: Counter = Counter()

    def fits(self, chunk: Chunk) -> bool:
        return (self.reading[chunk.source_host] < self.source_limit
                and all(self.writing[h] < self.target_limit for h in chunk.target_hosts))

    def take(self, chunk: Chunk) -> None:
        self.reading[chunk.source_host] += 1
        self.most_reading[chunk.source_host] = max(self.most_reading[chunk.source_host],
                                                   self.reading[chunk.source_host])
        for h in chunk.target_hosts:
            self.writing[h] += 1
            self.most_writing[h] = max(self.most_writing[h], self.writing[h])

    def release(self, chunk: Chunk) -> None:
        self.reading[chunk.source_host] -= 1
        for h in chunk.target_hosts:
            self.writing[h] -= 1

    def next_fitting(self, waiting: list[Chunk]) -> Chunk | None:
        """The first waiting chunk that fits (order kept otherwise: users' chunks in turn)."""
        return next((c for c in waiting if self.fits(c)), None)


def clock(zone: ZoneInfo) -> datetime:
    """Now, in the department's zone (one place for tests to set the time)."""
    return datetime.now(zone)


class OutsideWindow(FatalError):
    """The department may not run now: its schedule allows runs only inside a daily window."""


@dataclass(frozen=True)
class Window:
    """The daily window a department may run in, in its time zone; `end` before `start` spans midnight.

    With no window configured every moment is inside it.
    """

    start: dtime | None
    end: dtime | None
    zone: ZoneInfo

    @classmethod
    def of(cls, schedule: Schedule) -> "Window":
        return cls(schedule.window_start, schedule.window_end, ZoneInfo(schedule.timezone))

    @property
    def configured(self) -> bool:
        return self.start is not None or self.end is not None

    def is_open(self, at: datetime | None = None) -> bool:
        if not self.configured:
            return True
        t = (at or clock(self.zone)).astimezone(self.zone).time().replace(tzinfo=None)
        start, end = self.start or dtime(0, 0), self.end
        if end is None:
            return t >= start
        if start <= end:
            return start <= t < end
        return t >= start or t < end               # e.g. 19:00-06:00: overnight

    def describe(self) -> str:
        def fmt(t):
            return t.strftime("%H:%M") if t is not None else "…"
        return f"{fmt(self.start)}–{fmt(self.end)} {self.zone.key}"

    def refuse_if_closed(self, dept: Department, at: datetime | None = None) -> None:
        if not self.is_open(at):
            now = (at or clock(self.zone)).astimezone(self.zone)
            raise OutsideWindow(
                f"{dept.name} may run only between {self.describe()} (schedule.window_start/window_end); "
                f"it is {now:%H:%M} there. Nothing was moved. Run it inside the window, or pass "
                f"--ignore-window to run now anyway.")
