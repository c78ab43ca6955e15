"""Vitis HLS's synthesis report (``csynth.xml``) beside flipq's cost model: what the tool
estimated for the IP against what ``hls_report.json`` modeled.

    >>> syn = read_csynth(Path("ov/flipq_hls/solution1/syn/report/csynth.xml"))   # doctest: +SKIP
    >>> compare_with_model(syn, json.loads(Path("build/hls/hls_report.json").read_text()))  # doctest: +SKIP

Needs the standard library only. Used by the ``-m vivado`` test (tests/test_hardware.py), which
builds an overlay with the real tools and checks the model against the report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from flipq.overlays.errors import OverlayInputError

CSYNTH_REPORT = Path("solution1") / "syn" / "report" / "csynth.xml"


def _number(root, path: str, report: Path) -> float:
    node = root.find(path)
    if node is None or node.text is None:
        raise OverlayInputError(f"{report}: no <{path}> in the synthesis report")
    text = node.text.strip()
    try:
        return float(text)
    except ValueError:
        raise OverlayInputError(f"{report}: <{path}> is '{text}', not a number") from None


def read_csynth(report: Path) -> dict:
    """Resources and timing of the synthesized top: lut, ff, bram36 (BRAM_18K / 2), dsp,
    interval_max and latency_max in cycles (-1 where the tool could not bound them: a loop
    without a trip count), and the clock it was built for."""
    report = Path(report)
    if not report.is_file():
        raise FileNotFoundError(f"synthesis report not found: {report} (run the overlay build with Vitis HLS)")
    try:
        root = ET.parse(report).getroot()
    except ET.ParseError as e:
        raise OverlayInputError(f"{report}: not a readable XML report ({e})") from None
    res = "AreaEstimates/Resources/"
    lat = "PerformanceEstimates/SummaryOfOverallLatency/"

    def cycles(tag: str) -> int:
        node = root.find(lat + tag)
        text = "" if node is None or node.text is None else node.text.strip()
        return int(text) if text.isdigit() else -1

    return {"lut": _number(root, res + "LUT", report), "ff": _number(root, res + "FF", report),
            "bram36": _number(root, res + "BRAM_18K", report) / 2, "dsp": _number(root, res + "DSP", report),
            "interval_max": cycles("Interval-max"), "latency_max": cycles("Worst-caseLatency"),
            "clock_ns": _number(root, "UserAssignments/TargetClockPeriod", report)}


def compare_with_model(csynth: dict, hls_report: dict) -> dict:
    """Per resource, synthesized / modeled (the model's layer totals; the tool's figure also
    holds the wrapper and hls4ml's own layers, so ratios above 1 are expected)."""
    totals = hls_report["totals"]
    out = {}
    for key in ("lut", "ff", "bram36"):
        modeled = float(totals[key])
        out[key] = {"csynth": csynth[key], "modeled": modeled,
                    "ratio": csynth[key] / modeled if modeled else float("inf")}
    return out
