"""Training's answers to bad input: argparse ranges, a checkpoint with more (or as many) epochs
than asked, Ctrl-C, a checkpoint of another architecture, plans whose groups do not fit the
network, and a parser that builds without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from flipq.cli import main

HEAVY = ("torch", "brevitas", "hls4ml", "qonnx", "onnx", "onnxruntime")


def test_help_imports_no_torch_or_export_stack():
    script = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ImportError('the parser imported ' + name)
sys.meta_path.insert(0, Block())
from flipq.cli import build_parser, main
build_parser()
for argv in (["--help"], ["train", "--help"], ["demo", "--help"], ["search", "--help"], ["export", "--help"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
    else:
        raise AssertionError(argv)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok")


@pytest.mark.parametrize("argv,message", [
    (["train", "--epochs", "0"], "argument --epochs: 0 must be >= 1"),
    (["train", "--epochs", "-3"], "argument --epochs: -3 must be >= 1"),
    (["train", "--epochs", "two"], "argument --epochs: 'two' is not an integer"),
    (["train", "--batch-size", "0"], "argument --batch-size: 0 must be >= 1"),
    (["train", "--threads", "0"], "argument --threads: 0 must be >= 1"),
    (["train", "--lr", "0"], "argument --lr: 0 must be a finite number > 0"),
    (["train", "--lr", "-1"], "argument --lr: -1 must be a finite number > 0"),
    (["train", "--lr", "nan"], "argument --lr: nan must be a finite number > 0"),
    (["demo", "--float-epochs", "-1"], "argument --float-epochs: -1 must be >= 0"),
    (["train", "--check-rows", "-5"], "argument --check-rows: -5 must be >= 0"),
    (["train", "--arch", "foo"], "argument --arch: invalid choice: 'foo'"),
    (["search", "--generations", "0"], "argument --generations: 0 must be >= 1"),
    (["search", "--population", "1"], "argument --population: 1 must be >= 2"),
    (["search", "--qat-epochs", "0"], "argument --qat-epochs: 0 must be >= 1"),
])
def test_out_of_range_options_fail_in_argparse(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert message in err and "usage:" in err and "Traceback" not in err
    if "--arch" in argv:
        assert all(name in err for name in ("digits-cnn", "mlp", "vgg7-fm", "vgg9"))
    assert not (tmp_path / "b").exists()


# -- a trained folder and what reruns do with it ----------------------------------------------
EPOCHS = 2


def _train(out, *extra) -> int:
    return main(["train", "--out", str(out), "--no-progress", "--epochs", str(EPOCHS), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "b"
    assert _train(out) == 0
    return out


def _copy(trained, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(trained, out)
    return out


def _snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def test_fewer_epochs_than_the_checkpoint_holds_is_refused_untouched(trained, tmp_path, capsys):
    out = _copy(trained, tmp_path)
    before = _snapshot(out)
    assert main(["train", "--out", str(out), "--no-progress", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'checkpoint.pt'} already holds {EPOCHS} epochs, more than --epochs 1" in err
    assert "Traceback" not in err
    assert _snapshot(out) == before


def test_as_many_epochs_does_nothing(trained, tmp_path, capsys):
    out = _copy(trained, tmp_path)
    before = _snapshot(out)
    assert _train(out) == 0
    assert f"already trained {EPOCHS} epochs" in capsys.readouterr().out
    assert _snapshot(out) == before


def test_more_epochs_resumes_and_says_so(trained, tmp_path, capsys):
    import json

    out = _copy(trained, tmp_path)
    assert main(["train", "--out", str(out), "--no-progress", "--epochs", str(EPOCHS + 1)]) == 0
    assert f"resuming {out / 'checkpoint.pt'} at epoch {EPOCHS + 1} of {EPOCHS + 1}" in capsys.readouterr().out
    history = json.loads((out / "train.json").read_text())["history"]
    assert history["epoch"] == list(range(EPOCHS + 1))
    assert json.loads((out / "config.json").read_text())["epochs"] == EPOCHS + 1


def test_checkpoint_of_another_architecture_is_named(trained, tmp_path, capsys):
    out = _copy(trained, tmp_path)
    (out / "config.json").unlink()
    assert _train(out, "--arch", "mlp") == 2
    err = capsys.readouterr().err
    assert f"{out / 'checkpoint.pt'} does not match architecture 'mlp'" in err and "--fresh" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "config.json").exists()


# -- Ctrl-C --------------------------------------------------------------------------------------
def _interrupt_in_second_epoch(monkeypatch):
    """train() draws one permutation per epoch: the second draw is the second epoch's start."""
    import torch

    real, calls = torch.randperm, []

    def randperm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "randperm", randperm)


def test_ctrl_c_keeps_the_last_checkpoint_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from flipq.quant.train import load_checkpoint

    out = tmp_path / "b"
    _interrupt_in_second_epoch(monkeypatch)
    assert main(["train", "--out", str(out), "--no-progress", "--epochs", "3"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == (f"flipq: training interrupted: {out / 'checkpoint.pt'} holds epoch 1 of 3; "
                           "rerun the same command to resume")
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 0
    assert not (out / "plan.toml").exists() and not list(out.glob("*.tmp*"))
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--no-progress", "--epochs", "3"]) == 0
    assert f"resuming {out / 'checkpoint.pt'} at epoch 2 of 3" in capsys.readouterr().out
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def _plan_file(tmp_path, fc1: str) -> str:
    path = tmp_path / "plan.toml"
    path.write_text("[layers.conv1]\nweight_bits = 4\nact_bits = 8\n\n"
                    f"[layers.fc1]\nweight_bits = 3\nact_bits = 4\n{fc1}\n\n"
                    "[layers.fc2]\nweight_bits = 6\nact_bits = 3\n")
    return str(path)


def test_wrong_group_bits_count_is_refused_before_training(tmp_path, capsys):
    # digits-cnn's fc1: K = 16 * 3 * 3 = 144, N = 32; groups of 48 -> 3 per column, 96 in all
    plan = _plan_file(tmp_path, "group_size = 48\ngroup_bits = [3, 4, 3]")
    assert _train(tmp_path / "b", "--plan", plan) == 2
    err = capsys.readouterr().err
    assert "layer 'fc1': group_bits has 3 entries, the layer has 32 outputs x 3 groups of 48 = 96" in err
    assert not (tmp_path / "b" / "config.json").exists()


def test_plan_with_group_widths_is_not_a_starting_point(tmp_path, capsys):
    plan = _plan_file(tmp_path, "group_size = 48\ngroup_bits = " + str([3] * 95 + [4]))
    assert _train(tmp_path / "b", "--plan", plan) == 2
    err = capsys.readouterr().err
    assert "layer 'fc1' has per-group widths (group_bits), which training cannot start from" in err


def test_export_checks_the_plan_against_the_network(trained, tmp_path, capsys):
    out = _copy(trained, tmp_path)
    text = (out / "plan.toml").read_text().replace("[layers.fc1]", "[layers.fc1]\ngroup_bits = [3, 4]")
    (out / "plan.toml").write_text(text)
    assert main(["export", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "layer 'fc1': group_bits has 2 entries, the layer has 32 outputs x 1 groups of 144 = 32" in err
    assert not (out / "model.onnx").exists()


# -- atomic writes ---------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_earlier_artifact(tmp_path):
    from flipq.host.bitplan import BitPlan
    from flipq.host.files import replacing, write_json

    write_json(tmp_path / "train.json", {"epochs": 3})
    with pytest.raises(RuntimeError):
        with replacing(tmp_path / "train.json") as tmp:
            tmp.write_text('{"epo')
            raise RuntimeError("the run died half-way through the write")
    assert (tmp_path / "train.json").read_text() == '{\n "epochs": 3\n}'
    plan = BitPlan.uniform(["fc1"], 4, 4).save(tmp_path / "plan.toml")
    assert BitPlan.load(plan) == BitPlan.uniform(["fc1"], 4, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml", "train.json"]


def test_export_shows_the_qonnx_check_progress(trained, tmp_path, capsys):
    import json

    import numpy as np

    out = _copy(trained, tmp_path)
    # the folder was trained with --no-progress, which config.json keeps
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "progress": True}))
    assert main(["export", "--out", str(out), "--check-rows", "12"]) == 0
    assert "QONNX check" in capsys.readouterr().err
    torch_out, qonnx_out = (np.load(out / "outputs" / f"{n}.npy") for n in ("torch", "qonnx"))
    assert qonnx_out.shape == (12, 10) and np.array_equal(torch_out, qonnx_out)


def test_configs_refuse_out_of_range_values_from_python_too():
    from flipq.quant.search import SearchConfig
    from flipq.quant.train import TrainConfig

    for bad, message in (({"epochs": -1}, "epochs=-1 must be an int >= 0"),
                         ({"batch_size": 0}, "batch_size=0 must be an int >= 1"),
                         ({"threads": True}, "threads=True must be an int >= 1"),
                         ({"lr": float("nan")}, "lr=nan must be a finite number > 0")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)
    for bad, message in (({"population": 1}, "population=1 must be an int >= 2"),
                         ({"generations": 0}, "generations=0 must be an int >= 1"),
                         ({"qat_epochs": 0}, "qat_epochs=0 must be an int >= 1")):
        with pytest.raises(ValueError, match=message):
            SearchConfig(**bad)


def test_flip_allocation_after_the_last_epoch_is_refused_before_any_write(tmp_path, capsys):
    assert _train(tmp_path / "b", "--flip", "--flip-allocate-epochs", "5") == 2
    assert f"allocation epoch 5 is not inside the {EPOCHS}-epoch run" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
