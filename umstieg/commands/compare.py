"""`umstieg compare`: the fidelity record of one original and its OpenDocument copy."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from umstieg.console import console, print_error

__all__ = ["compare"]

#: Exit status by verdict: 0 nothing to do, 1 a person should look; 2 means the pair could not be compared.
EXIT_BY_VERDICT = {"identical": 0, "minor": 0, "review": 1, "broken": 1}
NOT_COMPARED = 2


def compare(
    original: Path = typer.Argument(..., help="the Office document (or ODF file) as it was"),
    converted: Path = typer.Argument(..., help="its OpenDocument copy, made by umstieg or anything else"),
    visual: bool = typer.Option(False, "--visual", help="also render both to page images and compare them "
                                                          "(starts one LibreOffice worker)"),
    as_json: bool = typer.Option(False, "--json", help="print the fidelity record as JSON on stdout"),
) -> None:
    """Measure what CONVERTED kept of ORIGINAL: the same checks and scoring as `umstieg convert`.

    Exit status: 0 identical or minor, 1 review or broken, 2 could not compare.
    """
    from reports.fidelity import NotComparable, assess_pair
    from reports.scoring import FidelitySettings

    settings = FidelitySettings(visual="all" if visual else "none")
    pool = None
    try:
        render = None
        if visual:
            from converters.pool import ConverterPool
            from core.settings import ConversionSettings

            with console.status("starting a LibreOffice worker for the page images"):
                pool = ConverterPool(ConversionSettings(workers=1)).start()
            render = pool.render_pdf
        record = assess_pair(original, converted, settings, render=render, visual=visual)
    except NotComparable as exc:
        _fail(f"could not compare: {exc}", as_json, original, converted)
    except Exception as exc:  # noqa: BLE001 - a pool that cannot start, an unreadable file: one clear line
        from core.errors import ConfigError, FatalError
        reason = str(exc) if isinstance(exc, (ConfigError, FatalError, OSError)) else f"{type(exc).__name__}: {exc}"
        _fail(f"could not compare: {reason}", as_json, original, converted)
    finally:
        if pool is not None:
            pool.close()

    data = record.to_json()
    if as_json:
        typer.echo(json.dumps({"original": str(original), "converted": str(converted), **data},
                              ensure_ascii=False, indent=2))
    else:
        _print(record, data, original, converted)
    raise typer.Exit(EXIT_BY_VERDICT.get(data["verdict"], NOT_COMPARED))


def _fail(message: str, as_json: bool, original: Path, converted: Path) -> None:
    if as_json:
        typer.echo(json.dumps({"original": str(original), "converted": str(converted), "status": "not_compared",
                               "reason": message.removeprefix("could not compare: ")}, ensure_ascii=False))
    print_error(message)
    raise typer.Exit(NOT_COMPARED)


def _print(record, data: dict, original: Path, converted: Path) -> None:
    """The verdict and score first, then every deduction with its reason, then the notes."""
    from reports.compare import label
    from reports.fidelity import SOURCE_RENDER_NOTE

    colour = {"identical": "green", "minor": "green", "review": "yellow", "broken": "red"}[data["verdict"]]
    console.print(f"[bold]{escape(original.name)}[/bold] → [bold]{escape(converted.name)}[/bold]: "
                  f"[{colour}]{data['verdict']}[/{colour}], score {data['score']:g} of 100", soft_wrap=True)
    if data["deductions"]:
        table = Table(title="What the copy lost or changed")
        table.add_column("check")
        table.add_column("points", justify="right")
        table.add_column("why")
        for item in data["deductions"]:
            table.add_row(label(item["check"]), f"{item['points']:g}", escape(item["detail"] or ""))
        console.print(table)
    else:
        console.print("every measured feature is the same in both files")
    for note in data.get("notes", []):
        console.print(f"note: {escape(note)}", soft_wrap=True)
    if record.visual:
        console.print(f"note: {escape(SOURCE_RENDER_NOTE)}", soft_wrap=True)
    if data.get("reader"):
        console.print(f"compared by: {escape(data['reader'])}", soft_wrap=True)
