"""The overlay flow: an hls build folder -> a self-contained overlay folder (HLS sources, Tcl for
HLS, block design and bitstream, ``accel.json``) and, where Vitis HLS and Vivado are installed,
``flipq.bit`` + ``flipq.hwh``.

>>> result = build_overlay("build/demo/hls", None, "build/demo/overlay", dry_run=True)  # doctest: +SKIP
>>> result.missing_tools                                                                # doctest: +SKIP
('vitis_hls', 'vivado')

With ``kernel="rtl"`` the accelerator is the RTL twin instead (``flipq hls --rtl`` generates it
into ``<hls>/rtl``): its Verilog, ROM files and board wrapper are copied into ``rtl/``,
``package_rtl_ip.tcl`` packages them as a Vivado IP with the HLS IP's interface and register map,
and the same block design instantiates that IP; there is no HLS synthesis, only Vivado runs.

Steps are plain functions of ``(OverlayConfig, BuildState)`` listed once in ``STEPS``; each
writes its artifacts into the output folder (atomically, file by file), so the folder alone says
how far a build got. Every Tcl path is relative to the script, so the folder can be copied to
the machine that has the tools. Templates: :mod:`flipq.overlays.render`; tools:
:mod:`flipq.overlays.tools`; the .hwh check: :mod:`flipq.overlays.check`.
"""

from __future__ import annotations

import json
import operator
import re
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from flipq.boards import Board, load_board, normalize_name
from flipq.host.accelmeta import (DEFAULT_DMA_NAME, DEFAULT_IP_NAME, DEFAULT_IP_VLNV, AccelMeta,
                                  AccelMetaError)
from flipq.host.accelerator import SIMULATED_BITSTREAM, is_simulated_bitstream
from flipq.host.intmodel import IntModel
from flipq.overlays import tools
from flipq.overlays.clocks import PsClocks, mhz_text, pl_clock
from flipq.overlays.errors import (OverlayError, OverlayInputError, ResourceError,
                                   ToolNotFoundError)
from flipq.host.files import copy_atomic, prepare_out_dir, write_atomic
from flipq.overlays.render import render, tcl_here_path, tcl_word
from flipq.overlays.metadata import accel_meta_for
from flipq.overlays.sources import RTL_DIR, RTL_JSON, SRC_DIR, copy_rtl_design, copy_sources, read_rtl_design

HLS_REPORT = "hls_report.json"
DEFAULT_BOARD = "pynq-z2"  # for an hls report older than its 'board' field
MAX_JOBS = 64
# What the block design adds around the accelerator: AXI DMA (simple mode, 32-bit, burst 16),
# two AXI interconnects/protocol converters and a reset block. Rough Vivado utilization of
# such a shell on a Zynq-7020; the HLS estimate it is added to is rough as well.
SHELL_RESOURCES = {"lut": 3500, "ff": 4500, "bram36": 2, "dsp": 0, "uram": 0}
KERNELS = ("hls", "rtl")
# The RTL twin's IP: its own VLNV, so the .hwh (and `flipq overlay check`) say which kernel a
# bitstream holds; the board wrapper's module and its register map are fixed in its Verilog.
RTL_IP_VLNV = "flipq.org:rtl:flipq_axi_top:1.0"
RTL_IP_TOP = "flipq_axi_top"
RTL_REGISTERS = {"ap_ctrl": 0x00, "planes": 0x10, "n_samples": 0x18}
RTL_SCRIPTS = ("package_rtl_ip.tcl", "block_design.tcl", "bitstream.tcl")


@dataclass(frozen=True)
class OverlayConfig:
    hls_dir: Path
    out_dir: Path
    board: str | None = None  # None: the board the hls stage checked against (hls_report.json)
    dry_run: bool = False
    max_batch: int = 1024
    fclk_mhz: float | None = None  # None: the board's fclk0; rounded to what the PS can generate
    top: str = "flipq_top"
    ip_name: str = DEFAULT_IP_NAME
    ip_vlnv: str = DEFAULT_IP_VLNV
    dma_name: str = DEFAULT_DMA_NAME
    stream_in: str = "in_r"
    stream_out: str = "out_r"
    control: str = "s_axi_control"
    design: str = "flipq"
    jobs: int = 2
    board_repo: str | None = None  # Vivado board files folder on the machine that runs the Tcl
    simulate: bool = False  # also make the folder loadable on pynq's simulated device (x86)
    kernel: str = "hls"  # "rtl": the RTL twin (<hls_dir>/rtl) packaged as the IP, no HLS synthesis

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["hls_dir"], d["out_dir"] = str(self.hls_dir), str(self.out_dir)
        return d


@dataclass
class BuildState:
    board: Board | None = None
    model: IntModel | None = None
    report: dict = field(default_factory=dict)
    clocks: PsClocks | None = None
    meta: AccelMeta | None = None
    usage: dict = field(default_factory=dict)  # resource -> (needed, available)
    files: list[Path] = field(default_factory=list)
    hls_units: list[str] = field(default_factory=list)  # compile units, relative to <out>/src
    missing_tools: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tools: dict = field(default_factory=dict)
    wrapper: Path | None = None  # generated src/flipq_top.cpp; None when the sources define the top
    project: Path | None = None  # the hls4ml project the wrapper calls
    rtl_sources: list[str] = field(default_factory=list)  # Verilog in <out>/rtl, library first
    rtl_roms: list[str] = field(default_factory=list)  # ROM hex files in <out>/rtl


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    files: tuple[Path, ...]
    usage: dict
    missing_tools: tuple[str, ...]
    ran: tuple[str, ...]
    built: bool  # flipq.bit and flipq.hwh were produced
    dry_run: bool = False
    notes: tuple[str, ...] = ()
    fclk_mhz: float | None = None

    @property
    def returncode(self) -> int:
        """0 when built, or for a dry run (which only prepares); 1 when tools were missing."""
        return 0 if self.built or self.dry_run or not self.missing_tools else 1


# -- options -------------------------------------------------------------------------------
def check_count(name: str, value, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi``, or an :class:`OverlayInputError` naming ``name``."""
    try:
        ok = not isinstance(value, bool) and operator.index(value) == value
    except TypeError:
        ok = False
    if not ok or value < lo or (hi is not None and value > hi):
        allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise OverlayInputError(f"{name} = {value!r}: expected a whole number {allowed}")
    return int(value)


def _report_board(cfg: OverlayConfig, report: dict) -> str:
    """The board to build for: the hls stage's, which an explicit ``board`` must equal."""
    checked = report.get("board", {}).get("name") if isinstance(report.get("board"), dict) else None
    if cfg.board is None:
        return checked or DEFAULT_BOARD
    if checked and normalize_name(cfg.board) != normalize_name(checked):
        raise OverlayInputError(
            f"--board {cfg.board} differs from {checked}, the board the hls stage checked "
            f"{Path(cfg.hls_dir) / HLS_REPORT} against; omit --board, or rerun the hls stage "
            f"with --board {cfg.board}")
    return cfg.board


# -- steps ---------------------------------------------------------------------------------
def step_load(cfg: OverlayConfig, st: BuildState) -> None:
    if cfg.kernel not in KERNELS:
        raise OverlayInputError(f"kernel = {cfg.kernel!r}: expected one of {', '.join(KERNELS)}")
    if cfg.kernel == "rtl" and cfg.simulate:
        raise OverlayInputError("--simulate runs the HLS board wrapper compiled with g++; the RTL twin runs "
                                "in Verilator instead (`flipq run --backend rtl`)")
    check_count("jobs", cfg.jobs, 1, MAX_JOBS)
    check_count("max_batch", cfg.max_batch, 1)
    hls = Path(cfg.hls_dir)
    if not hls.is_dir():
        raise FileNotFoundError(f"hls build folder not found: {hls}")
    path = hls / HLS_REPORT
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the resource estimate comes from the hls stage")
    try:
        st.report = json.loads(path.read_text())
    except ValueError as e:
        raise OverlayInputError(f"{path}: not valid JSON ({e}); rerun the hls stage") from e
    totals = st.report.get("totals") if isinstance(st.report, dict) else None
    if not isinstance(totals, dict):
        raise OverlayInputError(f"{path}: missing field 'totals' ({{\"lut\", \"ff\", \"bram36\", \"dsp\"}})")
    for key in ("lut", "ff", "bram36", "dsp"):
        v = totals.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise OverlayInputError(f"{path}: field 'totals.{key}' = {v!r} is not a count >= 0")
    st.board = load_board(_report_board(cfg, st.report))
    st.clocks = pl_clock(st.board, cfg.fclk_mhz)
    fclk = round(st.clocks.fclk_mhz, 6)
    if cfg.fclk_mhz is not None and abs(fclk - cfg.fclk_mhz) > 1e-6:
        st.notes.append(f"note: fclk {mhz_text(cfg.fclk_mhz)} MHz rounded to {mhz_text(fclk)} MHz, the "
                        f"nearest the {st.board.name} PS generates ({mhz_text(st.clocks.pll_mhz)} MHz / "
                        f"({st.clocks.divisor0} x {st.clocks.divisor1}))")
    st.model = IntModel.load(hls)
    try:
        st.meta = accel_meta_for(
            st.model, st.board, max_batch=cfg.max_batch, dma_name=cfg.dma_name,
            ip_name=cfg.ip_name, ip_vlnv=cfg.ip_vlnv, fclk_mhz=fclk)
    except AccelMetaError as e:
        raise OverlayInputError(str(e)) from e
    st.meta = replace(st.meta, hardware=hardware_summary(st.report, fclk))


def hardware_summary(report: dict, fclk_mhz: float) -> dict | None:
    """accel.json's ``hardware``: the per-layer plan hls_report.json priced (modeled), with the
    interval's fps at the overlay's fclk; None for a report without the folded datapath."""
    layers = report.get("layers") or []
    if not layers or any("simd" not in lay or "cycles" not in lay for lay in layers):
        return None
    interval = max(int(lay["cycles"]) for lay in layers)
    return {"label": "modeled", "interval_cycles": interval, "fps": fclk_mhz * 1e6 / interval,
            "layers": [{k: lay[k] for k in ("name", "weight_bits", "simd", "pe", "cycles") if k in lay}
                       for lay in layers]}


def step_check_resources(cfg: OverlayConfig, st: BuildState) -> None:
    totals = st.report["totals"]
    if isinstance(totals.get("chip"), dict):
        # the cost model's chip: the accelerator (fitted on Yosys) and the DMA/interconnect beside it
        chip = totals["chip"]
        need = {k: float(chip.get(k, 0) or 0) for k in ("lut", "ff", "bram36", "dsp", "uram")}
        what = "the cost model's chip total: accelerator fitted on Yosys, DMA/interconnect from AMD's figures"
    else:  # a report from before the calibrated model
        need = {k: float(totals.get(k, 0) or 0) + SHELL_RESOURCES.get(k, 0)
                for k in ("lut", "ff", "bram36", "dsp", "uram")}
        what = f"estimate plus the DMA/interconnect shell {SHELL_RESOURCES}"
    st.usage = {k: (need[k], st.board.resources.get(k, 0)) for k in need}
    over = st.board.fits(need)
    if over:
        raise ResourceError(
            f"the design does not fit {st.board.name} ({st.board.part}): " + "; ".join(over)
            + f" ({what}, from {Path(cfg.hls_dir) / HLS_REPORT}); use fewer bits/planes, smaller layers or "
            "a larger board")


def step_write_metadata(cfg: OverlayConfig, st: BuildState) -> None:
    out = prepare_out_dir(cfg.out_dir, "overlay folder")
    st.files.append(write_atomic(out / "accel.json", st.meta.to_json() + "\n"))
    # The integer model travels with the overlay: the board can verify against the emulator.
    for name in ("intmodel.json", "intmodel.npz"):
        st.files.append(copy_atomic(Path(cfg.hls_dir) / name, out / name))
    config = dict(cfg.to_dict(), fclk_mhz=st.meta.fclk_mhz, board=st.board.name)
    st.files.append(write_atomic(out / "overlay_config.json", json.dumps(config, indent=1) + "\n"))


def _model_sources(cfg: OverlayConfig, st: BuildState) -> list[Path]:
    """hls_report.json's ``sources``, each confined to the hls folder (a received build folder
    cannot have the overlay copy, and name in its Tcl, a file from elsewhere on this machine)."""
    from flipq.overlays.sources import listed_sources

    hls = Path(cfg.hls_dir).resolve()
    listed = st.report.get("sources")
    if listed:
        return listed_sources(hls, listed, str(hls / HLS_REPORT))
    return sorted((hls / "firmware").glob("*.cpp"))


def _hls4ml_project(src: Path) -> Path | None:
    """The hls4ml project folder of a top source ``<prj>/firmware/<project>.cpp``, if it is one."""
    if src.parent.name == "firmware" and src.with_suffix(".h").is_file() \
            and (src.parent / "defines.h").is_file():
        return src.parent.parent
    return None


def step_write_sources(cfg: OverlayConfig, st: BuildState) -> None:
    """Copy the model's sources into ``src/`` and, unless they bring their own top, generate
    ``flipq_top`` (DMA streams <-> the hls4ml top) beside them. For the RTL kernel: copy the
    RTL twin into ``rtl/`` instead."""
    from flipq.overlays.wrapper import HEADER, SOURCE, TOP, generate_wrapper

    if cfg.kernel == "rtl":
        write_rtl_design(cfg, st)
        return
    sources = _model_sources(cfg, st)
    src = Path(cfg.out_dir) / SRC_DIR
    src.mkdir(exist_ok=True)
    st.hls_units = copy_sources(sources, src)
    if f"{cfg.top}.cpp" in st.hls_units:
        return  # a hand-written (or previously generated) top is used as it is
    if cfg.top != TOP:
        raise OverlayInputError(f"top = {cfg.top!r}: the generated wrapper defines {TOP}; name it so, "
                                f"or list your own {cfg.top}.cpp in {HLS_REPORT}'s 'sources'")
    projects = sorted({p for p in map(_hls4ml_project, sources) if p is not None})
    if len(projects) != 1:
        where = Path(cfg.hls_dir) / HLS_REPORT
        raise OverlayInputError(
            f"{where}: field 'sources' = {[str(s) for s in sources]} names "
            f"{len(projects)} hls4ml projects (firmware/<project>.cpp with its .h and defines.h); "
            f"the {cfg.top} wrapper needs exactly one, or a {cfg.top}.cpp among the sources")
    st.project = projects[0]
    st.wrapper = generate_wrapper(st.meta, st.project, src)
    st.hls_units.insert(0, SOURCE)
    st.files += [src / HEADER, st.wrapper]


def _rtl_command(cfg: OverlayConfig) -> str:
    """The command that generates the RTL twin this build folder's overlay needs."""
    hls = Path(cfg.hls_dir)
    return f"flipq hls --out {hls.parent if hls.name == 'hls' else hls} --rtl"


def write_rtl_design(cfg: OverlayConfig, st: BuildState) -> None:
    """The RTL twin of ``<hls_dir>/rtl`` into ``<out>/rtl``, refused unless it was generated for
    this integer model, with these DMA words, inputs and outputs and the wrapper's registers."""
    from flipq.hls.verilator import RTL_DIR as RTL_LIBRARY, rtl_sources

    design = Path(cfg.hls_dir) / RTL_DIR
    make_it = _rtl_command(cfg)
    meta = read_rtl_design(design, make_it)
    where = design / RTL_JSON
    m = st.meta
    digest = st.model.digest()
    if meta.get("model_hash") not in (None, digest):
        raise OverlayInputError(f"{where}: generated for another integer model (model_hash {meta.get('model_hash')!r}, "
                                f"{Path(cfg.hls_dir) / 'intmodel.json'} has {digest!r}); run `{make_it}` again")
    expect = {"word_bits": m.dma.data_width, "input.n": m.input.n_elems, "output.n": m.output.n_elems,
              "input.bits": m.input.packing.bits, "output.bits": m.output.packing.bits}
    for key, want in expect.items():
        got = meta
        for part in key.split("."):
            got = got.get(part) if isinstance(got, dict) else None
        if got is not None and got != want:
            raise OverlayInputError(f"{where}: field '{key}' = {got!r}, accel.json needs {want}; run `{make_it}` again")
    regs = {"ap_ctrl": m.ip.control.get("ap_ctrl"), "planes": m.ip.planes_offset,
            "n_samples": m.ip.control.get("n_samples")}
    if regs != RTL_REGISTERS:
        raise OverlayInputError(f"accel.json's registers {regs} differ from the RTL board wrapper's {RTL_REGISTERS} "
                                f"(hls/rtl/{RTL_IP_TOP}.v); the RTL kernel needs the HLS IP's register map")
    out = Path(cfg.out_dir) / RTL_DIR
    st.rtl_sources, st.rtl_roms = copy_rtl_design(design, rtl_sources() + [RTL_LIBRARY / f"{RTL_IP_TOP}.v"], out, make_it)
    if f"{RTL_IP_TOP}.v" not in st.rtl_sources:
        raise OverlayError(f"the RTL library has no {RTL_IP_TOP}.v (the board wrapper); reinstall flipq")
    st.files += [out / n for n in st.rtl_sources + st.rtl_roms]


def _identifier(value: str, what: str) -> str:
    """Cell, port and project names go into Tcl, block-design paths and file names unquoted."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(value)):
        raise OverlayInputError(f"{what} = {value!r}: expected a name of letters, digits and '_'")
    return str(value)


def tcl_values(cfg: OverlayConfig, st: BuildState) -> dict:
    b, m, clk = st.board, st.meta, st.clocks
    vlnv = m.ip.vlnv.split(":")
    if len(vlnv) != 4 or not all(vlnv):
        raise OverlayInputError(f"ip_vlnv = {m.ip.vlnv!r}: expected vendor:library:name:version")
    vendor, library, ipname, version = (tcl_word(p, "ip_vlnv") for p in vlnv)
    add = "\n".join(f"add_files {tcl_here_path(Path(SRC_DIR, u), 'HLS source')} -cflags {{-std=c++14}}"
                    for u in st.hls_units) or "error \"flipq: no C++ sources were found for synthesis\""
    ultra = b.family == "zynq_ultra"
    if cfg.board_repo is not None:
        repo = tcl_word(cfg.board_repo, "--board-repo")
        board_repo = ("# --board-repo: where this Vivado finds the board files\n"
                      f"set_param board.repoPaths [concat [get_param board.repoPaths] [list {repo}]]")
    else:
        board_repo = "# no --board-repo: the board files must be in Vivado's own board store"
    names = {k: _identifier(getattr(cfg, k), k) for k in ("top", "design", "stream_in", "stream_out",
                                                           "control", "dma_name", "ip_name")}
    return {
        "top": names["top"], "part": b.part, "board": b.name, "board_part": b.board_part,
        "fclk_mhz": mhz_text(m.fclk_mhz), "clock_period_ns": f"{1000.0 / m.fclk_mhz:.6g}",
        "fclk_divisors": f"{mhz_text(clk.pll_mhz)} MHz / ({clk.divisor0} x {clk.divisor1})",
        "project": f"{names['design']}_hls", "add_files": add,
        "ip_vendor": vendor, "ip_library": library, "ip_ipname": ipname, "ip_version": version,
        "stream_in": names["stream_in"], "stream_out": names["stream_out"], "control": names["control"],
        "planes_offset": hex(m.ip.planes_offset),
        "n_samples_offset": hex(m.ip.control["n_samples"]),
        "design": names["design"], "ip_repo": f"{names['design']}_hls", "board_repo": board_repo,
        "ps": "zynq_ultra_ps_e_0" if ultra else "processing_system7_0",
        "fclk_pin": "pl_clk0" if ultra else "FCLK_CLK0",
        "gp_master": "M_AXI_HPM0_LPD" if ultra else "M_AXI_GP0",
        "hp_port": b.hp_port, "dma": names["dma_name"], "ip": names["ip_name"],
        "ip_vlnv": tcl_word(m.ip.vlnv, "ip_vlnv"),
        "length_width": m.dma.length_width, "max_transfer_bytes": m.dma.max_transfer_bytes,
        "data_width": m.dma.data_width, "jobs": cfg.jobs,
    }


def rtl_tcl_values(cfg: OverlayConfig, st: BuildState, v: dict) -> dict:
    """``v`` (:func:`tcl_values`) with the RTL kernel's IP: the packaging script's file lists
    and names, the block design's IP repository and the cell's parameters."""
    m = st.meta
    words = {"word": m.dma.data_width,
             "in_words": m.input.packing.words_per_sample(m.input.n_elems),
             "out_words": m.output.packing.words_per_sample(m.output.n_elems)}
    files = {k: " \\\n".join("  " + tcl_here_path(Path(RTL_DIR, n), "RTL file") for n in names)
             + (" \\" if names else "")
             for k, names in (("rtl_sources", st.rtl_sources), ("rtl_roms", st.rtl_roms))}
    config = " ".join(f"CONFIG.{k.upper()} {{{val}}}" for k, val in words.items())
    return dict(v, **words, **files, rtl_dir=RTL_DIR, ip_top=RTL_IP_TOP, ip_project=f"{v['design']}_ip",
                ip_repo=f"{v['design']}_rtl_ip",
                ip_config=f"\nset_property -dict [list {config}] [get_bd_cells {v['ip']}]")


def step_write_tcl(cfg: OverlayConfig, st: BuildState) -> None:
    out = Path(cfg.out_dir)
    v = dict(tcl_values(cfg, st), ip_config="")
    first = "hls_synth.tcl"
    if cfg.kernel == "rtl":
        v, first = rtl_tcl_values(cfg, st, v), RTL_SCRIPTS[0]
    ps = render("ps_zynq_ultra.tcl" if st.board.family == "zynq_ultra" else "ps_zynq.tcl", v)
    scripts = {first: v,
               "block_design.tcl": dict(v, project=v["design"], ps_tcl=ps.rstrip()),
               "bitstream.tcl": dict(v, project=v["design"])}
    for name, values in scripts.items():
        st.files.append(write_atomic(out / name, render(name, values)))


def rtl_commands(found: dict) -> list[list[str]]:
    """The RTL kernel's three Vivado runs: package the IP, block design, bitstream."""
    viv = found.get("vivado") or "vivado"
    return [[viv, "-mode", "batch", "-source", script] for script in RTL_SCRIPTS]


def _run_rtl_tools(out_dir: Path, found: dict) -> list[str]:
    """:func:`flipq.overlays.tools.run_tools` for the RTL kernel's commands (same logs)."""
    out = Path(out_dir).resolve()
    ran = []
    for i, cmd in enumerate(rtl_commands(found)):
        log = out / f"{Path(cmd[0]).name}_{i}.log"
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, cwd=out, stdout=fh, stderr=subprocess.STDOUT)
        ran.append(" ".join(map(str, cmd)))
        if proc.returncode != 0:
            raise OverlayError(f"{' '.join(map(str, cmd))} failed with exit code {proc.returncode}; see {log}")
    return ran


def step_run_tools(cfg: OverlayConfig, st: BuildState) -> None:
    problems = tools.tool_problems(st.tools)
    howto = tools.run_instructions(cfg.out_dir, st.tools)
    needs = "Vitis HLS and Vivado"
    if cfg.kernel == "rtl":  # no HLS synthesis: Vivado alone
        problems = [p for p in problems if p.startswith("vivado:")]
        howto = howto[:1] + ["  " + " ".join([Path(c[0]).name] + c[1:]) for c in rtl_commands(st.tools)]
        needs = "Vivado"
    st.missing_tools = [p.split(":")[0] for p in problems]
    if problems:
        msg = (f"cannot run the tools here: {'; '.join(problems)}. The overlay folder {cfg.out_dir} holds "
               f"everything they need; on a machine with {needs} (2020.2 or newer, with the "
               f"board files for {st.board.board_part}), " + "\n".join(howto))
        if cfg.dry_run:
            st.ran.append("dry run: " + msg)
            return
        raise ToolNotFoundError(msg)
    if cfg.dry_run:
        st.ran.append("dry run: tools found, not run; to build, " + "\n".join(howto))
        return
    st.ran += _run_rtl_tools(cfg.out_dir, st.tools) if cfg.kernel == "rtl" else tools.run_tools(cfg.out_dir, st.tools)
    out = Path(cfg.out_dir)
    for name in ("flipq.bit", "flipq.hwh"):
        if not (out / name).is_file():
            raise OverlayError(f"the tools finished but {out / name} is missing")
        st.files.append(out / name)




def step_simulation_files(cfg: OverlayConfig, st: BuildState) -> None:
    """With ``simulate``: what pynq's simulated device needs to load this folder on x86 --
    a .hwh generated in Vivado's schema, a marked stand-in bitstream, and the board wrapper
    compiled with g++ as the programmable logic (``sim/libflipq_top.so``).

    Only where no Vivado output exists: a real flipq.bit/.hwh is never overwritten.
    """
    if not cfg.simulate:
        return
    from flipq.overlays.hwh import generate_hwh
    from flipq.overlays.wrapper import compile_wrapper

    out = Path(cfg.out_dir)
    bit, hwh = out / "flipq.bit", out / "flipq.hwh"
    if bit.is_file() and not is_simulated_bitstream(bit):
        raise OverlayInputError(f"{bit} is a real bitstream; --simulate would replace it and its .hwh")
    if st.wrapper is None:
        raise OverlayInputError("--simulate compiles the generated flipq_top wrapper, but the sources "
                                f"bring their own {cfg.top}.cpp")
    (out / "sim").mkdir(exist_ok=True)
    lib = compile_wrapper(st.wrapper.parent, st.project, out / "sim" / "libflipq_top.so")
    write_atomic(hwh, generate_hwh(st.meta, st.board))
    write_atomic(bit, SIMULATED_BITSTREAM + b"made by `flipq overlay build --simulate`; not for a board\n")
    st.files += [hwh, bit, lib]
    st.ran.append(f"simulation: {hwh.name} generated, {bit.name} is a stand-in, PL = {lib}")


STEPS: tuple[Callable[[OverlayConfig, BuildState], None], ...] = (
    step_load, step_check_resources, step_write_metadata, step_write_sources, step_write_tcl,
    step_run_tools, step_simulation_files,
)


def run_flow(cfg: OverlayConfig, found_tools: dict | None = None) -> BuildResult:
    st = BuildState(tools=tools.find_tools() if found_tools is None else dict(found_tools))
    for step in STEPS:
        step(cfg, st)
    out = Path(cfg.out_dir)
    built = (out / "flipq.bit").is_file() and (out / "flipq.hwh").is_file() and not cfg.dry_run \
        and not st.missing_tools
    return BuildResult(out, tuple(st.files), st.usage, tuple(st.missing_tools), tuple(st.ran), built,
                       cfg.dry_run, tuple(st.notes), st.meta.fclk_mhz)


def stage_overlay(cfg) -> BuildResult:
    """The build's overlay stage: ``<out>/overlay`` for the build config's board from
    ``<out>/hls``. With Vitis HLS and Vivado on PATH it runs them; without, it prepares the
    portable folder (a dry run) and says where to run them, so a build runs to the end anywhere."""
    hls = Path(cfg.out) / "hls"
    if not (hls / HLS_REPORT).is_file():
        raise FileNotFoundError(f"{hls / HLS_REPORT} is missing: run the 'hls' stage first")
    ready = not tools.tool_problems(tools.find_tools())
    return build_overlay(hls, cfg.board, Path(cfg.out) / "overlay", dry_run=not ready)


def build_overlay(hls_dir: str | Path, board: str | Board | None, out_dir: str | Path,
                  dry_run: bool = False, **options) -> BuildResult:
    """Build (or, with ``dry_run``, only prepare) the overlay for the model in ``hls_dir``.

    ``board`` None builds for the board the hls stage checked against (``hls_report.json``);
    another board than that one is refused. Without Vitis HLS/Vivado on PATH this raises
    :class:`ToolNotFoundError` naming what is missing (after writing the folder); with
    ``dry_run`` it returns a result whose ``missing_tools`` says the same. ``options`` are
    :class:`OverlayConfig` fields (``max_batch``, ``fclk_mhz``, ``jobs``, ``board_repo``,
    ``kernel``, ...); ``kernel="rtl"`` names its IP :data:`RTL_IP_VLNV` unless ``ip_vlnv`` is given.
    """
    name = board.name if isinstance(board, Board) else board
    if options.get("kernel") == "rtl":
        options.setdefault("ip_vlnv", RTL_IP_VLNV)
    cfg = OverlayConfig(hls_dir=Path(hls_dir), out_dir=Path(out_dir), board=name, dry_run=dry_run,
                        **options)
    return run_flow(cfg)


__all__ = ["BuildResult", "BuildState", "KERNELS", "OverlayConfig", "RTL_IP_VLNV", "RTL_SCRIPTS", "STEPS",
           "SHELL_RESOURCES", "build_overlay", "check_count", "rtl_commands", "rtl_tcl_values", "run_flow",
           "stage_overlay", "tcl_values", "write_rtl_design"]
