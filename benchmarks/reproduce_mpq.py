"""Reproduce flip-based mixed precision's compression result (Kim et al., TNNLS 2021) on
Fashion-MNIST: float, uniform W4A4, uniform W2A4 and flip-MPQ (W2A4 base + extra bits), several
seeds; accuracy mean +- std and stored weight bits (group flags included) against W4A4.

Every quantized variant is retrained from the same float network (per seed), as in the paper.
Each finished run is saved under ``build/mpq_runs/``, and every run checkpoints each epoch, so an
interrupted benchmark continues where it stopped when started again with the same options.

    .venv/bin/python benchmarks/reproduce_mpq.py                 # the documented run (~20-40 min on 2 shared cores)
    .venv/bin/python benchmarks/reproduce_mpq.py --quick         # a few minutes, for tuning

Writes ``<out>/mpq.json``, ``<out>/mpq.png`` (accuracy vs stored bits) and
``<out>/mpq_allocation.png`` (where the extra bits went, first seed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from flipq.host.bitplan import BitPlan, LayerBits
from flipq.quant.data import Dataset, load_dataset
from flipq.quant.flip import (FlipConfig, plot_allocation, stored_weight_bits,
                              train_flip, weight_bits_breakdown)
from flipq.quant.models import FloatNet, QuantNet, copy_mac_weights, get_arch, mac_names
from flipq.quant.train import TrainConfig, evaluate, train

VARIANTS = ("float", "w4a4", "w3a4", "w2a4", "w2a4-ends", "flip")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--work", default=None, help="checkpoints and per-run results (default build/mpq_runs)")
    p.add_argument("--arch", default="vgg7-fm")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["float", "w4a4", "w2a4", "w2a4-ends", "flip"], choices=VARIANTS)
    p.add_argument("--train-size", type=int, default=8000, help="training subset (of 60,000)")
    p.add_argument("--eval-size", type=int, default=2000, help="test rows scored after each epoch")
    p.add_argument("--float-epochs", type=int, default=12)
    p.add_argument("--epochs", type=int, default=6, help="retraining epochs per quantized variant")
    p.add_argument("--float-lr", type=float, default=3e-3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--base-bits", type=int, default=2, help="flip-MPQ's base weight width")
    p.add_argument("--ends-bits", type=int, default=4,
                   help="weight width of the first and last MAC layer in flip-MPQ's base plan and in "
                        "w2a4-ends (0: --base-bits)")
    p.add_argument("--group-size", type=int, default=FlipConfig.group_size)
    p.add_argument("--window", type=float, default=FlipConfig.window)
    p.add_argument("--threshold", type=float, default=FlipConfig.threshold)
    p.add_argument("--allocate-epochs", type=int, nargs="*", default=[1, 3])
    p.add_argument("--promote", default=FlipConfig.promote)
    p.add_argument("--lr-factor", type=float, default=FlipConfig.lr_factor)
    p.add_argument("--lr-band", type=float, default=FlipConfig.lr_band)
    p.add_argument("--lr-mode", default=FlipConfig.lr_mode)
    p.add_argument("--max-fraction", type=float, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="tuning size: 3000 training rows, 1000 eval rows, 2+3 epochs, one seed")
    p.add_argument("--tag", default="", help="suffix for flip run names and outputs (keeps tuning runs apart)")
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.eval_size, args.float_epochs, args.epochs = 3000, 1000, 2, 3
        args.allocate_epochs = [0]
        if args.seeds == [0, 1, 2]:
            args.seeds = [0]
        args.tag = args.tag or "_quick"  # never overwrite the documented results
    return args


def flip_config(args) -> FlipConfig:
    return FlipConfig(group_size=args.group_size, window=args.window, threshold=args.threshold,
                      allocate_epochs=tuple(args.allocate_epochs or ()), promote=args.promote,
                      lr_factor=args.lr_factor, lr_band=args.lr_band, lr_mode=args.lr_mode,
                      max_fraction=args.max_fraction)


def uniform_plan(arch, w: int, a: int) -> BitPlan:
    return BitPlan(tuple(LayerBits(n, w, a) for n in mac_names(arch)))


def run_name(args, variant: str, seed: int) -> str:
    # Only flip-MPQ depends on the tuning knobs; the baselines are shared between tags.
    return f"{variant}{args.tag if variant == 'flip' else ''}_s{seed}"


def one_seed(args, seed: int, work: Path) -> dict:
    arch = get_arch(args.arch)
    full = load_dataset("fashion-mnist", seed=seed, limit_train=args.train_size)
    # Per-epoch scores use a fixed test subset (full-test evaluation each epoch would cost as
    # much as a third of an epoch here); the reported accuracy is on all 10,000 test rows.
    rows = np.random.default_rng(1000 + seed).choice(len(full.x_test), args.eval_size, replace=False)
    ds = Dataset(full.name, full.x_train, full.y_train, full.x_test[rows], full.y_test[rows])
    results = {}

    def done(name):
        f = work / f"{name}.json"
        return json.loads(f.read_text()) if f.is_file() else None

    fname = f"float_s{seed}"  # the float start is shared by every tag
    torch.manual_seed(seed)
    float_net = FloatNet(arch, ds.input_shape, ds.num_classes)
    fcfg = TrainConfig(epochs=args.float_epochs, batch_size=args.batch_size, lr=args.float_lr, seed=seed,
                       threads=args.threads)
    t0 = time.perf_counter()
    hist = train(float_net, ds, fcfg, checkpoint=work / f"{fname}.pt")
    if done(fname) is None:
        _, acc = evaluate(float_net, full.x_test, full.y_test)
        (work / f"{fname}.json").write_text(json.dumps({
            "accuracy": acc, "weight_bits": 32 * sum(m.weight.numel() for m in float_net.mac_layers().values()),
            "history": hist, "seconds": time.perf_counter() - t0}))
    if "float" in args.variants:
        results["float"] = done(fname)

    for variant in [v for v in args.variants if v != "float"]:
        name = run_name(args, variant, seed)
        if done(name) is not None:
            results[variant] = done(name)
            continue
        bits = {"w4a4": 4, "w3a4": 3, "w2a4": 2, "w2a4-ends": 2, "flip": args.base_bits}[variant]
        plan = uniform_plan(arch, bits, args.act_bits)
        if variant in ("flip", "w2a4-ends") and args.ends_bits:
            for end in (plan.names[0], plan.names[-1]):
                plan = plan.with_layer(end, weight_bits=args.ends_bits)
        torch.manual_seed(seed)
        model = QuantNet(arch, ds.input_shape, plan, ds.num_classes)
        copy_mac_weights(float_net, model)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                          threads=args.threads)
        t0 = time.perf_counter()
        extra = {}
        if variant == "flip":
            hist, plan = train_flip(model, ds, cfg, flip_config(args), checkpoint=work / f"{name}.pt")
            extra = {"plan": plan.to_dict(), "flip": hist.pop("flip")}
        else:
            hist = train(model, ds, cfg, checkpoint=work / f"{name}.pt")
        _, acc = evaluate(model, full.x_test, full.y_test)
        res = {"accuracy": acc, "weight_bits": stored_weight_bits(plan, model),
               "breakdown": weight_bits_breakdown(plan, model), "history": hist,
               "seconds": time.perf_counter() - t0, **extra}
        (work / f"{name}.json").write_text(json.dumps(res))
        results[variant] = res
        print(f"seed {seed} {variant}: accuracy {acc:.4f}, weight bits {res['weight_bits']}", flush=True)
    return results


def summarize(args, per_seed: dict[int, dict]) -> dict:
    out: dict = {"setup": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
                 "flip_config": flip_config(args).to_dict()}
    for v in args.variants:
        accs = [per_seed[s][v]["accuracy"] for s in per_seed]
        bits = [per_seed[s][v]["weight_bits"] for s in per_seed]
        out[v] = {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                  "accuracies": accs, "weight_bits": float(np.mean(bits)), "weight_bits_per_seed": bits,
                  "seconds": float(np.mean([per_seed[s][v]["seconds"] for s in per_seed]))}
    if "w4a4" in out:
        ref = out["w4a4"]["weight_bits"]
        for v in args.variants:
            out[v]["compression_vs_w4a4"] = ref / out[v]["weight_bits"]
        if "flip" in out:
            out["compression_vs_w4a4"] = out["flip"]["compression_vs_w4a4"]
            out["flip_accuracy_minus_w4a4"] = out["flip"]["accuracy"] - out["w4a4"]["accuracy"]
            out["flip_within_one_std_of_w4a4"] = bool(
                out["flip"]["accuracy"] >= out["w4a4"]["accuracy"] - max(out["w4a4"]["accuracy_std"],
                                                                          out["flip"]["accuracy_std"]))
    if "flip" in out:
        s0 = min(per_seed)
        out["flip"]["fractions_seed0"] = per_seed[s0]["flip"]["flip"]["fractions"]
        out["flip"]["allocations_seed0"] = per_seed[s0]["flip"]["flip"]["allocations"]
    return out


def plot_summary(summary: dict, variants, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for v in variants:
        if v == "float":
            ax.axhline(summary[v]["accuracy"] * 100, color="gray", ls="--", lw=1, label="float")
            continue
        ax.errorbar(summary[v]["weight_bits"] / 8192, summary[v]["accuracy"] * 100,
                    yerr=summary[v]["accuracy_std"] * 100, fmt="o", capsize=4, label=v)
    ax.set_xlabel("stored weight KiB (group flags included)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST: accuracy vs weight storage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    # Checkpoints are build output, not documentation; quick runs keep their own baselines.
    work = Path(args.work) if args.work else ROOT / "build" / ("mpq_runs_quick" if args.quick else "mpq_runs")
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    per_seed = {s: one_seed(args, s, work) for s in args.seeds}
    summary = summarize(args, per_seed)
    summary["wall_seconds_this_invocation"] = time.perf_counter() - t0
    stem = "mpq" + args.tag
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    plot_summary(summary, args.variants, out / f"{stem}.png")
    if "flip" in args.variants:
        s0 = min(per_seed)
        plan = BitPlan.from_dict(per_seed[s0]["flip"]["plan"])
        fr = {n: f["weights"] for n, f in per_seed[s0]["flip"]["flip"]["fractions"].items()}
        plot_allocation(plan, out / f"{stem}_allocation.png", fr,
                        title=f"Extra bits per layer (seed {s0}, G={args.group_size})")
    for v in args.variants:
        r = summary[v]
        print(f"{v:6s} accuracy {100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f} %  "
              f"weight bits {r['weight_bits']:.0f}  x{r.get('compression_vs_w4a4', float('nan')):.3f} vs W4A4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
