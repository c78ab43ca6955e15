"""Global pooling as the pools flipq already maps (a qonnx-style pass on the graph as exported).

torch exports ``AdaptiveAvgPool2d(1)`` and ``x.mean((2, 3))`` as ``ReduceMean`` over H and W,
``AdaptiveMaxPool2d(1)`` as ``ReduceMax``; other exporters write ``GlobalAveragePool`` /
``GlobalMaxPool``. Over the whole H x W map each is an ``AveragePool`` / ``MaxPool`` whose window
is the map: the average then becomes a conv of ones with scale ``1 / (H * W)``
(:mod:`flipq.hls.avgpool_to_conv`: the sum in integers, the division a power of two for 2x2,
4x4, 8x8 maps, else folded into the next thresholds), the max the max pool every stage has.
``keepdims=0`` (torch's ``mean((2, 3))``) gets its (N, C) result from a ``Flatten`` placed after
the quantizers that follow the pool.

    >>> model = model.transform(GlobalPoolToPool())   # doctest: +SKIP
"""

from __future__ import annotations

from onnx import helper
from qonnx.transformation.base import Transformation

GLOBAL_OPS = {"GlobalAveragePool": "AveragePool", "GlobalMaxPool": "MaxPool",
              "ReduceMean": "AveragePool", "ReduceMax": "MaxPool"}


class GlobalPoolError(ValueError):
    """A reduction that is not a pool over the whole map; names the node and the axes."""


def constant_axes(model, node) -> list[int] | None:
    """The ``axes`` of a Reduce*/Squeeze/Unsqueeze node as written (an attribute or, from opset
    13/18, a constant second input); ``None`` when it has none or they are computed at run time."""
    for a in node.attribute:
        if a.name == "axes":
            return list(helper.get_attribute_value(a))
    if len(node.input) > 1 and node.input[1]:
        value = model.get_initializer(node.input[1])
        return None if value is None else [int(v) for v in value.reshape(-1)]
    return None


def reduce_axes(model, node) -> list[int] | None:
    """The axes a Reduce* node reduces, normalised to non-negative; ``None`` for the Global* ops
    (always H and W)."""
    if node.op_type.startswith("Global"):
        return None
    rank = len(model.get_tensor_shape(node.input[0]) or [])
    axes = constant_axes(model, node)
    if axes is None and len(node.input) > 1 and node.input[1]:
        raise GlobalPoolError(f"node '{node.name}' (op type {node.op_type}): its axes are computed at run "
                              "time; only constant axes can be mapped")
    if axes is None:  # no axes: every axis
        axes = list(range(rank))
    return sorted(a + rank if a < 0 else a for a in axes)


def check_global_pool(model, node, where: str) -> None:
    """Refuse a reduction that is not over exactly H and W of an NCHW tensor."""
    shape = model.get_tensor_shape(node.input[0])
    if shape is not None and len(shape) == 3 and reduce_axes(model, node) == [2]:
        return  # global pooling over L of a 1-D network (flipq.hls.conv1d makes it H x W = 1 x L)
    if shape is None or len(shape) != 4:
        raise GlobalPoolError(f"{where}: global pooling is mapped on NCHW tensors only (this input has shape "
                              f"{shape}); for a 1-D network pool with MaxPool1d/AvgPool1d over the length")
    axes = reduce_axes(model, node)
    if axes is not None and axes != [2, 3]:
        raise GlobalPoolError(f"{where}: reduces axes {axes} of an NCHW tensor; only the spatial axes [2, 3] "
                              "(global pooling, e.g. AdaptiveAvgPool2d(1) or x.mean((2, 3))) can be mapped")


def keepdims(node) -> bool:
    """A Reduce* node's ``keepdims`` (ONNX default 1)."""
    for a in node.attribute:
        if a.name == "keepdims":
            return bool(helper.get_attribute_value(a))
    return True


# ops a (N, C, 1, 1) tensor passes through as it would the (N, C) one: the Flatten a dropped
# H x W needs goes after them, so the channels-last conversion sees a pool, a quantizer, then a
# Flatten (the layout flipq's dense layers take), as with AdaptiveAvgPool2d(1) + flatten
_ELEMENTWISE = ("Relu", "Quant", "Trunc", "BatchNormalization")
_FLATTENS = ("Flatten", "Reshape")


def _scalar_params(model, node) -> bool:
    if node.op_type == "BatchNormalization":
        return True  # per channel on axis 1, any rank
    return all(not i or (model.get_initializer(i) is not None and model.get_initializer(i).size == 1)
               for i in node.input[1:])


class GlobalPoolToPool(Transformation):
    """Every global pooling node -> ``AveragePool``/``MaxPool`` over the whole map; where the
    reduction dropped H and W, a ``Flatten`` after the quantizers that follow it."""

    def apply(self, model):
        graph = model.graph
        for index, node in enumerate(graph.node):
            if node.op_type not in GLOBAL_OPS:
                continue
            check_global_pool(model, node, f"node '{node.name}' (op type {node.op_type})")
            _, _, h, w = model.get_tensor_shape(node.input[0])
            keep = node.op_type.startswith("Global") or keepdims(node)
            pool = helper.make_node(GLOBAL_OPS[node.op_type], [node.input[0]], [node.output[0]], name=node.name,
                                    kernel_shape=[h, w], strides=[h, w], pads=[0, 0, 0, 0])
            pool.metadata_props.extend(node.metadata_props)
            graph.node.remove(node)
            graph.node.insert(index, pool)
            if not keep:
                self._flatten_after(model, pool)
            return model, True
        return model, False

    @staticmethod
    def _flatten_after(model, pool) -> None:
        tensor, walked = pool.output[0], [pool.output[0]]
        while True:
            users = model.find_consumers(tensor) or []
            if len(users) != 1 or users[0].op_type not in _ELEMENTWISE or not _scalar_params(model, users[0]):
                break
            tensor = users[0].output[0]
            walked.append(tensor)
        for vi in list(model.graph.value_info):  # their (N, C) shapes are (N, C, 1, 1) now
            if vi.name in walked:
                model.graph.value_info.remove(vi)
        users = model.find_consumers(tensor) or []
        if users and all(u.op_type in _FLATTENS for u in users):
            return  # the model flattens there itself: (N, C, 1, 1) and (N, C) flatten alike
        flat_out = model.make_new_valueinfo_name()
        for user in users:
            for k, name in enumerate(user.input):
                if name == tensor:
                    user.input[k] = flat_out
        for k, out in enumerate(model.graph.output):
            if out.name == tensor:
                raise GlobalPoolError(f"node '{pool.name}': a global pool at the graph output cannot be mapped; "
                                      "end the network with a QuantLinear")
        producer = model.find_producer(tensor)
        flat = helper.make_node("Flatten", [tensor], [flat_out], name=pool.name + "_flatten", axis=1)
        flat.metadata_props.extend(pool.metadata_props)
        model.graph.node.insert(list(model.graph.node).index(producer) + 1, flat)
