"""How long the export and hls stages spend checking, at the default check sample and over the
whole test split, on Fashion-MNIST with the VGG-style CNN (vgg7-fm).

The stage checks compare torch, QONNX execution, the bit-serial C-sim and the emulator row by
row. Over the whole 10k-row test split they took minutes (QONNX execution and the C-sim run
tens of rows per second on this network); by default they run on the first ``check_rows`` (500).
Both settings run here side by side on the same trained network, one after the other in this
process, and the ratio is reported.

    python benchmarks/stage_checks.py [--build build/fm-vgg7] [--epochs 1] [--full]

Training: one epoch on all 60k rows (accuracy is not the point; the check cost does not depend
on it). ``--full`` also times the whole-split checks (about 15 minutes on 2 cores). Needs
Debian's dataset-fashion-mnist. Writes docs/benchmarks/stage_checks.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed_stages(cfg) -> dict:
    from flipq import pipeline

    out = {}
    for stage in ("export", "hls", "emulate"):
        t0 = time.perf_counter()
        pipeline.run(cfg, stage, stage)
        out[f"{stage}_wall_s"] = round(time.perf_counter() - t0, 2)
    report = pipeline.stage_report(cfg)
    export = json.loads((cfg.folder / "export.json").read_text())
    hls = json.loads((cfg.folder / "hls" / "hls.json").read_text())
    out.update(check_rows=export["check_rows"], export_check_s=round(export["seconds_check"], 2),
               hls_check_s=round(hls["seconds_check"], 2), hls_compile_s=round(hls["seconds_compile"], 2),
               agreement=report["agreement"], accuracy=report["accuracy"])
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build" / "fm-vgg7"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="also time the checks over the whole test split")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args(argv)

    from flipq import pipeline

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = pipeline.BuildConfig(out=args.build, dataset="fashion-mnist", arch="vgg7-fm", epochs=args.epochs,
                               progress=False)
    if not (Path(args.build) / "train.json").is_file():
        pipeline.run(cfg, "train", "train")
    rows = {"default": _timed_stages(cfg)}
    if args.full:
        rows["whole_split"] = _timed_stages(replace(cfg, check_rows=0))
    result = {"dataset": "fashion-mnist", "arch": "vgg7-fm", "epochs": args.epochs, "machine": platform.node(),
              "cores": __import__("os").cpu_count(), "runs": rows}
    if "whole_split" in rows:
        d, f = rows["default"], rows["whole_split"]
        result["check_time_ratio_whole_over_default"] = round(
            (f["export_check_s"] + f["hls_check_s"]) / (d["export_check_s"] + d["hls_check_s"]), 2)
    (out_dir / "stage_checks.json").write_text(json.dumps(result, indent=1))
    lines = ["# Stage checks: time spent (measured)", "",
             f"Fashion-MNIST, vgg7-fm, {args.epochs} training epoch(s), {result['cores']} cores; "
             "`benchmarks/stage_checks.py`.", "",
             "| checks on | rows | export check s | hls check s | hls compile s | export wall s | hls wall s | agreement |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        agree = ", ".join(f"{k} {v['equal']}/{v['total']}" for k, v in r["agreement"].items())
        lines.append(f"| {name} | {r['check_rows']} | {r['export_check_s']} | {r['hls_check_s']} | "
                     f"{r['hls_compile_s']} | {r['export_wall_s']} | {r['hls_wall_s']} | {agree} |")
    if "check_time_ratio_whole_over_default" in result:
        lines += ["", f"Whole split / default: {result['check_time_ratio_whole_over_default']}x the check time."]
    (out_dir / "stage_checks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
