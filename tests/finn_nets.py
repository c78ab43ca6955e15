"""FINN's reference networks (``brevitas_examples.bnn_pynq``: TFC, SFC, CNV) with seeded random
parameters, and what the tests and ``benchmarks/finn_cnv.py`` need around them.

No weights can be downloaded here, so every network is built from its own config
(``cfg/<name>.ini``) with random weights; BatchNorm and TensorNorm get statistics and affine
parameters from a seeded generator (some BatchNorm scales negative, so thresholds run both
ways), then BatchNorm statistics are calibrated on random images so the 2-bit activations take
all their levels instead of saturating. Inputs are what FINN feeds: uint8 images / 255.

    >>> model = finn_model("tfc_2w2a", seed=0)
    >>> x = random_images(8, input_shape("tfc_2w2a"), seed=1)
    >>> torch_forward(model, x).shape
    (8, 10)

``shape_cnv`` is CNV's topology with only what flipq lowered before thresholds existed:
power-of-two quantizers, no BatchNorm, no TensorNorm, no ``2*x - 1`` (it takes inputs already
in [-1, 1)).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

CNV_NAMES = ("cnv_1w1a", "cnv_1w2a", "cnv_2w2a")
FC_NAMES = ("tfc_1w1a", "tfc_1w2a", "tfc_2w2a", "sfc_1w1a", "sfc_1w2a", "sfc_2w2a", "lfc_1w1a", "lfc_1w2a")


def input_shape(name: str, flat: bool = True) -> tuple[int, ...]:
    """The input of a reference network (without batch): NCHW for CNV; for the FC nets (784,)
    with ``flat`` (see :func:`finn_model`), else FINN's own (1, 28, 28)."""
    if name.startswith("cnv") or name == "shape_cnv":
        return (3, 32, 32)
    return (784,) if flat else (1, 28, 28)


def random_images(n: int, shape, seed: int = 0) -> np.ndarray:
    """``n`` random uint8-valued images / 255 (float32), FINN's input convention."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, *shape)) / 255.0).astype(np.float32)


def _norm_layers(model):
    import torch.nn as nn
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm

    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, TensorNorm))]


def _flat_fc(cfg):
    """FINN's FC (brevitas_examples' ``fc(cfg)``) taking inputs already flat: its forward begins
    with ``x.view(n, -1)``, a Reshape in front of the input affine and quantizer, which flipq's
    lowering refuses ("the graph input must feed an input quantizer"), even on a flat input."""
    import ast

    import torch
    from brevitas_examples.bnn_pynq.models.FC import FC

    class FlatFC(FC):
        def forward(self, x):  # FC.forward without the leading view
            x = 2.0 * x - torch.tensor([1.0], device=x.device)
            for mod in self.features:
                x = mod(x)
            return x

    return FlatFC(num_classes=cfg.getint("MODEL", "NUM_CLASSES"),
                  weight_bit_width=cfg.getint("QUANT", "WEIGHT_BIT_WIDTH"),
                  act_bit_width=cfg.getint("QUANT", "ACT_BIT_WIDTH"),
                  in_bit_width=cfg.getint("QUANT", "IN_BIT_WIDTH"), in_channels=cfg.getint("MODEL", "IN_CHANNELS"),
                  out_features=ast.literal_eval(cfg.get("MODEL", "OUT_FEATURES")))


def finn_model(name: str, seed: int = 0, calibration_rows: int = 64, flat: bool = True):
    """FINN reference network ``name`` (e.g. ``"cnv_2w2a"``) with seeded random parameters,
    in eval mode. ``flat``: an FC net takes (784,) inputs (:func:`_flat_fc`)."""
    import torch
    import torch.nn as nn
    from brevitas_examples.bnn_pynq.models import get_model_cfg, model_with_cfg

    torch.manual_seed(seed)
    if flat and name in FC_NAMES:
        model = _flat_fc(get_model_cfg(name))
    else:
        model, _ = model_with_cfg(name, pretrained=False)
    g = torch.Generator().manual_seed(seed + 1)
    norms = _norm_layers(model)
    with torch.no_grad():
        for m in norms:
            c = m.weight.shape[0]
            sign = torch.where(torch.rand(c, generator=g) < 0.25, -1.0, 1.0)
            m.weight.copy_(sign * (0.5 + torch.rand(c, generator=g)))
            m.bias.copy_(0.3 * torch.randn(c, generator=g))
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + 2.0 * torch.rand(c, generator=g))
    batchnorms = [m for m in norms if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    model.eval()
    if calibration_rows:
        # batch statistics of random images, as training would leave them (momentum None:
        # the plain average over the calibration batch)
        for m in batchnorms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        x = random_images(calibration_rows, input_shape(name, flat), seed + 2)
        with torch.no_grad():
            model(torch.from_numpy(x))
        model.eval()
    return model


def shape_cnv(seed: int = 0):
    """CNV-2W2A's topology and quantizers without BatchNorm, TensorNorm and the input affine."""
    import torch
    import torch.nn as nn
    from brevitas_examples.bnn_pynq.models.CNV import CNV

    class ShapeCNV(CNV):
        def forward(self, x):  # CNV.forward without its leading 2 * x - 1
            for mod in self.conv_features:
                x = mod(x)
            x = x.view(x.shape[0], -1)
            for mod in self.linear_features:
                x = mod(x)
            return x

    torch.manual_seed(seed)
    model = ShapeCNV(num_classes=10, weight_bit_width=2, act_bit_width=2, in_bit_width=8, in_ch=3)
    norms = set(_norm_layers(model))
    for seq in (model.conv_features, model.linear_features):
        for i, mod in enumerate(seq):
            if mod in norms:
                seq[i] = nn.Identity()
    return model.eval()


def float_twin(model):
    """The same network in plain float32 torch: Conv2d/Linear holding the dequantized weights,
    Hardtanh where a quantizer was (the cheapest elementwise stand-in), BatchNorm, MaxPool and
    TensorNorm as they are. What "float32 torch on the same network" is timed with."""
    import brevitas.nn as qnn
    import torch
    import torch.nn as nn

    twin = copy.deepcopy(model).eval()
    for seq in [m for m in twin.modules() if isinstance(m, nn.ModuleList)]:
        for i, mod in enumerate(seq):
            with torch.no_grad():
                w = mod.quant_weight().value.detach().clone() if hasattr(mod, "quant_weight") else None
            if isinstance(mod, qnn.QuantConv2d):
                plain = nn.Conv2d(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride,
                                  padding=mod.padding, bias=False)
            elif isinstance(mod, qnn.QuantLinear):
                plain = nn.Linear(mod.in_features, mod.out_features, bias=False)
            elif isinstance(mod, qnn.QuantIdentity):
                seq[i] = nn.Hardtanh(-1.0, 1.0)
                continue
            else:
                continue
            plain.weight.data = w
            seq[i] = plain
    return twin


def torch_forward(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The torch forward on float inputs (the model's own NCHW layout), float64 outputs."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            y = model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32)))
            out.append(getattr(y, "value", y).numpy())
    return np.concatenate(out).astype(np.float64)


def export_and_lower(model, shape, folder: Path):
    """Export ``model`` to QONNX in ``folder`` and lower it: (raw QONNX, IntModel, prepared
    QONNX, hardware plan). A refusal raises flipq's one-line error."""
    from flipq.hls.prepare import load_qonnx
    from flipq.hls.verify import lower_model
    from flipq.quant.export import export_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = load_qonnx(export_model(model, tuple(shape), folder / "model.onnx"))
    intmodel, prepared, plan = lower_model(raw)
    return raw, intmodel, prepared, plan
