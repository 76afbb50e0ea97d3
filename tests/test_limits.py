"""When a department may run and how many chunks touch one host at once; one run at a time."""

from __future__ import annotations

import socket
from datetime import datetime, time as dtime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from core.department import Schedule, SecretRef
from core.errors import ConfigError, RunInProgress
from core.ledger import STALE_AFTER, Item, Ledger, Run, State
from flows.limits import Chunk, ChunkGate, OutsideWindow, Window, host_of

BERLIN = ZoneInfo("Europe/Berlin")


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 30, hour, minute, tzinfo=BERLIN)


# ------------------------------------------------------------------------------------ window
def test_a_window_within_one_day():
    w = Window(dtime(8), dtime(17, 30), BERLIN)
    assert not w.is_open(at(7, 59))
    assert w.is_open(at(8)) and w.is_open(at(17, 29))
    assert not w.is_open(at(17, 30))


def test_a_window_over_midnight():
    w = Window(dtime(19), dtime(6), BERLIN)
    assert w.is_open(at(23)) and w.is_open(at(0, 30)) and w.is_open(at(5, 59))
    assert not w.is_open(at(6)) and not w.is_open(at(12))


def test_the_window_is_read_in_the_departments_zone():
    w = Window(dtime(19), dtime(6), BERLIN)
    # 17:30 UTC is 18:30 in Berlin (winter): closed; 18:30 UTC is 19:30 there: open
    assert not w.is_open(datetime(2026, 11, 30, 17, 30, tzinfo=timezone.utc))
    assert w.is_open(datetime(2026, 11, 30, 18, 30, tzinfo=timezone.utc))


def test_no_window_is_always_open_and_a_closed_one_refuses_with_what_to_do():
    assert Window(None, None, BERLIN).is_open(at(3))

    class Dept:
        name = "buergeramt"
    w = Window(dtime(19), dtime(6), BERLIN)
    with pytest.raises(OutsideWindow) as err:
        w.refuse_if_closed(Dept, at(12, 5))
    text = str(err.value)
    assert "19:00–06:00 Europe/Berlin" in text and "12:05" in text and "--ignore-window" in text
    w.refuse_if_closed(Dept, at(20))                       # open: no error


def test_an_empty_window_is_a_configuration_error():
    with pytest.raises(ValidationError, match="never open"):
        Schedule(window_start=dtime(8), window_end=dtime(8))


# -------------------------------------------------------------------------------------- gate
def test_the_gate_holds_each_hosts_limit():
    gate = ChunkGate(source_limit=2, target_limit=1)
    a1 = Chunk("anna", 1, (1,), "files.example", frozenset({"cloud.example"}))
    a2 = Chunk("anna", 2, (2,), "files.example", frozenset({"mail.example"}))
    b1 = Chunk("ben", 1, (3,), "files.example", frozenset({"cloud.example"}))
    c1 = Chunk("carl", 1, (4,), "files.example", frozenset({"mail.example"}))
    waiting = [a1, b1, a2, c1]
    assert gate.next_fitting(waiting) is a1
    gate.take(a1)
    waiting.remove(a1)
    assert gate.next_fitting(waiting) is a2               # b1 would be a second writer on cloud.example
    gate.take(a2)
    waiting.remove(a2)
    assert gate.next_fitting(waiting) is None             # two readers on files.example already
    gate.release(a1)
    assert gate.next_fitting(waiting) is b1
    assert gate.most_reading["files.example"] == 2 and gate.most_writing["cloud.example"] == 1


def test_hosts_of_configured_sources_and_targets():
    from core.department import ImapSource, LocalDirTarget, NextcloudTarget, S3Source, SmbSource
    assert host_of(SmbSource(name="s", server="FS01.amt.local", share="home", username="u",
                             password="env:P")) == "fs01.amt.local"
    assert host_of(NextcloudTarget(url="https://cloud.amt.example/", username="svc",
                                   password="env:P")) == "cloud.amt.example"
    assert host_of(S3Source(name="b", bucket="bucket", endpoint_url="http://127.0.0.1:9000")) == "127.0.0.1"
    assert host_of(S3Source(name="b", bucket="bucket")) == "s3.amazonaws.com"
    assert host_of(ImapSource(name="m", host="imap.amt.example", master_user="admin", password="env:P")) \
        == "imap.amt.example"
    assert host_of(LocalDirTarget(root="/srv/target")) == "local"
    from sources.ews_config import EwsSource
    from sources.export_config import ExportSource
    from sources.m365_config import M365Source
    from sources.onedrive_config import OneDriveSource
    assert host_of(EwsSource(name="ex", url="https://MAIL.amt.example/EWS/Exchange.asmx", username="svc",
                             password="env:P")) == "mail.amt.example"
    graph = dict(name="g", tenant_id="t", client_id="c", client_secret="env:S")
    assert host_of(M365Source(**graph)) == host_of(OneDriveSource(**graph)) == "graph.microsoft.com"
    assert host_of(ExportSource(name="pst", root="/srv/pst")) == "local"


# ------------------------------------------------------------------------------- one run at a time
@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    led.migrate()
    yield led
    led.close()


def test_a_second_run_of_a_department_refuses_while_the_first_lives(ledger):
    first = ledger.start_run("amt", "migrate")
    with pytest.raises(RunInProgress) as err:
        ledger.start_run("amt", "rerun")
    assert f"run {first}" in str(err.value) and "Nothing was moved" in str(err.value)
    with ledger.session() as s:
        runs = {r.id: r.status for r in s.query(Run)}
    assert runs[first] == "running" and sorted(runs.values()) == ["refused", "running"]
    other = ledger.start_run("another-amt", "migrate")           # another department is not held up
    ledger.finish_run(first, "completed", {})
    ledger.finish_run(other, "completed", {})
    ledger.finish_run(ledger.start_run("amt", "migrate"), "completed", {})


def _foreign_run(ledger, heartbeat_age: float) -> int:
    with ledger.session() as s:
        run = Run(department="amt", flow="migrate", summary={"host": "elsewhere-" + socket.gethostname(), "pid": 1},
                  heartbeat=datetime.now(timezone.utc) - timedelta(seconds=heartbeat_age))
        s.add(run)
        s.flush()
        return run.id


def test_a_run_on_another_host_holds_the_department_while_it_beats(ledger):
    alive = _foreign_run(ledger, heartbeat_age=30)
    with pytest.raises(RunInProgress):
        ledger.start_run("amt", "migrate")
    assert ledger.close_abandoned_runs("amt") == []
    with ledger.session() as s:
        assert s.get(Run, alive).status == "running"


def test_a_run_on_another_host_that_stopped_beating_is_interrupted(ledger):
    silent = _foreign_run(ledger, heartbeat_age=STALE_AFTER + 60)
    mine = ledger.start_run("amt", "migrate")                      # not refused
    with ledger.session() as s:
        run = s.get(Run, silent)
        assert run.status == "interrupted" and "stopped saying it is alive" in run.summary["error"]
    ledger.beat(mine)
    with ledger.session() as s:
        assert s.get(Run, mine).heartbeat is not None


def test_a_dead_local_run_is_interrupted_not_refusing(ledger):
    with ledger.session() as s:
        run = Run(department="amt", flow="migrate", summary={"host": socket.gethostname(), "pid": 2 ** 22 + 7})
        s.add(run)
        s.flush()
        dead = run.id
    ledger.start_run("amt", "migrate")
    with ledger.session() as s:
        assert s.get(Run, dead).status == "interrupted"


def test_rerun_selection_leaves_items_deleted_at_the_source_alone(ledger):
    from flows.steps import select_failed
    run = ledger.start_run("amt", "migrate")
    with ledger.session() as s:
        for key, removed in (("a", False), ("b", True)):
            s.add(Item(department="amt", source="homes", key=key, kind="file", owner="anna", target_owner="t-anna",
                       location=f"{key}.docx", target_stem=key, version="1", size=1, state=State.FAILED.value,
                       reason="load_error",
                       removed_at_source=removed, run_id=run))
    assert [i.key for i in select_failed(ledger, "amt")] == ["a"]


# ----------------------------------------------------------------------------------- secrets
def test_an_environment_secret_resolves_and_a_missing_one_says_what_to_export(monkeypatch):
    monkeypatch.setenv("UMSTIEG_TEST_SECRET", "s3cr3t-value")
    ref = SecretRef._check("env:UMSTIEG_TEST_SECRET")
    value = ref.resolve()
    assert value.get_secret_value() == "s3cr3t-value" and "s3cr3t" not in repr(value) + str(value)
    monkeypatch.delenv("UMSTIEG_TEST_SECRET")
    with pytest.raises(ConfigError, match="export UMSTIEG_TEST_SECRET"):
        ref.resolve()


def test_a_prefect_block_name_prefect_cannot_have_is_refused():
    with pytest.raises(ValueError, match="lowercase"):
        SecretRef._check("prefect-secret:Nextcloud_Password")
    assert SecretRef._check("prefect-secret:nextcloud-password") == "prefect-secret:nextcloud-password"


def test_a_prefect_secret_block_resolves_from_the_server(prefect_server):
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        Secret(value="from-the-block").save("umstieg-test-secret", overwrite=True)
        assert SecretRef._check("prefect-secret:umstieg-test-secret").resolve().get_secret_value() \
            == "from-the-block"
        with pytest.raises(ConfigError, match="does not exist"):
            SecretRef._check("prefect-secret:no-such-block").resolve()


def test_the_converter_limit_caps_each_hosts_pool(tmp_path):
    from core.department import Department
    from flows.runtime import pool_settings
    base = dict(name="amt", work_dir=tmp_path, users=[{"source": "a", "target": "a"}],
                sources=[{"name": "homes", "type": "folder", "root": tmp_path}],
                target={"type": "localdir", "root": tmp_path / "t"}, conversion={"workers": 3})
    assert pool_settings(Department(**base)).workers == 3
    assert pool_settings(Department(**base, limits={"converter": 1})).workers == 1
    assert pool_settings(Department(**base)).memory_limit_mb == 6144
    limited = {**base, "conversion": {"workers": 3, "memory_limit_mb": 2048}}
    assert pool_settings(Department(**limited)).memory_limit_mb == 2048


# ------------------------------------------------------------------------- in a real migration
@pytest.fixture(scope="module", autouse=True)
def _close_runtime_pools():
    yield
    from flows import runtime
    runtime.close_all()


def text_department(tmp_path, users=("anna", "ben", "carl"), files=6, **overrides):
    """A department of plain files (nothing to convert: no LibreOffice needed)."""
    import yaml
    home = tmp_path / "home"
    for user in users:
        for i in range(files):
            (home / user / f"notiz-{i}.txt").parent.mkdir(parents=True, exist_ok=True)
            (home / user / f"notiz-{i}.txt").write_text(f"{user} {i}\n" * 50, encoding="utf-8")
    config = {"name": "grenzamt", "work_dir": str(tmp_path / "work"),
              "users": [{"source": u, "target": f"t-{u}"} for u in users],
              "sources": [{"name": "homes", "type": "folder", "root": str(home)}],
              "target": {"type": "localdir", "root": str(tmp_path / "target")},
              "conversion": {"workers": 1}, "limits": {"chunk_size": 1}, **overrides}
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _batches(dept_file):
    from core.department import load_department
    from core.ledger import Batch
    dept = load_department(dept_file)
    led = Ledger(dept.ledger_url)
    try:
        with led.session() as s:
            return [(b.started, b.finished) for b in s.query(Batch).order_by(Batch.started)]
    finally:
        led.close()


def test_a_source_limit_of_one_runs_one_chunk_at_a_time(tmp_path):
    from flows.migrate import migrate_body as migrate
    dept_file = text_department(tmp_path, limits={"chunk_size": 1, "source": 1})
    summary = migrate(str(dept_file))
    assert summary["this_run"] == {"verified": 18}
    batches = _batches(dept_file)
    assert len(batches) == 18
    for (_, finished), (started, _) in zip(batches, batches[1:]):
        assert started >= finished, "two chunks read from the one source host at once"


def test_a_run_outside_its_window_moves_nothing_unless_told(tmp_path, monkeypatch):
    from flows import limits
    from flows.migrate import migrate_body as migrate
    dept_file = text_department(tmp_path, schedule={"timezone": "Europe/Berlin", "window_start": "19:00",
                                                    "window_end": "06:00"})
    monkeypatch.setattr(limits, "clock", lambda zone: at(12).astimezone(zone))
    with pytest.raises(OutsideWindow, match="19:00–06:00"):
        migrate(str(dept_file))
    assert not (tmp_path / "target").exists()             # refused before anything was listed or moved
    summary = migrate(str(dept_file), ignore_window=True)
    assert summary["this_run"] == {"verified": 18}


def test_when_the_window_closes_no_chunk_starts_and_the_next_run_goes_on(tmp_path, monkeypatch):
    from flows import limits
    from flows.migrate import migrate_body as migrate
    dept_file = text_department(tmp_path, schedule={"timezone": "Europe/Berlin", "window_start": "19:00",
                                                    "window_end": "06:00"})
    asked = []

    def clock(zone):                       # 05:59 for the start and the first round of chunks, then 06:00
        asked.append(1)
        return (at(5, 59) if len(asked) <= 2 else at(6)).astimezone(zone)
    monkeypatch.setattr(limits, "clock", clock)
    summary = migrate(str(dept_file))
    left = summary["left_for_next_run"]
    started = 2                            # two chunks in flight per LibreOffice worker (1 worker)
    assert summary["this_run"] == {"verified": started}
    assert left["items"] == 18 - started and "closed" in left["why"]
    report = Path(summary["report"]).read_text(encoding="utf-8")
    assert f"{18 - started} item(s) in {18 - started} chunk(s) did not start" in report
    monkeypatch.setattr(limits, "clock", lambda zone: at(23).astimezone(zone))
    again = migrate(str(dept_file))
    assert again["this_run"] == {"verified": 18 - started}
    assert "left_for_next_run" not in again
    assert len(list((tmp_path / "target").rglob("*.txt"))) == 18


def test_umstieg_run_refuses_while_another_run_of_the_department_lives(tmp_path):
    import os
    import subprocess
    import sys
    from core.department import load_department
    dept_file = text_department(tmp_path, users=("anna",), files=1)
    dept = load_department(dept_file)
    dept.work_dir.mkdir(parents=True, exist_ok=True)
    led = Ledger(dept.ledger_url)
    led.migrate()
    with led.session() as s:                  # a run of this very test process: alive on this host
        s.add(Run(department=dept.name, flow="migrate", summary={"host": socket.gethostname(), "pid": os.getpid()},
                  heartbeat=datetime.now(timezone.utc)))
    led.close()
    result = subprocess.run([sys.executable, "-m", "umstieg", "run", str(dept_file)], capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, COLUMNS="200"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is still running" in result.stderr and "Nothing was moved" in result.stderr
    assert not [f for f in (tmp_path / "target").rglob("*") if f.is_file()]


def test_a_chunk_that_failed_transiently_runs_again_and_others_do_not(tmp_path, monkeypatch):
    """With no Prefect server the chunks run on this process's threads, retried as the Prefect chunk
    task is: after a TransientError (a server said "not now" for the whole chunk), not after any
    other failure."""
    from core.errors import TransientError
    from flows import migrate as flows_migrate
    from flows.migrate import migrate_body
    dept_file = text_department(tmp_path, users=("anna", "ben"), files=2, limits={"chunk_size": 2})
    real = flows_migrate.process_chunk
    calls: list[tuple[str, int]] = []

    def flaky(dept_file, run_id, owner, number, item_ids):
        calls.append((owner, number))
        if owner == "anna" and calls.count((owner, number)) == 1:
            raise TransientError("the target said 503 for the whole chunk")
        return real(dept_file, run_id, owner, number, item_ids)
    monkeypatch.setattr(flows_migrate, "process_chunk", flaky)
    monkeypatch.setattr(flows_migrate, "CHUNK_RETRY_WAITS", (0.1, 0.1, 0.1))
    summary = migrate_body(str(dept_file))
    assert summary["this_run"] == {"verified": 4}
    assert calls.count(("anna", 1)) == 2 and calls.count(("ben", 1)) == 1

    (tmp_path / "home" / "ben" / "notiz-9.txt").write_text("neu\n", encoding="utf-8")

    def broken(dept_file, run_id, owner, number, item_ids):
        calls.append((owner, -number))
        raise RuntimeError("a bug, not a blip")
    monkeypatch.setattr(flows_migrate, "process_chunk", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        migrate_body(str(dept_file))
    assert calls.count(("ben", -1)) == 1                       # not retried
    led = Ledger(f"sqlite:///{tmp_path / 'work' / 'ledger.sqlite'}")
    try:
        with led.session() as s:
            last = s.query(Run).order_by(Run.id.desc()).first()
            assert last.status == "failed" and "a bug" in last.summary["error"]
    finally:
        led.close()


def test_chunks_are_made_as_they_are_handed_out_each_id_once_users_in_turn(tmp_path):
    """The run's chunks (flows.migrate._ChunkFeed): every id of the todo in exactly one chunk, a
    chunk reads from one source, the users' chunks come in turn, and nothing is read from the
    ledger before the first chunk is asked for."""
    from sqlalchemy import event

    from core.department import load_department
    from flows.migrate import _ChunkFeed
    from helpers import make_department
    home = str(tmp_path / "home")
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=0, limits={"chunk_size": 3},
                                sources=[{"name": "homes", "type": "folder", "root": home, "target_folder": "Home"},
                                         {"name": "akten", "type": "folder", "root": home, "target_folder": "Akten"}])
    dept = load_department(dept_file)
    ledger = dept.open_ledger()
    ledger.migrate()
    todo: dict[str, list[int]] = {"anna": [], "ben": []}
    source_of: dict[int, str] = {}
    with ledger.session() as s:
        for n in range(17):
            for owner in ("anna", "ben"):
                if owner == "ben" and n >= 5:
                    continue
                source = "akten" if n % 3 == 0 else "homes"
                item = Item(department=dept.name, source=source, key=f"{owner}/{n}", kind="file", owner=owner,
                            target_owner=f"t-{owner}", location=f"{n}.txt", target_stem=f"{n}.txt", version="1")
                s.add(item)
                s.flush()
                todo[owner].append(item.id)
                source_of[item.id] = source
    statements: list[str] = []
    event.listen(ledger.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    feed = _ChunkFeed(dept, ledger, todo)
    assert statements == [] and feed
    chunks = []
    while (chunk := feed.next()) is not None:
        chunks.append(chunk)
    assert not feed
    assert sorted(i for c in chunks for i in c.item_ids) == sorted(todo["anna"] + todo["ben"])
    for c in chunks:
        assert 1 <= len(c.item_ids) <= 3 and len({source_of[i] for i in c.item_ids}) == 1
    owners = [c.owner for c in chunks]
    assert owners[:4] == ["anna", "ben", "anna", "ben"]          # in turn while both have chunks
    assert [c.number for c in chunks if c.owner == "anna"] == list(range(1, owners.count("anna") + 1))
    ledger.close()
