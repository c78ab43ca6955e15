"""The RTL twin: the accelerator as parameterized Verilog, generated from the hardware plan.

The modules live in ``hls/rtl/`` (one a file, docs/rtl.md); this module stitches them into one
design for an integer model: ROM hex files and a parameter set per MVAU (``flipq.hls.rtlmvau``), a
wrapper per integer-model layer (``flipq_L<i>_<kind>``: the width converter and window generator in
front, the MVAU with its fused requantization or thresholds, or an element-wise / pooling stage) and
the top ``flipq_accel``, whose two streams carry the board's packed DMA words
(``flipq.host.packing``), so the ``rtl`` backend and the board move the same bytes.

Nothing read from a file reaches the Verilog: module and file names are made of layer indexes,
parameters are integers the plan computed, and layer names stay in ``rtl.json``.

>>> design = generate_rtl(intmodel, plan, Path("build/demo/hls/rtl"))     # doctest: +SKIP
>>> lib = build_rtl_library(design)                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flipq.hls.hwplan import HardwarePlan, LayerHw, bits_for, plan_hardware
from flipq.hls.verilator import RTL_DIR, build_library, rtl_sources
from flipq.host.intmodel import IntModel
from flipq.host.packing import PackingSpec

RTL_FORMAT = 1
TOP = "flipq_accel"
HARNESS = Path(__file__).parent / "templates" / "flipq_rtl_harness.cpp"
DEFAULT_FIFO_DEPTH = 8  # between layers: enough to decouple bursts, not a frame buffer
LIB_NAME = "libflipq_rtl.so"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class RtlError(ValueError):
    """An integer model the RTL twin cannot build; names the layer and the construct."""


@dataclass
class StreamShape:
    """What flows between two stages: ``lanes`` elements of ``ew`` bits a beat, a tensor of
    ``shape`` (H, W, C) or (K,) per sample, signed or not."""

    ew: int
    signed: bool
    lanes: int
    shape: tuple

    @property
    def width(self) -> int:
        return self.ew * self.lanes

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Stage:
    """One module instance of a chain."""

    module: str
    params: dict
    in_width: int
    out_width: int
    has_planes: bool = False
    hw: LayerHw | None = None  # an MVAU's layer: its ROMs and parameters are written from it
    requant: dict | None = None  # an MVAU's fused requantizer (mode 1)


@dataclass
class RtlLayer:
    index: int
    name: str  # the integer-model layer name (rtl.json only, never in Verilog)
    kind: str
    module: str  # the generated wrapper
    mac: str | None  # the plan layer it holds, if a MAC layer
    fused: list = field(default_factory=list)  # integer-model layers folded into it
    in_stream: dict = field(default_factory=dict)
    out_stream: dict = field(default_factory=dict)
    beats_out: int = 0  # output beats per sample
    stages: list = field(default_factory=list, repr=False)  # the chain inside the wrapper (all of a join's)
    sources: list = field(default_factory=list)  # the RTL layers it reads (-1: the input), in port order
    in_ports: list = field(default_factory=list)  # a join's input streams, in port order
    # a join (add, concat): per input port the stages in front of the join, which is stages[-1]
    branches: list = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k not in ("stages", "branches")}


@dataclass
class RtlDesign:
    folder: Path
    top: str
    files: list  # generated Verilog, relative to folder
    layers: list
    in_pack: PackingSpec
    out_pack: PackingSpec
    n_in: int
    n_out: int
    model_hash: str
    max_planes: int
    fifo_depth: int

    @property
    def word_bits(self) -> int:
        return self.in_pack.word_bits

    def sources(self) -> list[Path]:
        """Library modules plus the generated ones, in a stable order."""
        return rtl_sources() + [self.folder / f for f in self.files]

    def words_per_sample(self) -> tuple[int, int]:
        return (-(-self.n_in // self.in_pack.per_word), -(-self.n_out // self.out_pack.per_word))

    def to_dict(self) -> dict:
        return {"format": RTL_FORMAT, "top": self.top, "files": self.files, "model_hash": self.model_hash,
                "word_bits": self.word_bits, "max_planes": self.max_planes, "fifo_depth": self.fifo_depth,
                "input": {"bits": self.in_pack.bits, "signed": self.in_pack.signed, "n": self.n_in},
                "output": {"bits": self.out_pack.bits, "signed": self.out_pack.signed, "n": self.n_out},
                "layers": [lay.to_dict() for lay in self.layers]}


def _lit(value) -> str:
    """A Verilog parameter value: an integer (signed 32-bit range) or a generated file name."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if not -(2**31) <= v < 2**31:
            raise RtlError(f"parameter value {v} does not fit a 32-bit Verilog parameter")
        return f"({v})" if v < 0 else str(v)
    if value == "":
        return '""'  # a ROM the instance does not have
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_]+\.hex", value):
        return '{`FLIPQ_ROM_DIR, "%s"}' % value
    raise RtlError(f"parameter value {value!r} is neither an integer nor a generated ROM file name")


def _chain_module(name: str, stages: list[Stage], in_width: int, out_width: int, src: str = "in",
                  dst: str = "out") -> str:
    """A module that chains ``stages`` stream to stream; its ports ``<src>_*`` and ``<dst>_*``
    (``in``/``out`` as every stage's, ``s``/``m`` for the top's AXI-Stream sides)."""
    lines = [f"module {name} (", "    input  wire clk,", "    input  wire rst,", "    input  wire [3:0] planes,",
             f"    input  wire [{in_width - 1}:0] {src}_data,", f"    input  wire {src}_valid,",
             f"    output wire {src}_ready,", f"    output wire [{out_width - 1}:0] {dst}_data,",
             f"    output wire {dst}_valid,", f"    input  wire {dst}_ready", ");"]
    if not stages:
        lines += [f"    assign {dst}_data = {src}_data;", f"    assign {dst}_valid = {src}_valid;",
                  f"    assign {src}_ready = {dst}_ready;"]
    for k, st in enumerate(stages):
        lines.append(f"    wire [{st.out_width - 1}:0] s{k}_data;")
        lines.append(f"    wire s{k}_valid, s{k}_ready;")
    for k, st in enumerate(stages):
        feed = src if k == 0 else f"s{k - 1}"
        params = ",\n".join(f"        .{key}({_lit(v)})" for key, v in st.params.items())
        ports = [".clk(clk)", ".rst(rst)"] + ([".planes(planes)"] if st.has_planes else []) + [
            f".in_data({feed}_data)", f".in_valid({feed}_valid)", f".in_ready({feed}_ready)",
            f".out_data(s{k}_data)", f".out_valid(s{k}_valid)", f".out_ready(s{k}_ready)"]
        head = f"    {st.module} #(\n{params}\n    )" if st.params else f"    {st.module}"
        lines.append(f"{head} u{k} (" + ", ".join(ports) + ");")
    if stages:
        last = f"s{len(stages) - 1}"
        lines += [f"    assign {dst}_data = {last}_data;", f"    assign {dst}_valid = {last}_valid;",
                  f"    assign {last}_ready = {dst}_ready;"]
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def _dwc(ew: int, lanes_in: int, lanes_out: int) -> list[Stage]:
    if lanes_in == lanes_out:
        return []
    return [Stage("flipq_dwc", {"EW": ew, "IN_N": lanes_in, "OUT_N": lanes_out}, ew * lanes_in, ew * lanes_out)]


def _swg(ew: int, geo, simd: int) -> Stage:
    return Stage("flipq_swg", {"AW": ew, "CIN": geo.cin, "IN_H": geo.in_h, "IN_W": geo.in_w, "KH": geo.kh,
                               "KW": geo.kw, "SY": geo.sy, "SX": geo.sx, "PAD_T": geo.pad_top,
                               "PAD_L": geo.pad_left, "PAD_B": geo.pad_bottom, "PAD_R": geo.pad_right,
                               "OUT_H": geo.out_h, "OUT_W": geo.out_w, "SIMD": simd},
                 ew * geo.cin, ew * simd)


def _eltwise(cur: StreamShape, ow: int, *, relu=False, shift=0, sat=False, qmin=0, qmax=0) -> Stage:
    return Stage("flipq_eltwise", {"N": cur.lanes, "IW": cur.ew, "I_SIGNED": int(cur.signed), "OW": ow,
                                   "RELU": int(relu), "SHIFT": int(shift), "SAT": int(sat), "QMIN": int(qmin),
                                   "QMAX": int(qmax)}, cur.width, cur.lanes * ow)


def board_packing(intmodel: IntModel, word_bits: int = 32, output_bits: int | None = None,
                  plan: HardwarePlan | None = None):
    """(input packing, output packing) of the board's DMA stream (what accel.json says); ``plan``
    the model's hardware plan when the caller has one (the output range does not depend on it)."""
    from flipq.hls.hwplan import output_range_bits

    acc_bits, acc_signed, _ = output_range_bits(intmodel, plan)
    if output_bits is None:
        output_bits = next((b for b in (8, 16, 32) if b >= acc_bits), None)
        if output_bits is None:
            raise RtlError(f"the output needs {acc_bits}-bit accumulators; flipq's output stream carries at most "
                           "32 bits per value")
    q = intmodel.input_quant
    return PackingSpec(q.bits, q.signed, word_bits), PackingSpec(output_bits, acc_signed, word_bits)


@dataclass
class RtlPlan:
    """The design before any file is written: what the cost model reads (stage by stage)."""

    layers: list  # RtlLayer, each with its stages
    in_pack: PackingSpec
    out_pack: PackingSpec
    n_in: int
    n_out: int
    last: StreamShape  # the stream the last layer produces

    @property
    def in_lanes(self) -> int:
        return math.gcd(self.in_pack.per_word, self.n_in)

    @property
    def out_lanes(self) -> int:
        return math.gcd(self.out_pack.per_word, self.n_out)


def plan_rtl(intmodel: IntModel, plan: HardwarePlan | None = None, *, word_bits: int = 32,
             output_bits: int | None = None) -> RtlPlan:
    """The chain of stages the RTL twin builds for ``intmodel`` folded as ``plan``: per layer its
    wrapper's stages, widths and lanes (numpy only; the MVAUs' ROMs are written later)."""
    plan = plan if plan is not None else plan_hardware(intmodel)
    in_pack, out_pack = board_packing(intmodel, word_bits, output_bits, plan)
    n_in = int(np.prod(intmodel.input_shape))
    q = intmodel.input_quant
    shape = tuple(int(d) for d in intmodel.input_shape)
    cur = StreamShape(q.bits, q.signed, math.gcd(in_pack.per_word, n_in), shape)
    exp = q.exp
    layers_in = intmodel.layers
    rtl_layers: list[RtlLayer] = []
    mac_index = {hw.name: hw for hw in plan.layers}
    readers = intmodel.readers()
    outs = {-1: (cur, exp)}  # per integer-model layer: the stream its output leaves on, its exponent
    src = {-1: -1}  # per integer-model layer: the RTL layer whose output stream carries it

    def fusable(j: int) -> bool:  # layer j reads layer j - 1 only, and nothing else reads j - 1
        return j < len(layers_in) and intmodel.inputs_of(j) == [j - 1] and readers.get(j - 1, 0) == 1

    i = 0
    while i < len(layers_in):
        layer = layers_in[i]
        a = layer.attrs
        cur, exp = outs[intmodel.inputs_of(i)[0]]
        start = cur
        sources = [src[j] for j in intmodel.inputs_of(i)]
        branches: list = []
        in_ports: list = []
        stages: list[Stage] = []
        fused: list[str] = []
        kind = layer.op
        mac = None
        if layer.is_mac:
            hw: LayerHw = mac_index[layer.name]
            mac = hw.name
            acc_exp = exp + hw.w_exp
            requant = None
            nxt = layers_in[i + 1] if i + 1 < len(layers_in) else None
            # a ReLU then a requantizer, or a requantizer (with its own ReLU), fold into the MVAU's
            # output stage; a threshold layer always does (the plan carries it)
            if hw.thresholds is not None:
                spec = nxt.out_quant
                fused.append(nxt.name)
                out_ew, out_signed, exp = spec.bits, spec.signed, spec.exp
                i += 1
            else:
                relu = False
                j = i + 1
                if fusable(j) and layers_in[j].op == "relu" and fusable(j + 1) and layers_in[j + 1].op == "requant":
                    relu = True
                    fused.append(layers_in[j].name)
                    j += 1
                if fusable(j) and layers_in[j].op == "requant":
                    spec = layers_in[j].requant
                    relu = relu or bool(layers_in[j].attrs.get("relu", False))
                    requant = {"relu": relu, "shift": spec.exp - acc_exp, "qmin": spec.qmin, "qmax": spec.qmax}
                    fused.append(layers_in[j].name)
                    out_ew, out_signed, exp = spec.bits, spec.signed, spec.exp
                    i = j
                else:
                    out_ew = bits_for(min(hw.out_lo, -1), hw.out_hi)
                    out_signed, exp = True, acc_exp
            if cur.ew != hw.inp.bits or cur.signed != hw.inp.signed:
                raise RtlError(f"layer '{layer.name}': its input stream is {cur.ew}-bit "
                               f"{'signed' if cur.signed else 'unsigned'}, the plan says {hw.inp.bits}-bit "
                               f"{'signed' if hw.inp.signed else 'unsigned'}")
            if layer.op == "conv":
                geo = hw.geometry
                stages += _dwc(cur.ew, cur.lanes, geo.cin)
                stages.append(_swg(cur.ew, geo, hw.simd))
                new_shape = (geo.out_h, geo.out_w, hw.n_out)
            else:
                if cur.size != hw.fan_in:
                    raise RtlError(f"dense layer '{layer.name}': {cur.size} inputs reach it, its fan-in is {hw.fan_in}")
                stages += _dwc(cur.ew, cur.lanes, hw.simd)
                new_shape = (hw.n_out,)
            stages.append(Stage("flipq_mvau", {}, cur.ew * hw.simd, hw.pe * out_ew, has_planes=True, hw=hw,
                                requant=requant))
            cur = StreamShape(out_ew, out_signed, hw.pe, new_shape)
        elif layer.op == "requant":
            spec = layer.requant
            stages.append(_eltwise(cur, spec.bits, relu=a.get("relu", False), shift=spec.exp - exp, sat=True,
                                   qmin=spec.qmin, qmax=spec.qmax))
            cur = StreamShape(spec.bits, spec.signed, cur.lanes, cur.shape)
            exp = spec.exp
        elif layer.op == "relu":
            stages.append(_eltwise(cur, cur.ew, relu=True))
            cur = StreamShape(cur.ew, cur.signed, cur.lanes, cur.shape)
        elif layer.op == "maxpool":
            if len(cur.shape) != 3:
                raise RtlError(f"maxpool layer '{layer.name}' on a flat tensor")
            (kh, kw), (sy, sx) = a["kernel"], a["stride"]
            pt, pl, pb, pr = (int(p) for p in a.get("pads") or (0, 0, 0, 0))
            h, w, c = cur.shape
            oh, ow = (h + pt + pb - kh) // sy + 1, (w + pl + pr - kw) // sx + 1
            from flipq.hls.fold import ConvGeometry

            # the window generator pads with zero: exact where the plan found no negative value
            geo = ConvGeometry(in_h=h, in_w=w, cin=c, kh=int(kh), kw=int(kw), sy=int(sy), sx=int(sx), pad_top=pt,
                               pad_left=pl, out_h=oh, out_w=ow, pad_bottom=pb, pad_right=pr)
            stages += _dwc(cur.ew, cur.lanes, c)
            stages.append(_swg(cur.ew, geo, c))
            stages.append(Stage("flipq_poolmax", {"N": c, "AW": cur.ew, "A_SIGNED": int(cur.signed),
                                                  "KK": int(kh) * int(kw)}, cur.ew * c, cur.ew * c))
            cur = StreamShape(cur.ew, cur.signed, c, (oh, ow, c))
        elif layer.op == "flatten":
            cur = StreamShape(cur.ew, cur.signed, cur.lanes, (cur.size,))
            outs[i] = (cur, exp)
            src[i] = sources[0]
            i += 1
            continue  # the stream order is already the flattened order
        elif layer.op in ("add", "concat"):
            # a join: the operand computed last (the branch: the highest source layer) comes
            # straight in, every other (the skip, forked off earlier) waits in a FIFO as deep as
            # its whole map (hls4ml's depth for the same stream): whatever the branch holds back
            # before its first beat, the fork feeding both never stalls. Each operand is widened
            # to one pixel (its channels) a beat, and one pixel of each joins a beat on the finer grid
            parts = [outs[j] for j in intmodel.inputs_of(i)]
            if len(parts) != 2:
                raise RtlError(f"{layer.op} layer '{layer.name}' joins {len(parts)} tensors; the RTL join takes two "
                               "(preparation splits wider concatenations)")
            e = min(pe for _, pe in parts)
            latest = max(range(len(sources)), key=lambda k: sources[k])
            for k, (ps, _) in enumerate(parts):
                fifo = [Stage("flipq_fifo", {"W": ps.width, "DEPTH": ps.size // ps.lanes}, ps.width, ps.width)] \
                    if k != latest else []
                branches.append(fifo + _dwc(ps.ew, ps.lanes, int(ps.shape[-1])))
            (pa, ea), (pb, eb) = parts
            ops = {"AW": pa.ew, "A_SIGNED": int(pa.signed), "SA": ea - e, "BW": pb.ew, "B_SIGNED": int(pb.signed),
                   "SB": eb - e}
            if layer.op == "add":
                c = int(pa.shape[-1])
                ow = max(pa.ew + ea - e + int(not pa.signed), pb.ew + eb - e + int(not pb.signed)) + 1
                join = Stage("flipq_add", {"N": c, **ops, "OW": ow}, pa.ew * c, ow * c)
                cur = StreamShape(ow, True, c, pa.shape)
            else:
                ow = max(ps.ew + pe - e + int(not ps.signed and any(q.signed for q, _ in parts)) for ps, pe in parts)
                na, nb = int(pa.shape[-1]), int(pb.shape[-1])
                join = Stage("flipq_concat", {"N": na + nb, "OW": ow, "NA": na, "NB": nb, **ops},
                             pa.ew * na + pb.ew * nb, ow * (na + nb))
                cur = StreamShape(ow, pa.signed or pb.signed, na + nb, tuple(pa.shape[:-1]) + (na + nb,))
            stages = [st for b in branches for st in b] + [join]
            in_ports = [vars(ps).copy() for ps, _ in parts]
            exp = e
        else:
            raise RtlError(f"layer '{layer.name}': the RTL twin has no '{layer.op}' stage")
        index = len(rtl_layers)
        rtl_layers.append(RtlLayer(index=index, name=layer.name, kind=kind, module=f"flipq_L{index}_{kind}",
                                   mac=mac, fused=fused, in_stream=vars(start).copy(), out_stream=vars(cur).copy(),
                                   beats_out=cur.size // cur.lanes, stages=stages, sources=sources,
                                   branches=branches, in_ports=in_ports))
        outs[i] = (cur, exp)
        src[i] = index
        i += 1
    cur = outs[len(layers_in) - 1][0]
    n_out = cur.size
    if n_out != int(np.prod(intmodel.output_shape())):
        raise RtlError(f"the RTL chain ends in {n_out} values a sample, the model has {intmodel.output_shape()}")
    return RtlPlan(rtl_layers, in_pack, out_pack, n_in, n_out, cur)


def generate_rtl(intmodel: IntModel, plan: HardwarePlan | None, out_dir: Path, *, word_bits: int = 32,
                 output_bits: int | None = None, fifo_depth: int = DEFAULT_FIFO_DEPTH) -> RtlDesign:
    """Write the RTL twin of ``intmodel`` folded as ``plan`` into ``out_dir`` (see the module
    docstring); returns the design (also saved as ``out_dir/rtl.json``)."""
    from flipq.hls.rtlmvau import mvau_instance

    check_rtl_chain(intmodel)
    rp = plan_rtl(intmodel, plan, word_bits=word_bits, output_bits=output_bits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in list(out_dir.glob("*.hex")) + list(out_dir.glob("flipq_L*.v")):
        old.unlink()
    files = []
    for lay in rp.layers:
        for st in lay.stages:
            if st.hw is not None:
                st.params = mvau_instance(st.hw, out_dir, f"L{lay.index}", requant=st.requant,
                                          out_bits=lay.out_stream["ew"])
        path = out_dir / f"{lay.module}.v"
        if lay.branches:
            path.write_text(_HEADER + _join_module(lay))
        else:
            path.write_text(_HEADER + _chain_module(lay.module, lay.stages, lay.in_stream["ew"] * lay.in_stream["lanes"],
                                                    lay.out_stream["ew"] * lay.out_stream["lanes"]))
        files.append(path.name)
    in_pack, out_pack, n_in, n_out, rtl_layers = rp.in_pack, rp.out_pack, rp.n_in, rp.n_out, rp.layers
    if all(lay.sources == [lay.index - 1] for lay in rtl_layers):
        top = _top_module(rtl_layers, in_pack, out_pack, n_in, n_out, rp.last, fifo_depth)
    else:
        top = _graph_top(rtl_layers, in_pack, out_pack, n_in, n_out, rp.last, fifo_depth)
    (out_dir / f"{TOP}.v").write_text(_HEADER + top)
    files.append(f"{TOP}.v")
    design = RtlDesign(folder=out_dir, top=TOP, files=files, layers=rtl_layers, in_pack=in_pack, out_pack=out_pack,
                       n_in=n_in, n_out=n_out, model_hash=intmodel.digest(), max_planes=intmodel.max_planes(),
                       fifo_depth=fifo_depth)
    (out_dir / "rtl.json").write_text(json.dumps(_jsonable(design.to_dict()), indent=1))
    return design


def check_rtl_chain(intmodel: IntModel) -> None:
    """What the RTL twin cannot stitch, refused naming the layer before anything is written: a
    join of more than two tensors (preparation splits wider concatenations, so only a hand-made
    integer model has one). Chains and graphs of two-way joins (residual adds, concatenations,
    tensors read by several layers: a fork) are built."""
    for lay in intmodel.layers:
        if lay.op in ("add", "concat") and len(lay.attrs.get("inputs", [])) > 2:
            raise RtlError(f"{lay.op} layer '{lay.name}' joins {len(lay.attrs['inputs'])} tensors; the RTL join "
                           "takes two, so the rtl backend, `flipq verify --rtl` and `flipq overlay build --kernel rtl` "
                           "refuse this model (the HLS path builds it: C-sim, `--kernel hls`)")


def _join_module(lay: RtlLayer) -> str:
    """A join layer's wrapper: per input port its chain (FIFO, width converter) as a module of
    its own, then the join; ports ``in_*`` (the first operand), ``in1_*``, ``out_*``."""
    join = lay.stages[-1]
    text = []
    ports = ["    input  wire clk,", "    input  wire rst,", "    input  wire [3:0] planes,"]
    body = []
    for p, (chain, stream) in enumerate(zip(lay.branches, lay.in_ports)):
        w_in = stream["ew"] * stream["lanes"]
        w_out = chain[-1].out_width if chain else w_in
        sub = f"{lay.module}_p{p}"
        text.append(_chain_module(sub, chain, w_in, w_out))
        pin = "in" if p == 0 else f"in{p}"
        op = "ab"[p]
        ports += [f"    input  wire [{w_in - 1}:0] {pin}_data,", f"    input  wire {pin}_valid,",
                  f"    output wire {pin}_ready,"]
        body += [f"    wire [{w_out - 1}:0] {op}_data;", f"    wire {op}_valid, {op}_ready;",
                 f"    {sub} u_p{p} (.clk(clk), .rst(rst), .planes(planes), .in_data({pin}_data), "
                 f".in_valid({pin}_valid), .in_ready({pin}_ready), .out_data({op}_data), .out_valid({op}_valid), "
                 f".out_ready({op}_ready));"]
    ports += [f"    output wire [{join.out_width - 1}:0] out_data,", "    output wire out_valid,",
              "    input  wire out_ready"]
    params = ",\n".join(f"        .{key}({_lit(v)})" for key, v in join.params.items())
    body.append(f"    {join.module} #(\n{params}\n    ) u_join (.clk(clk), .rst(rst), .a_data(a_data), "
                ".a_valid(a_valid), .a_ready(a_ready), .b_data(b_data), .b_valid(b_valid), .b_ready(b_ready), "
                ".out_data(out_data), .out_valid(out_valid), .out_ready(out_ready));")
    text.append("\n".join([f"module {lay.module} ("] + ports + [");"] + body + ["endmodule"]) + "\n")
    return "\n".join(text)


def stream_readers(layers: list[RtlLayer]) -> dict[int, list]:
    """Per stream (the RTL layer that makes it, -1 the unpacked input) its readers in order:
    ``(layer index, input port)``, and ``("out", 0)`` for the last layer's (the top's output). A
    stream with several readers goes through a fork; every reader but the output gets a FIFO."""
    readers: dict[int, list] = {}
    for lay in layers:
        for p, s in enumerate(lay.sources or [lay.index - 1]):
            readers.setdefault(s, []).append((lay.index, p))
    if layers:
        readers.setdefault(layers[-1].index, []).append(("out", 0))
    return readers


def _graph_top(layers: list[RtlLayer], in_pack: PackingSpec, out_pack: PackingSpec, n_in: int, n_out: int,
               last: StreamShape, fifo_depth: int) -> str:
    """The top of a graph: unpack, then each layer fed by the streams it reads (``sources``); a
    stream read by several layers goes through a flipq_fork, and every stream into a layer
    through a flipq_fifo of ``fifo_depth`` (a join's deeper skip FIFO is inside its wrapper);
    the last layer's stream to pack as in a chain."""
    word = in_pack.word_bits
    in_lanes = math.gcd(in_pack.per_word, n_in)
    width = {-1: in_lanes * in_pack.bits}
    for lay in layers:
        width[lay.index] = lay.out_stream["ew"] * lay.out_stream["lanes"]
    readers = stream_readers(layers)
    final = layers[-1].index
    lines = [f"module {TOP} (", "    input  wire clk,", "    input  wire rst,", "    input  wire [3:0] planes,",
             f"    input  wire [{word - 1}:0] s_data,", "    input  wire s_valid,", "    output wire s_ready,",
             f"    output wire [{word - 1}:0] m_data,", "    output wire m_valid,", "    input  wire m_ready", ");"]

    def wires(name: str, w: int) -> None:
        lines.append(f"    wire [{w - 1}:0] {name}_data;")
        lines.append(f"    wire {name}_valid, {name}_ready;")

    def inst(module: str, params: dict, name: str, ports: list) -> None:
        head = (f"    {module} #(\n" + ",\n".join(f"        .{k}({_lit(v)})" for k, v in params.items()) + "\n    )"
                if params else f"    {module}")
        lines.append(f"{head} {name} (" + ", ".join([".clk(clk)", ".rst(rst)"] + ports) + ");")

    def stream_ports(side: str, name: str) -> list:
        return [f".{side}_data({name}_data)", f".{side}_valid({name}_valid)", f".{side}_ready({name}_ready)"]

    def tname(s: int) -> str:
        return "t_in" if s < 0 else f"t{s}"

    wires("t_in", width[-1])
    inst("flipq_unpack", {"WORD": word, "EW": in_pack.bits, "N": n_in, "LANES": in_lanes}, "u_unpack",
         [".in_data(s_data)", ".in_valid(s_valid)", ".in_ready(s_ready)"] + stream_ports("out", "t_in"))
    for lay in layers:
        wires(f"t{lay.index}", width[lay.index])
    # per stream: its readers' edges, through a fork where it has several
    edge = {}
    for s, rs in readers.items():
        w = width[s]
        if len(rs) == 1:
            edge[rs[0]] = tname(s)
            continue
        n = len(rs)
        lines += [f"    wire [{n * w - 1}:0] f{tname(s)}_data;", f"    wire [{n - 1}:0] f{tname(s)}_valid, "
                  f"f{tname(s)}_ready;"]
        inst("flipq_fork", {"W": w, "NO": n}, f"u_fork_{tname(s)}", stream_ports("in", tname(s)) + [
            f".out_data(f{tname(s)}_data)", f".out_valid(f{tname(s)}_valid)", f".out_ready(f{tname(s)}_ready)"])
        for k, r in enumerate(rs):
            name = f"{tname(s)}_r{k}"
            wires(name, w)
            lines += [f"    assign {name}_data = f{tname(s)}_data[{k * w} +: {w}];",
                      f"    assign {name}_valid = f{tname(s)}_valid[{k}];",
                      f"    assign f{tname(s)}_ready[{k}] = {name}_ready;"]
            edge[r] = name
    for lay in layers:
        ports = [".planes(planes)"]
        for p, s in enumerate(lay.sources):
            feed = edge[(lay.index, p)]
            if s >= 0 or len(readers[s]) > 1:  # a FIFO on every stream between stages
                w = width[s]
                buf = f"q{lay.index}_{p}"
                wires(buf, w)
                inst("flipq_fifo", {"W": w, "DEPTH": fifo_depth}, f"u_{buf}",
                     stream_ports("in", feed) + stream_ports("out", buf))
                feed = buf
            ports += stream_ports("in" if p == 0 else f"in{p}", feed)
        inst(lay.module, {}, f"u_L{lay.index}", ports + stream_ports("out", f"t{lay.index}"))
    # the output: widen to the packed field, width-convert, pack (as a chain's top)
    stages: list[Stage] = []
    cur = last
    if cur.ew != out_pack.bits:
        stages.append(_eltwise(cur, out_pack.bits))
        cur = StreamShape(out_pack.bits, cur.signed, cur.lanes, cur.shape)
    out_lanes = math.gcd(out_pack.per_word, n_out)
    stages += _dwc(cur.ew, cur.lanes, out_lanes)
    stages.append(Stage("flipq_pack", {"WORD": word, "EW": out_pack.bits, "N": n_out, "LANES": out_lanes},
                        out_lanes * out_pack.bits, word))
    lines.append(f"    {TOP}_tail u_tail (.clk(clk), .rst(rst), .planes(planes), "
                 + ", ".join(stream_ports("in", edge[("out", 0)])) + ", .out_data(m_data), .out_valid(m_valid), "
                 ".out_ready(m_ready));")
    lines.append("endmodule")
    return _chain_module(f"{TOP}_tail", stages, width[final], word) + "\n" + "\n".join(lines) + "\n"


_HEADER = ("// Generated by flipq.hls.rtltwin from the hardware plan; do not edit.\n"
           "`default_nettype none\n`ifndef FLIPQ_ROM_DIR\n`define FLIPQ_ROM_DIR \"\"\n`endif\n")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _top_module(layers: list[RtlLayer], in_pack: PackingSpec, out_pack: PackingSpec, n_in: int, n_out: int,
                last: StreamShape, fifo_depth: int) -> str:
    """unpack -> layer 0 -> fifo -> layer 1 -> ... -> [widen] -> [dwc] -> pack."""
    word = in_pack.word_bits
    stages: list[Stage] = []
    in_lanes = math.gcd(in_pack.per_word, n_in)
    stages.append(Stage("flipq_unpack", {"WORD": word, "EW": in_pack.bits, "N": n_in, "LANES": in_lanes},
                        word, in_lanes * in_pack.bits))
    for k, lay in enumerate(layers):
        s_in, s_out = lay.in_stream, lay.out_stream
        stages.append(Stage(lay.module, {}, s_in["ew"] * s_in["lanes"], s_out["ew"] * s_out["lanes"], has_planes=True))
        if k + 1 < len(layers):
            w = s_out["ew"] * s_out["lanes"]
            stages.append(Stage("flipq_fifo", {"W": w, "DEPTH": fifo_depth}, w, w))
    cur = last
    if cur.ew != out_pack.bits:
        stages.append(_eltwise(cur, out_pack.bits))  # sign- or zero-extend to the output word's field
        cur = StreamShape(out_pack.bits, cur.signed, cur.lanes, cur.shape)
    out_lanes = math.gcd(out_pack.per_word, n_out)
    stages += _dwc(cur.ew, cur.lanes, out_lanes)
    stages.append(Stage("flipq_pack", {"WORD": word, "EW": out_pack.bits, "N": n_out, "LANES": out_lanes},
                        out_lanes * out_pack.bits, word))
    # the top's ports carry the DMA words, named as AXI-Stream sides: s_ in, m_ out
    return _chain_module(TOP, stages, word, word, src="s", dst="m")


def build_rtl_library(design: RtlDesign, build_dir: Path | None = None, quick: bool = False) -> Path:
    """Verilate the design with the word-stream harness into a ctypes library (``quick``: compiled
    at -O0, for a check of a few rows)."""
    build_dir = Path(build_dir) if build_dir is not None else design.folder / "verilator"
    rom_dir = str(design.folder.resolve()) + "/"
    if not re.fullmatch(r"[A-Za-z0-9_./+-]+", rom_dir):
        raise RtlError(f"build folder path {rom_dir!r}: Verilog file names take letters, digits and _ . / + - only")
    lib = build_library(design.sources(), design.top, HARNESS, build_dir, LIB_NAME,
                        defines={"FLIPQ_ROM_DIR": f'"{rom_dir}"'},
                        cflags=f"{'-O0' if quick else '-O2'} -DFLIPQ_WORD={int(design.word_bits)}", quick=quick)
    # the library reads its ROMs from rom_dir: the backend refuses it once the folder has moved
    meta = load_design(design.folder)
    meta.update(library=str(lib.resolve().relative_to(design.folder.resolve())), rom_dir=rom_dir)
    (design.folder / "rtl.json").write_text(json.dumps(meta, indent=1))
    return lib


def load_design(folder: Path) -> dict:
    """``rtl.json`` of a generated design (what the ``rtl`` backend reads)."""
    return json.loads((Path(folder) / "rtl.json").read_text())
