"""What a run shows in Prefect: progress artifacts while chunks run (the department's and one per
user), then the run's tables, its Markdown report and links to the report file and the dashboard.

Artifacts are the operator's window, not the record: the ledger and the report file are. So a
failure to publish one is logged and never fails a run whose items are already recorded.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar, cast
from uuid import UUID
from urllib.parse import quote

from core.department import Department
from core.messages import clip
from reports.i18n import names

__all__ = ["Progress", "publish", "publish_markdown", "artifact_key", "slug",
           "MAX_USER_PROGRESS"]

log = logging.getLogger(__name__)

#: Users beyond this many get no progress artifact of their own (the department's one still
#: counts their items): hundreds of live artifacts would cost more API calls than they help.
MAX_USER_PROGRESS = 200


def slug(text: str) -> str:
    """`text` as Prefect accepts it in an artifact key: lowercase letters, digits and dashes.

    Department names may hold `_` and users' logins `.` or `@`; both would make Prefect refuse
    the key. Everything else becomes a dash, runs of dashes collapse ("Bürger_Amt 2" →
    "b-rger-amt-2"), so two names differing only in punctuation share a key.
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def artifact_key(dept_name: str, *parts: str) -> str:
    """The key of one of a department's artifacts, e.g. `buergeramt-progress-anna-schmidt`."""
    return "-".join(slug(p) for p in (dept_name, *parts))


T = TypeVar("T")


def _quietly(what: str, create: Callable[[], T]) -> T | None:
    try:
        return create()
    except Exception as exc:  # noqa: BLE001 - see the module's docstring
        log.warning("Prefect artifact %s not published: %s: %s", what, type(exc).__name__, exc)
        return None


class Progress:
    """The share of the run's items whose chunk has ended: one progress artifact for the
    department (100 % at once when there is nothing to do) and one per user."""

    def __init__(self, dept: Department, todo: dict[str, Sequence[int]]) -> None:
        from prefect.artifacts import create_progress_artifact
        self.totals = {owner: len(ids) for owner, ids in todo.items()}
        self.total = sum(self.totals.values())
        self.done: Counter = Counter()
        self._changed: set[str] = set()
        # (cast: Prefect types its functions for sync and async callers at once; called from sync
        # code, as here, create_progress_artifact returns the UUID)
        self._ids: dict[str, UUID | None] = {}
        self._id = cast(UUID | None, _quietly("progress", partial(
            create_progress_artifact,
            progress=self._percent(0, self.total), key=artifact_key(dept.name, "progress"),
            description=f"{dept.name}: items processed ({self.total} to do)")))
        for owner in sorted(self.totals)[:MAX_USER_PROGRESS]:
            self._ids[owner] = cast(UUID | None, _quietly(f"progress of {owner}", partial(
                create_progress_artifact,
                progress=0.0, key=artifact_key(dept.name, "progress", owner),
                description=f"{dept.name}: items of {owner} processed ({self.totals[owner]} to do)")))

    @staticmethod
    def _percent(done: int, total: int) -> float:
        return 100.0 if not total else min(100.0, 100.0 * done / total)

    def advance(self, owner: str, n: int) -> None:
        """`n` more items of `owner` have ended their chunk (shown at the next `show`)."""
        self.done[owner] += n
        self._changed.add(owner)

    def show(self) -> None:
        """Bring the artifacts that changed since the last call up to date."""
        from prefect.artifacts import update_progress_artifact
        if not self._changed:
            return
        changed, self._changed = self._changed, set()
        if self._id is not None:
            _quietly("progress", partial(
                update_progress_artifact, self._id, progress=self._percent(sum(self.done.values()), self.total)))
        for owner in sorted(changed):
            artifact = self._ids.get(owner)
            if artifact is not None:
                _quietly(f"progress of {owner}", partial(
                    update_progress_artifact, artifact,
                    progress=self._percent(self.done[owner], self.totals.get(owner, 0))))


def publish(dept: Department, summary: dict, report: Path | None) -> None:
    """The run's tables (users by state, failures by class, failed batches), its report as
    Markdown and links to the report file and the dashboard.

    Works with what a failed run has: a summary may lack every key but `error`, and `report`
    may be None or not written yet.
    """
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
    key = lambda *parts: artifact_key(dept.name, *parts)  # noqa: E731
    if summary.get("users") is not None:
        _quietly("users", lambda: create_table_artifact(
            key=key("users"), table=summary["users"], description=f"{dept.name}: items by user and state"))
    if summary.get("failures") is not None:
        # published even when empty, so the key's newest version never shows an older run's failures
        rows = [{"class": reason, "items": f.get("count", 0), "example": clip(f.get("example"), 300)}
                for reason, f in summary["failures"].items()]
        _quietly("failures", lambda: create_table_artifact(
            key=key("failures"), table=rows,
            description=f"{dept.name}: failed items by error class (rerun with `umstieg rerun --error-class`)"))
    if summary.get("failed_batches") is not None:
        rows = [{"batch": b["batch"], "user": b["user"], "failures": b["failures"],
                 "classes": ", ".join(f"{c} {n}" for c, n in sorted(b["classes"].items()))}
                for b in summary["failed_batches"]]
        _quietly("failed batches", lambda: create_table_artifact(
            key=key("failed-batches"), table=rows,
            description=f"{dept.name}: failed items by batch (rerun with `umstieg rerun --batch`)"))
    n = names(getattr(dept, "language", None))      # the run report's language, for what is added to it
    path = Path(report) if report is not None else None
    written = path is not None and path.is_file()
    if path is not None and written:
        markdown = path.read_text(encoding="utf-8")
    else:
        markdown = "# " + n("%(department)s: run %(run)s did not finish") % {
            "department": dept.name, "run": summary.get("run", "?")} + "\n\n" \
            f"{summary.get('error') or n('No report was written.')}\n"
    dashboard = os.environ.get("UMSTIEG_DASHBOARD_URL")
    page = f"{dashboard.rstrip('/')}/departments/{quote(dept.name)}" if dashboard else None
    if page:
        markdown += "\n\n[" + n("Open %(department)s in the dashboard") % {"department": dept.name} + f"]({page})\n"
    _quietly("run report", lambda: create_markdown_artifact(
        key=key("run"), markdown=markdown,
        description=f"{dept.name}: run report ({report})" if written else f"{dept.name}: run failed"))
    if path is not None and written:
        _quietly("report link", lambda: create_link_artifact(
            key=key("report"), link=path.resolve().as_uri(), link_text=path.name,
            description=f"{dept.name}: the run report on the machine that ran the flow"))
    if page:
        _quietly("dashboard link", lambda: create_link_artifact(
            key=key("dashboard"), link=page, link_text=f"{dept.name} in the dashboard",
            description=f"{dept.name}: items, fidelity and annotations"))


def publish_markdown(dept: Department, what: str, path: Path) -> None:
    """A Markdown report file (the assessment, a status snapshot) as the run's artifact `what`."""
    from prefect.artifacts import create_markdown_artifact
    markdown = Path(path).read_text(encoding="utf-8")
    _quietly(what, lambda: create_markdown_artifact(
        key=artifact_key(dept.name, what), markdown=markdown, description=f"{dept.name}: {what} ({path})"))
