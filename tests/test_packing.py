"""Packing integers into DMA words and back (flipq.host.packing)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flipq.host.packing import PackingError, PackingSpec, pack, unpack


@st.composite
def batches(draw):
    bits = draw(st.integers(2, 32))
    signed = draw(st.booleans())
    word_bits = draw(st.sampled_from([32, 64]))
    spec = PackingSpec(bits, signed, word_bits)
    n = draw(st.integers(0, 5))
    elems = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    q = np.random.default_rng(seed).integers(spec.qmin, spec.qmax, (n, elems), endpoint=True)
    return spec, q


@settings(max_examples=150, deadline=None)
@given(batches())
def test_round_trip(case):
    spec, q = case
    words = pack(q, spec)
    assert words.dtype == spec.word_dtype
    assert words.shape == (q.shape[0], spec.words_per_sample(q.shape[1]))
    assert np.array_equal(unpack(words, q.shape[1], spec), q)
    # flat words (as they come back from a DMA buffer) unpack the same
    assert np.array_equal(unpack(words.reshape(-1), q.shape[1], spec), q)


@settings(max_examples=50, deadline=None)
@given(batches())
def test_rows_pack_independently(case):
    """Each sample starts on a fresh word, so any row split packs to the same words."""
    spec, q = case
    if q.shape[0] < 2:
        return
    whole = pack(q, spec)
    parts = np.concatenate([pack(q[:1], spec), pack(q[1:], spec)])
    assert np.array_equal(whole, parts)


def test_layout_is_little_endian_lanes():
    spec = PackingSpec(4, True)
    w = pack(np.array([[1, -2, 3]]), spec)
    assert int(w[0, 0]) == 0x3E1  # lane 0 = 1, lane 1 = 0xE (-2), lane 2 = 3
    w = pack(np.array([[1, 2, 3, 4, 5, 6, 7, 8, 1]]), PackingSpec(4, False))
    assert w.tolist() == [[0x87654321, 0x1]]
    w = pack(np.array([[-1, 2]]), PackingSpec(16, True))
    assert w.tolist() == [[0x0002FFFF]]
    w = pack(np.array([[5, 7, 9]]), PackingSpec(32, False, 64))
    assert w.tolist() == [[(7 << 32) | 5, 9]]


def test_no_lane_straddles_words():
    spec = PackingSpec(3, False)  # 10 lanes per word, 2 bits padding
    w = pack(np.full((1, 11), 7), spec)
    assert w.tolist() == [[(1 << 30) - 1, 7]]


@pytest.mark.parametrize("value", [8, -9])
def test_out_of_range_is_refused(value):
    with pytest.raises(PackingError, match=f"value {value} does not fit 4-bit signed"):
        pack(np.array([[0, value]]), PackingSpec(4, True))


def test_bad_specs():
    with pytest.raises(PackingError, match="bits=1"):
        PackingSpec(1, True)
    with pytest.raises(PackingError, match="bits=33"):
        PackingSpec(33, True)
    with pytest.raises(PackingError, match="word_bits=16"):
        PackingSpec(8, True, 16)
    with pytest.raises(PackingError, match="dtype float"):
        pack(np.zeros((1, 3)), PackingSpec(8, True))
    with pytest.raises(PackingError, match="expected words of shape"):
        unpack(np.zeros((2, 3), np.uint32), 4, PackingSpec(8, True))
    with pytest.raises(PackingError, match="not a whole number of samples"):
        unpack(np.zeros(3, np.uint32), 5, PackingSpec(8, True))


def test_spec_dict_round_trip():
    spec = PackingSpec(12, False, 64)
    assert PackingSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(PackingError, match="missing field 'word_bits'"):
        PackingSpec.from_dict({"bits": 4, "signed": True})
