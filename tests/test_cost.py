"""The analytical cost model: cycles fall with run-time planes and with group widths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flipq.hls.cost import ResourceError, check_fits, hls_report, matvec_steps
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
    assert t["lut"] == sum(lay["lut"] for lay in rep["layers"])
    assert t["interval"] == max(lay["cycles"] for lay in rep["layers"])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), b1=st.integers(2, 8), b2=st.integers(2, 8), gs=st.sampled_from([0, 1, 4, 9, 70]),
       pe=st.integers(1, 6))
def test_cycles_monotone_in_planes(seed, b1, b2, gs, pe):
    model = small_model((b1, b2), gs, seed=seed)
    cycles = [hls_report(model, pe={"conv1": pe}, planes=k)["totals"]["cycles"] for k in range(1, 9)]
    assert all(a <= b for a, b in zip(cycles, cycles[1:])), cycles
    assert cycles[0] < cycles[max(b1, b2) - 1]  # random weights use their low planes
    assert cycles[7] == hls_report(model, pe={"conv1": pe})["totals"]["cycles"]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), pe=st.integers(1, 6))
def test_cycles_fall_with_group_bits(seed, pe):
    cycles = [hls_report(small_model((8, 8), 4, group_bits=g, seed=seed), pe={"conv1": pe})["totals"]["cycles"]
              for g in range(2, 9)]
    assert all(a < b for a, b in zip(cycles, cycles[1:])), cycles


def test_pe_trades_cycles_for_luts():
    model = small_model()
    one, four = (hls_report(model, pe={"conv1": p, "fc1": p})["totals"] for p in (1, 4))
    assert four["cycles"] < one["cycles"] and four["lut"] > one["lut"]


def test_lockstep_block_waits_for_slowest_column():
    mask = np.array([[0b1111], [0b0001], [0b0011], [0b0000]], dtype=np.uint8)
    assert matvec_steps(mask, 4, 1, None, 1) == 4 + 1 + 2 + 0
    assert matvec_steps(mask, 4, 1, None, 2) == 4 + 2
    assert matvec_steps(mask, 4, 1, 1, 4) == 1  # only the sign plane, where set


def test_check_fits_names_every_overflow():
    check_fits({"lut": 10, "ff": 5, "bram36": 1, "dsp": 0}, {"lut": 10, "dsp": 220})
    with pytest.raises(ResourceError, match=r"lut 60000 > 53200 \(112.8 %\); bram36 141 > 140"):
        check_fits({"lut": 60000, "ff": 5, "bram36": 141, "dsp": 0}, {"lut": 53200, "bram36": 140, "dsp": 220})
    with pytest.raises(ValueError, match="unknown resource 'uram'"):
        check_fits({"lut": 1}, {"uram": 2})


def test_errors_name_layer():
    with pytest.raises(ValueError, match="layer 'conv1': pe=9"):
        hls_report(small_model(), pe={"conv1": 9})
    with pytest.raises(ValueError, match="planes must be in 1..8"):
        hls_report(small_model(), planes=0)
    with pytest.raises(HardwarePlanError, match=r"pe names layer 'fc9'.*layers: conv1, fc1"):
        hls_report(small_model(), pe={"fc9": 2})


def test_cost_reads_the_plan():
    model = small_model(group_size=70)
    plan = plan_hardware(model, pe={"fc1": 3})
    rep = hls_report(model, plan=plan)
    for hw, lay in zip(plan.layers, rep["layers"]):
        assert (lay["act_bits"], lay["group_size"], lay["pe"]) == (hw.act_bits, hw.group_size, hw.pe)
    conv, fc = plan.layers
    assert (conv.group_size, conv.n_words, conv.lanes) == (18, 1, 18)
    assert (fc.group_size, fc.n_groups, fc.n_words, fc.lanes) == (70, 2, 2, 64)
    # accumulator: K * max|a| * 2**(B-1); psum: one group's activations
    assert conv.acc_bits == (18 * 255 * 16).bit_length() + 1 and conv.psum_bits == (18 * 255).bit_length() + 1
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
