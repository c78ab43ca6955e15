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

from flipq.hls.hwplan import HardwarePlan, LayerHw, ValueRange, bits_for, layer_hw, plan_hardware
from flipq.hls.planes import WORD_BITS, active_planes

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
    """Cycles and resources of one bit-serial layer given its shape and input range (for
    models that are not lowered yet; an IntModel goes through :func:`hls_report`)."""
    hw = layer_hw(name=name, kernel=kernel, fan_in=fan_in, n_out=n_out, n_pix=n_pix, weight_bits=weight_bits,
                  group_size=group_size, mask=mask, inp=ValueRange(act_lo, act_hi, 0, act_lo < 0, bits_for(act_lo, act_hi)), pe=pe,
                  frame_elems=frame_elems)
    return hw_cost(hw, planes, frame_elems)


def hw_cost(hw: LayerHw, planes: int | None, frame_elems: int = 0) -> dict:
    if hw.full_planes:  # an average pool's ones: every plane at any run-time planes
        planes = None
    """Cycles and resources of one planned layer (docs/cost_model.md, section by section);
    ``frame_elems``: the input frame the layer buffers (a streaming conv), 0 for none."""
    lanes, act_bits, psum_bits, acc_bits = hw.lanes, hw.act_bits, hw.psum_bits, hw.acc_bits
    depth = 3 + math.ceil(math.log2(max(lanes, 2)))

    thr = threshold_cost(hw)
    depth += thr["depth"]

    steps = matvec_steps(hw.mask, hw.weight_bits, hw.n_words, planes, hw.pe)
    cycles = hw.n_pix * (steps + depth)

    tree = (lanes - 1) * (act_bits + math.ceil(math.log2(max(lanes, 2))) / 2)
    lut_pe = math.ceil(tree + lanes * act_bits / 2 + 2 * psum_bits + acc_bits + PE_CONTROL_LUT)
    ff_pe = math.ceil(lanes * act_bits / 2 + psum_bits + acc_bits + PE_CONTROL_FF)
    weight_mem = hw.n_out * hw.n_groups * hw.weight_bits * hw.n_words * WORD_BITS + hw.n_out * hw.n_groups * 8
    wmem = memory_cost(weight_mem, hw.pe * WORD_BITS)
    fmem = memory_cost(frame_elems * act_bits, lanes * act_bits)
    kept = active_planes(hw.mask, hw.weight_bits, planes)
    return {
        "name": hw.name, "kernel": hw.kernel, "weight_bits": hw.weight_bits, "act_bits": act_bits,
        "fan_in": hw.fan_in, "n_out": hw.n_out, "n_pix": hw.n_pix, "group_size": hw.group_size,
        "n_groups": hw.n_groups, "pe": hw.pe, "planes": min(planes or hw.weight_bits, hw.weight_bits),
        "mean_active_planes": float(kept.mean()) if kept.size else 0.0,
        "steps_per_vector": steps, "cycles": int(cycles),
        "lut": int(hw.pe * lut_pe + wmem["lut"] + fmem["lut"] + thr["lut"] + LAYER_CONTROL_LUT),
        "ff": int(hw.pe * ff_pe + thr["ff"] + LAYER_CONTROL_FF),
        "bram36": int(wmem["bram36"] + fmem["bram36"] + thr["bram36"]), "dsp": 0,
        "weight_storage_bits": int(weight_mem), "threshold_storage_bits": thr["storage_bits"],
    }


def threshold_cost(hw: LayerHw) -> dict:
    """The threshold step after the accumulator (docs/cost_model.md, "Threshold step"): a ROM
    of ``N * L`` thresholds of ``t`` bits, read a column's ``L`` at a time per PE, and
    ``PE * L`` comparators of ``t`` bits whose one-bit results a popcount adds."""
    n_thr = hw.n_thresholds
    if hw.thresholds is None:
        return {"lut": 0, "ff": 0, "bram36": 0, "depth": 0, "storage_bits": 0}
    width = hw.thr_bits
    bits = hw.n_out * n_thr * width
    mem = memory_cost(bits, hw.pe * n_thr * width)
    count_bits = max(n_thr.bit_length(), 1)
    return {"lut": hw.pe * (n_thr * width + n_thr) + mem["lut"], "ff": hw.pe * count_bits,
            "bram36": mem["bram36"], "depth": 1 + math.ceil(math.log2(max(n_thr, 2))),
            "storage_bits": bits}


def hls_report(intmodel, pe: dict | None = None, planes: int | None = None, group_size: int = 0,
               io_type: str = "io_parallel", clock_mhz: float = 100.0, plan: HardwarePlan | None = None) -> dict:
    """Per-layer and total cost of an IntModel's bit-serial datapath at run-time ``planes``.

    ``totals.cycles`` is one sample's latency (layers back to back); ``totals.interval`` is
    the slowest layer (the throughput bound once layers overlap in a dataflow pipeline).
    ``plan``: the model's :class:`~flipq.hls.hwplan.HardwarePlan` when the caller has it
    (``pe`` and ``group_size`` are then the plan's).
    """
    if planes is not None and not 1 <= int(planes) <= 8:
        raise ValueError(f"planes must be in 1..8 (or None for all), got {planes}")
    plan = plan or plan_hardware(intmodel, pe, group_size)
    # the streaming conv buffers its whole input frame; io_parallel holds it in the layer before
    layers = [hw_cost(hw, planes, hw.frame_elems if io_type == "io_stream" else 0) for hw in plan.layers]
    totals = {r: sum(lay[r] for lay in layers) for r in RESOURCES}
    cycles = sum(lay["cycles"] for lay in layers)
    interval = max(lay["cycles"] for lay in layers)
    totals.update(cycles=cycles, interval=interval, clock_mhz=clock_mhz,
                  latency_us=cycles / clock_mhz, throughput_per_s=clock_mhz * 1e6 / interval,
                  weight_storage_bits=sum(lay["weight_storage_bits"] for lay in layers),
                  threshold_storage_bits=sum(lay["threshold_storage_bits"] for lay in layers))
    return {"label": "modeled (cost model; resources are pre-synthesis estimates)", "planes": planes,
            "io_type": io_type, "layers": layers, "totals": totals}


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
