"""Fuzz the chain with random Brevitas networks: torch = QONNX = emulator = C-sim (every planes).

Model ``i`` is ``spec_from_seed(i, ...)`` from tests/fuzz_models.py, in four families by
``i % 4`` (see :data:`FAMILIES`): 0, what flipq maps today with every KNOWN_BUGS construct
avoided (new bugs show here); 1, the same with only the known *refusals* avoided (known
mismatches and crashes show here, not hidden behind a bias refusal); 2, what flipq maps today,
nothing avoided; 3, the whole vocabulary of issue 11 (float scales, BatchNorm, AvgPool, ...:
mostly refusals). Each failure is written with its spec, to reproduce it.

    python benchmarks/fuzz_models.py [--models 500] [--jobs 2] [--out docs/results/fuzz.json]
    python benchmarks/fuzz_models.py --rtl [--no-csim] --out docs/results/fuzz_rtl.json   # + the RTL twin

With ``--rtl`` every mappable model also goes through the RTL twin in Verilator (random gaps and
stalls, every planes); ``rtl_rows`` sums its ``rtl=emulator`` rows over the models.

Writes ``{"models", "exact", "refused", "mismatch", "crash", "refusals": {reason: n},
"constructs": {gpool|res|cat|depthwise: {status: n}},
"mismatches": {reason: n}, "crashes": {reason: n}, "failures": [{seed, spec, verdict,
known_bugs}], "seconds"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fuzz_models import KNOWN_BUGS, check_spec, constructs, features, spec_from_seed  # noqa: E402

REFUSAL_BUGS = ("quantized_bias", "dense_first_4d")
FAMILIES = {  # name -> (avoid, full vocabulary)
    "mappable, known bugs avoided": (KNOWN_BUGS, False),
    "mappable, known refusals avoided": ({k: True for k in REFUSAL_BUGS}, False),
    "mappable": (None, False),
    "whole vocabulary": (None, True),
}


def family(seed: int) -> str:
    return list(FAMILIES)[seed % len(FAMILIES)]


def one(seed: int, work: str, rtl: bool = False, csim: bool = True) -> dict:
    warnings.filterwarnings("ignore")
    kind = family(seed)
    avoid, full = FAMILIES[kind]
    spec = spec_from_seed(seed, avoid=avoid, full_vocabulary=full)
    t0 = time.perf_counter()
    verdict = check_spec(spec, Path(work) / str(seed), rtl=rtl, csim=csim)
    return {"seed": seed, "family": kind, "spec": spec, "verdict": verdict.to_dict(),
            "known_bugs": sorted(features(spec)), "constructs": sorted(constructs(spec)),
            "seconds": round(time.perf_counter() - t0, 2)}


def summarize(results: list[dict], seconds: float) -> dict:
    by = {status: [r for r in results if r["verdict"]["status"] == status]
          for status in ("exact", "refused", "mismatch", "crash")}
    count = lambda rs: dict(Counter(r["verdict"]["reason"] for r in rs).most_common())  # noqa: E731
    return {"models": len(results), **{k: len(v) for k, v in by.items()},
            "refusals": count(by["refused"]), "mismatches": count(by["mismatch"]), "crashes": count(by["crash"]),
            "families": {f: dict(Counter(r["verdict"]["status"] for r in results if r["family"] == f))
                         for f in FAMILIES},
            # per graph construct, the verdicts of the models holding it (a model may hold several)
            "constructs": {c: dict(Counter(r["verdict"]["status"] for r in results if c in r.get("constructs", ())))
                           for c in ("gpool", "res", "cat", "depthwise")},
            "rtl_models": sum(1 for r in results if any(k.startswith("rtl=") for k in r["verdict"]["stages"])),
            "rtl_rows": [sum(v[0] for r in results for k, v in r["verdict"]["stages"].items() if k.startswith("rtl=")),
                         sum(v[1] for r in results for k, v in r["verdict"]["stages"].items() if k.startswith("rtl="))],
            "seconds": round(seconds, 1),
            "seconds_per_model": round(sum(r["seconds"] for r in results) / max(len(results), 1), 2),
            "failures": sorted(by["mismatch"] + by["crash"], key=lambda r: r["seed"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=500)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="processes (each model builds in its own folder)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "fuzz.json"))
    ap.add_argument("--rtl", action="store_true", help="also the RTL twin in Verilator (every planes)")
    ap.add_argument("--no-csim", action="store_true", help="skip the C-sim (with --rtl: the RTL row alone)")
    args = ap.parse_args(argv)
    # made first: a folder that cannot be made fails before minutes of work, not after
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    seeds = range(args.first_seed, args.first_seed + args.models)
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="flipq-fuzz-") as work:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            n = len(seeds)
            for r in pool.map(one, seeds, [work] * n, [args.rtl] * n, [not args.no_csim] * n):
                results.append(r)
                v = r["verdict"]
                print(f"{r['seed']:>5} {v['status']:<9}{r['seconds']:>6.1f} s  {v['reason'] or ''}", flush=True)
                if len(results) % 25 == 0 and len(results) < n:  # nothing lost if the run is cut short
                    part = summarize(results, time.perf_counter() - t0)
                    part.update(first_seed=args.first_seed, rtl=args.rtl, csim=not args.no_csim, partial=True)
                    Path(args.out).write_text(json.dumps(part, indent=1) + "\n")
    summary = summarize(results, time.perf_counter() - t0)
    summary.update(first_seed=args.first_seed, rtl=args.rtl, csim=not args.no_csim)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
