"""flipq's bit-serial layers as an hls4ml (Vitis backend) extension.

Everything is registered explicitly by :func:`register_bitserial`: two layer classes, one
graph pass appended to ``vivado:optimize`` that replaces Dense/Conv2D (it only acts on
models whose HLS ``Model`` config carries a ``FlipqBitSerial`` entry, so stock hls4ml
conversions in the same process are untouched), config/function templates, the kernel
headers as custom source, and one pass appended to ``vitis:write`` that adds the ``planes``
argument and the C-ABI bridge (``flipq.hls.bitserial_writer``).

Widths come from the hardware plan (``flipq.hls.hwplan``), carried to the pass in the spec
file; the pass only moves them onto the grid hls4ml chose for the layer's input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hls4ml.backends import get_backend
from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
from hls4ml.model import layers as hl
from hls4ml.model.flow import get_flow, update_flow
from hls4ml.model.optimizer.optimizer import ModelOptimizerPass, OptimizerPass, optimizer_map
from hls4ml.model.types import FixedPrecisionType

from flipq.hls.bitserial_writer import PLANES_ARG, TEMPLATES, BitSerialError, add_planes_argument, render, write_bridge
from flipq.hls.fold import ConvGeometry, swg_cycles

KERNEL_HEADERS = ("flipq_bitserial_pe.h", "flipq_bitserial_dense.h", "flipq_bitserial_conv2d.h")
SPEC_KEY = "FlipqBitSerial"
PASS_NAME = "flipq_bitserial"
WRITE_PASS_NAME = "flipq_write_bitserial"


def spec_of(model) -> dict | None:
    """The flipq spec (plan facts + arrays file) a converted model was configured with."""
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

    Runs after ``infer_precision_types``: the layers around keep hls4ml's types, ours get the
    plan's accumulator on the grid of the input type hls4ml chose.
    """

    def match(self, node):
        if not isinstance(node, (hl.Dense, hl.Conv2D)):
            return False
        spec = spec_of(node.model)
        return spec is not None and _match_spec(spec, node.name) is not None

    def transform(self, model, node):
        spec = spec_of(model)
        entry = _match_spec(spec, node.name)
        with np.load(spec["arrays"]) as arrays:
            rom, steps, blk = (arrays[entry["name"] + key] for key in ("/rom", "/steps", "/blk"))
            bias = arrays[entry["name"] + "/bias"]
            step = (arrays[entry["name"] + "/thresholds"], arrays[entry["name"] + "/thr_signs"]) \
                if entry.get("threshold") else None
        in_prec = node.get_input_variable().type.precision
        frac_in = in_prec.width - in_prec.integer
        # raw input integer = q * 2**shift: every width of the plan grows by the shift
        shift = entry["exp_in"] + frac_in
        if shift < 0:
            raise BitSerialError(
                f"layer '{entry['name']}': hls4ml feeds it {in_prec} (2^-{frac_in} grid), coarser than "
                f"its input's 2^{entry['exp_in']} grid; the chain would not be exact")
        acc_w = entry["acc_bits"] + shift
        k = entry["fan_in"]
        frac_out = frac_in - entry["w_exp"]
        result = FixedPrecisionType(acc_w, acc_w - frac_out, signed=True)
        requant = None
        if node.get_attr("quantizer") is not None:
            result, requant = _merged_quantizer(entry, node.get_attr("quantizer"), acc_w, frac_out)
        if step is not None:
            requant = _threshold_constants(entry, requant, step, shift)
        attrs = {
            "n_in": k, "n_out": entry["n_out"],
            "flipq_result_precision": result,
            "flipq": dict(entry, acc_width=acc_w, act_width=in_prec.width, act_signed=bool(in_prec.signed),
                          psum_width=entry["psum_bits"] + shift, requant=requant),
            "flipq_rom": rom, "flipq_steps": steps, "flipq_blk": blk,
            "flipq_bias": [int(b) << shift for b in bias],
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
        if requant is None:
            _carry_accumulator_type(new, result)
        return True


def _keeps_values(layer) -> bool:
    """A layer whose outputs are some of its inputs (or zero): exact in its input's type."""
    if isinstance(layer, (hl.Reshape, hl.ZeroPadding1D, hl.ZeroPadding2D)):
        return True
    if isinstance(layer, (hl.Pooling1D, hl.Pooling2D)):
        return layer.get_attr("pool_op", "Max") == "Max"
    return isinstance(layer, hl.Activation) and str(layer.get_attr("activation")).lower() in ("relu", "linear")


def _carry_accumulator_type(node, precision) -> None:
    """Give the value-preserving layers after an accumulator (MaxPool, a ReLU or reshape with no
    quantizer of its own) the accumulator's type. hls4ml typed them before the replacement: a
    bare ReLU got the default ``fixed<16,6>`` (too coarse for the output accumulator) and a
    MaxPool the type inferred for hls4ml's own Dense/Conv, which need not hold ours."""
    for consumer in node.get_output_nodes():
        if consumer.get_attr("quantizer") is not None:
            continue
        if not _keeps_values(consumer):
            continue
        consumer.get_output_variable().type.precision = precision
        if consumer.get_attr("accum_t") is not None:
            consumer.get_attr("accum_t").precision = precision
        _carry_accumulator_type(consumer, precision)


def _merged_quantizer(entry: dict, quantizer, acc_w: int, frac_out: int):
    """hls4ml folded the Quant after this layer into its result type (MergeLinearActivation);
    the bit-serial kernel must then requantize its accumulator itself (``layer_output`` in
    flipq_bitserial_pe.h). Returns the result type (the quantizer's own grid, so raw bits are
    the quantized integers) and the kernel's requantization constants."""
    spec = entry.get("quant_after")
    hls_type = quantizer.hls_type
    if spec is None or (hls_type.width, bool(hls_type.signed)) != (spec["bits"], spec["signed"]) \
            or hls_type.width - hls_type.integer != -spec["exp"]:
        raise BitSerialError(
            f"layer '{entry['name']}': hls4ml merged a quantizer ({hls_type}) into its result, but the "
            f"integer model has {'no quantizer' if spec is None else spec} right after it")
    bits, signed, exp = spec["bits"], spec["signed"], spec["exp"]
    lo = -(2 ** (bits - 1)) + int(spec["narrow"]) if signed else 0
    hi = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    rq_shift = exp + frac_out  # accumulator raw grid 2^-frac_out -> quantizer grid 2^exp
    # rq_t holds the accumulator shifted left, and the rounding's half (1 << rq_shift - 1) when
    # the quantizer's grid is coarser than every accumulator value
    width = max(acc_w, rq_shift + 1) + max(0, -rq_shift) + 1
    requant = {"rq_shift": rq_shift, "rq_min": lo, "rq_max": hi, "rq_width": width}
    return FixedPrecisionType(bits, bits + exp, signed=signed), requant


def _threshold_constants(entry: dict, requant: dict | None, step, shift: int) -> dict:
    """The threshold step's constants: the plan's thresholds moved onto the accumulator's raw
    grid exactly as the bias is (``t << shift``: both sides of every comparison scale by
    ``2**shift``), the descending channels, and the output range's bottom to count up from.
    hls4ml must have merged the Quant the lowering puts after the layer: the count is written
    as raw bits of that quantizer's type."""
    if requant is None:
        raise BitSerialError(f"layer '{entry['name']}': the integer model thresholds its accumulator, but "
                             "hls4ml merged no quantizer into it (the QONNX graph needs a Quant right after it)")
    thresholds, signs = step
    width = entry["thr_bits"] + shift
    count_width = max(int(requant["rq_min"]).bit_length(), int(requant["rq_max"]).bit_length()) + 2
    return dict(requant, threshold=True, rq_width=count_width, thr_width=width, n_thr=int(thresholds.shape[1]),
                thresholds=[[int(t) << shift for t in row] for row in thresholds],
                descending=[int(s) < 0 for s in signs])


def _requant_lines(requant: dict | None, pe: int) -> str:
    if requant is None:
        return ""
    lines = ("    static const bool requant = true;\n"
             f"    static const int rq_shift = {requant['rq_shift']};\n"
             f"    static const int rq_min = {requant['rq_min']};\n"
             f"    static const int rq_max = {requant['rq_max']};\n"
             f"    typedef ap_int<{requant['rq_width']}> rq_t;\n")
    if requant.get("threshold"):
        n_thr = requant["n_thr"]
        lines += ("    static const bool threshold = true;\n"
                  f"    static const unsigned n_thr = {n_thr};\n"
                  f"    static const unsigned thr_blocks = {len(requant['thresholds']) // pe};\n"
                  f"    static const unsigned thr_pe = {pe};\n"
                  f"    static const unsigned thr_cols = {max(n_thr, 1)};\n")
    return lines


def _threshold_rom(f: dict) -> dict:
    """The thresholds ROM ``fq_thr<index>[NB][PE][T]`` and ``fq_desc<index>[NB][PE]`` every layer
    passes to its kernel (column ``b * PE + p`` at ``[b][p]``: PE ``p`` reads its own bank); a
    layer without a threshold step passes a 1x1x1 placeholder it never reads."""
    rq = f.get("requant") or {}
    if not rq.get("threshold"):
        return {"thr_t": "ap_int<2>", "thr_width": 2, "thr_blocks": 1, "thr_pe": 1, "thr_cols": 1, "thresholds": "{{0}}",
                "descending": "{false}"}
    cols, pe = max(rq["n_thr"], 1), f["pe"]
    rows = ["{" + ",".join(str(t) for t in (row or [0])) + "}" for row in rq["thresholds"]]
    flags = ["true" if d else "false" for d in rq["descending"]]
    return {"thr_t": f"ap_int<{rq['thr_width']}>", "thr_width": rq["thr_width"], "thr_blocks": len(rows) // pe, "thr_pe": pe, "thr_cols": cols,
            "thresholds": _c_banks(rows, pe), "descending": _c_banks(flags, pe)}


def _c_banks(cells: list, pe: int) -> str:
    """Per-column C initializers as ``[N / PE][PE]`` rows: column ``b * PE + p`` at ``[b][p]``."""
    return ",".join("{" + ",".join(cells[b:b + pe]) + "}" for b in range(0, len(cells), pe))


def _c_rows(table: np.ndarray, cell) -> str:
    return ",".join("{" + ",".join(cell(v) for v in row) + "}" for row in table)


def _config_params(node) -> dict:
    f = node.get_attr("flipq")
    rom, steps, blk = node.get_attr("flipq_rom"), node.get_attr("flipq_steps"), node.get_attr("flipq_blk")
    depth = max(rom.shape[1], 1)
    rom = np.concatenate([rom, np.zeros((rom.shape[0], depth - rom.shape[1]), dtype=np.uint64)], axis=1)
    hex_word = lambda v: f"0x{int(v):x}ULL"  # noqa: E731
    pe, row_bits = f["pe"], f["row_bits"]
    depthwise = bool(f.get("depthwise"))
    if depthwise:  # PE p's ROM holds only its own lane's bit: one bit a word (docs/datapath.md)
        rom = (rom >> np.arange(pe, dtype=np.uint64)[:, None]) & np.uint64(1)
    params = {
        "index": node.index, "layer": f["name"], "layer_id": f["layer_id"], "n_in": f["fan_in"],
        "n_out": f["n_out"], "n_pix": f["n_pix"], "simd": f["simd"], "pe": pe, "n_rows": f["n_rows"],
        "n_blocks": blk.shape[0], "rom_depth": depth, "row_bits": row_bits, "step_bits": row_bits + 4,
        "max_iterations": f["max_iterations"], "mvau_depth": f["mvau_depth"],
        "group_size": f["group_size"], "n_planes": f["weight_bits"], "sign_plane": f["weight_bits"] - 1,
        "full_planes": "true" if f.get("full_planes") else "false",
        "depthwise": "true" if depthwise else "false", "rom_bits": 1 if depthwise else f["simd"],
        "act_raw_t": f"ap_{'int' if f['act_signed'] else 'uint'}<{f['act_width']}>",
        "psum_t": f"ap_int<{f['psum_width']}>", "accum_t": f"ap_int<{f['acc_width']}>",
        "rom": _c_rows(rom, hex_word), "steps": ",".join(f"0x{int(v):x}" for v in steps.reshape(-1)),
        "blk": _c_rows(blk, str),
        "bias": _c_banks([str(int(b)) for b in node.get_attr("flipq_bias")], pe),
        "base": "flipq::bitserial_config", "geometry": "", "requant": _requant_lines(f.get("requant"), pe),
        **_threshold_rom(f),
    }
    if node.class_name == "BitSerialConv2D":
        geo = ConvGeometry(in_h=node.get_attr("in_height"), in_w=node.get_attr("in_width"),
                           cin=node.get_attr("n_chan"), kh=node.get_attr("filt_height"),
                           kw=node.get_attr("filt_width"), sy=node.get_attr("stride_height"),
                           sx=node.get_attr("stride_width"), pad_top=node.get_attr("pad_top"),
                           pad_left=node.get_attr("pad_left"), out_h=node.get_attr("out_height"),
                           out_w=node.get_attr("out_width"))
        params["base"] = "flipq::bitserial_conv2d_config"
        params["geometry"] = "\n".join([f"    static const unsigned {key} = {node.get_attr(key)};"
                                        for key in _CONV_GEOMETRY]
                                       + [f"    static const unsigned swg_iterations = "
                                          f"{swg_cycles(geo, f['n_rows'], depth=0)};"])
    return params


class _BitSerialConfig(LayerConfigTemplate):
    def format(self, node):
        return render("flipq_bitserial_config.tpl", **_config_params(node))


class _BitSerialCall(FunctionCallTemplate):
    function = ""

    def format(self, node):
        p = self._default_function_params(node)
        return (f"flipq::{self.function}<{p['input_t']}, {p['output_t']}, {p['config']}>"
                f"({p['input']}, {p['output']}, fq_rom{node.index}, fq_steps{node.index}, fq_blk{node.index}, "
                f"fq_bias{node.index}, fq_thr{node.index}, fq_desc{node.index}, {PLANES_ARG});")


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
    spec = spec_of(model)
    add_planes_argument(out, project)
    write_bridge(model, out, project, spec["input_exp"], spec["output_exp"])
    return False


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
