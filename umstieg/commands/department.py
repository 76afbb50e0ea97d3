"""Department commands: run (migrate), assess, status, rerun, report, deployments."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import ConfigError
from core.messages import clip
from rich.markup import escape

from umstieg.console import console, print_error

if TYPE_CHECKING:
    from reports.i18n import Names

__all__ = ["register"]

DeptFile = typer.Argument(..., exists=True, dir_okay=False, help="the department file (YAML)")


def _start(name: str, dept, department_file: Path, **params):
    """Run the department flow `name` as this machine is set up (flows.migrate.run_flow): here,
    with no server and without importing Prefect, unless a Prefect server is configured or the
    department's chunks run on a Dask cluster."""
    from flows.migrate import orchestrated, run_flow
    if orchestrated(dept):
        _quiet_prefect()
        _no_tracebacks_from_prefect()
    return run_flow(name, department_file, **params)


def _no_tracebacks_from_prefect() -> None:
    """Prefect logs a failed flow or task run with its traceback; the command says what failed
    itself, in a line or two (umstieg.cli), the traceback only under -v. The terminal leaves
    Prefect's failure records out; the server still gets them (its handler sits on Prefect's own
    loggers, before the terminal's on the root logger)."""
    import logging
    from umstieg import console as terminal
    if terminal.verbose:
        return
    from flows import prefect_flows  # noqa: F401 - Prefect sets up its logging when imported

    class _NoPrefectFailures(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not (record.name.startswith("prefect") and record.exc_info)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NoPrefectFailures())


def _quiet_prefect() -> None:
    """Prefect's own logs and telemetry stay out of the operator's terminal (unless -v); a run
    killed outright does not leave a Prefect temporary server behind (flows.sentinel)."""
    import logging
    from flows.runtime import prefect_configured
    from flows.sentinel import guard
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not prefect_configured():           # a Dask department without a server: Prefect starts its own
        guard()
    if logging.getLogger().level > logging.INFO:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        if not prefect_configured():       # a team's server keeps the run's logs
            os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


def _load(department_file: Path):
    from core.department import load_department
    try:
        return load_department(department_file)
    except ConfigError as exc:
        print_error(exc)
        raise typer.Exit(2) from exc


def _watch_progress(dept, stop: threading.Event) -> None:
    """Show this run's progress from the ledger (works whatever runs the chunks: threads or Dask)."""
    import logging
    from sqlalchemy import select
    from core.ledger import Ledger, Run, State
    try:
        ledger = dept.open_ledger()
    except Exception as exc:  # noqa: BLE001 - display only: the run itself reports this, and stops
        logging.getLogger(__name__).debug("no progress display: %s", exc)
        return
    progress = Progress(TextColumn(f"[bold]{dept.name}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console)
    task = None
    run_id = None
    n = _names(dept)
    verified, failed = _state(n, "verified"), _state(n, "failed")
    try:
        with progress:
            while True:
                stopping = stop.wait(0.5)
                try:
                    with ledger.session() as s:
                        run = s.scalars(select(Run).where(Run.department == dept.name, Run.status == "running")
                                        .order_by(Run.id.desc()).limit(1)).first()
                        if run is None and run_id is not None:          # it has just finished
                            run = s.get(Run, run_id)
                        if run is None or (run.summary or {}).get("todo") is None:
                            if stopping:
                                break
                            continue
                        run_id, total = run.id, run.summary["todo"]
                        rows = Ledger.batch_counts(s, run_id)     # one row per chunk, not per item
                except Exception:  # noqa: BLE001 - the ledger may not exist yet
                    if stopping:
                        break
                    continue
                finished = sum(rows.get(s.value, 0) for s in (State.VERIFIED, State.FAILED, State.SKIPPED))
                detail = f"{verified} {rows.get('verified', 0)}, {failed} {rows.get('failed', 0)}"
                if task is None:
                    task = progress.add_task("run", total=total, detail=detail)
                progress.update(task, completed=min(finished, total), total=total, detail=detail)
                if stopping:
                    break
    finally:
        ledger.close()


def _names(dept) -> Names:
    """The texts of the department's `language` (reports.i18n): what the commands print beside
    the reports they write, in the same words."""
    from reports.i18n import names
    return names(getattr(dept, "language", None))


def _state(n: Names, code: str) -> str:
    """A state's column header: its code in English, as the terminal has always shown it (and as
    `--json` and the ledger have it), its name in German and French."""
    return code if n.language == "en" else n.code(code)


def _print_summary(summary: dict, n: Names) -> None:
    from core.ledger import State
    states = [s.value for s in State if any(row[s.value] for row in summary["users"])]
    table = Table(title=n("%(department)s: items by user and state") % {"department": summary["department"]})
    table.add_column(n("user"))
    for s in states:
        table.add_column(_state(n, s), justify="right")
    table.add_column(n("total"), justify="right")
    for row in summary["users"]:
        table.add_row(row["user"], *[str(row[s]) if row[s] else "" for s in states], str(row["total"]))
    console.print(table)
    if summary.get("failures"):
        # the class column keeps the code in every language: it is what `rerun --error-class` takes
        failures = Table(title=n("failures by class"))
        failures.add_column(n("class"))
        failures.add_column(n("items"), justify="right")
        failures.add_column(n("example"))
        for reason, f in summary["failures"].items():
            failures.add_row(reason, str(f["count"]), escape(clip(f["example"], 100)))
        console.print(failures)
    if summary.get("failed_batches"):
        batches = Table(title=n("failures by batch"))
        batches.add_column(n("batch"), justify="right")
        batches.add_column(n("user"))
        batches.add_column(n("failed"), justify="right")
        batches.add_column(n("classes"))
        for b in summary["failed_batches"]:
            batches.add_row("–" if b["batch"] is None else str(b["batch"]), escape(b["user"]), str(b["failures"]),
                            ", ".join(f"{c} {count}" for c, count in sorted(b["classes"].items())))
        console.print(batches)
        more = summary.get("failed_batch_count", 0) - len(summary["failed_batches"])
        if more > 0:
            console.print(n("… and %(more)s older batch(es) with failures (--json lists the newest only)")
                          % {"more": more})
        console.print(n("rerun one batch: umstieg rerun DEPARTMENT.yaml --batch ID"), soft_wrap=True)
    if renamed := (summary.get("renamed") or {}).get("count"):
        console.print(n("%(count)s file(s) got a name of their own at the target (NFC or case twins, converted-name "
                        "clashes): the run report lists each, source name → target name") % {"count": renamed},
                      soft_wrap=True)


def _run_flow(dept, call) -> dict:
    """`call()` with the run's progress shown meanwhile; its failures are told by umstieg.cli."""
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_progress, args=(dept, stop), daemon=True)
    watcher.start()
    try:
        return call()
    finally:
        stop.set()
        watcher.join(5)


def run(department_file: Path = DeptFile,
        user: list[str] = typer.Option([], "--user", "-u", help="only this source user; repeatable"),
        ignore_window: bool = typer.Option(False, "--ignore-window",
                                           help="run now even outside the department's allowed window"),
) -> None:
    """Migrate a department on this machine (the embedded default: no Prefect server needed).

    Run it again for the delta pass: only new and changed items move.
    """
    dept = _load(department_file)
    n = _names(dept)
    summary = _run_flow(dept, lambda: _start("migrate", dept, department_file, users=user or None,
                                             ignore_window=ignore_window))
    if summary.get("dry_run"):                # mail.dry_run: what would move, per folder; nothing moved
        _print_mail(summary, n, table=True)
        console.print(n("Dry run (mail.dry_run): nothing moved. Plan: %(plan)s")
                      % {"plan": f"[bold]{escape(summary['markdown'])}[/bold]"}, soft_wrap=True)
        return
    _print_summary(summary, n)
    console.print(n("Report: %(report)s; target: %(target)s") % {
        "report": f"[bold]{summary['report']}[/bold]", "target": f"[bold]{dept.target.root}[/bold]"})
    failed = summary["totals"].get("failed", 0)
    if failed:
        how_many = n("%(count)s item(s) failed") % {"count": failed}
        console.print(n("%(failed)s: fix the cause, then `umstieg rerun %(department_file)s`") % {
            "failed": f"[red]{how_many}[/red]", "department_file": department_file})
    _print_stopped(summary, department_file, n)
    _print_left(summary, n)
    if failed or summary.get("stopped_users"):
        raise typer.Exit(1)


def _print_left(summary: dict, n: Names) -> None:
    if left := summary.get("left_for_next_run"):
        waiting = n("%(count)s item(s) wait for the next run") % {"count": left["items"]}
        console.print(f"[yellow]{waiting}[/yellow]: {left['why']}", soft_wrap=True)


def _print_stopped(summary: dict, department_file: Path, n: Names) -> None:
    for owner, why in sorted((summary.get("stopped_users") or {}).items()):
        waits = n("%(user)s waits") % {"user": owner}
        console.print(f"[yellow]{waits}[/yellow]: {escape(why)}", soft_wrap=True)
    if summary.get("stopped_users"):
        console.print(n("Nothing of theirs is lost: fix the cause, then `umstieg run %(department_file)s` again")
                      % {"department_file": department_file})


def rerun(department_file: Path = DeptFile,
          batch: int = typer.Option(None, help="only items last processed in this batch"),
          error_class: str = typer.Option(None, "--error-class", "-e", help="only failures of this class"),
          user: str = typer.Option(None, "--user", "-u", help="only this source user"),
          ignore_window: bool = typer.Option(False, "--ignore-window",
                                           help="run now even outside the department's allowed window"),
) -> None:
    """Retry exactly the failed items that match the filters; nothing else runs."""
    dept = _load(department_file)
    n = _names(dept)
    summary = _run_flow(dept, lambda: _start("rerun", dept, department_file, batch=batch, error_class=error_class,
                                             user=user, ignore_window=ignore_window))
    console.print(n("%(count)s failed item(s) retried") % {"count": summary["delta"].get("rerun", 0)})
    _print_summary(summary, n)
    _print_stopped(summary, department_file, n)
    _print_left(summary, n)
    if summary["totals"].get("failed", 0) or summary.get("stopped_users"):
        raise typer.Exit(1)


def _status(dept) -> dict:
    """The department's status from its ledger (schema brought up to date first)."""
    from reports.migration import department_status
    try:
        ledger = dept.open_ledger()
    except ConfigError as exc:
        print_error(exc)
        raise typer.Exit(2) from exc
    try:
        ledger.migrate()
        return department_status(dept, ledger)
    except Exception as exc:
        from flows.runtime import plain_failure
        plain = plain_failure(exc, dept)          # a refused login, a database gone, a full disk
        if plain is None:
            raise
        raise plain from exc
    finally:
        ledger.close()


def status(department_file: Path = DeptFile,
           as_json: bool = typer.Option(False, "--json", help="print the status as JSON")) -> None:
    """Progress by user and state, failures by class, from the ledger."""
    dept = _load(department_file)
    summary = _status(dept)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    n = _names(dept)
    _print_summary(summary, n)
    if summary["last_run"]:
        r = summary["last_run"]
        console.print(n("last run %(id)s (%(flow)s): %(status)s, started %(started)s") % {
            "id": r["id"], "flow": _state(n, r["flow"]), "status": _state(n, r["status"]), "started": r["started"]})


def report(department_file: Path = DeptFile,
           language: str = typer.Option(None, "--language", "-l",
                                        help="de, en or fr [default: the department's language]")) -> None:
    """Write a snapshot of the department's status from the ledger now (status-<UTC time>.md
    and .json beside the run reports, which stay as they are) and say where it is."""
    from reports.i18n import LANGUAGES
    if language is not None and language not in LANGUAGES:
        raise typer.BadParameter(f"{language!r} is not one of {', '.join(LANGUAGES)}", param_hint="--language")
    dept = _load(department_file)
    from reports.migration import write_status_report
    path = write_status_report(dept, _status(dept), language)
    console.print(f"Report: [bold]{escape(str(path))}[/bold]", soft_wrap=True)


def assess(department_file: Path = DeptFile) -> None:
    """Inventory the department's sources (nothing moves) and estimate the conversion time."""
    dept = _load(department_file)             # a bad department file stops here, with its errors
    result = _start("assess", dept, department_file)
    n = _names(dept)
    from reports.migration import assessment_basis, decimal
    basis = assessment_basis(result, n)
    label = n("problem:")
    for problem in result["problems"]:
        console.print(f"[yellow]{label}[/yellow] {problem}")
    console.print(n("%(items)s item(s), %(mib)s MiB, %(documents)s Office document(s); estimated conversion time "
                    "%(seconds)s s (%(basis)s)") % {
        "items": result["items"], "mib": decimal(result["bytes"] / 2**20, 1, n),
        "documents": result["office_documents"], "seconds": f"{result['estimated_conversion_seconds']:.0f}",
        "basis": basis["conversion"]}, soft_wrap=True)
    if result["estimated_seconds"] is not None:
        console.print(n("estimated duration of the whole migration %(seconds)s s (%(basis)s)") % {
            "seconds": f"{result['estimated_seconds']:.0f}", "basis": basis["whole"]}, soft_wrap=True)
    _print_mail(result, n)
    console.print(n("Assessment: %(markdown)s (data: %(report)s)") % {
        "markdown": f"[bold]{result['markdown']}[/bold]", "report": result["report"]}, soft_wrap=True)


def _print_mail(result: dict, n: Names, table: bool = False, limit: int = 200) -> None:
    """Mail at the source and what the department's mail options move (per folder with `table`)."""
    from reports.migration import decimal
    rows = result.get("mail") or []
    if not rows:
        return
    def mib(size: int, digits: int) -> str:
        return decimal(size / 2**20, digits, n)
    console.print(n("mail: %(messages)s message(s), %(mib)s MiB in %(folders)s folder(s); selected to move: "
                    "%(selected)s message(s), %(selected_mib)s MiB") % {
        "messages": result["mail_messages"], "mib": mib(result["mail_bytes"], 1), "folders": len(rows),
        "selected": result["mail_selected_messages"], "selected_mib": mib(result["mail_selected_bytes"], 1)},
        soft_wrap=True)
    if not table:
        return
    out = Table(title=n("mail per user and folder"))
    for name in ("user", "folder", "messages", "MiB", "to move", "MiB to move", "renamed to"):
        out.add_column(n(name), justify="right" if "M" in name or name in ("messages", "to move") else "left")
    for r in rows[:limit]:
        out.add_row(escape(r["user"]), escape(r["folder"]), str(r["messages"]), mib(r["bytes"] or 0, 2),
                    str(r["selected_messages"]), mib(r["selected_bytes"], 2), escape(r["target_folder"] or ""))
    console.print(out)
    if len(rows) > limit:
        console.print(n("… and %(more)s more folders (see the plan)") % {"more": len(rows) - limit})




def deployments(department_files: list[Path] = typer.Argument(..., exists=True, dir_okay=False,
                                                              help="department files"),
                out: Path = typer.Option(Path("deployments/prefect.yaml"), "--out", "-o"),
                work_pool: str = typer.Option("umstieg", help="the Prefect work pool (type: process)"),
                home: str = typer.Option("{{ $UMSTIEG_HOME }}",
                                         help="umstieg's folder on the worker machines (default: the "
                                              "UMSTIEG_HOME variable of the worker's environment)")) -> None:
    """Write prefect.yaml for `prefect deploy --all`: per department, its scheduled migration and
    deployments of rerun, assess and report for operators."""
    import yaml
    from flows.limits import host_of
    root = Path.cwd().resolve()
    entries = []
    files: list[str] = []                     # the department files, as the deployments name them
    limits: dict[str, int] = {}
    for path in department_files:
        dept = _load(path)
        # the tags chunk tasks carry name hosts (flows/migrate.py), never this machine's paths, so
        # the file stays the same wherever it is generated
        # `local` (folders, export files, a local target) means a different thing on each machine:
        # no limit across machines for it
        for tag, n in [(f"source:{host_of(src)}", dept.limits.source) for src in dept.sources] + \
                [(f"target:{host_of(dept.target)}", dept.limits.target)]:
            if not tag.endswith(":local"):
                limits[tag] = min(limits.get(tag, n), n)
        schedules = []
        if dept.schedule.cron:
            schedules.append({"cron": dept.schedule.cron, "timezone": dept.schedule.timezone, "active": True})
        try:
            rel = path.resolve().relative_to(root).as_posix()
        except ValueError:
            rel = str(path.resolve())
        files.append(rel)
        # the migration on its schedule; the operators' flows beside it, run from Prefect's UI or
        # `prefect deployment run umstieg-rerun/NAME --param error_class=...` when needed
        for flow_name, what, runs in (("migrate", f"migration of {dept.name}", schedules),
                                      ("rerun", f"{dept.name}: retry failed items (filters: batch, "
                                                "error_class, user)", []),
                                      ("assess", f"{dept.name}: inventory and risk scan, nothing moves", []),
                                      ("report", f"{dept.name}: status snapshot from the ledger", [])):
            entries.append({
                "name": dept.name,
                "description": (dept.description or what) if flow_name == "migrate" else what,
                "entrypoint": f"flows/migrate.py:{flow_name}",
                "parameters": {"department_file": rel},
                "work_pool": {"name": work_pool},
                "schedules": runs,
                "tags": ["umstieg", f"department:{dept.name}", f"flow:{flow_name}"],
            })
    document = {"name": "umstieg", "prefect-version": "3.8.8",
                "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": home}}],
                "deployments": entries}
    header = ("# Generated by `umstieg deployments`: per department, its migration and the operators' rerun,\n"
              f"# assess and report. Regenerate from umstieg's folder: umstieg deployments {' '.join(files)}\n"
              f"# Deploy: prefect work-pool create {work_pool} --type process; prefect deploy --all\n"
              "# Workers: UMSTIEG_HOME=/path/to/umstieg prefect worker start --pool " + work_pool + "\n"
              "# Each run keeps its department's `limits:` itself"
              + (";\n# across departments sharing a Prefect server, these tag limits (chunk tasks carry the tags)\n"
                 "# hold the smallest of them:\n" if limits else
                 " (its sources and target are local to each machine:\n# no tag limit across machines).\n")
              + "".join(f"#   prefect concurrency-limit create '{tag}' {n}\n" for tag, n in sorted(limits.items())))
    out.write_text(header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    console.print(f"wrote {out} with {len(entries)} deployment(s) for {len(department_files)} department(s)")


def register(app: typer.Typer) -> None:
    for command in (run, assess, status, rerun, report, deployments):
        app.command()(command)
