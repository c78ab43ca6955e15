"""Networks as users write them in Brevitas and export them (``brevitas.export.export_qonnx``):
global pooling heads are exact through every stage; element-wise products and dilated convolutions
are refused for what they are, named by the torch module the export recorded, before anything
secondary (issue 22)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_models import torch_outputs  # noqa: E402

torch = pytest.importorskip("torch")
qnn = pytest.importorskip("brevitas.nn")


def _quants():
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    return Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint, Int8ActPerTensorFixedPoint


def _conv(ci, co, **kw):
    wq, _, _ = _quants()
    return qnn.QuantConv2d(ci, co, 3, padding=1, bias=False, weight_quant=wq, weight_bit_width=4, **kw)


def _relu(bits=4, quant_tensor=True):
    _, aq, _ = _quants()
    return qnn.QuantReLU(act_quant=aq, bit_width=bits, return_quant_tensor=quant_tensor)


def _linear(i, o):
    wq, _, _ = _quants()
    return qnn.QuantLinear(i, o, bias=False, weight_quant=wq, weight_bit_width=4)


def _input_quant(quant_tensor=True):
    _, _, sq = _quants()
    return qnn.QuantIdentity(act_quant=sq, bit_width=4, return_quant_tensor=quant_tensor)


class GlobalPoolNet(torch.nn.Module):
    """conv-relu-conv-relu, a global pooling head written one of the ways users write it, a
    quantizer, a dense layer."""

    def __init__(self, head: str):
        super().__init__()
        self.head = head
        self.inq, self.c1, self.r1, self.c2, self.r2 = _input_quant(), _conv(3, 8), _relu(), _conv(8, 16), _relu()
        self.pool = torch.nn.AdaptiveMaxPool2d(1) if head == "adaptive_max" else torch.nn.AdaptiveAvgPool2d(1)
        self.q2, self.fc = _relu(), _linear(16, 10)

    def forward(self, x):
        x = self.r2(self.c2(self.r1(self.c1(self.inq(x)))))
        if self.head in ("adaptive_avg", "adaptive_max"):
            x = self.pool(x)
        elif self.head == "mean_keepdim":
            x = torch.mean(x, (2, 3), keepdim=True)
        else:  # "mean": (N, C), no flatten needed before the dense layer
            x = torch.mean(x, (2, 3))
        return self.fc(torch.flatten(self.q2(x), 1))


def _export(net, shape, path: Path):
    from brevitas.export import export_qonnx

    from flipq.hls.prepare import load_qonnx

    torch.manual_seed(1)
    net.eval()
    export_qonnx(net, input_t=torch.randn(1, *shape), export_path=str(path))
    return load_qonnx(path)


@pytest.mark.parametrize("head", ["adaptive_avg", "mean_keepdim", "mean", "adaptive_max"])
def test_global_pooling_heads_are_exact_through_every_stage(head, tmp_path):
    """ReduceMean / ReduceMax over H and W (torch's export of each head) run as a pool over the
    whole 8x8 map: torch = QONNX = emulator = C-sim at every planes (the RTL twin too, on one)."""
    from flipq.hls.verify import verify_model

    torch.manual_seed(0)
    net = GlobalPoolNet(head)
    raw = _export(net, (3, 8, 8), tmp_path / "model.onnx")
    ops = {n.op_type for n in raw.graph.node}
    assert ("ReduceMax" if head == "adaptive_max" else "ReduceMean") in ops  # what torch wrote
    verdict = verify_model(raw, tmp_path / "work", rows=24, qonnx_rows=24, rtl=head == "adaptive_max",
                           reference=lambda intmodel, q: torch_outputs(net, intmodel, q))
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert "torch=emulator" in verdict.stages and any(k.startswith("csim=emulator") for k in verdict.stages)
    if head == "adaptive_max":
        assert any(k.startswith("rtl=emulator") for k in verdict.stages)


def test_a_reduction_over_channels_is_refused_naming_the_axes(tmp_path):
    from flipq.hls.verify import lower_model, is_flipq_refusal

    class ChannelMean(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inq, self.c1, self.r1, self.fc = _input_quant(), _conv(3, 4), _relu(), _linear(64, 10)

        def forward(self, x):
            return self.fc(torch.flatten(torch.mean(self.r1(self.c1(self.inq(x))), 1), 1))

    raw = _export(ChannelMean(), (3, 8, 8), tmp_path / "m.onnx")
    with pytest.raises(ValueError) as info:
        lower_model(raw)
    assert is_flipq_refusal(info.value)
    assert "reduces axes [1]" in str(info.value) and "[2, 3]" in str(info.value)


class Block(torch.nn.Module):
    def __init__(self, c, float_scale: bool):
        super().__init__()
        from brevitas.quant import Uint8ActPerTensorFloat

        self.conv, self.relu = _conv(c, c), _relu()
        # a float-scaled quantizer after the add: a secondary obstacle, refused only after the add
        self.add_q = (qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=True)
                      if float_scale else _relu())

    def forward(self, x):
        return self.add_q(x + self.relu(self.conv(x)))


class Residual(torch.nn.Module):
    def __init__(self, float_scale: bool = True):
        super().__init__()
        self.inq, self.stem, self.r0 = _input_quant(), _conv(3, 8), _relu()
        self.s1, self.fc = Block(8, float_scale), _linear(8 * 64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.s1(self.r0(self.stem(self.inq(x)))), 1))


class Gate(torch.nn.Module):
    """Squeeze-and-excitation's shape: a block's output multiplied by another activation."""

    def __init__(self):
        super().__init__()
        from brevitas.quant import Uint8ActPerTensorFloat

        self.inq, self.a, self.ra = _input_quant(), _conv(3, 8), _relu(quant_tensor=False)
        self.g, self.rg = _conv(8, 8), _relu(quant_tensor=False)
        # a float-scaled quantizer after the product: a secondary obstacle, named only after it
        self.q = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=True)
        self.fc = _linear(8 * 64, 10)

    def forward(self, x):
        x = self.ra(self.a(self.inq(x)))
        return self.fc(torch.flatten(self.q(x * self.rg(self.g(x))), 1))


class Dilated(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inq, self.dil, self.r, self.fc = _input_quant(), _conv(3, 8, dilation=2), _relu(), _linear(8 * 36, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.r(self.dil(self.inq(x))), 1))


@pytest.mark.parametrize("name, net, construct, module", [
    ("product", Gate, "an element-wise product or quotient of two activation tensors", "mul"),
    ("dilated", Dilated, "a dilated convolution", "dil"),
])
def test_unmapped_constructs_are_refused_first_by_construct_and_module(name, net, construct, module, tmp_path):
    """The real obstacle, in one line, naming the ONNX node and the torch module path the
    export recorded (``mul``: a functional op named after itself), before a secondary one (the
    float-scaled quantizer after the product) and before any C++ is written. (Residual adds,
    concatenations and depthwise convs map: tests/test_residual.py, test_concat.py,
    test_grouped_conv.py.)"""
    from flipq.hls.verify import is_flipq_refusal, lower_model

    raw = _export(net(), (3, 8, 8), tmp_path / f"{name}.onnx")
    with pytest.raises(ValueError) as info:
        lower_model(raw)
    text = str(info.value)
    assert is_flipq_refusal(info.value), text
    assert re.match(rf"node '[^']+' \(op type \w+\) from '{re.escape(module)}': ", text), text
    assert construct in text and "scale" not in text
    assert not list(tmp_path.rglob("*.cpp"))


def test_module_path_metadata_is_read_as_data_only():
    """torch.onnx's scopes are Python literals in the file: parsed with literal_eval, anything
    else ignored, and what reaches a message is one printable line."""
    from onnx import helper

    from flipq.hls.lower import _where, torch_module_path

    def node(scopes, classes):
        n = helper.make_node("Add", ["a", "b"], ["c"], name="n")
        for key, value in (("pkg.torch.onnx.name_scopes", scopes), ("pkg.torch.onnx.class_hierarchy", classes)):
            entry = n.metadata_props.add()
            entry.key, entry.value = key, value
        return n

    layer = node("['', 'features', 'features.3', 'conv2d']",
                 "['m.Net', 'torch.nn.Sequential', 'brevitas.nn.quant_conv.QuantConv2d', 'aten.conv2d.default']")
    assert torch_module_path(layer) == "features.3"
    assert torch_module_path(node("['', 's1', 'add']", "['m.Net', 'm.Block', 'aten.add.Tensor']")) == "s1.add"
    assert torch_module_path(node("['', 'add']", "['m.Net', 'aten.add.Tensor']")) == "add"
    for hostile in ("__import__('os').system('true')", "[1, 2", "{'a': 1}", "x" * 5000):
        assert torch_module_path(node(hostile, hostile)) == ""
    odd = node("['', 'a\\nb\\x07']", "['m.Net', 'm.Block']")
    planted = helper.make_node("Add", ["a", "b"], ["c"], name="p")
    entry = planted.metadata_props.add()
    entry.key, entry.value = "flipq.source_module", "x\ny"  # written into the file, not by preparation
    assert torch_module_path(planted) == "xy" and "\n" not in _where(planted)
    assert torch_module_path(odd) == "ab" and "\n" not in _where(odd)
    assert _where(helper.make_node("Add", ["a", "b"], ["c"], name="plain")) == "node 'plain' (op type Add)"


def test_global_pool_keeps_a_user_flatten_and_places_its_own_after_the_quantizer():
    """keepdims=0 without a flatten in the model: the Flatten goes after the ReLU and quantizer
    that follow the pool (the layout flipq's dense layers take), never before them."""
    from onnx import TensorProto, helper, numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    from flipq.hls.global_pool import GlobalPoolToPool

    inits = [numpy_helper.from_array(np.array(v, dtype=np.float32), n) for n, v in
             (("s", 0.25), ("z", 0.0), ("b", 4.0), ("w", np.ones((4, 3))))]
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], name="gap", axes=[2, 3], keepdims=0),
             helper.make_node("Relu", ["m"], ["r"], name="relu"),
             helper.make_node("Quant", ["r", "s", "z", "b"], ["q"], name="quant", domain="qonnx.custom_op.general",
                              signed=0, narrow=0, rounding_mode="ROUND"),
             helper.make_node("MatMul", ["q", "w"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    model = ModelWrapper(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    model = model.transform(InferShapes()).transform(GlobalPoolToPool()).transform(InferShapes())
    ops = [(n.op_type, dict((a.name, helper.get_attribute_value(a)) for a in n.attribute)) for n in model.graph.node]
    assert [op for op, _ in ops] == ["AveragePool", "Relu", "Quant", "Flatten", "MatMul"]
    assert ops[0][1]["kernel_shape"] == [5, 3] and ops[0][1]["strides"] == [5, 3]
    assert model.get_tensor_shape("q") == [1, 4, 1, 1] and model.get_tensor_shape("y") == [1, 3]


class Conv1dNet(torch.nn.Module):
    """QuantConv1d stacks as keyword-spotting and sensor nets have them: conv, pool, conv, then
    a flatten or a global average pool over the length."""

    def __init__(self, head: str):
        super().__init__()
        wq, _, _ = _quants()
        self.head = head
        self.inq = _input_quant()
        self.c1 = qnn.QuantConv1d(4, 8, 3, padding=1, bias=False, weight_quant=wq, weight_bit_width=4)
        self.r1, self.pool = _relu(), torch.nn.MaxPool1d(2)
        self.c2 = qnn.QuantConv1d(8, 8, 3, stride=2, bias=False, weight_quant=wq, weight_bit_width=3)
        self.r2 = _relu()
        self.gap, self.q3 = torch.nn.AdaptiveAvgPool1d(1), _relu()
        self.fc = _linear(8 if head == "gap" else 8 * 3, 5)

    def forward(self, x):
        x = self.r2(self.c2(self.pool(self.r1(self.c1(self.inq(x))))))
        if self.head == "gap":
            x = self.q3(self.gap(x))
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("head", ["flatten", "gap"])
def test_conv1d_networks_are_exact_on_their_own_ncl_inputs(head, tmp_path):
    """(N, C, L) networks run as H = 1: torch = QONNX = emulator = C-sim at every planes on random
    integer rows and on real (N, C, L) inputs in the user's layout, the RTL twin on one head."""
    from flipq.host.emulator import Emulator
    from flipq.hls.verify import lower_model, real_inputs, verify_model

    torch.manual_seed(0)
    net = Conv1dNet(head).eval()
    raw = _export(net, (4, 16), tmp_path / "model.onnx")
    intmodel = lower_model(raw)[0]
    assert intmodel.input_layout == "NCL" and intmodel.user_input_shape() == (4, 16)

    def reference(im, q):
        x = real_inputs(im, q)[:, 0].transpose(0, 2, 1)  # (N, 1, L, C) -> (N, C, L)
        with torch.no_grad():
            return net(torch.from_numpy(np.ascontiguousarray(x))).numpy().astype(np.float64)

    x = np.random.default_rng(2).normal(0.0, 1.0, (6, 4, 16)).astype(np.float32)
    verdict = verify_model(raw, tmp_path / "work", rows=24, qonnx_rows=30, x=x, rtl=head == "flatten",
                           reference=reference)
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert verdict.stages["qonnx=emulator"] == [30, 30]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy().astype(np.float64)
    assert np.array_equal(Emulator(intmodel).forward(x), want)


def test_a_1d_op_outside_the_rewrite_is_refused_naming_it(tmp_path):
    from flipq.hls.verify import is_flipq_refusal, lower_model

    class Transposed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inq, self.fc = _input_quant(quant_tensor=False), _linear(4, 3)

        def forward(self, x):  # (N, C, L) -> (N, L, C): a layout change on a 1-D tensor
            return torch.flatten(self.fc(torch.transpose(self.inq(x), 1, 2)), 1)

    raw = _export(Transposed(), (4, 6), tmp_path / "t.onnx")
    with pytest.raises(ValueError) as info:
        lower_model(raw)
    assert is_flipq_refusal(info.value), str(info.value)
    assert "(op type Transpose)" in str(info.value) and "(N, C, L)" in str(info.value)


def test_a_layout_mark_written_into_the_file_is_ignored(tmp_path):
    """``flipq.input_layout`` is preparation's own mark for 1-D networks: a 2-D model's file
    carrying it still takes NCHW inputs."""
    from flipq.hls.verify import lower_model

    raw = _export(GlobalPoolNet("adaptive_avg"), (3, 8, 8), tmp_path / "m.onnx")
    entry = raw.model.metadata_props.add()
    entry.key, entry.value = "flipq.input_layout", "NCL"
    intmodel = lower_model(raw)[0]
    assert intmodel.input_layout == "NCHW" and intmodel.user_input_shape() == (3, 8, 8)
