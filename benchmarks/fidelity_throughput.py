"""What fidelity costs: conversions per second with and without it, on the developer corpus.

Runs `convert_tree` (what `umstieg convert` runs) on the corpus's Office files, on one warm pool:
  (a) without fidelity,
  (b) with the structural tier (readers + comparison + package check, no rendering),
  (c) with the default tiers (structural everywhere, visual on documents flagged review/broken),
  (d) with the visual tier on every document (only with --visual-all),
and prints documents per second, the overhead of (b)-(d) over (a), and the structural tier's cost
as a share of conversion time, summed per document from results.jsonl (the issue's budget: at
most 25 %). bigfoot.xlsx (1024 sheets, 100+ s and 18 GB in LibreOffice by itself) is left out, as
in convert_throughput.py.

    .venv/bin/python benchmarks/fidelity_throughput.py [--workers 2] [--visual-all] [--repeat 2]

Figures depend on the machine and what else runs on it; compare runs on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from converters.pool import ConverterPool  # noqa: E402
from converters.sniff import sniff  # noqa: E402
from converters.tree import convert_tree  # noqa: E402
from core.settings import ConversionSettings  # noqa: E402
from reports.fidelity import make_assessor  # noqa: E402
from reports.scoring import FidelitySettings  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
LEFT_OUT = {"bigfoot.xlsx"}


def corpus_tree(work: Path) -> tuple[Path, int]:
    """A tree of links to the corpus's Office files LibreOffice converts (encrypted/corrupt ones left out)."""
    tree = work / "src"
    n = 0
    for folder in ("documents", "spreadsheets", "presentations"):
        for path in sorted((CORPUS / folder).iterdir()):
            s = sniff(path)
            if path.name in LEFT_OUT or s.outcome is not None or s.format is None or s.format.is_odf:
                continue
            target = tree / folder / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, target)
            n += 1
    return tree, n


def run(pool: ConverterPool, tree: Path, out: Path, assess) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = convert_tree(pool, tree, out, assess=assess)
    seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    conversion = sum(r.get("seconds") or 0 for r in lines)
    tiers = {"structural": 0.0, "visual": 0.0, "risks": 0.0}
    visual_docs = 0
    for r in lines:
        for tier, value in ((r.get("fidelity") or {}).get("seconds") or {}).items():
            tiers[tier] = tiers.get(tier, 0.0) + value
        visual_docs += "visual" in ((r.get("fidelity") or {}).get("seconds") or {})
    return {"documents": summary.total, "seconds": round(seconds, 2),
            "docs_per_s": round(summary.total / seconds, 3) if seconds else 0.0,
            "conversion_seconds_sum": round(conversion, 2),
            "tier_seconds_sum": {k: round(v, 2) for k, v in tiers.items()},
            "visual_documents": visual_docs, "verdicts": dict(summary.by_verdict)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--visual-all", action="store_true", help="also measure the visual tier on every document")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of all measurements; the best of each is kept")
    args = parser.parse_args()
    if not CORPUS.is_dir():
        print(f"no corpus at {CORPUS}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="umstieg-fidelity-bench-"))
    results: dict = {"workers": args.workers, "set": f"corpus ({CORPUS}), Office files LibreOffice converts, "
                                                      "without bigfoot.xlsx"}
    try:
        tree, n = corpus_tree(work)
        results["documents"] = n
        pool = ConverterPool(ConversionSettings(workers=args.workers, timeout=180)).start()
        try:
            run(pool, tree, work / "warm-up", None)                  # warm the workers (first loads are slow)
            variants = [("a_no_fidelity", None),
                        ("b_structural", make_assessor(FidelitySettings(visual="none"))),
                        ("c_default_visual_flagged", make_assessor(FidelitySettings(visual="flagged"),
                                                                   render=pool.render_pdf, thumbs=work / "thumbs"))]
            if args.visual_all:
                variants.append(("d_visual_all", make_assessor(FidelitySettings(visual="all"),
                                                               render=pool.render_pdf, thumbs=work / "thumbs")))
            # rounds interleave the variants, so that drift in the machine's load hits all of them alike
            for _ in range(args.repeat):
                for name, assess in variants:
                    measured = run(pool, tree, work / name, assess)
                    if name not in results or measured["seconds"] < results[name]["seconds"]:
                        results[name] = measured
                    print(f"{name:28} {measured['documents']} docs in {measured['seconds']:7.1f} s = "
                          f"{measured['docs_per_s']:.2f} docs/s  tiers {measured['tier_seconds_sum']}  "
                          f"visual on {measured['visual_documents']}", flush=True)
        finally:
            try:
                pool.close()
            except OSError as exc:        # a killed worker's last files racing the clean-up: not a result
                print(f"(pool clean-up: {exc})", file=sys.stderr)
        base = results["a_no_fidelity"]["seconds"]
        for name in [k for k in results if k[:2] in ("b_", "c_", "d_")]:
            results[name]["overhead_vs_a"] = f"{(results[name]['seconds'] / base - 1):+.1%}"
        b = results["b_structural"]
        results["structural_share_of_conversion"] = (
            f"{b['tier_seconds_sum']['structural'] / b['conversion_seconds_sum']:.1%}")
        structural_and_risks = b['tier_seconds_sum']['structural'] + b['tier_seconds_sum']['risks']
        results["structural_and_risk_share_of_conversion"] = (
            f"{structural_and_risks / b['conversion_seconds_sum']:.1%}")
        c = results["c_default_visual_flagged"]
        if c["visual_documents"]:
            results["visual_seconds_per_rendered_document"] = round(
                c["tier_seconds_sum"]["visual"] / c["visual_documents"], 2)
        print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=2))
        out = ROOT / "benchmarks" / "results"
        out.mkdir(exist_ok=True)
        (out / "fidelity.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
