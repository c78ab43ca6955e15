"""What a search shows and leaves behind: its progress bar, ``search.json`` (every evaluation),
the Pareto front as ``pareto.json`` and ``pareto.csv``, the plot ``search.png`` (validation
error against modeled energy, colour = modeled fps), and a chosen point's BitPlan, folding and
model (:func:`pick`) in the forms ``flipq train --plan`` and ``flipq hls --pe/--simd`` take.

>>> paths = pick("build/search", 0)                  # doctest: +SKIP
>>> print(paths["hls_command"])                      # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from flipq.host.files import write_atomic, write_json

# what the search minimizes, in the order of its objective vectors (flipq.quant.search)
OBJECTIVES = ("error", "energy_uj", "interval_cycles", "weight_bits")

CSV_FIELDS = ("index", "bits", "fold_level", "val_accuracy", "error", "energy_uj", "interval_cycles", "fps",
              "latency_cycles", "weight_bits", "lut", "ff", "bram36", "dsp", "simd", "pe", "cache_key")


_CACHE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


class PickError(ValueError):
    """A --pick that names no point of the search's front, or a folder without a finished search."""


class SearchProgress:
    """A progress bar over the evaluation budget (population x generations): evaluations done
    and left, trainings run, and the best design so far (lowest modeled energy among those
    that fit, with its error)."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="search", unit="eval", disable=not enabled, leave=False)
        self.n_trained = 0
        self.best = None

    def trained(self) -> None:
        self.n_trained += 1

    def evaluated(self, rec: dict) -> None:
        if rec["fits"] and (self.best is None or rec["energy_uj"] < self.best["energy_uj"]):
            self.best = rec
        self.bar.update(1)
        post = {"trained": self.n_trained}
        if self.best is not None:
            post["best"] = f"{self.best['energy_uj']:.1f}uJ err {self.best['error']:.3f}"
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        self.bar.close()


def bits_text(rec: dict) -> str:
    return " ".join(f"{v['weight_bits']}/{v['act_bits']}" for v in rec["bits"].values())


def layer_map(values: dict) -> str:
    """``{"conv1": 2, "fc1": 4}`` -> ``conv1=2,fc1=4`` (what ``flipq hls --pe/--simd`` take)."""
    return ",".join(f"{k}={int(v)}" for k, v in values.items())


def write_result(result, cfg, arch: str, out: Path) -> None:
    """search.json, pareto.json, pareto.csv and search.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)

    head = {"label": "modeled energy, interval and resources (flipq.hls.energy, flipq.hls.cost); "
                     "validation accuracy measured", "config": asdict(cfg), "arch": arch, "layers": result.names,
            "objectives": list(OBJECTIVES), "seconds": result.seconds, "trained": result.trained}
    write_json(out / "search.json", {**head, "evaluated": result.evaluated, "pareto": result.pareto})
    write_json(out / "pareto.json", {**head, "pareto": result.pareto})
    write_atomic(out / "pareto.csv", _csv(result.pareto))
    plot(result, out / "search.png")


def _csv(rows: list[dict]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for i, r in enumerate(rows):
        w.writerow({"index": i, "bits": bits_text(r), "fold_level": r["fold_level"], "val_accuracy": r["val_accuracy"],
                    "error": r["error"], "energy_uj": r["energy_uj"], "interval_cycles": r["interval_cycles"],
                    "fps": r["fps"], "latency_cycles": r["latency_cycles"], "weight_bits": r["weight_bits"],
                    **r["resources"], "simd": layer_map(r["simd"]), "pe": layer_map(r["pe"]),
                    "cache_key": r["cache_key"]})
    return buf.getvalue()


def plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    fit = [e for e in result.evaluated if e["fits"]]
    over = [e for e in result.evaluated if not e["fits"]]
    if fit:
        sc = ax.scatter([e["energy_uj"] for e in fit], [100 * e["error"] for e in fit], c=[e["fps"] for e in fit],
                        cmap="viridis", s=18, label="evaluated (fits)")
        fig.colorbar(sc, ax=ax, label="modeled fps")
    if result.pareto:
        ax.scatter([e["energy_uj"] for e in result.pareto], [100 * e["error"] for e in result.pareto], s=60,
                   facecolors="none", edgecolors="tab:red", label="Pareto front")
    if over:
        ax.scatter([e["energy_uj"] for e in over], [100 * e["error"] for e in over], marker="x", color="0.6", s=14,
                   label="does not fit the board")
    ax.set_xscale("log")
    ax.set_xlabel("modeled energy per inference (uJ)")
    ax.set_ylabel("validation error (%)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pick(out: str | Path, index: int, dest: str | Path | None = None) -> dict:
    """Write point ``index`` of the search in ``out`` (its Pareto front, by energy) into
    ``dest`` (default ``out/pick_<index>``): ``plan.toml`` (``flipq train --plan``),
    ``folding.json`` (SIMD/PE per layer), ``model.onnx`` (the candidate the search costed) and
    the commands that build it to the figures the search saw."""
    out = Path(out)
    path = out / "pareto.json"
    if not path.is_file():
        raise PickError(f"{path} not found: run `flipq search --out {out}` first (--pick chooses from its front)")
    try:
        front = json.loads(path.read_text())
    except ValueError as e:
        raise PickError(f"{path}: not valid JSON ({e}); rerun `flipq search --out {out}`") from None
    points = front.get("pareto") if isinstance(front, dict) else None
    if not isinstance(points, list):
        raise PickError(f"{path}: field 'pareto' is not a list of designs; rerun `flipq search --out {out}`")
    if not points:
        raise PickError(f"--pick {index}: the front in {path} is empty (no design fit the board); nothing to "
                        "pick: search again with more generations or another --board")
    if not 0 <= index < len(points):
        raise PickError(f"--pick {index}: the front in {path} has {len(points)} points (0..{len(points) - 1})")
    rec = points[index]
    try:
        return _pick(out, path, front, rec, index, dest)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise PickError(f"{path}: design {index} is malformed ({type(e).__name__}: {e}); rerun "
                        f"`flipq search --out {out}`") from None


def _pick(out: Path, path: Path, front: dict, rec: dict, index: int, dest) -> dict:
    from flipq.host.files import confined
    from flipq.host.names import check_layer_names
    from flipq.quant.candidate import plan_from_bits

    key = rec["cache_key"]
    if not isinstance(key, str) or not _CACHE_KEY.fullmatch(key):
        raise PickError(f"{path}: field 'pareto[{index}].cache_key' = {key!r} is not a cache key (letters, digits, "
                        "'_' and '-'); rerun the search")
    model = confined(out / "cache", f"{key}.onnx", str(path), f"pareto[{index}].cache_key")
    for field in ("simd", "pe"):
        check_layer_names(rec[field], str(path), f"pareto[{index}].{field}")
    dest = Path(dest) if dest else out / f"pick_{index}"
    dest.mkdir(parents=True, exist_ok=True)
    plan_from_bits(front["layers"], rec["genome"][:-1]).save(dest / "plan.toml")
    cfg = front["config"]
    folding = {"label": "modeled", "simd": rec["simd"], "pe": rec["pe"], "board": cfg["board"],
               "io_type": cfg["io_type"], "group_size": cfg["group_size"], "fold_level": rec["fold_level"],
               "target_fps": rec["target_fps"], "fps": rec["fps"], "interval_cycles": rec["interval_cycles"],
               "energy_uj": rec["energy_uj"], "val_accuracy": rec["val_accuracy"]}
    write_json(dest / "folding.json", folding)
    if not model.is_file():
        raise PickError(f"{model} not found: the search's cache was removed; rerun `flipq search --out {out}` "
                        "with its settings (it retrains only what is missing)")
    shutil.copyfile(model, dest / "model.onnx")
    hls = (f"flipq hls {dest / 'model.onnx'} --out BUILD --board {cfg['board']} --io-type {cfg['io_type']} "
           f"--group-size {cfg['group_size']} --pe {layer_map(rec['pe'])} --simd {layer_map(rec['simd'])}")
    train = (f"flipq train --out BUILD --arch {front['arch']} --plan {dest / 'plan.toml'} "
             f"--group-size {cfg['group_size']}")
    return {"folder": dest, "record": rec, "hls_command": hls, "train_command": train}
