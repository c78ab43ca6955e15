"""One candidate of the bits-and-folding search, its training half: a short QAT from the shared
float network and the QONNX export (:func:`train_candidate`, plain data in and out: the QONNX
file as bytes). Its hardware half, the designs ``flipq hls`` builds for the board, is costed
above both stages, in :mod:`flipq.dse`.

>>> res = train_candidate(data, float_state, Training("digits-cnn", 1, 64, 3e-3, 0, 1), (4,) * 6)  # doctest: +SKIP
>>> res["val_accuracy"], len(res["onnx"])                                                     # doctest: +SKIP
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


def train_float(data, arch_name: str, epochs: int, batch_size: int, lr: float, seed: int, threads: int) -> dict:
    """The shared float network every candidate's QAT starts from, as a state dict."""
    import torch

    from flipq.quant.train import TrainConfig, train

    torch.manual_seed(seed)
    base = _float_net(arch_name, data)
    train(base, data, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, threads=threads,
                                  progress=False))
    return base.state_dict()
