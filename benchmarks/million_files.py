"""A department of many small files: `umstieg run` against the floor of a verified copy.

Generates a tree of small non-Office files (a few KB each, in nested folders) for three users,
then, interleaved on the same tree:

1. the plain verified-copy loop of issue 19: read, SHA-256, write to a temporary name, fsync,
   rename, read back and compare (one process, one thread: the floor a migration cannot beat
   without giving up a guarantee);
2. `umstieg run` (the real command, in a subprocess; conversion off; a local folder target),
   first pass;
3. the loop again;
4. `umstieg run` again: the delta pass that finds nothing to do.

For each: wall time, items/s, user/system CPU seconds and blocks written (the children's
rusage), peak RSS of the process tree (psutil, sampled every 0.1 s) and the ratios.
Targets (2 cores): first pass >= 1,000 items/s and >= 0.4 x the loop; delta pass of 60,000
under 5 s (a million under 60 s); peak RSS under 500 MB at a million.

    .venv/bin/python benchmarks/million_files.py [--files 60000] [--users 3] [--keep DIR]
        [--passes loop,first,loop,delta] [--chunk 200]

`--keep DIR` keeps (and reuses) the generated tree under DIR; the work dir and target of each
run are made fresh below it. `--passes` picks and orders the passes (e.g. `first,delta` to time
umstieg alone, `delta` to time discovery again on a kept ledger).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
UMSTIEG = [sys.executable, "-m", "umstieg"]
EXTENSIONS = (".txt", ".pdf", ".jpg", ".png", ".csv", ".log", ".xml", ".json")


def generate(home: Path, users: list[str], total: int, seed: int = 19) -> int:
    """`total` files of 1-8 KB spread over the users, 100 per folder, folders two levels deep.
    Returns the bytes written. Content is random (incompressible, distinct digests)."""
    rnd = random.Random(seed)
    written = 0
    made: set[Path] = set()
    for i in range(total):
        user = users[i % len(users)]
        n = i // len(users)
        folder = home / user / f"akte{n // 10000:03d}" / f"vorgang{(n // 100) % 100:02d}"
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        size = rnd.randint(1024, 8192)
        (folder / f"dok{n:07d}{EXTENSIONS[n % len(EXTENSIONS)]}").write_bytes(rnd.randbytes(size))
        written += size
    return written


def department(base: Path, home: Path, users: list[str], chunk: int, name: str) -> Path:
    config = {"name": name, "work_dir": str(base / f"{name}-work"),
              "users": [{"source": u, "target": f"t-{u}"} for u in users],
              "sources": [{"name": "homes", "type": "folder", "root": str(home)}],
              "target": {"type": "localdir", "root": str(base / f"{name}-target")},
              "conversion": {"enabled": False},
              "limits": {"chunk_size": chunk}}
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class TreePeak:
    """Peak RSS of a process and all its descendants (summed), sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.every, self.peak = every, 0
        self.run_peak = self.worker_peak = 0      # the run's own process; its largest worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                    except psutil.Error:
                        continue
                    total += rss
                    if p.pid == self.root.pid:
                        self.run_peak = max(self.run_peak, rss)
                    else:
                        self.worker_peak = max(self.worker_peak, rss)
                self.peak = max(self.peak, total)
            except psutil.Error:
                break
            self.stop.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run_umstieg(dept: Path, label: str, count: int) -> dict:
    """`umstieg run` in a subprocess: wall, rate, CPU, blocks written, peak RSS of its tree."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen([*UMSTIEG, "run", str(dept)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with TreePeak(proc.pid) as peak:
        out, _ = proc.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        print(out[-4000:])
        raise SystemExit(f"umstieg run failed ({proc.returncode})")
    result = {"label": label, "wall": wall, "rate": count / wall, "rss_mb": peak.peak / 2**20,
              "run_mb": peak.run_peak / 2**20, "worker_mb": peak.worker_peak / 2**20,
              "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
              "blocks_out": after.ru_oublock - before.ru_oublock}
    _show(result)
    return result


def verified_copy_loop(home: Path, target: Path, count: int, label: str) -> dict:
    """The floor: read, sha256, write to a temp name, fsync, rename, read back and compare."""
    shutil.rmtree(target, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    n = 0
    made: set[str] = set()
    for dirpath, _dirs, files in os.walk(home):
        rel = os.path.relpath(dirpath, home)
        out_dir = os.path.join(target, rel)
        for name in files:
            if out_dir not in made:
                os.makedirs(out_dir, exist_ok=True)
                made.add(out_dir)
            with open(os.path.join(dirpath, name), "rb") as f:
                data = f.read()
            digest = hashlib.sha256(data).hexdigest()
            final = os.path.join(out_dir, name)
            tmp = os.path.join(out_dir, f".{name}.partial")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            with open(final, "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    raise SystemExit(f"loop: {final} differs after the copy")
            n += 1
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    if n != count:
        raise SystemExit(f"loop copied {n} files, expected {count}")
    result = {"label": label, "wall": wall, "rate": n / wall, "rss_mb": after.ru_maxrss / 1024,
              "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
              "blocks_out": after.ru_oublock - before.ru_oublock}
    _show(result)
    return result


def _show(r: dict) -> None:
    print(f"{r['label']:<28} {r['wall']:8.2f} s {r['rate']:9.0f} items/s  user {r['user']:6.1f} s  "
          f"sys {r['sys']:6.1f} s  blocks out {r['blocks_out']:>9}  peak RSS {r['rss_mb']:6.0f} MB"
          + (f" (the run {r['run_mb']:.0f} MB, largest other {r['worker_mb']:.0f} MB)" if "run_mb" in r else ""),
          flush=True)


def check_target(base: Path, name: str, users: list[str], count: int) -> None:
    """Every file arrived exactly once (no leftovers beside them)."""
    target = base / f"{name}-target"
    found = sum(len(files) for _d, _s, files in os.walk(target))
    if found != count:
        raise SystemExit(f"the target holds {found} files, expected {count}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=60000, help="files in all (up to 1,000,000)")
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=200, help="limits.chunk_size of the department")
    ap.add_argument("--keep", type=Path, help="keep the generated tree (and the runs) in this folder")
    ap.add_argument("--passes", default="loop,first,loop,delta",
                    help="comma-separated: loop, first (fresh work dir and target), delta")
    args = ap.parse_args()
    users = [f"user{i}" for i in range(args.users)]
    base = args.keep or Path(tempfile.mkdtemp(prefix="umstieg-bench-million-"))
    base.mkdir(parents=True, exist_ok=True)
    home = base / "home"
    marker = base / f"tree-{args.files}-{args.users}.done"
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})", flush=True)
    if not marker.exists():
        shutil.rmtree(home, ignore_errors=True)
        started = time.perf_counter()
        size = generate(home, users, args.files)
        marker.write_text("ok")
        print(f"generated {args.files} files ({size / 2**20:.0f} MiB) for {len(users)} users "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
    name = "million"
    dept = department(base, home, users, args.chunk, name)
    results: dict[str, list[dict]] = {}
    loops = 0
    try:
        for p in args.passes.split(","):
            if p == "loop":
                loops += 1
                results.setdefault("loop", []).append(
                    verified_copy_loop(home, base / "loop-target", args.files, f"verified-copy loop #{loops}"))
            elif p == "first":
                shutil.rmtree(base / f"{name}-work", ignore_errors=True)
                shutil.rmtree(base / f"{name}-target", ignore_errors=True)
                results.setdefault("first", []).append(run_umstieg(dept, "umstieg run, first pass", args.files))
                check_target(base, name, users, args.files)
            elif p == "delta":
                results.setdefault("delta", []).append(run_umstieg(dept, "umstieg run, nothing changed",
                                                                   args.files))
            else:
                raise SystemExit(f"unknown pass {p!r}")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    loop = [r["rate"] for r in results.get("loop", [])]
    for r in results.get("first", []):
        ratio = f" = {r['rate'] / (sum(loop) / len(loop)):.2f} x the loop (target >= 0.4)" if loop else ""
        print(f"first pass: {r['rate']:.0f} items/s (target >= 1000){ratio}; peak RSS {r['rss_mb']:.0f} MB "
              f"(target < 500 at a million)")
    for r in results.get("delta", []):
        print(f"delta pass: {r['wall']:.2f} s for {args.files} items (target < 5 s at 60,000, < 60 s at a "
              f"million); peak RSS {r['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
