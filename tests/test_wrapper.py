"""The board wrapper flipq_top: compiled with g++ around a real bit-serial hls4ml project, its
output words equal the simulated PL's (pynq_sim.compute_from_int over the emulator) word for
word, with TLAST on the batch's last word; a hand-written model checks sign extension, padding
lanes and the planes mapping; golden text checks the interface the block design relies on."""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flipq.boards import load_board
from flipq.overlays import pynq_sim
from flipq.host.accelmeta import AccelMeta, DmaMeta, InputMeta, IpMeta, OutputMeta
from flipq.overlays.metadata import accel_meta_for
from flipq.host.emulator import Emulator
from flipq.host.intmodel import QuantSpec
from flipq.host.packing import PackingSpec, pack, unpack
from flipq.overlays.errors import OverlayInputError
from flipq.overlays.flow import build_overlay
from flipq.overlays.wrapper import (WrapperError, compile_wrapper, generate_wrapper, read_hls_top,
                                    simulate_wrapper)


# -- a real bit-serial project ----------------------------------------------------------------
@pytest.fixture(scope="module", params=["io_parallel", "io_stream"])
def real(request, tiny_chain, tmp_path_factory):
    from flipq.hls.bitserial import build_bitserial

    folder = tmp_path_factory.mktemp(f"wrap_{request.param}")
    build = build_bitserial(tiny_chain.intmodel, tiny_chain.prepared, folder / "bitserial",
                            io_type=request.param, compile=False)
    meta = accel_meta_for(tiny_chain.intmodel, load_board("pynq-z2"))
    cpp = generate_wrapper(meta, build.project_dir, folder / "overlay")
    lib = compile_wrapper(cpp.parent, build.project_dir)
    return meta, lib, cpp, build.project_dir


def _inputs(chain, meta, n: int) -> np.ndarray:
    """Real digits, with the first rows pinned to the range's ends (all-min, all-max)."""
    q = Emulator(chain.intmodel).quantize_input(chain.x)[:n].copy()
    q[: min(n, 1)] = meta.input.quant.qmax
    if n > 2:
        q[1] = meta.input.quant.qmin
    return q


def _simulated_pl(chain, meta):
    emulator = Emulator(chain.intmodel)

    def datapath(q, planes):
        emulator.set_planes(planes)
        return emulator.run(q)

    return pynq_sim.compute_from_int(datapath, meta)


@pytest.mark.parametrize("n", [1, 3, 17])
@pytest.mark.parametrize("planes", [1, 2, "full"])
def test_words_equal_the_simulated_pl(real, tiny_chain, n, planes):
    meta, lib, _, _ = real
    planes = meta.max_planes if planes == "full" else planes
    q = _inputs(tiny_chain, meta, n)
    words, last = simulate_wrapper(lib, meta, q, planes)
    want = _simulated_pl(tiny_chain, meta)(pack(q, meta.input.packing), planes)
    assert words.dtype == np.uint32 and np.array_equal(words, want)
    assert words.size == n * meta.output.packing.words_per_sample(meta.output.n_elems)
    assert last == words.size - 1
    acc = unpack(words, meta.output.n_elems, meta.output.packing)
    assert np.array_equal(acc.reshape((n,) + meta.output.shape),
                          Emulator(tiny_chain.intmodel, planes=planes).run(q))


@pytest.mark.parametrize("planes", [0, 9, 15, 2**32 - 1])
def test_planes_zero_or_past_max_is_full_precision(real, tiny_chain, planes):
    meta, lib, _, _ = real
    q = _inputs(tiny_chain, meta, 3)
    words, _ = simulate_wrapper(lib, meta, q, np.int64(planes).astype(np.int32))
    full, _ = simulate_wrapper(lib, meta, q, meta.max_planes)
    assert np.array_equal(words, full)


def test_zero_samples_write_nothing(real):
    meta, lib, _, _ = real
    words, last = simulate_wrapper(lib, meta, np.zeros((0,) + meta.input.shape, dtype=np.int64), 1)
    assert words.size == 0 and last == -1


def test_library_refuses_another_packing(real):
    meta, lib, _, _ = real
    other = replace(meta, input=replace(meta.input, packing=PackingSpec(16, False)))
    with pytest.raises(WrapperError, match="words per sample"):
        simulate_wrapper(lib, other, np.zeros((1,) + meta.input.shape, dtype=np.int64), 1)


# -- golden text -----------------------------------------------------------------------------
def test_generated_interface_golden(real):
    meta, _, cpp, project_dir = real
    text = cpp.read_text()
    header = (cpp.parent / "flipq_top.h").read_text()
    top = read_hls_top(project_dir)
    sig = ("void flipq_top(hls::stream<word_t> &in_r, hls::stream<word_t> &out_r, ap_uint<32> planes,\n"
           "               ap_uint<32> n_samples)")
    assert sig + " {" in text and sig + ";" in header
    for pragma in ("#pragma HLS INTERFACE axis port=in_r",
                   "#pragma HLS INTERFACE axis port=out_r",
                   "#pragma HLS INTERFACE s_axilite port=planes bundle=control",
                   "#pragma HLS INTERFACE s_axilite port=n_samples bundle=control",
                   "#pragma HLS INTERFACE s_axilite port=return bundle=control"):
        assert text.count(pragma) == 1, pragma
    # argument order fixes the AXI-lite offsets accel.json promises
    assert text.index("port=planes") < text.index("port=n_samples")
    assert "(ip.planes_offset = 0x10, ip.control.n_samples = 0x18)" in text
    assert (meta.ip.planes_offset, meta.ip.control["n_samples"]) == (0x10, 0x18)
    assert "typedef ap_axiu<32, 0, 0, 0> word_t;" in header
    assert '#include "ap_axi_sdata.h"' in header and "#if defined(__SYNTHESIS__)" in header
    assert f'#include "{top.project}.h"' in text
    assert "beat.last = last_sample && w == FLIPQ_OUT_WORDS - 1;" in text
    assert "const bool last_sample = s == n_samples - 1;" in text
    # samples stream back to back: reader, model and writer are a dataflow region inside the loop
    loop = text[text.index("static void flipq_samples("):text.index("void flipq_top(")]
    assert loop.index("for (int s = 0; s < n_samples; s++) {") < loop.index("#pragma HLS DATAFLOW")
    arg = "y" if top.io_type == "io_parallel" else "y_s"
    assert f"flipq_write_sample({arg}, out_r, s, n_samples);" in loop
    wps = meta.input.packing.words_per_sample(meta.input.n_elems)
    assert f"static const int FLIPQ_IN_WORDS = {wps};" in header
    assert f"static const int FLIPQ_MAX_PLANES = {meta.max_planes};" in header
    assert f"{top.project}({'x, y' if top.io_type == 'io_parallel' else 'x_s, y_s'}, planes);" in loop
    assert not re.search(r"@[a-z_]+@", text + header)


# -- the overlay flow ------------------------------------------------------------------------
def test_flow_dry_run_generates_and_adds_the_wrapper(real, tiny_chain, tmp_path, monkeypatch):
    import json

    meta, _, _, project_dir = real
    monkeypatch.setattr("flipq.overlays.tools.find_tools",
                        lambda: {"hls": None, "vivado": None, "vivado_hls": None})
    import shutil

    hls = tmp_path / "hls"
    tiny_chain.intmodel.save(hls)
    # a source outside the hls folder is refused (a received folder names files of its own only)
    outside = Path(project_dir) / "firmware" / "myproject.cpp"
    (hls / "hls_report.json").write_text(json.dumps({
        "totals": {"lut": 4000, "ff": 5000, "bram36": 6, "dsp": 0}, "sources": [str(outside)]}))
    with pytest.raises(OverlayInputError, match=r"sources\[0\]"):
        build_overlay(hls, "pynq-z2", tmp_path / "ov0", dry_run=True)
    shutil.copytree(project_dir, hls / "prj")
    src = hls / "prj" / "firmware" / "myproject.cpp"
    (hls / "hls_report.json").write_text(json.dumps({
        "totals": {"lut": 4000, "ff": 5000, "bram36": 6, "dsp": 0}, "sources": ["prj/firmware/myproject.cpp"]}))
    result = build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True)
    out = tmp_path / "ov"
    assert out / "src" / "flipq_top.cpp" in result.files and (out / "src" / "flipq_top.h").is_file()
    tcl = (out / "hls_synth.tcl").read_text()
    assert "set_top flipq_top" in tcl
    adds = re.findall(r"^add_files (.*) -cflags", tcl, re.M)
    assert adds == ["[file join $here src flipq_top.cpp]", "[file join $here src myproject.cpp]"]
    # the model's sources travel with the overlay: its header, defines and kernels, not ap_types
    for name in ("myproject.cpp", "myproject.h", "defines.h", "parameters.h"):
        assert (out / "src" / name).read_bytes() == (src.parent / name).read_bytes(), name
    assert any((out / "src" / "nnet_utils").glob("*.h"))
    assert not (out / "src" / "ap_types").exists() and "ap_types" not in tcl
    with pytest.raises(OverlayInputError, match="top = 'other'"):
        build_overlay(hls, "pynq-z2", tmp_path / "ov2", dry_run=True, top="other")


def test_flow_names_a_report_without_a_project(tiny_chain, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr("flipq.overlays.tools.find_tools",
                        lambda: {"hls": None, "vivado": None, "vivado_hls": None})
    hls = tmp_path / "hls"
    tiny_chain.intmodel.save(hls)
    (hls / "hls_report.json").write_text(json.dumps({
        "totals": {"lut": 1, "ff": 1, "bram36": 0, "dsp": 0}, "sources": ["nowhere/model.cpp"]}))
    with pytest.raises(OverlayInputError, match=r"HLS source .*nowhere/model.cpp not found"):
        build_overlay(hls, "pynq-z2", tmp_path / "ov", dry_run=True)


# -- a hand-written model: signed lanes, padding lanes, planes mapping -----------------------
# y[k] = sum(x) * (k - 1) * planes / 2: on the grids below acc[k] = sum(q) * (k - 1) * planes.
TOY_H = """#ifndef MYPROJECT_H_
#define MYPROJECT_H_
#include "ap_fixed.h"
#include "ap_int.h"
#include "hls_stream.h"
#include "defines.h"
void myproject(
    input_t global_in[7],
    result_t layer9_out[3],
    ap_uint<4> planes
);
#endif
"""
TOY_DEFINES = """#ifndef DEFINES_H_
#define DEFINES_H_
#include "ap_fixed.h"
typedef ap_fixed<6,2> input_t;
typedef ap_fixed<16,8> result_t;
#endif
"""
TOY_CPP = """#include "myproject.h"
void myproject(input_t global_in[7], result_t layer9_out[3], ap_uint<4> planes) {
    ap_fixed<16, 8> s = 0;
    for (int i = 0; i < 7; i++) s += global_in[i];
    for (int k = 0; k < 3; k++) {
        ap_fixed<20, 10> t = s * (k - 1) * (int)planes;
        layer9_out[k] = t * ap_ufixed<1, 0>(0.5);
    }
}
"""


def toy_meta(**changes) -> AccelMeta:
    meta = AccelMeta(
        model_hash="toy", board="pynq-z2", fclk_mhz=100.0,
        input=InputMeta((7,), "NC", QuantSpec(4, True, False, -3), PackingSpec(4, True)),
        output=OutputMeta((3,), -4, 10, True, PackingSpec(16, True)),
        dma=DmaMeta("axi_dma_0", 14, 2**14 - 1), ip=IpMeta("flipq_accel_0", "flipq.org:hls:flipq_top:1.0"),
        max_planes=4, max_batch=64)
    return replace(meta, **changes)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    prj = tmp_path_factory.mktemp("toy") / "prj"
    (prj / "firmware").mkdir(parents=True)
    (prj / "hls4ml_config.yml").write_text("ProjectName: myproject\n")
    for name, text in (("myproject.h", TOY_H), ("defines.h", TOY_DEFINES), ("myproject.cpp", TOY_CPP)):
        (prj / "firmware" / name).write_text(text)
    meta = toy_meta()
    cpp = generate_wrapper(meta, prj, prj.parent / "wrapper")
    return meta, compile_wrapper(cpp.parent, prj), prj


@pytest.mark.parametrize("planes,effective", [(1, 1), (3, 3), (4, 4), (0, 4), (5, 4)])
def test_toy_signed_lanes_padding_and_planes(toy, planes, effective):
    meta, lib, _ = toy
    rng = np.random.default_rng(planes)
    q = rng.integers(-8, 8, (5, 7))
    q[0], q[1] = -8, 7  # range ends: sign extension of 0x8, no overflow at 0x7
    words, last = simulate_wrapper(lib, meta, q, planes)
    assert words.size == 5 * 2 and last == 9  # 3 accumulators at 16 bits: 2 words, 1 padding lane
    assert np.all(words[1::2] >> 16 == 0)
    want = q.sum(axis=1, keepdims=True) * (np.arange(3) - 1) * effective
    assert np.array_equal(unpack(words, 3, meta.output.packing), want)
    assert np.array_equal(words, pack(want, meta.output.packing).reshape(-1))


def test_inexact_or_mismatched_types_are_refused(toy):
    _, _, prj = toy
    out = prj.parent / "refused"
    cases = [
        (toy_meta(input=InputMeta((7,), "NC", QuantSpec(4, True, False, -5), PackingSpec(4, True))),
         r"defines.h: input_t = ap_fixed<6,2> has 4 fraction bits, coarser than .*input.quant.exp = -5"),
        (toy_meta(input=InputMeta((7,), "NC", QuantSpec(6, True, False, -3), PackingSpec(6, True))),
         r"cannot hold accel.json's 6-bit signed inputs"),
        (toy_meta(input=InputMeta((8,), "NC", QuantSpec(4, True, False, -3), PackingSpec(4, True))),
         r"field 'input.shape' has 8 elements, .*myproject.h declares 'global_in' with 7"),
        (toy_meta(output=OutputMeta((3,), -9, 10, True, PackingSpec(16, True))),
         r"result_t = ap_fixed<16,8> has 8 fraction bits, coarser than accel.json's output.exp = -9"),
        (toy_meta(ip=IpMeta("a", "b:c:d:1", planes_offset=0x18,
                            control={"ap_ctrl": 0, "n_samples": 0x10})),
         r"'ip.planes_offset' = 0x18"),
        (toy_meta(input=InputMeta((7,), "NC", QuantSpec(4, True, False, -3), PackingSpec(4, True, 64))),
         r"'input.packing.word_bits' = 64"),
    ]
    for meta, msg in cases:
        with pytest.raises(WrapperError, match=msg):
            generate_wrapper(meta, prj, out)


def test_stock_project_is_named(tmp_path):
    prj = tmp_path / "prj"
    (prj / "firmware").mkdir(parents=True)
    (prj / "firmware" / "myproject.h").write_text(TOY_H.replace(",\n    ap_uint<4> planes", ""))
    (prj / "firmware" / "myproject.cpp").write_text("")
    (prj / "firmware" / "defines.h").write_text(TOY_DEFINES)
    with pytest.raises(WrapperError, match=r"myproject.h: myproject\(\) takes 2 arguments"):
        generate_wrapper(toy_meta(), prj, tmp_path / "w")


# -- the host driver end to end: PynqBackend -> pynq's DMA code -> the compiled wrapper --------
def test_pynq_backend_over_the_wrapper(real, tiny_chain, tmp_path, monkeypatch):
    pytest.importorskip("pynq")
    from flipq.host.pynq_backend import PynqBackend

    meta, lib, _, _ = real
    meta = replace(meta, max_batch=8)  # 20 rows: three DMA transfers, the last one short
    folder = tmp_path / "overlay"
    with simulated_board(folder, meta, lib, monkeypatch) as device:
        q = _inputs(tiny_chain, meta, 20)
        with PynqBackend(folder, meta, timeout_s=5) as backend:
            for planes in (1, meta.max_planes):
                assert np.array_equal(backend.run(q, planes), Emulator(tiny_chain.intmodel, planes=planes).run(q))
        assert device.compute_calls == 6


@contextmanager
def simulated_board(folder: Path, meta: AccelMeta, wrapper_lib: Path, monkeypatch):
    """An overlay folder (.hwh, placeholder .bit, accel.json) for ``meta`` and pynq's simulated
    device whose PL is the compiled wrapper; yields the device (its ``compute_calls`` count)."""
    from flipq.overlays.hwh import generate_hwh
    from flipq.overlays.wrapper import pl_from_wrapper

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flipq.hwh").write_text(generate_hwh(meta, load_board(meta.board)))
    (folder / "flipq.bit").write_bytes(b"simulated: content not read")
    meta.save(folder / "accel.json")
    monkeypatch.setenv(pynq_sim.SIM_ENV, "1")
    device = pynq_sim.activate()
    try:
        device.compute = pl_from_wrapper(wrapper_lib, meta)
        yield device
    finally:
        pynq_sim.deactivate()
