"""Residual connections (issue 22): the integer model is a graph whose ``add`` layer sums two
tensors on the finer of their power-of-two grids. Networks written in Brevitas and exported with
``export_qonnx`` are exact torch = QONNX = emulator = C-sim at every ``planes`` (io_parallel and
io_stream: hls4ml's stream duplicator and merge carry the branch); what cannot be exact is refused
naming the add; the RTL twin, a chain, refuses graphs by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_models import torch_outputs  # noqa: E402

torch = pytest.importorskip("torch")
qnn = pytest.importorskip("brevitas.nn")

from test_user_constructs import Residual, _conv, _export, _input_quant, _linear, _quants, _relu  # noqa: E402


def _signed_q(bits=8, quant_tensor=True):
    _, _, sq = _quants()
    return qnn.QuantIdentity(act_quant=sq, bit_width=bits, return_quant_tensor=quant_tensor)


class Projection(torch.nn.Module):
    """A downsampling block: the branch a stride-2 conv then a conv, the skip a stride-2 1x1
    conv quantized on another grid (8-bit signed against the branch's 4-bit unsigned), the sum
    through a ReLU quantizer; the head a dense layer."""

    def __init__(self):
        super().__init__()
        wq, _, _ = _quants()
        self.inq, self.stem, self.r0 = _input_quant(), _conv(3, 8), _relu()
        self.c1, self.r1 = _conv(8, 16, stride=2), _relu()
        self.c2, self.r2 = _conv(16, 16), _relu()
        self.proj = qnn.QuantConv2d(8, 16, 1, stride=2, bias=False, weight_quant=wq, weight_bit_width=3)
        self.pq = _signed_q(8, quant_tensor=False)  # Brevitas adds quant tensors of one scale only
        self.out_q, self.fc = _relu(5), _linear(16 * 16, 10)

    def forward(self, x):
        x = self.r0(self.stem(self.inq(x)))
        y = self.r2(self.c2(self.r1(self.c1(x)))) + self.pq(self.proj(x))
        return self.fc(torch.flatten(self.out_q(y), 1))


class AccumulatorSum(torch.nn.Module):
    """A conv's accumulator (no quantizer of its own) summed with the block's input, then a
    signed quantizer without ReLU, then a second block on its output."""

    def __init__(self):
        super().__init__()
        # plain tensors where Brevitas would refuse to add quant tensors of different scales
        self.inq, self.stem, self.r0 = _input_quant(), _conv(3, 8), _relu(quant_tensor=False)
        self.c1, self.q1 = _conv(8, 8), _signed_q(6, quant_tensor=False)
        self.c2, self.r2 = _conv(8, 8), _relu()
        self.out_q, self.fc = _relu(4), _linear(8 * 64, 10)

    def forward(self, x):
        x = self.r0(self.stem(self.inq(x)))
        x = self.q1(self.c1(x) + x)
        return self.fc(torch.flatten(self.out_q(self.r2(self.c2(x)) + x), 1))


class TinyResNet(torch.nn.Module):
    """Two residual stages of conv-BN-ReLU blocks (BatchNorm folds into thresholds), a global
    average pool and a dense head: ResNet-8's shape at a small size."""

    def __init__(self):
        super().__init__()
        self.inq, self.stem, self.bn0, self.r0 = _input_quant(), _conv(3, 8), torch.nn.BatchNorm2d(8), _relu()
        self.c1, self.bn1, self.r1 = _conv(8, 8), torch.nn.BatchNorm2d(8), _relu()
        self.c2, self.bn2, self.r2 = _conv(8, 8), torch.nn.BatchNorm2d(8), _relu()
        self.a1 = _relu()
        self.c3, self.bn3, self.r3 = _conv(8, 8), torch.nn.BatchNorm2d(8), _relu()
        self.a2 = _relu()
        self.pool, self.pq, self.fc = torch.nn.AdaptiveAvgPool2d(1), _relu(), _linear(8, 10)
        for bn in (self.bn0, self.bn1, self.bn2, self.bn3):
            torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
            torch.nn.init.uniform_(bn.bias, -0.2, 0.2)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        x = self.r0(self.bn0(self.stem(self.inq(x))))
        x = self.a1(self.r2(self.bn2(self.c2(self.r1(self.bn1(self.c1(x)))))) + x)
        x = self.a2(self.r3(self.bn3(self.c3(x))) + x)
        return self.fc(torch.flatten(self.pq(self.pool(x)), 1))


NETS = {"identity": lambda: Residual(float_scale=False), "projection": Projection,
        "accumulator": AccumulatorSum, "tiny_resnet": TinyResNet}


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("name", list(NETS))
def test_residual_networks_are_exact_through_every_stage(name, io_type, tmp_path):
    from flipq.hls.verify import lower_model, verify_model
    from flipq.host.emulator import Emulator

    if (io_type == "io_stream") != (name in ("projection", "tiny_resnet")):
        pytest.skip("one io type a net (CI time): io_stream for the projection and ResNet nets (the stream "
                    "duplicator), io_parallel for the others")
    torch.manual_seed(3)
    net = NETS[name]()
    raw = _export(net, (3, 8, 8), tmp_path / "model.onnx")
    assert sum(n.op_type == "Add" and not any(i.startswith(("val_", "bias")) for i in n.input)
               for n in raw.graph.node) >= 1
    intmodel = lower_model(raw)[0]
    assert not intmodel.is_chain and any(layer.op == "add" for layer in intmodel.layers)
    if name == "projection":  # 8-bit signed skip on another grid than the 4-bit branch: a shift
        add = next(layer for layer in intmodel.layers if layer.op == "add")
        assert len(set(add.attrs["exps"])) == 2
    q = np.random.default_rng(0).integers(intmodel.input_quant.qmin, intmodel.input_quant.qmax + 1,
                                          (32, *intmodel.input_shape))
    for planes in (None, 1, 2):
        np.testing.assert_array_equal(Emulator(intmodel, planes=planes).run(q),
                                      Emulator(intmodel, planes=planes, reference=True).run(q))
    verdict = verify_model(raw, tmp_path / "work", rows=24, qonnx_rows=24, io_type=io_type,
                           reference=lambda im, qq: torch_outputs(net, im, qq))
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert "torch=emulator" in verdict.stages
    planes = [k for k in verdict.stages if k.startswith("csim=emulator")]
    assert len(planes) == intmodel.max_planes(), verdict.stages


def test_the_hardware_plan_sizes_a_layer_after_an_add_from_the_sum(tmp_path):
    """The conv after an add reads the sum's range (both operands together), not either
    operand's: its accumulator register is sized from it, and C-sim = emulator on inputs that
    reach the extremes."""
    from flipq.hls.hwplan import plan_hardware
    from flipq.hls.verify import lower_model

    torch.manual_seed(3)
    intmodel = lower_model(_export(AccumulatorSum(), (3, 8, 8), tmp_path / "m.onnx"))[0]
    plan = plan_hardware(intmodel)
    adds = [i for i, layer in enumerate(intmodel.layers) if layer.op == "add"]
    assert len(adds) == 2
    first_add = adds[0]
    a, b = intmodel.inputs_of(first_add)
    # the first add sums conv c1's accumulator (exp in + w) and the block input (4-bit unsigned)
    conv_hw = plan.layer(intmodel.layers[a].name)
    assert conv_hw.out_hi > 15 and intmodel.layers[b].op == "requant"


def test_an_add_of_float_scaled_operands_is_refused_naming_it(tmp_path):
    from brevitas.quant import Uint8ActPerTensorFloat

    from flipq.hls.verify import is_flipq_refusal, lower_model

    class FloatSkip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inq, self.stem = _input_quant(), _conv(3, 8)
            self.r0 = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=False)
            self.c1, self.r1, self.out_q, self.fc = _conv(8, 8), _relu(), _relu(), _linear(8 * 64, 10)

        def forward(self, x):
            x = self.r0(self.stem(self.inq(x)))
            return self.fc(torch.flatten(self.out_q(self.r1(self.c1(x)) + x), 1))

    with pytest.raises(ValueError) as info:
        lower_model(_export(FloatSkip(), (3, 8, 8), tmp_path / "m.onnx"))
    text = str(info.value)
    assert is_flipq_refusal(info.value), text
    assert "residual add" in text and "float scale" in text and "(op type Add)" in text


def test_a_float_scaled_quantizer_after_the_add_is_refused_naming_that_quantizer(tmp_path):
    from flipq.hls.verify import is_flipq_refusal, lower_model

    with pytest.raises(ValueError) as info:
        lower_model(_export(Residual(float_scale=True), (3, 8, 8), tmp_path / "m.onnx"))
    text = str(info.value)
    assert is_flipq_refusal(info.value), text
    assert "(op type Quant)" in text and "power of two" in text and "s1.add_q" in text


@pytest.mark.parametrize("net", ["projection"])  # (identity too when run by hand: CI time)
def test_the_rtl_twin_runs_a_residual_graph_exactly_under_back_pressure(net, tmp_path):
    """The twin's graph (a fork for the block input, the skip FIFO as deep as the map, the
    flipq_add join) simulated by Verilator with random input gaps and output stalls equals the
    emulator at every planes: the fork never deadlocks and the add aligns the two grids."""
    from flipq.hls.rtltwin import generate_rtl
    from flipq.hls.verify import lower_model, verify_model

    torch.manual_seed(3)
    model = Residual(float_scale=False) if net == "identity" else Projection()
    raw = _export(model, (3, 8, 8), tmp_path / "m.onnx")
    intmodel, _, plan = lower_model(raw)
    design = generate_rtl(intmodel, plan, tmp_path / "rtl")
    top = (tmp_path / "rtl" / "flipq_accel.v").read_text()
    assert "flipq_fork" in top and any(lay.kind == "add" for lay in design.layers)
    add = next(lay for lay in design.layers if lay.kind == "add")
    assert len(add.sources) == 2 and "flipq_add" in (tmp_path / "rtl" / f"{add.module}.v").read_text()
    verdict = verify_model(raw, tmp_path / "work", rows=12, qonnx_rows=4, csim=False, rtl=True)
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert sum(k.startswith("rtl=emulator") for k in verdict.stages) == intmodel.max_planes()
    assert not verdict.notes


def test_a_deadlocked_graph_is_reported_in_bounded_time(tmp_path):
    """The skip FIFO cut to two beats (the bug the first graph run had): the fork stalls, nothing
    moves, and the run says so after the idle bound instead of simulating on."""
    import re

    from flipq.hls.rtltwin import build_rtl_library, generate_rtl
    from flipq.hls.verify import lower_model
    from flipq.host.rtl import RtlBackend, RtlError

    torch.manual_seed(3)
    intmodel, _, plan = lower_model(_export(Residual(float_scale=False), (3, 8, 8), tmp_path / "m.onnx"))
    design = generate_rtl(intmodel, plan, tmp_path / "rtl")
    add = next(lay for lay in design.layers if lay.kind == "add")
    path = tmp_path / "rtl" / f"{add.module}.v"
    text, n = re.subn(r"\.DEPTH\(\d+\)", ".DEPTH(2)", path.read_text())
    assert n == 1  # the skip operand's FIFO, the only one in the wrapper
    path.write_text(text)
    build_rtl_library(design, quick=True)
    backend = RtlBackend(tmp_path / "rtl", idle_cycles=20_000)
    q = np.zeros((2, *intmodel.input_shape), dtype=np.int64)
    with pytest.raises(RtlError, match="stopped moving words .*20,000 cycles with no word in or out"):
        backend.run(q, None)


def test_the_rtl_twin_refuses_a_join_of_three_by_name():
    from flipq.hls.rtltwin import RtlError, check_rtl_chain
    from flipq.host.intmodel import IntLayer

    class Model:  # the one thing the check reads
        layers = [IntLayer("concat", "cat3", {"inputs": [0, 1, 2]})]

    with pytest.raises(RtlError, match="concat layer 'cat3' joins 3 tensors; the RTL join takes two"):
        check_rtl_chain(Model())


def test_the_cost_model_prices_the_add_and_a_skip_fifo_as_deep_as_the_map(tmp_path):
    from flipq.hls.cost import hls_report
    from flipq.hls.rtltwin import plan_rtl
    from flipq.hls.verify import lower_model

    intmodel, _, plan = lower_model(_export(Residual(float_scale=False), (3, 8, 8), tmp_path / "m.onnx"))
    rp = plan_rtl(intmodel, plan)
    add = next(lay for lay in rp.layers if lay.kind == "add")
    fifo = next(st for st in add.stages if st.module == "flipq_fifo")
    # the whole 8x8x8 map of 4-bit values: the branch can take all of it before the add reads any
    assert fifo.params["DEPTH"] * fifo.params["W"] == 8 * 8 * 8 * 4
    report = hls_report(intmodel, plan=plan, io_type="io_stream")
    priced = next(lay for lay in report["other"] if lay["kind"] == "add")
    assert priced["lut"] > 0 and priced["carry4"] > 0


# -- the graph in the integer model's files -----------------------------------------------

def _saved(tmp_path, edit):
    from flipq.hls.verify import lower_model

    intmodel = lower_model(_export(Residual(float_scale=False), (3, 8, 8), tmp_path / "m.onnx"))[0]
    folder = intmodel.save(tmp_path / "im")
    meta = json.loads((folder / "intmodel.json").read_text())
    edit(meta)
    (folder / "intmodel.json").write_text(json.dumps(meta))
    return intmodel, folder


def test_a_graph_model_round_trips_as_format_2(tmp_path):
    from flipq.host.emulator import Emulator
    from flipq.host.intmodel import IntModel

    intmodel, folder = _saved(tmp_path, lambda meta: None)
    assert json.loads((folder / "intmodel.json").read_text())["format"] == 2
    back = IntModel.load(folder)
    assert back.digest() == intmodel.digest() and not back.is_chain
    q = np.random.default_rng(1).integers(-8, 8, (4, *intmodel.input_shape))
    np.testing.assert_array_equal(Emulator(back).run(q), Emulator(intmodel).run(q))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format=3), "format 3, this flipq reads 1 and 2"),
    (lambda m: m.update(format=1), "attrs.inputs in a format-1 file"),
    (lambda m: next(e for e in m["layers"] if e["op"] == "add")["attrs"].update(inputs=[1, 7]),
     "expected 2 index"),
    (lambda m: next(e for e in m["layers"] if e["op"] == "add")["attrs"].update(inputs=[1]), "expected 2 index"),
    (lambda m: next(e for e in m["layers"] if e["op"] == "add")["attrs"].pop("inputs"), "names no inputs"),
    (lambda m: next(e for e in m["layers"] if e["op"] == "add")["attrs"].update(inputs=[0, 2]),
     "is read by no later layer"),
])
def test_an_edited_graph_is_refused_naming_the_field(tmp_path, edit, message):
    from flipq.host.intmodel import IntModel

    _, folder = _saved(tmp_path, edit)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        IntModel.load(folder)


def test_a_format_1_chain_still_loads(tmp_path):
    from flipq.host.intmodel import IntModel

    from intmodels import random_intmodel

    model = random_intmodel(np.random.default_rng(5))[0]
    assert model.is_chain
    folder = model.save(tmp_path / "chain")
    meta = json.loads((folder / "intmodel.json").read_text())
    meta["format"] = 1
    (folder / "intmodel.json").write_text(json.dumps(meta))
    assert IntModel.load(folder).digest() == model.digest()


def test_a_residual_model_runs_through_hls_the_board_wrapper_and_the_pynq_driver(tmp_path, monkeypatch):
    """`flipq hls` (io_stream, folded for the PYNQ-Z2), `flipq overlay build --dry-run --simulate`,
    then the real pynq driver on the simulated device whose PL is the board wrapper around the
    hls4ml project compiled with g++: equal to the emulator on every row at every planes, as the
    C-sim backend is."""
    import subprocess

    pytest.importorskip("pynq")
    from flipq.host import Accelerator
    from flipq.overlays import pynq_sim

    torch.manual_seed(3)
    _export(Projection(), (3, 8, 8), tmp_path / "model.onnx")
    build = tmp_path / "build"
    for cmd in (["hls", str(tmp_path / "model.onnx"), "--out", str(build), "--io-type", "io_stream",
                 "--board", "pynq-z2", "--no-progress"],
                ["overlay", "build", str(build / "hls"), "--board", "pynq-z2", "--out", str(build / "overlay"),
                 "--dry-run", "--simulate"]):
        r = subprocess.run([sys.executable, "-m", "flipq", *cmd], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    x = np.random.default_rng(0).normal(size=(24, 3, 8, 8)).astype(np.float32)
    want = Accelerator.load(build / "hls", backend="emulator")
    with Accelerator.load(build / "hls", backend="csim") as csim:
        for planes in (None, 1, 2):
            want.set_planes(planes)
            csim.set_planes(planes)
            np.testing.assert_array_equal(csim.predict(x), want.predict(x))
    monkeypatch.setenv(pynq_sim.SIM_ENV, "1")
    try:
        assert pynq_sim.attach(build / "overlay") == "wrapper"
        with Accelerator.load(build / "overlay", backend="pynq") as acc:
            for planes in (None, 1, 3):
                acc.set_planes(planes)
                got = acc.verify(x)
                assert got["equal"] == got["total"] == len(x), got
    finally:
        pynq_sim.deactivate()
