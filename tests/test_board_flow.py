"""The demo model through the board stack without a board: `flipq overlay build --dry-run
--simulate`, then the real pynq driver code on the simulated device whose PL is the board
wrapper compiled with g++ -- equal to the emulator on every row, at every `planes`."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pynq")


@pytest.fixture(scope="module")
def overlay(demo_dir):
    out, _ = demo_dir
    r = subprocess.run([sys.executable, "-m", "flipq", "overlay", "build", str(out / "hls"), "--board", "pynq-z2",
                        "--out", str(out / "overlay"), "--dry-run", "--simulate"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "vitis_hls: not on PATH" in r.stdout  # says exactly what is missing
    return out / "overlay"


@pytest.fixture
def sim(monkeypatch):
    from flipq.overlays import pynq_sim

    monkeypatch.setenv(pynq_sim.SIM_ENV, "1")
    yield
    pynq_sim.deactivate()


def test_dry_run_writes_scripts_and_metadata(overlay, demo_dir):
    out, _ = demo_dir
    for name in ("hls_synth.tcl", "block_design.tcl", "bitstream.tcl", "accel.json", "src/flipq_top.cpp"):
        assert (overlay / name).is_file(), name
    meta = json.loads((overlay / "accel.json").read_text())
    report = json.loads((out / "hls" / "hls_report.json").read_text())
    assert meta["model_hash"] == report["model_hash"]
    assert meta["board"] == "pynq-z2" and meta["fclk_mhz"] == 100.0
    assert meta["plan"]["layers"]["fc1"]["weight_bits"] == 3
    bd = (overlay / "block_design.tcl").read_text()
    assert "xc7z020clg400-1" in bd and "tul.com.tw:pynq-z2:part0:1.0" in bd
    assert f"CONFIG.c_sg_length_width {{{meta['dma']['length_width']}}}" in bd
    assert "CONFIG.c_include_sg {0}" in bd
    hls = (overlay / "hls_synth.tcl").read_text()
    assert "set_top flipq_top" in hls and "flipq_top.cpp" in hls
    r = subprocess.run([sys.executable, "-m", "flipq", "overlay", "check", str(overlay)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "overlay OK" in r.stdout


def test_pynq_backend_equals_emulator_through_the_compiled_wrapper(overlay, sim):
    from flipq.host import Accelerator
    from flipq.overlays import pynq_sim

    x = np.load(overlay.parent / "data.npz")["x_test"]
    assert pynq_sim.attach(overlay) == "wrapper"
    with Accelerator.load(overlay, backend="pynq") as acc:
        for planes in (None, 1, 2, 3, 6):
            acc.set_planes(planes)
            assert acc.verify(x) == {"backend": "pynq", "equal": len(x), "total": len(x), "planes": planes,
                                     "first_mismatch": None}
        bench = acc.benchmark(x[:64], repeats=1, latency_samples=3)
        assert bench["label"] == "emulated" and bench["fclk_mhz"] == 100.0


def test_overlay_refused_when_its_hash_does_not_match(overlay, sim, tmp_path):
    from flipq.host import Accelerator

    copy = tmp_path / "ov"
    shutil.copytree(overlay, copy)
    meta = json.loads((copy / "accel.json").read_text())
    meta["model_hash"] = "0" * 64
    (copy / "accel.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model_hash 0000000000000000... does not match"):
        Accelerator.load(copy, backend="pynq")


def test_stand_in_bitstream_is_refused_off_simulation(overlay, monkeypatch):
    from flipq.host import Accelerator

    monkeypatch.delenv("FLIPQ_PYNQ_SIM", raising=False)
    with pytest.raises(ValueError, match="stand-in written by `flipq overlay build --simulate`"):
        Accelerator.load(overlay, backend="pynq")
