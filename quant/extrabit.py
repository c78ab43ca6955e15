"""The weight quantizer of a layer stored one bit wider than its base width (flip allocation).

Such a layer keeps a frozen power-of-two scale ``s / 2`` (``s``: its base-width scale when the
extra bit was allocated) instead of Brevitas' statistics. The statistics rule,
``2**ceil(log2(absmax)) / 2**(bits-1)``, is exactly half per extra bit for the same absmax, but
it is not stable on weights that already sit on the grid: a 2-bit narrow layer's largest level
is ``1 * s``, whose absmax gives ``s / 2`` -- requantizing halves the scale again, and the coarse
grid would collapse. The frozen scale lives in the state dict
(``<layer>.weight_quant.tensor_quant.scaling_impl.scale``), so a network rebuilt from the BitPlan
loads it with the weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from brevitas.quant import Int8WeightPerTensorFixedPoint


class FrozenScaling(nn.Module):
    """Brevitas scaling module returning a stored scale (a buffer, saved with the model)."""

    def __init__(self, frozen_scale: float = 1.0):
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(frozen_scale)))

    def forward(self, x: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
        return self.scale


class FlipWeightQuant(Int8WeightPerTensorFixedPoint):
    """Int8WeightPerTensorFixedPoint with a frozen scale (``weight_frozen_scale=...``).

    >>> import brevitas.nn as qnn
    >>> fc = qnn.QuantLinear(8, 4, bias=False, weight_quant=FlipWeightQuant,
    ...                      weight_bit_width=3, weight_frozen_scale=0.125)
    >>> float(fc.quant_weight().scale), int(fc.quant_weight().bit_width)
    (0.125, 3)
    """

    scaling_impl = FrozenScaling
    frozen_scale = 1.0


def set_weight_bits(layer: nn.Module, bits: int, scale: float) -> None:
    """Requantize a Brevitas layer's weights at ``bits`` with the frozen ``scale``, in place. The
    weight Parameter is untouched, so an optimizer keeps tracking it."""
    proxy = layer.weight_quant
    proxy.quant_injector = proxy.quant_injector.let(bit_width=bits, scaling_impl=FrozenScaling,
                                                    frozen_scale=float(scale))
    proxy.init_tensor_quant()
