"""Files that are not converted: the plain way (extract, load and verify in one go, a hundred
records per commit, chunks in worker processes) keeps every guarantee of the per-item way."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from helpers import (assert_target_matches_ledger, file_sha, kill_mid_run, ledger_rows, make_department, run_env,
                     run_to_the_end)


def small_files(home: Path, users: tuple[str, ...], per_user: int) -> None:
    """`per_user` small files of distinct content per user, in a few folders (nothing to convert)."""
    for user in users:
        for i in range(per_user):
            folder = home / user / f"Akte{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"notiz{i:04d}.txt").write_bytes(f"{user} {i}\n".encode() * (1 + i % 50))


def test_sigkill_inside_a_commit_window_then_rerun_loses_and_duplicates_nothing(tmp_path):
    """Files that are not converted are recorded a hundred per commit, in worker processes: a run
    killed while some are at the target but not yet recorded leaves no worker behind, and the
    next run ends with every file exactly once at the target, verified, the same bytes."""
    users = ("anna", "ben", "carla")
    dept_file = make_department(tmp_path, users=users, docs_per_user=0, conversion={"enabled": False},
                                limits={"chunk_size": 250})
    shutil.rmtree(tmp_path / "home")
    small_files(tmp_path / "home", users, 600)
    env = run_env()
    workers = kill_mid_run(dept_file, 100, env, timeout=300, poll=0.05)
    _, alive = psutil.wait_procs(list(workers), timeout=120)     # a bound for a hang, not a speed
    assert alive == [], "worker processes went on after their run was killed"
    rows = run_to_the_end(dept_file, tmp_path, env)
    sources = {p.relative_to(tmp_path / "home"): p for p in (tmp_path / "home").rglob("*") if p.is_file()}
    assert len(rows) == len(sources) == 1800 and all(r["state"] == "verified" for r in rows)
    for r in rows:
        source = sources[Path(r["owner"]) / r["location"]]
        assert Path(r["target_ref"]) == tmp_path / "target" / f"t-{r['owner']}" / r["location"]
        assert r["target_digest"] == file_sha(source)


def test_files_that_are_not_converted_keep_every_fact_of_the_per_item_way(tmp_path):
    """The plain way (one commit per hundred files) records what the step-by-step way records:
    the digest, the size, the source's mtime on the copy, and no staged copy left behind."""
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=0, conversion={"enabled": False})
    shutil.rmtree(tmp_path / "home")
    small_files(tmp_path / "home", ("anna",), 30)
    (tmp_path / "home" / "anna" / "Akte0" / "notiz0000.txt").chmod(0)       # unreadable: fails, the rest go on
    summary = migrate(str(dept_file))
    rows = {r["location"]: r for r in ledger_rows(dept_file)}
    unreadable = rows.pop("Akte0/notiz0000.txt")
    if os.geteuid() != 0:                    # root reads anything
        assert unreadable["state"] == "failed" and unreadable["message"].startswith("extract: ")
        assert summary["totals"] == {"verified": 29, "failed": 1}
    for location, r in rows.items():
        source = tmp_path / "home" / "anna" / location
        target = Path(r["target_ref"])
        assert r["state"] == "verified" and r["target_digest"] == file_sha(source) == file_sha(target)
        assert abs(target.stat().st_mtime_ns - source.stat().st_mtime_ns) < 1000    # a float of seconds
        assert r["batch_id"] is not None
    from core.department import load_department
    dept = load_department(dept_file)
    with dept.open_ledger().session() as s:
        from sqlalchemy import select
        from core.ledger import Item
        facts = s.execute(select(Item.sha256, Item.size, Item.staged_path, Item.attempts, Item.seconds,
                                 Item.location)).all()
    for sha256, size, staged, attempts, seconds, location in facts:
        if location in rows:
            source = tmp_path / "home" / "anna" / location
            assert (sha256, size, staged, attempts) == (file_sha(source), source.stat().st_size, None, 1)
            assert set(seconds) == {"extract", "load", "verify"}
    assert not [p for p in (dept.work_dir / "staging").rglob("*") if p.is_file()]


def soffice_children() -> list[psutil.Process]:
    """LibreOffice processes started by this (test) process."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "soffice" in child.name() or "soffice" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def test_a_department_that_converts_takes_its_other_files_the_plain_way(tmp_path):
    """Conversion on, files whose names are no Office format's: recorded as the conversion step
    records them (`unsupported`), and no LibreOffice is started for them; every byte lands."""
    from flows import runtime
    from flows.migrate import migrate_body as migrate
    runtime.close_all()
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=0)
    shutil.rmtree(tmp_path / "home")
    small_files(tmp_path / "home", ("anna", "ben"), 60)
    (tmp_path / "home" / "anna" / "scan.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(3000))
    before = {p.pid for p in soffice_children()}          # (other tests' pools may live on in this process)
    summary = migrate(str(dept_file))
    started = [p for p in soffice_children() if p.pid not in before]
    assert started == [], "LibreOffice was started for files it has nothing to do with"
    assert summary["totals"] == {"verified": 121}
    rows = assert_target_matches_ledger(dept_file, tmp_path)
    assert {(r["conversion"], r["message"]) for r in rows} == {("unsupported", None)}
    runtime.close_all()


def test_bytes_that_are_an_office_document_are_converted_whatever_the_name(tmp_path):
    """A plain-looking name does not decide: a Word document named `.txt` is converted, an
    encrypted one named `.dat` travels unchanged with the reason a person reads, both exactly as
    under Office names; the other files around them go on."""
    from msoffcrypto.format.ooxml import OOXMLFile

    from docgen import make_docx
    from flows import runtime
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path, users=("anna",), docs_per_user=0)
    shutil.rmtree(tmp_path / "home")
    small_files(tmp_path / "home", ("anna",), 20)
    folder = tmp_path / "home" / "anna" / "Post"
    folder.mkdir()
    make_docx(folder / "brief.docx", paragraphs=4)
    shutil.copy(folder / "brief.docx", folder / "brief-kopie.txt")
    with open(folder / "brief.docx", "rb") as f, open(folder / "geheim.docx", "wb") as out:
        OOXMLFile(f).encrypt("geheim", out)
    shutil.copy(folder / "geheim.docx", folder / "geheim-kopie.dat")
    try:
        migrate(str(dept_file))
    finally:
        runtime.close_all()
    rows = {r["location"]: r for r in ledger_rows(dept_file)}
    assert len(rows) == 24 and {r["state"] for r in rows.values()} == {"verified"}
    for office, disguised in (("Post/brief.docx", "Post/brief-kopie.txt"),
                              ("Post/geheim.docx", "Post/geheim-kopie.dat")):
        assert (rows[disguised]["conversion"], rows[disguised]["message"]) == \
            (rows[office]["conversion"], rows[office]["message"])
    assert rows["Post/brief-kopie.txt"]["conversion"] == "converted"
    assert rows["Post/brief-kopie.txt"]["target_ref"].endswith("brief-kopie.txt.odt")    # the whole name kept
    assert rows["Post/geheim-kopie.dat"]["conversion"] == "encrypted"
    assert "password" in rows["Post/geheim-kopie.dat"]["message"]
    assert file_sha(Path(rows["Post/geheim-kopie.dat"]["target_ref"])) == file_sha(folder / "geheim-kopie.dat")
    assert {rows[f"Akte{i % 4}/notiz{i:04d}.txt"]["conversion"] for i in range(20)} == {"unsupported"}


def local_sink(root: Path):
    from sinks.localdir import LocalDir
    from sinks.localdir_config import LocalDirTarget
    return LocalDir(LocalDirTarget(root=root))


def test_files_put_to_be_published_take_their_real_names_only_when_published(tmp_path):
    """The local target's put_later/publish (core.plugins.PublishesTogether): nothing is under a
    real name before publish; publish gives each file its name with its bytes and time, says
    which it could not name (the others go on), and leaves no temporary file behind."""
    from core.plugins import PublishesTogether
    sink = local_sink(tmp_path / "target")
    assert isinstance(sink, PublishesTogether)
    src = tmp_path / "src"
    files = {"Akte/a.txt": b"erste", "Akte/b.txt": b"zweite" * 1000, "Post/c.txt": b"dritte"}
    refs = {}
    (tmp_path / "target" / "anna" / "Post" / "c.txt").mkdir(parents=True)     # a folder holds the name
    (tmp_path / "target" / "anna" / "Post" / "c.txt" / "drin").write_bytes(b"x")
    for rel, data in files.items():
        src.write_bytes(data)
        refs[rel] = sink.put_later("anna", rel, src, mtime=1_600_000_000)
    assert not Path(refs["Akte/a.txt"]).exists() and not Path(refs["Akte/b.txt"]).exists()
    assert len(list((tmp_path / "target").rglob("*.umstieg-partial"))) == 3
    problems = sink.publish()
    assert list(problems) == [refs["Post/c.txt"]] and "cannot write" in problems[refs["Post/c.txt"]]
    for rel in ("Akte/a.txt", "Akte/b.txt"):
        assert Path(refs[rel]).read_bytes() == files[rel]
        assert Path(refs[rel]).stat().st_mtime == 1_600_000_000
    assert (tmp_path / "target" / "anna" / "Post" / "c.txt" / "drin").read_bytes() == b"x"
    assert list((tmp_path / "target").rglob("*.umstieg-partial")) == []
    assert sink.publish() == {}


def test_a_process_killed_before_publishing_leaves_no_file_under_a_real_name(tmp_path):
    """Killed between put_later and publish: only temporary files are left, and the next put of
    the same name replaces them (the name of a temporary file is the same at every put)."""
    script = (f"import sys; sys.path[:0] = {[str(Path(__file__).parents[1])]!r}\n"
              "from pathlib import Path\n"
              "from sinks.localdir import LocalDir\n"
              "from sinks.localdir_config import LocalDirTarget\n"
              f"sink = LocalDir(LocalDirTarget(root=Path({str(tmp_path / 'target')!r})))\n"
              f"src = Path({str(tmp_path / 'src')!r}); src.write_bytes(b'halb')\n"
              "for n in range(3): sink.put_later('anna', f'Akte/{n}.txt', src)\n"
              "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    folder = tmp_path / "target" / "anna" / "Akte"
    assert sorted(p.name.endswith(".umstieg-partial") for p in folder.iterdir()) == [True] * 3
    sink = local_sink(tmp_path / "target")
    (tmp_path / "src").write_bytes(b"ganz")
    for n in range(3):
        sink.put("anna", f"Akte/{n}.txt", tmp_path / "src")
    assert sorted(p.name for p in folder.iterdir()) == ["0.txt", "1.txt", "2.txt"]
    assert {p.read_bytes() for p in folder.iterdir()} == {b"ganz"}


def test_a_runs_progress_is_summed_from_its_chunks_not_counted_from_its_items(tmp_path):
    """Each chunk keeps what became of its items with its batch; a run's progress (the progress bar,
    the dashboard's run list) is their sum, read one row per chunk. A ledger whose batches were
    closed before they kept counts is counted from the items, as before."""
    from sqlalchemy import event, update

    from core.department import load_department
    from core.ledger import Batch
    from flows.migrate import migrate_body as migrate
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=0, conversion={"enabled": False},
                                limits={"chunk_size": 7})
    shutil.rmtree(tmp_path / "home")
    small_files(tmp_path / "home", ("anna", "ben"), 40)
    (tmp_path / "home" / "anna" / "Akte1" / "notiz0001.txt").chmod(0)
    summary = migrate(str(dept_file))
    ledger = load_department(dept_file).open_ledger()
    run_id = summary["run"]
    statements: list[str] = []
    event.listen(ledger.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert ledger.run_progress(run_id) == summary["this_run"]
    assert statements and not [s for s in statements if "FROM items" in s or "JOIN items" in s]
    with ledger.session() as s:
        batches = s.execute(update(Batch).where(Batch.run_id == run_id).values(counts=None)).rowcount
    assert batches == 2 * 6                                  # 40 files a user in chunks of 7
    assert ledger.run_progress(run_id) == summary["this_run"]       # an older ledger: from the items
    ledger.close()
