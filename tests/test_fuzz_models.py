"""Random Brevitas networks from the whole vocabulary of issue 11 through the whole chain:
every model is exact (torch = QONNX = emulator = C-sim at every planes) or refused, with one
line, for a construct outside what flipq maps today. The grammar is tests/fuzz_models.py;
benchmarks/fuzz_models.py runs hundreds of the same models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_models import (KNOWN_BUGS, OUTSIDE_VOCABULARY, check_spec, constructs, features, spec_from_seed,  # noqa: E402
                         specs)

# Few examples (each costs an export, QONNX execution and maybe a compile), the same ones every
# run; no shrinking (minutes per failure): the failing spec is printed whole.
def fast(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _assert_exact_or_known_refusal(verdict, spec):
    assert verdict.status in ("exact", "refused"), (verdict, spec)
    if verdict.status == "refused":
        assert verdict.reason in OUTSIDE_VOCABULARY, (verdict.reason, verdict.message, spec)
        assert "\n" not in verdict.message


@fast(6)
@given(spec=specs(avoid=KNOWN_BUGS, full_vocabulary=True))
def test_any_model_is_exact_or_refused_for_a_construct_outside_the_vocabulary(spec, tmp_path_factory):
    """Emulator-level check (no compile): many models, every construct."""
    verdict = check_spec(spec, tmp_path_factory.mktemp("fz"), rows=24, csim=False, qonnx_rows=8)
    _assert_exact_or_known_refusal(verdict, spec)


@fast(5)
@given(spec=specs(avoid=KNOWN_BUGS, full_vocabulary=False))
def test_mappable_models_are_exact_through_the_csim(spec, tmp_path_factory):
    """What flipq maps today reaches the C-sim (one compile each) and agrees everywhere."""
    verdict = check_spec(spec, tmp_path_factory.mktemp("fz"), rows=32, qonnx_rows=8)
    assert verdict.status == "exact", (verdict, spec)
    assert any(k.startswith("csim=emulator") for k in verdict.stages)
    # the kernels count the cycles the cost model prices, at every planes
    assert sum(k.startswith("csim cycles=model planes=") for k in verdict.stages) >= 2
    assert all(ok == total for ok, total in verdict.stages.values())


def test_the_generator_covers_the_vocabulary_and_avoids_known_bugs():
    """Seeded draws reach every construct; with KNOWN_BUGS avoided none of them appears."""
    drawn = [spec_from_seed(s) for s in range(300)]
    seen = {(layer["kind"], layer.get("q") or layer.get("pool") or layer.get("wscale")) for sp in drawn
            for layer in sp["layers"]}
    for construct in [("act", "identity"), ("act", "relu"), ("act", "hardtanh"), ("pool", "maxpool"),
                      ("pool", "avgpool"), ("pool", "truncavgpool"), ("conv", "per_channel"), ("linear", "float")]:
        assert construct in seen, construct
    assert {sp["form"] for sp in drawn} == {"conv", "dense4d", "dense"}
    assert {b for sp in drawn for layer in sp["layers"] if "bias" in layer for b in [layer["bias"]]} == \
        {"none", "float", "int32", "int8"}
    assert any(layer.get("bn") for sp in drawn for layer in sp["layers"])
    assert set().union(*map(constructs, drawn)) == {"gpool", "res", "cat", "depthwise", "padded_pool"}
    assert set().union(*map(features, drawn)) == set(KNOWN_BUGS)
    avoided = [spec_from_seed(s, avoid=KNOWN_BUGS) for s in range(300)]
    standing = {flag for flag, open_bug in KNOWN_BUGS.items() if open_bug}
    assert not set().union(*map(features, avoided)) & standing
    assert spec_from_seed(7) == spec_from_seed(7)


# Minimal reproducers of KNOWN_BUGS, pinned with the verdict each gives today. When a fix lands
# the verdict becomes "exact", the test fails and says to drop the flag from KNOWN_BUGS.
def _dense(layers, inp=None, form="dense", in_shape=(8,)):
    inp = inp or {"bits": 4, "signed": False, "narrow": False}
    return {"form": form, "seed": 3, "io_type": "io_parallel", "group_size": 0, "pe": 1, "in_shape": list(in_shape),
            "input": dict(kind="input", q="identity", scale="pow2", **inp), "layers": layers}


def _lin(out, wbits=4, bias="none"):
    return {"kind": "linear", "wbits": wbits, "wscale": "pow2", "bias": bias, "bn": False, "out": out}


def _act(q="identity", bits=4, signed=False, narrow=False):
    return {"kind": "act", "q": q, "bits": bits, "signed": signed, "narrow": narrow, "scale": "pow2"}


REPRODUCERS = {
    "signed_middle_activation": (_dense([_lin(6), _act("hardtanh", 3, signed=True), _lin(4, 3)]), True),
    "signed_output_activation": (_dense([_lin(5, 8), _act(bits=5, signed=True)],
                                        {"bits": 7, "signed": True, "narrow": False}), True),
    "quantized_bias": (_dense([_lin(6, bias="int32"), _act("relu"), _lin(4)]), False),
    "dense_first_4d": (_dense([{"kind": "flatten"}, _lin(4)], form="dense4d", in_shape=(2, 6, 6)), False),
    "unsigned_activation_without_relu": (_dense([{"kind": "conv", "wbits": 2, "wscale": "pow2", "bias": "none",
                                                  "bn": False, "out": 1, "k": 1, "stride": 1, "pad": 0},
                                                 _act(bits=2), {"kind": "flatten"}, _lin(2, 2)],
                                                form="conv", in_shape=(1, 6, 6)), True),
    "unsigned_narrow": (_dense([_lin(3)], {"bits": 3, "signed": False, "narrow": True}), True),
}
TODAY = {  # flag -> (status, reason) of its reproducer while the bug stands
    "signed_middle_activation": ("mismatch", "csim=emulator (planes)"),
    "signed_output_activation": ("mismatch", "csim=emulator (planes)"),
    "unsigned_activation_without_relu": ("mismatch", "csim=emulator (planes)"),
    "quantized_bias": ("refused", "op Add"),
    "dense_first_4d": ("refused", "no input quantizer"),
    "unsigned_narrow": ("refused", "narrow unsigned activation"),
}





def test_reproducers_exhibit_their_flag():
    for flag, (spec, _) in REPRODUCERS.items():
        assert flag in features(spec), flag
    assert set(REPRODUCERS) == set(KNOWN_BUGS) == set(TODAY)


@pytest.mark.parametrize("flag", sorted(REPRODUCERS))
def test_known_bug_reproducer(flag, tmp_path):
    spec, needs_csim = REPRODUCERS[flag]
    verdict = check_spec(spec, tmp_path, rows=32, csim=needs_csim, qonnx_rows=8)
    if not KNOWN_BUGS[flag]:
        assert verdict.status == "exact", (flag, verdict)
        return
    assert verdict.status != "exact", f"KNOWN_BUGS['{flag}'] is fixed: set the flag to False (or drop it)"
    assert (verdict.status, verdict.reason) == TODAY[flag], (flag, verdict)
