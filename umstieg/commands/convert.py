"""`umstieg convert`: convert a folder tree of Office documents to ODF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import ConfigError, FatalError
from core.outcomes import Outcome
from core.settings import ConversionSettings
from umstieg.console import console, print_error

__all__ = ["convert"]


def convert(
    src: Path = typer.Argument(..., exists=True, file_okay=False, help="folder of Office documents"),
    out: Path = typer.Argument(..., file_okay=False, help="folder for the ODF copies (mirrors SRC)"),
    workers: int = typer.Option(None, "--workers", "-w", min=0,
                                help="local LibreOffice workers [default: CPU cores]"),
    timeout: float = typer.Option(None, "--timeout", "-t", min=1, help="seconds per document [default: 120]"),
    recycle_after: int = typer.Option(None, "--recycle-after", min=1,
                                      help="conversions before a worker is replaced [default: 200]"),
    remote: list[str] = typer.Option([], "--remote", help="a remote unoserver (host:port); repeatable"),
    copy_unsupported: bool = typer.Option(False, "--copy-unsupported",
                                          help="copy files that are not Office documents unchanged"),
    fidelity: bool = typer.Option(True, "--fidelity/--no-fidelity",
                                  help="measure what each conversion kept and lost, and write the fidelity report"),
    visual: str = typer.Option(None, "--visual",
                               help="page-image comparison for: none, flagged (review/broken), all "
                                    "[default: flagged]"),
    visual_sample: float = typer.Option(None, "--visual-sample", min=0.0, max=1.0,
                                        help="share of the other documents that get the page-image comparison too"),
    language: str = typer.Option("en", "--language", "-l",
                                 help="language of the fidelity report (html, ods, csv): de, en or fr"),
) -> None:
    """Convert every Office document under SRC to OpenDocument under OUT.

    Resumable: run it again and documents already converted from the same bytes are skipped.
    Writes OUT/results.jsonl (one line per document, with its fidelity) and the fidelity report
    (OUT/fidelity.html, .ods, .csv); exits with 1 when any document failed.
    """
    from converters.pool import ConverterPool
    from converters.tree import convert_tree
    from reports.i18n import LANGUAGES

    if language not in LANGUAGES:
        raise typer.BadParameter(f"{language!r} is not one of {', '.join(LANGUAGES)}", param_hint="--language")

    overrides: dict[str, Any] = {
        k: v for k, v in dict(workers=workers, timeout=timeout, recycle_after=recycle_after).items() if v is not None}
    if remote:
        overrides["remote"] = remote
    try:
        settings = ConversionSettings(**overrides)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    fidelity_settings = None
    if fidelity:
        from reports.scoring import FidelitySettings

        try:
            chosen: dict[str, Any] = {k: v for k, v in dict(visual=visual, visual_sample=visual_sample).items()
                                      if v is not None}
            fidelity_settings = FidelitySettings(**chosen)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc

    progress = Progress(TextColumn("[bold]converting"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                        TextColumn("{task.fields[last]}"), console=console, transient=False)
    task: TaskID | None = None
    done_fresh = [0]

    def on_start(total: int) -> None:
        nonlocal task
        task = progress.add_task("convert", total=total, rate="", last="")

    def on_result(result, skipped: bool) -> None:
        if task is None:                       # (on_start comes first)
            return
        if not skipped:
            done_fresh[0] += 1
        elapsed = progress.tasks[task].elapsed or 0.0
        rate = f"{done_fresh[0] / elapsed:.1f} docs/s" if elapsed > 0 and done_fresh[0] else ""
        name = Path(result.source).name
        last = f"{result.outcome.value}: {name[:40]}"
        progress.update(task, advance=1, rate=rate, last=last)

    try:
        with console.status(f"starting {settings.workers} LibreOffice worker(s)"
                            + (f" and {len(settings.remote)} remote" if settings.remote else "")):
            pool = ConverterPool(settings).start()
        assess = None
        if fidelity_settings is not None:
            from reports.batch import THUMBS_DIR
            from reports.fidelity import make_assessor

            assess = make_assessor(fidelity_settings, render=pool.render_pdf, thumbs=out / THUMBS_DIR)
        with pool, progress:
            summary = convert_tree(pool, src, out, copy_unsupported=copy_unsupported,
                                   on_start=on_start, on_result=on_result, assess=assess)
    except (ConfigError, FatalError) as exc:
        print_error(exc)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/yellow] every document finished so far is recorded; "
                      "run the same command again to resume")
        raise typer.Exit(130) from None

    _print_summary(summary, pool)
    console.print(f"ODF copies under [bold]{out}[/bold]; one line per document in "
                  f"[bold]{summary.results_path}[/bold]")
    if fidelity_settings is not None:
        _print_fidelity(summary, out, language)
    _print_attention(summary)
    if summary.failed:
        console.print(f"[red]{summary.failed} document(s) failed[/red] (see the outcome column and results.jsonl)")
        raise typer.Exit(1)


def _print_attention(summary) -> None:
    """What a person should look at beside the failures: entries that were not read, and why."""
    skipped = summary.by_outcome.get(Outcome.SKIPPED.value, 0)
    changed = summary.by_outcome.get(Outcome.CHANGED.value, 0)
    if skipped:
        console.print(f"[yellow]{skipped} entr(y/ies) not read[/yellow]: links (never followed), pipes, sockets or "
                      "devices; each has a line with outcome `skipped` and the reason in results.jsonl", soft_wrap=True)
    if changed:
        console.print(f"[yellow]{changed} file(s) changed at the source while converting[/yellow] (replaced by a link "
                      "or another file after the tree was listed): nothing of them was read; run the command again",
                      soft_wrap=True)


def _print_summary(summary, pool) -> None:
    outcomes = [o.value for o in Outcome if summary.by_outcome.get(o.value)]
    table = Table(title="Documents by format and outcome", show_footer=True)
    table.add_column("format", footer="all")
    for outcome in outcomes:
        table.add_column(outcome, justify="right", footer=str(summary.by_outcome[outcome]))
    table.add_column("total", justify="right", footer=str(summary.total))
    formats = sorted({fmt for fmt, _ in summary.by_format})
    for fmt in formats:
        counts = [summary.by_format.get((fmt, o), 0) for o in outcomes]
        table.add_row(fmt, *[str(c) if c else "" for c in counts], str(sum(counts)))
    console.print(table)
    fresh = summary.total - summary.skipped
    rate = fresh / summary.seconds if summary.seconds else 0.0
    console.print(f"{summary.total} document(s), {summary.skipped} already converted earlier, "
                  f"{fresh} processed in {summary.seconds:.1f} s ({rate:.2f} docs/s); "
                  f"worker restarts {pool.restarts}, recycled {pool.recycled}, "
                  f"peak worker memory {pool.peak_rss / 2**20:.0f} MiB")


def _print_fidelity(summary, out: Path, language: str = "en") -> None:
    """Verdict counts of this run and where the batch report is."""
    from reports.batch import write_fidelity_report

    order = ["identical", "minor", "review", "broken", "failed", "not_assessed"]
    counts = summary.by_verdict
    if counts:
        table = Table(title="Fidelity (what each conversion kept)")
        for verdict in [v for v in order if counts.get(v)] + sorted(set(counts) - set(order)):
            table.add_column(verdict.replace("_", " "), justify="right")
        table.add_row(*[str(counts[v]) for v in [v for v in order if counts.get(v)] + sorted(set(counts) - set(order))])
        console.print(table)
    try:
        paths = write_fidelity_report(out, summary.results_path, language=language)
    except Exception as exc:  # noqa: BLE001 - the conversions stand; say why the report is missing
        console.print(f"[yellow]fidelity report not written:[/yellow] {type(exc).__name__}: {exc}")
        return
    console.print("fidelity report: " + ", ".join(f"[bold]{p}[/bold]" for p in paths.values()))
