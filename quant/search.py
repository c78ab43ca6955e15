"""Per-layer bits and the folding searched together for a board (NSGA-II), after Klhufek et al.
(arXiv 2404.05368): quantization and mapping chosen jointly. This module holds the search's
settings, genomes and Pareto front; the search itself, which trains here and costs on the hardware
stage, is :func:`flipq.dse.search`.

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

>>> cfg = SearchConfig(generations=2, population=8)
>>> uniform_genomes(3, cfg.population)[0].tolist()
[8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 0.0]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flipq.host.bitplan import MAX_BITS, MIN_BITS
from flipq.quant.candidate import Hardware, Training
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
