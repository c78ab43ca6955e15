"""flipq.boards: the boards flipq targets, as data (one TOML file each).

>>> from flipq.boards import load_board
>>> board = load_board("pynq-z2")
>>> board.part, board.resources["bram36"]
('xc7z020clg400-1', 140)

The registry below is explicit: a board exists when it is listed here, never because a
file happens to lie in the folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

_HERE = Path(__file__).resolve().parent

BOARD_FILES: Mapping[str, str] = {
    "pynq-z2": "pynq_z2.toml",
    "pynq-z1": "pynq_z1.toml",
    "zcu104": "zcu104.toml",
}

RESOURCE_KEYS = ("lut", "ff", "bram36", "dsp", "uram")
_FAMILIES = {"zynq": "processing_system7", "zynq_ultra": "zynq_ultra_ps_e"}


class BoardError(ValueError):
    """An unknown board or a malformed board file; the message names the board/file/field."""


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    part: str
    board_part: str
    family: str  # "zynq" (Zynq-7000, PS7) or "zynq_ultra" (Zynq UltraScale+)
    ps: str  # the PS IP's module type as a .hwh names it
    arch: str  # platform.machine() of the board's CPU, as pynq's Clocks checks it
    fclk0_mhz: float
    ddr_mb: int
    cpu_mhz: float
    resources: Mapping[str, int]
    hp_port: str
    dma_data_width: int
    dma_max_length_width: int
    pynq_images: tuple[str, ...]
    pynq_python: str
    pll_mhz: float  # the PLL fclk0 divides: fclk0 = pll_mhz / (divisor0 * divisor1)
    divisor_max: int  # each divisor is 1..divisor_max
    fclk_min_mhz: float  # the PL clock range flipq builds for
    fclk_max_mhz: float
    hwh_device: str = ""
    hwh_package: str = ""
    hwh_speedgrade: str = ""
    source: str = field(default="", compare=False)

    def fits(self, need: Mapping[str, float]) -> list[str]:
        """The resources ``need`` exceeds, as readable lines (empty when it fits)."""
        over = []
        for key in RESOURCE_KEYS:
            used = float(need.get(key, 0) or 0)
            have = self.resources.get(key, 0)
            if used > have:
                over.append(f"{key}: needs {used:g}, {self.name} has {have}")
        return over


def normalize_name(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def known_boards() -> list[str]:
    return sorted(BOARD_FILES)


def load_board(name: str) -> Board:
    """The board called ``name`` (``pynq-z2``, ``pynq_z2`` and ``PYNQ-Z2`` are the same)."""
    key = normalize_name(name)
    if key not in BOARD_FILES:
        raise BoardError(f"unknown board {name!r}; known boards: {', '.join(known_boards())}")
    return load_board_file(_HERE / BOARD_FILES[key])


def load_board_file(path: str | Path) -> Board:
    import tomllib  # dev side only (Python >= 3.11); boards read accel.json, never this

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BoardError(f"{path}: not a readable board file ({e})") from e

    def need(table: Mapping, key: str, kind, where: str = ""):
        if key not in table:
            raise BoardError(f"{path}: missing field {where}{key}")
        v = table[key]
        ok = isinstance(v, kind) and not (kind in (int, float) and isinstance(v, bool))
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            raise BoardError(f"{path}: field {where}{key} = {v!r} is not a {kind.__name__}")
        return v

    res = need(data, "resources", dict)
    resources = {k: int(need(res, k, int, "resources.")) for k in RESOURCE_KEYS}
    for k, v in resources.items():
        if v < 0:
            raise BoardError(f"{path}: field resources.{k} = {v} is negative")
    dma = need(data, "dma", dict)
    pynq = need(data, "pynq", dict)
    clocks = need(data, "clocks", dict)
    family = need(data, "family", str)
    if family not in _FAMILIES:
        raise BoardError(f"{path}: field family = {family!r}, expected one of {sorted(_FAMILIES)}")
    ps = need(data, "ps", str)
    if ps != _FAMILIES[family]:
        raise BoardError(f"{path}: field ps = {ps!r} does not match family {family!r} "
                         f"(expected {_FAMILIES[family]!r})")
    length_width = need(dma, "max_length_width", int, "dma.")
    if not 8 <= length_width <= 26:
        raise BoardError(f"{path}: field dma.max_length_width = {length_width} is outside 8..26 "
                         "(AXI DMA c_sg_length_width)")
    data_width = need(dma, "data_width", int, "dma.")
    if data_width not in (32, 64):
        raise BoardError(f"{path}: field dma.data_width = {data_width}, expected 32 or 64")
    board = Board(
        name=need(data, "name", str),
        description=data.get("description", ""),
        part=need(data, "part", str),
        board_part=need(data, "board_part", str),
        family=family,
        ps=ps,
        arch=need(data, "arch", str),
        fclk0_mhz=need(data, "fclk0_mhz", float),
        ddr_mb=need(data, "ddr_mb", int),
        cpu_mhz=need(data, "cpu_mhz", float),
        resources=resources,
        hp_port=need(dma, "hp_port", str, "dma."),
        dma_data_width=data_width,
        dma_max_length_width=length_width,
        pynq_images=tuple(need(pynq, "images", list, "pynq.")),
        pynq_python=need(pynq, "python", str, "pynq."),
        pll_mhz=need(clocks, "pll_mhz", float, "clocks."),
        divisor_max=need(clocks, "divisor_max", int, "clocks."),
        fclk_min_mhz=need(clocks, "fclk_min_mhz", float, "clocks."),
        fclk_max_mhz=need(clocks, "fclk_max_mhz", float, "clocks."),
        hwh_device=data.get("hwh_device", ""),
        hwh_package=data.get("hwh_package", ""),
        hwh_speedgrade=data.get("hwh_speedgrade", ""),
        source=str(path),
    )
    if not 0 < board.fclk_min_mhz <= board.fclk0_mhz <= board.fclk_max_mhz <= board.pll_mhz:
        raise BoardError(f"{path}: fields clocks.fclk_min_mhz <= fclk0_mhz <= clocks.fclk_max_mhz <= "
                         f"clocks.pll_mhz do not hold ({board.fclk_min_mhz}, {board.fclk0_mhz}, "
                         f"{board.fclk_max_mhz}, {board.pll_mhz}), or one is <= 0")
    if not 1 <= board.divisor_max <= 63:
        raise BoardError(f"{path}: field clocks.divisor_max = {board.divisor_max} is outside 1..63 "
                         "(the PS's clock dividers are 6-bit)")
    return board


__all__ = ["Board", "BoardError", "BOARD_FILES", "RESOURCE_KEYS", "known_boards", "load_board",
           "load_board_file", "normalize_name"]
