"""Every activation quantizer a Brevitas power-of-two model can hold, anywhere in the network:
signed or unsigned, narrow or not, 2..8 bits, with or without a ReLU before it, after a dense
layer or a conv, before or after a MaxPool, or none at the output. The C-sim (and the board
wrapper) must equal the emulator on every row at every ``planes``.

The first random-model test drew only ReLU + unsigned quantizers between layers; a signed
``QuantIdentity`` between two ``QuantLinear`` (which hls4ml folds into the layer before it)
made the C-sim and the board differ on every row, unseen.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: siblings by path
from test_bitserial import RandomNet, check_build, make_net, random_inputs  # noqa: E402
from test_wrapper import simulated_board  # noqa: E402

from flipq.hls.fold import pe_at_most
from flipq.host.emulator import Emulator  # noqa: E402

ROWS = 24


# ---------------------------------------------------------------------------------------
# The generator: a random architecture from the whole vocabulary
# ---------------------------------------------------------------------------------------
def random_act(rng) -> dict:
    """One activation quantizer: signed/unsigned, narrow (signed only: hls4ml cannot convert a
    narrow unsigned one), 2..8 bits, with or without a ReLU before it."""
    signed = bool(rng.integers(2))
    return {"signed": signed, "narrow": signed and bool(rng.integers(2)), "bits": int(rng.integers(2, 9)),
            "relu": bool(rng.integers(2))}


def random_arch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    convs = []
    for _ in range(int(rng.integers(0, 3))):
        k = int(rng.integers(1, 4))
        convs.append({"cout": int(rng.integers(1, 5)), "k": k, "stride": int(rng.integers(1, 3)),
                      "pad": int(rng.integers(0, k)), "wbits": int(rng.integers(2, 9)), "act": random_act(rng),
                      "pool": str(rng.choice(["none", "before_act", "after_act"]))})
    dense = [{"n": int(rng.integers(1, 10)), "wbits": int(rng.integers(2, 9)), "act": random_act(rng)}
             for _ in range(int(rng.integers(1, 3)))]
    # the output: a full quantizer (a QuantIdentity at the end), a bare ReLU, or the accumulator
    dense[-1]["act"] = {0: random_act(rng), 1: "relu", 2: None}[int(rng.integers(3))]
    shape = (int(rng.integers(1, 4)), int(rng.integers(4, 8)), int(rng.integers(4, 8)))
    h, w = shape[1:]
    for conv in convs:  # a kernel no larger than the padded feature map it slides over
        conv["k"] = min(conv["k"], min(h, w) + 2 * conv["pad"])
        conv["pad"] = min(conv["pad"], conv["k"] - 1)
        k, s, p = conv["k"], conv["stride"], conv["pad"]
        h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if conv["pool"] != "none" and h >= 2 and w >= 2:
            h, w = h // 2, w // 2
    return {"in_shape": shape if convs else (int(np.prod(shape)),), "in": random_act(rng), "convs": convs,
            "dense": dense}


def _quant_identity(act: dict):
    import brevitas.nn as qnn
    from brevitas.quant import Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    return qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint if act["signed"] else Uint8ActPerTensorFixedPoint,
                             bit_width=act["bits"], narrow_range=act["narrow"], return_quant_tensor=True)


def _act_mods(act) -> list:
    import torch.nn as nn

    if act is None:
        return []
    if act == "relu":
        return [nn.ReLU()]
    return ([nn.ReLU()] if act["relu"] else []) + [_quant_identity(act)]


def build_net(arch: dict, seed: int):
    import brevitas.nn as qnn
    import torch
    import torch.nn as nn
    from brevitas.quant import Int8WeightPerTensorFixedPoint

    torch.manual_seed(seed)
    mods = [_quant_identity(dict(arch["in"], relu=False))]
    fan_in = arch["in_shape"][0]
    if arch["convs"]:
        c, h, w = arch["in_shape"]
        for conv in arch["convs"]:
            k, s, p = conv["k"], conv["stride"], conv["pad"]
            mods.append(qnn.QuantConv2d(c, conv["cout"], k, stride=s, padding=p, bias=False,
                                        weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=conv["wbits"]))
            h, w, c = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, conv["cout"]
            act = _act_mods(conv["act"])
            pool = [nn.MaxPool2d(2)] if conv["pool"] != "none" and h >= 2 and w >= 2 else []
            if pool:
                h, w = h // 2, w // 2
            mods += pool + act if conv["pool"] == "before_act" else act + pool
        mods.append(nn.Flatten())
        fan_in = c * h * w
    for layer in arch["dense"]:
        mods.append(qnn.QuantLinear(fan_in, layer["n"], bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                    weight_bit_width=layer["wbits"]))
        mods += _act_mods(layer["act"])
        fan_in = layer["n"]
    return nn.Sequential(*mods).eval()


def fit_activation_scales(net: RandomNet, seed: int) -> RandomNet:
    """Move every activation quantizer's power-of-two scale to where the values reaching it
    live (times 1/2, 1 or 2), so rounding, saturation and the sign all matter; with Brevitas'
    initial scales random weights saturate nearly everything."""
    from flipq.hls.lower import lower_qonnx

    rng = np.random.default_rng(seed)
    prepared, im = net.prepared, net.intmodel
    groups = {lay.name: {k: lay.attrs[k] for k in ("group_size", "group_bits") if k in lay.attrs}
              for lay in im.mac_layers}
    q = random_inputs(im, 64, seed)
    for index, layer in enumerate(im.layers):
        if layer.op != "requant":
            continue
        exp = im.input_quant.exp  # the grid of the integers reaching this quantizer
        for lay in im.layers[:index]:
            exp = lay.requant.exp if lay.op == "requant" else exp + lay.attrs.get("w_exp", 0)
        values = Emulator(replace(im, layers=im.layers[:index])).run(q)
        spread = max(float(np.percentile(np.abs(values), 90)), 1.0) * 2.0 ** exp
        spec = layer.requant
        new_exp = round(math.log2(spread * float(rng.choice([0.5, 1.0, 2.0])) / max(spec.qmax, 1)))
        node = next(n for n in prepared.graph.node if n.name == layer.attrs["onnx_node"])
        prepared.set_initializer(node.input[1], np.asarray(2.0 ** new_exp, dtype=np.float32))
        im = lower_qonnx(prepared)
    for lay in im.mac_layers:
        lay.attrs.update(groups[lay.name])
    return RandomNet(prepared, im)


def random_signed_net(folder: Path, seed: int, group_size: int, arch: dict | None = None) -> RandomNet:
    arch = arch or random_arch(seed)
    return fit_activation_scales(make_net(folder, arch, seed, group_size, build=build_net), seed)


# ---------------------------------------------------------------------------------------
# Random models through the C-sim (each compiles: a handful, chosen to cover the vocabulary)
# ---------------------------------------------------------------------------------------
CASES = [  # (seed, io_type, group_size, pe); the seeds were picked so test_cases_cover_the_vocabulary holds
    (27, "io_parallel", 0, 1),  # MLP, a signed quantizer between the dense layers (the reported model)
    (9, "io_stream", 3, 2),  # signed input into a conv, signed act through MaxPool, narrow signed dense
    (17, "io_parallel", 8, 3),  # MaxPool on accumulators before a signed act that feeds a conv
    (7, "io_stream", 1, 1),  # signed act (no ReLU) into a conv; unsigned act without ReLU
    (39, "io_parallel", 70, 2),  # a bare ReLU at the output; MaxPool before unsigned ReLU acts
]


def _features(arch: dict) -> set:
    """What one architecture exercises (the coverage test below reads it)."""
    out = {("input", arch["in"]["signed"])}
    if arch["convs"]:
        out.add(("conv input", arch["in"]["signed"]))
    for i, conv in enumerate(arch["convs"]):
        act = conv["act"]
        out |= {("act", act["signed"], act["relu"]), ("narrow", act["narrow"]), ("pool", conv["pool"], act["signed"])}
        if i + 1 < len(arch["convs"]):
            out.add(("conv input", act["signed"]))
    for i, layer in enumerate(arch["dense"]):
        act = layer["act"]
        if isinstance(act, dict):
            out |= {("act", act["signed"], act["relu"]), ("narrow", act["narrow"])}
            if i + 1 == len(arch["dense"]):
                out.add(("output", "quant", act["signed"]))
            else:
                out.add(("dense between", act["signed"], act["relu"]))
        else:
            out.add(("output", act))
    return out


def test_cases_cover_the_vocabulary():
    seen = set().union(*(_features(random_arch(seed)) for seed, *_ in CASES))
    wanted = {("input", True), ("input", False), ("conv input", True), ("conv input", False),
              ("act", True, False), ("act", True, True), ("act", False, False), ("act", False, True),
              ("narrow", True), ("dense between", True, False), ("pool", "after_act", True),
              ("pool", "before_act", True), ("pool", "before_act", False),
              ("output", "quant", True), ("output", "relu"), ("output", None)}
    assert wanted <= seen, sorted(wanted - seen, key=str)
    assert {io for _, io, _, _ in CASES} == {"io_parallel", "io_stream"}


@pytest.mark.parametrize("seed, io_type, group_size, pe", CASES)
def test_random_signed_models_csim_equals_emulator(tmp_path, seed, io_type, group_size, pe):
    from flipq.hls.bitserial import build_bitserial

    net = random_signed_net(tmp_path, seed, group_size)
    pes = {lay.name: pe_at_most(lay.weight.shape[-1], pe) for lay in net.intmodel.mac_layers}
    build = build_bitserial(net.intmodel, net.prepared, tmp_path / "hls", io_type=io_type, pe=pes)
    check_build(build, net, seed)


# No quantizer between some layers: accumulators go on through MaxPool, a bare ReLU and into
# the next conv (hls4ml had typed that ReLU fixed<16,6> before the bit-serial replacement).
ACCUMULATORS = {
    "in_shape": (2, 6, 6), "in": {"signed": True, "narrow": True, "bits": 5, "relu": False},
    "convs": [{"cout": 3, "k": 3, "stride": 1, "pad": 1, "wbits": 4, "act": None, "pool": "after_act"},
              {"cout": 2, "k": 2, "stride": 1, "pad": 0, "wbits": 3, "act": "relu", "pool": "none"}],
    "dense": [{"n": 4, "wbits": 5, "act": {"signed": True, "narrow": False, "bits": 4, "relu": False}},
              {"n": 3, "wbits": 3, "act": None}]}


def test_accumulators_between_layers_csim_equals_emulator(tmp_path):
    from flipq.hls.bitserial import build_bitserial

    net = random_signed_net(tmp_path, 1, 3, ACCUMULATORS)
    assert [layer.op for layer in net.intmodel.layers[:4]] == ["conv", "maxpool", "conv", "relu"]
    build = build_bitserial(net.intmodel, net.prepared, tmp_path / "hls", io_type="io_stream",
                            pe={net.intmodel.mac_layers[0].name: 3})
    check_build(build, net, 1)


# ---------------------------------------------------------------------------------------
# The reported model: a signed 3-bit QuantIdentity between two power-of-two QuantLinear
# ---------------------------------------------------------------------------------------
def reported_net():
    import brevitas.nn as qnn
    import torch
    import torch.nn as nn
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    torch.manual_seed(0)
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=True),
        qnn.QuantLinear(8, 10, bias=False, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4),
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=3, return_quant_tensor=True),
        qnn.QuantLinear(10, 4, bias=False, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=5),
    ).eval()


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    import torch

    from flipq.hls.bitserial import build_bitserial
    from flipq.hls.lower import lower_qonnx
    from flipq.hls.prepare import load_qonnx, prepare_qonnx
    from flipq.quant.export import export_model

    folder = tmp_path_factory.mktemp("reported")
    net = reported_net()
    x = np.random.default_rng(0).uniform(-0.5, 1.5, size=(ROWS, 8)).astype(np.float32)
    x[0], x[1] = 0.0, 1.0  # the input quantizer's ends
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy().astype(np.float64)
    prepared = prepare_qonnx(load_qonnx(export_model(net, (8,), folder / "model.onnx")))
    intmodel = lower_qonnx(prepared)
    build = build_bitserial(intmodel, prepared, folder / "hls", compile=False)
    return x, y, prepared, intmodel, build


def test_reported_model_torch_qonnx_emulator_csim_agree(reported):
    from flipq.hls.bitserial import compile_project
    from flipq.host.csim import CsimBackend
    from flipq.quant.export import execute_qonnx

    x, y, prepared, intmodel, build = reported
    assert [layer.op for layer in intmodel.layers] == ["dense", "requant", "dense"]
    assert intmodel.layers[1].requant.signed
    emulator = Emulator(intmodel)
    assert np.array_equal(emulator.forward(x), y)
    assert np.array_equal(execute_qonnx(prepared, x).reshape(y.shape), y)
    q = emulator.quantize_input(x)
    lib = compile_project(build.project_dir)
    with CsimBackend(lib, build.meta) as csim:
        assert np.array_equal(csim.run(q, 8) * 2.0 ** intmodel.output_exp, y)
        for planes in range(1, 6):
            got, want = csim.run(q, planes), Emulator(intmodel, planes=planes).run(q)
            bad = np.flatnonzero(~(got == want).all(axis=1))
            assert bad.size == 0, f"planes={planes}: C-sim differs from the emulator on rows {bad.tolist()}"


@pytest.mark.parametrize("exp", [5, -9])
def test_quantizer_far_from_the_accumulator_grid(reported, tmp_path, exp):
    """The merged quantizer's grid far coarser than the accumulator (a right shift wider than
    the accumulator: everything rounds to 0 or +-1) or far finer (a left shift that saturates)."""
    import copy

    from qonnx.core.modelwrapper import ModelWrapper

    from flipq.hls.bitserial import build_bitserial
    from flipq.hls.lower import lower_qonnx

    x, _, prepared, _, _ = reported
    model = ModelWrapper(copy.deepcopy(prepared.model))
    node = next(n for n in model.graph.node if n.name == "Quant_3")  # the signed 3-bit QuantIdentity
    model.set_initializer(node.input[1], np.asarray(2.0 ** exp, dtype=np.float32))
    net = RandomNet(model, lower_qonnx(model))
    build = build_bitserial(net.intmodel, model, tmp_path / "hls")
    check_build(build, net)


def test_reported_model_requantizes_in_the_first_layer(reported):
    """hls4ml folded the signed 3-bit quantizer into MatMul_0: its config requantizes onto
    -4..3; MatMul_1 (the output accumulator) does not."""
    *_, build = reported
    params = (build.project_dir / "firmware" / "parameters.h").read_text()
    first, second = params[params.index("// MatMul_0: "):params.index("// MatMul_1: ")], \
        params[params.index("// MatMul_1: "):]
    assert "static const bool requant = true;" in first
    assert "static const int rq_min = -4;" in first and "static const int rq_max = 3;" in first
    assert "requant" not in second[:second.index("\n};")]


def test_reported_model_through_pynq_and_the_board_wrapper(reported, tmp_path, monkeypatch):
    """The real driver (PynqBackend, pynq's DMA code) over the simulated device whose PL is the
    compiled flipq_top around the bit-serial project."""
    pytest.importorskip("pynq")
    from flipq.boards import load_board
    from flipq.host.pynq_backend import PynqBackend
    from flipq.overlays.metadata import accel_meta_for
    from flipq.overlays.wrapper import compile_wrapper, generate_wrapper

    x, y, _, intmodel, build = reported
    meta = replace(accel_meta_for(intmodel, load_board("pynq-z2")), max_batch=16)
    folder = tmp_path / "overlay"
    lib = compile_wrapper(generate_wrapper(meta, build.project_dir, folder).parent, build.project_dir)
    with simulated_board(folder, meta, lib, monkeypatch):
        q = Emulator(intmodel).quantize_input(x)
        with PynqBackend(folder, meta, timeout_s=5) as backend:
            for planes in range(1, meta.max_planes + 1):
                got, want = backend.run(q, planes), Emulator(intmodel, planes=planes).run(q)
                bad = np.flatnonzero(~(got == want).all(axis=1))
                assert bad.size == 0, f"planes={planes}: the board differs from the emulator on rows {bad.tolist()}"
            assert np.array_equal(backend.run(q, meta.max_planes) * 2.0 ** intmodel.output_exp, y)


# ---------------------------------------------------------------------------------------
# A random signed model through the compiled board wrapper (flipq_top), every planes
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed, io_type, group_size", [(17, "io_parallel", 8)])  # signed narrow output, no ReLU
def test_random_signed_model_through_the_board_wrapper(tmp_path, seed, io_type, group_size):
    from flipq.boards import load_board
    from flipq.hls.bitserial import build_bitserial
    from flipq.host.packing import unpack
    from flipq.overlays.metadata import accel_meta_for
    from flipq.overlays.wrapper import compile_wrapper, generate_wrapper, simulate_wrapper

    net = random_signed_net(tmp_path, seed, group_size)
    im = net.intmodel
    build = build_bitserial(im, net.prepared, tmp_path / "hls", io_type=io_type, compile=False)
    meta = accel_meta_for(im, load_board("pynq-z2"))
    lib = compile_wrapper(generate_wrapper(meta, build.project_dir, tmp_path / "overlay").parent, build.project_dir)
    q = random_inputs(im, ROWS, seed)
    q[0], q[1] = im.input_quant.qmin, im.input_quant.qmax
    for planes in range(1, meta.max_planes + 1):
        words, last = simulate_wrapper(lib, meta, q, planes)
        assert last == words.size - 1
        got = unpack(words, meta.output.n_elems, meta.output.packing).reshape(ROWS, -1)
        want = Emulator(im, planes=planes).run(q).reshape(ROWS, -1)
        bad = np.flatnonzero(~(got == want).all(axis=1))
        assert bad.size == 0, f"planes={planes}: the board wrapper differs from the emulator on rows {bad.tolist()}"


def test_narrow_unsigned_input_quantizer_builds_and_is_exact(reported, tmp_path):
    """Once refused (hls4ml cannot convert a narrow unsigned Quant): the host quantizes the
    input (levels 0..2**b-2) and the graph hls4ml sees holds a plain unsigned one."""
    import copy

    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    from flipq.hls.bitserial import build_bitserial
    from flipq.hls.lower import lower_qonnx
    from flipq.host.csim import CsimBackend

    _, _, prepared, _, _ = reported
    model = ModelWrapper(copy.deepcopy(prepared.model))  # the fixture's model stays as it is
    node = model.find_consumer(model.graph.input[0].name)
    narrow = next(a for a in node.attribute if a.name == "narrow")
    narrow.CopyFrom(helper.make_attribute("narrow", 1))
    intmodel = lower_qonnx(model)
    assert intmodel.input_quant.qmax == 2**intmodel.input_quant.bits - 2
    build = build_bitserial(intmodel, model, tmp_path / "hls")
    q = np.random.default_rng(0).integers(0, intmodel.input_quant.qmax + 1, size=(64, *intmodel.input_shape))
    with CsimBackend(build.lib_path, build.meta) as csim:
        assert np.array_equal(csim.run(q, None), Emulator(intmodel).run(q))
