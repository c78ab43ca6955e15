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


MAPPED_OPS = ("Quant", "Conv", "MatMul", "Gemm", "Add", "Relu", "MaxPool", "Flatten", "Reshape")
MAC_NODE_OPS = ("Conv", "MatMul", "Gemm")
# Shape plumbing that preparation (cleanup, channels-last) folds away.
FOLDED_OPS = ("Transpose", "Identity", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat")
# What to change, for the ops users bring most often that the datapath has no place for.
_HINTS = {
    "BatchNormalization": "fold the BatchNorm into the preceding layer's weights and bias before "
                          "export, or remove it",
    "AveragePool": "use MaxPool, or a strided QuantConv2d",
    "GlobalAveragePool": "use MaxPool, or a strided QuantConv2d",
    "Trunc": "Brevitas TruncAvgPool/QuantAvgPool exports Trunc: use MaxPool instead",
    # left after preparation only where channels-last conversion could not fold it
    "Transpose": "a layout change that preparation could not fold, e.g. a network ending in a Conv: "
                 "end it with Flatten and a QuantLinear",
}
SOURCE_KEY = "flipq.source_name"
SOURCE_OP_KEY = "flipq.source_op"


def _source(node, key: str, default: str) -> str:
    for entry in node.metadata_props:
        if entry.key == key:
            return entry.value
    return default


def source_name(node) -> str:
    """The node's name in the user's file (preparation renames nodes and replaces some, e.g.
    Gemm by MatMul + Add; it records the original in the node's metadata, see
    :func:`flipq.hls.prepare.prepare_qonnx`)."""
    return _source(node, SOURCE_KEY, node.name)


def source_op(node) -> str:
    """The node's op type in the user's file (see :func:`source_name`)."""
    return _source(node, SOURCE_OP_KEY, node.op_type)


def _where(node) -> str:
    return f"node '{source_name(node)}' (op type {source_op(node)})"


def check_mappable(model: ModelWrapper) -> None:
    """Refuse, before any rewriting renames nodes, an op or a quantizer the integer datapath
    cannot map; the error carries the node's name as the user's file has it."""
    for node in model.graph.node:
        if node.op_type not in MAPPED_OPS + FOLDED_OPS:
            hint = _HINTS.get(node.op_type, f"supported: {', '.join(MAPPED_OPS)}")
            raise UnsupportedNodeError(
                f"{_where(node)} cannot be mapped to flipq's integer datapath ({hint})")
        # parameters computed by other nodes fold to constants in preparation; lower_qonnx checks those
        if node.op_type == "Quant" and not _feeds_bias_only(model, node) and all(
                model.get_initializer(i) is not None for i in node.input[1:4]):
            spec = _quant_spec(model, node)
            if spec.narrow and not spec.signed and model.get_initializer(node.input[0]) is None:
                # the emulator computes it (levels 0..2**b-2), but hls4ml 1.3's converter raises
                # NotImplementedError deep inside: refuse before any C++ is generated
                raise UnsupportedNodeError(
                    f"{_where(node)}: a narrow-range unsigned activation quantizer ({spec.bits} bits) "
                    "cannot be converted by hls4ml; use narrow_range=False for unsigned activations")


def _feeds_bias_only(model: ModelWrapper, node) -> bool:
    """A Quant on a constant that only feeds biases: checked against the accumulator's grid
    when lowering, not as a power-of-two quantizer of its own."""
    if model.get_initializer(node.input[0]) is None:
        return False
    uses = model.find_consumers(node.output[0]) or []
    return bool(uses) and all(
        u.op_type == "Add" or (u.op_type in ("Conv", "Gemm") and list(u.input).index(node.output[0]) == 2)
        for u in uses)


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
                f"{_where(node)}: per-channel {what} is not supported "
                "(use a per-tensor power-of-two scale, e.g. Brevitas *PerTensorFixedPoint)")
        arr = arr[:1]
    v = float(arr[0])
    if v <= 0 or not math.isfinite(v):
        raise UnsupportedNodeError(f"{_where(node)}: {what} {v} is not > 0 (use a power-of-two scale)")
    e = math.log2(v)
    if e != round(e):
        raise UnsupportedNodeError(
            f"{_where(node)}: {what} {v:g} is not a power of two; "
            "flipq needs power-of-two scales (Brevitas *FixedPoint quantizers) to stay bit-exact")
    return int(round(e))


def _quant_spec(model: ModelWrapper, node) -> QuantSpec:
    """QONNX ``Quant(x, scale, zeropt, bitwidth)`` -> QuantSpec, refusing what is not exact."""
    a = _attrs(node)
    scale, zero, bits = (model.get_initializer(node.input[i]) for i in (1, 2, 3))
    if scale is None or zero is None or bits is None:
        raise UnsupportedNodeError(f"{_where(node)}: scale, zero point and bit width must be constants "
                                   "(use Brevitas *FixedPoint quantizers with static scales)")
    if np.any(np.asarray(zero) != 0):
        nonzero = float(np.asarray(zero, dtype=np.float64).ravel()[np.flatnonzero(np.asarray(zero))[0]])
        raise UnsupportedNodeError(f"{_where(node)}: zero point {nonzero:g} is not 0 (use a symmetric "
                                   "quantizer: Brevitas Int8ActPerTensorFixedPoint or Uint8ActPerTensorFixedPoint, "
                                   "not Shifted*)")
    if a.get("rounding_mode", "ROUND") != "ROUND":
        raise UnsupportedNodeError(
            f"{_where(node)}: rounding mode {a.get('rounding_mode')} is not supported (only ROUND, "
            "round-half-to-even: Brevitas' default float_to_int_impl_type='ROUND')")
    b = float(np.asarray(bits).ravel()[0])
    if b != int(b):
        raise UnsupportedNodeError(f"{_where(node)}: fractional bit width {b} (use an integer bit width)")
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
    input-activation bits are checked against the graph. A bias (the MAC node's own input,
    or a constant ``Add`` right after it, each a constant or a Quant on one) becomes the
    layer's integer bias at the accumulator's scale.
    """
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise UnsupportedNodeError("flipq maps single-input, single-output graphs only")
    in_name = graph.input[0].name
    in_shape = model.get_tensor_shape(in_name)

    # Quant nodes on constants: weights (lowered where a MAC uses them) or quantized biases
    const_quants = {node.output[0]: node for node in graph.node
                    if node.op_type == "Quant" and model.get_initializer(node.input[0]) is not None}

    first = model.find_consumer(in_name)
    if first is None or first.op_type != "Quant":
        feeds = "nothing" if first is None else _where(first)
        raise UnsupportedNodeError(
            f"the graph input must feed an input quantizer (Quant); it feeds {feeds} (put a "
            "QuantIdentity first in the model, before any flatten or reshape)")
    input_quant = _quant_spec(model, first)

    layers: list[IntLayer] = []
    exp = input_quant.exp
    act_bits = input_quant.bits
    macs = []  # (layer, weight spec, input act bits)
    mac_out = None  # output tensor of the MAC layer last lowered, while nothing else followed it
    for node in graph.node:
        if node is first or node.output[0] in const_quants:
            continue
        out_shape = model.get_tensor_shape(node.output[0])
        attrs = _attrs(node)
        base = {"onnx_node": node.name, "out_shape": list(out_shape[1:]) if out_shape else None}
        op = node.op_type
        if op == "Add":
            _add_bias(model, node, layers[-1] if layers else None, mac_out, exp)
            mac_out = node.output[0]
            continue
        mac_out = None
        if op in MAC_NODE_OPS:
            if node.input[1] not in const_quants:
                raise UnsupportedNodeError(
                    f"{_where(node)}: weights must come from a Quant node on a constant "
                    "(a Brevitas quantized layer)")
            w, wspec = _int_weights(model, const_quants[node.input[1]])
            bias = None
            if len(node.input) > 2 and node.input[2]:
                bias = _int_bias(model, node, node.input[2], exp + wspec.exp)
            if op == "Conv":
                if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
                    raise UnsupportedNodeError(
                        f"{_where(node)}: grouped or dilated convolution is not supported (use groups=1, "
                        "dilation=1)")
                if node.domain != "qonnx.custom_op.channels_last":
                    raise UnsupportedNodeError(
                        f"{_where(node)}: expected a channels-last Conv; "
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
            mac_out = node.output[0]
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
                raise UnsupportedNodeError(f"{_where(node)}: padding or ceil_mode is not supported "
                                           "(use MaxPool2d(k) without padding, ceil_mode=False)")
            layers.append(IntLayer("maxpool", node.name, dict(
                base, kernel=list(attrs["kernel_shape"]), stride=list(attrs.get("strides", attrs["kernel_shape"])))))
        elif op in ("Flatten", "Reshape"):
            if out_shape is None or len(out_shape) != 2:
                raise UnsupportedNodeError(f"{_where(node)}: only flattening to 2-D is supported")
            layers.append(IntLayer("flatten", node.name, base))
        else:
            raise UnsupportedNodeError(
                f"{_where(node)} cannot be mapped to flipq's integer datapath "
                f"({_HINTS.get(op, 'supported: ' + ', '.join(MAPPED_OPS))})")
    if not macs:
        raise UnsupportedNodeError("the graph has no Conv/MatMul layer with quantized weights")

    if plan is not None:
        _apply_plan(plan, macs)
    shape = tuple(in_shape[1:])
    return IntModel(input_shape=shape, input_quant=input_quant, layers=layers, output_exp=exp,
                    plan=plan, input_layout="NCHW" if len(shape) == 3 else "NC")


def _add_bias(model: ModelWrapper, node, last: IntLayer | None, mac_out: str | None, acc_exp: int) -> None:
    """``Add(mac_output, constant)`` straight after a MAC layer (how qonnx's GemmToMatMul and
    Brevitas leave a Linear's bias): the constant joins that layer's bias."""
    data = [i for i in node.input if i == mac_out]
    consts = [i for i in node.input if i != mac_out]
    if mac_out is None or len(data) != 1 or len(consts) != 1:
        raise UnsupportedNodeError(
            f"{_where(node)}: only a constant bias added straight after a Conv/MatMul can be mapped "
            "(residual or activation sums have no place in flipq's feed-forward datapath)")
    bias = _int_bias(model, node, consts[0], acc_exp)
    fan_out = last.weight.shape[-1]
    if bias.size == 1:
        bias = np.full(fan_out, int(bias.ravel()[0]), dtype=np.int64)
    if bias.size != fan_out:
        raise UnsupportedNodeError(f"{_where(node)}: bias of shape {list(bias.shape)} does not match the "
                                   f"{fan_out} outputs of the layer before it (add one value per output)")
    bias = bias.reshape(fan_out)
    last.bias = bias if last.bias is None else last.bias + bias


def _const_value(model: ModelWrapper, name: str) -> np.ndarray | None:
    """A constant tensor's value: an initializer, or a Quant on one evaluated as QONNX does."""
    from qonnx.custom_op.general.intquant import int_quant

    value = model.get_initializer(name)
    if value is not None:
        return np.asarray(value, dtype=np.float64)
    quant = model.find_producer(name)
    if quant is None or quant.op_type != "Quant":
        return None
    args = [model.get_initializer(i) for i in quant.input]
    if any(a is None for a in args):
        return None
    a = _attrs(quant)
    return np.asarray(int_quant(*args, signed=a.get("signed", 1), narrow=a.get("narrow", 0),
                                rounding_mode=a.get("rounding_mode", "ROUND")), dtype=np.float64)


def _int_bias(model: ModelWrapper, node, name: str, acc_exp: int) -> np.ndarray:
    """The bias tensor ``name`` as integers on the accumulator's grid ``2**acc_exp`` (input
    exponent + weight exponent): exact for Brevitas Int32Bias; an Int8Bias or a float bias
    only where every value happens to sit on that grid."""
    b = _const_value(model, name)
    if b is None:
        raise UnsupportedNodeError(f"{_where(node)}: the bias must be a constant or a Quant on one "
                                   "(a Brevitas quantized bias such as Int32Bias)")
    q = b * 2.0 ** -acc_exp
    off = np.flatnonzero(q != np.round(q))
    if off.size:
        value = np.float32(b.ravel()[off[0]])  # ONNX holds float32: show its shortest form
        raise UnsupportedNodeError(
            f"{_where(node)}: bias value {str(value)} is not a multiple of the accumulator scale 2^{acc_exp} "
            "(input scale * weight scale); quantize the bias with bias_quant=Int32Bias, or on the "
            "input*weight scale")
    if np.abs(q).max(initial=0) >= 2**53:
        raise UnsupportedNodeError(f"{_where(node)}: bias {float(np.abs(b).max())!r} is too large for "
                                   "the accumulator (limit the bias range, e.g. Int32Bias)")
    return np.round(q).astype(np.int64)


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