"""Analytical cycle and resource model of flipq's folded bit-serial layers (numpy only).

The formulas are in docs/cost_model.md; this module is their executable form, and the cycles
are the ones the generated C++ counts when built for simulation (``flipq.hls.fold``). Cycles
come from the weights themselves: a (group, plane) that is all zero in every column of a PE
block is not in the schedule, and run-time ``planes`` shortens every block's schedule.

>>> report = hls_report(intmodel, pe={"conv1": 4}, planes=3)     # doctest: +SKIP
>>> check_fits(report["totals"], {"lut": 53200, "ff": 106400, "bram36": 140, "dsp": 220})  # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

from flipq.hls.fold import ConvGeometry, lowest_plane, mvau_cycles, swg_cycles
from flipq.hls.hwplan import HardwarePlan, LayerHw, ValueRange, bits_for, layer_hw, plan_hardware
from flipq.hls.planes import active_planes
from flipq.hls.rtlcost import mvau_cycles as rtl_mvau_cycles

BRAM36_BITS = 36 * 1024
BRAM36_PORT_BITS = 72  # simple dual port, one read port per block
LUTRAM_LIMIT_BITS = 16 * 1024  # smaller memories go to distributed RAM
LUTRAM_BITS_PER_LUT = 64
PE_CONTROL_LUT = 40
PE_CONTROL_FF = 32
LAYER_CONTROL_LUT = 120
LAYER_CONTROL_FF = 100
SWG_CONTROL_LUT = 80
SWG_CONTROL_FF = 60
RESOURCES = ("lut", "ff", "bram36", "dsp")
LABEL = "modeled (cost model; resources are pre-synthesis estimates)"


class ResourceError(ValueError):
    """A design that does not fit the device; the message lists every resource over its limit."""


def memory_cost(bits: int, port_bits: int = 64, copies: int = 1) -> dict:
    """``copies`` ROMs/RAMs of ``bits`` each, read ``port_bits`` a cycle: distributed RAM when
    small, else BRAM36 (enough blocks for the port width)."""
    if bits <= 0 or copies <= 0:
        return {"lut": 0, "bram36": 0}
    if bits <= LUTRAM_LIMIT_BITS:
        return {"lut": copies * math.ceil(bits / LUTRAM_BITS_PER_LUT), "bram36": 0}
    return {"lut": 0, "bram36": copies * max(math.ceil(bits / BRAM36_BITS), math.ceil(port_bits / BRAM36_PORT_BITS))}


def layer_cost(*, name: str, kernel: str, fan_in: int, n_out: int, n_pix: int, weight_bits: int, act_lo: int,
               act_hi: int, group_size: int, mask: np.ndarray, planes: int | None, pe: int,
               simd: int | None = None, geometry: ConvGeometry | None = None) -> dict:
    """Cycles and resources of one bit-serial layer given its shape, plane masks and input range
    (for models that are not lowered yet; an IntModel goes through :func:`hls_report`)."""
    hw = layer_hw(name=name, kernel=kernel, fan_in=fan_in, n_out=n_out, n_pix=n_pix, weight_bits=weight_bits,
                  group_size=group_size, mask=mask, pe=pe, simd=simd, geometry=geometry,
                  inp=ValueRange(act_lo, act_hi, 0, act_lo < 0, bits_for(act_lo, act_hi)))
    return hw_cost(hw, planes)


def adder_tree_luts(lanes: int, bits: int) -> int:
    """LUTs of a binary adder tree over ``lanes`` values of ``bits`` bits: level ``l`` has
    ``ceil(lanes / 2**l)`` adders of ``bits + l - 1`` bits, one LUT a bit (a carry chain)."""
    luts, width, n = 0, bits, lanes
    while n > 1:
        luts += (n // 2) * width
        n, width = n - n // 2, width + 1
    return luts


def rtl_layer_cycles(hw: LayerHw, planes: int | None) -> dict:
    """Per stage of the layer's RTL wrapper, its cycles per sample, calibrated on Verilator
    (:mod:`flipq.hls.rtlcost`): the MVAU ``n_pix * max(T, R)``, a conv's window generator
    ``max(out_h * out_w * R, in_h * in_w)`` (it pads by itself)."""
    out = {"mvau": rtl_mvau_cycles(hw, planes)}
    if hw.geometry is not None:
        g = hw.geometry
        out["swg"] = max(g.out_h * g.out_w * hw.fold.n_rows, g.in_h * g.in_w)
    return out


def layer_cycles(hw: LayerHw, planes: int | None, io_type: str = "io_parallel") -> dict:
    """Per process of the layer's HLS kernels, the cycles one sample takes (what the C-sim counts,
    its trip-count check): ``mvau``, and ``swg`` for a conv's sliding-window generator. They run
    side by side (dataflow)."""
    lowest = lowest_plane(hw.weight_bits, planes, hw.full_planes)
    out = {"mvau": mvau_cycles(hw.fold, hw.n_pix, lowest, hw.mvau_depth)}
    if hw.geometry is not None:
        out["swg"] = swg_cycles(hw.geometry.streamed(io_type), hw.fold.n_rows)
    return out


def hw_cost(hw: LayerHw, planes: int | None, io_type: str = "io_parallel") -> dict:
    """Cycles and resources of one planned layer (docs/cost_model.md, section by section)."""
    simd, pe, act_bits, psum_bits, acc_bits = hw.simd, hw.pe, hw.act_bits, hw.psum_bits, hw.acc_bits
    fold = hw.fold
    procs = layer_cycles(hw, planes, io_type)
    rtl = rtl_layer_cycles(hw, planes)
    lowest = lowest_plane(hw.weight_bits, planes, hw.full_planes)

    # one PE: SIMD AND gates feeding an adder tree, the shift-accumulate, its pipeline registers
    tree = adder_tree_luts(simd, act_bits)
    lut_pe = math.ceil(tree + simd * act_bits / 2 + 2 * psum_bits + acc_bits + PE_CONTROL_LUT)
    ff_pe = math.ceil(simd * act_bits / 2 + psum_bits + acc_bits + PE_CONTROL_FF)
    # PE weight ROMs of SIMD-bit words; the activation ping-pong buffer, one bank per lane
    wmem = memory_cost(fold.rom_depth * simd, simd, copies=pe)
    amem = memory_cost(2 * fold.n_rows * act_bits, act_bits, copies=simd)
    entries = max(fold.n_entries, 1)
    sched_bits = entries * (2 * bits_for(0, fold.n_rows) + 3 + bits_for(0, fold.rom_depth)) \
        + fold.n_blocks * hw.weight_bits * bits_for(0, entries)
    smem = memory_cost(sched_bits, sched_bits // entries)
    thr = threshold_cost(hw)
    out_ff = hw.n_out * max(acc_bits if hw.thresholds is None else max(hw.n_thresholds.bit_length(), 1), 1)
    lut = pe * lut_pe + wmem["lut"] + amem["lut"] + smem["lut"] + thr["lut"] + LAYER_CONTROL_LUT
    ff = pe * ff_pe + thr["ff"] + out_ff + LAYER_CONTROL_FF
    bram = wmem["bram36"] + amem["bram36"] + smem["bram36"] + thr["bram36"]
    line_bits = 0
    if hw.geometry is not None:
        geo = hw.geometry.streamed(io_type)
        # line buffer: kh rows of the input, one bank per channel (a pixel written a cycle)
        line_bits = geo.kh * geo.in_w * geo.cin * act_bits
        # a word spanning kernel positions reads that many pixels a cycle: banks cyclic by kw too
        banks = geo.cin * (geo.kw if simd > geo.cin else 1)
        lmem = memory_cost(geo.kh * geo.in_w * geo.cin * act_bits // banks, act_bits, copies=banks)
        lut += lmem["lut"] + SWG_CONTROL_LUT + simd * act_bits * math.ceil(math.log2(max(geo.cin // simd, 2)))
        ff += simd * act_bits + SWG_CONTROL_FF
        bram += lmem["bram36"]
    weight_mem = int(fold.rom_depth * simd * pe)
    kept = active_planes(hw.mask, hw.weight_bits, planes if not hw.full_planes else None)
    return {
        "name": hw.name, "kernel": hw.kernel, "weight_bits": hw.weight_bits, "act_bits": act_bits,
        "fan_in": hw.fan_in, "n_out": hw.n_out, "n_pix": hw.n_pix, "group_size": hw.group_size,
        "n_groups": hw.n_groups, "simd": simd, "pe": pe, "planes": min(planes or hw.weight_bits, hw.weight_bits),
        "mean_active_planes": float(kept.mean()) if kept.size else 0.0,
        "steps_per_vector": fold.steps(lowest), "rows_per_vector": fold.n_rows,
        # cycles: the model calibrated on the RTL twin in Verilator; processes: the HLS kernels'
        # trip counts, what the C simulation counts (its own check)
        "processes": procs, "rtl_processes": rtl, "cycles": int(max(rtl.values())),
        "lut": int(lut), "ff": int(ff), "bram36": int(bram), "dsp": 0,
        "weight_storage_bits": weight_mem, "line_buffer_bits": int(line_bits),
        "threshold_storage_bits": thr["storage_bits"],
        "memories": {"weight_rom": [pe, fold.rom_depth, simd], "act_buffer": [simd, 2 * fold.n_rows, act_bits],
                     "schedule_entries": fold.n_entries},
    }


def threshold_cost(hw: LayerHw) -> dict:
    """The threshold step after the accumulator (docs/cost_model.md, "Threshold step"): a ROM
    of ``N * L`` thresholds of ``t`` bits, read a column's ``L`` at a time per PE, and
    ``PE * L`` comparators of ``t`` bits whose one-bit results a popcount adds."""
    n_thr = hw.n_thresholds
    if hw.thresholds is None:
        return {"lut": 0, "ff": 0, "bram36": 0, "storage_bits": 0}
    width = hw.thr_bits
    bits = hw.n_out * n_thr * width
    # cyclic over PE (each PE its own columns), a column's L thresholds side by side
    mem = memory_cost(bits // hw.pe, n_thr * width, copies=hw.pe)
    count_bits = max(n_thr.bit_length(), 1)
    return {"lut": hw.pe * (n_thr * width + n_thr) + mem["lut"], "ff": hw.pe * count_bits,
            "bram36": mem["bram36"], "storage_bits": bits}


def hls_report(intmodel, pe: dict | None = None, planes: int | None = None, group_size: int = 0,
               io_type: str = "io_parallel", clock_mhz: float = 100.0, plan: HardwarePlan | None = None,
               simd: dict | None = None) -> dict:
    """Per-layer and total cost of an IntModel's bit-serial datapath at run-time ``planes``.

    A layer's ``cycles`` is its slowest stage for one sample, as the RTL twin runs it (the model
    calibrated on Verilator, :mod:`flipq.hls.rtlcost`; ``processes`` are the HLS kernels' trip
    counts, which the C-sim counts). ``totals.interval`` is the slowest layer: the layers run as
    a dataflow pipeline over streams and the board wrapper streams samples back to back, so one
    sample leaves every ``interval`` cycles (``fps = clock / interval``); ``totals.cycles``
    (layers one after another) bounds one sample's latency from above. ``plan``: the model's :class:`~flipq.hls.hwplan.HardwarePlan`
    when the caller has it (``pe``, ``simd`` and ``group_size`` are then the plan's).
    """
    if planes is not None and not 1 <= int(planes) <= 8:
        raise ValueError(f"planes must be in 1..8 (or None for all), got {planes}")
    plan = plan or plan_hardware(intmodel, pe, group_size, simd)
    layers = [hw_cost(hw, planes, io_type) for hw in plan.layers]
    totals = {r: sum(lay[r] for lay in layers) for r in RESOURCES}
    cycles = sum(lay["cycles"] for lay in layers)
    interval = max(lay["cycles"] for lay in layers)
    totals.update(cycles=cycles, interval=interval, clock_mhz=clock_mhz,
                  latency_us=cycles / clock_mhz, fps=clock_mhz * 1e6 / interval,
                  throughput_per_s=clock_mhz * 1e6 / interval,
                  weight_storage_bits=sum(lay["weight_storage_bits"] for lay in layers),
                  threshold_storage_bits=sum(lay["threshold_storage_bits"] for lay in layers))
    return {"label": LABEL, "planes": planes, "io_type": io_type, "layers": layers, "totals": totals}


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


def modeled_processes(plan: HardwarePlan, planes: int | None, io_type: str = "io_parallel") -> dict:
    """Per layer name, the cycles of each process for one sample: what the C-sim's counters
    (:meth:`flipq.host.csim.CsimBackend.count_cycles`) must report for the same ``planes``."""
    return {hw.name: layer_cycles(hw, planes, io_type) for hw in plan.layers}
