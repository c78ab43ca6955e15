"""The overlay flow's answers to bad or unusual input, and the portable overlay folder: every Tcl
path relative to the script (checked by running the scripts in a real Tcl interpreter with the
Vivado commands stubbed), the PS clock rounding, the option ranges, the tool requirement, the
board agreement, unwritable outputs, broken .hwh / wrapper files and atomic writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flipq.boards import load_board
from flipq.cli import main
from flipq.host.accelmeta import AccelMeta
from flipq.overlays.metadata import accel_meta_for, largest_batch
from flipq.overlays import tools
from flipq.overlays.check import HwhError, check_overlay
from flipq.overlays.clocks import ClockError, pl_clock
from flipq.overlays.errors import OverlayInputError, ToolNotFoundError
from flipq.overlays.flow import build_overlay
from flipq.host.files import replacing, write_atomic
from flipq.overlays.hwh import generate_hwh

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: siblings by path
from test_overlays import make_hls_dir, tiny_intmodel  # noqa: E402

# A bit-serial-shaped hls4ml project for tiny_intmodel (12 inputs, 5 outputs): the wrapper can be
# generated around it, and its includes reach into nnet_utils/ and out to tool headers.
PROJECT_H = """#ifndef MYPROJECT_H_
#define MYPROJECT_H_
#include "ap_fixed.h"
#include "ap_int.h"
#include "defines.h"
void myproject(input_t global_in[12], result_t layer9_out[5], ap_uint<4> planes);
#endif
"""
DEFINES_H = """#ifndef DEFINES_H_
#define DEFINES_H_
#include "ap_fixed.h"
typedef ap_fixed<8,4> input_t;
typedef ap_fixed<32,16> result_t;
#endif
"""
PROJECT_CPP = """#include "myproject.h"
#include "parameters.h"
void myproject(input_t global_in[12], result_t layer9_out[5], ap_uint<4> planes) {}
"""
PARAMETERS_H = '#include "nnet_utils/nnet_dense.h"\n'
NNET_DENSE_H = '#include "nnet_common.h"\n#include "hls_stream.h"\n// #include "nnet_unused.h"\n'


def make_project_hls(path: Path, board: str | None = "pynq-z2") -> Path:
    """An hls folder whose report lists a real (tiny) hls4ml project and the board it was checked for."""
    tiny_intmodel().save(path)
    fw = path / "prj" / "firmware"
    (fw / "nnet_utils").mkdir(parents=True)
    (fw / "ap_types").mkdir()
    (path / "prj" / "hls4ml_config.yml").write_text("ProjectName: myproject\n")
    for name, text in (("myproject.h", PROJECT_H), ("defines.h", DEFINES_H), ("myproject.cpp", PROJECT_CPP),
                       ("parameters.h", PARAMETERS_H), ("nnet_utils/nnet_dense.h", NNET_DENSE_H),
                       ("nnet_utils/nnet_common.h", "// common\n"), ("nnet_utils/nnet_unused.h", "// no\n"),
                       ("ap_types/ap_fixed.h", "// hls4ml's copy\n")):
        (fw / name).write_text(text)
    report = {"totals": {"lut": 4000, "ff": 5000, "bram36": 6, "dsp": 4},
              "sources": ["prj/firmware/myproject.cpp"]}
    if board:
        report["board"] = {"name": board, "fits": True, "over": [], "utilization": {}}
    (path / "hls_report.json").write_text(json.dumps(report))
    return path


@pytest.fixture
def no_tools(monkeypatch):
    monkeypatch.setattr(tools, "find_tools", lambda: {"hls": None, "vivado": None, "vivado_hls": None})


def dry_build(hls: Path, out: Path, capsys, *args: str) -> tuple[int, str, str]:
    """``flipq overlay build HLS --out OUT --dry-run ARGS...`` through the real CLI."""
    return run_cli(["overlay", "build", str(hls), "--out", str(out), "--dry-run", *args], capsys)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


# -- the Tcl, run in a real Tcl interpreter with Vivado's commands stubbed ---------------------
TCL_STUBS = r"""
set ::calls {}
proc unknown {args} { lappend ::calls $args; return "" }
proc exit {args} {}
rename cd _flipq_real_cd
proc cd {dir} { lappend ::calls [list cd $dir] }
proc get_board_parts {args} { return $::board_parts }
proc get_bd_nets {args} { return $::nets }
proc get_property {name args} {
  if {$name eq "PROGRESS"} { return "100%" }
  if {$name eq "SLACK"} { return $::slack }
  return ""
}
set ::board_parts {}
set ::nets {fclk_net}
set ::slack 0.5
"""


def tcl_interp():
    tkinter = pytest.importorskip("tkinter")
    try:
        tcl = tkinter.Tcl()
    except tkinter.TclError as e:
        pytest.skip(f"no Tcl interpreter: {e}")
    tcl.eval(TCL_STUBS)
    return tcl, tkinter.TclError


def tcl_calls(tcl, command: str) -> list[list[str]]:
    calls = tcl.splitlist(tcl.eval("set ::calls"))
    return [list(tcl.splitlist(c)) for c in calls if tcl.splitlist(c)[0] == command]


@pytest.fixture
def moved(tmp_path, no_tools):
    """An overlay built (dry run) into a path with a space, then moved elsewhere."""
    hls = make_project_hls(tmp_path / "hls")
    first = tmp_path / "my builds" / "the overlay"
    result = build_overlay(hls, None, first, dry_run=True)
    assert result.returncode == 0
    moved = tmp_path / "elsewhere" / "ov"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    return first, moved


def test_folder_is_portable_no_absolute_paths(moved, tmp_path):
    first, out = moved
    cells = ("processing_system7_0/", "axi_dma_0/", "flipq_accel_0/")
    for name in ("hls_synth.tcl", "block_design.tcl", "bitstream.tcl"):
        text = (out / name).read_text()
        assert str(tmp_path) not in text and "my builds" not in text, name
        # any /... token left is a block-design path (/processing_system7_0/FCLK_CLK0), not a file
        for token in re.findall(r"(?<![\w$\]}])/[^\s{}\[\]\"]+", text):
            if token.startswith("/\\"):
                continue  # a path separator inside a Tcl regular expression, not a path
            assert token[1:].startswith(cells), (name, token)
    # every file add_files names, read as the line says, exists in the moved folder
    hls = (out / "hls_synth.tcl").read_text()
    adds = re.findall(r"^add_files \[file join \$here ([^\]]+)\]", hls, re.M)
    assert adds == ["src flipq_top.cpp", "src myproject.cpp"]
    for add in adds:
        assert out.joinpath(*add.split()).is_file()
    # the includes they need came along; the tool's headers and unused ones did not
    for name in ("myproject.h", "defines.h", "parameters.h", "flipq_top.h", "nnet_utils/nnet_dense.h",
                 "nnet_utils/nnet_common.h"):
        assert (out / "src" / name).is_file(), name
    assert not (out / "src" / "nnet_utils" / "nnet_unused.h").exists()
    assert not (out / "src" / "ap_types").exists()


def test_moved_scripts_resolve_inside_the_folder(moved):
    _, out = moved
    tcl, TclError = tcl_interp()
    tcl.eval(f"source {{{out / 'hls_synth.tcl'}}}")
    files = [c[1] for c in tcl_calls(tcl, "add_files")]
    assert [Path(f) for f in files] == [out / "src" / "flipq_top.cpp", out / "src" / "myproject.cpp"]
    assert all(Path(f).is_file() for f in files)
    assert tcl_calls(tcl, "cd") == [["cd", str(out)]]
    assert ["create_clock", "-period", "10", "-name", "default"] in tcl_calls(tcl, "create_clock")

    tcl.eval("set ::calls {}; set ::board_parts {tul.com.tw:pynq-z2:part0:1.0}")
    tcl.eval(f"source {{{out / 'block_design.tcl'}}}")
    project = tcl_calls(tcl, "create_project")[0]
    assert project[:3] == ["create_project", "-force", "flipq"] and Path(project[3]) == out / "vivado"
    repo = [c for c in tcl_calls(tcl, "set_property") if c[1] == "ip_repo_paths"][0]
    assert [Path(p) for p in tcl.splitlist(repo[2])] == [out / "flipq_hls"]
    assert tcl_calls(tcl, "make_wrapper")  # ran to the end
    # a clock the automation left open stops the script by name
    tcl.eval("set ::calls {}; set ::nets {}")
    with pytest.raises(TclError, match="flipq_accel_0/ap_clk is not connected after the AXI automation"):
        tcl.eval(f"source {{{out / 'block_design.tcl'}}}")


def test_block_design_stops_without_the_board_files(moved):
    _, out = moved
    tcl, TclError = tcl_interp()
    with pytest.raises(TclError, match="board part tul.com.tw:pynq-z2:part0:1.0 is not installed.*--board-repo"):
        tcl.eval(f"source {{{out / 'block_design.tcl'}}}")
    assert tcl_calls(tcl, "create_project") == []


def test_bitstream_refuses_negative_slack_before_copying(moved):
    _, out = moved
    impl = out / "vivado" / "flipq.runs" / "impl_1"
    impl.mkdir(parents=True)
    (impl / "flipq_wrapper.bit").write_bytes(b"BIT")
    hwh = out / "vivado" / "flipq.gen" / "sources_1" / "bd" / "flipq" / "hw_handoff"
    hwh.mkdir(parents=True)
    (hwh / "flipq.hwh").write_text("<EDKSYSTEM/>")
    tcl, TclError = tcl_interp()
    tcl.eval("set ::slack -0.25")
    with pytest.raises(TclError, match=r"timing not met at 100 MHz: WNS -0.25 ns"):
        tcl.eval(f"source {{{out / 'bitstream.tcl'}}}")
    assert not (out / "flipq.bit").exists() and not (out / "flipq.hwh").exists()
    tcl.eval("set ::slack 0.1")
    tcl.eval(f"source {{{out / 'bitstream.tcl'}}}")
    assert (out / "flipq.bit").read_bytes() == b"BIT" and (out / "flipq.hwh").is_file()
    assert not list(out.glob("*.tmp"))


# -- clocks ----------------------------------------------------------------------------------
def test_fclk_rounds_to_what_the_ps_generates(tmp_path, no_tools, capsys):
    hls = make_project_hls(tmp_path / "hls")
    out = tmp_path / "ov"
    rc, stdout, _ = dry_build(hls, out, capsys, "--fclk-mhz", "150")
    assert rc == 0
    assert "note: fclk 150 MHz rounded to 142.857143 MHz" in stdout and "1000 MHz / (7 x 1)" in stdout
    meta = AccelMeta.load(out / "accel.json")
    assert meta.fclk_mhz == 142.857143
    assert "create_clock -period 7 -name default" in (out / "hls_synth.tcl").read_text()
    assert "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {142.857143}" in (out / "block_design.tcl").read_text()
    # the .hwh a PS so configured writes passes the check, and the host reads the same clock
    (out / "flipq.hwh").write_text(generate_hwh(meta, load_board("pynq-z2")))
    assert check_overlay(out)["fclk_mhz"] == pytest.approx(142.857143, rel=1e-6)
    # an exact frequency is kept without a note
    rc, stdout, _ = dry_build(hls, out, capsys, "--fclk-mhz", "125")
    assert rc == 0 and "rounded" not in stdout and AccelMeta.load(out / "accel.json").fclk_mhz == 125.0


@pytest.mark.parametrize("value, message", [
    ("-5", "-5 must be a finite number > 0"),
    ("nan", "nan must be a finite number > 0"),
    ("inf", "inf must be a finite number > 0"),
    ("0", "0 must be a finite number > 0"),
    ("fast", "'fast' is not a number"),
    ("1000", "fclk_mhz = 1000 MHz is outside the PL clock range: pynq-z2 allows 10..250 MHz"),
    ("5", "fclk_mhz = 5 MHz is outside the PL clock range: pynq-z2 allows 10..250 MHz"),
])
def test_bad_fclk_refused(tmp_path, no_tools, capsys, value, message):
    hls = make_project_hls(tmp_path / "hls")
    rc, _, err = dry_build(hls, tmp_path / "ov", capsys, "--fclk-mhz", value)
    assert rc == 2 and message in err
    assert not (tmp_path / "ov" / "accel.json").exists()


def test_pl_clock_refuses_non_finite_in_python():
    board = load_board("zcu104")
    for bad in (float("nan"), float("inf"), -1.0, 0.0, 400.0):
        with pytest.raises(ClockError, match="zcu104 allows 10..333 MHz"):
            pl_clock(board, bad)
    assert pl_clock(board, 100).fclk_mhz == 100.0 and pl_clock(board, 150).fclk_mhz == 150.0


# -- jobs and max-batch ----------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--jobs", "-3"], "argument --jobs: -3 must be >= 1"),
    (["--jobs", "0"], "argument --jobs: 0 must be >= 1"),
    (["--jobs", "2.5"], "argument --jobs: '2.5' is not an integer"),
    (["--jobs", "100"], "jobs = 100: expected a whole number 1..64"),
    (["--max-batch", "0"], "argument --max-batch: 0 must be >= 1"),
    (["--max-batch", "-1"], "argument --max-batch: -1 must be >= 1"),
])
def test_bad_jobs_and_batch_refused(tmp_path, no_tools, capsys, args, message):
    hls = make_project_hls(tmp_path / "hls")
    rc, _, err = dry_build(hls, tmp_path / "ov", capsys, *args)
    assert rc == 2 and message in err


def test_max_batch_above_the_dma_length_names_the_maximum(tmp_path, no_tools, capsys):
    hls = make_project_hls(tmp_path / "hls")
    board = load_board("pynq-z2")
    most = largest_batch(tiny_intmodel(), board)
    rc, _, err = dry_build(hls, tmp_path / "ov", capsys, "--max-batch", str(most + 1))
    assert rc == 2
    assert f"max_batch = {most + 1}: the pynq-z2 DMA's length register (26 bits) carries at most {most}" in err
    rc, _, _ = dry_build(hls, tmp_path / "ov", capsys, "--max-batch", str(most))
    assert rc == 0 and AccelMeta.load(tmp_path / "ov" / "accel.json").max_batch == most


def test_options_checked_in_python_too(tmp_path, no_tools):
    hls = make_project_hls(tmp_path / "hls")
    for options, message in (({"jobs": 0}, "jobs = 0"), ({"jobs": True}, "jobs = True"),
                             ({"max_batch": 2.5}, "max_batch = 2.5")):
        with pytest.raises(OverlayInputError, match=message):
            build_overlay(hls, None, tmp_path / "ov", dry_run=True, **options)


# -- tools -----------------------------------------------------------------------------------
def fake_tool(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_only_vivado_hls_is_named_and_refused(tmp_path, monkeypatch, capsys):
    fake_tool(tmp_path / "bin", "vivado_hls")
    fake_tool(tmp_path / "bin", "vivado")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    hls = make_project_hls(tmp_path / "hls")
    rc, _, err = run_cli(["overlay", "build", str(hls), "--out", str(tmp_path / "ov")], capsys)
    assert rc == 1
    assert "vitis_hls: not on PATH, only vivado_hls" in err and "install vitis_hls 2020.2 or newer" in err
    assert "-flow_target and -std=c++14 are Vitis HLS options" in err and "planes_V" in err
    assert "vivado: not on PATH" not in err


def test_old_vitis_hls_refused_new_one_accepted(tmp_path, monkeypatch):
    fake_tool(tmp_path / "bin", "vivado")
    old = fake_tool(tmp_path / "Vitis_HLS" / "2020.1" / "bin", "vitis_hls")
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{tmp_path / 'bin'}")
    assert tools.tool_problems(tools.find_tools()) == [
        f"vitis_hls: {old} is 2020.1; flipq needs vitis_hls 2020.2 or newer"]
    new = fake_tool(tmp_path / "Vitis_HLS" / "2022.1" / "bin", "vitis_hls")
    monkeypatch.setenv("PATH", f"{new.parent}{os.pathsep}{tmp_path / 'bin'}")
    assert tools.tool_problems(tools.find_tools()) == []
    hls = make_project_hls(tmp_path / "hls")
    result = build_overlay(hls, None, tmp_path / "ov", dry_run=True)
    assert result.missing_tools == () and "tools found, not run" in result.ran[0]
    with pytest.raises(ToolNotFoundError):
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
        build_overlay(hls, None, tmp_path / "ov")


# -- boards ----------------------------------------------------------------------------------
def test_board_follows_the_hls_report(tmp_path, no_tools, capsys):
    hls = make_project_hls(tmp_path / "hls", board="zcu104")
    rc, _, err = dry_build(hls, tmp_path / "ov", capsys, "--board", "pynq-z2")
    assert rc == 2
    assert "--board pynq-z2 differs from zcu104, the board the hls stage checked" in err
    assert not (tmp_path / "ov").exists()
    rc, _, _ = dry_build(hls, tmp_path / "ov", capsys)
    assert rc == 0 and AccelMeta.load(tmp_path / "ov" / "accel.json").board == "zcu104"
    assert "-part xczu7ev-ffvc1156-2-e" in (tmp_path / "ov" / "block_design.tcl").read_text()
    rc, _, _ = dry_build(hls, tmp_path / "ov2", capsys, "--board", "ZCU104")
    assert rc == 0


def test_board_repo_written_braced_before_the_board_part(tmp_path, no_tools, capsys):
    hls = make_project_hls(tmp_path / "hls")
    out = tmp_path / "ov"
    rc, _, _ = dry_build(hls, out, capsys, "--board-repo", "/opt/Xilinx boards/$HOME")
    assert rc == 0
    bd = (out / "block_design.tcl").read_text()
    line = "set_param board.repoPaths [concat [get_param board.repoPaths] [list {/opt/Xilinx boards/$HOME}]]"
    assert line in bd and bd.index(line) < bd.index("get_board_parts") < bd.index("set_property board_part")
    rc, _, err = dry_build(hls, out, capsys, "--board-repo", "/opt/{x")
    assert rc == 2 and "--board-repo = '/opt/{x'" in err


# -- outputs ---------------------------------------------------------------------------------
def test_out_onto_a_file_or_read_only_folder(tmp_path, no_tools, capsys):
    hls = make_project_hls(tmp_path / "hls")
    (tmp_path / "afile").write_text("keep")
    rc, _, err = dry_build(hls, tmp_path / "afile", capsys)
    assert rc == 2 and f"overlay folder {tmp_path / 'afile'} is an existing file, not a folder" in err
    assert (tmp_path / "afile").read_text() == "keep"
    if os.geteuid() == 0:  # root writes through permission bits: use a kernel file system
        readonly = Path("/sys/kernel")
        if not readonly.is_dir():
            pytest.skip("no read-only folder to test with")
    else:
        readonly = tmp_path / "ro"
        readonly.mkdir()
        readonly.chmod(0o555)
    rc, _, err = dry_build(hls, readonly, capsys)
    assert rc == 2 and f"overlay folder {readonly} is not writable" in err
    rc, _, err = dry_build(hls, readonly / "sub", capsys)
    assert rc == 2 and f"overlay folder {readonly / 'sub'} cannot be created" in err


def test_failed_run_leaves_earlier_artifacts(tmp_path, no_tools, monkeypatch):
    hls = make_project_hls(tmp_path / "hls")
    out = tmp_path / "ov"
    build_overlay(hls, None, out, dry_run=True)
    before = (out / "block_design.tcl").read_bytes()
    import flipq.overlays.flow as flow

    real = flow.render

    def render(name, values):
        if name == "block_design.tcl":
            raise RuntimeError("disk full")
        return real(name, values)

    monkeypatch.setattr(flow, "render", render)
    with pytest.raises(RuntimeError, match="disk full"):
        build_overlay(hls, None, out, dry_run=True, fclk_mhz=125)
    assert (out / "block_design.tcl").read_bytes() == before
    assert "-period 8 " in (out / "hls_synth.tcl").read_text()  # written before the failure, whole
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_replacing_keeps_the_old_file_on_failure(tmp_path):
    path = write_atomic(tmp_path / "a.json", "old")
    with pytest.raises(KeyError):
        with replacing(path) as tmp:
            tmp.write_text("half")
            raise KeyError("boom")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


# -- overlay check and the compiled wrapper --------------------------------------------------
@pytest.fixture
def built(tmp_path, no_tools):
    hls = make_hls_dir(tmp_path / "hls")
    out = tmp_path / "ov"
    build_overlay(hls, "pynq-z2", out, dry_run=True)
    meta = AccelMeta.load(out / "accel.json")
    (out / "flipq.hwh").write_text(generate_hwh(meta, load_board("pynq-z2")))
    return out


def test_truncated_or_foreign_hwh(built, capsys):
    text = (built / "flipq.hwh").read_text()
    (built / "flipq.hwh").write_text(text[: len(text) // 2])
    rc, _, err = run_cli(["overlay", "check", str(built)], capsys)
    assert rc == 2 and f"flipq: error: {built / 'flipq.hwh'}: not a readable .hwh" in err
    assert len(err.strip().splitlines()) == 1
    (built / "flipq.hwh").write_text("<html><body>not a handoff</body></html>")
    with pytest.raises(HwhError, match="not a Vivado hardware handoff"):
        check_overlay(built)
    rc, _, err = run_cli(["overlay", "check", str(built), "--hwh", str(built / "missing.hwh")], capsys)
    assert rc == 2 and "hardware handoff not found" in err


def test_check_mismatch_exits_1(built, capsys):
    text = (built / "flipq.hwh").read_text()
    (built / "flipq.hwh").write_text(text.replace('"c_include_sg" VALUE="0"', '"c_include_sg" VALUE="1"'))
    rc, _, err = run_cli(["overlay", "check", str(built)], capsys)
    assert rc == 1 and "dma.c_include_sg" in err


BOARD_SIDE_CHECK = textwrap.dedent("""
    import sys
    class Block:  # what the PYNQ image does not have: the build stack, and tomllib (Python 3.10)
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in {"hls4ml", "qonnx", "onnx", "torch", "brevitas", "tomllib"} or \\
                    name.startswith(("flipq.hls", "flipq.quant")):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    from flipq.overlays.check import check_overlay
    summary = check_overlay(sys.argv[1])
    print(summary["part"])
""")


def test_check_runs_without_the_build_stack_or_tomllib(built):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", BOARD_SIDE_CHECK, str(built)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "not checked (tomllib is missing: board files need Python 3.11)" in r.stdout


def test_corrupt_wrapper_library_named(tmp_path):
    from flipq.overlays.wrapper import WrapperLibraryError, pl_from_wrapper, simulate_wrapper

    meta = accel_meta_for(tiny_intmodel(), load_board("pynq-z2"))
    lib = tmp_path / "sim" / "libflipq_top.so"
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF truncated")
    for call in (lambda: pl_from_wrapper(lib, meta), lambda: simulate_wrapper(lib, meta, [[0] * 12], 1)):
        with pytest.raises(WrapperLibraryError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"{lib}: not a loadable compiled flipq_top wrapper")
        assert msg.endswith("rebuild it with `flipq overlay build --simulate`") and "\n" not in msg
        assert msg.count(str(lib.name)) == 1  # the reason does not repeat the path
    assert isinstance(e.value, ValueError)


def test_names_that_would_break_the_tcl_refused(tmp_path, no_tools):
    hls = make_hls_dir(tmp_path / "hls")
    for options, message in (({"design": "my design"}, "design = 'my design'"),
                             ({"ip_name": "a/b"}, "ip_name = 'a/b'"),
                             ({"ip_vlnv": "x:{y}:z:1.0"}, "ip_vlnv = '{y}'"),
                             ({"ip_vlnv": "x:y:1.0"}, "expected vendor:library:name:version")):
        with pytest.raises(OverlayInputError, match=re.escape(message)):
            build_overlay(hls, None, tmp_path / "ov", dry_run=True, **options)
