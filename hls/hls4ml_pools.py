"""MaxPool as hls4ml's pooling layers take it.

hls4ml's io_stream pooling takes only non-overlapping windows (kernel == stride; it asserts so,
which would abort the process running the C simulation): :func:`check_stream_pools` refuses any
other pool for io_stream before hls4ml sees it, naming the layer.

A padded MaxPool is given to hls4ml as a zero ``Pad``, then the pool without padding.

hls4ml's io_stream pooling asserts it has no padding, and its io_parallel pooling pads with the
type's top bit set: the most negative value of a signed type, but a large positive one of an
unsigned type (the usual input of a pool, after a ReLU), which then wins every border window.
Lowering takes a padded MaxPool only where its input has no negative value
(:func:`flipq.hls.lower._maxpool`); there a zero pad is exact, since every window holds a real
value (pads < kernel) and a real value >= 0 wins over, or ties, a zero. hls4ml maps the ``Pad``
to its ZeroPadding2D layer in both io types.

    >>> check_stream_pools(intmodel, "io_stream")   # doctest: +SKIP
    >>> graph = split_maxpool_padding(prepared)      # doctest: +SKIP
"""

from __future__ import annotations

import copy

import numpy as np
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper


class StreamPoolError(ValueError):
    """A pool hls4ml's io_stream layers cannot run; names the layer."""


def check_stream_pools(intmodel, io_type: str) -> None:
    """Refuse, for ``io_stream``, a ``maxpool`` layer whose windows overlap or leave a gap
    (kernel != stride): hls4ml's stream pooling asserts kernel == stride."""
    if io_type != "io_stream":
        return
    for layer in intmodel.layers:
        if layer.op == "maxpool" and list(layer.attrs["kernel"]) != list(layer.attrs["stride"]):
            raise StreamPoolError(
                f"maxpool layer '{layer.name}': kernel {list(layer.attrs['kernel'])} with stride "
                f"{list(layer.attrs['stride'])}; hls4ml's io_stream pooling takes only kernel == stride "
                "(non-overlapping windows): build with --io-type io_parallel, or pool with stride = kernel")


def _pads(node) -> list[int]:
    attr = next((a for a in node.attribute if a.name == "pads"), None)
    return [int(p) for p in attr.ints] if attr is not None else []


def split_maxpool_padding(model: ModelWrapper) -> ModelWrapper:
    """``model`` with each padded channels-last MaxPool split into ``Pad`` (zeros) + MaxPool; the
    model itself is left as it was, and comes back as it is when no MaxPool has padding."""
    if not any(n.op_type == "MaxPool" and any(_pads(n)) for n in model.graph.node):
        return model
    model = ModelWrapper(copy.deepcopy(model.model))
    taken = {t.name for t in model.graph.initializer} | {v.name for v in model.graph.value_info} | \
        {t for n in model.graph.node for t in list(n.input) + list(n.output)}
    for index, node in enumerate(list(model.graph.node)):
        pads = _pads(node)
        if node.op_type != "MaxPool" or not any(pads):
            continue
        shape = model.get_tensor_shape(node.input[0])
        if len(pads) != 4 or shape is None or len(shape) != 4:
            raise ValueError(f"MaxPool '{node.name}': pads {pads} on a tensor of shape {shape}; expected a 2-D "
                             "channels-last pool (N, H, W, C) with four pads")
        top, left, bottom, right = pads
        base = f"{node.name}_zero_pad"
        pad_name = next(f"{base}{i or ''}" for i in range(len(taken) + 1) if f"{base}{i or ''}" not in taken)
        const, out = f"{pad_name}_pads", f"{pad_name}_out"
        taken |= {pad_name, const, out}
        # ONNX Pad on (N, H, W, C): the starts of every axis, then their ends
        model.graph.initializer.append(numpy_helper.from_array(
            np.array([0, top, left, 0, 0, bottom, right, 0], dtype=np.int64), const))
        model.set_tensor_shape(const, [8])
        pad = helper.make_node("Pad", [node.input[0], const], [out], name=pad_name, mode="constant")
        model.set_tensor_shape(out, [shape[0], shape[1] + top + bottom, shape[2] + left + right, shape[3]])
        at = list(model.graph.node).index(node)
        model.graph.node.insert(at, pad)
        node.input[0] = out
        for a in node.attribute:
            if a.name == "pads":
                del a.ints[:]
                a.ints.extend([0, 0, 0, 0])
    return model
