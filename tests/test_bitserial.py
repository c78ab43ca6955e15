"""Bit-serial hls4ml kernels: every test compiles real C++ and compares it row by row with
the emulator (every ``planes``) and, at full precision, with QONNX execution."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from flipq.hls.bitserial import build_bitserial, compile_project
from flipq.hls.cost import modeled_processes
from flipq.hls.hwplan import HardwarePlanError, plan_hardware
from flipq.hls.planes import PlaneError, active_planes, pack_layer, unpack_layer
from flipq.host.csim import CsimBackend, CsimError
from flipq.host.emulator import Emulator

ROWS = 24  # C-sim rows per comparison; QONNX execution (slow) sees the first QONNX_ROWS
QONNX_ROWS = 4


# ---------------------------------------------------------------------------------------
# Tiny random Brevitas models with chosen integer weights
# ---------------------------------------------------------------------------------------
@dataclass
class RandomNet:
    prepared: object
    intmodel: object


def _brevitas_net(arch: dict, seed: int):
    import brevitas.nn as qnn
    import torch
    import torch.nn as nn
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    torch.manual_seed(seed)
    mods = [qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint if arch["in_signed"] else
                              Uint8ActPerTensorFixedPoint, bit_width=arch["in_bits"], return_quant_tensor=True)]
    if not arch["conv"]:  # an MLP takes flat features (a 4-D input would flatten NCHW-ordered)
        fan_in = arch["in_shape"][0]
    else:
        c, h, w = arch["in_shape"]
        cout, k, stride, pad, wb, ab = arch["conv"]
        mods += [qnn.QuantConv2d(c, cout, k, stride=stride, padding=pad, bias=False,
                                 weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=wb),
                 qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=ab, return_quant_tensor=True)]
        h, w, c = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1, cout
        if arch["pool"] and h >= 2 and w >= 2:
            mods.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        mods.append(nn.Flatten())
        fan_in = c * h * w
    for i, (n, wb, ab) in enumerate(arch["dense"]):
        mods.append(qnn.QuantLinear(fan_in, n, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                    weight_bit_width=wb))
        if i < len(arch["dense"]) - 1:
            mods.append(qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=ab, return_quant_tensor=True))
        fan_in = n
    return nn.Sequential(*mods).eval()


def _weight_init(prepared, layer):
    node = next(n for n in prepared.graph.node if n.name == layer.attrs["onnx_node"])
    quant = prepared.find_producer(node.input[1])
    return quant, quant.input[0]


def make_net(folder: Path, arch: dict, seed: int, group_size: int = 0, build=_brevitas_net) -> RandomNet:
    """Export ``build(arch, seed)`` (a Brevitas module taking ``arch["in_shape"]``), prepare,
    then overwrite every layer's weights with random integers whose groups (``group_size``
    rows of the fan-in, per output) use random widths <= weight_bits."""
    import torch
    from brevitas.export import export_qonnx

    from flipq.hls.lower import lower_qonnx
    from flipq.hls.prepare import load_qonnx, prepare_qonnx

    rng = np.random.default_rng(seed)
    net = build(arch, seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    with torch.no_grad():
        export_qonnx(net, torch.randn(1, *arch["in_shape"]), export_path=str(path))
    prepared = prepare_qonnx(load_qonnx(path))
    intmodel = lower_qonnx(prepared)
    wanted = {}
    for layer in intmodel.mac_layers:
        bits = layer.attrs["weight_bits"]
        quant, init = _weight_init(prepared, layer)
        scale = float(np.asarray(prepared.get_initializer(quant.input[1])).ravel()[0])
        qmin, qmax = -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1  # Brevitas weights are narrow-range
        kn = layer.weight.reshape(-1, layer.weight.shape[-1])
        k, n = kn.shape
        g = k if group_size <= 0 or group_size > k else group_size
        n_groups = -(-k // g)
        group_bits = rng.integers(max(2, bits - 3), bits + 1, size=(n, n_groups))
        w = np.zeros_like(kn)
        for col in range(n):
            for grp in range(n_groups):
                d = bits - int(group_bits[col, grp])
                lo, hi = -((-qmin) >> d), qmax >> d
                w[grp * g:(grp + 1) * g, col] = rng.integers(lo, hi + 1, size=min(g, k - grp * g)) << d
        w_full = w.reshape(layer.weight.shape)
        onnx_w = w_full.transpose(3, 0, 1, 2) if layer.op == "conv" else w_full  # HWIO -> OHWI
        prepared.set_initializer(init, (onnx_w * scale).astype(np.float32))
        wanted[layer.name] = (w_full, g, group_bits)
    intmodel = lower_qonnx(prepared)
    for layer in intmodel.mac_layers:
        w_full, g, group_bits = wanted[layer.name]
        assert np.array_equal(layer.weight, w_full), layer.name
        layer.attrs.update(group_size=g, group_bits=[int(b) for b in group_bits.ravel()])
    return RandomNet(prepared, intmodel)


def random_inputs(intmodel, rows: int, seed: int) -> np.ndarray:
    q = intmodel.input_quant
    return np.random.default_rng(seed).integers(q.qmin, q.qmax + 1, size=(rows, *intmodel.input_shape))


def qonnx_accumulators(prepared, intmodel, q: np.ndarray) -> np.ndarray:
    import qonnx.core.onnx_exec as oxe

    iname, oname = prepared.graph.input[0].name, prepared.graph.output[0].name
    x = (q * 2.0 ** intmodel.input_quant.exp).astype(np.float32)
    out = np.concatenate([oxe.execute_onnx(prepared, {iname: x[i:i + 1]})[oname] for i in range(len(x))])
    acc = out.astype(np.float64) * 2.0 ** -intmodel.output_exp
    assert np.array_equal(acc, np.round(acc))
    return acc.astype(np.int64)


def check_build(build, net: RandomNet, seed: int = 0) -> None:
    im = net.intmodel
    q = random_inputs(im, ROWS, seed)
    csim = CsimBackend(build.lib_path, build.meta)
    try:
        max_bits = max(layer.attrs["weight_bits"] for layer in im.mac_layers)
        for k in range(1, max(max_bits, 2) + 1):
            got = csim.run(q, planes=k)
            want = Emulator(im, planes=k).run(q)
            bad = np.flatnonzero(~(got.reshape(ROWS, -1) == want.reshape(ROWS, -1)).all(axis=1))
            assert bad.size == 0, f"planes={k}: C-sim differs from the emulator on rows {bad.tolist()}"
            # the kernels' own loop counts, one sample, equal the cost model's cycles
            assert csim.count_cycles(q[:1], k) == modeled_processes(build.plan, k, build.io_type), f"planes={k}"
        full = csim.run(q[:QONNX_ROWS], planes=8)
        assert np.array_equal(full, Emulator(im).run(q[:QONNX_ROWS]))
        assert np.array_equal(full.reshape(QONNX_ROWS, -1),
                              qonnx_accumulators(net.prepared, im, q[:QONNX_ROWS]).reshape(QONNX_ROWS, -1))
    finally:
        csim.close()


# ---------------------------------------------------------------------------------------
# A small CNN, both io types, shared by several tests
# ---------------------------------------------------------------------------------------
CNN = {"in_shape": (2, 7, 7), "in_bits": 6, "in_signed": True, "conv": (4, 3, 1, 1, 5, 4), "pool": True,
       "dense": [(12, 3, 3), (5, 6, None)]}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return make_net(tmp_path_factory.mktemp("cnn"), CNN, seed=1, group_size=5)


@pytest.fixture(scope="module", params=["io_parallel", "io_stream"])
def cnn_build(request, cnn, tmp_path_factory):
    first = cnn.intmodel.mac_layers[0].name
    pe = {first: 2}  # 4 output channels: two blocks of two
    return build_bitserial(cnn.intmodel, cnn.prepared, tmp_path_factory.mktemp(request.param),
                           io_type=request.param, pe=pe)


def test_cnn_csim_equals_emulator_and_qonnx(cnn, cnn_build):
    check_build(cnn_build, cnn)
    assert [lay.name for lay in cnn_build.layers] == [lay.name for lay in cnn.intmodel.mac_layers]
    assert cnn_build.layers[0].pe == 2
    assert set(cnn_build.hls_names) == {lay.name for lay in cnn_build.layers}


def test_generated_code_is_bit_serial(cnn_build):
    firmware = cnn_build.project_dir / "firmware"
    top = (firmware / "myproject.cpp").read_text()
    assert "ap_uint<4> planes" in top and "ap_uint<4> planes" in (firmware / "myproject.h").read_text()
    assert top.count("flipq::bitserial_") == len(cnn_build.layers)
    assert "nnet::dense" not in top and "nnet::conv_2d" not in top
    params = (firmware / "parameters.h").read_text()
    # ROM words SIMD bits wide (ap_uint<SIMD> in synthesis, see test_tables_are_ap_words_in_synthesis)
    roms = re.findall(r"static const flipq::table_word<(\d+), false>::type fq_rom\d+\[", params)
    assert roms == [str(lay.simd) for lay in cnn_build.layers]
    for lay in cnn_build.layers:  # bias banks [NB][PE]
        assert re.search(rf"fq_bias\d+\[{lay.n_out // lay.pe}\]\[{lay.pe}\] = ", params), lay.name
    assert not list((firmware / "weights").glob("w*.h"))  # no float weight arrays to compile


def kernel_synthesis_problems(texts: dict, tcl: str) -> list:
    """What an HLS engineer finds reading the kernels (header name -> text) and the synthesis Tcl;
    empty when they are written for synthesis. C-simulation-only code (``#if !defined(__SYNTHESIS__)``
    blocks) is left out: synthesis never sees it."""
    import re

    problems = []

    def need(ok, what):
        if not ok:
            problems.append(what)

    def body(text, start):  # the brace-balanced block opening at or after `start`
        i = text.index("{", start)
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1:j]
        return text[i + 1:]

    synth = {h: re.sub(r"#if !defined\(__SYNTHESIS__\).*?#endif|#ifndef __SYNTHESIS__.*?#endif", "", t, flags=re.S)
             for h, t in texts.items()}
    code = {h: re.sub(r"//[^\n]*", "", t) for h, t in synth.items()}
    for header, text in synth.items():
        # every loop pipelined at II=1 or fully unrolled; nothing skipped inside a pipeline; a
        # run-time trip count carries LOOP_TRIPCOUNT
        need("continue;" not in text, f"{header}: continue in a loop")
        loops = list(re.finditer(r"(?:\n *(\w+):)?\n\s*for \(([^)]*)\) \{\n((?:[ \t]*#pragma[^\n]*\n)*)", text))
        need(len(loops) == text.count("for ("), f"{header}: a loop without its pragmas")
        for m in loops:
            label, head, pragmas = m.group(1), m.group(2), m.group(3)
            need("PIPELINE II = 1" in pragmas or "UNROLL" in pragmas, f"{header}: loop {label or head} neither "
                 "pipelined at II=1 nor unrolled")
            bound = head.split("<")[1].split(";")[0].strip()
            if "PIPELINE" in pragmas and not re.fullmatch(r"CONFIG_T::\w+( \* CONFIG_T::\w+)?", bound):
                need("LOOP_TRIPCOUNT" in pragmas, f"{header}: loop {label} has a run-time bound and no LOOP_TRIPCOUNT")
        # (7) no division or modulo of run-time values: `/` and `%` only in compile-time constants
        for line in code[header].splitlines():
            s = line.strip()
            if s.startswith(("#pragma", "static const", "static_assert")):
                continue
            need(not re.search(r"[^/*]/[^/*]|%", s), f"{header}: division or modulo at run time: {s}")
        # (3) canonical DATAFLOW regions: only local stream/array declarations and process calls
        # whose arguments are plain names (no constructors, no expressions)
        for m in re.finditer(r"#pragma HLS DATAFLOW\n", code[header]):
            region = code[header][m.end():]
            region = region[:region.index("\n}\n")]
            for stmt in (s.strip() for s in region.split(";")):
                stmt = re.sub(r"#pragma[^\n]*\n?", "", stmt).strip()
                if not stmt:
                    continue
                decl = re.fullmatch(r"hls::stream<.*> \w+", stmt, flags=re.S)
                call = re.fullmatch(r"\w+<[^()]*>\(([\w, \n]*)\)", stmt, flags=re.S)
                need(decl or call, f"{header}: a DATAFLOW region holds '{stmt}'")
        # (3) no process takes a struct holding pointers or stream references (HLS 214-141)
        need(not re.search(r"\n\s+hls::stream<[^\n]*> *&\s*\w+;", code[header]), f"{header}: a stream in a struct")
        need(not re.search(r"\n\s+const \w+ \*\w+;", code[header]), f"{header}: a pointer member")
        need(not re.search(r"\w+ \+= CONFIG_T::n_chan;|res \+= ", code[header]), f"{header}: a pointer walked")
        # (2) lanes from static slices: no run-time index into an input beat/vector
        consts = {name for line in code[header].splitlines() if line.strip().startswith("static const")
                  for name in re.findall(r"(\w+) = ", line)}
        for array, base, lane in re.findall(r"\b(beat|data|frame|reg)\[(\w+) \+ (\w+)\]", code[header]):
            need(base in consts or lane in consts,  # a fixed shift (k + SIMD) is a static slice
                 f"{header}: a lane selected by a run-time index: {array}[{base} + {lane}]")
        # (5) ROM words are SIMD bits wide
        need("uint64_t rom" not in code[header], f"{header}: 64-bit ROM words")
    pe, conv = code.get("flipq_bitserial_pe.h", ""), code.get("flipq_bitserial_conv2d.h", "")
    need("ARRAY_PARTITION variable = rom complete dim = 1" in pe, "weight ROMs not partitioned per PE")
    need("ARRAY_PARTITION variable = buf complete dim = 3" in pe, "activation buffer not partitioned per lane")
    # table_word<SIMD> is ap_uint<SIMD> under synthesis (test_tables_are_ap_words_in_synthesis)
    need("const typename CONFIG_T::rom_word_t rom[CONFIG_T::pe][CONFIG_T::rom_depth]" in pe
         and "static const bool tables_as_c_integers = false;" in pe, "ROM words not ap_uint<SIMD>")
    # (6) bias/threshold/descending banks [NB][PE], partitioned on the PE dimension
    need("bias[CONFIG_T::n_blocks][CONFIG_T::pe]" in pe and "ARRAY_PARTITION variable = bias complete dim = 2" in pe,
         "bias not [NB][PE] banks")
    need("thresholds[CONFIG_T::thr_blocks][CONFIG_T::thr_pe][CONFIG_T::thr_cols]" in pe
         and "ARRAY_PARTITION variable = thresholds complete dim = 2" in pe, "thresholds not [NB][PE] banks")
    need("descending[CONFIG_T::thr_blocks][CONFIG_T::thr_pe]" in pe, "descending flags not [NB][PE] banks")
    need(not re.search(r"block \* (CONFIG_T::)?pe \+ p", pe), "a bank indexed block * PE + p")
    # (1) the MVAU loop's next state is counters only: no schedule ROM, and the one table the
    # control reads (blk) is read at the look-ahead counter into registers
    if "MvauLoop:" in pe:
        loop = body(pe, pe.index("MvauLoop:"))
        need("sched[" not in pe, "a schedule ROM read in the MVAU")
        need(set(re.findall(r"blk\[(\w+)\]", loop)) <= {"ahead"}, "blk read at a non-counter address in the loop")
        for var in ("block", "k", "j", "len", "slot", "row_in", "ahead", "computed"):
            for rhs in re.findall(rf"\b{var} = ([^;]*);", loop):
                need("[" not in rhs, f"MVAU next state {var} = {rhs} reads a memory")
        need(re.search(r"if \(slot == CONFIG_T::n_pix\)\s*break;", loop), "MVAU exit not a counter compare")
    else:
        need(False, "no MvauLoop")
    # the threshold count is an adder tree, not a chain of increments
    if "threshold_count" in pe:
        count = body(pe, pe.index("threshold_count("))
        need("q++" not in count and "count_tree<" in count, "threshold count not a tree")
    # (7) the generator: one pipelined loop that reads and emits; every lane reads its own bank
    if "sliding_windows(" in conv:
        swg = body(conv, conv.index("sliding_windows("))
        pipelined = re.findall(r"PIPELINE II = 1", swg)
        need(len(pipelined) == 1 and ".read()" in swg and ".write(" in swg,
             "the window generator does not read and emit in one pipelined loop")
        need(re.search(r"line\[c0\]\[\w+ \+ \w+\]\[c\]", swg) and "variable = line complete dim = 1" in conv
             and "variable = line complete dim = 3" in conv, "window lanes do not read fixed banks")
        need("DEPENDENCE variable = line inter false" in conv, "line buffer read/write not declared independent")
    need(len(re.findall(r"#pragma HLS DATAFLOW", conv)) == 2, "conv layers are not dataflow regions")
    # (8) Vitis HLS 2020.2-2021.2 need AMD AR 76960's Y2K22 patch to export the IP
    need("76960" in tcl and "y2k22_patch" in tcl and "automg_patch_20220104.tcl" in tcl
         and tcl.find("76960") < tcl.find("open_project"), "the HLS Tcl does not refuse unpatched 2020.2-2021.2")
    return problems


def kernel_texts() -> dict:
    from flipq.hls.bitserial_writer import TEMPLATES

    return {h: (TEMPLATES / h).read_text()
            for h in ("flipq_bitserial_pe.h", "flipq_bitserial_dense.h", "flipq_bitserial_conv2d.h")}


def test_kernels_are_written_for_synthesis():
    """What an HLS engineer checks by reading (kernel_synthesis_problems): loops at II=1 or
    unrolled with trip counts; the MVAU's next state only counters (the schedule expanded into a
    step table read at the step counter, the block table one block ahead); lanes from fixed
    slices; canonical DATAFLOW regions with no streams or pointers in structs; ROM words
    ap_uint<SIMD>; [NB][PE] banks; a threshold tree; a window generator that reads and emits in
    one loop with one bank per lane; no run-time division or modulo; the Tcl's Y2K22 check."""
    from flipq.overlays.render import TEMPLATES as TCL

    assert kernel_synthesis_problems(kernel_texts(), (TCL / "hls_synth.tcl").read_text()) == []


def test_synthesis_checks_catch_the_old_kernels():
    """Each check of kernel_synthesis_problems fails on the kernels and Tcl it was written against
    (tests/data/kernels_before/), one problem per review point."""
    old = Path(__file__).parent / "data" / "kernels_before"
    texts = {h: (old / h).read_text() for h in kernel_texts()}
    problems = "\n".join(kernel_synthesis_problems(texts, (old / "hls_synth.tcl").read_text()))
    for what in ("a schedule ROM read in the MVAU", "a lane selected by a run-time index",
                 "a DATAFLOW region holds", "a stream in a struct", "a pointer walked", "64-bit ROM words",
                 "ROM words not ap_uint<SIMD>", "bias not [NB][PE] banks", "thresholds not [NB][PE] banks",
                 "a bank indexed block * PE + p", "division or modulo at run time",
                 "the window generator does not read and emit in one pipelined loop",
                 "window lanes do not read fixed banks", "threshold count not a tree",
                 "does not refuse unpatched 2020.2-2021.2"):
        assert what in problems, what
    # and each holds on the new text with one thing put back
    texts = kernel_texts()
    tcl = (Path(__file__).resolve().parents[1] / "overlays" / "templates" / "hls_synth.tcl").read_text()
    pe = texts["flipq_bitserial_pe.h"]
    for broken, what in ((pe.replace("j = next_j;", "j = blk[block][0];"), "reads a memory"),
                         (pe.replace("w.lane[i] = reg[i];", "w.lane[i] = reg[r + i];"), "run-time index"),
                         (pe.replace("count_tree<0, CONFIG_T::n_thr>", "q++ + count_tree<0, CONFIG_T::n_thr>"),
                          "not a tree")):
        assert any(what in p for p in kernel_synthesis_problems(dict(texts, **{"flipq_bitserial_pe.h": broken}),
                                                                 tcl)), what


def test_declared_widths_are_the_plans(cnn_build):
    """accum_t/psum_t in the generated config are the hardware plan's (the CNN's inputs sit on
    their own grids, so hls4ml adds no shift)."""
    import re

    params = (cnn_build.project_dir / "firmware" / "parameters.h").read_text()
    for lay in cnn_build.layers:
        block = params[params.index(f"// {lay.name}: "):]
        block = block[:block.index("\n};")]  # the config struct closes on its own line
        assert f"typedef ap_int<{lay.acc_bits}> accum_t;" in block, (lay.name, lay.acc_bits)
        assert f"typedef ap_int<{lay.psum_bits}> psum_t;" in block, (lay.name, lay.psum_bits)
        assert f"static const unsigned pe = {lay.pe};" in block
        assert f"static const unsigned simd = {lay.simd};" in block
        assert re.search(rf"groups of {lay.group_size}, folded {lay.pe} PE x {lay.simd} SIMD", block)


def test_broken_plane_order_changes_output(cnn, cnn_build, tmp_path):
    """Make the kernel subtract plane 0 instead of the sign plane: C-sim must notice."""
    params = cnn_build.project_dir / "firmware" / "parameters.h"
    original = params.read_text()
    bits = cnn_build.layers[0].weight_bits
    needle = f"static const unsigned sign_plane = {bits - 1};"
    assert needle in original
    try:
        params.write_text(original.replace(needle, "static const unsigned sign_plane = 0;", 1))
        lib = compile_project(cnn_build.project_dir, lib_name="libbroken.so")
    finally:
        params.write_text(original)
    q = random_inputs(cnn.intmodel, ROWS, 3)
    with CsimBackend(lib, cnn_build.meta) as broken, CsimBackend(cnn_build.lib_path, cnn_build.meta) as good:
        want = Emulator(cnn.intmodel).run(q)
        assert np.array_equal(good.run(q, 8), want)
        assert not np.array_equal(broken.run(q, 8), want)


def test_popcount_csim_equals_the_lane_loop(cnn, cnn_build):
    """The C-sim counts weight bits by popcount over activation bit-slices; compiled with
    FLIPQ_CSIM_LANES it runs the kernel's own lane loop. Same outputs, every planes (the CNN's
    groups of 5 make every word window unaligned; signed 6-bit inputs, unsigned activations)."""
    lanes = compile_project(cnn_build.project_dir, lib_name="liblanes.so", defines=("FLIPQ_CSIM_LANES",))
    q = random_inputs(cnn.intmodel, ROWS, 4)
    with CsimBackend(lanes, cnn_build.meta) as slow, CsimBackend(cnn_build.lib_path, cnn_build.meta) as fast:
        for planes in range(1, 9):
            assert np.array_equal(slow.run(q, planes), fast.run(q, planes)), planes
    pe_header = (cnn_build.project_dir / "firmware" / "nnet_utils" / "flipq_bitserial_pe.h").read_text()
    # the popcount path is simulation-only: synthesis sees the lane loop
    assert "#if !defined(__SYNTHESIS__) && !defined(FLIPQ_CSIM_LANES)" in pe_header


def test_popcount_matvec_equals_lane_loop_on_edge_types(tmp_path):
    """bitserial_matvec alone (tests/data/bitserial_matvec_csim.cpp): unaligned 70-wide groups of
    two words, activations wider than 64 bits (the C-sim falls back to the lane loop there), and
    a partial sum too narrow for its sums (both wrap alike) -- popcount build = lane-loop build."""
    import shutil
    import subprocess

    from flipq.hls.bitserial_writer import TEMPLATES
    from flipq.hls.cxx import ap_types

    gxx = shutil.which("g++")
    source = Path(__file__).parent / "data" / "bitserial_matvec_csim.cpp"
    outputs = []
    for defines in ([], ["-DFLIPQ_CSIM_LANES"]):
        exe = tmp_path / f"matvec{len(defines)}"
        subprocess.run([gxx, "-O1", "-std=c++17", *defines, f"-I{ap_types()}", f"-I{TEMPLATES}", str(source),
                        "-o", str(exe)], check=True, capture_output=True)
        outputs.append(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split())
    assert len(outputs[0]) == 27 and len(set(outputs[0])) > 20  # 3 layers x 3 lowest planes x 3 columns
    assert outputs[0] == outputs[1]


def test_tables_are_ap_words_in_synthesis(tmp_path):
    """The layer tables (plane words, steps, thresholds) are ap_[u]int<W> where synthesis reads
    them, and C integers of the same value in the C-sim (compile time, docs/compile_scale.md);
    wider than 64 bits they stay ap types in both. Checked by the compiler, both ways."""
    import shutil
    import subprocess

    from flipq.hls.bitserial_writer import TEMPLATES
    from flipq.hls.cxx import ap_types

    source = tmp_path / "words.cpp"
    # the ap_types headers g++ can compile come first; FLIPQ_AS_SYNTHESIS then defines
    # __SYNTHESIS__ for the kernel header alone
    source.write_text("""#include <type_traits>
#include "ap_fixed.h"
#include "ap_int.h"
#include "hls_stream.h"
#ifdef FLIPQ_AS_SYNTHESIS
#define __SYNTHESIS__
#endif
#include "flipq_bitserial_pe.h"
using flipq::table_word;
#ifdef __SYNTHESIS__
static_assert(std::is_same<table_word<12, false>::type, ap_uint<12> >::value, "rom word");
static_assert(std::is_same<table_word<64, false>::type, ap_uint<64> >::value, "rom word 64");
static_assert(std::is_same<table_word<9, true>::type, ap_int<9> >::value, "threshold");
#else
static_assert(std::is_same<table_word<12, false>::type, uint64_t>::value, "rom word");
static_assert(std::is_same<table_word<64, false>::type, uint64_t>::value, "rom word 64");
static_assert(std::is_same<table_word<9, true>::type, int64_t>::value, "threshold");
#endif
static_assert(std::is_same<table_word<65, false>::type, ap_uint<65> >::value, "wide word");
static_assert(std::is_same<table_word<70, true>::type, ap_int<70> >::value, "wide threshold");
int main() { return 0; }
""")
    gxx = shutil.which("g++")
    for defines in ([], ["-DFLIPQ_AS_SYNTHESIS"]):
        run = subprocess.run([gxx, "-std=c++17", "-fsyntax-only", *defines, f"-I{ap_types()}", f"-I{TEMPLATES}",
                              str(source)], capture_output=True, text=True)
        assert run.returncode == 0, (defines, run.stderr[-2000:])


def test_csim_refuses_bad_calls(cnn, cnn_build):
    with CsimBackend(cnn_build.lib_path, cnn_build.meta) as csim:
        assert csim.name == "csim" and csim.measured is False
        q = random_inputs(cnn.intmodel, 2, 0)
        csim.run(q, 1)
        assert set(csim.last_timings) == {"pack", "transfer", "compute", "unpack"}
        with pytest.raises(ValueError, match="planes"):
            csim.run(q, 0)
        with pytest.raises(ValueError, match="shape"):
            csim.run(q[:, :, :, :1], 3)
    bad_meta = dict(cnn_build.meta, output_shape=[3])
    with pytest.raises(CsimError, match="outputs per sample"):
        CsimBackend(cnn_build.lib_path, bad_meta)


# ---------------------------------------------------------------------------------------
# Random models (property test, few examples: each one compiles)
# ---------------------------------------------------------------------------------------
@st.composite
def archs(draw):
    conv = None
    if draw(st.booleans()):
        k = draw(st.sampled_from([1, 2, 3]))
        conv = (draw(st.integers(1, 5)), k, draw(st.sampled_from([1, 2])), draw(st.integers(0, k - 1)),
                draw(st.integers(2, 8)), draw(st.integers(2, 8)))
    dense = [(draw(st.integers(1, 9)), draw(st.integers(2, 8)), draw(st.integers(2, 8)))
             for _ in range(draw(st.integers(1, 2)))]
    shape = (draw(st.integers(1, 3)), draw(st.integers(3, 6)), draw(st.integers(3, 6)))
    return {"in_shape": shape if conv else (int(np.prod(shape)),),
            "in_bits": draw(st.integers(2, 8)), "in_signed": draw(st.booleans()), "conv": conv,
            "pool": draw(st.booleans()), "dense": dense}


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@settings(max_examples=3, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate])
@example(arch={"in_shape": (2, 6, 5), "in_bits": 8, "in_signed": True, "conv": (3, 3, 2, 1, 8, 2), "pool": False,
               "dense": [(4, 2, 8)]}, seed=5, group_size=3, pe=2, narrow=False)
@example(arch={"in_shape": (3, 4, 4), "in_bits": 3, "in_signed": False, "conv": (2, 1, 1, 0, 2, 7), "pool": True,
               "dense": [(9, 8, 2), (3, 7, 4)]}, seed=6, group_size=70, pe=3, narrow=True)
@example(arch={"in_shape": (3, 5, 6), "in_bits": 8, "in_signed": False, "conv": (4, 3, 1, 1, 4, 3), "pool": False,
               "dense": [(5, 3, 4)]}, seed=7, group_size=0, pe=2, narrow=False)  # SIMD 9: 3 positions a word
@given(arch=archs(), seed=st.integers(0, 1000), group_size=st.sampled_from([0, 1, 3, 8, 70]),
       pe=st.integers(1, 3), narrow=st.booleans())
def test_random_models_csim_equals_emulator(tmp_path_factory, io_type, arch, seed, group_size, pe, narrow):
    """Random folding too: PE the largest option up to ``pe``, SIMD the widest or (``narrow``) a
    middle option; counted cycles = modeled at every planes (check_build)."""
    from flipq.hls.fold import pe_at_most

    folder = tmp_path_factory.mktemp("rand")
    net = make_net(folder, arch, seed, group_size)
    pes, simds = {}, {}
    for hw in plan_hardware(net.intmodel).layers:
        pes[hw.name] = pe_at_most(hw.n_out, pe)
        simds[hw.name] = hw.simd_choices[len(hw.simd_choices) // 2] if narrow else hw.simd_choices[-1]
    plan = plan_hardware(net.intmodel, pes, simd=simds)
    build = build_bitserial(net.intmodel, net.prepared, folder / "hls", io_type=io_type, plan=plan)
    check_build(build, net, seed)


# ---------------------------------------------------------------------------------------
# Packing and errors (no compiler)
# ---------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(bits=st.integers(2, 8), k=st.integers(1, 150), n=st.integers(1, 4), g=st.integers(0, 80),
       seed=st.integers(0, 2**16))
def test_pack_round_trip(bits, k, n, g, seed):
    w = np.random.default_rng(seed).integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(k, n))
    packed = pack_layer(w, bits, g)
    assert np.array_equal(unpack_layer(packed), w)
    # a plane's mask bit is set exactly where some weight of the group has that bit
    assert packed.words.dtype == np.uint64 and packed.mask.shape == (n, packed.n_groups)


def test_zero_low_planes_are_skipped():
    w = np.array([[4, -8], [-4, 0], [4, -8]])  # 4-bit, low two planes all zero
    packed = pack_layer(w, 4, 0)
    assert packed.mask.tolist() == [[0b1100], [0b1000]]
    assert active_planes(packed.mask, 4).tolist() == [[2], [1]]
    assert active_planes(packed.mask, 4, planes=1).tolist() == [[1], [1]]


def test_errors_name_layer_and_value(cnn):
    with pytest.raises(PlaneError, match=r"layer 'fcx'.*weight 9"):
        pack_layer(np.array([[9]]), 4, 0, "fcx")
    first = cnn.intmodel.mac_layers[0].name
    with pytest.raises(HardwarePlanError, match=rf"layer '{first}': pe=0"):
        plan_hardware(cnn.intmodel, {first: 0})
    with pytest.raises(HardwarePlanError, match="nope"):
        plan_hardware(cnn.intmodel, {"nope": 1})
    layer = cnn.intmodel.mac_layers[0]
    saved = list(layer.attrs["group_bits"])
    try:
        layer.attrs["group_bits"] = [2] * len(saved)
        if any(b > 2 for b in saved):
            with pytest.raises(PlaneError, match=rf"layer .{first}.: group \(output \d+, group \d+\) is declared 2 bits"):
                plan_hardware(cnn.intmodel)
    finally:
        layer.attrs["group_bits"] = saved


def test_registration_is_idempotent_and_leaves_stock_conversions_alone(cnn, tmp_path):
    import hls4ml
    from hls4ml.model.flow import get_flow

    from flipq.hls.bitserial_plugin import PASS_NAME, WRITE_PASS_NAME, register_bitserial

    register_bitserial()
    register_bitserial()
    assert get_flow("vivado:optimize").optimizers.count(f"vitis:{PASS_NAME}") == 1
    assert get_flow("vitis:write").optimizers.count(f"vitis:{WRITE_PASS_NAME}") == 1
    cfg = hls4ml.utils.config.config_from_onnx_model(cnn.prepared, granularity="name", backend="Vitis")
    stock = hls4ml.converters.convert_from_onnx_model(cnn.prepared, output_dir=str(tmp_path / "stock"),
                                                      io_type="io_parallel", backend="Vitis", hls_config=cfg)
    kinds = {layer.class_name for layer in stock.get_layers()}
    assert {"Conv2D", "Dense"} <= kinds and not any(k.startswith("BitSerial") for k in kinds)
