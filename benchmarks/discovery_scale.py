"""Discovery alone at scale: the first listing and the no-op delta pass, wall time and peak RSS.

`discover()` (flows/discovery.py) runs in a fresh process per pass, on a generated tree of empty
files (discovery reads names, sizes and times, never bytes) for three users, against a fresh
SQLite ledger: pass `first` finds every file new, pass `noop` (the same ledger again, nothing
changed) finds nothing to do, pass `change` renames one folder, touches 1 % of the files and
deletes one folder before listing again. Each pass reports wall seconds, the peak RSS of its
process (ru_maxrss) and the RSS before discovery started (interpreter and imports), so that what
discovery itself holds is the difference.

    .venv/bin/python benchmarks/discovery_scale.py [--files 60000,200000,1000000] [--keep DIR]
        [--passes first,noop,noop]

Targets (issue 19, 2 cores): a no-op delta of 60,000 items under 5 s and of a million under 60 s,
peak RSS under 500 MB at a million, and memory that does not grow with the item count.
The whole command (`umstieg run`, with copying) is measured by benchmarks/million_files.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
USERS = ["user0", "user1", "user2"]
EXTENSIONS = (".txt", ".pdf", ".jpg", ".png", ".csv", ".log", ".xml", ".json")


def generate(home: Path, total: int) -> None:
    """`total` empty files spread over the users, 100 per folder, folders two levels deep."""
    for i in range(total):
        user = USERS[i % len(USERS)]
        n = i // len(USERS)
        folder = home / user / f"akte{n // 10000:03d}" / f"vorgang{(n // 100) % 100:02d}"
        if n % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"dok{n:07d}{EXTENSIONS[n % len(EXTENSIONS)]}", os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)


def change(home: Path) -> dict:
    """A realistic delta: one folder renamed per user, 1 % of the files touched, one folder deleted."""
    touched = renamed = deleted = 0
    for user in USERS:
        top = home / user
        aktes = sorted(p for p in top.iterdir() if p.is_dir())
        first = sorted(aktes[0].iterdir())
        first[0].rename(first[0].with_name(first[0].name + "-neu"))
        renamed += sum(1 for _ in first[0].with_name(first[0].name + "-neu").iterdir())
        gone = sorted(aktes[-1].iterdir())[-1]
        deleted += sum(1 for _ in gone.iterdir())
        shutil.rmtree(gone)
        for i, path in enumerate(sorted(top.rglob("*.txt"))):
            if i % 12 == 0:
                path.write_bytes(b"x")
                touched += 1
    return {"renamed": renamed, "touched": touched, "deleted": deleted}


def department(base: Path, home: Path) -> Path:
    config = {"name": "scale", "work_dir": str(base / "work"),
              "users": [{"source": u, "target": f"t-{u}"} for u in USERS],
              "sources": [{"name": "homes", "type": "folder", "root": str(home)}],
              "target": {"type": "localdir", "root": str(base / "target")},
              "conversion": {"enabled": False}}
    path = base / "scale.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def measure(dept_file: str) -> None:
    """(child process) one discovery pass; prints its figures as JSON."""
    sys.path.insert(0, str(ROOT))
    from flows import runtime
    from flows.discovery import discover
    dept = runtime.department(dept_file)
    ledger = runtime.ledger(dept)
    run_id = ledger.start_run(dept.name, "benchmark")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    found = discover(dept, ledger, run_id)
    wall = time.perf_counter() - started
    ledger.finish_run(run_id, "completed")
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = after.ru_maxrss
    totals = {k: sum(v.values()) for k, v in found.as_dict().items()}
    print(json.dumps({"wall": wall, "cpu": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
                      "rss_mb": peak / 1024, "base_mb": before / 1024, **totals,
                      "todo": sum(len(v) for v in found.todo.values())}))


def run_pass(dept: Path, label: str, files: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, __file__, "--measure", str(dept)], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{label}: discovery failed:\n{out.stderr[-3000:]}")
    result = {"label": label, "files": files, **json.loads(out.stdout.strip().splitlines()[-1])}
    print(f"{files:>9} {label:<7} {result['wall']:8.2f} s  {files / result['wall']:9.0f} items/s  "
          f"CPU {result['cpu']:7.2f} s  "
          f"peak RSS {result['rss_mb']:6.0f} MB (imports {result['base_mb']:4.0f} MB)  "
          f"new {result['new']} changed {result['changed']} unchanged {result['unchanged']} "
          f"removed {result['removed']} todo {result['todo']}  load {os.getloadavg()[0]:.2f}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="60000,200000,1000000", help="comma-separated tree sizes")
    ap.add_argument("--passes", default="first,noop,noop", help="comma-separated: first, noop, change")
    ap.add_argument("--keep", type=Path, help="keep the trees (and ledgers) in this folder")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(args.measure)
    base_all = args.keep or Path(tempfile.mkdtemp(prefix="umstieg-bench-discovery-"))
    try:
        for files in (int(f) for f in args.files.split(",")):
            base = base_all / f"n{files}"
            home = base / "home"
            if not home.is_dir():
                started = time.perf_counter()
                generate(home, files)
                print(f"generated {files} files in {time.perf_counter() - started:.1f} s", flush=True)
            dept = department(base, home)
            for label in args.passes.split(","):
                if label == "first":
                    shutil.rmtree(base / "work", ignore_errors=True)
                elif label == "change":
                    print(f"changed: {change(home)}", flush=True)
                run_pass(dept, label, files)
    finally:
        if args.keep is None:
            shutil.rmtree(base_all, ignore_errors=True)


if __name__ == "__main__":
    main()
