"""Preparation passes, each before/after on a tiny graph: an
AveragePool becomes a conv of ones (flipq.hls.avgpool_to_conv), and a Transpose pair around a
per-tensor elementwise node cancels (flipq.hls.transpose_pair); a flatten on the input moves
behind the float ops and the quantizer (flipq.hls.input_reshape)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from flipq.hls.avgpool_to_conv import AvgPoolError, AvgPoolToConv, is_full_planes
from flipq.hls.transpose_pair import RemoveTransposePairAroundElementwise


def _model(nodes, inits, in_shape, out_shape):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return ModelWrapper(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])).transform(InferShapes())


def _run(model, x):
    import qonnx.core.onnx_exec as oxe

    return oxe.execute_onnx(model, {"x": x})["y"]


@pytest.mark.parametrize("kernel, strides", [([2, 2], [2, 2]), ([3, 3], [1, 1])])
def test_avgpool_becomes_a_conv_of_ones_with_the_same_outputs(kernel, strides):
    side = (6 - kernel[0]) // strides[0] + 1
    model = _model([helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=kernel, strides=strides)],
                   [], [1, 3, 6, 6], [1, 3, side, side])
    x = (np.random.default_rng(0).integers(-8, 8, size=(1, 3, 6, 6)) * 0.25).astype(np.float32)
    before = _run(model, x)
    from qonnx.transformation.infer_shapes import InferShapes

    after = model.transform(AvgPoolToConv()).transform(InferShapes())
    ops = [n.op_type for n in after.graph.node]
    assert ops == ["Quant", "Conv"] and is_full_planes(after.graph.node[1])
    got = _run(after, x)
    if kernel == [2, 2]:  # a power-of-two window: the very same float32 values
        assert np.array_equal(got, before)
    else:  # 1/9 as a weight scale: equal to float32 rounding
        assert np.allclose(got, before, rtol=0, atol=1e-6)


def test_avgpool_with_uncounted_padding_is_refused_by_name():
    model = _model([helper.make_node("AveragePool", ["x"], ["y"], name="pool7", kernel_shape=[2, 2],
                                     pads=[1, 1, 1, 1], count_include_pad=0)], [], [1, 2, 4, 4], [1, 2, 5, 5])
    with pytest.raises(AvgPoolError, match="node 'pool7' \\(op type AveragePool\\): ceil_mode or padding"):
        model.transform(AvgPoolToConv())


def test_transpose_pair_around_a_per_tensor_node_cancels():
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("s", 0.5), ("z", 0.0), ("b", 4.0))]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2], name="t1"),
             helper.make_node("Quant", ["t", "s", "z", "b"], ["q"], name="q", domain="qonnx.custom_op.general",
                              signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node("Transpose", ["q"], ["y"], perm=[0, 2, 3, 1], name="t2")]
    model = _model(nodes, inits, [1, 4, 4, 3], [1, 4, 4, 3])
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 3)).astype(np.float32) * 3
    before = _run(model, x)
    after = model.transform(RemoveTransposePairAroundElementwise())
    assert [n.op_type for n in after.graph.node] == ["Quant"]
    assert np.array_equal(_run(after, x), before)


def test_input_flatten_moves_behind_the_float_ops_and_the_quantizer():
    from flipq.hls.input_reshape import MoveInputReshapePastElementwise

    inits = [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]), helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
             helper.make_tensor("shape", TensorProto.INT64, [2], [1, 12]),
             helper.make_tensor("s", TensorProto.FLOAT, [], [0.25]), helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("b", TensorProto.FLOAT, [], [3.0])]
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"], name="view"),
             helper.make_node("Mul", ["flat", "two"], ["m"], name="mul"),
             helper.make_node("Sub", ["m", "one"], ["d"], name="sub"),
             helper.make_node("Quant", ["d", "s", "z", "b"], ["qd"], name="q", domain="qonnx.custom_op.general",
                              signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node("Relu", ["qd"], ["y"], name="next_layer")]
    model = _model(nodes, inits, [1, 3, 4], [1, 12])
    x = np.random.default_rng(2).uniform(0, 1, size=(1, 3, 4)).astype(np.float32)
    before = _run(model, x)
    after = model.transform(MoveInputReshapePastElementwise())
    assert [n.op_type for n in after.graph.node] == ["Mul", "Sub", "Quant", "Reshape", "Relu"]
    assert np.array_equal(_run(after, x), before)
