"""`umstieg scan`: the pre-migration risk scan of a folder tree (read-only, no conversion)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from umstieg.console import console

__all__ = ["scan"]


def scan(
    src: Path = typer.Argument(..., exists=True, file_okay=False, help="folder tree to scan (read-only)"),
    out: Path = typer.Option(..., "--out", "-o", file_okay=False,
                             help="folder for scan.jsonl, scan.csv, scan.ods and scan.html"),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="files inspected at once"),
    oversize: float = typer.Option(50, "--oversize", min=0.001, help="flag files larger than this (MiB)"),
    language: str = typer.Option("en", "--language", "-l", help="language of scan.csv, scan.ods and scan.html: "
                                                                  "de, en or fr"),
) -> None:
    """Inventory SRC and flag every file's migration risks, without converting anything.

    Writes OUT/scan.jsonl (one record per file: path, format, size, flags), and the same table
    as scan.csv, scan.ods and scan.html: what converts cleanly, what needs review, what needs a person.
    """
    from reports.i18n import LANGUAGES
    from reports.risk import RISK_FLAGS
    from reports.scan import scan_tree

    if language not in LANGUAGES:
        raise typer.BadParameter(f"{language!r} is not one of {', '.join(LANGUAGES)}", param_hint="--language")

    progress = Progress(TextColumn("[bold]scanning"), BarColumn(pulse_style="cyan"),
                        TextColumn("{task.completed} files"), TimeElapsedColumn(), TextColumn("{task.fields[last]}"),
                        console=console)
    with progress:
        task = progress.add_task("scan", total=None, last="")

        def on_file(report) -> None:
            progress.update(task, advance=1, last=report.path[-50:])

        summary = scan_tree(src, out, jobs=jobs, oversize=int(oversize * 2**20), on_file=on_file, language=language)

    formats = Table(title="Files by format")
    for column in ("format", "files", "MiB"):
        formats.add_column(column, justify="left" if column == "format" else "right")
    for fmt, n in sorted(summary.by_format.items(), key=lambda kv: (kv[0] == "other", -kv[1], kv[0])):
        formats.add_row(fmt, str(n), f"{summary.bytes_by_format.get(fmt, 0) / 2**20:.1f}")
    if summary.by_format:
        console.print(formats)
    table = Table(title="Files by planning category")
    for column in ("category", "files", "meaning"):
        table.add_column(column, justify="right" if column == "files" else "left")
    meanings = {"clean": "converts cleanly", "review": "converts; check the result",
                "person": "someone must act first (password, macros, damage)", "other": "not an Office file"}
    for cat in ("clean", "review", "person", "other"):
        table.add_row(cat, str(summary.by_category.get(cat, 0)), meanings[cat])
    console.print(table)
    if summary.by_flag:
        flags = Table(title="Risk flags")
        flags.add_column("flag")
        flags.add_column("level")
        flags.add_column("files", justify="right")
        for flag, n in summary.by_flag.most_common():
            flags.add_row(flag, RISK_FLAGS[flag].level if flag in RISK_FLAGS else "", str(n))
        console.print(flags)
    rate = summary.files / summary.seconds if summary.seconds else 0.0
    console.print(f"{summary.files} file(s), {summary.bytes / 2**20:.1f} MiB in {summary.seconds:.1f} s "
                  f"({rate:.0f} files/s); {summary.errors} could not be inspected fully")
    console.print("written: " + ", ".join(f"[bold]{p}[/bold]" for p in summary.paths.values()))
