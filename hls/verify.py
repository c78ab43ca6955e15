"""Check one QONNX model through the whole chain: QONNX execution = emulator = bit-serial C-sim
(every ``planes``), row by row, and say which stage pair and which layer first differ.

A model ends in one of four verdicts:

- ``exact``: every stage pair agrees on every row;
- ``refused``: lowering it raised a one-line flipq error (a ValueError subclass) before any C++
  was generated; ``reason`` is a short key for the construct (see :func:`refusal_reason`);
- ``mismatch``: two stages differ (``first_bad`` names the pair, planes, row and, where it can be
  told, the first layer whose emulator output differs from QONNX execution's);
- ``crash``: anything else (a traceback of another library, a refusal that is not a flipq error,
  not one line, or comes after C++ was generated, a failed compile).

>>> raw = load_qonnx("model.onnx")                                        # doctest: +SKIP
>>> v = verify_model(raw, Path("/tmp/v"), rows=64)                        # doctest: +SKIP
>>> v.status, v.stages["csim=emulator planes=2"]                          # doctest: +SKIP
('exact', [64, 64])
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

STATUSES = ("exact", "refused", "mismatch", "crash")
QONNX_ROWS = 16  # QONNX execution runs row by row at ~100 rows/s: a sample of the rows

# Refusal message -> reason key; the first pattern that matches names the construct.
_REASONS = (
    (r"before any quantizer|a quantizer on values with a non-power-of-two scale|narrow-range unsigned quantizer "
     r"that no layer feeds", "no quantizer after a float chain"),
    (r"a residual add whose \w+ operand has the float scale", "float-scaled residual add"),
    (r"op type BatchNormalization", "BatchNorm"),
    (r"op type AveragePool", "AvgPool"),
    (r"per-channel", "per-channel scale"),
    (r"not a power of two", "non-power-of-two scale"),
    (r"not on the accumulator grid|not a multiple of the accumulator scale", "bias not on the accumulator grid"),
    (r"narrow-range unsigned", "narrow unsigned activation"),
    (r"non-zero zero point", "non-zero zero point"),
    (r"weights must come from a Quant", "unquantized weights"),
    (r"must feed an input quantizer", "no input quantizer"),
    (r"only flattening", "reshape not to 2-D"),
    (r"bias must be constant", "non-constant bias"),
    (r"op type (\w+)\) cannot be mapped", "op {0}"),
)


class VerifyInputError(ValueError):
    """Inputs given to ``flipq verify`` that do not fit the model."""


@dataclass
class Verdict:
    status: str
    reason: str | None = None  # refusal key, or the crash's exception type
    message: str | None = None  # the refusal's or crash's first line
    stages: dict = field(default_factory=dict)  # "a=b [planes=k]" -> [equal rows, rows]
    first_bad: dict | None = None  # {"pair", "planes", "row", "layer"}
    notes: list = field(default_factory=list)  # stages not run, and why (one line each)

    def to_dict(self) -> dict:
        return asdict(self)


def refusal_reason(exc: BaseException) -> str:
    """A flipq refusal -> a short key naming the construct (``"BatchNorm"``, ``"op Add"``, ...).

    >>> from flipq.hls.lower import UnsupportedNodeError
    >>> refusal_reason(UnsupportedNodeError("node 'x' (op type Quant): scale 0.3 is not a power of two"))
    'non-power-of-two scale'
    """
    text = str(exc)
    for pattern, key in _REASONS:
        m = re.search(pattern, text)
        if m:
            return key.format(*m.groups())
    # unknown refusals still group: drop names and numbers
    generic = re.sub(r"'[^']*'|\d+(\.\d+)?(e-?\d+)?", "_", text.partition("\n")[0])
    return f"{type(exc).__name__}: {generic[:80]}"


def is_flipq_refusal(exc: BaseException) -> bool:
    """A ValueError of flipq's own with a one-line message: the user's clear answer."""
    return (isinstance(exc, ValueError) and type(exc).__module__.startswith("flipq.")
            and "\n" not in str(exc).strip())


def lower_model(raw, pe: int | dict = 1, group_size: int = 0):
    """Raw QONNX (as exported) -> (IntModel, prepared QONNX, hardware plan): every refusal of
    the stack comes from here, before any C++ is generated."""
    from flipq.hls.hwplan import plan_hardware
    from flipq.hls.lower import check_mappable, lower_qonnx
    from flipq.hls.prepare import prepare_qonnx
    from flipq.quant.export import plan_from_onnx

    check_mappable(raw)
    plan = plan_from_onnx(raw)
    prepared = prepare_qonnx(raw)
    intmodel = lower_qonnx(prepared, plan)
    if not isinstance(pe, dict):  # one count for every layer: the largest each layer can take up to it
        from flipq.hls.fold import MAX_SIMD, pe_at_most
        from flipq.hls.hwplan import layer_is_depthwise

        # (a depthwise layer's PE is its SIMD too: at most MAX_SIMD)
        pe = {layer.name: pe_at_most(layer.weight.shape[-1], min(pe, MAX_SIMD) if layer_is_depthwise(layer) else pe)
              for layer in intmodel.mac_layers}
    return intmodel, prepared, plan_hardware(intmodel, pe, group_size)


def random_inputs(intmodel, rows: int, seed: int = 0) -> np.ndarray:
    """Integer NHWC inputs drawn uniformly over the input quantizer's whole range."""
    q = intmodel.input_quant
    return np.random.default_rng(seed).integers(q.qmin, q.qmax + 1, size=(rows, *intmodel.input_shape))


def qonnx_outputs(prepared, intmodel, q: np.ndarray, full: bool = False):
    """QONNX execution of the prepared model on integer inputs: real outputs (rows, ...), or with
    ``full`` the whole execution context of the first row."""
    import onnxruntime as ort
    import qonnx.core.onnx_exec as oxe

    ort.set_default_logger_severity(3)
    iname, oname = prepared.graph.input[0].name, prepared.graph.output[0].name
    x = real_inputs(intmodel, q)
    if full:
        return oxe.execute_onnx(prepared, {iname: x[:1]}, return_full_exec_context=True)
    return np.concatenate([oxe.execute_onnx(prepared, {iname: x[i:i + 1]})[oname] for i in range(len(x))]
                          ).astype(np.float64)


def _rows_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a)
    a, b = np.asarray(a, dtype=np.float64).reshape(n, -1), np.asarray(b, dtype=np.float64).reshape(n, -1)
    if a.shape != b.shape:
        return np.zeros(n, dtype=bool)
    return (a == b).all(axis=1)


def _rows_within(a: np.ndarray, b: np.ndarray, bound) -> np.ndarray:
    n = len(a)
    a, b = np.asarray(a, dtype=np.float64).reshape(n, -1), np.asarray(b, dtype=np.float64).reshape(n, -1)
    if a.shape != b.shape:
        return np.zeros(n, dtype=bool)
    from flipq.host.intmodel import outputs_agree

    return outputs_agree(a, b, bound)


def real_inputs(intmodel, q: np.ndarray) -> np.ndarray:
    """Float32 NHWC inputs that the model's input quantizer (after its input affine) maps to the
    integers ``q``: the affine inverted in float64 (the quantizer's rounding absorbs the rest)."""
    x = q * 2.0 ** intmodel.input_quant.exp
    inverse = {"mul": np.divide, "div": np.multiply, "add": np.subtract, "sub": np.add}
    for op, v in reversed(intmodel.input_affine):
        x = inverse[op](x, v)
    return x.astype(np.float32)


def first_differing_layer(prepared, intmodel, q_row: np.ndarray) -> str | None:
    """The first layer whose emulator output differs from QONNX execution on one row (its
    name and ONNX node), or None when every layer agrees."""
    from flipq.host.emulator import Emulator
    from flipq.host.intmodel import IntModel

    ctx = qonnx_outputs(prepared, intmodel, q_row[None], full=True)
    producers = {node.name: node.output[0] for node in prepared.graph.node}
    exp = intmodel.input_quant.exp
    real = _input_scale(intmodel)
    first = prepared.find_consumer(prepared.graph.input[0].name)
    while first is not None and first.op_type != "Quant":  # past the input affine
        first = prepared.find_consumer(first.output[0])
    if first is not None and first.output[0] in ctx:  # the emulator takes q as already quantized
        theirs = np.asarray(ctx[first.output[0]], dtype=np.float64).ravel()
        if not np.array_equal((q_row.astype(np.float64).ravel() * real).astype(np.float32), theirs):
            return f"the input quantizer (ONNX node '{first.name}')"
    at = {-1: (exp, real)}  # per layer output: its grid exponent and real scale (None: no QONNX twin)
    for i, layer in enumerate(intmodel.layers):
        ins = intmodel.inputs_of(i)
        exp, real = at[ins[0]]
        if layer.op in ("add", "concat"):
            parts = [at[j] for j in ins]
            exp = min(e for e, _ in parts)
            real = None if any(r is None for _, r in parts) else (
                parts[0][1] if len({e for e, _ in parts}) == 1 else 2.0**exp)
        if layer.is_mac:
            exp += layer.attrs["w_exp"]
            # an accumulator whose chain became thresholds or the output affine has no QONNX twin
            real = None if layer.attrs.get("w_int") or real is None else real * 2.0 ** layer.attrs["w_exp"]
            nxt = intmodel.layers[i + 1] if i + 1 < len(intmodel.layers) else None
            if (nxt is not None and nxt.op == "threshold") or (nxt is None and intmodel.output_affine):
                at[i] = (exp, real)
                continue
        elif layer.op == "requant":
            exp, real = layer.requant.exp, 2.0 ** layer.requant.exp
        elif layer.op == "threshold":
            exp, real = layer.out_quant.exp, float(layer.attrs["scale"])
        at[i] = (exp, real)
        tensor = producers.get(layer.attrs.get("onnx_node"))
        if tensor not in ctx or real is None:
            continue
        try:  # in a graph, a prefix that leaves a branch unread is no model: that layer is not checked
            prefix = IntModel(intmodel.input_shape, intmodel.input_quant, intmodel.layers[:i + 1], exp,
                              input_layout=intmodel.input_layout)
        except ValueError:
            continue
        mine = Emulator(prefix, reference=True).run(q_row[None]).astype(np.float64) * real
        theirs = np.asarray(ctx[tensor], dtype=np.float64)
        if mine.size != theirs.size or not np.array_equal(mine.astype(np.float32).ravel(),
                                                          theirs.astype(np.float32).ravel()):
            return f"{layer.name} ({layer.op}, ONNX node '{layer.attrs.get('onnx_node')}')"
    return None


def _input_scale(intmodel) -> float:
    """The real scale of the input quantizer's integers (a float scale is the affine's last div)."""
    if intmodel.input_affine and intmodel.input_affine[-1][0] == "div" and intmodel.input_quant.exp == 0:
        return intmodel.input_affine[-1][1]
    return 2.0 ** intmodel.input_quant.exp


class _Stages:
    """Agreement per stage pair; remembers the first pair and row that differ."""

    def __init__(self):
        self.stages: dict = {}
        self.first_bad: dict | None = None

    def add(self, pair: str, a: np.ndarray, b: np.ndarray, planes: int | None = None, bound=0.0) -> bool:
        """Rows equal; with a ``bound`` (a model's float output affine, per output channel),
        rows within it with the same argmax."""
        exact = np.all(np.asarray(bound) == 0)
        ok = _rows_equal(a, b) if exact else _rows_within(a, b, bound)
        key = pair if planes is None else f"{pair} planes={planes}"
        if not exact:
            key += " (output within bound)"
        self.stages[key] = [int(ok.sum()), int(len(ok))]
        if not ok.all() and self.first_bad is None:
            self.first_bad = {"pair": pair, "planes": planes, "row": int(np.flatnonzero(~ok)[0]), "layer": None}
        return bool(ok.all())


def verify_model(raw, work_dir: Path, rows: int = 64, seed: int = 0, x: np.ndarray | None = None,
                 io_type: str = "io_parallel", pe: int | dict = 1, group_size: int = 0, csim: bool = True,
                 qonnx_rows: int = QONNX_ROWS, reference=None, csim_backend=None, rtl: bool = False) -> Verdict:
    """Run the chain on the raw QONNX model ``raw``: ``rows`` random integer inputs over the
    input quantizer's range, then the real-valued inputs ``x`` (the model's own layout)
    quantized as its input quantizer does.

    ``reference(intmodel, q)``: real outputs of the source model (e.g. the torch forward) on
    integer inputs, compared with QONNX execution on the first ``qonnx_rows`` rows.
    ``csim_backend(build)`` opens the C-sim (default :class:`flipq.host.csim.CsimBackend`; a
    test may pass a broken one). ``rtl`` adds the RTL twin simulated by Verilator, with random
    gaps on its input and stalls on its output (``rtl=emulator`` at every planes).
    """
    from flipq.host.emulator import Emulator

    try:
        intmodel, prepared, plan = lower_model(raw, pe, group_size)
        if csim:
            from flipq.hls.hls4ml_pools import check_stream_pools

            check_stream_pools(intmodel, io_type)
    except Exception as e:  # noqa: BLE001 -- the verdict classifies every failure
        if is_flipq_refusal(e):
            return Verdict("refused", refusal_reason(e), str(e).strip())
        return _crash(e, "lowering")
    stages = _Stages()
    notes: list = []
    try:
        q = random_inputs(intmodel, rows, seed)
        if x is not None:
            q = np.concatenate([q, Emulator(intmodel).quantize_input(x)])
        if reference is not None:
            reference = reference(intmodel, q[:qonnx_rows])
        full = Emulator(intmodel).run(q)
        real, bound = intmodel.to_real(full), intmodel.output_bound()
        nq = min(len(q), qonnx_rows)
        got = qonnx_outputs(prepared, intmodel, q[:nq])
        if reference is not None:
            stages.add("torch=qonnx", reference[:nq], got, bound=2 * bound)
            stages.add("torch=emulator", reference[:nq], real[:nq], bound=bound)
        stages.add("qonnx=emulator", got, real[:nq], bound=bound)
        if csim:
            _check_csim(stages, intmodel, prepared, plan, q, full, work_dir, io_type, csim_backend)
        if rtl:
            from flipq.hls.rtltwin import RtlError, check_rtl_chain

            try:
                check_rtl_chain(intmodel)
            except RtlError as e:
                notes.append(f"rtl not run: {e}")
            else:
                check_rtl(stages, intmodel, plan, q, full, Path(work_dir) / "rtl")
    except Exception as e:  # noqa: BLE001
        crash = _crash(e, "comparison", stages)
        if stages.first_bad is None:
            return crash
        message = f"then {crash.reason}: {crash.message}"  # the mismatch found first is the verdict
    else:
        if stages.first_bad is None:
            return Verdict("exact", stages=stages.stages, notes=notes)
        message = None
    bad = stages.first_bad
    with contextlib.suppress(Exception):  # locating is a courtesy: the mismatch stands without it
        bad["layer"] = first_differing_layer(prepared, intmodel, q[bad["row"]])
    return Verdict("mismatch", reason=_pair_reason(bad), message=message, stages=stages.stages, first_bad=bad,
                   notes=notes)


def _pair_reason(bad: dict) -> str:
    return bad["pair"] + ("" if bad["planes"] is None else " (planes)")


def _crash(e: BaseException, where: str, stages: _Stages | None = None) -> Verdict:
    import traceback

    first = str(e).strip().partition("\n")[0][:300]
    frames = traceback.extract_tb(e.__traceback__)
    if frames:  # the innermost frame: which library gave up
        first += f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})"
    return Verdict("crash", f"{type(e).__name__} in {where}", first,
                   stages=stages.stages if stages else {})


def _check_csim(stages: _Stages, intmodel, prepared, plan, q, full, work_dir, io_type, csim_backend):
    from flipq.hls.bitserial import build_bitserial
    from flipq.host.csim import CsimBackend
    from flipq.host.emulator import Emulator

    with contextlib.redirect_stdout(io.StringIO()):  # hls4ml narrates its topology walk
        build = build_bitserial(intmodel, prepared, Path(work_dir), io_type=io_type, plan=plan)
    from flipq.hls.cost import modeled_processes

    opener = csim_backend or (lambda b: CsimBackend(b.lib_path, b.meta))
    backend = opener(build)
    try:
        for planes in range(1, intmodel.max_planes() + 1):
            want = full if planes == intmodel.max_planes() else Emulator(intmodel, planes=planes).run(q)
            stages.add("csim=emulator", backend.run(q, planes), want, planes)
            if hasattr(backend, "count_cycles"):  # the kernels' own cycle counts, one sample
                counted = backend.count_cycles(q[:1], planes)
                modeled = modeled_processes(build.plan, planes, io_type)
                keys = [(name, proc) for name in modeled for proc in sorted(modeled[name])]
                stages.add("csim cycles=model", np.array([[counted.get(n, {}).get(p, -1) for n, p in keys]]),
                           np.array([[modeled[n][p] for n, p in keys]]), planes)
    finally:
        backend.close()


QUICK_BUILD_MACS = 2_000_000  # multiply-accumulates a sample, below which the RTL check compiles at -O0


def check_rtl(stages: _Stages, intmodel, plan, q, full, work_dir: Path, stall_pct: int = 25,
              gap_pct: int = 25) -> None:
    """The RTL twin against the emulator at every planes, under back-pressure."""
    from flipq.hls.rtltwin import build_rtl_library, generate_rtl
    from flipq.host.emulator import Emulator
    from flipq.host.rtl import RtlBackend

    design = generate_rtl(intmodel, plan, Path(work_dir))
    # a small model simulates its few rows fast even unoptimized, and compiles several times faster
    macs = sum(hw.n_pix * hw.fan_in * hw.n_out for hw in plan.layers)
    build_rtl_library(design, quick=macs <= QUICK_BUILD_MACS)
    backend = RtlBackend(design.folder, stall_pct=stall_pct, gap_pct=gap_pct)
    try:
        for planes in range(1, intmodel.max_planes() + 1):
            want = full if planes == intmodel.max_planes() else Emulator(intmodel, planes=planes).run(q)
            stages.add("rtl=emulator", backend.run(q, planes), want.reshape(len(q), -1), planes)
    finally:
        backend.close()


def format_verdict(v: Verdict) -> str:
    """The agreement table and the verdict, as ``flipq verify`` prints them."""
    lines = [f"  {pair:<28}{ok:>6}/{total} rows {'agree' if 'bound' in pair else 'equal'}"
             for pair, (ok, total) in v.stages.items()]
    lines += [f"  {note}" for note in v.notes]
    if v.status == "exact":
        lines.append("exact: every stage pair agrees on every row" + (
            " (the float output affine within its bound, docs/datapath.md)" if any("bound" in p for p in v.stages)
            else ""))
    elif v.status == "mismatch":
        b = v.first_bad
        where = f" at planes={b['planes']}" if b["planes"] is not None else ""
        lines.append(f"mismatch: {b['pair']} first differ{where} on row {b['row']}")
        lines.append("first differing layer: " + (b["layer"] or "none between QONNX and the emulator "
                                                   "(the C-sim differs from both)"))
    elif v.status == "refused":
        lines.append(f"refused ({v.reason}): {v.message}")
    else:
        lines.append(f"crash ({v.reason}): {v.message}")
    return "\n".join(lines)


def verify_file(path: str | Path, x: np.ndarray | None = None, rows: int = 64, io_type: str = "io_parallel",
                pe: int = 1, group_size: int = 0, seed: int = 0, out=None, rtl: bool | None = None) -> int:
    """``flipq verify MODEL.onnx``: the check on a user's QONNX model, printed; returns the exit
    code (0 all equal, 1 mismatch or crash). A refusal is raised as the one-line flipq error
    (the CLI exits 2). ``rtl`` (default: when Verilator is installed) adds the RTL twin's row.

    >>> verify_file("build/demo/model.onnx", rows=32)       # doctest: +SKIP
    0
    """
    import sys
    import tempfile

    from flipq.hls.prepare import load_qonnx

    out = out or sys.stdout
    raw = load_qonnx(path)
    intmodel = lower_model(raw, pe, group_size)[0]  # a refusal reaches the user as its own one-line error
    if x is not None:
        _check_inputs(x, intmodel)
    if rtl is None:
        from flipq.hls.verilator import available

        rtl = available()
    extra = "" if x is None else f" + {len(x)} rows of the given inputs"
    print(f"verify {path}: {rows} random rows over the input quantizer's range{extra}, {io_type}"
          + (", RTL twin in Verilator" if rtl else ""), file=out)
    with tempfile.TemporaryDirectory(prefix="flipq-verify-") as tmp:
        verdict = verify_model(raw, Path(tmp), rows=rows, seed=seed, x=x, io_type=io_type, pe=pe,
                               group_size=group_size, qonnx_rows=max(rows + (0 if x is None else len(x)), 1),
                               rtl=rtl)
    print(format_verdict(verdict), file=out)
    return 0 if verdict.status == "exact" else 1


def _check_inputs(x: np.ndarray, intmodel) -> None:
    shape = intmodel.user_input_shape()  # users feed the model's own layout
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise VerifyInputError(f"--input has shape {tuple(x.shape)}; the model takes (rows, "
                               f"{', '.join(map(str, shape))}) real values in its own layout")
    # real values only: a complex array would pass isfinite and lose its imaginary part silently
    if np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)) \
            or not np.all(np.isfinite(x)):
        raise VerifyInputError(f"--input must hold finite real numbers (dtype {x.dtype})")
