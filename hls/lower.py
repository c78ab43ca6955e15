"""Lower a prepared (channels-last) QONNX graph into flipq's integer model.

Every scale must be a power of two and every zero point zero: that is what makes the chain
Brevitas = QONNX = C-sim = emulator exact. Anything else is refused with the node's name.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper

from flipq.hls.planes import PlaneError, check_group_bits, pack_layer
from flipq.host.bitplan import BitPlan, BitPlanError
from flipq.host.intmodel import IntLayer, IntModel, QuantSpec


class UnsupportedNodeError(ValueError):
    """An ONNX node the stack cannot map; the message names the node and its op type."""


MAPPED_OPS = ("Quant", "Conv", "MatMul", "Gemm", "Relu", "MaxPool", "Flatten", "Reshape")
# Shape plumbing that preparation (cleanup, channels-last) folds away.
FOLDED_OPS = ("Transpose", "Identity", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat")


def check_mappable(model: ModelWrapper) -> None:
    """Refuse, before any rewriting renames nodes, an op the integer datapath cannot map;
    the error carries the node's name as the user's file has it."""
    for node in model.graph.node:
        if node.op_type not in MAPPED_OPS + FOLDED_OPS:
            raise UnsupportedNodeError(
                f"node '{node.name}' (op type {node.op_type}) cannot be mapped to flipq's integer "
                f"datapath (supported: {', '.join(MAPPED_OPS)})")


def _attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _pow2_exp(value, node, what: str) -> int:
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.size != 1:
        if not np.all(arr == arr[0]):
            raise UnsupportedNodeError(
                f"node '{node.name}' (op type {node.op_type}): per-channel {what} is not supported "
                "(use a per-tensor power-of-two scale, e.g. Brevitas *PerTensorFixedPoint)")
        arr = arr[:1]
    v = float(arr[0])
    if v <= 0 or not math.isfinite(v):
        raise UnsupportedNodeError(f"node '{node.name}' (op type {node.op_type}): {what} {v} is not > 0")
    e = math.log2(v)
    if e != round(e):
        raise UnsupportedNodeError(
            f"node '{node.name}' (op type {node.op_type}): {what} {v:g} is not a power of two; "
            "flipq needs power-of-two scales (Brevitas *FixedPoint quantizers) to stay bit-exact")
    return int(round(e))


def _quant_spec(model: ModelWrapper, node) -> QuantSpec:
    """QONNX ``Quant(x, scale, zeropt, bitwidth)`` -> QuantSpec, refusing what is not exact."""
    a = _attrs(node)
    scale, zero, bits = (model.get_initializer(node.input[i]) for i in (1, 2, 3))
    if scale is None or zero is None or bits is None:
        raise UnsupportedNodeError(f"node '{node.name}' (op type Quant): scale, zero point and "
                                   "bit width must be constants")
    if np.any(np.asarray(zero) != 0):
        raise UnsupportedNodeError(f"node '{node.name}' (op type Quant): non-zero zero point")
    if a.get("rounding_mode", "ROUND") != "ROUND":
        raise UnsupportedNodeError(
            f"node '{node.name}' (op type Quant): rounding mode {a.get('rounding_mode')} (only ROUND)")
    b = float(np.asarray(bits).ravel()[0])
    if b != int(b):
        raise UnsupportedNodeError(f"node '{node.name}' (op type Quant): fractional bit width {b}")
    return QuantSpec(int(b), bool(a.get("signed", 1)), bool(a.get("narrow", 0)),
                     _pow2_exp(scale, node, "scale"))


def _int_weights(model: ModelWrapper, node) -> tuple[np.ndarray, QuantSpec]:
    spec = _quant_spec(model, node)
    w = model.get_initializer(node.input[0]).astype(np.float64)
    q = np.clip(np.round(w * 2.0 ** -spec.exp), spec.qmin, spec.qmax).astype(np.int64)
    return q, spec


def lower_qonnx(model: ModelWrapper, plan: BitPlan | None = None) -> IntModel:
    """Prepared QONNX (see :func:`flipq.hls.prepare.prepare_qonnx`) -> :class:`IntModel`.

    With a ``plan``, the MAC layers are named after it (in order) and their weight and
    input-activation bits are checked against the graph.
    """
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise UnsupportedNodeError("flipq maps single-input, single-output graphs only")
    in_name = graph.input[0].name
    in_shape = model.get_tensor_shape(in_name)

    weight_nodes = {}  # output tensor name -> (int weights, spec)
    for node in graph.node:
        if node.op_type == "Quant" and model.get_initializer(node.input[0]) is not None:
            weight_nodes[node.output[0]] = _int_weights(model, node)

    first = model.find_consumer(in_name)
    if first is None or first.op_type != "Quant":
        raise UnsupportedNodeError(
            f"the graph input must feed an input quantizer (Quant); it feeds "
            f"{'nothing' if first is None else repr(first.name) + ' (op type ' + first.op_type + ')'}")
    input_quant = _quant_spec(model, first)

    layers: list[IntLayer] = []
    exp = input_quant.exp
    act_bits = input_quant.bits
    macs = []  # (layer, weight spec, input act bits)
    for node in graph.node:
        if node is first or (node.op_type == "Quant" and node.output[0] in weight_nodes):
            continue
        out_shape = model.get_tensor_shape(node.output[0])
        attrs = _attrs(node)
        base = {"onnx_node": node.name, "out_shape": list(out_shape[1:]) if out_shape else None}
        op = node.op_type
        if op in ("Conv", "MatMul", "Gemm"):
            if node.input[1] not in weight_nodes:
                raise UnsupportedNodeError(
                    f"node '{node.name}' (op type {op}): weights must come from a Quant node "
                    "on a constant (a Brevitas quantized layer)")
            w, wspec = weight_nodes[node.input[1]]
            bias = None
            if len(node.input) > 2 and node.input[2]:
                bias = _int_bias(model, node, exp + wspec.exp)
            if op == "Conv":
                if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
                    raise UnsupportedNodeError(
                        f"node '{node.name}' (op type Conv): grouped or dilated convolution")
                if node.domain != "qonnx.custom_op.channels_last":
                    raise UnsupportedNodeError(
                        f"node '{node.name}' (op type Conv): expected a channels-last Conv; "
                        "run flipq.hls.prepare.prepare_qonnx first")
                pads = attrs.get("pads", [0, 0, 0, 0])  # ONNX: top, left, bottom, right
                layer = IntLayer("conv", node.name, dict(base, stride=list(attrs.get("strides", [1, 1])),
                                                        pads=list(pads), w_exp=wspec.exp),
                                 weight=w.transpose(1, 2, 3, 0).copy(), bias=bias)  # OHWI -> HWIO
            else:
                if op == "Gemm" and attrs.get("transB", 0):
                    w = w.T.copy()
                layer = IntLayer("dense", node.name, dict(base, w_exp=wspec.exp), weight=w, bias=bias)
            layer.attrs.update(weight_bits=wspec.bits, act_bits=act_bits)
            layers.append(layer)
            macs.append((layer, wspec, act_bits))
            exp += wspec.exp
            act_bits = None  # accumulator: wide until the next quantizer
        elif op == "Relu":
            layers.append(IntLayer("relu", node.name, base))
        elif op == "Quant":
            spec = _quant_spec(model, node)
            relu = bool(layers) and layers[-1].op == "relu"
            if relu:
                layers.pop()
            layers.append(IntLayer("requant", node.name, dict(base, quant=spec.to_dict(), relu=relu)))
            exp, act_bits = spec.exp, spec.bits
        elif op == "MaxPool":
            if any(attrs.get("pads", [0, 0, 0, 0])) or attrs.get("ceil_mode", 0):
                raise UnsupportedNodeError(f"node '{node.name}' (op type MaxPool): padding/ceil_mode")
            layers.append(IntLayer("maxpool", node.name, dict(
                base, kernel=list(attrs["kernel_shape"]), stride=list(attrs.get("strides", attrs["kernel_shape"])))))
        elif op in ("Flatten", "Reshape"):
            if out_shape is None or len(out_shape) != 2:
                raise UnsupportedNodeError(f"node '{node.name}' (op type {op}): only flattening to 2-D")
            layers.append(IntLayer("flatten", node.name, base))
        else:
            raise UnsupportedNodeError(
                f"node '{node.name}' (op type {op}) cannot be mapped to flipq's integer datapath "
                f"(supported: {', '.join(MAPPED_OPS)})")
    if not macs:
        raise UnsupportedNodeError("the graph has no Conv/MatMul layer with quantized weights")

    if plan is not None:
        _apply_plan(plan, macs)
    shape = tuple(in_shape[1:])
    return IntModel(input_shape=shape, input_quant=input_quant, layers=layers, output_exp=exp,
                    plan=plan, input_layout="NCHW" if len(shape) == 3 else "NC")


def _int_bias(model, node, acc_exp: int) -> np.ndarray:
    b = model.get_initializer(node.input[2])
    if b is None:
        raise UnsupportedNodeError(f"node '{node.name}' (op type {node.op_type}): bias must be constant")
    q = np.asarray(b, dtype=np.float64) * 2.0 ** -acc_exp
    if not np.all(q == np.round(q)):
        raise UnsupportedNodeError(
            f"node '{node.name}' (op type {node.op_type}): bias is not on the accumulator grid "
            f"2^{acc_exp}; quantize the bias with the input*weight scale (e.g. Brevitas Int*Bias)")
    return q.astype(np.int64)


def _apply_plan(plan: BitPlan, macs) -> None:
    if len(plan) != len(macs):
        raise BitPlanError(
            f"plan has {len(plan)} layers ({', '.join(plan.names)}) but the model has {len(macs)} "
            f"Conv/MatMul layers ({', '.join(layer.attrs['onnx_node'] for layer, _, _ in macs)})")
    for lb, (layer, wspec, in_bits) in zip(plan, macs):
        if lb.weight_bits != wspec.bits and lb.max_weight_bits != wspec.bits:
            raise BitPlanError(f"layer '{lb.name}': plan says weight_bits={lb.weight_bits}, "
                               f"the model's weights have {wspec.bits} bits")
        if in_bits is not None and lb.act_bits != in_bits:
            raise BitPlanError(f"layer '{lb.name}': plan says act_bits={lb.act_bits}, "
                               f"the model feeds it {in_bits}-bit activations")
        layer.name = lb.name
        if lb.group_size:
            layer.attrs["group_size"] = lb.group_size
        if lb.group_bits is not None:
            _check_group_bits(lb, layer.weight, wspec.bits)
            layer.attrs["group_bits"] = list(lb.group_bits)


def _check_group_bits(lb, weight: np.ndarray, bits: int) -> None:
    """Each group's declared width must hold its weights (low planes zero below it)."""
    try:
        check_group_bits(pack_layer(weight, bits, lb.group_size, lb.name), lb.group_bits, lb.name)
    except PlaneError as e:
        raise BitPlanError(str(e)) from None