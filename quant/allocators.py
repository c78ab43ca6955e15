"""Which weight groups get the extra bit: allocators behind one interface.

An allocator scores every weight of a layer from what the retraining saw
(:class:`LayerEvidence`); a group's score is the sum of its weights' scores, and a *budgeted*
allocation gives ``b + 1`` bits to the top ``round(fraction * groups)`` groups of every layer.
Every allocator therefore pays exactly the same number of stored bits at the same group size and
fraction (full and partial groups are budgeted apart, so group lengths match too):
the comparison is about *which* groups, never about how many.

- ``"flip"``: adjacent-level switches in the counting window (Kim et al.); ties, which are many
  (most weights never switch), are broken at random.
- ``"random"``: uniform random scores from a seeded generator: the baseline that knows nothing.
- ``"error"``: how much the extra bit shrinks the weight's squared quantization error,
  ``(w - q_b(w))**2 - (w - q_{b+1}(w))**2``; inside the range it peaks for weights on a decision
  boundary (the fine grid puts a level there) and is zero for weights on a coarse level.
- ``"sensitivity"``: the same error reduction weighted by the weight's mean squared gradient in
  the window (a diagonal empirical Fisher, i.e. a HAWQ-style second-order estimate of the loss
  the extra bit removes).
- ``"flip+error"``: flip counts with the error reduction (scaled below one count) as the
  tie-break instead of chance.

>>> import torch
>>> ev = LayerEvidence(latent=torch.tensor([[0.0, 0.5, 0.4, 0.9]]), scale=torch.tensor(1.0), bits=2)
>>> [round(x, 3) for x in weight_scores("error", ev).flatten().tolist()]
[0.0, 0.25, 0.15, 0.0]
>>> select_groups(torch.tensor([[3.0, 1.0, 2.0, 0.5]]), 0.5).tolist()
[[True, False, True, False]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flipq.quant.flipconfig import ALLOCATORS, FlipError
from flipq.quant.layout import grouped
from flipq.quant.scaling import quantize

__all__ = ["ALLOCATORS", "LayerEvidence", "error_reduction", "group_scores", "select_groups", "weight_scores"]

# Below one switch: a tie-break added to flip counts never reorders two different counts.
_TIE = 1e-3


@dataclass
class LayerEvidence:
    """What an allocator may read about one layer at an allocation point.

    ``latent``: the float weights (torch layout); ``scale``: the coarse ``b``-bit grid's scale;
    ``counts``: adjacent-level switches per weight in the window; ``grad_sq``: mean squared
    gradient per weight in the window; ``generator``: the seeded source of random scores."""

    latent: torch.Tensor
    scale: torch.Tensor
    bits: int
    counts: torch.Tensor | None = None
    grad_sq: torch.Tensor | None = None
    generator: torch.Generator | None = None

    def noise(self) -> torch.Tensor:
        g = self.generator if self.generator is not None else torch.Generator().manual_seed(0)
        return torch.rand(self.latent.shape, generator=g)


def error_reduction(latent: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Squared quantization error on the ``b``-bit grid minus that on the ``b + 1``-bit grid of
    half the scale (the extra bit's grid, ``flipq.quant.extrabit``)."""
    coarse = quantize(latent, bits, scale)
    fine = quantize(latent, bits + 1, scale / 2)
    return (latent - coarse) ** 2 - (latent - fine) ** 2


def _need(ev: LayerEvidence, field: str, allocator: str) -> torch.Tensor:
    value = getattr(ev, field)
    if value is None:
        raise FlipError(f"allocator '{allocator}' needs {field}, which the retraining did not record")
    return value


def weight_scores(allocator: str, ev: LayerEvidence) -> torch.Tensor:
    """Per-weight score of ``allocator`` (higher: more deserving of the extra bit)."""
    if allocator == "random":
        return ev.noise()
    if allocator == "flip":
        return _need(ev, "counts", allocator).float() + _TIE * ev.noise()
    err = error_reduction(ev.latent, ev.scale, ev.bits)
    if allocator == "error":
        return err
    if allocator == "sensitivity":
        return _need(ev, "grad_sq", allocator) * err
    if allocator == "flip+error":
        # error reduction is at most (s/2)**2: scaled into [0, _TIE * 4), it only orders equal counts
        # (a group of up to 64 weights sums it to < 0.26 of a switch)
        return _need(ev, "counts", allocator).float() + _TIE * err / (ev.scale / 2) ** 2
    raise FlipError(f"unknown allocator '{allocator}' (known: {', '.join(ALLOCATORS)})")


def group_scores(scores: torch.Tensor, group_size: int, chw=None) -> torch.Tensor:
    """Weight-shaped scores -> ``(N, n_groups)`` sums over each group (``flipq.host.groups``
    layout, the order of the BitPlan's ``group_bits``)."""
    return grouped(scores, group_size, chw).sum(1).t()


def select_groups(gscores: torch.Tensor, fraction: float, taken: torch.Tensor | None = None,
                  partial_last: bool = False) -> torch.Tensor:
    """``(N, n_groups)`` booleans: ``taken`` plus the best-scored other groups, so that
    ``round(fraction * groups)`` are set. With ``partial_last`` (the fan-in is not a multiple of
    the group size) the last, shorter group of every column is budgeted on its own, so the
    payload bits depend only on the fraction."""
    if not 0 <= fraction <= 1:
        raise FlipError(f"budget fraction {fraction!r} must be in [0, 1]")
    taken = torch.zeros(gscores.shape, dtype=torch.bool) if taken is None else taken.clone()
    parts = [slice(0, gscores.shape[1] - 1), slice(gscores.shape[1] - 1, None)] if partial_last else [slice(None)]
    for cols in parts:
        s, t = gscores[:, cols], taken[:, cols]
        want = round(fraction * s.numel()) - int(t.sum())
        if want <= 0 or s.numel() == 0:
            continue
        ranked = torch.where(t, torch.tensor(float("-inf"), dtype=s.dtype), s).flatten()
        # a stable sort: equal scores keep their order, so a run is reproducible
        idx = torch.sort(ranked, descending=True, stable=True).indices[:want]
        flat = t.flatten().clone()
        flat[idx] = True
        taken[:, cols] = flat.reshape(t.shape)
    return taken
