"""Depthwise and grouped convolutions (issue 22): held as the ordinary conv with block-diagonal
weights (flipq.hls.lower.ungroup_weights) -- exact torch = QONNX = emulator = C-sim = RTL twin at
every planes. A depthwise conv (groups = channels) runs on a vector-vector unit: PE channels a
step, one lane each, only its own channel's rows scheduled (flipq.hls.hwplan.LayerHw.depthwise);
other grouped convs keep the block-diagonal MVAU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_models import torch_outputs  # noqa: E402

torch = pytest.importorskip("torch")
qnn = pytest.importorskip("brevitas.nn")

from test_user_constructs import _export, _input_quant, _linear, _quants, _relu  # noqa: E402


def _qconv(ci, co, k, *, groups=1, stride=1, padding=0, bits=4, bias=False):
    wq, _, _ = _quants()
    return qnn.QuantConv2d(ci, co, k, stride=stride, padding=padding, groups=groups, bias=bias, weight_quant=wq,
                           weight_bit_width=bits)


class Separable(torch.nn.Module):
    """MobileNetV1's block: a stem conv, then depthwise 3x3 (stride ``stride``, depth multiplier
    ``mult``) -> BatchNorm -> ReLU quantizer -> pointwise 1x1 -> BatchNorm -> ReLU quantizer, a
    dense head."""

    def __init__(self, stride=1, mult=1, groups=None):
        super().__init__()
        c = 8
        self.inq, self.stem, self.r0 = _input_quant(), _qconv(3, c, 3, padding=1), _relu()
        self.dw = _qconv(c, c * mult, 3, groups=groups or c, stride=stride, padding=1, bits=6)
        self.bn1, self.r1 = torch.nn.BatchNorm2d(c * mult), _relu()
        self.pw, self.bn2, self.r2 = _qconv(c * mult, 12, 1), torch.nn.BatchNorm2d(12), _relu()
        side = 8 // stride
        self.fc = _linear(12 * side * side, 10)
        for bn in (self.bn1, self.bn2):
            torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
            torch.nn.init.uniform_(bn.bias, -0.2, 0.2)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        x = self.r0(self.stem(self.inq(x)))
        x = self.r1(self.bn1(self.dw(x)))
        return self.fc(torch.flatten(self.r2(self.bn2(self.pw(x))), 1))


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("stride, mult, groups", [(1, 1, None), (2, 2, None), (1, 1, 2)])
def test_depthwise_and_grouped_convs_are_exact_through_every_stage(stride, mult, groups, io_type, tmp_path):
    from flipq.hls.verify import lower_model, verify_model

    if io_type == "io_parallel" and (stride, mult, groups) != (1, 1, None):
        pytest.skip("io_parallel: the plain depthwise block covers it")
    torch.manual_seed(4)
    net = Separable(stride, mult, groups)
    raw = _export(net, (3, 8, 8), tmp_path / "model.onnx")
    assert any(a.name == "group" and a.i > 1 for n in raw.graph.node if n.op_type == "Conv" for a in n.attribute)
    intmodel = lower_model(raw)[0]
    dw = next(layer for layer in intmodel.layers if layer.attrs.get("groups"))
    assert dw.attrs["groups"] == (groups or 8)
    # (the RTL twin runs the depthwise unit in test_depthwise_vector_unit_is_exact_at_every_planes_and_folding)
    verdict = verify_model(raw, tmp_path / "work", rows=24, qonnx_rows=24, io_type=io_type,
                           reference=lambda im, q: torch_outputs(net, im, q))
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert "torch=emulator" in verdict.stages
    assert sum(k.startswith("csim=emulator") for k in verdict.stages) == intmodel.max_planes()


def test_ungrouped_weights_are_block_diagonal():
    from flipq.hls.lower import ungroup_weights

    rng = np.random.default_rng(0)
    w = rng.integers(1, 8, (6, 3, 3, 2))  # O=6, groups=3: 2 outputs and 2 inputs per group
    full = ungroup_weights(w, 3)
    assert full.shape == (6, 3, 3, 6)
    for o in range(6):
        g = o // 2
        np.testing.assert_array_equal(full[o, :, :, 2 * g:2 * g + 2], w[o])
        assert not np.delete(full[o], [2 * g, 2 * g + 1], axis=-1).any()


def _dw_model(tmp_path, stride=1):
    from flipq.hls.verify import lower_model

    torch.manual_seed(7)
    net = Separable(stride)
    raw = _export(net, (3, 8, 8), tmp_path / "model.onnx")
    return net, raw, lower_model(raw)[0]


@pytest.mark.parametrize("pe", [8])
def test_depthwise_vector_unit_is_exact_at_every_planes_and_folding(pe, tmp_path):
    """The depthwise layer at PE = SIMD = 8 (all channels a step; PE 1 above, PE 4 in the lane-loop
    test): torch = QONNX = emulator = C-sim at every planes, the C-sim's cycle counters = the
    model, and the RTL twin (DW=1, the same schedule) in Verilator under gaps and stalls."""
    from flipq.hls.verify import verify_model

    net, raw, intmodel = _dw_model(tmp_path)
    dw = next(layer.name for layer in intmodel.layers if layer.attrs.get("groups"))
    verdict = verify_model(raw, tmp_path / "work", rows=16, qonnx_rows=16, io_type="io_stream", pe={dw: pe},
                           rtl=pe == 8, reference=lambda im, q: torch_outputs(net, im, q))
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert sum(k.startswith("csim cycles=model") for k in verdict.stages) == intmodel.max_planes()
    assert sum(k.startswith("csim=emulator") for k in verdict.stages) == intmodel.max_planes()
    if pe == 8:
        assert any(k.startswith("rtl=emulator") for k in verdict.stages)


def test_depthwise_schedule_runs_only_its_own_channels(tmp_path):
    """Per channel block the schedule holds one row per kernel position and nonzero plane (the
    rows of other channels are zero and absent): channels/PE x 9 x planes steps a pixel at most,
    against the block-diagonal MVAU's channels/PE x (9 x channels / SIMD) x planes; PE's ROM word
    is its own lane's bit; SIMD must equal PE."""
    from flipq.hls.cost import hw_cost
    from flipq.hls.fold import fold_layer
    from flipq.hls.hwplan import HardwarePlanError, plan_hardware
    from flipq.hls.planes import pack_layer

    _net, _raw, intmodel = _dw_model(tmp_path)
    layer = next(lay for lay in intmodel.layers if lay.attrs.get("groups"))
    w_kn = np.asarray(layer.weight, dtype=np.int64).reshape(-1, 8)
    bits = int(layer.attrs["weight_bits"])
    for pe in (1, 2, 4, 8):
        hw = plan_hardware(intmodel, pe={layer.name: pe}).layer(layer.name)
        assert hw.depthwise and hw.simd == pe and hw.fold.n_rows == 9 * 8 // pe
        cost = hw_cost(hw, None)
        assert cost["weight_storage_bits"] == hw.fold.rom_depth * pe  # one bit a PE a step
        assert cost["memories"]["weight_rom"] == [pe, hw.fold.rom_depth, 1]
        f = hw.fold
        for b in range(8 // pe):
            entries = range(f.blk_start[b], f.blk_start[b] + f.blk_len[b][0])
            rows = {int(f.row0[e]) for e in entries}
            assert rows <= {pos * (8 // pe) + b for pos in range(9)}
            for e in entries:  # every PE's word has at most its own lane's bit
                words = f.rom[:, f.addr[e]]
                assert all(int(w) & ~(1 << p) == 0 for p, w in enumerate(words))
            # a (position, plane) is scheduled iff some channel of the block has that bit
            want = {(pos, p) for pos in range(9) for p in range(bits)
                    if any((int(w_kn[pos * 8 + c, c]) >> p) & 1 for c in range(b * pe, (b + 1) * pe))}
            assert {((int(f.row0[e]) - b) // (8 // pe), int(f.plane[e])) for e in entries} == want
        dense = fold_layer(pack_layer(layer.weight, bits, 0).mask, bits, 72, 0, pe, pe, w_kn)
        assert f.steps(0) <= 8 // pe * 9 * bits
        assert f.steps(0) < dense.steps(0) if pe < 8 else f.steps(0) == dense.steps(0)  # one block: the same rows
    with pytest.raises(HardwarePlanError, match=f"depthwise layer '{layer.name}': simd=4 must equal pe=2"):
        plan_hardware(intmodel, pe={layer.name: 2}, simd={layer.name: 4})
    with pytest.raises(HardwarePlanError, match="pe=3 must divide its 8 channels"):
        plan_hardware(intmodel, pe={layer.name: 3})
    # an edited integer model: a weight off the diagonal would be read by no PE -- refused
    layer.weight[0, 1, 2, 5] = 1
    with pytest.raises(HardwarePlanError, match=f"depthwise layer '{layer.name}' .groups=8. has weight 1 at kernel "
                                                r"\(0, 1\) from input channel 2 to output channel 5"):
        plan_hardware(intmodel)
    layer.weight[0, 1, 2, 5] = 0
    layer.attrs["groups"] = "8"
    with pytest.raises(HardwarePlanError, match="groups='8' must be an int"):
        plan_hardware(intmodel)


def test_depthwise_lane_loop_build_equals_the_popcount_build(tmp_path):
    """The C-sim's popcount path and the kernel's own lane code (FLIPQ_CSIM_LANES: PE p reads
    lane p, a 1-bit ROM word) agree at every planes; the generated ROM is one bit a word."""
    from flipq.hls.bitserial import build_bitserial, compile_project
    from flipq.hls.verify import lower_model
    from flipq.host.csim import CsimBackend
    from flipq.host.emulator import Emulator

    _net, raw, intmodel = _dw_model(tmp_path)
    dw = next(layer.name for layer in intmodel.layers if layer.attrs.get("groups"))
    intmodel, prepared, plan = lower_model(raw, pe={dw: 4})
    build = build_bitserial(intmodel, prepared, tmp_path / "b", io_type="io_stream", plan=plan)
    params = (build.project_dir / "firmware" / "parameters.h").read_text()
    assert "static const bool depthwise = true;" in params
    assert "flipq::table_word<1, false>::type rom_word_t;" in params
    lanes = compile_project(build.project_dir, lib_name="liblanes.so", defines=("FLIPQ_CSIM_LANES",))
    rng = np.random.default_rng(1)
    q = intmodel.input_quant
    x = rng.integers(q.qmin, q.qmax + 1, (6,) + tuple(intmodel.input_shape))
    with CsimBackend(lanes, build.meta) as slow, CsimBackend(build.lib_path, build.meta) as fast:
        for planes in range(1, intmodel.max_planes() + 1):
            want = Emulator(intmodel, planes=planes).run(x)
            assert np.array_equal(slow.run(x, planes), want), planes
            assert np.array_equal(fast.run(x, planes), want), planes


def test_folding_unfolds_a_depthwise_layer_with_simd_equal_pe(tmp_path):
    from flipq.boards import load_board
    from flipq.hls.folding import fold_for_board

    _net, _raw, intmodel = _dw_model(tmp_path)
    dw = next(layer.name for layer in intmodel.layers if layer.attrs.get("groups"))
    for target in (None, 2000.0):
        res = fold_for_board(intmodel, load_board("pynq-z2"), target_fps=target)
        assert res.simd[dw] == res.pe[dw] and 8 % res.pe[dw] == 0


@pytest.mark.skipif(not __import__("flipq.hls.yosys", fromlist=["available"]).available(),
                    reason="Yosys not installed (apt-get install yosys)")
def test_depthwise_unit_in_yosys_model_and_saving(tmp_path):
    """The depthwise layer's flipq_mvau at PE = SIMD = 8 mapped by Yosys (synth_xilinx, xc7):
    the resource model within 25 % of its LUTs, and the vector-vector unit (DW=1) smaller than
    the same schedule on the block-diagonal datapath (DW=0: SIMD lanes and an adder tree a PE)."""
    from flipq.hls import yosys
    from flipq.hls.hwplan import plan_hardware
    from flipq.hls.rtlmvau import mvau_instance
    from flipq.hls.rtlresources import stage_resources
    from flipq.hls.rtltwin import Stage
    from flipq.hls.verilator import RTL_DIR

    _net, _raw, intmodel = _dw_model(tmp_path)
    dw = next(layer.name for layer in intmodel.layers if layer.attrs.get("groups"))
    hw = plan_hardware(intmodel, pe={dw: 8}).layer(dw)
    got = {}
    for flag in (1, 0):
        folder = tmp_path / f"dw{flag}"
        folder.mkdir()
        params = mvau_instance(hw, folder, "dw")
        assert params["DW"] == 1
        params["DW"] = flag
        data = sorted(folder.glob("dw_*.hex"))
        got[flag] = yosys.synthesize([RTL_DIR / "flipq_mvau.v"], "flipq_mvau", folder / "y", params=params,
                                     data_files=data, timeout_s=300)
        if flag:
            out_w = params["OUT_W"]
            model = stage_resources(Stage("flipq_mvau", params, hw.inp.bits * hw.simd, hw.pe * out_w,
                                          has_planes=True, hw=hw), out_w=out_w)
            assert abs(model["lut"] - got[1]["lut_total"]) <= 0.25 * got[1]["lut_total"], (model, got[1])
    assert got[1]["lut_total"] < got[0]["lut_total"], (got[1]["lut_total"], got[0]["lut_total"])
