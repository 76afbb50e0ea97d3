"""The Nextcloud target's verified load against a real Nextcloud 27, next to its floor.

A verified load cannot do less than send every byte (PUT) and read it back (GET) to check it. So
the floor is a raw loop of PUT + GET + sha256 per file, with the same httpx, the same app password,
the same files and the same number of threads (folders made inside the timed part, as the sink must).
Against it: umstieg's load and verify steps through the sink as the flow calls them — `find`
(a folder listing, once per folder), `put` (with the digest extraction computed, `X-OC-MTime`,
`OC-Checksum`; chunked upload v2 at or above the chunk threshold), `verify` (GET + sha256).
A second floor sends the same modification time and checksum headers as the sink (Nextcloud spends
a database update on each): the gap to it is umstieg's own client work; the gap between the two
floors is what keeping mtime and checksum costs the server.
Rounds are interleaved (raw, sink, raw with headers, raw, …) so that the shared machine's noise hits both alike;
medians are reported. Target: sink ≥ 0.9 × the raw floor (files/s).

Two sets, as a share holds them: many small files (200 × 20 KB) and a few large ones (20 × 20 MB,
below the default chunk threshold of 64 MiB: one PUT each, as the floor's).
Optionally (`--big-mb`) one large file's peak RSS in a process of its own (bounded memory).

Needs ../shared/nextcloud and PHP (bin/setup installs it).

    .venv/bin/python benchmarks/webdav_throughput.py [--small 200] [--large 20] [--rounds 5]
        [--concurrency 4] [--big-mb 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
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

from core.department import NextcloudTarget  # noqa: E402
from servers.nextcloud import NextcloudServer, nextcloud_missing  # noqa: E402
from sinks.webdav import Nextcloud  # noqa: E402

KiB, MiB = 1024, 1024 * 1024


def make_files(folder: Path, count: int, size: int, tag: str) -> list[tuple[str, Path, str]]:
    """(name, path, sha256) of `count` random files of `size` bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = folder / f"{tag}-{i:04d}.bin"
        data = os.urandom(size)
        path.write_bytes(data)
        files.append((f"Dokument {i:04d}.bin", path, hashlib.sha256(data).hexdigest()))
    return files


def run_raw(client: httpx.Client, base: str, files, concurrency: int, metadata: bool = False) -> float:
    """PUT every file, GET it back and hash it: the floor of a verified load. Seconds. With
    `metadata`, each PUT also carries the modification time and checksum the sink sends (each costs
    Nextcloud a database update): the same server work as the sink's, without its client logic."""
    started = time.perf_counter()
    r = client.request("MKCOL", base)
    assert r.status_code == 201, r.status_code

    def one(item):
        name, path, digest = item
        url = f"{base}/{quote(name)}"
        headers = {"Content-Length": str(path.stat().st_size)}
        if metadata:
            headers |= {"X-OC-MTime": str(int(path.stat().st_mtime)), "OC-Checksum": f"SHA256:{digest}"}
        with open(path, "rb") as f:
            r = client.put(url, content=f, headers=headers)
        assert r.status_code in (201, 204), r.status_code
        h = hashlib.sha256()
        with client.stream("GET", url) as r:
            assert r.status_code == 200, r.status_code
            for block in r.iter_bytes(MiB):
                h.update(block)
        assert h.hexdigest() == digest

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - started


def run_sink(sink: Nextcloud, owner: str, folder: str, files, concurrency: int) -> float:
    """The load and verify steps for every file, as the flow calls the sink. Seconds."""
    started = time.perf_counter()

    def one(item):
        name, path, digest = item
        rel = f"{folder}/{name}"
        ref = sink.find(owner, rel, digest) or sink.put(owner, rel, path, path.stat().st_mtime, digest=digest)
        assert sink.verify(ref, digest) is None

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - started


def throughput(nc: NextcloudServer, args, tmp: Path) -> list[dict]:
    user = nc.new_user("bench")
    os.environ["BENCH_NC_PW"] = user.secret
    sets = [("small", make_files(tmp / "small", args.small, 20 * KiB, "s")),
            ("large", make_files(tmp / "large", args.large, 20 * MiB, "l"))]
    sink = Nextcloud(NextcloudTarget(url=nc.url, app_passwords={user.login: "env:BENCH_NC_PW"}, timeout=600))
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    rows = []
    with httpx.Client(auth=(user.login, user.secret), timeout=600, limits=limits) as client:
        root = f"{nc.url}/remote.php/dav/files/{user.login}"
        for label, files in sets:
            if not files:
                continue
            times: dict[str, list[float]] = {"raw": [], "meta": [], "sink": []}
            for r in range(args.rounds):
                times["raw"].append(run_raw(client, f"{root}/raw-{label}-{r}", files, args.concurrency))
                times["sink"].append(run_sink(sink, user.login, f"sink-{label}-{r}", files, args.concurrency))
                times["meta"].append(run_raw(client, f"{root}/meta-{label}-{r}", files, args.concurrency, True))
                print(f"  {label} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
                      flush=True)
            mib = sum(p.stat().st_size for _, p, _ in files) / MiB
            raw, meta, put = (statistics.median(times[k]) for k in ("raw", "meta", "sink"))
            rows.append({"set": label, "files": len(files), "mib": mib, "raw_s": raw, "meta_s": meta, "sink_s": put,
                         **{f"{k}_all": v for k, v in times.items()}, "ratio": raw / put, "ratio_meta": meta / put})
    sink.close()
    print(f"\nreal Nextcloud 27 on loopback, {args.concurrency} threads, median of {args.rounds} interleaved rounds;"
          " ratio = sink files/s ÷ raw files/s (target ≥ 0.9)")
    print("| files | raw PUT + GET + sha256 | the same with mtime + checksum headers | umstieg find + put + "
          "verify | ratio to raw | ratio to raw with headers |\n|---|---:|---:|---:|---:|---:|")
    def cell(r: dict, k: str) -> str:
        return f"{r['files'] / r[k]:.1f} files/s ({r['mib'] / r[k]:.1f} MiB/s)"

    for r in rows:
        print(f"| {r['files']} × {r['mib'] / r['files']:.2f} MiB | {cell(r, 'raw_s')} | {cell(r, 'meta_s')} | "
              f"{cell(r, 'sink_s')} | {r['ratio']:.2f} | {r['ratio_meta']:.2f} |")
    return rows


def big_child(url: str, login: str, src: str) -> None:
    """In a process of its own: put one big file (chunked), verify it; seconds and peak RSS."""
    sink = Nextcloud(NextcloudTarget(url=url, app_passwords={login: "env:BENCH_NC_PW"}, timeout=3600))
    path = Path(src)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    started = time.perf_counter()
    ref = sink.put(login, "gross.bin", path, path.stat().st_mtime, digest=digest.hexdigest())
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    problem = sink.verify(ref, digest.hexdigest())
    verify_s = time.perf_counter() - started
    print(json.dumps({"put_s": put_s, "verify_s": verify_s, "problem": problem,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def big_file(nc: NextcloudServer, args, tmp: Path) -> dict:
    user = nc.new_user("bench-big")
    os.environ["BENCH_NC_PW"] = user.secret
    src = tmp / "gross.bin"
    with open(src, "wb") as f:
        for _ in range(args.big_mb):
            f.write(os.urandom(MiB))
    out = subprocess.run([sys.executable, __file__, "--big-child", nc.url, user.login, str(src)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["problem"] is None, result["problem"]
    print(f"\none {args.big_mb} MiB file, chunked: put {result['put_s']:.0f} s "
          f"({args.big_mb / result['put_s']:.0f} MiB/s), verify {result['verify_s']:.0f} s, "
          f"peak RSS of the moving process {result['peak_rss_mb']:.0f} MB")
    return result


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--big-child":
        return big_child(sys.argv[2], sys.argv[3], sys.argv[4])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200, help="files of 20 KB")
    parser.add_argument("--large", type=int, default=20, help="files of 20 MB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--big-mb", type=int, default=0, help="also move one file this large (peak RSS)")
    args = parser.parse_args()
    why = nextcloud_missing()
    if why:
        sys.exit(f"webdav_throughput: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="umstieg-webdav-bench-"))
    nc = NextcloudServer(tmp / "nextcloud")
    try:
        nc.start()
        results = {"throughput": throughput(nc, args, tmp)}
        if args.big_mb:
            results["big_file"] = big_file(nc, args, tmp)
        print("\n" + json.dumps(results, indent=1))
    finally:
        nc.remove()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
