"""The power-of-two weight-scale rules (flipq.quant.scaling) and how they reach the model and
the build config."""

import json

import brevitas.nn as qnn
import pytest
import torch
from brevitas.quant import Int8WeightPerTensorFixedPoint

from flipq.host.bitplan import BitPlan
from flipq.quant.models import QuantNet, mac_names
from flipq.quant.scaling import (MSE_OCTAVES, MSEWeightQuant, absmax_scale, pow2_weight_scale, quantize,
                                 weight_quantizer)

ARCH = (("conv", 4, 3, 1), ("pool", 2), ("fc", 16), ("fc", None))


def _weights(seed, n=2048, heavy=False):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g) * 10 ** float(torch.empty(1).uniform_(-3, 0, generator=g))
    if heavy:  # a few outliers, as in trained layers
        w[:4] *= 6
    return w


def _sq_err(w, bits, s):
    return float(torch.sum((quantize(w, bits, s) - w) ** 2))


@pytest.mark.parametrize("bits", range(2, 9))
def test_absmax_rule_is_brevitas_fixed_point_scale(bits):
    for seed in range(10):
        fc = qnn.QuantLinear(64, 32, bias=False, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=bits)
        with torch.no_grad():
            fc.weight.copy_(_weights(seed, 64 * 32).reshape(32, 64))
        assert torch.equal(fc.quant_weight().scale.detach().reshape(()), absmax_scale(fc.weight, bits))
        assert torch.equal(pow2_weight_scale(fc.weight, bits, "absmax"), absmax_scale(fc.weight, bits))


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_mse_rule_picks_the_least_squares_candidate(bits):
    for seed in range(20):
        w = _weights(seed, heavy=seed % 2 == 1)
        s = pow2_weight_scale(w, bits, "mse")
        s0 = absmax_scale(w, bits)
        cands = [s0 * 2.0 ** k for k in MSE_OCTAVES]
        errs = [_sq_err(w, bits, c) for c in cands]
        assert any(torch.equal(s, c) for c in cands)
        assert _sq_err(w, bits, s) == min(errs)
        # power of two, and no worse than the absmax scale
        assert float(torch.log2(s)) == round(float(torch.log2(s)))
        assert _sq_err(w, bits, s) <= _sq_err(w, bits, s0)


def test_mse_rule_on_gaussian_weights_is_the_best_power_of_two_and_finer_than_absmax_at_low_bits():
    w = _weights(7, n=20000)
    for bits in (2, 3, 4, 8):
        s = pow2_weight_scale(w, bits, "mse")
        every = [torch.exp2(torch.tensor(float(k))) for k in range(-30, 4)]
        assert _sq_err(w, bits, s) == min(_sq_err(w, bits, c) for c in every)
        if bits <= 3:
            assert s < absmax_scale(w, bits)  # the absmax grid is too coarse there


def test_mse_rule_keeps_weights_that_sit_on_a_2bit_grid():
    """absmax on {-1, 0, 1} * s gives s/2; the rule's +1 octave recovers s (zero error)."""
    w = torch.tensor([1.0, -1.0, 0.0, 1.0] * 8) * 0.25
    assert float(absmax_scale(w, 2)) == 0.125
    assert float(pow2_weight_scale(w, 2, "mse")) == 0.25


def test_mse_quantizer_layer_uses_the_rule_and_passes_gradients():
    fc = qnn.QuantLinear(128, 8, bias=False, weight_quant=MSEWeightQuant, weight_bit_width=3)
    with torch.no_grad():
        fc.weight.copy_(_weights(3, 128 * 8, heavy=True).reshape(8, 128))
    q = fc.quant_weight()
    s = pow2_weight_scale(fc.weight, 3, "mse")
    assert torch.equal(q.scale.detach().reshape(()), s)
    assert torch.equal(q.value.detach(), quantize(fc.weight.detach(), 3, s))
    fc(torch.randn(5, 128)).sum().backward()
    assert fc.weight.grad is not None and fc.weight.grad.abs().sum() > 0


def test_the_rule_reaches_every_layer_of_a_quantnet():
    plan = BitPlan.uniform(mac_names(ARCH), 2, 4)
    for rule in ("mse", "absmax"):
        torch.manual_seed(0)
        net = QuantNet(ARCH, (1, 8, 8), plan, 10, weight_scale=rule)
        assert net.weight_scale == rule
        for name, layer in net.mac_layers().items():
            got = layer.quant_weight().scale.detach().reshape(())
            assert torch.equal(got, pow2_weight_scale(layer.weight, 2, rule)), (rule, name)
    assert weight_quantizer("absmax") is Int8WeightPerTensorFixedPoint


def test_unknown_rule_is_refused_by_name():
    with pytest.raises(ValueError, match="'median'"):
        QuantNet(ARCH, (1, 8, 8), BitPlan.uniform(mac_names(ARCH), 4, 4), 10, weight_scale="median")


def test_old_build_configs_rebuild_with_absmax(tmp_path):
    """A build folder from before the rule was recorded was trained with absmax scales: loading
    its config must not switch the rebuilt network to another grid, nor call it stale."""
    from flipq.pipeline import BuildConfig
    from flipq.quant.stage import StaleBuildError, check_resumable

    cfg = BuildConfig(out=str(tmp_path))
    assert cfg.weight_scale == "mse"
    old = json.loads(json.dumps(cfg.__dict__))
    del old["weight_scale"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    loaded = BuildConfig.load(tmp_path)
    assert loaded.weight_scale == "absmax"
    check_resumable(loaded)  # same configuration: no StaleBuildError
    with pytest.raises(StaleBuildError, match="weight_scale: 'absmax' -> 'mse'"):
        check_resumable(cfg)
