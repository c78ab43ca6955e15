"""The overlay flow: generated Tcl, dry runs, resource checks, .hwh generation and checks."""

import json
from pathlib import Path

import numpy as np
import pytest

from flipq.boards import load_board
from flipq.host.accelmeta import AccelMeta
from flipq.overlays.metadata import accel_meta_for
from flipq.host.bitplan import BitPlan
from flipq.host.intmodel import IntLayer, IntModel, QuantSpec
from flipq.overlays.check import check_overlay
from flipq.overlays.errors import (OverlayCheckError, OverlayError, OverlayInputError, ResourceError,
                                   ToolNotFoundError)
from flipq.overlays.flow import build_overlay
from flipq.overlays.render import render
from flipq.overlays.hwh import generate_hwh

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "pynq-z2-base.hwh"
if not FIXTURE.is_file():
    FIXTURE = Path("/work/shared/fixtures/pynq-z2-base.hwh")


def tiny_intmodel(seed: int = 0) -> IntModel:
    rng = np.random.default_rng(seed)
    layers = [
        IntLayer("dense", "fc1", {"out_shape": [10], "w_exp": -3, "weight_bits": 4, "act_bits": 4},
                 rng.integers(-8, 8, (12, 10))),
        IntLayer("requant", "q1", {"out_shape": [10], "relu": True,
                                   "quant": QuantSpec(4, False, False, -2).to_dict()}),
        IntLayer("dense", "fc2", {"out_shape": [5], "w_exp": -3, "weight_bits": 4, "act_bits": 4},
                 rng.integers(-8, 8, (10, 5))),
    ]
    return IntModel((12,), QuantSpec(4, True, False, -2), layers, output_exp=-5,
                    plan=BitPlan.uniform(["fc1", "fc2"], 4, 4), input_layout="NC")


def make_hls_dir(path: Path, totals=None) -> Path:
    tiny_intmodel().save(path)
    (path / "firmware").mkdir()
    (path / "firmware" / "flipq_top.cpp").write_text("// kernel\n")
    totals = totals or {"lut": 4000, "ff": 5000, "bram36": 6, "dsp": 4}
    (path / "hls_report.json").write_text(json.dumps({"layers": {}, "totals": totals}))
    return path


@pytest.fixture
def no_tools(monkeypatch):
    monkeypatch.setattr("flipq.overlays.tools.find_tools",
                        lambda: {"hls": None, "vivado": None, "vivado_hls": None})


@pytest.fixture
def dry(tmp_path, no_tools):
    hls = make_hls_dir(tmp_path / "hls")
    result = build_overlay(hls, "pynq-z2", tmp_path / "overlay", dry_run=True)
    return tmp_path / "overlay", result


def test_dry_run_writes_everything_and_says_what_is_missing(dry):
    out, result = dry
    assert result.returncode == 0 and not result.built
    assert result.missing_tools == ("vitis_hls", "vivado")
    for name in ("hls_synth.tcl", "block_design.tcl", "bitstream.tcl", "accel.json",
                 "intmodel.json", "intmodel.npz"):
        assert (out / name).is_file(), name
    assert not (out / "flipq.bit").exists()
    assert "vitis_hls: not on PATH (flipq needs vitis_hls 2020.2 or newer); vivado: not on PATH" in result.ran[0]
    assert "copy the folder" in result.ran[0] and "then cd into it and run" in result.ran[0]
    assert "vivado -mode batch -source block_design.tcl" in result.ran[0]
    assert result.usage["lut"] == (7500.0, 53200)


def test_block_design_golden_settings(dry):
    out, _ = dry
    meta = AccelMeta.load(out / "accel.json")
    bd = (out / "block_design.tcl").read_text()
    assert "create_project -force flipq " in bd and "-part xc7z020clg400-1" in bd
    assert "set_property board_part {tul.com.tw:pynq-z2:part0:1.0} [current_project]" in bd
    # without --board-repo: a clear Tcl error when the board files are missing, before any use
    check = bd.index("get_board_parts -quiet {tul.com.tw:pynq-z2:part0:1.0}")
    assert check < bd.index("set_property board_part") and "set_param board.repoPaths" not in bd
    assert 'error "flipq: board part tul.com.tw:pynq-z2:part0:1.0 is not installed' in bd
    assert "xilinx.com:ip:processing_system7:5.5 processing_system7_0" in bd
    assert 'apply_board_preset "1"' in bd
    assert "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {100}" in bd
    assert "CONFIG.PCW_USE_S_AXI_HP0 {1}" in bd
    assert "xilinx.com:ip:axi_dma:7.1 axi_dma_0" in bd
    assert "CONFIG.c_include_sg {0}" in bd
    assert f"CONFIG.c_sg_length_width {{{meta.dma.length_width}}}" in bd
    assert meta.dma.max_transfer_bytes >= meta.max_batch * max(meta.in_bytes_per_sample,
                                                               meta.out_bytes_per_sample)
    assert "CONFIG.c_m_axis_mm2s_tdata_width {32}" in bd
    assert "create_bd_cell -type ip -vlnv flipq.org:hls:flipq_top:1.0 flipq_accel_0" in bd
    assert "[get_bd_intf_pins axi_dma_0/M_AXIS_MM2S] [get_bd_intf_pins flipq_accel_0/in_r]" in bd
    assert "[get_bd_intf_pins flipq_accel_0/out_r] [get_bd_intf_pins axi_dma_0/S_AXIS_S2MM]" in bd
    assert "Slave /flipq_accel_0/s_axi_control" in bd
    assert "Master /axi_dma_0/M_AXI_S2MM Slave /processing_system7_0/S_AXI_HP0" in bd
    # clocks and resets are wired once, by the AXI automation naming fclk0 for every side; no
    # clkrst rule or connect_bd_net touches ap_clk afterwards (Vivado aborts on a second driver)
    assert "set fclk /processing_system7_0/FCLK_CLK0" in bd
    assert bd.count("Clk_master $fclk Clk_slave $fclk Clk_xbar $fclk") == 4
    assert "bd_rule:clkrst" not in bd and "connect_bd_net" not in bd
    connects = [line for line in bd.splitlines() if "ap_clk" in line and not line.lstrip().startswith("#")]
    assert connects == ["foreach pin {flipq_accel_0/ap_clk flipq_accel_0/ap_rst_n axi_dma_0/s_axi_lite_aclk "
                        "axi_dma_0/m_axi_mm2s_aclk axi_dma_0/m_axi_s2mm_aclk axi_dma_0/axi_resetn} {"]
    hls = (out / "hls_synth.tcl").read_text()
    assert "set_part {xc7z020clg400-1}" in hls and "create_clock -period 10 " in hls
    assert "set_top flipq_top" in hls and "-flow_target vivado" in hls
    assert "-vendor flipq.org -library hls -ipname flipq_top -version 1.0" in hls
    assert "s_axilite port=planes bundle=control      (offset 0x10)" in hls
    assert "add_files [file join $here src flipq_top.cpp] -cflags {-std=c++14}" in hls
    assert (out / "src" / "flipq_top.cpp").read_text() == "// kernel\n"
    bit = (out / "bitstream.tcl").read_text()
    assert "launch_runs impl_1 -to_step write_bitstream -jobs 2" in bit
    assert "flipq.bit" in bit and "flipq.hwh" in bit
    for text in (bd, hls, bit):
        assert not __import__("re").search(r"@[a-z_]+@", text)


TCL_STUBS = """
foreach cmd {open_project set_top add_files open_solution set_part create_clock config_interface
             csynth_design export_design} {
    proc $cmd args [list puts "RAN [list $cmd] \$args"]
}
source [lindex $argv 0]
"""


def run_hls_tcl(script: Path, tmp_path: Path, release: str | None, patched: str | None = None):
    """hls_synth.tcl dry-run under tclsh: Vitis HLS's commands stubbed to print, XILINX_HLS set
    to a fake install ``<tmp>/Xilinx/Vitis_HLS/<release>`` (patched: 'automg' puts the file the
    Y2K22 patch installs there, 'root' its unpacked folder in the install root)."""
    import os
    import shutil
    import subprocess

    tclsh = shutil.which("tclsh")
    if tclsh is None:
        pytest.skip("no tclsh")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XILINX")}
    if release is not None:
        root = tmp_path / "Xilinx"
        install = root / "Vitis_HLS" / release
        (install / "common" / "scripts").mkdir(parents=True, exist_ok=True)
        if patched == "automg":
            (install / "common" / "scripts" / "automg_patch_20220104.tcl").write_text("# patch\n")
        elif patched == "root":
            (root / "y2k22_patch").mkdir(exist_ok=True)
        env["XILINX_HLS"] = str(install)
    stubs = tmp_path / "stubs.tcl"
    stubs.write_text(TCL_STUBS)
    return subprocess.run([tclsh, str(stubs), str(script)], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("release, patched, refused", [
    ("2020.2", None, True), ("2021.1", None, True), ("2021.2", None, True),
    ("2021.1", "automg", False), ("2020.2", "root", False),
    ("2022.1", None, False), ("2023.2", None, False), (None, None, False),
])
def test_hls_tcl_refuses_unpatched_y2k22_releases(dry, tmp_path, release, patched, refused):
    """Vitis HLS 2020.2-2021.2 fail export_design since 2022 without AMD's Y2K22 patch (AR 76960):
    the generated script refuses them before any synthesis, naming the AR and the fix, unless
    the patch is installed; newer releases (and an unknown one, with a warning) go through."""
    out, _ = dry
    proc = run_hls_tcl(out / "hls_synth.tcl", tmp_path, release, patched)
    ran = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("RAN ")]
    if refused:
        assert proc.returncode != 0 and ran == [], proc.stdout
        message = " ".join(proc.stderr.split())
        assert f"Vitis HLS {release}" in message and "AMD Answer Record 76960" in message
        assert "y2k22_patch/patch.py" in message and "2022.1 or newer" in message
    else:
        assert proc.returncode == 0, proc.stderr
        assert ran[0] == "open_project" and ran[-2:] == ["csynth_design", "export_design"]
        assert ("WARNING" in proc.stdout and "76960" in proc.stdout) == (release is None)


def test_without_tools_and_not_dry_run_raises(tmp_path, no_tools):
    hls = make_hls_dir(tmp_path / "hls")
    with pytest.raises(ToolNotFoundError, match="vitis_hls: not on PATH"):
        build_overlay(hls, "pynq-z2", tmp_path / "overlay")
    assert (tmp_path / "overlay" / "block_design.tcl").is_file()  # still prepared


def test_refuses_design_that_cannot_fit(tmp_path, no_tools):
    hls = make_hls_dir(tmp_path / "hls", {"lut": 60000, "ff": 1000, "bram36": 150, "dsp": 0})
    with pytest.raises(ResourceError) as e:
        build_overlay(hls, "pynq-z2", tmp_path / "overlay", dry_run=True)
    msg = str(e.value)
    assert "lut: needs 63500, pynq-z2 has 53200" in msg
    assert "bram36: needs 152, pynq-z2 has 140" in msg
    assert not (tmp_path / "overlay" / "accel.json").exists()
    # ... and the same design fits a bigger board
    build_overlay(hls, "zcu104", tmp_path / "zcu", dry_run=True)
    assert "xczu7ev-ffvc1156-2-e" in (tmp_path / "zcu" / "block_design.tcl").read_text()
    assert "zynq_ultra_ps_e" in (tmp_path / "zcu" / "block_design.tcl").read_text()


def test_bad_hls_report_named(tmp_path, no_tools):
    hls = make_hls_dir(tmp_path / "hls")
    (hls / "hls_report.json").write_text(json.dumps({"totals": {"lut": 1, "ff": 1, "bram36": -1, "dsp": 0}}))
    with pytest.raises(OverlayInputError, match=r"hls_report.json: field 'totals.bram36' = -1"):
        build_overlay(hls, "pynq-z2", tmp_path / "o", dry_run=True)
    (hls / "hls_report.json").unlink()
    with pytest.raises(FileNotFoundError, match="hls_report.json not found"):
        build_overlay(hls, "pynq-z2", tmp_path / "o", dry_run=True)


def test_render_refuses_missing_placeholder():
    with pytest.raises(OverlayError, match="no value for placeholder"):
        render("ps_zynq.tcl", {"ps": "x"})


def test_generated_hwh_checks_clean(dry):
    out, _ = dry
    meta = AccelMeta.load(out / "accel.json")
    (out / "flipq.hwh").write_text(generate_hwh(meta, load_board("pynq-z2")))
    summary = check_overlay(out)
    assert summary["fclk_mhz"] == pytest.approx(100.0)
    assert summary["length_width"] == meta.dma.length_width


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace('"c_include_sg" VALUE="0"', '"c_include_sg" VALUE="1"'), "dma.c_include_sg"),
    (lambda t: t.replace('"c_sg_length_width" VALUE="14"', '"c_sg_length_width" VALUE="10"'),
     "dma.length_width"),
    (lambda t: t.replace('PCW_FCLK0_PERIPHERAL_DIVISOR1" VALUE="2"',
                         'PCW_FCLK0_PERIPHERAL_DIVISOR1" VALUE="4"')
               .replace('PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ" VALUE="100.000000"',
                        'PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ" VALUE="50.000000"'), "fclk_mhz"),
    (lambda t: t.replace("flipq_accel_0", "other_accel_0"), "ip.name"),
    (lambda t: t.replace('VALUE="0x10"', 'VALUE="0x20"'), "ip.planes_offset"),
    (lambda t: t.replace('DEVICE="7z020"', 'DEVICE="7z010"'), "board"),
])
def test_check_names_the_mismatched_field(dry, edit, field):
    out, _ = dry
    meta = AccelMeta.load(out / "accel.json")
    text = generate_hwh(meta, load_board("pynq-z2"))
    edited = edit(text)
    assert edited != text
    (out / "flipq.hwh").write_text(edited)
    with pytest.raises(OverlayCheckError) as e:
        check_overlay(out)
    assert any(p.startswith(field) for p in e.value.problems), e.value.problems


def test_cli_wiring(tmp_path, no_tools, capsys):
    from flipq.cli import main

    hls = make_hls_dir(tmp_path / "hls")
    assert main(["overlay", "build", str(hls), "--out", str(tmp_path / "ov"), "--dry-run"]) == 0
    assert main(["overlay", "build", str(hls), "--out", str(tmp_path / "ov2")]) == 1  # tools missing: a failure
    err = capsys.readouterr().err
    assert "vivado" in err and "Traceback" not in err
    meta = AccelMeta.load(tmp_path / "ov" / "accel.json")
    (tmp_path / "ov" / "flipq.hwh").write_text(generate_hwh(meta, load_board("pynq-z2")))
    assert main(["overlay", "check", str(tmp_path / "ov")]) == 0


# -- against the real Vivado .hwh of PYNQ's base overlay --------------------------------------
@pytest.fixture(scope="module")
def real():
    if not FIXTURE.is_file():
        pytest.skip(f"real PYNQ-Z2 .hwh fixture absent ({FIXTURE})")
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import RuntimeMetadataParser
    return RuntimeMetadataParser(Metadata(input=str(FIXTURE)))


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import RuntimeMetadataParser
    board = load_board("pynq-z2")
    meta = accel_meta_for(tiny_intmodel(), board)
    path = tmp_path_factory.mktemp("hwh") / "flipq.hwh"
    path.write_text(generate_hwh(meta, board))
    return RuntimeMetadataParser(Metadata(input=str(path))), meta


def test_hwh_parses_like_the_real_one(real, ours):
    parser, meta = ours
    real_dma = real.ip_dict["trace_analyzer_pi/axi_dma_0"]
    our_dma = parser.ip_dict[meta.dma.name]
    assert our_dma["type"] == real_dma["type"] == "xilinx.com:ip:axi_dma:7.1"
    # every parameter pynq's DMA driver reads exists in both, under the same name
    driver_reads = ["c_include_sg", "c_sg_length_width", "c_micro_dma", "c_include_mm2s",
                    "c_include_s2mm", "c_m_axi_mm2s_data_width", "c_m_axi_s2mm_data_width",
                    "c_include_mm2s_dre", "c_include_s2mm_dre", "c_mm2s_burst_size", "c_s2mm_burst_size"]
    for key in driver_reads:
        assert key in real_dma["parameters"], key
        assert key in our_dma["parameters"], key
    assert set(our_dma["parameters"]) <= set(real_dma["parameters"]) | {"C_ADDR_WIDTH"}
    for reg in ("MM2S_DMACR", "MM2S_DMASR", "MM2S_SA", "MM2S_LENGTH", "S2MM_DMACR", "S2MM_DMASR",
                "S2MM_DA", "S2MM_LENGTH"):
        assert our_dma["registers"][reg]["address_offset"] == real_dma["registers"][reg]["address_offset"]
    assert our_dma["mem_id"] == real_dma["mem_id"] == "S_AXI_LITE"
    # the PS and its clocks read the same way
    assert parser.family_ps == real.family_ps == "processing_system7"
    assert parser.clock_dict[0]["enable"] == real.clock_dict[0]["enable"] == 1
    assert (parser.clock_dict[0]["divisor0"], parser.clock_dict[0]["divisor1"]) == \
        (real.clock_dict[0]["divisor0"], real.clock_dict[0]["divisor1"]) == (5, 2)
    ps_real = real.ip_dict[real.ps_name]["parameters"]
    ps_ours = parser.ip_dict[parser.ps_name]["parameters"]
    for key in ("PCW_FPGA0_PERIPHERAL_FREQMHZ", "PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ",
                "PCW_FCLK0_PERIPHERAL_DIVISOR0", "PCW_FCLK0_PERIPHERAL_DIVISOR1",
                "PCW_FPGA_FCLK0_ENABLE", "PCW_IOPLL_CTRL_FBDIV", "PCW_IO_IO_PLL_FREQMHZ",
                "PCW_CRYSTAL_PERIPHERAL_FREQMHZ"):
        assert ps_ours[key] == ps_real[key], key
    # an HLS IP's control registers are listed the way Vivado lists them
    real_hls = real.ip_dict["trace_analyzer_pi/trace_cntrl_64_0"]["registers"]
    ours_hls = parser.ip_dict[meta.ip.name]["registers"]
    for reg in ("CTRL", "GIER", "IP_IER", "IP_ISR"):
        assert ours_hls[reg]["address_offset"] == real_hls[reg]["address_offset"]


def test_check_overlay_on_the_real_hwh_names_fields(tmp_path):
    if not FIXTURE.is_file():
        pytest.skip("real PYNQ-Z2 .hwh fixture absent")
    meta = accel_meta_for(tiny_intmodel(), load_board("pynq-z2"))
    meta.save(tmp_path / "accel.json")
    with pytest.raises(OverlayCheckError) as e:
        check_overlay(tmp_path, hwh=FIXTURE)
    fields = {p.split(":")[0] for p in e.value.problems}
    assert {"dma.name", "ip.name"} <= fields
    # the base overlay is a PYNQ-Z2 design with fclk0 at 100 MHz, as flipq's
    assert "fclk_mhz" not in fields and "board" not in fields


def test_accel_json_carries_the_modeled_hardware_plan(tmp_path):
    """accel.json's optional ``hardware``: per layer SIMD, PE and modeled cycles from
    hls_report.json, the interval and its fps at the overlay's fclk; read back as written, and
    an accel.json without it (older builds) still loads."""
    from dataclasses import replace

    from flipq.overlays.flow import hardware_summary

    report = {"layers": [{"name": "conv1", "weight_bits": 4, "simd": 8, "pe": 2, "cycles": 5000, "lut": 1},
                         {"name": "fc1", "weight_bits": 2, "simd": 16, "pe": 1, "cycles": 8000}]}
    hw = hardware_summary(report, 125.0)
    assert hw["interval_cycles"] == 8000 and hw["fps"] == 125e6 / 8000 and hw["label"] == "modeled"
    assert hw["layers"][0] == {"name": "conv1", "weight_bits": 4, "simd": 8, "pe": 2, "cycles": 5000}
    assert hardware_summary({"layers": [{"name": "x", "cycles": 3}]}, 100.0) is None  # no folding facts
    hls = make_hls_dir(tmp_path / "hls")
    build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True)
    meta = AccelMeta.load(tmp_path / "ov" / "accel.json")
    with_hw = replace(meta, hardware=hw)
    with_hw.save(tmp_path / "accel2.json")
    assert AccelMeta.load(tmp_path / "accel2.json").hardware == hw


def test_stream_bytes_per_sample_is_what_the_metadata_packs():
    """The search's DMA energy term reads the bytes a sample moves from the same packing the
    overlay's accel.json holds (and the largest batch is sized by the larger of the two)."""
    from flipq.overlays.metadata import largest_batch, stream_bytes_per_sample

    board = load_board("pynq-z2")
    for model in (tiny_intmodel(0), tiny_intmodel(3)):
        meta = accel_meta_for(model, board)
        in_b, out_b = stream_bytes_per_sample(model, board)
        assert (in_b, out_b) == (meta.in_bytes_per_sample, meta.out_bytes_per_sample)
        assert in_b == 8 and out_b > 0  # 12 4-bit inputs: 48 bits, one 64-bit word
        assert largest_batch(model, board) == ((1 << board.dma_max_length_width) - 1) // max(in_b, out_b)
    wide = stream_bytes_per_sample(tiny_intmodel(), board, output_bits=32)
    assert wide[1] >= stream_bytes_per_sample(tiny_intmodel(), board)[1]
