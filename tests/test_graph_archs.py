"""``flipq train --arch`` offers the MLPerf Tiny graph networks (issue 22, items 6 and 7): a
residual ResNet-8 trains with flip allocation and goes through export, hls and emulate with
every stage equal; a plan is matched to a graph's layers by module path; what a graph network
cannot train with is refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flipq.cli import main  # noqa: E402


def test_resnet8_trains_with_flip_and_every_stage_agrees(tmp_path, capsys):
    out = tmp_path / "r8"
    common = ["--out", str(out), "--no-progress", "--check-rows", "120"]
    assert main(["train", *common, "--arch", "resnet8", "--dataset", "digits", "--epochs", "2", "--flip",
                 "--flip-allocate-epochs", "1", "--threads", "2"]) == 0
    for stage in ("export", "hls", "emulate", "report"):
        assert main([stage, *common]) == 0
    report = json.loads((out / "report.json").read_text())
    names = [layer["name"] for layer in report["layers"]]
    assert {"stem", "s1.c1", "s2.proj", "s3.proj", "fc"} <= set(names)  # the plan's module paths
    from flipq.quant.archs import GRAPH_ARCHS

    widened = {layer["name"] for layer in report["layers"] if 0 < layer.get("groups_with_extra_bit", 0) < 1}
    assert widened == set(GRAPH_ARCHS["resnet8"])  # flip widened some groups of every trained layer
    fc = next(layer for layer in report["layers"] if layer["name"] == "fc")
    assert fc["act_bits"] is None  # it reads the global pool's average, no quantizer of its own
    for pair in ("torch~qonnx", "qonnx~csim", "csim~emulator"):
        assert report["agreement"][pair] == {"equal": 120, "total": 120}, pair
    assert report["accuracy"]["csim"] > 0.5  # two epochs on digits: well above chance (0.1)
    printed = capsys.readouterr().out
    assert "s2.proj" in printed and "MISMATCH" not in printed


def test_ds_cnn_trains_with_flip_on_its_depthwise_layers_and_every_stage_agrees(tmp_path, capsys):
    """--flip on a depthwise-separable graph: the flip groups cut a depthwise column's own nine
    weights (torch's layer); the integer model's block-diagonal column takes its widest group's
    width (flipq.hls.lower._grouped_conv_widths), and every stage still agrees."""
    out = tmp_path / "ds"
    common = ["--out", str(out), "--no-progress", "--check-rows", "60"]
    assert main(["train", *common, "--arch", "ds_cnn", "--dataset", "digits", "--epochs", "2", "--flip",
                 "--flip-allocate-epochs", "1", "--flip-group-size", "4", "--threads", "2"]) == 0
    for stage in ("export", "hls", "emulate", "report"):
        assert main([stage, *common]) == 0
    report = json.loads((out / "report.json").read_text())
    dw = [layer for layer in report["layers"] if layer["name"].endswith(".dw")]
    assert len(dw) == 4 and any(0 < layer.get("groups_with_extra_bit", 0) for layer in dw)
    plan = (out / "plan.toml").read_text()
    assert "blocks.0.dw" in plan and "group_bits" in plan
    for pair in ("torch~qonnx", "qonnx~csim", "csim~emulator"):  # (within the global pool's output bound)
        agree = report["agreement"][pair]
        assert (agree["equal"], agree["total"]) == (60, 60), pair
    assert report["agreement"]["csim~emulator"] == {"equal": 60, "total": 60}  # the same integers
    assert "MISMATCH" not in capsys.readouterr().out


@pytest.mark.parametrize("flag, message", [
    (["--float-epochs", "1"], "architecture 'ds_cnn': --float-epochs trains a float twin"),
])
def test_what_a_graph_network_cannot_train_with_is_refused_before_any_write(flag, message, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["train", "--out", str(out), "--arch", "ds_cnn", "--dataset", "digits", "--epochs", "1",
                 *flag]) != 0
    assert message in capsys.readouterr().err
    assert not out.exists()


def _mixed_plan(name: str):
    from flipq.host.bitplan import BitPlan, LayerBits
    from flipq.quant.archs import GRAPH_ARCHS

    names = GRAPH_ARCHS[name]
    return BitPlan(tuple(LayerBits(n, 2 + i % 6, 4) for i, n in enumerate(names)))


def test_a_plan_is_matched_to_a_graph_by_module_path_in_any_order(tmp_path):
    """The plan's order is not the walk's: each layer still gets its own entry (distinct weight
    widths, so a layer given another's entry would be refused)."""
    from flipq.host.bitplan import BitPlan
    from flipq.quant.export import export_model
    from flipq.quant.mlperf import build_graph_arch
    from flipq.hls.verify import lower_model

    plan = _mixed_plan("resnet8")
    torch.manual_seed(0)
    net = build_graph_arch("resnet8", (1, 8, 8), plan, 10, signed_input=False)
    reversed_plan = BitPlan(tuple(reversed(plan.layers)))
    path = export_model(net, (1, 8, 8), tmp_path / "model.onnx", reversed_plan)
    from flipq.hls.prepare import load_qonnx

    intmodel = lower_model(load_qonnx(path))[0]
    macs = {layer.name: layer.attrs["weight_bits"] for layer in intmodel.mac_layers if not layer.attrs.get("full_planes")}
    assert macs == {lb.name: lb.weight_bits for lb in plan}
    assert intmodel.plan.names == [n for n in macs]  # the IntModel's plan in the layers' order


def test_one_quantizer_read_by_two_layers_takes_one_width():
    from flipq.host.bitplan import BitPlanError
    from flipq.quant.mlperf import build_graph_arch

    plan = _mixed_plan("resnet8")
    plan = plan.with_layer("s2.proj", act_bits=6)
    with pytest.raises(BitPlanError, match="layers 's2.c1', 's2.proj' read one activation quantizer but the plan "
                                           "gives them act_bits 4, 6"):
        build_graph_arch("resnet8", (1, 8, 8), plan, 10)


def test_the_benchmark_builder_keeps_its_8_bit_input_and_uniform_widths():
    from flipq.quant.mlperf import build

    net = build("ds_cnn", 3, 5, input_shape=(1, 16, 8))
    assert int(net.inq.act_quant.bit_width()) == 8
    assert {int(m.quant_weight().bit_width) for m in net.mac_layers().values()} == {3}
    assert np.isfinite(net(torch.randn(2, 1, 16, 8)).detach().numpy()).all()


def test_search_runs_on_a_graph_network(tmp_path, capsys):
    """`flipq search --arch resnet8` (item 7): per-module-path bits and folding drawn for the
    residual graph, candidates started from the graph itself trained at W8A8 (its weights and
    BatchNorm, not its 8-bit quantizers' scales), costed on the board; `--pick` writes a plan the
    graph trains with."""
    import torch

    from flipq.quant.archs import arch_layer_names
    from flipq.quant.candidate import _float_net, copy_graph_weights
    from flipq.quant.data import load_dataset

    out = tmp_path / "s"
    rc = main(["search", "--out", str(out), "--arch", "resnet8", "--generations", "1", "--population", "3",
               "--qat-epochs", "1", "--float-epochs", "1", "--limit-train", "200", "--workers", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "search.json").read_text())
    names = arch_layer_names("resnet8")
    assert res["layers"] == names and len(res["evaluated"]) == 3
    assert all(len(e["genome"]) == 2 * len(names) + 1 and 0 < e["val_accuracy"] <= 1 for e in res["evaluated"])
    assert all(set(names) <= set(e["pe"]) for e in res["evaluated"])  # (and the global pool's conv of ones)
    assert main(["search", "--out", str(out), "--pick", "0"]) == 0
    assert "--arch resnet8 --plan" in capsys.readouterr().out
    # the base's weights reach a candidate; a quantizer's scale does not
    ds = load_dataset("digits", seed=0, limit_train=50)
    base = _float_net("resnet8", ds)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in base.state_dict().items()}
    cand = _float_net("resnet8", ds)
    before = cand.state_dict()
    n = copy_graph_weights(state, cand)
    after = cand.state_dict()
    assert n > 0 and all(torch.equal(after[k], state[k]) for k in state if "quant" not in k)
    assert all(torch.equal(after[k], before[k]) for k in state if "quant" in k)
    with pytest.raises(ValueError, match="does not match"):
        copy_graph_weights({"s1.c1.weight": torch.zeros(1)}, cand)
