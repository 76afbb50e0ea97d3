"""WebDAV target throughput and memory.

1. Files/s and MB/s from a local folder to a WebDAV target on loopback, through the sink
   (`put`: folders, name mapping, Nextcloud's checksum header, streaming) versus raw concurrent
   PUTs of the same files with the same HTTP client (httpx, same concurrency, folders made
   beforehand) — target: sink ≥ 0.9 × raw. Against two servers: wsgidav (a real WebDAV server,
   the OX Drive stand-in) and the Nextcloud test server (tests/servers/nextcloud_dav.py), each a
   process of its own. The whole load step of a migration (find, put, verify by download and
   hash) is measured too, for information: it moves every byte twice.
2. Peak RSS of a process moving a 5 GB file to the Nextcloud test server, in chunks and as one
   plain PUT, then verifying it (download and hash) — target: < 300 MB. The file is sparse (no
   disk used) and the server stores zero runs as holes.

    .venv/bin/python benchmarks/webdav_throughput.py [--files 300] [--concurrency 4] [--rounds 9] [--big-gb 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402

from core.department import NextcloudTarget, OXDriveTarget  # noqa: E402
from servers.wsgidav_server import WsgiDavServer  # noqa: E402
from sinks.webdav import Nextcloud, OXDrive  # noqa: E402

MiB = 1024 * 1024
USER, PASSWORD = "t-anna", "bench-pw"


def make_files(folder: Path, count: int, seed: int = 7) -> list[tuple[str, Path]]:
    """`count` files, sizes like an office share: mostly tens of KB, some MB (≈ 0.5 MB mean)."""
    import random
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        size = int(rng.choice([8, 20, 40, 80, 150, 300, 600]) * 1024 * rng.uniform(0.5, 1.5))
        if i % 25 == 0:
            size = rng.randint(2, 6) * MiB
        rel = f"Abteilung {i // 60}/Akte {i // 15}/Dokument {i:04d}.bin"     # 15 files a folder
        path = folder / f"{i:04d}.bin"
        path.write_bytes(os.urandom(size))
        files.append((rel, path))
    return files


class NextcloudProcess:
    """The Nextcloud test server as a process of its own (so that it does not share our GIL)."""

    def __init__(self, root: Path, sparse: bool = False) -> None:
        args = [sys.executable, str(ROOT / "tests" / "servers" / "nextcloud_dav.py"), "--root", str(root),
                "--user", f"{USER}:{PASSWORD}"] + (["--sparse"] if sparse else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("the Nextcloud test server did not start")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)


def run_raw(client: httpx.Client, base: str, files, concurrency: int) -> float:
    """The least HTTP work that lands the files: one MKCOL per folder, then concurrent PUTs; seconds."""
    folders = sorted({str(Path(rel).parent) for rel, _ in files})
    client.request("MKCOL", base).raise_for_status()
    started = time.perf_counter()
    made = set()
    for folder in folders:
        parts = folder.split("/")
        for k in range(1, len(parts) + 1):
            sub = "/".join(parts[:k])
            if sub not in made:
                client.request("MKCOL", f"{base}/{quote(sub)}")
                made.add(sub)

    def put(item):
        rel, path = item
        with open(path, "rb") as f:
            r = client.put(f"{base}/{quote(rel)}", content=f,
                           headers={"Content-Length": str(path.stat().st_size)})
        r.raise_for_status()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(put, files))
    return time.perf_counter() - started


def run_sink(sink, prefix: str, files, concurrency: int, how: str = "put", digests: dict | None = None) -> float:
    """The sink as the steps use it; seconds. `put`: put alone (it hashes the file itself where
    the server wants a checksum); `digest`: put given the sha256 the flow already has (from
    extraction); `load`: find, then put (the load step); `full`: find, put, verify."""
    def load(item):
        rel, path = item
        target = f"{prefix}/{rel}"
        if how == "put":
            sink.put(USER, target, path, time.time())
        elif how == "digest":
            sink.put(USER, target, path, time.time(), digest=digests[path])
        else:
            ref = sink.find(USER, target, digests[path]) or sink.put(USER, target, path, time.time())
            if how == "full":
                assert sink.verify(ref, digests[path]) is None

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(load, files))
    return time.perf_counter() - started


def throughput(args, tmp: Path) -> list[dict]:
    files = make_files(tmp / "source", args.files)
    total = sum(p.stat().st_size for _, p in files)
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for _, p in files}
    print(f"{len(files)} files, {total / MiB:.0f} MiB, {args.concurrency} at a time, {args.rounds} rounds")
    os.environ["BENCH_PW"] = PASSWORD
    rows = []
    wsgidav = WsgiDavServer(tmp / "wsgidav", {USER: PASSWORD}).start()
    nextcloud = NextcloudProcess(tmp / "nextcloud")
    try:
        targets = [
            ("OX Drive sink → wsgidav", f"{wsgidav.url}/{USER}",
             OXDrive(OXDriveTarget(url=wsgidav.url, app_passwords={USER: "env:BENCH_PW"}, folder="{user}"))),
            ("Nextcloud sink → Nextcloud test server", f"{nextcloud.url}/remote.php/dav/files/{USER}",
             Nextcloud(NextcloudTarget(url=nextcloud.url, app_passwords={USER: "env:BENCH_PW"}))),
        ]
        limits = httpx.Limits(max_connections=args.concurrency * 2)
        with httpx.Client(auth=(USER, PASSWORD), timeout=60, limits=limits) as client:
            for name, base, sink in targets:
                times = {k: [] for k in ("raw", "put", "digest", "load", "full")}
                for r in range(args.rounds):      # interleaved, so that drift and noise hit all alike
                    times["raw"].append(run_raw(client, f"{base}/raw{r}", files, args.concurrency))
                    for how in ("put", "digest", "load", "full"):
                        times[how].append(run_sink(sink, f"{how}{r}", files, args.concurrency, how, digests))
                print(f"  {name}: " + "; ".join(f"{k} {sorted(round(x, 2) for x in v)} s" for k, v in times.items()))
                row = {"target": name, "files": len(files), "mib": total / MiB,
                       **{f"{k}_s": statistics.median(v) for k, v in times.items()},
                       **{f"{k}_best_s": min(v) for k, v in times.items()}}
                rows.append(row)
                sink.close()
    finally:
        nextcloud.stop()
        wsgidav.stop()
    print("\nfiles/s (MiB/s), median of the rounds (the machine is shared: medians, not bests); "
          "ratio = raw time / sink time")
    print("| target | raw PUTs | sink put | ratio | put with the flow's digest | ratio | find + put (load step) "
          "| ratio | find + put + verify |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cell = lambda k: f"{r['files'] / r[k + '_s']:.0f} ({r['mib'] / r[k + '_s']:.0f})"   # noqa: E731
        ratio = lambda k: f"{r['raw_s'] / r[k + '_s']:.2f}"                                  # noqa: E731
        print(f"| {r['target']} | {cell('raw')} | {cell('put')} | {ratio('put')} | {cell('digest')} | "
              f"{ratio('digest')} | {cell('load')} | {ratio('load')} | {cell('full')} |")
    return rows


def big_child(url: str, src: str, threshold: int) -> None:
    """In a process of its own: put one big file, verify it, report seconds (RSS: by the parent)."""
    os.environ["BENCH_PW"] = PASSWORD
    sink = Nextcloud(NextcloudTarget(url=url, app_passwords={USER: "env:BENCH_PW"}, chunk_threshold=threshold,
                                     timeout=600))
    path = Path(src)
    started = time.perf_counter()
    ref = sink.put(USER, f"gross-{threshold}.bin", path, path.stat().st_mtime)
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    zero_digest = _zero_sha256(path.stat().st_size)
    problem = sink.verify(ref, zero_digest)
    verify_s = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"put_s": put_s, "verify_s": verify_s, "problem": problem, "peak_rss_mb": peak_kib / 1024}))


def _zero_sha256(size: int) -> str:
    digest, block, left = hashlib.sha256(), bytes(MiB), size
    while left:
        n = min(MiB, left)
        digest.update(block[:n])
        left -= n
    return digest.hexdigest()


def big_file(args, tmp: Path) -> list[dict]:
    usage = shutil.disk_usage(tmp)
    print(f"\n{args.big_gb} GB sparse file; {usage.free / 2**30:.0f} GiB free in {tmp} (a sparse file uses none)")
    src = tmp / "gross.bin"
    with open(src, "wb") as f:
        f.truncate(int(args.big_gb * 1e9))
    size = src.stat().st_size
    nextcloud = NextcloudProcess(tmp / "nextcloud-big", sparse=True)
    rows = []
    try:
        for label, threshold in (("chunked (64 MiB chunks)", 64 * MiB), ("one plain PUT", size + 1)):
            out = subprocess.run([sys.executable, __file__, "--big-child", nextcloud.url, str(src), str(threshold)],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            assert result["problem"] is None, result["problem"]
            rows.append({"how": label, "peak_rss_mb": result["peak_rss_mb"], "put_s": result["put_s"],
                         "verify_s": result["verify_s"], "gb": size / 1e9})
    finally:
        nextcloud.stop()
    print("\n| 5 GB file | peak RSS of the moving process | put | MB/s | verify (GET + sha256) |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['how']} | {r['peak_rss_mb']:.0f} MB | {r['put_s']:.0f} s | {r['gb'] * 1000 / r['put_s']:.0f} | {r['verify_s']:.0f} s |")
    return rows


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--big-child":
        return big_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--big-gb", type=float, default=5.0)
    parser.add_argument("--skip-big", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="umstieg-webdav-bench-"))
    try:
        results = {"throughput": throughput(args, tmp)}
        if not args.skip_big:
            results["big_file"] = big_file(args, tmp)
        print("\n" + json.dumps(results, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
