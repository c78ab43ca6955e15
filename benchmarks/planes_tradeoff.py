"""Accuracy and modeled cycles against the run-time ``planes`` knob.

No retraining: the same weights, only the number of most-significant weight planes each
layer accumulates changes. Accuracy comes from the emulator (and the bit-serial C-sim is
checked equal to it at every point); cycles from the cost model (hls/cost.py), calibrated on
the RTL twin in Verilator (equal per layer at every planes, tests/test_rtl_twin.py).

    python benchmarks/planes_tradeoff.py [--build build/demo]          # the demo model
    python benchmarks/planes_tradeoff.py --fashion-w8                  # W8A8 VGG on Fashion-MNIST
    python benchmarks/planes_tradeoff.py --fashion-w8 --planes-aware 4 # the same, trained planes-aware

``--fashion-w8`` trains (QAT, Brevitas) the VGG-style CNN ``vgg7-fm`` with 8-bit weights and
activations on Fashion-MNIST (all 60,000 rows, ``--epochs``), folds it for the PYNQ-Z2 at
full precision, and keeps that folding while ``planes`` drops: the modeled interval falls with
the planes each layer's schedule keeps (PrecisionBatching's claim: 1.5-2x over 8-bit at equal
error). It reports the largest saving whose accuracy stays within 1 point of full precision.
``--planes-aware K`` trains it with ``flipq train --planes-aware K`` (each step at a planes drawn
from K..8, flipq.quant.planesaware) into its own build folder and page (``..._pa<K>``).

Writes docs/benchmarks/planes_tradeoff[_fashion_w8].{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def fashion_w8_build(folder: Path, epochs: int, seed: int, planes_aware: int = 0, full_share=None) -> Path:
    """Train vgg7-fm at W8A8 on Fashion-MNIST (all 60,000 rows) and build its C-sim, folded for
    the PYNQ-Z2 (resumable: training checkpoints each epoch, a finished build is reused)."""
    from flipq import pipeline
    from flipq.host.bitplan import BitPlan
    from flipq.quant.archs import get_arch, mac_names

    if (folder / "hls" / "csim.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    plan_file = folder / "plan_w8a8.toml"
    BitPlan.uniform(mac_names(get_arch("vgg7-fm")), 8, 8).save(plan_file)
    cfg = pipeline.BuildConfig(out=str(folder), dataset="fashion-mnist", arch="vgg7-fm", plan=str(plan_file),
                               epochs=epochs, seed=seed, io_type="io_stream", fold=True, check_rows=200,
                               planes_aware=planes_aware, planes_full_share=full_share)
    # a finished training (train.json) is kept: only export and hls run again
    pipeline.run(cfg, "export" if (folder / "train.json").is_file() else "train", "hls")
    return folder


def what_if_weights(model, planes: int, how: str):
    """A copy of the integer model whose weights are what ``planes`` would multiply by under
    another rounding of the dropped planes (a what-if for the docs, not flipq's datapath):
    ``mean``: truncation plus half the dropped range (``floor(w / 2^d) * 2^d + 2^(d-1)``, its
    bias removed on average); ``round``: to the nearest multiple of ``2^d`` (clipped)."""
    import copy

    out = copy.deepcopy(model)
    for layer in out.mac_layers:
        bits = layer.attrs["weight_bits"]
        d = bits - planes
        if d <= 0 or layer.attrs.get("full_planes"):
            continue
        w = layer.weight.astype(np.int64)
        if how == "mean":
            layer.weight = ((w >> d) << d) + (1 << (d - 1))
        else:
            layer.weight = np.clip(((w + (1 << (d - 1))) >> d) << d, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=None, help="a `flipq demo` build folder (default build/demo)")
    ap.add_argument("--fashion-w8", action="store_true", help="the W8A8 Fashion-MNIST VGG instead of the demo")
    ap.add_argument("--epochs", type=int, default=4, help="--fashion-w8: QAT epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--planes-aware", type=int, default=0, metavar="K", help="--fashion-w8: train planes-aware from K")
    ap.add_argument("--planes-full-share", type=float, default=None, metavar="P",
                    help="--planes-aware: share of full-precision steps")
    ap.add_argument("--csim-rows", type=int, default=200, help="rows the C-sim is checked on at every planes")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args(argv)
    # made first: a folder that cannot be made fails before minutes of work, not after
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    from flipq import pipeline
    from flipq.hls.cost import hls_report
    from flipq.hls.hwplan import plan_hardware
    from flipq.host import Accelerator

    if args.fashion_w8:
        pa = f"_pa{args.planes_aware}" if args.planes_aware else ""
        if args.planes_aware and args.planes_full_share is not None:
            pa += f"_full{round(100 * args.planes_full_share)}"
        seed = f"_s{args.seed}" if args.seed else ""
        build = fashion_w8_build(Path(args.build or ROOT / "build" / f"planes_fm8{pa}{seed}"), args.epochs, args.seed,
                                 args.planes_aware, args.planes_full_share)
        stem = f"planes_tradeoff_fashion_w8{pa}{seed}"
        title = ("vgg7-fm W8A8 on Fashion-MNIST" + (f", trained planes-aware from {args.planes_aware}" if pa else "")
                 + (f" ({args.planes_full_share:g} of the steps at full precision)"
                    if args.planes_aware and args.planes_full_share is not None else "")
                 + (f", seed {args.seed}" if seed else "") + ", folded for the PYNQ-Z2")
    else:
        build = Path(args.build or ROOT / "build" / "demo")
        if not (build / "hls" / "csim.json").is_file():
            pipeline.run(pipeline.BuildConfig(out=str(build), progress=False))
        stem, title = "planes_tradeoff", "demo model (digits CNN)"
    with np.load(build / "data.npz") as d:
        x, y = d["x_test"], d["y_test"]
    emu = Accelerator.load(build, backend="emulator")
    csim = Accelerator.load(build, backend="csim")
    hls = json.loads((build / "hls" / "hls_report.json").read_text())
    # the folding the build was made with, kept at every planes
    pe = {lay["name"]: lay["pe"] for lay in hls["layers"]}
    simd = {lay["name"]: lay["simd"] for lay in hls["layers"]}
    plan = plan_hardware(emu.model, pe, 0, simd)
    max_bits = max(layer.attrs["weight_bits"] for layer in emu.model.mac_layers)
    n_check = min(args.csim_rows, len(x))
    rows = []
    for planes in range(1, max_bits + 1):
        emu.set_planes(planes)
        csim.set_planes(planes)
        out = emu.predict(x)
        report = hls_report(emu.model, planes=planes, plan=plan, io_type=hls["io_type"])
        rows.append({
            "planes": planes,
            "accuracy": float((out.argmax(1) == y).mean()),
            "cycles": int(report["totals"]["cycles"]), "interval": int(report["totals"]["interval"]),
            "fps": float(report["totals"]["fps"]),
            "per_layer_cycles": {layer["name"]: int(layer["cycles"]) for layer in report["layers"]},
            "csim_equal_rows": int(np.all(csim.predict(x[:n_check]) == out[:n_check], axis=1).sum()),
            "csim_rows": n_check, "rows": int(len(x)),
        })
    csim.close()
    full = rows[-1]
    for r in rows:
        r["cycles_vs_full"] = round(r["cycles"] / full["cycles"], 4)
        r["interval_saving"] = round(full["interval"] / r["interval"], 4)
    from flipq.host.emulator import Emulator

    q_all = Emulator(emu.model).quantize_input(x)
    for r in rows:  # what other roundings of the dropped planes would give (numpy what-if)
        for how in ("mean", "round"):
            out = Emulator(what_if_weights(emu.model, r["planes"], how)).run(q_all)
            r[f"accuracy_if_{how}"] = float((emu.model.to_real(out.reshape(len(x), -1)).argmax(1) == y).mean())
    within = [r for r in rows if full["accuracy"] - r["accuracy"] < 0.01]
    best = max(within, key=lambda r: (r["interval_saving"], -r["planes"]))  # ties: the fewest planes

    result = {"model": str(build), "label": "cycles modeled; accuracy measured (emulator = C-sim)",
              "layers": [{"name": lay.name, "weight_bits": lay.attrs["weight_bits"], "simd": simd.get(lay.name),
                          "pe": pe.get(lay.name)} for lay in emu.model.mac_layers],
              "points": rows, "best_within_1pt": {"planes": best["planes"], "interval_saving": best["interval_saving"],
                                                   "accuracy": best["accuracy"], "accuracy_full": full["accuracy"]}}
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    lines = ["# Accuracy and modeled cycles against `planes`", "",
             f"{title}: weights " +
             ", ".join(f"{lay['name']} {lay['weight_bits']}b" for lay in result["layers"]) +
             f"; {len(x)} test rows; every layer accumulates its min(planes, bits) top planes. "
             f"Accuracy: emulator; the bit-serial C-sim equals it on the first {n_check} rows at every planes. "
             "Cycles: **modeled** (the cost model, equal to the RTL twin's Verilator-measured cycles per layer at every planes), with the build's folding "
             "(SIMD/PE per layer) kept at every planes. Produced by `benchmarks/planes_tradeoff.py`.", "",
             "| planes | accuracy | interval (cycles) | saving vs full | latency bound (cycles) | C-sim = emulator "
             "| what-if: mean-corrected | what-if: rounded |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['planes']} | {r['accuracy']:.4f} | {r['interval']:,} | {r['interval_saving']:.2f}x | "
                     f"{r['cycles']:,} | {r['csim_equal_rows']}/{r['csim_rows']} | {r['accuracy_if_mean']:.4f} | "
                     f"{r['accuracy_if_round']:.4f} |")
    lines += ["", f"Largest saving within 1 accuracy point of full precision: **{best['interval_saving']:.2f}x** at "
              f"planes={best['planes']} ({100 * best['accuracy']:.2f} % vs {100 * full['accuracy']:.2f} %).",
              "", "flipq's `planes` truncates each weight toward minus infinity (docs/datapath.md): every weight "
              "loses on average half the dropped range, all in one direction, so the error adds up over the "
              "fan-in instead of cancelling. The last two columns are a numpy what-if on the same weights (not "
              "what the hardware computes): truncation plus half the dropped range (its bias removed; in "
              "hardware one adder tree of the activations per layer, no extra cycles) and rounding to "
              "the nearest kept value (one extra plane step).",
              "", f"![accuracy and cycles against planes]({stem}.png)"]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    p = [r["planes"] for r in rows]
    ax.plot(p, [r["accuracy"] * 100 for r in rows], "o-", color="tab:blue", label="accuracy")
    ax.set_xlabel("planes accumulated (run time)")
    ax.set_ylabel("test accuracy (%)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(p, [r["interval"] for r in rows], "s--", color="tab:red", label="modeled interval")
    ax2.set_ylabel("modeled interval (cycles / sample)", color="tab:red")
    ax.set_title(f"the planes knob: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=120)
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
