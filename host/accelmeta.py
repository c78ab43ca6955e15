"""accel.json: everything the host needs to drive one overlay, and nothing else.

Written by ``flipq.overlays`` beside ``flipq.bit``/``flipq.hwh``; read on the board with the
standard library and numpy only (Python 3.10).

>>> meta = AccelMeta.load("overlay/accel.json")             # doctest: +SKIP
>>> meta.input.shape, meta.dma.max_transfer_bytes           # doctest: +SKIP

The accelerator's AXI-lite map (``ip``) follows Vitis HLS's ``s_axilite`` layout for a top
function with ``ap_ctrl_hs`` on the control bundle: ``ap_ctrl`` at 0x00 (bit 0 ap_start,
bit 1 ap_done, bit 2 ap_idle), then one 32-bit argument per 8 bytes from 0x10 (``planes``,
then ``n_samples``: the number of samples in the next stream, after whose last output word
the IP raises TLAST so the S2MM transfer ends).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from flipq.host.intmodel import IntModel, QuantSpec
from flipq.host.names import UnsafeNameError, check_layer_name
from flipq.host.packing import PackingError, PackingSpec

FORMAT_VERSION = 1
USER_LAYOUTS = ("NCHW", "NCL", "NC", "NHWC")
DEFAULT_IP_NAME = "flipq_accel_0"
DEFAULT_IP_VLNV = "flipq.org:hls:flipq_top:1.0"
DEFAULT_DMA_NAME = "axi_dma_0"
DEFAULT_CONTROL = {"ap_ctrl": 0x00, "n_samples": 0x18}
DEFAULT_PLANES_OFFSET = 0x10
# The s_axilite control map Vitis HLS gives flipq_top (C_S_AXI_CONTROL_ADDR_WIDTH = 6, as the
# overlay's .hwh says): every register offset lies below it.
CONTROL_MAP_BYTES = 0x40


class AccelMetaError(ValueError):
    """accel.json is missing a field or holds a bad value; the message names file and field."""


@dataclass(frozen=True)
class InputMeta:
    shape: tuple[int, ...]  # channels-last (NHWC / NC) without batch: what the datapath sees
    user_layout: str  # the layout users feed (the torch model's own)
    quant: QuantSpec
    packing: PackingSpec

    @property
    def n_elems(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class OutputMeta:
    shape: tuple[int, ...]
    exp: int  # real value = acc * 2**exp
    acc_bits: int
    acc_signed: bool
    packing: PackingSpec

    @property
    def n_elems(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class DmaMeta:
    name: str
    length_width: int  # AXI DMA c_sg_length_width
    max_transfer_bytes: int  # 2**length_width - 1: the LENGTH register's largest value
    data_width: int = 32


@dataclass(frozen=True)
class IpMeta:
    name: str
    vlnv: str
    planes_offset: int = DEFAULT_PLANES_OFFSET
    control: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_CONTROL))


@dataclass(frozen=True)
class AccelMeta:
    model_hash: str
    board: str
    fclk_mhz: float
    input: InputMeta
    output: OutputMeta
    dma: DmaMeta
    ip: IpMeta
    max_planes: int
    max_batch: int  # rows per DMA transfer; host buffers are sized for this many
    plan: Mapping[str, Any] | None = None
    # the hardware plan the IP was built from, as flipq.hls modeled it (per layer SIMD, PE,
    # cycles; interval and fps at fclk): what `flipq bench` compares its measurement with
    hardware: Mapping[str, Any] | None = None
    format: int = FORMAT_VERSION

    # -- sizes ------------------------------------------------------------------------------
    @property
    def in_bytes_per_sample(self) -> int:
        return self.input.packing.bytes_per_sample(self.input.n_elems)

    @property
    def out_bytes_per_sample(self) -> int:
        return self.output.packing.bytes_per_sample(self.output.n_elems)

    @property
    def rows_per_transfer(self) -> int:
        """Samples per DMA transfer: bounded by the LENGTH register and ``max_batch``."""
        limit = self.dma.max_transfer_bytes // max(self.in_bytes_per_sample, self.out_bytes_per_sample)
        return max(0, min(self.max_batch, limit))

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "model_hash": self.model_hash,
            "board": self.board,
            "fclk_mhz": self.fclk_mhz,
            "input": {"shape": list(self.input.shape), "user_layout": self.input.user_layout,
                      "quant": self.input.quant.to_dict(), "packing": self.input.packing.to_dict()},
            "output": {"shape": list(self.output.shape), "exp": self.output.exp,
                       "acc_bits": self.output.acc_bits, "acc_signed": self.output.acc_signed,
                       "packing": self.output.packing.to_dict()},
            "dma": {"name": self.dma.name, "length_width": self.dma.length_width,
                    "max_transfer_bytes": self.dma.max_transfer_bytes,
                    "data_width": self.dma.data_width},
            "ip": {"name": self.ip.name, "vlnv": self.ip.vlnv, "planes_offset": self.ip.planes_offset,
                   "control": dict(self.ip.control)},
            "max_planes": self.max_planes,
            "max_batch": self.max_batch,
            "plan": self.plan,
            **({"hardware": self.hardware} if self.hardware is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_json(cls, text: str | Path, source: str = "accel.json") -> "AccelMeta":
        """Parse accel.json text (a :class:`~pathlib.Path` is read as the file; see :meth:`load`)."""
        if isinstance(text, Path):
            return cls.load(text)
        try:
            data = json.loads(text)
        except ValueError as e:
            raise AccelMetaError(f"{source}: not valid JSON ({e})") from e
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> "AccelMeta":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"accelerator metadata not found: {path}")
        return cls.from_json(path.read_text(), source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "accel.json") -> "AccelMeta":
        r = _Reader(data, source)
        fmt = r.int("format")
        if fmt != FORMAT_VERSION:
            raise AccelMetaError(f"{source}: field 'format' = {fmt}, this flipq reads {FORMAT_VERSION}")
        in_shape = r.shape("input.shape")
        layout = r.str("input.user_layout")
        if layout not in USER_LAYOUTS:
            raise AccelMetaError(f"{source}: field 'input.user_layout' = {layout!r}, "
                                 f"expected one of {USER_LAYOUTS}")
        quant = QuantSpec(r.int("input.quant.bits", 2, 32), r.bool("input.quant.signed"),
                          r.bool("input.quant.narrow"), r.int("input.quant.exp"))
        max_transfer = r.int("dma.max_transfer_bytes", 1)
        length_width = r.int("dma.length_width", 8, 26)
        if max_transfer != (1 << length_width) - 1:
            raise AccelMetaError(f"{source}: field 'dma.max_transfer_bytes' = {max_transfer} does not "
                                 f"match dma.length_width = {length_width} "
                                 f"(expected {(1 << length_width) - 1})")
        control = r.get("ip.control", dict)
        for k, v in control.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v % 4:
                raise AccelMetaError(f"{source}: field 'ip.control.{k}' = {v!r} is not a "
                                     "word-aligned register offset")
        for k in DEFAULT_CONTROL:
            if k not in control:
                raise AccelMetaError(f"{source}: missing field 'ip.control.{k}'")
        planes_offset = r.int("ip.planes_offset", 0)
        _check_register_map(source, {**{f"ip.control.{k}": v for k, v in control.items()},
                                     "ip.planes_offset": planes_offset})
        plan = r.get("plan", (dict, type(None)))
        hardware = r.get("hardware", (dict, type(None))) if "hardware" in r.data else None  # optional
        try:
            _check_names(source, plan, hardware)
            for what in ("ip.name", "dma.name"):  # pynq looks them up as attributes of the overlay
                check_layer_name(r.str(what), source, what)
        except UnsafeNameError as e:
            raise AccelMetaError(str(e)) from None
        meta = cls(
            format=fmt,
            model_hash=r.str("model_hash"),
            board=r.str("board"),
            fclk_mhz=r.float("fclk_mhz", positive=True),
            input=InputMeta(in_shape, layout, quant, r.packing("input.packing")),
            output=OutputMeta(r.shape("output.shape"), r.int("output.exp"),
                              r.int("output.acc_bits", 2, 64), r.bool("output.acc_signed"),
                              r.packing("output.packing")),
            dma=DmaMeta(r.str("dma.name"), length_width, max_transfer,
                        r.int("dma.data_width", 32, 64)),
            ip=IpMeta(r.str("ip.name"), r.str("ip.vlnv"),
                      planes_offset, dict(control)),
            max_planes=r.int("max_planes", 1, 8),
            max_batch=r.int("max_batch", 1),
            plan=plan,
            hardware=hardware,
        )
        if meta.input.packing.bits < quant.bits:
            raise AccelMetaError(f"{source}: field 'input.packing.bits' = {meta.input.packing.bits} is "
                                 f"narrower than the input quantizer's {quant.bits} bits")
        if meta.output.packing.bits < meta.output.acc_bits:
            raise AccelMetaError(f"{source}: field 'output.packing.bits' = {meta.output.packing.bits} "
                                 f"is narrower than output.acc_bits = {meta.output.acc_bits}")
        if meta.rows_per_transfer < 1:
            raise AccelMetaError(f"{source}: one sample ({max(meta.in_bytes_per_sample, meta.out_bytes_per_sample)}"
                                 f" bytes) exceeds dma.max_transfer_bytes = {max_transfer}")
        return meta

    # -- consistency --------------------------------------------------------------------------
    def check_against(self, model: IntModel, source: str = "accel.json") -> None:
        """Refuse an accel.json whose fields disagree with the integer model beside it.

        The model hash says which model the overlay was built for; the fields below are derived
        from that model, so an edited one (a lowered ``max_planes``, another input shape) would
        silently change what runs, or fail only deep inside a transfer.
        """
        if self.model_hash != model.digest():
            raise AccelMetaError(f"{source}: model_hash {self.model_hash[:16]}... does not match the integer "
                                 f"model beside it ({model.digest()[:16]}...); rebuild the overlay for this model")
        expected = {
            "input.shape": (tuple(self.input.shape), tuple(int(d) for d in model.input_shape)),
            "input.quant": (self.input.quant, model.input_quant),
            "output.shape": (tuple(self.output.shape), tuple(int(d) for d in model.output_shape())),
            "output.exp": (self.output.exp, model.output_exp),
            "max_planes": (self.max_planes, model.max_planes()),
        }
        for name, (have, want) in expected.items():
            if have != want:
                show = (lambda v: v.to_dict()) if name == "input.quant" else (lambda v: list(v) if isinstance(v, tuple) else v)
                raise AccelMetaError(f"{source}: field '{name}' = {show(have)} disagrees with the integer model "
                                     f"({show(want)}); the file was edited or belongs to another build: "
                                     "rebuild the overlay (flipq overlay build)")


def _check_register_map(source: str, offsets: dict[str, int]) -> None:
    """Every register offset word-aligned, inside the IP's control map, and no two the same: an
    ``n_samples`` at ``planes``' offset would overwrite the planes the host just set."""
    seen: dict[int, str] = {}
    for name, off in offsets.items():
        if off % 4 or not 0 <= off <= CONTROL_MAP_BYTES - 4:
            raise AccelMetaError(f"{source}: field '{name}' = 0x{off:X} is outside the IP's register map "
                                 f"(word-aligned 0x00..0x{CONTROL_MAP_BYTES - 4:02X}); rebuild the overlay")
        if off in seen:
            raise AccelMetaError(f"{source}: fields '{seen[off]}' and '{name}' share the register offset "
                                 f"0x{off:X}; rebuild the overlay")
        seen[off] = name


def _check_names(source: str, plan, hardware) -> None:
    """Layer names in ``plan`` and ``hardware`` match the one layer-name pattern."""
    layers = plan.get("layers") if isinstance(plan, dict) else None
    if isinstance(layers, dict):
        for name in layers:
            check_layer_name(name, source, "plan.layers")
    hw_layers = hardware.get("layers") if isinstance(hardware, dict) else None
    if isinstance(hw_layers, list):
        for i, entry in enumerate(hw_layers):
            if isinstance(entry, dict) and "name" in entry:
                check_layer_name(entry["name"], source, f"hardware.layers[{i}].name")


class _Reader:
    """Typed access to nested JSON fields with errors that name the file and field."""

    def __init__(self, data: Any, source: str):
        if not isinstance(data, dict):
            raise AccelMetaError(f"{source}: expected a JSON object at the top level")
        self.data, self.source = data, source

    def get(self, path: str, kinds):
        node = self.data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise AccelMetaError(f"{self.source}: missing field '{path}'")
            node = node[part]
        if not isinstance(node, kinds) or (isinstance(node, bool) and bool not in _as_tuple(kinds)):
            raise AccelMetaError(f"{self.source}: field '{path}' = {node!r} has the wrong type")
        return node

    def int(self, path: str, lo: int | None = None, hi: int | None = None) -> int:
        v = self.get(path, int)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise AccelMetaError(f"{self.source}: field '{path}' = {v} is outside "
                                 f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}")
        return v

    def float(self, path: str, positive: bool = False) -> float:
        v = float(self.get(path, (int, float)))
        if positive and not v > 0:
            raise AccelMetaError(f"{self.source}: field '{path}' = {v} must be > 0")
        return v

    def bool(self, path: str) -> bool:
        return self.get(path, bool)

    def str(self, path: str) -> str:
        v = self.get(path, str)
        if not v:
            raise AccelMetaError(f"{self.source}: field '{path}' is empty")
        return v

    def shape(self, path: str) -> tuple[int, ...]:
        v = self.get(path, list)
        if not v or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in v):
            raise AccelMetaError(f"{self.source}: field '{path}' = {v!r} is not a list of positive ints")
        return tuple(v)

    def packing(self, path: str) -> PackingSpec:
        try:
            return PackingSpec.from_dict(self.get(path, dict), where=f"{self.source}: field '{path}'")
        except PackingError as e:
            raise AccelMetaError(str(e)) from None


def _as_tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)
