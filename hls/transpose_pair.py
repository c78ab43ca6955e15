"""Drop a Transpose pair around a per-tensor elementwise node (a qonnx-style pass).

qonnx's channels-last conversion knows Quant, Conv, MaxPool and BatchNorm; around any other
node it leaves ``Transpose(to NCHW) -> node -> Transpose(back to NHWC)``. For a node that acts
on every element alike (Brevitas TruncAvgPool's ``Trunc`` with per-tensor parameters) the two
permutations cancel: the node runs on the channels-last tensor directly.

    >>> model = model.transform(RemoveTransposePairAroundElementwise())   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.transformation.base import Transformation

ELEMENTWISE = ("Trunc", "Quant")


def _perm(node) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(helper.get_attribute_value(a))
    return None


class RemoveTransposePairAroundElementwise(Transformation):
    def apply(self, model):
        outputs = [o.name for o in model.graph.output]
        for first in model.graph.node:
            if first.op_type != "Transpose":
                continue
            mid = model.find_consumer(first.output[0])
            if mid is None or mid.op_type not in ELEMENTWISE or mid.input[0] != first.output[0]:
                continue
            if any(model.get_initializer(i) is None or np.asarray(model.get_initializer(i)).size != 1
                   for i in mid.input[1:]):
                continue  # per-channel parameters would need permuting too
            last = model.find_consumer(mid.output[0])
            if last is None or last.op_type != "Transpose":
                continue
            p, q = _perm(first), _perm(last)
            if p is None or q is None or [p[i] for i in q] != list(range(len(p))):
                continue
            if len(model.find_consumers(first.output[0]) or []) != 1 or \
                    len(model.find_consumers(mid.output[0]) or []) != 1:
                continue
            shape = model.get_tensor_shape(first.input[0])
            mid.input[0] = first.input[0]
            if last.output[0] in outputs:
                mid.output[0] = last.output[0]
            else:
                for user in model.find_consumers(last.output[0]) or []:
                    for i, name in enumerate(user.input):
                        if name == last.output[0]:
                            user.input[i] = mid.output[0]
            model.graph.node.remove(first)
            model.graph.node.remove(last)
            if shape is not None:
                model.set_tensor_shape(mid.output[0], shape)
            return model, True
        return model, False
