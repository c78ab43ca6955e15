"""Concatenation on channels (issue 22): preparation moves the layout Transposes through the
``Concat`` (flipq.hls.concat), the integer model's ``concat`` layer joins tensors on the finest of
their grids. Exact torch = QONNX = emulator = C-sim at every planes on networks written in Brevitas
(fire modules, branches on different grids, a three-way join, one float grid, dense branches);
a join on another axis or of tensors on unrelated float grids is refused naming the node."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_models import torch_outputs  # noqa: E402

torch = pytest.importorskip("torch")
qnn = pytest.importorskip("brevitas.nn")

from test_grouped_conv import _qconv  # noqa: E402
from test_user_constructs import _export, _input_quant, _linear, _quants, _relu  # noqa: E402


def _signed(bits=8):
    _, _, sq = _quants()
    return qnn.QuantIdentity(act_quant=sq, bit_width=bits, return_quant_tensor=False)


class Fire(torch.nn.Module):
    """SqueezeNet's fire module: squeeze 1x1, expand 1x1 and expand 3x3 joined, then a conv
    reads the join (the Transpose after the Concat cancels against the conv's)."""

    def __init__(self):
        super().__init__()
        self.inq, self.stem, self.r0 = _input_quant(), _qconv(3, 8, 3, padding=1), _relu()
        self.sq, self.rs = _qconv(8, 4, 1), _relu()
        self.e1, self.r1 = _qconv(4, 6, 1), _relu(quant_tensor=False)
        self.e3, self.r3 = _qconv(4, 6, 3, padding=1), _relu(quant_tensor=False)
        self.c, self.rc, self.fc = _qconv(12, 4, 3, stride=2, padding=1), _relu(), _linear(4 * 16, 10)

    def forward(self, x):
        x = self.rs(self.sq(self.r0(self.stem(self.inq(x)))))
        x = torch.cat([self.r1(self.e1(x)), self.r3(self.e3(x))], 1)
        return self.fc(torch.flatten(self.rc(self.c(x)), 1))


class Grids(torch.nn.Module):
    """Three branches on three grids (4-bit unsigned, 8-bit signed, 6-bit signed) joined."""

    def __init__(self):
        super().__init__()
        self.inq, self.stem, self.r0 = _input_quant(), _qconv(3, 8, 3, padding=1), _relu()
        self.a, self.qa = _qconv(8, 4, 1), _relu(quant_tensor=False)
        self.b, self.qb = _qconv(8, 3, 3, padding=1), _signed(8)
        self.c, self.qc = _qconv(8, 2, 1), _signed(6)
        self.out_q, self.fc = _relu(), _linear(9 * 64, 10)

    def forward(self, x):
        x = self.r0(self.stem(self.inq(x)))
        x = torch.cat([self.qa(self.a(x)), self.qb(self.b(x)), self.qc(self.c(x))], 1)
        return self.fc(torch.flatten(self.out_q(x), 1))


class FloatGrid(torch.nn.Module):
    """Two conv-BN branches quantized by ONE float-scaled quantizer (thresholds on one grid),
    joined as they are."""

    def __init__(self):
        super().__init__()
        from brevitas.quant import Uint8ActPerTensorFloat

        self.inq, self.stem, self.r0 = _input_quant(), _qconv(3, 8, 3, padding=1), _relu()
        self.a, self.ba = _qconv(8, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
        self.b, self.bb = _qconv(8, 4, 1), torch.nn.BatchNorm2d(4)
        self.shared = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=False)
        self.fc = _linear(8 * 64, 10)

    def forward(self, x):
        x = self.r0(self.stem(self.inq(x)))
        return self.fc(torch.flatten(torch.cat([self.shared(self.ba(self.a(x))),
                                                 self.shared(self.bb(self.b(x)))], 1), 1))


class DenseBranches(torch.nn.Module):
    """An MLP whose hidden layer is two dense branches joined (2-D tensors, axis 1)."""

    def __init__(self):
        super().__init__()
        self.inq, self.a, self.b = _input_quant(), _linear(16, 6), _linear(16, 5)
        self.ra, self.rb = _relu(quant_tensor=False), _relu(quant_tensor=False)
        self.fc = _linear(11, 4)

    def forward(self, x):
        x = self.inq(x)
        return self.fc(torch.cat([self.ra(self.a(x)), self.rb(self.b(x))], 1))


NETS = {"fire": (Fire, (3, 8, 8)), "grids": (Grids, (3, 8, 8)), "float_grid": (FloatGrid, (3, 8, 8)),
        "dense": (DenseBranches, (16,))}


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("name", list(NETS))
def test_concatenations_are_exact_through_every_stage(name, io_type, tmp_path):
    from flipq.hls.verify import lower_model, verify_model

    if (io_type == "io_parallel") != (name == "dense"):
        pytest.skip("one io type a net (CI time): io_parallel for the dense branches, io_stream for the rest")
    torch.manual_seed(5)
    cls, shape = NETS[name]
    net = cls()
    if name == "float_grid":
        for bn in (net.ba, net.bb):
            torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
            bn.running_var.uniform_(0.5, 1.5)
    raw = _export(net, shape, tmp_path / "model.onnx")
    intmodel = lower_model(raw)[0]
    cats = [layer for layer in intmodel.layers if layer.op == "concat"]
    assert len(cats) == (2 if name == "grids" else 1)  # hls4ml joins two tensors a layer: a chain of two
    if name == "grids":
        assert len({e for cat in cats for e in cat.attrs["exps"]}) > 1
    rtl = name == "grids"  # the RTL twin's forks and two chained flipq_concat joins, under back-pressure
    verdict = verify_model(raw, tmp_path / "work", rows=24, qonnx_rows=24, io_type=io_type, rtl=rtl,
                           reference=lambda im, q: torch_outputs(net, im, q))
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert any(k.startswith("torch=emulator") for k in verdict.stages)
    assert sum(k.startswith("csim=emulator") for k in verdict.stages) == intmodel.max_planes()
    assert sum(k.startswith("rtl=emulator") for k in verdict.stages) == (intmodel.max_planes() if rtl else 0)


def test_a_join_on_another_axis_is_refused_naming_it(tmp_path):
    from flipq.hls.verify import is_flipq_refusal, lower_model

    class Rows(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inq, self.a, self.ra = _input_quant(), _qconv(3, 4, 1), _relu(quant_tensor=False)
            self.b, self.rb, self.fc = _qconv(3, 4, 1), _relu(quant_tensor=False), _linear(4 * 128, 10)

        def forward(self, x):
            x = self.inq(x)
            return self.fc(torch.flatten(torch.cat([self.ra(self.a(x)), self.rb(self.b(x))], 2), 1))

    with pytest.raises(ValueError) as info:
        lower_model(_export(Rows(), (3, 8, 8), tmp_path / "m.onnx"))
    assert is_flipq_refusal(info.value), str(info.value)
    assert "on axis 2" in str(info.value) and "channels (axis 1) only" in str(info.value)


def test_a_join_of_unrelated_float_grids_is_refused_naming_the_scales(tmp_path):
    from brevitas.quant import Uint8ActPerTensorFloat

    from flipq.hls.verify import is_flipq_refusal, lower_model

    class TwoFloats(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inq, self.a, self.b = _input_quant(), _qconv(3, 4, 1), _qconv(3, 4, 3, padding=1)
            self.qa = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=False)
            self.qb = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=False)
            self.fc = _linear(8 * 64, 10)

        def forward(self, x):
            x = self.inq(x)
            return self.fc(torch.flatten(torch.cat([self.qa(self.a(x)), self.qb(self.b(x))], 1), 1))

    net = TwoFloats()
    with torch.no_grad():  # two different float scales
        net.qa(torch.rand(4, 4, 8, 8) * 3)
    with pytest.raises(ValueError) as info:
        lower_model(_export(net, (3, 8, 8), tmp_path / "m.onnx"))
    assert is_flipq_refusal(info.value), str(info.value)
    assert "a concatenation of tensors with the scales" in str(info.value)


def test_a_join_keeps_its_whole_range_in_the_csim(tmp_path):
    """Found by the fuzzer (seed 335 of the whole vocabulary, tests/data/fuzz_join_sat_sym.json):
    hls4ml gave two concatenations a narrow quantizer's saturation mode (AP_SAT_SYM), which clips
    the most negative value, and the C-sim differed from the emulator on 16 of 48 rows. The merge
    layers' result types now come from the plan's range of each join."""
    import json
    import re

    from fuzz_models import check_spec

    spec = json.loads((Path(__file__).parent / "data" / "fuzz_join_sat_sym.json").read_text())
    verdict = check_spec(spec, tmp_path, rows=48, qonnx_rows=8)
    assert verdict.status == "exact", (verdict.reason, verdict.first_bad)
    project = next(tmp_path.rglob("defines.h")).parent
    types = dict((name, t) for t, name in re.findall(r"typedef (.*) (\w+);", (project / "defines.h").read_text()))
    joins = re.findall(r"nnet::concatenate3d<\w+, \w+, (\w+), \w+>", (project / "myproject.cpp").read_text())
    assert len(joins) == 2 and not any("SAT" in types[t] for t in joins), [types[t] for t in joins]
