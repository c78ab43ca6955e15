"""`flipq verify MODEL.onnx`: QONNX = emulator = C-sim on a user's model, with exit codes 0
(all equal), 1 (mismatch, first differing layer named) and 2 (refusal, one line)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_models import export_spec  # noqa: E402

from flipq.cli import main  # noqa: E402
from flipq.hls import verify  # noqa: E402
from flipq.hls.lower import UnsupportedNodeError  # noqa: E402

LINEAR = {"kind": "linear", "wbits": 4, "wscale": "pow2", "bias": "none", "bn": False}
SPEC = {"form": "dense", "seed": 5, "io_type": "io_parallel", "group_size": 0, "pe": 1, "in_shape": [8],
        "input": {"kind": "input", "q": "identity", "bits": 4, "signed": False, "narrow": False, "scale": "pow2"},
        "layers": [dict(LINEAR, out=6),
                   {"kind": "act", "q": "relu", "bits": 3, "signed": False, "narrow": False, "scale": "pow2"},
                   dict(LINEAR, out=3, wbits=3)]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    export_spec(SPEC, root / "ok")
    # a BatchNorm'ed layer feeding the next with no quantizer between: no integer datapath for it
    bn = dict(SPEC, layers=[dict(SPEC["layers"][0], bn=True), SPEC["layers"][2]])
    export_spec(bn, root / "bn")
    return {"ok": root / "ok" / "model.onnx", "bn": root / "bn" / "model.onnx", "root": root}


def test_exact_model_exits_0_with_every_stage_pair(models, capsys):
    x = np.random.default_rng(0).uniform(-1, 3, size=(5, 8)).astype(np.float32)
    np.save(models["root"] / "x.npy", x)
    rc = main(["verify", str(models["ok"]), "--rows", "12", "--input", str(models["root"] / "x.npy")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "12 random rows" in out and "+ 5 rows of the given inputs" in out
    assert re.search(r"qonnx=emulator +17/17 rows equal", out)
    assert all(f"csim=emulator planes={k} " in out for k in (1, 2, 3, 4))
    assert all(re.search(rf"csim cycles=model planes={k} +1/1 rows equal", out) for k in (1, 2, 3, 4))
    assert "exact: every stage pair agrees" in out


def test_refused_model_exits_2_with_one_line_naming_node_and_op(models, capsys):
    rc = main(["verify", str(models["bn"])])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("flipq: error: node '")
    assert "(op type Gemm)" in err and "before any quantizer" in err and "Traceback" not in err


def test_missing_file_bad_inputs_and_bad_rows(models, capsys):
    assert main(["verify", str(models["root"] / "nope.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    np.save(models["root"] / "wrong.npy", np.zeros((3, 7), dtype=np.float32))
    assert main(["verify", str(models["ok"]), "--input", str(models["root"] / "wrong.npy")]) == 2
    err = capsys.readouterr().err
    assert "--input has shape (3, 7); the model takes (rows, 8)" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        main(["verify", str(models["ok"]), "--rows", "0"])
    assert e.value.code == 2


def test_corrupted_layer_exits_1_naming_it(models, capsys, monkeypatch):
    """A wrong weight in the integer model's last layer: the emulator and the C-sim (built from
    it) agree with each other, QONNX execution disagrees, and the layer is named."""
    lower = verify.lower_model

    def corrupted(raw, pe=1, group_size=0):
        intmodel, prepared, plan = lower(raw, pe, group_size)
        last = intmodel.mac_layers[-1]
        last.weight = last.weight.copy()
        last.weight[:, 0] = np.where(last.weight[:, 0] == 0, 1, 0)  # in range for any width
        from flipq.hls.hwplan import plan_hardware

        return intmodel, prepared, plan_hardware(intmodel, None, group_size)

    monkeypatch.setattr(verify, "lower_model", corrupted)
    rc = main(["verify", str(models["ok"]), "--rows", "8"])
    out = capsys.readouterr().out
    assert rc == 1, out
    last = "MatMul_1"
    assert "mismatch: qonnx=emulator first differ on row " in out
    assert f"first differing layer: {last} (dense, ONNX node '{last}')" in out
    assert re.search(r"csim=emulator planes=3 +8/8 rows equal", out)


def test_broken_csim_is_a_mismatch_between_csim_and_emulator(models, tmp_path):
    from flipq.hls.prepare import load_qonnx
    from flipq.host.csim import CsimBackend

    class OffByOne(CsimBackend):
        def run(self, q, planes):
            out = super().run(q, planes)
            out[-1, 0] += 1
            return out

    v = verify.verify_model(load_qonnx(models["ok"]), tmp_path, rows=6, qonnx_rows=2,
                            csim_backend=lambda b: OffByOne(b.lib_path, b.meta))
    assert v.status == "mismatch" and v.first_bad["pair"] == "csim=emulator"
    assert v.first_bad["planes"] == 1 and v.first_bad["row"] == 5 and v.first_bad["layer"] is None
    assert v.stages["csim=emulator planes=1"] == [5, 6]
    assert "the C-sim differs" in verify.format_verdict(v)


def test_refusal_reasons_and_what_counts_as_a_refusal():
    assert verify.refusal_reason(UnsupportedNodeError(
        "node 'n' (op type AveragePool) cannot be mapped to flipq's integer datapath")) == "AvgPool"
    assert verify.refusal_reason(UnsupportedNodeError("node 'n' (op type Sub) cannot be mapped")) == "op Sub"
    assert verify.refusal_reason(ValueError("odd 12 thing 'x'")) == "ValueError: odd _ thing _"
    assert verify.is_flipq_refusal(UnsupportedNodeError("one line"))
    assert not verify.is_flipq_refusal(UnsupportedNodeError("two\nlines"))
    assert not verify.is_flipq_refusal(ValueError("numpy's, not flipq's"))
    assert not verify.is_flipq_refusal(RuntimeError("a failure"))


def test_batchnorm_float_scales_and_an_output_affine_verify_exactly(tmp_path, capsys):
    """The vocabulary once refused: per-channel and float scales, a float and an Int8 bias,
    BatchNorm before a signed float-scaled quantizer (thresholds) and at the output (affine)."""
    spec = dict(SPEC, seed=9, input=dict(SPEC["input"], scale="float", narrow=True), layers=[
        dict(LINEAR, out=6, wscale="per_channel", bias="float", bn=True),
        {"kind": "act", "q": "identity", "bits": 3, "signed": True, "narrow": False, "scale": "float"},
        dict(LINEAR, out=3, wbits=3, wscale="float", bias="int8", bn=True)])
    export_spec(spec, tmp_path / "m")
    rc = main(["verify", str(tmp_path / "m" / "model.onnx"), "--rows", "24"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"qonnx=emulator \(output within bound\) +(\d+)/\1 rows agree", out)
    assert "the float output affine within its bound" in out
    assert all(f"csim=emulator planes={k} " in out for k in (1, 2, 3, 4))
