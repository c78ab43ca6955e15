"""Per-layer cycles of the RTL twin, measured by Verilator (labelled *RTL-simulated*).

Every generated layer module (``flipq_L<i>_<kind>``, :mod:`flipq.hls.rtltwin`) runs alone in one
testbench: a source that always offers a beat (pseudo-random data: the schedule, not the values,
sets a layer's time) and a sink that always takes one. The cycle each sample's last output beat
leaves is recorded; a layer's *interval* is the median gap between consecutive samples (its
throughput when nothing starves or blocks it) and its *latency* the first sample's end. One
Verilator build serves every ``planes``: the testbench reads it from ``+planes=N``.

>>> cycles = layer_cycles(design, planes=[1, 2, 8])     # doctest: +SKIP
>>> cycles["conv1"][8]["interval"]                      # doctest: +SKIP
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from flipq.hls.verilator import build_binary

TB_TOP = "flipq_tb_layers"
SAMPLES = 4  # samples per layer: three gaps give the steady state
TIMEOUT_CYCLES = 200_000_000


def _testbench(design) -> str:
    lines = ["`timescale 1ns/1ps", "`default_nettype none", f"module {TB_TOP};",
             "    reg clk = 0;", "    reg rst = 1;", "    reg [3:0] planes = 0;", "    reg [63:0] cycle = 0;",
             "    reg [31:0] lfsr = 32'h1;", "    integer done = 0;",
             "    initial begin",
             "        if (!$value$plusargs(\"planes=%d\", planes)) planes = 0;",
             "        #10 rst = 0;", "    end",
             "    always #1 clk = ~clk;",
             "    always @(posedge clk) begin",
             "        cycle <= cycle + 1;",
             "        lfsr <= {lfsr[30:0], lfsr[31] ^ lfsr[21] ^ lfsr[1] ^ lfsr[0]};",
             f"        if (cycle > {TIMEOUT_CYCLES}) begin $display(\"FLIPQ TIMEOUT\"); $finish; end",
             f"        if (done == {len(design.layers)}) $finish;",
             "    end"]
    for lay in design.layers:
        i = lay.index
        w_in = lay.in_stream["ew"] * lay.in_stream["lanes"]
        w_out = lay.out_stream["ew"] * lay.out_stream["lanes"]
        rep = -(-w_in // 32)
        lines += [
            f"    // layer {i}",
            f"    wire [{w_in - 1}:0] in{i} = {{{rep}{{lfsr}}}};",
            f"    wire rdy{i}, val{i};", f"    wire [{w_out - 1}:0] out{i};",
            f"    reg [31:0] beats{i} = 0;", f"    reg [31:0] samples{i} = 0;",
            f"    {lay.module} u{i} (.clk(clk), .rst(rst), .planes(planes), .in_data(in{i}), .in_valid(!rst), "
            f".in_ready(rdy{i}), .out_data(out{i}), .out_valid(val{i}), .out_ready(1'b1));",
            "    always @(posedge clk) begin",
            f"        if (!rst && val{i} && samples{i} < {SAMPLES}) begin",
            f"            if (beats{i} + 1 == {lay.beats_out}) begin",
            f"                $display(\"FLIPQ %0d %0d %0d\", {i}, samples{i}, cycle);",
            f"                beats{i} <= 0;", f"                samples{i} <= samples{i} + 1;",
            f"                if (samples{i} + 1 == {SAMPLES}) done = done + 1;",
            f"            end else beats{i} <= beats{i} + 1;",
            "        end",
            "    end"]
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def build_timing_bench(design, build_dir: Path | None = None) -> Path:
    build_dir = Path(build_dir) if build_dir is not None else design.folder / "timing"
    build_dir.mkdir(parents=True, exist_ok=True)
    tb = build_dir / f"{TB_TOP}.v"
    tb.write_text(_testbench(design))
    rom_dir = str(design.folder.resolve()) + "/"
    return build_binary([*design.sources(), tb], TB_TOP, build_dir, defines={"FLIPQ_ROM_DIR": f'"{rom_dir}"'})


def layer_cycles(design, planes: list[int], exe: Path | None = None) -> dict:
    """``{layer name: {planes: {"interval": c, "latency": c}}}`` for each ``planes``, measured."""
    exe = exe or build_timing_bench(design)
    out: dict = {lay.name: {} for lay in design.layers}
    for p in planes:
        res = subprocess.run([str(exe), f"+planes={int(p)}"], cwd=exe.parent, capture_output=True, text=True,
                             timeout=3600)
        if "FLIPQ TIMEOUT" in res.stdout or res.returncode != 0:
            raise RuntimeError(f"{exe}: timing run at planes={p} failed or timed out:\n{res.stdout[-2000:]}"
                               f"{res.stderr[-2000:]}")
        ends: dict = {}
        for line in res.stdout.splitlines():
            if line.startswith("FLIPQ "):
                _, i, _k, c = line.split()
                ends.setdefault(int(i), []).append(int(c))
        for lay in design.layers:
            e = np.array(ends.get(lay.index, []))
            if len(e) < 2:
                raise RuntimeError(f"{exe}: layer {lay.name} finished {len(e)} samples at planes={p}")
            # the reset releases at cycle 5 (10 ns at a 2 ns clock): latency counts from there
            out[lay.name][int(p)] = {"interval": int(np.median(np.diff(e))), "latency": int(e[0] - 5)}
    return out
