"""The bit-width search: real short QAT per candidate on a tiny MLP, NSGA-II, Pareto output."""

import json
import subprocess
import sys

import numpy as np
import pytest

from flipq.host.bitplan import BitPlan


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    r = subprocess.run([sys.executable, "-m", "flipq", "search", "--out", str(out), "--arch", "mlp",
                        "--generations", "2", "--population", "8", "--qat-epochs", "1", "--float-epochs", "2",
                        "--limit-train", "400", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout


def test_uniform_configs_seed_the_search_and_nothing_trains_twice(searched):
    out, stdout = searched
    res = json.loads((out / "search.json").read_text())
    genomes = [tuple(e["genome"]) for e in res["evaluated"]]
    assert len(genomes) == len(set(genomes))
    for b in range(2, 9):
        assert (b,) * 6 in genomes
    assert "Pareto front" in stdout


def test_pareto_points_are_non_dominated_and_saved_as_plans(searched):
    out, _ = searched
    res = json.loads((out / "search.json").read_text())
    objs = res["objectives"]
    f = np.array([[e[o] for o in objs] for e in res["evaluated"]])
    for i, p in enumerate(res["pareto"]):
        fp = np.array([p[o] for o in objs])
        dominated = np.all(f <= fp, axis=1) & np.any(f < fp, axis=1)
        assert not dominated.any()
        plan = BitPlan.load(out / f"pareto_{i:02d}.toml")
        assert [lb.weight_bits for lb in plan] == p["genome"][0::2]
    assert (out / "search.png").is_file()


def test_costs_grow_with_bits(searched):
    out, _ = searched
    by = {tuple(e["genome"]): e for e in json.loads((out / "search.json").read_text())["evaluated"]}
    for key in ("memory_bits", "cycles", "energy_pj"):
        seq = [by[(b,) * 6][key] for b in range(2, 9)]
        assert all(a < b for a, b in zip(seq, seq[1:])), (key, seq)
