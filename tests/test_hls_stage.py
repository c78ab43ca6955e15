"""The hls stage as one call: every BuildConfig field honoured (also with a model file),
bad settings refused in one line before any conversion, the C-sim checked on the check rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flipq.hls.stage import stage_hls
from flipq.host.emulator import Emulator
from flipq.pipeline import BuildConfig


def _cfg(tmp_path, **kw) -> BuildConfig:
    return BuildConfig(out=str(tmp_path), progress=False, **kw)


@pytest.mark.parametrize("fields, message", [
    ({"kernel": "systolic"}, "kernel 'systolic' is unknown (known: bitserial, stock)"),
    ({"io_type": "io_serial"}, "io_type 'io_serial' is unknown"),
    ({"group_size": -3}, "group_size -3 must be an int >= 0"),
    ({"board": "zcu999"}, "unknown board 'zcu999'"),
    ({"pe": "conv1=x"}, "--pe entry 'conv1=x'"),
    ({"pe": "conv9=2"}, "pe names layer 'conv9', which the model does not have (layers: conv1, fc1, fc2)"),
    ({"pe": "fc2=99"}, "layer 'fc2': pe=99 must be an int in 1..10"),
])
def test_bad_settings_are_one_line_value_errors(tiny_chain, tmp_path, fields, message):
    with pytest.raises(ValueError) as info:
        stage_hls(_cfg(tmp_path, **fields), tiny_chain.onnx_path)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert not (tmp_path / "hls" / "bitserial").exists()  # refused before hls4ml ran


def test_model_file_honours_every_field_and_checks_the_sample(tiny_chain, tmp_path):
    """A model given as a file still takes pe, group_size, io_type and check_rows from cfg;
    the C-sim runs on the first check_rows rows, in chunks, and equals the emulator."""
    np.savez(tmp_path / "data.npz", x_test=tiny_chain.x, y_test=tiny_chain.y)
    cfg = _cfg(tmp_path, pe="conv1=2,fc1=3", group_size=8, io_type="io_stream", check_rows=70)
    report = stage_hls(cfg, tiny_chain.onnx_path)
    by_name = {lay["name"]: lay for lay in report["layers"]}
    assert (by_name["conv1"]["pe"], by_name["fc1"]["pe"], by_name["fc2"]["pe"]) == (2, 3, 1)
    assert by_name["fc1"]["group_size"] == 8 and report["io_type"] == "io_stream"
    assert report["board"]["name"] and "fits" in report["board"]
    csim = np.load(tmp_path / "outputs" / "csim.npy")
    assert csim.shape[0] == 70
    assert np.array_equal(csim, Emulator(tiny_chain.intmodel).forward(tiny_chain.x[:70]))
    info = json.loads((tmp_path / "hls" / "hls.json").read_text())
    assert info["check_rows"] == 70 and info["seconds_check"] >= 0 and info["seconds_compile"] > 0
    params = (tmp_path / "hls" / "bitserial" / "hls4ml_prj" / "firmware" / "parameters.h").read_text()
    assert "static const unsigned n_pe = 3;" in params and "hls::stream" in (
        tmp_path / "hls" / "bitserial" / "hls4ml_prj" / "flipq_bridge.cpp").read_text()


def test_compile_failure_is_a_runtime_error_with_a_one_line_summary(tmp_path):
    from flipq.hls.cxx import CompileError, build_shared_library

    unit = tmp_path / "broken.cpp"
    unit.write_text("int f( { return 0; }\n")
    with pytest.raises(RuntimeError) as info:
        build_shared_library([unit], [], tmp_path / "libbroken.so", tmp_path)
    assert isinstance(info.value, CompileError)
    first, _, rest = str(info.value).partition("\n")
    assert first == f"g++ failed on {unit}:" and "error" in rest
