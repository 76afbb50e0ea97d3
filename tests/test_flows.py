"""Department migrations end to end as `umstieg run` does them with no Prefect server configured (the
embedded default: no server, no Prefect), real LibreOffice, real ledgers; Dask and deployments on a real
Prefect server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CORPUS, processes_using
from docgen import make_docx, make_heavy_docx
from helpers import (UMSTIEG, assert_target_matches_ledger, file_sha, frozen_offices, kill_mid_run, ledger_rows,
                     make_department, offices_reading, run_env, run_to_the_end, target_files, wait_until_verified)


@pytest.fixture(scope="module", autouse=True)
def _close_runtime_pools():
    yield
    from flows import runtime
    runtime.close_all()


def test_a_department_migrates_end_to_end(tmp_path):
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path)
    (tmp_path / "home" / "anna" / "Ablage" / "~$doc000.docx").write_bytes(b"\x05anna" + bytes(157))  # Word's lock file
    summary = migrate(str(dept_file))
    rows = assert_target_matches_ledger(dept_file, tmp_path)
    sources = sorted(p for p in (tmp_path / "home").rglob("*") if p.is_file())
    assert len(rows) == len(sources)
    lock = next(r for r in rows if r["location"] == "Ablage/~$doc000.docx")
    assert lock["state"] == "skipped" and lock["reason"] == "skipped_name"     # recorded, not moved
    rows = [r for r in rows if r is not lock]
    for r in rows:
        assert r["state"] == "verified" or r["reason"], r
    assert all(r["state"] == "verified" for r in rows)
    # Office files became ODF under the target login; text stayed text; one copy each
    anna = tmp_path / "target" / "t-anna"
    assert (anna / "Ablage" / "doc000.odt").is_file() and (anna / "Ablage" / "doc001.ods").is_file()
    assert (anna / "notes.txt").read_text(encoding="utf-8") == "Notizen von anna\n"
    assert not (anna / "Ablage" / "doc000.docx").exists()          # keep_original: never
    if CORPUS.is_dir():
        encrypted = next(r for r in rows if r["location"] == "testWORD_protected_passtika.docx")
        assert encrypted["conversion"] == "encrypted" and encrypted["state"] == "verified"
        assert (anna / "testWORD_protected_passtika.docx").is_file()   # moved unconverted, not lost
    assert summary["totals"] == {"verified": len(rows), "skipped": 1}
    converted = [r for r in rows if r["conversion"] == "converted"]
    assert converted and all(r["fidelity_verdict"] in ("identical", "minor", "review", "broken")
                             and 0 <= r["fidelity_score"] <= 100 for r in converted)
    report = Path(summary["report"])
    assert report.is_file() and "testamt" in report.read_text(encoding="utf-8")


def test_originals_travel_by_fidelity_policy(tmp_path):
    """keep_original: the Office original travels beside its ODF copy as the policy says."""
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=3,
                                conversion={"keep_original": "always", "originals_folder": "Originale"})
    migrate(str(dept_file))
    rows = assert_target_matches_ledger_with_originals(dept_file, tmp_path)
    converted = [r for r in rows if r["conversion"] == "converted"]
    assert converted and all(r["original_ref"] for r in converted)
    for r in converted:
        assert Path(r["original_ref"]).parent.name == "Originale"
        assert file_sha(Path(r["original_ref"])) == file_sha(tmp_path / "home" / "anna" / r["location"])

    below = make_department(tmp_path / "below", users=("anna",), docs_per_user=6,
                            conversion={"keep_original": "below_score", "keep_original_below": 100})
    migrate(str(below))
    rows = assert_target_matches_ledger_with_originals(below, tmp_path / "below")
    converted = [r for r in rows if r["conversion"] == "converted"]
    assert converted and all((r["original_ref"] is not None) == (r["fidelity_score"] < 100) for r in converted)


def assert_target_matches_ledger_with_originals(dept_file: Path, tmp_path: Path) -> list[dict]:
    rows = ledger_rows(dept_file)
    expected = sorted([Path(r["target_ref"]) for r in rows] + [Path(r["original_ref"]) for r in rows
                                                                  if r["original_ref"]])
    assert expected == target_files(tmp_path)
    return rows


def test_delta_moves_only_new_and_changed_items(tmp_path):
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=6)
    migrate(str(dept_file))
    before = {r["location"]: r for r in ledger_rows(dept_file)}
    untouched = tmp_path / "target" / "t-anna" / "Ablage" / "doc001.ods"
    untouched_mtime = untouched.stat().st_mtime_ns

    home = tmp_path / "home" / "anna" / "Ablage"
    make_docx(home / "doc000.docx", paragraphs=7, seed=1234)           # changed
    os.utime(home / "doc000.docx", (time.time() + 5, time.time() + 5))
    make_docx(home / "neu.docx", seed=77)                               # new
    (home / "doc002.pptx").unlink()                                     # deleted at the source
    summary = migrate(str(dept_file))

    after = {r["location"]: r for r in ledger_rows(dept_file)}
    assert after["Ablage/doc000.docx"]["change"] == "changed"
    assert after["Ablage/neu.docx"]["change"] == "new"
    assert after["Ablage/doc002.pptx"]["removed_at_source"] is True
    assert summary["delta"]["new"] == {"anna": 1} and summary["delta"]["changed"] == {"anna": 1}
    assert summary["delta"]["removed"] == {"anna": 1}
    assert summary["this_run"] == {"verified": 2}                      # only those two moved
    assert untouched.stat().st_mtime_ns == untouched_mtime
    assert after["Ablage/doc000.docx"]["target_digest"] != before["Ablage/doc000.docx"]["target_digest"]
    # deleted at the source: reported, but kept at the target (delete_at_target is off)
    assert (tmp_path / "target" / "t-anna" / "Ablage" / "doc002.odp").is_file()
    assert summary["removed_at_source"] == 1


def test_failures_are_recorded_and_rerun_retries_only_them(tmp_path):
    """gross.docx times out on both of its attempts on any machine: the LibreOffice converting it is
    stopped (frozen_offices) as soon as it has the document open, so it never answers."""
    from flows.migrate import migrate_body as migrate, rerun_body as rerun
    slow = tmp_path / "home" / "anna" / "gross.docx"
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=3,
                                conversion={"timeout": 10})
    make_heavy_docx(slow, paragraphs=20000)           # open in LibreOffice for seconds: time to stop it
    # ben's target folder is blocked by a file: every write for ben fails
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "t-ben").write_text("in the way")
    with frozen_offices(offices_reading("gross.docx", tmp_path), at_once=False, poll=0.005) as held:
        summary = migrate(str(dept_file))
    assert len(held.frozen) == 2, held.frozen          # the first attempt's LibreOffice, then its replacement's
    rows = {(r["owner"], r["location"]): r for r in ledger_rows(dept_file)}
    assert rows[("anna", "gross.docx")]["state"] == "failed"
    assert rows[("anna", "gross.docx")]["reason"] == "conversion_timeout"
    ben = [r for (owner, _), r in rows.items() if owner == "ben"]
    assert ben and all(r["state"] == "failed" and r["reason"] == "load_error" for r in ben)
    assert summary["failures"]["load_error"]["count"] == len(ben)
    others = [r for (owner, loc), r in rows.items() if owner == "anna" and loc != "gross.docx"]
    assert all(r["state"] == "verified" for r in others)                # the batch went on

    # fix one cause, rerun that class only: the timeout item stays failed and untouched
    (tmp_path / "target" / "t-ben").unlink()
    verified_before = {k: r["batch_id"] for k, r in rows.items() if r["state"] == "verified"}
    gross_before = rows[("anna", "gross.docx")]
    summary = rerun(str(dept_file), error_class="load_error")
    assert summary["delta"] == {"rerun": len(ben)}
    rows = {(r["owner"], r["location"]): r for r in ledger_rows(dept_file)}
    assert all(rows[k]["state"] == "verified" for k in rows if k[0] == "ben")
    assert rows[("anna", "gross.docx")] == gross_before     # the other class untouched: attempts, updated, batch
    assert {k: rows[k]["batch_id"] for k in verified_before} == verified_before   # not run again

    # fix the other cause (a longer timeout), rerun everything failed
    cfg = yaml.safe_load(dept_file.read_text())
    cfg["conversion"]["timeout"] = 120
    dept_file.write_text(yaml.safe_dump(cfg))
    rerun(str(dept_file))
    rows = assert_target_matches_ledger(dept_file, tmp_path)
    assert all(r["state"] == "verified" for r in rows)


def test_a_bad_department_file_names_the_field_and_runs_nothing(tmp_path):
    dept_file = make_department(tmp_path)
    cfg = yaml.safe_load(dept_file.read_text())
    cfg["users"].append({"source": "anna", "target": "t-anna2"})     # duplicate source
    cfg["conversion"]["timeout"] = "soon"
    cfg["conversion"]["wokers"] = 3
    dept_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = subprocess.run(UMSTIEG + ["run", str(dept_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    err = " ".join(result.stderr.split())
    assert "conversion.timeout" in err and "conversion.wokers" in err and "not a known setting" in err
    assert "'anna' is listed 2 times" in err
    assert f"{dept_file}:" in err                                        # file and line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "target").exists()


def test_secrets_must_be_references(tmp_path):
    from core.department import load_department
    from core.errors import ConfigError
    dept_file = make_department(tmp_path, ledger="postgresql+psycopg://umstieg@localhost/ledger",
                                ledger_password="hunter2")
    with pytest.raises(ConfigError) as exc:
        load_department(dept_file)
    assert "ledger_password" in str(exc.value) and "hunter2" not in str(exc.value)


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(tmp_path):
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=15)
    rt = tmp_path / "rt"
    env = run_env(UMSTIEG_RUNTIME_DIR=str(rt))
    started = kill_mid_run(dept_file, 5, env, timeout=180, poll=0.2)
    assert not [c for c in started.values() if "prefect.server.api.server:create_app" in c], \
        "a run with no Prefect server configured started one"
    # its LibreOffice workers end themselves: waited for, not given a fixed time (a busy machine)
    deadline = time.monotonic() + 120
    while processes_using(str(rt)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_using(str(rt)) == []
    rows = run_to_the_end(dept_file, tmp_path, env)
    sources = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert len(rows) == len(sources) and all(r["state"] == "verified" for r in rows)


def test_status_and_report_commands(tmp_path):
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=3)
    migrate(str(dept_file))
    result = subprocess.run(UMSTIEG + ["status", str(dept_file), "--json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    n = len([p for p in (tmp_path / "home").rglob("*") if p.is_file()])
    assert status["totals"] == {"verified": n}
    assert status["users"][0]["user"] == "anna" and status["users"][0]["verified"] == n
    result = subprocess.run(UMSTIEG + ["report", str(dept_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Report:" in result.stderr


def test_the_same_migration_on_a_postgresql_ledger(tmp_path, postgres_url):
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=4, ledger=postgres_url,
                                name="pgamt")
    summary = migrate(str(dept_file))
    rows = assert_target_matches_ledger(dept_file, tmp_path)
    assert all(r["state"] == "verified" for r in rows)
    assert summary["totals"] == {"verified": len(rows)}
    assert not (tmp_path / "work" / "ledger.sqlite").exists()          # it really used PostgreSQL
    again = migrate(str(dept_file))                                     # delta pass: nothing to do
    assert again["this_run"] == {} and sum(again["delta"]["unchanged"].values()) == len(rows)


def test_the_same_migration_on_a_dask_cluster(tmp_path, dask_cluster, prefect_server):
    """Chunks run in two Dask worker processes, each with its own LibreOffice pool."""
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=6, name="daskamt",
                                cluster={"address": dask_cluster}, conversion={"workers": 1})
    env = dict(os.environ, PREFECT_API_URL=prefect_server)
    result = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    rows = assert_target_matches_ledger(dept_file, tmp_path)
    sources = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert len(rows) == len(sources) and all(r["state"] == "verified" for r in rows)
    from core.department import load_department
    from core.ledger import Batch, Ledger
    from sqlalchemy import select
    ledger = Ledger(load_department(dept_file).ledger_url)
    with ledger.session() as s:
        workers = {b.worker for b in s.scalars(select(Batch))}
    ledger.close()
    assert len(workers) == 2, f"chunks ran in {workers}, not in both Dask workers"


def test_teams_deploy_departments_to_a_prefect_server(tmp_path, prefect_server):
    """`umstieg deployments` → `prefect deploy --all` on a real Prefect server → a process worker runs it."""
    root = Path(__file__).resolve().parents[1]
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=3, name="teamamt",
                                schedule={"cron": "0 22 * * 1-5", "timezone": "Europe/Berlin"})
    env = dict(os.environ, PREFECT_API_URL=prefect_server, UMSTIEG_HOME=str(root))
    prefect = [str(Path(sys.executable).parent / "prefect")]

    def cli(*args, timeout=180):
        result = subprocess.run(list(args), env=env, cwd=root, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    prefect_yaml = tmp_path / "prefect.yaml"
    cli(*UMSTIEG, "deployments", str(dept_file), "--out", str(prefect_yaml), "--work-pool", "teamtest")
    cli(*prefect, "work-pool", "create", "teamtest", "--type", "process")
    cli(*prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_yaml))
    listing = cli(*prefect, "deployment", "inspect", "umstieg-migrate/teamamt")
    assert "0 22 * * 1-5" in listing and "Europe/Berlin" in listing and str(dept_file) in listing

    for operators in ("umstieg-rerun/teamamt", "umstieg-assess/teamamt", "umstieg-report/teamamt"):
        listing = cli(*prefect, "deployment", "inspect", operators)
        assert str(dept_file) in listing and "0 22" not in listing           # run when asked, not scheduled

    cli(*prefect, "deployment", "run", "umstieg-migrate/teamamt")
    cli(*prefect, "worker", "start", "--pool", "teamtest", "--run-once", timeout=300)
    rows = assert_target_matches_ledger(dept_file, tmp_path)
    assert rows and all(r["state"] == "verified" for r in rows)
    cli(*prefect, "deployment", "run", "umstieg-report/teamamt")
    cli(*prefect, "worker", "start", "--pool", "teamtest", "--run-once", timeout=300)
    [snapshot] = (tmp_path / "work" / "reports").glob("status-*.md")
    assert "anna" in snapshot.read_text(encoding="utf-8")


def test_assess_inventories_without_moving_and_learns_the_rate(tmp_path):
    from flows.migrate import assess_body as assess, migrate_body as migrate
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=3)
    first = assess(str(dept_file))
    assert not (tmp_path / "target").exists() or not any((tmp_path / "target").iterdir())
    per_user = {u: len([p for p in (tmp_path / "home" / u).rglob("*") if p.is_file()]) for u in ("anna", "ben")}
    assert first["by_user"] == per_user and first["items"] == sum(per_user.values())
    assert first["by_format"]["docx"]["items"] >= 2 and first["by_format"]["txt"]["items"] == 2
    assert "no run measured yet" in first["estimate_basis"]
    assert sum(first["planning"].values()) == sum(per_user.values())        # every file planned
    if CORPUS.is_dir():
        assert first["risk_flags"].get("encrypted") == 1                    # the corpus pick
    assert all(Path(p).is_file() for p in first["scan_reports"].values())
    assert Path(first["report"]).is_file()
    assert first["estimated_seconds"] is None and "pilot" in first["estimated_seconds_basis"]
    markdown = Path(first["markdown"]).read_text(encoding="utf-8")
    assert f"{first['items']} item(s)" in markdown and "| docx |" in markdown and "Whole migration" in markdown
    migrate(str(dept_file))
    second = assess(str(dept_file))
    assert "measured" in second["estimate_basis"] and second["estimated_conversion_seconds"] > 0
    assert second["estimated_seconds"] > 0 and "items/s" in second["estimated_seconds_basis"]


def test_a_folder_that_cannot_be_listed_is_not_taken_for_deleted(tmp_path, monkeypatch):
    """A sub-folder that cannot be listed (a mount whose share went away answers EIO) shows as one
    failed item, and what was moved from it before is neither taken for deleted at the source nor
    removed at the target, even with delete_at_target."""
    import errno
    from flows import runtime
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path, docs_per_user=2, conversion={"enabled": False}, delete_at_target=True)
    home = tmp_path / "home"
    (home / "anna" / "Privat").mkdir()
    (home / "anna" / "Privat" / "brief.txt").write_text("Brief\n", encoding="utf-8")
    try:
        migrate(str(dept_file))
        assert all(r["state"] == "verified" for r in ledger_rows(dept_file))
        real_scandir = os.scandir

        def scandir(path):                     # the OS's answer for a dead network mount (root reads anything else)
            # the folder source lists through directory handles: name the folder a handle is open on
            where = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else str(path)
            if where.endswith("/anna/Privat"):
                raise OSError(errno.EIO, "Input/output error", where)
            return real_scandir(path)
        monkeypatch.setattr(os, "scandir", scandir)
        summary = migrate(str(dept_file))
    finally:
        runtime.close_all()
    rows = {(r["owner"], r["location"]): r for r in ledger_rows(dept_file)}
    brief = rows[("anna", "Privat/brief.txt")]
    assert brief["state"] == "verified" and not brief["removed_at_source"]
    assert (tmp_path / "target" / "t-anna" / "Privat" / "brief.txt").is_file()
    assert summary["removed_at_source"] == 0
    marker = rows[("anna", "Privat/")]
    assert marker["state"] == "failed" and marker["reason"] == "unlisted_folder"
    assert "Input/output error" in (marker["message"] or "") or "could not be listed" in marker["message"]


def test_the_visual_tier_leaves_thumbnails_for_the_dashboard(tmp_path):
    from flows import runtime
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=2,
                                conversion={"fidelity": ["structural", "visual"]})
    try:
        migrate(str(dept_file))
    finally:
        runtime.close_all()
    from core.department import load_department
    from core.ledger import Item, Ledger
    from sqlalchemy import select
    dept = load_department(dept_file)
    ledger = Ledger(dept.ledger_url)
    with ledger.session() as s:
        converted = [i for i in s.scalars(select(Item)) if i.conversion == "converted"]
    ledger.close()
    assert converted
    thumbs = dept.work_dir / "reports" / "thumbs"
    for item in converted:
        assert (item.fidelity or {}).get("visual"), item.location
        assert (thumbs / f"{item.sha256[:16]}-source.png").is_file()
        assert (thumbs / f"{item.sha256[:16]}-output.png").is_file()
        # and the viewer's large pictures beside them, named in the ledger's record
        views = item.fidelity["visual"]["views"]
        assert views == {side: f"{item.sha256[:16]}-{side}-view.png" for side in ("source", "output")}
        assert all((thumbs / name).stat().st_size > 1000 for name in views.values())


# ------------------------------------------------------------- failures a person can act on
def error_lines(stderr: str) -> list[str]:
    """What a failed command told the person, without its progress display."""
    return [line for line in stderr.splitlines() if line.strip() and not line.lstrip().startswith(("testamt", "pgamt"))]


@pytest.fixture
def own_postgres():
    """A password-protected PostgreSQL of this test's own (it may stop it)."""
    from servers.postgres import PostgresServer, postgres_missing
    if reason := postgres_missing():
        pytest.skip(reason)
    server = PostgresServer().create()
    try:
        yield server
    finally:
        server.remove()


def test_a_wrong_ledger_password_is_one_line_and_exit_2(tmp_path, own_postgres):
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=1, name="pgamt", ledger=own_postgres.url,
                                ledger_password="env:UMSTIEG_TEST_PG_PW")
    env = dict(os.environ, UMSTIEG_TEST_PG_PW="not-" + own_postgres.password, COLUMNS="200")
    result = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    told = error_lines(result.stderr)
    assert len(told) <= 2 and "Traceback" not in result.stderr, result.stderr
    assert "refused the login" in told[0] and "ledger_password" in told[0] and "127.0.0.1" in told[0]
    assert own_postgres.password not in result.stderr
    assert target_files(tmp_path) == []                                  # nothing moved
    verbose = subprocess.run(UMSTIEG + ["-v", "run", str(dept_file)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr and "refused the login" in verbose.stderr


def test_postgresql_gone_mid_run_says_so_and_the_next_run_resumes(tmp_path, own_postgres):
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=12, name="pgamt",
                                ledger=own_postgres.url, ledger_password="env:UMSTIEG_TEST_PG_PW",
                                limits={"chunk_size": 2})
    env = dict(os.environ, UMSTIEG_TEST_PG_PW=own_postgres.password, COLUMNS="200")
    os.environ["UMSTIEG_TEST_PG_PW"] = own_postgres.password          # for ledger_rows here
    try:
        proc = subprocess.Popen(UMSTIEG + ["run", str(dept_file)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        wait_until_verified(proc, dept_file, 3, timeout=300, poll=0.2)
        own_postgres.stop()
        stderr = proc.communicate(timeout=600)[1].decode()
        assert proc.returncode == 2, stderr
        told = error_lines(stderr)
        assert "Traceback" not in stderr and len(told) <= 3, stderr
        assert any("cannot be reached" in line and "the next run goes on" in line for line in told), stderr

        own_postgres.start()
        again = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=env, capture_output=True, text=True,
                               timeout=900)
        assert again.returncode == 0, again.stderr
        rows = assert_target_matches_ledger(dept_file, tmp_path)
        assert len(rows) == len([p for p in (tmp_path / "home").rglob("*") if p.is_file()])
        assert all(r["state"] == "verified" for r in rows)
    finally:
        os.environ.pop("UMSTIEG_TEST_PG_PW", None)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/small (root only; unmounted afterwards)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a full disk is made with a small tmpfs: needs root and the right to mount")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_work_dir_stops_the_run_with_what_to_do_and_the_next_run_resumes(tmp_path, small_disk):
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=2, work_dir=str(small_disk / "work"),
                                conversion={"enabled": False}, limits={"chunk_size": 1})
    (tmp_path / "home" / "anna" / "zz-gross.bin").write_bytes(os.urandom(6 * 2**20))     # more than the disk
    env = dict(os.environ, COLUMNS="200")
    first = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 2, first.stderr
    told = error_lines(first.stderr)
    assert "Traceback" not in first.stderr and len(told) <= 2, first.stderr
    assert f"no space left in work_dir {small_disk / 'work'}" in told[0] and "at the source" not in first.stderr
    rows = {r["location"]: r for r in ledger_rows(dept_file)}
    assert rows["zz-gross.bin"]["state"] != "verified" and rows["zz-gross.bin"]["reason"] is None   # not blamed
    for r in rows.values():                  # what is recorded as moved is there, once
        if r["state"] == "verified":
            assert file_sha(Path(r["target_ref"])) == r["target_digest"]

    # the ledger's own file cannot grow either: said the same way
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
        except OSError:
            pass
    full = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr
    assert "no space left" in full.stderr

    filler.unlink()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = assert_target_matches_ledger(dept_file, tmp_path)
    assert all(r["state"] == "verified" for r in rows)
    assert len(rows) == len([p for p in (tmp_path / "home").rglob("*") if p.is_file()])


def test_environment_settings_are_checked_and_named(tmp_path):
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=1)
    for value in ("-3", "two"):
        result = subprocess.run(UMSTIEG + ["convert", str(tmp_path / "home"), str(tmp_path / "out")],
                                env=dict(os.environ, UMSTIEG_WORKERS=value, COLUMNS="200"),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"UMSTIEG_WORKERS='{value}'" in result.stderr and "whole number of at least 0" in result.stderr
    result = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=dict(os.environ, UMSTIEG_RECYCLE_ABOVE_MB="lots"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "UMSTIEG_RECYCLE_ABOVE_MB='lots'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and target_files(tmp_path) == []      # checked before anything moved


# ---------------------------------------------------------------------------- a busy machine
def test_umstieg_run_succeeds_while_every_core_is_busy(tmp_path):
    """Migration machines are busy by nature (LibreOffice takes every core): a run must not depend on
    anything starting within a deadline. Asserts success, never time."""
    from core.settings import usable_cpus
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=3)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * usable_cpus())]
    try:
        time.sleep(1)
        assert all(h.poll() is None for h in hogs)
        result = subprocess.run(UMSTIEG + ["run", str(dept_file)], capture_output=True, text=True, timeout=1800,
                                env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
        assert all(h.poll() is None for h in hogs)                 # the machine stayed busy throughout
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert result.returncode == 0, result.stderr
    rows = assert_target_matches_ledger(dept_file, tmp_path)
    assert len(rows) == len([p for p in (tmp_path / "home").rglob("*") if p.is_file()])
    assert all(r["state"] == "verified" for r in rows)


def test_with_a_prefect_server_a_problem_found_at_run_time_is_one_line_too(tmp_path, prefect_server):
    """With PREFECT_API_URL set the run goes through Prefect (a flow run on the server), and a
    problem its checks find is still told in one line, without Prefect's traceback."""
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=1, name="srvamt")
    shutil.rmtree(tmp_path / "home")                          # the source root is gone at run time
    env = dict(os.environ, PREFECT_API_URL=prefect_server, COLUMNS="200")
    result = subprocess.run(UMSTIEG + ["run", str(dept_file)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "nothing was moved" in result.stderr, result.stderr
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings
    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["umstieg-migrate"])))
    assert any(r.parameters.get("department_file") == str(dept_file) and r.state.is_failed() for r in runs)
