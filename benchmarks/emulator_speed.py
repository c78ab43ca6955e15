"""Emulator throughput against float32 PyTorch, qonnx execution and the hls4ml C-sim.

All four run the same network on the same batch in one process, one thread each; the
result is written as ratios to docs/benchmarks/emulator_speed.{json,md}.

    python benchmarks/emulator_speed.py [--build build/demo] [--batch 1024]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def float_torch_model(intmodel):
    """The same network in float32 PyTorch (dequantized weights, no quantizers)."""
    import torch
    import torch.nn as nn

    class NHWCFlatten(nn.Module):  # the integer model flattens channels-last
        def forward(self, x):
            return x.permute(0, 2, 3, 1).flatten(1)

    layers = []
    for layer in intmodel.layers:
        if layer.op == "conv":
            w = torch.from_numpy(layer.weight.astype(np.float32) * 2.0 ** layer.attrs["w_exp"])
            kh, kw, cin, cout = w.shape
            top, left, bottom, right = layer.attrs["pads"]
            conv = nn.Conv2d(cin, cout, (kh, kw), stride=tuple(layer.attrs["stride"]), padding=(top, left),
                             bias=False)
            conv.weight.data = w.permute(3, 2, 0, 1).contiguous()
            layers.append(conv)
        elif layer.op == "dense":
            w = torch.from_numpy(layer.weight.astype(np.float32) * 2.0 ** layer.attrs["w_exp"])
            lin = nn.Linear(w.shape[0], w.shape[1], bias=False)
            lin.weight.data = w.T.contiguous()
            layers.append(lin)
        elif layer.op in ("relu", "requant"):
            layers.append(nn.ReLU())
        elif layer.op == "maxpool":
            layers.append(nn.MaxPool2d(tuple(layer.attrs["kernel"]), tuple(layer.attrs["stride"])))
        elif layer.op == "flatten":
            layers.append(NHWCFlatten())
    return nn.Sequential(*layers).eval()


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build" / "demo"), help="a `flipq demo` build folder")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--qonnx-rows", type=int, default=64, help="rows for qonnx (it is slow)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args(argv)
    # made first: a folder that cannot be made fails before minutes of work, not after
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from threadpoolctl import threadpool_limits

    from flipq.host.accelerator import Accelerator
    from flipq.host.emulator import Emulator
    from flipq.host.intmodel import IntModel

    build = Path(args.build)
    if not (build / "hls" / "intmodel.json").is_file():
        from flipq import pipeline

        pipeline.run(pipeline.BuildConfig(out=str(build), progress=False))
    intmodel = IntModel.load(build / "hls")
    with np.load(build / "data.npz") as d:
        x_test = d["x_test"]
    reps = -(-args.batch // len(x_test))
    x = np.concatenate([x_test] * reps)[: args.batch]
    torch.set_num_threads(1)
    results = {}
    with threadpool_limits(1):
        emu = Emulator(intmodel)
        q = emu.quantize_input(x)
        results["emulator"] = args.batch / timed(lambda: emu.run(q), 5)

        tmodel = float_torch_model(intmodel)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            results["torch_float32"] = args.batch / timed(lambda: tmodel(xt), 5)

        from flipq.hls.prepare import load_qonnx
        from flipq.quant.export import execute_qonnx

        prepared = load_qonnx(build / "hls" / "model_prepared.onnx")
        xq = x[: args.qonnx_rows].transpose(0, 2, 3, 1)
        results["qonnx_execute_onnx"] = args.qonnx_rows / timed(lambda: execute_qonnx(prepared, xq), 1)

        csim_kind = None
        try:
            acc = Accelerator.load(build, backend="csim")
            results["csim_predict"] = args.batch / timed(lambda: acc.predict_int(q.transpose(0, 3, 1, 2)), 3)
            csim_kind = "bit-serial (flipq C ABI)"
        except (FileNotFoundError, ImportError):
            from flipq.hls.stock import build_stock, predict_stock

            sb = build_stock(prepared, intmodel, build / "hls" / "stock")
            results["csim_predict"] = args.batch / timed(lambda: predict_stock(sb, intmodel, q), 3)
            csim_kind = "stock hls4ml predict()"

    base = results["emulator"]
    report = {
        "network": intmodel.plan.to_dict() if intmodel.plan else None,
        "batch": args.batch, "threads": 1, "machine": platform.processor() or platform.machine(),
        "throughput_samples_per_s": {k: round(v, 1) for k, v in results.items()},
        "emulator_speedup_over": {k: round(base / v, 3) for k, v in results.items() if k != "emulator"},
        "csim_kind": csim_kind,
        "targets": {"torch_float32": ">= 0.5 (emulator / torch)", "qonnx_execute_onnx": ">= 100",
                    "csim_predict": ">= 10"},
    }
    (out / "emulator_speed.json").write_text(json.dumps(report, indent=1))
    lines = ["# Emulator speed", "",
             f"Same network (the demo model), batch {args.batch}, one thread each, one process "
             "(`benchmarks/emulator_speed.py`).", "",
             "| engine | samples/s | emulator speed-up |", "|---|---:|---:|"]
    for k, v in results.items():
        ratio = "1" if k == "emulator" else f"{base / v:.2f}x"
        lines.append(f"| {k} | {v:,.0f} | {ratio} |")
    lines += ["", f"C-sim: {csim_kind}. qonnx measured on {args.qonnx_rows} rows."]
    (out / "emulator_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
