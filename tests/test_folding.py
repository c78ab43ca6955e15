"""Folding to a board: SIMD/PE per layer from the cost model, within the board's resources."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from flipq.boards import load_board
from flipq.hls.cost import RESOURCES, hls_report
from flipq.hls.fold import pe_options
from flipq.hls.folding import FoldingTargetError, fold_for_board, folded_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: siblings by path
from test_cost import small_model  # noqa: E402


def test_most_throughput_that_fits_the_board():
    model = small_model()
    board = load_board("pynq-z2")
    base = hls_report(model, simd={"conv1": 1, "fc1": 1}, io_type="io_stream")["totals"]
    result = fold_for_board(model, board, io_type="io_stream")
    assert result.reached and result.interval < base["interval"]
    # a small model unfolds completely: every layer at its widest SIMD and PE, or the window
    # generator bounds the slowest layer
    assert result.binding.startswith("layer ")
    report = hls_report(model, plan=folded_plan(model, result), io_type="io_stream")
    t = report["totals"]
    # what must fit is the chip: the accelerator and the DMA/interconnect beside it
    assert t["interval"] == result.interval and all(t["chip"][r] == result.totals[r] for r in RESOURCES)
    assert all(t["chip"][r] <= result.limits[r] for r in RESOURCES)


def test_a_target_stops_at_the_cheapest_folding_that_reaches_it():
    model = small_model()
    board = load_board("pynq-z2")
    slow = fold_for_board(model, board, target_fps=1000.0, io_type="io_stream")
    fast = fold_for_board(model, board, io_type="io_stream")
    assert slow.reached and slow.binding == "target" and slow.fps >= 1000.0
    assert slow.totals["lut"] <= fast.totals["lut"] and slow.fps <= fast.fps
    assert all(pe in pe_options(n) for pe, n in zip(slow.pe.values(), (6, 7)))


def test_the_binding_resource_is_named():
    """A board with few LUTs: the folding stops where the next step would not fit, says which
    resource binds, and what it chose fits."""
    model = small_model()
    board = load_board("pynq-z2")
    roomy = replace(board, resources=dict(board.resources, lut=10 ** 7))
    start = fold_for_board(model, roomy, target_fps=1.0)
    fast = fold_for_board(model, roomy)
    assert fast.totals["lut"] > start.totals["lut"]
    tight = replace(board, resources=dict(board.resources, lut=(start.totals["lut"] + fast.totals["lut"]) // 2))
    result = fold_for_board(model, tight, max_utilization=1.0)
    assert result.binding.startswith("resource lut (layer ")
    assert result.totals["lut"] <= tight.resources["lut"] and start.fps <= result.fps < fast.fps
    unreachable = fold_for_board(model, tight, target_fps=1e9, max_utilization=1.0)
    assert not unreachable.reached and unreachable.binding == result.binding


def test_a_board_too_small_for_the_folded_design():
    model = small_model()
    board = load_board("pynq-z2")
    none = replace(board, resources=dict(board.resources, lut=10))
    result = fold_for_board(model, none)
    assert result.binding == "resource lut (no folding of the design fits)" and not result.fits


@pytest.mark.parametrize("kwargs, message", [
    ({"target_fps": 0.0}, "target fps 0.0 must be > 0"),
    ({"max_utilization": 1.5}, r"max utilization 1.5 must be in \(0, 1\]"),
])
def test_bad_targets_are_refused(kwargs, message):
    with pytest.raises(FoldingTargetError, match=message):
        fold_for_board(small_model(), load_board("pynq-z2"), **kwargs)
