"""benchmarks/flip_ablation.py end to end on a tiny network and fake data: the JSON schema of
issue 14, equal bits per group size, the plot and table, the resumable cache, and the output
folder made before training."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def fake_fashion(monkeypatch):
    import flipq.quant.data as data

    rng = np.random.default_rng(0)
    x = rng.random((260, 1, 8, 8), dtype=np.float32)
    y = (x[:, 0, :4].mean((1, 2)) > 0.5).astype(np.int64) + 2 * (x[:, 0, 4:].mean((1, 2)) > 0.5)
    fake = data.Dataset("fashion-mnist", x[:200], y[:200], x[200:], y[200:])
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: fake)
    return fake


TINY = ["--arch", "digits-cnn", "--seeds", "0", "1", "--train-size", "120", "--val-size", "40", "--eval-size", "20",
        "--float-epochs", "1", "--stats-epochs", "1", "--epochs", "1", "--group-sizes", "1", "4",
        "--ref-group-size", "4", "--allocators", "flip", "random", "--batch-size", "32",
        "--no-progress"]


def test_tiny_run_writes_the_issue_schema_and_resumes(tmp_path, fake_fashion, monkeypatch):
    bench = _load("flip_ablation")
    out, work, doc = tmp_path / "new" / "results", tmp_path / "work", tmp_path / "doc.md"
    doc.write_text(f"before\n{bench.BEGIN}\nstale table\n{bench.END}\nafter\n")
    assert bench.main(TINY + ["--out", str(out), "--work", str(work), "--doc", str(doc)]) == 0
    summary = json.loads((out / "flip_ablation.json").read_text())
    assert set(summary["flip_minus_random_at_equal_bits"]) == {"mean", "per_seed"}
    assert len(summary["flip_minus_random_at_equal_bits"]["per_seed"]) == 2
    for p in summary["points"]:
        assert set(p) == {"allocator", "group_size", "weight_bits", "accuracy_mean", "accuracy_std", "seeds"}
        assert [s["seed"] for s in p["seeds"]] == [0, 1]
    by = {(p["allocator"], p["group_size"]): p for p in summary["points"]}
    for g in (1, 4):  # equal stored bits for every allocator at one group size
        assert by["flip", g]["weight_bits"] == by["random", g]["weight_bits"]
    assert by["flip (LR off)", 4]["weight_bits"] == by["flip (repeated)", 4]["weight_bits"] == by["flip", 4]["weight_bits"]
    assert by["base (no extra bits)", 0]["weight_bits"] < by["flip", 4]["weight_bits"]
    assert "flip - random @G4" in summary["paired"]
    assert (out / "flip_ablation.png").stat().st_size > 0
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "stale" not in text and "| flip | 4 |" in text

    # a second invocation trains nothing: every run comes from the cache
    monkeypatch.setattr(bench.Seed, "run", lambda self, v: pytest.fail(f"{v} trained again"))
    assert bench.main(TINY + ["--out", str(out), "--work", str(work)]) == 0
    assert json.loads((out / "flip_ablation.json").read_text())["points"] == summary["points"]


def test_doc_without_the_table_markers_is_refused(tmp_path):
    bench = _load("flip_ablation")
    doc = tmp_path / "doc.md"
    doc.write_text("no markers\n")
    with pytest.raises(ValueError, match="doc.md: no '<!-- flip_ablation table: begin -->'"):
        bench.replace_block(doc, "| table |\n")


@pytest.mark.parametrize("name", ["flip_ablation", "reproduce_mpq"])
def test_benchmark_makes_its_output_folder_before_training(tmp_path, monkeypatch, name):
    bench = _load(name)
    out = tmp_path / "new" / "results"

    class Trained(Exception):
        pass

    def run_seeds(args, work):  # minutes of training in a real run: the folder must exist by now
        assert out.is_dir() and work.is_dir()
        raise Trained

    monkeypatch.setattr(bench, "run_seeds", run_seeds)
    with pytest.raises(Trained):
        bench.main(["--out", str(out), "--work", str(tmp_path / "work")])


def test_sizes_and_variants():
    bench = _load("flip_ablation")
    quick, default, full = (bench.parse_args(a) for a in (["--quick"], [], ["--full"]))
    assert default.train_size >= 20000 and len(default.seeds) >= 3
    assert full.train_size + full.val_size == 60000 and full.epochs > default.epochs
    assert quick.train_size < default.train_size
    labels = [(v.label, v.group_size) for v in bench.variants(default)]
    assert len(labels) == len(set(labels))
    assert ("flip+error", 16) in labels and ("flip+error", 1) not in labels
    with pytest.raises(SystemExit):
        bench.parse_args(["--group-sizes", "1", "4"])  # the reference group size 16 is missing
