"""Modeled energy per inference of a folded bit-serial design on a Zynq board (numpy-free, stdlib
only): static power over the time one inference holds the device, dynamic energy of the LUTs and
BRAMs each layer keeps busy, the clock toggling every register every cycle, and the DMA traffic
through DDR. Every figure is *modeled*; the constants and their sources are in docs/search.md
("Energy model").

The cost report is :func:`flipq.hls.cost.hls_report`'s (the figures ``flipq hls`` writes), so
the energy belongs to exactly the design that builds:

>>> from flipq.hls.energy import inference_energy, power_constants
>>> report = {"layers": [{"lut": 1000, "ff": 2000, "bram36": 2, "cycles": 500}],
...           "totals": {"interval": 1000, "cycles": 500, "clock_mhz": 100.0}}
>>> e = inference_energy(report, power_constants("xc7z020clg400-1"), dma_bits=1024)
>>> round(e["energy_uj"], 4), e["label"]
(15.7794, 'modeled')

Per inference, with ``t = interval / f`` (throughput mode: samples stream back to back, so each
holds the device one interval) or ``t = cycles / f`` (latency mode, one sample alone)::

    static = P_static * t                                 PS, PL static, board (calibrated)
    logic  = sum over layers of LUT_l * e_lut * busy_l    busy_l: the layer's cycles a sample
    bram   = sum over layers of BRAM36_l * e_bram * busy_l
    clock  = FF_total * e_ff * t * f                      every register, every cycle
    dma    = dma_bits * e_ddr_bit                         input and output over DDR
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

LABEL = "modeled"
MODES = ("interval", "latency")


class EnergyModelError(ValueError):
    """A part without power figures, or a report or mode the model cannot take."""


@dataclass(frozen=True)
class PowerConstants:
    """Power figures of one device on its board (docs/search.md lists the source of each)."""

    part: str
    ps_w: float  # processing system while the accelerator runs (cores, DDR controller and PHY)
    pl_static_w: float  # PL leakage (device static)
    board_w: float  # the rest of the board (regulators, DDR chips, PHYs), calibrated
    lut_pj: float  # per LUT per busy cycle, logic and routing at the default toggle rate
    ff_pj: float  # per register per clock cycle: the clock tree and the FF's clock pin
    bram_pj: float  # per BRAM36 per enabled (read) cycle
    ddr_pj_per_bit: float  # DDR traffic, per bit moved

    @property
    def static_w(self) -> float:
        return self.ps_w + self.pl_static_w + self.board_w

    def to_dict(self) -> dict:
        return {**asdict(self), "static_w": self.static_w, "label": LABEL}


# xc7z020 (PYNQ-Z1/Z2). ps_w, pl_static_w: Vivado report_power / XPE for a default
# processing_system7 (2 x A9 at 650 MHz, DDR3 at 533 MHz) and the device at 25 C ambient;
# lut_pj, ff_pj, bram_pj: XPE 7-series figures at 100 MHz and its default 12.5 % toggle rate;
# ddr_pj_per_bit: Horowitz (ISSCC 2014), a 64-bit DRAM access 1.3-2.6 nJ, the upper end.
# board_w is calibrated below on FINN CNV-W1A1's MLPerf Tiny v0.7 point.
_XC7Z020_UNCALIBRATED = PowerConstants(part="xc7z020", ps_w=1.256, pl_static_w=0.137, board_w=0.0, lut_pj=0.02,
                                       ff_pj=0.01, bram_pj=15.0, ddr_pj_per_bit=2600.0 / 64)
# FINN CNV-W1A1 on the PYNQ-Z2 in the MLPerf Tiny v0.7 harness: 1.67 W at 661.5 inferences/s
# (2.53 mJ each; the host's batch-1 loop, not the accelerator, sets the rate). Its design as the
# model sees it: BNN-PYNQ's published CNV resources (37,302 LUT, 140 BRAM36; FFs taken equal to
# LUTs) busy for one interval of the ~3,000 images/s finn-examples reports at 100 MHz, a 32x32x3
# 8-bit image in and 10 bytes out: an upper bound on its dynamic power (W1A1 is the smaller CNV).
CNV_W1A1_MLPERF = {"measured_w": 1.67, "rate_per_s": 661.5, "dma_bits": 32 * 32 * 3 * 8 + 10 * 8,
                   "report": {"layers": [{"lut": 37302, "ff": 37302, "bram36": 140, "cycles": 33333}],
                              "totals": {"interval": 33333, "cycles": 33333, "clock_mhz": 100.0}}}


def power_constants(part: str) -> PowerConstants:
    """The power figures of a board's part (``board.part``, e.g. ``xc7z020clg400-1``)."""
    for prefix, constants in _PARTS.items():
        if str(part).lower().startswith(prefix):
            return constants
    raise EnergyModelError(f"no power figures for part '{part}' (known: {', '.join(_PARTS)}); "
                           "add a PowerConstants entry to flipq.hls.energy with its sources")


def inference_energy(report: dict, constants: PowerConstants, dma_bits: int = 0, mode: str = "interval") -> dict:
    """Modeled energy of one inference (microjoules) of the design ``report`` describes (an
    :func:`flipq.hls.cost.hls_report` dict: per-layer ``lut``, ``ff``, ``bram36``, ``cycles``;
    ``totals`` ``interval``, ``cycles``, ``clock_mhz``), with ``dma_bits`` moved per sample."""
    if mode not in MODES:
        raise EnergyModelError(f"energy mode '{mode}' is unknown (known: {', '.join(MODES)})")
    totals = report["totals"]
    f_hz = float(totals["clock_mhz"]) * 1e6
    held = int(totals["interval"] if mode == "interval" else totals["cycles"])
    seconds = held / f_hz
    pj = 1e-6  # picojoules -> microjoules
    logic = sum(lay["lut"] * lay["cycles"] for lay in report["layers"]) * constants.lut_pj * pj
    bram = sum(lay["bram36"] * lay["cycles"] for lay in report["layers"]) * constants.bram_pj * pj
    clock = sum(lay["ff"] for lay in report["layers"]) * held * constants.ff_pj * pj
    dma = int(dma_bits) * constants.ddr_pj_per_bit * pj
    static = constants.static_w * seconds * 1e6
    total = static + logic + bram + clock + dma
    return {"label": LABEL, "mode": mode, "energy_uj": total, "static_uj": static, "logic_uj": logic,
            "bram_uj": bram, "clock_uj": clock, "dma_uj": dma, "seconds": seconds,
            "power_w": total * 1e-6 / seconds}


def calibrate_board_power(measured_w: float, rate_per_s: float, report: dict, constants: PowerConstants,
                          dma_bits: int = 0) -> float:
    """The board's remaining static power: a measured average power at ``rate_per_s``
    inferences a second, less the PS, the PL's leakage, the design's clock (every cycle, busy
    or not) and its busy energy (logic, BRAM, DMA) per inference times the rate.

    >>> round(calibrate_board_power(constants=_XC7Z020_UNCALIBRATED, **CNV_W1A1_MLPERF), 3)
    0.176
    """
    e = inference_energy(report, constants, dma_bits)
    clock_w = e["clock_uj"] * 1e-6 / e["seconds"]
    busy_w = rate_per_s * (e["logic_uj"] + e["bram_uj"] + e["dma_uj"]) * 1e-6
    rest = measured_w - constants.ps_w - constants.pl_static_w - clock_w - busy_w
    if rest < 0:
        raise EnergyModelError(f"{measured_w} W at {rate_per_s}/s is less than the PS, the PL static and the "
                               "design's dynamic power together: the figures do not belong to one board")
    return rest


XC7Z020 = replace(_XC7Z020_UNCALIBRATED, board_w=calibrate_board_power(constants=_XC7Z020_UNCALIBRATED,
                                                                        **CNV_W1A1_MLPERF))
_PARTS = {"xc7z020": XC7Z020}
