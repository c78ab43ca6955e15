"""What flipq adds to the project hls4ml writes: the run-time ``planes`` argument on the top
function, and the C-ABI bridge (``flipq_bridge.cpp``) that ``flipq.host.csim`` loads.

hls4ml writes the top function itself; flipq patches its signature (hls4ml has no hook for
an extra scalar port) and renders the bridge from ``templates/flipq_bridge*.tpl``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import numpy as np

TEMPLATES = Path(__file__).parent / "templates"
ABI_VERSION = 2
MAX_PLANES = 8
PLANES_ARG = "planes"


class BitSerialError(ValueError):
    """A model or setting the bit-serial kernels cannot take; names the layer and value."""


def render(template: str, **values) -> str:
    """``templates/<template>`` with its ``${name}`` placeholders filled (all of them, or KeyError)."""
    return string.Template((TEMPLATES / template).read_text()).substitute(values)


def add_planes_argument(project_dir: Path, project: str) -> None:
    """``ap_uint<4> planes`` as the last argument of the top function (source and header), and
    the full-precision value in hls4ml's own bridge so its ``predict()`` keeps working."""
    cpp = project_dir / "firmware" / f"{project}.cpp"
    hdr = project_dir / "firmware" / f"{project}.h"
    arg = f"    ap_uint<4> {PLANES_ARG}"
    for path, closing in ((cpp, ") {"), (hdr, ");")):
        text = path.read_text()
        head = f"void {project}(\n"
        start = text.find(head)
        end = text.find("\n" + closing, start)
        if start < 0 or end < 0:
            raise BitSerialError(f"{path}: top function '{project}' not found where hls4ml writes it")
        if f"{PLANES_ARG}\n{closing}" in text[start:end + len(closing) + 1]:
            continue  # already there (the writer pass may run again)
        text = text[:end] + ",\n" + arg + text[end:]
        if path is cpp:
            marker = "// hls-fpga-machine-learning insert IO\n"
            # the register changes between batches only: stable for the whole invocation
            text = text.replace(marker, marker + f"    #pragma HLS INTERFACE ap_stable port={PLANES_ARG}\n", 1)
        path.write_text(text)
    bridge = project_dir / f"{project}_bridge.cpp"
    if bridge.exists():
        text = bridge.read_text()
        text = re.sub(rf"(\b{project}\([^;]*?)\);", rf"\1, {MAX_PLANES});", text)
        bridge.write_text(text)


def _raw_type(precision) -> str:
    return f"ap_{'int' if precision.signed else 'uint'}<{precision.width}>"


def write_bridge(model, project_dir: Path, project: str, input_exp: int, output_exp: int) -> Path:
    """``flipq_bridge.cpp``: integers on the model's input grid in, output accumulators out.

    ``model`` is the hls4ml ModelGraph; its input/output types may be finer than the integer
    model's grids (``input_exp``/``output_exp``), never coarser.
    """
    (inp,), (outp,) = model.get_input_variables(), model.get_output_variables()
    io_type = model.config.get_config_value("IOType")
    ip, op = inp.type.precision, outp.type.precision
    in_shift = input_exp + (ip.width - ip.integer)
    out_shift = output_exp + (op.width - op.integer)
    if in_shift < 0 or out_shift < 0:
        raise BitSerialError(f"model input type {ip} / output type {op} is coarser than the integer "
                             f"model's grid (2^{input_exp} / 2^{output_exp})")
    n_in, n_out = int(np.prod(inp.shape)), int(np.prod(outp.shape))
    run_one = render(f"flipq_bridge_{io_type}.tpl", project=project, in_t=inp.type.name, out_t=outp.type.name,
                     n_in=n_in, n_out=n_out, in_shift=in_shift, out_shift=out_shift, out_raw_t=_raw_type(op))
    text = render("flipq_bridge.cpp.tpl", project=project, n_in=n_in, n_out=n_out, abi=ABI_VERSION,
                  max_planes=MAX_PLANES, run_one=run_one)
    path = project_dir / "flipq_bridge.cpp"
    path.write_text(text)
    return path

