"""`flipq overlay build --kernel rtl`: the RTL twin copied into the overlay folder, packaged by
package_rtl_ip.tcl as the IP the block design instantiates, no HLS step. Dry runs on a small fake
design folder made here (rtl.json, a couple of .v and .hex files), so nothing depends on the RTL
generator; the packaging script also runs under tclsh with Vivado's commands stubbed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flipq.hls.verilator import RTL_DIR as LIBRARY
from flipq.host.accelmeta import AccelMeta
from flipq.host.intmodel import IntModel
from flipq.overlays.errors import OverlayInputError
from flipq.overlays.flow import RTL_IP_VLNV, build_overlay

sys.path.insert(0, str(Path(__file__).parent))
from test_overlays import make_hls_dir  # noqa: E402

GENERATED = ["flipq_L0_dense.v", "flipq_accel.v"]
ROMS = ["L0_w.hex", "L0_bias.hex"]
# the generated top's ports (docs/rtl.md), so the wrapper elaborates around it in Vivado
FAKE_TOP = """module flipq_accel (
    input wire clk, input wire rst, input wire [3:0] planes,
    input wire [31:0] s_data, input wire s_valid, output wire s_ready,
    output wire [31:0] m_data, output wire m_valid, input wire m_ready);
    assign m_data = s_data + planes;
    assign m_valid = s_valid;
    assign s_ready = m_ready;
endmodule
"""


@pytest.fixture
def no_tools(monkeypatch):
    monkeypatch.setattr("flipq.overlays.tools.find_tools",
                        lambda: {"hls": None, "vivado": None, "vivado_hls": None})


def make_design(build: Path, files=None, **fields) -> Path:
    """``build``/hls with the tiny model and a fake RTL design in hls/rtl; returns the hls folder."""
    hls = make_hls_dir(build / "hls")
    rtl = hls / "rtl"
    rtl.mkdir()
    (rtl / "flipq_L0_dense.v").write_text("module flipq_L0_dense; endmodule\n")
    (rtl / "flipq_accel.v").write_text(FAKE_TOP)
    for name in ROMS:
        (rtl / name).write_text("0f\n1e\n")
    (rtl / "unlisted.v").write_text("// not in rtl.json: stays behind\n")
    (rtl / "verilator").mkdir()  # the simulation build: stays behind
    (rtl / "verilator" / "libflipq_rtl.so").write_bytes(b"\0")
    meta = {"format": 1, "top": "flipq_accel", "files": GENERATED if files is None else files, "word_bits": 32,
            "model_hash": IntModel.load(hls).digest()}
    meta.update(fields)
    (rtl / "rtl.json").write_text(json.dumps(meta))
    return hls


@pytest.fixture
def rtl_overlay(tmp_path, no_tools):
    hls = make_design(tmp_path / "build")
    out = tmp_path / "overlay"
    result = build_overlay(hls, "pynq-z2", out, dry_run=True, kernel="rtl")
    return out, result


def library_names() -> list[str]:
    return sorted(p.name for p in LIBRARY.glob("*.v"))


def test_dry_run_copies_the_design_and_names_every_file(rtl_overlay):
    out, result = rtl_overlay
    assert result.returncode == 0 and not result.built
    assert result.missing_tools == ("vivado",)  # no HLS synthesis: Vitis HLS is not needed
    ran = result.ran[0]
    assert "vitis_hls" not in ran and "hls_synth.tcl" not in ran
    lines = [ln.strip() for ln in ran.splitlines()]
    assert lines[-3:] == [f"vivado -mode batch -source {s}" for s in
                          ("package_rtl_ip.tcl", "block_design.tcl", "bitstream.tcl")]
    assert not (out / "hls_synth.tcl").exists() and not (out / "src").exists()
    copied = sorted(p.name for p in (out / "rtl").iterdir())
    assert copied == sorted(library_names() + GENERATED + ROMS)
    assert "flipq_axi_top.v" in copied  # the board wrapper travels with the design
    pkg = (out / "package_rtl_ip.tcl").read_text()
    for name in copied:
        assert f"[file join $here rtl {name}]" in pkg, name
    assert pkg.index("flipq_axi_top.v") < pkg.index("flipq_accel.v")  # library first, as rtl_sources()
    assert "unlisted" not in pkg and "verilator" not in pkg


def test_package_and_block_design_agree_on_the_ip(rtl_overlay):
    out, _ = rtl_overlay
    meta = AccelMeta.load(out / "accel.json")
    pkg = (out / "package_rtl_ip.tcl").read_text()
    bd = (out / "block_design.tcl").read_text()
    assert meta.ip.vlnv == RTL_IP_VLNV
    vendor, library = re.search(r"ipx::package_project .*-vendor (\S+) -library (\S+)", pkg).groups()
    name = re.search(r"set_property name (\S+) \$core", pkg).group(1)
    version = re.search(r"set_property version (\S+) \$core", pkg).group(1)
    assert f"{vendor}:{library}:{name}:{version}" == meta.ip.vlnv
    assert f"create_bd_cell -type ip -vlnv {meta.ip.vlnv} {meta.ip.name}\n" in bd
    # the block design looks for IP where the packaging script puts it
    repo = re.search(r"set repo \[file join \$here (\S+)\]", pkg).group(1)
    assert f"set_property ip_repo_paths [list [file join $here {repo}]]" in bd
    # the cell's stream shape is the model's (accel.json's packing)
    in_words = meta.input.packing.words_per_sample(meta.input.n_elems)
    out_words = meta.output.packing.words_per_sample(meta.output.n_elems)
    config = f"CONFIG.WORD {{32}} CONFIG.IN_WORDS {{{in_words}}} CONFIG.OUT_WORDS {{{out_words}}}"
    assert f"set_property -dict [list {config}] [get_bd_cells {meta.ip.name}]" in bd
    assert f"WORD 32 IN_WORDS {in_words} OUT_WORDS {out_words}" in pkg
    # the register map the host driver writes
    assert "planes 0x10 n_samples 0x18" in pkg
    assert meta.ip.planes_offset == 0x10 and meta.ip.control["n_samples"] == 0x18


def test_generated_tcl_has_no_absolute_paths(rtl_overlay, tmp_path):
    out, _ = rtl_overlay
    meta = AccelMeta.load(out / "accel.json")
    # a /... token may only be the IP catalog's taxonomy or a block-design path, never a file
    allowed = ("UserIP", "processing_system7_0/", f"{meta.dma.name}/", f"{meta.ip.name}/")
    for script in ("package_rtl_ip.tcl", "block_design.tcl", "bitstream.tcl"):
        text = (out / script).read_text()
        assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text, script
        for token in re.findall(r"(?<![\w$\]}])/[^\s{}\[\]\"]+", text):
            assert token[1:].startswith(allowed), (script, token)


def test_hls_kernel_stays_the_default(tmp_path, no_tools):
    hls = make_design(tmp_path / "build")
    result = build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True)
    assert result.missing_tools == ("vitis_hls", "vivado")
    assert (tmp_path / "ov" / "hls_synth.tcl").is_file() and not (tmp_path / "ov" / "rtl").exists()
    bd = (tmp_path / "ov" / "block_design.tcl").read_text()
    assert "create_bd_cell -type ip -vlnv flipq.org:hls:flipq_top:1.0 flipq_accel_0\nconnect_bd_intf_net" in bd
    assert "CONFIG.IN_WORDS" not in bd and "flipq_hls" in bd


def test_missing_rtl_json_names_the_command(tmp_path, no_tools):
    build = tmp_path / "build"
    hls = make_hls_dir(build / "hls")
    with pytest.raises(FileNotFoundError, match=re.escape(f"run `flipq hls --out {build} --rtl` first")):
        build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True, kernel="rtl")


@pytest.mark.parametrize("name", ["../x.v", "/etc/passwd", "sub/x.v", "a\nb.v", "a[b].v", "$x.v", "..v", "",
                                  "notes.txt", 7])
def test_hostile_file_names_in_rtl_json_are_refused(tmp_path, no_tools, name):
    (tmp_path / "x.v").write_text("module x; endmodule\n")  # what ../x.v would reach
    hls = make_design(tmp_path / "build", files=["flipq_accel.v", name])
    with pytest.raises(OverlayInputError) as err:
        build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True, kernel="rtl")
    assert repr(name) in str(err.value) and "rtl.json" in str(err.value)
    assert not (tmp_path / "ov" / "rtl").exists() and not (tmp_path / "ov" / "x.v").exists()


def test_hostile_rom_name_on_disk_is_refused(tmp_path, no_tools):
    hls = make_design(tmp_path / "build")
    (hls / "rtl" / "L1[0].hex").write_text("00\n")
    with pytest.raises(OverlayInputError, match=re.escape("'L1[0].hex'")):
        build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True, kernel="rtl")


@pytest.mark.parametrize("fields, field", [
    ({"model_hash": "0" * 16}, "another integer model"),
    ({"word_bits": 64}, "'word_bits' = 64"),
    ({"top": "my_top"}, "'top' = 'my_top'"),
    ({"files": []}, "'files' = []"),
])
def test_stale_or_foreign_designs_are_refused(tmp_path, no_tools, fields, field):
    hls = make_design(tmp_path / "build", **fields)
    with pytest.raises(OverlayInputError, match=re.escape(field)):
        build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True, kernel="rtl")


def test_listed_file_missing_or_shadowing_the_library_is_refused(tmp_path, no_tools):
    hls = make_design(tmp_path / "build", files=["flipq_accel.v", "flipq_L9_gone.v"])
    with pytest.raises(OverlayInputError, match="'flipq_L9_gone.v' is not a file"):
        build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True, kernel="rtl")
    hls = make_design(tmp_path / "build2", files=["flipq_accel.v", "flipq_fifo.v"])
    (hls / "rtl" / "flipq_fifo.v").write_text("// would replace the library's fifo\n")
    with pytest.raises(OverlayInputError, match="RTL library module"):
        build_overlay(hls, "pynq-z2", tmp_path / "ov2", dry_run=True, kernel="rtl")


def test_rebuild_drops_files_of_an_earlier_design(tmp_path, no_tools):
    hls = make_design(tmp_path / "build")
    (hls / "rtl" / "L5_w.hex").write_text("00\n")
    build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True, kernel="rtl")
    assert (tmp_path / "ov" / "rtl" / "L5_w.hex").is_file()
    (hls / "rtl" / "L5_w.hex").unlink()
    build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True, kernel="rtl")
    assert not (tmp_path / "ov" / "rtl" / "L5_w.hex").exists()


def test_simulate_is_refused_for_the_rtl_kernel(tmp_path, no_tools):
    hls = make_design(tmp_path / "build")
    with pytest.raises(OverlayInputError, match="--backend rtl"):
        build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True, kernel="rtl", simulate=True)


def test_cli_kernel_rtl(tmp_path, no_tools, capsys):
    from flipq.cli import main

    make_design(tmp_path / "build")
    assert main(["overlay", "build", str(tmp_path / "build"), "--kernel", "rtl", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "vivado -mode batch -source package_rtl_ip.tcl" in printed and "vitis_hls" not in printed
    assert (tmp_path / "build" / "overlay" / "package_rtl_ip.tcl").is_file()
    with pytest.raises(SystemExit):
        main(["overlay", "build", str(tmp_path / "build"), "--kernel", "verilog", "--dry-run"])


# -- package_rtl_ip.tcl under tclsh, Vivado's commands stubbed ------------------------------------
# Each stub prints what it was called with; ipx::get_ports and the parameter queries answer from
# the wrapper's real ports and parameters, so a port map naming a port the wrapper lacks fails.
TCL_STUBS = """
namespace eval ipx {}
foreach cmd {create_project add_files set_property update_compile_order close_project
             ipx::package_project ipx::remove_memory_map ipx::remove_bus_interface
             ipx::associate_bus_interfaces ipx::create_xgui_files ipx::update_checksums
             ipx::check_integrity ipx::save_core} {
    proc $cmd args [format {puts "RAN %s $args"} $cmd]
}
proc get_files {files} { return $files }
proc current_fileset {} { return sources_1 }
proc get_property {prop obj} { return $obj }
proc ipx::current_core {} { return core }
proc ipx::get_memory_maps {args} { return {inferred_map} }
proc ipx::get_bus_interfaces {args} {
    if {[lindex $args 0] eq "-of_objects"} { return {inferred_a inferred_b} }
    return [lindex $args 0]
}
foreach cmd {ipx::add_bus_interface ipx::add_port_map ipx::add_bus_parameter ipx::add_memory_map
             ipx::add_address_block ipx::add_register} {
    proc $cmd {name parent} [format {return "%s:$name"} $cmd]
}
proc ipx::get_ports {name args} {
    if {$name in $::env(FLIPQ_PORTS)} { return $name }
    return {}
}
proc ipx::get_user_parameters {name args} {
    if {$name in $::env(FLIPQ_PARAMS)} { return $name }
    return {}
}
proc ipx::get_hdl_parameters {name args} { ipx::get_user_parameters $name }
source [lindex $argv 0]
"""


def wrapper_ports_and_params() -> tuple[list[str], list[str]]:
    text = (LIBRARY / "flipq_axi_top.v").read_text()
    ports = re.findall(r"^\s*(?:input|output)\s+wire\s+(?:\[[^\]]+\]\s*)?(\w+)", text, re.M)
    params = re.findall(r"^\s*parameter\s+integer\s+(\w+)", text, re.M)
    return ports, params


def run_package_tcl(out: Path, tmp_path: Path):
    import os

    tclsh = shutil.which("tclsh")
    if tclsh is None:
        pytest.skip("no tclsh")
    ports, params = wrapper_ports_and_params()
    stubs = tmp_path / "vivado_stubs.tcl"
    stubs.write_text(TCL_STUBS)
    env = dict(os.environ, FLIPQ_PORTS=" ".join(ports), FLIPQ_PARAMS=" ".join(params))
    proc = subprocess.run([tclsh, str(stubs), str(out / "package_rtl_ip.tcl")], capture_output=True, text=True,
                          env=env, timeout=60)
    ran = [line[4:].rstrip() for line in proc.stdout.splitlines() if line.startswith("RAN ")]
    return proc, ran


def test_package_tcl_runs_and_maps_every_wrapper_port(rtl_overlay, tmp_path):
    out, _ = rtl_overlay
    (out / "flipq_rtl_ip").mkdir()
    (out / "flipq_rtl_ip" / "component.xml").write_text("stale")
    proc, ran = run_package_tcl(out, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (out / "flipq_rtl_ip").exists()  # an earlier package is not mixed with the new one
    here = out.resolve()
    added = " ".join(r for r in ran if r.startswith("add_files"))
    for f in (out / "rtl").iterdir():
        assert str(here / "rtl" / f.name) in added, f.name
    assert any(r.startswith("set_property file_type {Memory File}") and "L0_w.hex" in r for r in ran)
    assert "set_property top flipq_axi_top sources_1" in ran
    # every port of the wrapper is in exactly one port map, each interface as block_design.tcl names it
    ports, _ = wrapper_ports_and_params()
    mapped = [r.split()[2] for r in ran if r.startswith("set_property physical_name ")]
    assert sorted(mapped) == sorted(ports)
    kinds = {r.split()[3].rsplit(":", 1)[1]: r.split()[2] for r in ran if r.startswith("set_property bus_type_vlnv")}
    assert kinds == {"s_axi_control": "xilinx.com:interface:aximm:1.0", "in_r": "xilinx.com:interface:axis:1.0",
                     "out_r": "xilinx.com:interface:axis:1.0", "ap_clk": "xilinx.com:signal:clock:1.0",
                     "ap_rst_n": "xilinx.com:signal:reset:1.0", "interrupt": "xilinx.com:signal:interrupt:1.0"}
    modes = {r.split()[3].rsplit(":", 1)[1]: r.split()[2] for r in ran if r.startswith("set_property interface_mode")}
    assert modes["in_r"] == "slave" and modes["out_r"] == "master" and modes["s_axi_control"] == "slave"
    assert "set_property value ACTIVE_LOW ipx::add_bus_parameter:POLARITY" in ran
    for busif in ("s_axi_control", "in_r", "out_r"):
        assert f"ipx::associate_bus_interfaces -busif {busif} -clock ap_clk core" in ran
    assert "ipx::associate_bus_interfaces -clock ap_clk -reset ap_rst_n core" in ran
    offsets = [r.split()[2] for r in ran if r.startswith("set_property address_offset")]
    assert offsets == ["0x00", "0x04", "0x08", "0x0C", "0x10", "0x18"]
    assert ran[-1] == "close_project" and "flipq: packaged flipq.org:rtl:flipq_axi_top:1.0" in proc.stdout


def test_package_tcl_refuses_a_missing_file(rtl_overlay, tmp_path):
    out, _ = rtl_overlay
    (out / "rtl" / "flipq_accel.v").unlink()
    proc, ran = run_package_tcl(out, tmp_path)
    assert proc.returncode == 1 and ran == []
    assert "flipq_accel.v is missing" in proc.stderr and "--kernel rtl" in proc.stderr


@pytest.mark.vivado
def test_package_tcl_packages_with_vivado(rtl_overlay):
    """With Vivado: the packaging script itself (the fake design's modules are empty)."""
    vivado = shutil.which("vivado")
    if vivado is None:
        pytest.skip("vivado not on PATH")
    out, _ = rtl_overlay
    proc = subprocess.run([vivado, "-mode", "batch", "-source", "package_rtl_ip.tcl"], cwd=out,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (out / "flipq_rtl_ip" / "component.xml").is_file()
