"""The ``flipq`` command line: the demo and one command per build stage.

    flipq demo --out build/demo          # every stage on scikit-learn's digits
    flipq train --out DIR [--plan plan.toml --epochs N ...]
    flipq export --out DIR
    flipq hls [MODEL.onnx] --out DIR
    flipq emulate --out DIR
    flipq report --out DIR
    flipq verify MODEL.onnx [--input x.npy]   # QONNX = emulator = C-sim, row by row
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path


def _add_build_options(p: argparse.ArgumentParser, training: bool) -> None:
    # Standard library only (no torch), so `flipq --help` stays fast.
    from flipq.quant.archs import all_arch_names
    from flipq.quant.argtypes import nonnegative_int, positive_float, positive_int
    from flipq.quant.data import DATASETS
    from flipq.quant.flipconfig import add_flip_arguments
    from flipq.quant.scalerules import WEIGHT_SCALE_RULES

    p.add_argument("--out", required=True, help="build folder (artifacts of every stage)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--check-rows", type=nonnegative_int, default=None,
                   help="test rows the stage checks compare (default 500; 0: the whole test split)")
    if training:
        p.add_argument("--dataset", default=None, choices=DATASETS)
        p.add_argument("--data-path", default=None, help="folder of the data set (CIFAR-10: required)")
        p.add_argument("--arch", default=None, choices=all_arch_names(), metavar="ARCH",
                       help=f"network: {', '.join(all_arch_names())} (the last three: MLPerf Tiny's graph "
                            "networks, residual and depthwise-separable)")
        p.add_argument("--plan", default=None, help="BitPlan TOML to train with")
        p.add_argument("--epochs", type=positive_int, default=None)
        p.add_argument("--batch-size", type=positive_int, default=None)
        p.add_argument("--lr", type=positive_float, default=None)
        p.add_argument("--seed", type=nonnegative_int, default=None)
        p.add_argument("--fresh", action="store_true",
                       help="discard a checkpoint already in --out instead of resuming it")
        p.add_argument("--threads", type=positive_int, default=None, help="torch threads for training (default 1)")
        p.add_argument("--float-epochs", type=nonnegative_int, default=None,
                       help="train a float twin for this many epochs and start QAT from it")
        p.add_argument("--planes-aware", type=positive_int, default=None, metavar="LOWEST",
                       help="planes-aware training: each step through the weights the hardware accumulates at a "
                            "run-time planes drawn from LOWEST .. the widest weights' bits (e.g. 4 for W8)")
        p.add_argument("--planes-full-share", type=float, default=None, metavar="P",
                       help="with --planes-aware: the share of steps at full precision (default: every planes alike)")

        p.add_argument("--weight-scale", default=None, choices=WEIGHT_SCALE_RULES,
                       help="power-of-two weight scale: least-squares choice (mse, default) or Brevitas' absmax rule")

        add_flip_arguments(p)
    p.add_argument("--io-type", default=None, choices=["io_parallel", "io_stream"])
    p.add_argument("--kernel", default=None, choices=["bitserial", "stock"],
                   help="MAC kernels in hls4ml (default: bitserial)")
    p.add_argument("--group-size", type=nonnegative_int, default=None,
                   help="weight-group size for layers whose plan gives none (0: whole fan-in)")
    p.add_argument("--pe", default=None, help="PEs per layer, e.g. conv1=4,fc1=2 (default 1 each)")
    p.add_argument("--simd", default=None, help="SIMD lanes per layer, e.g. conv1=8 (default: the widest "
                                                 "each layer allows, up to 64)")
    p.add_argument("--board", default=None,
                   help="fold for this board: SIMD/PE per layer for the most throughput that fits (or "
                        "--target-fps); without --board, the saved board is only checked")
    p.add_argument("--target-fps", type=positive_float, default=None,
                   help="with folding: the modeled samples/s to reach at the board clock")
    p.add_argument("--rtl", action="store_true", default=None,
                   help="also the RTL twin: Verilator checks it against the emulator and times every layer, "
                        "Yosys maps it for the xc7z020 (figures in hls_report.json)")
    p.add_argument("--no-yosys", dest="yosys", action="store_false", default=None,
                   help="with --rtl: skip the Yosys synthesis (minutes on CIFAR-sized nets)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flipq", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build_options(sub.add_parser("demo", help="train, export, hls, emulate, report on digits"), True)
    _add_build_options(sub.add_parser("train", help="train a mixed-precision network (Brevitas)"), True)
    _add_build_options(sub.add_parser("export", help="export QONNX and check it against torch"), False)
    p = sub.add_parser("hls", help="lower QONNX to the integer model, hls4ml C-sim")
    p.add_argument("model", nargs="?", default=None, help="QONNX file (default: OUT/model.onnx)")
    _add_build_options(p, False)
    _add_build_options(sub.add_parser("emulate", help="run the integer emulator on the test split"), False)
    _add_build_options(sub.add_parser("report", help="write report.json and print the summary"), False)
    from flipq.quant.argtypes import positive_int  # standard library only, as the board side needs

    for name, text in (("run", "run inference on a backend and save the outputs"),
                       ("bench", "benchmark a backend: per-stage times, latency, throughput")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--overlay", required=True,
                       help="overlay folder (accel.json, flipq.bit) or a build / hls folder")
        p.add_argument("--backend", default="auto", choices=["auto", "emulator", "csim", "rtl", "pynq"],
                       help="rtl: the Verilog twin simulated cycle by cycle in Verilator (`flipq hls --rtl`)")
        p.add_argument("--input", default=None,
                       help="inputs as .npy: real values in the model's layout (any numeric dtype)"
                       + ("" if name == "run" else "; default: random inputs in the input range"))
        p.add_argument("--quantized", action="store_true",
                       help="--input holds integers already on the input quantizer's grid")
        p.add_argument("--planes", type=positive_int, default=None,
                       help="weight planes to accumulate (1 .. the widest layer's; default all)")
        if name == "run":
            p.add_argument("--output", default=None, help="write outputs to this .npy file")
            p.add_argument("--verify", action="store_true", help="also compare with the emulator")
        else:
            p.add_argument("--batch", type=positive_int, default=256)
            p.add_argument("--json", default=None, help="write the figures to this JSON file")
    from flipq.quant.archs import all_arch_names
    from flipq.quant.argtypes import int_at_least, nonnegative_int, positive_int
    from flipq.quant.data import DATASETS

    p = sub.add_parser("search", help="NSGA-II over per-layer bits and the folding for a board: accuracy, "
                                      "modeled energy, interval, weight bits")
    p.add_argument("--out", required=True, help="folder for search.json, pareto.json/.csv, search.png, cache/")
    p.add_argument("--pick", type=nonnegative_int, default=None,
                   help="write Pareto point N of the search in --out (plan.toml, folding.json, model.onnx) "
                        "into --out/pick_N instead of searching")
    p.add_argument("--dataset", default="digits", choices=DATASETS)
    p.add_argument("--data-path", default=None)
    p.add_argument("--arch", default="digits-cnn", choices=all_arch_names(), metavar="ARCH",
                   help=f"network: {', '.join(all_arch_names())} (a graph network's shared base is itself at W8A8)")
    p.add_argument("--board", default="pynq-z2", help="board the designs are folded for and must fit")
    p.add_argument("--io-type", default="io_stream", choices=["io_parallel", "io_stream"])
    p.add_argument("--fold-levels", type=positive_int, default=3,
                   help="folding genes: 0 = the most fps that fits, k = half of level k-1's (default 3)")
    p.add_argument("--generations", type=positive_int, default=6)
    # NSGA-II mates two parents per offspring: one candidate has no one to cross with
    p.add_argument("--population", type=int_at_least(2), default=12)
    p.add_argument("--qat-epochs", type=positive_int, default=3, help="short QAT per candidate")
    p.add_argument("--float-epochs", type=nonnegative_int, default=10, help="training of the shared float start")
    p.add_argument("--group-size", type=nonnegative_int, default=16)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--limit-train", type=positive_int, default=None, help="train on a random subset of this size")
    p.add_argument("--workers", type=positive_int, default=1, help="local worker processes (default 1)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="run candidates as Ray tasks on this cluster ('auto': the one this machine joined)")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("verify", help="check a QONNX model: QONNX = emulator = C-sim on every row and planes")
    p.add_argument("model", help="QONNX file")
    p.add_argument("--input", default=None, help="also these inputs (.npy, real values in the model's layout)")
    p.add_argument("--rows", type=positive_int, default=64, help="random rows over the input range (default 64)")
    p.add_argument("--io-type", default="io_parallel", choices=["io_parallel", "io_stream"])
    p.add_argument("--pe", type=positive_int, default=1, help="PEs per layer (default 1)")
    p.add_argument("--group-size", type=nonnegative_int, default=0, help="weight-group size (0: whole fan-in)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--no-rtl", action="store_true",
                   help="skip the RTL twin's row (default: simulated in Verilator where it is installed)")
    from flipq.overlays.cli import add_overlay_commands

    add_overlay_commands(sub)
    return parser


# bench's random batch: int64 rows on the host, far above any batch that measures anything
MAX_BENCH_BYTES = 1 << 30


class InputFileError(ValueError):
    """An input file that exists but cannot be read as an array."""


def _load_inputs(path: str):
    """A .npy array of real (or integer) numbers; its header is read first, so a shape the file
    cannot hold is refused with its size before anything is allocated."""
    import numpy as np

    if Path(path).is_dir():
        raise IsADirectoryError(f"--input {path} is a folder; give a .npy file")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
            if head != b"\x93NUMPY":
                kind = ("an empty file" if not head else "a .npz archive" if head[:2] == b"PK"
                        else "not a .npy file")
                raise InputFileError(f"--input {path}: {kind}; give one array saved with numpy.save (.npy)")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f".npy format version {version}")
            shape, _, dtype = read[version](f)
            data_at = f.tell()
    except FileNotFoundError:
        raise FileNotFoundError(f"input file not found: {path}") from None
    except InputFileError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise InputFileError(f"--input {path}: not a readable .npy array ({e})") from None
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputFileError(f"--input {path}: dtype {dtype} is not real numbers (integers or floats)")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = Path(path).stat().st_size - data_at
    if need > have:
        raise InputFileError(f"--input {path}: its header says shape {tuple(shape)} ({need:,} bytes) but the file "
                             f"holds {have:,} bytes; the file is truncated or its header was edited")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputFileError(f"--input {path}: not a readable .npy array ({e})") from e


def _output_path(path: str) -> Path:
    """Where ``run --output`` writes: a .npy file (the suffix is added when missing, as numpy
    would, and the path printed is the one written); refused up front if it cannot be."""
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"--output {path} is a folder; give a file name such as {out / 'outputs.npy'}")
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--output {path}: folder {out.parent} does not exist")
    from flipq.host.files import prepare_out_dir

    prepare_out_dir(out.parent, "--output folder")  # a write probe: permission bits lie to root
    return out


def _save_npy(path: Path, array) -> None:
    import numpy as np

    from flipq.host.files import replacing

    with replacing(path) as tmp:
        np.save(tmp, array)


def _open_accelerator(args):
    from flipq.host.accelerator import SIM_ENV, Accelerator

    folder = Path(args.overlay)
    backend = args.backend
    if backend == "auto" and folder.is_dir():
        backend = Accelerator.auto_backend(folder)
    if backend == "pynq" and os.environ.get(SIM_ENV) == "1":
        # x86: the simulated device plays the board; the board side never imports it
        from flipq.overlays.pynq_sim import attach

        attach(folder)
    return Accelerator.load(folder, backend=backend)


def _run_or_bench(args) -> int:
    import json

    import numpy as np

    output = _output_path(args.output) if args.command == "run" and args.output else None
    x = _load_inputs(args.input) if args.input else None
    if args.command == "run" and x is None:
        raise InputFileError("flipq run needs --input FILE.npy")
    with _open_accelerator(args) as acc:
        acc.set_planes(args.planes)
        if args.command == "run":
            y = acc.predict(x, quantized=args.quantized)
            if output is not None:
                _save_npy(output, y)
            print(f"{acc.backend.name}: {len(y)} rows, outputs {y.shape[1:]}"
                  + (f" -> {output}" if output is not None else ""))
            print("argmax of the first rows:", " ".join(map(str, y.reshape(len(y), -1).argmax(1)[:16])))
            if args.verify:
                v = acc.verify(x, quantized=args.quantized)
                print(f"verify against the emulator: {v['equal']}/{v['total']} rows equal")
                return 0 if v["equal"] == v["total"] else 1
            return 0
        if x is None:
            spec = acc.model.input_quant
            size = args.batch * int(np.prod(acc.input_shape)) * 8
            if size > MAX_BENCH_BYTES:
                raise ValueError(f"--batch {args.batch}: {size:,} bytes of inputs, more than the "
                                 f"{MAX_BENCH_BYTES:,} a benchmark batch may take; give a smaller --batch")
            x = np.random.default_rng(0).integers(spec.qmin, spec.qmax + 1, size=(args.batch, *acc.input_shape))
            quantized = True
        else:
            quantized = args.quantized
        b = acc.benchmark(x, quantized=quantized)
    print(f"backend {b['backend']} ({b['label']}), batch {b['batch']}, planes {b['planes'] or 'all'}")
    for stage, sec in b["stage_seconds_per_batch"].items():
        print(f"  {stage:<9}{sec * 1e3:10.3f} ms per batch")
    print(f"  latency  p50 {b['latency_s']['p50'] * 1e6:.1f} us, p99 {b['latency_s']['p99'] * 1e6:.1f} us (batch 1)")
    print(f"  throughput {b['throughput_per_s']:,.0f} samples/s" + (f", fclk {b['fclk_mhz']:g} MHz" if b["fclk_mhz"] else ""))
    if b.get("rtl"):
        r = b["rtl"]
        print(f"  {r['label']}: interval {r['interval_cycles']} cycles, latency {r['latency_cycles']} cycles; "
              f"{r['fps']:,.0f} samples/s at {r['fclk_mhz']:g} MHz")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(b, f, indent=1)
    return 0


def _config(args, fresh: bool):
    """The build config: saved in ``--out`` (or a fresh one for ``train``/``demo``, and for
    ``hls MODEL.onnx`` into a new folder), with every option given on the command line on top."""
    from flipq.pipeline import BuildConfig

    overrides = {k: getattr(args, k, None) for k in
                 ("dataset", "data_path", "arch", "plan", "epochs", "batch_size", "lr", "seed", "io_type",
                  "kernel", "group_size", "pe", "simd", "float_epochs", "board", "threads", "weight_scale",
                  "check_rows", "target_fps", "rtl", "yosys", "planes_aware", "planes_full_share")}
    # naming a board (or a throughput) asks hls to fold for it, unless the folding is given by hand
    if (args.board or getattr(args, "target_fps", None)) and not (getattr(args, "pe", None) or getattr(args, "simd", None)):
        overrides["fold"] = True
    elif getattr(args, "pe", None) or getattr(args, "simd", None):
        overrides["fold"] = False
    overrides["progress"] = not args.no_progress  # this command's choice, not the saved one
    if getattr(args, "flip", False):
        from flipq.quant.flipconfig import flip_config_from_args

        overrides["flip"] = flip_config_from_args(args).to_dict()
    given = {k: v for k, v in overrides.items() if v is not None}
    if fresh or (getattr(args, "model", None) and not (Path(args.out) / "config.json").is_file()):
        return replace(BuildConfig(out=args.out), **given)
    return BuildConfig.load(args.out, **given)


def _search(args) -> int:
    if args.pick is not None:
        from flipq.quant.searchout import pick

        picked = pick(args.out, args.pick)
        print(f"point {args.pick} -> {picked['folder']}/ (plan.toml, folding.json, model.onnx)")
        print(f"  build the searched model:  {picked['hls_command']}")
        print(f"  or retrain with its plan:  {picked['train_command']}")
        return 0
    from flipq.quant.data import load_dataset
    from flipq.dse import search
    from flipq.quant.search import SearchConfig
    from flipq.quant.searchout import bits_text

    ds = load_dataset(args.dataset, args.data_path, seed=args.seed, limit_train=args.limit_train)
    cfg = SearchConfig(generations=args.generations, population=args.population, qat_epochs=args.qat_epochs,
                       float_epochs=args.float_epochs, group_size=args.group_size, seed=args.seed,
                       board=args.board, io_type=args.io_type, fold_levels=args.fold_levels, workers=args.workers,
                       ray_address=args.ray_address, progress=not args.no_progress)
    result = search(ds, args.arch, cfg, out=args.out)
    print(f"{len(result.evaluated)} designs evaluated ({result.trained} trained, the rest cached) in "
          f"{result.seconds:.0f} s; Pareto front on {cfg.board} (modeled energy, fps):")
    print(f"{'#':>3}  {'bits (W/A per layer)':<32}{'fold':>5}{'val acc':>8}{'energy uJ':>11}{'fps':>10}"
          f"{'weight b':>10}")
    for i, p in enumerate(result.pareto):
        print(f"{i:>3}  {bits_text(p):<32}{p['fold_level']:>5}{p['val_accuracy']:>8.3f}{p['energy_uj']:>11.2f}"
              f"{p['fps']:>10.0f}{p['weight_bits']:>10}")
    print(f"front: {args.out}/pareto.json, pareto.csv, search.png; `flipq search --out {args.out} --pick N` "
          "writes a point's plan and folding")
    return 0


# Errors that are the user's to fix (exit 2) and failures of a run or tool (exit 1): both are
# printed as one line without a traceback unless --debug. Every flipq error for bad input is a
# ValueError or a path error naming the file, field, layer or value; failures are RuntimeErrors.
_USAGE_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
                 FileExistsError)
_FAILURES = (RuntimeError, OSError)


def _dispatch(args) -> int:
    if getattr(args, "out", None) is not None and args.command != "overlay":
        # minutes of training would otherwise end in a traceback at the first write
        from flipq.host.files import prepare_out_dir

        prepare_out_dir(args.out, "--out", create=False)
    if args.command == "overlay":
        return args.func(args)
    if args.command in ("run", "bench"):
        return _run_or_bench(args)
    if args.command == "search":
        return _search(args)
    if args.command == "verify":
        from flipq.hls.verify import verify_file

        return verify_file(args.model, _load_inputs(args.input) if args.input else None, args.rows, args.io_type,
                           args.pe, args.group_size, args.seed, rtl=False if args.no_rtl else None)
    from flipq import pipeline

    if args.command in ("demo", "train"):
        cfg = _config(args, fresh=True)
        if args.fresh:
            for stale in ("checkpoint.pt", "config.json"):
                (cfg.folder / stale).unlink(missing_ok=True)
        t0 = time.perf_counter()
        stop = "report" if args.command == "demo" else "train"
        report = pipeline.run(cfg, "train", stop)
        if args.command == "demo":
            print(pipeline.format_report(report))
            print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s; artifacts in {cfg.out}/")
        return 0
    cfg = _config(args, fresh=False)
    if args.command == "hls":
        from flipq.host.files import folder_lock

        with folder_lock(cfg.folder, "flipq hls"):  # two builds in one folder would mix their objects
            report = pipeline.stage_hls(cfg, args.model)
        print(pipeline.format_hls_report(report))
        print(f"hls: integer model, hls4ml project and C-sim in {cfg.out}/hls/ (hls_report.json)")
    elif args.command == "report":
        print(pipeline.format_report(pipeline.stage_report(cfg)))
    else:
        pipeline.STAGES[args.command](cfg)
        print(f"{args.command}: done, artifacts in {cfg.out}/")
    return 0


def _terminated(signum, frame):
    # SIGTERM unwinds like Ctrl-C: `with` blocks remove their temporary folders and partial files
    e = KeyboardInterrupt("terminated (SIGTERM)")
    e.exit_code = 128 + signum
    raise e


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import signal
    import threading
    import warnings

    warnings.filterwarnings("ignore", message="fast_hadamard_transform")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        return _dispatch(args)
    except KeyboardInterrupt as e:  # training raises one naming its last checkpoint
        if args.debug:
            raise
        print(f"flipq: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except _USAGE_ERRORS + _FAILURES as e:
        if args.debug:
            raise
        first, _, rest = str(e).partition("\n")
        print(f"flipq: error: {first}", file=sys.stderr)
        if rest.strip():  # e.g. a compiler's tail: after the one-line summary, not instead of it
            print(rest, file=sys.stderr)
        return 2 if isinstance(e, _USAGE_ERRORS) else 1
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
