"""Does the flip signal pick better weights than chance? Allocators compared at equal stored bits
on Fashion-MNIST (issue 14).

Per seed: one float network (``vgg7-fm``), then one *evidence* retraining of the uniform low-bit
base plan (W2, first and last layer W4; A4) that records, in its last epoch, every weight's
adjacent-level switches (flip) and mean squared gradient (sensitivity). Every variant starts from
that same retrained network and the same evidence: it allocates the extra bits once and
fine-tunes with them (same data order, same epochs). A budgeted allocator gives every layer the
same fraction of groups at ``b + 1`` bits, so at one group size all allocators store exactly the
same bits and differ only in *which* groups; the per-seed differences are paired.

Variants: ``flip``, ``random``, ``error`` and ``sensitivity`` at each group size; at the
reference group size (16) also ``flip+error``, flip with two allocations (half the budget each, the second
after an epoch of recounting), flip's threshold rule (the bits follow the counts), flip and
random without the threshold-aware learning rate; per-layer uniform plans at the stored bits of
each group size (whole layers at ``b + 1``, no per-weight allocation), and the base plan without
extra bits.
Knobs are chosen on the validation split (rows outside the training subset); test is only scored.

    .venv/bin/python benchmarks/flip_ablation.py            # the documented run (docs/mpq.md)
    .venv/bin/python benchmarks/flip_ablation.py --quick    # minutes: plumbing and tuning
    .venv/bin/python benchmarks/flip_ablation.py --full --jobs 5   # all 60k rows, longer training

Writes ``<out>/flip_ablation.json`` (``points`` and ``flip_minus_random_at_equal_bits``, issue
14's schema, plus every paired comparison), ``<out>/flip_ablation.png`` (the Pareto plot) and
``<out>/flip_ablation.md`` (the table ``docs/mpq.md`` quotes). Every finished run is cached under
``--work`` (float and evidence networks as checkpoints): started again with the same options, the
benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SIZES = {  # --quick / default / --full
    "quick": dict(train_size=3000, val_size=1000, float_epochs=3, stats_epochs=1, epochs=1,
                  group_sizes=[1, 16], seeds=[0]),
    "default": dict(train_size=24000, val_size=5000, float_epochs=15, stats_epochs=2, epochs=2,
                    group_sizes=[1, 16, 64], seeds=[0, 1, 2]),
    "full": dict(train_size=55000, val_size=5000, float_epochs=30, stats_epochs=4, epochs=8,
                 group_sizes=[1, 4, 16, 64], seeds=[0, 1, 2, 3, 4]),
}
ALLOCATORS = ("flip", "random", "error", "sensitivity", "flip+error")


@dataclass(frozen=True)
class Variant:
    """One fine-tuning run after the shared evidence retraining."""

    label: str  # the point's "allocator" in the JSON
    kind: str  # "budget", "repeated", "threshold", "layers" or "base"
    allocator: str = "flip"
    group_size: int = 0
    lr: bool = True
    bits_of: int = 0  # "layers": match the budgeted allocators' bits at this group size (0: the reference)

    def key(self) -> str:
        safe = self.label.replace("+", "p").replace(" ", "-").replace("(", "").replace(")", "")
        return f"{safe}_g{self.group_size}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help=f"minutes: {SIZES['quick']}")
    size.add_argument("--full", action="store_true", help=f"a bigger machine: {SIZES['full']}")
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--work", default=None, help="per-run cache (default build/flip_ablation[_quick|_full])")
    p.add_argument("--doc", default=None, help="a Markdown file whose flip-ablation table block is replaced")
    p.add_argument("--name", default=None,
                   help="output file stem (default flip_ablation[_quick|_full]); runs are cached by their settings, "
                        "so a follow-up with other seeds or budgets reuses what it shares")
    p.add_argument("--data-path", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--arch", default="vgg7-fm")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--train-size", type=int)
    p.add_argument("--val-size", type=int)
    p.add_argument("--eval-size", type=int, default=1000, help="validation rows scored per epoch (progress)")
    p.add_argument("--float-epochs", type=int)
    p.add_argument("--stats-epochs", type=int, help="evidence retraining; its last epoch is the window")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs after the allocation")
    p.add_argument("--group-sizes", type=int, nargs="+")
    p.add_argument("--ref-group-size", type=int, default=16, help="group size of the extra variants")
    p.add_argument("--budget", type=float, default=0.25, help="fraction of each layer's groups at b+1 bits")
    p.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=ALLOCATORS)
    p.add_argument("--no-extras", action="store_true", help="only the allocators at each group size")
    p.add_argument("--threshold", type=float, default=2, help="the threshold variant's flip count")
    p.add_argument("--float-lr", type=float, default=3e-3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--base-bits", type=int, default=2)
    p.add_argument("--ends-bits", type=int, default=4)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained side by side in this many processes")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.size = "quick" if args.quick else "full" if args.full else "default"
    for key, value in SIZES[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.ref_group_size not in args.group_sizes:
        p.error(f"--ref-group-size {args.ref_group_size} is not among --group-sizes {args.group_sizes}")
    if not 0 < args.budget <= 1:
        p.error(f"--budget {args.budget} must be in (0, 1]")
    return args


def variants(args, part: str = "all") -> list[Variant]:
    """The runs of one seed: ``"core"`` (the allocators at every group size), ``"extras"`` or
    ``"all"``. Every seed's core runs go first, so a run cut short still compares allocators."""
    core = [Variant(a, "budget", a, g) for g in args.group_sizes for a in args.allocators
            if a != "flip+error" or g == args.ref_group_size]
    if part == "core":
        return core
    out = [] if part == "extras" else core
    if not args.no_extras:
        g = args.ref_group_size
        out = out + [Variant("flip (repeated)", "repeated", "flip", g),
                Variant(f"flip (threshold {args.threshold:g})", "threshold", "flip", g),
                Variant("flip (LR off)", "budget", "flip", g, lr=False),
                Variant("random (LR off)", "budget", "random", g, lr=False),
                Variant("per-layer uniform", "layers"),
                Variant("base (no extra bits)", "base")]
        out += [Variant(f"per-layer uniform (G{b} bits)", "layers", bits_of=b) for b in args.group_sizes if b != g]
    return out


def tag(args, upto: str = "run") -> str:
    """Cache names carry what a stage depends on: the float network its data and epochs, the
    evidence also its retraining, a run also the fine-tuning and the budget."""
    parts = {"float": f"n{args.train_size}_f{args.float_epochs}"}
    parts["evidence"] = f"{parts['float']}_a{args.stats_epochs}"
    parts["run"] = f"{parts['evidence']}_e{args.epochs}_b{args.budget:g}"
    return parts[upto]


def base_plan(args, arch):
    from flipq.host.bitplan import BitPlan, LayerBits
    from flipq.quant.models import mac_names

    names = mac_names(arch)
    ends = (names[0], names[-1]) if args.ends_bits else ()
    return BitPlan(tuple(LayerBits(n, args.ends_bits if n in ends else args.base_bits, args.act_bits) for n in names))


def uniform_layers_for(shapes, base_bits, target_bits) -> list[str]:
    """The set of whole layers at ``b + 1`` whose stored bits come closest to ``target_bits``
    (no metadata: every layer stays uniform); ties go to fewer bits."""
    names = list(shapes)
    base = sum(k * n * base_bits[x] for x, (k, n) in shapes.items())
    best = min((c for r in range(len(names) + 1) for c in combinations(names, r)),
               key=lambda c: (abs(base + sum(shapes[x][0] * shapes[x][1] for x in c) - target_bits),
                              sum(shapes[x][0] * shapes[x][1] for x in c)))
    return list(best)


class Seed:
    """One seed's data, float network and evidence retraining (trained once, cached)."""

    def __init__(self, args, seed: int, work: Path):
        import torch
        from flipq.quant.data import Dataset, load_dataset, train_val_rows
        from flipq.quant.models import FloatNet, get_arch
        from flipq.quant.train import TrainConfig, evaluate, train

        self.args, self.seed, self.work = args, seed, work
        self.arch = get_arch(args.arch)
        full = load_dataset("fashion-mnist", path=args.data_path, seed=seed)
        idx, val = train_val_rows(len(full.x_train), args.train_size, args.val_size, seed)
        # per-epoch progress on the first --eval-size validation rows; test only at the end
        self.ds = Dataset(full.name, full.x_train[idx], full.y_train[idx], full.x_train[val[:args.eval_size]],
                          full.y_train[val[:args.eval_size]])
        self.val = (full.x_train[val], full.y_train[val])
        self.test = (full.x_test, full.y_test)
        self.steps = math.ceil(len(idx) / args.batch_size)
        name = f"float_{tag(args, 'float')}_s{seed}"
        torch.manual_seed(seed)
        self.float_net = FloatNet(self.arch, self.ds.input_shape, self.ds.num_classes)
        cfg = TrainConfig(epochs=args.float_epochs, batch_size=args.batch_size, lr=args.float_lr, seed=seed,
                          threads=args.threads, progress=not args.no_progress)
        train(self.float_net, self.ds, cfg, checkpoint=work / f"{name}.pt")
        self.float_result = cached(work / f"{name}.json", lambda: {
            "accuracy": evaluate(self.float_net, *self.test)[1], "val_accuracy": evaluate(self.float_net, *self.val)[1]})
        self.evidence = self._evidence()

    def quant_net(self):
        import torch
        from flipq.quant.models import QuantNet, copy_mac_weights

        torch.manual_seed(self.seed)
        model = QuantNet(self.arch, self.ds.input_shape, base_plan(self.args, self.arch), self.ds.num_classes,
                         weight_scale="mse")
        copy_mac_weights(self.float_net, model)
        return model

    def _evidence(self) -> dict:
        """Retrain the base plan, recording flip counts and squared gradients in the last epoch."""
        from flipq.quant.flip import FlipCounter
        from flipq.quant.flipconfig import FlipConfig
        from flipq.quant.train import TrainConfig, load_checkpoint, train

        path = self.work / f"evidence_{tag(self.args, 'evidence')}_s{self.seed}.pt"
        model = self.quant_net()
        # the config only sets the window here (nothing is allocated); pinned, because the
        # checkpoint holds it and a changed default would refuse the cached evidence
        counter = FlipCounter(model, FlipConfig(window=1.0, budget=None, allocator="flip"), self.steps,
                              self.args.stats_epochs, collect_only=True, gradients=True)
        train(model, self.ds, self.train_config(self.args.stats_epochs), checkpoint=path, hooks=(counter,))
        return load_checkpoint(path)

    def train_config(self, epochs: int):
        from flipq.quant.train import TrainConfig

        return TrainConfig(epochs=epochs, batch_size=self.args.batch_size, lr=self.args.lr, seed=self.seed,
                           threads=self.args.threads, progress=not self.args.no_progress)

    def run(self, v: Variant) -> dict:
        """Allocate ``v``'s extra bits on the evidence network, fine-tune, score."""
        from flipq.quant.flip import FlipCounter, ThresholdAwareLR
        from flipq.quant.flipconfig import FlipConfig
        from flipq.quant.layout import layer_shapes
        from flipq.quant.storage import budget_weight_bits, stored_weight_bits, weight_bits_breakdown
        from flipq.quant.train import evaluate, load_model_state, load_runtime_stats, train

        args, ev = self.args, self.evidence
        model = self.quant_net()
        load_model_state(model, ev, Path("evidence"))
        load_runtime_stats(model, ev.get("runtime_stats", {}))
        budgeted = v.kind in ("budget", "repeated")
        cfg = FlipConfig(group_size=v.group_size or args.ref_group_size, threshold=args.threshold,
                         budget=args.budget if budgeted else None, allocator=v.allocator if budgeted else "flip",
                         seed=self.seed, lr_mode="grad" if v.lr else "off")
        counter = FlipCounter(model, cfg, self.steps, args.epochs, allocate_epochs=(0,) if v.kind == "repeated" else (),
                              extra_allocations=1)
        hooks_state = ev["hooks"][0]
        counter.counts = {n: t.clone() for n, t in hooks_state["counts"].items()}
        counter.grad_sq = {n: t.clone() for n, t in hooks_state["grad_sq"].items()}
        counter.grad_steps = hooks_state["grad_steps"]
        t0 = time.perf_counter()
        if v.kind in ("budget", "repeated", "threshold"):
            counter.allocate()
        elif v.kind == "layers":
            shapes = layer_shapes(model)
            target = budget_weight_bits(shapes, counter.base_bits, v.bits_of or args.ref_group_size, args.budget)
            for name in uniform_layers_for(shapes, counter.base_bits, target):
                counter.assign(name, torch_ones_like(counter.flags[name]))
        lr = ThresholdAwareLR(counter, cfg.lr_factor, cfg.lr_band, cfg.lr_mode)
        hist = train(model, self.ds, self.train_config(args.epochs), hooks=(lr, counter))
        plan = counter.plan()
        return {"accuracy": evaluate(model, *self.test)[1], "val_accuracy": evaluate(model, *self.val)[1],
                "weight_bits": stored_weight_bits(plan, model), "breakdown": weight_bits_breakdown(plan, model),
                "weights": sum(k * n for k, n in layer_shapes(model).values()),
                "fractions": counter.fractions(), "history": hist, "seconds": time.perf_counter() - t0}


def torch_ones_like(t):
    import torch

    return torch.ones_like(t, dtype=torch.bool)


def cached(path: Path, compute) -> dict:
    """A run's result from ``path``, or computed and written there (atomically) first."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    return result


def one_seed(args, seed: int, work: Path, part: str = "all") -> dict:
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(args.threads)
    s = Seed(args, seed, work)
    results = {"float": s.float_result}
    todo = variants(args, part)
    for v in tqdm(todo, desc=f"seed {seed} variants", unit="run", disable=args.no_progress):
        res = cached(work / f"{v.key()}_{tag(args)}_s{seed}.json", lambda: s.run(v))
        results[v.label, v.group_size] = res
        print(f"seed {seed} {v.label} G{v.group_size}: val {res['val_accuracy']:.4f} test {res['accuracy']:.4f} "
              f"bits {res['weight_bits']} ({res['seconds']:.0f} s)", flush=True)
    return results


def run_seeds(args, work: Path) -> dict[int, dict]:
    """Every seed's core runs, then every seed's extras, in ``--jobs`` processes."""
    jobs = max(1, min(args.jobs, len(args.seeds)))
    results: dict[int, dict] = {s: {} for s in args.seeds}
    for part in ("core", "extras"):
        if jobs == 1:
            for s in args.seeds:
                results[s].update(one_seed(args, s, work, part))
            continue
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a forked child would inherit the parent's torch thread pools
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {s: pool.submit(one_seed, args, s, work, part) for s in args.seeds}
            for s, f in futures.items():
                results[s].update(f.result())
    return results


def _sd(a) -> float:
    return float(np.std(a, ddof=1)) if len(a) > 1 else 0.0


def paired(per_seed: dict, a: tuple, b: tuple, key: str = "accuracy") -> dict:
    d = [per_seed[s][a][key] - per_seed[s][b][key] for s in sorted(per_seed)]
    return {"mean": float(np.mean(d)), "per_seed": d, "std": _sd(d)}


def summarize(args, per_seed: dict[int, dict]) -> dict:
    seeds = sorted(per_seed)
    keys = [(v.label, v.group_size) for v in variants(args)]
    points = []
    for label, g in keys:
        runs = [per_seed[s][label, g] for s in seeds]
        accs = [r["accuracy"] for r in runs]
        points.append({"allocator": label, "group_size": g, "weight_bits": float(np.mean([r["weight_bits"] for r in runs])),
                       "accuracy_mean": float(np.mean(accs)), "accuracy_std": _sd(accs),
                       "seeds": [{"seed": s, "accuracy": r["accuracy"], "val_accuracy": r["val_accuracy"],
                                  "weight_bits": r["weight_bits"], "seconds": r["seconds"]} for s, r in zip(seeds, runs)]})
    comparisons = {}
    for g in args.group_sizes:
        for a, b in combinations(args.allocators, 2):
            if (a, g) in keys and (b, g) in keys:
                comparisons[f"{a} - {b} @G{g}"] = {key: paired(per_seed, (a, g), (b, g), key)
                                                   for key in ("accuracy", "val_accuracy")}
    ref = args.ref_group_size
    extras = [(("flip (repeated)", ref), ("flip", ref)), (("flip (LR off)", ref), ("flip", ref)),
              (("random (LR off)", ref), ("random", ref)), (("per-layer uniform", 0), ("random", ref)),
              (("per-layer uniform", 0), ("flip", ref)), (("base (no extra bits)", 0), ("random", ref))]
    for g in args.group_sizes:
        extras += [((f"per-layer uniform (G{g} bits)", 0), (other, g)) for other in args.allocators]
    for a, b in extras:
        if a in keys and b in keys:
            comparisons[f"{a[0]} - {b[0]} @G{b[1]}"] = {key: paired(per_seed, a, b, key)
                                                      for key in ("accuracy", "val_accuracy")}
    weights = per_seed[seeds[0]][keys[0]]["weights"]
    out = {"points": points}
    if ("flip", ref) in keys and ("random", ref) in keys:
        d = paired(per_seed, ("flip", ref), ("random", ref))
        out["flip_minus_random_at_equal_bits"] = {"mean": d["mean"], "per_seed": d["per_seed"]}
    out.update({"paired": comparisons, "float": {
        "accuracy_mean": float(np.mean([per_seed[s]["float"]["accuracy"] for s in seeds])),
        "per_seed": [per_seed[s]["float"]["accuracy"] for s in seeds],
        "val_per_seed": [per_seed[s]["float"]["val_accuracy"] for s in seeds]},
        "weights": weights, "setup": {k: v for k, v in vars(args).items() if k not in ("out", "work", "doc")},
        "definitions": {"flip_minus_random_at_equal_bits": f"test accuracy of budgeted flip minus random at group size "
                                                           f"{ref} and budget {args.budget}, same seed (same bits)",
                        "weight_bits": "stored weight bits, width metadata included (flipq.quant.storage)"}})
    return out


def table(summary: dict) -> str:
    """The summary as Markdown: one row per point, with the paired difference to random at the
    same group size (same stored bits)."""
    rows = ["| allocator | G | bits / weight | test accuracy (%) | per seed | validation (%) | test − random, same bits (per seed) |",
            "|---|---|---|---|---|---|---|"]
    w = summary["weights"]
    by = {(p["allocator"], p["group_size"]): p for p in summary["points"]}
    for p in summary["points"]:
        per = ", ".join(f"{100 * r['accuracy']:.2f}" for r in p["seeds"])
        val = np.mean([r["val_accuracy"] for r in p["seeds"]])
        rnd = by.get(("random", p["group_size"]))
        diff = "-"
        if rnd is not None and p["allocator"] != "random" and p["weight_bits"] == rnd["weight_bits"]:
            d = [a["accuracy"] - b["accuracy"] for a, b in zip(p["seeds"], rnd["seeds"])]
            diff = f"{100 * np.mean(d):+.2f} ({', '.join(f'{100 * x:+.2f}' for x in d)})"
        rows.append(f"| {p['allocator']} | {p['group_size'] or '-'} | {p['weight_bits'] / w:.3f} "
                    f"| {100 * p['accuracy_mean']:.2f} ± {100 * p['accuracy_std']:.2f} | {per} | {100 * val:.2f} | {diff} |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- flip_ablation table: begin -->", "<!-- flip_ablation table: end -->"


def replace_block(doc: Path, text: str) -> None:
    """Put ``text`` between the table markers of ``doc`` (which must have them)."""
    body = doc.read_text()
    if BEGIN not in body or END not in body:
        raise ValueError(f"{doc}: no '{BEGIN}' ... '{END}' block to fill; add the two markers where the table goes")
    head, rest = body.split(BEGIN, 1)
    doc.write_text(head + BEGIN + "\n" + text + END + rest.split(END, 1)[1])


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    # made before minutes of training, so a new folder (or one that cannot be made) is settled first
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.size == "default" else f"_{args.size}"
    work = Path(args.work) if args.work else ROOT / "build" / f"flip_ablation{suffix}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed = run_seeds(args, work)
    summary = summarize(args, per_seed)
    summary["wall_seconds_this_invocation"] = time.perf_counter() - t0
    stem = args.name or "flip_ablation" + suffix
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=1) + "\n")
    from flipq.quant.flipplot import plot_pareto

    w = summary["weights"]
    # the allocators' points at the coarser group sizes crowd within a few hundredths of a bit
    near = [p["weight_bits"] / w for p in summary["points"] if p["group_size"] and p["group_size"] >= args.ref_group_size]
    plot_pareto(summary["points"], out / f"{stem}.png", w,
                title=f"Fashion-MNIST {args.arch}: accuracy vs stored bits ({len(args.seeds)} seeds)",
                zoom=(min(near) - 0.04, max(near) + 0.04) if near else None,
                float_accuracy=summary["float"]["accuracy_mean"])
    md = table(summary)
    (out / f"{stem}.md").write_text(md)
    if args.doc:
        replace_block(Path(args.doc), md)
    print(md)
    if "flip_minus_random_at_equal_bits" in summary:
        d = summary["flip_minus_random_at_equal_bits"]
        print(f"flip - random at equal bits (G{args.ref_group_size}): {100 * d['mean']:+.2f} points "
              f"({', '.join(f'{100 * x:+.2f}' for x in d['per_seed'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
