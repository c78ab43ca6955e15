"""The hls stage of a build: QONNX -> integer model -> hls4ml project -> C simulation, checked
on the build's check rows, with the cost report checked against the board.

>>> from flipq.pipeline import BuildConfig                      # doctest: +SKIP
>>> report = stage_hls(BuildConfig.load("build/demo"))          # doctest: +SKIP
>>> report["totals"]["cycles"], report["board"]["fits"]         # doctest: +SKIP

Writes into ``<out>/hls``: ``intmodel.json/.npz``, ``model_prepared.onnx``, the hls4ml
project (``bitserial/`` or ``stock/``), ``hls4ml.log``, ``hls_report.json``, ``hls.json``;
and ``<out>/outputs/csim.npy`` when the build has data.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from flipq.host.files import replacing, write_json

KERNELS = ("bitserial", "stock")
IO_TYPES = ("io_parallel", "io_stream")
CSIM_CHUNK = 64  # rows per C-sim call: the progress bar moves, the call overhead stays small


def stage_hls(cfg, model_path: str | Path | None = None) -> dict:
    """Run the hls stage for the build config ``cfg`` (a :class:`flipq.pipeline.BuildConfig`);
    ``model_path`` converts that QONNX file instead of the build's ``model.onnx``. Every
    setting (kernel, io_type, pe, group_size, board, check_rows) is ``cfg``'s.

    Returns the cost report (also written to ``hls/hls_report.json``).
    """
    from flipq.boards import load_board
    from flipq.hls.cost import hls_report
    from flipq.hls.hwplan import plan_hardware

    # every bad setting fails here, before seconds of conversion and compiling
    _check_settings(cfg)
    board = load_board(cfg.board)
    pe, simd = cfg.pe_map(), cfg.simd_map()
    t0 = time.perf_counter()
    intmodel, prepared = _lower(cfg, model_path)
    folding = None
    if cfg.fold:
        from flipq.hls.folding import fold_for_board, folded_plan

        result = fold_for_board(intmodel, board, cfg.target_fps or None, group_size=cfg.group_size,
                                io_type=cfg.io_type)
        folding = result.to_dict()
        _say(cfg, f"folded for {board.name}: {result.fps:.0f} fps modeled at {result.clock_mhz:g} MHz "
                  f"(interval {result.interval} cycles); stopped by {result.binding}")
        plan = folded_plan(intmodel, result, cfg.group_size)
    else:
        plan = plan_hardware(intmodel, pe, cfg.group_size, simd)
    # Built beside the current hls/ and swapped in only when complete: a failed conversion or
    # compile leaves the earlier integer model, library and reports as they were.
    final_dir = cfg.folder / "hls"
    hls_dir = cfg.folder / "hls.partial"
    if hls_dir.exists():
        shutil.rmtree(hls_dir)
    intmodel.save(hls_dir)
    prepared.save(str(hls_dir / "model_prepared.onnx"))

    q = _check_inputs(cfg, intmodel)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # hls4ml narrates its topology walk; keep it in a log
        try:
            if cfg.kernel == "bitserial":
                runner, info = _bitserial(cfg, intmodel, prepared, plan, hls_dir)
            else:
                runner, info = _stock(cfg, intmodel, prepared, hls_dir)
        finally:
            (hls_dir / "hls4ml.log").write_text(log.getvalue())
    info["check_rows"] = 0 if q is None else len(q)
    outputs = None
    if q is not None:
        t1 = time.perf_counter()
        with runner as run:
            outputs = _in_chunks(run, q, cfg.progress)
        info["seconds_check"] = time.perf_counter() - t1
    digest = intmodel.digest()
    report = hls_report(intmodel, io_type=cfg.io_type, plan=plan, clock_mhz=board.fclk0_mhz)
    report.update(kernel=cfg.kernel, io_type=cfg.io_type, model_hash=digest,
                  sources=info.pop("sources"), board=board_check(board, report["totals"]))
    if folding is not None:
        report["folding"] = folding
    counted = info.pop("counted_cycles", None)
    if counted is not None:
        add_counted_cycles(report, counted)
    write_json(hls_dir / "hls_report.json", report)
    info.update(seconds=time.perf_counter() - t0, kernel=cfg.kernel, io_type=cfg.io_type, model_hash=digest)
    write_json(hls_dir / "hls.json", info)
    _swap_in(hls_dir, final_dir)
    if cfg.rtl:
        # after the swap: the Verilated library names the folder its ROM files stay in
        from flipq.hls.rtlstage import stage_rtl

        info["rtl"] = stage_rtl(intmodel, plan, final_dir, report, q=q, board=board,
                                say=lambda text: _say(cfg, text), yosys=cfg.yosys)
        write_json(final_dir / "hls_report.json", report)
        write_json(final_dir / "hls.json", info)
    if outputs is not None:
        out_dir = cfg.folder / "outputs"
        out_dir.mkdir(parents=True, exist_ok=True)
        with replacing(out_dir / "csim.npy") as tmp:
            np.save(tmp, outputs)
    if cfg.rtl and not info["rtl"]["all_equal"]:
        raise RuntimeError(f"the RTL twin differs from the emulator (see {final_dir / 'rtl' / 'rtl_check.json'})")
    return report


def _swap_in(new: Path, final: Path) -> None:
    """Replace the folder ``final`` by ``new`` (the old one is removed only once the new one is
    in place)."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    new.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _check_settings(cfg) -> None:
    if cfg.kernel not in KERNELS:
        raise ValueError(f"kernel '{cfg.kernel}' is unknown (known: {', '.join(KERNELS)})")
    if cfg.io_type not in IO_TYPES:
        raise ValueError(f"io_type '{cfg.io_type}' is unknown (known: {', '.join(IO_TYPES)})")
    if isinstance(cfg.group_size, bool) or not isinstance(cfg.group_size, int) or cfg.group_size < 0:
        raise ValueError(f"group_size {cfg.group_size!r} must be an int >= 0 (0: the whole fan-in)")


def _lower(cfg, model_path):
    """The QONNX model (the build's or ``model_path``), prepared and lowered to an IntModel."""
    from flipq.hls.lower import check_mappable, lower_qonnx
    from flipq.hls.prepare import load_qonnx, prepare_qonnx
    from flipq.host.bitplan import BitPlan

    src = Path(model_path) if model_path else cfg.folder / "model.onnx"
    raw = load_qonnx(src)
    check_mappable(raw)
    from flipq.quant.export import plan_from_onnx

    plan_file = cfg.folder / "plan.toml"
    carried = plan_from_onnx(raw, str(src))  # a model from elsewhere carries its plan in its own metadata
    plan = carried
    if plan_file.is_file() and model_path is None:
        plan = BitPlan.load(plan_file)
        if carried is not None:  # the plan renames the layers: it must name the model's own
            try:
                plan.check_names(carried.names)
            except ValueError as e:
                raise type(e)(f"{plan_file}: {e}") from None
    prepared = prepare_qonnx(raw)
    return lower_qonnx(prepared, plan), prepared


def _check_inputs(cfg, intmodel) -> np.ndarray | None:
    """The build's check rows as integers on the input grid; None when the build has no data."""
    from flipq.host.emulator import Emulator

    if not (cfg.folder / "data.npz").is_file():
        return None
    return Emulator(intmodel).quantize_input(cfg.check_split()[0])


def _say(cfg, text: str) -> None:
    # stderr: stdout is the hls4ml log while the project is built, and the report's afterwards
    if cfg.progress:
        print(f"hls: {text}", file=sys.stderr, flush=True)


def _bitserial(cfg, intmodel, prepared, plan, hls_dir: Path):
    """Build and compile the bit-serial project; returns (a context giving run(q) -> real
    outputs, info)."""
    from flipq.hls.bitserial import build_bitserial
    from flipq.host.csim import CsimBackend

    build = build_bitserial(intmodel, prepared, hls_dir / "bitserial", io_type=cfg.io_type, plan=plan,
                            log=lambda text: _say(cfg, text))
    _say(cfg, f"compiled in {build.compile_seconds:.1f} s")
    write_json(hls_dir / "csim.json", {"library": str(build.lib_path.relative_to(hls_dir)), "meta": build.meta})

    @contextlib.contextmanager
    def runner():
        with CsimBackend(build.lib_path, build.meta) as backend:
            yield lambda q: intmodel.to_real(backend.run(q, None).reshape(len(q), -1))

    # the kernels time themselves: one sample at full precision through their counted loops
    with CsimBackend(build.lib_path, build.meta) as backend:
        one = np.zeros((1, *intmodel.input_shape), dtype=np.int64) + intmodel.input_quant.qmin
        counted = backend.count_cycles(one, None)
    return runner(), {"seconds_compile": build.compile_seconds, "seconds_convert": build.convert_seconds,
                      "sources": _firmware_sources(build.project_dir, hls_dir), "counted_cycles": counted}


def _stock(cfg, intmodel, prepared, hls_dir: Path):
    from flipq.hls.stock import build_stock, predict_stock

    _say(cfg, "converting with hls4ml's stock kernels and compiling the C simulation")
    build = build_stock(prepared, intmodel, hls_dir / "stock", io_type=cfg.io_type)
    _say(cfg, f"compiled in {build.seconds_compile:.1f} s")
    return contextlib.nullcontext(lambda q: predict_stock(build, intmodel, q)), {
        "seconds_compile": build.seconds_compile, "sources": _firmware_sources(build.project_dir, hls_dir)}


def _in_chunks(run, q: np.ndarray, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(q), desc="csim", unit="row", disable=not progress, leave=False) as bar:
        for start in range(0, len(q), CSIM_CHUNK):
            parts.append(run(q[start:start + CSIM_CHUNK]))
            bar.update(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0,))


def add_counted_cycles(report: dict, counted: dict) -> None:
    """Put the C-sim's own cycle counts beside the model's: ``layers[i]["csim_cycles"]`` (the
    slowest process, one sample, full precision) and ``csim_processes``; ``totals`` gains
    ``csim_interval`` and ``csim_matches_model``. The two are equal by construction; a
    difference is a bug in the kernels or the model, and the report says so."""
    same = True
    for layer in report["layers"]:
        procs = counted[layer["name"]]
        layer["csim_processes"] = procs
        layer["csim_cycles"] = max(procs.values())
        same = same and procs == layer["processes"]
    report["totals"]["csim_interval"] = max(layer["csim_cycles"] for layer in report["layers"])
    report["totals"]["csim_matches_model"] = same


def board_check(board, totals: dict) -> dict:
    """Modeled totals against ``board``'s resources (the overlay build refuses what does not
    fit; here it is reported early): the chip's total where the report has one (the accelerator
    and the DMA/interconnect beside it)."""
    totals = totals.get("chip", totals)
    over = board.fits(totals)
    return {"name": board.name, "fits": not over, "over": over,
            "utilization": {k: round(float(totals.get(k, 0)) / v, 4) for k, v in board.resources.items() if v}}


def _firmware_sources(project_dir: Path, hls_dir: Path) -> list[str]:
    return [str(p.relative_to(hls_dir)) for p in sorted((project_dir / "firmware").glob("*.cpp"))]
