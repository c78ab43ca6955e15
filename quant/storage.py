"""What a BitPlan costs in weight storage: payload bits (each weight at its group's width) and
the metadata a layer that mixes two widths needs to say which groups are wide: one flag per
group, or a list of the wide groups' indices when that is shorter (few wide groups among many,
e.g. single weights at group size 1). Uniform layers need none.

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


def width_metadata_bits(group_bits) -> int:
    """Bits that tell which groups have which width: a flag per group (``ceil(log2(widths))``
    bits each), or, for two widths, the indices of the groups at the less common one
    (``ceil(log2(groups))`` bits each) when that is shorter.

    >>> width_metadata_bits([2] * 1000), width_metadata_bits([2, 3] * 500), width_metadata_bits([2] * 990 + [3] * 10)
    (0, 1000, 100)
    """
    counts = np.unique(np.asarray(group_bits), return_counts=True)[1]
    if len(counts) < 2:
        return 0
    flags = len(group_bits) * math.ceil(math.log2(len(counts)))
    if len(counts) > 2:
        return flags
    return min(flags, int(counts.min()) * math.ceil(math.log2(len(group_bits))))


def weight_bits_breakdown(plan: BitPlan, model_or_intmodel) -> dict[str, dict[str, int]]:
    """Per layer: payload bits (weights x their group width) and metadata bits
    (:func:`width_metadata_bits`). Partial last groups are counted at their real length."""
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
        out[lb.name] = {"payload": int((bits * lengths).sum()), "metadata": width_metadata_bits(lb.group_bits),
                        "weights": k * n}
    return out


def stored_weight_bits(plan: BitPlan, model_or_intmodel) -> int:
    """Total bits to store the weights under ``plan``, group-width flags included."""
    return sum(v["payload"] + v["metadata"] for v in weight_bits_breakdown(plan, model_or_intmodel).values())


def budget_weight_bits(shapes: dict[str, tuple[int, int]], base_bits: dict[str, int], group_size: int,
                       fraction: float) -> int:
    """Stored bits after a budgeted allocation (``flipq.quant.allocators.select_groups``): every
    layer has ``round(fraction * groups)`` of its full groups, and as many of its shorter last
    groups, at ``b + 1`` bits. Which groups were chosen does not change it.

    >>> budget_weight_bits({"fc1": (32, 10)}, {"fc1": 2}, 16, 0.5)  # 10 of 20 groups wide: +160 bits, 20 flags
    820
    """
    total = 0
    for name, (k, n) in shapes.items():
        b = base_bits[name]
        full, rest = divmod(k, group_size)
        wide_full, wide_part = round(fraction * full * n), round(fraction * n) if rest else 0
        groups = n * (full + bool(rest))
        wide = wide_full + wide_part
        total += k * n * b + wide_full * group_size + wide_part * rest
        total += width_metadata_bits([b + 1] * wide + [b] * (groups - wide))
    return total
