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
from flipq.hls.concat import ConcatToChannelsLast
from flipq.hls.conv1d import Conv1dTo2d
from flipq.hls.input_reshape import MoveInputReshapePastElementwise
from flipq.hls.input_transpose import MoveInputTransposePastQuant
from flipq.hls.global_pool import GlobalPoolToPool
from flipq.hls.lower import (LAYOUT_KEY, SOURCE_KEY, SOURCE_MODULE_KEY, SOURCE_OP_KEY, source_name, source_op,
                             torch_module_path)
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
    _check_graph(proto, path)
    return ModelWrapper(proto)


# Standard-domain opsets flipq's tools (onnx's checker, ONNX Runtime under QONNX execution) read
MIN_OPSET = 7
# Values per sample the host, emulator and C-sim handle: far above any network a PYNQ-Z2 runs
# (CIFAR-10: 3,072), so a shape beyond it is an edit, refused before anything is allocated
MAX_SAMPLE_ELEMS = 1 << 24


def _check_graph(proto, path: Path) -> None:
    """What the later stages assume of a model file, refused here in one line naming the file and
    the node or field: a supported opset, a valid graph (onnx's checker), one output, one data
    input of fixed size per sample. A symbolic batch dimension (torch's default export) is set
    to 1: every stage runs samples one call at a time."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise ModelFileError(f"{path}: opset_import ai.onnx version {opset} is outside {MIN_OPSET}..{newest}; "
                             "export the model again with a supported opset (e.g. 13 or newer)")
    checked = proto
    missing = {n.domain for n in proto.graph.node} - {o.domain for o in proto.opset_import} - {"", "ai.onnx"}
    if missing:  # QONNX reads custom ops without their opset import (hand-built graphs leave it out)
        checked = copy.deepcopy(proto)
        checked.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in sorted(missing))
    try:
        onnx.checker.check_model(checked)
    except onnx.checker.ValidationError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        where = next((line.split("Context:", 1)[1].strip() for line in lines if "Context:" in line), "")
        raise ModelFileError(f"{path}: not a valid ONNX model ({lines[0] if lines else e}"
                             + (f"; {where}" if where else "") + ")") from None
    outputs = [o.name for o in proto.graph.output]
    if len(outputs) != 1:
        raise ModelFileError(f"{path}: the graph has {len(outputs)} outputs ({', '.join(outputs)}); flipq maps "
                             "networks with one output")
    for node in proto.graph.node:
        if node.op_type == "Conv" and not any(a.name == "kernel_shape" for a in node.attribute):
            raise ModelFileError(f"{path}: node '{node.name}' (Conv) has no kernel_shape attribute; export the model "
                                 "with it (torch and Brevitas write it)")
    inits = {i.name for i in proto.graph.initializer}
    data = [i for i in proto.graph.input if i.name not in inits]
    if not data:
        raise ModelFileError(f"{path}: the graph has no data input")
    dims = data[0].type.tensor_type.shape.dim
    for k, d in enumerate(dims):
        if not d.HasField("dim_value") or d.dim_value < 1:
            if k == 0:
                d.Clear()
                d.dim_value = 1  # the batch: one sample per call
                continue
            raise ModelFileError(f"{path}: input '{data[0].name}' dimension {k} is "
                                 f"{d.dim_param or d.dim_value!r}, not a fixed size; export it with a fixed shape")
    sizes = [d.dim_value for d in dims[1:]]
    n = 1
    for v in sizes:
        n *= v
    if n > MAX_SAMPLE_ELEMS:
        raise ModelFileError(f"{path}: input '{data[0].name}' has {n:,} values per sample (shape "
                             f"{[d.dim_value for d in dims]}), more than the {MAX_SAMPLE_ELEMS:,} flipq handles")
    for out in proto.graph.output:
        odims = out.type.tensor_type.shape.dim
        if odims and not odims[0].HasField("dim_value"):
            odims[0].Clear()
            odims[0].dim_value = 1


def prepare_qonnx(model: ModelWrapper) -> ModelWrapper:
    """A Brevitas QONNX export -> the channels-last graph that lowering and hls4ml read; the
    input model is left as it was. Every node keeps its name in the user's file in its
    metadata (:func:`flipq.hls.lower.source_name`), for the errors lowering raises.

    >>> prepared = prepare_qonnx(load_qonnx("build/demo/model.onnx"))   # doctest: +SKIP
    >>> intmodel = lower_qonnx(prepared)                                 # doctest: +SKIP
    """
    model = ModelWrapper(copy.deepcopy(model.model))
    # the layout mark is preparation's own (flipq.hls.conv1d): never taken from the file
    for entry in [e for e in model.model.metadata_props if e.key == LAYOUT_KEY]:
        model.model.metadata_props.remove(entry)
    _record_source_names(model)
    model = cleanup_model(model)
    # a 1-D network (N, C, L) as a 2-D one with H = 1
    model = model.transform(Conv1dTo2d()).transform(InferShapes())
    # global pooling (ReduceMean/ReduceMax over H and W, Global*Pool) as a pool over the whole map
    model = model.transform(GlobalPoolToPool()).transform(InferShapes())
    # an average pool as a conv of ones, before the channels-last conversion (which has no
    # channels-last AveragePool and would leave Transposes around it)
    model = model.transform(AvgPoolToConv()).transform(InferShapes())
    # FINN's FC: a flatten on the input before 2*x - 1 and the quantizer moves behind them
    model = model.transform(MoveInputReshapePastElementwise())
    model = _to_channels_last(model)
    model = model.transform(RemoveTransposePairAroundElementwise())
    # a concatenation of branches: on the channels-last tensors, one Transpose after it
    model = model.transform(ConcatToChannelsLast()).transform(InferShapes())
    # a flatten before a dense layer's own input quantizer: the quantizer first, so that the
    # Transpose channels-last conversion left in front of the flatten can move past it
    model = model.transform(MoveQuantAboveFlatten())
    # a dense-first network on an image-shaped input: the input's Transpose folds into the
    # first dense layer's row order once it is past the input quantizer
    model = model.transform(MoveInputTransposePastQuant())
    model = model.transform(MoveChanFirstDownstream())
    # a Transpose that moved down past a quantizer after a concatenation meets its inverse here
    model = model.transform(ConcatToChannelsLast())
    model = model.transform(AbsorbChanFirstIntoMatMul())
    model = model.transform(InferShapes())
    model = model.transform(GemmWithoutBiasToMatMul())
    gemms = {n.output[0]: (source_name(n), source_op(n), torch_module_path(n)) for n in model.graph.node
             if n.op_type == "Gemm"}
    with warnings.catch_warnings():
        # qonnx reads the opset of whichever domain is listed first (Brevitas lists its own,
        # version 2) and warns on every biased Gemm, though the rewrite is exact for the Gemm
        # Brevitas exports (tests/test_bias_lowering.py compares torch with the prepared graph)
        warnings.filterwarnings("ignore", message="The GemmToMatMul transformation only offers")
        model = model.transform(GemmToMatMul())
    _inherit_source_names(model, gemms)
    return cleanup_model(model)


_BIPOLAR_KEY = "flipq.bipolar"


def _to_channels_last(model: ModelWrapper) -> ModelWrapper:
    """qonnx's channels-last conversion. It moves layout Transposes through a Quant and folds
    them into a Quant's weight initializer, but knows nothing of BipolarQuant (FINN's 1-bit
    weights and activations, CNV-W1A1/W1A2) and left a Transpose in front of the first dense
    layer. Where every BipolarQuant has a scalar scale it is element-wise like a Quant: for the
    conversion only, each is held as a Quant (same inputs, marked in its metadata), then restored."""
    bipolar = [n for n in model.graph.node if n.op_type == "BipolarQuant"]
    if bipolar and all(model.get_initializer(n.input[1]) is not None and model.get_initializer(n.input[1]).size == 1
                       for n in bipolar):
        for n in bipolar:
            n.op_type = "Quant"
            entry = n.metadata_props.add()
            entry.key, entry.value = _BIPOLAR_KEY, "1"
    model = model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
    for n in model.graph.node:
        keep = [e for e in n.metadata_props if e.key != _BIPOLAR_KEY]
        if len(keep) != len(n.metadata_props):
            n.op_type = "BipolarQuant"
            del n.metadata_props[:]
            n.metadata_props.extend(keep)
    return model


def _record_source_names(model: ModelWrapper) -> None:
    """Keep each node's name and op from the user's file in its metadata: cleanup renames every
    node (``Quant_3``), and an error should name the node the user can find."""
    for node in model.graph.node:
        if node.name and not any(e.key == SOURCE_KEY for e in node.metadata_props):
            _set_source(node, node.name, node.op_type, torch_module_path(node))


def _set_source(node, name: str, op: str, module: str = "") -> None:
    for key, value in ((SOURCE_KEY, name), (SOURCE_OP_KEY, op), (SOURCE_MODULE_KEY, module)):
        if value:
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
