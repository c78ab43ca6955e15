"""``flipq overlay check``: a Vivado ``.hwh`` against the overlay's ``accel.json``, with pynqmetadata.

>>> check_overlay("/home/xilinx/flipq_overlay")      # doctest: +SKIP
{'hwh': '.../flipq.hwh', 'dma': 'axi_dma_0', 'ip': 'flipq_accel_0', 'fclk_mhz': 100.0, ...}

This runs on the PYNQ board too (Python 3.10 with numpy, pynq and pynqmetadata): it imports
accel.json's reader, the standard library and pynqmetadata, nothing of the build. The board's
part is compared where the board files can be read (Python 3.11's tomllib); elsewhere the summary
says it was not checked.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from flipq.host.accelmeta import AccelMeta
from flipq.overlays.errors import OverlayCheckError, OverlayInputError

HWH = "flipq.hwh"


class HwhError(OverlayInputError):
    """A .hwh that is not a readable hardware handoff (truncated, not XML, not Vivado's schema)."""


def read_hwh(path: str | Path):
    """Parse ``path`` with pynqmetadata: ``(RuntimeMetadataParser, SYSTEMINFO element or None)``.
    A missing, truncated or foreign file raises a one-line error naming it."""
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import RuntimeMetadataParser

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hardware handoff not found: {path}")
    redo = "copy it again from the Vivado build (bitstream.tcl writes flipq.hwh beside flipq.bit)"
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise HwhError(f"{path}: not a readable .hwh ({e}); {redo}") from None
    if root.tag != "EDKSYSTEM":
        raise HwhError(f"{path}: not a Vivado hardware handoff (top element <{root.tag}>, expected "
                       f"<EDKSYSTEM>); {redo}")
    try:
        parser = RuntimeMetadataParser(Metadata(input=str(path)))
    except Exception as e:  # pynqmetadata has no error type of its own: any failure is the file's
        raise HwhError(f"{path}: pynqmetadata cannot read it ({type(e).__name__}: {e}); {redo}") from None
    return parser, root.find("SYSTEMINFO")


def _board_part(name: str):
    """(board, None) or (None, why it was not read): reading board files needs Python 3.11."""
    try:
        from flipq.boards import load_board

        return load_board(name), None
    except ModuleNotFoundError as e:  # tomllib: the board's Python 3.10
        return None, f"not checked ({e.name} is missing: board files need Python 3.11)"
    except ValueError as e:
        return None, str(e)


def _dma_problems(meta: AccelMeta, dma: dict) -> list[str]:
    problems = []
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
    return problems


def _ip_problems(meta: AccelMeta, ip: dict) -> list[str]:
    problems = []
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
    return problems


def check_overlay(overlay_dir: str | Path, hwh: str | Path | None = None) -> dict:
    """Check ``flipq.hwh`` against ``accel.json`` in ``overlay_dir``: IP names and types, DMA mode,
    widths and length width, accelerator registers, fclk0, part. Returns a summary; raises
    :class:`OverlayCheckError` listing every mismatch."""
    d = Path(overlay_dir)
    meta = AccelMeta.load(d / "accel.json")
    hwh = Path(hwh) if hwh is not None else d / HWH
    parser, info = read_hwh(hwh)
    ips = parser.ip_dict
    problems: list[str] = []
    names = ", ".join(sorted(ips))
    dma = ips.get(meta.dma.name)
    if dma is None:
        problems.append(f"dma.name: no IP '{meta.dma.name}' in the .hwh (IP: {names})")
    else:
        problems += _dma_problems(meta, dma)
    ip = ips.get(meta.ip.name)
    if ip is None:
        problems.append(f"ip.name: no IP '{meta.ip.name}' in the .hwh (IP: {names})")
    else:
        problems += _ip_problems(meta, ip)
    fclk = _fclk0_mhz(parser)
    if fclk is None:
        problems.append("fclk_mhz: fclk0 is not enabled in the .hwh")
    elif abs(fclk - meta.fclk_mhz) > 0.01 * meta.fclk_mhz:
        problems.append(f"fclk_mhz: the .hwh clocks fclk0 at {fclk:g} MHz, accel.json says {meta.fclk_mhz:g}")
    board, board_note = _board_part(meta.board)
    if board is None and not board_note.startswith("not checked"):
        problems.append(f"board: {board_note}")
    if board is not None and info is not None and board.hwh_device:
        got = (info.get("DEVICE"), info.get("PACKAGE"), info.get("SPEEDGRADE"))
        want = (board.hwh_device, board.hwh_package, board.hwh_speedgrade)
        if got != want:
            problems.append(f"board: the .hwh targets {''.join(g or '' for g in got)}, "
                            f"{board.name} is {board.part}")
    if problems:
        raise OverlayCheckError(problems, hwh)
    summary = {"hwh": str(hwh), "dma": meta.dma.name, "ip": meta.ip.name, "fclk_mhz": fclk,
               "length_width": int(dma["parameters"]["c_sg_length_width"]), "board": meta.board}
    if board_note:
        summary["part"] = board_note
    return summary


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


__all__ = ["HWH", "HwhError", "check_overlay", "read_hwh"]
