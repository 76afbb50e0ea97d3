"""How long sniffing and package checks take on files built to be expensive: the speed figures the
tests no longer assert (a test asserting wall time fails or passes by chance on a busy machine;
tests/test_sniff.py and tests/test_odf.py assert what is read and kept in memory instead).

1. converters.sniff on a real workbook with 100 MB of stored picture bytes (xlsx), and on an
   encrypted binary workbook with a 32 MB Workbook stream (xls). Target: under 0.25 s each on a
   quiet 2-core machine (what the tests used to assert).
2. converters.odf.check_package on an ODF text whose content.xml is a "billion laughs" entity
   bomb. Target: under 2 s.
3. converters.sniff over every Office file of the developer corpus (../shared/corpus), when present.

    .venv/bin/python benchmarks/sniff_speed.py [--rounds 5]

Prints the median and the worst of the rounds for each case.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from converters.odf import check_package  # noqa: E402
from converters.sniff import sniff  # noqa: E402
from docgen import ENTITY_BOMB, make_big_ole_workbook, make_big_xlsx, rewrite_package  # noqa: E402
from helpers import CORPUS  # noqa: E402


def timed(call, rounds: int) -> tuple[float, float]:
    """(median, worst) wall time of `call()` in seconds over `rounds` rounds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # the expensive files are the tests' own (tests/docgen.py), so that both look at the same bytes
    from odf.opendocument import OpenDocumentText
    from odf.text import P

    with tempfile.TemporaryDirectory(prefix="umstieg-bench-sniff-") as tmp:
        folder = Path(tmp)
        xlsx = make_big_xlsx(folder / "big.xlsx")
        xls = make_big_ole_workbook(folder / "big.xls")
        doc = OpenDocumentText()
        doc.text.addElement(P(text="Sehr geehrte Damen und Herren,"))
        doc.save(str(folder / "plain.odt"))
        bomb = rewrite_package(folder / "plain.odt", folder / "bomb.odt",
                               {"content.xml": lambda _: ENTITY_BOMB.decode()})
        cases = [("sniff, 100 MB xlsx", lambda: sniff(xlsx), 0.25),
                 ("sniff, 32 MB encrypted xls", lambda: sniff(xls), 0.25),
                 ("check_package, entity bomb", lambda: check_package(bomb), 2.0)]
        if CORPUS.is_dir():
            files = sorted(p for folder_name in ("documents", "spreadsheets", "presentations")
                           for p in (CORPUS / folder_name).iterdir() if p.is_file() and not p.name.startswith("."))
            cases.append((f"sniff, {len(files)} corpus files", lambda: [sniff(p) for p in files], None))
        else:
            print(f"corpus case skipped: {CORPUS} not found")
        for name, call, target in cases:
            median, worst = timed(call, args.rounds)
            verdict = "" if target is None else (" (target met)" if median < target else f" (target {target} s MISSED)")
            print(f"{name:34} median {median * 1000:8.1f} ms, worst {worst * 1000:8.1f} ms{verdict}")


if __name__ == "__main__":
    main()
