"""The bits-and-folding search on digits: real short QAT per candidate, costs from the hardware
plan ``flipq hls`` builds, the disk cache, worker processes, the board constraint, --pick."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from flipq.boards import load_board
from flipq.cli import main
from flipq.host.bitplan import BitPlan
from flipq.quant.data import load_dataset
from flipq.dse import search
from flipq.quant.search import OBJECTIVES, SearchConfig, pareto_front

ARGS = ["--arch", "digits-cnn", "--generations", "2", "--population", "6", "--qat-epochs", "1", "--float-epochs", "2",
        "--limit-train", "300", "--no-progress"]
CFG = SearchConfig(generations=2, population=6, qat_epochs=1, float_epochs=2, progress=False)


def _digits():
    return load_dataset("digits", seed=0, limit_train=300)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["search", "--out", str(out), "--workers", "2", *ARGS])
    assert rc == 0
    return out, buf.getvalue(), json.loads((out / "search.json").read_text())


def _figures(evaluated):
    return sorted((tuple(e["genome"]), e["val_accuracy"], e["energy_uj"], e["interval_cycles"], e["weight_bits"])
                  for e in evaluated)


def test_uniform_configs_seed_the_search_and_nothing_trains_twice(searched):
    out, stdout, res = searched
    genomes = [tuple(e["genome"]) for e in res["evaluated"]]
    assert len(genomes) == len(set(genomes))
    for b in (8, 7, 6, 4, 3, 2):  # a population of 6 spreads the uniform widths from W8A8 down
        assert (b,) * 6 + (0,) in genomes
    keys = [e["cache_key"] for e in res["evaluated"]]
    assert res["trained"] == len(set(keys))  # one training per bit configuration, whatever its folding
    assert "Pareto front on pynq-z2" in stdout
    assert (out / "search.png").is_file() and (out / "pareto.csv").read_text().startswith("index,bits,")


def test_pareto_points_fit_and_are_non_dominated(searched):
    _, _, res = searched
    f = np.array([[e[o] for o in OBJECTIVES] for e in res["evaluated"] if e["fits"]])
    assert res["pareto"]
    for p in res["pareto"]:
        assert p["fits"]
        fp = np.array([p[o] for o in OBJECTIVES])
        assert not (np.all(f <= fp, axis=1) & np.any(f < fp, axis=1)).any()
    assert [p["energy_uj"] for p in res["pareto"]] == sorted(p["energy_uj"] for p in res["pareto"])


def test_costs_grow_with_bits(searched):
    _, _, res = searched
    by = {tuple(e["genome"]): e for e in res["evaluated"]}
    for key in ("energy_uj", "interval_cycles", "weight_bits"):
        seq = [by[(b,) * 6 + (0,)][key] for b in (2, 3, 4, 6, 7, 8)]
        assert all(a < b for a, b in zip(seq, seq[1:])), (key, seq)
    e = by[(8,) * 6 + (0,)]
    assert e["energy"]["label"] == "modeled" and e["energy"]["static_uj"] > 0 and e["energy"]["logic_uj"] > 0


def test_restarted_search_reuses_every_cached_evaluation(searched):
    out, _, res = searched
    again = search(_digits(), "digits-cnn", CFG, out)
    assert again.trained == 0 and not again.float_trained
    assert _figures(again.evaluated) == _figures(res["evaluated"])


def test_board_constraint_removes_designs_that_do_not_fit(searched, tmp_path):
    from flipq.hls.folding import fold_for_board
    from flipq.dse import lower_onnx

    out, _, res = searched
    by = {tuple(e["genome"]): e for e in res["evaluated"]}
    pynq = load_board("pynq-z2")
    roomy = replace(pynq, resources={**pynq.resources, "lut": 10 ** 7})

    def folded_lut(bits):  # the chip's LUTs in the cheapest design the folding finds: what must fit
        im = lower_onnx((out / "cache" / f"{by[(bits,) * 6 + (0,)]['cache_key']}.onnx").read_bytes())
        return fold_for_board(im, roomy, target_fps=1e-3, group_size=16, io_type="io_stream").totals["lut"]

    small, big = folded_lut(2), folded_lut(8)
    assert small < big
    tiny = replace(pynq, name="tiny", resources={**pynq.resources, "lut": int((small + big) / 2 / 0.85)})
    # the same cache: trained bits are costed again for the new board, never retrained
    shutil.copytree(out / "cache", tmp_path / "cache")
    again = search(_digits(), "digits-cnn", CFG, tmp_path, board=tiny)
    old = {e["cache_key"] for e in res["evaluated"]}
    assert again.trained == len({e["cache_key"] for e in again.evaluated} - old)
    fits = {tuple(e["genome"]): e["fits"] for e in again.evaluated}
    assert fits[(2,) * 6 + (0,)] and not fits[(8,) * 6 + (0,)]
    assert again.pareto and all(p["fits"] for p in again.pareto)
    assert not any(p["genome"] == [8] * 6 + [0] for p in again.pareto)
    assert pareto_front([dict(e, fits=False) for e in again.evaluated]) == []


def test_pick_writes_plan_and_folding_that_build_to_the_searched_figures(searched, capsys):
    from flipq.hls.cost import hls_report
    from flipq.hls.hwplan import plan_hardware
    from flipq.dse import lower_onnx

    out, _, res = searched
    assert main(["search", "--out", str(out), "--pick", "0"]) == 0
    printed = capsys.readouterr().out
    point = res["pareto"][0]
    folder = out / "pick_0"
    plan = BitPlan.load(folder / "plan.toml")
    assert [lb.weight_bits for lb in plan] == point["genome"][0:-1:2]
    assert [lb.act_bits for lb in plan] == point["genome"][1:-1:2]
    folding = json.loads((folder / "folding.json").read_text())
    assert folding["pe"] == point["pe"] and folding["simd"] == point["simd"]
    pe_arg = ",".join(f"{k}={v}" for k, v in point["pe"].items())
    assert f"--pe {pe_arg}" in printed and "flipq train" in printed
    # the picked model with the picked folding: the interval and weight bits the search saw
    im = lower_onnx((folder / "model.onnx").read_bytes())
    report = hls_report(im, io_type="io_stream", plan=plan_hardware(im, folding["pe"], 16, folding["simd"]))
    assert report["totals"]["interval"] == point["interval_cycles"]
    assert report["totals"]["weight_storage_bits"] == point["weight_bits"]


def test_pick_refuses_a_point_the_front_does_not_have(searched, tmp_path, capsys):
    out, _, res = searched
    n = len(res["pareto"])
    assert main(["search", "--out", str(out), "--pick", str(n)]) == 2
    err = capsys.readouterr().err
    assert f"--pick {n}" in err and f"has {n} points" in err and "Traceback" not in err
    assert main(["search", "--out", str(tmp_path), "--pick", "0"]) == 2
    assert "run `flipq search --out" in capsys.readouterr().err


def test_search_on_local_ray_gives_the_local_result(searched, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is the 'cluster' extra (pip install 'flipq[cluster]')")
    _, _, res = searched
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = search(_digits(), "digits-cnn", replace(CFG, ray_address="auto"), tmp_path)
    finally:
        ray.shutdown()
    assert remote.trained == res["trained"]
    assert _figures(remote.evaluated) == _figures(res["evaluated"])


def test_bad_search_settings_are_refused_before_any_training(tmp_path, capsys):
    assert main(["search", "--out", str(tmp_path / "a"), "--board", "zcu104", *ARGS]) == 2
    err = capsys.readouterr().err
    assert "no power figures for part 'xczu7ev" in err and "Traceback" not in err
    assert not (tmp_path / "a" / "cache").exists()
    with pytest.raises(SystemExit) as e:
        main(["search", "--out", str(tmp_path), "--workers", "0"])
    assert e.value.code == 2 and "--workers" in capsys.readouterr().err
    with pytest.raises(ValueError, match="io_type 'io_x' is unknown"):
        SearchConfig(io_type="io_x")
