"""The network families flipq trains, as data: an architecture is a tuple of layer tokens,
``("conv", out_channels, kernel, padding)``, ``("pool", k)``, ``("fc", units)`` (``None``: one
unit per class). MAC layers are named ``conv1, conv2, ..., fc1, fc2, ...`` in order; those names
key the BitPlan. Standard library only: the command line lists the names without torch.

>>> mac_names(get_arch("digits-cnn"))
['conv1', 'fc1', 'fc2']
>>> default_plan("mlp", 2, 4)["fc1"].weight_bits
2
"""

from __future__ import annotations

from flipq.host.bitplan import BitPlan, LayerBits


class UnknownArchError(ValueError):
    """An architecture name that is not in :data:`ARCHS`."""


Arch = tuple[tuple, ...]

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
    # VGG-style for Fashion-MNIST on a 2-core CPU (benchmarks/reproduce_mpq.py): pooling after
    # the first conv keeps the 28x28 stage to 16 channels, ~1.6x faster than vgg9-small.
    "vgg7-fm": (("conv", 16, 3, 1), ("pool", 2),
                ("conv", 32, 3, 1), ("conv", 32, 3, 1), ("pool", 2),
                ("conv", 64, 3, 1), ("conv", 64, 3, 1), ("pool", 2),
                ("fc", 128), ("fc", None)),
}

# Demo default: mixed precision with at least three distinct widths.
DEFAULT_PLANS: dict[str, dict[str, tuple[int, int]]] = {
    "digits-cnn": {"conv1": (4, 8), "fc1": (3, 4), "fc2": (6, 3)},
}


def mac_names(arch: Arch) -> list[str]:
    names, counts = [], {"conv": 0, "fc": 0}
    for tok in arch:
        if tok[0] in counts:
            counts[tok[0]] += 1
            names.append(f"{tok[0]}{counts[tok[0]]}")
    return names


def default_plan(arch_name: str, weight_bits: int = 4, act_bits: int = 4) -> BitPlan:
    arch = get_arch(arch_name)
    chosen = DEFAULT_PLANS.get(arch_name, {})
    return BitPlan(tuple(LayerBits(n, *chosen.get(n, (weight_bits, act_bits))) for n in mac_names(arch)))


def get_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise UnknownArchError(f"unknown architecture '{name}' (known: {', '.join(ARCHS)})")
    return ARCHS[name]
