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

The RTL twin travels the same way (``flipq overlay build --kernel rtl``): :func:`copy_rtl_design`
copies the generated design (``rtl.json``'s files and the ROM ``*.hex``) and flipq's RTL library
(``hls/rtl/*.v``, the board wrapper among them) into ``<overlay>/rtl/``, one flat folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from flipq.overlays.errors import OverlayInputError
from flipq.host.files import copy_atomic

SRC_DIR = "src"
RTL_DIR = "rtl"  # the RTL design inside the overlay folder
RTL_JSON = "rtl.json"
RTL_TOP = "flipq_accel"  # the generated top the board wrapper instantiates
RTL_SUFFIXES = (".v", ".sv", ".vh")
# Names go into Tcl and Vivado's file lists unquoted and are joined to a folder: letters, digits
# and _ . + - only, so no separator, no Tcl substitution ([, $), no line break can get in.
_PLAIN_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_QUOTED_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"\n]+)"', re.M)


def listed_sources(hls_dir: Path, listed, where: str) -> list[Path]:
    """hls_report.json's ``sources``, each a relative path that resolves inside ``hls_dir``
    (symlinks followed): a received build folder cannot have the overlay copy, and name in its
    Tcl, a file from elsewhere on this machine."""
    from flipq.host.files import confined

    if not isinstance(listed, list):
        raise OverlayInputError(f"{where}: field 'sources' = {listed!r} is not a list of paths; rerun the hls stage")
    try:
        return [confined(hls_dir, s, where, f"sources[{i}]") for i, s in enumerate(listed)]
    except ValueError as e:
        raise OverlayInputError(str(e)) from None


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


def plain_file_name(name, where: str) -> str:
    """``name`` if it is a plain file name (no folder, no ``..``, nothing Tcl would interpret)."""
    if not isinstance(name, str) or not _PLAIN_FILE.fullmatch(name) or ".." in name:
        raise OverlayInputError(f"{where}: file name {name!r} is not a plain file name (letters, digits, "
                                "'_', '.', '+', '-'; no '/', no '..'); regenerate the design")
    return name


def read_rtl_design(design_dir: Path, make_it: str) -> dict:
    """``rtl.json`` of the RTL design folder ``design_dir``, its ``files`` checked; ``make_it`` is
    the command that generates the design, for the message when there is none."""
    path = Path(design_dir) / RTL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the RTL twin has not been generated; run `{make_it}` first")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OverlayInputError(f"{path}: not readable JSON ({e}); run `{make_it}` again") from e
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, list) or not files:
        raise OverlayInputError(f"{path}: field 'files' = {files!r} is not a non-empty list of Verilog file names; "
                                f"run `{make_it}` again")
    for name in files:
        plain_file_name(name, f"{path}: field 'files'")
        if not name.endswith(RTL_SUFFIXES):
            raise OverlayInputError(f"{path}: field 'files' names {name!r}, not a Verilog file "
                                    f"({', '.join(RTL_SUFFIXES)})")
    if meta.get("top", RTL_TOP) != RTL_TOP:
        raise OverlayInputError(f"{path}: field 'top' = {meta.get('top')!r}; the board wrapper instantiates {RTL_TOP}")
    return meta


def copy_rtl_design(design_dir: Path, library: list[Path], dst: Path, make_it: str) -> tuple[list[str], list[str]]:
    """Copy the RTL design in ``design_dir`` (its ``rtl.json``'s ``files`` and ``*.hex``) and the
    ``library`` modules into ``dst``; returns (Verilog file names, library first; ROM file names).
    A name that is not a plain file name, a listed file that is missing or is not a file inside
    ``design_dir``, and a generated file that would replace a library module are refused."""
    design_dir, dst = Path(design_dir), Path(dst)
    where = design_dir / RTL_JSON
    meta = read_rtl_design(design_dir, make_it)
    lib_names = [plain_file_name(p.name, f"RTL library {p.parent}") for p in library]
    placed: dict[str, Path] = {name: p for name, p in zip(lib_names, library)}
    root = design_dir.resolve()
    generated = []
    for name in list(meta["files"]) + sorted(p.name for p in design_dir.glob("*.hex")):
        plain_file_name(name, f"{design_dir}: ROM file" if name.endswith(".hex") else f"{where}: field 'files'")
        path = design_dir / name
        if not path.is_file() or path.resolve().parent != root:
            raise OverlayInputError(f"{where}: {name!r} is not a file in {design_dir}; run `{make_it}` again")
        if name in placed:
            raise OverlayInputError(f"{where}: {name!r} is listed twice or has the name of an RTL library module "
                                    f"({placed[name]}); run `{make_it}` again")
        placed[name] = path
        generated.append(name)
    dst.mkdir(parents=True, exist_ok=True)
    # a design generated earlier may have had more layers: its files would be packaged too
    for old in dst.iterdir():
        if old.is_file() and old.suffix in (*RTL_SUFFIXES, ".hex") and old.name not in placed:
            old.unlink()
    for name, path in placed.items():
        copy_atomic(path, dst / name)
    sources = lib_names + [n for n in generated if not n.endswith(".hex")]
    roms = [n for n in generated if n.endswith(".hex")]
    return sources, roms


__all__ = ["RTL_DIR", "RTL_JSON", "RTL_TOP", "SRC_DIR", "copy_rtl_design", "copy_sources", "include_closure",
           "listed_sources", "plain_file_name", "read_rtl_design"]
