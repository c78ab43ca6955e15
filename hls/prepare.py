"""Prepare a Brevitas-exported QONNX model for lowering and hls4ml.

The recipe that keeps the chain exact (seen on qonnx 1.0.0): cleanup -> channels-last
(input included) -> a quantizer after a flatten moved above it, and the input's Transpose
past the input quantizer, so every channels-first Transpose in front of a flatten folds into
the dense weights' row order (dense-first networks, flatten before a QuantLinear's own input
quantizer) -> Gemm to MatMul -> cleanup. A bias stays as hls4ml reads it (the Conv's third
input, or MatMul -> Add); lowering folds it into the layer.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.channels_last import (AbsorbChanFirstIntoMatMul, ConvertToChannelsLastAndClean,
                                                MoveChanFirstDownstream)
from qonnx.transformation.gemm_to_matmul import GemmToMatMul
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model

from flipq.hls.avgpool_to_conv import AvgPoolToConv
from flipq.hls.input_reshape import MoveInputReshapePastElementwise
from flipq.hls.input_transpose import MoveInputTransposePastQuant
from flipq.hls.lower import SOURCE_KEY, SOURCE_OP_KEY, source_name, source_op
from flipq.hls.quant_above_flatten import MoveQuantAboveFlatten
from flipq.hls.transpose_pair import RemoveTransposePairAroundElementwise
from flipq.hls.transforms import GemmWithoutBiasToMatMul


class ModelFileError(ValueError):
    """A model file that is missing or not a readable ONNX model; names the file."""


def load_qonnx(path: str | Path) -> ModelWrapper:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX model file not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    if not proto.graph.node:
        raise ModelFileError(f"{path}: the ONNX graph has no nodes")
    return ModelWrapper(proto)


def prepare_qonnx(model: ModelWrapper) -> ModelWrapper:
    """A Brevitas QONNX export -> the channels-last graph that lowering and hls4ml read; the
    input model is left as it was. Every node keeps its name in the user's file in its
    metadata (:func:`flipq.hls.lower.source_name`), for the errors lowering raises.

    >>> prepared = prepare_qonnx(load_qonnx("build/demo/model.onnx"))   # doctest: +SKIP
    >>> intmodel = lower_qonnx(prepared)                                 # doctest: +SKIP
    """
    model = ModelWrapper(copy.deepcopy(model.model))
    _record_source_names(model)
    model = cleanup_model(model)
    # an average pool as a conv of ones, before the channels-last conversion (which has no
    # channels-last AveragePool and would leave Transposes around it)
    model = model.transform(AvgPoolToConv()).transform(InferShapes())
    # FINN's FC: a flatten on the input before 2*x - 1 and the quantizer moves behind them
    model = model.transform(MoveInputReshapePastElementwise())
    model = model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
    model = model.transform(RemoveTransposePairAroundElementwise())
    # a flatten before a dense layer's own input quantizer: the quantizer first, so that the
    # Transpose channels-last conversion left in front of the flatten can move past it
    model = model.transform(MoveQuantAboveFlatten())
    # a dense-first network on an image-shaped input: the input's Transpose folds into the
    # first dense layer's row order once it is past the input quantizer
    model = model.transform(MoveInputTransposePastQuant())
    model = model.transform(MoveChanFirstDownstream())
    model = model.transform(AbsorbChanFirstIntoMatMul())
    model = model.transform(InferShapes())
    model = model.transform(GemmWithoutBiasToMatMul())
    gemms = {n.output[0]: (source_name(n), source_op(n)) for n in model.graph.node if n.op_type == "Gemm"}
    with warnings.catch_warnings():
        # qonnx reads the opset of whichever domain is listed first (Brevitas lists its own,
        # version 2) and warns on every biased Gemm, though the rewrite is exact for the Gemm
        # Brevitas exports (tests/test_bias_lowering.py compares torch with the prepared graph)
        warnings.filterwarnings("ignore", message="The GemmToMatMul transformation only offers")
        model = model.transform(GemmToMatMul())
    _inherit_source_names(model, gemms)
    return cleanup_model(model)


def _record_source_names(model: ModelWrapper) -> None:
    """Keep each node's name and op from the user's file in its metadata: cleanup renames every
    node (``Quant_3``), and an error should name the node the user can find."""
    for node in model.graph.node:
        if node.name and not any(e.key == SOURCE_KEY for e in node.metadata_props):
            _set_source(node, node.name, node.op_type)


def _set_source(node, name: str, op: str) -> None:
    for key, value in ((SOURCE_KEY, name), (SOURCE_OP_KEY, op)):
        entry = node.metadata_props.add()
        entry.key, entry.value = key, value


def _inherit_source_names(model: ModelWrapper, replaced: dict) -> None:
    """Nodes a pass made in place of others (GemmToMatMul's Transpose, MatMul, Mul, Add chain
    ends in the Gemm's output tensor) take the replaced node's source name and op."""
    for node in model.graph.node:
        if any(e.key == SOURCE_KEY for e in node.metadata_props):
            continue
        cur = node
        while cur is not None and cur.output[0] not in replaced:
            cur = model.find_consumer(cur.output[0])
        if cur is not None:
            _set_source(node, *replaced[cur.output[0]])
