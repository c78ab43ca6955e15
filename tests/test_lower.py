"""QONNX -> integer model: what maps, what is refused and how the refusal reads."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from flipq.hls.lower import UnsupportedNodeError, check_mappable, lower_qonnx
from flipq.hls.prepare import ModelFileError, load_qonnx


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


def test_non_power_of_two_scale_is_refused():
    with pytest.raises(UnsupportedNodeError, match=r"node 'QuantW' \(op type Quant\): scale 0.3 is not a power of two"):
        lower_qonnx(_graph_with("Relu", scale=0.3))


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
