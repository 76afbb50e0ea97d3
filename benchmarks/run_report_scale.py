"""The run report alone at scale: `run_summary` + `write_run_report` on a generated ledger.

A no-op `umstieg run` of a million files spends most of its time after discovery, in the run
report (reports/migration.py). This measures that part alone, without a tree to list: a fresh
ledger (alembic schema) is filled in bulk with SQL, in batches of plain INSERTs, with `--items`
items of three users as a finished department holds them: verified files with the meta a folder
source records (mtime, inode) from an earlier run's batches, and a sprinkling of what the report
lists: failed items of a few reasons, renamed files, files with sharing facts (granted and not
carried over), links that were not moved, encrypted documents. Then, in a fresh process per pass,
a no-op run is started and `run_summary` + `write_run_report` are timed, with the peak RSS of that
process (ru_maxrss) and its RSS before the report (interpreter, imports): what the report holds is
the difference.

    .venv/bin/python benchmarks/run_report_scale.py [--items 1000000] [--keep DIR] [--passes 2]
        [--url postgresql+psycopg://...]   # default: a SQLite file under DIR

`--keep DIR` keeps (and reuses) the generated ledger. `--profile` prints the slowest functions
of the report (cProfile) for the first pass.
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
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
USERS = ["user0", "user1", "user2"]
EXTENSIONS = (".txt", ".pdf", ".jpg", ".png", ".csv", ".log", ".xml", ".json")
BATCH = 200
#: every Nth item is one of the listed kinds (failed, renamed, shared, not moved, encrypted)
FAILED_EVERY, RENAMED_EVERY, SHARED_EVERY, LINK_EVERY, ENCRYPTED_EVERY = 997, 1999, 4999, 9973, 19997


def department(base: Path, url: str | None) -> Path:
    config = {"name": "scale", "work_dir": str(base / "work"),
              "users": [{"source": u, "target": f"t-{u}"} for u in USERS],
              "sources": [{"name": "homes", "type": "folder", "root": str(base / "home")}],
              "target": {"type": "localdir", "root": str(base / "target")},
              "conversion": {"enabled": False}}
    if url:
        config["ledger"] = url
    path = base / "scale.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _row(i: int, stamp: datetime, batch_of) -> dict:
    user = USERS[i % len(USERS)]
    n = i // len(USERS)
    location = f"akte{n // 10000:03d}/vorgang{(n // 100) % 100:02d}/dok{n:07d}{EXTENSIONS[n % len(EXTENSIONS)]}"
    meta: dict = {"mtime": 1.7e9 + n, "inode": f"2049:{i + 1000}"}
    row = {"department": "scale", "source": "homes", "key": f"{user}/{location}", "kind": "file", "owner": user,
           "target_owner": f"t-{user}", "location": location, "target_stem": location.rsplit(".", 1)[0],
           "target_path": None, "renamed": None, "version": f"{int(meta['mtime'] * 1e9)}:{4096 + n % 4096}",
           "size": 4096 + n % 4096, "sha256": f"{i:064x}", "state": "verified", "reason": None, "message": None,
           "attempts": 1, "removed_at_source": False, "change": "unchanged", "discovered": stamp, "updated": stamp,
           "conversion": None, "target_ref": f"/target/t-{user}/{location}", "target_digest": f"{i:064x}",
           "batch_id": batch_of(user, n), "run_id": 1, "meta": meta}
    if i % FAILED_EVERY == 0:
        row.update(state="failed", reason=("permission_denied", "target_full", "name_too_long")[i % 3],
                   message=f"load: refused ({i})", target_ref=None, target_digest=None)
    elif i % RENAMED_EVERY == 0:
        row.update(renamed="case_twin", target_path=location.replace("dok", "Dok-2"))
    elif i % SHARED_EVERY == 0:
        meta["permissions"] = [{"principal": "group:Kanzlei", "rights": "read"}]
        meta["sharing"] = {"granted": [{"with": "group:kanzlei", "rights": "read"}],
                           "unmapped": [{"principal": "DOM\\Altgruppe", "rights": "change",
                                         "reason": "no target group of that name"}], "ignored": 1}
    elif i % LINK_EVERY == 0:
        row.update(state="skipped", reason="skipped_link", message="a symbolic link: not moved", target_ref=None)
    elif i % ENCRYPTED_EVERY == 0:
        row.update(conversion="encrypted", message="password-protected: moved unconverted")
    return row


def generate(dept_file: Path, items: int) -> None:
    """A fresh ledger with `items` items (plain INSERTs, 20,000 rows per statement batch)."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import insert

    from core.ledger import Batch, Item, Run
    from flows import runtime
    dept = runtime.department(str(dept_file))
    ledger = runtime.ledger(dept)
    stamp = datetime(2026, 11, 1, tzinfo=timezone.utc)
    per_user = -(-items // len(USERS))
    batches_per_user = -(-per_user // BATCH)
    with ledger.session() as s:
        s.execute(insert(Run), [{"id": 1, "department": "scale", "flow": "migrate", "started": stamp,
                                 "finished": stamp, "status": "completed", "summary": {"todo": items, "seconds": 600}}])
        rows = [{"id": u * batches_per_user + b + 1, "run_id": 1, "owner": user, "number": b + 1, "size": BATCH,
                 "started": stamp, "finished": stamp, "status": "completed", "worker": "bench/1"}
                for u, user in enumerate(USERS) for b in range(batches_per_user)]
        for k in range(0, len(rows), 20000):
            s.execute(insert(Batch), rows[k:k + 20000])
    index = {user: u for u, user in enumerate(USERS)}

    def batch_of(user: str, n: int) -> int:
        return index[user] * batches_per_user + n // BATCH + 1
    for start in range(0, items, 20000):
        with ledger.session() as s:
            s.execute(insert(Item), [_row(i, stamp, batch_of) for i in range(start, min(items, start + 20000))])


def measure(dept_file: str, profile: bool) -> None:
    """(child process) one no-op run's report; prints its figures as JSON."""
    sys.path.insert(0, str(ROOT))
    from flows import runtime
    from reports.migration import run_summary, write_run_report
    dept = runtime.department(dept_file)
    ledger = runtime.ledger(dept)
    run_id = ledger.start_run(dept.name, "migrate")
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
    summary = run_summary(dept, ledger, run_id, {"new": 0, "changed": 0, "unchanged": 0, "removed": 0}, 1.0)
    summed = time.perf_counter() - started
    path = write_run_report(dept, summary)
    wall = time.perf_counter() - started
    if profile:
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    ledger.finish_run(run_id, "completed", summary)
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": wall, "summary_s": summed, "cpu": after.ru_utime + after.ru_stime
                      - before.ru_utime - before.ru_stime, "rss_mb": after.ru_maxrss / 1024,
                      "base_mb": before.ru_maxrss / 1024, "report_bytes": path.stat().st_size,
                      "failures": sum(f["count"] for f in summary["failures"].values()),
                      "renamed": summary["renamed"]["count"], "not_carried": len(summary["sharing"]["not_carried"]),
                      "granted": summary["sharing"]["granted"], "not_moved": summary["not_moved"]["count"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="keep (and reuse) the generated ledger in this folder")
    ap.add_argument("--url", help="a PostgreSQL ledger URL (default: SQLite under the folder)")
    ap.add_argument("--profile", action="store_true", help="cProfile the first pass (to stderr)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--generate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(args.measure, args.profile)
    if args.generate:
        return generate(Path(args.generate), args.items)
    base = args.keep or Path(tempfile.mkdtemp(prefix="umstieg-bench-report-"))
    base = base / f"n{args.items}"
    base.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    try:
        dept = department(base, args.url)
        marker = base / "ledger.done"
        if not marker.exists() or args.url:
            shutil.rmtree(base / "work", ignore_errors=True)
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--generate", str(dept), "--items", str(args.items)],
                           cwd=ROOT, env=env, check=True)
            marker.write_text("ok")
            print(f"generated a ledger of {args.items} items in {time.perf_counter() - started:.1f} s", flush=True)
        for p in range(args.passes):
            profile = ["--profile"] if args.profile and p == 0 else []
            cmd = [sys.executable, __file__, "--measure", str(dept), *profile]
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"the report failed:\n{out.stderr[-3000:]}")
            if args.profile and p == 0:
                print(out.stderr[-6000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{args.items:>9} items  report {r['wall']:7.2f} s (summary {r['summary_s']:6.2f} s)  "
                  f"CPU {r['cpu']:6.2f} s  peak RSS {r['rss_mb']:5.0f} MB (imports {r['base_mb']:4.0f} MB)  "
                  f"failures {r['failures']} renamed {r['renamed']} granted {r['granted']} "
                  f"not carried {r['not_carried']} not moved {r['not_moved']}  load {os.getloadavg()[0]:.2f}",
                  flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
