"""Move a per-tensor Quant above the flatten feeding it (one qonnx-style pass)."""

from __future__ import annotations

import numpy as np
from qonnx.transformation.base import Transformation
from qonnx.transformation.general import SortGraph


class MoveQuantAboveFlatten(Transformation):
    """``x -> Flatten/Reshape(2-D) -> Quant -> MatMul`` becomes ``x -> Quant -> Flatten -> MatMul``.

    A per-tensor quantizer acts on each value alone, so it commutes with a flatten. A network
    that flattens a convolution's output before the dense layer's own input quantizer
    (``QuantLinear(input_quant=...)``) exports the first form; channels-last conversion then
    leaves ``Transpose -> Reshape -> Quant`` that qonnx cannot fold into the dense weights.
    In the second form the Transpose moves past the Quant and folds (MoveChanFirstDownstream,
    AbsorbChanFirstIntoMatMul).
    """

    def apply(self, model):
        for flat in model.graph.node:
            if flat.op_type not in ("Flatten", "Reshape"):
                continue
            out_shape = model.get_tensor_shape(flat.output[0])
            quant = model.find_consumer(flat.output[0])
            if (out_shape is None or len(out_shape) != 2 or quant is None or quant.op_type != "Quant"
                    or len(model.find_consumers(flat.output[0])) != 1):
                continue
            params = [model.get_initializer(name) for name in quant.input[1:]]
            if any(p is None or np.asarray(p).size != 1 for p in params):
                continue  # per-channel parameters would need reshaping too
            x, flat_out, quant_out = flat.input[0], flat.output[0], quant.output[0]
            moved = model.make_new_valueinfo_name()
            # x -> Quant -> moved -> Flatten -> quant_out: the consumers of the Quant keep their input
            quant.input[0], quant.output[0] = x, moved
            flat.input[0], flat.output[0] = moved, quant_out
            model.set_tensor_shape(moved, model.get_tensor_shape(x))
            model.set_tensor_shape(quant_out, out_shape)
            _remove_value_info(model, flat_out)
            return model.transform(SortGraph()), True
        return model, False


def _remove_value_info(model, name: str) -> None:
    for vi in list(model.graph.value_info):
        if vi.name == name:
            model.graph.value_info.remove(vi)
