"""QONNX graph passes flipq needs beyond qonnx's own (one pass per class, qonnx style)."""

from __future__ import annotations

from onnx import helper
from qonnx.transformation.base import Transformation


class GemmWithoutBiasToMatMul(Transformation):
    """Rewrite a bias-less ``Gemm`` into ``MatMul`` (transposing B where ``transB=1``).

    qonnx 1.0.0's ``GemmToMatMul`` raises IndexError on a Gemm without its C input, which
    is what Brevitas exports for ``QuantLinear(bias=False)``.
    """

    def apply(self, model):
        graph = model.graph
        for index, node in enumerate(graph.node):
            if node.op_type != "Gemm" or len(node.input) > 2:
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
                continue
            weight = node.input[1]
            new_nodes = []
            if attrs.get("transB", 0):
                transposed = model.make_new_valueinfo_name()
                new_nodes.append(helper.make_node("Transpose", [weight], [transposed], perm=[1, 0],
                                                  name=node.name + "_wT"))
                weight = transposed
            new_nodes.append(helper.make_node("MatMul", [node.input[0], weight], list(node.output),
                                              name=node.name))
            for new in new_nodes:  # the user's node name and op, for errors (flipq.hls.lower.source_name)
                new.metadata_props.extend(node.metadata_props)
            graph.node.remove(node)
            for offset, new in enumerate(new_nodes):
                graph.node.insert(index + offset, new)
            return model, True
        return model, False
