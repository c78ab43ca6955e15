"""The HLS sources travel with the overlay: the model's C++ compile units and every header they
include with quotes are copied into ``<overlay>/src/``, keeping their layout under the folder
that holds each unit (hls4ml's ``firmware/``), so the Tcl can name them relative to itself and
the whole folder can be copied to the machine that has Vitis HLS.

>>> units = copy_sources([Path("hls/bitserial/hls4ml_prj/firmware/myproject.cpp")],
...                      Path("overlay/src"))                               # doctest: +SKIP
>>> units                                                                   # doctest: +SKIP
['myproject.cpp']

Headers that are not found beside the including file (``ap_int.h``, ``hls_stream.h``) are the
tool's own and are not copied: synthesis needs Vitis HLS's versions, not hls4ml's ap_types copy.
"""

from __future__ import annotations

import re
from pathlib import Path

from flipq.overlays.errors import OverlayInputError
from flipq.host.files import copy_atomic

SRC_DIR = "src"
_QUOTED_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"\n]+)"', re.M)


def include_closure(unit: Path) -> list[Path]:
    """``unit`` and every file it includes with quotes, transitively, each found relative to the
    file that includes it (how the compiler searches quoted includes first)."""
    seen: dict[Path, None] = {}
    stack = [Path(unit).resolve()]
    while stack:
        path = stack.pop()
        if path in seen:
            continue
        seen[path] = None
        for name in _QUOTED_INCLUDE.findall(path.read_text(errors="replace")):
            found = (path.parent / name).resolve()
            if found.is_file():
                stack.append(found)
    return list(seen)


def copy_sources(units: list[Path], src_dir: Path) -> list[str]:
    """Copy each compile unit in ``units`` and its quoted includes into ``src_dir``, relative to
    the unit's folder; returns the units' paths relative to ``src_dir`` (POSIX), in order."""
    src_dir = Path(src_dir)
    placed: dict[str, Path] = {}
    out: list[str] = []
    for unit in units:
        unit = Path(unit).resolve()
        if not unit.is_file():
            raise OverlayInputError(f"HLS source {unit} not found (hls_report.json's 'sources'); rerun the hls stage")
        root = unit.parent
        for path in include_closure(unit):
            if not path.is_relative_to(root):
                raise OverlayInputError(f"{unit} includes {path}, outside its folder {root}: the copy in "
                                   f"{src_dir} could not find it; keep the model's headers beside "
                                   "or below its sources")
            rel = path.relative_to(root).as_posix()
            if placed.setdefault(rel, path) != path:
                raise OverlayInputError(f"HLS sources {placed[rel]} and {path} would both be copied to "
                                   f"{src_dir / rel}; list sources from one folder")
        out.append(unit.relative_to(root).as_posix())
    for rel, path in placed.items():
        dst = src_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        copy_atomic(path, dst)
    return out


__all__ = ["SRC_DIR", "copy_sources", "include_closure"]
