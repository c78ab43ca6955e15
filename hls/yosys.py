"""Yosys for the RTL twin: map flipq's Verilog onto xc7z020 cells and count them.

The figures are *Yosys (pre-place)*: Debian's Yosys 0.23 ``synth_xilinx -family xc7`` maps the
design onto 7-series primitives (LUT1..LUT6, FDRE.., CARRY4, MUXF7/8, LUTRAM/SRL, RAMB18E1/36E1,
DSP48E1) with no placement or routing, so the depth in LUT levels is known but wire delay is only
estimated (:func:`timing_proxy`).

>>> r = synthesize([Path("hls/rtl/flipq_fifo.v")], "flipq_fifo", Path("build/yosys"),
...                params={"W": 32, "DEPTH": 16})                             # doctest: +SKIP
>>> r["lut"], r["ff"], r["bram36"], r["lut_levels"], r["timing"]["meets"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

LABEL_FLOW = "synth_xilinx -family xc7 (pre-place)"


class YosysError(RuntimeError):
    """Yosys is missing or failed; the message names the design, the log and carries its tail."""


def yosys_command() -> list[str]:
    """The command that runs Yosys: ``$FLIPQ_YOSYS`` or ``yosys`` on PATH."""
    env = os.environ.get("FLIPQ_YOSYS")
    if env:
        found = shutil.which(env)
        if not found:
            raise YosysError(f"Yosys not found: $FLIPQ_YOSYS={env} is not an executable "
                             "(install Yosys with apt-get install yosys, or fix the variable)")
        return [found]
    found = shutil.which("yosys")
    if found:
        return [found]
    raise YosysError("Yosys not found: install it (apt-get install yosys) or set $FLIPQ_YOSYS to its path")


def available() -> bool:
    try:
        yosys_command()
    except YosysError:
        return False
    return True


def yosys_version() -> str:
    """``"0.23"`` for ``Yosys 0.23 (git sha1 ...)``; the whole banner when it does not parse."""
    res = subprocess.run([*yosys_command(), "-V"], capture_output=True, text=True, timeout=60)
    banner = (res.stdout or res.stderr).strip()
    m = re.search(r"Yosys\s+(\S+)", banner)
    return m.group(1) if m else banner


# ---------------------------------------------------------------------------------------------
# Cell classes. LUTRAM and SRL cells are counted as the LUT6 sites they occupy in a SLICEM
# (UG474, "Distributed RAM" / "Shift registers"): a RAM32M/RAM64M is one SLICEM's four LUTs, a
# dual-port single-bit RAM two (write+read copies), a 128-deep one twice that, a 256-deep
# single-port one four LUTs joined by the F7/F8 muxes; an SRL16E/SRLC32E is one LUT.
LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM32X1S_1": 1, "RAM64X1S": 1, "RAM64X1S_1": 1,
    "RAM32X1D": 2, "RAM32X1D_1": 2, "RAM64X1D": 2, "RAM64X1D_1": 2,
    "RAM128X1S": 2, "RAM128X1S_1": 2, "RAM128X1D": 4, "RAM256X1S": 4,
    "RAM32M": 4, "RAM64M": 4,
    "SRL16": 1, "SRL16E": 1, "SRL16_1": 1, "SRL16E_1": 1, "SRLC16E": 1, "SRLC32E": 1,
}
LUT_TYPES = ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6")
# Yosys leaves some inverters as INV primitives (e.g. ahead of a CARRY4 or an FF input); each
# occupies a LUT1 site unless Vivado later folds it into a neighbour, so it counts as a LUT.
INV_TYPES = ("INV",)
FF_TYPES = ("FDRE", "FDSE", "FDCE", "FDPE", "FDRE_1", "FDSE_1", "FDCE_1", "FDPE_1",
            "LDCE", "LDPE", "LDCE_1", "LDPE_1")
RAMB18_TYPES = ("RAMB18E1", "FIFO18E1")
RAMB36_TYPES = ("RAMB36E1", "FIFO36E1")
DSP_TYPES = ("DSP48E1",)

# Input ports through which a LUTRAM/SRL's output follows combinationally (the read address);
# its data and write-enable inputs end a path at the storage like an FF's D.
_LUTRAM_READ_PORT = re.compile(r"^(A\d*|ADDR[A-H]|DPRA\d*|DPRA|RADR\d*)$")


# ---------------------------------------------------------------------------------------------
# Timing proxy: per-element delays of a Zynq-7000 -1 (xc7z020clg400-1). Estimates, not a timing
# analysis: the cell delays are the typical figures Vivado's timing reports print for -1 7-series
# parts (DS187's switching characteristics give the same order); the net delay per level is an
# assumption for short local routes after placement (0.3..0.6 ns in Vivado reports of small,
# uncongested designs; long or high-fanout nets are slower). Change them here, not at call sites.
LUT_NS = 0.124          # LUT A..F -> O (Prop_lut*_I*_O on -1)
NET_NS = 0.45           # one placed local net between two levels (assumption, fanout ignored)
FF_CLK_TO_Q_NS = 0.456  # FDRE C -> Q (Prop_fdre_C_Q on -1)
FF_SETUP_NS = 0.10      # FDRE D/CE setup, rounded up (Setup_fdre_C_D is ~0.05 ns; CE ~0.2 ns)
CARRY4_ENTRY_NS = 0.55  # CARRY4 S/DI -> CO3/O (Prop_carry4_S[0]_CO[3] ~0.5..0.7 ns)
CARRY4_CI_NS = 0.114    # CARRY4 CI -> CO3 along a chain (dedicated route, no net)
MUXF_NS = 0.22          # LUT -> MUXF7 (-> MUXF8) over the slice's dedicated route
BRAM_CLK_TO_DO_NS = 2.45  # RAMB36E1/18E1 CLK -> DO without the output register (DOx_REG=0)
BRAM_CLK_TO_DO_REG_NS = 0.88  # with the output register
DSP_CLK_TO_P_NS = 0.43  # DSP48E1 CLK -> P with PREG=1 (a PREG=0 DSP is not modelled, see below)
CLOCK_UNCERTAINTY_NS = 0.2  # jitter + skew budget of a PS FCLK through a BUFG (assumption)
PERIOD_NS = 10.0        # 100 MHz, flipq's PL clock on the PYNQ-Z2


def timing_proxy(lut_levels: int, *, carry4: int = 0, muxf: int = 0, period_ns: float = PERIOD_NS) -> dict:
    """What a register-to-register path of ``lut_levels`` LUTs (plus ``carry4`` chained CARRY4s
    and ``muxf`` MUXF7/8 on it) implies on an xc7z020 -1: an *estimate* built from the named
    per-element delays above, FF clock-to-out + levels x (LUT + net) + carry + setup, against the
    period less the clock uncertainty. Place and route decides the truth; this says whether a
    depth is comfortably inside 10 ns, borderline, or hopeless."""
    levels = max(0, int(lut_levels))
    carry4 = max(0, int(carry4))
    muxf = max(0, int(muxf))
    per_level = LUT_NS + NET_NS
    carry_ns = (CARRY4_ENTRY_NS + NET_NS + (carry4 - 1) * CARRY4_CI_NS) if carry4 else 0.0
    path = FF_CLK_TO_Q_NS + levels * per_level + carry_ns + muxf * MUXF_NS + NET_NS + FF_SETUP_NS
    budget = period_ns - CLOCK_UNCERTAINTY_NS
    return {
        "lut_levels": levels, "carry4": carry4, "muxf": muxf,
        "ns_per_level": round(per_level, 3),
        "path_ns": round(path, 3),
        "period_ns": period_ns,
        "slack_ns": round(budget - path, 3),
        "meets": path <= budget,
        # levels of LUT + net that would still fit beside the same carry/mux part of the path
        "max_levels": max(0, int((budget - (path - levels * per_level)) // per_level)),
        "label": "estimate: 7-series -1 per-level delays (LUT %.3f ns + net %.2f ns), pre-place"
                 % (LUT_NS, NET_NS),
    }


# ---------------------------------------------------------------------------------------------
def _param_literal(name: str, value) -> str:
    """A parameter value as Yosys 0.23's ``hierarchy -chparam`` parses it.

    0.23 decodes the value as a bare Verilog constant only: a quoted string (despite its help)
    and a negative number (``-3``) are rejected, and a signedness suffix is dropped. So a string
    goes as its bytes in a sized hex constant (Verilog strings are bit vectors; ``$readmemh`` reads
    the name back from the bits), and a negative integer as a 128-bit two's complement constant,
    which a ``parameter integer`` or ``parameter signed [W-1:0]`` (W <= 128) truncates back to the
    right value. An *untyped* parameter would keep it as a huge positive number, so negative
    overrides need a typed declaration (flipq's RTL declares them so)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        if value < 0:
            if value < -(1 << 127):
                raise YosysError(f"Yosys parameter {name}={value} does not fit 128 bits")
            return f"128'h{value % (1 << 128):x}"
        return f"{max(32, value.bit_length() + 1)}'d{value}"
    if isinstance(value, (str, Path)):
        data = str(value).encode()
        if b'"' in data or b"\n" in data:
            raise YosysError(f"Yosys parameter {name}: string {value!r} holds a quote or newline")
        return f"{8 * len(data)}'h{data.hex()}" if data else "8'h0"
    raise YosysError(f"Yosys parameter {name}: cannot pass {type(value).__name__} {value!r}")


def _quote(path: Path | str) -> str:
    text = str(path)
    if '"' in text or "\n" in text:
        raise YosysError(f"Yosys cannot read a path holding a quote or newline: {text!r}")
    return f'"{text}"'


def synthesize(sources: list[Path], top: str, work_dir: Path, *, params: dict | None = None,
               include_dirs=(), data_files=(), timeout_s: int = 1800, abc9: bool = False) -> dict:
    """Synthesize ``top`` from ``sources`` for the xc7z020 with Yosys and count what it maps to.

    The flow: ``read_verilog -defer`` every source (nothing is elaborated with its default
    parameters, so a ROM whose default file name is empty does not fail), ``hierarchy -top TOP
    -chparam ...`` with ``params`` (without ``-check``: synth_xilinx checks the hierarchy itself
    once its cell library is loaded, so instantiated primitives resolve), then ``synth_xilinx
    -family xc7 -top TOP -flatten -noiopad -noclkbuf``. Out of context (no I/O or clock buffers) because the accelerator sits
    inside the PS/PL block design, as Vivado's OOC synthesis of an IP would see it.

    Mapping: the default ``abc -luts`` flow, not ``-abc9`` (``abc9=True`` selects it). ABC9 would
    be the better predictor of Vivado in principle: it maps with the 7-series delay models of the
    boxes around the logic (CARRY4, MUXF7/8, LUTRAM, BRAM, DSP) and recovers area after a
    delay-oriented cover, as Vivado's timing-driven synthesis does, and on flipq's window
    generator it gave ~20 % fewer LUTs for the same cells otherwise. But Yosys 0.23's ABC9 aborts
    (``std::out_of_range`` in ABC9_OPS, cf. YosysHQ/yosys#3384) on every design with a RAMB36E1
    (0.23 connects a 64-bit DOADO to the 32-bit port of an SDP RAMB36: the "Resizing cell port"
    warnings), and flipq's weight ROMs become RAMB36s at real sizes. One flow for every design
    keeps the figures comparable for calibration, so ``lut`` is an area-oriented upper estimate.
    Neither flow models Vivado's LUT combining (two small functions in one LUT6_2), so Vivado's
    *Slice LUTs* can come out lower still.

    ``$readmemh`` files: Yosys runs in ``work_dir``; ``data_files`` are copied there first, and
    Yosys also finds a relative file name beside the source that names it.

    Returns ``lut`` (LUT1..LUT6 + INV), ``lut_by_size``, ``lutram`` (LUT sites of LUTRAM/SRL cells,
    by :data:`LUTRAM_LUTS`), ``lut_total`` (``lut + lutram``), ``ff``, ``carry4``, ``muxf7``,
    ``muxf8``, ``ramb18``, ``ramb36``, ``bram36`` (RAMB36 + RAMB18 / 2), ``dsp``, ``lut_levels``
    and ``path`` (see :func:`netlist_depth`), ``critical_path`` (the worst path by the delay
    estimate), ``timing`` (:func:`timing_proxy` of the deepest path), ``cells`` (every mapped
    cell type and its count), ``warnings``, ``seconds``, ``yosys_version``, ``label``, ``log``.
    """
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    cmd = yosys_command()
    sources = [Path(s).resolve() for s in sources]
    for src in sources:
        if not src.is_file():
            raise YosysError(f"Yosys input {src} does not exist (top {top})")
    for f in data_files:
        f = Path(f).resolve()
        if not f.is_file():
            raise YosysError(f"Yosys data file {f} does not exist (top {top})")
        if f.parent != work_dir:
            shutil.copy2(f, work_dir / f.name)

    log = work_dir / f"yosys_{top}.log"
    stat_json = work_dir / f"yosys_{top}.stat.json"
    net_json = work_dir / f"yosys_{top}.json"
    script = work_dir / f"yosys_{top}.ys"
    for stale in (log, stat_json, net_json):
        stale.unlink(missing_ok=True)
    # read_verilog -I takes the directory verbatim (quotes included), so it cannot hold a space
    incs = []
    for d in include_dirs:
        d = Path(d).resolve()
        if any(c.isspace() or c == '"' for c in str(d)):
            raise YosysError(f"Yosys cannot take include directory {str(d)!r} (whitespace or quote in the path)")
        incs.append(f"-I{d}")
    incs = " ".join(incs)
    chparams = " ".join(f"-chparam {k} {_param_literal(k, v)}" for k, v in (params or {}).items())
    lines = [f"read_verilog -defer {incs} {_quote(src)}".replace("  ", " ") for src in sources]
    lines += [
        f"hierarchy -top {top} {chparams}".rstrip(),
        f"synth_xilinx -family xc7 -top {top} -flatten -noiopad -noclkbuf" + (" -abc9" if abc9 else ""),
        # tee -o takes its file name verbatim (quotes included), so a bare name relative to cwd
        f"tee -q -o {stat_json.name} stat -json",
        # only the library cells the netlist uses, so the JSON stays small
        "hierarchy -purge_lib",
        f"write_json {net_json.name}",
    ]
    script.write_text("\n".join(lines) + "\n")

    t0 = time.monotonic()
    try:
        res = subprocess.run([*cmd, "-q", "-l", str(log), "-s", str(script)], cwd=work_dir,
                             capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise YosysError(f"Yosys timed out after {timeout_s} s on {top} (log: {log}):\n{_tail(log)}") from None
    seconds = time.monotonic() - t0
    if res.returncode != 0 or not net_json.is_file():
        tail = _tail(log) or (res.stdout + res.stderr)[-3000:]
        errors = [ln[ln.index("ERROR"):] for ln in (tail + "\n" + res.stderr).splitlines() if "ERROR" in ln]
        first = errors[-1] if errors else f"exit {res.returncode}"
        raise YosysError(f"Yosys failed on {top}: {first} (log: {log}):\n{tail}")

    netlist = json.loads(net_json.read_text())
    module = _top_module(netlist, top, net_json)
    cells = _stat_cells(stat_json, top)
    if cells is None:  # no stat -json (older Yosys): count the netlist itself
        cells = defaultdict(int)
        for cell in module.get("cells", {}).values():
            cells[cell["type"]] += 1
    cells = dict(sorted(cells.items()))

    counts = summarize_cells(cells)
    depth = netlist_depth(module)
    version = yosys_version()
    log_text = log.read_text(errors="replace") if log.is_file() else ""
    warnings = [ln.strip() for ln in log_text.splitlines() if ln.startswith("Warning:")]
    return {
        **counts,
        "lut_levels": depth["lut_levels"],
        "path": depth["path"],
        "critical_path": depth["critical_path"],
        "timing": timing_proxy(depth["lut_levels"], carry4=depth["path"]["carry4"], muxf=depth["path"]["muxf"]),
        "cells": cells,
        "warnings": warnings,
        "seconds": round(seconds, 2),
        "yosys_version": version,
        "label": f"Yosys {version} {LABEL_FLOW}",
        "flow": "abc9" if abc9 else "abc",
        "params": dict(params or {}),
        "log": str(log),
    }


def _tail(log: Path, n: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _top_module(netlist: dict, top: str, path: Path) -> dict:
    modules = netlist.get("modules", {})
    if top in modules:
        return modules[top]
    tops = [m for m in modules.values() if str(m.get("attributes", {}).get("top", "0")).strip("0") != ""]
    if len(tops) == 1:
        return tops[0]
    raise YosysError(f"Yosys netlist {path} has no module {top} (modules: {sorted(modules)[:10]})")


def _stat_cells(stat_json: Path, top: str) -> dict | None:
    """``num_cells_by_type`` of ``stat -json`` (Yosys >= 0.10 writes it; 0.23 does): the whole
    design's figure, which after ``-flatten`` is the top module's."""
    try:
        stat = json.loads(stat_json.read_text())
    except (OSError, ValueError):
        return None
    entry = stat.get("design") or stat.get("modules", {}).get("\\" + top) or stat.get("modules", {}).get(top)
    if not entry or "num_cells_by_type" not in entry:
        return None
    return {str(k).lstrip("\\"): int(v) for k, v in entry["num_cells_by_type"].items()}


def summarize_cells(cells: dict) -> dict:
    """Resource figures from raw cell counts (see :func:`synthesize` for the keys)."""
    lut_by_size = {t: cells.get(t, 0) for t in LUT_TYPES + INV_TYPES if cells.get(t, 0)}
    lut = sum(lut_by_size.values())
    lutram = sum(LUTRAM_LUTS[t] * n for t, n in cells.items() if t in LUTRAM_LUTS)
    ramb18 = sum(cells.get(t, 0) for t in RAMB18_TYPES)
    ramb36 = sum(cells.get(t, 0) for t in RAMB36_TYPES)
    return {
        "lut": lut,
        "lut_by_size": lut_by_size,
        "lutram": lutram,
        "lutram_cells": {t: n for t, n in cells.items() if t in LUTRAM_LUTS},
        "lut_total": lut + lutram,
        "ff": sum(cells.get(t, 0) for t in FF_TYPES),
        "carry4": cells.get("CARRY4", 0),
        "muxf7": cells.get("MUXF7", 0),
        "muxf8": cells.get("MUXF8", 0),
        "ramb18": ramb18,
        "ramb36": ramb36,
        "bram36": ramb36 + ramb18 / 2,
        "dsp": sum(cells.get(t, 0) for t in DSP_TYPES),
    }


# ---------------------------------------------------------------------------------------------
def netlist_depth(module: dict) -> dict:
    """The combinational depth of a flattened, mapped module (one ``write_json`` module).

    Why not ``ltp -noff``: it counts every cell on the path (CARRY4s, MUXF7/8, INV) as a level,
    knows only Yosys' internal FF types (so it walks through FDRE/RAMB/DSP cells as if they were
    logic) and treats a multi-output cell as one node. Here a path starts at a top input or a
    storage cell's output (FF, BRAM, DSP, a LUTRAM/SRL read) and ends at a top output or a
    storage cell's input; in between:

    - LUT1..6 and INV add one LUT level;
    - a LUTRAM/SRL is a LUT on its read path (address -> data out) and storage for the rest;
    - CARRY4 adds no LUT level: a carry chain is counted separately as the CARRY4s in series on
      the path (``carry4``), since a CARRY4 costs ~0.1 ns along the chain against ~0.6 ns for a
      LUT plus its net;
    - MUXF7/MUXF8 add no LUT level either (they are the wide-LUT extension of the LUTs in front of
      them) and are counted as ``muxf``;
    - a DSP48E1 is a boundary: its internal paths (and a combinational PREG=0 DSP) are not counted.

    ``lut_levels`` is the largest LUT count on any such path, ``path`` that path's CARRY4/MUXF
    counts (among equally deep paths, the slowest by the estimate), ``critical_path`` the slowest
    path by the :func:`timing_proxy` constants, which also weighs a BRAM's clock-to-out. A
    combinational loop (never in flipq's RTL) is cut, and counted in ``loops``.
    """
    cells = module.get("cells", {})
    driver: dict[int, str] = {}  # net bit -> driving cell
    for name, cell in cells.items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            if dirs.get(port) == "output":
                for b in bits:
                    if isinstance(b, int):
                        driver[b] = name

    kinds = {name: _kind(cell) for name, cell in cells.items()}
    # Combinational fan-in edges: (pred cell, this cell, via carry-in?)
    preds: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for name, cell in cells.items():
        kind = kinds[name]
        if kind in ("storage", "dsp", "bram", "other"):
            continue
        dirs = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            if dirs.get(port) != "input":
                continue
            if kind == "lutram" and not _LUTRAM_READ_PORT.match(port):
                continue
            for b in bits:
                src = driver.get(b) if isinstance(b, int) else None
                if src is not None and kinds[src] in ("lut", "carry", "muxf", "lutram", "bram", "dsp", "storage"):
                    preds[name].append((src, kind == "carry" and port == "CI" and kinds[src] == "carry"))

    # Kahn's order over the combinational cells only; storage outputs are sources.
    comb = [n for n in cells if kinds[n] in ("lut", "carry", "muxf", "lutram")]
    indeg = {n: 0 for n in comb}
    succs: dict[str, list[str]] = defaultdict(list)
    for n in comb:
        for src, _ in preds[n]:
            if src in indeg:
                indeg[n] += 1
                succs[src].append(n)
    order = [n for n in comb if indeg[n] == 0]
    for n in order:
        for s in succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                order.append(s)
    loops = len(comb) - len(order)

    # Per cell output: deepest (luts, ns, carry4, muxf) and slowest (ns, luts, carry4, muxf, start).
    deep: dict[str, tuple] = {}
    slow: dict[str, tuple] = {}

    def launch(src: str) -> tuple[float, str]:
        kind = kinds[src]
        if kind == "bram":
            regd = all(_int_param(cells[src], p, 0) for p in ("DOA_REG", "DOB_REG"))
            return (BRAM_CLK_TO_DO_REG_NS if regd else BRAM_CLK_TO_DO_NS), cells[src]["type"]
        if kind == "dsp":
            return DSP_CLK_TO_P_NS, cells[src]["type"]
        return FF_CLK_TO_Q_NS, cells[src]["type"]

    for n in order:
        kind = kinds[n]
        lut, carry, muxf = _cell_counts(kind)
        if kind == "lutram":  # a write launches the read data as an FF would
            best_d = (lut, FF_CLK_TO_Q_NS + LUT_NS, carry, muxf)
            best_s = (FF_CLK_TO_Q_NS + LUT_NS, lut, carry, muxf, cells[n]["type"])
        else:
            best_d = (lut, _cell_ns(kind, False), carry, muxf)
            best_s = (_cell_ns(kind, False), lut, carry, muxf, "input")
        for src, via_ci in preds[n]:
            if src in deep:
                d, s = deep[src], slow[src]
            elif src in indeg:  # inside a loop: cut there
                continue
            else:
                t, start = launch(src)
                d, s = (0, t, 0, 0), (t, 0, 0, 0, start)
            # CARRY4 -> CARRY4 and LUT -> MUXF7 -> MUXF8 use the slice's dedicated routes.
            wire = 0.0 if via_ci or (kind == "muxf" and kinds[src] in ("lut", "muxf")) else NET_NS
            add = wire + _cell_ns(kind, via_ci)
            best_d = max(best_d, (d[0] + lut, d[1] + add, d[2] + carry, d[3] + muxf))
            best_s = max(best_s, (s[0] + add, s[1] + lut, s[2] + carry, s[3] + muxf, s[4]))
        deep[n] = best_d
        slow[n] = best_s

    # Endpoints: storage inputs and top outputs; a path into an endpoint takes a net and a setup.
    ends: set[str] = set()
    for name, cell in cells.items():
        kind = kinds[name]
        dirs = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            if dirs.get(port) != "input":
                continue
            if kind in ("lut", "carry", "muxf") or (kind == "lutram" and _LUTRAM_READ_PORT.match(port)):
                continue
            ends.update(driver[b] for b in bits if isinstance(b, int) and b in driver)
    for port in module.get("ports", {}).values():
        if port.get("direction") in ("output", "inout"):
            ends.update(driver[b] for b in port.get("bits", []) if isinstance(b, int) and b in driver)
    ended = [n for n in ends if n in deep]
    worst_d = max((deep[n] for n in ended), default=(0, 0.0, 0, 0))
    worst_s = max((slow[n] for n in ended), default=(0.0, 0, 0, 0, "input"))
    return {
        "lut_levels": worst_d[0],
        "path": {"lut": worst_d[0], "carry4": worst_d[2], "muxf": worst_d[3]},
        "critical_path": {"ns": round(worst_s[0] + NET_NS + FF_SETUP_NS, 3), "lut": worst_s[1],
                          "carry4": worst_s[2], "muxf": worst_s[3], "start": worst_s[4]},
        "loops": loops,
    }


def _kind(cell: dict) -> str:
    t = cell["type"]
    if t in LUT_TYPES or t in INV_TYPES:
        return "lut"
    if t == "CARRY4":
        return "carry"
    if t in ("MUXF7", "MUXF8"):
        return "muxf"
    if t in LUTRAM_LUTS:
        return "lutram"
    if t in RAMB18_TYPES or t in RAMB36_TYPES:
        return "bram"
    if t in DSP_TYPES:
        return "dsp"
    if t in FF_TYPES:
        return "storage"
    # Constants (GND/VCC), buffers and anything unknown start and end nothing combinational.
    return "other" if t in ("GND", "VCC", "BUFG", "BUFGCTRL", "IBUF", "OBUF") else "storage"


def _cell_counts(kind: str) -> tuple[int, int, int]:
    """(LUT levels, CARRY4s, MUXFs) a cell adds to a path through it."""
    return {"lut": (1, 0, 0), "lutram": (1, 0, 0), "carry": (0, 1, 0), "muxf": (0, 0, 1)}.get(kind, (0, 0, 0))


def _cell_ns(kind: str, via_ci: bool) -> float:
    """Estimated delay through a cell; a CARRY4 entered by CI from the previous CARRY4 costs only
    the carry propagation, one entered at S/DI (a chain's start, or from a LUT) the full entry."""
    if kind in ("lut", "lutram"):
        return LUT_NS
    if kind == "muxf":
        return MUXF_NS
    if kind == "carry":
        return CARRY4_CI_NS if via_ci else CARRY4_ENTRY_NS
    return 0.0


def _int_param(cell: dict, name: str, default: int) -> int:
    raw = cell.get("parameters", {}).get(name)
    if raw is None:
        return default
    try:
        return int(str(raw), 2) if set(str(raw)) <= {"0", "1"} else int(raw)
    except ValueError:
        return default
