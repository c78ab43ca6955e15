"""Compile time and peak memory of flipq's C simulation against the size of a layer's tables.

    python benchmarks/compile_scale.py [--sizes 1000 10000 100352] [--bits 6 8] [--rows 64]

1. **One table of N entries** (a layer's weight-plane ROM, step table or thresholds), written
   the two ways g++ can be given it: as ``ap_uint<W>`` entries (g++ runs one constructor per
   entry: what flipq's ``parameters.h`` held before) and as C integers of the same values (what
   it holds now in the C-sim: ``flipq::table_word``, flipq_bitserial_pe.h; synthesis still sees
   ``ap_uint<W>``). g++ -O2 seconds and the compiler's peak RSS (``wait4``).
2. **MLPerf Tiny's anomaly-detection autoencoder** (Dense 640-128-128-128-128-8-128-128-128-128-640,
   BatchNorm + ReLU after every hidden layer; seeded random weights and BatchNorm statistics, no
   data set here) at W6A6 and W8A8 through flipq: export, lowering (BatchNorm into thresholds:
   255 a channel at 8 bits), ``build_bitserial`` (the C-sim library: compile seconds and the
   peak summed RSS of the compilers, sampled), C-sim = emulator on every row and every ``planes``
   checked, emulator vs the Brevitas forward within the documented bound.

Writes ``docs/results/compile_scale.json`` and ``docs/compile_scale.md``. Figures are measured on
this machine (``platform`` in the JSON); nothing here is modeled.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from finn_cnv import PeakMemory, rows_equal, say  # noqa: E402

AD_FEATURES = 640


def compile_measured(source: Path, includes: list[Path]) -> dict:
    """g++ -O2 -c ``source``: wall seconds and the compiler's peak RSS in MB."""
    gxx = shutil.which("g++")
    cmd = [gxx, "-O2", "-std=c++17", *(f"-I{p}" for p in includes), "-c", str(source), "-o", os.devnull]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"g++ failed on {source}: {proc.stderr.read().decode()[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_mb": round(usage.ru_maxrss / 1024, 1)}


def table_sizes(sizes: list[int], work: Path) -> list[dict]:
    from flipq.hls.bitserial_writer import TEMPLATES
    from flipq.hls.cxx import ap_types

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        values = ",".join(f"0x{int(v):x}ULL" for v in rng.integers(0, 2 ** 16, n))
        row = {"entries": n}
        for form, decl in (("ap_uint", "ap_uint<16>"), ("c_integer", "flipq::table_word<16, false>::type")):
            src = work / f"table_{form}_{n}.cpp"
            src.write_text(f'#include "flipq_bitserial_pe.h"\nstatic const {decl} table[{n}] = {{{values}}};\n'
                           "unsigned read(unsigned i) { return (unsigned)ap_uint<16>(table[i]); }\n")
            say(f"table of {n:,} entries as {form} ...")
            row[form] = compile_measured(src, [ap_types(), TEMPLATES])
        row["time_ratio"] = round(row["ap_uint"]["seconds"] / max(row["c_integer"]["seconds"], 1e-3), 1)
        row["memory_ratio"] = round(row["ap_uint"]["peak_mb"] / max(row["c_integer"]["peak_mb"], 1e-3), 1)
        rows.append(row)
    return rows


def autoencoder(bits: int, seed: int = 0):
    """The MLPerf Tiny AD autoencoder in flipq's Brevitas family, W``bits``A``bits``, eval mode
    with seeded random weights and BatchNorm statistics."""
    import torch

    from flipq.quant.mlperf import ad_autoencoder

    torch.manual_seed(seed)
    net = ad_autoencoder(bits, bits)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


def autoencoder_run(bits: int, rows: int, work: Path) -> dict:
    import torch

    from flipq.hls.bitserial import build_bitserial
    from flipq.host.csim import CsimBackend
    from flipq.host.emulator import Emulator
    from finn_nets import export_and_lower

    folder = work / f"ad_w{bits}"
    net = autoencoder(bits)
    say(f"autoencoder W{bits}A{bits}: export and lower ...")
    _, intmodel, prepared, plan = export_and_lower(net, (AD_FEATURES,), folder)
    n_thr = max((layer.thresholds.shape[-1] for layer in intmodel.layers if layer.op == "threshold"), default=0)
    say(f"autoencoder W{bits}A{bits}: build the C-sim library ({n_thr} thresholds a channel) ...")
    with PeakMemory() as peak, contextlib.redirect_stdout(io.StringIO()):
        build = build_bitserial(intmodel, prepared, folder / "hls", io_type="io_parallel", plan=plan)
    x = np.random.default_rng(1).normal(0.0, 1.0, (rows, AD_FEATURES)).astype(np.float32)
    emu = Emulator(intmodel)
    q = emu.quantize_input(x)
    planes_equal = {}
    with CsimBackend(build.lib_path, build.meta) as csim:
        for planes in range(bits, 0, -1):
            planes_equal[planes] = int(rows_equal(csim.run(q, planes), Emulator(intmodel, planes=planes).run(q)).sum())
    with torch.no_grad():
        ref = net(torch.from_numpy(x))
        ref = (ref.value if hasattr(ref, "value") else ref).numpy().astype(np.float64)
    mine = emu.forward(x)
    excess = float((np.abs(mine - ref) - intmodel.output_bound()).max())
    params_mb = (build.project_dir / "firmware" / "parameters.h").stat().st_size / 2 ** 20
    return {"bits": bits, "thresholds_per_channel": int(n_thr), "parameters_h_mb": round(params_mb, 2),
            "compile_s": round(build.compile_seconds, 1), "compile_peak_mb": round(peak.peak / 2 ** 20),
            "rows": rows, "csim_equals_emulator": planes_equal,
            "emulator_vs_torch_beyond_bound": excess, "emulator_within_bound": excess <= 0}


def write_docs(result: dict, out_md: Path) -> None:
    lines = ["# C-simulation compile time and memory against table size", "",
             "Measured by `benchmarks/compile_scale.py` on this machine "
             f"({result['platform']}, g++ {result['gxx']}); nothing modeled.", "",
             "A layer's constant tables (weight-plane ROM words, the step table, thresholds) are "
             "`ap_uint<W>`/`ap_int<W>` where synthesis reads them. Written that way for the C-sim, g++ "
             "runs one constructor per entry: FINN's TFC on its 1x28x28 input (SIMD 1, a 100,352-word "
             "ROM) took 5.4 minutes to compile (this machine, before the change), and the MLPerf Tiny "
             "autoencoder at 8 bits (ten 128x255 threshold tables) crashed g++ 12 after 14.5 minutes "
             "and 6.5 GB (as issue 22 reports it). The C-sim "
             "now stores them as C integers of the same values (`flipq::table_word`, "
             "flipq_bitserial_pe.h; the kernels convert on every read); synthesis still sees the "
             "ap types (tests/test_bitserial.py checks both with the compiler).", "",
             "## One table of N entries (g++ -O2)", "",
             "| entries | ap_uint: s | ap_uint: peak MB | C integer: s | C integer: peak MB | time ratio | memory ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["tables"]:
        lines.append(f"| {r['entries']:,} | {r['ap_uint']['seconds']} | {r['ap_uint']['peak_mb']:,} | "
                     f"{r['c_integer']['seconds']} | {r['c_integer']['peak_mb']:,} | {r['time_ratio']}x | "
                     f"{r['memory_ratio']}x |")
    lines += ["", "## MLPerf Tiny anomaly-detection autoencoder through flipq", "",
              "Dense 640-128-128-128-128-8-128-128-128-128-640, BatchNorm + ReLU (thresholds), seeded "
              "random weights; compile = both C-sim units side by side, peak = their summed RSS.", "",
              "| widths | thresholds a channel | parameters.h MB | compile s | compile peak MB | "
              "C-sim = emulator (rows, every planes) | emulator vs Brevitas within bound |",
              "|---|---:|---:|---:|---:|---|---|"]
    for r in result["autoencoder"]:
        equal = ", ".join(f"p{k}: {v}/{r['rows']}" for k, v in r["csim_equals_emulator"].items())
        lines.append(f"| W{r['bits']}A{r['bits']} | {r['thresholds_per_channel']} | {r['parameters_h_mb']} | "
                     f"{r['compile_s']} | {r['compile_peak_mb']:,} | {equal} | {r['emulator_within_bound']} |")
    out_md.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100352])
    ap.add_argument("--bits", type=int, nargs="+", default=[6, 8])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "compile_scale.json")
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "compile_scale.md")
    args = ap.parse_args(argv)
    gxx = subprocess.run(["g++", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    result = {"platform": platform.platform(), "gxx": gxx}
    with tempfile.TemporaryDirectory(prefix="flipq_compile_scale_") as tmp:
        work = Path(tmp)
        result["tables"] = table_sizes(args.sizes, work)
        result["autoencoder"] = [autoencoder_run(bits, args.rows, work) for bits in args.bits]
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    write_docs(result, args.md)
    say(f"wrote {args.out} and {args.md}")
    bad = [r["bits"] for r in result["autoencoder"]
           if any(v != r["rows"] for v in r["csim_equals_emulator"].values()) or not r["emulator_within_bound"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
