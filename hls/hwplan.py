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
from dataclasses import dataclass, field, replace

import numpy as np

from flipq.hls.fold import (MAX_SIMD, ConvGeometry, FoldedLayer, FoldingError, check_folding, divisors, fold_layer,
                             simd_options)
from flipq.hls.planes import PackedLayer, check_group_bits, pack_layer


class HardwarePlanError(ValueError):
    """A setting the plan cannot take (unknown layer, PE count out of range); names layer and value."""


def bits_for(lo: int, hi: int) -> int:
    """Width of a two's-complement (or unsigned, when ``lo >= 0``) integer holding lo..hi."""
    if lo >= 0:
        return max(int(hi).bit_length(), 1)
    return max(int(max(-lo - 1, hi)).bit_length() + 1, 2)


def add_range(a: "ValueRange", b: "ValueRange") -> "ValueRange":
    """The sum of two tensors on the finer of their grids (an ``add`` layer, exact)."""
    exp = min(a.exp, b.exp)
    sa, sb = a.exp - exp, b.exp - exp
    lo, hi = (a.lo << sa) + (b.lo << sb), (a.hi << sa) + (b.hi << sb)
    return ValueRange(lo, hi, exp, lo < 0 or a.signed or b.signed, bits_for(lo, hi))


def concat_range(parts: list) -> "ValueRange":
    """Tensors joined on the channels, each on the finest of their grids (a ``concat`` layer)."""
    exp = min(r.exp for r in parts)
    lo = min(r.lo << (r.exp - exp) for r in parts)
    hi = max(r.hi << (r.exp - exp) for r in parts)
    return ValueRange(lo, hi, exp, any(r.signed for r in parts) or lo < 0, bits_for(lo, hi))


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
    simd: int  # fan-in rows (activations) a step
    pe: int  # output columns a step
    inp: ValueRange  # the layer's input, on its own exponent
    act_bits: int  # the activation datapath width
    psum_bits: int  # one step: up to simd activations
    acc_bits: int  # the accumulator register (every partial sum, every planes)
    out_lo: int  # the final accumulator's range over every planes
    out_hi: int
    geometry: ConvGeometry | None  # a conv's window geometry (its sliding-window generator)
    mask: np.ndarray = field(repr=False)  # (N, n_groups) uint8: planes that are not all zero
    fold: FoldedLayer = field(default=None, repr=False)  # schedule and per-PE weight ROMs
    bias: np.ndarray | None = field(default=None, repr=False)  # (N,) int64, accumulator scale
    # the threshold step replacing requantization when a ``threshold`` layer follows the MAC:
    # (N, L) int64 on the accumulator's grid, clipped into thr_bits (ascending per row) ...
    thresholds: np.ndarray | None = field(default=None, repr=False)
    thr_signs: np.ndarray | None = field(default=None, repr=False)  # (N,) int64: -1 where descending
    out_quant: dict | None = None  # ... and the QuantSpec dict of the values it produces
    full_planes: bool = False  # run-time ``planes`` does not apply (an average pool's ones)
    simd_choices: tuple = ()  # the SIMD values this layer can take (flipq.hls.fold.simd_options)
    # a depthwise conv (groups = channels) as a vector-vector unit: PE channels a step, SIMD = PE
    # lanes a word (one channel each), one kernel position a step; ``mask`` is then per weight
    # (N, K) and the schedule runs only the rows of a block's own channels (docs/datapath.md)
    depthwise: bool = False

    @property
    def lanes(self) -> int:
        return self.simd

    @property
    def mvau_depth(self) -> int:
        """Pipeline depth of the layer's MVAU loop: ROM read, AND and adder tree over SIMD lanes,
        shift-accumulate, the output step (threshold comparators and their popcount), write."""
        thr = 1 + math.ceil(math.log2(max(self.n_thresholds, 2))) if self.thresholds is not None else 0
        return 3 + (1 if self.depthwise else math.ceil(math.log2(max(self.simd, 2)))) + thr

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
                "n_groups", "simd", "pe", "act_bits", "psum_bits", "acc_bits", "out_lo", "out_hi", "depthwise")
        return {**{k: getattr(self, k) for k in keys}, "exp_in": self.exp_in, "act_max": self.act_max,
                "in_lo": self.inp.lo, "in_hi": self.inp.hi, "n_thresholds": self.n_thresholds,
                "thr_bits": self.thr_bits if self.thresholds is not None else 0, "full_planes": self.full_planes,
                "mvau_depth": self.mvau_depth, "n_rows": self.fold.n_rows, "n_blocks": self.fold.n_blocks,
                "schedule_entries": self.fold.n_entries, "rom_depth": self.fold.rom_depth}


def layer_hw(*, name: str, kernel: str, fan_in: int, n_out: int, weight_bits: int, group_size: int,
             mask: np.ndarray, inp: ValueRange, n_pix: int = 1, pe: int = 1, simd: int | None = None,
             w_exp: int = 0, onnx_node: str | None = None, w_kn: np.ndarray | None = None,
             bias: np.ndarray | None = None, out_range: tuple[int, int] | None = None,
             geometry: ConvGeometry | None = None, threshold=None, full_planes: bool = False,
             in_beat: int | None = None, depthwise: bool = False) -> LayerHw:
    """The derived widths and folding of one layer (the only place they are worked out);
    ``simd`` None takes the widest the layer allows (at most 64); ``w_kn`` the (K, N) integer
    weights when the schedule and ROMs are wanted (a cost estimate from a mask alone works
    without); ``threshold``: the IntModel ``threshold`` layer right after this one, if any;
    ``in_beat``: a dense layer's input elements per stream beat (a flattened conv output streams
    a pixel's channels a beat), which SIMD must divide like a conv's input channels;
    ``depthwise``: a depthwise conv (``mask`` per weight, :func:`depthwise_options`)."""
    g = fan_in if group_size <= 0 or group_size > fan_in else group_size
    cin = geometry.cin if geometry is not None else in_beat
    kw = geometry.kw if geometry is not None else None
    reach = fan_in  # the products one output sums
    if depthwise:
        g, choices = 1, depthwise_options(n_out)
        simd = pe if simd is None else simd
        check_depthwise_folding(name, simd, pe, n_out)
        reach = geometry.kh * geometry.kw
    else:
        choices = tuple(simd_options(fan_in, g, cin, kw))
        if simd is None:
            simd = choices[-1]
        check_folding(name, simd, pe, fan_in, n_out, g, cin, kw)
    amax = inp.amax
    bias_max = 0 if bias is None else int(np.abs(bias).max(initial=0))
    wmax = 2 ** (weight_bits - 1)
    acc_bound = reach * amax * wmax + bias_max
    lo, hi = out_range if out_range is not None else (-acc_bound, acc_bound)
    acc_bits = signed_bits(acc_bound)
    thresholds = signs = out_quant = None
    if threshold is not None:
        thresholds, signs = threshold_step(threshold, n_out, acc_bits, name)
        out_quant = dict(threshold.attrs["quant"])
    fold = fold_layer(mask, weight_bits, fan_in, g, int(simd), int(pe), w_kn)
    return LayerHw(
        name=name, onnx_node=onnx_node or name, kernel=kernel, fan_in=fan_in, n_out=n_out, n_pix=n_pix,
        weight_bits=weight_bits, w_exp=w_exp, group_size=g, n_groups=-(-fan_in // g), simd=int(simd),
        pe=int(pe), inp=inp, act_bits=bits_for(inp.lo, inp.hi), psum_bits=step_psum_bits(1 if depthwise else simd, amax),
        acc_bits=acc_bits, out_lo=lo, out_hi=hi, geometry=geometry, mask=mask, fold=fold,
        bias=bias, thresholds=thresholds, thr_signs=signs, out_quant=out_quant, full_planes=full_planes,
        simd_choices=choices, depthwise=depthwise)


def depthwise_options(channels: int) -> tuple:
    """PE (= SIMD) values a depthwise layer can take: divisors of its channels, at most 64."""
    return tuple(d for d in divisors(channels) if d <= MAX_SIMD)


def check_depthwise_folding(name: str, simd, pe, channels: int) -> None:
    ok = depthwise_options(channels)
    for key, value in (("pe", pe), ("simd", simd)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in ok:
            raise FoldingError(f"depthwise layer '{name}': {key}={value!r} must divide its {channels} channels "
                               f"and be at most {MAX_SIMD} ({key} options: {', '.join(map(str, ok))})")
    if int(simd) != int(pe):
        raise FoldingError(f"depthwise layer '{name}': simd={simd} must equal pe={pe} (a vector-vector unit: "
                           "PE channels a step, one lane each)")


def layer_is_depthwise(layer) -> bool:
    """An integer-model conv with groups = input channels = output channels. Its weights must be
    the block-diagonal matrix lowering writes (the unit reads only a channel's own lane): anything
    else, e.g. an edited intmodel.json, is refused naming the layer."""
    groups = layer.attrs.get("groups", 1) or 1
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise HardwarePlanError(f"layer '{layer.name}': groups={groups!r} must be an int >= 1")
    if layer.op != "conv" or groups == 1:
        return False
    _kh, _kw, cin, cout = layer.weight.shape
    if not int(groups) == cin == cout:
        return False
    off = np.asarray(layer.weight) * (1 - np.eye(cin, dtype=np.int64))
    if np.any(off):
        kh, kw, i, o = (int(v[0]) for v in np.nonzero(off))
        raise HardwarePlanError(f"depthwise layer '{layer.name}' (groups={groups}) has weight {int(off[kh, kw, i, o])} "
                                f"at kernel ({kh}, {kw}) from input channel {i} to output channel {o}: a depthwise "
                                "conv's channel reads only its own input channel")
    return True


def weight_plane_mask(w_kn: np.ndarray, bits: int) -> np.ndarray:
    """(N, K) uint8: per weight, its nonzero planes (its two's-complement bit pattern)."""
    return (np.asarray(w_kn, dtype=np.int64).T & ((1 << bits) - 1)).astype(np.uint8)


def step_psum_bits(simd: int, act_max: int) -> int:
    """Width of one step's partial sum: ``simd`` activations of magnitude up to ``act_max``."""
    return signed_bits(simd * act_max)


def refold(hw: LayerHw, simd: int, pe: int, w_kn: np.ndarray | None = None) -> LayerHw:
    """``hw`` with another SIMD/PE: its schedule and step width redone, and its ROMs when the
    (K, N) integer weights ``w_kn`` are given (the resource model reads which ROM bits vary);
    :func:`plan_hardware` builds the full plan of the folding chosen."""
    if hw.depthwise:
        check_depthwise_folding(hw.name, simd, pe, hw.n_out)
    fold = fold_layer(hw.mask, hw.weight_bits, hw.fan_in, hw.group_size, simd, pe, w_kn)
    return replace(hw, simd=simd, pe=pe, psum_bits=step_psum_bits(1 if hw.depthwise else simd, hw.inp.amax),
                   fold=fold)


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
    # the value range of each ``add`` / ``concat`` layer's output (by integer-model layer name):
    # the exact type its hls4ml merge layer must hold (flipq.hls.bitserial sets it)
    joins: dict = field(default_factory=dict)

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


def plan_hardware(intmodel, pe: dict | None = None, group_size: int = 0, simd: dict | None = None) -> HardwarePlan:
    """Walk the model once: pack every MAC layer's planes, fold it and derive its widths.

    ``pe`` and ``simd`` map layer names to PE / SIMD counts (default: PE 1, the widest SIMD the
    layer allows, at most 64; :mod:`flipq.hls.fold` says which values a layer can take);
    ``group_size`` applies to layers whose BitPlan gives none (0: the whole fan-in).
    """
    pe, simd = dict(pe or {}), dict(simd or {})
    names = [layer.name for layer in intmodel.mac_layers]
    for key, given in (("pe", pe), ("simd", simd)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise HardwarePlanError(f"{key} names layer '{unknown[0]}', which the model does not have "
                                    f"(layers: {', '.join(names)})")
    q = intmodel.input_quant
    first = ValueRange(q.qmin, q.qmax, q.exp, q.signed, q.bits)
    shape = tuple(int(d) for d in intmodel.input_shape)
    # per tensor (layer index, -1 the input): its range, shape and the elements of a stream beat
    # (a flatten keeps the pixel beats hls4ml streams)
    tensors = {-1: (first, shape, shape[-1])}
    layers = []
    for index, layer in enumerate(intmodel.layers):
        ins = intmodel.inputs_of(index)
        cur, shape, beat = tensors[ins[0]]
        if layer.is_mac:
            nxt = intmodel.layers[index + 1] if index + 1 < len(intmodel.layers) else None
            threshold = nxt if nxt is not None and nxt.op == "threshold" and intmodel.inputs_of(index + 1) == [index] \
                else None
            layers.append(_mac_layer(layer, cur, shape, beat, pe.get(layer.name, 1), simd.get(layer.name),
                                     group_size, threshold))
            hw = layers[-1]
            # accumulators travel as signed integers, even where every value is >= 0
            cur = ValueRange(hw.out_lo, hw.out_hi, cur.exp + hw.w_exp, True,
                             bits_for(min(hw.out_lo, -1), hw.out_hi))
        elif layer.op in ("requant", "threshold"):
            if layer.op == "threshold" and (ins[0] != index - 1 or ins[0] < 0 or not intmodel.layers[ins[0]].is_mac):
                raise HardwarePlanError(f"threshold layer '{layer.name}' does not directly follow a dense or "
                                        "conv layer: the bit-serial kernels compare only accumulators")
            s = layer.out_quant
            cur = ValueRange(s.qmin, s.qmax, s.exp, s.signed, s.bits)
        elif layer.op == "relu":
            cur = ValueRange(max(cur.lo, 0), max(cur.hi, 0), cur.exp, cur.signed, cur.bits)
        elif layer.op == "maxpool" and any(layer.attrs.get("pads") or ()) and cur.lo < 0:
            raise HardwarePlanError(f"maxpool layer '{layer.name}' pads a tensor whose values reach {cur.lo}: the "
                                    "hardware pads with zero, exact only on values >= 0")
        elif layer.op == "add":
            cur = add_range(cur, tensors[ins[1]][0])
        elif layer.op == "concat":
            cur = concat_range([tensors[j][0] for j in ins])
        if layer.attrs.get("out_shape"):
            shape = tuple(int(d) for d in layer.attrs["out_shape"])
            if layer.op != "flatten":
                beat = shape[-1]
        tensors[index] = (cur, shape, beat)
    cur = tensors[len(intmodel.layers) - 1][0]
    output = ValueRange(cur.lo, cur.hi, cur.exp, cur.signed, max(cur.bits, 2))
    joins = {layer.name: tensors[i][0] for i, layer in enumerate(intmodel.layers) if layer.op in ("add", "concat")}
    return HardwarePlan(tuple(layers), first, output, joins)


def _mac_layer(layer, inp: ValueRange, in_shape: tuple, beat: int, n_pe, n_simd, default_group: int,
               threshold=None) -> LayerHw:
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
    bias = None if layer.bias is None else np.asarray(layer.bias, dtype=np.int64).reshape(-1)
    out_shape = a.get("out_shape") or [packed.n_out]
    n_pix, geometry = 1, None
    if layer.op == "conv":
        n_pix = int(np.prod(out_shape[:-1]))
        kh, kw, cin = layer.weight.shape[:3]
        (sy, sx), pads = a["stride"], a.get("pads", [0, 0, 0, 0])
        geometry = ConvGeometry(in_h=int(in_shape[0]), in_w=int(in_shape[1]), cin=int(cin), kh=int(kh),
                                kw=int(kw), sy=int(sy), sx=int(sx), pad_top=int(pads[0]), pad_left=int(pads[1]),
                                pad_bottom=int(pads[2]), pad_right=int(pads[3]),
                                out_h=int(out_shape[0]), out_w=int(out_shape[1]))
    w_kn = np.asarray(layer.weight, dtype=np.int64).reshape(-1, layer.weight.shape[-1])
    depthwise = layer_is_depthwise(layer)
    mask, gsize = (weight_plane_mask(w_kn, bits), 1) if depthwise else (packed.mask, packed.group_size)
    try:
        return layer_hw(
            name=layer.name, onnx_node=a.get("onnx_node", layer.name), kernel=layer.op, fan_in=packed.fan_in,
            n_out=packed.n_out, n_pix=n_pix, weight_bits=bits, w_exp=int(a["w_exp"]), depthwise=depthwise,
            group_size=gsize, mask=mask, w_kn=w_kn, inp=inp, pe=n_pe, simd=n_simd,
            bias=bias, out_range=truncation_range(w_kn, bits, inp.lo, inp.hi, bias), geometry=geometry,
            threshold=threshold, full_planes=bool(a.get("full_planes", False)),
            in_beat=beat if layer.op == "dense" else None)
    except FoldingError as e:
        raise HardwarePlanError(str(e)) from None


def output_range_bits(intmodel, plan: HardwarePlan | None = None) -> tuple[int, bool, int]:
    """(bits, signed, exp) of the model's output values, safe for every ``planes`` setting.

    >>> bits, signed, exp = output_range_bits(intmodel)   # doctest: +SKIP
    """
    out = (plan or plan_hardware(intmodel)).output
    return out.bits, out.signed, out.exp
