"""hls4ml with its stock (bit-parallel) kernels: the reference accelerator of the spine.

The input layer's type is set to the input quantizer's exact fixed-point type; the host
quantizes inputs first (see ANCHORS: a float input cast to hls4ml's default ``fixed<16,6>``
truncates before the model's own quantizer runs).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flipq.hls.cxx import CompileError
from flipq.host.intmodel import IntModel


@dataclass
class StockBuild:
    hls_model: object  # hls4ml ModelGraph
    project_dir: Path
    seconds_compile: float


def build_stock(prepared, intmodel: IntModel, out_dir: str | Path, io_type: str = "io_parallel",
                backend: str = "Vitis", part: str = "xc7z020clg400-1") -> StockBuild:
    """Convert a prepared QONNX model with hls4ml and compile its C simulation."""
    import time

    import hls4ml

    from flipq.hls.hls4ml_pools import check_stream_pools, split_maxpool_padding

    check_stream_pools(intmodel, io_type)
    prepared = split_maxpool_padding(prepared)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):  # hls4ml prints its topology walk; keep it in a log
            cfg = hls4ml.utils.config.config_from_onnx_model(
                prepared, granularity="name", backend=backend, default_precision="fixed<16,6>")
            inp = cfg["LayerName"].setdefault(prepared.graph.input[0].name, {})
            inp.setdefault("Precision", {})["result"] = intmodel.input_quant.fixed_type()
            hls_model = hls4ml.converters.convert_from_onnx_model(
                prepared, output_dir=str(out_dir), io_type=io_type, backend=backend,
                hls_config=cfg, part=part)
            t0 = time.perf_counter()
            try:
                hls_model.compile()
            except Exception as e:  # hls4ml raises a bare Exception and prints g++'s output
                raise CompileError(f"hls4ml's stock C-sim in {out_dir} did not compile ({e}; g++ output in "
                                   f"{out_dir / 'hls4ml.log'})\n{log.getvalue()[-4000:]}") from e
            seconds = time.perf_counter() - t0
    finally:
        (out_dir / "hls4ml.log").write_text(log.getvalue())
    return StockBuild(hls_model, out_dir, seconds)


def predict_stock(build: StockBuild, intmodel: IntModel, q_nhwc: np.ndarray) -> np.ndarray:
    """C-sim outputs for integer NHWC inputs; real-valued, like the QONNX graph's output."""
    x = (q_nhwc.astype(np.float64) * 2.0 ** intmodel.input_quant.exp).astype(np.float32)
    out = build.hls_model.predict(np.ascontiguousarray(x))
    return np.asarray(out, dtype=np.float64).reshape(len(q_nhwc), -1)
