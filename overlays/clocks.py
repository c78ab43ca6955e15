"""The PL clock a Zynq PS can actually generate, and the range flipq builds for.

>>> from flipq.boards import load_board
>>> clk = pl_clock(load_board("pynq-z2"), 150)
>>> round(clk.fclk_mhz, 3), (clk.divisor0, clk.divisor1)
(142.857, (7, 1))

fclk0 is ``pll_mhz / (divisor0 * divisor1)`` with each divisor 1..63 (UG585 FPGA0_CLK_CTRL on
the Zynq-7000, UG1087 PL0_REF_CTRL on Zynq UltraScale+). Any other frequency written into the PS
configuration is silently replaced by Vivado with one of these, so the HLS clock period, the PS
setting and accel.json would disagree: flipq rounds first and uses the rounded value everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flipq.overlays.errors import OverlayInputError


class ClockError(OverlayInputError):
    """A requested PL clock that is not a finite number inside the board's range."""


@dataclass(frozen=True)
class PsClocks:
    """How the PS derives fclk0 from its PLL: ``pll_mhz / (divisor0 * divisor1)``."""

    pll_mhz: float
    divisor0: int
    divisor1: int

    @property
    def fclk_mhz(self) -> float:
        return self.pll_mhz / (self.divisor0 * self.divisor1)


def pl_clock_divisors(fclk_mhz: float, pll_mhz: float, divisor_max: int = 63) -> PsClocks:
    """The divisors whose quotient is nearest ``fclk_mhz``; on a tie the lower frequency (the one
    that meets timing more easily), then the balanced pair, as Vivado picks 5 x 2 for 100 MHz."""
    best = None
    for d1 in range(1, divisor_max + 1):
        for d0 in range(1, divisor_max + 1):
            f = pll_mhz / (d0 * d1)
            key = (round(abs(f - fclk_mhz), 9), round(f, 9), abs(d0 - d1), -d0)
            if best is None or key < best[0]:
                best = (key, d0, d1)
    return PsClocks(pll_mhz, best[1], best[2])


def mhz_text(mhz: float) -> str:
    """A frequency as Tcl and JSON carry it: six decimals, trailing zeros dropped (100, 142.857143)."""
    return f"{mhz:.6f}".rstrip("0").rstrip(".")


def pl_clock(board, fclk_mhz: float | None = None) -> PsClocks:
    """The PS clock setting for ``fclk_mhz`` on ``board`` (None: the board's fclk0), rounded to the
    nearest frequency its PLL and divisors give. Raises :class:`ClockError` for NaN, infinities,
    values <= 0 and values outside the board's ``clocks.fclk_min_mhz .. fclk_max_mhz``."""
    want = board.fclk0_mhz if fclk_mhz is None else fclk_mhz
    lo, hi = board.fclk_min_mhz, board.fclk_max_mhz
    allowed = f"{board.name} allows {mhz_text(lo)}..{mhz_text(hi)} MHz"
    try:
        want = float(want)
    except (TypeError, ValueError):
        raise ClockError(f"fclk_mhz = {want!r} is not a number; {allowed}") from None
    if not math.isfinite(want) or want <= 0:
        raise ClockError(f"fclk_mhz = {want} is not a positive finite frequency; {allowed}")
    if not lo <= want <= hi:
        raise ClockError(f"fclk_mhz = {mhz_text(want)} MHz is outside the PL clock range: {allowed}")
    clocks = pl_clock_divisors(want, board.pll_mhz, board.divisor_max)
    if not lo <= clocks.fclk_mhz <= hi:  # the nearest quotient lies past a range end: step inside
        inside = [pl_clock_divisors(f, board.pll_mhz, board.divisor_max) for f in (lo, hi)]
        clocks = min((c for c in inside if lo <= c.fclk_mhz <= hi),
                     key=lambda c: abs(c.fclk_mhz - want))
    return clocks


__all__ = ["ClockError", "PsClocks", "mhz_text", "pl_clock", "pl_clock_divisors"]
