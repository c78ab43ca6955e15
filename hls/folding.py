"""Folding to a board: SIMD and PE per layer, chosen for throughput within the board's resources
(FINN's balancing idea: the slowest layer sets the dataflow pipeline's interval, so every layer is
folded just enough to reach a common target interval, as FINN's SetFolding does).

Each layer has its unfolding sequence: SIMD widened step by step (fewer rows a vector: its MVAU and
its window generator speed up), then PE (fewer column blocks). For a target interval ``T`` every
layer takes, among its options that reach ``T`` cycles, the cheapest one; "cheapest" weighs LUTs
against block RAM, and several weightings are tried, because memories move between block RAM and
LUTs as a layer widens (a one-lane ROM is deep and goes to BRAM, a wide one to LUTs). The design
fits when the whole chip does at ``max_utilization`` of every resource. The folding takes the
smallest ``T`` that fits (a binary search over the intervals the options reach), or with a
target fps the cheapest design that reaches it; ``binding`` says what stopped a faster one: a
resource, or a layer fully unfolded (or its window generator, which reads one pixel a cycle).

>>> result = fold_for_board(intmodel, load_board("pynq-z2"), target_fps=3000)   # doctest: +SKIP
>>> result.simd, result.pe, result.binding                                       # doctest: +SKIP

Cycles and resources are the cost model's (:mod:`flipq.hls.cost`): cycles calibrated on the RTL
twin in Verilator, resources those of the whole accelerator (layers, glue, board wrapper) from the
model fitted on Yosys, plus the AXI DMA and interconnect beside it (AMD's figures): what must fit
is the chip's total, at ``max_utilization`` of the board, which leaves headroom for placement and
routing (Yosys counts cells before place and route).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flipq.hls.cost import RESOURCES, accelerator_resources, hw_cost
from flipq.hls.fold import pe_options
from flipq.hls.hwplan import HardwarePlan, LayerHw, plan_hardware, refold

DEFAULT_MAX_UTILIZATION = 0.85  # of the chip (accelerator + DMA + interconnect): headroom for routing


class FoldingTargetError(ValueError):
    """A target or limit the folding cannot take (non-positive fps, utilization outside (0, 1])."""


@dataclass
class FoldResult:
    simd: dict  # layer name -> SIMD
    pe: dict  # layer name -> PE
    interval: int  # cycles per sample (the slowest layer)
    fps: float  # modeled, at clock_mhz
    clock_mhz: float
    totals: dict  # lut, ff, bram36, dsp of the chip (accelerator + board overhead)
    limits: dict  # the board's resources times max_utilization
    reached: bool  # the target fps is met (True when there was no target)
    binding: str  # why it stopped: "target", "resource <name> (layer <name>)", "layer <name> fully unfolded"
    steps: int  # designs priced on the way
    fits: bool = True  # False: no folding fits the board (the figures are the least utilized design's)

    def to_dict(self) -> dict:
        return {"label": "modeled (cycles calibrated on Verilator, resources on Yosys pre-place)", "simd": self.simd,
                "pe": self.pe, "interval_cycles": self.interval, "fps": self.fps, "clock_mhz": self.clock_mhz,
                "totals": self.totals, "limits": self.limits, "reached": self.reached, "binding": self.binding,
                "steps": self.steps, "fits": self.fits}


def _next_step(hw) -> tuple[int, int] | None:
    simds = list(hw.simd_choices)
    if hw.depthwise:  # a vector-vector unit: SIMD = PE, one lane a channel
        return (simds[simds.index(hw.pe) + 1],) * 2 if hw.pe < simds[-1] else None
    if hw.simd < simds[-1]:
        return simds[simds.index(hw.simd) + 1], hw.pe
    pes = pe_options(hw.n_out)
    if hw.pe < pes[-1]:
        return hw.simd, pes[pes.index(hw.pe) + 1]
    return None


def _later_steps(hw: LayerHw) -> list[tuple[int, int]]:
    """Every (SIMD, PE) after the layer's current one, in unfolding order (SIMD first)."""
    out, cur = [], hw
    while True:
        nxt = _next_step(cur)
        if nxt is None:
            return out
        out.append(nxt)
        cur = _Step(cur.simd_choices, cur.n_out, *nxt, depthwise=cur.depthwise)


@dataclass
class _Step:
    simd_choices: tuple
    n_out: int
    simd: int
    pe: int
    depthwise: bool = False


# LUT weights of the cheapest-option score (block RAM the rest; FF a tenth as much)
WEIGHTINGS = (0.5, 0.9, 0.1, 0.99, 0.01, 0.7, 0.3)


def fold_for_board(intmodel, board, target_fps: float | None = None, clock_mhz: float | None = None,
                   group_size: int = 0, io_type: str = "io_stream", planes: int | None = None,
                   max_utilization: float = DEFAULT_MAX_UTILIZATION, progress=None) -> FoldResult:
    """SIMD/PE per MAC layer of ``intmodel`` for ``board`` (a :class:`flipq.boards.Board`): the
    highest modeled throughput that fits, or the cheapest unfolding that reaches ``target_fps``.
    ``clock_mhz`` defaults to the board's fclk0. ``progress(text)`` hears each design tried."""
    if target_fps is not None and not target_fps > 0:
        raise FoldingTargetError(f"target fps {target_fps!r} must be > 0")
    if not 0 < max_utilization <= 1:
        raise FoldingTargetError(f"max utilization {max_utilization!r} must be in (0, 1]")
    clock_mhz = float(clock_mhz or board.fclk0_mhz)
    limits = {r: int(board.resources.get(r, 0) * max_utilization) for r in RESOURCES}
    base = plan_hardware(intmodel, group_size=group_size, simd={lay.name: 1 for lay in intmodel.mac_layers})
    weights = {lay.name: np.asarray(lay.weight, dtype=np.int64).reshape(-1, lay.weight.shape[-1])
               for lay in intmodel.mac_layers}
    # every layer's options in unfolding order, priced alone (cycles fall along the sequence)
    options = []
    for hw in base.layers:
        seq = [hw] + [refold(hw, *st, w_kn=weights[hw.name]) for st in _later_steps(hw)]
        options.append([(h, hw_cost(h, planes, io_type)) for h in seq])
    cache: dict = {}
    tried = [0]

    def chip(layers):
        plan = HardwarePlan(layers=tuple(layers), input=base.input, output=base.output, joins=base.joins)
        c = accelerator_resources(intmodel, plan, board, cache)["chip"]
        return {r: c[r] for r in RESOURCES}

    def util(t):
        return max((t[r] / limits[r] if limits[r] else (float("inf") if t[r] else 0.0)) for r in RESOURCES)

    def design(interval):
        """(utilization, choice, chip totals) of the least utilized design reaching ``interval``."""
        best = None
        seen = set()
        for w in WEIGHTINGS:
            choice = []
            for opts in options:
                ok = [o for o in opts if o[1]["cycles"] <= interval]
                choice.append(min(ok, key=lambda o: _score(o[1], limits, w)))
            key = tuple((h.simd, h.pe) for h, _ in choice)
            if key in seen:
                continue
            seen.add(key)
            t = chip([h for h, _ in choice])
            tried[0] += 1
            u = util(t)
            if best is None or u < best[0]:
                best = (u, choice, t)
        if progress is not None:
            progress(f"interval {interval:,} cycles: {'fits' if best[0] <= 1 else 'does not fit'} "
                     f"({100 * best[0]:.0f} % of the limit)")
        return best

    floor = max(min(c["cycles"] for _, c in opts) for opts in options)  # every layer fully unfolded
    ceiling = max(max(c["cycles"] for _, c in opts) for opts in options)
    intervals = sorted({c["cycles"] for opts in options for _, c in opts if floor <= c["cycles"] <= ceiling}
                       | {floor, ceiling})
    target = None if target_fps is None else clock_mhz * 1e6 / target_fps
    if target is not None and target >= floor:
        got = design(max(i for i in intervals if i <= target) if target < ceiling else ceiling)
        if got[0] <= 1:
            return _result(got, clock_mhz, limits, target, "target", tried[0])
    last = design(ceiling)
    if last[0] > 1:
        over = next(r for r in RESOURCES if last[2][r] > limits[r])
        res = _result(last, clock_mhz, limits, target, f"resource {over} (no folding of the design fits)", tried[0])
        res.fits = False
        return res
    lo, hi, fail = 0, len(intervals) - 1, None  # intervals[hi] fits
    best = last
    while lo < hi:
        mid = (lo + hi) // 2
        got = design(intervals[mid])
        if got[0] <= 1:
            hi, best = mid, got
        else:
            lo, fail = mid + 1, (intervals[mid], got)
    if hi > 0 and fail is None:
        fail = (intervals[hi - 1], design(intervals[hi - 1]))
    if hi == 0:
        binding = _unfolded(options, floor)
    else:
        interval, got = fail
        over = next((r for r in RESOURCES if got[2][r] > limits[r]), RESOURCES[0])
        slow = [h.name for h, c in best[1] if c["cycles"] > interval]
        binding = f"resource {over} (layer {slow[0] if slow else best[1][0][0].name})"
    return _result(best, clock_mhz, limits, target, binding, tried[0])


def _score(cost: dict, limits: dict, lut_weight: float) -> float:
    def frac(r):
        return cost[r] / limits[r] if limits[r] else 0.0
    return lut_weight * frac("lut") + (1 - lut_weight) * frac("bram36") + 0.1 * frac("ff")


def _unfolded(options, floor: int) -> str:
    """Why no layer set can go below ``floor`` cycles: the layer whose fastest option is that slow."""
    for opts in options:
        hw, c = opts[-1]
        if min(cc["cycles"] for _, cc in opts) == floor:
            procs = c["rtl_processes"]
            if procs.get("swg", 0) >= procs["mvau"]:
                geo = hw.geometry
                if procs["swg"] <= geo.in_h * geo.in_w:
                    return f"layer {hw.name}: its sliding-window generator reads a pixel a cycle"
                return f"layer {hw.name}: its sliding-window generator at the widest SIMD"
            return f"layer {hw.name} fully unfolded"
    return "fully unfolded"


def _result(got, clock_mhz, limits, target, binding, steps) -> FoldResult:
    _u, choice, used = got
    layers = [h for h, _ in choice]
    interval = max(c["cycles"] for _, c in choice)
    return FoldResult(simd={hw.name: hw.simd for hw in layers}, pe={hw.name: hw.pe for hw in layers},
                      interval=int(interval), fps=clock_mhz * 1e6 / interval, clock_mhz=clock_mhz,
                      totals=dict(used), limits=limits,
                      reached=target is None or interval <= target, binding=binding, steps=steps)


def folded_plan(intmodel, result: FoldResult, group_size: int = 0) -> HardwarePlan:
    """The full hardware plan (ROMs included) of a folding."""
    return plan_hardware(intmodel, result.pe, group_size, result.simd)
