"""`umstieg convert` end to end, as a user runs it: a real process, real workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from conftest import processes_using, runtime_dir
from docgen import make_docx, make_heavy_docx, make_mixed_set
from helpers import UMSTIEG, frozen_offices, offices_reading

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], rt: Path, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, UMSTIEG_RUNTIME_DIR=str(rt), COLUMNS="160")
    return subprocess.run(UMSTIEG + args, capture_output=True, text=True, env=env, timeout=600, **kw)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_converts_the_sample_folder_and_resumes(tmp_path):
    rt = runtime_dir("cli-samples")
    out = tmp_path / "out"
    first = run(["convert", str(ROOT / "samples" / "documents"), str(out), "--workers", "2"], rt)
    assert first.returncode == 0, first.stderr
    got = {r["path"]: r for r in records(out)}
    assert set(got) == {"Anschreiben.docx", "LIESMICH.txt", "Memo.rtf", "Protokoll.odt",
                        "Referat IT/Haushalt 2027.xlsx", "Referat IT/Pilot.pptx"}
    assert got["Anschreiben.docx"]["outcome"] == "converted"
    assert got["Referat IT/Haushalt 2027.xlsx"]["output"] == str(out / "Referat IT" / "Haushalt 2027.ods")
    assert got["Protokoll.odt"]["outcome"] == "passthrough"
    assert got["LIESMICH.txt"]["outcome"] == "unsupported"
    assert (out / "Referat IT" / "Pilot.odp").is_file() and (out / "Memo.odt").is_file()
    assert "converted" in first.stderr and "results.jsonl" in first.stderr      # summary printed

    # second run: nothing is converted again
    second = run(["convert", str(ROOT / "samples" / "documents"), str(out), "--workers", "1"], rt)
    assert second.returncode == 0, second.stderr
    again = {r["path"]: r for r in records(out)}
    assert len(again) == 6                                            # still one line per document
    for path in ("Anschreiben.docx", "Memo.rtf", "Referat IT/Pilot.pptx"):
        assert again[path]["finished"] == got[path]["finished"]       # not redone
    assert "already converted earlier" in second.stderr.replace("\n", " ")


def test_changed_document_is_converted_again(tmp_path):
    rt = runtime_dir("cli-delta")
    src, out = tmp_path / "src", tmp_path / "out"
    make_mixed_set(src, 3)
    assert run(["convert", str(src), str(out), "--workers", "1"], rt).returncode == 0
    before = {r["path"]: r for r in records(out)}
    make_docx(src / "doc000.docx", paragraphs=9, seed=99)           # new bytes
    assert run(["convert", str(src), str(out), "--workers", "1"], rt).returncode == 0
    after = {r["path"]: r for r in records(out)}
    assert after["doc000.docx"]["sha256"] != before["doc000.docx"]["sha256"]
    assert after["doc000.docx"]["finished"] > before["doc000.docx"]["finished"]
    assert after["doc001.xlsx"]["finished"] == before["doc001.xlsx"]["finished"]


def test_failures_give_exit_code_and_count(tmp_path):
    rt = runtime_dir("cli-fail")
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    make_docx(src / "good.docx")
    (src / "broken.docx").write_bytes(b"PK\x03\x04 truncated")
    (src / "empty.xls").write_bytes(b"")
    result = run(["convert", str(src), str(out), "--workers", "1"], rt)
    assert result.returncode == 1
    assert "2 document(s) failed" in result.stderr
    outcomes = {r["path"]: r["outcome"] for r in records(out)}
    assert outcomes == {"good.docx": "converted", "broken.docx": "unreadable", "empty.xls": "unreadable"}


def test_same_stem_in_one_folder_does_not_overwrite(tmp_path):
    rt = runtime_dir("cli-stems")
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    make_docx(src / "Bericht.docx", seed=1)
    make_docx(src / "Bericht.rtf.docx", seed=2)
    make_docx(src / "Bericht.DOCX", seed=3)
    assert run(["convert", str(src), str(out), "--workers", "1"], rt).returncode == 0
    names = sorted(p.name for p in out.iterdir() if p.suffix == ".odt")
    assert names == ["Bericht.DOCX.odt", "Bericht.docx.odt", "Bericht.rtf.odt"]


def test_sigterm_and_ctrl_c_leave_no_libreoffice_behind(tmp_path):
    """The run is held while it is signalled, on any machine: the LibreOffice that opens halt.docx is
    stopped (frozen_offices) and cannot answer, and the run's timeout is longer than the test's, so
    the run cannot end before the signal whatever the speed of the other conversions."""
    src = tmp_path / "src"
    make_mixed_set(src, 40)
    make_heavy_docx(src / "halt.docx", paragraphs=15000)     # open in LibreOffice for seconds: time to stop it
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        rt = runtime_dir(f"cli-{sig.name}")
        out = tmp_path / f"out-{sig.name}"
        env = dict(os.environ, UMSTIEG_RUNTIME_DIR=str(rt), UMSTIEG_TIMEOUT="3600")
        with frozen_offices(offices_reading("halt.docx", out), at_once=False, poll=0.005) as held:
            # a shell without job control (CI) starts background jobs with SIGINT ignored, and Python
            # then keeps ignoring it: give the child the default disposition, as a terminal would
            proc = subprocess.Popen(UMSTIEG + ["convert", str(src), str(out), "--workers", "2"], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            # held, and some documents done meanwhile by the other worker: waited for while the run lives
            while not (held.frozen and (out / "results.jsonl").exists()
                       and (out / "results.jsonl").read_text().count("\n") >= 3):
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
            assert proc.poll() is None and len(processes_using(str(rt))) >= 4
            proc.send_signal(sig)
            proc.wait(60)
        assert proc.returncode != 0
        # SIGKILL gives umstieg no chance: each worker notices its pool is gone and ends itself
        ended = time.monotonic() + 60                 # bounds a failure only: the check ends when they have
        while processes_using(str(rt)) and time.monotonic() < ended:
            time.sleep(0.1)
        assert processes_using(str(rt)) == [], f"LibreOffice outlived {sig.name}"
        done = records(out)
        assert len(done) >= 3 and all(Path(r["output"]).is_file() for r in done)
        assert "halt.docx" not in {r["path"] for r in done}       # it was still held when the signal came
        if sig != signal.SIGKILL:
            assert not list(out.glob("**/.umstieg-*"))
        # and the run resumes: a second pass completes the rest without redoing the first ones
        rerun = subprocess.run(UMSTIEG + ["convert", str(src), str(out), "--workers", "2"], env=env,
                               capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
        assert len(records(out)) == 41
        assert not list(out.glob("**/.umstieg-*"))              # stale staging folders removed


def test_missing_libreoffice_is_a_clear_error(tmp_path):
    env = dict(os.environ, UMSTIEG_SOFFICE="/nonexistent/soffice")
    src = tmp_path / "src"
    src.mkdir()
    result = subprocess.run(UMSTIEG + ["convert", str(src), str(tmp_path / "out")], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "LibreOffice" in result.stderr and "Traceback" not in result.stderr


def test_a_test_session_fails_when_a_server_it_started_outlives_it(tmp_path):
    """The end-of-session check covers every process a session starts, not only LibreOffice: here a
    server that detached itself (its own session, its parent gone, as pg_ctl's and smbd's do)."""
    pidfile = tmp_path / "server.pid"
    (tmp_path / "test_leaves_a_server.py").write_text(f'''
import subprocess, sys, time
from pathlib import Path

def test_starts_a_server_and_forgets_it():
    # double fork: the server's parent exits at once, as a daemon's does
    subprocess.run([sys.executable, "-c", "import os, subprocess, sys; "
                    "p = subprocess.Popen([sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', '0'], "
                    "start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
                    "open({str(pidfile)!r}, 'w').write(str(p.pid))"], check=True)
    assert Path({str(pidfile)!r}).read_text()
''', encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                             str(tmp_path / "test_leaves_a_server.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    pid = int(pidfile.read_text())
    assert result.returncode == 1, result.stdout + result.stderr
    assert "outlived them" in result.stdout and f"{pid} python" in result.stdout and "http.server" in result.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE    # and ended it
