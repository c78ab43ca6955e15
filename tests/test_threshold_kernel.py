"""The kernels' threshold step (the integer model's ``threshold`` layer, FINN's MultiThreshold):
a requantization right after a dense or conv layer, rewritten as the thresholds that compute
it, must leave the emulator's outputs unchanged, and the C-sim built from the same QONNX
graph with the threshold model must equal the emulator on every row at every ``planes``,
io_parallel and io_stream, with some channels descending (weights negated, accumulator
compared negated).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: siblings by path
from test_bitserial import random_inputs  # noqa: E402
from test_signed_chain import random_signed_net  # noqa: E402

from flipq.hls.fold import pe_at_most
from flipq.hls.hwplan import HardwarePlanError, plan_hardware, truncation_range  # noqa: E402
from flipq.host.emulator import Emulator, requantize  # noqa: E402
from flipq.host.intmodel import IntLayer, IntModel  # noqa: E402

ROWS = 32
SIGNED3 = {"signed": True, "narrow": False, "bits": 3, "relu": False}
# a conv into a signed 3-bit quantizer, a dense into an unsigned 3-bit one, a dense into a
# narrow signed 4-bit output quantizer: every requant follows its MAC layer directly
ARCH = {"in_shape": (2, 5, 5), "in": {"signed": True, "narrow": False, "bits": 4, "relu": False},
        "convs": [{"cout": 3, "k": 3, "stride": 1, "pad": 1, "wbits": 4, "act": SIGNED3, "pool": "none"}],
        "dense": [{"n": 5, "wbits": 4, "act": {"signed": False, "narrow": False, "bits": 3, "relu": False}},
                  {"n": 3, "wbits": 3, "act": {"signed": True, "narrow": True, "bits": 4, "relu": False}}]}


def requant_as_thresholds(model: IntModel, descending: dict | None = None) -> IntModel:
    """``model`` with every ``requant`` (no ReLU) that directly follows a MAC layer replaced by
    the ``threshold`` layer computing it: ``T[c, k]`` is the least accumulator in the layer's
    range over every planes whose requantization reaches ``qmin + k`` (``hi + 1`` if none).
    ``descending`` maps MAC layer names to channels whose weights and bias are negated and
    marked descending, so ``-acc`` meets the same thresholds."""
    descending = descending or {}
    q = model.input_quant
    lo, hi, exp = q.qmin, q.qmax, q.exp
    layers = list(model.layers)
    for index, layer in enumerate(model.layers):
        if layer.is_mac:
            w = np.asarray(layer.weight, dtype=np.int64)
            acc_lo, acc_hi = truncation_range(w.reshape(-1, w.shape[-1]), layer.attrs["weight_bits"], lo, hi,
                                              layer.bias)
            exp += layer.attrs["w_exp"]
            lo, hi = acc_lo, acc_hi
            flip = list(descending.get(layer.name, []))
            if flip:
                sign = np.ones(w.shape[-1], dtype=np.int64)
                sign[flip] = -1
                layers[index] = replace(layer, weight=w * sign,
                                        bias=None if layer.bias is None else np.asarray(layer.bias) * sign)
            nxt = model.layers[index + 1] if index + 1 < len(model.layers) else None
            if nxt is not None and nxt.op == "requant" and not nxt.attrs.get("relu", False):
                spec = nxt.requant
                accs = np.arange(acc_lo, acc_hi + 1, dtype=np.int64)
                levels = requantize(accs, exp, spec, False)
                t = accs[np.minimum(np.searchsorted(levels, np.arange(spec.qmin + 1, spec.qmax + 1)), len(accs) - 1)]
                t = np.where(levels[-1] >= np.arange(spec.qmin + 1, spec.qmax + 1), t, acc_hi + 1)
                n_out = w.shape[-1]
                layers[index + 1] = IntLayer("threshold", nxt.name, dict(nxt.attrs, descending=flip),
                                             thresholds=np.tile(t, (n_out, 1)))
        elif layer.op in ("requant", "threshold"):
            s = layer.out_quant
            lo, hi, exp = s.qmin, s.qmax, s.exp
        elif layer.op == "relu":
            lo, hi = max(lo, 0), max(hi, 0)
    return replace(model, layers=layers)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    net = random_signed_net(tmp_path_factory.mktemp("thr"), 3, 4, ARCH)
    im = net.intmodel
    assert [layer.op for layer in im.layers] == ["conv", "requant", "flatten", "dense", "requant", "dense",
                                                 "requant"]
    conv, dense = im.mac_layers[:2]
    thr = requant_as_thresholds(im, {conv.name: [1], dense.name: [0, 3]})
    assert [layer.op for layer in thr.layers].count("threshold") == 3
    return net, thr


def test_thresholds_equal_the_requantization(net):
    (net, thr), im = net, net[0].intmodel
    q = random_inputs(im, 200, 5)
    q[0], q[1] = im.input_quant.qmin, im.input_quant.qmax
    assert np.array_equal(Emulator(thr).run(q), Emulator(im).run(q))
    assert np.array_equal(Emulator(thr, reference=True).run(q), Emulator(im).run(q))
    assert thr.layers[1].attrs["descending"] == [1] and thr.layers[1].signs.tolist() == [1, -1, 1]


def test_plan_carries_the_threshold_step(net):
    _, thr = net
    plan = plan_hardware(thr)
    conv, dense, last = plan.layers
    assert conv.thr_signs.tolist() == [1, -1, 1] and dense.thr_signs.tolist() == [-1, 1, 1, -1, 1]
    assert conv.thresholds.shape == (3, 7) and dense.thresholds.shape == (5, 7) and last.thresholds.shape == (3, 14)
    assert conv.out_quant == thr.layers[1].attrs["quant"]
    for hw in plan.layers:
        top = 2 ** (hw.acc_bits - 1)
        assert hw.thresholds.min() >= -top and hw.thresholds.max() <= top and hw.thr_bits == hw.acc_bits + 1
    assert plan.output.lo == -7 and plan.output.hi == 7  # the narrow signed 4-bit output quantizer


def test_thresholds_beyond_the_register_are_clipped_exactly(net):
    """Thresholds past the accumulator register (the lowering's sentinels, or anything) are
    clipped to its minimum / maximum + 1; every value the register holds counts the same."""
    from flipq.host.emulator import apply_thresholds

    _, thr = net
    layers = list(thr.layers)
    t = layers[1].thresholds.copy()
    t[:, :2], t[:, -2:] = -(2**40), 2**40
    layers[1] = wide = replace(layers[1], thresholds=t)
    hw = plan_hardware(replace(thr, layers=layers)).layers[0]
    top = 2 ** (hw.acc_bits - 1)
    assert (hw.thresholds[:, :2] == -top).all() and (hw.thresholds[:, -2:] == top).all()
    acc = np.concatenate([np.arange(-top + 1, -top + 50), np.arange(-40, 40), np.arange(top - 50, top)])
    acc = np.repeat(acc[:, None], 3, axis=1)
    clipped = replace(wide, thresholds=hw.thresholds)
    assert np.array_equal(apply_thresholds(acc, clipped), apply_thresholds(acc, wide))


def test_plan_refuses_malformed_thresholds(net):
    _, thr = net
    layers = list(thr.layers)
    layers[1] = replace(layers[1], thresholds=layers[1].thresholds[:, ::-1])
    with pytest.raises(HardwarePlanError, match=f"threshold layer '{layers[1].name}': thresholds are not ascending"):
        plan_hardware(replace(thr, layers=layers))
    layers[1] = replace(layers[1], thresholds=thr.layers[1].thresholds[:, :3])
    with pytest.raises(HardwarePlanError, match=r"thresholds of shape \(3, 3\), expected \(3, 7\)"):
        plan_hardware(replace(thr, layers=layers))
    moved = [thr.layers[0], thr.layers[2], thr.layers[1]] + list(thr.layers[3:])
    with pytest.raises(HardwarePlanError, match="does not directly follow a dense or conv layer"):
        plan_hardware(replace(thr, layers=moved))


def perturbed(model: IntModel, seed: int) -> IntModel:
    """Every threshold row moved by its own offset, and sentinels far beyond any accumulator
    register in two rows: the C-sim must still follow the emulator column by column."""
    rng = np.random.default_rng(seed)
    layers = []
    for layer in model.layers:
        if layer.op == "threshold":
            t = layer.thresholds + rng.integers(-40, 41, size=(len(layer.thresholds), 1))
            t[0, 0], t[1, -1] = -(2**40), 2**40
            layer = replace(layer, thresholds=t)
        layers.append(layer)
    return replace(model, layers=layers)


@pytest.mark.parametrize("io_type, pe, perturb", [("io_parallel", 1, False), ("io_stream", 2, False),
                                                  ("io_parallel", 3, True)])
def test_threshold_csim_equals_emulator_at_every_planes(net, tmp_path, io_type, pe, perturb):
    from flipq.hls.bitserial import build_bitserial
    from flipq.host.csim import CsimBackend

    net, thr = net
    if perturb:
        thr = perturbed(thr, 8)
    build = build_bitserial(thr, net.prepared, tmp_path / "hls", io_type=io_type,
                            pe={layer.name: pe_at_most(layer.weight.shape[-1], pe) for layer in thr.mac_layers})
    params = (build.project_dir / "firmware" / "parameters.h").read_text()
    assert params.count("static const bool threshold = true;") == 3
    q = random_inputs(thr, ROWS, 11)
    q[0], q[1] = thr.input_quant.qmin, thr.input_quant.qmax
    with CsimBackend(build.lib_path, build.meta) as csim:
        for planes in range(1, thr.max_planes() + 1):
            got = csim.run(q, planes).reshape(ROWS, -1)
            want = Emulator(thr, planes=planes).run(q).reshape(ROWS, -1)
            bad = np.flatnonzero(~(got == want).all(axis=1))
            assert bad.size == 0, f"planes={planes}: C-sim differs from the emulator on rows {bad.tolist()}"
        if not perturb:  # the descending channels change the model only below full precision
            assert np.array_equal(csim.run(q, thr.max_planes()), Emulator(net.intmodel).run(q))


def test_cost_report_counts_the_threshold_rom(net):
    from flipq.hls.cost import hls_report

    plain, thr = net[0].intmodel, net[1]
    with_thr, without = hls_report(thr), hls_report(plain)
    plan = plan_hardware(thr)
    for lay, hw in zip(with_thr["layers"], plan.layers):
        assert lay["threshold_storage_bits"] == hw.n_out * hw.n_thresholds * hw.thr_bits
    assert all(lay["threshold_storage_bits"] == 0 for lay in without["layers"])
    assert with_thr["totals"]["threshold_storage_bits"] == sum(lay["threshold_storage_bits"]
                                                              for lay in with_thr["layers"])
    assert with_thr["totals"]["lut"] > without["totals"]["lut"]


def test_threshold_model_through_the_board_wrapper(net, tmp_path):
    """The board wrapper (flipq_top) compiles the same firmware: thresholds and all."""
    from flipq.boards import load_board
    from flipq.hls.bitserial import build_bitserial
    from flipq.host.packing import unpack
    from flipq.overlays.metadata import accel_meta_for
    from flipq.overlays.wrapper import compile_wrapper, generate_wrapper, simulate_wrapper

    net, thr = net
    build = build_bitserial(thr, net.prepared, tmp_path / "hls", compile=False)
    meta = accel_meta_for(thr, load_board("pynq-z2"))
    lib = compile_wrapper(generate_wrapper(meta, build.project_dir, tmp_path / "overlay").parent, build.project_dir)
    q = random_inputs(thr, ROWS, 4)
    for planes in (1, 2, meta.max_planes):
        words, _ = simulate_wrapper(lib, meta, q, planes)
        got = unpack(words, meta.output.n_elems, meta.output.packing).reshape(ROWS, -1)
        want = Emulator(thr, planes=planes).run(q).reshape(ROWS, -1)
        assert np.array_equal(got, want), f"planes={planes}: the board wrapper differs from the emulator"


def test_threshold_without_a_quant_in_the_graph_is_refused_by_name(tmp_path):
    """The kernel writes a threshold step's count as raw bits of the Quant hls4ml merged;
    with no Quant after the layer in the QONNX graph the build says so, naming the layer."""
    from flipq.hls.bitserial import BitSerialError, build_bitserial
    from flipq.host.intmodel import QuantSpec

    arch = dict(ARCH, convs=[], in_shape=(6,), dense=[{"n": 3, "wbits": 3, "act": None}])
    net = random_signed_net(tmp_path, 2, 0, arch)
    im = net.intmodel
    assert [layer.op for layer in im.layers] == ["dense"]
    spec = QuantSpec(2, True, False, 0)
    step = IntLayer("threshold", "thr", {"quant": spec.to_dict()}, thresholds=np.tile([-1, 0, 1], (3, 1)))
    thr = replace(im, layers=[*im.layers, step], output_exp=0)
    with pytest.raises(BitSerialError, match=f"layer '{im.layers[0].name}': the integer model thresholds its "
                                             "accumulator, but hls4ml merged no quantizer"):
        build_bitserial(thr, net.prepared, tmp_path / "hls", compile=False)
