"""The MLPerf Tiny reference networks of flipq.quant.mlperf (issue 22): each exports with
``export_qonnx`` and lowers to an integer model equal to Brevitas on random rows (within the
output bound where a global average pool divides by a non-power of two); ResNet-8 -- residual
adds, projections, a global pool -- also through the C-sim at every planes. The whole pipeline
(hls, overlay, the pynq driver on the simulated device) is benchmarks/mlperf_tiny.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

torch = pytest.importorskip("torch")

from fuzz_models import torch_outputs  # noqa: E402


@pytest.mark.parametrize("name, bits, constructs", [
    ("resnet8", 4, {"add": 3}),
    ("ds_cnn", 3, {"grouped": 4}),
    ("mobilenet_v1", 2, {"grouped": 13}),
    ("ad_autoencoder", 4, {"dense": 10}),
])
def test_mlperf_tiny_networks_lower_exactly(name, bits, constructs, tmp_path):
    from brevitas.export import export_qonnx

    from flipq.hls.prepare import load_qonnx
    from flipq.hls.verify import verify_model
    from flipq.quant.mlperf import MODELS, build

    # the image networks on 16x16 (every block, the global pool; the benchmark runs their own sizes)
    shape = (3, 16, 16) if name in ("mobilenet_v1", "resnet8") else MODELS[name][0]
    net = build(name, bits, bits, seed=1, input_shape=shape)
    export_qonnx(net, input_t=torch.randn(1, *shape), export_path=str(tmp_path / "m.onnx"))
    raw = load_qonnx(tmp_path / "m.onnx")
    # the constructs in the export (lowering them is verify's: preparing a 57-layer graph twice
    # is most of this test's time)
    inits = {i.name for i in raw.graph.initializer}
    nodes = raw.graph.node
    counts = {"add": sum(n.op_type == "Add" and not inits & set(n.input) for n in nodes),
              "grouped": sum(n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
                             for n in nodes),
              "dense": sum(n.op_type in ("MatMul", "Gemm") for n in nodes)}
    assert {k: counts[k] for k in constructs} == constructs
    csim = name == "resnet8"
    # QONNX execution is the slow stage on the larger maps: a few rows of it, more of the rest
    verdict = verify_model(raw, tmp_path / "work", rows=8, qonnx_rows=8 if name == "resnet8" else 2,
                           io_type="io_stream", csim=csim, reference=lambda im, q: torch_outputs(net, im, q))
    assert verdict.status == "exact", (verdict.reason, verdict.message, verdict.first_bad)
    assert any(k.startswith("torch=emulator") for k in verdict.stages)
    if csim:
        assert sum(k.startswith("csim=emulator") for k in verdict.stages) == bits


def test_an_unknown_model_is_refused_naming_the_known_ones():
    from flipq.quant.mlperf import build

    with pytest.raises(ValueError, match="unknown MLPerf Tiny model 'resnet9' .known: resnet8, mobilenet_v1"):
        build("resnet9")
