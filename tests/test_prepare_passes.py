"""flipq's own graph passes, each run before and after on a tiny onnx.helper graph with qonnx
execution; and a dense-first network on an image-shaped input through the whole CLI."""

import json

import numpy as np
from onnx import TensorProto, helper

import pytest

from flipq.hls.input_transpose import MoveInputTransposePastQuant
from flipq.hls.quant_above_flatten import MoveQuantAboveFlatten


def _dense_first_graph(flatten_first: bool = False):
    """NHWC input -> Transpose(to NCHW) -> Quant -> Flatten -> MatMul(Quant(W)): what
    channels-last conversion leaves of a QuantIdentity -> Flatten -> QuantLinear network."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    rng = np.random.default_rng(1)
    inits = [
        helper.make_tensor("s_in", TensorProto.FLOAT, [], [0.25]),
        helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("b6", TensorProto.FLOAT, [], [6.0]),
        helper.make_tensor("W", TensorProto.FLOAT, [24, 5], (rng.integers(-7, 8, 120) / 8).tolist()),
        helper.make_tensor("s_w", TensorProto.FLOAT, [], [0.125]),
        helper.make_tensor("b4", TensorProto.FLOAT, [], [4.0]),
    ]
    q = dict(domain="qonnx.custom_op.general", rounding_mode="ROUND", narrow=0, signed=1)
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], name="Transpose_0", perm=[0, 3, 1, 2])]
    if flatten_first:  # a Flatten before the input quantizer
        nodes += [helper.make_node("Flatten", ["xt"], ["xtf"], name="Flatten_0", axis=1),
                  helper.make_node("Quant", ["xtf", "s_in", "z", "b6"], ["xf"], name="QuantIn", **q)]
    else:
        nodes += [helper.make_node("Quant", ["xt", "s_in", "z", "b6"], ["xq"], name="QuantIn", **q),
                  helper.make_node("Flatten", ["xq"], ["xf"], name="Flatten_0", axis=1)]
    nodes += [
        helper.make_node("Quant", ["W", "s_w", "z", "b4"], ["wq"], name="QuantW", **q),
        helper.make_node("MatMul", ["xf", "wq"], ["y"], name="MatMul_0"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return ModelWrapper(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])).transform(InferShapes())


def _run(model, x):
    import qonnx.core.onnx_exec as oxe

    return np.concatenate([oxe.execute_onnx(model, {"x": x[i:i + 1]})["y"] for i in range(len(x))])


def test_input_transpose_moves_past_the_quantizer_and_into_the_dense_rows():
    from qonnx.transformation.channels_last import AbsorbChanFirstIntoMatMul

    before = _dense_first_graph()
    x = np.random.default_rng(2).uniform(-9, 9, size=(12, 3, 4, 2)).astype(np.float32)
    want = _run(before, x)
    moved, changed = MoveInputTransposePastQuant().apply(_dense_first_graph())
    assert changed
    assert [n.op_type for n in moved.graph.node if n.op_type != "Quant" or n.input[0] != "W"][:2] == \
        ["Quant", "Transpose"]
    assert np.array_equal(_run(moved, x), want)
    absorbed = moved.transform(AbsorbChanFirstIntoMatMul())
    assert "Transpose" not in [n.op_type for n in absorbed.graph.node]
    assert np.array_equal(_run(absorbed, x), want)
    # nothing left to move: the pass reports no change
    assert MoveInputTransposePastQuant().apply(absorbed)[1] is False


def test_quant_moves_above_the_flatten_feeding_it():
    before = _dense_first_graph(flatten_first=True)
    x = np.random.default_rng(3).uniform(-9, 9, size=(12, 3, 4, 2)).astype(np.float32)
    want = _run(before, x)
    after, changed = MoveQuantAboveFlatten().apply(_dense_first_graph(flatten_first=True))
    assert changed
    assert [n.name for n in after.graph.node if n.name != "QuantW"] == ["Transpose_0", "QuantIn", "Flatten_0",
                                                                         "MatMul_0"]
    quant_in = next(n for n in after.graph.node if n.name == "QuantIn")
    assert after.get_tensor_shape(quant_in.output[0]) == [1, 2, 3, 4]
    assert np.array_equal(_run(after, x), want)
    assert MoveQuantAboveFlatten().apply(after)[1] is False


def _flatten_net(case: str):
    import brevitas.nn as qnn
    import torch
    import torch.nn as nn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias,
                                Uint8ActPerTensorFixedPoint)

    torch.manual_seed(0)
    w = dict(weight_quant=Int8WeightPerTensorFixedPoint, bias=True, bias_quant=Int32Bias)
    first = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
    if case == "conv-then-flatten-then-input-quant":  # the dense layer quantizes its own input
        mods = [first, qnn.QuantConv2d(2, 3, 3, return_quant_tensor=False, **w), nn.ReLU(), nn.Flatten(),
                qnn.QuantLinear(27, 4, input_quant=Uint8ActPerTensorFixedPoint, **w)]
    elif case == "flatten-then-input-quant":
        mods = [nn.Flatten(), first, qnn.QuantLinear(50, 6, **w),
                qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True), qnn.QuantLinear(6, 3, **w)]
    else:  # "input-quant-then-flatten": flipq's own --arch mlp
        mods = [first, nn.Flatten(), qnn.QuantLinear(50, 6, **w)]
    return nn.Sequential(*mods).eval()


@pytest.mark.parametrize("case", ["conv-then-flatten-then-input-quant", "flatten-then-input-quant",
                                  "input-quant-then-flatten"])
def test_flatten_anywhere_around_the_quantizer_is_exact(tmp_path, case):
    import contextlib
    import io

    import torch
    from brevitas.export import export_qonnx

    from flipq.hls.lower import check_mappable, lower_qonnx
    from flipq.hls.prepare import load_qonnx, prepare_qonnx
    from flipq.host.emulator import Emulator
    from flipq.quant.export import execute_qonnx

    net = _flatten_net(case)
    path = tmp_path / "model.onnx"
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        export_qonnx(net, torch.zeros(1, 2, 5, 5), export_path=str(path))
    raw = load_qonnx(path)
    check_mappable(raw)
    prepared = prepare_qonnx(raw)
    assert "Transpose" not in [n.op_type for n in prepared.graph.node]
    x = np.random.default_rng(0).uniform(-1.5, 2, size=(100, 2, 5, 5)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy().astype(np.float64)
    assert np.array_equal(Emulator(lower_qonnx(prepared)).forward(x), want)
    assert np.array_equal(execute_qonnx(prepared, x[:20].transpose(0, 2, 3, 1)), want[:20])


def test_mlp_on_digits_goes_through_every_stage_exactly(tmp_path, capsys):
    """`flipq train --arch mlp` flattens the 1x8x8 image after the input quantizer: hls used
    to refuse it ("the graph input must feed an input quantizer; it feeds 'Transpose_0'")."""
    from flipq.cli import main

    out = str(tmp_path / "mlp")
    common = ["--out", out, "--no-progress"]
    assert main(["train", *common, "--arch", "mlp", "--epochs", "1", "--check-rows", "60"]) == 0
    for stage in ("export", "hls", "emulate", "report"):
        assert main([stage, *common]) == 0, stage
    report = json.loads((tmp_path / "mlp" / "report.json").read_text())
    assert [layer["type"] for layer in report["layers"]] == ["dense"] * 3
    assert set(report["agreement"]) == {"torch~qonnx", "qonnx~csim", "csim~emulator"}
    for pair, v in report["agreement"].items():
        assert v == {"equal": 60, "total": 60}, pair
    assert "Traceback" not in capsys.readouterr().err
