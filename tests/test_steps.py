"""Item steps that need no server: transient retries, target names, identity checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from core.department import identity_problems
from core.errors import TransientError
from flows.steps import with_retries
from sources.fileshare import odf_stem


def test_transient_failures_are_retried_with_the_servers_wait():
    calls, waits = [], []

    def flaky(x):
        calls.append(x)
        if len(calls) == 1:
            raise TransientError("429 too many requests", retry_after=7)
        if len(calls) == 2:
            raise TransientError("503")
        return "ok"

    assert with_retries(flaky, 1, waits=(1.0, 2.0, 4.0), sleep=waits.append) == "ok"
    assert calls == [1, 1, 1] and waits == [7, 2.0]


def test_persistent_transient_failures_end_as_failures():
    waits = []

    def down():
        raise TransientError("503")

    with pytest.raises(TransientError):
        with_retries(down, waits=(1.0, 2.0), sleep=waits.append)
    assert waits == [1.0, 2.0]


def test_other_errors_are_not_retried():
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError):
        with_retries(broken, sleep=lambda s: None)
    assert calls == [1]


def test_odf_names_never_collide():
    listing = ["a/Bericht.doc", "a/Bericht.docx", "a/Plan.xlsx", "b/Bericht.docx"]
    siblings = Counter((loc.rsplit("/", 1)[0], loc.rsplit("/", 1)[1].rsplit(".", 1)[0]) for loc in listing)
    stems = [odf_stem(loc, siblings) for loc in listing]
    assert stems == ["a/Bericht.doc", "a/Bericht.docx", "a/Plan", "b/Bericht"]
    assert len(set(stems)) == len(stems)


def test_identity_map_problems():
    assert identity_problems([("a", "x"), ("b", "y")], []) == []
    assert identity_problems([("a", "x"), ("a", "y")], []) == ["source user 'a' is listed 2 times"]
    problems = identity_problems([("a", "x"), ("b", "x")], [])
    assert len(problems) == 1 and "target user 'x' receives 2 source users" in problems[0]
    assert identity_problems([("a", "x"), ("b", "x")], ["x"]) == []


def test_ledger_schema_migrates_forward_keeping_rows(tmp_path):
    """A ledger written by the first schema opens with the newest one, rows intact."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text
    from core.ledger import MIGRATIONS, Ledger
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO items (department, source, key, kind, owner, target_owner, location, "
                          "target_stem, version, state, attempts, removed_at_source, discovered, updated) VALUES "
                          "('d', 's', 'k', 'file', 'o', 't', 'a.docx', 'a', '1:2', 'verified', 1, 0, "
                          "'2026-01-01', '2026-01-01')"))
    engine.dispose()
    ledger = Ledger(url)
    ledger.migrate()
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0009"
        row = conn.execute(text("SELECT key, state, fidelity, meta, target_path, renamed FROM items")).one()
    assert tuple(row) == ("k", "verified", None, None, None, None)   # lands at its location, as before
    ledger.close()


def test_many_outcomes_are_recorded_together_or_not_at_all(tmp_path):
    """`record_many` (the bulk mail path: one commit per hundred messages) writes all its changes,
    merges step timings like `record`, and leaves every item as it was when one change fails."""
    from core.ledger import Item, Ledger, State
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    with ledger.session() as s:
        items = [Item(department="amt", source="imap", key=f"k{i}", kind="message", owner="anna",
                      target_owner="anna", location="INBOX", target_stem=f"k{i}", version="1",
                      seconds={"extract": 0.5}) for i in range(3)]
        s.add_all(items)
        s.flush()
        ids = [i.id for i in items]
    ledger.record_many([(ids[0], {"state": State.LOADED, "target_ref": "imap://a", "step_seconds": {"load": 0.1}}),
                        (ids[1], {"state": State.VERIFIED, "attempts": 2})])
    got = {i.id: i for i in ledger.items(ids)}
    assert (got[ids[0]].state, got[ids[0]].target_ref) == ("loaded", "imap://a")
    assert got[ids[0]].seconds == {"extract": 0.5, "load": 0.1}
    assert (got[ids[1]].state, got[ids[1]].attempts) == ("verified", 2)
    assert got[ids[2]].state == "discovered"
    with pytest.raises(KeyError):
        ledger.record_many([(ids[2], {"state": State.VERIFIED}), (10_000, {"state": State.VERIFIED})])
    assert ledger.item(ids[2]).state == "discovered"
    ledger.close()


def test_runs_whose_process_is_gone_are_marked_interrupted(tmp_path):
    import subprocess
    import sys
    import os
    import socket
    from sqlalchemy import select
    from core.ledger import Ledger, Run, now
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = {"host": socket.gethostname(), "pid": os.getpid()}
    facts = [("amt", {**here, "pid": dead.pid}),                       # killed
             ("amt", {"host": "elsewhere", "pid": dead.pid}),          # not seen here, and beating
             ("amt", here),                                            # this live process
             ("other", {**here, "pid": dead.pid})]                     # another department
    with ledger.session() as s:
        rows = [Run(department=d, flow="migrate", summary=f, heartbeat=now()) for d, f in facts]
        s.add_all(rows)
        s.flush()
        ids = [r.id for r in rows]
    assert ledger.close_abandoned_runs("amt") == [ids[0]]                            # ids[2]: this live process
    with ledger.session() as s:
        status = {r.id: r.status for r in s.scalars(select(Run))}
        assert "ended without closing" in s.get(Run, ids[0]).summary["error"]
    assert status == {ids[0]: "interrupted", ids[1]: "running", ids[2]: "running", ids[3]: "running"}
    ledger.close()


def test_a_put_cut_off_midway_leaves_nothing_once_the_item_is_put_again(tmp_path, monkeypatch):
    """A run killed while the local target writes a file leaves its temporary file; putting the
    item again (what the next run does) removes it."""
    import sinks.localdir as localdir
    from core.department import LocalDirTarget
    sink = localdir.LocalDir(LocalDirTarget(root=tmp_path / "target"))
    src = tmp_path / "bescheid.odt"
    src.write_bytes(b"odf bytes" * 1000)
    real_replace = localdir.os.replace

    def killed(*args):
        raise SystemExit("killed")                 # nothing after this point runs, as under SIGKILL
    monkeypatch.setattr(localdir.os, "replace", killed)
    with pytest.raises(SystemExit):
        sink.put("anna", "Ablage/bescheid.odt", src)
    folder = tmp_path / "target" / "anna" / "Ablage"
    assert [p.name for p in folder.iterdir() if p.name.endswith(".umstieg-partial")]    # left behind
    monkeypatch.setattr(localdir.os, "replace", real_replace)
    ref = sink.put("anna", "Ablage/bescheid.odt", src)
    assert sorted(p.name for p in folder.iterdir()) == ["bescheid.odt"]
    assert sink.verify(ref, sink.digest(src)) is None


def _ledger_with_items(tmp_path, n: int):
    from core.ledger import Item, Ledger
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    with ledger.session() as s:
        rows = [Item(department="amt", source="homes", key=f"anna/f{i}", kind="file", owner="anna",
                     target_owner="anna", location=f"f{i}", target_stem=f"f{i}", version="1",
                     seconds={"extract": 0.5}) for i in range(n)]
        s.add_all(rows)
        s.flush()
        ids = [r.id for r in rows]
    return ledger, ids


def _columns(item) -> dict:
    return {c: getattr(item, c) for c in ("state", "sha256", "size", "target_ref", "meta", "seconds", "attempts",
                                          "reason", "message")}


def test_advance_returns_the_item_as_the_ledger_holds_it(tmp_path):
    """`advance` records a step and gives the in-memory item the very values recorded (timings
    merged, states as their values), so no step keeps a hand-made copy of what it wrote."""
    from core.ledger import State
    ledger, ids = _ledger_with_items(tmp_path, 1)
    item = ledger.item(ids[0])
    got = ledger.advance(item, State.EXTRACTED, sha256="ab" * 32, size=12, meta={"mtime": 1.5},
                         step_seconds={"extract": 0.25})
    assert got is item
    assert _columns(item) == _columns(ledger.item(ids[0]))
    assert item.state == "extracted" and item.seconds == {"extract": 0.25}
    ledger.advance(item, State.LOADED, target_ref="/t/f0", step_seconds={"load": 0.1})
    assert _columns(item) == _columns(ledger.item(ids[0]))
    assert item.seconds == {"extract": 0.25, "load": 0.1}
    ledger.close()


def test_a_commit_window_records_every_n_steps_and_what_is_left_at_its_end(tmp_path):
    """Steps queued in a window reach the ledger `every` at a time and at the end of the block,
    also when the block fails; until then the ledger keeps the item's earlier state."""
    from core.ledger import State
    ledger, ids = _ledger_with_items(tmp_path, 5)
    items = ledger.items(ids)
    with pytest.raises(RuntimeError):
        with ledger.window(every=2) as window:
            window.advance(items[0], State.VERIFIED, target_ref="/t/f0")
            assert ledger.item(ids[0]).state == "discovered"          # queued, not yet recorded
            assert items[0].state == "verified"                       # the item in memory has it
            window.advance(items[1], State.VERIFIED, target_ref="/t/f1")
            assert [ledger.item(i).state for i in ids[:2]] == ["verified", "verified"]
            window.fail(items[2], "read_error", "permission denied", "extract", attempts=1)
            assert ledger.item(ids[2]).state == "discovered"
            raise RuntimeError("the chunk broke off")
    assert _columns(items[2]) == _columns(ledger.item(ids[2]))
    assert (items[2].state, items[2].reason, items[2].message) == ("failed", "read_error",
                                                                   "extract: permission denied")
    assert [ledger.item(i).state for i in ids[3:]] == ["discovered", "discovered"]
    ledger.close()


def test_a_put_again_after_a_kill_reuses_the_same_temporary_name(tmp_path, monkeypatch):
    """What a killed put leaves is overwritten and renamed by the next put of the same file, in
    a folder the sink already made, without listing the folder."""
    import sinks.localdir as localdir
    from core.department import LocalDirTarget
    sink = localdir.LocalDir(LocalDirTarget(root=tmp_path / "target"))
    src = tmp_path / "a.txt"
    src.write_bytes(b"first")
    sink.put("anna", "Ablage/a.txt", src)
    real_replace = localdir.os.replace

    def killed(*args):
        raise SystemExit("killed")
    monkeypatch.setattr(localdir.os, "replace", killed)
    src.write_bytes(b"second version")
    with pytest.raises(SystemExit):
        sink.put("anna", "Ablage/b.txt", src)
    monkeypatch.setattr(localdir.os, "replace", real_replace)
    folder = tmp_path / "target" / "anna" / "Ablage"
    assert len([p for p in folder.iterdir() if p.name.endswith(".umstieg-partial")]) == 1
    ref = sink.put("anna", "Ablage/b.txt", src, mtime=1_000_000.0)
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt"]
    assert Path(ref).read_bytes() == b"second version" and Path(ref).stat().st_mtime == 1_000_000.0
    import shutil
    shutil.rmtree(folder)                               # the folder goes away under the sink: made again
    sink.put("anna", "Ablage/a.txt", src)
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]
