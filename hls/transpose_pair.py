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
    """``Transpose -> node`` becomes ``node -> Transpose`` for a per-tensor elementwise node, and
    the Transpose then cancels against an inverse one right after (else it travels on, to the
    Flatten/MatMul that qonnx's own passes absorb it into)."""

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
            if len(model.find_consumers(first.output[0]) or []) != 1 or mid.output[0] in outputs:
                continue
            last = model.find_consumer(mid.output[0])
            p = _perm(first)
            q = _perm(last) if last is not None and last.op_type == "Transpose" else None
            shape = model.get_tensor_shape(first.input[0])
            if q is not None and [p[i] for i in q] == list(range(len(p))) and \
                    len(model.find_consumers(mid.output[0]) or []) == 1:
                # the pair cancels
                mid.input[0] = first.input[0]
                if last.output[0] in outputs:
                    mid.output[0] = last.output[0]
                else:
                    _rewire(model, last.output[0], mid.output[0])
                model.graph.node.remove(first)
                model.graph.node.remove(last)
                if shape is not None:
                    model.set_tensor_shape(mid.output[0], shape)
                return model, True
            # swap: node on the untransposed tensor, the Transpose after it
            between = model.make_new_valueinfo_name()
            old_out = mid.output[0]
            _rewire(model, old_out, first.output[0], skip=mid)
            mid.input[0], mid.output[0] = first.input[0], between
            first.input[0] = between
            if shape is not None:
                model.set_tensor_shape(between, shape)
            nodes = list(model.graph.node)
            i, j = nodes.index(first), nodes.index(mid)
            if j > i:  # keep the graph topologically sorted: node before its Transpose
                model.graph.node.remove(mid)
                model.graph.node.insert(i, mid)
            return model, True
        return model, False


def _rewire(model, old: str, new: str, skip=None) -> None:
    for user in model.find_consumers(old) or []:
        if user is skip:
            continue
        for i, name in enumerate(user.input):
            if name == old:
                user.input[i] = new
