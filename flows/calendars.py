"""The pre-run check of the calendars a run would make, against the calendar target's limits.

A server limits how many calendars an account may have and how many it may make per hour
(Nextcloud: 30 and 10 by default). Past them, the items of the calendars beyond fail as
`calendar_limit`; told before anything moves, the team can raise the server's limits first.
"""

from __future__ import annotations

from core.department import Department
from core.plugins import ChecksCalendars, ListsCalendars
from flows.systems import sink_for, source_of

__all__ = ["calendar_problems"]


def calendar_problems(dept: Department, users: list | None = None) -> list[str]:
    """Problems with the calendars each user's sources have (sources that can tell, by offering
    `calendars(owner, folder)`) at the department's calendar target (which can judge them, by
    offering `check_calendars(planned)`); `users` (the department's by default) are those a run takes."""
    if dept.calendar_target is None:
        return []
    sink = sink_for(dept.calendar_target)
    if not isinstance(sink, ChecksCalendars):
        return []
    planned: dict[str, set[str]] = {}
    for cfg in dept.sources:
        source = source_of(dept, cfg.name)
        if not isinstance(source, ListsCalendars):
            continue
        for user in dept.users if users is None else users:
            try:
                planned.setdefault(user.target, set()).update(source.calendars(user.source, user.folder_in(cfg.name)))
            except OSError as exc:
                return [f"source {cfg.name}: cannot read the calendars of {user.source}: {exc}"]
    return [f"calendar_target: {p}" for p in sink.check_calendars(planned)]
