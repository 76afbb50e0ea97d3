"""Dashboard page render times with a large department in the ledger (SQLite and PostgreSQL).

Fills a ledger with synthetic rows by bulk insert (a department of N items over 200 users; mail,
events, contacts and files; 30 % of the items are converted documents with a fidelity record of
two deductions and a risk flag; 2 % failed in four error classes), then renders through the real
web app (FastAPI's TestClient, in-process: no network in the figure) the department page, the
overview, a filtered and deep item page, a document page and the full item CSV export, and
prints the times side by side with a baseline department of 5 000 items in the same ledger.

    .venv/bin/python benchmarks/dashboard_render.py [--items 500000] [--baseline 5000] [--no-postgres]

The budget: the department page and its failed-items page of 500 000 items each render in under
0.5 s; the full item CSV is streamed: first byte under 1 s, the whole export under 10 s, memory
flat (the process's resident memory is sampled at every chunk of the export: its growth over the
first byte must not grow with the department, compared with the 5 000-item export). PostgreSQL is
a server of its own, started as the tests start one (tests/servers/postgres.py: a password,
scram-sha-256, loopback).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import yaml  # noqa: E402

from core.ledger import Batch, Item, Ledger, Run  # noqa: E402

USERS = 200
KINDS = [("file", 0.55), ("message", 0.35), ("event", 0.05), ("contact", 0.05)]
STATES = [("verified", 0.83), ("discovered", 0.10), ("skipped", 0.03), ("failed", 0.02), ("loaded", 0.01),
          ("extracted", 0.01)]
REASONS = ["load_error", "conversion_timeout", "transient", "extract_error"]
FORMATS = ["docx", "xlsx", "pptx", "doc", "xls"]
CHECKS = ["images", "tables", "headers", "fields", "comments", "charts", "merged_cells", "formulas"]
FLAGS = ["macros", "tracked_changes", "external_links", "ole_objects", "legacy_binary"]


def fill(ledger: Ledger, department: str, n: int, seed: int = 1) -> float:
    """Insert `n` items (and the runs and batches they point to); returns the seconds it took."""
    rng = random.Random(seed)
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    with ledger.engine.begin() as conn:
        run_ids = []
        for i in range(3):
            res = conn.execute(Run.__table__.insert().values(
                department=department, flow="migrate", started=now - timedelta(days=3 - i),
                finished=now - timedelta(days=3 - i) + timedelta(hours=2), status="completed",
                summary={"this_run": {"verified": n // 3}, "seconds": 7200.0, "delta": {"new": {"u": 1}}}))
            run_ids.append(res.inserted_primary_key[0])
        batch_ids = []
        for b in range(200):
            res = conn.execute(Batch.__table__.insert().values(run_id=run_ids[-1], owner=f"user{b:03d}", number=b,
                                                               size=100, status="completed"))
            batch_ids.append(res.inserted_primary_key[0])
    kinds = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS], k=n)
    states = rng.choices([s for s, _ in STATES], [w for _, w in STATES], k=n)
    chunk = 20_000
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            kind, state = kinds[i], states[i]
            user = f"user{i % USERS:03d}"
            doc = kind == "file" and i % 11 < 6          # ~30 % of all items are converted documents
            fmt = FORMATS[i % len(FORMATS)] if doc else ("txt" if kind == "file" else "eml")
            score = round(rng.uniform(40, 100), 1) if doc else None
            verdict = (None if score is None else "identical" if score >= 99 else "minor" if score >= 90
                       else "review" if score >= 60 else "broken")
            fidelity = {"status": "assessed", "score": score, "verdict": verdict,
                        "deductions": [{"check": rng.choice(CHECKS), "points": 5.0, "detail": "fewer in the output"},
                                       {"check": rng.choice(CHECKS), "points": 2.5, "detail": "moved"}],
                        "risks": [rng.choice(FLAGS)] if i % 7 == 0 else []} if doc else None
            rows.append({
                "department": department, "source": "homes", "key": f"{user}/{i}", "kind": kind, "owner": user,
                "target_owner": f"t-{user}", "location": f"Ablage/{i // 1000}/Datei {i}.{fmt}",
                "target_stem": f"Ablage/{i // 1000}/Datei {i}", "version": f"{i}:1",
                "size": rng.randint(1_000, 2_000_000),
                "state": state, "reason": rng.choice(REASONS) if state == "failed" else None,
                "message": "load: the server said 507 Insufficient Storage" if state == "failed" else None,
                "attempts": 1, "removed_at_source": False, "discovered": now, "updated": now,
                "conversion": "converted" if doc else None, "fidelity_score": score, "fidelity_verdict": verdict,
                "fidelity": fidelity, "batch_id": batch_ids[i % len(batch_ids)], "run_id": run_ids[-1]})
        with ledger.engine.begin() as conn:
            conn.execute(Item.__table__.insert(), rows)
    # what autovacuum does after a bulk load (statistics; PostgreSQL's visibility map for index-only scans)
    with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if ledger.engine.dialect.name == "postgresql" else "ANALYZE")
    return time.perf_counter() - started


def department_file(folder: Path, name: str, url: str, password: str | None = None) -> Path:
    """A department file for the ledger at `url`; a password goes to the environment, as a
    department file names it (`ledger_password: env:NAME`), never into the file."""
    (folder / "home").mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    secret = {}
    if password:
        os.environ["UMSTIEG_BENCH_LEDGER_PASSWORD"] = password
        secret = {"ledger_password": "env:UMSTIEG_BENCH_LEDGER_PASSWORD"}
    path.write_text(yaml.safe_dump({
        "name": name, "work_dir": str(folder / "work"), "ledger": url, **secret,
        "users": [{"source": f"user{i:03d}", "target": f"t-user{i:03d}"} for i in range(USERS)],
        "sources": [{"name": "homes", "type": "folder", "root": str(folder / "home")}],
        "target": {"type": "localdir", "root": str(folder / "target")}}), encoding="utf-8")
    return path


def timed(client, url: str, repeat: int) -> tuple[float, float, float]:
    """(first, median, fastest of the next `repeat`) seconds for GET url.

    The machine is shared: the median says what a user sees, the fastest what the page costs.
    """
    def once() -> float:
        t = time.perf_counter()
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:500])
        _ = r.content
        return time.perf_counter() - t
    first = once()
    warm = [once() for _ in range(repeat)]
    return first, statistics.median(warm), min(warm)


def rss() -> int:
    """This process's resident memory in bytes (the app runs in it: TestClient is in-process)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def streamed(client, url: str) -> tuple[float, float, float, int, int, int]:
    """(first byte, whole export, whole export) seconds of a streamed download, with the bytes it
    sent, the process's resident memory at the first byte and its largest growth after it."""
    t = time.perf_counter()
    first, size, base, peak = None, 0, 0, 0
    with client.stream("GET", url) as r:
        assert r.status_code == 200, (url, r.status_code)
        for chunk in r.iter_bytes():
            size += len(chunk)
            if first is None and chunk:
                first = time.perf_counter() - t
                base = peak = rss()
            elif chunk:
                peak = max(peak, rss())
    whole = time.perf_counter() - t
    return first or whole, whole, whole, size, base, peak - base


def measure(url: str, folder: Path, items: int, baseline: int, repeat: int, password: str | None = None) -> dict:
    from fastapi.testclient import TestClient
    from sqlalchemy.engine import make_url

    from umstieg.dashboard import Site, create_app
    ledger = Ledger(make_url(url).set(password=password).render_as_string(hide_password=False) if password else url)
    ledger.migrate()
    fill_big = fill(ledger, "gross", items)
    fill(ledger, "klein", baseline, seed=2)
    ledger.close()
    site = Site([department_file(folder, "gross", url, password), department_file(folder, "klein", url, password)])
    pages = {
        "department page": "/departments/{d}",
        "department page, failed only": "/departments/{d}?state=failed",
        "needs a person (queue)": "/departments/{d}/attention",
        "item page 200 (offset)": "/departments/{d}?page=200",
        "overview (both departments)": "/",
        "document page": "/departments/{d}/items/{first}",
        "items CSV export (all)": "/departments/{d}/tables/items.csv",
    }
    from sqlalchemy import func, select
    results = {"fill seconds": fill_big}
    with TestClient(create_app(site), base_url="http://127.0.0.1") as client:
        for label, pattern in pages.items():
            row = {}
            for dept in ("klein", "gross"):
                with site.ledger_of[dept].session() as s:
                    first_id = s.scalar(select(func.min(Item.id)).where(Item.department == dept))
                n = 1 if "export" in label else repeat
                if "export" in label:
                    row[dept] = streamed(client, pattern.format(d=dept, first=first_id))
                else:
                    row[dept] = timed(client, pattern.format(d=dept, first=first_id), n)
            results[label] = row
    site.close()
    return results


def start_postgres() -> tuple[str, str, callable]:
    """A PostgreSQL server of its own (tests/servers/postgres.py): its URL, password and stop."""
    from servers.postgres import PostgresServer, postgres_missing
    if postgres_missing():
        raise RuntimeError(postgres_missing())
    server = PostgresServer().create()
    return server.url, server.password, server.remove


def report(db: str, results: dict, args) -> None:
    """Print one database's figures and the budget's verdicts (as soon as they are measured)."""
    print(f"\n{db}: department 'gross' with {args.items:,} items vs 'klein' with {args.baseline:,} (baseline), "
          f"in one ledger (bulk insert of the large one: {results.pop('fill seconds'):.0f} s); first request, "
          f"then median and fastest of {args.repeat} more", flush=True)
    print(f"  {'page':32} {'baseline first':>14} {'median':>8} {'fastest':>8} {'large first':>12} "
          f"{'median':>8} {'fastest':>8} {'ratio':>7}")
    for label, row in results.items():
        (kf, kw, kb), (gf, gw, gb) = row["klein"][:3], row["gross"][:3]
        print(f"  {label:32} {kf:13.3f}s {kw:7.3f}s {kb:7.3f}s {gf:11.3f}s {gw:7.3f}s {gb:7.3f}s {gw / kw:6.1f}×")
    export = results["items CSV export (all)"]
    (_, _, _, ksize, _, kgrow), (gfirst, gwhole, _, gsize, gbase, ggrow) = export["klein"], export["gross"]
    print(f"  items CSV: {gsize / 2**20:.0f} MiB; resident memory at the first byte {gbase / 2**20:.0f} MiB, "
          f"largest growth after it {ggrow / 2**20:.1f} MiB (the {args.baseline:,}-item export: "
          f"{kgrow / 2**20:.1f} MiB of {ksize / 2**20:.1f} MiB)")
    verdicts = []
    for label in ("department page", "department page, failed only"):
        median = results[label]["gross"][1]
        verdicts.append(f"{label} {median:.3f} s {'<' if median < 0.5 else '>='} 0.5 s")
    verdicts.append(f"CSV first byte {gfirst:.3f} s {'<' if gfirst < 1 else '>='} 1 s")
    verdicts.append(f"whole CSV {gwhole:.1f} s {'<' if gwhole < 10 else '>='} 10 s")
    verdicts.append(f"memory growth {ggrow / 2**20:.1f} MiB for {gsize / 2**20:.0f} MiB sent "
                    f"({'flat' if ggrow < max(64 * 2**20, gsize / 10) else 'NOT flat'})")
    print("  budget: " + "; ".join(verdicts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500_000)
    parser.add_argument("--baseline", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="umstieg-bench-dashboard-"))
    try:
        if not args.no_sqlite:
            report("SQLite", measure(f"sqlite:///{folder / 'sqlite' / 'ledger.sqlite'}", folder / "sqlite",
                                     args.items, args.baseline, args.repeat), args)
        if not args.no_postgres:
            url, password, stop = start_postgres()
            try:
                report("PostgreSQL", measure(url, folder / "pg", args.items, args.baseline, args.repeat, password),
                       args)
            finally:
                stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("\nBudget: the department page and the failed-items page of the large department in under 0.5 s "
          "(median); the item CSV's first byte under 1 s, all of it under 10 s, memory flat.")


if __name__ == "__main__":
    main()
