"""Analytical cycle and resource model of flipq's bit-serial layers (numpy only).

The formulas are in docs/cost_model.md; this module is their executable form. Cycles come
from the weights themselves: a plane that is all zero in a group costs nothing, and
run-time ``planes`` drops the low planes, so cycles fall with both.

>>> report = hls_report(intmodel, pe={"conv1": 4}, planes=3)     # doctest: +SKIP
>>> check_fits(report["totals"], {"lut": 53200, "ff": 106400, "bram36": 140, "dsp": 220})  # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

from flipq.hls.planes import WORD_BITS, active_planes, input_ranges, pack_layer

BRAM36_BITS = 36 * 1024
BRAM36_PORT_BITS = 72  # simple dual port, one read port per block
LUTRAM_LIMIT_BITS = 16 * 1024  # smaller memories go to distributed RAM
LUTRAM_BITS_PER_LUT = 64
PE_CONTROL_LUT = 40
PE_CONTROL_FF = 32
LAYER_CONTROL_LUT = 120
LAYER_CONTROL_FF = 100
RESOURCES = ("lut", "ff", "bram36", "dsp")


class ResourceError(ValueError):
    """A design that does not fit the device; the message lists every resource over its limit."""


def _bits_for(lo: int, hi: int) -> int:
    """Width of a two's-complement (or unsigned, when lo >= 0) integer holding lo..hi."""
    if lo >= 0:
        return max(int(hi).bit_length(), 1)
    return max(int(max(-lo - 1, hi)).bit_length() + 1, 2)


def matvec_steps(mask: np.ndarray, bits: int, n_words: int, planes: int | None, pe: int) -> int:
    """PE steps for one activation vector: columns run ``pe`` at a time in lock-step, each
    block as long as its slowest column; a column steps once per active plane and word."""
    per_col = active_planes(mask, bits, planes).sum(axis=1) * n_words  # (N,)
    n = per_col.shape[0]
    pad = (-n) % pe
    blocks = np.concatenate([per_col, np.zeros(pad, dtype=per_col.dtype)]).reshape(-1, pe)
    return int(blocks.max(axis=1).sum())


def memory_cost(bits: int, port_bits: int = WORD_BITS) -> dict:
    """A ROM/RAM of ``bits``: distributed RAM when small, else BRAM36 (enough for the ports)."""
    if bits <= 0:
        return {"lut": 0, "bram36": 0}
    if bits <= LUTRAM_LIMIT_BITS:
        return {"lut": math.ceil(bits / LUTRAM_BITS_PER_LUT), "bram36": 0}
    return {"lut": 0, "bram36": max(math.ceil(bits / BRAM36_BITS), math.ceil(port_bits / BRAM36_PORT_BITS))}


def layer_cost(*, name: str, kernel: str, fan_in: int, n_out: int, n_pix: int, weight_bits: int, act_lo: int,
               act_hi: int, group_size: int, mask: np.ndarray, planes: int | None, pe: int,
               frame_elems: int = 0) -> dict:
    """Cycles and resources of one bit-serial layer (docs/cost_model.md, section by section)."""
    g = fan_in if group_size <= 0 or group_size > fan_in else group_size
    n_groups = -(-fan_in // g)
    n_words = -(-g // WORD_BITS)
    lanes = min(g, WORD_BITS)
    act_bits = _bits_for(act_lo, act_hi)
    amax = max(abs(act_lo), abs(act_hi))
    psum_bits = _bits_for(-lanes * amax, lanes * amax) + (n_words > 1) * math.ceil(math.log2(n_words))
    acc_bits = _bits_for(-fan_in * amax * 2 ** (weight_bits - 1), fan_in * amax * 2 ** (weight_bits - 1))
    depth = 3 + math.ceil(math.log2(max(lanes, 2)))

    steps = matvec_steps(mask, weight_bits, n_words, planes, pe)
    cycles = n_pix * (steps + depth)

    tree = (lanes - 1) * (act_bits + math.ceil(math.log2(max(lanes, 2))) / 2)
    lut_pe = math.ceil(tree + lanes * act_bits / 2 + 2 * psum_bits + acc_bits + PE_CONTROL_LUT)
    ff_pe = math.ceil(lanes * act_bits / 2 + psum_bits + acc_bits + PE_CONTROL_FF)
    weight_mem = n_out * n_groups * weight_bits * n_words * WORD_BITS + n_out * n_groups * 8
    wmem = memory_cost(weight_mem, pe * WORD_BITS)
    fmem = memory_cost(frame_elems * act_bits, lanes * act_bits)
    kept = active_planes(mask, weight_bits, planes)
    return {
        "name": name, "kernel": kernel, "weight_bits": weight_bits, "act_bits": act_bits,
        "fan_in": fan_in, "n_out": n_out, "n_pix": n_pix, "group_size": g, "n_groups": n_groups,
        "pe": pe, "planes": min(planes or weight_bits, weight_bits),
        "mean_active_planes": float(kept.mean()) if kept.size else 0.0,
        "steps_per_vector": steps, "cycles": int(cycles),
        "lut": int(pe * lut_pe + wmem["lut"] + fmem["lut"] + LAYER_CONTROL_LUT),
        "ff": int(pe * ff_pe + LAYER_CONTROL_FF),
        "bram36": int(wmem["bram36"] + fmem["bram36"]), "dsp": 0,
        "weight_storage_bits": int(weight_mem),
    }


def hls_report(intmodel, pe: dict | None = None, planes: int | None = None, group_size: int = 0,
               io_type: str = "io_parallel", clock_mhz: float = 100.0) -> dict:
    """Per-layer and total cost of an IntModel's bit-serial datapath at run-time ``planes``.

    ``totals.cycles`` is one sample's latency (layers back to back); ``totals.interval`` is
    the slowest layer (the throughput bound once layers overlap in a dataflow pipeline).
    """
    pe = dict(pe or {})
    names = [layer.name for layer in intmodel.mac_layers]
    unknown = sorted(set(pe) - set(names))
    if unknown:
        raise ValueError(f"pe names layer '{unknown[0]}', which the model does not have (layers: {', '.join(names)})")
    if planes is not None and not 1 <= int(planes) <= 8:
        raise ValueError(f"planes must be in 1..8 (or None for all), got {planes}")
    ranges = input_ranges(intmodel)
    layers = []
    for layer in intmodel.mac_layers:
        a = layer.attrs
        bits = int(a["weight_bits"])
        gs = int(a.get("group_size", 0) or group_size)
        packed = pack_layer(layer.weight, bits, gs, layer.name)
        n_pe = int(pe.get(layer.name, 1))
        if not 1 <= n_pe <= packed.n_out:
            raise ValueError(f"layer '{layer.name}': pe={n_pe} must be in 1..{packed.n_out}")
        _, lo, hi = ranges[layer.name]
        out_shape = a.get("out_shape") or [packed.n_out]
        n_pix = int(np.prod(out_shape[:-1])) if layer.op == "conv" else 1
        frame = 0
        if layer.op == "conv" and io_type == "io_stream":
            # the streaming conv buffers its whole (zero-padded, as hls4ml streams it) input frame
            kh, kw, cin = layer.weight.shape[:3]
            sy, sx = a["stride"]
            frame = ((out_shape[0] - 1) * sy + kh) * ((out_shape[1] - 1) * sx + kw) * cin
        layers.append(layer_cost(name=layer.name, kernel=layer.op, fan_in=packed.fan_in, n_out=packed.n_out,
                                 n_pix=n_pix, weight_bits=bits, act_lo=lo, act_hi=hi, group_size=gs,
                                 mask=packed.mask, planes=planes, pe=n_pe, frame_elems=frame))
    totals = {r: sum(lay[r] for lay in layers) for r in RESOURCES}
    cycles = sum(lay["cycles"] for lay in layers)
    interval = max(lay["cycles"] for lay in layers)
    totals.update(cycles=cycles, interval=interval, clock_mhz=clock_mhz,
                  latency_us=cycles / clock_mhz, throughput_per_s=clock_mhz * 1e6 / interval,
                  weight_storage_bits=sum(lay["weight_storage_bits"] for lay in layers))
    return {"planes": planes, "io_type": io_type, "layers": layers, "totals": totals}


def check_fits(totals: dict, limits: dict) -> None:
    """Raise :class:`ResourceError` naming every resource the design uses beyond ``limits``."""
    over = []
    for key, limit in limits.items():
        if key not in totals:
            raise ValueError(f"limit on unknown resource '{key}' (the report has {', '.join(RESOURCES)})")
        used = totals[key]
        if used > limit:
            over.append(f"{key} {used} > {limit} ({100.0 * used / limit:.1f} %)")
    if over:
        raise ResourceError("design does not fit: " + "; ".join(over))
