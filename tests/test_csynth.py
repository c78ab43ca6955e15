"""Reading Vitis HLS's csynth.xml (the -m vivado test compares it with the cost model)."""

from pathlib import Path

import pytest

from flipq.overlays.csynth import compare_with_model, read_csynth
from flipq.overlays.errors import OverlayInputError

SAMPLE = Path(__file__).parent / "data" / "csynth_sample.xml"


def test_reads_resources_and_unbounded_latency():
    syn = read_csynth(SAMPLE)
    assert (syn["lut"], syn["ff"], syn["bram36"], syn["dsp"]) == (6789, 2345, 4.5, 0)
    assert syn["interval_max"] == -1 and syn["latency_max"] == -1 and syn["clock_ns"] == 10.0
    ratios = compare_with_model(syn, {"totals": {"lut": 6789 / 2, "ff": 2345, "bram36": 9}})
    assert ratios["lut"]["ratio"] == 2.0 and ratios["ff"]["ratio"] == 1.0 and ratios["bram36"]["ratio"] == 0.5


def test_missing_or_broken_reports_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="synthesis report not found"):
        read_csynth(tmp_path / "csynth.xml")
    bad = tmp_path / "csynth.xml"
    bad.write_text("<profile><AreaEstimates><Resources><LUT>many</LUT></Resources></AreaEstimates></profile>")
    with pytest.raises(OverlayInputError, match=r"csynth.xml: no <AreaEstimates/Resources/FF>|LUT> is 'many'"):
        read_csynth(bad)
    bad.write_text("<profile")
    with pytest.raises(OverlayInputError, match="not a readable XML report"):
        read_csynth(bad)
