"""Bits and folding searched together for the PYNQ-Z2 (flipq search) on Fashion-MNIST with the
VGG-style CNN vgg7-fm: modeled energy saving of the chosen design against uniform W8A8 folded
for the same board, at no accuracy drop (within one standard deviation of W8A8 over seeds).

1. ``flipq.dse.search`` on a training subset (a validation split carved from it),
   NSGA-II over per-layer bits and the folding level, candidates in worker processes, the cache
   under ``--work`` (a stopped run started again continues where it stopped).
2. Candidates: the Pareto designs whose validation accuracy is at least W8A8's less
   ``--val-tolerance``, cheapest modeled energy first. Each candidate and W8A8 are retrained for
   ``--final-epochs`` from the same float network with every seed and scored on the full test
   set; the first candidate whose mean test accuracy is within one std of W8A8's mean is chosen.
3. Energy and fps of both come from their seed-0 models, folded for the board as ``flipq hls
   --board pynq-z2`` folds them (modeled: flipq.hls.cost, flipq.hls.energy).
4. The control: the uniform widths ``--uniform-control`` retrained in the finals the same way;
   ``uniform_control.search_minus_uniform`` is what the search gains over the cheapest of them
   that keeps W8A8's accuracy by the same rule.

    .venv/bin/python benchmarks/search.py                 # the documented run (docs/search.md)
    .venv/bin/python benchmarks/search.py --quick         # minutes: a smoke test of the pipeline

Writes ``<out>/search.json`` (``energy_saving_vs_w8a8``, ``accuracy``, ``accuracy_w8a8``,
``accuracy_w8a8_std``, ``fps``, ``fps_w8a8``, ``paired_vs_w8a8``, ``uniform_control`` and the
details), ``<out>/search.png`` (the search) and ``<out>/search_finals.png`` (the finals).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]

from flipq.boards import load_board
from flipq.host.files import write_json
from flipq.dse import evaluate_candidate, search
from flipq.quant.data import Dataset, load_dataset
from flipq.quant.search import SearchConfig, data_fingerprint
from flipq.quant.searchcache import SearchCache

QUICK = {"train_size": 1200, "population": 6, "generations": 2, "qat_epochs": 1, "float_epochs": 1,
         "final_epochs": 1, "seeds": [0, 1], "max_candidates": 1, "uniform_control": [4]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--work", default=str(ROOT / "build" / "search_bench"), help="search folder and caches")
    p.add_argument("--data-path", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--arch", default="vgg7-fm")
    p.add_argument("--board", default="pynq-z2")
    p.add_argument("--train-size", type=int, default=6000, help="training rows of the search and the finals "
                                                                  "(the search carves 20 %% for validation)")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--qat-epochs", type=int, default=2, help="short QAT per search candidate")
    p.add_argument("--float-epochs", type=int, default=6)
    p.add_argument("--final-epochs", type=int, default=12, help="QAT of the chosen design and W8A8 per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--val-tolerance", type=float, default=0.02,
                   help="candidates: validation accuracy at least W8A8's less this")
    p.add_argument("--max-candidates", type=int, default=6, help="candidates retrained before giving up")
    p.add_argument("--uniform-control", type=int, nargs="*", default=[7, 6, 5, 4],
                   help="uniform widths WbAb retrained in the finals too: the simple alternative to the search")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in minutes")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        args.out = str(Path(args.work) / "quick")
        args.work = str(Path(args.work) / "quick_work")
    return args


def subset(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    if n >= len(ds.x_train):
        return ds
    idx = np.sort(np.random.default_rng(seed).choice(len(ds.x_train), n, replace=False))
    return Dataset(ds.name, ds.x_train[idx], ds.y_train[idx], ds.x_test, ds.y_test, ds.signed_input)


def final_runs(ds: Dataset, float_state: dict, cfg: SearchConfig, args, genomes: list[tuple], cache: SearchCache,
               board) -> dict:
    """Per genome (bits + level) and seed: test accuracy after ``final_epochs`` of QAT on the whole
    training subset, and (seed 0) the folded design's figures. Cached per (bits, seed); every
    (genome, seed) run not cached is one job, all of them spread over the workers at once."""
    results = {g: {} for g in genomes}
    data_key = data_fingerprint(ds)
    trainings = {seed: replace(cfg.training(args.arch), seed=seed, qat_epochs=args.final_epochs) for seed in args.seeds}
    keys = {(g, seed): cache.key({"final": list(g[:-1]), "training": t.__dict__, "data": data_key})
            for g in genomes for seed, t in trainings.items()}
    todo = {keys[g, seed]: (g[:-1], seed) for g in genomes for seed in args.seeds if cache.get(keys[g, seed]) is None}
    hw = cfg.hardware()
    with contextlib.ExitStack() as stack:
        if args.workers == 1 or len(todo) < 2:
            done = ((key, evaluate_candidate(ds, float_state, trainings[seed], hw, board, bits))
                    for key, (bits, seed) in todo.items())
        else:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=min(args.workers, len(todo)),
                                                           mp_context=get_context("spawn")))
            futures = {pool.submit(evaluate_candidate, ds, float_state, trainings[seed], hw, board, bits): key
                       for key, (bits, seed) in todo.items()}
            done = ((futures[fut], fut.result()) for fut in as_completed(futures))
        for key, res in tqdm(done, total=len(todo), desc="finals", unit="run", disable=not todo):
            res.pop("onnx")
            cache.put(key, res)
    for g in genomes:
        for seed in args.seeds:
            entry = cache.get(keys[g, seed])
            results[g][seed] = {"accuracy": entry["val_accuracy"], "design": entry["hardware"][g[-1]]}
    return results


def accuracies(final: dict, g: tuple, seeds: list[int]) -> np.ndarray:
    """Test accuracy of design ``g`` after the finals, seed by seed."""
    return np.array([final[g][s]["accuracy"] for s in seeds])


def keeps_accuracy(acc: np.ndarray, acc_w8: np.ndarray) -> bool:
    """The benchmark's rule for "no accuracy drop": the mean within one sample std of W8A8's mean
    (the same rule chooses the candidate and judges the uniform control)."""
    return bool(acc.mean() >= acc_w8.mean() - acc_w8.std(ddof=1))


def plot_finals(final: dict, seeds: list[int], w8: tuple, chosen, uniform: set, saving: dict, out_dir: Path) -> None:
    """``search_finals.png``: test accuracy (mean and std over the seeds) against modeled energy
    saving for W8A8, the search's candidates and the uniform control, with W8A8's one-std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    acc = {g: np.array([final[g][s]["accuracy"] for s in seeds]) * 100 for g in final}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    m8, s8 = acc[w8].mean(), acc[w8].std(ddof=1) if len(seeds) > 1 else 0.0
    ax.axhspan(m8 - s8, m8 + s8, color="0.85", label="W8A8 mean +- one std")
    for kind, marker, colour in (("search", "o", "tab:blue"), ("uniform", "s", "tab:orange")):
        gs = [g for g in final if g != w8 and (g in uniform) == (kind == "uniform")]
        if gs:
            ax.errorbar([100 * saving[g] for g in gs], [acc[g].mean() for g in gs],
                        yerr=[acc[g].std(ddof=1) if len(seeds) > 1 else 0 for g in gs], fmt=marker, color=colour,
                        capsize=3, label="search candidates" if kind == "search" else "uniform WbAb (control)")
            if kind == "uniform":
                for g in gs:
                    ax.annotate(f"W{g[0]}A{g[1]}", (100 * saving[g], acc[g].mean()), textcoords="offset points",
                                xytext=(5, -10), fontsize=8)
    ax.errorbar([0], [m8], yerr=[s8], fmt="D", color="k", capsize=3, label="W8A8")
    if chosen is not None:
        ax.plot([100 * saving[chosen]], [acc[chosen].mean()], "*", ms=16, color="tab:red", label="chosen")
    ax.set_xlabel("modeled energy saving vs W8A8 on the board (%)")
    ax.set_ylabel(f"test accuracy, mean over {len(seeds)} seeds (%)")
    ax.set_title("Finals: accuracy against modeled energy saving")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out_dir / "search_finals.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    Path(args.out).mkdir(parents=True, exist_ok=True)  # before any training: a bad --out fails now
    full = load_dataset("fashion-mnist", args.data_path)
    ds = subset(full, args.train_size)
    board = load_board(args.board)
    cfg = SearchConfig(generations=args.generations, population=args.population, qat_epochs=args.qat_epochs,
                       float_epochs=args.float_epochs, board=args.board, workers=args.workers, progress=True)
    work = Path(args.work)
    res = search(ds, args.arch, cfg, work / "search")
    t_search = time.perf_counter() - t0
    n = len(res.names)
    w8 = tuple([8] * (2 * n) + [0])
    by = {tuple(e["genome"]): e for e in res.evaluated}
    w8_val = by[w8]["val_accuracy"]
    candidates = [tuple(p["genome"]) for p in res.pareto
                  if p["val_accuracy"] >= w8_val - args.val_tolerance and tuple(p["genome"]) != w8]
    print(f"search: {len(res.evaluated)} designs, {res.trained} trained, {t_search:.0f} s; W8A8 val "
          f"{w8_val:.4f}; {len(candidates)} candidates within {args.val_tolerance} of it", flush=True)
    import torch

    float_state = torch.load(next((work / "search" / "cache").glob("float-*.pt")), weights_only=True)
    cache = SearchCache(work / "final")
    final = {}
    chosen = None
    todo = candidates[:args.max_candidates]
    per_round = max(args.workers, 1)  # candidates retrained side by side: every worker busy on every seed
    while todo and chosen is None:
        batch, todo = todo[:per_round], todo[per_round:]
        final.update(final_runs(ds, float_state, cfg, args, batch + ([w8] if w8 not in final else []), cache, board))
        acc_w8 = accuracies(final, w8, args.seeds)
        for g in batch:  # cheapest first: the first that keeps W8A8's accuracy is chosen
            acc = accuracies(final, g, args.seeds)
            diffs = " ".join(f"{d:+.4f}" for d in acc - acc_w8)
            print(f"  {g}: test {acc.mean():.4f} vs W8A8 {acc_w8.mean():.4f} +- {acc_w8.std(ddof=1):.4f} "
                  f"(paired per seed: {diffs})", flush=True)
            if chosen is None and keeps_accuracy(acc, acc_w8):
                chosen = g
    uniform = [tuple([b] * (2 * n) + [0]) for b in args.uniform_control if b != 8]
    missing = [g for g in uniform + [w8] if g not in final]
    if missing:  # the control: uniform widths folded for the same board, retrained exactly as the candidates
        final.update(final_runs(ds, float_state, cfg, args, missing, cache, board))
    acc_w8 = accuracies(final, w8, args.seeds)
    w8_design = final[w8][args.seeds[0]]["design"]
    summary = {"label": "modeled energy and fps (flipq.hls.energy, flipq.hls.cost) on " + board.name
                        + "; accuracy measured on the Fashion-MNIST test set",
               "accuracy_w8a8": float(acc_w8.mean()), "accuracy_w8a8_std": float(acc_w8.std(ddof=1)),
               "fps_w8a8": w8_design["fps"], "energy_uj_w8a8": w8_design["energy_uj"]}
    if chosen is not None:
        acc = accuracies(final, chosen, args.seeds)
        design = final[chosen][args.seeds[0]]["design"]
        summary.update(energy_saving_vs_w8a8=1.0 - design["energy_uj"] / w8_design["energy_uj"],
                       accuracy=float(acc.mean()), accuracy_std=float(acc.std(ddof=1)), fps=design["fps"],
                       energy_uj=design["energy_uj"], chosen_genome=list(chosen),
                       chosen_bits={name: [chosen[2 * i], chosen[2 * i + 1]] for i, name in enumerate(res.names)},
                       chosen_simd=design["simd"], chosen_pe=design["pe"])
    else:
        summary.update(energy_saving_vs_w8a8=None, accuracy=None, fps=None,
                       note="no candidate kept W8A8's accuracy within one std")
    summary["std"] = "sample standard deviation over the seeds (ddof=1)"
    summary["sizes"] = {k: getattr(args, k) for k in ("arch", "train_size", "population", "generations", "qat_epochs",
                                                       "float_epochs", "final_epochs", "seeds", "val_tolerance",
                                                       "max_candidates", "workers")}
    summary["search"] = {"evaluated": len(res.evaluated), "trained": res.trained, "pareto": len(res.pareto),
                         "seconds": t_search, "w8a8_val_accuracy": w8_val}
    summary["final"] = {str(list(g)): {str(s): {"accuracy": v["accuracy"], "energy_uj": v["design"]["energy_uj"],
                                                "fps": v["design"]["fps"]} for s, v in runs.items()}
                        for g, runs in final.items()}
    saving = {g: 1.0 - final[g][args.seeds[0]]["design"]["energy_uj"] / w8_design["energy_uj"] for g in final}
    paired = {g: accuracies(final, g, args.seeds) - acc_w8 for g in final if g != w8}
    summary["paired_vs_w8a8"] = {  # per candidate: test accuracy minus W8A8's, seed by seed
        str(list(g)): {"energy_saving": saving[g], "diffs": d.tolist(), "mean_diff": float(d.mean())}
        for g, d in paired.items()}
    keeps = {g: keeps_accuracy(accuracies(final, g, args.seeds), acc_w8) for g in final}
    kept_uniform = [saving[g] for g in uniform if keeps[g]]
    summary["uniform_control"] = {
        "widths": {f"W{g[0]}A{g[1]}": {"accuracy": float(accuracies(final, g, args.seeds).mean()),
                                        "accuracy_std": float(accuracies(final, g, args.seeds).std(ddof=1))
                                        if len(args.seeds) > 1 else None,
                                        "energy_saving": saving[g], "keeps_w8a8_accuracy": keeps[g]}
                   for g in uniform},
        "best_saving": max(kept_uniform) if kept_uniform else None,
        "search_minus_uniform": (summary["energy_saving_vs_w8a8"] - max(kept_uniform)
                                 if kept_uniform and chosen is not None else None),
        "note": "the cheapest uniform width that keeps W8A8's accuracy within one std: what the search must beat"}
    plot_finals(final, args.seeds, w8, chosen, set(uniform), saving, out_dir=Path(args.out))
    summary["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "search.json", summary)
    shutil.copyfile(work / "search" / "search.png", out / "search.png")
    print({k: summary[k] for k in ("energy_saving_vs_w8a8", "accuracy", "accuracy_w8a8", "accuracy_w8a8_std", "fps",
                                   "fps_w8a8", "seconds")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
