"""`umstieg scan` at scale: wall time and peak RSS of the risk scan and its reports (issue 19).

Each size runs `umstieg scan` in a fresh process on a generated tree: 100 files per folder, one
in ten a real Office file (a plain docx that converts cleanly, a docx with comments, an xlsx using
XLOOKUP that needs review, a damaged docx that needs a person), the rest small text files, and a
few names a spreadsheet would take for a formula (`=SUMME...`, `-rest`). Reported: wall seconds of
the whole command, the peak RSS of its process (ru_maxrss of the child), the sizes of scan.csv
and scan.ods, and the load average when it finished (the machine may be shared).

    .venv/bin/python benchmarks/scan_scale.py [--files 20000,100000] [--keep DIR] [--language en]

Target: memory that does not grow with the file count (scan.ods used to hold about 23 KB per file).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _samples(folder: Path) -> dict[str, bytes]:
    """One file of each kind, made with the tests' document generator (tests/docgen.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from docgen import make_docx, make_fidelity_docx, make_xlsx  # type: ignore[import-not-found]

    folder.mkdir(parents=True, exist_ok=True)
    plain = make_docx(folder / "plain.docx")
    commented = make_fidelity_docx(folder / "commented.docx")
    newer = make_xlsx(folder / "newer.xlsx")
    with zipfile.ZipFile(newer, "a") as z:                 # a formula only Excel 365 knows: review
        sheet = z.read("xl/worksheets/sheet1.xml").decode()
        z.writestr("xl/worksheets/sheet2.xml", sheet.replace("<f>A1*2</f>", "<f>_xlfn.XLOOKUP(A1,B1:B5,C1:C5)</f>"))
    data = {".docx": plain.read_bytes(), "-c.docx": commented.read_bytes(), ".xlsx": newer.read_bytes(),
            "-kaputt.docx": b"PK\x03\x04" + b"\x00" * 40}
    shutil.rmtree(folder)
    return data


def generate(root: Path, total: int) -> None:
    """`total` files under `root`, 100 per folder, two levels deep (see the module docstring)."""
    samples = _samples(root.parent / f".samples-{root.name}")
    kinds = [".docx", "-c.docx", ".xlsx", "-kaputt.docx"]
    for i in range(total):
        folder = root / f"akte{i // 10000:03d}" / f"vorgang{(i // 100) % 100:02d}"
        if i % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        if i % 10 == 0:
            kind = kinds[(i // 10) % len(kinds)]
            (folder / f"dok{i:07d}{kind}").write_bytes(samples[kind])
        else:
            name = f"=SUMME(A{i}).txt" if i % 997 == 1 else f"-rest{i:07d}.txt" if i % 991 == 2 else f"notiz{i:07d}.txt"
            (folder / name).write_bytes(b"Vermerk, \"zur Akte\"\n" * (1 + i % 3))


def run_size(src: Path, out: Path, files: int, language: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "umstieg", "scan", str(src), "--out", str(out),
                           "--language", language], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{files}: scan failed:\n{done.stderr[-3000:]}")
    result = {"files": files, "wall": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
              "rss_mb": after.ru_maxrss / 1024, "csv_mb": (out / "scan.csv").stat().st_size / 2**20,
              "ods_mb": (out / "scan.ods").stat().st_size / 2**20, "load": os.getloadavg()}
    print(f"{files:>9} files  {wall:8.2f} s  {files / wall:7.0f} files/s  CPU {result['cpu']:7.2f} s  "
          f"peak RSS {result['rss_mb']:6.0f} MB  scan.csv {result['csv_mb']:6.1f} MB  "
          f"scan.ods {result['ods_mb']:5.1f} MB  load {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="20000,100000", help="comma-separated tree sizes")
    ap.add_argument("--keep", type=Path, help="keep the trees and reports in this folder (and reuse the trees)")
    ap.add_argument("--language", default="en", help="language of the reports: de, en or fr")
    args = ap.parse_args()
    base_all = args.keep or Path(tempfile.mkdtemp(prefix="umstieg-bench-scan-"))
    try:
        for files in (int(f) for f in args.files.split(",")):
            src = base_all / f"n{files}" / "share"
            if not src.is_dir():
                started = time.perf_counter()
                generate(src, files)
                print(f"generated {files} files in {time.perf_counter() - started:.1f} s", flush=True)
            run_size(src, base_all / f"n{files}" / "scan", files, args.language)
    finally:
        if args.keep is None:
            shutil.rmtree(base_all, ignore_errors=True)


if __name__ == "__main__":
    main()
