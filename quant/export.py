"""QONNX export of a trained Brevitas model, checked against the Brevitas forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flipq.host.bitplan import BitPlan
from flipq.host.files import replacing


def export_model(model: torch.nn.Module, input_shape, path: str | Path, plan: BitPlan | None = None) -> Path:
    """Export ``model`` as QONNX (as Brevitas exports it) and attach the BitPlan as metadata."""
    import contextlib
    import io
    import logging

    import onnx
    from brevitas.export import export_qonnx

    path = Path(path)
    model.eval()
    example = torch.zeros((1, *input_shape), dtype=torch.float32)
    # torch.onnx narrates each export step on stdout and warns about torchvision ops it
    # cannot register; neither concerns a QONNX export.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with replacing(path) as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            export_qonnx(model, example, export_path=str(tmp))
        if plan is not None:
            proto = onnx.load(str(tmp))
            entry = proto.metadata_props.add()
            entry.key, entry.value = "flipq.bitplan", plan.to_toml()
            onnx.save(proto, str(tmp))
    return path


def plan_from_onnx(model, source: str = "model.onnx") -> BitPlan | None:
    """The BitPlan stored in an exported model's metadata, if any. It is data from the file: its
    layer names pass :mod:`flipq.host.names` before anything else sees them, and a plan that is
    not TOML is one line naming ``source`` and the field."""
    import tomllib

    from flipq.host.bitplan import BitPlanError

    where = f"{source} metadata 'flipq.bitplan'"
    for entry in model.model.metadata_props:
        if entry.key == "flipq.bitplan":
            try:
                data = tomllib.loads(entry.value)
            except ValueError as e:
                raise BitPlanError(f"{where}: not a readable BitPlan ({e})") from None
            return BitPlan.from_dict(data, source=where)
    return None


def execute_qonnx(model, x_nhwc: np.ndarray, progress: bool = False) -> np.ndarray:
    """Run a prepared (channels-last) QONNX model row by row with qonnx's executor."""
    import onnxruntime as ort
    import qonnx.core.onnx_exec as oxe
    from tqdm.auto import tqdm

    ort.set_default_logger_severity(3)  # qonnx runs opset-1 subgraphs per node; ORT warns each time
    iname = model.graph.input[0].name
    oname = model.graph.output[0].name
    rows = [oxe.execute_onnx(model, {iname: x_nhwc[i:i + 1].astype(np.float32)})[oname]
            for i in tqdm(range(len(x_nhwc)), desc="QONNX check", unit="row", disable=not progress,
                         leave=False)]
    return np.concatenate(rows).astype(np.float64)
