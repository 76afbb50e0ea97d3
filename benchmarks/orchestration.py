"""Orchestration overhead and flow memory.

1. A department of N small Office documents (default 2000) through the `migrate` flow (Prefect,
   ledger, extract → convert → load → verify) versus the bare converter pool converting the same
   documents: throughput of both and their ratio (target: migrate ≥ 0.9 × bare pool).
2. The flow process's memory over a run of M small non-Office files (default 20 000), sampled as
   items are processed: it should stay flat (no growth with the item count).

    .venv/bin/python benchmarks/orchestration.py [--documents 2000] [--files 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")

import psutil  # noqa: E402
import yaml  # noqa: E402

from docgen import make_mixed_set  # noqa: E402


def department(tmp: Path, name: str, home: Path, users: list[str], workers: int, chunk: int) -> Path:
    config = {"name": name, "work_dir": str(tmp / f"{name}-work"),
              "users": [{"source": u, "target": f"t-{u}"} for u in users],
              "sources": [{"name": "homes", "type": "folder", "root": str(home)}],
              "target": {"type": "localdir", "root": str(tmp / f"{name}-target")},
              "conversion": {"workers": workers, "keep_original": "never"},
              "limits": {"chunk_size": chunk}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def spread(files: list[Path], home: Path, users: list[str], total: int) -> None:
    """`total` copies of `files`, shared out among the users' home folders."""
    for i in range(total):
        user = users[i % len(users)]
        src = files[i % len(files)]
        dst = home / user / f"f{i // 500:03d}" / f"{i:06d}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def bench_overhead(tmp: Path, documents: int, workers: int) -> None:
    from converters.pool import ConverterPool
    from core.settings import ConversionSettings
    from flows import runtime
    from flows.migrate import migrate
    seeds = make_mixed_set(tmp / "seeds", 60)
    users = ["anna", "ben", "carla", "dirk"]
    home = tmp / "home-docs"
    spread(seeds, home, users, documents)
    files = sorted(p for p in home.rglob("*") if p.is_file())
    print(f"\n== {documents} small documents, {workers} LibreOffice workers ==", flush=True)

    with ConverterPool(ConversionSettings(workers=workers)) as pool:
        started = time.perf_counter()
        outcomes = {}
        for r in pool.convert_many((f, tmp / "bare-out" / f.parent.name, f"{f.stem}") for f in files):
            outcomes[r.outcome.value] = outcomes.get(r.outcome.value, 0) + 1
        bare_s = time.perf_counter() - started
    bare = documents / bare_s
    print(f"bare pool (convert_many)          : {bare:6.2f} docs/s  ({bare_s:.1f} s; {outcomes})", flush=True)

    dept = department(tmp, "overhead", home, users, workers, chunk=50)
    migrate(str(dept))                               # warm-up: the ephemeral Prefect server starts here
    shutil.rmtree(tmp / "overhead-work")
    shutil.rmtree(tmp / "overhead-target")
    runtime.close_all()
    started = time.perf_counter()
    summary = migrate(str(dept))
    flow_s = time.perf_counter() - started
    flow = documents / flow_s
    print(f"migrate flow (Prefect + ledger)   : {flow:6.2f} docs/s  ({flow_s:.1f} s incl. pool start-up; "
          f"{summary['totals']})", flush=True)
    print(f"    migrate / bare pool = {flow / bare:.2f}   (target >= 0.9)", flush=True)
    runtime.close_all()


def bench_memory(tmp: Path, count: int, workers: int) -> None:
    from flows import runtime
    from flows.migrate import migrate
    users = [f"user{i:02d}" for i in range(10)]
    home = tmp / "home-files"
    for i in range(count):
        d = home / users[i % len(users)] / f"f{i // 1000:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"note{i:06d}.txt").write_text(f"Aktennotiz {i}\n" * 3)
    dept = department(tmp, "memory", home, users, workers, chunk=200)
    me = psutil.Process()
    samples: list[tuple[int, float]] = []
    stop = threading.Event()

    def sample() -> None:
        from sqlalchemy import func, select
        from core.ledger import Item, Ledger
        ledger = None
        while not stop.wait(2.0):
            try:
                if ledger is None:
                    ledger = Ledger(f"sqlite:///{tmp / 'memory-work' / 'ledger.sqlite'}")
                with ledger.session() as s:
                    done = s.scalar(select(func.count(Item.id)).where(Item.state == "verified")) or 0
                samples.append((done, me.memory_info().rss / 2**20))
            except Exception:  # noqa: BLE001 - ledger not there yet
                continue

    print(f"\n== flow process memory over {count} small files ==", flush=True)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    started = time.perf_counter()
    summary = migrate(str(dept))
    seconds = time.perf_counter() - started
    stop.set()
    t.join()
    runtime.close_all()
    marks = [0.1, 0.25, 0.5, 0.75, 1.0]
    shown = []
    for m in marks:
        target = m * count
        best = min(samples, key=lambda s: abs(s[0] - target)) if samples else (0, 0)
        shown.append(f"{best[0]}:{best[1]:.0f}")
    print(f"{count} items in {seconds:.0f} s ({count / seconds:.0f} items/s); {summary['totals']}")
    print(f"flow process RSS (MiB) after n verified items: {'  '.join(shown)}")
    if len(samples) >= 4:
        early = [rss for done, rss in samples if done <= count * 0.25 and done > 0]
        late = [rss for done, rss in samples if done >= count * 0.75]
        if early and late:
            print(f"    growth from the first quarter to the last: {max(late) - max(early):+.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=2000)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="umstieg-bench-orch-") as tmp:
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect-home")
        bench_overhead(Path(tmp), args.documents, args.workers)
        bench_memory(Path(tmp), args.files, args.workers)


if __name__ == "__main__":
    main()
