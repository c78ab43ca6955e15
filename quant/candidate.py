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

    from flipq.quant.archs import arch_layer_names, is_graph_arch
    from flipq.quant.export import export_model
    from flipq.quant.models import copy_mac_weights
    from flipq.quant.networks import build_network
    from flipq.quant.train import TrainConfig, evaluate, train

    t0 = time.perf_counter()
    torch.set_num_threads(training.threads)
    torch.manual_seed(training.seed)
    plan = plan_from_bits(arch_layer_names(training.arch), bits)
    model = build_network(training.arch, data.input_shape, plan, data.num_classes, data.signed_input,
                          training.weight_scale)
    if is_graph_arch(training.arch):
        copy_graph_weights(float_state, model)
    else:
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


# A graph network (flipq.quant.mlperf) has no float twin built from layer tokens: its shared base is
# the same graph at 8 bits everywhere (the widest the search draws), and a candidate starts from
# its weights, biases and BatchNorm statistics -- not from its quantizers' learned scales, which
# belong to 8-bit grids.
BASE_BITS = 8


def _float_net(arch_name: str, data):
    from flipq.quant.archs import arch_layer_names, is_graph_arch
    from flipq.quant.models import FloatNet, get_arch

    if is_graph_arch(arch_name):
        from flipq.quant.networks import build_network

        names = arch_layer_names(arch_name)
        return build_network(arch_name, data.input_shape, plan_from_bits(names, [BASE_BITS] * 2 * len(names)),
                             data.num_classes, data.signed_input)
    return FloatNet(get_arch(arch_name), data.input_shape, data.num_classes)


def copy_graph_weights(state: dict, model) -> int:
    """Load into ``model`` every entry of ``state`` that is not a quantizer's (weights, biases,
    BatchNorm parameters and statistics), by module path; shapes must match. Returns the count."""
    import torch

    own = model.state_dict()
    keep = {k: v for k, v in state.items() if "quant" not in k}
    for k, v in keep.items():
        if k not in own or tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"base network entry '{k}' {tuple(v.shape)} does not match the candidate's "
                             f"{tuple(own[k].shape) if k in own else '(missing)'}")
    with torch.no_grad():
        model.load_state_dict(keep, strict=False)
    return len(keep)


def train_float(data, arch_name: str, epochs: int, batch_size: int, lr: float, seed: int, threads: int) -> dict:
    """The shared float network every candidate's QAT starts from, as a state dict."""
    import torch

    from flipq.quant.train import TrainConfig, train

    torch.manual_seed(seed)
    base = _float_net(arch_name, data)
    train(base, data, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, threads=threads,
                                  progress=False))
    return base.state_dict()
