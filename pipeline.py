"""The build: one frozen config, five stages, one folder.

``STAGES`` lists the stages in order; each is a plain function ``stage(cfg)`` that reads the
artifacts earlier stages left in ``cfg.out`` and writes its own, so any stage can be rerun
alone and ``run(cfg, start=..., stop=...)`` resumes a build.

Folder layout::

    config.json  plan.toml  checkpoint.pt  train.json  data.npz
    model.onnx   export.json
    hls/         (hls4ml project, intmodel.json/.npz, hls.json)
    outputs/     torch.npy qonnx.npy csim.npy emulator.npy
    report.json  layers.png
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from flipq.host.files import replacing, write_json

STAGE_NAMES = ("train", "export", "hls", "emulate", "report", "overlay")


@dataclass(frozen=True)
class BuildConfig:
    out: str
    dataset: str = "digits"
    data_path: str | None = None
    arch: str = "digits-cnn"
    plan: str | None = None  # a plan.toml to train with; default: the architecture's plan
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    io_type: str = "io_parallel"
    kernel: str = "bitserial"  # or "stock": hls4ml's own bit-parallel kernels
    group_size: int = 0  # weight-group size for layers whose plan gives none (0: whole fan-in)
    pe: str = ""  # PEs per layer, "conv1=4,fc1=2" (default 1 each)
    simd: str = ""  # SIMD lanes per layer, "conv1=8" (default: the widest each layer allows, <= 64)
    fold: bool = False  # hls picks SIMD/PE per layer for the board (flipq.hls.folding) instead
    target_fps: float = 0.0  # with fold: the throughput to reach (0: the most that fits)
    board: str = "pynq-z2"  # the board whose resources the hls report is checked against
    flip: dict | None = None  # FlipConfig fields: retrain with flip-based extra-bit allocation
    float_epochs: int = 0  # train a float twin first and start QAT from its weights
    # planes-aware training (flipq.quant.planesaware): each step at a run-time planes drawn from
    # planes_aware .. the widest weights' bits; 0: off
    planes_aware: int = 0
    planes_full_share: float | None = None  # its share of full-precision steps (None: all planes alike)
    weight_scale: str = "mse"  # power-of-two weight-scale rule (flipq.quant.scaling): "mse" or "absmax"
    # torch threads: small nets train fastest on one, and two threads spin badly against any
    # other busy process on a 2-core machine (seen here: 7x slower)
    threads: int = 1
    progress: bool = True
    # Rows of the test split the stage checks run on (torch, QONNX execution, C-sim, emulator
    # compared row by row); 0 = the whole split. QONNX execution and the C-sim take seconds per
    # hundred rows on a conv net, so a full 10k-row split is opt-in (--check-rows 0).
    check_rows: int = 500
    rtl: bool = False  # hls also builds the RTL twin: Verilator check and cycles, Yosys resources
    yosys: bool = True  # with rtl: map it with Yosys (skipped, and said so, where Yosys is absent)

    def pe_map(self) -> dict[str, int]:
        """``pe`` parsed: layer name -> number of PEs."""
        return _layer_counts(self.pe, "--pe")

    def simd_map(self) -> dict[str, int]:
        """``simd`` parsed: layer name -> SIMD lanes."""
        return _layer_counts(self.simd, "--simd")

    # What a saved config.json that lacks a field meant: builds from before the weight-scale rule
    # was a field were trained with absmax scales, and rebuilding their networks with another rule
    # would quantize the weights differently.
    LEGACY_DEFAULTS: ClassVar[dict] = {"weight_scale": "absmax", "planes_aware": 0, "planes_full_share": None}

    @property
    def folder(self) -> Path:
        return Path(self.out)

    def need(self, name: str, stage: str) -> Path:
        """``folder / name``, which stage ``stage`` writes; a clear error when it is not there."""
        path = self.folder / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the '{stage}' stage first")
        return path

    def outputs_dir(self) -> Path:
        """``outputs/``, where each checking stage leaves its outputs on the check rows."""
        p = self.folder / "outputs"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def test_split(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.need("data.npz", "train")) as d:
            return d["x_test"], d["y_test"]

    def check_split(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows every stage check runs on: the first ``check_rows`` of the test split (all of
        it when 0). Every checking stage uses the same rows, so the report compares like with like."""
        x, y = self.test_split()
        n = len(y) if not self.check_rows else min(int(self.check_rows), len(y))
        return x[:n], y[:n]

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / "config.json", asdict(self))

    @classmethod
    def load(cls, out: str | Path, **overrides) -> "BuildConfig":
        path = Path(out) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"build config not found: {path} (run `flipq train --out {out}` first)")
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: corrupt build config ({e})") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path}: corrupt build config (a JSON {type(data).__name__}, expected an object); "
                             f"rerun `flipq train --out {out}`")
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in {**cls.LEGACY_DEFAULTS, **data, "out": str(out)}.items() if k in known})
        rows = cfg.check_rows
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ValueError(f"{path}: field 'check_rows' = {rows!r} must be an int >= 0 (0: the whole test split)")
        return replace(cfg, out=str(out), **{k: v for k, v in overrides.items() if v is not None})


def _record(cfg: BuildConfig, name: str, info: dict) -> None:
    write_json(cfg.folder / f"{name}.json", info)


def load_test_split(cfg: BuildConfig) -> tuple[np.ndarray, np.ndarray]:
    return cfg.test_split()


def load_check_split(cfg: BuildConfig) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`BuildConfig.check_split` (the stages call the method: they never import this module)."""
    return cfg.check_split()


# -- stages --------------------------------------------------------------------------------
def stage_train(cfg: BuildConfig) -> None:
    from flipq.quant.stage import stage_train as train_stage

    train_stage(cfg)


def stage_export(cfg: BuildConfig) -> None:
    from flipq.quant.stage import stage_export as export_stage

    export_stage(cfg)


def stage_hls(cfg: BuildConfig, model_path: str | Path | None = None) -> dict:
    """Lower QONNX to the integer model, convert with hls4ml (bit-serial kernels by default),
    compile the C simulation, run it on the check rows, write ``hls/hls_report.json``
    (:func:`flipq.hls.stage.stage_hls`)."""
    from flipq.hls.stage import stage_hls as run_hls

    return run_hls(cfg, model_path)


def stage_emulate(cfg: BuildConfig) -> None:
    from flipq.host.emulator import Emulator
    from flipq.host.intmodel import IntModel

    t0 = time.perf_counter()
    emu = Emulator(IntModel.load(cfg.need("hls/intmodel.json", "hls").parent))
    x, _ = cfg.check_split()
    with replacing(cfg.outputs_dir() / "emulator.npy") as tmp:
        np.save(tmp, emu.forward(x))
    _record(cfg, "emulate", {"seconds": time.perf_counter() - t0})


PAIRS = (("torch", "qonnx"), ("qonnx", "csim"), ("csim", "emulator"))


def stage_report(cfg: BuildConfig) -> dict:
    from flipq.host.intmodel import IntModel, outputs_agree

    _, y = cfg.check_split()
    outs = {}
    for name in ("torch", "qonnx", "csim", "emulator"):
        f = cfg.folder / "outputs" / f"{name}.npy"
        if f.is_file():
            out = np.load(f, allow_pickle=False)
            if len(out) != len(y):  # e.g. `flipq hls --check-rows 16`, then emulate with the saved 500
                raise ValueError(f"{f} holds {len(out)} rows, the check split {len(y)}: rerun the stage that wrote "
                                 f"it with --check-rows {cfg.check_rows}, or this report with --check-rows {len(out)}")
            outs[name] = out.reshape(len(y), -1)
    report: dict = {
        "dataset": cfg.dataset, "arch": cfg.arch, "test_rows": int(len(y)),
        "accuracy": {k: float((v.argmax(1) == y).mean()) for k, v in outs.items()},
        "agreement": {},
    }
    intmodel = IntModel.load(cfg.folder / "hls") if (cfg.folder / "hls" / "intmodel.json").is_file() else None
    bound = intmodel.output_bound() if intmodel is not None else 0.0
    for a, b in PAIRS:
        if a in outs and b in outs:
            # a float output affine: within its documented bound (both sides float32 references:
            # twice it) with the same argmax; csim~emulator share the integers, so exact anyway
            pair_bound = 0.0 if (a, b) == ("csim", "emulator") else bound * (2 if a == "torch" else 1)
            ok = outputs_agree(outs[a], outs[b], pair_bound)
            report["agreement"][f"{a}~{b}"] = {"equal": int(ok.sum()), "total": int(len(y))}
            if np.any(pair_bound):
                report["agreement"][f"{a}~{b}"]["within_bound"] = float(np.max(pair_bound))
    if intmodel is not None:
        report["layers"] = []
        for layer in intmodel.mac_layers:
            entry = {"name": layer.name, "type": layer.op, "weight_bits": layer.attrs["weight_bits"],
                     "act_bits": layer.attrs["act_bits"],
                     # a grouped conv's own weights (the integer model holds them block-diagonal)
                     "params": int(layer.weight.size) // int(layer.attrs.get("groups", 1) or 1)}
            groups = layer.attrs.get("group_bits")
            if groups:  # flip allocation: stored at weight_bits, most groups one bit narrower
                entry["groups_with_extra_bit"] = round(
                    sum(b == entry["weight_bits"] for b in groups) / len(groups), 4)
            report["layers"].append(entry)
        report["model_hash"] = intmodel.digest()
    timings = {}
    for stage, f in (("train", "train.json"), ("export", "export.json"), ("hls", "hls/hls.json"),
                     ("emulate", "emulate.json")):
        p = cfg.folder / f
        if p.is_file():
            timings[stage] = round(json.loads(p.read_text())["seconds"], 3)
    report["timings"] = timings
    write_json(cfg.folder / "report.json", report)
    return report


def stage_overlay(cfg: BuildConfig):
    """The PYNQ overlay folder for the build's board (:func:`flipq.overlays.flow.stage_overlay`)."""
    from flipq.overlays.flow import stage_overlay as overlay_stage

    return overlay_stage(cfg)


STAGES = {"train": stage_train, "export": stage_export, "hls": stage_hls,
          "emulate": stage_emulate, "report": stage_report, "overlay": stage_overlay}


def run(cfg: BuildConfig, start: str = "train", stop: str = "report") -> dict | None:
    """Run stages ``start..stop`` in order (both inclusive)."""
    for name in (start, stop):
        if name not in STAGES:
            raise ValueError(f"unknown stage '{name}' (stages: {', '.join(STAGE_NAMES)})")
    names = STAGE_NAMES[STAGE_NAMES.index(start): STAGE_NAMES.index(stop) + 1]
    result = None
    for name in names:
        result = STAGES[name](cfg)
    return result


def format_report(report: dict) -> str:
    """The summary table `flipq demo` prints."""
    lines = [f"flipq build: {report['arch']} on {report['dataset']} ({report['test_rows']} test rows)", ""]
    if "layers" in report:
        width = max([10] + [len(layer["name"]) + 2 for layer in report["layers"]])
        lines.append(f"{'layer':<{width}}{'type':<8}{'W bits':>7}{'A bits':>7}{'params':>9}")
        for layer in report["layers"]:
            extra = layer.get("groups_with_extra_bit")
            note = "" if extra is None else f"   ({100 * extra:.0f} % of groups use bit {layer['weight_bits']})"
            # a layer reading a sum or a pool's average reads no quantizer of its own: no A bits
            act = "-" if layer["act_bits"] is None else layer["act_bits"]
            lines.append(f"{layer['name']:<{width}}{layer['type']:<8}{layer['weight_bits']:>7}"
                         f"{act:>7}{layer['params']:>9}{note}")
        lines.append("")
    lines.append(f"{'stage':<10}{'accuracy':>9}{'seconds':>9}")
    for stage in ("torch", "qonnx", "csim", "emulator"):
        if stage in report["accuracy"]:
            t = {"torch": "train", "qonnx": "export", "csim": "hls", "emulator": "emulate"}[stage]
            sec = report["timings"].get(t)
            lines.append(f"{stage:<10}{report['accuracy'][stage]:>9.4f}{'' if sec is None else f'{sec:9.1f}'}")
    lines.append("")
    lines.append(f"{'agreement':<18}{'equal rows':>12}")
    for pair, v in report["agreement"].items():
        mark = "ok" if v["equal"] == v["total"] else "MISMATCH"
        lines.append(f"{pair:<18}{v['equal']:>6}/{v['total']:<5} {mark}")
    return "\n".join(lines)


def _layer_counts(text: str, flag: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, count = item.partition("=")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{flag} entry '{item}': expected LAYER=N with N >= 1")
        out[name.strip()] = int(count)
    return out


def format_hls_report(report: dict) -> str:
    """Per-layer modeled cycles and resources of ``hls_report.json``."""
    w = max([10] + [len(layer["name"]) + 2 for layer in report["layers"]])  # module paths run long
    lines = ["modeled: cycles from the bit-serial cost model, resources pre-synthesis estimates "
             "(docs/cost_model.md); nothing here was measured on a board or by Vivado",
             f"{'layer':<{w}}{'kernel':<8}{'W':>3}{'A':>3}{'SIMD':>5}{'PE':>4}{'cycles':>10}{'C-sim':>10}"
             f"{'LUT':>8}{'FF':>8}{'BRAM36':>8}{'DSP':>5}"]
    for layer in report["layers"]:
        counted = layer.get("csim_cycles", "-")
        lines.append(f"{layer['name']:<{w}}{layer['kernel']:<8}{layer['weight_bits']:>3}{layer['act_bits']:>3}"
                     f"{layer.get('simd', '-'):>5}{layer.get('pe', '-'):>4}{layer['cycles']:>10}{counted:>10}"
                     f"{layer['lut']:>8.0f}{layer['ff']:>8.0f}{layer['bram36']:>8.1f}{layer['dsp']:>5}")
    t = report["totals"]
    lines.append(f"{'total':<{w + 23}}{t['cycles']:>10}{'':>10}{t['lut']:>8.0f}{t['ff']:>8.0f}{t['bram36']:>8.1f}"
                 f"{t['dsp']:>5}")
    if "interval" in t:
        line = (f"interval {t['interval']} cycles (slowest layer): {t.get('fps', 0):.0f} samples/s modeled at "
                f"{t['clock_mhz']:g} MHz")
        if "csim_matches_model" in t:
            line += ("; C-sim counted the same cycles" if t["csim_matches_model"]
                     else "; C-SIM COUNTED OTHER CYCLES THAN THE MODEL (a bug: please report it)")
        lines.append(line)
    if report.get("folding"):
        f = report["folding"]
        lines.append(f"folding: chosen for the board, stopped by {f['binding']}")
    board = report.get("board")
    if board:
        use = ", ".join(f"{k} {100 * v:.1f} %" for k, v in board["utilization"].items())
        verdict = "fits" if board["fits"] else "DOES NOT FIT: " + "; ".join(board["over"])
        lines.append(f"{board['name']}: {use} -- {verdict}")
    return "\n".join(lines)
