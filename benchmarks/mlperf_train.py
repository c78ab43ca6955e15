"""The MLPerf Tiny image networks trained on Fashion-MNIST with ``flipq train --arch``, end to end.

    python benchmarks/mlperf_train.py [--archs resnet8 ds_cnn] [--seeds 0 1 2] [--epochs 6]

No data set of MLPerf Tiny's is on this machine (CIFAR-10 only from a user's path, nothing may be
downloaded); Fashion-MNIST (Debian's ``dataset-fashion-mnist``, 28x28x1) is, so the image networks
are trained on it at 28x28 with one input channel -- not the MLPerf Tiny task, stated. Each
(arch, seed) runs the commands a user runs, W4A4 (the arch's default plan), in its own build
folder: ``flipq train`` (the whole 60,000-row training split), ``export``, ``hls --io-type
io_stream --board pynq-z2``, ``emulate``, ``report``; recorded: the test accuracy of the trained
network on the 10,000-row test split (torch, from train.json), the accuracy and agreement of
torch / QONNX / C-sim / emulator on the first ``--check-rows`` test rows, the modeled fps and
chip utilization of the folding for the board.

The control at equal cost: the same command on ``vgg7-fm`` (flipq's plain VGG-style chain for
Fashion-MNIST) with the same epochs, plan widths and seeds; the paired differences per seed are
written beside the means.

Writes ``docs/results/mlperf_train.json`` and a section of ``docs/mlperf_tiny.md`` (between
markers, the rest of the page left as ``benchmarks/mlperf_tiny.py`` wrote it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- mlperf_train: begin -->", "<!-- mlperf_train: end -->"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def flipq(*args: str, timeout: int = 4 * 3600) -> None:
    r = subprocess.run([sys.executable, "-m", "flipq", *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"flipq {' '.join(args[:3])} failed:\n{r.stderr[-3000:]}")


def run_one(arch: str, seed: int, epochs: int, rows: int, work: Path, threads: int) -> dict:
    out = work / f"{arch}_s{seed}"
    common = ["--out", str(out), "--no-progress", "--check-rows", str(rows)]
    t0 = time.perf_counter()
    flipq("train", *common, "--arch", arch, "--dataset", "fashion-mnist", "--epochs", str(epochs),
          "--seed", str(seed), "--threads", str(threads), "--io-type", "io_stream", "--board", "pynq-z2")
    t_train = time.perf_counter() - t0
    for stage in ("export", "hls", "emulate", "report"):
        flipq(stage, *common, "--io-type", "io_stream", "--board", "pynq-z2")
    train = json.loads((out / "train.json").read_text())
    report = json.loads((out / "report.json").read_text())
    hls = json.loads((out / "hls" / "hls_report.json").read_text())
    t = hls["totals"]
    return {
        "arch": arch, "seed": seed, "epochs": epochs,
        "test_accuracy": train["history"]["test_accuracy"][-1],  # torch, all 10,000 test rows
        "check_rows": rows, "stage_accuracy": report["accuracy"], "agreement": report["agreement"],
        "all_stages_equal": all(v["equal"] == v["total"] for v in report["agreement"].values()),
        "fps_modeled": round(t["fps"], 1), "interval_cycles": t["interval"],
        "fits_pynq_z2": hls["board"]["fits"], "utilization": hls["board"]["utilization"],
        "train_seconds": round(t_train, 1), "seconds": round(time.perf_counter() - t0, 1),
    }


def summarize(rows: list, archs: list, control: str) -> dict:
    out = {}
    by = {(r["arch"], r["seed"]): r for r in rows}
    for arch in archs + [control]:
        mine = [r for r in rows if r["arch"] == arch]
        if not mine:
            continue
        acc = np.array([r["test_accuracy"] for r in mine])
        entry = {"seeds": [r["seed"] for r in mine], "test_accuracy_mean": round(float(acc.mean()), 4),
                 "test_accuracy_std": round(float(acc.std()), 4),
                 "fps_modeled": mine[0]["fps_modeled"], "fits_pynq_z2": mine[0]["fits_pynq_z2"],
                 "all_stages_equal_every_seed": all(r["all_stages_equal"] for r in mine)}
        if arch != control:
            pairs = [(r["seed"], r["test_accuracy"] - by[(control, r["seed"])]["test_accuracy"])
                     for r in mine if (control, r["seed"]) in by]
            entry[f"minus_{control}_per_seed"] = {str(s): round(d, 4) for s, d in pairs}
        out[arch] = entry
    return out


def write_doc(result: dict, path: Path) -> None:
    ctrl = result["control"]
    lines = [BEGIN, "", "## Trained on Fashion-MNIST (`flipq train --arch`)", "",
             f"`benchmarks/mlperf_train.py` ({result['date']}, {result['machine']}): each network trained "
             f"{result['epochs']} epochs on Fashion-MNIST's 60,000 training rows at 28x28x1 (not the MLPerf Tiny "
             "task: none of its data sets is here), W4A4 (the arch's default plan), then `export`, `hls --io-type "
             "io_stream --board pynq-z2`, `emulate`, `report` as a user runs them. Test accuracy: torch on all 10,000 "
             f"test rows. Stages: torch / QONNX / C-sim / emulator on the first {result['check_rows']} test rows. "
             f"Control at equal epochs, widths and seeds: `{ctrl}` (flipq's plain VGG-style chain). fps **modeled** "
             "(the calibrated cost model, io_stream folding for the board).", "",
             f"| network | seeds | test accuracy (mean +- std) | minus {ctrl}, per seed | every stage equal | fps (modeled) | fits the PYNQ-Z2 |",
             "|---|---|---|---|---|---|---|"]
    for arch, e in result["summary"].items():
        diff = e.get(f"minus_{ctrl}_per_seed")
        diff_text = ", ".join(f"{100 * d:+.2f}" for d in diff.values()) if diff else "(control)"
        lines.append(f"| {arch} | {len(e['seeds'])} | {100 * e['test_accuracy_mean']:.2f} +- "
                     f"{100 * e['test_accuracy_std']:.2f} % | {diff_text} | "
                     f"{'yes' if e['all_stages_equal_every_seed'] else 'NO'} | {e['fps_modeled']:,.0f} | "
                     f"{'yes' if e['fits_pynq_z2'] else 'no'} |")
    lines += ["", "Per run: `docs/results/mlperf_train.json`.", "", END]
    text = path.read_text() if path.is_file() else ""
    block = "\n".join(lines)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["resnet8", "ds_cnn"])
    p.add_argument("--control", default="vgg7-fm")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--check-rows", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default=str(ROOT / "build" / "mlperf_train"))
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "mlperf_train.json"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "mlperf_tiny.md"))
    args = p.parse_args()
    work, rows = Path(args.work), []
    json_path = Path(args.json)
    for seed in args.seeds:
        for arch in args.archs + [args.control]:
            say(f"{arch} seed {seed}: train {args.epochs} epochs ...")
            rows.append(run_one(arch, seed, args.epochs, args.check_rows, work, args.threads))
            r = rows[-1]
            say(f"{arch} seed {seed}: {100 * r['test_accuracy']:.2f} %, stages equal: {r['all_stages_equal']}, "
                f"{r['fps_modeled']:.0f} fps modeled, {r['seconds']:.0f} s")
            result = {"date": time.strftime("%Y-%m-%d"), "machine": "2-core CPU", "epochs": args.epochs,
                      "check_rows": args.check_rows, "control": args.control, "runs": rows,
                      "summary": summarize(rows, args.archs, args.control)}
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=1) + "\n")  # every run kept as it ends
            write_doc(result, Path(args.doc))
    say(f"wrote {json_path} and {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
