"""``AveragePool`` as a convolution of ones (a qonnx-style pass on the graph as exported).

An average pool is a conv whose weights are 1 on the diagonal (channel c reads channel c) with
a weight scale of ``1 / (kh * kw)``: the bit-serial conv, thresholds and the emulator then take
it like any other layer. The ones are a 2-bit weight; the layer is marked ``full_planes`` (its
node metadata), so the run-time ``planes`` knob, which drops low weight planes, leaves it whole.

For a power-of-two window (2x2, 4x4) the scale is a power of two and the conv computes exactly
what ``AveragePool`` computes in float32 (a sum divided by 4 is exact); for other windows the
float scale goes into the next thresholds (docs/datapath.md bounds the difference).

    >>> model = model.transform(AvgPoolToConv())   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper
from qonnx.transformation.base import Transformation

FULL_PLANES_KEY = "flipq.full_planes"


class AvgPoolError(ValueError):
    """An average pool the conversion cannot express exactly; names the node."""


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def is_full_planes(node) -> bool:
    return any(e.key == FULL_PLANES_KEY for e in node.metadata_props)


class AvgPoolToConv(Transformation):
    """Every 2-D ``AveragePool`` (NCHW, as exported) -> ``Conv(x, Quant(ones, 1/(kh*kw)))``."""

    def apply(self, model):
        graph = model.graph
        for index, node in enumerate(graph.node):
            if node.op_type != "AveragePool":
                continue
            a = _attrs(node)
            kernel = list(a.get("kernel_shape", []))
            pads = list(a.get("pads", [0] * 2 * len(kernel)))
            shape = model.get_tensor_shape(node.input[0])
            if len(kernel) != 2 or shape is None or len(shape) != 4:
                raise AvgPoolError(f"node '{node.name}' (op type AveragePool): only 2-D average pools on "
                                   "NCHW tensors can be mapped")
            if a.get("ceil_mode", 0) or (any(pads) and not a.get("count_include_pad", 0)):
                raise AvgPoolError(f"node '{node.name}' (op type AveragePool): ceil_mode or padding that is "
                                   "not counted cannot be mapped (use AvgPool2d without padding)")
            c = shape[1]
            kh, kw = kernel
            ones = np.zeros((c, c, kh, kw), dtype=np.float32)
            ones[np.arange(c), np.arange(c)] = 1.0
            base = node.name or f"AveragePool_{index}"
            names = {k: model.make_new_valueinfo_name() for k in ("w", "s", "z", "b", "wq")}
            for key, value in (("w", ones), ("s", np.float32(1.0 / (kh * kw))), ("z", np.float32(0.0)),
                               ("b", np.float32(2.0))):
                graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), names[key]))
                # hls4ml reads every node input's shape from value_info, initializers included
                model.set_tensor_shape(names[key], list(np.shape(value)))
            quant = helper.make_node("Quant", [names["w"], names["s"], names["z"], names["b"]], [names["wq"]],
                                     domain="qonnx.custom_op.general", name=base + "_ones", signed=1, narrow=0,
                                     rounding_mode="ROUND")
            conv = helper.make_node("Conv", [node.input[0], names["wq"]], list(node.output), name=base,
                                    kernel_shape=kernel, strides=list(a.get("strides", kernel)), pads=pads,
                                    group=1, dilations=[1, 1])
            conv.metadata_props.extend(node.metadata_props)
            mark = conv.metadata_props.add()
            mark.key, mark.value = FULL_PLANES_KEY, "1"
            graph.node.remove(node)
            graph.node.insert(index, quant)
            graph.node.insert(index + 1, conv)
            return model, True
        return model, False
