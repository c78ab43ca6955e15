"""QONNX -> integer model: what maps, what is refused and how the refusal reads."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from flipq.hls.lower import UnsupportedNodeError, check_mappable, lower_qonnx
from flipq.hls.prepare import ModelFileError, load_qonnx
from flipq.host.intmodel import IntModel


def _graph_with(node_op: str, scale: float = 0.25, extra=()):
    """input -> Quant -> MatMul(Quant(W)) -> <node_op> -> output."""
    from qonnx.core.modelwrapper import ModelWrapper

    rng = np.random.default_rng(0)
    inits = [
        helper.make_tensor("s_in", TensorProto.FLOAT, [], [0.125]),
        helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("b8", TensorProto.FLOAT, [], [8.0]),
        helper.make_tensor("W", TensorProto.FLOAT, [6, 3], rng.normal(size=18).tolist()),
        helper.make_tensor("s_w", TensorProto.FLOAT, [], [scale]),
        helper.make_tensor("b4", TensorProto.FLOAT, [], [4.0]),
    ]
    q = dict(domain="qonnx.custom_op.general", rounding_mode="ROUND", narrow=0)
    nodes = [
        helper.make_node("Quant", ["x", "s_in", "z", "b8"], ["xq"], name="QuantIn", signed=1, **q),
        helper.make_node("Quant", ["W", "s_w", "z", "b4"], ["wq"], name="QuantW", signed=1, **q),
        helper.make_node("MatMul", ["xq", "wq"], ["mm"], name="MatMul_0"),
        helper.make_node(node_op, ["mm"], ["y"], name="Odd_0", **dict(extra)),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    m = ModelWrapper(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    from qonnx.transformation.infer_shapes import InferShapes
    return m.transform(InferShapes())


def test_unmappable_node_names_node_and_op_type():
    with pytest.raises(UnsupportedNodeError, match=r"node 'Odd_0' \(op type Sigmoid\) cannot be mapped"):
        check_mappable(_graph_with("Sigmoid"))
    with pytest.raises(UnsupportedNodeError, match=r"\(op type Sigmoid\) cannot be mapped"):
        lower_qonnx(_graph_with("Sigmoid"))


def test_mappable_graph_lowers_and_matches_qonnx_execution():
    import qonnx.core.onnx_exec as oxe

    from flipq.host.emulator import Emulator

    model = _graph_with("Relu")
    im = lower_qonnx(model)
    x = np.random.default_rng(3).normal(size=(40, 6)).astype(np.float32) * 4
    want = np.concatenate([oxe.execute_onnx(model, {"x": x[i:i + 1]})["y"] for i in range(len(x))])
    assert np.array_equal(Emulator(im).forward(x), want.astype(np.float64))


def test_float_weight_scale_at_the_output_is_an_affine_within_its_bound():
    import qonnx.core.onnx_exec as oxe

    from flipq.host.emulator import Emulator

    model = _graph_with("Relu", scale=0.3)
    im = lower_qonnx(model)
    assert im.output_affine["relu"] and im.layers[0].attrs["w_int"]
    x = np.random.default_rng(3).normal(size=(40, 6)).astype(np.float32) * 4
    want = np.concatenate([oxe.execute_onnx(model, {"x": x[i:i + 1]})["y"] for i in range(len(x))])
    got = Emulator(im).forward(x)
    assert np.all(np.abs(got - want) <= im.output_bound())
    assert not np.array_equal(im.output_bound(), np.zeros(3))


def test_missing_and_corrupt_model_files_name_the_file(tmp_path):
    with pytest.raises(ModelFileError, match="absent.onnx"):
        load_qonnx(tmp_path / "absent.onnx")
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\x01not a protobuf at all" * 10)
    with pytest.raises(ModelFileError, match="garbage.onnx"):
        load_qonnx(bad)


def test_intmodel_round_trip_and_errors(tiny_chain, tmp_path):
    from flipq.host.intmodel import IntModel

    tiny_chain.intmodel.save(tmp_path)
    back = IntModel.load(tmp_path)
    assert back.digest() == tiny_chain.intmodel.digest()
    assert back.plan == tiny_chain.plan
    (tmp_path / "intmodel.json").write_text("{ not json")
    with pytest.raises(ValueError, match="intmodel.json: corrupt"):
        IntModel.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="intmodel.json"):
        IntModel.load(tmp_path / "nowhere")


def test_gemm_without_bias_is_rewritten(tiny_chain):
    ops = [n.op_type for n in tiny_chain.prepared.graph.node]
    assert "Gemm" not in ops and ops.count("MatMul") == 2
    names = [layer.name for layer in tiny_chain.intmodel.mac_layers]
    assert names == ["conv1", "fc1", "fc2"]


# ---------------------------------------------------------------------------------------
# Refusals on Brevitas exports: one line, the node as the user's file names it, its op and
# what to change; raised by check_mappable, before preparation or hls4ml
# ---------------------------------------------------------------------------------------
def _refused_net(case: str):
    import brevitas.nn as qnn
    import torch
    import torch.nn as nn
    from brevitas.inject.enum import FloatToIntImplType
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerChannelFixedPointMSE,
                                Int8WeightPerTensorFixedPoint, ShiftedUint8ActPerTensorFixedPoint,
                                Uint8ActPerTensorFixedPoint)

    class FloorAct(Int8ActPerTensorFixedPoint):
        float_to_int_impl_type = FloatToIntImplType.FLOOR

    torch.manual_seed(0)
    w = dict(weight_quant=Int8WeightPerTensorFixedPoint, bias=False)
    act = {"float-scale": Int8ActPerTensorFloat, "zero-point": ShiftedUint8ActPerTensorFixedPoint,
           "floor": FloorAct}.get(case, Uint8ActPerTensorFixedPoint)
    mods = [qnn.QuantIdentity(act_quant=act, return_quant_tensor=True)]
    if case in ("batchnorm", "avgpool"):
        mods += [qnn.QuantConv2d(1, 2, 3, **w), nn.BatchNorm2d(2) if case == "batchnorm" else nn.AvgPool2d(2),
                 nn.Flatten(), qnn.QuantLinear(8 if case == "batchnorm" else 2, 2, **w)]
    elif case == "per-channel":
        mods += [nn.Flatten(), qnn.QuantLinear(16, 2, weight_quant=Int8WeightPerChannelFixedPointMSE, bias=False)]
        with torch.no_grad():
            mods[-1].weight[0] *= 20  # the two output channels get different power-of-two scales
    else:
        mods += [nn.Flatten(), qnn.QuantLinear(16, 2, **w)]
    net = nn.Sequential(*mods)
    if case in ("float-scale", "zero-point"):
        net.train()  # these activation scales and zero points come from statistics of seen data
        with torch.no_grad():
            for _ in range(40):
                net(torch.rand(8, 1, 4, 4) * 3 - 0.7)
    return net.eval()


@pytest.mark.parametrize("case, op, message", [
    ("zero-point", "Quant", r"zero point \d+ is not 0 \(use a symmetric quantizer"),
    ("floor", "Quant", "rounding mode FLOOR is not supported.*ROUND"),
])
def test_brevitas_export_refused_before_any_rewriting(tmp_path, case, op, message):
    import contextlib
    import io
    import re

    import torch
    from brevitas.export import export_qonnx

    path = tmp_path / f"{case}.onnx"
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        export_qonnx(_refused_net(case), torch.rand(1, 1, 4, 4), export_path=str(path))
    raw = load_qonnx(path)
    with pytest.raises(UnsupportedNodeError) as info:
        check_mappable(raw)
    text = str(info.value)
    assert "\n" not in text and re.search(message, text), text
    named = re.match(r"node '([^']+)' \(op type (\w+)\)", text)
    assert named and named.group(2) == op
    assert named.group(1) in {n.name for n in raw.graph.node if n.op_type == op}


@pytest.mark.parametrize("case", ["float-scale", "per-channel"])
def test_float_and_per_channel_scales_now_lower(tmp_path, case):
    """Once refused by name; now integer weights with a per-channel real scale, and a float
    output affine (exact thresholds where a quantizer follows: tests/test_thresholds.py)."""
    import contextlib
    import io

    import torch
    from brevitas.export import export_qonnx

    from flipq.hls.verify import lower_model

    path = tmp_path / f"{case}.onnx"
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        export_qonnx(_refused_net(case), torch.rand(1, 1, 4, 4), export_path=str(path))
    intmodel, _, _ = lower_model(load_qonnx(path))
    assert intmodel.output_affine is not None or intmodel.input_affine


def test_cli_refuses_a_batchnorm_without_quantizer_in_one_line(tmp_path, capsys):
    """conv -> BatchNorm -> flatten -> linear: no quantizer between two layers."""
    import contextlib
    import io

    import torch
    from brevitas.export import export_qonnx

    from flipq.cli import main

    path = tmp_path / "bn.onnx"
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        export_qonnx(_refused_net("batchnorm"), torch.rand(1, 1, 4, 4), export_path=str(path))
    assert main(["hls", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flipq: error: node '") and "(op type Conv)" in err and "before any quantizer" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o" / "hls" / "bitserial").exists()


def test_bias_add_on_graph_is_folded_and_exact():
    """MatMul -> Add(Quant(bias)) as qonnx's GemmToMatMul leaves a biased Linear: the bias
    becomes the dense layer's integer bias at the accumulator's scale 2^(-3-2)."""
    import qonnx.core.onnx_exec as oxe

    from flipq.host.emulator import Emulator

    model = _graph_with("Add", extra=())
    add = model.graph.node[-1]
    model.set_initializer("bias", (np.array([3, -17, 40]) * 2.0**-5).astype(np.float32))
    add.input.append("bias")
    im = lower_qonnx(model)
    assert im.mac_layers[0].bias.tolist() == [3, -17, 40]
    x = np.random.default_rng(5).normal(size=(30, 6)).astype(np.float32) * 4
    want = np.concatenate([oxe.execute_onnx(model, {"x": x[i:i + 1]})["y"] for i in range(len(x))])
    assert np.array_equal(Emulator(im).forward(x), want.astype(np.float64))
    # off the grid, at the output: the float output affine, within its documented bound
    model.set_initializer("bias", np.array([0.5, 0.01, 0.25], dtype=np.float32))
    im = lower_qonnx(model)
    assert im.mac_layers[0].bias is None and im.output_affine["bias"][1] == pytest.approx(0.01)
    want = np.concatenate([oxe.execute_onnx(model, {"x": x[i:i + 1]})["y"] for i in range(len(x))])
    assert np.all(np.abs(Emulator(im).forward(x) - want) <= im.output_bound())


def test_add_of_two_activations_is_a_residual_add_layer():
    """mm + mm: not a constant bias but the sum of two tensors the datapath computes (here the
    same one twice): an ``add`` layer reading the MAC layer twice, exact."""
    from flipq.host.emulator import Emulator

    model = _graph_with("Add")
    add = model.graph.node[-1]
    add.input.append("mm")
    im = lower_qonnx(model)
    assert [layer.op for layer in im.layers] == ["dense", "add"]
    assert im.inputs_of(1) == [0, 0] and not im.is_chain
    q = np.random.default_rng(0).integers(-128, 128, (16, 6))
    acc = Emulator(IntModel(im.input_shape, im.input_quant, im.layers[:1], im.output_exp)).run(q)
    np.testing.assert_array_equal(Emulator(im).run(q), 2 * acc)
    np.testing.assert_array_equal(Emulator(im, reference=True).run(q), 2 * acc)


def test_input_that_does_not_feed_a_quantizer_is_named():
    model = _graph_with("Relu")
    quant_in = model.graph.node[0]
    quant_in.input[0] = "x_relu"
    model.graph.node.insert(0, helper.make_node("Relu", ["x"], ["x_relu"], name="Relu_in"))
    with pytest.raises(UnsupportedNodeError) as info:
        lower_qonnx(model)
    text = str(info.value)
    assert "\n" not in text and "it feeds node 'Relu_in' (op type Relu)" in text
    assert "put a QuantIdentity first" in text


def test_network_ending_in_a_conv_says_what_to_change(tmp_path):
    import contextlib
    import io

    import brevitas.nn as qnn
    import torch
    from brevitas.export import export_qonnx
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    from flipq.hls.prepare import prepare_qonnx

    net = torch.nn.Sequential(qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
                              qnn.QuantConv2d(1, 2, 3, weight_quant=Int8WeightPerTensorFixedPoint, bias=False)).eval()
    path = tmp_path / "conv_out.onnx"
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        export_qonnx(net, torch.rand(1, 1, 4, 4), export_path=str(path))
    raw = load_qonnx(path)
    check_mappable(raw)
    with pytest.raises(UnsupportedNodeError, match=r"\(op type Transpose\) cannot be mapped .*end it with "
                                                   r"Flatten and a QuantLinear\)$"):
        lower_qonnx(prepare_qonnx(raw))
