"""Integer thresholds for a quantizer after a float chain (FINN's MultiThreshold idea).

Where a MAC layer feeds an activation quantizer through float operations (a float bias, float
or per-channel scales, BatchNorm, ReLU), the quantized output is a monotone step function of
the integer accumulator, per output channel. This module finds the steps *from the very
float32 function QONNX execution evaluates*: the chain's own nodes run through
``qonnx.core.onnx_exec`` on candidate accumulator values, so ties round exactly as the
reference rounds them, and every threshold is checked at the accumulator values on both
sides of it.

    >>> chain = FloatChain(model, mac_node, nodes, in_scale=2.0**-4, w_scale=s_w)   # doctest: +SKIP
    >>> t, descending = derive_thresholds(chain, lo, hi, qmin=0, qmax=7)          # doctest: +SKIP

The accumulator enters the chain as ``float32(acc * in_scale * w_scale[c])``, the correctly
rounded real value of the integer sum; QONNX's own float32 MatMul/Conv may round its sum
differently (its order is BLAS's), which docs/datapath.md bounds.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

# Above this many candidate values per channel the search is binary, not exhaustive.
EXHAUSTIVE_LIMIT = 1 << 12
CHECK_SAMPLES = 512


class ThresholdError(RuntimeError):
    """The chain is not a monotone step function of the accumulator (a flipq bug or an op
    that should have been refused); the message names the layer and channel."""


class FloatChain:
    """The float32 chain from a MAC node's output to a Quant (or the graph output), as a
    function of the integer accumulator: ``chain(acc)`` with ``acc`` of shape (M, C).

    Each node computes what QONNX execution computes for it: the elementwise ops are single
    IEEE float32 operations (numpy and onnxruntime round them identically), BatchNorm runs in
    onnxruntime (the kernel QONNX execution calls), the Quant through qonnx's own ``quant``.
    Per-channel values are laid out channels last, so one (M, C) array stands for every pixel.
    """

    def __init__(self, model, start: str, nodes: list, end: str, in_scale: float, w_scale: np.ndarray,
                 name: str, const_value, bias: np.ndarray | None = None):
        self.name = name
        # a MAC node's own bias input, added to its sum in float32 as the node does
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1)
        self.scale = np.asarray(w_scale, dtype=np.float64) * float(in_scale)  # (C,)
        self.start, self.end = start, end
        c = len(self.scale)
        self.steps = []
        for node in nodes:
            consts = {}
            for i in node.input:
                if i and i not in (n.output[0] for n in nodes) and i != start:
                    v = const_value(model, i)
                    if v is None:
                        raise ThresholdError(f"layer '{name}': input '{i}' of node '{node.name}' is not constant")
                    v = np.asarray(v, dtype=np.float32)
                    if node.op_type == "BatchNormalization":  # ORT wants its vectors as vectors
                        consts[i] = v.reshape(c)
                    else:
                        consts[i] = v.reshape(c) if v.size == c and c > 1 else v.reshape(()) if v.size == 1 else v
            self.steps.append((node, consts, _session(node) if node.op_type == "BatchNormalization" else None))

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        """Chain outputs (float32, shape of ``acc``) for integer accumulators (M, C)."""
        from qonnx.custom_op.general.quant import quant
        from onnx import helper as _h

        acc = np.asarray(acc)
        x = (acc.astype(np.float64) * self.scale).astype(np.float32)
        if self.bias is not None:
            x = x + self.bias
        ctx = {self.start: x}
        for node, consts, sess in self.steps:
            args = [ctx[i] if i in ctx else consts[i] for i in node.input if i]
            op = node.op_type
            if op == "Trunc":
                from qonnx.custom_op.general.trunc import trunc_v1, trunc_v2

                a = {x.name: _h.get_attribute_value(x) for x in node.attribute}
                mode = a.get("rounding_mode", b"FLOOR")
                mode = mode.decode() if isinstance(mode, bytes) else mode
                if len(args) == 6:
                    y = trunc_v2(args[0], args[1], args[2], args[3], a.get("narrow", 0), a.get("signed", 1), args[4],
                                 args[5], mode)
                else:
                    y = trunc_v1(*args[:5], mode)
            elif op == "BipolarQuant":
                from qonnx.custom_op.general.bipolar_quant import binary_quant

                y = binary_quant(args[0], args[1])
            elif op == "Quant":
                a = {x.name: _h.get_attribute_value(x) for x in node.attribute}
                mode = a.get("rounding_mode", b"ROUND")
                y = quant(args[0], args[1], args[2], args[3], signed=a.get("signed", 1), narrow=a.get("narrow", 0),
                          rounding_mode=mode.decode() if isinstance(mode, bytes) else mode)
            elif op == "Relu":
                y = np.maximum(args[0], np.float32(0))
            elif op == "BatchNormalization":
                y = sess.run(None, dict(zip(["x", "g", "b", "m", "v"], args)))[0]
            else:
                y = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](args[0], args[1])
            ctx[node.output[0]] = np.asarray(y, dtype=np.float32)
        return ctx[self.end].reshape(acc.shape)


def _session(node):
    """A one-node onnxruntime session for a BatchNormalization on (M, C) float32 inputs."""
    import onnxruntime as ort
    from onnx import TensorProto
    from qonnx.util.basic import get_by_name

    eps = get_by_name(node.attribute, "epsilon")
    bn = helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"],
                          epsilon=eps.f if eps is not None else 1e-5)
    vec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in "gbmv"]
    graph = helper.make_graph([bn], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])] + vec,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def levels(values: np.ndarray, out_scale: float) -> np.ndarray:
    """Quantizer outputs (float32 reals ``q * scale``) -> their integers ``q``."""
    return np.round(np.asarray(values, dtype=np.float64) / float(out_scale)).astype(np.int64)


def derive_thresholds(fn, lo: np.ndarray, hi: np.ndarray, qmin: int, qmax: int, name: str = "layer"):
    """Thresholds ``T`` (C, qmax - qmin) and the descending channels of ``fn``, a monotone
    step function per channel from integer accumulators (M, C) to quantizer integers.

    ``lo``/``hi`` (C,) bound the accumulator of each channel (over every run-time ``planes``).
    For each channel ``qmin + #{k: s*acc >= T[k]} == fn(acc)`` for every ``acc`` in
    ``lo..hi`` (``s = -1`` on descending channels); a level never reached gets ``hi + 1``
    (never) and one always reached gets ``lo`` (always).
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    c = len(lo)
    n_levels = qmax - qmin
    ends = fn(np.stack([lo, hi]))
    sign = np.where(ends[0] > ends[1], -1, 1).astype(np.int64)
    # in v = sign * acc every channel is non-decreasing, over vlo..vhi
    vlo = np.where(sign > 0, lo, -hi)
    vhi = np.where(sign > 0, hi, -lo)

    def g(v):
        return fn(v * sign)

    targets = qmin + 1 + np.arange(n_levels, dtype=np.int64)[:, None]  # (L, 1)
    span = int((vhi - vlo).max(initial=0)) + 1
    if span <= EXHAUSTIVE_LIMIT and span * c <= 1 << 22:
        # every reachable accumulator value: the thresholds are read off directly
        grid = vlo[None, :] + np.arange(span, dtype=np.int64)[:, None]  # (span, C)
        grid = np.minimum(grid, vhi[None, :])
        y = g(grid)
        t = np.empty((c, n_levels), dtype=np.int64)
        for j in range(n_levels):
            reached = y >= targets[j]
            first = np.where(reached.any(axis=0), reached.argmax(axis=0), span)
            t[:, j] = np.where(first < span, vlo + first, vhi + 1)
    else:
        lo_b = np.broadcast_to(vlo, (n_levels, c)).copy()
        hi_b = np.broadcast_to(vhi + 1, (n_levels, c)).copy()
        while np.any(lo_b < hi_b):
            mid = (lo_b + hi_b) // 2
            ok = g(np.minimum(mid, vhi[None, :])) >= targets
            ok &= mid <= vhi[None, :]
            hi_b = np.where(ok & (lo_b < hi_b), mid, hi_b)
            lo_b = np.where(~ok & (lo_b < hi_b), mid + 1, lo_b)
        t = lo_b.T.copy()
    _check(g, t, vlo, vhi, qmin, name)
    return t, [int(i) for i in np.flatnonzero(sign < 0)]


def _check(g, t: np.ndarray, vlo: np.ndarray, vhi: np.ndarray, qmin: int, name: str) -> None:
    """The thresholds reproduce ``g`` on both sides of every threshold, at the range ends and at
    random accumulators: a non-monotone chain cannot pass unnoticed."""
    rng = np.random.default_rng(0)
    c = len(vlo)
    probes = [vlo, vhi, rng.integers(vlo, vhi + 1, size=(CHECK_SAMPLES, c))]
    for k in range(t.shape[1]):
        probes += [np.clip(t[:, k] - 1, vlo, vhi), np.clip(t[:, k], vlo, vhi)]
    v = np.vstack([np.atleast_2d(p) for p in probes])
    want = g(v)
    got = qmin + (v[:, :, None] >= t[None, :, :]).sum(axis=2)
    bad = np.argwhere(got != want)
    if bad.size:
        row, ch = bad[0]
        raise ThresholdError(
            f"layer '{name}', channel {ch}: the float chain is not a monotone step function of the "
            f"accumulator (at {int(v[row, ch])} it gives {int(want[row, ch])}, the thresholds "
            f"{int(got[row, ch])})")
