"""The hls stage as one call: every BuildConfig field honoured (also with a model file),
bad settings refused in one line before any conversion, the C-sim checked on the check rows."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

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
    ({"pe": "fc2=99"}, "layer 'fc2': pe=99 must divide its output columns (pe options: 1, 2, 5, 10)"),
    ({"simd": "fc2=7"}, "layer 'fc2': simd=7 must divide its group size"),
    ({"simd": "fc2=x"}, "--simd entry 'fc2=x'"),
])
def test_bad_settings_are_one_line_value_errors(tiny_chain, tmp_path, fields, message):
    with pytest.raises(ValueError) as info:
        stage_hls(_cfg(tmp_path, **fields), tiny_chain.onnx_path)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert not (tmp_path / "hls" / "bitserial").exists()  # refused before hls4ml ran


def test_model_file_honours_every_field_and_checks_the_sample(tiny_chain, tmp_path, capsys):
    """A model given as a file still takes pe, group_size, io_type and check_rows from cfg;
    the C-sim runs on the first check_rows rows, in chunks, and equals the emulator."""
    np.savez(tmp_path / "data.npz", x_test=tiny_chain.x, y_test=tiny_chain.y)
    cfg = replace(_cfg(tmp_path, pe="conv1=2,fc1=4", group_size=8, io_type="io_stream", check_rows=70),
                  progress=True)
    report = stage_hls(cfg, tiny_chain.onnx_path)
    err = capsys.readouterr().err
    assert "hls: compiling the C simulation with g++" in err and "hls: compiled in" in err
    by_name = {lay["name"]: lay for lay in report["layers"]}
    assert (by_name["conv1"]["pe"], by_name["fc1"]["pe"], by_name["fc2"]["pe"]) == (2, 4, 1)
    assert by_name["fc1"]["group_size"] == 8 and report["io_type"] == "io_stream"
    assert report["board"]["name"] and "fits" in report["board"]
    # the kernels counted their own cycles (one sample, full precision): their trip counts, layer by
    # layer; the report's cycles are the RTL-calibrated model's, within the pipelines' fill of them
    for lay in report["layers"]:
        assert lay["csim_processes"] == lay["processes"], lay["name"]
        assert lay["csim_cycles"] == max(lay["processes"].values()), lay["name"]
        assert abs(lay["csim_cycles"] - lay["cycles"]) <= 0.05 * lay["cycles"] + 64, lay
    t = report["totals"]
    assert t["csim_matches_model"] and t["csim_interval"] == max(lay["csim_cycles"] for lay in report["layers"])
    assert t["fps"] == t["clock_mhz"] * 1e6 / t["interval"]
    csim = np.load(tmp_path / "outputs" / "csim.npy")
    assert csim.shape[0] == 70
    assert np.array_equal(csim, Emulator(tiny_chain.intmodel).forward(tiny_chain.x[:70]))
    info = json.loads((tmp_path / "hls" / "hls.json").read_text())
    assert info["check_rows"] == 70 and info["seconds_check"] >= 0 and info["seconds_compile"] > 0
    params = (tmp_path / "hls" / "bitserial" / "hls4ml_prj" / "firmware" / "parameters.h").read_text()
    assert "static const unsigned pe = 4;" in params and "hls::stream" in (
        tmp_path / "hls" / "bitserial" / "hls4ml_prj" / "flipq_bridge.cpp").read_text()


def test_stock_kernel_from_a_model_file(tiny_chain, tmp_path):
    np.savez(tmp_path / "data.npz", x_test=tiny_chain.x, y_test=tiny_chain.y)
    report = stage_hls(_cfg(tmp_path, kernel="stock", check_rows=20), tiny_chain.onnx_path)
    assert report["kernel"] == "stock" and (tmp_path / "hls" / "stock").is_dir()
    assert not (tmp_path / "hls" / "bitserial").exists()
    csim = np.load(tmp_path / "outputs" / "csim.npy")
    assert np.array_equal(csim, Emulator(tiny_chain.intmodel).forward(tiny_chain.x[:20]))


def test_compile_failure_is_a_runtime_error_with_a_one_line_summary(tmp_path):
    from flipq.hls.cxx import CompileError, build_shared_library

    unit = tmp_path / "broken.cpp"
    # many errors: the message quotes the first few, the log it names keeps them all
    unit.write_text("".join(f"int f{i}( {{ return {i}; }}\n" for i in range(40)))
    with pytest.raises(RuntimeError) as info:
        build_shared_library([unit], [], tmp_path / "libbroken.so", tmp_path)
    assert isinstance(info.value, CompileError)
    first, _, rest = str(info.value).partition("\n")
    log = tmp_path / "broken.csim.log"
    assert first == f"g++ failed on {unit} (exit status 1; the whole output is in {log}):"
    assert "error" in rest and len(rest.splitlines()) <= 8
    whole = log.read_text()
    assert "f39" in whole and "f39" not in rest and whole.startswith("$ ")


def _stub_graph(io_type: str):
    """What write_bridge reads of an hls4ml ModelGraph: I/O variables, their types, IOType."""
    def var(name, shape, width, integer, signed):
        prec = SimpleNamespace(width=width, integer=integer, signed=signed)
        return SimpleNamespace(shape=shape, type=SimpleNamespace(name=name, precision=prec))

    return SimpleNamespace(get_input_variables=lambda: [var("input_t", [4, 4, 2], 8, 0, False)],
                           get_output_variables=lambda: [var("result_t", [10], 16, 4, True)],
                           config=SimpleNamespace(get_config_value=lambda key: io_type))


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_bridge_template_fills_every_placeholder(tmp_path, io_type):
    from flipq.hls.bitserial_writer import write_bridge

    # input 8 fractional bits on a 2^-8 grid: no shift; output 12 fractional bits on 2^-9: shift 3
    text = write_bridge(_stub_graph(io_type), tmp_path, "myproject", input_exp=-8, output_exp=-9).read_text()
    assert "${" not in text and "$" not in text
    assert "int flipq_n_in(void) { return 32; }" in text and "int flipq_n_out(void) { return 10; }" in text
    assert "<< 0);" in text and "ap_int<16> r =" in text and ">> 3;" in text
    assert ("hls::stream<input_t> in_s" in text) == (io_type == "io_stream")
    assert "myproject(in_a, out_a, (ap_uint<4>)planes);" in text or io_type == "io_stream"


def test_bridge_refuses_a_coarser_grid(tmp_path):
    from flipq.hls.bitserial_writer import BitSerialError, write_bridge

    with pytest.raises(BitSerialError, match="coarser than the integer model's grid"):
        write_bridge(_stub_graph("io_parallel"), tmp_path, "myproject", input_exp=-9, output_exp=-9)


def test_board_folding_builds_what_the_model_priced(tiny_chain, tmp_path):
    """fold=True: SIMD/PE come from flipq.hls.folding for the board; the built kernels carry that
    folding, count the cycles the model priced, and the C-sim still equals the emulator."""
    np.savez(tmp_path / "data.npz", x_test=tiny_chain.x, y_test=tiny_chain.y)
    cfg = _cfg(tmp_path, fold=True, target_fps=20000.0, io_type="io_stream", check_rows=16)
    report = stage_hls(cfg, tiny_chain.onnx_path)
    folding = report["folding"]
    assert folding["reached"] and folding["binding"] == "target" and report["totals"]["fps"] >= 20000.0
    for lay in report["layers"]:
        assert (lay["simd"], lay["pe"]) == (folding["simd"][lay["name"]], folding["pe"][lay["name"]])
        assert lay["csim_processes"] == lay["processes"]
    assert any(lay["pe"] > 1 or lay["simd"] > 1 for lay in report["layers"])
    csim = np.load(tmp_path / "outputs" / "csim.npy")
    assert np.array_equal(csim, Emulator(tiny_chain.intmodel).forward(tiny_chain.x[:16]))


def test_cli_board_or_target_asks_for_folding(tmp_path):
    from flipq.cli import _config, build_parser

    def cfg(*argv):
        return _config(build_parser().parse_args(["hls", "--out", str(tmp_path), *argv]), fresh=True)

    assert cfg("--board", "pynq-z2").fold and cfg("--target-fps", "500").target_fps == 500.0
    assert not cfg().fold
    assert not cfg("--board", "pynq-z2", "--pe", "conv1=2").fold  # a folding given by hand wins


def test_demo_model_counts_the_modeled_cycles_at_every_planes(demo_dir):
    """The demo build's C-sim: its kernels' own cycle counts equal the cost model's, per layer and
    process, at every planes (hls_report.json holds the full-precision pair)."""
    from flipq.hls.cost import modeled_processes
    from flipq.hls.hwplan import plan_hardware
    from flipq.host.csim import CsimBackend
    from flipq.host.intmodel import IntModel

    out, _ = demo_dir
    hls = out / "hls"
    report = json.loads((hls / "hls_report.json").read_text())
    assert report["totals"]["csim_matches_model"]
    intmodel = IntModel.load(hls)
    plan = plan_hardware(intmodel, {lay["name"]: lay["pe"] for lay in report["layers"]}, 0,
                         {lay["name"]: lay["simd"] for lay in report["layers"]})
    csim = json.loads((hls / "csim.json").read_text())
    q = np.zeros((1, *intmodel.input_shape), dtype=np.int64) + intmodel.input_quant.qmax
    with CsimBackend(hls / csim["library"], csim["meta"]) as backend:
        for planes in range(1, intmodel.max_planes() + 1):
            assert backend.count_cycles(q, planes) == modeled_processes(plan, planes, report["io_type"]), planes
