"""The host API on the emulator backend: validation, quantization, planes, verify, benchmark."""

import numpy as np
import pytest

from flipq.host import Accelerator, AcceleratorInputError
from flipq.quant.train import evaluate


@pytest.fixture(scope="module")
def acc(tiny_chain, tmp_path_factory):
    folder = tmp_path_factory.mktemp("acc")
    tiny_chain.intmodel.save(folder / "hls")
    return Accelerator.load(folder, backend="emulator")


def test_predict_equals_torch_on_floats_and_on_quantized_ints(acc, tiny_chain):
    want, _ = evaluate(tiny_chain.model, tiny_chain.x)
    assert np.array_equal(acc.predict(tiny_chain.x), want)
    q = acc.quantize(tiny_chain.x).transpose(0, 3, 1, 2)  # back to the user's NCHW layout
    assert np.array_equal(acc.predict(q.astype(np.int16), quantized=True), want)
    assert np.array_equal(acc.predict(tiny_chain.x[0]), want[:1])


def test_integer_input_is_a_value_unless_said_quantized(acc, tiny_chain):
    """Raw pixel values in an integer array are values (digits: 0..16), not grid integers:
    guessing from the dtype gave class 0 on every row while verify still passed."""
    raw = np.rint(tiny_chain.x).astype(np.int32)
    assert np.array_equal(acc.predict(raw), acc.predict(raw.astype(np.float64)))
    with pytest.raises(AcceleratorInputError, match="quantized input must hold integers"):
        acc.predict(tiny_chain.x, quantized=True)


def test_bad_inputs_are_named(acc):
    with pytest.raises(AcceleratorInputError, match=r"input shape \(3, 8, 8\) does not match.*\(batch, 1, 8, 8\)"):
        acc.predict(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(AcceleratorInputError, match="quantized input value 300 outside"):
        acc.predict(np.full((2, 1, 8, 8), 300, np.int32), quantized=True)
    with pytest.raises(AcceleratorInputError, match="NaN"):
        acc.predict(np.full((2, 1, 8, 8), np.nan, np.float32))
    with pytest.raises(AcceleratorInputError, match="not numeric"):
        acc.predict(np.zeros((2, 1, 8, 8), dtype=bool))


def test_planes_are_bounded_by_the_widest_layer(acc):
    most = acc.model.max_planes()
    assert most == 6  # the tiny chain's widest layer (fc2: 6-bit weights)
    for bad in (True, False, 0, most + 1, 9, 2.0, "3"):
        with pytest.raises(ValueError, match=rf"planes must be an int in 1..{most}"):
            acc.set_planes(bad)
    acc.set_planes(most)
    acc.set_planes(None)


def test_planes_and_verify(acc, tiny_chain):
    full = acc.predict(tiny_chain.x)
    acc.set_planes(1)
    try:
        assert not np.array_equal(acc.predict(tiny_chain.x), full)
        assert acc.verify(tiny_chain.x) == {"backend": "emulator", "equal": len(tiny_chain.x),
                                            "total": len(tiny_chain.x), "planes": 1, "first_mismatch": None}
    finally:
        acc.set_planes(None)


def test_benchmark_is_labelled_emulated(acc, tiny_chain):
    b = acc.benchmark(tiny_chain.x, repeats=2, latency_samples=5)
    assert b["label"] == "emulated" and b["throughput_per_s"] > 0
    assert b["latency_s"]["p50"] <= b["latency_s"]["p99"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="accelerator folder not found"):
        Accelerator.load(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="no integer model"):
        Accelerator.load(tmp_path)
    with pytest.raises(ValueError, match="unknown backend 'fpga'"):
        Accelerator.load(tmp_path, backend="fpga")
