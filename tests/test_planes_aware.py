"""Planes-aware training (flipq.quant.planesaware, issue 23 item 2): the network trained at a
run-time ``planes`` computes exactly what the emulator computes at that ``planes`` on the exported
model, for every ``planes`` and layer width; the hook draws only deployable values and resumes;
`flipq train --planes-aware` records what it drew and trains through every stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

torch = pytest.importorskip("torch")

from fuzz_models import torch_outputs  # noqa: E402


def test_truncated_forward_equals_the_emulator_at_every_planes(tmp_path):
    """digits-cnn with 4-, 3- and 6-bit layers, weights moved by a few planes-aware steps: torch at
    planes k (every k of 1..6) = the exported model's emulator at planes k, row by row."""
    from flipq.hls.prepare import load_qonnx
    from flipq.hls.verify import lower_model, random_inputs
    from flipq.host.emulator import Emulator
    from flipq.quant.archs import default_plan
    from flipq.quant.data import load_dataset
    from flipq.quant.export import export_model
    from flipq.quant.networks import build_network
    from flipq.quant.planesaware import PlanesAware, at_planes
    from flipq.quant.train import TrainConfig, train

    torch.manual_seed(0)
    ds = load_dataset("digits", seed=0, limit_train=256)
    plan = default_plan("digits-cnn")
    model = build_network("digits-cnn", ds.input_shape, plan, ds.num_classes, ds.signed_input)
    hook = PlanesAware(model, lowest=1, seed=3)
    try:
        train(model, ds, TrainConfig(epochs=1, batch_size=32, progress=False, threads=1), hooks=(hook,))
    finally:
        hook.close()
    assert hook.top == max(lb.weight_bits for lb in plan) and set(hook.drawn) <= set(range(1, hook.top + 1))
    assert len(hook.drawn) >= 4  # 8 steps of 1..6: several values drawn
    model.eval()
    raw = load_qonnx(export_model(model, ds.input_shape, tmp_path / "m.onnx", plan))
    intmodel = lower_model(raw)[0]
    q = random_inputs(intmodel, 64, seed=1)
    bound = intmodel.output_bound()
    full = torch_outputs(model, intmodel, q)
    differs = 0
    for k in range(1, hook.top + 1):
        want = intmodel.to_real(Emulator(intmodel, planes=k).run(q))
        with at_planes(model, k):
            got = torch_outputs(model, intmodel, q)
        assert np.all(np.abs(got - want) <= bound + 1e-5 * np.abs(want).max()), k
        differs += not np.allclose(got, full)
    assert differs >= 3  # the low settings do change the outputs: the check is not vacuous
    np.testing.assert_allclose(torch_outputs(model, intmodel, q), full)  # the hooks are gone


def test_the_hook_draws_deployable_planes_and_resumes():
    from flipq.quant.archs import default_plan
    from flipq.quant.networks import build_network
    from flipq.quant.planesaware import PlanesAware

    model = build_network("digits-cnn", (1, 8, 8), default_plan("digits-cnn"), 10)
    with pytest.raises(ValueError, match=r"lowest planes 7 must be an int in 1..6"):
        PlanesAware(model, lowest=7)
    a = PlanesAware(model, lowest=4, seed=5)
    for step in range(20):
        a.before_step(model, step)
        a.after_step(model, step)
    assert set(a.drawn) <= {4, 5, 6} and sum(a.drawn.values()) == 20
    b = PlanesAware(model, lowest=4, seed=99)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    draws = []
    for hook in (a, b):
        hook.before_step(model, 20)
        draws.append(hook.truncation.state["planes"])
        hook.after_step(model, 20)
        assert hook.truncation.state["planes"] is None  # full precision between steps
        hook.close()
    assert draws[0] == draws[1]
    c = PlanesAware(model, lowest=4, seed=5, full_share=0.5)
    for step in range(400):
        c.before_step(model, step)
    c.close()
    assert set(c.drawn) == {4, 5, 6} and 160 < c.drawn[6] < 240 and abs(c.drawn[4] - c.drawn[5]) < 60
    with pytest.raises(ValueError, match="full-precision share 1.5 must be a number in 0..1"):
        PlanesAware(model, lowest=4, full_share=1.5)


def test_train_planes_aware_through_every_stage(tmp_path, capsys):
    from flipq.cli import main

    out = tmp_path / "pa"
    common = ["--out", str(out), "--no-progress", "--check-rows", "60"]
    assert main(["train", *common, "--arch", "digits-cnn", "--dataset", "digits", "--epochs", "1",
                 "--planes-aware", "3"]) == 0
    info = json.loads((out / "train.json").read_text())
    assert info["planes_aware"] == {"lowest": 3, "highest": 6, "full_share": None}
    assert set(info["history"]["planes_drawn"]) <= {"3", "4", "5", "6"}
    for stage in ("export", "hls", "emulate", "report"):
        assert main([stage, *common]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["agreement"]["csim~emulator"] == {"equal": 60, "total": 60}
    # resuming with another setting is refused: the checkpoint means something else
    assert main(["train", *common, "--epochs", "2", "--planes-aware", "4"]) != 0
    assert "planes_aware: 3 -> 4" in capsys.readouterr().err
    assert main(["train", *common, "--arch", "digits-cnn", "--epochs", "1", "--planes-aware", "3", "--flip",
                 "--fresh"]) != 0
    assert "--planes-aware and --flip together" in capsys.readouterr().err
