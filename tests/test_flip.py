"""Flip-based mixed precision: counting, allocation, threshold-aware LR, the extra bit in the
quantizer and the plan, resume, and the chain torch = QONNX = C-sim = emulator on a flip model."""

import argparse

import numpy as np
import pytest
import torch

from flipq.host.bitplan import BitPlan, BitPlanError, LayerBits
from flipq.host.groups import as_matrix, min_group_bits
from flipq.quant.extrabit import set_weight_bits
from flipq.quant.flip import FlipCounter, ThresholdAwareLR, train_flip
from flipq.quant.flipconfig import FlipConfig, FlipError, add_flip_arguments, flip_config_from_args
from flipq.quant.flipplot import plot_allocation
from flipq.quant.layout import as_kn, expand_groups, group_flags
from flipq.quant.storage import stored_weight_bits
from flipq.quant.models import QuantNet, mac_names
from flipq.quant.scaling import absmax_scale
from flipq.quant.train import TrainConfig

FC_ARCH = (("fc", 8), ("fc", None))  # fc1: 4 -> 8, fc2: 8 -> 3 on a (1, 2, 2) input


def _fc_net(bits=3, weight_scale="absmax") -> QuantNet:
    # The hand-made trajectories below are on absmax grids (the scale follows the largest
    # weight); the counter reads whichever rule the model has.
    plan = BitPlan(tuple(LayerBits(n, bits, 4) for n in mac_names(FC_ARCH)))
    return QuantNet(FC_ARCH, (1, 2, 2), plan, num_classes=3, weight_scale=weight_scale)


def _set(layer, values):
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(values, dtype=torch.float32).reshape(layer.weight.shape))


# -- the quantizer ----------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_extra_bit_layer_has_half_the_scale_and_keeps_base_levels_even(bits):
    g = torch.Generator().manual_seed(bits)
    for _ in range(30):
        net = _fc_net(bits)
        layer = net.mac_layers()["fc1"]
        _set(layer, torch.randn(32, generator=g) * 10 ** float(torch.empty(1).uniform_(-3, 1, generator=g)))
        q = layer.quant_weight()
        s, levels = q.scale.detach().reshape(()), q.int()
        assert torch.equal(s, absmax_scale(layer.weight, bits))  # our formula is Brevitas' rule
        set_weight_bits(layer, bits + 1, float(s) / 2)
        q2 = layer.quant_weight()
        assert int(q2.bit_width) == bits + 1 and torch.equal(q2.scale.detach().reshape(()), s / 2)
        # a weight on the b-bit grid is the even (b+1)-bit integer twice its level
        _set(layer, levels.float() * s)
        assert torch.equal(layer.quant_weight().int().long(), 2 * levels.long())


def test_brevitas_statistics_would_halve_the_scale_again_on_a_2bit_grid():
    """Why the extra-bit layer freezes its scale: requantizing 2-bit levels {-1, 0, 1} * s with
    Brevitas' statistics at 3 bits gives s/4, not s/2."""
    net = _fc_net(2)
    layer = net.mac_layers()["fc1"]
    _set(layer, torch.tensor([1.0, -1.0, 0.0, 1.0] * 8) * 0.25)
    wide = _fc_net(3).mac_layers()["fc1"]
    _set(wide, layer.weight.detach())
    assert float(wide.quant_weight().scale) == 0.25 / 4


def test_group_layout_matches_host_groups():
    w = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3, 3)  # conv OIHW
    hwio = w.permute(2, 3, 1, 0).numpy()
    assert np.array_equal(as_kn(w).numpy(), as_matrix(hwio))
    flags = torch.zeros(w.shape, dtype=torch.bool)
    flags[1, 2, 0, 1] = True  # K index (kh=0, kw=1, cin=2) = 0*9 + 1*3 + 2 = 5 -> group 1 of size 4
    g = group_flags(flags, 4)
    assert g.shape == (2, 7) and g.sum() == 1 and g[1, 1]
    back = expand_groups(g, 4, w.shape)
    assert back.sum() == 4 and as_kn(back)[4:8, 1].all()


def test_dense_after_a_conv_uses_the_channels_last_row_order():
    """The exported graph is made channels-last: a Linear reading a (C, H, W) map sees rows in
    (H, W, C) order, and weight groups follow that order."""
    c, h, w, n = 3, 2, 2, 5
    weight = torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c * h * w)
    kn = as_kn(weight, (c, h, w))
    expected = weight.reshape(n, c, h, w).permute(2, 3, 1, 0).reshape(h * w * c, n)
    assert torch.equal(kn, expected)
    from flipq.quant.layout import from_kn
    assert torch.equal(from_kn(kn, weight.shape, (c, h, w)), weight)


# -- counting and allocation --------------------------------------------------------------------
def test_flips_counted_on_a_hand_made_trajectory():
    net = _fc_net(3)  # scale pinned by a 0.9 weight: 2**ceil(log2 .9) / 4 = 0.25, levels -3..3
    fc1 = net.mac_layers()["fc1"]
    base = torch.zeros(32)
    base[31] = 0.9
    _set(fc1, base)
    cfg = FlipConfig(group_size=4, window=0.5, threshold=3, allocate_epochs=(0,), promote="weight",
                     budget=None, allocator="flip")
    counter = FlipCounter(net, cfg, steps_per_epoch=10, epochs=2)
    assert counter.window_steps == 5 and counter.alloc_steps == [9]
    # weight 0 oscillates 0,1,0,1,... (adjacent); weight 1 jumps 0 <-> 2 (not adjacent);
    # weight 2 crosses once; weight 3 oscillates only before the window opens.
    traj = {0: [.12, .13] * 5, 1: [0.0, 0.5] * 5, 2: [.1] * 7 + [.3] * 3, 3: [.12, .13, .12, .13] + [.1] * 6}
    for step in range(9):
        w = base.clone()
        for i, values in traj.items():
            w[i] = values[step]
        _set(fc1, w)
        counter.after_step(net, step)
    # window = steps 5..9; switches seen at steps 5..8 so far (levels compared to the step before)
    c = counter.counts["fc1"].flatten()
    assert c[0] == 4 and c[1] == 0 and c[2] == 1 and c[3] == 0 and c[4:].sum() == 0


def test_a_scale_change_is_not_counted_as_flips():
    """absmax crossing a power of two moves every level at once: no weight oscillated."""
    net = _fc_net(3)
    fc1 = net.mac_layers()["fc1"]
    counter = FlipCounter(net, FlipConfig(window=1.0, allocate_epochs=(0,)), steps_per_epoch=10, epochs=1)
    w = torch.zeros(32)
    w[0], w[1] = 0.3, 0.55  # levels 1 and 2 at scale 0.25
    for step, big in enumerate([0.9, 1.1, 0.9, 1.1]):  # scale 0.25 <-> 0.5
        w[31] = big
        _set(fc1, w)
        counter.after_step(net, step)
    assert counter.counts["fc1"].sum() == 0
    w[0] = 0.4  # same grid (0.5): level 1 -> 1 ; then a real switch
    _set(fc1, w)
    counter.after_step(net, 4)
    w[0] = 0.2
    _set(fc1, w)
    counter.after_step(net, 5)
    assert counter.counts["fc1"].flatten()[0] == 1 and counter.counts["fc1"].sum() == 1


def test_allocation_flags_exactly_the_weights_over_threshold_and_fills_the_plan():
    net = _fc_net(2)
    counter = FlipCounter(net, FlipConfig(group_size=4, threshold=3, promote="weight", budget=None, allocator="flip",
                                          allocate_epochs=(0,)), steps_per_epoch=10, epochs=2)
    counts = torch.zeros(8, 4, dtype=torch.int32)
    counts[0, 1], counts[3, 3], counts[5, 0], counts[6, 2] = 3, 7, 2, 1
    counter.counts["fc1"] = counts.clone()
    counter.allocate()
    assert torch.equal(counter.flags["fc1"], counts >= 3)
    assert not counter.flags["fc2"].any()
    fc1 = net.mac_layers()["fc1"]
    assert int(fc1.quant_weight().bit_width) == 3 and int(net.mac_layers()["fc2"].quant_weight().bit_width) == 2
    plan = counter.plan()
    lb = plan["fc1"]
    assert (lb.weight_bits, lb.group_size, lb.max_weight_bits) == (2, 4, 3)
    # fc1 is (K=4, N=8): one group of 4 per output; outputs 0 and 3 have the extra bit
    assert lb.group_bits == (3, 2, 2, 3, 2, 2, 2, 2)
    assert plan["fc2"].group_bits is None
    # un-flagged weights stay on the 2-bit grid: even 3-bit integers
    ints = fc1.quant_weight().int()
    assert (ints[~counter.flags["fc1"]] % 2 == 0).all()


def test_group_promotion_flags_whole_groups_and_a_second_allocation_adds_more():
    net = _fc_net(2)
    counter = FlipCounter(net, FlipConfig(group_size=2, threshold=2, promote="group", budget=None, allocator="flip",
                                          allocate_epochs=(0, 1)), steps_per_epoch=5, epochs=3)
    counter.counts["fc1"][2, 1] = 2
    counter.allocate()
    assert counter.flags["fc1"].sum() == 2 and counter.flags["fc1"][2, :2].all()
    counter.counts["fc1"][7, 3] = 5
    counter.allocate()
    assert counter.flags["fc1"].sum() == 4 and counter.flags["fc1"][7, 2:].all()
    assert counter.counts["fc1"].sum() == 0  # each window starts afresh


def test_threshold_fraction_scales_with_the_window():
    net = _fc_net(2)
    counter = FlipCounter(net, FlipConfig(window=2.0, threshold=0.1, budget=None, allocator="flip"),
                          steps_per_epoch=50, epochs=4)
    assert counter.window_steps == 100 and counter.threshold_count() == pytest.approx(10)


# -- threshold-aware learning rate --------------------------------------------------------------
def _lr_setup(mode):
    net = _fc_net(3)
    fc1 = net.mac_layers()["fc1"]
    # scale 0.25 (pinned by 0.9): w/s fractions 0.5 (on a threshold), 0.45, 0.62, 0.0, 0.3
    w = torch.zeros(32)
    w[31] = 0.9
    w[:5] = torch.tensor([0.125, 0.1125, 0.155, 0.25, -0.075])
    _set(fc1, w)
    counter = FlipCounter(net, FlipConfig(), steps_per_epoch=10, epochs=2)
    return net, fc1, counter, ThresholdAwareLR(counter, factor=0.25, band=0.1, mode=mode)


def test_lr_factor_applies_only_inside_the_band_grad_mode():
    net, fc1, counter, lr = _lr_setup("grad")
    expected = torch.ones(32)
    expected[:2] = 0.25  # |frac - .5| = 0 and .05 are in the band; .12, .5, .2 are not
    assert torch.equal(lr.in_band("fc1").flatten(), expected < 1)
    fc1.weight.grad = torch.ones_like(fc1.weight)
    net.mac_layers()["fc2"].weight.grad = torch.ones_like(net.mac_layers()["fc2"].weight)
    lr.after_backward(net)
    assert torch.equal(fc1.weight.grad.flatten(), expected)


def test_lr_factor_applies_only_inside_the_band_step_mode():
    net, fc1, counter, lr = _lr_setup("step")
    before = fc1.weight.detach().clone()
    lr.after_backward(net)
    with torch.no_grad():
        fc1.weight.add_(0.004)  # the optimizer's step
    lr.after_step(net, 0)
    moved = (fc1.weight.detach() - before).flatten()
    assert torch.allclose(moved[:2], torch.full((2,), 0.001)) and torch.allclose(moved[2:], torch.full((30,), 0.004))


def test_band_uses_the_fine_grid_for_weights_with_the_extra_bit():
    net, fc1, counter, lr = _lr_setup("grad")
    counter.counts["fc1"].view(-1)[2] = 10  # w/s = .62 -> on the s/2 grid 1.24: out of band
    counter.counts["fc1"].view(-1)[3] = 10  # w/s = 1.0 -> fine 2.0: out of band
    counter.cfg = FlipConfig(promote="weight", threshold=2, budget=None, allocator="flip")
    counter.allocate()
    band = lr.in_band("fc1").flatten()
    assert not band[2] and not band[3]
    with torch.no_grad():
        counter.latent["fc1"].view(-1)[2] = 0.1875  # fine 1.5: on the fine threshold
    assert lr.in_band("fc1").flatten()[2]


# -- storage ------------------------------------------------------------------------------------
def test_stored_bits_count_payload_and_one_flag_per_group():
    net = _fc_net(2)
    # fc1: K=4, N=8, G=3 -> groups of 3 and 1 per output; outputs 0..7 alternate 3/2 on group 0
    bits = []
    for n in range(8):
        bits += [3 if n % 2 == 0 else 2, 2]
    plan = BitPlan((LayerBits("fc1", 2, 4, 3, tuple(bits)), LayerBits("fc2", 2, 4)))
    payload_fc1 = 4 * (3 * 3 + 1 * 2) + 4 * (3 * 2 + 1 * 2)
    assert stored_weight_bits(plan, net) == payload_fc1 + 16 + 8 * 3 * 2
    with pytest.raises(BitPlanError, match=r"layer 'fc1': group_bits has 3 entries, the layer has 8 outputs x 2 groups of 3 = 16"):
        stored_weight_bits(plan.with_layer("fc1", group_bits=(2, 2, 3)), net)


def test_cli_options_round_trip():
    p = argparse.ArgumentParser()
    add_flip_arguments(p)
    assert flip_config_from_args(p.parse_args([])) is None
    cfg = flip_config_from_args(p.parse_args(["--flip", "--flip-threshold", "0.1", "--flip-allocate-epochs", "2", "5",
                                              "--flip-lr-mode", "step", "--flip-group-size", "8"]))
    assert cfg == FlipConfig(group_size=8, threshold=0.1, allocate_epochs=(2, 5), lr_mode="step")
    with pytest.raises(FlipError, match="lr_band=0.7"):
        FlipConfig(lr_band=0.7)
    import json
    assert FlipConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(FlipError, match="unknown flip option.*'windw'"):
        FlipConfig.from_dict({"windw": 2})


# -- training runs ------------------------------------------------------------------------------
TINY = (("conv", 4, 3, 1), ("pool", 2), ("fc", 16), ("fc", None))
FLIP = FlipConfig(group_size=8, threshold=1, allocate_epochs=(0,), window=1.0)


def _digits(n=300):
    from flipq.quant.data import load_dataset

    return load_dataset("digits", limit_train=n)


def _tiny_model(ds, bits=2):
    torch.manual_seed(0)
    plan = BitPlan(tuple(LayerBits(n, bits, 4) for n in mac_names(TINY)))
    return QuantNet(TINY, ds.input_shape, plan, ds.num_classes)


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    import flipq.quant.train as train_mod

    ds = _digits()
    # batch 8: 38 steps per epoch, so Brevitas' activation-scale statistics (collected over the
    # first 30 steps and not checkpointed) are complete before the first checkpoint.
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=8, threads=1, progress=False)
    ref = _tiny_model(ds)
    hist_ref, plan_ref = train_flip(ref, ds, cfg, FLIP, checkpoint=tmp_path / "ref.pt")

    real_save, saves = train_mod.save_checkpoint, []

    def save_then_die(path, state):
        real_save(path, state)
        saves.append(state["epoch"])
        if len(saves) == 2:  # after epoch 1, i.e. after the allocation at the end of epoch 0
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_flip(_tiny_model(ds), ds, cfg, FLIP, checkpoint=tmp_path / "cut.pt")
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    resumed = _tiny_model(ds)
    hist, plan = train_flip(resumed, ds, cfg, FLIP, checkpoint=tmp_path / "cut.pt")
    assert hist["epoch"] == [0, 1, 2] and hist["test_accuracy"] == hist_ref["test_accuracy"]
    assert plan == plan_ref and any(lb.group_bits for lb in plan)
    for (name, a), b in zip(ref.mac_layers().items(), resumed.mac_layers().values()):
        assert torch.equal(a.weight, b.weight), name
        assert torch.equal(a.quant_weight().int(), b.quant_weight().int()), name


def test_resume_refuses_another_flip_config(tmp_path):
    ds = _digits(100)
    cfg = TrainConfig(epochs=1, threads=1, progress=False)
    train_flip(_tiny_model(ds), ds, cfg, FLIP, checkpoint=tmp_path / "c.pt")
    with pytest.raises(FlipError, match="flip config"):
        train_flip(_tiny_model(ds), ds, cfg, FlipConfig(threshold=5, allocate_epochs=(0,)),
                   checkpoint=tmp_path / "c.pt")


@pytest.fixture(scope="module")
def flip_chain(tmp_path_factory):
    from flipq.hls.lower import lower_qonnx
    from flipq.hls.prepare import load_qonnx, prepare_qonnx
    from flipq.quant.export import export_model

    ds = _digits(400)
    model = _tiny_model(ds)
    _, plan = train_flip(model, ds, TrainConfig(epochs=2, lr=2e-2, batch_size=32, threads=1, progress=False),
                         FLIP)
    folder = tmp_path_factory.mktemp("flip")
    path = export_model(model, ds.input_shape, folder / "model.onnx", plan)
    prepared = prepare_qonnx(load_qonnx(path))
    return model, plan, ds.x_test[:120], prepared, lower_qonnx(prepared, plan), folder


def test_flip_model_lowers_with_its_group_widths(flip_chain):
    model, plan, _, _, intmodel, folder = flip_chain
    wide = [lb for lb in plan if lb.group_bits]
    assert wide, "the allocation gave no layer an extra bit"
    for lb, layer in zip(plan, intmodel.mac_layers):
        bits = lb.max_weight_bits
        need = min_group_bits(as_matrix(layer.weight), bits, lb.group_size)
        if lb.group_bits:
            declared = np.asarray(lb.group_bits).reshape(need.shape)
            assert (need <= declared).all()
            assert (need[declared == lb.weight_bits] <= lb.weight_bits).all()
            assert (need == bits).any(), f"{lb.name}: no group uses its extra bit"
    plot = plot_allocation(plan, folder / "alloc.png")
    assert plot.stat().st_size > 1000
    uniform = BitPlan.uniform(plan.names, 4, 4)
    assert stored_weight_bits(plan, intmodel) == stored_weight_bits(plan, model) < stored_weight_bits(uniform, model)


def test_flip_model_torch_equals_qonnx_equals_emulator_equals_csim(flip_chain, tmp_path):
    from flipq.hls.stock import build_stock, predict_stock
    from flipq.host.emulator import Emulator
    from flipq.quant.export import execute_qonnx
    from flipq.quant.train import evaluate

    model, plan, x, prepared, intmodel, _ = flip_chain
    rng = np.random.default_rng(3)
    x = np.concatenate([x, rng.uniform(-0.2, 1.3, size=(40, *x.shape[1:])).astype(np.float32)])
    torch_out, _ = evaluate(model, x)
    emu = Emulator(intmodel)
    assert np.array_equal(emu.forward(x), torch_out)
    assert np.array_equal(execute_qonnx(prepared, x[:60].transpose(0, 2, 3, 1)), torch_out[:60])
    build = build_stock(prepared, intmodel, tmp_path / "stock")
    assert np.array_equal(predict_stock(build, intmodel, emu.quantize_input(x)), torch_out)


def test_rebuilt_model_from_the_plan_loads_the_flip_weights(flip_chain):
    """The pipeline rebuilds the network from plan.toml and loads the checkpoint into it."""
    model, plan, x, *_ = flip_chain
    from flipq.quant.train import evaluate

    again = QuantNet(TINY, model.input_shape, BitPlan.from_dict(plan.to_dict()), 10)
    again.load_state_dict(model.state_dict())
    assert np.array_equal(evaluate(again, x)[0], evaluate(model, x)[0])


# -- the benchmark's split and base plan -------------------------------------------------------
def _benchmark():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_mpq.py"
    spec = importlib.util.spec_from_file_location("reproduce_mpq", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_base_plan_and_run_names():
    bench = _benchmark()
    args = bench.parse_args([])
    plan = bench.base_plan(args, bench.get_arch("vgg7-fm"))
    assert [lb.weight_bits for lb in plan] == [4, 2, 2, 2, 2, 2, 4]  # = w2a4-ends
    assert all(lb.act_bits == 4 for lb in plan)
    plan2 = bench.base_plan(bench.parse_args(["--layer-bits", "conv2=3", "conv4=3"]), bench.get_arch("vgg7-fm"))
    assert [lb.weight_bits for lb in plan2] == [4, 3, 2, 3, 2, 2, 4]
    with pytest.raises(SystemExit):
        bench.base_plan(bench.parse_args(["--layer-bits", "conv9=3"]), bench.get_arch("vgg7-fm"))
    # baselines are shared between flip tags, flip and base runs are not
    tagged = bench.parse_args(["--tag", "_x"])
    assert bench.run_name(tagged, "w4a4", 1) == bench.run_name(args, "w4a4", 1) == "w4a4_e12_s1"
    assert bench.run_name(tagged, "flip", 1) == "flip_e12_x_s1"
    # runs with the other weight-scale rule are kept apart
    assert bench.run_name(bench.parse_args(["--weight-scale", "absmax"]), "w4a4", 1) == "w4a4_e12_absmax_s1"


def test_benchmark_validation_rows_are_training_rows_outside_the_subset(monkeypatch):
    bench = _benchmark()
    from flipq.quant.data import Dataset
    rng = np.random.default_rng(0)
    fake = Dataset("fashion-mnist", rng.random((600, 1, 4, 4), dtype=np.float32), rng.integers(0, 10, 600),
                   rng.random((50, 1, 4, 4), dtype=np.float32), rng.integers(0, 10, 50))
    monkeypatch.setattr(bench, "load_dataset", lambda *a, **k: fake)
    args = bench.parse_args(["--train-size", "200", "--val-size", "100"])
    full, idx, val = bench.split(args, seed=3)
    assert len(idx) == 200 and len(val) == 100 and not np.intersect1d(idx, val).size
    assert full.x_test is fake.x_test  # the test set is left whole, only scored at the end
