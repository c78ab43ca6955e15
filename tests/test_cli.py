"""The command line end to end: the demo, stage reruns, and user mistakes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path


FLIPQ = [sys.executable, "-m", "flipq"]


def _run(*args, timeout=300):
    return subprocess.run([*FLIPQ, *args], capture_output=True, text=True, timeout=timeout)


def test_demo_is_exact_and_accurate(demo_dir):
    out, stdout = demo_dir
    report = json.loads((out / "report.json").read_text())
    assert report["test_rows"] >= 300
    assert set(report["accuracy"]) == {"torch", "qonnx", "csim", "emulator"}
    assert all(acc >= 0.90 for acc in report["accuracy"].values()), report["accuracy"]
    for pair in ("torch~qonnx", "qonnx~csim", "csim~emulator"):
        assert report["agreement"][pair] == {"equal": report["test_rows"], "total": report["test_rows"]}
    widths = {b for layer in report["layers"] for b in (layer["weight_bits"], layer["act_bits"])}
    assert len(widths) >= 3
    assert [layer["type"] for layer in report["layers"]].count("dense") >= 2
    assert "conv" in [layer["type"] for layer in report["layers"]]
    assert set(report["timings"]) == {"train", "export", "hls", "emulate"}
    assert "csim~emulator" in stdout and "MISMATCH" not in stdout
    for artifact in ("plan.toml", "checkpoint.pt", "model.onnx", "hls/intmodel.json", "hls/hls_report.json",
                     "hls/csim.json", "hls/bitserial"):
        assert (out / artifact).exists(), artifact


def test_stages_rerun_alone(demo_dir, tmp_path):
    out, _ = demo_dir
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    (copy / "outputs" / "emulator.npy").unlink()
    (copy / "report.json").unlink()
    assert _run("emulate", "--out", str(copy)).returncode == 0
    r = _run("report", "--out", str(copy))
    assert r.returncode == 0, r.stderr
    report = json.loads((copy / "report.json").read_text())
    assert report["agreement"]["csim~emulator"]["equal"] == report["test_rows"]


def test_training_resumes_and_refuses_a_stale_checkpoint(demo_dir, tmp_path):
    out, _ = demo_dir
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    r = _run("train", "--out", str(copy), "--no-progress")
    assert r.returncode == 0, r.stderr  # all epochs done: resumes and finishes at once
    r = _run("train", "--out", str(copy), "--lr", "0.5", "--no-progress")
    assert r.returncode == 2 and "trained with another configuration" in r.stderr and "lr" in r.stderr


def test_missing_model_file_is_named(tmp_path):
    r = _run("hls", str(tmp_path / "nothere.onnx"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "nothere.onnx" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_model_file_is_named(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    r = _run("hls", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "broken.onnx" in r.stderr and "Traceback" not in r.stderr


def test_unmappable_node_is_named(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_lower import _graph_with

    path = tmp_path / "odd.onnx"
    _graph_with("Sigmoid").save(str(path))
    r = _run("hls", str(path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "node 'Odd_0' (op type Sigmoid)" in r.stderr and "Traceback" not in r.stderr


def test_stage_before_its_inputs_says_what_to_run(tmp_path):
    r = _run("export", "--out", str(tmp_path / "empty"))
    assert r.returncode == 2 and "config.json" in r.stderr


def test_csim_backend_equals_emulator_at_every_planes(demo_dir):
    import numpy as np

    from flipq.host import Accelerator

    out, _ = demo_dir
    x = np.load(out / "data.npz")["x_test"][:64]
    with Accelerator.load(out, backend="csim") as acc:
        assert acc.backend.name == "csim"
        for planes in (None, *range(1, acc.model.max_planes() + 1)):
            acc.set_planes(planes)
            assert acc.verify(x)["equal"] == len(x), planes
    assert Accelerator.load(out).backend.name == "csim"  # auto picks the built C-sim


def test_hls_command_writes_report(demo_dir):
    out, _ = demo_dir
    report = json.loads((out / "hls" / "hls_report.json").read_text())
    assert [layer["name"] for layer in report["layers"]] == ["conv1", "fc1", "fc2"]
    assert report["kernel"] == "bitserial"
    for layer in report["layers"]:
        assert {"cycles", "lut", "ff", "bram36", "dsp", "weight_bits", "act_bits"} <= set(layer)
    assert report["totals"]["cycles"] == sum(layer["cycles"] for layer in report["layers"])
    assert report["board"]["name"] == "pynq-z2" and report["board"]["fits"] is True
    assert 0 < report["board"]["utilization"]["lut"] < 1


def test_bad_pe_option_is_named(demo_dir, tmp_path):
    out, _ = demo_dir
    r = _run("hls", "--out", str(out), "--pe", "conv9=2")
    assert r.returncode == 2 and "pe names layer 'conv9'" in r.stderr and "Traceback" not in r.stderr
    r = _run("hls", "--out", str(out), "--pe", "conv1=zero")
    assert r.returncode == 2 and "--pe entry 'conv1=zero'" in r.stderr
    r = _run("hls", "--out", str(out), "--board", "pynq-z9")
    assert r.returncode == 2 and "unknown board 'pynq-z9'" in r.stderr


def test_run_and_bench_commands(demo_dir, tmp_path):
    import numpy as np

    out, _ = demo_dir
    x = np.load(out / "data.npz")["x_test"][:16]
    np.save(tmp_path / "x.npy", x)
    r = _run("run", "--overlay", str(out), "--backend", "csim", "--input", str(tmp_path / "x.npy"),
             "--output", str(tmp_path / "y.npy"), "--verify", "--planes", "3")
    assert r.returncode == 0, r.stderr
    assert "16/16 rows equal" in r.stdout and np.load(tmp_path / "y.npy").shape == (16, 10)
    r = _run("bench", "--overlay", str(out), "--backend", "emulator", "--batch", "32",
             "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    assert "(emulated)" in r.stdout and json.loads((tmp_path / "b.json").read_text())["label"] == "emulated"
    (tmp_path / "bad.npy").write_bytes(b"definitely not numpy")
    r = _run("run", "--overlay", str(out), "--input", str(tmp_path / "bad.npy"))
    assert r.returncode == 2 and "bad.npy" in r.stderr


def test_flip_training_goes_through_every_stage_exactly(tmp_path):
    out = tmp_path / "flip"
    r = _run("demo", "--out", str(out), "--no-progress", "--flip", "--flip-group-size", "8",
             "--float-epochs", "4", "--epochs", "6", timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for pair, v in report["agreement"].items():
        assert v["equal"] == v["total"], pair
    assert any(0 < layer.get("groups_with_extra_bit", 0) < 1 for layer in report["layers"])
    plan = (out / "plan.toml").read_text()
    assert "group_bits" in plan and "group_size = 8" in plan
    assert (out / "flip_allocation.png").is_file()
    assert json.loads((out / "train.json").read_text())["stored_weight_bits"] > 0
    import tomllib

    flipped = {n for n, e in tomllib.loads(plan)["layers"].items() if "group_bits" in e}
    hls = json.loads((out / "hls" / "hls_report.json").read_text())
    assert flipped and all(layer["group_size"] == 8 for layer in hls["layers"] if layer["name"] in flipped)
