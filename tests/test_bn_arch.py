"""digits-cnn-bn: a flipq-trained network with biases, BatchNorm, float and per-channel scales,
a signed activation and a float output, from `flipq train` through every stage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flipq.cli import main
from flipq.quant.archs import ArchTokenError, get_arch, layer_options, mac_names, mac_options, token_fields

ARCH = "digits-cnn-bn"  # float output: BatchNorm1d after the last layer
QOUT = "digits-cnn-bn-qout"  # the same with a signed 8-bit output quantizer
ROWS = 120


@pytest.fixture(scope="session")
def bn_builds(tmp_path_factory):
    """``build(arch)``: `flipq train --arch ARCH` (1 epoch from a 1-epoch float twin) and
    `flipq export`, in process, once per session and architecture."""
    done = {}

    def build(arch):
        if arch not in done:
            out = tmp_path_factory.mktemp(arch) / "build"
            common = ["--out", str(out), "--no-progress"]
            assert main(["train", *common, "--arch", arch, "--epochs", "1", "--float-epochs", "1",
                         "--check-rows", str(ROWS)]) == 0
            assert main(["export", *common]) == 0
            done[arch] = out
        return done[arch]

    return build


@pytest.fixture(scope="session")
def bn_build(bn_builds):
    return bn_builds(ARCH)


def test_token_options_default_to_flipqs_own_networks():
    assert token_fields(("conv", 8, 3, 1)) == ("conv", 8, 3, 1)
    assert layer_options(("fc", 16)) == {"bias": "none", "bn": False, "weight_scale": "pow2", "act": "relu",
                                         "act_scale": "pow2"}
    opts = mac_options(get_arch(ARCH))
    assert list(opts) == mac_names(get_arch(ARCH)) == ["conv1", "fc1", "fc2"]
    assert {o["bias"] for o in opts.values()} == {"int32", "float"} and all(o["bn"] for o in opts.values())
    assert opts["conv1"]["weight_scale"] == "per_channel" and opts["fc1"]["act"] == "signed"


@pytest.mark.parametrize("tok, words", [
    (("conv", 8, 3, 1, {"bias": "int8"}), ["'bias'", "int32"]),
    (("fc", 8, {"batchnorm": True}), ["unknown option 'batchnorm'", "bn"]),
    (("pool", 2, {"bn": True}), ["pool token takes no options"]),
    (("fc", 8, 3), ["('fc', units)"]),
])
def test_bad_token_is_named(tok, words):
    with pytest.raises(ArchTokenError) as e:
        layer_options(tok)
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)


def test_output_quantizer_only_on_the_last_layer():
    opts = mac_options(get_arch(QOUT))
    assert opts["fc2"]["act"] == "signed" and mac_options(get_arch(ARCH))["fc2"]["act"] == "none"
    with pytest.raises(ArchTokenError, match="hidden layer 'fc1' needs an activation"):
        mac_options((("fc", 8, {"act": "none"}), ("fc", None)))
    with pytest.raises(ArchTokenError, match="'act_scale' without an output quantizer"):
        mac_options((("fc", 8), ("fc", None, {"act_scale": "float"})))


def test_flip_is_refused_by_name_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "flip"
    assert main(["train", "--out", str(out), "--arch", ARCH, "--flip", "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "architecture 'digits-cnn-bn'" in err and "--flip" in err and "conv1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_weight_scale_rule_is_refused_where_no_layer_has_a_power_of_two_scale(tmp_path, capsys):
    out = tmp_path / "ws"
    assert main(["train", "--out", str(out), "--arch", ARCH, "--weight-scale", "absmax", "--epochs", "1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "architecture 'digits-cnn-bn': --weight-scale absmax" in err and "conv1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_flip_counter_refuses_a_float_scaled_network():
    from flipq.host.bitplan import BitPlan
    from flipq.quant.flip import FlipConfig, FlipCounter, FlipError
    from flipq.quant.models import QuantNet

    arch = get_arch(ARCH)
    net = QuantNet(arch, (1, 8, 8), BitPlan.uniform(mac_names(arch), 3, 4), 10)
    with pytest.raises(FlipError, match="layer 'conv1' has weight_scale 'per_channel'"):
        FlipCounter(net, FlipConfig(), steps_per_epoch=4, epochs=2)


def test_float_twin_hands_over_biases_and_batchnorms():
    import torch

    from flipq.host.bitplan import BitPlan
    from flipq.quant.models import FloatNet, QuantNet, copy_mac_weights

    arch = get_arch(ARCH)
    twin = FloatNet(arch, (1, 8, 8), 10)
    net = QuantNet(arch, (1, 8, 8), BitPlan.uniform(mac_names(arch), 4, 4), 10)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in twin.parameters():
            p.normal_()
        twin.body.fc1_bn.running_mean.normal_()
    copy_mac_weights(twin, net)
    assert torch.equal(net.body.conv1.bias, twin.body.conv1.bias)
    assert torch.equal(net.body.fc1_bn.running_mean, twin.body.fc1_bn.running_mean)
    assert torch.equal(net.body.fc2_bn.weight, twin.body.fc2_bn.weight)
    assert isinstance(twin.body.act2, torch.nn.Identity)  # the float twin of a signed QuantIdentity


def _initializers(model) -> dict:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("arch", [ARCH, QOUT])
def test_export_holds_batchnorm_float_scales_and_biases(bn_builds, arch):
    import onnx

    from flipq.pipeline import BuildConfig
    from flipq.quant.stage import trained_model

    build = bn_builds(arch)
    proto = onnx.load(str(build / "model.onnx"))
    init = _initializers(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("BatchNormalization") == 3
    scales = [np.asarray(init[n.input[1]], dtype=np.float64) for n in proto.graph.node
              if n.op_type == "Quant" and n.input[1] in init]
    assert any(np.any(np.log2(s) != np.round(np.log2(s))) for s in scales), "no float scale"
    assert any(s.size > 1 for s in scales), "no per-channel scale"
    macs = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert [len(n.input) for n in macs] == [3, 3, 3], "every MAC layer has a bias"
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert producers.get(macs[0].input[2]) == "Quant" and macs[1].input[2] in init  # Int32Bias, float bias
    # the graph ends in the float BatchNorm, or in the output quantizer after it
    assert producers[proto.graph.output[0].name] == ("BatchNormalization" if arch == ARCH else "Quant")
    # exported in eval mode: the BatchNorms hold the running statistics training collected
    model, _, _ = trained_model(BuildConfig.load(build))
    bns = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    mean = init[bns[0].input[3]]
    assert np.allclose(mean, model.body.conv1_bn.running_mean.numpy()) and np.abs(mean).max() > 0


def _outputs(build) -> dict:
    return {k: np.load(build / "outputs" / f"{k}.npy") for k in ("torch", "qonnx", "csim", "emulator")
            if (build / "outputs" / f"{k}.npy").is_file()}


def test_export_agrees_with_torch(bn_builds):
    out = _outputs(bn_builds(QOUT))
    assert len(out["torch"]) == ROWS and np.array_equal(out["torch"], out["qonnx"])
    # A float tail (BatchNorm1d after the float-scaled last layer) is evaluated by torch and
    # onnxruntime in different float32 operation orders: equal up to rounding, not bit for bit.
    out = _outputs(bn_builds(ARCH))
    assert np.array_equal(out["torch"].argmax(1), out["qonnx"].argmax(1))
    assert np.allclose(out["torch"], out["qonnx"], rtol=0, atol=1e-5)


def test_graph_for_hls4ml_names_and_shapes_every_constant(bn_builds):
    """hls4ml's ONNX parser needs a value_info shape for every initializer and renames a constant
    whose name starts with a digit (not its readers): the rewritten graph avoids both."""
    from flipq.hls.prepare import load_qonnx
    from flipq.hls.proxy import hls_graph
    from flipq.hls.verify import lower_model

    intmodel, prepared, _ = lower_model(load_qonnx(bn_builds(QOUT) / "model.onnx"))
    graph = hls_graph(prepared, intmodel).graph
    assert any(layer.op == "threshold" for layer in intmodel.layers)
    shaped = {v.name for v in graph.value_info}
    for init in graph.initializer:
        assert init.name in shaped and not init.name[0].isdigit(), init.name


@pytest.fixture(scope="session")
def staged(bn_builds, tmp_path_factory):
    """``stage(arch)``: a copy of the arch's build after `flipq hls`, `emulate` and `report`."""
    done = {}

    def stage(arch):
        if arch not in done:
            copy = tmp_path_factory.mktemp(f"{arch}-staged") / "build"
            shutil.copytree(bn_builds(arch), copy)
            for name in ("hls", "emulate", "report"):
                assert main([name, "--out", str(copy), "--no-progress"]) == 0, f"flipq {name} failed"
            done[arch] = copy
        return done[arch]

    return stage


def test_every_stage_agrees_on_every_row(staged):
    report = json.loads((staged(QOUT) / "report.json").read_text())
    assert set(report["agreement"]) == {"torch~qonnx", "qonnx~csim", "csim~emulator"}
    for pair, v in report["agreement"].items():
        assert v["equal"] == v["total"] == ROWS, pair


def test_float_output_goes_through_every_stage(staged):
    """The float tail (BatchNorm1d) is the integer model's output affine: C-sim = emulator bit for
    bit, both within the bound lowering documents (IntModel.output_bound) of torch and QONNX,
    argmax equal on every row."""
    from flipq.host.intmodel import IntModel

    build = staged(ARCH)
    report, out = json.loads((build / "report.json").read_text()), _outputs(build)
    for pair, v in report["agreement"].items():  # the report counts rows within the bound as equal
        assert v["equal"] == v["total"] == ROWS, pair
        assert ("within_bound" in v) == (pair != "csim~emulator"), pair
    bound = IntModel.load(build / "hls").output_bound()
    assert np.all(bound > 0) and np.max(bound) < 1e-3
    for name in ("qonnx", "csim", "emulator"):
        assert np.array_equal(out[name].argmax(1), out["torch"].argmax(1)), name
        assert np.all(np.abs(out[name] - out["torch"]) <= bound), name
    assert np.all(np.abs(out["csim"] - out["qonnx"]) <= bound)


def test_board_wrapper_equals_emulator(staged, monkeypatch, capsys):
    """The overlay stage (dry run) and the real pynq driver over the simulated device, whose PL is
    the board wrapper compiled with g++: equal to the emulator on every row, at every planes."""
    pytest.importorskip("pynq")
    from flipq.host import Accelerator
    from flipq.overlays import pynq_sim

    build = staged(QOUT)
    overlay = build / "overlay"
    assert main(["overlay", "build", str(build / "hls"), "--out", str(overlay), "--dry-run", "--simulate"]) == 0, \
        capsys.readouterr().err
    monkeypatch.setenv(pynq_sim.SIM_ENV, "1")
    try:
        x = np.load(build / "data.npz")["x_test"][:ROWS]
        assert pynq_sim.attach(overlay) == "wrapper"
        with Accelerator.load(overlay, backend="pynq") as acc:
            for planes in (None, 1, 3, 6):
                acc.set_planes(planes)
                v = acc.verify(x)
                assert v["equal"] == v["total"] == ROWS, (planes, v["first_mismatch"])
    finally:
        pynq_sim.deactivate()

