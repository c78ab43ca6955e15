"""Biases as Brevitas exports them (Int32Bias, Int8Bias, float) on Linear and Conv2d: lowered to
the accumulator's scale, torch = QONNX = emulator on every row, C-sim = emulator; and a bias
off the accumulator's grid refused in one line naming the user's node."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from flipq.hls.lower import UnsupportedNodeError, check_mappable, lower_qonnx
from flipq.hls.prepare import load_qonnx, prepare_qonnx
from flipq.host.emulator import Emulator
from flipq.quant.export import execute_qonnx

BIAS_KINDS = ("int32", "int8", "float-on-grid")


@dataclass
class BiasedNet:
    net: object  # torch module
    raw: object  # the exported ModelWrapper, as the user's file has it
    prepared: object
    intmodel: object
    in_shape: tuple


def _bias_quant(kind: str):
    from brevitas.quant import Int8Bias, Int32Bias

    return {"int32": Int32Bias, "int8": Int8Bias}.get(kind)


def _biased_net(kind: str, signed: bool, conv: bool, seed: int = 0):
    """A two-MAC network, every layer biased with ``kind``; ReLU (unsigned) between layers."""
    import brevitas.nn as qnn
    import torch
    import torch.nn as nn
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    torch.manual_seed(seed)
    quant = dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=5, bias=True,
                 bias_quant=_bias_quant(kind))
    mods = [qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint,
                              bit_width=6, return_quant_tensor=True)]
    if conv:
        in_shape = (2, 5, 5)
        mods += [qnn.QuantConv2d(2, 3, 3, padding=1, **quant), nn.Flatten()]
        fan_in = 75
    else:
        in_shape = (12,)
        mods += [qnn.QuantLinear(12, 8, **quant)]
        fan_in = 8
    mods.insert(2, qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True))
    mods.append(qnn.QuantLinear(fan_in, 4, **quant))
    net = nn.Sequential(*mods).eval()
    with torch.no_grad():
        for m in net:
            if getattr(m, "bias", None) is not None:
                b = torch.randn_like(m.bias) * 0.6
                # a float bias is exact only on the accumulator's grid: eighths are, for these scales
                m.bias.copy_(torch.round(b * 8) / 8 if kind == "float-on-grid" else b)
    return net, in_shape


def make_biased(folder, kind: str, signed: bool, conv: bool, seed: int = 0) -> BiasedNet:
    import contextlib
    import io

    import torch
    from brevitas.export import export_qonnx

    net, in_shape = _biased_net(kind, signed, conv, seed)
    path = folder / "model.onnx"
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        export_qonnx(net, torch.zeros(1, *in_shape), export_path=str(path))
    raw = load_qonnx(path)
    check_mappable(raw)
    prepared = prepare_qonnx(raw)
    return BiasedNet(net, raw, prepared, lower_qonnx(prepared), in_shape)


def _floats(shape, rows, seed=0):
    # beyond both input ranges, off-grid: the input quantizer must round and clip
    return np.random.default_rng(seed).uniform(-1.5, 2.5, size=(rows, *shape)).astype(np.float32)


def _torch(net, x):
    import torch

    with torch.no_grad():
        y = net(torch.from_numpy(x))
    return np.asarray(getattr(y, "value", y), dtype=np.float64)


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("kind", BIAS_KINDS)
def test_biased_model_torch_equals_qonnx_equals_emulator(tmp_path, kind, signed, conv):
    b = make_biased(tmp_path, kind, signed, conv)
    assert all(layer.bias is not None and np.any(layer.bias) for layer in b.intmodel.mac_layers)
    x = _floats(b.in_shape, 200)
    want = _torch(b.net, x)
    assert np.array_equal(Emulator(b.intmodel).forward(x), want)
    assert np.array_equal(Emulator(b.intmodel, reference=True).forward(x[:50]), want[:50])
    nhwc = x[:24].transpose(0, 2, 3, 1) if conv else x[:24]
    assert np.array_equal(execute_qonnx(b.prepared, nhwc), want[:24])


def test_int32_bias_lowers_exactly_at_the_accumulator_scale(tmp_path):
    """The integer bias times 2**(input exp + weight exp) is Brevitas' quantized bias itself."""
    b = make_biased(tmp_path, "int32", signed=True, conv=False)
    first = b.intmodel.mac_layers[0]
    acc_exp = b.intmodel.input_quant.exp + first.attrs["w_exp"]
    brevitas_bias = b.net[1].quant_bias().value.detach().numpy().astype(np.float64)
    assert np.array_equal(first.bias * 2.0**acc_exp, brevitas_bias)


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_float_bias_off_the_grid_becomes_thresholds_and_an_output_affine(tmp_path, conv):
    """Once refused ("not a multiple of the accumulator scale"): a float bias before a quantizer
    is absorbed into integer thresholds (exact), at the output into the float output affine
    (within its documented bound, argmax equal)."""
    import contextlib
    import io

    import torch
    from brevitas.export import export_qonnx

    net, in_shape = _biased_net("float", signed=False, conv=conv)
    with torch.no_grad():
        net[1].bias.add_(1e-3)  # between grid points of 2^-(6+...) almost surely
    path = tmp_path / "model.onnx"
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        export_qonnx(net, torch.zeros(1, *in_shape), export_path=str(path))
    raw = load_qonnx(path)
    check_mappable(raw)
    im = lower_qonnx(prepare_qonnx(raw))
    assert [layer.op for layer in im.layers if layer.op in ("threshold", "requant")] == ["threshold"]
    assert im.output_affine is not None and all(layer.bias is None for layer in im.mac_layers)
    x = _floats(in_shape, 300)
    want, got = _torch(net, x), Emulator(im).forward(x)
    assert np.all(np.abs(got - want) <= im.output_bound())
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))


# ---------------------------------------------------------------------------------------
# C-sim: a biased dense and a biased conv model (ReLU between layers: unsigned activations)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv, kind", [(False, "int32"), (True, "int8")], ids=["dense-int32", "conv-int8"])
def test_biased_csim_equals_emulator(tmp_path, conv, kind):
    from flipq.hls.bitserial import build_bitserial
    from flipq.host.csim import CsimBackend

    b = make_biased(tmp_path, kind, signed=False, conv=conv, seed=3)
    build = build_bitserial(b.intmodel, b.prepared, tmp_path / "hls")
    x = _floats(b.in_shape, 64, seed=4)
    emu = Emulator(b.intmodel)
    q = emu.quantize_input(x)
    with CsimBackend(build.lib_path, build.meta) as csim:
        for planes in (None, 2):
            got = csim.run(q, planes)
            want = Emulator(b.intmodel, planes=planes).run(q)
            assert np.array_equal(got.reshape(len(q), -1), want.reshape(len(q), -1)), planes
    assert np.array_equal(emu.forward(x), _torch(b.net, x))
