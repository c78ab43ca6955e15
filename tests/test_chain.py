"""One comparison test at every boundary of the spine, on a tiny mixed-precision model:
torch = QONNX = hls4ml C-sim = emulator, on every row."""

import numpy as np

from flipq.host.emulator import Emulator
from flipq.quant.export import execute_qonnx
from flipq.quant.train import evaluate


def _random_floats(shape, seed=0):
    # Off-grid floats over and beyond the input range: the input quantizer must round and clip.
    return np.random.default_rng(seed).uniform(-0.2, 1.3, size=shape).astype(np.float32)


def test_plan_has_three_widths_and_layers(tiny_chain):
    assert len(tiny_chain.plan.distinct_bit_widths()) >= 3
    assert [layer.op for layer in tiny_chain.intmodel.mac_layers] == ["conv", "dense", "dense"]


def test_torch_equals_qonnx(tiny_chain):
    for x in (tiny_chain.x, _random_floats((60, 1, 8, 8))):
        torch_out, _ = evaluate(tiny_chain.model, x)
        qonnx_out = execute_qonnx(tiny_chain.prepared, x.transpose(0, 2, 3, 1))
        assert np.array_equal(torch_out, qonnx_out)


def test_emulator_equals_torch_on_arbitrary_floats(tiny_chain):
    x = np.concatenate([tiny_chain.x, _random_floats((200, 1, 8, 8), seed=1)])
    torch_out, _ = evaluate(tiny_chain.model, x)
    assert np.array_equal(Emulator(tiny_chain.intmodel).forward(x), torch_out)


def test_qonnx_equals_stock_csim_equals_emulator(tiny_chain, tiny_stock_build):
    from flipq.hls.stock import predict_stock

    x = np.concatenate([tiny_chain.x, _random_floats((60, 1, 8, 8), seed=2)])
    emu = Emulator(tiny_chain.intmodel)
    q = emu.quantize_input(x)
    csim = predict_stock(tiny_stock_build, tiny_chain.intmodel, q)
    qonnx_out = execute_qonnx(tiny_chain.prepared, x.transpose(0, 2, 3, 1))
    assert np.array_equal(csim, qonnx_out)
    assert np.array_equal(csim, emu.forward(x))
