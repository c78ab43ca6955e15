"""The network families flipq trains, as data: an architecture is a tuple of layer tokens,
``("conv", out_channels, kernel, padding)``, ``("pool", k)``, ``("fc", units)`` (``None``: one
unit per class). MAC layers are named ``conv1, conv2, ..., fc1, fc2, ...`` in order; those names
key the BitPlan. Standard library only: the command line lists the names without torch.

A MAC token may end with a dict of options (:data:`LAYER_OPTIONS`; a token without one means
the defaults, which are what every flipq network was before options existed):

- ``bias``: ``"none"``, ``"float"`` (a float bias) or ``"int32"`` (Brevitas ``Int32Bias``, on
  the accumulator's grid);
- ``bn``: a BatchNorm after the MAC layer (before its activation);
- ``weight_scale``: ``"pow2"`` (the ``--weight-scale`` rule, ``flipq.quant.scaling``),
  ``"float"`` (Brevitas ``Int8WeightPerTensorFloat``) or ``"per_channel"``
  (``Int8WeightPerChannelFloat``);
- ``act``: the quantizer after the layer, ``"relu"`` (QuantReLU), ``"signed"`` (a signed
  QuantIdentity) or ``"none"``; ``act_scale``: its scale, ``"pow2"`` or ``"float"``. Every
  hidden MAC layer has one (default ``"relu"``). The last MAC layer's default is ``"none"``: the
  network's output is its float output; ``"relu"``/``"signed"`` there add an output quantizer of
  :data:`OUTPUT_BITS` (the BitPlan holds no width for it).

>>> mac_names(get_arch("digits-cnn"))
['conv1', 'fc1', 'fc2']
>>> default_plan("mlp", 2, 4)["fc1"].weight_bits
2
>>> layer_options(("conv", 8, 3, 1, {"bn": True}))["bias"]
'none'
>>> pow2_weight_violations(get_arch("digits-cnn-bn"))[0]
('conv1', 'per_channel')
"""

from __future__ import annotations

from flipq.host.bitplan import BitPlan, LayerBits


class UnknownArchError(ValueError):
    """An architecture name that is not in :data:`ARCHS`."""


Arch = tuple[tuple, ...]

_BN_CONV = ("conv", 16, 3, 0, {"bias": "int32", "bn": True, "weight_scale": "per_channel", "act_scale": "float"})
_BN_FC = ("fc", 32, {"bias": "float", "bn": True, "weight_scale": "float", "act": "signed", "act_scale": "float"})
_BN_OUT = {"bias": "float", "bn": True, "weight_scale": "float"}

ARCHS: dict[str, Arch] = {
    # The demo network: one conv, two dense, sized so hls4ml's C-sim compiles in seconds.
    "digits-cnn": (("conv", 16, 3, 0), ("pool", 2), ("fc", 32), ("fc", None)),
    "mlp": (("fc", 256), ("fc", 128), ("fc", None)),
    # VGG-9-like: 6 conv (3 blocks of 2) + 3 dense, for 28x28x1 and 32x32x3 inputs.
    "vgg9": (("conv", 32, 3, 1), ("conv", 32, 3, 1), ("pool", 2),
             ("conv", 64, 3, 1), ("conv", 64, 3, 1), ("pool", 2),
             ("conv", 128, 3, 1), ("conv", 128, 3, 1), ("pool", 2),
             ("fc", 256), ("fc", 256), ("fc", None)),
    "vgg9-small": (("conv", 16, 3, 1), ("conv", 16, 3, 1), ("pool", 2),
                   ("conv", 32, 3, 1), ("conv", 32, 3, 1), ("pool", 2),
                   ("conv", 64, 3, 1), ("conv", 64, 3, 1), ("pool", 2),
                   ("fc", 128), ("fc", 128), ("fc", None)),
    # digits-cnn's shape with what users' Brevitas models have and flipq's others lack: biases
    # (a quantized one on the conv, float ones on the dense layers), BatchNorm after every MAC
    # layer, float and per-channel scales, a signed activation, and a float output (BatchNorm1d).
    "digits-cnn-bn": (_BN_CONV, ("pool", 2), _BN_FC, ("fc", None, _BN_OUT)),
    # The same ending in a signed 8-bit output quantizer: torch and onnxruntime evaluate a float
    # BatchNorm in different float32 operation orders, so only a quantized output can be equal
    # bit for bit at every stage.
    "digits-cnn-bn-qout": (_BN_CONV, ("pool", 2), _BN_FC, ("fc", None, dict(_BN_OUT, act="signed", act_scale="float"))),
    # VGG-style for Fashion-MNIST on a 2-core CPU (benchmarks/reproduce_mpq.py): pooling after
    # the first conv keeps the 28x28 stage to 16 channels, ~1.6x faster than vgg9-small.
    "vgg7-fm": (("conv", 16, 3, 1), ("pool", 2),
                ("conv", 32, 3, 1), ("conv", 32, 3, 1), ("pool", 2),
                ("conv", 64, 3, 1), ("conv", 64, 3, 1), ("pool", 2),
                ("fc", 128), ("fc", None)),
}

# Graph networks (residual adds, depthwise convs, global pooling): the MLPerf Tiny models, built
# by ``flipq.quant.mlperf``, not from tokens. Their MAC layers are named by module path (what the
# export records for each node, so lowering matches a plan to them by name, whatever order the
# graph walks its branches in).
GRAPH_ARCHS: dict[str, tuple[str, ...]] = {
    "resnet8": ("stem", "s1.c1", "s1.c2", "s2.c1", "s2.c2", "s2.proj", "s3.c1", "s3.c2", "s3.proj", "fc"),
    "ds_cnn": ("stem",) + tuple(f"blocks.{i}.{k}" for i in range(4) for k in ("dw", "pw")) + ("head.fc",),
    "mobilenet_v1": ("stem",) + tuple(f"blocks.{i}.{k}" for i in range(13) for k in ("dw", "pw")) + ("head.fc",),
}

# Demo default: mixed precision with at least three distinct widths.
DEFAULT_PLANS: dict[str, dict[str, tuple[int, int]]] = {
    "digits-cnn": {"conv1": (4, 8), "fc1": (3, 4), "fc2": (6, 3)},
    "digits-cnn-bn": {"conv1": (4, 8), "fc1": (3, 4), "fc2": (6, 3)},
    "digits-cnn-bn-qout": {"conv1": (4, 8), "fc1": (3, 4), "fc2": (6, 3)},
}


# option -> its allowed values, the first being the default
LAYER_OPTIONS: dict[str, tuple] = {
    "bias": ("none", "float", "int32"),
    "bn": (False, True),
    "weight_scale": ("pow2", "float", "per_channel"),
    "act": ("relu", "signed", "none"),
    "act_scale": ("pow2", "float"),
}
_FIELDS = {"conv": 3, "fc": 1, "pool": 1}  # positional fields after the kind
OUTPUT_BITS = 8  # an output quantizer's width (``act`` on the last MAC layer)


class ArchTokenError(ValueError):
    """A layer token that does not follow the grammar; the message names the token."""


def token_fields(tok: tuple) -> tuple:
    """The positional fields of a token (kind first), without its options.

    >>> token_fields(("fc", 32, {"bias": "float"}))
    ('fc', 32)
    """
    fields = tok[:-1] if tok and isinstance(tok[-1], dict) else tok
    if not fields or fields[0] not in _FIELDS or len(fields) != 1 + _FIELDS[fields[0]]:
        raise ArchTokenError(f"layer token {tok!r}: expected ('conv', out, kernel, pad), ('pool', k) or "
                             "('fc', units), a MAC token optionally ending with an options dict")
    return tuple(fields)


def layer_options(tok: tuple) -> dict:
    """A MAC token's options with every default filled in (:data:`LAYER_OPTIONS`)."""
    kind = token_fields(tok)[0]
    given = tok[-1] if isinstance(tok[-1], dict) else {}
    if given and kind == "pool":
        raise ArchTokenError(f"layer token {tok!r}: a pool token takes no options")
    for key, value in given.items():
        if key not in LAYER_OPTIONS:
            raise ArchTokenError(f"layer token {tok!r}: unknown option '{key}' (known: {', '.join(LAYER_OPTIONS)})")
        if value not in LAYER_OPTIONS[key]:
            raise ArchTokenError(f"layer token {tok!r}: option '{key}' must be one of {LAYER_OPTIONS[key]}")
    return {key: given.get(key, values[0]) for key, values in LAYER_OPTIONS.items()}


def mac_options(arch: Arch) -> dict[str, dict]:
    """``{MAC layer name: its options}`` in order."""
    macs = [tok for tok in arch if token_fields(tok)[0] != "pool"]
    options = dict(zip(mac_names(arch), map(layer_options, macs)))
    for tok, (name, opts) in zip(macs[:-1], options.items()):
        if opts["act"] == "none":
            raise ArchTokenError(f"layer token {tok!r}: hidden layer '{name}' needs an activation quantizer "
                                 "('act': 'relu' or 'signed')")
    if macs:
        last = macs[-1][-1] if isinstance(macs[-1][-1], dict) else {}
        options[mac_names(arch)[-1]]["act"] = last.get("act", "none")
        if "act_scale" in last and options[mac_names(arch)[-1]]["act"] == "none":
            raise ArchTokenError(f"layer token {macs[-1]!r}: 'act_scale' without an output quantizer; "
                                 "add 'act': 'signed' or 'relu', or drop 'act_scale'")
    return options


def pow2_weight_violations(arch: Arch) -> list[tuple[str, str]]:
    """``(layer, weight_scale)`` of every MAC layer of ``arch`` whose weights are not on a
    per-tensor power-of-two grid (flip allocation needs one)."""
    return [(n, o["weight_scale"]) for n, o in mac_options(arch).items() if o["weight_scale"] != "pow2"]


def mac_names(arch: Arch) -> list[str]:
    names, counts = [], {"conv": 0, "fc": 0}
    for tok in arch:
        kind = token_fields(tok)[0]
        if kind in counts:
            counts[kind] += 1
            names.append(f"{kind}{counts[kind]}")
    return names


def all_arch_names() -> list[str]:
    """Every architecture ``flipq train --arch`` builds: the token families, then the graphs."""
    return list(ARCHS) + list(GRAPH_ARCHS)


def is_graph_arch(name: str) -> bool:
    return name in GRAPH_ARCHS


def arch_layer_names(name: str) -> list[str]:
    """The MAC layer names of any architecture (the keys of its BitPlan)."""
    return list(GRAPH_ARCHS[name]) if name in GRAPH_ARCHS else mac_names(get_arch(name))


def default_plan(arch_name: str, weight_bits: int = 4, act_bits: int = 4) -> BitPlan:
    chosen = DEFAULT_PLANS.get(arch_name, {})
    return BitPlan(tuple(LayerBits(n, *chosen.get(n, (weight_bits, act_bits))) for n in arch_layer_names(arch_name)))


def get_arch(name: str) -> Arch:
    if name in GRAPH_ARCHS:
        raise UnknownArchError(f"architecture '{name}' is a graph network (flipq.quant.mlperf), not a layer-token "
                               "family; this command takes only: " + ", ".join(ARCHS))
    if name not in ARCHS:
        raise UnknownArchError(f"unknown architecture '{name}' (known: {', '.join(all_arch_names())})")
    return ARCHS[name]
