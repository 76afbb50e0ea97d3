"""`umstieg users DEPT.yaml`: the department's identity map as resolved (YAML, CSV or LDAP) with
the result of each identity check, for a team to review and sign off before anything moves."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from umstieg.console import console, tell_failure

__all__ = ["users"]

COLUMNS = ("source", "target", "email", "display_name", "source_account", "target_account", "attributes",
           "verdict")


def users(department_file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                                 help="the department file (YAML)"),
          as_json: bool = typer.Option(False, "--json", help="one JSON list of users on stdout"),
          as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout (for a spreadsheet sign-off)")) -> None:
    """Show who becomes whom, with each identity check (exit 1 when a user would wait)."""
    from flows import runtime
    from flows.identity import check_identities
    try:
        dept = runtime.department(department_file)
        rows = [c.row() for c in check_identities(dept)]
    except Exception as exc:            # a bad file, a directory out of reach: one clear line
        raise typer.Exit(tell_failure(exc)) from None
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table(title=f"{dept.name}: identity map")
        for column in COLUMNS:
            table.add_column(column.replace("_", " "), overflow="fold")
        for r in rows:
            style = "" if r["verdict"] == "go" else "yellow"
            table.add_row(*(escape(str(r[c] or "")) for c in COLUMNS), style=style)
        Console().print(table)
    waiting = sum(r["verdict"] != "go" for r in rows)
    console.print(f"{len(rows)} users: {len(rows) - waiting} go, {waiting} wait", soft_wrap=True)
    if waiting:
        raise typer.Exit(1)
