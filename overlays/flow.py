"""The overlay flow: an hls build folder -> Tcl for HLS, block design and bitstream,
``accel.json``, and (where Vivado is installed) ``flipq.bit`` + ``flipq.hwh``.

>>> result = build_overlay("build/demo/hls", "pynq-z2", "build/demo/overlay", dry_run=True)  # doctest: +SKIP
>>> result.missing_tools                                                                  # doctest: +SKIP
['vitis_hls or vivado_hls', 'vivado']

Steps are plain functions of ``(OverlayConfig, BuildState)`` listed once in ``STEPS``; each
writes its artifact into the output folder, so the folder alone says how far a build got.
Templates live in ``templates/`` with ``@name@`` placeholders (Tcl's own ``$`` and braces
stay untouched); an unknown or unfilled placeholder is an error.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flipq.boards import Board, load_board
from flipq.host.accelmeta import (DEFAULT_DMA_NAME, DEFAULT_IP_NAME, DEFAULT_IP_VLNV, AccelMeta,
                                  AccelMetaError)
from flipq.host.intmodel import IntModel
from flipq.overlays.metadata import accel_meta_for

TEMPLATES = Path(__file__).resolve().parent / "templates"
HLS_REPORT = "hls_report.json"
# What the block design adds around the accelerator: AXI DMA (simple mode, 32-bit, burst 16),
# two AXI interconnects/protocol converters and a reset block. Rough Vivado utilization of
# such a shell on a Zynq-7020; the HLS estimate it is added to is rough as well.
SHELL_RESOURCES = {"lut": 3500, "ff": 4500, "bram36": 2, "dsp": 0, "uram": 0}
OUTPUTS = ("hls_synth.tcl", "block_design.tcl", "bitstream.tcl", "accel.json")


class OverlayError(RuntimeError):
    """The overlay cannot be built as asked; the message says why, with the numbers."""


class ResourceError(OverlayError):
    """The design does not fit the board."""


class ToolNotFoundError(OverlayError):
    """Vivado / Vitis HLS are not on PATH."""


@dataclass(frozen=True)
class OverlayConfig:
    hls_dir: Path
    out_dir: Path
    board: str = "pynq-z2"
    dry_run: bool = False
    max_batch: int = 1024
    fclk_mhz: float | None = None  # None: the board's fclk0
    top: str = "flipq_top"
    ip_name: str = DEFAULT_IP_NAME
    ip_vlnv: str = DEFAULT_IP_VLNV
    dma_name: str = DEFAULT_DMA_NAME
    stream_in: str = "in_r"
    stream_out: str = "out_r"
    control: str = "s_axi_control"
    design: str = "flipq"
    jobs: int = 2
    simulate: bool = False  # also make the folder loadable on pynq's simulated device (x86)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["hls_dir"], d["out_dir"] = str(self.hls_dir), str(self.out_dir)
        return d


@dataclass
class BuildState:
    board: Board | None = None
    model: IntModel | None = None
    report: dict = field(default_factory=dict)
    meta: AccelMeta | None = None
    usage: dict = field(default_factory=dict)  # resource -> (needed, available)
    files: list[Path] = field(default_factory=list)
    missing_tools: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    tools: dict = field(default_factory=dict)
    wrapper: Path | None = None  # generated flipq_top.cpp; None when the sources define the top


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    files: tuple[Path, ...]
    usage: dict
    missing_tools: tuple[str, ...]
    ran: tuple[str, ...]
    built: bool  # flipq.bit and flipq.hwh were produced
    dry_run: bool = False

    @property
    def returncode(self) -> int:
        """0 when built, or for a dry run (which only prepares); 1 when tools were missing."""
        return 0 if self.built or self.dry_run or not self.missing_tools else 1


# -- templates -----------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"@([a-z_][a-z0-9_]*)@")


def render(template: str, values: dict) -> str:
    """Fill ``@name@`` placeholders of ``templates/<template>``; every one must be given."""
    text = (TEMPLATES / template).read_text()
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise OverlayError(f"template {template}: no value for placeholder(s) {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


# -- steps ---------------------------------------------------------------------------------
def step_load(cfg: OverlayConfig, st: BuildState) -> None:
    st.board = load_board(cfg.board)
    hls = Path(cfg.hls_dir)
    if not hls.is_dir():
        raise OverlayError(f"hls build folder not found: {hls}")
    st.model = IntModel.load(hls)
    path = hls / HLS_REPORT
    if not path.is_file():
        raise OverlayError(f"{path} not found: the resource estimate comes from the hls stage")
    try:
        st.report = json.loads(path.read_text())
    except ValueError as e:
        raise OverlayError(f"{path}: not valid JSON ({e})") from e
    totals = st.report.get("totals") if isinstance(st.report, dict) else None
    if not isinstance(totals, dict):
        raise OverlayError(f"{path}: missing field 'totals' ({{\"lut\", \"ff\", \"bram36\", \"dsp\"}})")
    for key in ("lut", "ff", "bram36", "dsp"):
        v = totals.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise OverlayError(f"{path}: field 'totals.{key}' = {v!r} is not a count >= 0")
    try:
        st.meta = accel_meta_for(
            st.model, st.board, max_batch=cfg.max_batch, dma_name=cfg.dma_name,
            ip_name=cfg.ip_name, ip_vlnv=cfg.ip_vlnv, fclk_mhz=cfg.fclk_mhz)
    except AccelMetaError as e:
        raise OverlayError(f"{hls}: {e}") from e


def step_check_resources(cfg: OverlayConfig, st: BuildState) -> None:
    totals = st.report["totals"]
    need = {k: float(totals.get(k, 0) or 0) + SHELL_RESOURCES.get(k, 0)
            for k in ("lut", "ff", "bram36", "dsp", "uram")}
    st.usage = {k: (need[k], st.board.resources.get(k, 0)) for k in need}
    over = st.board.fits(need)
    if over:
        raise ResourceError(
            f"the design does not fit {st.board.name} ({st.board.part}): " + "; ".join(over)
            + f" (HLS estimate from {Path(cfg.hls_dir) / HLS_REPORT} plus the DMA/interconnect "
            f"shell {SHELL_RESOURCES}); use fewer bits/planes, smaller layers or a larger board")


def step_write_metadata(cfg: OverlayConfig, st: BuildState) -> None:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    st.files.append(st.meta.save(out / "accel.json"))
    # The integer model travels with the overlay: the board can verify against the emulator.
    for name in ("intmodel.json", "intmodel.npz"):
        shutil.copyfile(Path(cfg.hls_dir) / name, out / name)
        st.files.append(out / name)
    (out / "overlay_config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    st.files.append(out / "overlay_config.json")


def _model_sources(cfg: OverlayConfig, st: BuildState) -> list[Path]:
    hls = Path(cfg.hls_dir).resolve()
    listed = st.report.get("sources")
    if listed:
        return [hls / s for s in listed]
    return sorted((hls / "firmware").glob("*.cpp"))


def _hls_sources(cfg: OverlayConfig, st: BuildState) -> list[Path]:
    """What Vitis HLS compiles: the generated wrapper (when there is one), then the model."""
    return ([st.wrapper.resolve()] if st.wrapper else []) + _model_sources(cfg, st)


def _hls4ml_project(src: Path) -> Path | None:
    """The hls4ml project folder of a top source ``<prj>/firmware/<project>.cpp``, if it is one."""
    if src.parent.name == "firmware" and src.with_suffix(".h").is_file() \
            and (src.parent / "defines.h").is_file():
        return src.parent.parent
    return None


def step_write_wrapper(cfg: OverlayConfig, st: BuildState) -> None:
    """Generate ``flipq_top`` (DMA streams <-> the hls4ml top) unless the sources bring their own."""
    from flipq.overlays.wrapper import HEADER, TOP, generate_wrapper

    sources = _model_sources(cfg, st)
    if any(src.name == f"{cfg.top}.cpp" for src in sources):
        return  # a hand-written (or previously generated) top is used as it is
    if cfg.top != TOP:
        raise OverlayError(f"top = {cfg.top!r}: the generated wrapper defines {TOP}; name it so, or "
                           f"list your own {cfg.top}.cpp in {HLS_REPORT}'s 'sources'")
    projects = sorted({p for p in map(_hls4ml_project, sources) if p is not None})
    if len(projects) != 1:
        where = Path(cfg.hls_dir) / HLS_REPORT
        raise OverlayError(
            f"{where}: field 'sources' = {[str(s) for s in sources]} names "
            f"{len(projects)} hls4ml projects (firmware/<project>.cpp with its .h and defines.h); "
            f"the {cfg.top} wrapper needs exactly one, or a {cfg.top}.cpp among the sources")
    st.wrapper = generate_wrapper(st.meta, projects[0], Path(cfg.out_dir))
    st.files += [st.wrapper.parent / HEADER, st.wrapper]


def tcl_values(cfg: OverlayConfig, st: BuildState, hls_tool: str = "vitis_hls") -> dict:
    b, m = st.board, st.meta
    out = Path(cfg.out_dir).resolve()
    hls = Path(cfg.hls_dir).resolve()
    vendor, library, ipname, version = m.ip.vlnv.split(":")
    sources = _hls_sources(cfg, st)
    # the model's firmware folders (the wrapper includes <project>.h) and the wrapper's own header;
    # not hls4ml's ap_types copy: synthesis needs the tool's ap_int.h and ap_axi_sdata.h
    dirs = [src.parent for src in sources] + ([hls / "firmware"] if not sources else [])
    incs = " ".join(f"-I{p}" for p in dict.fromkeys(dirs) if p.is_dir())
    add = "\n".join(f"add_files {{{src}}} -cflags {{-std=c++14 {incs}}}".rstrip()
                    for src in sources) or f"# no C++ sources found under {hls}/firmware"
    ultra = b.family == "zynq_ultra"
    values = {
        "top": cfg.top, "part": b.part, "board": b.name, "board_part": b.board_part,
        "fclk_mhz": f"{m.fclk_mhz:g}", "clock_period_ns": f"{1000.0 / m.fclk_mhz:g}",
        "hls_tool": hls_tool, "project": f"{cfg.design}_hls",
        "add_files": add,
        "solution_flags": " -flow_target vivado" if hls_tool == "vitis_hls" else "",
        "ip_vendor": vendor, "ip_library": library, "ip_ipname": ipname, "ip_version": version,
        "stream_in": cfg.stream_in, "stream_out": cfg.stream_out, "control": cfg.control,
        "planes_offset": hex(m.ip.planes_offset),
        "n_samples_offset": hex(m.ip.control["n_samples"]),
        "design": cfg.design, "vivado_dir": str(out / "vivado"),
        "ip_repo": str(out / f"{cfg.design}_hls"),
        "ps": "zynq_ultra_ps_e_0" if ultra else "processing_system7_0",
        "fclk_pin": "pl_clk0" if ultra else "FCLK_CLK0",
        "gp_master": "M_AXI_HPM0_LPD" if ultra else "M_AXI_GP0",
        "hp_port": b.hp_port, "dma": m.dma.name, "ip": m.ip.name, "ip_vlnv": m.ip.vlnv,
        "length_width": m.dma.length_width, "max_transfer_bytes": m.dma.max_transfer_bytes,
        "data_width": m.dma.data_width, "out_dir": str(out), "jobs": cfg.jobs,
    }
    return values


def step_write_tcl(cfg: OverlayConfig, st: BuildState) -> None:
    out = Path(cfg.out_dir)
    hls_tool = st.tools.get("hls") or "vitis_hls"
    v = tcl_values(cfg, st, Path(hls_tool).name)
    hls_values = dict(v, project=f"{cfg.design}_hls")
    (out / "hls_synth.tcl").write_text(render("hls_synth.tcl", hls_values))
    ps = render("ps_zynq_ultra.tcl" if st.board.family == "zynq_ultra" else "ps_zynq.tcl", v)
    bd_values = dict(v, project=cfg.design, ps_tcl=ps.rstrip())
    (out / "block_design.tcl").write_text(render("block_design.tcl", bd_values))
    (out / "bitstream.tcl").write_text(render("bitstream.tcl", dict(v, project=cfg.design)))
    st.files += [out / "hls_synth.tcl", out / "block_design.tcl", out / "bitstream.tcl"]


def find_tools() -> dict:
    """Vitis HLS (``vitis_hls``, or the older ``vivado_hls``) and ``vivado`` on PATH."""
    return {"hls": shutil.which("vitis_hls") or shutil.which("vivado_hls"),
            "vivado": shutil.which("vivado")}


def step_run_tools(cfg: OverlayConfig, st: BuildState) -> None:
    st.missing_tools = [name for key, name in (("hls", "vitis_hls or vivado_hls"), ("vivado", "vivado"))
                        if not st.tools.get(key)]
    if st.missing_tools:
        msg = (f"not on PATH: {', '.join(st.missing_tools)}. The Tcl is written to {cfg.out_dir}; "
               "on a machine with Vivado/Vitis HLS (e.g. 2022.1, with the board files for "
               f"{st.board.board_part}), run there:\n  "
               + "\n  ".join(run_commands(cfg, st)))
        if cfg.dry_run:
            st.ran.append("dry run: " + msg)
            return
        raise ToolNotFoundError(msg)
    if cfg.dry_run:
        st.ran.append("dry run: tools found, not run:\n  " + "\n  ".join(run_commands(cfg, st)))
        return
    out = Path(cfg.out_dir).resolve()
    for i, cmd in enumerate(_commands(st)):
        log = out / f"{Path(cmd[0]).name}_{i}.log"
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, cwd=out, stdout=fh, stderr=subprocess.STDOUT)
        st.ran.append(" ".join(map(str, cmd)))
        if proc.returncode != 0:
            raise OverlayError(f"{' '.join(map(str, cmd))} failed with exit code {proc.returncode}; "
                               f"see {log}")
    for name in ("flipq.bit", "flipq.hwh"):
        if not (out / name).is_file():
            raise OverlayError(f"the tools finished but {out / name} is missing")
        st.files.append(out / name)


def _commands(st: BuildState) -> list[list[str]]:
    hls = st.tools.get("hls") or "vitis_hls"
    viv = st.tools.get("vivado") or "vivado"
    return [[hls, "-f", "hls_synth.tcl"],
            [viv, "-mode", "batch", "-source", "block_design.tcl"],
            [viv, "-mode", "batch", "-source", "bitstream.tcl"]]


def run_commands(cfg: OverlayConfig, st: BuildState) -> list[str]:
    return [f"cd {Path(cfg.out_dir).resolve()}"] + [
        " ".join([Path(cmd[0]).name] + cmd[1:]) for cmd in _commands(st)]


SIMULATED_BITSTREAM = b"FLIPQ-SIMULATED-BITSTREAM\n"


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
    if bit.is_file() and bit.read_bytes()[:len(SIMULATED_BITSTREAM)] != SIMULATED_BITSTREAM:
        raise OverlayError(f"{bit} is a real bitstream; --simulate would replace it and its .hwh")
    if st.wrapper is None:
        raise OverlayError("--simulate compiles the generated flipq_top wrapper, but the sources "
                           f"bring their own {cfg.top}.cpp")
    hwh.write_text(generate_hwh(st.meta, st.board))
    bit.write_bytes(SIMULATED_BITSTREAM + b"made by `flipq overlay build --simulate`; not for a board\n")
    projects = sorted({p for p in map(_hls4ml_project, _model_sources(cfg, st)) if p is not None})
    (out / "sim").mkdir(exist_ok=True)
    lib = compile_wrapper(out, projects[0], out / "sim" / "libflipq_top.so")
    st.files += [hwh, bit, lib]
    st.ran.append(f"simulation: {hwh.name} generated, {bit.name} is a stand-in, PL = {lib}")


STEPS: tuple[Callable[[OverlayConfig, BuildState], None], ...] = (
    step_load, step_check_resources, step_write_metadata, step_write_wrapper, step_write_tcl,
    step_run_tools, step_simulation_files,
)


def run_flow(cfg: OverlayConfig, tools: dict | None = None) -> BuildResult:
    st = BuildState(tools=find_tools() if tools is None else dict(tools))
    for step in STEPS:
        step(cfg, st)
    out = Path(cfg.out_dir)
    built = (out / "flipq.bit").is_file() and (out / "flipq.hwh").is_file() and not cfg.dry_run \
        and not st.missing_tools
    return BuildResult(out, tuple(st.files), st.usage, tuple(st.missing_tools), tuple(st.ran), built,
                       cfg.dry_run)


def build_overlay(hls_dir: str | Path, board: str | Board, out_dir: str | Path,
                  dry_run: bool = False, **options) -> BuildResult:
    """Build (or, with ``dry_run``, only prepare) the overlay for the model in ``hls_dir``.

    Without Vivado/Vitis HLS on PATH this raises :class:`ToolNotFoundError` naming what is
    missing (after writing the Tcl and accel.json); with ``dry_run`` it returns a result whose
    ``missing_tools`` says the same. ``options`` are :class:`OverlayConfig` fields.
    """
    name = board.name if isinstance(board, Board) else str(board)
    cfg = OverlayConfig(hls_dir=Path(hls_dir), out_dir=Path(out_dir), board=name, dry_run=dry_run,
                        **options)
    return run_flow(cfg)


# -- checking a built overlay -------------------------------------------------------------
class OverlayCheckError(OverlayError):
    """The .hwh and accel.json disagree; ``problems`` lists each mismatch by field."""

    def __init__(self, problems: list[str], where: Path):
        super().__init__(f"{where}: the .hwh does not match accel.json:\n  - " + "\n  - ".join(problems))
        self.problems = problems


def check_overlay(overlay_dir: str | Path, hwh: str | Path | None = None) -> dict:
    """Check ``flipq.hwh`` against ``accel.json`` in ``overlay_dir`` with pynqmetadata: IP
    names and types, DMA mode, widths and length width, accelerator registers, fclk0, part.
    Returns a summary; raises :class:`OverlayCheckError` listing every mismatch."""
    from xml.etree import ElementTree as ET

    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import RuntimeMetadataParser

    d = Path(overlay_dir)
    meta = AccelMeta.load(d / "accel.json")
    hwh = Path(hwh) if hwh is not None else d / "flipq.hwh"
    if not hwh.is_file():
        raise FileNotFoundError(f"hardware handoff not found: {hwh}")
    parser = RuntimeMetadataParser(Metadata(input=str(hwh)))
    ips = parser.ip_dict
    problems: list[str] = []

    dma = ips.get(meta.dma.name)
    if dma is None:
        problems.append(f"dma.name: no IP '{meta.dma.name}' in the .hwh (IP: {', '.join(sorted(ips))})")
    else:
        p = dma.get("parameters", {})
        if not str(dma.get("type", "")).startswith("xilinx.com:ip:axi_dma:"):
            problems.append(f"dma.name: '{meta.dma.name}' is a {dma.get('type')}, not an AXI DMA")
        expect = {"c_include_sg": 0, "c_include_mm2s": 1, "c_include_s2mm": 1, "c_micro_dma": 0,
                  "c_m_axis_mm2s_tdata_width": meta.dma.data_width,
                  "c_s_axis_s2mm_tdata_width": meta.dma.data_width}
        for key, want in expect.items():
            got = p.get(key)
            if got is None or int(got) != want:
                problems.append(f"dma.{key}: the .hwh has {got}, accel.json needs {want}")
        lw = p.get("c_sg_length_width")
        if lw is None or int(lw) < meta.dma.length_width:
            problems.append(f"dma.length_width: the .hwh's c_sg_length_width is {lw}, accel.json "
                            f"needs >= {meta.dma.length_width} ({meta.dma.max_transfer_bytes} bytes)")
    ip = ips.get(meta.ip.name)
    if ip is None:
        problems.append(f"ip.name: no IP '{meta.ip.name}' in the .hwh (IP: {', '.join(sorted(ips))})")
    else:
        if ip.get("type") != meta.ip.vlnv:
            problems.append(f"ip.vlnv: the .hwh has {ip.get('type')}, accel.json says {meta.ip.vlnv}")
        regs = {k: v["address_offset"] for k, v in ip.get("registers", {}).items()}
        if regs:
            wanted = {"planes": meta.ip.planes_offset, "CTRL": meta.ip.control["ap_ctrl"]}
            wanted.update({k: v for k, v in meta.ip.control.items() if k != "ap_ctrl"})
            for name, off in wanted.items():
                field_name = "ip.planes_offset" if name == "planes" else \
                    f"ip.control.{'ap_ctrl' if name == 'CTRL' else name}"
                if regs.get(name) != off:
                    got = "absent" if name not in regs else hex(regs[name])
                    problems.append(f"{field_name}: register '{name}' is {got} in the .hwh, "
                                    f"accel.json says {hex(off)}")
    fclk = _fclk0_mhz(parser)
    if fclk is None:
        problems.append("fclk_mhz: fclk0 is not enabled in the .hwh")
    elif abs(fclk - meta.fclk_mhz) > 0.01 * meta.fclk_mhz:
        problems.append(f"fclk_mhz: the .hwh clocks fclk0 at {fclk:g} MHz, accel.json says {meta.fclk_mhz:g}")
    info = ET.parse(hwh).getroot().find("SYSTEMINFO")
    try:
        board = load_board(meta.board)
    except ValueError as e:
        problems.append(f"board: {e}")
        board = None
    if board is not None and info is not None and board.hwh_device:
        got = (info.get("DEVICE"), info.get("PACKAGE"), info.get("SPEEDGRADE"))
        want = (board.hwh_device, board.hwh_package, board.hwh_speedgrade)
        if got != want:
            problems.append(f"board: the .hwh targets {''.join(g or '' for g in got)}, "
                            f"{board.name} is {board.part}")
    if problems:
        raise OverlayCheckError(problems, hwh)
    return {"hwh": str(hwh), "dma": meta.dma.name, "ip": meta.ip.name, "fclk_mhz": fclk,
            "length_width": int(dma["parameters"]["c_sg_length_width"]), "board": meta.board}


def _fclk0_mhz(parser) -> float | None:
    clk = parser.clock_dict.get(0, {})
    if not clk.get("enable"):
        return None
    if clk.get("frequency"):
        return float(clk["frequency"])
    ps = parser.ip_dict.get(parser.ps_name, {}).get("parameters", {})
    for key in ("PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ", "PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ"):
        if ps.get(key):
            return float(ps[key])
    pll = ps.get("PCW_IO_IO_PLL_FREQMHZ")
    if pll and clk.get("divisor0") and clk.get("divisor1"):
        return float(pll) / (int(clk["divisor0"]) * int(clk["divisor1"]))
    return None


__all__ = ["OverlayConfig", "BuildResult", "BuildState", "STEPS", "build_overlay", "check_overlay",
           "find_tools", "render", "run_flow", "OverlayError", "ResourceError", "ToolNotFoundError",
           "OverlayCheckError", "SHELL_RESOURCES"]
