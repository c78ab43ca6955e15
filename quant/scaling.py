"""Which power of two a layer's weight grid uses: the weight-scale rule.

Every weight quantizer in flipq has a power-of-two scale ``s`` and a narrow signed range
(levels ``-(2**(b-1) - 1) .. 2**(b-1) - 1``), so the integer model stays exact. Two rules pick
``s`` from the float weights at every forward pass:

- ``"absmax"``: Brevitas' ``Int8WeightPerTensorFixedPoint`` statistic,
  ``2**ceil(log2(absmax)) / 2**(b-1)``. Nothing clips much, but the grid is set by the largest
  weight: on the benchmark's trained float layers it is one to two octaves coarser than the
  least-squares grid at 2-4 bits, and at 2 bits it rounds 90-99 % of the weights to zero
  (``docs/mpq.md``).
- ``"mse"`` (default): of the powers of two from twice down to 1/8 of the absmax scale, the one
  whose quantized weights are closest to the float weights (least squared error; the coarser
  scale wins a tie). Weights above the top level clip; Brevitas' straight-through clamp keeps
  their gradient.

Both are plain statistics of the current weights, without learned state: a network rebuilt from
its BitPlan and state dict (export, the pipeline's later stages) computes the same scale again,
as long as it is built with the same rule.

>>> import torch
>>> w = torch.tensor([0.3, -0.1, 0.1, 0.12, -0.08, 0.11, 0.09, -0.12])
>>> float(pow2_weight_scale(w, 2, "absmax")), float(pow2_weight_scale(w, 2, "mse"))
(0.25, 0.125)
"""

from __future__ import annotations

import torch
import torch.nn as nn
from brevitas.quant import Int8WeightPerTensorFixedPoint

from flipq.quant.scalerules import WEIGHT_SCALE_RULES, check_rule

__all__ = ["MSE_OCTAVES", "WEIGHT_SCALE_RULES", "MSEPowerOfTwoScaling", "MSEWeightQuant", "absmax_scale",
           "check_rule", "pow2_weight_scale", "quantize", "weight_quantizer"]

# Candidate exponents relative to the absmax scale, coarsest first (ties go to the coarser).
# +1 covers a 2-bit layer whose weights already sit on its grid (absmax = the top level s):
# the absmax statistic gives s/2 there, and only 2*(s/2) reproduces the weights.
MSE_OCTAVES = (1, 0, -1, -2, -3)


def absmax_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Brevitas' Int8WeightPerTensorFixedPoint scale: ``2**ceil(log2(absmax)) / 2**(b-1)``."""
    absmax = weight.detach().abs().max().clamp_min(1e-10)
    return torch.exp2(torch.ceil(torch.log2(absmax)) - (bits - 1))


def quantize(weight: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    """Weights on the narrow ``bits``-bit grid of ``scale`` (round half to even, clip)."""
    top = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(weight / scale), -top, top) * scale


def pow2_weight_scale(weight: torch.Tensor, bits: int, rule: str = "mse") -> torch.Tensor:
    """The power-of-two scale ``rule`` gives ``weight`` at ``bits`` (a 0-d tensor, no gradient)."""
    s0 = absmax_scale(weight, bits)
    if check_rule(rule) == "absmax":
        return s0
    w = weight.detach()
    best, best_err = s0, None
    for k in MSE_OCTAVES:
        s = s0 * 2.0 ** k
        err = torch.sum((quantize(w, bits, s) - w) ** 2)
        if best_err is None or err < best_err:
            best, best_err = s, err
    return best


class MSEPowerOfTwoScaling(nn.Module):
    """Brevitas scaling module of :class:`MSEWeightQuant`: the ``"mse"`` rule at the
    quantizer's bit width."""

    def __init__(self, bit_width: int):
        super().__init__()
        self.bits = int(bit_width)

    def forward(self, x: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
        return pow2_weight_scale(x, self.bits, "mse")


class MSEWeightQuant(Int8WeightPerTensorFixedPoint):
    """Int8WeightPerTensorFixedPoint with the ``"mse"`` power-of-two scale.

    >>> import brevitas.nn as qnn
    >>> fc = qnn.QuantLinear(8, 1, bias=False, weight_quant=MSEWeightQuant, weight_bit_width=2)
    >>> with torch.no_grad():
    ...     _ = fc.weight.copy_(torch.tensor([[0.3, -0.1, 0.1, 0.12, -0.08, 0.11, 0.09, -0.12]]))
    >>> float(fc.quant_weight().scale), fc.quant_weight().int().tolist()
    (0.125, [[1, -1, 1, 1, -1, 1, 1, -1]])
    """

    scaling_impl = MSEPowerOfTwoScaling


def weight_quantizer(rule: str):
    """The Brevitas weight quantizer of a rule."""
    return {"absmax": Int8WeightPerTensorFixedPoint, "mse": MSEWeightQuant}[check_rule(rule)]
