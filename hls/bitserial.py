"""Bit-serial Dense/Conv2D kernels for hls4ml, and the C-sim library around them.

``build_bitserial`` converts a prepared QONNX model with hls4ml (Vitis backend), swaps every
Dense and Conv2D for a bit-serial layer whose weights are the IntModel's integer weights as
two's-complement bit-planes (``flipq.hls.planes``), adds the run-time ``planes`` argument to
the top function, and compiles a C-ABI library ``flipq_run`` that ``flipq.host.csim`` loads
with ctypes.

    >>> build = build_bitserial(intmodel, prepared, Path("build/demo/hls"))   # doctest: +SKIP
    >>> CsimBackend(build.lib_path, build.meta).run(q, planes=3)              # doctest: +SKIP

hls4ml extension points used (all explicit, in :func:`register_bitserial`): two layer classes
(``register_layer``), one graph pass appended to ``vivado:optimize`` that replaces the layers
(it only acts on models whose HLS ``Model`` config carries a ``FlipqBitSerial`` entry, so stock hls4ml
conversions in the same process are untouched), config/function templates, the kernel headers
as custom source, and one pass appended to ``vitis:write`` for the top-level ``planes``
argument and the C-ABI bridge.
"""

from __future__ import annotations

import json
import re
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

import hls4ml
import numpy as np
from hls4ml.backends import get_backend
from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
from hls4ml.model import layers as hl
from hls4ml.model.flow import get_flow, update_flow
from hls4ml.model.optimizer.optimizer import ModelOptimizerPass, OptimizerPass, optimizer_map
from hls4ml.model.types import FixedPrecisionType

from flipq.hls.cxx import CompileError, ap_types, build_shared_library
from flipq.host.intmodel import IntModel
from flipq.hls.planes import PackedLayer, check_group_bits, input_ranges, pack_layer

TEMPLATES = Path(__file__).parent / "templates"
KERNEL_HEADERS = ("flipq_bitserial_pe.h", "flipq_bitserial_dense.h", "flipq_bitserial_conv2d.h")
ABI_VERSION = 1
MAX_PLANES = 8
SPEC_KEY = "FlipqBitSerial"
PASS_NAME = "flipq_bitserial"
WRITE_PASS_NAME = "flipq_write_bitserial"
PLANES_ARG = "planes"


class BitSerialError(ValueError):
    """A model or setting the bit-serial kernels cannot take; names the layer and value."""


# ---------------------------------------------------------------------------------------
# What the build knows per MAC layer
# ---------------------------------------------------------------------------------------
@dataclass
class BitSerialLayer:
    name: str  # the IntModel / BitPlan name
    onnx_node: str
    kernel: str  # "dense" | "conv"
    fan_in: int
    n_out: int
    weight_bits: int
    group_size: int
    n_groups: int
    n_pe: int
    exp_in: int
    w_exp: int
    act_max: int  # largest |integer| the layer's input can hold
    hls_name: str | None = None
    packed: PackedLayer | None = field(default=None, repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "name", "onnx_node", "kernel", "fan_in", "n_out", "weight_bits", "group_size", "n_groups",
            "n_pe", "exp_in", "w_exp", "act_max", "hls_name")}


@dataclass
class BitSerialBuild:
    lib_path: Path
    project_dir: Path
    io_type: str
    layers: list[BitSerialLayer]
    meta: dict
    compile_seconds: float
    convert_seconds: float


def plan_layers(intmodel: IntModel, pe: dict | None = None, group_size: int = 0) -> list[BitSerialLayer]:
    """Pack every MAC layer's weights; group size from the BitPlan where it gives one."""
    pe = dict(pe or {})
    names = [layer.name for layer in intmodel.mac_layers]
    unknown = sorted(set(pe) - set(names))
    if unknown:
        raise BitSerialError(f"pe names layer '{unknown[0]}', which the model does not have "
                             f"(layers: {', '.join(names)})")
    ranges = input_ranges(intmodel)
    layers = []
    for layer in intmodel.mac_layers:
        a = layer.attrs
        bits = int(a["weight_bits"])
        gs = int(a.get("group_size", 0) or group_size)
        if gs < 0:
            raise BitSerialError(f"layer '{layer.name}': group_size={gs} must be >= 0")
        packed = pack_layer(layer.weight, bits, gs, layer.name)
        if a.get("group_bits") is not None:
            check_group_bits(packed, a["group_bits"], layer.name)
        n_pe = pe.get(layer.name, 1)
        if not isinstance(n_pe, int) or isinstance(n_pe, bool) or not 1 <= n_pe <= packed.n_out:
            raise BitSerialError(f"layer '{layer.name}': pe={n_pe!r} must be an int in 1..{packed.n_out} "
                                 "(output columns)")
        exp_in, lo, hi = ranges[layer.name]
        amax = max(abs(lo), abs(hi))
        layers.append(BitSerialLayer(
            name=layer.name, onnx_node=a.get("onnx_node", layer.name), kernel=layer.op,
            fan_in=packed.fan_in, n_out=packed.n_out, weight_bits=bits, group_size=packed.group_size,
            n_groups=packed.n_groups, n_pe=n_pe, exp_in=exp_in, w_exp=int(a["w_exp"]), act_max=amax,
            packed=packed, bias=None if layer.bias is None else np.asarray(layer.bias, dtype=np.int64)))
    return layers


# ---------------------------------------------------------------------------------------
# hls4ml side: layer classes, the replacing pass, templates, the writer pass
# ---------------------------------------------------------------------------------------
def _spec_of(model) -> dict | None:
    hls_config = model.config.config.get("HLSConfig", {}) or {}
    entry = (hls_config.get("Model") or {}).get(SPEC_KEY)
    if not entry:
        return None
    return json.loads(Path(entry["spec"]).read_text())


def _match_spec(spec: dict, node_name: str) -> dict | None:
    for entry in spec["layers"]:
        onnx = entry["onnx_node"]
        if node_name == onnx or node_name.endswith("_" + onnx):
            return entry
    return None


def _signed_width(bound: int) -> int:
    return max(int(bound).bit_length() + 1, 2)


_CONV_GEOMETRY = ("in_height", "in_width", "n_chan", "filt_height", "filt_width", "stride_height",
                  "stride_width", "pad_top", "pad_left", "out_height", "out_width")


class BitSerialDense(hl.Layer):
    """A Dense whose weights live as bit-planes in its config (no hls4ml weight variables)."""

    _expected_attributes = [hl.Attribute("n_in"), hl.Attribute("n_out")]

    def initialize(self):
        self.add_output_variable([self.attributes["n_out"]], precision=self.attributes["flipq_result_precision"])


class BitSerialConv2D(hl.Layer):
    """A channels-last Conv2D on bit-planes; geometry copied from the hls4ml Conv2D it replaces."""

    _expected_attributes = [hl.Attribute("n_in"), hl.Attribute("n_out")]

    def initialize(self):
        a = self.attributes
        self.add_output_variable([a["out_height"], a["out_width"], a["n_out"]],
                                 precision=a["flipq_result_precision"])


class ReplaceWithBitSerial(OptimizerPass):
    """Dense/Conv2D of a flipq build -> BitSerialDense/BitSerialConv2D with packed planes.

    Runs after ``infer_precision_types``: the layers around keep hls4ml's types, ours get an
    exact accumulator type on the grid of the input type hls4ml chose.
    """

    def match(self, node):
        if not isinstance(node, (hl.Dense, hl.Conv2D)):
            return False
        spec = _spec_of(node.model)
        return spec is not None and _match_spec(spec, node.name) is not None

    def transform(self, model, node):
        spec = _spec_of(model)
        entry = _match_spec(spec, node.name)
        with np.load(spec["arrays"]) as arrays:
            words, mask = arrays[entry["name"] + "/words"], arrays[entry["name"] + "/mask"]
            bias = arrays[entry["name"] + "/bias"]
        in_prec = node.get_input_variable().type.precision
        frac_in = in_prec.width - in_prec.integer
        shift = entry["exp_in"] + frac_in  # raw input integer = q * 2**shift
        if shift < 0:
            raise BitSerialError(
                f"layer '{entry['name']}': hls4ml feeds it {in_prec} (2^-{frac_in} grid), coarser than "
                f"its input's 2^{entry['exp_in']} grid; the chain would not be exact")
        raw_max = entry["act_max"] << shift
        bias_raw = [int(b) << shift for b in bias]
        k, bits = entry["fan_in"], entry["weight_bits"]
        acc_bound = k * raw_max * 2 ** (bits - 1) + max((abs(b) for b in bias_raw), default=0)
        acc_w = _signed_width(acc_bound)
        frac_out = frac_in - entry["w_exp"]
        lanes = min(entry["group_size"], k)
        attrs = {
            "n_in": k, "n_out": entry["n_out"],
            "flipq_result_precision": FixedPrecisionType(acc_w, acc_w - frac_out, signed=True),
            "flipq": dict(entry, acc_width=acc_w, act_width=in_prec.width, act_signed=bool(in_prec.signed),
                          psum_width=in_prec.width + 1 + int(lanes).bit_length()),
            "flipq_words": words, "flipq_mask": mask, "flipq_bias": bias_raw,
        }
        if isinstance(node, hl.Conv2D):
            kh, kw, cin = node.get_attr("filt_height"), node.get_attr("filt_width"), node.get_attr("n_chan")
            if kh * kw * cin != k:
                raise BitSerialError(f"layer '{entry['name']}': hls4ml sees a {kh}x{kw}x{cin} kernel, "
                                     f"the integer model a fan-in of {k}")
            attrs.update({key: node.get_attr(key) for key in _CONV_GEOMETRY})
            cls = BitSerialConv2D
        else:
            if node.get_attr("n_in") != k:
                raise BitSerialError(f"layer '{entry['name']}': hls4ml sees n_in={node.get_attr('n_in')}, "
                                     f"the integer model {k}")
            cls = BitSerialDense
        new = model.make_node(cls, node.name, attrs, list(node.inputs), list(node.outputs))
        model.replace_node(node, new)
        return True


def _c_words(words: np.ndarray) -> str:
    return ",".join(f"0x{int(v):x}ULL" for v in words.reshape(-1))


def _config_params(node) -> dict:
    f = node.get_attr("flipq")
    words, mask = node.get_attr("flipq_words"), node.get_attr("flipq_mask")
    params = {
        "index": node.index, "layer": f["name"], "n_in": f["fan_in"], "n_out": f["n_out"],
        "group_size": f["group_size"], "n_groups": words.shape[1], "n_words": words.shape[3],
        "n_planes": f["weight_bits"], "sign_plane": f["weight_bits"] - 1, "n_pe": f["n_pe"],
        "act_raw_t": f"ap_{'int' if f['act_signed'] else 'uint'}<{f['act_width']}>",
        "psum_t": f"ap_int<{f['psum_width']}>", "accum_t": f"ap_int<{f['acc_width']}>",
        "n_words_total": words.size, "words": _c_words(words), "n_mask": mask.size,
        "mask": ",".join(str(int(v)) for v in mask.reshape(-1)),
        "bias": ",".join(str(int(b)) for b in node.get_attr("flipq_bias")),
        "base": "flipq::bitserial_config", "geometry": "",
    }
    if node.class_name == "BitSerialConv2D":
        params["base"] = "flipq::bitserial_conv2d_config"
        params["geometry"] = "\n".join(f"    static const unsigned {key} = {node.get_attr(key)};"
                                       for key in _CONV_GEOMETRY)
    return params


class _BitSerialConfig(LayerConfigTemplate):
    def format(self, node):
        text = string.Template((TEMPLATES / "flipq_bitserial_config.tpl").read_text())
        return text.substitute(_config_params(node))


class _BitSerialCall(FunctionCallTemplate):
    function = ""

    def format(self, node):
        p = self._default_function_params(node)
        return (f"flipq::{self.function}<{p['input_t']}, {p['output_t']}, {p['config']}>"
                f"({p['input']}, {p['output']}, fq_planes{node.index}, fq_mask{node.index}, "
                f"fq_bias{node.index}, {PLANES_ARG});")


class BitSerialDenseConfigTemplate(_BitSerialConfig):
    def __init__(self):
        super().__init__(BitSerialDense)


class BitSerialConv2DConfigTemplate(_BitSerialConfig):
    def __init__(self):
        super().__init__(BitSerialConv2D)


class BitSerialDenseFunctionTemplate(_BitSerialCall):
    function = "bitserial_dense"

    def __init__(self):
        super().__init__(BitSerialDense, include_header=["nnet_utils/flipq_bitserial_dense.h"])


class BitSerialConv2DFunctionTemplate(_BitSerialCall):
    function = "bitserial_conv2d"

    def __init__(self):
        super().__init__(BitSerialConv2D, include_header=["nnet_utils/flipq_bitserial_conv2d.h"])


TEMPLATE_CLASSES = (BitSerialDenseConfigTemplate, BitSerialConv2DConfigTemplate, BitSerialDenseFunctionTemplate,
                    BitSerialConv2DFunctionTemplate)
LAYER_CLASSES = {"BitSerialDense": BitSerialDense, "BitSerialConv2D": BitSerialConv2D}


def _write_pass(model) -> bool:
    """After hls4ml's writer: ``planes`` on the top function, and the C-ABI bridge."""
    if not any(layer.class_name.startswith("BitSerial") for layer in model.get_layers()):
        return False
    out = Path(model.config.get_output_dir())
    project = model.config.get_project_name()
    add_planes_argument(out, project)
    write_bridge(model, out, project)
    return False


def add_planes_argument(project_dir: Path, project: str) -> None:
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
    if bridge.exists():  # hls4ml's own predict() keeps working, at full precision
        text = bridge.read_text()
        text = re.sub(rf"(\b{project}\([^;]*?)\);", rf"\1, {MAX_PLANES});", text)
        bridge.write_text(text)


def _raw_type(precision) -> str:
    return f"ap_{'int' if precision.signed else 'uint'}<{precision.width}>"


def write_bridge(model, project_dir: Path, project: str) -> Path:
    spec = _spec_of(model)
    (inp,), (outp,) = model.get_input_variables(), model.get_output_variables()
    io_type = model.config.get_config_value("IOType")
    ip, op = inp.type.precision, outp.type.precision
    in_shift = spec["input_exp"] + (ip.width - ip.integer)
    out_shift = spec["output_exp"] + (op.width - op.integer)
    if in_shift < 0 or out_shift < 0:
        raise BitSerialError(f"model input type {ip} / output type {op} is coarser than the integer "
                             f"model's grid (2^{spec['input_exp']} / 2^{spec['output_exp']})")
    n_in, n_out = int(np.prod(inp.shape)), int(np.prod(outp.shape))
    if io_type == "io_stream":
        load = (f"    hls::stream<{inp.type.name}> in_s(\"flipq_in\");\n"
                f"    for (int b = 0; b < {n_in} / {inp.type.name}::size; b++) {{\n"
                f"        {inp.type.name} beat;\n"
                f"        for (int j = 0; j < {inp.type.name}::size; j++)\n"
                f"            beat[j].range() = (long long)(x[b * {inp.type.name}::size + j] << {in_shift});\n"
                f"        in_s.write(beat);\n    }}\n"
                f"    hls::stream<{outp.type.name}> out_s(\"flipq_out\");\n"
                f"    {project}(in_s, out_s, (ap_uint<4>)planes);\n"
                f"    for (int b = 0; b < {n_out} / {outp.type.name}::size; b++) {{\n"
                f"        {outp.type.name} beat = out_s.read();\n"
                f"        for (int j = 0; j < {outp.type.name}::size; j++) {{\n"
                f"            {_raw_type(op)} r = beat[j].range();\n"
                f"            y[b * {outp.type.name}::size + j] = (int64_t)r.to_int64() >> {out_shift};\n"
                f"        }}\n    }}\n")
    else:
        load = (f"    {inp.type.name} in_a[{n_in}];\n"
                f"    for (int i = 0; i < {n_in}; i++) in_a[i].range() = (long long)(x[i] << {in_shift});\n"
                f"    {outp.type.name} out_a[{n_out}];\n"
                f"    {project}(in_a, out_a, (ap_uint<4>)planes);\n"
                f"    for (int i = 0; i < {n_out}; i++) {{\n"
                f"        {_raw_type(op)} r = out_a[i].range();\n"
                f"        y[i] = (int64_t)r.to_int64() >> {out_shift};\n    }}\n")
    text = string.Template((TEMPLATES / "flipq_bridge.cpp.tpl").read_text()).substitute(
        project=project, n_in=n_in, n_out=n_out, abi=ABI_VERSION, max_planes=MAX_PLANES, run_one=load)
    path = project_dir / "flipq_bridge.cpp"
    path.write_text(text)
    return path


def register_bitserial() -> None:
    """Register flipq's layers, passes, templates and headers with hls4ml's Vitis backend.

    Idempotent: hls4ml's registries are process-global and refuse duplicates, so every
    item is checked before it is added.
    """
    for name, cls in LAYER_CLASSES.items():
        if hl.layer_map.get(name) is not cls:
            hl.register_layer(name, cls)
    backend = get_backend("Vitis")
    if f"vitis:{PASS_NAME}" not in optimizer_map:
        backend.register_pass(PASS_NAME, ReplaceWithBitSerial)
    if f"vitis:{PASS_NAME}" not in get_flow("vivado:optimize").optimizers:
        update_flow("vivado:optimize", add_optimizers=[f"vitis:{PASS_NAME}"])
    for template in TEMPLATE_CLASSES:
        if f"vitis:{template().get_name()}" not in optimizer_map:
            backend.register_template(template)
    if f"vitis:{WRITE_PASS_NAME}" not in optimizer_map:
        backend.register_pass(WRITE_PASS_NAME, ModelOptimizerPass(WRITE_PASS_NAME, _write_pass))
    if f"vitis:{WRITE_PASS_NAME}" not in get_flow("vitis:write").optimizers:
        update_flow("vitis:write", add_optimizers=[f"vitis:{WRITE_PASS_NAME}"])
    for header in KERNEL_HEADERS:
        backend.register_source(TEMPLATES / header)


# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------
def _ap_include() -> Path:
    return ap_types()


def compile_project(project_dir: Path, project: str = "myproject", opt: str = "-O2",
                    lib_name: str | None = None) -> Path:
    """g++ the firmware and the C-ABI bridge into ``firmware/lib<project>_flipq.so``.

    Our own command rather than hls4ml's build_lib.sh: no weights directory is baked in, the
    bridge is ours, and the two translation units compile side by side.
    """
    project_dir = Path(project_dir)
    units = [project_dir / "firmware" / f"{project}.cpp", project_dir / "flipq_bridge.cpp"]
    lib = project_dir / "firmware" / (lib_name or f"lib{project}_flipq.so")
    try:
        return build_shared_library(units, [_ap_include(), project_dir / "firmware"], lib, project_dir,
                                    opt=opt, tag="flipq")
    except CompileError as e:
        raise BitSerialError(str(e)) from e


def _write_spec(intmodel: IntModel, layers: list[BitSerialLayer], out_dir: Path) -> Path:
    arrays = {}
    entries = []
    for lay in layers:
        arrays[lay.name + "/words"] = lay.packed.words
        arrays[lay.name + "/mask"] = lay.packed.mask
        arrays[lay.name + "/bias"] = lay.bias if lay.bias is not None else np.zeros(lay.n_out, dtype=np.int64)
        entries.append(lay.to_dict())
    npz = out_dir / "flipq_planes.npz"
    np.savez(npz, **arrays)
    spec = {"layers": entries, "arrays": str(npz.resolve()), "input_exp": intmodel.input_quant.exp,
            "output_exp": intmodel.output_exp}
    path = out_dir / "flipq_bitserial.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def build_bitserial(intmodel: IntModel, qonnx_model, out_dir: Path, io_type: str = "io_parallel",
                    pe: dict | None = None, group_size: int = 0, project: str = "myproject",
                    compile: bool = True) -> BitSerialBuild:
    """Prepared QONNX + its IntModel -> hls4ml project with bit-serial kernels + C-sim library.

    ``pe`` maps layer names to PE counts (output columns side by side, default 1);
    ``group_size`` applies to layers whose BitPlan gives none (0: the whole fan-in).
    """
    if io_type not in ("io_parallel", "io_stream"):
        raise BitSerialError(f"io_type={io_type!r}: expected 'io_parallel' or 'io_stream'")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = plan_layers(intmodel, pe, group_size)
    spec_path = _write_spec(intmodel, layers, out_dir)
    register_bitserial()

    t0 = time.perf_counter()
    cfg = hls4ml.utils.config.config_from_onnx_model(qonnx_model, granularity="name", backend="Vitis",
                                                     default_precision="fixed<16,6>")
    in_name = qonnx_model.graph.input[0].name
    # the C-ABI feeds integers on the input quantizer's own grid; the input type must hold them exactly
    cfg["LayerName"].setdefault(in_name, {}).setdefault("Precision", {})["result"] = \
        intmodel.input_quant.fixed_type()
    # a top-level PIPELINE (hls4ml's io_parallel default) would unroll the plane loops in synthesis
    cfg["Model"]["PipelineStyle"] = "dataflow"
    # hls4ml copies only known top-level keys, but keeps the Model section whole
    cfg["Model"][SPEC_KEY] = {"spec": str(spec_path.resolve())}
    project_dir = out_dir / "hls4ml_prj"
    hmodel = hls4ml.converters.convert_from_onnx_model(
        qonnx_model, output_dir=str(project_dir), project_name=project, io_type=io_type, backend="Vitis",
        hls_config=cfg)
    by_onnx = {}
    for node in hmodel.get_layers():
        if node.class_name in ("Dense", "Conv2D", "Conv1D", "PointwiseConv2D"):
            raise BitSerialError(f"hls4ml layer '{node.name}' ({node.class_name}) was not replaced by a "
                                 "bit-serial kernel (no matching MAC layer in the integer model)")
        if node.class_name.startswith("BitSerial"):
            by_onnx[node.get_attr("flipq")["name"]] = node.name
    for lay in layers:
        if lay.name not in by_onnx:
            raise BitSerialError(f"layer '{lay.name}' (ONNX node '{lay.onnx_node}') has no hls4ml "
                                 "Dense/Conv2D counterpart")
        lay.hls_name = by_onnx[lay.name]
    hmodel.write()
    convert_s = time.perf_counter() - t0

    meta = {
        "abi": ABI_VERSION, "io_type": io_type, "input_shape": list(intmodel.input_shape),
        "output_shape": list(intmodel.output_shape()), "max_planes": MAX_PLANES,
        "input_exp": intmodel.input_quant.exp, "output_exp": intmodel.output_exp,
        "layers": [lay.to_dict() for lay in layers], "model_hash": intmodel.digest(),
    }
    t1 = time.perf_counter()
    lib = compile_project(project_dir, project) if compile else project_dir / "firmware" / f"lib{project}_flipq.so"
    compile_s = time.perf_counter() - t1
    meta["lib"] = str(lib.resolve())
    (out_dir / "csim_meta.json").write_text(json.dumps(meta, indent=1))
    return BitSerialBuild(lib_path=lib, project_dir=project_dir, io_type=io_type, layers=layers, meta=meta,
                          compile_seconds=compile_s, convert_seconds=convert_s)
