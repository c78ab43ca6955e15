"""Prepare a Brevitas-exported QONNX model for lowering and hls4ml.

The recipe that keeps the chain exact (seen on qonnx 1.0.0): cleanup -> channels-last
(input included) -> Gemm to MatMul -> cleanup.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
from qonnx.transformation.gemm_to_matmul import GemmToMatMul
from qonnx.util.cleanup import cleanup_model

from flipq.hls.transforms import GemmWithoutBiasToMatMul


class ModelFileError(ValueError):
    """A model file that is missing or not a readable ONNX model; names the file."""


def load_qonnx(path: str | Path) -> ModelWrapper:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX model file not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    if not proto.graph.node:
        raise ModelFileError(f"{path}: the ONNX graph has no nodes")
    return ModelWrapper(proto)


def prepare_qonnx(model: ModelWrapper) -> ModelWrapper:
    model = cleanup_model(model)
    model = model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
    model = model.transform(GemmWithoutBiasToMatMul())
    model = model.transform(GemmToMatMul())
    return cleanup_model(model)
