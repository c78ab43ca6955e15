"""One candidate of the bits-and-folding search: a short QAT from the shared float network, the
QONNX export, the integer model, and for each folding level the design ``flipq hls`` builds for
the board (:func:`flipq.hls.folding.fold_for_board`, :func:`flipq.hls.cost.hls_report`) with its
modeled energy (:mod:`flipq.hls.energy`).

This is the work a search spreads over processes or Ray tasks: :func:`train_candidate` takes
everything it needs as arguments and returns plain data (the QONNX file as bytes).

>>> rec = hardware_records(onnx_bytes, Hardware("pynq-z2", "io_stream", 16, 3))   # doctest: +SKIP
>>> rec[0]["fps"], rec[0]["energy_uj"], rec[0]["fits"]                             # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flipq.host.bitplan import BitPlan, LayerBits


@dataclass(frozen=True)
class Training:
    """What a candidate's accuracy depends on besides its bits (part of its cache key)."""

    arch: str
    qat_epochs: int
    batch_size: int
    lr: float
    seed: int
    threads: int
    weight_scale: str = "mse"


@dataclass(frozen=True)
class Hardware:
    """What a candidate's hardware figures depend on besides its trained model."""

    board: str
    io_type: str
    group_size: int
    fold_levels: int  # level 0: the most throughput that fits; level k: 1/2**k of it, cheapest folding

    def to_dict(self) -> dict:
        return asdict(self)


def plan_from_bits(names: list[str], bits) -> BitPlan:
    """``[w1, a1, w2, a2, ...]`` -> BitPlan."""
    g = [int(v) for v in bits]
    return BitPlan(tuple(LayerBits(n, g[2 * i], g[2 * i + 1]) for i, n in enumerate(names)))


def train_candidate(data, float_state: dict, training: Training, bits: tuple) -> dict:
    """QAT of the plan ``bits`` from ``float_state`` on ``data`` (its test split is the search's
    validation split); the validation accuracy and the exported QONNX model as bytes."""
    import torch

    from flipq.quant.export import export_model
    from flipq.quant.models import QuantNet, copy_mac_weights, get_arch, mac_names
    from flipq.quant.train import TrainConfig, evaluate, train

    t0 = time.perf_counter()
    torch.set_num_threads(training.threads)
    torch.manual_seed(training.seed)
    arch = get_arch(training.arch)
    plan = plan_from_bits(mac_names(arch), bits)
    model = QuantNet(arch, data.input_shape, plan, data.num_classes, data.signed_input, training.weight_scale)
    base = _float_net(training.arch, data)
    base.load_state_dict(float_state)
    copy_mac_weights(base, model)
    train(model, data, TrainConfig(epochs=training.qat_epochs, batch_size=training.batch_size, lr=training.lr,
                                   seed=training.seed, threads=training.threads, progress=False))
    _, acc = evaluate(model, data.x_test, data.y_test)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(model, data.input_shape, Path(tmp) / "model.onnx", plan)
        onnx_bytes = path.read_bytes()
    return {"val_accuracy": float(acc), "error": 1.0 - float(acc), "train_seconds": time.perf_counter() - t0,
            "onnx": onnx_bytes}


def _float_net(arch_name: str, data):
    from flipq.quant.models import FloatNet, get_arch

    return FloatNet(get_arch(arch_name), data.input_shape, data.num_classes)


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


def train_float(data, arch_name: str, epochs: int, batch_size: int, lr: float, seed: int, threads: int) -> dict:
    """The shared float network every candidate's QAT starts from, as a state dict."""
    import torch

    from flipq.quant.train import TrainConfig, train

    torch.manual_seed(seed)
    base = _float_net(arch_name, data)
    train(base, data, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, threads=threads,
                                  progress=False))
    return base.state_dict()


def evaluate_candidate(data, float_state: dict, training: Training, hardware: Hardware, board, bits: tuple) -> dict:
    """A candidate's whole evaluation (the unit of work a search sends to a process or Ray
    task): :func:`train_candidate`, then :func:`hardware_records` of the model it exported."""
    result = train_candidate(data, float_state, training, bits)
    result["hardware"] = hardware_records(result["onnx"], hardware, board)
    return result
