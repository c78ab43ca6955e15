"""A flatten on the graph input moves behind the float ops and the quantizer that follow it
(a qonnx-style pass on the graph as exported).

FINN's FC networks flatten their image first (``x.view(n, -1)``), then compute ``2 * x - 1`` and
quantize: ``input -> Reshape -> Mul -> Sub -> Quant -> MatMul``. Per-tensor elementwise ops and
a per-tensor quantizer commute with a reshape, so the pass rewrites it as ``input -> Mul -> Sub
-> Quant -> Reshape -> MatMul``: the dense-first-on-an-image form preparation already takes
(the input quantizer first, then the flatten folded into the first layer's rows).

    >>> model = model.transform(MoveInputReshapePastElementwise())   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from qonnx.transformation.base import Transformation

RESHAPES = ("Reshape", "Flatten")
ELEMENTWISE = ("Mul", "Div", "Add", "Sub", "Quant", "BipolarQuant")


def _scalar_params(model, node, data: str) -> bool:
    others = [i for i in node.input if i and i != data]
    return all(model.get_initializer(i) is not None and np.asarray(model.get_initializer(i)).size == 1
               for i in others)


class MoveInputReshapePastElementwise(Transformation):
    def apply(self, model):
        graph = model.graph
        in_name = graph.input[0].name
        outputs = {o.name for o in graph.output}
        src = in_name  # walk past the elementwise nodes already moved in front of the reshape
        reshape = model.find_consumer(src)
        while reshape is not None and reshape.op_type in ELEMENTWISE and len(model.find_consumers(src) or []) == 1:
            src = reshape.output[0]
            reshape = model.find_consumer(src)
        if reshape is None or reshape.op_type not in RESHAPES or reshape.input[0] != src:
            return model, False
        if len(model.find_consumers(src) or []) != 1:
            return model, False
        nxt = model.find_consumer(reshape.output[0])
        if nxt is None or nxt.op_type not in ELEMENTWISE or len(model.find_consumers(reshape.output[0])) != 1:
            return model, False
        if not _scalar_params(model, nxt, reshape.output[0]) or nxt.output[0] in outputs:
            return model, False
        if nxt.op_type in ("Sub", "Div") and nxt.input[0] != reshape.output[0]:
            return model, False
        # in -> reshape -> nxt -> users   becomes   in -> nxt -> reshape -> users
        flat_shape = model.get_tensor_shape(reshape.output[0])
        in_shape = model.get_tensor_shape(src)
        between = model.make_new_valueinfo_name()
        for i, name in enumerate(nxt.input):
            if name == reshape.output[0]:
                nxt.input[i] = src
        old_out = nxt.output[0]
        nxt.output[0] = between
        reshape.input[0] = between
        reshape.output[0] = old_out
        model.set_tensor_shape(between, in_shape)
        model.set_tensor_shape(old_out, flat_shape)
        nodes = list(graph.node)
        r, n = nodes.index(reshape), nodes.index(nxt)
        if n > r:  # keep topological order: the elementwise node before the reshape
            graph.node.remove(nxt)
            graph.node.insert(r, nxt)
        return model, True
