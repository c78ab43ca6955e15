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


def plot_pareto(points: list[dict], path: str | Path, weights: int | None = None,
                title: str = "Accuracy vs stored weight bits", zoom: tuple[float, float] | None = None,
                float_accuracy: float | None = None) -> Path:
    """Test accuracy (mean +- std over seeds) against stored weight bits, one series per
    allocator; an allocator's points at several group sizes are joined and labelled ``G``.
    ``points`` use the ablation's schema (``docs/results/flip_ablation.json``); with ``weights``
    the x axis is bits per weight. ``zoom`` adds a second panel over that x range, the series
    spread a little sideways so that points at equal bits stay apart."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(13 if zoom else 7, 4.8), squeeze=False)
    series: dict[str, list[dict]] = {}
    for p in points:
        series.setdefault(p["allocator"], []).append(p)
    colors = plt.get_cmap("tab20").colors  # more series than tab10's ten colours
    for panel, ax in enumerate(axes[0]):
        for i, (name, pts) in enumerate(series.items()):
            pts = sorted(pts, key=lambda p: p["weight_bits"])
            shift = (i - len(series) / 2) * 0.004 if panel else 0.0
            x = [p["weight_bits"] / (weights or 1) + shift for p in pts]
            y = [100 * p["accuracy_mean"] for p in pts]
            e = [100 * p["accuracy_std"] for p in pts]
            ax.errorbar(x, y, yerr=e, fmt="o-" if len(pts) > 1 else "s", capsize=3, ms=4, lw=1, label=name,
                        color=colors[(2 * i) % 20 if i < 10 else 2 * (i - 10) + 1])
            for xi, yi, p in zip(x, y, pts):
                if p["group_size"] and (not panel or zoom[0] <= xi <= zoom[1]):
                    ax.annotate(f"G{p['group_size']}", (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if float_accuracy is not None:
            ax.axhline(100 * float_accuracy, color="gray", ls="--", lw=1, label="float" if not panel else None)
        ax.set_xlabel("stored bits per weight (width metadata included)" if weights else "stored weight bits")
        ax.set_ylabel("test accuracy (%)")
        if panel:
            ax.set_xlim(*zoom)
            ax.set_title("zoom (series spread sideways)", fontsize=9)
        else:
            ax.set_title(title)
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
