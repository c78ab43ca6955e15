"""Finding and running Vitis HLS and Vivado.

>>> tools = find_tools()                      # doctest: +SKIP
>>> tool_problems(tools)                      # doctest: +SKIP
['vitis_hls: not on PATH ...', 'vivado: not on PATH']

Vitis HLS 2020.2 or newer is required. The older ``vivado_hls`` cannot run flipq's scripts:
``open_solution -flow_target`` and ``-std=c++14`` are Vitis HLS options, and it names the
AXI-lite registers with a ``_V`` suffix (``planes_V``) that the .hwh check and the host driver
do not look for.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from flipq.overlays.errors import OverlayError

HLS_TOOL = "vitis_hls"
MIN_VITIS_HLS = (2020, 2)
SCRIPTS = ("hls_synth.tcl", "block_design.tcl", "bitstream.tcl")
_VERSION = re.compile(r"\b(20\d\d)\.(\d)\b")


def find_tools() -> dict:
    """Paths of ``vitis_hls``, ``vivado`` and (to explain why it is not used) ``vivado_hls``."""
    return {"hls": shutil.which(HLS_TOOL), "vivado": shutil.which("vivado"),
            "vivado_hls": shutil.which("vivado_hls")}


def hls_version(path: str) -> tuple[int, int] | None:
    """Vitis HLS's release, from its install path (``.../Vitis_HLS/2022.1/bin``) or else from
    ``vitis_hls -version``; None when neither says."""
    m = _VERSION.search(str(Path(path).resolve()))
    if m is None:
        try:
            proc = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=120)
            m = _VERSION.search(proc.stdout + proc.stderr)
        except (OSError, subprocess.SubprocessError):
            return None
    return (int(m[1]), int(m[2])) if m else None


def tool_problems(tools: dict) -> list[str]:
    """Why the tools in ``tools`` (see :func:`find_tools`) cannot run the flow; empty when they can."""
    problems = []
    need = f"{HLS_TOOL} {MIN_VITIS_HLS[0]}.{MIN_VITIS_HLS[1]} or newer"
    hls = tools.get("hls")
    if not hls:
        if tools.get("vivado_hls"):
            problems.append(f"{HLS_TOOL}: not on PATH, only vivado_hls ({tools['vivado_hls']}), which "
                            "cannot build flipq's IP: -flow_target and -std=c++14 are Vitis HLS options, "
                            "and vivado_hls names the registers planes_V/n_samples_V, which the .hwh "
                            f"check and the host driver do not read; install {need}")
        else:
            problems.append(f"{HLS_TOOL}: not on PATH (flipq needs {need})")
    else:
        version = hls_version(hls)
        if version is not None and version < MIN_VITIS_HLS:
            problems.append(f"{HLS_TOOL}: {hls} is {version[0]}.{version[1]}; flipq needs {need}")
    if not tools.get("vivado"):
        problems.append("vivado: not on PATH")
    return problems


def commands(tools: dict) -> list[list[str]]:
    """The three runs, in order, each reading one script from the overlay folder."""
    hls = tools.get("hls") or HLS_TOOL
    viv = tools.get("vivado") or "vivado"
    return [[hls, "-f", SCRIPTS[0]],
            [viv, "-mode", "batch", "-source", SCRIPTS[1]],
            [viv, "-mode", "batch", "-source", SCRIPTS[2]]]


def run_instructions(out_dir: Path, tools: dict) -> list[str]:
    """What a person runs on the machine with the tools: the folder holds everything it needs."""
    return ([f"copy the folder {Path(out_dir).resolve()} to that machine, then cd into it and run:"]
            + ["  " + " ".join([Path(cmd[0]).name] + cmd[1:]) for cmd in commands(tools)])


def run_tools(out_dir: Path, tools: dict) -> list[str]:
    """Run the three scripts in ``out_dir``, each logged to ``<tool>_<i>.log``; returns the command
    lines run. A failing run raises :class:`OverlayError` naming its log."""
    out = Path(out_dir).resolve()
    ran = []
    for i, cmd in enumerate(commands(tools)):
        log = out / f"{Path(cmd[0]).name}_{i}.log"
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, cwd=out, stdout=fh, stderr=subprocess.STDOUT)
        ran.append(" ".join(map(str, cmd)))
        if proc.returncode != 0:
            raise OverlayError(f"{' '.join(map(str, cmd))} failed with exit code {proc.returncode}; "
                               f"see {log}")
    return ran


__all__ = ["HLS_TOOL", "MIN_VITIS_HLS", "SCRIPTS", "commands", "find_tools", "hls_version",
           "run_instructions", "run_tools", "tool_problems"]
