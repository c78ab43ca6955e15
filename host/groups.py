"""Weight groups: the unit of per-group bit widths and of bit-plane skipping.

A MAC layer's weights, viewed as a ``(K, N)`` matrix (dense: ``(fan_in, fan_out)``; conv:
HWIO flattened to ``(kh*kw*cin, cout)``), are cut along K into groups of ``group_size``
consecutive rows per output column; ``group_size = 0`` means one group per column. Group
``(n, g)`` covers rows ``g*G .. min((g+1)*G, K) - 1`` of column ``n``. Flat group order is
row-major over ``(n, g)`` -- the order of ``LayerBits.group_bits``.

A group of width ``b`` inside a layer of ``B`` bits holds weights whose low ``B - b`` planes
are zero (a b-bit weight is a (b+1)-bit weight with LSB 0).
"""

from __future__ import annotations

import numpy as np


def as_matrix(weight: np.ndarray) -> np.ndarray:
    """Dense ``(K, N)`` stays; conv HWIO ``(kh, kw, cin, cout)`` -> ``(kh*kw*cin, cout)``."""
    return weight.reshape(-1, weight.shape[-1])


def group_count(fan_in: int, group_size: int) -> int:
    return 1 if group_size <= 0 else -(-fan_in // group_size)


def grouped(matrix: np.ndarray, group_size: int) -> np.ndarray:
    """``(K, N)`` -> ``(N, n_groups, G)``, zero-padded at the end of K."""
    k, n = matrix.shape
    g = k if group_size <= 0 else group_size
    ng = group_count(k, group_size)
    padded = np.zeros((ng * g, n), dtype=matrix.dtype)
    padded[:k] = matrix
    return padded.reshape(ng, g, n).transpose(2, 0, 1)


def plane_bits(matrix: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement planes of integer weights: ``(bits, *matrix.shape)`` of 0/1,
    plane ``p`` = bit ``p`` (plane ``bits-1`` is the sign plane)."""
    u = np.asarray(matrix, dtype=np.int64) & ((1 << bits) - 1)
    return np.stack([(u >> p) & 1 for p in range(bits)]).astype(np.uint8)


def nonzero_planes(matrix: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """``(N, n_groups, bits)`` booleans: plane ``p`` of group ``(n, g)`` has a 1 somewhere.

    The bit-serial PE skips planes that are False here.
    """
    planes = plane_bits(matrix, bits)  # bits, K, N
    per = np.stack([grouped(planes[p], group_size).any(axis=-1) for p in range(bits)], axis=-1)
    return per


def min_group_bits(matrix: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """``(N, n_groups)``: the narrowest width each group fits in, i.e. ``bits`` minus the
    number of trailing all-zero planes (at least 1 -- an all-zero group keeps its sign plane)."""
    nz = nonzero_planes(matrix, bits, group_size)
    trailing = np.zeros(nz.shape[:2], dtype=np.int64)
    still = np.ones(nz.shape[:2], dtype=bool)
    for p in range(bits - 1):  # the sign plane is never dropped
        still &= ~nz[..., p]
        trailing += still
    return bits - trailing
