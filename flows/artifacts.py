"""What a run shows in Prefect: a progress artifact while chunks run, then the run's tables and
its Markdown report."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from core.department import Department

__all__ = ["Progress", "publish"]


class Progress:
    """The share of the run's items whose chunk has ended, shown as a Prefect progress artifact."""

    def __init__(self, dept: Department, todo: dict[str, list[int]]) -> None:
        from prefect.artifacts import create_progress_artifact
        self.total = sum(map(len, todo.values()))
        self.done = 0
        self._id = create_progress_artifact(progress=0.0, description=f"{dept.name}: items processed")

    def advance(self, owner: str, n: int) -> None:
        self.done += n

    def show(self) -> None:
        from prefect.artifacts import update_progress_artifact
        if self.total:
            update_progress_artifact(self._id, progress=100.0 * self.done / self.total)


def publish(dept: Department, summary: dict, report: Path) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    create_table_artifact(key=f"{dept.name.lower()}-users", table=summary["users"],
                          description=f"{dept.name}: items by user and state")
    markdown = report.read_text(encoding="utf-8")
    if url := os.environ.get("UMSTIEG_DASHBOARD_URL"):
        markdown += f"\n\n[Open {dept.name} in the dashboard]({url.rstrip('/')}/departments/{quote(dept.name)})\n"
    create_markdown_artifact(key=f"{dept.name.lower()}-run", markdown=markdown,
                             description=f"{dept.name}: run report ({report})")
