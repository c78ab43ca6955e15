"""The hls stage's RTL step (``flipq hls --rtl``): the RTL twin of the build's hardware plan,
checked against the emulator under back-pressure, timed per layer and as a whole by Verilator, and
mapped by Yosys; the figures go into ``hls_report.json`` beside the model's.

Written into ``<out>/hls/rtl`` (built in ``rtl.partial`` and swapped in when complete). The
Verilated library reads its ROM files from the folder it was built in: a moved build folder needs
``flipq hls --rtl`` again (the ``rtl`` backend says so).

Per layer the report gains ``rtl_cycles`` (``{planes: interval}``, RTL-simulated) and ``yosys``
(LUT/FF/CARRY4/BRAM/DSP and LUT levels, Yosys pre-place); ``totals`` gains ``rtl`` (the whole
accelerator's interval and latency at every planes, and its fps at the board clock) and ``yosys``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from flipq.host.files import write_json

CHECK_ROWS = 64  # rows pushed through the simulated RTL with gaps and stalls (cycle by cycle is slow)
STALL_PCT = GAP_PCT = 20
TIMING_SAMPLES = 6


def stage_rtl(intmodel, plan, hls_dir: Path, report: dict, *, q: np.ndarray | None, board, say=print,
              yosys: bool = True) -> dict:
    """Generate, verilate, check, time and (``yosys``) synthesize; updates ``report`` in place
    and returns the step's info (seconds, rows checked)."""
    from flipq.hls.rtltiming import build_timing_bench, layer_cycles
    from flipq.hls.rtltwin import build_rtl_library, generate_rtl
    from flipq.host.emulator import Emulator
    from flipq.host.rtl import RtlBackend

    t0 = time.perf_counter()
    final = Path(hls_dir) / "rtl"
    partial = Path(hls_dir) / "rtl.partial"
    if partial.exists():
        shutil.rmtree(partial)
    # generated and built where it will stay: the library names its ROM folder
    if final.exists():
        shutil.rmtree(final)
    design = generate_rtl(intmodel, plan, final, word_bits=int(board.dma_data_width))
    say(f"verilating the RTL twin ({len(design.layers)} stages)")
    build_rtl_library(design)
    exe = build_timing_bench(design)
    t_build = time.perf_counter() - t0
    rows = q[:CHECK_ROWS] if q is not None else _random_rows(intmodel, CHECK_ROWS)
    backend = RtlBackend(final, stall_pct=STALL_PCT, gap_pct=GAP_PCT, fclk_mhz=float(board.fclk0_mhz))
    most = intmodel.max_planes()
    all_planes = list(range(1, most + 1))
    agree = {}
    whole = {}
    try:
        for planes in all_planes:
            want = Emulator(intmodel, planes=planes).run(rows).reshape(len(rows), -1)
            got = backend.run(rows, planes)
            agree[planes] = int(np.all(got == want, axis=1).sum())
            whole[planes] = backend.cycles(rows[:TIMING_SAMPLES], planes)
    finally:
        backend.close()
    per_layer = layer_cycles(design, all_planes, exe)
    by_mac = {lay.mac: lay.name for lay in design.layers if lay.mac}
    for layer in report["layers"]:
        rtl_name = by_mac.get(layer["name"])
        if rtl_name is not None:
            layer["rtl_cycles"] = {str(p): per_layer[rtl_name][p]["interval"] for p in all_planes}
            layer["rtl_latency"] = per_layer[rtl_name][most]["latency"]
    report["rtl_stages"] = [{"name": lay.name, "kind": lay.kind, "module": lay.module, "fused": lay.fused,
                             "cycles": {str(p): per_layer[lay.name][p]["interval"] for p in all_planes}}
                            for lay in design.layers]
    report["totals"]["rtl"] = {
        "label": "RTL-simulated (Verilator)", "fclk_mhz": float(board.fclk0_mhz),
        "interval": {str(p): whole[p]["interval_cycles"] for p in all_planes},
        "latency": {str(p): whole[p]["latency_cycles"] for p in all_planes},
        "fps": whole[most]["fps"],
        "rows_equal_emulator": {str(p): [agree[p], len(rows)] for p in all_planes},
        "stalls": {"input_gap_pct": GAP_PCT, "output_stall_pct": STALL_PCT}}
    info = {"seconds_build": t_build, "rows": len(rows), "all_equal": all(v == len(rows) for v in agree.values())}
    if yosys:
        from flipq.hls import yosys as ys

        if ys.available():
            say("synthesizing the RTL twin with Yosys (synth_xilinx -family xc7)")
            t1 = time.perf_counter()
            synth_report(design, report)
            info["seconds_yosys"] = time.perf_counter() - t1
        else:
            report["totals"]["yosys"] = {"skipped": "yosys not installed (apt-get install yosys)"}
    info["seconds"] = time.perf_counter() - t0
    write_json(final / "rtl_check.json", {"agree": agree, "rows": len(rows), **info})
    return info


def synth_report(design, report: dict) -> None:
    """Yosys figures per MAC layer (its wrapper: window generator, width converter, MVAU) and for
    the whole accelerator, into ``report``."""
    from flipq.hls.yosys import synthesize

    sources = design.sources()
    by_mac = {lay.mac: lay for lay in design.layers if lay.mac}
    stages = []
    for lay in design.layers:
        res = synthesize(sources, lay.module, design.folder)
        stages.append({"name": lay.name, "module": lay.module, "yosys": res})
        for layer in report["layers"]:
            if by_mac.get(layer["name"]) is lay:
                layer["yosys"] = res
                layer["lut_vs_yosys"] = _ratio(layer["lut"], res)
    report["rtl_stages_yosys"] = stages
    # the whole accelerator as the board holds it: the board wrapper with its AXI-Lite registers
    whole_sources, top, params = board_top(design)
    whole = synthesize(whole_sources, top, design.folder, params=params)
    report["totals"]["yosys"] = whole
    report["totals"]["lut_vs_yosys"] = _ratio(report["totals"]["lut"], whole)


def board_top(design) -> tuple[list, str, dict]:
    """(sources, top, parameters) of the board wrapper ``flipq_axi_top`` around ``design``: what
    ``flipq overlay build --kernel rtl`` packages, and what the cost model's totals price."""
    from flipq.hls.verilator import RTL_DIR

    words_in, words_out = design.words_per_sample()
    return (design.sources() + [RTL_DIR / "flipq_axi_top.v"], "flipq_axi_top",
            {"WORD": design.word_bits, "IN_WORDS": words_in, "OUT_WORDS": words_out})


def _ratio(modeled: float, yosys: dict) -> float:
    """Modeled LUTs over Yosys' (LUT sites, LUTRAM included): the cost model's error, in the open."""
    return round(float(modeled) / max(int(yosys["lut"]) + int(yosys.get("lutram", 0)), 1), 4)


def _random_rows(intmodel, n: int) -> np.ndarray:
    q = intmodel.input_quant
    return np.random.default_rng(0).integers(q.qmin, q.qmax + 1, size=(n, *intmodel.input_shape))
