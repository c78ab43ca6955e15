"""The integer model: what ``flipq.hls`` lowers a QONNX graph into, and what the emulator,
the C++ kernels and the board all compute.

Every activation tensor is an integer array ``q`` with a power-of-two scale: the real value
is ``q * 2**exp``. Layers (channels-last, NHWC):

- ``conv``: integer weights ``(kh, kw, cin, cout)``, stride, pads ``(top, left, bottom, right)``,
  weight exponent; optional integer bias at the accumulator's scale.
- ``dense``: integer weights ``(fan_in, fan_out)``, weight exponent, optional bias.
- ``requant``: optional ReLU, then round-half-to-even to ``bits`` at exponent ``exp``,
  saturating (signed or unsigned, narrow or not). This is QONNX ``Quant`` with ``ROUND``.
- ``maxpool``: kernel and stride.
- ``flatten``: NHWC -> (N, H*W*C).

Stored as ``intmodel.json`` (structure) + ``intmodel.npz`` (arrays). Needs numpy only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flipq.host.bitplan import BitPlan
from flipq.host.files import replacing, write_json

FORMAT_VERSION = 1
MAC_OPS = ("conv", "dense")


@dataclass(frozen=True)
class QuantSpec:
    """A uniform quantizer with a power-of-two scale: value = q * 2**exp."""

    bits: int
    signed: bool
    narrow: bool
    exp: int

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        # QONNX's max_int: a narrow unsigned quantizer drops its top level, as a narrow signed
        # one drops its bottom level
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1 - int(self.narrow)

    def to_dict(self) -> dict:
        return {"bits": self.bits, "signed": self.signed, "narrow": self.narrow, "exp": self.exp}

    @classmethod
    def from_dict(cls, d: dict) -> "QuantSpec":
        return cls(int(d["bits"]), bool(d["signed"]), bool(d["narrow"]), int(d["exp"]))

    def fixed_type(self) -> str:
        """The exact ap_fixed/ap_ufixed type holding this quantizer's values."""
        integer = self.bits + self.exp
        return f"{'fixed' if self.signed else 'ufixed'}<{self.bits},{integer}>"


@dataclass
class IntLayer:
    op: str
    name: str
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None

    @property
    def is_mac(self) -> bool:
        return self.op in MAC_OPS

    @property
    def requant(self) -> QuantSpec | None:
        return QuantSpec.from_dict(self.attrs["quant"]) if self.op == "requant" else None


@dataclass
class IntModel:
    """A feed-forward integer network; ``input_shape`` is channels-last without batch."""

    input_shape: tuple[int, ...]
    input_quant: QuantSpec
    layers: list[IntLayer]
    output_exp: int
    plan: BitPlan | None = None
    input_layout: str = "NCHW"  # the layout users feed (the torch model's own)

    @property
    def mac_layers(self) -> list[IntLayer]:
        return [layer for layer in self.layers if layer.is_mac]

    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.attrs_of_last("out_shape"))

    def max_planes(self) -> int:
        """The most weight bit-planes any MAC layer stores: the largest useful ``planes``."""
        bits = [int(layer.attrs.get("weight_bits", 0)) for layer in self.mac_layers]
        if self.plan is not None:
            bits += [lb.max_weight_bits for lb in self.plan]
        return max([b for b in bits if b] or [8])

    def attrs_of_last(self, key):
        return self.layers[-1].attrs[key]

    # -- persistence --------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        layers = []
        for i, layer in enumerate(self.layers):
            entry = {"op": layer.op, "name": layer.name, "attrs": layer.attrs}
            if layer.weight is not None:
                arrays[f"w{i}"] = layer.weight
                entry["weight"] = f"w{i}"
            if layer.bias is not None:
                arrays[f"b{i}"] = layer.bias
                entry["bias"] = f"b{i}"
            layers.append(entry)
        meta = {
            "format": FORMAT_VERSION,
            "input_shape": list(self.input_shape),
            "input_layout": self.input_layout,
            "input_quant": self.input_quant.to_dict(),
            "output_exp": self.output_exp,
            "layers": layers,
            "plan": self.plan.to_dict() if self.plan else None,
            # what load() checks, so an edited file (an output_exp, a weight) cannot run unnoticed
            "digest": self.digest(),
        }
        with replacing(folder / "intmodel.npz") as tmp:
            np.savez(tmp, **arrays)
        write_json(folder / "intmodel.json", meta)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "IntModel":
        folder = Path(folder)
        jpath, npath = folder / "intmodel.json", folder / "intmodel.npz"
        for p in (jpath, npath):
            if not p.is_file():
                raise FileNotFoundError(f"integer model file not found: {p}")
        try:
            meta = json.loads(jpath.read_text())
        except ValueError as e:
            raise ValueError(f"{jpath}: corrupt integer model ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"{jpath}: format {found!r}, expected {FORMAT_VERSION}")
        try:
            arrays = dict(np.load(npath))
        except Exception as e:  # zipfile/pickle errors differ by numpy version
            raise ValueError(f"{npath}: corrupt integer model arrays ({e})") from e
        try:
            layers = [
                IntLayer(
                    op=e["op"],
                    name=e["name"],
                    attrs=e["attrs"],
                    weight=arrays[e["weight"]] if "weight" in e else None,
                    bias=arrays[e["bias"]] if "bias" in e else None,
                )
                for e in meta["layers"]
            ]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{jpath}: malformed integer model ({type(e).__name__}: {e})") from e
        try:
            model = cls(
                input_shape=tuple(meta["input_shape"]),
                input_quant=QuantSpec.from_dict(meta["input_quant"]),
                layers=layers,
                output_exp=int(meta["output_exp"]),
                plan=BitPlan.from_dict(meta["plan"]) if meta.get("plan") else None,
                input_layout=meta.get("input_layout", "NCHW"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{jpath}: malformed integer model ({type(e).__name__}: {e})") from e
        recorded = meta.get("digest")
        if recorded is not None and recorded != model.digest():
            raise ValueError(f"{jpath}: the integer model was changed after `flipq hls` wrote it (recorded "
                             f"hash {recorded[:12]}..., content {model.digest()[:12]}...); rerun `flipq hls`")
        return model

    def digest(self) -> str:
        """SHA-256 over structure and integer weights: the model hash accel.json carries."""
        h = hashlib.sha256()
        h.update(json.dumps(
            {"in": list(self.input_shape), "q": self.input_quant.to_dict(), "o": self.output_exp,
             "l": [(lay.op, lay.name, lay.attrs) for lay in self.layers], "layout": self.input_layout,
             "plan": self.plan.to_dict() if self.plan else None}, sort_keys=True).encode())
        for lay in self.layers:
            for arr in (lay.weight, lay.bias):
                if arr is not None:
                    h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        return h.hexdigest()

