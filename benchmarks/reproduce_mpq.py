"""Reproduce flip-based mixed precision's compression result (Kim et al., TNNLS 2021) on
Fashion-MNIST: float, uniform W4A4 / W3A4, W2A4 with W4 ends (flip's base plan without flip), and
flip-MPQ (that base + extra bits), several seeds; accuracy mean +- std on the full test set
and stored weight bits (group flags included) against W4A4. Knobs are tuned on a validation split
drawn from the training rows outside the training subset, never on the test set.

Every quantized variant is retrained from the same float network (per seed), as in the paper.
Each finished run is saved under ``build/mpq_runs/``, and every run checkpoints each epoch, so an
interrupted benchmark continues where it stopped when started again with the same options.

    .venv/bin/python benchmarks/reproduce_mpq.py                 # the documented run (~41 min on 2 cores)
    .venv/bin/python benchmarks/reproduce_mpq.py --quick         # a few minutes, for tuning

Writes ``<out>/mpq.json``, ``<out>/mpq.md`` (the summary table), ``<out>/mpq.png`` (accuracy vs
stored bits) and ``<out>/mpq_allocation.png`` (where the extra bits went, first seed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from flipq.host.bitplan import BitPlan, LayerBits
from flipq.quant.data import Dataset, load_dataset, train_val_rows
from flipq.quant.flip import FlipConfig, train_flip
from flipq.quant.flipplot import plot_allocation
from flipq.quant.models import FloatNet, QuantNet, copy_mac_weights, get_arch, mac_names
from flipq.quant.scaling import WEIGHT_SCALE_RULES, pow2_weight_scale, quantize
from flipq.quant.storage import stored_weight_bits, weight_bits_breakdown
from flipq.quant.train import TrainConfig, evaluate, train

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
VARIANTS = ("float", "w4a4", "w3a4", "w2a4", "w2a4-ends", "base", "flip")
# "base": flip-MPQ's base plan (--base-bits, --ends-bits, --layer-bits) retrained without flip
# allocation, i.e. the same-base uniform-per-layer baseline.


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--work", default=None, help="checkpoints and per-run results (default build/mpq_runs)")
    p.add_argument("--arch", default="vgg7-fm")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    p.add_argument("--variants", nargs="+", default=["float", "w4a4", "w3a4", "w2a4-ends", "flip"],
                   choices=VARIANTS, help="'base' is flip's base plan without flip: w2a4-ends unless "
                                          "--layer-bits or --base-bits change it")
    p.add_argument("--data-path", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--train-size", type=int, default=8000, help="training subset (of 60,000)")
    p.add_argument("--val-size", type=int, default=5000,
                   help="validation rows, drawn from the training rows outside the training subset; "
                        "knobs are tuned on these, never on the test set")
    p.add_argument("--eval-size", type=int, default=1000,
                   help="validation rows scored after each epoch (progress only)")
    p.add_argument("--float-epochs", type=int, default=12)
    p.add_argument("--epochs", type=int, default=12, help="retraining epochs per quantized variant")
    p.add_argument("--float-lr", type=float, default=3e-3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--weight-scale", default="mse", choices=WEIGHT_SCALE_RULES,
                   help="power-of-two weight-scale rule of every quantized variant (flipq.quant.scaling)")
    p.add_argument("--base-bits", type=int, default=2, help="flip-MPQ's base weight width")
    p.add_argument("--ends-bits", type=int, default=4,
                   help="weight width of the first and last MAC layer in flip-MPQ's base plan and in "
                        "w2a4-ends (0: --base-bits)")
    p.add_argument("--layer-bits", nargs="*", default=[], metavar="LAYER=BITS",
                   help="base weight width of single layers (after --base-bits and --ends-bits), "
                        "e.g. conv2=3 conv3=3; used by flip and base")
    p.add_argument("--group-size", type=int, default=FlipConfig.group_size)
    p.add_argument("--window", type=float, default=FlipConfig.window)
    p.add_argument("--threshold", type=float, default=FlipConfig.threshold)
    p.add_argument("--allocate-epochs", type=int, nargs="*", default=[3, 7])
    p.add_argument("--promote", default=FlipConfig.promote)
    p.add_argument("--lr-factor", type=float, default=FlipConfig.lr_factor)
    p.add_argument("--lr-band", type=float, default=FlipConfig.lr_band)
    p.add_argument("--lr-mode", default=FlipConfig.lr_mode)
    p.add_argument("--max-fraction", type=float, default=None)
    # The documented rounds used the threshold rule; pinned here so a later change of
    # FlipConfig's defaults (docs/mpq.md, issue 14) does not change what this benchmark runs.
    p.add_argument("--budget", type=float, default=None,
                   help="fraction of each layer's groups at b+1 bits, ranked by --allocator (default: threshold rule)")
    p.add_argument("--allocator", default="flip", help="score of a budgeted allocation (flipq.quant.allocators)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--jobs", type=int, default=2,
                   help="seeds trained side by side in this many processes (one core each with --threads 1: "
                        "small nets train faster on one thread, and 2 threads spin against any other busy process)")
    p.add_argument("--quick", action="store_true",
                   help="tuning size: 3000 training rows, 1000 eval rows, 2+3 epochs, one seed")
    p.add_argument("--tag", default="", help="suffix for flip run names and outputs (keeps tuning runs apart)")
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.val_size, args.eval_size, args.float_epochs, args.epochs = 3000, 2000, 1000, 2, 3
        args.allocate_epochs = [0]
        if args.seeds == list(DEFAULT_SEEDS):
            args.seeds = [0]
        args.tag = args.tag or "_quick"  # never overwrite the documented results
    return args


def flip_config(args) -> FlipConfig:
    return FlipConfig(group_size=args.group_size, window=args.window, threshold=args.threshold,
                      allocate_epochs=tuple(args.allocate_epochs or ()), promote=args.promote,
                      lr_factor=args.lr_factor, lr_band=args.lr_band, lr_mode=args.lr_mode,
                      max_fraction=args.max_fraction, budget=args.budget, allocator=args.allocator)


def uniform_plan(arch, w: int, a: int) -> BitPlan:
    return BitPlan(tuple(LayerBits(n, w, a) for n in mac_names(arch)))


def base_plan(args, arch) -> BitPlan:
    """flip-MPQ's starting plan: --base-bits everywhere, first/last MAC layer at --ends-bits,
    then the --layer-bits overrides."""
    plan = uniform_plan(arch, args.base_bits, args.act_bits)
    if args.ends_bits:
        for end in (plan.names[0], plan.names[-1]):
            plan = plan.with_layer(end, weight_bits=args.ends_bits)
    for item in args.layer_bits:
        name, _, bits = item.partition("=")
        if name not in plan.names or not bits.isdigit():
            raise SystemExit(f"--layer-bits {item!r}: expected LAYER=BITS with LAYER in {plan.names}")
        plan = plan.with_layer(name, weight_bits=int(bits))
    return plan


def run_name(args, variant: str, seed: int) -> str:
    # Runs are keyed by what they depend on: every quantized run by its retraining length (and
    # training size and weight-scale rule), flip and base also by the tag (their knobs / base
    # plan). The float start is shared by every tag, rule and retraining length.
    size = "" if args.train_size == 8000 else f"_n{args.train_size}"
    rule = "" if args.weight_scale == "mse" else f"_{args.weight_scale}"
    tag = args.tag if variant in ("flip", "base") else ""
    return f"{variant}_e{args.epochs}{size}{rule}{tag}_s{seed}"


def scale_table(float_net, bits=(2, 3, 4)) -> dict:
    """Per MAC layer of a trained float network and per width: each rule's scale (as a multiple
    of the absmax scale), relative squared error of the quantized weights and the fraction of
    nonzero levels -- why the rule matters at 2-3 bits."""
    out = {}
    for name, layer in float_net.mac_layers().items():
        w = layer.weight.detach()
        row = {"weights": w.numel()}
        for b in bits:
            ref = pow2_weight_scale(w, b, "absmax")
            for rule in WEIGHT_SCALE_RULES:
                s = pow2_weight_scale(w, b, rule)
                q = quantize(w, b, s)
                row[f"w{b}_{rule}"] = {"scale_vs_absmax": float(s / ref),
                                       "rel_sq_error": float(((q - w) ** 2).sum() / (w ** 2).sum()),
                                       "nonzero": float((q != 0).float().mean())}
        out[name] = row
    return out


def split(args, seed: int):
    """Training subset (the same rows as ``load_dataset(limit_train=...)``), a validation set
    drawn from the remaining training rows, and the full 10,000-row test set."""
    full = load_dataset("fashion-mnist", path=args.data_path, seed=seed)
    idx, val = train_val_rows(len(full.x_train), args.train_size, args.val_size, seed)
    return full, idx, val


def one_seed(args, seed: int, work: Path) -> dict:
    arch = get_arch(args.arch)
    full, idx, val = split(args, seed)
    # Per-epoch progress is scored on the first --eval-size validation rows (the test set is
    # never looked at during training or tuning); every run is then scored on all validation
    # rows (for tuning) and on all 10,000 test rows (the reported accuracy).
    ds = Dataset(full.name, full.x_train[idx], full.y_train[idx], full.x_train[val[:args.eval_size]],
                 full.y_train[val[:args.eval_size]])
    x_val, y_val = full.x_train[val], full.y_train[val]
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
    if done(fname) is None or "val_accuracy" not in done(fname):
        _, acc = evaluate(float_net, full.x_test, full.y_test)
        _, vacc = evaluate(float_net, x_val, y_val)
        (work / f"{fname}.json").write_text(json.dumps({
            "accuracy": acc, "val_accuracy": vacc, "weight_bits": 32 * sum(m.weight.numel() for m in float_net.mac_layers().values()),
            "history": hist, "seconds": time.perf_counter() - t0}))
    if "float" in args.variants:
        results["float"] = done(fname)
    results["float_weight_scales"] = scale_table(float_net)

    for variant in [v for v in args.variants if v != "float"]:
        name = run_name(args, variant, seed)
        if done(name) is not None:
            results[variant] = done(name)
            continue
        if variant in ("flip", "base"):
            plan = base_plan(args, arch)
        else:
            plan = uniform_plan(arch, {"w4a4": 4, "w3a4": 3, "w2a4": 2, "w2a4-ends": 2}[variant], args.act_bits)
            if variant == "w2a4-ends":
                for end in (plan.names[0], plan.names[-1]):
                    plan = plan.with_layer(end, weight_bits=4)
        torch.manual_seed(seed)
        model = QuantNet(arch, ds.input_shape, plan, ds.num_classes, weight_scale=args.weight_scale)
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
        _, vacc = evaluate(model, x_val, y_val)
        res = {"accuracy": acc, "val_accuracy": vacc, "weight_bits": stored_weight_bits(plan, model),
               "breakdown": weight_bits_breakdown(plan, model), "history": hist,
               "seconds": time.perf_counter() - t0, **extra}
        (work / f"{name}.json").write_text(json.dumps(res))
        results[variant] = res
        print(f"seed {seed} {variant}: val {vacc:.4f} test {acc:.4f}, weight bits {res['weight_bits']}", flush=True)
    return results


def run_seeds(args, work: Path) -> dict[int, dict]:
    """``one_seed`` for every seed, in ``--jobs`` processes. Each run writes its own files, so
    seeds never share a checkpoint; a failed seed leaves the others' results on disk."""
    jobs = max(1, min(args.jobs, len(args.seeds)))
    if jobs == 1:
        return {s: one_seed(args, s, work) for s in args.seeds}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a forked child would inherit the parent's torch thread pools
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {s: pool.submit(one_seed, args, s, work) for s in args.seeds}
        return {s: f.result() for s, f in futures.items()}


def summarize(args, per_seed: dict[int, dict]) -> dict:
    out: dict = {"setup": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
                 "flip_config": flip_config(args).to_dict()}
    for v in args.variants:
        accs = [per_seed[s][v]["accuracy"] for s in per_seed]
        vaccs = [per_seed[s][v]["val_accuracy"] for s in per_seed]
        bits = [per_seed[s][v]["weight_bits"] for s in per_seed]
        sd = (lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else 0.0)
        out[v] = {"accuracy": float(np.mean(accs)), "accuracy_std": sd(accs), "accuracies": accs,
                  "val_accuracy": float(np.mean(vaccs)), "val_accuracy_std": sd(vaccs), "val_accuracies": vaccs, "weight_bits": float(np.mean(bits)), "weight_bits_per_seed": bits,
                  "seconds": float(np.mean([per_seed[s][v]["seconds"] for s in per_seed]))}
    if "w4a4" in out:
        ref = out["w4a4"]["weight_bits"]
        for v in args.variants:
            out[v]["compression_vs_w4a4"] = ref / out[v]["weight_bits"]
            # the seeds move every variant together (training subset): the paired difference
            # to W4A4 is the sharper comparison
            for key in ("accuracy", "val_accuracy"):
                out[v][f"paired_{key}_minus_w4a4"] = [per_seed[s][v][key] - per_seed[s]["w4a4"][key]
                                                      for s in per_seed]
        if "flip" in out:
            out["compression_vs_w4a4"] = out["flip"]["compression_vs_w4a4"]
            out["flip_accuracy_minus_w4a4"] = out["flip"]["accuracy"] - out["w4a4"]["accuracy"]
            out["flip_within_one_std_of_w4a4"] = bool(
                out["flip"]["accuracy"] >= out["w4a4"]["accuracy"] - max(out["w4a4"]["accuracy_std"],
                                                                          out["flip"]["accuracy_std"]))
    out["float_weight_scales_first_seed"] = per_seed[min(per_seed)]["float_weight_scales"]
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


def summary_table(summary: dict, variants) -> str:
    """The summary as a markdown table (docs/mpq.md quotes it)."""
    pct = lambda a: ", ".join(f"{100 * x:.2f}" for x in a)
    rows = ["| variant | test accuracy (%) | per seed | validation (%) | paired test - W4A4 (points) "
            "| stored weight bits | compression vs W4A4 | s / run |",
            "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        r = summary[v]
        paired = r.get("paired_accuracy_minus_w4a4")
        pair = f"{100 * np.mean(paired):+.2f} ({', '.join(f'{100 * x:+.2f}' for x in paired)})" if paired else "-"
        comp = f"{r['compression_vs_w4a4']:.3f}x" if "compression_vs_w4a4" in r else "-"
        rows.append(f"| {v} | {100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f} | {pct(r['accuracies'])} "
                    f"| {100 * r['val_accuracy']:.2f} ± {100 * r['val_accuracy_std']:.2f} | {pair} "
                    f"| {r['weight_bits']:,.0f} | {comp} | {r['seconds']:.0f} |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    # Made before minutes of training, so a new folder (or one that cannot be made) is settled first.
    out.mkdir(parents=True, exist_ok=True)
    # Checkpoints are build output, not documentation; quick runs keep their own baselines.
    work = Path(args.work) if args.work else ROOT / "build" / ("mpq_runs_quick" if args.quick else "mpq_runs")
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    per_seed = run_seeds(args, work)
    summary = summarize(args, per_seed)
    summary["wall_seconds_this_invocation"] = time.perf_counter() - t0
    stem = "mpq" + args.tag
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    plot_summary(summary, args.variants, out / f"{stem}.png")
    (out / f"{stem}.md").write_text(summary_table(summary, args.variants))
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
