"""Bit-serial Dense/Conv2D kernels for hls4ml, and the C-sim library around them.

``build_bitserial`` plans the hardware (``flipq.hls.hwplan``: planes, masks, widths), converts
a prepared QONNX model with hls4ml (Vitis backend) with flipq's plugin registered
(``flipq.hls.bitserial_plugin``: every Dense and Conv2D becomes a bit-serial layer), lets the
writer add the run-time ``planes`` argument and the C-ABI bridge
(``flipq.hls.bitserial_writer``), and compiles the library ``flipq_run`` that
``flipq.host.csim`` loads with ctypes.

    >>> build = build_bitserial(intmodel, prepared, Path("build/demo/hls"))   # doctest: +SKIP
    >>> CsimBackend(build.lib_path, build.meta).run(q, planes=3)              # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flipq.hls.bitserial_writer import ABI_VERSION, MAX_PLANES, BitSerialError
from flipq.hls.cxx import ap_types, build_shared_library
from flipq.hls.fold import block_step_table, max_iterations, step_row_bits, step_table
from flipq.hls.hwplan import HardwarePlan, LayerHw, bits_for, plan_hardware
from flipq.host.intmodel import IntModel

__all__ = ["BitSerialBuild", "BitSerialError", "build_bitserial", "compile_project"]
IO_TYPES = ("io_parallel", "io_stream")


@dataclass
class BitSerialBuild:
    lib_path: Path
    project_dir: Path
    io_type: str
    plan: HardwarePlan
    hls_names: dict  # plan layer name -> hls4ml layer name
    meta: dict
    compile_seconds: float
    convert_seconds: float

    @property
    def layers(self) -> tuple[LayerHw, ...]:
        return self.plan.layers


def compile_project(project_dir: Path, project: str = "myproject", opt: str = "-O2",
                    lib_name: str | None = None, defines: tuple[str, ...] = ()) -> Path:
    """g++ the firmware and the C-ABI bridge into ``firmware/lib<project>_flipq.so``.

    Our own command rather than hls4ml's build_lib.sh: no weights directory is baked in, the
    bridge is ours, and the two translation units compile side by side. ``defines``:
    preprocessor macros, e.g. ``("FLIPQ_CSIM_LANES",)`` to simulate the kernels' lane loop
    instead of the C-sim's popcount (the same function, slower; see flipq_bitserial_pe.h).
    """
    project_dir = Path(project_dir)
    units = [project_dir / "firmware" / f"{project}.cpp", project_dir / "flipq_bridge.cpp"]
    lib = project_dir / "firmware" / (lib_name or f"lib{project}_flipq.so")
    return build_shared_library(units, [ap_types(), project_dir / "firmware"], lib, project_dir, opt=opt,
                                tag="flipq", defines=defines)


def _write_spec(intmodel: IntModel, plan: HardwarePlan, out_dir: Path) -> Path:
    """The plan as the hls4ml pass reads it (hls4ml's config carries only a path through)."""
    arrays = {}
    entries = []
    quant_after = _quant_after(intmodel)
    for layer_id, lay in enumerate(plan.layers):
        arrays[lay.name + "/rom"] = lay.fold.rom
        arrays[lay.name + "/steps"] = step_table(lay.fold)
        arrays[lay.name + "/blk"] = block_step_table(lay.fold)
        arrays[lay.name + "/bias"] = lay.bias if lay.bias is not None else np.zeros(lay.n_out, dtype=np.int64)
        if lay.thresholds is not None:
            arrays[lay.name + "/thresholds"] = lay.thresholds
            arrays[lay.name + "/thr_signs"] = lay.thr_signs
        entries.append(dict(lay.to_dict(), quant_after=quant_after.get(lay.name), layer_id=layer_id,
                            threshold=lay.thresholds is not None,
                            max_iterations=max_iterations(lay.fold, lay.n_pix),
                            row_bits=step_row_bits(lay.fold)))
    npz = out_dir / "flipq_planes.npz"
    np.savez(npz, **arrays)
    spec = {"layers": entries, "arrays": str(npz.resolve()), "input_exp": intmodel.input_quant.exp,
            "output_exp": intmodel.output_exp}
    path = out_dir / "flipq_bitserial.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def _quant_after(intmodel: IntModel) -> dict:
    """MAC layer name -> the quantizer (QuantSpec dict) that directly follows it with no ReLU
    between: the one hls4ml may fold into the layer's result type (see the plugin). A
    ``threshold`` layer always counts: its graph hands hls4ml a Quant to merge in its place."""
    out = {}
    layers = intmodel.layers
    for index, (layer, nxt) in enumerate(zip(layers, layers[1:])):
        if layer.is_mac and intmodel.inputs_of(index + 1) == [index] and (
                nxt.op == "threshold" or nxt.op == "requant" and not nxt.attrs.get("relu", False)):
            out[layer.name] = nxt.out_quant.to_dict()
    return out


def build_bitserial(intmodel: IntModel, qonnx_model, out_dir: Path, io_type: str = "io_parallel",
                    pe: dict | None = None, group_size: int = 0, project: str = "myproject",
                    compile: bool = True, plan: HardwarePlan | None = None, log=None) -> BitSerialBuild:
    """Prepared QONNX + its IntModel -> hls4ml project with bit-serial kernels + C-sim library.

    ``pe`` maps layer names to PE counts (output columns side by side, default 1);
    ``group_size`` applies to layers whose BitPlan gives none (0: the whole fan-in); a
    ``plan`` already made from them is used as is. ``log(text)`` hears when g++ starts.
    """
    import hls4ml

    from flipq.hls.bitserial_plugin import SPEC_KEY, register_bitserial

    if io_type not in IO_TYPES:
        raise BitSerialError(f"io_type={io_type!r}: expected 'io_parallel' or 'io_stream'")
    from flipq.hls.hls4ml_pools import check_stream_pools
    from flipq.hls.proxy import hls_graph

    check_stream_pools(intmodel, io_type)
    qonnx_model = hls_graph(qonnx_model, intmodel)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan or plan_hardware(intmodel, pe, group_size)
    spec_path = _write_spec(intmodel, plan, out_dir)
    register_bitserial()

    t0 = time.perf_counter()
    cfg = hls4ml.utils.config.config_from_onnx_model(qonnx_model, granularity="name", backend="Vitis",
                                                     default_precision="fixed<16,6>")
    in_name = qonnx_model.graph.input[0].name
    # the C-ABI feeds integers on the input quantizer's own grid; the input type must hold them exactly
    cfg["LayerName"].setdefault(in_name, {}).setdefault("Precision", {})["result"] = \
        intmodel.input_quant.fixed_type()
    # hls4ml's merge layers (a residual add, a concatenation) infer their result type from their
    # inputs' and may carry a quantizer's saturation mode into it (a narrow one's AP_SAT_SYM
    # clips the most negative value): the exact type of the join's range, from the plan, instead
    for layer in intmodel.layers:
        if layer.name in plan.joins:
            r = plan.joins[layer.name]
            width = bits_for(r.lo, r.hi)
            kind = "fixed" if r.lo < 0 else "ufixed"
            cfg["LayerName"].setdefault(layer.attrs.get("onnx_node", layer.name), {}).setdefault(
                "Precision", {})["result"] = f"{kind}<{width},{width + r.exp}>"
    # a top-level PIPELINE (hls4ml's io_parallel default) would unroll the plane loops in synthesis
    cfg["Model"]["PipelineStyle"] = "dataflow"
    # hls4ml copies only known top-level keys, but keeps the Model section whole
    cfg["Model"][SPEC_KEY] = {"spec": str(spec_path.resolve())}
    project_dir = out_dir / "hls4ml_prj"
    hmodel = hls4ml.converters.convert_from_onnx_model(
        qonnx_model, output_dir=str(project_dir), project_name=project, io_type=io_type, backend="Vitis",
        hls_config=cfg)
    hls_names = _replaced_layers(hmodel, plan)
    hmodel.write()
    convert_s = time.perf_counter() - t0

    meta = {
        "abi": ABI_VERSION, "io_type": io_type, "input_shape": list(intmodel.input_shape),
        "output_shape": list(intmodel.output_shape()), "max_planes": MAX_PLANES,
        "input_exp": intmodel.input_quant.exp, "output_exp": intmodel.output_exp,
        "layers": [dict(lay.to_dict(), hls_name=hls_names[lay.name]) for lay in plan.layers],
        "model_hash": intmodel.digest(),
    }
    t1 = time.perf_counter()
    lib = project_dir / "firmware" / f"lib{project}_flipq.so"
    if compile:
        if log is not None:
            log(f"compiling the C simulation with g++ ({project_dir})")
        lib = compile_project(project_dir, project)
    compile_s = time.perf_counter() - t1
    (out_dir / "csim_meta.json").write_text(json.dumps(meta, indent=1))
    return BitSerialBuild(lib_path=lib, project_dir=project_dir, io_type=io_type, plan=plan, hls_names=hls_names,
                          meta=meta, compile_seconds=compile_s, convert_seconds=convert_s)


def _replaced_layers(hmodel, plan: HardwarePlan) -> dict:
    """Plan layer name -> hls4ml layer name; every MAC layer replaced, none left over."""
    by_plan = {}
    for node in hmodel.get_layers():
        if node.class_name in ("Dense", "Conv2D", "Conv1D", "PointwiseConv2D"):
            raise BitSerialError(f"hls4ml layer '{node.name}' ({node.class_name}) was not replaced by a "
                                 "bit-serial kernel (no matching MAC layer in the integer model)")
        if node.class_name.startswith("BitSerial"):
            by_plan[node.get_attr("flipq")["name"]] = node.name
    for lay in plan.layers:
        if lay.name not in by_plan:
            raise BitSerialError(f"layer '{lay.name}' (ONNX node '{lay.onnx_node}') has no hls4ml "
                                 "Dense/Conv2D counterpart")
    return by_plan
