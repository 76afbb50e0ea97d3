"""`umstieg assess` at scale: the pre-migration inventory and risk scan, wall time and peak RSS.

`assess_body` (flows/migrate.py, what `umstieg assess` runs) runs in a fresh process per size, on
a generated tree of empty files (benchmarks/discovery_scale.py's `generate`: three users, 100
files per folder, no Office documents) from a folder source into a local folder target, conversion
off. Each size reports wall and CPU seconds, the time spent in the risk scan (reports.scan.scan_tree,
which reads each file's first bytes), the peak RSS of its process (ru_maxrss) and the RSS before the
assessment started (interpreter and imports), so that what the assessment itself holds is the
difference, and the load average when it finished (the machine may be shared).

    .venv/bin/python benchmarks/assess_scale.py [--files 60000,200000,1000000] [--keep DIR] [--no-scan]

Target (issue 19): memory that does not grow with the item count; peak RSS under 500 MB at a million.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from discovery_scale import department, generate  # noqa: E402  (the same tree and department)


def measure(dept_file: str, scanning_on: bool) -> None:
    """(child process) one assessment; prints its figures as JSON. Without `scanning_on` the risk
    scan is left out (replaced by an empty summary), so the figures are the inventory's alone."""
    sys.path.insert(0, str(ROOT))
    import flows.migrate as migrate
    import reports.migration  # noqa: F401  (imported before the baseline, as the assessment imports it)
    import reports.scan as scan
    import reports.html  # noqa: F401
    import reports.exports  # noqa: F401
    scanning = [0.0]
    plain_scan = scan.scan_tree

    def timed_scan(*args, **kwargs):
        started = time.perf_counter()
        try:
            return plain_scan(*args, **kwargs) if scanning_on else scan.ScanSummary()
        finally:
            scanning[0] += time.perf_counter() - started
    scan.scan_tree = timed_scan
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = migrate.assess_body(dept_file)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                      "scan": scanning[0], "rss_mb": after.ru_maxrss / 1024, "base_mb": before.ru_maxrss / 1024,
                      "items": result["items"], "problems": len(result["problems"]),
                      "load": os.getloadavg()[0]}))


def run_size(dept: Path, files: int, scanning_on: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    flags = [] if scanning_on else ["--no-scan"]
    out = subprocess.run([sys.executable, __file__, "--measure", str(dept), *flags], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{files}: assessment failed:\n{out.stderr[-3000:]}")
    result = {"files": files, **json.loads(out.stdout.strip().splitlines()[-1])}
    print(f"{files:>9} files{'' if scanning_on else ' (no scan)'}  {result['wall']:8.2f} s  "
          f"{files / result['wall']:8.0f} items/s  "
          f"CPU {result['cpu']:7.2f} s  scan {result['scan']:7.2f} s  "
          f"peak RSS {result['rss_mb']:6.0f} MB (imports {result['base_mb']:4.0f} MB)  "
          f"items {result['items']} problems {result['problems']}  load {result['load']:.2f}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="60000,200000,1000000", help="comma-separated tree sizes")
    ap.add_argument("--keep", type=Path, help="keep the trees in this folder (and reuse them)")
    ap.add_argument("--no-scan", dest="scan", action="store_false",
                    help="leave the risk scan out: the inventory (listing and counting) alone")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(args.measure, args.scan)
    base_all = args.keep or Path(tempfile.mkdtemp(prefix="umstieg-bench-assess-"))
    try:
        for files in (int(f) for f in args.files.split(",")):
            base = base_all / f"n{files}"
            home = base / "home"
            if not home.is_dir():
                started = time.perf_counter()
                generate(home, files)
                print(f"generated {files} files in {time.perf_counter() - started:.1f} s", flush=True)
            shutil.rmtree(base / "work", ignore_errors=True)         # a fresh ledger and reports each time
            run_size(department(base, home), files, args.scan)
    finally:
        if args.keep is None:
            shutil.rmtree(base_all, ignore_errors=True)


if __name__ == "__main__":
    main()
