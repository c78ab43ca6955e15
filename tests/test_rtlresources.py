"""The RTL twin's resource model (flipq.hls.rtlresources): Yosys' memory mapping rule against
shapes probed with Yosys 0.23 (fixtures, no Yosys needed), the model's structure (more PE or SIMD,
more LUTs), and one Yosys-marked check of small random layers (within 25 % LUT, BRAM exact)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from flipq.hls import rtlresources as rr
from flipq.hls.rtltwin import Stage, plan_rtl
from flipq.hls.yosys import available

sys.path.insert(0, str(Path(__file__).parent))
from intmodels import random_intmodel  # noqa: E402

# (kind, depth, width) -> (style, RAMB18, RAMB36, LUTRAM sites), as Yosys 0.23 `synth_xilinx -family
# xc7` mapped each standalone memory (benchmarks/synth.py probe_memory; docs/results/synth.json
# holds the whole grid of 261 shapes, every one equal to the rule). "rom": no write port, registered read (flipq_mvau's ROMs); "ram": a write
# and a registered read at another address (row buffer, line buffer, FIFO).
PROBED = {
    ("rom", 8, 64): ("logic", 0, 0, 0),
    ("rom", 8, 300): ("logic", 0, 0, 0),
    ("rom", 32, 36): ("logic", 0, 0, 0),
    ("rom", 32, 128): ("logic", 0, 0, 0),
    ("rom", 64, 8): ("logic", 0, 0, 0),
    ("rom", 64, 24): ("logic", 0, 0, 0),
    ("rom", 128, 40): ("logic", 0, 0, 0),
    ("rom", 200, 1024): ("logic", 0, 0, 0),
    ("rom", 256, 8): ("logic", 0, 0, 0),
    ("rom", 256, 16): ("logic", 0, 0, 0),
    ("rom", 256, 17): ("logic", 0, 0, 0),
    ("rom", 256, 48): ("logic", 0, 0, 0),
    ("rom", 512, 12): ("logic", 0, 0, 0),
    ("rom", 576, 24): ("logic", 0, 0, 0),
    ("rom", 576, 32): ("bram", 0, 1, 0),
    ("rom", 1024, 8): ("logic", 0, 0, 0),
    ("rom", 1024, 24): ("bram", 0, 1, 0),
    ("rom", 1024, 48): ("bram", 3, 0, 0),
    ("rom", 2048, 9): ("bram", 1, 0, 0),
    ("rom", 2048, 36): ("bram", 0, 2, 0),
    ("rom", 2048, 96): ("bram", 11, 0, 0),
    ("rom", 4096, 4): ("bram", 1, 0, 0),
    ("rom", 4096, 9): ("bram", 0, 1, 0),
    ("rom", 10240, 9): ("bram", 5, 0, 0),
    ("rom", 10240, 24): ("bram", 0, 7, 0),
    ("rom", 18432, 1): ("bram", 1, 0, 0),
    ("ram", 8, 1): ("lutram", 0, 0, 4),
    ("ram", 8, 64): ("lutram", 0, 0, 44),
    ("ram", 8, 1024): ("lutram", 0, 0, 684),
    ("ram", 16, 64): ("lutram", 0, 0, 44),
    ("ram", 32, 36): ("lutram", 0, 0, 24),
    ("ram", 48, 96): ("lutram", 0, 0, 128),
    ("ram", 64, 64): ("lutram", 0, 0, 88),
    ("ram", 64, 1024): ("lutram", 0, 0, 1368),
    ("ram", 96, 24): ("lutram", 0, 0, 48),
    ("ram", 96, 32): ("bram", 1, 0, 0),
    ("ram", 96, 48): ("lutram", 0, 0, 96),
    ("ram", 96, 64): ("bram", 0, 1, 0),
    ("ram", 96, 96): ("bram", 3, 0, 0),
    ("ram", 96, 128): ("bram", 0, 2, 0),
    ("ram", 96, 1024): ("bram", 29, 0, 0),
    ("ram", 128, 18): ("lutram", 0, 0, 48),
    ("ram", 128, 24): ("bram", 1, 0, 0),
}


@pytest.mark.parametrize("shape", sorted(PROBED))
def test_memory_rule_matches_probed_yosys(shape):
    kind, depth, width = shape
    m = rr.memory_map(depth, width, ram=kind == "ram")
    assert (m["style"], m["ramb18"], m["ramb36"], m["lutram"]) == PROBED[shape]


def test_memory_rule_basics():
    assert rr.memory_map(0, 8)["style"] == "none"
    # a ROM goes to block RAM once its soft-logic price (1/64 a bit) passes a RAMB18's (129 + 2)
    assert rr.memory_map(64, 8)["style"] == "logic"
    assert rr.memory_bram36(4096, 36) == 4.0
    # deeper never takes fewer block RAMs
    for w in (8, 36, 72, 200):
        b = [rr.memory_bram36(d, w) for d in (512, 1024, 2048, 4096, 8192)]
        assert b == sorted(b)


def _mvau(pe: int, simd: int, **kw) -> Stage:
    # the schedule (rows, blocks, steps) held fixed, so only the datapath and ROM width follow PE and SIMD
    p = {"SIMD": simd, "PE": pe, "R": 8, "NB": 8, "B": 4, "T0": 256,
         "AW": 4, "A_SIGNED": 0, "PSUM_W": 4 + max(1, (simd - 1).bit_length()) + 1, "ACC_W": 16, "OUT_W": 4,
         "MODE": 1, "RQ_SHIFT": 6, "NTHR": 1, "THR_W": 17}
    p.update(kw)
    return Stage("flipq_mvau", p, 4 * simd, 4 * pe, has_planes=True)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_more_pe_or_simd_more_luts(mode):
    kw = {"MODE": mode, "NTHR": 15 if mode == 2 else 1}
    for simd in (1, 2, 4, 8, 16):
        luts = [rr.stage_resources(_mvau(pe, simd, **kw))["lut"] for pe in (1, 2, 4, 8, 16)]
        assert all(a < b for a, b in zip(luts, luts[1:])), (simd, luts)
    for pe in (1, 4, 16):
        luts = [rr.stage_resources(_mvau(pe, simd, **kw))["lut"] for simd in (1, 2, 4, 8, 16)]
        assert all(a < b for a, b in zip(luts, luts[1:])), (pe, luts)


def test_wider_accumulator_and_thresholds_cost_more():
    base = rr.stage_resources(_mvau(4, 8))["lut"]
    assert rr.stage_resources(_mvau(4, 8, ACC_W=24))["lut"] > base
    few = rr.stage_resources(_mvau(4, 8, MODE=2, NTHR=3))["lut"]
    many = rr.stage_resources(_mvau(4, 8, MODE=2, NTHR=15))["lut"]
    assert many > few


def test_design_resources_cover_layers_glue_and_wrapper():
    from flipq.hls.hwplan import plan_hardware

    model, pe, simd = random_intmodel(np.random.default_rng(5))
    rp = plan_rtl(model, plan_hardware(model, pe, simd=simd))
    d = rr.design_resources(rp)
    assert set(d["layers"]) == {lay.name for lay in rp.layers}
    layer_lut = sum(v["lut"] for v in d["layers"].values())
    assert d["total"]["lut"] == pytest.approx(layer_lut + d["glue"]["lut"] + d["axi_top"]["lut"])
    assert d["total"]["dsp"] == 0 and d["glue"]["lut"] > 0
    for v in d["layers"].values():
        assert v["lut"] > 0 and v["ff"] > 0 and v["bram36"] >= 0
    assert "Yosys" in d["label"]


def test_board_overhead_is_labelled_published():
    b = rr.board_overhead("pynq-z2")
    assert b["label"] == "AMD published (PG021/PG059), not synthesized here"
    assert {"axi_dma", "axi_interconnect", "proc_sys_reset"} <= set(b["parts"])
    assert "PG021" in b["parts"]["axi_dma"]["source"] and "PG059" in b["parts"]["axi_interconnect"]["source"]
    assert b["total"]["lut"] == sum(p["lut"] for p in b["parts"].values())


@pytest.mark.skipif(not available(), reason="Yosys not installed (apt-get install yosys)")
@pytest.mark.parametrize("seed", [7, 8, 12])
def test_small_layers_within_25_percent_of_yosys(seed, tmp_path):
    """What ``flipq hls --rtl`` writes (hls/rtlstage.synth_report): Yosys' figures per layer and
    whole beside the cost model's, LUT within 25 %, BRAM exact."""
    from flipq.benchmarks import synth as bench
    from flipq.hls.cost import hls_report
    from flipq.hls.hwplan import plan_hardware
    from flipq.hls.rtlstage import synth_report

    design, rp = bench.build_design(f"rand{seed}", tmp_path)
    model, pe, simd = bench.random_layer(seed)
    report = hls_report(model, plan=plan_hardware(model, pe, simd=simd))
    synth_report(design, report)
    for lay in report["layers"]:
        y = lay["yosys"]
        assert lay["lut_vs_yosys"] == round(lay["lut"] / y["lut_total"], 4)
        assert abs(lay["lut_vs_yosys"] - 1) <= 0.25, (lay["name"], lay["lut"], y["lut_total"])
        assert lay["bram36"] == y["bram36"], (lay["name"], lay["bram36"], y["bram36"])
    t = report["totals"]
    assert abs(t["lut_vs_yosys"] - 1) <= 0.25 and t["bram36"] == t["yosys"]["bram36"]
