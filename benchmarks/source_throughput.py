"""File source throughput and memory: SMB (Samba on loopback) and S3 (moto on loopback) against
a plain local copy of the same files.

1. Files/s and MB/s of `extract` for a set of small files (many round trips) and a few large
   ones (streaming), with `--threads` threads at once, for the SMB source, the S3 source and a
   baseline that copies the same files from the local disk (`shutil.copyfile`, same threads).
2. Peak RSS of a fresh process extracting one large file (`--big-mb`) from each source,
   against the RSS of the same process before the copy.

Both servers run on this machine, so the figures show the client's overhead, not a network's.
Needs root (smbd) and the test servers of tests/servers/.

    .venv/bin/python benchmarks/source_throughput.py [--files 200] [--large 4] [--large-mb 32] [--threads 4]
        [--big-mb 512]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from core.department import S3Source, SmbSource  # noqa: E402

MiB = 1024 * 1024
PASSWORD = "bench-smb-pw-5Tq"
KEY_ID, SECRET = "AKIAUMSTIEGBENCH0001", "bench-s3-secret"


def _make_files(folder: Path, files: int, large: int, large_mb: int) -> list[str]:
    names = []
    for i in range(files):
        p = folder / "klein" / f"datei {i:04d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(8_000 + (i * 997) % 40_000))
        names.append(p.relative_to(folder).as_posix())
    for i in range(large):
        p = folder / "gross" / f"gross {i}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            for _ in range(large_mb):
                f.write(os.urandom(MiB))
        names.append(p.relative_to(folder).as_posix())
    return names


def _run(label: str, extract, names: list[str], sizes: dict[str, int], out: Path, threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda n: extract(n, out / n), names))
    seconds = time.perf_counter() - start
    total = sum(sizes[n] for n in names)
    return {"label": label, "files/s": len(names) / seconds, "MB/s": total / MiB / seconds, "s": seconds}


def _vm(field: str) -> int:
    """A memory figure of this process from /proc (kB): VmHWM is the peak RSS since exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _peak_child(kind: str, cfg_json: str, location: str, dst: str) -> None:
    """In a fresh process: extract one file, print RSS before and peak after (kB)."""
    from sources.s3 import S3Bucket
    from sources.smb import SmbShare
    if kind == "smb":
        source = SmbShare(SmbSource.model_validate_json(cfg_json))
        source._connect()
    elif kind == "s3":
        source = S3Bucket(S3Source.model_validate_json(cfg_json))
        _ = source.client     # connect now (the client is made on first use), outside the measured copy
    before = _vm("VmHWM")
    if kind == "local":
        shutil.copyfile(location, dst)
    else:
        source.extract("anna", location, Path(dst))
    print(before, _vm("VmHWM"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--large-mb", type=int, default=32)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--big-mb", type=int, default=512)
    ap.add_argument("--peak-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_child:
        _peak_child(*args.peak_child)
        return

    import boto3

    from servers.s3 import MotoS3
    from servers.samba import SambaServer
    from sources.s3 import S3Bucket
    from sources.smb import SmbShare

    os.environ.update(BENCH_SMB_PW=PASSWORD, BENCH_S3_KEY=KEY_ID, BENCH_S3_SECRET=SECRET)
    work = Path(tempfile.mkdtemp(prefix="umstieg-bench-src-"))
    samba = SambaServer(password=PASSWORD)
    anna = samba.root / "anna"
    names = _make_files(anna, args.files, args.large, args.large_mb)
    big = anna / "big.bin"
    with open(big, "wb") as f:
        for _ in range(args.big_mb):
            f.write(os.urandom(MiB))
    sizes = {n: (anna / n).stat().st_size for n in names}
    try:
        with samba, MotoS3() as moto:
            samba.make_readable()
            s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                              aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
            s3.create_bucket(Bucket="bench")
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda n: s3.upload_file(str(anna / n), "bench", f"homes/anna/{n}"),
                              [*names, "big.bin"]))
            smb_cfg = SmbSource(name="smb", server="127.0.0.1", port=samba.port, share=samba.share,
                                username=samba.username, password="env:BENCH_SMB_PW", read_acl=False)
            s3_cfg = S3Source(name="s3", bucket="bench", prefix="homes", endpoint_url=moto.url,
                              access_key_id="env:BENCH_S3_KEY", secret_access_key="env:BENCH_S3_SECRET")
            smb, bucket = SmbShare(smb_cfg), S3Bucket(s3_cfg)
            runs = {
                "local copy (baseline)": lambda n, dst: (dst.parent.mkdir(parents=True, exist_ok=True),
                                                         shutil.copyfile(anna / n, dst)),
                "smb extract": lambda n, dst: smb.extract("anna", n, dst),
                "s3 extract": lambda n, dst: bucket.extract("anna", n, dst),
            }
            small = [n for n in names if n.startswith("klein/")]
            large = [n for n in names if n.startswith("gross/")]
            print(f"{len(small)} small files ({sum(sizes[n] for n in small) / MiB:.1f} MiB), "
                  f"{len(large)} × {args.large_mb} MiB, {args.threads} threads; loopback servers")
            for group, subset in (("small", small), ("large", large)):
                results = [_run(label, fn, subset, sizes, work / "out", args.threads) for label, fn in runs.items()]
                base = results[0]
                for r in results:
                    print(f"  {group:5} {r['label']:22} {r['files/s']:8.1f} files/s {r['MB/s']:8.1f} MB/s "
                          f"({r['MB/s'] / base['MB/s']:.2f} × baseline)")
            # SMB listing (discover) with and without ACLs
            for read_acl in (False, True):
                src = SmbShare(smb_cfg.model_copy(update={"read_acl": read_acl}))
                start = time.perf_counter()
                count = sum(1 for _ in src.discover("anna", "anna"))
                print(f"  smb discover read_acl={read_acl!s:5} {count / (time.perf_counter() - start):8.1f} files/s")
            print(f"peak RSS extracting one {args.big_mb} MiB file "
                  "(fresh process, after imports and connecting → peak):")
            for kind, cfg, location in (("local", "-", str(big)), ("smb", smb_cfg.model_dump_json(), "big.bin"),
                                        ("s3", s3_cfg.model_dump_json(), "big.bin")):
                out = subprocess.run([sys.executable, __file__, "--peak-child", kind, cfg, location,
                                      str(work / f"big-{kind}.bin")], capture_output=True, text=True,
                                     check=True, env=os.environ).stdout.split()
                before, peak = int(out[-2]), int(out[-1])
                print(f"  {kind:5} {before / 1024:6.1f} MB → {peak / 1024:6.1f} MB (+{(peak - before) / 1024:.1f} MB)")
                (work / f"big-{kind}.bin").unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
