"""Per-layer bits and the folding searched together for a board (NSGA-II), after Klhufek et al.
(arXiv 2404.05368): quantization and mapping chosen jointly.

A genome is per MAC layer (weight bits, activation bits) in 2..8 and one folding level: level 0
folds the design for the most throughput that fits the board, level ``k`` for ``1/2**k`` of it
at the cheapest folding (:func:`flipq.hls.folding.fold_for_board`, exactly as ``flipq hls
--board B --target-fps F`` does). Each candidate gets a short QAT from one shared float network,
is exported and lowered as ``flipq hls`` lowers it, and costed on that hardware plan:

- ``error``: validation error (a split carved from the training rows; the test split is untouched),
- ``energy_uj``: modeled energy per inference on the board (:mod:`flipq.hls.energy`),
- ``interval_cycles``: the folded design's interval at the board clock (``fps = f / interval``),
- ``weight_bits``: weight bits the design stores (its ROMs).

Designs that do not fit the board (LUT, FF, BRAM36, DSP at the folding's utilization limit) are
infeasible: NSGA-II ranks them behind every design that fits, and the Pareto front holds none.
The first population holds the uniform configurations (W2A2 .. W8A8, most throughput).

Evaluations are cached on disk under ``<out>/cache`` (:mod:`flipq.quant.searchcache`): a
restarted search trains nothing it trained before. Candidates run in worker processes
(``workers``) or as Ray tasks (``ray_address``), :mod:`flipq.quant.searchengine`.

>>> res = search(load_dataset("digits"), "digits-cnn", SearchConfig(generations=2, population=8),
...              out="build/search")                                                # doctest: +SKIP
>>> [(p["genome"], p["energy_uj"]) for p in res.pareto]                              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flipq.host.bitplan import MAX_BITS, MIN_BITS
from flipq.quant.candidate import Hardware, Training
from flipq.quant.searchcache import SearchCache
from flipq.quant.searchout import OBJECTIVES  # re-exported: the search's objectives
from flipq.quant.train import check_counts



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
    board: str = "pynq-z2"
    io_type: str = "io_stream"  # what a board build uses (convs stream through window generators)
    fold_levels: int = 3
    workers: int = 1
    ray_address: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        # NSGA-II mates two parents per offspring: a population of one has no one to cross with
        check_counts(self, generations=1, population=2, qat_epochs=1, float_epochs=0, batch_size=1,
                     group_size=0, threads=1, fold_levels=1, workers=1)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must be in (0, 1)")
        if self.io_type not in ("io_parallel", "io_stream"):
            raise ValueError(f"io_type '{self.io_type}' is unknown (known: io_parallel, io_stream)")

    def training(self, arch: str) -> Training:
        return Training(arch=arch, qat_epochs=self.qat_epochs, batch_size=self.batch_size, lr=self.lr,
                        seed=self.seed, threads=self.threads)

    def hardware(self) -> Hardware:
        return Hardware(board=self.board, io_type=self.io_type, group_size=self.group_size,
                        fold_levels=self.fold_levels)


@dataclass
class SearchResult:
    evaluated: list[dict]  # every genome evaluated: bits, folding, objectives, fits
    pareto: list[dict]  # the non-dominated designs that fit, by energy
    seconds: float
    names: list[str] = field(default_factory=list)
    trained: int = 0  # QAT runs this call (0 when every candidate came from the cache)
    float_trained: bool = False


def split_validation(ds, fraction: float, seed: int):
    """``ds`` with a validation split carved from its training rows in place of its test split."""
    from flipq.quant.data import Dataset

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(ds.x_train))
    n_val = max(int(len(idx) * fraction), 1)
    val, tr = idx[:n_val], idx[n_val:]
    return Dataset(ds.name, ds.x_train[tr], ds.y_train[tr], ds.x_train[val], ds.y_train[val], ds.signed_input)


def data_fingerprint(ds) -> str:
    h = hashlib.sha256()
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def uniform_genomes(n_layers: int, population: int) -> np.ndarray:
    """The uniform configurations W2A2 .. W8A8 at folding level 0; fewer, spread from W8A8 down,
    when the population is smaller than seven."""
    widths = list(range(MAX_BITS, MIN_BITS - 1, -1))
    if population < len(widths):
        widths = [widths[round(i * (len(widths) - 1) / max(population - 1, 1))] for i in range(population)]
    return np.array([[b] * (2 * n_layers) + [0] for b in widths], dtype=float)


def genome_record(names: list[str], genome, entry: dict, hw_key: str) -> dict:
    """One evaluated genome: its bits, folding level and the design's figures."""
    g = [int(v) for v in genome]
    level = g[-1]
    design = entry["hardware"][hw_key][level]
    return {"genome": g, "bits": {n: {"weight_bits": g[2 * i], "act_bits": g[2 * i + 1]} for i, n in enumerate(names)},
            "fold_level": level, "val_accuracy": entry["val_accuracy"], "error": entry["error"],
            "cache_key": entry["key"], **design}


def pareto_front(evaluated: list[dict]) -> list[dict]:
    """The non-dominated designs among those that fit, by modeled energy."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    fitting = [e for e in evaluated if e["fits"]]
    if not fitting:
        return []
    f = np.array([[e[o] for o in OBJECTIVES] for e in fitting], dtype=float)
    front = NonDominatedSorting().do(f, only_non_dominated_front=True)
    return sorted((fitting[i] for i in front), key=lambda e: (e["energy_uj"], e["error"]))


def search(ds, arch_name: str, cfg: SearchConfig, out: str | Path, board=None) -> SearchResult:
    """NSGA-II over per-layer bits and the folding for ``cfg.board`` (or the given
    :class:`flipq.boards.Board`), evaluations cached under ``out/cache``; writes the results
    into ``out`` (:func:`flipq.quant.searchout.write_result`)."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair

    from flipq.boards import load_board
    from flipq.hls.energy import power_constants
    from flipq.quant.models import get_arch, mac_names
    from flipq.quant.searchengine import Shared, open_engine
    from flipq.quant.searchout import SearchProgress, write_result

    t0 = time.perf_counter()
    out = Path(out)
    board = board or load_board(cfg.board)
    power_constants(board.part)  # a board without power figures fails here, not after a training
    if cfg.ray_address:  # so does a cluster that does not answer
        from flipq.quant.searchengine import check_ray_address

        check_ray_address(cfg.ray_address)
    names = mac_names(get_arch(arch_name))
    split = split_validation(ds, cfg.validation_fraction, cfg.seed)
    cache = SearchCache(out / "cache")
    training = cfg.training(arch_name)
    train_key = {"data": data_fingerprint(split), "float_epochs": cfg.float_epochs, **asdict(training)}
    hw_key = cache.key({**cfg.hardware().to_dict(), "board": asdict(board)})
    float_state, float_trained = _float_state(cache, split, arch_name, cfg, train_key)
    shared = Shared(split, float_state, training, cfg.hardware(), board)
    result = SearchResult([], [], 0.0, names, float_trained=float_trained)
    progress = SearchProgress(cfg.population * cfg.generations, cfg.progress)
    records: dict[tuple, dict] = {}  # filled as trainings land
    order: list[tuple] = []  # genomes in the order NSGA-II asked for them

    def evaluate(genomes: np.ndarray, engine) -> list[dict]:
        genomes = [tuple(int(v) for v in g) for g in np.round(genomes)]
        keys = {g: cache.key({"bits": list(g[:-1]), "training": train_key}) for g in genomes}
        todo = {}
        for g in genomes:
            entry = cache.get(keys[g])
            if entry is not None and hw_key not in entry.get("hardware", {}):
                entry = _add_hardware(cache, entry, shared, hw_key)  # another board: no retraining
            if entry is None:
                todo[keys[g]] = g[:-1]
            if g not in order:
                order.append(g)

        def record(g):
            if g not in records:
                records[g] = genome_record(names, g, cache.get(keys[g]), hw_key)
                progress.evaluated(records[g])
            return records[g]

        for key, res in engine.run(todo):
            onnx = res.pop("onnx")
            hardware = res.pop("hardware")
            cache.put(key, {**res, "bits": list(todo[key]), "training": train_key, "hardware": {hw_key: hardware}},
                      onnx)
            result.trained += 1
            progress.trained()
            for g in genomes:  # the bar moves as each training lands
                if keys[g] == key:
                    record(g)
        return [record(g) for g in genomes]

    class BitsAndFolding(Problem):
        def __init__(self, engine):
            n = len(names)
            super().__init__(n_var=2 * n + 1, n_obj=len(OBJECTIVES), n_ieq_constr=1,
                             xl=np.array([MIN_BITS] * 2 * n + [0]), xu=np.array([MAX_BITS] * 2 * n + [cfg.fold_levels - 1]),
                             vtype=int)
            self.engine = engine

        def _evaluate(self, x, out, *args, **kwargs):
            recs = evaluate(x, self.engine)
            out["F"] = np.array([[r[o] for o in OBJECTIVES] for r in recs], dtype=float)
            # > 0: over the board; the most-used resource's overshoot, so near misses rank first
            out["G"] = np.array([[max(r["resources"][k] / max(r["limits"][k], 1) for k in r["limits"]) - 1.0
                                  if not r["fits"] else -1.0] for r in recs])

    rng = np.random.default_rng(cfg.seed)
    n_var = 2 * len(names) + 1
    first = uniform_genomes(len(names), cfg.population)
    rest = np.column_stack([rng.integers(MIN_BITS, MAX_BITS + 1, size=(cfg.population - len(first), n_var - 1)),
                            rng.integers(0, cfg.fold_levels, size=cfg.population - len(first))])
    sampling = np.vstack([first, rest]) if len(rest) else first
    with open_engine(shared, cfg.workers, cfg.ray_address) as engine:
        algo = NSGA2(pop_size=cfg.population, sampling=sampling,
                     crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                     mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
        problem = BitsAndFolding(engine)
        algo.setup(problem, termination=("n_gen", cfg.generations), seed=cfg.seed, verbose=False)
        with np.errstate(invalid="ignore", divide="ignore"):  # crowding distance of tied points
            while algo.has_next():
                algo.next()
    progress.close()
    result.evaluated = [records[g] for g in order]
    result.pareto = pareto_front(result.evaluated)
    result.seconds = time.perf_counter() - t0
    write_result(result, cfg, arch_name, out)
    return result


def _float_state(cache: SearchCache, split, arch_name: str, cfg: SearchConfig, train_key: dict):
    """The shared float network: from the cache, or trained once and cached."""
    import torch

    from flipq.quant.candidate import train_float

    path = cache.float_path(cache.key({"float": train_key}))
    if path.is_file():
        return torch.load(path, weights_only=True), False
    state = train_float(split, arch_name, cfg.float_epochs, cfg.batch_size, cfg.lr, cfg.seed, cfg.threads)
    from flipq.host.files import replacing

    with replacing(path) as tmp:
        torch.save(state, tmp)
    return state, True


def _add_hardware(cache: SearchCache, entry: dict, shared, hw_key: str) -> dict:
    from flipq.quant.candidate import hardware_records

    onnx = cache.onnx_path(entry["key"])
    if not onnx.is_file():
        return None
    entry["hardware"][hw_key] = hardware_records(onnx.read_bytes(), shared.hardware, shared.board)
    cache.put(entry["key"], entry)
    return entry

