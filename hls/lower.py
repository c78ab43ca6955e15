"""Lower a prepared (channels-last) QONNX graph into flipq's integer model.

Every scale must be a power of two and every zero point zero: that is what makes the chain
Brevitas = QONNX = C-sim = emulator exact. Anything else is refused with the node's name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper

from flipq.hls.avgpool_to_conv import is_full_planes
from flipq.hls.chains import compose_affine, pow2_exponent, walk_chain
from flipq.hls.global_pool import GLOBAL_OPS, check_global_pool
from flipq.hls.hwplan import channel_ranges
from flipq.hls.planes import PlaneError, check_group_bits, pack_layer
from flipq.host.bitplan import BitPlan, BitPlanError
from flipq.host.intmodel import IntLayer, IntModel, QuantSpec


class UnsupportedNodeError(ValueError):
    """An ONNX node the stack cannot map; the message names the node and its op type."""


MAPPED_OPS = ("Quant", "Conv", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "BatchNormalization", "Relu", "MaxPool",
              "AveragePool", "Trunc", "BipolarQuant", "Flatten", "Reshape", *GLOBAL_OPS)
MAC_NODE_OPS = ("Conv", "MatMul", "Gemm")
# Shape plumbing that preparation (cleanup, channels-last) folds away.
FOLDED_OPS = ("Transpose", "Identity", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat")
# What to change, for the ops users bring most often that the datapath has no place for.
_HINTS = {
    "BatchNormalization": "a BatchNorm must follow a Conv/MatMul layer, before its quantizer or at the "
                          "model's output",
    "Mul": "a float scale must follow a Conv/MatMul layer (before its quantizer or at the output) or "
           "precede the input quantizer",
    # left after preparation only where channels-last conversion could not fold it
    "Transpose": "a layout change that preparation could not fold, e.g. a network ending in a Conv: "
                 "end it with Flatten and a QuantLinear",
}
SOURCE_KEY = "flipq.source_name"
SOURCE_OP_KEY = "flipq.source_op"
SOURCE_MODULE_KEY = "flipq.source_module"
# the layout users feed, marked by preparation only (flipq.hls.conv1d holds a 1-D network as H = 1)
LAYOUT_KEY = "flipq.input_layout"
# what torch.onnx records of the module a node came from (aligned lists, as Python literals)
TORCH_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
TORCH_CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"


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


def _literal_list(text: str) -> list[str]:
    """A list of strings written as a Python literal (metadata of a file: parsed as data only,
    refused quietly when it is anything else)."""
    import ast

    if not text or len(text) > 4000:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def torch_module_path(node) -> str:
    """The module path of the torch model a node was exported from (``s1.conv``, ``fc``,
    ``s1.add`` for a functional op in module ``s1``), from the metadata torch.onnx writes;
    '' when the export recorded none. The Brevitas layer (``brevitas.nn.*``) a node belongs to
    wins over the modules inside it (its quantizer proxies)."""
    meta = {e.key: e.value for e in node.metadata_props}
    if SOURCE_MODULE_KEY in meta:  # recorded by preparation, or written into the file by anyone
        return _printable(meta[SOURCE_MODULE_KEY])
    scopes = _literal_list(meta.get(TORCH_SCOPES_KEY, ""))
    classes = _literal_list(meta.get(TORCH_CLASSES_KEY, ""))
    if len(scopes) < 2:
        return ""
    if len(classes) != len(scopes):
        classes = [""] * len(scopes)
    path = ""
    for scope, cls in zip(scopes[1:], classes[1:]):
        if cls.startswith("brevitas.nn."):
            return _printable(scope)
        if cls.startswith(("aten.", "torch.ops.", "<")) or "onnx_symbolic" in scope:
            break  # an op, not a module
        path = scope
    op = scopes[-1] if classes[-1].startswith("aten.") else ""
    return _printable(f"{path}.{op}" if path and op else path or op)


def _printable(text: str) -> str:
    """One line, printable, bounded: it goes into a one-line error message."""
    return "".join(c for c in text if c.isprintable())[:120]


def _where(node) -> str:
    module = torch_module_path(node)
    return f"node '{source_name(node)}' (op type {source_op(node)})" + (f" from '{module}'" if module else "")


def _constant_tensors(model: ModelWrapper) -> set[str]:
    """Tensors computed from initializers only (weights, their quantizers, folded shapes)."""
    const = {init.name for init in model.graph.initializer}
    for node in model.graph.node:  # exports are topologically sorted
        if node.op_type == "Constant" or (node.input and all(not i or i in const for i in node.input)):
            const.update(node.output)
    return const


def _structural_obstacle(model: ModelWrapper) -> None:
    """The constructs flipq's feed-forward datapath has no place for, named before anything
    secondary about the same model (a quantizer's scale, a layout change): two activation
    tensors combined (a residual add, a concatenation, a product), a grouped or depthwise conv."""
    const = _constant_tensors(model)
    for node in model.graph.node:
        live = [i for i in node.input if i and i not in const]
        if node.op_type in ("Sub", "Mul", "Div") and len(live) > 1:
            what = ("a difference of two activation tensors" if node.op_type == "Sub"
                    else "an element-wise product or quotient of two activation tensors (e.g. squeeze-and-"
                         "excitation)")
            raise UnsupportedNodeError(
                f"{_where(node)}: {what} cannot be mapped yet: flipq's datapath combines two tensors only by "
                "a residual add; deploy the network without it")
        if node.op_type == "Concat" and len(live) > 1:
            axis = int(_attrs(node).get("axis", 1))
            rank = len(model.get_tensor_shape(node.output[0]) or [0, 0])
            if axis % max(rank, 1) != 1:
                raise UnsupportedNodeError(
                    f"{_where(node)}: a concatenation of {len(live)} activation tensors on axis {axis} cannot be "
                    "mapped: flipq joins tensors on the channels (axis 1) only")
        if node.op_type == "Conv":
            a = _attrs(node)
            if any(int(d) != 1 for d in a.get("dilations", [])):
                raise UnsupportedNodeError(f"{_where(node)}: a dilated convolution (dilations "
                                           f"{list(a['dilations'])}) cannot be mapped; use dilation=1")


def check_mappable(model: ModelWrapper) -> None:
    """Refuse, before any rewriting renames nodes, an op or a quantizer the integer datapath
    cannot map; the error carries the node's name as the user's file has it. The construct that
    is the real obstacle (a branch, a grouped conv) is named first."""
    _structural_obstacle(model)
    for node in model.graph.node:
        if node.op_type not in MAPPED_OPS + FOLDED_OPS:
            hint = _HINTS.get(node.op_type, f"supported: {', '.join(MAPPED_OPS)}")
            raise UnsupportedNodeError(
                f"{_where(node)} cannot be mapped to flipq's integer datapath ({hint})")
        if node.op_type in GLOBAL_OPS and model.get_tensor_shape(node.input[0]) is not None:
            check_global_pool(model, node, _where(node))
        # parameters computed by other nodes fold to constants in preparation; lower_qonnx checks those
        if node.op_type == "Quant" and not _feeds_bias_only(model, node) and all(
                model.get_initializer(i) is not None for i in node.input[1:4]):
            _quant_params(model, node)


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
    """The exponent of a per-tensor power-of-two ``value`` (> 0, checked by _quant_params), else
    refused naming the node: where no threshold can absorb a float scale (a quantizer on pooled
    values)."""
    arr = np.asarray(value, dtype=np.float64).ravel()
    if not np.all(arr == arr[0]):
        raise UnsupportedNodeError(
            f"{_where(node)}: per-channel {what} is not supported here "
            "(use a per-tensor power-of-two scale, e.g. Brevitas *PerTensorFixedPoint)")
    e = pow2_exponent(arr)
    if e is None:
        raise UnsupportedNodeError(
            f"{_where(node)}: {what} {float(arr[0]):g} is not a power of two, and no layer feeds this "
            "quantizer directly (quantize right after the layer, or use a *FixedPoint quantizer)")
    return e


def _quant_params(model: ModelWrapper, node) -> tuple[int, bool, bool, np.ndarray]:
    """QONNX ``Quant(x, scale, zeropt, bitwidth)`` -> (bits, signed, narrow, scale), refusing a
    zero point, a rounding mode or a bit width that is not exact."""
    a = _attrs(node)
    scale, zero, bits = (model.get_initializer(node.input[i]) for i in (1, 2, 3))
    if scale is None or zero is None or bits is None:
        raise UnsupportedNodeError(f"{_where(node)}: scale, zero point and bit width must be constants "
                                   "(use Brevitas quantizers with static scales)")
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
    if b < 1 or b > 32:
        raise UnsupportedNodeError(f"{_where(node)}: bit width {b:g} is outside 1..32 (a quantizer of no levels, "
                                   "or wider than any datapath here)")
    sc = np.asarray(scale, dtype=np.float64)
    if not (np.all(sc > 0) and np.all(np.isfinite(sc))):
        raise UnsupportedNodeError(f"{_where(node)}: scale {float(sc.ravel()[0])} is not > 0")
    return int(b), bool(a.get("signed", 1)), bool(a.get("narrow", 0)), sc


def _trunc_params(model: ModelWrapper, node) -> tuple[int, bool, bool, np.ndarray]:
    """QONNX ``Trunc`` (Brevitas TruncAvgPool2d's quantizer) -> (bits, signed, narrow, output
    scale): the values it produces; the truncation itself is evaluated as QONNX does."""
    a = _attrs(node)
    consts = [model.get_initializer(i) for i in node.input[1:]]
    if any(c is None for c in consts) or len(consts) not in (4, 5):
        raise UnsupportedNodeError(f"{_where(node)}: scale, zero point and bit widths must be constants")
    if np.any(np.asarray(consts[1]) != 0):
        raise UnsupportedNodeError(f"{_where(node)}: zero point is not 0 (use a symmetric quantizer)")
    if len(consts) == 5:  # Trunc v2: (scale, zeropt, input bits, output scale, output bits)
        out_scale, out_bits = consts[3], consts[4]
    else:  # v1: (scale, zeropt, input bits, output bits), output scale = scale * 2**(in - out)
        out_bits = consts[3]
        out_scale = np.asarray(consts[0]) * 2.0 ** (float(np.ravel(consts[2])[0]) - float(np.ravel(out_bits)[0]))
    return (int(np.ravel(out_bits)[0]), bool(a.get("signed", 1)), bool(a.get("narrow", 0)),
            np.asarray(out_scale, dtype=np.float64))


def _end_params(model: ModelWrapper, node) -> tuple[int, bool, bool, np.ndarray]:
    """(bits, signed, narrow, scale) of whatever quantizes a chain: Quant, Trunc or
    BipolarQuant (its {-1, +1} as the narrow signed 2-bit range -1..1; thresholds then never
    produce 0: the two levels' thresholds coincide)."""
    if node.op_type == "Trunc":
        return _trunc_params(model, node)
    if node.op_type == "BipolarQuant":
        scale = model.get_initializer(node.input[1])
        if scale is None:
            raise UnsupportedNodeError(f"{_where(node)}: the scale must be a constant")
        return 2, True, True, np.asarray(scale, dtype=np.float64)
    return _quant_params(model, node)


def _quant_spec(model: ModelWrapper, node) -> QuantSpec:
    """A Quant with a per-tensor power-of-two scale -> QuantSpec (else refused by name)."""
    bits, signed, narrow, scale = _quant_params(model, node)
    return QuantSpec(bits, signed, narrow, _pow2_exp(scale, node, "scale"))


def _int_weights(model: ModelWrapper, node, transpose: bool = False):
    """A weight Quant -> (integers, bits, real scale per output channel, power-of-two exponent
    of a per-tensor scale or None). The output channel is the first axis of a Conv weight
    (OIHW) and the last of a MatMul weight ((K, N); ``transpose`` for a Gemm's transB)."""
    bits, signed, narrow, scale = _end_params(model, node)
    spec = QuantSpec(bits, signed, narrow, 0)
    w = model.get_initializer(node.input[0]).astype(np.float64)
    full = np.broadcast_to(scale, w.shape)
    if node.op_type == "BipolarQuant":  # {-1, +1}: a 2-bit two's-complement weight
        q = np.where(w >= 0, 1, -1).astype(np.int64)
    else:
        q = np.clip(np.round(w / full), spec.qmin, spec.qmax).astype(np.int64)
    if transpose:
        q, full = q.T.copy(), full.T
    per_out = full.reshape(full.shape[0], -1) if w.ndim == 4 else full.reshape(-1, full.shape[-1]).T
    if not np.all(per_out == per_out[:, :1]):
        raise UnsupportedNodeError(f"{_where(node)}: a weight scale that varies within an output channel "
                                   "is not supported (use per-tensor or per-output-channel scales)")
    # bipolar weights always take the threshold/affine path (the C++ graph holds them as a Quant)
    return q, bits, per_out[:, 0].copy(), None if node.op_type == "BipolarQuant" else pow2_exponent(scale)


def _input_affine(model: ModelWrapper, in_name: str):
    """Elementwise float ops on the graph input before its quantizer (FINN's ``2 * x - 1``):
    [(op, value)] and the input Quant node."""
    ops = []
    cur = in_name
    node = model.find_consumer(cur)
    while node is not None and node.op_type in ("Mul", "Div", "Add", "Sub"):
        others = [i for i in node.input if i != cur]
        value = model.get_initializer(others[0]) if len(others) == 1 else None
        if value is None or np.asarray(value).size != 1 or (node.op_type in ("Sub", "Div") and node.input[0] != cur):
            break
        ops.append((node.op_type.lower(), float(np.asarray(value, dtype=np.float32).ravel()[0])))
        cur = node.output[0]
        node = model.find_consumer(cur)
    return ops, node


def lower_qonnx(model: ModelWrapper, plan: BitPlan | None = None) -> IntModel:
    """Prepared QONNX (see :func:`flipq.hls.prepare.prepare_qonnx`) -> :class:`IntModel`.

    With a ``plan``, the MAC layers are named after it (in order) and their weight and
    input-activation bits are checked against the graph. Where a MAC layer's chain to its
    quantizer is a bias on the accumulator's grid and a ReLU, with power-of-two scales, the
    bias becomes the layer's integer bias and the quantizer a shift (``requant``); any other
    chain (float or per-channel scales, BatchNorm, a bias off the grid, a narrow unsigned
    quantizer) becomes integer thresholds, or at the graph output the float output affine
    (:mod:`flipq.hls.chains`).
    """
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise UnsupportedNodeError("flipq maps single-input, single-output graphs only")
    in_name = graph.input[0].name
    in_shape = model.get_tensor_shape(in_name)

    # Quant nodes on constants: weights (lowered where a MAC uses them) or quantized biases
    const_quants = {node.output[0]: node for node in graph.node
                    if node.op_type in ("Quant", "BipolarQuant") and model.get_initializer(node.input[0]) is not None}

    input_affine, first = _input_affine(model, in_name)
    if first is not None and first.op_type == "BipolarQuant":
        raise UnsupportedNodeError(
            f"{_where(first)}: a 1-bit (bipolar) input quantizer cannot be mapped: the host quantizes inputs "
            "with a uniform quantizer; use an input quantizer of 2 or more bits (e.g. FINN's IN_BIT_WIDTH=8)")
    if first is None or first.op_type != "Quant":
        feeds = "nothing" if first is None else _where(first)
        raise UnsupportedNodeError(
            f"the graph input must feed an input quantizer (Quant); it feeds {feeds} (put a "
            "QuantIdentity first in the model, before any flatten or reshape)")
    skip = {n.name for n in graph.node if n.op_type in ("Mul", "Div", "Add", "Sub")
            and _upstream_of(model, n, first)}
    bits, signed, narrow, in_scale = _quant_params(model, first)
    if np.asarray(in_scale).size != 1:
        raise UnsupportedNodeError(f"{_where(first)}: a per-channel input scale is not supported "
                                   "(use one scale for the whole input)")
    in_exp = pow2_exponent(in_scale)
    if in_exp is None:  # Quant divides by its scale in float32: the host does the same
        input_affine.append(("div", float(np.asarray(in_scale, dtype=np.float32).ravel()[0])))
    input_quant = QuantSpec(bits, signed, narrow, in_exp if in_exp is not None else 0)

    st = _State(exp=input_quant.exp, act_bits=input_quant.bits, real=float(np.ravel(in_scale)[0]),
                exact=in_exp is not None, lo=input_quant.qmin, hi=input_quant.qmax)
    layers: list[IntLayer] = []
    macs = []  # (layer, weight bits, input act bits, torch module path)
    mac_out = None  # output tensor of the MAC layer last lowered, while nothing else followed it
    output_affine = None
    # the graph: ONNX tensor -> (index of the layer that computes it, -1 the input; its state)
    tensors = {first.output[0]: (-1, replace(st))}
    for node in _depth_first(model):
        if node is first or node.output[0] in const_quants or node.name in skip:
            continue
        out_shape = model.get_tensor_shape(node.output[0])
        attrs = _attrs(node)
        base = {"onnx_node": node.name, "out_shape": list(out_shape[1:]) if out_shape else None}
        op = node.op_type
        live = [i for i in node.input if i in tensors]
        if op == "Concat" and len(live) >= 2:
            if len(live) != len(node.input):
                raise UnsupportedNodeError(f"{_where(node)}: a concatenation of activations with constants cannot "
                                           "be mapped")
            layers.append(_concat(node, base, attrs, [tensors[t] for t in live], out_shape))
            st = replace(tensors[live[0]][1])
            st.set_concat([tensors[t][1] for t in live])
            tensors[node.output[0]] = (len(layers) - 1, replace(st))
            mac_out = None
            continue
        if op == "Add" and len(live) == 2:
            layers.append(_residual_add(node, base, tensors[live[0]], tensors[live[1]]))
            st = replace(tensors[live[0]][1])
            st.set_sum(tensors[live[0]][1], tensors[live[1]][1])
            tensors[node.output[0]] = (len(layers) - 1, replace(st))
            mac_out = None
            continue
        if not live:
            raise UnsupportedNodeError(f"{_where(node)} reads no tensor the integer datapath computes (e.g. a "
                                       "computation on constants that preparation could not fold)")
        # the tensor this node reads: the last layer's output in a chain, an earlier one's in a branch
        producer, state = tensors[live[0]]
        st = replace(state)
        if mac_out != live[0]:
            mac_out = None
        n_before = len(layers)
        if op == "Add":
            _add_bias(model, node, layers[-1] if layers else None, mac_out, st.exp)
            mac_out = node.output[0]
            tensors[node.output[0]] = (len(layers) - 1, replace(st))
            continue
        mac_out = None
        out_tensor = node.output[0]
        if op in MAC_NODE_OPS:
            if node.input[1] not in const_quants:
                raise UnsupportedNodeError(
                    f"{_where(node)}: weights must come from a Quant node on a constant "
                    "(a Brevitas quantized layer)")
            transpose = op == "Gemm" and attrs.get("transB", 0)
            w, wbits, w_scale, w_exp = _int_weights(model, const_quants[node.input[1]], transpose)
            chain = walk_chain(model, node)
            layer = _mac_layer(model, node, attrs, base, w, w_exp)
            layer.attrs.update(weight_bits=wbits, act_bits=st.act_bits)
            if is_full_planes(node):
                layer.attrs["full_planes"] = True
            layers.append(layer)
            macs.append((layer, wbits, st.act_bits, torch_module_path(node)))
            w_kn = layer.weight.reshape(-1, layer.weight.shape[-1])
            simple = _simple(model, node, chain, st, w_exp, layer)
            if simple or _passes_on(node, chain, w_scale):
                # an accumulator straight into the next layer (maybe through MaxPool): its real
                # scale (a float one too: an average pool's 1/9, a float input scale) goes on
                if not simple:
                    layer.attrs.update(w_int=w_exp is None, w_exp=0 if w_exp is None else w_exp)
                st.exp += layer.attrs["w_exp"]
                st.act_bits = None  # accumulator: wide until the next quantizer
                st.real *= float(w_scale[0]) if not simple else 2.0 ** layer.attrs["w_exp"]
                st.exact = st.exact and w_exp is not None
                lo, hi = channel_ranges(w_kn, wbits, st.lo, st.hi)
                bias = 0 if layer.bias is None else np.asarray(layer.bias)
                st.lo, st.hi = int((lo + bias).min()), int((hi + bias).max())
                mac_out = node.output[0]
            else:
                layer.bias = None  # the chain holds the bias
                if w_exp is None:
                    layer.attrs.update(w_int=True, w_exp=0)
                acc_exp = st.exp + layer.attrs["w_exp"]
                if chain.to_output:
                    own = _const_value(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
                    a, b, relu = compose_affine(model, chain, node.output[0], st.real * w_scale, _const_value,
                                                _refuse_at, own)
                    lo, hi = channel_ranges(w_kn, wbits, st.lo, st.hi)
                    # float32 reference vs float64 here: the MAC's float32 sum of K terms plus a few
                    # rounded ops, each within 2**-24 of the largest magnitude the channel reaches
                    bound = (w_kn.shape[0] + 8) * 2.0**-24 * (np.abs(a) * np.maximum(-lo, hi) + np.abs(b))
                    output_affine = {"scale": [float(v) for v in a / 2.0**acc_exp], "bias": [float(v) for v in b],
                                     "bound": [float(v) for v in bound], "relu": relu,
                                     "onnx_nodes": [n.name for n in chain.nodes]}
                    st.exp = acc_exp
                elif chain.quant is None:
                    stop = chain.stop
                    raise UnsupportedNodeError(
                        f"{_where(node)}: its output reaches "
                        f"{'several nodes' if stop is None else _where(stop)} before any quantizer; put an "
                        "activation quantizer (QuantIdentity/QuantReLU) after the layer's bias, scale or "
                        "BatchNorm")
                else:
                    layers += _threshold_layers(model, node, chain, st, w_kn, wbits, w_scale, base)
                if chain.nodes:
                    out_tensor = chain.nodes[-1].output[0]
                skip.update(n.name for n in chain.nodes)
        elif op == "Relu":
            layers.append(IntLayer("relu", node.name, base))
            st.lo, st.hi = max(st.lo, 0), max(st.hi, 0)
        elif op == "Quant":
            spec = _quant_spec(model, node)
            if not st.exact:
                raise UnsupportedNodeError(
                    f"{_where(node)}: a quantizer on values with a non-power-of-two scale that no layer "
                    "feeds directly (e.g. after a pool) cannot be mapped; quantize right after the layer")
            # a ReLU right before, read by nothing else, folds into the requantization
            relu = (producer == len(layers) - 1 and bool(layers) and layers[-1].op == "relu"
                    and len(model.find_consumers(node.input[0]) or []) == 1)
            inherited = {}
            if relu:
                inherited = {k: v for k, v in layers.pop().attrs.items() if k == "inputs"}
            if spec.narrow and not spec.signed:
                raise UnsupportedNodeError(
                    f"{_where(node)}: a narrow-range unsigned quantizer that no layer feeds directly "
                    "cannot be mapped; use narrow_range=False, or quantize right after the layer")
            layers.append(IntLayer("requant", node.name, dict(base, quant=spec.to_dict(), relu=relu, **inherited)))
            st.set_quant(spec, 2.0**spec.exp, True)
        elif op == "MaxPool":
            layers.append(_maxpool(node, attrs, base, st.lo))
        elif op in ("Flatten", "Reshape"):
            if out_shape is None or len(out_shape) != 2:
                raise UnsupportedNodeError(f"{_where(node)}: only flattening to 2-D is supported")
            layers.append(IntLayer("flatten", node.name, base))
        else:
            raise UnsupportedNodeError(
                f"{_where(node)} cannot be mapped to flipq's integer datapath "
                f"({_HINTS.get(op, 'supported: ' + ', '.join(MAPPED_OPS))})")
        if len(layers) > n_before and producer != n_before - 1:
            layers[n_before].attrs["inputs"] = [producer]  # the first layer of a branch
        tensors[out_tensor] = (len(layers) - 1, replace(st))
    if not macs:
        raise UnsupportedNodeError("the graph has no Conv/MatMul layer with quantized weights")

    if plan is not None:
        plan = _apply_plan(plan, macs)
    if output_affine is None and not st.exact:
        # the last quantizer's float scale: QONNX's float32 product q * scale, exactly
        c = int(layers[-1].attrs["out_shape"][-1])
        output_affine = {"scale": [st.real] * c, "bias": [0.0] * c, "bound": [0.0] * c, "relu": False,
                         "float32": True, "onnx_nodes": []}
    shape = tuple(in_shape[1:])
    return IntModel(input_shape=shape, input_quant=input_quant, layers=layers, output_exp=st.exp,
                    plan=plan, input_layout=_input_layout(model, shape), input_affine=input_affine,
                    output_affine=output_affine)


def _depth_first(model: ModelWrapper) -> list:
    """The graph's nodes in a topological order that finishes a branch before starting the
    next (Kahn's algorithm with a stack): a layer's own chain -- its bias, ReLU, quantizer --
    follows it directly in the integer model, as a chain's would, whatever order the export
    interleaved parallel branches in. A chain keeps its order."""
    nodes = list(model.graph.node)
    available = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    waiting = {id(n): sum(1 for i in set(n.input) if i not in available) for n in nodes}
    consumers: dict = {}
    for n in nodes:
        for i in set(n.input):
            if i not in available:
                consumers.setdefault(i, []).append(n)
    stack = [n for n in reversed(nodes) if waiting[id(n)] == 0]
    order = []
    while stack:
        node = stack.pop()
        order.append(node)
        ready = []
        for out in node.output:
            for c in consumers.get(out, []):
                waiting[id(c)] -= 1
                if waiting[id(c)] == 0:
                    ready.append(c)
        stack += reversed(ready)  # the first consumer in file order next
    if len(order) != len(nodes):  # a cycle, or an input nothing produces: keep the file's order
        return nodes
    return order


def _input_layout(model: ModelWrapper, shape: tuple) -> str:
    """What users feed: NCL where preparation held a 1-D network as H = 1 (flipq.hls.conv1d),
    NCHW for other images, NC for vectors."""
    if any(e.key == LAYOUT_KEY and e.value == "NCL" for e in model.model.metadata_props) and len(shape) == 3:
        return "NCL"
    return "NCHW" if len(shape) == 3 else "NC"


@dataclass
class _State:
    """The tensor the walk is at: its grid exponent (as the C++ graph holds it), bits, real
    scale, whether the real scale is exactly ``2**exp``, and its integer range."""

    exp: int
    act_bits: int | None
    real: float
    exact: bool
    lo: int
    hi: int

    def set_quant(self, spec: QuantSpec, real: float, exact: bool) -> None:
        self.exp, self.act_bits, self.real, self.exact = spec.exp, spec.bits, real, exact
        self.lo, self.hi = spec.qmin, spec.qmax

    def set_sum(self, a: "_State", b: "_State") -> None:
        """The state of ``a + b`` on the finer of their grids (see :func:`_residual_add`)."""
        self.exp = min(a.exp, b.exp)
        sa, sb = a.exp - self.exp, b.exp - self.exp
        self.lo, self.hi = (a.lo << sa) + (b.lo << sb), (a.hi << sa) + (b.hi << sb)
        self.act_bits, self.real, self.exact = None, 2.0**self.exp, True


    def set_concat(self, parts: list) -> None:
        """The state of tensors joined on the channels (see :func:`_concat`)."""
        self.exp = min(p.exp for p in parts)
        self.lo = min(p.lo << (p.exp - self.exp) for p in parts)
        self.hi = max(p.hi << (p.exp - self.exp) for p in parts)
        self.exact = all(p.exact for p in parts)
        self.real = 2.0**self.exp if self.exact else parts[0].real
        same = len({(p.exp, p.act_bits) for p in parts}) == 1
        self.act_bits = parts[0].act_bits if same else None


def _concat(node, base: dict, attrs: dict, parts: list, out_shape) -> IntLayer:
    """``Concat`` on the channels of tensors the datapath computes: exact on power-of-two grids
    (each moved onto the finest by a left shift), or on one float grid (the same real scale and
    exponent: joined as they are); anything else is refused naming the node."""
    axis = int(attrs.get("axis", -1))
    rank = len(out_shape) if out_shape else 0
    if rank and axis % rank != rank - 1:
        raise UnsupportedNodeError(f"{_where(node)}: a concatenation on axis {axis} of the channels-last tensor "
                                   "(only the channels can be joined)")
    states = [st for _, st in parts]
    if not all(st.exact for st in states) and len({(st.real, st.exp) for st in states}) != 1:
        scales = ", ".join(f"{st.real:g}" for st in states)
        raise UnsupportedNodeError(
            f"{_where(node)}: a concatenation of tensors with the scales {scales}: joined tensors must share one "
            "grid, or all have power-of-two scales; quantize the branches with one quantizer (or *FixedPoint ones)")
    shift = max(st.exp for st in states) - min(st.exp for st in states)
    if shift > MAX_ADD_SHIFT:
        raise UnsupportedNodeError(f"{_where(node)}: a concatenation of tensors on grids {shift} bits apart "
                                   f"(at most {MAX_ADD_SHIFT}); quantize the branches on closer scales")
    return IntLayer("concat", node.name, dict(base, inputs=[i for i, _ in parts], exps=[st.exp for st in states]))


# the widest alignment shift of a residual add's operands (beyond it a grid is surely a mistake)
MAX_ADD_SHIFT = 16


def _residual_add(node, base: dict, a: tuple, b: tuple) -> IntLayer:
    """``Add`` of two tensors the datapath computes (a residual connection): exact in integers
    when both have power-of-two real scales -- the operands move onto the finer grid by a left
    shift. A float scale on either side is refused naming the add."""
    (pa, sa), (pb, sb) = a, b
    for side, st in (("first", sa), ("second", sb)):
        if not st.exact:
            raise UnsupportedNodeError(
                f"{_where(node)}: a residual add whose {side} operand has the float scale {st.real:g}: the sum "
                "of two tensors is exact in integers only on power-of-two grids; quantize both operands with "
                "power-of-two scales (Brevitas *FixedPoint quantizers, e.g. Int8ActPerTensorFixedPoint)")
    shift = abs(sa.exp - sb.exp)
    if shift > MAX_ADD_SHIFT:
        raise UnsupportedNodeError(
            f"{_where(node)}: a residual add of operands on grids 2^{sa.exp} and 2^{sb.exp}, {shift} bits apart "
            f"(at most {MAX_ADD_SHIFT}); quantize the two operands on closer scales")
    return IntLayer("add", node.name, dict(base, inputs=[pa, pb], exps=[sa.exp, sb.exp]))


def _upstream_of(model: ModelWrapper, node, target) -> bool:
    """``node`` lies on the path from the graph input to ``target`` (the input quantizer)."""
    cur = model.find_consumer(node.output[0])
    while cur is not None:
        if cur is target or cur.name == target.name:
            return True
        if cur.op_type not in ("Mul", "Div", "Add", "Sub"):
            return False
        cur = model.find_consumer(cur.output[0])
    return False


def _refuse_at(node, what: str):
    return UnsupportedNodeError(f"{_where(node)}: {what}")


def _mac_layer(model, node, attrs, base, w, w_exp) -> IntLayer:
    op = node.op_type
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = node.input[2]  # resolved by _simple (grid) or the chain (thresholds)
    if op == "Conv":
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise UnsupportedNodeError(f"{_where(node)}: dilated convolution is not supported (use dilation=1)")
        if node.domain != "qonnx.custom_op.channels_last":
            raise UnsupportedNodeError(
                f"{_where(node)}: expected a channels-last Conv; "
                "run flipq.hls.prepare.prepare_qonnx first")
        groups = int(attrs.get("group", 1))
        extra = {}
        if groups > 1:  # depthwise / grouped: the block-diagonal weights of an ordinary conv
            w = ungroup_weights(w, groups)
            extra["groups"] = groups
        pads = attrs.get("pads", [0, 0, 0, 0])  # ONNX: top, left, bottom, right
        layer = IntLayer("conv", node.name, dict(base, stride=list(attrs.get("strides", [1, 1])),
                                                 pads=list(pads), w_exp=w_exp, **extra),
                         weight=w.transpose(1, 2, 3, 0).copy())  # OHWI (channels last) -> HWIO
    else:
        layer = IntLayer("dense", node.name, dict(base, w_exp=w_exp), weight=w)
    layer.bias = bias
    return layer


def ungroup_weights(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv's channels-last weights ``(O, kh, kw, I / groups)`` as the block-diagonal
    ``(O, kh, kw, I)`` of the ordinary conv that computes the same: output channel ``o`` of group
    ``g = o // (O / groups)`` reads input channels ``g * I/groups .. (g+1) * I/groups - 1``,
    every other weight 0. Exact; a depthwise conv (groups = channels) so costs ``channels``
    times the MACs of a vector-vector unit."""
    o, kh, kw, ig = w.shape
    og = o // groups
    full = np.zeros((o, kh, kw, ig * groups), dtype=w.dtype)
    for g in range(groups):
        full[g * og:(g + 1) * og, :, :, g * ig:(g + 1) * ig] = w[g * og:(g + 1) * og]
    return full


def _simple(model, node, chain, st: _State, w_exp, layer: IntLayer) -> bool:
    """The chain is what a shift requantization computes exactly: power-of-two scales all along,
    at most a bias on the accumulator's grid and a ReLU (and MaxPool) before a quantizer that is
    not narrow unsigned. Resolves the layer's own bias input when it is."""
    bias_name = layer.bias
    layer.bias = None
    if not st.exact or w_exp is None or any(op not in ("Add", "Relu", "MaxPool", "Quant") for op in chain.ops):
        return False
    if chain.quant is not None:
        if chain.quant.op_type in ("Trunc", "BipolarQuant"):
            return False
        bits, signed, narrow, scale = _quant_params(model, chain.quant)
        if pow2_exponent(scale) is None or (narrow and not signed):
            return False
    adds = [n for n in chain.nodes if n.op_type == "Add"]
    if adds and chain.nodes.index(adds[-1]) != len(adds) - 1:
        return False  # a constant added after the ReLU is not a bias
    try:
        if bias_name is not None:
            layer.bias = _int_bias(model, node, bias_name, st.exp + w_exp)
        cur = node.output[0]
        for add in adds:
            _int_bias(model, add, [i for i in add.input if i != cur][0], st.exp + w_exp)
            cur = add.output[0]
    except UnsupportedNodeError:
        layer.bias = None
        return False
    return True


def _passes_on(node, chain, w_scale) -> bool:
    """A bias-free MAC whose accumulator feeds the next layer unchanged (MaxPool aside) with one
    real scale for every channel: integers on a (float) grid, as the next layer takes them."""
    return (chain.quant is None and not chain.to_output and chain.stop is not None
            and all(op == "MaxPool" for op in chain.ops) and not (len(node.input) > 2 and node.input[2])
            and bool(np.all(w_scale == w_scale[0])))


def _maxpool(node, attrs, base, lo: int) -> IntLayer:
    """A ``maxpool`` layer; ``lo`` the least integer its input holds. Padding (ONNX pads with
    minus infinity: a padded cell never wins) is taken where ``lo >= 0``: every window then holds
    a real value >= 0, so the hardware's zero padding (hls4ml's ZeroPadding, the RTL window
    generator's) is exact (docs/datapath.md)."""
    kernel = [int(k) for k in attrs["kernel_shape"]]
    if attrs.get("ceil_mode", 0):
        raise UnsupportedNodeError(f"{_where(node)}: ceil_mode=True is not supported (its last window may hang "
                                   "over the edge); use ceil_mode=False, with padding if the size must match")
    if attrs.get("dilations") and any(int(d) != 1 for d in attrs["dilations"]):
        raise UnsupportedNodeError(f"{_where(node)}: a dilated MaxPool is not supported (dilation=1)")
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * len(kernel))]
    extra = {}
    if any(pads):
        if len(pads) != 4 or any(not 0 <= p < kernel[i % 2] for i, p in enumerate(pads)):
            raise UnsupportedNodeError(f"{_where(node)}: pads {pads} for kernel {kernel}: each pad must be "
                                       "0 <= pad < the kernel's size on its axis")
        if lo < 0:
            raise UnsupportedNodeError(
                f"{_where(node)}: MaxPool with padding on a tensor that can be negative (least value {lo}) is "
                "not supported (the hardware pads with zero); pool after a ReLU or an unsigned quantizer, or "
                "without padding")
        extra["pads"] = pads
    return IntLayer("maxpool", node.name, dict(
        base, kernel=kernel, stride=[int(s) for s in attrs.get("strides", kernel)], **extra))


def _threshold_layers(model, node, chain, st: _State, w_kn, wbits, w_scale, base) -> list[IntLayer]:
    """The threshold layer for ``chain`` (ending in a Quant), then its MaxPools moved after it."""
    from flipq.hls.thresholds import FloatChain, derive_thresholds, levels

    quant = chain.quant
    bits, signed, narrow, q_scale = _end_params(model, quant)
    if np.asarray(q_scale).size != 1:
        raise UnsupportedNodeError(f"{_where(quant)}: a per-channel activation scale is not supported "
                                   "(use one scale per activation tensor)")
    q_real = float(np.ravel(q_scale)[0])
    q_exp = pow2_exponent(q_scale)
    spec = QuantSpec(bits, signed, narrow, q_exp if q_exp is not None else 0)
    pools = [n for n in chain.nodes if n.op_type == "MaxPool"]
    # MaxPool commutes with the (per-channel non-decreasing) step function: evaluate without it
    rename = {p.output[0]: p.input[0] for p in pools}
    evaluated = []
    for n in chain.nodes:
        if n.op_type == "MaxPool":
            continue
        n2 = type(n)()
        n2.CopyFrom(n)
        for i, name in enumerate(n2.input):
            while name in rename:
                name = rename[name]
            n2.input[i] = name
        evaluated.append(n2)
    bias = _const_value(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    fn = FloatChain(model, node.output[0], evaluated, quant.output[0], st.real, w_scale, node.name, _const_value,
                    bias=bias)
    lo, hi = channel_ranges(w_kn, wbits, st.lo, st.hi)
    try:
        t, descending = derive_thresholds(lambda acc: levels(fn(acc), q_real), lo, hi, spec.qmin, spec.qmax,
                                          name=node.name)
    except Exception as e:
        if isinstance(e, UnsupportedNodeError):
            raise
        from flipq.hls.thresholds import ThresholdError
        if isinstance(e, ThresholdError):
            raise
        raise UnsupportedNodeError(f"{_where(node)}: its chain to {_where(quant)} cannot be evaluated "
                                   f"({type(e).__name__}: {e})") from e
    if descending and pools:
        raise UnsupportedNodeError(
            f"{_where(pools[0])}: MaxPool between a layer and its quantizer with a decreasing channel "
            f"({descending[0]}, e.g. a negative BatchNorm weight) cannot be mapped; pool after the quantizer")
    out_shape = model.get_tensor_shape(quant.output[0])
    layer = IntLayer("threshold", quant.name, dict(
        base, onnx_node=quant.name, out_shape=list(out_shape[1:]) if out_shape else base["out_shape"],
        quant=spec.to_dict(), descending=descending, scale=q_real, chain=[n.name for n in chain.nodes]),
        thresholds=t)
    if pools:  # the threshold's output has the MAC's shape; the pools restore the chain's
        layer.attrs["out_shape"] = base["out_shape"]
    st.set_quant(spec, q_real, q_exp is not None)
    out = [layer]
    for p in pools:
        p_shape = model.get_tensor_shape(p.output[0])
        out.append(_maxpool(p, _attrs(p), {"onnx_node": p.name, "out_shape": list(p_shape[1:])}, spec.qmin))
    return out


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


def _apply_plan(plan: BitPlan, macs) -> BitPlan:
    """Name the MAC layers after ``plan`` and check their widths; returns the plan in the layers'
    order. A plan whose names are the layers' torch module paths (a graph network's, where the
    walk's branch order need not be the plan's) is matched by name, any other in order."""
    macs = [m for m in macs if not m[0].attrs.get("full_planes")]  # average pools: no BitPlan entry
    if len(plan) != len(macs):
        raise BitPlanError(
            f"plan has {len(plan)} layers ({', '.join(plan.names)}) but the model has {len(macs)} "
            f"Conv/MatMul layers ({', '.join(m[0].attrs['onnx_node'] for m in macs)})")
    paths = [m[3] for m in macs]
    if sorted(paths) == sorted(plan.names) and len(set(paths)) == len(paths):
        plan = BitPlan(tuple(plan[p] for p in paths), plan.meta)
    for lb, (layer, wbits, in_bits, _) in zip(plan, macs):
        if lb.weight_bits != wbits and lb.max_weight_bits != wbits:
            raise BitPlanError(f"layer '{lb.name}': plan says weight_bits={lb.weight_bits}, "
                               f"the model's weights have {wbits} bits")
        if in_bits is not None and lb.act_bits != in_bits:
            raise BitPlanError(f"layer '{lb.name}': plan says act_bits={lb.act_bits}, "
                               f"the model feeds it {in_bits}-bit activations")
        layer.name = lb.name
        if int(layer.attrs.get("groups", 1) or 1) > 1 and (lb.group_size or lb.group_bits is not None):
            lb = _grouped_conv_widths(lb, layer.weight.shape[-1])
        if lb.group_size:
            layer.attrs["group_size"] = lb.group_size
        if lb.group_bits is not None:
            _check_group_bits(lb, layer.weight, wbits)
            layer.attrs["group_bits"] = list(lb.group_bits)
    return plan


def _grouped_conv_widths(lb, n_out: int):
    """A grouped (depthwise) conv's plan entry on the integer model's block-diagonal weights.

    The plan's weight groups cut a column's own fan-in (``kh * kw * cin / groups``, torch's layer);
    in the block-diagonal matrix those weights are not contiguous, so the column becomes one group
    as wide as its widest (a flip-widened column is stored ``b + 1`` bits, its other weights' low
    plane zero: valid, and the depthwise unit skips zero planes per weight anyway)."""
    from dataclasses import replace

    if lb.group_bits is None:
        return replace(lb, group_size=0)
    gb = np.asarray(lb.group_bits, dtype=np.int64).reshape(-1)
    if gb.size % n_out:
        raise BitPlanError(f"layer '{lb.name}': group_bits has {gb.size} entries, not a whole number per output "
                           f"column ({n_out} columns)")
    return replace(lb, group_size=0, group_bits=tuple(int(v) for v in gb.reshape(n_out, -1).max(axis=1)))


def _check_group_bits(lb, weight: np.ndarray, bits: int) -> None:
    """Each group's declared width must hold its weights (low planes zero below it)."""
    try:
        check_group_bits(pack_layer(weight, bits, lb.group_size, lb.name), lb.group_bits, lb.name)
    except PlaneError as e:
        raise BitPlanError(str(e)) from None