"""The cost model of flipq's accelerator (numpy only): cycles and resources, calibrated on tools
that are not flipq's own.

Cycles are the RTL twin's, as Verilator measures them (:mod:`flipq.hls.rtlcost`: equal per layer
at every ``planes`` on the check models); ``processes`` beside them are the HLS kernels' trip
counts, what the C simulation counts (its own check). Resources are the RTL twin's as Yosys
``synth_xilinx -family xc7`` maps them, from the structural model fitted on Yosys
(:mod:`flipq.hls.rtlresources`, benchmarks/synth.py): every layer wrapper, the glue between them
and the board wrapper; the AXI DMA and interconnect beside it on the chip are AMD's published
figures (``totals.board_overhead``, labelled), and ``totals.chip`` is both together. Cycles come
from the weights themselves: a (group, plane) that is all zero in every column of a PE block is
not in the schedule, and run-time ``planes`` shortens every block's schedule.

>>> report = hls_report(intmodel, pe={"conv1": 4}, planes=3)     # doctest: +SKIP
>>> check_fits(report["totals"], {"lut": 53200, "ff": 106400, "bram36": 140, "dsp": 220})  # doctest: +SKIP
"""

from __future__ import annotations


import numpy as np

from flipq.hls.fold import ConvGeometry, lowest_plane, mvau_cycles, swg_cycles
from flipq.hls.hwplan import HardwarePlan, LayerHw, ValueRange, bits_for, layer_hw, plan_hardware
from flipq.hls.planes import active_planes
from flipq.hls.rtlcost import mvau_cycles as rtl_mvau_cycles

RESOURCES = ("lut", "ff", "bram36", "dsp")
LABEL = ("modeled: cycles calibrated on the RTL twin in Verilator, resources on Yosys synth_xilinx "
         "(pre-place); the DMA and interconnect beside the accelerator from AMD's published figures")


class ResourceError(ValueError):
    """A design that does not fit the device; the message lists every resource over its limit."""


def layer_cost(*, name: str, kernel: str, fan_in: int, n_out: int, n_pix: int, weight_bits: int, act_lo: int,
               act_hi: int, group_size: int, mask: np.ndarray, planes: int | None, pe: int,
               simd: int | None = None, geometry: ConvGeometry | None = None) -> dict:
    """Cycles and resources of one bit-serial layer given its shape, plane masks and input range
    (for models that are not lowered yet; an IntModel goes through :func:`hls_report`)."""
    hw = layer_hw(name=name, kernel=kernel, fan_in=fan_in, n_out=n_out, n_pix=n_pix, weight_bits=weight_bits,
                  group_size=group_size, mask=mask, pe=pe, simd=simd, geometry=geometry,
                  inp=ValueRange(act_lo, act_hi, 0, act_lo < 0, bits_for(act_lo, act_hi)))
    return hw_cost(hw, planes)


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
    """Cycles and resources of one planned MAC layer on its own: cycles of the RTL twin's stages
    (calibrated on Verilator), LUT/FF/BRAM of its MVAU and window generator (the model fitted on
    Yosys, :mod:`flipq.hls.rtlresources`). :func:`hls_report` prices the layer inside the whole
    accelerator instead (width converters, fused requantizers, FIFOs, the board wrapper)."""
    from flipq.hls.rtlresources import mac_resources

    fold = hw.fold
    procs = layer_cycles(hw, planes, io_type)
    rtl = rtl_layer_cycles(hw, planes)
    lowest = lowest_plane(hw.weight_bits, planes, hw.full_planes)
    res = mac_resources(hw)
    line_bits = 0
    if hw.geometry is not None:
        geo = hw.geometry
        line_bits = geo.kh * (geo.in_w + geo.pad_left + geo.pad_right) * geo.cin * hw.act_bits
    rom_w = 1 if hw.depthwise else hw.simd  # a vector-vector unit's PE holds its own lane's bit
    weight_mem = int(fold.rom_depth * rom_w * hw.pe)
    kept = active_planes(hw.mask, hw.weight_bits, planes if not hw.full_planes else None)
    thr_bits = hw.n_out * hw.n_thresholds * hw.thr_bits if hw.thresholds is not None else 0
    return {
        "name": hw.name, "kernel": hw.kernel, "weight_bits": hw.weight_bits, "act_bits": hw.act_bits,
        "fan_in": hw.fan_in, "n_out": hw.n_out, "n_pix": hw.n_pix, "group_size": hw.group_size,
        "n_groups": hw.n_groups, "simd": hw.simd, "pe": hw.pe,
        "planes": min(planes or hw.weight_bits, hw.weight_bits),
        "mean_active_planes": float(kept.mean()) if kept.size else 0.0,
        "steps_per_vector": fold.steps(lowest), "rows_per_vector": fold.n_rows,
        # cycles: the model calibrated on the RTL twin in Verilator; processes: the HLS kernels'
        # trip counts, what the C simulation counts (its own check)
        "processes": procs, "rtl_processes": rtl, "cycles": int(max(rtl.values())),
        "lut": int(round(res["lut"])), "ff": int(round(res["ff"])), "bram36": float(res["bram36"]), "dsp": 0,
        "carry4": int(round(res["carry4"])),
        "weight_storage_bits": weight_mem, "line_buffer_bits": int(line_bits), "threshold_storage_bits": thr_bits,
        "memories": {"weight_rom": [hw.pe, fold.rom_depth, rom_w],
                     "row_buffer": [3 * fold.n_rows, hw.simd * hw.act_bits], "schedule_entries": fold.n_entries},
    }


def _rounded(r: dict) -> dict:
    return {"lut": int(round(r["lut"])), "ff": int(round(r["ff"])), "bram36": float(r["bram36"]),
            "dsp": int(round(r["dsp"])), "carry4": int(round(r["carry4"]))}


def accelerator_resources(intmodel, plan: HardwarePlan, board=None, cache: dict | None = None) -> dict:
    """The whole accelerator as the RTL twin builds it (:func:`flipq.hls.rtltwin.plan_rtl`), priced
    by the model fitted on Yosys: ``layers`` (per RTL layer wrapper), ``glue`` (DMA word unpack/pack,
    inter-layer FIFOs, output width conversion), ``axi_top`` (AXI-Lite registers), ``accelerator``
    (their sum: what Yosys maps ``flipq_axi_top`` to), ``board_overhead`` (AXI DMA, interconnect,
    reset: AMD's published figures, labelled) and ``chip`` (accelerator + board overhead)."""
    from flipq.hls.rtlresources import board_overhead, design_resources
    from flipq.hls.rtltwin import plan_rtl

    rp = plan_rtl(intmodel, plan)
    d = design_resources(rp, cache=cache)
    acc = _rounded(d["total"])
    over = board_overhead(board)
    ov = _rounded(over["total"])
    chip = {k: acc[k] + ov[k] for k in acc}
    layers = [{"name": lay.name, "kind": lay.kind, "mac": lay.mac, **_rounded(d["layers"][lay.name])}
              for lay in rp.layers]
    return {"layers": layers, "glue": _rounded(d["glue"]), "axi_top": _rounded(d["axi_top"]), "accelerator": acc,
            "board_overhead": {"parts": over["parts"], "label": over["label"], **ov}, "chip": chip}


def hls_report(intmodel, pe: dict | None = None, planes: int | None = None, group_size: int = 0,
               io_type: str = "io_parallel", clock_mhz: float = 100.0, plan: HardwarePlan | None = None,
               simd: dict | None = None, board=None) -> dict:
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
    res = accelerator_resources(intmodel, plan, board)
    by_mac = {lay["mac"]: lay for lay in res["layers"] if lay["mac"] is not None}
    for lay in layers:  # each MAC layer as its RTL wrapper holds it (converters, fused requantizer)
        lay.update({k: by_mac[lay["name"]][k] for k in ("lut", "ff", "bram36", "dsp", "carry4")})
    others = [lay for lay in res["layers"] if lay["mac"] is None] + [
        {"name": "glue", "kind": "glue", **res["glue"]}, {"name": "axi_top", "kind": "axi_top", **res["axi_top"]}]
    totals = dict(res["accelerator"])
    cycles = sum(lay["cycles"] for lay in layers)
    interval = max(lay["cycles"] for lay in layers)
    totals.update(cycles=cycles, interval=interval, clock_mhz=clock_mhz,
                  latency_us=cycles / clock_mhz, fps=clock_mhz * 1e6 / interval,
                  throughput_per_s=clock_mhz * 1e6 / interval,
                  weight_storage_bits=sum(lay["weight_storage_bits"] for lay in layers),
                  threshold_storage_bits=sum(lay["threshold_storage_bits"] for lay in layers),
                  board_overhead=res["board_overhead"], chip=res["chip"])
    return {"label": LABEL, "planes": planes, "io_type": io_type, "layers": layers, "other": others,
            "totals": totals}


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
