"""The FPGA energy model (flipq.hls.energy) on a layer worked out by hand."""

import numpy as np
import pytest

from flipq.hls.cost import layer_cost
from flipq.hls.energy import (CNV_W1A1_MLPERF, XC7Z020, EnergyModelError, calibrate_board_power,
                              inference_energy, power_constants)


def _dense_report():
    # K=16, N=4, 2-bit weights, one group, every plane nonzero; SIMD 16, PE 1:
    # R = 1 row a vector; each of the 4 column blocks runs 2 planes x 1 row -> T = 8 steps;
    # the RTL MVAU takes max(T, R) = 8 cycles a vector (docs/cost_model.md, measured in Verilator).
    mask = np.full((4, 1), 0b11, dtype=np.uint8)
    lay = layer_cost(name="fc", kernel="dense", fan_in=16, n_out=4, n_pix=1, weight_bits=2, act_lo=0, act_hi=15,
                     group_size=16, mask=mask, planes=None, pe=1, simd=16)
    return lay, {"layers": [lay], "totals": {"interval": lay["cycles"], "cycles": lay["cycles"], "clock_mhz": 100.0}}


def test_energy_of_a_hand_computed_dense_layer():
    lay, report = _dense_report()
    assert lay["cycles"] == 8 and lay["bram36"] == 0
    e = inference_energy(report, XC7Z020, dma_bits=16 * 8 + 4 * 8)
    c = XC7Z020
    static = c.static_w * 8 / 100e6 * 1e6  # W x s -> uJ
    logic = lay["lut"] * 8 * c.lut_pj * 1e-6
    clock = lay["ff"] * 8 * c.ff_pj * 1e-6
    dma = 160 * c.ddr_pj_per_bit * 1e-6
    assert e["static_uj"] == pytest.approx(static) and e["logic_uj"] == pytest.approx(logic)
    assert e["clock_uj"] == pytest.approx(clock) and e["dma_uj"] == pytest.approx(dma) and e["bram_uj"] == 0
    assert e["energy_uj"] == pytest.approx(static + logic + clock + dma)
    assert e["seconds"] == pytest.approx(8e-8) and e["label"] == "modeled"


def test_static_power_over_the_interval_dominates_and_bram_counts_per_busy_cycle():
    report = {"layers": [{"lut": 100, "ff": 100, "bram36": 4, "cycles": 250}],
              "totals": {"interval": 1000, "cycles": 1250, "clock_mhz": 50.0}}
    thr = inference_energy(report, XC7Z020)
    lat = inference_energy(report, XC7Z020, mode="latency")
    assert thr["bram_uj"] == pytest.approx(4 * 250 * 15.0e-6)
    assert thr["static_uj"] == pytest.approx(XC7Z020.static_w * 1000 / 50e6 * 1e6)
    assert lat["static_uj"] == pytest.approx(thr["static_uj"] * 1.25)


def test_calibration_reproduces_the_mlperf_tiny_point():
    # at FINN CNV-W1A1's 661.5 inferences/s the modeled board draws the measured 1.67 W
    e = inference_energy(CNV_W1A1_MLPERF["report"], XC7Z020, CNV_W1A1_MLPERF["dma_bits"])
    rate = CNV_W1A1_MLPERF["rate_per_s"]
    clock_w = e["clock_uj"] * 1e-6 / e["seconds"]
    power = XC7Z020.static_w + clock_w + rate * (e["logic_uj"] + e["bram_uj"] + e["dma_uj"]) * 1e-6
    assert power == pytest.approx(1.67)
    assert 0 < XC7Z020.board_w < 0.5
    with pytest.raises(EnergyModelError, match="do not belong to one board"):
        calibrate_board_power(1.0, 661.5, CNV_W1A1_MLPERF["report"], XC7Z020)


def test_unknown_part_and_mode_are_refused_by_name():
    assert power_constants("xc7z020clg400-1") is XC7Z020
    with pytest.raises(EnergyModelError, match="xczu7ev"):
        power_constants("xczu7ev-ffvc1156-2-e")
    with pytest.raises(EnergyModelError, match="'peak'"):
        inference_energy(_dense_report()[1], XC7Z020, mode="peak")
