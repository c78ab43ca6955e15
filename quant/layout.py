"""MAC-layer weights as the ``(K, N)`` matrix of ``flipq.host.groups``, in the integer model's
(channels-last) order, and per-group flags over it: the layout flip allocation counts in and the
BitPlan's ``group_bits`` are ordered by.

>>> import torch
>>> conv = torch.zeros(8, 3, 3, 3)  # (N, cin, kh, kw)
>>> tuple(as_kn(conv).shape)
(27, 8)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from flipq.host.groups import group_count
from flipq.quant.flipconfig import FlipError
from flipq.quant.models import trace_shapes


def as_kn(weight: torch.Tensor, chw: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Torch weight -> the ``(K, N)`` matrix of ``flipq.host.groups`` in the integer model's
    (channels-last) order. Conv2d ``(N, cin, kh, kw)`` becomes HWIO flattened, K ordered
    ``(kh, kw, cin)``. Linear ``(N, K)`` is transposed; when it reads a flattened ``(C, H, W)``
    feature map (``chw``), its rows are reordered ``(H, W, C)``, as the channels-last
    conversion of the exported graph does."""
    if weight.dim() == 2:
        if chw is not None:
            weight = weight.reshape(weight.shape[0], *chw).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
        return weight.t()
    if weight.dim() == 4:
        return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])
    raise FlipError(f"weights of shape {tuple(weight.shape)} are neither Linear nor Conv2d")


def from_kn(matrix: torch.Tensor, shape: torch.Size, chw: tuple[int, int, int] | None = None) -> torch.Tensor:
    if len(shape) == 2:
        w = matrix.t()
        if chw is not None:
            c, h, wd = chw
            w = w.reshape(shape[0], h, wd, c).permute(0, 3, 1, 2)
        return w.reshape(shape)
    n, cin, kh, kw = shape
    return matrix.reshape(kh, kw, cin, n).permute(3, 2, 0, 1).reshape(shape)


def flatten_inputs(model: nn.Module) -> dict[str, tuple[int, int, int] | None]:
    """Per MAC layer: the ``(C, H, W)`` feature map a Linear layer reads through a flatten, else
    None. Found with one forward pass on zeros; a network with a ``flatten_inputs()`` of its own
    (the graph networks, :class:`flipq.quant.mlperf.GraphNet`) says itself."""
    if hasattr(model, "flatten_inputs"):
        return model.flatten_inputs()
    traced = trace_shapes(model)
    shapes = {"map": traced[n][0] for n, m in model.body.named_children() if isinstance(m, nn.Flatten)}
    out: dict[str, tuple[int, int, int] | None] = {n: None for n in model.layer_names}
    seen_flatten = False
    for name, m in model.body.named_children():
        if isinstance(m, nn.Flatten):
            seen_flatten = True
        elif name in out and seen_flatten and len(shapes.get("map", ())) == 3:
            out[name] = shapes["map"]
            break  # only the first layer after the flatten reads the feature map
    return out


def grouped(values: torch.Tensor, group_size: int, chw: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Weight-shaped values -> ``(n_groups, group_size, N)`` in the ``(K, N)`` layout, the last
    group zero-padded (``False`` for booleans)."""
    m = as_kn(values, chw)
    k, n = m.shape
    ng = group_count(k, group_size)
    padded = torch.zeros(ng * group_size, n, dtype=m.dtype)
    padded[:k] = m
    return padded.reshape(ng, group_size, n)


def group_flags(flags: torch.Tensor, group_size: int, chw: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Weight-shaped booleans -> ``(N, n_groups)``: does the group hold a flagged weight."""
    return grouped(flags, group_size, chw).any(1).t()


def expand_groups(gflags: torch.Tensor, group_size: int, shape: torch.Size,
                  chw: tuple[int, int, int] | None = None) -> torch.Tensor:
    """``(N, n_groups)`` -> weight-shaped booleans, every weight of a flagged group set."""
    k = as_kn(torch.empty(shape), chw).shape[0]
    m = gflags.t().repeat_interleave(group_size, dim=0)[:k]
    return from_kn(m, shape, chw)




def layer_shapes(model_or_intmodel) -> dict[str, tuple[int, int]]:
    """``{layer: (K, N)}`` from a QuantNet (or anything with ``mac_layers()`` of torch layers)
    or an IntModel: the shapes a BitPlan's groups are counted over."""
    if hasattr(model_or_intmodel, "mac_layers") and callable(model_or_intmodel.mac_layers):
        return {n: tuple(as_kn(m.weight.detach()).shape) for n, m in model_or_intmodel.mac_layers().items()}
    shapes = {}
    for layer in model_or_intmodel.mac_layers:
        w = layer.weight
        shapes[layer.name] = (int(np.prod(w.shape[:-1])), int(w.shape[-1]))
    return shapes
