"""Allocators behind one interface: equal bits whatever the score, seeded randomness, the error
score's choice, budgeted and repeated allocation, and the width metadata at group size 1."""

import argparse

import pytest
import torch

from flipq.host.bitplan import BitPlan, LayerBits
from flipq.quant.allocators import LayerEvidence, error_reduction, select_groups, weight_scores
from flipq.quant.flip import FlipCounter
from flipq.quant.flipconfig import ALLOCATORS, FlipConfig, FlipError, add_flip_arguments, flip_config_from_args
from flipq.quant.layout import layer_shapes
from flipq.quant.models import QuantNet, as_tensor, mac_names
from flipq.quant.storage import budget_weight_bits, stored_weight_bits, weight_bits_breakdown, width_metadata_bits

# conv1: K = 9 (groups of 4, 4, 1 at G=4), fc1: K = 4*3*3 = 36, fc2: K = 12 -- partial groups included
ARCH = (("conv", 4, 3, 0), ("pool", 2), ("fc", 12), ("fc", None))


def _net(bits=2):
    torch.manual_seed(0)
    plan = BitPlan(tuple(LayerBits(n, bits, 4) for n in mac_names(ARCH)))
    return QuantNet(ARCH, (1, 8, 8), plan, num_classes=3, weight_scale="mse")


def _allocate(allocator, budget=0.3, group_size=4, seed=0, evidence_seed=1):
    net = _net()
    counter = FlipCounter(net, FlipConfig(group_size=group_size, budget=budget, allocator=allocator, seed=seed),
                          steps_per_epoch=10, epochs=2, allocate_epochs=(), extra_allocations=1, gradients=True)
    g = torch.Generator().manual_seed(evidence_seed)
    for name, layer in counter.layers.items():  # evidence as a retraining would leave it
        counter.counts[name] = torch.randint(0, 4, layer.weight.shape, generator=g, dtype=torch.int32)
        counter.grad_sq[name] = torch.rand(layer.weight.shape, generator=g)
    counter.grad_steps = 1
    counter.allocate()
    return net, counter


@pytest.mark.parametrize("group_size", [1, 4, 16])
def test_every_allocator_spends_the_same_bits(group_size):
    bits, flags = {}, {}
    for allocator in ALLOCATORS:
        net, counter = _allocate(allocator, group_size=group_size)
        plan = counter.plan()
        bits[allocator] = stored_weight_bits(plan, net)
        flags[allocator] = torch.cat([f.flatten() for f in counter.flags.values()])
    expected = budget_weight_bits(layer_shapes(net), counter.base_bits, group_size, 0.3)
    assert set(bits.values()) == {expected}, bits
    base = sum(k * n * 2 for k, n in layer_shapes(net).values())
    assert expected > base  # something was allocated ...
    assert len({tuple(f.tolist()) for f in flags.values()}) > 1  # ... and the allocators chose differently


def test_random_allocator_is_seeded():
    a = _allocate("random", seed=3)[1].flags
    b = _allocate("random", seed=3)[1].flags
    c = _allocate("random", seed=4)[1].flags
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_error_allocator_picks_the_weights_nearest_a_decision_boundary():
    # scale 1, 2 bits: levels -1, 0, 1; decision boundaries at +-0.5
    w = torch.tensor([[0.0, 0.49, 0.3, -0.52, 0.9, 0.05, -0.45, 0.2]])
    ev = LayerEvidence(latent=w, scale=torch.tensor(1.0), bits=2)
    scores = weight_scores("error", ev)
    picked = select_groups(scores.t(), 3 / 8)  # G = 1: one group per weight, 3 of 8
    assert picked.flatten().nonzero().flatten().tolist() == [1, 3, 6]  # 0.49, -0.52, -0.45
    # zero gain for a weight on a coarse level, largest on a boundary
    assert error_reduction(torch.tensor([1.0, 0.5]), torch.tensor(1.0), 2).tolist() == [0.0, 0.25]


def test_flip_ranks_by_count_and_breaks_ties_by_chance_or_by_error():
    counts = torch.tensor([[0, 3, 0, 0, 1, 0, 0, 0]])
    w = torch.tensor([[0.5, 0.0, 0.1, 0.45, 0.0, 0.0, 0.0, 0.0]])
    ev = LayerEvidence(latent=w, scale=torch.tensor(1.0), bits=2, counts=counts)
    top = lambda name: select_groups(weight_scores(name, ev).t(), 3 / 8).flatten().nonzero().flatten().tolist()
    assert {1, 4} <= set(top("flip"))  # the two switching weights first
    assert top("flip+error") == [0, 1, 4]  # the tie among zeros goes to the weight on a boundary


def test_sensitivity_needs_recorded_gradients():
    ev = LayerEvidence(latent=torch.zeros(2, 2), scale=torch.tensor(1.0), bits=2)
    with pytest.raises(FlipError, match="allocator 'sensitivity' needs grad_sq"):
        weight_scores("sensitivity", ev)


def test_repeated_allocation_spreads_the_budget_over_the_allocation_points():
    net = _net()
    cfg = FlipConfig(group_size=1, budget=0.4, allocator="random", allocate_epochs=(0, 1))
    counter = FlipCounter(net, cfg, steps_per_epoch=5, epochs=3)
    counter.allocate()
    first = {n: float(f.float().mean()) for n, f in counter.flags.items()}
    counter.allocate()
    second = {n: float(f.float().mean()) for n, f in counter.flags.items()}
    for n in first:
        k = counter.flags[n].numel()
        assert first[n] == pytest.approx(round(0.2 * k) / k) and second[n] == pytest.approx(round(0.4 * k) / k)


def test_window_records_gradients_only_inside_it():
    net = _net()
    cfg = FlipConfig(window=0.5, budget=0.5, allocator="sensitivity")
    counter = FlipCounter(net, cfg, steps_per_epoch=4, epochs=1, collect_only=True)
    x = torch.rand(2, 1, 8, 8)
    for step in range(4):  # window = steps 2 and 3
        net.zero_grad()
        as_tensor(net(x)).sum().backward()
        if step == 1:
            assert all(float(g.sum()) == 0 for g in counter.grad_sq.values())
        counter.after_step(net, step)
    assert counter.grad_steps == 2 and all(float(g.sum()) > 0 for g in counter.grad_sq.values())
    assert not counter.allocations  # collect_only never allocates


# -- storage at group size 1 ---------------------------------------------------------------------
def test_group_size_one_pays_a_flag_per_weight_or_an_index_per_wide_weight():
    net = _net()
    shapes = layer_shapes(net)  # fc2: K = 12, N = 3 -> 36 weights
    k, n = shapes["fc2"]
    many = tuple([3, 2] * (k * n // 2))  # half wide: a flag per weight (36) beats 18 indices of 6 bits
    plan = BitPlan((LayerBits("conv1", 2, 4), LayerBits("fc1", 2, 4), LayerBits("fc2", 2, 4, 1, many)))
    assert weight_bits_breakdown(plan, net)["fc2"] == {"payload": 2 * k * n + k * n // 2, "metadata": k * n,
                                                        "weights": k * n}
    few = tuple([3] * 2 + [2] * (k * n - 2))  # two wide: two 6-bit indices (12) beat 36 flags
    plan = plan.with_layer("fc2", group_bits=few)
    assert weight_bits_breakdown(plan, net)["fc2"]["metadata"] == 2 * 6
    assert stored_weight_bits(plan, net) == sum(2 * k_ * n_ for k_, n_ in shapes.values()) + 2 + 12
    assert width_metadata_bits([2, 3, 4]) == 3 * 2  # three widths: two-bit flags


def test_budget_and_allocator_options():
    p = argparse.ArgumentParser()
    add_flip_arguments(p)
    cfg = flip_config_from_args(p.parse_args(["--flip", "--flip-budget", "0.3", "--flip-allocator", "error",
                                              "--flip-seed", "5"]))
    assert (cfg.budget, cfg.allocator, cfg.seed) == (0.3, "error", 5)
    threshold = flip_config_from_args(p.parse_args(["--flip", "--flip-budget", "0"]))
    assert (threshold.budget, threshold.allocator) == (None, "flip")  # threshold mode counts flips
    assert flip_config_from_args(p.parse_args(["--flip"])) == FlipConfig()
    with pytest.raises(FlipError, match="allocator='error' ranks groups and needs a budget"):
        flip_config_from_args(p.parse_args(["--flip", "--flip-budget", "0", "--flip-allocator", "error"]))
    with pytest.raises(FlipError, match="allocator='random' ranks groups and needs a budget"):
        FlipConfig(budget=None, allocator="random")
    with pytest.raises(FlipError, match="budget=1.5"):
        FlipConfig(budget=1.5)
    with pytest.raises(FlipError, match="allocator='hessian'"):
        FlipConfig(budget=0.2, allocator="hessian")


def test_a_config_saved_before_budgets_loads_as_the_threshold_rule():
    old = {k: v for k, v in FlipConfig().to_dict().items() if k not in ("budget", "allocator", "seed")}
    cfg = FlipConfig.from_dict(old)
    assert (cfg.budget, cfg.allocator) == (None, "flip")
    assert FlipConfig.from_dict(FlipConfig().to_dict()) == FlipConfig()
