"""FINN's CNV-2W2A (CIFAR-10 scale) through flipq: QONNX export, integer lowering, bit-serial
C-sim compile and run, emulator, and float32 torch on the same network and batch.

    python benchmarks/finn_cnv.py [--rows 128] [--batch 256] [--io-type io_parallel]
    python benchmarks/finn_cnv.py --shape-only      # CNV's topology, power-of-two only

The network is ``brevitas_examples.bnn_pynq`` CNV-2W2A with seeded random parameters (no
weights can be downloaded; see tests/finn_nets.py); inputs are random uint8 images / 255, as
FINN feeds them. ``--shape-only`` runs CNV's convs and dense layers with its own quantizers but
no BatchNorm, TensorNorm or ``2*x - 1`` (what flipq lowered before thresholds).

Measured: g++ compile seconds and peak memory (all compiler processes together, sampled, and
the largest single one), C-sim samples/s, emulator and float32 torch samples/s on the same batch
(one thread each), and agreement: C-sim = emulator (integers, every row; at ``planes=1`` on the
first rows too), emulator vs the Brevitas forward (equal rows, max |diff|, argmax). Writes
``docs/results/finn_cnv[_shape][_io_stream].json`` and regenerates ``docs/finn_cnv.md`` from those files.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from finn_nets import export_and_lower, finn_model, float_twin, random_images, shape_cnv, torch_forward  # noqa: E402

VARIANTS = {"finn": "cnv_2w2a", "shape": "shape_cnv"}
TARGETS = {"compile_s": 300, "compile_peak_mb": 8192, "csim_samples_per_s": 20, "emulator_vs_torch": 0.5}
PLANES1_ROWS = 8
IO_TYPES = ("io_parallel", "io_stream")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class PeakMemory:
    """Largest summed RSS of this process's children while the block runs (sampled every 20 ms):
    the two g++ units compile side by side, so their sum is what the machine must hold."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._me = psutil.Process()
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for child in self._me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def best_times(fns: dict, repeats: int = 5) -> dict:
    """Best wall time of each function, the runs interleaved so that load from other jobs on
    the machine falls on all of them alike."""
    for fn in fns.values():
        fn()  # warm-up (BLAS, torch kernels, the emulator's weight cache)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t0)
    return best


def rows_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a)
    return (a.reshape(n, -1) == b.reshape(n, -1)).all(axis=1)


_COMPILE = """
import json, resource, sys, time
from pathlib import Path
from flipq.hls.bitserial import compile_project
t0 = time.perf_counter()
compile_project(Path(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "largest_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def compile_measured(project_dir: Path) -> dict:
    """flipq's own compile step, in a child interpreter whose only children are the g++ runs (so
    its RUSAGE_CHILDREN peak is theirs), while this process samples their summed memory."""
    with PeakMemory() as mem:
        res = subprocess.run([sys.executable, "-c", _COMPILE, str(project_dir)], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    if res.returncode != 0:
        raise RuntimeError(f"compiling {project_dir} failed: {res.stderr.strip()[-2000:]}")
    child = json.loads(res.stdout.strip().splitlines()[-1])
    return {"compile_s": child["seconds"], "compile_peak_mb": mem.peak / 2**20,
            "compile_largest_process_mb": child["largest_kib"] / 1024}


def lane_loop_csim(build, q: np.ndarray, want: np.ndarray) -> dict:
    """The same project compiled with -DFLIPQ_CSIM_LANES (the kernel's lane loop, as synthesis
    builds it, instead of the popcount): its speed, and its rows equal to the emulator."""
    from flipq.hls.bitserial import compile_project
    from flipq.host.csim import CsimBackend

    say(f"compiling the lane-loop C-sim and running {len(q)} rows")
    lib = compile_project(build.project_dir, lib_name="liblanes.so", defines=("FLIPQ_CSIM_LANES",))
    with CsimBackend(lib, build.meta) as csim:
        t0 = time.perf_counter()
        got = csim.run(q, None)
        seconds = time.perf_counter() - t0
    return {"rows": len(q), "samples_per_s": round(len(q) / seconds, 2),
            "equal_rows": int(rows_equal(got, want).sum())}


def run_csim(lib: Path, meta: dict, q: np.ndarray, want: np.ndarray, chunk: int = 16) -> dict:
    from flipq.host.csim import CsimBackend

    got = np.empty_like(want)
    with CsimBackend(lib, meta) as csim:
        t0 = time.perf_counter()
        for start in range(0, len(q), chunk):
            got[start:start + chunk] = csim.run(q[start:start + chunk], None)
            done = min(start + chunk, len(q))
            say(f"  C-sim {done}/{len(q)} rows, {done / (time.perf_counter() - t0):.1f} samples/s")
        seconds = time.perf_counter() - t0
        low = csim.run(q[:PLANES1_ROWS], 1)
    return {"got": got, "seconds": seconds, "planes1": low}


def counted_vs_modeled(build, q_one: np.ndarray) -> dict:
    """The kernels' own cycle counts (one sample) against the cost model, at every planes."""
    from flipq.hls.cost import modeled_processes
    from flipq.host.csim import CsimBackend

    max_bits = max(lay.weight_bits for lay in build.plan.layers)
    equal, interval = [], {}
    with CsimBackend(build.lib_path, build.meta) as csim:
        for planes in range(1, max_bits + 1):
            counted = csim.count_cycles(q_one, planes)
            if counted == modeled_processes(build.plan, planes, build.io_type):
                equal.append(planes)
            interval[planes] = max(max(p.values()) for p in counted.values())
    return {"planes": list(range(1, max_bits + 1)), "equal_at_planes": equal, "counted_interval": interval}


def git_commit() -> str | None:
    with contextlib.suppress(Exception):
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    return None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape-only", action="store_true",
                    help="CNV's topology with power-of-two quantizers only (no BatchNorm, TensorNorm, 2*x-1)")
    ap.add_argument("--rows", type=positive_int, default=128, help="rows through C-sim, emulator and torch")
    ap.add_argument("--batch", type=positive_int, default=256, help="batch for the emulator/torch timing")
    ap.add_argument("--io-type", choices=IO_TYPES, default="io_parallel")
    ap.add_argument("--lanes-rows", type=int, default=4,
                    help="rows through a second C-sim built with -DFLIPQ_CSIM_LANES (0: skip)")
    ap.add_argument("--fold", default=None, metavar="BOARD",
                    help="fold SIMD/PE for this board (flipq.hls.folding) instead of PE 1 and the widest SIMD")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="build folder (default: a temporary one)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="folder for the JSON result")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "finn_cnv.md"), help="the Markdown table to regenerate")
    args = ap.parse_args(argv)
    # made first: a folder that cannot be made fails before minutes of work, not after
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.doc).parent.mkdir(parents=True, exist_ok=True)

    import torch
    from threadpoolctl import threadpool_limits

    from flipq.hls.bitserial import build_bitserial
    from flipq.host.emulator import Emulator

    variant = "shape" if args.shape_only else "finn"
    name = VARIANTS[variant]
    result_file = result_name(variant, args.io_type)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="flipq-finn-cnv-") as tmp:
        work = Path(args.work or tmp)
        say(f"building {name} (seed {args.seed}) and exporting QONNX")
        t0 = time.perf_counter()
        model = shape_cnv(args.seed) if variant == "shape" else finn_model(name, args.seed)
        shape = (3, 32, 32)
        raw, intmodel, prepared, plan = export_and_lower(model, shape, work)
        lower_s = time.perf_counter() - t0
        n_weights = sum(int(layer.weight.size) for layer in intmodel.mac_layers)
        say(f"  lowered in {lower_s:.1f} s: {len(intmodel.mac_layers)} MAC layers, {n_weights} weights")

        folding = None
        if args.fold:
            from flipq.boards import load_board
            from flipq.hls.folding import fold_for_board, folded_plan

            result_fold = fold_for_board(intmodel, load_board(args.fold), io_type=args.io_type)
            plan = folded_plan(intmodel, result_fold)
            folding = {"board": args.fold, **{k: v for k, v in result_fold.to_dict().items() if k != "label"}}
            say(f"  folded for {args.fold}: {result_fold.fps:.0f} fps modeled ({result_fold.binding})")
        say(f"converting with hls4ml ({args.io_type})")
        with contextlib.redirect_stdout(io.StringIO()):
            build = build_bitserial(intmodel, prepared, work / "hls", io_type=args.io_type, plan=plan,
                                    compile=False)
        say("compiling the C simulation with g++")
        comp = compile_measured(build.project_dir)
        say(f"  {comp['compile_s']:.1f} s, peak {comp['compile_peak_mb']:.0f} MB")

        images = random_images(args.rows, shape, args.seed + 100)
        x = (2.0 * images - 1.0).astype(np.float32) if variant == "shape" else images
        emu = Emulator(intmodel)
        q = emu.quantize_input(x)
        with threadpool_limits(1):
            want = emu.run(q)
        say(f"running the C-sim on {args.rows} rows")
        cs = run_csim(build.lib_path, build.meta, q, want)
        csim_ok = rows_equal(cs["got"], want)
        planes1_ok = rows_equal(cs["planes1"], Emulator(intmodel, planes=1).run(q[:PLANES1_ROWS]))
        cycles = counted_vs_modeled(build, q[:1])
        say(f"  counted cycles = modeled at planes {cycles['equal_at_planes']} of {cycles['planes']}")
        lanes = None
        if args.lanes_rows:
            lanes = lane_loop_csim(build, q[:args.lanes_rows], want[:args.lanes_rows])
            say(f"  the lane loop itself: {lanes['samples_per_s']:.1f} samples/s")

        say("Brevitas forward (the reference) on the same rows")
        torch.set_num_threads(1)
        ref = torch_forward(model, x)
        mine = intmodel.to_real(want).reshape(len(x), -1)
        diff = np.abs(mine - ref)

        batch = np.ascontiguousarray(np.resize(x, (args.batch, *x.shape[1:])))
        say(f"timing emulator and float32 torch on a batch of {args.batch} (one thread each)")
        twin = float_twin(model)
        tx = torch.from_numpy(batch)
        with torch.no_grad(), threadpool_limits(1):
            best = best_times({"torch": lambda: twin(tx), "emulator": lambda: emu.forward(batch)})
            brevitas_s = best_times({"brevitas": lambda: model(tx)}, repeats=1)["brevitas"]
        torch_s, emu_s = best["torch"], best["emulator"]
    load_after = os.getloadavg()

    result = {
        "network": name, "variant": variant, "seed": args.seed, "io_type": args.io_type,
        "mac_layers": len(intmodel.mac_layers), "weights": n_weights,
        "lower_s": round(lower_s, 2), "convert_s": round(build.convert_seconds, 2),
        "compile_s": round(comp["compile_s"], 2), "compile_peak_mb": round(comp["compile_peak_mb"], 1),
        "compile_largest_process_mb": round(comp["compile_largest_process_mb"], 1),
        "csim_rows": args.rows, "csim_samples_per_s": round(args.rows / cs["seconds"], 2),
        "lane_loop_csim": lanes,
        "batch": args.batch, "emulator_samples_per_s": round(args.batch / emu_s, 1),
        "torch_float32_samples_per_s": round(args.batch / torch_s, 1),
        "brevitas_samples_per_s": round(args.batch / brevitas_s, 1),
        "emulator_vs_torch": round(torch_s / emu_s, 3),
        "csim_equals_emulator_rows": [int(csim_ok.sum()), int(len(csim_ok))],
        "csim_equals_emulator_planes1_rows": [int(planes1_ok.sum()), int(len(planes1_ok))],
        "cycles_counted_equal_modeled": cycles, "folding": folding,
        "emulator_equals_torch_rows": [int((diff.max(axis=1) == 0).sum()), int(len(diff))],
        "emulator_torch_max_abs_diff": float(diff.max()),
        "output_bound_max": float(np.max(intmodel.output_bound())),
        "emulator_within_bound_rows": [int((diff <= intmodel.output_bound()).all(axis=1).sum()), int(len(diff))],
        "threshold_layers": sum(layer.op == "threshold" for layer in intmodel.layers),
        "argmax_classes": int(np.unique(ref.argmax(1)).size),
        "argmax_equal_rows": [int((mine.argmax(1) == ref.argmax(1)).sum()), int(len(diff))],
        "targets": TARGETS,
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in load_after], "threads": 1},
        "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (out / result_file).write_text(json.dumps(result, indent=1) + "\n")
    write_doc(out, Path(args.doc))
    say(f"wrote {out / result_file} and {args.doc}")
    print(json.dumps({k: v for k, v in result.items() if k not in ("targets", "machine")}, indent=1))
    return result


def result_name(variant: str, io_type: str) -> str:
    """finn_cnv.json (FINN's CNV, io_parallel), finn_cnv_shape.json, finn_cnv_io_stream.json, ..."""
    return "finn_cnv" + ("_shape" if variant == "shape" else "") + \
        ("" if io_type == "io_parallel" else f"_{io_type}") + ".json"


def _lanes(r: dict) -> str:
    lanes = r.get("lane_loop_csim")
    if not lanes:
        return "-"
    return f"{lanes['samples_per_s']:.1f} ({lanes['equal_rows']}/{lanes['rows']})"


def _fraction(pair) -> str:
    return f"{pair[0]}/{pair[1]}"


def write_doc(results: Path, doc: Path) -> None:
    """docs/finn_cnv.md: one column per result file present."""
    runs = [json.loads((results / result_name(v, io)).read_text()) for v in VARIANTS for io in IO_TYPES
            if (results / result_name(v, io)).is_file()]
    if not runs:
        return
    t = TARGETS
    rows = [
        ("network", "", lambda r: r["network"]),
        ("MAC layers / weights", "", lambda r: f"{r['mac_layers']} / {r['weights']:,}"),
        ("g++ compile, s", f"<= {t['compile_s']}", lambda r: f"{r['compile_s']:.1f}"),
        ("g++ peak memory, MB (all units together)", f"<= {t['compile_peak_mb']}",
         lambda r: f"{r['compile_peak_mb']:.0f}"),
        ("C-sim, samples/s", f">= {t['csim_samples_per_s']}", lambda r: f"{r['csim_samples_per_s']:.1f}"),
        ("C-sim with the lane loop (-DFLIPQ_CSIM_LANES), samples/s (rows equal)", "", _lanes),
        ("emulator, samples/s (1 thread)", "", lambda r: f"{r['emulator_samples_per_s']:.0f}"),
        ("float32 torch, samples/s (1 thread)", "", lambda r: f"{r['torch_float32_samples_per_s']:.0f}"),
        ("emulator / float32 torch", f">= {t['emulator_vs_torch']}", lambda r: f"{r['emulator_vs_torch']:.2f}"),
        ("Brevitas forward, samples/s (1 thread)", "", lambda r: f"{r['brevitas_samples_per_s']:.0f}"),
        ("C-sim = emulator, rows", "all", lambda r: _fraction(r["csim_equals_emulator_rows"])),
        ("C-sim = emulator at planes=1, rows", "all", lambda r: _fraction(r["csim_equals_emulator_planes1_rows"])),
        ("emulator = Brevitas, rows", "", lambda r: _fraction(r["emulator_equals_torch_rows"])),
        ("emulator vs Brevitas, max abs diff", "", lambda r: f"{r['emulator_torch_max_abs_diff']:.3g}"),
        ("emulator within the output bound, rows (largest bound)", "all",
         lambda r: f"{_fraction(r['emulator_within_bound_rows'])} ({r['output_bound_max']:.2g})"),
        ("argmax equal, rows (distinct classes)", "all",
         lambda r: f"{_fraction(r['argmax_equal_rows'])} ({r['argmax_classes']})"),
        ("threshold layers", "", lambda r: str(r["threshold_layers"])),
        ("folding", "", lambda r: (f"{r['folding']['board']}: {r['folding']['fps']:.0f} fps modeled"
                                   if r.get("folding") else "PE 1, widest SIMD")),
        ("counted C-sim cycles = modeled, at planes", "all", lambda r: (
            f"{r['cycles_counted_equal_modeled']['equal_at_planes']} of {r['cycles_counted_equal_modeled']['planes']}"
            if r.get("cycles_counted_equal_modeled") else "-")),
        ("load average (1 min) before / after", "", lambda r: "{} / {}".format(
            r["machine"]["loadavg_before"][0], r["machine"]["loadavg_after"][0])),
        ("date, commit", "", lambda r: f"{r['date']}, {r['commit']}"),
    ]
    lines = [
        "# FINN's CNV at CIFAR-10 scale",
        "",
        "Generated by `python benchmarks/finn_cnv.py` (and `--shape-only`) from `docs/results/finn_cnv*.json`.",
        "Random parameters (seeded; no weights can be downloaded here), random uint8 images / 255. The machine",
        f"has {runs[0]['machine']['cpus']} cores shared with other jobs: timings are noisy, the load average is",
        "recorded. Emulator and torch run one thread each on the same batch; the C-sim is one thread by",
        "construction. `shape_cnv` is CNV-2W2A without BatchNorm, TensorNorm and `2*x - 1`. The float output",
        "affine (TensorNorm) runs in float64 on the host against Brevitas' float32: rows differ within the bound",
        "the lowering states (`IntModel.output_bound`, docs/datapath.md), never in argmax.",
        "",
        "| | target | " + " | ".join(f"{r['variant']}, {r['io_type']}" for r in runs) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    lines += [f"| {label} | {target} | " + " | ".join(fn(r) for r in runs) + " |" for label, target, fn in rows]
    lines += [
        "",
        "Why the C-sim keeps up: the bit-serial kernel's lane loop (one `ap_int` add per weight bit and",
        "activation, what synthesis builds) runs CNV at 2-3 samples/s (the lane-loop row). In C simulation only",
        "(`#ifndef __SYNTHESIS__`), `flipq_bitserial_pe.h` slices each matrix-vector product's activations",
        "into bit-planes once and counts each plane's sum with one AND and one popcount per activation bit:",
        "the same integers, tested equal to the lane loop (`-DFLIPQ_CSIM_LANES`, tests/test_bitserial.py).",
        "g++ gets `-mpopcnt` on x86-64 (the library routine otherwise halves the speed). Compile memory is",
        "the sampled sum over the g++ processes (two units compile side by side).",
    ]
    doc.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
