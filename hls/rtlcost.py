"""Cycles of the RTL twin's stages, as Verilator measures them (numpy only).

Each stage moves at most one beat a cycle on each side, and the MVAU runs one weight-plane step a
cycle, so a stage's cycles per sample is the largest of its beat counts and its steps
(docs/cost_model.md, "Cycles, calibrated on the RTL"). What the formulas rest on, measured in
Verilator (tests/test_rtl_mvau.py, tests/test_rtl_swg.py, tests/test_rtl_twin.py):

- MVAU: a vector takes ``max(T, R)`` cycles (``T`` kept steps, ``R`` rows read into the other
  half of its ping-pong buffer), at most 2 more when ``T`` and ``R`` are within 2 of each other;
  a sample is ``n_pix`` vectors.
- sliding-window generator: ``max(out_h * out_w * R, in_h * in_w)`` (emit- or read-bound; reading
  and emitting overlap, frames follow each other without a gap).
- width converter: the elements of a sample over its narrower side's lanes.
- element-wise stages, max pool's reduction, FIFOs: one beat a cycle.

A layer's interval is the largest over its wrapper's stages, the accelerator's the largest over
its layers and the DMA word unpacker/packer (stages decouple through FIFOs).

>>> rp = plan_rtl(intmodel, plan)                  # doctest: +SKIP
>>> layer_intervals(rp, planes=2)["conv1"]         # doctest: +SKIP
"""

from __future__ import annotations

import math

from flipq.hls.fold import lowest_plane

LABEL = "modeled (calibrated on the RTL twin in Verilator)"


def mvau_cycles(hw, planes: int | None) -> int:
    """One sample through a layer's MVAU: ``n_pix * max(T, R)``."""
    lowest = lowest_plane(hw.weight_bits, planes, hw.full_planes)
    return hw.n_pix * max(hw.fold.steps(lowest), hw.fold.n_rows)


def layer_interval(lay, planes: int | None) -> dict:
    """Cycles per sample of each stage of an RTL layer wrapper (``RtlLayer`` of
    :func:`flipq.hls.rtltwin.plan_rtl`), fed one beat a cycle and never blocked."""
    size_in = int(math.prod(lay.in_stream["shape"]))
    lanes_in = int(lay.in_stream["lanes"])
    out: dict = {}
    elems = size_in
    for st in lay.stages:
        p = st.params
        if st.module == "flipq_dwc":
            out["dwc"] = -(-elems // min(int(p["IN_N"]), int(p["OUT_N"])))
        elif st.module == "flipq_swg":
            r = p["KH"] * p["KW"] * p["CIN"] // p["SIMD"]
            out["swg"] = max(p["OUT_H"] * p["OUT_W"] * r, p["IN_H"] * p["IN_W"])
        elif st.module == "flipq_poolmax":
            pass  # one beat a cycle behind the window generator: never the slower
        elif st.module == "flipq_mvau":
            out["mvau"] = mvau_cycles(st.hw, planes)
        elif st.module == "flipq_eltwise":
            out["eltwise"] = -(-elems // int(p["N"]))
    if not out:
        out["pass"] = -(-size_in // lanes_in)
    return out


def layer_intervals(rp, planes: int | None) -> dict:
    """``{layer name: cycles per sample}`` of every RTL layer."""
    return {lay.name: max(layer_interval(lay, planes).values()) for lay in rp.layers}


def design_interval(rp, planes: int | None) -> dict:
    """The accelerator's cycles per sample: its slowest layer, or the DMA word unpacker or packer
    (one word a cycle, ``LANES`` elements a beat)."""
    words_in = -(-rp.n_in // rp.in_pack.per_word)
    words_out = -(-rp.n_out // rp.out_pack.per_word)
    glue = {"unpack": max(words_in, rp.n_in // rp.in_lanes), "pack": max(words_out, rp.n_out // rp.out_lanes)}
    layers = layer_intervals(rp, planes)
    both = {**layers, **glue}
    slowest = max(both, key=both.get)
    return {"interval": both[slowest], "binding": slowest, "layers": layers, **glue}
