"""The board-side commands with the build stack unimportable: `flipq --help`, `flipq run`,
`flipq bench` and `flipq overlay check` need numpy (and pynq) only. On the PYNQ image there is
no torch, Brevitas, hls4ml, QONNX or ONNX."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BLOCKED = ("torch", "brevitas", "hls4ml", "qonnx", "onnx", "onnxruntime", "onnxoptimizer", "sklearn",
           "matplotlib", "pymoo", "scipy")  # not tqdm: pynq itself imports it

_BLOCKER = """
import sys, importlib.abc
BLOCK = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCK):
            raise ImportError('the board side imported ' + name)
sys.meta_path.insert(0, Block())
from flipq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _flipq_blocked(*args, env=None):
    import os

    return subprocess.run([sys.executable, "-c", _BLOCKER.format(blocked=BLOCKED), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def _tiny_intmodel():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_pynq_sim import tiny_intmodel

    return tiny_intmodel()


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    """An overlay folder as the board gets it: accel.json, a .hwh in Vivado's schema, the
    integer model (the stand-in bitstream is only there for the simulated device)."""
    from flipq.boards import load_board
    from flipq.overlays.hwh import generate_hwh
    from flipq.overlays.metadata import accel_meta_for

    folder = tmp_path_factory.mktemp("board") / "overlay"
    folder.mkdir()
    model = _tiny_intmodel()
    board = load_board("pynq-z2")
    meta = accel_meta_for(model, board, max_batch=16)
    meta.save(folder / "accel.json")
    (folder / "flipq.hwh").write_text(generate_hwh(meta, board))
    model.save(folder)
    np.save(folder.parent / "x.npy", np.random.default_rng(1).normal(size=(6, 12)))
    return folder


def test_help_imports_no_build_stack():
    r = _flipq_blocked("--help")
    assert r.returncode == 0, r.stderr
    assert "run" in r.stdout and "overlay" in r.stdout


def test_run_on_the_emulator_without_the_build_stack(overlay, tmp_path):
    r = _flipq_blocked("run", "--overlay", str(overlay), "--backend", "emulator",
                       "--input", str(overlay.parent / "x.npy"), "--output", str(tmp_path / "y.npy"))
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "y.npy").shape == (6, 5)


def test_bench_and_overlay_check_without_the_build_stack(overlay, tmp_path):
    r = _flipq_blocked("bench", "--overlay", str(overlay), "--backend", "emulator", "--batch", "8",
                       "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b.json").read_text())["label"] == "emulated"
    r = _flipq_blocked("overlay", "check", str(overlay))
    assert r.returncode == 0, r.stderr
    assert "overlay OK" in r.stdout


def test_run_through_pynq_on_the_simulated_device_without_the_build_stack(overlay, tmp_path):
    pytest.importorskip("pynq")
    (overlay / "flipq.bit").write_bytes(b"FLIPQ-SIMULATED-BITSTREAM\nstand-in\n")
    try:
        r = _flipq_blocked("run", "--overlay", str(overlay), "--backend", "pynq", "--input",
                           str(overlay.parent / "x.npy"), "--verify", env={"FLIPQ_PYNQ_SIM": "1"})
    finally:
        (overlay / "flipq.bit").unlink()
    assert r.returncode == 0, r.stderr
    assert "6/6 rows equal" in r.stdout
