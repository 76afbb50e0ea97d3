"""How many files `umstieg convert` converts next to plain `soffice --convert-to`, on the same files.

The target: umstieg converts every file soffice converts (and refuses, with a typed outcome, only
what LibreOffice itself cannot read). Runs on the developer corpus's Office files (documents/,
spreadsheets/, presentations/) and legacy/ (../shared/corpus), or on folders given with --folder:

    .venv/bin/python benchmarks/convert_vs_soffice.py [--folder DIR ...] [--workers N]

(a) `soffice --headless --convert-to odt|ods|odp` once per file (the target by the file's
    extension, as a person would type it), one shared profile, the pool's timeout and memory limit;
    a file counts as converted when soffice wrote a valid ODF package;
(b) `umstieg convert SRC OUT --no-fidelity` on a tree holding the same files; a file counts as
    converted when results.jsonl says converted (or passthrough, for ODF that is already valid).

Prints both counts per folder side by side, then every file one converted and the other did not,
with umstieg's outcome and message. Wall times are printed too; throughput proper is measured by
benchmarks/convert_throughput.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from converters.formats import FORMATS, OFFICE_EXTENSIONS  # noqa: E402
from converters.odf import check_package  # noqa: E402
from core.settings import ConversionSettings  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
FOLDERS = ("documents", "spreadsheets", "presentations", "legacy")
CONVERTED = {"converted", "passthrough"}


def by_design(result: dict) -> str | None:
    """Why umstieg refuses, on purpose, a file soffice "converts"; None for any other refusal."""
    message = result.get("message", "")
    if result.get("outcome") == "encrypted" and "IRM" in message:
        # LibreOffice reads the stub Word writes in front of the protected content: the ODF holds
        # only "Permission for this document is currently restricted ...", not the document
        return "rights-managed (IRM): soffice converts only the placeholder page Word puts in front of it"
    if result.get("outcome") == "unreadable" and message.startswith("empty file (0 bytes)"):
        return "0 bytes: soffice makes a new, empty document of it"
    return None


def office_files(folder: Path) -> list[Path]:
    """Files named like Office documents (or ODF), at any depth, hidden files left out."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower().lstrip(".") in OFFICE_EXTENSIONS)


def soffice_target(path: Path) -> str:
    """What a person asks soffice for: the ODF of the family the extension names."""
    return FORMATS[path.suffix.lower().lstrip(".")].target


def run_soffice(files: list[tuple[str, Path]], work: Path, timeout: float, memory_mb: int) -> tuple[set[str], float]:
    """(a): the keys of the files plain soffice converted, and the seconds it took."""
    profile = (work / "soffice-profile").as_uri()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    limit = memory_mb * 2**20

    def bounded() -> None:          # the pool stops a document at this size too: same rules for both
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    subprocess.run(["soffice", "--headless", f"-env:UserInstallation={profile}", "--terminate_after_init"],
                   env=env, capture_output=True, timeout=300)
    converted: set[str] = set()
    started = time.perf_counter()
    for key, path in files:
        out = work / "soffice-out" / key.replace("/", "__")
        out.mkdir(parents=True)
        # a session of its own: on a timeout, its process group (oosplash and soffice.bin) is killed
        proc = subprocess.Popen(["soffice", "--headless", f"-env:UserInstallation={profile}", "--convert-to",
                                 soffice_target(path), "--outdir", str(out), str(path)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=bounded, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            continue
        written = [p for p in out.iterdir() if p.is_file()]
        if written and written[0].stat().st_size and not check_package(written[0]):
            converted.add(key)
    return converted, time.perf_counter() - started


def run_umstieg(files: list[tuple[str, Path]], work: Path, workers: int | None) -> tuple[dict[str, dict], float]:
    """(b): results.jsonl of `umstieg convert` by key, and the seconds it took."""
    src = work / "umstieg-src"
    for key, path in files:
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, src / key)
    out = work / "umstieg-out"
    cmd = [sys.executable, "-m", "umstieg", "convert", str(src), str(out), "--no-fidelity"]
    if workers:
        cmd += ["--workers", str(workers)]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=24 * 3600)
    seconds = time.perf_counter() - started
    results = {}
    for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        results[Path(record["source"]).relative_to(src).as_posix()] = record
    return results, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, action="append", help="folders to compare on (default: the corpus's)")
    parser.add_argument("--workers", type=int, default=None, help="umstieg's local workers [default: CPU cores]")
    args = parser.parse_args()
    folders = args.folder or [CORPUS / name for name in FOLDERS]
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        print(f"no folder to compare on ({CORPUS} not found): give --folder DIR")
        return 2
    files = [(f"{folder.name}/{p.relative_to(folder).as_posix()}", p)
             for folder in folders for p in office_files(folder)]
    settings = ConversionSettings()
    with tempfile.TemporaryDirectory(prefix="umstieg-vs-soffice-") as tmp:
        work = Path(tmp)
        print(f"{len(files)} files in {', '.join(str(f) for f in folders)}")
        print("(a) soffice --convert-to, one file at a time ...", flush=True)
        by_soffice, soffice_seconds = run_soffice(files, work, settings.timeout, settings.memory_limit_mb)
        print("(b) umstieg convert ...", flush=True)
        results, umstieg_seconds = run_umstieg(files, work, args.workers)

    by_umstieg = {key for key, r in results.items() if r["outcome"] in CONVERTED}
    print()
    print(f"{'folder':<16}{'files':>7}{'soffice':>10}{'umstieg':>10}")
    for folder in folders:
        keys = {key for key, _ in files if key.startswith(folder.name + "/")}
        print(f"{folder.name:<16}{len(keys):>7}{len(keys & by_soffice):>10}{len(keys & by_umstieg):>10}")
    print(f"{'all':<16}{len(files):>7}{len(by_soffice):>10}{len(by_umstieg):>10}")
    print(f"wall time: soffice {soffice_seconds:.0f} s ({len(files) / soffice_seconds:.2f} files/s), "
          f"umstieg {umstieg_seconds:.0f} s ({len(files) / umstieg_seconds:.2f} files/s, worker start-up included)")
    designed = {key: why for key in by_soffice - by_umstieg if (why := by_design(results.get(key, {})))}
    missed = sorted(by_soffice - by_umstieg - set(designed))
    extra = sorted(by_umstieg - by_soffice)
    if designed:
        print(f"\nsoffice converted, umstieg refuses on purpose ({len(designed)}):")
        for key, why in sorted(designed.items()):
            print(f"  {key}: {results[key]['outcome']}: {why}")
    if missed:
        print(f"\nsoffice converted, umstieg did not ({len(missed)}):")
        for key in missed:
            r = results.get(key, {})
            print(f"  {key}: {r.get('outcome', 'no result')}: {r.get('message', '')}")
    if extra:
        print(f"\numstieg converted, soffice did not ({len(extra)}):")
        for key in extra:
            print(f"  {key}: {results[key]['message']}")
    refused = Counter(r["outcome"] for key, r in results.items() if key not in by_umstieg)
    print(f"\numstieg's other outcomes: {dict(refused)}")
    print(f"target (umstieg converts every file soffice converts, but for the refusals on purpose above): "
          f"{'met' if not missed else 'NOT met'}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
