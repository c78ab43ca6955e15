"""Yosys synthesis figures (flipq.hls.yosys) on small fixtures with known answers: a carry chain,
a LUT ROM, a BRAM ROM, an FF pipeline, a DSP multiply, distributed RAM and a chain of exactly N
LUTs; plus the netlist-depth walk and the timing proxy on hand-made netlists (no Yosys needed)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from flipq.hls import yosys

RTL = Path(__file__).parent / "rtl"
FLIPQ_RTL = Path(yosys.__file__).parent / "rtl"
needs_yosys = pytest.mark.skipif(not yosys.available(), reason="Yosys not installed (apt-get install yosys)")


def _hex(path: Path, depth: int, width: int, seed: int) -> Path:
    rng = random.Random(seed)
    digits = (width + 3) // 4
    path.write_text("".join(f"{rng.getrandbits(width):0{digits}x}\n" for _ in range(depth)))
    return path


def _synth(tmp_path_factory, name: str, params: dict | None = None, hexes=()) -> dict:
    work = tmp_path_factory.mktemp(f"yosys_{name}")
    # written elsewhere so that synthesize() has to copy them into work_dir, where the ROM's
    # relative file name resolves
    src = tmp_path_factory.mktemp(f"hex_{name}")
    files = [_hex(src / f, d, w, s) for f, d, w, s in hexes]
    return yosys.synthesize([RTL / f"yosys_{name}.v"], f"yosys_{name}", work, params=params,
                            data_files=files, timeout_s=300)


# --- no Yosys needed ---------------------------------------------------------------------------

def test_missing_yosys_names_tool_and_install(monkeypatch):
    monkeypatch.delenv("FLIPQ_YOSYS", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(yosys.YosysError, match=r"Yosys.*apt-get install yosys"):
        yosys.yosys_command()
    assert not yosys.available()
    monkeypatch.setenv("FLIPQ_YOSYS", "/nonexistent/yosys")
    with pytest.raises(yosys.YosysError, match=r"FLIPQ_YOSYS.*apt-get install yosys"):
        yosys.yosys_command()


def test_param_literals_survive_yosys_0_23_chparam():
    assert yosys._param_literal("W", 36) == "32'd36"
    assert yosys._param_literal("X", 1 << 40) == f"42'd{1 << 40}"
    # negatives as 128-bit two's complement, truncated back by a typed parameter
    assert yosys._param_literal("Q", -3) == "128'h" + "f" * 31 + "d"
    assert yosys._param_literal("F", "w.hex") == "40'h" + b"w.hex".hex()
    assert yosys._param_literal("F", "") == "8'h0"
    assert yosys._param_literal("B", True) == "1"
    with pytest.raises(yosys.YosysError, match="F"):
        yosys._param_literal("F", 'a"b')


def _cell(kind, conns, dirs, **params):
    return {"type": kind, "connections": conns, "port_directions": dirs, "parameters": params}


def _lut(i, o):
    return _cell("LUT2", {"I0": [i], "I1": [i], "O": [o]}, {"I0": "input", "I1": "input", "O": "output"})


def _ff(d, q):
    return _cell("FDRE", {"C": [1], "CE": ["1"], "R": ["0"], "D": [d], "Q": [q]},
                 {"C": "input", "CE": "input", "R": "input", "D": "input", "Q": "output"})


def _carry(ci, s, co):
    return _cell("CARRY4", {"CI": [ci], "CYINIT": ["0"], "DI": ["0"] * 4, "S": [s, "0", "0", "0"],
                            "O": [co + 100, co + 101, co + 102, co + 103], "CO": [co + 200, co + 201, co + 202, co]},
                 {"CI": "input", "CYINIT": "input", "DI": "input", "S": "input", "O": "output", "CO": "output"})


def test_netlist_depth_counts_luts_between_registers_and_carry_separately():
    # FF(10) -> LUT -> LUT -> LUT -> FF, and a parallel FF -> LUT -> CARRY4 x3 -> LUT -> FF
    cells = {"f0": _ff(2, 10), "l1": _lut(10, 11), "l2": _lut(11, 12), "l3": _lut(12, 13), "f1": _ff(13, 14),
             "la": _lut(10, 20), "c1": _carry("0", 20, 21), "c2": _carry(21, 20, 22), "c3": _carry(22, 20, 23),
             "lb": _lut(23, 24), "f2": _ff(24, 25)}
    d = yosys.netlist_depth({"ports": {}, "cells": cells})
    assert d["lut_levels"] == 3
    assert d["path"] == {"lut": 3, "carry4": 0, "muxf": 0}
    assert d["loops"] == 0
    # the carry path has 2 LUTs but 3 CARRY4s; by the estimate it is the slower one
    crit = d["critical_path"]
    assert (crit["lut"], crit["carry4"], crit["start"]) == (2, 3, "FDRE")
    expect = (yosys.FF_CLK_TO_Q_NS + 2 * (yosys.LUT_NS + yosys.NET_NS) + yosys.NET_NS + yosys.CARRY4_ENTRY_NS
              + 2 * yosys.CARRY4_CI_NS + yosys.NET_NS + yosys.FF_SETUP_NS)
    assert crit["ns"] == pytest.approx(expect, abs=1e-3)


def test_netlist_depth_cuts_combinational_loops():
    cells = {"a": _lut(31, 30), "b": _lut(30, 31), "f": _ff(30, 32)}
    d = yosys.netlist_depth({"ports": {}, "cells": cells})
    assert d["loops"] == 2 and d["lut_levels"] == 0


def test_timing_proxy_levels_at_100mhz():
    five, twenty = yosys.timing_proxy(5), yosys.timing_proxy(20)
    assert five["meets"] and not twenty["meets"]
    assert five["path_ns"] < twenty["path_ns"]
    assert yosys.timing_proxy(five["max_levels"])["meets"]
    assert not yosys.timing_proxy(five["max_levels"] + 1)["meets"]
    assert yosys.timing_proxy(3, carry4=8)["path_ns"] > yosys.timing_proxy(3)["path_ns"]
    assert "estimate" in five["label"]


# --- Yosys --------------------------------------------------------------------------------------

@needs_yosys
def test_adder_is_a_carry_chain(tmp_path_factory):
    r = _synth(tmp_path_factory, "add16")
    assert r["carry4"] == 4              # 16 bits, 4 a CARRY4
    assert r["lut"] == 16 and r["lut_by_size"] == {"LUT2": 16}   # one propagate LUT a bit
    assert r["ff"] == 48                 # a, b and s registered
    assert r["dsp"] == 0 and r["bram36"] == 0
    assert r["lut_levels"] == 1 and r["path"]["carry4"] == 4
    assert r["label"] == f"Yosys {r['yosys_version']} synth_xilinx -family xc7 (pre-place)"
    assert Path(r["log"]).is_file() and Path(r["log"]).name == "yosys_yosys_add16.log"


@needs_yosys
def test_small_rom_from_hex_is_luts(tmp_path_factory):
    r = _synth(tmp_path_factory, "rom", {"FILE": "rom64.hex"}, [("rom64.hex", 64, 8, 1)])
    # 6 address bits: one LUT6 per random data bit, then the registered output
    assert r["lut_by_size"] == {"LUT6": 8} and r["ff"] == 8
    assert r["bram36"] == 0 and r["lutram"] == 0
    assert r["lut_levels"] == 1


@needs_yosys
def test_deep_rom_is_block_ram(tmp_path_factory):
    r = _synth(tmp_path_factory, "rom", {"FILE": "rom2k.hex", "W": 36, "DEPTH": 2048, "AW": 11},
               [("rom2k.hex", 2048, 36, 2)])
    assert (r["ramb36"], r["ramb18"], r["bram36"]) == (2, 0, 2.0)    # 72 Kbit: two 36 Kbit BRAMs
    assert r["lut"] == 0 and r["ff"] == 0                            # the output register is the BRAM's


@needs_yosys
def test_pipeline_ff_count_is_exact(tmp_path_factory):
    r = _synth(tmp_path_factory, "pipe", {"W": 7, "STAGES": 5})
    assert r["ff"] == 35 and r["cells"].get("FDRE") == 35
    assert r["lut"] == 0 and r["lutram"] == 0 and r["lut_levels"] == 0


@needs_yosys
def test_multiply_is_one_dsp(tmp_path_factory):
    r = _synth(tmp_path_factory, "mul18")
    assert r["dsp"] == 1
    assert r["lut"] == 0 and r["ff"] == 0       # A/B/P registers go into the DSP48E1


@needs_yosys
def test_distributed_ram_counts_lut_sites(tmp_path_factory):
    r = _synth(tmp_path_factory, "ram")
    assert r["lutram_cells"] == {"RAM32M": 1} and r["lutram"] == 4
    assert r["lut_total"] == r["lut"] + 4
    assert r["lut_levels"] == 1                 # the asynchronous read is one LUT deep


@needs_yosys
def test_lut_chain_depth(tmp_path_factory):
    r = _synth(tmp_path_factory, "lutchain", {"N": 6})
    assert r["lut_by_size"] == {"LUT6": 6}
    assert r["lut_levels"] == 6
    assert r["critical_path"]["lut"] == 6 and r["critical_path"]["start"] == "FDRE"
    assert r["timing"]["lut_levels"] == 6 and r["timing"]["meets"]


@needs_yosys
def test_failure_names_log_and_design(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input wire a, output wire b);\n  assign b = a +;\nendmodule\n")
    with pytest.raises(yosys.YosysError, match=r"Yosys failed on bad: .*ERROR.*log: .*yosys_bad\.log") as err:
        yosys.synthesize([bad], "bad", tmp_path / "work")
    assert "bad.v" in str(err.value)
    with pytest.raises(yosys.YosysError, match="does not exist"):
        yosys.synthesize([tmp_path / "missing.v"], "missing", tmp_path / "work")


@needs_yosys
@pytest.mark.skipif(not (FLIPQ_RTL / "flipq_fifo.v").is_file(), reason="hls/rtl/flipq_fifo.v not written yet")
def test_flipq_fifo_synthesizes(tmp_path):
    r = yosys.synthesize([FLIPQ_RTL / "flipq_fifo.v"], "flipq_fifo", tmp_path, params={"W": 32, "DEPTH": 16})
    assert r["lut_total"] > 0 and r["ff"] > 0
    assert r["bram36"] == 0 and r["dsp"] == 0
    assert 1 <= r["lut_levels"] <= 10


@needs_yosys
@pytest.mark.parametrize("params", [
    {"N": 16, "AW": 4, "A_SIGNED": 0, "SA": 0, "BW": 5, "B_SIGNED": 1, "SB": 1, "OW": 7},
    {"N": 32, "AW": 4, "A_SIGNED": 0, "SA": 2, "BW": 4, "B_SIGNED": 0, "SB": 0, "OW": 8},
])
def test_the_residual_add_model_follows_yosys(params, tmp_path_factory):
    """The graph's join modules priced as Yosys maps them: the add's LUTs (one a bit where both
    operands are live) within 20 %, its carry chains exactly; the fork's LUTs."""
    from flipq.hls.rtlresources import stage_resources
    from flipq.hls.rtltwin import Stage
    from flipq.hls.verilator import RTL_DIR

    def synth(name, p):
        return yosys.synthesize([RTL_DIR / f"{name}.v"], name, tmp_path_factory.mktemp(name), params=p, timeout_s=300)

    got = synth("flipq_add", params)
    model = stage_resources(Stage("flipq_add", params, 0, 0))
    assert abs(model["lut"] - got["lut_total"]) <= 0.2 * got["lut_total"], (model, got["lut_total"])
    assert model["carry4"] == got["carry4"]
    if params["SA"]:  # the fork once
        fork = synth("flipq_fork", {"W": 32, "NO": 2})
        assert stage_resources(Stage("flipq_fork", {"W": 32, "NO": 2}, 0, 0))["lut"] == pytest.approx(fork["lut_total"])


@needs_yosys
@pytest.mark.parametrize("params", [
    {"N": 16, "OW": 6, "NA": 8, "AW": 4, "A_SIGNED": 0, "SA": 2, "NB": 8, "BW": 6, "B_SIGNED": 1, "SB": 0},
    {"N": 24, "OW": 8, "NA": 16, "AW": 8, "A_SIGNED": 1, "SA": 0, "NB": 8, "BW": 5, "B_SIGNED": 0, "SB": 3},
])
def test_the_concat_model_follows_yosys(params, tmp_path):
    """flipq_concat priced as Yosys maps it: wiring into the output register (a few LUTs) whose
    flip-flops are the operands' own bits (a shift's zeros and a sign's copies are no FFs)."""
    from flipq.hls.rtlresources import stage_resources
    from flipq.hls.rtltwin import Stage
    from flipq.hls.verilator import RTL_DIR

    got = yosys.synthesize([RTL_DIR / "flipq_concat.v"], "flipq_concat", tmp_path, params=params, timeout_s=300)
    model = stage_resources(Stage("flipq_concat", params, 0, 0))
    assert model["ff"] == got["ff"] and model["carry4"] == got["carry4"] == 0
    assert abs(model["lut"] - got["lut_total"]) <= 2, (model["lut"], got["lut_total"])
