"""Converter throughput and memory, side by side with the baselines.

Prints documents per second for
  (a) `soffice --headless --convert-to` started once per file (what most people do),
  (b) raw unoserver client calls (stock `UnoClient`) against one of the pool's own workers: the limit,
  (c) the pool with 1 worker,
  (d) the pool with N workers,
with the ratios (d)/(a) and (c)/(b), on a generated set of small documents and on the developer
corpus (Office files LibreOffice is asked to convert; encrypted and corrupt ones are left out
because they never reach LibreOffice in the pool). Then worker RSS over a long run, with and
without recycling.

    .venv/bin/python benchmarks/convert_throughput.py [--generated 200] [--workers N] [--quick]

Figures depend on the machine and on what else runs on it: compare runs on one machine, and
read the ratios rather than the absolute rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from converters.pool import ConverterPool  # noqa: E402
from converters.sniff import sniff  # noqa: E402
from converters.workers import LocalWorker  # noqa: E402
from core.settings import ConversionSettings  # noqa: E402
from docgen import make_mixed_set  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"


def convertible(paths: list[Path]) -> list[tuple[Path, object]]:
    """(path, format) for files the pool would hand to LibreOffice."""
    out = []
    for p in paths:
        s = sniff(p)
        if s.outcome is None and s.format is not None and not s.format.is_odf:
            out.append((p, s.format))
    return out


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def bench_soffice(files, workdir: Path, sample: int) -> tuple[float, int, float]:
    """(a): one cold `soffice --convert-to` per file, one shared profile (warmed once first)."""
    files = files[:sample] if sample else files
    profile = (workdir / "soffice-profile").as_uri()
    outdir = workdir / "a-out"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    subprocess.run(["soffice", "--headless", f"-env:UserInstallation={profile}", "--terminate_after_init"],
                   env=env, capture_output=True, timeout=120)
    started = time.perf_counter()
    for path, fmt in files:
        subprocess.run(["soffice", "--headless", f"-env:UserInstallation={profile}", "--convert-to",
                        fmt.target, "--outdir", str(outdir), str(path)],
                       env=env, capture_output=True, timeout=600)
    seconds = time.perf_counter() - started
    return rate(len(files), seconds), len(files), seconds


def bench_raw_client(pool: ConverterPool, files, workdir: Path) -> tuple[float, float]:
    """(b): stock unoserver client, sequential calls, against the pool's (only) local worker."""
    from unoserver.client import UnoClient
    worker = next(w for w in pool.workers() if isinstance(w, LocalWorker))
    client = UnoClient(server="127.0.0.1", port=str(worker.port))
    outdir = workdir / "b-out"
    outdir.mkdir()
    started = time.perf_counter()
    for i, (path, fmt) in enumerate(files):
        # the same parameters the pool uses: named filters, no index update
        client.convert(inpath=str(path), outpath=str(outdir / f"{i}.{fmt.target}"),
                       filtername=fmt.export_filter, infiltername=fmt.import_filter, update_index=False)
    seconds = time.perf_counter() - started
    return rate(len(files), seconds), seconds


def bench_pool(pool: ConverterPool, files, workdir: Path, tag: str) -> tuple[float, float, dict]:
    """(c)/(d): the pool converting every file, largest first (as `umstieg convert` does)."""
    outdir = workdir / f"{tag}-out"
    jobs = [(p, outdir / str(i), None) for i, (p, _) in
            enumerate(sorted(files, key=lambda f: f[0].stat().st_size, reverse=True))]
    outcomes: dict[str, int] = {}
    started = time.perf_counter()
    for r in pool.convert_many(jobs):
        outcomes[r.outcome.value] = outcomes.get(r.outcome.value, 0) + 1
    seconds = time.perf_counter() - started
    return rate(len(files), seconds), seconds, outcomes


def start_pool(workers: int, runtime: Path, **kw) -> tuple[ConverterPool, float]:
    started = time.perf_counter()
    pool = ConverterPool(ConversionSettings(workers=workers, runtime_dir=runtime, **kw)).start()
    return pool, time.perf_counter() - started


def run_set(name: str, files, workers: int, sample_a: int, workdir: Path) -> dict:
    print(f"\n== {name}: {len(files)} documents for LibreOffice ==", flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    res: dict = {"set": name, "documents": len(files)}
    a, a_n, a_s = bench_soffice(files, workdir, sample_a)
    print(f"(a) soffice --convert-to per file : {a:6.2f} docs/s  ({a_n} docs in {a_s:.1f} s)", flush=True)

    # (b) and (c) each on a fresh 1-worker pool, so that neither inherits the other's LibreOffice
    pool, _ = start_pool(1, workdir / "rt-b", timeout=300)
    with pool:
        b, b_s = bench_raw_client(pool, files, workdir)
    print(f"(b) raw unoserver client, 1 worker : {b:6.2f} docs/s  ({b_s:.1f} s)", flush=True)
    pool, startup1 = start_pool(1, workdir / "rt-c", timeout=300)
    with pool:
        c, c_s, c_out = bench_pool(pool, files, workdir, "c")
    print(f"(c) pool, 1 worker                 : {c:6.2f} docs/s  ({c_s:.1f} s; start-up {startup1:.1f} s; "
          f"{c_out})", flush=True)
    pool, startupn = start_pool(workers, workdir / "rtn", timeout=300)
    with pool:
        d, d_s, d_out = bench_pool(pool, files, workdir, "d")
        print(f"(d) pool, {workers} workers                : {d:6.2f} docs/s  ({d_s:.1f} s; start-up "
              f"{startupn:.1f} s; {d_out})", flush=True)
    res.update(a=a, a_documents=a_n, b=b, c=c, d=d, d_over_a=d / a if a else None, c_over_b=c / b if b else None,
               startup_1=startup1, startup_n=startupn)
    print(f"    (d)/(a) = {res['d_over_a']:.2f}   (target >= 7)")
    print(f"    (c)/(b) = {res['c_over_b']:.2f}   (target >= 0.95)", flush=True)
    return res


def run_rss(files, workers: int, conversions: int, workdir: Path) -> dict:
    """Worker RSS along `conversions` conversions, with recycling (default 200) and without."""
    print(f"\n== worker memory over {conversions} conversions of {len(files)} documents in rotation, "
          f"{workers} worker(s) ==", flush=True)
    out: dict = {}
    # the baseline recycles neither by count nor by size (recycle_above_mb, default 1024 MiB, would
    # cap its memory too and hide the growth recycling is there to bound)
    for label, recycle, above_mb in (("recycle after 200", 200, 1024), ("no recycling", 10 ** 9, 10 ** 9)):
        pool, _ = start_pool(workers, workdir / f"rt-rss-{recycle}", recycle_after=recycle, recycle_above_mb=above_mb)
        samples = []
        with pool:
            jobs = ((files[i % len(files)][0], workdir / f"rss-{recycle}" / str(i), None) for i in range(conversions))
            for i, _ in enumerate(pool.convert_many(jobs), start=1):
                if i % 50 == 0:
                    rss = max((w.rss() for w in pool.workers()), default=0)
                    samples.append((i, rss))
            peak = pool.peak_rss
            recycled = pool.recycled
        line = "  ".join(f"{i}:{rss / 2**20:.0f}" for i, rss in samples)
        print(f"{label:>18}: peak {peak / 2**20:.0f} MiB, recycled {recycled}; max worker RSS (MiB) "
              f"after n conversions: {line}", flush=True)
        out[label] = {"peak_mib": peak / 2**20, "recycled": recycled,
                      "samples_mib": [(i, rss / 2**20) for i, rss in samples]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generated", type=int, default=200, help="size of the generated set")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="N for (d)")
    ap.add_argument("--sample-a", type=int, default=0,
                    help="convert only this many files in (a) (0 = all); (a) is slow by design")
    ap.add_argument("--rss-conversions", type=int, default=500)
    ap.add_argument("--skip", action="append", default=["bigfoot.xlsx"],
                    help="corpus file names left out of the throughput sets (default: bigfoot.xlsx, "
                         "thousands of empty sheets, ~115 s in any LibreOffice set-up; it would measure "
                         "only itself)")
    ap.add_argument("--quick", action="store_true", help="small sets, for trying the script")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.generated, args.sample_a, args.rss_conversions = 30, 10, 100

    results: dict = {"workers": args.workers, "cpu_count": os.cpu_count(), "sets": []}
    with tempfile.TemporaryDirectory(prefix="umstieg-bench-") as tmp:
        work = Path(tmp)
        generated = convertible(make_mixed_set(work / "generated", args.generated))
        results["sets"].append(run_set(f"generated ({args.generated} small docx/xlsx/pptx)", generated,
                                       args.workers, args.sample_a, work / "g"))
        corpus = []
        if CORPUS.is_dir():
            files = sorted(p for d in ("documents", "spreadsheets", "presentations")
                           for p in (CORPUS / d).iterdir() if p.is_file() and p.name not in args.skip)
            corpus = convertible(files)
            results["sets"].append(run_set(f"corpus ({CORPUS}, without {', '.join(args.skip)})",
                                           corpus, args.workers, args.sample_a, work / "c"))
        else:
            print(f"\n(corpus set skipped: {CORPUS} not found)")
        # real documents make LibreOffice's memory grow; small generated ones hardly do
        results["rss"] = run_rss(corpus or generated, args.workers, args.rss_conversions, work / "r")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
