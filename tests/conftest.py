"""Shared fixtures: a tiny mixed-precision model carried through export and lowering once
per session, so each boundary test compares real artifacts without retraining."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Shared 2-core machines: time limits per example would only measure the neighbours.
settings.register_profile("flipq", deadline=None, max_examples=40)
settings.load_profile("flipq")

warnings.filterwarnings("ignore", message="fast_hadamard_transform")

TINY_ARCH = (("conv", 4, 3, 1), ("pool", 2), ("fc", 16), ("fc", None))


@dataclass
class TinyChain:
    folder: Path
    model: object  # QuantNet
    plan: object  # BitPlan
    x: np.ndarray  # float inputs, NCHW
    y: np.ndarray
    onnx_path: Path
    prepared: object  # ModelWrapper
    intmodel: object  # IntModel


def make_tiny_chain(folder: Path, plan_bits=((5, 8), (3, 4), (6, 2)), epochs: int = 2,
                    arch=TINY_ARCH) -> TinyChain:
    import torch

    from flipq.hls.lower import lower_qonnx
    from flipq.hls.prepare import load_qonnx, prepare_qonnx
    from flipq.host.bitplan import BitPlan, LayerBits
    from flipq.quant.data import load_dataset
    from flipq.quant.export import export_model
    from flipq.quant.models import QuantNet, mac_names
    from flipq.quant.train import TrainConfig, train

    torch.manual_seed(0)
    ds = load_dataset("digits", limit_train=600)
    plan = BitPlan(tuple(LayerBits(n, w, a) for n, (w, a) in zip(mac_names(arch), plan_bits)))
    model = QuantNet(arch, ds.input_shape, plan, ds.num_classes)
    train(model, ds, TrainConfig(epochs=epochs, lr=1e-2, progress=False))
    folder.mkdir(parents=True, exist_ok=True)
    path = export_model(model, ds.input_shape, folder / "model.onnx", plan)
    prepared = prepare_qonnx(load_qonnx(path))
    x, y = ds.x_test[:120], ds.y_test[:120]
    return TinyChain(folder, model, plan, x, y, path, prepared, lower_qonnx(prepared, plan))


@pytest.fixture(scope="session")
def tiny_chain(tmp_path_factory) -> TinyChain:
    return make_tiny_chain(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_stock_build(tiny_chain, tmp_path_factory):
    from flipq.hls.stock import build_stock

    return build_stock(tiny_chain.prepared, tiny_chain.intmodel, tmp_path_factory.mktemp("stock"))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """`flipq demo` run once through the real command line: (folder, stdout)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("demo")
    r = subprocess.run([sys.executable, "-m", "flipq", "demo", "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout
