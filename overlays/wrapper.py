"""The board wrapper: ``flipq_top``, between the AXI DMA's 32-bit streams and the hls4ml
bit-serial top function, plus a g++ C-sim of it behind a C ABI.

    >>> cpp = generate_wrapper(meta, Path("build/demo/hls/bitserial/hls4ml_prj"), Path("ov"))  # doctest: +SKIP
    >>> lib = compile_wrapper(Path("ov"), Path("build/demo/hls/bitserial/hls4ml_prj"))        # doctest: +SKIP
    >>> words, last = simulate_wrapper(lib, meta, q, planes=2)                                # doctest: +SKIP

``flipq_top(in_r, out_r, planes, n_samples)`` reads ``n_samples`` packed samples (the layout of
:mod:`flipq.host.packing`, as accel.json says), runs the hls4ml top once per sample, and writes the
packed integer accumulators with TLAST on the batch's last word. ``planes`` of 0, or above
accel.json's ``max_planes``, accumulates every stored plane. The AXI-lite offsets (``planes`` 0x10,
``n_samples`` 0x18) follow from the argument order: Vitis HLS places ``ap_ctrl`` at 0x00..0x0C and
then gives each 32-bit scalar 8 bytes in the order the arguments are declared.

Both number conversions are exact or refused at generation time: an input integer ``q`` becomes the
raw bits ``q << in_shift`` of hls4ml's ``input_t`` (value ``q * 2**input_exp``), and a ``result_t``'s
raw bits shifted right by ``out_shift`` give the integer accumulator (value ``* 2**output_exp``).
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flipq.hls.cxx import CompileError, ap_types, build_shared_library
from flipq.host.accelmeta import AccelMeta
from flipq.host.packing import pack
from flipq.overlays.errors import OverlayError, OverlayInputError
from flipq.host.files import replacing, write_atomic
from flipq.overlays.render import render

TOP = "flipq_top"
HEADER = "flipq_top.h"
SOURCE = "flipq_top.cpp"
CSIM_SOURCE = "flipq_top_csim.cpp"
STREAM_WORD_BITS = 32
# Vitis HLS's s_axilite map for ap_ctrl_hs plus two 32-bit scalars, in argument order.
REGISTER_ORDER = (("planes", 0x10), ("n_samples", 0x18))


class WrapperError(OverlayError):
    """The wrapper cannot be generated or run exactly; names the file, field and value."""


class WrapperLibraryError(OverlayInputError):
    """A compiled wrapper library that cannot be loaded (truncated, corrupt, another ABI)."""


@dataclass(frozen=True)
class FixedType:
    """An ``ap_[u]fixed<W,I>`` / ``ap_[u]int<W>`` as hls4ml writes it in defines.h."""

    text: str
    width: int
    integer: int
    signed: bool

    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def raw(self) -> str:
        return f"ap_{'int' if self.signed else 'uint'}<{self.width}>"


@dataclass(frozen=True)
class HlsPort:
    arg: str  # argument name in the top function
    type_name: str  # hls4ml's typedef: input_t, result_t
    elem: FixedType  # the scalar type (an io_stream beat holds `beat` of them)
    n_elems: int
    beat: int  # elements per stream beat; 1 for io_parallel


@dataclass(frozen=True)
class HlsTop:
    """The hls4ml top function as its header and defines.h declare it."""

    project: str
    project_dir: Path
    io_type: str  # io_parallel | io_stream
    input: HlsPort
    output: HlsPort
    planes_arg: str


_ARRAY_ARG = re.compile(r"^(?P<type>\w+)\s+(?P<name>\w+)\s*\[(?P<size>[^\]]+)\]$")
_STREAM_ARG = re.compile(r"^hls::stream<\s*(?P<type>\w+)\s*>\s*&\s*(?P<name>\w+)$")
_PLANES_ARG = re.compile(r"^ap_uint<\s*(?P<w>\d+)\s*>\s+(?P<name>\w+)$")
_SCALAR = re.compile(r"^ap_(?P<u>u?)(?P<kind>fixed|int)<(?P<args>[^<>]*)>$")
_ARRAY_TYPE = re.compile(r"^nnet::array<\s*(?P<elem>ap_u?(?:fixed|int)<[^<>]*>)\s*,\s*(?P<size>[^<>]+)>$")


def _product(expr: str, where: str) -> int:
    try:
        return int(np.prod([int(f) for f in expr.split("*")]))
    except ValueError:
        raise WrapperError(f"{where}: array size '{expr}' is not a product of integers") from None


def _scalar(text: str, where: str) -> FixedType:
    m = _SCALAR.match(text.strip())
    if not m:
        raise WrapperError(f"{where}: type '{text}' is not an ap_fixed/ap_ufixed/ap_int/ap_uint")
    args = [a.strip() for a in m["args"].split(",")]
    try:
        width = int(args[0])
        integer = int(args[1]) if m["kind"] == "fixed" else width
    except (ValueError, IndexError):
        raise WrapperError(f"{where}: cannot read width/integer bits of '{text}'") from None
    return FixedType(text.strip(), width, integer, signed=not m["u"])


def _typedef(defines: Path, name: str) -> tuple[FixedType, int]:
    """(scalar type, elements per beat) of ``typedef ... name;`` in defines.h."""
    m = re.search(rf"typedef\s+(?P<t>[^;]+?)\s+{re.escape(name)}\s*;", defines.read_text())
    if not m:
        raise WrapperError(f"{defines}: no typedef for '{name}'")
    t = m["t"].strip()
    arr = _ARRAY_TYPE.match(t)
    if arr:
        return _scalar(arr["elem"], f"{defines} ({name})"), _product(arr["size"], f"{defines} ({name})")
    return _scalar(t, f"{defines} ({name})"), 1


def _split_args(text: str) -> list[str]:
    args, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return args + [cur.strip()] if cur.strip() else args


def _project_name(project_dir: Path) -> str:
    cfg = project_dir / "hls4ml_config.yml"
    if cfg.is_file():
        m = re.search(r"^ProjectName:\s*(\S+)\s*$", cfg.read_text(), re.M)
        if m:
            return m.group(1)
    headers = [h for h in (project_dir / "firmware").glob("*.h") if (h.with_suffix(".cpp")).is_file()]
    if len(headers) == 1:
        return headers[0].stem
    raise WrapperError(f"{project_dir}: no ProjectName in hls4ml_config.yml and no single "
                       "firmware/<project>.h beside its .cpp")


def read_hls_top(project_dir: Path) -> HlsTop:
    """Parse the hls4ml project's top prototype (firmware/<project>.h) and its types (defines.h)."""
    project_dir = Path(project_dir)
    if not (project_dir / "firmware").is_dir():
        raise WrapperError(f"{project_dir}: not an hls4ml project (no firmware/ folder)")
    project = _project_name(project_dir)
    header = project_dir / "firmware" / f"{project}.h"
    defines = project_dir / "firmware" / "defines.h"
    for path in (header, defines):
        if not path.is_file():
            raise WrapperError(f"{path} not found (hls4ml project '{project}')")
    m = re.search(rf"\bvoid\s+{re.escape(project)}\s*\((?P<args>[^)]*)\)\s*;", header.read_text())
    if not m:
        raise WrapperError(f"{header}: no prototype 'void {project}(...)'")
    args = _split_args(m["args"])
    if len(args) != 3:
        raise WrapperError(f"{header}: {project}() takes {len(args)} arguments ({', '.join(args)}); the "
                           "bit-serial top takes input, output and planes")
    planes = _PLANES_ARG.match(args[2])
    if not planes:
        raise WrapperError(f"{header}: last argument '{args[2]}' is not 'ap_uint<N> planes' "
                           "(a stock hls4ml project? the wrapper needs the bit-serial kernels)")
    ports, kinds = [], set()
    for arg in args[:2]:
        am, sm = _ARRAY_ARG.match(arg), _STREAM_ARG.match(arg)
        if not (am or sm):
            raise WrapperError(f"{header}: argument '{arg}' is neither an array nor an hls::stream")
        kinds.add("io_parallel" if am else "io_stream")
        mm = am or sm
        elem, beat = _typedef(defines, mm["type"])
        if am:
            if beat != 1:
                raise WrapperError(f"{defines}: '{mm['type']}' is an nnet::array, but {header} passes "
                                   "it as a plain array")
            n = _product(am["size"], f"{header} ({mm['name']})")
        else:
            n = -1  # io_stream: the beat count is not in the prototype; accel.json gives it
        ports.append(HlsPort(mm["name"], mm["type"], elem, n, beat))
    if len(kinds) != 1:
        raise WrapperError(f"{header}: mixes array and stream arguments")
    return HlsTop(project, project_dir, kinds.pop(), ports[0], ports[1], planes["name"])


def _int_type(bits: int, signed: bool) -> str:
    return f"ap_{'int' if signed else 'uint'}<{bits}>"


def _dataflow_parts(top: HlsTop) -> dict:
    """The pieces of the per-sample dataflow region that differ by io type: the channels between
    reader, model and writer (arrays, i.e. ping-pong buffers, for io_parallel; the model's own
    beat streams for io_stream, so the reader and writer beat the samples in and out)."""
    p = top.project
    if top.io_type == "io_parallel":
        return {
            "channels": ("        flipq_in_elem_t x[FLIPQ_N_IN];\n        flipq_out_elem_t y[FLIPQ_N_OUT];"),
            "x_param": "flipq_in_elem_t x_out[FLIPQ_N_IN]", "y_param": "const flipq_out_elem_t y_in[FLIPQ_N_OUT]",
            "to_model": "    for (int i = 0; i < FLIPQ_N_IN; i++) {\n#pragma HLS UNROLL\n        x_out[i] = x[i];\n    }",
            "from_model": "    for (int i = 0; i < FLIPQ_N_OUT; i++) {\n#pragma HLS UNROLL\n        y[i] = y_in[i];\n    }",
            "model_call": f"        {p}(x, y, planes);", "x_arg": "x", "y_arg": "y",
        }
    i, o = top.input, top.output
    return {
        # one sample's worth of beats fits in each FIFO: the stages never wait on each other's drain
        "channels": (f"        hls::stream<{i.type_name}> x_s(\"flipq_x\");\n"
                     f"#pragma HLS STREAM variable=x_s depth={max(1, i.n_elems // i.beat)}\n"
                     f"        hls::stream<{o.type_name}> y_s(\"flipq_y\");\n"
                     f"#pragma HLS STREAM variable=y_s depth={max(1, o.n_elems // o.beat)}"),
        "x_param": f"hls::stream<{i.type_name}> &x_out", "y_param": f"hls::stream<{o.type_name}> &y_in",
        "to_model": "\n".join([
            "to_beats:",
            f"    for (int b = 0; b < {i.n_elems // i.beat}; b++) {{",
            "#pragma HLS PIPELINE II=1",
            f"        {i.type_name} beat;",
            f"        for (int j = 0; j < {i.beat}; j++) {{",
            "#pragma HLS UNROLL",
            f"            beat[j] = x[b * {i.beat} + j];",
            "        }",
            "        x_out.write(beat);",
            "    }"]),
        "from_model": "\n".join([
            "from_beats:",
            f"    for (int b = 0; b < {o.n_elems // o.beat}; b++) {{",
            "#pragma HLS PIPELINE II=1",
            f"        const {o.type_name} beat = y_in.read();",
            f"        for (int j = 0; j < {o.beat}; j++) {{",
            "#pragma HLS UNROLL",
            f"            y[b * {o.beat} + j] = beat[j];",
            "        }",
            "    }"]),
        "model_call": f"        {p}(x_s, y_s, planes);", "x_arg": "x_s", "y_arg": "y_s",
    }


def wrapper_values(meta: AccelMeta, top: HlsTop) -> dict:
    """Template values for flipq_top.{h,cpp}; refuses any conversion that would not be exact."""
    fw = top.project_dir / "firmware"
    header, defines = fw / f"{top.project}.h", fw / "defines.h"
    ip, op = meta.input.packing, meta.output.packing
    for name, spec in (("input", ip), ("output", op)):
        if spec.word_bits != STREAM_WORD_BITS:
            raise WrapperError(f"accel.json: field '{name}.packing.word_bits' = {spec.word_bits}; the "
                               f"wrapper's AXI streams are {STREAM_WORD_BITS}-bit")
    n_in, n_out = meta.input.n_elems, meta.output.n_elems
    i_port, o_port = top.input, top.output
    if top.io_type == "io_stream":
        i_port = HlsPort(i_port.arg, i_port.type_name, i_port.elem, n_in, i_port.beat)
        o_port = HlsPort(o_port.arg, o_port.type_name, o_port.elem, n_out, o_port.beat)
        top = HlsTop(top.project, top.project_dir, top.io_type, i_port, o_port, top.planes_arg)
    for field, port, n in (("input.shape", i_port, n_in), ("output.shape", o_port, n_out)):
        if port.n_elems != n or n % port.beat:
            raise WrapperError(f"accel.json: field '{field}' has {n} elements, {header} declares "
                               f"'{port.arg}' with {port.n_elems} ({port.beat} per beat)")
    # input: q (packing bits, its sign) -> raw input_t bits q << in_shift
    it, q = i_port.elem, meta.input.quant
    in_shift = it.frac + q.exp
    if in_shift < 0:
        raise WrapperError(f"{defines}: {i_port.type_name} = {it.text} has {it.frac} fraction bits, "
                           f"coarser than accel.json's input.quant.exp = {q.exp}: not exact")
    need = ip.bits + in_shift + (1 if it.signed and not ip.signed else 0)
    if (ip.signed and not it.signed) or need > it.width:
        raise WrapperError(f"{defines}: {i_port.type_name} = {it.text} cannot hold accel.json's "
                           f"{ip.bits}-bit {'signed' if ip.signed else 'unsigned'} inputs "
                           f"(input.packing) on the 2^{q.exp} grid")
    # output: raw result_t bits >> out_shift -> the accumulator, packed at op.bits
    ot = o_port.elem
    out_shift = ot.frac + meta.output.exp
    if out_shift < 0:
        raise WrapperError(f"{defines}: {o_port.type_name} = {ot.text} has {ot.frac} fraction bits, "
                           f"coarser than accel.json's output.exp = {meta.output.exp}: not exact")
    if op.signed != meta.output.acc_signed or op.bits < meta.output.acc_bits:
        raise WrapperError(f"accel.json: field 'output.packing' = {op.to_dict()} does not carry "
                           f"{meta.output.acc_bits}-bit {'signed' if meta.output.acc_signed else 'unsigned'} "
                           "accumulators")
    planes_offset, n_samples_offset = meta.ip.planes_offset, meta.ip.control["n_samples"]
    if (("planes", planes_offset), ("n_samples", n_samples_offset)) != REGISTER_ORDER:
        raise WrapperError(f"accel.json: fields 'ip.planes_offset' = {hex(planes_offset)} and "
                           f"'ip.control.n_samples' = {hex(n_samples_offset)}; flipq_top's argument "
                           f"order gives {', '.join(f'{n} {hex(o)}' for n, o in REGISTER_ORDER)}")
    if not 1 <= meta.max_planes < (1 << 4):
        raise WrapperError(f"accel.json: field 'max_planes' = {meta.max_planes} does not fit the "
                           f"kernels' ap_uint<4> {top.planes_arg}")
    scalar_in = it.text if top.io_type == "io_stream" else i_port.type_name
    scalar_out = ot.text if top.io_type == "io_stream" else o_port.type_name
    return {
        "project": top.project, "project_dir": str(top.project_dir), "io_type": top.io_type,
        "n_in": n_in, "in_bits": ip.bits, "in_per_word": ip.per_word,
        "in_words": ip.words_per_sample(n_in), "in_sign": "signed" if ip.signed else "unsigned",
        "n_out": n_out, "out_bits": op.bits, "out_per_word": op.per_word,
        "out_words": op.words_per_sample(n_out), "out_sign": "signed" if op.signed else "unsigned",
        "max_planes": meta.max_planes, "max_batch": meta.max_batch,
        "planes_offset": hex(planes_offset), "n_samples_offset": hex(n_samples_offset),
        "input_exp": q.exp, "output_exp": meta.output.exp, "in_frac": it.frac, "in_type": it.text,
        "in_shift": in_shift, "out_shift": out_shift,
        "in_q_t": _int_type(ip.bits, ip.signed), "in_raw_t": it.raw, "in_elem_t": scalar_in,
        "out_q_t": _int_type(op.bits, op.signed), "out_raw_t": ot.raw, "out_elem_t": scalar_out,
        **_dataflow_parts(top),
    }


def generate_wrapper(meta: AccelMeta, hls_project_dir: Path, out_dir: Path) -> Path:
    """Write ``flipq_top.h`` and ``flipq_top.cpp`` for the hls4ml project in ``hls_project_dir``
    (the folder holding ``firmware/``) into ``out_dir``; returns the .cpp path."""
    top = read_hls_top(Path(hls_project_dir).resolve())
    values = wrapper_values(meta, top)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / HEADER, render("flipq_top.h.tpl", values))
    return write_atomic(out_dir / SOURCE, render("flipq_top.cpp.tpl", values))


# -- C simulation ------------------------------------------------------------------------------
def compile_wrapper(wrapper_dir: Path, hls_project_dir: Path, lib_path: Path | None = None,
                    opt: str = "-O1") -> Path:
    """g++ ``flipq_top.cpp``, the harness and the hls4ml firmware into a shared library with
    ``flipq_top_run`` (see templates/flipq_top_csim.cpp.tpl); returns its path."""
    wrapper_dir, project_dir = Path(wrapper_dir), Path(hls_project_dir).resolve()
    project = _project_name(project_dir)
    for name in (HEADER, SOURCE):
        if not (wrapper_dir / name).is_file():
            raise WrapperError(f"{wrapper_dir / name} not found: run generate_wrapper first")
    harness = wrapper_dir / CSIM_SOURCE
    write_atomic(harness, render("flipq_top_csim.cpp.tpl", {"project": project}))
    units = [project_dir / "firmware" / f"{project}.cpp", wrapper_dir / SOURCE, harness]
    lib = Path(lib_path) if lib_path else wrapper_dir / "libflipq_top_csim.so"
    try:
        with replacing(lib) as tmp:  # a failed compile keeps the earlier library
            build_shared_library(units, [ap_types(project_dir), project_dir / "firmware", wrapper_dir],
                                 tmp, wrapper_dir, opt=opt)
    except CompileError as e:
        raise WrapperError(str(e)) from e
    return lib


_RUN_ERRORS = {-1: "flipq_top wrote more words than the output buffer holds",
               -2: "n_samples < 0", -3: "input word count is not n_samples x words per sample",
               -4: "flipq_top left input words unread"}


def _load(lib_path: Path) -> ctypes.CDLL:
    rebuild = "rebuild it with `flipq overlay build --simulate`"
    if not Path(lib_path).is_file():
        raise FileNotFoundError(f"compiled wrapper not found: {lib_path}; {rebuild}")
    resolved = str(Path(lib_path).resolve())
    try:
        lib = ctypes.CDLL(resolved)
        for name in ("flipq_top_run", "flipq_top_in_words", "flipq_top_out_words"):
            getattr(lib, name)
    except (OSError, AttributeError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0].replace(f"{resolved}: ", "")
        raise WrapperLibraryError(f"{lib_path}: not a loadable compiled flipq_top wrapper ({reason}); "
                                  f"{rebuild}") from None
    u32p, i32p = ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_int)
    lib.flipq_top_run.argtypes = [u32p, ctypes.c_int, u32p, ctypes.c_int, ctypes.c_int, ctypes.c_int, i32p]
    lib.flipq_top_run.restype = ctypes.c_int
    return lib


def run_words(lib_path: Path, meta: AccelMeta, words: np.ndarray, planes: int,
              spare_words: int = 64) -> tuple[np.ndarray, int]:
    """Run the compiled ``flipq_top`` once on packed input ``words`` (flat, whole samples), as the
    MM2S channel delivers them; returns (every word it wrote as uint32, index of the TLAST word
    or -1). The output buffer has ``spare_words`` beyond what accel.json expects, so a wrapper
    that writes too much shows up as extra words rather than an overrun."""
    lib = _load(lib_path)
    in_wps = meta.input.packing.words_per_sample(meta.input.n_elems)
    out_wps = meta.output.packing.words_per_sample(meta.output.n_elems)
    if (lib.flipq_top_in_words(), lib.flipq_top_out_words()) != (in_wps, out_wps):
        raise WrapperError(f"{lib_path}: {lib.flipq_top_in_words()}/{lib.flipq_top_out_words()} words "
                           f"per sample in/out, accel.json's packing gives {in_wps}/{out_wps}")
    words = np.ascontiguousarray(np.asarray(words).reshape(-1), dtype=np.uint32)
    if words.size % in_wps:
        raise WrapperError(f"{words.size} input words are not whole samples of {in_wps} words")
    n = words.size // in_wps
    out = np.zeros(n * out_wps + spare_words, dtype=np.uint32)
    last = ctypes.c_int(-1)
    u32p = ctypes.POINTER(ctypes.c_uint32)
    got = lib.flipq_top_run(words.ctypes.data_as(u32p), words.size, out.ctypes.data_as(u32p), out.size,
                            int(planes), n, ctypes.byref(last))
    if got < 0:
        raise WrapperError(f"{lib_path}: flipq_top_run returned {got} ({_RUN_ERRORS.get(got, 'unknown')})")
    return out[:got].copy(), int(last.value)


def simulate_wrapper(lib_path: Path, meta: AccelMeta, q_in: np.ndarray, planes: int) -> tuple[np.ndarray, int]:
    """Pack ``q_in`` (n, *input.shape) as the host does and run the compiled ``flipq_top`` on the
    whole batch: (output words as uint32, index of the TLAST word or -1)."""
    return run_words(lib_path, meta, pack(np.asarray(q_in), meta.input.packing), planes)


def pl_from_wrapper(lib_path: Path, meta: AccelMeta):
    """The compiled wrapper as :mod:`flipq.overlays.pynq_sim`'s PL: ``compute(words, planes) -> words``.

    The simulated S2MM ends on its length register, a real one on TLAST, so a batch whose TLAST
    is not on its last word is an error here rather than a silently good transfer. The library
    is opened here, so a corrupt one is named before any transfer."""
    _load(lib_path)

    def compute(words: np.ndarray, planes: int) -> np.ndarray:
        out, last = run_words(lib_path, meta, words, planes)
        if out.size and last != out.size - 1:
            raise WrapperError(f"{lib_path}: TLAST on word {last} of {out.size}; the S2MM transfer "
                               "would end elsewhere")
        return out

    return compute


__all__ = ["FixedType", "HlsPort", "HlsTop", "WrapperError", "WrapperLibraryError", "compile_wrapper", "generate_wrapper",
           "pl_from_wrapper", "read_hls_top", "run_words", "simulate_wrapper", "wrapper_values", "REGISTER_ORDER"]
