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
from flipq.host.packing import PackingError, PackingSpec

FORMAT_VERSION = 1
USER_LAYOUTS = ("NCHW", "NC", "NHWC")
DEFAULT_IP_NAME = "flipq_accel_0"
DEFAULT_IP_VLNV = "flipq.org:hls:flipq_top:1.0"
DEFAULT_DMA_NAME = "axi_dma_0"
DEFAULT_CONTROL = {"ap_ctrl": 0x00, "n_samples": 0x18}
DEFAULT_PLANES_OFFSET = 0x10


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
        plan = r.get("plan", (dict, type(None)))
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
                      r.int("ip.planes_offset", 0), dict(control)),
            max_planes=r.int("max_planes", 1, 8),
            max_batch=r.int("max_batch", 1),
            plan=plan,
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

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_intmodel(cls, model: IntModel, board, *, max_batch: int = 1024,
                      dma_name: str = DEFAULT_DMA_NAME, ip_name: str = DEFAULT_IP_NAME,
                      ip_vlnv: str = DEFAULT_IP_VLNV, output_bits: int | None = None,
                      fclk_mhz: float | None = None) -> "AccelMeta":
        """The metadata of ``model`` built for ``board`` (a :class:`flipq.boards.Board`).

        The DMA length width is the narrowest that carries ``max_batch`` samples in one
        transfer, capped at the board's limit (then ``max_batch`` shrinks to fit).
        """
        if max_batch < 1:
            raise AccelMetaError(f"max_batch = {max_batch} must be >= 1")
        word_bits = int(board.dma_data_width)
        in_q = model.input_quant
        in_pack = PackingSpec(in_q.bits, in_q.signed, word_bits)
        acc_bits, acc_signed, out_exp = output_range_bits(model)
        if output_bits is None:
            output_bits = next((b for b in (8, 16, 32) if b >= acc_bits), None)
            if output_bits is None:
                raise AccelMetaError(f"the output needs {acc_bits}-bit accumulators; flipq's output "
                                     "stream carries at most 32 bits per value")
        if output_bits < acc_bits:
            raise AccelMetaError(f"output_bits = {output_bits} is narrower than the {acc_bits}-bit "
                                 "output accumulators")
        out_pack = PackingSpec(output_bits, acc_signed, word_bits)
        in_shape = tuple(int(d) for d in model.input_shape)
        out_shape = tuple(int(d) for d in model.output_shape())
        per_sample = max(in_pack.bytes_per_sample(int(np.prod(in_shape))),
                         out_pack.bytes_per_sample(int(np.prod(out_shape))))
        cap = int(board.dma_max_length_width)
        if per_sample > (1 << cap) - 1:
            raise AccelMetaError(f"one sample is {per_sample} bytes, more than the {board.name} DMA "
                                 f"can move in one transfer ({(1 << cap) - 1} bytes)")
        max_batch = min(max_batch, ((1 << cap) - 1) // per_sample)
        length_width = max(8, (max_batch * per_sample).bit_length())
        layout = model.input_layout if model.input_layout in USER_LAYOUTS else "NCHW"
        return cls(
            model_hash=model.digest(),
            board=board.name,
            fclk_mhz=float(fclk_mhz if fclk_mhz is not None else board.fclk0_mhz),
            input=InputMeta(in_shape, layout, in_q, in_pack),
            output=OutputMeta(out_shape, out_exp, acc_bits, acc_signed, out_pack),
            dma=DmaMeta(dma_name, length_width, (1 << length_width) - 1, word_bits),
            ip=IpMeta(ip_name, ip_vlnv),
            max_planes=max_planes(model),
            max_batch=max_batch,
            plan=model.plan.to_dict() if model.plan is not None else None,
        )


def max_planes(model: IntModel) -> int:
    """The most weight bit-planes any MAC layer stores: the largest useful ``planes``."""
    bits = [int(layer.attrs.get("weight_bits", 0)) for layer in model.mac_layers]
    if model.plan is not None:
        bits += [lb.max_weight_bits for lb in model.plan]
    return max([b for b in bits if b] or [8])


def output_range_bits(model: IntModel) -> tuple[int, bool, int]:
    """(bits, signed, exp) of the model's output values, safe for every ``planes`` setting.

    The output is either a requantizer's output or the last MAC layer's accumulators; for the
    latter the bound follows the weights: truncating planes moves a weight toward minus
    infinity, down to ``-2**(B-1)`` at most, so each weight ranges over ``[trunc1(w), w]``.
    """
    lo, hi = model.input_quant.qmin, model.input_quant.qmax
    exp = model.input_quant.exp
    signed = model.input_quant.signed
    bits = model.input_quant.bits
    for layer in model.layers:
        a = layer.attrs
        if layer.is_mac:
            w = np.asarray(layer.weight, dtype=np.int64)
            w = w.reshape(-1, w.shape[-1])
            b = int(a.get("weight_bits", 8))
            w_low = np.minimum(w, (w >> (b - 1)) << (b - 1))
            corners = np.stack([w_low * lo, w_low * hi, w * lo, w * hi])
            acc_hi = corners.max(axis=0).sum(axis=0)
            acc_lo = corners.min(axis=0).sum(axis=0)
            if layer.bias is not None:
                bias = np.asarray(layer.bias, dtype=np.int64).reshape(-1)
                acc_hi, acc_lo = acc_hi + bias, acc_lo + bias
            lo, hi = int(acc_lo.min(initial=0)), int(acc_hi.max(initial=0))
            exp += int(a["w_exp"])
            signed = True
            bits = max(hi.bit_length(), (-lo - 1).bit_length() if lo < 0 else 0) + 1
        elif layer.op == "requant":
            spec = layer.requant
            lo, hi, exp, signed, bits = spec.qmin, spec.qmax, spec.exp, spec.signed, spec.bits
        elif layer.op == "relu":
            lo = max(lo, 0)
    return max(bits, 2), signed, exp


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
