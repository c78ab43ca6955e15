"""Folding to a board: SIMD and PE per layer, chosen for throughput within the board's resources
(FINN's balancing idea: the slowest layer sets the dataflow pipeline's interval, so it is the
one to unfold next).

Start every layer at SIMD = PE = 1. Repeatedly take the slowest layer and give it the next step
of parallelism: a wider SIMD while it has one (fewer rows a vector: both its MVAU and its window
generator speed up), else more PE (fewer column blocks). A step is kept only if the whole design
still fits the board at ``max_utilization`` of every resource; the search ends when the target
interval is met, or when the slowest layer cannot be unfolded further (its options are used up,
or the next one does not fit: that resource *binds*).

>>> result = fold_for_board(intmodel, load_board("pynq-z2"), target_fps=3000)   # doctest: +SKIP
>>> result.simd, result.pe, result.binding                                       # doctest: +SKIP

Cycles and resources are the cost model's (:mod:`flipq.hls.cost`): modeled, pre-synthesis.
"""

from __future__ import annotations

from dataclasses import dataclass

from flipq.hls.cost import RESOURCES, hw_cost
from flipq.hls.fold import pe_options
from flipq.hls.hwplan import HardwarePlan, LayerHw, plan_hardware, refold

DEFAULT_MAX_UTILIZATION = 0.85  # headroom for the wrapper, the DMA, interconnect and routing


class FoldingTargetError(ValueError):
    """A target or limit the folding cannot take (non-positive fps, utilization outside (0, 1])."""


@dataclass
class FoldResult:
    simd: dict  # layer name -> SIMD
    pe: dict  # layer name -> PE
    interval: int  # cycles per sample (the slowest layer)
    fps: float  # modeled, at clock_mhz
    clock_mhz: float
    totals: dict  # lut, ff, bram36, dsp of the layers
    limits: dict  # the board's resources times max_utilization
    reached: bool  # the target fps is met (True when there was no target)
    binding: str  # why it stopped: "target", "resource <name> (layer <name>)", "layer <name> fully unfolded"
    steps: int

    def to_dict(self) -> dict:
        return {"label": "modeled (cost model; resources are pre-synthesis estimates)", "simd": self.simd,
                "pe": self.pe, "interval_cycles": self.interval, "fps": self.fps, "clock_mhz": self.clock_mhz,
                "totals": self.totals, "limits": self.limits, "reached": self.reached, "binding": self.binding,
                "steps": self.steps}


def _next_step(hw: LayerHw) -> tuple[int, int] | None:
    simds = list(hw.simd_choices)
    if hw.simd < simds[-1]:
        return simds[simds.index(hw.simd) + 1], hw.pe
    pes = pe_options(hw.n_out)
    if hw.pe < pes[-1]:
        return hw.simd, pes[pes.index(hw.pe) + 1]
    return None


def fold_for_board(intmodel, board, target_fps: float | None = None, clock_mhz: float | None = None,
                   group_size: int = 0, io_type: str = "io_stream", planes: int | None = None,
                   max_utilization: float = DEFAULT_MAX_UTILIZATION, progress=None) -> FoldResult:
    """SIMD/PE per MAC layer of ``intmodel`` for ``board`` (a :class:`flipq.boards.Board`): the
    highest modeled throughput that fits, or the cheapest unfolding that reaches ``target_fps``.
    ``clock_mhz`` defaults to the board's fclk0. ``progress(text)`` hears each step."""
    if target_fps is not None and not target_fps > 0:
        raise FoldingTargetError(f"target fps {target_fps!r} must be > 0")
    if not 0 < max_utilization <= 1:
        raise FoldingTargetError(f"max utilization {max_utilization!r} must be in (0, 1]")
    clock_mhz = float(clock_mhz or board.fclk0_mhz)
    limits = {r: int(board.resources.get(r, 0) * max_utilization) for r in RESOURCES}
    base = plan_hardware(intmodel, group_size=group_size, simd={
        lay.name: 1 for lay in intmodel.mac_layers})
    layers = list(base.layers)
    costs = [hw_cost(hw, planes, io_type) for hw in layers]
    target = None if target_fps is None else clock_mhz * 1e6 / target_fps

    def totals(cs):
        return {r: sum(c[r] for c in cs) for r in RESOURCES}

    def fits(t):
        return all(t[r] <= limits[r] for r in RESOURCES if limits[r] or t[r])

    if not fits(totals(costs)):
        over = [r for r in RESOURCES if totals(costs)[r] > limits[r]]
        binding = f"resource {over[0]} (the fully folded design does not fit)"
        return _result(layers, costs, clock_mhz, limits, target, binding, 0)
    steps = 0
    while True:
        slowest = max(range(len(layers)), key=lambda i: costs[i]["cycles"])
        interval = costs[slowest]["cycles"]
        if target is not None and interval <= target:
            return _result(layers, costs, clock_mhz, limits, target, "target", steps)
        hw = layers[slowest]
        procs = costs[slowest]["processes"]
        if procs.get("swg", 0) >= procs["mvau"] and hw.simd == hw.simd_choices[-1]:
            # only a wider SIMD shortens the window generator (its input reads never do)
            return _result(layers, costs, clock_mhz, limits, target,
                           f"layer {hw.name}: its sliding-window generator at the widest SIMD", steps)
        nxt = _next_step(hw)
        if nxt is None:
            return _result(layers, costs, clock_mhz, limits, target, f"layer {hw.name} fully unfolded", steps)
        trial = refold(hw, *nxt)
        cost = hw_cost(trial, planes, io_type)
        trial_costs = costs[:slowest] + [cost] + costs[slowest + 1:]
        t = totals(trial_costs)
        if not fits(t):
            over = next(r for r in RESOURCES if t[r] > limits[r])
            return _result(layers, costs, clock_mhz, limits, target, f"resource {over} (layer {hw.name})", steps)
        layers[slowest], costs[slowest] = trial, cost
        steps += 1
        if progress is not None:
            progress(f"step {steps}: {hw.name} simd={nxt[0]} pe={nxt[1]} -> {cost['cycles']} cycles")


def _result(layers, costs, clock_mhz, limits, target, binding, steps) -> FoldResult:
    interval = max(c["cycles"] for c in costs)
    return FoldResult(simd={hw.name: hw.simd for hw in layers}, pe={hw.name: hw.pe for hw in layers},
                      interval=int(interval), fps=clock_mhz * 1e6 / interval, clock_mhz=clock_mhz,
                      totals={r: int(sum(c[r] for c in costs)) for r in RESOURCES}, limits=limits,
                      reached=target is None or interval <= target, binding=binding, steps=steps)


def folded_plan(intmodel, result: FoldResult, group_size: int = 0) -> HardwarePlan:
    """The full hardware plan (ROMs included) of a folding."""
    return plan_hardware(intmodel, result.pe, group_size, result.simd)
