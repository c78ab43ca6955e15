"""Move the input's channels-first Transpose past the input quantizer (one qonnx-style pass)."""

from __future__ import annotations

import numpy as np
from qonnx.transformation.base import Transformation
from qonnx.transformation.channels_last import move_transpose_past_eltwise
from qonnx.transformation.general import SortGraph
from qonnx.util.basic import get_by_name


class MoveInputTransposePastQuant(Transformation):
    """``input -> Transpose(NHWC->NCHW) -> Quant`` becomes ``input -> Quant -> Transpose`` (and so
    past per-tensor float ops before the quantizer, one at a time).

    ``ConvertToChannelsLastAndClean(make_input_channels_last=True)`` leaves this Transpose at
    the top of a dense-first network (a flatten of an image-shaped input): qonnx's own
    ``MoveChanFirstDownstream`` skips transposes at the top of the graph. Past a per-tensor
    Quant the Transpose meets the flatten, where ``AbsorbChanFirstIntoMatMul`` folds it into
    the dense weights' row order.
    """

    def apply(self, model):
        inputs = {i.name for i in model.graph.input}
        for node in model.graph.node:
            if node.op_type != "Transpose" or node.input[0] not in inputs:
                continue
            perm = get_by_name(node.attribute, "perm")
            shape = model.get_tensor_shape(node.input[0])
            if perm is None or shape is None or list(perm.ints) not in ([0, 3, 1, 2], [0, 2, 1]):
                continue
            quant = model.find_consumer(node.output[0])
            # the quantizer, or a per-tensor float op before it (FINN's 2 * x - 1)
            if quant is None or quant.op_type not in ("Quant", "Mul", "Sub", "Add", "Div") or \
                    len(model.find_consumers(node.output[0])) != 1 or quant.input[0] != node.output[0]:
                continue
            params = [model.get_initializer(name) for name in quant.input[1:]]
            if any(p is None or np.asarray(p).size != 1 for p in params):
                continue  # a per-channel quantizer would need its parameters transposed too
            model = move_transpose_past_eltwise(node, quant, model)
            return model.transform(SortGraph()), True
        return model, False
