"""The RTL twin on the fuzzer's models of given constructs: every model among the first 500 seeds
that holds one of ``--constructs`` (default: a residual block or a concatenation;
tests/fuzz_models.py), through ``flipq.hls.verify`` with the RTL twin in Verilator (random input
gaps and output stalls, every ``planes``), with ``--csim`` the C-sim too (every ``planes``, its
cycle counters against the model), at the spec's PE and at each ``--pe`` given.

    python benchmarks/fuzz_rtl_graphs.py [--out docs/results/fuzz_rtl_graphs.json]
    python benchmarks/fuzz_rtl_graphs.py --constructs depthwise --csim --pe 64 \
        --out docs/results/fuzz_depthwise.json

Per model and PE: its constructs, the verdict, the number of ``rtl=emulator`` (and
``csim=emulator``) rows (one a ``planes``). The file is rewritten as each run ends, so a stopped
run keeps what it checked.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fuzz_models import constructs, export_spec, spec_from_seed  # noqa: E402

from flipq.hls.verify import verify_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=500)
    ap.add_argument("--constructs", nargs="+", default=["res", "cat"])
    ap.add_argument("--csim", action="store_true", help="the C-sim too, at every planes")
    ap.add_argument("--pe", type=int, nargs="*", default=[], help="PE to run each model at besides its spec's")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "fuzz_rtl_graphs.json"))
    args = ap.parse_args()
    res = []
    for s in range(args.seeds):
        sp = spec_from_seed(s)
        c = constructs(sp)
        if not c & set(args.constructs):
            continue
        work = Path(tempfile.mkdtemp())
        try:
            model, raw = export_spec(sp, work)
        except Exception as e:  # noqa: BLE001 -- a spec Brevitas cannot export is reported, not fatal
            print(s, "export-crash", e, flush=True)
            continue
        for pe in [sp["pe"], *args.pe]:
            t = time.time()
            v = verify_model(raw, work / f"hls_pe{pe}", rows=16, seed=sp["seed"], pe=pe, group_size=sp["group_size"],
                             csim=args.csim, qonnx_rows=4, rtl=True)
            rtl = [k for k in v.stages if k.startswith("rtl")]
            csim = [k for k in v.stages if k.startswith("csim")]
            res.append({"seed": s, "pe": pe, "constructs": sorted(c), "status": v.status, "reason": v.reason,
                        "rtl_rows": len(rtl), "csim_rows": len(csim), "notes": v.notes})
            print(s, pe, sorted(c), v.status, v.reason, len(rtl), len(csim), (v.message or "")[:150], v.notes,
                  f"{time.time() - t:.0f}s", flush=True)
            Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
