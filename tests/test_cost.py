"""The analytical cost model: cycles fall with run-time planes and with group widths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flipq.hls.cost import ResourceError, check_fits, hls_report
from flipq.hls.fold import (ConvGeometry, block_step_table, fold_layer, mvau_cycles, step_row_bits, step_table,
                             swg_cycles)
from flipq.hls.hwplan import HardwarePlanError, output_range_bits, plan_hardware
from flipq.hls.planes import PlaneError
from flipq.host.emulator import Emulator
from flipq.host.intmodel import IntLayer, IntModel, QuantSpec


def small_model(bits=(5, 4), group_size=4, group_bits=None, seed=0) -> IntModel:
    """conv 3x3x2->6 on 6x6, requant, flatten, dense 96->7; optional per-group widths."""
    rng = np.random.default_rng(seed)
    w1 = rng.integers(-(2 ** (bits[0] - 1)), 2 ** (bits[0] - 1), size=(3, 3, 2, 6))
    w2 = rng.integers(-(2 ** (bits[1] - 1)), 2 ** (bits[1] - 1), size=(96, 7))
    layers = [
        IntLayer("conv", "conv1", {"out_shape": [4, 4, 6], "stride": [1, 1], "pads": [0, 0, 0, 0], "w_exp": -3,
                                   "weight_bits": bits[0], "act_bits": 8}, weight=w1),
        IntLayer("requant", "q1", {"out_shape": [4, 4, 6], "relu": True,
                                   "quant": {"bits": 4, "signed": False, "narrow": False, "exp": -1}}),
        IntLayer("flatten", "f", {"out_shape": [96]}),
        IntLayer("dense", "fc1", {"out_shape": [7], "w_exp": -3, "weight_bits": bits[1], "act_bits": 4}, weight=w2),
    ]
    model = IntModel((6, 6, 2), QuantSpec(8, False, False, -8), layers, output_exp=-4)
    for layer in model.mac_layers:
        layer.attrs["group_size"] = group_size
        if group_bits is not None:
            b = layer.attrs["weight_bits"]
            kn = layer.weight.reshape(-1, layer.weight.shape[-1])
            d = b - min(group_bits, b)
            layer.weight = ((kn >> d) << d).reshape(layer.weight.shape)
    return model


def test_report_shape_and_totals():
    rep = hls_report(small_model(), pe={"conv1": 2}, planes=None)
    names = [lay["name"] for lay in rep["layers"]]
    assert names == ["conv1", "fc1"]
    for lay in rep["layers"]:
        for key in ("name", "kernel", "weight_bits", "act_bits", "cycles", "lut", "ff", "bram36", "dsp"):
            assert key in lay
        assert lay["dsp"] == 0
    assert rep["layers"][0]["act_bits"] == 8 and rep["layers"][1]["act_bits"] == 4
    t = rep["totals"]
    assert t["cycles"] == sum(lay["cycles"] for lay in rep["layers"])
    # the accelerator: every RTL layer wrapper (MAC layers, and the rest), the glue and the board
    # wrapper; the chip adds the DMA and interconnect beside it
    parts = rep["layers"] + rep["other"]
    assert [o["name"] for o in rep["other"]][-2:] == ["glue", "axi_top"]
    assert abs(t["lut"] - sum(p["lut"] for p in parts)) <= len(parts)  # each part rounded
    assert t["bram36"] == sum(p["bram36"] for p in parts)
    assert t["chip"]["lut"] == t["lut"] + t["board_overhead"]["lut"] and t["board_overhead"]["lut"] > 0
    assert "AMD" in t["board_overhead"]["label"]
    assert t["interval"] == max(lay["cycles"] for lay in rep["layers"])
    # a MAC layer alone (hw_cost) against the same layer inside the accelerator: its wrapper adds
    # what feeds it (a width converter) and its fused requantizer, never less
    from flipq.hls.cost import hw_cost

    plan = plan_hardware(small_model(), {"conv1": 2})
    for hw, lay in zip(plan.layers, rep["layers"]):
        alone = hw_cost(hw, None)
        assert alone["cycles"] == lay["cycles"] and 0 < alone["lut"] <= lay["lut"] * 1.25


def mvau_total(report: dict) -> int:
    return sum(lay["processes"]["mvau"] for lay in report["layers"])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), b1=st.integers(2, 8), b2=st.integers(2, 8), gs=st.sampled_from([0, 1, 4, 9, 70]),
       pe=st.sampled_from([1, 2, 3, 6]))
def test_cycles_monotone_in_planes(seed, b1, b2, gs, pe):
    model = small_model((b1, b2), gs, seed=seed)
    reports = [hls_report(model, pe={"conv1": pe}, planes=k) for k in range(1, 9)]
    cycles = [mvau_total(r) for r in reports]
    assert all(a <= b for a, b in zip(cycles, cycles[1:])), cycles
    assert cycles[0] < cycles[max(b1, b2) - 1]  # random weights use their low planes
    assert reports[7]["totals"] == hls_report(model, pe={"conv1": pe})["totals"]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), pe=st.sampled_from([1, 2, 3, 6]))
def test_cycles_fall_with_group_bits(seed, pe):
    cycles = [mvau_total(hls_report(small_model((8, 8), 4, group_bits=g, seed=seed), pe={"conv1": pe}))
              for g in range(2, 9)]
    assert all(a < b for a, b in zip(cycles, cycles[1:])), cycles


def test_folding_trades_cycles_for_luts():
    model = small_model()
    one = hls_report(model)["totals"]
    wide = hls_report(model, pe={"conv1": 6, "fc1": 7})["totals"]
    assert wide["interval"] < one["interval"] and wide["lut"] > one["lut"]
    narrow = hls_report(model, simd={"conv1": 1, "fc1": 1})["totals"]
    # one lane is slower, and not smaller: its weight ROM and step table are deeper (one step a
    # row), so the saved adder tree comes back as ROM (Yosys shows the same on these layers)
    assert narrow["interval"] > one["interval"]
    assert narrow["weight_storage_bits"] == one["weight_storage_bits"]


def test_schedule_by_hand():
    """4 columns, one group of 8 rows, 4-bit weights with plane masks 1111, 0001, 0011, 0000.
    PE=2: block 0 runs the union 1111 (4 entries), block 1 the union 0011 (2); SIMD=4 gives 2
    rows an entry. At planes=1 (lowest plane 3) block 0 keeps the sign plane, block 1 none: it
    still takes one step to write its columns."""
    mask = np.array([[0b1111], [0b0001], [0b0011], [0b0000]], dtype=np.uint8)
    fold = fold_layer(mask, 4, fan_in=8, group_size=0, simd=4, pe=2)
    assert fold.blk_len.tolist() == [[4, 3, 2, 1], [2, 1, 0, 0]]
    assert fold.plane.tolist() == [3, 2, 1, 0, 1, 0] and fold.rom_depth == 12
    assert [fold.steps(lowest) for lowest in range(4)] == [12, 6 + 2, 4 + 1, 2 + 1]
    # one vector: read R=2 rows, then compute T steps; three vectors: the middle slots overlap
    assert mvau_cycles(fold, 1, 0, depth=5) == 2 + 12 + 5
    assert mvau_cycles(fold, 3, 0, depth=5) == 2 + 2 * 12 + 12 + 5
    fold1 = fold_layer(mask, 4, fan_in=8, group_size=0, simd=4, pe=1)
    assert fold1.steps(0) == 2 * (4 + 1 + 2) + 1
    # the kernel's tables: step j reads ROM address j; per block its first step and kept steps
    assert block_step_table(fold).tolist() == [[0, 8, 6, 4, 2], [8, 4, 2, 0, 0]]
    assert step_row_bits(fold) == 1
    planes = [3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 0, 0]
    assert step_table(fold).tolist() == [(j % 2) | p << 1 for j, p in enumerate(planes)]


def test_sliding_window_cycles_by_hand():
    """3x3 windows, stride 1, on a 4x4x2 frame padded by 1: output rows 0..3 need input rows
    2, 3, 4, 4 (clipped). The generator first reads output row 0's 2 rows of 4 pixels, then
    emits each output row's 4 windows of R words while reading the next row's 1, 1, 0, 0 new
    rows: each segment lasts max(4 * R, new * 4); one loop, one pipeline depth."""
    geo = ConvGeometry(in_h=4, in_w=4, cin=2, kh=3, kw=3, sy=1, sx=1, pad_top=1, pad_left=1, out_h=4, out_w=4,
                       pad_bottom=1, pad_right=1)
    r, d = 9, 2
    assert swg_cycles(geo, r, d) == 2 * 4 + 4 * max(4 * r, 1 * 4) + d
    padded = geo.streamed("io_stream")  # hls4ml pads the stream itself: 6x6 frame, no padding
    assert (padded.in_h, padded.pad_top) == (6, 0) and geo.streamed("io_parallel") is geo
    assert swg_cycles(padded, r, d) == 3 * 6 + 4 * max(4 * r, 1 * 6) + d
    # reading dominates when the emission is short: 1x1 windows, stride 2 on a 5x5 frame, R = 1
    strided = ConvGeometry(in_h=5, in_w=5, cin=1, kh=1, kw=1, sy=2, sx=2, pad_top=0, pad_left=0, out_h=3, out_w=3)
    assert swg_cycles(strided, 1, d) == 1 * 5 + max(3, 2 * 5) + max(3, 2 * 5) + max(3, 0) + d


def test_check_fits_names_every_overflow():
    check_fits({"lut": 10, "ff": 5, "bram36": 1, "dsp": 0}, {"lut": 10, "dsp": 220})
    with pytest.raises(ResourceError, match=r"lut 60000 > 53200 \(112.8 %\); bram36 141 > 140"):
        check_fits({"lut": 60000, "ff": 5, "bram36": 141, "dsp": 0}, {"lut": 53200, "bram36": 140, "dsp": 220})
    with pytest.raises(ValueError, match="unknown resource 'uram'"):
        check_fits({"lut": 1}, {"uram": 2})


def test_errors_name_layer():
    with pytest.raises(ValueError, match=r"layer 'conv1': pe=9 must divide its output columns \(pe options: 1, 2, 3, 6\)"):
        hls_report(small_model(), pe={"conv1": 9})
    with pytest.raises(ValueError, match="planes must be in 1..8"):
        hls_report(small_model(), planes=0)
    with pytest.raises(HardwarePlanError, match=r"pe names layer 'fc9'.*layers: conv1, fc1"):
        hls_report(small_model(), pe={"fc9": 2})


def test_cost_reads_the_plan():
    model = small_model(group_size=70)
    plan = plan_hardware(model, pe={"fc1": 7})
    rep = hls_report(model, plan=plan)
    for hw, lay in zip(plan.layers, rep["layers"]):
        assert (lay["act_bits"], lay["group_size"], lay["pe"]) == (hw.act_bits, hw.group_size, hw.pe)
    conv, fc = plan.layers
    # SIMD divides the group and the fan-in, and the conv's channels (2) or a kernel row (3 x 2):
    # 1, 2 or 6 for the conv; gcd(70, 96) = 2 for the dense layer
    assert (conv.group_size, conv.simd, conv.simd_choices) == (18, 6, (1, 2, 6))
    assert (fc.group_size, fc.n_groups, fc.simd) == (70, 2, 2)
    # accumulator: K * max|a| * 2**(B-1); psum: one step's SIMD activations
    assert conv.acc_bits == (18 * 255 * 16).bit_length() + 1 and conv.psum_bits == (6 * 255).bit_length() + 1
    assert fc.inp.amax == 15 and fc.acc_bits == (96 * 15 * 8).bit_length() + 1


def test_output_range_by_hand():
    """dense 2->1, 3-bit weights [1, -2], inputs 0..3: over every planes the weights range
    over [0, 1] and [-4, -2], so the output over -12 .. 3 (5 signed bits)."""
    layer = IntLayer("dense", "fc", {"out_shape": [1], "w_exp": 0, "weight_bits": 3}, weight=np.array([[1], [-2]]))
    model = IntModel((2,), QuantSpec(2, False, False, 0), [layer], output_exp=0)
    out = plan_hardware(model).output
    assert (out.lo, out.hi, out.bits, out.signed) == (-12, 3, 5, True)
    assert output_range_bits(model) == (5, True, 0)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), b1=st.integers(2, 8), b2=st.integers(2, 8))
def test_output_range_holds_for_every_planes(seed, b1, b2):
    model = small_model((b1, b2), 4, seed=seed)
    bits, signed, exp = output_range_bits(model)
    out = plan_hardware(model).output
    assert signed and exp == -3 - 1 and -(2 ** (bits - 1)) <= out.lo and out.hi < 2 ** (bits - 1)
    rng = np.random.default_rng(seed)
    q = np.concatenate([rng.integers(0, 256, size=(40, 6, 6, 2)), np.zeros((1, 6, 6, 2), int),
                        np.full((1, 6, 6, 2), 255)])
    for planes in range(1, 9):
        acc = Emulator(model, planes=planes).run(q)
        assert out.lo <= acc.min() and acc.max() <= out.hi, planes


def test_declared_group_widths_keep_their_groups():
    """group_bits given for whole-fan-in groups: a default group size must not regroup them."""
    layer = IntLayer("dense", "fc", {"out_shape": [1], "w_exp": 0, "weight_bits": 4, "group_bits": [3]},
                     weight=np.array([[2], [4], [-2], [6]]))
    model = IntModel((4,), QuantSpec(2, False, False, 0), [layer], output_exp=0)
    hw = plan_hardware(model, group_size=2).layers[0]
    assert (hw.group_size, hw.n_groups) == (4, 1)
    layer.attrs["group_bits"] = [2]
    with pytest.raises(PlaneError, match=r"layer 'fc': group \(output 0, group 0\) is declared 2 bits "
                                                r"but its weights need 3"):
        plan_hardware(model)


def test_report_says_its_figures_are_modeled(tiny_chain):
    from flipq.hls.cost import hls_report
    from flipq.pipeline import format_hls_report

    report = hls_report(tiny_chain.intmodel)
    assert report["label"].startswith("modeled")
    assert format_hls_report(report).splitlines()[0].startswith("modeled:")
