"""Integer thresholds from a float chain (flipq.hls.thresholds, flipq.hls.chains): the search,
its checks, and the float32 chain against QONNX execution of the same nodes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from flipq.hls.thresholds import EXHAUSTIVE_LIMIT, ThresholdError, derive_thresholds


def _count(t, signs, acc, qmin):
    v = acc * signs[None, :]
    return qmin + (v[:, :, None] >= t[None]).sum(axis=2)


def _step(scale, bias, qmin, qmax):
    """round-half-even(acc * scale + bias) saturated: the shape of Quant after an affine."""
    def fn(acc):
        y = (acc.astype(np.float64) * scale + bias).astype(np.float32)
        return np.clip(np.round(y), qmin, qmax).astype(np.int64)
    return fn


@pytest.mark.parametrize("span", [300, 5 * EXHAUSTIVE_LIMIT], ids=["exhaustive", "binary-search"])
def test_thresholds_reproduce_the_step_function_everywhere(span):
    scale = np.array([0.013, -0.05, 0.0, 0.021])  # rising, falling, constant, rising
    bias = np.array([0.5, 1.25, 2.6, -3.0])
    fn = _step(scale, bias, -4, 3)
    lo, hi = np.full(4, -span), np.full(4, span)
    t, descending = derive_thresholds(fn, lo, hi, -4, 3)
    assert descending == [1] and t.shape == (4, 7)
    assert np.all(np.diff(t, axis=1) >= 0)
    signs = np.where(np.isin(np.arange(4), descending), -1, 1)
    acc = np.arange(-span, span + 1)[:, None].repeat(4, axis=1)
    assert np.array_equal(_count(t, signs, acc, -4), fn(acc))


def test_ties_round_as_the_reference_rounds():
    # acc * 0.5 lands on .5 at every odd acc: round-half-to-even decides, thresholds must follow
    fn = _step(np.array([0.5]), np.array([0.0]), 0, 7)
    t, _ = derive_thresholds(fn, np.array([0]), np.array([20]), 0, 7)
    # 1 -> 0.5 -> 0, 2 -> 1, 3 -> 1.5 -> 2, 5 -> 2.5 -> 2, 6 -> 3, 7 -> 3.5 -> 4, ...
    assert t[0].tolist() == [2, 3, 6, 7, 10, 11, 14]


def test_a_non_monotone_chain_is_caught():
    def wobble(acc):
        return (np.abs(acc) // 7 % 3).astype(np.int64)  # up and down: no thresholds can do this
    with pytest.raises(ThresholdError, match="layer 'conv9', channel 0: the float chain is not a monotone step"):
        derive_thresholds(wobble, np.array([-50]), np.array([50]), 0, 2, name="conv9")


def test_float_chain_equals_qonnx_execution_of_its_nodes():
    """BatchNorm -> Relu -> Quant on a MAC output: FloatChain on integer accumulators equals
    QONNX executing the same nodes on the same float32 values."""
    import qonnx.core.onnx_exec as oxe
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    from flipq.hls.lower import _const_value
    from flipq.hls.thresholds import FloatChain

    rng = np.random.default_rng(1)
    c = 5
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [c], rng.uniform(lo, hi, c).tolist())
             for n, lo, hi in (("g", -2, 2), ("b", -1, 1), ("m", -3, 3), ("v", 0.2, 2))]
    inits += [helper.make_tensor("s", TensorProto.FLOAT, [], [0.37]),
              helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
              helper.make_tensor("bits", TensorProto.FLOAT, [], [3.0])]
    nodes = [helper.make_node("BatchNormalization", ["acc", "g", "b", "m", "v"], ["bn"], name="bn", epsilon=1e-4),
             helper.make_node("Relu", ["bn"], ["r"], name="relu"),
             helper.make_node("Quant", ["r", "s", "z", "bits"], ["y"], name="q", domain="qonnx.custom_op.general",
                              signed=0, narrow=0, rounding_mode="ROUND")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("acc", TensorProto.FLOAT, [64, c])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, c])], inits)
    model = ModelWrapper(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])).transform(InferShapes())
    w_scale = rng.uniform(0.01, 0.1, c)
    chain = FloatChain(model, "acc", list(model.graph.node), "y", 2.0**-3, w_scale, "layer", _const_value)
    acc = rng.integers(-400, 400, size=(64, c))
    x = (acc * (2.0**-3 * w_scale)).astype(np.float32)
    want = oxe.execute_onnx(model, {"acc": x})["y"]
    assert np.array_equal(chain(acc), want)


def test_outputs_agree_within_the_bound_argmax_only_on_near_ties():
    from flipq.host.intmodel import outputs_agree

    ref = np.array([[1.0, 2.0, 0.5], [3.0, 3.0, 0.0], [1.0, 2.0, 0.0]])
    bound = np.array([1e-3, 1e-3, 1e-3])
    close = ref + np.array([[5e-4, -5e-4, 0], [1e-4, -1e-4, 0], [0, 0, 2e-3]])
    assert outputs_agree(close, ref, bound).tolist() == [True, True, False]
    # row 1 is a tie the rounding broke the other way: argmax differs, both within the bound
    assert close[1].argmax() != (ref[1] - [1e-4, -1e-4, 0]).argmax()
    assert outputs_agree(ref, ref, 0.0).all() and not outputs_agree(close, ref, 0.0).any()
