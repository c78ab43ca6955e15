"""`flipq run` / `flipq bench` with bad input: one line naming the thing, exit 2, no
traceback; and what a good run writes."""

import json

import numpy as np
import pytest

from flipq.cli import main


@pytest.fixture(scope="module")
def folder(tiny_chain, tmp_path_factory):
    out = tmp_path_factory.mktemp("clirt")
    tiny_chain.intmodel.save(out / "hls")
    return out


@pytest.fixture
def x_file(tiny_chain, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, tiny_chain.x[:8])
    return path


def _run(capsys, *argv):
    rc = main(list(argv))
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap.out, cap.err


def test_output_into_a_folder_is_refused(capsys, folder, x_file, tmp_path):
    rc, _, err = _run(capsys, "run", "--overlay", str(folder), "--backend", "emulator", "--input", str(x_file),
                      "--output", str(tmp_path))
    assert rc == 2 and f"--output {tmp_path} is a folder" in err


def test_output_without_suffix_prints_the_file_written(capsys, folder, x_file, tmp_path):
    rc, out, _ = _run(capsys, "run", "--overlay", str(folder), "--backend", "emulator", "--input", str(x_file),
                      "--output", str(tmp_path / "y"))
    assert rc == 0 and f"-> {tmp_path / 'y.npy'}" in out
    assert np.load(tmp_path / "y.npy").shape == (8, 10)
    assert not list(tmp_path.glob("*.tmp*"))


def test_output_into_a_missing_folder_is_refused_before_running(capsys, folder, x_file, tmp_path):
    rc, _, err = _run(capsys, "run", "--overlay", str(folder), "--backend", "emulator", "--input", str(x_file),
                      "--output", str(tmp_path / "no" / "y.npy"))
    assert rc == 2 and "does not exist" in err


def test_integer_input_means_values_unless_quantized(capsys, folder, tiny_chain, tmp_path):
    raw = np.rint(tiny_chain.x[:8]).astype(np.int64)
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "flt.npy", raw.astype(np.float32))
    for name in ("raw", "flt"):
        rc, _, _ = _run(capsys, "run", "--overlay", str(folder), "--backend", "emulator", "--input",
                        str(tmp_path / f"{name}.npy"), "--output", str(tmp_path / f"y_{name}.npy"))
        assert rc == 0
    assert np.array_equal(np.load(tmp_path / "y_raw.npy"), np.load(tmp_path / "y_flt.npy"))
    rc, _, err = _run(capsys, "run", "--overlay", str(folder), "--backend", "emulator", "--input",
                      str(tmp_path / "flt.npy"), "--quantized")
    assert rc == 2 and "quantized input must hold integers" in err


def test_planes_above_the_widest_layer_are_refused(capsys, folder, x_file):
    rc, _, err = _run(capsys, "run", "--overlay", str(folder), "--backend", "emulator", "--input", str(x_file),
                      "--planes", "7")
    assert rc == 2 and "planes must be an int in 1..6" in err
    with pytest.raises(SystemExit) as e:
        main(["run", "--overlay", str(folder), "--input", str(x_file), "--planes", "0"])
    assert e.value.code == 2 and "--planes: 0 must be >= 1" in capsys.readouterr().err


def test_bench_batch_zero_is_a_usage_error(capsys, folder):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--overlay", str(folder), "--batch", "0"])
    assert e.value.code == 2 and "--batch: 0 must be >= 1" in capsys.readouterr().err


def test_input_folder_and_edited_model_are_named(capsys, folder, tmp_path, x_file):
    rc, _, err = _run(capsys, "run", "--overlay", str(folder), "--backend", "emulator", "--input", str(tmp_path))
    assert rc == 2 and "is a folder; give a .npy file" in err
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    meta = json.loads((copy / "hls" / "intmodel.json").read_text())
    meta["output_exp"] -= 1
    (copy / "hls" / "intmodel.json").write_text(json.dumps(meta))
    rc, _, err = _run(capsys, "run", "--overlay", str(copy), "--backend", "emulator", "--input", str(x_file),
                      "--verify")
    assert rc == 2 and "was changed after `flipq hls` wrote it" in err


def test_debug_shows_the_traceback(capsys, tmp_path, x_file):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "run", "--overlay", str(tmp_path / "none"), "--input", str(x_file)])


@pytest.mark.parametrize("command", ["train", "export", "hls", "emulate", "report"])
def test_out_onto_a_file_or_a_read_only_place_is_refused(capsys, tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, _, err = _run(capsys, command, "--out", str(afile))
    assert rc == 2 and f"--out {afile} is an existing file, not a folder" in err
    import os

    # root writes through permission bits, so use a read-only file system: /proc
    readonly = "/proc/flipq-out" if os.path.isdir("/proc/self") else None
    if readonly is None:
        pytest.skip("no read-only file system to write to")
    rc, _, err = _run(capsys, command, "--out", readonly)
    assert rc == 2 and f"--out {readonly} cannot be created" in err


def test_hls_on_a_model_file_honours_every_option(capsys, tiny_chain, tmp_path):
    """`flipq hls MODEL.onnx --kernel stock ...` used to ignore the options when a model file
    was given."""
    out = tmp_path / "stock"
    rc = main(["hls", str(tiny_chain.onnx_path), "--out", str(out), "--kernel", "stock", "--io-type",
               "io_stream", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "hls" / "hls_report.json").read_text())
    assert report["kernel"] == "stock" and report["io_type"] == "io_stream"
    assert (out / "hls" / "stock").is_dir() and not (out / "hls" / "bitserial").exists()


def test_overlay_is_a_stage_of_the_build(demo_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from flipq import pipeline
    from flipq.overlays import tools

    monkeypatch.setattr(tools, "find_tools", lambda: {"hls": None, "vivado": None, "vivado_hls": None})
    out, _ = demo_dir
    copy = tmp_path / "build"
    shutil.copytree(out, copy)
    result = pipeline.run(pipeline.BuildConfig.load(copy), "overlay", "overlay")
    assert result.dry_run and "vivado" in " ".join(result.missing_tools)  # prepared, not failed
    meta = json.loads((copy / "overlay" / "accel.json").read_text())
    assert meta["board"] == "pynq-z2" and meta["model_hash"] == json.loads(
        (copy / "hls" / "hls_report.json").read_text())["model_hash"]
    # the command takes the build folder too, and refuses a board other than the build's
    assert main(["overlay", "build", str(copy), "--dry-run", "--out", str(tmp_path / "ov")]) == 0
    assert (tmp_path / "ov" / "accel.json").is_file()
    rc = main(["overlay", "build", str(copy), "--dry-run", "--board", "zcu104", "--out", str(tmp_path / "z")])
    assert rc == 2 and "zcu104" in capsys.readouterr().err


def test_a_failed_hls_run_leaves_the_earlier_one(demo_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from flipq.hls import bitserial
    from flipq.hls.cxx import CompileError

    out, _ = demo_dir
    copy = tmp_path / "build"
    shutil.copytree(out, copy)
    before = {p.name: p.read_bytes() for p in (copy / "hls").glob("*.json")}

    def broken(*a, **k):
        raise CompileError("g++ failed on flipq_bridge.cpp:\nerror: injected")

    monkeypatch.setattr(bitserial, "compile_project", broken)
    assert main(["hls", "--out", str(copy), "--no-progress"]) == 1
    assert "flipq: error: g++ failed on flipq_bridge.cpp:" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (copy / "hls").glob("*.json")} == before
    from flipq.host import Accelerator

    with Accelerator.load(copy, backend="csim") as acc:  # the earlier library still runs
        assert acc.verify(np.load(copy / "data.npz")["x_test"][:8])["equal"] == 8


def test_a_missing_data_set_is_a_usage_error(capsys, tmp_path):
    rc, _, err = _run(capsys, "train", "--out", str(tmp_path / "c"), "--dataset", "cifar10", "--no-progress")
    assert rc == 2 and "--data-path" in err


def test_output_folder_on_a_read_only_file_system_is_refused(capsys, folder, x_file):
    import os

    if not os.path.isdir("/proc/self"):
        pytest.skip("no read-only file system to write to")
    rc, _, err = _run(capsys, "run", "--overlay", str(folder), "--backend", "emulator", "--input", str(x_file),
                      "--output", "/proc/y.npy")
    assert rc == 2 and "--output folder /proc is not writable" in err
