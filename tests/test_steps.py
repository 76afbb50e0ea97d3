"""Item steps that need no server: transient retries, target names, identity checks."""

from __future__ import annotations

from collections import Counter

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
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0008"
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
