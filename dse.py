"""The design-space exploration: per-layer bits and the folding searched together for a board
(NSGA-II, :mod:`flipq.quant.search` holds its settings and pure parts), each candidate trained in
the quantization stage (:mod:`flipq.quant.candidate`) and costed on the hardware stage's design
for the board: lowered as ``flipq hls`` lowers it, folded (:func:`flipq.hls.folding.fold_for_board`),
its cycles and resources modeled (:func:`flipq.hls.cost.hls_report`) and its energy
(:mod:`flipq.hls.energy`). It sees both stages, so it sits above them, beside the pipeline: quant/
never imports hls/ or overlays/ for it (tests/test_layering.py).

>>> res = search(load_dataset("digits"), "digits-cnn", SearchConfig(generations=2, population=8),
...              out="build/search")                                                # doctest: +SKIP
>>> rec = hardware_records(onnx_bytes, Hardware("pynq-z2", "io_stream", 16, 3))     # doctest: +SKIP
>>> rec[0]["fps"], rec[0]["energy_uj"], rec[0]["fits"]                               # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from flipq.host.bitplan import MAX_BITS, MIN_BITS
from flipq.quant.candidate import Hardware, Training


def lower_onnx(onnx_bytes: bytes):
    """The integer model of an exported candidate, as ``flipq hls`` lowers it."""
    from flipq.hls.lower import check_mappable, lower_qonnx
    from flipq.hls.prepare import load_qonnx, prepare_qonnx
    from flipq.quant.export import plan_from_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx_bytes)
        raw = load_qonnx(path)
    check_mappable(raw)
    return lower_qonnx(prepare_qonnx(raw), plan_from_onnx(raw))


def hardware_records(onnx_bytes: bytes, hw: Hardware, board=None) -> list[dict]:
    """Per folding level, the folded design on the board: SIMD/PE per layer, interval, fps,
    resources, whether it fits, stored weight bits and modeled energy (``board``: a
    :class:`flipq.boards.Board` in place of ``hw.board``'s file, e.g. a smaller one in tests)."""
    from flipq.boards import load_board

    board = board or load_board(hw.board)
    intmodel = lower_onnx(onnx_bytes)
    records = [design_record(intmodel, board, hw, None)]
    for level in range(1, hw.fold_levels):
        records.append(design_record(intmodel, board, hw, records[0]["fps"] / 2 ** level))
    return records


def design_record(intmodel, board, hw: Hardware, target_fps: float | None) -> dict:
    """The design ``flipq hls --board B [--target-fps F]`` builds for ``intmodel``, as figures."""
    from flipq.hls.cost import RESOURCES, hls_report
    from flipq.hls.energy import inference_energy, power_constants
    from flipq.hls.folding import fold_for_board, folded_plan

    fold = fold_for_board(intmodel, board, target_fps, group_size=hw.group_size, io_type=hw.io_type)
    report = hls_report(intmodel, io_type=hw.io_type, plan=folded_plan(intmodel, fold, hw.group_size),
                        clock_mhz=fold.clock_mhz)
    totals = report["totals"]
    chip = totals["chip"]  # the accelerator and the DMA/interconnect beside it
    fits = all(chip[r] <= fold.limits[r] for r in RESOURCES if fold.limits[r] or chip[r])
    energy = inference_energy(report, power_constants(board.part), dma_bits_per_sample(intmodel, board))
    return {"target_fps": target_fps, "simd": fold.simd, "pe": fold.pe, "interval_cycles": int(totals["interval"]),
            "latency_cycles": int(totals["cycles"]), "fps": float(totals["fps"]), "clock_mhz": fold.clock_mhz,
            "fits": bool(fits), "binding": fold.binding,
            "resources": {r: float(chip[r]) for r in RESOURCES}, "limits": fold.limits,
            "weight_bits": int(totals["weight_storage_bits"]), "energy_uj": float(energy["energy_uj"]),
            "energy": energy}


def dma_bits_per_sample(intmodel, board) -> int:
    """Bits one sample moves over the board's DMA: its packed input and output streams."""
    from flipq.overlays.metadata import stream_bytes_per_sample

    return 8 * sum(stream_bytes_per_sample(intmodel, board))


def evaluate_candidate(data, float_state: dict, training: Training, hardware: Hardware, board, bits: tuple) -> dict:
    """A candidate's whole evaluation (the unit of work a search sends to a process or Ray
    task): :func:`flipq.quant.candidate.train_candidate`, then :func:`hardware_records` of the model it exported."""
    from flipq.quant import candidate  # by attribute: a test may stand in for the training

    result = candidate.train_candidate(data, float_state, training, bits)
    result["hardware"] = hardware_records(result["onnx"], hardware, board)
    return result


def search(ds, arch_name: str, cfg, out: str | Path, board=None):
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
    from flipq.quant.archs import arch_layer_names
    from flipq.quant.search import SearchResult, data_fingerprint, genome_record, pareto_front, split_validation, \
        uniform_genomes
    from flipq.quant.searchcache import SearchCache
    from flipq.quant.searchengine import Shared, open_engine
    from flipq.quant.searchout import OBJECTIVES, SearchProgress, write_result

    t0 = time.perf_counter()
    out = Path(out)
    board = board or load_board(cfg.board)
    power_constants(board.part)  # a board without power figures fails here, not after a training
    if cfg.ray_address:  # so does a cluster that does not answer
        from flipq.quant.searchengine import check_ray_address

        check_ray_address(cfg.ray_address)
    names = arch_layer_names(arch_name)
    split = split_validation(ds, cfg.validation_fraction, cfg.seed)
    cache = SearchCache(out / "cache")
    training = cfg.training(arch_name)
    train_key = {"data": data_fingerprint(split), "float_epochs": cfg.float_epochs, **asdict(training)}
    hw_key = cache.key({**cfg.hardware().to_dict(), "board": asdict(board)})
    float_state, float_trained = _float_state(cache, split, arch_name, cfg, train_key)
    shared = Shared(split, float_state, training, cfg.hardware(), board, evaluate_candidate)
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


def _float_state(cache, split, arch_name: str, cfg, train_key: dict):
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


def _add_hardware(cache, entry: dict, shared, hw_key: str) -> dict:
    onnx = cache.onnx_path(entry["key"])
    if not onnx.is_file():
        return None
    entry["hardware"][hw_key] = hardware_records(onnx.read_bytes(), shared.hardware, shared.board)
    cache.put(entry["key"], entry)
    return entry

