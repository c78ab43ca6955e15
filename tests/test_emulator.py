"""The emulator against independent definitions: exact rational rounding, torch conv, and
its own obvious int64 path."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flipq.host.emulator import Emulator, im2col, quantize, shift_round, truncate_planes
from flipq.host.intmodel import QuantSpec


def _round_half_even(fr: Fraction) -> int:
    floor = fr.numerator // fr.denominator
    rem = fr - floor
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and floor % 2 == 1):
        return floor + 1
    return floor


@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=30), st.integers(-20, 6))
def test_shift_round_is_exact_round_half_even(values, shift):
    got = shift_round(np.array(values, dtype=np.int64), shift)
    want = [_round_half_even(Fraction(v) * Fraction(2) ** shift) for v in values]
    assert got.tolist() == want


@given(st.lists(st.floats(-300, 300, allow_nan=False), min_size=1, max_size=40),
       st.integers(2, 8), st.booleans(), st.booleans(), st.integers(-8, 2))
def test_quantize_matches_torch_round(values, bits, signed, narrow, exp):
    import torch

    spec = QuantSpec(bits, signed, narrow, exp)
    x = np.array(values, dtype=np.float32)
    t = torch.clamp(torch.round(torch.from_numpy(x) / 2.0**exp), spec.qmin, spec.qmax)
    assert quantize(x, spec).tolist() == t.to(torch.int64).tolist()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 3), st.integers(0, 1),
       st.integers(1, 2), st.integers(0, 2**31 - 1))
def test_im2col_conv_equals_torch_conv(n, cin, cout, k, pad, stride, seed):
    import torch

    rng = np.random.default_rng(seed)
    h = w = k + 3
    x = rng.integers(-8, 8, size=(n, h, w, cin))
    wt = rng.integers(-8, 8, size=(k, k, cin, cout))
    cols = im2col(x, k, k, (stride, stride), (pad, pad, pad, pad))
    got = cols @ wt.reshape(-1, cout)
    want = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2).double(),
                                      torch.from_numpy(wt).permute(3, 2, 0, 1).double(),
                                      stride=stride, padding=pad).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(got, want.astype(np.int64))


@given(st.integers(2, 8), st.data())
def test_truncate_planes_equals_sum_of_top_planes(bits, data):
    w = np.array(data.draw(st.lists(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1), min_size=1,
                                    max_size=20)))
    k = data.draw(st.integers(1, bits))
    u = w & ((1 << bits) - 1)
    # the bit-serial sum: planes bits-1 (weight -2^(bits-1)) .. bits-k
    want = sum(((u >> p) & 1) * (-(2 ** p) if p == bits - 1 else 2 ** p) for p in range(bits - k, bits))
    assert truncate_planes(w, bits, k).tolist() == np.asarray(want).tolist()
    assert truncate_planes(w, bits, None).tolist() == w.tolist()


def test_fast_path_equals_reference(tiny_chain):
    q = Emulator(tiny_chain.intmodel).quantize_input(tiny_chain.x)
    for planes in (None, 1, 2, 3, 5, 8):
        fast = Emulator(tiny_chain.intmodel, planes=planes).run(q)
        ref = Emulator(tiny_chain.intmodel, reference=True, planes=planes).run(q)
        assert np.array_equal(fast, ref)


def test_planes_change_outputs_and_full_planes_do_not(tiny_chain):
    emu = Emulator(tiny_chain.intmodel)
    q = emu.quantize_input(tiny_chain.x)
    full = emu.run(q)
    emu.set_planes(8)
    assert np.array_equal(emu.run(q), full)
    emu.set_planes(1)
    assert not np.array_equal(emu.run(q), full)
    with pytest.raises(ValueError, match="planes must be in 1..8"):
        emu.set_planes(0)


def test_wide_accumulators_fall_back_exactly():
    from flipq.host.emulator import _exact_matmul

    rng = np.random.default_rng(1)
    a = rng.integers(-2**20, 2**20, size=(5, 300))
    w = rng.integers(-2**20, 2**20, size=(300, 4))
    assert np.array_equal(_exact_matmul(a, w), a.astype(object).dot(w.astype(object)).astype(np.int64))


def random_intmodel(seed: int, wide: bool = False):
    """A random conv -> requant -> pool -> flatten -> dense -> requant -> dense integer model."""
    from flipq.host.intmodel import IntLayer, IntModel

    rng = np.random.default_rng(seed)
    h = int(rng.integers(4, 9))
    cin, cout, hidden, nout = (int(v) for v in rng.integers(1, 6, size=4))
    wb = [int(b) for b in rng.integers(2, 9, size=3)]
    ab = [int(b) for b in rng.integers(2, 9, size=3)]
    if wide:  # accumulators beyond float exactness force the int64 path
        wb, ab = [8, 8, 8], [8, 8, 8]

    def w(shape, bits):
        return rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=shape)

    def rq(bits, relu):
        return IntLayer("requant", "rq", {"quant": QuantSpec(bits, False, False, int(rng.integers(-4, 3))).to_dict(),
                                          "relu": relu})

    pad = int(rng.integers(0, 2))
    conv = IntLayer("conv", "conv1", {"stride": [1, 1], "pads": [pad] * 4, "w_exp": -2, "weight_bits": wb[0]},
                    weight=w((3, 3, cin, cout), wb[0]),
                    bias=rng.integers(-50, 50, size=cout) if rng.random() < 0.5 else None)
    ho = h + 2 * pad - 2
    flat = (ho // 2) ** 2 * cout
    scale_up = 2**20 if wide else 1
    layers = [conv, rq(ab[1], True), IntLayer("maxpool", "p", {"kernel": [2, 2], "stride": [2, 2]}),
              IntLayer("flatten", "f", {}),
              IntLayer("dense", "fc1", {"w_exp": -3, "weight_bits": wb[1]}, weight=w((flat, hidden), wb[1])),
              rq(ab[2], True),
              IntLayer("dense", "fc2", {"w_exp": -1, "weight_bits": wb[2]},
                       weight=w((hidden, nout), wb[2]) * scale_up)]
    return IntModel((h, h, cin), QuantSpec(ab[0], True, bool(rng.integers(0, 2)), -3), layers, output_exp=-6)


@settings(max_examples=30)
@given(st.integers(0, 2**31 - 1), st.sampled_from([None, 1, 2, 3, 5, 8]), st.booleans())
def test_fast_path_equals_reference_on_random_models(seed, planes, wide):
    model = random_intmodel(seed, wide)
    rng = np.random.default_rng(seed + 1)
    spec = model.input_quant
    q = rng.integers(spec.qmin, spec.qmax + 1, size=(7, *model.input_shape))
    fast = Emulator(model, planes=planes).run(q)
    ref = Emulator(model, reference=True, planes=planes).run(q)
    assert np.array_equal(fast, ref)


def test_quantizer_ranges_are_qonnx_max_int_and_min_int():
    from qonnx.custom_op.general.quant import max_int, min_int

    from flipq.host.intmodel import QuantSpec

    for bits in range(2, 9):
        for signed in (False, True):
            for narrow in (False, True):
                spec = QuantSpec(bits, signed, narrow, 0)
                assert (spec.qmin, spec.qmax) == (min_int(signed, narrow, bits), max_int(signed, narrow, bits))


@settings(max_examples=40)
@given(st.integers(0, 2**31 - 1), st.sampled_from([np.float32, np.float64, np.int64]), st.integers(1, 20),
       st.booleans())
def test_fast_thresholds_equal_the_definition(seed, dtype, levels, huge):
    """thresholds_fast (one comparison per level, floats) = apply_thresholds (per-channel binary
    search), also with thresholds past the float type's exact range and values at its edge."""
    from flipq.host.emulator import _F32_EXACT, _F64_EXACT, apply_thresholds, thresholds_fast
    from flipq.host.intmodel import IntLayer

    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 6))
    limit = {np.float32: _F32_EXACT, np.float64: _F64_EXACT, np.int64: 2**62}[dtype] - 1
    span = limit if huge else 40
    x = rng.integers(-span, span + 1, size=(3, 4, c))
    x[0, 0] = limit  # the edges of the exact range
    x[0, 1] = -limit
    t = np.sort(rng.integers(-span - 3, span + 4, size=(c, levels)), axis=1)
    if huge:  # levels that no value reaches, and some one past the range
        t[:, -1] = 2**62
        t[:, 0] = np.minimum(t[:, 0], -limit - 2)
    bits = max(1, int(levels).bit_length())
    spec = QuantSpec(bits + 1, True, False, 0)
    layer = IntLayer("threshold", "t", {"quant": spec.to_dict(),
                                       "descending": [i for i in range(c) if rng.random() < 0.4]}, thresholds=t)
    want = apply_thresholds(x, layer)
    got = thresholds_fast(x.astype(dtype), layer)
    assert got.dtype == np.float32
    assert np.array_equal(got.astype(np.int64), want)
