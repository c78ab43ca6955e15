"""Accuracy and modeled cycles against the run-time ``planes`` knob, for the demo model.

No retraining: the same weights, only the number of most-significant weight planes each
layer accumulates changes. Accuracy comes from the emulator (and the bit-serial C-sim is
checked equal to it at every point); cycles from the cost model (hls/cost.py).

    python benchmarks/planes_tradeoff.py [--build build/demo]

Writes docs/benchmarks/planes_tradeoff.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build" / "demo"), help="a `flipq demo` build folder")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args(argv)
    # made first: a folder that cannot be made fails before minutes of work, not after
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    from flipq import pipeline
    from flipq.hls.cost import hls_report
    from flipq.host import Accelerator

    build = Path(args.build)
    if not (build / "hls" / "csim.json").is_file():
        pipeline.run(pipeline.BuildConfig(out=str(build), progress=False))
    with np.load(build / "data.npz") as d:
        x, y = d["x_test"], d["y_test"]
    emu = Accelerator.load(build, backend="emulator")
    csim = Accelerator.load(build, backend="csim")
    max_bits = max(layer.attrs["weight_bits"] for layer in emu.model.mac_layers)
    rows = []
    for planes in range(1, max_bits + 1):
        emu.set_planes(planes)
        csim.set_planes(planes)
        out = emu.predict(x)
        report = hls_report(emu.model, planes=planes)
        rows.append({
            "planes": planes,
            "accuracy": float((out.argmax(1) == y).mean()),
            "cycles": int(report["totals"]["cycles"]),
            "per_layer_cycles": {layer["name"]: int(layer["cycles"]) for layer in report["layers"]},
            "csim_equal_rows": int(np.all(csim.predict(x) == out, axis=1).sum()),
            "rows": int(len(x)),
        })
    csim.close()
    full = rows[-1]
    for r in rows:
        r["cycles_vs_full"] = round(r["cycles"] / full["cycles"], 4)

    result = {"model": str(build), "layers": [{"name": lay.name, "weight_bits": lay.attrs["weight_bits"]}
                                             for lay in emu.model.mac_layers], "points": rows}
    (out_dir / "planes_tradeoff.json").write_text(json.dumps(result, indent=1))
    lines = ["# Accuracy and modeled cycles against `planes`", "",
             "Demo model (digits CNN, weights " +
             ", ".join(f"{lay['name']} {lay['weight_bits']}b" for lay in result["layers"]) +
             f"), {len(x)} test rows; every layer accumulates its min(planes, bits) top planes. "
             "Accuracy: emulator; the bit-serial C-sim equals it on the rows shown. Cycles: cost model "
             "(one PE per layer). Produced by `benchmarks/planes_tradeoff.py`.", "",
             "| planes | accuracy | modeled cycles | vs full | C-sim = emulator |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['planes']} | {r['accuracy']:.4f} | {r['cycles']:,} | {r['cycles_vs_full']:.2f} | "
                     f"{r['csim_equal_rows']}/{r['rows']} |")
    lines += ["", "![accuracy and cycles against planes](planes_tradeoff.png)"]
    (out_dir / "planes_tradeoff.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    p = [r["planes"] for r in rows]
    ax.plot(p, [r["accuracy"] * 100 for r in rows], "o-", color="tab:blue", label="accuracy")
    ax.set_xlabel("planes accumulated (run time)")
    ax.set_ylabel("test accuracy (%)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(p, [r["cycles"] for r in rows], "s--", color="tab:red", label="modeled cycles")
    ax2.set_ylabel("modeled cycles / sample", color="tab:red")
    ax.set_title("flipq demo model: the planes knob")
    fig.tight_layout()
    fig.savefig(out_dir / "planes_tradeoff.png", dpi=120)
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
