"""Multi-objective per-layer bit-width search (NSGA-II) against accuracy, cycles, energy and
memory, after Klhufek et al. (arXiv 2404.05368): per-layer weight and activation bits in
2..8, a short QAT per candidate starting from one float model, hardware costs from flipq's own
bit-serial cost model, the seven uniform configurations as the initial population, and a
cache so no configuration is trained twice.

>>> res = search(ds, "digits-cnn", SearchConfig(generations=3, population=8))   # doctest: +SKIP
>>> [p["plan"].names for p in res.pareto]                                       # doctest: +SKIP

Costs of a candidate are read off its trained integer weights (bit-planes per group, all-zero
planes skipped) with :func:`flipq.hls.cost.layer_cost`; energy is an estimate (see
:data:`ENERGY_PJ`), in picojoules per inference.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from flipq.host.bitplan import MAX_BITS, MIN_BITS, BitPlan, LayerBits
from flipq.quant.models import FloatNet, QuantNet, copy_mac_weights, get_arch, mac_names, trace_shapes
from flipq.quant.train import TrainConfig, check_counts, evaluate, train

OBJECTIVES = ("error", "cycles", "energy_pj", "memory_bits")

# Energy per operation, 45 nm (Horowitz, ISSCC 2014): an 8-bit add 0.03 pJ; a 64-bit read of an
# 8 KB SRAM 10 pJ. Scaled per bit: what matters to the search is how cost moves with bit width.
ENERGY_PJ = {"add_per_bit": 0.03 / 8, "sram_read_per_bit": 10.0 / 64}


@dataclass(frozen=True)
class SearchConfig:
    generations: int = 6
    population: int = 12
    qat_epochs: int = 3
    float_epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    group_size: int = 16
    seed: int = 0
    validation_fraction: float = 0.2
    threads: int = 1  # many short trainings of small nets: one thread each is fastest
    progress: bool = True

    def __post_init__(self) -> None:
        # NSGA-II mates two parents per offspring: a population of one has no one to cross with
        check_counts(self, generations=1, population=2, qat_epochs=1, float_epochs=0, batch_size=1,
                     group_size=0, threads=1)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must be in (0, 1)")


@dataclass(frozen=True)
class SearchResult:
    evaluated: list[dict]  # every configuration trained: bits, objectives
    pareto: list[dict]  # the non-dominated ones
    seconds: float


def plan_from_genome(names: list[str], genome) -> BitPlan:
    """Genome ``[w1, a1, w2, a2, ...]`` -> BitPlan."""
    g = [int(v) for v in genome]
    return BitPlan(tuple(LayerBits(n, g[2 * i], g[2 * i + 1]) for i, n in enumerate(names)))


def integer_weights(model: QuantNet) -> dict[str, np.ndarray]:
    """Per MAC layer, the quantized integer weights as the ``(K, N)`` matrix of the integer
    model (channels-last K order, as the exported graph has it)."""
    from flipq.quant.layout import as_kn, flatten_inputs

    chw = flatten_inputs(model)
    out = {}
    with torch.no_grad():
        for name, layer in model.mac_layers().items():
            q = layer.quant_weight().int().to(torch.int64)
            out[name] = as_kn(q, chw[name]).numpy()
    return out


def output_pixels(model: QuantNet) -> dict[str, int]:
    """Per MAC layer, how many output pixels it computes per inference (1 for dense)."""
    shapes = trace_shapes(model)
    return {name: int(np.prod(shapes[name][1][1:])) for name in model.layer_names}


def hardware_cost(model: QuantNet, plan: BitPlan, group_size: int = 16) -> dict:
    """Modeled cycles, energy (pJ) and weight memory (bits) of a trained QuantNet on flipq's
    bit-serial datapath, one PE per layer, all planes."""
    from flipq.hls.cost import layer_cost
    from flipq.hls.planes import active_planes, pack_layer

    weights = integer_weights(model)
    pixels = output_pixels(model)
    cycles = energy = memory = 0
    first_signed = False  # QuantNet inputs on digits/Fashion-MNIST are unsigned
    for i, lb in enumerate(plan):
        w = weights[lb.name]
        packed = pack_layer(w, lb.weight_bits, group_size, lb.name)
        lo = -(2 ** (lb.act_bits - 1)) if (i == 0 and first_signed) else 0
        hi = 2 ** (lb.act_bits - 1) - 1 if (i == 0 and first_signed) else 2 ** lb.act_bits - 1
        cost = layer_cost(name=lb.name, kernel="conv" if w.shape[0] != packed.fan_in else "dense",
                          fan_in=packed.fan_in, n_out=packed.n_out, n_pix=pixels[lb.name],
                          weight_bits=lb.weight_bits, act_lo=lo, act_hi=hi, group_size=group_size,
                          mask=packed.mask, planes=None, pe=1)
        plane_steps = int(active_planes(packed.mask, lb.weight_bits).sum()) * packed.n_words
        lanes = min(packed.group_size, 64)
        # per output pixel: every active group-plane adds `lanes` activations and reads one
        # 64-bit plane word; the layer reads its K activations once per output pixel
        e_pix = plane_steps * (lanes * lb.act_bits * ENERGY_PJ["add_per_bit"]
                               + 64 * ENERGY_PJ["sram_read_per_bit"])
        e_pix += packed.fan_in * lb.act_bits * ENERGY_PJ["sram_read_per_bit"]
        cycles += cost["cycles"]
        energy += pixels[lb.name] * e_pix
        memory += cost["weight_storage_bits"]
    return {"cycles": int(cycles), "energy_pj": float(energy), "memory_bits": int(memory)}


def _split(ds, fraction: float, seed: int):
    from flipq.quant.data import Dataset

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(ds.x_train))
    n_val = max(int(len(idx) * fraction), 1)
    val, tr = idx[:n_val], idx[n_val:]
    return Dataset(ds.name, ds.x_train[tr], ds.y_train[tr], ds.x_train[val], ds.y_train[val], ds.signed_input)


def search(ds, arch_name: str, cfg: SearchConfig, out: str | Path | None = None) -> SearchResult:
    """NSGA-II over per-layer (weight, activation) bits; accuracy on a validation split carved
    from the training set (the test split stays untouched for the final report)."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    arch = get_arch(arch_name)
    names = mac_names(arch)
    split = _split(ds, cfg.validation_fraction, cfg.seed)
    base = FloatNet(arch, ds.input_shape, ds.num_classes)
    train(base, split, TrainConfig(epochs=cfg.float_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                   seed=cfg.seed, threads=cfg.threads, progress=False))
    cache: dict[tuple, dict] = {}
    bar = tqdm(desc="search", unit="config", disable=not cfg.progress, leave=False)

    def evaluate_genome(genome) -> dict:
        key = tuple(int(v) for v in genome)
        if key not in cache:
            plan = plan_from_genome(names, key)
            model = QuantNet(arch, ds.input_shape, plan, ds.num_classes, ds.signed_input)
            copy_mac_weights(base, model)
            train(model, split, TrainConfig(epochs=cfg.qat_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                            seed=cfg.seed, threads=cfg.threads, progress=False))
            _, acc = evaluate(model, split.x_test, split.y_test)
            cache[key] = {"bits": {n: {"weight_bits": key[2 * i], "act_bits": key[2 * i + 1]}
                                   for i, n in enumerate(names)},
                          "genome": list(key), "val_accuracy": acc, "error": 1.0 - acc,
                          **hardware_cost(model, plan, cfg.group_size)}
            bar.update(1)
        return cache[key]

    n_var = 2 * len(names)
    problem = Problem(n_var=n_var, n_obj=len(OBJECTIVES), xl=MIN_BITS, xu=MAX_BITS, vtype=int)
    algo = NSGA2(pop_size=cfg.population, sampling=IntegerRandomSampling(),
                 crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                 mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    algo.setup(problem, termination=("n_gen", cfg.generations), seed=cfg.seed, verbose=False)
    uniform = np.array([[b] * n_var for b in range(MIN_BITS, MAX_BITS + 1)], dtype=float)
    first = True
    while algo.has_next():
        pop = algo.ask()
        if first:  # seed the first generation with the seven uniform configurations
            x = pop.get("X")
            x[: min(len(uniform), len(x))] = uniform[: len(x)]
            pop.set("X", x)
            first = False
        f = np.array([[evaluate_genome(x)[o] for o in OBJECTIVES] for x in np.round(pop.get("X"))])
        pop.set("F", f)
        with np.errstate(invalid="ignore", divide="ignore"):  # crowding distance of tied points
            algo.evaluator.eval(problem, pop, skip_already_evaluated=True)
            algo.tell(infills=pop)
    bar.close()
    evaluated = list(cache.values())
    f = np.array([[e[o] for o in OBJECTIVES] for e in evaluated])
    front = NonDominatedSorting().do(f, only_non_dominated_front=True)
    pareto = sorted((evaluated[i] for i in front), key=lambda e: e["memory_bits"])
    result = SearchResult(evaluated, pareto, time.perf_counter() - t0)
    if out is not None:
        write_result(result, names, cfg, Path(out))
    return result


def write_result(result: SearchResult, names: list[str], cfg: SearchConfig, out: Path) -> None:
    """search.json, one BitPlan TOML per Pareto point, and a plot of the front."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps({"config": asdict(cfg), "objectives": list(OBJECTIVES),
                                                 "seconds": result.seconds, "evaluated": result.evaluated,
                                                 "pareto": result.pareto}, indent=1))
    for i, p in enumerate(result.pareto):
        plan_from_genome(names, p["genome"]).save(out / f"pareto_{i:02d}.toml")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, key, label in zip(axes, ("memory_bits", "cycles", "energy_pj"),
                              ("weight memory (bits)", "modeled cycles", "energy estimate (pJ)")):
        ax.scatter([e[key] for e in result.evaluated], [100 * e["val_accuracy"] for e in result.evaluated],
                   s=12, color="0.6", label="evaluated")
        ax.scatter([e[key] for e in result.pareto], [100 * e["val_accuracy"] for e in result.pareto],
                   s=22, color="tab:red", label="Pareto")
        ax.set_xlabel(label)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "search.png", dpi=110)
    plt.close(fig)
