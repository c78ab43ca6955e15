"""1-D networks (``QuantConv1d``, ``MaxPool1d``, ``AvgPool1d`` on (N, C, L)) as 2-D ones with
H = 1 (a qonnx-style pass on the graph as exported, before the channels-last conversion).

Every (N, C, L) tensor becomes (N, C, 1, L): a 1-D conv of kernel k is the 2-D conv of kernel
(1, k) with the same weights, strides (1, s), pads (0, p, 0, q); pools likewise; a global pool
over L (``AdaptiveAvgPool1d(1)``, ``x.mean(2)``) pools over (H, W) = (1, L). Constants that
broadcast against an (N, C, L) tensor (a weight (O, I, k), a per-channel scale (O, 1, 1) or
(C, 1)) get the new axis before their last one, so they broadcast the same way. A Flatten of
(N, C, 1, L) is the Flatten of (N, C, L), element for element, so dense layers are unchanged.
The graph input becomes (N, C, 1, L); the model's metadata records that users feed (N, C, L)
(``flipq.input_layout`` = ``NCL``: the host reshapes, :meth:`IntModel.to_channels_last`).

    >>> model = model.transform(Conv1dTo2d())   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper
from qonnx.transformation.base import Transformation

from flipq.hls.global_pool import constant_axes, keepdims
from flipq.hls.lower import LAYOUT_KEY, _where  # the mark users' files may not carry; the user's node names

_SPATIAL = ("Conv", "MaxPool", "AveragePool")
# ops that take an (N, C, L) tensor as it is, with constants broadcast against it
_ELEMENTWISE = ("Quant", "Trunc", "BipolarQuant", "Mul", "Div", "Add", "Sub", "Relu", "BatchNormalization",
                "Flatten", "Identity")
_REDUCE = ("ReduceMean", "ReduceMax")


class Conv1dError(ValueError):
    """A 1-D construct the H = 1 rewrite cannot express; names the node."""


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _set_attr(node, name: str, value) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def is_1d(model) -> bool:
    """The graph reads an (N, C, L) input, or has a 1-D conv or pool."""
    shape = model.get_tensor_shape(model.graph.input[0].name)
    if shape is not None and len(shape) == 3:
        return True
    return any(n.op_type in _SPATIAL and len(_attrs(n).get("kernel_shape", [0, 0])) == 1 for n in model.graph.node)


def _expand_before_last(arr: np.ndarray) -> np.ndarray:
    return np.expand_dims(arr, -2) if arr.ndim >= 2 else arr


class Conv1dTo2d(Transformation):
    """The whole graph at once (see module doc); a no-op on 2-D graphs."""

    def apply(self, model):
        if not is_1d(model):
            return model, False
        graph = model.graph
        rank3 = {vi.name for vi in list(graph.value_info) + list(graph.input)
                 if len(vi.type.tensor_type.shape.dim) == 3}
        for out in graph.output:
            if out.name in rank3 or len(out.type.tensor_type.shape.dim) == 3:
                raise Conv1dError(f"graph output '{out.name}' is an (N, C, L) tensor: end a 1-D network with "
                                  "a flatten and a QuantLinear")
        expand: set[str] = set()  # initializers that broadcast against (N, C, L) tensors

        dropped = []
        for node in list(graph.node):
            # torch's AdaptiveAvgPool1d: Unsqueeze(axis 2) -> 2-D pool -> Squeeze(axis 2); with
            # H = 1 already there both go, and what follows the Squeeze is (N, C, 1, 1)
            if node.op_type == "Squeeze" and constant_axes(model, node) in ([2], [-2]) \
                    and len(model.get_tensor_shape(node.output[0]) or []) == 3:
                _bypass(model, node)
                dropped.append(node)
                rank3.add(node.input[0])
                continue
            live = [i for i in node.input if i in rank3]
            if not live:
                continue
            if node.op_type == "Unsqueeze" and constant_axes(model, node) in ([2], [-2]):
                _bypass(model, node)
                dropped.append(node)
                continue
            where = _where(node)
            if node.op_type in _SPATIAL:
                a = _attrs(node)
                k = list(a.get("kernel_shape", []))
                if len(k) != 1:
                    raise Conv1dError(f"{where}: a {len(k)}-D kernel on an (N, C, L) tensor")
                _set_attr(node, "kernel_shape", [1, k[0]])
                _set_attr(node, "strides", [1, list(a.get("strides", k if node.op_type != "Conv" else [1]))[0]])
                p = list(a.get("pads", [0, 0]))
                _set_attr(node, "pads", [0, p[0], 0, p[1]])
                if node.op_type == "Conv" or "dilations" in a:
                    _set_attr(node, "dilations", [1, list(a.get("dilations", [1]))[0]])
                if node.op_type == "Conv":
                    expand.add(node.input[1])
            elif node.op_type in _REDUCE:
                self._reduce_over_length(model, node, where)
            elif node.op_type in _ELEMENTWISE:
                expand.update(i for i in node.input[1:] if i)
            elif node.op_type == "Reshape":
                target = model.get_initializer(node.input[1])
                if target is None or target.size != 2:
                    raise Conv1dError(f"{where}: a reshape of an (N, C, L) tensor to anything but (N, C*L) cannot "
                                      "be mapped; flatten before the dense layers")
            else:
                raise Conv1dError(f"{where}: on an (N, C, L) tensor this op cannot be mapped (1-D networks: "
                                  "QuantConv1d, MaxPool1d/AvgPool1d, activations, global pooling over L, "
                                  "flatten, QuantLinear)")
            if node.op_type in ("Flatten", "Reshape") or (node.op_type in _REDUCE and not keepdims(node)):
                continue  # (N, C*L) or (N, C): rank 2 either way
            rank3.update(node.output)
        for node in dropped:
            graph.node.remove(node)
        self._expand_constants(model, expand)
        for vi in list(graph.value_info):
            if vi.name in rank3:
                graph.value_info.remove(vi)
        inp = graph.input[0]
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 3:
            dims.insert(2, type(dims[0])())
            dims[2].dim_value = 1
            entry = model.model.metadata_props.add()
            entry.key, entry.value = LAYOUT_KEY, "NCL"
        return model, False

    @staticmethod
    def _reduce_over_length(model, node, where: str) -> None:
        axes = constant_axes(model, node)
        if axes is not None and len(axes) == 2 and sorted(x % 4 for x in axes) == [2, 3]:
            return  # over (1, L) already: AdaptiveAvgPool1d's export, its Unsqueeze gone
        if axes is None or sorted(x % 3 for x in axes) != [2]:
            raise Conv1dError(f"{where}: reduces axes {axes} of an (N, C, L) tensor; only the length axis [2] "
                              "(global pooling over L) can be mapped")
        if any(a.name == "axes" for a in node.attribute):
            _set_attr(node, "axes", [2, 3])
        else:
            name = model.make_new_valueinfo_name()
            model.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), name))
            node.input[1] = name

    @staticmethod
    def _expand_constants(model, names: set[str]) -> None:
        """Each initializer in ``names`` (or behind the Quant that computes it) gets H = 1."""
        pending, done = list(names), set()
        while pending:
            name = pending.pop()
            if name in done:
                continue
            done.add(name)
            init = model.get_initializer(name)
            if init is not None:
                model.set_initializer(name, _expand_before_last(init))
                continue
            producer = model.find_producer(name)
            if producer is not None and producer.op_type in ("Quant", "BipolarQuant", "Trunc"):
                pending.extend(i for i in producer.input if i)  # weights and their per-channel scales
                for vi in list(model.graph.value_info):
                    if vi.name == name:
                        model.graph.value_info.remove(vi)


def _bypass(model, node) -> None:
    """Consumers of the node's output read its input instead (the node is dropped after)."""
    for user in model.find_consumers(node.output[0]) or []:
        for k, name in enumerate(user.input):
            if name == node.output[0]:
                user.input[k] = node.input[0]
