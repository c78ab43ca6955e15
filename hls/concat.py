"""Concatenation on channels through preparation (a qonnx-style pass).

qonnx's channels-last conversion does not move layout Transposes through a ``Concat``: it leaves
``Transpose(to NCHW)`` on every input and concatenates on axis 1, and at a fork (one tensor read by
two branches) it leaves a ``Transpose`` pair per branch. :class:`ConcatToChannelsLast` rewrites

- ``Transpose(p) -> Transpose(q)`` with ``q`` undoing ``p``: the second reads the first's input
  (at a fork too; the first goes once nothing reads it);
- ``Concat(axis a)`` of tensors that each come out of a ``Transpose(p)``: the concat of the
  Transposes' inputs on axis ``p[a]`` (the channels), then one ``Transpose(p)``, which moves on
  and cancels or folds like any other;
- a ``Concat`` of three or more tensors: a chain of two-tensor ones (hls4ml merges two a layer).

    >>> model = model.transform(ConcatToChannelsLast())   # doctest: +SKIP
"""

from __future__ import annotations

from onnx import helper
from qonnx.transformation.base import Transformation

from flipq.hls.transpose_pair import _perm


class ConcatToChannelsLast(Transformation):
    def apply(self, model):
        outputs = {o.name for o in model.graph.output}
        for node in model.graph.node:
            if node.op_type == "Transpose" and node.output[0] not in outputs:
                first = model.find_producer(node.input[0])
                if first is not None and first.op_type == "Transpose":
                    p, q = _perm(first), _perm(node)
                    if p is not None and q is not None and len(p) == len(q) and \
                            [p[i] for i in q] == list(range(len(p))):
                        for user in model.find_consumers(node.output[0]) or []:
                            for k, name in enumerate(user.input):
                                if name == node.output[0]:
                                    user.input[k] = first.input[0]
                        model.graph.node.remove(node)
                        if not model.find_consumers(first.output[0]) and first.output[0] not in outputs:
                            model.graph.node.remove(first)
                        return model, True
            if node.op_type == "Concat" and node.output[0] not in outputs:
                if _move_below(model, node):
                    return model, True
                if len(node.input) > 2 and all(model.get_initializer(i) is None for i in node.input):
                    _split_first_two(model, node)
                    return model, True
        return model, False


def _split_first_two(model, concat) -> None:
    """``Concat(a, b, c, ...)`` -> ``Concat(Concat(a, b), c, ...)``: hls4ml merges two tensors a
    layer."""
    inner = model.make_new_valueinfo_name()
    axis = next(helper.get_attribute_value(a) for a in concat.attribute if a.name == "axis")
    first = helper.make_node("Concat", list(concat.input[:2]), [inner], name=model.make_new_valueinfo_name(),
                             axis=axis)
    rest = list(concat.input[2:])
    del concat.input[:]
    concat.input.extend([inner] + rest)
    nodes = list(model.graph.node)
    model.graph.node.insert(nodes.index(concat), first)


def _move_below(model, concat) -> bool:
    producers = [model.find_producer(i) for i in concat.input]
    if not producers or any(p is None or p.op_type != "Transpose" for p in producers):
        return False
    perms = [_perm(p) for p in producers]
    if perms[0] is None or any(pm != perms[0] for pm in perms):
        return False
    perm = perms[0]
    axis = next((helper.get_attribute_value(a) for a in concat.attribute if a.name == "axis"), None)
    if axis is None:
        return False
    rank = len(perm)
    axis = axis % rank
    inner = model.make_new_valueinfo_name()
    for k, p in enumerate(producers):
        concat.input[k] = p.input[0]
    for a in concat.attribute:
        if a.name == "axis":
            a.i = perm[axis]
    out = concat.output[0]
    concat.output[0] = inner
    shape = model.get_tensor_shape(out)
    if shape is not None:  # the concat's channels-last shape: the inverse permutation of its NCHW one
        inv = [perm.index(i) for i in range(rank)]
        model.set_tensor_shape(inner, [shape[i] for i in inv])
    t = helper.make_node("Transpose", [inner], [out], name=model.make_new_valueinfo_name(), perm=perm)
    nodes = list(model.graph.node)
    model.graph.node.insert(nodes.index(concat) + 1, t)
    for p in producers:
        if not model.find_consumers(p.output[0]) and p in model.graph.node:
            model.graph.node.remove(p)
    return True
