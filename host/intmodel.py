"""The integer model: what ``flipq.hls`` lowers a QONNX graph into, and what the emulator,
the C++ kernels and the board all compute.

Every activation tensor is an integer array ``q`` with a power-of-two scale: the real value
is ``q * 2**exp``. Layers (channels-last, NHWC):

- ``conv``: integer weights ``(kh, kw, cin, cout)``, stride, pads ``(top, left, bottom, right)``,
  weight exponent; optional integer bias at the accumulator's scale.
- ``dense``: integer weights ``(fan_in, fan_out)``, weight exponent, optional bias.
- ``requant``: optional ReLU, then round-half-to-even to ``bits`` at exponent ``exp``,
  saturating (signed or unsigned, narrow or not). This is QONNX ``Quant`` with ``ROUND``.
- ``threshold``: integer thresholds per output channel (FINN's MultiThreshold): the output is
  ``qmin + #{k : s_c * acc >= T[c, k]}`` with ``s_c = -1`` for the channels in ``descending``,
  else ``+1``. It computes a quantizer after any monotone float function of the accumulator
  (bias, float or per-channel scales, BatchNorm, ReLU) exactly; ``flipq.hls.thresholds``
  derives ``T`` from the float32 function QONNX evaluates. ``quant`` gives the output range;
  its ``exp`` is the output's grid in the C++ graph (0 where the real scale, ``scale``, is no
  power of two: the next threshold absorbs it).
- ``maxpool``: kernel, stride and, optionally, pads ``(top, left, bottom, right)`` (a padded
  cell never wins; lowering pads only tensors with no negative value).
- ``flatten``: NHWC -> (N, H*W*C).
- ``add``: the element-wise sum of two integer tensors of one shape (a residual connection), on
  the finer of their two grids: ``a << (exp_a - exp) + b << (exp_b - exp)`` with
  ``exp = min(exp_a, exp_b)``; exact, no rounding.
- ``concat``: two or more tensors joined on the channels (the last axis), each moved onto the finest
  of their grids the same way; tensors on one float grid (``scale``, after threshold layers of one
  float scale) join unshifted.

The model is a graph whose layers are in topological order. A layer reads the output of the
layer before it (the first layer: the model's input) unless ``attrs["inputs"]`` lists the
indices of the layers it reads (``-1``: the model's input), as an ``add`` always does and as the
first layer of a branch does. A chain has no ``inputs`` anywhere; the last layer's output is the
model's output.

Around the integer layers, two float steps run on the host: ``input_affine`` (elementwise float32
ops before the input quantizer, e.g. FINN's ``2 * x - 1``), exact because they are the same IEEE
float32 operations the reference runs; and ``output_affine`` (per output channel ``scale``,
``bias``: the float tail after the last MAC layer, e.g. BatchNorm or FINN's TensorNorm),
evaluated in float64 — docs/datapath.md states the bound against the float32 reference.

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
from flipq.host.names import check_layer_name

# 2: layers may name their inputs (a graph); format-1 files are chains and still load
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
MAC_OPS = ("conv", "dense")
# how many tensors each op reads: (least, most); one for every op not listed
ARITY = {"add": (2, 2), "concat": (2, 64)}
AFFINE_OPS = ("mul", "div", "add", "sub")


def outputs_agree(a: np.ndarray, b: np.ndarray, bound) -> np.ndarray:
    """Per row: ``a`` and ``b`` equal (``bound`` 0), or within ``bound`` (per output channel, see
    :meth:`IntModel.output_bound`). Within the bound the argmax can differ only on a near tie
    (if ``|a - b| <= bound`` and the picks ``i != j``, then ``|a_i - a_j| <= 2 * bound``), where
    float32 rounding alone decides which class wins."""
    n = len(a)
    a, b = np.asarray(a, dtype=np.float64).reshape(n, -1), np.asarray(b, dtype=np.float64).reshape(n, -1)
    if a.shape != b.shape:
        return np.zeros(n, dtype=bool)
    return (np.abs(a - b) <= np.asarray(bound, dtype=np.float64)).all(axis=1)


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
    thresholds: np.ndarray | None = None  # (channels, levels - 1) int64, ascending per row

    @property
    def is_mac(self) -> bool:
        return self.op in MAC_OPS

    @property
    def requant(self) -> QuantSpec | None:
        return QuantSpec.from_dict(self.attrs["quant"]) if self.op == "requant" else None

    @property
    def out_quant(self) -> QuantSpec | None:
        """The quantizer a ``requant`` or ``threshold`` layer produces values of."""
        return QuantSpec.from_dict(self.attrs["quant"]) if self.op in ("requant", "threshold") else None

    @property
    def signs(self) -> np.ndarray:
        """A threshold layer's per-channel sign of the accumulator (+1, or -1 where descending)."""
        s = np.ones(len(self.thresholds), dtype=np.int64)
        s[list(self.attrs.get("descending", []))] = -1
        return s


# the layouts users feed: NCHW (images), NCL (1-D signals, held as H = 1), NC (vectors), NHWC
INPUT_LAYOUTS = ("NCHW", "NCL", "NC", "NHWC")


@dataclass
class IntModel:
    """A feed-forward integer network; ``input_shape`` is channels-last without batch."""

    input_shape: tuple[int, ...]
    input_quant: QuantSpec
    layers: list[IntLayer]
    output_exp: int
    plan: BitPlan | None = None
    input_layout: str = "NCHW"  # the layout users feed (the torch model's own): INPUT_LAYOUTS
    input_affine: list = field(default_factory=list)  # [(op, float)], op in AFFINE_OPS, float32
    output_affine: dict | None = None  # {"scale": [C], "bias": [C], "bound": [C]} floats, "relu": bool

    def __post_init__(self):
        if self.input_layout not in INPUT_LAYOUTS:
            raise ValueError(f"input_layout {self.input_layout!r} is not one of {INPUT_LAYOUTS}")
        for i, layer in enumerate(self.layers):
            _check_layer_names(layer.name, layer.attrs, "integer model", f"layers[{i}]")
        _check_graph(self.layers, "integer model")
        self.input_affine = [(str(op), float(v)) for op, v in self.input_affine]
        for op, v in self.input_affine:
            if op not in AFFINE_OPS:
                raise ValueError(f"input_affine op {op!r}: expected one of {', '.join(AFFINE_OPS)}")

    def user_input_shape(self) -> tuple[int, ...]:
        """One sample as users feed it: (C, H, W) for NCHW models, (C, L) for 1-D (NCL) ones
        (held as H = 1 channels-last), else ``input_shape``."""
        s = tuple(self.input_shape)
        if self.input_layout == "NCHW" and len(s) == 3:
            return (s[2], s[0], s[1])
        if self.input_layout == "NCL" and len(s) == 3:
            return (s[2], s[1])
        return s

    def to_channels_last(self, x: np.ndarray) -> np.ndarray:
        """A batch in the user's layout -> the channels-last batch the datapath reads."""
        if self.input_layout == "NCHW" and x.ndim == 4:
            return x.transpose(0, 2, 3, 1)
        if self.input_layout == "NCL" and x.ndim == 3:
            return x.transpose(0, 2, 1)[:, None]
        return x

    def apply_input_affine(self, x: np.ndarray) -> np.ndarray:
        """The float32 elementwise ops before the input quantizer, in the reference's order."""
        if not self.input_affine:
            return x
        x = np.asarray(x, dtype=np.float32)
        for op, v in self.input_affine:
            c = np.float32(v)
            x = {"mul": np.multiply, "div": np.divide, "add": np.add, "sub": np.subtract}[op](x, c)
        return x

    def output_bound(self) -> np.ndarray | float:
        """Per output channel, the most :meth:`to_real` may differ from the float32 reference
        (QONNX execution, torch): 0 without an output affine (exact), else the bound lowering
        recorded, ``(K + 8) * 2**-24 * (|scale| * max|acc| + |bias|)`` (docs/datapath.md)."""
        if self.output_affine is None:
            return 0.0
        return np.asarray(self.output_affine.get("bound", 0.0), dtype=np.float64)

    def to_real(self, q: np.ndarray) -> np.ndarray:
        """Integer outputs -> real outputs: ``q * 2**output_exp``, then the output affine."""
        y = np.asarray(q).astype(np.float64) * 2.0**self.output_exp
        if self.output_affine is not None:
            y = y * np.asarray(self.output_affine["scale"], dtype=np.float64) + \
                np.asarray(self.output_affine["bias"], dtype=np.float64)
            if self.output_affine.get("relu"):
                y = np.maximum(y, 0.0)
            if self.output_affine.get("float32"):  # q * scale, rounded once as float32 computes it
                y = y.astype(np.float32).astype(np.float64)
        return y

    def inputs_of(self, index: int) -> list[int]:
        """The indices of the layers layer ``index`` reads (``-1``: the model's input)."""
        given = self.layers[index].attrs.get("inputs")
        return [int(i) for i in given] if given is not None else [index - 1]

    @property
    def is_chain(self) -> bool:
        """Every layer reads the one before it: no branch anywhere."""
        return not any("inputs" in layer.attrs for layer in self.layers)

    def readers(self) -> dict[int, int]:
        """Layer index (``-1``: the input) -> how many layers read its output (a fork: 2 or more)."""
        count: dict[int, int] = {}
        for i in range(len(self.layers)):
            for j in self.inputs_of(i):
                count[j] = count.get(j, 0) + 1
        return count

    def last_uses(self) -> dict[int, int]:
        """Layer index (``-1``: the input) -> the index of the last layer that reads it: when
        an executor may drop a tensor."""
        last = {}
        for i in range(len(self.layers)):
            for j in self.inputs_of(i):
                last[j] = i
        return last

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
            if layer.thresholds is not None:
                arrays[f"t{i}"] = layer.thresholds
                entry["thresholds"] = f"t{i}"
            layers.append(entry)
        meta = {
            "format": FORMAT_VERSION,
            "input_shape": list(self.input_shape),
            "input_layout": self.input_layout,
            "input_quant": self.input_quant.to_dict(),
            "output_exp": self.output_exp,
            "input_affine": [list(a) for a in self.input_affine],
            "output_affine": self.output_affine,
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
    def load(cls, folder: str | Path, *, _restamping: bool = False) -> "IntModel":
        folder = Path(folder)
        jpath, npath = folder / "intmodel.json", folder / "intmodel.npz"
        for p in (jpath, npath):
            if not p.is_file():
                raise FileNotFoundError(f"integer model file not found: {p}")
        try:
            meta = json.loads(jpath.read_text())
        except ValueError as e:
            raise ValueError(f"{jpath}: corrupt integer model ({e})") from e
        found = meta.get("format") if isinstance(meta, dict) else None
        if isinstance(found, bool) or found not in READABLE_FORMATS:
            raise ValueError(f"{jpath}: format {found!r}, this flipq reads {' and '.join(map(str, READABLE_FORMATS))} "
                             f"(a newer flipq wrote it: rerun `flipq hls` with this one, or upgrade)")
        entries = meta.get("layers")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError(f"{jpath}: field 'layers' must be a list of layer objects")
        for i, e in enumerate(entries):  # before any name reaches a message, a generator or the C++
            _check_layer_names(e.get("name"), e.get("attrs"), str(jpath), f"layers[{i}]")
            if found == 1 and isinstance(e.get("attrs"), dict) and "inputs" in e["attrs"]:
                raise ValueError(f"{jpath}: layers[{i}].attrs.inputs in a format-1 file (a chain): a graph is "
                                 "format 2; the file was edited")
        _check_graph([_Shape(e.get("op"), e.get("attrs")) for e in entries], str(jpath))
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
                    thresholds=arrays[e["thresholds"]] if "thresholds" in e else None,
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
                input_affine=meta.get("input_affine") or [],
                output_affine=meta.get("output_affine"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{jpath}: malformed integer model ({type(e).__name__}: {e})") from e
        recorded = meta.get("digest")
        if recorded is None and not _restamping:
            raise ValueError(f"{jpath}: field 'digest' is missing, so nothing shows the model is as `flipq hls` "
                             "wrote it; rerun `flipq hls` (or, for a folder flipq wrote itself before digests, "
                             f"`python -m flipq.host.intmodel --restamp {folder}`)")
        if recorded is not None and recorded != model.digest():
            show = recorded[:12] if isinstance(recorded, str) else repr(recorded)
            raise ValueError(f"{jpath}: the integer model was changed after `flipq hls` wrote it (recorded "
                             f"hash {show}..., content {model.digest()[:12]}...); rerun `flipq hls`")
        return model

    @classmethod
    def restamp(cls, folder: str | Path) -> str:
        """Write the digest into an ``intmodel.json`` that lacks one (flipq wrote none before
        digests were recorded) and return it. Only for a folder *you* built: the digest then
        vouches for whatever the file holds now."""
        folder = Path(folder)
        model = cls.load(folder, _restamping=True)
        jpath = folder / "intmodel.json"
        meta = json.loads(jpath.read_text())
        if meta.get("digest") is not None:
            raise ValueError(f"{jpath}: already has a digest; nothing to restamp")
        meta["digest"] = model.digest()
        write_json(jpath, meta)
        return meta["digest"]

    def digest(self) -> str:
        """SHA-256 over structure and integer weights: the model hash accel.json carries."""
        h = hashlib.sha256()
        head = {"in": list(self.input_shape), "q": self.input_quant.to_dict(), "o": self.output_exp,
                "l": [(lay.op, lay.name, lay.attrs) for lay in self.layers], "layout": self.input_layout,
                "plan": self.plan.to_dict() if self.plan else None}
        if self.input_affine or self.output_affine:  # absent keys keep older models' hashes
            head.update(ia=[list(a) for a in self.input_affine], oa=self.output_affine)
        h.update(json.dumps(head, sort_keys=True).encode())
        for lay in self.layers:
            for arr in (lay.weight, lay.bias, lay.thresholds):
                if arr is not None:
                    h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        return h.hexdigest()


@dataclass
class _Shape:
    op: object
    attrs: object


def _check_graph(layers, source: str) -> None:
    """Every layer reads earlier layers only (topological order), as many as its op takes, and
    every layer's output is read by a later one except the last (the model's output)."""
    used = set()
    for i, layer in enumerate(layers):
        attrs = layer.attrs if isinstance(layer.attrs, dict) else {}
        least, most = ARITY.get(layer.op, (1, 1))
        given = attrs.get("inputs")
        if given is None:
            if least != 1:
                raise ValueError(f"{source}: layers[{i}] ({layer.op}) reads {least} or more tensors but names no "
                                 "inputs")
            used.add(i - 1)
            continue
        count = f"{least}" if least == most else f"{least} to {most}"
        if (not isinstance(given, list) or not least <= len(given) <= most
                or not all(isinstance(j, int) and not isinstance(j, bool) and -1 <= j < i for j in given)):
            raise ValueError(f"{source}: layers[{i}].attrs.inputs = {given!r}: expected {count} index(es) of "
                             f"earlier layers (-1 .. {i - 1}; -1 is the model's input)")
        used.update(given)
    unread = sorted(set(range(len(layers) - 1)) - used)
    if unread:
        raise ValueError(f"{source}: the output of layers[{unread[0]}] is read by no later layer (only the last "
                         "layer's output leaves the model)")


def _check_layer_names(name, attrs, source: str, where: str) -> None:
    """A layer's name and the ONNX node names it records (``onnx_node``, ``chain``) match the
    one layer-name pattern (:mod:`flipq.host.names`)."""
    check_layer_name(name, source, f"{where}.name")
    if not isinstance(attrs, dict):
        return
    if "onnx_node" in attrs:
        check_layer_name(attrs["onnx_node"], source, f"{where}.attrs.onnx_node")
    chain = attrs.get("chain", [])
    for node in chain if isinstance(chain, list) else [chain]:
        check_layer_name(node, source, f"{where}.attrs.chain")


def _main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m flipq.host.intmodel",
                                description="record the digest of an integer model flipq wrote before digests")
    p.add_argument("--restamp", required=True, metavar="FOLDER", help="the folder holding intmodel.json")
    args = p.parse_args(argv)
    print(f"{args.restamp}/intmodel.json: digest {IntModel.restamp(args.restamp)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
