"""The graph hls4ml converts: the prepared QONNX graph with what the integer model computes
elsewhere taken out.

hls4ml turns float operations into fixed-point arithmetic of its own (BatchNorm, float scales,
a float bias), which is not exact. Where the integer model replaced them, this rewrite leaves
hls4ml only plumbing whose numbers flipq controls:

- the float ops before the input quantizer go (the host applies ``input_affine``), and an input
  quantizer with a float scale gets scale 1 (the host feeds its integers);
- a weight quantizer with a float or per-channel scale holds the integer weights at scale 1
  (the bit-serial kernel reads its planes from the plan anyway);
- a MAC layer whose chain became a ``threshold`` layer loses its bias and chain: a Quant on the
  threshold's grid (``2**exp``, never narrow when unsigned) follows it directly, which hls4ml
  merges into the layer, and the kernel computes the thresholds there; the chain's MaxPools
  follow that Quant;
- the float tail after the last MAC layer goes (the host applies ``output_affine``);
- a padded MaxPool becomes a zero ``Pad`` and the pool (:mod:`flipq.hls.hls4ml_pools`).

    >>> hls_model = hls_graph(prepared, intmodel)   # doctest: +SKIP
"""

from __future__ import annotations

import copy

import numpy as np
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import RemoveUnusedTensors
from qonnx.transformation.infer_shapes import InferShapes

_ELEMENTWISE = ("Mul", "Div", "Add", "Sub")


def _by_name(model: ModelWrapper) -> dict:
    return {n.name: n for n in model.graph.node}


def _set_init(model: ModelWrapper, name: str, value) -> str:
    """A fresh initializer (the old one may be shared) holding ``value``; returns its name."""
    # hls4ml needs identifier-like names (qonnx's random ones may start with a digit)
    taken = {t.name for t in model.graph.initializer} | {v.name for v in model.graph.value_info}
    new = next(f"flipq_{name or 'const'}_{i}" for i in range(len(taken) + 1)
               if f"flipq_{name or 'const'}_{i}" not in taken)
    arr = np.asarray(value, dtype=np.float32)
    model.graph.initializer.append(numpy_helper.from_array(arr, new))
    model.set_tensor_shape(new, list(arr.shape))  # hls4ml reads every input's shape from value_info
    return new


def hls_graph(prepared: ModelWrapper, intmodel) -> ModelWrapper:
    """``prepared`` rewritten for hls4ml as the integer model ``intmodel`` says (see module doc);
    the prepared graph itself is left as it was. A model with no thresholds, affines or integer
    weights comes back unchanged."""
    from flipq.hls.hls4ml_pools import split_maxpool_padding

    if not _needs_rewrite(intmodel):
        return split_maxpool_padding(prepared)
    model = ModelWrapper(copy.deepcopy(prepared.model))
    _strip_input(model, intmodel)
    prev_mac = None
    for layer in intmodel.layers:
        # node references go stale when the repeated field changes: look names up each time
        if layer.is_mac:
            prev_mac = layer.attrs["onnx_node"]
            if layer.attrs.get("groups"):
                _ungrouped(model, _by_name(model)[prev_mac], layer)
            elif layer.attrs.get("w_int"):
                _integer_weights(model, _by_name(model)[prev_mac])
        elif layer.op == "threshold" and layer.attrs.get("chain"):
            # (without a chain the graph already has the Quant right after the MAC)
            _threshold(model, prev_mac, layer)
    if intmodel.output_affine is not None and not intmodel.output_affine.get("float32"):
        _strip_tail(model, prev_mac, intmodel.output_affine["onnx_nodes"])
    _drop_dangling(model)
    return split_maxpool_padding(model.transform(RemoveUnusedTensors()).transform(InferShapes()))


def _drop_dangling(model: ModelWrapper) -> None:
    """Nodes nothing reads any more (the Quant of a removed bias), until none is left."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = {n.name for n in model.graph.node if not any(o in used for o in n.output)}
        if not dead:
            return
        kept = [copy.deepcopy(n) for n in model.graph.node if n.name not in dead]
        del model.graph.node[:]
        model.graph.node.extend(kept)


def _needs_rewrite(intmodel) -> bool:
    return bool(intmodel.input_affine or intmodel.output_affine or intmodel.input_quant.narrow and not
                intmodel.input_quant.signed or any(
                    layer.op == "threshold" or layer.attrs.get("w_int") or layer.attrs.get("groups")
                    for layer in intmodel.layers))


def _strip_input(model: ModelWrapper, intmodel) -> None:
    in_name = model.graph.input[0].name
    node = model.find_consumer(in_name)
    cur = in_name
    while node is not None and node.op_type in _ELEMENTWISE:
        nxt = model.find_consumer(node.output[0])
        model.graph.node.remove(node)
        node = nxt
    if node is None or node.op_type != "Quant":
        return
    node.input[0] = cur
    spec = intmodel.input_quant
    scale = model.get_initializer(node.input[1])
    if not np.all(np.asarray(scale) == 2.0**spec.exp):
        node.input[1] = _set_init(model, node.input[1], 2.0**spec.exp)
    _not_narrow_unsigned(node)


def _not_narrow_unsigned(node) -> None:
    """hls4ml cannot convert a narrow unsigned Quant; values it sees are in range already."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("narrow", 0) and not attrs.get("signed", 1):
        for a in node.attribute:
            if a.name == "narrow":
                a.i = 0


def _integer_weights(model: ModelWrapper, mac) -> None:
    quant = model.find_producer(mac.input[1])
    w = model.get_initializer(quant.input[0]).astype(np.float64)
    scale = np.broadcast_to(model.get_initializer(quant.input[1]).astype(np.float64), w.shape)
    if quant.op_type == "BipolarQuant":  # as a 2-bit Quant of its {-1, +1}
        new = helper.make_node("Quant", [_set_init(model, quant.input[0], np.where(w >= 0, 1.0, -1.0)),
                                         _set_init(model, "", 1.0), _set_init(model, "", 0.0), _set_init(model, "", 2.0)],
                               list(quant.output), domain="qonnx.custom_op.general", name=quant.name, signed=1,
                               narrow=1, rounding_mode="ROUND")
        nodes = [new if n.name == quant.name else copy.deepcopy(n) for n in model.graph.node]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        return
    quant.input[0] = _set_init(model, quant.input[0], np.round(w / scale))
    quant.input[1] = _set_init(model, quant.input[1], 1.0)


def _ungrouped(model: ModelWrapper, mac, layer) -> None:
    """A grouped (depthwise) conv as the ordinary conv the integer model holds: group 1, its
    block-diagonal integer weights at scale 1 (the bit-serial kernel reads its planes from the
    plan; hls4ml needs only the layer's shape)."""
    quant = model.find_producer(mac.input[1])
    w = np.asarray(layer.weight, dtype=np.float64).transpose(3, 0, 1, 2)  # HWIO -> OHWI (channels last)
    new = helper.make_node("Quant", [_set_init(model, quant.input[0], w), _set_init(model, "", 1.0),
                                     _set_init(model, "", 0.0), _set_init(model, "", float(layer.attrs["weight_bits"]))],
                           list(quant.output), domain="qonnx.custom_op.general", name=quant.name, signed=1, narrow=0,
                           rounding_mode="ROUND")
    nodes = [new if n.name == quant.name else copy.deepcopy(n) for n in model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    conv = _by_name(model)[mac.name]
    for a in conv.attribute:
        if a.name == "group":
            a.i = 1
    model.set_tensor_shape(quant.output[0], list(w.shape))


def _threshold(model: ModelWrapper, mac_name: str, layer) -> None:
    """MAC -> Quant(threshold grid) -> its MaxPools -> what the chain's Quant fed."""
    nodes = _by_name(model)
    mac = nodes[mac_name]
    chain = [copy.deepcopy(nodes[name]) for name in layer.attrs["chain"]]
    end = chain[-1].output[0]
    if len(mac.input) > 2:
        del mac.input[2]
    spec = layer.out_quant
    q_out = f"{layer.attrs['onnx_node']}_thr_out"
    quant = helper.make_node(
        "Quant", [mac.output[0], _set_init(model, "", 2.0**spec.exp), _set_init(model, "", 0.0),
                  _set_init(model, "", float(spec.bits))], [q_out], domain="qonnx.custom_op.general",
        name=layer.attrs["onnx_node"] + "_thr", signed=int(spec.signed), narrow=int(spec.narrow and spec.signed),
        rounding_mode="ROUND")
    new = [quant]
    # shapes of the new tensors up front: qonnx's shape inference needs a channels-last
    # MaxPool's input shape before it infers anything
    shape = model.get_tensor_shape(mac.output[0])
    if shape is not None:
        model.set_tensor_shape(q_out, shape)
    for pool in (n for n in chain if n.op_type == "MaxPool"):
        p = copy.deepcopy(pool)
        p.input[0] = new[-1].output[0]
        p.output[0] = p.name + "_thr_out"
        shape = model.get_tensor_shape(pool.output[0])
        if shape is not None:
            model.set_tensor_shape(p.output[0], shape)
        new.append(p)
    new[-1].output[0] = end
    _replace(model, mac_name, set(layer.attrs["chain"]), new)


def _strip_tail(model: ModelWrapper, mac_name: str, names: list) -> None:
    mac = _by_name(model)[mac_name]
    if len(mac.input) > 2:
        del mac.input[2]
    mac.output[0] = model.graph.output[0].name
    _replace(model, mac_name, set(names), [])


def _replace(model: ModelWrapper, after: str, drop: set, new: list) -> None:
    """Rebuild the node list: ``drop`` removed, ``new`` inserted right after node ``after``."""
    kept = []
    for n in model.graph.node:
        if n.name in drop:
            continue
        kept.append(copy.deepcopy(n))
        if n.name == after:
            kept += new
    del model.graph.node[:]
    model.graph.node.extend(kept)
