"""Weight bit-planes and group masks: how a MAC layer's integer weights are stored for the
bit-serial PE (numpy only, shared by the kernel generator and the cost model).

A layer's weights viewed as ``(K, N)`` (fan-in, outputs; a conv's HWIO rows in (kh, kw, cin)
order) are cut along K into groups of ``group_size`` rows. Per output column ``n``, group
``g`` and plane ``p`` the plane is stored as ``n_words`` 64-bit words (bit ``i`` of word ``w``
is fan-in row ``g*group_size + 64*w + i``); ``mask[n, g]`` has bit ``p`` set where that plane
is not all zero, so the PE skips the rest.

>>> w = np.array([[1], [-2]])                      # K=2, N=1, 3-bit weights
>>> packed = pack_layer(w, bits=3, group_size=0)
>>> int(packed.mask[0, 0])                         # planes 0 (1), 1 (-2 = 110b) and 2 (sign)
7
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORD_BITS = 64


class PlaneError(ValueError):
    """Weights or group widths that do not fit the stored bit-planes; names layer and value."""


@dataclass(frozen=True)
class PackedLayer:
    """Bit-planes of one layer: ``words`` is (N, n_groups, bits, n_words) uint64."""

    bits: int
    group_size: int
    fan_in: int
    words: np.ndarray
    mask: np.ndarray  # (N, n_groups) uint8

    @property
    def n_out(self) -> int:
        return self.words.shape[0]

    @property
    def n_groups(self) -> int:
        return self.words.shape[1]

    @property
    def n_words(self) -> int:
        return self.words.shape[3]


def effective_group_size(group_size: int, fan_in: int) -> int:
    return fan_in if group_size <= 0 or group_size > fan_in else group_size


def weight_matrix(weight: np.ndarray) -> np.ndarray:
    """(kh, kw, cin, cout) or (fan_in, fan_out) -> (K, N)."""
    return np.asarray(weight, dtype=np.int64).reshape(-1, weight.shape[-1])


def pack_layer(weight: np.ndarray, bits: int, group_size: int, name: str = "?") -> PackedLayer:
    w = weight_matrix(weight)
    if not 2 <= bits <= 8:
        raise PlaneError(f"layer '{name}': weight_bits={bits} is outside 2..8")
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if w.size and (w.min() < lo or w.max() > hi):
        bad = int(w.min()) if w.min() < lo else int(w.max())
        raise PlaneError(f"layer '{name}': weight {bad} does not fit {bits}-bit two's complement "
                         f"({lo}..{hi})")
    k, n = w.shape
    g = effective_group_size(group_size, k)
    n_groups = -(-k // g)
    n_words = -(-g // WORD_BITS)
    padded = np.zeros((n_groups * g, n), dtype=np.int64)
    padded[:k] = w
    # (N, groups, g) two's-complement bit patterns, one bit-plane per p
    u = (padded.T.reshape(n, n_groups, g) & ((1 << bits) - 1)).astype(np.uint64)
    planes = np.stack([(u >> np.uint64(p)) & np.uint64(1) for p in range(bits)], axis=2)  # N,G,B,g
    lanes = np.zeros(planes.shape[:3] + (n_words * WORD_BITS,), dtype=np.uint64)
    lanes[..., :g] = planes
    lanes = lanes.reshape(n, n_groups, bits, n_words, WORD_BITS)
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    words = np.bitwise_or.reduce(lanes << shifts, axis=-1)
    nonzero = planes.any(axis=-1)  # N, G, B
    mask = (nonzero.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(axis=-1).astype(np.uint8)
    return PackedLayer(bits, g, k, words, mask)


def unpack_layer(packed: PackedLayer) -> np.ndarray:
    """The (K, N) integer weights back from their planes (inverse of :func:`pack_layer`)."""
    n, n_groups, bits, n_words = packed.words.shape
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    lanes = (packed.words[..., None] >> shifts) & np.uint64(1)  # N,G,B,W,64
    lanes = lanes.reshape(n, n_groups, bits, -1)[..., : packed.group_size].astype(np.int64)
    weights = np.array([-(2 ** p) if p == bits - 1 else 2**p for p in range(bits)], dtype=np.int64)
    values = np.einsum("ngbk,b->ngk", lanes, weights).reshape(n, -1)[:, : packed.fan_in]
    return values.T


def group_bit_mask(bits: int, group_bits) -> np.ndarray:
    """Plane masks of groups of the given widths: a b-bit group keeps planes bits-b .. bits-1."""
    gb = np.asarray(group_bits, dtype=np.int64)
    return (((1 << gb) - 1) << (bits - gb)).astype(np.uint8)


def check_group_bits(packed: PackedLayer, group_bits, name: str = "?") -> None:
    """A group declared ``b`` bits wide must have its low ``bits - b`` planes all zero (the
    one check of declared group widths: lowering and the hardware plan both call it)."""
    n, n_groups = packed.mask.shape
    gb = np.asarray(group_bits, dtype=np.int64).ravel()
    if gb.size != n * n_groups:
        raise PlaneError(f"layer '{name}': group_bits has {gb.size} entries, the layer has "
                         f"{n} outputs x {n_groups} groups of {packed.group_size} = {n * n_groups}")
    if gb.min() < 1 or gb.max() > packed.bits:
        raise PlaneError(f"layer '{name}': group_bits holds {int(gb.max() if gb.max() > packed.bits else gb.min())}, "
                         f"outside 1..{packed.bits}")
    allowed = group_bit_mask(packed.bits, gb).reshape(n, n_groups)
    stray = packed.mask & ~allowed
    if stray.any():
        col, grp = (int(v) for v in np.argwhere(stray)[0])
        mask = int(packed.mask[col, grp])
        lowest = (mask & -mask).bit_length() - 1
        raise PlaneError(f"layer '{name}': group (output {col}, group {grp}) is declared "
                         f"{int(gb[col * n_groups + grp])} bits but its weights need {packed.bits - lowest} "
                         f"(plane mask {mask:#04x} of {packed.bits} planes)")


def active_planes(mask: np.ndarray, bits: int, planes: int | None = None) -> np.ndarray:
    """Per (column, group): planes the PE steps through at run-time precision ``planes``."""
    lowest = 0 if planes is None or planes >= bits else bits - planes
    keep = np.uint8(((1 << bits) - 1) & ~((1 << lowest) - 1))
    m = np.asarray(mask, dtype=np.uint8) & keep
    return np.unpackbits(m[..., None], axis=-1).sum(axis=-1)

