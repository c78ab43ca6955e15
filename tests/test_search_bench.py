"""benchmarks/search.py end to end on fake data and a tiny network: the JSON schema of issue 13,
the paired per-seed differences, the uniform control, the finals plot, and a second run that
trains nothing (search and finals both come from the cache)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("search_bench", ROOT / "benchmarks" / "search.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["search_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def bench(monkeypatch):
    from flipq.quant.data import Dataset

    mod = _load()
    rng = np.random.default_rng(0)
    x = rng.random((260, 1, 8, 8), dtype=np.float32)
    y = (x[:, 0, :4].mean((1, 2)) > 0.5).astype(np.int64) + 2 * (x[:, 0, 4:].mean((1, 2)) > 0.5)
    fake = Dataset("fashion-mnist", x[:200], y[:200], x[200:], y[200:])
    monkeypatch.setattr(mod, "load_dataset", lambda *a, **k: fake)
    return mod


TINY = ["--arch", "digits-cnn", "--train-size", "200", "--population", "4", "--generations", "1",
        "--qat-epochs", "1", "--float-epochs", "1", "--final-epochs", "1", "--seeds", "0", "1",
        "--val-tolerance", "1.0", "--max-candidates", "1", "--uniform-control", "6", "4", "--workers", "1"]


def test_tiny_run_writes_the_issue_schema_with_controls_and_resumes(tmp_path, bench, monkeypatch):
    out, work = tmp_path / "new" / "results", tmp_path / "work"
    assert bench.main(TINY + ["--out", str(out), "--work", str(work)]) == 0
    summary = json.loads((out / "search.json").read_text())
    for key in ("energy_saving_vs_w8a8", "accuracy", "accuracy_w8a8", "accuracy_w8a8_std", "fps", "fps_w8a8"):
        assert key in summary
    assert 0 < summary["accuracy_w8a8"] <= 1 and summary["fps_w8a8"] > 0 and summary["energy_uj_w8a8"] > 0
    n = 2 * 3  # digits-cnn: three MAC layers, (w, a) each; then the folding level
    w8 = str([8] * n + [0])
    assert set(summary["final"][w8]) == {"0", "1"}
    control = summary["uniform_control"]
    assert set(control["widths"]) == {"W6A6", "W4A4"}
    acc_w8 = [summary["final"][w8][s]["accuracy"] for s in ("0", "1")]
    for name, entry in control["widths"].items():
        b = int(name[1])
        runs = summary["final"][str([b] * n + [0])]
        assert entry["accuracy"] == pytest.approx(np.mean([runs[s]["accuracy"] for s in ("0", "1")]))
        assert entry["energy_saving"] == pytest.approx(1 - runs["0"]["energy_uj"] / summary["energy_uj_w8a8"])
        assert entry["keeps_w8a8_accuracy"] == (entry["accuracy"] >= np.mean(acc_w8) - np.std(acc_w8, ddof=1))
        paired = summary["paired_vs_w8a8"][str([b] * n + [0])]
        assert paired["diffs"] == pytest.approx([runs[s]["accuracy"] - a for s, a in zip(("0", "1"), acc_w8)])
    # fewer bits, less modeled energy on the same board
    assert control["widths"]["W4A4"]["energy_saving"] > control["widths"]["W6A6"]["energy_saving"] > 0
    kept = [e["energy_saving"] for e in control["widths"].values() if e["keeps_w8a8_accuracy"]]
    assert control["best_saving"] == (max(kept) if kept else None)
    if summary["energy_saving_vs_w8a8"] is not None and kept:
        assert control["search_minus_uniform"] == pytest.approx(summary["energy_saving_vs_w8a8"] - max(kept))
    assert (out / "search.png").stat().st_size > 0 and (out / "search_finals.png").stat().st_size > 0

    # a second invocation trains nothing: search and finals come from the cache
    def trained(*a, **k):
        pytest.fail("a design trained again")

    monkeypatch.setattr(bench, "evaluate_candidate", trained)
    monkeypatch.setattr("flipq.quant.candidate.train_candidate", trained)
    assert bench.main(TINY + ["--out", str(out), "--work", str(work)]) == 0
    again = json.loads((out / "search.json").read_text())
    assert again["final"] == summary["final"] and again["uniform_control"] == summary["uniform_control"]


def test_output_folder_is_made_before_any_training(tmp_path, bench, monkeypatch):
    out = tmp_path / "new" / "results"

    class Trained(Exception):
        pass

    def search(*a, **k):  # minutes of training in a real run: the folder must exist by now
        assert out.is_dir()
        raise Trained

    monkeypatch.setattr(bench, "search", search)
    with pytest.raises(Trained):
        bench.main(["--out", str(out), "--work", str(tmp_path / "work")])
