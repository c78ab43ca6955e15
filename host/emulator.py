"""The emulator: the executable definition of flipq's integer datapath (numpy only).

``Emulator(intmodel).run(q)`` takes already-quantized integer inputs (NHWC) and returns
integer output accumulators; ``forward`` takes floats in the model's own layout, quantizes
them exactly as the model's input quantizer does, and returns real-valued outputs.

Fast path: a float matmul of integer operands is exact while every partial sum stays below
2**24 (float32) or 2**53 (float64), so each MAC layer picks the narrowest float type its
bit widths and fan-in allow and rides BLAS; beyond that it falls back to int64. The obvious
int64 implementation (``reference=True``) is kept and tested equal.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from flipq.host.intmodel import IntLayer, IntModel, QuantSpec

_F32_EXACT = 2**24
_F64_EXACT = 2**53
# Working memory one run() may hold for intermediates; batches are cut into chunks of rows
# that fit, so a 100k-row batch costs its inputs and outputs, not 100k rows of feature maps.
CHUNK_BYTES = 64 * 2**20


def quantize(x: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Round-half-to-even onto the grid ``q * 2**exp`` and saturate: QONNX Quant(ROUND)."""
    scaled = np.asarray(x, dtype=np.float64) * (2.0 ** -spec.exp)
    return np.clip(np.round(scaled), spec.qmin, spec.qmax).astype(np.int64)


def shift_round(q: np.ndarray, shift: int) -> np.ndarray:
    """``round_half_even(q * 2**shift)`` for integer ``q``, exactly, in integers."""
    q = q.astype(np.int64, copy=False)
    if shift >= 0:
        return q << shift
    s = -shift
    floor = q >> s
    rem = q - (floor << s)
    half = 1 << (s - 1)
    return floor + (rem > half) + ((rem == half) & ((floor & 1) == 1))


def requantize(acc: np.ndarray, acc_exp: int, spec: QuantSpec, relu: bool) -> np.ndarray:
    if relu:
        acc = np.maximum(acc, 0)
    return np.clip(shift_round(acc, acc_exp - spec.exp), spec.qmin, spec.qmax)


def apply_thresholds(acc: np.ndarray, layer: IntLayer) -> np.ndarray:
    """A ``threshold`` layer on integer accumulators (channels last): ``qmin`` plus the count
    of the channel's thresholds at or below ``sign * acc``."""
    t = layer.thresholds
    signs = layer.signs
    v = np.asarray(acc)
    out = np.empty(v.shape, dtype=np.int64)
    for c in range(t.shape[0]):
        out[..., c] = np.searchsorted(t[c], signs[c] * v[..., c], side="right")
    return out + layer.out_quant.qmin


# Above this many levels a per-channel binary search beats one comparison pass per level.
_COMPARE_LEVELS = 16


def thresholds_fast(x: np.ndarray, layer: IntLayer) -> np.ndarray:
    """:func:`apply_thresholds` for the fast path: ``x`` holds exact integers in float32 (below
    2**24 in magnitude), float64 (below 2**53) or int64; the levels come back as float32.

    One vectorised comparison per threshold across all channels: the per-channel searchsorted
    of the definition cost as much as all of CNV's convolutions. Exact: thresholds beyond the
    values' range are clipped to its edge, where they compare with every value alike, so the
    cast to ``x``'s float type cannot round one across a value.
    """
    t = layer.thresholds
    if t.shape[1] > _COMPARE_LEVELS:
        return apply_thresholds(x, layer).astype(np.float32)
    if x.dtype == np.float32:
        t = np.clip(t, -_F32_EXACT, _F32_EXACT).astype(np.float32)
    elif x.dtype == np.float64:
        t = np.clip(t, -_F64_EXACT, _F64_EXACT).astype(np.float64)
    signed = x * layer.signs.astype(x.dtype)
    out = np.full(x.shape, layer.out_quant.qmin, dtype=np.float32)
    for k in range(t.shape[1]):
        out += signed >= t[:, k]
    return out


def _exact_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Integer ``a @ w`` computed exactly, on BLAS where the bound allows."""
    bound = int(np.abs(a).max(initial=0)) * int(np.abs(w).max(initial=0)) * a.shape[-1]
    if bound < _F32_EXACT:
        return (a.astype(np.float32) @ w.astype(np.float32)).astype(np.int64)
    if bound < _F64_EXACT:
        return (a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ w.astype(np.int64)


def truncate_planes(w: np.ndarray, bits: int, planes: int | None) -> np.ndarray:
    """Keep the ``planes`` most significant of a weight's ``bits`` two's-complement planes.

    Accumulating planes ``bits-1 .. bits-planes`` (the top one with negative weight) equals
    multiplying by ``w`` with its low ``bits-planes`` bits cleared, i.e.
    ``floor(w / 2**d) * 2**d`` with ``d = bits - planes``: truncation toward minus infinity.
    ``planes`` of None or >= ``bits`` keeps ``w`` whole.
    """
    if planes is None or planes >= bits:
        return w
    if planes < 1:
        raise ValueError(f"planes must be >= 1, got {planes}")
    drop = bits - planes
    return (w >> drop) << drop


def map_chunks(fn, x: np.ndarray, rows: int, dtype) -> np.ndarray:
    """``fn`` applied to ``x`` ``rows`` rows at a time, the results gathered into one array of
    ``dtype``: working memory bounded by one chunk, whatever the batch size."""
    if len(x) <= rows:
        return fn(x).astype(dtype, copy=False)
    out = None
    for start in range(0, len(x), rows):
        part = fn(x[start:start + rows])
        if out is None:
            out = np.empty((len(x),) + part.shape[1:], dtype=dtype)
        out[start:start + len(part)] = part
    return out


def im2col(x: np.ndarray, kh: int, kw: int, stride: tuple[int, int], pads) -> np.ndarray:
    """NHWC -> (N, Ho, Wo, kh*kw*C) patches, ordered (kh, kw, C) to match HWIO weights."""
    top, left, bottom, right = pads
    if any(pads):
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))  # N, H', W', C, kh, kw
    win = win[:, :: stride[0], :: stride[1]]
    n, ho, wo, c = win.shape[:4]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(n, ho, wo, kh * kw * c)


class Emulator:
    """Bit-exact integer reference of an :class:`IntModel`.

    >>> emu = Emulator(IntModel.load("build/demo/hls"))       # doctest: +SKIP
    >>> y = emu.forward(x_test)                               # doctest: +SKIP

    ``reference=True`` runs the obvious int64 implementation; the default fast path keeps
    activations as exact integers in float32/float64 (chosen per layer from the largest
    possible partial sum) so matmuls and requantization ride BLAS and vector floats.
    """

    def __init__(self, model: IntModel, reference: bool = False, planes: int | None = None,
                 chunk_bytes: int = CHUNK_BYTES):
        self.model = model
        self.reference = reference
        self.planes = None
        self.set_planes(planes)
        self._weights: dict[tuple[int, int | None, str], tuple[np.ndarray, int]] = {}
        self.chunk_rows = max(1, int(chunk_bytes) // self.bytes_per_row())

    def set_planes(self, planes: int | None) -> None:
        """Accumulate only the ``planes`` most significant weight planes of every layer (None,
        or a value at or above a layer's width, keeps that layer whole: the hardware register's
        meaning; :meth:`flipq.host.Accelerator.set_planes` is the stricter user-facing check)."""
        if planes is not None and (isinstance(planes, bool) or not isinstance(planes, (int, np.integer))
                                   or not 1 <= planes <= 8):
            raise ValueError(f"planes must be in 1..8 (or None for all), got {planes!r}")
        self.planes = None if planes is None else int(planes)

    def _planes_of(self, layer: IntLayer) -> int | None:
        """``planes`` for one layer: an average pool lowered to a conv of ones keeps all."""
        return None if layer.attrs.get("full_planes") else self.planes

    def bytes_per_row(self) -> int:
        """Upper bound on the working memory one input row takes inside :meth:`run` (float64
        or int64 values: a layer's input, its conv patches and its output alive together; in a
        graph, every layer's output besides, as if all were alive at once)."""
        cur = int(np.prod(self.model.input_shape))
        worst = held = cur
        for layer in self.model.layers:
            out = int(np.prod(layer.attrs.get("out_shape") or [cur]))
            patches = 0
            if layer.op == "conv":
                kh, kw, cin = layer.weight.shape[:3]
                patches = out // layer.weight.shape[-1] * kh * kw * cin
            worst = max(worst, cur + 2 * patches + out)
            held += out
            cur = out
        return 8 * (worst + (0 if self.model.is_chain else held))

    # -- public ---------------------------------------------------------------------------
    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Floats in the model's own layout -> integer NHWC inputs."""
        x = self.model.to_channels_last(np.asarray(x))
        return quantize(self.model.apply_input_affine(x), self.model.input_quant)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Floats in, real-valued outputs (:meth:`IntModel.to_real` of the integers) out."""
        return map_chunks(lambda part: self.model.to_real(self.run(self.quantize_input(part))), x,
                          self.chunk_rows, np.float64)

    def run(self, q: np.ndarray) -> np.ndarray:
        """Integer NHWC inputs in, integer output accumulators out (in chunks of
        ``chunk_rows`` rows, so memory stays bounded on any batch size)."""
        one = self._run_reference if self.reference else self._run_fast
        return map_chunks(lambda part: one(part.astype(np.int64, copy=False)), np.asarray(q), self.chunk_rows,
                          np.int64)

    # -- the obvious definition -------------------------------------------------------------
    def _run_reference(self, q: np.ndarray) -> np.ndarray:
        return self._run_graph(q, self.model.input_quant.exp, self._step_reference)

    def _step_reference(self, index: int, layer: IntLayer, q: np.ndarray, exp: int):
        a = layer.attrs
        if layer.is_mac:
            w = truncate_planes(layer.weight.astype(np.int64), a["weight_bits"], self._planes_of(layer))
            if layer.op == "conv":
                kh, kw = w.shape[:2]
                cols = im2col(q, kh, kw, tuple(a["stride"]), tuple(a["pads"]))
                q = np.einsum("nhwk,km->nhwm", cols, w.reshape(-1, w.shape[-1]))
            else:
                q = np.einsum("nk,km->nm", q.reshape(q.shape[0], -1), w)
            if layer.bias is not None:
                q = q + layer.bias.astype(np.int64)
            return q, exp + a["w_exp"]
        if layer.op == "requant":
            return requantize(q, exp, layer.requant, a.get("relu", False)), layer.requant.exp
        if layer.op == "threshold":
            return apply_thresholds(q, layer), layer.out_quant.exp
        return self._shape_op(layer, q), exp

    def _run_graph(self, q, exp, step, bound=None):
        """Run the layers in order, each on the tensors it reads (:meth:`IntModel.inputs_of`);
        a tensor is dropped after its last reader. ``step(index, layer, x, exp[, bound])``
        computes one single-input layer; ``add`` is done here."""
        model = self.model
        with_bound = bound is not None
        state = {-1: (q, exp, bound)}
        last = model.last_uses() if not model.is_chain else None
        for index, layer in enumerate(model.layers):
            ins = model.inputs_of(index)
            if layer.op == "add":
                out = _add(state[ins[0]], state[ins[1]], with_bound)
            elif layer.op == "concat":
                out = _concat([state[j] for j in ins], with_bound)
            else:
                x, e, b = state[ins[0]]
                out = step(index, layer, x, e, b) if with_bound else step(index, layer, x, e) + (None,)
            if last is None:
                state = {index: out}
            else:
                state[index] = out
                for j in set(ins):
                    if last.get(j) == index:
                        del state[j]
        return state[len(model.layers) - 1][0]

    @staticmethod
    def _shape_op(layer: IntLayer, q: np.ndarray) -> np.ndarray:
        a = layer.attrs
        if layer.op == "relu":
            return np.maximum(q, 0)
        if layer.op == "maxpool":
            (kh, kw), (sh, sw) = a["kernel"], a["stride"]
            pads = a.get("pads")
            if pads and any(pads):
                # ONNX pads a max pool with minus infinity: a padded cell never wins (every window
                # holds a real value, pads < kernel); lowering takes padding only on values >= 0,
                # where the hardware's zero padding gives the same
                top, left, bottom, right = (int(p) for p in pads)
                if not (0 <= top < kh and 0 <= bottom < kh and 0 <= left < kw and 0 <= right < kw):
                    raise ValueError(f"layer '{layer.name}': maxpool pads {list(pads)} outside 0..kernel-1 "
                                     f"(kernel {kh}x{kw})")
                low = -np.inf if q.dtype.kind == "f" else np.iinfo(q.dtype).min
                q = np.pad(q, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=low)
            n, h, w, c = q.shape
            if (kh, kw) == (sh, sw):  # non-overlapping windows: a reshape, no window copies
                ho, wo = h // kh, w // kw
                return q[:, :ho * kh, :wo * kw].reshape(n, ho, kh, wo, kw, c).max(axis=(2, 4))
            return sliding_window_view(q, (kh, kw), axis=(1, 2))[:, ::sh, ::sw].max(axis=(-2, -1))
        if layer.op == "flatten":
            return q.reshape(q.shape[0], -1)
        raise ValueError(f"layer '{layer.name}': unknown integer op '{layer.op}'")

    # -- the fast path ----------------------------------------------------------------------
    def _matrix(self, index: int, layer: IntLayer, dtype=np.int64) -> tuple[np.ndarray, int]:
        """Truncated ``(K, N)`` weights as ``dtype`` and the largest column |sum| bound factor,
        cached per planes and dtype (a CIFAR-sized net would otherwise convert its 1.5 M weights
        on every chunk)."""
        key = (index, self.planes, np.dtype(dtype).char)
        if key not in self._weights:
            if np.dtype(dtype) == np.int64:
                w = truncate_planes(layer.weight.astype(np.int64), layer.attrs["weight_bits"], self._planes_of(layer))
                m = w.reshape(-1, w.shape[-1])
                self._weights[key] = (m, int(np.abs(m).sum(axis=0).max(initial=0)))
            else:
                m, colsum = self._matrix(index, layer)
                self._weights[key] = (m.astype(dtype), colsum)
        return self._weights[key]

    def _run_fast(self, q: np.ndarray) -> np.ndarray:
        spec = self.model.input_quant
        bound = max(abs(spec.qmin), abs(spec.qmax))  # largest |value| the current tensor can hold
        return self._run_graph(q.astype(np.float32), spec.exp, self._step_fast, bound).astype(np.int64)

    def _step_fast(self, index: int, layer: IntLayer, x: np.ndarray, exp: int, bound: int):
        a = layer.attrs
        if layer.is_mac:
            colsum = self._matrix(index, layer)[1]
            bias = 0 if layer.bias is None else int(np.abs(layer.bias).max(initial=0))
            bound = bound * colsum + bias
            dtype = _exact_dtype(bound)
            x = x.astype(dtype, copy=False)
            if layer.op == "conv":
                kh, kw = layer.weight.shape[:2]
                cols = im2col(x, kh, kw, tuple(a["stride"]), tuple(a["pads"]))
                n, ho, wo, k = cols.shape
                x = (cols.reshape(-1, k) @ self._matrix(index, layer, dtype)[0]).reshape(n, ho, wo, -1)
            else:
                x = x.reshape(x.shape[0], -1) @ self._matrix(index, layer, dtype)[0]
            if layer.bias is not None:
                x = x + layer.bias.astype(dtype)
            return x, exp + a["w_exp"], bound
        if layer.op == "requant":
            rq = layer.requant
            if x.dtype == np.int64:
                x = requantize(x, exp, rq, a.get("relu", False)).astype(np.float32)
            else:
                if a.get("relu", False):
                    x = np.maximum(x, 0)
                # Scaling an exact integer by a power of two is exact in binary floating
                # point, and np.round is round-half-to-even: QONNX Quant(ROUND) exactly.
                x = np.clip(np.round(x * x.dtype.type(2.0 ** (exp - rq.exp))), rq.qmin, rq.qmax)
                x = x.astype(np.float32, copy=False)
            return x, rq.exp, max(abs(rq.qmin), abs(rq.qmax))
        if layer.op == "threshold":
            rq = layer.out_quant
            return thresholds_fast(x, layer), rq.exp, max(abs(rq.qmin), abs(rq.qmax))
        return self._shape_op(layer, x), exp, bound


def _exact_dtype(bound: int):
    """The narrowest type holding integers up to ``bound`` exactly: float32, float64, int64."""
    if bound < _F32_EXACT:
        return np.float32
    if bound < _F64_EXACT:
        return np.float64
    return np.int64


def _concat(parts: list, with_bound: bool) -> tuple:
    """A ``concat`` layer: every tensor moved onto the finest grid (a left shift), joined on the
    channels (the last axis)."""
    exp = min(e for _, e, _ in parts)
    if not with_bound:
        return np.concatenate([x.astype(np.int64) << (e - exp) for x, e, _ in parts], axis=-1), exp, None
    bound = max(b << (e - exp) for _, e, b in parts)
    dtype = _exact_dtype(bound)
    if dtype == np.int64:
        out = np.concatenate([x.astype(np.int64) << (e - exp) for x, e, _ in parts], axis=-1)
    else:
        out = np.concatenate([x.astype(dtype) * dtype(2.0 ** (e - exp)) for x, e, _ in parts], axis=-1)
    return out, exp, bound


def _add(a: tuple, b: tuple, with_bound: bool) -> tuple:
    """An ``add`` layer: both tensors moved onto the finer grid (a left shift: exact), summed.
    With bounds (the fast path) the sum rides the narrowest exact type; else int64."""
    (xa, ea, ba), (xb, eb, bb) = a, b
    exp = min(ea, eb)
    sa, sb = ea - exp, eb - exp
    if not with_bound:
        return (xa.astype(np.int64) << sa) + (xb.astype(np.int64) << sb), exp, None
    bound = (ba << sa) + (bb << sb)
    dtype = _exact_dtype(bound)
    if dtype == np.int64:
        out = (xa.astype(np.int64) << sa) + (xb.astype(np.int64) << sb)
    else:
        out = xa.astype(dtype) * dtype(2.0**sa) + xb.astype(dtype) * dtype(2.0**sb)
    return out, exp, bound
