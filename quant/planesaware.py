"""Planes-aware training (issue 23, after "any-precision" networks): at every step a run-time
``planes`` value is drawn and the network trains through the weights the bit-serial hardware
accumulates at that precision, so one set of weights serves every deployable ``planes``.

At ``planes = k`` a layer of ``B``-bit weights keeps its ``k`` most significant two's-complement
planes: its integer weights truncated toward minus infinity to a multiple of ``2**(B - k)``
(:func:`flipq.host.emulator.truncate_planes`, the hardware's arithmetic; layers narrower than
``k`` bits stay whole). The forward pass sees ``scale * truncated``; the gradient passes through
the truncation unchanged (straight-through), as it does through the quantizer itself. What is
exported is the network at full precision: the stages downstream are unchanged, and the emulator
at ``planes = k`` computes exactly what the network computed while trained at ``k``
(tests/test_planes_aware.py).

>>> hook = PlanesAware(model, lowest=4, seed=0)     # doctest: +SKIP
>>> train(model, ds, cfg, hooks=(hook,))            # doctest: +SKIP
>>> with at_planes(model, 4): ...                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn as nn


def _truncating_hook(state: dict):
    def hook(_module, _inputs, out):
        k = state.get("planes")
        if k is None:
            return out
        bits = int(round(float(out.bit_width)))
        drop = bits - int(k)
        if drop <= 0:
            return out
        scale = out.scale
        w = out.value / scale
        q = torch.round(w)
        step = float(2 ** drop)
        kept = torch.floor(q / step) * step  # toward minus infinity, as the hardware's planes
        return out.set(value=out.value + ((kept - q) * scale).detach())

    return hook


class _Truncation:
    """Forward hooks on every MAC layer's weight quantizer; ``planes`` None: full precision."""

    def __init__(self, model: nn.Module):
        self.state: dict = {"planes": None}
        self.handles = []
        for name, layer in model.mac_layers().items():
            proxy = getattr(layer, "weight_quant", None)
            if proxy is None:
                raise ValueError(f"layer '{name}' has no weight quantizer to truncate")
            self.handles.append(proxy.register_forward_hook(_truncating_hook(self.state)))

    def set(self, planes: int | None) -> None:
        self.state["planes"] = planes

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def weight_bits(model: nn.Module) -> int:
    """The widest weight quantizer of ``model``'s MAC layers: the most planes a setting can keep."""
    return max(int(round(float(layer.quant_weight().bit_width))) for layer in model.mac_layers().values())


@contextlib.contextmanager
def at_planes(model: nn.Module, planes: int | None):
    """``model`` computing as the hardware does at run-time ``planes`` (None: full precision)."""
    t = _Truncation(model)
    t.set(planes)
    try:
        yield model
    finally:
        t.remove()


class PlanesAware:
    """A training hook (:func:`flipq.quant.train.train`): before each step draws ``planes``
    from ``lowest .. B`` (``B`` the widest layer's bits), after it returns to full precision, so
    the per-epoch evaluation and the checkpoint see the network whole. ``full_share``: the share
    of steps at full precision (``B``), the rest uniform over ``lowest .. B - 1``; None: every
    value of ``lowest .. B`` alike. Its generator's state is checkpointed with the run."""

    def __init__(self, model: nn.Module, lowest: int, seed: int = 0, full_share: float | None = None):
        self.top = weight_bits(model)
        if isinstance(lowest, bool) or not isinstance(lowest, int) or not 1 <= lowest <= self.top:
            raise ValueError(f"planes-aware lowest planes {lowest!r} must be an int in 1..{self.top} "
                             f"(the network's widest weights have {self.top} bits)")
        if full_share is not None and not (isinstance(full_share, (int, float)) and 0 <= full_share <= 1):
            raise ValueError(f"planes-aware full-precision share {full_share!r} must be a number in 0..1")
        self.lowest, self.full_share = lowest, full_share
        self.rng = np.random.default_rng(seed)
        self.truncation = _Truncation(model)
        self.drawn: dict[int, int] = {}

    def before_step(self, model, step: int) -> None:
        if self.full_share is None or self.lowest == self.top:
            k = int(self.rng.integers(self.lowest, self.top + 1))
        elif self.rng.random() < self.full_share:
            k = self.top
        else:
            k = int(self.rng.integers(self.lowest, self.top))
        self.drawn[k] = self.drawn.get(k, 0) + 1
        self.truncation.set(k)

    def after_step(self, model, step: int) -> None:
        self.truncation.set(None)

    def close(self) -> None:
        self.truncation.remove()

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "drawn": {str(k): v for k, v in self.drawn.items()}}

    def load_state_dict(self, d: dict) -> None:
        self.rng.bit_generator.state = d["rng"]
        self.drawn = {int(k): int(v) for k, v in d.get("drawn", {}).items()}
