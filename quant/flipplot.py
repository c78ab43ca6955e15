"""Where flip allocation put the extra bits, as a bar chart per layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flipq.host.bitplan import BitPlan


def plot_allocation(plan: BitPlan, path: str | Path, weight_fractions: dict[str, float] | None = None,
                    title: str = "Where the extra bits went") -> Path:
    """Bar chart per layer: fraction of groups at ``b + 1`` bits (from the plan) and, when given,
    fraction of weights with the extra level."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = plan.names
    groups = [np.mean([b > lb.weight_bits for b in lb.group_bits]) if lb.group_bits else 0.0 for lb in plan]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(names) + 2), 3.5))
    width = 0.4 if weight_fractions else 0.6
    ax.bar(x - (width / 2 if weight_fractions else 0), groups, width, label="groups at b+1 bits")
    if weight_fractions:
        ax.bar(x + width / 2, [weight_fractions.get(n, 0.0) for n in names], width,
               label="weights with the extra level")
    ax.set_xticks(x, [f"{n}\n(b={lb.weight_bits})" for n, lb in zip(names, plan)], fontsize=8)
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
