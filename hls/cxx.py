"""g++ for the C simulation: translation units compiled side by side, linked into one
shared library. Used for the bit-serial model library and for the board wrapper."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


class CompileError(RuntimeError):
    """g++ is missing or a unit failed; the message names the unit, the log file that holds the
    compiler's whole output, and carries its first error lines."""


def _failure(what: str, res, log: Path) -> CompileError:
    """The whole compiler output goes to ``log``; the message names it and quotes the first
    error lines (a killed compiler, e.g. out of memory, says so by its signal)."""
    text = (res.stderr or "") + (res.stdout or "")
    log.write_text(f"$ {' '.join(map(str, res.args))}\nexit status {res.returncode}\n{text}")
    if res.returncode < 0:
        head = f"the compiler was killed by signal {-res.returncode} (out of memory?)"
    else:
        errors = [line for line in text.splitlines() if "error" in line.lower()]
        head = "\n".join((errors or text.splitlines() or ["(no output)"])[:8])
    return CompileError(f"{what} (exit status {res.returncode}; the whole output is in {log}):\n{head[:4000]}")


def ap_types(project_dir: Path | None = None) -> Path:
    """The ap_int/ap_fixed headers: the project's own copy, else hls4ml's."""
    if project_dir is not None and (Path(project_dir) / "firmware" / "ap_types").is_dir():
        return Path(project_dir) / "firmware" / "ap_types"
    import hls4ml  # only when the project lacks its copy

    return Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"


def _machine_flags() -> list[str]:
    """The bit-serial C-sim counts weight bits with popcount (flipq_bitserial_pe.h); without
    the instruction g++ calls a library routine and a CIFAR-sized net runs at half speed. Every
    x86-64 CPU since 2008 has it; elsewhere g++ picks the target's own."""
    return ["-mpopcnt"] if platform.machine().lower() in ("x86_64", "amd64") else []


def build_shared_library(units: list[Path], includes: list[Path], lib: Path, obj_dir: Path,
                         opt: str = "-O2", tag: str = "csim", defines: tuple[str, ...] = ()) -> Path:
    """Compile ``units`` (two at a time) and link them into ``lib``; objects are removed.
    ``defines`` are preprocessor macros (``NAME`` or ``NAME=VALUE``)."""
    gxx = shutil.which(os.environ.get("CXX", "g++"))
    if gxx is None:
        raise CompileError("no C++ compiler: g++ (or $CXX) is not on PATH")
    # -fno-gnu-unique: template statics would otherwise pin the library in memory past dlclose,
    # and a rebuilt library at the same path would silently keep running the old code
    flags = [opt, "-fPIC", "-fno-gnu-unique", "-std=c++17", *(f"-I{p}" for p in includes),
             "-Wno-unused-label", "-Wno-unknown-pragmas", *_machine_flags(), *(f"-D{d}" for d in defines)]
    objs = [Path(obj_dir) / f"{Path(u).stem}.{tag}.o" for u in units]

    def cc(unit_obj):
        unit, obj = unit_obj
        return subprocess.run([gxx, *flags, "-c", str(unit), "-o", str(obj)], capture_output=True, text=True)

    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(cc, zip(units, objs)))
        for unit, obj, res in zip(units, objs, results):
            if res.returncode != 0:
                raise _failure(f"g++ failed on {unit}", res, obj.with_suffix(".log"))
        lib = Path(lib)
        lib.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run([gxx, "-shared", *map(str, objs), "-o", str(lib)], capture_output=True, text=True)
        if res.returncode != 0:
            raise _failure(f"linking {lib} failed", res, lib.with_suffix(".link.log"))
    finally:
        for obj in objs:
            obj.unlink(missing_ok=True)
    return lib
