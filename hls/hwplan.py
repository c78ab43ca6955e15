"""The hardware plan: every per-layer fact of the bit-serial datapath, computed once from an
IntModel (numpy only, so the cost model stays cheap).

The kernel generator (``flipq.hls.bitserial``), the cost model (``flipq.hls.cost``) and the
output metadata (``overlays``) all read widths from here; none works them out again.

>>> plan = plan_hardware(intmodel, pe={"conv1": 2}, group_size=16)   # doctest: +SKIP
>>> plan.layer("conv1").acc_bits, plan.output.bits                      # doctest: +SKIP

Value ranges hold for *every* run-time ``planes``: dropping low planes truncates a weight
toward minus infinity, so a weight ``w`` of ``B`` bits ranges over ``[trunc(w), w]`` with
``trunc(w) = min(w, -2**(B-1) if w < 0 else 0)``. The accumulator register is sized for the
looser ``K * max|a| * 2**(B-1) + max|bias|``: partial sums (some groups or planes not yet
added) are not bounded by the final sum's range.

A MAC layer directly followed by a ``threshold`` layer carries that step (``thresholds``,
``thr_signs``, ``out_quant``): the kernel compares its accumulator against the thresholds in
place of requantizing it (:func:`threshold_step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flipq.hls.planes import WORD_BITS, PackedLayer, check_group_bits, pack_layer


class HardwarePlanError(ValueError):
    """A setting the plan cannot take (unknown layer, PE count out of range); names layer and value."""


def bits_for(lo: int, hi: int) -> int:
    """Width of a two's-complement (or unsigned, when ``lo >= 0``) integer holding lo..hi."""
    if lo >= 0:
        return max(int(hi).bit_length(), 1)
    return max(int(max(-lo - 1, hi)).bit_length() + 1, 2)


def signed_bits(bound: int) -> int:
    """Width of a two's-complement integer holding ``-bound .. bound``."""
    return bits_for(-int(bound), int(bound))


@dataclass(frozen=True)
class ValueRange:
    """Integers ``lo .. hi`` at scale ``2**exp``, held in a ``bits``-wide (``signed``) register."""

    lo: int
    hi: int
    exp: int
    signed: bool
    bits: int

    @property
    def amax(self) -> int:
        return max(abs(self.lo), abs(self.hi))


@dataclass(frozen=True, eq=False)
class LayerHw:
    """One MAC layer as the bit-serial datapath builds it."""

    name: str
    onnx_node: str
    kernel: str  # "conv" | "dense"
    fan_in: int  # K (kh * kw * cin for a conv)
    n_out: int  # N, output columns
    n_pix: int  # output pixels per inference (1 for dense)
    weight_bits: int  # B, stored planes
    w_exp: int
    group_size: int  # effective: 1..K
    n_groups: int
    n_words: int  # 64-bit words per group and plane
    lanes: int  # activations added per step (one word's worth)
    pe: int
    inp: ValueRange  # the layer's input, on its own exponent
    act_bits: int  # the activation datapath width
    psum_bits: int  # one plane of one group: up to group_size activations
    acc_bits: int  # the accumulator register (every partial sum, every planes)
    out_lo: int  # the final accumulator's range over every planes
    out_hi: int
    frame_elems: int  # a conv's zero-padded input frame (what io_stream buffers); 0 for dense
    mask: np.ndarray = field(repr=False)  # (N, n_groups) uint8: planes that are not all zero
    words: np.ndarray | None = field(default=None, repr=False)  # (N, n_groups, B, n_words) uint64
    bias: np.ndarray | None = field(default=None, repr=False)  # (N,) int64, accumulator scale
    # the threshold step replacing requantization when a ``threshold`` layer follows the MAC:
    # (N, L) int64 on the accumulator's grid, clipped into thr_bits (ascending per row) ...
    thresholds: np.ndarray | None = field(default=None, repr=False)
    thr_signs: np.ndarray | None = field(default=None, repr=False)  # (N,) int64: -1 where descending
    out_quant: dict | None = None  # ... and the QuantSpec dict of the values it produces
    full_planes: bool = False  # run-time ``planes`` does not apply (an average pool's ones)

    @property
    def exp_in(self) -> int:
        return self.inp.exp

    @property
    def act_max(self) -> int:
        return self.inp.amax

    @property
    def n_thresholds(self) -> int:
        """L, thresholds per output column (0: no threshold step)."""
        return 0 if self.thresholds is None else int(self.thresholds.shape[1])

    @property
    def thr_bits(self) -> int:
        """Width of a threshold and of the signed accumulator it is compared with: one bit
        more than the register, so ``-acc`` and the never-reached ``max + 1`` both fit."""
        return self.acc_bits + 1

    def to_dict(self) -> dict:
        """The scalar facts (what the hls4ml pass and ``csim_meta.json`` carry)."""
        keys = ("name", "onnx_node", "kernel", "fan_in", "n_out", "n_pix", "weight_bits", "w_exp", "group_size",
                "n_groups", "n_words", "lanes", "pe", "act_bits", "psum_bits", "acc_bits", "out_lo", "out_hi")
        return {**{k: getattr(self, k) for k in keys}, "exp_in": self.exp_in, "act_max": self.act_max,
                "in_lo": self.inp.lo, "in_hi": self.inp.hi, "n_thresholds": self.n_thresholds,
                "thr_bits": self.thr_bits if self.thresholds is not None else 0, "full_planes": self.full_planes}


def layer_hw(*, name: str, kernel: str, fan_in: int, n_out: int, weight_bits: int, group_size: int,
             mask: np.ndarray, inp: ValueRange, n_pix: int = 1, pe: int = 1, w_exp: int = 0,
             onnx_node: str | None = None, words: np.ndarray | None = None, bias: np.ndarray | None = None,
             out_range: tuple[int, int] | None = None, frame_elems: int = 0, threshold=None,
             full_planes: bool = False) -> LayerHw:
    """The derived widths of one layer (the only place they are worked out); ``threshold``:
    the IntModel ``threshold`` layer right after this one, if any."""
    g = fan_in if group_size <= 0 or group_size > fan_in else group_size
    n_words = -(-g // WORD_BITS)
    amax = inp.amax
    bias_max = 0 if bias is None else int(np.abs(bias).max(initial=0))
    wmax = 2 ** (weight_bits - 1)
    acc_bound = fan_in * amax * wmax + bias_max
    lanes = min(g, WORD_BITS)
    # one step adds `lanes` activations; a group of n_words words sums their partial sums
    psum_bits = signed_bits(lanes * amax) + (n_words > 1) * math.ceil(math.log2(n_words))
    lo, hi = out_range if out_range is not None else (-acc_bound, acc_bound)
    acc_bits = signed_bits(acc_bound)
    thresholds = signs = out_quant = None
    if threshold is not None:
        thresholds, signs = threshold_step(threshold, n_out, acc_bits, name)
        out_quant = dict(threshold.attrs["quant"])
    return LayerHw(
        name=name, onnx_node=onnx_node or name, kernel=kernel, fan_in=fan_in, n_out=n_out, n_pix=n_pix,
        weight_bits=weight_bits, w_exp=w_exp, group_size=g, n_groups=-(-fan_in // g), n_words=n_words,
        lanes=lanes, pe=pe, inp=inp, act_bits=bits_for(inp.lo, inp.hi), psum_bits=psum_bits,
        acc_bits=acc_bits, out_lo=lo, out_hi=hi, frame_elems=frame_elems, mask=mask, words=words,
        bias=bias, thresholds=thresholds, thr_signs=signs, out_quant=out_quant, full_planes=full_planes)


def threshold_step(layer, n_out: int, acc_bits: int, mac_name: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``threshold`` layer's (thresholds, signs) for the kernel after MAC layer ``mac_name``.

    Every ``s * acc`` lies inside the ``acc_bits`` register, ``-2**(c-1) < s * acc < 2**(c-1)``,
    so a threshold below the register's minimum counts exactly like the minimum (always met)
    and one above its maximum like ``max + 1`` (never met): clipping keeps every comparison's
    outcome and bounds the ROM width at ``acc_bits + 1``.
    """
    t = np.asarray(layer.thresholds, dtype=np.int64)
    q = layer.out_quant
    if t.ndim != 2 or t.shape != (n_out, q.qmax - q.qmin):
        raise HardwarePlanError(f"threshold layer '{layer.name}' after '{mac_name}': thresholds of shape "
                                f"{t.shape}, expected ({n_out}, {q.qmax - q.qmin}) (output columns, qmax - qmin)")
    if t.shape[1] and (np.diff(t, axis=1) < 0).any():
        raise HardwarePlanError(f"threshold layer '{layer.name}': thresholds are not ascending in every row")
    top = 2 ** (acc_bits - 1)
    return np.clip(t, -top, top), layer.signs.astype(np.int64)



@dataclass(frozen=True, eq=False)
class HardwarePlan:
    """Every MAC layer's :class:`LayerHw`, in model order, and the model's input/output ranges."""

    layers: tuple[LayerHw, ...]
    input: ValueRange
    output: ValueRange  # the model's output values, for every planes

    def layer(self, name: str) -> LayerHw:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)


def channel_ranges(w_kn: np.ndarray, bits: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output column (lo, hi) of a bias-free accumulator over every ``planes`` (dropped planes
    truncate a weight toward minus infinity), inputs in ``lo .. hi``."""
    w = np.asarray(w_kn, dtype=np.int64)
    w_low = np.minimum(w, (w >> (bits - 1)) << (bits - 1))
    corners = np.stack([w_low * lo, w_low * hi, w * lo, w * hi])
    return corners.min(axis=0).sum(axis=0), corners.max(axis=0).sum(axis=0)


def truncation_range(w_kn: np.ndarray, bits: int, lo: int, hi: int, bias=None) -> tuple[int, int]:
    """(lo, hi) of a layer's final accumulators over every ``planes``, inputs in ``lo .. hi``."""
    acc_lo, acc_hi = channel_ranges(w_kn, bits, lo, hi)
    if bias is not None:
        b = np.asarray(bias, dtype=np.int64).reshape(-1)
        acc_hi, acc_lo = acc_hi + b, acc_lo + b
    return int(acc_lo.min(initial=0)), int(acc_hi.max(initial=0))


def plan_hardware(intmodel, pe: dict | None = None, group_size: int = 0) -> HardwarePlan:
    """Walk the model once: pack every MAC layer's planes and derive its widths.

    ``pe`` maps layer names to PE counts (default 1); ``group_size`` applies to layers whose
    BitPlan gives none (0: the whole fan-in).
    """
    pe = dict(pe or {})
    names = [layer.name for layer in intmodel.mac_layers]
    unknown = sorted(set(pe) - set(names))
    if unknown:
        raise HardwarePlanError(f"pe names layer '{unknown[0]}', which the model does not have "
                                f"(layers: {', '.join(names)})")
    q = intmodel.input_quant
    cur = ValueRange(q.qmin, q.qmax, q.exp, q.signed, q.bits)
    first = cur
    layers = []
    for index, layer in enumerate(intmodel.layers):
        if layer.is_mac:
            nxt = intmodel.layers[index + 1] if index + 1 < len(intmodel.layers) else None
            threshold = nxt if nxt is not None and nxt.op == "threshold" else None
            layers.append(_mac_layer(layer, cur, pe.get(layer.name, 1), group_size, threshold))
            hw = layers[-1]
            # accumulators travel as signed integers, even where every value is >= 0
            cur = ValueRange(hw.out_lo, hw.out_hi, cur.exp + hw.w_exp, True,
                             bits_for(min(hw.out_lo, -1), hw.out_hi))
        elif layer.op in ("requant", "threshold"):
            if layer.op == "threshold" and (index == 0 or not intmodel.layers[index - 1].is_mac):
                raise HardwarePlanError(f"threshold layer '{layer.name}' does not directly follow a dense or "
                                        "conv layer: the bit-serial kernels compare only accumulators")
            s = layer.out_quant
            cur = ValueRange(s.qmin, s.qmax, s.exp, s.signed, s.bits)
        elif layer.op == "relu":
            cur = ValueRange(max(cur.lo, 0), max(cur.hi, 0), cur.exp, cur.signed, cur.bits)
    output = ValueRange(cur.lo, cur.hi, cur.exp, cur.signed, max(cur.bits, 2))
    return HardwarePlan(tuple(layers), first, output)


def _mac_layer(layer, inp: ValueRange, n_pe, default_group: int, threshold=None) -> LayerHw:
    a = layer.attrs
    bits = int(a["weight_bits"])
    # declared group widths fix the layer's groups (0: one group per column); the default
    # group size is for layers without them
    gs = int(a.get("group_size", 0) or (0 if a.get("group_bits") is not None else default_group))
    if gs < 0:
        raise HardwarePlanError(f"layer '{layer.name}': group_size={gs} must be >= 0")
    packed: PackedLayer = pack_layer(layer.weight, bits, gs, layer.name)
    if a.get("group_bits") is not None:
        check_group_bits(packed, a["group_bits"], layer.name)
    if isinstance(n_pe, bool) or not isinstance(n_pe, (int, np.integer)) or not 1 <= n_pe <= packed.n_out:
        raise HardwarePlanError(f"layer '{layer.name}': pe={n_pe!r} must be an int in 1..{packed.n_out} "
                                "(output columns)")
    bias = None if layer.bias is None else np.asarray(layer.bias, dtype=np.int64).reshape(-1)
    out_shape = a.get("out_shape") or [packed.n_out]
    n_pix, frame = 1, 0
    if layer.op == "conv":
        n_pix = int(np.prod(out_shape[:-1]))
        kh, kw, cin = layer.weight.shape[:3]
        sy, sx = a["stride"]
        # hls4ml streams the zero-padded frame: what a streaming conv buffers
        frame = ((out_shape[0] - 1) * sy + kh) * ((out_shape[1] - 1) * sx + kw) * cin
    w_kn = np.asarray(layer.weight, dtype=np.int64).reshape(-1, layer.weight.shape[-1])
    return layer_hw(
        name=layer.name, onnx_node=a.get("onnx_node", layer.name), kernel=layer.op, fan_in=packed.fan_in,
        n_out=packed.n_out, n_pix=n_pix, weight_bits=bits, w_exp=int(a["w_exp"]), group_size=packed.group_size,
        mask=packed.mask, words=packed.words, inp=inp, pe=int(n_pe), bias=bias,
        out_range=truncation_range(w_kn, bits, inp.lo, inp.hi, bias), frame_elems=frame, threshold=threshold,
        full_planes=bool(a.get("full_planes", False)))


def output_range_bits(intmodel, plan: HardwarePlan | None = None) -> tuple[int, bool, int]:
    """(bits, signed, exp) of the model's output values, safe for every ``planes`` setting.

    >>> bits, signed, exp = output_range_bits(intmodel)   # doctest: +SKIP
    """
    out = (plan or plan_hardware(intmodel)).output
    return out.bits, out.signed, out.exp
