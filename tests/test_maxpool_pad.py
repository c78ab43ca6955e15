"""MaxPool with padding (issue 22, item 4): ResNet's stem pool (3x3, stride 2, padding 1) and
its kin, exact torch = QONNX = emulator = C-sim = RTL twin on tensors with no negative value (the
hardware pads with zero: hls4ml's ZeroPadding2D before the pool, the twin's window generator);
what zero padding would change, a pool on a signed tensor, and ceil_mode are refused by name."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_models import torch_outputs  # noqa: E402

torch = pytest.importorskip("torch")
qnn = pytest.importorskip("brevitas.nn")

from test_user_constructs import _conv, _export, _input_quant, _linear, _quants, _relu  # noqa: E402


class StemPool(torch.nn.Module):
    """conv -> ReLU quantizer -> MaxPool2d(k, s, p) -> conv -> ReLU quantizer -> dense; or with
    ``before_quant`` the pool between the conv's BatchNorm and its quantizer (lowered to
    thresholds, the pool moved after them)."""

    def __init__(self, k=3, s=2, p=1, side=9, before_quant=False, signed=False, ceil=False):
        super().__init__()
        self.before_quant = before_quant
        self.inq, self.c1 = _input_quant(), _conv(3, 8)
        self.bn = torch.nn.BatchNorm2d(8)
        torch.nn.init.uniform_(self.bn.weight, 0.5, 1.5)
        self.bn.running_mean.uniform_(-0.2, 0.2)
        _, _, sq = _quants()
        self.r1 = qnn.QuantIdentity(act_quant=sq, bit_width=4, return_quant_tensor=True) if signed else _relu()
        self.pool = torch.nn.MaxPool2d(k, s, p, ceil_mode=ceil)
        out = -(-(side + 2 * p - k) // s) + 1 if ceil else (side + 2 * p - k) // s + 1
        self.c2, self.r2 = _conv(8, 8), _relu()
        self.fc = _linear(8 * out * out, 10)

    def forward(self, x):
        x = self.bn(self.c1(self.inq(x)))
        x = self.r1(self.pool(x)) if self.before_quant else self.pool(self.r1(x))
        return self.fc(torch.flatten(self.r2(self.c2(x)), 1))


@pytest.mark.parametrize("io_type, k, s, p, side, before_quant, rtl", [
    # ResNet's stem pool on an odd map (the last windows hang over): hls4ml's own io_parallel
    # padding would let an unsigned pad value win, the zero Pad in front does not
    ("io_parallel", 3, 2, 1, 9, False, True),
    ("io_stream", 2, 2, 1, 7, False, True),  # io_stream pools take kernel == stride
    ("io_stream", 2, 2, 1, 6, True, False),  # between BatchNorm and quantizer: after the thresholds
])
def test_padded_maxpool_is_exact_through_every_stage(io_type, k, s, p, side, before_quant, rtl, tmp_path):
    from flipq.hls.verify import lower_model, verify_model

    torch.manual_seed(2)
    net = StemPool(k, s, p, side, before_quant)
    raw = _export(net, (3, side, side), tmp_path / "model.onnx")
    pool = next(n for n in raw.graph.node if n.op_type == "MaxPool")
    assert any(a.name == "pads" and any(a.ints) for a in pool.attribute)  # what torch wrote
    intmodel = lower_model(raw)[0]
    layer = next(layer for layer in intmodel.layers if layer.op == "maxpool")
    assert layer.attrs["pads"] == [p] * 4
    verdict = verify_model(raw, tmp_path / "work", rows=32, qonnx_rows=32, io_type=io_type, rtl=rtl,
                           reference=lambda im, q: torch_outputs(net, im, q))
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert "torch=emulator" in verdict.stages
    assert sum(k.startswith("csim=emulator") for k in verdict.stages) == intmodel.max_planes()
    assert any(k.startswith("rtl=emulator") for k in verdict.stages) == rtl


def test_an_overlapping_pool_is_refused_for_io_stream_naming_the_layer(tmp_path):
    """hls4ml's stream pooling asserts kernel == stride (an abort inside the C-sim's process):
    refused before any C++ is generated, with the io type that runs it."""
    from flipq.hls.bitserial import build_bitserial
    from flipq.hls.hls4ml_pools import StreamPoolError
    from flipq.hls.verify import lower_model, verify_model

    torch.manual_seed(2)
    raw = _export(StemPool(3, 2, 0, 9), (3, 9, 9), tmp_path / "model.onnx")
    verdict = verify_model(raw, tmp_path / "work", rows=4, io_type="io_stream")
    assert verdict.status == "refused"
    assert "kernel [3, 3] with stride [2, 2]" in verdict.message and "--io-type io_parallel" in verdict.message
    intmodel, prepared, plan = lower_model(raw)
    with pytest.raises(StreamPoolError, match="maxpool layer '.*MaxPool.*'"):
        build_bitserial(intmodel, prepared, tmp_path / "b", io_type="io_stream", plan=plan, compile=False)
    assert not (tmp_path / "b" / "firmware").exists()


def test_the_pool_hls4ml_gets_is_a_zero_pad_then_an_unpadded_pool(tmp_path):
    from flipq.hls.hls4ml_pools import split_maxpool_padding
    from flipq.hls.prepare import prepare_qonnx

    torch.manual_seed(2)
    prepared = prepare_qonnx(_export(StemPool(), (3, 9, 9), tmp_path / "model.onnx"))
    split = split_maxpool_padding(prepared)
    assert split is not prepared and sum(n.op_type == "MaxPool" for n in prepared.graph.node) == 1
    pad = next(n for n in split.graph.node if n.op_type == "Pad")
    pool = split.find_consumer(pad.output[0])
    assert pool.op_type == "MaxPool" and not any(a for at in pool.attribute if at.name == "pads" for a in at.ints)
    np.testing.assert_array_equal(split.get_initializer(pad.input[1]), [0, 1, 1, 0, 0, 1, 1, 0])  # NHWC
    assert split.get_tensor_shape(pad.output[0]) == [1, 11, 11, 8]
    # an unpadded model comes back as it was
    assert split_maxpool_padding(split) is split


@pytest.mark.parametrize("kw, message", [
    (dict(signed=True), r"MaxPool with padding on a tensor that can be negative \(least value -8\)"),
    (dict(ceil=True, p=0), r"ceil_mode=True is not supported"),
])
def test_padding_zero_would_change_is_refused_naming_the_pool(kw, message, tmp_path):
    from flipq.hls.lower import UnsupportedNodeError
    from flipq.hls.verify import lower_model

    torch.manual_seed(2)
    net = StemPool(**{"side": 8, **kw})
    raw = _export(net, (3, 8, 8), tmp_path / "model.onnx")
    with pytest.raises(UnsupportedNodeError, match=message) as err:
        lower_model(raw)
    assert "MaxPool" in str(err.value) and "pool" in str(err.value)  # the node and its module path


def test_the_plan_refuses_a_padded_pool_on_negative_values_from_a_file():
    """An integer model whose padded pool reads a signed accumulator (a hand-made or edited file:
    lowering never writes one) is refused by the hardware plan, which every stage reads."""
    from flipq.hls.hwplan import HardwarePlanError, plan_hardware
    from flipq.host.emulator import Emulator
    from flipq.host.intmodel import IntLayer, IntModel, QuantSpec

    rng = np.random.default_rng(0)
    conv = IntLayer("conv", "c1", {"stride": [1, 1], "pads": [0, 0, 0, 0], "out_shape": [4, 4, 2], "w_exp": 0,
                                   "weight_bits": 3}, weight=rng.integers(-3, 4, (1, 1, 2, 2)))
    pool = IntLayer("maxpool", "p1", {"kernel": [2, 2], "stride": [2, 2], "pads": [1, 1, 1, 1],
                                      "out_shape": [3, 3, 2]})
    model = IntModel((4, 4, 2), QuantSpec(4, True, False, 0), [conv, pool], output_exp=0, input_layout="NHWC")
    with pytest.raises(HardwarePlanError, match="maxpool layer 'p1' pads a tensor whose values reach -"):
        plan_hardware(model)
    # the emulator computes ONNX's pool (a padded cell never wins), whatever the sign
    q = rng.integers(-8, 8, (5, 4, 4, 2))
    out = Emulator(model).run(q)
    acc = np.einsum("nhwc,co->nhwo", q, conv.weight[0, 0])
    padded = np.pad(acc, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.iinfo(np.int64).min)
    want = padded.reshape(5, 3, 2, 3, 2, 2).max(axis=(2, 4))
    np.testing.assert_array_equal(out, want)
