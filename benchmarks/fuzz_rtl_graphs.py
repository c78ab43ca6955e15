"""The RTL twin's graphs on the fuzzer's graph models: every model among the first 500 seeds that
holds a residual block or a concatenation (tests/fuzz_models.py), through ``flipq.hls.verify`` with
the RTL twin in Verilator (random input gaps and output stalls, every ``planes``) and no C-sim.

    python benchmarks/fuzz_rtl_graphs.py [--out docs/results/fuzz_rtl_graphs.json]

Per model: its constructs, the verdict, the number of ``rtl=emulator`` rows (one a ``planes``).
The file is rewritten as each model ends, so a stopped run keeps what it checked.
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
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "fuzz_rtl_graphs.json"))
    args = ap.parse_args()
    res = []
    for s in range(args.seeds):
        sp = spec_from_seed(s)
        c = constructs(sp)
        if not c & {"res", "cat"}:
            continue
        work = Path(tempfile.mkdtemp())
        try:
            model, raw = export_spec(sp, work)
        except Exception as e:  # noqa: BLE001 -- a spec Brevitas cannot export is reported, not fatal
            print(s, "export-crash", e, flush=True)
            continue
        t = time.time()
        v = verify_model(raw, work / "hls", rows=16, seed=sp["seed"], pe=sp["pe"], group_size=sp["group_size"],
                         csim=False, qonnx_rows=4, rtl=True)
        rtl = [k for k in v.stages if k.startswith("rtl")]
        res.append({"seed": s, "constructs": sorted(c), "status": v.status, "reason": v.reason, "rtl_rows": len(rtl),
                    "notes": v.notes})
        print(s, sorted(c), v.status, v.reason, len(rtl), (v.message or "")[:150], v.notes, f"{time.time() - t:.0f}s",
              flush=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
