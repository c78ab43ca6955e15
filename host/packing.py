"""Integers <-> DMA words: the bit layout of flipq's AXI streams (numpy only).

Each element takes ``bits`` bits (two's complement when signed); ``word_bits // bits``
elements share one little-endian word, element ``i`` of a word at bit ``i * bits``. No
element straddles two words (the HLS unpacker then needs no carry between beats), and each
sample starts on a fresh word, so a batch can be cut into chunks at any row.

>>> spec = PackingSpec(bits=4, signed=True)
>>> w = pack(np.array([[1, -2, 3]]), spec)
>>> hex(int(w[0, 0]))
'0x3e1'
>>> unpack(w, 3, spec).tolist()
[[1, -2, 3]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_BITS, MAX_BITS = 2, 32
WORD_BITS = (32, 64)


class PackingError(ValueError):
    """Bad packing parameters or values that do not fit; the message names them."""


@dataclass(frozen=True)
class PackingSpec:
    bits: int
    signed: bool
    word_bits: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) \
                or not MIN_BITS <= self.bits <= MAX_BITS:
            raise PackingError(f"packing bits={self.bits!r} is outside {MIN_BITS}..{MAX_BITS}")
        if self.word_bits not in WORD_BITS:
            raise PackingError(f"packing word_bits={self.word_bits!r}, expected one of {WORD_BITS}")

    @property
    def per_word(self) -> int:
        return self.word_bits // self.bits

    @property
    def word_dtype(self) -> np.dtype:
        return np.dtype("<u4" if self.word_bits == 32 else "<u8")

    @property
    def word_bytes(self) -> int:
        return self.word_bits // 8

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def words_per_sample(self, n_elems: int) -> int:
        return -(-int(n_elems) // self.per_word)

    def bytes_per_sample(self, n_elems: int) -> int:
        return self.words_per_sample(n_elems) * self.word_bytes

    def to_dict(self) -> dict:
        return {"bits": int(self.bits), "signed": bool(self.signed), "word_bits": int(self.word_bits)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "packing") -> "PackingSpec":
        for key in ("bits", "signed", "word_bits"):
            if key not in d:
                raise PackingError(f"{where}: missing field '{key}'")
        if not isinstance(d["signed"], bool):
            raise PackingError(f"{where}: field 'signed' = {d['signed']!r} is not true/false")
        try:
            return cls(int(d["bits"]), d["signed"], int(d["word_bits"]))
        except PackingError as e:
            raise PackingError(f"{where}: {e}") from None


def _shifts(spec: PackingSpec) -> np.ndarray:
    return (np.arange(spec.per_word, dtype=np.uint64) * np.uint64(spec.bits)).astype(np.uint64)


def pack(q: np.ndarray, spec: PackingSpec, check: bool = True) -> np.ndarray:
    """``q`` of shape ``(n, ...)`` -> words of shape ``(n, words_per_sample)``.

    With ``check`` (the default), a value outside the spec's range is an error rather than
    silently wrapped.
    """
    q = np.asarray(q)
    if q.ndim < 1:
        raise PackingError("pack needs an array with a leading batch axis")
    if q.dtype.kind not in "iu":
        raise PackingError(f"pack needs integers, got dtype {q.dtype}")
    n = q.shape[0]
    flat = q.reshape(n, int(np.prod(q.shape[1:], dtype=np.int64))).astype(np.int64, copy=False)
    if check and flat.size:
        lo, hi = int(flat.min()), int(flat.max())
        if lo < spec.qmin or hi > spec.qmax:
            bad = lo if lo < spec.qmin else hi
            raise PackingError(
                f"value {bad} does not fit {spec.bits}-bit {'signed' if spec.signed else 'unsigned'} "
                f"packing (range {spec.qmin}..{spec.qmax})")
    n_elems = flat.shape[1]
    wps = spec.words_per_sample(n_elems)
    lanes = np.zeros((n, wps * spec.per_word), dtype=np.uint64)
    mask = np.uint64((1 << spec.bits) - 1)
    # int64 -> uint64 reinterprets two's complement; the mask keeps the low `bits`.
    lanes[:, :n_elems] = np.ascontiguousarray(flat).view(np.uint64) & mask
    lanes = lanes.reshape(n, wps, spec.per_word) << _shifts(spec)
    words = np.bitwise_or.reduce(lanes, axis=2) if spec.per_word > 1 else lanes[:, :, 0]
    return words.astype(spec.word_dtype)


def unpack(words: np.ndarray, n_elems: int, spec: PackingSpec) -> np.ndarray:
    """Words of shape ``(n, words_per_sample)`` (or flat, ``n * words_per_sample``) ->
    int64 ``(n, n_elems)``; padding lanes are dropped."""
    words = np.asarray(words)
    wps = spec.words_per_sample(n_elems)
    if words.ndim == 1:
        if words.size % wps:
            raise PackingError(f"{words.size} words are not a whole number of samples "
                               f"({wps} words each)")
        words = words.reshape(-1, wps)
    if words.ndim != 2 or words.shape[1] != wps:
        raise PackingError(f"expected words of shape (n, {wps}) for {n_elems} elements of "
                           f"{spec.bits} bits, got {words.shape}")
    w = words.astype(np.uint64, copy=False)
    mask = np.uint64((1 << spec.bits) - 1)
    lanes = (w[:, :, None] >> _shifts(spec)) & mask
    vals = lanes.reshape(words.shape[0], wps * spec.per_word)[:, :n_elems].astype(np.int64)
    if spec.signed:
        vals = np.where(vals >= (1 << (spec.bits - 1)), vals - (1 << spec.bits), vals)
    return vals
