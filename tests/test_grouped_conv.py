"""Depthwise and grouped convolutions (issue 22): held as the ordinary conv with block-diagonal
weights (flipq.hls.lower.ungroup_weights) -- exact torch = QONNX = emulator = C-sim = RTL twin at
every planes, at the cost of channels/groups times the MACs of a vector-vector unit (not built)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_models import torch_outputs  # noqa: E402

torch = pytest.importorskip("torch")
qnn = pytest.importorskip("brevitas.nn")

from test_user_constructs import _export, _input_quant, _linear, _quants, _relu  # noqa: E402


def _qconv(ci, co, k, *, groups=1, stride=1, padding=0, bits=4, bias=False):
    wq, _, _ = _quants()
    return qnn.QuantConv2d(ci, co, k, stride=stride, padding=padding, groups=groups, bias=bias, weight_quant=wq,
                           weight_bit_width=bits)


class Separable(torch.nn.Module):
    """MobileNetV1's block: a stem conv, then depthwise 3x3 (stride ``stride``, depth multiplier
    ``mult``) -> BatchNorm -> ReLU quantizer -> pointwise 1x1 -> BatchNorm -> ReLU quantizer, a
    dense head."""

    def __init__(self, stride=1, mult=1, groups=None):
        super().__init__()
        c = 8
        self.inq, self.stem, self.r0 = _input_quant(), _qconv(3, c, 3, padding=1), _relu()
        self.dw = _qconv(c, c * mult, 3, groups=groups or c, stride=stride, padding=1, bits=6)
        self.bn1, self.r1 = torch.nn.BatchNorm2d(c * mult), _relu()
        self.pw, self.bn2, self.r2 = _qconv(c * mult, 12, 1), torch.nn.BatchNorm2d(12), _relu()
        side = 8 // stride
        self.fc = _linear(12 * side * side, 10)
        for bn in (self.bn1, self.bn2):
            torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
            torch.nn.init.uniform_(bn.bias, -0.2, 0.2)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        x = self.r0(self.stem(self.inq(x)))
        x = self.r1(self.bn1(self.dw(x)))
        return self.fc(torch.flatten(self.r2(self.bn2(self.pw(x))), 1))


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("stride, mult, groups", [(1, 1, None), (2, 2, None), (1, 1, 2)])
def test_depthwise_and_grouped_convs_are_exact_through_every_stage(stride, mult, groups, io_type, tmp_path):
    from flipq.hls.verify import lower_model, verify_model

    if io_type == "io_parallel" and (stride, mult, groups) != (1, 1, None):
        pytest.skip("io_parallel: the plain depthwise block covers it")
    torch.manual_seed(4)
    net = Separable(stride, mult, groups)
    raw = _export(net, (3, 8, 8), tmp_path / "model.onnx")
    assert any(a.name == "group" and a.i > 1 for n in raw.graph.node if n.op_type == "Conv" for a in n.attribute)
    intmodel = lower_model(raw)[0]
    dw = next(layer for layer in intmodel.layers if layer.attrs.get("groups"))
    assert dw.attrs["groups"] == (groups or 8)
    rtl = io_type == "io_stream" and (stride, mult, groups) == (1, 1, None)  # the twin runs the plain depthwise
    verdict = verify_model(raw, tmp_path / "work", rows=24, qonnx_rows=24, io_type=io_type, rtl=rtl,
                           reference=lambda im, q: torch_outputs(net, im, q))
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert "torch=emulator" in verdict.stages
    assert sum(k.startswith("csim=emulator") for k in verdict.stages) == intmodel.max_planes()


def test_ungrouped_weights_are_block_diagonal():
    from flipq.hls.lower import ungroup_weights

    rng = np.random.default_rng(0)
    w = rng.integers(1, 8, (6, 3, 3, 2))  # O=6, groups=3: 2 outputs and 2 inputs per group
    full = ungroup_weights(w, 3)
    assert full.shape == (6, 3, 3, 6)
    for o in range(6):
        g = o // 2
        np.testing.assert_array_equal(full[o, :, :, 2 * g:2 * g + 2], w[o])
        assert not np.delete(full[o], [2 * g, 2 * g + 1], axis=-1).any()
