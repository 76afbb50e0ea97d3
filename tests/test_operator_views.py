"""What operators see of a department: Prefect artifacts, run reports, `status`, `report`, the
progress display, and the committed prefect.yaml. Real Prefect (ephemeral), real LibreOffice,
real SQLite and a real password-protected PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
import yaml

from servers.postgres import as_postgres as _as_postgres
from servers import free_port
from helpers import UMSTIEG, ledger_rows, make_department

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = "http://dashboard.example:8080/umstieg"


@pytest.fixture(scope="module", autouse=True)
def _close_runtime_pools():
    yield
    from flows import runtime
    runtime.close_all()


# ------------------------------------------------------------------------------ artifact keys
def test_artifact_keys_are_what_prefect_accepts():
    from prefect.client.schemas.actions import ArtifactCreate
    from pydantic import ValidationError
    from flows.artifacts import artifact_key, slug
    assert slug("Bürger_Amt 2") == "b-rger-amt-2"
    assert slug("--a__b..c--") == "a-b-c" and slug("___") == "x"
    key = artifact_key("Bürger_Amt 2", "progress", "anna.schmidt@amt.example")
    assert key == "b-rger-amt-2-progress-anna-schmidt-amt-example"
    assert ArtifactCreate(key=key).key == key
    with pytest.raises(ValidationError):                 # what the keys used to be built as
        ArtifactCreate(key="Bürger_Amt 2".lower() + "-users")


# ------------------------------------------------------------------ one department, two runs
@dataclass
class Migrated:
    dept_file: Path
    tmp: Path
    first: dict
    second: dict
    flow_runs: tuple[str, str]
    ben_batches: set[int]
    deleted: list[str]


def _flow_run_ids(dept_file: Path) -> list[str]:
    from sqlalchemy import select
    from core.department import load_department
    from core.ledger import Ledger, Run
    ledger = Ledger(load_department(dept_file).ledger_url)
    try:
        with ledger.session() as s:
            return [r.prefect_flow_run for r in s.scalars(select(Run).order_by(Run.id))]
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Migrated:
    """`Test_Amt` (a name Prefect keys refuse as it is): anna's files migrate, ben's target folder
    is blocked so his items fail to load; then anna deletes two files and the department runs
    again (nothing to process: only the deletions to report)."""
    from flows.migrate import migrate
    tmp = tmp_path_factory.mktemp("operator")
    dept_file = make_department(tmp, users=("anna", "ben"), docs_per_user=3, name="Test_Amt",
                                conversion={"workers": 1}, limits={"chunk_size": 2})
    (tmp / "target").mkdir()
    (tmp / "target" / "t-ben").write_text("in the way")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UMSTIEG_DASHBOARD_URL", DASHBOARD)
        first = migrate(str(dept_file))
        deleted = ["Ablage/doc002.pptx", "notes.txt"]
        for rel in deleted:
            (tmp / "home" / "anna" / rel).unlink()
        second = migrate(str(dept_file))
    ben_batches = {r["batch_id"] for r in ledger_rows(dept_file) if r["owner"] == "ben"}
    runs = _flow_run_ids(dept_file)
    assert len(runs) == 2 and all(runs)
    return Migrated(dept_file, tmp, first, second, (runs[0], runs[1]), ben_batches, deleted)


def _artifacts(flow_run: str) -> dict[str, object]:
    """The artifacts of one flow run, newest version of each key, read back from Prefect's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run)])))
    by_key: dict[str, object] = {}
    for a in sorted(found, key=lambda a: a.created):
        by_key[a.key] = a
    return by_key


def test_a_run_publishes_progress_tables_and_links(migrated):
    arts = _artifacts(migrated.flow_runs[0])
    assert {"test-amt-progress", "test-amt-progress-anna", "test-amt-progress-ben", "test-amt-users",
            "test-amt-failures", "test-amt-failed-batches", "test-amt-run", "test-amt-report",
            "test-amt-dashboard"} <= set(arts)
    assert arts["test-amt-progress"].type == "progress" and arts["test-amt-progress"].data == 100.0
    assert arts["test-amt-progress-anna"].data == 100.0 and arts["test-amt-progress-ben"].data == 100.0

    rows = ledger_rows(migrated.dept_file)
    ben = [r for r in rows if r["owner"] == "ben"]
    failures = json.loads(arts["test-amt-failures"].data)
    assert [f["class"] for f in failures] == ["load_error"]
    assert failures[0]["items"] == len(ben) and failures[0]["example"]
    batches = json.loads(arts["test-amt-failed-batches"].data)
    assert {b["batch"] for b in batches} == migrated.ben_batches and {b["user"] for b in batches} == {"ben"}
    assert sum(b["failures"] for b in batches) == len(ben)
    users = {u["user"]: u for u in json.loads(arts["test-amt-users"].data)}
    assert users["ben"]["failed"] == len(ben)

    report = Path(migrated.first["report"])
    assert arts["test-amt-report"].type == "markdown"           # Prefect keeps link artifacts as markdown
    assert f"({report.resolve().as_uri()})" in arts["test-amt-report"].data
    assert f"({DASHBOARD}/departments/Test_Amt)" in arts["test-amt-dashboard"].data
    assert "# Test_Amt: run" in arts["test-amt-run"].data


def test_a_run_with_nothing_to_do_shows_full_progress(migrated):
    assert migrated.second["this_run"] == {}
    arts = _artifacts(migrated.flow_runs[1])
    assert arts["test-amt-progress"].data == 100.0
    assert not any(k.startswith("test-amt-progress-") for k in arts)    # nobody had items to process
    assert json.loads(arts["test-amt-failures"].data)[0]["class"] == "load_error"   # ben's still stand


def test_publish_takes_what_a_failed_run_has(tmp_path):
    """The flow publishes a failed run's partial summary (no users, no report)."""
    from prefect import flow
    from core.department import load_department
    from flows.artifacts import publish

    @flow(name="publish-failed-run")
    def failed_run() -> str:
        from prefect.runtime import flow_run
        dept = load_department(make_department(tmp_path, users=("anna",), docs_per_user=1, name="Kaputt_Amt"))
        publish(dept, {"run": 7, "status": "failed", "error": "FatalError: the target disk is full"}, None)
        return str(flow_run.id)

    arts = _artifacts(failed_run())
    assert set(arts) == {"kaputt-amt-run"}
    assert "run 7 did not finish" in arts["kaputt-amt-run"].data
    assert "the target disk is full" in arts["kaputt-amt-run"].data


# --------------------------------------------------------------------------------- reports
def test_the_run_report_lists_failed_batches(migrated):
    text = Path(migrated.first["report"]).read_text(encoding="utf-8")
    section = text.split("## Failures by batch", 1)[1].split("\n## ", 1)[0]
    shown = {int(m) for m in re.findall(r"^\| (\d+) \| ben \| \d+ \| load_error \d+ \|$", section, re.M)}
    assert shown == migrated.ben_batches
    assert "--batch" in section


def test_the_run_report_lists_what_this_run_found_deleted(migrated):
    removed = migrated.second["removed_this_run"]
    assert removed["count"] == 2 and removed["at_target"] == "kept"
    assert sorted((i["owner"], i["location"]) for i in removed["items"]) == [("anna", d) for d in migrated.deleted]
    text = Path(migrated.second["report"]).read_text(encoding="utf-8")
    section = text.split("## Deleted at the source in this run", 1)[1].split("\n## ", 1)[0]
    assert "left at the target" in section
    for d in migrated.deleted:
        assert f"| anna | {d} |" in section
    assert (migrated.tmp / "target" / "t-anna" / "notes.txt").is_file()            # really left there
    # the first run deleted nothing: no such section
    assert migrated.first["removed_this_run"]["count"] == 0
    assert "Deleted at the source in this run" not in Path(migrated.first["report"]).read_text(encoding="utf-8")


def test_deleted_items_are_capped_and_the_policy_is_named(tmp_path):
    from core.department import load_department
    from reports.migration import REPORT_LIST_LIMIT, write_run_report
    dept = load_department(make_department(tmp_path, users=("anna",), docs_per_user=1, delete_at_target=True))
    items = [{"owner": "anna", "location": f"alt/{i:03d}.txt"} for i in range(REPORT_LIST_LIMIT)]
    summary = {"run": 3, "finished": "now", "seconds": 1, "delta": {}, "users": [], "failures": {},
               "removed_this_run": {"count": REPORT_LIST_LIMIT + 7, "items": items, "at_target": "removed"}}
    text = write_run_report(dept, summary).read_text(encoding="utf-8")
    assert "removed at the target too" in text and f"{REPORT_LIST_LIMIT + 7} item(s)" in text
    assert "| anna | alt/049.txt |" in text and "and 7 more" in text


def test_status_shows_failures_by_batch(migrated):
    env = dict(os.environ, COLUMNS="200")
    result = subprocess.run(UMSTIEG + ["status", str(migrated.dept_file), "--json"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {b["batch"] for b in status["failed_batches"]} == migrated.ben_batches
    assert status["failed_batch_count"] == len(migrated.ben_batches)
    result = subprocess.run(UMSTIEG + ["status", str(migrated.dept_file)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "failures by batch" in result.stderr
    for batch in migrated.ben_batches:
        assert re.search(rf"│\s+{batch} │ ben\s+│\s+\d+ │ load_error \d+", result.stderr), result.stderr


def test_report_writes_a_named_snapshot_and_leaves_run_reports_alone(migrated):
    reports = migrated.tmp / "work" / "reports"
    before = {p.name: p.read_bytes() for p in reports.glob("*.md")}
    assert "latest.md" in before
    result = subprocess.run(UMSTIEG + ["report", str(migrated.dept_file)], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, COLUMNS="400"))
    assert result.returncode == 0, result.stderr
    path = Path(re.search(r"Report: (\S+\.md)", result.stderr).group(1))
    assert path.is_file() and re.fullmatch(r"status-\d{8}T\d{6}Z(-\d+)?\.md", path.name)
    assert path.with_suffix(".json").is_file()
    assert {p.name: p.read_bytes() for p in reports.glob("*.md") if p != path} == before   # nothing clobbered
    text = path.read_text(encoding="utf-8")
    rows = ledger_rows(migrated.dept_file)
    ben = [r for r in rows if r["owner"] == "ben"]
    assert "## Items by user and state" in text and re.search(r"^\| anna \|", text, re.M)
    assert re.search(rf"^\| ben \| .*\| {len(ben)} \|$", text, re.M)
    assert "## Failures by class" in text and f"| load_error | {len(ben)} |" in text
    assert "## Failures by batch" in text
    # the last run processed nothing, so none of its items failed; its line says so
    assert "## Last run" in text and "No item that run 2 processed is failed now." in text
    verdicts = {}
    for r in rows:
        if r["fidelity_verdict"]:
            verdicts[r["fidelity_verdict"]] = verdicts.get(r["fidelity_verdict"], 0) + 1
    assert verdicts, "no document was converted: the fidelity table cannot be checked"
    assert "## Fidelity verdicts" in text
    for verdict, n in verdicts.items():
        assert f"| {verdict} | {n} |" in text
    snapshot = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert snapshot["fidelity"] == verdicts and snapshot["last_run"]["id"] == 2
    second = subprocess.run(UMSTIEG + ["report", str(migrated.dept_file)], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, COLUMNS="400"))
    assert second.returncode == 0 and path.is_file()                          # a new one, the old one stays
    assert re.search(r"Report: (\S+\.md)", second.stderr).group(1) != str(path)


def test_the_last_runs_failures_are_in_the_snapshot(tmp_path):
    """A snapshot right after a run with failures shows them under that run."""
    from core.department import load_department
    from core.ledger import Item, Ledger, State
    from reports.migration import department_status, write_status_report
    dept = load_department(make_department(tmp_path, users=("anna",), docs_per_user=1, name="Kleinamt"))
    ledger = Ledger(dept.ledger_url)
    ledger.migrate()
    try:
        run = ledger.start_run(dept.name, "migrate")
        batch = ledger.start_batch(run, "anna", 1, 2, "here/1")
        with ledger.session() as s:
            for n, (state, reason) in enumerate([(State.FAILED, "extract_error"), (State.VERIFIED, None)]):
                s.add(Item(department=dept.name, source="homes", key=f"k{n}", kind="file", owner="anna",
                           target_owner="t-anna", location=f"f{n}.txt", target_stem=f"f{n}.txt", version="1",
                           state=state.value, reason=reason, message="permission denied" if reason else None,
                           batch_id=batch))
        ledger.finish_run(run, "completed", {})
        text = write_status_report(dept, department_status(dept, ledger)).read_text(encoding="utf-8")
    finally:
        ledger.close()
    last = text.split("## Last run", 1)[1].split("\n## ", 1)[0]
    assert f"Run {run} (migrate): completed" in last
    assert "| extract_error | 1 | permission denied |" in last


# --------------------------------------------------------- a PostgreSQL ledger with a password
@pytest.fixture(scope="module")
def postgres_with_password():
    """A PostgreSQL server that insists on a password (scram-sha-256): (URL without it, password)."""
    import glob
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bindirs:
        pytest.skip("PostgreSQL is not installed: run bin/setup")
    bindir = Path(bindirs[-1])
    base = Path(tempfile.mkdtemp(prefix="umstieg-test-pgpw-"))
    data = base / "data"
    data.mkdir()
    password = "op-" + os.urandom(6).hex()
    (base / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        for p in (base, data, base / "pw"):
            shutil.chown(p, "postgres")
    port = free_port()
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "scram-sha-256", "-U", "postgres",
                                 f"--pwfile={base / 'pw'}", "--no-sync"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                                 f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]),
                   check=True, capture_output=True)
    try:
        env = dict(os.environ, PGPASSWORD=password)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "ledger"],
                       check=True, capture_output=True, env=env)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/ledger", password
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def password_ledger(tmp_path, postgres_with_password, monkeypatch):
    """A department on the password-protected ledger, with a running run: 2 verified, 1 failed of 3."""
    from core.department import load_department
    from core.ledger import Item, Ledger, State
    url, password = postgres_with_password
    name = "pwamt" + os.urandom(3).hex()
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=1, name=name, ledger=url,
                                ledger_password="env:UMSTIEG_TEST_LEDGER_PW")
    monkeypatch.setenv("UMSTIEG_TEST_LEDGER_PW", password)
    ledger = Ledger(url, password=password)
    ledger.migrate()
    run = ledger.start_run(name, "migrate")
    ledger.note_run(run, todo=3)
    batch = ledger.start_batch(run, "anna", 1, 3, "here/1")
    with ledger.session() as s:
        for n, state in enumerate([State.VERIFIED, State.VERIFIED, State.FAILED]):
            s.add(Item(department=name, source="homes", key=f"k{n}", kind="file", owner="anna",
                       target_owner="t-anna", location=f"f{n}.txt", target_stem=f"f{n}.txt", version="1",
                       state=state.value, reason="load_error" if state is State.FAILED else None,
                       message="read-only" if state is State.FAILED else None, batch_id=batch))
    ledger.close()
    return load_department(dept_file), dept_file, password, batch


def test_status_and_report_read_a_ledger_that_needs_a_password(password_ledger):
    dept, dept_file, password, batch = password_ledger
    env = dict(os.environ, COLUMNS="200")
    result = subprocess.run(UMSTIEG + ["status", str(dept_file), "--json"], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["totals"] == {"verified": 2, "failed": 1}
    assert status["failed_batches"] == [{"batch": batch, "user": "anna", "failures": 1,
                                         "classes": {"load_error": 1}}]
    result = subprocess.run(UMSTIEG + ["report", str(dept_file)], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert Path(re.search(r"Report: (\S+\.md)", result.stderr).group(1)).is_file()
    assert password not in result.stdout + result.stderr

    del env["UMSTIEG_TEST_LEDGER_PW"]          # the reference cannot be resolved: a clear error, no trace
    result = subprocess.run(UMSTIEG + ["status", str(dept_file)], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 2 and "UMSTIEG_TEST_LEDGER_PW" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_progress_display_reads_a_ledger_that_needs_a_password(password_ledger, monkeypatch):
    from rich.console import Console
    from umstieg.commands import department as commands
    dept, _, password, _ = password_ledger
    out = io.StringIO()
    monkeypatch.setattr(commands, "console", Console(file=out, width=160, force_terminal=False))
    stop = threading.Event()
    watcher = threading.Thread(target=commands._watch_progress, args=(dept, stop))
    watcher.start()
    time.sleep(2)
    stop.set()
    watcher.join(10)
    assert not watcher.is_alive()
    shown = out.getvalue()
    assert "3/3" in shown and "verified 2, failed 1" in shown, shown
    assert password not in shown


def test_the_ledger_password_is_resolved_into_the_url(tmp_path, monkeypatch):
    """Without a server: the URL the commands connect with carries the resolved password."""
    from core.department import load_department
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=1,
                                ledger="postgresql+psycopg://op@127.0.0.1:9/ledger",
                                ledger_password="env:UMSTIEG_TEST_LEDGER_PW")
    monkeypatch.setenv("UMSTIEG_TEST_LEDGER_PW", "s3cret-Wert")
    ledger = load_department(dept_file).open_ledger()
    try:
        assert ledger.url.password == "s3cret-Wert"
        assert "s3cret-Wert" not in repr(ledger)
    finally:
        ledger.close()


# ------------------------------------------------------------------------------ prefect.yaml
def test_the_committed_prefect_yaml_is_generated_and_portable(tmp_path):
    committed = ROOT / "deployments" / "prefect.yaml"
    text = committed.read_text(encoding="utf-8")
    assert str(ROOT) not in text and not re.search(r"(^|[\s'\"])/(work|home|root|tmp)/", text), \
        "the committed prefect.yaml holds a path of the machine that generated it"
    out = tmp_path / "prefect.yaml"
    result = subprocess.run(UMSTIEG + ["deployments", "deployments/buergeramt.yaml", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == text, \
        "deployments/prefect.yaml is stale: regenerate it with `umstieg deployments deployments/buergeramt.yaml`"
    assert "umstieg deployments deployments/buergeramt.yaml\n" in text      # each department file named once
    document = yaml.safe_load(text)
    assert {d["parameters"]["department_file"] for d in document["deployments"]} == {"deployments/buergeramt.yaml"}
    assert sorted(d["entrypoint"] for d in document["deployments"]) == [
        f"flows/migrate.py:{f}" for f in ("assess", "migrate", "report", "rerun")]
