"""What a BitPlan costs in weight storage: payload bits (each weight at its group's width) and
the per-group width flags a layer that mixes two widths needs.

Example (a uniform 4-bit 32 x 10 dense layer)::

    >>> import torch.nn as nn
    >>> plan = BitPlan.uniform(["fc1"], 4, 4)
    >>> class One:  # anything with mac_layers() of torch layers, or an IntModel
    ...     def mac_layers(self): return {"fc1": nn.Linear(32, 10, bias=False)}
    >>> stored_weight_bits(plan, One())
    1280
"""

from __future__ import annotations

import math

import numpy as np

from flipq.host.bitplan import BitPlan, groups_per_column
from flipq.quant.layout import layer_shapes


def weight_bits_breakdown(plan: BitPlan, model_or_intmodel) -> dict[str, dict[str, int]]:
    """Per layer: payload bits (weights x their group width) and metadata bits (one width flag
    per group where a layer mixes two widths; uniform layers need none). Partial last groups
    are counted at their real length."""
    shapes = layer_shapes(model_or_intmodel)
    plan.check_shapes(shapes)
    out = {}
    for lb in plan:
        k, n = shapes[lb.name]
        if lb.group_bits is None:
            out[lb.name] = {"payload": k * n * lb.weight_bits, "metadata": 0, "weights": k * n}
            continue
        g = lb.group_size or k
        ng = groups_per_column(k, lb.group_size)
        lengths = np.array([min(g, k - i * g) for i in range(ng)])
        bits = np.asarray(lb.group_bits).reshape(n, ng)
        widths = len(set(lb.group_bits))
        flag_bits = math.ceil(math.log2(widths)) if widths > 1 else 0
        out[lb.name] = {"payload": int((bits * lengths).sum()), "metadata": n * ng * flag_bits,
                        "weights": k * n}
    return out


def stored_weight_bits(plan: BitPlan, model_or_intmodel) -> int:
    """Total bits to store the weights under ``plan``, group-width flags included."""
    return sum(v["payload"] + v["metadata"] for v in weight_bits_breakdown(plan, model_or_intmodel).values())
